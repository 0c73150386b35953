//! AVX2 prompt GEMM on K-quant weights repacked per tile (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K with
//! Q8_K activations), the scheme of [`super::packed_q`]: 8 weight rows interleaved so that one
//! SIMD lane is one weight row, 4-byte activation pieces broadcast to all lanes.
//!
//! Q4_K is packed per 32-value sub-block, with each sub-block's scales as a vector of 8 lanes (a
//! `madd` widens the 16-bit sums and applies them) and the mins term from the Q8_K activation
//! sums; Q5_K the same with values 0..31. The K-quants with a scale per 16 values (Q2_K, Q3_K,
//! Q6_K) share one layout and kernel ([`K16_PACKED`]): values unsigned, and their offset (Q3_K,
//! Q6_K) or mins (Q2_K) term from the Q8_K 16-value sums. The kernels are `inline(never)` so
//! profiles name them; each call covers a whole packed chunk.

#![allow(unsafe_op_in_unsafe_fn)]
// block, part and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::unpack::{q23_values, q3k_scales, q4k_scales_mins, store_sub_block, transpose8x32};
use crate::gguf::GgmlType;
use crate::kernels::acts::{Q8K_BSUMS, Q8K_QS};
use crate::kernels::layout::{Acc, PACK_GROUP as GROUP};
use crate::kernels::x86::f16_at;

const Q4K: usize = GgmlType::Q4_K.type_size();
const Q5K: usize = GgmlType::Q5_K.type_size();
const Q6K: usize = GgmlType::Q6_K.type_size();
const Q2K: usize = GgmlType::Q2_K.type_size();
const Q3K: usize = GgmlType::Q3_K.type_size();
const Q8K: usize = GgmlType::Q8_K.type_size();

/// Bytes of one packed Q4_K super-block of [`GROUP`] rows: 8 sub-blocks of 8 pieces of 32 bytes,
/// 8 sub-block scale vectors (16 i16: both halves of lane `i` hold row `i`'s scale), 4 min-pair
/// vectors (lane `i` = row `i`'s mins of sub-blocks `2p`, `2p + 1` as i16), 8 f32 `d`, 8 f32 `dmin`.
pub const Q4_K_PACKED: usize = 8 * 256 + 8 * 32 + 4 * 32 + 32 + 32;

/// Bytes of one packed super-block of [`GROUP`] rows of the K-quants with a scale per 16 values
/// (Q2_K, Q3_K, Q6_K): 8 sub-blocks of 8 pieces of 32 bytes (values unsigned: 0..3, 0..7, 0..63),
/// 16 scale vectors (both halves of lane `i` hold row `i`'s scale), 8 pair vectors (lane `i` =
/// row `i`'s `2p`, `2p + 1` entries of what multiplies the activation 16-sums: the scales for the
/// Q3_K/Q6_K offsets 4 and 32, the mins for Q2_K), 8 f32 `d` and 8 f32 of that term's factor
/// (`4d`, `32d`, `dmin`).
pub const K16_PACKED: usize = 8 * 256 + 16 * 32 + 8 * 32 + 32 + 32;

/// Pack super-blocks `b0..b0 + nb` of 8 Q4_K (`Q5 = false`) or Q5_K (`Q5 = true`: 32 bytes of
/// fifth bits before the nibbles) weight rows into `out` (`nb * Q4_K_PACKED` bytes; the packed
/// layouts are the same, with values 0..31 for Q5_K).
///
/// # Safety
/// AVX2/FMA/F16C present; every `rows[i]` holds super-blocks `b0..b0 + nb`; `out` has room.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_q45_k<const Q5: bool>(
    b0: usize,
    nb: usize,
    rows: [*const u8; GROUP],
    out: *mut u8,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let (block, qs) = if Q5 { (Q5K, 48) } else { (Q4K, 16) };
    for b in 0..nb {
        let blk = rows.map(|r| r.add((b0 + b) * block));
        let o = out.add(b * Q4_K_PACKED);
        // 32 bytes of nibbles hold sub-blocks 2j (low nibbles) and 2j + 1 (high); for Q5_K bit 2j
        // of qh[l] is the fifth bit of value l of the low one, bit 2j + 1 of the high one
        for j in 0..4 {
            let bits = blk.map(|p| _mm256_loadu_si256(p.add(qs + 32 * j) as *const __m256i));
            let mut lo = bits.map(|x| _mm256_and_si256(x, m4));
            let mut hi = bits.map(|x| _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));
            if Q5 {
                for i in 0..GROUP {
                    let qh = _mm256_loadu_si256(blk[i].add(16) as *const __m256i);
                    let fifth = |bit: i32| {
                        let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(bit));
                        _mm256_slli_epi16(_mm256_and_si256(h, one), 4)
                    };
                    lo[i] = _mm256_or_si256(lo[i], fifth(2 * j as i32));
                    hi[i] = _mm256_or_si256(hi[i], fifth(2 * j as i32 + 1));
                }
            }
            for (sb, v) in [(2 * j, lo), (2 * j + 1, hi)] {
                for (c, piece) in transpose8x32(v).into_iter().enumerate() {
                    _mm256_storeu_si256(o.add(256 * sb + 32 * c) as *mut __m256i, piece);
                }
            }
        }
        let sm = blk.map(|p| q4k_scales_mins(p.add(4)));
        let sc = o.add(8 * 256) as *mut i16;
        let mn = o.add(8 * 256 + 8 * 32) as *mut i16;
        for (i, sm) in sm.iter().enumerate() {
            for sb in 0..8 {
                *sc.add(16 * sb + 2 * i) = sm[sb] as i16;
                *sc.add(16 * sb + 2 * i + 1) = sm[sb] as i16;
                *mn.add(16 * (sb / 2) + 2 * i + sb % 2) = sm[8 + sb] as i16;
            }
        }
        let d = o.add(8 * 256 + 8 * 32 + 4 * 32) as *mut f32;
        for (i, p) in blk.iter().enumerate() {
            *d.add(i) = f16_at(*p);
            *d.add(8 + i) = f16_at(p.add(2));
        }
    }
}

