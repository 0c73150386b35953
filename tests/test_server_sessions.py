"""``med42 serve`` over the engine's sessions: each slot keeps its KV cache, a request goes to the
free slot whose cache shares the longest prefix with its prompt (``cache_prompt``), the reused
tokens are reported as ``usage.prompt_tokens_details.cached_tokens``, and reuse never changes the
answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import med42_rs
import pytest
from test_server import GREEDY, Running, serve

pytestmark = pytest.mark.skipif(
    not hasattr(med42_rs.Model, "session"), reason="the engine has no sessions (Model.session) in this build"
)


@pytest.fixture(scope="module")
def smol(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=2048)


@pytest.fixture(scope="module")
def srv(smol: med42_rs.Model) -> Iterator[Running]:
    with serve(smol, parallel=2) as s:
        yield s


def _cached(r: object) -> int:
    usage = getattr(r, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", 0) or 0)


def test_second_turn_reuses_the_first_turns_cache(srv: Running, smol: med42_rs.Model) -> None:
    assert srv.get("/props")["prompt_cache"] is True
    c = srv.client()
    turn1 = [{"role": "user", "content": "What is the capital of France?"}]
    r1 = c.chat.completions.create(model="x", messages=turn1, max_tokens=16, extra_body=GREEDY)
    # another conversation in between takes the other slot or evicts nothing of the first
    other = [{"role": "user", "content": "Name a bone in the arm."}]
    c.chat.completions.create(model="x", messages=other, max_tokens=8, extra_body=GREEDY)
    turn2 = [
        *turn1,
        {"role": "assistant", "content": r1.choices[0].message.content or ""},
        {"role": "user", "content": "And of Italy?"},
    ]
    r2 = c.chat.completions.create(model="x", messages=turn2, max_tokens=16, extra_body=GREEDY)
    n1 = len(smol.chat_ids(turn1))
    assert r2.usage is not None
    assert n1 <= _cached(r2) < r2.usage.prompt_tokens  # at least the first turn's prompt was reused
    assert r2.choices[0].message.content == smol.chat(turn2, max_tokens=16, **GREEDY).text
    # negative control: without cache_prompt nothing is reused, and the answer is the same
    r3 = c.chat.completions.create(
        model="x", messages=turn2, max_tokens=16, extra_body={**GREEDY, "cache_prompt": False}
    )
    assert _cached(r3) == 0
    assert r3.choices[0].message.content == r2.choices[0].message.content
