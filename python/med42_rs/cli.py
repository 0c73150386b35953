"""The ``med42`` command: ``generate``, ``chat``, ``info``, ``download``, ``serve`` and ``license``.

``--model`` takes a GGUF file (or the first part of a split model) or a model on the Hugging Face
Hub, ``OWNER/NAME[:QUANT]``: an existing path wins, and ``OWNER/NAME`` (with an optional ``:QUANT``
or ``:FILE.gguf``) that is not one is a repository. Without ``--model``, Med42
(``TheBloke/med42-70B-GGUF``, Q4_K_M) is taken from the Hugging Face cache or downloaded, always after
the license gate.

Every error is printed as one line, ``error: ...``, with a non-zero exit status (``MED42_DEBUG=1``
shows the traceback instead); an option value out of range is a usage error (status 2). Characters
that stdout's encoding lacks are printed as ``?`` instead of ending the answer. When the reader
closes the pipe early (``| head``), the command stops quietly with status 141, what a shell reports
for ``cat`` in the same place.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .errors import InvalidParameterError
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .model import KvType

__all__ = ["DEFAULT_QUANT", "DEFAULT_REPO", "main"]

DEFAULT_REPO = "TheBloke/med42-70B-GGUF"
"""The repository ``med42 generate`` and ``med42 chat`` use without ``--model``."""
DEFAULT_QUANT = "Q4_K_M"
"""The quantization taken from a repository when ``--model`` names none."""

DEBUG_ENV = "MED42_DEBUG"
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: how a shell reports `cat` stopped by a closed pipe
_INT_MAX = 2**31 - 1

# ----------------------------------------------------------------------------------------------
# which model: a file, a Hub repository, or the default


@dataclass(frozen=True)
class _HubModel:
    repo: str
    quant: str | None
    filename: str | None

    def __str__(self) -> str:
        return f"{self.repo}:{self.filename or self.quant}"


# Hub repository ids: ``owner/name`` of letters, digits, ``-``, ``_`` and ``.``; then an optional
# ``:QUANT`` or ``:FILE`` (a file may sit in a folder of the repository).
_REPO_RE = re.compile(r"(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?::(?P<pick>[^:]+))?")


def _parse_repo(spec: str) -> _HubModel | None:
    """``OWNER/NAME[:QUANT]`` or ``OWNER/NAME:FILE.gguf`` as a Hub model, else ``None``. A NAME that
    is itself a GGUF file name (``models/x.Q4_K_M.gguf``) is a path, not a repository."""
    from .hub import parse_gguf_name

    m = _REPO_RE.fullmatch(spec)
    if m is None or parse_gguf_name(m["repo"]) is not None:
        return None
    pick = m["pick"]
    if pick is None:
        return _HubModel(m["repo"], None, None)
    if parse_gguf_name(pick) is not None:
        return _HubModel(m["repo"], None, pick)
    return _HubModel(m["repo"], pick, None)


def _hub_model(spec: str | None) -> _HubModel | None:
    """The Hub model ``--model`` names (the default repository without it), or ``None`` for a path."""
    if spec is None:
        return _HubModel(DEFAULT_REPO, DEFAULT_QUANT, None)
    if os.path.exists(spec):
        return None
    hub = _parse_repo(spec)
    if hub is not None and hub.quant is None and hub.filename is None:
        hub = _HubModel(hub.repo, DEFAULT_QUANT, None)
    return hub


def _missing_file(spec: str) -> Exception:
    from .errors import ModelFileError

    return ModelFileError(
        f"{spec}: no such file. A model on the Hugging Face Hub is written OWNER/NAME or "
        f"OWNER/NAME:QUANT (e.g. {DEFAULT_REPO}:Q6_K); without --model, Med42 ({DEFAULT_REPO}:"
        f"{DEFAULT_QUANT}) is used"
    )


def _gate(repo: str | None, accept_license: bool) -> Callable[[list[str]], None]:
    """The license check :func:`med42_rs.hub.download` runs before any weight byte is fetched."""
    from .license import ensure_accepted, license_for

    def gate(files: list[str]) -> None:
        ensure_accepted(
            license_for(repo_id=repo, paths=files), accept_license=True if accept_license else None
        )

    return gate


def _model_files(spec: str | None, accept_license: bool) -> list[str]:
    """The local file(s) of ``--model``: the path itself, or a Hub model found in the cache or
    downloaded (with progress bars) once its license is accepted."""
    hub = _hub_model(spec)
    if hub is None:
        assert spec is not None
        if not os.path.exists(spec):
            raise _missing_file(spec)
        return [spec]
    from .hub import download

    try:
        paths = download(
            hub.repo, quant=hub.quant, filename=hub.filename, before_download=_gate(hub.repo, accept_license)
        )
    except ValueError as e:  # the repository has no such quant, or several models match it
        raise type(e)(f"{e} Choose with --model {hub.repo}:QUANT or {hub.repo}:FILE.gguf") from e
    return [str(p) for p in paths]


def _cached_files(spec: str | None) -> tuple[list[str], str | None]:
    """``med42 info``'s files and repository: a path, or a Hub model already in the cache (info
    reads headers only, so it downloads nothing)."""
    hub = _hub_model(spec)
    if hub is None:
        assert spec is not None
        if not os.path.exists(spec):
            raise _missing_file(spec)
        return [spec], None
    from .errors import DownloadError
    from .hub import find_in_cache

    paths = find_in_cache(hub.repo, quant=hub.quant, filename=hub.filename)
    if paths is None:
        how = f"--filename {hub.filename}" if hub.filename else f"--quant {hub.quant}"
        raise DownloadError(
            f"{hub} is not in the Hugging Face cache; `med42 info` reads the local file and downloads "
            f"nothing: run `med42 download {hub.repo} {how}` first, or pass a file"
        )
    return [str(p) for p in paths], hub.repo


# ----------------------------------------------------------------------------------------------
# the commands


def _load(
    paths: list[str],
    n_ctx: int | None,
    n_threads: int | None,
    accept_license: bool = False,
    kv_type: str = "f16",
    device: str = "cpu",
    n_gpu_layers: int | None = None,
) -> Any:
    from . import Model

    # The license question (if any) comes before the spinner, from the header alone; it is the
    # load's one license check.
    paths = Model._license_gate(paths, True if accept_license else None)
    done = threading.Event()
    shown = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} parts)"

    def spin() -> None:
        t0 = time.monotonic()
        frames = "|/-\\"
        i = 0
        while not done.wait(0.1):
            sys.stderr.write(f"\rloading {shown} {frames[i % 4]} {time.monotonic() - t0:.1f}s")
            sys.stderr.flush()
            i += 1

    spinner = threading.Thread(target=spin, daemon=True)
    if sys.stderr.isatty():
        spinner.start()
    t0 = time.monotonic()
    try:
        model = Model._load_accepted(
            paths, n_ctx=n_ctx, n_threads=n_threads, kv_type=cast("KvType", kv_type), device=device,
            n_gpu_layers=n_gpu_layers,
        )  # fmt: skip
    finally:
        done.set()
        if spinner.is_alive():
            spinner.join()
            sys.stderr.write("\r\033[K")
    sys.stderr.write(f"loaded {shown} in {time.monotonic() - t0:.1f}s\n")
    return model


# (SamplingParams field, flags, text conversion, metavar, help suffix)
_SAMPLING_OPTIONS: list[tuple[str, tuple[str, ...], Callable[[str], Any], str, str]] = [
    ("max_tokens", ("--max-tokens", "-n"), int, "N", ""),
    ("temperature", ("--temperature",), float, "T", "; 0 is greedy"),
    ("top_p", ("--top-p",), float, "P", ""),
    ("top_k", ("--top-k",), int, "K", "; 0 disables"),
    ("min_p", ("--min-p",), float, "P", ""),
    ("repeat_penalty", ("--repeat-penalty",), float, "X", ""),
    ("seed", ("--seed",), int, "N", ""),
]


def _sampling_params(a: argparse.Namespace, parser: argparse.ArgumentParser) -> SamplingParams:
    """The command's :class:`SamplingParams`; an out-of-range value is a usage error (exit 2)
    naming the option, from the engine's own check."""
    given = {f: getattr(a, f) for f, *_ in _SAMPLING_OPTIONS if getattr(a, f, None) is not None}
    try:
        return SamplingParams(**given)
    except InvalidParameterError as e:
        for f, flags, *_ in _SAMPLING_OPTIONS:
            if f"`{f}`" in str(e):
                parser.error(f"argument {'/'.join(flags)}: {given[f]!r}: {e}")
        raise


