//! Scoring many continuations of one context (the choices of a multiple-choice question): the
//! context is run through the model once, and each continuation is scored after truncating the
//! KV cache back to the context. Each result equals [`crate::generate::score`] of that pair.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::generate::Session;
use crate::model::{Llama, Logits};

/// `(log P(continuation | context), whether every continuation token is the greedy choice)` for
/// each of `continuations`, in order. The shared context is prefilled once; each continuation
/// runs as one batch over the cached context (its last token plus the continuation but one).
/// `cancelled` is polled before every layer.
pub fn score_many(
    model: &Arc<Llama>,
    context: &[u32],
    continuations: &[Vec<u32>],
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Vec<(f64, bool)>> {
    if context.is_empty() {
        return Err(Error::arg(
            "context",
            "needs at least one token (start it with BOS)",
        ));
    }
    if continuations.is_empty() {
        return Ok(Vec::new());
    }
    let mut longest = 0usize;
    for (i, c) in continuations.iter().enumerate() {
        if c.is_empty() {
            return Err(Error::arg(
                "continuations",
                format!("continuation {i} has no tokens; each needs at least one"),
            ));
        }
        model.check_tokens("continuations", c)?;
        longest = longest.max(c.len());
    }
    // Checked before the cache is allocated (the lengths come from the caller). The last token
    // of a continuation is only predicted, never run, so it takes no cache position.
    let needed = context.len().saturating_add(longest - 1);
    if needed > model.n_ctx {
        return Err(Error::ContextOverflow {
            needed,
            n_ctx: model.n_ctx,
        });
    }
    model.check_tokens("context", context)?;
    let n_vocab = model.config.n_vocab;
    let mut s = Session::new(Arc::clone(model), Some(needed))?;
    let base = context.len() - 1;
    if base > 0 {
        s.append(&context[..base], Logits::Last, cancelled)?;
    }
    let last = context[base];
    let mut out = Vec::with_capacity(continuations.len());
    let mut input = Vec::with_capacity(longest);
    for cont in continuations {
        s.truncate(base)?;
        input.clear();
        input.push(last);
        input.extend_from_slice(&cont[..cont.len() - 1]);
        // (len(cont), n_vocab): row i predicts cont[i]
        let rows = s.append(&input, Logits::All, cancelled)?;
        out.push(crate::generate::continuation_logprob(&rows, cont, n_vocab));
    }
    Ok(out)
}
