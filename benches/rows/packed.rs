//! The K-quants' packed prompt GEMMs (Q2_K..Q6_K), AVX2 against VNNI, interleaved in one
//! process (`cargo bench --profile dev-release --bench rows -- packed`).
//!
//! Per type, what one task of the packed matmul does with one chunk: a pair of groups of 8
//! weight rows packed (one chunk of `PACKED_CHUNK_BYTES` of packed blocks, from rows of the
//! 70B hidden size), then a tile of 256 activation rows run over it 4 at a time, on one thread,
//! by each variant:
//! - `avx2`: the AVX2 kernel;
//! - `dp` / `w16`: the AVX-512 VNNI kernel with `vpdpbusd` runs (`DP = true`) or with AVX2's
//!   16-bit sums and `vpdpwssd` (`DP = false`);
//! - `x2-dp` / `x2-w16`: the same on 512-bit registers, both groups per call;
//! - `vex-dp` / `vex-w16`: the 256-bit ones in the AVX-VNNI form, where the CPU has it.
//!
//! Every round times each variant once (each over the chunk 20 times), in an order that rotates
//! from round to round; the report gives the median times and the medians of per-round time
//! ratios over `avx2`.

use std::hint::black_box;
use std::time::Instant;

use med42_rs::gguf::GgmlType;
use med42_rs::kernels::layout::{Acc, PACK_GROUP};
use med42_rs::kernels::x86::avx2::packed_k as a2;
use med42_rs::kernels::x86::has_avxvnni;
use med42_rs::kernels::x86::vnni::packed_k::{avx512vnni as e, avx512vnni_x2 as z, avxvnni as v};
use med42_rs::kernels::{ActKind, QActs};

use super::x86::{bytes, median, weights};

/// One variant: a packed GEMM of 4 activation rows over both groups of a pair.
type Gemm = fn(usize, &[Vec<u8>; 2], [*const u8; 4], &mut [[Acc; 4]; 2]);

/// An AVX2 pack function (the packing every variant runs on).
type Pack = unsafe fn(usize, usize, [*const u8; 8], *mut u8);

/// Activation rows per tile (the matmul's `PACKED_TILE`) and bytes per packed chunk
/// (`PACKED_CHUNK_BYTES`).
const TILE: usize = 256;
const CHUNK_BYTES: usize = 64 * 1024;

/// The variants of `t` this CPU runs (AVX-512 VNNI was detected by the caller).
fn variants(t: GgmlType) -> Vec<(&'static str, Gemm)> {
    use GgmlType::*;
    // SAFETY (every closure): the kernels' features were detected (AVX-512 VNNI by the caller,
    // AVX-VNNI before the vex variants are listed); each packed group holds `nb` blocks, each
    // activation row at least `nb` Q8_K blocks.
    macro_rules! one {
        ($f:path) => {
            |nb: usize, p: &[Vec<u8>; 2], a: [*const u8; 4], acc: &mut [[Acc; 4]; 2]| {
                for (p, acc) in p.iter().zip(acc) {
                    unsafe { $f(0, nb, nb, p.as_ptr(), a, acc) }
                }
            }
        };
    }
    macro_rules! each {
        ($f:path) => {
            |nb: usize, p: &[Vec<u8>; 2], a: [*const u8; 4], acc: &mut [[Acc; 4]; 2]| {
                for (p, acc) in p.iter().zip(acc) {
                    unsafe { $f(0, nb, nb, [p.as_ptr()], a, [acc]) }
                }
            }
        };
    }
    macro_rules! both {
        ($f:path) => {
            |nb: usize, p: &[Vec<u8>; 2], a: [*const u8; 4], acc: &mut [[Acc; 4]; 2]| {
                let [a0, a1] = acc;
                unsafe { $f(0, nb, nb, [p[0].as_ptr(), p[1].as_ptr()], a, [a0, a1]) }
            }
        };
    }
    let mut out: Vec<(&'static str, Gemm)> = match t {
        Q4_K => vec![
            ("avx2", one!(a2::gemm_q45_k::<4, false>)),
            ("dp", each!(e::gemm_q45_k::<4, false, true>)),
            ("w16", each!(e::gemm_q45_k::<4, false, false>)),
            ("x2-dp", both!(z::gemm_q45_k::<4, false, true>)),
            ("x2-w16", both!(z::gemm_q45_k::<4, false, false>)),
        ],
        Q5_K => vec![
            ("avx2", one!(a2::gemm_q45_k::<4, true>)),
            ("dp", each!(e::gemm_q45_k::<4, true, true>)),
            ("w16", each!(e::gemm_q45_k::<4, true, false>)),
            ("x2-dp", both!(z::gemm_q45_k::<4, true, true>)),
            ("x2-w16", both!(z::gemm_q45_k::<4, true, false>)),
        ],
        Q6_K => vec![
            ("avx2", one!(a2::gemm_k16::<4, 2>)),
            ("dp", each!(e::gemm_k16::<4, true, true>)),
            ("w16", each!(e::gemm_k16::<4, true, false>)),
            ("x2-dp", both!(z::gemm_k16::<4, true, true>)),
            ("x2-w16", both!(z::gemm_k16::<4, true, false>)),
        ],
        _ => vec![
            ("avx2", one!(a2::gemm_k16::<4, 4>)),
            ("dp", each!(e::gemm_k16::<4, false, true>)),
            ("w16", each!(e::gemm_k16::<4, false, false>)),
            ("x2-dp", both!(z::gemm_k16::<4, false, true>)),
            ("x2-w16", both!(z::gemm_k16::<4, false, false>)),
        ],
    };
    if has_avxvnni() {
        out.extend::<[(&'static str, Gemm); 2]>(match t {
            Q4_K => [
                ("vex-dp", each!(v::gemm_q45_k::<4, false, true>)),
                ("vex-w16", each!(v::gemm_q45_k::<4, false, false>)),
            ],
            Q5_K => [
                ("vex-dp", each!(v::gemm_q45_k::<4, true, true>)),
                ("vex-w16", each!(v::gemm_q45_k::<4, true, false>)),
            ],
            Q6_K => [
                ("vex-dp", each!(v::gemm_k16::<4, true, true>)),
                ("vex-w16", each!(v::gemm_k16::<4, true, false>)),
            ],
            _ => [
                ("vex-dp", each!(v::gemm_k16::<4, false, true>)),
                ("vex-w16", each!(v::gemm_k16::<4, false, false>)),
            ],
        });
    }
    out
}

