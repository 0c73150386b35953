//! The VNNI kernels, both forms, against the AVX2 kernels bit for bit (and against the scalar
//! reference and f64 math within rounding), over random and extreme blocks, with negative
//! controls. A form the CPU lacks (AVX-512 F/BW/VL/VNNI, AVX-VNNI) is skipped with the reason
//! printed.

use super::{dequant_act, quantize_weights, rand_vec};
use crate::gguf::GgmlType;
use crate::kernels::layout::{DotFn, DotRowsFn, ROWS};
use crate::kernels::reference::{dequantize_row, dot_fn_reference};
use crate::kernels::x86::{self, avx2, vnni};
use crate::kernels::{ActKind, QActs};
use crate::sampling::Rng;

/// The types with VNNI kernels (both forms): the Med42 table and Q4_1.
const TYPES: [GgmlType; 9] = {
    use GgmlType::*;
    [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q4_0, Q5_0, Q8_0, Q4_1]
};

/// Byte offsets of the f16 scale fields in a block of `t`.
pub(super) fn f16_fields(t: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match t {
        Q4_K | Q5_K | Q4_1 => &[0, 2],
        Q6_K => &[208],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        _ => &[0],
    }
}

/// The VNNI forms this CPU runs (`true`: AVX-512, `false`: AVX-VNNI); prints why one is missing.
pub(super) fn forms(test: &str) -> Vec<bool> {
    let mut f = Vec::new();
    for (avx512, has, what) in [
        (true, x86::has_avx512vnni(), "AVX-512 F/BW/VL/VNNI"),
        (false, x86::has_avxvnni(), "AVX-VNNI"),
    ] {
        if has {
            f.push(avx512);
        } else {
            eprintln!("{test}: {what} kernels skipped, this CPU lacks {what} (or AVX2/FMA/F16C)");
        }
    }
    f
}

/// Weight rows of `nb` blocks of `t` with arbitrary quant bytes (`extreme`: all 0xFF or all 0x80
/// / 0x7F patterns, the largest magnitudes each format holds) and finite f16 scales.
pub(super) fn raw_weights(t: GgmlType, nb: usize, seed: u64, extreme: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let bs = t.type_size();
    let mut w: Vec<u8> = (0..nb * bs)
        .map(|i| match (extreme, (i / bs) % 3) {
            (false, _) => rng.next_u64() as u8,
            (true, 0) => 0xFF,
            (true, 1) => 0x80,
            (true, _) => [0x7F, 0x80][i % 2],
        })
        .collect();
    for b in 0..nb {
        for &o in f16_fields(t) {
            let v = (rng.next_f64() * 2.0 - 1.0) * 0.05;
            let h = half::f16::from_f64(v).to_bits().to_le_bytes();
            w[b * bs + o..b * bs + o + 2].copy_from_slice(&h);
        }
    }
    w
}

/// `ROWS` activation rows of `k` values for `t` as the single-row kernel takes them and as the
/// multi-row kernel takes them (with scales and sums), converted from floats; with `extreme`
/// every block holds the largest magnitudes of its format (Q8_K: -128 and 127, Q8_0/Q8_1: +-127).
pub(super) fn activations(
    t: GgmlType,
    k: usize,
    seed: u64,
    extreme: bool,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut x = rand_vec(ROWS * k, seed);
    if extreme {
        for (i, v) in x.iter_mut().enumerate() {
            *v = if i % 5 == 0 {
                -1000.0
            } else {
                [999.0, -999.0][i % 2]
            };
        }
    }
    let mut acts = QActs::default();
    acts.convert(ActKind::of(t).unwrap(), &x, ROWS, k, 1);
    let plain = (0..ROWS).map(|r| acts.row(r).to_vec()).collect();
    let scaled = (0..ROWS)
        .map(|r| acts.row_with_scales(r).to_vec())
        .collect();
    (plain, scaled)
}

/// The kernels of one type on one instruction set.
struct Set {
    single: DotFn,
    with_scales: bool,
    rows: Option<DotRowsFn>,
}

