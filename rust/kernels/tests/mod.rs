//! Kernel correctness: every SIMD dot against the scalar reference and against an f64 dot of the
//! dequantized operands ([`dots`]); the tiled and packed matmul against the single-row kernel, f64
//! math and each other ([`matmul`]); the safe entry points' length checks ([`bounds`]); the VNNI
//! kernels against the AVX2 ones ([`vnni`], the packed GEMMs in [`vnni_packed`]) and their
//! multi-row kernels against the single-row ones ([`rows`]).

use candle_core::quantized::k_quants::{BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType as CandleBlock};
use half::{bf16, f16};

use super::reference::{cast, with_candle_block};
use super::ActKind;
use crate::gguf::GgmlType;

#[cfg(target_arch = "x86_64")]
mod amx;
mod attn;
mod bounds;
mod dots;
mod matmul;
#[cfg(target_arch = "x86_64")]
mod rows;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod vnni_packed;

/// Every type with weight kernels (Q8_K exists only as an activation format).
pub(super) fn types() -> impl Iterator<Item = GgmlType> {
    GgmlType::SUPPORTED
        .into_iter()
        .filter(|&t| t != GgmlType::Q8_K)
}

pub(super) fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::sampling::Rng::new(seed);
    (0..n)
        .map(|_| {
            // roughly normal: sum of uniforms, plus an offset so min-based formats are exercised
            let s: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
            (s * 1.7 + 0.1) as f32
        })
        .collect()
}

/// The `m x n` matmul outputs (`m = acts.rows()`) of `n` weight rows `wb` of `k` values of type
/// `t` through `kernels`, on 2 threads.
pub(super) fn matmul_out(
    t: GgmlType,
    kernels: super::Kernels,
    wb: &[u8],
    n: usize,
    k: usize,
    acts: &super::QActs,
) -> Vec<f32> {
    let view = super::WeightView {
        dtype: t,
        n_out: n,
        k,
        data: wb,
        kernels,
    };
    let mut out = vec![f32::NAN; acts.rows() * n];
    super::matmul(&view, acts, &mut out, 2);
    out
}

pub(super) fn as_bytes<T>(v: &[T]) -> &[u8] {
    // SAFETY: plain-data block types; any bit pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Quantize `rows x k` weights to `t` with candle's quantizers; returns the raw bytes.
pub(super) fn quantize_weights(t: GgmlType, w: &[f32]) -> Vec<u8> {
    fn q<T: CandleBlock>(w: &[f32]) -> Vec<u8> {
        let mut blocks = vec![T::zeros(); w.len() / T::BLCK_SIZE];
        T::from_float(w, &mut blocks);
        as_bytes(&blocks).to_vec()
    }
    with_candle_block!(t, T => q::<T>(w), _ => unreachable!("no candle block for {t}"))
}

/// Dequantize a converted activation row back to floats.
pub(super) fn dequant_act(kind: ActKind, row: &[u8], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; k];
    match kind {
        ActKind::F32 => out.copy_from_slice(cast::<f32>(row)),
        ActKind::F16 => f16::to_float(cast::<f16>(row), &mut out),
        ActKind::BF16 => bf16::to_float(cast::<bf16>(row), &mut out),
        ActKind::Q8_0 => BlockQ8_0::to_float(cast::<BlockQ8_0>(row), &mut out),
        ActKind::Q8_1 => BlockQ8_1::to_float(cast::<BlockQ8_1>(row), &mut out),
        ActKind::Q8K => BlockQ8K::to_float(cast::<BlockQ8K>(row), &mut out),
    }
    out
}
