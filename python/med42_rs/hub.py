"""Download GGUF model files from the Hugging Face Hub, picked by quantization.

:func:`download` lists a repository, picks the file(s) of one model (by quant tag such as
``"Q4_K_M"`` or by file name, including every part of a split model), checks free disk space,
and downloads them with :func:`huggingface_hub.hf_hub_download`, so its cache, resumable
transfers, progress bars and the ``HF_TOKEN``, ``HF_ENDPOINT``, ``HF_HOME`` and
``HF_HUB_OFFLINE`` environment variables all apply. Offline, or when the Hub cannot be reached,
the same selection is made from the local cache.

Failures a user can act on are raised as :class:`~med42_rs.errors.DownloadError` subclasses
(log in, request access, fix a name) or :class:`~med42_rs.errors.InsufficientDiskSpaceError`.
``huggingface_hub`` is an optional dependency (``pip install med42-rs[hub]``); only
:func:`download` needs it.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import (
    AccessDeniedError,
    AuthenticationRequiredError,
    DownloadError,
    InsufficientDiskSpaceError,
    InvalidParameterError,
    RemoteFileNotFoundError,
    RepositoryNotFoundError,
)

__all__ = ["GGUFName", "download", "find_in_cache", "parse_gguf_name", "quant_of"]

# One quant tag, matched case-insensitively. K-quants (with the _L/_XL variants some publishers
# add), the legacy block quants (and their ARM repacks Q4_0_4_4, ...), i-quants, ternary quants,
# MXFP4 and the float types.
_QUANT_TAG = (
    r"I?Q[1-8]_K(?:_(?:XXS|XS|S|M|L|XL))?"
    r"|Q[1-8]_[01](?:_[48]_[48])?"
    r"|IQ[1-4]_(?:XXS|XS|S|M|NL)"
    r"|TQ[12]_0"
    r"|MXFP4(?:_MOE)?"
    r"|BF16|FP16|FP32|F16|F32|F64"
)
# A tag is a whole token: not glued to letters or digits on either side (``.``, ``-``, ``_`` or
# the ends of the name separate tokens).
_QUANT_RE = re.compile(rf"(?<![A-Za-z0-9])(?:{_QUANT_TAG})(?![A-Za-z0-9])", re.IGNORECASE)
_QUANT_ALIASES = {"FP16": "F16", "FP32": "F32"}
# ``NAME.gguf-split-a``: one byte range of ``NAME.gguf`` (how TheBloke published the large Med42 files).
_BYTE_SPLIT_RE = re.compile(r"^(?P<whole>.+\.gguf)-split-(?P<letter>[a-z])$")
# ``PREFIX-00001-of-00003.gguf``: llama.cpp gguf-split shards, each a GGUF file.
_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
_GGUF_RE = re.compile(r"\.gguf$", re.IGNORECASE)

_NEEDS_HUB = "Models from the Hugging Face Hub need huggingface_hub: pip install 'med42-rs[hub]'"
_GO_ONLINE = (
    "Go online once (unset HF_HUB_OFFLINE, with network access to the Hugging Face Hub) to download it; "
    "later runs find it in the cache."
)


@dataclass(frozen=True)
class GGUFName:
    """What a GGUF file name in a repository says about the file.

    Attributes:
        path: The file's path in the repository, as given.
        quant: The quant tag, upper-case (``"Q4_K_M"``, ``"IQ3_XS"``, ``"F16"``), or ``None`` when
            the name carries none.
        kind: ``"single"`` (one whole GGUF file), ``"byte-split"`` (``NAME.gguf-split-a``, ``-b``,
            ...: byte ranges of one file) or ``"shard"`` (``PREFIX-00001-of-0000N.gguf``).
        group: Identifies one model: equal for every part of a split model, distinct otherwise.
        part: 1-based position of the file in its model (``-split-a`` is 1, ``-split-b`` 2, shard
            ``00002-of-...`` 2); 1 for a single file.
        parts: Number of files making up the model when the name says it (1 for a single file, N
            for shards), ``None`` for byte-split parts.
    """

    path: str
    quant: str | None
    kind: Literal["single", "byte-split", "shard"]
    group: str
    part: int
    parts: int | None


def _normalize_quant(tag: str) -> str:
    tag = tag.strip().upper()
    return _QUANT_ALIASES.get(tag, tag)


def _quant_in(stem: str) -> str | None:
    """The last quant-looking token of ``stem`` (a base name without ``.gguf``)."""
    found = _QUANT_RE.findall(stem)
    return _normalize_quant(found[-1]) if found else None


def parse_gguf_name(path: str) -> GGUFName | None:
    """Parse a GGUF file name (optionally with a folder, ``/``-separated) from a repository.

    Recognises whole files (``med42-70b.Q4_K_M.gguf``, ``Llama3-Med42-8B-Q5_K_S.gguf``),
    byte-split parts (``med42-70b.Q6_K.gguf-split-a``) and gguf-split shards
    (``model-q8_0-00001-of-00002.gguf``). The quant tag is the last ``.``/``-``/``_``-separated
    token before ``.gguf`` (and before a shard or split suffix) that looks like a quant type;
    it is returned upper-case, with ``FP16``/``FP32`` spelled ``F16``/``F32``.

    Returns:
        The parsed name, or ``None`` when ``path`` is not a GGUF file name.
    """
    folder, _, base = path.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    if m := _BYTE_SPLIT_RE.match(base):
        whole = m["whole"]
        return GGUFName(
            path=path,
            quant=_quant_in(whole[: -len(".gguf")]),
            kind="byte-split",
            group=prefix + whole,
            part=ord(m["letter"]) - ord("a") + 1,
            parts=None,
        )
    if m := _SHARD_RE.match(base):
        count = int(m["count"])
        return GGUFName(
            path=path,
            quant=_quant_in(m["prefix"]),
            kind="shard",
            group=f"{prefix}{m['prefix']}-of-{count:05d}.gguf",
            part=int(m["index"]),
            parts=count,
        )
    if _GGUF_RE.search(base):
        return GGUFName(
            path=path, quant=_quant_in(base[: -len(".gguf")]), kind="single", group=path, part=1, parts=1
        )
    return None


def quant_of(path: str) -> str | None:
    """The quant tag of a GGUF file name (``"med42-70b.Q6_K.gguf-split-a"`` → ``"Q6_K"``), or
    ``None`` when the name is not a GGUF file name or carries no recognisable tag."""
    name = parse_gguf_name(path)
    return name.quant if name is not None else None


def _models(files: Iterable[str]) -> dict[str, list[GGUFName]]:
    """The GGUF files of a listing, grouped by model, each group in part order."""
    groups: dict[str, list[GGUFName]] = {}
    for f in files:
        name = parse_gguf_name(f)
        if name is not None:
            groups.setdefault(name.group, []).append(name)
    for members in groups.values():
        members.sort(key=lambda n: n.part)
    return groups


def _describe(members: Sequence[GGUFName]) -> str:
    first = members[0].path
    return first if len(members) == 1 else f"{first} (+{len(members) - 1} more parts)"


class _Selector:
    """Picks the files of one model from a listing: the Hub's (``cached=False``) or the cache's."""

    def __init__(self, repo_id: str, files: Sequence[str], *, cached: bool, offline_reason: str = "") -> None:
        self.repo_id = repo_id
        self.files = list(files)
        self.cached = cached
        self.offline_reason = offline_reason
        self.place = f"the local cache of {repo_id}" if cached else f"the repository {repo_id}"

    def not_found(self, message: str) -> DownloadError:
        """A file is missing: from the repository, or (offline) from the cache."""
        if self.cached:
            return DownloadError(f"{message}; {self.offline_reason}. {_GO_ONLINE}")
        return RemoteFileNotFoundError(f"{message}.")

    def bad_choice(self, message: str) -> Exception:
        """The user's quant or the repository does not give a model: a ValueError online; offline, the
        model may simply not be downloaded yet."""
        if self.cached:
            return DownloadError(f"{message}; {self.offline_reason}. {_GO_ONLINE}")
        return InvalidParameterError(f"{message}.")

    def complete(self, members: Sequence[GGUFName]) -> list[str]:
        """The paths of one model's parts, checking that no part is missing."""
        head = members[0]
        if head.kind == "single":
            return [head.path]
        have = [m.part for m in members]
        if head.kind == "shard":
            count = head.parts or 0
            want = list(range(1, count + 1))
            if have != want:
                folder, _, base = head.path.rpartition("/")
                stem = _SHARD_RE.match(base)
                assert stem is not None
                missing = [
                    f"{folder + '/' if folder else ''}{stem['prefix']}-{i:05d}-of-{count:05d}.gguf"
                    for i in want
                    if i not in have
                ]
                raise self.not_found(
                    f"{head.path} is one of {count} gguf-split shards, but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} missing from {self.place}"
                )
        else:
            want = list(range(1, max(have) + 1))
            if have != want or len(have) < 2:
                letters = [chr(ord("a") + i - 1) for i in want if i not in have]
                gaps = ", ".join(f"{head.group}-split-{c}" for c in letters) or f"{head.group}-split-b"
                raise self.not_found(
                    f"{head.group} is published as byte-split parts, but {gaps} "
                    f"{'is' if ',' not in gaps else 'are'} missing from {self.place}"
                )
        return [m.path for m in members]

    def select(self, quant: str | None, filename: str | None) -> list[str]:
        """Resolve ``filename`` (with its sibling parts) or ``quant`` to the model's paths, in order."""
        models = _models(self.files)
        if filename is not None:
            if filename not in self.files:
                raise self.not_found(f"{filename!r} is not in {self.place}")
            name = parse_gguf_name(filename)
            if name is None or name.kind == "single":
                return [filename]
            return self.complete(models[name.group])
        if not models:
            others = ", ".join(self.files[:8]) + (", ..." if len(self.files) > 8 else "")
            raise self.bad_choice(
                f"There is no GGUF file in {self.place}" + (f" (it holds {others})" if others else "")
            )
        quants = sorted({m[0].quant for m in models.values() if m[0].quant is not None})
        if quant is None:
            if len(models) > 1:
                raise InvalidParameterError(
                    f"{self.place[0].upper()}{self.place[1:]} holds several GGUF models "
                    f"({'; '.join(_describe(m) for m in models.values())}): pass quant= (one of "
                    f"{', '.join(quants) or 'none recognised'}) or filename= to choose one."
                )
            return self.complete(next(iter(models.values())))
        want = _normalize_quant(quant)
        chosen = [m for m in models.values() if m[0].quant == want]
        if not chosen:
            if quants:
                listed = "cached" if self.cached else "available"
                available = f"the quants {listed} are: {', '.join(quants)}"
            else:
                names = ", ".join(_describe(m) for m in models.values())
                available = f"no quant tag could be read from its GGUF file names ({names}); pass filename="
            raise self.bad_choice(f"No {quant!r} GGUF file in {self.place}; {available}")
        if len(chosen) > 1:
            raise InvalidParameterError(
                f"Several GGUF models in {self.place} are {want}: "
                f"{'; '.join(_describe(m) for m in chosen)}. Pass filename= to choose one."
            )
        return self.complete(chosen[0])