def _sampling(a: argparse.Namespace) -> SamplingParams:
    params: SamplingParams = a.sampling
    return params


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
        cached = f" ({u.prompt_tokens_cached} cached)" if u.prompt_tokens_cached else ""
        computed = u.prompt_tokens_computed
        rate = computed / u.prompt_seconds if u.prompt_seconds > 0 else 0.0
        sys.stderr.write(
            f"[{last.finish_reason}] prompt {u.prompt_tokens} tok{cached} at {rate:.1f} tok/s, "
            f"{u.completion_tokens} tok at {u.decode_tokens_per_second:.1f} tok/s\n"
        )
    return "".join(text)


def cmd_generate(a: argparse.Namespace) -> int:
    """`med42 generate`: stream one answer to stdout."""
    model = _load(
        _model_files(a.model, a.accept_license), a.n_ctx, a.threads, a.accept_license, a.kv_type,
        a.device, a.n_gpu_layers,
    )  # fmt: skip
    msgs = [{"role": "user", "content": a.prompt}]
    if a.raw:
        chunks = model.generate(a.prompt, _sampling(a), stream=True)
    else:
        chunks = model.chat(msgs, _sampling(a), system=a.system, stream=True)
    try:
        _print_stream(chunks)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stderr.write("[cancelled]\n")
        return 130
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    """`med42 chat`: the multi-turn REPL (Ctrl-C cancels an answer, Ctrl-D exits)."""
    model = _load(
        _model_files(a.model, a.accept_license), a.n_ctx, a.threads, a.accept_license, a.kv_type,
        a.device, a.n_gpu_layers,
    )  # fmt: skip
    # Each turn reuses the KV cache of the conversation before it: only the new message is computed.
    chat = model.start_chat(system=a.system)
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
        n = len(chat.messages)
        stream = chat.send(line, _sampling(a), stream=True)
        try:
            _print_stream(stream)
        except KeyboardInterrupt:
            stream.cancel()
            del chat.messages[n:]  # the cancelled turn is forgotten
            sys.stdout.write("\n[cancelled]\n")
            continue


