"""OpenAI response objects (whole and streamed) built from the engine's chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..generation import Chunk, TokenLogprob, Usage

__all__ = ["Choices", "finish_reason"]


def finish_reason(reason: str | None) -> str | None:
    """The engine's ``eos`` (an end-of-generation token) is OpenAI's ``stop``."""
    return "stop" if reason == "eos" else reason


@dataclass
class Choices:
    """The choices of one request as they are generated, and the objects that report them."""

    kind: str  # "chat" or "completion"
    model: str
    fingerprint: str
    n_choices: int
    group: list[int]
    """Choice index -> index of its prompt (choices of one prompt count its tokens once)."""
    echo: list[str] = field(default_factory=list)
    id: str = ""
    created: int = 0
    texts: list[list[str]] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    usage: list[Usage | None] = field(default_factory=list)
    piece: Callable[[int], bytes] | None = None
    """A token's bytes, when the request asked for log-probabilities."""
    lps: list[list[TokenLogprob]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    """Completions: where the next streamed token starts in its choice's text."""

    def __post_init__(self) -> None:
        prefix = "chatcmpl-" if self.kind == "chat" else "cmpl-"
        self.id = prefix + uuid.uuid4().hex
        self.created = int(time.time())
        self.texts = [[] for _ in range(self.n_choices)]
        self.finish = [None] * self.n_choices
        self.usage = [None] * self.n_choices
        self.lps = [[] for _ in range(self.n_choices)]
        self.offsets = [len(self.echo[self.group[i]]) if self.echo else 0 for i in range(self.n_choices)]

    def add(self, index: int, chunk: Chunk) -> None:
        self.texts[index].append(chunk.text)
        if chunk.logprobs:
            self.lps[index].extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish[index] = finish_reason(chunk.finish_reason)
            self.usage[index] = chunk.usage

    # -- log-probabilities ----------------------------------------------------------------

    def _token(self, token_id: int, logprob: float) -> dict[str, Any]:
        assert self.piece is not None
        b = self.piece(token_id)
        return {"token": b.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(b)}

    def logprobs(self, index: int, lps: Sequence[TokenLogprob], offset: int | None = None) -> Any:
        """The ``logprobs`` of a choice (or of a streamed piece of it): chat's ``{"content": [...]}``
        or completions' ``tokens``/``token_logprobs``/``top_logprobs``/``text_offset``;
        ``None`` when the request asked for none."""
        if self.piece is None:
            return None
        if self.kind == "chat":
            content = [
                {
                    **self._token(t.token_id, t.logprob),
                    "top_logprobs": [self._token(i, lp) for i, lp in t.top],
                }
                for t in lps
            ]
            return {"content": content, "refusal": None}
        tokens = [self._token(t.token_id, t.logprob)["token"] for t in lps]
        start = self.offsets[index] if offset is None else offset
        offsets = []
        for tok in tokens:
            offsets.append(start)
            start += len(tok)
        if offset is None:
            self.offsets[index] = start
        return {
            "tokens": tokens,
            "token_logprobs": [t.logprob for t in lps],
            "top_logprobs": [{self._token(i, lp)["token"]: lp for i, lp in t.top} for t in lps],
            "text_offset": offsets,
        }

    # -- usage -----------------------------------------------------------------------------

    def usage_object(self) -> dict[str, Any]:
        prompt = cached = completion = 0
        seen: set[int] = set()
        for i, u in enumerate(self.usage):
            if u is None:
                continue
            completion += u.completion_tokens
            if self.group[i] not in seen:
                seen.add(self.group[i])
                prompt += u.prompt_tokens
                cached += int(getattr(u, "prompt_tokens_cached", 0) or 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    # -- whole responses -------------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        choices: list[dict[str, Any]] = []
        for i in range(self.n_choices):
            text = "".join(self.texts[i])
            if self.kind == "chat":
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": self.logprobs(i, self.lps[i]),
                        "finish_reason": self.finish[i],
                    }
                )
            else:
                if self.echo:
                    text = self.echo[self.group[i]] + text
                start = len(self.echo[self.group[i]]) if self.echo else 0
                lp = self.logprobs(i, self.lps[i], offset=start)
                choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": self.finish[i]})
        return {
            "id": self.id,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
            "usage": self.usage_object(),
        }

    # -- streamed chunks -------------------------------------------------------------------

    def _chunk(self, choices: list[dict[str, Any]], include_usage: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }
        if include_usage:
            obj["usage"] = None
        return obj

    def start_chunk(self, index: int, include_usage: bool) -> dict[str, Any] | None:
        """The first chunk of a choice: the assistant role (chat), the echoed prompt (completions)."""
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""}
            return self._chunk(
                [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}], include_usage
            )
        if self.echo:
            text = self.echo[self.group[index]]
            return self._chunk(
                [{"index": index, "text": text, "logprobs": None, "finish_reason": None}], include_usage
            )
        return None

    def text_chunk(self, index: int, chunk: Chunk, include_usage: bool) -> dict[str, Any] | None:
        """A streamed piece of a choice (``None`` when it carries nothing: held-back text)."""
        reason = finish_reason(chunk.finish_reason)
        lp = self.logprobs(index, chunk.logprobs or [])
        if not chunk.text and reason is None and not chunk.logprobs:
            return None
        if self.kind == "chat":
            delta = {"content": chunk.text} if chunk.text else {}
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": reason}
        else:
            choice = {"index": index, "text": chunk.text, "logprobs": lp, "finish_reason": reason}
        return self._chunk([choice], include_usage)

    def usage_chunk(self) -> dict[str, Any]:
        """The last chunk with ``stream_options.include_usage``: no choices, the request's usage."""
        obj = self._chunk([], False)
        obj["usage"] = self.usage_object()
        return obj
