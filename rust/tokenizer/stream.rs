//! Turning token pieces (bytes) into text chunks that are always whole UTF-8 characters.
//!
//! A character spread over several byte-fallback tokens is emitted once complete; a sequence that
//! can never become valid is replaced by U+FFFD exactly as `String::from_utf8_lossy` (and Python's
//! `errors="replace"`) would replace it in the whole text, so the concatenation of all chunks equals
//! the lossy decoding of all bytes.

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
