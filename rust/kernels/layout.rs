//! What the matmul drivers and the SIMD kernels of every instruction set agree on: the kernel
//! signatures, how many rows one call covers, and the packed GEMM's accumulator layout and
//! summation order. Kernels import these; nothing here depends on an instruction set.

/// Dot product of one weight row with one converted activation row (`k` elements).
///
/// Every function of this type is safe to call with any slices: it checks their lengths (once per
/// call) and panics when a row is too short.
pub type DotFn = fn(k: usize, w: &[u8], a: &[u8]) -> f32;

/// Activation rows per call of a multi-row kernel: the weight unpacking is shared by 8 products,
/// and 8 integer accumulators still fit in the vector registers.
pub const ROWS: usize = 8;

/// Dot products of one weight row with `N` activation rows, given as
/// [`super::QActs::row_with_scales`]. Checks lengths like [`DotFn`].
pub type DotRowsN<const N: usize> = fn(k: usize, w: &[u8], a: [&[u8]; N]) -> [f32; N];

/// [`DotRowsN`] for [`ROWS`] activation rows (prompt processing).
pub type DotRowsFn = DotRowsN<ROWS>;

/// Activation rows of the half-height multi-row kernel: the few sequences of a batched decode
/// step share one unpacking of each weight block.
pub const ROWS4: usize = 4;

/// [`DotRowsN`] for [`ROWS4`] activation rows.
pub type DotRows4Fn = DotRowsN<ROWS4>;

/// Activation rows of the two-row kernel: a batched decode step of 2 sequences (or 6, after a
/// 4-row call), one unpacking of each weight block for both.
pub const ROWS2: usize = 2;

/// [`DotRowsN`] for [`ROWS2`] activation rows.
pub type DotRows2Fn = DotRowsN<ROWS2>;

/// Weight rows per packed group (one per 32-bit lane of a 256-bit register).
pub const PACK_GROUP: usize = 8;
/// Activation rows per call of a packed GEMM kernel.
pub const PACK_ROWS: usize = 4;
/// Weight groups per call of a packed GEMM kernel: the Q4_0/Q5_0 kernel runs two groups per pass,
/// so one broadcast of an activation piece serves 16 weight rows (the others run the two groups
/// one after the other).
pub const PACK_PAIR: usize = 2;
/// Partial sums per (activation row, weight row) of the 32-value-block types: block `b` is added
/// to part `b % PARTS`, and the parts are combined as `(p0 + p2) + (p1 + p3)` at the end
/// ([`combine`]), the order of the single-row and multi-row kernels too. The K-quants use part 0
/// only.
pub const PARTS: usize = 4;
/// A packed GEMM's accumulators for one activation row: `[part][weight lane]`.
pub type Acc = [[f32; PACK_GROUP]; PARTS];

/// The final sum of one (activation row, weight lane) pair's [`PARTS`] partial sums.
#[inline]
pub fn combine(acc: &Acc, lane: usize) -> f32 {
    (acc[0][lane] + acc[2][lane]) + (acc[1][lane] + acc[3][lane])
}
