"""Test assets built here: tiny random Llama GGUF files written with PyPI's ``gguf``, K-quant files
made with llama.cpp's own quantizer, and an independent float64 numpy reference forward pass.

Nothing in this module imports med42_rs: it is the oracle side.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType


@dataclass
class TinyConfig:
    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 512
    n_vocab: int = 384
    n_ctx: int = 256
    rope_base: float = 10000.0
    eps: float = 1e-5
    std: float = 0.2
    # Std of Q/K weights when different from ``std`` (large Q/K make attention position-sensitive,
    # so a RoPE bug changes the output).
    std_qk: float | None = None
    tied: bool = False
    seed: int = 0
    name: str = "tiny-llama"
    extra_kv: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def spm_vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """A Llama-2-style vocabulary: <unk>, <s>, </s>, 256 byte tokens, then word pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = ["▁"] + [f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    pieces += ["▁the", "▁of", "▁and", "▁patient", "▁dose", "in", "er", "on", "at", "en"]
    i = 0
    while len(tokens) + len(pieces) < n_vocab:
        pieces.append(f"▁w{i}")
        i += 1
    pieces = pieces[: n_vocab - len(tokens)]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


def random_weights(cfg: TinyConfig) -> dict[str, np.ndarray]:
    """Weights in numpy layout ``(n_out, n_in)``; norms near 1."""
    rng = np.random.default_rng(cfg.seed)
    e, hd = cfg.n_embd, cfg.head_dim
    qd, kvd = cfg.n_head * hd, cfg.n_head_kv * hd

    def mat(rows: int, cols: int, std: float | None = None) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * (std or cfg.std)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w: dict[str, np.ndarray] = {"token_embd.weight": mat(cfg.n_vocab, e)}
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(e)
        w[p + "attn_q.weight"] = mat(qd, e, cfg.std_qk)
        w[p + "attn_k.weight"] = mat(kvd, e, cfg.std_qk)
        w[p + "attn_v.weight"] = mat(kvd, e)
        w[p + "attn_output.weight"] = mat(e, qd)
        w[p + "ffn_norm.weight"] = norm(e)
        w[p + "ffn_gate.weight"] = mat(cfg.n_ff, e)
        w[p + "ffn_up.weight"] = mat(cfg.n_ff, e)
        w[p + "ffn_down.weight"] = mat(e, cfg.n_ff)
    w["output_norm.weight"] = norm(e)
    if not cfg.tied:
        w["output.weight"] = mat(cfg.n_vocab, e)
    return w


def write_llama_gguf(
    path: Path,
    cfg: TinyConfig,
    weights: dict[str, np.ndarray] | None = None,
    qtype: Any = Q.F32,
    tokenizer: bool = True,
    split_max_tensors: int = 0,
    vocab: tuple[list[str], list[float], list[int]] | None = None,
) -> Path:
    """Write a complete Llama GGUF. 2-D weights are stored as ``qtype``; 1-D ones as F32.

    With ``split_max_tensors`` gguf-py writes gguf-split shards ``STEM-0000i-of-0000n.gguf`` next
    to ``path`` instead (``path`` itself is not written). ``vocab`` (tokens, scores, types) replaces
    the generated SentencePiece vocabulary."""
    weights = weights if weights is not None else random_weights(cfg)
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_name(cfg.name)
    w.add_context_length(cfg.n_ctx)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.eps)
    w.add_file_type(0 if qtype == Q.F32 else 1 if qtype == Q.F16 else 7)
    if tokenizer:
        tokens, scores, types = vocab or spm_vocab(cfg.n_vocab)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    for k, v in cfg.extra_kv.items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        else:
            w.add_float32(k, float(v))
    for name, arr in weights.items():
        if arr.ndim == 1 or qtype in (Q.F32,):
            w.add_tensor(name, arr.astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, arr.astype(np.float16, copy=False))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_cpp_quantize(src: Path, dst: Path, ftype_name: str, threads: int = 2) -> Path:
    """Quantize ``src`` with llama.cpp's quantizer (``ftype_name`` like ``Q4_K_M``)."""
    import llama_cpp

    quiet_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({ftype_name}) failed with {rc}")
    return dst


# Q4_1 and Q5_1 blocks start with (d: f16, m: f16); their block sizes in bytes.
_MIN_FORMATS = {"Q4_1": 20, "Q5_1": 24}


