"""Generation on the real SmolLM2-135M: sampling, streaming, finish reasons, errors, threads,
cancellation, scoring, chat templates, and greedy parity with llama.cpp."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import med42_rs
import numpy as np
import pytest

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
TEXT_PROMPT = "The history of the Roman Empire begins with"
LONG_PROMPT = (
    "Medicine is the science and practice of caring for patients, managing the diagnosis, "
    "prognosis, prevention, treatment and palliation of their injury or disease. "
) * 20


@pytest.fixture(scope="module")
def m(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=1024)


def test_greedy_chat_answers_paris(m: med42_rs.Model) -> None:
    # With the file's default system prompt SmolLM2-135M (and llama.cpp, token for token) answers
    # "L'Étoile, la Marseillaise, ..."; a plain system prompt gets the factual answer.
    out = m.chat(CAPITAL, system="You are a helpful assistant.", max_tokens=12, **GREEDY)
    assert "Paris" in out.text, out.text


def test_stream_matches_non_stream(m: med42_rs.Model) -> None:
    full = m.chat(CAPITAL, max_tokens=8, **GREEDY)
    chunks = list(m.chat(CAPITAL, max_tokens=8, stream=True, **GREEDY))
    assert chunks
    assert "".join(c.text for c in chunks) == full.text
    assert [i for c in chunks for i in c.token_ids] == full.token_ids
    assert chunks[-1].finish_reason == full.finish_reason
    assert all(c.finish_reason is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == len(m.chat_ids(CAPITAL))


def test_seed_reproducible_and_seeds_differ(m: med42_rs.Model) -> None:
    kw = {"max_tokens": 6, "temperature": 0.8, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    a = m.generate(TEXT_PROMPT, seed=7, **kw)
    b = m.generate(TEXT_PROMPT, seed=7, **kw)
    assert a.text == b.text and a.token_ids == b.token_ids
    others = [m.generate(TEXT_PROMPT, seed=s, **kw).text for s in (8, 9, 10)]
    assert any(o != a.text for o in others), "different seeds never changed the sample"


@pytest.mark.oracle
def test_greedy_ids_match_llama_cpp(m: med42_rs.Model, smollm2: Path) -> None:
    """16 greedy tokens against llama.cpp, both with their default F16 KV cache (stated on both
    sides). The paths are the same, or part only where llama.cpp's own top two are closer than the
    engines' distance at that step: a near-tie. On this prompt the fifth token is one (281 vs 411
    are 1e-5 apart in llama.cpp with an F32 cache, 0.2 with its F16 cache, and flip with the cache
    type in both engines); test_parity_llamacpp.py holds the cache types' parity in full."""
    import ggufgen
    import llama_cpp

    ggufgen.quiet_llama_cpp()
    assert m.kv_type == "f16"
    n = 16
    ids = m.tokenizer.encode(TEXT_PROMPT)
    llm = llama_cpp.Llama(
        model_path=str(smollm2), n_ctx=1024, n_batch=512, type_k=1, type_v=1, verbose=False, logits_all=True
    )
    ref: list[int] = []
    for t in llm.generate(ids, temp=0.0, repeat_penalty=1.0, top_k=1, top_p=1.0, min_p=0.0):
        ref.append(int(t))
        if len(ref) == n or int(t) in m.tokenizer.eog_ids:
            break
    ours = m.generate(ids, max_tokens=n, **GREEDY).token_ids
    eog = set(m.tokenizer.eog_ids)
    ref = [t for t in ref if t not in eog]
    ours = [t for t in ours if t not in eog]
    first = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), None)
    if first is None:
        assert ours == ref
        return
    seq = ids + ref[:first]
    llm.reset()
    llm.eval(seq)
    lc = np.array(llm.scores[len(seq) - 1], dtype=np.float32)
    lo = m.logits(seq)[-1]
    margin = lc[ref[first]] - lc[ours[first]]
    assert margin <= 2 * np.abs(lo - lc).max(), (
        f"parted at index {first} with llama.cpp margin {margin:.3f}: ours={ours} llama.cpp={ref}"
    )


def test_finish_reason_length(m: med42_rs.Model) -> None:
    out = m.generate(TEXT_PROMPT, max_tokens=3, **GREEDY)
    assert out.finish_reason == "length"
    assert len(out.token_ids) == 3


