//! Engine errors to Python exceptions, and running engine code detached from the interpreter
//! with panics caught and Ctrl-C honoured.
//!
//! The exception classes live in `med42_rs/errors.py` (they need multiple inheritance: a bad
//! parameter is both a `Med42Error` and a `ValueError`). They are looked up once, when the native
//! module loads, so a class missing there fails the import instead of a later error path; each
//! [`Error`] variant maps to one class in [`class_of`], an exhaustive match.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::Error;

/// The exception classes, in the order of [`NAMES`].
#[derive(Debug, Clone, Copy)]
enum Class {
    ModelFileNotFound,
    ModelFile,
    NotGguf,
    InvalidModelFile,
    Truncated,
    SplitFiles,
    Metadata,
    Unsupported,
    Device,
    InvalidParameter,
    ContextLength,
    InsufficientMemory,
    Tokenizer,
    Cancelled,
    Internal,
    ChatTemplate,
    SessionState,
    QueueFull,
}

const NAMES: [&str; 18] = [
    "ModelFileNotFoundError",
    "ModelFileError",
    "NotGGUFError",
    "InvalidModelFileError",
    "TruncatedFileError",
    "SplitFilesError",
    "MetadataError",
    "UnsupportedModelError",
    "DeviceUnavailableError",
    "InvalidParameterError",
    "ContextLengthExceededError",
    "InsufficientMemoryError",
    "TokenizerError",
    "GenerationCancelled",
    "InternalError",
    "ChatTemplateError",
    "SessionStateError",
    "QueueFullError",
];

fn class_of(e: &Error) -> Class {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Class::ModelFileNotFound
        }
        Error::Io { .. } => Class::ModelFile,
        Error::NotGguf { .. } => Class::NotGguf,
        Error::InvalidGguf { .. } | Error::Tensor { .. } => Class::InvalidModelFile,
        Error::Truncated { .. } => Class::Truncated,
        Error::Parts(_) => Class::SplitFiles,
        Error::MissingKey { .. } | Error::BadKey { .. } => Class::Metadata,
        Error::Unsupported(_) => Class::Unsupported,
        Error::Device { .. } => Class::Device,
        Error::InvalidArgument { .. } => Class::InvalidParameter,
        Error::ContextOverflow { .. } => Class::ContextLength,
        Error::InsufficientMemory { .. }
        | Error::DeviceOutOfMemory { .. }
        | Error::InsufficientDeviceMemory { .. } => Class::InsufficientMemory,
        Error::Tokenizer(_) => Class::Tokenizer,
        Error::Cancelled => Class::Cancelled,
        Error::Internal(_) | Error::Candle(_) => Class::Internal,
        Error::Template(_) => Class::ChatTemplate,
        Error::State(_) => Class::SessionState,
        Error::QueueFull { .. } => Class::QueueFull,
    }
}

static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

/// Look the classes up (called from the module's init).
pub(super) fn init(py: Python<'_>) -> PyResult<()> {
    CLASSES.get_or_try_init(py, || {
        let m = py.import("med42_rs.errors")?;
        NAMES
            .iter()
            .map(|n| Ok(m.getattr(*n)?.cast_into::<PyType>()?.unbind()))
            .collect::<PyResult<Vec<_>>>()
    })?;
    Ok(())
}

/// The Python exception for an engine error.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    match CLASSES.get(py) {
        Some(classes) => PyErr::from_type(classes[class_of(&e) as usize].bind(py).clone(), msg),
        // Unreachable: the module's init fails when the classes cannot be looked up.
        None => PyRuntimeError::new_err(msg),
    }
}

/// `InvalidParameterError` naming `param`.
pub(crate) fn invalid(py: Python<'_>, param: &str, detail: impl Into<String>) -> PyErr {
    to_py(py, Error::arg(param, detail))
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Run `f` detached from the interpreter, turning an error into its exception and a panic into
/// `InternalError` instead of an abort of the host process.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> crate::Result<T> + Send,
) -> PyResult<T> {
    let r = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(panic) => Err(to_py(py, Error::Internal(panic_message(panic)))),
    }
}

/// Like [`detached`], for work that polls a cancel function before every layer: the function
/// says yes once `flag` is set (from any thread) or, on the main thread, when a signal handler
/// raised (Ctrl-C: `KeyboardInterrupt` is then what the caller gets).
pub(crate) fn cancellable<T: Send>(
    py: Python<'_>,
    flag: Option<&AtomicBool>,
    f: impl FnOnce(&mut dyn FnMut() -> bool) -> crate::Result<T> + Send,
) -> PyResult<T> {
    let mut err: Option<PyErr> = None;
    let r = {
        let err = &mut err;
        py.detach(move || {
            let mut check = SignalCheck::new(flag, err);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                f(&mut || check.cancelled())
            }))
        })
    };
    if let Some(e) = err {
        return Err(e);
    }
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(panic) => Err(to_py(py, Error::Internal(panic_message(panic)))),
    }
}

/// Polled from detached engine code before every layer: an explicit cancel flag, and pending
/// signals such as Ctrl-C, at most every 20 ms. Python runs signal handlers on its main thread
/// only (`PyErr_CheckSignals` does nothing elsewhere), so no thread check is needed here; asking
/// `threading` which thread this is would run Python code, which runs (and so consumes) a
/// pending handler. A signal handler may itself cancel (e.g. call a stream's `close()`): the
/// flag is read again after the handlers ran.
pub(crate) struct SignalCheck<'a> {
    flag: Option<&'a AtomicBool>,
    err: &'a mut Option<PyErr>,
    last: Instant,
}

impl<'a> SignalCheck<'a> {
    pub(crate) fn new(flag: Option<&'a AtomicBool>, err: &'a mut Option<PyErr>) -> Self {
        SignalCheck {
            flag,
            err,
            last: Instant::now(),
        }
    }

    fn flagged(&self) -> bool {
        self.flag.is_some_and(|f| f.load(Ordering::Acquire))
    }

    pub(crate) fn cancelled(&mut self) -> bool {
        if self.flagged() {
            return true;
        }
        if self.last.elapsed() < Duration::from_millis(20) {
            return false;
        }
        self.last = Instant::now();
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => self.flagged(),
            Err(e) => {
                *self.err = Some(e);
                true
            }
        }
    }
}
