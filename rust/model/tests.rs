//! Properties of the forward pass and KV cache on a tiny random F32 model (exact arithmetic, so
//! the comparisons are tight; K/V in F32 unless a test names another cache type). Agreement with independent oracles (numpy, llama.cpp) is tested in
//! the Python suite.

use std::sync::Arc;

use super::*;
use crate::gguf::tests::{write_tmp, Writer};
use crate::sampling::Rng;

const E: usize = 64;
const FF: usize = 96;
const V: usize = 50;

fn tiny_model(name: &str, tied: bool, n_head_kv: u32) -> PathBuf {
    let mut rng = Rng::new(42);
    let mut r = |n: usize, std: f32| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) as f32) * std * 1.7)
            .collect()
    };
    let hd = 16;
    let kvd = n_head_kv as usize * hd;
    let mut w = Writer::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.context_length", 64)
        .kv_u32("llama.embedding_length", E as u32)
        .kv_u32("llama.block_count", 2)
        .kv_u32("llama.feed_forward_length", FF as u32)
        .kv_u32("llama.attention.head_count", 4)
        .kv_u32("llama.attention.head_count_kv", n_head_kv)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_u32("llama.vocab_size", V as u32);
    w = w.tensor_data("token_embd.weight", &[E as u64, V as u64], &r(E * V, 0.5));
    for i in 0..2 {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        w = w
            .tensor_data(&p("attn_norm"), &[E as u64], &vec![1.0; E])
            .tensor_data(&p("attn_q"), &[E as u64, E as u64], &r(E * E, 0.3))
            .tensor_data(&p("attn_k"), &[E as u64, kvd as u64], &r(E * kvd, 0.3))
            .tensor_data(&p("attn_v"), &[E as u64, kvd as u64], &r(E * kvd, 0.3))
            .tensor_data(&p("attn_output"), &[E as u64, E as u64], &r(E * E, 0.2))
            .tensor_data(&p("ffn_norm"), &[E as u64], &vec![1.0; E])
            .tensor_data(&p("ffn_gate"), &[E as u64, FF as u64], &r(E * FF, 0.2))
            .tensor_data(&p("ffn_up"), &[E as u64, FF as u64], &r(E * FF, 0.2))
            .tensor_data(&p("ffn_down"), &[FF as u64, E as u64], &r(FF * E, 0.2));
    }
    w = w.tensor_data("output_norm.weight", &[E as u64], &vec![1.0; E]);
    if !tied {
        w = w.tensor_data("output.weight", &[E as u64, V as u64], &r(E * V, 0.5));
    }
    write_tmp(name, &w.bytes())
}

fn load(p: &PathBuf, backend: Backend) -> Arc<Llama> {
    load_kv(p, backend, KvType::F32)
}

