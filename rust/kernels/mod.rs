//! CPU kernels: activation quantization, quantized dot products with run-time SIMD dispatch, the
//! tiled multi-threaded matmul over weights in the file mapping, and the thread pool.
//!
//! On x86-64 with AVX2 (detected at run time) the dot products for Q2_K..Q6_K, Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, F16 and F32 are this module's ([`x86`], [`x86_multi`]); the decode kernels
//! prefetch the weights [`x86::PF_DIST`] bytes ahead. Prompt batches use the multi-row kernels of
//! [`x86_multi`] for Q2_K..Q6_K, Q4_0, Q5_0 and Q8_0, and prompts of [`PACKED_MIN_ROWS`] rows or
//! more of those types the GEMM over weight tiles repacked 8 rows per register of
//! [`x86_packed`]. For each of these types all three kernels add exact per-block integer dot
//! products in one f32 order, so results do not depend on batching, bit for bit. Activations
//! are quantized by this module with ggml's exact rules (see [`quantize`]).

pub mod pool;
pub mod quantize;
#[cfg(target_arch = "x86_64")]
pub mod x86;
#[cfg(target_arch = "x86_64")]
pub mod x86_multi;
#[cfg(target_arch = "x86_64")]
pub mod x86_packed;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, GgmlType as CandleBlock,
};
use half::{bf16, f16};

use crate::gguf::GgmlType;

/// The format activations are converted to before a dot product with a weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    F32,
    F16,
    BF16,
    Q8_0,
    Q8_1,
    Q8K,
}

impl ActKind {
    /// ggml's vec-dot type for weights of type `t`.
    pub fn of(t: GgmlType) -> Option<Self> {
        use GgmlType::*;
        Some(match t {
            F32 => ActKind::F32,
            F16 => ActKind::F16,
            BF16 => ActKind::BF16,
            Q4_0 | Q5_0 | Q8_0 => ActKind::Q8_0,
            Q4_1 | Q5_1 => ActKind::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => ActKind::Q8K,
            _ => return None,
        })
    }

    /// Bytes of one converted row of `k` elements.
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            ActKind::F32 => 4 * k,
            ActKind::F16 | ActKind::BF16 => 2 * k,
            ActKind::Q8_0 => k / 32 * quantize::Q8_0_BYTES,
            ActKind::Q8_1 => k / 32 * quantize::Q8_1_BYTES,
            ActKind::Q8K => k / 256 * quantize::Q8_K_BYTES,
        }
    }

    /// Convert one row.
    pub fn convert_row(self, x: &[f32], out: &mut [u8]) {
        match self {
            ActKind::F32 => quantize::quantize_row_f32(x, out),
            ActKind::F16 => quantize::quantize_row_f16(x, out),
            ActKind::BF16 => quantize::quantize_row_bf16(x, out),
            ActKind::Q8_0 => quantize::quantize_row_q8_0(x, out),
            ActKind::Q8_1 => quantize::quantize_row_q8_1(x, out),
            ActKind::Q8K => quantize::quantize_row_q8_k(x, out),
        }
    }
}

/// Activation rows converted for one [`ActKind`]: reusable scratch. Each row starts 8-byte
/// aligned; Q8_0 rows are followed by their block scales as f32 and their blocks' quant sums as
/// i32 (see [`QActs::row_with_scales`]).
#[derive(Default)]
pub struct QActs {
    buf: Vec<u64>,
    kind: Option<ActKind>,
    rows: usize,
    row_bytes: usize,
    stride: usize,
}

/// Offset of the f32 block scales after a Q8_0 activation row of `nb` blocks.
pub fn q8_0_scales_offset(nb: usize) -> usize {
    (nb * quantize::Q8_0_BYTES).next_multiple_of(8)
}

/// Offset of the i32 block sums (sum of a block's 32 quants) after a Q8_0 activation row of `nb`
/// blocks; they follow the f32 scales.
pub fn q8_0_sums_offset(nb: usize) -> usize {
    q8_0_scales_offset(nb) + 4 * nb
}

