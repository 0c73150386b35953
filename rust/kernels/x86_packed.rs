//! AVX2 prompt GEMM on weights repacked per tile: 8 weight rows interleaved so that one SIMD lane
//! is one weight row (Q4_0 weights, Q8_0 activations).
//!
//! The multi-row kernels of [`super::x86_multi`] keep one weight row per register, so each
//! (block, activation row) product ends in its own int→float conversion, scale multiply, FMA and,
//! at the end, a horizontal sum. Here a tile's 8 weight rows are first rewritten ("packed") into
//! a small buffer: for each 32-value block, 8 registers of 32 bytes where 32-bit lane `i` holds 4
//! consecutive values of weight row `i`, followed by the 8 block scales as f32. A 4-byte piece of
//! an activation block broadcast to all lanes then multiplies all 8 weight rows at once, the
//! integer sums of a block stay in 16 bits across its 8 pieces, and one conversion and one FMA
//! finish the block for 8 weight rows. Packing costs about as much as one activation row's
//! products and is shared by all the rows of the prompt tile.
//!
//! Q4_0 nibbles are used unsigned (0..15) so that `maddubs` needs no sign fix-up per product; the
//! `-8` offset is subtracted once per block as `8 * sum(activation block)`, from the sums that
//! [`super::QActs`] stores after each Q8_0 row. 16-bit safety: one `maddubs` pair is at most
//! `2 * 15 * 128 = 3840` in magnitude, 8 of them 30720 < 32767.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::x86::f16_at;

/// Weight rows per packed group (one per 32-bit lane of a 256-bit register).
pub const GROUP: usize = 8;
/// Bytes of one packed Q4_0 block of [`GROUP`] rows: 8 pieces of 32 bytes, then 8 f32 scales.
pub const Q4_0_PACKED: usize = 8 * 32 + 8 * 4;

const Q4_0_BYTES: usize = 18;
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
        for (c, v) in transpose8x32(vals).into_iter().enumerate() {
            _mm256_storeu_si256(o.add(32 * c) as *mut __m256i, v);
        }
        let d: [f32; GROUP] = blk.map(|p| f16_at(p));
        std::ptr::copy_nonoverlapping(d.as_ptr() as *const u8, o.add(256), 32);
    }
}

/// `acc[r][i] += dot(weight row i, activation row r)` over `nb` packed Q4_0 blocks, for `N`
/// activation rows given as pointers to their first Q8_0 block, f32 scale and i32 sum.
///
/// # Safety
/// AVX2/FMA/F16C present; `packed` holds `nb` packed blocks; each `q[r]` `nb` Q8_0 blocks, each
/// `scales[r]` and `sums[r]` `nb` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_q4_0<const N: usize>(
    nb: usize,
    packed: *const u8,
    q: [*const u8; N],
    scales: [*const f32; N],
    sums: [*const i32; N],
    acc: &mut [[f32; GROUP]; N],
) {
    let ones = _mm256_set1_epi16(1);
    let mut v = [_mm256_setzero_ps(); N];
    for r in 0..N {
        v[r] = _mm256_loadu_ps(acc[r].as_ptr());
    }
    for b in 0..nb {
        let pb = packed.add(b * Q4_0_PACKED);
        let mut s = [_mm256_setzero_si256(); N];
        for c in 0..8 {
            let w = _mm256_loadu_si256(pb.add(32 * c) as *const __m256i);
            for r in 0..N {
                let a =
                    std::ptr::read_unaligned(q[r].add(b * Q8_0_BYTES + 2 + 4 * c) as *const i32);
                s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(w, _mm256_set1_epi32(a)));
            }
        }
        let dw = _mm256_loadu_ps(pb.add(256) as *const f32);
        for r in 0..N {
            let off = _mm256_set1_epi32(*sums[r].add(b) << 3);
            let i = _mm256_sub_epi32(_mm256_madd_epi16(s[r], ones), off);
            let d = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*scales[r].add(b)));
            v[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(i), v[r]);
        }
    }
    for r in 0..N {
        _mm256_storeu_ps(acc[r].as_mut_ptr(), v[r]);
    }
}
