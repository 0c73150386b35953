//! Tokenizers built from a GGUF file's `tokenizer.ggml.*` metadata, matching llama.cpp id for id.
//!
//! * `llama` (Llama-2 / Med42): SentencePiece-BPE with scores and `<0xXX>` byte fallback ([`spm`]).
//! * `gpt2` (Llama-3 / Med42-v2, SmolLM2): byte-level BPE with merges and the pre-tokenizer named
//!   by `tokenizer.ggml.pre` ([`bpe`]).
//!
//! Special tokens (control, user-defined, unknown) are matched in the text before tokenization,
//! longest first; control and unknown tokens only when the caller asks (`parse_special`), so user
//! text that merely looks like `</s>` stays text. Decoding mirrors `llama_detokenize`, and
//! [`StreamDecoder`] yields whole-character chunks whose concatenation equals [`Tokenizer::decode`].
//!
//! Files by concern: `load` builds the tokenizer from metadata, `special` finds the end-of-turn and
//! end-of-generation tokens and orders the special tokens for matching, `encode` and `decode` turn
//! text into ids and back, [`stream`] decodes incrementally; `spm`, `bpe` and `merge` are the two
//! algorithms and their shared merge loop, `unicode` the character classes BPE pre-tokenizers use.

mod bpe;
mod decode;
mod encode;
mod load;
mod merge;
mod special;
mod spm;
pub mod stream;
mod unicode;
mod unicode_data;

use std::collections::HashMap;

use crate::error::{Error, Result};

pub use stream::{StreamDecoder, Utf8Stream};

/// Token attributes (llama.cpp's `llama_token_attr` bits).
pub mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
}

/// The tokenizer algorithm of `tokenizer.ggml.model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// `llama`: SentencePiece-BPE.
    Spm,
    /// `gpt2`: byte-level BPE.
    Bpe,
}

/// The BPE pre-tokenizer (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// absent or `default`: llama.cpp's fallback rules
    Default,
    /// `gpt-2`
    Gpt2,
    /// `llama-bpe` / `llama3` / `llama-v3` (Llama-3, Med42-v2)
    Llama3,
    /// `smollm` (SmolLM / SmolLM2)
    Smollm,
}

impl PreTokenizer {
    fn from_name(name: Option<&str>) -> Result<Self> {
        Ok(match name {
            None | Some("default") => Self::Default,
            Some("gpt-2") => Self::Gpt2,
            Some("llama-bpe" | "llama3" | "llama-v3") => Self::Llama3,
            Some("smollm") => Self::Smollm,
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "BPE pre-tokenizer `{other}` (tokenizer.ggml.pre); supported: llama-bpe, llama3, llama-v3, \
                     smollm, gpt-2, default"
                )))
            }
        })
    }

    /// The name as written in GGUF metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Gpt2 => "gpt-2",
            Self::Llama3 => "llama-bpe",
            Self::Smollm => "smollm",
        }
    }
}

/// Token texts, scores, attributes and (for BPE) merge ranks.
#[derive(Debug, Clone)]
pub struct Vocab {
    texts: Vec<String>,
    ids: HashMap<Vec<u8>, u32>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    kind: TokenizerKind,
    unk: Option<u32>,
    merge_parts: HashMap<Vec<u8>, u32>,
    ranks: HashMap<(u32, u32), u32>,
}

impl Vocab {
    fn lookup(&self, text: &[u8]) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The token of one raw byte (SentencePiece byte fallback): `<0xXX>`, else the byte itself,
    /// else the unknown token.
    fn byte_token(&self, b: u8) -> Option<u32> {
        let hex = format!("<0x{b:02X}>");
        self.lookup(hex.as_bytes())
            .or_else(|| self.lookup(&[b]))
            .or(self.unk)
    }

    fn merge_rank(&self, left: &[u8], right: &[u8]) -> Option<u32> {
        let l = *self.merge_parts.get(left)?;
        let r = *self.merge_parts.get(right)?;
        self.ranks.get(&(l, r)).copied()
    }
}

/// A complete tokenizer: vocabulary, algorithm, special ids and flags.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    pre: PreTokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    pad: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    ignore_merges: bool,
    /// control / user-defined / unknown tokens, longest text first
    specials: Vec<u32>,
    /// `token_to_piece(id, special = true)` for every id
    pieces: Vec<Vec<u8>>,
}

impl Tokenizer {
    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.texts.len()
    }
    /// `llama` (SentencePiece) or `gpt2` (BPE).
    pub fn kind(&self) -> TokenizerKind {
        self.vocab.kind
    }
    /// The BPE pre-tokenizer (SentencePiece vocabularies report `Default`).
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }
    /// Beginning-of-sequence id.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// End-of-sequence id.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End-of-turn id (`<|eot_id|>`, `<|im_end|>`, ...), when the vocabulary has one.
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    /// End-of-message id (`<|eom_id|>`).
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }
    /// Unknown-token id.
    pub fn unk(&self) -> Option<u32> {
        self.vocab.unk
    }
    /// Padding id.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    /// Every id that ends a generation (EOS, EOT, EOM and the end-of-turn tokens found by text).
    pub fn eog(&self) -> &[u32] {
        &self.eog
    }
    /// Whether `id` ends a generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// Whether `encode(.., add_special = true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(.., add_special = true)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Whether text gets a leading space (SentencePiece `add_space_prefix`).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
    /// The stored text of a token (`▁` and byte-encoding as in the vocabulary).
    pub fn token_text(&self, id: u32) -> Result<&str> {
        self.check(id)?;
        Ok(&self.vocab.texts[id as usize])
    }
    /// The attribute bits of a token (see [`attr`]).
    pub fn token_attr(&self, id: u32) -> Result<u32> {
        self.check(id)?;
        Ok(self.vocab.attrs[id as usize])
    }
    /// The id of a token text, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.lookup(text.as_bytes())
    }

    fn check(&self, id: u32) -> Result<()> {
        if (id as usize) < self.vocab_size() {
            Ok(())
        } else {
            Err(Error::InvalidArgument {
                param: "token id".into(),
                detail: format!(
                    "{id} is outside the vocabulary of {} tokens",
                    self.vocab_size()
                ),
            })
        }
    }

    /// Check every id before decoding anything.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        ids.iter().try_for_each(|&id| self.check(id))
    }
}

#[cfg(test)]
mod tests;
