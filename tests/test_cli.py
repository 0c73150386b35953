"""The ``med42`` console script, driven in a real pseudo-terminal."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
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
    child.expect(r"\[(eos|length)\] prompt (\d+) tok", timeout=300)
    first_turn = int(child.match.group(2))
    child.expect(">>> ")
    # the next turn reuses the KV cache of the conversation so far
    child.sendline("And of Germany?")
    child.expect(r"\[(eos|length)\] prompt (\d+) tok \((\d+) cached\)", timeout=300)
    assert int(child.match.group(3)) > first_turn
    child.expect(">>> ")
    child.sendeof()  # Ctrl-D
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("args", [["generate"], ["chat", "-m"]])
def test_usage_errors_exit_nonzero(args: list[str]) -> None:
    out = subprocess.run([MED42, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "usage: med42" in out.stderr


# --------------------------------------------------------------------------- rough edges

FRENCH = "Translate to French: The coffee is very good and the tea is excellent."  # answers with é
JAPANESE = "Write hello in Japanese."  # answers in kana and kanji, none of them in cp1252


def _generate(model: Path, prompt: str, *extra: str) -> list[str]:
    return [MED42, "generate", "-m", str(model), "--temperature", "0", "-n", "40", *extra, prompt]


@pytest.mark.parametrize(("encoding", "prompt"), [("ascii", FRENCH), ("cp1252", JAPANESE)])
def test_stdout_that_cannot_encode_the_answer_gets_all_of_it_with_replacements(
    smollm2: Path, tmp_path: Path, encoding: str, prompt: str
) -> None:
    utf8 = subprocess.run(
        _generate(smollm2, prompt), capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )  # fmt: skip
    assert utf8.returncode == 0, utf8.stderr
    answer = utf8.stdout.decode("utf-8")
    # The precondition that makes this test bite: the answer has characters `encoding` lacks.
    with pytest.raises(UnicodeEncodeError):
        answer.encode(encoding)
    redirected = tmp_path / "answer.txt"  # a file, as `med42 generate ... > answer.txt` makes it
    with redirected.open("wb") as f:
        out = subprocess.run(
            _generate(smollm2, prompt), stdout=f, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONIOENCODING": encoding}, timeout=300,
        )  # fmt: skip
    assert out.returncode == 0 and b"Traceback" not in out.stderr and b"error" not in out.stderr, out.stderr
    assert redirected.read_bytes() == answer.encode(encoding, "replace")  # the whole answer, ? for the rest
    assert b"[length]" in out.stderr or b"[eos]" in out.stderr


BAD_OPTIONS = [
    ("--n-ctx", "-5"),
    ("--n-ctx", "0"),
    ("--n-ctx", "lots"),
    ("--threads", "0"),
    ("--threads", "10000"),
    ("--max-tokens", "-1"),
    ("--max-tokens", "5.5"),
    ("--temperature", "-1"),
    ("--temperature", "nan"),
    ("--temperature", "inf"),
    ("--top-p", "2"),
    ("--top-p", "0"),
    ("--top-k", "-5"),
    ("--min-p", "1.5"),
    ("--repeat-penalty", "0"),
    ("--seed", "-1"),
    ("--seed", str(2**64)),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS)
def test_a_bad_option_value_is_a_usage_error(smollm2: Path, option: str, value: str) -> None:
    out = subprocess.run(
        [MED42, "generate", "-m", str(smollm2), f"{option}={value}", "hi"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"med42 generate: error: argument {option}") and value in last, last
    if option == "--threads" and value == "10000":
        cpus = len(os.sched_getaffinity(0))
        assert f"at most {cpus} (the {cpus} CPUs this process may use)" in last


def test_the_bounds_of_every_option_are_accepted(smollm2: Path) -> None:
    """The positive counterpart: each option at the edge of its range runs."""
    edges = [
        "--n-ctx=64", f"--threads={len(os.sched_getaffinity(0))}", "--max-tokens=3", "--temperature=0",
        "--top-p=1", "--top-k=0", "--min-p=0", "--repeat-penalty=1", f"--seed={2**64 - 1}",
    ]  # fmt: skip
    out = subprocess.run(
        [MED42, "generate", "-m", str(smollm2), *edges, "hi"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"\[(length|eos)\] prompt \d+ tok", out.stderr), out.stderr


def test_a_closed_pipe_ends_the_answer_quietly(smollm2: Path, tmp_path: Path) -> None:
    """`med42 generate ... | head -c 10` as a shell runs it: head's 10 bytes, nothing on stderr but
    the load line, and status 141 (128 + SIGPIPE, what the shell reports for cat in that place)."""
    cmd = shlex.join(_generate(smollm2, "Write a long story about a hospital.", "-n", "200"))

    def pipeline(reader: str) -> tuple[str, str, str]:
        script = f'{cmd} 2>"$1" | {reader}; echo " status ${{PIPESTATUS[0]}}"'
        out = subprocess.run(
            ["bash", "-c", script, "-", str(tmp_path / "err")], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        body, _, status = out.stdout.rpartition(" status ")
        return body, status.strip(), (tmp_path / "err").read_text()

    full, status, err = pipeline("cat")
    assert status == "0" and len(full) > 100 and "error" not in err  # the whole answer
    head, status, err = pipeline("head -c 10")
    assert head == full[:10]
    assert status == "141", err
    assert err.splitlines() == [next(ln for ln in err.splitlines() if ln.startswith("loaded "))], err
    assert "Broken pipe" not in err and "Exception ignored" not in err


def test_errors_are_one_line_and_med42_debug_shows_the_traceback(
    tiny: Callable[..., Path], tmp_path: Path
) -> None:
    import ggufgen

    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"<html>not a model</html>")
    bad_template = tiny("Q8_0", ggufgen.TinyConfig(extra_kv={"tokenizer.chat_template": "{% if %}"}))
    for model in (not_gguf, bad_template):
        out = subprocess.run(_generate(model, "hi"), capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and out.stderr.endswith(errors[0] + "\n"), out.stderr
        debug = subprocess.run(
            _generate(model, "hi"), capture_output=True, text=True, timeout=120,
            env={**os.environ, "MED42_DEBUG": "1"},
        )  # fmt: skip
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_one_line_messages() -> None:
    from med42_rs.cli import _one_line
    from med42_rs.errors import TokenizerError

    assert _one_line(TokenizerError("bad\n  vocabulary")) == "bad vocabulary"
    assert _one_line(ValueError()) == "ValueError"
    assert (
        _one_line(RuntimeError("boom\nat x"))
        == "RuntimeError: boom at x (run with MED42_DEBUG=1 for the traceback)"
    )
