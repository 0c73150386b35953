//! Activation rows as the kernels take them: the format each weight type multiplies with
//! ([`ActKind`]), the converted rows with their side data ([`QActs`]), and the byte layout of
//! that side data and of a Q8_K block, shared by every instruction set's kernels.

use half::f16;

use super::pool;
use super::quantize::{self, Q8_0_BYTES};
use super::send_ptr::SendPtr;
use crate::gguf::GgmlType;

/// Offset of the 256 i8 quants in a Q8_K block (after the f32 scale).
pub const Q8K_QS: usize = 4;
/// Offset of the 16 i16 sums of 16 quants in a Q8_K block (after the quants).
pub const Q8K_BSUMS: usize = Q8K_QS + 256;

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
    #[inline]
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

    /// The GGUF type of one converted row.
    #[inline]
    pub fn ggml_type(self) -> GgmlType {
        match self {
            ActKind::F32 => GgmlType::F32,
            ActKind::F16 => GgmlType::F16,
            ActKind::BF16 => GgmlType::BF16,
            ActKind::Q8_0 => GgmlType::Q8_0,
            ActKind::Q8_1 => GgmlType::Q8_1,
            ActKind::Q8K => GgmlType::Q8_K,
        }
    }

    /// Bytes of one converted row of `k` elements.
    #[inline]
    pub fn row_bytes(self, k: usize) -> usize {
        let t = self.ggml_type();
        k / t.block_size() * t.type_size()
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

/// Offset of the f32 block scales after a Q8_0 activation row of `nb` blocks.
#[inline]
pub fn q8_0_scales_offset(nb: usize) -> usize {
    (nb * Q8_0_BYTES).next_multiple_of(8)
}

/// Offset of the i32 block sums (sum of a block's 32 quants) after a Q8_0 activation row of `nb`
/// blocks; they follow the f32 scales.
#[inline]
pub fn q8_0_sums_offset(nb: usize) -> usize {
    q8_0_scales_offset(nb) + 4 * nb
}

/// Bytes of a Q8_0 activation row of `nb` blocks with its side data (what
/// [`QActs::row_with_scales`] holds at least).
#[inline]
pub fn q8_0_row_with_scales_bytes(nb: usize) -> usize {
    q8_0_sums_offset(nb) + 4 * nb
}

/// Activation rows converted for one [`ActKind`]: reusable scratch. Each row starts 8-byte
/// aligned; Q8_0 rows are followed by their block scales as f32 and their blocks' quant sums as
/// i32 (see [`QActs::row_with_scales`]).
#[derive(Default)]
pub struct QActs {
    buf: Vec<u64>,
    rows: usize,
    row_bytes: usize,
    stride: usize,
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
                        let b = i * Q8_0_BYTES;
                        let h = f16::from_le_bytes([out[b], out[b + 1]]).to_f32();
                        out[off + 4 * i..off + 4 * i + 4].copy_from_slice(&h.to_le_bytes());
                        let sum: i32 = out[b + 2..b + 34].iter().map(|&q| q as i8 as i32).sum();
                        out[soff + 4 * i..soff + 4 * i + 4].copy_from_slice(&sum.to_le_bytes());
                    }
                }
            }
        });
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

    /// Bytes from one row's start to the next (row, side data, padding).
    pub fn stride(&self) -> usize {
        self.stride
    }
}
