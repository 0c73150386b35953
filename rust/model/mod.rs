//! The Llama model: loading and checking every tensor, the KV cache, and the forward pass.
//!
//! One model, two implementations of the same forward pass:
//! - [`cpu`]: the CPU path over plain f32 buffers and the project's kernels (no per-op allocation;
//!   weights read in place from the mapping). Used whenever the device is `cpu`.
//! - [`candle`](self::candle): the same steps on candle tensors, for CUDA and Metal (also runnable
//!   on CPU with `backend="candle"`, which is how the tests keep it honest on a machine without a
//!   GPU).

mod candle;
mod cpu;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, LlamaConfig, TensorInfo};
use crate::kernels::{pool, KvType};
use crate::weights::{load_vector, QWeight};

/// Which positions to return logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new position: one row.
    Last,
    /// Every new position: `T` rows (scoring and evaluation).
    All,
}

/// Which implementation of the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The project's CPU path (CPU only).
    Native,
    /// candle tensors (CUDA, Metal, or CPU for cross-checking).
    Candle,
}

/// Options for loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Largest context a session may use; defaults to the trained context length.
    pub n_ctx: Option<usize>,
    /// `cpu`, `cuda[:N]` or `metal[:N]`.
    pub device: String,
    /// CPU threads for the forward pass (default: all CPUs available to the process).
    pub n_threads: Option<usize>,
    /// Force an implementation (default: native on CPU, candle on GPUs).
    pub backend: Option<Backend>,
    /// Refuse to load when weights + KV cache + scratch exceed the memory available (see
    /// [`crate::memory`]); default on.
    pub check_memory: bool,
    /// Sequences decoded in parallel, each with a KV cache of up to `n_ctx` positions (checked
    /// against memory with the rest). Default: as many as fit, at most 4.
    pub n_parallel: Option<usize>,
    /// The element type of every session's K/V cache: F16 (default, as llama.cpp), Q8_0 (half
    /// that again; the native CPU backend only) or F32.
    pub kv_type: KvType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            n_ctx: None,
            device: "cpu".into(),
            n_threads: None,
            backend: None,
            check_memory: true,
            n_parallel: None,
            kv_type: KvType::default(),
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
                             (pip install . --config-settings=build-args=\"--features python,cuda\")"
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

/// A 1-D weight on the host (CPU path) and on the device (candle path).
pub(crate) struct Vector {
    pub host: Vec<f32>,
    pub dev: Tensor,
}

/// One transformer block's weights.
pub(crate) struct Block {
    pub attn_norm: Vector,
    pub wq: Arc<QWeight>,
    pub wk: Arc<QWeight>,
    pub wv: Arc<QWeight>,
    pub wo: Arc<QWeight>,
    pub ffn_norm: Vector,
    pub w_gate: Arc<QWeight>,
    pub w_up: Arc<QWeight>,
    pub w_down: Arc<QWeight>,
}

/// A loaded Llama model: immutable, shared between sessions and threads.
pub struct Llama {
    pub config: LlamaConfig,
    pub device: Device,
    pub backend: Backend,
    /// Largest context a session may allocate.
    pub n_ctx: usize,
    /// Threads the CPU forward pass uses.
    pub n_threads: usize,
    /// Sequences the scheduler decodes in parallel (their KV caches were counted at load).
    pub n_parallel: usize,
    /// The element type of the sessions' K/V caches.
    pub kv_type: KvType,
    pub file: Arc<GgufFile>,
    pub(crate) tok_embd: Arc<QWeight>,
    pub(crate) output: Arc<QWeight>,
    pub(crate) output_norm: Vector,
    pub(crate) blocks: Vec<Block>,
    /// RoPE tables `(n_ctx, n_rot/2)`, row-major, as ggml computes them.
    pub(crate) rope_cos: Vec<f32>,
    pub(crate) rope_sin: Vec<f32>,
}

/// A per-sequence KV cache, preallocated to its context length (memory is committed by the OS as
/// positions are written).
pub struct KvCache {
    len: usize,
    n_ctx: usize,
    store: KvStore,
}

enum KvStore {
    Native(Box<cpu::NativeCache>),
    Candle(candle::CandleCache),
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

    /// Bytes of [`Self::write_state`] for the cached positions.
    pub fn state_bytes(&self) -> usize {
        match &self.store {
            KvStore::Native(c) => c.kv.state_bytes(self.len),
            KvStore::Candle(_) => 0,
        }
    }

    /// Append the K/V of the cached positions to `out` (CPU backend).
    pub fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        match &self.store {
            KvStore::Native(c) => {
                c.kv.write_state(self.len, out);
                Ok(())
            }
            KvStore::Candle(_) => Err(Error::State(
                "saving a session's state needs the native CPU backend".into(),
            )),
        }
    }

    /// Replace the cache by `n` positions read from `data` (exactly the bytes
    /// [`Self::write_state`] wrote for them).
    pub fn read_state(&mut self, n: usize, data: &[u8]) -> Result<()> {
        if n > self.n_ctx {
            return Err(Error::State(format!(
                "it holds {n} positions, more than this session's context of {}; use a session with n_ctx >= {n}",
                self.n_ctx
            )));
        }
        match &mut self.store {
            KvStore::Native(c) => {
                if data.len() != c.kv.state_bytes(n) {
                    return Err(Error::State(format!(
                        "its K/V data has {} bytes, {n} positions need {}",
                        data.len(),
                        c.kv.state_bytes(n)
                    )));
                }
                c.kv.read_state(n, data);
                self.len = n;
                Ok(())
            }
            KvStore::Candle(_) => Err(Error::State(
                "restoring a session's state needs the native CPU backend".into(),
            )),
        }
    }

    /// Keep the first `n` positions (rewind for prompt reuse).
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
        let backend = match (opts.backend, device.is_cpu()) {
            (None, true) => Backend::Native,
            (None, false) | (Some(Backend::Candle), _) => Backend::Candle,
            (Some(Backend::Native), true) => Backend::Native,
            (Some(Backend::Native), false) => {
                return Err(Error::arg(
                    "backend",
                    "the native backend runs on the CPU only",
                ))
            }
        };
        let n_ctx = opts.n_ctx.unwrap_or(cfg.n_ctx_train);
        if n_ctx == 0 || n_ctx > (1 << 20) {
            return Err(Error::arg(
                "n_ctx",
                format!("{n_ctx} is outside 1..=1048576"),
            ));
        }
        let max_threads = pool::pool().max_threads();
        let n_threads = match opts.n_threads {
            None => max_threads,
            Some(0) => return Err(Error::arg("n_threads", "must be at least 1")),
            Some(n) if n > max_threads => {
                return Err(Error::arg(
                    "n_threads",
                    format!(
                        "{n} is more than the {max_threads} CPUs this process may use; \
                         use at most {max_threads}, or leave it unset to use them all"
                    ),
                ))
            }
            Some(n) => n,
        };
        let (e, hd) = (cfg.n_embd, cfg.head_dim);
        let q_dim = cfg.n_head * hd;
        let kv_dim = cfg.n_head_kv * hd;

        // Check every tensor before loading any of them.
        let mut plan: Vec<(&TensorInfo, [u64; 2])> = Vec::new();
        plan.push((
            required(&file, "token_embd.weight")?,
            [e as u64, cfg.n_vocab as u64],
        ));
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
            for norm in ["attn_norm", "ffn_norm"] {
                required(&file, &format!("blk.{i}.{norm}.weight"))?;
            }
        }
        required(&file, "output_norm.weight")?;
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
        opts.kv_type.check_head_dim(cfg.head_dim)?;
        if opts.kv_type == KvType::Q8_0 && backend == Backend::Candle {
            return Err(Error::arg(
                "kv_type",
                "a q8_0 KV cache is read by the native CPU backend only; use \"f16\" or \"f32\" \
                 with the candle backend",
            ));
        }
        let est = crate::memory::Estimate::new(&file, &cfg, n_ctx, opts.kv_type);
        let check = opts.check_memory && device.is_cpu();
        let n_parallel = match opts.n_parallel {
            Some(0) => return Err(Error::arg("n_parallel", "must be at least 1")),
            Some(n) if n > 256 => {
                return Err(Error::arg("n_parallel", format!("{n} is more than 256")))
            }
            Some(n) => {
                if check {
                    crate::memory::check(&est.with_sequences(n), n_ctx).map_err(|e| match e {
                        Error::InsufficientMemory {
                            needed_gib,
                            available_gib,
                            detail,
                        } => Error::InsufficientMemory {
                            needed_gib,
                            available_gib,
                            detail: format!(
                                "{detail}, for each of n_parallel = {n} sequences; \
                                         lower n_parallel or n_ctx"
                            ),
                        },
                        e => e,
                    })?;
                }
                n
            }
            None if check => {
                crate::memory::check(&est, n_ctx)?;
                (1..=4)
                    .rev()
                    .find(|&n| crate::memory::check(&est.with_sequences(n), n_ctx).is_ok())
                    .unwrap_or(1)
            }
            None => 4,
        };

        let w = |name: &str, n_in: usize, n_out: usize| -> Result<Arc<QWeight>> {
            Ok(Arc::new(QWeight::load(
                &file,
                required(&file, name)?,
                n_in,
                n_out,
                &device,
            )?))
        };
        let v = |name: &str| -> Result<Vector> {
            let host = load_vector(&file, required(&file, name)?, e)?;
            let dev = Tensor::from_slice(&host, e, &device)?;
            Ok(Vector { host, dev })
        };

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
            Some(info) => Some(load_vector(&file, info, cfg.n_rot / 2)?),
            None => None,
        };
        let (rope_cos, rope_sin) = rope_tables(&cfg, n_ctx, freq_factors.as_deref());

        Ok(Llama {
            config: cfg,
            device,
            backend,
            n_ctx,
            n_threads,
            n_parallel,
            kv_type: opts.kv_type,
            file,
            tok_embd,
            output,
            output_norm,
            blocks,
            rope_cos,
            rope_sin,
        })
    }

    /// A fresh KV cache for up to `n_ctx` positions (default: the model's `n_ctx`).
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
        let store = match self.backend {
            Backend::Native => KvStore::Native(Box::new(cpu::NativeCache::new(
                &self.config,
                n_ctx,
                self.kv_type,
            )?)),
            Backend::Candle => KvStore::Candle(candle::CandleCache::new(self, n_ctx)?),
        };
        Ok(KvCache {
            len: 0,
            n_ctx,
            store,
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

    /// Check that every id is inside the vocabulary; the error names `param`.
    pub fn check_tokens(&self, param: &str, tokens: &[u32]) -> Result<()> {
        let n_vocab = self.config.n_vocab;
        match tokens.iter().find(|&&t| t as usize >= n_vocab) {
            Some(&bad) => Err(Error::arg(
                param,
                format!("token id {bad} is out of range for a vocabulary of {n_vocab}"),
            )),
            None => Ok(()),
        }
    }

    /// Run `tokens` (appended after the cached positions) and return logits, row-major
    /// `rows x n_vocab` with one row (`Last`) or `tokens.len()` rows (`All`).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Result<Vec<f32>> {
        self.forward_cancellable(tokens, cache, which, &mut || false)
    }

    /// [`Self::forward`], polling `cancelled` before every block: on cancellation the cache is left
    /// as it was before the call and `Error::Cancelled` is returned.
    pub fn forward_cancellable(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        let t = tokens.len();
        if t == 0 {
            return Err(Error::arg("tokens", "at least one token is required"));
        }
        let l = cache.len + t;
        if l > cache.n_ctx {
            return Err(Error::ContextOverflow {
                needed: l,
                n_ctx: cache.n_ctx,
            });
        }
        self.check_tokens("tokens", tokens)?;
        let pos = cache.len;
        let out = match &mut cache.store {
            KvStore::Native(c) => cpu::forward(self, tokens, pos, c, which, cancelled)?,
            KvStore::Candle(c) => candle::forward(self, tokens, pos, c, which, cancelled)?,
        };
        cache.len = l;
        Ok(out)
    }
}

