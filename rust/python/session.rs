//! `NativeSession`: a KV cache and its tokens kept between generations.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::args;
use super::errors::{detached, to_py};
use super::generation::{NativeGeneration, SamplingParams};
use crate::generate::{Generation, Session};
use crate::scheduler::{Scheduler, SessionSlot};
use crate::tokenizer::Tokenizer;

/// How long a call waits for a cancelled generation to hand the session back.
const RETURN_WAIT: Duration = Duration::from_secs(30);

/// A session over the model's scheduler. A generation takes the session's cache while it runs;
/// the scheduler puts it back when the generation ends, finished or cancelled.
#[pyclass(frozen, module = "med42_rs._native")]
pub(crate) struct NativeSession {
    slot: Arc<SessionSlot>,
    scheduler: Arc<Scheduler>,
    tok: Arc<Tokenizer>,
    n_ctx: usize,
}

impl NativeSession {
    pub(crate) fn new(session: Session, scheduler: Arc<Scheduler>, tok: Arc<Tokenizer>) -> Self {
        NativeSession {
            n_ctx: session.n_ctx(),
            slot: Arc::new(SessionSlot::new(session)),
            scheduler,
            tok,
        }
    }

    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Session) -> crate::Result<T> + Send,
    ) -> PyResult<T> {
        let slot = &self.slot;
        detached(py, move || {
            slot.with(RETURN_WAIT, |s| f(s.as_mut().expect("present")))
        })
    }
}

#[pymethods]
impl NativeSession {
    /// Start a generation that continues this session: the longest prefix of `ids` already
    /// cached is reused, the rest computed. Errors are raised here, before anything runs.
    #[pyo3(signature = (ids, params, stop_ids, logprobs=None))]
    fn generate(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        params: &Bound<'_, SamplingParams>,
        stop_ids: &Bound<'_, PyAny>,
        logprobs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NativeGeneration> {
        let (ids, stop_ids, logprobs) = args::generation(py, ids, stop_ids, logprobs)?;
        let params = params.get().p.clone();
        let tok = Arc::clone(&self.tok);
        let slot = &self.slot;
        let g = detached(py, move || {
            slot.with(RETURN_WAIT, |s| {
                let mut g = Generation::from_session(s, Some(tok), ids, params, &stop_ids)?;
                if let Some(n) = logprobs {
                    g.set_logprobs(n)?; // checked by args::generation: cannot fail
                }
                Ok(g)
            })
        })?;
        let h = self
            .scheduler
            .submit(g, Some(Arc::clone(&self.slot)))
            .map_err(|e| to_py(py, e))?;
        Ok(NativeGeneration::new(h))
    }

    /// The tokens whose K/V are cached.
    #[getter]
    fn tokens(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        self.with(py, |s| Ok(s.tokens().to_vec()))
    }

    /// Context capacity in tokens.
    #[getter]
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forget the cached tokens.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |s| {
            s.reset();
            Ok(())
        })
    }

    /// Keep the first `n` cached tokens.
    fn truncate(&self, py: Python<'_>, n: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = args::count(n, "n")?;
        self.with(py, move |s| {
            let len = s.tokens().len();
            if n > len {
                return Err(crate::Error::arg(
                    "n",
                    format!("{n} is more than the {len} cached tokens"),
                ));
            }
            s.truncate(n)
        })
    }

    /// The tokens and their K/V as bytes.
    fn save_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with(py, |s| s.save_state())?;
        Ok(PyBytes::new(py, &data))
    }

    /// Replace the tokens and cache by bytes from `save_state` (same model and cache type).
    fn load_state(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.with(py, move |s| s.load_state(data))
    }
}
