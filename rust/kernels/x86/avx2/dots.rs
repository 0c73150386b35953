//! AVX2/FMA/F16C single-row dot products for the weight types without a multi-row kernel
//! (Q4_1, Q5_1, F16, F32), and the f32 vector operations of attention. Each dot takes one weight
//! row and one activation row as raw GGUF block bytes.
//!
//! The arithmetic follows ggml's block formats: per 32-element block an integer dot product of the
//! weight quants with the activation's 8-bit quants, scaled by both block scales and accumulated in
//! eight f32 lanes; the `min * sum` term of the Q4_1/Q5_1 formats is added in scalar.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::kernels::x86::{bits_to_bytes, f16_at, hsum, nibbles, prefetch_ahead};

/// Sum of products of unsigned bytes `a` with signed bytes `b`, as 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_us8(a: __m256i, b: __m256i) -> __m256 {
    let p16 = _mm256_maddubs_epi16(a, b);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

/// Q4_1 weights (20-byte blocks) with Q8_1 activations (36-byte blocks). Both blocks start with
/// two f16 (`d, m` and `d, s`): one conversion each gives `[d_w, m_w]` and `[d_a, s_a]`, and one
/// multiply gives the block scale and the `min * sum` term together. Four blocks per iteration
/// go into four accumulators, so consecutive blocks' FMAs do not wait on each other's results.
///
/// # Safety
/// AVX2/FMA/F16C present; `w` and `a` hold `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= nb * 20 && a.len() >= nb * 36);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut summs = _mm_setzero_ps();
    let mut i = 0;
    while i < nb {
        let n = (nb - i).min(4);
        for (j, acc) in acc.iter_mut().enumerate().take(n) {
            let wb = wp.add((i + j) * 20);
            prefetch_ahead(wb, 1);
            let ab = ap.add((i + j) * 36);
            let hw = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
                wb as *const i32,
            )));
            let ha = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
                ab as *const i32,
            )));
            let p = _mm_mul_ps(hw, ha); // [d_w * d_a, m_w * s_a, 0, 0]
            summs = _mm_add_ps(summs, p);
            let d = _mm256_broadcastss_ps(p);
            let qx = nibbles(wb.add(4));
            let qy = _mm256_loadu_si256(ab.add(4) as *const __m256i);
            *acc = _mm256_fmadd_ps(d, dot_us8(qx, qy), *acc);
        }
        i += n;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum(s) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
}

/// Q5_1 weights (24-byte blocks) with Q8_1 activations (36-byte blocks).
///
/// # Safety
/// As [`dot_q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_1(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= nb * 24 && a.len() >= nb * 36);
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for i in 0..nb {
        let wb = wp.add(i * 24);
        prefetch_ahead(wb, 1);
        let ab = ap.add(i * 36);
        summs += f16_at(wb.add(2)) * f16_at(ab.add(2));
        let d = _mm256_set1_ps(f16_at(wb) * f16_at(ab));
        let mut qx = nibbles(wb.add(8));
        let hi = _mm256_and_si256(bits_to_bytes(wb.add(4)), _mm256_set1_epi8(0x10));
        qx = _mm256_or_si256(qx, hi);
        let qy = _mm256_loadu_si256(ab.add(4) as *const __m256i);
        acc = _mm256_fmadd_ps(d, dot_us8(qx, qy), acc);
    }
    hsum(acc) + summs
}

/// f16 weights with f16 activations (`n` elements), accumulated in f32.
///
/// # Safety
/// As [`dot_q4_1`], with `2n` bytes each.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 2 * n);
    let (wp, ap) = (w.as_ptr() as *const __m128i, a.as_ptr() as *const __m128i);
    let mut acc = [_mm256_setzero_ps(); 4];
    let n32 = n / 32;
    for i in 0..n32 {
        for (j, ac) in acc.iter_mut().enumerate() {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i * 4 + j)));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(ap.add(i * 4 + j)));
            *ac = _mm256_fmadd_ps(x, y, *ac);
        }
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum(s);
    for i in n32 * 32..n {
        sum += f16_at(w.as_ptr().add(2 * i)) * f16_at(a.as_ptr().add(2 * i));
    }
    sum
}

/// f32 weights with f32 activations (`n` elements).
///
/// # Safety
/// As [`dot_q4_1`], with `4n` bytes each.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let (wp, ap) = (w.as_ptr() as *const f32, a.as_ptr() as *const f32);
    let mut acc = [_mm256_setzero_ps(); 4];
    let n32 = n / 32;
    for i in 0..n32 {
        for (j, ac) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(wp.add(i * 32 + j * 8));
            let y = _mm256_loadu_ps(ap.add(i * 32 + j * 8));
            *ac = _mm256_fmadd_ps(x, y, *ac);
        }
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum(s);
    for i in n32 * 32..n {
        sum += *wp.add(i) * *ap.add(i);
    }
    sum
}

/// Dot product of two f32 slices (attention scores).
///
/// # Safety
/// AVX2/FMA present.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32_slices(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let n16 = n / 16;
    for i in 0..n16 {
        acc0 = _mm256_fmadd_ps(
            _mm256_loadu_ps(ap.add(16 * i)),
            _mm256_loadu_ps(bp.add(16 * i)),
            acc0,
        );
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(ap.add(16 * i + 8)),
            _mm256_loadu_ps(bp.add(16 * i + 8)),
            acc1,
        );
    }
    let mut sum = hsum(_mm256_add_ps(acc0, acc1));
    for i in n16 * 16..n {
        sum += *ap.add(i) * *bp.add(i);
    }
    sum
}

/// `y += a * x` over f32 slices (attention value accumulation).
///
/// # Safety
/// AVX2/FMA present.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_ps(a);
    let n8 = n / 8;
    for i in 0..n8 {
        let v = _mm256_fmadd_ps(
            va,
            _mm256_loadu_ps(xp.add(8 * i)),
            _mm256_loadu_ps(yp.add(8 * i)),
        );
        _mm256_storeu_ps(yp.add(8 * i), v);
    }
    for i in n8 * 8..n {
        *yp.add(i) += a * *xp.add(i);
    }
}
