//! VNNI prompt GEMMs on the packed Q4_0, Q5_0 and Q8_0 weight tiles of
//! [`crate::kernels::x86::avx2::packed_q`] (the same packing: one 32-bit lane per weight row, 4-byte
//! activation pieces broadcast to all lanes).
//!
//! Each piece is one `vpdpbusd` into the row's i32 lane, where AVX2 needs a `vpmaddubsw` and a
//! 16-bit add (Q4_0, Q5_0) or a `vpmaddubsw`, a `vpmaddwd` and an add (Q8_0), plus the widening
//! of the 16-bit sums. The lanes end with the same exact integers as the AVX2 kernels' and go
//! through the same f32 operations, so both give the same accumulators bit for bit (tested).
//!
//! As in [`super::blocks32`], the kernels exist for AVX-512 VNNI ([`avx512vnni`]) and AVX-VNNI
//! ([`avxvnni`]), from one source (`packed_gemms!`).

#![allow(unsafe_op_in_unsafe_fn)]
#![allow(clippy::needless_range_loop)]

/// The GEMMs of this file for the target features `$feat`, with `$dpbusd` the 256-bit
/// `vpdpbusd` intrinsic those features provide.
macro_rules! packed_gemms {
    ($feat:literal, $dpbusd:ident) => {
        use std::arch::x86_64::*;

        use crate::gguf::GgmlType;
        use crate::kernels::acts::{q8_0_scales_offset, q8_0_sums_offset};
        use crate::kernels::layout::{Acc, PACK_PAIR as PAIR, PARTS};
        use crate::kernels::x86::avx2::packed_q::{
            Q4_0_PACKED, Q8_0_NEG_SUMS, Q8_0_PACKED, Q8_0_SCALES,
        };

        const Q8_0_BYTES: usize = GgmlType::Q8_0.type_size();

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }

        /// Activation piece `c` (4 bytes) of block `b` of the Q8_0 row at `q`, in all 8 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn piece(q: *const u8, b: usize, c: usize) -> __m256i {
            _mm256_set1_epi32(std::ptr::read_unaligned(
                q.add(b * Q8_0_BYTES + 2 + 4 * c) as *const i32
            ))
        }

        /// [`crate::kernels::x86::avx2::packed_q::gemm_q45_0`] with VNNI: the same arguments, the same
        /// accumulators bit for bit.
        ///
        /// # Safety
        /// The features of this module present; each `packed[g]` holds `nb` packed blocks;
        /// each `a[r]` a whole activation row with its scales and sums.
        #[inline(never)]
        #[target_feature(enable = $feat)]
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
            let [acc0, acc1] = acc;
            for b in 0..nb {
                let part = (b0 + b) % PARTS;
                let pb = packed.map(|p| p.add(b * Q4_0_PACKED));
                let mut i = [[_mm256_setzero_si256(); N]; PAIR];
                for c in 0..8 {
                    let w = pb.map(|p| load(p.add(32 * c)));
                    for r in 0..N {
                        let x = piece(q[r], b, c);
                        for g in 0..PAIR {
                            i[g][r] = $dpbusd(i[g][r], w[g], x);
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

        /// [`crate::kernels::x86::avx2::packed_q::gemm_q8_0`] with VNNI: the stored magnitudes times the
        /// activation pieces with the stored sign masks applied (`a ^ m`), started from the stored
        /// negative-magnitude sums; the same accumulators bit for bit.
        ///
        /// # Safety
        /// As [`gemm_q45_0`], with one packed Q8_0 group.
        #[inline(never)]
        #[target_feature(enable = $feat)]
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
            for b in 0..nb {
                let part = (b0 + b) % PARTS;
                let pb = packed.add(b * Q8_0_PACKED);
                let mut s = [load(pb.add(Q8_0_NEG_SUMS)); N];
                for c in 0..8 {
                    let aw = load(pb.add(32 * c));
                    let m = load(pb.add(256 + 32 * c));
                    for r in 0..N {
                        let x = _mm256_xor_si256(piece(q[r], b, c), m);
                        s[r] = $dpbusd(s[r], aw, x);
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
    };
}

/// AVX-512 VNNI (with VL, F, BW and AVX2, FMA, F16C).
pub mod avx512vnni {
    packed_gemms!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        _mm256_dpbusd_epi32
    );
}

/// AVX-VNNI (with AVX2, FMA, F16C), for CPUs without AVX-512.
pub mod avxvnni {
    packed_gemms!("avxvnni,avx2,fma,f16c", _mm256_dpbusd_avx_epi32);
}