impl QActs {
    /// Convert `m` rows of `k` floats (`x.len() == m * k`) for `kind`, in parallel.
    pub fn convert(&mut self, kind: ActKind, x: &[f32], m: usize, k: usize, n_threads: usize) {
        let rb = kind.row_bytes(k);
        let scales = kind == ActKind::Q8_0;
        let stride = if scales {
            q8_0_sums_offset(k / 32) + (k / 32 * 4).next_multiple_of(8)
        } else {
            rb.next_multiple_of(8)
        };
        let need = (m * stride).div_ceil(8);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        self.kind = Some(kind);
        self.rows = m;
        self.row_bytes = rb;
        self.stride = stride;
        let base = SendPtr(self.buf.as_mut_ptr() as *mut u8);
        pool::pool().for_chunks(n_threads, m, 4, &|r| {
            for t in r {
                // SAFETY: rows are disjoint `stride`-byte ranges of `buf`, which holds `m * stride`
                // bytes.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(base.get().add(t * stride), stride) };
                kind.convert_row(&x[t * k..(t + 1) * k], &mut out[..rb]);
                if scales {
                    // the f16 block scales widened to f32 (exact), for the multi-row kernels, and
                    // the blocks' quant sums, for the packed Q4_0 GEMM
                    let nb = k / 32;
                    let (off, soff) = (q8_0_scales_offset(nb), q8_0_sums_offset(nb));
                    for i in 0..nb {
                        let b = i * quantize::Q8_0_BYTES;
                        let h = f16::from_le_bytes([out[b], out[b + 1]]).to_f32();
                        out[off + 4 * i..off + 4 * i + 4].copy_from_slice(&h.to_le_bytes());
                        let sum: i32 = out[b + 2..b + 34].iter().map(|&q| q as i8 as i32).sum();
                        out[soff + 4 * i..soff + 4 * i + 4].copy_from_slice(&sum.to_le_bytes());
                    }
                }
            }
        });
    }

    /// The converted kind, if any.
    pub fn kind(&self) -> Option<ActKind> {
        self.kind
    }

    fn all(&self) -> &[u8] {
        // SAFETY: `buf` holds `rows * stride` initialised bytes.
        unsafe {
            std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.rows * self.stride)
        }
    }

    /// Row `t` in its GGUF block format (what the single-row dot products take).
    pub fn row(&self, t: usize) -> &[u8] {
        debug_assert!(t < self.rows);
        &self.all()[t * self.stride..t * self.stride + self.row_bytes]
    }

    /// Row `t` followed by any side data (the f32 block scales and i32 block sums of Q8_0 rows),
    /// for the multi-row kernels.
    pub fn row_with_scales(&self, t: usize) -> &[u8] {
        debug_assert!(t < self.rows);
        &self.all()[t * self.stride..(t + 1) * self.stride]
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// A raw pointer that may cross threads; each use states why its accesses are disjoint.
#[derive(Clone, Copy)]
pub struct SendPtr<T>(pub *mut T);
// SAFETY: only used for writes to disjoint index ranges from pool threads (see each use).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    #[inline]
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// Dot product of one weight row with one converted activation row (`k` elements).
pub type DotFn = fn(k: usize, w: &[u8], a: &[u8]) -> f32;

/// Activation rows per call of a multi-row kernel. 8 measured faster than 4 on the matmul bench
/// (Q4_K 14.3 -> 10.7 ms, Q4_0 31.3 -> 26.2 ms for 64 x 4096 x 4096): the weight unpacking is
/// shared by twice as many products, and the 8 integer accumulators still fit in registers.
pub const ROWS: usize = 8;

/// Dot products of one weight row with [`ROWS`] activation rows (prompt processing), given as
/// [`QActs::row_with_scales`].
pub type DotRowsFn = fn(k: usize, w: &[u8], a: [&[u8]; ROWS]) -> [f32; ROWS];

/// Run the `N`-row kernel for `t` (Q4_K, Q5_K, Q6_K, Q8_0 or Q4_0) after checking lengths.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn multi<const N: usize>(t: GgmlType, k: usize, w: &[u8], a: [&[u8]; N]) -> [f32; N] {
    let nb = k / t.block_size();
    let kind = ActKind::of(t).expect("quantized type");
    // Q8_0 activation rows carry their scales as f32 after the blocks (QActs::row_with_scales)
    let a_len = if kind == ActKind::Q8_0 {
        q8_0_sums_offset(nb) + 4 * nb
    } else {
        kind.row_bytes(k)
    };
    assert!(
        k.is_multiple_of(t.block_size())
            && w.len() >= nb * t.type_size()
            && a.iter().all(|r| r.len() >= a_len)
    );
    debug_assert!(x86::has_avx2());
    let ap = a.map(|r| r.as_ptr());
    // SAFETY: AVX2/FMA/F16C were detected by the dispatcher that handed out this function; the
    // lengths are checked above.
    unsafe {
        match t {
            GgmlType::Q4_K => x86_multi::q45_k::<N, false>(nb, w.as_ptr(), ap),
            GgmlType::Q5_K => x86_multi::q45_k::<N, true>(nb, w.as_ptr(), ap),
            GgmlType::Q6_K => x86_multi::q6_k::<N>(nb, w.as_ptr(), ap),
            GgmlType::Q2_K => x86_multi::q23_k::<N, false>(nb, w.as_ptr(), ap),
            GgmlType::Q3_K => x86_multi::q23_k::<N, true>(nb, w.as_ptr(), ap),
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let (so, mo) = (q8_0_scales_offset(nb), q8_0_sums_offset(nb));
                let w = w.as_ptr();
                match t {
                    GgmlType::Q8_0 => {
                        x86_multi::q8_acts::<N, { x86_multi::Q8_0W }>(nb, w, ap, so, mo)
                    }
                    GgmlType::Q4_0 => {
                        x86_multi::q8_acts::<N, { x86_multi::Q4_0W }>(nb, w, ap, so, mo)
                    }
                    _ => x86_multi::q8_acts::<N, { x86_multi::Q5_0W }>(nb, w, ap, so, mo),
                }
            }
            _ => unreachable!("no multi-row kernel for {t}"),
        }
    }
}

