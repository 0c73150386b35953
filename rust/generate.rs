//! A generation session: one sequence's KV cache and token history over a shared model.
//! Prefill runs the prompt in batches (bounded attention scratch; cancellation is checked between
//! batches); decode runs one token at a time. A session reuses the longest cached prefix of a new
//! prompt.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{KvCache, Llama, Logits};

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
        let n_vocab = self.model.config.n_vocab as u32;
        if let Some(&bad) = tokens.iter().find(|&&t| t >= n_vocab) {
            return Err(Error::arg(
                "tokens",
                format!("token id {bad} is out of range for a vocabulary of {n_vocab}"),
            ));
        }
        let mut out = Vec::new();
        for chunk in tokens.chunks(self.batch) {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let logits = self.model.forward(chunk, &mut self.cache, which)?;
            self.tokens.extend_from_slice(chunk);
            match which {
                Logits::All => out.extend_from_slice(&logits),
                Logits::Last => out = logits,
            }
        }
        Ok(out)
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

/// Greedy continuation of `prompt` for `n` tokens (tests and the minimal CLI).
pub fn greedy(model: &Arc<Llama>, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut s = Session::new(Arc::clone(model), Some((prompt.len() + n).min(model.n_ctx)))?;
    let mut logits = s.prefill(prompt, &mut || false)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = crate::sampling::argmax(&logits);
        out.push(next);
        if out.len() == n {
            break;
        }
        logits = s.append(&[next], Logits::Last, &mut || false)?;
    }
    Ok(out)
}
