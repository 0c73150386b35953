//! The multi-row decode kernels, old and new, interleaved in one process: robust to a shared
//! machine, where timings of separate runs drift by more than the differences measured here.
//!
//! For Q8_0, Q4_K, Q6_K and Q3_K, one weight matrix of rows of k = 8192 (the 70B hidden size) with
//! random quants, on one thread, through the VNNI kernels of this CPU's form:
//! - `dec1`: one activation row, the single-row kernel as it was (a decode step of one sequence);
//! - `new1` (the K-quants): the single-row kernel the dispatch runs (`PK`: packed sub-block sums);
//! - `one3`: 3 rows, 3 single-row calls per weight row (what a 4-row call with a row twice
//!   replaces in the matmul);
//! - `old4` / `old8`: 4 / 8 rows, one call of the multi-row kernel as it was (no software
//!   prefetch: `PF = false`; `PK = false`);
//! - `pf4` / `pf8` (the K-quants): with prefetch, without `PK`;
//! - `new4` / `new8`: the multi-row kernels the dispatch runs (`PF`, and `PK` for the K-quants).
//!
//! Every round times each variant once over the whole matrix, in an order that rotates from
//! round to round; the report gives each variant's median time and the medians of per-round
//! time ratios between variants, among them each over `dec1`: what a batched step of 4 rows
//! costs next to one sequence's step (4 sequences at 3x one sequence's aggregate tok/s need
//! 1.33 or less). Two matrices: 1 GiB (the weights stream from memory, as in decode; more than
//! the L3 of large servers) and 2 MiB (in L2: the kernels' compute alone).
//!
//! `cargo bench --profile dev-release --bench rows` (x86-64 with AVX-512 VNNI; elsewhere it says
//! so and exits). `MED42_ROWS_ROUNDS` sets the rounds (default 15). With the argument `packed`
//! (`cargo bench ... --bench rows -- packed`) it compares the K-quants' packed prompt GEMMs
//! instead ([`packed`]).

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::hint::black_box;
    use std::time::Instant;

    use med42_rs::gguf::GgmlType;
    use med42_rs::kernels::acts::{q8_0_scales_offset, q8_0_sums_offset};
    use med42_rs::kernels::x86::avx2::multi::Q8_0W;
    use med42_rs::kernels::x86::vnni::{blocks32, kquants};
    use med42_rs::kernels::x86::{has_avx512vnni, vnni};
    use med42_rs::kernels::{ActKind, QActs};

    const K: usize = 8192;

    /// Deterministic bytes (splitmix64).
    pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// `rows` weight rows of `t` with random quants and small finite f16 scales.
    pub(crate) fn weights(t: GgmlType, rows: usize) -> Vec<u8> {
        let bs = t.type_size();
        let mut w = bytes(rows * K / t.block_size() * bs, 7);
        let fields: &[usize] = match t {
            GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            GgmlType::Q3_K => &[108],
            GgmlType::Q2_K => &[80, 82],
            _ => &[0],
        };
        let h = half::f16::from_f32(0.01).to_bits().to_le_bytes();
        for b in w.chunks_exact_mut(bs) {
            for &o in fields {
                b[o..o + 2].copy_from_slice(&h);
            }
        }
        w
    }

    type Kernel = fn(&[u8], &[&[u8]; 8], &mut f32);

    /// Columns of the report: (variant, over variant) medians of per-round time ratios (those of
    /// variants a type has).
    const RATIOS: [(&str, &str); 12] = [
        ("new1", "dec1"),
        ("new4", "old4"),
        ("new4", "pf4"),
        ("new8", "old8"),
        ("new8", "pf8"),
        ("new4", "one3"),
        ("old4", "dec1"),
        ("new4", "dec1"),
        ("new4", "new1"),
        ("old8", "dec1"),
        ("new8", "dec1"),
        ("new8", "new1"),
    ];

    /// The variants of `t`: (name, what one weight row costs: its kernel calls).
    fn variants(t: GgmlType) -> Vec<(&'static str, Kernel)> {
        // SAFETY (every closure): AVX-512 VNNI was detected before any runs; the rows hold K
        // values of their type (weights) and whole converted activation rows.
        macro_rules! q8 {
            ($n:literal, $calls:literal, $f:path) => {
                |w: &[u8], a: &[&[u8]; 8], out: &mut f32| {
                    let (so, mo) = (q8_0_scales_offset(K / 32), q8_0_sums_offset(K / 32));
                    for c in 0..$calls {
                        let ap: [*const u8; $n] = std::array::from_fn(|i| a[c + i].as_ptr());
                        let r = unsafe { $f(K / 32, w.as_ptr(), ap, so, mo) };
                        *out += r.iter().sum::<f32>();
                    }
                }
            };
        }
        macro_rules! kq {
            ($n:literal, $calls:literal, $f:path) => {
                |w: &[u8], a: &[&[u8]; 8], out: &mut f32| {
                    for c in 0..$calls {
                        let ap: [*const u8; $n] = std::array::from_fn(|i| a[c + i].as_ptr());
                        let r = unsafe { $f(K / 256, w.as_ptr(), ap) };
                        *out += r.iter().sum::<f32>();
                    }
                }
            };
        }
        use blocks32::avx512vnni::q8_acts;
        use kquants::avx512vnni::{q23_k, q45_k, q6_k};
        match t {
            GgmlType::Q8_0 => vec![
                ("dec1", q8!(1, 1, q8_acts::<1, Q8_0W, false>)),
                ("one3", q8!(1, 3, q8_acts::<1, Q8_0W, false>)),
                ("old4", q8!(4, 1, q8_acts::<4, Q8_0W, false>)),
                ("new4", q8!(4, 1, q8_acts::<4, Q8_0W, true>)),
                ("old8", q8!(8, 1, q8_acts::<8, Q8_0W, false>)),
                ("new8", q8!(8, 1, q8_acts::<8, Q8_0W, true>)),
            ],
            GgmlType::Q4_K => vec![
                ("dec1", kq!(1, 1, q45_k::<1, false, false, false>)),
                ("new1", kq!(1, 1, q45_k::<1, false, false, true>)),
                ("one3", kq!(1, 3, q45_k::<1, false, false, true>)),
                ("old4", kq!(4, 1, q45_k::<4, false, false, false>)),
                ("pf4", kq!(4, 1, q45_k::<4, false, true, false>)),
                ("new4", kq!(4, 1, q45_k::<4, false, true, true>)),
                ("old8", kq!(8, 1, q45_k::<8, false, false, false>)),
                ("pf8", kq!(8, 1, q45_k::<8, false, true, false>)),
                ("new8", kq!(8, 1, q45_k::<8, false, true, true>)),
            ],
            GgmlType::Q3_K => vec![
                ("dec1", kq!(1, 1, q23_k::<1, true, false, false>)),
                ("new1", kq!(1, 1, q23_k::<1, true, false, true>)),
                ("one3", kq!(1, 3, q23_k::<1, true, false, true>)),
                ("old4", kq!(4, 1, q23_k::<4, true, false, false>)),
                ("pf4", kq!(4, 1, q23_k::<4, true, true, false>)),
                ("new4", kq!(4, 1, q23_k::<4, true, true, true>)),
                ("old8", kq!(8, 1, q23_k::<8, true, false, false>)),
                ("pf8", kq!(8, 1, q23_k::<8, true, true, false>)),
                ("new8", kq!(8, 1, q23_k::<8, true, true, true>)),
            ],
            _ => vec![
                ("dec1", kq!(1, 1, q6_k::<1, false, false>)),
                ("new1", kq!(1, 1, q6_k::<1, false, true>)),
                ("one3", kq!(1, 3, q6_k::<1, false, true>)),
                ("old4", kq!(4, 1, q6_k::<4, false, false>)),
                ("pf4", kq!(4, 1, q6_k::<4, true, false>)),
                ("new4", kq!(4, 1, q6_k::<4, true, true>)),
                ("old8", kq!(8, 1, q6_k::<8, false, false>)),
                ("pf8", kq!(8, 1, q6_k::<8, true, false>)),
                ("new8", kq!(8, 1, q6_k::<8, true, true>)),
            ],
        }
    }

    pub(crate) fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Seconds of `reps` passes of `f` over every row of `w`.
    fn pass(f: Kernel, w: &[u8], row: usize, a: &[&[u8]; 8], reps: usize) -> f64 {
        let mut sink = 0f32;
        let t0 = Instant::now();
        for _ in 0..reps {
            for wr in w.chunks_exact(row) {
                f(wr, a, &mut sink);
            }
        }
        black_box(sink);
        t0.elapsed().as_secs_f64()
    }

    pub fn main() {
        if std::env::args().any(|a| a == "--list") {
            return;
        }
        if !has_avx512vnni() {
            println!("rows: this CPU lacks AVX-512 F/BW/VL/VNNI; nothing to compare");
            return;
        }
        let rounds: usize = std::env::var("MED42_ROWS_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15);
        if std::env::args().any(|a| a == "packed") {
            return super::packed::main(rounds);
        }
        println!(
            "kernels: {}; k = {K}, 1 thread, {rounds} rounds",
            vnni::Vnni::detect().map_or("none", |v| v.name())
        );
        println!(
            "variants: dec1 / new1 = 1 row, single-row kernel before / now; one3 = 3 single-row \
             calls; oldN / newN = N rows, multi-row kernel before / now; pfN = with prefetch, \
             without packed sums; ratios: medians of per-round time ratios"
        );
        for t in [
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::Q3_K,
        ] {
            let kind = ActKind::of(t).unwrap();
            let mut acts = QActs::default();
            let x: Vec<f32> = bytes(8 * K, 3)
                .iter()
                .map(|&b| b as i8 as f32 / 64.0)
                .collect();
            acts.convert(kind, &x, 8, K, 1);
            let a: [&[u8]; 8] = std::array::from_fn(|i| acts.row_with_scales(i));
            let row = K / t.block_size() * t.type_size();
            for (label, bytes_total) in [("1 GiB", 1usize << 30), ("2 MiB", 2 << 20)] {
                let w = weights(t, bytes_total / row);
                // the L2 matrix is passed over many times per timing, to last about as long
                let reps = if bytes_total < (64 << 20) { 256 } else { 1 };
                let vs = variants(t);
                let mut times = vec![Vec::new(); vs.len()];
                for r in 0..rounds {
                    for i in 0..vs.len() {
                        let v = (i + r) % vs.len();
                        times[v].push(pass(vs[v].1, &w, row, &a, reps));
                    }
                }
                let ms: Vec<String> = vs
                    .iter()
                    .zip(&times)
                    .map(|((name, _), t)| format!("{name} {:.2}", 1e3 * median(t.clone())))
                    .collect();
                let at = |name: &str| vs.iter().position(|v| v.0 == name);
                let ratios: Vec<String> = RATIOS
                    .iter()
                    .filter_map(|&(x, y)| {
                        let (i, j) = (at(x)?, at(y)?);
                        let r = times[i].iter().zip(&times[j]).map(|(p, q)| p / q).collect();
                        Some(format!("{x}/{y} {:.3}", median(r)))
                    })
                    .collect();
                println!("{t} {label}, ms per pass: {}", ms.join(", "));
                println!("{t} {label}, ratios: {}", ratios.join(", "));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[path = "rows/packed.rs"]
mod packed;

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("rows: the kernels compared here are x86-64 ones; nothing to compare");
}
