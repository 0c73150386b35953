//! AVX2 prompt GEMM on weights repacked per tile, for the types with 32-value blocks and Q8_0
//! activations (Q4_0, Q5_0, Q8_0): 8 weight rows interleaved so that one SIMD lane is one weight
//! row. The K-quants' packed GEMMs ([`super::packed_k`]) follow the same scheme.
//!
//! The multi-row kernels of [`super::multi`] keep one weight row per register, so each
//! (block, activation row) product ends in its own int→float conversion, scale multiply, FMA and,
//! at the end, a horizontal sum. Here a tile's 8 weight rows are first rewritten ("packed") into
//! a small buffer: for each 32-value block, 8 registers of 32 bytes where 32-bit lane `i` holds 4
//! consecutive values of weight row `i`, followed by the 8 block scales as f32. A 4-byte piece of
//! an activation block broadcast to all lanes then multiplies all 8 weight rows at once, the
//! integer sums of a block stay in 16 bits across its 8 pieces, and one conversion and one FMA
//! finish the block for 8 weight rows (Q8_0, both operands signed, widens each piece instead and
//! stores the magnitudes and sign masks: see [`gemm_q8_0`]). Packing is shared by all the rows
//! of a prompt tile. The kernels are `inline(never)` so profiles name them; each call covers a
//! whole packed chunk.
//!
//! Q4_0 nibbles are used unsigned (0..15) so that `maddubs` needs no sign fix-up per product; the
//! `-8` offset is subtracted once per block as `8 * sum(activation block)`, from the sums that
//! [`crate::kernels::QActs`] stores after each Q8_0 row. 16-bit safety: one `maddubs` pair is at
//! most `2 * 15 * 128 = 3840` in magnitude, 8 of them 30720 < 32767.

#![allow(unsafe_op_in_unsafe_fn)]
// block, part and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::unpack::store_sub_block;
use crate::gguf::GgmlType;
use crate::kernels::acts::{q8_0_scales_offset, q8_0_sums_offset};
use crate::kernels::layout::{Acc, PACK_GROUP as GROUP, PACK_PAIR as PAIR, PARTS};
use crate::kernels::x86::{bits_to_bytes, f16_at};

const Q4_0_BYTES: usize = GgmlType::Q4_0.type_size();
const Q5_0_BYTES: usize = GgmlType::Q5_0.type_size();
const Q8_0_BYTES: usize = GgmlType::Q8_0.type_size();

/// Bytes of one packed Q4_0 block of [`GROUP`] rows: 8 pieces of 32 bytes, then 8 f32 scales.
pub const Q4_0_PACKED: usize = 8 * 32 + 8 * 4;

/// Bytes of one packed Q8_0 block of [`GROUP`] rows: 8 pieces of 32 magnitudes, 8 pieces of 32
/// sign masks, 8 i32 sums of the negative values' magnitudes, then 8 f32 scales.
pub const Q8_0_PACKED: usize = Q8_0_SCALES + 8 * 4;
/// Offset of the negative-magnitude sums in a packed Q8_0 block.
pub(crate) const Q8_0_NEG_SUMS: usize = 2 * 8 * 32;
/// Offset of the scales in a packed Q8_0 block.
pub(crate) const Q8_0_SCALES: usize = Q8_0_NEG_SUMS + 8 * 4;

/// Pack blocks `b0..b0 + nb` of 8 Q4_0 weight rows into `out` (`nb * Q4_0_PACKED` bytes).
///
/// # Safety
/// AVX2/FMA/F16C present; every `rows[i]` holds blocks `b0..b0 + nb`; `out` has room.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_q4_0(b0: usize, nb: usize, rows: [*const u8; GROUP], out: *mut u8) {
    let m4 = _mm256_set1_epi8(0x0F);
    for b in 0..nb {
        let blk = rows.map(|r| r.add((b0 + b) * Q4_0_BYTES));
        let vals = blk.map(|p| {
            let t = _mm_loadu_si128(p.add(2) as *const __m128i);
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), m4)
        });
        let o = out.add(b * Q4_0_PACKED);
        store_sub_block(o, 0, vals);
        let d: [f32; GROUP] = blk.map(|p| f16_at(p));
        std::ptr::copy_nonoverlapping(d.as_ptr() as *const u8, o.add(256), 32);
    }
}

