//! A generation session: one sequence's KV cache and token history over a shared model.
//! Prefill runs the prompt in batches (bounded attention scratch; cancellation is checked between
//! batches); decode runs one token at a time. A session reuses the longest cached prefix of a new
//! prompt.

use std::sync::Arc;

mod state;
pub use state::fingerprint;

use crate::error::{Error, Result};
use crate::model::{BatchItem, BatchScratch, KvCache, Llama, Logits};

/// Prompt tokens run per forward pass during prefill (llama.cpp's default `n_ubatch`).
pub const DEFAULT_BATCH: usize = 512;

/// One sequence over a shared [`Llama`].
pub struct Session {
    model: Arc<Llama>,
    cache: KvCache,
    /// Tokens whose K/V are in the cache, in order.
    tokens: Vec<u32>,
    batch: usize,
}

impl Session {
    /// A session with a KV cache of `n_ctx` positions (default: the model's).
    pub fn new(model: Arc<Llama>, n_ctx: Option<usize>) -> Result<Self> {
        let cache = model.new_cache(n_ctx)?;
        Ok(Session {
            model,
            cache,
            tokens: Vec::new(),
            batch: DEFAULT_BATCH,
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<Llama> {
        &self.model
    }

    /// Context capacity.
    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// Tokens currently in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Set the prefill batch size.
    pub fn set_batch(&mut self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(Error::arg("batch", "must be at least 1"));
        }
        self.batch = batch;
        Ok(())
    }

    /// Forget the cached sequence.
    pub fn reset(&mut self) {
        self.cache.reset();
        self.tokens.clear();
    }

    /// Keep only the first `n` cached tokens.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        self.cache.truncate(n)?;
        self.tokens.truncate(n);
        Ok(())
    }

    /// Append `tokens` and return logits, row-major: the last position (`n_vocab` floats) or all
    /// new positions (`T * n_vocab`). `cancelled` is polled between batches; on cancellation the
    /// cache keeps what was processed and `Error::Cancelled` is returned.
    pub fn append(
        &mut self,
        tokens: &[u32],
        which: Logits,
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::arg("tokens", "at least one token is required"));
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.cache.n_ctx() {
            return Err(Error::ContextOverflow {
                needed,
                n_ctx: self.cache.n_ctx(),
            });
        }
        self.model.check_tokens("tokens", tokens)?;
        let mut out = Vec::new();
        for chunk in tokens.chunks(self.batch) {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let logits =
                self.model
                    .forward_cancellable(chunk, &mut self.cache, which, cancelled)?;
            self.tokens.extend_from_slice(chunk);
            match which {
                Logits::All => out.extend_from_slice(&logits),
                Logits::Last => out = logits,
            }
        }
        Ok(out)
    }

    /// Append `tokens` and write the logits of every new position into `out` (`T * n_vocab`
    /// floats, row-major): the caller owns the result's memory, so it is written once, in place.
    pub fn append_all_into(
        &mut self,
        tokens: &[u32],
        out: &mut [f32],
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        let n_vocab = self.model.config.n_vocab;
        if out.len() != tokens.len().saturating_mul(n_vocab) {
            return Err(Error::arg(
                "out",
                format!(
                    "holds {} floats, {} tokens need {}",
                    out.len(),
                    tokens.len(),
                    tokens.len().saturating_mul(n_vocab)
                ),
            ));
        }
        let batch = self.batch;
        for (chunk, dst) in tokens.chunks(batch).zip(out.chunks_mut(batch * n_vocab)) {
            let logits = self.append(chunk, Logits::All, cancelled)?;
            dst.copy_from_slice(&logits);
        }
        Ok(())
    }