fn load_kv(p: &PathBuf, backend: Backend, kv_type: KvType) -> Arc<Llama> {
    let opts = LoadOptions {
        backend: Some(backend),
        kv_type,
        ..Default::default()
    };
    Arc::new(Llama::load(std::slice::from_ref(p), &opts).unwrap())
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

const TOKENS: [u32; 9] = [1, 7, 3, 49, 22, 8, 8, 30, 2];

#[test]
fn batched_equals_incremental_and_last_equals_last_row() {
    for kv in [KvType::F32, KvType::F16] {
        batched_equals_incremental(kv);
    }
}

fn batched_equals_incremental(kv: KvType) {
    let m = load_kv(&tiny_model("inc.gguf", false, 2), Backend::Native, kv);
    let mut c = m.new_cache(None).unwrap();
    let all = m.forward(&TOKENS, &mut c, Logits::All).unwrap();
    assert_eq!(all.len(), TOKENS.len() * V);
    let mut c2 = m.new_cache(None).unwrap();
    for (i, &t) in TOKENS.iter().enumerate() {
        let row = m.forward(&[t], &mut c2, Logits::Last).unwrap();
        assert!(
            close(&row, &all[i * V..(i + 1) * V], 1e-5),
            "{kv} position {i}"
        );
    }
    // `Last` runs the last block for the last position only: the same logits, bit for bit (every
    // kernel gives a row the same result whatever the batch), and a cache as complete as `All`'s
    let mut c3 = m.new_cache(None).unwrap();
    let last = m.forward(&TOKENS, &mut c3, Logits::Last).unwrap();
    assert_eq!(last, all[(TOKENS.len() - 1) * V..]);
    let next_after_all = m.forward(&[5, 6], &mut c, Logits::All).unwrap();
    let next_after_last = m.forward(&[5, 6], &mut c3, Logits::All).unwrap();
    assert_eq!(next_after_last, next_after_all);
    // negative control: continuing from a cache one position short differs
    let mut c4 = m.new_cache(None).unwrap();
    m.forward(&TOKENS[..TOKENS.len() - 1], &mut c4, Logits::Last)
        .unwrap();
    let short = m.forward(&[5, 6], &mut c4, Logits::All).unwrap();
    assert!(!close(&short, &next_after_all, 1e-3));
}

#[test]
fn truncate_rewinds_and_reset_forgets() {
    let m = load(&tiny_model("trunc.gguf", false, 2), Backend::Native);
    let mut c = m.new_cache(None).unwrap();
    let all = m.forward(&TOKENS, &mut c, Logits::All).unwrap();
    c.truncate(4).unwrap();
    assert_eq!(c.len(), 4);
    let again = m.forward(&TOKENS[4..], &mut c, Logits::All).unwrap();
    assert!(close(&again, &all[4 * V..], 1e-6));
    // a different continuation after rewinding differs (the cache really was rewound)
    c.truncate(4).unwrap();
    let other = m.forward(&[5, 6], &mut c, Logits::Last).unwrap();
    assert!(!close(&other, &all[5 * V..6 * V], 1e-3));
    c.reset();
    let fresh = m.forward(&TOKENS[..3], &mut c, Logits::All).unwrap();
    assert!(close(&fresh, &all[..3 * V], 1e-6));
    assert!(c.truncate(10).is_err());
}

#[test]
fn native_and_candle_backends_agree() {
    for (name, tied, kv) in [
        ("b1.gguf", false, 2u32),
        ("b2.gguf", true, 1),
        ("b3.gguf", false, 4),
    ] {
        let p = tiny_model(name, tied, kv);
        let a = load(&p, Backend::Native);
        let b = load(&p, Backend::Candle);
        let la = a
            .forward(&TOKENS, &mut a.new_cache(None).unwrap(), Logits::All)
            .unwrap();
        let lb = b
            .forward(&TOKENS, &mut b.new_cache(None).unwrap(), Logits::All)
            .unwrap();
        assert!(close(&la, &lb, 1e-4), "{name}: tied={tied} n_head_kv={kv}");
    }
}

fn load_split(p: &PathBuf, n_gpu_layers: Option<usize>, kv_type: KvType) -> Arc<Llama> {
    let opts = LoadOptions {
        backend: Some(Backend::Candle),
        n_gpu_layers,
        kv_type,
        ..Default::default()
    };
    Arc::new(Llama::load(std::slice::from_ref(p), &opts).unwrap())
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

/// Layer offload: blocks `..split` on the native path, the rest on the candle path (here on the
/// CPU device, the same code a GPU runs), the hidden state crossing once. Every split gives the
/// native logits: to f32 rounding with an F32 cache, to f16 rounding of the attention with F16.
#[test]
fn every_offload_split_agrees_with_the_native_path() {
    for (name, tied) in [("split1.gguf", false), ("split2.gguf", true)] {
        let p = tiny_model(name, tied, 2);
        for (kv, tol) in [(KvType::F32, 1e-4), (KvType::F16, 2e-2)] {
            let native = load_kv(&p, Backend::Native, kv);
            let mut nc = native.new_cache(None).unwrap();
            let want_prompt = native.forward(&TOKENS, &mut nc, Logits::All).unwrap();
            let want_step = native.forward(&[4], &mut nc, Logits::Last).unwrap();
            for ngl in [Some(0), Some(1), Some(2), None, Some(99)] {
                let m = load_split(&p, ngl, kv);
                let want_split = 2 - ngl.unwrap_or(2).min(2);
                assert_eq!(m.split, want_split, "{name} {ngl:?}");
                let expect_backend = if want_split == 2 {
                    Backend::Native
                } else {
                    Backend::Candle
                };
                assert_eq!(m.backend, expect_backend);
                let mut c = m.new_cache(None).unwrap();
                let got = m.forward(&TOKENS, &mut c, Logits::All).unwrap();
                assert!(close(&got, &want_prompt, tol), "{name} {kv} {ngl:?}");
                let step = m.forward(&[4], &mut c, Logits::Last).unwrap();
                assert!(close(&step, &want_step, tol), "{name} {kv} {ngl:?} step");
                assert_eq!(argmax(&step), argmax(&want_step));
                assert_eq!(c.len(), TOKENS.len() + 1);
                // a saved state is the same bytes on every path: saved here, restored into the
                // native path (and back), the continuation is unchanged
                let mut st = Vec::new();
                c.write_state(&mut st).unwrap();
                assert_eq!(st.len(), c.state_bytes());
                let mut nc2 = native.new_cache(None).unwrap();
                nc2.read_state(c.len(), &st).unwrap();
                let mut back = m.new_cache(None).unwrap();
                let mut st2 = Vec::new();
                nc2.write_state(&mut st2).unwrap();
                back.read_state(nc2.len(), &st2).unwrap();
                let a = native.forward(&[9], &mut nc2, Logits::Last).unwrap();
                let b = m.forward(&[9], &mut back, Logits::Last).unwrap();
                let want_next = m.forward(&[9], &mut c, Logits::Last).unwrap();
                assert!(b == want_next, "{name} {kv} {ngl:?}: restored state");
                assert!(close(&a, &want_next, tol));
                assert!(matches!(
                    back.read_state(2, &st2[1..]),
                    Err(Error::State(_))
                ));
            }
        }
    }
}

/// The prompt's attention taken in chunks of query rows (a small score budget) gives the logits
/// of one chunk; a cancelled offloaded pass leaves the cache as it was.
#[test]
fn chunked_attention_and_cancel_on_the_candle_path() {
    let p = tiny_model("chunk.gguf", false, 2);
    for kv in [KvType::F32, KvType::F16] {
        let m = load_split(&p, Some(1), kv);
        let run = |limit: Option<usize>| {
            candle::SCORE_LIMIT.with(|c| c.set(limit));
            let mut c = m.new_cache(None).unwrap();
            m.forward(&TOKENS[..3], &mut c, Logits::Last).unwrap();
            let out = m.forward(&TOKENS, &mut c, Logits::All).unwrap();
            candle::SCORE_LIMIT.with(|c| c.set(None));
            out
        };
        let one = run(None);
        // 4 heads x 12 keys x 4 bytes x 2 rows: chunks of two query rows
        let chunked = run(Some(4 * 4 * 12 * 2));
        assert!(close(&chunked, &one, 1e-5), "{kv}");

        let mut c = m.new_cache(None).unwrap();
        m.forward(&TOKENS[..3], &mut c, Logits::Last).unwrap();
        let mut polls = 0;
        let r = m.forward_cancellable(&TOKENS[3..], &mut c, Logits::Last, &mut || {
            polls += 1;
            polls > 1 // the CPU block runs, the device block is cancelled
        });
        assert!(matches!(r, Err(Error::Cancelled)));
        assert_eq!(c.len(), 3);
        let after = m.forward(&TOKENS[3..], &mut c, Logits::All).unwrap();
        let mut fresh = m.new_cache(None).unwrap();
        let want = m.forward(&TOKENS, &mut fresh, Logits::All).unwrap();
        let nv = m.config.n_vocab;
        assert!(close(&after, &want[3 * nv..], 1e-5), "{kv} after cancel");
    }
}

#[test]
fn n_gpu_layers_needs_an_offload_target_and_the_estimate_splits_the_weights() {
    let p = tiny_model("ngl.gguf", false, 2);
    let opts = LoadOptions {
        n_gpu_layers: Some(1),
        ..Default::default()
    };
    match Llama::load(std::slice::from_ref(&p), &opts) {
        Err(Error::InvalidArgument { param, detail }) => {
            assert_eq!(param, "n_gpu_layers");
            assert!(detail.contains("GPU"), "{detail}");
        }
        other => panic!("expected InvalidArgument, got {:?}", other.err()),
    }
    // zero blocks offloaded is the CPU path itself
    let opts = LoadOptions {
        n_gpu_layers: Some(0),
        ..Default::default()
    };
    assert_eq!(
        Llama::load(std::slice::from_ref(&p), &opts).unwrap().split,
        2
    );

    // host + device weights = the file's tensors, for every split (no tensor counted twice,
    // none left out); the device part of a tied model carries its own output copy
    for (name, tied) in [("est1.gguf", false), ("est2.gguf", true)] {
        let p = tiny_model(name, tied, 2);
        let f = crate::gguf::GgufFile::open(std::slice::from_ref(&p)).unwrap();
        let cfg = LlamaConfig::from_gguf(&f).unwrap();
        let total: u64 = f.tensors.iter().map(|t| t.n_bytes).sum();
        let embd = f.tensor_info("token_embd.weight").unwrap().n_bytes;
        for split in 0..=2 {
            let h = crate::memory::Estimate::host(&f, &cfg, 64, KvType::F16, split);
            let d = crate::memory::Estimate::device(&f, &cfg, 64, KvType::F16, split);
            let copy = if tied && split < 2 { embd } else { 0 };
            if split < 2 {
                assert_eq!(h.weights + d.weights, total + copy, "{name} split {split}");
            } else {
                assert_eq!(h.weights, total);
            }
            let per_layer = KvType::F16.bytes_per_position(2, 16) as u64 * 64;
            assert_eq!(h.kv_cache, split as u64 * per_layer);
            assert_eq!(d.kv_cache, (2 - split) as u64 * per_layer);
        }
    }
}

#[test]
fn tied_output_uses_the_embedding_matrix() {
    let m = load(&tiny_model("tied.gguf", true, 2), Backend::Native);
    assert!(Arc::ptr_eq(&m.output, &m.tok_embd));
    assert!(m.all_weights_mapped());
}

#[test]
fn context_overflow_and_bad_tokens_are_errors_that_leave_the_cache_usable() {
    let m = load(&tiny_model("ovf.gguf", false, 2), Backend::Native);
    let mut c = m.new_cache(Some(8)).unwrap();
    let e = m.forward(&TOKENS, &mut c, Logits::Last).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ContextOverflow {
                needed: 9,
                n_ctx: 8
            }
        ),
        "{e}"
    );
    let e = m.forward(&[1, 999], &mut c, Logits::Last).unwrap_err();
    assert!(e.to_string().contains("token id 999"), "{e}");
    assert_eq!(c.len(), 0);
    assert!(m.forward(&TOKENS[..8], &mut c, Logits::Last).is_ok());
    assert!(m.new_cache(Some(65)).is_err());
}

