//! VNNI prompt GEMMs on the packed Q4_0, Q5_0 and Q8_0 weight tiles of
//! [`crate::kernels::x86::avx2::packed_q`] (the same packing: one 32-bit lane per weight row, 4-byte
//! activation pieces broadcast to all lanes).
//!
//! Each piece is one `vpdpbusd` into the row's i32 lane, where AVX2 needs a `vpmaddubsw` and a
//! 16-bit add (Q4_0, Q5_0) or a `vpmaddubsw`, a `vpmaddwd` and an add (Q8_0), plus the widening
//! of the 16-bit sums. The lanes end with the same exact integers as the AVX2 kernels' and go
//! through the same f32 operations, so both give the same accumulators bit for bit (tested).
//!
//! The kernels exist for AVX-VNNI ([`avxvnni`], 256-bit, from `packed_gemms!`) and AVX-512 VNNI
//! ([`avx512vnni_x2`]: both weight groups of a pair in the halves of 512-bit registers).

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

/// AVX-VNNI (with AVX2, FMA, F16C), for CPUs without AVX-512.
pub mod avxvnni {
    packed_gemms!("avxvnni,avx2,fma,f16c", _mm256_dpbusd_avx_epi32);
}

/// AVX-512 VNNI on 512-bit registers: the two weight groups of a pair in the two 256-bit halves
/// of each register, so that one `vpdpbusd` (and, for Q8_0, one sign `vpxor`) serves 16 weight
/// rows where the 256-bit kernels above need two. The accumulators of each (row, part) stay in
/// registers over the chunk (one load and one store per chunk instead of per block). Lane for
/// lane the same integer sums and f32 operations as the 256-bit kernels: the same accumulators bit
/// for bit (tested through the dispatch, which runs these with AVX-512).
///
/// On the AMD EPYC (avx2 avx512_vnni avx512f avx_vnni), 2 cores, where 512-bit
/// instructions run at the 256-bit ones' rate, the 70B slice's 512-token prompt (all logits)
/// went from 125 to 160 tok/s on Q4_0 and from 79 to 122 tok/s on Q8_0 with these, next to the
/// 256-bit kernels in their AVX-512 (EVEX) form (alternated runs, medians).
pub mod avx512vnni_x2 {
    use std::arch::x86_64::*;

    use crate::gguf::GgmlType;
    use crate::kernels::acts::{q8_0_scales_offset, q8_0_sums_offset};
    use crate::kernels::layout::{Acc, PACK_PAIR as PAIR, PARTS};
    use crate::kernels::x86::avx2::packed_q::{
        Q4_0_PACKED, Q8_0_NEG_SUMS, Q8_0_PACKED, Q8_0_SCALES,
    };

    const Q8_0_BYTES: usize = GgmlType::Q8_0.type_size();

