"""How far med42-rs and llama.cpp builds are from a float64 forward pass of SmolLM2, step by step.

    python benches/divergence.py                                   # this venv's llama.cpp
    python benches/divergence.py --llama /work/native-llama/bin/python --llama .venv/bin/python
    python benches/divergence.py --prompts 2 --steps 24

For each parity prompt of tests/test_parity_llamacpp.py, the exact float64 model (tests/
float64_smollm2.py: the file's weights, float64 activations) continues the prompt greedily for
``--steps`` tokens; every engine then computes the logits of that one sequence (teacher-forced:
all engines see the same inputs), and each step's row is compared with the float64 one. Each
``--llama`` interpreter runs its own llama.cpp build (tools/native_llama.sh makes an AVX-512 one)
in a child process. Per step: the float64 top-2 margin, and per engine max |Δ| against the float64
logits, its relative size (max |Δ| / max |logit|) and its pick where that differs from float64's
(with float64's gap between the two tokens: a near-tie when below the engines' error). The
summary adds what explains the size of those errors: the distance of a float64 pass that rounds
activations to 8 bits as ggml does ("ggml") from the exact one, and how much that same pass moves
when its inputs move by one f32 ulp (the amplification that turns any f32 difference into a
percent-level one). Timings are not measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import float64_smollm2 as f64  # noqa: E402


def fmt_pick(pick: int, want: int, exact_row: np.ndarray) -> str:
    return "" if pick == want else f" ≠{pick} (gap {exact_row[want] - exact_row[pick]:.3f})"


def first_divergence(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama", action="append", help="a Python whose llama_cpp to compare (repeatable)")
    ap.add_argument("--prompts", type=int, nargs="*", default=None, help="indices into SMOL_PROMPTS")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--file", type=Path, default=None, help="a Llama GGUF instead of SmolLM2")
    args = ap.parse_args()

    import assets
    import med42_rs
    from test_parity_llamacpp import SMOL_PROMPTS

    path = args.file or assets.smollm2_gguf()
    pythons = args.llama or [sys.executable]
    ref = f64.Reference(path)
    m = med42_rs.Model.load(path, n_ctx=f64.N_CTX, kv_type="f32")
    kinfo = med42_rs.build_info()
    print(f"file: {path.name}")
    print(f"med42-rs: kernels {kinfo['kernels']}, dot kernels {kinfo['dot_kernels']}")
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), "?",
    )  # fmt: skip
    print(f"CPU: {cpu}")

    # per engine, over all prompts and steps: max |Δ| and relative error against exact and ggml
    totals: dict[str, dict[str, list[float]]] = {}
    floors: dict[str, list[float]] = {
        "with ggml's 8-bit activations (ggml) vs exact": [],
        "ggml with its inputs moved by 1 f32 ulp vs ggml": [],
    }
    labels: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="divergence-"))
    for pi in args.prompts if args.prompts is not None else range(len(SMOL_PROMPTS)):
        prompt = m.tokenizer.encode(SMOL_PROMPTS[pi], add_bos=False, special=True)
        cont = ref.greedy(prompt, args.steps)
        seq = prompt + cont
        n0 = len(prompt) - 1
        rows = slice(n0, n0 + args.steps)
        exact, ggml = ref.exact(seq)[rows], ref.ggml(seq)[rows]
        moved = ref.ggml(seq, moved=True)[rows]
        for name, (a, b) in zip(floors, [(ggml, exact), (moved, ggml)]):
            floors[name] += f64.rel_rows(a, b).tolist()

        engines: dict[str, np.ndarray] = {"med42-rs": m.logits(seq)[rows]}
        greedy: dict[str, list[int]] = {"med42-rs": m.greedy_ids(prompt, args.steps)}
        for i, py in enumerate(pythons):
            run = f64.llama_cpp_run(py, path, prompt, seq, args.steps, tmp / f"run{i}.npz")
            label = f"llama.cpp [{run.flags}]"
            if label in engines:
                label += f" ({py})"
            engines[label] = run.logits[rows]
            engines[label + " token by token"] = run.logits_incremental[rows]
            greedy[label] = run.greedy
        labels = list(engines)

        print(f"\n## prompt {pi}: {SMOL_PROMPTS[pi]!r} ({len(prompt)} tokens), {args.steps} steps")
        short = {name: f"E{j}" for j, name in enumerate(engines)}
        for name, s in short.items():
            print(f"  {s}: {name}")
        head = " | ".join(f"{s} max|Δ| (rel) pick" for s in short.values())
        print(f"| step | float64 id | float64 top-2 margin | {head} |")
        print("|---|---|---|" + "---|" * len(short))
        for t in range(args.steps):
            want = cont[t]
            cells = []
            for x in engines.values():
                d = float(np.abs(x[t] - exact[t]).max())
                rel = d / float(np.abs(exact[t]).max())
                cells.append(f"{d:.3f} ({rel:.1e}){fmt_pick(int(x[t].argmax()), want, exact[t])}")
            print(f"| {t} | {want} | {f64.margin(exact[t]):.3f} | " + " | ".join(cells) + " |")
        for name, x in engines.items():
            tot = totals.setdefault(name, {"abs": [], "rel": [], "rel_ggml": [], "rel_ours": []})
            tot["abs"] += f64.abs_rows(x, exact).tolist()
            tot["rel"] += f64.rel_rows(x, exact).tolist()
            tot["rel_ggml"] += f64.rel_rows(x, ggml).tolist()
            tot["rel_ours"] += f64.rel_rows(x, engines["med42-rs"]).tolist()
        for name, ids in greedy.items():
            k = first_divergence(ids, cont)
            note = "" if k >= args.steps else f" (float64 margin there {f64.margin(exact[k]):.3f})"
            print(f"own greedy path of {name}: same as float64 for {k} of {args.steps} steps{note}")
            if name != "med42-rs":
                k = first_divergence(ids, greedy["med42-rs"])
                print(f"  and the same as med42-rs's for {k} of {args.steps} steps")

    print(f"\n## all prompts: per-step errors against float64 (median / max over steps), {cpu}")
    print(
        "| logits | max|Δ| vs exact | relative vs exact | relative vs ggml-rounding float64 "
        "| relative vs med42-rs |"
    )
    print("|---|---|---|---|---|")
    for name in labels:
        t = totals[name]
        cells = [(t["abs"], ".3f"), (t["rel"], ".2e"), (t["rel_ggml"], ".2e"), (t["rel_ours"], ".2e")]
        row = " | ".join(f"{statistics.median(v):{p}} / {max(v):{p}}" for v, p in cells)
        print(f"| {name} | {row} |")
    print("\nwhat sets that size (relative, median / max over the same steps):")
    for name, v in floors.items():
        print(f"  float64 {name}: {statistics.median(v):.2e} / {max(v):.2e}")


if __name__ == "__main__":
    main()
