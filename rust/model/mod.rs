//! The Llama model: loading and checking every tensor, the KV cache, and the forward pass.
//!
//! One model, two implementations of the same forward pass:
//! - [`cpu`]: the CPU path over plain f32 buffers and the project's kernels (no per-op allocation;
//!   weights read in place from the mapping). Used whenever the device is `cpu`.
//! - [`candle`](self::candle): the same steps on candle tensors, for CUDA and Metal (also runnable
//!   on CPU with `backend="candle"`, which is how the tests keep it honest on a machine without a
//!   GPU).

mod candle;
pub(crate) use candle::SCORE_BYTES;
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
    /// Blocks run by the candle backend (on the GPU), counted from the last block, as llama.cpp's
    /// `-ngl`; the blocks before them run on the CPU with the native kernels. `None` (default)
    /// or more than the model has: all of them. Needs the candle backend (the default on a GPU).
    pub n_gpu_layers: Option<usize>,
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
            n_gpu_layers: None,
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
    /// The first block run by the candle backend: blocks `..split` run on the CPU (native
    /// kernels, weights read from the mapping), blocks `split..`, the output norm and the output
    /// matrix on [`Self::device`]. `n_layer` on the native backend, 0 when every block is
    /// offloaded. The token embedding is always gathered on the CPU, from the mapping.
    pub split: usize,
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
    /// Saved bytes per position and layer (K and V in the cache type).
    layer_state_bytes: usize,
    n_layer: usize,
}

