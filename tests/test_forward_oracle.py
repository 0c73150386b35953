"""The forward pass against an independent float64 numpy reference (tests/ggufgen.py) on tiny
random Llama GGUFs of every quant type, for both implementations (native CPU and candle).

The reference runs on gguf-py's dequantized weights and quantizes activations before each matmul
the way ggml does (Q8_0/Q8_1/Q8_K), so agreement is at f32 rounding except where an 8-bit rounding
lands on a boundary; the per-type bounds below were set from measured errors with a margin.
The engine runs with an F32 KV cache here, like the reference; the F16 and Q8_0 caches are
compared with a reference that rounds K/V the same way in tests/test_kv_cache.py.
"""

from __future__ import annotations

import ggufgen as g
import med42_rs
import numpy as np
import pytest
from conftest import ALL_QUANTS, tiny_path

SEQS = [[1, *np.random.default_rng(s).integers(3, 384, 23).tolist()] for s in range(2)]


def rel_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(1) / np.abs(b).max(1)


def bounds(quant: str) -> tuple[float, float]:
    """(median, max) relative error allowed per position."""
    if quant == "F32":
        return 1e-5, 1e-4
    if quant == "F16":
        return 2e-3, 5e-3
    # An 8-bit rounding that lands on a boundary can flip in one engine and not the other; a
    # systematic error (wrong scale, layout or order) costs more than 10% everywhere.
    return 1e-2, 6e-2


@pytest.fixture(scope="module")
def weights() -> dict[str, tuple[dict[str, np.ndarray], dict[str, str]]]:
    return {q: g.read_weights(tiny_path(q)) for q in ALL_QUANTS}


@pytest.mark.parametrize("backend", ["native", "candle"])
@pytest.mark.parametrize("quant", ALL_QUANTS)
def test_logits_match_numpy_reference(quant: str, backend: str, weights, tiny_cfg) -> None:
    m = med42_rs.Model.load(tiny_path(quant), backend=backend, kv_type="f32")
    assert m.backend == backend
    w, types = weights[quant]
    med_tol, max_tol = bounds(quant)
    for seq in SEQS:
        ref = g.reference_forward(w, tiny_cfg, seq, types=types)
        got = m.logits(seq)
        assert got.shape == (len(seq), tiny_cfg.n_vocab) and got.dtype == np.float32
        r = rel_rows(got, ref)
        assert np.median(r) <= med_tol, f"median {np.median(r):.2e}"
        assert r.max() <= max_tol, f"max {r.max():.2e}"
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("quant", ["F32", "Q8_0", "Q4_K_M"])
def test_negative_controls_wrong_rope_and_wrong_gqa_are_detected(quant: str, weights, tiny_cfg) -> None:
    """The test model is sensitive enough that a RoPE variant or a wrong query→KV head mapping
    would fail the comparison above by a wide margin."""
    m = med42_rs.Model.load(tiny_path(quant), kv_type="f32")
    w, types = weights[quant]
    seq = SEQS[0]
    got = m.logits(seq)
    right = g.reference_forward(w, tiny_cfg, seq, types=types)
    neox = g.reference_forward(w, tiny_cfg, seq, types=types, rope=g.rope_halves)
    nkv = tiny_cfg.n_head_kv
    interleaved = g.reference_forward(w, tiny_cfg, seq, types=types, kv_head_of=lambda h: h % nkv)
    ok = rel_rows(got, right)
    for wrong in (neox, interleaved):
        bad = rel_rows(got, wrong)
        assert np.median(bad) > 0.1, "a wrong variant must be far from the engine"
        assert np.median(bad) > 100 * np.median(ok) + 1e-3
        assert (got.argmax(1) == wrong.argmax(1)).mean() < 0.7


@pytest.mark.parametrize(
    "cfg",
    [
        g.TinyConfig(n_head_kv=4, seed=1, name="mha"),
        g.TinyConfig(n_head_kv=1, seed=2, name="mqa"),
        g.TinyConfig(tied=True, seed=3, name="tied"),
        g.TinyConfig(rope_base=500000.0, eps=1e-6, seed=4, name="llama3-like"),
    ],
    ids=lambda c: c.name,
)
def test_architecture_variants(cfg: g.TinyConfig) -> None:
    """MHA, MQA (one KV head), tied output embeddings, Llama-3 RoPE base."""
    for quant in ("F32", "Q8_0"):
        path = tiny_path(quant, cfg)
        m = med42_rs.Model.load(path, kv_type="f32")
        w, types = g.read_weights(path)
        assert ("output.weight" in w) == (not cfg.tied)
        seq = SEQS[1]
        r = rel_rows(m.logits(seq), g.reference_forward(w, cfg, seq, types=types))
        assert r.max() <= bounds(quant)[1], f"{quant}: {r.max():.2e}"


@pytest.mark.parametrize("quant", ALL_QUANTS)
def test_batching_does_not_change_logits(quant: str) -> None:
    """A position's logits are the same bits whether the sequence runs in one batch (packed prompt
    GEMM), in batches of 5 (multi-row kernels) or one token at a time (decode kernels), so greedy
    generation, scoring and logits agree exactly. 60 tokens: where the CPU has AMX the K-quants'
    prompts of 48 rows or more take the AMX GEMM."""
    m = med42_rs.Model.load(tiny_path(quant))
    seq = [1, *np.random.default_rng(7).integers(3, 384, 59).tolist()]
    whole = m.logits(seq)
    for n_batch in (1, 5):
        np.testing.assert_array_equal(m.logits(seq, n_batch=n_batch), whole, err_msg=f"n_batch={n_batch}")