def cmd_info(a: argparse.Namespace) -> int:
    """`med42 info`: architecture, quant mix, size, context and a memory estimate of a model.

    Reads the header only (no weights, so no license question); a Hub model must be in the cache."""
    from . import _native
    from .errors import Med42Error
    from .tokenizer import Tokenizer

    files, repo = _cached_files(a.model)
    md, tensors, paths = _native.read_header(files)
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
    kv_bytes = _native.kv_cache_bytes(a.kv_type, n_layer, n_head_kv, head_dim, n_ctx)
    print(f"file          {files[0]} ({size / 2**30:.2f} GiB{parts})")
    if repo is not None:
        print(f"repository    {repo}")
    print(f"architecture  {arch}  name: {md.get('general.name', '?')}")
    print(f"blocks        {n_layer}  embd {n_embd}  ff {n_ff}")
    print(f"heads         {n_head} query / {n_head_kv} kv")
    print(f"context       {key('context_length')} trained")
    print(
        "quant mix     "
        + ", ".join(f"{k} {v / max(total, 1):.0%}" for k, v in sorted(mix.items(), key=lambda x: -x[1]))
    )
    try:
        tok = Tokenizer.from_file([str(p) for p in paths] if len(paths) > 1 else files[0])
        print(f"tokenizer     {tok.kind} ({tok.pre or 'sentencepiece'}), {tok.vocab_size} tokens")
    except Med42Error as e:
        print(f"tokenizer     none ({e})")
    print(
        f"memory        weights {total / 2**30:.2f} GiB mapped from the file (page cache) + KV cache "
        f"{kv_bytes / 2**30:.2f} GiB at {n_ctx} tokens ({a.kv_type})"
    )
    if a.device != "cpu":
        ngl = -1 if a.n_gpu_layers is None else a.n_gpu_layers
        est = _native.memory_estimate(files, n_ctx, a.kv_type, ngl)
        gib = 2**30
        h, d = est["host"], est["device"]
        print(
            f"offload       {est['n_gpu_layers']} of {n_layer} blocks on {a.device}: GPU "
            + (
                f"weights {d['weights'] / gib:.2f} GiB + KV cache {d['kv_cache'] / gib:.2f} GiB "
                f"+ activations and CUDA workspace {d['scratch'] / gib:.2f} GiB"
                if d is not None
                else "nothing"
            )
            + f"; CPU weights {h['weights'] / gib:.2f} GiB + KV cache {h['kv_cache'] / gib:.2f} GiB"
            + " (per sequence)"
        )
    from .license import license_for

    lic = license_for(repo_id=repo, paths=files, metadata=md)
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
            sys.stderr.write(f"error: the {lic.name} was not accepted\n")
            return 1
    where = L.accept(lic, how="cli")
    print(f"{lic.id}: accepted (version {lic.version}), stored in {where}")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    """`med42 serve`: the OpenAI-compatible HTTP server (python/med42_rs/server/)."""
    from .server.main import serve

    return serve(a)


