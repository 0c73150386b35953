//! AVX2 dot products of one weight row with `N` activation rows at once (prompt processing), for
//! the weight types that dominate the Med42 quant table's files: Q4_K, Q5_K, Q6_K, Q8_0, Q4_0.
//!
//! Each weight block is loaded and unpacked to bytes once and then multiplied with the same block
//! of all `N` activation rows, so the unpacking (nibble masks, high-bit merges, scale shuffles)
//! is paid once per `N` products instead of once per product. With `N = 1` the same code is the
//! single-row kernel for Q4_K, Q5_K and Q6_K (so for them decode and prompts short enough for this
//! path agree bit for bit; longer prompts use [`super::x86_packed`]); Q8_0 decode uses the `N = 1`
//! kernel with two accumulator chains. With `N = 1` the kernels also prefetch the weights ahead.
//!
//! Formats (ggml): Q4_K = f16 d, f16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of
//! nibbles (256 values); Q5_K = the same with 32 bytes of fifth bits before the nibbles; Q6_K =
//! 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 i8 scales, f16 d; Q8_K activations = f32
//! d, 256 i8, 16 i16 sums of 16; Q8_0 = f16 d + 32 i8; Q4_0 = f16 d + 16 bytes of nibbles
//! (value - 8).

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::x86::{f16_at, hsum, prefetch_ahead};

const Q4K: usize = 144;
const Q5K: usize = 176;
const Q6K: usize = 210;
const Q8K: usize = super::quantize::Q8_K_BYTES;
const Q8K_SUMS: usize = 260;

/// Horizontal sums of `N` accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsums<const N: usize>(acc: [__m256; N]) -> [f32; N] {
    let mut out = [0f32; N];
    for i in 0..N {
        out[i] = hsum(acc[i]);
    }
    out
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Q4_K's 12 bytes of 6-bit scales and mins as 8 scale bytes followed by 8 min bytes.
#[inline]
pub(crate) fn q4k_scales_mins(p: *const u8) -> [u8; 16] {
    // SAFETY: callers pass a pointer to the 12 scale bytes of a block.
    let b = unsafe { std::ptr::read_unaligned(p as *const [u8; 12]) };
    let u = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    const M1: u32 = 0x3f3f_3f3f;
    const M2: u32 = 0x0f0f_0f0f;
    const M3: u32 = 0x0303_0303;
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let sc_lo = u0 & M1; // scales 0..4
    let sc_hi = (u2 & M2) | (((u0 >> 6) & M3) << 4); // scales 4..8
    let mn_lo = u1 & M1; // mins 0..4
    let mn_hi = ((u2 >> 4) & M2) | (((u1 >> 6) & M3) << 4); // mins 4..8
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&sc_lo.to_le_bytes());
    out[4..8].copy_from_slice(&sc_hi.to_le_bytes());
    out[8..12].copy_from_slice(&mn_lo.to_le_bytes());
    out[12..16].copy_from_slice(&mn_hi.to_le_bytes());
    out
}

/// Q4_K (`Q5 = false`, 144-byte blocks) or Q5_K (`Q5 = true`, 176-byte blocks: the same header,
/// then 32 bytes of fifth bits before the nibbles) weights with `N` Q8_K activation rows.
///
/// # Safety
/// AVX2/FMA/F16C present; `w` holds `nb` blocks and every `a[i]` `nb` Q8_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q45_k<const N: usize, const Q5: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let (block, qs) = if Q5 { (Q5K, 48) } else { (Q4K, 16) };
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let wb = w.add(b * block);
        if N == 1 {
            // decode streams the weights from memory: ask for them ahead
            prefetch_ahead(wb, block);
        }
        let mut qh = if Q5 {
            load(wb.add(16))
        } else {
            _mm256_setzero_si256()
        };
        let vd = _mm256_set1_ps(f16_at(wb));
        let vdmin = _mm256_set1_ps(f16_at(wb.add(2)));
        let sm = q4k_scales_mins(wb.add(4));
        // mins duplicated per pair of 16-sums: [m0, m0, m1, m1, ..., m7, m7] as i16
        let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
        let mins = _mm256_set_m128i(
            _mm_unpackhi_epi16(mins, mins),
            _mm_unpacklo_epi16(mins, mins),
        );
        let mut sumi = [_mm256_setzero_si256(); N];
        for j in 0..4 {
            let bits = load(wb.add(qs + 32 * j));
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if Q5 {
                // bit 2j of qh[l] is the fifth bit of value l of the low half, bit 2j+1 of the high
                let h = qh;
                qh = _mm256_srli_epi16(qh, 2);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                hi = _mm256_or_si256(
                    hi,
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4),
                );
            }
            let sl = _mm256_set1_epi16(sm[2 * j] as i16);
            let sh = _mm256_set1_epi16(sm[2 * j + 1] as i16);
            for i in 0..N {
                let ab = a[i].add(b * Q8K + 4 + 64 * j);
                let pl = _mm256_madd_epi16(sl, _mm256_maddubs_epi16(lo, load(ab)));
                let ph = _mm256_madd_epi16(sh, _mm256_maddubs_epi16(hi, load(ab.add(32))));
                sumi[i] = _mm256_add_epi32(sumi[i], _mm256_add_epi32(pl, ph));
            }
        }
        for i in 0..N {
            let ab = a[i].add(b * Q8K);
            let msum = _mm256_madd_epi16(load(ab.add(Q8K_SUMS)), mins);
            let f = _mm256_fmsub_ps(
                vd,
                _mm256_cvtepi32_ps(sumi[i]),
                _mm256_mul_ps(vdmin, _mm256_cvtepi32_ps(msum)),
            );
            let da = _mm256_set1_ps(std::ptr::read_unaligned(ab as *const f32));
            acc[i] = _mm256_fmadd_ps(da, f, acc[i]);
        }
    }
    hsums(acc)
}

