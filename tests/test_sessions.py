"""Sessions (KV prefix reuse between calls, saved states) and the batched scheduler.

Oracles: a fresh full prefill of the same prompt (``Model.generate``/``Model.chat`` on a new cache),
the single-sequence output of each request, and llama.cpp's greedy ids. The prompt tokens a turn
computes are counted by the engine's scheduler (``scheduler_stats["tokens"]``), not inferred.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import med42_rs
import pytest
from med42_rs import Model

QUESTIONS = [
    "What is the capital of France?",
    "And of Germany?",
    "Name a river in Paris.",
    "How long is it?",
    "Which sea does it flow into?",
    "Thanks. Summarize our chat.",
]


@pytest.fixture(scope="module")
def m(smollm2: Path) -> Model:
    return Model.load(smollm2, n_ctx=2048, n_parallel=4)


@pytest.fixture(scope="module")
def tiny_m(tiny: Callable[..., Path]) -> Model:
    return Model.load(tiny("Q4_K_M"), n_parallel=4)


def _lcp(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_six_turns_reuse_the_cache_and_equal_a_fresh_prefill(m: Model) -> None:
    chat = m.start_chat()
    for turn, q in enumerate(QUESTIONS):
        before = chat.session.tokens
        history = [*chat.messages, {"role": "user", "content": q}]
        prompt = m.chat_ids(history)
        fresh = m.chat(history, max_tokens=24, temperature=0)  # oracle: a new cache, full prefill
        tokens_before = m.scheduler_stats["tokens"]
        got = chat.send(q, max_tokens=24, temperature=0)
        run = m.scheduler_stats["tokens"] - tokens_before
        assert got.token_ids == fresh.token_ids, f"turn {turn + 1}"
        assert got.text == fresh.text
        common = min(_lcp(before, prompt), len(prompt) - 1)
        u = got.usage
        assert u is not None and fresh.usage is not None
        assert u.prompt_tokens == len(prompt)
        assert u.prompt_tokens_cached == common
        assert fresh.usage.prompt_tokens_cached == 0  # negative control: no session, no reuse
        # counted by the engine: the computed prompt tokens plus the generated tokens fed back
        assert run == (len(prompt) - common) + (len(got.token_ids) - 1)
        if turn > 0:
            assert common > 0.7 * len(before), "the conversation so far is reused"
        assert chat.messages[-1] == {"role": "assistant", "content": got.text}
    assert len(chat.messages) == 2 * len(QUESTIONS)


def test_editing_an_earlier_message_recomputes_only_from_it(m: Model) -> None:
    chat = m.start_chat()
    for q in QUESTIONS[:3]:
        chat.send(q, max_tokens=12, temperature=0)
    prefix_ids = m.chat_ids(chat.messages[:2])  # the first turn, untouched
    chat.messages[2] = {"role": "user", "content": "And of Italy?"}
    edited = m.chat_ids(chat.messages[:3])
    before = chat.session.tokens
    got = chat.send("And its population?", max_tokens=12, temperature=0)
    fresh = m.chat(chat.messages[:-1], max_tokens=12, temperature=0)
    assert got.token_ids == fresh.token_ids
    assert got.usage is not None
    cached = got.usage.prompt_tokens_cached
    assert cached == _lcp(before, m.chat_ids(chat.messages[:-1]))
    # the cache is cut where the edit starts: not before the first turn's end, not after the edit
    assert _lcp(prefix_ids, edited) <= cached < len(edited)


def test_session_generate_on_token_ids_and_streaming(tiny_m: Model) -> None:
    s = tiny_m.session()
    a = list(range(1, 40))
    r1 = s.generate(a, max_tokens=8, temperature=0)
    assert r1.usage is not None and r1.usage.prompt_tokens_cached == 0
    assert s.tokens == a + r1.token_ids[:-1]
    b = a + r1.token_ids + [7, 8, 9]
    chunks = list(s.generate(b, max_tokens=8, temperature=0, stream=True))
    ids = [i for c in chunks for i in c.token_ids]
    assert ids == tiny_m.generate(b, max_tokens=8, temperature=0).token_ids
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens_cached == len(a) + len(r1.token_ids) - 1
    s.truncate(5)
    assert s.tokens == a[:5]
    s.reset()
    assert s.tokens == []
    with pytest.raises(med42_rs.InvalidParameterError, match="n"):
        s.truncate(1)


def test_save_and_restore_state(m: Model, tiny_m: Model, tmp_path: Path, smollm2: Path) -> None:
    note = " ".join(["Patient: 54-year-old man, chest pain for two hours, history of hypertension."] * 6)
    s = m.session()
    r0 = s.generate(note, max_tokens=0)
    assert r0.token_ids == []
    n_note = len(s.tokens)
    path = tmp_path / "note.kv"
    state = s.save_state(path)
    assert path.read_bytes() == state
    cfg = m.config
    # the K/V in the cache's own type (F16 by default: 2 bytes per value), plus the tokens
    kv_bytes = cfg["n_layer"] * 2 * cfg["n_head_kv"] * cfg["head_dim"] * 2 * n_note
    assert kv_bytes < len(state) < kv_bytes + 4 * n_note + 256

    question = note + " Question: what is the first test to order?"
    assert _lcp(s.tokens, m.tokenizer.encode(question)) == n_note
    fresh = m.generate(question, max_tokens=16, temperature=0)
    for source in (state, path):
        s2 = m.session()
        s2.load_state(source)
        assert s2.tokens == s.tokens
        got = s2.generate(question, max_tokens=16, temperature=0)
        assert got.token_ids == fresh.token_ids
        assert got.usage is not None and got.usage.prompt_tokens_cached == n_note

    # negative control: damaged K/V values change the answer (the restored cache is really used)
    bad = bytearray(state)
    for i in range(len(bad) - 4 * 20000, len(bad), 4):
        bad[i + 3] ^= 0x40
    s3 = m.session()
    s3.load_state(bytes(bad))
    assert s3.generate(question, max_tokens=16, temperature=0).token_ids != fresh.token_ids

    # typed errors, and the session is unchanged after each
    s4 = m.session()
    s4.generate("Hello there", max_tokens=0)
    kept = s4.tokens
    for data, match in [
        (state[:-5], "bytes"),
        (b"not a state at all, really", "not a med42-rs session state"),
        (state[:30], "not a med42-rs session state|truncated"),
    ]:
        with pytest.raises(med42_rs.SessionStateError, match=match):
            s4.load_state(data)
        assert s4.tokens == kept
    with pytest.raises(med42_rs.SessionStateError, match="another model"):
        tiny_m.session().load_state(state)
    with pytest.raises(med42_rs.SessionStateError, match=r"f16 KV cache.*q8_0"):
        Model.load(smollm2, n_ctx=512, kv_type="q8_0").session().load_state(state)
    with pytest.raises(med42_rs.SessionStateError, match="context"):
        m.session(n_ctx=n_note - 1).load_state(state)
    with pytest.raises(med42_rs.InvalidParameterError, match="state"):
        s4.load_state(12)  # type: ignore[arg-type]


def test_a_running_session_is_busy_and_a_cancelled_one_comes_back(m: Model) -> None:
    s = m.session()
    # counting goes on without an end-of-text token: still running at the next line
    st = s.generate(" ".join(str(i) for i in range(1, 60)), max_tokens=1500, stream=True)
    next(st)
    with pytest.raises(med42_rs.InvalidParameterError, match="busy"):
        s.generate("Another question", max_tokens=4)
    st.cancel()
    r = s.generate("Another question", max_tokens=4, temperature=0)  # waits for the cache's return
    assert r.token_ids == m.generate("Another question", max_tokens=4, temperature=0).token_ids


def _run_staggered(
    model: Model, prompts: list[list[int]], n: int, join_after: int, repeat_penalty: float = 1.1
) -> list[list[int]]:
    """Stream every prompt from its own thread; request i starts once request i-1 has produced
    ``join_after`` tokens, so sequences join a running batch at different steps."""
    out: list[list[int]] = [[] for _ in prompts]
    started = [threading.Event() for _ in prompts]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            if i > 0:
                started[i - 1].wait(60)
            stream = model.generate(
                prompts[i], max_tokens=n, temperature=0, repeat_penalty=repeat_penalty, stream=True
            )
            for c in stream:
                out[i].extend(c.token_ids)
                if len(out[i]) >= join_after:
                    started[i].set()
            started[i].set()
        except BaseException as e:
            errors.append(e)
            started[i].set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


@pytest.mark.parametrize("n_seq", [1, 2, 4, 7])
def test_batched_sequences_equal_their_lone_output(m: Model, n_seq: int) -> None:
    tok = m.tokenizer
    prompts = [
        tok.encode(f"Question {i}: " + "Describe the symptoms of anemia in detail. " * (1 + 3 * i))
        for i in range(n_seq)
    ]
    n = 20
    alone = [m.generate(p, max_tokens=n, temperature=0).token_ids for p in prompts]
    before = m.scheduler_stats
    got = _run_staggered(m, prompts, n, join_after=3)
    after = m.scheduler_stats
    for i in range(n_seq):
        assert got[i] == alone[i], f"sequence {i} of {n_seq}"
    if n_seq > 1:
        assert after["max_batch"] >= 2
        # fewer passes than sequences x tokens: they shared passes over the weights
        assert after["passes"] - before["passes"] < n_seq * n
    assert after["active"] == 0 and after["queued"] == 0


@pytest.mark.oracle
@pytest.mark.parametrize("quant", ["F32", "F16"])
def test_batched_matches_llama_cpp_greedy(tiny: Callable[..., Path], quant: str) -> None:
    """On the types without 8-bit activations (no rounding noise, see test_parity_llamacpp.py)
    the batched streams equal llama.cpp's greedy ids exactly."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = tiny(quant)
    llm = llama_cpp.Llama(
        str(path), n_ctx=256, type_k=0, type_v=0, flash_attn=False, verbose=False, n_threads=2
    )
    prompts = [[1, *range(5 + 7 * i, 30 + 11 * i)] for i in range(4)]
    want = []
    for p in prompts:
        llm.reset()
        ids: list[int] = []
        for t in llm.generate(p, temp=0.0, top_k=1, repeat_penalty=1.0):
            ids.append(int(t))
            if len(ids) == 24 or t == llm.token_eos():  # med42-rs ends at end-of-text
                break
        want.append(ids)
    got = _run_staggered(Model.load(path, n_parallel=4), prompts, 24, join_after=2, repeat_penalty=1.0)
    assert got == want


