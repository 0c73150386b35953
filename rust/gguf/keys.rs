//! GGUF metadata keys, spelled as gguf-py's `Keys` spells them. `{arch}` is the value of
//! `general.architecture`.

pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
pub const GENERAL_ALIGNMENT: &str = "general.alignment";
pub const GENERAL_NAME: &str = "general.name";
pub const GENERAL_BASENAME: &str = "general.basename";
pub const GENERAL_LICENSE: &str = "general.license";
pub const GENERAL_LICENSE_NAME: &str = "general.license.name";
pub const GENERAL_LICENSE_LINK: &str = "general.license.link";
pub const GENERAL_FILE_TYPE: &str = "general.file_type";
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";

pub const CONTEXT_LENGTH: &str = "{arch}.context_length";
pub const EMBEDDING_LENGTH: &str = "{arch}.embedding_length";
pub const BLOCK_COUNT: &str = "{arch}.block_count";
pub const FEED_FORWARD_LENGTH: &str = "{arch}.feed_forward_length";
pub const VOCAB_SIZE: &str = "{arch}.vocab_size";
pub const HEAD_COUNT: &str = "{arch}.attention.head_count";
pub const HEAD_COUNT_KV: &str = "{arch}.attention.head_count_kv";
pub const LAYERNORM_RMS_EPS: &str = "{arch}.attention.layer_norm_rms_epsilon";
pub const KEY_LENGTH: &str = "{arch}.attention.key_length";
pub const VALUE_LENGTH: &str = "{arch}.attention.value_length";
pub const ROPE_DIMENSION_COUNT: &str = "{arch}.rope.dimension_count";
pub const ROPE_FREQ_BASE: &str = "{arch}.rope.freq_base";
pub const ROPE_SCALE_LINEAR: &str = "{arch}.rope.scale_linear";
pub const ROPE_SCALING_TYPE: &str = "{arch}.rope.scaling.type";
pub const ROPE_SCALING_FACTOR: &str = "{arch}.rope.scaling.factor";

pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const TOKENIZER_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
pub const TOKENIZER_EOM_ID: &str = "tokenizer.ggml.eom_token_id";
pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const TOKENIZER_SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Substitute the architecture into a `{arch}` key.
pub fn arch_key(template: &str, arch: &str) -> String {
    template.replace("{arch}", arch)
}
