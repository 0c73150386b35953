//! The PyO3 boundary: the only module that imports pyo3. Arguments are converted while attached
//! to the interpreter; computation runs detached (`Python::detach`) so other Python threads run.
//!
//! - [`errors`]: every [`Error`] variant to its exception class of `med42_rs.errors`, the
//!   classes looked up once when the module loads; panics become `InternalError`.
//! - [`args`]: conversions of caller values (token ids, sampling parameters) that raise
//!   `InvalidParameterError` naming the argument instead of a bare `TypeError`/`OverflowError`.
//! - [`model`], [`generation`], [`tokenizer`]: the classes.

mod args;
mod errors;
mod generation;
mod model;
mod session;
mod tokenizer;

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::error::Error;
use crate::gguf::{Array, GgufFile, Value};

pub(crate) use errors::{detached, to_py};

pub(crate) fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
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

/// Read only the header of a model (one file, byte-split parts or gguf-split shards): no tensor
/// data is touched. Returns `(metadata, tensors, paths)`; metadata arrays longer than
/// `max_array` elements are left out (the vocabulary is not needed to identify a model).
#[pyfunction]
#[pyo3(signature = (paths, max_array = 64))]
#[allow(clippy::type_complexity)]
fn read_header<'py>(
    py: Python<'py>,
    paths: &Bound<'py, PyAny>,
    max_array: usize,
) -> PyResult<(
    Bound<'py, PyDict>,
    Vec<(String, Vec<u64>, String, u64)>,
    Vec<PathBuf>,
)> {
    let paths = args::paths(paths)?;
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

/// Bytes of the K/V cache of `n_ctx` positions in `kv_type` for a model of `n_layer` blocks with
/// `n_head_kv` heads of `head_dim` values (`med42 info`); `InvalidParameterError` for an unknown
/// type or heads the type cannot store.
#[pyfunction]
fn kv_cache_bytes(
    py: Python<'_>,
    kv_type: &str,
    n_layer: u64,
    n_head_kv: u64,
    head_dim: u64,
    n_ctx: u64,
) -> PyResult<u64> {
    let t = crate::kernels::KvType::from_name(kv_type).map_err(|e| to_py(py, e))?;
    t.check_head_dim(head_dim as usize)
        .map_err(|e| to_py(py, e))?;
    let per_pos = t.bytes_per_position(n_head_kv as usize, head_dim as usize) as u64;
    Ok(per_pos.saturating_mul(n_layer).saturating_mul(n_ctx))
}

/// What loading `paths` needs with the last `n_gpu_layers` blocks offloaded (`med42 info`):
/// `{"host": {...}, "device": {...} | None}`, each with `weights`, `kv_cache` and `scratch` in
/// bytes for one sequence of `n_ctx` positions (default: the trained context), as the load-time
/// checks count them.
#[pyfunction]
#[pyo3(signature = (paths, n_ctx=None, kv_type="f16", n_gpu_layers=0))]
fn memory_estimate<'py>(
    py: Python<'py>,
    paths: &Bound<'py, PyAny>,
    n_ctx: Option<usize>,
    kv_type: &str,
    n_gpu_layers: i64,
) -> PyResult<Bound<'py, PyDict>> {
    use crate::memory::Estimate;
    let t = crate::kernels::KvType::from_name(kv_type).map_err(|e| to_py(py, e))?;
    let paths = args::paths(paths)?;
    let file = detached(py, move || GgufFile::open(&paths))?;
    let cfg = crate::gguf::LlamaConfig::from_gguf(&file).map_err(|e| to_py(py, e))?;
    let n_ctx = n_ctx.unwrap_or(cfg.n_ctx_train);
    let ngl = if n_gpu_layers < 0 {
        cfg.n_layer
    } else {
        (n_gpu_layers as usize).min(cfg.n_layer)
    };
    let split = cfg.n_layer - ngl;
    let as_dict = |e: &Estimate| -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("weights", e.weights)?;
        d.set_item("kv_cache", e.kv_cache)?;
        d.set_item("scratch", e.scratch)?;
        Ok(d)
    };
    let out = PyDict::new(py);
    out.set_item(
        "host",
        as_dict(&Estimate::host(&file, &cfg, n_ctx, t, split))?,
    )?;
    if ngl > 0 {
        out.set_item(
            "device",
            as_dict(&Estimate::device(&file, &cfg, n_ctx, t, split))?,
        )?;
    } else {
        out.set_item("device", py.None())?;
    }
    out.set_item("n_gpu_layers", ngl)?;
    Ok(out)
}

/// Panic inside the engine on purpose: proves a Rust panic becomes `InternalError` (tests).
#[pyfunction]
fn _debug_panic(py: Python<'_>, message: String) -> PyResult<()> {
    detached(py, move || -> crate::Result<()> { panic!("{message}") })
}

/// One example of every engine error variant, raised by index (tests walk them all).
#[pyfunction]
#[pyo3(signature = (index=None))]
fn _debug_error(py: Python<'_>, index: Option<usize>) -> PyResult<usize> {
    let mut all = crate::error::examples();
    match index {
        None => Ok(all.len()),
        Some(i) if i < all.len() => Err(to_py(py, all.swap_remove(i))),
        Some(i) => Err(to_py(
            py,
            Error::arg("index", format!("{i} is past the {} examples", all.len())),
        )),
    }
}

/// What this build was compiled with and what the CPU offers.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let b = crate::build_info::BuildInfo::collect();
    let d = PyDict::new(py);
    d.set_item("version", b.version)?;
    d.set_item("kernels", b.kernels)?;
    d.set_item("candle_kernels", b.candle_kernels)?;
    d.set_item("compiled_simd", b.compiled_simd)?;
    d.set_item("cpu_simd", b.cpu_simd)?;
    d.set_item("cargo_features", b.cargo_features)?;
    d.set_item("cuda", b.cuda)?;
    d.set_item("cuda_compute_caps", b.cuda_compute_caps)?;
    d.set_item("candle", b.candle)?;
    d.set_item("target", b.target)?;
    let per_type = PyDict::new(py);
    for (t, k) in b.dot_kernels {
        per_type.set_item(t, k)?;
    }
    d.set_item("dot_kernels", per_type)?;
    d.set_item("amx", b.amx)?;
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
    tokenizer: Option<PyRef<'_, tokenizer::NativeTokenizer>>,
    add_generation_prompt: bool,
) -> PyResult<Vec<(String, bool)>> {
    use crate::chat_template::{render_parts, special_texts, ChatMessage, TemplateVars};
    let tok = tokenizer.map(|t| std::sync::Arc::clone(&t.tok));
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
    errors::init(m.py())?;
    m.add_class::<model::NativeModel>()?;
    m.add_class::<tokenizer::NativeTokenizer>()?;
    m.add_class::<tokenizer::NativeStreamDecoder>()?;
    m.add_class::<generation::NativeGeneration>()?;
    m.add_class::<generation::SamplingParams>()?;
    m.add_class::<session::NativeSession>()?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(read_header, m)?)?;
    m.add_function(wrap_pyfunction!(kv_cache_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(memory_estimate, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_error, m)?)?;
    m.add_function(wrap_pyfunction!(render_chat_template, m)?)?;
    Ok(())
}