#[test]
fn device_errors_name_the_missing_feature() {
    if !cfg!(feature = "cuda") {
        let e = device_from_name("cuda").unwrap_err().to_string();
        assert!(e.contains("feature `cuda`"), "{e}");
    }
    if !cfg!(feature = "metal") {
        let e = device_from_name("metal:0").unwrap_err().to_string();
        assert!(e.contains("feature `metal`"), "{e}");
    }
    assert!(device_from_name("tpu")
        .unwrap_err()
        .to_string()
        .contains("unknown device"));
}

/// Several sequences in one pass (different cached lengths, new-token counts and logits kinds)
/// give each the logits it gets alone, bit for bit; a cancelled batch changes no cache.
#[test]
fn forward_batch_equals_each_sequence_alone() {
    let p = tiny_model("batch.gguf", false, 2);
    for (backend, kv) in [
        (Backend::Native, KvType::F32),
        (Backend::Native, KvType::F16),
        (Backend::Candle, KvType::F32),
        (Backend::Candle, KvType::F16),
    ] {
        let m = load_kv(&p, backend, kv);
        batch_cases(&m);
        if backend == Backend::Candle {
            // layer offload: one block on each path
            batch_cases(&load_split(&p, Some(1), kv));
        }
    }
}

fn batch_cases(m: &Llama) {
    {
        // (cached prefix, new tokens, logits)
        let cases: [(&[u32], &[u32], Logits); 4] = [
            (&TOKENS[..4], &[5], Logits::Last),
            (&[], &TOKENS, Logits::Last),
            (&TOKENS[..2], &TOKENS[2..7], Logits::All),
            (&TOKENS, &[9, 10, 11], Logits::Last),
        ];
        let alone: Vec<Vec<f32>> = cases
            .iter()
            .map(|(pre, new, which)| {
                let mut c = m.new_cache(None).unwrap();
                if !pre.is_empty() {
                    m.forward(pre, &mut c, Logits::Last).unwrap();
                }
                m.forward(new, &mut c, *which).unwrap()
            })
            .collect();
        let mut caches: Vec<KvCache> = cases
            .iter()
            .map(|(pre, _, _)| {
                let mut c = m.new_cache(None).unwrap();
                if !pre.is_empty() {
                    m.forward(pre, &mut c, Logits::Last).unwrap();
                }
                c
            })
            .collect();
        let mut scratch = BatchScratch::default();
        // cancelled before the first block: nothing changes
        {
            let mut items: Vec<BatchItem> = caches
                .iter_mut()
                .zip(&cases)
                .map(|(c, (_, new, which))| BatchItem {
                    tokens: new,
                    cache: c,
                    which: *which,
                })
                .collect();
            let e = m
                .forward_batch(&mut items, &mut scratch, &mut || true)
                .unwrap_err();
            assert!(matches!(e, Error::Cancelled));
        }
        for (c, (pre, _, _)) in caches.iter().zip(&cases) {
            assert_eq!(c.len(), pre.len());
        }
        let mut items: Vec<BatchItem> = caches
            .iter_mut()
            .zip(&cases)
            .map(|(c, (_, new, which))| BatchItem {
                tokens: new,
                cache: c,
                which: *which,
            })
            .collect();
        let got = m
            .forward_batch(&mut items, &mut scratch, &mut || false)
            .unwrap();
        assert_eq!(got.len(), cases.len());
        for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
            assert!(
                g == a,
                "{:?} {} split {}: sequence {i} differs from its lone pass",
                m.backend,
                m.kv_type,
                m.split
            );
        }
        // negative control: a different cached prefix gives different logits
        assert!(got[0] != alone[1]);
        for (c, (pre, new, _)) in caches.iter().zip(&cases) {
            assert_eq!(c.len(), pre.len() + new.len());
        }
        // one more step for every sequence, reusing the scratch
        let mut items: Vec<BatchItem> = caches
            .iter_mut()
            .map(|c| BatchItem {
                tokens: &[3],
                cache: c,
                which: Logits::Last,
            })
            .collect();
        let step = m
            .forward_batch(&mut items, &mut scratch, &mut || false)
            .unwrap();
        for (i, (pre, new, _)) in cases.iter().enumerate() {
            let mut c = m.new_cache(None).unwrap();
            if !pre.is_empty() {
                m.forward(pre, &mut c, Logits::Last).unwrap();
            }
            m.forward(new, &mut c, Logits::Last).unwrap();
            assert!(m.forward(&[3], &mut c, Logits::Last).unwrap() == step[i]);
        }
    }
}