def read_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a GGUF dequantized by gguf-py to float64 in numpy layout, and its type.
    For Q4_1/Q5_1 tensors the per-block minimums are also returned, under ``name + "#min"``."""
    r = gguf.GGUFReader(str(path))
    out: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for t in r.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[t.name] = np.asarray(arr, dtype=np.float64).reshape(shape)
        types[t.name] = t.tensor_type.name
        bs = _MIN_FORMATS.get(t.tensor_type.name)
        if bs is not None:
            raw = np.asarray(t.data, dtype=np.uint8).reshape(shape[0], -1, bs)
            mins = raw[:, :, 2:4].copy().view(np.float16)[:, :, 0]
            out[t.name + "#min"] = mins.astype(np.float64)
    return out, types


# ---------------------------------------------------------------------------------------------
# The reference forward pass (float64). Written from the Llama paper/llama.cpp semantics, not from
# the Rust code: RMSNorm, RoPE on adjacent pairs (ggml "normal" mode), GQA, SwiGLU.


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_pairs(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """x: (T, H, hd); rotate (x[2i], x[2i+1]) by pos * base^(-2i/hd)."""
    hd = x.shape[-1]
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    th = pos[:, None].astype(np.float64) * inv[None, :]
    c, s = np.cos(th)[:, None, :], np.sin(th)[:, None, :]
    out = x.copy()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_halves(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """The NEOX variant (rotate first half against second half): a deliberately wrong RoPE for
    Llama GGUFs, used as a negative control."""
    hd = x.shape[-1]
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    th = pos[:, None].astype(np.float64) * inv[None, :]
    c, s = np.cos(th)[:, None, :], np.sin(th)[:, None, :]
    x0, x1 = x[..., : hd // 2], x[..., hd // 2 :]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)


# ggml multiplies quantized weights with activations that it first quantizes itself (its
# "vec_dot_type"): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, f16 for F16.
# The reference models that step with ggml's x86 rules (scale 127/amax, round half to even; Q8_K
# with iscale = -127/max), including the f16-rounded block sum ggml stores for Q8_1, so it agrees
# with a ggml-compatible engine to f32 rounding.
ACT_QUANT = {
    "Q4_0": "Q8_0",
    "Q5_0": "Q8_0",
    "Q8_0": "Q8_0",
    "Q4_1": "Q8_1",
    "Q5_1": "Q8_1",
    "Q2_K": "Q8_K",
    "Q3_K": "Q8_K",
    "Q4_K": "Q8_K",
    "Q5_K": "Q8_K",
    "Q6_K": "Q8_K",
    "F16": "F16",
    "F32": "F32",
}


def _round_even(v: np.ndarray) -> np.ndarray:
    return np.rint(v)


def q8_1_sum_error(x: np.ndarray) -> np.ndarray:
    """Per block of 32: ggml's stored sum ``f16(d * sum(q))`` minus the exact ``f16(d) * sum(q)``
    that a plain dequantized product implies. Shape (T, K/32)."""
    x32 = x.astype(np.float32)
    t, k = x32.shape
    b = x32.reshape(t, k // 32, 32)
    amax = np.abs(b).max(-1)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = _round_even(b * inv[..., None]).sum(-1)
    s16 = (d * q.astype(np.float32)).astype(np.float16).astype(np.float64)
    return np.asarray(s16 - d.astype(np.float16).astype(np.float64) * q)


def fake_quant(x: np.ndarray, kind: str) -> np.ndarray:
    """Quantize then dequantize each row of ``x`` the way ggml quantizes activations."""
    if kind == "F32":
        return x
    x32 = x.astype(np.float32)
    if kind == "F16":
        return x32.astype(np.float16).astype(np.float64)
    t, k = x32.shape
    if kind in ("Q8_0", "Q8_1"):
        b = x32.reshape(t, k // 32, 32)
        amax = np.abs(b).max(-1, keepdims=True)
        d = amax / np.float32(127)
        with np.errstate(divide="ignore"):
            inv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
        q = _round_even(b * inv)
        dq = d.astype(np.float16).astype(np.float64)
        return (q.astype(np.float64) * dq).reshape(t, k)
    if kind == "Q8_K":
        b = x32.reshape(t, k // 256, 256)
        idx = np.abs(b).argmax(-1)[..., None]
        mx = np.take_along_axis(b, idx, -1)
        with np.errstate(divide="ignore"):
            iscale = np.where(mx != 0, np.float32(-127) / mx, np.float32(0)).astype(np.float32)
            d = np.where(iscale != 0, np.float32(1) / iscale, np.float32(0)).astype(np.float32)
        q = np.minimum(_round_even(iscale * b), 127)
        return (q.astype(np.float64) * d.astype(np.float64)).reshape(t, k)
    raise ValueError(kind)


def kv_round(x: np.ndarray, kv_type: str) -> np.ndarray:
    """``x`` (T, heads, head_dim) as a KV cache of ``kv_type`` stores it (from its f32 values)."""
    if kv_type == "f32":
        return x
    kind = {"f16": "F16", "q8_0": "Q8_0"}[kv_type]
    t, h, d = x.shape
    return fake_quant(x.reshape(t * h, d), kind).reshape(t, h, d)


def reference_forward(
    w: dict[str, np.ndarray],
    cfg: TinyConfig,
    tokens: list[int],
    rope: Any = rope_pairs,
    types: dict[str, str] | None = None,
    kv_head_of: Any = None,
    kv_type: str = "f32",
) -> np.ndarray:
    """Logits (T, n_vocab) for ``tokens`` from position 0. With ``types`` (tensor name -> ggml
    type), activations are quantized before each weight matmul as ggml does. ``kv_type`` rounds K
    (after RoPE) and V as a cache of that type stores them: ``"f16"`` to half precision,
    ``"q8_0"`` to ggml's Q8_0 blocks along each head's values; attention then runs in float64."""

    def mm(x: np.ndarray, name: str) -> np.ndarray:
        if types is None:
            return np.asarray(x @ w[name].T)
        y = fake_quant(x, ACT_QUANT[types[name]]) @ w[name].T
        if ACT_QUANT[types[name]] == "Q8_1":
            y = y + q8_1_sum_error(x) @ w[name + "#min"].T
        return np.asarray(y)

    t = len(tokens)
    hd, nh, nkv = cfg.head_dim, cfg.n_head, cfg.n_head_kv
    rep = nh // nkv
    pos = np.arange(t)
    x = w["token_embd.weight"][tokens].astype(np.float64)
    mask = np.triu(np.full((t, t), -np.inf), k=1)
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        h = rmsnorm(x, w[p + "attn_norm.weight"], cfg.eps)
        q = (mm(h, p + "attn_q.weight")).reshape(t, nh, hd)
        k = (mm(h, p + "attn_k.weight")).reshape(t, nkv, hd)
        v = (mm(h, p + "attn_v.weight")).reshape(t, nkv, hd)
        q = rope(q, pos, cfg.rope_base)
        k = rope(k, pos, cfg.rope_base)
        k, v = kv_round(k, kv_type), kv_round(v, kv_type)
        o = np.empty((t, nh, hd))
        for head in range(nh):
            g = head // rep if kv_head_of is None else kv_head_of(head)
            att = q[:, head] @ k[:, g].T / np.sqrt(hd) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o[:, head] = att @ v[:, g]
        x = x + mm(o.reshape(t, nh * hd), p + "attn_output.weight")
        h = rmsnorm(x, w[p + "ffn_norm.weight"], cfg.eps)
        g_ = mm(h, p + "ffn_gate.weight")
        u = mm(h, p + "ffn_up.weight")
        x = x + mm((g_ / (1.0 + np.exp(-g_))) * u, p + "ffn_down.weight")
    x = rmsnorm(x, w["output_norm.weight"], cfg.eps)
    return mm(x, "output.weight" if "output.weight" in w else "token_embd.weight")


def cache_dir() -> Path:
    """Where downloaded and generated test assets are kept between runs."""
    base = os.environ.get("MED42_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "med42-rs", "test-assets"
    )
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


_LOG_CB: Any = None


def quiet_llama_cpp() -> None:
    """Silence llama.cpp's logging (model loader dumps, quantizer progress)."""
    global _LOG_CB
    import llama_cpp

    if _LOG_CB is None:
        _LOG_CB = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_LOG_CB, ctypes.c_void_p(0))
