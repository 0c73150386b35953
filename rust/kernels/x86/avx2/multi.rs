//! AVX2 dot products of one weight row with `N` activation rows at once, for the weight types of
//! the Med42 quant table: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q4_0, Q5_0, Q8_0.
//!
//! Each weight block is loaded and unpacked to bytes once and then multiplied with the same block
//! of all `N` activation rows, so the unpacking (nibble masks, high-bit merges, scale shuffles)
//! is paid once per `N` products instead of once per product. With `N = 1` the same code is the
//! single-row (decode) kernel. That one always prefetches the weights ahead, the multi-row ones
//! where `PF` says so: the engine passes `true`, since a batched decode step streams the
//! weights from memory as a single-row one does (hardware prefetch alone left a 4-row step
//! 1.4-1.5x slower on a 2-core Xeon, `benches/rows.rs`); `false` keeps the kernel without, for
//! that side-by-side bench (prefetching changes no result). Every kernel adds exact
//! per-block integer dot products in the order of the packed prompt GEMM of
//! [`super::packed`] ([`block_term`] for the K-quants, 4 partial sums for [`q8_acts`]), so
//! decode, short prompts and long prompts give the same f32 bit for bit.
//!
//! Formats (ggml): Q4_K = f16 d, f16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of
//! nibbles (256 values); Q5_K = the same with 32 bytes of fifth bits before the nibbles; Q6_K =
//! 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 i8 scales, f16 d; Q8_K activations = f32
//! d, 256 i8, 16 i16 sums of 16; Q2_K / Q3_K: see [`q23_k`]; Q8_0 = f16 d, 32 i8; Q4_0 = f16 d,
//! 16 bytes of nibbles (value - 8); Q5_0 = f16 d, 4 bytes of fifth bits, 16 bytes of nibbles
//! (value - 16).

#![allow(unsafe_op_in_unsafe_fn)]
// block, part and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::unpack::{q23_values, q3k_scales_i8, q4k_scales_mins};
use crate::gguf::GgmlType;
use crate::kernels::acts::{Q8K_BSUMS, Q8K_QS};
use crate::kernels::layout::PARTS;
use crate::kernels::x86::{bits_to_bytes, f16_at, nibbles, prefetch_ahead};

const Q4K: usize = GgmlType::Q4_K.type_size();
const Q5K: usize = GgmlType::Q5_K.type_size();
const Q6K: usize = GgmlType::Q6_K.type_size();
const Q2K: usize = GgmlType::Q2_K.type_size();
const Q3K: usize = GgmlType::Q3_K.type_size();
const Q8K: usize = GgmlType::Q8_K.type_size();
const Q8_0: usize = GgmlType::Q8_0.type_size();
const Q4_0: usize = GgmlType::Q4_0.type_size();
const Q5_0: usize = GgmlType::Q5_0.type_size();

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// `(sum(u), sum(v))` of two vectors of 8 i32, converted to f32 (round to nearest, as `as f32`
/// does) in one vector conversion: the integer totals never leave the vector registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum2_f32(u: __m256i, v: __m256i) -> (f32, f32) {
    // per 128-bit lane [u01, u23, v01, v23], then the lanes added, then [u, u, v, v]
    let t = _mm256_hadd_epi32(u, v);
    let x = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
    let f = _mm_cvtepi32_ps(x);
    (_mm_cvtss_f32(f), _mm_cvtss_f32(_mm_movehl_ps(f, f)))
}

/// One K-quant super-block's contribution, in the order every K-quant kernel uses (these, and
/// the packed GEMMs of [`super::packed`] lane by lane), so that a weight row times an
/// activation row gives the same f32 bit for bit whichever kernel computes it (decode, short
/// prompts or packed prompt tiles): `acc + (d * da) * sum - (f * da) * off`, two fused
/// multiply-adds, where `sum` (the scaled dot of the unsigned values) and `off` (the min / offset
/// term over the activation's 16-value sums) are exact integers, here already converted to f32,
/// and `da` is the Q8_K block's scale at `ab`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn block_term(
    acc: f32,
    d: f32,
    f: f32,
    ab: *const u8,
    sum: f32,
    off: f32,
) -> f32 {
    let da = std::ptr::read_unaligned(ab as *const f32);
    let acc = (d * da).mul_add(sum, acc);
    (-(f * da)).mul_add(off, acc)
}