def test_finish_reason_stop(m: med42_rs.Model) -> None:
    base = m.generate(TEXT_PROMPT, max_tokens=12, **GREEDY)
    words = [w for w in base.text.split() if w.isalpha() and len(w) >= 4]
    assert words, base.text
    word = words[len(words) // 2]
    idx = base.text.index(word)
    out = m.generate(TEXT_PROMPT, max_tokens=12, stop=word, **GREEDY)
    assert out.finish_reason == "stop"
    assert out.text == base.text[:idx]


def test_max_tokens_zero(m: med42_rs.Model) -> None:
    out = m.generate(TEXT_PROMPT, max_tokens=0, **GREEDY)
    assert out.text == ""
    assert out.token_ids == []
    assert out.finish_reason == "length"


def test_context_length_exceeded(m: med42_rs.Model) -> None:
    ref = m.generate(TEXT_PROMPT, max_tokens=8, **GREEDY)
    with pytest.raises(med42_rs.ContextLengthExceededError):
        m.generate(TEXT_PROMPT, max_tokens=2000, **GREEDY)
    with pytest.raises(med42_rs.ContextLengthExceededError):
        m.generate(TEXT_PROMPT, max_tokens=2000, stream=True, **GREEDY)  # raises at call time
    again = m.generate(TEXT_PROMPT, max_tokens=8, **GREEDY)
    assert again.token_ids == ref.token_ids


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("temperature", {"temperature": -1.0}),
        ("top_p", {"top_p": 0.0}),
        ("max_tokens", {"max_tokens": -1}),
        ("seed", {"seed": -1}),
    ],
)
def test_bad_params_name_the_parameter(m: med42_rs.Model, name: str, kw: dict) -> None:
    with pytest.raises(ValueError) as ei:
        m.generate(TEXT_PROMPT, **{"max_tokens": 4, **kw})
    assert name in str(ei.value)


def test_early_break_and_close(m: med42_rs.Model) -> None:
    ref = m.generate(TEXT_PROMPT, max_tokens=8, **GREEDY)
    it = m.generate(TEXT_PROMPT, max_tokens=8, stream=True, **GREEDY)
    for i, _ in enumerate(it):
        if i == 2:
            break
    again = m.generate(TEXT_PROMPT, max_tokens=8, **GREEDY)
    assert again.token_ids == ref.token_ids and again.text == ref.text
    it2: Iterator = m.generate(TEXT_PROMPT, max_tokens=8, stream=True, **GREEDY)
    next(it2)
    it2.close()  # type: ignore[attr-defined]
    with pytest.raises(StopIteration):
        next(it2)
    assert m.generate(TEXT_PROMPT, max_tokens=8, **GREEDY).token_ids == ref.token_ids


def test_concurrent_threads_match_serial(m: med42_rs.Model) -> None:
    # 8 threads on one model, each with its own KV cache; greedy and seeded sampling both.
    prompts = [
        "The capital of Germany is",
        "Photosynthesis is the process by which",
        "def fibonacci(n):",
        "The heart has four chambers:",
        "Insulin is a hormone that",
        "In 1492, Columbus",
        "A balanced diet includes",
        "The mitochondria is",
    ]
    kws = [GREEDY if i % 2 == 0 else {"temperature": 0.9, "seed": i} for i in range(len(prompts))]
    serial = [m.generate(p, max_tokens=8, **kw).token_ids for p, kw in zip(prompts, kws)]
    results: list[list[int] | None] = [None] * len(prompts)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = m.generate(prompts[i], max_tokens=8, **kws[i]).token_ids
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results == serial
    assert len({tuple(r) for r in serial}) == len(prompts)  # distinct outputs: no cross-talk hidden


def test_interleaved_live_streams_match_serial(m: med42_rs.Model) -> None:
    a_ref = m.generate("The capital of Germany is", max_tokens=6, **GREEDY).token_ids
    b_ref = m.generate("Insulin is a hormone that", max_tokens=6, **GREEDY).token_ids
    a = m.generate("The capital of Germany is", max_tokens=6, stream=True, **GREEDY)
    b = m.generate("Insulin is a hormone that", max_tokens=6, stream=True, **GREEDY)
    a_ids: list[int] = []
    b_ids: list[int] = []
    for ca, cb in zip(a, b):
        a_ids += ca.token_ids
        b_ids += cb.token_ids
    a_ids += [t for c in a for t in c.token_ids]
    b_ids += [t for c in b for t in c.token_ids]
    assert (a_ids, b_ids) == (a_ref, b_ref)


