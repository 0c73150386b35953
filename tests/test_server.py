"""``med42 serve`` against the real ``openai`` client on loopback: answers equal the Python API's
on the same input (SmolLM2, greedy), streams end with ``data: [DONE]``, usage counts equal
llama.cpp's tokenizer, errors come back as OpenAI error objects the client parses, and several
streams run at once."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import med42_rs
import numpy as np
import openai
import pytest
import uvicorn
from med42_rs.server import ServerConfig, create_app

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}
"""The request fields (and Model keywords) of a reproducible greedy answer."""
Q = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Running:
    url: str
    server: uvicorn.Server

    def client(self, key: str = "none", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=key, **{"max_retries": 0, "timeout": 60, **kw}
        )

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A raw POST (for bodies the openai client cannot send); returns (status, JSON body)."""
        h = {"Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.url + path, data=body, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_idle(self, timeout: float = 20) -> dict[str, Any]:
        """``/health`` once no slot is generating (fails after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.get("/health")
            if h["slots_processing"] == 0 and h["requests_waiting"] == 0:
                return dict(h)
            assert time.monotonic() < deadline, f"slots still busy: {h}"
            time.sleep(0.02)


@contextlib.contextmanager
def serve(model: med42_rs.Model, **config: Any) -> Iterator[Running]:
    """A real uvicorn server for ``model`` on a free loopback port, in a thread."""
    app = create_app(model, ServerConfig(model_id=config.pop("model_id", "test-model"), **config))
    cfg = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=5)
    sock = cfg.bind_socket()
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{sock.getsockname()[1]}", server)
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def smol(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=2048)


@pytest.fixture(scope="module")
def srv(smol: med42_rs.Model) -> Iterator[Running]:
    with serve(smol, parallel=4, max_waiting=8) as s:
        yield s


@pytest.fixture(scope="module")
def vocab(smollm2: Path) -> Any:
    """llama.cpp's tokenizer for SmolLM2 (the oracle for token counts)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(smollm2), vocab_only=True, verbose=False)


def sse_lines(url: str, body: dict[str, Any]) -> list[str]:
    """The raw ``data:`` lines of a streamed response."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        text = r.read().decode()
    return [line for line in text.split("\n") if line]


# ----------------------------------------------------------------------------------------------
# answers


def test_models_health_and_props(srv: Running, smol: med42_rs.Model) -> None:
    models = srv.client().models.list().data
    assert [m.id for m in models] == ["test-model"]
    h = srv.get("/health")
    assert h["status"] == "ok" and h["slots_idle"] == 4
    props = srv.get("/props")
    assert props["n_ctx"] == smol.n_ctx == 2048 and props["parallel"] == 4
    assert props["license"] is None  # SmolLM2 is not gated
    assert srv.client().models.retrieve("test-model").id == "test-model"
    with pytest.raises(openai.NotFoundError):
        srv.client().models.retrieve("gpt-4")


def test_chat_equals_model_chat_and_usage_equals_llama_cpp(
    srv: Running, smol: med42_rs.Model, vocab: Any
) -> None:
    r = srv.client().chat.completions.create(model="x", messages=Q, max_tokens=24, extra_body=GREEDY)
    want = smol.chat(Q, max_tokens=24, **GREEDY)
    assert r.choices[0].message.content == want.text and want.text
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == {"eos": "stop"}.get(want.finish_reason, want.finish_reason)
    # Token counts from llama.cpp's own tokenizer of the same prompt text.
    prompt_text = smol.chat_prompt(Q)
    n_prompt = len(vocab.tokenize(prompt_text.encode(), add_bos=False, special=True))
    assert r.usage is not None
    assert r.usage.prompt_tokens == n_prompt
    assert r.usage.completion_tokens == len(want.token_ids)
    assert r.usage.total_tokens == n_prompt + len(want.token_ids)


def test_finish_reason_length_counts_max_tokens(srv: Running) -> None:
    r = srv.client().completions.create(
        model="x", prompt="The history of medicine", max_tokens=7, extra_body=GREEDY
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 7
    # max_completion_tokens is the newer name of the same limit
    c = srv.client().chat.completions.create(
        model="x", messages=Q, max_completion_tokens=5, extra_body=GREEDY
    )
    assert c.choices[0].finish_reason == "length" and c.usage is not None and c.usage.completion_tokens == 5


def test_chat_stream_equals_whole_and_ends_with_done(srv: Running, smol: med42_rs.Model) -> None:
    want = smol.chat(Q, max_tokens=24, **GREEDY)
    stream = srv.client().chat.completions.create(
        model="x",
        messages=Q,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=GREEDY,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None
    )  # include_usage: a last, choice-less chunk
    assert chunks[-1].usage.completion_tokens == len(want.token_ids)
    assert all(c.usage is None for c in chunks[:-1])
    # On the wire: data lines, the last one [DONE]
    lines = sse_lines(
        srv.url + "/v1/chat/completions", {"messages": Q, "max_tokens": 5, "stream": True, **GREEDY}
    )
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] is not None


def test_completions_text_ids_batch_and_echo(srv: Running, smol: med42_rs.Model) -> None:
    c = srv.client()
    prompts = ["The history of medicine", "Aspirin is used to"]
    want = [smol.generate(p, max_tokens=12, **GREEDY).text for p in prompts]
    r = c.completions.create(model="x", prompt=prompts[0], max_tokens=12, extra_body=GREEDY)
    assert r.choices[0].text == want[0]
    ids = smol.tokenizer.encode(prompts[1])
    r = c.completions.create(model="x", prompt=ids, max_tokens=12, extra_body=GREEDY)
    assert r.choices[0].text == want[1]
    r = c.completions.create(model="x", prompt=prompts, max_tokens=12, extra_body=GREEDY)
    assert [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)] == want
    assert r.usage is not None and r.usage.prompt_tokens == sum(
        len(smol.tokenizer.encode(p)) for p in prompts
    )
    r = c.completions.create(model="x", prompt=prompts[0], max_tokens=12, echo=True, extra_body=GREEDY)
    assert r.choices[0].text == prompts[0] + want[0]
    s = c.completions.create(model="x", prompt=prompts[0], max_tokens=12, stream=True, extra_body=GREEDY)
    assert "".join(ch.choices[0].text for ch in s) == want[0]


def test_stop_string_across_chunks(srv: Running, smol: med42_rs.Model) -> None:
    full = smol.generate("The history of medicine", max_tokens=30, **GREEDY)
    pieces = [smol.tokenizer.decode([t]) for t in full.token_ids]
    # A stop string that starts inside one token's text and ends inside a later one.
    k = next(i for i in range(2, len(pieces) - 2) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 1)
    start = sum(len(p) for p in pieces[:k]) + 1
    stop = full.text[start : start + len(pieces[k]) + 1]
    assert full.text.find(stop) == start, "pick a stop that first occurs there"
    c = srv.client()
    s = c.completions.create(
        model="x",
        prompt="The history of medicine",
        max_tokens=30,
        stop=[stop, "zzzz"],
        stream=True,
        extra_body=GREEDY,
    )
    chunks = list(s)
    assert "".join(ch.choices[0].text for ch in chunks) == full.text[:start]
    assert chunks[-1].choices[0].finish_reason == "stop"
    r = c.completions.create(
        model="x", prompt="The history of medicine", max_tokens=30, stop=stop, extra_body=GREEDY
    )
    assert r.choices[0].text == full.text[:start] and r.choices[0].finish_reason == "stop"
    # negative control: without the stop the text goes on past it
    r = c.completions.create(model="x", prompt="The history of medicine", max_tokens=30, extra_body=GREEDY)
    assert r.choices[0].text == full.text and stop in r.choices[0].text


def test_seed_and_n(srv: Running, smol: med42_rs.Model) -> None:
    c = srv.client()
    kw: dict[str, Any] = {"temperature": 1.0, "max_tokens": 12}
    a = c.completions.create(model="x", prompt="Symptoms of flu", seed=7, n=2, **kw)
    b = c.completions.create(model="x", prompt="Symptoms of flu", seed=7, **kw)
    texts = [ch.text for ch in sorted(a.choices, key=lambda ch: ch.index)]
    assert texts[0] == b.choices[0].text == smol.generate("Symptoms of flu", seed=7, **kw).text
    # choice i draws with seed + i
    assert texts[1] == smol.generate("Symptoms of flu", seed=8, **kw).text
    assert texts[0] != texts[1]  # negative control: the two choices are different draws
    assert a.usage is not None and a.usage.prompt_tokens == len(smol.tokenizer.encode("Symptoms of flu"))


def test_chat_template_option(smol: med42_rs.Model) -> None:
    want = smol.chat(Q, template="med42", max_tokens=12, **GREEDY)
    assert want.text != smol.chat(Q, max_tokens=12, **GREEDY).text  # negative control: the templates differ
    with serve(smol, parallel=1, template="med42") as s:
        r = s.client().chat.completions.create(model="x", messages=Q, max_tokens=12, extra_body=GREEDY)
    assert r.choices[0].message.content == want.text
    assert r.usage is not None and r.usage.prompt_tokens == len(smol.chat_ids(Q, template="med42"))


def test_streamed_choices_interleave_by_index(srv: Running, smol: med42_rs.Model) -> None:
    kw: dict[str, Any] = {"temperature": 1.0, "max_tokens": 10, "seed": 11}
    s = srv.client().completions.create(model="x", prompt="Symptoms of flu", n=3, stream=True, **kw)
    texts = ["", "", ""]
    finishes = [None, None, None]
    for ch in s:
        for c in ch.choices:
            texts[c.index] += c.text
            finishes[c.index] = c.finish_reason or finishes[c.index]
    assert texts == [smol.generate("Symptoms of flu", **{**kw, "seed": 11 + i}).text for i in range(3)]
    assert all(f is not None for f in finishes)


def test_chat_content_parts_and_developer_role(srv: Running, smol: med42_rs.Model) -> None:
    parts = [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}]
    msgs: list[Any] = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": parts},
    ]
    r = srv.client().chat.completions.create(model="x", messages=msgs, max_tokens=12, extra_body=GREEDY)
    plain = [{"role": "system", "content": "Answer briefly."}, Q[0]]
    assert r.choices[0].message.content == smol.chat(plain, max_tokens=12, **GREEDY).text


def test_completion_logprobs_equal_the_engine_and_log_softmax(srv: Running, smol: med42_rs.Model) -> None:
    prompt = "The history of medicine"
    want = smol.generate(prompt, max_tokens=6, logprobs=2, **GREEDY)
    assert want.logprobs is not None
    r = srv.client().completions.create(model="x", prompt=prompt, max_tokens=6, logprobs=2, extra_body=GREEDY)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.token_logprobs is not None and lp.tokens is not None
    assert lp.token_logprobs == pytest.approx([t.logprob for t in want.logprobs])
    assert "".join(lp.tokens) == r.choices[0].text == want.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert lp.top_logprobs is not None
    for tok, tlp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert (
            len(top) == 2 and max(top.values()) == pytest.approx(tlp) and top[tok] == pytest.approx(tlp)
        )  # greedy
    # the first token's log-probability against a float64 log-softmax of the model's logits
    x = smol.logits(smol.tokenizer.encode(prompt))[-1].astype(np.float64)
    log_softmax = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
    assert lp.token_logprobs[0] == pytest.approx(log_softmax[want.token_ids[0]], abs=1e-3)
    # echo shifts the offsets by the prompt
    e = srv.client().completions.create(
        model="x", prompt=prompt, max_tokens=3, logprobs=0, echo=True, extra_body=GREEDY
    )
    assert e.choices[0].logprobs is not None and e.choices[0].logprobs.text_offset is not None
    assert e.choices[0].logprobs.text_offset[0] == len(prompt)


def test_chat_logprobs_whole_and_streamed(srv: Running, smol: med42_rs.Model) -> None:
    c = srv.client()
    msgs = [{"role": "user", "content": "Name a bone in the arm."}]
    want = smol.chat(msgs, max_tokens=8, logprobs=3, **GREEDY)
    assert want.logprobs is not None
    r = c.chat.completions.create(
        model="x", messages=msgs, max_tokens=8, logprobs=True, top_logprobs=3, extra_body=GREEDY
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None
    assert [t.logprob for t in lp.content] == pytest.approx([t.logprob for t in want.logprobs])
    assert [t.token for t in lp.content] == [smol.tokenizer.decode([t.token_id]) for t in want.logprobs]
    assert all(len(t.top_logprobs) == 3 and bytes(t.bytes or []).decode() == t.token for t in lp.content)
    s = c.chat.completions.create(
        model="x", messages=msgs, max_tokens=8, logprobs=True, top_logprobs=3, stream=True, extra_body=GREEDY
    )
    streamed = [
        t for ch in s if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content or []
    ]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in lp.content]
    # negative control: without logprobs the choice carries none
    plain = c.chat.completions.create(model="x", messages=msgs, max_tokens=8, extra_body=GREEDY)
    assert plain.choices[0].logprobs is None


def test_tokenize_and_detokenize_match_llama_cpp(srv: Running, vocab: Any) -> None:
    text = "Ibuprofen 400 mg, twice daily <|im_end|> é"
    st, body = srv.post("/tokenize", json.dumps({"content": text}).encode())
    assert st == 200
    assert body["tokens"] == vocab.tokenize(text.encode(), add_bos=False, special=True)
    st, body2 = srv.post("/tokenize", json.dumps({"content": text, "parse_special": False}).encode())
    assert body2["tokens"] == vocab.tokenize(text.encode(), add_bos=False, special=False) != body["tokens"]
    st, pieces = srv.post("/tokenize", json.dumps({"content": "Ibuprofen", "with_pieces": True}).encode())
    assert "".join(p["piece"] for p in pieces["tokens"]) == "Ibuprofen"
    st, back = srv.post("/detokenize", json.dumps({"tokens": body2["tokens"]}).encode())
    assert st == 200 and back["content"] == text
    st, err = srv.post("/detokenize", json.dumps({"tokens": [10**9]}).encode())
    assert st == 400 and err["error"]["param"] == "tokens"
