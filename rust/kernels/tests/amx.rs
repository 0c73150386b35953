//! The AMX prompt GEMM ([`crate::kernels::x86::amx`]) against the VNNI packed GEMM it replaces,
//! bit for bit, through the matmul: random weights at several shapes (partial activation tiles,
//! weight rows after the last group of 16, several super-blocks), Q6_K's extreme values, and a
//! negative control. Where the CPU or the OS has no AMX the test says so and checks nothing.

use super::{matmul_out, quantize_weights, rand_vec};
use crate::gguf::GgmlType;
use crate::kernels::x86::amx;
use crate::kernels::{ActKind, Kernels, QActs};

/// `m x n` outputs of the weights `wb` (`n` rows of `k`) times the rows `x` through `kernels`.
fn run(t: GgmlType, kernels: Kernels, wb: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32> {
    let mut acts = QActs::default();
    acts.convert(ActKind::of(t).unwrap(), x, x.len() / k, k, 2);
    matmul_out(t, kernels, wb, n, k, &acts)
}

/// The kernels of `t` with AMX (asserted) and the same without it.
fn both(t: GgmlType) -> (Kernels, Kernels) {
    let k = Kernels::for_type(t).unwrap();
    let pk = k.packed.expect("a packed GEMM where AMX is available");
    assert!(pk.amx(), "{t}: AMX available but not dispatched");
    let plain = Kernels {
        packed: Some(pk.without_amx()),
        ..k
    };
    (k, plain)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn amx_gemm_equals_the_vnni_packed_gemm_bit_for_bit() {
    if !amx::available() {
        eprintln!(
            "skipped: no AMX-TILE/AMX-INT8 with AVX-512 here, or the OS refused the tile state"
        );
        return;
    }
    let mut compared = 0;
    for t in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let (with, without) = both(t);
        // (weight rows, super-blocks, prompt rows; the matmul takes AMX from 32 or 48 rows):
        // three whole tiles, the last one alone; 3 groups and 7 rows after them with a partial
        // tile; 9 tiles, the last partial, and more groups than one task takes
        for (n, nb, m, seed) in [(16, 1, 48, 1u64), (55, 5, 53, 2), (160, 9, 140, 3)] {
            let k = 256 * nb;
            let wb = quantize_weights(t, &rand_vec(n * k, seed));
            let x = rand_vec(m * k, seed + 10);
            let a = run(t, with, &wb, n, k, &x);
            let b = run(t, without, &wb, n, k, &x);
            assert!(a.iter().all(|v| v.is_finite()), "{t}: non-finite output");
            assert_eq!(bits(&a), bits(&b), "{t} n={n} k={k} m={m}");
            compared += a.len();
            // negative control: one quant byte of weight row 5 in the last super-block moves
            // column 5 (and nothing else) in most prompt rows, so equal bits above mean
            // something
            let mut bad = wb.clone();
            let row_b = nb * t.type_size();
            bad[5 * row_b + (nb - 1) * t.type_size() + 40] ^= 0x5A;
            let c = run(t, with, &bad, n, k, &x);
            let mut moved = 0;
            for r in 0..m {
                for j in 0..n {
                    let differs = c[r * n + j].to_bits() != a[r * n + j].to_bits();
                    assert!(!differs || j == 5, "{t}: column {j} of row {r} moved");
                    moved += differs as usize;
                }
            }
            assert!(
                moved * 10 >= m * 9,
                "{t}: column 5 moved in {moved} of {m} rows"
            );
        }
    }
    // Q6_K at the ends of its range: every value 63 with every scale -128 (the largest weight
    // magnitude, 63 * 128 per value), activations at -128 and +127 in turn
    let (with, without) = both(GgmlType::Q6_K);
    let (n, nb, m) = (32, 3, 40);
    let mut wb = vec![0u8; n * nb * 210];
    for blk in wb.chunks_mut(210) {
        blk[..192].fill(0xFF);
        blk[192..208].fill(0x80);
        blk[208..210].copy_from_slice(&0x2C00u16.to_le_bytes()); // d = 1/16
    }
    let k = 256 * nb;
    let x: Vec<f32> = (0..m * k)
        .map(|i| if (i / 3) % 2 == 0 { -1.0 } else { 0.999 })
        .collect();
    let a = run(GgmlType::Q6_K, with, &wb, n, k, &x);
    let b = run(GgmlType::Q6_K, without, &wb, n, k, &x);
    assert!(a.iter().all(|v| v.is_finite() && *v != 0.0));
    assert_eq!(bits(&a), bits(&b), "Q6_K extremes");
    compared += a.len();
    assert!(compared > 10_000);
}
