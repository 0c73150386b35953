"""Decode and prefill deep into the context, per KV cache type, med42-rs next to llama.cpp.

    python benches/kv_depth.py                          # slice Q4_K_M and Q8_0 + SmolLM2, f16 and q8_0
    python benches/kv_depth.py --quants Q4_K_M --kv f16 --rounds 3 --threads 2
    python benches/kv_depth.py --files tiny.gguf --depths 0 100 200 --prefill 64 --prefill-after 100

For each file and cache type, both engines with the same cache type and thread count (llama.cpp
via llama-cpp-python: ``type_k = type_v``, flash attention on for q8_0, which llama.cpp needs for
a quantized V, and as ``--llama-flash-attn`` says for f16):

- decode tok/s at each depth (default 0, 1,000 and 4,000 cached tokens): greedy steps after a
  random prompt of that many tokens (``--gen`` steps, timed from the first token to the last);
- prefill tok/s of ``--prefill`` tokens (512) after ``--prefill-after`` (3,500) cached: the timed
  512 tokens are evaluated into a context that holds the first 3,500 (med42-rs: a ``Session``
  whose cached prefix is reused, the engine's own prompt time of the new tokens);
- KV cache bytes per token (all layers, K and V).

Each child process (one per engine, cache type and round; engines alternate round by round)
prefills the deepest context once and starts every measurement from a prefix of it (the cache
truncated: ``Session.truncate`` / llama.cpp's ``kv_cache_seq_rm``), ``--reps`` times each; the
table gives the medians over rounds of the per-process medians. The slice is benches/compare.py's
70B-shaped 2-block model (written and quantized once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benches"))

GGML_TYPE = {"f32": 0, "f16": 1, "q8_0": 8}


def _ids(n: int, n_vocab: int, seed: int = 1) -> list[int]:
    rng = np.random.default_rng(seed)
    return [1] + [int(t) for t in rng.integers(3, n_vocab, max(n - 1, 0))]


def child_ours(path: str, kv: str, a: argparse.Namespace) -> dict[str, Any]:
    import med42_rs

    n_ctx = max(max(a.depths) + a.gen + 1, a.prefill_after + a.prefill + 1)
    m = med42_rs.Model.load(
        path, n_ctx=n_ctx, n_threads=a.threads, kv_type=kv, accept_license=False, n_parallel=1
    )
    n_vocab = int(m.config["n_vocab"])
    ids = _ids(max(max(a.depths), a.prefill_after + a.prefill, 1), n_vocab)
    s = m.session()
    # one prefill of the deepest context; every measurement starts from a prefix of it
    s.generate(ids[: max(max(a.depths), a.prefill_after, 1)], max_tokens=1, temperature=0.0)
    out: dict[str, Any] = {"decode": {}}
    reps = []
    for _ in range(a.reps):
        s.truncate(a.prefill_after)
        c = s.generate(ids[: a.prefill_after + a.prefill], max_tokens=1, temperature=0.0)
        assert c.usage is not None and c.usage.prompt_tokens_cached == a.prefill_after, c.usage
        reps.append(a.prefill / c.usage.prompt_seconds)
    out["prefill_after"] = statistics.median(reps)
    if len(s.tokens) < max(a.depths):
        s.generate(ids[: max(a.depths)], max_tokens=1, temperature=0.0)
    for depth in sorted(a.depths, reverse=True):  # a deeper prefix is still cached
        reps = []
        for _ in range(a.reps):
            s.truncate(max(depth, 1) - 1)
            stamps: list[float] = []
            stream = s.generate(
                ids[: max(depth, 1)], max_tokens=a.gen, temperature=0.0, repeat_penalty=1.0, stream=True
            )
            for chunk in stream:
                if chunk.token_ids:
                    stamps.append(time.perf_counter())
            assert len(stamps) > 2, stamps
            reps.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        out["decode"][str(depth)] = statistics.median(reps)
    return out


def child_llama(path: str, kv: str, a: argparse.Namespace) -> dict[str, Any]:
    import ggufgen
    import llama_cpp

    ggufgen.quiet_llama_cpp()
    n_ctx = max(max(a.depths) + a.gen + 1, a.prefill_after + a.prefill + 1)
    fa = kv == "q8_0" or a.llama_flash_attn == "on"
    llm = llama_cpp.Llama(
        model_path=path, n_ctx=n_ctx, n_threads=a.threads, n_threads_batch=a.threads, n_batch=512,
        n_ubatch=512, type_k=GGML_TYPE[kv], type_v=GGML_TYPE[kv], flash_attn=fa, verbose=False,
    )  # fmt: skip
    n_vocab = llm.n_vocab()
    ids = _ids(max(max(a.depths), a.prefill_after + a.prefill, 1), n_vocab)

    def argmax_last() -> int:
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    def truncate(n: int) -> None:
        llm._ctx.kv_cache_seq_rm(-1, n, -1)
        llm.n_tokens = n

    llm.reset()
    llm.eval(ids[: max(max(a.depths), a.prefill_after, 1)])
    out: dict[str, Any] = {"decode": {}, "flash_attn": fa}
    reps = []
    for _ in range(a.reps):
        truncate(a.prefill_after)
        t0 = time.perf_counter()
        llm.eval(ids[a.prefill_after : a.prefill_after + a.prefill])
        reps.append(a.prefill / (time.perf_counter() - t0))
    out["prefill_after"] = statistics.median(reps)
    if llm.n_tokens < max(a.depths):
        llm.eval(ids[llm.n_tokens : max(a.depths)])
    for depth in sorted(a.depths, reverse=True):
        reps = []
        for _ in range(a.reps):
            truncate(max(depth, 1) - 1)
            llm.eval(ids[max(depth, 1) - 1 : max(depth, 1)])
            tok = argmax_last()
            t0 = time.perf_counter()
            for _ in range(a.gen - 1):
                llm.eval([tok])
                tok = argmax_last()
            reps.append((a.gen - 1) / (time.perf_counter() - t0))
        out["decode"][str(depth)] = statistics.median(reps)
    return out


def run_child(engine: str, path: Path, kv: str, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--child", engine, str(path), kv, "--threads", str(a.threads),
        "--gen", str(a.gen), "--prefill", str(a.prefill), "--prefill-after", str(a.prefill_after),
        "--llama-flash-attn", a.llama_flash_attn, "--reps", str(a.reps), "--depths", *map(str, a.depths),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{engine} {kv} on {path.name} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def kv_bytes_per_token(path: Path, kv: str) -> int:
    import med42_rs

    md, _, _ = med42_rs._native.read_header([str(path)])
    arch = md["general.architecture"]
    n_head = int(md[f"{arch}.attention.head_count"])
    n_head_kv = int(md.get(f"{arch}.attention.head_count_kv", n_head))
    head_dim = int(md[f"{arch}.embedding_length"]) // n_head
    return med42_rs._native.kv_cache_bytes(kv, int(md[f"{arch}.block_count"]), n_head_kv, head_dim, 1)


def median_of(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
    vals = [r[key][sub] if sub is not None else r[key] for r in runs]
    return statistics.median(v for v in vals if v is not None)


def pair(ours: float, llama: float) -> str:
    return f"{ours:.1f} / {llama:.1f} ({ours / llama:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "FILE", "KV"), help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--depths", type=int, nargs="+", default=[0, 1000, 4000])
    ap.add_argument("--gen", type=int, default=32, help="decode steps timed per depth")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--prefill-after", type=int, default=3500)
    ap.add_argument("--kv", nargs="+", default=["f16", "q8_0"], choices=sorted(GGML_TYPE))
    ap.add_argument(
        "--llama-flash-attn", choices=["off", "on"], default="off", help="llama.cpp, f16 (q8_0: on)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3, help="measurements per depth within one process")
    ap.add_argument("--quants", nargs="*", default=["Q4_K_M", "Q8_0"])
    ap.add_argument("--files", nargs="*", default=None, help="GGUF files instead of the slice")
    ap.add_argument("--no-smollm2", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    if a.child:
        engine, path, kv = a.child
        fn = child_ours if engine == "ours" else child_llama
        print(json.dumps(fn(path, kv, a)))
        return

    import compare

    if a.files:
        files = [(Path(f).name, Path(f)) for f in a.files]
    else:
        files = [(f"slice {q}", compare.slice_file(q, a.threads)) for q in a.quants]
        if not a.no_smollm2:
            import assets

            files.append(("SmolLM2-135M Q4_1", assets.smollm2_gguf()))
    rows: list[dict[str, Any]] = []
    for label, path in files:
        compare.warm(path)
        for kv in a.kv:
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "llama": []}
            for _ in range(a.rounds):
                for engine in ("ours", "llama"):
                    runs[engine].append(run_child(engine, path, kv, a))
            row: dict[str, Any] = {"file": label, "kv": kv}
            row["kv_bytes_per_token"] = kv_bytes_per_token(path, kv)
            for e in ("ours", "llama"):
                row[e] = {
                    "decode": {str(d): median_of(runs[e], "decode", str(d)) for d in a.depths},
                    "prefill_after": median_of(runs[e], "prefill_after"),
                }
            row["llama_flash_attn"] = runs["llama"][0]["flash_attn"]
            row["runs"] = runs
            rows.append(row)
            print(f"done {label} {kv}", file=sys.stderr, flush=True)

    print(
        f"\nthreads {a.threads}, {a.gen} decode steps per depth, prefill {a.prefill} after "
        f"{a.prefill_after}, {a.rounds} rounds, medians; tok/s ours / llama.cpp (ratio)\n"
    )
    deep = max(a.depths)
    head = " | ".join(f"decode @{d}" for d in a.depths)
    print(
        f"| file | KV | KV bytes/token | {head} | ours @{deep} / @{min(a.depths)} "
        f"| prefill {a.prefill} after {a.prefill_after} |"
    )
    print("|---" * (len(a.depths) + 5) + "|")
    for r in rows:
        o, ll = r["ours"], r["llama"]
        cells = " | ".join(pair(o["decode"][str(d)], ll["decode"][str(d)]) for d in a.depths)
        keep = o["decode"][str(deep)] / o["decode"][str(min(a.depths))]
        pre = pair(o["prefill_after"], ll["prefill_after"])
        fa = " (llama.cpp FA)" if r["llama_flash_attn"] else ""
        print(f"| {r['file']} | {r['kv']}{fa} | {r['kv_bytes_per_token']} | {cells} | {keep:.0%} | {pre} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