def test_cancel_one_mid_batch_and_the_others_finish_unchanged(m: Model) -> None:
    tok = m.tokenizer
    # counting: no end-of-text token within 30 steps
    prompts = [tok.encode(" ".join(str(i) for i in range(k, k + 20))) for k in (3, 50, 700)]
    alone = [m.generate(p, max_tokens=30, temperature=0).token_ids for p in prompts]
    streams = [m.generate(p, max_tokens=30, temperature=0, stream=True) for p in prompts]
    got: list[list[int]] = [[], [], []]
    for _ in range(5):
        for i, s in enumerate(streams):
            got[i].extend(next(s).token_ids)
    streams[1].cancel()
    assert list(streams[1]) == []
    for i in (0, 2):
        for c in streams[i]:
            got[i].extend(c.token_ids)
        assert got[i] == alone[i]
    assert got[1] == alone[1][: len(got[1])]


def test_queue_bound_is_an_error_not_a_hang(smollm2: Path) -> None:
    m = Model.load(smollm2, n_ctx=2048, n_parallel=1, max_queue=1)
    assert m.n_parallel == 1
    long = m.tokenizer.encode("Describe the heart. " * 250)
    a = m.generate(long, max_tokens=400, stream=True)
    b = m.generate(long, max_tokens=400, stream=True)
    t0 = time.monotonic()
    with pytest.raises(med42_rs.QueueFullError, match="queue is full"):
        m.generate(long, max_tokens=400, stream=True)
    assert time.monotonic() - t0 < 5
    a.cancel()
    b.cancel()
    r = m.generate("Hello", max_tokens=3, temperature=0)  # usable afterwards
    assert len(r.token_ids) == 3


