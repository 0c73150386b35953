"""Parity with llama.cpp (llama-cpp-python) on the same files: first with F32 KV caches in both
engines (no flash attention), then with the F16 and Q8_0 caches (the last tests).

What "identical" can mean: both engines quantize activations to 8 bits before each quantized
matmul, so an f32 difference of one ulp (a different summation order in attention, say) can flip
one rounding and move later logits by about 1%. llama.cpp itself shows that noise between its own
batched and token-by-token runs (measured in ``test_llamacpp_self_noise_is_real``). So:

- logits: per position, the median difference must be at f32-rounding level (a systematic error
  would show everywhere) and the worst position within the same noise llama.cpp has with itself;
- greedy decoding: 64 identical steps, except that a step where llama.cpp's own top-2 margin is
  inside the measured noise may go either way. F32 and F16 (no 8-bit activations) must be identical.
  Q8_0 is not strict: med42-rs sums each block's exact integer dot product in a fixed order of
  its own (the one that makes it batch-invariant), llama.cpp sums 8 partial lanes per block, so
  as for every 8-bit type a last-bit difference can flip an activation rounding (measured: 18 of
  79 positions of one Q8_0 sequence move by ~1%, and greedy diverged once, at a 0.014 margin).
  llama.cpp's noise includes its greedy run itself: that run takes the prompt in one batch and then
  one token at a time, so the logits it picked from can differ from both its all-batched and its
  all-incremental logits of the same sequence (measured: 0.12 at one step of Q3_K_L where the other
  two agree with each other and with ours to 1e-6). med42-rs has no such third path: its results do
  not depend on how a sequence is split into batches (test_batching_does_not_change_logits).
"""

from __future__ import annotations

from pathlib import Path

import ggufgen as g
import med42_rs
import numpy as np
import pytest
from conftest import ALL_QUANTS, tiny_path
from float64_smollm2 import system_flags

llama_cpp = pytest.importorskip("llama_cpp")
g.quiet_llama_cpp()
# Which llama.cpp these tests compare against (a portable AVX2 wheel and a -march=native build
# with AVX-512 differ in their f32 orders, so in their noise): named in every failure message.
LLAMA_FLAGS = system_flags(llama_cpp.llama_print_system_info().decode())
LLAMA_BUILD = f"llama.cpp {llama_cpp.__version__} [{LLAMA_FLAGS}]"

STRICT = {"F32", "F16"}
N_STEPS = 64
# ggml type ids of the KV cache types
GGML_TYPE = {"f32": 0, "f16": 1, "q8_0": 8}


def llama(path: Path, n_ctx: int = 256, n_batch: int = 512, kv: str = "f32") -> object:
    return llama_cpp.Llama(
        str(path),
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        type_k=GGML_TYPE[kv],
        type_v=GGML_TYPE[kv],
        n_threads=2,
        flash_attn=kv == "q8_0",  # llama.cpp keeps a quantized V only with flash attention
        logits_all=True,
        verbose=False,
    )


def llama_greedy(L: object, prompt: list[int], n: int) -> list[int]:
    return llama_greedy_scored(L, prompt, n)[0]


def llama_greedy_scored(L: object, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """llama.cpp's greedy path and the logits it chose each token from (row ``len(prompt) - 1 + i``
    for step ``i``)."""
    L.reset()
    out: list[int] = []
    for t in L.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(int(t))
        if len(out) == n:
            break
    return out, np.array(L.scores[: len(prompt) + n - 1], dtype=np.float32)


def llama_logits(L: object, seq: list[int]) -> np.ndarray:
    L.reset()
    L.eval(seq)
    return np.array(L.scores[: len(seq)], dtype=np.float32)


def check_greedy(
    m: med42_rs.Model, L: object, L1: object, prompt: list[int], strict: bool
) -> tuple[int, list[int]]:
    """Compare greedy paths; return (first divergence, llama.cpp path). Asserts the rules above."""
    ref, picked = llama_greedy_scored(L, prompt, N_STEPS)
    mine = m.greedy_ids(prompt, N_STEPS)
    first = next((i for i, (a, b) in enumerate(zip(ref, mine)) if a != b), N_STEPS)
    if first < N_STEPS:
        assert not strict, f"diverged at step {first} on a type with no noise source, vs {LLAMA_BUILD}"
        seq = prompt + ref
        lc = llama_logits(L, seq)
        l1 = llama_logits(L1, seq)
        ours = m.logits(seq)
        i = len(prompt) - 1 + first
        top2 = np.sort(lc[i])[-2:]
        # llama.cpp against itself: all-incremental and its greedy run's own logits
        self_noise = max(np.abs(l1[i] - lc[i]).max(), np.abs(picked[i] - lc[i]).max())
        noise = max(np.abs(ours[i] - lc[i]).max(), self_noise)
        assert top2[1] - top2[0] <= 2 * noise, (
            f"diverged at step {first} with llama.cpp margin {top2[1] - top2[0]:.4f} > 2 x noise {noise:.4f}"
            f", vs {LLAMA_BUILD}"
        )
    return first, ref


SMOL_PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The patient presented with chest pain and shortness of breath. The most likely diagnosis is",
    "<|im_start|>system\nYou are a helpful medical assistant.<|im_end|>\n<|im_start|>user\n"
    "What is the first-line treatment for type 2 diabetes?<|im_end|>\n<|im_start|>assistant\n",
    "Metformin 500 mg twice daily is",
]


