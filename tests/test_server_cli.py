"""``med42 serve`` / ``python -m med42_rs.server`` as a process: the license gate at start-up
(no terminal, so only the non-interactive ways to accept), answers through the real ``openai``
client, SIGTERM with a stream in flight, and the chat page."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ggufgen as g
import med42_rs
import openai
import pytest
from test_server import GREEDY

MED42 = shutil.which("med42") or str(Path(sys.executable).parent / "med42")
SERVING = re.compile(r"serving (\S+) on (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def med42_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama GGUF that says it is Med42 in its metadata (so the license gates it)."""
    return g.write_llama_gguf(tmp_path_factory.mktemp("gated") / "model.gguf", g.TinyConfig(name="med42-70b"))


class Proc:
    """A server process and the lines it writes to stderr."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "med42_rs.server", "--port", "0", "--log-level", "warning", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.err.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def url(self, timeout: float = 60) -> str | None:
        """The address from the start-up line, once it answers; ``None`` if the process ended."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                return None
            m = SERVING.search(line)
            if m:
                break
        while True:  # the line comes just before uvicorn starts answering
            try:
                urllib.request.urlopen(m.group(2) + "/health", timeout=5).close()
                return m.group(2)
            except OSError:
                assert time.monotonic() < deadline, "".join(self.err)
                time.sleep(0.05)

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.p.wait(30)


def _env(config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MED42_ACCEPT_LICENSE", "MED42_API_KEY")}
    env["MED42_CONFIG_DIR"] = str(config)
    env.update(extra)
    return env


@pytest.fixture
def proc() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def test_serve_help_lists_the_options() -> None:
    out = subprocess.run([MED42, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for opt in (
        "--model",
        "--host",
        "--port",
        "--n-ctx",
        "--parallel",
        "--api-key",
        "--queue",
        "--accept-license",
    ):
        assert opt in out.stdout
    bad = subprocess.run([MED42, "serve", "--port", "70000"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--port" in bad.stderr


def test_gated_model_is_refused_without_acceptance(
    med42_file: Path, tmp_path: Path, proc: list[Proc]
) -> None:
    p = Proc(["--model", str(med42_file)], _env(tmp_path))
    proc.append(p)
    assert p.url(timeout=60) is None  # it never serves
    assert p.p.wait(30) == 1
    err = "".join(p.err)
    assert err.startswith("error:") and "MED42_ACCEPT_LICENSE=med42" in err and "med42 license accept" in err
    assert "Traceback" not in err


def test_gated_model_served_with_the_environment_acceptance(
    med42_file: Path, tmp_path: Path, proc: list[Proc]
) -> None:
    p = Proc(["--model", str(med42_file), "--parallel", "2"], _env(tmp_path, MED42_ACCEPT_LICENSE="med42"))
    proc.append(p)
    url = p.url()
    assert url is not None, "".join(p.err)
    props = json.loads(urllib.request.urlopen(url + "/props", timeout=10).read())
    assert props["license"]["id"] == "med42" and props["license"]["how"] == "MED42_ACCEPT_LICENSE=med42"
    assert "not ready for clinical use" in props["disclaimer"]
    assert props["model"]["id"] == "model" and props["parallel"] == 2
    # The tiny file has no chat template: the Med42 format, as Model.chat renders it.
    msgs = [{"role": "user", "content": "a patient with a dose"}]
    want = med42_rs.Model.load(med42_file, accept_license=True).chat(msgs, max_tokens=16, **GREEDY)
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
    r = client.chat.completions.create(model="model", messages=msgs, max_tokens=16, extra_body=GREEDY)
    assert r.choices[0].message.content == want.text
    assert r.usage is not None and r.usage.completion_tokens == len(want.token_ids)
    assert p.stop() == 0


def test_sigterm_with_a_stream_in_flight_exits_cleanly(
    smollm2: Path, tmp_path: Path, proc: list[Proc]
) -> None:
    p = Proc(["--model", str(smollm2), "--n-ctx", "2048", "--drain-timeout", "1"], _env(tmp_path))
    proc.append(p)
    url = p.url()
    assert url is not None, "".join(p.err)
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
    s = client.completions.create(model="m", prompt="The history of medicine", max_tokens=1500, stream=True)
    it = iter(s)
    next(it)
    t0 = time.monotonic()
    p.p.send_signal(signal.SIGTERM)
    got: list[Any] = []
    with pytest.raises((openai.APIError, openai.APIConnectionError, StopIteration)):
        while True:
            got.append(next(it))
    assert p.p.wait(30) == 0, "".join(p.err)
    assert time.monotonic() - t0 < 15
    assert len(got) < 1500
    assert "Traceback" not in "".join(p.err)
