//! What the multi-row and the packed AVX2 kernels share: decoding of ggml block fields (the
//! packed 6-bit scales of Q4_K/Q5_K and Q3_K, the 2- and 3-bit values of Q2_K/Q3_K), and the
//! transposition that packs 8 weight rows into the 8 lanes of a register.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::kernels::layout::PACK_GROUP as GROUP;

/// Q4_K's 12 bytes of 6-bit scales and mins at `p` as 8 scale bytes followed by 8 min bytes.
///
/// # Safety
/// `p` points to 12 readable bytes (a block's scales; no alignment needed).
#[inline]
pub(crate) unsafe fn q4k_scales_mins(p: *const u8) -> [u8; 16] {
    let b = std::ptr::read_unaligned(p as *const [u8; 12]);
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

/// Q3_K's 16 6-bit scales (ggml packs them in 12 bytes: low nibbles in bytes 0..8, the high
/// 2 bits in bytes 8..12) at `p`, plus 32, as 4 little-endian words of 4 scales.
///
/// # Safety
/// As [`q4k_scales_mins`].
#[inline]
unsafe fn q3k_scale_words(p: *const u8) -> [u32; 4] {
    let raw = std::ptr::read_unaligned(p as *const [u8; 12]);
    let u =
        |i: usize| u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let (a0, a1, t) = (u(0), u(1), u(2));
    [
        (a0 & K2) | ((t & K1) << 4),
        (a1 & K2) | (((t >> 2) & K1) << 4),
        ((a0 >> 4) & K2) | (((t >> 4) & K1) << 4),
        ((a1 >> 4) & K2) | (((t >> 6) & K1) << 4),
    ]
}

/// Q3_K's 16 scales (see [`q3k_scale_words`]), minus 32.
///
/// # Safety
/// As [`q4k_scales_mins`].
#[inline]
pub(crate) unsafe fn q3k_scales(p: *const u8) -> [i8; 16] {
    let aux = q3k_scale_words(p);
    std::array::from_fn(|g| aux[g / 4].to_le_bytes()[g % 4] as i8 - 32)
}

/// [`q3k_scales`] as one vector of 16 i8 (the words built in general registers, one vector
/// subtract, rather than one `pinsrb` per byte).
///
/// # Safety
/// AVX2/FMA/F16C present; as [`q4k_scales_mins`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q3k_scales_i8(p: *const u8) -> __m128i {
    let aux = q3k_scale_words(p);
    let v = _mm_set_epi32(aux[3] as i32, aux[2] as i32, aux[1] as i32, aux[0] as i32);
    _mm_sub_epi8(v, _mm_set1_epi8(32))
}

/// The 32 unsigned values `128n + 32j + l` (`l < 32`) of a Q2_K (`Q3 = false`) or Q3_K block, from
/// `q`, the 32 bytes of 2-bit values of half `n`, and for Q3_K `hm`, the block's 32 bytes of high
/// bits: `(q >> 2j) & 3`, plus for Q3_K `4 * ((hm >> (4n + j)) & 1)` (0..7; ggml subtracts 4).
///
/// # Safety
/// AVX2/FMA/F16C present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q23_values<const Q3: bool>(
    q: __m256i,
    hm: __m256i,
    n: usize,
    j: usize,
) -> __m256i {
    let u = _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j as i32));
    let u = _mm256_and_si256(u, _mm256_set1_epi8(0x03));
    if !Q3 {
        return u;
    }
    let h = _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * n + j) as i32));
    let h = _mm256_and_si256(h, _mm256_set1_epi8(0x01));
    _mm256_or_si256(u, _mm256_slli_epi16(h, 2))
}

/// Transpose 8 registers of 8 32-bit lanes: lane `c` of input `i` becomes lane `i` of output `c`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn transpose8x32(r: [__m256i; 8]) -> [__m256i; 8] {
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

/// Transpose 8 rows' 32 values of sub-block `sb` (one register per row) into its 8 pieces.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn store_sub_block(o: *mut u8, sb: usize, vals: [__m256i; GROUP]) {
    for (c, piece) in transpose8x32(vals).into_iter().enumerate() {
        _mm256_storeu_si256(o.add(256 * sb + 32 * c) as *mut __m256i, piece);
    }
}