/// One sequence of [`Llama::forward_batch`]: new tokens appended after its cached positions.
pub struct BatchItem<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub which: Logits,
}

/// Activation buffers of batched forward passes (the CPU path); one per scheduler, reused.
#[derive(Default)]
pub struct BatchScratch(cpu::Scratch);

impl Llama {
    /// One forward pass over several sequences, each with its own cache and positions: every
    /// weight matrix is read once for all of them (on the CPU path; the candle path runs them one
    /// after the other). Returns each sequence's logits as [`Self::forward`] would.
    ///
    /// Every item is checked before anything runs. On an error or cancellation (`cancelled` is
    /// polled before every block) no cache has changed.
    pub fn forward_batch(
        &self,
        items: &mut [BatchItem<'_>],
        scratch: &mut BatchScratch,
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Vec<f32>>> {
        for it in items.iter() {
            if it.tokens.is_empty() {
                return Err(Error::arg("tokens", "at least one token is required"));
            }
            let needed = it.cache.len + it.tokens.len();
            if needed > it.cache.n_ctx {
                return Err(Error::ContextOverflow {
                    needed,
                    n_ctx: it.cache.n_ctx,
                });
            }
            self.check_tokens("tokens", it.tokens)?;
        }
        let all_native = items
            .iter()
            .all(|it| matches!(it.cache.store, KvStore::Native(_)));
        if all_native {
            let mut seqs: Vec<cpu::SeqIn<'_>> = items
                .iter_mut()
                .map(|it| {
                    let pos = it.cache.len;
                    let KvStore::Native(c) = &mut it.cache.store else {
                        unreachable!("checked above")
                    };
                    cpu::SeqIn {
                        tokens: it.tokens,
                        pos,
                        kv: &mut c.kv,
                        which: it.which,
                    }
                })
                .collect();
            let out = cpu::forward_multi(self, &mut seqs, &mut scratch.0, cancelled)?;
            drop(seqs);
            for it in items.iter_mut() {
                it.cache.len += it.tokens.len();
            }
            return Ok(out);
        }
        let lens: Vec<usize> = items.iter().map(|it| it.cache.len).collect();
        let mut out = Vec::with_capacity(items.len());
        for it in items.iter_mut() {
            match self.forward_cancellable(it.tokens, it.cache, it.which, cancelled) {
                Ok(l) => out.push(l),
                Err(e) => {
                    for (it, &len) in items.iter_mut().zip(&lens) {
                        it.cache.len = len;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

/// cos/sin tables `(n_ctx, n_rot/2)` computed as ggml's rope cache does for `llama`: in f32,
/// `theta_0 = p`, `theta_{i+1} = theta_i * base^(-2/n_rot)`, angle `freq_scale * theta_i /
/// factor_i`.
fn rope_tables(
    cfg: &LlamaConfig,
    n_ctx: usize,
    freq_factors: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let half = cfg.n_rot / 2;
    let theta_scale = cfg.rope_freq_base.powf(-2.0 / cfg.n_rot as f32);
    let mut cos = Vec::with_capacity(n_ctx * half);
    let mut sin = Vec::with_capacity(n_ctx * half);
    for p in 0..n_ctx {
        let mut theta = p as f32;
        for i in 0..half {
            let ff = freq_factors.map_or(1.0, |f| f[i]);
            let th = cfg.rope_freq_scale * (theta / ff);
            cos.push(th.cos());
            sin.push(th.sin());
            theta *= theta_scale;
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests;
