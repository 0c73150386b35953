"""Batched decode and session reuse: med42-rs next to llama.cpp's own batched decode.

    python benches/batched.py                         # slice Q4_K_M and Q8_0, SmolLM2; 1 2 4 8 sequences
    python benches/batched.py --quants Q4_K_M --seqs 1 4 --rounds 3 --threads 2

Aggregate decode: N sequences (different prompts of ``--prompt`` tokens each, greedy) decoded
together. med42-rs: N Python threads call ``Model.generate(stream=True)`` on one model loaded with
``n_parallel=N``; its scheduler runs them in one forward pass per token. llama.cpp: its low-level
batch API through llama-cpp-python, one ``llama_decode`` per step with one token of each of the N
sequences (``seq_id`` 0..N-1, a context with ``n_seq_max=N``), the prompts prefilled first in one
batch; both engines with their default F16 KV cache. The figure is steady-state tokens per
second summed over the sequences: the tokens produced while all N are decoding, over that window.

Session reuse (med42-rs only; the slice): a 6-turn conversation in token ids (a 64-token system
prompt, 32-token questions, 16-token answers) through one ``Session``; time to first token of
turn 6 over turn 1, and the same turn-6 prompt on a fresh cache for contrast.

Every measurement runs in a fresh child process, engines alternating round by round; medians.
The files are those of ``benches/compare.py`` (the 70B-shaped slice, cached).
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

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))


def _prompts(n_seq: int, n_prompt: int, n_vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [[1] + [int(t) for t in rng.integers(3, n_vocab, n_prompt - 1)] for _ in range(n_seq)]


def _window_rate(stamps: list[list[float]]) -> float:
    """Tokens per second summed over sequences while all of them are decoding."""
    start = max(s[0] for s in stamps)
    end = min(s[-1] for s in stamps)
    if end <= start:
        return float("nan")
    n = sum(sum(1 for t in s if start < t <= end) for s in stamps)
    return n / (end - start)


def child_ours(path: str, threads: int, n_seq: int, n_prompt: int, n_gen: int) -> dict[str, float]:
    import med42_rs

    m = med42_rs.Model.load(path, n_ctx=1024, n_threads=threads, n_parallel=n_seq, accept_license=False)
    prompts = _prompts(n_seq, n_prompt, m.config["n_vocab"])
    stamps: list[list[float]] = [[] for _ in range(n_seq)]
    go = threading.Barrier(n_seq)

    def run(i: int) -> None:
        go.wait()
        for c in m.generate(prompts[i], max_tokens=n_gen, temperature=0.0, repeat_penalty=1.0, stream=True):
            if c.token_ids:
                stamps[i].append(time.perf_counter())

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n_seq)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if n_seq == 1:
        s = stamps[0]
        rate = (len(s) - 1) / (s[-1] - s[0])
    else:
        rate = _window_rate(stamps)
    return {"decode_tok_s": rate, "max_batch": float(m.scheduler_stats["max_batch"])}


def child_llama(path: str, threads: int, n_seq: int, n_prompt: int, n_gen: int) -> dict[str, float]:
    import ggufgen
    import llama_cpp as lc

    ggufgen.quiet_llama_cpp()
    mp = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(path.encode(), mp)
    cp = lc.llama_context_default_params()
    cp.n_ctx = n_seq * (n_prompt + n_gen) + 64
    cp.n_batch = cp.n_ubatch = max(512, n_seq * n_prompt)
    cp.n_seq_max = n_seq
    cp.n_threads = cp.n_threads_batch = threads
    ctx = lc.llama_init_from_model(model, cp)
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    prompts = _prompts(n_seq, n_prompt, n_vocab)
    batch = lc.llama_batch_init(max(n_seq * n_prompt, n_seq), 0, n_seq)

    def fill(items: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(items)
        for i, (tok, pos, seq, want) in enumerate(items):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = want

    def argmax(i: int) -> int:
        ptr = lc.llama_get_logits_ith(ctx, i)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    items = [(t, p, s, p == n_prompt - 1) for s in range(n_seq) for p, t in enumerate(prompts[s])]
    fill(items)
    assert lc.llama_decode(ctx, batch) == 0
    nxt = [argmax(s * n_prompt + n_prompt - 1) for s in range(n_seq)]
    stamps = [time.perf_counter()]
    for step in range(n_gen - 1):
        fill([(nxt[s], n_prompt + step, s, True) for s in range(n_seq)])
        assert lc.llama_decode(ctx, batch) == 0
        nxt = [argmax(s) for s in range(n_seq)]
        stamps.append(time.perf_counter())
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return {"decode_tok_s": n_seq * (len(stamps) - 1) / (stamps[-1] - stamps[0])}


def child_session(path: str, threads: int) -> dict[str, float]:
    """Time to first token per turn of a 6-turn conversation in one session."""
    import med42_rs

    m = med42_rs.Model.load(path, n_ctx=1024, n_threads=threads, accept_license=False)
    rng = np.random.default_rng(3)
    n_vocab = m.config["n_vocab"]
    history = [1] + [int(t) for t in rng.integers(3, n_vocab, 63)]
    s = m.session()
    ttft: list[float] = []
    prompt = history
    for _turn in range(6):
        prompt = history + [int(t) for t in rng.integers(3, n_vocab, 32)]
        t0 = time.perf_counter()
        ids: list[int] = []
        for c in s.generate(prompt, max_tokens=16, temperature=0.0, repeat_penalty=1.0, stream=True):
            if not ids and c.token_ids:
                ttft.append(time.perf_counter() - t0)
            ids.extend(c.token_ids)
        history = prompt + ids
    t0 = time.perf_counter()
    next(iter(m.generate(prompt, max_tokens=1, temperature=0.0, stream=True)))
    fresh = time.perf_counter() - t0
    return {
        "ttft_turn1_s": ttft[0],
        "ttft_turn6_s": ttft[5],
        "ttft_turn6_fresh_s": fresh,
        "turn6_prompt_tokens": float(len(prompt)),
    }


def run_child(args: argparse.Namespace, *child: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", *child, "--threads", str(args.threads),
           "--prompt", str(args.prompt), "--gen", str(args.gen)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{child} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--gen", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seqs", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--quants", nargs="*", default=["Q4_K_M", "Q8_0"])
    ap.add_argument("--no-smollm2", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        kind, path, *rest = args.child
        if kind == "session":
            print(json.dumps(child_session(path, args.threads)))
        else:
            fn = child_ours if kind == "ours" else child_llama
            print(json.dumps(fn(path, args.threads, int(rest[0]), args.prompt, args.gen)))
        return

    from compare import slice_file, warm

    files = [(f"slice {q}", slice_file(q, args.threads)) for q in args.quants]
    if not args.no_smollm2:
        import assets

        files.append(("SmolLM2-135M Q4_1", assets.smollm2_gguf()))
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "?",
    )  # fmt: skip
    print(f"CPU: {cpu}; {args.threads} threads; prompt {args.prompt}, decode {args.gen}, "
          f"{args.rounds} rounds, medians\n")  # fmt: skip
    results: dict[str, Any] = {"cpu": cpu, "threads": args.threads, "files": {}}
    print("| file | sequences | aggregate decode tok/s ours / llama.cpp (ratio) | ours vs 1 sequence |")
    print("|---|---|---|---|")
    for label, path in files:
        warm(path)
        single = None
        for n in args.seqs:
            runs: dict[str, list[float]] = {"ours": [], "llama": []}
            for _ in range(args.rounds):
                runs["ours"].append(run_child(args, "ours", str(path), str(n))["decode_tok_s"])
                runs["llama"].append(run_child(args, "llama", str(path), str(n))["decode_tok_s"])
            o, ll = statistics.median(runs["ours"]), statistics.median(runs["llama"])
            single = o if n == 1 else single
            scale = f"{o / single:.2f}x" if single else "-"
            print(f"| {label} | {n} | {o:.1f} / {ll:.1f} ({o / ll:.2f}) | {scale} |", flush=True)
            results["files"].setdefault(label, {})[n] = runs
    print(
        "\n| file | TTFT turn 1 s | TTFT turn 6 s (ratio) | turn 6 on a fresh cache s "
        "| turn 6 prompt tokens |"
    )
    print("|---|---|---|---|---|")
    for label, path in files[:1]:
        rs = [run_child(args, "session", str(path)) for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(
            f"| {label} | {med['ttft_turn1_s']:.3f} | {med['ttft_turn6_s']:.3f} "
            f"({med['ttft_turn6_s'] / med['ttft_turn1_s']:.2f}) | {med['ttft_turn6_fresh_s']:.3f} "
            f"| {med['turn6_prompt_tokens']:.0f} |"
        )
        results["session"] = rs
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
