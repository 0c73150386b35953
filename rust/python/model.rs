//! `NativeModel`: a loaded model, shared by every thread and generation.

use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyDict};

use super::args;
use super::errors::{cancellable, detached, invalid, to_py};
use super::generation::{NativeGeneration, SamplingParams};
use super::session::NativeSession;
use super::tokenizer::NativeTokenizer;
use super::value_to_py;
use crate::error::Error;
use crate::generate::{Generation, Session};
use crate::kernels::KvType;
use crate::model::{Backend, Llama, LoadOptions};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tokenizer::Tokenizer;

/// A loaded model (weights mapped once, shared by every generation and thread).
#[pyclass(frozen, module = "med42_rs._native")]
pub(crate) struct NativeModel {
    model: Arc<Llama>,
    tokenizer: OnceLock<Arc<Tokenizer>>,
    scheduler: Arc<Scheduler>,
}

impl NativeModel {
    fn tok(&self, py: Python<'_>) -> PyResult<Arc<Tokenizer>> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(Arc::clone(t));
        }
        let file = Arc::clone(&self.model.file);
        let tok = Arc::new(detached(py, move || {
            Tokenizer::from_metadata(&file.metadata)
        })?);
        Ok(Arc::clone(self.tokenizer.get_or_init(|| tok)))
    }
}

