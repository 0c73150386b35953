//! Each kernel against the scalar reference and f64 math, and the run-time dispatch.

use super::{dequant_act, quantize_weights, rand_vec, types};
use crate::gguf::GgmlType;
use crate::kernels::layout::ROWS;
use crate::kernels::reference::{dequantize_row, dot_fn_reference};
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86;
use crate::kernels::{ActKind, Kernels, QActs};

#[test]
fn simd_dots_match_the_scalar_reference_and_f64_math() {
    // 1024: even block counts; 96 / 800: odd counts of 32-blocks (the unrolled kernels' tails)
    for (k, i, t) in [1024usize, 96, 800].into_iter().flat_map(|k| {
        types()
            .enumerate()
            .filter(move |(_, t)| k == 1024 || !t.name().ends_with("_K"))
            // candle's scalar Q4_1/Q5_0/Q5_1 references debug-assert an even block count (a
            // leftover of their SIMD code; the scalar loop itself handles any count)
            .filter(move |(_, t)| {
                k == 1024
                    || !cfg!(debug_assertions)
                    || !matches!(t, GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1)
            })
            .map(move |(i, t)| (k, i, t))
    }) {
        let wf = rand_vec(k, 100 + i as u64);
        let xf = rand_vec(k, 200 + i as u64);
        let wb = quantize_weights(t, &wf);
        let kind = ActKind::of(t).unwrap();
        let mut acts = QActs::default();
        acts.convert(kind, &xf, 1, k, 1);
        let a = acts.row(0);
        // the engine's single-row kernel (for Q4_0/Q5_0/Q8_0 on AVX2 it takes the row with its
        // f32 scales and block sums) against candle's scalar code
        let fast = Kernels::for_type(t).unwrap().dot_single(k, &wb, &acts, 0);
        let slow = dot_fn_reference(t).unwrap()(k, &wb, a);
        let mut wd = vec![0f32; k];
        assert!(dequantize_row(t, &wb, &mut wd));
        let xd = dequant_act(kind, a, k);
        let exact: f64 = wd.iter().zip(&xd).map(|(&p, &q)| p as f64 * q as f64).sum();
        let scale: f64 = wd
            .iter()
            .zip(&xd)
            .map(|(&p, &q)| (p as f64 * q as f64).abs())
            .sum();
        let tol = scale
            * if matches!(t, GgmlType::F16 | GgmlType::BF16) {
                2e-3
            } else {
                2e-6
            };
        assert!(
            (fast as f64 - slow as f64).abs() <= tol,
            "{t}: simd {fast} vs scalar {slow}"
        );
        // The Q8_1 `s` field is rounded to f16, so Q4_1/Q5_1 differ from exact math by that rounding.
        let tol_exact = if matches!(t, GgmlType::Q4_1 | GgmlType::Q5_1) {
            scale * 2e-3
        } else {
            tol
        };
        assert!(
            (fast as f64 - exact).abs() <= tol_exact,
            "{t}: simd {fast} vs f64 {exact}"
        );
    }
}

#[test]
fn a_corrupted_weight_block_changes_the_dot() {
    // negative control: the comparison above would notice a kernel reading the wrong bytes
    let k = 256;
    let t = GgmlType::Q4_1;
    let mut wb = quantize_weights(t, &rand_vec(k, 1));
    let mut acts = QActs::default();
    acts.convert(ActKind::Q8_1, &rand_vec(k, 2), 1, k, 1);
    let kernels = Kernels::for_type(t).unwrap();
    let before = kernels.dot_single(k, &wb, &acts, 0);
    wb[4 + 3] ^= 0x5A; // flip quant bits in block 0
    let after = kernels.dot_single(k, &wb, &acts, 0);
    assert_ne!(before, after);
}

