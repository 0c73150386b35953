//! The PyO3 boundary: the only file that imports pyo3. Arguments are converted while attached to
//! the interpreter; computation runs detached (`Python::detach`) so other Python threads run.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyType};

use crate::error::Error;
use crate::generate::{Generation, Session};
use crate::gguf::GgufFile;
use crate::gguf::{Array, Value};
use crate::model::{Backend, Llama, LoadOptions, Logits};
use crate::sampling::SamplingParams;
use crate::tokenizer::{attr, StreamDecoder, Tokenizer, TokenizerKind};

/// Map a crate error to the Python exception class named by [`Error::python_class`].
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let class = e.python_class();
    if class == "FileNotFoundError" {
        return PyFileNotFoundError::new_err(msg);
    }
    let found = py
        .import("med42_rs.errors")
        .and_then(|m| m.getattr(class))
        .ok()
        .and_then(|c| c.cast_into::<PyType>().ok());
    match found {
        Some(ty) => PyErr::from_type(ty, msg),
        None => PyRuntimeError::new_err(msg),
    }
}

/// Run `f` detached from the interpreter, turning a panic into a Python exception instead of an
/// abort of the host process.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    let r = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(to_py(py, Error::Internal(what)))
        }
    }
}

fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::U8(x) => x.into_pyobject(py)?.into_any(),
        Value::I8(x) => x.into_pyobject(py)?.into_any(),
        Value::U16(x) => x.into_pyobject(py)?.into_any(),
        Value::I16(x) => x.into_pyobject(py)?.into_any(),
        Value::U32(x) => x.into_pyobject(py)?.into_any(),
        Value::I32(x) => x.into_pyobject(py)?.into_any(),
        Value::U64(x) => x.into_pyobject(py)?.into_any(),
        Value::I64(x) => x.into_pyobject(py)?.into_any(),
        Value::F32(x) => x.into_pyobject(py)?.into_any(),
        Value::F64(x) => x.into_pyobject(py)?.into_any(),
        Value::Bool(x) => x.into_pyobject(py)?.to_owned().into_any(),
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(a) => array_to_py(py, a)?,
    })
}

