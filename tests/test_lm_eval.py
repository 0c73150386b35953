"""The lm-evaluation-harness backend (``med42_rs.integrations.lm_eval``) against independent oracles:
llama.cpp's ``logits_all`` logits turned into log-likelihoods with numpy in float64, and
accuracies recomputed from the per-request log-likelihoods lm-eval logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ggufgen as g
import med42_rs
import numpy as np
import pytest
from conftest import tiny_path

lm_eval = pytest.importorskip("lm_eval")
llama_cpp = pytest.importorskip("llama_cpp")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.utils import get_rolling_token_windows  # noqa: E402
from med42_rs.integrations import lm_eval as med42_eval  # noqa: E402

g.quiet_llama_cpp()

QUESTION = (
    "Question: A 24-year-old woman has increasing thirst and a plasma glucose of 420 mg/dL. "
    "What is the most likely diagnosis?\nA. Type 1 diabetes\nB. Diabetes insipidus\nC. Hyperthyroidism\n"
    "D. Primary polydipsia\nAnswer:"
)
# Choices sharing a context; a context ending in a space; an empty context; a multi-token answer.
REQUESTS = [
    *[(QUESTION, f" {c}") for c in "ABCD"],
    ("The antidote for heparin is ", "protamine sulfate."),
    ("", "Metformin is a first-line drug for type 2 diabetes."),
    ("Insulin is made by the", " beta cells of the pancreas"),
    ("Insulin is made by the", " liver"),
]


def instances(kind: str, args: list[tuple[Any, ...]]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]  # type: ignore[arg-type]


def llama(path: Path, n_ctx: int = 512, n_batch: int = 512) -> Any:
    return llama_cpp.Llama(
        str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, type_k=0, type_v=0, n_threads=2,
        flash_attn=False, logits_all=True, verbose=False,
    )  # fmt: skip


def log_softmax(rows: np.ndarray) -> np.ndarray:
    x = rows.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def oracle_scores(L: Any, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """log P(continuation | context) and greedy-ness per ``(context, continuation)`` ids, from
    llama.cpp's logits; a context shared by consecutive pairs is evaluated once (llama.cpp drops
    the cache past ``n_tokens`` before it evaluates more)."""
    out = []
    L.reset()
    for ctx, cont in pairs:
        if list(L.input_ids[: L.n_tokens]) != ctx:
            L.reset()
            L.eval(ctx)
        L.n_tokens = len(ctx)
        if len(cont) > 1:
            L.eval(cont[:-1])
        lp = log_softmax(np.array(L.scores[len(ctx) - 1 : len(ctx) - 1 + len(cont)], dtype=np.float32))
        out.append((float(sum(lp[i, t] for i, t in enumerate(cont))), bool((lp.argmax(1) == cont).all())))
    return out


def split_ids(m: med42_rs.Model, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's rule: trailing context spaces join the continuation; the continuation is the
    whole text's tokens after the context's; an empty context is the BOS (else EOS) token."""
    stripped = context.rstrip()
    continuation, context = context[len(stripped) :] + continuation, stripped
    tok = m.tokenizer
    if not context:
        prefix = tok.bos_id if tok.bos_id is not None else tok.eos_id
        assert prefix is not None
        return [prefix], tok.encode(continuation, add_bos=False)
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    assert whole[: len(ctx)] == ctx
    return ctx, whole[len(ctx) :]


def numpy_score(m: med42_rs.Model, ctx: list[int], cont: list[int]) -> float:
    """The same log-likelihood from med42-rs's own logits of the whole sequence, in float64."""
    lp = log_softmax(m.logits(ctx + cont))[len(ctx) - 1 :]
    return float(sum(lp[i, t] for i, t in enumerate(cont)))