    /// 32 bytes at `off` past each group's packed block: group 0 in the low half.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn ld2(p: [*const u8; PAIR], off: usize) -> __m512i {
        let lo = _mm256_loadu_si256(p[0].add(off) as *const __m256i);
        let hi = _mm256_loadu_si256(p[1].add(off) as *const __m256i);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// Activation piece `c` (4 bytes) of block `b` of the Q8_0 row at `q`, in all 16 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn piece(q: *const u8, b: usize, c: usize) -> __m512i {
        _mm512_set1_epi32(std::ptr::read_unaligned(
            q.add(b * Q8_0_BYTES + 2 + 4 * c) as *const i32
        ))
    }

    /// The accumulators of row `r`, part `part`, of both groups.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn acc_load<const N: usize>(
        acc: &[&mut [Acc; N]; PAIR],
        r: usize,
        part: usize,
    ) -> __m512 {
        let lo = _mm256_castps_pd(_mm256_loadu_ps(acc[0][r][part].as_ptr()));
        let hi = _mm256_castps_pd(_mm256_loadu_ps(acc[1][r][part].as_ptr()));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(lo), hi))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn acc_store<const N: usize>(
        acc: &mut [&mut [Acc; N]; PAIR],
        r: usize,
        part: usize,
        v: __m512,
    ) {
        let v = _mm512_castps_pd(v);
        _mm256_storeu_ps(
            acc[0][r][part].as_mut_ptr(),
            _mm256_castpd_ps(_mm512_castpd512_pd256(v)),
        );
        _mm256_storeu_ps(
            acc[1][r][part].as_mut_ptr(),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(v)),
        );
    }

    /// Every (part, row) accumulator pair of both groups, as `[part][row]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn acc_load_all<const N: usize>(acc: &[&mut [Acc; N]; PAIR]) -> [[__m512; N]; PARTS] {
        let mut v = [[_mm512_setzero_ps(); N]; PARTS];
        for (part, v) in v.iter_mut().enumerate() {
            for (r, v) in v.iter_mut().enumerate() {
                *v = acc_load(acc, r, part);
            }
        }
        v
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn acc_store_all<const N: usize>(
        acc: &mut [&mut [Acc; N]; PAIR],
        v: &[[__m512; N]; PARTS],
    ) {
        for (part, v) in v.iter().enumerate() {
            for (r, &v) in v.iter().enumerate() {
                acc_store(acc, r, part, v);
            }
        }
    }

    /// Block `b`'s exact per-row sums `i` (both groups, the offset not yet taken off) added to
    /// the part's accumulators `v` as [`super::avxvnni::gemm_q45_0`] adds them.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn add_block<const N: usize>(
        v: &mut [__m512; N],
        i: [__m512i; N],
        dw: __m512,
        da: [f32; N],
        off: [i32; N],
    ) {
        for r in 0..N {
            let i = _mm512_sub_epi32(i[r], _mm512_set1_epi32(off[r]));
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(da[r]));
            v[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(i), v[r]);
        }
    }

    /// Runs `$body` (which uses `v`, the accumulators of the block's part) with `v` bound to
    /// `$v[part]` for a constant index, so that every part's accumulators stay in registers.
    macro_rules! with_part {
        ($v:ident, $part:expr, |$p:ident| $body:expr) => {
            match $part {
                0 => {
                    let $p = &mut $v[0];
                    $body
                }
                1 => {
                    let $p = &mut $v[1];
                    $body
                }
                2 => {
                    let $p = &mut $v[2];
                    $body
                }
                _ => {
                    let $p = &mut $v[3];
                    $body
                }
            }
        };
    }

    /// [`super::avxvnni::gemm_q45_0`] on 512-bit registers: the same arguments, the same
    /// accumulators bit for bit.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C present; otherwise as the 256-bit kernel.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn gemm_q45_0<const N: usize, const Q5: bool>(
        b0: usize,
        nb: usize,
        row_nb: usize,
        packed: [*const u8; PAIR],
        a: [*const u8; N],
        mut acc: [&mut [Acc; N]; PAIR],
    ) {
        const { assert!(PARTS == 4) };
        let q = a.map(|p| p.add(b0 * Q8_0_BYTES));
        let scales = a.map(|p| p.add(q8_0_scales_offset(row_nb) + 4 * b0) as *const f32);
        let sums = a.map(|p| p.add(q8_0_sums_offset(row_nb) + 4 * b0) as *const i32);
        let mut v = acc_load_all(&acc);
        for b in 0..nb {
            let pb = packed.map(|p| p.add(b * Q4_0_PACKED));
            let mut i = [_mm512_setzero_si512(); N];
            for c in 0..8 {
                let w = ld2(pb, 32 * c);
                for r in 0..N {
                    i[r] = _mm512_dpbusd_epi32(i[r], w, piece(q[r], b, c));
                }
            }
            let dw = _mm512_castsi512_ps(ld2(pb, 256));
            let da: [f32; N] = std::array::from_fn(|r| *scales[r].add(b));
            let off: [i32; N] = std::array::from_fn(|r| {
                let sum = *sums[r].add(b);
                if Q5 {
                    sum << 4
                } else {
                    sum << 3
                }
            });
            with_part!(v, (b0 + b) % PARTS, |p| add_block(p, i, dw, da, off));
        }
        acc_store_all(&mut acc, &v);
    }

    /// [`super::avxvnni::gemm_q8_0`] for both groups of a pair at once: the same
    /// accumulators bit for bit.
    ///
    /// # Safety
    /// As [`gemm_q45_0`], with packed Q8_0 groups.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn gemm_q8_0<const N: usize>(
        b0: usize,
        nb: usize,
        row_nb: usize,
        packed: [*const u8; PAIR],
        a: [*const u8; N],
        mut acc: [&mut [Acc; N]; PAIR],
    ) {
        const { assert!(PARTS == 4) };
        let q = a.map(|p| p.add(b0 * Q8_0_BYTES));
        let scales = a.map(|p| p.add(q8_0_scales_offset(row_nb) + 4 * b0) as *const f32);
        let mut v = acc_load_all(&acc);
        for b in 0..nb {
            let pb = packed.map(|p| p.add(b * Q8_0_PACKED));
            let mut s = [ld2(pb, Q8_0_NEG_SUMS); N];
            for c in 0..8 {
                let aw = ld2(pb, 32 * c);
                let m = ld2(pb, 256 + 32 * c);
                for r in 0..N {
                    let x = _mm512_xor_si512(piece(q[r], b, c), m);
                    s[r] = _mm512_dpbusd_epi32(s[r], aw, x);
                }
            }
            let dw = _mm512_castsi512_ps(ld2(pb, Q8_0_SCALES));
            let da: [f32; N] = std::array::from_fn(|r| *scales[r].add(b));
            with_part!(v, (b0 + b) % PARTS, |p| add_block(p, s, dw, da, [0; N]));
        }
        acc_store_all(&mut acc, &v);
    }
}
