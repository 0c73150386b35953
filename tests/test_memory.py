"""Weights are used in place from the file mapping: loading and running a model costs anonymous
memory far below the weights' size (the weights show up as file-backed pages instead)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import ggufgen as g
import pytest
from conftest import tiny_path

# ~164 MB of Q8_0 weights: large enough that a copy would dominate every other allocation.
BIG = g.TinyConfig(n_embd=1024, n_layer=8, n_head=8, n_head_kv=2, n_ff=2816, n_vocab=32000, std=0.02, seed=5)

PROBE = textwrap.dedent(
    """
    import json, sys
    def status():
        d = {}
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile"):
                d[k] = int(v.split()[0]) * 1024
        return d
    import numpy, med42_rs
    path, mode = sys.argv[1], sys.argv[2]
    before = status()
    if mode == "engine":
        m = med42_rs.Model.load(path, n_ctx=64)
        m.logits([1, 2, 3, 4, 5, 6, 7, 8])
        keep = m
    else:  # negative control: a private copy of the file
        keep = open(path, "rb").read()
    after = status()
    grown = {k: after[k] - before[k] for k in after}
    print(json.dumps({"anon": grown["RssAnon"], "file": grown["RssFile"]}))
    """
)


def probe(path: Path, mode: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), mode], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_anonymous_memory_growth_is_far_below_the_weights() -> None:
    path = tiny_path("Q8_0", BIG)
    size = path.stat().st_size
    eng = probe(path, "engine")
    copy = probe(path, "copy")
    # the measurement sees a copy (negative control) ...
    assert copy["anon"] > 0.9 * size
    # ... and the engine makes none: weights are file-backed pages
    assert eng["anon"] < 0.08 * size, (
        f"anonymous growth {eng['anon'] / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"
    )
    assert eng["file"] > 0.5 * size


HUGE_PROBE = textwrap.dedent(
    """
    import json, mmap, sys
    import med42_rs
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "engine":
        keep = med42_rs.Model.load(path, n_ctx=64)
    else:  # negative control: a plain read-only mapping of the same file, no advice
        f = open(path, "rb")
        keep = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    flags, in_map = [], False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
            in_map = line.rstrip().endswith(path)
        elif in_map and line.startswith("VmFlags:"):
            flags.append(line.split()[1:])
    print(json.dumps(flags))
    """
)


@pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage").exists(),
    reason="needs Linux with transparent huge pages (the advice is a no-op elsewhere)",
)
def test_the_weights_mapping_asks_for_2_mib_pages() -> None:
    """The file mapping is advised MADV_HUGEPAGE (VmFlags `hg`): where the file system caches in
    large folios, decode reads the weights through 2 MiB pages (docs/PERFORMANCE.md, "Page size and
    prefetch")."""
    path = tiny_path("Q8_0", BIG)

    def flags(mode: str) -> list[list[str]]:
        out = subprocess.run(
            [sys.executable, "-c", HUGE_PROBE, str(path), mode], check=True, capture_output=True, text=True
        ).stdout
        return list(json.loads(out.strip().splitlines()[-1]))

    eng, plain = flags("engine"), flags("plain")
    # the probe finds the mapping either way; only the engine's carries the advice
    assert len(eng) == 1 and len(plain) == 1, (eng, plain)
    assert "hg" in eng[0], eng
    assert "hg" not in plain[0], plain
