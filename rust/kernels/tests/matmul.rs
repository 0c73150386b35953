//! The matmul drivers: tiles, packed GEMM and batch invariance.

use super::{dequant_act, matmul_out, quantize_weights, rand_vec};
use crate::gguf::GgmlType;
use crate::kernels::layout::{PACK_GROUP, ROWS};
use crate::kernels::matmul::{tile_shape, PACKED_CHUNK_BYTES, PACKED_TILE};
use crate::kernels::reference::{candle_dot_fn, dequantize_row};
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86;
use crate::kernels::{matmul, ActKind, Kernels, QActs, WeightView, PACKED_MIN_ROWS};

#[test]
fn tiled_matmul_equals_plain_loop() {
    let (k, n) = (512, 70);
    // m = 3 and 13 go through the multi-row kernels (a group and a tail), m = 37 through the
    // packed GEMM where the type has one: every result equals the engine's single-row kernel bit
    // for bit (one summation order), and candle's dot (its layout of the activations)
    // within rounding
    for &t in &[
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_1,
        GgmlType::F16,
    ] {
        let wf = rand_vec(k * n, 7);
        let wb = quantize_weights(t, &wf);
        let view = WeightView {
            dtype: t,
            n_out: n,
            k,
            data: &wb,
            kernels: Kernels::for_type(t).unwrap(),
        };
        for m in [1usize, 3, 13, 37] {
            let x = rand_vec(m * k, 9 + m as u64);
            let mut acts = QActs::default();
            acts.convert(ActKind::of(t).unwrap(), &x, m, k, 2);
            let mut out = vec![f32::NAN; m * n];
            matmul(&view, &acts, &mut out, 2);
            let kind = ActKind::of(t).unwrap();
            for tt in 0..m {
                let xd = dequant_act(kind, acts.row(tt), k);
                for j in 0..n {
                    let single = view.kernels.dot_single(k, view.row(j), &acts, tt);
                    assert_eq!(out[tt * n + j], single, "{t} m={m} t={tt} j={j}");
                    let mut wd = vec![0f32; k];
                    assert!(dequantize_row(t, view.row(j), &mut wd));
                    let mag: f32 = wd.iter().zip(&xd).map(|(p, q)| (p * q).abs()).sum();
                    let want = candle_dot_fn(t).unwrap()(k, view.row(j), acts.row(tt));
                    assert!(
                        (single - want).abs() <= 2e-6 * mag,
                        "{t} m={m} t={tt} j={j}"
                    );
                }
            }
        }
    }
}

#[test]
fn prompt_tiles_are_whole_multi_row_groups_at_med42_sizes() {
    // Every prompt row but the last `m % ROWS` must reach the multi-row kernels. 8 Q8_0
    // activation rows of Med42's ff length (28672) exceed the tile budget: a tile cut to the
    // budget (7 rows) would run the whole ffn_down matmul one row at a time.
    for kind in [ActKind::Q8_0, ActKind::Q8K] {
        for k in [4096usize, 8192, 28672] {
            let mut acts = QActs::default();
            acts.convert(kind, &rand_vec(k, 3), 1, k, 1);
            for w_type in [
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
            ] {
                let w_row = k / w_type.block_size() * w_type.type_size();
                for m in [8usize, 9, 37, 512] {
                    let (t_blk, j_blk) = tile_shape(acts.stride(), w_row, m, 8192);
                    // a whole number of groups, or the whole (short) prompt in one tile
                    let ok = t_blk == m || t_blk % ROWS == 0;
                    assert!(
                        ok && t_blk >= ROWS && t_blk <= m,
                        "{kind:?} k={k} m={m}: {t_blk}"
                    );
                    assert!(
                        (4..=64).contains(&j_blk),
                        "{w_type} k={k}: {j_blk} weight rows"
                    );
                }
                // negative control: fewer rows than a group stay one tile of single rows
                assert_eq!(tile_shape(acts.stride(), w_row, 5, 8192).0, 5);
            }
        }
    }
}

