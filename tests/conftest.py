"""Shared fixtures: generated GGUF models of every quant type, and registry assets."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import ggufgen as g

# Types gguf-py writes itself, and llama.cpp ftypes made with its quantizer from the F32 file.
GGUF_PY_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
LLAMA_CPP_FTYPES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]
ALL_QUANTS = GGUF_PY_TYPES + LLAMA_CPP_FTYPES

# No test may depend on this machine's stored license acceptance or environment: every run starts
# with a private, empty med42-rs config directory and no MED42_ACCEPT_LICENSE.
os.environ["MED42_CONFIG_DIR"] = tempfile.mkdtemp(prefix="med42-rs-test-config-")
os.environ.pop("MED42_ACCEPT_LICENSE", None)

_GEN_VERSION = hashlib.sha256(Path(g.__file__).read_bytes()).hexdigest()[:12]


def tiny_path(quant: str, cfg: g.TinyConfig | None = None) -> Path:
    """A tiny random Llama GGUF of ``quant`` (cached; regenerated when ggufgen.py changes)."""
    cfg = cfg or g.TinyConfig()
    key = hashlib.sha256(f"{_GEN_VERSION}{cfg!r}".encode()).hexdigest()[:12]
    d = g.cache_dir() / "tiny" / key
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"tiny-{quant}.gguf"
    if path.exists():
        return path
    tmp = path.with_suffix(".part")
    if quant in GGUF_PY_TYPES:
        g.write_llama_gguf(tmp, cfg, qtype=g.Q[quant])
    else:
        g.llama_cpp_quantize(tiny_path("F32", cfg), tmp, quant)
    tmp.rename(path)
    return path


@pytest.fixture(scope="session")
def tiny() -> Callable[..., Path]:
    return tiny_path


@pytest.fixture(scope="session")
def tiny_cfg() -> g.TinyConfig:
    return g.TinyConfig()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    import assets

    cached = g.cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if os.environ.get("MED42_TEST_OFFLINE") == "1" and not cached.exists():
        # benches/gpu/check.sh: the GPU machine has no network, and the 98 MB file does not travel
        pytest.skip("SmolLM2 is not in the test cache and MED42_TEST_OFFLINE=1 (no download)")
    return assets.smollm2_gguf()


@pytest.fixture(autouse=True)
def _forget_in_process_license_acceptance() -> None:
    """Acceptance given in one test (accept_license=True) must not carry over to the next."""
    from med42_rs import license

    license._SESSION.clear()
