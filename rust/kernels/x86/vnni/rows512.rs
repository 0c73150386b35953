//! AVX-512 VNNI multi-row kernels (4 or 8 activation rows per weight row: the sequences of a
//! batched decode step) for Q4_K, Q5_K and Q6_K on 512-bit registers.
//!
//! With several rows the weight unpacking is shared and what remains is per row: the products
//! and the reduction of each block's lanes to exact integers. Here two consecutive 32-value
//! chunks of a row, adjacent in its Q8_K activation block (one 64-byte load), share a register,
//! with the two chunks' unpacked weights and sub-block scales in its halves: one `vpmaddubsw` +
//! `vpdpwssd` pair per 64 values and row (the 256-bit kernels need two); the lanes of 4 rows
//! reduce together in one transposition tree, and the f32 block terms of 4 rows are one vector
//! operation. They also prefetch the weights, which a decode step streams from memory.
//!
//! On a 2-core Xeon with AVX-512 VNNI (`benches/rows.rs`) they take 0.91-0.96x the time of the
//! prefetching 256-bit kernels for 4 rows of Q4_K and 4 or 8 rows of Q6_K, and no less for 8
//! rows of Q4_K, which therefore keeps the 256-bit kernel ([`super::wide_rows`]). A 512-bit
//! Q8_0 form (a weight block broadcast to both halves, two rows' blocks against it) was no
//! faster than the 256-bit kernel there and is not kept.
//!
//! Each computes the same exact per-block integers as the single-row kernels
//! ([`super::kquants`], [`crate::kernels::x86::avx2::multi`]) and puts them through the same f32
//! operations in the same order (lane by lane, the two fused multiply-adds of `block_term`), so
//! every row gets the single-row kernel's f32 bit for bit (tested): batching stays invisible in
//! the results.

#![allow(unsafe_op_in_unsafe_fn)]
// block, row and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::gguf::GgmlType;
use crate::kernels::acts::{Q8K_BSUMS, Q8K_QS};
use crate::kernels::x86::avx2::multi::{I16_SPREAD, SCALE_PAIRS};
use crate::kernels::x86::avx2::unpack::q4k_scales_mins;
use crate::kernels::x86::{f16_at, prefetch_ahead};

const Q4K: usize = GgmlType::Q4_K.type_size();
const Q5K: usize = GgmlType::Q5_K.type_size();
const Q6K: usize = GgmlType::Q6_K.type_size();
const Q8K: usize = GgmlType::Q8_K.type_size();

/// `[32 bytes at p0 | 32 bytes at p1]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pair(p0: *const u8, p1: *const u8) -> __m512i {
    let lo = _mm256_loadu_si256(p0 as *const __m256i);
    let hi = _mm256_loadu_si256(p1 as *const __m256i);
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// 64 bytes at `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load64(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const __m512i)
}

/// 32 bytes at `p` in both 256-bit halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn broadcast32(p: *const u8) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i))
}

/// Per 128-bit lane of `x` and `y`: `[x0 + x2, y0 + y2, x1 + x3, y1 + y3]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fold32(x: __m512i, y: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y))
}

/// Per 128-bit lane of `x` and `y` (i32 elements): `[x0 + x2, x1 + x3, y0 + y2, y1 + y3]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn fold64(x: __m512i, y: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y))
}

/// The integer totals of one super-block for 4 rows: `(sums, offs)` as f32, lane `r` the lane
/// sum of `s[r]` (16 i32) and of row `r`'s half of `o[r / 2]` (8 i32 each), exact integers
/// converted as the single-row kernels convert them (`vcvtdq2ps`, round to nearest).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn totals4(s: [__m512i; 4], o: [__m512i; 2]) -> (__m128, __m128) {
    // u, 128-bit lane l: [s0, s1, s2, s3] over lane l of each
    let u = fold64(fold32(s[0], s[1]), fold32(s[2], s[3]));
    // y, 128-bit lanes: [o0, o2, o0, o2] of the first half of rows 0 and 2, then their second
    // half, then the same for rows 1 and 3
    let y = fold32(o[0], o[1]);
    let y = fold64(y, y);
    // lanes: u0 + u1, u2 + u3, the offsets of rows 0 and 2, of rows 1 and 3
    let t = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x88>(u, y),
        _mm512_shuffle_i32x4::<0xDD>(u, y),
    );
    let sums = _mm_add_epi32(_mm512_castsi512_si128(t), _mm512_extracti32x4_epi32::<1>(t));
    let (o02, o13) = (
        _mm512_extracti32x4_epi32::<2>(t),
        _mm512_extracti32x4_epi32::<3>(t),
    );
    (
        _mm_cvtepi32_ps(sums),
        _mm_cvtepi32_ps(_mm_unpacklo_epi32(o02, o13)),
    )
}