@pytest.mark.oracle
@pytest.mark.parametrize("quant", ALL_QUANTS)
def test_logits_and_greedy_match_llama_cpp(quant: str) -> None:
    path = tiny_path(quant)
    m = med42_rs.Model.load(path, kv_type="f32")
    L, L1 = llama(path), llama(path, n_batch=1)
    for seed in range(3):
        prompt = [1, *np.random.default_rng(seed).integers(3, 384, 15).tolist()]
        _first, ref = check_greedy(m, L, L1, prompt, quant in STRICT)
        seq = prompt + ref
        lc = llama_logits(L, seq)
        r = np.abs(m.logits(seq) - lc).max(1) / np.abs(lc).max(1)
        tol_med = 3e-3 if quant == "F16" else 1e-4 if quant == "F32" else 1e-5
        assert np.median(r) <= tol_med, f"median relative difference {np.median(r):.2e}, vs {LLAMA_BUILD}"
        assert r.max() <= (1e-4 if quant == "F32" else 6e-2), f"max {r.max():.2e}, vs {LLAMA_BUILD}"


@pytest.mark.oracle
def test_negative_control_a_different_model_is_not_close() -> None:
    """The comparison above is not vacuous: another model's logits fail it by far."""
    a = med42_rs.Model.load(tiny_path("Q8_0"), kv_type="f32")
    other = tiny_path("Q8_0", g.TinyConfig(seed=99))
    seq = [1, 5, 9, 300, 20, 31]
    lc = llama_logits(llama(other), seq)
    r = np.abs(a.logits(seq) - lc).max(1) / np.abs(lc).max(1)
    assert np.median(r) > 0.3


@pytest.mark.oracle
def test_llamacpp_self_noise_is_real(smollm2: Path) -> None:
    """llama.cpp batched vs token-by-token on the same real model differ by about a percent: the
    noise floor the rules above are built on."""
    L, L1 = llama(smollm2, 512), llama(smollm2, 512, n_batch=1)
    prompt = L.tokenize(SMOL_PROMPTS[2].encode(), add_bos=False, special=True)
    seq = prompt + llama_greedy(L, prompt, 32)
    a, b = llama_logits(L, seq), llama_logits(L1, seq)
    r = np.abs(a - b).max(1) / np.abs(a).max(1)
    assert r.max() > 1e-3


@pytest.mark.oracle
@pytest.mark.slow
def test_smollm2_greedy_and_logits_match_llama_cpp(smollm2: Path) -> None:
    """The real SmolLM2-135M-Instruct (Q4_1, tied Q8_0 embeddings, 30 blocks)."""
    m = med42_rs.Model.load(smollm2, n_ctx=512, kv_type="f32")
    L, L1 = llama(smollm2, 512), llama(smollm2, 512, n_batch=1)
    firsts = []
    for text in SMOL_PROMPTS:
        prompt = L.tokenize(text.encode(), add_bos=False, special=True)
        first, ref = check_greedy(m, L, L1, prompt, strict=False)
        firsts.append(first)
        seq = prompt + ref
        lc = llama_logits(L, seq)
        l1 = llama_logits(L1, seq)
        ours = m.logits(seq)
        r = np.abs(ours - lc).max(1) / np.abs(lc).max(1)
        self_noise = np.abs(l1 - lc).max(1) / np.abs(lc).max(1)
        # within a small multiple of llama.cpp's own batched-vs-incremental difference
        msg = f"{r.max():.2e} / {self_noise.max():.2e}, vs {LLAMA_BUILD}"
        assert np.median(r) <= 3 * np.median(self_noise) + 1e-3, msg
        assert r.max() <= 3 * self_noise.max() + 1e-2, msg
    # the chat question is answered identically (up to the end of the answer), and correctly
    prompt = L.tokenize(SMOL_PROMPTS[0].encode(), add_bos=False, special=True)
    ids = m.greedy_ids(prompt, 12)
    assert ids == llama_greedy(L, prompt, 12), LLAMA_BUILD
    assert "Paris" in L.detokenize(ids).decode()
    assert min(firsts) >= 8, f"first divergences {firsts}, vs {LLAMA_BUILD}"