    /// Make the cache hold exactly `prompt`, reusing the longest common prefix already cached, and
    /// return the logits after its last token. At least the last prompt token is always re-run so
    /// that logits exist.
    pub fn prefill(
        &mut self,
        prompt: &[u32],
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        if prompt.is_empty() {
            return Err(Error::arg("prompt", "the prompt has no tokens"));
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.truncate(common)?;
        self.append(&prompt[common..], Logits::Last, cancelled)
    }

    /// Logits for every position of `tokens` from an empty cache (`(T, n_vocab)`), for scoring.
    pub fn logits_all(
        &mut self,
        tokens: &[u32],
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        self.reset();
        self.append(tokens, Logits::All, cancelled)
    }
}

/// Greedy continuation of `prompt` for `n` tokens (tests and the minimal CLI). `cancelled` is
/// polled before every layer.
pub fn greedy(
    model: &Arc<Llama>,
    prompt: &[u32],
    n: usize,
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Vec<u32>> {
    // Checked before anything is allocated: `n` comes from the caller and may be huge.
    let needed = prompt.len().saturating_add(n);
    if needed > model.n_ctx {
        return Err(Error::ContextOverflow {
            needed,
            n_ctx: model.n_ctx,
        });
    }
    let mut s = Session::new(Arc::clone(model), Some(needed.max(1)))?;
    let mut logits = s.prefill(prompt, cancelled)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = crate::sampling::argmax(&logits);
        out.push(next);
        if out.len() == n {
            break;
        }
        logits = s.append(&[next], Logits::Last, cancelled)?;
    }
    Ok(out)
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token (EOS / EOT) was sampled.
    Eos,
    /// `max_tokens` were generated.
    Length,
}

impl Finish {
    /// `"eos"` or `"length"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::Length => "length",
        }
    }
}

/// One produced token (or the end): the text that became final, the ids, and the finish reason on
/// the last step.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub text: String,
    pub ids: Vec<u32>,
    pub finish: Option<Finish>,
    /// With [`Generation::set_logprobs`]: the sampled token's log-probability under the model
    /// (log-softmax of the raw logits, before penalties and temperature) and the `n` most likely
    /// tokens with theirs, most likely first.
    pub logprobs: Option<TokenLogprobs>,
}

/// Log-probabilities of one sampled token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Most log-probabilities a step may report.
pub const MAX_LOGPROBS: usize = 20;

/// The log-softmax of `logits` at `token`, and the `n` largest (ties: lower id first).
fn logprobs_of(logits: &[f32], token: u32, n: usize) -> TokenLogprobs {
    let lse = log_sum_exp(logits);
    let lp = |x: f32| (x as f64 - lse) as f32;
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (i, &x) in logits.iter().enumerate() {
            if top.len() == n && x <= top[n - 1].1 {
                continue;
            }
            let at = top.partition_point(|&(_, y)| y >= x);
            top.insert(at, (i as u32, x));
            top.truncate(n);
        }
    }
    TokenLogprobs {
        token,
        logprob: lp(logits[token as usize]),
        top: top.into_iter().map(|(i, x)| (i, lp(x))).collect(),
    }
}

/// A streaming generation: prompt, sampler, a session (its own, or a caller's whose cached prefix
/// it reuses), and a stream decoder.
///
/// It is driven either alone, by [`Generation::step`], or by the scheduler, which runs the
/// [`Generation::next_input`] of several generations in one batched forward pass
/// ([`forward_generations`]) and then calls [`Generation::sample_step`] on each. The sampled
/// token is fed to the model at the start of the following step, so a cancellation never loses
/// text that was already returned.
pub struct Generation {
    session: Session,
    sampler: crate::sampling::Sampler,
    prompt: Vec<u32>,
    /// Prompt tokens whose K/V were already in the session's cache.
    reused: usize,
    logits: Option<Vec<f32>>,
    pending: Option<u32>,
    history: Vec<u32>,
    generated: usize,
    max_tokens: usize,
    stop_ids: Vec<u32>,
    decoder: Option<(
        Arc<crate::tokenizer::Tokenizer>,
        crate::tokenizer::StreamDecoder,
    )>,
    finished: bool,
    /// Report log-probabilities with this many alternatives per step.
    logprobs: Option<usize>,
    /// Seconds spent on the prompt.
    pub prompt_secs: f64,
    /// Seconds spent generating tokens after the prompt.
    pub decode_secs: f64,
}

