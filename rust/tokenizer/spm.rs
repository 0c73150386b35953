//! SentencePiece-BPE (`tokenizer.ggml.model = "llama"`, Llama-2 / Med42) as llama.cpp runs it.
//!
//! The text (spaces already escaped to `▁`) is split into UTF-8 characters; adjacent pairs whose
//! concatenation is a token are queued by that token's score (highest first; equal scores: the
//! leftmost pair first). Merging repeats until no pair forms a token. Each resulting piece that is
//! not itself a token is re-segmented into the two pieces it was merged from (recursively); pieces
//! that never merged and are not tokens fall back to byte tokens `<0xXX>`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::{utf8_len, Vocab};

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: isize,
    next: isize,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first; on equal scores the smaller left index first.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .partial_cmp(&o.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// Tokenize one fragment of escaped text, appending ids to `out`.
pub(super) fn tokenize(vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let mut offs = 0;
    while offs < text.len() {
        let n = utf8_len(text[offs]).min(text.len() - offs);
        let i = symbols.len() as isize;
        symbols.push(Symbol {
            start: offs,
            len: n,
            prev: i - 1,
            next: if offs + n == text.len() { -1 } else { i + 1 },
        });
        offs += n;
    }
    let mut queue = BinaryHeap::new();
    let mut rev_merge: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
    let try_add = |symbols: &[Symbol],
                   queue: &mut BinaryHeap<Bigram>,
                   rev: &mut HashMap<(usize, usize), (usize, usize)>,
                   left: isize,
                   right: isize| {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (left as usize, right as usize);
        let start = symbols[l].start;
        let size = symbols[l].len + symbols[r].len;
        let piece = &text[start..start + size];
        if let Some(id) = vocab.lookup(piece) {
            queue.push(Bigram {
                left: l,
                right: r,
                score: vocab.scores[id as usize],
                size,
            });
            rev.insert((start, size), (l, r));
        }
    };
    for i in 1..symbols.len() {
        try_add(
            &symbols,
            &mut queue,
            &mut rev_merge,
            i as isize - 1,
            i as isize,
        );
    }
    while let Some(b) = queue.pop() {
        let (ls, rs) = (symbols[b.left], symbols[b.right]);
        if ls.len == 0 || rs.len == 0 || ls.len + rs.len != b.size {
            continue; // stale: one side was merged since this pair was queued
        }
        symbols[b.left].len += rs.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = rs.next;
        if rs.next >= 0 {
            symbols[rs.next as usize].prev = b.left as isize;
        }
        let prev = symbols[b.left].prev;
        let next = symbols[b.left].next;
        try_add(&symbols, &mut queue, &mut rev_merge, prev, b.left as isize);
        try_add(&symbols, &mut queue, &mut rev_merge, b.left as isize, next);
    }
    let mut i: isize = 0;
    while i >= 0 {
        let s = symbols[i as usize];
        resegment(vocab, text, &symbols, &rev_merge, s.start, s.len, out);
        i = s.next;
    }
}

fn resegment(
    vocab: &Vocab,
    text: &[u8],
    symbols: &[Symbol],
    rev_merge: &HashMap<(usize, usize), (usize, usize)>,
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
        Some(&(l, r)) => {
            // the pieces as they were when this pair was merged
            let ll = symbols[r].start - symbols[l].start;
            resegment(vocab, text, symbols, rev_merge, symbols[l].start, ll, out);
            resegment(
                vocab,
                text,
                symbols,
                rev_merge,
                symbols[r].start,
                len - ll,
                out,
            );
        }
        None => {
            out.extend(piece.iter().filter_map(|&b| vocab.byte_token(b)));
        }
    }
}
