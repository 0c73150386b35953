//! VNNI dot products of one K-quant weight row (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) with `N` Q8_K
//! activation rows: `N = 1` is the decode kernel, `N = ROWS` or `ROWS4` the multi-row ones; they
//! prefetch the weights where `N = 1` or `PF` (as [`crate::kernels::x86::avx2::multi`]).
//!
//! They are the AVX2 kernels of [`crate::kernels::x86::avx2::multi`] with each pair
//! `vpmaddwd` (the i16 pair sums times the sub-block scales) + `vpaddd` made one `vpdpwssd`, on
//! the same 256-bit registers: the same exact per-block integers through the same f32
//! operations ([`block_term`]), so the same f32 bit for bit (tested). With `PK` (what the
//! engine runs) the products of a row take 3 multiplications per 64 values
//! instead of 4: `vpdpbusd` sums 4 products of one sub-block per i32 lane, at most
//! 4 * 63 * 128 = 32256 in magnitude, so `vpackssdw` packs the lanes of two sub-blocks into i16
//! exactly and one `vpdpwssd` applies both sub-blocks' scales. On a 2-core Xeon with AVX-512
//! VNNI (`benches/rows.rs`, in L2) that takes 0.86x the time for one row and 0.84-0.87x for 4.
//!
//! 512-bit forms of these kernels (two sub-blocks per register) ran slower than these on a
//! Sapphire Rapids Xeon for one row: the per-block work (scale decoding, reductions, the f32
//! terms) dominates there, and 512-bit shuffles and shifts cost more than they save; 512-bit
//! multi-row forms (two 32-value chunks of a row per register, one `vpmaddubsw` + `vpdpwssd`
//! per 64 values, the lanes of 4 rows reduced together) were at best as fast as `PK` on a 2-core
//! Xeon (0.92-1.03x of its time) and are not kept. Nor is a 512-bit Q4_K multi-row form with
//! one `vpdpbusd` per 64-value chunk (the chunk's bytes in both halves, the upper half shifted
//! by 4) and one `vpackssdw` + `vpdpwssd` per two chunks: half the instructions of `PK`, but
//! 0.96-0.98x of its time on the Intel(R) Xeon(R) Processor (avx2 avx512_vnni avx512f
//! avx_vnni), 2 cores, likely because 512-bit VNNI issues on one port where 256-bit uses two.
//!
//! Generated for both VNNI forms from one source (`kquant_kernels!`): [`avx512vnni`] (EVEX,
//! AVX-512 VL) and [`avxvnni`] (VEX).

#![allow(unsafe_op_in_unsafe_fn)]
// block, part and lane indices address several arrays at once in these kernels
#![allow(clippy::needless_range_loop)]