/// `acc[g][r][i] += dot(row i of weight group g, activation row r)` for the [`PAIR`] groups
/// `packed[g]`, over packed Q4_0 (`Q5 = false`: values
/// 0..15, offset 8, all 8 pieces of a block in one 16-bit sum) or Q5_0 blocks (values 0..31,
/// offset 16, 4 pieces per 16-bit sum: at most `4 * 2 * 31 * 128 = 31744`): blocks `b0..b0 + nb`
/// of `N` Q8_0 activation rows of `row_nb` blocks, given by their starts, each followed by its f32
/// scales and i32 sums ([`crate::kernels::QActs::row_with_scales`]).
///
/// # Safety
/// AVX2/FMA/F16C present; each `packed[g]` holds `nb` packed blocks; each `a[r]` a whole such row.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_q45_0<const N: usize, const Q5: bool>(
    b0: usize,
    nb: usize,
    row_nb: usize,
    packed: [*const u8; PAIR],
    a: [*const u8; N],
    acc: [&mut [Acc; N]; PAIR],
) {
    let q = a.map(|p| p.add(b0 * Q8_0_BYTES));
    let scales = a.map(|p| p.add(q8_0_scales_offset(row_nb) + 4 * b0) as *const f32);
    let sums = a.map(|p| p.add(q8_0_sums_offset(row_nb) + 4 * b0) as *const i32);
    let ones = _mm256_set1_epi16(1);
    let per_sum = if Q5 { 4 } else { 8 };
    let [acc0, acc1] = acc;
    // block `b0 + b` goes to accumulator part `(b0 + b) % PARTS` (kept in `acc`, in L1: with the
    // blocks in order the activation rows stream from L2 sequentially)
    for b in 0..nb {
        let part = (b0 + b) % PARTS;
        let pb = packed.map(|p| p.add(b * Q4_0_PACKED));
        let mut i = [[_mm256_setzero_si256(); N]; PAIR];
        for c0 in (0..8).step_by(per_sum) {
            let mut s = [[_mm256_setzero_si256(); N]; PAIR];
            for c in c0..c0 + per_sum {
                let w = pb.map(|p| _mm256_loadu_si256(p.add(32 * c) as *const __m256i));
                for r in 0..N {
                    let a = q[r].add(b * Q8_0_BYTES + 2 + 4 * c) as *const i32;
                    let a = _mm256_set1_epi32(std::ptr::read_unaligned(a));
                    for g in 0..PAIR {
                        s[g][r] = _mm256_add_epi16(s[g][r], _mm256_maddubs_epi16(w[g], a));
                    }
                }
            }
            for g in 0..PAIR {
                for r in 0..N {
                    i[g][r] = _mm256_add_epi32(i[g][r], _mm256_madd_epi16(s[g][r], ones));
                }
            }
        }
        let dw = pb.map(|p| _mm256_loadu_ps(p.add(256) as *const f32));
        for r in 0..N {
            let sum = *sums[r].add(b);
            let off = _mm256_set1_epi32(if Q5 { sum << 4 } else { sum << 3 });
            let da = _mm256_broadcast_ss(&*scales[r].add(b));
            for (g, acc) in [&mut *acc0, &mut *acc1].into_iter().enumerate() {
                let i = _mm256_sub_epi32(i[g][r], off);
                let d = _mm256_mul_ps(dw[g], da);
                let v = acc[r][part].as_mut_ptr();
                _mm256_storeu_ps(
                    v,
                    _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(i), _mm256_loadu_ps(v)),
                );
            }
        }
    }
}

/// Pack blocks `b0..b0 + nb` of 8 Q5_0 weight rows into `out` (`nb * Q4_0_PACKED` bytes: the Q4_0
/// layout with values 0..31).
///
/// # Safety
/// AVX2/FMA/F16C present; every `rows[i]` holds blocks `b0..b0 + nb`; `out` has room.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_q5_0(b0: usize, nb: usize, rows: [*const u8; GROUP], out: *mut u8) {
    let m4 = _mm256_set1_epi8(0x0F);
    let fifth = _mm256_set1_epi8(0x10);
    for b in 0..nb {
        let blk = rows.map(|r| r.add((b0 + b) * Q5_0_BYTES));
        let vals = blk.map(|p| {
            let t = _mm_loadu_si128(p.add(6) as *const __m128i);
            let lo = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), m4);
            _mm256_or_si256(lo, _mm256_and_si256(bits_to_bytes(p.add(2)), fifth))
        });
        let o = out.add(b * Q4_0_PACKED);
        store_sub_block(o, 0, vals);
        let d: [f32; GROUP] = blk.map(|p| f16_at(p));
        std::ptr::copy_nonoverlapping(d.as_ptr() as *const u8, o.add(256), 32);
    }
}

