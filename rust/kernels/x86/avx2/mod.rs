//! The AVX2/FMA/F16C kernels and their safe entry points, per weight type: the single-row dot
//! (decode), the multi-row dot (short prompts) and the packed GEMM (long prompts).
//!
//! The kernels ([`dots`], [`multi`], [`packed_q`], [`packed_k`]) are `unsafe fn`s over raw
//! pointers; the functions handed out here check every length once per call (not per block) and
//! panic on a short row, so that a safe caller can never make them read out of bounds. The tables
//! are `unsafe fn`s themselves: what they return uses AVX2, FMA and F16C, so they may only be
//! asked once [`super::has_avx2`] said yes.

pub mod attn;
pub mod dots;
pub mod multi;
pub mod packed_k;
pub mod packed_q;
pub(crate) mod unpack;

use crate::gguf::GgmlType;
use crate::kernels::acts::ActKind;
use crate::kernels::acts::{q8_0_row_with_scales_bytes, q8_0_scales_offset, q8_0_sums_offset};
use crate::kernels::layout::{Acc, DotFn, DotRowsN, PACK_GROUP, PACK_PAIR};
#[cfg(doc)]
use crate::kernels::layout::{ROWS, ROWS2, ROWS4};

/// Panics unless `w` holds `k` elements of `t` and `a` `a_len` bytes.
#[inline(always)]
fn check(t: GgmlType, k: usize, w: &[u8], a: &[u8], a_len: usize) {
    assert!(
        k.is_multiple_of(t.block_size())
            && w.len() >= k / t.block_size() * t.type_size()
            && a.len() >= a_len,
        "{t} dot of {k} elements: weight row of {} bytes, activation row of {} (needs {a_len})",
        w.len(),
        a.len()
    );
}

/// Run the `N`-row kernel for `t` (Q4_K, Q5_K, Q6_K, Q8_0 or Q4_0) after checking lengths.
#[inline(always)]
fn multi<const N: usize>(t: GgmlType, k: usize, w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = k / t.block_size();
    let kind = ActKind::of(t).expect("quantized type");
    // Q8_0 activation rows carry their scales as f32 after the blocks (QActs::row_with_scales)
    let a_len = if kind == ActKind::Q8_0 {
        q8_0_row_with_scales_bytes(nb)
    } else {
        kind.row_bytes(k)
    };
    assert!(
        k.is_multiple_of(t.block_size())
            && w.len() >= nb * t.type_size()
            && a.iter().all(|r| r.len() >= a_len)
    );
    debug_assert!(super::has_avx2());
    let ap = a.map(|r| r.as_ptr());
    // SAFETY: AVX2/FMA/F16C were detected by the dispatcher that handed out this function; the
    // lengths are checked above.
    unsafe {
        match t {
            GgmlType::Q4_K => multi::q45_k::<N, false, true>(nb, w.as_ptr(), ap),
            GgmlType::Q5_K => multi::q45_k::<N, true, true>(nb, w.as_ptr(), ap),
            GgmlType::Q6_K => multi::q6_k::<N, true>(nb, w.as_ptr(), ap),
            GgmlType::Q2_K => multi::q23_k::<N, false, true>(nb, w.as_ptr(), ap),
            GgmlType::Q3_K => multi::q23_k::<N, true, true>(nb, w.as_ptr(), ap),
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let (so, mo) = (q8_0_scales_offset(nb), q8_0_sums_offset(nb));
                let w = w.as_ptr();
                match t {
                    GgmlType::Q8_0 => {
                        multi::q8_acts::<N, { multi::Q8_0W }, true>(nb, w, ap, so, mo)
                    }
                    GgmlType::Q4_0 => {
                        multi::q8_acts::<N, { multi::Q4_0W }, true>(nb, w, ap, so, mo)
                    }
                    _ => multi::q8_acts::<N, { multi::Q5_0W }, true>(nb, w, ap, so, mo),
                }
            }
            _ => unreachable!("no multi-row kernel for {t}"),
        }
    }
}

/// The single-row dot taking a [`crate::kernels::QActs::row`] for `t`, where this instruction set
/// has one that beats candle's (Q4_0, Q5_0 and Q8_0 have [`dot_with_scales`] instead).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C ([`super::has_avx2`]).
pub(crate) unsafe fn dot(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    // SAFETY (each unsafe block): AVX2/FMA/F16C were detected (this function's contract); the
    // lengths are checked just before.
    Some(match t {
        Q4_1 => |k, w, a| {
            check(Q4_1, k, w, a, ActKind::Q8_1.row_bytes(k));
            unsafe { dots::dot_q4_1(k / 32, w, a) }
        },
        Q5_1 => |k, w, a| {
            check(Q5_1, k, w, a, ActKind::Q8_1.row_bytes(k));
            unsafe { dots::dot_q5_1(k / 32, w, a) }
        },
        F16 => |k, w, a| {
            check(F16, k, w, a, ActKind::F16.row_bytes(k));
            unsafe { dots::dot_f16(k, w, a) }
        },
        F32 => |k, w, a| {
            check(F32, k, w, a, ActKind::F32.row_bytes(k));
            unsafe { dots::dot_f32(k, w, a) }
        },
        Q4_K => |k, w, a| multi::<1>(Q4_K, k, w, [a])[0],
        Q5_K => |k, w, a| multi::<1>(Q5_K, k, w, [a])[0],
        // candle has a Q6_K dot too, but without the prefetch that decode from memory needs
        Q6_K => |k, w, a| multi::<1>(Q6_K, k, w, [a])[0],
        Q2_K => |k, w, a| multi::<1>(Q2_K, k, w, [a])[0],
        Q3_K => |k, w, a| multi::<1>(Q3_K, k, w, [a])[0],
        _ => return None,
    })
}

