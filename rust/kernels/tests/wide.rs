//! The 512-bit multi-row kernels ([`rows512`]: Q4_K, Q5_K, Q6_K, 4 and 8 rows) against the
//! single-row kernels of both instruction sets, bit for bit for every row, over random and
//! extreme blocks and odd block counts, with negative controls; skipped, with the reason
//! printed, where the CPU lacks AVX-512 F/BW/VL/VNNI.

use super::quantize_weights;
use super::rand_vec;
use super::vnni::{activations, f16_fields, raw_weights};
use crate::gguf::GgmlType;
use crate::kernels::acts::Q8K_BSUMS;
use crate::kernels::layout::{DotFn, ROWS};
use crate::kernels::x86::vnni::rows512;
use crate::kernels::x86::{self, avx2, vnni};

const TYPES: [GgmlType; 3] = [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];

/// Whether the CPU runs the kernels under test; prints why not.
fn runs(test: &str) -> bool {
    let has = x86::has_avx512vnni();
    if !has {
        eprintln!("{test}: skipped, this CPU lacks AVX-512 F/BW/VL/VNNI (or AVX2/FMA/F16C)");
    }
    has
}

/// The 512-bit kernel of `t` for `N` rows of `nb` blocks, after checking the lengths.
fn wide<const N: usize>(t: GgmlType, nb: usize, w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    assert!(x86::has_avx512vnni());
    assert!(w.len() >= nb * t.type_size());
    assert!(a.iter().all(|r| r.len() >= nb * GgmlType::Q8_K.type_size()));
    let (w, a) = (w.as_ptr(), a.map(|r| r.as_ptr()));
    // SAFETY: the features were asserted, the lengths checked above.
    unsafe {
        match t {
            GgmlType::Q4_K => rows512::q45_k_rows::<N, false>(nb, w, a),
            GgmlType::Q5_K => rows512::q45_k_rows::<N, true>(nb, w, a),
            _ => rows512::q6_k_rows::<N>(nb, w, a),
        }
    }
}

/// The single-row kernels of `t`: AVX2 and AVX-512 VNNI.
fn singles(t: GgmlType) -> [DotFn; 2] {
    // SAFETY: called after `runs`, which implies AVX2 and AVX-512 VNNI.
    unsafe { [avx2::dot(t).unwrap(), vnni::dot::<true>(t).unwrap()] }
}

/// Every row's single-row result, after asserting that both instruction sets agree on it.
fn single_bits(t: GgmlType, k: usize, w: &[u8], rows: &[Vec<u8>]) -> Vec<u32> {
    let [v2, v512] = singles(t);
    rows.iter()
        .map(|a| {
            let (x, y) = (v2(k, w, a), v512(k, w, a));
            assert_eq!(x.to_bits(), y.to_bits(), "{t}: avx2 {x} vs avx512 {y}");
            y.to_bits()
        })
        .collect()
}

#[test]
fn wide_kernels_give_every_row_the_single_row_bits() {
    if !runs("wide_kernels_give_every_row_the_single_row_bits") {
        return;
    }
    let mut checked = 0;
    for (i, t) in TYPES.into_iter().enumerate() {
        // 1, 3 and 5 super-blocks: odd counts, and a row of one block
        for nb in [1usize, 3, 5] {
            let k = 256 * nb;
            for extreme in [false, true] {
                let seed = 3000 + 100 * i as u64 + 10 * nb as u64 + extreme as u64;
                let (rows, _) = activations(t, k, seed, extreme);
                let quantized = quantize_weights(t, &rand_vec(k, seed + 5));
                for w in [raw_weights(t, nb, seed, extreme), quantized] {
                    let want = single_bits(t, k, &w, &rows);
                    let a: [&[u8]; ROWS] = std::array::from_fn(|r| rows[r].as_slice());
                    let got8 = wide::<8>(t, nb, &w, a);
                    for (r, g) in got8.iter().enumerate() {
                        assert_eq!(g.to_bits(), want[r], "{t} nb={nb} 8 rows: row {r}");
                    }
                    for q in 0..2 {
                        let a4: [&[u8]; 4] = std::array::from_fn(|r| a[4 * q + r]);
                        let got4 = wide::<4>(t, nb, &w, a4);
                        for (r, g) in got4.iter().enumerate() {
                            let want = want[4 * q + r];
                            assert_eq!(g.to_bits(), want, "{t} nb={nb} 4 rows: row {}", 4 * q + r);
                        }
                    }
                    // rows are not mixed up: reversed rows give reversed results
                    let mut rev = a;
                    rev.reverse();
                    let back = wide::<8>(t, nb, &w, rev);
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
    assert_eq!(checked, 36);
}

#[test]
fn a_wrong_correction_term_breaks_the_bit_equality() {
    // negative control: the comparison above notices a kernel whose offset / min correction is
    // wrong. Each row's correction comes from its activation 16-sums (times the weight mins,
    // or for Q6_K 32 times the scales): one 16-sum of row 2 off by one changes row 2 alone; a
    // Q4_K/Q5_K min off by one changes every row.
    if !runs("a_wrong_correction_term_breaks_the_bit_equality") {
        return;
    }
    for (i, t) in TYPES.into_iter().enumerate() {
        let nb = 3;
        let k = 256 * nb;
        let seed = 4000 + i as u64;
        let (rows, _) = activations(t, k, seed, false);
        let w = raw_weights(t, nb, seed, false);
        let want = single_bits(t, k, &w, &rows);
        let bits = |w: &[u8], rows: &[Vec<u8>]| -> Vec<u32> {
            let a: [&[u8]; 4] = std::array::from_fn(|r| rows[r].as_slice());
            wide::<4>(t, nb, w, a).iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&w, &rows), want[..4], "{t}");
        // the last block's 16-sum 5 of row 2, plus one
        let mut off = rows.clone();
        let s = (nb - 1) * GgmlType::Q8_K.type_size() + Q8K_BSUMS + 2 * 5;
        let v = i16::from_le_bytes([off[2][s], off[2][s + 1]]) + 1;
        off[2][s..s + 2].copy_from_slice(&v.to_le_bytes());
        let got = bits(&w, &off);
        for r in 0..4 {
            assert_eq!(
                got[r] != want[r],
                r == 2,
                "{t}: row {r} after row 2's 16-sum"
            );
        }
        if t != GgmlType::Q6_K {
            // min 0 of the last block: the low 6 bits of byte 4 + 4 of the 12 scale bytes
            let mut wm = w.clone();
            wm[(nb - 1) * t.type_size() + 4 + 4] ^= 1;
            let got = bits(&wm, &rows);
            assert!(
                (0..4).all(|r| got[r] != want[r]),
                "{t}: a changed min went unnoticed"
            );
        }
        // and the f16 scale of the last block
        let mut wd = w.clone();
        wd[(nb - 1) * t.type_size() + f16_fields(t)[0]] ^= 1;
        let got = bits(&wd, &rows);
        assert!(
            (0..4).all(|r| got[r] != want[r]),
            "{t}: a changed scale went unnoticed"
        );
    }
}