/// The AVX2 kernels of `t` and those of the VNNI form `avx512`.
fn kernels(t: GgmlType, avx512: bool) -> (Set, Set) {
    // SAFETY: the callers run only the forms `forms` found, which imply AVX2.
    unsafe {
        let set = |one: Option<DotFn>, dot: Option<DotFn>, rows| Set {
            single: one.or(dot).expect("a single-row kernel"),
            with_scales: one.is_some(),
            rows,
        };
        let fast = if avx512 {
            set(
                vnni::dot_with_scales::<true>(t),
                vnni::dot::<true>(t),
                vnni::dot_rows::<ROWS, true>(t),
            )
        } else {
            set(
                vnni::dot_with_scales::<false>(t),
                vnni::dot::<false>(t),
                vnni::dot_rows::<ROWS, false>(t),
            )
        };
        let v2 = set(
            avx2::dot_with_scales(t),
            avx2::dot(t),
            avx2::dot_rows::<ROWS>(t),
        );
        (v2, fast)
    }
}

/// Every kernel of `t` on `w` and the activation rows: the results of the VNNI form `avx512`,
/// after asserting that they equal the AVX2 ones bit for bit (single- and multi-row alike).
fn same_bits(
    t: GgmlType,
    avx512: bool,
    k: usize,
    w: &[u8],
    plain: &[Vec<u8>],
    scaled: &[Vec<u8>],
) -> Vec<f32> {
    let (v2, v512) = kernels(t, avx512);
    assert_eq!(v2.with_scales, v512.with_scales, "{t}");
    assert_eq!(v2.rows.is_some(), v512.rows.is_some(), "{t}");
    let rows: &[Vec<u8>] = if v512.with_scales { scaled } else { plain };
    let single: Vec<f32> = (0..ROWS)
        .map(|r| {
            let (a, b) = ((v2.single)(k, w, &rows[r]), (v512.single)(k, w, &rows[r]));
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{t} k={k} row {r}: avx2 {a} vs avx512 {b}"
            );
            b
        })
        .collect();
    if let (Some(m2), Some(m512)) = (v2.rows, v512.rows) {
        let a: [&[u8]; ROWS] = std::array::from_fn(|r| scaled[r].as_slice());
        let (x, y) = (m2(k, w, a), m512(k, w, a));
        for r in 0..ROWS {
            assert_eq!(x[r].to_bits(), y[r].to_bits(), "{t} k={k} multi row {r}");
            assert_eq!(
                y[r].to_bits(),
                single[r].to_bits(),
                "{t} k={k} multi vs single {r}"
            );
        }
    }
    single
}

/// Block counts per test row: several whole groups, and the tails of the 4-block groups.
fn lengths(t: GgmlType) -> Vec<usize> {
    if t.name().ends_with("_K") {
        vec![256, 1024]
    } else {
        vec![32, 64, 96, 800, 1024] // tails of 1, 2, 3, 1 and 0 blocks
    }
}

#[test]
fn vnni_kernels_equal_the_avx2_kernels_bit_for_bit() {
    for (avx512, (i, t)) in forms("vnni_kernels_equal_the_avx2_kernels_bit_for_bit")
        .into_iter()
        .flat_map(|f| TYPES.into_iter().enumerate().map(move |it| (f, it)))
    {
        for k in lengths(t) {
            let nb = k / t.block_size();
            for extreme in [false, true] {
                let seed = 1000 * i as u64 + k as u64 + extreme as u64;
                let (plain, scaled) = activations(t, k, seed, extreme);
                // random quant bytes, and the quantizer's own output
                let quantized = quantize_weights(t, &rand_vec(k, seed + 7));
                for w in [raw_weights(t, nb, seed, extreme), quantized] {
                    let got = same_bits(t, avx512, k, &w, &plain, &scaled);
                    assert!(got.iter().all(|v| v.is_finite()), "{t}: {got:?}");
                }
            }
        }
    }
}

