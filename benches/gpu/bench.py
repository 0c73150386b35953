"""Prefill and decode speed on the GPU beside the CPU, with the GPU's bandwidth roofline beside decode.

    python benches/gpu/bench.py --assets DIR [--device cuda|cpu] [--small] [--smollm2 FILE] [--json OUT]

Files: the 70B-shaped slice as Q8_0 and Q4_0 (``slice70b.py``, written into ``--assets`` on first use)
and SmolLM2-135M-Instruct Q4_1 when ``--smollm2`` (default ``$MED42_TEST_CACHE/...``) exists.
For each file, in a fresh child process each: all layers on the GPU (``n_gpu_layers=-1``), half of
them, and the CPU alone (``device="cpu"``, every core). Each child loads the model, warms up on a
different prompt, then generates ``--gen`` tokens greedily after a ``--prompt``-token prompt:
prefill tok/s is the engine's own prompt timing (the logits of the last position, as generation
needs), ``prefill all`` times ``Model.logits`` (every position), decode tok/s is measured between
the first and the last streamed token.

The roofline of decode is the weight bytes one token reads (every matrix, one embedding row; the K/V
cache at these depths is a few MB) divided by the GPU's memory bandwidth: measured with torch (a
device-to-device copy of 2 GiB, read + write bytes, best of 5) where torch sees the GPU, else the
vendor's specification for the GPU's name, and the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests"))

# Specified memory bandwidth (bytes/s) by GPU name, for when torch cannot measure it.
SPEC_BANDWIDTH = [
    ("H100 PCIe", 2.0e12),
    ("H100 NVL", 3.9e12),
    ("H100", 3.35e12),  # SXM5, HBM3
    ("H200", 4.8e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("L40S", 0.864e12),
]


# ------------------------------------------------------------------------------------------------
# children


def _prompt(n: int, n_vocab: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [1] + [int(t) for t in rng.integers(3, n_vocab, n - 1)]


def child_run(path: str, device: str, n_gpu_layers: int | None, n_prompt: int, n_gen: int) -> dict[str, Any]:
    import med42_rs

    kwargs: dict[str, Any] = {"device": device}
    if n_gpu_layers is not None:
        kwargs["n_gpu_layers"] = n_gpu_layers
    t0 = time.perf_counter()
    m = med42_rs.Model.load(path, n_ctx=1024, accept_license=False, **kwargs)
    load = time.perf_counter() - t0
    n_vocab = m.config["n_vocab"]
    # warm-up on another prompt: kernel loading, buffers, caches
    m.generate(_prompt(min(n_prompt, 64), n_vocab, 2), max_tokens=4, temperature=0.0, repeat_penalty=1.0)
    ids = _prompt(n_prompt, n_vocab, 1)
    stamps: list[float] = []
    last = None
    t0 = time.perf_counter()
    for chunk in m.generate(ids, max_tokens=n_gen, temperature=0.0, repeat_penalty=1.0, stream=True):
        if chunk.token_ids:
            stamps.extend([time.perf_counter()] * len(chunk.token_ids))
        last = chunk
    assert last is not None and last.usage is not None
    u = last.usage
    t1 = time.perf_counter()
    m.logits(ids)
    prefill_all = time.perf_counter() - t1
    return {
        "load_s": load,
        "prefill_tok_s": u.prompt_tokens / u.prompt_seconds,
        "prefill_all_tok_s": len(ids) / prefill_all,
        "ttft_s": stamps[0] - t0,
        "decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "tokens": len(stamps),
        "backend": m.backend,
        "native_module": med42_rs.build_info()["native_module"],
    }


def child_gpu() -> dict[str, Any]:
    """The GPU's name and its device-to-device copy bandwidth, with torch."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    n = 2 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            b.copy_(a)
        torch.cuda.synchronize()
        best = max(best, 2 * n * 5 / (time.perf_counter() - t0))
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gb": props.total_memory / 1e9, "bandwidth": best}


