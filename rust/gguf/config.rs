//! The typed Llama hyper-parameters, read from `llama.*` metadata keys and named as llama.cpp
//! names them.

use super::keys::{self, arch_key};
use super::{GgufFile, Metadata};
use crate::error::{Error, Result};

/// Hyper-parameters of a Llama-architecture model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `general.architecture` (always `llama` here).
    pub arch: String,
    /// Context length the model was trained with (`llama.context_length`).
    pub n_ctx_train: usize,
    /// Hidden size (`llama.embedding_length`).
    pub n_embd: usize,
    /// Number of transformer blocks (`llama.block_count`).
    pub n_layer: usize,
    /// Feed-forward size (`llama.feed_forward_length`).
    pub n_ff: usize,
    /// Query heads (`llama.attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`llama.attention.head_count_kv`; equals `n_head` when absent).
    pub n_head_kv: usize,
    /// Size of one head (`n_embd / n_head`, or `llama.attention.key_length`).
    pub head_dim: usize,
    /// Dimensions rotated by RoPE (`llama.rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// RoPE base frequency (`llama.rope.freq_base`, default 10000).
    pub rope_freq_base: f32,
    /// RoPE position scale (1 / linear scaling factor; 1.0 when unscaled).
    pub rope_freq_scale: f32,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_norm_eps: f32,
    /// Vocabulary size (`llama.vocab_size`, else the token list, else the embedding table).
    pub n_vocab: usize,
}

const ARCH_HINT: &str =
    "this engine runs Llama-architecture models (Med42, Med42-v2, Llama-2/3, SmolLM2)";

fn required(md: &Metadata, key: &str) -> Result<usize> {
    let v = md.get_u64(key)?.ok_or_else(|| Error::MissingKey {
        key: key.into(),
        hint:
            "the file was not written by a complete Llama converter; re-convert it with llama.cpp"
                .into(),
    })?;
    usize::try_from(v).map_err(|_| Error::BadKey {
        key: key.into(),
        expected: "a size that fits this platform".into(),
        found: v.to_string(),
    })
}

fn positive(key: &str, v: usize, max: usize) -> Result<usize> {
    if v == 0 || v > max {
        return Err(Error::BadKey {
            key: key.into(),
            expected: format!("a value between 1 and {max}"),
            found: v.to_string(),
        });
    }
    Ok(v)
}

impl LlamaConfig {
    /// Read and check the config of `file`. Architectures other than `llama` are refused.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.architecture()?.to_string();
        if arch != "llama" {
            return Err(Error::Unsupported(format!(
                "architecture `{arch}` (from `{}`); {ARCH_HINT}",
                keys::GENERAL_ARCHITECTURE
            )));
        }
        let md = &file.metadata;
        let k = |t: &str| arch_key(t, &arch);

