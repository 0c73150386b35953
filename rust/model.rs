//! The Llama forward pass.
//!
//! One `forward` function over a batch of new tokens of one sequence: embedding rows gathered from
//! the quantized table, then per block RMSNorm → Q/K/V → RoPE (ggml "normal" mode: adjacent pairs,
//! as llama.cpp applies it for `llama`) → grouped-query attention over the KV cache without
//! repeating K/V → output projection → RMSNorm → SwiGLU feed-forward; final RMSNorm and the output
//! matrix (the token embedding when `output.weight` is absent). Shapes are noted after every reshape;
//! `T` is the number of new tokens, `L` the number of cached positions after this call.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, LlamaConfig, TensorInfo};
use crate::weights::{load_vector, QWeight};

/// One transformer block's weights.
struct Block {
    attn_norm: Tensor,
    wq: Arc<QWeight>,
    wk: Arc<QWeight>,
    wv: Arc<QWeight>,
    wo: Arc<QWeight>,
    ffn_norm: Tensor,
    w_gate: Arc<QWeight>,
    w_up: Arc<QWeight>,
    w_down: Arc<QWeight>,
}

/// Which positions to return logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new position: `(1, n_vocab)`.
    Last,
    /// Every new position: `(T, n_vocab)` (scoring and evaluation).
    All,
}

/// Options for loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Largest context a session may use; defaults to the trained context length.
    pub n_ctx: Option<usize>,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    pub device: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            n_ctx: None,
            device: "cpu".into(),
        }
    }
}

/// Resolve a device name, with an error naming the build feature a missing backend needs.
pub fn device_from_name(name: &str) -> Result<Device> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => (
            k,
            n.parse::<usize>().map_err(|_| {
                Error::arg(
                    "device",
                    format!("`{name}`: the part after ':' must be a GPU index"),
                )
            })?,
        ),
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !cfg!(feature = "cuda") {
                return Err(Error::Device {
                    device: name.into(),
                    detail: "this build has no CUDA support; build med42-rs with the cargo feature `cuda` \
                             (e.g. `pip install . --config-settings=build-args=--features=python,cuda`)"
                        .into(),
                });
            }
            Device::new_cuda(ordinal).map_err(|e| Error::Device {
                device: name.into(),
                detail: e.to_string(),
            })
        }
        "metal" => {
            if !cfg!(feature = "metal") {
                return Err(Error::Device {
                    device: name.into(),
                    detail: "this build has no Metal support; build med42-rs on macOS with the cargo feature `metal`"
                        .into(),
                });
            }
            Device::new_metal(ordinal).map_err(|e| Error::Device {
                device: name.into(),
                detail: e.to_string(),
            })
        }
        other => Err(Error::arg(
            "device",
            format!("unknown device `{other}`; use \"cpu\", \"cuda\", \"cuda:N\" or \"metal\""),
        )),
    }
}

/// A loaded Llama model: immutable, shared between sessions and threads.
pub struct Llama {
    pub config: LlamaConfig,
    pub device: Device,
    /// Largest context a session may allocate.
    pub n_ctx: usize,
    pub file: Arc<GgufFile>,
    tok_embd: Arc<QWeight>,
    output: Arc<QWeight>,
    output_norm: Tensor,
    blocks: Vec<Block>,
    /// RoPE tables `(n_ctx, n_rot/2)`.
    rope_cos: Tensor,
    rope_sin: Tensor,
}

/// A per-sequence KV cache, preallocated to its context length.
pub struct KvCache {
    /// Per layer `(n_head_kv, n_ctx, head_dim)`.
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    n_ctx: usize,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forget everything (the memory stays allocated for reuse).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keep the first `n` positions (rewind for prompt reuse). `n` larger than the current length
    /// is an error.
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.len {
            return Err(Error::arg(
                "n",
                format!("cannot truncate a cache of {} positions to {n}", self.len),
            ));
        }
        self.len = n;
        Ok(())
    }
}

fn required<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    file.tensor_info(name).ok_or_else(|| {
        Error::tensor(
            name,
            "is missing from the file; the file is incomplete or not a Llama model",
        )
    })
}

impl Llama {
    /// Map `paths` (one file, or byte-split parts in order) and load the model.
    pub fn load(paths: &[PathBuf], opts: &LoadOptions) -> Result<Self> {
        let file = Arc::new(GgufFile::open(paths)?);
        Self::from_gguf(file, opts)
    }

