"""Streaming stop strings: :class:`med42_rs.stops.StopMatcher` against the non-streamed cut.

The oracle is :func:`med42_rs.stops.cut_at_stop` (a plain ``str.find`` over every stop). The
streamed output must equal it for every chunking of the text, every emitted prefix must be a
prefix of it, and the matcher must hold back no more than the longest tail that could still
become a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from med42_rs.errors import InvalidParameterError
from med42_rs.stops import StopMatcher, cut_at_stop

PROMPTER = "<|prompter|>"


def pushes(m: StopMatcher, chunks: Sequence[str]) -> list[str]:
    """What each push of ``chunks`` returned."""
    return [m.push(c) for c in chunks]


def stream(m: StopMatcher, chunks: Sequence[str]) -> str:
    """The complete streamed output: every push, then finish() unless a stop matched."""
    out = "".join(pushes(m, chunks))
    if not m.stopped:
        out += m.finish()
    return out


def longest_open_suffix(text: str, stops: Sequence[str]) -> str:
    """Brute force: the longest suffix of ``text`` that is a proper prefix of some stop."""
    for i in range(len(text) + 1):
        tail = text[i:]
        if any(len(tail) < len(s) and s.startswith(tail) for s in stops):
            return tail
    return ""


# --- the oracle ----------------------------------------------------------------------------


def test_cut_at_stop_reference() -> None:
    """The non-streamed cut: earliest start wins, ties go to the longest stop."""
    assert cut_at_stop("no stop here", ["xyz"]) == ("no stop here", None)
    assert cut_at_stop("Hello <|prompter|> more", [PROMPTER]) == ("Hello ", PROMPTER)
    assert cut_at_stop("xabcd", ["abc", "bcd"]) == ("x", "abc")
    assert cut_at_stop("xabcd", ["bcd", "abc"]) == ("x", "abc")
    assert cut_at_stop("zabc", ["ab", "abc"]) == ("z", "abc")
    assert cut_at_stop("zabc", ["abc", "ab"]) == ("z", "abc")
    assert cut_at_stop("zab", ["ab", "abc"]) == ("z", "ab")
    assert cut_at_stop("STOP", ["STOP"]) == ("", "STOP")
    assert cut_at_stop("", ["a"]) == ("", None)
    assert cut_at_stop("abc", []) == ("abc", None)


# --- explicit streaming cases ----------------------------------------------------------------


def test_prompter_char_by_char_never_emits_angle_bracket() -> None:
    """Each safe char is emitted at once; nothing of the stop string is ever emitted."""
    text = "Hello " + PROMPTER + " ignored"
    m = StopMatcher([PROMPTER])
    out = pushes(m, list(text))
    assert out[:6] == ["H", "e", "l", "l", "o", " "]
    assert all(piece == "" for piece in out[6:])
    assert "".join(out) == "Hello "
    assert not any("<" in piece for piece in out)
    assert m.stopped
    assert m.matched == PROMPTER
    assert m.held == ""
    assert m.finish() == ""


def test_prompter_stop_index_is_reported_exactly_when_complete() -> None:
    """The matcher holds while the stop is incomplete and reports stopped on its last char."""
    m = StopMatcher([PROMPTER])
    assert m.push("Hello ") == "Hello "
    for k, ch in enumerate(PROMPTER[:-1]):
        assert m.push(ch) == ""
        assert not m.stopped
        assert m.held == PROMPTER[: k + 1]
    assert m.push(PROMPTER[-1]) == ""
    assert m.stopped
    assert m.matched == PROMPTER


def test_lone_angle_bracket_released_when_it_cannot_be_a_stop() -> None:
    """``<`` is held, then released together with ``b`` as soon as ``<b`` rules the stop out."""
    m = StopMatcher([PROMPTER])
    assert m.push("a ") == "a "
    assert m.push("<") == ""
    assert m.held == "<"
    assert m.push("b") == "<b"
    assert m.held == ""
    assert m.push(">x") == ">x"
    assert not m.stopped
    assert m.finish() == ""
    assert m.matched is None


def test_stop_split_across_irregular_chunks() -> None:
    """The part before the stop is emitted as soon as it is safe, even mid-chunk."""
    m = StopMatcher([PROMPTER])
    out = pushes(m, ["Hi th", "ere <|pr", "omp", "ter|", "> after", "more"])
    assert out == ["Hi th", "ere ", "", "", "", ""]
    assert m.matched == PROMPTER


def test_stop_at_very_start() -> None:
    """A stop at index 0 gives an empty output."""
    m = StopMatcher(["STOP"])
    assert m.push("STOPxyz") == ""
    assert m.stopped and m.matched == "STOP"
    m = StopMatcher(["STOP"])
    assert pushes(m, list("STOPxyz")) == [""] * 7
    assert m.stopped


def test_overlapping_stops_earliest_start_wins() -> None:
    """["abc", "bcd"] on "xabcd": "abc" starts first, so the output is "x"."""
    for stops in (["abc", "bcd"], ["bcd", "abc"]):
        m = StopMatcher(stops)
        assert pushes(m, list("xabcd")) == ["x", "", "", "", ""]
        assert m.matched == "abc"
        m = StopMatcher(stops)
        assert m.push("xabcd") == "x"
        assert m.matched == "abc"


def test_stop_that_is_prefix_of_another_tie_goes_to_longest() -> None:
    """["ab", "abc"] on "zabc": both start at 1; the output is "z" and "abc" is the match."""
    for stops in (["ab", "abc"], ["abc", "ab"]):
        m = StopMatcher(stops)
        out = pushes(m, list("zabc"))
        assert out == ["z", "", "", ""]
        assert m.matched == "abc"
        # Only "ab" occurs: it matches when the text ends (or rules "abc" out).
        m = StopMatcher(stops)
        assert pushes(m, list("zab")) == ["z", "", ""]
        assert not m.stopped  # "abc" may still complete
        assert m.finish() == ""
        assert m.stopped and m.matched == "ab"
        m = StopMatcher(stops)
        assert pushes(m, ["zab", "x"]) == ["z", ""]
        assert m.matched == "ab"


def test_later_stop_completes_while_earlier_longer_one_is_open() -> None:
    """["abcde", "bc"]: after "abc" the cut is at 0 or 1 depending on what follows."""
    m = StopMatcher(["abcde", "bc"])
    assert pushes(m, list("abcd")) == ["", "", "", ""]
    assert not m.stopped
    assert m.held == "abcd"
    assert m.push("X") == "a"
    assert m.matched == "bc"

    m = StopMatcher(["abcde", "bc"])
    assert pushes(m, list("abcde")) == [""] * 5
    assert m.matched == "abcde"

    m = StopMatcher(["abcde", "bc"])
    assert m.push("abc") == ""
    assert m.finish() == "a"
    assert m.matched == "bc"


def test_stop_that_never_completes_is_released_by_finish() -> None:
    """Held-back text that never became a stop comes out of finish()."""
    m = StopMatcher(["<|end|>"])
    assert m.push("foo<|e") == "foo"
    assert m.push("n") == ""
    assert m.held == "<|en"
    assert m.finish() == "<|en"
    assert not m.stopped
    assert m.matched is None
    assert m.finish() == ""
    with pytest.raises(InvalidParameterError):
        m.push("more")


def test_non_ascii_and_emoji_next_to_stops() -> None:
    """Characters, not bytes: accented letters and emoji around and inside stops."""
    m = StopMatcher(["🛑"])
    assert pushes(m, ["naïve ☕", "🛑", "tail"]) == ["naïve ☕", "", ""]
    assert m.matched == "🛑"

    m = StopMatcher(["é🎉x"])
    out = pushes(m, list("aé🎉é🎉xb"))
    assert out == ["a", "", "", "é🎉", "", "", ""]
    assert "".join(out) == "aé🎉"
    assert m.matched == "é🎉x"

    m = StopMatcher(["ß\n"])
    assert m.push("Straße") == "Straße"
    assert m.push("Straß") == "Stra"
    assert m.held == "ß"
    assert m.push("e") == "ße"
    assert m.push("ß") == ""
    assert m.push("\n") == ""
    assert m.matched == "ß\n"


def test_stops_containing_newlines() -> None:
    """A blank-line stop across chunk boundaries; a single newline is held then released."""
    m = StopMatcher(["\n\n"])
    assert m.push("line1\n") == "line1"
    assert m.push("line2\n") == "\nline2"
    assert m.push("\nrest") == ""
    assert m.matched == "\n\n"

    m = StopMatcher(["\nUser:"])
    assert pushes(m, ["ok\nUs", "ually fine\n", "User: hi"]) == ["ok", "\nUsually fine", ""]
    assert m.matched == "\nUser:"


def test_empty_pushes_and_pushes_after_stop() -> None:
    """Empty pushes change nothing; after a stop every push returns ""."""
    m = StopMatcher(["END"])
    assert m.push("") == ""
    assert m.push("aE") == "a"
    assert m.push("") == ""
    assert m.held == "E"
    assert m.push("ND") == ""
    assert m.stopped
    for chunk in ("", "more text", "END"):
        assert m.push(chunk) == ""
    assert m.finish() == ""
    assert m.matched == "END"


def test_no_stops_passes_everything_through() -> None:
    """With no stop strings nothing is held back."""
    m = StopMatcher([])
    assert pushes(m, ["a", "<|", "b"]) == ["a", "<|", "b"]
    assert m.finish() == ""
    assert not m.stopped


def test_duplicate_stops_are_fine() -> None:
    """Duplicates behave like a single copy."""
    m = StopMatcher(["ab", "ab", "ab"])
    assert pushes(m, ["xa", "by"]) == ["x", ""]
    assert m.matched == "ab"


def test_empty_stop_rejected() -> None:
    """An empty stop string is a ValueError naming the parameter ``stop``."""
    for stops in ([""], ["ok", ""]):
        with pytest.raises(ValueError, match="stop") as exc:
            StopMatcher(stops)
        assert isinstance(exc.value, InvalidParameterError)
        with pytest.raises(ValueError, match="stop"):
            cut_at_stop("text", stops)


def test_bare_string_rejected() -> None:
    """A single str (a sequence of characters) is a mistake, not a list of one-char stops."""
    with pytest.raises(InvalidParameterError, match="stop"):
        StopMatcher("END")


def test_long_stream_holds_only_a_short_tail() -> None:
    """A long stream of near-misses keeps the held tail shorter than the longest stop."""
    stop = "<|prompter|>"
    m = StopMatcher([stop])
    text = "<|prompter|" * 20_000 + "x" + stop
    out = []
    for i in range(0, len(text), 7):
        out.append(m.push(text[i : i + 7]))
        assert len(m.held) < len(stop)
    assert "".join(out) == text[: -len(stop)]
    assert m.matched == stop


# --- properties --------------------------------------------------------------------------------

ALPHABET = ["a", "b", "\n", "é", "🎉"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    """A text over a small alphabet, 1-3 stops over the same alphabet, and a chunking of it."""
    stop = st.text(alphabet=st.sampled_from(ALPHABET), min_size=1, max_size=4)
    stops = draw(st.lists(stop, min_size=1, max_size=3))
    text = draw(st.text(alphabet=st.sampled_from(ALPHABET), max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    chunks = [text[i:j] for i, j in zip(bounds, bounds[1:])]  # may contain empty chunks
    return text, stops, chunks


def check_stream(m: StopMatcher, text: str, stops: list[str], chunks: list[str]) -> None:
    """The streamed output equals the oracle; emitted text is always a prefix of it; holding is minimal."""
    expected, expected_stop = cut_at_stop(text, stops)
    emitted = ""
    so_far = ""
    was_stopped = False
    for chunk in chunks:
        piece = m.push(chunk)
        if was_stopped:
            assert piece == ""
        emitted += piece
        so_far += chunk
        assert expected.startswith(emitted)
        if m.stopped:
            was_stopped = True
            assert emitted == expected
            assert m.held == ""
        else:
            assert emitted + m.held == so_far
            assert m.held == longest_open_suffix(so_far, stops)
    if not m.stopped:
        emitted += m.finish()
    assert emitted == expected
    assert m.matched == expected_stop
    assert m.stopped == (expected_stop is not None)


@settings(max_examples=1500, deadline=None)
@given(cases())
def test_streamed_equals_unstreamed(case: tuple[str, list[str], list[str]]) -> None:
    """For every text, stop list and chunking, streaming gives exactly the non-streamed cut."""
    text, stops, chunks = case
    check_stream(StopMatcher(stops), text, stops, chunks)


@settings(max_examples=500, deadline=None)
@given(cases())
def test_char_by_char_equals_one_push(case: tuple[str, list[str], list[str]]) -> None:
    """One char per push and the whole text in one push agree with the oracle."""
    text, stops, _ = case
    check_stream(StopMatcher(stops), text, stops, list(text))
    check_stream(StopMatcher(stops), text, stops, [text])


@settings(max_examples=500, deadline=None)
@given(cases())
def test_held_is_empty_or_proper_prefix_of_a_stop(case: tuple[str, list[str], list[str]]) -> None:
    """After each push: emitted + held == text so far (unless stopped); held is a proper stop prefix."""
    _text, stops, chunks = case
    m = StopMatcher(stops)
    emitted = ""
    so_far = ""
    for chunk in chunks:
        emitted += m.push(chunk)
        so_far += chunk
        if m.stopped:
            break
        assert emitted + m.held == so_far
        assert m.held == "" or any(len(m.held) < len(s) and s.startswith(m.held) for s in stops)


# --- negative control --------------------------------------------------------------------------


class NaiveMatcher(StopMatcher):
    """The bug the tests must catch: each chunk is checked on its own, nothing is held back."""

    def push(self, text: str) -> str:
        """Cut the chunk alone at a stop; forget it otherwise."""
        if self._matched is not None:
            return ""
        out, stop = cut_at_stop(text, self._stops)
        self._matched = stop
        return out

    def finish(self) -> str:
        """Nothing is ever held."""
        return ""


def test_negative_control_naive_matcher_misses_split_stop() -> None:
    """A per-chunk matcher leaks a split stop; the stream check rejects it."""
    chunks = ["Hello <|prom", "pter|> junk"]
    text = "".join(chunks)
    naive = NaiveMatcher([PROMPTER])
    assert stream(naive, chunks) == text  # leaked the stop and everything after it
    assert stream(StopMatcher([PROMPTER]), chunks) == "Hello "
    with pytest.raises(AssertionError):
        check_stream(NaiveMatcher([PROMPTER]), text, [PROMPTER], chunks)


def test_negative_control_property_finds_the_naive_bug() -> None:
    """Hypothesis, searching the same strategy as the property test, finds a failing case."""

    def naive_fails(case: tuple[str, list[str], list[str]]) -> bool:
        text, stops, chunks = case
        try:
            check_stream(NaiveMatcher(stops), text, stops, chunks)
        except AssertionError:
            return True
        return False

    text, stops, chunks = find(
        cases(),
        naive_fails,
        settings=settings(max_examples=5000, database=None, suppress_health_check=list(HealthCheck)),
    )
    assert naive_fails((text, stops, chunks))
    check_stream(StopMatcher(stops), text, stops, chunks)
