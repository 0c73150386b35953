//! The VNNI packed prompt GEMMs (Q2_K..Q6_K, Q4_0, Q5_0, Q8_0), both forms, against the AVX2
//! ones bit for bit, for 1 to 4 activation rows and several splits of a row into chunks (the
//! K-quants in both of their routes, `DP`), against the single-row kernels, with negative
//! controls. A form the CPU lacks is skipped with the reason printed.

use super::vnni::{activations, forms, raw_weights};
use crate::gguf::GgmlType;
use crate::kernels::layout::{combine, Acc, PACK_GROUP, PACK_PAIR, PACK_ROWS};
use crate::kernels::x86::vnni::packed_k::{avx512vnni as ke, avx512vnni_x2 as kz, avxvnni as kv};
use crate::kernels::x86::{avx2, vnni};
use crate::sampling::Rng;

/// The accumulators of one GEMM call: per weight group, per activation row.
type Accs = [[Acc; PACK_ROWS]; PACK_PAIR];

/// A K-quant GEMM of `G` weight groups for `N` rows.
type Gemm<const N: usize, const G: usize> =
    unsafe fn(usize, usize, usize, [*const u8; G], [*const u8; N], [&mut [Acc; N]; G]);

/// Which GEMM runs.
#[derive(Clone, Copy, Debug)]
enum How {
    Avx2,
    /// What the dispatch runs ([`vnni::gemm`]) in the form `true` (AVX-512) or `false`.
    Vnni(bool),
    /// A 256-bit K-quant kernel of the form `.0` with the route `DP = .1`.
    Route(bool, bool),
    /// The 512-bit K-quant kernel (both groups at once) with the route `DP = .0`.
    X2(bool),
}

/// The 256-bit K-quant kernel of `t` in the form `avx512`, route `DP`.
fn k_gemm<const N: usize, const DP: bool>(t: GgmlType, avx512: bool) -> Gemm<N, 1> {
    use GgmlType::*;
    match (t, avx512) {
        (Q4_K, true) => ke::gemm_q45_k::<N, false, DP>,
        (Q5_K, true) => ke::gemm_q45_k::<N, true, DP>,
        (Q2_K | Q3_K, true) => ke::gemm_k16::<N, false, DP>,
        (Q6_K, true) => ke::gemm_k16::<N, true, DP>,
        (Q4_K, false) => kv::gemm_q45_k::<N, false, DP>,
        (Q5_K, false) => kv::gemm_q45_k::<N, true, DP>,
        (Q2_K | Q3_K, false) => kv::gemm_k16::<N, false, DP>,
        (Q6_K, false) => kv::gemm_k16::<N, true, DP>,
        _ => unreachable!("{t} is not a K-quant"),
    }
}

/// The 512-bit K-quant kernel of `t`, route `DP`.
fn k_gemm_x2<const N: usize, const DP: bool>(t: GgmlType) -> Gemm<N, 2> {
    use GgmlType::*;
    match t {
        Q4_K => kz::gemm_q45_k::<N, false, DP>,
        Q5_K => kz::gemm_q45_k::<N, true, DP>,
        Q2_K | Q3_K => kz::gemm_k16::<N, false, DP>,
        Q6_K => kz::gemm_k16::<N, true, DP>,
        _ => unreachable!("{t} is not a K-quant"),
    }
}

/// One case: blocks `b0..b0 + nb` of rows of `row_nb` blocks, packed per group in `packed`,
/// times the activation rows `a`.
struct Case<'a> {
    t: GgmlType,
    row_nb: usize,
    b0: usize,
    nb: usize,
    packed: &'a [Vec<u8>],
    a: &'a [Vec<u8>],
}

