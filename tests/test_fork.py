"""A model loaded before ``fork`` works in the child (gunicorn --preload, multiprocessing's fork
start method, Celery prefork): the CPU thread pool is rebuilt there, and the parent is unaffected.

The child's text is compared with the parent's greedy text for the same prompt: equality shows
the child really computed (an early return or an empty answer cannot match), and a hang is caught
by a deadline after which the child is killed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import med42_rs
import pytest

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform"),
    # Python 3.12+ warns on fork in a process with threads (the pool's workers are threads)
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,"]
TOKENS = 24
DEADLINE_S = 60.0

_model: med42_rs.Model | None = None  # the model a multiprocessing child inherits


@pytest.fixture(scope="module")
def model(smollm2: Path) -> med42_rs.Model:
    m = med42_rs.Model.load(smollm2, n_threads=2, n_ctx=256)
    if m.n_threads < 2:
        pytest.skip("one CPU available: the pool has no workers to rebuild")
    return m


def greedy(m: med42_rs.Model, prompt: str) -> str:
    return m.generate(prompt, max_tokens=TOKENS, temperature=0.0).text


def worker_threads() -> int:
    """Threads of this process named like the pool's workers (Linux), or -1 where unknown."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return -1
    n = 0
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                n += f.read().startswith("med42-worker")
        except OSError:
            pass
    return n


def in_child(work: Callable[[], Any]) -> Any:
    """Fork; run ``work`` in the child and return its JSON result to the parent, or fail when the
    child does not answer before the deadline (it is killed) or raises."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(r)
            try:
                out = {"ok": work()}
            except BaseException as e:
                out = {"error": repr(e)}
            os.write(w, json.dumps(out).encode())
            os.close(w)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    data = b""
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([r], [], [], max(left, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"the forked child did not answer within {DEADLINE_S:.0f} s (killed)")
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    result = json.loads(data)
    assert "error" not in result, f"the child raised {result['error']}"
    return result["ok"]


def test_generate_in_a_forked_child_matches_the_parent(model: med42_rs.Model) -> None:
    expected = greedy(model, PROMPTS[0])  # the parent's workers exist and have run
    assert expected.strip()

    def child() -> dict[str, Any]:
        before = worker_threads()
        text = greedy(model, PROMPTS[0])
        return {"text": text, "workers_before": before, "workers_after": worker_threads()}

    got = in_child(child)
    assert got["text"] == expected
    if got["workers_before"] >= 0:
        # only the forking thread crosses a fork; the child's own workers were started for it
        assert got["workers_before"] == 0
        assert got["workers_after"] >= 1
    assert greedy(model, PROMPTS[0]) == expected  # the parent is unaffected


def test_fork_while_another_thread_is_generating(model: med42_rs.Model) -> None:
    """A parent thread is inside a parallel region when the fork happens: the child inherits the
    pool's state as that thread left it (a job posted, its lock held) and must not wait for it."""
    expected = greedy(model, PROMPTS[1])
    stop = threading.Event()
    running = threading.Event()
    texts: list[str] = []

    def busy() -> None:
        while not stop.is_set():
            for chunk in model.generate(PROMPTS[0], max_tokens=TOKENS, temperature=0.0, stream=True):
                running.set()
                texts.append(chunk.text)
                if stop.is_set():
                    break

    t = threading.Thread(target=busy)
    t.start()
    try:
        assert running.wait(DEADLINE_S)
        got = [in_child(lambda: greedy(model, PROMPTS[1])) for _ in range(3)]
    finally:
        stop.set()
        t.join(DEADLINE_S)
    assert not t.is_alive()
    assert got == [expected] * 3
    assert greedy(model, PROMPTS[1]) == expected


def _generate_in_pool_child(prompt: str) -> tuple[int, str]:
    assert _model is not None
    return os.getpid(), greedy(_model, prompt)


def test_multiprocessing_fork_pool_of_two(model: med42_rs.Model) -> None:
    global _model
    expected = [greedy(model, p) for p in PROMPTS]
    _model = model
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            results = pool.map_async(_generate_in_pool_child, PROMPTS * 2).get(timeout=DEADLINE_S)
    finally:
        _model = None
    assert [text for _, text in results] == expected * 2
    assert os.getpid() not in {pid for pid, _ in results}
    assert [greedy(model, p) for p in PROMPTS] == expected