def cmd_download(a: argparse.Namespace) -> int:
    """`med42 download [REPO[:QUANT]] [--quant Q | --filename F]`: fetch a model into the Hugging Face
    cache (after the license check for Med42) and print the local path(s) to pass to ``--model``."""
    from .hub import download

    hub = _parse_repo(a.repo)
    if hub is None:
        raise InvalidParameterError(
            f"{a.repo!r} is not a Hugging Face repository id (OWNER/NAME or OWNER/NAME:QUANT)"
        )
    if (hub.quant or hub.filename) and (a.quant or a.filename):
        raise InvalidParameterError(
            f"{a.repo} already names the quantization or file: leave out --quant/--filename"
        )
    filename = hub.filename or a.filename
    quant = None if filename else (hub.quant or a.quant or DEFAULT_QUANT)
    paths = download(
        hub.repo, quant=quant, filename=filename, revision=a.revision,
        before_download=_gate(hub.repo, a.accept_license),
    )  # fmt: skip
    for p in paths:
        print(p)
    return 0


# ----------------------------------------------------------------------------------------------
# options


def _int_in(lo: int, hi: int, *, hint: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[lo, hi]``, else a usage error saying so."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}{hint}, got {v}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}{hint}, got {v}")
        return v

    return parse


def _float_in(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]" if hi < math.inf else ""
    want = interval or (f"> {lo:g}" if lo_open else f">= {lo:g}")

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
            raise argparse.ArgumentTypeError(f"must be a number {'in ' if interval else ''}{want}, got {s}")
        return v

    return parse