/// `acc[r][i] += dot(weight row i, activation row r)` over packed Q4_K (`Q5 = false`) or Q5_K
/// super-blocks `b0..b0 + nb`, for `N` Q8_K activation rows given by their starts.
///
/// Per sub-block of 32 values the pieces' `maddubs` sums stay in 16 bits, all 8 pieces for Q4_K
/// (at most `8 * 2 * 15 * 128 = 30720`), 4 at a time for Q5_K (`4 * 2 * 31 * 128 = 31744`),
/// then a `madd` with the scale vector widens them; the mins term is 4 `madd`s of the min pairs
/// with the activation's 32-value sums (from the Q8_K 16-sums).
///
/// # Safety
/// AVX2/FMA/F16C present; `packed` holds `nb` packed super-blocks; each `a[r]` `b0 + nb` Q8_K
/// blocks.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_q45_k<const N: usize, const Q5: bool>(
    b0: usize,
    nb: usize,
    _row_nb: usize,
    packed: *const u8,
    a: [*const u8; N],
    acc: &mut [Acc; N],
) {
    let a = a.map(|p| p.add(b0 * Q8K));
    let mut v = [_mm256_setzero_ps(); N];
    for r in 0..N {
        v[r] = _mm256_loadu_ps(acc[r][0].as_ptr());
    }
    for b in 0..nb {
        let pb = packed.add(b * Q4_K_PACKED);
        let ab = a.map(|p| p.add(b * Q8K));
        let mut isum = [_mm256_setzero_si256(); N];
        let per_sum = if Q5 { 4 } else { 8 };
        for sb in 0..8 {
            let scv = _mm256_loadu_si256(pb.add(8 * 256 + 32 * sb) as *const __m256i);
            for c0 in (0..8).step_by(per_sum) {
                let mut s = [_mm256_setzero_si256(); N];
                for c in c0..c0 + per_sum {
                    let w = _mm256_loadu_si256(pb.add(256 * sb + 32 * c) as *const __m256i);
                    for r in 0..N {
                        let x = ab[r].add(Q8K_QS + 32 * sb + 4 * c) as *const i32;
                        let x = _mm256_set1_epi32(std::ptr::read_unaligned(x));
                        s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(w, x));
                    }
                }
                for r in 0..N {
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(s[r], scv));
                }
            }
        }
        let mins = pb.add(8 * 256 + 8 * 32);
        let dv = _mm256_loadu_ps(pb.add(8 * 256 + 8 * 32 + 4 * 32) as *const f32);
        let dminv = _mm256_loadu_ps(pb.add(8 * 256 + 8 * 32 + 4 * 32 + 32) as *const f32);
        for r in 0..N {
            // 32-value sums of the activation block as 8 i16 (each at most 32 * 128)
            let bs = ab[r].add(Q8K_BSUMS);
            let h = _mm_hadd_epi16(
                _mm_loadu_si128(bs as *const __m128i),
                _mm_loadu_si128(bs.add(16) as *const __m128i),
            );
            let h = _mm256_zextsi128_si256(h);
            let mut msum = _mm256_setzero_si256();
            for p in 0..4 {
                let pair = _mm256_permutevar8x32_epi32(h, _mm256_set1_epi32(p as i32));
                let mv = _mm256_loadu_si256(mins.add(32 * p) as *const __m256i);
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mv, pair));
            }
            let da = _mm256_broadcast_ss(&*(ab[r] as *const f32));
            v[r] = _mm256_fmadd_ps(_mm256_mul_ps(dv, da), _mm256_cvtepi32_ps(isum[r]), v[r]);
            v[r] = _mm256_fnmadd_ps(_mm256_mul_ps(dminv, da), _mm256_cvtepi32_ps(msum), v[r]);
        }
    }
    for r in 0..N {
        _mm256_storeu_ps(acc[r][0].as_mut_ptr(), v[r]);
    }
}

