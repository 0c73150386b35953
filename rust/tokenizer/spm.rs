//! SentencePiece-BPE (`tokenizer.ggml.model = "llama"`, Llama-2 / Med42) as llama.cpp runs it.
//!
//! The text (spaces already escaped to `▁`) is split into UTF-8 characters; adjacent pairs whose
//! concatenation is a token are queued by that token's score (highest first; equal scores: the
//! leftmost pair first). Merging repeats until no pair forms a token. Each resulting piece that is
//! not itself a token is re-segmented into the two pieces it was merged from (recursively); pieces
//! that never merged and are not tokens fall back to byte tokens `<0xXX>`.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::merge::merge;
use super::Vocab;

/// A token score as a merge priority (NaN scores compare equal).
#[derive(PartialEq)]
struct Score(f32);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Score {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.partial_cmp(&o.0).unwrap_or(Ordering::Equal)
    }
}

/// Tokenize one fragment of escaped text, appending ids to `out`.
pub(super) fn tokenize(vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
    // (start, len) of every merged piece -> where its right part started
    let mut rev_merge: HashMap<(usize, usize), usize> = HashMap::new();
    let symbols = merge(text, |symbols, l, r| {
        let (start, size) = (symbols[l].start, symbols[l].len + symbols[r].len);
        let id = vocab.lookup(&text[start..start + size])?;
        rev_merge.insert((start, size), symbols[r].start);
        Some(Score(vocab.scores[id as usize]))
    });
    for s in &symbols {
        resegment(vocab, text, &rev_merge, s.start, s.len, out);
    }
}

/// Emit a piece as its token, else as the two pieces it was merged from, else as byte tokens.
fn resegment(
    vocab: &Vocab,
    text: &[u8],
    rev_merge: &HashMap<(usize, usize), usize>,
    start: usize,
    len: usize,
    out: &mut Vec<u32>,
) {
    let piece = &text[start..start + len];
    if let Some(id) = vocab.lookup(piece) {
        out.push(id);
        return;
    }
    match rev_merge.get(&(start, len)) {
        Some(&mid) => {
            resegment(vocab, text, rev_merge, start, mid - start, out);
            resegment(vocab, text, rev_merge, mid, start + len - mid, out);
        }
        None => out.extend(piece.iter().filter_map(|&b| vocab.byte_token(b))),
    }
}