fn array_to_py<'py>(py: Python<'py>, a: &Array) -> PyResult<Bound<'py, PyAny>> {
    Ok(match a {
        Array::U8(v) => PyList::new(py, v)?.into_any(),
        Array::I8(v) => PyList::new(py, v)?.into_any(),
        Array::U16(v) => PyList::new(py, v)?.into_any(),
        Array::I16(v) => PyList::new(py, v)?.into_any(),
        Array::U32(v) => PyList::new(py, v)?.into_any(),
        Array::I32(v) => PyList::new(py, v)?.into_any(),
        Array::U64(v) => PyList::new(py, v)?.into_any(),
        Array::I64(v) => PyList::new(py, v)?.into_any(),
        Array::F32(v) => PyList::new(py, v)?.into_any(),
        Array::F64(v) => PyList::new(py, v)?.into_any(),
        Array::Bool(v) => PyList::new(py, v)?.into_any(),
        Array::String(v) => PyList::new(py, v)?.into_any(),
        Array::Array(v) => {
            let items = v
                .iter()
                .map(|x| array_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
    })
}

/// A loaded model (weights mapped once, shared by every generation and thread).
#[pyclass(frozen, module = "med42_rs._native")]
struct NativeModel {
    model: Arc<Llama>,
    tokenizer: std::sync::OnceLock<Arc<Tokenizer>>,
}

#[pymethods]
impl NativeModel {
    #[staticmethod]
    #[pyo3(signature = (paths, device="cpu", n_ctx=None, n_threads=None, backend=None, check_memory=true))]
    fn load(
        py: Python<'_>,
        paths: Vec<PathBuf>,
        device: &str,
        n_ctx: Option<usize>,
        n_threads: Option<usize>,
        backend: Option<&str>,
        check_memory: bool,
    ) -> PyResult<Self> {
        let backend = match backend {
            None => None,
            Some("native") => Some(Backend::Native),
            Some("candle") => Some(Backend::Candle),
            Some(other) => {
                return Err(to_py(
                    py,
                    Error::arg(
                        "backend",
                        format!("`{other}`; use \"native\" or \"candle\""),
                    ),
                ))
            }
        };
        let opts = LoadOptions {
            n_ctx,
            device: device.to_string(),
            n_threads,
            backend,
            check_memory,
        };
        let model = detached(py, move || Llama::load(&paths, &opts))?;
        Ok(NativeModel {
            model: Arc::new(model),
            tokenizer: std::sync::OnceLock::new(),
        })
    }

    /// The tokenizer from this file's `tokenizer.ggml.*` metadata (built on first use).
    fn tokenizer(&self, py: Python<'_>) -> PyResult<NativeTokenizer> {
        if let Some(t) = self.tokenizer.get() {
            return Ok(NativeTokenizer { tok: Arc::clone(t) });
        }
        let file = Arc::clone(&self.model.file);
        let tok = Arc::new(detached(py, move || {
            Tokenizer::from_metadata(&file.metadata)
        })?);
        Ok(NativeTokenizer {
            tok: Arc::clone(self.tokenizer.get_or_init(|| tok)),
        })
    }

    /// Threads the CPU forward pass uses.
    #[getter]
    fn n_threads(&self) -> usize {
        self.model.n_threads
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

    /// Logits for every position of `ids` as raw little-endian f32 bytes `(len(ids), n_vocab)`,
    /// `ids` run through the model `n_batch` at a time (default: the prefill batch).
    #[pyo3(signature = (ids, n_batch=None))]
    fn logits_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        n_batch: Option<usize>,
    ) -> PyResult<(Bound<'py, PyBytes>, usize, usize)> {
        let model = Arc::clone(&self.model);
        let (data, rows, cols) = detached(py, move || {
            let mut s = Session::new(Arc::clone(&model), Some(ids.len().max(1).min(model.n_ctx)))?;
            if let Some(b) = n_batch {
                s.set_batch(b)?;
            }
            let v = s.append(&ids, Logits::All, &mut || false)?;
            let cols = model.config.n_vocab;
            Ok((v, ids.len(), cols))
        })?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Ok((PyBytes::new(py, &bytes), rows, cols))
    }

    /// Start a streaming generation (nothing runs until the first `next`).
    #[pyo3(signature = (ids, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, stop_ids))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        repeat_last_n: usize,
        seed: u64,
        stop_ids: Vec<u32>,
    ) -> PyResult<NativeGeneration> {
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            seed,
        };
        let tok = self.tokenizer(py).ok().map(|t| t.tok);
        let model = Arc::clone(&self.model);
        let g = detached(py, move || {
            Generation::new(model, tok, ids, params, max_tokens, &stop_ids)
        })?;
        Ok(NativeGeneration {
            gen: std::sync::Mutex::new(Some(g)),
            cancel: std::sync::atomic::AtomicBool::new(false),
            usage: std::sync::Mutex::new((0, 0, 0.0, 0.0)),
        })
    }

    /// `(sum of log-probabilities of continuation, whether it is the greedy continuation)`.
    fn score(
        &self,
        py: Python<'_>,
        context: Vec<u32>,
        continuation: Vec<u32>,
    ) -> PyResult<(f64, bool)> {
        let model = Arc::clone(&self.model);
        let mut err = None;
        let main = is_main_thread(py);
        let r = {
            let err = &mut err;
            py.detach(move || {
                let mut check = SignalCheck::new(main, None, err);
                crate::generate::score(&model, &context, &continuation, &mut || check.cancelled())
            })
        };
        match (r, err) {
            (_, Some(e)) => Err(e),
            (Ok(v), None) => Ok(v),
            (Err(e), None) => Err(to_py(py, e)),
        }
    }

    /// Greedy continuation of `ids` for `n` tokens.
    fn greedy(&self, py: Python<'_>, ids: Vec<u32>, n: usize) -> PyResult<Vec<u32>> {
        let model = Arc::clone(&self.model);
        detached(py, move || crate::generate::greedy(&model, &ids, n))
    }
}

/// A tokenizer built from GGUF metadata; immutable and shared across threads.
#[pyclass(frozen, module = "med42_rs._native")]
struct NativeTokenizer {
    tok: Arc<Tokenizer>,
}

#[pymethods]
impl NativeTokenizer {
    /// Read only the metadata of a GGUF file (vocabulary-only files work) and build its tokenizer.
    #[staticmethod]
    fn from_file(py: Python<'_>, paths: Vec<PathBuf>) -> PyResult<Self> {
        let tok = detached(py, move || {
            let file = GgufFile::open(&paths)?;
            Tokenizer::from_metadata(&file.metadata)
        })?;
        Ok(NativeTokenizer { tok: Arc::new(tok) })
    }

