"""Request bodies of the OpenAI API, read into typed requests.

Sampling fields go to the one sampling type, :class:`~med42_rs.SamplingParams`, which checks
their types and ranges; its :class:`~med42_rs.InvalidParameterError` names the field and
becomes a 400 whose ``param`` is that field. This module checks only what the sampling type
does not know: the shape of messages and prompts, ``n``, ``stream`` and the OpenAI fields the
engine does not offer (those answer 400 ``unsupported_parameter`` instead of being silently
ignored, so a client never gets something other than what it asked for). Fields nobody knows
are ignored, as OpenAI's API does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from ..errors import InvalidParameterError
from ..sampling import SamplingParams
from .errors import APIError, invalid, unsupported

__all__ = ["MAX_N", "GenerationRequest", "Prompt", "parse_chat", "parse_completion"]

MAX_N = 16
"""The most choices one request may ask for (``n``)."""
MAX_LOGPROBS = 20
"""The most alternatives per token (``top_logprobs``; ``logprobs`` of completions)."""

Prompt = Union[str, list[int]]
"""A completion prompt: text, or token ids used as given."""

# Request field -> SamplingParams field. The ones after max_tokens are llama.cpp's server
# extensions, accepted under the same names.
_SAMPLING_FIELDS = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
}


@dataclass(frozen=True)
class GenerationRequest:
    """A chat or text completion request, checked."""

    kind: Literal["chat", "completion"]
    model: str | None
    messages: list[dict[str, str]] | None
    """Chat turns (``role``, ``content``), for ``kind == "chat"``."""
    prompts: list[Prompt]
    """Completion prompts (one choice set each), for ``kind == "completion"``."""
    sampling: SamplingParams
    """The sampling parameters; ``max_tokens`` is the request's or, when it gave none, the
    engine default, replaced by the room left in the context (see ``max_tokens_given``)."""
    max_tokens_given: bool
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    cache_prompt: bool
    logprobs: int | None = None
    """Alternatives per token for the engine's log-probabilities (``None``: none asked for)."""

    @property
    def prompt_param(self) -> str:
        """The request field that holds the prompt (for error objects)."""
        return "messages" if self.kind == "chat" else "prompt"


def _body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise invalid(None, f"the request body must be a JSON object, got {_json_type(body)}")
    return body


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise invalid(
            name, f"invalid type for `{name}`: expected a boolean, got {_json_type(v)}", "invalid_type"
        )
    return v


def _number_is_zero(body: Mapping[str, Any], name: str) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise invalid(
            name, f"invalid type for `{name}`: expected a number, got {_json_type(v)}", "invalid_type"
        )
    if v != 0:
        raise unsupported(name, f"`{name}` is not supported by this server (only 0); use `repeat_penalty`")


def _unsupported_features(body: Mapping[str, Any], kind: str) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        _number_is_zero(body, name)
    if body.get("logit_bias"):
        raise unsupported("logit_bias", "`logit_bias` is not supported by this server")
    if body.get("tools") or body.get("functions"):
        name = "tools" if body.get("tools") else "functions"
        raise unsupported(name, f"`{name}` (function calling) is not supported by this server")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        raise unsupported("response_format", '`response_format` other than {"type": "text"} is not supported')
    if kind == "completion":
        if body.get("suffix") not in (None, ""):
            raise unsupported("suffix", "`suffix` (insertion) is not supported by this server")
        best_of = body.get("best_of")
        if best_of not in (None, 1):
            raise unsupported("best_of", "`best_of` other than 1 is not supported by this server")


def _sampling(body: Mapping[str, Any]) -> tuple[SamplingParams, bool]:
    given: dict[str, Any] = {}
    names: dict[str, str] = {}
    for field, param in _SAMPLING_FIELDS.items():
        v = body.get(field)
        if v is None:
            continue
        if param == "seed" and v == -1 and not isinstance(v, bool):
            continue  # llama.cpp's "random seed"
        if param in given:  # max_tokens and max_completion_tokens both given
            if given[param] != v:
                raise invalid(field, f"`max_tokens` ({given[param]!r}) and `{field}` ({v!r}) disagree")
            continue
        given[param] = v
        names[param] = field
    try:
        params = SamplingParams(**given)
    except InvalidParameterError as e:
        err = APIError(400, " ".join(str(e).split()), code="invalid_value")
        for param, field in names.items():
            if f"`{param}`" in err.message:
                err.param = field
                if field != param:
                    err.message = err.message.replace(f"`{param}`", f"`{field}`")
                break
        raise err from None
    return params, "max_tokens" in given


