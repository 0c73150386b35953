"""The ``med42`` console script, driven in a real pseudo-terminal."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

MED42 = shutil.which("med42") or str(Path(sys.executable).parent / "med42")


def test_info_describes_the_file(smollm2: Path) -> None:
    out = subprocess.run([MED42, "info", str(smollm2)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "architecture  llama" in out.stdout
    assert "Q4_1" in out.stdout and "Q8_0" in out.stdout
    assert "49152 tokens" in out.stdout and "8192 trained" in out.stdout


def test_info_on_a_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model at all")
    out = subprocess.run([MED42, "info", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "not a GGUF file" in out.stderr and "Traceback" not in out.stderr


def test_generate_streams_an_answer(smollm2: Path) -> None:
    child = pexpect.spawn(
        MED42,
        ["generate", "-m", str(smollm2), "--temperature", "0", "-n", "40",
         "What is the capital of France?"],
        encoding="utf-8", timeout=120,
    )  # fmt: skip
    child.expect("Paris")
    child.expect(r"\[(eos|length)\] prompt \d+ tok")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def _default_sigint() -> None:
    # Runs in the child before exec: a suite started from a background job (`nohup ... &`, cron)
    # has SIGINT ignored, which the child would inherit, and then Ctrl-C would do nothing.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_chat_ctrl_c_cancels_the_answer_and_ctrl_d_exits(smollm2: Path) -> None:
    child = pexpect.spawn(
        MED42,
        ["chat", "-m", str(smollm2), "--temperature", "0", "-n", "300", "--n-ctx", "2048"],
        encoding="utf-8", timeout=120, preexec_fn=_default_sigint,
    )  # fmt: skip
    child.expect(">>> ")
    child.sendline("Write a very long story about a hospital, with many chapters.")
    child.expect_exact("chapters.\r\n")  # the terminal's echo of the line, not yet the answer
    child.expect(r"\w+ \w+ \w+")  # the answer is streaming
    child.sendintr()  # Ctrl-C
    child.expect(r"\[cancelled\]")
    child.expect(">>> ")
    # the session still works and keeps going
    child.sendline("What is the capital of France?")
    child.expect(r"\[(eos|length)\]", timeout=300)
    child.expect(">>> ")
    child.sendeof()  # Ctrl-D
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("args", [["generate"], ["chat", "-m"]])
def test_usage_errors_exit_nonzero(args: list[str]) -> None:
    out = subprocess.run([MED42, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage: med42" in out.stderr
