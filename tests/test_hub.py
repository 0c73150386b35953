"""med42_rs.hub.download against a local Hugging-Face-Hub-compatible server, through the real
huggingface_hub client: quant selection, split parts, the cache, offline mode, auth errors,
interrupted transfers, the license hook and the disk-space check.

The server mimics the Hub's wire protocol as huggingface_hub uses it: ``GET /api/models/{repo}``
(``siblings`` with sizes, blob ids and LFS sha256, and the commit ``sha``), ``HEAD
/{repo}/resolve/{rev}/{file}`` answering LFS files with a 302 to a separate "CDN" origin carrying
``X-Repo-Commit``, ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``, the CDN serving bytes with
``Range`` support, and errors with the Hub's ``X-Error-Code`` headers (401 for anonymous access to
private/gated repos, 403 for a token without access, 404 for missing repos, revisions and files).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")

from huggingface_hub import constants as hf_constants  # noqa: E402
from huggingface_hub import errors as hf_errors  # noqa: E402
from med42_rs import hub  # noqa: E402
from med42_rs.errors import (  # noqa: E402
    AccessDeniedError,
    AuthenticationRequiredError,
    DownloadError,
    InsufficientDiskSpaceError,
    InvalidParameterError,
    Med42Error,
    RemoteFileNotFoundError,
    RepositoryNotFoundError,
)

MED42 = "TheBloke/med42-70B-GGUF"
QUANTS = ["Q2_K", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q4_0", "Q4_K_M", "Q4_K_S", "Q5_0", "Q5_K_M", "Q5_K_S"]
GRANTED = "hf_granted_token"  # has access to every repo
DENIED = "hf_denied_token"  # a valid token without access to the gated/private repos


def _bytes(seed: str, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def med42_listing() -> dict[str, bytes]:
    """A listing shaped like TheBloke/med42-70B-GGUF (files much smaller, of course)."""
    files = {
        "README.md": b"---\nlicense: other\n---\n# Med42 70B - GGUF\n",
        "config.json": b'{"model_type": "llama"}\n',
        "LICENSE.txt": b"M42 Health license\n",
    }
    for q in QUANTS:
        files[f"med42-70b.{q}.gguf"] = _bytes(q, 3_000)
    files["med42-70b.Q4_K_M.gguf"] = _bytes("Q4_K_M", 300_000)
    files["med42-70b.Q6_K.gguf-split-a"] = _bytes("Q6_K-a", 200_000)
    files["med42-70b.Q6_K.gguf-split-b"] = _bytes("Q6_K-b", 150_000)
    files["med42-70b.Q8_0.gguf-split-a"] = _bytes("Q8_0-a", 4_000)
    files["med42-70b.Q8_0.gguf-split-b"] = _bytes("Q8_0-b", 3_000)
    return files


# --------------------------------------------------------------------------- the fake Hub


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(name: str) -> bool:
    return ".gguf" in name


@dataclass
class Repo:
    files: dict[str, bytes]
    private: bool = False
    gated: bool = False
    sha: str = field(default_factory=lambda: hashlib.sha1(random.randbytes(8)).hexdigest())


@dataclass
class Seen:
    origin: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]  # lower-case names


class FakeHub:
    """State and behaviour of the local Hub; tests change the knobs between calls."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> content
        self.names: dict[str, str] = {}  # sha256 -> file name
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        # Knobs.
        self.cut_after: dict[str, int] = {}  # file name -> bytes sent before cutting its next GET
        self.down_after_cut = False  # after a cut, the network stays down
        self.down = False  # every connection is closed without an answer
        self.gone: set[str] = set()  # listed, but 404 on resolve (deleted after the listing)
        self.api_status: int | None = None  # answer every /api/ request with this error status
        self.url = ""
        self.cdn_url = ""

    def add(self, repo_id: str, files: dict[str, bytes], **kw: Any) -> Repo:
        repo = Repo(files=files, **kw)
        self.repos[repo_id] = repo
        for name, data in files.items():
            sha = hashlib.sha256(data).hexdigest()
            self.blobs[sha], self.names[sha] = data, name
        return repo

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)

    def requests(self, origin: str | None = None, method: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if (origin is None or s.origin == origin) and (method is None or s.method == method)
            ]

    def file_gets(self) -> list[Seen]:
        """Requests that transfer file bytes: CDN GETs and GETs of /resolve/."""
        return [s for s in self.requests(method="GET") if s.origin == "cdn" or "/resolve/" in s.path]

    def reset_log(self) -> None:
        with self.lock:
            self.seen.clear()


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self.handle_request()

    def do_GET(self) -> None:
        self.handle_request()

    # -- helpers

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": message, "Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        self.reply(status, json.dumps({"error": message}).encode(), {**headers, **(extra or {})})

    def token(self) -> str | None:
        auth = self.headers.get("Authorization")
        return auth[len("Bearer ") :] if auth and auth.startswith("Bearer ") else None

    def access_error(self, repo_id: str, *, files: bool) -> bool:
        """Answer like the Hub when access is refused; True when an answer was sent."""
        fake = self.server.fake
        token = self.token()
        if token is not None and token not in (GRANTED, DENIED):
            self.error(401, "", "Invalid credentials in Authorization header")
            return True
        repo = fake.repos.get(repo_id)
        if repo is None or (repo.private and token != GRANTED):
            # Like the Hub: anonymous requests get 401 whether the repo is private or missing.
            self.error(404 if token else 401, "RepoNotFound", "Repository not found")
            return True
        if repo.gated and files and token != GRANTED:
            if token is None:
                msg = f"Access to model {repo_id} is restricted. You must be authenticated to access it."
                self.error(401, "GatedRepo", msg)
            else:
                msg = f"Access to model {repo_id} is restricted and you are not in the authorized list."
                self.error(403, "GatedRepo", msg)
            return True
        return False

    def handle_request(self) -> None:
        fake = self.server.fake
        path = unquote(urlsplit(self.path).path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake.record(Seen(self.server.origin, self.command, path, headers))
        if fake.down:
            self.close_connection = True  # no answer at all: the network is down
            return
        if self.server.origin == "cdn":
            self.cdn(path)
        elif path.startswith("/api/models/"):
            if fake.api_status is not None:
                self.error(fake.api_status, "", "Service Unavailable")
                return
            self.model_info(path[len("/api/models/") :])
        elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self.resolve(m[1], m[2], m[3])
        else:
            self.error(404, "", "not found")

    # -- endpoints

    def model_info(self, rest: str) -> None:
        parts = rest.split("/")
        repo_id, revision = "/".join(parts[:2]), "main"
        if len(parts) > 3 and parts[2] == "revision":
            revision = "/".join(parts[3:])
        if self.access_error(repo_id, files=False):
            return
        repo = self.server.fake.repos[repo_id]
        if revision not in ("main", repo.sha):
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        siblings = []
        for name, data in repo.files.items():
            sib: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": _git_oid(data)}
            if _is_lfs(name):
                sha = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n"
                sib["blobId"] = _git_oid(pointer.encode())
                sib["lfs"] = {"size": len(data), "sha256": sha, "pointerSize": len(pointer)}
            siblings.append(sib)
        body = {
            "_id": "0" * 24,
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["gguf"],
            "siblings": siblings,
        }
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def resolve(self, repo_id: str, revision: str, name: str) -> None:
        fake = self.server.fake
        if self.access_error(repo_id, files=True):
            return
        repo = fake.repos[repo_id]
        if revision not in ("main", repo.sha):
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        commit = {"X-Repo-Commit": repo.sha}
        if name not in repo.files or name in fake.gone:
            self.error(404, "EntryNotFound", f"{name} does not exist on 'main'", commit)
            return
        data = repo.files[name]
        if _is_lfs(name):
            sha = hashlib.sha256(data).hexdigest()
            headers = {
                **commit,
                "Location": f"{fake.cdn_url}/cdn/{sha}",
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{_git_oid(data)}"',
            }
            self.reply(302, b"", headers)
        else:
            self.reply(200, data, {**commit, "ETag": f'"{_git_oid(data)}"', "Accept-Ranges": "bytes"})

    def cdn(self, path: str) -> None:
        fake = self.server.fake
        sha = path.rsplit("/", 1)[-1]
        data = fake.blobs.get(sha)
        if data is None:
            self.error(404, "", "no such blob")
            return
        start, status = 0, 200
        headers = {"ETag": f'"{sha}"', "Accept-Ranges": "bytes"}
        if (rng := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng)):
            start, end = int(m[1]), int(m[2] or len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        cut = fake.cut_after.pop(fake.names[sha], None) if self.command == "GET" else None
        if cut is None:
            self.reply(status, data, headers)
            return
        # Full headers, part of the body, then the connection drops.
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:cut])
        self.wfile.flush()
        if fake.down_after_cut:
            fake.down = True
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeHub, origin: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.fake = fake
        self.origin = origin

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _point_client_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", url)
    # huggingface_hub reads HF_ENDPOINT into its constants at import time.
    monkeypatch.setattr(hf_constants, "ENDPOINT", url)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake Hub (with the Med42 listing) that huggingface_hub talks to, and an empty
    HF_HOME in tmp_path with no token."""
    state = FakeHub()
    state.add(MED42, med42_listing())
    servers = [Server(state, "hub"), Server(state, "cdn")]
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True) for s in servers
    ]
    for t in threads:
        t.start()
    state.url, state.cdn_url = servers[0].url, servers[1].url

    home = tmp_path / "hf"
    for var in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_CACHE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    # These tests exercise downloading; the license gate is tested on its own below.
    monkeypatch.setenv("MED42_ACCEPT_LICENSE", "med42")
    _point_client_at(monkeypatch, state.url)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    # Small chunks, so that an interrupted transfer has written some of them (resume from there).
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    try:
        yield state
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        huggingface_hub.close_session()


def storage(fake: FakeHub, repo_id: str = MED42) -> Path:
    return Path(hf_constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def served(fake: FakeHub, name: str, repo_id: str = MED42) -> bytes:
    return fake.repos[repo_id].files[name]


# --------------------------------------------------------------------------- 1. quant resolution


def test_quant_resolution_on_a_med42_listing(fake: FakeHub) -> None:
    repo = fake.repos[MED42]
    snap = storage(fake) / "snapshots" / repo.sha

    [q4] = hub.download(MED42, quant="Q4_K_M")
    assert q4 == snap / "med42-70b.Q4_K_M.gguf"
    assert q4.read_bytes() == served(fake, "med42-70b.Q4_K_M.gguf")
    assert hub.download(MED42) == [q4]  # Q4_K_M is the default

    q6 = hub.download(MED42, quant="Q6_K")
    assert [p.name for p in q6] == ["med42-70b.Q6_K.gguf-split-a", "med42-70b.Q6_K.gguf-split-b"]
    assert [p.read_bytes() for p in q6] == [served(fake, p.name) for p in q6]
    assert hub.download(MED42, quant="q6_k") == q6  # case-insensitive
    assert hub.download(MED42, filename="med42-70b.Q6_K.gguf-split-a") == q6
    assert hub.download(MED42, filename="med42-70b.Q6_K.gguf-split-b") == q6  # a later part brings its set
    assert hub.download(MED42, filename="med42-70b.Q2_K.gguf", quant="Q6_K") == [snap / "med42-70b.Q2_K.gguf"]
    # Each file crossed the wire once: later calls were served by the cache.
    got = sorted(s.path for s in fake.file_gets())
    assert len(got) == 4 and len(set(got)) == 4

    fake.reset_log()
    with pytest.raises(ValueError) as e:
        hub.download(MED42, quant="Q7_K")
    msg = str(e.value)
    assert MED42 in msg and "'Q7_K'" in msg
    assert ", ".join([*QUANTS, "Q6_K", "Q8_0"]) in msg  # every quant, sorted, once
    assert "README" not in msg and isinstance(e.value, InvalidParameterError)
    assert fake.file_gets() == []


def test_selection_rules_other_layouts(fake: FakeHub) -> None:
    fake.add(
        "org/sharded",
        {
            "model-q8_0-00001-of-00002.gguf": _bytes("s1", 5_000),
            "model-q8_0-00002-of-00002.gguf": _bytes("s2", 4_000),
            "model-Q4_K_M.gguf": _bytes("s4", 3_000),
            "other-Q4_K_M.gguf": _bytes("o4", 3_000),
            "broken-Q5_K_M-00001-of-00003.gguf": _bytes("b1", 100),
            "broken-Q5_K_M-00003-of-00003.gguf": _bytes("b3", 100),
            "lone.Q6_K.gguf-split-a": _bytes("l", 100),
        },
    )
    shards = hub.download("org/sharded", quant="Q8_0")
    assert [p.name for p in shards] == ["model-q8_0-00001-of-00002.gguf", "model-q8_0-00002-of-00002.gguf"]
    assert [p.read_bytes() for p in shards] == [served(fake, p.name, "org/sharded") for p in shards]
    assert hub.download("org/sharded", filename="model-q8_0-00002-of-00002.gguf") == shards

    with pytest.raises(ValueError, match=r"model-Q4_K_M\.gguf.*other-Q4_K_M\.gguf.*filename="):
        hub.download("org/sharded", quant="Q4_K_M")  # two models are Q4_K_M
    with pytest.raises(ValueError, match=r"several GGUF models.*quant="):
        hub.download("org/sharded", quant=None)
    with pytest.raises(RemoteFileNotFoundError, match=r"broken-Q5_K_M-00002-of-00003\.gguf"):
        hub.download("org/sharded", quant="Q5_K_M")
    with pytest.raises(RemoteFileNotFoundError, match=r"lone\.Q6_K\.gguf-split-b"):
        hub.download("org/sharded", quant="Q6_K")

    fake.add("org/no-gguf", {"README.md": b"hi", "model.safetensors": b"x" * 10})
    with pytest.raises(ValueError, match=r"no GGUF file in the repository org/no-gguf .*model\.safetensors"):
        hub.download("org/no-gguf")

    fake.add("org/one", {"model.gguf": b"GGUF" + bytes(100)})
    [one] = hub.download("org/one", quant=None)  # the only model, though it has no quant tag
    assert one.name == "model.gguf"
    with pytest.raises(ValueError, match=r"no quant tag could be read .*model\.gguf.*filename="):
        hub.download("org/one", quant="Q4_K_M")
    assert fake.file_gets()[-1].path.endswith(hashlib.sha256(b"GGUF" + bytes(100)).hexdigest())


def test_custom_cache_dir(fake: FakeHub, tmp_path: Path) -> None:
    [p] = hub.download(MED42, quant="Q3_K_S", cache_dir=tmp_path / "elsewhere")
    assert p.is_relative_to(tmp_path / "elsewhere") and p.read_bytes() == served(fake, p.name)
    assert not storage(fake).exists()


# --------------------------------------------------------------------------- 2. the parser

NAMES = [
    # name, quant, kind, part, parts
    ("med42-70b.Q4_K_M.gguf", "Q4_K_M", "single", 1, 1),
    ("med42-70b.Q2_K.gguf", "Q2_K", "single", 1, 1),
    ("med42-70b.Q3_K_L.gguf", "Q3_K_L", "single", 1, 1),
    ("med42-70b.Q5_0.gguf", "Q5_0", "single", 1, 1),
    ("med42-70b.Q6_K.gguf-split-a", "Q6_K", "byte-split", 1, None),
    ("med42-70b.Q8_0.gguf-split-b", "Q8_0", "byte-split", 2, None),
    ("Llama3-Med42-8B-Q5_K_S.gguf", "Q5_K_S", "single", 1, 1),
    ("Llama3-Med42-70B.Q4_K_M.gguf", "Q4_K_M", "single", 1, 1),
    ("model-q8_0-00001-of-00002.gguf", "Q8_0", "shard", 1, 2),
    ("Meta-Llama-3-70B-Instruct-Q4_K_M-00002-of-00003.gguf", "Q4_K_M", "shard", 2, 3),
    ("Q4_K_M/Med42-v2-70B-Q4_K_M-00001-of-00002.gguf", "Q4_K_M", "shard", 1, 2),
    ("Meta-Llama-3.1-8B-Instruct-IQ2_XXS.gguf", "IQ2_XXS", "single", 1, 1),
    ("Meta-Llama-3-8B-Instruct.IQ3_XS.gguf", "IQ3_XS", "single", 1, 1),
    ("Mistral-7B-Instruct-v0.3.IQ4_NL.gguf", "IQ4_NL", "single", 1, 1),
    ("llama-3-8b-IQ1_M.gguf", "IQ1_M", "single", 1, 1),
    ("ggml-model-f16.gguf", "F16", "single", 1, 1),
    ("ggml-model-q4_0.gguf", "Q4_0", "single", 1, 1),
    ("ggml-model-Q4_1.gguf", "Q4_1", "single", 1, 1),
    ("model.BF16.gguf", "BF16", "single", 1, 1),
    ("model-f32.gguf", "F32", "single", 1, 1),
    ("Phi-3-mini-4k-instruct-fp16.gguf", "F16", "single", 1, 1),
    ("qwen2-7b-instruct-q5_k_m.gguf", "Q5_K_M", "single", 1, 1),
    ("Qwen2.5-7B-Instruct-Q4_0_4_4.gguf", "Q4_0_4_4", "single", 1, 1),
    ("Llama-3.2-3B-Instruct-Q6_K_L.gguf", "Q6_K_L", "single", 1, 1),
    ("UD-Q4_K_XL/DeepSeek-R1-UD-Q4_K_XL-00001-of-00008.gguf", "Q4_K_XL", "shard", 1, 8),
    ("bitnet-b1.58-2B-TQ1_0.gguf", "TQ1_0", "single", 1, 1),
    ("gpt-oss-20b-MXFP4.gguf", "MXFP4", "single", 1, 1),
    ("model-Q4_K_M-imat.gguf", "Q4_K_M", "single", 1, 1),  # the last quant-looking token
    ("model-F16-Q8_0.gguf", "Q8_0", "single", 1, 1),
    ("model.gguf", None, "single", 1, 1),
    ("Qwen2-7B.gguf", None, "single", 1, 1),  # "Q" glued to letters is not a quant
    ("tinyllama-1.1b-chat.q2.gguf", None, "single", 1, 1),  # "Q2" alone is not a type
    ("model-00001-of-00002.gguf", None, "shard", 1, 2),
]


@pytest.mark.parametrize(("name", "quant", "kind", "part", "parts"), NAMES)
def test_parse_gguf_name(name: str, quant: str | None, kind: str, part: int, parts: int | None) -> None:
    parsed = hub.parse_gguf_name(name)
    assert parsed is not None
    assert (parsed.quant, parsed.kind, parsed.part, parsed.parts) == (quant, kind, part, parts)
    assert parsed.path == name and hub.quant_of(name) == quant


@pytest.mark.parametrize(
    "name",
    [
        "README.md",
        "config.json",
        "model.safetensors",
        "med42.Q4_K_M.gguf.sha256",
        "imatrix.dat",
        "model.Q4_K_M.bin",
    ],
)
def test_parse_non_gguf_names(name: str) -> None:
    assert hub.parse_gguf_name(name) is None and hub.quant_of(name) is None


def test_parse_groups_parts_of_one_model() -> None:
    a, b = (hub.parse_gguf_name(f"d/m.Q6_K.gguf-split-{c}") for c in "ab")
    s1, s2 = (hub.parse_gguf_name(f"m-Q6_K-0000{i}-of-00002.gguf") for i in (1, 2))
    other = hub.parse_gguf_name("m-Q6_K-00001-of-00003.gguf")
    assert a and b and s1 and s2 and other
    assert a.group == b.group == "d/m.Q6_K.gguf" and s1.group == s2.group != other.group != a.group


# --------------------------------------------------------------------------- 3. auth and not-found errors


def test_private_repo_without_token_needs_login(fake: FakeHub) -> None:
    fake.add("org/private", {"p.Q4_K_M.gguf": _bytes("p", 1000)}, private=True)
    with pytest.raises(AuthenticationRequiredError) as e:
        hub.download("org/private")
    msg = str(e.value)
    assert "hf auth login" in msg and "HF_TOKEN" in msg and "org/private" in msg and "401" in msg
    assert isinstance(e.value, DownloadError) and isinstance(e.value, PermissionError)
    assert isinstance(e.value.__cause__, hf_errors.HfHubHTTPError)
    assert e.value.__cause__.response.status_code == 401
    # Negative control: with a token that has access, the same call works.
    [p] = hub.download("org/private", token=GRANTED)
    assert p.read_bytes() == served(fake, "p.Q4_K_M.gguf", "org/private")


def test_gated_repo_401_403_and_granted(fake: FakeHub) -> None:
    fake.add("m42-health/gated", {"g.Q4_K_M.gguf": _bytes("g", 1000)}, gated=True)
    with pytest.raises(AuthenticationRequiredError) as e401:
        hub.download("m42-health/gated")
    assert "hf auth login" in str(e401.value) and "HF_TOKEN" in str(e401.value)
    assert "https://huggingface.co/m42-health/gated" in str(e401.value)

    with pytest.raises(AccessDeniedError) as e403:
        hub.download("m42-health/gated", token=DENIED)
    msg = str(e403.value)
    assert "https://huggingface.co/m42-health/gated" in msg and "accept" in msg and "license" in msg
    assert isinstance(e403.value, DownloadError) and isinstance(
        e403.value.__cause__, hf_errors.GatedRepoError
    )
    assert fake.file_gets() == []

    with pytest.raises(AuthenticationRequiredError, match="rejected the token"):
        hub.download("m42-health/gated", token="hf_expired")

    [p] = hub.download("m42-health/gated", token=GRANTED)
    assert p.read_bytes() == served(fake, "g.Q4_K_M.gguf", "m42-health/gated")
    heads = fake.requests("hub", "HEAD")
    assert heads[-1].headers.get("authorization") == f"Bearer {GRANTED}"


def test_missing_repo_revision_and_file(fake: FakeHub) -> None:
    with pytest.raises(RepositoryNotFoundError) as e:
        hub.download("org/does-not-exist", token=GRANTED)
    assert "org/does-not-exist" in str(e.value) and isinstance(e.value, LookupError)
    assert isinstance(e.value.__cause__, hf_errors.RepositoryNotFoundError)

    with pytest.raises(RepositoryNotFoundError, match="v9-nope") as e:
        hub.download(MED42, revision="v9-nope")
    assert isinstance(e.value.__cause__, hf_errors.RevisionNotFoundError)

    # Not in the listing: refused before any request for the file.
    with pytest.raises(RemoteFileNotFoundError, match=r"med42-70b\.Q4_K_M\.gguff") as e:
        hub.download(MED42, filename="med42-70b.Q4_K_M.gguff")
    assert isinstance(e.value, LookupError) and fake.requests("hub", "HEAD") == []

    # Listed, but gone when fetched: the Hub's 404 EntryNotFound.
    fake.gone.add("med42-70b.Q5_0.gguf")
    with pytest.raises(RemoteFileNotFoundError, match=r"med42-70b\.Q5_0\.gguf") as e:
        hub.download(MED42, quant="Q5_0")
    assert isinstance(e.value.__cause__, hf_errors.EntryNotFoundError)
    # Negative control: a commit hash is a valid revision.
    [p] = hub.download(MED42, quant="Q5_K_S", revision=fake.repos[MED42].sha)
    assert p.read_bytes() == served(fake, "med42-70b.Q5_K_S.gguf")


# --------------------------------------------------------------------------- 4. interrupted transfers


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub sleeps 1 s before each resume attempt; skip the waits."""
    monkeypatch.setattr(time, "sleep", lambda s: None)


