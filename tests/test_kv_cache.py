"""The KV cache types (``kv_type``: F16 by default as in llama.cpp, Q8_0, F32).

- Logits against the float64 numpy reference that rounds K (after RoPE) and V exactly as the
  cache stores them (tests/ggufgen.py ``kv_round``): agreement at the same per-type bounds as the
  F32 cache in test_forward_oracle.py, since attention itself is not rounded further.
- Negative controls: the same comparison fails against a reference without the rounding, and
  against a Q8_0 cache written with a 2% wrong scale.
- Greedy decoding follows the reference for 64 steps, or parts from it at a near-tie.
- Batch invariance holds per cache type; memory figures (``med42 info``, the load check) and load
  errors follow the type.

Parity with llama.cpp run with the same cache types is in test_parity_llamacpp.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import ggufgen as g
import med42_rs
import numpy as np
import pytest
from conftest import ALL_QUANTS, tiny_path

MED42 = shutil.which("med42") or str(Path(sys.executable).parent / "med42")
KV_TYPES = ["f16", "q8_0", "f32"]
SEQS = [[1, *np.random.default_rng(s).integers(3, 384, 23).tolist()] for s in range(2)]


def rel_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(1) / np.abs(b).max(1)


def bounds(quant: str, kv: str = "f32") -> tuple[float, float]:
    """(median, max) relative error per position: test_forward_oracle.py's bounds for the F32
    cache (f32 rounding for F32 weights; f16 activations for F16; for 8-bit activations a
    rounding that lands on a boundary can flip). The cache adds one more such rounding: a K/V
    value on a boundary (engine in f32, reference in f64) can round to the neighbouring value,
    2^-11 apart in f16 and one Q8_0 step (1/127 of its block's largest) apart in Q8_0, which only
    F32 weights are exact enough to see. With some thousand K/V values per sequence, one or two
    such flips are expected; each moves every later position, by about 1e-5 with F32 weights,
    and by an 8-bit activation rounding (about 1%) where it flips one with quantized weights
    (measured worst medians 1.3e-5 and 1.3e-2)."""
    if kv == "f32":
        return {"F32": (1e-5, 1e-4), "F16": (2e-3, 5e-3)}.get(quant, (1e-2, 6e-2))
    if quant == "F32":
        return 5e-5, {"f16": 1e-3, "q8_0": 1e-2}[kv]
    if quant == "F16":
        return 2e-3, 5e-3
    return 2e-2, 6e-2


@pytest.fixture(scope="module")
def weights() -> dict[str, tuple[dict[str, np.ndarray], dict[str, str]]]:
    return {q: g.read_weights(tiny_path(q)) for q in ALL_QUANTS}


@pytest.mark.parametrize("kv", ["f16", "q8_0"])
@pytest.mark.parametrize("quant", ALL_QUANTS)
def test_logits_match_the_reference_that_rounds_kv_alike(quant: str, kv: str, weights, tiny_cfg) -> None:
    m = med42_rs.Model.load(tiny_path(quant), kv_type=kv)  # type: ignore[arg-type]
    assert m.kv_type == kv
    w, types = weights[quant]
    med_tol, max_tol = bounds(quant, kv)
    for seq in SEQS:
        ref = g.reference_forward(w, tiny_cfg, seq, types=types, kv_type=kv)
        r = rel_rows(m.logits(seq), ref)
        assert np.median(r) <= med_tol, f"median {np.median(r):.2e}"
        assert r.max() <= max_tol, f"max {r.max():.2e}"


@pytest.mark.parametrize("quant", ["F32", "Q8_0"])
def test_candle_backend_with_an_f16_cache(quant: str, weights, tiny_cfg) -> None:
    """The candle (GPU) path rounds one thing more than the reference: the attention
    probabilities, to f16, to multiply them with the F16 values in place (as GPU attention
    does). That is 2^-11 relative on the attention output, which F32 weights are exact enough to
    see (measured median 4.8e-4, worst 9.9e-4); quantized weights keep their own bounds."""
    m = med42_rs.Model.load(tiny_path(quant), backend="candle", kv_type="f16")
    w, types = weights[quant]
    ref = g.reference_forward(w, tiny_cfg, SEQS[0], types=types, kv_type="f16")
    r = rel_rows(m.logits(SEQS[0]), ref)
    med, worst = (1e-3, 3e-3) if quant == "F32" else bounds(quant, "f16")
    assert np.median(r) <= med and r.max() <= worst, (np.median(r), r.max())


def test_negative_controls_unrounded_and_wrong_scale_references_fail(
    weights, tiny_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On F32 weights the comparison above sees the cache's rounding: the F16 and Q8_0 caches
    are far outside the bound against a reference that does not round K/V, and a Q8_0 cache whose
    block scales were 2% off would be too."""
    w, types = weights["F32"]
    med_tol = bounds("F32", "f16")[0]
    seq = SEQS[0]
    for kv in ("f16", "q8_0"):
        got = med42_rs.Model.load(tiny_path("F32"), kv_type=kv).logits(seq)  # type: ignore[arg-type]
        ok = rel_rows(got, g.reference_forward(w, tiny_cfg, seq, types=types, kv_type=kv))
        unrounded = rel_rows(got, g.reference_forward(w, tiny_cfg, seq, types=types))
        assert np.median(ok) <= med_tol
        assert np.median(unrounded) > 10 * med_tol, f"{kv}: {np.median(unrounded):.2e}"
    got = med42_rs.Model.load(tiny_path("F32"), kv_type="q8_0").logits(seq)
    right = g.kv_round
    monkeypatch.setattr(g, "kv_round", lambda x, kv: right(x, kv) * 1.02)
    wrong = rel_rows(got, g.reference_forward(w, tiny_cfg, seq, types=types, kv_type="q8_0"))
    assert np.median(wrong) > 100 * med_tol, f"{np.median(wrong):.2e}"


def reference_greedy(w, types, cfg: g.TinyConfig, prompt: list[int], n: int, kv: str) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(g.reference_forward(w, cfg, ids, types=types, kv_type=kv)[-1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("kv", ["f16", "q8_0"])
@pytest.mark.parametrize("quant", ["F32", "F16", "Q8_0", "Q4_K_M"])
def test_greedy_follows_the_reference_for_64_steps(quant: str, kv: str, weights, tiny_cfg) -> None:
    """Or parts from it only where the reference's own top two are closer than the engine's
    distance to it (a near-tie), and then only for 8-bit activation types."""
    m = med42_rs.Model.load(tiny_path(quant), kv_type=kv)  # type: ignore[arg-type]
    w, types = weights[quant]
    prompt = [1, *np.random.default_rng(5).integers(3, 384, 12).tolist()]
    ref = reference_greedy(w, types, tiny_cfg, prompt, 64, kv)
    mine = m.greedy_ids(prompt, 64)
    first = next((i for i, (a, b) in enumerate(zip(ref, mine)) if a != b), 64)
    if first < 64:
        assert quant not in ("F32", "F16"), f"diverged at step {first} without an 8-bit rounding"
        seq = prompt + ref[:first]
        lr = g.reference_forward(w, tiny_cfg, seq, types=types, kv_type=kv)[-1]
        lo = m.logits(seq)[-1]
        margin = lr[ref[first]] - lr[mine[first]]
        assert margin <= 2 * np.abs(lo - lr).max(), f"step {first}: margin {margin:.4f}"


@pytest.mark.parametrize("kv", KV_TYPES)
@pytest.mark.parametrize("quant", ["F32", "Q8_0", "Q4_K_M", "Q6_K"])
def test_batching_does_not_change_logits_per_cache_type(quant: str, kv: str) -> None:
    """A position's logits are the same bits whatever the batch split, for every cache type (the
    attention's tiles start at fixed positions and each query is computed alone)."""
    m = med42_rs.Model.load(tiny_path(quant), kv_type=kv)  # type: ignore[arg-type]
    seq = [1, *np.random.default_rng(7).integers(3, 384, 70).tolist()]
    whole = m.logits(seq)
    for n_batch in (1, 5, 33):
        np.testing.assert_array_equal(
            m.logits(seq, n_batch=n_batch), whole, err_msg=f"{kv} n_batch={n_batch}"
        )
    # greedy decoding (prompt batch, then one token at a time) picks the argmax of the same rows
    ids = m.greedy_ids(seq[:20], 8)
    assert ids[0] == int(whole[19].argmax())
    np.testing.assert_array_equal(m.logits(seq[:20] + ids)[19:-1].argmax(1), ids)


def test_default_is_f16_and_bad_types_are_typed_errors() -> None:
    assert med42_rs.Model.load(tiny_path("Q8_0")).kv_type == "f16"
    with pytest.raises(med42_rs.InvalidParameterError, match=r"kv_type.*q4_0"):
        med42_rs.Model.load(tiny_path("Q8_0"), kv_type="q4_0")  # type: ignore[arg-type]
    with pytest.raises(med42_rs.InvalidParameterError, match=r"kv_type.*candle"):
        med42_rs.Model.load(tiny_path("Q8_0"), kv_type="q8_0", backend="candle")
    # heads of 16 values cannot hold Q8_0 blocks of 32 (as in llama.cpp); f16 loads
    narrow = tiny_path("Q8_0", g.TinyConfig(n_head=16, n_head_kv=4, seed=5, name="hd16"))
    with pytest.raises(med42_rs.InvalidParameterError, match=r"kv_type.*32.*16"):
        med42_rs.Model.load(narrow, kv_type="q8_0")
    assert med42_rs.Model.load(narrow, kv_type="f16").logits([1, 2, 3]).shape == (3, 384)


def test_info_reports_the_kv_cache_in_its_type(smollm2: Path) -> None:
    """SmolLM2-135M: 30 blocks, 3 KV heads of 64, 8,192 trained positions."""
    per_value = {"f16": 2.0, "q8_0": 34 / 32, "f32": 4.0}
    for kv in KV_TYPES:
        out = subprocess.run(
            [MED42, "info", str(smollm2), "--kv-type", kv], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        want = 2 * 30 * 3 * 64 * 8192 * per_value[kv] / 2**30
        line = re.search(r"KV cache ([\d.]+) GiB at 8192 tokens \((\w+)\)", out.stdout)
        assert line is not None, out.stdout
        assert line.group(2) == kv and float(line.group(1)) == pytest.approx(want, abs=0.006), line.group(0)
    out = subprocess.run([MED42, "info", str(smollm2), "--kv-type", "q4_0"], capture_output=True, text=True)
    assert out.returncode == 2 and "--kv-type" in out.stderr


def test_cli_generate_with_a_q8_0_cache_equals_the_api(smollm2: Path) -> None:
    prompt = "The capital of France is"
    out = subprocess.run(
        [MED42, "generate", "-m", str(smollm2), "--kv-type", "q8_0", "--raw", "--temperature", "0",
         "-n", "12", prompt],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    m = med42_rs.Model.load(smollm2, n_ctx=512, kv_type="q8_0")
    want = m.generate(prompt, max_tokens=12, temperature=0.0).text
    assert want.strip() and out.stdout.startswith(want), (out.stdout, want)
