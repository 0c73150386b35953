//! The KV cache and attention ([`crate::kernels::attn`]) against a float64 reference computed
//! from the stored values as this test rounds them itself (f16 by IEEE rounding, Q8_0 by ggml's
//! x86 rule), per cache type and kernel set; negative controls (a cache written with a wrong
//! scale, a reference that skips the rounding) must fail the same comparison; a query's result is
//! the same bits however queries are batched and however many threads run.

use half::f16;

use super::rand_vec;
use crate::kernels::attn::{attention_with, Isa, KvLayer, KvType, TILE};

/// Every kernel set this CPU runs for heads of `d` values.
fn isas(d: usize) -> Vec<Isa> {
    let best = Isa::best(d);
    if best == Isa::Scalar {
        vec![Isa::Scalar]
    } else {
        vec![Isa::Scalar, best]
    }
}

/// `x` rounded as a `ty` cache stores it, by this test's own statement of each rule.
fn rounded(ty: KvType, x: &[f32]) -> Vec<f32> {
    match ty {
        KvType::F32 => x.to_vec(),
        KvType::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        KvType::Q8_0 => x
            .chunks_exact(32)
            .flat_map(|b| {
                // ggml (x86): d = amax / 127 stored as f16, q = round_half_even(x * 127 / amax)
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
                let d = f16::from_f32(amax / 127.0).to_f32();
                b.iter()
                    .map(move |&v| (v * id).round_ties_even().clamp(-128.0, 127.0) * d)
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

/// A cache shape and its contents: K/V rows `(n_ctx, G*D)` as written, queries `(t, H*D)`.
struct Case {
    g: usize,
    rep: usize,
    d: usize,
    n_ctx: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn new(g: usize, rep: usize, d: usize, n_ctx: usize, seed: u64) -> Self {
        let n = n_ctx * g * d;
        Case {
            g,
            rep,
            d,
            n_ctx,
            k: rand_vec(n, seed),
            v: rand_vec(n, seed + 1),
        }
    }

    /// A `ty` cache holding every position, written in uneven chunks (7 rows, then the rest).
    fn layer(&self, ty: KvType) -> KvLayer {
        let mut kv = KvLayer::new(ty, self.g, self.n_ctx, self.d).unwrap();
        let kvd = self.g * self.d;
        let mut p = 0;
        for n in [7, 1, 60].into_iter().chain(std::iter::repeat(97)) {
            let n = n.min(self.n_ctx - p);
            kv.write(
                p,
                &self.k[p * kvd..(p + n) * kvd],
                &self.v[p * kvd..(p + n) * kvd],
            );
            p += n;
            if p == self.n_ctx {
                break;
            }
        }
        kv
    }

    /// Queries for `t` tokens (scaled so that some softmax rows are peaked).
    fn queries(&self, t: usize, seed: u64) -> Vec<f32> {
        rand_vec(t * self.g * self.rep * self.d, seed)
            .into_iter()
            .map(|x| 2.5 * x)
            .collect()
    }

    /// Float64 attention of `q` at `pos..pos + t` over K/V rows rounded as `ty` (or not at all).
    fn reference(&self, ty: Option<KvType>, q: &[f32], pos: usize, t: usize) -> Vec<f64> {
        let (d, kvd) = (self.d, self.g * self.d);
        let round = |x: &[f32]| -> Vec<f64> {
            let r = match ty {
                Some(ty) => x.chunks_exact(d).flat_map(|row| rounded(ty, row)).collect(),
                None => x.to_vec(),
            };
            r.into_iter().map(f64::from).collect()
        };
        let (k, v) = (round(&self.k), round(&self.v));
        let h_n = self.g * self.rep;
        let mut out = vec![0f64; t * h_n * d];
        for ti in 0..t {
            for h in 0..h_n {
                let g = h / self.rep;
                let qh = &q[(ti * h_n + h) * d..][..d];
                let s: Vec<f64> = (0..=pos + ti)
                    .map(|p| {
                        let kr = &k[p * kvd + g * d..][..d];
                        let dot: f64 = qh.iter().zip(kr).map(|(&a, &b)| a as f64 * b).sum();
                        dot / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                let o = &mut out[(ti * h_n + h) * d..][..d];
                for (p, w) in e.iter().enumerate() {
                    let vr = &v[p * kvd + g * d..][..d];
                    for (oi, &vi) in o.iter_mut().zip(vr) {
                        *oi += w / sum * vi;
                    }
                }
            }
        }
        out
    }

    fn run(&self, isa: Isa, kv: &KvLayer, q: &[f32], pos: usize, t: usize, nt: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; t * self.g * self.rep * self.d];
        attention_with(isa, kv, q, self.g * self.rep, pos, t, &mut out, nt);
        out
    }
}

fn max_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// Largest error allowed against the reference (outputs are O(1): weighted means of V).
const TOL: f64 = 2e-5;

/// The shapes tested: (G, rep, D) with D a multiple of 32 (every type) or not (F16/F32 only).
fn shapes(ty: KvType) -> Vec<(usize, usize, usize)> {
    let mut v = vec![(2, 3, 64), (1, 1, 128), (4, 2, 32)];
    if ty != KvType::Q8_0 {
        v.extend([(2, 2, 40), (1, 3, 20)]);
    }
    v
}

#[test]
fn stored_values_are_the_rounded_inputs() {
    for ty in KvType::ALL {
        for (g, rep, d) in shapes(ty) {
            let c = Case::new(g, rep, d, 70, 11);
            let kv = c.layer(ty);
            assert_eq!(kv.bytes(), 70 * ty.bytes_per_position(g, d));
            for isa in isas(d) {
                let (mut k, mut v) = (vec![0f32; d], vec![0f32; d]);
                for p in [0, 6, 7, 8, 69] {
                    for gi in 0..g {
                        kv.read(isa, gi, p, &mut k, &mut v);
                        let at = p * g * d + gi * d;
                        assert_eq!(k, rounded(ty, &c.k[at..at + d]), "{ty} {isa:?} K {p} {gi}");
                        assert_eq!(v, rounded(ty, &c.v[at..at + d]), "{ty} {isa:?} V {p} {gi}");
                    }
                }
            }
        }
    }
}

#[test]
fn attention_matches_float64_reference_per_type() {
    for ty in KvType::ALL {
        for (g, rep, d) in shapes(ty) {
            let c = Case::new(g, rep, d, 300, 21);
            let kv = c.layer(ty);
            // a prompt from empty, a prompt after a cached prefix (crossing tiles), decode at the end
            for (pos, t) in [(0, 70), (200, 45), (299, 1), (TILE - 1, 2)] {
                let q = c.queries(t, 31 + pos as u64);
                let want = c.reference(Some(ty), &q, pos, t);
                for isa in isas(d) {
                    let got = c.run(isa, &kv, &q, pos, t, 2);
                    let err = max_err(&got, &want);
                    assert!(
                        err < TOL,
                        "{ty} {isa:?} G{g} rep{rep} D{d} pos {pos} t {t}: {err:e}"
                    );
                }
            }
        }
    }
}

/// Scale every stored value of K (`v = false`) or V by `f`: Q8_0 through its block scales.
fn rescale(kv: &mut KvLayer, v: bool, f: f32) {
    let ty = kv.kv_type();
    let b = if v {
        kv.v_bytes_mut()
    } else {
        kv.k_bytes_mut()
    };
    match ty {
        KvType::F32 => b.chunks_exact_mut(4).for_each(|x| {
            let y = f32::from_le_bytes(x.try_into().unwrap()) * f;
            x.copy_from_slice(&y.to_le_bytes());
        }),
        KvType::F16 => b.chunks_exact_mut(2).for_each(|x| {
            let y = f16::from_f32(f16::from_le_bytes([x[0], x[1]]).to_f32() * f);
            x.copy_from_slice(&y.to_le_bytes());
        }),
        KvType::Q8_0 => b.chunks_exact_mut(34).for_each(|x| {
            let y = f16::from_f32(f16::from_le_bytes([x[0], x[1]]).to_f32() * f);
            x[..2].copy_from_slice(&y.to_le_bytes());
        }),
    }
}

#[test]
fn negative_control_wrong_scale_fails() {
    let c = Case::new(2, 3, 64, 300, 41);
    let (pos, t) = (200, 45);
    let q = c.queries(t, 43);
    for ty in KvType::ALL {
        let want = c.reference(Some(ty), &q, pos, t);
        for v in [false, true] {
            let mut kv = c.layer(ty);
            rescale(&mut kv, v, 1.02);
            for isa in isas(c.d) {
                let err = max_err(&c.run(isa, &kv, &q, pos, t, 2), &want);
                assert!(
                    err > 20.0 * TOL,
                    "{ty} {isa:?} V={v}: a 2% wrong scale passes: {err:e}"
                );
            }
        }
    }
}

#[test]
fn negative_control_reference_without_rounding_fails() {
    // the comparison is sharp enough to see the stored type: F16 and Q8_0 differ from the
    // unrounded reference by more than the tolerance, F32 does not
    let c = Case::new(2, 3, 64, 300, 51);
    let (pos, t) = (200, 45);
    let q = c.queries(t, 53);
    let exact = c.reference(None, &q, pos, t);
    for ty in KvType::ALL {
        let kv = c.layer(ty);
        let err = max_err(&c.run(Isa::best(c.d), &kv, &q, pos, t, 2), &exact);
        if ty == KvType::F32 {
            assert!(err < TOL, "{err:e}");
        } else {
            assert!(err > 5.0 * TOL, "{ty} indistinguishable from f32: {err:e}");
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn batch_invariant_bit_for_bit() {
    for ty in KvType::ALL {
        for (g, rep, d) in shapes(ty) {
            let c = Case::new(g, rep, d, 160, 61);
            let kv = c.layer(ty);
            let (pos, t) = (63, 37);
            let q = c.queries(t, 67);
            let qd = g * rep * d;
            for isa in isas(d) {
                let all = c.run(isa, &kv, &q, pos, t, 2);
                // thread counts (7 also splits each KV head's queries into smaller chunks)
                for nt in [1, 7] {
                    assert_eq!(
                        bits(&all),
                        bits(&c.run(isa, &kv, &q, pos, t, nt)),
                        "nt {nt}"
                    );
                }
                let mut one = Vec::new();
                for i in 0..t {
                    one.extend(c.run(isa, &kv, &q[i * qd..(i + 1) * qd], pos + i, 1, 2));
                }
                assert_eq!(
                    bits(&all),
                    bits(&one),
                    "{ty} {isa:?} D{d}: one query per call"
                );
                let mut split = c.run(isa, &kv, &q[..5 * qd], pos, 5, 2);
                split.extend(c.run(isa, &kv, &q[5 * qd..], pos + 5, t - 5, 2));
                assert_eq!(
                    bits(&all),
                    bits(&split),
                    "{ty} {isa:?} D{d}: 5 + 32 queries"
                );
            }
        }
    }
}

#[test]
fn long_context_decode_matches_reference() {
    // thousands of positions: many tiles, the running maximum moving late
    let c = Case::new(2, 4, 128, 2100, 71);
    for ty in KvType::ALL {
        let kv = c.layer(ty);
        let q = c.queries(2, 73);
        let want = c.reference(Some(ty), &q, 2098, 2);
        for isa in isas(c.d) {
            let err = max_err(&c.run(isa, &kv, &q, 2098, 2, 2), &want);
            assert!(err < TOL, "{ty} {isa:?}: {err:e}");
        }
    }
}

#[test]
fn kv_type_names_sizes_and_errors() {
    for ty in KvType::ALL {
        assert_eq!(KvType::from_name(ty.name()).unwrap(), ty);
        assert_eq!(ty.to_string(), ty.name());
    }
    assert_eq!(KvType::from_name("Q8_0").unwrap(), KvType::Q8_0);
    assert_eq!(KvType::default(), KvType::F16);
    let e = KvType::from_name("q4_0").unwrap_err().to_string();
    assert!(e.contains("q4_0") && e.contains("f16"), "{e}");
    // Med42-70B: 8 KV heads of 128, per layer and position: 4 KiB f16, 2176 B q8_0, 8 KiB f32
    assert_eq!(KvType::F16.bytes_per_position(8, 128), 4096);
    assert_eq!(KvType::Q8_0.bytes_per_position(8, 128), 2176);
    assert_eq!(KvType::F32.bytes_per_position(8, 128), 8192);
    let e = KvLayer::new(KvType::Q8_0, 2, 16, 20)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("32") && e.contains("20"), "{e}");
    assert!(KvLayer::new(KvType::F16, 2, 16, 20).is_ok());
}

#[test]
#[should_panic(expected = "past n_ctx")]
fn write_past_n_ctx_panics() {
    let mut kv = KvLayer::new(KvType::F16, 1, 4, 32).unwrap();
    kv.write(3, &[0.0; 64], &[0.0; 64]);
}

#[test]
#[should_panic(expected = "past n_ctx")]
fn attention_past_n_ctx_panics() {
    let kv = KvLayer::new(KvType::Q8_0, 1, 4, 32).unwrap();
    let mut out = [0f32; 64];
    attention_with(Isa::Scalar, &kv, &[0.0; 64], 1, 3, 2, &mut out, 1);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_exp_within_two_ulp() {
    use crate::kernels::x86::{avx2::attn::exp_sum, has_avx2};
    if !has_avx2() {
        return;
    }
    // scores minus their maximum: 0 down to far below f32's smallest normal exp
    let xs: Vec<f32> = (0..20_000).map(|i| -(i as f32) * 0.0047).collect();
    for (ci, chunk) in xs.chunks(13).enumerate() {
        let n = chunk.len();
        let mut s = chunk.to_vec();
        s.resize(n.next_multiple_of(8), f32::NAN); // lanes past n are masked out
                                                   // SAFETY: AVX2 detected; `s` holds n rounded up to 8 values.
        let sum = unsafe { exp_sum(n, s.as_mut_ptr(), 0.0) };
        let mut want_sum = 0f64;
        for (&x, &e) in chunk.iter().zip(&s) {
            let want = (x as f64).exp();
            want_sum += want;
            if want > 1.2e-38 {
                let ulp = f32::EPSILON as f64 * want;
                assert!(
                    (e as f64 - want).abs() <= 2.0 * ulp,
                    "exp({x}) = {e}, want {want}"
                );
            } else {
                assert!(e < 1.2e-38, "exp({x}) = {e}");
            }
        }
        assert!(
            s[n..].iter().all(|&e| e == 0.0),
            "chunk {ci}: {:?}",
            &s[n..]
        );
        assert!(
            (sum as f64 - want_sum).abs() <= 1e-6 * want_sum.max(1e-30),
            "chunk {ci}"
        );
    }
    // the max-subtraction: -inf and huge negative differences give (almost) zero, never NaN
    let mut s = vec![0.0, f32::NEG_INFINITY, -1e30, 3.0, 0.0, 0.0, 0.0, 0.0];
    // SAFETY: as above.
    let sum = unsafe { exp_sum(4, s.as_mut_ptr(), 3.0) };
    assert!(s.iter().all(|e| e.is_finite()) && (sum - (1.0 + (-3f32).exp())).abs() < 1e-6);
}

#[test]
fn save_restore_round_trip() {
    for ty in KvType::ALL {
        let c = Case::new(2, 3, 64, 90, 81);
        let kv = c.layer(ty);
        let mut saved = Vec::new();
        kv.save(50, &mut saved);
        assert_eq!(saved.len(), kv.saved_bytes(50));
        assert_eq!(saved.len(), 50 * ty.bytes_per_position(2, 64));
        let mut back = KvLayer::new(ty, 2, 90, 64).unwrap();
        assert_eq!(back.restore(50, &saved), saved.len());
        // positions 0..50 attend identically; a fresh cache (negative control) does not
        let q = c.queries(3, 83);
        let want = c.run(Isa::best(64), &kv, &q, 47, 3, 2);
        assert_eq!(
            bits(&c.run(Isa::best(64), &back, &q, 47, 3, 2)),
            bits(&want),
            "{ty}"
        );
        let fresh = KvLayer::new(ty, 2, 90, 64).unwrap();
        assert_ne!(
            bits(&c.run(Isa::best(64), &fresh, &q, 47, 3, 2)),
            bits(&want)
        );
    }
}
