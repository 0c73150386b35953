"""Smoke test of an installed med42-rs wheel, as a new user gets it.

CI builds the portable wheel, installs it into a fresh virtual environment with only its declared
dependencies (no test extra, no system packages) and runs:

    python tests/smoke_wheel.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf

It loads the real SmolLM2 file, chats with it through the file's own chat template, streams a
generation, scores a continuation and checks which kernels the wheel runs. A dependency the wheel
uses but does not declare fails here, since nothing else is installed. Every check runs even when
an earlier one fails; the exit status is 1 if any failed. The file is not named ``test_*`` so that
pytest, which runs against a development install, does not collect it.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import med42_rs

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def check_installed_wheel() -> None:
    where = Path(med42_rs.__file__).resolve()
    assert "site-packages" in where.parts, f"med42_rs comes from {where}, not from an installed wheel"


def check_kernels() -> None:
    info = med42_rs.build_info()
    kernels = info["dot_kernels"]
    print(f"  kernels={info['kernels']!r} dot_kernels={kernels}")
    if not {"avx2", "fma", "f16c"} <= set(info["cpu_simd"]):
        print("  (this CPU has no AVX2/FMA/F16C: the scalar kernels are expected)")
        return
    # Every type of the Med42 file table and both types of SmolLM2 run this crate's kernels,
    # chosen at run time (AVX2, or the VNNI forms where the CPU has them), in a wheel compiled for
    # a baseline x86-64 CPU.
    cpu = set(info["cpu_simd"])
    if {"avx512f", "avx512bw", "avx512vl", "avx512vnni"} <= cpu:
        isa = "avx512vnni"
    elif "avxvnni" in cpu:
        isa = "avxvnni"
    else:
        isa = "avx2"
    for t in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q8_0"]:
        assert kernels[t].startswith(isa), f"{t} runs {kernels[t]!r}, not the run-time {isa} kernel"
    assert all("+packed" in kernels[t] for t in ["Q4_K", "Q6_K", "Q8_0"]), kernels
    assert info["kernels"] == isa, f"build_info()['kernels'] is {info['kernels']!r}, not {isa!r}"


def check_chat(model: med42_rs.Model) -> None:
    assert model.metadata.get("tokenizer.chat_template"), "SmolLM2 carries its own chat template"
    # With the file's default system prompt SmolLM2-135M answers with French landmarks (so does
    # llama.cpp); a plain system prompt gets the factual answer.
    answer = model.chat(
        QUESTION, system="You are a helpful assistant.", max_tokens=16, temperature=0.0, repeat_penalty=1.0
    )
    print(f"  chat: {answer.text!r} ({answer.finish_reason})")
    assert answer.text.strip(), "empty answer"
    assert answer.usage is not None and answer.usage.completion_tokens > 0, answer.usage
    assert "Paris" in answer.text, answer.text


def check_stream_is_deterministic(model: med42_rs.Model) -> None:
    prompt = "The three primary colours are"
    chunks = list(model.generate(prompt, stream=True, max_tokens=16, temperature=0.0, repeat_penalty=1.0))
    text = "".join(c.text for c in chunks)
    print(f"  stream: {len(chunks)} chunks, {text!r}")
    assert len(chunks) > 1 and text.strip(), chunks
    assert chunks[-1].finish_reason in ("eos", "length"), chunks[-1]
    again = model.generate(prompt, max_tokens=16, temperature=0.0, repeat_penalty=1.0)
    assert again.text == text, (again.text, text)
    ids = [i for c in chunks for i in c.token_ids]
    assert again.token_ids == ids, (again.token_ids, ids)


def check_score(model: med42_rs.Model) -> None:
    tok = model.tokenizer
    context = tok.encode("The capital of France is")
    likely = model.score(context, tok.encode(" Paris", add_bos=False))
    unlikely = model.score(context, tok.encode(" a banana", add_bos=False))
    print(f"  score: ' Paris' {likely}, ' a banana' {unlikely}")
    for logprob, _ in (likely, unlikely):
        assert math.isfinite(logprob) and logprob < 0, logprob
    assert likely[0] > unlikely[0], (likely, unlikely)
    greedy = model.greedy_ids(context, 3)
    assert model.score(context, greedy)[1] is True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"med42_rs {med42_rs.__version__} from {Path(med42_rs.__file__).parent}")
    model = med42_rs.Model.load(argv[1], n_ctx=512, n_threads=2)
    checks: list[tuple[str, Callable[[], None]]] = [
        ("installed wheel", check_installed_wheel),
        ("kernels", check_kernels),
        ("chat with the file's template", lambda: check_chat(model)),
        ("streamed greedy generation", lambda: check_stream_is_deterministic(model)),
        ("score", lambda: check_score(model)),
    ]
    failed = []
    for name, check in checks:
        try:
            check()
        except Exception:
            failed.append(name)
            print(f"FAIL {name}\n{traceback.format_exc()}")
        else:
            print(f"ok   {name}")
    if failed:
        print(f"smoke test: {len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
        return 1
    print(f"smoke test: all {len(checks)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
