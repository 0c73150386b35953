//! The VNNI kernels and their safe entry points, in two forms ([`Vnni`]): AVX-512 VNNI (with F,
//! BW and VL, besides AVX2, FMA and F16C) and AVX-VNNI (the VEX form, on CPUs without AVX-512),
//! both on 256-bit registers: the single-row (decode) and multi-row (short prompts) dots of
//! every type of the Med42 quant table, Q4_1's single-row dot, and the packed prompt GEMMs of
//! that table ([`packed`]: Q4_0, Q5_0, Q8_0; [`packed_k`]: Q2_K..Q6_K; on the AVX2 packing).
//!
//! Each computes the exact per-block integers of its AVX2 counterpart ([`super::avx2`]) with
//! fewer instructions (`vpdpbusd`, `vpdpwssd`) and combines them with the same f32 operations in
//! the same order, so a weight row times an activation row gives the same f32 bit for bit on
//! either instruction set; the packed prompt GEMMs sum in that order too,
//! so batching does not change results on a VNNI machine either.
//!
//! As in [`super::avx2`], the functions handed out check every length once per call and panic on
//! a short row; the tables are `unsafe fn`s that may only be asked for a form the CPU has
//! ([`Vnni::detect`]).

pub mod blocks32;
pub mod kquants;
pub mod packed;
pub mod packed_k;

use crate::gguf::GgmlType;
use crate::kernels::acts::ActKind;
use crate::kernels::acts::{q8_0_row_with_scales_bytes, q8_0_scales_offset, q8_0_sums_offset};
use crate::kernels::layout::{Acc, DotFn, DotRowsN, PACK_PAIR};
#[cfg(doc)]
use crate::kernels::layout::{ROWS, ROWS2, ROWS4};
use crate::kernels::x86::avx2::multi::{Q4_0W, Q5_0W, Q8_0W};

/// A form of the VNNI kernels; as a const parameter `AVX512` of the tables, `true` is
/// [`Vnni::Avx512`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Vnni {
    /// AVX-512 F/BW/VL/VNNI with AVX2, FMA and F16C ([`super::has_avx512vnni`]).
    Avx512,
    /// AVX-VNNI with AVX2, FMA and F16C ([`super::has_avxvnni`]).
    Avx,
}

impl Vnni {
    /// The form this CPU runs, if any (AVX-512 where it has both).
    pub fn detect() -> Option<Self> {
        if super::has_avx512vnni() {
            Some(Vnni::Avx512)
        } else if super::has_avxvnni() {
            Some(Vnni::Avx)
        } else {
            None
        }
    }

    /// The name `build_info()` reports for kernels of this form.
    pub fn name(self) -> &'static str {
        match self {
            Vnni::Avx512 => "avx512vnni",
            Vnni::Avx => "avxvnni",
        }
    }
}

/// The number of blocks of a `k`-element row of `t`, after checking that `w` and every row of
/// `a` hold them (panics otherwise).
#[inline(always)]
fn check<const N: usize>(t: GgmlType, k: usize, w: &[u8], a: [&[u8]; N]) -> usize {
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
    nb
}

/// Run the `N`-row kernel for `t` (Q2_K..Q6_K, Q4_0, Q5_0 or Q8_0) of the form `AVX512`
/// ([`Vnni`]) after checking lengths.
#[inline(always)]
fn multi<const N: usize, const AVX512: bool>(
    t: GgmlType,
    k: usize,
    w: &[u8],
    a: [&[u8]; N],
) -> [f32; N] {
    let nb = check::<N>(t, k, w, a);
    debug_assert!(if AVX512 {
        super::has_avx512vnni()
    } else {
        super::has_avxvnni()
    });
    let (w, ap) = (w.as_ptr(), a.map(|r| r.as_ptr()));
    let (so, mo) = (q8_0_scales_offset(nb), q8_0_sums_offset(nb));
    use blocks32::{avx512vnni as q, avxvnni as qv};
    use kquants::{avx512vnni as k, avxvnni as kv};
    use GgmlType::*;
    // SAFETY: the dispatcher that handed out this function detected the features of the form
    // `AVX512`; the lengths are checked above.
    unsafe {
        match (t, AVX512) {
            (Q4_K, true) => k::q45_k::<N, false, true, true>(nb, w, ap),
            (Q5_K, true) => k::q45_k::<N, true, true, true>(nb, w, ap),
            (Q6_K, true) => k::q6_k::<N, true, true>(nb, w, ap),
            (Q2_K, true) => k::q23_k::<N, false, true, true>(nb, w, ap),
            (Q3_K, true) => k::q23_k::<N, true, true, true>(nb, w, ap),
            (Q8_0, true) => q::q8_acts::<N, { Q8_0W }, true>(nb, w, ap, so, mo),
            (Q4_0, true) => q::q8_acts::<N, { Q4_0W }, true>(nb, w, ap, so, mo),
            (Q5_0, true) => q::q8_acts::<N, { Q5_0W }, true>(nb, w, ap, so, mo),
            (Q4_K, false) => kv::q45_k::<N, false, true, true>(nb, w, ap),
            (Q5_K, false) => kv::q45_k::<N, true, true, true>(nb, w, ap),
            (Q6_K, false) => kv::q6_k::<N, true, true>(nb, w, ap),
            (Q2_K, false) => kv::q23_k::<N, false, true, true>(nb, w, ap),
            (Q3_K, false) => kv::q23_k::<N, true, true, true>(nb, w, ap),
            (Q8_0, false) => qv::q8_acts::<N, { Q8_0W }, true>(nb, w, ap, so, mo),
            (Q4_0, false) => qv::q8_acts::<N, { Q4_0W }, true>(nb, w, ap, so, mo),
            (Q5_0, false) => qv::q8_acts::<N, { Q5_0W }, true>(nb, w, ap, so, mo),
            _ => unreachable!("no multi-row kernel for {t}"),
        }
    }
}