/// Q4_K (`Q5 = false`, 144-byte blocks) or Q5_K (`Q5 = true`, 176-byte blocks: the same header,
/// then 32 bytes of fifth bits before the nibbles) weights with `N` Q8_K activation rows.
///
/// # Safety
/// AVX2/FMA/F16C present; `w` holds `nb` blocks and every `a[i]` `nb` Q8_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q45_k<const N: usize, const Q5: bool, const PF: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let (block, qs) = if Q5 { (Q5K, 48) } else { (Q4K, 16) };
    let mut acc = [0f32; N];
    for b in 0..nb {
        let wb = w.add(b * block);
        if N == 1 || PF {
            // decode (one row or a batched step) streams the weights from memory: ask ahead
            prefetch_ahead(wb, block);
        }
        let mut qh = if Q5 {
            load(wb.add(16))
        } else {
            _mm256_setzero_si256()
        };
        let (d, dmin) = (f16_at(wb), f16_at(wb.add(2)));
        let sm = q4k_scales_mins(wb.add(4));
        // mins duplicated per pair of 16-sums: [m0, m0, m1, m1, ..., m7, m7] as i16
        let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
        let mins = _mm256_set_m128i(
            _mm_unpackhi_epi16(mins, mins),
            _mm_unpacklo_epi16(mins, mins),
        );
        // the 8 sub-block scales as i16 in both 128-bit lanes, spread per sub-block by a shuffle
        let scales = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr() as *const __m128i));
        let scales = _mm256_set_m128i(scales, scales);
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
            let sl = _mm256_shuffle_epi8(scales, I16_SPREAD[2 * j]);
            let sh = _mm256_shuffle_epi8(scales, I16_SPREAD[2 * j + 1]);
            for i in 0..N {
                let ab = a[i].add(b * Q8K + Q8K_QS + 64 * j);
                let pl = _mm256_madd_epi16(sl, _mm256_maddubs_epi16(lo, load(ab)));
                let ph = _mm256_madd_epi16(sh, _mm256_maddubs_epi16(hi, load(ab.add(32))));
                sumi[i] = _mm256_add_epi32(sumi[i], _mm256_add_epi32(pl, ph));
            }
        }
        for i in 0..N {
            let ab = a[i].add(b * Q8K);
            let (sum, off) = hsum2_f32(sumi[i], _mm256_madd_epi16(load(ab.add(Q8K_BSUMS)), mins));
            acc[i] = block_term(acc[i], d, dmin, ab, sum, off);
        }
    }
    acc
}

/// Byte shuffles that spread i16 element `e` of each 128-bit lane over that lane.
pub(crate) const I16_SPREAD: [__m256i; 8] = {
    const fn spread(e: u8) -> __m256i {
        let mut b = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            b[i] = 2 * e + (i as u8 & 1);
            i += 1;
        }
        // SAFETY: 32 bytes to a 32-byte plain-data vector.
        unsafe { std::mem::transmute::<[u8; 32], __m256i>(b) }
    }
    [
        spread(0),
        spread(1),
        spread(2),
        spread(3),
        spread(4),
        spread(5),
        spread(6),
        spread(7),
    ]
};

/// Byte shuffles that spread i16 scale `2c` over the low 128-bit lane and `2c + 1` over the high.
pub(crate) const SCALE_PAIRS: [__m256i; 4] = {
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
/// As [`q45_k`], with Q6_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k<const N: usize, const PF: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x03);
    let mut acc = [0f32; N];
    for b in 0..nb {
        let wb = w.add(b * Q6K);
        if N == 1 || PF {
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
                    let ab = a[i].add(b * Q8K + Q8K_QS + 128 * h + 32 * c);
                    let p = _mm256_madd_epi16(sv, _mm256_maddubs_epi16(*qc, load(ab)));
                    sumi[i] = _mm256_add_epi32(sumi[i], p);
                }
            }
        }
        for i in 0..N {
            let ab = a[i].add(b * Q8K);
            let (sum, off) = hsum2_f32(sumi[i], _mm256_madd_epi16(sc16, load(ab.add(Q8K_BSUMS))));
            acc[i] = block_term(acc[i], d, 32.0 * d, ab, sum, off);
        }
    }
    acc
}

