"""The license gate: Med42 weights are not downloaded or loaded until its license is accepted.

Ways to accept (any one):

- answer ``yes`` at the prompt shown on a terminal;
- ``accept_license=True`` in :meth:`med42_rs.Model.load` / :meth:`~med42_rs.Model.from_pretrained`;
- the environment variable ``MED42_ACCEPT_LICENSE=med42`` (servers and CI);
- ``med42 license accept``.

Acceptance is stored per license id and version in ``$XDG_CONFIG_HOME/med42-rs/licenses.json``
(``~/.config/...`` by default; ``MED42_CONFIG_DIR`` overrides the directory), so a new license
version asks again. Without a terminal and without acceptance, :class:`LicenseNotAcceptedError`
says how to accept; standard input is never read unless it is a terminal.

A model is recognised as Med42 by its Hub repository id (``m42-health/...``, or a name containing
``med42``), by its file name, or by GGUF metadata (``general.name``, ``general.basename``,
``general.license*``, source URLs). Other models (SmolLM2 under Apache-2.0, ...) are not gated.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import LicenseNotAcceptedError

__all__ = [
    "MED42_LICENSE",
    "License",
    "accept",
    "accepted",
    "config_dir",
    "ensure_accepted",
    "license_for",
    "revoke",
]

ENV_VAR = "MED42_ACCEPT_LICENSE"


@dataclass(frozen=True)
class License:
    """A license that gates some model weights."""

    id: str
    """Short id, also the value users put in ``MED42_ACCEPT_LICENSE``."""
    version: str
    """Bumped when the terms change; a stored acceptance of another version does not count."""
    name: str
    url: str
    summary: str


MED42_LICENSE = License(
    id="med42",
    version="1",
    name="Med42 License (M42 Health)",
    url="https://huggingface.co/spaces/m42-health/License",
    summary=(
        "Med42 is released by M42 Health under a custom license with an acceptable use policy. "
        "It is a research model, not ready for clinical use: do not rely on it for medical "
        "decisions without rigorous safety testing. Read the full terms at the link below."
    ),
)

LICENSES = {MED42_LICENSE.id: MED42_LICENSE}


# ----------------------------------------------------------------------------------------------
# recognising gated models


def _mentions_med42(s: str) -> bool:
    s = s.lower()
    return "med42" in s or "m42-health" in s


def license_for(
    *,
    repo_id: str | None = None,
    paths: Sequence[str | os.PathLike[str]] = (),
    metadata: Mapping[str, Any] | None = None,
) -> License | None:
    """The license gating a model, or ``None`` when it is not gated, judged by any of its Hub
    repository id, its file names and its GGUF metadata."""
    if repo_id is not None and _mentions_med42(repo_id):
        return MED42_LICENSE
    if any(_mentions_med42(Path(p).name) for p in paths):
        return MED42_LICENSE
    if metadata:
        for key in (
            "general.name",
            "general.basename",
            "general.license",
            "general.license.name",
            "general.license.link",
            "general.organization",
            "general.url",
            "general.source.url",
            "general.source.huggingface.repository",
            "general.base_model.0.name",
            "general.base_model.0.organization",
            "general.base_model.0.repo_url",
        ):
            v = metadata.get(key)
            if isinstance(v, str) and _mentions_med42(v):
                return MED42_LICENSE
    return None


# ----------------------------------------------------------------------------------------------
# stored acceptance


def config_dir() -> Path:
    """Where med42-rs keeps its settings: ``MED42_CONFIG_DIR``, else the platform's user config
    directory (``$XDG_CONFIG_HOME`` or ``~/.config`` on Linux)."""
    if d := os.environ.get("MED42_CONFIG_DIR"):
        return Path(d)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "med42-rs"


def _store() -> Path:
    return config_dir() / "licenses.json"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(_store().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict[str, Any]) -> None:
    import tempfile

    p = _store()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".licenses-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, p)  # atomic: readers see the old or the new file, never half of one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def stored(lic: License = MED42_LICENSE) -> dict[str, Any] | None:
    """The stored acceptance record of ``lic`` (any version), or ``None``."""
    rec = _read().get(lic.id)
    return rec if isinstance(rec, dict) else None


def _env_accepts(lic: License) -> bool:
    ids = {s.strip().lower() for s in os.environ.get(ENV_VAR, "").split(",")}
    return lic.id in ids


_SESSION: set[tuple[str, str]] = set()
"""Licenses accepted in this process (so a read-only config directory does not ask twice)."""


def accepted(lic: License = MED42_LICENSE) -> bool:
    """True when ``lic`` (this version) is accepted: through the environment variable, in this
    process, or stored."""
    if _env_accepts(lic) or (lic.id, lic.version) in _SESSION:
        return True
    rec = stored(lic)
    return rec is not None and rec.get("version") == lic.version


def accept(lic: License = MED42_LICENSE, *, how: str = "api") -> Path:
    """Record that the user accepted ``lic`` (for this process at once, then in the store);
    returns the file it is stored in."""
    _SESSION.add((lic.id, lic.version))
    rec = stored(lic)
    if rec is not None and rec.get("version") == lic.version:
        return _store()  # already stored: no rewrite (many workers may start at once)
    data = _read()
    data[lic.id] = {
        "version": lic.version,
        "url": lic.url,
        "accepted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "how": how,
    }
    _write(data)
    return _store()


def revoke(lic: License = MED42_LICENSE) -> bool:
    """Forget a stored acceptance of ``lic`` (and this process's); True if one was stored."""
    _SESSION.discard((lic.id, lic.version))
    data = _read()
    if data.pop(lic.id, None) is None:
        return False
    _write(data)
    return True


# ----------------------------------------------------------------------------------------------
# the gate


def _how_to_accept(lic: License) -> str:
    return (
        f"read the {lic.name} at {lic.url}, then accept it in one of these ways: "
        f"run `med42 license accept`; pass accept_license=True; set the environment variable "
        f"{ENV_VAR}={lic.id}; or load the model from a terminal and answer yes at the prompt"
    )


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()
    except (ValueError, OSError):  # closed or detached streams
        return False


def ask(lic: License, *, stdin: TextIO | None = None, out: TextIO | None = None) -> bool:
    """Show the license and ask for an explicit ``yes`` on the terminal."""
    stdin = stdin or sys.stdin
    out = out or sys.stderr
    rec = stored(lic)
    out.write(f"\n{lic.name}\n{lic.summary}\n\n  {lic.url}\n\n")
    if rec is not None and rec.get("version") != lic.version:
        out.write(
            f"You accepted version {rec.get('version')} of this license; it is now version "
            f"{lic.version}, so it must be accepted again.\n"
        )
    out.write("Do you accept the license? Type 'yes' to accept: ")
    out.flush()
    line = stdin.readline()
    return line.strip().lower() in ("yes", "y")


def ensure_accepted(
    lic: License | None,
    *,
    accept_license: bool | None = None,
    prompt: Callable[[License], bool] | None = None,
) -> None:
    """Pass when ``lic`` is ``None`` or accepted; otherwise ask on a terminal, or raise
    :class:`LicenseNotAcceptedError` saying how to accept.

    ``accept_license=True`` accepts (and stores the acceptance); ``False`` refuses without asking.
    """
    if lic is None:
        return
    if accept_license:
        _SESSION.add((lic.id, lic.version))
        with contextlib.suppress(OSError):  # a read-only home: the acceptance holds for this process
            accept(lic, how="api")
        return
    if accepted(lic):
        return
    env = os.environ.get(ENV_VAR)
    hint = (
        f" ({ENV_VAR} is set to {env!r}, which does not name this license: use {ENV_VAR}={lic.id})"
        if env
        else ""
    )
    if accept_license is None and _interactive():
        if (prompt or ask)(lic):
            try:
                where = accept(lic, how="prompt")
                sys.stderr.write(f"License accepted (stored in {where}).\n")
            except OSError as e:
                _SESSION.add((lic.id, lic.version))
                sys.stderr.write(f"License accepted for this session (could not store it: {e}).\n")
            return
        raise LicenseNotAcceptedError(f"the {lic.name} was not accepted; {_how_to_accept(lic)}")
    raise LicenseNotAcceptedError(
        f"this model is gated by the {lic.name}, which has not been accepted{hint}; {_how_to_accept(lic)}"
    )
