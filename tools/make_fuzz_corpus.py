"""Write the fuzz seed corpus (fuzz/corpus/gguf/): small valid Llama GGUFs written with PyPI's gguf,
and one file per hostile-input case, made by patching a valid file at offsets gguf-py's reader
reports (so the corpus does not depend on med42-rs's own reader).

    python tools/make_fuzz_corpus.py
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

import gguf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import ggufgen as g  # noqa: E402

OUT = ROOT / "fuzz" / "corpus" / "gguf"
CFG = g.TinyConfig(
    n_embd=32, n_layer=2, n_head=4, n_head_kv=2, n_ff=64, n_vocab=300, n_ctx=64, name="fuzz-seed"
)


SAFETENSORS_HEADER = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
LEN5 = struct.pack("<Q", 5)


def valid(qtype: gguf.GGMLQuantizationType, **kw: object) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.gguf"
        cfg = g.TinyConfig(**{**CFG.__dict__, **kw})
        g.write_llama_gguf(p, cfg, qtype=qtype)
        return p.read_bytes()


def kv_value_offset(data: bytes, key: str) -> int:
    """Offset of the value of ``key`` (after its type id), from gguf-py's reader."""
    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        r = gguf.GGUFReader(f.name)
        off = int(r.fields[key].offset)
    return off + 8 + len(key.encode()) + 4


def tensor_info_offsets(data: bytes, index: int) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        r = gguf.GGUFReader(f.name)
        t = r.tensors[index]
        start = int(t.field.offset)
        name = t.name.encode()
    n_dims_at = start + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, n_dims_at)[0]
    dims_at = n_dims_at + 4
    type_at = dims_at + 8 * n_dims
    return {"name": start + 8, "n_dims": n_dims_at, "dims": dims_at, "type": type_at, "offset": type_at + 4}


def patch(data: bytes, at: int, fmt: str, *vals: object) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, *vals)
    return bytes(b)


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) >= 1, old
    return data.replace(old, new, 1)


def nested_arrays(depth: int) -> bytes:
    out = struct.pack("<IIQQ", 0x46554747, 3, 0, 1)
    key = b"deep"
    out += struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)  # ARRAY
    for _ in range(depth):
        out += struct.pack("<IQ", 9, 1)  # array of 1 array
    out += struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)  # innermost: one u32
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.gguf"):
        old.unlink()
    base = valid(gguf.GGMLQuantizationType.Q8_0)
    cases: dict[str, bytes] = {
        "valid-f32": valid(gguf.GGMLQuantizationType.F32),
        "valid-q8_0": base,
        "valid-q4_0-tied": valid(gguf.GGMLQuantizationType.Q4_0, tied=True),
        "valid-gqa1": valid(gguf.GGMLQuantizationType.Q8_0, n_head_kv=1),
        "not-gguf": b"hello, this is not a model file at all" * 4,
        "safetensors": struct.pack("<Q", 64)
        + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
        + b"\0" * 16,
        "version-1": patch(base, 4, "<I", 1),
        "version-99": patch(base, 4, "<I", 99),
        "big-endian": patch(base, 4, ">I", 3),
        "huge-tensor-count": patch(base, 8, "<Q", 2**62),
        "huge-kv-count": patch(base, 16, "<Q", 2**63 - 1),
        "string-len-2^64": patch(base, 24, "<Q", 2**64 - 16),
        "huge-array-len": patch(base, kv_value_offset(base, "tokenizer.ggml.tokens") + 4, "<Q", 2**60),
        "deep-nested-arrays": nested_arrays(200),
        "scores-wrong-type": patch(base, kv_value_offset(base, "tokenizer.ggml.scores"), "<I", 5),
        "arch-not-llama": replace_once(
            base, b"\x05\x00\x00\x00\x00\x00\x00\x00llama", b"\x05\x00\x00\x00\x00\x00\x00\x00gemma"
        ),
        "gqa-heads-mismatch": patch(base, kv_value_offset(base, "llama.attention.head_count_kv"), "<I", 4),
        "missing-block": patch(base, kv_value_offset(base, "llama.block_count"), "<I", 3),
        "duplicate-key": replace_once(base, b"tokenizer.ggml.bos_token_id", b"tokenizer.ggml.eos_token_id"),
        "duplicate-tensor": replace_once(base, b"blk.0.attn_k.weight", b"blk.0.attn_q.weight"),
        "truncated-half": base[: len(base) // 2],
        "truncated-in-header": base[:20],
        "split-part-alone": base[: len(base) * 2 // 3],
    }
    ti = tensor_info_offsets(base, 1)
    cases["five-dims"] = patch(base, ti["n_dims"], "<I", 5)
    cases["dims-overflow"] = patch(base, ti["dims"], "<QQ", 2**40, 2**40)
    cases["dim-zero"] = patch(base, ti["dims"], "<Q", 0)
    cases["unsupported-type-iq2_xxs"] = patch(base, ti["type"], "<I", 16)
    cases["unknown-type-99"] = patch(base, ti["type"], "<I", 99)
    off1 = struct.unpack_from("<Q", base, ti["offset"])[0]
    cases["offset-misaligned"] = patch(base, ti["offset"], "<Q", off1 + 1)
    cases["offset-overlapping"] = patch(base, ti["offset"], "<Q", 0)
    cases["offset-past-end"] = patch(base, ti["offset"], "<Q", 2**40)
    cases["offset-overflow"] = patch(base, ti["offset"], "<Q", 2**64 - 32)
    with tempfile.TemporaryDirectory() as d:
        for align, name in [(0, "alignment-0"), (48, "alignment-not-pow2"), (2**31, "alignment-huge")]:
            p = Path(d) / f"{name}.gguf"
            cfg = g.TinyConfig(**{**CFG.__dict__, "n_layer": 1})
            w = gguf.GGUFWriter(str(p), "llama")
            w.add_uint32("general.alignment", align)
            w.add_block_count(1)
            w.add_tensor("x", g.random_weights(cfg)["token_embd.weight"].astype("float32"))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            cases[name] = p.read_bytes()
    for name, data in cases.items():
        (OUT / f"{name}.gguf").write_bytes(data)
    total = sum(len(d) for d in cases.values())
    print(f"wrote {len(cases)} files, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
