//! Kernel correctness: every SIMD dot against the scalar reference and against an f64 dot of the
//! dequantized operands; the tiled matmul against a plain loop.

use super::*;
use candle_core::quantized::k_quants::BlockQ8_1;

/// Every type with weight kernels (Q8_K exists only as an activation format).
fn types() -> impl Iterator<Item = GgmlType> {
    GgmlType::SUPPORTED
        .into_iter()
        .filter(|&t| t != GgmlType::Q8_K)
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::sampling::Rng::new(seed);
    (0..n)
        .map(|_| {
            // roughly normal: sum of uniforms, plus an offset so min-based formats are exercised
            let s: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
            (s * 1.7 + 0.1) as f32
        })
        .collect()
}

fn as_bytes<T>(v: &[T]) -> &[u8] {
    // SAFETY: plain-data block types; any bit pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Quantize `rows x k` weights to `t` with candle's quantizers; returns the raw bytes.
fn quantize_weights(t: GgmlType, w: &[f32]) -> Vec<u8> {
    fn q<T: CandleBlock>(w: &[f32]) -> Vec<u8> {
        let mut blocks = vec![T::zeros(); w.len() / T::BLCK_SIZE];
        T::from_float(w, &mut blocks);
        as_bytes(&blocks).to_vec()
    }
    use GgmlType::*;
    match t {
        F32 => q::<f32>(w),
        F16 => q::<f16>(w),
        BF16 => q::<bf16>(w),
        Q4_0 => q::<BlockQ4_0>(w),
        Q4_1 => q::<BlockQ4_1>(w),
        Q5_0 => q::<BlockQ5_0>(w),
        Q5_1 => q::<BlockQ5_1>(w),
        Q8_0 => q::<BlockQ8_0>(w),
        Q2_K => q::<BlockQ2K>(w),
        Q3_K => q::<BlockQ3K>(w),
        Q4_K => q::<BlockQ4K>(w),
        Q5_K => q::<BlockQ5K>(w),
        Q6_K => q::<BlockQ6K>(w),
        _ => unreachable!(),
    }
}

/// Dequantize a converted activation row back to floats.
fn dequant_act(kind: ActKind, row: &[u8], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; k];
    match kind {
        ActKind::F32 => out.copy_from_slice(cast::<f32>(row)),
        ActKind::F16 => f16::to_float(cast::<f16>(row), &mut out),
        ActKind::BF16 => bf16::to_float(cast::<bf16>(row), &mut out),
        ActKind::Q8_0 => BlockQ8_0::to_float(cast::<BlockQ8_0>(row), &mut out),
        ActKind::Q8_1 => BlockQ8_1::to_float(cast::<BlockQ8_1>(row), &mut out),
        ActKind::Q8K => BlockQ8K::to_float(cast::<BlockQ8K>(row), &mut out),
    }
    out
}

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
                assert_eq!(
                    k, "avx2",
                    "{t}: a portable build must use the run-time kernels"
                );
            }
        }
        for t in [Q4_0, Q5_0, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
            let k = Kernels::for_type(t).unwrap();
            assert!(k.dot_rows.is_some() && k.packed.is_some(), "{t}");
        }
        // Q4_1's packed kernel is not batch-invariant with its single-row kernel: off
        assert!(Kernels::for_type(Q4_1).unwrap().packed.is_none());
        // own decode kernels in every build (Q2_K, Q3_K: candle's are compile-time only)
        for t in [Q2_K, Q3_K, Q6_K] {
            assert_eq!(Kernels::for_type(t).unwrap().name, "avx2", "{t}");
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

#[test]
fn prompt_tiles_are_whole_multi_row_groups_at_med42_sizes() {
    // Every prompt row but the last `m % ROWS` must reach the multi-row kernels. Before this test,
    // 8 Q8_0 activation rows of Med42's ff length (28672) exceeded the tile budget, the tile held 7
    // rows, and the whole ffn_down matmul ran one row at a time.
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
                    let (t_blk, j_blk) = tile_shape(acts.stride, w_row, m, 8192);
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
                assert_eq!(tile_shape(acts.stride, w_row, 5, 8192).0, 5);
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
        let k = bs * (2 * (PACKED_CHUNK_BYTES / pk.block_bytes) + 3);
        // 3 groups: a pair and a last group run alone (paired with itself), then a tail
        let n = 3 * PACK_GROUP + 5;
        let wf = rand_vec(k * n, 21);
        let wb = quantize_weights(t, &wf);
        let row_b = k / bs * ts;
        for m in [PACKED_MIN_ROWS, 19, PACKED_TILE + 13] {
            let x = rand_vec(m * k, 30 + m as u64);
            let mut acts = QActs::default();
            acts.convert(kind, &x, m, k, 2);
            let run = |wb: &[u8]| {
                let view = WeightView {
                    dtype: t,
                    n_out: n,
                    k,
                    data: wb,
                    kernels,
                };
                let mut out = vec![f32::NAN; m * n];
                matmul(&view, &acts, &mut out, 2);
                out
            };
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
        let chunk = PACKED_CHUNK_BYTES / pk.block_bytes;
        let k = t.block_size() * (2 * chunk + 2);
        let kind = ActKind::of(t).unwrap();
        let wb = quantize_weights(t, &rand_vec(k * n, 5));
        let x = rand_vec(m * k, 6);
        let run = |kernels: Kernels, rows: std::ops::Range<usize>| {
            let mut acts = QActs::default();
            acts.convert(kind, &x[rows.start * k..rows.end * k], rows.len(), k, 2);
            let view = WeightView {
                dtype: t,
                n_out: n,
                k,
                data: &wb,
                kernels,
            };
            let mut out = vec![f32::NAN; rows.len() * n];
            matmul(&view, &acts, &mut out, 2);
            out
        };
        let packed = run(kernels, 0..m);
        let short = run(kernels, 0..ROWS + 1); // multi-row kernel, then one single row
        assert_eq!(
            &packed[..short.len()],
            &short[..],
            "{t}: short prompt vs packed"
        );
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
