"""Chat prompt templates: Med42's own format, and the Jinja template a GGUF may carry."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MED42_STOPS", "MED42_SYSTEM_PROMPT", "med42_prompt", "render_jinja"]

MED42_SYSTEM_PROMPT = "You are a helpful medical assistant created by M42 Health in the UAE."
"""The system prompt of the Med42 model card."""

MED42_STOPS = ("<|prompter|>", "<|system|>", "<|assistant|>")
"""Role markers that end an answer, so the model does not write the user's next turn."""

Message = Mapping[str, str]
Part = tuple[str, bool]
"""A piece of prompt text and whether special tokens may be parsed in it (markup: yes; message
contents: no, so a user cannot inject control tokens)."""


def _check(messages: Sequence[Message]) -> None:
    if not messages:
        raise ValueError("messages: at least one message is required")
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{i}]: role must be system, user or assistant, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}]: content must be a str")


def med42_prompt(messages: Sequence[Message], system: str | None = None) -> str:
    """The Med42 prompt text (see :func:`med42_parts`)."""
    return "".join(t for t, _ in med42_parts(messages, system))


def med42_parts(messages: Sequence[Message], system: str | None = None) -> list[Part]:
    """The Med42 prompt, exactly as the model card writes it for one turn::

        <|system|>: {system}\\n<|prompter|>:{prompt}\\n<|assistant|>:

    Earlier turns repeat ``<|prompter|>:{q}\\n<|assistant|>:{a}\\n`` before the last question.
    The system prompt is, in order: ``system``, a ``system`` message, the card's default.
    """
    _check(messages)
    sys_msgs = [m["content"] for m in messages if m["role"] == "system"]
    sys_text = system if system is not None else (sys_msgs[0] if sys_msgs else MED42_SYSTEM_PROMPT)
    turns = [m for m in messages if m["role"] != "system"]
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("messages: the last message must be from the user")
    out: list[Part] = [("<|system|>: ", True), (sys_text, False), ("\n", True)]
    for m in turns:
        if m["role"] == "user":
            out += [("<|prompter|>:", True), (m["content"], False), ("\n<|assistant|>:", True)]
        else:
            out += [(m["content"], False), ("\n", True)]
    return out


def _with_system(messages: Sequence[Message], system: str | None) -> list[dict[str, str]]:
    msgs = [dict(m) for m in messages]
    if system is not None:
        msgs = [{"role": "system", "content": system}] + [m for m in msgs if m["role"] != "system"]
    return msgs


def _render(template: str, msgs: list[dict[str, str]], bos_token: str, eos_token: str) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> Any:
        raise ValueError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=msgs, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
    )


def render_jinja(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    system: str | None = None,
) -> str:
    """Render a Hugging Face chat template in Jinja's immutable sandbox: a hostile template cannot
    reach attributes such as ``__class__`` or call unsafe functions (it raises
    ``jinja2.exceptions.SecurityError``). ``system`` replaces any system message."""
    _check(messages)
    return _render(template, _with_system(messages, system), bos_token, eos_token)


_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


def render_jinja_parts(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    system: str | None = None,
) -> list[Part]:
    """:func:`render_jinja`, split into markup and message contents.

    Contents are rendered as private-use sentinels and put back afterwards. When the result differs
    from the plain rendering (a template that slices or changes the case of contents), the whole
    prompt is one markup part, as llama.cpp tokenizes it.
    """
    _check(messages)
    msgs = _with_system(messages, system)
    marked = [{**m, "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(msgs)]
    pieces = _SENTINEL.split(_render(template, marked, bos_token, eos_token))
    markup, indices = pieces[0::2], pieces[1::2]
    intact = all(_OPEN not in t and _CLOSE not in t for t in markup) and all(
        int(i) < len(msgs) for i in indices
    )
    plain = _render(template, msgs, bos_token, eos_token)
    parts: list[Part] = [(markup[0], True)]
    if intact:
        for i, text in zip(indices, markup[1:]):
            parts += [(msgs[int(i)]["content"], False), (text, True)]
    if not intact or "".join(t for t, _ in parts) != plain:
        return [(plain, True)]
    return [p for p in parts if p[0]]
