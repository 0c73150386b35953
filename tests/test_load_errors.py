"""Loading bad files and bad arguments: typed exceptions with messages that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import gguf
import ggufgen as g
import med42_rs
import numpy as np
import pytest
from conftest import tiny_path


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        med42_rs.Model.load(tmp_path / "nope.gguf")


def test_not_gguf(tmp_path: Path) -> None:
    st = write(tmp_path, "model.safetensors", (20).to_bytes(8, "little") + b'{"__metadata__": {}}')
    with pytest.raises(med42_rs.NotGGUFError, match="safetensors"):
        med42_rs.Model.load(st)
    html = write(tmp_path, "page.gguf", b"<!DOCTYPE html><html>Access denied</html>")
    with pytest.raises(ValueError, match="HTML"):
        med42_rs.Model.load(html)


def test_truncated_download(tmp_path: Path) -> None:
    data = tiny_path("Q4_0").read_bytes()
    for cut in (10, 3000, len(data) // 2, len(data) - 1):
        p = write(tmp_path, f"cut{cut}.gguf", data[:cut])
        with pytest.raises(med42_rs.TruncatedFileError, match="download the file again"):
            med42_rs.Model.load(p)


def build(tmp_path: Path, name: str, edit) -> Path:  # type: ignore[no-untyped-def]
    """A tiny model written through ``edit(writer, weights)``."""
    cfg = g.TinyConfig()
    w = g.random_weights(cfg)
    path = tmp_path / name
    writer = gguf.GGUFWriter(str(path), "llama")
    edit(writer, w, cfg)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def hparams(writer: gguf.GGUFWriter, cfg: g.TinyConfig, skip: str = "") -> None:
    if skip != "ctx":
        writer.add_context_length(cfg.n_ctx)
    writer.add_embedding_length(cfg.n_embd)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.n_ff)
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv(cfg.n_head_kv)
    writer.add_layer_norm_rms_eps(cfg.eps)
    writer.add_vocab_size(cfg.n_vocab)


def tensors(writer: gguf.GGUFWriter, w: dict[str, np.ndarray], drop: str = "") -> None:
    for name, arr in w.items():
        if name != drop:
            writer.add_tensor(name, arr)


def test_missing_key_is_named(tmp_path: Path) -> None:
    def edit(wr, w, cfg):  # type: ignore[no-untyped-def]
        hparams(wr, cfg, skip="ctx")
        tensors(wr, w)

    with pytest.raises(med42_rs.MetadataError, match=r"llama\.context_length"):
        med42_rs.Model.load(build(tmp_path, "nokey.gguf", edit))


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    def edit(wr, w, cfg):  # type: ignore[no-untyped-def]
        hparams(wr, cfg)
        tensors(wr, w, drop="blk.1.ffn_up.weight")

    with pytest.raises(med42_rs.InvalidModelFileError, match=r"blk\.1\.ffn_up\.weight"):
        med42_rs.Model.load(build(tmp_path, "notensor.gguf", edit))


def test_shape_inconsistent_with_gqa_config(tmp_path: Path) -> None:
    def edit(wr, w, cfg):  # type: ignore[no-untyped-def]
        hparams(wr, cfg)
        wr.add_key_value("llama.attention.head_count_kv", 4, gguf.GGUFValueType.UINT32)
        tensors(wr, w)

    # the file says 4 KV heads; its attn_k has 2 heads' worth of rows
    with pytest.raises(med42_rs.Med42Error) as ei:
        med42_rs.Model.load(build(tmp_path, "gqa.gguf", edit))
    assert "attn_k" in str(ei.value) and "n_head_kv 4" in str(ei.value)


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "gpt2.gguf"
    wr = gguf.GGUFWriter(str(p), "gpt2")
    wr.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    with pytest.raises(med42_rs.UnsupportedModelError, match="architecture `gpt2`"):
        med42_rs.Model.load(p)


def test_unsupported_quant_type_names_tensor_and_type(tmp_path: Path) -> None:
    def edit(wr, w, cfg):  # type: ignore[no-untyped-def]
        hparams(wr, cfg)
        for name, arr in w.items():
            if name == "blk.0.attn_q.weight":
                raw = np.zeros((arr.shape[0], arr.shape[1] // 32 * 18), np.uint8)
                wr.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)
            else:
                wr.add_tensor(name, arr)

    with pytest.raises(med42_rs.UnsupportedModelError, match=r"blk\.0\.attn_q\.weight.*IQ4_NL"):
        med42_rs.Model.load(build(tmp_path, "iq.gguf", edit))


def test_bad_arguments_raise_value_errors_naming_them() -> None:
    p = tiny_path("F32")
    with pytest.raises(med42_rs.DeviceUnavailableError, match="feature `cuda`"):
        med42_rs.Model.load(p, device="cuda")
    with pytest.raises(ValueError, match="device"):
        med42_rs.Model.load(p, device="tpu")
    with pytest.raises(ValueError, match="n_ctx"):
        med42_rs.Model.load(p, n_ctx=0)
    with pytest.raises(ValueError, match="n_threads"):
        med42_rs.Model.load(p, n_threads=0)
    with pytest.raises(ValueError, match="backend"):
        med42_rs.Model.load(p, backend="tensorflow")
    m = med42_rs.Model.load(p, n_ctx=16)
    with pytest.raises(ValueError, match="token id 384"):
        m.logits([1, 384])
    with pytest.raises(med42_rs.ContextLengthExceededError):
        m.logits(list(range(1, 18)))
    # the model stays usable after errors
    assert m.logits([1, 2]).shape == (2, 384)
