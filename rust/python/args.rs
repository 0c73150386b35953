//! Caller values to engine values. A wrong type or range raises `InvalidParameterError` naming
//! the argument (pyo3's own extraction would raise a bare `TypeError` or `OverflowError`).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

use super::errors::invalid;

fn describe(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    match obj.repr() {
        Ok(r) => {
            let r = r.to_string();
            let r = if r.chars().count() > 60 {
                format!("{}...", r.chars().take(60).collect::<String>())
            } else {
                r
            };
            format!("{r} ({ty})")
        }
        Err(_) => ty,
    }
}

/// Token ids: any iterable of ints (Python or numpy) in `0..2**32`; the vocabulary range is the
/// engine's check.
pub(crate) fn ids(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<u32>> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() || obj.is_none() {
        return Err(invalid(
            py,
            name,
            format!("expected a list of token ids, got {}", describe(obj)),
        ));
    }
    let iter = obj.try_iter().map_err(|_| {
        invalid(
            py,
            name,
            format!("expected a list of token ids, got {}", describe(obj)),
        )
    })?;
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for (i, item) in iter.enumerate() {
        let item = item?;
        let v = if item.is_instance_of::<PyBool>() || item.is_instance_of::<PyFloat>() {
            None
        } else {
            item.extract::<i64>().ok()
        };
        match v {
            Some(v) if (0..=u32::MAX as i64).contains(&v) => out.push(v as u32),
            Some(v) => {
                return Err(invalid(
                    py,
                    name,
                    format!("{name}[{i}] = {v} is not a token id (ids are >= 0)"),
                ))
            }
            None => {
                return Err(invalid(
                    py,
                    name,
                    format!(
                        "{name}[{i}] must be an int token id, got {}",
                        describe(&item)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// Model paths: one path (str or `os.PathLike`) or a list of them.
pub(crate) fn paths(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    let py = obj.py();
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(vec![p]);
    }
    if !obj.is_instance_of::<PyString>() {
        if let Ok(v) = obj.extract::<Vec<PathBuf>>() {
            if v.is_empty() {
                return Err(invalid(py, "path", "at least one model file is required"));
            }
            return Ok(v);
        }
    }
    Err(invalid(
        py,
        "path",
        format!(
            "expected a file path (str or os.PathLike) or a list of them, got {}",
            describe(obj)
        ),
    ))
}

/// An int `>= 0` (not a bool).
pub(crate) fn count(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    let ok = obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>();
    match ok.then(|| obj.extract::<usize>().ok()).flatten() {
        Some(v) => Ok(v),
        None => Err(invalid(
            obj.py(),
            name,
            format!("must be an int >= 0, got {}", describe(obj)),
        )),
    }
}

/// A real number (int or float, not a bool); its range is checked by the caller's validation.
pub(crate) fn number(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f32> {
    let ok = (obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>())
        && !obj.is_instance_of::<PyBool>();
    match ok.then(|| obj.extract::<f64>().ok()).flatten() {
        Some(v) => Ok(v as f32),
        None => Err(invalid(
            obj.py(),
            name,
            format!("must be a number, got {}", describe(obj)),
        )),
    }
}

/// `None` or an int in `[0, 2**64)`.
pub(crate) fn seed(obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    if obj.is_none() {
        return Ok(None);
    }
    let ok = obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>();
    match ok.then(|| obj.extract::<u64>().ok()).flatten() {
        Some(v) => Ok(Some(v)),
        None => Err(invalid(
            obj.py(),
            "seed",
            format!(
                "must be None or an int in [0, 2**64), got {}",
                describe(obj)
            ),
        )),
    }
}

/// `None`, one string, or a sequence of strings.
pub(crate) fn stops(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if obj.is_none() {
        return Ok(Vec::new());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.extract::<String>()?]);
    }
    let bad = || {
        invalid(
            obj.py(),
            "stop",
            format!(
                "must be a string or a list of strings, got {}",
                describe(obj)
            ),
        )
    };
    let iter = obj.try_iter().map_err(|_| bad())?;
    let mut out = Vec::new();
    for item in iter {
        let item = item?;
        match item.cast::<PyString>() {
            Ok(s) => out.push(s.extract::<String>()?),
            Err(_) => return Err(bad()),
        }
    }
    Ok(out)
}

/// One token id.
pub(crate) fn id(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<u32> {
    let ok = obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>();
    match ok.then(|| obj.extract::<u32>().ok()).flatten() {
        Some(v) => Ok(v),
        None => Err(invalid(
            obj.py(),
            name,
            format!("must be a token id (an int >= 0), got {}", describe(obj)),
        )),
    }
}

/// The arguments of a generation: prompt ids, stop ids, and the log-probability alternatives
/// (`0..=MAX_LOGPROBS`), checked before anything is taken or allocated.
pub(crate) type GenerationArgs = (Vec<u32>, Vec<u32>, Option<usize>);

/// Convert and check the arguments every `generate` takes (see [`GenerationArgs`]).
pub(crate) fn generation(
    py: Python<'_>,
    ids: &Bound<'_, PyAny>,
    stop_ids: &Bound<'_, PyAny>,
    logprobs: Option<&Bound<'_, PyAny>>,
) -> PyResult<GenerationArgs> {
    use crate::generate::MAX_LOGPROBS;
    let logprobs = logprobs.map(|v| count(v, "logprobs")).transpose()?;
    if let Some(n) = logprobs.filter(|&n| n > MAX_LOGPROBS) {
        return Err(invalid(
            py,
            "logprobs",
            format!("{n} alternatives; at most {MAX_LOGPROBS}"),
        ));
    }
    Ok((
        self::ids(ids, "prompt")?,
        self::ids(stop_ids, "stop_ids")?,
        logprobs,
    ))
}