def _count(body: Mapping[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise invalid(
            name, f"invalid type for `{name}`: expected an integer, got {_json_type(v)}", "invalid_type"
        )
    if not 0 <= v <= MAX_LOGPROBS:
        raise invalid(name, f"invalid value for `{name}`: must be in [0, {MAX_LOGPROBS}], got {v}")
    return v


def _logprobs(body: Mapping[str, Any], kind: str) -> int | None:
    """Chat: ``logprobs`` (a boolean) and ``top_logprobs`` (alternatives); completions:
    ``logprobs`` (the number of alternatives)."""
    if kind == "completion":
        return _count(body, "logprobs")
    top = _count(body, "top_logprobs")
    if not _bool(body, "logprobs", False):
        if top is not None:
            raise invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`")
        return None
    return top or 0


def _common(body: Mapping[str, Any], kind: Literal["chat", "completion"]) -> dict[str, Any]:
    _unsupported_features(body, kind)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid(
            "model", f"invalid type for `model`: expected a string, got {_json_type(model)}", "invalid_type"
        )
    n = body.get("n")
    if n is None:
        n = 1
    elif isinstance(n, bool) or not isinstance(n, int):
        raise invalid("n", f"invalid type for `n`: expected an integer, got {_json_type(n)}", "invalid_type")
    elif not 1 <= n <= MAX_N:
        raise invalid("n", f"invalid value for `n`: must be in [1, {MAX_N}], got {n}")
    stream = _bool(body, "stream", False)
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, Mapping):
            raise invalid(
                "stream_options", "invalid type for `stream_options`: expected an object", "invalid_type"
            )
        include_usage = _bool(opts, "include_usage", False)
    sampling, max_given = _sampling(body)
    return {
        "kind": kind,
        "model": model,
        "sampling": sampling,
        "max_tokens_given": max_given,
        "n": n,
        "stream": stream,
        "include_usage": include_usage and stream,
        "cache_prompt": _bool(body, "cache_prompt", True),
        "logprobs": _logprobs(body, kind),
    }


def _content(i: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for j, part in enumerate(content):
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, Mapping) else _json_type(part)
                raise invalid(
                    f"messages[{i}].content[{j}]",
                    f'messages[{i}].content[{j}]: only text parts ({{"type": "text", "text": ...}}) '
                    f"are supported, got {kind!r}",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(
        f"messages[{i}].content",
        f"invalid type for `messages[{i}].content`: expected a string or a list of text parts, "
        f"got {_json_type(content)}",
        "invalid_type",
    )


def parse_chat(body: Any) -> GenerationRequest:
    """``POST /v1/chat/completions``."""
    body = _body(body)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        what = (
            "missing" if msgs is None else f"a {_json_type(msgs)}" if not isinstance(msgs, list) else "empty"
        )
        raise invalid("messages", f"`messages` must be a non-empty array of messages, got {what}")
    messages: list[dict[str, str]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, Mapping):
            raise invalid(
                f"messages[{i}]", f"messages[{i}]: expected an object, got {_json_type(m)}", "invalid_type"
            )
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise invalid(
                f"messages[{i}].role",
                f"messages[{i}].role: must be 'system', 'developer', 'user' or 'assistant', got {role!r}",
            )
        messages.append({"role": role, "content": _content(i, m.get("content"))})
    return GenerationRequest(messages=messages, prompts=[], echo=False, **_common(body, "chat"))


def _is_ids(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


def parse_completion(body: Any) -> GenerationRequest:
    """``POST /v1/completions``: ``prompt`` is a string, token ids, or a list of either."""
    body = _body(body)
    p = body.get("prompt")
    prompts: list[Prompt]
    if isinstance(p, str):
        prompts = [p]
    elif _is_ids(p):
        prompts = [list(p)]
    elif isinstance(p, list) and p and all(isinstance(x, str) or _is_ids(x) for x in p):
        prompts = [x if isinstance(x, str) else list(x) for x in p]
    else:
        what = "missing" if p is None else f"{_json_type(p)} {str(p)[:40]!r}"
        raise invalid(
            "prompt",
            "`prompt` must be a string, an array of token ids, or a non-empty array of those; got " + what,
        )
    common = _common(body, "completion")
    if len(prompts) * common["n"] > MAX_N:
        raise invalid("n", f"{len(prompts)} prompts x n={common['n']} is more than {MAX_N} choices")
    return GenerationRequest(messages=None, prompts=prompts, echo=_bool(body, "echo", False), **common)


def ids_field(body: Any, name: str) -> Sequence[int]:
    """A list of token ids in a request body (``/detokenize``)."""
    v = _body(body).get(name)
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        raise invalid(name, f"`{name}` must be an array of integer token ids")
    return v