#[pymethods]
impl NativeModel {
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (paths, device="cpu", n_ctx=None, n_threads=None, backend=None, check_memory=true, n_parallel=None, max_queue=None, kv_type="f16", n_gpu_layers=None))]
    fn load(
        py: Python<'_>,
        paths: &Bound<'_, PyAny>,
        device: &str,
        n_ctx: Option<&Bound<'_, PyAny>>,
        n_threads: Option<&Bound<'_, PyAny>>,
        backend: Option<&str>,
        check_memory: bool,
        n_parallel: Option<&Bound<'_, PyAny>>,
        max_queue: Option<&Bound<'_, PyAny>>,
        kv_type: &str,
        n_gpu_layers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let kv_type = KvType::from_name(kv_type).map_err(|e| to_py(py, e))?;
        let paths = args::paths(paths)?;
        let n_ctx = n_ctx.map(|v| args::count(v, "n_ctx")).transpose()?;
        let n_threads = n_threads.map(|v| args::count(v, "n_threads")).transpose()?;
        let n_parallel = n_parallel
            .map(|v| args::count(v, "n_parallel"))
            .transpose()?;
        let max_queue = max_queue.map(|v| args::count(v, "max_queue")).transpose()?;
        // -1 (as llama.cpp's -ngl) and None: every block
        let n_gpu_layers = match n_gpu_layers {
            Some(v) if v.extract::<i64>().ok() == Some(-1) && !v.is_instance_of::<PyBool>() => None,
            Some(v) => Some(args::count(v, "n_gpu_layers").map_err(|_| {
                invalid(
                    py,
                    "n_gpu_layers",
                    format!(
                        "must be a number of blocks >= 0, or -1 (or None) for all of them, got {}",
                        v.repr().map(|r| r.to_string()).unwrap_or_default()
                    ),
                )
            })?),
            None => None,
        };
        let backend = match backend {
            None => None,
            Some("native") => Some(Backend::Native),
            Some("candle") => Some(Backend::Candle),
            Some(other) => {
                return Err(invalid(
                    py,
                    "backend",
                    format!("`{other}`; use \"native\" or \"candle\""),
                ))
            }
        };
        let opts = LoadOptions {
            n_ctx,
            device: device.to_string(),
            n_threads,
            backend,
            check_memory,
            n_parallel,
            kv_type,
            n_gpu_layers,
        };
        let model = Arc::new(detached(py, move || Llama::load(&paths, &opts))?);
        let mut cfg = SchedulerConfig {
            n_parallel: model.n_parallel,
            ..Default::default()
        };
        if let Some(q) = max_queue {
            cfg.max_queue = q;
        }
        let scheduler =
            Arc::new(Scheduler::new(Arc::clone(&model), cfg).map_err(|e| to_py(py, e))?);
        Ok(NativeModel {
            model,
            tokenizer: OnceLock::new(),
            scheduler,
        })
    }

    /// The tokenizer from this file's `tokenizer.ggml.*` metadata (built on first use).
    fn tokenizer(&self, py: Python<'_>) -> PyResult<NativeTokenizer> {
        Ok(NativeTokenizer { tok: self.tok(py)? })
    }

    /// Threads the CPU forward pass uses.
    #[getter]
    fn n_threads(&self) -> usize {
        self.model.n_threads
    }

    /// Sequences the scheduler decodes in one pass at most.
    #[getter]
    fn n_parallel(&self) -> usize {
        self.scheduler.config().n_parallel
    }

    /// Requests that may wait for a free sequence at most.
    #[getter]
    fn max_queue(&self) -> usize {
        self.scheduler.config().max_queue
    }

    /// The scheduler's counters: `passes`, `sequences` (summed over passes), `max_batch`,
    /// `abandoned` (passes interrupted by a cancel or pause), `tokens` (run through completed
    /// passes), `queued`, `active`.
    #[getter]
    fn scheduler_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.scheduler.stats();
        let (queued, active) = self.scheduler.load();
        let d = PyDict::new(py);
        d.set_item("passes", st.passes)?;
        d.set_item("sequences", st.sequences)?;
        d.set_item("max_batch", st.max_batch)?;
        d.set_item("abandoned", st.abandoned)?;
        d.set_item("tokens", st.tokens)?;
        d.set_item("queued", queued)?;
        d.set_item("active", active)?;
        Ok(d)
    }

    /// A session: a KV cache of `n_ctx` positions (default: the model's) that keeps its tokens
    /// between generations.
    #[pyo3(signature = (n_ctx=None))]
    fn session(&self, py: Python<'_>, n_ctx: Option<&Bound<'_, PyAny>>) -> PyResult<NativeSession> {
        let n_ctx = n_ctx.map(|v| args::count(v, "n_ctx")).transpose()?;
        let tok = self.tok(py)?;
        let model = Arc::clone(&self.model);
        let session = detached(py, move || Session::new(model, n_ctx))?;
        Ok(NativeSession::new(
            session,
            Arc::clone(&self.scheduler),
            tok,
        ))
    }

    /// The KV cache type: `f16`, `q8_0` or `f32`.
    #[getter]
    fn kv_type(&self) -> &'static str {
        self.model.kv_type.name()
    }

    /// `native` or `candle`.
    #[getter]
    fn backend(&self) -> &'static str {
        match self.model.backend {
            Backend::Native => "native",
            Backend::Candle => "candle",
        }
    }

    /// Hyper-parameters as a dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.model.config;
        let d = PyDict::new(py);
        d.set_item("arch", &c.arch)?;
        d.set_item("n_ctx_train", c.n_ctx_train)?;
        d.set_item("n_embd", c.n_embd)?;
        d.set_item("n_layer", c.n_layer)?;
        d.set_item("n_ff", c.n_ff)?;
        d.set_item("n_head", c.n_head)?;
        d.set_item("n_head_kv", c.n_head_kv)?;
        d.set_item("head_dim", c.head_dim)?;
        d.set_item("n_rot", c.n_rot)?;
        d.set_item("rope_freq_base", c.rope_freq_base)?;
        d.set_item("rope_freq_scale", c.rope_freq_scale)?;
        d.set_item("rms_norm_eps", c.rms_norm_eps)?;
        d.set_item("n_vocab", c.n_vocab)?;
        Ok(d)
    }

    /// The context length sessions may use.
    /// Blocks run on the device (the last ones), as `n_gpu_layers` resolved at load.
    #[getter]
    fn n_gpu_layers(&self) -> usize {
        self.model.config.n_layer - self.model.split
    }

    /// The device the offloaded blocks run on (`cpu` when none are).
    #[getter]
    fn device(&self) -> String {
        self.model.device_name()
    }

    #[getter]
    fn n_ctx(&self) -> usize {
        self.model.n_ctx
    }

    /// All GGUF metadata as a dict (in file order).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.model.file.metadata.entries() {
            d.set_item(k, value_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// One metadata value, or None (without building the whole dict: the vocabulary arrays are
    /// large).
    fn metadata_value<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.model
            .file
            .metadata
            .get(key)
            .map(|v| value_to_py(py, v))
            .transpose()
    }

    /// The tensor directory: `(name, dims, type, n_bytes)` per tensor.
    #[getter]
    fn tensors(&self) -> Vec<(String, Vec<u64>, String, u64)> {
        self.model
            .file
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone(), t.dtype.name(), t.n_bytes))
            .collect()
    }

    /// True when every weight matrix is read in place from the file mapping.
    #[getter]
    fn weights_mapped(&self) -> bool {
        self.model.all_weights_mapped()
    }

    /// Logits for every position of `ids`, `(len(ids), n_vocab)` float32 written in place into a
    /// new `bytearray` (no second copy; numpy wraps it writable), `n_batch` tokens per pass.
    /// Ctrl-C stops it before the next layer.
    #[pyo3(signature = (ids, n_batch=None))]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        n_batch: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyByteArray>, usize, usize)> {
        let ids = args::ids(ids, "ids")?;
        let n_batch = n_batch.map(|b| args::count(b, "n_batch")).transpose()?;
        let model = Arc::clone(&self.model);
        let (rows, cols) = (ids.len(), model.config.n_vocab);
        // Sizes are checked before the result is allocated.
        if rows == 0 {
            return Err(invalid(py, "ids", "at least one token is required"));
        }
        if rows > model.n_ctx {
            return Err(to_py(
                py,
                Error::ContextOverflow {
                    needed: rows,
                    n_ctx: model.n_ctx,
                },
            ));
        }
        model.check_tokens("ids", &ids).map_err(|e| to_py(py, e))?;
        let n = rows * cols; // <= n_ctx (<= 2**20) * n_vocab (<= 2**22): no overflow
        let out = PyByteArray::new_with(py, n * 4, |_| Ok(()))?;
        let ptr = out.data() as usize;
        assert_eq!(ptr % std::mem::align_of::<f32>(), 0);
        cancellable(py, None, move |check| {
            // SAFETY: `out` was just created and no other Python object refers to it, so nothing
            // can read, resize or free its buffer while the engine writes into it detached; it
            // holds exactly `n * 4` bytes, and bytearray storage is malloc'ed, so aligned for
            // f32 (asserted above).
            let dst = unsafe { std::slice::from_raw_parts_mut(ptr as *mut f32, n) };
            let mut s = Session::new(Arc::clone(&model), Some(rows))?;
            if let Some(b) = n_batch {
                s.set_batch(b)?;
            }
            s.append_all_into(&ids, dst, check)
        })?;
        Ok((out, rows, cols))
    }

    /// Start a streaming generation (nothing runs until the first `next`). Context and
    /// parameter errors are raised here, before any token is generated.
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
        let tok = self.tok(py)?;
        let model = Arc::clone(&self.model);
        let g = detached(py, move || {
            let mut g = Generation::new(model, Some(tok), ids, params, &stop_ids)?;
            if let Some(n) = logprobs {
                g.set_logprobs(n)?;
            }
            Ok(g)
        })?;
        let h = self.scheduler.submit(g, None).map_err(|e| to_py(py, e))?;
        Ok(NativeGeneration::new(h))
    }

    /// `(sum of log-probabilities of continuation, whether it is the greedy continuation)`.
    fn score(
        &self,
        py: Python<'_>,
        context: &Bound<'_, PyAny>,
        continuation: &Bound<'_, PyAny>,
    ) -> PyResult<(f64, bool)> {
        let context = args::ids(context, "context")?;
        let continuation = args::ids(continuation, "continuation")?;
        let model = Arc::clone(&self.model);
        cancellable(py, None, move |check| {
            crate::generate::score(&model, &context, &continuation, check)
        })
    }

    /// Greedy continuation of `ids` for `n` tokens.
    fn greedy(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<u32>> {
        let ids = args::ids(ids, "ids")?;
        let n = args::count(n, "n")?;
        let model = Arc::clone(&self.model);
        cancellable(py, None, move |check| {
            crate::generate::greedy(&model, &ids, n, check)
        })
    }

    /// `score` of each continuation after one shared context, which runs through the model once
    /// (the KV cache is truncated back to it between continuations).
    fn score_many(
        &self,
        py: Python<'_>,
        context: &Bound<'_, PyAny>,
        continuations: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<(f64, bool)>> {
        let context = args::ids(context, "context")?;
        if continuations.is_instance_of::<pyo3::types::PyString>() || continuations.is_none() {
            return Err(invalid(
                py,
                "continuations",
                "expected a list of token-id lists",
            ));
        }
        let conts = continuations
            .try_iter()
            .map_err(|_| invalid(py, "continuations", "expected a list of token-id lists"))?
            .map(|c| args::ids(&c?, "continuations"))
            .collect::<PyResult<Vec<_>>>()?;
        let model = Arc::clone(&self.model);
        cancellable(py, None, move |check| {
            crate::score::score_many(&model, &context, &conts, check)
        })
    }
}
