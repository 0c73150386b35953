//! The AVX-512 VNNI kernels (AVX-512 F, BW, VL and VNNI, with AVX2, FMA and F16C) and their safe
//! entry points: the single-row (decode) and multi-row (short prompts) dots of every type of the
//! Med42 quant table, Q4_1's single-row dot, and the packed prompt GEMMs of Q4_0, Q5_0 and Q8_0
//! (on the AVX2 packing; the K-quants' packed GEMMs stay AVX2).
//!
//! Each computes the exact per-block integers of its AVX2 counterpart ([`super::avx2`]) with
//! fewer instructions (`vpdpbusd`, `vpdpwssd`, 512-bit registers for the K-quants) and combines
//! them with the same f32 operations in the same order, so a weight row times an activation row
//! gives the same f32 bit for bit on either instruction set; the packed prompt GEMMs (AVX2, or
//! [`packed`]) sum in that order too, so batching does not change results on an AVX-512 machine
//! either.
//!
//! As in [`super::avx2`], the functions handed out check every length once per call and panic on
//! a short row; the tables are `unsafe fn`s that may only be asked once
//! [`super::has_avx512vnni`] said yes.

pub mod blocks32;
pub mod kquants;
pub mod packed;

use crate::gguf::GgmlType;
use crate::kernels::acts::ActKind;
use crate::kernels::acts::{q8_0_row_with_scales_bytes, q8_0_scales_offset, q8_0_sums_offset};
use crate::kernels::layout::{Acc, DotFn, DotRowsFn, PACK_PAIR, ROWS};
use crate::kernels::x86::avx2::multi::{Q4_0W, Q5_0W, Q8_0W};

/// Run the `N`-row kernel for `t` (Q2_K..Q6_K, Q4_0, Q5_0 or Q8_0) after checking lengths.
#[inline(always)]
fn multi<const N: usize>(t: GgmlType, k: usize, w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = k / t.block_size();
    let kind = ActKind::of(t).expect("quantized type");
    // Q8_0 activation rows carry their scales and sums after the blocks (QActs::row_with_scales)
    let a_len = if kind == ActKind::Q8_0 {
        q8_0_row_with_scales_bytes(nb)
    } else {
        kind.row_bytes(k)
    };
    assert!(
        k.is_multiple_of(t.block_size())
            && w.len() >= nb * t.type_size()
            && a.iter().all(|r| r.len() >= a_len),
        "{t} dot of {k} elements: weight row of {} bytes, activation rows need {a_len}",
        w.len()
    );
    debug_assert!(super::has_avx512vnni());
    let (w, ap) = (w.as_ptr(), a.map(|r| r.as_ptr()));
    let (so, mo) = (q8_0_scales_offset(nb), q8_0_sums_offset(nb));
    use {blocks32 as q, kquants as kq};
    // SAFETY: AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C were detected by the dispatcher that
    // handed out this function; the lengths are checked above.
    unsafe {
        match t {
            GgmlType::Q4_K => kq::q45_k::<N, false>(nb, w, ap),
            GgmlType::Q5_K => kq::q45_k::<N, true>(nb, w, ap),
            GgmlType::Q6_K => kq::q6_k::<N>(nb, w, ap),
            GgmlType::Q2_K => kq::q23_k::<N, false>(nb, w, ap),
            GgmlType::Q3_K => kq::q23_k::<N, true>(nb, w, ap),
            GgmlType::Q8_0 => q::q8_acts::<N, { Q8_0W }>(nb, w, ap, so, mo),
            GgmlType::Q4_0 => q::q8_acts::<N, { Q4_0W }>(nb, w, ap, so, mo),
            GgmlType::Q5_0 => q::q8_acts::<N, { Q5_0W }>(nb, w, ap, so, mo),
            _ => unreachable!("no multi-row kernel for {t}"),
        }
    }
}