#[test]
fn multi_row_kernels_match_the_scalar_reference() {
    let with_rows = [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
    ];
    for (i, &t) in with_rows.iter().enumerate() {
        let Some(dot_rows) = Kernels::for_type(t).and_then(|k| k.dot_rows) else {
            // no AVX2 here: nothing to compare, and the matmul falls back to single rows
            continue;
        };
        // 768 = 3 super-blocks / 24 blocks; also a single block
        for k in [768usize, if t.name().ends_with("_K") { 256 } else { 32 }] {
            let wb = quantize_weights(t, &rand_vec(k, 300 + i as u64));
            let xf = rand_vec(ROWS * k, 400 + i as u64);
            let kind = ActKind::of(t).unwrap();
            let mut acts = QActs::default();
            acts.convert(kind, &xf, ROWS, k, 1);
            let rows: [&[u8]; ROWS] = std::array::from_fn(|r| acts.row_with_scales(r));
            let got = dot_rows(k, &wb, rows);
            for (r, &g) in got.iter().enumerate() {
                let a = acts.row(r);
                let slow = dot_fn_reference(t).unwrap()(k, &wb, a);
                let mut wd = vec![0f32; k];
                assert!(dequantize_row(t, &wb, &mut wd));
                let xd = dequant_act(kind, a, k);
                let scale: f64 = wd
                    .iter()
                    .zip(&xd)
                    .map(|(&p, &q)| (p as f64 * q as f64).abs())
                    .sum();
                let exact: f64 = wd.iter().zip(&xd).map(|(&p, &q)| p as f64 * q as f64).sum();
                assert!(
                    (g as f64 - slow as f64).abs() <= scale * 2e-6,
                    "{t} k={k} row {r}: {g} vs {slow}"
                );
                // the single-row kernel sums in the multi-row kernel's order: the same bits
                let one = Kernels::for_type(t).unwrap().dot_single(k, &wb, &acts, r);
                assert_eq!(one, g, "{t} k={k} row {r}: single-row vs multi-row");
                assert!(
                    (g as f64 - exact).abs() <= scale * 2e-6,
                    "{t} k={k} row {r}: {g} vs f64 {exact}"
                );
            }
            // rows are not mixed up: swapping two activation rows swaps the results
            let mut swapped_rows = rows;
            swapped_rows.swap(0, 1);
            let swapped = dot_rows(k, &wb, swapped_rows);
            assert_eq!((swapped[0], swapped[1]), (got[1], got[0]), "{t}");
            assert_ne!(got[0], got[1], "{t}: distinct rows gave equal dots");
        }
    }
}

#[test]
fn multi_row_kernels_notice_every_part_of_a_block() {
    // negative control: corrupting the scale, a low-bit byte or (Q6_K) a high-bit byte of the
    // last block changes the result, so a kernel skipping any of them would fail the test above
    for (t, offsets) in [
        (GgmlType::Q4_K, vec![0usize, 2, 4, 15, 16, 143]),
        (GgmlType::Q5_K, vec![0, 2, 4, 15, 16, 47, 48, 175]),
        (GgmlType::Q6_K, vec![0, 127, 128, 191, 192, 207, 209]),
        (GgmlType::Q8_0, vec![1, 2, 33]),
        (GgmlType::Q4_0, vec![1, 2, 17]),
    ] {
        let Some(dot_rows) = Kernels::for_type(t).and_then(|k| k.dot_rows) else {
            continue;
        };
        let k = 512;
        let mut wb = quantize_weights(t, &rand_vec(k, 5));
        let mut acts = QActs::default();
        acts.convert(ActKind::of(t).unwrap(), &rand_vec(ROWS * k, 6), ROWS, k, 1);
        let rows: [&[u8]; ROWS] = std::array::from_fn(|r| acts.row_with_scales(r));
        let base = dot_rows(k, &wb, rows);
        let last = wb.len() - wb.len() / (k / if t.name().ends_with("_K") { 256 } else { 32 });
        for off in offsets {
            let saved = wb[last + off];
            wb[last + off] ^= 0x24;
            let after = dot_rows(k, &wb, rows);
            // a changed quant moves every row's dot unless that row's activation there rounds to 0
            let moved = after.iter().zip(&base).filter(|(x, y)| x != y).count();
            assert!(
                moved >= ROWS / 2,
                "{t}: byte {off} of the last block moved {moved} rows"
            );
            wb[last + off] = saved;
        }
    }
}