/// The kernels one weight type gets on this CPU in this build, chosen once (when a weight is
/// loaded): the single source for the matmul, `build_info()` and the tests.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// The single-row kernel (decode, a prompt's rows after its last whole group): a weight row
    /// times a [`QActs::row_with_scales`] where `single_with_scales` (Q4_0, Q5_0, Q8_0 on AVX2:
    /// the `N = 1` [`x86_multi::q8_acts`], which uses the f32 scales and block sums), else times a
    /// [`QActs::row`].
    pub single: DotFn,
    /// Which activation row form `single` takes (see [`Kernels::single_row`]).
    pub single_with_scales: bool,
    /// The multi-row kernel for prompt batches (all of them for types without `packed`, else
    /// those below [`PACKED_MIN_ROWS`] rows), taking [`QActs::row_with_scales`].
    ///
    /// Where a type has `dot_rows` or `packed` (on AVX2: Q2_K..Q6_K, Q4_0, Q5_0, Q8_0), these
    /// and `single` sum exact per-block integers in one f32 order, so a result does not depend on
    /// how the rows were batched, bit for bit (tested).
    pub dot_rows: Option<DotRowsFn>,
    /// The packed-tile GEMM for prompts of [`PACKED_MIN_ROWS`] rows or more, if any (on AVX2,
    /// Q2_K..Q6_K, Q4_0, Q5_0 and Q8_0): see [`x86_packed`].
    pub packed: Option<Packed>,
    /// Which implementation `single` is: `"avx2"` (this crate's, chosen at run time),
    /// `"candle-avx2"` / `"candle-neon"` (candle's, fixed when candle was compiled) or `"scalar"`.
    pub name: &'static str,
}

impl Kernels {
    /// The single-row kernel and the form of activation row `t` it takes.
    #[inline]
    pub fn single_row<'a>(&self, acts: &'a QActs, t: usize) -> (DotFn, &'a [u8]) {
        let a = if self.single_with_scales {
            acts.row_with_scales(t)
        } else {
            acts.row(t)
        };
        (self.single, a)
    }

    /// The single-row product of weight row `w` with activation row `t` (see `single_row`).
    #[inline]
    pub fn dot_single(&self, k: usize, w: &[u8], acts: &QActs, t: usize) -> f32 {
        let (dot, a) = self.single_row(acts, t);
        dot(k, w, a)
    }

    /// The kernels for `t`; `None` for types the engine cannot compute with.
    pub fn for_type(t: GgmlType) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx2() {
            let (single, single_with_scales, name) = match (x86_dot_one(t), x86_dot(t)) {
                (Some(one), _) => (one, true, "avx2"),
                (None, Some(dot)) => (dot, false, "avx2"),
                (None, None) => (candle_dot_fn(t)?, false, candle_kernel_name(t)),
            };
            return Some(Kernels {
                single,
                single_with_scales,
                dot_rows: x86_dot_rows(t),
                packed: Packed::for_type(t),
                name,
            });
        }
        Some(Kernels {
            single: candle_dot_fn(t)?,
            single_with_scales: false,
            dot_rows: None,
            packed: None,
            name: candle_kernel_name(t),
        })
    }
}

/// Which of candle's dots [`candle_dot_fn`] gives for `t` in this build.
fn candle_kernel_name(t: GgmlType) -> &'static str {
    use GgmlType::*;
    let simd = matches!(t, Q4_0 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K)
        || (matches!(t, F16 | F32) && cfg!(target_feature = "neon"));
    if simd && cfg!(target_feature = "avx2") {
        "candle-avx2"
    } else if simd && cfg!(target_feature = "neon") {
        "candle-neon"
    } else {
        "scalar"
    }
}

