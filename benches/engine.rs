//! Criterion benches for tuning the engine: the quantized matmul per weight type (one activation
//! row = decode, 64 rows = prefill), attention over the KV cache per cache type at depth (Med42's
//! 64/8 heads of 128), and prefill / single-token decode through the whole model.
//!
//! Model: `MED42_BENCH_GGUF=/path/file.gguf` benches that file (e.g. the 70B-shaped slice that
//! `benches/compare.py` writes). Without it, a random Llama with TinyLlama-like dimensions (hidden
//! 2048, ff 5632, 32/4 heads, vocab 32000, 2 blocks) is quantized to `MED42_BENCH_QUANT` (default
//! Q4_K) with candle and cached under the target directory.
//!
//! `cargo bench --bench engine` (add `-- matmul`, `-- attention` or `-- model` to pick a group). Speed targets are
//! judged side by side with llama.cpp in `benches/compare.py`, not here.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use med42_rs::gguf::GgmlType;
use med42_rs::kernels::{self, ActKind, KvLayer, KvType, QActs, WeightView};
use med42_rs::{KvCache, Llama, LoadOptions, Logits};

/// Deterministic uniform(-a, a) values (splitmix64).
fn random(n: usize, a: f32, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

fn quantize(n_out: usize, k: usize, dtype: GgmlDType, seed: u64) -> QTensor {
    let w = Tensor::from_vec(random(n_out * k, 0.05, seed), (n_out, k), &Device::Cpu).unwrap();
    QTensor::quantize(&w, dtype).unwrap()
}

const TYPES: [(GgmlType, GgmlDType); 10] = [
    (GgmlType::Q4_0, GgmlDType::Q4_0),
    (GgmlType::Q4_1, GgmlDType::Q4_1),
    (GgmlType::Q5_0, GgmlDType::Q5_0),
    (GgmlType::Q5_1, GgmlDType::Q5_1),
    (GgmlType::Q8_0, GgmlDType::Q8_0),
    (GgmlType::Q2_K, GgmlDType::Q2K),
    (GgmlType::Q3_K, GgmlDType::Q3K),
    (GgmlType::Q4_K, GgmlDType::Q4K),
    (GgmlType::Q5_K, GgmlDType::Q5K),
    (GgmlType::Q6_K, GgmlDType::Q6K),
];

fn bench_matmul(c: &mut Criterion) {
    // One 70B attention-projection-sized matrix is too slow to quantize for every type here; a
    // 4096 x 4096 matrix (16.8 M weights) is large enough to leave the caches.
    let (n_out, k) = (4096, 4096);
    let threads = kernels::pool::available_threads();
    let mut g = c.benchmark_group("matmul");
    g.sample_size(20);
    for (ty, cdt) in TYPES {
        let q = quantize(n_out, k, cdt, 7);
        let data = q.data().unwrap().into_owned();
        let w = WeightView {
            dtype: ty,
            n_out,
            k,
            data: &data,
            kernels: kernels::Kernels::for_type(ty).unwrap(),
        };
        let kind = ActKind::of(ty).unwrap();
        for m in [1usize, 64] {
            let x = random(m * k, 1.0, 11);
            let mut acts = QActs::default();
            let mut out = vec![0f32; m * n_out];
            g.throughput(Throughput::Elements((m * n_out * k) as u64));
            g.bench_with_input(
                BenchmarkId::new(ty.name(), format!("rows{m}")),
                &m,
                |b, &m| {
                    b.iter(|| {
                        acts.convert(kind, &x, m, k, threads);
                        kernels::matmul(&w, &acts, &mut out, threads);
                    })
                },
            );
        }
    }
    g.finish();
}

/// One layer's attention with Med42-70B's heads (64 query heads over 8 KV heads of 128): decode
/// of one token at depth 0, 1,000 and 4,000, and a 512-token prompt after 3,500 cached positions.
fn bench_attention(c: &mut Criterion) {
    let (n_head, g_n, d, n_ctx) = (64, 8, 128, 4096);
    let threads = kernels::pool::available_threads();
    let k = random(n_ctx * g_n * d, 2.0, 3);
    let v = random(n_ctx * g_n * d, 2.0, 5);
    let q = random(512 * n_head * d, 2.0, 7);
    let mut out = vec![0f32; 512 * n_head * d];
    let mut g = c.benchmark_group("attention");
    g.sample_size(10);
    for ty in KvType::ALL {
        let mut kv = KvLayer::new(ty, g_n, n_ctx, d).unwrap();
        kv.write(0, &k, &v);
        for (name, pos, t) in [
            ("decode@0", 0, 1),
            ("decode@1000", 1000, 1),
            ("decode@4000", 4000, 1),
            ("prefill512@3500", 3500, 512),
        ] {
            g.throughput(Throughput::Elements(t as u64));
            g.bench_function(BenchmarkId::new(ty.name(), name), |b| {
                b.iter(|| kernels::attention(&kv, &q, n_head, pos, t, &mut out, threads))
            });
        }
    }
    g.finish();
}

/// Write (once) a random Llama GGUF with candle's writer and return its path.
fn synthetic_model() -> PathBuf {
    let quant = std::env::var("MED42_BENCH_QUANT").unwrap_or_else(|_| "Q4_K".into());
    let dtype = match quant.as_str() {
        "Q4_0" => GgmlDType::Q4_0,
        "Q8_0" => GgmlDType::Q8_0,
        "Q4_K" => GgmlDType::Q4K,
        "Q5_K" => GgmlDType::Q5K,
        "Q6_K" => GgmlDType::Q6K,
        "Q2_K" => GgmlDType::Q2K,
        "Q3_K" => GgmlDType::Q3K,
        other => panic!("MED42_BENCH_QUANT={other}: use one of Q4_0 Q8_0 Q2_K..Q6_K"),
    };
    let (e, ff, nh, nkv, blocks, vocab) =
        (2048usize, 5632usize, 32usize, 4usize, 2usize, 32000usize);
    let path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-tinyllama-{quant}.gguf"));
    if path.exists() {
        return path;
    }
    let hd = e / nh;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let ones = |n: usize| {
        let t = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    };
    let mut seed = 100;
    let mut q = |n_out: usize, k: usize| {
        seed += 1;
        quantize(n_out, k, dtype, seed)
    };
    tensors.push(("token_embd.weight".into(), q(vocab, e)));
    for i in 0..blocks {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        tensors.push((p("attn_norm"), ones(e)));
        tensors.push((p("attn_q"), q(e, e)));
        tensors.push((p("attn_k"), q(nkv * hd, e)));
        tensors.push((p("attn_v"), q(nkv * hd, e)));
        tensors.push((p("attn_output"), q(e, e)));
        tensors.push((p("ffn_norm"), ones(e)));
        tensors.push((p("ffn_gate"), q(ff, e)));
        tensors.push((p("ffn_up"), q(ff, e)));
        tensors.push((p("ffn_down"), q(e, ff)));
    }
    tensors.push(("output_norm.weight".into(), ones(e)));
    tensors.push(("output.weight".into(), q(vocab, e)));
    use gguf_file::Value;
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.context_length", Value::U32(4096)),
        ("llama.embedding_length", Value::U32(e as u32)),
        ("llama.block_count", Value::U32(blocks as u32)),
        ("llama.feed_forward_length", Value::U32(ff as u32)),
        ("llama.attention.head_count", Value::U32(nh as u32)),
        ("llama.attention.head_count_kv", Value::U32(nkv as u32)),
        ("llama.rope.dimension_count", Value::U32(hd as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.vocab_size", Value::U32(vocab as u32)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tmp = path.with_extension("part");
    let mut f = std::fs::File::create(&tmp).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    drop(f);
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn bench_model(c: &mut Criterion) {
    let path = match std::env::var_os("MED42_BENCH_GGUF") {
        Some(p) => PathBuf::from(p),
        None => synthetic_model(),
    };
    let opts = LoadOptions {
        n_ctx: Some(1024),
        ..Default::default()
    };
    let model = Arc::new(Llama::load(std::slice::from_ref(&path), &opts).unwrap());
    let n_vocab = model.config.n_vocab as u32;
    let prompt: Vec<u32> = (0..128u32).map(|i| (i * 7919 + 13) % n_vocab).collect();
    let mut cache: KvCache = model.new_cache(Some(1024)).unwrap();
    let label = path.file_name().unwrap().to_string_lossy().into_owned();

    let mut g = c.benchmark_group("model");
    g.sample_size(10);
    g.throughput(Throughput::Elements(prompt.len() as u64));
    g.bench_function(BenchmarkId::new("prefill128", &label), |b| {
        b.iter(|| {
            cache.reset();
            model.forward(&prompt, &mut cache, Logits::Last).unwrap()
        })
    });
    // Decode one token after a 128-token prompt: rewind to the prompt each time.
    cache.reset();
    model.forward(&prompt, &mut cache, Logits::Last).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("decode1@128", &label), |b| {
        b.iter(|| {
            cache.truncate(prompt.len()).unwrap();
            model.forward(&[42], &mut cache, Logits::Last).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_matmul, bench_attention, bench_model);
criterion_main!(benches);
