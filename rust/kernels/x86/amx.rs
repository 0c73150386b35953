//! The AMX prompt GEMM of the K-quants (Q2_K to Q6_K; Intel Advanced Matrix Extensions:
//! `tdpbusd` on 16 x 64-byte tiles), for CPUs that have AMX-TILE and AMX-INT8 (Xeon since
//! Sapphire Rapids) and an OS that lends the tile state (Linux 5.16+, asked once per process with
//! `arch_prctl`).
//!
//! One `tdpbusd` multiplies a 16 x 64 tile of unsigned bytes by a 64 x 16 tile of signed bytes
//! into 16 x 16 exact i32 sums, in about 18 cycles on a 2-core Xeon of that class: 16 x 16 x 64
//! products, where a 512-bit `vpdpbusd` does 64 per cycle. These types need a scale per 16 or
//! 32 values (`sum(scale * q * a)`), which `tdpbusd` cannot apply inside its 64-value sums, so the
//! scales go into the weights: each value becomes `w = scale * q` (at most 63 * 128 in
//! magnitude, for Q6_K), split into two signed bytes `lo = w & 127` and `hi = w >> 7`
//! (arithmetic). The activations `a` (Q8_K bytes) enter as the unsigned bytes `a + 128`, and
//! exactly in i32, per super-block:
//!
//! `sum(scale * q * a) = sum((a + 128) * lo) + 128 * sum((a + 128) * hi) - 128 * sum(w)`
//!
//! two `tdpbusd` per 64 values, `sum(w)` of each weight row computed when packing. The pair
//! term (`sum(pair * activation 16-sum)`: the offset of Q3_K and Q6_K, the mins of Q2_K, Q4_K and
//! Q5_K, a Q4_K/Q5_K min once for each 16-sum of its 32 values) is `vpdpwssd`, as in the VNNI
//! packed GEMM. Both
//! integers then take the f32 operations of every other kernel of these types in their order
//! (`acc = fma(d * da, sum, acc)`, `acc = fma(-(f * da), pairs, acc)` per super-block), so the
//! results equal those of the AVX2 and VNNI kernels bit for bit (tested) and batch invariance
//! holds with AMX as without.
//!
//! Layouts: [`AMX_ROWS`] weight rows are packed per super-block ([`AMX_PACKED`] bytes) from the
//! AVX2 packing of their two groups of 8 ([`crate::kernels::x86::avx2::packed_k`]): the `lo` and
//! `hi` bytes in the `tdpbusd` layout (4 consecutive values of one weight row per 32-bit lane, the
//! 16 rows side by side), `128 * sum(w)` per row, 8 pair vectors, `d` and `f` (`dmin`).
//! The activation rows are the Q8_K rows with every byte plus 128 ([`unsigned_acts`]), each tile
//! [`AMX_COLS`] of them.

#![allow(unsafe_op_in_unsafe_fn)]
#![allow(clippy::needless_range_loop)]

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::gguf::GgmlType;
use crate::kernels::acts::{QActs, Q8K_BSUMS, Q8K_QS};
use crate::kernels::x86::avx2::packed_k::{K16_PACKED, Q4_K_PACKED};

const Q8K: usize = GgmlType::Q8_K.type_size();

/// Weight rows per packed group: the columns of the `tdpbusd` weight tile and of its result.
pub const AMX_ROWS: usize = 16;
/// Prompt rows per activation tile: the rows of the `tdpbusd` result.
pub const AMX_COLS: usize = 16;

// one packed super-block of AMX_ROWS weight rows
const P_LO: usize = 0;
const P_HI: usize = 64 * 64;
const P_WSUM: usize = 2 * 64 * 64;
const P_PAIRS: usize = P_WSUM + 64;
const P_D: usize = P_PAIRS + 8 * 64;
const P_F: usize = P_D + 64;
/// Bytes of one packed super-block of [`AMX_ROWS`] weight rows.
pub const AMX_PACKED: usize = P_F + 64;