/// The single-row dot taking a [`crate::kernels::QActs::row_with_scales`] for `t` (the `N = 1`
/// [`multi::q8_acts`], which uses the f32 scales and block sums).
///
/// # Safety
/// As [`dot`].
pub(crate) unsafe fn dot_with_scales(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match t {
        Q8_0 => |k, w, a| multi::<1>(Q8_0, k, w, [a])[0],
        Q4_0 => |k, w, a| multi::<1>(Q4_0, k, w, [a])[0],
        Q5_0 => |k, w, a| multi::<1>(Q5_0, k, w, [a])[0],
        _ => return None,
    })
}

/// The multi-row dot of `N` activation rows for `t`, if any: [`ROWS`], [`ROWS4`] or [`ROWS2`]
/// (see [`crate::kernels::Kernels::dot_rows`], `dot_rows4` and `dot_rows2`).
///
/// # Safety
/// As [`dot`].
pub(crate) unsafe fn dot_rows<const N: usize>(t: GgmlType) -> Option<DotRowsN<N>> {
    use GgmlType::*;
    Some(match t {
        Q4_K => |k, w, a| multi::<N>(Q4_K, k, w, a),
        Q5_K => |k, w, a| multi::<N>(Q5_K, k, w, a),
        Q6_K => |k, w, a| multi::<N>(Q6_K, k, w, a),
        Q2_K => |k, w, a| multi::<N>(Q2_K, k, w, a),
        Q3_K => |k, w, a| multi::<N>(Q3_K, k, w, a),
        Q8_0 => |k, w, a| multi::<N>(Q8_0, k, w, a),
        Q4_0 => |k, w, a| multi::<N>(Q4_0, k, w, a),
        Q5_0 => |k, w, a| multi::<N>(Q5_0, k, w, a),
        _ => return None,
    })
}

/// Bytes of one packed block of [`PACK_GROUP`] weight rows of `t`, for the types with a packed
/// GEMM: every type whose single-row and multi-row kernels sum in its order.
pub fn packed_block_bytes(t: GgmlType) -> Option<usize> {
    use GgmlType::*;
    Some(match t {
        Q4_0 | Q5_0 => packed_q::Q4_0_PACKED,
        Q8_0 => packed_q::Q8_0_PACKED,
        Q4_K | Q5_K => packed_k::Q4_K_PACKED,
        Q2_K | Q3_K | Q6_K => packed_k::K16_PACKED,
        _ => return None,
    })
}

/// Pack blocks `b0..b0 + nb` of [`PACK_GROUP`] weight rows of `t` into `out`.
///
/// # Safety
/// As [`dot`]; `t` has [`packed_block_bytes`]; every `rows[i]` holds blocks `b0..b0 + nb`;
/// `out` holds `nb` packed blocks.
pub(crate) unsafe fn pack(
    t: GgmlType,
    b0: usize,
    nb: usize,
    rows: [*const u8; PACK_GROUP],
    o: *mut u8,
) {
    use {packed_k as k, packed_q as q};
    match t {
        GgmlType::Q4_0 => q::pack_q4_0(b0, nb, rows, o),
        GgmlType::Q5_0 => q::pack_q5_0(b0, nb, rows, o),
        GgmlType::Q8_0 => q::pack_q8_0(b0, nb, rows, o),
        GgmlType::Q4_K => k::pack_q45_k::<false>(b0, nb, rows, o),
        GgmlType::Q5_K => k::pack_q45_k::<true>(b0, nb, rows, o),
        GgmlType::Q2_K => k::pack_q23_k::<false>(b0, nb, rows, o),
        GgmlType::Q3_K => k::pack_q23_k::<true>(b0, nb, rows, o),
        GgmlType::Q6_K => k::pack_q6_k(b0, nb, rows, o),
        t => unreachable!("no packed kernel for {t}"),
    }
}

/// `acc[g][r][i] += dot(blocks b0..b0 + nb of row i of weight group g, of activation row r)` for
/// the [`PACK_PAIR`] packed groups `p` of `t` and `N` activation rows of `row_nb` blocks.
///
/// # Safety
/// As [`pack`]; each `p[g]` holds `nb` packed blocks (from [`pack`]); each `rows[r]` a whole
/// activation row as [`crate::kernels::QActs::row_with_scales`] gives it.
pub(crate) unsafe fn gemm<const N: usize>(
    t: GgmlType,
    b0: usize,
    nb: usize,
    row_nb: usize,
    p: [*const u8; PACK_PAIR],
    rows: [*const u8; N],
    acc: [&mut [Acc; N]; PACK_PAIR],
) {
    use {packed_k as k, packed_q as q};
    // Q4_0 and Q5_0 run both groups in one pass; Q8_0 and the K-quants one at a time (they keep
    // more vectors live per group: two groups per pass would spill registers)
    let one = match t {
        GgmlType::Q8_0 => q::gemm_q8_0::<N>,
        GgmlType::Q4_0 => return q::gemm_q45_0::<N, false>(b0, nb, row_nb, p, rows, acc),
        GgmlType::Q5_0 => return q::gemm_q45_0::<N, true>(b0, nb, row_nb, p, rows, acc),
        GgmlType::Q4_K => k::gemm_q45_k::<N, false>,
        GgmlType::Q5_K => k::gemm_q45_k::<N, true>,
        GgmlType::Q2_K | GgmlType::Q3_K => k::gemm_k16::<N, 4>,
        GgmlType::Q6_K => k::gemm_k16::<N, 2>,
        t => unreachable!("no packed kernel for {t}"),
    };
    for (p, acc) in p.into_iter().zip(acc) {
        one(b0, nb, row_nb, p, rows, acc);
    }
}
