"""The GPU path and layer offload (``device``, ``n_gpu_layers``), checked against the CPU path.

Every test runs on two targets:

- ``candle-cpu``: the candle backend on the CPU device. It is the code a GPU runs (the same
  forward pass over candle tensors, F16 K/V read in place, the hidden state crossing from the
  native CPU blocks once per pass), with the project's kernels doing the matrix products. It
  runs everywhere, so the split logic, the caches and the scheduler's use of them are proven on
  every machine.
- ``cuda`` (marked ``gpu``): the CUDA build on a real GPU (candle's mmvq/mmq kernels, cuBLAS).
  Skipped, with the reason, where no CUDA device can be opened (no CUDA build, no driver or no
  GPU); ``benches/gpu/check.sh`` runs them on a GPU machine.

Oracle: the native CPU path (itself checked against float64 numpy and llama.cpp elsewhere).
Stated tolerance: per position, max |Δlogit| / max |logit| of the native row at most 0.1 (the
GPU quantizes activations to Q8_1 for every type where the CPU uses Q8_0/Q8_K, and attention
multiplies f16 queries and probabilities with the f16 cache); greedy ids equal for 32 tokens, or
the first divergence at a near-tie (the native path's top two closer than twice the largest
logit difference there).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import med42_rs
import numpy as np
import pytest
from conftest import tiny_path

# every Med42 quant type (Q2_K ... Q8_0) and Q4_1 (SmolLM2's)
QUANTS = ["Q2_K", "Q3_K_M", "Q4_0", "Q4_1", "Q4_K_M", "Q5_0", "Q5_K_M", "Q6_K", "Q8_0"]
TOL = 0.1
GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}


def _cuda_unavailable() -> str | None:
    """Why no CUDA device can be used here, or None when one can."""
    try:
        med42_rs.Model.load(tiny_path("Q8_0"), device="cuda")
    except med42_rs.DeviceUnavailableError as e:
        return str(e).splitlines()[0]
    return None


@pytest.fixture(
    scope="module",
    params=[pytest.param("cpu", id="candle-cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)],
)
def device(request: pytest.FixtureRequest) -> str:
    d: str = request.param
    if d == "cuda":
        why = _cuda_unavailable()
        if why is not None:
            pytest.skip(f"no CUDA device: {why}")
    return d


def load(path: Path, device: str, n_gpu_layers: int | None = None, **kw: Any) -> med42_rs.Model:
    return med42_rs.Model.load(path, device=device, backend="candle", n_gpu_layers=n_gpu_layers, **kw)


def rel_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(1) / np.abs(b).max(1)


def check_greedy(ref_model: med42_rs.Model, prompt: list[int], ref: list[int], got: list[int]) -> None:
    """``got`` equals ``ref``, or parts from it where the reference's top two are a near-tie."""
    first = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), None)
    if first is None:
        return
    lr = ref_model.logits(prompt + ref[:first])[-1]
    margin = float(lr[ref[first]] - lr[got[first]])
    assert margin <= 0.05 * float(np.abs(lr).max()), f"diverged at step {first}, margin {margin:.4f}"


SEQ = [1, *np.random.default_rng(3).integers(3, 384, 40).tolist()]


@pytest.mark.parametrize("quant", QUANTS)
def test_offloaded_logits_and_greedy_ids_match_the_cpu_path(quant: str, device: str) -> None:
    path = tiny_path(quant)
    ref_model = med42_rs.Model.load(path)
    ref = ref_model.logits(SEQ)
    m = load(path, device)
    assert (m.backend, m.n_gpu_layers) == ("candle", m.config["n_layer"])
    got = m.logits(SEQ)
    err = rel_rows(got, ref)
    assert err.max() <= TOL, f"{quant}: worst position {err.max():.3e}"
    prompt = SEQ[:12]
    check_greedy(ref_model, prompt, ref_model.greedy_ids(prompt, 32), m.greedy_ids(prompt, 32))


def test_offload_negative_control(device: str) -> None:
    """The comparison above fails for logits of another model (a different quantization of the
    same random weights is close; a different prompt is not)."""
    m = load(tiny_path("Q8_0"), device)
    ref = med42_rs.Model.load(tiny_path("Q8_0")).logits(SEQ)
    other = m.logits([1, *SEQ[:0:-1]])[: len(SEQ)]
    assert rel_rows(other, ref).max() > TOL