impl Case<'_> {
    /// `init` plus the GEMM `how` of the first `N` activation rows (the rest of `init` as is).
    fn run<const N: usize>(&self, how: How, init: &Accs) -> Accs {
        let mut acc = *init;
        let [a0, a1] = &mut acc;
        let c0: &mut [Acc; N] = (&mut a0[..N]).try_into().unwrap();
        let c1: &mut [Acc; N] = (&mut a1[..N]).try_into().unwrap();
        let p = [self.packed[0].as_ptr(), self.packed[1].as_ptr()];
        let rows: [*const u8; N] = std::array::from_fn(|r| self.a[r].as_ptr());
        let (t, b0, nb, row_nb) = (self.t, self.b0, self.nb, self.row_nb);
        // SAFETY: the forms run were detected (`forms`, which implies AVX2); every `packed[g]`
        // holds `nb` packed blocks, every activation row `row_nb` blocks with scales and sums.
        unsafe {
            match how {
                How::Avx2 => avx2::gemm::<N>(t, b0, nb, row_nb, p, rows, [c0, c1]),
                How::Vnni(true) => vnni::gemm::<N, true>(t, b0, nb, row_nb, p, rows, [c0, c1]),
                How::Vnni(false) => vnni::gemm::<N, false>(t, b0, nb, row_nb, p, rows, [c0, c1]),
                How::Route(avx512, dp) => {
                    let f = if dp {
                        k_gemm::<N, true>(t, avx512)
                    } else {
                        k_gemm::<N, false>(t, avx512)
                    };
                    f(b0, nb, row_nb, [p[0]], rows, [c0]);
                    f(b0, nb, row_nb, [p[1]], rows, [c1]);
                }
                How::X2(dp) => {
                    let f = if dp {
                        k_gemm_x2::<N, true>(t)
                    } else {
                        k_gemm_x2::<N, false>(t)
                    };
                    f(b0, nb, row_nb, p, rows, [c0, c1]);
                }
            }
        }
        acc
    }

    /// [`Case::run`] for `n` rows.
    fn run_n(&self, n: usize, how: How, init: &Accs) -> Accs {
        match n {
            1 => self.run::<1>(how, init),
            2 => self.run::<2>(how, init),
            3 => self.run::<3>(how, init),
            _ => self.run::<4>(how, init),
        }
    }
}

fn bits(acc: &Accs) -> Vec<u32> {
    acc.iter()
        .flatten()
        .flatten()
        .flatten()
        .map(|v| v.to_bits())
        .collect()
}

/// The types with packed GEMMs, all of which have VNNI ones.
const TYPES: [GgmlType; 8] = {
    use GgmlType::*;
    [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q4_0, Q5_0, Q8_0]
};

/// Packed blocks `b0..b0 + nb` of the two groups of 8 rows of `w`.
fn pack(t: GgmlType, w: &[Vec<u8>], b0: usize, nb: usize) -> Vec<Vec<u8>> {
    let bb = avx2::packed_block_bytes(t).unwrap();
    (0..PACK_PAIR)
        .map(|g| {
            let mut p = vec![0u8; nb * bb];
            let rows = std::array::from_fn(|r| w[PACK_GROUP * g + r].as_ptr());
            // SAFETY: AVX2 present (implied by the forms run); rows hold b0 + nb blocks, `p`
            // room for nb packed blocks.
            unsafe { avx2::pack(t, b0, nb, rows, p.as_mut_ptr()) };
            p
        })
        .collect()
}

