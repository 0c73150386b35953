//! The fuzz entry point: everything a model file reaches, run on arbitrary bytes.
//!
//! [`run_input`] parses the bytes as GGUF, and when that succeeds builds the config, the tokenizer
//! (encoding and decoding a sample), loads the model with a small context and runs a two-token
//! forward pass. Any outcome is fine except a panic, a hang or an unbounded allocation; errors are
//! the expected result for almost every input. Used by the stable mutation harness
//! (`examples/fuzz_gguf.rs`, run in CI) and the cargo-fuzz target (`fuzz/`).

use std::sync::Arc;

use crate::gguf::{GgufFile, LlamaConfig};
use crate::model::{Llama, LoadOptions, Logits};
use crate::tokenizer::Tokenizer;

/// How far an input got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reached {
    /// The header, metadata or tensor directory was refused.
    Parse,
    /// Parsed; the model config was refused.
    Config,
    /// Config built; tokenizer refused or absent.
    Tokenizer,
    /// The model was refused at load (shapes, types, memory budget).
    Load,
    /// A forward pass ran.
    Forward,
}

/// Run one input through every stage it can reach; returns the last stage reached.
pub fn run_input(bytes: &[u8]) -> Reached {
    let Ok(file) = GgufFile::from_bytes("fuzz-input.gguf", bytes) else {
        return Reached::Parse;
    };
    let _ = file.architecture();
    let Ok(cfg) = LlamaConfig::from_gguf(&file) else {
        return Reached::Config;
    };
    let mut reached = Reached::Tokenizer;
    if let Ok(tok) = Tokenizer::from_metadata(&file.metadata) {
        let ids = tok.encode("Metformin 500 mg <s> </s> héllo 日本", true, true);
        let _ = tok.decode(&ids, true);
        let _ = tok.decode(&ids, false);
        let mut stream = tok.stream(false);
        for &id in &ids {
            let _ = stream.push(&tok, id);
        }
    }
    let opts = LoadOptions {
        n_ctx: Some(8.min(cfg.n_ctx_train.max(1))),
        n_threads: Some(1),
        ..Default::default()
    };
    let Ok(model) = Llama::from_gguf(Arc::new(file), &opts) else {
        return reached.max(Reached::Load);
    };
    if let Ok(mut cache) = model.new_cache(None) {
        let tokens: Vec<u32> = [1u32, 2].iter().map(|t| t % cfg.n_vocab as u32).collect();
        if model.forward(&tokens, &mut cache, Logits::All).is_ok() {
            reached = Reached::Forward;
        }
    }
    reached.max(Reached::Load)
}