/// The K-quant block term of 4 rows at once, lane `r` exactly as
/// [`crate::kernels::x86::avx2::multi::block_term`] computes it for row `r`:
/// `acc + (d * da) * sum - (f * da) * off`, two fused multiply-adds, with `da` the Q8_K block
/// scale at `ab[r]` and `(sum, off)` from [`totals4`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn block_terms4(
    acc: __m128,
    d: f32,
    f: f32,
    ab: [*const u8; 4],
    (sum, off): (__m128, __m128),
) -> __m128 {
    let da = ab.map(|p| std::ptr::read_unaligned(p as *const f32));
    let da = _mm_set_ps(da[3], da[2], da[1], da[0]);
    let acc = _mm_fmadd_ps(_mm_mul_ps(_mm_set1_ps(d), da), sum, acc);
    _mm_fnmadd_ps(_mm_mul_ps(_mm_set1_ps(f), da), off, acc)
}

/// The results of [`block_terms4`]'s accumulators, row by row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_of<const N: usize>(acc: [__m128; 2]) -> [f32; N] {
    let mut out = [0f32; N];
    for q in 0..N / 4 {
        let mut x = [0f32; 4];
        _mm_storeu_ps(x.as_mut_ptr(), acc[q]);
        out[4 * q..4 * q + 4].copy_from_slice(&x);
    }
    out
}

/// `[lo | hi]`: two 256-bit vectors in one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Q4_K (`Q5 = false`, 144-byte blocks) or Q5_K (`Q5 = true`, 176-byte blocks) weights with `N`
/// (4 or 8) Q8_K activation rows: the same result, row by row and bit for bit, as the
/// single-row kernel [`super::kquants::avx512vnni::q45_k`].
///
/// Chunk `j` of a block (64 values: sub-blocks `2j` and `2j + 1`) is one register: the low
/// nibbles of its 32 bytes in the low half, the high nibbles in the high half, against the 64
/// activation bytes of the chunk, with the two sub-blocks' scales in the halves.
///
/// # Safety
/// As [`q8_0_rows`]; `w` holds `nb` blocks and every `a[i]` `nb` Q8_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q45_k_rows<const N: usize, const Q5: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
) -> [f32; N] {
    const { assert!(N == 4 || N == 8) };
    let m4 = _mm512_set1_epi8(0x0F);
    let one = _mm512_set1_epi8(1);
    // per 64-bit lane: 0 in the low half (the low nibbles), 4 in the high half
    let nib = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    let half1 = _mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0);
    // the scale of sub-block 2j over the low half, of 2j + 1 over the high half
    let spread: [__m512i; 4] =
        std::array::from_fn(|j| join(I16_SPREAD[2 * j], I16_SPREAD[2 * j + 1]));
    let (block, qs) = if Q5 { (Q5K, 48) } else { (Q4K, 16) };
    let mut acc = [_mm_setzero_ps(); 2];
    for b in 0..nb {
        let wb = w.add(b * block);
        prefetch_ahead(wb, block);
        // Q5_K: bit 2j of qh[l] is the fifth bit of value l of chunk j's low half, bit 2j + 1
        // of its high half: the high half starts one bit on
        let mut qh = if Q5 {
            _mm512_srlv_epi64(broadcast32(wb.add(16)), half1)
        } else {
            _mm512_setzero_si512()
        };
        let (d, dmin) = (f16_at(wb), f16_at(wb.add(2)));
        let sm = q4k_scales_mins(wb.add(4));
        // mins duplicated per pair of 16-sums: [m0, m0, m1, m1, ..., m7, m7] as i16, both halves
        let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
        let mins = _mm256_set_m128i(
            _mm_unpackhi_epi16(mins, mins),
            _mm_unpacklo_epi16(mins, mins),
        );
        let mins = _mm512_broadcast_i64x4(mins);
        // the 8 sub-block scales as i16 in every 128-bit lane
        let scales = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr() as *const __m128i));
        let scales = _mm512_broadcast_i32x4(scales);
        let mut sumi = [_mm512_setzero_si512(); N];
        for j in 0..4 {
            let mut q =
                _mm512_and_si512(_mm512_srlv_epi64(broadcast32(wb.add(qs + 32 * j)), nib), m4);
            if Q5 {
                q = _mm512_or_si512(q, _mm512_slli_epi16::<4>(_mm512_and_si512(qh, one)));
                qh = _mm512_srli_epi16::<2>(qh);
            }
            let sv = _mm512_shuffle_epi8(scales, spread[j]);
            for i in 0..N {
                let ab = a[i].add(b * Q8K + Q8K_QS + 64 * j);
                let p = _mm512_maddubs_epi16(q, load64(ab));
                sumi[i] = _mm512_dpwssd_epi32(sumi[i], p, sv);
            }
        }
        for q in 0..N / 4 {
            let r = 4 * q;
            let ab: [*const u8; 4] = std::array::from_fn(|i| a[r + i].add(b * Q8K));
            let o = [0, 1].map(|h| {
                let bs = pair(ab[2 * h].add(Q8K_BSUMS), ab[2 * h + 1].add(Q8K_BSUMS));
                _mm512_madd_epi16(bs, mins)
            });
            let s = [sumi[r], sumi[r + 1], sumi[r + 2], sumi[r + 3]];
            acc[q] = block_terms4(acc[q], d, dmin, ab, totals4(s, o));
        }
    }
    rows_of::<N>(acc)
}