/// This crate's AVX2 single-row dot taking a [`QActs::row`] for `t`, where it has one that beats
/// candle's (Q4_0, Q5_0 and Q8_0 have [`x86_dot_one`] instead).
///
/// Callers have checked [`x86::has_avx2`].
#[cfg(target_arch = "x86_64")]
fn x86_dot(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    // SAFETY (each unsafe block): AVX2/FMA/F16C were detected; lengths are checked by the
    // callers' shapes (one weight row and one activation row of the same `k`).
    Some(match t {
        Q4_1 => |k, w, a| unsafe { x86::dot_q4_1(k / 32, w, a) },
        Q5_1 => |k, w, a| unsafe { x86::dot_q5_1(k / 32, w, a) },
        F16 => |k, w, a| unsafe { x86::dot_f16(k, w, a) },
        F32 => |k, w, a| unsafe { x86::dot_f32(k, w, a) },
        Q4_K => |k, w, a| multi::<1>(Q4_K, k, w, [a])[0],
        Q5_K => |k, w, a| multi::<1>(Q5_K, k, w, [a])[0],
        // ours beats candle's AVX2 Q6_K dot in cache (1 x 4096 x 4096: 303 vs 430-480 us) and,
        // with its prefetch, in decode from memory (70B slice Q6_K: 18.3 vs 15.3 tok/s)
        Q6_K => |k, w, a| multi::<1>(Q6_K, k, w, [a])[0],
        Q2_K => |k, w, a| multi::<1>(Q2_K, k, w, [a])[0],
        Q3_K => |k, w, a| multi::<1>(Q3_K, k, w, [a])[0],
        _ => return None,
    })
}

/// The single-row kernel taking a [`QActs::row_with_scales`] (see [`Kernels::single`]). Callers
/// have checked [`x86::has_avx2`].
#[cfg(target_arch = "x86_64")]
fn x86_dot_one(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match t {
        Q8_0 => |k, w, a| multi::<1>(Q8_0, k, w, [a])[0],
        Q4_0 => |k, w, a| multi::<1>(Q4_0, k, w, [a])[0],
        Q5_0 => |k, w, a| multi::<1>(Q5_0, k, w, [a])[0],
        _ => return None,
    })
}

/// See [`Kernels::dot_rows`]. Callers have checked [`x86::has_avx2`].
#[cfg(target_arch = "x86_64")]
fn x86_dot_rows(t: GgmlType) -> Option<DotRowsFn> {
    use GgmlType::*;
    Some(match t {
        Q4_K => |k, w, a| multi::<ROWS>(Q4_K, k, w, a),
        Q5_K => |k, w, a| multi::<ROWS>(Q5_K, k, w, a),
        Q6_K => |k, w, a| multi::<ROWS>(Q6_K, k, w, a),
        Q2_K => |k, w, a| multi::<ROWS>(Q2_K, k, w, a),
        Q3_K => |k, w, a| multi::<ROWS>(Q3_K, k, w, a),
        Q8_0 => |k, w, a| multi::<ROWS>(Q8_0, k, w, a),
        Q4_0 => |k, w, a| multi::<ROWS>(Q4_0, k, w, a),
        Q5_0 => |k, w, a| multi::<ROWS>(Q5_0, k, w, a),
        _ => return None,
    })
}

/// A type's packed prompt GEMM (see [`x86_packed`]): weight rows packed per group of
/// [`PACK_GROUP`] with one SIMD lane per weight row, and the GEMM over such a group.
#[derive(Clone, Copy)]
pub struct Packed {
    t: GgmlType,
    /// Bytes of one packed block (of [`PACK_GROUP`] weight rows).
    pub block_bytes: usize,
}

/// Weight rows per packed group.
pub const PACK_GROUP: usize = 8;
/// Activation rows per call of a packed GEMM kernel.
pub const PACK_ROWS: usize = 4;
/// Weight groups per call of a packed GEMM kernel (see [`x86_packed::PAIR`]).
pub const PACK_PAIR: usize = 2;
/// Partial sums per (activation row, weight row) of the 32-value-block types: block `b` is added
/// to part `b % PARTS`, and the parts are combined as `(p0 + p2) + (p1 + p3)` at the end, the
/// order of the decode kernel `x86_multi::q8_acts`. The K-quants use part 0 only.
pub const PARTS: usize = 4;
/// A packed GEMM's accumulators for one activation row: `[part][weight lane]`.
pub type Acc = [[f32; PACK_GROUP]; PARTS];

/// The final sum of one (activation row, weight lane) pair's [`PARTS`] partial sums.
#[inline]
pub fn combine(acc: &Acc, lane: usize) -> f32 {
    (acc[0][lane] + acc[2][lane]) + (acc[1][lane] + acc[3][lane])
}