enum KvStore {
    /// Every block on the CPU path.
    Native(Box<cpu::NativeCache>),
    /// Every block on the candle path.
    Candle(candle::CandleCache),
    /// Blocks `..split` on the CPU path, the rest on the candle path (layer offload).
    Split(Box<cpu::NativeCache>, candle::CandleCache),
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
            KvStore::Candle(_) | KvStore::Split(..) => self.full_state_bytes(self.len),
        }
    }

    /// Append the K/V of the cached positions to `out` (CPU backend).
    pub fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        match &self.store {
            KvStore::Native(c) => {
                c.kv.write_state(self.len, out);
                Ok(())
            }
            KvStore::Candle(d) => d.save(self.len, out),
            KvStore::Split(c, d) => {
                c.kv.write_state(self.len, out);
                d.save(self.len, out)
            }
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
        let want = self.full_state_bytes(n);
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
            KvStore::Candle(_) | KvStore::Split(..) => {
                if data.len() != want {
                    return Err(Error::State(format!(
                        "its K/V data has {} bytes, {n} positions need {want}",
                        data.len()
                    )));
                }
                match &mut self.store {
                    KvStore::Candle(d) => d.restore(n, data)?,
                    KvStore::Split(c, d) => {
                        let host = c.kv.state_bytes(n);
                        c.kv.read_state(n, &data[..host]);
                        d.restore(n, &data[host..])?;
                    }
                    KvStore::Native(_) => unreachable!("matched above"),
                }
                self.len = n;
                Ok(())
            }
        }
    }

    /// Bytes of a saved state of `n` positions, every layer (the same on both paths).
    fn full_state_bytes(&self, n: usize) -> usize {
        self.layer_state_bytes * self.n_layer * n
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
        let mut backend = match (opts.backend, device.is_cpu()) {
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
        let split = match (backend, opts.n_gpu_layers) {
            (Backend::Native, Some(n)) if n > 0 => {
                return Err(Error::arg(
                    "n_gpu_layers",
                    format!(
                        "{n} blocks cannot be offloaded to device `{}`: offloading needs a GPU \
                         device (\"cuda\", \"cuda:N\", \"metal\"); leave n_gpu_layers unset on the CPU",
                        opts.device
                    ),
                ))
            }
            (Backend::Native, _) => cfg.n_layer,
            (Backend::Candle, n) => cfg.n_layer - n.unwrap_or(cfg.n_layer).min(cfg.n_layer),
        };
        if split == cfg.n_layer {
            // nothing offloaded: the whole model runs on the CPU path
            backend = Backend::Native;
        }
        // where blocks `split..`, the output norm and the output matrix live
        let head_device = if split < cfg.n_layer {
            device.clone()
        } else {
            Device::Cpu
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
        let est = crate::memory::Estimate::host(&file, &cfg, n_ctx, opts.kv_type, split);
        let check = opts.check_memory;
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
        if opts.check_memory && split < cfg.n_layer {
            let dev_est = crate::memory::Estimate::device(&file, &cfg, n_ctx, opts.kv_type, split)
                .with_sequences(n_parallel);
            crate::memory::check_device(&dev_est, &device, &opts.device, cfg.n_layer - split)?;
        }

        // Weights on the CPU are views of the mapping; on a GPU they are uploaded as quantized
        // tensors (never dequantized).
        let w = |name: &str, n_in: usize, n_out: usize, dev: &Device| -> Result<Arc<QWeight>> {
            QWeight::load(&file, required(&file, name)?, n_in, n_out, dev)
                .map(Arc::new)
                .map_err(|err| candle::device_error(err, &opts.device))
        };
        let v = |name: &str, dev: &Device| -> Result<Vector> {
            let host = load_vector(&file, required(&file, name)?, e)?;
            let dev = Tensor::from_slice(&host, e, dev)
                .map_err(|err| candle::device_error(err.into(), &opts.device))?;
            Ok(Vector { host, dev })
        };

        let tok_embd = w("token_embd.weight", e, cfg.n_vocab, &Device::Cpu)?;
        let output = match (out_info, head_device.is_cpu()) {
            (Some(_), _) => w("output.weight", e, cfg.n_vocab, &head_device)?,
            (None, true) => Arc::clone(&tok_embd), // tied embeddings
            (None, false) => w("token_embd.weight", e, cfg.n_vocab, &head_device)?,
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let dev = if i < split { &Device::Cpu } else { &device };
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: v(&p("attn_norm"), dev)?,
                wq: w(&p("attn_q"), e, q_dim, dev)?,
                wk: w(&p("attn_k"), e, kv_dim, dev)?,
                wv: w(&p("attn_v"), e, kv_dim, dev)?,
                wo: w(&p("attn_output"), q_dim, e, dev)?,
                ffn_norm: v(&p("ffn_norm"), dev)?,
                w_gate: w(&p("ffn_gate"), e, cfg.n_ff, dev)?,
                w_up: w(&p("ffn_up"), e, cfg.n_ff, dev)?,
                w_down: w(&p("ffn_down"), cfg.n_ff, e, dev)?,
            });
        }
        let output_norm = v("output_norm.weight", &head_device)?;

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
            split,
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
        let native = || cpu::NativeCache::new(&self.config, self.split, n_ctx, self.kv_type);
        let store = if self.split == self.config.n_layer {
            KvStore::Native(Box::new(native()?))
        } else if self.split == 0 {
            KvStore::Candle(candle::CandleCache::new(self, n_ctx)?)
        } else {
            KvStore::Split(Box::new(native()?), candle::CandleCache::new(self, n_ctx)?)
        };
        Ok(KvCache {
            len: 0,
            n_ctx,
            store,
            layer_state_bytes: self
                .kv_type
                .bytes_per_position(self.config.n_head_kv, self.config.head_dim),
            n_layer: self.config.n_layer,
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
        let mut items = [BatchItem {
            tokens,
            cache,
            which,
        }];
        let mut out = self.run_batch(&mut items, None, cancelled)?;
        Ok(out.pop().expect("one sequence in, one out"))
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
        self.run_batch(items, Some(scratch), cancelled)
    }

    /// The forward pass of checked items: the CPU blocks `..split` for all rows at once (weights
    /// read once), the hidden state uploaded once, then the device blocks `split..` and the output
    /// matrix for all rows at once, attention per sequence. Caches advance only on success.
    /// `scratch: None` (one item): the CPU blocks use that cache's own buffers.
    fn run_batch(
        &self,
        items: &mut [BatchItem<'_>],
        scratch: Option<&mut BatchScratch>,
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Vec<f32>>> {
        let e = self.config.n_embd;
        // every sequence's tokens in batch order (the embedding rows of a fully offloaded model)
        let ids: Vec<u32> = if self.split == 0 {
            items
                .iter()
                .flat_map(|it| it.tokens.iter().copied())
                .collect()
        } else {
            Vec::new()
        };
        let mut local = cpu::Scratch::default(); // allocates nothing until used
        let mut own: Option<&mut cpu::Scratch> = None;
        let mut natives: Vec<cpu::SeqIn<'_>> = Vec::with_capacity(items.len());
        let mut devs: Vec<candle::SeqIn<'_>> = Vec::with_capacity(items.len());
        for it in items.iter_mut() {
            let pos = it.cache.len;
            let (native, dev) = match &mut it.cache.store {
                KvStore::Native(c) => (Some(c), None),
                KvStore::Candle(d) => (None, Some(d)),
                KvStore::Split(c, d) => (Some(c), Some(d)),
            };
            if let Some(c) = native {
                let cpu::NativeCache { kv, s } = &mut **c;
                own = Some(s);
                natives.push(cpu::SeqIn {
                    tokens: it.tokens,
                    pos,
                    kv,
                    which: it.which,
                });
            }
            if let Some(d) = dev {
                devs.push(candle::SeqIn {
                    t: it.tokens.len(),
                    pos,
                    cache: d,
                    which: it.which,
                });
            }
        }
        let s: &mut cpu::Scratch = match scratch {
            Some(b) => &mut b.0,
            None => own.unwrap_or(&mut local),
        };
        let out = if devs.is_empty() {
            cpu::forward_multi(self, &mut natives, s, cancelled)?
        } else {
            if !natives.is_empty() && natives.len() != devs.len() {
                return Err(Error::arg(
                    "cache",
                    "every cache of one batch must come from this model",
                ));
            }
            // the hidden state after the CPU blocks (or the embeddings), all rows
            let hidden: Vec<f32> = if natives.is_empty() {
                let mut x = vec![0f32; ids.len() * e];
                self.tok_embd.gather_rows(&ids, &mut x)?;
                x
            } else {
                cpu::forward_multi(self, &mut natives, s, cancelled)?
                    .pop()
                    .expect("the hidden rows of every sequence, in one buffer")
            };
            drop(natives);
            candle::forward_multi(self, &hidden, &mut devs, cancelled)
                .map_err(|err| candle::device_error(err, &self.device_name()))?
        };
        for it in items.iter_mut() {
            it.cache.len += it.tokens.len();
        }
        Ok(out)
    }

    /// The device's name as the caller gave it (`cpu`, `cuda:0`, ...), for messages.
    pub fn device_name(&self) -> String {
        match self.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".into(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        }
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