/// Write the scale and pair vectors, `d` and the pair term's factor of one [`K16_PACKED`] block.
#[inline]
unsafe fn store_k16_tail(
    o: *mut u8,
    scales: &[[i16; 16]; GROUP],
    pairs: &[[i16; 16]; GROUP],
    d: [f32; GROUP],
    f: [f32; GROUP],
) {
    let sc = o.add(8 * 256) as *mut i16;
    let pv = o.add(8 * 256 + 16 * 32) as *mut i16;
    for i in 0..GROUP {
        for g in 0..16 {
            *sc.add(16 * g + 2 * i) = scales[i][g];
            *sc.add(16 * g + 2 * i + 1) = scales[i][g];
            *pv.add(16 * (g / 2) + 2 * i + g % 2) = pairs[i][g];
        }
    }
    let df = o.add(8 * 256 + 16 * 32 + 8 * 32) as *mut f32;
    std::ptr::copy_nonoverlapping(d.as_ptr(), df, GROUP);
    std::ptr::copy_nonoverlapping(f.as_ptr(), df.add(GROUP), GROUP);
}

/// Pack super-blocks `b0..b0 + nb` of 8 Q6_K weight rows into `out` (`nb * K16_PACKED` bytes).
///
/// # Safety
/// AVX2/FMA/F16C present; every `rows[i]` holds super-blocks `b0..b0 + nb`; `out` has room.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_q6_k(b0: usize, nb: usize, rows: [*const u8; GROUP], out: *mut u8) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x03);
    for b in 0..nb {
        let blk = rows.map(|r| r.add((b0 + b) * Q6K));
        let o = out.add(b * K16_PACKED);
        // ggml's layout: per 128-value half `n`, 64 bytes of low nibbles (values l and l + 64 in
        // the low/high nibble of byte l, l + 32 and l + 96 in byte l + 32) and 32 bytes of high
        // 2-bit pairs (value l + 32q's pair at bits 2q of byte l); sub-block 4n + q is values
        // 128n + 32q + 32
        for n in 0..2 {
            for q in 0..4 {
                let vals = blk.map(|p| {
                    let lo = _mm256_loadu_si256(p.add(64 * n + 32 * (q & 1)) as *const __m256i);
                    let lo = if q < 2 { lo } else { _mm256_srli_epi16(lo, 4) };
                    let hi = _mm256_loadu_si256(p.add(128 + 32 * n) as *const __m256i);
                    let hi = _mm256_srl_epi16(hi, _mm_cvtsi32_si128(2 * q as i32));
                    let hi = _mm256_and_si256(hi, m2);
                    _mm256_or_si256(_mm256_and_si256(lo, m4), _mm256_slli_epi16(hi, 4))
                });
                store_sub_block(o, 4 * n + q, vals);
            }
        }
        let scales = blk.map(|p| std::array::from_fn(|g| *p.add(192 + g) as i8 as i16));
        let d = blk.map(|p| f16_at(p.add(208)));
        store_k16_tail(o, &scales, &scales, d, d.map(|d| 32.0 * d));
    }
}

/// Pack super-blocks `b0..b0 + nb` of 8 Q2_K (`Q3 = false`) or Q3_K weight rows into `out`
/// (`nb * K16_PACKED` bytes): values unsigned as [`q23_values`] gives them; per 16 values a scale
/// and, for Q2_K, a min (`d * scale * q - dmin * min`), for Q3_K a signed 6-bit scale with the
/// offset 4 applied as `4d * scale` per 16-value activation sum.
///
/// # Safety
/// AVX2/FMA/F16C present; every `rows[i]` holds super-blocks `b0..b0 + nb`; `out` has room.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pack_q23_k<const Q3: bool>(
    b0: usize,
    nb: usize,
    rows: [*const u8; GROUP],
    out: *mut u8,
) {
    let (block, qs) = if Q3 { (Q3K, 32) } else { (Q2K, 16) };
    for b in 0..nb {
        let blk = rows.map(|r| r.add((b0 + b) * block));
        let o = out.add(b * K16_PACKED);
        for n in 0..2 {
            for j in 0..4 {
                let vals = blk.map(|p| {
                    let q = _mm256_loadu_si256(p.add(qs + 32 * n) as *const __m256i);
                    let hm = _mm256_loadu_si256(p as *const __m256i); // Q3_K only
                    q23_values::<Q3>(q, hm, n, j)
                });
                store_sub_block(o, 4 * n + j, vals);
            }
        }
        if Q3 {
            let scales = blk.map(|p| q3k_scales(p.add(96)).map(i16::from));
            let d = blk.map(|p| f16_at(p.add(108)));
            store_k16_tail(o, &scales, &scales, d, d.map(|d| 4.0 * d));
        } else {
            let scales = blk.map(|p| std::array::from_fn(|g| (*p.add(g) & 15) as i16));
            let mins = blk.map(|p| std::array::from_fn(|g| (*p.add(g) >> 4) as i16));
            let d = blk.map(|p| f16_at(p.add(80)));
            let dmin = blk.map(|p| f16_at(p.add(82)));
            store_k16_tail(o, &scales, &mins, d, dmin);
        }
    }
}