def rel_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(1) / np.abs(b).max(1)


@pytest.mark.oracle
@pytest.mark.parametrize("kv", ["f16", "q8_0"])
@pytest.mark.parametrize("quant", ["F32", "F16", "Q8_0", "Q4_0", "Q4_K_M", "Q6_K"])
def test_kv_cache_types_match_llama_cpp(quant: str, kv: str, tiny_cfg: g.TinyConfig) -> None:
    """Both engines with the same cache type. llama.cpp rounds more than its cache does: with an
    F16 cache its attention also takes Q and the softmax weights in f16, and the flash attention a
    Q8_0 cache needs quantizes Q to Q8_0 for the K products. med42-rs rounds only what it stores,
    and matches a float64 reference that rounds K/V the same way to f32 precision
    (tests/test_kv_cache.py; measured medians 1e-7 to 3e-6 where llama.cpp is 1e-3 to 6e-2 away
    from it). So the rule: our distance to llama.cpp is llama.cpp's own distance to that
    reference, and greedy paths agree for 64 steps or part at a near-tie (``check_greedy``)."""
    path = tiny_path(quant)
    w, types = g.read_weights(path)
    m = med42_rs.Model.load(path, kv_type=kv)
    assert m.kv_type == kv
    L, L1 = llama(path, kv=kv), llama(path, n_batch=1, kv=kv)
    for seed in range(3):
        prompt = [1, *np.random.default_rng(seed).integers(3, 384, 15).tolist()]
        _first, ref_ids = check_greedy(m, L, L1, prompt, strict=False)
        seq = prompt + ref_ids
        lc = llama_logits(L, seq)
        ours = m.logits(seq)
        ref = g.reference_forward(w, tiny_cfg, seq, types=types, kv_type=kv)
        d, d_llama = rel_rows(ours, lc), rel_rows(lc, ref)
        msg = f"{np.median(d):.2e} / {np.median(d_llama):.2e}, max {d.max():.2e} / {d_llama.max():.2e}"
        assert np.median(d) <= 1.5 * np.median(d_llama) + 1e-5, f"{msg}, vs {LLAMA_BUILD}"
        assert d.max() <= 1.5 * d_llama.max() + 1e-2, f"{msg}, vs {LLAMA_BUILD}"
        # negative control: another seed's sequence is far outside that rule
        other = m.logits([1, *np.random.default_rng(seed + 10).integers(3, 384, len(seq) - 1).tolist()])
        assert np.median(rel_rows(other, lc)) > 10 * np.median(d_llama) + 0.1


@pytest.mark.oracle
@pytest.mark.slow
@pytest.mark.parametrize("kv", ["f16", "q8_0"])
def test_smollm2_kv_cache_types_match_llama_cpp(smollm2: Path, kv: str) -> None:
    """SmolLM2 with F16 and Q8_0 caches in both engines: logits within a small multiple of
    llama.cpp's own noise (its batched vs token-by-token runs, and what its cache type changes
    against its F32 cache), greedy paths identical for 64 steps or parting at a near-tie, and the
    chat question answered."""
    m = med42_rs.Model.load(smollm2, n_ctx=512, kv_type=kv)
    L, L1, L32 = llama(smollm2, 512, kv=kv), llama(smollm2, 512, n_batch=1, kv=kv), llama(smollm2, 512)
    for text in SMOL_PROMPTS:
        prompt = L.tokenize(text.encode(), add_bos=False, special=True)
        _first, ref_ids = check_greedy(m, L, L1, prompt, strict=False)
        seq = prompt + ref_ids
        lc = llama_logits(L, seq)
        d = rel_rows(m.logits(seq), lc)
        noise = np.maximum(rel_rows(llama_logits(L1, seq), lc), rel_rows(llama_logits(L32, seq), lc))
        msg = f"{d.max():.2e} / {noise.max():.2e}, vs {LLAMA_BUILD}"
        assert np.median(d) <= 3 * np.median(noise) + 1e-3, msg
        assert d.max() <= 3 * noise.max() + 1e-2, msg
    prompt = L.tokenize(SMOL_PROMPTS[0].encode(), add_bos=False, special=True)
    assert "Paris" in L.detokenize(m.greedy_ids(prompt, 12)).decode()
