"""``--model REPO[:QUANT]`` and the default model of the ``med42`` command, run as real processes
against the local Hub server of test_hub.py (the real huggingface_hub client, ``HF_ENDPOINT`` on
loopback): download with a progress bar, the cache (offline too), and the license gate before any
weight byte crosses the wire."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

pytest.importorskip("huggingface_hub")

from med42_rs import cli
from med42_rs.errors import LicenseNotAcceptedError
from med42_rs.license import MED42_LICENSE, ensure_accepted
from test_hub import MED42 as DEFAULT_REPO
from test_hub import FakeHub, storage
from test_hub import fake as fake  # the local Hub fixture

MED42 = shutil.which("med42") or str(Path(sys.executable).parent / "med42")
TINY_REPO = "someone/tiny-llama-GGUF"
GATED_REPO = "someone/med42-tiny-GGUF"
GEN = ["--temperature", "0", "-n", "12"]


def run(
    args: list[str], env: dict[str, str | None] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``med42 ARGS`` with the test's environment (which points huggingface_hub at the local Hub)."""
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.run(
        [MED42, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=full, cwd=cwd,
        timeout=300,
    )  # fmt: skip


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weight_gets(fake: FakeHub, data: bytes) -> list[str]:
    """The requests that transferred ``data``'s bytes (CDN GETs of its blob)."""
    return [s.path for s in fake.file_gets() if s.path.endswith(sha(data))]


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def license_message() -> str:
    """LicenseNotAcceptedError's message when nothing has been accepted (the oracle of the CLI's)."""
    with pytest.raises(LicenseNotAcceptedError) as e:
        ensure_accepted(MED42_LICENSE, accept_license=False)
    return str(e.value)


@pytest.fixture
def unaccepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stored acceptance and no MED42_ACCEPT_LICENSE, for this test and its processes."""
    monkeypatch.setenv("MED42_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("MED42_ACCEPT_LICENSE", raising=False)


def test_repo_quant_downloads_then_offline_resolves_from_the_cache(
    fake: FakeHub, tiny: Callable[[str], Path]
) -> None:
    q8, q4 = tiny("Q8_0").read_bytes(), tiny("Q4_0").read_bytes()
    fake.add(TINY_REPO, {"tiny-llama.Q8_0.gguf": q8, "tiny-llama.Q4_0.gguf": q4, "README.md": b"# tiny\n"})
    expected = run(["generate", "--model", str(tiny("Q8_0")), *GEN, "hi"])  # the same file, given as a path
    assert expected.returncode == 0 and expected.stdout.strip(), expected.stderr

    got = run(["generate", "--model", f"{TINY_REPO}:Q8_0", *GEN, "hi"])
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout
    assert len(weight_gets(fake, q8)) == 1 and weight_gets(fake, q4) == []  # only the chosen quant
    cached = storage(fake, TINY_REPO) / "snapshots" / fake.repos[TINY_REPO].sha / "tiny-llama.Q8_0.gguf"
    assert cached.read_bytes() == q8 and str(cached) in got.stderr  # "loaded <cached path>"

    fake.reset_log()
    offline = run(["generate", "--model", f"{TINY_REPO}:Q8_0", *GEN, "hi"], {"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == expected.stdout
    assert fake.requests() == []  # not one request: the cache answered

    # Negative control: offline, a quant that was never downloaded is not found (and says why).
    missing = run(["generate", "--model", f"{TINY_REPO}:Q4_0", *GEN, "hi"], {"HF_HUB_OFFLINE": "1"})
    assert missing.returncode == 1 and missing.stdout == ""
    assert "HF_HUB_OFFLINE" in one_error_line(missing.stderr) and fake.requests() == []


def test_gated_repo_fails_before_any_weight_byte_then_downloads_once_accepted(
    fake: FakeHub, tiny: Callable[[str], Path], unaccepted: None
) -> None:
    q8 = tiny("Q8_0").read_bytes()
    fake.add(GATED_REPO, {"med42-tiny.Q8_0.gguf": q8})
    refused = run(["generate", "--model", f"{GATED_REPO}:Q8_0", *GEN, "hi"])
    assert refused.returncode == 1 and refused.stdout == ""
    assert one_error_line(refused.stderr) == f"error: {license_message()}"
    assert fake.requests(origin="hub")  # the Hub was asked for the listing ...
    assert weight_gets(fake, q8) == [] and fake.file_gets() == []  # ... but no weight byte was fetched

    accepted = run(["generate", "--model", f"{GATED_REPO}:Q8_0", *GEN, "--accept-license", "hi"])
    assert accepted.returncode == 0, accepted.stderr
    assert len(weight_gets(fake, q8)) == 1  # the negative control: once accepted, it is fetched
    assert accepted.stdout == run(["generate", "--model", str(tiny("Q8_0")), *GEN, "hi"]).stdout


def test_default_model_is_med42_q4_k_m_from_the_hub(
    fake: FakeHub, tiny: Callable[[str], Path], unaccepted: None
) -> None:
    """`med42 generate "question"` with no --model: the default repository, served under its own
    name, gives its Q4_K_M file, after the license gate."""
    q4km = tiny("Q4_K_M").read_bytes()
    whole = tiny("Q6_K").read_bytes()
    fake.add(
        DEFAULT_REPO,
        {
            "README.md": b"# Med42 70B - GGUF\n",
            "med42-70b.Q4_K_M.gguf": q4km,
            "med42-70b.Q6_K.gguf-split-a": whole[:1000],
            "med42-70b.Q6_K.gguf-split-b": whole[1000:],
        },
    )
    question = "What are the symptoms of diabetes ?"
    refused = run(["generate", *GEN, question])
    assert refused.returncode == 1
    assert one_error_line(refused.stderr) == f"error: {license_message()}"
    assert fake.file_gets() == []

    got = run(["generate", *GEN, question], {"MED42_ACCEPT_LICENSE": "med42"})
    assert got.returncode == 0, got.stderr
    assert len(weight_gets(fake, q4km)) == 1 and len(fake.file_gets()) == 1  # Q4_K_M only
    assert got.stdout == run(["generate", "--model", str(tiny("Q4_K_M")), *GEN, question]).stdout
    assert "med42-70b.Q4_K_M.gguf" in got.stderr

    # `--model REPO` alone also means Q4_K_M; `REPO:Q6_K` brings both byte-split parts.
    fake.reset_log()
    same = run(["generate", "--model", DEFAULT_REPO, *GEN, question], {"MED42_ACCEPT_LICENSE": "med42"})
    assert same.stdout == got.stdout and fake.file_gets() == []
    q6 = run(["generate", "-m", f"{DEFAULT_REPO}:Q6_K", *GEN, question], {"MED42_ACCEPT_LICENSE": "med42"})
    assert q6.returncode == 0, q6.stderr
    assert len(fake.file_gets()) == 2 and "(+1 parts)" in q6.stderr
    assert q6.stdout == run(["generate", "--model", str(tiny("Q6_K")), *GEN, question]).stdout


def test_default_model_on_a_terminal_asks_for_the_license_before_downloading(
    fake: FakeHub, tiny: Callable[[str], Path], unaccepted: None
) -> None:
    """The main job as a new user types it, in a real terminal: the license question, then the
    download with its progress bar, then the answer."""
    q4km = tiny("Q4_K_M").read_bytes()
    fake.add(DEFAULT_REPO, {"med42-70b.Q4_K_M.gguf": q4km})
    question = "What are the symptoms of diabetes ?"

    def spawn() -> pexpect.spawn:
        return pexpect.spawn(MED42, ["generate", *GEN, question], encoding="utf-8", timeout=120)

    child = spawn()
    child.expect("Type 'yes' to accept: ")
    assert fake.file_gets() == []  # nothing fetched while the question is open
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "error: the Med42 License" in (child.before or "")
    assert fake.file_gets() == []

    child = spawn()
    child.expect("Type 'yes' to accept: ")
    assert fake.file_gets() == []
    child.sendline("yes")
    child.expect("License accepted")
    child.expect("100%")  # the progress bar
    child.expect(r"\[(eos|length)\] prompt \d+ tok")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and len(weight_gets(fake, q4km)) == 1

    # Accepted and stored: the next run asks nothing and downloads nothing.
    fake.reset_log()
    again = run(["generate", *GEN, question])
    assert again.returncode == 0 and "accept" not in again.stderr and fake.file_gets() == []


def test_an_existing_path_wins_over_a_repo_id(
    fake: FakeHub, tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    spec = f"{TINY_REPO}:Q8_0"
    local = tmp_path / spec  # a file literally named like the repository
    local.parent.mkdir(parents=True)
    shutil.copy(tiny("Q8_0"), local)
    fake.add(TINY_REPO, {"tiny-llama.Q4_0.gguf": tiny("Q4_0").read_bytes()})  # no Q8_0 on the Hub
    here = run(["generate", "--model", spec, *GEN, "hi"], cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert fake.requests() == []  # the file was used; the Hub was not asked

    elsewhere = run(["generate", "--model", spec, *GEN, "hi"], cwd=tmp_path / "someone")  # no such file here
    line = one_error_line(elsewhere.stderr)
    assert elsewhere.returncode == 1 and "No 'Q8_0' GGUF file" in line
    assert "the quants available are: Q4_0" in line and f"Choose with --model {TINY_REPO}:QUANT" in line
    assert fake.requests(origin="hub")  # ... so it was a repository id

    # A missing GGUF file name is a missing file, never a repository, and says how to name one.
    fake.reset_log()
    gone = run(["generate", "--model", "models/med42-70b.Q4_K_M.gguf", "hi"], cwd=tmp_path)
    line = one_error_line(gone.stderr)
    assert gone.returncode == 1 and "no such file" in line and "OWNER/NAME:QUANT" in line
    assert fake.requests() == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, (DEFAULT_REPO, "Q4_K_M", None)),
        ("TheBloke/med42-70B-GGUF", (DEFAULT_REPO, "Q4_K_M", None)),
        ("TheBloke/med42-70B-GGUF:Q6_K", (DEFAULT_REPO, "Q6_K", None)),
        (
            "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1",
            ("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "Q4_1", None),
        ),
        ("org/repo:sub/model-q8_0.gguf", ("org/repo", None, "sub/model-q8_0.gguf")),
        ("org/repo:med42-70b.Q6_K.gguf-split-a", ("org/repo", None, "med42-70b.Q6_K.gguf-split-a")),
        ("models/med42-70b.Q4_K_M.gguf", None),  # a GGUF file name: a path
        ("med42-70b.Q4_K_M.gguf", None),
        ("./org/repo", None),
        ("/abs/org/repo", None),
        ("a/b/c", None),
        ("org/repo:", None),
    ],
)
def test_model_spec_parsing(spec: str | None, expected: tuple[str, str | None, str | None] | None) -> None:
    hub = cli._hub_model(spec)
    assert (None if hub is None else (hub.repo, hub.quant, hub.filename)) == expected


def test_info_reads_a_cached_repo_model_and_downloads_nothing(
    fake: FakeHub, tiny: Callable[[str], Path]
) -> None:
    q8 = tiny("Q8_0").read_bytes()
    fake.add(TINY_REPO, {"tiny-llama.Q8_0.gguf": q8})
    before = run(["info", f"{TINY_REPO}:Q8_0"])
    line = one_error_line(before.stderr)
    assert before.returncode == 1 and "not in the Hugging Face cache" in line
    assert f"med42 download {TINY_REPO} --quant Q8_0" in line
    assert fake.requests() == []  # info never touches the network

    dl = run(["download", f"{TINY_REPO}:Q8_0"])
    assert dl.returncode == 0, dl.stderr
    [path] = dl.stdout.split()
    assert Path(path).read_bytes() == q8

    fake.reset_log()
    after = run(["info", f"{TINY_REPO}:Q8_0"])
    assert after.returncode == 0, after.stderr
    assert f"file          {path} " in after.stdout and f"repository    {TINY_REPO}" in after.stdout
    assert after.stdout.replace(path, "F").replace(f"repository    {TINY_REPO}\n", "") == run(
        ["info", str(tiny("Q8_0"))]
    ).stdout.replace(str(tiny("Q8_0")), "F")  # the same report as for the file itself
    assert fake.requests() == []


def test_chat_takes_a_repo_model(fake: FakeHub, tiny: Callable[[str], Path]) -> None:
    fake.add(TINY_REPO, {"tiny-llama.Q8_0.gguf": tiny("Q8_0").read_bytes()})
    full = dict(os.environ)
    out = subprocess.run(
        [MED42, "chat", "-m", f"{TINY_REPO}:Q8_0", *GEN], input="hi\n", capture_output=True, text=True,
        env=full, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(">>> ") and out.stdout.count(">>> ") == 2  # one answer, then Ctrl-D
    assert "[length]" in out.stderr or "[eos]" in out.stderr


def test_without_huggingface_hub_a_hub_model_says_what_to_install(
    tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    """A plain install (no `hub` extra): a Hub model, the default one included, is one error line
    naming the extra; a file still works."""
    shadow = tmp_path / "no-hub"
    (shadow / "huggingface_hub").mkdir(parents=True)
    (shadow / "huggingface_hub" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'huggingface_hub'\", name='huggingface_hub')\n"
    )
    env: dict[str, str | None] = {"PYTHONPATH": str(shadow)}
    for args in (["generate", "hi"], ["generate", "-m", TINY_REPO, "hi"], ["info"], ["download"]):
        out = run(args, env)
        assert out.returncode == 1
        assert one_error_line(out.stderr) == (
            "error: Models from the Hugging Face Hub need huggingface_hub: pip install 'med42-rs[hub]'"
        )
    assert run(["generate", "-m", str(tiny("Q8_0")), *GEN, "hi"], env).returncode == 0
