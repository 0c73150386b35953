"""Faults survived: exceptions in the consumer's loop, abandoned iterators, the model file renamed
or deleted while mapped, a file truncated in place (SIGBUS, in a child process), and 1,000
generations in one process with flat memory."""

from __future__ import annotations

import gc
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import med42_rs
import pytest

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}
PROMPT = "The history of the Roman Empire begins with"


@pytest.fixture(scope="module")
def m(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=512)


@pytest.fixture(scope="module")
def ref(m: med42_rs.Model) -> list[int]:
    return m.generate(PROMPT, max_tokens=8, **GREEDY).token_ids


def test_exception_in_the_consumer_loop(m: med42_rs.Model, ref: list[int]) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        for i, _chunk in enumerate(m.generate(PROMPT, max_tokens=50, stream=True, **GREEDY)):
            if i == 2:
                raise Boom
    assert m.generate(PROMPT, max_tokens=8, **GREEDY).token_ids == ref


def test_abandoned_iterators(m: med42_rs.Model, ref: list[int]) -> None:
    its = [m.generate(PROMPT, max_tokens=50, stream=True, **GREEDY) for _ in range(5)]
    for it in its:
        next(it)  # each holds a live session with a KV cache
    del its
    gc.collect()
    assert m.generate(PROMPT, max_tokens=8, **GREEDY).token_ids == ref


def test_file_renamed_then_deleted_while_mapped(smollm2: Path, ref: list[int], tmp_path: Path) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copy(smollm2, copy)
    m2 = med42_rs.Model.load(copy, n_ctx=512)
    moved = tmp_path / "moved.gguf"
    copy.rename(moved)
    assert m2.generate(PROMPT, max_tokens=8, **GREEDY).token_ids == ref
    moved.unlink()
    assert not moved.exists()
    assert m2.generate(PROMPT, max_tokens=8, **GREEDY).token_ids == ref  # the mapping keeps the inode


CHILD = """
import os, sys, med42_rs
path = sys.argv[1]
m = med42_rs.Model.load(path, n_ctx=256)
m.logits([1, 2, 3])
print("loaded", flush=True)
os.truncate(path, 4096)   # another program truncates the file in place
m.logits([1, 2, 3, 4, 5])  # reads pages that no longer exist
print("survived", flush=True)
"""


def test_truncated_in_place_while_mapped_is_sigbus_in_a_child(smollm2: Path, tmp_path: Path) -> None:
    # Documented in docs/ERRORS.md: truncating a mapped file under a running model kills that
    # process with SIGBUS (as it does llama.cpp); it cannot corrupt results silently.
    copy = tmp_path / "victim.gguf"
    shutil.copy(smollm2, copy)
    # drop the copy's pages from the page cache so the truncated pages are really gone
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(copy)], capture_output=True, text=True, timeout=120
    )
    assert "loaded" in out.stdout, out.stderr
    assert "survived" not in out.stdout
    assert out.returncode == -signal.SIGBUS, (out.returncode, out.stderr[-500:])


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_thousand_generations_with_flat_memory(tiny) -> None:  # type: ignore[no-untyped-def]
    model = med42_rs.Model.load(tiny("Q8_0"), n_ctx=256)
    words = ["the", "patient", "dose", "of", "and", "at", "in", "on", "er", "en"]

    def run(i: int) -> None:
        n = 1 + (i * 37) % 150  # prompt lengths 1..150 tokens
        prompt = [1] + [(i * 7 + k * 13) % 380 + 3 for k in range(n)]
        out = model.generate(prompt, max_tokens=1 + i % 8, temperature=0.8, seed=i)
        assert 1 <= out.usage.completion_tokens <= 8
        if i % 10 == 0:
            list(model.generate(" ".join(words[: 1 + i % 10]), max_tokens=4, stream=True))

    for i in range(100):  # warm-up: scratch buffers reach their largest size
        run(i)
    gc.collect()
    before = _rss_kib()
    for i in range(100, 1000):
        run(i)
    gc.collect()
    growth = _rss_kib() - before
    assert growth < 8 * 1024, f"RSS grew {growth} KiB over 900 generations"


def test_a_rust_panic_is_a_python_exception_and_the_model_stays_usable(
    m: med42_rs.Model, ref: list[int]
) -> None:
    with pytest.raises(med42_rs.InternalError, match="boom from the engine"):
        med42_rs._native._debug_panic("boom from the engine")
    assert issubclass(med42_rs.InternalError, RuntimeError)
    assert m.generate(PROMPT, max_tokens=8, **GREEDY).token_ids == ref
