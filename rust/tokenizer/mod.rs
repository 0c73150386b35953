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

mod bpe;
mod merge;
mod spm;
pub mod stream;
mod unicode;
mod unicode_data;

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gguf::{keys, Array, Metadata};

pub use stream::Utf8Stream;

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

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "<end_of_utterance>",
];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];
/// Fill-in-the-middle markers: typed as control; pad/repo/file-separator also end generation.
const FIM_TEXTS: [&[&str]; 6] = [
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
        "<PRE>",
        "\u{2581}<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
        "<SUF>",
        "\u{2581}<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
        "<MID>",
        "\u{2581}<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

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
        let mut eot = read_id(keys::TOKENIZER_EOT_ID, None)?;
        let mut eom = read_id(keys::TOKENIZER_EOM_ID, None)?;
        if let Some(v) = md.get_bool(keys::TOKENIZER_ADD_BOS)? {
            add_bos = v;
        }
        if let Some(v) = md.get_bool(keys::TOKENIZER_ADD_EOS)? {
            add_eos = v;
        }

        // end-of-turn / end-of-generation tokens recognised by text, forced to control type
        // In list order. llama.cpp takes whichever token its hash map yields first: `<|eot_id|>`
        // for Llama-3 (the list order agrees), `<|endoftext|>` for SmolLM2 (the list order gives the
        // chat template's `<|im_end|>`; both end generation either way).
        let find = |names: &[&str]| -> Vec<u32> {
            names
                .iter()
                .filter_map(|t| ids.get(t.as_bytes()).copied())
                .collect()
        };
        if eot.is_none() {
            eot = find(EOT_TEXTS).first().copied();
            if let Some(id) = eot {
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        if eom.is_none() {
            eom = find(&["<|eom_id|>"]).first().copied();
            if let Some(id) = eom {
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        let mut eog = Vec::new();
        for (k, names) in FIM_TEXTS.iter().enumerate() {
            if let Some(&id) = find(names).first() {
                attrs[id as usize] |= attr::CONTROL;
                if k >= 3 {
                    eog.push(id);
                }
            }
        }
        for id in find(EOG_TEXTS) {
            attrs[id as usize] |= attr::CONTROL;
            eog.push(id);
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        // llama.cpp's exceptions: with harmony-style `<|return|>`/`<|call|>` (or solar-open's
        // `<|calls|>`/`<|flush|>`), `<|end|>` is an ordinary marker; with `<|tool_response>` or
        // `<|plamo:eos|>`, `</s>` is plain text
        let has =
            |t: &str, eog: &[u32]| ids.get(t.as_bytes()).filter(|id| eog.contains(id)).copied();
        if let Some(end) = has("<|end|>", &eog) {
            let ret = has("<|return|>", &eog).is_some();
            let call = has("<|call|>", &eog).or(has("<|calls|>", &eog)).is_some();
            let flush = has("<|flush|>", &eog).is_some();
            if call && (ret || flush) {
                eog.retain(|&i| i != end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if let Some(s) = has("</s>", &eog) {
            if has("<|tool_response>", &eog).is_some() || has("<|plamo:eos|>", &eog).is_some() {
                eog.retain(|&i| i != s);
                attrs[s as usize] = attr::NORMAL;
            }
        }

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));

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
    /// The score of a token (SentencePiece merge priority).
    pub fn token_score(&self, id: u32) -> Result<f32> {
        self.check(id)?;
        Ok(self.vocab.scores[id as usize])
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

    /// Text to ids. `add_special` adds BOS/EOS as the vocabulary asks (`add_bos_token`,
    /// `add_eos_token`); `parse_special` lets control tokens written in the text (`</s>`,
    /// `<|eot_id|>`) become those tokens; otherwise they are tokenized as plain text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let frags = self.partition(text, parse_special);
        self.encode_fragments(text, frags, add_special)
    }

    /// Encode the concatenation of `parts`, where special tokens are recognised only inside parts
    /// flagged `true` (a template's markup) and never inside the others (message contents). Text
    /// runs that meet across parts are tokenized as one, so the ids equal `encode(whole, ..,
    /// true)` whenever the unflagged parts contain no special-token text.
    pub fn encode_parts(&self, parts: &[(&str, bool)], add_special: bool) -> Vec<u32> {
        let mut text = String::new();
        let mut frags: Vec<Fragment> = Vec::new();
        for &(part, parse) in parts {
            let base = text.len();
            text.push_str(part);
            for f in self.partition(part, parse) {
                match (f, frags.last_mut()) {
                    (Fragment::Text(a, b), Some(Fragment::Text(_, end))) if *end == base + a => {
                        *end = base + b
                    }
                    (Fragment::Text(a, b), _) => frags.push(Fragment::Text(base + a, base + b)),
                    (tok, _) => frags.push(tok),
                }
            }
        }
        self.encode_fragments(&text, frags, add_special)
    }

    fn encode_fragments(&self, text: &str, frags: Vec<Fragment>, add_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match self.vocab.kind {
            TokenizerKind::Spm => {
                let mut prev_special = true;
                for f in frags {
                    match f {
                        Fragment::Text(a, b) => {
                            let mut s = String::with_capacity(b - a + 3);
                            if self.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(&text[a..b]);
                            let escaped = s.replace(' ', "\u{2581}");
                            spm::tokenize(&self.vocab, escaped.as_bytes(), &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            TokenizerKind::Bpe => {
                for f in frags {
                    match f {
                        Fragment::Text(a, b) => {
                            for word in bpe::pre_tokenize(self.pre, &text[a..b]) {
                                bpe::tokenize_word(
                                    &self.vocab,
                                    &word,
                                    self.ignore_merges,
                                    &mut out,
                                );
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Split text at special-token occurrences, longest special first, leftmost matches.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0, text.len())];
        for &id in &self.specials {
            let a = self.vocab.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.vocab.texts[id as usize].as_str();
            if !text.contains(needle) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut a, b) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(p) = text[a..b].find(needle) {
                    if p > 0 {
                        next.push(Fragment::Text(a, a + p));
                    }
                    next.push(Fragment::Token(id));
                    a += p + needle.len();
                }
                if a < b {
                    next.push(Fragment::Text(a, b));
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes of one token as llama.cpp's `token_to_piece` renders it (`special = true`).
    fn render(&self, id: u32) -> Vec<u8> {
        let a = self.vocab.attrs[id as usize];
        let text = &self.vocab.texts[id as usize];
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match self.vocab.kind {
                TokenizerKind::Spm => text.replace('\u{2581}', " ").into_bytes(),
                TokenizerKind::Bpe => {
                    let mut out = Vec::with_capacity(text.len());
                    for c in text.chars() {
                        match bpe::char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => {
                                // what llama.cpp writes for a character outside the byte encoding
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                for b in c.to_string().bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(text.as_bytes());
                                out.push(b']');
                            }
                        }
                    }
                    out
                }
            };
        }
        if a & attr::BYTE != 0 {
            let byte = text
                .get(3..5)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            return vec![byte];
        }
        Vec::new()
    }

    /// The bytes of one token. Control and unknown tokens render as nothing unless `special`;
    /// up to `lstrip` leading spaces are dropped.
    pub fn token_to_piece(&self, id: u32, special: bool, lstrip: usize) -> Result<&[u8]> {
        self.check(id)?;
        Ok(self.piece(id, special, lstrip))
    }

    fn piece(&self, id: u32, special: bool, lstrip: usize) -> &[u8] {
        if !special && self.vocab.attrs[id as usize] & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        let p = &self.pieces[id as usize][..];
        let skip = p.iter().take(lstrip).take_while(|&&b| b == b' ').count();
        &p[skip..]
    }

    /// Ids to bytes exactly as `llama_detokenize(ids, remove_special, unparse_special)`: the space
    /// prefix is dropped from the first token (when the vocabulary adds one), and BPE vocabularies
    /// that ask for it get llama.cpp's clean-up of spaces before punctuation and contractions.
    pub fn detokenize(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        self.check_ids(ids)?;
        let mut ids = ids;
        // the space prefix comes off the first piece, except after a BOS that is removed
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && !ids.is_empty() && Some(ids[0]) == self.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().copied() == self.eos && self.eos.is_some() {
            ids = &ids[..ids.len() - 1];
        }
        let mut raw = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            raw.extend_from_slice(self.piece(id, unparse_special, usize::from(remove_space)));
            remove_space = false;
        }
        Ok(if self.clean_spaces {
            clean_up_spaces(&raw)
        } else {
            raw
        })
    }

    /// Ids to text: [`Self::detokenize`] with special tokens kept in the ids but rendered only when
    /// `special`; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String> {
        let bytes = self.detokenize(ids, false, special)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A stream decoder for this tokenizer (see [`StreamDecoder`]).
    pub fn stream(&self, special: bool) -> StreamDecoder {
        StreamDecoder {
            special,
            raw: Vec::new(),
            emitted: 0,
            n_ids: 0,
            utf8: Utf8Stream::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

/// llama.cpp's `clean_up_tokenization_spaces`: drop the space before `? ! . ,`, collapse ` ' `,
/// and drop the space before `'s 'm 're 've`.
fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
    let mut t = text.to_vec();
    if t.is_empty() {
        return t;
    }
    // pass 1
    let mut total = 1;
    for i in 1..t.len() {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
    // pass 2: " ' " -> "'"
    let n = t.len();
    let mut total = 1;
    let mut i = 1;
    while i < n {
        let x = t[i];
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    t.truncate(total);
    // pass 3
    let n = t.len();
    let mut total = 1;
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            if matches!(x1, b's' | b'm')
                || (i + 2 < n && matches!((x1, t[i + 2]), (b'r' | b'v', b'e')))
            {
                total -= 1;
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
    t
}

/// Incremental decoding: push ids one at a time, get text chunks that are always whole characters.
///
/// The concatenation of every chunk and of `finish()` equals `Tokenizer::decode(all ids, special)`.
/// Bytes of an unfinished character wait for the next token; an invalid sequence becomes U+FFFD
/// exactly where the whole-text decoding puts it. Vocabularies with space clean-up hold back the
/// last few bytes, since a following token can still remove a space.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    special: bool,
    raw: Vec<u8>,
    emitted: usize,
    n_ids: usize,
    utf8: Utf8Stream,
}

/// Bytes the clean-up rules may still change at the end of the text.
const CLEAN_LOOKAHEAD: usize = 4;

impl StreamDecoder {
    /// Add one token; return the text that became final (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        tok.check(id)?;
        let first = self.n_ids == 0;
        self.n_ids += 1;
        let lstrip = usize::from(first && tok.add_space_prefix);
        self.raw
            .extend_from_slice(tok.piece(id, self.special, lstrip));
        Ok(self.flush(tok, false))
    }

    /// End of stream: the held-back remainder.
    pub fn finish(&mut self, tok: &Tokenizer) -> String {
        let mut s = self.flush(tok, true);
        s.push_str(&self.utf8.finish());
        s
    }

    fn flush(&mut self, tok: &Tokenizer, last: bool) -> String {
        if !tok.clean_spaces {
            let s = self.utf8.push(&self.raw[self.emitted..]);
            self.emitted = self.raw.len();
            return s;
        }
        // The clean-up looks at most a few bytes ahead, so everything but the tail is final.
        let cleaned = clean_up_spaces(&self.raw);
        let stable = if last {
            cleaned.len()
        } else {
            cleaned.len().saturating_sub(CLEAN_LOOKAHEAD)
        };
        if stable <= self.emitted {
            return String::new();
        }
        let s = self.utf8.push(&cleaned[self.emitted..stable]);
        self.emitted = stable;
        s
    }

    /// Number of ids pushed so far.
    pub fn len(&self) -> usize {
        self.n_ids
    }

    /// True before the first id.
    pub fn is_empty(&self) -> bool {
        self.n_ids == 0
    }
}

#[cfg(test)]
mod tests;
