//! VNNI prompt GEMMs on the packed K-quant weight tiles of
//! [`crate::kernels::x86::avx2::packed_k`] (Q4_K and Q5_K per 32-value sub-block, Q2_K, Q3_K and
//! Q6_K with a scale per 16 values; the same packing: one 32-bit lane per weight row, 4-byte Q8_K
//! activation pieces broadcast to all lanes).
//!
//! Where AVX2 sums the pieces' `vpmaddubsw` pairs in 16 bits and applies a sub-block's scale
//! with a `vpmaddwd` and an add, these kernels take one of two exact routes (`DP`):
//! - `DP = true`: each piece is one `vpdpbusd` into the row's i32 lane, in runs of pieces whose
//!   sums fit in i16: 4 pieces (16 values) for Q4_K, Q2_K and Q3_K (at most
//!   16 * 15 * 128 = 30720), 2 for Q5_K (8 * 31 * 128 = 31744), 1 for Q6_K
//!   (4 * 63 * 128 = 32256). A lane holding such a sum is, as two i16, (the sum, its sign), so a
//!   `vpdpwssd` with the run's scale in the low i16 and 0 in the high one adds exactly scale
//!   times the sum to the row's i32. (Packing two runs' sums into the halves of one lane with a
//!   shift and an add would lose a borrow from the low half into the high one when the low sum
//!   is negative.)
//! - `DP = false`: AVX2's 16-bit sums, with each `vpmaddwd` + add made one `vpdpwssd`.
//!
//! Either way the lanes end with the AVX2 kernels' exact integers (the scaled sub-block sums,
//! and the mins or offset term as a `vpdpwssd` of the same pairs), which go through the same f32
//! operations in the same order: the same accumulators bit for bit (tested).
//!
//! As in [`super::packed`], the kernels exist for AVX-512 VNNI ([`avx512vnni`]) and AVX-VNNI
//! ([`avxvnni`]) on 256-bit registers, one weight group per call; [`avx512vnni_x2`] runs both
//! groups of a pair in the two halves of 512-bit registers, twice the rows per instruction at
//! about the same instruction throughput on a Sapphire Rapids Xeon: what the dispatch runs with
//! AVX-512 ([`super::gemm`]; `avx512vnni` is kept for the tests and `benches/rows.rs`). Its
//! vectors are two 256-bit loads, one from each group's packed blocks; packing the pair
//! interleaved (one 512-bit load) took 3-5 % less time in `benches/rows.rs`, before counting
//! the copy that interleaving costs per packed chunk, and is not done. One source
//! (`packed_k_gemms!`) over each module's vector operations (`ops_256!`, `ops_512!`).

#![allow(unsafe_op_in_unsafe_fn)]
// block, part and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