/// Seconds of `reps` passes of `f` over the tile: both packed groups, 4 rows at a time.
fn pass(f: Gemm, nb: usize, packed: &[Vec<u8>; 2], a: &[&[u8]], reps: usize) -> f64 {
    let mut acc = vec![[[[[0f32; PACK_GROUP]; 4]; 4]; 2]; TILE / 4];
    let t0 = Instant::now();
    for _ in 0..reps {
        for (t, acc) in acc.iter_mut().enumerate() {
            let rows: [*const u8; 4] = std::array::from_fn(|i| a[4 * t + i].as_ptr());
            f(nb, packed, rows, acc);
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    black_box(&acc);
    dt
}

pub fn main(rounds: usize) {
    use GgmlType::*;
    println!(
        "packed GEMMs: one chunk of {} KiB per group, 2 groups, {TILE} activation rows 4 at a \
         time, 1 thread, {rounds} rounds; ratios: medians of per-round time ratios",
        CHUNK_BYTES / 1024
    );
    for t in [Q4_K, Q5_K, Q6_K, Q3_K, Q2_K] {
        let k = 8192;
        let (bb, pack): (usize, Pack) = match t {
            Q4_K => (a2::Q4_K_PACKED, a2::pack_q45_k::<false>),
            Q5_K => (a2::Q4_K_PACKED, a2::pack_q45_k::<true>),
            Q6_K => (a2::K16_PACKED, a2::pack_q6_k),
            Q3_K => (a2::K16_PACKED, a2::pack_q23_k::<true>),
            _ => (a2::K16_PACKED, a2::pack_q23_k::<false>),
        };
        let nb = CHUNK_BYTES / bb;
        let w = weights(t, 2 * PACK_GROUP);
        let row = k / 256 * t.type_size();
        let packed: [Vec<u8>; 2] = std::array::from_fn(|g| {
            let mut p = vec![0u8; nb * bb];
            let rows = std::array::from_fn(|i| w[(8 * g + i) * row..].as_ptr());
            // SAFETY: AVX2 present (implied by AVX-512 VNNI); rows of 32 blocks, room for nb.
            unsafe { pack(0, nb, rows, p.as_mut_ptr()) };
            p
        });
        let x: Vec<f32> = bytes(TILE * k, 5)
            .iter()
            .map(|&b| b as i8 as f32 / 64.0)
            .collect();
        let mut acts = QActs::default();
        acts.convert(ActKind::Q8K, &x, TILE, k, 1);
        let a: Vec<&[u8]> = (0..TILE).map(|r| acts.row_with_scales(r)).collect();
        let vs = variants(t);
        let mut times = vec![Vec::new(); vs.len()];
        for r in 0..rounds {
            for i in 0..vs.len() {
                let j = (i + r) % vs.len();
                times[j].push(pass(vs[j].1, nb, &packed, &a, 20));
            }
        }
        let ms: Vec<String> = vs
            .iter()
            .zip(&times)
            .map(|((name, _), t)| format!("{name} {:.2}", 1e3 * median(t.clone())))
            .collect();
        let ratios: Vec<String> = vs
            .iter()
            .zip(&times)
            .skip(1)
            .map(|((name, _), t)| {
                let r = t.iter().zip(&times[0]).map(|(p, q)| p / q).collect();
                format!("{name}/avx2 {:.3}", median(r))
            })
            .collect();
        println!("{t} ({nb} blocks), ms per pass: {}", ms.join(", "));
        println!("{t}, ratios: {}", ratios.join(", "));
    }
}