    /// Load from an opened GGUF file. Every tensor is checked (presence, shape, type) before any
    /// tensor memory is touched or uploaded.
    pub fn from_gguf(file: Arc<GgufFile>, opts: &LoadOptions) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(&file)?;
        let device = device_from_name(&opts.device)?;
        let n_ctx = opts.n_ctx.unwrap_or(cfg.n_ctx_train);
        if n_ctx == 0 || n_ctx > (1 << 20) {
            return Err(Error::arg(
                "n_ctx",
                format!("{n_ctx} is outside 1..=1048576"),
            ));
        }
        let (e, hd) = (cfg.n_embd, cfg.head_dim);
        let q_dim = cfg.n_head * hd;
        let kv_dim = cfg.n_head_kv * hd;

        // Check every tensor before loading any of them.
        let mut plan: Vec<(&TensorInfo, [u64; 2])> = Vec::new();
        let tok = required(&file, "token_embd.weight")?;
        plan.push((tok, [e as u64, cfg.n_vocab as u64]));
        let out_info = file.tensor_info("output.weight");
        if let Some(o) = out_info {
            plan.push((o, [e as u64, cfg.n_vocab as u64]));
        }
        for i in 0..cfg.n_layer {
            for (suffix, shape) in [
                ("attn_q", [e, q_dim]),
                ("attn_k", [e, kv_dim]),
                ("attn_v", [e, kv_dim]),
                ("attn_output", [q_dim, e]),
                ("ffn_gate", [e, cfg.n_ff]),
                ("ffn_up", [e, cfg.n_ff]),
                ("ffn_down", [cfg.n_ff, e]),
            ] {
                let info = required(&file, &format!("blk.{i}.{suffix}.weight"))?;
                plan.push((info, [shape[0] as u64, shape[1] as u64]));
            }
        }
        for (info, shape) in &plan {
            if info.dims != shape {
                return Err(Error::tensor(
                    &info.name,
                    format!(
                        "has shape {:?}, but the config (n_embd {e}, n_head {}, n_head_kv {}, n_ff {}, n_vocab {}) needs {shape:?}",
                        info.dims, cfg.n_head, cfg.n_head_kv, cfg.n_ff, cfg.n_vocab
                    ),
                ));
            }
            if !info.dtype.is_supported() {
                return Err(crate::weights::unsupported_type(&info.name, info.dtype));
            }
        }
        if let Some(extra) = file.tensors.iter().find(|t| {
            t.name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= cfg.n_layer)
        }) {
            return Err(Error::tensor(
                &extra.name,
                format!("belongs to a block beyond `block_count` = {}", cfg.n_layer),
            ));
        }

        let w = |name: &str, n_in: usize, n_out: usize| -> Result<Arc<QWeight>> {
            Ok(Arc::new(QWeight::load(
                &file,
                required(&file, name)?,
                n_in,
                n_out,
                &device,
            )?))
        };
        let v = |name: &str| load_vector(&file, required(&file, name)?, e, &device);

        let tok_embd = w("token_embd.weight", e, cfg.n_vocab)?;
        let output = match out_info {
            Some(_) => w("output.weight", e, cfg.n_vocab)?,
            None => Arc::clone(&tok_embd), // tied embeddings
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: v(&p("attn_norm"))?,
                wq: w(&p("attn_q"), e, q_dim)?,
                wk: w(&p("attn_k"), e, kv_dim)?,
                wv: w(&p("attn_v"), e, kv_dim)?,
                wo: w(&p("attn_output"), q_dim, e)?,
                ffn_norm: v(&p("ffn_norm"))?,
                w_gate: w(&p("ffn_gate"), e, cfg.n_ff)?,
                w_up: w(&p("ffn_up"), e, cfg.n_ff)?,
                w_down: w(&p("ffn_down"), cfg.n_ff, e)?,
            });
        }
        let output_norm = v("output_norm.weight")?;

        let freq_factors = match file.tensor_info("rope_freqs.weight") {
            Some(info) => {
                let t = load_vector(&file, info, cfg.n_rot / 2, &Device::Cpu)?;
                Some(t.to_vec1::<f32>()?)
            }
            None => None,
        };
        let (rope_cos, rope_sin) = rope_tables(&cfg, n_ctx, freq_factors.as_deref(), &device)?;

        Ok(Llama {
            config: cfg,
            device,
            n_ctx,
            file,
            tok_embd,
            output,
            output_norm,
            blocks,
            rope_cos,
            rope_sin,
        })
    }

    /// A fresh KV cache for up to `n_ctx` positions (default: the model's `n_ctx`). Memory is
    /// reserved lazily by the OS as positions are written.
    pub fn new_cache(&self, n_ctx: Option<usize>) -> Result<KvCache> {
        let n_ctx = n_ctx.unwrap_or(self.n_ctx);
        if n_ctx == 0 || n_ctx > self.n_ctx {
            return Err(Error::arg(
                "n_ctx",
                format!(
                    "{n_ctx} is outside 1..={} (the context the model was loaded with)",
                    self.n_ctx
                ),
            ));
        }
        let c = &self.config;
        let shape = (c.n_head_kv, n_ctx, c.head_dim);
        let mut k = Vec::with_capacity(c.n_layer);
        let mut v = Vec::with_capacity(c.n_layer);
        for _ in 0..c.n_layer {
            k.push(Tensor::zeros(shape, DType::F32, &self.device)?);
            v.push(Tensor::zeros(shape, DType::F32, &self.device)?);
        }
        Ok(KvCache {
            k,
            v,
            len: 0,
            n_ctx,
        })
    }

    /// Bytes of weights read per generated token (for bandwidth figures).
    pub fn weight_bytes_per_token(&self) -> usize {
        let per_block: usize = self
            .blocks
            .iter()
            .map(|b| {
                [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down]
                    .iter()
                    .map(|w| w.n_bytes())
                    .sum::<usize>()
            })
            .sum();
        per_block + self.output.n_bytes()
    }

    /// True when every matrix is read from the file mapping (no private copies).
    pub fn all_weights_mapped(&self) -> bool {
        let mut ws: Vec<&Arc<QWeight>> = vec![&self.tok_embd, &self.output];
        for b in &self.blocks {
            ws.extend([&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down]);
        }
        ws.iter().all(|w| w.is_mapped())
    }

    /// Run `tokens` (appended after the cached positions) and return logits `(1 or T, n_vocab)`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Result<Tensor> {
        let c = &self.config;
        let t = tokens.len();
        if t == 0 {
            return Err(Error::arg("tokens", "at least one token is required"));
        }
        let pos = cache.len;
        let l = pos + t;
        if l > cache.n_ctx {
            return Err(Error::ContextOverflow {
                needed: l,
                n_ctx: cache.n_ctx,
            });
        }
        if cache.k.len() != c.n_layer {
            return Err(Error::arg(
                "cache",
                "the KV cache belongs to a different model",
            ));
        }
        let (hd, n_head, n_kv, n_rep) = (c.head_dim, c.n_head, c.n_head_kv, c.n_rep());
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = self.tok_embd.embedding(tokens, &self.device)?; // (T, n_embd)
        let cos = self.rope_cos.narrow(0, pos, t)?; // (T, n_rot/2)
        let sin = self.rope_sin.narrow(0, pos, t)?;
        let mask = if t > 1 {
            Some(causal_mask(t, pos, &self.device)?)
        } else {
            None
        }; // (T, L)

        for (i, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, c.rms_norm_eps)?; // (T, n_embd)
            let q = b.wq.forward(&h)?; // (T, n_head*hd)
            let k = b.wk.forward(&h)?; // (T, n_kv*hd)
            let v = b.wv.forward(&h)?; // (T, n_kv*hd)

            let q = q
                .reshape((1, t, n_head, hd))?
                .transpose(1, 2)?
                .contiguous()?; // (1, n_head, T, hd)
            let k = k.reshape((1, t, n_kv, hd))?.transpose(1, 2)?.contiguous()?; // (1, n_kv, T, hd)
            let v = v.reshape((t, n_kv, hd))?.transpose(0, 1)?.contiguous()?; // (n_kv, T, hd)
            let q = self.rope(&q, &cos, &sin)?.squeeze(0)?; // (n_head, T, hd)
            let k = self.rope(&k, &cos, &sin)?.squeeze(0)?; // (n_kv, T, hd)

            cache.k[i].slice_set(&k, 1, pos)?;
            cache.v[i].slice_set(&v, 1, pos)?;
            let kc = cache.k[i].narrow(1, 0, l)?; // (n_kv, L, hd), strided view of the cache
            let vc = cache.v[i].narrow(1, 0, l)?; // (n_kv, L, hd)

            // Grouped-query attention: query head g*n_rep + r reads KV head g. Group the query
            // heads instead of repeating K/V.
            let q = q.reshape((n_kv, n_rep * t, hd))?; // (n_kv, n_rep*T, hd)
            let att = (q.matmul(&kc.t()?)? * scale)?; // (n_kv, n_rep*T, L)
            let att = match &mask {
                Some(m) => att
                    .reshape((n_kv, n_rep, t, l))? // (n_kv, n_rep, T, L)
                    .broadcast_add(m)?
                    .reshape((n_kv, n_rep * t, l))?, // (n_kv, n_rep*T, L)
                None => att,
            };
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let o = att.matmul(&vc)?; // (n_kv, n_rep*T, hd)
            let o = o
                .reshape((n_head, t, hd))? // (n_head, T, hd)
                .transpose(0, 1)? // (T, n_head, hd)
                .reshape((t, n_head * hd))?; // (T, n_head*hd)
            x = (x + b.wo.forward(&o)?)?; // (T, n_embd)

            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, c.rms_norm_eps)?; // (T, n_embd)
            let g = b.w_gate.forward(&h)?; // (T, n_ff)
            let u = b.w_up.forward(&h)?; // (T, n_ff)
            let f = (candle_nn::ops::silu(&g)? * u)?; // (T, n_ff)
            x = (x + b.w_down.forward(&f)?)?; // (T, n_embd)
        }
        cache.len = l;

        let x = match which {
            Logits::Last => x.narrow(0, t - 1, 1)?, // (1, n_embd)
            Logits::All => x,                       // (T, n_embd)
        };
        let x = candle_nn::ops::rms_norm(&x.contiguous()?, &self.output_norm, c.rms_norm_eps)?;
        self.output.forward(&x) // (1 or T, n_vocab)
    }

    /// Apply RoPE to `x` `(1, heads, T, hd)` on its first `n_rot` dimensions.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (n_rot, hd) = (self.config.n_rot, self.config.head_dim);
        if n_rot == hd {
            return Ok(candle_nn::rotary_emb::rope_i(x, cos, sin)?);
        }
        let rot = x.narrow(D::Minus1, 0, n_rot)?.contiguous()?;
        let pass = x.narrow(D::Minus1, n_rot, hd - n_rot)?;
        let rot = candle_nn::rotary_emb::rope_i(&rot, cos, sin)?;
        Ok(Tensor::cat(&[&rot, &pass], D::Minus1)?.contiguous()?)
    }
}

