"""Sessions: a KV cache kept between generations, and conversations built on one.

A :class:`Session` remembers the tokens whose keys and values are in its cache. A new prompt that
starts with some of them (the same system prompt, the conversation so far) computes only the rest:
the cache is cut back to the longest common prefix and the new tokens are appended. Every answer's
:class:`~med42_rs.Usage` says how many prompt tokens were reused (``prompt_tokens_cached``) and how
many were computed.

A :class:`Chat` keeps the messages of a conversation over a session: each :meth:`Chat.send`
renders the whole conversation with the chat template and reuses the cache of everything before
the new turn. Editing an earlier message recomputes from that message on, and nothing before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from . import _native
from .chat import Message
from .errors import InvalidParameterError
from .generation import Chunk, Completion, Stream, Usage, collect
from .sampling import SamplingArgs, SamplingParams, resolve

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .model import Model

__all__ = ["Chat", "ChatStream", "Session"]

StateSource = bytes | bytearray | memoryview | str | os.PathLike[str]


class Session:
    """A KV cache of up to ``n_ctx`` tokens kept between generations (see the module docs).

    Made by :meth:`Model.session`. Generations of different sessions (and of
    :meth:`Model.generate`) run together in the model's batched scheduler; one session runs one
    generation at a time: starting another while a stream of it is still running raises
    :class:`~med42_rs.InvalidParameterError` (finish, cancel or close the stream first; a
    cancelled stream hands the cache back at once).
    """

    def __init__(self, model: Model, native: _native.NativeSession) -> None:
        self._model = model
        self._native = native

    @property
    def model(self) -> Model:
        """The model this session runs on."""
        return self._model

    @property
    def n_ctx(self) -> int:
        """Context capacity in tokens."""
        return self._native.n_ctx

    @property
    def tokens(self) -> list[int]:
        """The token ids whose keys and values are cached, in order."""
        return self._native.tokens

    def reset(self) -> None:
        """Forget the cached tokens."""
        self._native.reset()

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` cached tokens."""
        self._native.truncate(n)

    def save_state(self, path: str | os.PathLike[str] | None = None) -> bytes:
        """The cached tokens and their keys and values as bytes (also written to ``path`` when
        given), for :meth:`load_state` on a session of the same model: a long system prompt or
        clinical note is computed once and restored many times. The state records the model and
        KV cache type; about ``n_layer * 2 * n_head_kv * head_dim * 4`` bytes per token."""
        data = self._native.save_state()
        if path is not None:
            tmp = Path(f"{os.fspath(path)}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return data

    def load_state(self, state: StateSource) -> None:
        """Replace the cache by a state from :meth:`save_state` (bytes, or a file path). A state
        of another model or cache type, a damaged one, or one longer than this session's context
        raises :class:`~med42_rs.SessionStateError` and leaves the session as it was."""
        if isinstance(state, (bytes, bytearray, memoryview)):
            data = bytes(state)
        elif isinstance(state, (str, os.PathLike)):
            data = Path(state).read_bytes()
        else:
            raise InvalidParameterError(
                f"invalid value for `state`: expected bytes or a file path, got {type(state).__name__}"
            )
        self._native.load_state(data)

    @overload
    def generate(
        self,
        prompt: str | Sequence[int],
        sampling: SamplingParams | None = ...,
        *,
        stream: Literal[False] = ...,
        logprobs: int | None = ...,
        special: bool = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Completion: ...
    @overload
    def generate(
        self,
        prompt: str | Sequence[int],
        sampling: SamplingParams | None = ...,
        *,
        stream: Literal[True],
        logprobs: int | None = ...,
        special: bool = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Stream: ...

    def generate(
        self,
        prompt: str | Sequence[int],
        sampling: SamplingParams | None = None,
        *,
        stream: bool = False,
        logprobs: int | None = None,
        special: bool = False,
        **kw: Unpack[SamplingArgs],
    ) -> Completion | Stream:
        """:meth:`Model.generate` continuing this session: the longest prefix of the prompt already
        cached is reused. Afterwards the cache holds the prompt and the answer."""
        params = resolve(sampling, kw)
        ids = self._model._prompt_ids(prompt, special)
        chunks = Stream(self._native.generate(ids, params, [], logprobs), params.stop, logprobs is not None)
        return chunks if stream else collect(chunks)

    @overload
    def chat(
        self,
        messages: Sequence[Message],
        sampling: SamplingParams | None = ...,
        *,
        system: str | None = ...,
        template: str | None = ...,
        truncate: bool = ...,
        stream: Literal[False] = ...,
        logprobs: int | None = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Completion: ...
    @overload
    def chat(
        self,
        messages: Sequence[Message],
        sampling: SamplingParams | None = ...,
        *,
        system: str | None = ...,
        template: str | None = ...,
        truncate: bool = ...,
        stream: Literal[True],
        logprobs: int | None = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Stream: ...

    def chat(
        self,
        messages: Sequence[Message],
        sampling: SamplingParams | None = None,
        *,
        system: str | None = None,
        template: str | None = None,
        truncate: bool = False,
        stream: bool = False,
        logprobs: int | None = None,
        **kw: Unpack[SamplingArgs],
    ) -> Completion | Stream:
        """:meth:`Model.chat` continuing this session (same prompt, stops and arguments)."""
        ids, params = self._model._chat_request(messages, resolve(sampling, kw), system, template, truncate)
        chunks = Stream(self._native.generate(ids, params, [], logprobs), params.stop, logprobs is not None)
        return chunks if stream else collect(chunks)


class ChatStream(Iterator[Chunk]):
    """The streamed answer of :meth:`Chat.send`: a :class:`~med42_rs.Stream` that adds the answer
    to the conversation when it ends (finished, or cancelled with the text received so far)."""

    def __init__(self, chat: Chat, stream: Stream) -> None:
        self._chat = chat
        self._stream = stream
        self._texts: list[str] = []
        self._recorded = False

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> Chunk:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._record()
            raise
        self._texts.append(chunk.text)
        if chunk.finish_reason is not None:
            self._record()
        return chunk

    def _record(self) -> None:
        if not self._recorded:
            self._recorded = True
            self._chat.messages.append({"role": "assistant", "content": "".join(self._texts)})

    def cancel(self) -> None:
        """Stop the answer; the text received so far becomes the assistant's message."""
        self._stream.cancel()
        self._record()

    def close(self) -> None:
        """Same as :meth:`cancel`."""
        self.cancel()

    @property
    def usage(self) -> Usage:
        """Token counts (``prompt_tokens_cached``: reused from the turns before) and timings."""
        return self._stream.usage


class Chat:
    """A conversation over a :class:`Session` (made by :meth:`Model.start_chat`).

    ``messages`` is the conversation (a list of ``{"role", "content"}`` dicts, the system prompt
    not included: it comes from ``system`` or the template). It may be edited between turns;
    the next :meth:`send` recomputes from the first changed token on.
    """

    def __init__(self, session: Session, *, system: str | None = None, template: str | None = None) -> None:
        self.session = session
        self.system = system
        self.template = template
        self.messages: list[Message] = []

    @overload
    def send(
        self,
        message: str,
        sampling: SamplingParams | None = ...,
        *,
        stream: Literal[False] = ...,
        truncate: bool = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Completion: ...
    @overload
    def send(
        self,
        message: str,
        sampling: SamplingParams | None = ...,
        *,
        stream: Literal[True],
        truncate: bool = ...,
        **kw: Unpack[SamplingArgs],
    ) -> ChatStream: ...

    def send(
        self,
        message: str,
        sampling: SamplingParams | None = None,
        *,
        stream: bool = False,
        truncate: bool = False,
        **kw: Unpack[SamplingArgs],
    ) -> Completion | ChatStream:
        """Add the user's ``message`` and answer it, reusing the KV cache of the conversation so
        far. The answer is added to :attr:`messages` (with ``stream=True``, when the stream ends).
        ``truncate=True`` drops the oldest turns when the conversation no longer fits the
        context (see :meth:`Model.fit_messages`). On an error the conversation is unchanged."""
        if not isinstance(message, str):
            raise InvalidParameterError(
                f"invalid value for `message`: expected a str, got {type(message).__name__}"
            )
        self.messages.append({"role": "user", "content": message})
        try:
            answer = self.session.chat(
                self.messages, sampling, system=self.system, template=self.template,
                truncate=truncate, stream=True, **kw,
            )  # fmt: skip
        except BaseException:
            self.messages.pop()
            raise
        chunks = ChatStream(self, answer)
        return chunks if stream else collect(chunks)