def test_many_threads_many_requests_flat_memory(tiny_m: Model) -> None:
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def burst(n_req: int) -> None:
        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                for j in range(n_req):
                    p = [1, *range(2 + (k + j) % 9, 40 + k)]
                    r = tiny_m.generate(p, max_tokens=6, temperature=0.7, seed=k * 100 + j)
                    assert len(r.token_ids) <= 6
            except BaseException as e:
                errors.append(e)

        ts = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not errors, errors

    burst(5)  # warm up: scratch buffers grow to their largest batch
    base = rss()
    burst(20)
    grown = rss() - base
    assert grown < 16 << 20, f"RSS grew by {grown / 2**20:.1f} MiB over 160 requests"
    assert tiny_m.scheduler_stats["max_batch"] >= 2


def test_logprobs_equal_log_softmax_of_the_logits(m: Model) -> None:
    import numpy as np

    prompt = m.tokenizer.encode("The heart has four")
    r = m.generate(prompt, max_tokens=8, temperature=0, repeat_penalty=1.0, logprobs=5)
    assert r.logprobs is not None and len(r.logprobs) == len(r.token_ids) == 8
    # oracle: float64 log-softmax of the logits of the same sequence, computed here
    logits = m.logits(prompt + r.token_ids).astype(np.float64)
    for i, lp in enumerate(r.logprobs):
        row = logits[len(prompt) - 1 + i]
        ls = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        assert lp.token_id == r.token_ids[i]
        assert abs(lp.logprob - ls[lp.token_id]) < 1e-4
        want = np.argsort(-ls, kind="stable")[:5]
        assert [t for t, _ in lp.top] == want.tolist()
        assert np.allclose([x for _, x in lp.top], ls[want], atol=1e-4)
        assert lp.top[0][0] == lp.token_id  # greedy picks the most likely
    # streamed: one entry per token id of every chunk
    chunks = list(
        m.generate(prompt, max_tokens=8, temperature=0, repeat_penalty=1.0, logprobs=0, stream=True)
    )
    assert all(c.logprobs is not None and len(c.logprobs) == len(c.token_ids) for c in chunks)
    assert all(lp.top == [] for c in chunks for lp in c.logprobs or [])
    # without the option there are none; out of range is an error before anything runs
    assert m.generate(prompt, max_tokens=2).logprobs is None
    with pytest.raises(med42_rs.InvalidParameterError, match="logprobs"):
        m.generate(prompt, max_tokens=2, logprobs=21)
    with pytest.raises(med42_rs.InvalidParameterError, match="logprobs"):
        m.session().generate(prompt, max_tokens=2, logprobs=21)