#[test]
fn packed_gemm_matches_dequantized_math_across_chunks_tiles_and_tails() {
    // The packed GEMMs: k spans several packed chunks (the last one partial), the prompt has tiles
    // of PACKED_TILE rows and a tail of 1..3 rows per tile, n has a tail after its groups.
    for t in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
        GgmlType::Q5_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
    ] {
        let Some(kernels) = Kernels::for_type(t) else {
            continue;
        };
        let Some(pk) = kernels.packed else { continue }; // no AVX2: nothing to test
        let kind = ActKind::of(t).unwrap();
        let (bs, ts) = (t.block_size(), t.type_size());
        let k = bs * (2 * (PACKED_CHUNK_BYTES / pk.block_bytes()) + 3);
        // 3 groups: a pair and a last group run alone (paired with itself), then a tail
        let n = 3 * PACK_GROUP + 5;
        let wf = rand_vec(k * n, 21);
        let wb = quantize_weights(t, &wf);
        let row_b = k / bs * ts;
        for m in [PACKED_MIN_ROWS, 19, PACKED_TILE + 13] {
            let x = rand_vec(m * k, 30 + m as u64);
            let mut acts = QActs::default();
            acts.convert(kind, &x, m, k, 2);
            let run = |wb: &[u8]| matmul_out(t, kernels, wb, n, k, &acts);
            let out = run(&wb);
            for tt in 0..m {
                let xd = dequant_act(kind, acts.row(tt), k);
                for j in 0..n {
                    let mut wd = vec![0f32; k];
                    assert!(dequantize_row(t, &wb[j * row_b..(j + 1) * row_b], &mut wd));
                    let prod = |(p, q): (&f32, &f32)| *p as f64 * *q as f64;
                    let exact: f64 = wd.iter().zip(&xd).map(prod).sum();
                    let mag: f64 = wd.iter().zip(&xd).map(|x| prod(x).abs()).sum();
                    let got = out[tt * n + j] as f64;
                    let ok = (got - exact).abs() <= 1e-5 * mag;
                    assert!(ok, "{t} m={m} t={tt} j={j}: {got} vs {exact}");
                }
            }
            // negative control: one byte of weight quants of row 3 in the last (partial) chunk
            // moves only output column 3, in (almost) every activation row: a row whose
            // quantized activations are 0 where the byte acts stays put legitimately
            let mut bad = wb.clone();
            let quant_byte = match t {
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 3, // a fifth-bit byte
                GgmlType::Q4_K => 16 + 77,
                GgmlType::Q5_K => 16 + 5, // a fifth-bit byte
                _ => 150,                 // Q6_K: a high-bit byte
            };
            bad[3 * row_b + (k / bs - 2) * ts + quant_byte] ^= 0x77;
            let out2 = run(&bad);
            let mut moved_rows = 0;
            for tt in 0..m {
                for j in 0..n {
                    let moved = out2[tt * n + j] != out[tt * n + j];
                    assert!(!moved || j == 3, "{t} m={m} t={tt} j={j} moved");
                    moved_rows += (moved && j == 3) as usize;
                }
            }
            assert!(
                moved_rows * 10 >= m * 9,
                "{t} m={m}: column 3 moved in {moved_rows} rows"
            );
        }
    }
}

#[test]
fn results_do_not_depend_on_the_batch() {
    // A weight row times an activation row gives the same f32, bit for bit, whether it is
    // computed in decode (one row), in a short prompt (multi-row kernels) or in a packed prompt
    // tile: every kernel of a type sums exact per-block integers in one f32 order
    // (x86_multi::block_term, x86_multi::q8_acts). Without it a prompt's logits would depend on
    // how the prompt was split into batches.
    use GgmlType::*;
    let (n, m) = (3 * PACK_GROUP + 3, PACKED_MIN_ROWS + 6);
    let mut checked = 0;
    for t in [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q4_0, Q5_0, Q8_0] {
        let Some(kernels) = Kernels::for_type(t) else {
            continue;
        };
        let Some(pk) = kernels.packed else {
            continue; // no AVX2: one portable kernel, nothing to compare
        };
        // k spans packed chunks, the last one partial, and ends in blocks that do not fill the
        // decode kernel's last group of 4 (an even count: candle's scalar Q5_0 dot, the negative
        // control in portable builds, takes blocks in pairs)
        let chunk = PACKED_CHUNK_BYTES / pk.block_bytes();
        let k = t.block_size() * (2 * chunk + 2);
        let kind = ActKind::of(t).unwrap();
        let wb = quantize_weights(t, &rand_vec(k * n, 5));
        let x = rand_vec(m * k, 6);
        let run = |kernels: Kernels, rows: std::ops::Range<usize>| {
            let mut acts = QActs::default();
            acts.convert(kind, &x[rows.start * k..rows.end * k], rows.len(), k, 2);
            matmul_out(t, kernels, &wb, n, k, &acts)
        };
        let packed = run(kernels, 0..m);
        let short = run(kernels, 0..ROWS + 1); // multi-row kernel, then one single row
        assert_eq!(
            &packed[..short.len()],
            &short[..],
            "{t}: short prompt vs packed"
        );
        // every batch a decode step of 2..15 sequences makes: 8-row, 4-row (also for 3 rows,
        // the last one twice) and single-row calls
        for b in 2..PACKED_MIN_ROWS {
            let part = run(kernels, 0..b);
            assert_eq!(&packed[..part.len()], &part[..], "{t}: {b} rows vs packed");
        }
        for r in [0, ROWS, m - 1] {
            let one = run(kernels, r..r + 1);
            assert_eq!(
                &packed[r * n..(r + 1) * n],
                &one[..],
                "{t}: decode row {r} vs packed"
            );
        }
        // negative control: candle's dot (f32 lanes across blocks, or unfused) is a different
        // summation order, and that shows in the last bits of some outputs
        let candle = Kernels {
            single: candle_dot_fn(t).unwrap(),
            single_with_scales: false,
            dot_rows: None,
            dot_rows4: None,
            dot_rows2: None,
            packed: None,
            ..kernels
        };
        let c = run(candle, 0..m);
        let differ = c.iter().zip(&packed).filter(|(a, b)| a != b).count();
        assert!(
            differ > 0,
            "{t}: candle's order gave identical bits everywhere"
        );
        checked += 1;
    }
    assert!(checked == 8 || !x86::has_avx2());
}

