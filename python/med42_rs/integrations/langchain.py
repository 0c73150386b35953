"""LangChain chat model over an in-process :class:`~med42_rs.Model` (no server).

``pip install 'med42-rs[langchain]'``, then::

    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from med42_rs.integrations.langchain import ChatMed42

    llm = ChatMed42(path="med42-70b.Q4_K_M.gguf", accept_license=True, max_tokens=256, temperature=0)
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | llm | StrOutputParser()
    print(chain.invoke({"question": "What are the symptoms of diabetes?"}))

Prompts, stop strings and sampling are :meth:`Model.chat`'s: the chat template of the file (Med42's
format otherwise), its stop handling, and one :class:`~med42_rs.SamplingParams` built from the
fields below, ``sampling`` and the per-call keyword arguments (``llm.invoke(..., temperature=0.2)``).
Instances loading the same file share one loaded model; ``model=`` shares one explicitly.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from ..errors import InvalidParameterError
from ..generation import Chunk, Stream, Usage
from ..model import Model
from ..sampling import SamplingArgs, SamplingParams

__all__ = ["ChatMed42"]

_SAMPLING_FIELDS = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")

# One loaded model per (file, load options), alive while some ChatMed42 uses it.
_shared: weakref.WeakValueDictionary[tuple[Any, ...], Model] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def _load_shared(path: str, **opts: Any) -> Model:
    key = (str(Path(path).resolve()), *sorted(opts.items()))
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = Model.load(path, **opts)
            _shared[key] = model
        return model


def _role(message: BaseMessage) -> str:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ChatMessage) and message.role in ("user", "assistant", "system"):
        return message.role
    raise InvalidParameterError(
        f"ChatMed42: unsupported message type {type(message).__name__}; use system, human or AI messages"
    )


class ChatMed42(BaseChatModel):
    """A LangChain chat model answering with med42-rs in this process.

    Give ``path`` (a GGUF file, loaded once and shared with every other instance of the same file
    and options: ``n_ctx``, ``n_threads``, ``device``, ``accept_license``) or ``model`` (a loaded
    :class:`~med42_rs.Model`). Sampling: ``sampling`` and/or the fields ``max_tokens``,
    ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repeat_penalty``, ``seed``, ``stop`` (fields
    override ``sampling``; call keywords override both; ``stop`` lists are joined). ``system`` and
    ``template`` are passed to :meth:`Model.chat`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Model = Field(default=None, exclude=True)  # type: ignore[assignment]
    path: str | None = None
    n_ctx: int | None = None
    n_threads: int | None = None
    device: str = "cpu"
    accept_license: bool | None = None

    sampling: SamplingParams | None = Field(default=None, exclude=True)
    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None

    system: str | None = None
    template: str | None = None

    def __init__(self, **kwargs: Any) -> None:
        # Checked and loaded here, before pydantic, so errors are the package's own (pydantic
        # would wrap them in its ValidationError).
        model, path = kwargs.get("model"), kwargs.get("path")
        if (model is None) == (path is None):
            raise InvalidParameterError("ChatMed42: give exactly one of `path` (a GGUF file) or `model`")
        if model is None:
            opts = {k: kwargs[k] for k in ("n_ctx", "n_threads", "device", "accept_license") if k in kwargs}
            kwargs["model"] = _load_shared(str(path), **opts)
        elif not isinstance(model, Model):
            raise InvalidParameterError(
                f"ChatMed42: `model` must be a med42_rs.Model, got {type(model).__name__}"
            )
        super().__init__(**kwargs)

    @property
    def _llm_type(self) -> str:
        return "med42-rs"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "path": self.path,
            **{k: getattr(self, k) for k in _SAMPLING_FIELDS if getattr(self, k) is not None},
        }

    # ------------------------------------------------------------------------------------------

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> SamplingParams:
        """The one SamplingParams of a call: ``sampling``, then the fields, then call keywords."""
        overrides: dict[str, Any] = {
            k: getattr(self, k) for k in _SAMPLING_FIELDS if getattr(self, k) is not None
        }
        for k in list(kwargs):
            if k in _SAMPLING_FIELDS:
                overrides[k] = kwargs.pop(k)
        if kwargs:
            raise InvalidParameterError(f"ChatMed42: unsupported argument(s): {', '.join(sorted(kwargs))}")
        base = self.sampling or SamplingParams()
        stops = [*base.stop, *(self.stop or []), *(stop or [])]
        args: SamplingArgs = {**overrides, "stop": list(dict.fromkeys(stops))}  # type: ignore[typeddict-item]
        return base.replace(**args)

    def _stream_chunks(self, messages: Sequence[BaseMessage], params: SamplingParams) -> Stream:
        msgs = [{"role": _role(m), "content": m.text} for m in messages]
        return self.model.chat(msgs, params, system=self.system, template=self.template, stream=True)

    @staticmethod
    def _usage(u: Usage | None) -> UsageMetadata | None:
        if u is None:
            return None
        return UsageMetadata(
            input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens,
            total_tokens=u.prompt_tokens + u.completion_tokens,
        )  # fmt: skip

    def _chunk(self, c: Chunk) -> ChatGenerationChunk:
        meta: dict[str, Any] = {}
        if c.finish_reason is not None:
            meta = {"finish_reason": c.finish_reason, "model_name": self._llm_type}
        msg = AIMessageChunk(content=c.text, usage_metadata=self._usage(c.usage), response_metadata=meta)
        return ChatGenerationChunk(message=msg, generation_info=meta or None)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text: list[str] = []
        last: Chunk | None = None
        for c in self._stream_chunks(messages, self._params(stop, kwargs)):
            text.append(c.text)
            last = c
        finish = last.finish_reason if last is not None else None
        meta = {"finish_reason": finish, "model_name": self._llm_type}
        usage = self._usage(last.usage if last is not None else None)
        msg = AIMessage(content="".join(text), usage_metadata=usage, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=msg, generation_info=meta)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks = self._stream_chunks(messages, self._params(stop, kwargs))
        try:
            for c in chunks:
                out = self._chunk(c)
                if run_manager is not None and c.text:
                    run_manager.on_llm_new_token(c.text, chunk=out)
                yield out
        finally:
            chunks.cancel()  # a consumer that stops early frees the KV cache now

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """:meth:`_generate` in a worker thread (the engine releases the GIL): the event loop runs
        on; cancelling the task stops the generation."""
        params = self._params(stop, kwargs)
        chunks = self._stream_chunks(messages, params)
        texts: list[str] = []
        last: Chunk | None = None
        async for c in self._aiter(chunks):
            texts.append(c.text)
            last = c
        finish = last.finish_reason if last is not None else None
        meta = {"finish_reason": finish, "model_name": self._llm_type}
        usage = self._usage(last.usage if last is not None else None)
        msg = AIMessage(content="".join(texts), usage_metadata=usage, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=msg, generation_info=meta)])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = self._stream_chunks(messages, self._params(stop, kwargs))
        async for c in self._aiter(chunks):
            out = self._chunk(c)
            if run_manager is not None and c.text:
                await run_manager.on_llm_new_token(c.text, chunk=out)
            yield out

    @staticmethod
    async def _aiter(chunks: Stream) -> AsyncIterator[Chunk]:
        """The chunks of ``chunks``, each computed in a worker thread; the stream is cancelled
        when the consumer stops or the task is cancelled."""
        try:
            while True:
                c = await asyncio.to_thread(next, chunks, None)
                if c is None:
                    return
                yield c
        finally:
            chunks.cancel()
