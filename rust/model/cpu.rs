//! The CPU forward pass over plain f32 buffers.
//!
//! Buffers are row-major; `T` is the number of new tokens, `L` the number of cached positions after
//! this call, `E` = n_embd, `D` = head_dim, `H`/`G` = query/KV heads. Scratch is allocated once per
//! session and grows to the largest batch seen; nothing is allocated per token except the returned
//! logits.
//!
//! K/V cache per layer: a [`KvLayer`] in the model's [`KvType`] (F16, Q8_0 or F32), which
//! [`kernels::attention`] reads in that type, tile by tile (see `kernels::attn`).

use crate::error::Result;
use crate::gguf::LlamaConfig;
use crate::kernels::{self, ActKind, KvLayer, KvType, QActs};
use crate::weights::QWeight;

use super::{Llama, Logits};

/// Converted activations of the current input, for up to two activation formats (a layer's
/// matrices may mix, e.g. Q4_K with a Q8_0 fallback).
#[derive(Default)]
struct ActCache {
    bufs: [QActs; 2],
    valid: [Option<ActKind>; 2],
}

impl ActCache {
    fn invalidate(&mut self) {
        self.valid = [None, None];
    }

    fn get(&mut self, kind: ActKind, x: &[f32], m: usize, k: usize, nt: usize) -> &QActs {
        if let Some(i) = self.valid.iter().position(|v| *v == Some(kind)) {
            return &self.bufs[i];
        }
        let i = usize::from(self.valid[0].is_some());
        self.bufs[i].convert(kind, x, m, k, nt);
        self.valid[i] = Some(kind);
        &self.bufs[i]
    }
}

/// Activation buffers of one forward pass; they grow to the largest batch seen.
#[derive(Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,   // (T, E) residual stream
    xb: Vec<f32>,  // (T, E) normed input / projection output
    q: Vec<f32>,   // (T, H*D)
    k: Vec<f32>,   // (T, G*D)
    v: Vec<f32>,   // (T, G*D)
    att: Vec<f32>, // (T, H*D) attention output
    hb: Vec<f32>,  // (T, n_ff) gate, then silu(gate) * up
    hb2: Vec<f32>, // (T, n_ff) up
    xq: Vec<f32>,  // (R, E) the normed rows whose queries the last block computes
    acts: ActCache,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// The K/V of one sequence on the CPU path: one [`KvLayer`] per block.
pub(crate) struct NativeKv {
    pub(crate) layers: Vec<KvLayer>,
}

impl NativeKv {
    /// Zeroed allocations for the first `n_layers` blocks: pages are committed only when
    /// positions are written.
    pub fn new(cfg: &LlamaConfig, n_layers: usize, n_ctx: usize, kv_type: KvType) -> Result<Self> {
        let layers = (0..n_layers)
            .map(|_| KvLayer::new(kv_type, cfg.n_head_kv, n_ctx, cfg.head_dim))
            .collect::<Result<_>>()?;
        Ok(NativeKv { layers })
    }
}

impl NativeKv {
    /// Bytes [`Self::write_state`] writes for `n` positions.
    pub fn state_bytes(&self, n: usize) -> usize {
        self.layers.iter().map(|l| l.saved_bytes(n)).sum()
    }

    /// Append the stored K and V rows of positions `0..n` of every layer to `out`, in the cache's
    /// own type (layer by layer, see [`KvLayer::save`]).
    pub fn write_state(&self, n: usize, out: &mut Vec<u8>) {
        out.reserve(self.state_bytes(n));
        for l in &self.layers {
            l.save(n, out);
        }
    }

    /// Read what [`Self::write_state`] wrote for `n` positions (`data` holds exactly
    /// [`Self::state_bytes`]; `n <= n_ctx`: the caller checks both).
    pub fn read_state(&mut self, n: usize, data: &[u8]) {
        assert_eq!(data.len(), self.state_bytes(n));
        let mut at = 0;
        for l in &mut self.layers {
            at += l.restore(n, &data[at..]);
        }
    }
}

/// KV cache and scratch of one sequence on the CPU path (a batch of several sequences brings its
/// own [`Scratch`]).
pub(crate) struct NativeCache {
    pub(crate) kv: NativeKv,
    pub(crate) s: Scratch,
}

impl NativeCache {
    /// The cache of blocks `..n_layers` (those on the CPU path).
    pub fn new(cfg: &LlamaConfig, n_layers: usize, n_ctx: usize, kv_type: KvType) -> Result<Self> {
        Ok(NativeCache {
            kv: NativeKv::new(cfg, n_layers, n_ctx, kv_type)?,
            s: Scratch::default(),
        })
    }
}