/// cos/sin tables `(n_ctx, n_rot/2)`: `theta(p, i) = p * freq_scale * base^(-2i/n_rot) / factor_i`.
fn rope_tables(
    cfg: &LlamaConfig,
    n_ctx: usize,
    freq_factors: Option<&[f32]>,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = cfg.n_rot / 2;
    let base = cfg.rope_freq_base as f64;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| {
            let f = base.powf(-2.0 * i as f64 / cfg.n_rot as f64);
            match freq_factors {
                Some(ff) => f / ff[i] as f64,
                None => f,
            }
        })
        .collect();
    let mut cos = Vec::with_capacity(n_ctx * half);
    let mut sin = Vec::with_capacity(n_ctx * half);
    for p in 0..n_ctx {
        let p = p as f64 * cfg.rope_freq_scale as f64;
        for f in &inv_freq {
            let th = p * f;
            cos.push(th.cos() as f32);
            sin.push(th.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (n_ctx, half), device)?,
        Tensor::from_vec(sin, (n_ctx, half), device)?,
    ))
}

/// Additive causal mask `(T, pos+T)`: new token `i` (at absolute position `pos+i`) sees keys
/// `0..=pos+i`.
fn causal_mask(t: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let l = pos + t;
    let mut m = vec![0f32; t * l];
    for i in 0..t {
        for j in (pos + i + 1)..l {
            m[i * l + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (t, l), device)?)
}
