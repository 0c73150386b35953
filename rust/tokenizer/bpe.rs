//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`: Llama-3 / Med42-v2, SmolLM2) as llama.cpp runs it.
//!
//! Text is first split into words by the pre-tokenizer that `tokenizer.ggml.pre` names (each rule
//! refines the fragments of the previous one), every byte of a word is mapped to its printable
//! stand-in character (the GPT-2 byte encoding), and the characters of each word are merged pairwise
//! by merge rank (lowest first; equal ranks: the leftmost pair first).

use std::cmp::Reverse;

use super::merge::merge;
use super::unicode::Flags;
use super::{PreTokenizer, Vocab};

/// Split `text` into words, returned as their byte-encoded token-space strings.
pub(super) fn pre_tokenize(pre: PreTokenizer, text: &str) -> Vec<Vec<u8>> {
    let cpts: Vec<char> = text.chars().collect();
    let mut frags = vec![cpts.len()];
    match pre {
        PreTokenizer::Gpt2 => frags = gpt2(&cpts, &frags),
        PreTokenizer::Llama3 => frags = llama3(&cpts, &frags),
        PreTokenizer::Smollm => {
            frags = matches(&cpts, &frags, |c, p, _| {
                (is_number_class(c[p])).then_some(1)
            });
            frags = gpt2(&cpts, &frags);
        }
        PreTokenizer::Default => {
            frags = matches(&cpts, &frags, |c, p, end| run(c, p, end, is_default_punct));
            frags = gpt2(&cpts, &frags);
            frags = matches(&cpts, &frags, |c, p, end| run(c, p, end, is_number_class));
            frags = matches(&cpts, &frags, |c, p, end| {
                (p + 3 <= end && c[p..p + 3].iter().all(|d| d.is_ascii_digit())).then_some(3)
            });
        }
    }
    let mut words = Vec::with_capacity(frags.len());
    let mut start = 0;
    let mut buf = [0u8; 4];
    for len in frags {
        let mut word = Vec::with_capacity(len * 2);
        for &c in &cpts[start..start + len] {
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                word.extend_from_slice(
                    BYTE_CHARS[b as usize].encode_utf8(&mut [0u8; 4]).as_bytes(),
                );
            }
        }
        words.push(word);
        start += len;
    }
    words
}

/// `\p{N}` as llama.cpp's collapsed-text regexes see it.
fn is_number_class(c: char) -> bool {
    c.is_ascii_digit()
        || (!c.is_ascii() && Flags::of(c).is_number() && !Flags::of(c).is_whitespace())
}

/// `[\p{P}\$\+<=>\^~\|]` as llama.cpp's collapsed-text regexes see it (ASCII punctuation per its
/// explicit list; other code points by category).
fn is_default_punct(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c, '!'..='#' | '%'..='*' | ','..='/' | ':' | ';' | '?' | '@' | '['..=']' | '_' | '{' | '}')
            || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|');
    }
    let f = Flags::of(c);
    !f.is_whitespace() && f.category_only() == super::unicode::PUNCTUATION
}

fn run(c: &[char], p: usize, end: usize, class: fn(char) -> bool) -> Option<usize> {
    let n = c[p..end].iter().take_while(|&&x| class(x)).count();
    (n > 0).then_some(n)
}

/// A regex-iterator split: within each fragment, every match and every gap between matches
/// becomes a fragment. `at(cpts, pos, end)` is the length of a match starting at `pos`.
fn matches(
    cpts: &[char],
    frags: &[usize],
    at: impl Fn(&[char], usize, usize) -> Option<usize>,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(frags.len());
    let mut start = 0;
    for &len in frags {
        let end = start + len;
        let (mut pos, mut gap) = (start, start);
        while pos < end {
            match at(cpts, pos, end) {
                Some(n) => {
                    if pos > gap {
                        out.push(pos - gap);
                    }
                    out.push(n);
                    pos += n;
                    gap = pos;
                }
                None => pos += 1,
            }
        }
        if end > gap {
            out.push(end - gap);
        }
        start = end;
    }
    out
}

