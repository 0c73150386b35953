//! The forward pass on candle tensors: the path for CUDA and Metal (weights uploaded once from the
//! mapping into candle `QMatMul`s), also runnable on CPU for cross-checking. Same steps as
//! [`super::cpu`]; shapes noted after every reshape. `T` new tokens, `L` cached positions after
//! this call.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::kernels::KvType;

use super::{Llama, Logits};

/// Per-sequence KV cache on the device: per layer `(G, n_ctx, D)` in F16 or F32 (the model's
/// `kv_type`; Q8_0 is refused at load on this path). Attention reads it as F32.
pub(crate) struct CandleCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    /// RoPE tables `(n_ctx, n_rot/2)` on the device.
    cos: Tensor,
    sin: Tensor,
}

impl CandleCache {
    pub fn new(m: &Llama, n_ctx: usize) -> Result<Self> {
        let c = &m.config;
        let shape = (c.n_head_kv, n_ctx, c.head_dim);
        let dtype = match m.kv_type {
            KvType::F16 => DType::F16,
            KvType::F32 => DType::F32,
            KvType::Q8_0 => unreachable!("refused by Llama::from_gguf for the candle backend"),
        };
        let mut k = Vec::with_capacity(c.n_layer);
        let mut v = Vec::with_capacity(c.n_layer);
        for _ in 0..c.n_layer {
            k.push(Tensor::zeros(shape, dtype, &m.device)?);
            v.push(Tensor::zeros(shape, dtype, &m.device)?);
        }
        let half = c.n_rot / 2;
        let cos = Tensor::from_slice(&m.rope_cos[..n_ctx * half], (n_ctx, half), &m.device)?;
        let sin = Tensor::from_slice(&m.rope_sin[..n_ctx * half], (n_ctx, half), &m.device)?;
        Ok(CandleCache { k, v, cos, sin })
    }
}

fn rope(m: &Llama, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (n_rot, hd) = (m.config.n_rot, m.config.head_dim);
    if n_rot == hd {
        return Ok(candle_nn::rotary_emb::rope_i(x, cos, sin)?);
    }
    let rot = x.narrow(D::Minus1, 0, n_rot)?.contiguous()?;
    let pass = x.narrow(D::Minus1, n_rot, hd - n_rot)?;
    let rot = candle_nn::rotary_emb::rope_i(&rot, cos, sin)?;
    Ok(Tensor::cat(&[&rot, &pass], D::Minus1)?.contiguous()?)
}

/// Additive causal mask `(T, pos+T)`.
fn causal_mask(t: usize, pos: usize, device: &candle_core::Device) -> Result<Tensor> {
    let l = pos + t;
    let mut mask = vec![0f32; t * l];
    for i in 0..t {
        for j in (pos + i + 1)..l {
            mask[i * l + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(mask, (t, l), device)?)
}

pub(crate) fn forward(
    m: &Llama,
    tokens: &[u32],
    pos: usize,
    cache: &mut CandleCache,
    which: Logits,
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Vec<f32>> {
    let c = &m.config;
    let nt = m.n_threads;
    let t = tokens.len();
    let l = pos + t;
    let (hd, n_head, n_kv, n_rep) = (c.head_dim, c.n_head, c.n_head_kv, c.n_rep());
    let scale = 1.0 / (hd as f64).sqrt();

    let mut x = m.tok_embd.embedding(tokens, &m.device)?; // (T, E)
    let cos = cache.cos.narrow(0, pos, t)?; // (T, n_rot/2)
    let sin = cache.sin.narrow(0, pos, t)?;
    let mask = if t > 1 {
        Some(causal_mask(t, pos, &m.device)?)
    } else {
        None
    }; // (T, L)

    for (i, b) in m.blocks.iter().enumerate() {
        if cancelled() {
            return Err(crate::Error::Cancelled);
        }
        let h = candle_nn::ops::rms_norm(&x, &b.attn_norm.dev, c.rms_norm_eps)?; // (T, E)
        let q = b.wq.forward(&h, nt)?; // (T, H*D)
        let k = b.wk.forward(&h, nt)?; // (T, G*D)
        let v = b.wv.forward(&h, nt)?; // (T, G*D)

        let q = q
            .reshape((1, t, n_head, hd))?
            .transpose(1, 2)?
            .contiguous()?; // (1, H, T, D)
        let k = k.reshape((1, t, n_kv, hd))?.transpose(1, 2)?.contiguous()?; // (1, G, T, D)
        let v = v.reshape((t, n_kv, hd))?.transpose(0, 1)?.contiguous()?; // (G, T, D)
        let q = rope(m, &q, &cos, &sin)?.squeeze(0)?; // (H, T, D)
        let k = rope(m, &k, &cos, &sin)?.squeeze(0)?; // (G, T, D)

        let dtype = cache.k[i].dtype();
        cache.k[i].slice_set(&k.to_dtype(dtype)?, 1, pos)?;
        cache.v[i].slice_set(&v.to_dtype(dtype)?, 1, pos)?;
        let kc = cache.k[i].narrow(1, 0, l)?.to_dtype(DType::F32)?; // (G, L, D)
        let vc = cache.v[i].narrow(1, 0, l)?.to_dtype(DType::F32)?; // (G, L, D)

        // Grouped-query attention: query head g*n_rep + r reads KV head g; group the query heads
        // instead of repeating K/V.
        let q = q.reshape((n_kv, n_rep * t, hd))?; // (G, n_rep*T, D)
        let att = (q.matmul(&kc.t()?)? * scale)?; // (G, n_rep*T, L)
        let att = match &mask {
            Some(mk) => att
                .reshape((n_kv, n_rep, t, l))? // (G, n_rep, T, L)
                .broadcast_add(mk)?
                .reshape((n_kv, n_rep * t, l))?, // (G, n_rep*T, L)
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let o = att.matmul(&vc)?; // (G, n_rep*T, D)
        let o = o
            .reshape((n_head, t, hd))? // (H, T, D)
            .transpose(0, 1)? // (T, H, D)
            .reshape((t, n_head * hd))?; // (T, H*D)
        x = (x + b.wo.forward(&o, nt)?)?; // (T, E)

        let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm.dev, c.rms_norm_eps)?; // (T, E)
        let g = b.w_gate.forward(&h, nt)?; // (T, n_ff)
        let u = b.w_up.forward(&h, nt)?; // (T, n_ff)
        let f = (candle_nn::ops::silu(&g)? * u)?; // (T, n_ff)
        x = (x + b.w_down.forward(&f, nt)?)?; // (T, E)
    }

    let x = match which {
        Logits::Last => x.narrow(0, t - 1, 1)?, // (1, E)
        Logits::All => x,                       // (T, E)
    };
    let x = candle_nn::ops::rms_norm(&x.contiguous()?, &m.output_norm.dev, c.rms_norm_eps)?;
    let logits = m.output.forward(&x, nt)?; // (rows, n_vocab)
    Ok(logits.flatten_all()?.to_vec1::<f32>()?)
}
