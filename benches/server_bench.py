"""Aggregate tokens/s of ``med42 serve`` with 1, 2, 4 (...) concurrent streams through the real
``openai`` client, optionally next to llama-cpp-python's server on the same file and threads.

    python benches/server_bench.py --model SmolLM2-135M-Instruct.Q4_1.gguf --clients 1,2,4,8
    python benches/server_bench.py --model FILE --llama-cpp   # also python -m llama_cpp.server

Each client streams one completion of ``--max-tokens`` tokens (greedy, so every stream decodes the
same number of tokens unless it meets an end-of-generation token; the count comes from each
response's usage). The figure is all clients' completion tokens over the wall time from the first
request to the last token. Servers listen on loopback only and are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass

import openai

PROMPTS = [
    "The history of medicine begins",
    "A patient with chest pain should",
    "Insulin is a hormone that",
    "The kidneys filter the blood and",
    "Antibiotics work by",
    "The immune system protects",
    "Hypertension is defined as",
    "The liver is responsible for",
]


@dataclass
class Result:
    clients: int
    tokens: int
    seconds: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in {timeout:.0f} s")


def _stream(client: openai.OpenAI, prompt: str, max_tokens: int) -> int:
    s = client.completions.create(
        model="bench", prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    n = pieces = 0
    for chunk in s:
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
        pieces += sum(1 for c in chunk.choices if c.text)
    # a server that sends no usage in streams (llama-cpp-python's): one token per text piece
    return n or pieces


def run(url: str, clients: int, max_tokens: int) -> Result:
    """``clients`` concurrent streams; returns their total tokens and the wall time."""
    counts = [0] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def one(i: int) -> None:
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
        barrier.wait()
        try:
            counts[i] = _stream(c, PROMPTS[i % len(PROMPTS)], max_tokens)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return Result(clients, sum(counts), dt)


def bench(name: str, cmd: list[str], url: str, args: argparse.Namespace) -> dict[int, list[Result]]:
    """Every client count ``--rounds`` times (round by round) on one server process."""
    # the server's log goes to a file: a pipe nobody reads fills up (llama.cpp logs the whole
    # vocabulary's metadata on load) and blocks the server before it listens
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            try:
                _wait_up(url, proc)
            except SystemExit:
                log.seek(0)
                sys.stderr.write(log.read()[-3000:].decode(errors="replace"))
                raise
            run(url, 1, 4)  # warm-up: page the weights in
            results: dict[int, list[Result]] = {n: [] for n in args.clients}
            for rnd in range(args.rounds):
                for n in args.clients:
                    r = run(url, n, args.max_tokens)
                    print(
                        f"{name:>26}  round {rnd + 1}  {n:>2} clients  {r.tokens:>6} tokens  "
                        f"{r.seconds:7.2f} s  {r.tok_s:8.1f} tok/s",
                        flush=True,
                    )
                    results[n].append(r)
            return results
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--clients", default="1,2,4", help="concurrent streams to measure (default 1,2,4)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--parallel", type=int, default=None, help="server slots (default: the most clients)")
    p.add_argument(
        "--llama-cpp",
        action="store_true",
        help="also run llama-cpp-python's server (extra server), as it starts by default (a new "
        "request interrupts the one running) and with --interrupt_requests False (requests queue)",
    )
    p.add_argument("--rounds", type=int, default=3, help="measurements per client count (medians)")
    args = p.parse_args()
    args.clients = [int(x) for x in re.split(r"[ ,]+", args.clients.strip()) if x]
    parallel = args.parallel or max(args.clients)
    port = _free_port()
    med42 = [
        sys.executable, "-m", "med42_rs.server", "--model", args.model, "--port", str(port),
        "--n-ctx", str(args.n_ctx), "--threads", str(args.threads), "--parallel", str(parallel),
        "--queue", str(max(args.clients)), "--log-level", "warning",
    ]  # fmt: skip
    print(f"{args.model}: {args.max_tokens} tokens per stream, {args.threads} threads, {parallel} slots")
    table = {"med42 serve": bench("med42 serve", med42, f"http://127.0.0.1:{port}", args)}
    if args.llama_cpp:
        for name, extra in (
            ("llama_cpp.server", []),
            ("llama_cpp.server no-interrupt", ["--interrupt_requests", "False"]),
        ):
            port = _free_port()
            llama = [
                sys.executable, "-m", "llama_cpp.server", "--model", args.model, "--port", str(port),
                "--host", "127.0.0.1", "--n_ctx", str(args.n_ctx), "--n_threads", str(args.threads),
                "--n_threads_batch", str(args.threads), *extra,
            ]  # fmt: skip
            table[name] = bench(name, llama, f"http://127.0.0.1:{port}", args)
    med = {k: {n: statistics.median(r.tok_s for r in v[n]) for n in args.clients} for k, v in table.items()}
    print(f"\naggregate tok/s, median of {args.rounds} rounds (ratio: med42 serve / that server)\n")
    print("| server | " + " | ".join(f"{n} streams" for n in args.clients) + " |")
    print("|---" * (len(args.clients) + 1) + "|")
    ours = med["med42 serve"]
    for k, row in med.items():
        cells = [
            f"{row[n]:.1f}" + ("" if k == "med42 serve" or row[n] == 0 else f" ({ours[n] / row[n]:.2f}×)")
            for n in args.clients
        ]
        print(f"| {k} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
