//! The portable side of the kernels: candle's block types for each GGUF type, its scalar dots
//! (the reference every SIMD kernel is tested against), its compile-time-SIMD dots (used where
//! this crate has no kernel for the CPU), dequantization and candle's dtype names.

use candle_core::quantized::k_quants::GgmlType as CandleBlock;
use candle_core::quantized::GgmlDType;

use super::layout::DotFn;
use crate::gguf::GgmlType;

/// `$body` with `$T` naming candle's block type for the GGUF type `$t`, or `$none` where candle
/// has none: the one table from GGUF types to candle's.
macro_rules! with_candle_block {
    ($t:expr, $T:ident => $body:expr, _ => $none:expr) => {{
        #[allow(unused_imports)]
        use candle_core::quantized::k_quants::{
            BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
            BlockQ6K, BlockQ8K, BlockQ8_0,
        };
        match $t {
            GgmlType::F32 => {
                type $T = f32;
                $body
            }
            GgmlType::F16 => {
                type $T = half::f16;
                $body
            }
            GgmlType::BF16 => {
                type $T = half::bf16;
                $body
            }
            GgmlType::Q4_0 => {
                type $T = BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $T = BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $T = BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $T = BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $T = BlockQ8_0;
                $body
            }
            GgmlType::Q2_K => {
                type $T = BlockQ2K;
                $body
            }
            GgmlType::Q3_K => {
                type $T = BlockQ3K;
                $body
            }
            GgmlType::Q4_K => {
                type $T = BlockQ4K;
                $body
            }
            GgmlType::Q5_K => {
                type $T = BlockQ5K;
                $body
            }
            GgmlType::Q6_K => {
                type $T = BlockQ6K;
                $body
            }
            GgmlType::Q8_K => {
                type $T = BlockQ8K;
                $body
            }
            _ => $none,
        }
    }};
}
#[cfg(test)]
pub(crate) use with_candle_block;

/// `b` as a slice of candle blocks `T` (panics unless `b` is a whole number of aligned blocks).
pub(crate) fn cast<T>(b: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!(
        b.len().is_multiple_of(size)
            && (b.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    );
    // SAFETY: the block types are `#[repr(C)]` plain data valid for any bit pattern; length and
    // alignment checked above.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const T, b.len() / size) }
}

/// `w` and `a` as whole rows of `k` elements of `T` and of its activation type. candle's dots
/// read `k` elements through raw pointers: shorter rows must stop here.
#[inline]
fn rows<'a, T: CandleBlock>(k: usize, w: &'a [u8], a: &'a [u8]) -> (&'a [T], &'a [T::VecDotType]) {
    let (w, a) = (cast::<T>(w), cast::<T::VecDotType>(a));
    assert!(
        k.is_multiple_of(T::BLCK_SIZE)
            && w.len() >= k / T::BLCK_SIZE
            && a.len() >= k / T::VecDotType::BLCK_SIZE,
        "{:?} dot of {k} elements: weight row of {} blocks, activation row of {} blocks",
        T::DTYPE,
        w.len(),
        a.len()
    );
    (w, a)
}

fn candle_dot<T: CandleBlock>(k: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = rows::<T>(k, w, a);
    T::vec_dot(k, w, a)
}

fn candle_dot_scalar<T: CandleBlock>(k: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = rows::<T>(k, w, a);
    T::vec_dot_unopt(k, w, a)
}

/// The portable (scalar) dot for `t`: the reference the SIMD kernels are tested against.
pub fn dot_fn_reference(t: GgmlType) -> Option<DotFn> {
    with_candle_block!(t, T => Some(candle_dot_scalar::<T> as DotFn), _ => None)
}

/// candle's dot for `t` (SIMD where candle was compiled with it).
pub(crate) fn candle_dot_fn(t: GgmlType) -> Option<DotFn> {
    with_candle_block!(t, T => Some(candle_dot::<T> as DotFn), _ => None)
}

/// Which of candle's dots [`candle_dot_fn`] gives for `t` in this build.
pub(crate) fn candle_kernel_name(t: GgmlType) -> &'static str {
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

/// Dequantize one weight row of `t` into `out`; false where candle has no such type.
pub fn dequantize_row(t: GgmlType, row: &[u8], out: &mut [f32]) -> bool {
    with_candle_block!(t, T => {
        T::to_float(cast::<T>(row), out);
        true
    }, _ => false)
}

/// candle's name for the GGUF type `t`, where candle has it.
pub fn candle_dtype(t: GgmlType) -> Option<GgmlDType> {
    with_candle_block!(t, T => Some(<T as CandleBlock>::DTYPE), _ => None)
}
