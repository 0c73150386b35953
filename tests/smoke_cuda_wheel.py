"""Smoke test of the installed CUDA wheel (med42-rs-cuda) beside med42-rs, on a machine without a GPU.

.ci/cuda-wheel installs the portable med42-rs wheel and the med42-rs-cuda wheel into a clean virtual
environment and runs, with the toolchain's stub libraries on ``LD_LIBRARY_PATH``:

    python tests/smoke_cuda_wheel.py --driver stub --caps 90 SMOLLM2.gguf   # stub libcuda.so.1
    python tests/smoke_cuda_wheel.py --driver none SMOLLM2.gguf             # no libcuda.so.1

With a driver (the stub, whose every call answers "no device"), ``import med42_rs`` picks the CUDA
build, ``build_info()`` says so with its compute capabilities, the CPU path generates the same
greedy tokens as the CPU build (``MED42_BACKEND=cpu``, in a child process) and ``device="cuda"`` is
a typed error that says there is no CUDA device. Without a driver, ``import med42_rs`` falls back to
the CPU build and records why, and ``MED42_BACKEND=cuda`` is a typed error naming the missing
driver. Every check runs even when an earlier one fails; the exit status is 1 if any failed. The
file is not named ``test_*``: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import med42_rs

PROMPT = "The three primary colours are"
N_TOKENS = 24


def greedy_ids(path: str) -> list[int]:
    model = med42_rs.Model.load(path, n_ctx=256, n_threads=2)
    return model.generate(PROMPT, max_tokens=N_TOKENS, temperature=0.0, repeat_penalty=1.0).token_ids


def in_child(code: str, backend: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MED42_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def check_installed() -> None:
    import med42_rs_cuda  # type: ignore[import-not-found, unused-ignore]

    for m in (med42_rs, med42_rs_cuda):
        where = Path(m.__file__).resolve()
        assert "site-packages" in where.parts, f"{m.__name__} comes from {where}, not from an installed wheel"


def check_cuda_backend(caps: list[int]) -> None:
    info = med42_rs.build_info()
    shown = {k: info[k] for k in ("native_module", "cuda", "cuda_compute_caps", "cuda_unavailable")}
    print(f"  {shown}")
    assert info["native_module"] == "med42_rs_cuda._native", info["native_module"]
    assert info["cuda_unavailable"] is None, info["cuda_unavailable"]
    assert info["cuda"] is True and "cuda" in info["cargo_features"], info
    assert info["cuda_compute_caps"] == caps, (info["cuda_compute_caps"], caps)
    assert sys.modules["med42_rs._native"] is sys.modules["med42_rs_cuda._native"]
    assert med42_rs._native is sys.modules["med42_rs_cuda._native"]


def check_cpu_backend() -> None:
    info = med42_rs.build_info()
    print(f"  native_module={info['native_module']!r} cuda_unavailable={info['cuda_unavailable']!r}")
    assert info["native_module"] == "med42_rs._native", info["native_module"]
    assert info["cuda"] is False and info["cuda_compute_caps"] == [], info
    reason = info["cuda_unavailable"]
    assert isinstance(reason, str) and "libcuda.so.1" in reason and "driver" in reason, reason
    assert "med42_rs_cuda._native" not in sys.modules


def check_same_greedy_as_cpu_build(path: str) -> None:
    """The CUDA build's CPU path against the CPU build (another extension, in a child process)."""
    ids = greedy_ids(path)
    code = (
        "import json, med42_rs, sys\n"
        f"m = med42_rs.Model.load({path!r}, n_ctx=256, n_threads=2)\n"
        f"c = m.generate({PROMPT!r}, max_tokens={N_TOKENS}, temperature=0.0, repeat_penalty=1.0)\n"
        "print(json.dumps([med42_rs.build_info()['native_module'], c.token_ids]))\n"
    )
    child = in_child(code, "cpu")
    assert child.returncode == 0, child.stderr
    module, cpu_ids = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"  {len(ids)} greedy tokens; the CPU build ({module}) gives the same: {ids == cpu_ids}")
    assert module == "med42_rs._native", module
    assert len(ids) == N_TOKENS, ids
    assert ids == cpu_ids, (ids, cpu_ids)


def check_cuda_device_is_a_typed_error(path: str) -> None:
    try:
        med42_rs.Model.load(path, n_ctx=256, device="cuda")
    except med42_rs.DeviceUnavailableError as e:
        message = str(e)
    else:
        raise AssertionError("device='cuda' loaded on a machine without a GPU")
    print(f"  DeviceUnavailableError: {message!r}")
    # says why (the stub driver answers CUDA_ERROR_NO_DEVICE to every call, as a driver does on a
    # machine without a GPU), in one line for the user: not candle's backtrace
    assert "cuda" in message.lower(), message
    assert "CUDA_ERROR_NO_DEVICE" in message or "no cuda device" in message.lower(), message
    assert len(message.strip().splitlines()) == 1, f"{len(message.splitlines())} lines: {message}"
    # the engine stays usable: the same file loads on the CPU afterwards
    assert len(greedy_ids(path)) == N_TOKENS


def check_forced_cuda_is_a_typed_error() -> None:
    # `import med42_rs` raises before the name is bound: name the class by its module.
    code = (
        "import sys\n"
        "try:\n"
        "    import med42_rs\n"
        "except Exception as e:\n"
        "    print(type(e).__module__ + '.' + type(e).__name__ + ': ' + str(e))\n"
        "    sys.exit(3)\n"
    )
    child = in_child(code, "cuda")
    print(f"  MED42_BACKEND=cuda: exit {child.returncode}, {child.stdout.strip()!r}")
    assert child.returncode == 3, (child.returncode, child.stdout, child.stderr)
    line = child.stdout.strip()
    assert line.startswith("med42_rs.errors.DeviceUnavailableError: "), line
    assert "libcuda.so.1" in line and "driver" in line, line


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=["stub", "none"], required=True)
    parser.add_argument("--caps", default="90", help="the compute capabilities the wheel was built for")
    parser.add_argument("model", help="SmolLM2-135M-Instruct.Q4_1.gguf")
    a = parser.parse_args(argv[1:])
    print(f"med42_rs {med42_rs.__version__} from {Path(med42_rs.__file__).parent}, driver: {a.driver}")
    checks: list[tuple[str, Callable[[], None]]] = [("installed wheels", check_installed)]
    if a.driver == "stub":
        caps = [int(c) for c in a.caps.split(",")]
        checks += [
            ("the CUDA build is in use", lambda: check_cuda_backend(caps)),
            ("CPU generation equals the CPU build's", lambda: check_same_greedy_as_cpu_build(a.model)),
            ("device='cuda' without a GPU", lambda: check_cuda_device_is_a_typed_error(a.model)),
        ]
    else:
        checks += [
            ("the CPU build is in use, with the reason", check_cpu_backend),
            ("CPU generation", lambda: check_same_greedy_as_cpu_build(a.model)),
            ("MED42_BACKEND=cuda without a driver", check_forced_cuda_is_a_typed_error),
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
        print(f"CUDA wheel smoke test: {len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
        return 1
    print(f"CUDA wheel smoke test ({a.driver} driver): all {len(checks)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
