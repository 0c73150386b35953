"""Cancellation from any thread and from signal handlers, Ctrl-C in every long call, and the
finish reason when the end-of-stream flush finds a stop (real SmolLM2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import med42_rs
import pytest

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}
LONG = (
    "Medicine is the science and practice of caring for patients, managing the diagnosis, "
    "prognosis, prevention, treatment and palliation of their injury or disease. "
) * 60


@pytest.fixture(scope="module")
def m(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=4096)


@pytest.fixture
def sigint_default() -> Iterator[None]:
    """Tests that send SIGINT rely on Python's default handler, whatever started the suite (a
    background job inherits SIGINT ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def test_cancel_from_another_thread_stops_a_stream_being_iterated(m: med42_rs.Model) -> None:
    full = m.generate("The history of medicine", max_tokens=200, **GREEDY)
    assert len(full.token_ids) == 200  # negative control: uncancelled, it runs to max_tokens
    stream = m.generate("The history of medicine", max_tokens=200, stream=True, **GREEDY)
    got: list[int] = []
    first = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for c in stream:
                got.extend(c.token_ids)
                first.set()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=consume)
    t.start()
    assert first.wait(30)
    stream.cancel()  # another thread is inside __next__: must not raise 'already executing'
    t.join(30)
    assert not t.is_alive() and not errors, errors
    assert stream.cancelled
    assert 1 <= len(got) < 200
    assert got == full.token_ids[: len(got)]  # what came before the cancel is the real text
    assert m.generate("The history of medicine", max_tokens=5, **GREEDY).token_ids == full.token_ids[:5]


def test_cancel_during_a_long_prefill_from_another_thread(m: med42_rs.Model) -> None:
    n_prompt = len(m.tokenizer.encode(LONG))
    assert n_prompt > 1500, n_prompt
    stream = m.generate(LONG, max_tokens=5, stream=True, **GREEDY)
    t0 = time.perf_counter()
    timer = threading.Timer(0.2, stream.cancel)
    timer.start()
    chunks = list(stream)
    elapsed = time.perf_counter() - t0
    timer.join()
    assert chunks == []  # ended before the first token
    full_t0 = time.perf_counter()
    ref = m.generate(LONG, max_tokens=1, **GREEDY)  # negative control: the whole prefill
    full = time.perf_counter() - full_t0
    assert len(ref.token_ids) == 1
    assert elapsed < 0.2 + 0.5 * full, (elapsed, full)


def test_close_from_a_signal_handler_during_prefill_does_not_deadlock(smollm2: Path) -> None:
    # The handler runs inside the stream's own __next__ (which holds the generation's lock);
    # run in a child so that a deadlock fails the test instead of hanging it.
    code = textwrap.dedent(
        f"""
        import signal, sys, time
        import med42_rs
        m = med42_rs.Model.load({str(smollm2)!r}, n_ctx=4096)
        prompt = {LONG!r}
        stream = m.generate(prompt, max_tokens=50, stream=True, temperature=0.0)
        signal.signal(signal.SIGALRM, lambda *a: stream.close())
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.perf_counter()
        n = sum(1 for _ in stream)
        print("ended", n, round(time.perf_counter() - t0, 2), flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        signal.signal(signal.SIGALRM, lambda *a: signal.raise_signal(signal.SIGINT))
        try:
            m.generate(prompt, max_tokens=50, temperature=0.0)
            print("no interrupt")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print("after", len(m.generate("Hi", max_tokens=3, temperature=0.0).token_ids))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[0].startswith("ended 0 "), out.stdout  # cancelled in the prompt: no token
    assert "interrupted" in lines, out.stdout  # Ctrl-C still works afterwards
    assert "after 3" in lines, out.stdout


@pytest.mark.parametrize("call", ["logits", "greedy_ids", "score"])
def test_ctrl_c_stops_every_long_call(m: med42_rs.Model, call: str, sigint_default: None) -> None:
    ids = m.tokenizer.encode(LONG)[:2000]

    def run() -> object:
        if call == "logits":
            return m.logits(ids)
        if call == "greedy_ids":
            return m.greedy_ids(ids, 2)
        return m.score(ids[:-5], ids[-5:])

    t0 = time.perf_counter()
    run()  # negative control: the uninterrupted duration
    full = time.perf_counter() - t0
    timer = threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run()
    elapsed = time.perf_counter() - t0
    timer.join()
    assert elapsed < 0.1 + 0.5 * full, (call, elapsed, full)
    assert len(m.greedy_ids(ids[:10], 2)) == 2  # usable afterwards


def test_finish_reason_is_stop_when_the_final_flush_finds_a_stop(m: med42_rs.Model) -> None:
    prompt = "The patient was diagnosed with"
    ref = m.generate(prompt, max_tokens=12, **GREEDY)
    assert ref.finish_reason == "length"
    text = ref.text
    # A short stop at the very end of the text, inside a longer stop that is still open when the
    # tokens run out: the matcher holds the text back and only the final flush decides.
    short = text[-2:]
    long = text[-3:] + "\u2603\u2603"
    assert short not in text[:-2] or pytest.skip("the text repeats its last two characters")
    out = m.generate(prompt, max_tokens=12, stop=[long, short], **GREEDY)
    assert out.text == text[:-2]  # independent: cut at the first occurrence of a stop
    assert out.finish_reason == "stop"
    chunks = list(m.generate(prompt, max_tokens=12, stop=[long, short], stream=True, **GREEDY))
    assert "".join(c.text for c in chunks) == text[:-2]
    assert chunks[-1].finish_reason == "stop"
    # negative control: a stop that never occurs leaves finish_reason "length"
    assert m.generate(prompt, max_tokens=12, stop=["\u2603\u2603"], **GREEDY).finish_reason == "length"