/// Whether the AMX GEMM runs here: AMX-TILE and AMX-INT8, AVX-512 (F/BW/VL/VNNI, for the
/// packing and the work on the tiles' results), and the tile state granted by the OS.
/// `MED42_AMX=0` in the environment turns it off (the VNNI packed GEMM runs instead, with the
/// same results).
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        if std::env::var("MED42_AMX").is_ok_and(|v| v.trim() == "0") {
            return false;
        }
        if !super::has_avx512vnni() {
            return false;
        }
        // CPUID.(EAX=7, ECX=0):EDX bit 24 is AMX-TILE, bit 25 AMX-INT8
        let r = __cpuid_count(7, 0);
        if r.edx & (1 << 24) == 0 || r.edx & (1 << 25) == 0 {
            return false;
        }
        request_tile_state()
    })
}

/// Whether `t` has the AMX GEMM (where [`available`]).
pub fn has_gemm(t: GgmlType) -> bool {
    use GgmlType::*;
    matches!(t, Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
}

/// Asks Linux for the tile data state of this process (`ARCH_REQ_XCOMP_PERM` for
/// `XFEATURE_XTILEDATA`); false where the kernel refuses (older than 5.16, or AMX disabled).
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    extern "C" {
        fn syscall(num: i64, ...) -> i64;
    }
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    // SAFETY: arch_prctl with these arguments only changes what this process may use.
    unsafe { syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The tile configuration (palette 1): every tile register 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Loads the tile configuration on this thread (through [`Tiles`]).
///
/// # Safety
/// [`available`] returned true.
#[inline]
unsafe fn configure() {
    let mut c = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    for t in 0..8 {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    asm!(
        "ldtilecfg [{0}]",
        in(reg) &c as *const TileConfig,
        out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
        out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
        options(nostack, readonly),
    );
}

/// Releases this thread's tile state (so that context switches do not save it).
///
/// # Safety
/// [`available`] returned true.
#[inline]
unsafe fn release() {
    asm!(
        "tilerelease",
        out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
        out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
        options(nostack, nomem),
    );
}

/// The tile configuration of this thread while it lives ([`configure`] on creation, [`release`]
/// on drop, also when a panic unwinds).
pub struct Tiles(());

impl Tiles {
    /// # Safety
    /// [`available`] returned true.
    pub unsafe fn new() -> Self {
        configure();
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: a `Tiles` exists only after `configure`, so AMX is available.
        unsafe { release() }
    }
}

/// Asks for the cache lines of `len` bytes at `p` to come into L2 (a hint: never faults).
#[inline]
pub fn prefetch(p: *const u8, len: usize) {
    let mut l = 0;
    while l < len + 63 {
        // SAFETY: a prefetch is a hint, valid for any address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(l) as *const i8) };
        l += 64;
    }
}

/// Pack super-block `b` of [`AMX_ROWS`] weight rows of `t` ([`has_gemm`]) into `out`
/// ([`AMX_PACKED`] bytes), through `tmp` (two [`K16_PACKED`] blocks, the larger AVX2 packing).
///
/// # Safety
/// AVX-512 F/BW/VL with AVX2/FMA/F16C present; every `rows[i]` holds super-block `b`; `out` and
/// `tmp` have room.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn pack(t: GgmlType, b: usize, rows: [*const u8; AMX_ROWS], tmp: *mut u8, o: *mut u8) {
    let g0: [*const u8; 8] = std::array::from_fn(|i| rows[i]);
    let g1: [*const u8; 8] = std::array::from_fn(|i| rows[8 + i]);
    // i16 element e of a piece widened from one group's 32 bytes belongs to row e / 4, whose
    // scale is element 2 * (e / 4) of that group's scale vector
    let idx = _mm512_set_epi16(
        14, 14, 14, 14, 12, 12, 12, 12, 10, 10, 10, 10, 8, 8, 8, 8, 6, 6, 6, 6, 4, 4, 4, 4, 2, 2,
        2, 2, 0, 0, 0, 0,
    );
    let m7 = _mm512_set1_epi16(127);
    let ones = _mm512_set1_epi16(1);
    // the AVX2 packing: Q4_K/Q5_K with a scale per 32 values (8 scale vectors, then 4 vectors
    // of min pairs per 32 values, d, dmin), the others per 16 (16 scale vectors, then 8 pair
    // vectors per 16 values, d, f)
    let q45 = matches!(t, GgmlType::Q4_K | GgmlType::Q5_K);
    let (bytes, per_scale, n_scales) = if q45 {
        (Q4_K_PACKED, 8, 8)
    } else {
        (K16_PACKED, 4, 16)
    };
    super::avx2::pack(t, b, 1, g0, tmp);
    super::avx2::pack(t, b, 1, g1, tmp.add(bytes));
    let src = [tmp as *const u8, tmp.add(bytes) as *const u8];
    let mut wsum = [_mm512_setzero_si512(); 2];
    // piece c: values 4c..4c + 4 of every row
    for c in 0..64 {
        for g in 0..2 {
            let q = _mm512_cvtepu8_epi16(_mm256_loadu_si256(src[g].add(32 * c) as *const __m256i));
            let at = 8 * 256 + 32 * (c / per_scale);
            let sv = _mm256_loadu_si256(src[g].add(at) as *const __m256i);
            let sc = _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(sv));
            let w = _mm512_mullo_epi16(q, sc);
            wsum[g] = _mm512_add_epi32(wsum[g], _mm512_madd_epi16(w, ones));
            let at = 64 * c + 32 * g;
            _mm256_storeu_si256(
                o.add(P_LO + at) as *mut __m256i,
                _mm512_cvtepi16_epi8(_mm512_and_si512(w, m7)),
            );
            _mm256_storeu_si256(
                o.add(P_HI + at) as *mut __m256i,
                _mm512_cvtepi16_epi8(_mm512_srai_epi16::<7>(w)),
            );
        }
    }
    // row 8g + i: 32-bit lanes 2i and 2i + 1 of wsum[g]
    let mut ws = [0i32; 16];
    for g in 0..2 {
        let l: [i32; 16] = std::mem::transmute(wsum[g]);
        for i in 0..8 {
            ws[8 * g + i] = 128 * (l[2 * i] + l[2 * i + 1]);
        }
    }
    std::ptr::copy_nonoverlapping(ws.as_ptr() as *const u8, o.add(P_WSUM), 64);
    // 8 pair vectors, lane i: row i's multipliers of the activation 16-sums 2p and 2p + 1
    // as i16 (the two groups' 32 bytes side by side)
    let tail = 8 * 256 + 32 * n_scales;
    if q45 {
        // min pair vector p holds sub-blocks 2p and 2p + 1; a sub-block's min multiplies
        // both of its 16-sums
        for p in 0..8 {
            let v = [0, 1]
                .map(|g| _mm256_loadu_si256(src[g].add(tail + 32 * (p / 2)) as *const __m256i));
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v[0]), v[1]);
            let e: [i16; 32] = std::array::from_fn(|e| {
                let lane = e / 2;
                (16 * (lane / 8) + 2 * (lane % 8) + p % 2) as i16
            });
            let idx = _mm512_loadu_si512(e.as_ptr() as *const _);
            _mm512_storeu_si512(
                o.add(P_PAIRS + 64 * p) as *mut _,
                _mm512_permutexvar_epi16(idx, z),
            );
        }
    } else {
        for p in 0..8 {
            for g in 0..2 {
                let from = src[g].add(tail + 32 * p);
                std::ptr::copy_nonoverlapping(from, o.add(P_PAIRS + 64 * p + 32 * g), 32);
            }
        }
    }
    // d and f (Q4_K, Q5_K: dmin): 8 f32 per group after the pair vectors
    let df = tail + if q45 { 4 * 32 } else { 8 * 32 };
    for v in 0..2 {
        for g in 0..2 {
            let from = src[g].add(df + 32 * v);
            std::ptr::copy_nonoverlapping(from, o.add(P_D + 64 * v + 32 * g), 32);
        }
    }
}

