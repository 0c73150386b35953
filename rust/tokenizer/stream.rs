//! Turning token pieces (bytes) into text chunks that are always whole UTF-8 characters.
//!
//! A character spread over several byte-fallback tokens is emitted once complete; a sequence that
//! can never become valid is replaced by U+FFFD exactly as `String::from_utf8_lossy` (and Python's
//! `errors="replace"`) would replace it in the whole text, so the concatenation of all chunks equals
//! the lossy decoding of all bytes.

use super::decode::clean_up_spaces;
use super::Tokenizer;
use crate::error::Result;

/// Incremental UTF-8 decoder over a byte stream.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes; return the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: `valid` bytes were just validated as UTF-8.
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("validated prefix"),
                    );
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + n);
                        }
                        None => {
                            // an incomplete character at the end: wait for more bytes
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// End of stream: whatever is still pending can no longer complete.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Bytes waiting for the rest of a character.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
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

impl Tokenizer {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks_equal_lossy(bytes: &[u8]) {
        // every way of cutting the bytes into two or three pieces
        let want = String::from_utf8_lossy(bytes).into_owned();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut s = Utf8Stream::new();
                let mut got = String::new();
                for part in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    let c = s.push(part);
                    assert!(!c.contains('\u{0}') || want.contains('\u{0}'));
                    got.push_str(&c);
                }
                got.push_str(&s.finish());
                assert_eq!(got, want, "cuts {a} {b} of {bytes:?}");
            }
        }
    }

    #[test]
    fn split_characters_are_held_until_complete() {
        let mut s = Utf8Stream::new();
        let e = "é".as_bytes();
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.pending(), 1);
        assert_eq!(s.push(&e[1..]), "é");
        let emoji = "🩺".as_bytes();
        assert_eq!(s.push(&emoji[..3]), "");
        assert_eq!(s.push(&emoji[3..]), "🩺");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_like_lossy_decoding() {
        for bytes in [
            &b"ab\xffcd"[..],
            b"\xe2\x82",
            b"\xe2\x82x",
            b"\xf0\x9f\x98",
            b"ok \xc3\xa9 \xed\xa0\x80 end",
            b"\x80\x80\xc0\xaf",
            "naïve 🩺 成人".as_bytes(),
        ] {
            chunks_equal_lossy(bytes);
        }
    }
}