impl Packed {
    /// The packed GEMM for `t` on this CPU, if any (AVX2 only): every type whose single-row and
    /// multi-row kernels sum in its order (see [`Kernels::dot_rows`]).
    fn for_type(t: GgmlType) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx2() {
            use GgmlType::*;
            const _: () = assert!(PACK_GROUP == x86_packed::GROUP);
            const _: () = assert!(PACK_PAIR == x86_packed::PAIR);
            let block_bytes = match t {
                Q4_0 | Q5_0 => x86_packed::Q4_0_PACKED,
                Q8_0 => x86_packed::Q8_0_PACKED,
                Q4_K | Q5_K => x86_packed::Q4_K_PACKED,
                Q2_K | Q3_K | Q6_K => x86_packed::K16_PACKED,
                _ => return None,
            };
            return Some(Packed { t, block_bytes });
        }
        let _ = t;
        None
    }

    /// Pack blocks `b0..b0 + nb` of [`PACK_GROUP`] weight rows into `out`.
    pub fn pack(&self, b0: usize, nb: usize, rows: [&[u8]; PACK_GROUP], out: &mut [u8]) {
        assert!(out.len() >= nb * self.block_bytes);
        assert!(rows
            .iter()
            .all(|r| r.len() >= (b0 + nb) * self.t.type_size()));
        let (rows, o) = (rows.map(|r| r.as_ptr()), out.as_mut_ptr());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Packed` exists only where AVX2 was detected (`for_type`); lengths checked above.
        unsafe {
            use x86_packed as x;
            match self.t {
                GgmlType::Q4_0 => x::pack_q4_0(b0, nb, rows, o),
                GgmlType::Q5_0 => x::pack_q5_0(b0, nb, rows, o),
                GgmlType::Q8_0 => x::pack_q8_0(b0, nb, rows, o),
                GgmlType::Q4_K => x::pack_q45_k::<false>(b0, nb, rows, o),
                GgmlType::Q5_K => x::pack_q45_k::<true>(b0, nb, rows, o),
                GgmlType::Q2_K => x::pack_q23_k::<false>(b0, nb, rows, o),
                GgmlType::Q3_K => x::pack_q23_k::<true>(b0, nb, rows, o),
                GgmlType::Q6_K => x::pack_q6_k(b0, nb, rows, o),
                t => unreachable!("no packed kernel for {t}"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (rows, o);
            unreachable!("packed kernels are x86 only");
        }
    }

    /// `acc[g][r][i] += dot(blocks b0..b0 + nb of row i of weight group g, of activation row r)`
    /// for the [`PACK_PAIR`] weight groups `packed[g]` (each from [`Packed::pack`]) and up to
    /// [`PACK_ROWS`] activation rows of `row_nb` blocks given as [`QActs::row_with_scales`].
    pub fn gemm(
        &self,
        row_nb: usize,
        b0: usize,
        nb: usize,
        packed: [&[u8]; PACK_PAIR],
        a: &[&[u8]],
        acc: [&mut [Acc]; PACK_PAIR],
    ) {
        assert!(acc.iter().all(|c| c.len() == a.len()));
        assert!(a.len() <= PACK_ROWS && b0 + nb <= row_nb);
        assert!(packed.iter().all(|p| p.len() >= nb * self.block_bytes));
        let kind = ActKind::of(self.t).expect("quantized type");
        // Q8_0 rows carry f32 scales and i32 sums after the blocks (QActs::convert)
        let row_len = match kind {
            ActKind::Q8_0 => q8_0_sums_offset(row_nb) + 4 * row_nb,
            _ => kind.row_bytes(row_nb * self.t.block_size()),
        };
        assert!(a.iter().all(|r| r.len() >= row_len));
        match a.len() {
            1 => self.run::<1>(b0, nb, row_nb, packed, a, acc),
            2 => self.run::<2>(b0, nb, row_nb, packed, a, acc),
            3 => self.run::<3>(b0, nb, row_nb, packed, a, acc),
            4 => self.run::<4>(b0, nb, row_nb, packed, a, acc),
            _ => {}
        }
    }

    /// [`Packed::gemm`] for `N` rows, after its checks.
    fn run<const N: usize>(
        &self,
        b0: usize,
        nb: usize,
        row_nb: usize,
        packed: [&[u8]; PACK_PAIR],
        a: &[&[u8]],
        acc: [&mut [Acc]; PACK_PAIR],
    ) {
        let rows: [*const u8; N] = std::array::from_fn(|r| a[r].as_ptr());
        let acc: [&mut [Acc; N]; PACK_PAIR] = acc.map(|c| c.try_into().unwrap());
        let p = packed.map(|p| p.as_ptr());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Packed` exists only where AVX2 was detected (`for_type`); lengths checked by
        // `gemm`.
        unsafe {
            use x86_packed as x;
            // Q4_0 and Q5_0 run both groups in one pass; Q8_0 and the K-quants one at a time
            // (two groups per pass measured slower for them: more live registers than there are)
            let one = match self.t {
                GgmlType::Q8_0 => x::gemm_q8_0::<N>,
                GgmlType::Q4_0 => return x::gemm_q45_0::<N, false>(b0, nb, row_nb, p, rows, acc),
                GgmlType::Q5_0 => return x::gemm_q45_0::<N, true>(b0, nb, row_nb, p, rows, acc),
                GgmlType::Q4_K => x::gemm_q45_k::<N, false>,
                GgmlType::Q5_K => x::gemm_q45_k::<N, true>,
                GgmlType::Q2_K | GgmlType::Q3_K => x::gemm_k16::<N, 4>,
                GgmlType::Q6_K => x::gemm_k16::<N, 2>,
                t => unreachable!("no packed kernel for {t}"),
            };
            for (p, acc) in p.into_iter().zip(acc) {
                one(b0, nb, row_nb, p, rows, acc);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (b0, nb, row_nb, p, rows, acc);
            unreachable!("packed kernels are x86 only");
        }
    }
}

