"""The Med42 license gate: nothing loads Med42 weights until the license is accepted, and no code path
hangs waiting for input that cannot come. Driven through the API, a real pseudo-terminal
(pexpect), closed standard input, the environment variable and the ``med42 license`` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ggufgen as g
import med42_rs
import pexpect
import pytest
from med42_rs import license as L

MED42 = shutil.which("med42") or str(Path(sys.executable).parent / "med42")


@pytest.fixture(autouse=True)
def private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "config"
    monkeypatch.setenv("MED42_CONFIG_DIR", str(d))
    monkeypatch.delenv("MED42_ACCEPT_LICENSE", raising=False)
    return d


@pytest.fixture(scope="module")
def med42_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama GGUF that says it is Med42 only in its metadata (neutral file name)."""
    cfg = g.TinyConfig(name="m42-health_med42-70b", n_layer=1)
    return g.write_llama_gguf(tmp_path_factory.mktemp("gated") / "model.gguf", cfg)


@pytest.fixture(scope="module")
def header_only_med42(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Valid header but a config the weights do not satisfy (2 blocks declared, 1 written): a
    full load fails with a tensor error, so getting the license error instead shows the gate runs
    on the header, before any weight is used."""
    cfg = g.TinyConfig(name="med42-70b", n_layer=1)
    w = g.random_weights(cfg)
    cfg2 = g.TinyConfig(name="med42-70b", n_layer=2)
    return g.write_llama_gguf(tmp_path_factory.mktemp("gated2") / "m.gguf", cfg2, weights=w)


def _env(config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MED42_ACCEPT_LICENSE"}
    env["MED42_CONFIG_DIR"] = str(config)
    env.update(extra)
    return env


LOAD = "import sys, med42_rs; med42_rs.Model.load(sys.argv[1]); print('LOADED')"


def test_recognition() -> None:
    assert L.license_for(repo_id="TheBloke/med42-70B-GGUF") is L.MED42_LICENSE
    assert L.license_for(repo_id="m42-health/Llama3-Med42-8B") is L.MED42_LICENSE
    assert L.license_for(paths=["/x/med42-70b.Q4_K_M.gguf"]) is L.MED42_LICENSE
    assert L.license_for(metadata={"general.license.name": "med42"}) is L.MED42_LICENSE
    # negative controls: other models are not gated
    assert L.license_for(repo_id="HuggingFaceTB/SmolLM2-135M-Instruct") is None
    assert L.license_for(paths=["/x/llama-2-7b.Q4_0.gguf"], metadata={"general.name": "LLaMA v2"}) is None


def test_ungated_model_loads_without_acceptance(smollm2: Path) -> None:
    md, _, _ = med42_rs._native.read_header([str(smollm2)])
    assert md["general.license"] == "apache-2.0"
    med42_rs.Model.load(smollm2, accept_license=False)  # no error, nothing stored
    assert not L.accepted()


def test_stdin_closed_raises_and_lists_the_ways(med42_file: Path, private_config: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(med42_file)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=_env(private_config),
    )  # fmt: skip
    assert out.returncode != 0 and "LOADED" not in out.stdout
    assert "LicenseNotAcceptedError" in out.stderr
    for way in (
        "med42 license accept",
        "accept_license=True",
        "MED42_ACCEPT_LICENSE=med42",
        L.MED42_LICENSE.url,
    ):
        assert way in out.stderr, way


def test_gate_runs_on_the_header_before_weights(header_only_med42: Path) -> None:
    with pytest.raises(med42_rs.LicenseNotAcceptedError):
        med42_rs.Model.load(header_only_med42)
    # control: once accepted, the same file gets to the weights and fails there
    with pytest.raises(med42_rs.InvalidModelFileError, match=r"blk\.1"):
        med42_rs.Model.load(header_only_med42, accept_license=True)


def test_pty_yes_accepts_and_stores(med42_file: Path, private_config: Path) -> None:
    child = pexpect.spawn(
        sys.executable, ["-c", LOAD, str(med42_file)], env=_env(private_config), encoding="utf-8", timeout=60
    )
    child.expect(r"huggingface\.co/spaces/m42-health/License")
    child.expect("Type 'yes' to accept")
    child.sendline("yes")
    child.expect("LOADED")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    rec = json.loads((private_config / "licenses.json").read_text())
    assert rec["med42"]["version"] == L.MED42_LICENSE.version and rec["med42"]["how"] == "prompt"
    # now accepted: a second load does not ask, even without a terminal
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(med42_file)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=_env(private_config),
    )  # fmt: skip
    assert out.returncode == 0 and "LOADED" in out.stdout, out.stderr


def test_pty_no_refuses(med42_file: Path, private_config: Path) -> None:
    child = pexpect.spawn(
        sys.executable, ["-c", LOAD, str(med42_file)], env=_env(private_config), encoding="utf-8", timeout=60
    )
    child.expect("Type 'yes' to accept")
    child.sendline("no")
    child.expect("LicenseNotAcceptedError")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus != 0
    assert not (private_config / "licenses.json").exists()


def test_environment_variable(med42_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MED42_ACCEPT_LICENSE", "llama2")  # wrong id
    with pytest.raises(med42_rs.LicenseNotAcceptedError, match="'llama2', which does not name"):
        med42_rs.Model.load(med42_file)
    monkeypatch.setenv("MED42_ACCEPT_LICENSE", "llama2, MED42")  # a list, any case
    med42_rs.Model.load(med42_file)
    assert L.stored() is None  # the environment accepts without writing anything


def test_older_stored_version_asks_again(med42_file: Path, private_config: Path) -> None:
    private_config.mkdir(parents=True)
    (private_config / "licenses.json").write_text(json.dumps({"med42": {"version": "0"}}))
    assert not L.accepted()
    with pytest.raises(med42_rs.LicenseNotAcceptedError):
        med42_rs.Model.load(med42_file)
    child = pexpect.spawn(
        sys.executable, ["-c", LOAD, str(med42_file)], env=_env(private_config), encoding="utf-8", timeout=60
    )
    child.expect("You accepted version 0 of this license")
    child.expect("Type 'yes' to accept")
    child.sendline("yes")
    child.expect("LOADED")
    child.expect(pexpect.EOF)
    child.close()
    assert (L.stored() or {}).get("version") == L.MED42_LICENSE.version


def test_accept_license_argument(med42_file: Path) -> None:
    with pytest.raises(med42_rs.LicenseNotAcceptedError):
        med42_rs.Model.load(med42_file, accept_license=False)
    m = med42_rs.Model.load(med42_file, accept_license=True)
    assert m.config["n_layer"] == 1
    assert L.accepted() and (L.stored() or {}).get("how") == "api"


def test_license_command(med42_file: Path, private_config: Path) -> None:
    env = _env(private_config)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MED42, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=env
        )

    assert run("license", "status").returncode == 1
    show = run("license", "show")
    assert show.returncode == 0 and L.MED42_LICENSE.url in show.stdout
    no_tty = run("license", "accept")
    assert no_tty.returncode == 2 and "--yes" in no_tty.stderr  # never waits on a closed stdin
    assert run("license", "accept", "--yes").returncode == 0
    st = run("license", "status")
    assert st.returncode == 0 and "accepted (version 1" in st.stdout
    gen = run("generate", "-m", str(med42_file), "-n", "2", "hello")
    assert gen.returncode == 0, gen.stderr
    assert run("license", "revoke").returncode == 0
    assert run("license", "status").returncode == 1
    gen = run("generate", "-m", str(med42_file), "-n", "2", "hello")
    assert gen.returncode == 1 and "license accept" in gen.stderr and "Traceback" not in gen.stderr
    # in a terminal, `med42 license accept` asks
    child = pexpect.spawn(MED42, ["license", "accept"], env=env, encoding="utf-8", timeout=60)
    child.expect("Type 'yes' to accept")
    child.sendline("yes")
    child.expect("accepted .* stored in")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and L.accepted()
    # info reads the header only: it describes a gated file without asking, and says it is gated
    assert run("license", "revoke").returncode == 0
    info = run("info", str(med42_file))
    assert info.returncode == 0 and "must be accepted" in info.stdout