/// The single-row dot taking a [`crate::kernels::QActs::row`] for `t`, where this instruction set
/// has one (Q4_0, Q5_0 and Q8_0 have [`dot_with_scales`] instead).
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C ([`super::has_avx512vnni`]).
pub(crate) unsafe fn dot(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match t {
        Q4_1 => |k, w, a| {
            let (nb, a_len) = (k / 32, ActKind::Q8_1.row_bytes(k));
            assert!(
                k.is_multiple_of(32) && w.len() >= nb * Q4_1.type_size() && a.len() >= a_len,
                "Q4_1 dot of {k} elements: weight row of {} bytes, activation row of {} \
                 (needs {a_len})",
                w.len(),
                a.len()
            );
            // SAFETY: the features were detected (this function's contract); lengths checked.
            unsafe { blocks32::dot_q4_1(nb, w, a) }
        },
        Q4_K => |k, w, a| multi::<1>(Q4_K, k, w, [a])[0],
        Q5_K => |k, w, a| multi::<1>(Q5_K, k, w, [a])[0],
        Q6_K => |k, w, a| multi::<1>(Q6_K, k, w, [a])[0],
        Q2_K => |k, w, a| multi::<1>(Q2_K, k, w, [a])[0],
        Q3_K => |k, w, a| multi::<1>(Q3_K, k, w, [a])[0],
        _ => return None,
    })
}

/// The single-row dot taking a [`crate::kernels::QActs::row_with_scales`] for `t`.
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

/// The multi-row dot for `t`, if any (see [`crate::kernels::Kernels::dot_rows`]).
///
/// # Safety
/// As [`dot`].
pub(crate) unsafe fn dot_rows(t: GgmlType) -> Option<DotRowsFn> {
    use GgmlType::*;
    Some(match t {
        Q4_K => |k, w, a| multi::<ROWS>(Q4_K, k, w, a),
        Q5_K => |k, w, a| multi::<ROWS>(Q5_K, k, w, a),
        Q6_K => |k, w, a| multi::<ROWS>(Q6_K, k, w, a),
        Q2_K => |k, w, a| multi::<ROWS>(Q2_K, k, w, a),
        Q3_K => |k, w, a| multi::<ROWS>(Q3_K, k, w, a),
        Q8_0 => |k, w, a| multi::<ROWS>(Q8_0, k, w, a),
        Q4_0 => |k, w, a| multi::<ROWS>(Q4_0, k, w, a),
        Q5_0 => |k, w, a| multi::<ROWS>(Q5_0, k, w, a),
        _ => return None,
    })
}

/// Whether `t` has a VNNI packed GEMM ([`gemm`]): Q4_0, Q5_0 and Q8_0.
pub fn has_gemm(t: GgmlType) -> bool {
    matches!(t, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0)
}

/// [`crate::kernels::x86::avx2::gemm`] with VNNI for the types of [`has_gemm`], on the same
/// packed blocks: the same accumulators bit for bit.
///
/// # Safety
/// As [`dot`]; otherwise as [`crate::kernels::x86::avx2::gemm`].
pub(crate) unsafe fn gemm<const N: usize>(
    t: GgmlType,
    b0: usize,
    nb: usize,
    row_nb: usize,
    p: [*const u8; PACK_PAIR],
    rows: [*const u8; N],
    acc: [&mut [Acc; N]; PACK_PAIR],
) {
    match t {
        GgmlType::Q4_0 => packed::gemm_q45_0::<N, false>(b0, nb, row_nb, p, rows, acc),
        GgmlType::Q5_0 => packed::gemm_q45_0::<N, true>(b0, nb, row_nb, p, rows, acc),
        GgmlType::Q8_0 => {
            for (p, acc) in p.into_iter().zip(acc) {
                packed::gemm_q8_0::<N>(b0, nb, row_nb, p, rows, acc);
            }
        }
        t => unreachable!("no VNNI packed kernel for {t}"),
    }
}