/// Q2_K (`Q3 = false`, 84-byte blocks: 16 scale/min bytes, 64 bytes of 2-bit values, f16 d and
/// dmin) or Q3_K (`Q3 = true`, 110 bytes: 32 bytes of high bits, 64 of 2-bit values, 12 of
/// scales, f16 d) weights with `N` Q8_K activation rows.
///
/// Value `128n + 32j + l` is bits `2j` of `qs[32n + l]` (plus, for Q3_K, 4 times bit `4n + j` of
/// `hmask[l]`, minus 4); every 16 values share a scale (and for Q2_K a min). The values are used
/// unsigned (Q3_K: 0..7) and the Q3_K offset `4 * d * sum(scale * activation 16-sums)` or the
/// Q2_K mins term `dmin * sum(min * 16-sums)` is applied once per block ([`block_term`]).
///
/// # Safety
/// As [`q45_k`], with Q2_K or Q3_K blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q23_k<const N: usize, const Q3: bool, const PF: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
) -> [f32; N] {
    let (block, qs) = if Q3 { (Q3K, 32) } else { (Q2K, 16) };
    let mut acc = [0f32; N];
    for b in 0..nb {
        let wb = w.add(b * block);
        if N == 1 || PF {
            prefetch_ahead(wb, block);
        }
        // 16 scales (and Q2_K's mins) as i16
        let (sc16, f, d) = if Q3 {
            let sc16 = _mm256_cvtepi8_epi16(q3k_scales_i8(wb.add(96)));
            let d = f16_at(wb.add(108));
            (sc16, 4.0 * d, d)
        } else {
            let raw = _mm_loadu_si128(wb as *const __m128i);
            let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm_set1_epi8(0x0F)));
            (sc16, f16_at(wb.add(82)), f16_at(wb.add(80)))
        };
        let hm = if Q3 { load(wb) } else { _mm256_setzero_si256() };
        let mut sumi = [_mm256_setzero_si256(); N];
        for n in 0..2 {
            let q = load(wb.add(qs + 32 * n));
            // this half's 8 scales in both 128-bit lanes, for the per-chunk shuffles
            let sch = if n == 0 {
                _mm256_permute2x128_si256(sc16, sc16, 0x00)
            } else {
                _mm256_permute2x128_si256(sc16, sc16, 0x11)
            };
            for j in 0..4 {
                let u = q23_values::<Q3>(q, hm, n, j);
                let sv = _mm256_shuffle_epi8(sch, SCALE_PAIRS[j]);
                for i in 0..N {
                    let ab = a[i].add(b * Q8K + Q8K_QS + 128 * n + 32 * j);
                    let p = _mm256_madd_epi16(sv, _mm256_maddubs_epi16(u, load(ab)));
                    sumi[i] = _mm256_add_epi32(sumi[i], p);
                }
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
            let ab = a[i].add(b * Q8K);
            let (sum, off) = hsum2_f32(sumi[i], _mm256_madd_epi16(pair, load(ab.add(Q8K_BSUMS))));
            acc[i] = block_term(acc[i], d, f, ab, sum, off);
        }
    }
    acc
}

/// Weight formats with 32-value blocks and Q8_0 activations, for [`q8_acts`].
pub const Q8_0W: u8 = 8;
/// See [`Q8_0W`].
pub const Q4_0W: u8 = 4;
/// See [`Q8_0W`].
pub const Q5_0W: u8 = 5;

/// Q8_0 (`W = Q8_0W`, 34-byte blocks), Q4_0 (`Q4_0W`, 18 bytes: f16 d + 16 bytes of nibbles,
/// value - 8) or Q5_0 (`Q5_0W`, 22 bytes: f16 d, 4 bytes of fifth bits, 16 of nibbles, value -
/// 16) weights with `N` Q8_0 activation rows (34-byte blocks), each followed at byte `scales` by
/// its `nb` block scales as f32 and at `sums` by its `nb` block sums as i32
/// ([`crate::kernels::QActs::row_with_scales`]).
///
/// Every block's integer dot product is made exact first (Q4_0/Q5_0 values unsigned, the offset
/// taken from the block sum), then block `b` is added as `fma(d_w * d_a, dot, part)` to partial
/// sum `b % 4`, and the parts are combined as `(p0 + p2) + (p1 + p3)` ([`crate::kernels::layout::combine`]): the
/// order of the packed prompt GEMM ([`super::packed`]) lane by lane, so decode, short prompts
/// and packed prompt tiles give the same f32 bit for bit. The 4 parts are one SSE register: the
/// 4 blocks' dot products, reduced together, take one conversion, one scale product and one FMA.
///
/// # Safety
/// AVX2/FMA/F16C present; `w` holds `nb` blocks and every `a[i]` `sums + 4 * nb` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_acts<const N: usize, const W: u8, const PF: bool>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
    scales: usize,
    sums: usize,
) -> [f32; N] {
    const { assert!(PARTS == 4) };
    let mut acc = [_mm_setzero_ps(); N];
    let whole = nb / 4 * 4;
    for b in (0..whole).step_by(4) {
        q8_group::<N, W, PF, 4>(w, a, b, scales, sums, &mut acc);
    }
    match nb - whole {
        1 => q8_group::<N, W, PF, 1>(w, a, whole, scales, sums, &mut acc),
        2 => q8_group::<N, W, PF, 2>(w, a, whole, scales, sums, &mut acc),
        3 => q8_group::<N, W, PF, 3>(w, a, whole, scales, sums, &mut acc),
        _ => {}
    }
    combine_parts(acc)
}