def tolerance(exact: bool, ref: float, n: int) -> float:
    """Allowed |med42-rs - llama.cpp| for a log-likelihood of ``n`` tokens. F32 has no quantization
    noise. Quantized files round activations to 8 bits, so a last-bit difference moves logits by
    about a percent (test_parity_llamacpp); on SmolLM2 (Q4_1) llama.cpp's own batched and
    token-by-token runs of REQUESTS differ by up to 0.13 per token (measured): three times that."""
    return 2e-3 + 1e-4 * abs(ref) if exact else 0.05 + 0.4 * n


@pytest.mark.oracle
@pytest.mark.parametrize("which", ["F32", "Q4_K_M", "smollm2"])
def test_loglikelihood_equals_llama_cpp(which: str, smollm2: Path) -> None:
    path = smollm2 if which == "smollm2" else tiny_path(which)
    m = med42_rs.Model.load(path, n_ctx=512, kv_type="f32")  # llama.cpp's side: type_k/v F32
    lm = med42_eval.Med42LM(model=m)
    got = lm.loglikelihood(instances("loglikelihood", REQUESTS), disable_tqdm=True)
    pairs = [split_ids(m, c, x) for c, x in REQUESTS]
    refs = oracle_scores(llama(path), pairs)
    for (ctx, cont), (lp, greedy), (ref, ref_greedy) in zip(pairs, got, refs):
        assert isinstance(lp, float) and isinstance(greedy, bool)
        if which != "smollm2":  # the scoring itself: numpy on the engine's logits, to rounding
            assert abs(lp - numpy_score(m, ctx, cont)) <= 1e-6 * (1 + abs(lp))
        tol = tolerance(which == "F32", ref, len(cont))
        assert abs(lp - ref) <= tol, (m.tokenizer.decode(cont), lp, ref, tol)
        if which == "F32":
            assert greedy == ref_greedy

    # Negative control: another model's log-likelihoods of the same requests are far outside it.
    if which != "smollm2":
        other = oracle_scores(llama(tiny_path(which, g.TinyConfig(seed=99))), pairs)
        far = [abs(lp - o) / tolerance(True, o, len(c)) for (_, c), (lp, _), (o, _) in zip(pairs, got, other)]
        assert max(far) > 10


def test_choices_run_their_shared_context_once() -> None:
    """Requests with one context are scored by one score_many call (one prefill of the question),
    and each result equals scoring that request alone, bit for bit."""
    m = med42_rs.Model.load(tiny_path("Q8_0"))
    lm = med42_eval.Med42LM(model=m)
    calls: list[int] = []
    real = m.score_many

    def spy(context: Any, continuations: Any) -> list[tuple[float, bool]]:
        calls.append(len(continuations))
        return real(context, continuations)

    m.score_many = spy  # type: ignore[method-assign]
    got = lm.loglikelihood(instances("loglikelihood", REQUESTS), disable_tqdm=True)
    assert calls == [4, 1, 1, 2]  # the question's four choices, then the other contexts
    # the empty context is BOS alone, and the continuation does not start with a second BOS
    bos = m.tokenizer.bos_id
    assert bos is not None
    cont = m.tokenizer.encode(REQUESTS[5][1], add_bos=False)
    assert cont[0] != bos and got[5] == m.score([bos], cont)
    for (c, x), res in zip(REQUESTS, got):
        ctx, cont = split_ids(m, c, x)
        assert res == m.score(ctx, cont)


