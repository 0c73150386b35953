"""Stop strings for streamed generation.

A generator yields text in chunks; the user asks generation to end at any of some *stop strings*.
The output must be the generated text cut just before the first stop, exactly as if the whole text
had been cut at once, while still streaming as much as possible:

- :func:`cut_at_stop` is the non-streamed cut of a finished text.
- :class:`StopMatcher` does the same cut incrementally: each :meth:`StopMatcher.push` returns the
  part of the text that can no longer turn out to belong to a stop string, and holds back only
  the shortest tail that still might.

"Before the first stop" means before the occurrence that *starts* earliest; when two stops start
at the same place, the longest one is reported as the match (the cut position is the same).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidParameterError

__all__ = ["StopMatcher", "cut_at_stop"]


def _check_stops(stops: Sequence[str]) -> tuple[str, ...]:
    """Validate ``stops`` and return them as a tuple (duplicates are allowed)."""
    if isinstance(stops, str):
        raise InvalidParameterError(
            "invalid value for `stop`: expected a sequence of strings, not a single str (wrap it in a list)"
        )
    out = tuple(stops)
    for s in out:
        if not isinstance(s, str):
            raise InvalidParameterError(
                f"invalid value for `stop`: every stop string must be a str, got {type(s).__name__}"
            )
        if not s:
            raise InvalidParameterError("invalid value for `stop`: stop strings must not be empty")
    return out


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut a complete ``text`` before the earliest occurrence of any of ``stops``.

    Returns ``(text[:p], stop)`` where ``p`` is the smallest start index of an occurrence of any
    stop string and ``stop`` is the stop found there (the longest one on a tie), or
    ``(text, None)`` when no stop occurs. Raises :class:`~med42_rs.errors.InvalidParameterError`
    (a ``ValueError``) if a stop string is empty.
    """
    best_pos = -1
    best: str | None = None
    for s in _check_stops(stops):
        i = text.find(s)
        if i < 0:
            continue
        if best is None or i < best_pos or (i == best_pos and len(s) > len(best)):
            best_pos, best = i, s
    if best is None:
        return text, None
    return text[:best_pos], best


class StopMatcher:
    """Holds back text that could still become a stop string; cuts the output at the first stop.

    Feed each generated chunk to :meth:`push` and emit what it returns; when generation ends
    without :attr:`stopped` being true, emit what :meth:`finish` returns. The concatenation of
    everything returned equals ``cut_at_stop(full_text, stops)[0]``.

    Only a tail shorter than the longest stop string is ever held back, so a push costs
    ``O((len(chunk) + max_stop_len) * max_stop_len)`` per stop string, independent of how much
    text came before.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        """Create a matcher for ``stops``.

        Raises :class:`~med42_rs.errors.InvalidParameterError` (a ``ValueError``) naming the
        parameter ``stop`` if a stop string is empty; duplicate stop strings are fine. With no
        stop strings every push is passed through unchanged.
        """
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(_check_stops(stops)))
        # Every proper (non-empty) prefix of every stop string: a held tail must be one of these.
        self._prefixes: frozenset[str] = frozenset(s[:k] for s in self._stops for k in range(1, len(s)))
        self._max_len: int = max((len(s) for s in self._stops), default=0)
        self._held: str = ""
        self._matched: str | None = None
        self._finished: bool = False

    @property
    def stopped(self) -> bool:
        """Whether a stop string has been seen (the output is complete)."""
        return self._matched is not None

    @property
    def matched(self) -> str | None:
        """The stop string that ended the output, or ``None`` while none has (yet) matched.

        This is the stop whose occurrence starts earliest in the text; on a tie, the longest.
        """
        return self._matched

    @property
    def held(self) -> str:
        """The text received but not yet emitted because it may still be the start of a stop.

        Always empty or a proper prefix of some stop string; empty once :attr:`stopped`.
        """
        return self._held

    def _earliest_match(self, buf: str) -> tuple[int, str | None]:
        """The start and stop string of the earliest (then longest) stop occurrence in ``buf``."""
        best_pos = -1
        best: str | None = None
        for s in self._stops:
            i = buf.find(s)
            if i < 0:
                continue
            if best is None or i < best_pos or (i == best_pos and len(s) > len(best)):
                best_pos, best = i, s
        return best_pos, best

    def _first_open_start(self, buf: str, limit: int) -> int:
        """Smallest ``i <= limit`` such that ``buf[i:]`` is a proper prefix of a stop, or -1."""
        for i in range(max(0, len(buf) - self._max_len + 1), limit + 1):
            if buf[i:] in self._prefixes:
                return i
        return -1

    def push(self, text: str) -> str:
        """Add a chunk of generated text; return the text that is now safe to emit.

        The result may be ``""`` (everything is held back, or the chunk was empty). Once a stop
        has matched, the stop and everything after it are dropped and every later push returns
        ``""``. Raises ``RuntimeError`` if called after :meth:`finish` without a stop match.
        """
        if self._matched is not None:
            return ""
        if self._finished:
            raise InvalidParameterError("StopMatcher.push() called after finish(); use a new StopMatcher")
        if not text:
            return ""
        buf = self._held + text
        pos, stop = self._earliest_match(buf)
        if stop is None:
            # No complete stop: hold the longest tail that is a proper prefix of some stop.
            start = self._first_open_start(buf, len(buf) - 1)
        else:
            # A stop completed at ``pos``, but an occurrence starting earlier (or at ``pos`` and
            # longer) may still complete with more text: keep waiting while one is possible.
            start = self._first_open_start(buf, pos)
            if start < 0:
                self._matched = stop
                self._held = ""
                return buf[:pos]
        if start < 0:
            self._held = ""
            return buf
        self._held = buf[start:]
        return buf[:start]

    def finish(self) -> str:
        """End of generation: return the held-back text that no stop claimed.

        If a stop had completed but an earlier or longer candidate was still open, that stop now
        becomes :attr:`matched` and only the text before it is returned. Returns ``""`` if a
        stop had already matched or on a second call.
        """
        if self._matched is not None or self._finished:
            return ""
        self._finished = True
        buf, self._held = self._held, ""
        pos, stop = self._earliest_match(buf)
        if stop is None:
            return buf
        self._matched = stop
        return buf[:pos]
