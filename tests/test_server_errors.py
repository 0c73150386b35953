"""``med42 serve``'s errors: OpenAI error objects (400/401/413/404) that the real ``openai``
client parses into its exception classes, raised before any compute, and a server that keeps
answering after each of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import med42_rs
import openai
import pytest
from test_server import GREEDY, Q, Running, serve

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def smol(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=512)


@pytest.fixture(scope="module")
def srv(smol: med42_rs.Model) -> Iterator[Running]:
    with serve(smol, parallel=2, max_body=1 << 20) as s:
        yield s


def _still_serves(srv: Running) -> None:
    r = srv.client().chat.completions.create(model="x", messages=Q, max_tokens=3, extra_body=GREEDY)
    assert r.choices[0].message.content and r.usage is not None and r.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 2}, "top_p"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
        ({"seed": -2}, "seed"),
        ({"seed": "s"}, "seed"),
        ({"stop": [1, 2]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
        ({"n": "2"}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"top_k": -1}, "top_k"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
        ({"logprobs": "yes"}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 2.5}, "top_logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_bad_chat_fields_are_400_objects(srv: Running, fields: dict[str, Any], param: str) -> None:
    before = srv.get("/health")["tokens_generated"]
    with pytest.raises(openai.BadRequestError) as e:  # extra_body: sent as is, over the typed fields
        srv.client().chat.completions.create(model="x", messages=Q, max_tokens=4, extra_body=fields)
    assert e.value.status_code == 400
    err = e.value.body
    assert isinstance(err, dict)  # the client unwrapped {"error": {...}}
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert srv.get("/health")["tokens_generated"] == before  # refused before any generation


def test_completion_logprobs_out_of_range(srv: Running) -> None:
    for bad in (-1, 21):
        with pytest.raises(openai.BadRequestError) as e:
            srv.client().completions.create(model="x", prompt="hi", max_tokens=2, logprobs=bad)
        assert isinstance(e.value.body, dict) and e.value.body["param"] == "logprobs"


def test_unknown_fields_are_ignored(srv: Running) -> None:
    r = srv.client().chat.completions.create(
        model="x", messages=Q, max_tokens=3, extra_body={**GREEDY, "no_such_field": {"a": 1}, "user": "u1"}
    )
    assert r.usage is not None and r.usage.completion_tokens == 3


def test_context_length_exceeded_before_compute(srv: Running, smol: med42_rs.Model) -> None:
    c = srv.client()
    before = srv.get("/health")["tokens_generated"]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=Q, max_tokens=10**6)
    assert isinstance(e.value.body, dict) and e.value.body["code"] == "context_length_exceeded"
    assert e.value.body["param"] == "messages"
    long = [{"role": "user", "content": "word " * 600}]  # > 512 tokens
    n = len(smol.chat_ids(long))
    assert n > smol.n_ctx
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=long)  # no max_tokens: still no room
    assert isinstance(e.value.body, dict) and e.value.body["code"] == "context_length_exceeded"
    assert f"{n} in the messages" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="x", prompt="word " * 600, max_tokens=1)
    assert isinstance(e.value.body, dict) and e.value.body["param"] == "prompt"
    assert srv.get("/health")["tokens_generated"] == before
    # the boundary: one token more than the room is refused, exactly the room is answered
    room = smol.n_ctx - len(smol.chat_ids(Q))
    with pytest.raises(openai.BadRequestError, match="context length"):
        c.chat.completions.create(model="x", messages=Q, max_tokens=room + 1)
    s = c.chat.completions.create(model="x", messages=Q, max_tokens=room, stream=True, extra_body=GREEDY)
    assert next(iter(s)).choices[0].delta.role == "assistant"
    s.close()


def test_bodies_that_are_not_requests(srv: Running) -> None:
    st, body = srv.post("/v1/chat/completions", b"{not json")
    assert st == 400 and body["error"]["code"] == "invalid_json"
    st, body = srv.post("/v1/chat/completions", b"[1, 2]")
    assert st == 400 and "JSON object" in body["error"]["message"]
    st, body = srv.post("/v1/completions", json.dumps({"prompt": {"a": 1}}).encode())
    assert st == 400 and body["error"]["param"] == "prompt"
    st, body = srv.post("/v1/completions", json.dumps({"prompt": [1, -4]}).encode())
    assert st == 400 and body["error"]["param"] == "prompt"  # the engine's check of token ids
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'  # not JSON, but parsed
    st, body = srv.post("/v1/chat/completions", raw)
    assert st == 400 and body["error"]["param"] == "temperature"
    st, body = srv.post("/v1/nothing", b"{}")
    assert st == 404 and body["error"]["message"]
    _still_serves(srv)


def test_ten_megabytes_of_messages_is_an_error_not_a_crash(srv: Running) -> None:
    huge = [{"role": "user", "content": "x" * (10 << 20)}]
    with pytest.raises(openai.APIStatusError) as e:
        srv.client().chat.completions.create(model="x", messages=huge, max_tokens=2)
    assert e.value.status_code == 413
    assert isinstance(e.value.body, dict) and e.value.body["code"] == "request_too_large"
    _still_serves(srv)


def test_api_key(smol: med42_rs.Model) -> None:
    with serve(smol, parallel=1, api_key=KEY) as s:
        for key in ("wrong", KEY[:-1] + "8", KEY + "0"):
            with pytest.raises(openai.AuthenticationError) as e:
                s.client(key).chat.completions.create(model="x", messages=Q, max_tokens=2)
            assert e.value.status_code == 401
            assert isinstance(e.value.body, dict) and e.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        st, body = s.post("/tokenize", b'{"content": "hi"}')  # no Authorization header at all
        assert st == 401 and body["error"]["code"] == "invalid_api_key"
        st, body = s.post("/v1/completions", b'{"prompt": "hi"}', {"Authorization": f"Basic {KEY}"})
        assert st == 401
        assert s.get("/health")["status"] == "ok"  # health and the page need no key
        assert s.get("/props")["api_key_required"] is True
        r = s.client(KEY).chat.completions.create(model="x", messages=Q, max_tokens=2, extra_body=GREEDY)
        assert r.usage is not None and r.usage.completion_tokens == 2
