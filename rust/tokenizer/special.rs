//! Special tokens: the end-of-turn and end-of-generation tokens a vocabulary has (recognised by
//! their text, as llama.cpp recognises them) and the list of tokens matched in text before
//! tokenization.

use std::collections::HashMap;

use super::attr;

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

/// The end tokens found in a vocabulary.
pub(super) struct EndTokens {
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    /// every id that ends a generation, sorted
    pub eog: Vec<u32>,
}

/// Find the end-of-turn (`eot`, `eom`, when the metadata names none) and end-of-generation
/// tokens by their text, as llama.cpp does, and force them to control type in `attrs`.
pub(super) fn end_tokens(
    ids: &HashMap<Vec<u8>, u32>,
    attrs: &mut [u32],
    eos: Option<u32>,
    mut eot: Option<u32>,
    mut eom: Option<u32>,
) -> EndTokens {
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
    let has = |t: &str, eog: &[u32]| ids.get(t.as_bytes()).filter(|id| eog.contains(id)).copied();
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
    EndTokens { eot, eom, eog }
}

/// Control, user-defined and unknown tokens, longest text first: the order in which they are
/// matched in text.
pub(super) fn longest_first(texts: &[String], attrs: &[u32]) -> Vec<u32> {
    let mut specials: Vec<u32> = (0..texts.len() as u32)
        .filter(|&i| attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
        .collect();
    specials.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));
    specials
}