#[test]
fn q8_0_extreme_quants_are_exact_in_every_path() {
    // Q8_0 weights hold any i8, -128 included (a file may contain it even if llama.cpp's
    // quantizer stops at -127), and a pair of products reaches 2 * 128 * 127 in magnitude: the
    // 16-bit pair sums of the SIMD kernels must neither saturate nor lose a sign. With weight
    // scale 1 and activation scale 2^-7 every result is an exact f32 (|sum| < 2^24 units), so the
    // decode (m = 1), multi-row (m = 4) and packed (m = PACKED_MIN_ROWS + 3) paths must equal
    // the integer dot bit for bit.
    let t = GgmlType::Q8_0;
    let kernels = Kernels::for_type(t).unwrap();
    let (k, n) = (256, 2 * PACK_GROUP + 1);
    let nb = k / 32;
    let mut rng = crate::sampling::Rng::new(77);
    let mut rand_i8 = || (rng.next_f64() * 256.0).floor() as i32 - 128;
    let wq: Vec<Vec<i32>> = (0..n)
        .map(|j| {
            (0..k)
                .map(|i| match j {
                    0 => -128,
                    1 => 127,
                    2 => -127,
                    3 => [-128, 127][i % 2],
                    4 => [-128, -128, 0, 1][i % 4],
                    _ => rand_i8(),
                })
                .collect()
        })
        .collect();
    let mut wb = Vec::with_capacity(n * nb * 34);
    for row in &wq {
        for blk in row.chunks(32) {
            wb.extend_from_slice(&0x3C00u16.to_le_bytes()); // f16 1.0
            wb.extend(blk.iter().map(|&q| q as i8 as u8));
        }
    }
    let view = WeightView {
        dtype: t,
        n_out: n,
        k,
        data: &wb,
        kernels,
    };
    for m in [1usize, 4, PACKED_MIN_ROWS + 3] {
        // activation quants in -127..=127, each block holding a +-127 so its scale is 2^-7
        let aq: Vec<Vec<i32>> = (0..m)
            .map(|r| {
                (0..k)
                    .map(|i| match (r, i % 32) {
                        (0, _) => 127,
                        (1, _) => -127,
                        (2, _) => [127, -127][i % 2],
                        (_, 0) => [127, -127][r % 2],
                        _ => rand_i8().max(-127),
                    })
                    .collect()
            })
            .collect();
        let x: Vec<f32> = aq.iter().flatten().map(|&q| q as f32 / 128.0).collect();
        let mut acts = QActs::default();
        acts.convert(ActKind::Q8_0, &x, m, k, 2);
        let mut out = vec![f32::NAN; m * n];
        matmul(&view, &acts, &mut out, 2);
        for (r, a) in aq.iter().enumerate() {
            for (j, w) in wq.iter().enumerate() {
                let dot: i64 = a.iter().zip(w).map(|(&p, &q)| (p * q) as i64).sum();
                let want = dot as f32 / 128.0;
                assert_eq!(out[r * n + j], want, "m={m} row {r} weight row {j}");
            }
        }
    }
}