fn cast<T>(b: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!(
        b.len().is_multiple_of(size)
            && (b.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    );
    // SAFETY: the block types are `#[repr(C)]` plain data valid for any bit pattern; length and
    // alignment checked above.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const T, b.len() / size) }
}

fn candle_dot<T: CandleBlock>(k: usize, w: &[u8], a: &[u8]) -> f32 {
    T::vec_dot(k, cast::<T>(w), cast::<T::VecDotType>(a))
}

fn candle_dot_scalar<T: CandleBlock>(k: usize, w: &[u8], a: &[u8]) -> f32 {
    T::vec_dot_unopt(k, cast::<T>(w), cast::<T::VecDotType>(a))
}

/// The portable (scalar, or candle's compile-time NEON) dot for `t`: the reference the SIMD
/// kernels are tested against.
pub fn dot_fn_reference(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match t {
        F32 => candle_dot_scalar::<f32>,
        F16 => candle_dot_scalar::<f16>,
        BF16 => candle_dot_scalar::<bf16>,
        Q4_0 => candle_dot_scalar::<BlockQ4_0>,
        Q4_1 => candle_dot_scalar::<BlockQ4_1>,
        Q5_0 => candle_dot_scalar::<BlockQ5_0>,
        Q5_1 => candle_dot_scalar::<BlockQ5_1>,
        Q8_0 => candle_dot_scalar::<BlockQ8_0>,
        Q2_K => candle_dot_scalar::<BlockQ2K>,
        Q3_K => candle_dot_scalar::<BlockQ3K>,
        Q4_K => candle_dot_scalar::<BlockQ4K>,
        Q5_K => candle_dot_scalar::<BlockQ5K>,
        Q6_K => candle_dot_scalar::<BlockQ6K>,
        Q8_K => candle_dot_scalar::<BlockQ8K>,
        _ => return None,
    })
}

/// candle's dot for `t` (SIMD where candle was compiled with it).
fn candle_dot_fn(t: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match t {
        F32 => candle_dot::<f32>,
        F16 => candle_dot::<f16>,
        BF16 => candle_dot::<bf16>,
        Q4_0 => candle_dot::<BlockQ4_0>,
        Q4_1 => candle_dot::<BlockQ4_1>,
        Q5_0 => candle_dot::<BlockQ5_0>,
        Q5_1 => candle_dot::<BlockQ5_1>,
        Q8_0 => candle_dot::<BlockQ8_0>,
        Q2_K => candle_dot::<BlockQ2K>,
        Q3_K => candle_dot::<BlockQ3K>,
        Q4_K => candle_dot::<BlockQ4K>,
        Q5_K => candle_dot::<BlockQ5K>,
        Q6_K => candle_dot::<BlockQ6K>,
        Q8_K => candle_dot::<BlockQ8K>,
        _ => return None,
    })
}

/// Dequantize rows of a weight matrix (`row_bytes` each) into `out` (`k` floats per row).
pub fn dequantize_row(t: GgmlType, row: &[u8], out: &mut [f32]) -> bool {
    use GgmlType::*;
    fn deq<T: CandleBlock>(row: &[u8], out: &mut [f32]) {
        T::to_float(cast::<T>(row), out)
    }
    match t {
        F32 => deq::<f32>(row, out),
        F16 => deq::<f16>(row, out),
        BF16 => deq::<bf16>(row, out),
        Q4_0 => deq::<BlockQ4_0>(row, out),
        Q4_1 => deq::<BlockQ4_1>(row, out),
        Q5_0 => deq::<BlockQ5_0>(row, out),
        Q5_1 => deq::<BlockQ5_1>(row, out),
        Q8_0 => deq::<BlockQ8_0>(row, out),
        Q2_K => deq::<BlockQ2K>(row, out),
        Q3_K => deq::<BlockQ3K>(row, out),
        Q4_K => deq::<BlockQ4K>(row, out),
        Q5_K => deq::<BlockQ5K>(row, out),
        Q6_K => deq::<BlockQ6K>(row, out),
        Q8_K => deq::<BlockQ8K>(row, out),
        _ => return false,
    }
    true
}

