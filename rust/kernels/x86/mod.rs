//! x86-64 kernels: run-time detection of the instruction sets, and the helpers the kernels of
//! every x86 instruction set share (f16 loads, prefetch, horizontal sums, nibble and bit
//! unpacking). The kernels themselves live per instruction set: [`avx2`], and [`vnni`] (AVX-512
//! VNNI and AVX-VNNI). Portable builds keep them all: each is compiled with `#[target_feature]`
//! and handed out only after [`has_avx2`], [`has_avx512vnni`] or [`has_avxvnni`] said yes.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

pub mod amx;
pub mod avx2;
pub mod vnni;

/// True when the CPU has AVX2, FMA and F16C.
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// True when the CPU has AVX-512 F, BW, VL and VNNI, besides AVX2, FMA and F16C ([`has_avx2`]):
/// what the [`vnni`] kernels use in their AVX-512 form.
pub fn has_avx512vnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    })
}

/// True when the CPU has AVX-VNNI (the VEX form of `vpdpbusd`), besides AVX2, FMA and F16C: what
/// the [`vnni`] kernels use in their AVX-VNNI form, where AVX-512 is missing.
pub fn has_avxvnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| has_avx2() && is_x86_feature_detected!("avxvnni"))
}

/// The f16 at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = std::ptr::read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// How far ahead of the block being computed the decode kernels ask for weights, in two steps.
/// Decode streams every weight once per token from memory, and the hardware prefetchers alone
/// leave that read stream far short of the memory bandwidth (without software prefetch the Q8_0
/// slice decodes at under half its speed on a 2-core Xeon). A far request into L2
/// ([`PF_FAR`], `prefetcht2`) keeps enough lines in flight to cover the memory latency without
/// holding the few L1 fill buffers; a near one into L1 ([`PF_NEAR`], `prefetcht0`) brings each
/// line on from L2 shortly before its use. On the 2-core Xeon (Sapphire Rapids class, 2 MiB
/// pages) this two-step form decodes the 70B-shaped slices 5-14% faster (Q8_0, Q4_0, Q4_K_M,
/// Q6_K) than one `prefetcht0` 2 KiB ahead (32-token greedy decodes, the two forms alternated);
/// far distances of 3-8 KiB, near ones of 0.5-1 KiB and `prefetcht1` for the far step measured
/// within noise of these.
pub(crate) const PF_FAR: usize = 4096;
/// The near distance of [`prefetch_ahead`] (see [`PF_FAR`]).
pub(crate) const PF_NEAR: usize = 768;

/// Prefetch the cache lines of `len` bytes starting [`PF_FAR`] bytes after `p` into L2 and those
/// starting [`PF_NEAR`] bytes after `p` into L1 (hints: addresses past the weights are allowed and
/// never fault, hence the wrapping arithmetic).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    let mut l = 0;
    while l < len {
        _mm_prefetch::<_MM_HINT_T2>(p.wrapping_add(PF_FAR + l) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PF_NEAR + l) as *const i8);
        l += 64;
    }
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum(x: __m256) -> f32 {
    let hi = _mm256_extractf128_ps(x, 1);
    let lo = _mm256_castps256_ps128(x);
    let s = _mm_add_ps(hi, lo);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of packed nibbles to 32 bytes: low nibbles (elements 0..16) then high (16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nibbles(p: *const u8) -> __m256i {
    // the 16 bytes in both halves (a broadcast load), the upper half shifted right by 4
    let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    let b = _mm256_srlv_epi32(t, _mm256_set_epi32(4, 4, 4, 4, 0, 0, 0, 0));
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}

/// 32 bits to 32 bytes: 0xFF where bit `i` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
    let x = std::ptr::read_unaligned(p as *const u32) as i32;
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuf);
    let mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}
