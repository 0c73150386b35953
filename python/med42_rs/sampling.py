"""The sampling parameters: one type, :class:`SamplingParams`, defined and checked by the engine.

Every entry point takes either a :class:`SamplingParams` or its fields as keyword arguments
(``model.generate(prompt, temperature=0)``); both are validated once, in the engine, and a bad
value raises :class:`~med42_rs.InvalidParameterError` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from ._native import SamplingParams

__all__ = ["SamplingArgs", "SamplingParams", "resolve"]


class SamplingArgs(TypedDict, total=False):
    """The fields of :class:`SamplingParams` as keyword arguments (for type checkers)."""

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    repeat_last_n: int
    seed: int | None
    stop: str | Sequence[str] | None


def resolve(sampling: SamplingParams | None, overrides: SamplingArgs) -> SamplingParams:
    """``sampling`` (default: :class:`SamplingParams` ()) with the keyword overrides applied."""
    if sampling is None:
        return SamplingParams(**overrides)
    if not isinstance(sampling, SamplingParams):
        from .errors import InvalidParameterError

        raise InvalidParameterError(
            f"invalid value for `sampling`: expected a SamplingParams, got {type(sampling).__name__}"
        )
    return sampling.replace(**overrides) if overrides else sampling