/// Check a prompt and `max_tokens` against a context of `n_ctx` positions.
fn check_fits(model: &Llama, prompt: &[u32], max_tokens: usize, n_ctx: usize) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::arg("prompt", "the prompt has no tokens"));
    }
    let needed = prompt.len().saturating_add(max_tokens);
    if needed > n_ctx {
        return Err(Error::ContextOverflow { needed, n_ctx });
    }
    model.check_tokens("prompt", prompt)
}

impl Generation {
    /// Check that the prompt and `params.max_tokens` fit the context, then allocate a KV cache of exactly
    /// that size. `stop_ids` end the generation (the tokenizer's end-of-generation ids are added).
    pub fn new(
        model: Arc<Llama>,
        tokenizer: Option<Arc<crate::tokenizer::Tokenizer>>,
        prompt: Vec<u32>,
        params: crate::sampling::SamplingParams,
        stop_ids: &[u32],
    ) -> Result<Self> {
        check_fits(&model, &prompt, params.max_tokens, model.n_ctx)?;
        let needed = prompt.len() + params.max_tokens;
        let mut slot = Some(Session::new(model, Some(needed.max(1)))?);
        Self::from_session(&mut slot, tokenizer, prompt, params, stop_ids)
    }

    /// A generation that continues in `slot`'s session: the longest prefix of `prompt` already
    /// in its cache is reused and only the rest is computed. Everything is checked first; the
    /// session is taken out of `slot` only when the generation starts (get it back with
    /// [`Self::into_session`]). Fails when `slot` is empty.
    pub fn from_session(
        slot: &mut Option<Session>,
        tokenizer: Option<Arc<crate::tokenizer::Tokenizer>>,
        prompt: Vec<u32>,
        params: crate::sampling::SamplingParams,
        stop_ids: &[u32],
    ) -> Result<Self> {
        let Some(session) = slot.as_ref() else {
            return Err(Error::arg(
                "session",
                "is busy: a generation that uses it is still running; finish or cancel it first",
            ));
        };
        check_fits(session.model(), &prompt, params.max_tokens, session.n_ctx())?;
        let max_tokens = params.max_tokens;
        let sampler = crate::sampling::Sampler::new(params)?;
        let mut stops = stop_ids.to_vec();
        if let Some(t) = &tokenizer {
            stops.extend_from_slice(t.eog());
        }
        stops.sort_unstable();
        stops.dedup();
        let decoder = tokenizer.map(|t| {
            let d = t.stream(false);
            (t, d)
        });
        let mut session = slot.take().expect("checked above");
        // At least the last prompt token is run again, so that its logits exist.
        let reused = session
            .tokens
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        session.truncate(reused).expect("a prefix of the cache");
        Ok(Generation {
            session,
            sampler,
            history: prompt.clone(),
            prompt,
            reused,
            logits: None,
            pending: None,
            generated: 0,
            max_tokens,
            stop_ids: stops,
            decoder,
            finished: false,
            logprobs: None,
            prompt_secs: 0.0,
            decode_secs: 0.0,
        })
    }

    /// Report every sampled token's log-probability and the `top` most likely alternatives
    /// (`0..=20`) in [`Step::logprobs`].
    pub fn set_logprobs(&mut self, top: usize) -> Result<()> {
        if top > MAX_LOGPROBS {
            return Err(Error::arg(
                "logprobs",
                format!("{top} alternatives; at most {MAX_LOGPROBS}"),
            ));
        }
        self.logprobs = Some(top);
        Ok(())
    }

    /// The session, with the prompt and the tokens fed so far in its cache.
    pub fn into_session(self) -> Session {
        self.session
    }