#[test]
fn run_time_dispatch_does_not_depend_on_compile_flags() {
    // CI also runs this test in a build without `-C target-cpu=native` (candle compiled without
    // AVX2): on an AVX2 CPU every type of the Med42 table must still get a SIMD kernel, and the
    // prompt kernels must still be there.
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2() {
        use GgmlType::*;
        for t in [
            Q4_0, Q5_0, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q4_1, Q5_1, F16, F32,
        ] {
            let k = Kernels::for_type(t).unwrap().name;
            assert_ne!(k, "scalar", "{t}");
            if !cfg!(target_feature = "avx2") {
                assert!(
                    k == "avx2" || k == "avx512vnni",
                    "{t}: a portable build must use the run-time kernels, not {k}"
                );
            }
            // the VNNI kernels wherever the CPU has them, for every type but Q5_1, F16 and F32
            let want = match x86::vnni::Vnni::detect() {
                Some(v) if !matches!(t, Q5_1 | F16 | F32) => v.name(),
                _ => "avx2",
            };
            assert_eq!(k, want, "{t}");
            assert_eq!(crate::kernels::isa() == "avx512vnni", x86::has_avx512vnni());
        }
        for t in [Q4_0, Q5_0, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
            let k = Kernels::for_type(t).unwrap();
            assert!(k.dot_rows.is_some() && k.packed.is_some(), "{t}");
        }
        // Q4_1's packed kernel is not batch-invariant with its single-row kernel: off
        assert!(Kernels::for_type(Q4_1).unwrap().packed.is_none());
        // own decode kernels in every build (Q2_K, Q3_K: candle's are compile-time only)
        for t in [Q2_K, Q3_K, Q6_K] {
            let own = Kernels::for_type(t).unwrap().name;
            assert_ne!(own, crate::kernels::reference::candle_kernel_name(t), "{t}");
        }
        // negative control: candle's Q8_K dot is compile-time only
        let q8k = Kernels::for_type(Q8_K).unwrap().name;
        assert_eq!(
            q8k == "scalar",
            !cfg!(target_feature = "avx2"),
            "Q8_K: {q8k}"
        );
    }
    assert!(Kernels::for_type(GgmlType::IQ4_XS).is_none());
}

/// The 4-row and 2-row kernels (a batched decode step of a few sequences) give every row the
/// single-row kernel's bits, for every type that has one; rows are not mixed up.
#[test]
fn four_and_two_row_kernels_equal_the_single_row_kernel_bit_for_bit() {
    let mut checked = 0;
    for (i, t) in super::types().enumerate() {
        let Some(kern) = Kernels::for_type(t) else {
            continue;
        };
        let Some(dot_rows4) = kern.dot_rows4 else {
            continue;
        };
        let Some(kind) = ActKind::of(t) else { continue };
        for k in [768usize, if t.name().ends_with("_K") { 256 } else { 32 }] {
            let wb = quantize_weights(t, &rand_vec(k, 500 + i as u64));
            let xf = rand_vec(4 * k, 600 + i as u64);
            let mut acts = QActs::default();
            acts.convert(kind, &xf, 4, k, 1);
            let rows: [&[u8]; 4] = std::array::from_fn(|r| acts.row_with_scales(r));
            let got = dot_rows4(k, &wb, rows);
            for (r, &g) in got.iter().enumerate() {
                assert_eq!(g, kern.dot_single(k, &wb, &acts, r), "{t} k={k} row {r}");
            }
            let mut swapped = rows;
            swapped.swap(0, 3);
            let s = dot_rows4(k, &wb, swapped);
            assert_eq!((s[0], s[3]), (got[3], got[0]), "{t}");
            assert_ne!(got[0], got[3], "{t}: distinct rows gave equal dots");
            // the 2-row kernel (2 rows left of a batch) likewise
            let dot_rows2 = kern
                .dot_rows2
                .expect("a type with a 4-row kernel has a 2-row one");
            for q in 0..2 {
                let two = dot_rows2(k, &wb, [rows[2 * q], rows[2 * q + 1]]);
                assert_eq!(two, [got[2 * q], got[2 * q + 1]], "{t} k={k} 2 rows {q}");
            }
            assert_eq!(
                dot_rows2(k, &wb, [rows[1], rows[0]]),
                [got[1], got[0]],
                "{t}"
            );
        }
        checked += 1;
    }
    if std::arch::is_x86_feature_detected!("avx2") {
        assert!(checked >= 8, "only {checked} types have a 4-row kernel");
    }
}
