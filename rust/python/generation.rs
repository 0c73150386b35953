//! `SamplingParams` (the one sampling type, as a Python class) and the streaming generation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

use super::args;
use super::errors::{invalid, to_py};
use crate::error::Error;
use crate::sampling;
use crate::scheduler::{Control, Event, Handle, CANCELLED};

/// An f32 as the f64 with the same shortest decimal form (`0.95`, not `0.949999988079071`).
fn f64_of(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// The field names, in the order `repr` shows them.
const FIELDS: [&str; 9] = [
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "seed",
    "stop",
];

/// Sampling parameters: immutable, validated on construction (defaults and checks are the
/// engine's [`sampling::SamplingParams`]).
#[pyclass(frozen, module = "med42_rs._native", name = "SamplingParams")]
pub(crate) struct SamplingParams {
    pub(crate) p: sampling::SamplingParams,
}

impl SamplingParams {
    /// `base` with the keyword arguments applied, then validated.
    fn with(
        py: Python<'_>,
        mut p: sampling::SamplingParams,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                let k: String = k.extract()?;
                match k.as_str() {
                    "max_tokens" => p.max_tokens = args::count(&v, "max_tokens")?,
                    "temperature" => p.temperature = args::number(&v, "temperature")?,
                    "top_k" => p.top_k = args::count(&v, "top_k")?,
                    "top_p" => p.top_p = args::number(&v, "top_p")?,
                    "min_p" => p.min_p = args::number(&v, "min_p")?,
                    "repeat_penalty" => p.repeat_penalty = args::number(&v, "repeat_penalty")?,
                    "repeat_last_n" => p.repeat_last_n = args::count(&v, "repeat_last_n")?,
                    "seed" => p.seed = args::seed(&v)?,
                    "stop" => p.stop = args::stops(&v)?,
                    other => {
                        return Err(invalid(
                            py,
                            other,
                            format!(
                                "unknown sampling parameter; the parameters are {}",
                                FIELDS.join(", ")
                            ),
                        ))
                    }
                }
            }
        }
        p.validate().map_err(|e| to_py(py, e))?;
        Ok(SamplingParams { p })
    }
}

#[pymethods]
impl SamplingParams {
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn new(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Self::with(py, sampling::SamplingParams::default(), kwargs)
    }

    /// A copy with the given fields changed (validated again).
    #[pyo3(signature = (**kwargs))]
    fn replace(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Self::with(py, self.p.clone(), kwargs)
    }

    /// The fields as a dict (keyword arguments that rebuild this object).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let p = &self.p;
        d.set_item("max_tokens", p.max_tokens)?;
        d.set_item("temperature", f64_of(p.temperature))?;
        d.set_item("top_k", p.top_k)?;
        d.set_item("top_p", f64_of(p.top_p))?;
        d.set_item("min_p", f64_of(p.min_p))?;
        d.set_item("repeat_penalty", f64_of(p.repeat_penalty))?;
        d.set_item("repeat_last_n", p.repeat_last_n)?;
        d.set_item("seed", p.seed)?;
        d.set_item("stop", p.stop.clone())?;
        Ok(d)
    }

    /// Rebuild from [`SamplingParams::to_dict`]'s output (pickling).
    #[classmethod]
    fn _from_dict(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        d: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        Self::with(py, sampling::SamplingParams::default(), Some(d))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyDict>,))> {
        let ctor = slf.get_type().getattr("_from_dict")?;
        Ok((ctor, (slf.get().to_dict(slf.py())?,)))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<SamplingParams>()
            .is_ok_and(|o| o.get().p == self.p)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let d = self.to_dict(py)?;
        let mut parts = Vec::new();
        for f in FIELDS {
            if let Some(v) = d.get_item(f)? {
                parts.push(format!("{f}={}", v.repr()?));
            }
        }
        Ok(format!("SamplingParams({})", parts.join(", ")))
    }

    #[getter]
    fn max_tokens(&self) -> usize {
        self.p.max_tokens
    }
    #[getter]
    fn temperature(&self) -> f64 {
        f64_of(self.p.temperature)
    }
    #[getter]
    fn top_k(&self) -> usize {
        self.p.top_k
    }
    #[getter]
    fn top_p(&self) -> f64 {
        f64_of(self.p.top_p)
    }
    #[getter]
    fn min_p(&self) -> f64 {
        f64_of(self.p.min_p)
    }
    #[getter]
    fn repeat_penalty(&self) -> f64 {
        f64_of(self.p.repeat_penalty)
    }
    #[getter]
    fn repeat_last_n(&self) -> usize {
        self.p.repeat_last_n
    }
    #[getter]
    fn seed(&self) -> Option<u64> {
        self.p.seed
    }
    #[getter]
    fn stop(&self) -> Vec<String> {
        self.p.stop.clone()
    }
}