/// The cache type is what `Llama` was loaded with; Q8_0 needs heads of whole 32-value blocks and
/// the native backend (typed errors before anything is allocated). With an F16 cache the
/// backends agree to f16 rounding only: a K/V element whose f32 values differ in the last bit
/// between the backends can round to neighbouring f16 values, 2^-11 apart (with 4 KV heads that
/// moves logits by 7e-4 where F32 caches agree to 1e-5).
#[test]
fn kv_types_load_and_refuse_with_typed_errors() {
    let p = tiny_model("kvt.gguf", false, 2);
    let opts = |backend, kv_type| LoadOptions {
        backend: Some(backend),
        kv_type,
        ..Default::default()
    };
    let e = Llama::load(
        std::slice::from_ref(&p),
        &opts(Backend::Native, KvType::Q8_0),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&e, Error::InvalidArgument { param, .. } if param == "kv_type"),
        "{e}"
    );
    assert!(e.to_string().contains("16"), "{e}");
    let e = Llama::load(
        std::slice::from_ref(&p),
        &opts(Backend::Candle, KvType::Q8_0),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("kv_type"), "{e}");
    assert_eq!(LoadOptions::default().kv_type, KvType::F16);

    let a = load_kv(&p, Backend::Native, KvType::F16);
    let b = load_kv(&p, Backend::Candle, KvType::F16);
    let f32 = load(&p, Backend::Native);
    assert_eq!((a.kv_type, f32.kv_type), (KvType::F16, KvType::F32));
    let run = |m: &Llama| {
        m.forward(&TOKENS, &mut m.new_cache(None).unwrap(), Logits::All)
            .unwrap()
    };
    let (la, lb, l32) = (run(&a), run(&b), run(&f32));
    // the candle path rounds the attention probabilities to f16 to multiply them with the F16
    // values in place, as GPU attention does; the native path keeps them in f32. On this tiny
    // model with large random activations that costs up to 6.2e-3 (relative).
    assert!(close(&la, &lb, 1e-2));
    // negative control: the F16 cache is really rounded (the F32 cache's logits differ)
    assert!(la != l32);
}

/// A device's out-of-memory error becomes the typed error a caller can act on; other device
/// errors stay internal ones.
#[test]
fn device_out_of_memory_is_told_apart() {
    let oom =
        candle_core::Error::Msg("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into());
    match candle::device_error(Error::Candle(oom), "cuda:0") {
        Error::DeviceOutOfMemory { device, detail } => {
            assert_eq!(device, "cuda:0");
            assert!(detail.contains("OUT_OF_MEMORY"), "{detail}");
        }
        other => panic!("expected DeviceOutOfMemory, got {other:?}"),
    }
    let other = candle_core::Error::Msg("shape mismatch in matmul".into());
    assert!(matches!(
        candle::device_error(Error::Candle(other), "cuda:0"),
        Error::Candle(_)
    ));
    assert!(matches!(
        candle::device_error(Error::Cancelled, "cuda:0"),
        Error::Cancelled
    ));
}
