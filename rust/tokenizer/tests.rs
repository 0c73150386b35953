use super::decode::clean_up_spaces;
use super::*;
use crate::gguf::{Array, Metadata, Value};

fn md(entries: Vec<(&str, Value)>) -> Metadata {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// A SentencePiece vocabulary: unk, bos, eos, 256 byte tokens, then a few pieces.
fn spm() -> Tokenizer {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("c", -2.0),
        ("ab", -1.5),
        ("bc", -1.5),
        ("▁a", -3.0),
    ] {
        tokens.push(t.into());
        types.push(1);
        scores.push(s);
    }
    Tokenizer::from_metadata(&md(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
    ]))
    .unwrap()
}

const SP: u32 = 259;
const A: u32 = 260;
const C: u32 = 262;
const AB: u32 = 263;
const BC: u32 = 264;
const SP_A: u32 = 265;
fn byte(b: u8) -> u32 {
    3 + b as u32
}

#[test]
fn spm_equal_scores_merge_the_leftmost_pair_first() {
    let t = spm();
    // "▁abc": ab and bc tie at -1.5; the left one wins, after which nothing else merges
    assert_eq!(t.encode("abc", false, false), vec![SP, AB, C]);
    assert_ne!(
        t.encode("abc", false, false),
        vec![SP_A, BC],
        "right-first tie-break"
    );
    assert_eq!(t.encode("abc", true, false), vec![1, SP, AB, C]);
    assert_eq!(t.encode("", true, false), vec![1]);
    assert!(t.encode("", false, false).is_empty());
}

#[test]
fn spm_unknown_characters_fall_back_to_byte_tokens() {
    let t = spm();
    assert_eq!(
        t.encode("é", false, false),
        vec![SP, byte(0xC3), byte(0xA9)]
    );
    assert_eq!(t.encode("a\n", false, false), vec![SP_A, byte(b'\n')]);
}

#[test]
fn control_tokens_in_text_are_text_unless_asked() {
    let t = spm();
    let plain = t.encode("a</s>", false, false);
    assert!(
        !plain.contains(&2),
        "user text must not produce EOS: {plain:?}"
    );
    assert_eq!(&plain[..1], &[SP_A]);
    assert_eq!(plain.len(), 1 + 4, "< / s > as byte tokens");
    // parsed: a special token resets the space prefix for the text after it
    assert_eq!(t.encode("a</s>a", false, true), vec![SP_A, 2, SP_A]);
    assert_eq!(
        t.decode(&t.encode("a</s>a", false, false), false).unwrap(),
        "a</s>a"
    );
}

#[test]
fn decode_follows_llama_detokenize_leading_space_rule() {
    let t = spm();
    assert_eq!(t.decode(&[SP_A, BC], false).unwrap(), "abc");
    // after BOS the leading space stays (llama_detokenize only strips it from the first token)
    assert_eq!(t.decode(&[1, SP_A, BC], false).unwrap(), " abc");
    assert_eq!(t.decode(&[1, SP_A, 2], true).unwrap(), "<s> a</s>");
    assert_eq!(t.detokenize(&[1, SP_A, 2], true, false).unwrap(), b" a");
    assert!(matches!(
        t.decode(&[9999], false),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(t.token_to_piece(byte(0xC3), false, 0).unwrap(), &[0xC3]);
    assert_eq!(t.token_to_piece(2, false, 0).unwrap(), b"");
    assert_eq!(t.token_to_piece(2, true, 0).unwrap(), b"</s>");
}

#[test]
fn stream_chunks_are_whole_characters_and_join_to_decode() {
    let t = spm();
    // a pseudo-random walk over pieces and raw bytes, including sequences that are invalid UTF-8
    let pool: Vec<u32> = [SP, A, AB, BC, SP_A, 1, 2]
        .into_iter()
        .chain(
            [
                0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0x80,
            ]
            .map(byte),
        )
        .collect();
    let mut x = 0x9E37_79B9u32;
    for _ in 0..300 {
        let n = (x % 12) as usize;
        let ids: Vec<u32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                pool[(x as usize) % pool.len()]
            })
            .collect();
        for special in [false, true] {
            let mut s = t.stream(special);
            let mut joined = String::new();
            for &id in &ids {
                joined.push_str(&s.push(&t, id).unwrap());
            }
            joined.push_str(&s.finish(&t));
            assert_eq!(joined, t.decode(&ids, special).unwrap(), "ids {ids:?}");
        }
    }
}

