//! The forward pass on candle tensors: the path for CUDA and Metal (weights uploaded once from the
//! mapping into candle `QMatMul`s, never dequantized), also runnable on CPU for cross-checking.
//! It runs the blocks `m.split..` (all of them unless layers stay on the CPU, see
//! [`Llama::split`]), the output norm and the output matrix, for the rows of several sequences at
//! once; attention runs per sequence over its own cache. Same steps as [`super::cpu`]; shapes
//! noted after every reshape. `T` new tokens of a sequence, `L` its cached positions after this
//! call, `H`/`G` query/KV heads, `D` head_dim.
//!
//! Attention, per sequence, GQA without repeating K/V (the query heads of one KV head are the
//! rows of one batched matmul): the scores come from F32 queries and the cached keys widened to
//! F32 (so scores and softmax are F32, as in llama.cpp's flash attention); the F32
//! probabilities are rounded to the cache type and multiplied with the cached values in place
//! (F16 by default). Queries are taken in chunks so that the score matrix of a long prompt stays
//! within [`SCORE_BYTES`]; a decode step's scores are `(H, 1, L)`.

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::kernels::KvType;

use super::{Llama, Logits};

/// Upper bound of one chunk's F32 attention scores `(H, T_chunk, L)`, in bytes.
pub(crate) const SCORE_BYTES: usize = 128 << 20;

/// Per-sequence KV cache of the device blocks `split..`: per block `(G, n_ctx, D)` in F16 or F32
/// (the model's `kv_type`; Q8_0 is refused at load on this path).
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
        let n = c.n_layer - m.split;
        let dev = |r: candle_core::Result<Tensor>| {
            r.map_err(|e| device_error(e.into(), &m.device_name()))
        };
        let mut k = Vec::with_capacity(n);
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            k.push(dev(Tensor::zeros(shape, dtype, &m.device))?);
            v.push(dev(Tensor::zeros(shape, dtype, &m.device))?);
        }
        let half = c.n_rot / 2;
        let cos = dev(Tensor::from_slice(
            &m.rope_cos[..n_ctx * half],
            (n_ctx, half),
            &m.device,
        ))?;
        let sin = dev(Tensor::from_slice(
            &m.rope_sin[..n_ctx * half],
            (n_ctx, half),
            &m.device,
        ))?;
        Ok(CandleCache { k, v, cos, sin })
    }
}