        let n_embd = positive(
            &k(keys::EMBEDDING_LENGTH),
            required(md, &k(keys::EMBEDDING_LENGTH))?,
            1 << 18,
        )?;
        let n_layer = positive(
            &k(keys::BLOCK_COUNT),
            required(md, &k(keys::BLOCK_COUNT))?,
            1 << 12,
        )?;
        let n_ff = positive(
            &k(keys::FEED_FORWARD_LENGTH),
            required(md, &k(keys::FEED_FORWARD_LENGTH))?,
            1 << 20,
        )?;
        let n_head = positive(
            &k(keys::HEAD_COUNT),
            required(md, &k(keys::HEAD_COUNT))?,
            1 << 12,
        )?;
        let n_ctx_train = positive(
            &k(keys::CONTEXT_LENGTH),
            required(md, &k(keys::CONTEXT_LENGTH))?,
            1 << 24,
        )?;
        let n_head_kv = match md.get_u64(&k(keys::HEAD_COUNT_KV))? {
            Some(v) => positive(&k(keys::HEAD_COUNT_KV), v as usize, n_head)?,
            None => n_head,
        };
        if n_head % n_head_kv != 0 {
            return Err(Error::BadKey {
                key: k(keys::HEAD_COUNT_KV),
                expected: format!(
                    "a divisor of the query head count {n_head} (grouped-query attention)"
                ),
                found: n_head_kv.to_string(),
            });
        }
        let head_dim = match md.get_u64(&k(keys::KEY_LENGTH))? {
            Some(v) => positive(&k(keys::KEY_LENGTH), v as usize, 1 << 12)?,
            None => {
                if n_embd % n_head != 0 {
                    return Err(Error::BadKey {
                        key: k(keys::HEAD_COUNT),
                        expected: format!("a divisor of the embedding length {n_embd}"),
                        found: n_head.to_string(),
                    });
                }
                n_embd / n_head
            }
        };
        if let Some(v) = md.get_u64(&k(keys::VALUE_LENGTH))? {
            if v as usize != head_dim {
                return Err(Error::Unsupported(format!(
                    "`{}` = {v} differs from the key length {head_dim}",
                    k(keys::VALUE_LENGTH)
                )));
            }
        }
        let n_rot = match md.get_u64(&k(keys::ROPE_DIMENSION_COUNT))? {
            Some(v) => v as usize,
            None => head_dim,
        };
        if n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return Err(Error::BadKey {
                key: k(keys::ROPE_DIMENSION_COUNT),
                expected: format!("an even number between 2 and the head size {head_dim}"),
                found: n_rot.to_string(),
            });
        }
        let rope_freq_base = md.get_f64(&k(keys::ROPE_FREQ_BASE))?.unwrap_or(10_000.0) as f32;
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(Error::BadKey {
                key: k(keys::ROPE_FREQ_BASE),
                expected: "a positive number".into(),
                found: rope_freq_base.to_string(),
            });
        }
        let mut scale = md.get_f64(&k(keys::ROPE_SCALE_LINEAR))?.unwrap_or(1.0);
        match md.get_str(&k(keys::ROPE_SCALING_TYPE))? {
            None | Some("none") => {}
            Some("linear") => {
                scale = md.get_f64(&k(keys::ROPE_SCALING_FACTOR))?.unwrap_or(1.0);
            }
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "RoPE scaling type `{other}` (from `{}`); only linear scaling is implemented",
                    k(keys::ROPE_SCALING_TYPE)
                )))
            }
        }
        if scale == 0.0 {
            scale = 1.0; // gguf writers use 0 for "unset"
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::BadKey {
                key: k(keys::ROPE_SCALING_FACTOR),
                expected: "a positive number".into(),
                found: scale.to_string(),
            });
        }
        let rms_norm_eps = md.get_f64(&k(keys::LAYERNORM_RMS_EPS))?.ok_or_else(|| Error::MissingKey {
            key: k(keys::LAYERNORM_RMS_EPS),
            hint: "Llama GGUF files carry their RMSNorm epsilon; re-convert the model with llama.cpp".into(),
        })? as f32;
        if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0) {
            return Err(Error::BadKey {
                key: k(keys::LAYERNORM_RMS_EPS),
                expected: "a small positive number".into(),
                found: rms_norm_eps.to_string(),
            });
        }

        let n_vocab = match md.get_u64(&k(keys::VOCAB_SIZE))? {
            Some(v) => v as usize,
            None => match md.get_array(keys::TOKENIZER_TOKENS)? {
                Some(a) => a.len(),
                None => match file.tensor_info("token_embd.weight") {
                    Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                    _ => {
                        return Err(Error::MissingKey {
                            key: keys::TOKENIZER_TOKENS.into(),
                            hint: "the vocabulary size cannot be determined".into(),
                        })
                    }
                },
            },
        };
        let n_vocab = positive(&k(keys::VOCAB_SIZE), n_vocab, 1 << 22)?;
        // The output matrix has one row per vocabulary entry and the tokenizer one entry per id:
        // if the two counts disagree, sampling can pick an id the tokenizer cannot decode (or
        // the tokenizer can produce one the model has no row for). Refuse it at load.
        if let Some(a) = md.get_array(keys::TOKENIZER_TOKENS)? {
            if a.len() != n_vocab {
                return Err(Error::BadKey {
                    key: k(keys::VOCAB_SIZE),
                    expected: format!(
                        "the number of tokens in `{}` ({})",
                        keys::TOKENIZER_TOKENS,
                        a.len()
                    ),
                    found: n_vocab.to_string(),
                });
            }
        }

        Ok(LlamaConfig {
            arch,
            n_ctx_train,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_freq_base,
            rope_freq_scale: (1.0 / scale) as f32,
            rms_norm_eps,
            n_vocab,
        })
    }

    /// Query heads sharing one key/value head.
    pub fn n_rep(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    /// Bytes of an f32 KV cache holding `n_ctx` positions.
    pub fn kv_cache_bytes(&self, n_ctx: usize) -> u64 {
        2 * self.n_layer as u64 * n_ctx as u64 * (self.n_head_kv * self.head_dim) as u64 * 4
    }
}