def test_score_many_edges() -> None:
    """Model.score_many: each result is Model.score's, bit for bit, whatever the lengths and order;
    the last continuation token takes no cache position; bad input is a typed error raised before
    anything runs, and the model stays usable."""
    m = med42_rs.Model.load(tiny_path("Q4_K_M"), n_ctx=64)
    ctx = [1, 17, 300, 42, 9]
    conts = [[5], [7, 8, 9, 10, 11, 12], [5], [383, 3], list(range(3, 62))]
    got = m.score_many(ctx, conts)
    assert got == [m.score(ctx, c) for c in conts[:4]] + [got[4]]
    assert len(ctx) + len(conts[4]) - 1 == 63 and got[4][0] < 0  # 64 tokens, one never run
    assert m.score_many([1], [[5], [6]]) == [m.score([1], [5]), m.score([1], [6])]
    assert m.score_many(ctx, []) == []
    with pytest.raises(med42_rs.ContextLengthExceededError):
        m.score_many(ctx, [[5], list(range(3, 64))])
    with pytest.raises(med42_rs.InvalidParameterError, match="continuation 1 has no tokens"):
        m.score_many(ctx, [[5], []])
    with pytest.raises(med42_rs.InvalidParameterError, match="context"):
        m.score_many([], [[5]])
    with pytest.raises(med42_rs.InvalidParameterError):
        m.score_many(ctx, [[5], [10**6]])  # not in the vocabulary
    with pytest.raises(med42_rs.InvalidParameterError, match="list of token-id lists"):
        m.score_many(ctx, "abc")  # type: ignore[arg-type]
    assert m.score_many(ctx, conts[:1]) == got[:1]


