"""The hostile-input corpus (fuzz/corpus/gguf, written by tools/make_fuzz_corpus.py from gguf-py
files): each case gets its typed error with a message naming what is wrong; the valid seeds load
and run. The same files seed the fuzzer (examples/fuzz_gguf.rs), which CI runs every time."""

from __future__ import annotations

from pathlib import Path

import med42_rs
import numpy as np
import pytest

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "gguf"

E = med42_rs
CASES: dict[str, tuple[type[Exception], str]] = {
    "alignment-0": (E.InvalidModelFileError, "general.alignment"),
    "alignment-huge": (E.InvalidModelFileError, "power of two"),
    "alignment-not-pow2": (E.InvalidModelFileError, "power of two"),
    "arch-not-llama": (E.UnsupportedModelError, "gemma"),
    "big-endian": (E.UnsupportedModelError, "big-endian"),
    "deep-nested-arrays": (E.InvalidModelFileError, "nested deeper"),
    "dim-zero": (E.InvalidModelFileError, "dimension is 0"),
    "dims-overflow": (E.InvalidModelFileError, "blk.0.attn_norm.weight"),
    "duplicate-key": (E.InvalidModelFileError, "appears twice"),
    "duplicate-tensor": (E.InvalidModelFileError, "appears twice"),
    "five-dims": (E.InvalidModelFileError, "5 dimensions"),
    "gqa-heads-mismatch": (E.InvalidModelFileError, "blk.0.attn_k.weight"),
    "huge-array-len": (E.InvalidModelFileError, "tokenizer.ggml.tokens"),
    "huge-kv-count": (E.InvalidModelFileError, "cannot fit"),
    "huge-tensor-count": (E.InvalidModelFileError, "cannot fit"),
    "missing-block": (E.InvalidModelFileError, "blk.2.attn_q.weight"),
    "not-gguf": (E.NotGGUFError, "bad magic"),
    "offset-misaligned": (E.InvalidModelFileError, "not a multiple of the alignment"),
    "offset-overflow": (E.InvalidModelFileError, "overflows"),
    "offset-overlapping": (E.InvalidModelFileError, "overlaps"),
    "offset-past-end": (E.TruncatedFileError, "download the file again"),
    "safetensors": (E.NotGGUFError, "safetensors"),
    "split-part-alone": (E.TruncatedFileError, "download the file again"),
    "string-len-2^64": (E.InvalidModelFileError, "string length"),
    "truncated-half": (E.TruncatedFileError, "partial download"),
    "truncated-in-header": (E.TruncatedFileError, "header"),
    "unknown-type-99": (E.InvalidModelFileError, "unknown ggml type id 99"),
    "unsupported-type-iq2_xxs": (E.InvalidModelFileError, "IQ2_XXS"),
    "version-1": (E.UnsupportedModelError, "version 1"),
    "version-99": (E.UnsupportedModelError, "version 99"),
}
VALID = ["valid-f32", "valid-gqa1", "valid-q4_0-tied", "valid-q8_0"]


def test_every_corpus_file_is_covered() -> None:
    names = {p.stem for p in CORPUS.glob("*.gguf")}
    assert names == set(CASES) | set(VALID) | {"scores-wrong-type"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case_gets_its_typed_error(name: str) -> None:
    cls, needle = CASES[name]
    with pytest.raises(cls) as e:
        med42_rs.Model.load(CORPUS / f"{name}.gguf", n_ctx=16)
    assert needle in str(e.value), str(e.value)
    assert isinstance(e.value, med42_rs.Med42Error)


def test_scores_of_the_wrong_type_are_refused_by_the_tokenizer() -> None:
    path = CORPUS / "scores-wrong-type.gguf"
    with pytest.raises(med42_rs.MetadataError, match=r"tokenizer\.ggml\.scores.*300 f32.*int32"):
        med42_rs.Tokenizer.from_file(path)
    med42_rs.Model.load(path, n_ctx=16).logits([1, 2])  # the weights themselves are fine


@pytest.mark.parametrize("name", VALID)
def test_valid_seeds_load_and_run(name: str) -> None:
    m = med42_rs.Model.load(CORPUS / f"{name}.gguf", n_ctx=16)
    assert np.isfinite(m.logits([1, 5, 9])).all()
    assert m.tokenizer.decode(m.tokenizer.encode("the patient", add_bos=False)) == "the patient"