/// Bytes of one activation tile's super-block in [`unsigned_acts`] form: 4 steps of 64 values of
/// [`AMX_COLS`] prompt rows.
pub const AMX_ACT: usize = 4 * 64 * AMX_COLS;

/// A 64-byte aligned `len`-byte region of `buf` (grown as needed).
pub fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    buf.resize(len + 64, 0);
    let off = buf.as_ptr().align_offset(64);
    &mut buf[off..off + len]
}

/// The activation rows `0..m` of `acts` (Q8_K, `row_nb` blocks) with every byte plus 128, as the
/// tiles load them: tile `i` (rows `16i..16i + 16`, those past `m` zero), super-block `b`, step
/// `s` of 64 values at `((i * row_nb + b) * 4 + s) * 1024`, row by row (the block scales and sums
/// come from `acts` itself).
pub fn unsigned_acts(acts: &QActs, m: usize, row_nb: usize, out: &mut [u8]) {
    assert!(out.len() >= m.div_ceil(AMX_COLS) * row_nb * AMX_ACT);
    for t in 0..m.div_ceil(AMX_COLS) * AMX_COLS {
        let (tile, r) = (t / AMX_COLS, t % AMX_COLS);
        for b in 0..row_nb {
            for s in 0..4 {
                let o = ((tile * row_nb + b) * 4 + s) * 1024 + 64 * r;
                let dst = &mut out[o..o + 64];
                if t < m {
                    let src = &acts.row_with_scales(t)[b * Q8K + Q8K_QS + 64 * s..][..64];
                    for (d, &x) in dst.iter_mut().zip(src) {
                        *d = x ^ 0x80;
                    }
                } else {
                    dst.fill(0);
                }
            }
        }
    }
}