#[test]
fn vnni_kernels_match_the_scalar_reference_and_f64_math() {
    for (avx512, (i, t)) in forms("vnni_kernels_match_the_scalar_reference_and_f64_math")
        .into_iter()
        .flat_map(|f| TYPES.into_iter().enumerate().map(move |it| (f, it)))
    {
        let k = 1024;
        let kind = ActKind::of(t).unwrap();
        let w = quantize_weights(t, &rand_vec(k, 50 + i as u64));
        let (plain, scaled) = activations(t, k, 60 + i as u64, false);
        let got = same_bits(t, avx512, k, &w, &plain, &scaled);
        let mut wd = vec![0f32; k];
        assert!(dequantize_row(t, &w, &mut wd));
        for (r, &g) in got.iter().enumerate() {
            let xd = dequant_act(kind, &plain[r], k);
            let exact: f64 = wd.iter().zip(&xd).map(|(&p, &q)| p as f64 * q as f64).sum();
            let scale: f64 = wd
                .iter()
                .zip(&xd)
                .map(|(&p, &q)| (p as f64 * q as f64).abs())
                .sum();
            let slow = dot_fn_reference(t).unwrap()(k, &w, &plain[r]);
            assert!(
                (g as f64 - slow as f64).abs() <= scale * 2e-6,
                "{t}: {g} vs scalar {slow}"
            );
            // Q4_1's activation sums are rounded to f16 (as in ggml): further from exact math
            let tol = if t == GgmlType::Q4_1 { 2e-3 } else { 2e-6 };
            assert!(
                (g as f64 - exact).abs() <= scale * tol,
                "{t}: {g} vs f64 {exact}"
            );
        }
    }
}

#[test]
fn a_perturbed_scale_or_quant_breaks_the_bit_equality() {
    // negative control: the comparison above notices a kernel that reads a scale, a quant or an
    // activation sum wrongly; changing one of them in the AVX-512 kernel's input only must change
    // its result against the AVX2 kernel on the unchanged input.
    for (avx512, (i, t)) in forms("a_perturbed_scale_or_quant_breaks_the_bit_equality")
        .into_iter()
        .flat_map(|f| TYPES.into_iter().enumerate().map(move |it| (f, it)))
    {
        let k = 512;
        let nb = k / t.block_size();
        let w = raw_weights(t, nb, 70 + i as u64, false);
        let (plain, scaled) = activations(t, k, 80 + i as u64, false);
        let (v2, v512) = kernels(t, avx512);
        let rows = if v512.with_scales { &scaled } else { &plain };
        let base = (v2.single)(k, &w, &rows[0]);
        assert_eq!(
            base.to_bits(),
            (v512.single)(k, &w, &rows[0]).to_bits(),
            "{t}"
        );
        let last = (nb - 1) * t.type_size();
        // the lowest mantissa bit of the last block's first scale
        let mut ws = w.clone();
        ws[last + f16_fields(t)[0]] ^= 1;
        assert_ne!(base, (v512.single)(k, &ws, &rows[0]), "{t}: scale");
        // a quant byte of the last block (just past the scales for the 32-blocks, in the quants
        // of the K-quants)
        let q = match t {
            GgmlType::Q6_K => 5,
            GgmlType::Q2_K => 20,
            GgmlType::Q3_K => 40,
            GgmlType::Q4_K => 20,
            GgmlType::Q5_K => 60,
            GgmlType::Q4_1 => 6,
            GgmlType::Q5_0 => 8,
            _ => 4,
        };
        let mut wq = w.clone();
        wq[last + q] ^= 0x11;
        assert_ne!(base, (v512.single)(k, &wq, &rows[0]), "{t}: quant");
        // the multi-row kernel: one row's activation block sum (Q8_0 kinds) or 16-sum (Q8_K)
        if let Some(m512) = v512.rows {
            let mut a = scaled.clone();
            let s = match ActKind::of(t).unwrap() {
                ActKind::Q8K => crate::kernels::acts::Q8K_BSUMS,
                _ => crate::kernels::acts::q8_0_sums_offset(nb),
            };
            a[3][s] ^= 1;
            let rows: [&[u8]; ROWS] = std::array::from_fn(|r| a[r].as_slice());
            let got = m512(k, &w, rows);
            let want = v2.rows.unwrap()(k, &w, std::array::from_fn(|r| scaled[r].as_slice()));
            for r in 0..ROWS {
                assert_eq!(
                    got[r] != want[r],
                    r == 3,
                    "{t}: row {r} after changing row 3's sums"
                );
            }
        }
    }
}