    /// Text to ids (`add_special`: BOS/EOS as the vocabulary asks; `parse_special`: control-token
    /// text becomes control tokens).
    fn encode(
        &self,
        py: Python<'_>,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Vec<u32> {
        let tok = Arc::clone(&self.tok);
        let text = text.to_owned();
        py.detach(move || tok.encode(&text, add_special, parse_special))
    }

    /// Encode `(text, parse_special)` parts as one text (see `Tokenizer::encode_parts`).
    fn encode_parts(
        &self,
        py: Python<'_>,
        parts: Vec<(String, bool)>,
        add_special: bool,
    ) -> Vec<u32> {
        let tok = Arc::clone(&self.tok);
        py.detach(move || {
            let refs: Vec<(&str, bool)> = parts.iter().map(|(s, b)| (s.as_str(), *b)).collect();
            tok.encode_parts(&refs, add_special)
        })
    }

    /// Ids to text as llama.cpp's `llama_detokenize(ids, remove_special=False, unparse_special=special)`.
    fn decode(&self, py: Python<'_>, ids: Vec<u32>, special: bool) -> PyResult<String> {
        self.tok.decode(&ids, special).map_err(|e| to_py(py, e))
    }

    /// Raw bytes of `llama_detokenize(ids, remove_special, unparse_special)`.
    fn detokenize<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        remove_special: bool,
        unparse_special: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let b = self
            .tok
            .detokenize(&ids, remove_special, unparse_special)
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &b))
    }

    /// The bytes of one token.
    fn token_to_piece<'py>(
        &self,
        py: Python<'py>,
        id: u32,
        special: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let b = self
            .tok
            .token_to_piece(id, special, 0)
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, b))
    }

    /// The vocabulary text of one token.
    fn token_text(&self, py: Python<'_>, id: u32) -> PyResult<String> {
        self.tok
            .token_text(id)
            .map(str::to_owned)
            .map_err(|e| to_py(py, e))
    }

    /// The type of one token.
    fn token_type(&self, py: Python<'_>, id: u32) -> PyResult<&'static str> {
        let a = self.tok.token_attr(id).map_err(|e| to_py(py, e))?;
        Ok(if a & attr::CONTROL != 0 {
            "control"
        } else if a & attr::USER_DEFINED != 0 {
            "user_defined"
        } else if a & attr::UNKNOWN != 0 {
            "unknown"
        } else if a & attr::BYTE != 0 {
            "byte"
        } else if a & attr::NORMAL != 0 {
            "normal"
        } else if a & attr::UNUSED != 0 {
            "unused"
        } else {
            "undefined"
        })
    }

    /// The id of a token text, or None.
    fn token_id(&self, text: &str) -> Option<u32> {
        self.tok.token_id(text)
    }

    /// A fresh stream decoder.
    fn stream(&self, special: bool) -> NativeStreamDecoder {
        NativeStreamDecoder {
            tok: Arc::clone(&self.tok),
            dec: std::sync::Mutex::new(self.tok.stream(special)),
        }
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.tok.vocab_size()
    }
    #[getter]
    fn kind(&self) -> &'static str {
        match self.tok.kind() {
            TokenizerKind::Spm => "llama",
            TokenizerKind::Bpe => "gpt2",
        }
    }
    #[getter]
    fn pre(&self) -> Option<&'static str> {
        match self.tok.kind() {
            TokenizerKind::Spm => None,
            TokenizerKind::Bpe => Some(self.tok.pre_tokenizer().name()),
        }
    }
    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.tok.bos()
    }
    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.tok.eos()
    }
    #[getter]
    fn eot_id(&self) -> Option<u32> {
        self.tok.eot()
    }
    #[getter]
    fn unk_id(&self) -> Option<u32> {
        self.tok.unk()
    }
    #[getter]
    fn pad_id(&self) -> Option<u32> {
        self.tok.pad()
    }
    #[getter]
    fn eog_ids(&self) -> Vec<u32> {
        self.tok.eog().to_vec()
    }
    #[getter]
    fn add_bos(&self) -> bool {
        self.tok.add_bos()
    }
    #[getter]
    fn add_eos(&self) -> bool {
        self.tok.add_eos()
    }
    #[getter]
    fn add_space_prefix(&self) -> bool {
        self.tok.add_space_prefix()
    }
}

