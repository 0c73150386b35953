//! VNNI dot products for the weight types with 32-value blocks: Q8_0, Q4_0 and Q5_0 with Q8_0
//! activations (single- and multi-row) and Q4_1 with Q8_1 activations (single-row).
//!
//! Each block's integer dot product is one `vpdpbusd` (unsigned weight bytes times signed
//! activation bytes, four products added per i32 lane, exact) on 256-bit registers,
//! where AVX2 needs a `vpmaddubsw`, a `vpmaddwd` and, for Q8_0, two sign operations. Q8_0
//! weights are made unsigned by adding 128 and the `128 * sum(activations)` taken back from the
//! block sums, as Q4_0 and Q5_0 take back their offsets. The i32 lanes hold the same integers
//! as the AVX2 kernels' lanes and go through the same f32 operations, so the results are the
//! same bit for bit (tested).
//!
//! The single-row kernel prefetches the weights ahead, the multi-row ones where `PF` says so (as
//! [`crate::kernels::x86::avx2::multi`]).
//!
//! The kernels exist twice, from one source (`kernels32!`): [`avx512vnni`] (the EVEX form of
//! AVX-512 VNNI with VL) and [`avxvnni`] (the VEX form of AVX-VNNI, for CPUs that have it without
//! AVX-512); the two compute the same.

#![allow(unsafe_op_in_unsafe_fn)]
#![allow(clippy::needless_range_loop)]

