//! The CPU forward pass over plain f32 buffers.
//!
//! Buffers are row-major; `T` is the number of new tokens, `L` the number of cached positions after
//! this call, `E` = n_embd, `D` = head_dim, `H`/`G` = query/KV heads. Scratch is allocated once per
//! session and grows to the largest batch seen; nothing is allocated per token except the returned
//! logits.
//!
//! K cache per layer: `[G][n_ctx][D]` (a head's keys contiguous per position). V cache per layer:
//! `[G][D][n_ctx]` (transposed, so the weighted sum over positions is a contiguous dot product).

use crate::error::Result;
use crate::gguf::LlamaConfig;
use crate::kernels::{self, pool::pool, ActKind, QActs, SendPtr};
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
    x: Vec<f32>,      // (T, E) residual stream
    xb: Vec<f32>,     // (T, E) normed input / projection output
    q: Vec<f32>,      // (T, H*D)
    k: Vec<f32>,      // (T, G*D)
    v: Vec<f32>,      // (T, G*D)
    att: Vec<f32>,    // (T, H*D) attention output
    hb: Vec<f32>,     // (T, n_ff) gate, then silu(gate) * up
    hb2: Vec<f32>,    // (T, n_ff) up
    xq: Vec<f32>,     // (R, E) the normed rows whose queries the last block computes
    scores: Vec<f32>, // (H, L) softmax rows, one per head
    acts: ActCache,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// The K/V of one sequence on the CPU path.
pub(crate) struct NativeKv {
    n_ctx: usize,
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
}

impl NativeKv {
    pub fn new(cfg: &LlamaConfig, n_ctx: usize) -> Self {
        let per_layer = cfg.n_head_kv * n_ctx * cfg.head_dim;
        // vec![0.0; n] is a zeroed allocation: pages are committed only when written.
        NativeKv {
            n_ctx,
            k: (0..cfg.n_layer).map(|_| vec![0f32; per_layer]).collect(),
            v: (0..cfg.n_layer).map(|_| vec![0f32; per_layer]).collect(),
        }
    }
}

impl NativeKv {
    /// Bytes [`Self::write_state`] writes for `n` positions.
    pub fn state_bytes(&self, cfg: &LlamaConfig, n: usize) -> usize {
        2 * cfg.n_layer * cfg.n_head_kv * n * cfg.head_dim * 4
    }

