//! The one error type of the crate. Every message names the offending file, key, tensor or
//! argument and, where there is one, what the user can do about it.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong, grouped the way the Python layer maps it to exceptions
/// (see `python/med42_rs/errors.py`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be opened or mapped.
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a GGUF file at all.
    #[error("{path}: not a GGUF file ({detail}); med42-rs loads GGUF model files such as med42-70b.Q4_K_M.gguf")]
    NotGguf { path: PathBuf, detail: String },

    /// The file is GGUF but structurally invalid: a count, length, dimension, offset or alignment
    /// that cannot be right.
    #[error("{path}: invalid GGUF: {detail}")]
    InvalidGguf { path: PathBuf, detail: String },

    /// The file ends before the data it declares: almost always an interrupted download.
    #[error(
        "{path}: file is truncated: {what} needs bytes up to offset {needed}, but the file has only {len} bytes; \
         this is usually a partial download: download the file again"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        len: u64,
    },

    /// The parts of a split model do not form a whole (missing, out of order, given alone).
    #[error("{0}")]
    Parts(String),

    /// A required metadata key is absent.
    #[error("GGUF metadata key `{key}` is missing; {hint}")]
    MissingKey { key: String, hint: String },

    /// A metadata key has an unexpected type or value.
    #[error("GGUF metadata key `{key}`: expected {expected}, found {found}")]
    BadKey {
        key: String,
        expected: String,
        found: String,
    },

    /// The model is valid GGUF but not something this engine runs.
    #[error("unsupported model: {0}")]
    Unsupported(String),

    /// A tensor is missing, or its shape or type does not fit the model config.
    #[error("tensor `{tensor}`: {detail}")]
    Tensor { tensor: String, detail: String },

    /// The requested device is not available in this build or on this machine.
    #[error("device `{device}` is not available: {detail}")]
    Device { device: String, detail: String },

    /// A caller-supplied argument is out of range.
    #[error("invalid value for `{param}`: {detail}")]
    InvalidArgument { param: String, detail: String },

    /// Prompt and requested tokens do not fit in the context window.
    #[error(
        "{needed} tokens do not fit in the context window of {n_ctx} tokens; \
         shorten the prompt, lower max_tokens, or load the model with a larger n_ctx"
    )]
    ContextOverflow { needed: usize, n_ctx: usize },

    /// Not enough memory for the model plus its KV cache.
    #[error(
        "loading needs about {needed_gib:.1} GiB ({detail}) but only {available_gib:.1} GiB is available; \
         try a smaller quant or a shorter context (n_ctx)"
    )]
    InsufficientMemory {
        needed_gib: f64,
        available_gib: f64,
        detail: String,
    },

    /// Tokenizer metadata is inconsistent or text cannot be tokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The generation was cancelled by the caller.
    #[error("generation cancelled")]
    Cancelled,

    /// A bug: a panic caught at the Python boundary. The engine stays usable.
    #[error("internal error (a bug in med42-rs, please report it): {0}")]
    Internal(String),

    /// An error inside candle (a bug in this crate if it ever surfaces).
    #[error("internal tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    /// A chat template that does not compile, refuses the messages (`raise_exception`), or runs
    /// past its step or output limits.
    #[error("chat template: {0}")]
    Template(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn arg(param: &str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            param: param.to_string(),
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Error::Tensor`].
    pub fn tensor(tensor: &str, detail: impl Into<String>) -> Self {
        Error::Tensor {
            tensor: tensor.to_string(),
            detail: detail.into(),
        }
    }

    /// The Python exception class name this error maps to (see `errors.py`).
    pub fn python_class(&self) -> &'static str {
        match self {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "FileNotFoundError"
            }
            Error::Io { .. } => "ModelFileError",
            Error::NotGguf { .. } => "NotGGUFError",
            Error::InvalidGguf { .. } | Error::Tensor { .. } => "InvalidModelFileError",
            Error::Truncated { .. } => "TruncatedFileError",
            Error::Parts(_) => "SplitFilesError",
            Error::MissingKey { .. } | Error::BadKey { .. } => "MetadataError",
            Error::Unsupported(_) => "UnsupportedModelError",
            Error::Device { .. } => "DeviceUnavailableError",
            Error::InvalidArgument { .. } => "InvalidParameterError",
            Error::ContextOverflow { .. } => "ContextLengthExceededError",
            Error::InsufficientMemory { .. } => "InsufficientMemoryError",
            Error::Tokenizer(_) => "TokenizerError",
            Error::Cancelled => "GenerationCancelled",
            Error::Internal(_) => "InternalError",
            Error::Candle(_) => "Med42Error",
            Error::Template(_) => "ChatTemplateError",
        }
    }
}