/// Pack blocks `b0..b0 + nb` of 8 Q8_0 weight rows into `out` (`nb * Q8_0_PACKED` bytes): the
/// magnitudes `|w|` (8 pieces), the sign masks `w < 0 ? 0xFF : 0` (8 pieces), each row's
/// `sum(|w| for w < 0)` over the block as i32, then the 8 scales as f32.
///
/// # Safety
/// AVX2/FMA/F16C present; every `rows[i]` holds blocks `b0..b0 + nb`; `out` has room.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_q8_0(b0: usize, nb: usize, rows: [*const u8; GROUP], out: *mut u8) {
    let zero = _mm256_setzero_si256();
    let ones8 = _mm256_set1_epi8(1);
    for b in 0..nb {
        let blk = rows.map(|r| r.add((b0 + b) * Q8_0_BYTES));
        let vals = blk.map(|p| _mm256_loadu_si256(p.add(2) as *const __m256i));
        let o = out.add(b * Q8_0_PACKED);
        store_sub_block(o, 0, vals.map(|v| _mm256_sign_epi8(v, v)));
        store_sub_block(o, 1, vals.map(|v| _mm256_cmpgt_epi8(zero, v)));
        // lane i: row i's sum of |w| over its negative values (pairs at most 2 * 128, 8 pieces
        // 4096: 16 bits hold the sum before one widening)
        let mut neg = zero;
        for c in 0..8 {
            let aw = _mm256_loadu_si256(o.add(32 * c) as *const __m256i);
            let m = _mm256_loadu_si256(o.add(256 + 32 * c) as *const __m256i);
            neg = _mm256_add_epi16(neg, _mm256_maddubs_epi16(_mm256_and_si256(aw, m), ones8));
        }
        let neg = _mm256_madd_epi16(neg, _mm256_set1_epi16(1));
        _mm256_storeu_si256(o.add(Q8_0_NEG_SUMS) as *mut __m256i, neg);
        let d: [f32; GROUP] = blk.map(|p| f16_at(p));
        std::ptr::copy_nonoverlapping(d.as_ptr() as *const u8, o.add(Q8_0_SCALES), 32);
    }
}

/// `acc[r][i] += dot(weight row i, activation row r)` over packed Q8_0 blocks `b0..b0 + nb`, for
/// `N` Q8_0 activation rows of `row_nb` blocks given by their starts, each followed by its f32
/// scales ([`crate::kernels::QActs::row_with_scales`]).
///
/// Both operands are signed; `maddubs` takes one unsigned. Each piece multiplies the stored `|w|`
/// by `a ^ m` (`m` the stored sign mask): where `w < 0` that is `!a = -a - 1`, so the product is
/// `w * a - |w|`, and the block's exact integer sum is the `maddubs` sums plus the stored
/// `sum(|w| for w < 0)`, which starts the accumulator. The fix-up is an `xor` rather than the
/// usual `sign(a, w)` because x86 cores issue `xor` on more vector ports. A pair sum (up to
/// `2 * 128 * 128` in magnitude) leaves no room to add pieces in 16 bits: each is widened by
/// `madd`.
///
/// # Safety
/// AVX2/FMA/F16C present; `packed` holds `nb` packed blocks; each `a[r]` a whole such row.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_q8_0<const N: usize>(
    b0: usize,
    nb: usize,
    row_nb: usize,
    packed: *const u8,
    a: [*const u8; N],
    acc: &mut [Acc; N],
) {
    let q = a.map(|p| p.add(b0 * Q8_0_BYTES));
    let scales = a.map(|p| p.add(q8_0_scales_offset(row_nb) + 4 * b0) as *const f32);
    let ones = _mm256_set1_epi16(1);
    // block `b0 + b` goes to accumulator part `(b0 + b) % PARTS` (kept in `acc`, in L1: with the
    // blocks in order the activation rows stream from L2 sequentially)
    for b in 0..nb {
        let part = (b0 + b) % PARTS;
        let pb = packed.add(b * Q8_0_PACKED);
        let mut s = [_mm256_loadu_si256(pb.add(Q8_0_NEG_SUMS) as *const __m256i); N];
        for c in 0..8 {
            let aw = _mm256_loadu_si256(pb.add(32 * c) as *const __m256i);
            let m = _mm256_loadu_si256(pb.add(256 + 32 * c) as *const __m256i);
            for r in 0..N {
                let x =
                    std::ptr::read_unaligned(q[r].add(b * Q8_0_BYTES + 2 + 4 * c) as *const i32);
                let p = _mm256_maddubs_epi16(aw, _mm256_xor_si256(_mm256_set1_epi32(x), m));
                s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(p, ones));
            }
        }
        let dw = _mm256_loadu_ps(pb.add(Q8_0_SCALES) as *const f32);
        for r in 0..N {
            let d = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*scales[r].add(b)));
            let v = acc[r][part].as_mut_ptr();
            _mm256_storeu_ps(
                v,
                _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s[r]), _mm256_loadu_ps(v)),
            );
        }
    }
}