/// `acc[i][r] += dot(prompt row t[i] + r, weight rows 0..16)` (16 f32 per row, `AMX_ROWS`
/// apart) for `r < rows[i]` (at most [`AMX_COLS`]; 0 for none) of two activation tiles `i`, over
/// super-block `b`: `w` its packed weights ([`pack`]), `x[i]` the tiles' block in
/// [`unsigned_acts`] form, `acts` for the rows' scales and 16-sums. Each weight tile load serves
/// both activation tiles.
///
/// # Safety
/// [`available`] returned true and [`configure`] ran on this thread; `w` holds `AMX_PACKED`
/// bytes, each `x[i]` `AMX_ACT`; `acts` rows `t[i]..t[i] + rows[i]` hold block `b`; `acc[i]`
/// holds `rows[i]` rows of 16 f32, and no other thread uses them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemm(
    w: *const u8,
    x: [*const u8; 2],
    acts: &QActs,
    t: [usize; 2],
    rows: [usize; 2],
    b: usize,
    acc: [*mut f32; 2],
) {
    #[repr(C, align(64))]
    struct Results([[i32; 16]; 64]);
    // written whole by the tile stores below before any read
    let mut c = std::mem::MaybeUninit::<Results>::uninit();
    let cp = c.as_mut_ptr() as *mut u8;
    // tmm0, tmm1: sum((a + 128) * lo) and sum((a + 128) * hi) of tile 0, tmm2, tmm3 of tile 1;
    // tmm4, tmm5: 64 values of the two tiles' 16 prompt rows; tmm6, tmm7: those values' lo and
    // hi bytes of the 16 weight rows; 4 steps of 64 values (1024 bytes apart), then the sums
    // to `c`, all in one block (the tile registers live only inside it)
    macro_rules! step {
        ($o:literal) => {
            concat!(
                "tileloadd tmm6, [{lo} + {st}*1 + ",
                $o,
                "]\n",
                "tileloadd tmm4, [{x0} + {st}*1 + ",
                $o,
                "]\n",
                "tdpbusd tmm0, tmm4, tmm6\n",
                "tileloadd tmm5, [{x1} + {st}*1 + ",
                $o,
                "]\n",
                "tdpbusd tmm2, tmm5, tmm6\n",
                "tileloadd tmm7, [{hi} + {st}*1 + ",
                $o,
                "]\n",
                "tdpbusd tmm1, tmm4, tmm7\n",
                "tdpbusd tmm3, tmm5, tmm7\n",
            )
        };
    }
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        step!("0"),
        step!("1024"),
        step!("2048"),
        step!("3072"),
        "tilestored [{c} + {st}*1], tmm0",
        "tilestored [{c} + {st}*1 + 1024], tmm1",
        "tilestored [{c} + {st}*1 + 2048], tmm2",
        "tilestored [{c} + {st}*1 + 3072], tmm3",
        x0 = in(reg) x[0],
        x1 = in(reg) x[1],
        lo = in(reg) w.add(P_LO),
        hi = in(reg) w.add(P_HI),
        c = in(reg) cp,
        st = in(reg) 64usize,
        out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
        out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
        options(nostack),
    );
    let wsum = _mm512_loadu_si512(w.add(P_WSUM) as *const _);
    let d = _mm512_loadu_ps(w.add(P_D) as *const f32);
    let f = _mm512_loadu_ps(w.add(P_F) as *const f32);
    let pairs: [__m512i; 8] =
        std::array::from_fn(|p| _mm512_loadu_si512(w.add(P_PAIRS + 64 * p) as *const _));
    for (i, &acc) in acc.iter().enumerate() {
        for r in 0..rows[i] {
            let ar = acc.add(AMX_ROWS * r);
            let ab = acts.row_with_scales(t[i] + r).as_ptr().add(b * Q8K);
            let lo = _mm512_loadu_si512(cp.add(64 * (32 * i + r)) as *const _);
            let hi = _mm512_loadu_si512(cp.add(64 * (32 * i + 16 + r)) as *const _);
            let sum = _mm512_sub_epi32(_mm512_add_epi32(lo, _mm512_slli_epi32::<7>(hi)), wsum);
            let bs = ab.add(Q8K_BSUMS) as *const i32;
            let mut off = _mm512_setzero_si512();
            for p in 0..8 {
                let x = _mm512_set1_epi32(std::ptr::read_unaligned(bs.add(p)));
                off = _mm512_dpwssd_epi32(off, pairs[p], x);
            }
            let da = _mm512_set1_ps(std::ptr::read_unaligned(ab as *const f32));
            let v = _mm512_fmadd_ps(
                _mm512_mul_ps(d, da),
                _mm512_cvtepi32_ps(sum),
                _mm512_loadu_ps(ar),
            );
            _mm512_storeu_ps(
                ar,
                _mm512_fnmadd_ps(_mm512_mul_ps(f, da), _mm512_cvtepi32_ps(off), v),
            );
        }
    }
}

/// `dst[t * n + j0..][..16] = acc[t] + 0.0` for `t < m` (`acc`: 16 f32 per row): the results of
/// one group of weight rows, `+ 0.0` as the packed GEMMs' `combine` (a -0.0 becomes 0.0).
///
/// # Safety
/// AVX-512 F present; `acc` holds `m` rows of 16 f32; `dst` has `m` rows of `n >= j0 + 16`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub unsafe fn store_results(acc: *const f32, m: usize, dst: *mut f32, n: usize, j0: usize) {
    for t in 0..m {
        let v = _mm512_add_ps(_mm512_loadu_ps(acc.add(AMX_ROWS * t)), _mm512_setzero_ps());
        _mm512_storeu_ps(dst.add(t * n + j0), v);
    }
}