/// The vector operations of the 256-bit kernels (one weight group, `G = 1`) for the target
/// features `$feat`, with `$dpbusd` and `$dpwssd` the `vpdpbusd` and `vpdpwssd` intrinsics those
/// features provide.
macro_rules! ops_256 {
    ($feat:literal, $dpbusd:ident, $dpwssd:ident) => {
        use std::arch::x86_64::*;

        type V = __m256i;
        type F = __m256;
        const G: usize = 1;

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn zero() -> V {
            _mm256_setzero_si256()
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn fzero() -> F {
            _mm256_setzero_ps()
        }
        /// 32 bytes at `off` past the group's packed block.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn ld(p: [*const u8; G], off: usize) -> V {
            _mm256_loadu_si256(p[0].add(off) as *const __m256i)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn ldf(p: [*const u8; G], off: usize) -> F {
            _mm256_loadu_ps(p[0].add(off) as *const f32)
        }
        /// The 4 bytes at `p` in every lane.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bc(p: *const u8) -> V {
            _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn set1(x: i32) -> V {
            _mm256_set1_epi32(x)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bcf(p: *const u8) -> F {
            _mm256_broadcast_ss(&*(p as *const f32))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn dpbusd(s: V, w: V, x: V) -> V {
            $dpbusd(s, w, x)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn dpwssd(s: V, a: V, b: V) -> V {
            $dpwssd(s, a, b)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn srli16(x: V) -> V {
            _mm256_srli_epi32(x, 16)
        }
        /// The low i16 of each 32-bit lane, the high one cleared.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn low16(x: V) -> V {
            _mm256_and_si256(x, _mm256_set1_epi32(0xFFFF))
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn maddubs(w: V, x: V) -> V {
            _mm256_maddubs_epi16(w, x)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn add16(a: V, b: V) -> V {
            _mm256_add_epi16(a, b)
        }
        /// The even i16 of `a` and the odd ones of `b`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn blend_odd16(a: V, b: V) -> V {
            _mm256_blend_epi16::<0xAA>(a, b)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn cvt(x: V) -> F {
            _mm256_cvtepi32_ps(x)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mul(a: F, b: F) -> F {
            _mm256_mul_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn fmadd(a: F, b: F, c: F) -> F {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn fnmadd(a: F, b: F, c: F) -> F {
            _mm256_fnmadd_ps(a, b, c)
        }
        /// Part 0 of the groups' accumulators of activation row `r` (the K-quants use no other).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn acc_load<const N: usize>(acc: &[&mut [Acc; N]; G], r: usize) -> F {
            _mm256_loadu_ps(acc[0][r][0].as_ptr())
        }
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn acc_store<const N: usize>(acc: &mut [&mut [Acc; N]; G], r: usize, v: F) {
            _mm256_storeu_ps(acc[0][r][0].as_mut_ptr(), v)
        }
    };
}

/// The vector operations of the 512-bit kernels: both weight groups of a pair (`G = 2`), group
/// `g` in the 256-bit half `g` of each register (AVX-512 F/BW/VL/VNNI).
macro_rules! ops_512 {
    () => {
        use std::arch::x86_64::*;

        type V = __m512i;
        type F = __m512;
        const G: usize = 2;

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn zero() -> V {
            _mm512_setzero_si512()
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn fzero() -> F {
            _mm512_setzero_ps()
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn ld(p: [*const u8; G], off: usize) -> V {
            let lo = _mm256_loadu_si256(p[0].add(off) as *const __m256i);
            let hi = _mm256_loadu_si256(p[1].add(off) as *const __m256i);
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn ldf(p: [*const u8; G], off: usize) -> F {
            _mm512_castsi512_ps(ld(p, off))
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn bc(p: *const u8) -> V {
            _mm512_set1_epi32(std::ptr::read_unaligned(p as *const i32))
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn set1(x: i32) -> V {
            _mm512_set1_epi32(x)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn bcf(p: *const u8) -> F {
            _mm512_set1_ps(*(p as *const f32))
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn dpbusd(s: V, w: V, x: V) -> V {
            _mm512_dpbusd_epi32(s, w, x)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn dpwssd(s: V, a: V, b: V) -> V {
            _mm512_dpwssd_epi32(s, a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn srli16(x: V) -> V {
            _mm512_srli_epi32::<16>(x)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn low16(x: V) -> V {
            _mm512_and_si512(x, _mm512_set1_epi32(0xFFFF))
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn maddubs(w: V, x: V) -> V {
            _mm512_maddubs_epi16(w, x)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn add16(a: V, b: V) -> V {
            _mm512_add_epi16(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn blend_odd16(a: V, b: V) -> V {
            _mm512_mask_blend_epi16(0xAAAA_AAAA, a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn cvt(x: V) -> F {
            _mm512_cvtepi32_ps(x)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn mul(a: F, b: F) -> F {
            _mm512_mul_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn fmadd(a: F, b: F, c: F) -> F {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn fnmadd(a: F, b: F, c: F) -> F {
            _mm512_fnmadd_ps(a, b, c)
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn acc_load<const N: usize>(acc: &[&mut [Acc; N]; G], r: usize) -> F {
            let lo = _mm256_castps_pd(_mm256_loadu_ps(acc[0][r][0].as_ptr()));
            let hi = _mm256_castps_pd(_mm256_loadu_ps(acc[1][r][0].as_ptr()));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(lo), hi))
        }
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn acc_store<const N: usize>(acc: &mut [&mut [Acc; N]; G], r: usize, v: F) {
            let v = _mm512_castps_pd(v);
            let lo = _mm256_castpd_ps(_mm512_castpd512_pd256(v));
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(v));
            _mm256_storeu_ps(acc[0][r][0].as_mut_ptr(), lo);
            _mm256_storeu_ps(acc[1][r][0].as_mut_ptr(), hi);
        }
    };
}

/// `isum[r] +=` the scaled sums of two runs of `$run` pieces (pieces `lo..lo + run` and
/// `lo + run..lo + 2 * run` at `32 * c` bytes past `$wp`, activation bytes `4 * c` past `$x[r]`)
/// for each of the `N` rows, with the i16 scale pairs `$sc` (per lane: the low run's scale, then
/// the high run's): with `DP` as the file says, else both runs summed in 16 bits. A macro, so
/// that every use is inlined into its kernel with constant indices.
macro_rules! run_pair {
    ($isum:expr, $wp:expr, $x:expr, $lo:expr, $run:expr, $sc:expr) => {{
        let (isum, wp, x, lo, run, sc) = ($isum, $wp, $x, $lo, $run, $sc);
        if DP {
            let mut s = [[zero(); N]; 2];
            for (i, c0) in [lo, lo + run].into_iter().enumerate() {
                for c in c0..c0 + run {
                    let w = ld(wp, 32 * c);
                    for r in 0..N {
                        s[i][r] = dpbusd(s[i][r], w, bc(x[r].add(4 * c)));
                    }
                }
            }
            // each run's scale in the low i16 of the lane, 0 in the high one
            let (sl, sh) = (low16(sc), srli16(sc));
            for r in 0..N {
                isum[r] = dpwssd(dpwssd(isum[r], s[0][r], sl), s[1][r], sh);
            }
        } else {
            let mut s = [zero(); N];
            for c in lo..lo + 2 * run {
                let w = ld(wp, 32 * c);
                for r in 0..N {
                    s[r] = add16(s[r], maddubs(w, bc(x[r].add(4 * c))));
                }
            }
            for r in 0..N {
                isum[r] = dpwssd(isum[r], s[r], sc);
            }
        }
    }};
}

/// The GEMMs of this file for the target features `$feat`, over the operations the module
/// defines (`ops_256!` or `ops_512!`).
macro_rules! packed_k_gemms {
    ($feat:literal) => {
        use crate::gguf::GgmlType;
        use crate::kernels::acts::{Q8K_BSUMS, Q8K_QS};
        use crate::kernels::layout::Acc;
        use crate::kernels::x86::avx2::packed_k::{K16_PACKED, Q4_K_PACKED};

        const Q8K: usize = GgmlType::Q8_K.type_size();

        /// [`crate::kernels::x86::avx2::packed_k::gemm_q45_k`] with VNNI (`DP`: see the file)
        /// for `G` weight groups (`packed[g]`, `acc[g]`): the same accumulators bit for bit.
        ///
        /// # Safety
        /// The features of this module present; each `packed[g]` holds `nb` packed
        /// super-blocks; each `a[r]` `b0 + nb` Q8_K blocks.
        #[inline(never)]
        #[target_feature(enable = $feat)]
        pub unsafe fn gemm_q45_k<const N: usize, const Q5: bool, const DP: bool>(
            b0: usize,
            nb: usize,
            _row_nb: usize,
            packed: [*const u8; G],
            a: [*const u8; N],
            mut acc: [&mut [Acc; N]; G],
        ) {
            let a = a.map(|p| p.add(b0 * Q8K));
            let mut v = [fzero(); N];
            for r in 0..N {
                v[r] = acc_load(&acc, r);
            }
            for b in 0..nb {
                let pb = packed.map(|p| p.add(b * Q4_K_PACKED));
                let ab = a.map(|p| p.add(b * Q8K));
                let mut isum = [zero(); N];
                for sb in 0..8 {
                    let scv = ld(pb, 8 * 256 + 32 * sb);
                    let wp = pb.map(|p| p.add(256 * sb));
                    let x = ab.map(|p| p.add(Q8K_QS + 32 * sb));
                    if Q5 {
                        // runs of 2 pieces (`DP = false`: 4 pieces summed in 16 bits)
                        run_pair!(&mut isum, wp, x, 0, 2, scv);
                        run_pair!(&mut isum, wp, x, 4, 2, scv);
                    } else {
                        run_pair!(&mut isum, wp, x, 0, 4, scv);
                    }
                }
                let mins = 8 * 256 + 8 * 32;
                let dv = ldf(pb, 8 * 256 + 8 * 32 + 4 * 32);
                let dminv = ldf(pb, 8 * 256 + 8 * 32 + 4 * 32 + 32);
                for r in 0..N {
                    // 32-value sums of the activation block as 8 i16 (each at most 32 * 128),
                    // paired as the mins are
                    let bs = ab[r].add(Q8K_BSUMS);
                    let h = _mm_hadd_epi16(
                        _mm_loadu_si128(bs as *const __m128i),
                        _mm_loadu_si128(bs.add(16) as *const __m128i),
                    );
                    let h: [i32; 4] = std::mem::transmute(h);
                    let mut msum = zero();
                    for p in 0..4 {
                        msum = dpwssd(msum, ld(pb, mins + 32 * p), set1(h[p]));
                    }
                    let da = bcf(ab[r]);
                    v[r] = fmadd(mul(dv, da), cvt(isum[r]), v[r]);
                    v[r] = fnmadd(mul(dminv, da), cvt(msum), v[r]);
                }
            }
            for r in 0..N {
                acc_store(&mut acc, r, v[r]);
            }
        }

        /// [`crate::kernels::x86::avx2::packed_k::gemm_k16`] with VNNI, for Q2_K and Q3_K
        /// (`Q6 = false`) or Q6_K (`DP`: see the file) for `G` weight groups: the same
        /// accumulators bit for bit.
        ///
        /// # Safety
        /// As [`gemm_q45_k`], with [`K16_PACKED`] super-blocks.
        #[inline(never)]
        #[target_feature(enable = $feat)]
        pub unsafe fn gemm_k16<const N: usize, const Q6: bool, const DP: bool>(
            b0: usize,
            nb: usize,
            _row_nb: usize,
            packed: [*const u8; G],
            a: [*const u8; N],
            mut acc: [&mut [Acc; N]; G],
        ) {
            let a = a.map(|p| p.add(b0 * Q8K));
            let mut v = [fzero(); N];
            for r in 0..N {
                v[r] = acc_load(&acc, r);
            }
            for b in 0..nb {
                let pb = packed.map(|p| p.add(b * K16_PACKED));
                let ab = a.map(|p| p.add(b * Q8K));
                let mut isum = [zero(); N];
                // 32 values at a time: 16-value groups 2h and 2h + 1, pieces 8h..8h + 8
                for h in 0..8 {
                    let sc = [ld(pb, 8 * 256 + 64 * h), ld(pb, 8 * 256 + 64 * h + 32)];
                    let wp = pb.map(|p| p.add(256 * h));
                    let x = ab.map(|p| p.add(Q8K_QS + 32 * h));
                    if Q6 {
                        // runs of one piece (`DP = false`: 2 pieces summed in 16 bits)
                        for j in 0..2 {
                            run_pair!(&mut isum, wp, x, 4 * j, 1, sc[j]);
                            run_pair!(&mut isum, wp, x, 4 * j + 2, 1, sc[j]);
                        }
                    } else if DP {
                        // group 2h's 4 pieces in the low i16 halves, 2h + 1's in the high ones
                        run_pair!(&mut isum, wp, x, 0, 4, blend_odd16(sc[0], sc[1]));
                    } else {
                        for j in 0..2 {
                            run_pair!(&mut isum, wp, x, 4 * j, 2, sc[j]);
                        }
                    }
                }
                let pairs = 8 * 256 + 16 * 32;
                let dv = ldf(pb, 8 * 256 + 16 * 32 + 8 * 32);
                let fv = ldf(pb, 8 * 256 + 16 * 32 + 8 * 32 + 32);
                for r in 0..N {
                    let bs = ab[r].add(Q8K_BSUMS);
                    let mut off = zero();
                    for p in 0..8 {
                        off = dpwssd(off, ld(pb, pairs + 32 * p), bc(bs.add(4 * p)));
                    }
                    let da = bcf(ab[r]);
                    v[r] = fmadd(mul(dv, da), cvt(isum[r]), v[r]);
                    v[r] = fnmadd(mul(fv, da), cvt(off), v[r]);
                }
            }
            for r in 0..N {
                acc_store(&mut acc, r, v[r]);
            }
        }
    };
}

/// AVX-512 VNNI (with VL, F, BW and AVX2, FMA, F16C), 256-bit: one weight group per call.
pub mod avx512vnni {
    ops_256!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        _mm256_dpbusd_epi32,
        _mm256_dpwssd_epi32
    );
    packed_k_gemms!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
}

/// AVX-VNNI (with AVX2, FMA, F16C), for CPUs without AVX-512: one weight group per call.
pub mod avxvnni {
    ops_256!(
        "avxvnni,avx2,fma,f16c",
        _mm256_dpbusd_avx_epi32,
        _mm256_dpwssd_avx_epi32
    );
    packed_k_gemms!("avxvnni,avx2,fma,f16c");
}

/// AVX-512 VNNI, 512-bit: both weight groups of a pair per call.
pub mod avx512vnni_x2 {
    ops_512!();
    packed_k_gemms!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
}