#[test]
fn vnni_packed_gemms_equal_the_avx2_ones_bit_for_bit() {
    let test = "vnni_packed_gemms_equal_the_avx2_ones_bit_for_bit";
    let mut cases = 0;
    for (avx512, (i, t)) in forms(test)
        .into_iter()
        .flat_map(|f| TYPES.into_iter().enumerate().map(move |it| (f, it)))
    {
        assert!(vnni::has_gemm(t), "{t}");
        let bb = avx2::packed_block_bytes(t).unwrap();
        let mut hows = vec![How::Vnni(avx512)];
        if t.name().ends_with("_K") {
            hows.extend([How::Route(avx512, true), How::Route(avx512, false)]);
            if avx512 {
                hows.extend([How::X2(true), How::X2(false)]);
            }
        }
        // (row_nb, b0, nb): a chunk mid-row (the accumulator parts of the 32-value types start
        // mid-cycle), a whole row, one block at the end
        for (row_nb, b0, nb) in [(12, 3, 7), (13, 0, 13), (9, 8, 1)] {
            for extreme in [false, true] {
                let seed = 90 + 10 * i as u64 + extreme as u64 + 1000 * row_nb as u64;
                let w: Vec<Vec<u8>> = (0..PACK_PAIR * PACK_GROUP)
                    .map(|j| raw_weights(t, row_nb, seed + 100 * j as u64, extreme))
                    .collect();
                let packed = pack(t, &w, b0, nb);
                let (_, a) = activations(t, t.block_size() * row_nb, seed, extreme);
                let case = Case {
                    t,
                    row_nb,
                    b0,
                    nb,
                    packed: &packed,
                    a: &a,
                };
                let mut rng = Rng::new(seed);
                let init: Accs = std::array::from_fn(|_| {
                    std::array::from_fn(|_| {
                        std::array::from_fn(|_| std::array::from_fn(|_| rng.next_f64() as f32))
                    })
                });
                let mut changed = packed.clone();
                changed[1][(nb - 1) * bb + 5] ^= 0x03;
                let bad = Case {
                    packed: &changed,
                    ..case
                };
                for n in 1..=PACK_ROWS {
                    let want = case.run_n(n, How::Avx2, &init);
                    assert_ne!(bits(&want), bits(&init), "{t}: the GEMM added nothing");
                    for &how in &hows {
                        let what = format!("{t} {how:?} n={n} {row_nb}/{b0}/{nb} {extreme}");
                        assert_eq!(bits(&want), bits(&case.run_n(n, how, &init)), "{what}");
                        // negative control: a changed quant in group 1's last block shows in
                        // group 1 alone
                        let got = bad.run_n(n, how, &init);
                        assert_eq!(bits(&[want[0], init[1]])[..], bits(&[got[0], init[1]])[..]);
                        assert_ne!(want[1], got[1], "{what}: a changed quant went unnoticed");
                        cases += 1;
                    }
                }
            }
        }
    }
    eprintln!("{test}: {cases} cases");
}

#[test]
fn vnni_packed_gemms_equal_the_single_row_kernels() {
    // From zero accumulators over whole rows, a packed GEMM's result per (activation row,
    // weight row) is what the single-row kernel of that form computes, bit for bit: what makes
    // a prompt's results independent of its batching (the matmul tests check it end to end)
    let test = "vnni_packed_gemms_equal_the_single_row_kernels";
    for (avx512, (i, t)) in forms(test)
        .into_iter()
        .flat_map(|f| TYPES.into_iter().enumerate().map(move |it| (f, it)))
    {
        // SAFETY: the form was detected.
        let (one, dot) = unsafe {
            if avx512 {
                (vnni::dot_with_scales::<true>(t), vnni::dot::<true>(t))
            } else {
                (vnni::dot_with_scales::<false>(t), vnni::dot::<false>(t))
            }
        };
        let row_nb = if t.name().ends_with("_K") { 3 } else { 22 };
        let k = t.block_size() * row_nb;
        let seed = 300 + i as u64;
        let w: Vec<Vec<u8>> = (0..PACK_PAIR * PACK_GROUP)
            .map(|j| raw_weights(t, row_nb, seed + j as u64, false))
            .collect();
        let packed = pack(t, &w, 0, row_nb);
        let (plain, scaled) = activations(t, k, seed, false);
        let case = Case {
            t,
            row_nb,
            b0: 0,
            nb: row_nb,
            packed: &packed,
            a: &scaled,
        };
        let zero: Accs = [[[[0.0; PACK_GROUP]; 4]; PACK_ROWS]; PACK_PAIR];
        let acc = case.run_n(PACK_ROWS, How::Vnni(avx512), &zero);
        for g in 0..PACK_PAIR {
            for r in 0..PACK_ROWS {
                for lane in 0..PACK_GROUP {
                    let wr = &w[PACK_GROUP * g + lane];
                    let single = match (one, dot) {
                        (Some(f), _) => f(k, wr, &scaled[r]),
                        (None, Some(f)) => f(k, wr, &plain[r]),
                        _ => unreachable!("{t} has a single-row kernel"),
                    };
                    let packed = combine(&acc[g][r], lane);
                    assert_eq!(
                        packed.to_bits(),
                        single.to_bits(),
                        "{t} {avx512} group {g} row {r} lane {lane}: {packed} vs {single}"
                    );
                }
            }
        }
    }
}
