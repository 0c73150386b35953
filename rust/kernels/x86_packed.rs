//! AVX2 prompt GEMM on weights repacked per tile: 8 weight rows interleaved so that one SIMD lane
//! is one weight row (Q4_0, Q5_0 and Q8_0 weights with Q8_0 activations; Q2_K,
//! Q3_K, Q4_K, Q5_K and Q6_K with Q8_K).
//!
//! The multi-row kernels of [`super::x86_multi`] keep one weight row per register, so each
//! (block, activation row) product ends in its own int→float conversion, scale multiply, FMA and,
//! at the end, a horizontal sum. Here a tile's 8 weight rows are first rewritten ("packed") into
//! a small buffer: for each 32-value block, 8 registers of 32 bytes where 32-bit lane `i` holds 4
//! consecutive values of weight row `i`, followed by the 8 block scales as f32. A 4-byte piece of
//! an activation block broadcast to all lanes then multiplies all 8 weight rows at once, the
//! integer sums of a block stay in 16 bits across its 8 pieces, and one conversion and one FMA
//! finish the block for 8 weight rows (Q8_0, both operands signed, widens each piece instead and
//! stores the magnitudes and sign masks: see [`gemm_q8_0`]). Packing is shared by all the rows
//! of a prompt tile.
//!
//! Q4_K is packed the same way per 32-value sub-block, with each sub-block's scales as a vector of
//! 8 lanes (a `madd` widens the 16-bit sums and applies them) and the mins term from the Q8_K
//! activation sums; Q5_K the same with values 0..31. The K-quants with a scale per 16 values
//! (Q2_K, Q3_K, Q6_K) share one layout and kernel ([`K16_PACKED`]): values unsigned, and their
//! offset (Q3_K, Q6_K) or mins (Q2_K) term from the Q8_K 16-value sums. The kernels are `inline(never)` so profiles name them; each call covers a
//! whole packed chunk.
//!
//! Q4_0 nibbles are used unsigned (0..15) so that `maddubs` needs no sign fix-up per product; the
//! `-8` offset is subtracted once per block as `8 * sum(activation block)`, from the sums that
//! [`super::QActs`] stores after each Q8_0 row. 16-bit safety: one `maddubs` pair is at most
//! `2 * 15 * 128 = 3840` in magnitude, 8 of them 30720 < 32767.

#![allow(unsafe_op_in_unsafe_fn)]
// block, part and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::x86::{bits_to_bytes, f16_at};
use super::x86_multi::{q23_values, q3k_scales, q4k_scales_mins, Q2K, Q3K, Q4K, Q5K, Q6K, Q8K};
use super::{q8_0_scales_offset, q8_0_sums_offset, Acc, PARTS};

/// Weight rows per packed group (one per 32-bit lane of a 256-bit register).
pub const GROUP: usize = 8;
/// Packed groups per call of the Q4_0/Q5_0 GEMM kernel: it runs two groups per pass, so one
/// broadcast of an activation piece (an operation on the vector pipes on Zen 3, beside each
/// `maddubs` and 16-bit add) serves 16 weight rows. On the 70B slice's 4096 x 8192 Q4_0 matrix,
/// 512 rows, one thread: 1.06 -> 0.88 TSC cycles per 32 multiply-adds. (The Q8_0 kernel, with 4
/// vector operations per piece and 4 weight vectors live per pass, measured 6% slower this way.)
pub const PAIR: usize = 2;
/// Bytes of one packed Q4_0 block of [`GROUP`] rows: 8 pieces of 32 bytes, then 8 f32 scales.
pub const Q4_0_PACKED: usize = 8 * 32 + 8 * 4;

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

/// Bytes of one packed Q8_0 block of [`GROUP`] rows: 8 pieces of 32 magnitudes, 8 pieces of 32
/// sign masks, 8 i32 sums of the negative values' magnitudes, then 8 f32 scales.
pub const Q8_0_PACKED: usize = Q8_0_SCALES + 8 * 4;
/// Offset of the negative-magnitude sums in a packed Q8_0 block.
const Q8_0_NEG_SUMS: usize = 2 * 8 * 32;
/// Offset of the scales in a packed Q8_0 block.
const Q8_0_SCALES: usize = Q8_0_NEG_SUMS + 8 * 4;

const Q4_0_BYTES: usize = 18;
const Q5_0_BYTES: usize = 22;
const Q8_0_BYTES: usize = 34;

/// Transpose 8 registers of 8 32-bit lanes: lane `c` of input `i` becomes lane `i` of output `c`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose8x32(r: [__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    // u0: rows 0..4 lanes {0 | 4}; u1: {1 | 5}; u2: {2 | 6}; u3: {3 | 7}; u4..u7 rows 4..8
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256(u0, u4, 0x20),
        _mm256_permute2x128_si256(u1, u5, 0x20),
        _mm256_permute2x128_si256(u2, u6, 0x20),
        _mm256_permute2x128_si256(u3, u7, 0x20),
        _mm256_permute2x128_si256(u0, u4, 0x31),
        _mm256_permute2x128_si256(u1, u5, 0x31),
        _mm256_permute2x128_si256(u2, u6, 0x31),
        _mm256_permute2x128_si256(u3, u7, 0x31),
    ]
}

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
/// scales and i32 sums ([`super::QActs::row_with_scales`]).
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
                        let x = ab[r].add(4 + 32 * sb + 4 * c) as *const i32;
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
            let bs = ab[r].add(260);
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

/// Transpose 8 rows' 32 values of sub-block `sb` (one register per row) into its 8 pieces.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_sub_block(o: *mut u8, sb: usize, vals: [__m256i; GROUP]) {
    for (c, piece) in transpose8x32(vals).into_iter().enumerate() {
        _mm256_storeu_si256(o.add(256 * sb + 32 * c) as *mut __m256i, piece);
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
                        let x = std::ptr::read_unaligned(ab[r].add(4 + 4 * piece) as *const i32);
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
            let bs = _mm256_loadu_si256(ab[r].add(260) as *const __m256i);
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
/// scales ([`super::QActs::row_with_scales`]).
///
/// Both operands are signed; `maddubs` takes one unsigned. Each piece multiplies the stored `|w|`
/// by `a ^ m` (`m` the stored sign mask): where `w < 0` that is `!a = -a - 1`, so the product is
/// `w * a - |w|`, and the block's exact integer sum is the `maddubs` sums plus the stored
/// `sum(|w| for w < 0)`, which starts the accumulator. On this Zen 3 the `xor` runs on all four
/// vector pipes (4 per cycle measured alone), `sign(a, w)` on two (2 per cycle). A pair sum (up to
/// `2 * 128 * 128` in magnitude) leaves no room to add pieces in 16 bits: each is widened by
/// `madd`. (Splitting `w + 128` into nibbles instead, two `maddubs` and no `madd` per piece,
/// measured 10% slower on this Zen 3.)
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
