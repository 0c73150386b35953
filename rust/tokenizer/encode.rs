//! Text to token ids: special tokens are split out first, then each text run is tokenized by the
//! vocabulary's algorithm.

use super::{attr, bpe, spm, Tokenizer, TokenizerKind};

impl Tokenizer {
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
}

#[derive(Debug, Clone, Copy)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}
