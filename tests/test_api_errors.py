"""Every engine error variant reaches Python as its own class, and every public entry point's
bad-argument path raises a ``Med42Error`` subclass whose message names what was wrong; the model
stays usable after each."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ggufgen as g
import med42_rs
import numpy as np
import pytest
from med42_rs import _native
from med42_rs import errors as E

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0}

# The class each example of `error::examples()` (rust/error.rs) maps to, in order: an independent
# statement of the mapping in rust/python/errors.rs. A new variant changes the count and fails here.
EXPECTED_CLASSES = [
    E.ModelFileNotFoundError,  # Io, NotFound
    E.ModelFileError,  # Io, other
    E.NotGGUFError,
    E.InvalidModelFileError,
    E.TruncatedFileError,
    E.SplitFilesError,
    E.MetadataError,  # MissingKey
    E.MetadataError,  # BadKey
    E.UnsupportedModelError,
    E.InvalidModelFileError,  # Tensor
    E.DeviceUnavailableError,
    E.InvalidParameterError,
    E.ContextLengthExceededError,
    E.InsufficientMemoryError,
    E.InsufficientMemoryError,  # DeviceOutOfMemory
    E.InsufficientMemoryError,  # InsufficientDeviceMemory
    E.TokenizerError,
    E.GenerationCancelled,
    E.InternalError,  # Internal
    E.InternalError,  # Candle
    E.ChatTemplateError,  # Template
]


def test_every_error_variant_maps_to_its_class() -> None:
    n = _native._debug_error()
    assert n == len(EXPECTED_CLASSES)
    for i, cls in enumerate(EXPECTED_CLASSES):
        with pytest.raises(E.Med42Error) as info:
            _native._debug_error(i)
        assert type(info.value) is cls, (i, type(info.value), cls)
        assert str(info.value), i
    # the built-in bases users catch
    with pytest.raises(FileNotFoundError):
        _native._debug_error(0)
    with pytest.raises(ValueError):
        _native._debug_error(11)


def test_a_panic_is_an_internal_error_and_the_engine_goes_on(tiny: Callable[..., Path]) -> None:
    with pytest.raises(E.InternalError, match="boom"):
        _native._debug_panic("boom")
    m = med42_rs.Model.load(tiny("Q8_0"))
    assert len(m.generate([1, 5, 9], max_tokens=3, **GREEDY).token_ids) == 3


@pytest.fixture(scope="module")
def m(tiny: Callable[..., Path]) -> med42_rs.Model:
    return med42_rs.Model.load(tiny("Q8_0"))


SAMPLING_CASES: list[tuple[dict[str, Any], str]] = [
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"top_p": 2}, "top_p"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -5}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"repeat_penalty": 0}, "repeat_penalty"),
    ({"repeat_last_n": -1}, "repeat_last_n"),
    ({"stop": [""]}, "stop"),
    ({"stop": [3]}, "stop"),
    ({"stop": 3}, "stop"),
    ({"temprature": 0.5}, "temprature"),
]


@pytest.mark.parametrize(("kw", "field"), SAMPLING_CASES)
def test_bad_sampling_values_raise_one_class_naming_the_field(
    m: med42_rs.Model, kw: dict[str, Any], field: str
) -> None:
    for call in (
        lambda: med42_rs.SamplingParams(**kw),
        lambda: med42_rs.SamplingParams().replace(**kw),
        lambda: m.generate([1, 5, 9], **kw),
        lambda: m.generate([1, 5, 9], stream=True, **kw),
        lambda: m.chat([{"role": "user", "content": "hi"}], **kw),
    ):
        with pytest.raises(E.InvalidParameterError) as info:
            call()
        assert f"`{field}`" in str(info.value), str(info.value)
    assert len(m.generate([1, 5, 9], max_tokens=2, **GREEDY).token_ids) == 2


def test_sampling_params_object_and_keywords_agree(m: med42_rs.Model) -> None:
    p = med42_rs.SamplingParams(max_tokens=5, temperature=0, repeat_penalty=1.0)
    assert p.max_tokens == 5 and p.temperature == 0.0 and p.seed is None and p.stop == []
    assert p.top_p == 0.95  # defaults come from the engine, shown as their decimal value
    a = m.generate([1, 5, 9], p)
    b = m.generate([1, 5, 9], max_tokens=5, temperature=0, repeat_penalty=1.0)
    c = m.generate([1, 5, 9], p.replace(max_tokens=3))
    d = m.generate([1, 5, 9], p, max_tokens=3)  # keywords override the object's fields
    assert a.token_ids == b.token_ids and len(a.token_ids) == 5
    assert c.token_ids == d.token_ids == a.token_ids[:3]
    assert p == med42_rs.SamplingParams(**p.to_dict())
    assert p != p.replace(seed=3)
    import pickle

    assert pickle.loads(pickle.dumps(p.replace(seed=3, stop=["x"]))) == p.replace(seed=3, stop=["x"])
    with pytest.raises(E.InvalidParameterError, match="`sampling`"):
        m.generate([1, 5, 9], {"temperature": 0})  # type: ignore[call-overload]


def test_bad_arguments_of_every_entry_point(m: med42_rs.Model, tiny: Callable[..., Path]) -> None:
    tok = m.tokenizer
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: m.generate(None, max_tokens=2), E.InvalidParameterError, "`prompt`"),  # type: ignore[call-overload]
        (lambda: m.generate([1, -3], max_tokens=2), E.InvalidParameterError, "-3"),
        (lambda: m.generate([1, 2.5], max_tokens=2), E.InvalidParameterError, "prompt"),  # type: ignore[list-item]
        (lambda: m.generate([1, 10**30], max_tokens=2), E.InvalidParameterError, "prompt"),
        (lambda: m.generate([1, 100000], max_tokens=2), E.InvalidParameterError, "100000"),
        (lambda: m.generate([], max_tokens=2), E.InvalidParameterError, "prompt"),
        (lambda: m.logits([1, -1]), E.InvalidParameterError, "ids"),
        (lambda: m.logits([]), E.InvalidParameterError, "ids"),
        (lambda: m.logits([1, 2], n_batch=0), E.InvalidParameterError, "batch"),
        (lambda: m.logits([1, 2], n_batch=-1), E.InvalidParameterError, "n_batch"),
        (lambda: m.greedy_ids([1, 2], -1), E.InvalidParameterError, "`n`"),
        (lambda: m.score([], [5]), E.InvalidParameterError, "context"),
        (lambda: m.score([1], []), E.InvalidParameterError, "continuation"),
        (lambda: m.score([1], [-5]), E.InvalidParameterError, "continuation"),
        (lambda: tok.encode(None), E.InvalidParameterError, "`text`"),  # type: ignore[arg-type]
        (lambda: tok.decode([1, -2]), E.InvalidParameterError, "ids"),
        (lambda: tok.decode("abc"), E.InvalidParameterError, "ids"),  # type: ignore[arg-type]
        (lambda: tok.token_text(-1), E.InvalidParameterError, "token_id"),
        (lambda: tok.token_text(10**6), E.InvalidParameterError, "1000000"),
        (lambda: tok.stream().push(-1), E.InvalidParameterError, "token_id"),
        (
            lambda: m.fit_messages([{"role": "user", "content": "x"}], -1),
            E.InvalidParameterError,
            "max_tokens",
        ),
        (lambda: med42_rs.Model.load(tiny("Q8_0"), n_threads=10000), E.InvalidParameterError, "n_threads"),
        (lambda: med42_rs.Model.load(tiny("Q8_0"), n_threads=0), E.InvalidParameterError, "n_threads"),
        (lambda: med42_rs.Model.load(tiny("Q8_0"), n_ctx=-5), E.InvalidParameterError, "n_ctx"),
        (lambda: med42_rs.Model.load(tiny("Q8_0"), n_ctx=0), E.InvalidParameterError, "n_ctx"),
        (lambda: med42_rs.Model.load(tiny("Q8_0"), backend="gpu"), E.InvalidParameterError, "backend"),
        (lambda: med42_rs.Model.load(None), E.InvalidParameterError, "path"),  # type: ignore[arg-type]
        (lambda: med42_rs.Model.load([]), E.InvalidParameterError, "path"),
    ]
    for call, cls, needle in cases:
        with pytest.raises(cls) as info:
            call()
        assert isinstance(info.value, E.Med42Error)
        assert needle in str(info.value), (needle, str(info.value))
    assert len(m.generate([1, 5, 9], max_tokens=2, **GREEDY).token_ids) == 2


def test_huge_sizes_are_refused_before_allocating(m: med42_rs.Model) -> None:
    # 2**40 tokens would be a 4 TiB allocation (it aborted the interpreter); 2**64-1 wrapped.
    for n in (2**40, 2**64 - 1):
        with pytest.raises(E.ContextLengthExceededError):
            m.greedy_ids([1, 2, 3], n)
        with pytest.raises(E.ContextLengthExceededError):
            m.generate([1, 2, 3], max_tokens=n)
    with pytest.raises(E.InvalidParameterError):
        m.greedy_ids([1, 2, 3], 2**64)
    with pytest.raises(E.ContextLengthExceededError):
        m.logits([1] * (m.n_ctx + 1))
    # negative control: the same calls at a size that fits work
    assert len(m.greedy_ids([1, 2, 3], 4)) == 4


def test_score_past_the_context_blames_the_context(m: med42_rs.Model) -> None:
    with pytest.raises(E.ContextLengthExceededError) as info:
        m.score([1] * m.n_ctx, [5, 6])
    assert "n_ctx" not in str(info.value).split(";")[0], str(info.value)
    assert str(m.n_ctx) in str(info.value)


def test_missing_file_is_both_a_med42_error_and_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(E.ModelFileNotFoundError) as info:
        med42_rs.Model.load(tmp_path / "nope.gguf")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, E.Med42Error)
    assert "nope.gguf" in str(info.value)


def test_vocab_size_that_disagrees_with_the_tokens_is_refused_at_load(tmp_path: Path) -> None:
    cfg = g.TinyConfig(extra_kv={"llama.vocab_size": g.TinyConfig().n_vocab + 15})
    bad = g.write_llama_gguf(tmp_path / "bad-vocab.gguf", cfg)
    with pytest.raises(E.MetadataError, match="vocab_size"):
        med42_rs.Model.load(bad)
    # negative control: the key agreeing with the token list loads
    ok_cfg = g.TinyConfig(extra_kv={"llama.vocab_size": g.TinyConfig().n_vocab})
    ok = g.write_llama_gguf(tmp_path / "ok-vocab.gguf", ok_cfg)
    med42_rs.Model.load(ok)


def test_logits_are_writable_and_written_once(m: med42_rs.Model) -> None:
    ids = [1, 5, 9, 11, 3]
    a = m.logits(ids)
    assert a.shape == (5, m.config["n_vocab"]) and a.dtype == np.float32
    assert a.flags.writeable
    a[0, 0] = 123.0  # writable, and not shared with anything else
    b = m.logits(ids, n_batch=2)
    assert b[0, 0] != 123.0
    assert np.array_equal(a[1:], b[1:])


def test_two_separate_models_are_not_read_as_one(tiny: Callable[..., Path]) -> None:
    a, b = tiny("Q8_0"), tiny("Q4_0")
    with pytest.raises(E.SplitFilesError, match="separate GGUF files"):
        med42_rs.Model.load([a, b])
    med42_rs.Model.load([a])  # negative control: the first alone loads


def test_a_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    code = (
        f"import med42_rs\ntry:\n    med42_rs.Model.load({str(fifo)!r})\n"
        "except med42_rs.InvalidParameterError as e:\n    print('refused', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.startswith("refused") and "not a regular file" in out.stdout, out.stdout