def run_child(args: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = out.stdout.strip().splitlines()
    result: dict[str, Any] = {}
    if lines and lines[-1].startswith("{"):
        result = dict(json.loads(lines[-1]))
    if out.returncode != 0 or "error" in result:
        err = out.stderr.strip().splitlines()
        raise RuntimeError(result.get("error") or (err[-1] if err else f"exit {out.returncode}"))
    return result


# ------------------------------------------------------------------------------------------------
# the parent


def gpu_info() -> dict[str, Any]:
    """Name and bandwidth of GPU 0: measured with torch, else the specification for its name."""
    try:
        info = run_child(["gpu"], timeout=120)
        info["bandwidth_source"] = "measured (torch copy)"
        return info
    except Exception as e:
        why = str(e)
    name = "?"
    try:
        q = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        name = subprocess.run(q, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    spec = next((bw for key, bw in SPEC_BANDWIDTH if key in name), None)
    return {"name": name, "bandwidth": spec, "bandwidth_source": f"specification ({why})"}


def weight_bytes_per_token(path: Path) -> int:
    """Bytes of weights one decode step reads: every matrix, plus one embedding row."""
    import gguf

    r = gguf.GGUFReader(path)
    names = {t.name for t in r.tensors}
    total = 0
    for t in r.tensors:
        if t.name == "token_embd.weight" and "output.weight" in names:
            total += int(t.n_bytes) // int(t.shape[-1])  # one row (shape is [cols, rows] in gguf-py)
        else:
            total += int(t.n_bytes)
    return total


def n_layer(path: Path) -> int:
    import gguf

    r = gguf.GGUFReader(path)
    f = r.fields["llama.block_count"]
    return int(f.parts[f.data[0]][0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--assets", type=Path, help="where the slice files are written and kept")
    ap.add_argument("--device", default="cuda", help="cuda (GPU, half, CPU) or cpu (the CPU alone)")
    ap.add_argument("--small", action="store_true", help="the small slice (hidden 1024), for trying")
    ap.add_argument("--smollm2", type=Path, default=None)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per child")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    a = ap.parse_args()
    if a.child:
        args = json.loads(a.child)
        try:
            result = child_gpu() if args[0] == "gpu" else child_run(*args)
        except Exception as e:
            # the exception's own first line (an engine error's text may end in a backtrace)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(json.dumps({"error": f"{type(e).__name__}: {first}"}))
            return 1
        print(json.dumps(result))
        return 0

    import med42_rs
    import slice70b

    info = med42_rs.build_info()
    print(f"med42_rs {med42_rs.__version__}: {info['native_module']}, CUDA caps {info['cuda_compute_caps']}")
    gpu = gpu_info() if a.device != "cpu" else {"name": "-", "bandwidth": None, "bandwidth_source": "-"}
    bw = gpu["bandwidth"]
    tb_s = bw / 1e12 if bw else float("nan")
    print(f"GPU: {gpu['name']}; bandwidth {tb_s:.2f} TB/s, {gpu['bandwidth_source']}")
    print(f"CPU: {os.cpu_count()} logical CPUs")
    assets = a.assets or Path(os.environ.get("MED42_TEST_CACHE", ".")) / "bench"
    files = [(f"slice {q}", p) for q, p in slice70b.write_slices(assets, small=a.small).items()]
    smollm2 = a.smollm2 or Path(os.environ.get("MED42_TEST_CACHE", ".")) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if smollm2.exists():
        files.append(("SmolLM2 Q4_1", smollm2))
    else:
        print(f"SmolLM2: {smollm2} is not here (98 MB: it does not fit what travels to the GPU machine)")

    rows: list[dict[str, Any]] = []
    for label, path in files:
        layers = n_layer(path)
        configs: list[tuple[str, str, int | None]] = [("cpu", "cpu", None)]
        if a.device != "cpu":
            configs = [
                ("gpu all", a.device, -1),
                (f"gpu {layers // 2}/{layers}", a.device, layers // 2),
                *configs,
            ]
        per_token = weight_bytes_per_token(path)
        for name, device, ngl in configs:
            row: dict[str, Any] = {"file": label, "config": name, "weight_bytes_per_token": per_token}
            try:
                row |= run_child([str(path), device, ngl, a.prompt, a.gen], a.timeout)
            except Exception as e:
                row["error"] = str(e)
            if bw and device != "cpu":
                row["roofline_tok_s"] = bw / per_token
            rows.append(row)
            shown = {k: v for k, v in row.items() if k not in ("file", "config")}
            print(f"  {label:14} {name:10} {json.dumps(shown)}", flush=True)

    print()
    print(f"{'file':14} {'config':10} {'prefill':>9} {'all':>9} {'decode':>8} {'roofline':>9} {'of roof':>7} "
          f"{'pf vs CPU':>9}")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['file']:14} {r['config']:10} FAILED: {r['error']}")
            continue
        same = [c for c in rows if c["file"] == r["file"] and "error" not in c]
        cpu = next((c for c in same if c["config"] == "cpu"), None)
        roof = r.get("roofline_tok_s")
        share = f"{r['decode_tok_s'] / roof:7.0%}" if roof else f"{'-':>7}"
        roof_s = f"{roof:9.1f}" if roof else f"{'-':>9}"
        ratio = f"{r['prefill_tok_s'] / cpu['prefill_tok_s']:8.1f}x" if cpu else f"{'-':>9}"
        print(f"{r['file']:14} {r['config']:10} {r['prefill_tok_s']:9.1f} {r['prefill_all_tok_s']:9.1f} "
              f"{r['decode_tok_s']:8.1f} {roof_s} {share} {ratio}")  # fmt: skip
    print(f"(tok/s; prompt {a.prompt} tokens, {a.gen} generated; roofline: bandwidth / bytes a token reads)")
    if a.json:
        a.json.write_text(json.dumps({"gpu": gpu, "rows": rows, "prompt": a.prompt, "gen": a.gen}, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