/// Byte shuffles that spread i16 scale `2c` over the low 128-bit lane and `2c + 1` over the high.
const SCALE_PAIRS: [__m256i; 4] = {
    const fn pair(c: u8) -> __m256i {
        let (lo, hi) = (4 * c, 4 * c + 2);
        let mut b = [0u8; 32];
        let mut i = 0;
        while i < 16 {
            b[i] = lo + (i as u8 & 1);
            b[16 + i] = hi + (i as u8 & 1);
            i += 1;
        }
        // SAFETY: 32 bytes to a 32-byte plain-data vector.
        unsafe { std::mem::transmute::<[u8; 32], __m256i>(b) }
    }
    [pair(0), pair(1), pair(2), pair(3)]
};

/// Q6_K weights (`nb` blocks of 210 bytes) with `N` Q8_K activation rows.
///
/// The 6-bit values are used unsigned (0..63) and the `-32` offset is applied once per block as
/// `32 * sum(scale * activation sums)`, from the activation's 16-element sums.
///
/// # Safety
/// As [`q4_k`], with Q6_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k<const N: usize>(nb: usize, w: *const u8, a: [*const u8; N]) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x03);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let wb = w.add(b * Q6K);
        if N == 1 {
            prefetch_ahead(wb, Q6K);
        }
        let d = f16_at(wb.add(208));
        let sc8 = _mm_loadu_si128(wb.add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            // this half's 8 scales (as i16) in both 128-bit lanes, for the per-chunk shuffles
            let sch = if h == 0 {
                _mm256_permute2x128_si256(sc16, sc16, 0x00)
            } else {
                _mm256_permute2x128_si256(sc16, sc16, 0x11)
            };
            let ql = wb.add(64 * h);
            let b1 = load(ql);
            let b2 = load(ql.add(32));
            let bh = load(wb.add(128 + 32 * h));
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(b1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(bh, m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(b2, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m2), 4),
                ),
            ];
            for (c, qc) in q.iter().enumerate() {
                // scales of the two 16-value halves of this 32-value chunk
                // (scale 2c of the half in the low lane, 2c + 1 in the high one)
                let sv = _mm256_shuffle_epi8(sch, SCALE_PAIRS[c]);
                for i in 0..N {
                    let ab = a[i].add(b * Q8K + 4 + 128 * h + 32 * c);
                    let p = _mm256_madd_epi16(sv, _mm256_maddubs_epi16(*qc, load(ab)));
                    sumi[i] = _mm256_add_epi32(sumi[i], p);
                }
            }
        }
        for i in 0..N {
            let ab = a[i].add(b * Q8K);
            let bias = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load(ab.add(Q8K_SUMS))), 5);
            let s = _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[i], bias));
            let da = _mm256_set1_ps(d * std::ptr::read_unaligned(ab as *const f32));
            acc[i] = _mm256_fmadd_ps(da, s, acc[i]);
        }
    }
    hsums(acc)
}

/// Q8_0 (`Q4 = false`, 34-byte blocks) or Q4_0 (`Q4 = true`, 18-byte blocks) weights with `N`
/// Q8_0 activation rows (34-byte blocks), each followed at byte `scales` by its `nb` block scales
/// as f32 (so the per-product scale is one broadcast load instead of an f16 conversion).
///
/// # Safety
/// AVX2/FMA/F16C present; `w` holds `nb` blocks and every `a[i]` `scales + 4 * nb` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_acts<const N: usize, const Q4: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
    scales: usize,
) -> [f32; N] {
    let ones = _mm256_set1_epi16(1);
    let m4 = _mm256_set1_epi8(0x0F);
    let eight = _mm256_set1_epi8(8);
    // two accumulator sets alternating by block: with few rows the fma latency chain would
    // otherwise bound the loop (for N >= 4 the rows' chains already overlap)
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    for b in 0..nb {
        let set = if N < 4 { b & 1 } else { 0 };
        let (wb, q) = if Q4 {
            let wb = w.add(b * 18);
            let t = _mm_loadu_si128(wb.add(2) as *const __m128i);
            let x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), m4);
            (wb, _mm256_sub_epi8(x, eight))
        } else {
            let wb = w.add(b * 34);
            (wb, load(wb.add(2)))
        };
        if N == 1 {
            // the Q8_0 decode kernel: ask for the weights ahead
            prefetch_ahead(wb, 1);
        }
        let dw = _mm256_set1_ps(f16_at(wb));
        let ax = _mm256_sign_epi8(q, q);
        for i in 0..N {
            let ab = a[i].add(b * 34);
            let ay = _mm256_sign_epi8(load(ab.add(2)), q);
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, ay), ones);
            let da = _mm256_broadcast_ss(&*(a[i].add(scales + 4 * b) as *const f32));
            let d = _mm256_mul_ps(dw, da);
            acc[set][i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[set][i]);
        }
    }
    let mut sum = acc[0];
    for i in 0..N {
        sum[i] = _mm256_add_ps(acc[0][i], acc[1][i]);
    }
    hsums(sum)
}