    /// Prompt tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt.len()
    }

    /// Prompt tokens whose K/V were reused from the session's cache (not computed).
    pub fn prompt_tokens_reused(&self) -> usize {
        self.reused
    }

    /// Prompt tokens computed so far (at most `prompt_tokens() - prompt_tokens_reused()`).
    pub fn prompt_tokens_computed(&self) -> usize {
        self.session.tokens.len().min(self.prompt.len()) - self.reused
    }

    /// Tokens generated so far.
    pub fn completion_tokens(&self) -> usize {
        self.generated
    }

    /// True once the last step was returned.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True while prompt tokens remain to be computed.
    pub fn in_prompt(&self) -> bool {
        self.session.tokens.len() < self.prompt.len()
    }

    /// End the generation now.
    pub fn close(&mut self) {
        self.finished = true;
        self.logits = None;
    }

    /// How many tokens the next forward pass runs for this generation, at most `max_prompt` of
    /// the prompt (the last sampled token otherwise); 0 when it has logits to sample from or is
    /// finished.
    pub fn next_input(&self, max_prompt: usize) -> usize {
        if self.finished {
            0
        } else if self.in_prompt() {
            (self.prompt.len() - self.session.tokens.len()).min(max_prompt.max(1))
        } else {
            usize::from(self.pending.is_some())
        }
    }

    /// The first `n` tokens of the next input and the session they go to.
    fn input(&mut self, n: usize) -> (&[u32], &mut Session) {
        let fed = self.session.tokens.len();
        let toks = if fed < self.prompt.len() {
            &self.prompt[fed..fed + n]
        } else {
            std::slice::from_ref(self.pending.as_ref().expect("an input to run"))
        };
        (toks, &mut self.session)
    }

    /// Record that `n` tokens of the input ran (the session's cache already holds them), with
    /// the logits after the last one.
    fn advanced(&mut self, n: usize, logits: Vec<f32>, secs: f64) {
        let fed = self.session.tokens.len();
        if fed < self.prompt.len() {
            self.session
                .tokens
                .extend_from_slice(&self.prompt[fed..fed + n]);
            self.prompt_secs += secs;
            if !self.in_prompt() {
                self.logits = Some(logits);
            }
        } else {
            let tok = self.pending.take().expect("an input that ran");
            self.session.tokens.push(tok);
            self.decode_secs += secs;
            self.logits = Some(logits);
        }
    }

    /// Produce the next token; `None` once finished. `cancelled` is polled before every layer.
    pub fn step(&mut self, cancelled: &mut dyn FnMut() -> bool) -> Result<Option<Step>> {
        loop {
            let n = self.next_input(self.session.batch);
            if n == 0 {
                break;
            }
            let t0 = std::time::Instant::now();
            let (toks, session) = self.input(n);
            // on an error or cancellation the cache is as before: nothing to undo
            let logits = session.model.forward_cancellable(
                toks,
                &mut session.cache,
                Logits::Last,
                cancelled,
            )?;
            self.advanced(n, logits, t0.elapsed().as_secs_f64());
        }
        self.sample_step()
    }

    /// Sample the next token from the current logits (after the prompt or the last token ran);
    /// `None` once finished.
    pub fn sample_step(&mut self) -> Result<Option<Step>> {
        if self.finished {
            return Ok(None);
        }
        // Only reached with max_tokens == 0 (after the max-th token the step below ends with
        // Length itself).
        if self.generated >= self.max_tokens {
            self.finished = true;
            let text = self.finish_text();
            return Ok(Some(Step {
                text,
                ids: Vec::new(),
                finish: Some(Finish::Length),
                logprobs: None,
            }));
        }
        let t0 = std::time::Instant::now();
        let Some(logits) = self.logits.as_mut() else {
            return Err(Error::Internal(
                "sampling before the logits were computed".into(),
            ));
        };
        // before sampling, which may rescale the logits in place
        let raw = self.logprobs.map(|_| logits.clone());
        let next = self.sampler.sample(logits, &self.history);
        let logprobs = raw.map(|l| logprobs_of(&l, next, self.logprobs.unwrap_or(0)));
        self.logits = None;
        self.decode_secs += t0.elapsed().as_secs_f64();
        self.history.push(next);
        self.generated += 1;
        if self.stop_ids.binary_search(&next).is_ok() {
            self.finished = true;
            let text = self.finish_text();
            return Ok(Some(Step {
                text,
                ids: vec![next],
                finish: Some(Finish::Eos),
                logprobs,
            }));
        }
        let mut text = match &mut self.decoder {
            Some((t, d)) => d.push(t, next)?,
            None => String::new(),
        };
        let mut finish = None;
        if self.generated >= self.max_tokens {
            self.finished = true;
            text.push_str(&self.finish_text());
            finish = Some(Finish::Length);
        } else {
            self.pending = Some(next);
        }
        Ok(Some(Step {
            text,
            ids: vec![next],
            finish,
            logprobs,
        }))
    }

    fn finish_text(&mut self) -> String {
        match &mut self.decoder {
            Some((t, d)) => d.finish(t),
            None => String::new(),
        }
    }
}

