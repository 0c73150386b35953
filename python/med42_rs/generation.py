"""Generation results and the streaming loop (stop strings are handled here, in Python)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from . import _native
from .stops import StopMatcher

__all__ = ["Chunk", "Completion", "FinishReason", "Usage"]

FinishReason = Literal["stop", "length", "eos"]


@dataclass(frozen=True)
class Usage:
    """Token counts and speeds of one generation."""

    prompt_tokens: int
    completion_tokens: int
    prompt_seconds: float
    decode_seconds: float

    @property
    def prompt_tokens_per_second(self) -> float:
        """Prompt processing speed."""
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Generation speed after the prompt."""
        return self.completion_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


@dataclass(frozen=True)
class Chunk:
    """One streamed piece: new text, the ids that produced it, and on the last chunk the finish
    reason and usage."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Completion:
    """A whole generation."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    usage: Usage | None = None


@dataclass(frozen=True)
class SamplingOptions:
    """Validated sampling parameters."""

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    repeat_last_n: int
    seed: int

    @staticmethod
    def make(
        *,
        max_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        repeat_last_n: int,
        seed: int | None,
    ) -> SamplingOptions:
        """Check every parameter; a bad one raises ``ValueError`` naming it."""

        def need(ok: bool, name: str, what: str, value: object) -> None:
            if not ok:
                raise ValueError(f"{name}: must be {what}, got {value!r}")

        def num(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x

        need(isinstance(max_tokens, int) and max_tokens >= 0, "max_tokens", "an int >= 0", max_tokens)
        need(num(temperature) and temperature >= 0, "temperature", "a number >= 0", temperature)
        need(isinstance(top_k, int) and top_k >= 0, "top_k", "an int >= 0 (0 disables)", top_k)
        need(num(top_p) and 0 < top_p <= 1, "top_p", "in (0, 1]", top_p)
        need(num(min_p) and 0 <= min_p <= 1, "min_p", "in [0, 1]", min_p)
        need(num(repeat_penalty) and repeat_penalty > 0, "repeat_penalty", "a number > 0", repeat_penalty)
        need(
            isinstance(repeat_last_n, int) and repeat_last_n >= 0,
            "repeat_last_n",
            "an int >= 0",
            repeat_last_n,
        )
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        need(isinstance(seed, int) and 0 <= seed < 2**64, "seed", "an int in [0, 2**64)", seed)
        return SamplingOptions(
            max_tokens, float(temperature), top_k, float(top_p), float(min_p), float(repeat_penalty),
            repeat_last_n, seed,
        )  # fmt: skip


def start(
    native: _native.NativeModel, ids: list[int], opts: SamplingOptions, stop_ids: Sequence[int]
) -> _native.NativeGeneration:
    """Create the native generation: context and parameter errors are raised here, before any
    token is generated."""
    return native.generate(
        ids, opts.max_tokens, opts.temperature, opts.top_k, opts.top_p, opts.min_p,
        opts.repeat_penalty, opts.repeat_last_n, opts.seed, list(stop_ids),
    )  # fmt: skip


def stream(gen: _native.NativeGeneration, stops: Sequence[str]) -> Iterator[Chunk]:
    """Drive a native generation, holding back text that may become a stop string. Leaving the
    loop (``break``, ``close()``, garbage collection) frees the generation's KV cache."""
    matcher = StopMatcher(stops) if stops else None
    try:
        while True:
            step = next(gen, None)
            if step is None:  # ended without a final step (cancelled)
                return
            text, step_ids, finish = step
            if matcher is not None:
                text = matcher.push(text)
                if matcher.stopped:
                    gen.close()
                    yield Chunk(text, list(step_ids), "stop", _usage(gen))
                    return
                if finish is not None:
                    text += matcher.finish()
            if finish is not None:
                yield Chunk(text, list(step_ids), finish, _usage(gen))  # type: ignore[arg-type]
                return
            yield Chunk(text, list(step_ids))
    finally:
        gen.close()


def _usage(gen: _native.NativeGeneration) -> Usage:
    p, c, ps, ds = gen.usage
    return Usage(p, c, ps, ds)


def collect(chunks: Iterator[Chunk]) -> Completion:
    """Join a stream into one :class:`Completion`."""
    texts: list[str] = []
    ids: list[int] = []
    finish: FinishReason = "length"
    usage = None
    for c in chunks:
        texts.append(c.text)
        ids.extend(c.token_ids)
        if c.finish_reason is not None:
            finish, usage = c.finish_reason, c.usage
    return Completion("".join(texts), ids, finish, usage)