/// Q6_K weights (210-byte blocks) with `N` (4 or 8) Q8_K activation rows: the same result, row
/// by row and bit for bit, as the single-row kernel [`super::kquants::avx512vnni::q6_k`]
/// (unsigned 6-bit values, the `-32` offset applied once per block from the activation 16-sums).
///
/// Chunks `2c` and `2c + 1` of a half block (64 values, adjacent in the activation block) are
/// one register.
///
/// # Safety
/// As [`q45_k_rows`], with Q6_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q6_k_rows<const N: usize>(nb: usize, w: *const u8, a: [*const u8; N]) -> [f32; N] {
    const { assert!(N == 4 || N == 8) };
    let m4 = _mm512_set1_epi8(0x0F);
    let m2 = _mm512_set1_epi8(0x03);
    // the high 2-bit pairs of chunks (0, 1) and (2, 3): shifts per half
    let sh01 = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    let sh23 = _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4);
    let pairs = [
        join(SCALE_PAIRS[0], SCALE_PAIRS[1]),
        join(SCALE_PAIRS[2], SCALE_PAIRS[3]),
    ];
    let mut acc = [_mm_setzero_ps(); 2];
    for b in 0..nb {
        let wb = w.add(b * Q6K);
        prefetch_ahead(wb, Q6K);
        let d = f16_at(wb.add(208));
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(192) as *const __m128i));
        let mut sumi = [_mm512_setzero_si512(); N];
        for h in 0..2 {
            // this half's 8 scales (as i16) in every 128-bit lane
            let sch = _mm512_broadcast_i32x4(if h == 0 {
                _mm256_castsi256_si128(sc16)
            } else {
                _mm256_extracti128_si256::<1>(sc16)
            });
            let ql = load64(wb.add(64 * h));
            let bh = broadcast32(wb.add(128 + 32 * h));
            let q = [
                _mm512_or_si512(
                    _mm512_and_si512(ql, m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srlv_epi64(bh, sh01), m2)),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srlv_epi64(bh, sh23), m2)),
                ),
            ];
            for c in 0..2 {
                let sv = _mm512_shuffle_epi8(sch, pairs[c]);
                for i in 0..N {
                    let ab = a[i].add(b * Q8K + Q8K_QS + 128 * h + 64 * c);
                    let p = _mm512_maddubs_epi16(q[c], load64(ab));
                    sumi[i] = _mm512_dpwssd_epi32(sumi[i], p, sv);
                }
            }
        }
        let sc = _mm512_broadcast_i64x4(sc16);
        for q in 0..N / 4 {
            let r = 4 * q;
            let ab: [*const u8; 4] = std::array::from_fn(|i| a[r + i].add(b * Q8K));
            let o = [0, 1].map(|h| {
                let bs = pair(ab[2 * h].add(Q8K_BSUMS), ab[2 * h + 1].add(Q8K_BSUMS));
                _mm512_madd_epi16(bs, sc)
            });
            let s = [sumi[r], sumi[r + 1], sumi[r + 2], sumi[r + 3]];
            acc[q] = block_terms4(acc[q], d, 32.0 * d, ab, totals4(s, o));
        }
    }
    rows_of::<N>(acc)
}