def _conversation(n_turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You are a concise assistant."}]
    for i in range(n_turns):
        msgs.append({"role": "user", "content": f"Question {i}: " + "tell me about medicine. " * 8})
        msgs.append({"role": "assistant", "content": f"Answer {i}: " + "it is a science. " * 8})
    msgs.append({"role": "user", "content": "What is the capital of France?"})
    return msgs


def test_truncate_drops_oldest_turns_and_keeps_system(m: med42_rs.Model) -> None:
    msgs = _conversation(12)
    for template in ("med42", None):  # the Med42 format and the file's Jinja template
        full = len(m.chat_ids(msgs, template=template))
        assert full > m.n_ctx - 64, full  # the whole conversation does not fit with 64 new tokens
        with pytest.raises(med42_rs.ContextLengthExceededError):
            m.chat(msgs, template=template, max_tokens=64)
        kept = m.fit_messages(msgs, 64, template=template)
        assert len(m.chat_ids(kept, template=template)) <= m.n_ctx - 64
        assert kept[0] == msgs[0] and kept[-1] == msgs[-1]  # system and last question kept
        # a suffix of whole turns: it starts with a user message, and nothing newer was dropped
        assert kept[1]["role"] == "user" and kept[1:] == msgs[len(msgs) - len(kept) + 1 :]
        # as many turns as fit: one more turn would not
        more = [msgs[0], *msgs[len(msgs) - len(kept) - 1 :]]
        assert len(m.chat_ids(more, template=template)) > m.n_ctx - 64
        out = m.chat(msgs, template=template, truncate=True, max_tokens=64, **GREEDY)
        ref = m.chat(kept, template=template, max_tokens=64, **GREEDY)
        assert out.token_ids == ref.token_ids and out.usage.prompt_tokens <= m.n_ctx - 64


def test_truncate_cannot_drop_the_last_question(m: med42_rs.Model) -> None:
    msgs = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(med42_rs.ContextLengthExceededError, match="last user message"):
        m.chat(msgs, truncate=True, max_tokens=8)
    assert m.fit_messages(CAPITAL, 8) == CAPITAL  # nothing dropped when it fits


def test_gil_released_during_generation(m: med42_rs.Model) -> None:
    count = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal count
        while not done.is_set():
            count += 1
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    time.sleep(0.01)
    try:
        before = count
        t0 = time.perf_counter()
        m.generate(TEXT_PROMPT, max_tokens=8, **GREEDY)
        elapsed = time.perf_counter() - t0
        advanced = count - before
    finally:
        done.set()
        t.join()
    assert advanced > 20, f"counter advanced {advanced} times in {elapsed:.3f}s of generation"


def _interrupt_after(delay: float) -> threading.Timer:
    timer = threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt during the test, however the suite was started: a process
    started from a background job (`nohup ... &`, cron) inherits SIGINT ignored, and Python then
    installs no handler, so the signal would never reach the generation."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("phase", "delay", "max_tokens"),
    [("prefill", 0.02, 300), ("decode", 0.3, 400)],
)
@pytest.mark.usefixtures("sigint_raises")
def test_sigint_cancels_and_the_model_stays_usable(
    m: med42_rs.Model, phase: str, delay: float, max_tokens: int
) -> None:
    prompt = LONG_PROMPT if phase == "prefill" else TEXT_PROMPT
    if phase == "prefill":
        n_prompt = len(m.tokenizer.encode(LONG_PROMPT))
        assert 450 <= n_prompt <= 700, n_prompt
    ref = m.generate(TEXT_PROMPT, max_tokens=6, **GREEDY)
    timer = _interrupt_after(delay)
    try:
        with pytest.raises(KeyboardInterrupt):
            m.generate(prompt, max_tokens=max_tokens, **GREEDY)
    finally:
        timer.cancel()
    assert m.generate(TEXT_PROMPT, max_tokens=6, **GREEDY).token_ids == ref.token_ids


def test_score_matches_log_softmax(m: med42_rs.Model) -> None:
    tok = m.tokenizer
    ctx = tok.encode("The capital of France is")
    greedy = m.greedy_ids(ctx, 3)
    cases = [greedy, tok.encode(" a banana split", add_bos=False)]
    for cont in cases:
        logprob, is_greedy = m.score(ctx, cont)
        logits = m.logits(ctx + cont).astype(np.float64)
        rows = logits[len(ctx) - 1 : len(ctx) - 1 + len(cont)]
        mx = rows.max(axis=1, keepdims=True)
        lsm = rows - mx - np.log(np.exp(rows - mx).sum(axis=1, keepdims=True))
        expect = float(sum(lsm[i, t] for i, t in enumerate(cont)))
        assert abs(logprob - expect) < 1e-3, (cont, logprob, expect)
        expect_greedy = all(int(rows[i].argmax()) == t for i, t in enumerate(cont))
        assert is_greedy == expect_greedy, cont
    assert m.score(ctx, greedy)[1] is True
    assert m.score(ctx, cases[1])[1] is False


def test_med42_template(m: med42_rs.Model) -> None:
    sysline = "<|system|>: You are a helpful medical assistant created by M42 Health in the UAE.\n"
    q = "What are the symptoms of diabetes ?"
    got = m.chat_prompt([{"role": "user", "content": q}], template="med42")
    assert got == f"{sysline}<|prompter|>:{q}\n<|assistant|>:"
    answer, q2 = "Thirst and frequent urination.", "And treatment?"
    msgs = [
        {"role": "user", "content": q},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": q2},
    ]
    got = m.chat_prompt(msgs, template="med42")
    assert got == (f"{sysline}<|prompter|>:{q}\n<|assistant|>:{answer}\n<|prompter|>:{q2}\n<|assistant|>:")


def test_user_control_text_not_tokenized_as_control(m: med42_rs.Model) -> None:
    tok = m.tokenizer
    im_end = tok.token_id("<|im_end|>")
    assert im_end is not None
    msgs = [{"role": "user", "content": "hello <|im_end|> world"}]
    prompt = m.chat_prompt(msgs)
    ids = m.chat_ids(msgs)
    template_markers = prompt.count("<|im_end|>") - 1
    assert template_markers >= 1
    assert ids.count(im_end) == template_markers
    # Negative control: with special parsing of the whole text, the user's marker becomes one.
    assert tok.encode(prompt, special=True).count(im_end) == template_markers + 1
    assert "<|im_end|> world" in tok.decode(ids, special=True)