/// Incremental decoder: ids in, whole-character text chunks out.
#[pyclass(frozen, module = "med42_rs._native")]
struct NativeStreamDecoder {
    tok: Arc<Tokenizer>,
    dec: std::sync::Mutex<StreamDecoder>,
}

#[pymethods]
impl NativeStreamDecoder {
    /// Add one id; the text that became final.
    fn push(&self, py: Python<'_>, id: u32) -> PyResult<String> {
        let mut d = self.dec.lock().unwrap_or_else(|p| p.into_inner());
        d.push(&self.tok, id).map_err(|e| to_py(py, e))
    }

    /// End of stream: the rest.
    fn finish(&self) -> String {
        let mut d = self.dec.lock().unwrap_or_else(|p| p.into_inner());
        d.finish(&self.tok)
    }
}

fn is_main_thread(py: Python<'_>) -> bool {
    (|| -> PyResult<bool> {
        let th = py.import("threading")?;
        let main = th.call_method0("main_thread")?;
        let cur = th.call_method0("current_thread")?;
        Ok(main.is(&cur))
    })()
    .unwrap_or(false)
}

/// Polled from detached engine code before every layer: an explicit cancel flag, and on the main
/// thread (where Python delivers signals) pending signals such as Ctrl-C, at most every 20 ms.
struct SignalCheck<'a> {
    main: bool,
    flag: Option<&'a std::sync::atomic::AtomicBool>,
    err: &'a mut Option<PyErr>,
    last: std::time::Instant,
}

impl<'a> SignalCheck<'a> {
    fn new(
        main: bool,
        flag: Option<&'a std::sync::atomic::AtomicBool>,
        err: &'a mut Option<PyErr>,
    ) -> Self {
        SignalCheck {
            main,
            flag,
            err,
            last: std::time::Instant::now(),
        }
    }

    fn cancelled(&mut self) -> bool {
        if self
            .flag
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
        {
            return true;
        }
        if !self.main || self.last.elapsed() < std::time::Duration::from_millis(20) {
            return false;
        }
        self.last = std::time::Instant::now();
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => false,
            Err(e) => {
                *self.err = Some(e);
                true
            }
        }
    }
}

/// A running generation: an iterator of `(text, ids, finish_reason)` steps.
#[pyclass(frozen, module = "med42_rs._native")]
struct NativeGeneration {
    gen: std::sync::Mutex<Option<Generation>>,
    cancel: std::sync::atomic::AtomicBool,
    /// prompt tokens, completion tokens, prompt seconds, decode seconds
    usage: std::sync::Mutex<(usize, usize, f64, f64)>,
}

type StepTuple = (String, Vec<u32>, Option<&'static str>);

#[pymethods]
impl NativeGeneration {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<StepTuple>> {
        let main = is_main_thread(py);
        let mut err: Option<PyErr> = None;
        let r = {
            let err = &mut err;
            let (gen, cancel, usage) = (&self.gen, &self.cancel, &self.usage);
            py.detach(move || {
                let mut guard = gen.lock().unwrap_or_else(|p| p.into_inner());
                let Some(g) = guard.as_mut() else {
                    return Ok(None);
                };
                let mut check = SignalCheck::new(main, Some(cancel), err);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    g.step(&mut || check.cancelled())
                }));
                *usage.lock().unwrap_or_else(|p| p.into_inner()) = (
                    g.prompt_tokens(),
                    g.completion_tokens(),
                    g.prompt_secs,
                    g.decode_secs,
                );
                let r = match r {
                    Ok(r) => r,
                    Err(_) => Err(Error::Internal("panic during generation".into())),
                };
                if g.is_finished() {
                    *guard = None; // free the KV cache as soon as nothing more can come
                }
                r
            })
        };
        if let Some(e) = err {
            return Err(e);
        }
        match r {
            Ok(Some(step)) => Ok(Some((step.text, step.ids, step.finish.map(|f| f.as_str())))),
            Ok(None) => Ok(None),
            Err(Error::Cancelled) => Ok(None),
            Err(e) => Err(to_py(py, e)),
        }
    }

    /// Stop the generation and free its KV cache; safe to call from any thread, any time.
    fn close(&self, py: Python<'_>) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let gen = &self.gen;
        py.detach(|| {
            *gen.lock().unwrap_or_else(|p| p.into_inner()) = None;
        });
    }

    /// `(prompt_tokens, completion_tokens, prompt_seconds, decode_seconds)`.
    #[getter]
    fn usage(&self) -> (usize, usize, f64, f64) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Read only the header of a model (one file, byte-split parts or gguf-split shards): no tensor