/// A byte-level BPE vocabulary with three merges.
fn bpe(pre: &str, extra: &[(&str, i32)]) -> Tokenizer {
    let mut tokens: Vec<String> = ["a", "b", "c", "Ġ", "ab", "Ġa", "bc", "?", "'", "s"]
        .map(String::from)
        .to_vec();
    let mut types = vec![1; tokens.len()];
    for &(t, ty) in extra {
        tokens.push(t.into());
        types.push(ty);
    }
    let merges = ["a b", "Ġ a", "b c"].map(String::from).to_vec();
    Tokenizer::from_metadata(&md(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.merges", Value::Array(Array::String(merges))),
    ]))
    .unwrap()
}

#[test]
fn bpe_merges_lowest_rank_first() {
    let t = bpe("gpt-2", &[]);
    // "Ġabc": a+b (rank 0) beats Ġ+a (rank 1); afterwards no pair has a rank
    assert_eq!(t.encode(" abc", false, false), vec![3, 4, 2]);
    // a merge whose left side is a multi-byte stand-in character ("Ġ a")
    assert_eq!(t.encode(" a", false, false), vec![5]);
    assert_eq!(t.decode(&[3, 4, 2], false).unwrap(), " abc");
    // a character without any token is dropped, as llama.cpp drops it
    assert_eq!(t.encode("ax", false, false), vec![0]);
}

#[test]
fn bpe_special_tokens_and_end_of_generation() {
    let t = bpe("smollm", &[("<|im_end|>", 3), ("<|user|>", 4)]);
    let (im_end, user) = (10, 11);
    assert_eq!(t.eot(), Some(im_end));
    assert!(t.is_eog(im_end));
    assert!(!t.encode("a<|im_end|>", false, false).contains(&im_end));
    assert_eq!(t.encode("a<|im_end|>", false, true), vec![0, im_end]);
    // user-defined tokens are always matched, and always rendered
    assert_eq!(t.encode("<|user|>a", false, false), vec![user, 0]);
    assert_eq!(t.decode(&[user, 0, im_end], false).unwrap(), "<|user|>a");
    assert_eq!(
        t.decode(&[user, 0, im_end], true).unwrap(),
        "<|user|>a<|im_end|>"
    );
}

#[test]
fn clean_up_matches_llama_cpp_rules() {
    let c = |s: &str| String::from_utf8(clean_up_spaces(s.as_bytes())).unwrap();
    assert_eq!(c("a ? b !"), "a? b!");
    assert_eq!(c("it 's , he 're"), "it's, he're");
    assert_eq!(c("do 't"), "do 't");
    assert_eq!(c("x ' y"), "x'y");
    assert_eq!(c(""), "");
    // streamed text of a clean-up vocabulary joins to the same result
    let t = bpe("gpt-2", &[]);
    let ids = t.encode("a ? a 's a ' b . a", false, false);
    let mut s = t.stream(false);
    let mut joined = String::new();
    for &id in &ids {
        joined.push_str(&s.push(&t, id).unwrap());
    }
    joined.push_str(&s.finish(&t));
    assert_eq!(joined, t.decode(&ids, false).unwrap());
    assert!(joined.contains("a?"), "{joined}");
}

#[test]
fn unsupported_tokenizers_are_named() {
    let e = Tokenizer::from_metadata(&md(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("qwen9".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec!["a".into()])),
        ),
        ("tokenizer.ggml.merges", Value::Array(Array::String(vec![]))),
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("qwen9") && e.contains("llama-bpe"), "{e}");
    let e = Tokenizer::from_metadata(&md(vec![]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.ggml.model"), "{e}");
}

#[test]
fn parts_protect_user_text_and_otherwise_equal_whole_encoding() {
    let t = bpe("smollm", &[("<|im_end|>", 3)]);
    let whole = t.encode("ab<|im_end|>abc", false, true);
    let parts = t.encode_parts(
        &[
            ("a", true),
            ("b", false),
            ("<|im_end|>a", true),
            ("bc", false),
        ],
        false,
    );
    assert_eq!(parts, whole);
    let injected = t.encode_parts(&[("a", true), ("<|im_end|>", false)], false);
    assert!(!injected.contains(&10), "{injected:?}");
}
