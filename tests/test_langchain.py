"""``ChatMed42`` in real LangChain (langchain-core) pipelines, offline on SmolLM2 and the tiny
models: the text a chain returns, streamed or not, is ``Model.chat``'s for the same messages and
sampling; usage counts are the prompt's and the completion's token counts."""

from __future__ import annotations

import asyncio
import functools
import operator
import time
from pathlib import Path

import med42_rs
import pytest
from conftest import tiny_path

pytest.importorskip("langchain_core")
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from med42_rs.integrations.langchain import ChatMed42

SYSTEM = "You are a concise medical assistant."
PROMPT = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])


def msgs(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def smol(smollm2: Path) -> med42_rs.Model:
    return med42_rs.Model.load(smollm2, n_ctx=512)


def test_chain_streamed_and_not_equals_model_chat(smol: med42_rs.Model) -> None:
    chain = PROMPT | ChatMed42(model=smol, max_tokens=32, temperature=0) | StrOutputParser()
    q = "What is metformin used for?"
    ref = smol.chat(msgs(q), max_tokens=32, temperature=0).text
    assert len(ref) > 20
    assert chain.invoke({"question": q}) == ref
    pieces = list(chain.stream({"question": q}))
    assert len([p for p in pieces if p]) > 5  # really streamed, token by token
    assert "".join(pieces) == ref
    # Negative control: another question gives another answer (the comparison is not vacuous).
    assert chain.invoke({"question": "Name one symptom of anemia."}) != ref

    # Sampled: the same seed gives Model.chat's sampled text, through the one SamplingParams.
    sampled = ChatMed42(model=smol, max_tokens=24, temperature=0.9, top_k=20, seed=7)
    ref_s = smol.chat(msgs(q), max_tokens=24, temperature=0.9, top_k=20, seed=7).text
    assert (PROMPT | sampled | StrOutputParser()).invoke({"question": q}) == ref_s
    assert ref_s != smol.chat(msgs(q), max_tokens=24, temperature=0.9, top_k=20, seed=8).text


def test_stop_usage_and_finish_reason(smol: med42_rs.Model) -> None:
    llm = ChatMed42(model=smol, max_tokens=40, temperature=0)
    q = "Name one symptom of anemia."
    messages = [SystemMessage(SYSTEM), HumanMessage(q)]
    ref = smol.chat(msgs(q), max_tokens=40, temperature=0, stop=[","])
    out = llm.invoke(messages, stop=[","])
    assert isinstance(out, AIMessage)
    assert out.content == ref.text and "," not in ref.text
    assert out.response_metadata["finish_reason"] == ref.finish_reason == "stop"
    assert out.usage_metadata is not None
    assert out.usage_metadata["input_tokens"] == len(smol.chat_ids(msgs(q)))
    assert out.usage_metadata["output_tokens"] == len(ref.token_ids)
    # streamed: the chunks add up to the same message, usage included
    total = functools.reduce(operator.add, llm.stream(messages, stop=[","]))
    assert total.content == ref.text
    assert total.usage_metadata == out.usage_metadata
    # a stop given at construction joins the call's
    assert (
        ChatMed42(model=smol, max_tokens=40, temperature=0, stop=[","]).invoke(messages).content == ref.text
    )


def test_sampling_params_fields_and_call_keywords() -> None:
    m = med42_rs.Model.load(tiny_path("Q8_0"))
    base = med42_rs.SamplingParams(max_tokens=12, temperature=0.8, seed=3, repeat_penalty=1.0)
    conv = [{"role": "user", "content": "hello there"}]
    llm = ChatMed42(model=m, sampling=base)
    assert llm.invoke("hello there").content == m.chat(conv, base).text
    # fields override `sampling`, call keywords override both
    assert (
        ChatMed42(model=m, sampling=base, seed=4).invoke("hello there").content
        == m.chat(conv, base, seed=4).text
    )
    assert llm.invoke("hello there", temperature=0).content == m.chat(conv, base, temperature=0).text
    assert m.chat(conv, base).text != m.chat(conv, base, temperature=0).text  # the overrides matter
    with pytest.raises(med42_rs.InvalidParameterError, match="unsupported argument"):
        llm.invoke("hello there", beams=2)
    with pytest.raises(med42_rs.InvalidParameterError, match="temperature"):
        llm.invoke("hello there", temperature=-1)
    assert llm.invoke("hello there").content == m.chat(conv, base).text  # still usable


def test_instances_share_one_loaded_model() -> None:
    path = str(tiny_path("Q4_0"))
    a, b = ChatMed42(path=path, temperature=0), ChatMed42(path=path, temperature=0.5, max_tokens=3)
    assert a.model is b.model
    assert ChatMed42(path=path, n_ctx=64).model is not a.model  # other load options: another model
    m = med42_rs.Model.load(path)
    assert ChatMed42(model=m).model is m
    assert a._llm_type == "med42-rs"


def test_bad_input_is_a_clear_error() -> None:
    m = med42_rs.Model.load(tiny_path("Q8_0"))
    with pytest.raises(med42_rs.InvalidParameterError, match="exactly one of"):
        ChatMed42()
    with pytest.raises(med42_rs.InvalidParameterError, match="exactly one of"):
        ChatMed42(model=m, path="x.gguf")
    with pytest.raises(med42_rs.InvalidParameterError, match=r"must be a med42_rs\.Model"):
        ChatMed42(model="x.gguf")
    with pytest.raises(med42_rs.InvalidParameterError, match="unsupported message type ToolMessage"):
        ChatMed42(model=m).invoke([HumanMessage("hi"), ToolMessage("42", tool_call_id="1")])


def test_async_does_not_block_the_event_loop(smol: med42_rs.Model) -> None:
    """While ainvoke/astream generate, another coroutine keeps running; the same ticker inside a
    blocking call (sync invoke in the loop) does not tick: the measurement can fail."""
    llm = ChatMed42(model=smol, max_tokens=32, temperature=0)
    chain = PROMPT | llm | StrOutputParser()
    q = {"question": "What is metformin used for?"}
    ref = smol.chat(msgs(q["question"]), max_tokens=32, temperature=0).text

    async def with_ticker(work: object) -> tuple[object, int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.002)

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        result = await work() if callable(work) else None  # type: ignore[misc]
        elapsed = time.perf_counter() - t0
        stop.set()
        await t
        return result, ticks, elapsed

    async def astream() -> str:
        return "".join([p async for p in chain.astream(q)])

    async def blocking() -> str:
        return chain.invoke(q)

    async def main() -> None:
        got, ticks, elapsed = await with_ticker(lambda: chain.ainvoke(q))
        assert got == ref
        assert ticks >= 5 and ticks >= elapsed / 0.002 / 20, (ticks, elapsed)
        got, ticks, elapsed = await with_ticker(astream)
        assert got == ref
        assert ticks >= 5 and ticks >= elapsed / 0.002 / 20, (ticks, elapsed)
        got, ticks, _ = await with_ticker(blocking)  # negative control
        assert got == ref and ticks <= 2

    asyncio.run(main())


def test_cancelled_async_stream_stops_and_the_model_stays_usable(smol: med42_rs.Model) -> None:
    llm = ChatMed42(model=smol, max_tokens=200, temperature=0)

    async def main() -> int:
        n = 0
        async for _ in llm.astream("Explain the causes of anemia in detail."):
            n += 1
            if n == 3:
                break
        return n

    assert asyncio.run(main()) == 3
    assert (
        llm.invoke("Hello", max_tokens=4).content
        == smol.chat([{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0).text
    )
