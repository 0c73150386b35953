//! Quantization of activation rows into the formats ggml multiplies quantized weights with
//! ("vec_dot types"), following ggml's x86 semantics exactly:
//!
//! - Q8_0 / Q8_1 (blocks of 32): `d = amax / 127` stored as f16, `q = round_half_even(x * (127 /
//!   amax))`; Q8_1 also stores `s = f16(d * sum(q))`.
//! - Q8_K (blocks of 256): `iscale = -127 / max` where `max` is the element of largest magnitude,
//!   `q = min(127, round_half_even(iscale * x))`, `d = 1 / iscale` as f32, plus the sums of each
//!   16 quants.
//!
//! Matching these rules bit for bit keeps results identical to llama.cpp's wherever the dot
//! products agree.

use half::f16;

use crate::gguf::GgmlType;

/// Bytes of one Q8_0 block (f16 scale + 32 i8).
pub const Q8_0_BYTES: usize = GgmlType::Q8_0.type_size();
/// Bytes of one Q8_1 block (f16 scale, f16 sum + 32 i8).
pub const Q8_1_BYTES: usize = GgmlType::Q8_1.type_size();
/// Bytes of one Q8_K block (f32 scale + 256 i8 + 16 i16 sums).
pub const Q8_K_BYTES: usize = GgmlType::Q8_K.type_size();

#[inline]
fn amax(xs: &[f32]) -> f32 {
    xs.iter().fold(0f32, |m, &x| m.max(x.abs()))
}

/// One row of `k` floats (k % 32 == 0) to Q8_0 blocks in `out` (k/32 * 34 bytes).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let m = amax(xb);
        let d = m / 127.0;
        let id = if m != 0.0 { 127.0 / m } else { 0.0 };
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (o, &v) in ob[2..].iter_mut().zip(xb) {
            *o = (v * id).round_ties_even() as i8 as u8;
        }
    }
}

/// One row to Q8_1 blocks (k/32 * 36 bytes).
pub fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let m = amax(xb);
        let d = m / 127.0;
        let id = if m != 0.0 { 127.0 / m } else { 0.0 };
        let mut sum = 0i32;
        for (o, &v) in ob[4..].iter_mut().zip(xb) {
            let q = (v * id).round_ties_even() as i32;
            sum += q;
            *o = q as i8 as u8;
        }
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        ob[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_le_bytes());
    }
}

/// One row to Q8_K blocks (k/256 * 292 bytes).
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(Q8_K_BYTES)) {
        let mut max = 0f32;
        let mut am = 0f32;
        for &v in xb {
            if v.abs() > am {
                am = v.abs();
                max = v;
            }
        }
        if am == 0.0 {
            ob.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let (dq, rest) = ob.split_at_mut(4);
        let (qs, sums) = rest.split_at_mut(256);
        for (o, &v) in qs.iter_mut().zip(xb) {
            let q = ((iscale * v).round_ties_even() as i32).min(127);
            *o = q as i8 as u8;
        }
        for (j, s) in sums.chunks_exact_mut(2).enumerate() {
            let sum: i32 = qs[j * 16..j * 16 + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
        dq.copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// One row to f16 (round to nearest even, as F16C does).
pub fn quantize_row_f16(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f16::from_f32(v).to_le_bytes());
    }
}

/// One row to bf16 (round to nearest even).
pub fn quantize_row_bf16(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
    }
}

/// One row copied as f32.
pub fn quantize_row_f32(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_roundtrip_and_scale() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.1).collect();
        let mut out = vec![0u8; 2 * Q8_0_BYTES];
        quantize_row_q8_0(&x, &mut out);
        let d = f16::from_le_bytes([out[0], out[1]]).to_f32();
        assert!((d - 3.15 / 127.0).abs() < 1e-4);
        // element of largest magnitude quantizes to -127
        assert_eq!(out[2] as i8, -127);
        for (i, &v) in x[..32].iter().enumerate() {
            let q = out[2 + i] as i8 as f32;
            assert!((q * d - v).abs() <= d * 0.5 + 1e-3, "element {i}");
        }
    }

    #[test]
    fn q8_1_sum_is_rounded_like_ggml() {
        // s = f16(d * sum(q)), not f16(sum) * d
        let x: Vec<f32> = (0..32).map(|i| (i as f32) * 1.37 + 0.3).collect();
        let mut out = vec![0u8; Q8_1_BYTES];
        quantize_row_q8_1(&x, &mut out);
        let d = x.iter().fold(0f32, |m, &v| m.max(v.abs())) / 127.0;
        let sum: i32 = out[4..].iter().map(|&q| q as i8 as i32).sum();
        let s = f16::from_le_bytes([out[2], out[3]]);
        assert_eq!(s, f16::from_f32(d * sum as f32));
    }

    #[test]
    fn q8_k_scale_sign_follows_the_largest_element() {
        let mut x = vec![0.5f32; 256];
        x[10] = -4.0;
        let mut out = vec![0u8; Q8_K_BYTES];
        quantize_row_q8_k(&x, &mut out);
        let d = f32::from_le_bytes(out[0..4].try_into().unwrap());
        assert!(
            (d - 4.0 / 127.0).abs() < 1e-6,
            "d = 1/iscale with iscale = -127/max"
        );
        // iscale * max == -127: the largest element always maps to -127
        assert_eq!(out[4 + 10] as i8, -127);
        let bsum0 = i16::from_le_bytes([out[260], out[261]]);
        let q_half = (0.5f32 * (-127.0 / -4.0f32)).round_ties_even() as i32;
        assert_eq!(q_half, 16);
        assert_eq!(bsum0 as i32, -127 + 15 * q_half);
    }
}