/// A running generation: an iterator of `(text, ids, finish_reason)` steps, computed by the
/// model's scheduler (batched with the other generations in flight).
///
/// `cancel()` (and `close()`) may be called from any thread, or from a signal handler running
/// inside this generation's own `__next__`: it sets the control word the scheduler reads
/// between passes and before every layer, and never waits. The scheduler then drops the
/// sequence (freeing its KV cache, or returning a session's) and the iteration ends.
///
/// Ctrl-C while `__next__` waits pauses the generation (it keeps its place and cache but is no
/// longer computed) and raises `KeyboardInterrupt`; iterating again resumes it.
#[pyclass(frozen, module = "med42_rs._native")]
pub(crate) struct NativeGeneration {
    handle: Mutex<Option<Handle>>,
    ctl: Arc<Control>,
}

impl NativeGeneration {
    pub(crate) fn new(handle: Handle) -> Self {
        NativeGeneration {
            ctl: Arc::clone(handle.control()),
            handle: Mutex::new(Some(handle)),
        }
    }
}

/// `(text, ids, finish_reason, logprobs)`; logprobs: `(logprob, [(id, logprob), ...])` of the
/// step's token when requested.
type StepTuple = (
    String,
    Vec<u32>,
    Option<&'static str>,
    Option<(f32, Vec<(u32, f32)>)>,
);

/// How long `__next__` waits detached between checks for signals.
const POLL: Duration = Duration::from_millis(20);

#[pymethods]
impl NativeGeneration {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<StepTuple>> {
        self.ctl.resume();
        loop {
            if self.ctl.state() == CANCELLED {
                *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Ok(None);
            }
            let handle = &self.handle;
            let ev = py.detach(|| {
                let guard = handle.lock().unwrap_or_else(|p| p.into_inner());
                match guard.as_ref() {
                    Some(h) => h.next_timeout(POLL),
                    None => Err(()),
                }
            });
            match ev {
                Ok(Some(Event::Step(step))) => {
                    if self.ctl.state() == CANCELLED {
                        continue;
                    }
                    if step.finish.is_some() {
                        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                    return Ok(Some((
                        step.text,
                        step.ids,
                        step.finish.map(|f| f.as_str()),
                        step.logprobs.map(|l| (l.logprob, l.top)),
                    )));
                }
                Ok(Some(Event::Error(e))) => {
                    *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return match e {
                        Error::Cancelled => Ok(None),
                        e => Err(to_py(py, e)),
                    };
                }
                Ok(None) => {
                    // A signal handler may raise (Ctrl-C) or cancel this very generation.
                    if let Err(e) = py.check_signals() {
                        self.ctl.pause();
                        return Err(e);
                    }
                }
                Err(()) => {
                    *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Ok(None);
                }
            }
        }
    }

    /// Stop the generation and free its KV cache: from any thread, at any time, without waiting.
    fn cancel(&self) {
        self.ctl.cancel();
    }

    /// Same as `cancel()`.
    fn close(&self) {
        self.cancel();
    }

    /// True once cancelled or closed.
    #[getter]
    fn cancelled(&self) -> bool {
        self.ctl.state() == CANCELLED
    }

    /// `(prompt_tokens, completion_tokens, prompt_seconds, decode_seconds,
    /// prompt_tokens_reused)`.
    #[getter]
    fn usage(&self) -> (usize, usize, f64, f64, usize) {
        let u = self.ctl.usage();
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.prompt_secs,
            u.decode_secs,
            u.prompt_tokens_reused,
        )
    }
}