def _ranges(fake: FakeHub) -> list[str]:
    return [s.headers["range"] for s in fake.requests("cdn", "GET") if "range" in s.headers]


def test_connection_cut_once_is_resumed_with_a_range_request(fake: FakeHub, no_retry_wait: None) -> None:
    name = "med42-70b.Q4_K_M.gguf"
    fake.cut_after[name] = 100_000
    [p] = hub.download(MED42, quant="Q4_K_M")
    assert p.read_bytes() == served(fake, name)
    [rng] = _ranges(fake)
    m = re.fullmatch(r"bytes=(\d+)-", rng)
    assert m and 0 < int(m[1]) <= 100_000  # resumed, not restarted
    assert len(fake.requests("cdn", "GET")) == 2


def test_network_lost_mid_file_raises_and_a_second_call_completes(fake: FakeHub, no_retry_wait: None) -> None:
    name = "med42-70b.Q6_K.gguf-split-a"
    fake.cut_after[name] = 60_000
    fake.down_after_cut = True
    with pytest.raises(DownloadError) as e:
        hub.download(MED42, quant="Q6_K")
    msg = str(e.value)
    assert name in msg and "interrupted" in msg and "run the same command again" in msg.lower()
    assert type(e.value) is DownloadError and e.value.__cause__ is not None
    # huggingface_hub tried to resume from what it had before giving up.
    assert _ranges(fake) and all(re.fullmatch(r"bytes=[1-9]\d*-", r) for r in _ranges(fake))
    # Nothing at the final paths: no truncated file can be mistaken for the model.
    snapshots = storage(fake) / "snapshots"
    assert not any(p.name.startswith("med42-70b.Q6_K") for p in snapshots.rglob("*"))
    sha = hashlib.sha256(served(fake, name)).hexdigest()
    assert not (storage(fake) / "blobs" / sha).exists()
    kept = list((storage(fake) / "blobs").glob("*.incomplete"))
    assert ("partial download is kept" in msg) == bool(kept)

    fake.down = False
    fake.reset_log()
    paths = hub.download(MED42, quant="Q6_K")
    assert [p.name for p in paths] == [name, "med42-70b.Q6_K.gguf-split-b"]
    assert [p.read_bytes() for p in paths] == [served(fake, p.name) for p in paths]
    if kept:  # huggingface_hub versions that keep partial files resume them across runs
        assert _ranges(fake)


