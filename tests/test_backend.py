"""Choosing the native module at import (med42_rs/_backend.py): MED42_BACKEND, the fallback to the CPU
build with its reason, and the typed errors. Each case imports med42_rs afresh in a child process.

A stand-in ``med42_rs_cuda`` package on PYTHONPATH plays the CUDA distribution: one whose
``_native`` fails like a machine without a driver, one whose ``_native`` is this CPU build loaded
under the CUDA module's name (so the swap is exercised with a real extension), one of another
version. The real CUDA wheel is checked by tests/smoke_cuda_wheel.py in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import med42_rs
import pytest

REPORT = (
    "import json, sys\n"
    "try:\n"
    "    import med42_rs\n"
    "except Exception as e:\n"
    "    print(json.dumps({'error': type(e).__module__ + '.' + type(e).__name__, 'message': str(e)}))\n"
    "    sys.exit(0)\n"
    "i = med42_rs.build_info()\n"
    "out = {k: i[k] for k in ('native_module', 'backend', 'cuda_unavailable', 'cuda', 'cuda_compute_caps')}\n"
    "out['same'] = sys.modules['med42_rs._native'] is med42_rs._native\n"
    "out['cuda_loaded'] = 'med42_rs_cuda._native' in sys.modules\n"
    "if len(sys.argv) > 2:\n"
    "    m = med42_rs.Model.load(sys.argv[2], n_ctx=64, n_threads=1)\n"
    "    out['ids'] = m.greedy_ids(m.tokenizer.encode('hello'), 4)\n"
    "print(json.dumps(out))\n"
)

CPU_SO = str(Path(med42_rs._native.__file__).resolve())


def run(backend: str | None, fake: Path | None = None, model: Path | None = None) -> dict[str, object]:
    env = dict(os.environ)
    env.pop("MED42_BACKEND", None)
    if backend is not None:
        env["MED42_BACKEND"] = backend
    if fake is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(fake), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-c", REPORT, CPU_SO] + ([str(model)] if model else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def fake_cuda(tmp_path: Path, native_source: str) -> Path:
    pkg = tmp_path / "med42_rs_cuda"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_native.py").write_text(native_source)
    return tmp_path


# the CPU extension, loaded under the CUDA module's name: the same interface, a real extension
CPU_AS_CUDA = f"""
import importlib.machinery, importlib.util, sys
loader = importlib.machinery.ExtensionFileLoader(__name__, {CPU_SO!r})
spec = importlib.util.spec_from_file_location(__name__, {CPU_SO!r}, loader=loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
sys.modules[__name__] = module
"""


def test_default_without_the_cuda_distribution_is_the_cpu_build() -> None:
    r = run(None)
    assert r["native_module"] == "med42_rs._native" and r["backend"] == "auto"
    assert r["cuda"] is False and r["cuda_compute_caps"] == []
    assert "not installed" in str(r["cuda_unavailable"]) and "med42-rs-cuda" in str(r["cuda_unavailable"])
    assert r["same"] is True and r["cuda_loaded"] is False


def test_forced_cuda_without_the_distribution_is_a_typed_error() -> None:
    r = run("cuda")
    assert r["error"] == "med42_rs.errors.DeviceUnavailableError", r
    assert "pip install med42-rs-cuda" in str(r["message"]), r


def test_unknown_backend_is_a_typed_error() -> None:
    r = run("gpu")
    assert r["error"] == "med42_rs.errors.InvalidParameterError", r
    assert "MED42_BACKEND='gpu'" in str(r["message"]) and "auto, cpu, cuda" in str(r["message"]), r


def test_no_driver_falls_back_with_the_reason(tmp_path: Path) -> None:
    missing = "raise ImportError('libcuda.so.1: cannot open shared object file: No such file or directory')\n"
    fake = fake_cuda(tmp_path, missing)
    r = run(None, fake)
    assert r["native_module"] == "med42_rs._native", r
    reason = str(r["cuda_unavailable"])
    assert "no NVIDIA driver" in reason and "libcuda.so.1" in reason, reason
    forced = run("cuda", fake)
    assert forced["error"] == "med42_rs.errors.DeviceUnavailableError", forced
    assert "libcuda.so.1" in str(forced["message"]) and "MED42_BACKEND=cpu" in str(forced["message"]), forced


def test_missing_cuda_libraries_are_named(tmp_path: Path) -> None:
    missing = "raise ImportError('libcublas.so.13: cannot open shared object file')\n"
    r = run(None, fake_cuda(tmp_path, missing))
    reason = str(r["cuda_unavailable"])
    assert "CUDA 13 libraries are missing" in reason and "libcublas.so.13" in reason, reason


def test_an_importable_cuda_build_is_used_everywhere(tmp_path: Path, tiny: object) -> None:
    model = tiny("Q8_0")  # type: ignore[operator]
    fake = fake_cuda(tmp_path, CPU_AS_CUDA)
    r = run(None, fake, model)
    assert r["native_module"] == "med42_rs_cuda._native" and r["cuda_unavailable"] is None, r
    # one module behind both names, and the CPU build's own module never imported under its name
    assert r["same"] is True and r["cuda_loaded"] is True, r
    cpu = run("cpu", fake, model)
    assert cpu["native_module"] == "med42_rs._native" and cpu["cuda_unavailable"] == "MED42_BACKEND=cpu"
    assert cpu["cuda_loaded"] is False
    assert r["ids"] == cpu["ids"] and len(r["ids"]) == 4  # type: ignore[arg-type]


def test_a_cuda_build_of_another_version_is_not_used(tmp_path: Path) -> None:
    if _installed_version() is None:
        pytest.skip("med42-rs has no installed metadata here (a source tree): nothing to compare")
    other = "def build_info():\n    return {'version': '0.0.0-other'}\n"
    r = run(None, fake_cuda(tmp_path, other))
    assert r["native_module"] == "med42_rs._native", r
    assert "0.0.0-other does not match" in str(r["cuda_unavailable"]), r


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("med42-rs")
    except PackageNotFoundError:
        return None