def _threads() -> Callable[[str], int]:
    # The engine's pool has one thread per CPU this process may use: more cannot run.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return _int_in(1, cpus, hint=f" (the {cpus} CPUs this process may use)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="med42",
        description="Run Med42 (Llama GGUF) models on the CPU.",
        epilog=f"Errors are one line; {DEBUG_ENV}=1 prints the traceback.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    model_help = (
        f"a GGUF file, or a Hugging Face repository OWNER/NAME[:QUANT] (quant default {DEFAULT_QUANT}); "
        f"default: {DEFAULT_REPO}:{DEFAULT_QUANT}, from the cache or downloaded"
    )

    def common(sp: argparse.ArgumentParser, model_opt: bool = True) -> None:
        if model_opt:
            sp.add_argument("--model", "-m", metavar="MODEL", default=None, help=model_help)
        sp.add_argument(
            "--n-ctx",
            type=_int_in(1, _INT_MAX),
            default=None,
            metavar="N",
            help="context length (default: trained)",
        )
        sp.add_argument(
            "--threads",
            "-t",
            type=_threads(),
            default=None,
            metavar="N",
            help="CPU threads (default: all CPUs)",
        )
        sp.add_argument(
            "--kv-type",
            choices=["f16", "q8_0", "f32"],
            default="f16",
            help="KV cache type (default f16; q8_0 takes about half the memory of f16)",
        )
        sp.add_argument(
            "--device",
            default="cpu",
            help='"cpu" (default), "cuda", "cuda:N" or "metal" (GPUs need the med42-rs-cuda package)',
        )
        sp.add_argument(
            "--n-gpu-layers",
            "-ngl",
            type=_int_in(-1, _INT_MAX),
            default=None,
            metavar="N",
            help="blocks to run on the GPU, counted from the last (default and -1: all)",
        )
        sp.add_argument(
            "--accept-license", action="store_true", help="accept the model's license (Med42) without asking"
        )

    def sampling(sp: argparse.ArgumentParser) -> None:
        # Only the text-to-number conversion happens here; the ranges and the defaults are the
        # engine's (SamplingParams), checked in main() before any model is loaded.
        d = SamplingParams()
        for field, flags, kind, meta, extra in _SAMPLING_OPTIONS:
            sp.add_argument(
                *flags,
                dest=field,
                type=kind,
                default=None,
                metavar=meta,
                help=f"default {getattr(d, field) if field != 'seed' else 'random'}{extra}",
            )
        sp.add_argument("--system", default=None, help="system prompt (default: the model's)")

    g = sub.add_parser("generate", help="stream the answer to one question")
    common(g)
    sampling(g)
    g.add_argument("--raw", action="store_true", help="continue the text as is, without the chat template")
    g.add_argument("prompt", help="the question (or, with --raw, the text to continue)")
    g.set_defaults(func=cmd_generate)
    c = sub.add_parser("chat", help="multi-turn chat")
    common(c)
    sampling(c)
    c.set_defaults(func=cmd_chat)
    i = sub.add_parser("info", help="architecture, quant mix, size and memory of a GGUF model")
    i.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help=model_help.replace("from the cache or downloaded", "from the cache (downloads nothing)"),
    )
    common(i, model_opt=False)
    i.set_defaults(func=cmd_info)
    d = sub.add_parser("download", help="download a GGUF model from the Hugging Face Hub")
    d.add_argument(
        "repo", nargs="?", default=DEFAULT_REPO, help=f"OWNER/NAME[:QUANT] (default {DEFAULT_REPO})"
    )
    d.add_argument("--quant", "-q", default=None, help=f"quantization (default {DEFAULT_QUANT})")
    d.add_argument("--filename", "-f", default=None, help="a file name instead of --quant")
    d.add_argument("--revision", default=None)
    d.add_argument("--accept-license", action="store_true", help="accept the model's license without asking")
    d.set_defaults(func=cmd_download)
    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (needs the server extra)")
    common(sv)
    from .server.main import add_arguments as serve_arguments

    serve_arguments(sv)
    sv.set_defaults(func=cmd_serve)
    lc = sub.add_parser("license", help="show, accept, check or revoke the Med42 license")
    lc.add_argument("action", choices=["accept", "show", "status", "revoke"])
    lc.add_argument("--yes", "-y", action="store_true", help="accept without asking (you have read it)")
    lc.set_defaults(func=cmd_license)
    return p


# ----------------------------------------------------------------------------------------------
# the process around a command


def _tolerant_stdio() -> None:
    """Text the stream's encoding cannot hold (an accent on ``PYTHONIOENCODING=ascii``, a symbol
    redirected to a cp1252 file) becomes ``?`` (or U+FFFD when read) instead of an exception that
    would end the answer halfway."""
    for stream in (sys.stdout, sys.stdin):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``| head``): stop without a word, as ``cat`` does.

    stdout is pointed at /dev/null so that the interpreter's last flush has no pipe to fail on.
    The status is 141 (128 + SIGPIPE), what a shell reports for ``cat`` or ``grep`` cut off the
    same way: the answer was not delivered whole, and ``set -o pipefail`` scripts see that as they
    do for any other command in the pipeline; 0 would claim a complete answer."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file descriptor (captured) or already closed
        pass
    return EXIT_BROKEN_PIPE


def _one_line(e: BaseException) -> str:
    from .errors import Med42Error

    msg = " ".join(str(e).split())
    if isinstance(e, (Med42Error, ValueError, OSError, ImportError)):
        return msg or type(e).__name__
    # Not an error a user causes: name the type, and say how to see where it came from.
    return f"{type(e).__name__}: {msg} (run with {DEBUG_ENV}=1 for the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``med42`` console script."""
    _tolerant_stdio()
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "temperature"):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        args.sampling = _sampling_params(args, sub.choices[args.cmd])
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        sys.stderr.write("\n[cancelled]\n")
        return 130
    except Exception as e:
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        with contextlib.suppress(BrokenPipeError):
            sys.stderr.write(f"error: {_one_line(e)}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
