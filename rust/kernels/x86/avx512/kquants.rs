//! AVX-512 (F, BW, VL, VNNI) dot products of one K-quant weight row (Q2_K, Q3_K, Q4_K, Q5_K,
//! Q6_K) with `N` Q8_K activation rows: `N = 1` is the decode kernel, `N = ROWS` the multi-row one.
//!
//! They compute what the AVX2 kernels of [`crate::kernels::x86::avx2::multi`] compute, 64 values
//! per instruction instead of 32: per 64 weight values, one `vpmaddubsw` (unsigned weight values
//! times signed activations, pairs added to i16, exact: no pair reaches the i16 limit) and one
//! `vpdpwssd` (the i16 pairs times the sub-block scales, added to i32 lanes), where AVX2 needs a
//! multiply-add, a second multiply-add and an add per 32 values. The per-block totals are exact
//! integers, whatever order the lanes are added in, and go through the same f32 operations as
//! the AVX2 kernels ([`block_term`]), so both give the same f32 bit for bit (tested).

#![allow(unsafe_op_in_unsafe_fn)]
// block, part and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::gguf::GgmlType;
use crate::kernels::acts::{Q8K_BSUMS, Q8K_QS};
use crate::kernels::x86::avx2::multi::{block_term, hsum2_f32};
use crate::kernels::x86::avx2::unpack::{q3k_scales_i8, q4k_scales_mins};
use crate::kernels::x86::{f16_at, prefetch_ahead};

const Q4K: usize = GgmlType::Q4_K.type_size();
const Q5K: usize = GgmlType::Q5_K.type_size();
const Q6K: usize = GgmlType::Q6_K.type_size();
const Q2K: usize = GgmlType::Q2_K.type_size();
const Q3K: usize = GgmlType::Q3_K.type_size();
const Q8K: usize = GgmlType::Q8_K.type_size();

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const _)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The 32 bytes at `p` in both 256-bit halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn both_halves(p: *const u8) -> __m512i {
    _mm512_broadcast_i64x4(load256(p))
}

/// Shift counts per 64-bit lane: `lo` in the low 256-bit half, `hi` in the high one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn halves(lo: i64, hi: i64) -> __m512i {
    _mm512_set_epi64(hi, hi, hi, hi, lo, lo, lo, lo)
}

/// 16 i32 lanes folded to 8 (exact: the integers are far from the i32 limits).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fold(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// Word-permutation indices taking i16 lane `l` to element `base + l / per` (what spreads the
/// sub-block scales over the values they scale).
const fn spread(base: u16, per: u16) -> __m512i {
    let mut w = [0u16; 32];
    let mut l = 0;
    while l < 32 {
        w[l] = base + l as u16 / per;
        l += 1;
    }
    // SAFETY: 64 bytes to a 64-byte plain-data vector.
    unsafe { std::mem::transmute::<[u16; 32], __m512i>(w) }
}

/// Q4_K/Q5_K: 64 values = two sub-blocks of 32 (`2j`, `2j + 1`) with one scale each.
const SPREAD_32: [__m512i; 4] = [spread(0, 16), spread(2, 16), spread(4, 16), spread(6, 16)];
/// Q2_K, Q3_K, Q6_K: 64 values = four groups of 16 (`4q..4q + 4`) with one scale each.
const SPREAD_16: [__m512i; 4] = [spread(0, 8), spread(4, 8), spread(8, 8), spread(12, 8)];

/// Add `sum(x * a_i[l] * sv)` over the 64 values at byte `off` of each activation row's block
/// `b` to `sumi[i]` (x unsigned, at most 63; `sv` the scales as i16 per value pair).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn madd_rows<const N: usize>(
    sumi: &mut [__m512i; N],
    x: __m512i,
    sv: __m512i,
    a: &[*const u8; N],
    off: usize,
) {
    for i in 0..N {
        let p = _mm512_maddubs_epi16(x, load512(a[i].add(off)));
        sumi[i] = _mm512_dpwssd_epi32(sumi[i], p, sv);
    }
}