impl CandleCache {
    /// Append positions `0..len` of every layer, K then V, head by head, in the cache's type:
    /// the bytes the CPU path's `KvLayer::save` writes for the same positions, so a saved state
    /// restores on either path.
    pub fn save(&self, len: usize, out: &mut Vec<u8>) -> Result<()> {
        for (k, v) in self.k.iter().zip(&self.v) {
            for t in [k, v] {
                let rows = t.narrow(1, 0, len)?.contiguous()?.flatten_all()?; // (G*len*D)
                match rows.dtype() {
                    DType::F16 => {
                        for x in rows.to_vec1::<half::f16>()? {
                            out.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                    _ => {
                        for x in rows.to_vec1::<f32>()? {
                            out.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Read positions `0..len` of every layer back from what [`Self::save`] wrote (`data` holds
    /// exactly those bytes: the caller checks).
    pub fn restore(&mut self, len: usize, data: &[u8]) -> Result<()> {
        let mut at = 0;
        for i in 0..self.k.len() {
            for t in [&mut self.k[i], &mut self.v[i]] {
                let (g, _, d) = t.dims3()?;
                let n = g * len * d;
                let dev = t.device().clone();
                let rows = match t.dtype() {
                    DType::F16 => {
                        let v: Vec<half::f16> = data[at..at + 2 * n]
                            .chunks_exact(2)
                            .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                            .collect();
                        at += 2 * n;
                        Tensor::from_vec(v, (g, len, d), &dev)?
                    }
                    _ => {
                        let v: Vec<f32> = data[at..at + 4 * n]
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                        at += 4 * n;
                        Tensor::from_vec(v, (g, len, d), &dev)?
                    }
                };
                if len > 0 {
                    t.slice_set(&rows, 1, 0)?;
                }
            }
        }
        Ok(())
    }
}

/// An error of the device, with an out-of-memory condition told apart: it is the caller's to
/// handle (fewer offloaded blocks, a shorter context), not a bug.
pub(crate) fn device_error(e: Error, device: &str) -> Error {
    match e {
        Error::Candle(ce) => {
            let text = ce.to_string();
            if text.contains("OUT_OF_MEMORY") || text.contains("out of memory") {
                Error::DeviceOutOfMemory {
                    device: device.to_string(),
                    detail: text.lines().next().unwrap_or("").to_string(),
                }
            } else {
                Error::Candle(ce)
            }
        }
        e => e,
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

/// Additive causal mask `(rows, pos + first + rows)` of query rows `first..first+rows` of a
/// sequence whose new tokens start at `pos`.
fn causal_mask(rows: usize, pos: usize, first: usize, device: &Device) -> Result<Tensor> {
    let l = pos + first + rows;
    let mut mask = vec![0f32; rows * l];
    for i in 0..rows {
        for j in (pos + first + i + 1)..l {
            mask[i * l + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(mask, (rows, l), device)?)
}

/// One sequence of [`forward_multi`]: `t` new tokens at positions `pos..pos+t`.
pub(crate) struct SeqIn<'a> {
    pub t: usize,
    pub pos: usize,
    pub cache: &'a mut CandleCache,
    pub which: Logits,
}

thread_local! {
    /// A smaller score budget for this thread's forward passes (tests of the chunking).
    pub(crate) static SCORE_LIMIT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Query rows per attention chunk for a sequence reaching `l` positions.
fn chunk_rows(m: &Llama, t: usize, l: usize) -> usize {
    let budget = SCORE_LIMIT.with(|c| c.get()).unwrap_or(SCORE_BYTES);
    (budget / (4 * m.config.n_head * l.max(1))).clamp(1, t.max(1))
}

/// Attention of one sequence in device block `bi` (index into the cache): writes its new K/V
/// rows and returns `(T, H*D)` F32. `masks`: one per query chunk (None for a single row).
fn attend(
    m: &Llama,
    bi: usize,
    sq: &mut SeqIn<'_>,
    masks: &[Option<Tensor>],
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let c = &m.config;
    let (t, pos) = (sq.t, sq.pos);
    let (hd, n_head, n_kv, n_rep) = (c.head_dim, c.n_head, c.n_head_kv, c.n_rep());
    let scale = 1.0 / (hd as f64).sqrt();
    let cos = sq.cache.cos.narrow(0, pos, t)?; // (T, n_rot/2)
    let sin = sq.cache.sin.narrow(0, pos, t)?;
    let q = q
        .reshape((1, t, n_head, hd))?
        .transpose(1, 2)?
        .contiguous()?; // (1, H, T, D)
    let k = k.reshape((1, t, n_kv, hd))?.transpose(1, 2)?.contiguous()?; // (1, G, T, D)
    let v = v.reshape((t, n_kv, hd))?.transpose(0, 1)?.contiguous()?; // (G, T, D)
    let q = rope(m, &q, &cos, &sin)?.squeeze(0)?; // (H, T, D)
    let k = rope(m, &k, &cos, &sin)?.squeeze(0)?; // (G, T, D)

    let dt = sq.cache.k[bi].dtype();
    sq.cache.k[bi].slice_set(&k.to_dtype(dt)?, 1, pos)?;
    sq.cache.v[bi].slice_set(&v.to_dtype(dt)?, 1, pos)?;
    let q = (q * scale)?; // (H, T, D)

    let step = chunk_rows(m, t, pos + t);
    let mut outs = Vec::with_capacity(t.div_ceil(step));
    for (ci, first) in (0..t).step_by(step).enumerate() {
        let rows = step.min(t - first);
        let l = pos + first + rows; // keys past the chunk's last query are all masked
        let kc = sq.cache.k[bi].narrow(1, 0, l)?; // (G, L, D)
        let vc = sq.cache.v[bi].narrow(1, 0, l)?; // (G, L, D), read in place
                                                  // Grouped-query attention: query head g*n_rep + r reads KV head g; group the query
                                                  // heads instead of repeating K/V.
        let qc = q
            .narrow(1, first, rows)?
            .contiguous()?
            .reshape((n_kv, n_rep * rows, hd))?; // (G, n_rep*rows, D)
        let kc = kc.to_dtype(DType::F32)?; // a no-op for an F32 cache
        let att = qc.matmul(&kc.t()?)?; // (G, n_rep*rows, L)
        let att = match &masks[ci] {
            Some(mk) => att
                .reshape((n_kv, n_rep, rows, l))? // (G, n_rep, rows, L)
                .broadcast_add(mk)?
                .reshape((n_kv, n_rep * rows, l))?, // (G, n_rep*rows, L)
            None => att,
        };
        let p = candle_nn::ops::softmax_last_dim(&att)?.to_dtype(dt)?;
        let o = p.matmul(&vc)?.to_dtype(DType::F32)?; // (G, n_rep*rows, D)
        outs.push(o.reshape((n_head, rows, hd))?); // (H, rows, D)
    }
    let o = if outs.len() == 1 {
        outs.pop().expect("one chunk")
    } else {
        Tensor::cat(&outs, 1)? // (H, T, D)
    };
    Ok(o.transpose(0, 1)?.reshape((t, n_head * hd))?) // (T, H*D)
}

/// The device blocks `m.split..`, the output norm and the output matrix over the rows of several
/// sequences: `hidden` holds every sequence's rows `(T, E)` in order (the embeddings, or the
/// hidden state after the CPU blocks), uploaded once. Returns each sequence's logits
/// (`Last`: 1 row, `All`: its T rows). The caches' positions are written; the caller advances
/// their lengths on success.
pub(crate) fn forward_multi(
    m: &Llama,
    hidden: &[f32],
    seqs: &mut [SeqIn<'_>],
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Vec<Vec<f32>>> {
    let c = &m.config;
    let nt = m.n_threads;
    let e = c.n_embd;
    let total: usize = seqs.iter().map(|s| s.t).sum();
    let mut x = Tensor::from_slice(&hidden[..total * e], (total, e), &m.device)?; // (T, E)

    // the causal masks of each sequence's query chunks, shared by every block
    let mut masks: Vec<Vec<Option<Tensor>>> = Vec::with_capacity(seqs.len());
    for sq in seqs.iter() {
        let step = chunk_rows(m, sq.t, sq.pos + sq.t);
        let mut v = Vec::new();
        for first in (0..sq.t).step_by(step) {
            let rows = step.min(sq.t - first);
            // a chunk whose keys all precede or equal its queries needs no mask (one row)
            v.push(if rows > 1 {
                Some(causal_mask(rows, sq.pos, first, &m.device)?)
            } else {
                None
            });
        }
        masks.push(v);
    }

    for (bi, b) in m.blocks[m.split..].iter().enumerate() {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let h = candle_nn::ops::rms_norm(&x, &b.attn_norm.dev, c.rms_norm_eps)?; // (T, E)
        let q = b.wq.forward(&h, nt)?; // (T, H*D)
        let k = b.wk.forward(&h, nt)?; // (T, G*D)
        let v = b.wv.forward(&h, nt)?; // (T, G*D)
        let mut outs = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for (sq, mk) in seqs.iter_mut().zip(&masks) {
            let (qi, ki, vi) = (
                q.narrow(0, row, sq.t)?,
                k.narrow(0, row, sq.t)?,
                v.narrow(0, row, sq.t)?,
            );
            outs.push(attend(m, bi, sq, mk, &qi, &ki, &vi)?); // (T_i, H*D)
            row += sq.t;
        }
        let o = if outs.len() == 1 {
            outs.pop().expect("one sequence")
        } else {
            Tensor::cat(&outs, 0)? // (T, H*D)
        };
        x = (x + b.wo.forward(&o, nt)?)?; // (T, E)

        let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm.dev, c.rms_norm_eps)?; // (T, E)
        let g = b.w_gate.forward(&h, nt)?; // (T, n_ff)
        let u = b.w_up.forward(&h, nt)?; // (T, n_ff)
        let f = (candle_nn::ops::silu(&g)? * u)?; // (T, n_ff)
        x = (x + b.w_down.forward(&f, nt)?)?; // (T, E)
    }

    // the rows whose logits are wanted, in order
    let mut keep: Vec<u32> = Vec::new();
    let mut counts = Vec::with_capacity(seqs.len());
    let mut row = 0u32;
    for sq in seqs.iter() {
        let t = sq.t as u32;
        match sq.which {
            Logits::Last => keep.push(row + t - 1),
            Logits::All => keep.extend(row..row + t),
        }
        counts.push(match sq.which {
            Logits::Last => 1,
            Logits::All => sq.t,
        });
        row += t;
    }
    let x = if keep.len() == total {
        x
    } else {
        let ids = Tensor::from_slice(&keep, keep.len(), &m.device)?;
        x.index_select(&ids, 0)? // (R, E)
    };
    let x = candle_nn::ops::rms_norm(&x.contiguous()?, &m.output_norm.dev, c.rms_norm_eps)?;
    let logits = m.output.forward(&x, nt)?.flatten_all()?.to_vec1::<f32>()?; // (R, n_vocab)
    let nv = c.n_vocab;
    let mut out = Vec::with_capacity(seqs.len());
    let mut at = 0;
    for n in counts {
        out.push(logits[at * nv..(at + n) * nv].to_vec());
        at += n;
    }
    Ok(out)
}
