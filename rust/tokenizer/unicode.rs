//! Code point classes for the BPE pre-tokenizers, from the generated Unicode table.

use super::unicode_data::{CATEGORY_RUNS, WHITESPACE};

#[cfg(test)]
pub(super) const UNDEFINED: u8 = 0x01;
pub(super) const NUMBER: u8 = 0x02;
pub(super) const LETTER: u8 = 0x04;
pub(super) const PUNCTUATION: u8 = 0x20;

/// The class of one code point. `none()` stands for "outside the current fragment".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Flags {
    category: u8,
    whitespace: bool,
}

impl Flags {
    /// The class of `c`.
    pub(super) fn of(c: char) -> Self {
        let cp = c as u32;
        if cp < 0x80 {
            return ASCII[cp as usize];
        }
        Self::lookup(cp)
    }

    fn lookup(cp: u32) -> Self {
        let i = CATEGORY_RUNS.partition_point(|&(start, _)| start <= cp) - 1;
        Flags {
            category: CATEGORY_RUNS[i].1,
            whitespace: WHITESPACE.binary_search(&cp).is_ok(),
        }
    }

    /// No code point (past either end of a fragment): every class test is false.
    pub(super) const fn none() -> Self {
        Flags {
            category: 0,
            whitespace: false,
        }
    }

    /// The general-category bits alone (llama.cpp's `category_flag()`).
    pub(super) fn category_only(self) -> u8 {
        self.category
    }
    pub(super) fn is_letter(self) -> bool {
        self.category & LETTER != 0
    }
    pub(super) fn is_number(self) -> bool {
        self.category & NUMBER != 0
    }
    pub(super) fn is_whitespace(self) -> bool {
        self.whitespace
    }
    /// Any code point at all (assigned or not); false only for `none()`.
    pub(super) fn exists(self) -> bool {
        self.category != 0 || self.whitespace
    }
    /// `[^\s\p{L}\p{N}]`: an existing code point that is neither whitespace, letter nor number.
    pub(super) fn is_other(self) -> bool {
        self.exists() && !(self.whitespace || self.is_letter() || self.is_number())
    }
}

static ASCII: [Flags; 128] = {
    let mut t = [Flags::none(); 128];
    let mut i = 0;
    while i < 128 {
        // binary search is not const; the first runs cover ASCII, so scan them
        let mut r = 0;
        while r + 1 < CATEGORY_RUNS.len() && CATEGORY_RUNS[r + 1].0 <= i as u32 {
            r += 1;
        }
        let ws = matches!(i, 0x09..=0x0D | 0x20);
        t[i] = Flags {
            category: CATEGORY_RUNS[r].1,
            whitespace: ws,
        };
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_known_code_points() {
        assert!(
            Flags::of('a').is_letter() && Flags::of('Ж').is_letter() && Flags::of('中').is_letter()
        );
        assert!(
            Flags::of('7').is_number() && Flags::of('٣').is_number() && Flags::of('½').is_number()
        );
        assert!(Flags::of(' ').is_whitespace() && Flags::of('\u{3000}').is_whitespace());
        assert!(Flags::of('\u{A0}').is_whitespace() && !Flags::of('\u{200B}').is_whitespace());
        assert!(
            Flags::of('!').category_only() == PUNCTUATION
                && Flags::of('«').category_only() == PUNCTUATION
        );
        assert!(
            Flags::of('$').is_other()
                && Flags::of('😀').is_other()
                && Flags::of('\u{301}').is_other()
        );
        // unassigned code points exist but belong to no class
        let unassigned = Flags::of('\u{0378}');
        assert_eq!(unassigned.category, UNDEFINED);
        assert!(unassigned.is_other());
        assert!(!Flags::none().exists() && !Flags::none().is_other());
        for c in (0u8..128).map(char::from) {
            assert_eq!(
                Flags::of(c),
                Flags::lookup(c as u32),
                "ascii table differs at {c:?}"
            );
        }
    }
}