/// Each row's 4 parts `[p0, p1, p2, p3]` summed as `(p0 + p2) + (p1 + p3)` (the order of
/// [`crate::kernels::layout::combine`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn combine_parts<const N: usize>(acc: [__m128; N]) -> [f32; N] {
    acc.map(|v| {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    })
}

/// The f32 scales and i32 quant sums of blocks `b..b + NB` of the Q8_0 activation row at `a`
/// (scales at byte `scales`, sums at `sums`, as [`crate::kernels::QActs::row_with_scales`] holds
/// them), lanes `NB..` zero: for a row's last blocks, `d = 0` adds `+0` to those parts.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_scales_sums<const NB: usize>(
    a: *const u8,
    b: usize,
    scales: usize,
    sums: usize,
) -> (__m128, __m128i) {
    let (sc, sm) = (a.add(scales + 4 * b), a.add(sums + 4 * b));
    if NB == 4 {
        return (
            _mm_loadu_ps(sc as *const f32),
            _mm_loadu_si128(sm as *const __m128i),
        );
    }
    let (mut da, mut bs) = ([0f32; 4], [0i32; 4]);
    std::ptr::copy_nonoverlapping(sc as *const f32, da.as_mut_ptr(), NB);
    std::ptr::copy_nonoverlapping(sm as *const i32, bs.as_mut_ptr(), NB);
    (
        _mm_loadu_ps(da.as_ptr()),
        _mm_loadu_si128(bs.as_ptr() as *const __m128i),
    )
}

/// Blocks `b..b + NB` (`NB` <= 4: one group of [`q8_acts`]'s parts) into `acc`. The group's weights
/// are unpacked once and held in registers; each activation row then takes its `NB` block dots,
/// their lane totals and its scales in turn, so that few vectors are live at once (no spills,
/// whatever `N`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_group<const N: usize, const W: u8, const PF: bool, const NB: usize>(
    w: *const u8,
    a: [*const u8; N],
    b: usize,
    scales: usize,
    sums: usize,
    acc: &mut [__m128; N],
) {
    let ones = _mm256_set1_epi16(1);
    let bytes = match W {
        Q8_0W => Q8_0,
        Q4_0W => Q4_0,
        _ => Q5_0,
    };
    let shift = _mm_cvtsi32_si128(if W == Q4_0W { 3 } else { 4 });
    if N == 1 || PF {
        prefetch_ahead(w.add(b * bytes), NB * bytes);
    }
    // the NB weight scales as f16
    let mut dw = 0u64;
    // per block: the unsigned weights (Q8_0: their magnitudes) and, for Q8_0, the signs to move
    // onto the activations
    let mut xs = [_mm256_setzero_si256(); 4];
    let mut ax = [_mm256_setzero_si256(); 4];
    for j in 0..NB {
        let wb = w.add((b + j) * bytes);
        dw |= (std::ptr::read_unaligned(wb as *const u16) as u64) << (16 * j);
        match W {
            Q8_0W => {
                xs[j] = load(wb.add(2));
                ax[j] = _mm256_sign_epi8(xs[j], xs[j]);
            }
            Q4_0W => ax[j] = nibbles(wb.add(2)),
            _ => {
                let fifth = _mm256_and_si256(bits_to_bytes(wb.add(2)), _mm256_set1_epi8(0x10));
                ax[j] = _mm256_or_si256(nibbles(wb.add(6)), fifth);
            }
        }
    }
    let dw = _mm_cvtph_ps(_mm_cvtsi64_si128(dw as i64));
    for i in 0..N {
        let mut p = [_mm256_setzero_si256(); 4];
        for j in 0..NB {
            let ay = load(a[i].add((b + j) * Q8_0 + 2));
            let ay = if W == Q8_0W {
                _mm256_sign_epi8(ay, xs[j])
            } else {
                ay
            };
            p[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(ax[j], ay), ones);
        }
        let (da, bs) = q8_scales_sums::<NB>(a[i], b, scales, sums);
        let mut tot = hsum4_i32(p);
        if W != Q8_0W {
            tot = _mm_sub_epi32(tot, _mm_sll_epi32(bs, shift));
        }
        acc[i] = _mm_fmadd_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(tot), acc[i]);
    }
}

/// The lane totals of 4 vectors of 8 i32: `[sum(v[0]), sum(v[1]), sum(v[2]), sum(v[3])]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum4_i32(v: [__m256i; 4]) -> __m128i {
    let t = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1))
}
