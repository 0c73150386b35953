"""The 70B-shaped slice as Q8_0 and Q4_0, written with PyPI's ``gguf`` (which quantizes both types
itself), in parallel so that it fits the GPU check's few minutes.

    python benches/gpu/slice70b.py OUT_DIR [--small] [--workers N]

The slice has the Llama-2-70B / Med42 dimensions of ``benches/compare.py`` (hidden 8192, feed-forward
28672, 64 query and 8 K/V heads, the real 32,000-token Llama-2 vocabulary) and 2 blocks of random
weights (normal, std 0.02; the embedding std 1.0, as compare.py), about 2.2 billion weights: 2.4 GB
as Q8_0, 1.3 GB as Q4_0. Each weight matrix is made in row chunks by a pool of processes, each chunk
drawn from its own seed and quantized to both types, so the two files hold the same weights.
``--small`` writes a slice of hidden 1024 for trying the script on a small machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

FULL = {"n_embd": 8192, "n_ff": 28672, "n_head": 64, "n_head_kv": 8, "n_layer": 2, "n_ctx": 4096}
SMALL = {"n_embd": 1024, "n_ff": 3584, "n_head": 16, "n_head_kv": 2, "n_layer": 2, "n_ctx": 4096}
QUANTS = ("Q8_0", "Q4_0")
FILE_TYPE = {"Q8_0": 7, "Q4_0": 2}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
CHUNK_ROWS = 1024


def slice_path(out_dir: Path, quant: str, small: bool) -> Path:
    return out_dir / f"llama70b-slice-2blk{'-small' if small else ''}.{quant}.gguf"


def _matrices(dims: dict[str, int], n_vocab: int) -> list[tuple[str, int, int, float]]:
    """(name, rows, cols, std) of every weight matrix, in file order."""
    e, ff = dims["n_embd"], dims["n_ff"]
    kv = dims["n_head_kv"] * (e // dims["n_head"])
    out = [("token_embd.weight", n_vocab, e, 1.0)]
    for i in range(dims["n_layer"]):
        p = f"blk.{i}."
        out += [
            (p + "attn_q.weight", e, e, 0.02),
            (p + "attn_k.weight", kv, e, 0.02),
            (p + "attn_v.weight", kv, e, 0.02),
            (p + "attn_output.weight", e, e, 0.02),
            (p + "ffn_gate.weight", ff, e, 0.02),
            (p + "ffn_up.weight", ff, e, 0.02),
            (p + "ffn_down.weight", e, ff, 0.02),
        ]
    return [*out, ("output.weight", n_vocab, e, 0.02)]


def _chunk(job: tuple[int, int, int, float]) -> dict[str, np.ndarray]:
    """Rows of one matrix, drawn from their own seed, quantized to every type of QUANTS."""
    import gguf

    seed, rows, cols, std = job
    x = np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32) * np.float32(std)
    return {q: gguf.quants.quantize(x, gguf.GGMLQuantizationType[q]) for q in QUANTS}


def _llama_spm_vocab() -> tuple[list[str], list[float], list[int]]:
    import assets
    import gguf

    path, _, _ = assets.llama_cpp_vocab("llama-spm")
    r = gguf.GGUFReader(path)

    def arr(key: str) -> Any:
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(t).decode("utf-8") for t in arr("tokenizer.ggml.tokens")]
    scores = [float(s[0]) for s in arr("tokenizer.ggml.scores")]
    types = [int(t[0]) for t in arr("tokenizer.ggml.token_type")]
    return tokens, scores, types


def write_slices(out_dir: Path, small: bool = False, workers: int | None = None) -> dict[str, Path]:
    """Write (or find) the Q8_0 and Q4_0 slices; returns {quant: path}."""
    import gguf

    paths = {q: slice_path(out_dir, q, small) for q in QUANTS}
    if all(p.exists() for p in paths.values()):
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dims = SMALL if small else FULL
    tokens, scores, types = _llama_spm_vocab()
    writers = {}
    for q in QUANTS:
        w = gguf.GGUFWriter(str(paths[q].with_suffix(".part")), "llama")
        w.add_name("llama-70b-shaped-slice")
        w.add_context_length(dims["n_ctx"])
        w.add_embedding_length(dims["n_embd"])
        w.add_block_count(dims["n_layer"])
        w.add_feed_forward_length(dims["n_ff"])
        w.add_head_count(dims["n_head"])
        w.add_head_count_kv(dims["n_head_kv"])
        w.add_rope_dimension_count(dims["n_embd"] // dims["n_head"])
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_file_type(FILE_TYPE[q])
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        writers[q] = w
    ones = np.ones(dims["n_embd"], np.float32)
    matrices = _matrices(dims, len(tokens))
    jobs: list[tuple[int, int, int, float]] = []
    spans = []
    for name, rows, cols, std in matrices:
        first = len(jobs)
        jobs += [(len(jobs), min(CHUNK_ROWS, rows - r), cols, std) for r in range(0, rows, CHUNK_ROWS)]
        spans.append((name, first, len(jobs)))
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        chunks = list(pool.map(_chunk, jobs, chunksize=1))
    for name, first, end in spans:
        for q, w in writers.items():
            data = np.concatenate([c[q] for c in chunks[first:end]])
            w.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[q])
        for c in chunks[first:end]:
            c.clear()
    # the norms (F32), after the matrices: the reader finds tensors by name, not by position
    for i in range(dims["n_layer"]):
        for w in writers.values():
            w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
            w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
    for w in writers.values():
        w.add_tensor("output_norm.weight", ones)
    for q, w in writers.items():
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        paths[q].with_suffix(".part").rename(paths[q])
    sizes = ", ".join(f"{q} {paths[q].stat().st_size / 1e9:.2f} GB" for q in QUANTS)
    print(f"slice written in {time.perf_counter() - t0:.0f} s: {sizes}", file=sys.stderr, flush=True)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--small", action="store_true", help="hidden 1024 instead of 8192 (for trying)")
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    for q, p in write_slices(a.out_dir, a.small, a.workers).items():
        print(q, p)


if __name__ == "__main__":
    main()