    /// Append the K and V of positions `0..n` of every layer to `out`, little-endian f32: per
    /// layer, K as `[G][n][D]`, then V as `[G][D][n]`.
    pub fn write_state(&self, cfg: &LlamaConfig, n: usize, out: &mut Vec<u8>) {
        let (g_n, d, n_ctx) = (cfg.n_head_kv, cfg.head_dim, self.n_ctx);
        out.reserve(self.state_bytes(cfg, n));
        for (kc, vt) in self.k.iter().zip(&self.v) {
            for g in 0..g_n {
                for x in &kc[g * n_ctx * d..(g * n_ctx + n) * d] {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            for row in 0..g_n * d {
                for x in &vt[row * n_ctx..row * n_ctx + n] {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }

    /// Read what [`Self::write_state`] wrote for `n` positions (`data` holds exactly
    /// [`Self::state_bytes`]; `n <= n_ctx`).
    pub fn read_state(&mut self, cfg: &LlamaConfig, n: usize, data: &[u8]) {
        let (g_n, d, n_ctx) = (cfg.n_head_kv, cfg.head_dim, self.n_ctx);
        assert!(n <= n_ctx && data.len() == self.state_bytes(cfg, n));
        let mut vals = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for (kc, vt) in self.k.iter_mut().zip(self.v.iter_mut()) {
            for g in 0..g_n {
                for x in &mut kc[g * n_ctx * d..(g * n_ctx + n) * d] {
                    *x = vals.next().expect("length checked");
                }
            }
            for row in 0..g_n * d {
                for x in &mut vt[row * n_ctx..row * n_ctx + n] {
                    *x = vals.next().expect("length checked");
                }
            }
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
    pub fn new(cfg: &LlamaConfig, n_ctx: usize) -> Self {
        NativeCache {
            kv: NativeKv::new(cfg, n_ctx),
            s: Scratch::default(),
        }
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

/// Causal grouped-query attention of `t` new queries over `l` cached positions.
#[allow(clippy::too_many_arguments)]
fn attention(
    cfg: &LlamaConfig,
    q: &[f32],
    kc: &[f32],
    vt: &[f32],
    n_ctx: usize,
    pos: usize,
    t: usize,
    scores: &mut [f32],
    att: &mut [f32],
    nt: usize,
) {
    let (h_n, d, rep) = (cfg.n_head, cfg.head_dim, cfg.n_rep());
    let qd = h_n * d;
    let l = pos + t;
    let scale = 1.0 / (d as f32).sqrt();
    let sc = SendPtr(scores.as_mut_ptr());
    let out = SendPtr(att.as_mut_ptr());
    pool().for_chunks(nt, h_n, 1, &|heads| {
        for h in heads {
            let g = h / rep; // query head h reads KV head g (no K/V repetition)
            let kg = &kc[g * n_ctx * d..];
            let vg = &vt[g * d * n_ctx..];
            // SAFETY: head h owns scores[h*l..(h+1)*l] and the columns h*d..(h+1)*d of `att`.
            let p = unsafe { std::slice::from_raw_parts_mut(sc.get().add(h * l), l) };
            for ti in 0..t {
                let lt = pos + ti + 1; // positions this query may see
                let qh = &q[ti * qd + h * d..ti * qd + (h + 1) * d];
                let mut max = f32::NEG_INFINITY;
                for (j, pj) in p[..lt].iter_mut().enumerate() {
                    *pj = kernels::dot_f32(qh, &kg[j * d..(j + 1) * d]) * scale;
                    max = max.max(*pj);
                }
                let mut sum = 0f64;
                for pj in p[..lt].iter_mut() {
                    *pj = (*pj - max).exp();
                    sum += *pj as f64;
                }
                let inv = (1.0 / sum) as f32;
                for pj in p[..lt].iter_mut() {
                    *pj *= inv;
                }
                for di in 0..d {
                    let o = kernels::dot_f32(&vg[di * n_ctx..di * n_ctx + lt], &p[..lt]);
                    unsafe { *out.get().add(ti * qd + h * d + di) = o };
                }
            }
        }
    });
}

/// One sequence of a batched forward pass: `tokens` at positions `pos..pos+T` over its own K/V.
pub(crate) struct SeqIn<'a> {
    pub tokens: &'a [u32],
    pub pos: usize,
    pub kv: &'a mut NativeKv,
    pub which: Logits,
}

/// Run `tokens` at positions `pos..pos+T` and return logits (`Last`: 1 row, `All`: T rows).
pub(crate) fn forward(
    m: &Llama,
    tokens: &[u32],
    pos: usize,
    c: &mut NativeCache,
    which: Logits,
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Vec<f32>> {
    let NativeCache { kv, s } = c;
    let mut seqs = [SeqIn {
        tokens,
        pos,
        kv,
        which,
    }];
    let mut out = forward_multi(m, &mut seqs, s, cancelled)?;
    Ok(out.pop().expect("one sequence in, one out"))
}

/// One forward pass over several sequences: every weight matrix is read once for the rows of all
/// of them (`T` = the sum of their new tokens), attention runs per sequence over its own cache.
/// Returns each sequence's logits (`Last`: 1 row, `All`: its T rows).
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
    let l_max = seqs
        .iter()
        .map(|sq| sq.pos + sq.tokens.len())
        .max()
        .unwrap_or(0);
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
        (&mut s.scores, cfg.n_head * l_max),
    ] {
        grow(buf, len);
    }

    for (i, sq) in seqs.iter().enumerate() {
        m.tok_embd
            .gather_rows(sq.tokens, &mut s.x[off[i] * e..off[i + 1] * e])?; // (T_i, E)
    }

    let n_blocks = m.blocks.len();
    for (li, b) in m.blocks.iter().enumerate() {
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
            let n_ctx = sq.kv.n_ctx;
            let (kc, vt) = (&mut sq.kv.k[li], &mut sq.kv.v[li]);
            for r_i in 0..ti {
                let p = sq.pos + r_i;
                for g in 0..cfg.n_head_kv {
                    let src = &k_rows[r_i * kvd + g * d..r_i * kvd + (g + 1) * d];
                    kc[(g * n_ctx + p) * d..(g * n_ctx + p + 1) * d].copy_from_slice(src);
                    for di in 0..d {
                        vt[(g * d + di) * n_ctx + p] = v_rows[r_i * kvd + g * d + di];
                    }
                }
            }
            attention(
                cfg,
                &s.q[qrow[i] * qd..],
                kc,
                vt,
                n_ctx,
                sq.pos + q0,
                tqi,
                &mut s.scores,
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
