"""Generation results and the streaming loop (stop strings are handled here, in Python)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from . import _native
from .stops import StopMatcher

__all__ = ["Chunk", "Completion", "FinishReason", "Stream", "TokenLogprob", "Usage"]

FinishReason = Literal["stop", "length", "eos"]


@dataclass(frozen=True)
class Usage:
    """Token counts and speeds of one generation."""

    prompt_tokens: int
    completion_tokens: int
    prompt_seconds: float
    decode_seconds: float
    prompt_tokens_cached: int = 0
    """Prompt tokens whose KV cache was reused from a :class:`~med42_rs.Session` (not computed)."""

    @property
    def prompt_tokens_computed(self) -> int:
        """Prompt tokens the engine computed for this answer."""
        return self.prompt_tokens - self.prompt_tokens_cached

    @property
    def prompt_tokens_per_second(self) -> float:
        """Prompt processing speed."""
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Generation speed after the prompt."""
        return self.completion_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (log-softmax of its raw logits, before
    the repeat penalty and temperature), and the most likely tokens at that step with theirs."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass(frozen=True)
class Chunk:
    """One streamed piece: new text, the ids that produced it, and on the last chunk the finish
    reason and usage."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: list[TokenLogprob] | None = None
    """One per token id, when the generation was asked for ``logprobs``."""


@dataclass(frozen=True)
class Completion:
    """A whole generation."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    usage: Usage | None = None
    logprobs: list[TokenLogprob] | None = None


class Stream(Iterator[Chunk]):
    """A streamed generation: iterate it for :class:`Chunk` objects.

    :meth:`cancel` (or :meth:`close`) stops it from any thread, including while another thread
    is iterating it and from a signal handler: the engine notices before its next layer, during a
    long prompt too, frees the KV cache, and the iteration ends. Leaving the loop early
    (``break``, garbage collection) frees the cache as well.
    """

    def __init__(self, gen: _native.NativeGeneration, stops: Sequence[str], logprobs: bool = False) -> None:
        self._gen = gen
        self._logprobs = logprobs
        self._matcher = StopMatcher(stops) if stops else None
        self._done = False
        self._cancelled = False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Chunk:
        if self._done:
            raise StopIteration
        # On an error or Ctrl-C the generation keeps its state: iterating again resumes it.
        chunk = self._step()
        if chunk is None:
            self._done = True
            self._gen.cancel()
            raise StopIteration
        if chunk.finish_reason is not None:
            self._done = True
            self._gen.cancel()  # frees the KV cache now (a stop string ends it early)
        return chunk

    def _step(self) -> Chunk | None:
        step = next(self._gen, None)
        if step is None:  # ended without a final step (cancelled)
            return None
        text, step_ids, finish, lp = step
        ids = list(step_ids)
        logprobs = None
        if lp is not None and ids:
            logprobs = [TokenLogprob(ids[0], lp[0], [(int(i), float(x)) for i, x in lp[1]])]
        elif lp is None and self._logprobs:
            logprobs = []
        m = self._matcher
        if m is not None:
            text = m.push(text)
            if m.stopped:
                self._gen.cancel()
                return Chunk(text, ids, "stop", self.usage, logprobs)
            if finish is not None:
                text += m.finish()
                if m.stopped:  # the held-back text ended in a stop string
                    finish = "stop"
        if finish is not None:
            return Chunk(text, ids, finish, self.usage, logprobs)  # type: ignore[arg-type]
        return Chunk(text, ids, None, None, logprobs)

    def cancel(self) -> None:
        """Stop the generation and free its KV cache; safe from any thread at any time."""
        self._cancelled = True
        self._gen.cancel()

    def close(self) -> None:
        """Same as :meth:`cancel` (the generator protocol's name)."""
        self.cancel()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` or :meth:`close` was called."""
        return self._cancelled

    @property
    def usage(self) -> Usage:
        """Token counts and timings so far."""
        p, c, ps, ds, cached = self._gen.usage
        return Usage(p, c, ps, ds, cached)

    def __del__(self) -> None:
        gen = getattr(self, "_gen", None)
        if gen is not None:
            gen.cancel()


def collect(chunks: Iterator[Chunk]) -> Completion:
    """Join a stream into one :class:`Completion`."""
    texts: list[str] = []
    ids: list[int] = []
    logprobs: list[TokenLogprob] | None = None
    finish: FinishReason = "length"
    usage = None
    for c in chunks:
        texts.append(c.text)
        ids.extend(c.token_ids)
        if c.logprobs is not None:
            logprobs = (logprobs or []) + c.logprobs
        if c.finish_reason is not None:
            finish, usage = c.finish_reason, c.usage
    return Completion("".join(texts), ids, finish, usage, logprobs)