/// RMSNorm of each row of `x` into `out`, times `w`, with ggml's rounding: the sum of squares in
/// f64, `scale = 1 / sqrt(mean + eps)` in f32, then `x * scale * w`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let e = w.len();
    for (xr, or) in x.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / e as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &xv), &wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * scale * wv;
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// Rotate adjacent pairs of the first `n_rot` dims of each head of each row (ggml "normal" mode).
fn rope(
    x: &mut [f32],
    t: usize,
    heads: usize,
    d: usize,
    n_rot: usize,
    pos: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let half = n_rot / 2;
    for ti in 0..t {
        let c = &cos[(pos + ti) * half..(pos + ti + 1) * half];
        let s = &sin[(pos + ti) * half..(pos + ti + 1) * half];
        for h in 0..heads {
            let v = &mut x[(ti * heads + h) * d..(ti * heads + h) * d + n_rot];
            for i in 0..half {
                let (x0, x1) = (v[2 * i], v[2 * i + 1]);
                v[2 * i] = x0 * c[i] - x1 * s[i];
                v[2 * i + 1] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}

/// `out = input @ W^T` for `t` rows, converting the input once per activation format.
fn project(w: &QWeight, input: &[f32], t: usize, acts: &mut ActCache, out: &mut [f32], nt: usize) {
    let a = acts.get(w.act_kind(), &input[..t * w.n_in], t, w.n_in, nt);
    kernels::matmul(&w.view(), a, &mut out[..t * w.n_out], nt);
}

/// One sequence of a batched forward pass: `tokens` at positions `pos..pos+T` over its own K/V.
pub(crate) struct SeqIn<'a> {
    pub tokens: &'a [u32],
    pub pos: usize,
    pub kv: &'a mut NativeKv,
    pub which: Logits,
}

/// One forward pass over several sequences: every weight matrix is read once for the rows of all
/// of them (`T` = the sum of their new tokens), attention runs per sequence over its own cache.
/// Returns each sequence's logits (`Last`: 1 row, `All`: its T rows).
///
/// Only the blocks `..m.split` run here. When blocks are offloaded (`split < n_layer`) the result
/// is instead one buffer: the hidden state of every row `(T, E)` after block `split - 1`, in
/// batch order, for the device blocks to continue from.
///
/// Every kernel gives a row the same result whatever the other rows of the batch
/// (kernels::tests), so each sequence's logits are those it gets alone, bit for bit.
pub(crate) fn forward_multi(
    m: &Llama,
    seqs: &mut [SeqIn<'_>],
    s: &mut Scratch,
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Vec<Vec<f32>>> {
    let cfg = &m.config;
    let nt = m.n_threads;
    let (e, d) = (cfg.n_embd, cfg.head_dim);
    let (qd, kvd) = (cfg.n_head * d, cfg.n_head_kv * d);
    let n = seqs.len();
    // off[i]: sequence i's first row in the batch; rows off[i]..off[i+1] are its new tokens.
    let mut off = Vec::with_capacity(n + 1);
    off.push(0usize);
    for sq in seqs.iter() {
        off.push(off[off.len() - 1] + sq.tokens.len());
    }
    let t = off[n];
    // keep[i]: (first row within sequence i, rows) whose logits are wanted; their queries are the
    // only ones the last block computes (after its K/V projections, which the cache needs for
    // every row). qoff[i]: where those rows sit once the last block has compacted them.
    let keep: Vec<(usize, usize)> = seqs
        .iter()
        .map(|sq| match sq.which {
            Logits::Last => (sq.tokens.len() - 1, 1),
            Logits::All => (0, sq.tokens.len()),
        })
        .collect();
    let mut qoff = Vec::with_capacity(n + 1);
    qoff.push(0usize);
    for k in &keep {
        qoff.push(qoff[qoff.len() - 1] + k.1);
    }
    let r = qoff[n];
    for (buf, len) in [
        (&mut s.x, t * e),
        (&mut s.xb, t * e),
        (&mut s.xq, r * e),
        (&mut s.q, t * qd),
        (&mut s.k, t * kvd),
        (&mut s.v, t * kvd),
        (&mut s.att, t * qd),
        (&mut s.hb, t * cfg.n_ff),
        (&mut s.hb2, t * cfg.n_ff),
    ] {
        grow(buf, len);
    }

    for (i, sq) in seqs.iter().enumerate() {
        m.tok_embd
            .gather_rows(sq.tokens, &mut s.x[off[i] * e..off[i + 1] * e])?; // (T_i, E)
    }

    let n_blocks = m.blocks.len();
    for (li, b) in m.blocks[..m.split].iter().enumerate() {
        if cancelled() {
            return Err(crate::Error::Cancelled);
        }
        let narrow = li + 1 == n_blocks && r < t;
        // rows of this block's queries, attention and feed-forward, and where each sequence's start
        let (tq, qrow) = if narrow { (r, &qoff) } else { (t, &off) };
        rms_norm(
            &s.x[..t * e],
            &b.attn_norm.host,
            cfg.rms_norm_eps,
            &mut s.xb[..t * e],
        ); // (T, E)
        s.acts.invalidate();
        if narrow {
            project(&b.wk, &s.xb, t, &mut s.acts, &mut s.k, nt); // (T, G*D)
            project(&b.wv, &s.xb, t, &mut s.acts, &mut s.v, nt); // (T, G*D)
            for i in 0..n {
                let (first, rows) = (off[i] + keep[i].0, keep[i].1);
                s.xq[qoff[i] * e..qoff[i + 1] * e]
                    .copy_from_slice(&s.xb[first * e..(first + rows) * e]);
                // the residual stream of the kept rows, compacted in order (qoff[i] <= first)
                s.x.copy_within(first * e..(first + rows) * e, qoff[i] * e);
            }
            s.acts.invalidate();
            project(&b.wq, &s.xq, r, &mut s.acts, &mut s.q, nt); // (R, H*D)
        } else {
            project(&b.wq, &s.xb, t, &mut s.acts, &mut s.q, nt); // (T, H*D)
            project(&b.wk, &s.xb, t, &mut s.acts, &mut s.k, nt); // (T, G*D)
            project(&b.wv, &s.xb, t, &mut s.acts, &mut s.v, nt); // (T, G*D)
        }

        for (i, sq) in seqs.iter_mut().enumerate() {
            let ti = sq.tokens.len();
            let (q0, tqi) = if narrow { keep[i] } else { (0, ti) };
            rope(
                &mut s.q[qrow[i] * qd..],
                tqi,
                cfg.n_head,
                d,
                cfg.n_rot,
                sq.pos + q0,
                &m.rope_cos,
                &m.rope_sin,
            );
            let k_rows = &mut s.k[off[i] * kvd..off[i + 1] * kvd]; // (T_i, G*D)
            rope(
                k_rows,
                ti,
                cfg.n_head_kv,
                d,
                cfg.n_rot,
                sq.pos,
                &m.rope_cos,
                &m.rope_sin,
            );
            let v_rows = &s.v[off[i] * kvd..off[i + 1] * kvd]; // (T_i, G*D)
            let kv = &mut sq.kv.layers[li];
            kv.write(sq.pos, k_rows, v_rows); // rounded to the cache type as written
            kernels::attention(
                kv,
                &s.q[qrow[i] * qd..],
                cfg.n_head,
                sq.pos + q0,
                tqi,
                &mut s.att[qrow[i] * qd..],
                nt,
            ); // (Tq_i, H*D)
        }

        s.acts.invalidate();
        project(&b.wo, &s.att, tq, &mut s.acts, &mut s.xb, nt); // (Tq, E)
        for (xv, ov) in s.x[..tq * e].iter_mut().zip(&s.xb[..tq * e]) {
            *xv += ov;
        }

        rms_norm(
            &s.x[..tq * e],
            &b.ffn_norm.host,
            cfg.rms_norm_eps,
            &mut s.xb[..tq * e],
        ); // (Tq, E)
        s.acts.invalidate();
        project(&b.w_gate, &s.xb, tq, &mut s.acts, &mut s.hb, nt); // (Tq, n_ff)
        project(&b.w_up, &s.xb, tq, &mut s.acts, &mut s.hb2, nt); // (Tq, n_ff)
        for (g, &u) in s.hb[..tq * cfg.n_ff]
            .iter_mut()
            .zip(&s.hb2[..tq * cfg.n_ff])
        {
            *g = *g / (1.0 + (-*g).exp()) * u; // SiLU(gate) * up
        }
        s.acts.invalidate();
        project(&b.w_down, &s.hb, tq, &mut s.acts, &mut s.xb, nt); // (Tq, E)
        for (xv, ov) in s.x[..tq * e].iter_mut().zip(&s.xb[..tq * e]) {
            *xv += ov;
        }
    }

    if m.split < n_blocks {
        return Ok(vec![s.x[..t * e].to_vec()]);
    }

    // After the last block the kept rows are x[..R] (compacted, or all rows when R == T).
    rms_norm(
        &s.x[..r * e],
        &m.output_norm.host,
        cfg.rms_norm_eps,
        &mut s.xb[..r * e],
    ); // (R, E)
    let nv = cfg.n_vocab;
    let mut logits = vec![0f32; r * nv]; // (R, n_vocab)
    s.acts.invalidate();
    project(&m.output, &s.xb, r, &mut s.acts, &mut logits, nt);
    if n == 1 {
        return Ok(vec![logits]);
    }
    Ok((0..n)
        .map(|i| logits[qoff[i] * nv..qoff[i + 1] * nv].to_vec())
        .collect())
}