/// Cursor over one fragment: code points outside it read as "nothing".
struct Frag<'a> {
    cpts: &'a [char],
    ini: usize,
    end: usize,
    prev_end: usize,
    out: Vec<usize>,
}

impl Frag<'_> {
    fn cpt(&self, p: usize) -> Option<char> {
        (self.ini <= p && p < self.end).then(|| self.cpts[p])
    }
    fn flags(&self, p: usize) -> Flags {
        self.cpt(p).map_or(Flags::none(), Flags::of)
    }
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

fn for_each_fragment(
    cpts: &[char],
    frags: &[usize],
    mut f: impl FnMut(&mut Frag<'_>),
) -> Vec<usize> {
    let mut out = Vec::with_capacity(frags.len() * 2);
    let mut start = 0;
    for &len in frags {
        let mut fr = Frag {
            cpts,
            ini: start,
            end: start + len,
            prev_end: start,
            out,
        };
        f(&mut fr);
        out = fr.out;
        start += len;
    }
    out
}

/// `'s|'t|'re|'ve|'m|'ll|'d` (case-sensitive, or ASCII-case-insensitive for Llama-3): length.
fn contraction(fr: &Frag<'_>, pos: usize, fold: bool) -> Option<usize> {
    if fr.cpt(pos) != Some('\'') || pos + 1 >= fr.end {
        return None;
    }
    let low = |c: Option<char>| c.map(|c| if fold { c.to_ascii_lowercase() } else { c });
    let n = low(fr.cpt(pos + 1));
    if matches!(n, Some('s' | 't' | 'm' | 'd')) {
        return Some(2);
    }
    if pos + 2 < fr.end {
        let nn = low(fr.cpt(pos + 2));
        if matches!(
            (n, nn),
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
        ) {
            return Some(3);
        }
    }
    None
}

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn gpt2(cpts: &[char], frags: &[usize]) -> Vec<usize> {
    for_each_fragment(cpts, frags, |fr| {
        let mut pos = fr.ini;
        while pos < fr.end {
            let c = fr.cpts[pos];
            if let Some(n) = contraction(fr, pos, false) {
                pos += fr.add(pos + n);
                continue;
            }
            let sp = usize::from(c == ' ');
            let mut f2 = if c == ' ' {
                fr.flags(pos + 1)
            } else {
                Flags::of(c)
            };
            let class: Option<fn(Flags) -> bool> = if f2.is_letter() {
                Some(Flags::is_letter)
            } else if f2.is_number() {
                Some(Flags::is_number)
            } else if f2.is_other() {
                Some(Flags::is_other)
            } else {
                None
            };
            if let Some(class) = class {
                pos += sp;
                while class(f2) {
                    pos += 1;
                    f2 = fr.flags(pos);
                }
                fr.add(pos);
                continue;
            }
            let mut nws = 0;
            while fr.flags(pos + nws).is_whitespace() {
                nws += 1;
            }
            if nws > 1 && fr.cpt(pos + nws).is_some() {
                pos += nws - 1;
                fr.add(pos);
            } else if nws > 0 {
                pos += nws;
                fr.add(pos);
            } else {
                pos += 1;
                fr.add(pos);
            }
        }
    })
}

/// Llama-3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn llama3(cpts: &[char], frags: &[usize]) -> Vec<usize> {
    for_each_fragment(cpts, frags, |fr| {
        let mut pos = fr.ini;
        while pos < fr.end {
            let c = fr.cpts[pos];
            let f = Flags::of(c);
            if let Some(n) = contraction(fr, pos, true) {
                pos += fr.add(pos + n);
                continue;
            }
            if !(c == '\r' || c == '\n' || f.is_number())
                && (f.is_letter() || fr.flags(pos + 1).is_letter())
            {
                pos += 1;
                while fr.flags(pos).is_letter() {
                    pos += 1;
                }
                fr.add(pos);
                continue;
            }
            if f.is_number() {
                let mut ini = pos;
                while fr.flags(pos).is_number() {
                    pos += 1;
                    if pos - ini >= 3 {
                        fr.add(pos);
                        ini = pos;
                    }
                }
                fr.add(pos);
                continue;
            }
            let mut f2 = if c == ' ' { fr.flags(pos + 1) } else { f };
            let not_wln = |g: Flags| !(g.is_whitespace() || g.is_letter() || g.is_number());
            if not_wln(f2) && f.exists() {
                pos += usize::from(c == ' ');
                while not_wln(f2) && f2.exists() {
                    pos += 1;
                    f2 = fr.flags(pos);
                }
                while matches!(fr.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                fr.add(pos);
                continue;
            }
            let (mut nws, mut last_rn) = (0, None);
            while fr.flags(pos + nws).is_whitespace() {
                if matches!(fr.cpt(pos + nws), Some('\r' | '\n')) {
                    last_rn = Some(pos + nws + 1);
                }
                nws += 1;
            }
            if let Some(p) = last_rn {
                pos = p;
            } else if nws > 1 && fr.cpt(pos + nws).is_some() {
                pos += nws - 1;
            } else if nws > 0 {
                pos += nws;
            } else {
                pos += 1;
            }
            fr.add(pos);
        }
    })
}

/// The GPT-2 byte encoding: printable stand-ins for the 256 byte values.
static BYTE_CHARS: [char; 256] = {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0;
    while b < 256 {
        let printable =
            (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t[b] = if printable {
            match char::from_u32(b as u32) {
                Some(c) => c,
                None => '\0',
            }
        } else {
            let c = match char::from_u32(256 + n) {
                Some(c) => c,
                None => '\0',
            };
            n += 1;
            c
        };
        b += 1;
    }
    t
};

/// The byte a stand-in character encodes, if it is one.
pub(super) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x143 => BYTE_CHARS.iter().position(|&x| x == c).map(|b| b as u8),
        _ => None,
    }
}

