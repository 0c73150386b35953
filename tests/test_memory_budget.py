"""The memory budget checked before loading: a 70B-shaped file (the real Llama-2-70B tensor table
with Q4_K_M's type mix, as a sparse file: the header is real, the data is holes) is refused on this
machine with figures computed independently here; small models load; the check can be skipped."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import gguf
import med42_rs
import numpy as np
import pytest

Q = gguf.GGMLQuantizationType
GIB = 2**30
E, FF, NL, NH, NKV, V, CTX = 8192, 28672, 80, 64, 8, 32000, 4096
BLOCK_BYTES = {Q.Q4_K: 144, Q.Q6_K: 210, Q.F32: 4 * 256}


def _nbytes(shape: tuple[int, ...], qt: Q) -> int:
    return int(np.prod(shape)) // 256 * BLOCK_BYTES[qt]


@pytest.fixture(scope="module")
def header_only_70b(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("70b") / "llama-70b-shaped.Q4_K_M.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Llama-2-70B-shaped header")
    w.add_context_length(CTX)
    w.add_embedding_length(E)
    w.add_block_count(NL)
    w.add_feed_forward_length(FF)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_dimension_count(E // NH)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    kv = NKV * (E // NH)
    tensors: list[tuple[str, tuple[int, ...], Q]] = [("token_embd.weight", (V, E), Q.Q4_K)]
    for i in range(NL):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", (E,), Q.F32),
            (p + "attn_q.weight", (E, E), Q.Q4_K),
            (p + "attn_k.weight", (kv, E), Q.Q4_K),
            (p + "attn_v.weight", (kv, E), Q.Q6_K),
            (p + "attn_output.weight", (E, E), Q.Q4_K),
            (p + "ffn_norm.weight", (E,), Q.F32),
            (p + "ffn_gate.weight", (FF, E), Q.Q4_K),
            (p + "ffn_up.weight", (FF, E), Q.Q4_K),
            (p + "ffn_down.weight", (E, FF), Q.Q6_K if i % 2 == 0 else Q.Q4_K),
        ]
    tensors += [("output_norm.weight", (E,), Q.F32), ("output.weight", (V, E), Q.Q6_K)]
    total = 0
    for name, shape, qt in tensors:
        nb = 4 * shape[0] if qt == Q.F32 else _nbytes(shape, qt)
        total += nb
        w.add_tensor_info(name, shape, np.dtype(np.float32), nb, raw_dtype=None if qt == Q.F32 else qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    data_start = -(-header // 32) * 32
    # tensors are laid out back to back, each padded to 32 bytes: make the file that long, sparse
    size = data_start + sum(-(-nb // 32) * 32 for nb in [_size(t) for t in tensors])
    os.truncate(path, size)
    assert path.stat().st_blocks * 512 < 16 * 2**20  # sparse: no disk used
    return path, total


def _size(t: tuple[str, tuple[int, ...], Q]) -> int:
    _name, shape, qt = t
    return 4 * shape[0] if qt == Q.F32 else _nbytes(shape, qt)


# bytes per cached K or V value: f16 2, q8_0 34 per block of 32, f32 4
KV_VALUE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "f32": 4.0}


def _kv_gib(n_ctx: int, kv: str = "f16") -> float:
    return 2 * NL * n_ctx * NKV * (E // NH) * KV_VALUE_BYTES[kv] / GIB


def test_70b_is_refused_before_anything_large_happens(header_only_70b: tuple[Path, int]) -> None:
    path, weights = header_only_70b
    assert 38 * GIB < weights < 44 * GIB  # the Q4_K_M 70B file is 41.4 GB
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(med42_rs.InsufficientMemoryError) as e:
        med42_rs.Model.load(path)
    msg = str(e.value)
    assert f"weights {weights / GIB:.1f} GiB" in msg, msg
    assert f"KV cache {_kv_gib(CTX):.1f} GiB for n_ctx 4096 (f16)" in msg, msg
    assert "try a smaller quant, a shorter context (n_ctx) or a smaller KV cache" in msg
    needed = float(msg.split("needs about ")[1].split(" GiB")[0])
    assert weights / GIB + _kv_gib(CTX) < needed < weights / GIB + _kv_gib(CTX) + 1.0
    assert isinstance(e.value, MemoryError)
    # no large allocation happened on the way to the error
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KiB


def test_shorter_context_shrinks_the_kv_estimate(header_only_70b: tuple[Path, int]) -> None:
    path, _ = header_only_70b
    with pytest.raises(
        med42_rs.InsufficientMemoryError, match=f"KV cache {_kv_gib(512):.1f} GiB for n_ctx 512"
    ):
        med42_rs.Model.load(path, n_ctx=512)


@pytest.mark.parametrize("kv", ["f16", "q8_0", "f32"])
def test_kv_type_sets_the_kv_estimate(header_only_70b: tuple[Path, int], kv: str) -> None:
    """Med42-70B at 4,096 tokens: 2.5 GiB of f32 K/V, 1.25 GiB in f16, 0.66 GiB in q8_0."""
    path, weights = header_only_70b
    with pytest.raises(med42_rs.InsufficientMemoryError) as e:
        med42_rs.Model.load(path, kv_type=kv)  # type: ignore[arg-type]
    msg = str(e.value)
    assert f"KV cache {_kv_gib(CTX, kv):.1f} GiB" in msg and f"n_ctx 4096 ({kv})" in msg, msg
    needed = float(msg.split("needs about ")[1].split(" GiB")[0])
    assert weights / GIB + _kv_gib(CTX, kv) < needed < weights / GIB + _kv_gib(CTX, kv) + 1.0


def test_reported_availability_is_used(
    header_only_70b: tuple[Path, int], smollm2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a machine with 50 MB available refuses the 98 MB SmolLM2; 2 GiB accepts it
    monkeypatch.setenv("MED42_MEMORY_AVAILABLE", str(50 * 2**20))
    with pytest.raises(med42_rs.InsufficientMemoryError, match=r"only 0\.0 GiB is available"):
        med42_rs.Model.load(smollm2)
    m = med42_rs.Model.load(smollm2, check_memory=False, n_ctx=256)  # the opt-out works
    assert m.n_ctx == 256
    monkeypatch.setenv("MED42_MEMORY_AVAILABLE", str(2 * GIB))
    med42_rs.Model.load(smollm2, n_ctx=256)  # enough: loads