/// A weight matrix `[n_out, k]` as raw rows in the mapping.
#[derive(Clone, Copy)]
pub struct WeightView<'a> {
    pub dtype: GgmlType,
    pub n_out: usize,
    pub k: usize,
    pub data: &'a [u8],
    pub kernels: Kernels,
}

impl WeightView<'_> {
    #[inline]
    fn row(&self, j: usize) -> &[u8] {
        let rb = self.data.len() / self.n_out;
        &self.data[j * rb..(j + 1) * rb]
    }
}

/// Tile of a prompt matmul: (activation rows, weight rows), from the bytes of one activation row
/// and one weight row: ~256 KiB of activations and ~128 KiB of weights. The height is a whole
/// number of multi-row groups (at least one, even when 8 rows of a long `k` exceed the budget), so
/// only the prompt's last `m % ROWS` rows take the one-row kernel.
fn tile_shape(act_row_bytes: usize, w_row_bytes: usize, m: usize, n: usize) -> (usize, usize) {
    let groups = (256 * 1024 / act_row_bytes.max(1)) / ROWS;
    let t_blk = (groups.clamp(1, 64 / ROWS) * ROWS).min(m);
    let j_blk = (128 * 1024 / w_row_bytes.max(1)).clamp(4, 64).min(n);
    (t_blk, j_blk)
}

/// `out[t, j] = dot(W[j], act[t])` for all `t < acts.rows()`, `j < n_out`, on `n_threads`.
///
/// Decode (one row) splits the weight rows across threads. Prefill tiles the work into blocks of
/// activation rows × weight rows, sized so both stay in cache, so the weights are streamed from
/// memory a few times per batch instead of once per token; prompts of [`PACKED_MIN_ROWS`] rows
/// or more go through the packed GEMM where the type has one ([`matmul_packed`]).
pub fn matmul(w: &WeightView<'_>, acts: &QActs, out: &mut [f32], n_threads: usize) {
    let m = acts.rows();
    let n = w.n_out;
    assert!(out.len() >= m * n);
    let dst = SendPtr(out.as_mut_ptr());
    let p = pool::pool();
    let kern = &w.kernels;
    if m == 1 {
        let (dot, a) = kern.single_row(acts, 0);
        let chunk = (n / (n_threads.max(1) * 8)).clamp(8, 256);
        p.for_chunks(n_threads, n, chunk, &|r| {
            for j in r {
                // SAFETY: each j is written by exactly one chunk.
                unsafe { *dst.get().add(j) = dot(w.k, w.row(j), a) };
            }
        });
        return;
    }
    if let Some(pk) = w.kernels.packed.filter(|_| m >= PACKED_MIN_ROWS) {
        return matmul_packed(w, &pk, acts, out, n_threads);
    }
    let (t_blk, j_blk) = tile_shape(acts.stride, w.data.len() / n, m, n);
    let n_tb = m.div_ceil(t_blk);
    let n_jb = n.div_ceil(j_blk);
    p.for_chunks(n_threads, n_tb * n_jb, 1, &|r| {
        for task in r {
            // activation-block major: consecutive tasks reuse the same activations
            let (tb, jb) = (task / n_jb, task % n_jb);
            let t0 = tb * t_blk;
            let t1 = (t0 + t_blk).min(m);
            let j0 = jb * j_blk;
            let j1 = (j0 + j_blk).min(n);
            let mut tail = t0;
            if let Some(dot_rows) = w.kernels.dot_rows {
                // a group of activation rows stays in cache while the tile's weight rows stream past
                while tail + ROWS <= t1 {
                    let t = tail;
                    let a: [&[u8]; ROWS] = std::array::from_fn(|i| acts.row_with_scales(t + i));
                    for j in j0..j1 {
                        let r = dot_rows(w.k, w.row(j), a);
                        for (i, v) in r.into_iter().enumerate() {
                            // SAFETY: (t, j) pairs of different tasks are disjoint.
                            unsafe { *dst.get().add((t + i) * n + j) = v };
                        }
                    }
                    tail += ROWS;
                }
            }
            for j in j0..j1 {
                let wr = w.row(j);
                for t in tail..t1 {
                    // SAFETY: as above.
                    unsafe { *dst.get().add(t * n + j) = kern.dot_single(w.k, wr, acts, t) };
                }
            }
        }
    });
}

