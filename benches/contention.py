"""Decode speed of SmolLM2 beside other busy processes: does a second thread still pay off?

    python benches/contention.py                 # 3 rounds, 48 tokens per measurement
    python benches/contention.py --rounds 5 --tokens 64

Measures greedy decode ms/token (the engine's own decode time over the generated tokens) with
``n_threads=1`` and ``n_threads=2`` in three settings: alone, next to one busy process (a Python
busy loop in a subprocess) and next to a heavy load (one busy process per CPU this process may
use). The two thread counts alternate round by round; medians are printed with the ratio
``n_threads=2 / n_threads=1`` (below 1: the second thread helps; well above 1: the pool is
fighting the other processes for the cores). Not a test: figures depend on the machine and on
whatever else runs on it, so the CPU, its count and the load average are printed too.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from med42_rs import Model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def n_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# a busy loop that ends when this process does, however it ends
BUSY = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(200_000): pass\n"


def busy(n: int) -> list[subprocess.Popen[bytes]]:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    time.sleep(0.3)  # let them reach the loop
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def ms_per_token(model: Model, tokens: int) -> float:
    c = model.generate(PROMPT, max_tokens=tokens, temperature=0.0)
    u = c.usage
    assert u is not None and u.completion_tokens > 1
    return 1000.0 * u.decode_seconds / u.completion_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--max-seconds", type=float, default=30.0, help="fewer rounds past this, per setting")
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2-135M Q4_1)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the busy processes on the way out

    if args.model is None:
        from assets import smollm2_gguf

        args.model = smollm2_gguf()
    models = {n: Model.load(args.model, n_threads=n, n_ctx=512) for n in (1, 2)}
    for m in models.values():
        ms_per_token(m, 8)  # warm up: page cache, workers, allocator

    cpus = n_cpus()
    settings = [("alone", 0), ("beside 1 busy process", 1), (f"beside {cpus} busy processes", cpus)]
    print(f"{cpu_name()}, {cpus} CPUs available, load average {os.getloadavg()[0]:.2f}")
    print(f"{args.model.name}, greedy decode, {args.tokens} tokens, median of {args.rounds} rounds")
    print()
    print(f"{'setting':<28} {'n_threads=1':>12} {'n_threads=2':>12} {'2 / 1':>7}")
    t_start = time.monotonic()
    for name, n_busy in settings:
        procs = busy(n_busy)
        try:
            runs: dict[int, list[float]] = {1: [], 2: []}
            t0 = time.monotonic()
            for _ in range(args.rounds):
                for n, m in models.items():
                    runs[n].append(ms_per_token(m, args.tokens))
                if time.monotonic() - t0 > args.max_seconds:
                    break
        finally:
            stop(procs)
        one, two = statistics.median(runs[1]), statistics.median(runs[2])
        rounds = "" if len(runs[1]) == args.rounds else f"  ({len(runs[1])} rounds)"
        print(f"{name:<28} {one:>9.2f} ms {two:>9.2f} ms {two / one:>7.2f}{rounds}", flush=True)
    print(f"\n({time.monotonic() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
