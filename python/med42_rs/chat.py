"""Chat prompt templates: Med42's own format, and the Jinja template a GGUF may carry (rendered
in the engine with minijinja; jinja2 is not needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import _native
from .errors import InvalidParameterError

__all__ = ["MED42_STOPS", "MED42_SYSTEM_PROMPT", "med42_prompt", "render_jinja", "render_jinja_parts"]

MED42_SYSTEM_PROMPT = "You are a helpful medical assistant created by M42 Health in the UAE."
"""The system prompt of the Med42 model card."""

MED42_STOPS = ("<|prompter|>", "<|system|>", "<|assistant|>")
"""Role markers that end an answer, so the model does not write the user's next turn."""

Message = Mapping[str, str]
Part = tuple[str, bool]
"""A piece of prompt text and whether special tokens may be parsed in it (markup: yes; message
contents: no, so a user cannot inject control tokens)."""


def _check(messages: Sequence[Message]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidParameterError(
            "messages: expected a list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidParameterError("messages: at least one message is required")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidParameterError(
                f"messages[{i}]: expected a dict with 'role' and 'content', got {type(m).__name__}"
            )
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise InvalidParameterError(
                f"messages[{i}]: role must be system, user or assistant, got {role!r}"
            )
        if not isinstance(content, str):
            raise InvalidParameterError(f"messages[{i}]: content must be a str, got {type(content).__name__}")


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
        raise InvalidParameterError("messages: the last message must be from the user")
    out: list[Part] = [("<|system|>: ", True), (sys_text, False), ("\n", True)]
    for m in turns:
        if m["role"] == "user":
            out += [("<|prompter|>:", True), (m["content"], False), ("\n<|assistant|>:", True)]
        else:
            out += [(m["content"], False), ("\n", True)]
    return out


def _with_system(messages: Sequence[Message], system: str | None) -> list[tuple[str, str]]:
    if system is not None and not isinstance(system, str):
        raise InvalidParameterError(f"system: must be a str, got {type(system).__name__}")
    msgs = [(m["role"], m["content"]) for m in messages]
    if system is not None:
        msgs = [("system", system)] + [m for m in msgs if m[0] != "system"]
    return msgs


def render_jinja(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    system: str | None = None,
) -> str:
    """Render a Hugging Face chat template (Jinja) in the engine's sandbox (minijinja): a template
    sees plain values only, never Python objects, and one that loops or writes without end stops
    with :class:`~med42_rs.ChatTemplateError`, as does one that calls ``raise_exception``.
    ``system`` replaces any system message. The environment is Hugging Face's:
    ``trim_blocks``/``lstrip_blocks``, loop controls, Python string methods,
    ``raise_exception``, ``strftime_now``, ``tojson`` and ``add_generation_prompt=True``."""
    _check(messages)
    parts = _native.render_chat_template(template, _with_system(messages, system), bos_token, eos_token)
    return "".join(t for t, _ in parts)


def render_jinja_parts(
    template: str,
    messages: Sequence[Message],
    tokenizer: _native.NativeTokenizer,
    *,
    bos_token: str = "",
    eos_token: str = "",
    system: str | None = None,
) -> list[Part]:
    """:func:`render_jinja`, split into markup (``True``: special tokens are parsed) and text
    (``False``) for ``tokenizer``: message contents never become control tokens, whatever the
    template does to them (``| trim``, ``| lower``, slicing), because the engine breaks every
    control-token spelling inside contents before rendering and splits the output at control
    tokens afterwards. Joined, the parts are the rendered prompt."""
    _check(messages)
    msgs = _with_system(messages, system)
    return _native.render_chat_template(template, msgs, bos_token, eos_token, tokenizer)
