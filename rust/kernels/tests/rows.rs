//! The VNNI multi-row kernels of a batched decode step (2, 4 and 8 rows; for the K-quants with
//! packed sub-block sums, `PK`) against the single-row kernels of AVX2 and of the same VNNI
//! form, bit for bit for every row, over random, extreme and quantized blocks and odd block
//! counts, with negative controls; a form the CPU lacks (AVX-512 F/BW/VL/VNNI, AVX-VNNI) is
//! skipped with the reason printed.

use super::quantize_weights;
use super::rand_vec;
use super::vnni::{activations, f16_fields, raw_weights};
use crate::gguf::GgmlType;
use crate::kernels::acts::Q8K_BSUMS;
use crate::kernels::layout::{DotFn, DotRows2Fn, DotRows4Fn, DotRowsFn, ROWS, ROWS2, ROWS4};
use crate::kernels::x86::{self, avx2, vnni};

const TYPES: [GgmlType; 6] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
];

/// The VNNI forms this CPU runs (`true`: AVX-512, `false`: AVX-VNNI); prints why one is missing.
fn forms(test: &str) -> Vec<bool> {
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

/// One VNNI form's kernels of `t`: (the single-row kernel of AVX2, that of the form, whether
/// they take the row with scales, the 4-row and the 8-row kernel, the 2-row kernel).
fn kernels(t: GgmlType, avx512: bool) -> (DotFn, DotFn, bool, DotRows4Fn, DotRowsFn, DotRows2Fn) {
    // SAFETY: called for the forms `forms` found, which imply AVX2.
    unsafe {
        let (one, v2) = match (avx2::dot_with_scales(t), avx2::dot(t)) {
            (Some(f), _) => (true, f),
            (None, f) => (false, f.unwrap()),
        };
        let (single, four, eight, two) = if avx512 {
            (
                vnni::dot_with_scales::<true>(t).or(vnni::dot::<true>(t)),
                vnni::dot_rows::<ROWS4, true>(t),
                vnni::dot_rows::<ROWS, true>(t),
                vnni::dot_rows::<ROWS2, true>(t),
            )
        } else {
            (
                vnni::dot_with_scales::<false>(t).or(vnni::dot::<false>(t)),
                vnni::dot_rows::<ROWS4, false>(t),
                vnni::dot_rows::<ROWS, false>(t),
                vnni::dot_rows::<ROWS2, false>(t),
            )
        };
        let (four, eight, two) = (four.unwrap(), eight.unwrap(), two.unwrap());
        (v2, single.unwrap(), one, four, eight, two)
    }
}

/// Every row's single-row result, after asserting that AVX2 and the VNNI form agree on it.
fn single_bits(t: GgmlType, avx512: bool, k: usize, w: &[u8], rows: &[Vec<u8>]) -> Vec<u32> {
    let (v2, vn, ..) = kernels(t, avx512);
    rows.iter()
        .map(|a| {
            let (x, y) = (v2(k, w, a), vn(k, w, a));
            assert_eq!(x.to_bits(), y.to_bits(), "{t}: avx2 {x} vs vnni {y}");
            y.to_bits()
        })
        .collect()
}

#[test]
fn multi_row_kernels_give_every_row_the_single_row_bits() {
    let mut checked = 0;
    for avx512 in forms("multi_row_kernels_give_every_row_the_single_row_bits") {
        for (i, t) in TYPES.into_iter().enumerate() {
            let (_, _, with_scales, four, eight, two) = kernels(t, avx512);
            // SAFETY: the forms `forms` found imply AVX2.
            let two_avx2 = unsafe { avx2::dot_rows::<ROWS2>(t) }.expect("an AVX2 2-row kernel");
            // K-quants: 1, 3 and 5 super-blocks; Q8_0: 1, 3, 5 and 11 blocks (the tails of its
            // 4-block groups)
            let counts: &[usize] = if t == GgmlType::Q8_0 {
                &[1, 3, 5, 11]
            } else {
                &[1, 3, 5]
            };
            for &nb in counts {
                let k = t.block_size() * nb;
                for extreme in [false, true] {
                    let seed = 3000 + 100 * i as u64 + 10 * nb as u64 + extreme as u64;
                    let (plain, scaled) = activations(t, k, seed, extreme);
                    let single_rows = if with_scales { &scaled } else { &plain };
                    let quantized = quantize_weights(t, &rand_vec(k, seed + 5));
                    for w in [raw_weights(t, nb, seed, extreme), quantized] {
                        let want = single_bits(t, avx512, k, &w, single_rows);
                        let a: [&[u8]; ROWS] = std::array::from_fn(|r| scaled[r].as_slice());
                        let got8 = eight(k, &w, a);
                        for (r, g) in got8.iter().enumerate() {
                            assert_eq!(g.to_bits(), want[r], "{t} nb={nb} 8 rows: row {r}");
                        }
                        for q in 0..2 {
                            let a4: [&[u8]; 4] = std::array::from_fn(|r| a[4 * q + r]);
                            for (r, g) in four(k, &w, a4).iter().enumerate() {
                                let (r, want) = (4 * q + r, want[4 * q + r]);
                                assert_eq!(g.to_bits(), want, "{t} nb={nb} 4 rows: row {r}");
                            }
                        }
                        for q in 0..4 {
                            let a2: [&[u8]; 2] = [a[2 * q], a[2 * q + 1]];
                            for (r, g) in two(k, &w, a2).iter().enumerate() {
                                let (r, want) = (2 * q + r, want[2 * q + r]);
                                assert_eq!(g.to_bits(), want, "{t} nb={nb} 2 rows: row {r}");
                            }
                            for (r, g) in two_avx2(k, &w, a2).iter().enumerate() {
                                let (r, want) = (2 * q + r, want[2 * q + r]);
                                assert_eq!(g.to_bits(), want, "{t} nb={nb} AVX2 2 rows: row {r}");
                            }
                        }
                        let back2 = two(k, &w, [a[1], a[0]]);
                        assert_eq!(
                            (back2[0].to_bits(), back2[1].to_bits()),
                            (want[1], want[0]),
                            "{t} nb={nb} 2 rows swapped"
                        );
                        // rows are not mixed up: reversed rows give reversed results
                        let mut rev = a;
                        rev.reverse();
                        let back = eight(k, &w, rev);
                        for r in 0..ROWS {
                            assert_eq!(back[r].to_bits(), got8[ROWS - 1 - r].to_bits(), "{t}");
                        }
                        assert!(got8.iter().all(|v| v.is_finite()), "{t}: {got8:?}");
                        if !extreme {
                            assert_ne!(got8[0], got8[1], "{t}: distinct rows gave equal dots");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    if x86::has_avx512vnni() {
        assert!(checked >= 76, "only {checked} cases ran");
    }
}

#[test]
fn a_wrong_correction_term_breaks_the_bit_equality() {
    // negative control: the comparison above notices a kernel whose offset correction is wrong.
    // Each row's correction comes from its activation sums: Q8_0's block sums (the 128 * sum(a)
    // taken back from the unsigned weights), the K-quants' 16-sums (times the weight mins, or
    // for Q6_K 32 times the scales). One of them off by one in row 2 changes row 2 alone; a
    // Q4_K/Q5_K min or a block scale off by one bit changes every row (Q2_K, Q3_K: the 16-sum
    // chosen meets a nonzero min / scale in these blocks).
    for avx512 in forms("a_wrong_correction_term_breaks_the_bit_equality") {
        for (i, t) in TYPES.into_iter().enumerate() {
            let (_, _, with_scales, four, ..) = kernels(t, avx512);
            let nb = if t == GgmlType::Q8_0 { 11 } else { 3 };
            let k = t.block_size() * nb;
            let seed = 4000 + i as u64;
            let (plain, scaled) = activations(t, k, seed, false);
            let w = raw_weights(t, nb, seed, false);
            let want = single_bits(t, avx512, k, &w, if with_scales { &scaled } else { &plain });
            let bits = |w: &[u8], rows: &[Vec<u8>]| -> Vec<u32> {
                let a: [&[u8]; 4] = std::array::from_fn(|r| rows[r].as_slice());
                four(k, w, a).iter().map(|v| v.to_bits()).collect()
            };
            assert_eq!(bits(&w, &scaled), want[..4], "{t}");
            let mut off = scaled.clone();
            if t == GgmlType::Q8_0 {
                // the last block's sum (an i32) of row 2, plus one
                let s = crate::kernels::acts::q8_0_sums_offset(nb) + 4 * (nb - 1);
                let v = i32::from_le_bytes(off[2][s..s + 4].try_into().unwrap()) + 1;
                off[2][s..s + 4].copy_from_slice(&v.to_le_bytes());
            } else {
                // the last block's 16-sum 5 (an i16) of row 2, plus one
                let s = (nb - 1) * GgmlType::Q8_K.type_size() + Q8K_BSUMS + 2 * 5;
                let v = i16::from_le_bytes([off[2][s], off[2][s + 1]]) + 1;
                off[2][s..s + 2].copy_from_slice(&v.to_le_bytes());
            }
            let got = bits(&w, &off);
            for r in 0..4 {
                let changed = got[r] != want[r];
                assert_eq!(changed, r == 2, "{t}: row {r} after row 2's sum");
            }
            if matches!(t, GgmlType::Q4_K | GgmlType::Q5_K) {
                // min 0 of the last block: the low 6 bits of byte 4 + 4 of the 12 scale bytes
                let mut wm = w.clone();
                wm[(nb - 1) * t.type_size() + 4 + 4] ^= 1;
                let got = bits(&wm, &scaled);
                let unnoticed = (0..4).any(|r| got[r] == want[r]);
                assert!(!unnoticed, "{t}: a changed min went unnoticed");
            }
            // and the f16 scale of the last block
            let mut wd = w.clone();
            wd[(nb - 1) * t.type_size() + f16_fields(t)[0]] ^= 1;
            let got = bits(&wd, &scaled);
            let unnoticed = (0..4).any(|r| got[r] == want[r]);
            assert!(!unnoticed, "{t}: a changed scale went unnoticed");
        }
    }
}
