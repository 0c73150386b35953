"""Weights are used in place from the file mapping: loading and running a model costs anonymous
memory far below the weights' size (the weights show up as file-backed pages instead)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import ggufgen as g
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
