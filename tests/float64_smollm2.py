"""SmolLM2 (or any Llama GGUF) against the float64 reference forward pass of tests/ggufgen.py, and
llama.cpp builds run in their own interpreters, so that several builds (a portable AVX2 wheel, a
``-march=native`` AVX-512 one) can be compared on the same inputs in one run.

Two float64 references:

- **exact**: the weights as the file stores them (dequantized by gguf-py), every activation in
  float64. This is the model the file defines; an engine's distance to it is its error.
- **ggml**: the same, with activations rounded to 8 bits before each quantized matmul as ggml does
  (Q8_1 for Q4_1, Q8_0 for Q8_0, with ggml's rounding rules). Both engines do that rounding, so
  this is what an ideal ggml-arithmetic engine computes; its distance to *exact* is the error that
  8-bit activations cost, and its distance to itself under a one-ulp input change (``moved=True``)
  is how far the rounding decisions amplify any f32 difference through the blocks.

Nothing here imports med42_rs: it is the oracle side (used by benches/divergence.py and
tests/test_divergence.py). ``python tests/float64_smollm2.py --llama-child FILE OUT`` is the child
that runs llama.cpp; it reads ``{"prompt": [...], "seq": [...], "steps": n}`` on stdin.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import ggufgen as g

N_CTX = 512


def config_from_gguf(path: Path) -> g.TinyConfig:
    """The reference's configuration from a Llama GGUF's metadata."""
    import gguf

    r = gguf.GGUFReader(str(path))

    def val(key: str) -> Any:
        f = r.fields[key]
        return f.parts[f.data[0]][0]

    names = {t.name for t in r.tensors}
    n_vocab = next(int(t.shape[-1]) for t in r.tensors if t.name == "token_embd.weight")
    return g.TinyConfig(
        n_embd=int(val("llama.embedding_length")),
        n_layer=int(val("llama.block_count")),
        n_head=int(val("llama.attention.head_count")),
        n_head_kv=int(val("llama.attention.head_count_kv")),
        n_ff=int(val("llama.feed_forward_length")),
        n_vocab=n_vocab,
        n_ctx=int(val("llama.context_length")),
        rope_base=float(val("llama.rope.freq_base")),
        eps=float(val("llama.attention.layer_norm_rms_epsilon")),
        tied="output.weight" not in names,
    )


class Reference:
    """The float64 forward passes of one GGUF file (weights read once)."""

    def __init__(self, path: Path) -> None:
        self.cfg = config_from_gguf(path)
        self.w, self.types = g.read_weights(path)

    def exact(self, seq: list[int], moved: bool = False) -> np.ndarray:
        return g.reference_forward(self._weights(moved)[0], self.cfg, seq)

    def ggml(self, seq: list[int], moved: bool = False) -> np.ndarray:
        w, types = self._weights(moved)
        return g.reference_forward(w, self.cfg, seq, types=types)

    def _weights(self, moved: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The weights, or with ``moved`` every input embedding value moved up or down (a fixed
        random sign per dimension) by one f32 ulp, relative 2^-24: a difference of the size two
        f32 summation orders make. (A uniform scale would change nothing: RMSNorm removes it.)
        The output matrix stays as stored."""
        if not moved:
            return self.w, self.types
        emb = self.w["token_embd.weight"]
        sign = np.random.default_rng(0).choice([-1.0, 1.0], size=emb.shape[1])
        w = {**self.w, "token_embd.weight": emb * (1.0 + 2.0**-24 * sign)}
        types = dict(self.types)
        if "output.weight" not in w:  # tied
            w["output.weight"] = emb
            types["output.weight"] = self.types["token_embd.weight"]
        return w, types

    def greedy(self, prompt: list[int], steps: int) -> list[int]:
        """The exact model's own greedy continuation (one full pass per step)."""
        seq = list(prompt)
        for _ in range(steps):
            seq.append(int(self.exact(seq)[-1].argmax()))
        return seq[len(prompt) :]


def rel_rows(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per position: max |a - ref| relative to max |ref|."""
    return np.asarray(np.abs(a - ref).max(1) / np.abs(ref).max(1))


def abs_rows(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.asarray(np.abs(a - ref).max(1))


def margin(row: np.ndarray) -> float:
    """Top-1 minus top-2 logit."""
    top2 = np.sort(row)[-2:]
    return float(top2[1] - top2[0])


def system_flags(info: str) -> str:
    """The features a ``llama_print_system_info()`` line turns on, e.g. ``AVX2 FMA REPACK``."""
    flags = []
    for part in info.split("|"):
        k, _, v = part.rpartition("=")
        k = k.split(":")[-1].strip()
        if k and v.strip() == "1":
            flags.append(k)
    return " ".join(flags)


@dataclass
class LlamaRun:
    """What one llama.cpp build gives on a sequence."""

    python: str
    system_info: str
    logits: np.ndarray  # (len(seq), n_vocab), batched evaluation of the whole sequence
    logits_incremental: np.ndarray  # the same, one token at a time
    greedy: list[int]  # its own greedy continuation of the prompt

    @property
    def flags(self) -> str:
        return system_flags(self.system_info)


def llama_cpp_run(
    python: str, path: Path, prompt: list[int], seq: list[int], steps: int, out: Path
) -> LlamaRun:
    """Run the llama.cpp that ``python`` imports, in a child process."""
    job = json.dumps({"prompt": prompt, "seq": seq, "steps": steps})
    cmd = [python, __file__, "--llama-child", str(path), str(out)]
    r = subprocess.run(cmd, input=job, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp child ({python}) failed:\n{r.stderr[-3000:]}")
    with np.load(out) as z:
        return LlamaRun(
            python=python,
            system_info=str(z["info"]),
            logits=z["logits"],
            logits_incremental=z["incremental"],
            greedy=[int(t) for t in z["greedy"]],
        )


def _llama_child(path: str, out: str) -> None:
    import llama_cpp

    g.quiet_llama_cpp()
    job = json.loads(sys.stdin.read())

    def make(n_batch: int) -> Any:
        # F32 KV caches, no flash attention: like med42-rs's kv_type="f32" and the reference
        return llama_cpp.Llama(
            path, n_ctx=N_CTX, n_batch=n_batch, n_ubatch=n_batch, type_k=0, type_v=0, flash_attn=False,
            n_threads=2, logits_all=True, verbose=False,
        )  # fmt: skip

    seq = job["seq"]
    L = make(512)
    L.eval(seq)
    logits = np.array(L.scores[: len(seq)], dtype=np.float32)
    L.reset()
    greedy: list[int] = []
    for t in L.generate(job["prompt"], temp=0.0, top_k=1, repeat_penalty=1.0):
        greedy.append(int(t))
        if len(greedy) == job["steps"]:
            break
    L1 = make(1)
    L1.eval(seq)
    incremental = np.array(L1.scores[: len(seq)], dtype=np.float32)
    np.savez(
        out,
        info=llama_cpp.llama_print_system_info().decode(),
        logits=logits,
        incremental=incremental,
        greedy=np.array(greedy, dtype=np.int64),
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--llama-child":
        _llama_child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
