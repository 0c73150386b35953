//! med42-rs: run Med42 (and other Llama-architecture GGUF models) with candle.
//!
//! Module map (dependencies point one way): `error` ← `gguf` ← `weights` ← `model` ← `generate`
//! ← `python` (the only module that touches PyO3, behind the `python` feature).

pub mod build_info;
pub mod chat_template;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod memory;
pub mod model;
pub mod sampling;
pub mod scheduler;
pub mod tokenizer;
pub mod weights;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use gguf::{GgmlType, GgufFile, LlamaConfig};
pub use kernels::KvType;
pub use model::{Backend, BatchItem, BatchScratch, KvCache, Llama, LoadOptions, Logits};