/// Q4_K (`Q5 = false`) or Q5_K (`Q5 = true`) weights with `N` Q8_K activation rows: the same
/// result as [`crate::kernels::x86::avx2::multi::q45_k`], bit for bit.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C present; `w` holds `nb` blocks and every `a[i]` `nb`
/// Q8_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q45_k<const N: usize, const Q5: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
) -> [f32; N] {
    let m4 = _mm512_set1_epi8(0x0F);
    let one = _mm512_set1_epi8(1);
    // the low nibbles of 32 bytes are values 64j..64j + 32, their high nibbles the next 32
    let nib = halves(0, 4);
    let (block, qs) = if Q5 { (Q5K, 48) } else { (Q4K, 16) };
    let mut acc = [0f32; N];
    for b in 0..nb {
        let wb = w.add(b * block);
        if N == 1 {
            prefetch_ahead(wb, block);
        }
        let (d, dmin) = (f16_at(wb), f16_at(wb.add(2)));
        let sm = q4k_scales_mins(wb.add(4));
        // mins per pair of 16-sums, as the AVX2 kernel has them: [m0, m0, m1, m1, ..., m7, m7]
        let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
        let mins = _mm256_set_m128i(
            _mm_unpackhi_epi16(mins, mins),
            _mm_unpacklo_epi16(mins, mins),
        );
        let scales = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr() as *const __m128i));
        let scales = _mm512_zextsi128_si512(scales);
        let qh = if Q5 {
            both_halves(wb.add(16))
        } else {
            _mm512_setzero_si512()
        };
        let ab: [*const u8; N] = std::array::from_fn(|i| a[i].add(b * Q8K));
        let mut sumi = [_mm512_setzero_si512(); N];
        for j in 0..4 {
            let bits = both_halves(wb.add(qs + 32 * j));
            let mut x = _mm512_and_si512(_mm512_srlv_epi64(bits, nib), m4);
            if Q5 {
                // bit 2j of qh[l] is the fifth bit of value 64j + l, bit 2j + 1 that of 64j + 32 + l
                let sh = halves(2 * j as i64, 2 * j as i64 + 1);
                let h = _mm512_and_si512(_mm512_srlv_epi64(qh, sh), one);
                x = _mm512_or_si512(x, _mm512_slli_epi16::<4>(h));
            }
            let sv = _mm512_permutexvar_epi16(SPREAD_32[j], scales);
            madd_rows(&mut sumi, x, sv, &ab, Q8K_QS + 64 * j);
        }
        for i in 0..N {
            let bsums = _mm256_madd_epi16(load256(ab[i].add(Q8K_BSUMS)), mins);
            let (sum, off) = hsum2_f32(fold(sumi[i]), bsums);
            acc[i] = block_term(acc[i], d, dmin, ab[i], sum, off);
        }
    }
    acc
}

/// Q6_K weights with `N` Q8_K activation rows: the same result as
/// [`crate::kernels::x86::avx2::multi::q6_k`], bit for bit (6-bit values unsigned, the `-32`
/// offset from the activation's 16-value sums).
///
/// # Safety
/// As [`q45_k`], with Q6_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q6_k<const N: usize>(nb: usize, w: *const u8, a: [*const u8; N]) -> [f32; N] {
    let m4 = _mm512_set1_epi8(0x0F);
    let m2 = _mm512_set1_epi8(0x03);
    // high bit pairs: chunks 0 and 1 of a half take bits 0-1 and 2-3, chunks 2 and 3 bits 4-7
    let (h01, h23) = (halves(0, 2), halves(4, 6));
    let mut acc = [0f32; N];
    for b in 0..nb {
        let wb = w.add(b * Q6K);
        if N == 1 {
            prefetch_ahead(wb, Q6K);
        }
        let d = f16_at(wb.add(208));
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(192) as *const __m128i));
        let scales = _mm512_zextsi256_si512(sc16);
        let ab: [*const u8; N] = std::array::from_fn(|i| a[i].add(b * Q8K));
        let mut sumi = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            // low nibbles: [chunk 0 | chunk 1], high nibbles: [chunk 2 | chunk 3]
            let ql = load512(wb.add(64 * h));
            let bh = both_halves(wb.add(128 + 32 * h));
            let hi01 = _mm512_and_si512(_mm512_srlv_epi64(bh, h01), m2);
            let hi23 = _mm512_and_si512(_mm512_srlv_epi64(bh, h23), m2);
            let x01 = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16::<4>(hi01));
            let lo23 = _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4);
            let x23 = _mm512_or_si512(lo23, _mm512_slli_epi16::<4>(hi23));
            let off = Q8K_QS + 128 * h;
            madd_rows(
                &mut sumi,
                x01,
                _mm512_permutexvar_epi16(SPREAD_16[2 * h], scales),
                &ab,
                off,
            );
            let sv = _mm512_permutexvar_epi16(SPREAD_16[2 * h + 1], scales);
            madd_rows(&mut sumi, x23, sv, &ab, off + 64);
        }
        for i in 0..N {
            let bsums = _mm256_madd_epi16(sc16, load256(ab[i].add(Q8K_BSUMS)));
            let (sum, off) = hsum2_f32(fold(sumi[i]), bsums);
            acc[i] = block_term(acc[i], d, 32.0 * d, ab[i], sum, off);
        }
    }
    acc
}

