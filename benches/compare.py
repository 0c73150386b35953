"""med42-rs next to llama.cpp (llama-cpp-python), on the same GGUF files and thread count.

    python benches/compare.py                      # the 70B-shaped slice in Q4_K_M Q8_0 Q4_0 Q6_K, + SmolLM2
    python benches/compare.py --quants Q4_K_M --rounds 5 --threads 2
    python benches/compare.py --files model.gguf   # any Llama GGUF

The slice has the real Llama-2-70B / Med42 dimensions (hidden 8192, ff 28672, 64/8 heads, vocab
32000 with the real Llama-2 vocabulary) and 2 blocks of random weights; it is written once with
PyPI's ``gguf`` as F16 and quantized with llama.cpp's own quantizer, then cached under
``~/.cache/med42-rs/test-assets/bench`` (``$MED42_TEST_CACHE/bench``). Every measurement runs in a
fresh child process, engines alternating round by round (ours, llama.cpp, ours, ...), with the file
warm in the page cache, in 2 MiB folios where the kernel offers them (``warm``). Reported: medians
of load time, prefill (512-token prompt) tok/s, time to first token, decode tok/s (32 tokens,
greedy), peak resident memory, and the ratios ours / llama.cpp; decode as a fraction of the
machine's measured memory-read bandwidth; and the cost of the Python streaming layer (wall-clock
decode time vs the engine's own).

Prefill is reported twice. "Last" is what generation does: only the last position's logits are
needed, and both engines skip work in the last block (llama.cpp runs its feed-forward for that
position only; med42-rs runs everything but the block's K/V projections for it only). On the
2-block slice that skips a large share of the prompt's matmul work (41% for llama.cpp, 49% for
med42-rs); on Med42's 80 blocks 1.0% and 1.2%. "All" asks both engines for the logits of every position
(scoring), so both compute every block for every position plus the output matrix: the
like-for-like measure of prompt compute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SLICE = {"n_embd": 8192, "n_ff": 28672, "n_head": 64, "n_head_kv": 8, "n_layer": 2, "n_ctx": 4096}
DEFAULT_QUANTS = ["Q4_K_M", "Q8_0", "Q4_0", "Q6_K"]


# ------------------------------------------------------------------------------------------------
# assets


def bench_dir() -> Path:
    import ggufgen

    d = ggufgen.cache_dir() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def slice_f16() -> Path:
    """The 70B-shaped slice as F16 (4.5 GB), written once."""
    import assets
    import gguf
    import ggufgen

    out = bench_dir() / "llama70b-slice-2blk.F16.gguf"
    if out.exists():
        return out
    vocab, _, _ = assets.llama_cpp_vocab("llama-spm")
    r = gguf.GGUFReader(vocab)

    def arr(key: str) -> Any:
        f = r.fields[key]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(t).decode("utf-8") for t in arr("tokenizer.ggml.tokens")]
    scores = [float(s[0]) for s in arr("tokenizer.ggml.scores")]
    types = [int(t[0]) for t in arr("tokenizer.ggml.token_type")]
    cfg = ggufgen.TinyConfig(
        n_embd=SLICE["n_embd"], n_layer=SLICE["n_layer"], n_head=SLICE["n_head"],
        n_head_kv=SLICE["n_head_kv"], n_ff=SLICE["n_ff"], n_vocab=len(tokens), n_ctx=SLICE["n_ctx"],
        name="llama-70b-shaped-slice",
    )  # fmt: skip
    e, ff, kv = cfg.n_embd, cfg.n_ff, cfg.n_head_kv * cfg.head_dim
    rng = np.random.default_rng(0)

    def rand(*shape: int, std: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)

    weights = {"token_embd.weight": rand(len(tokens), e, std=1.0)}
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        weights |= {
            p + "attn_norm.weight": np.ones(e, np.float32),
            p + "attn_q.weight": rand(e, e),
            p + "attn_k.weight": rand(kv, e),
            p + "attn_v.weight": rand(kv, e),
            p + "attn_output.weight": rand(e, e),
            p + "ffn_norm.weight": np.ones(e, np.float32),
            p + "ffn_gate.weight": rand(ff, e),
            p + "ffn_up.weight": rand(ff, e),
            p + "ffn_down.weight": rand(e, ff),
        }
    weights |= {"output_norm.weight": np.ones(e, np.float32), "output.weight": rand(len(tokens), e)}
    tmp = out.with_suffix(".part")
    ggufgen.write_llama_gguf(tmp, cfg, weights, qtype=ggufgen.Q.F16, vocab=(tokens, scores, types))
    tmp.rename(out)
    return out


def slice_file(quant: str, threads: int) -> Path:
    import ggufgen

    out = bench_dir() / f"llama70b-slice-2blk.{quant}.gguf"
    if not out.exists():
        src = slice_f16()
        tmp = out.with_suffix(".part")
        print(f"quantizing the slice to {quant} with llama.cpp ...", file=sys.stderr, flush=True)
        ggufgen.llama_cpp_quantize(src, tmp, quant, threads=threads)
        tmp.rename(out)
    return out


# ------------------------------------------------------------------------------------------------
# children: one engine, one file, one round


def _prompt(n: int, n_vocab: int) -> list[int]:
    rng = np.random.default_rng(1)
    return [1] + [int(t) for t in rng.integers(3, n_vocab, n - 1)]


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: reset at exec, unlike ru_maxrss, which a child
    inherits from the parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_ours(path: str, threads: int, n_prompt: int, n_gen: int) -> dict[str, float]:
    import med42_rs

    t0 = time.perf_counter()
    m = med42_rs.Model.load(path, n_ctx=1024, n_threads=threads, accept_license=False)
    load = time.perf_counter() - t0
    ids = _prompt(n_prompt, m.config["n_vocab"])
    stamps: list[float] = []
    last = None
    t0 = time.perf_counter()
    for chunk in m.generate(ids, max_tokens=n_gen, temperature=0.0, repeat_penalty=1.0, stream=True):
        if chunk.token_ids:
            stamps.append(time.perf_counter())
        last = chunk
    assert last is not None and last.usage is not None
    u = last.usage
    n = len(stamps)
    wall_decode = stamps[-1] - stamps[0] if n > 1 else float("nan")
    return {
        "load_s": load,
        "prefill_tok_s": u.prompt_tokens / u.prompt_seconds,
        "ttft_s": stamps[0] - t0,
        "decode_tok_s": (n - 1) / wall_decode,
        "engine_decode_s": u.decode_seconds,
        "wall_decode_s": wall_decode,
        "tokens": n,
        "peak_rss_mib": _peak_rss_mib(),
        "prefill_all_tok_s": len(ids) / _timed(lambda: m.logits(ids)),
    }


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def child_llama(path: str, threads: int, n_prompt: int, n_gen: int) -> dict[str, float]:
    import ggufgen
    from llama_cpp import Llama

    ggufgen.quiet_llama_cpp()
    t0 = time.perf_counter()
    llm = Llama(
        model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512,
        n_ubatch=512, verbose=False,
    )  # fmt: skip
    load = time.perf_counter() - t0
    import llama_cpp

    n_vocab = llm.n_vocab()
    ids = _prompt(n_prompt, n_vocab)

    def argmax_last() -> int:
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t0
    tok = argmax_last()
    stamps = [time.perf_counter()]
    for _ in range(n_gen - 1):
        llm.eval([tok])
        tok = argmax_last()
        stamps.append(time.perf_counter())
    out = {
        "load_s": load,
        "prefill_tok_s": len(ids) / prefill,
        "ttft_s": stamps[0] - t0,
        "decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "tokens": len(stamps),
        "peak_rss_mib": _peak_rss_mib(),
    }
    # logits of every position: a second model object (llama-cpp-python fixes this at construction)
    llm_all = Llama(
        model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512,
        n_ubatch=512, logits_all=True, verbose=False,
    )  # fmt: skip
    out["prefill_all_tok_s"] = len(ids) / _timed(lambda: llm_all.eval(ids))
    return out


def run_child(engine: str, path: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [
        sys.executable, __file__, "--child", engine, str(path), "--threads", str(args.threads),
        "--prompt", str(args.prompt), "--gen", str(args.gen),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{engine} on {path.name} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------------------------
# machine bandwidth and bytes per token


def read_bandwidth_gib_s(threads: int, gib: float = 2.0) -> float:
    """Best of 5 multi-threaded passes over a buffer much larger than the caches."""
    a = np.ones(int(gib * 2**30) // 8, dtype=np.uint64)
    parts = np.array_split(a, threads)
    best = 0.0
    for _ in range(5):
        ts = [threading.Thread(target=np.bitwise_or.reduce, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = max(best, a.nbytes / (time.perf_counter() - t0) / 2**30)
    return best


def weight_bytes_per_token(path: Path) -> int:
    """Bytes of weights one decode step reads: every matrix, plus one embedding row."""
    import gguf

    r = gguf.GGUFReader(path)
    names = {t.name for t in r.tensors}
    total = 0
    for t in r.tensors:
        if t.name == "token_embd.weight" and "output.weight" in names:
            total += int(t.n_bytes) // int(t.shape[-1])  # one row
        else:
            total += int(t.n_bytes)
    return total


def machine_lines() -> list[str]:
    """The CPU model and what each engine runs on it (read in child processes: the engines are
    not loaded in the parent)."""
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "?",
    )  # fmt: skip
    flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    code = (
        "import med42_rs, llama_cpp; k = med42_rs.build_info(); "
        "print(k['kernels'], k['dot_kernels'].get('Q4_K')); "
        "print(llama_cpp.llama_print_system_info().decode())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines() or ["?", "?"]
    return [
        f"CPU: {cpu} ({' '.join(simd)})",
        f"med42-rs kernels: {lines[0]}",
        f"llama.cpp: {lines[-1].strip()}",
    ]


def _file_huge_kib() -> int:
    for ln in Path("/proc/meminfo").read_text().splitlines():
        if ln.startswith("FileHugePages:"):
            return int(ln.split()[1])
    return 0


def warm(path: Path) -> float:
    """Put the file in the page cache in a known state, the same for both engines: its cached pages
    are dropped (``POSIX_FADV_DONTNEED``; clean pages nobody maps) and it is read once front to
    back. On Linux with large folios (ext4 and XFS on recent kernels) read-ahead then caches it in
    2 MiB folios, which both engines' mappings use as 2 MiB pages; a file left in 4 KiB folios by
    whatever read it last decodes up to a quarter slower (docs/PERFORMANCE.md, "Page size and
    prefetch").
    Returns the share of the file in 2 MiB folios after the read (global ``FileHugePages``
    before and after, so approximate; nan off Linux)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        before = _file_huge_kib() if Path("/proc/meminfo").exists() else None
        while os.read(fd, 64 << 20):
            pass
    finally:
        os.close(fd)
    if before is None:
        return float("nan")
    return min(1.0, (_file_huge_kib() - before) * 1024 / max(1, path.stat().st_size))


# ------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quants", nargs="*", default=DEFAULT_QUANTS)
    ap.add_argument("--files", nargs="*", default=None, help="GGUF files instead of the slice")
    ap.add_argument("--no-smollm2", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.child:
        engine, path = args.child
        fn = child_ours if engine == "ours" else child_llama
        print(json.dumps(fn(path, args.threads, args.prompt, args.gen)))
        return

    files: list[tuple[str, Path]] = []
    if args.files:
        files = [(Path(f).name, Path(f)) for f in args.files]
    else:
        files = [(f"slice {q}", slice_file(q, args.threads)) for q in args.quants]
        if not args.no_smollm2:
            import assets

            files.append(("SmolLM2-135M Q4_1", assets.smollm2_gguf()))
    bw = read_bandwidth_gib_s(args.threads)
    print(f"memory read bandwidth: {bw:.1f} GiB/s ({args.threads} threads)", file=sys.stderr)
    results: dict[str, Any] = {"bandwidth_gib_s": bw, "threads": args.threads, "files": {}}
    rows = []
    for label, path in files:
        huge = warm(path)
        print(f"{label}: {huge:.0%} of the file in 2 MiB page-cache folios", file=sys.stderr)
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "llama": []}
        for _ in range(args.rounds):
            for engine in ("ours", "llama"):
                runs[engine].append(run_child(engine, path, args))
        med = {e: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for e, rs in runs.items()}
        bpt = weight_bytes_per_token(path)
        o, ll = med["ours"], med["llama"]
        row = {
            "file": label,
            "size_gib": path.stat().st_size / 2**30,
            "ours": o,
            "llama": ll,
            "ratio_decode": o["decode_tok_s"] / ll["decode_tok_s"],
            "ratio_prefill": o["prefill_tok_s"] / ll["prefill_tok_s"],
            "ratio_prefill_all": o["prefill_all_tok_s"] / ll["prefill_all_tok_s"],
            "ratio_ttft": o["ttft_s"] / ll["ttft_s"],
            "ratio_load": o["load_s"] / ll["load_s"],
            "ratio_rss": o["peak_rss_mib"] / ll["peak_rss_mib"],
            "roofline_ours": bpt * o["decode_tok_s"] / 2**30 / bw,
            "roofline_llama": bpt * ll["decode_tok_s"] / 2**30 / bw,
            "python_layer": 1 - o["engine_decode_s"] / o["wall_decode_s"],
            "bytes_per_token": bpt,
            "huge_folios": huge,
        }
        results["files"][label] = {"runs": runs, **row}
        rows.append(row)
        print(f"done {label}", file=sys.stderr, flush=True)

    print(
        f"\nthreads {args.threads}, prompt {args.prompt}, decode {args.gen}, {args.rounds} rounds, medians;"
    )
    print(f"memory read bandwidth {bw:.1f} GiB/s")
    print(
        "page cache: each file re-read before its runs; in 2 MiB folios: "
        + ", ".join(f"{r['file']} {r['huge_folios']:.0%}" for r in rows)
    )
    for line in machine_lines():
        print(line)
    print()
    print(
        "| file | size GiB | prefill tok/s ours / llama.cpp (ratio) "
        "| prefill, all logits, tok/s ours / llama.cpp (ratio) | decode tok/s ours / llama.cpp (ratio) "
        "| decode % of bandwidth ours / llama.cpp | TTFT s ours / llama.cpp (ratio) "
        "| load s ours / llama.cpp | peak RSS MiB ours / llama.cpp (ratio) | Python layer |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, ll = r["ours"], r["llama"]
        print(
            f"| {r['file']} | {r['size_gib']:.2f} "
            f"| {o['prefill_tok_s']:.1f} / {ll['prefill_tok_s']:.1f} ({r['ratio_prefill']:.2f}) "
            f"| {o['prefill_all_tok_s']:.1f} / {ll['prefill_all_tok_s']:.1f} ({r['ratio_prefill_all']:.2f}) "
            f"| {o['decode_tok_s']:.1f} / {ll['decode_tok_s']:.1f} ({r['ratio_decode']:.2f}) "
            f"| {r['roofline_ours']:.0%} / {r['roofline_llama']:.0%} "
            f"| {o['ttft_s']:.2f} / {ll['ttft_s']:.2f} ({r['ratio_ttft']:.2f}) "
            f"| {o['load_s']:.2f} / {ll['load_s']:.2f} "
            f"| {o['peak_rss_mib']:.0f} / {ll['peak_rss_mib']:.0f} ({r['ratio_rss']:.2f}) "
            f"| {r['python_layer']:.1%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