def test_n_gpu_layers_none_half_all_give_the_same_greedy_text(smollm2: Path, device: str) -> None:
    """SmolLM2 (real weights, 30 blocks): the CPU path, half the blocks offloaded and all of them
    give the same greedy answer (32 tokens), through the chat API and its scheduler."""
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    cpu = med42_rs.Model.load(smollm2, n_parallel=1)
    want = cpu.chat(msgs, max_tokens=32, **GREEDY).text
    n_layer = cpu.config["n_layer"]
    for ngl in (0, n_layer // 2, -1):
        m = load(smollm2, device, ngl, n_parallel=1)
        assert m.n_gpu_layers == (n_layer if ngl == -1 else ngl)
        assert m.backend == ("native" if ngl == 0 else "candle")
        got = m.chat(msgs, max_tokens=32, **GREEDY).text
        if got != want:  # allowed only at a near-tie: compare the ids
            tok = cpu.tokenizer
            prompt = tok.encode(cpu.render_chat(msgs), add_bos=False, special=True)
            check_greedy(cpu, prompt, tok.encode(want, add_bos=False), tok.encode(got, add_bos=False))
    assert "Paris" in want


def test_streaming_cancel_and_threads_on_the_offloaded_path(device: str) -> None:
    """Streams, a cancel mid-stream (the model stays usable, the next answer is unchanged) and
    four threads at once, each equal to its answer alone, with half the blocks offloaded."""
    path = tiny_path("Q4_K_M")
    m = load(path, device, 1, n_parallel=4)
    prompts = ["alpha beta", "gamma", "delta epsilon zeta", "eta"]
    alone = [m.generate(p, max_tokens=16, **GREEDY).text for p in prompts]
    stream = m.generate(prompts[0], max_tokens=16, stream=True, **GREEDY)
    first = next(iter(stream))
    stream.cancel()
    assert first.token_ids and m.generate(prompts[0], max_tokens=16, **GREEDY).text == alone[0]
    got: list[str | None] = [None] * 4

    def run(i: int) -> None:
        got[i] = "".join(c.text for c in m.generate(prompts[i], max_tokens=16, stream=True, **GREEDY))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == alone


def test_n_gpu_layers_is_checked() -> None:
    p = tiny_path("Q8_0")
    with pytest.raises(med42_rs.InvalidParameterError, match="n_gpu_layers"):
        med42_rs.Model.load(p, n_gpu_layers=1)  # nothing to offload to on the CPU
    for bad in (-2, True, 1.5, "all"):
        with pytest.raises(med42_rs.InvalidParameterError, match="n_gpu_layers"):
            med42_rs.Model.load(p, device="cpu", backend="candle", n_gpu_layers=bad)  # type: ignore[arg-type]
    assert med42_rs.Model.load(p, n_gpu_layers=0).n_gpu_layers == 0
    assert med42_rs.Model.load(p, n_gpu_layers=-1).device == "cpu"


def _load_in_subprocess(env: dict[str, str], ngl: int) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys, med42_rs\n"
        "try:\n"
        f"    m = med42_rs.Model.load(sys.argv[1], backend='candle', n_gpu_layers={ngl})\n"
        "    print('loaded', m.n_gpu_layers)\n"
        "except med42_rs.InsufficientMemoryError as e:\n"
        "    print('refused:', e)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(tiny_path("Q8_0"))],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_offloaded_part_is_checked_against_device_memory() -> None:
    """Loading refuses, with the class and message that say what to do, when the offloaded
    blocks do not fit the device's free memory (``MED42_GPU_MEMORY_AVAILABLE`` stands in for
    the driver's figure), and loads once they do or nothing is offloaded."""
    small = {"MED42_GPU_MEMORY_AVAILABLE": str(1 << 20)}
    r = _load_in_subprocess(small, 1)
    assert "refused:" in r.stdout and "n_gpu_layers" in r.stdout and "offloading 1 blocks" in r.stdout, r
    assert "loaded 0" in _load_in_subprocess(small, 0).stdout
    assert "loaded 2" in _load_in_subprocess({"MED42_GPU_MEMORY_AVAILABLE": str(8 << 30)}, -1).stdout


def test_info_reports_the_offload_split(tmp_path: Path) -> None:
    """``med42 info --device cuda --n-gpu-layers N``: the GPU part is the last N blocks and the
    output matrix, as gguf-py's reader of the file sums them (an independent count)."""
    from gguf import GGUFReader

    p = tiny_path("Q4_K_M")
    r = GGUFReader(p)
    n_layer = 2
    gpu = sum(
        int(t.n_bytes)
        for t in r.tensors
        if t.name.startswith("output") or (t.name.startswith("blk.") and int(t.name.split(".")[1]) >= 1)
    )
    est = med42_rs._native.memory_estimate([str(p)], None, "f16", 1)
    assert est["device"]["weights"] == gpu
    assert est["host"]["weights"] + gpu == sum(int(t.n_bytes) for t in r.tensors)
    out = subprocess.run(
        [sys.executable, "-m", "med42_rs.cli", "info", str(p), "--device", "cuda", "--n-gpu-layers", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"offload       1 of {n_layer} blocks on cuda: GPU weights {gpu / 2**30:.2f} GiB" in out.stdout
    cpu = subprocess.run(
        [sys.executable, "-m", "med42_rs.cli", "info", str(p)], capture_output=True, text=True, timeout=60
    )
    assert "offload" not in cpu.stdout


def test_session_states_move_between_the_cpu_and_the_offloaded_path(smollm2: Path, device: str) -> None:
    """A state saved from a session on the offloaded path restores into a CPU session (and back):
    the same bytes on both paths, so the continuation is the CPU's own; the cache type is still
    checked (negative control)."""
    cpu = med42_rs.Model.load(smollm2, n_parallel=1)
    gpu = load(smollm2, device, 15, n_parallel=1)
    prompt = "A clinical note: the patient has a fever of 39 C and a cough. Summary:"
    s = gpu.session()
    s.generate(prompt, max_tokens=1, **GREEDY)
    state = s.save_state()
    c = cpu.session()
    c.load_state(state)
    assert c.tokens == s.tokens
    want = cpu.session().generate(prompt, max_tokens=16, **GREEDY)
    got = c.generate(prompt, max_tokens=16, **GREEDY)
    assert got.usage is not None and got.usage.prompt_tokens_cached == len(s.tokens) - 1
    assert got.text == want.text
    back = gpu.session()
    back.load_state(c.save_state())
    assert back.tokens == c.tokens
    with pytest.raises(med42_rs.SessionStateError):
        med42_rs.Model.load(smollm2, n_parallel=1, kv_type="f32").session().load_state(state)
