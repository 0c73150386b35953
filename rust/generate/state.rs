//! A session's state as bytes: its tokens and the K/V of their positions, so that a long shared
//! prompt (a system prompt, a clinical note) is computed once and restored many times.
//!
//! Layout, little-endian: magic `MED42KV\0`, version u32, KV type u32 (0 f32, 1 f16, 2 q8_0), model
//! fingerprint u64, `n_layer`, `n_head_kv`, `head_dim`, `n_tokens` (u32 each), the tokens (u32
//! each), then the cache's K/V ([`crate::model::KvCache::write_state`]). Everything is checked
//! before the cache is touched.

use crate::error::{Error, Result};
use crate::model::Llama;

use super::Session;

const MAGIC: &[u8; 8] = b"MED42KV\0";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 * 2 + 8 + 4 * 4;

fn kv_type_code(name: &str) -> u32 {
    match name {
        "f32" => 0,
        "f16" => 1,
        "q8_0" => 2,
        _ => u32::MAX,
    }
}

fn kv_type_name(code: u32) -> String {
    match code {
        0 => "f32".into(),
        1 => "f16".into(),
        2 => "q8_0".into(),
        c => format!("unknown type {c}"),
    }
}

/// FNV-1a over the model's shape, its tensor table and its norm weights: two files with the same
/// architecture but other weights (another fine-tune, another quantization) differ.
pub fn fingerprint(m: &Llama) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let c = &m.config;
    for v in [
        c.n_vocab,
        c.n_embd,
        c.n_layer,
        c.n_head,
        c.n_head_kv,
        c.head_dim,
        c.n_ff,
    ] {
        eat(&(v as u64).to_le_bytes());
    }
    eat(&c.rope_freq_base.to_le_bytes());
    for t in &m.file.tensors {
        eat(t.name.as_bytes());
        eat(&(t.dtype as u32).to_le_bytes());
        for d in &t.dims {
            eat(&d.to_le_bytes());
        }
        eat(&t.n_bytes.to_le_bytes());
    }
    for x in m
        .output_norm
        .host
        .iter()
        .chain(m.blocks.iter().flat_map(|b| b.attn_norm.host.iter()))
    {
        eat(&x.to_le_bytes());
    }
    h
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

impl Session {
    /// The session's tokens and their K/V as bytes (see the module docs).
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let m = &self.model;
        let c = &m.config;
        let n = self.tokens.len();
        let mut out = Vec::with_capacity(HEADER + 4 * n + self.cache.state_bytes());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&kv_type_code(self.model.kv_type.name()).to_le_bytes());
        out.extend_from_slice(&fingerprint(m).to_le_bytes());
        for v in [c.n_layer, c.n_head_kv, c.head_dim, n] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for t in &self.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        self.cache.write_state(&mut out)?;
        Ok(out)
    }

    /// Replace the session's tokens and cache by a state from [`Self::save_state`]. The state
    /// must come from the same model and cache type and fit this session's context; otherwise
    /// `Error::State` says why and the session is unchanged.
    pub fn load_state(&mut self, data: &[u8]) -> Result<()> {
        let bad = |d: String| Err(Error::State(d));
        if data.len() < HEADER || &data[..8] != MAGIC {
            return bad("not a med42-rs session state (the header is missing)".into());
        }
        let version = u32_at(data, 8);
        if version != VERSION {
            return bad(format!(
                "format version {version}; this build reads version {VERSION}"
            ));
        }
        let kv = u32_at(data, 12);
        if kv != kv_type_code(self.model.kv_type.name()) {
            return bad(format!(
                "it was saved from a {} KV cache and this session's cache is {}; load the model \
                 with the same kv_type",
                kv_type_name(kv),
                self.model.kv_type.name()
            ));
        }
        let m = &self.model;
        let c = &m.config;
        let fp = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
        let dims = [u32_at(data, 24), u32_at(data, 28), u32_at(data, 32)];
        let want = [c.n_layer as u32, c.n_head_kv as u32, c.head_dim as u32];
        if dims != want || fp != fingerprint(m) {
            return bad(format!(
                "it was saved from another model (layers, KV heads, head size {dims:?}; this \
                 model has {want:?}{})",
                if dims == want {
                    ", and other weights"
                } else {
                    ""
                }
            ));
        }
        let n = u32_at(data, 36) as usize;
        let tokens_end = HEADER + 4 * n;
        if data.len() < tokens_end {
            return bad(format!(
                "truncated: {n} tokens declared, the data ends first"
            ));
        }
        let tokens: Vec<u32> = (0..n).map(|i| u32_at(data, HEADER + 4 * i)).collect();
        m.check_tokens("state", &tokens)
            .map_err(|e| Error::State(e.to_string()))?;
        self.cache.read_state(n, &data[tokens_end..])?;
        self.tokens = tokens;
        Ok(())
    }
}