/// The kernels of this file for the target features `$feat`, with `$dpbusd` the 256-bit
/// `vpdpbusd` intrinsic those features provide.
macro_rules! kernels32 {
    ($feat:literal, $dpbusd:ident) => {
        use std::arch::x86_64::*;

        use crate::gguf::GgmlType;
        use crate::kernels::layout::PARTS;
        use crate::kernels::x86::avx2::multi::{
            combine_parts, hsum4_i32, q8_scales_sums, Q4_0W, Q8_0W,
        };
        use crate::kernels::x86::{bits_to_bytes, hsum, nibbles, prefetch_ahead};

        const Q8_0: usize = GgmlType::Q8_0.type_size();
        const Q4_0: usize = GgmlType::Q4_0.type_size();
        const Q5_0: usize = GgmlType::Q5_0.type_size();

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }

        /// The 32 unsigned weight values of the block at `wb` (for Q8_0 plus 128) as bytes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn weights<const W: u8>(wb: *const u8) -> __m256i {
            match W {
                Q8_0W => _mm256_xor_si256(load(wb.add(2)), _mm256_set1_epi8(-128)),
                Q4_0W => nibbles(wb.add(2)),
                _ => {
                    let fifth = _mm256_and_si256(bits_to_bytes(wb.add(2)), _mm256_set1_epi8(0x10));
                    _mm256_or_si256(nibbles(wb.add(6)), fifth)
                }
            }
        }

        /// Q8_0 (`W = Q8_0W`), Q4_0 (`Q4_0W`) or Q5_0 (`Q5_0W`) weights with `N` Q8_0 activation rows
        /// followed by their f32 block scales at byte `scales` and i32 block sums at `sums`: the same
        /// result as [`crate::kernels::x86::avx2::multi::q8_acts`], bit for bit (block `b` added as
        /// `fma(d_w * d_a, dot, part)` to part `b % 4`, the parts combined as `(p0 + p2) + (p1 + p3)`).
        ///
        /// # Safety
        /// The features of this module present; `w` holds `nb` blocks and every `a[i]`
        /// `sums + 4 * nb` bytes.
        #[inline]
        #[target_feature(enable = $feat)]
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
                group::<N, W, PF, 4>(w, a, b, scales, sums, &mut acc);
            }
            match nb - whole {
                1 => group::<N, W, PF, 1>(w, a, whole, scales, sums, &mut acc),
                2 => group::<N, W, PF, 2>(w, a, whole, scales, sums, &mut acc),
                3 => group::<N, W, PF, 3>(w, a, whole, scales, sums, &mut acc),
                _ => {}
            }
            combine_parts(acc)
        }

        /// Blocks `b..b + NB` (`NB` <= 4: one group of [`q8_acts`]'s parts) into `acc`. The group's
        /// weights are unpacked once and held in registers; each activation row then takes its
        /// `NB` block dots, their lane totals and its scales in turn, so that few vectors are live
        /// at once (no spills, whatever `N`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn group<const N: usize, const W: u8, const PF: bool, const NB: usize>(
            w: *const u8,
            a: [*const u8; N],
            b: usize,
            scales: usize,
            sums: usize,
            acc: &mut [__m128; N],
        ) {
            let bytes = match W {
                Q8_0W => Q8_0,
                Q4_0W => Q4_0,
                _ => Q5_0,
            };
            // the offset taken back per activation sum: 128 (Q8_0), 8 (Q4_0), 16 (Q5_0)
            let shift = _mm_cvtsi32_si128(match W {
                Q8_0W => 7,
                Q4_0W => 3,
                _ => 4,
            });
            if N == 1 || PF {
                prefetch_ahead(w.add(b * bytes), NB * bytes);
            }
            let mut dw = 0u64; // the NB weight scales as f16
            let mut x = [_mm256_setzero_si256(); 4];
            for j in 0..NB {
                let wb = w.add((b + j) * bytes);
                dw |= (std::ptr::read_unaligned(wb as *const u16) as u64) << (16 * j);
                x[j] = weights::<W>(wb);
            }
            let dw = _mm_cvtph_ps(_mm_cvtsi64_si128(dw as i64));
            for i in 0..N {
                let mut p = [_mm256_setzero_si256(); 4];
                for j in 0..NB {
                    let ay = load(a[i].add((b + j) * Q8_0 + 2));
                    p[j] = $dpbusd(_mm256_setzero_si256(), x[j], ay);
                }
                let (da, bs) = q8_scales_sums::<NB>(a[i], b, scales, sums);
                let tot = _mm_sub_epi32(hsum4_i32(p), _mm_sll_epi32(bs, shift));
                acc[i] = _mm_fmadd_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(tot), acc[i]);
            }
        }

        /// Q4_1 weights (20-byte blocks) with Q8_1 activations (36-byte blocks): the same result as
        /// [`crate::kernels::x86::avx2::dots::dot_q4_1`], bit for bit (the same 8 lanes of 4-product
        /// sums, the same four f32 accumulators).
        ///
        /// # Safety
        /// As [`q8_acts`]; `w` and `a` hold `nb` blocks each.
        #[target_feature(enable = $feat)]
        pub unsafe fn dot_q4_1(nb: usize, w: &[u8], a: &[u8]) -> f32 {
            debug_assert!(w.len() >= nb * 20 && a.len() >= nb * 36);
            let (wp, ap) = (w.as_ptr(), a.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summs = _mm_setzero_ps();
            let mut i = 0;
            while i < nb {
                let n = (nb - i).min(4);
                for (j, acc) in acc.iter_mut().enumerate().take(n) {
                    let wb = wp.add((i + j) * 20);
                    prefetch_ahead(wb, 1);
                    let ab = ap.add((i + j) * 36);
                    let hw = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
                        wb as *const i32,
                    )));
                    let ha = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
                        ab as *const i32,
                    )));
                    let p = _mm_mul_ps(hw, ha); // [d_w * d_a, m_w * s_a, 0, 0]
                    summs = _mm_add_ps(summs, p);
                    let d = _mm256_broadcastss_ps(p);
                    let dot = $dpbusd(_mm256_setzero_si256(), nibbles(wb.add(4)), load(ab.add(4)));
                    *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), *acc);
                }
                i += n;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            hsum(s) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
        }
    };
}

/// AVX-512 VNNI (with VL, F, BW and AVX2, FMA, F16C).
pub mod avx512vnni {
    kernels32!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        _mm256_dpbusd_epi32
    );
}

/// AVX-VNNI (with AVX2, FMA, F16C), for CPUs without AVX-512.
pub mod avxvnni {
    kernels32!("avxvnni,avx2,fma,f16c", _mm256_dpbusd_avx_epi32);
}