@pytest.mark.oracle
def test_loglikelihood_rolling_equals_llama_cpp_over_windows() -> None:
    """With a context of 32 tokens, a long text is scored in lm-eval's rolling windows; each
    window's log-likelihood is computed from llama.cpp's logits of that window's input."""
    path = tiny_path("F32")
    n_ctx = 32
    m = med42_rs.Model.load(path, n_ctx=n_ctx, kv_type="f32")  # as llama.cpp's side
    lm = med42_eval.Med42LM(model=m)
    texts = ["Aspirin irreversibly inhibits cyclooxygenase. " * 6, "short text", ""]
    got = lm.loglikelihood_rolling(
        instances("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True
    )
    L = llama(path, n_ctx=64)
    for text, total in zip(texts, got):
        ids = m.tokenizer.encode(text, add_bos=False)
        ref = 0.0
        windows = list(get_rolling_token_windows(ids, m.tokenizer.bos_id or 0, n_ctx, 1))
        for inp, pred in windows:
            assert len(inp) <= n_ctx
            L.reset()
            L.eval(inp)
            lp = log_softmax(np.array(L.scores[: len(inp)], dtype=np.float32))[len(inp) - len(pred) :]
            ref += float(sum(lp[i, t] for i, t in enumerate(pred)))
        assert abs(total - ref) <= 2e-3 + 1e-4 * abs(ref), (text[:20], total, ref)
        if len(ids) > n_ctx:
            assert len(windows) >= 3  # the windowing was exercised
    assert got[2] == 0.0


def test_generate_until_cuts_at_until_and_max_gen_toks(smollm2: Path) -> None:
    m = med42_rs.Model.load(smollm2, n_ctx=512)
    lm = med42_eval.Med42LM(model=m)
    prompt = "Question: What is the first-line drug for type 2 diabetes?\nAnswer:"
    ids = m.tokenizer.encode(prompt)
    free = m.tokenizer.decode(m.greedy_ids(ids, 24))
    cut = free.split(".")[0]
    assert cut != free  # the greedy text does contain the stop string
    out = lm.generate_until(
        instances("generate_until", [(prompt, {"until": ["."], "max_gen_toks": 24}),
                                     (prompt, {"until": [], "max_gen_toks": 5, "do_sample": False})]),
        disable_tqdm=True,
    )  # fmt: skip
    assert out[0] == cut
    assert out[1] == m.tokenizer.decode(m.greedy_ids(ids, 5))


ALL_TASKS = ["med42_medqa_4options", "med42_medmcqa", "med42_pubmedqa", "med42_mmlu_clinical"]


def _recompute(samples: list[dict[str, Any]], shift: int = 0) -> tuple[float, float]:
    """(acc, acc_norm) from each document's per-choice log-likelihoods, acc_norm dividing by the
    choice's length in characters (lm-eval's definition)."""
    acc = norm = 0
    for s in samples:
        lls = np.array([r[0][0] for r in s["resps"]])
        lens = np.array([len(a[1]) for a in s["arguments"]], dtype=np.float64)
        gold = (int(s["target"]) + shift) % len(lls)
        acc += int(lls.argmax() == gold)
        norm += int((lls / lens).argmax() == gold)
    return acc / len(samples), norm / len(samples)


@pytest.mark.oracle
def test_simple_evaluate_offline_on_smollm2(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline tasks end to end, with the Hub unreachable by configuration: the accuracy lm-eval
    reports equals the one recomputed from the logged per-request log-likelihoods, and those equal
    llama.cpp's."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    res = lm_eval.simple_evaluate(
        model="med42-rs", model_args=f"path={smollm2},n_ctx=1024", tasks=ALL_TASKS,
        task_manager=med42_eval.task_manager(), limit=1, log_samples=True, verbosity="WARNING",
    )  # fmt: skip
    assert res is not None
    results, samples = res["results"], res["samples"]
    subsets = [t for t in samples if t.startswith("med42_mmlu_")]
    assert len(subsets) == 6
    differs = False
    for task, docs in samples.items():
        assert len(docs) == 1
        acc, norm = _recompute(docs)
        assert results[task]["acc,none"] == pytest.approx(acc, abs=1e-12), task
        assert results[task]["acc_norm,none"] == pytest.approx(norm, abs=1e-12), task
        differs |= _recompute(docs, shift=1) != (acc, norm)  # negative control: wrong answers
    assert differs
    group = [d for t in subsets for d in samples[t]]
    assert results["med42_mmlu_clinical"]["acc,none"] == pytest.approx(_recompute(group)[0], abs=1e-12)

    # The logged log-likelihoods of the first MedQA question are llama.cpp's.
    m = med42_rs.Model.load(smollm2, n_ctx=1024)
    doc = samples["med42_medqa_4options"][0]
    pairs = [split_ids(m, *a) for a in doc["arguments"]]
    refs = oracle_scores(llama(smollm2, n_ctx=1024), pairs)
    for (_, cont), r, (ref, _) in zip(pairs, doc["resps"], refs):
        assert abs(r[0][0] - ref) <= tolerance(False, ref, len(cont))


def test_chat_template_prompts_are_model_chat_prompts(smollm2: Path) -> None:
    """With lm-eval's --apply_chat_template the question is wrapped in the file's chat template, as
    Model.chat would send it: the scored context is exactly Model.chat_ids of that user message."""
    m = med42_rs.Model.load(smollm2, n_ctx=1024)
    lm = med42_eval.Med42LM(model=m)
    res = lm_eval.simple_evaluate(
        model=lm, tasks=["med42_medmcqa"], task_manager=med42_eval.task_manager(), limit=1,
        apply_chat_template=True, log_samples=True, verbosity="WARNING",
    )  # fmt: skip
    assert res is not None
    doc = res["samples"]["med42_medmcqa"][0]
    context, continuation = doc["arguments"][0]
    assert context.startswith("<|im_start|>") and continuation == "A"  # no delimiter after a chat prompt
    question = context.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert question.startswith("Question: ") and question.endswith("Answer:")
    ctx, cont = lm._encode_pair(context, continuation)
    # lm-eval's rule moves the prompt's final newline into the continuation
    ids = m.chat_ids([{"role": "user", "content": question}])
    assert ctx == ids[:-1] and (ctx + cont)[: len(ids)] == ids and len(cont) == 2
    assert doc["resps"][0][0][0] == m.score(ctx, cont)[0]


def test_command_line_runs_a_task(tmp_path: Path) -> None:
    """``python -m med42_rs.integrations.lm_eval`` is lm-eval's CLI with med42-rs and the tasks."""
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "med42_rs.integrations.lm_eval", "--model", "med42-rs",
         "--model_args", f"path={tiny_path('Q8_0')}", "--tasks", "med42_medmcqa", "--limit", "3",
         "--output_path", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    files = list(out.rglob("results_*.json"))
    assert len(files) == 1
    r = json.loads(files[0].read_text())["results"]["med42_medmcqa"]
    assert 0.0 <= r["acc,none"] <= 1.0
    assert "med42_medmcqa" in p.stdout


def test_a_task_of_ours_pointed_at_another_file(tmp_path: Path) -> None:
    """The documented way to evaluate real data: a task file elsewhere that includes ours and names
    a data file by absolute path. Here the file holds two MedQA rows, one of them ours changed, and
    lm-eval reads exactly those."""
    rows = (med42_eval.TASKS_DIR / "data" / "medqa_sample.jsonl").read_text().splitlines()[:2]
    changed = json.loads(rows[1])
    changed["question"] = "Which of the following is a made-up question for this test?"
    data = tmp_path / "data" / "medqa_test.jsonl"
    data.parent.mkdir()
    data.write_text(rows[0] + "\n" + json.dumps(changed) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "medqa_test.yaml").write_text(
        f"include: {med42_eval.TASKS_DIR / 'medqa_4options.yaml'}\ntask: medqa_test\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
    )
    res = lm_eval.simple_evaluate(
        model=med42_eval.Med42LM(path=str(tiny_path("Q8_0"))), tasks=["medqa_test"],
        task_manager=med42_eval.task_manager(tasks), log_samples=True, verbosity="WARNING",
    )  # fmt: skip
    assert res is not None
    docs = res["samples"]["medqa_test"]
    assert [d["doc"]["question"] for d in docs] == [json.loads(rows[0])["question"], changed["question"]]
    assert docs[1]["arguments"][0][0].startswith(f"Question: {changed['question']}\nA. ")


def test_sample_data_sets_are_complete() -> None:
    """A few dozen questions of our own, every answer among the choices, every format's fields."""
    data = med42_eval.TASKS_DIR / "data"
    rows = {f.stem: [json.loads(x) for x in f.read_text().splitlines()] for f in data.glob("*.jsonl")}
    assert sum(map(len, rows.values())) >= 36
    assert all(r["answer_idx"] in r["options"] for r in rows["medqa_sample"])
    assert all(0 <= r["cop"] <= 3 for r in rows["medmcqa_sample"])
    assert {r["final_decision"] for r in rows["pubmedqa_sample"]} == {"yes", "no", "maybe"}
    subjects = {r["subject"] for r in rows["mmlu_clinical_sample"]}
    assert len(subjects) == 6 and all(len(r["choices"]) == 4 for r in rows["mmlu_clinical_sample"])


def test_bad_arguments_are_clear_errors() -> None:
    path = tiny_path("Q8_0")
    with pytest.raises(med42_rs.InvalidParameterError, match="unknown model argument"):
        med42_eval.Med42LM(path=str(path), pretrained="gpt2")
    with pytest.raises(med42_rs.InvalidParameterError, match="exactly one of"):
        med42_eval.Med42LM()
    lm = med42_eval.Med42LM(path=str(path), n_ctx=16)
    with pytest.raises(med42_rs.ContextLengthExceededError, match="larger n_ctx"):
        lm.loglikelihood(instances("loglikelihood", [("a", " b" * 40)]), disable_tqdm=True)
    with pytest.raises(med42_rs.InvalidParameterError, match="no tokens"):
        lm.loglikelihood(instances("loglikelihood", [("a", "")]), disable_tqdm=True)
    with pytest.raises(med42_rs.InvalidParameterError, match="unsupported generation"):
        lm.generate_until(instances("generate_until", [("a", {"num_beams": 4})]), disable_tqdm=True)
    # still usable after the errors
    assert len(lm.loglikelihood(instances("loglikelihood", [("a", " b")]), disable_tqdm=True)) == 1