/// The single-row dot of the form `AVX512` ([`Vnni`]) taking a [`crate::kernels::QActs::row`]
/// for `t`, where it has one (Q4_0, Q5_0 and Q8_0 have [`dot_with_scales`] instead).
///
/// # Safety
/// The CPU has the features of the form: [`super::has_avx512vnni`] when `AVX512`, else
/// [`super::has_avxvnni`].
pub(crate) unsafe fn dot<const AVX512: bool>(t: GgmlType) -> Option<DotFn> {
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
            unsafe {
                if AVX512 {
                    blocks32::avx512vnni::dot_q4_1(nb, w, a)
                } else {
                    blocks32::avxvnni::dot_q4_1(nb, w, a)
                }
            }
        },
        Q4_K => |k, w, a| multi::<1, AVX512>(Q4_K, k, w, [a])[0],
        Q5_K => |k, w, a| multi::<1, AVX512>(Q5_K, k, w, [a])[0],
        Q6_K => |k, w, a| multi::<1, AVX512>(Q6_K, k, w, [a])[0],
        Q2_K => |k, w, a| multi::<1, AVX512>(Q2_K, k, w, [a])[0],
        Q3_K => |k, w, a| multi::<1, AVX512>(Q3_K, k, w, [a])[0],
        _ => return None,
    })
}

/// The single-row dot of the form `AVX512` taking a [`crate::kernels::QActs::row_with_scales`]
/// for `t`.
///
/// # Safety
/// As [`dot`].
pub(crate) unsafe fn dot_with_scales<const AVX512: bool>(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match t {
        Q8_0 => |k, w, a| multi::<1, AVX512>(Q8_0, k, w, [a])[0],
        Q4_0 => |k, w, a| multi::<1, AVX512>(Q4_0, k, w, [a])[0],
        Q5_0 => |k, w, a| multi::<1, AVX512>(Q5_0, k, w, [a])[0],
        _ => return None,
    })
}

/// The multi-row dot of `N` activation rows of the form `AVX512` for `t`, if any: [`ROWS`],
/// [`ROWS4`] or [`ROWS2`] (see [`crate::kernels::Kernels::dot_rows`], `dot_rows4` and
/// `dot_rows2`).
///
/// # Safety
/// As [`dot`].
pub(crate) unsafe fn dot_rows<const N: usize, const AVX512: bool>(
    t: GgmlType,
) -> Option<DotRowsN<N>> {
    use GgmlType::*;
    Some(match t {
        Q4_K => |k, w, a| multi::<N, AVX512>(Q4_K, k, w, a),
        Q5_K => |k, w, a| multi::<N, AVX512>(Q5_K, k, w, a),
        Q6_K => |k, w, a| multi::<N, AVX512>(Q6_K, k, w, a),
        Q2_K => |k, w, a| multi::<N, AVX512>(Q2_K, k, w, a),
        Q3_K => |k, w, a| multi::<N, AVX512>(Q3_K, k, w, a),
        Q8_0 => |k, w, a| multi::<N, AVX512>(Q8_0, k, w, a),
        Q4_0 => |k, w, a| multi::<N, AVX512>(Q4_0, k, w, a),
        Q5_0 => |k, w, a| multi::<N, AVX512>(Q5_0, k, w, a),
        _ => return None,
    })
}