def _gib(n: int) -> str:
    v = n / 2**30
    if v >= 100:
        return f"{v:.0f} GiB"
    if v >= 0.01:
        return f"{v:.2f} GiB"
    return f"{v:.2g} GiB"


def _check_disk_space(cache_root: pathlib.Path, needed: int, repo_id: str) -> None:
    """Raise InsufficientDiskSpaceError when ``cache_root``'s disk has less than ``needed`` bytes free."""
    if needed <= 0:
        return
    probe = cache_root
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # cannot tell: let the download try
    if free < needed:
        raise InsufficientDiskSpaceError(
            f"Downloading {repo_id} needs {_gib(needed)}, {_gib(free)} free in {cache_root}; "
            "free space or set HF_HOME to a larger disk."
        )


def _offline_mode() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _is_connection_error(e: BaseException) -> bool:
    """Whether ``e`` is a network failure (no connection, timeout, connection cut) of any HTTP stack
    huggingface_hub may use (httpx2, httpx, requests)."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        mod = sys.modules.get(module)
        for attr in names:
            kind = getattr(mod, attr, None) if mod is not None else None
            if isinstance(kind, type) and issubclass(kind, BaseException):
                kinds.append(kind)
    return isinstance(e, tuple(kinds))


def _status_code(e: BaseException) -> int | None:
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _sent_token(e: BaseException) -> bool:
    try:
        request = getattr(getattr(e, "response", None), "request", None)
        headers = getattr(request, "headers", None)
        return headers is not None and headers.get("authorization") is not None
    except Exception:  # httpx raises when a response has no request attached
        return False


def _hub_errors() -> Any:
    """huggingface_hub's exception classes: in ``huggingface_hub.errors`` in recent versions, in
    ``huggingface_hub.utils`` (which still re-exports them) before."""
    try:
        from huggingface_hub import errors

        errors.LocalEntryNotFoundError  # noqa: B018 - probe: older versions keep them in utils
        return errors
    except (ImportError, AttributeError):  # pragma: no cover - old huggingface_hub
        from huggingface_hub import utils

        return utils


def _hub_error(
    e: BaseException,
    *,
    repo_id: str,
    revision: str | None,
    filename: str | None,
    storage: pathlib.Path,
) -> DownloadError | None:
    """The med42-rs error for a huggingface_hub failure, or ``None`` to let it propagate as is."""
    from huggingface_hub import constants

    hf = _hub_errors()

    page = f"https://huggingface.co/{repo_id}"
    what = f"{filename} from {repo_id}" if filename else repo_id
    if isinstance(e, hf.LocalEntryNotFoundError):
        return DownloadError(
            f"Could not reach the Hugging Face Hub ({constants.ENDPOINT}) to download {what}, and it is not "
            f"in the local cache: {e}. Check your network connection and run again."
        )
    status = _status_code(e)
    if isinstance(e, hf.HfHubHTTPError) or status is not None:
        gated = isinstance(e, hf.GatedRepoError)
        if status == 401:
            if _sent_token(e):
                return AuthenticationRequiredError(
                    f"The Hugging Face Hub rejected the token sent for {repo_id} (HTTP 401): it is invalid "
                    "or expired. Create one at https://huggingface.co/settings/tokens, then run "
                    "`hf auth login` or set the HF_TOKEN environment variable."
                )
            if gated:
                return AuthenticationRequiredError(
                    f"{repo_id} is a gated model: downloading it needs you to be logged in (HTTP 401). "
                    f"Request access at {page} and accept its license there, then run `hf auth login` "
                    "or set the HF_TOKEN environment variable (or pass token=)."
                )
            return AuthenticationRequiredError(
                f"The Hugging Face Hub requires authentication for {repo_id} (HTTP 401): it is private "
                "or gated, or it does not exist (check the name). Run `hf auth login` or set the "
                "HF_TOKEN environment variable (or pass token=)."
            )
        if status == 403:
            return AccessDeniedError(
                f"Your Hugging Face token has no access to {repo_id} (HTTP 403). Request access at {page} "
                "and accept its license there; if access was already granted, check that the token "
                "(HF_TOKEN or `hf auth login`) belongs to that account and may read gated repositories."
            )
        if isinstance(e, hf.RevisionNotFoundError):
            return RepositoryNotFoundError(
                f"Revision {revision!r} of {repo_id} not found on the Hugging Face Hub: check the branch, "
                "tag or commit."
            )
        if isinstance(e, hf.EntryNotFoundError):
            rev = revision or "main"
            return RemoteFileNotFoundError(
                f"{filename!r} not found in {repo_id} at revision {rev!r} on the Hugging Face Hub."
            )
        if isinstance(e, hf.RepositoryNotFoundError) or status == 404:
            return RepositoryNotFoundError(
                f"Repository {repo_id!r} not found on the Hugging Face Hub ({constants.ENDPOINT}): check "
                "the name (owner/name)" + (f" and the revision {revision!r}." if revision else ".")
            )
        return DownloadError(f"The Hugging Face Hub failed while getting {what} (HTTP {status}): {e}")
    if isinstance(e, hf.EntryNotFoundError):
        return RemoteFileNotFoundError(f"{filename!r} not found in {repo_id}: {e}")
    if _is_connection_error(e) or (isinstance(e, OSError) and "Consistency check failed" in str(e)):
        if filename is None:
            return DownloadError(f"Could not reach the Hugging Face Hub ({constants.ENDPOINT}): {e}")
        blobs = storage / "blobs"
        kept = blobs.is_dir() and any(blobs.glob("*.incomplete"))
        after = (
            "The partial download is kept in the cache; run the same command again to resume it."
            if kept
            else "Run the same command again to retry; files already complete stay in the cache and are "
            "not downloaded again."
        )
        return DownloadError(f"The download of {what} was interrupted by a network error ({e}). {after}")
    return None


def _repo_folder(repo_id: str) -> str:
    return "--".join(["models", *repo_id.split("/")])


def _from_cache(
    repo_id: str,
    *,
    quant: str | None,
    filename: str | None,
    revision: str | None,
    cache_dir: str | None,
    cache_root: pathlib.Path,
    reason: str,
    cause: BaseException | None,
    before_download: Callable[[list[str]], None] | None,
) -> list[pathlib.Path]:
    """Resolve the model from the local cache only (offline, or the Hub unreachable)."""
    from huggingface_hub import snapshot_download

    try:
        folder = pathlib.Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
        )
    except _hub_errors().LocalEntryNotFoundError as e:
        # A snapshot known to be incomplete is fine here: only the selected files must be there.
        partial = getattr(e, "snapshot_path", None)
        if not isinstance(partial, str):
            rev = f" (revision {revision!r})" if revision else ""
            raise DownloadError(
                f"{repo_id}{rev} is not in the local cache ({cache_root}) and {reason}. {_GO_ONLINE}"
            ) from (cause or e)
        folder = pathlib.Path(partial)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    try:
        selected = _Selector(repo_id, files, cached=True, offline_reason=reason).select(quant, filename)
    except DownloadError as e:
        if cause is not None:
            raise e from cause
        raise
    if before_download is not None:
        before_download(list(selected))
    return [folder / name for name in selected]


def find_in_cache(
    repo_id: str,
    *,
    quant: str | None = "Q4_K_M",
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[pathlib.Path] | None:
    """The local paths of one model when all its files are in the Hugging Face cache, else ``None``.

    The model is picked as :func:`download` picks it, from the cached files only: no network
    request is made and nothing is downloaded (so no license gate runs)."""
    try:
        from huggingface_hub import constants
    except ImportError as e:
        raise ImportError(_NEEDS_HUB) from e

    cache = os.fspath(cache_dir) if cache_dir is not None else None
    root = pathlib.Path(cache if cache is not None else constants.HF_HUB_CACHE).expanduser()
    try:
        return _from_cache(
            repo_id, quant=quant, filename=filename, revision=revision, cache_dir=cache, cache_root=root,
            reason="not cached", cause=None, before_download=None,
        )  # fmt: skip
    except DownloadError:
        return None


def download(
    repo_id: str,
    *,
    quant: str | None = "Q4_K_M",
    filename: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    before_download: Callable[[list[str]], None] | None = None,
) -> list[pathlib.Path]:
    """Download the GGUF file(s) of one model from the Hugging Face Hub and return their local paths.

    Files go through :func:`huggingface_hub.hf_hub_download`: its cache (``HF_HOME`` /
    ``cache_dir``), resumable transfers, progress bars, ``HF_TOKEN``, ``HF_ENDPOINT`` and
    ``HF_HUB_OFFLINE`` apply, and files already cached are not downloaded again.

    Args:
        repo_id: The repository, ``"owner/name"`` (e.g. ``"TheBloke/med42-70B-GGUF"``).
        quant: The quant tag to pick from the repository listing, case-insensitively
            (``"Q4_K_M"`` → ``med42-70b.Q4_K_M.gguf``; ``"Q6_K"`` → ``med42-70b.Q6_K.gguf-split-a``
            and ``-split-b``). ``None`` takes the repository's only GGUF model. Ignored when
            ``filename`` is given.
        filename: A file of the repository to download instead. A byte-split part
            (``NAME.gguf-split-a``) or gguf-split shard (``PREFIX-00001-of-0000N.gguf``) brings all
            the parts of its model.
        revision: Branch, tag or commit (default: the main branch).
        token: Hugging Face token; ``None`` uses ``HF_TOKEN`` or the ``hf auth login`` token,
            ``False`` sends none.
        cache_dir: The hub cache directory (default: ``$HF_HOME/hub``).
        before_download: Called once with the resolved file names (repository paths, in order)
            before any file byte is downloaded, also when the files are already cached; if it
            raises, nothing is downloaded. The default is the license gate
            (:func:`med42_rs.license.ensure_accepted` on the repository id and file names), so
            gated Med42 weights are never downloaded unaccepted.

    Returns:
        The local paths of the model's files, in order (split parts a, b, ...; shards by index), in
        the cache's ``snapshots`` folder.

    Raises:
        ValueError: ``quant`` matches no file (the message lists the quants available), several
            models match it, or the repository has no GGUF file.
        AuthenticationRequiredError: HTTP 401, the repository is gated or private and no valid
            token was sent.
        AccessDeniedError: HTTP 403, the token has no access (request it on the model page).
        RepositoryNotFoundError: The repository or revision does not exist.
        RemoteFileNotFoundError: ``filename`` (or a part of the model) is not in the repository.
        InsufficientDiskSpaceError: The cache's disk has too little free space for the files still
            to download.
        DownloadError: The network failed or the transfer was interrupted, or (offline or with the
            Hub unreachable) the model is not in the local cache.
    """
    if before_download is None:

        def before_download(files: list[str]) -> None:
            from .license import ensure_accepted, license_for

            ensure_accepted(license_for(repo_id=repo_id, paths=files))

    try:
        from huggingface_hub import HfApi, constants, hf_hub_download
    except ImportError as e:
        raise ImportError(_NEEDS_HUB) from e

    cache = os.fspath(cache_dir) if cache_dir is not None else None
    cache_root = pathlib.Path(cache if cache is not None else constants.HF_HUB_CACHE).expanduser()
    storage = cache_root / _repo_folder(repo_id)

    def from_cache(reason: str, cause: BaseException | None) -> list[pathlib.Path]:
        return _from_cache(
            repo_id,
            quant=quant,
            filename=filename,
            revision=revision,
            cache_dir=cache,
            cache_root=cache_root,
            reason=reason,
            cause=cause,
            before_download=before_download,
        )

    if _offline_mode():
        return from_cache("offline mode is on (HF_HUB_OFFLINE=1)", None)
    api = HfApi()
    try:
        info = api.model_info(repo_id, revision=revision, token=token, files_metadata=True)
    except Exception as e:
        if _is_connection_error(e):
            return from_cache(f"the Hugging Face Hub ({api.endpoint}) could not be reached: {e}", e)
        if (_status_code(e) or 0) >= 500:  # the Hub is down: like huggingface_hub, use the cache
            return from_cache(f"the Hugging Face Hub ({api.endpoint}) failed with HTTP {_status_code(e)}", e)
        mapped = _hub_error(e, repo_id=repo_id, revision=revision, filename=None, storage=storage)
        if mapped is None:
            raise
        raise mapped from e

    siblings = info.siblings or []
    files = [s.rfilename for s in siblings]
    selected = _Selector(repo_id, files, cached=False).select(quant, filename)

    by_name = {s.rfilename: s for s in siblings}
    needed = 0
    for name in selected:
        s = by_name[name]
        size = s.lfs.size if s.lfs is not None else s.size
        etag = s.lfs.sha256 if s.lfs is not None else s.blob_id
        cached = (etag is not None and (storage / "blobs" / etag).exists()) or (
            info.sha is not None and (storage / "snapshots" / info.sha / name).exists()
        )
        if not cached and size is not None:
            needed += size
    _check_disk_space(cache_root, needed, repo_id)

    if before_download is not None:
        before_download(list(selected))

    paths: list[pathlib.Path] = []
    for name in selected:
        try:
            local = hf_hub_download(repo_id, name, revision=revision, token=token, cache_dir=cache)
        except Exception as e:
            mapped = _hub_error(e, repo_id=repo_id, revision=revision, filename=name, storage=storage)
            if mapped is None:
                raise
            raise mapped from e
        paths.append(pathlib.Path(local))
    return paths
