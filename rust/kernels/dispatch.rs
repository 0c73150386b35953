//! The run-time choice of kernels: once per weight ([`Kernels::for_type`]), from what the CPU
//! offers, this crate's kernels for the instruction set detected ([`isa`]) or else candle's; and
//! the f32 vector operations of attention, chosen the same way.

use super::acts::{q8_0_row_with_scales_bytes, ActKind, QActs};
use super::layout::{
    Acc, DotFn, DotRows2Fn, DotRows4Fn, DotRowsFn, PACK_GROUP, PACK_PAIR, PACK_ROWS, ROWS, ROWS2,
    ROWS4,
};
use super::reference::{candle_dot_fn, candle_kernel_name};
#[cfg(target_arch = "x86_64")]
use super::x86::vnni::{self, Vnni};
#[cfg(target_arch = "x86_64")]
use super::x86::{self, avx2};
use crate::gguf::GgmlType;

/// The instruction set this crate's own kernels run with on this CPU, chosen at run time:
/// `"avx512vnni"` (x86-64 with AVX-512 F/BW/VL/VNNI besides AVX2, FMA and F16C) or `"avxvnni"`
/// (AVX-VNNI without AVX-512): the decode, multi-row and packed prompt kernels of the Med42 types
/// and Q4_1's decode kernel use it, the rest AVX2; `"avx2"` (AVX2, FMA and F16C);
/// else `"scalar"` (candle's kernels, with the SIMD candle was compiled for: see
/// [`Kernels::name`] per type).
pub fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(v) = Vnni::detect() {
            return v.name();
        }
        if x86::has_avx2() {
            return "avx2";
        }
    }
    "scalar"
}

/// The kernels one weight type gets on this CPU in this build, chosen once (when a weight is
/// loaded): the single source for the matmul, `build_info()` and the tests.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// The single-row kernel (decode, a prompt's rows after its last whole group): a weight row
    /// times a [`QActs::row_with_scales`] where `single_with_scales` (Q4_0, Q5_0, Q8_0 on x86),
    /// else times a [`QActs::row`].
    pub single: DotFn,
    /// Which activation row form `single` takes (see [`Kernels::single_row`]).
    pub single_with_scales: bool,
    /// The multi-row kernel for prompt batches (all of them for types without `packed`, else
    /// those below [`super::PACKED_MIN_ROWS`] rows), taking [`QActs::row_with_scales`].
    ///
    /// Where a type has `dot_rows` or `packed` (on AVX2 and AVX-512: Q2_K..Q6_K, Q4_0, Q5_0, Q8_0), these
    /// and `single` sum exact per-block integers in one f32 order, so a result does not depend on
    /// how the rows were batched, bit for bit (tested).
    pub dot_rows: Option<DotRowsFn>,
    /// The same for [`ROWS4`] rows (what is left of a batch after its groups of 8: the few
    /// sequences of a batched decode step; 3 rows left take it with the last row twice), in
    /// the same order: the same bits.
    pub dot_rows4: Option<DotRows4Fn>,
    /// The same for [`super::layout::ROWS2`] rows (2 rows left of a batch: a batched decode
    /// step of 2 or 6 sequences), in the same order: the same bits.
    pub dot_rows2: Option<DotRows2Fn>,
    /// The packed-tile GEMM for prompts of [`super::PACKED_MIN_ROWS`] rows or more, if any (on
    /// AVX2, Q2_K..Q6_K, Q4_0, Q5_0 and Q8_0).
    pub packed: Option<Packed>,
    /// Which implementation `single` is: `"avx512vnni"`, `"avxvnni"` or `"avx2"` (this crate's,
    /// chosen at run time; the multi-row kernel and the packed GEMM are of the same instruction
    /// set, the VNNI packed GEMMs on the AVX2 packing),
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
            // SAFETY: AVX2/FMA/F16C detected just above.
            let (mut one, mut dot, mut dot_rows, mut dot_rows4, mut dot_rows2) = unsafe {
                (
                    avx2::dot_with_scales(t),
                    avx2::dot(t),
                    avx2::dot_rows::<ROWS>(t),
                    avx2::dot_rows::<ROWS4>(t),
                    avx2::dot_rows::<ROWS2>(t),
                )
            };
            let mut name = "avx2";
            if let Some(v) = Vnni::detect() {
                // the VNNI kernels give the AVX2 kernels' results bit for bit (tested), so the
                // packed GEMMs still sum in their order
                // SAFETY: the features of form `v` detected just above.
                let fast = unsafe {
                    match v {
                        Vnni::Avx512 => (
                            vnni::dot_with_scales::<true>(t),
                            vnni::dot::<true>(t),
                            vnni::dot_rows::<ROWS, true>(t),
                            vnni::dot_rows::<ROWS4, true>(t),
                            vnni::dot_rows::<ROWS2, true>(t),
                        ),
                        Vnni::Avx => (
                            vnni::dot_with_scales::<false>(t),
                            vnni::dot::<false>(t),
                            vnni::dot_rows::<ROWS, false>(t),
                            vnni::dot_rows::<ROWS4, false>(t),
                            vnni::dot_rows::<ROWS2, false>(t),
                        ),
                    }
                };
                if fast.0.is_some() || fast.1.is_some() {
                    (one, dot, name) = (fast.0, fast.1, v.name());
                }
                dot_rows = fast.2.or(dot_rows);
                dot_rows4 = fast.3.or(dot_rows4);
                dot_rows2 = fast.4.or(dot_rows2);
            }
            let (single, single_with_scales, name) = match (one, dot) {
                (Some(one), _) => (one, true, name),
                (None, Some(dot)) => (dot, false, name),
                (None, None) => (candle_dot_fn(t)?, false, candle_kernel_name(t)),
            };
            return Some(Kernels {
                single,
                single_with_scales,
                dot_rows,
                dot_rows4,
                dot_rows2,
                packed: Packed::for_type(t),
                name,
            });
        }
        Some(Kernels {
            single: candle_dot_fn(t)?,
            single_with_scales: false,
            dot_rows: None,
            dot_rows4: None,
            dot_rows2: None,
            packed: None,
            name: candle_kernel_name(t),
        })
    }
}