/// Q2_K (`Q3 = false`) or Q3_K (`Q3 = true`) weights with `N` Q8_K activation rows: the same
/// result as [`crate::kernels::x86::avx2::multi::q23_k`], bit for bit (values unsigned, Q3_K's
/// offset and Q2_K's mins from the activation's 16-value sums).
///
/// # Safety
/// As [`q45_k`], with Q2_K or Q3_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q23_k<const N: usize, const Q3: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
) -> [f32; N] {
    let m3 = _mm512_set1_epi8(0x03);
    let one = _mm512_set1_epi8(1);
    let (block, qs) = if Q3 { (Q3K, 32) } else { (Q2K, 16) };
    let mut acc = [0f32; N];
    for b in 0..nb {
        let wb = w.add(b * block);
        if N == 1 {
            prefetch_ahead(wb, block);
        }
        let (sc16, f, d) = if Q3 {
            let sc16 = _mm256_cvtepi8_epi16(q3k_scales_i8(wb.add(96)));
            let d = f16_at(wb.add(108));
            (sc16, 4.0 * d, d)
        } else {
            let raw = _mm_loadu_si128(wb as *const __m128i);
            let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm_set1_epi8(0x0F)));
            (sc16, f16_at(wb.add(82)), f16_at(wb.add(80)))
        };
        let scales = _mm512_zextsi256_si512(sc16);
        let hm = if Q3 {
            both_halves(wb)
        } else {
            _mm512_setzero_si512()
        };
        let ab: [*const u8; N] = std::array::from_fn(|i| a[i].add(b * Q8K));
        let mut sumi = [_mm512_setzero_si512(); N];
        for n in 0..2 {
            let q = both_halves(wb.add(qs + 32 * n));
            for p in 0..2 {
                // values 128n + 32j + l, j = 2p and 2p + 1: bits 2j of q[l] (+ 4 * bit 4n + j of
                // hm[l] for Q3_K)
                let (j0, j1) = (2 * p as i64, 2 * p as i64 + 1);
                let mut x = _mm512_and_si512(_mm512_srlv_epi64(q, halves(2 * j0, 2 * j1)), m3);
                if Q3 {
                    let hb = 4 * n as i64;
                    let h = _mm512_srlv_epi64(hm, halves(hb + j0, hb + j1));
                    x = _mm512_or_si512(x, _mm512_slli_epi16::<2>(_mm512_and_si512(h, one)));
                }
                let sv = _mm512_permutexvar_epi16(SPREAD_16[2 * n + p], scales);
                madd_rows(&mut sumi, x, sv, &ab, Q8K_QS + 128 * n + 64 * p);
            }
        }
        // what multiplies the activation 16-sums: Q3_K's scales (offset 4), Q2_K's mins
        let pair = if Q3 {
            sc16
        } else {
            _mm256_cvtepu8_epi16(_mm_srli_epi16(
                _mm_andnot_si128(_mm_set1_epi8(0x0F), _mm_loadu_si128(wb as *const __m128i)),
                4,
            ))
        };
        for i in 0..N {
            let bsums = _mm256_madd_epi16(pair, load256(ab[i].add(Q8K_BSUMS)));
            let (sum, off) = hsum2_f32(fold(sumi[i]), bsums);
            acc[i] = block_term(acc[i], d, f, ab[i], sum, off);
        }
    }
    acc
}
