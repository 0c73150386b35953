//! The memory budget checked before loading: weights + one KV cache + scratch, against what the
//! machine (or the container's cgroup limit) has available.
//!
//! On CPU the weights stay in the file mapping, so they cost page cache rather than anonymous
//! memory; but a model whose weights do not fit in RAM is re-read from disk for every token (a
//! 70B model at a few seconds per token, or the machine stalls), so they count in full.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, LlamaConfig};
use crate::kernels::KvType;

/// Prompt tokens processed per batch (the CPU forward pass's scratch is sized for this).
pub const BATCH: usize = 512;

/// An estimate of what a loaded model needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub scratch: u64,
    /// The KV cache type `kv_cache` was counted in.
    pub kv_type: KvType,
}

/// Where a tensor of the file lives when blocks `split..` are offloaded: `Some(block)` for a
/// block's tensors, `None` for the rest.
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Bytes of the file's tensors whose names `keep` accepts.
fn bytes_where(file: &GgufFile, keep: impl Fn(&str) -> bool) -> u64 {
    file.tensors
        .iter()
        .filter(|t| keep(&t.name))
        .map(|t| t.n_bytes)
        .sum()
}

/// GPU memory kept free for the CUDA context, cuBLAS's workspace and the allocator's slack.
pub const DEVICE_RESERVE: u64 = 768 << 20;

impl Estimate {
    /// Weights, one KV cache of `n_ctx` positions (K and V in `kv_type`) and batch scratch, all
    /// on the CPU.
    pub fn new(file: &GgufFile, cfg: &LlamaConfig, n_ctx: usize, kv_type: KvType) -> Self {
        Self::host(file, cfg, n_ctx, kv_type, cfg.n_layer)
    }

    /// The CPU's part when blocks `split..` are offloaded: the token embedding, the blocks
    /// `..split` and their caches (and the output matrix when nothing is offloaded).
    pub fn host(
        file: &GgufFile,
        cfg: &LlamaConfig,
        n_ctx: usize,
        kv_type: KvType,
        split: usize,
    ) -> Self {
        let all = split == cfg.n_layer;
        let weights = bytes_where(file, |name| match block_of(name) {
            Some(b) => b < split,
            None => all || !name.starts_with("output"),
        });
        Self::with_weights(cfg, n_ctx, kv_type, split, weights)
    }

    /// The device's part when blocks `split..` are offloaded: those blocks, the output norm and
    /// matrix (a copy of the token embedding when the output is tied to it), their caches, the
    /// activations of one prompt batch, one chunk of attention scores and [`DEVICE_RESERVE`].
    pub fn device(
        file: &GgufFile,
        cfg: &LlamaConfig,
        n_ctx: usize,
        kv_type: KvType,
        split: usize,
    ) -> Self {
        let tied = file.tensor_info("output.weight").is_none();
        let weights = bytes_where(file, |name| match block_of(name) {
            Some(b) => b >= split,
            None => name.starts_with("output") || (tied && name == "token_embd.weight"),
        });
        let mut est = Self::with_weights(cfg, n_ctx, kv_type, cfg.n_layer - split, weights);
        est.scratch += 2 * crate::model::SCORE_BYTES as u64 + DEVICE_RESERVE;
        est
    }

    fn with_weights(
        cfg: &LlamaConfig,
        n_ctx: usize,
        kv_type: KvType,
        n_layers: usize,
        weights: u64,
    ) -> Self {
        let kv_dim = (cfg.n_head_kv * cfg.head_dim) as u64;
        let per_pos = kv_type.bytes_per_position(cfg.n_head_kv, cfg.head_dim) as u64;
        let kv_cache = n_layers as u64 * n_ctx as u64 * per_pos;
        let b = BATCH.min(n_ctx) as u64;
        let q_dim = (cfg.n_head * cfg.head_dim) as u64;
        // activations of one batch (x, norm, q/k/v, attention out, gate/up) + logits; attention
        // itself needs only a few tiles per thread
        let per_tok = 4 * cfg.n_embd as u64 + q_dim + 2 * kv_dim + 3 * cfg.n_ff as u64;
        let scratch = b * per_tok * 4 + b * cfg.n_vocab as u64 * 4;
        Estimate {
            weights,
            kv_cache,
            scratch,
            kv_type,
        }
    }

    /// The same with KV caches for `n` sequences decoded in parallel.
    pub fn with_sequences(mut self, n: usize) -> Self {
        self.kv_cache = self.kv_cache.saturating_mul(n as u64);
        self
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.scratch
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Bytes of memory available to this process: `MED42_MEMORY_AVAILABLE` (bytes, for containers
/// whose limits the OS does not report, and for tests), else the smaller of Linux's `MemAvailable`
/// and the cgroup v2 limit minus current use. `None` where neither can be read (the check is then
/// skipped).
pub fn available() -> Option<u64> {
    if let Ok(v) = std::env::var("MED42_MEMORY_AVAILABLE") {
        if let Ok(n) = v.trim().parse::<u64>() {
            return Some(n);
        }
    }
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    // Page cache charged to the cgroup (e.g. this very model file, read before) is reclaimable:
    // it does not count as used.
    let file_pages = std::fs::read_to_string("/sys/fs/cgroup/memory.stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("file "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur.saturating_sub(file_pages))),
        _ => None,
    };
    match (mem, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Refuse to load when the estimate exceeds what is available (see [`available`]).
pub fn check(est: &Estimate, n_ctx: usize) -> Result<()> {
    let Some(avail) = available() else {
        return Ok(());
    };
    if est.total() <= avail {
        return Ok(());
    }
    Err(Error::InsufficientMemory {
        needed_gib: gib(est.total()),
        available_gib: gib(avail),
        detail: format!(
            "weights {:.1} GiB + KV cache {:.1} GiB for n_ctx {n_ctx} ({}) + scratch {:.1} GiB",
            gib(est.weights),
            gib(est.kv_cache),
            est.kv_type,
            gib(est.scratch)
        ),
    })
}

/// Free memory of `device` in bytes: `MED42_GPU_MEMORY_AVAILABLE` (bytes; for tests), else what
/// the CUDA driver reports. `None` where it cannot be read (Metal; the check is then skipped).
pub fn device_available(device: &candle_core::Device) -> Option<u64> {
    if let Ok(v) = std::env::var("MED42_GPU_MEMORY_AVAILABLE") {
        if let Ok(n) = v.trim().parse::<u64>() {
            return Some(n);
        }
    }
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = device {
        return d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64);
    }
    let _ = device;
    None
}

/// Refuse to offload `n_gpu_layers` blocks when their part of the model does not fit the device's
/// free memory.
pub fn check_device(
    est: &Estimate,
    device: &candle_core::Device,
    name: &str,
    n_gpu_layers: usize,
) -> Result<()> {
    let Some(avail) = device_available(device) else {
        return Ok(());
    };
    if est.total() <= avail {
        return Ok(());
    }
    Err(Error::InsufficientDeviceMemory {
        device: name.to_string(),
        n_gpu_layers,
        needed_gib: gib(est.total()),
        available_gib: gib(avail),
        detail: format!(
            "weights {:.1} GiB + KV cache {:.1} GiB ({}) + activations and CUDA workspace {:.1} GiB",
            gib(est.weights),
            gib(est.kv_cache),
            est.kv_type,
            gib(est.scratch)
        ),
    })
}