/// Merge one byte-encoded word into tokens, appending ids to `out`.
pub(super) fn tokenize_word(vocab: &Vocab, word: &[u8], ignore_merges: bool, out: &mut Vec<u32>) {
    if ignore_merges {
        if let Some(id) = vocab.lookup(word) {
            out.push(id);
            return;
        }
    }
    let symbols = merge(word, |symbols, l, r| {
        let (l, r) = (symbols[l], symbols[r]);
        let rank = vocab.merge_rank(
            &word[l.start..l.start + l.len],
            &word[r.start..r.start + r.len],
        )?;
        Some(Reverse(rank)) // the lowest rank merges first
    });
    for s in symbols {
        let text = &word[s.start..s.start + s.len];
        match vocab.lookup(text) {
            Some(id) => out.push(id),
            // llama.cpp looks each raw byte up as a one-byte token and drops those it lacks
            None => out.extend(text.iter().filter_map(|&b| vocab.lookup(&[b]))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: PreTokenizer, text: &str) -> Vec<String> {
        let cpts: Vec<char> = text.chars().collect();
        let frags = match pre {
            PreTokenizer::Gpt2 => gpt2(&cpts, &[cpts.len()]),
            PreTokenizer::Llama3 => llama3(&cpts, &[cpts.len()]),
            _ => unreachable!(),
        };
        let mut start = 0;
        frags
            .iter()
            .map(|&n| {
                start += n;
                cpts[start - n..start].iter().collect()
            })
            .collect()
    }

    #[test]
    fn gpt2_and_llama3_word_boundaries() {
        // expected splits written out from the published regexes
        assert_eq!(
            split(PreTokenizer::Gpt2, "Hello world's  12345 !!x\n\n  y "),
            ["Hello", " world", "'s", " ", " 12345", " !!", "x", "\n\n ", " y", " "]
        );
        assert_eq!(
            split(PreTokenizer::Llama3, "Hello WORLD'S  12345 !!x\n\n  y "),
            ["Hello", " WORLD", "'S", " ", " ", "123", "45", " !!", "x", "\n\n", " ", " y", " "]
        );
    }

    #[test]
    fn byte_encoding_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_CHARS[b as usize];
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(BYTE_CHARS[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_CHARS[b'\n' as usize], 'Ċ');
    }
}
