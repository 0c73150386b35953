"""Tokenizer speed: ``med42_rs.Tokenizer.encode`` vs llama.cpp on a ~4,000-token clinical note.

Run: ``python benches/bench_tokenizer.py [--runs 20] [--tokens 4000]`` (with the ``test`` extra installed)

For the Llama-2 SentencePiece (``llama-spm``) and Llama-3 BPE (``llama-bpe``) vocabularies of
llama.cpp's test models, and SmolLM2's BPE, prints the token count, the median milliseconds of
20 interleaved runs of each tokenizer, and the ratio ours / llama.cpp. Two llama.cpp timings:
``Llama.tokenize`` (what llama-cpp-python users call; with a vocab-only model it tokenizes twice,
once to learn the size) and the C function ``llama_tokenize`` with a big enough buffer. The ids of
all three must be identical.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import assets
import ggufgen
import llama_cpp
import med42_rs
import tokenizer_corpus


def note_with_tokens(tok: med42_rs.Tokenizer, n_tokens: int, seed: int = 7) -> str:
    """A clinical note of about ``n_tokens`` tokens (grown from a seeded generator)."""
    n_chars = 4 * n_tokens
    while True:
        text = tokenizer_corpus.clinical_note(random.Random(seed), n_chars)
        n = len(tok.encode(text))
        if n >= n_tokens:
            break
        n_chars = int(n_chars * n_tokens / max(n, 1) * 1.02) + 16
    # Trim to the first line boundary past n_tokens.
    lines = text.split("\n")
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.encode("\n".join(lines[:mid]))) >= n_tokens:
            hi = mid
        else:
            lo = mid + 1
    return "\n".join(lines[:lo])


def median_ms(fns: dict[str, Callable[[], list[int]]], runs: int) -> dict[str, float]:
    """Median wall time of each function over ``runs`` interleaved rounds (after one warm-up)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, path: Path, n_tokens: int, runs: int) -> None:
    tok = med42_rs.Tokenizer.from_file(path)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    text = note_with_tokens(tok, n_tokens)
    data = text.encode("utf-8")
    add_special = True  # encode()'s default add_bos=None follows the vocabulary like this
    n_max = len(data) + 16
    buf = (llama_cpp.llama_token * n_max)()

    def c_tokenize() -> list[int]:
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, n_max, add_special, False)
        assert n >= 0
        return buf[:n]

    fns: dict[str, Callable[[], list[int]]] = {
        "ours": lambda: tok.encode(text),
        "Llama.tokenize": lambda: llm.tokenize(data, add_bos=add_special, special=False),
        "llama_tokenize": c_tokenize,
    }
    ids = {k: f() for k, f in fns.items()}
    if not (ids["ours"] == ids["Llama.tokenize"] == ids["llama_tokenize"]):
        raise SystemExit(f"{name}: ids differ between med42_rs and llama.cpp")
    ms = median_ms(fns, runs)
    print(
        f"{name:10} {len(text):7d} chars {len(ids['ours']):6d} tokens (ids identical) | "
        f"ours {ms['ours']:7.3f} ms | Llama.tokenize {ms['Llama.tokenize']:7.3f} ms "
        f"(ratio {ms['ours'] / ms['Llama.tokenize']:.2f}) | llama_tokenize {ms['llama_tokenize']:7.3f} ms "
        f"(ratio {ms['ours'] / ms['llama_tokenize']:.2f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=4000)
    args = ap.parse_args()
    ggufgen.quiet_llama_cpp()
    print(f"median of {args.runs} interleaved runs; ratio = ours / llama.cpp (lower is faster)")
    for name in ("llama-spm", "llama-bpe"):
        bench(name, assets.llama_cpp_vocab(name)[0], args.tokens, args.runs)
    bench("smollm2", assets.smollm2_gguf(), args.tokens, args.runs)


if __name__ == "__main__":
    main()