/// `acc[r][i] += dot(weight row i, activation row r)` over packed [`K16_PACKED`] super-blocks
/// `b0..b0 + nb` (Q2_K, Q3_K or Q6_K), for `N` Q8_K activation rows given by their starts:
/// `d * da * sum(scale * q * a) - f * da * sum(pair * activation 16-sum)`.
///
/// `PER_SUM` pieces' `maddubs` sums stay in 16 bits before a `madd` with the 16-value scale vector:
/// 2 for Q6_K (at most `2 * 2 * 63 * 128 = 32256`), 4 for Q2_K/Q3_K (`4 * 2 * 7 * 128`).
///
/// # Safety
/// AVX2/FMA/F16C present; `packed` holds `nb` packed super-blocks; each `a[r]` `b0 + nb` Q8_K
/// blocks.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_k16<const N: usize, const PER_SUM: usize>(
    b0: usize,
    nb: usize,
    _row_nb: usize,
    packed: *const u8,
    a: [*const u8; N],
    acc: &mut [Acc; N],
) {
    let a = a.map(|p| p.add(b0 * Q8K));
    let mut v = [_mm256_setzero_ps(); N];
    for r in 0..N {
        v[r] = _mm256_loadu_ps(acc[r][0].as_ptr());
    }
    for b in 0..nb {
        let pb = packed.add(b * K16_PACKED);
        let ab = a.map(|p| p.add(b * Q8K));
        let mut isum = [_mm256_setzero_si256(); N];
        for g in 0..16 {
            let scv = _mm256_loadu_si256(pb.add(8 * 256 + 32 * g) as *const __m256i);
            for c0 in (0..4).step_by(PER_SUM) {
                let mut s = [_mm256_setzero_si256(); N];
                for c in c0..c0 + PER_SUM {
                    let piece = 4 * g + c;
                    let w = _mm256_loadu_si256(pb.add(32 * piece) as *const __m256i);
                    for r in 0..N {
                        let x =
                            std::ptr::read_unaligned(ab[r].add(Q8K_QS + 4 * piece) as *const i32);
                        s[r] =
                            _mm256_add_epi16(s[r], _mm256_maddubs_epi16(w, _mm256_set1_epi32(x)));
                    }
                }
                for r in 0..N {
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(s[r], scv));
                }
            }
        }
        let pairs = pb.add(8 * 256 + 16 * 32);
        let dv = _mm256_loadu_ps(pb.add(8 * 256 + 16 * 32 + 8 * 32) as *const f32);
        let fv = _mm256_loadu_ps(pb.add(8 * 256 + 16 * 32 + 8 * 32 + 32) as *const f32);
        for r in 0..N {
            let bs = _mm256_loadu_si256(ab[r].add(Q8K_BSUMS) as *const __m256i);
            let mut off = _mm256_setzero_si256();
            for p in 0..8 {
                let pair = _mm256_permutevar8x32_epi32(bs, _mm256_set1_epi32(p as i32));
                let sv = _mm256_loadu_si256(pairs.add(32 * p) as *const __m256i);
                off = _mm256_add_epi32(off, _mm256_madd_epi16(sv, pair));
            }
            let da = _mm256_broadcast_ss(&*(ab[r] as *const f32));
            v[r] = _mm256_fmadd_ps(_mm256_mul_ps(dv, da), _mm256_cvtepi32_ps(isum[r]), v[r]);
            v[r] = _mm256_fnmadd_ps(_mm256_mul_ps(fv, da), _mm256_cvtepi32_ps(off), v[r]);
        }
    }
    for r in 0..N {
        _mm256_storeu_ps(acc[r][0].as_mut_ptr(), v[r]);
    }
}
