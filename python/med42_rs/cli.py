"""The ``med42`` command: ``generate``, ``chat`` and ``info``."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _load(path: str, n_ctx: int | None, n_threads: int | None) -> Any:
    from . import Model

    done = threading.Event()

    def spin() -> None:
        t0 = time.monotonic()
        frames = "|/-\\"
        i = 0
        while not done.wait(0.1):
            sys.stderr.write(f"\rloading {path} {frames[i % 4]} {time.monotonic() - t0:.1f}s")
            sys.stderr.flush()
            i += 1

    spinner = threading.Thread(target=spin, daemon=True)
    if sys.stderr.isatty():
        spinner.start()
    t0 = time.monotonic()
    try:
        model = Model.load(path, n_ctx=n_ctx, n_threads=n_threads)
    finally:
        done.set()
        if spinner.is_alive():
            spinner.join()
            sys.stderr.write("\r\033[K")
    sys.stderr.write(f"loaded {path} in {time.monotonic() - t0:.1f}s\n")
    return model


def _sampling(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_tokens": a.max_tokens,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "top_k": a.top_k,
        "min_p": a.min_p,
        "repeat_penalty": a.repeat_penalty,
        "seed": a.seed,
    }


def _print_stream(chunks: Any) -> str:
    text = []
    last = None
    for c in chunks:
        sys.stdout.write(c.text)
        sys.stdout.flush()
        text.append(c.text)
        last = c
    sys.stdout.write("\n")
    if last is not None and last.usage is not None:
        u = last.usage
        sys.stderr.write(
            f"[{last.finish_reason}] prompt {u.prompt_tokens} tok at {u.prompt_tokens_per_second:.1f} tok/s, "
            f"{u.completion_tokens} tok at {u.decode_tokens_per_second:.1f} tok/s\n"
        )
    return "".join(text)


def cmd_generate(a: argparse.Namespace) -> int:
    """`med42 generate`: stream one answer to stdout."""
    model = _load(a.model, a.n_ctx, a.threads)
    msgs = [{"role": "user", "content": a.prompt}]
    if a.raw:
        chunks = model.generate(a.prompt, stream=True, **_sampling(a))
    else:
        chunks = model.chat(msgs, system=a.system, stream=True, **_sampling(a))
    try:
        _print_stream(chunks)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stderr.write("[cancelled]\n")
        return 130
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    """`med42 chat`: the multi-turn REPL (Ctrl-C cancels an answer, Ctrl-D exits)."""
    model = _load(a.model, a.n_ctx, a.threads)
    history: list[dict[str, str]] = []
    sys.stderr.write("Ctrl-C cancels an answer, Ctrl-D exits.\n")
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        try:
            answer = _print_stream(model.chat(history, system=a.system, stream=True, **_sampling(a)))
        except KeyboardInterrupt:
            sys.stdout.write("\n[cancelled]\n")
            history.pop()
            continue
        history.append({"role": "assistant", "content": answer.strip()})


def cmd_info(a: argparse.Namespace) -> int:
    """`med42 info`: architecture, quant mix, size, context and a memory estimate of a file."""
    import os

    from .errors import Med42Error
    from .tokenizer import Tokenizer

    try:
        model = _load(a.model, a.n_ctx, 1)
    except Med42Error as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    cfg = model.config
    md = model.metadata
    mix: dict[str, int] = {}
    total = 0
    for _name, _dims, dtype, nbytes in model.tensors:
        mix[dtype] = mix.get(dtype, 0) + nbytes
        total += nbytes
    size = os.path.getsize(a.model)
    kv_per_token = 2 * cfg["n_layer"] * cfg["n_head_kv"] * cfg["head_dim"] * 4
    print(f"file          {a.model} ({size / 2**30:.2f} GiB)")
    print(f"architecture  {md.get('general.architecture')}  name: {md.get('general.name', '?')}")
    print(f"blocks        {cfg['n_layer']}  embd {cfg['n_embd']}  ff {cfg['n_ff']}")
    print(f"heads         {cfg['n_head']} query / {cfg['n_head_kv']} kv")
    print(f"context       {cfg['n_ctx_train']} trained")
    print(
        "quant mix     "
        + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(mix.items(), key=lambda x: -x[1]))
    )
    try:
        tok: Tokenizer = model.tokenizer
        print(f"tokenizer     {tok.kind} ({tok.pre or 'sentencepiece'}), {tok.vocab_size} tokens")
    except Med42Error as e:
        print(f"tokenizer     none ({e})")
    n_ctx = cfg["n_ctx_train"]
    print(
        f"memory        weights {total / 2**30:.2f} GiB mapped from the file (page cache) + KV cache "
        f"{kv_per_token * n_ctx / 2**30:.2f} GiB at {n_ctx} tokens (f32)"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="med42", description="Run Med42 (Llama GGUF) models on the CPU.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, model_opt: bool = True) -> None:
        if model_opt:
            sp.add_argument("--model", "-m", required=True, help="GGUF file")
        sp.add_argument("--n-ctx", type=int, default=None, help="context length (default: trained)")
        sp.add_argument("--threads", "-t", type=int, default=None)

    def sampling(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--max-tokens", "-n", type=int, default=512)
        sp.add_argument("--temperature", type=float, default=0.7)
        sp.add_argument("--top-p", type=float, default=0.95)
        sp.add_argument("--top-k", type=int, default=40)
        sp.add_argument("--min-p", type=float, default=0.05)
        sp.add_argument("--repeat-penalty", type=float, default=1.1)
        sp.add_argument("--seed", type=int, default=None)
        sp.add_argument("--system", default=None, help="system prompt (default: the model's)")

    g = sub.add_parser("generate", help="stream the answer to one question")
    common(g)
    sampling(g)
    g.add_argument("--raw", action="store_true", help="continue the text as is, without the chat template")
    g.add_argument("prompt")
    g.set_defaults(func=cmd_generate)
    c = sub.add_parser("chat", help="multi-turn chat")
    common(c)
    sampling(c)
    c.set_defaults(func=cmd_chat)
    i = sub.add_parser("info", help="architecture, quant mix, size and memory of a GGUF file")
    i.add_argument("model")
    common(i, model_opt=False)
    i.set_defaults(func=cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``med42`` console script."""
    args = _parser().parse_args(argv)
    from .errors import Med42Error

    try:
        return int(args.func(args))
    except Med42Error as e:
        sys.stderr.write(f"error: {e}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
