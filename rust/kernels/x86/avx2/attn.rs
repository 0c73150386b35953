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

/// `exp(x)` per lane for `x <= 0` (Cephes' single-precision polynomial: within 2 ulp of the true
/// value; inputs below -87.3, `-inf` included, give about 1.2e-38 instead of 0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_nonpositive(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.336_54));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    // r = x - n * ln 2, with ln 2 split in two for precision
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        y,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)))
}

/// `s[j] = exp(s[j] - m)` for `j < n` and the sum of these (8 lanes in `j` order, then one fixed
/// tree); the entries `n..` up to the next multiple of 8 are set to 0.
///
/// # Safety
/// AVX2/FMA/F16C present; `s` holds `n` rounded up to a multiple of 8 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp_sum(n: usize, s: *mut f32, m: f32) -> f32 {
    let mv = _mm256_set1_ps(m);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut acc = _mm256_setzero_ps();
    let mut j = 0;
    while j < n {
        let e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s.add(j)), mv));
        let valid = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - j).min(8) as i32), lane);
        let e = _mm256_and_ps(e, _mm256_castsi256_ps(valid));
        _mm256_storeu_ps(s.add(j), e);
        acc = _mm256_add_ps(acc, e);
        j += 8;
    }
    crate::kernels::x86::hsum(acc)
}
