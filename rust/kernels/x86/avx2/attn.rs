//! AVX2/FMA/F16C kernels of attention over the KV cache ([`crate::kernels::attn`]): a tile of
//! cached rows to f32 (F16 with F16C, Q8_0 blocks as `d * q`), the scores of one or two queries
//! against a tile, and the weighted sum of a tile's V rows.
//!
//! Each kernel gives one query the same bits whether it runs alone (`N = 1`) or beside another
//! (`N = 2`): every lane accumulates in one order with FMA, and the scores of four positions are
//! reduced by one fixed tree.

#![allow(unsafe_op_in_unsafe_fn)]
// index loops over the small register arrays keep each FMA's operands side by side
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::kernels::quantize::Q8_0_BYTES;
use crate::kernels::x86::f16_at;

/// `n` f16 (as bits) at `src` to f32 at `dst`.
///
/// # Safety
/// AVX2/FMA/F16C present; `src` and `dst` hold `n` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_to_f32(n: usize, src: *const u16, dst: *mut f32) {
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm_loadu_si128(src.add(i) as *const __m128i);
        _mm256_storeu_ps(dst.add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    while i < n {
        *dst.add(i) = f16_at(src.add(i) as *const u8);
        i += 1;
    }
}

/// `nb` Q8_0 blocks at `src` to `32 * nb` f32 at `dst`: `d * q`, one rounding each (as scalar).
///
/// # Safety
/// AVX2/FMA/F16C present; `src` holds `nb` blocks, `dst` room for `32 * nb` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_to_f32(nb: usize, src: *const u8, dst: *mut f32) {
    for b in 0..nb {
        let blk = src.add(b * Q8_0_BYTES);
        let d = _mm256_set1_ps(f16_at(blk));
        for c in 0..4 {
            let q = _mm_loadl_epi64(blk.add(2 + 8 * c) as *const __m128i);
            let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(dst.add(32 * b + 8 * c), _mm256_mul_ps(f, d));
        }
    }
}

/// The four lane sums of `a` as one vector: `[sum a0, sum a1, sum a2, sum a3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum4(a: &[__m256; 4]) -> __m128 {
    let s01 = _mm256_hadd_ps(a[0], a[1]);
    let s23 = _mm256_hadd_ps(a[2], a[3]);
    let s = _mm256_hadd_ps(s01, s23);
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
}

/// `s[i][j] = q[i] . k[j]` for rows `j < 4 * groups` of `k` (rows of `d` f32) and `N` queries.
///
/// # Safety
/// AVX2/FMA/F16C present; `d % 8 == 0`; each `q[i]` holds `d` values, `k` `4 * groups` rows,
/// each `s[i]` `4 * groups` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores<const N: usize>(
    d: usize,
    q: [*const f32; N],
    k: *const f32,
    groups: usize,
    s: [*mut f32; N],
) {
    for gi in 0..groups {
        let kr = k.add(gi * 4 * d);
        let mut acc = [[_mm256_setzero_ps(); 4]; N];
        let mut c = 0;
        while c < d {
            let mut kv = [_mm256_setzero_ps(); 4];
            for (r, kv) in kv.iter_mut().enumerate() {
                *kv = _mm256_loadu_ps(kr.add(r * d + c));
            }
            for i in 0..N {
                let qv = _mm256_loadu_ps(q[i].add(c));
                for r in 0..4 {
                    acc[i][r] = _mm256_fmadd_ps(qv, kv[r], acc[i][r]);
                }
            }
            c += 8;
        }
        for i in 0..N {
            _mm_storeu_ps(s[i].add(4 * gi), hsum4(&acc[i]));
        }
    }
}

/// `o[i][..d] += sum_{j < n} p[i][j] * v[j]` for `N` queries, `j` in order (rows of `d` f32).
///
/// # Safety
/// AVX2/FMA/F16C present; `d % 8 == 0`; each `p[i]` holds `n` values, `v` `n` rows, each `o[i]`
/// `d` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn accumulate<const N: usize>(
    d: usize,
    p: [*const f32; N],
    v: *const f32,
    n: usize,
    o: [*mut f32; N],
) {
    let mut c = 0;
    // 32 columns at a time (4 vectors per query), then 8
    while c + 32 <= d {
        let mut acc = [[_mm256_setzero_ps(); 4]; N];
        for i in 0..N {
            for r in 0..4 {
                acc[i][r] = _mm256_loadu_ps(o[i].add(c + 8 * r));
            }
        }
        for j in 0..n {
            let vr = v.add(j * d + c);
            let mut vv = [_mm256_setzero_ps(); 4];
            for (r, vv) in vv.iter_mut().enumerate() {
                *vv = _mm256_loadu_ps(vr.add(8 * r));
            }
            for i in 0..N {
                let pj = _mm256_set1_ps(*p[i].add(j));
                for r in 0..4 {
                    acc[i][r] = _mm256_fmadd_ps(pj, vv[r], acc[i][r]);
                }
            }
        }
        for i in 0..N {
            for r in 0..4 {
                _mm256_storeu_ps(o[i].add(c + 8 * r), acc[i][r]);
            }
        }
        c += 32;
    }
    while c < d {
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..N {
            acc[i] = _mm256_loadu_ps(o[i].add(c));
        }
        for j in 0..n {
            let vv = _mm256_loadu_ps(v.add(j * d + c));
            for i in 0..N {
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(*p[i].add(j)), vv, acc[i]);
            }
        }
        for i in 0..N {
            _mm256_storeu_ps(o[i].add(c), acc[i]);
        }
        c += 8;
    }
}