/// Whether `t` has a VNNI packed GEMM ([`gemm`]): every type with an AVX2 one (Q2_K..Q6_K,
/// Q4_0, Q5_0 and Q8_0).
pub fn has_gemm(t: GgmlType) -> bool {
    use GgmlType::*;
    matches!(t, Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q4_0 | Q5_0 | Q8_0)
}

/// [`crate::kernels::x86::avx2::gemm`] with VNNI of the form `AVX512`, for the types of
/// [`has_gemm`], on the same packed blocks: the same accumulators bit for bit.
///
/// # Safety
/// As [`dot`]; otherwise as [`crate::kernels::x86::avx2::gemm`].
pub(crate) unsafe fn gemm<const N: usize, const AVX512: bool>(
    t: GgmlType,
    b0: usize,
    nb: usize,
    row_nb: usize,
    p: [*const u8; PACK_PAIR],
    rows: [*const u8; N],
    acc: [&mut [Acc; N]; PACK_PAIR],
) {
    use packed::{avx512vnni_x2 as z, avxvnni as v};
    use packed_k::{avx512vnni_x2 as kz, avxvnni as kv};
    use GgmlType::*;
    // With AVX-512 the 32-value-block types run both groups in the halves of 512-bit registers;
    // with AVX-VNNI Q4_0 and Q5_0 run both groups in one pass, Q8_0 one group at a time (as AVX2)
    match (t, AVX512) {
        (Q4_0, true) => return z::gemm_q45_0::<N, false>(b0, nb, row_nb, p, rows, acc),
        (Q5_0, true) => return z::gemm_q45_0::<N, true>(b0, nb, row_nb, p, rows, acc),
        (Q8_0, true) => return z::gemm_q8_0::<N>(b0, nb, row_nb, p, rows, acc),
        (Q4_0, false) => return v::gemm_q45_0::<N, false>(b0, nb, row_nb, p, rows, acc),
        (Q5_0, false) => return v::gemm_q45_0::<N, true>(b0, nb, row_nb, p, rows, acc),
        (Q8_0, false) => {
            for (p, acc) in p.into_iter().zip(acc) {
                v::gemm_q8_0::<N>(b0, nb, row_nb, p, rows, acc);
            }
            return;
        }
        _ => {}
    }
    // the K-quants: with AVX-512 both groups in the halves of 512-bit registers, else one group
    // at a time in 256-bit ones
    if AVX512 {
        const D: [bool; 4] = K_DP_512;
        return match t {
            Q4_K => kz::gemm_q45_k::<N, false, { D[0] }>(b0, nb, row_nb, p, rows, acc),
            Q5_K => kz::gemm_q45_k::<N, true, { D[1] }>(b0, nb, row_nb, p, rows, acc),
            Q2_K | Q3_K => kz::gemm_k16::<N, false, { D[2] }>(b0, nb, row_nb, p, rows, acc),
            Q6_K => kz::gemm_k16::<N, true, { D[3] }>(b0, nb, row_nb, p, rows, acc),
            t => unreachable!("no VNNI packed kernel for {t}"),
        };
    }
    const D: [bool; 4] = K_DP_256;
    type One<const N: usize> =
        unsafe fn(usize, usize, usize, [*const u8; 1], [*const u8; N], [&mut [Acc; N]; 1]);
    let one: One<N> = match t {
        Q4_K => kv::gemm_q45_k::<N, false, { D[0] }>,
        Q5_K => kv::gemm_q45_k::<N, true, { D[1] }>,
        Q2_K | Q3_K => kv::gemm_k16::<N, false, { D[2] }>,
        Q6_K => kv::gemm_k16::<N, true, { D[3] }>,
        t => unreachable!("no VNNI packed kernel for {t}"),
    };
    for (p, acc) in p.into_iter().zip(acc) {
        one(b0, nb, row_nb, [p], rows, [acc]);
    }
}

/// Which route the AVX-512 K-quant packed GEMMs ([`packed_k::avx512vnni_x2`], both groups of a
/// pair in 512-bit registers) take ([`packed_k`]'s `DP`), for Q4_K, Q5_K, Q2_K/Q3_K and Q6_K:
/// the faster one on a 2-core Xeon (Sapphire Rapids class) in `benches/rows.rs` (`packed`),
/// where these run in 0.70-0.88x the AVX2 kernels' time.
pub const K_DP_512: [bool; 4] = [true, true, true, false];

/// The same for the AVX-VNNI form ([`packed_k::avxvnni`], 256-bit, one group at a time): on the
/// same Xeon, `vpdpbusd` runs (0.87-0.94x AVX2's time) for Q4_K, Q2_K and Q3_K; for Q5_K and
/// Q6_K the 16-bit sums (about AVX2's time: the fused `vpdpwssd` is all these gain there).
pub const K_DP_256: [bool; 4] = [true, false, true, false];
