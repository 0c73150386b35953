//! The pair-merging loop SentencePiece-BPE and byte-level BPE share (llama.cpp runs the same loop
//! for both; only the priority of a pair differs: token score vs. merge rank).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A piece of the text in a doubly linked list; merged-away symbols keep `len == 0`.
#[derive(Clone, Copy)]
pub(super) struct Symbol {
    pub start: usize,
    pub len: usize,
    pub prev: isize,
    pub next: isize,
}

struct Pair<K> {
    key: K,
    left: usize,
    right: usize,
    size: usize,
}

impl<K: Ord> PartialEq for Pair<K> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Pair<K> {}
impl<K: Ord> PartialOrd for Pair<K> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<K: Ord> Ord for Pair<K> {
    /// Max-heap order: the greatest key first; on equal keys the leftmost pair first.
    fn cmp(&self, o: &Self) -> Ordering {
        self.key.cmp(&o.key).then_with(|| o.left.cmp(&self.left))
    }
}

/// Split `text` into one symbol per character (by llama.cpp's lead-byte length), then merge the
/// adjacent pair with the greatest key until none is left; `key(symbols, left, right)` is `None`
/// for a pair that cannot merge. Returns the symbols in order (the merged ones are left out).
pub(super) fn merge<K: Ord>(
    text: &[u8],
    mut key: impl FnMut(&[Symbol], usize, usize) -> Option<K>,
) -> Vec<Symbol> {
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
    let mut push =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Pair<K>>, left: isize, right: isize| {
            if left < 0 || right < 0 {
                return;
            }
            let (l, r) = (left as usize, right as usize);
            if let Some(k) = key(symbols, l, r) {
                queue.push(Pair {
                    key: k,
                    left: l,
                    right: r,
                    size: symbols[l].len + symbols[r].len,
                });
            }
        };
    for i in 1..symbols.len() {
        push(&symbols, &mut queue, i as isize - 1, i as isize);
    }
    while let Some(p) = queue.pop() {
        let (ls, rs) = (symbols[p.left], symbols[p.right]);
        if ls.len == 0 || rs.len == 0 || ls.len + rs.len != p.size {
            continue; // outdated: one side changed since the pair was queued
        }
        symbols[p.left].len += rs.len;
        symbols[p.right].len = 0;
        symbols[p.left].next = rs.next;
        if rs.next >= 0 {
            symbols[rs.next as usize].prev = p.left as isize;
        }
        let (prev, next) = (symbols[p.left].prev, symbols[p.left].next);
        push(&symbols, &mut queue, prev, p.left as isize);
        push(&symbols, &mut queue, p.left as isize, next);
    }
    symbols.retain(|s| s.len > 0);
    symbols
}

/// Length of the UTF-8 sequence a lead byte announces (1 for continuation/invalid bytes), as
/// llama.cpp's `unicode_len_utf8`.
fn utf8_len(b: u8) -> usize {
    match b >> 4 {
        0xF => 4,
        0xE => 3,
        0xC | 0xD => 2,
        _ => 1,
    }
}
