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

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,      // (T, E) residual stream
    xb: Vec<f32>,     // (T, E) normed input / projection output
    q: Vec<f32>,      // (T, H*D)
    k: Vec<f32>,      // (T, G*D)
    v: Vec<f32>,      // (T, G*D)
    att: Vec<f32>,    // (T, H*D) attention output
    hb: Vec<f32>,     // (T, n_ff) gate, then silu(gate) * up
    hb2: Vec<f32>,    // (T, n_ff) up
    scores: Vec<f32>, // (H, L) softmax rows, one per head
    acts: ActCache,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// KV cache and scratch of one sequence on the CPU path.
pub(crate) struct NativeCache {
    n_ctx: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    s: Scratch,
}

impl NativeCache {
    pub fn new(cfg: &LlamaConfig, n_ctx: usize) -> Self {
        let per_layer = cfg.n_head_kv * n_ctx * cfg.head_dim;
        // vec![0.0; n] is a zeroed allocation: pages are committed only when written.
        NativeCache {
            n_ctx,
            k: (0..cfg.n_layer).map(|_| vec![0f32; per_layer]).collect(),
            v: (0..cfg.n_layer).map(|_| vec![0f32; per_layer]).collect(),
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

/// Run `tokens` at positions `pos..pos+T` and return logits (`Last`: 1 row, `All`: T rows).
pub(crate) fn forward(
    m: &Llama,
    tokens: &[u32],
    pos: usize,
    c: &mut NativeCache,
    which: Logits,
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Vec<f32>> {
    let cfg = &m.config;
    let nt = m.n_threads;
    let t = tokens.len();
    let (e, d) = (cfg.n_embd, cfg.head_dim);
    let (qd, kvd) = (cfg.n_head * d, cfg.n_head_kv * d);
    let l = pos + t;
    let n_ctx = c.n_ctx;
    let s = &mut c.s;
    for (buf, n) in [
        (&mut s.x, t * e),
        (&mut s.xb, t * e),
        (&mut s.q, t * qd),
        (&mut s.k, t * kvd),
        (&mut s.v, t * kvd),
        (&mut s.att, t * qd),
        (&mut s.hb, t * cfg.n_ff),
        (&mut s.hb2, t * cfg.n_ff),
        (&mut s.scores, cfg.n_head * l),
    ] {
        grow(buf, n);
    }

    m.tok_embd.gather_rows(tokens, &mut s.x[..t * e])?; // (T, E)

    // Only the last position's logits wanted: after the last block's K/V projections (which the
    // cache needs for every position), that block runs for the last position alone. Every kernel
    // gives a row the same result whatever the batch (kernels::tests), so the logits are those of
    // the full computation, bit for bit.
    let last_only = which == Logits::Last && t > 1;
    let n_blocks = m.blocks.len();
    for (li, b) in m.blocks.iter().enumerate() {
        if cancelled() {
            return Err(crate::Error::Cancelled);
        }
        let narrow = last_only && li + 1 == n_blocks;
        // the rows and first position of this block's queries, attention and feed-forward
        let (tq, pq) = if narrow { (1, pos + t - 1) } else { (t, pos) };
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
            s.acts.invalidate();
            let last = &s.xb[(t - 1) * e..t * e];
            project(&b.wq, last, 1, &mut s.acts, &mut s.q, nt); // (1, H*D)
            s.x.copy_within((t - 1) * e..t * e, 0); // the residual stream of the last position
        } else {
            project(&b.wq, &s.xb, t, &mut s.acts, &mut s.q, nt); // (T, H*D)
            project(&b.wk, &s.xb, t, &mut s.acts, &mut s.k, nt); // (T, G*D)
            project(&b.wv, &s.xb, t, &mut s.acts, &mut s.v, nt); // (T, G*D)
        }
        rope(
            &mut s.q,
            tq,
            cfg.n_head,
            d,
            cfg.n_rot,
            pq,
            &m.rope_cos,
            &m.rope_sin,
        );
        rope(
            &mut s.k,
            t,
            cfg.n_head_kv,
            d,
            cfg.n_rot,
            pos,
            &m.rope_cos,
            &m.rope_sin,
        );

        let (kc, vt) = (&mut c.k[li], &mut c.v[li]);
        for ti in 0..t {
            let p = pos + ti;
            for g in 0..cfg.n_head_kv {
                let src = &s.k[ti * kvd + g * d..ti * kvd + (g + 1) * d];
                kc[(g * n_ctx + p) * d..(g * n_ctx + p + 1) * d].copy_from_slice(src);
                for di in 0..d {
                    vt[(g * d + di) * n_ctx + p] = s.v[ti * kvd + g * d + di];
                }
            }
        }
        attention(
            cfg,
            &s.q,
            kc,
            vt,
            n_ctx,
            pq,
            tq,
            &mut s.scores,
            &mut s.att,
            nt,
        ); // (Tq, H*D)

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

    let (first, rows) = match which {
        Logits::Last if last_only => (0, 1), // the last block left that row first
        Logits::Last => (t - 1, 1),
        Logits::All => (0, t),
    };
    let xs = &s.x[first * e..(first + rows) * e]; // (rows, E)
    rms_norm(
        xs,
        &m.output_norm.host,
        cfg.rms_norm_eps,
        &mut s.xb[..rows * e],
    );
    let mut logits = vec![0f32; rows * cfg.n_vocab]; // (rows, n_vocab)
    s.acts.invalidate();
    project(&m.output, &s.xb, rows, &mut s.acts, &mut logits, nt);
    Ok(logits)
}