# --------------------------------------------------------------------------- 5. offline and unreachable Hub


def test_offline_uses_the_cache_without_any_request(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    q4 = hub.download(MED42, quant="Q4_K_M")
    q6 = hub.download(MED42, quant="Q6_K")
    fake.reset_log()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    gate: list[list[str]] = []
    assert hub.download(MED42, quant="Q4_K_M", before_download=gate.append) == q4
    assert hub.download(MED42, quant="q6_k") == q6
    assert hub.download(MED42, filename="med42-70b.Q6_K.gguf-split-a") == q6
    assert gate == [["med42-70b.Q4_K_M.gguf"]]  # the license hook still sees the files
    with pytest.raises(DownloadError) as e:
        hub.download(MED42, quant="Q5_K_M")  # on the Hub, but never downloaded
    assert "Q4_K_M, Q6_K" in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
    with pytest.raises(DownloadError, match="not in the local cache"):
        hub.download("org/never-downloaded")
    assert fake.requests() == []  # not a single request reached the server


def test_offline_with_an_empty_cache(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError) as e:
        hub.download(MED42)
    msg = str(e.value)
    assert MED42 in msg and "not in the local cache" in msg and "online once" in msg
    assert fake.requests() == []


def test_unreachable_hub_falls_back_to_the_cache(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    q6 = hub.download(MED42, quant="Q6_K")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    _point_client_at(monkeypatch, dead)
    assert hub.download(MED42, quant="Q6_K") == q6
    with pytest.raises(DownloadError, match="could not be reached") as e:
        hub.download(MED42, quant="Q2_K")
    assert e.value.__cause__ is not None


def test_hub_server_error_falls_back_to_the_cache(fake: FakeHub) -> None:
    q4 = hub.download(MED42, quant="Q4_K_M")
    fake.api_status = 503
    assert hub.download(MED42, quant="Q4_K_M") == q4
    with pytest.raises(DownloadError, match="HTTP 503") as e:
        hub.download(MED42, quant="Q2_K")  # not cached
    assert "Q4_K_M" in str(e.value) and isinstance(e.value.__cause__, hf_errors.HfHubHTTPError)


# --------------------------------------------------------------------------- 6. the license hook


def test_before_download_raising_downloads_nothing(fake: FakeHub) -> None:
    seen: list[list[str]] = []

    def refuse(files: list[str]) -> None:
        seen.append(files)
        raise PermissionError("license not accepted")

    with pytest.raises(PermissionError, match="license not accepted"):
        hub.download(MED42, quant="Q6_K", before_download=refuse)
    assert seen == [["med42-70b.Q6_K.gguf-split-a", "med42-70b.Q6_K.gguf-split-b"]]
    assert fake.file_gets() == [] and fake.requests("hub", "HEAD") == []
    assert not (storage(fake) / "snapshots").exists() or not any(
        (storage(fake) / "snapshots").rglob("*.gguf*")
    )
    # Negative control: a hook that returns lets the download proceed.
    paths = hub.download(MED42, quant="Q6_K", before_download=seen.append)
    assert len(paths) == 2 and len(fake.file_gets()) == 2 and seen[-1] == seen[0]


# --------------------------------------------------------------------------- 7. disk space


def _fake_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> list[Path]:
    probed: list[Path] = []

    def disk_usage(path: Any) -> Any:
        probed.append(Path(path))
        return SimpleNamespace(total=10 * free + 10**9, used=10**9, free=free)

    monkeypatch.setattr(hub.shutil, "disk_usage", disk_usage)
    return probed


def test_insufficient_disk_space_is_raised_before_any_download(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    need = sum(len(served(fake, f"med42-70b.Q6_K.gguf-split-{c}")) for c in "ab")
    probed = _fake_disk(monkeypatch, free=need - 1)
    gate: list[list[str]] = []
    with pytest.raises(InsufficientDiskSpaceError) as e:
        hub.download(MED42, quant="Q6_K", before_download=gate.append)
    msg = str(e.value)
    assert "GiB" in msg and str(Path(hf_constants.HF_HUB_CACHE)) in msg and "HF_HOME" in msg
    assert isinstance(e.value, OSError) and isinstance(e.value, Med42Error)
    assert fake.file_gets() == [] and gate == []
    assert probed and all(p.exists() for p in probed)  # the nearest existing parent of the cache

    # Exactly enough is enough.
    _fake_disk(monkeypatch, free=need)
    paths = hub.download(MED42, quant="Q6_K")
    assert [p.read_bytes() for p in paths] == [served(fake, p.name) for p in paths]
    # Files already in the cache need no space: a full disk does not block them.
    _fake_disk(monkeypatch, free=0)
    assert hub.download(MED42, quant="Q6_K") == paths
    # ... but a file not yet downloaded does.
    with pytest.raises(InsufficientDiskSpaceError):
        hub.download(MED42, quant="Q4_K_M")


def test_gib_formatting() -> None:
    fmt: Callable[[int], str] = hub._gib
    assert fmt(42 * 2**30 + 2**29) == "42.50 GiB"
    assert fmt(250 * 2**30) == "250 GiB"
    assert fmt(300_000) == "0.00028 GiB"


# --------------------------------------------------------------------------- 8. Model.from_pretrained


def test_from_pretrained_gates_med42_then_loads_split_parts_in_place(
    fake: FakeHub, tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real GGUF published the way the Med42 Q6_K file is (two byte-split parts): nothing is
    downloaded before the license is accepted; afterwards the parts load, unjoined, to the same
    logits as the whole file."""
    import med42_rs
    import numpy as np

    monkeypatch.setenv("MED42_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("MED42_ACCEPT_LICENSE", raising=False)
    whole = Path(tiny("Q8_0")).read_bytes()
    cut = len(whole) // 2 + 7
    repo_id = "TheBloke/med42-tiny-GGUF"
    fake.add(
        repo_id,
        {
            "med42-tiny.Q6_K.gguf-split-a": whole[:cut],
            "med42-tiny.Q6_K.gguf-split-b": whole[cut:],
            "med42-tiny.Q8_0.gguf": whole,
            "README.md": b"# tiny\n",
        },
    )
    with pytest.raises(med42_rs.LicenseNotAcceptedError, match="MED42_ACCEPT_LICENSE=med42"):
        med42_rs.Model.from_pretrained(repo_id, quant="Q6_K")
    assert fake.file_gets() == []  # no weights downloaded before acceptance
    m = med42_rs.Model.from_pretrained(repo_id, quant="Q6_K", accept_license=True)
    ref = med42_rs.Model.load(tiny("Q8_0"))
    ids = [1, 40, 7, 300]
    np.testing.assert_array_equal(m.logits(ids), ref.logits(ids))
    snap = storage(fake, repo_id) / "snapshots" / fake.repos[repo_id].sha
    assert sorted(p.name for p in snap.iterdir()) == [
        "med42-tiny.Q6_K.gguf-split-a",
        "med42-tiny.Q6_K.gguf-split-b",
    ]  # the parts only: no joined copy, and the Q8_0 file was not fetched


def test_from_pretrained_of_an_ungated_model_needs_no_license(
    fake: FakeHub, tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import med42_rs

    monkeypatch.setenv("MED42_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("MED42_ACCEPT_LICENSE", raising=False)
    fake.add("someone/tiny-llama-GGUF", {"tiny-llama.Q8_0.gguf": Path(tiny("Q8_0")).read_bytes()})
    m = med42_rs.Model.from_pretrained("someone/tiny-llama-GGUF", quant="Q8_0", accept_license=False)
    assert m.config["n_layer"] == 2


def test_cli_download_prints_the_paths_after_the_license_check(
    fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from med42_rs.cli import main

    monkeypatch.setenv("MED42_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("MED42_ACCEPT_LICENSE", raising=False)
    assert main(["download", MED42, "--quant", "Q6_K"]) == 1  # no terminal, not accepted
    assert "license" in capsys.readouterr().err and fake.file_gets() == []
    assert main(["download", MED42, "--quant", "Q6_K", "--accept-license"]) == 0
    out = capsys.readouterr().out.split()
    assert [Path(p).name for p in out] == ["med42-70b.Q6_K.gguf-split-a", "med42-70b.Q6_K.gguf-split-b"]
    assert [Path(p).read_bytes() for p in out] == [served(fake, Path(p).name) for p in out]
    assert main(["download", MED42, "--quant", "Q7_X"]) == 1
    assert "Q4_K_M" in capsys.readouterr().err  # the available quants are listed


def test_download_is_gated_by_default(fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a before_download hook, hub.download applies the license gate itself, judged on the
    repository id and the file names (a Med42 file in a neutrally named repository is gated too)."""
    import med42_rs

    monkeypatch.setenv("MED42_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("MED42_ACCEPT_LICENSE", raising=False)
    with pytest.raises(med42_rs.LicenseNotAcceptedError):
        hub.download(MED42, quant="Q4_K_M")
    fake.add("someone/medical-gguf", {"Llama3-Med42-8B.Q4_K_M.gguf": b"x" * 1000})
    with pytest.raises(med42_rs.LicenseNotAcceptedError):
        hub.download("someone/medical-gguf", quant="Q4_K_M")
    assert fake.file_gets() == []
    fake.add("someone/other-gguf", {"tiny.Q4_K_M.gguf": b"y" * 1000})
    assert hub.download("someone/other-gguf", quant="Q4_K_M")[0].read_bytes() == b"y" * 1000