/// A type's packed prompt GEMM: weight rows packed per group of [`PACK_GROUP`] with one SIMD lane
/// per weight row, and the GEMM over such a group. One exists only where the CPU runs it.
#[derive(Clone, Copy)]
pub struct Packed {
    t: GgmlType,
    /// Bytes of one packed block (private: `pack` and `gemm` trust it for the buffers' lengths).
    block_bytes: usize,
    /// The VNNI form `gemm` runs where the CPU has one (every type with a packed GEMM), else the
    /// AVX2 kernel: the same packing, the same results bit for bit.
    #[cfg(target_arch = "x86_64")]
    vnni: Option<Vnni>,
    /// Whether prompts take the AMX GEMM instead (the K-quants where AMX is available): the
    /// same results bit for bit, on its own packing.
    amx: bool,
}

impl Packed {
    /// Bytes of one packed block (of [`PACK_GROUP`] weight rows).
    #[inline]
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// The packed GEMM for `t` on this CPU, if any (AVX2, or VNNI where the CPU has it): every
    /// type whose single-row and multi-row kernels sum in its order (see [`Kernels::dot_rows`]).
    fn for_type(t: GgmlType) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx2() {
            let block_bytes = avx2::packed_block_bytes(t)?;
            let vnni = Vnni::detect().filter(|_| vnni::has_gemm(t));
            let amx = x86::amx::has_gemm(t) && x86::amx::available();
            return Some(Packed {
                t,
                block_bytes,
                vnni,
                amx,
            });
        }
        let _ = t;
        None
    }

    /// Whether prompts of this type take the AMX GEMM (see the field).
    #[inline]
    pub fn amx(&self) -> bool {
        self.amx
    }

    /// This GEMM without AMX: what runs where AMX is missing (for tests and benchmarks).
    pub fn without_amx(self) -> Self {
        Packed { amx: false, ..self }
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
            avx2::pack(self.t, b0, nb, rows, o)
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
            ActKind::Q8_0 => q8_0_row_with_scales_bytes(row_nb),
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
        // SAFETY: a `Packed` exists only where AVX2 was detected, and has a `vnni` form only
        // where its features were (`for_type`); lengths checked by `gemm`.
        unsafe {
            match self.vnni {
                Some(Vnni::Avx512) => vnni::gemm::<N, true>(self.t, b0, nb, row_nb, p, rows, acc),
                Some(Vnni::Avx) => vnni::gemm::<N, false>(self.t, b0, nb, row_nb, p, rows, acc),
                None => avx2::gemm::<N>(self.t, b0, nb, row_nb, p, rows, acc),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (b0, nb, row_nb, p, rows, acc);
            unreachable!("packed kernels are x86 only");
        }
    }
}

/// Dot product of two f32 slices (over the shorter length), SIMD when available.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2() {
        // SAFETY: AVX2/FMA detected.
        return unsafe { avx2::dots::dot_f32_slices(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += a * x` (over the shorter length), SIMD when available.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2() {
        // SAFETY: AVX2/FMA detected.
        return unsafe { avx2::dots::axpy(a, x, y) };
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}