/// The kernels of this file for the target features `$feat`, with `$dpwssd` and `$dpbusd` the
/// 256-bit `vpdpwssd` and `vpdpbusd` intrinsics those features provide.
macro_rules! kquant_kernels {
    ($feat:literal, $dpwssd:ident, $dpbusd:ident) => {
        use std::arch::x86_64::*;

        use crate::gguf::GgmlType;
        use crate::kernels::acts::{Q8K_BSUMS, Q8K_QS};
        use crate::kernels::x86::avx2::multi::{block_term, hsum2_f32, I16_SPREAD, SCALE_PAIRS};
        use crate::kernels::x86::avx2::unpack::{q23_values, q3k_scales_i8, q4k_scales_mins};
        use crate::kernels::x86::{f16_at, prefetch_ahead};

        const Q4K: usize = GgmlType::Q4_K.type_size();
        const Q5K: usize = GgmlType::Q5_K.type_size();
        const Q6K: usize = GgmlType::Q6_K.type_size();
        const Q2K: usize = GgmlType::Q2_K.type_size();
        const Q3K: usize = GgmlType::Q3_K.type_size();
        const Q8K: usize = GgmlType::Q8_K.type_size();

        /// Byte shuffles of 8 i16 (in both 128-bit lanes) that give i16 lanes 0..4 of each
        /// 128-bit lane element `2j` and lanes 4..8 element `2j + 1`: the scales of the two
        /// sub-blocks whose `vpdpbusd` sums `vpackssdw` puts there.
        const PAIR4: [__m256i; 4] = {
            const fn pair(j: u8) -> __m256i {
                let mut b = [0u8; 32];
                let mut i = 0;
                while i < 32 {
                    let e = 2 * j + ((i as u8 % 16) / 8);
                    b[i] = 2 * e + (i as u8 & 1);
                    i += 1;
                }
                // SAFETY: 32 bytes to a 32-byte plain-data vector.
                unsafe { std::mem::transmute::<[u8; 32], __m256i>(b) }
            }
            [pair(0), pair(1), pair(2), pair(3)]
        };

        /// The same for the chunk pairs `(2p, 2p + 1)` of a Q6_K, Q2_K or Q3_K half block: i16 lanes 0..4 of
        /// the low 128-bit lane element `4p`, lanes 4..8 element `4p + 2`; of the high lane
        /// `4p + 1` and `4p + 3` (each chunk's 16-value halves have their own scales).
        const Q6_PAIRS: [__m256i; 2] = {
            const fn pair(p: u8) -> __m256i {
                let mut b = [0u8; 32];
                let mut i = 0;
                while i < 32 {
                    let lane = i as u8 / 16;
                    let e = 4 * p + lane + 2 * ((i as u8 % 16) / 8);
                    b[i] = 2 * e + (i as u8 & 1);
                    i += 1;
                }
                // SAFETY: 32 bytes to a 32-byte plain-data vector.
                unsafe { std::mem::transmute::<[u8; 32], __m256i>(b) }
            }
            [pair(0), pair(1)]
        };

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }

        /// Add block `b`'s terms to `acc`: row `i`'s `sum` (the lanes of `sumi[i]`) and `off` (the
        /// activation's 16-value sums of block `b` times the i16 lanes of `x`), through
        /// [`block_term`]'s f32 operations with the weight scales `d` and `f`.
        ///
        /// Where `N` is a multiple of 4, 4 rows go together: their 8 lane totals in one
        /// transposed reduction (the integers are exact in any order) and their f32 terms as
        /// the lanes of one `vfmadd` and one `vfnmadd`, lane for lane the operations and roundings of
        /// [`block_term`] (`-(f * da) * off + acc` in one rounding either way), in place of a
        /// reduction and a scalar tail per row. In L2 (`benches/rows.rs`, Intel(R) Xeon(R)
        /// Processor (avx2 avx512_vnni avx512f avx_vnni), 2 cores) the Q6_K and Q3_K 4-row
        /// kernels take 0.90x the time with it; Q4_K's is unchanged.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn block_terms<const N: usize>(
            acc: &mut [f32; N],
            sumi: &[__m256i; N],
            x: __m256i,
            a: [*const u8; N],
            b: usize,
            d: f32,
            f: f32,
        ) {
            if N % 4 != 0 {
                for i in 0..N {
                    let ab = a[i].add(b * Q8K);
                    let (sum, off) =
                        hsum2_f32(sumi[i], _mm256_madd_epi16(x, load(ab.add(Q8K_BSUMS))));
                    acc[i] = block_term(acc[i], d, f, ab, sum, off);
                }
                return;
            }
            let (dv, fv) = (_mm_set1_ps(d), _mm_set1_ps(f));
            for g in (0..N).step_by(4) {
                let ab: [*const u8; 4] = std::array::from_fn(|r| a[g + r].add(b * Q8K));
                let off = ab.map(|p| _mm256_madd_epi16(x, load(p.add(Q8K_BSUMS))));
                // per 128-bit lane: [row 0, row 1, row 2, row 3] partial totals
                let s = _mm256_hadd_epi32(
                    _mm256_hadd_epi32(sumi[g], sumi[g + 1]),
                    _mm256_hadd_epi32(sumi[g + 2], sumi[g + 3]),
                );
                let o = _mm256_hadd_epi32(
                    _mm256_hadd_epi32(off[0], off[1]),
                    _mm256_hadd_epi32(off[2], off[3]),
                );
                // [sum 0..4, off 0..4]
                let t = _mm256_cvtepi32_ps(_mm256_add_epi32(
                    _mm256_permute2x128_si256(s, o, 0x20),
                    _mm256_permute2x128_si256(s, o, 0x31),
                ));
                let da = ab.map(|p| std::ptr::read_unaligned(p as *const f32));
                let da = _mm_set_ps(da[3], da[2], da[1], da[0]);
                let mut v = _mm_loadu_ps(acc.as_ptr().add(g));
                v = _mm_fmadd_ps(_mm_mul_ps(dv, da), _mm256_castps256_ps128(t), v);
                v = _mm_fnmadd_ps(_mm_mul_ps(fv, da), _mm256_extractf128_ps(t, 1), v);
                _mm_storeu_ps(acc.as_mut_ptr().add(g), v);
            }
        }

        /// Q4_K (`Q5 = false`, 144-byte blocks) or Q5_K (`Q5 = true`, 176-byte blocks: the same header,
        /// then 32 bytes of fifth bits before the nibbles) weights with `N` Q8_K activation rows.
        ///
        /// The same result as [`crate::kernels::x86::avx2::multi::q45_k`], bit for bit.
        ///
        /// # Safety
        /// The features of this module present; `w` holds `nb` blocks and every `a[i]` `nb` Q8_K
        /// blocks.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q45_k<const N: usize, const Q5: bool, const PF: bool, const PK: bool>(
            nb: usize,
            w: *const u8,
            a: [*const u8; N],
        ) -> [f32; N] {
            let m4 = _mm256_set1_epi8(0x0F);
            let one = _mm256_set1_epi8(1);
            let (block, qs) = if Q5 { (Q5K, 48) } else { (Q4K, 16) };
            let mut acc = [0f32; N];
            for b in 0..nb {
                let wb = w.add(b * block);
                if N == 1 || PF {
                    // decode (one row or a batched step) streams the weights from memory: ask ahead
                    prefetch_ahead(wb, block);
                }
                let mut qh = if Q5 {
                    load(wb.add(16))
                } else {
                    _mm256_setzero_si256()
                };
                let (d, dmin) = (f16_at(wb), f16_at(wb.add(2)));
                let sm = q4k_scales_mins(wb.add(4));
                // mins duplicated per pair of 16-sums: [m0, m0, m1, m1, ..., m7, m7] as i16
                let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr().add(8) as *const __m128i));
                let mins = _mm256_set_m128i(
                    _mm_unpackhi_epi16(mins, mins),
                    _mm_unpacklo_epi16(mins, mins),
                );
                // the 8 sub-block scales as i16 in both 128-bit lanes, spread per sub-block by a shuffle
                let scales = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm.as_ptr() as *const __m128i));
                let scales = _mm256_set_m128i(scales, scales);
                let mut sumi = [_mm256_setzero_si256(); N];
                for j in 0..4 {
                    let bits = load(wb.add(qs + 32 * j));
                    let mut lo = _mm256_and_si256(bits, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                    if Q5 {
                        // bit 2j of qh[l] is the fifth bit of value l of the low half, bit 2j+1 of the high
                        let h = qh;
                        qh = _mm256_srli_epi16(qh, 2);
                        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                        hi = _mm256_or_si256(
                            hi,
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4),
                        );
                    }
                    if PK {
                        // i16 lanes 0..4 of each 128-bit lane: scale 2j, lanes 4..8: 2j + 1
                        let s = _mm256_shuffle_epi8(scales, PAIR4[j]);
                        for i in 0..N {
                            let ab = a[i].add(b * Q8K + Q8K_QS + 64 * j);
                            let z = _mm256_setzero_si256();
                            let (pl, ph) =
                                ($dpbusd(z, lo, load(ab)), $dpbusd(z, hi, load(ab.add(32))));
                            sumi[i] = $dpwssd(sumi[i], _mm256_packs_epi32(pl, ph), s);
                        }
                        continue;
                    }
                    let sl = _mm256_shuffle_epi8(scales, I16_SPREAD[2 * j]);
                    let sh = _mm256_shuffle_epi8(scales, I16_SPREAD[2 * j + 1]);
                    for i in 0..N {
                        let ab = a[i].add(b * Q8K + Q8K_QS + 64 * j);
                        let pl = _mm256_maddubs_epi16(lo, load(ab));
                        let ph = _mm256_maddubs_epi16(hi, load(ab.add(32)));
                        sumi[i] = $dpwssd($dpwssd(sumi[i], pl, sl), ph, sh);
                    }
                }
                block_terms(&mut acc, &sumi, mins, a, b, d, dmin);
            }
            acc
        }

        /// Q6_K weights (`nb` blocks of 210 bytes) with `N` Q8_K activation rows.
        ///
        /// The 6-bit values are used unsigned (0..63) and the `-32` offset is applied once per block as
        /// `32 * sum(scale * activation sums)`, from the activation's 16-element sums.
        ///
        /// The same result as [`crate::kernels::x86::avx2::multi::q6_k`], bit for bit.
        ///
        /// # Safety
        /// As [`q45_k`], with Q6_K blocks.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q6_k<const N: usize, const PF: bool, const PK: bool>(
            nb: usize,
            w: *const u8,
            a: [*const u8; N],
        ) -> [f32; N] {
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(0x03);
            let mut acc = [0f32; N];
            for b in 0..nb {
                let wb = w.add(b * Q6K);
                if N == 1 || PF {
                    prefetch_ahead(wb, Q6K);
                }
                let d = f16_at(wb.add(208));
                let sc8 = _mm_loadu_si128(wb.add(192) as *const __m128i);
                let sc16 = _mm256_cvtepi8_epi16(sc8);
                let mut sumi = [_mm256_setzero_si256(); N];
                for h in 0..2 {
                    // this half's 8 scales (as i16) in both 128-bit lanes, for the per-chunk shuffles
                    let sch = if h == 0 {
                        _mm256_permute2x128_si256(sc16, sc16, 0x00)
                    } else {
                        _mm256_permute2x128_si256(sc16, sc16, 0x11)
                    };
                    let ql = wb.add(64 * h);
                    let b1 = load(ql);
                    let b2 = load(ql.add(32));
                    let bh = load(wb.add(128 + 32 * h));
                    let q = [
                        _mm256_or_si256(
                            _mm256_and_si256(b1, m4),
                            _mm256_slli_epi16(_mm256_and_si256(bh, m2), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(b2, m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m2), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m2), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m2), 4),
                        ),
                    ];
                    if PK {
                        for c in [0, 2] {
                            // chunks c and c + 1: i16 lanes 0..4 of the low 128-bit lane scale
                            // 2c, 4..8 scale 2c + 2; of the high lane 2c + 1 and 2c + 3
                            let sv = _mm256_shuffle_epi8(sch, Q6_PAIRS[c / 2]);
                            for i in 0..N {
                                let ab = a[i].add(b * Q8K + Q8K_QS + 128 * h + 32 * c);
                                let z = _mm256_setzero_si256();
                                let p0 = $dpbusd(z, q[c], load(ab));
                                let p1 = $dpbusd(z, q[c + 1], load(ab.add(32)));
                                sumi[i] = $dpwssd(sumi[i], _mm256_packs_epi32(p0, p1), sv);
                            }
                        }
                        continue;
                    }
                    for (c, qc) in q.iter().enumerate() {
                        // scales of the two 16-value halves of this 32-value chunk
                        // (scale 2c of the half in the low lane, 2c + 1 in the high one)
                        let sv = _mm256_shuffle_epi8(sch, SCALE_PAIRS[c]);
                        for i in 0..N {
                            let ab = a[i].add(b * Q8K + Q8K_QS + 128 * h + 32 * c);
                            sumi[i] = $dpwssd(sumi[i], _mm256_maddubs_epi16(*qc, load(ab)), sv);
                        }
                    }
                }
                block_terms(&mut acc, &sumi, sc16, a, b, d, 32.0 * d);
            }
            acc
        }

        /// Q2_K (`Q3 = false`, 84-byte blocks: 16 scale/min bytes, 64 bytes of 2-bit values, f16 d and
        /// dmin) or Q3_K (`Q3 = true`, 110 bytes: 32 bytes of high bits, 64 of 2-bit values, 12 of
        /// scales, f16 d) weights with `N` Q8_K activation rows.
        ///
        /// Value `128n + 32j + l` is bits `2j` of `qs[32n + l]` (plus, for Q3_K, 4 times bit `4n + j` of
        /// `hmask[l]`, minus 4); every 16 values share a scale (and for Q2_K a min). The values are used
        /// unsigned (Q3_K: 0..7) and the Q3_K offset `4 * d * sum(scale * activation 16-sums)` or the
        /// Q2_K mins term `dmin * sum(min * 16-sums)` is applied once per block ([`block_term`]).
        ///
        /// The same result as [`crate::kernels::x86::avx2::multi::q23_k`], bit for bit.
        ///
        /// # Safety
        /// As [`q45_k`], with Q2_K or Q3_K blocks.
        #[inline]
        #[target_feature(enable = $feat)]
        pub unsafe fn q23_k<const N: usize, const Q3: bool, const PF: bool, const PK: bool>(
            nb: usize,
            w: *const u8,
            a: [*const u8; N],
        ) -> [f32; N] {
            let (block, qs) = if Q3 { (Q3K, 32) } else { (Q2K, 16) };
            let mut acc = [0f32; N];
            for b in 0..nb {
                let wb = w.add(b * block);
                if N == 1 || PF {
                    prefetch_ahead(wb, block);
                }
                // 16 scales (and Q2_K's mins) as i16
                let (sc16, f, d) = if Q3 {
                    let sc16 = _mm256_cvtepi8_epi16(q3k_scales_i8(wb.add(96)));
                    let d = f16_at(wb.add(108));
                    (sc16, 4.0 * d, d)
                } else {
                    let raw = _mm_loadu_si128(wb as *const __m128i);
                    let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm_set1_epi8(0x0F)));
                    (sc16, f16_at(wb.add(82)), f16_at(wb.add(80)))
                };
                let hm = if Q3 { load(wb) } else { _mm256_setzero_si256() };
                let mut sumi = [_mm256_setzero_si256(); N];
                for n in 0..2 {
                    let q = load(wb.add(qs + 32 * n));
                    // this half's 8 scales in both 128-bit lanes, for the per-chunk shuffles
                    let sch = if n == 0 {
                        _mm256_permute2x128_si256(sc16, sc16, 0x00)
                    } else {
                        _mm256_permute2x128_si256(sc16, sc16, 0x11)
                    };
                    if PK {
                        // as Q6_K: chunks j and j + 1 of this half share a vpdpwssd
                        for j in [0, 2] {
                            let (u0, u1) = (
                                q23_values::<Q3>(q, hm, n, j),
                                q23_values::<Q3>(q, hm, n, j + 1),
                            );
                            let sv = _mm256_shuffle_epi8(sch, Q6_PAIRS[j / 2]);
                            for i in 0..N {
                                let ab = a[i].add(b * Q8K + Q8K_QS + 128 * n + 32 * j);
                                let z = _mm256_setzero_si256();
                                let p0 = $dpbusd(z, u0, load(ab));
                                let p1 = $dpbusd(z, u1, load(ab.add(32)));
                                sumi[i] = $dpwssd(sumi[i], _mm256_packs_epi32(p0, p1), sv);
                            }
                        }
                        continue;
                    }
                    for j in 0..4 {
                        let u = q23_values::<Q3>(q, hm, n, j);
                        let sv = _mm256_shuffle_epi8(sch, SCALE_PAIRS[j]);
                        for i in 0..N {
                            let ab = a[i].add(b * Q8K + Q8K_QS + 128 * n + 32 * j);
                            sumi[i] = $dpwssd(sumi[i], _mm256_maddubs_epi16(u, load(ab)), sv);
                        }
                    }
                }
                // what multiplies the activation 16-sums: Q3_K's scales (offset 4), Q2_K's mins
                let pair = if Q3 {
                    sc16
                } else {
                    _mm256_cvtepu8_epi16(_mm_srli_epi16(
                        _mm_andnot_si128(
                            _mm_set1_epi8(0x0F),
                            _mm_loadu_si128(wb as *const __m128i),
                        ),
                        4,
                    ))
                };
                block_terms(&mut acc, &sumi, pair, a, b, d, f);
            }
            acc
        }
    };
}

/// AVX-512 VNNI (with VL, F, BW and AVX2, FMA, F16C).
pub mod avx512vnni {
    kquant_kernels!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        _mm256_dpwssd_epi32,
        _mm256_dpbusd_epi32
    );
}

/// AVX-VNNI (with AVX2, FMA, F16C), for CPUs without AVX-512.
pub mod avxvnni {
    kquant_kernels!(
        "avxvnni,avx2,fma,f16c",
        _mm256_dpwssd_avx_epi32,
        _mm256_dpbusd_avx_epi32
    );
}
