"""Split model files read in place: byte-split parts (``NAME-split-a``/``-b``, how the Med42 Q6_K
and Q8_0 files are published) cut at many offsets, and gguf-split shards written by gguf-py; each
loads to the same logits as the whole file. Every wrong combination of parts fails clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import ggufgen as g
import med42_rs
import numpy as np
import pytest

IDS = [1, 40, 7, 300, 12, 99]


@pytest.fixture(scope="module")
def whole(tiny) -> Path:  # type: ignore[no-untyped-def]
    return tiny("Q8_0")


@pytest.fixture(scope="module")
def ref_logits(whole: Path) -> np.ndarray:
    return med42_rs.Model.load(whole).logits(IDS)


def _cuts(path: Path) -> dict[str, int]:
    """Cut points of interest, from gguf-py's reading of the file (independent of ours)."""
    r = gguf.GGUFReader(path)
    fields = list(r.fields.values())
    arch = r.fields["general.architecture"]
    tokens = r.fields["tokenizer.ggml.tokens"]
    t0, t1 = r.tensors[0], r.tensors[1]
    return {
        "in the magic": 2,
        "in the version": 5,
        "in the tensor count": 11,
        "in the first key": int(fields[0].offset) + 10,
        "in the architecture string": int(arch.offset) + len("general.architecture") + 16,
        "in the token list": int(tokens.offset) + 5000,
        "in the tensor directory": int(r.tensors[0].field.offset) + 3,
        "at the data start": int(t0.data_offset),
        "inside the first tensor": int(t0.data_offset) + 1001,
        "on a tensor boundary": int(t1.data_offset),
        "inside the last tensor": int(r.tensors[-1].data_offset) + 17,
        "one byte before the end": path.stat().st_size - 1,
    }


def test_byte_split_parts_at_every_kind_of_offset(
    whole: Path, ref_logits: np.ndarray, tmp_path: Path
) -> None:
    data = whole.read_bytes()
    cuts = _cuts(whole)
    assert len(set(cuts.values())) == len(cuts)
    for where, cut in cuts.items():
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        a, b = d / "tiny.Q8_0.gguf-split-a", d / "tiny.Q8_0.gguf-split-b"
        a.write_bytes(data[:cut])
        b.write_bytes(data[cut:])
        for given in ([a], [a, b], [str(a), str(b)]):
            m = med42_rs.Model.load(given)  # type: ignore[arg-type]
            np.testing.assert_array_equal(m.logits(IDS), ref_logits, err_msg=f"cut {where}")
            if where in ("at the data start", "on a tensor boundary"):
                # aligned cut, no tensor straddling it: every tensor is used in place (a
                # straddling or misaligned tensor is copied, the only copy made)
                assert m.weights_mapped, where
        assert med42_rs.Tokenizer.from_file(a).encode("the patient") == m.tokenizer.encode("the patient")


def test_three_byte_parts(whole: Path, ref_logits: np.ndarray, tmp_path: Path) -> None:
    data = whole.read_bytes()
    n = len(data)
    for i, (lo, hi) in enumerate([(0, n // 3), (n // 3, 2 * n // 3), (2 * n // 3, n)]):
        (tmp_path / f"m.gguf-split-{'abc'[i]}").write_bytes(data[lo:hi])
    m = med42_rs.Model.load(tmp_path / "m.gguf-split-a")
    np.testing.assert_array_equal(m.logits(IDS), ref_logits)


def test_wrong_byte_part_combinations_fail_clearly(whole: Path, tmp_path: Path) -> None:
    data = whole.read_bytes()
    a, b = tmp_path / "x.gguf-split-a", tmp_path / "x.gguf-split-b"
    a.write_bytes(data[: len(data) // 2])
    b.write_bytes(data[len(data) // 2 :])
    cases = {
        "wrong order": ([b, a], ["wrong order", "x.gguf-split-a"]),
        "second part alone": ([b], ["part `b`", "x.gguf-split-a"]),
    }
    for what, (paths, needles) in cases.items():
        with pytest.raises(med42_rs.SplitFilesError) as e:
            med42_rs.Model.load(paths)
        assert all(s in str(e.value) for s in needles), (what, str(e.value))
    b.unlink()
    with pytest.raises(med42_rs.SplitFilesError, match=r"x\.gguf-split-b is missing"):
        med42_rs.Model.load(a)
    # the error class is part of the hierarchy users already catch
    assert issubclass(med42_rs.SplitFilesError, med42_rs.InvalidModelFileError)
    assert issubclass(med42_rs.SplitFilesError, ValueError)


def test_parts_joined_under_other_names_but_incomplete_say_truncated(whole: Path, tmp_path: Path) -> None:
    # Names outside both conventions are read as a byte concatenation; leaving out the tail is
    # then a truncated file, which says to download again.
    data = whole.read_bytes()
    (tmp_path / "p1").write_bytes(data[:1000])
    (tmp_path / "p2").write_bytes(data[1000:-50])
    with pytest.raises(med42_rs.TruncatedFileError, match="download the file again"):
        med42_rs.Model.load([tmp_path / "p1", tmp_path / "p2"])


@pytest.fixture(scope="module")
def shards(tiny_cfg: g.TinyConfig, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("shards")
    g.write_llama_gguf(d / "tiny.gguf", tiny_cfg, qtype=g.Q.Q8_0, split_max_tensors=7)
    paths = sorted(d.glob("tiny-*-of-*.gguf"))
    assert len(paths) >= 3 and not (d / "tiny.gguf").exists(), paths
    return paths


def test_gguf_split_shards_load_as_one_model(shards: list[Path], ref_logits: np.ndarray) -> None:
    # gguf-py's shard writer puts all metadata in the first shard and the split keys in each
    for given in ([shards[0]], shards):
        m = med42_rs.Model.load(given)
        np.testing.assert_array_equal(m.logits(IDS), ref_logits)
        assert m.weights_mapped
    assert len(m.tensors) == len(gguf.GGUFReader(shards[0]).tensors) + sum(
        len(gguf.GGUFReader(s).tensors) for s in shards[1:]
    )


def test_wrong_shard_combinations_fail_clearly(shards: list[Path], tmp_path: Path) -> None:
    n = len(shards)
    with pytest.raises(med42_rs.SplitFilesError, match=f"shard 2 of {n}"):
        med42_rs.Model.load(shards[1])
    with pytest.raises(med42_rs.SplitFilesError, match="wrong order"):
        med42_rs.Model.load([shards[1], shards[0], *shards[2:]])
    with pytest.raises(med42_rs.SplitFilesError, match=f"missing .*{shards[1].name}"):
        med42_rs.Model.load([shards[0], *shards[2:]])
    # the first shard copied alone: the rest are missing, and named
    lone = tmp_path / shards[0].name
    shutil.copy(shards[0], lone)
    with pytest.raises(med42_rs.SplitFilesError) as e:
        med42_rs.Model.load(lone)
    assert all(s.name in str(e.value) for s in shards[1:]), str(e.value)
    # a renamed shard is recognised from its metadata
    renamed = tmp_path / "model.gguf"
    shutil.copy(shards[0], renamed)
    with pytest.raises(med42_rs.SplitFilesError, match=f"shard 1 of {n}"):
        med42_rs.Model.load(renamed)
    # shards of two different splits: the shard numbers in the metadata disagree with the names
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, s in enumerate(shards):
        src = shards[1] if k == 2 else s  # shard 2's bytes under shard 3's name
        shutil.copy(src, mixed / s.name)
    with pytest.raises(med42_rs.SplitFilesError, match="metadata says 2"):
        med42_rs.Model.load(mixed / shards[0].name)
