//! `SamplingParams` (the one sampling type, as a Python class) and the streaming generation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

use super::args;
use super::errors::{cancellable, invalid, to_py};
use crate::error::Error;
use crate::generate::Generation;
use crate::sampling;

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

/// A running generation: an iterator of `(text, ids, finish_reason)` steps.
///
/// `cancel()` (and `close()`) may be called from any thread, or from a signal handler running
/// inside this generation's own `__next__`: it sets a flag that the engine reads before every
/// layer and never waits for the lock a running step holds. The step in progress then ends, the
/// KV cache is freed and the iteration ends.
#[pyclass(frozen, module = "med42_rs._native")]
pub(crate) struct NativeGeneration {
    gen: Mutex<Option<Generation>>,
    cancel: AtomicBool,
    /// prompt tokens, completion tokens, prompt seconds, decode seconds
    usage: Mutex<(usize, usize, f64, f64)>,
}

impl NativeGeneration {
    pub(crate) fn new(g: Generation) -> Self {
        NativeGeneration {
            gen: Mutex::new(Some(g)),
            cancel: AtomicBool::new(false),
            usage: Mutex::new((0, 0, 0.0, 0.0)),
        }
    }
}

type StepTuple = (String, Vec<u32>, Option<&'static str>);

#[pymethods]
impl NativeGeneration {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<StepTuple>> {
        let (gen, cancel, usage) = (&self.gen, &self.cancel, &self.usage);
        cancellable(py, Some(cancel), move |check| {
            let mut guard = gen.lock().unwrap_or_else(|p| p.into_inner());
            if cancel.load(Ordering::Acquire) {
                *guard = None;
            }
            let Some(g) = guard.as_mut() else {
                return Ok(None);
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.step(check)));
            *usage.lock().unwrap_or_else(|p| p.into_inner()) = (
                g.prompt_tokens(),
                g.completion_tokens(),
                g.prompt_secs,
                g.decode_secs,
            );
            let r = match r {
                Ok(r) => r,
                Err(_) => {
                    *guard = None;
                    return Err(Error::Internal("panic during generation".into()));
                }
            };
            if g.is_finished() || cancel.load(Ordering::Acquire) {
                *guard = None; // free the KV cache as soon as nothing more can come
            }
            match r {
                Ok(Some(step)) => Ok(Some((step.text, step.ids, step.finish.map(|f| f.as_str())))),
                Ok(None) | Err(Error::Cancelled) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Stop the generation and free its KV cache: from any thread, at any time, without waiting.
    fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
        // Free now if no step is running; otherwise the running step ends at its next layer
        // and `__next__` frees it. Never block: the caller may be a signal handler running
        // inside that very step.
        if let Ok(mut g) = self.gen.try_lock() {
            *g = None;
        }
    }

    /// Same as `cancel()`.
    fn close(&self) {
        self.cancel();
    }

    /// True once cancelled or closed.
    #[getter]
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// `(prompt_tokens, completion_tokens, prompt_seconds, decode_seconds)`.
    #[getter]
    fn usage(&self) -> (usize, usize, f64, f64) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}