/// data is touched. Returns `(metadata, tensors, paths)`; metadata arrays longer than
/// `max_array` elements are left out (the vocabulary is not needed to identify a model).
#[pyfunction]
#[pyo3(signature = (paths, max_array = 64))]
#[allow(clippy::type_complexity)]
fn read_header(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    max_array: usize,
) -> PyResult<(
    Bound<'_, PyDict>,
    Vec<(String, Vec<u64>, String, u64)>,
    Vec<PathBuf>,
)> {
    let file = detached(py, move || GgufFile::open(&paths))?;
    let d = PyDict::new(py);
    for (k, v) in file.metadata.entries() {
        if let Value::Array(a) = v {
            if a.len() > max_array {
                continue;
            }
        }
        d.set_item(k, value_to_py(py, v)?)?;
    }
    let tensors = file
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone(), t.dtype.name(), t.n_bytes))
        .collect();
    let paths = file.sources.iter().flat_map(|s| s.paths()).collect();
    Ok((d, tensors, paths))
}

/// Panic inside the engine on purpose: proves a Rust panic becomes a Python exception (tests).
#[pyfunction]
fn _debug_panic(py: Python<'_>, message: String) -> PyResult<()> {
    detached(py, move || -> crate::Result<()> { panic!("{message}") })
}

/// What this build was compiled with and what the CPU offers.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item("kernels", crate::build::kernel_family())?;
    d.set_item("compiled_simd", crate::build::compiled_features())?;
    d.set_item("cpu_simd", crate::build::runtime_features())?;
    d.set_item("cargo_features", crate::build::cargo_features())?;
    d.set_item("candle", "0.11.1")?;
    d.set_item("target", std::env::consts::ARCH)?;
    let per_type = PyDict::new(py);
    for t in crate::gguf::GgmlType::SUPPORTED {
        let k = crate::kernels::Kernels::for_type(t);
        let name = k.map_or("none", |k| k.name);
        let multi = if k.is_some_and(|k| k.dot_rows.is_some()) {
            "+multi-row"
        } else {
            ""
        };
        let packed = if k.is_some_and(|k| k.packed.is_some()) {
            "+packed"
        } else {
            ""
        };
        per_type.set_item(t.name(), format!("{name}{multi}{packed}"))?;
    }
    d.set_item("dot_kernels", per_type)?;
    Ok(d)
}

/// Render a chat template (`messages` as `(role, content)` pairs) into `(text, parse_special)`
/// parts for `NativeTokenizer.encode_parts`: message text never becomes control tokens (see
/// `crate::chat_template`). `tokenizer` supplies the special tokens; without one the result is a
/// single text part. Errors are `ChatTemplateError`.
#[pyfunction]
#[pyo3(signature = (template, messages, bos_token, eos_token, tokenizer = None, add_generation_prompt = true))]
fn render_chat_template(
    py: Python<'_>,
    template: String,
    messages: Vec<(String, String)>,
    bos_token: String,
    eos_token: String,
    tokenizer: Option<PyRef<'_, NativeTokenizer>>,
    add_generation_prompt: bool,
) -> PyResult<Vec<(String, bool)>> {
    use crate::chat_template::{render_parts, special_texts, ChatMessage, TemplateVars};
    let tok = tokenizer.map(|t| Arc::clone(&t.tok));
    detached(py, move || {
        let messages: Vec<ChatMessage> = messages
            .into_iter()
            .map(|(role, content)| ChatMessage { role, content })
            .collect();
        let specials = tok.as_deref().map(special_texts).unwrap_or_default();
        let vars = TemplateVars {
            bos_token: &bos_token,
            eos_token: &eos_token,
            add_generation_prompt,
        };
        render_parts(&template, &messages, vars, &specials)
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeModel>()?;
    m.add_class::<NativeTokenizer>()?;
    m.add_class::<NativeStreamDecoder>()?;
    m.add_class::<NativeGeneration>()?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(read_header, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_function(wrap_pyfunction!(render_chat_template, m)?)?;
    Ok(())
}
