//! The one error type of the crate. Every message names the offending file, key, tensor or
//! argument and, where there is one, what the user can do about it.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong. Each variant is one kind of failure a caller handles
/// differently; the Python binding maps each to one exception class of `med42_rs.errors`.
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
         try a smaller quant, a shorter context (n_ctx) or a smaller KV cache (kv_type=\"q8_0\")"
    )]
    InsufficientMemory {
        needed_gib: f64,
        available_gib: f64,
        detail: String,
    },

    /// The GPU ran out of memory while the model was in use (the model stays usable).
    #[error(
        "device `{device}` ran out of memory ({detail}); nothing was lost and the model stays \
         usable: retry with a shorter prompt or fewer parallel requests, or load the model with \
         fewer n_gpu_layers or a smaller n_ctx"
    )]
    DeviceOutOfMemory { device: String, detail: String },

    /// Not enough GPU memory for the offloaded blocks and their KV caches (checked at load).
    #[error(
        "offloading {n_gpu_layers} blocks to `{device}` needs about {needed_gib:.1} GiB of its memory \
         ({detail}) but {available_gib:.1} GiB is free; lower n_gpu_layers (the other blocks run \
         on the CPU), n_ctx or n_parallel, or use a smaller quant"
    )]
    InsufficientDeviceMemory {
        device: String,
        n_gpu_layers: usize,
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

    /// A saved session state that cannot be restored here (another model, another cache type,
    /// a damaged or truncated snapshot, a context too small for it).
    #[error("session state: {0}")]
    State(String),

    /// More requests are waiting for the engine than its queue holds.
    #[error(
        "the engine's queue is full: {max_queue} requests are already waiting for one of the \
         {n_parallel} parallel sequences; retry later, or load the model with a larger \
         `max_queue` or `n_parallel`"
    )]
    QueueFull { max_queue: usize, n_parallel: usize },
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
}

/// One error of every variant, with the argument names a user would see: what the binding's
/// tests walk to check that each variant reaches Python as its own exception class, with a
/// message that names what was wrong.
#[doc(hidden)]
pub fn examples() -> Vec<Error> {
    let path = PathBuf::from("model.gguf");
    vec![
        Error::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        },
        Error::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied"),
        },
        Error::NotGguf {
            path: path.clone(),
            detail: "magic is 'PK\\x03\\x04'".into(),
        },
        Error::InvalidGguf {
            path: path.clone(),
            detail: "tensor count 1099511627776 exceeds the file size".into(),
        },
        Error::Truncated {
            path,
            what: "tensor `blk.0.attn_q.weight`".into(),
            needed: 4096,
            len: 1024,
        },
        Error::Parts("model.gguf-split-b is missing next to model.gguf-split-a".into()),
        Error::MissingKey {
            key: "llama.block_count".into(),
            hint: "the file is not a complete Llama model".into(),
        },
        Error::BadKey {
            key: "llama.vocab_size".into(),
            expected: "a positive integer".into(),
            found: "0".into(),
        },
        Error::Unsupported("architecture `mamba`".into()),
        Error::tensor(
            "output_norm.weight",
            "has shape [7] but the config needs [8]",
        ),
        Error::Device {
            device: "cuda".into(),
            detail: "this build has no CUDA support".into(),
        },
        Error::arg("temperature", "NaN must be a finite number >= 0"),
        Error::ContextOverflow {
            needed: 5000,
            n_ctx: 4096,
        },
        Error::InsufficientMemory {
            needed_gib: 44.0,
            available_gib: 20.0,
            detail: "weights 41.0 GiB, KV cache 2.5 GiB".into(),
        },
        Error::DeviceOutOfMemory {
            device: "cuda:0".into(),
            detail: "CUDA_ERROR_OUT_OF_MEMORY".into(),
        },
        Error::InsufficientDeviceMemory {
            device: "cuda:0".into(),
            n_gpu_layers: 80,
            needed_gib: 82.0,
            available_gib: 79.1,
            detail: "weights 39.5 GiB + KV cache 40.0 GiB".into(),
        },
        Error::Tokenizer("token id 70000 is outside the vocabulary of 32000".into()),
        Error::Cancelled,
        Error::Internal("index out of bounds".into()),
        Error::Candle(candle_core::Error::Msg("shape mismatch in matmul".into())),
        Error::Template("syntax error: unexpected end of input (in chat_template:1)".into()),
    ]
}
