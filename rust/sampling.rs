//! Token sampling: repeat penalty, top-k, top-p, min-p, temperature; greedy at temperature 0.
//! Seeded and deterministic: the same seed and logits give the same tokens on every platform.

use crate::error::{Error, Result};

/// Everything that shapes a generation: how many tokens, how each is chosen, where to stop.
///
/// The one sampling type of the project: the Python API, the CLI and every later caller build
/// this and nothing else. Field meanings are llama.cpp's; the defaults are [`Default`]'s and live
/// only there; [`SamplingParams::validate`] is the only check, and its error names the field.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set whose probability mass reaches `top_p`; 1.0 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens; 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// RNG seed; `None` draws one from the operating system's randomness.
    pub seed: Option<u64>,
    /// Texts that end the generation (matched on the decoded text by the caller's stream, which
    /// cuts the stop and what follows).
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 256,
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: None,
            stop: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Check every field; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::arg(
                "temperature",
                format!("{} must be a finite number >= 0", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::arg(
                "top_p",
                format!("{} must be in (0, 1]", self.top_p),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::arg(
                "min_p",
                format!("{} must be in [0, 1]", self.min_p),
            ));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(Error::arg(
                "repeat_penalty",
                format!("{} must be a finite number > 0", self.repeat_penalty),
            ));
        }
        if let Some(i) = self.stop.iter().position(|s| s.is_empty()) {
            return Err(Error::arg(
                "stop",
                format!("stop[{i}] is empty; each stop must be a non-empty string"),
            ));
        }
        Ok(())
    }

    /// The seed to use: the given one, or a fresh one from the OS (the hasher keys of
    /// `RandomState` come from the operating system's randomness).
    pub fn resolved_seed(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        self.seed.unwrap_or_else(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        })
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, reproducible.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A stateful sampler (owns its RNG and candidate buffer; no allocation per token after the first).
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    cand: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for `params` (validated).
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Rng::new(params.resolved_seed());
        Ok(Sampler {
            params,
            rng,
            cand: Vec::new(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Apply the repeat penalty to `logits` in place, over the last `repeat_last_n` of `history`.
    pub fn apply_penalty(&self, logits: &mut [f32], history: &[u32]) {
        let p = self.params.repeat_penalty;
        if p == 1.0 || self.params.repeat_last_n == 0 {
            return;
        }
        let start = history.len().saturating_sub(self.params.repeat_last_n);
        let mut seen = history[start..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / p } else { *l * p };
            }
        }
    }

    /// Choose the next token from `logits` (modified in place by the penalty).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_penalty(logits, history);
        let p = &self.params;
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| (l, i as u32)));
        let by_logit_desc =
            |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let mut n = self.cand.len();
        if p.top_k > 0 && p.top_k < n {
            self.cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            n = p.top_k;
            self.cand.truncate(n);
        }
        self.cand.sort_unstable_by(by_logit_desc);
        // Probabilities at temperature 1 for top-p / min-p, as llama.cpp orders its default chain
        // (top-k, top-p, min-p, then temperature).
        let max = self.cand[0].0;
        let mut probs: Vec<f64> = self
            .cand
            .iter()
            .map(|c| ((c.0 - max) as f64).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = n;
            for (i, &pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            n = keep.max(1);
        }
        if p.min_p > 0.0 {
            let thresh = probs[0] * p.min_p as f64;
            n = probs[..n]
                .iter()
                .take_while(|&&pr| pr >= thresh)
                .count()
                .max(1);
        }
        // Temperature, then draw.
        let inv_t = 1.0 / p.temperature as f64;
        let weights: Vec<f64> = self.cand[..n]
            .iter()
            .map(|c| (((c.0 - max) as f64) * inv_t).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (i, w) in weights.iter().enumerate() {
            r -= w;
            if r < 0.0 {
                return self.cand[i].1;
            }
        }
        self.cand[n - 1].1
    }
}

/// Index of the largest logit (lowest index on ties, as llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_max_and_first_on_ties() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sample(&mut [1.0, 5.0, 2.0], &[]), 1);
    }

    #[test]
    fn penalty_can_flip_the_choice() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        })
        .unwrap();
        // token 1 (logit 3) was just used: 3/2 = 1.5 < 2.0
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0], &[1]), 2);
        // negative logits are multiplied, not divided
        let mut l = [-1.0f32, -2.0];
        s.apply_penalty(&mut l, &[0]);
        assert_eq!(l, [-2.0, -2.0]);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            seed: Some(7),
            ..Default::default()
        };
        let logits = [0.0f32, 1.0, 1.1, -5.0, 0.9];
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..200)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params));
        assert!(
            a.iter().all(|&t| t == 1 || t == 2),
            "top_k=2 keeps only tokens 1 and 2"
        );
        assert!(a.contains(&1) && a.contains(&2));
        let b = draw(&SamplingParams {
            seed: Some(8),
            ..params.clone()
        });
        assert_ne!(a, b, "a different seed gives a different draw");
    }

    #[test]
    fn invalid_params_name_the_parameter() {
        let e = Sampler::new(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("top_p"));
        let e = Sampler::new(SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("temperature"));
        let e = SamplingParams {
            stop: vec!["ok".into(), String::new()],
            ..Default::default()
        }
        .validate()
        .err()
        .unwrap();
        assert!(e.to_string().contains("stop[1]"), "{e}");
        assert!(SamplingParams::default().validate().is_ok());
    }

    #[test]
    fn no_seed_draws_a_fresh_one_each_time() {
        let p = SamplingParams::default();
        let seeds: Vec<u64> = (0..4).map(|_| p.resolved_seed()).collect();
        assert!(seeds.windows(2).any(|w| w[0] != w[1]), "{seeds:?}");
        let fixed = SamplingParams {
            seed: Some(42),
            ..Default::default()
        };
        assert_eq!(fixed.resolved_seed(), 42);
    }
}
