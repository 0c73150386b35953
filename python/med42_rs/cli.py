"""The ``med42`` command: ``generate``, ``chat``, ``info``, ``download`` and ``license``."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _load(path: str, n_ctx: int | None, n_threads: int | None, accept_license: bool = False) -> Any:
    from . import Model, _native
    from .license import ensure_accepted, license_for

    # The license question (if any) comes before the spinner, from the header alone.
    metadata, _, resolved = _native.read_header([path])
    lic = license_for(paths=[path, *map(str, resolved)], metadata=metadata)
    ensure_accepted(lic, accept_license=True if accept_license else None)
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
        model = Model.load(path, n_ctx=n_ctx, n_threads=n_threads, accept_license=accept_license or None)
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
    model = _load(a.model, a.n_ctx, a.threads, a.accept_license)
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
    model = _load(a.model, a.n_ctx, a.threads, a.accept_license)
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
    """`med42 info`: architecture, quant mix, size, context and a memory estimate of a file.

    Reads the header only (no weights, so no license question)."""
    from . import _native
    from .errors import Med42Error
    from .tokenizer import Tokenizer

    try:
        md, tensors, paths = _native.read_header([a.model])
    except (Med42Error, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    arch = str(md.get("general.architecture", "?"))

    def key(k: str, default: int = 0) -> int:
        v = md.get(f"{arch}.{k}", default)
        return int(v) if isinstance(v, (int, float)) else default

    n_layer, n_embd, n_ff = key("block_count"), key("embedding_length"), key("feed_forward_length")
    n_head = key("attention.head_count")
    n_head_kv = key("attention.head_count_kv", n_head)
    n_ctx = a.n_ctx or key("context_length")
    head_dim = n_embd // n_head if n_head else 0
    mix: dict[str, int] = {}
    total = 0
    for _name, _dims, dtype, nbytes in tensors:
        mix[dtype] = mix.get(dtype, 0) + nbytes
        total += nbytes
    size = sum(os.path.getsize(p) for p in paths)
    parts = f", {len(paths)} parts" if len(paths) > 1 else ""
    kv_per_token = 2 * n_layer * n_head_kv * head_dim * 4
    print(f"file          {a.model} ({size / 2**30:.2f} GiB{parts})")
    print(f"architecture  {arch}  name: {md.get('general.name', '?')}")
    print(f"blocks        {n_layer}  embd {n_embd}  ff {n_ff}")
    print(f"heads         {n_head} query / {n_head_kv} kv")
    print(f"context       {key('context_length')} trained")
    print(
        "quant mix     "
        + ", ".join(f"{k} {v / max(total, 1):.0%}" for k, v in sorted(mix.items(), key=lambda x: -x[1]))
    )
    try:
        tok = Tokenizer.from_file([str(p) for p in paths] if len(paths) > 1 else a.model)
        print(f"tokenizer     {tok.kind} ({tok.pre or 'sentencepiece'}), {tok.vocab_size} tokens")
    except Med42Error as e:
        print(f"tokenizer     none ({e})")
    print(
        f"memory        weights {total / 2**30:.2f} GiB mapped from the file (page cache) + KV cache "
        f"{kv_per_token * n_ctx / 2**30:.2f} GiB at {n_ctx} tokens (f32)"
    )
    from .license import license_for

    lic = license_for(paths=[a.model], metadata=md)
    if lic is not None:
        print(f"license       {lic.name}: {lic.url} (must be accepted before use)")
    return 0


def cmd_license(a: argparse.Namespace) -> int:
    """`med42 license accept|show|status|revoke`: manage the stored Med42 license acceptance."""
    from . import license as L

    lic = L.MED42_LICENSE
    if a.action == "show":
        print(f"{lic.name} (id {lic.id}, version {lic.version})\n{lic.summary}\n{lic.url}")
        return 0
    if a.action == "status":
        rec = L.stored(lic)
        if (
            os.environ.get(L.ENV_VAR)
            and L.accepted(lic)
            and (rec is None or rec.get("version") != lic.version)
        ):
            print(f"{lic.id}: accepted through {L.ENV_VAR}")
            return 0
        if rec is not None and rec.get("version") == lic.version:
            print(f"{lic.id}: accepted (version {lic.version}, {rec.get('accepted_at')}, {L.config_dir()})")
            return 0
        if rec is not None:
            print(f"{lic.id}: version {rec.get('version')} was accepted; version {lic.version} is not")
        else:
            print(f"{lic.id}: not accepted ({lic.url})")
        return 1
    if a.action == "revoke":
        print(f"{lic.id}: " + ("acceptance removed" if L.revoke(lic) else "was not accepted"))
        return 0
    # accept
    if not a.yes:
        if not L._interactive():
            sys.stderr.write(
                f"error: not a terminal; read {lic.url} and run `med42 license accept --yes` "
                f"or set {L.ENV_VAR}={lic.id}\n"
            )
            return 2
        if not L.ask(lic):
            sys.stderr.write("not accepted\n")
            return 1
    where = L.accept(lic, how="cli")
    print(f"{lic.id}: accepted (version {lic.version}), stored in {where}")
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    """`med42 download REPO [--quant Q | --filename F]`: fetch a model into the Hugging Face cache
    (after the license check for Med42) and print the local path(s) to pass to ``--model``."""
    from .hub import download
    from .license import ensure_accepted, license_for

    def gate(files: list[str]) -> None:
        lic = license_for(repo_id=a.repo, paths=files)
        ensure_accepted(lic, accept_license=True if a.accept_license else None)

    paths = download(
        a.repo, quant=None if a.filename else a.quant, filename=a.filename, revision=a.revision,
        before_download=gate,
    )  # fmt: skip
    for p in paths:
        print(p)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="med42", description="Run Med42 (Llama GGUF) models on the CPU.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, model_opt: bool = True) -> None:
        if model_opt:
            sp.add_argument("--model", "-m", required=True, help="GGUF file")
        sp.add_argument("--n-ctx", type=int, default=None, help="context length (default: trained)")
        sp.add_argument("--threads", "-t", type=int, default=None)
        sp.add_argument(
            "--accept-license", action="store_true", help="accept the model's license (Med42) without asking"
        )

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
    d = sub.add_parser("download", help="download a GGUF model from the Hugging Face Hub")
    d.add_argument("repo", help="repository id, e.g. TheBloke/med42-70B-GGUF")
    d.add_argument("--quant", "-q", default="Q4_K_M", help="quantization (default Q4_K_M)")
    d.add_argument("--filename", "-f", default=None, help="a file name instead of --quant")
    d.add_argument("--revision", default=None)
    d.add_argument("--accept-license", action="store_true", help="accept the model's license without asking")
    d.set_defaults(func=cmd_download)
    lc = sub.add_parser("license", help="show, accept, check or revoke the Med42 license")
    lc.add_argument("action", choices=["accept", "show", "status", "revoke"])
    lc.add_argument("--yes", "-y", action="store_true", help="accept without asking (you have read it)")
    lc.set_defaults(func=cmd_license)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``med42`` console script."""
    args = _parser().parse_args(argv)
    from .errors import Med42Error

    try:
        return int(args.func(args))
    except (Med42Error, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
