//! The safe kernel entry points check the rows they are given, in every build profile: a short
//! weight or activation row panics instead of being read past its end (the SIMD kernels behind
//! them read through raw pointers). Each check has a negative control: the same call with whole
//! rows returns the reference result.

use super::{quantize_weights, rand_vec};
use crate::gguf::GgmlType;
use crate::kernels::reference::dot_fn_reference;
use crate::kernels::{matmul, ActKind, Kernels, QActs, WeightView};

/// A weight row of `t` and its converted activation row, `k` elements each.
fn rows(t: GgmlType, k: usize) -> (Vec<u8>, QActs) {
    let w = quantize_weights(t, &rand_vec(k, 11));
    let mut acts = QActs::default();
    acts.convert(ActKind::of(t).unwrap(), &rand_vec(k, 12), 1, k, 1);
    (w, acts)
}

#[test]
fn whole_rows_give_the_reference_result() {
    // the negative control of the panics below: the same calls with whole rows
    for t in [GgmlType::F32, GgmlType::F16, GgmlType::Q4_1, GgmlType::Q5_1] {
        let k = 256;
        let (w, acts) = rows(t, k);
        let kernels = Kernels::for_type(t).unwrap();
        let got = (kernels.single)(k, &w, acts.row(0));
        let want = dot_fn_reference(t).unwrap()(k, &w, acts.row(0));
        let mag: f32 = want.abs().max(1.0);
        assert!((got - want).abs() <= 2e-3 * mag, "{t}: {got} vs {want}");
    }
}

#[test]
#[should_panic(expected = "F32 dot of 256 elements")]
fn a_short_f32_weight_row_panics() {
    let (w, acts) = rows(GgmlType::F32, 256);
    let kernels = Kernels::for_type(GgmlType::F32).unwrap();
    // 100 of the row's 256 floats
    (kernels.single)(256, &w[..400], acts.row(0));
}

#[test]
#[should_panic(expected = "F16 dot of 256 elements")]
fn a_short_f16_activation_row_panics() {
    let (w, acts) = rows(GgmlType::F16, 256);
    let kernels = Kernels::for_type(GgmlType::F16).unwrap();
    (kernels.single)(256, &w, &acts.row(0)[..2 * 200]);
}

#[test]
#[should_panic(expected = "Q4_1 dot of 256 elements")]
fn a_short_q4_1_activation_row_panics() {
    let (w, acts) = rows(GgmlType::Q4_1, 256);
    let kernels = Kernels::for_type(GgmlType::Q4_1).unwrap();
    // 7 of the row's 8 Q8_1 blocks
    (kernels.single)(256, &w, &acts.row(0)[..7 * 36]);
}

#[test]
#[should_panic(expected = "Q5_1 dot of 512 elements")]
fn a_k_longer_than_the_rows_panics() {
    // whole rows of 256 elements, but `k` says 512
    let (w, acts) = rows(GgmlType::Q5_1, 256);
    Kernels::for_type(GgmlType::Q5_1)
        .unwrap()
        .dot_single(512, &w, &acts, 0);
}

#[test]
#[should_panic(expected = "F32 dot of 64 elements")]
fn a_weight_view_shorter_than_its_shape_panics() {
    // `WeightView`'s fields are public: `data` half of `n_out` rows of `k` F32 elements
    let (k, n) = (64, 4);
    let data = quantize_weights(GgmlType::F32, &rand_vec(k * n, 13));
    let view = WeightView {
        dtype: GgmlType::F32,
        n_out: n,
        k,
        data: &data[..data.len() / 2],
        kernels: Kernels::for_type(GgmlType::F32).unwrap(),
    };
    let mut acts = QActs::default();
    acts.convert(ActKind::F32, &rand_vec(k, 14), 1, k, 1);
    let mut out = vec![0f32; n];
    matmul(&view, &acts, &mut out, 1);
}

#[test]
fn a_weight_view_of_its_shape_matches_the_reference() {
    // negative control of the test above
    let (k, n) = (64, 4);
    let data = quantize_weights(GgmlType::F32, &rand_vec(k * n, 13));
    let view = WeightView {
        dtype: GgmlType::F32,
        n_out: n,
        k,
        data: &data,
        kernels: Kernels::for_type(GgmlType::F32).unwrap(),
    };
    let mut acts = QActs::default();
    acts.convert(ActKind::F32, &rand_vec(k, 14), 1, k, 1);
    let mut out = vec![0f32; n];
    matmul(&view, &acts, &mut out, 1);
    let reference = dot_fn_reference(GgmlType::F32).unwrap();
    for (j, &o) in out.iter().enumerate() {
        let want = reference(k, &data[4 * k * j..4 * k * (j + 1)], acts.row(0));
        assert!((o - want).abs() <= 1e-4 * want.abs().max(1.0), "row {j}");
    }
}
