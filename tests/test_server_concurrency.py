"""``med42 serve`` with several clients at once: concurrent streams equal their single-stream
answers, a client that goes away stops its generation (the engine's own token count stops
growing) and frees its slot, and a full queue answers 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import med42_rs
import openai
import pytest
from test_server import GREEDY, Running, serve

LONG = 1500  # max_tokens of the generations that are cut short (the context is 2048)


@pytest.fixture(scope="module")
def smol(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=2048)


@pytest.fixture(scope="module")
def srv(smol: med42_rs.Model) -> Iterator[Running]:
    with serve(smol, parallel=4, max_waiting=4) as s:
        yield s


def _busy_slot(srv: Running, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        busy = [s for s in srv.get("/slots") if s["state"] == "processing"]
        if busy:
            return dict(busy[0])
        assert time.monotonic() < deadline, "no slot became busy"
        time.sleep(0.01)


def _latest(srv: Running) -> dict[str, Any]:
    """The slot of the most recent generation."""
    return dict(max(srv.get("/slots"), key=lambda s: s["id_task"]))


def test_four_concurrent_streams_equal_their_single_answers(srv: Running, smol: med42_rs.Model) -> None:
    questions = ["What is aspirin?", "Name a bone in the arm.", "What does the heart do?", "What is insulin?"]
    want = [smol.chat([{"role": "user", "content": q}], max_tokens=24, **GREEDY).text for q in questions]
    got: list[str] = [""] * 4
    first: list[float] = [0.0] * 4
    last: list[float] = [0.0] * 4
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(i: int) -> None:
        try:
            c = srv.client()
            barrier.wait()
            s = c.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": questions[i]}],
                max_tokens=24,
                stream=True,
                extra_body=GREEDY,
            )
            for chunk in s:
                if chunk.choices and chunk.choices[0].delta.content:
                    first[i] = first[i] or time.monotonic()
                    last[i] = time.monotonic()
                    got[i] += chunk.choices[0].delta.content
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert got == want
    # All four were generating at once: each stream's first token came before every stream's last.
    assert max(first) < min(last), (first, last)
    health = srv.wait_idle()
    assert health["slots_idle"] == 4
    if "scheduler" in health:  # an engine with the batching scheduler decoded them together
        assert health["scheduler"]["max_batch"] >= 2, health["scheduler"]


def test_disconnect_mid_stream_stops_the_generation(srv: Running) -> None:
    c = srv.client()
    # negative control: read to the end, the engine's count reaches max_tokens
    s = c.completions.create(
        model="x", prompt="The history of medicine", max_tokens=20, stream=True, extra_body=GREEDY
    )
    assert list(s)[-1].choices[0].finish_reason == "length"
    srv.wait_idle()
    assert _latest(srv)["n_decoded"] == 20
    before = srv.get("/health")["tokens_generated"]

    s = c.completions.create(
        model="x", prompt="The history of medicine", max_tokens=LONG, stream=True, extra_body=GREEDY
    )
    it = iter(s)
    for _ in range(3):
        next(it)
    slot_id = _busy_slot(srv)["id"]
    s.close()  # drop the connection mid-stream
    t0 = time.monotonic()
    health = srv.wait_idle(timeout=10)
    freed_after = time.monotonic() - t0
    decoded = srv.get("/slots")[slot_id]["n_decoded"]
    assert 3 <= decoded < LONG, decoded
    time.sleep(0.3)
    assert srv.get("/slots")[slot_id]["n_decoded"] == decoded  # stopped, not just hidden
    assert health["tokens_generated"] - before == decoded
    assert freed_after < 5
    # the next request is served and every slot is back
    r = c.completions.create(model="x", prompt="The history of medicine", max_tokens=4, extra_body=GREEDY)
    assert r.usage is not None and r.usage.completion_tokens == 4
    assert srv.wait_idle()["slots_idle"] == 4


def test_a_client_timeout_cancels_a_whole_response(srv: Running) -> None:
    c = srv.client(timeout=0.5)
    before = srv.get("/health")["tokens_generated"]
    with pytest.raises(openai.APITimeoutError):
        c.completions.create(model="x", prompt="The history of medicine", max_tokens=LONG, extra_body=GREEDY)
    health = srv.wait_idle(timeout=10)
    decoded = health["tokens_generated"] - before
    assert 0 <= decoded < LONG
    time.sleep(0.3)
    assert srv.get("/health")["tokens_generated"] == health["tokens_generated"]


def test_full_queue_answers_429_and_the_waiter_runs_when_a_slot_frees(smol: med42_rs.Model) -> None:
    want = smol.generate("Aspirin is used to", max_tokens=5, **GREEDY).text
    with serve(smol, parallel=1, max_waiting=1) as s:
        c = s.client()
        # more choices than slots + queue could ever hold: 400 (a 429 would be retried forever)
        with pytest.raises(openai.BadRequestError) as e400:
            c.completions.create(model="x", prompt="hi", max_tokens=2, n=3)
        assert isinstance(e400.value.body, dict) and e400.value.body["param"] == "n"
        a = c.completions.create(
            model="x", prompt="The history of medicine", max_tokens=LONG, stream=True, extra_body=GREEDY
        )
        it = iter(a)
        next(it)  # A holds the only slot
        waited: list[str] = []

        def b() -> None:  # B waits in the queue for A's slot
            r = s.client().completions.create(
                model="x", prompt="Aspirin is used to", max_tokens=5, extra_body=GREEDY
            )
            waited.append(r.choices[0].text)

        tb = threading.Thread(target=b)
        tb.start()
        deadline = time.monotonic() + 20
        while s.get("/health")["requests_waiting"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as e:  # C: no slot, no place in the queue
            c.completions.create(model="x", prompt="hi", max_tokens=2)
        assert e.value.status_code == 429
        assert isinstance(e.value.body, dict) and e.value.body["code"] == "queue_full"
        assert e.value.response.headers["retry-after"] == "1"
        assert not waited  # B is still waiting: A has the slot
        a.close()
        tb.join(60)
        assert waited == [want]
        h = s.wait_idle()
        assert h["slots_idle"] == 1 and h["requests_waiting"] == 0
