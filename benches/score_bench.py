"""Requests scored per second for 4-choice questions: med42-rs in-process (the lm-eval backend)
against llama-cpp-python scoring the same token ids, on the same GGUF file and thread count.

    python benches/score_bench.py                       # SmolLM2-135M (test assets), 2 threads
    python benches/score_bench.py --file med42-70b.Q4_K_M.gguf --questions 8 --threads 16
    python benches/score_bench.py --tiny --rounds 1     # the tiny test model: checks the script runs

The questions are the 4-option items shipped with the offline lm-eval tasks (MedQA, MedMCQA and
MMLU-clinical formats, lm-eval's prompts), so every question is one context and four one-token
continuations (" A".." D"): the shape of the card's multiple-choice benchmarks. Measured, each
round alternating the engines:

- ``med42-rs``: ``Med42LM.loglikelihood`` (requests grouped by context; the context runs once);
- ``med42-rs per request``: each request scored alone (no reuse), to show what grouping buys;
- ``llama.cpp per request``: ``Llama.eval`` of context + continuation from an empty cache with
  ``logits_all=True``, log-softmax in numpy: what a llama-cpp-python scorer does;
- ``llama.cpp shared prefix``: the context evaluated once per question and the cache cut back to it
  for each choice (the same reuse as med42-rs, done by hand).

Every variant's log-likelihoods are checked against the first's before timings are reported.
Reported: median requests/s per variant and the ratios to llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

Pair = tuple[list[int], list[int]]


def questions(n: int) -> list[tuple[str, list[str]]]:
    """``(prompt, [" A", " B", " C", " D"])`` for up to ``n`` shipped 4-option questions."""
    from med42_rs.integrations.lm_eval import TASKS_DIR

    data = TASKS_DIR / "data"
    out: list[tuple[str, list[str]]] = []
    for line in (data / "medqa_sample.jsonl").read_text().splitlines():
        r = json.loads(line)
        opts = "".join(f"{k}. {r['options'][k]}\n" for k in "ABCD")
        out.append((f"Question: {r['question']}\n{opts}Answer:", []))
    for line in (data / "medmcqa_sample.jsonl").read_text().splitlines():
        r = json.loads(line)
        opts = "".join(f"{k}. {r['op' + k.lower()]}\n" for k in "ABCD")
        out.append((f"Question: {r['question']}\nChoices:\n{opts}Answer:", []))
    for line in (data / "mmlu_clinical_sample.jsonl").read_text().splitlines():
        r = json.loads(line)
        opts = "".join(f"{k}. {c}\n" for k, c in zip("ABCD", r["choices"]))
        subject = r["subject"].replace("_", " ")
        head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
        out.append((f"{head}{r['question'].strip()}\n{opts}Answer:", []))
    return [(p, [f" {k}" for k in "ABCD"]) for p, _ in out[:n]]


def log_softmax_pick(rows: np.ndarray, cont: list[int]) -> float:
    x = rows.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    lp = x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    return float(sum(lp[i, t] for i, t in enumerate(cont)))


def llama_per_request(L: Any, pairs: list[Pair]) -> list[float]:
    out = []
    for ctx, cont in pairs:
        L.reset()
        L.eval(ctx + cont[:-1])
        out.append(log_softmax_pick(np.array(L.scores[len(ctx) - 1 : len(ctx) - 1 + len(cont)]), cont))
    return out


def llama_shared_prefix(L: Any, pairs: list[Pair]) -> list[float]:
    out = []
    L.reset()
    for ctx, cont in pairs:
        if list(L.input_ids[: L.n_tokens]) != ctx:
            L.reset()
            L.eval(ctx)
        L.n_tokens = len(ctx)  # llama.cpp drops the cache past n_tokens before evaluating more
        if len(cont) > 1:
            L.eval(cont[:-1])
        out.append(log_softmax_pick(np.array(L.scores[len(ctx) - 1 : len(ctx) - 1 + len(cont)]), cont))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", type=Path, help="GGUF file (default: SmolLM2-135M from the test assets)")
    ap.add_argument("--tiny", action="store_true", help="use the tiny random test model (script check)")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-ctx", type=int, default=1024)
    args = ap.parse_args()

    import llama_cpp
    import med42_rs
    from lm_eval.api.instance import Instance
    from med42_rs.integrations.lm_eval import Med42LM

    if args.tiny:
        from conftest import tiny_path

        path = tiny_path("Q8_0")
    elif args.file is not None:
        path = args.file
    else:
        import assets

        path = assets.smollm2_gguf()
    n_ctx = min(args.n_ctx, 256) if args.tiny else args.n_ctx
    m = med42_rs.Model.load(path, n_ctx=n_ctx, n_threads=args.threads, accept_license=True)
    lm = Med42LM(model=m)
    reqs = [(p, c) for p, choices in questions(args.questions) for c in choices]
    instances = [Instance("loglikelihood", {}, r, 0) for r in reqs]
    # the token ids lm-eval's requests become (contexts cut from the left to fit n_ctx)
    pairs = [(lm._fit(c, x), x) for c, x in (lm._encode_pair(*r) for r in reqs)]
    L = llama_cpp.Llama(
        str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=args.threads, type_k=0, type_v=0,
        flash_attn=False, logits_all=True, verbose=False,
    )  # fmt: skip

    variants: dict[str, Callable[[], list[float]]] = {
        "med42-rs": lambda: [lp for lp, _ in lm.loglikelihood(instances, disable_tqdm=True)],
        "med42-rs per request": lambda: [m.score_many(c, [x])[0][0] for c, x in pairs],
        "llama.cpp per request": lambda: llama_per_request(L, pairs),
        "llama.cpp shared prefix": lambda: llama_shared_prefix(L, pairs),
    }
    first = variants["med42-rs"]()
    for name, fn in variants.items():
        diff = max(abs(a - b) for a, b in zip(first, fn()))
        print(f"{name:>24}: max |log-likelihood - med42-rs| = {diff:.4f}", file=sys.stderr)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            rates[name].append(len(reqs) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    n_q = len(reqs) // 4
    print(f"{path.name}: {n_q} questions, {len(reqs)} requests, {args.threads} threads, {args.rounds} rounds")
    for name, r in med.items():
        print(f"{name:>24}: {r:8.1f} requests/s")
    for base in ("llama.cpp per request", "llama.cpp shared prefix"):
        print(f"med42-rs / {base}: {med['med42-rs'] / med[base]:.2f}x")
    print(
        json.dumps({"file": path.name, "requests": len(reqs), "threads": args.threads, "requests_per_s": med})
    )


if __name__ == "__main__":
    main()