/// Prompt rows from which the packed GEMM is used where a type has one: below, packing a weight
/// group costs more than it saves.
pub const PACKED_MIN_ROWS: usize = 16;
/// Activation rows per tile of the packed GEMM: each packed weight chunk serves them all, so
/// packing is paid once per 256 prompt rows. Measured on the 70B slice, 512-token prompt, one
/// sitting (tok/s): Q4_K_M 74 / 86 and Q4_0 78 / 75 for 64 / 256 rows. The K-quant packs (scale
/// and min vectors) cost more than Q4_0's, and they read the weights from memory.
const PACKED_TILE: usize = 256;
/// Bytes of packed weights per chunk of `k` (stays in L2 while a tile's rows pass over it; each
/// [`PACK_ROWS`] rows stream a longer run of their blocks per call). Measured on the 70B slice,
/// 512-token prompt, one sitting (tok/s for 16 / 64 KiB): Q8_0 57.3 / 59.2, Q4_0 74.2 / 78.8,
/// Q4_K_M 84.7 / 89.4, Q6_K 83.4 / 87.4; 128 KiB and more are no better.
const PACKED_CHUNK_BYTES: usize = 64 * 1024;

thread_local! {
    /// Each thread's buffer for one packed weight chunk.
    static PACK_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The prompt matmul through a [`Packed`] GEMM: tasks are (activation tile, pair of groups of
/// [`PACK_GROUP`] weight rows; with an odd group count the last pair is that group twice, its
/// results written once); each packs its groups chunk by chunk along `k` and runs the tile's
/// activation rows over every chunk, [`PACK_ROWS`] at a time, accumulating in f32 per weight lane.
fn matmul_packed(w: &WeightView<'_>, pk: &Packed, acts: &QActs, out: &mut [f32], n_threads: usize) {
    let (m, n) = (acts.rows(), w.n_out);
    let row_nb = w.k / w.dtype.block_size();
    let kc = (PACKED_CHUNK_BYTES / pk.block_bytes).clamp(1, row_nb.max(1));
    let groups = n / PACK_GROUP;
    let pairs = groups.div_ceil(PACK_PAIR);
    let n_tb = m.div_ceil(PACKED_TILE);
    let dst = SendPtr(out.as_mut_ptr());
    let p = pool::pool();
    p.for_chunks(n_threads, n_tb * pairs, 1, &|r| {
        PACK_BUF.with_borrow_mut(|buf| {
            let cb = kc * pk.block_bytes;
            buf.resize(PACK_PAIR * cb, 0);
            for task in r {
                let (tb, pair) = (task / pairs, task % pairs);
                let (t0, t1) = (tb * PACKED_TILE, ((tb + 1) * PACKED_TILE).min(m));
                let gs: [usize; PACK_PAIR] =
                    std::array::from_fn(|i| (pair * PACK_PAIR + i).min(groups - 1));
                let mut acc = [[[[0f32; PACK_GROUP]; PARTS]; PACKED_TILE]; PACK_PAIR];
                let mut b0 = 0;
                while b0 < row_nb {
                    let nb = kc.min(row_nb - b0);
                    for (i, g) in gs.iter().enumerate() {
                        let rows: [&[u8]; PACK_GROUP] =
                            std::array::from_fn(|j| w.row(g * PACK_GROUP + j));
                        pk.pack(b0, nb, rows, &mut buf[i * cb..(i + 1) * cb]);
                    }
                    let packed: [&[u8]; PACK_PAIR] =
                        std::array::from_fn(|i| &buf[i * cb..(i + 1) * cb]);
                    for t in (t0..t1).step_by(PACK_ROWS) {
                        let e = (t + PACK_ROWS).min(t1);
                        let a: [&[u8]; PACK_ROWS] =
                            std::array::from_fn(|i| acts.row_with_scales((t + i).min(e - 1)));
                        let [c0, c1] = &mut acc;
                        let c = [&mut c0[t - t0..e - t0], &mut c1[t - t0..e - t0]];
                        pk.gemm(row_nb, b0, nb, packed, &a[..e - t], c);
                    }
                    b0 += nb;
                }
                let written = if gs[0] == gs[1] { 1 } else { PACK_PAIR };
                for (g, acc) in gs.iter().zip(&acc).take(written) {
                    for t in t0..t1 {
                        for i in 0..PACK_GROUP {
                            let v = combine(&acc[t - t0], i);
                            // SAFETY: (t, j) pairs of different tasks are disjoint.
                            unsafe { *dst.get().add(t * n + g * PACK_GROUP + i) = v };
                        }
                    }
                }
            }
        })
    });
    // weight rows after the last full group, one activation row at a time
    let j0 = groups * PACK_GROUP;
    if j0 < n {
        let kern = &w.kernels;
        p.for_chunks(n_threads, m, 8, &|r| {
            for t in r {
                for j in j0..n {
                    // SAFETY: each t is written by exactly one chunk.
                    unsafe { *dst.get().add(t * n + j) = kern.dot_single(w.k, w.row(j), acts, t) };
                }
            }
        });
    }
}

/// Dot product of two f32 slices, SIMD when available.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2() {
        // SAFETY: AVX2/FMA detected.
        return unsafe { x86::dot_f32_slices(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += a * x`, SIMD when available.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2() {
        // SAFETY: AVX2/FMA detected.
        return unsafe { x86::axpy(a, x, y) };
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests;
