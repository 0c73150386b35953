//! CPU kernels: activation quantization, quantized dot products with run-time SIMD dispatch, the
//! tiled multi-threaded matmul over weights in the file mapping, and the thread pool.
//!
//! By role:
//! - [`acts`] and [`quantize`]: activation rows in the format each weight type multiplies with,
//!   quantized with ggml's exact rules, and the layout of their side data;
//! - [`layout`]: what drivers and kernels agree on (kernel signatures, rows per call, the packed
//!   GEMM's accumulators and summation order);
//! - [`dispatch`]: the one [`Kernels`] choice per weight type, made at run time ([`isa`]);
//! - [`matmul`](mod@matmul): the drivers (decode, tiled prompts, packed prompts) over [`pool`];
//! - [`attn`]: the KV cache of a layer in its stored type (F16, Q8_0, F32) and the causal GQA
//!   attention that reads it tile by tile;
//! - [`reference`]: candle's block types, its scalar dots (the reference every SIMD kernel is
//!   tested against) and its compile-time-SIMD dots (the fallback);
//! - per instruction set, the kernels: `x86` (`x86::avx2`, `x86::vnni`, and `x86::amx`, the
//!   K-quants' prompt GEMM on AMX tiles), later `arm` (NEON).
//!
//! On x86-64 with AVX2 (detected at run time) every type of the Med42 quant table has this
//! crate's decode kernel; prompt batches use the multi-row kernels for Q2_K..Q6_K, Q4_0, Q5_0 and
//! Q8_0, and prompts of [`PACKED_MIN_ROWS`] rows or more the GEMM over weight tiles repacked 8
//! rows per register. For each of these types all three kernels add exact per-block integer dot
//! products in one f32 order, so results do not depend on batching, bit for bit. Where the CPU
//! also has AVX-512 F/BW/VL/VNNI or AVX-VNNI, the decode, multi-row and packed kernels of these
//! types (and Q4_1's decode kernel) are VNNI ones, which compute the same integers with fewer
//! instructions and give the AVX2 kernels' results bit for bit, so batching still changes
//! nothing and every x86 machine gives the same logits. Where it also has AMX-TILE and
//! AMX-INT8 (and the OS grants the tile state), the K-quants' prompts of 32 rows or more (48 for
//! Q4_K and Q5_K) run on AMX tiles, again with the same bits.
//!
//! Every safe function here is sound for any input: the kernels behind [`Kernels`] and
//! [`matmul`](fn@matmul) check the lengths of the rows they are given (once per row, not per
//! block) and panic on a short one.

pub mod acts;
pub mod attn;
pub mod dispatch;
pub mod layout;
pub mod matmul;
pub mod pool;
pub mod quantize;
pub mod reference;
mod send_ptr;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use acts::{ActKind, QActs};
pub use attn::{attention, KvLayer, KvType};
pub use dispatch::{axpy, dot_f32, isa, Kernels, Packed};
pub use layout::{DotFn, DotRowsFn, ROWS};
pub use matmul::{matmul, WeightView, PACKED_MIN_ROWS};
pub use reference::{candle_dtype, dequantize_row, dot_fn_reference};
pub use send_ptr::SendPtr;

#[cfg(test)]
mod tests;