/// One batched forward pass for several generations over the same model: generation `i` runs
/// the first `counts[i]` tokens of its next input (see [`Generation::next_input`]). Afterwards
/// each whose prompt is complete, or that ran its last sampled token, has logits to sample
/// from. On an error or cancellation nothing changed.
pub fn forward_generations(
    model: &Llama,
    gens: &mut [&mut Generation],
    counts: &[usize],
    scratch: &mut BatchScratch,
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let out = {
        let mut items: Vec<BatchItem<'_>> = gens
            .iter_mut()
            .zip(counts)
            .map(|(g, &n)| {
                let (tokens, session) = g.input(n);
                BatchItem {
                    tokens,
                    cache: &mut session.cache,
                    which: Logits::Last,
                }
            })
            .collect();
        model.forward_batch(&mut items, scratch, cancelled)?
    };
    let secs = t0.elapsed().as_secs_f64();
    for ((g, &n), logits) in gens.iter_mut().zip(counts).zip(out) {
        g.advanced(n, logits, secs);
    }
    Ok(())
}

/// Log-probability of `continuation` after `context` and whether every continuation token is the
/// greedy choice, from one batched pass (the primitive of lm-evaluation-harness `loglikelihood`).
pub fn score(
    model: &Arc<Llama>,
    context: &[u32],
    continuation: &[u32],
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<(f64, bool)> {
    if context.is_empty() {
        return Err(Error::arg(
            "context",
            "needs at least one token (start it with BOS)",
        ));
    }
    if continuation.is_empty() {
        return Err(Error::arg("continuation", "needs at least one token"));
    }
    let needed = context.len().saturating_add(continuation.len());
    if needed > model.n_ctx {
        return Err(Error::ContextOverflow {
            needed,
            n_ctx: model.n_ctx,
        });
    }
    let all: Vec<u32> = context.iter().chain(continuation).copied().collect();
    let mut s = Session::new(Arc::clone(model), Some(all.len()))?;
    let n_vocab = model.config.n_vocab;
    // logits of the positions that predict the continuation only
    model.check_tokens("continuation", continuation)?;
    if context.len() > 1 {
        s.append(&context[..context.len() - 1], Logits::Last, cancelled)?;
    }
    let rows = s.append(
        &all[context.len() - 1..all.len() - 1],
        Logits::All,
        cancelled,
    )?;
    Ok(continuation_logprob(&rows, continuation, n_vocab))
}

/// `log(sum(exp(row)))` in f64, shifted by the maximum.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// `(sum of log-probabilities, all greedy)` of `continuation` from its logit rows (`rows` holds
/// `continuation.len()` rows of `n_vocab`; row `i` predicts `continuation[i]`).
pub fn continuation_logprob(rows: &[f32], continuation: &[u32], n_vocab: usize) -> (f64, bool) {
    let mut total = 0.0f64;
    let mut greedy = true;
    for (i, &tok) in continuation.iter().enumerate() {
        let row = &rows[i * n_vocab..(i + 1) * n_vocab];
        total += row[tok as usize] as f64 - log_sum_exp(row);
        greedy &= crate::sampling::argmax(row) == tok;
    }
    (total, greedy)
}
