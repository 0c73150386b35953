//! Building a [`Tokenizer`] from a GGUF file's `tokenizer.ggml.*` metadata: the vocabulary, its
//! scores and token types, the BPE merges, the special ids and the flags, with llama.cpp's
//! defaults where the metadata says nothing.

use std::collections::HashMap;

use super::{attr, special, PreTokenizer, Tokenizer, TokenizerKind, Vocab};
use crate::error::{Error, Result};
use crate::gguf::{keys, Array, Metadata};

fn string_array<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a [String]>> {
    match md.get_array(key)? {
        None => Ok(None),
        Some(Array::String(v)) => Ok(Some(v)),
        Some(_) => Err(Error::BadKey {
            key: key.into(),
            expected: "an array of strings".into(),
            found: "an array of another type".into(),
        }),
    }
}

fn short_array(key: &str, n: usize, want: usize) -> Error {
    Error::BadKey {
        key: key.into(),
        expected: format!("one entry per token ({want})"),
        found: format!("{n} entries"),
    }
}

impl Tokenizer {
    /// Build the tokenizer a GGUF file describes.
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let model = md
            .get_str(keys::TOKENIZER_MODEL)?
            .ok_or_else(|| Error::MissingKey {
                key: keys::TOKENIZER_MODEL.into(),
                hint: "this file carries no tokenizer; pass token ids instead of text".into(),
            })?;
        let kind = match model {
            "llama" => TokenizerKind::Spm,
            "gpt2" => TokenizerKind::Bpe,
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer model `{other}` (tokenizer.ggml.model); supported: llama (SentencePiece), gpt2 (BPE)"
                )))
            }
        };
        let tokens =
            string_array(md, keys::TOKENIZER_TOKENS)?.ok_or_else(|| Error::MissingKey {
                key: keys::TOKENIZER_TOKENS.into(),
                hint: "the tokenizer has no vocabulary".into(),
            })?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(short_array(keys::TOKENIZER_TOKENS, n, 1));
        }
        // Exactly f32[n_vocab], as llama.cpp writes and reads it: anything else is a damaged or
        // mislabelled file, and reinterpreting it would silently change tokenization.
        let scores: Vec<f32> = match md.get_array(keys::TOKENIZER_SCORES)? {
            None => vec![0.0; n],
            Some(Array::F32(v)) if v.len() == n => v.clone(),
            Some(a) => {
                return Err(Error::BadKey {
                    key: keys::TOKENIZER_SCORES.into(),
                    expected: format!("an array of {n} f32 (one per token)"),
                    found: format!("{} elements of {}", a.len(), a.type_name()),
                })
            }
        };
        let mut attrs: Vec<u32> = match md.get_array(keys::TOKENIZER_TOKEN_TYPE)? {
            None => vec![attr::NORMAL; n],
            Some(Array::I32(v)) if v.len() == n => v
                .iter()
                .map(|&t| match t {
                    1 => attr::NORMAL,
                    2 => attr::UNKNOWN,
                    3 => attr::CONTROL,
                    4 => attr::USER_DEFINED,
                    5 => attr::UNUSED,
                    6 => attr::BYTE,
                    _ => attr::UNDEFINED,
                })
                .collect(),
            Some(a @ Array::I32(_)) => {
                return Err(short_array(keys::TOKENIZER_TOKEN_TYPE, a.len(), n))
            }
            Some(_) => {
                return Err(Error::BadKey {
                    key: keys::TOKENIZER_TOKEN_TYPE.into(),
                    expected: "an array of i32".into(),
                    found: "an array of another type".into(),
                })
            }
        };
        let mut texts = Vec::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens so that every text is distinct and non-empty
            let t = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            };
            ids.insert(t.as_bytes().to_vec(), i as u32);
            texts.push(t);
        }

        // algorithm defaults, as llama.cpp sets them before the metadata overrides
        let (
            pre,
            mut add_bos,
            mut add_eos,
            mut add_space_prefix,
            mut clean_spaces,
            mut ignore_merges,
        );
        let (mut bos, mut eos, mut unk, mut pad): (
            Option<u32>,
            Option<u32>,
            Option<u32>,
            Option<u32>,
        );
        let mut merge_parts = HashMap::new();
        let mut ranks = HashMap::new();
        match kind {
            TokenizerKind::Spm => {
                pre = PreTokenizer::Default;
                (
                    add_bos,
                    add_eos,
                    add_space_prefix,
                    clean_spaces,
                    ignore_merges,
                ) = (true, false, true, false, false);
                (bos, eos, unk, pad) = (Some(1), Some(2), Some(0), None);
            }
            TokenizerKind::Bpe => {
                pre = PreTokenizer::from_name(md.get_str(keys::TOKENIZER_PRE)?)?;
                (
                    add_bos,
                    add_eos,
                    add_space_prefix,
                    clean_spaces,
                    ignore_merges,
                ) = (false, false, false, true, false);
                match pre {
                    PreTokenizer::Llama3 => (ignore_merges, add_bos) = (true, true),
                    PreTokenizer::Smollm => clean_spaces = false,
                    _ => {}
                }
                (bos, eos, unk, pad) = (Some(11), Some(11), None, None);
                let merges =
                    string_array(md, keys::TOKENIZER_MERGES)?.ok_or_else(|| Error::MissingKey {
                        key: keys::TOKENIZER_MERGES.into(),
                        hint: "a gpt2 (BPE) tokenizer needs its merges".into(),
                    })?;
                let mut intern = |s: &[u8]| {
                    let next = merge_parts.len() as u32;
                    *merge_parts.entry(s.to_vec()).or_insert(next)
                };
                for (rank, m) in merges.iter().enumerate() {
                    // "left right", split at the first space after the first byte
                    let b = m.as_bytes();
                    let (l, r) = match b.iter().skip(1).position(|&c| c == b' ') {
                        Some(p) => (&b[..p + 1], &b[p + 2..]),
                        None => (&b[..0], &b[..0]),
                    };
                    let key = (intern(l), intern(r));
                    ranks.entry(key).or_insert(rank as u32);
                }
            }
        }
        if let Some(v) = md.get_bool(keys::TOKENIZER_ADD_SPACE_PREFIX)? {
            add_space_prefix = v;
        }
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        (bos, eos, unk, pad) = (in_range(bos), in_range(eos), in_range(unk), in_range(pad));
        let read_id = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            Ok(match md.get_u64(key)? {
                Some(v) if (v as usize) < n => Some(v as u32),
                _ => default,
            })
        };
        bos = read_id(keys::TOKENIZER_BOS_ID, bos)?;
        eos = read_id(keys::TOKENIZER_EOS_ID, eos)?;
        unk = read_id(keys::TOKENIZER_UNK_ID, unk)?;
        pad = read_id(keys::TOKENIZER_PAD_ID, pad)?;
        let eot = read_id(keys::TOKENIZER_EOT_ID, None)?;
        let eom = read_id(keys::TOKENIZER_EOM_ID, None)?;
        if let Some(v) = md.get_bool(keys::TOKENIZER_ADD_BOS)? {
            add_bos = v;
        }
        if let Some(v) = md.get_bool(keys::TOKENIZER_ADD_EOS)? {
            add_eos = v;
        }
        let special::EndTokens { eot, eom, eog } =
            special::end_tokens(&ids, &mut attrs, eos, eot, eom);
        let specials = special::longest_first(&texts, &attrs);

        let vocab = Vocab {
            texts,
            ids,
            scores,
            attrs,
            kind,
            unk,
            merge_parts,
            ranks,
        };
        let mut tok = Tokenizer {
            vocab,
            pre,
            bos,
            eos,
            eot,
            eom,
            pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            ignore_merges,
            specials,
            pieces: Vec::new(),
        };
        tok.pieces = (0..n as u32).map(|i| tok.render(i)).collect();
        Ok(tok)
    }
}
