"""``med42 serve`` (also ``python -m med42_rs.server``): options, loading, and running uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "serve"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``med42 serve`` besides the model ones every command has."""
    from ..cli import _int_in

    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_int_in(0, 65535), default=8000, help="port (default 8000; 0 picks a free one)"
    )
    p.add_argument(
        "--parallel", "-np", type=_int_in(1, 256), default=None, metavar="N",
        help="generations that run at once (slots); default: what the KV memory holds, at most 4",
    )  # fmt: skip
    p.add_argument(
        "--queue", type=_int_in(0, 1 << 16), default=None, metavar="N",
        help="requests that may wait for a slot; more are answered 429 (default 4 x --parallel)",
    )  # fmt: skip
    p.add_argument(
        "--api-key", default=os.environ.get("MED42_API_KEY"), metavar="KEY",
        help="require `Authorization: Bearer KEY` (default: $MED42_API_KEY; none: no key)",
    )  # fmt: skip
    p.add_argument(
        "--alias", default=None, metavar="NAME", help="the model id clients see (default: the file name)"
    )
    p.add_argument(
        "--chat-template", default=None, metavar="med42|FILE",
        help="'med42', or a file with a Jinja chat template (default: the GGUF's own, else Med42's)",
    )  # fmt: skip
    p.add_argument(
        "--max-body", type=_int_in(1024, 1 << 30), default=4 << 20, metavar="BYTES",
        help="largest request body (default 4 MiB; larger ones get 413)",
    )  # fmt: skip
    p.add_argument(
        "--drain-timeout", type=_int_in(0, 3600), default=10, metavar="S",
        help="on Ctrl-C/SIGTERM, seconds to let running answers finish before cancelling them (default 10)",
    )  # fmt: skip
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, ending with status 0 after a graceful stop on SIGINT/SIGTERM (uvicorn
        re-raises the signal once it has shut down, which would end the process by that signal)."""

        stopped_by: list[int] = []  # noqa: RUF012

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):
                        self.stopped_by = list(captured)
                        captured.clear()

    return Server


def _license_info(paths: list[str], metadata: dict[str, Any], accept_flag: bool) -> dict[str, Any] | None:
    from .. import license as L

    lic = L.license_for(paths=paths, metadata=metadata)
    if lic is None:
        return None
    if accept_flag:
        how = "--accept-license"
    elif L._env_accepts(lic):
        how = f"{L.ENV_VAR}={lic.id}"
    else:
        rec = L.stored(lic) or {}
        how = f"stored ({rec.get('accepted_at', 'this session')})"
    return {
        "id": lic.id,
        "name": lic.name,
        "version": lic.version,
        "url": lic.url,
        "accepted": True,
        "how": how,
    }


def _load(a: argparse.Namespace, paths: list[str]) -> Any:
    """The model, loaded behind the license gate exactly as ``Model.load`` applies it (a prompt
    only on a terminal; otherwise ``--accept-license``, ``MED42_ACCEPT_LICENSE`` or a stored
    acceptance), with its batching scheduler sized for the slots (without ``--parallel``, the
    engine's default: as many KV caches as fit in memory, at most 4)."""
    from .. import Model

    return Model.load(
        paths, n_ctx=a.n_ctx, n_threads=a.threads, accept_license=True if a.accept_license else None,
        n_parallel=a.parallel, kv_type=a.kv_type, device=a.device, n_gpu_layers=a.n_gpu_layers,
    )  # fmt: skip


def serve(a: argparse.Namespace) -> int:
    """Run the server until Ctrl-C or SIGTERM."""
    try:
        import uvicorn

        from .app import GENERIC_DISCLAIMER, ServerConfig, create_app
    except ImportError as e:
        raise ImportError(
            f"`med42 serve` needs the server extra ({e.name} is missing): pip install 'med42-rs[server]'"
        ) from e
    from .. import _native
    from ..cli import _model_files
    from ..license import MED42_LICENSE

    paths = _model_files(a.model, a.accept_license)
    template = a.chat_template
    if template is not None and template != "med42":
        template = Path(template).read_text(encoding="utf-8")
    metadata, _, _ = _native.read_header(paths)
    model = _load(a, paths)
    parallel = model.n_parallel
    lic = _license_info(paths, metadata, a.accept_license)
    name = a.alias or (
        Path(paths[0]).name.removesuffix(".gguf") if a.model is None or os.path.exists(a.model) else a.model
    )
    config = ServerConfig(
        model_id=name,
        parallel=parallel,
        max_waiting=a.queue if a.queue is not None else 4 * parallel,
        api_key=a.api_key or None,
        template=template,
        max_body=a.max_body,
        license=lic,
        disclaimer=MED42_LICENSE.summary if lic is not None else GENERIC_DISCLAIMER,
    )
    app = create_app(model, config)
    uv = uvicorn.Config(
        app, host=a.host, port=a.port, log_level=a.log_level, timeout_graceful_shutdown=a.drain_timeout,
        lifespan="on",
    )  # fmt: skip
    sock = uv.bind_socket()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"serving {name} on http://{shown}:{port} ({parallel} slots, queue {config.max_waiting}, "
        f"API key {'required' if config.api_key else 'not required'})\n"
    )
    sys.stderr.flush()
    server = _server_class()(uv)
    server.run(sockets=[sock])
    if server.stopped_by:
        names = ", ".join(signal.Signals(s).name for s in server.stopped_by)
        sys.stderr.write(f"stopped ({names}): running answers were given --drain-timeout, then cancelled\n")
    return 0
