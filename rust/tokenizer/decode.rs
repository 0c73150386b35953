//! Token ids to bytes, as llama.cpp's `token_to_piece` and `llama_detokenize` render them.

use super::{attr, bpe, Tokenizer, TokenizerKind};
use crate::error::Result;

impl Tokenizer {
    /// The bytes of one token as llama.cpp's `token_to_piece` renders it (`special = true`).
    pub(super) fn render(&self, id: u32) -> Vec<u8> {
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

    pub(super) fn piece(&self, id: u32, special: bool, lstrip: usize) -> &[u8] {
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
}

/// llama.cpp's `clean_up_tokenization_spaces`: drop the space before `? ! . ,`, collapse ` ' `,
/// and drop the space before `'s 'm 're 've`.
pub(super) fn clean_up_spaces(text: &[u8]) -> Vec<u8> {
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
