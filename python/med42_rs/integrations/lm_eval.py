"""lm-evaluation-harness backend: score and generate in-process with med42-rs.

``pip install 'med42-rs[eval]'``, then::

    import lm_eval
    from med42_rs.integrations import lm_eval as med42_eval  # registers the model "med42-rs"

    results = lm_eval.simple_evaluate(
        model="med42-rs",
        model_args="path=med42-70b.Q4_K_M.gguf,n_ctx=2048,accept_license=True",
        tasks=["med42_medqa_4options"],
        task_manager=med42_eval.task_manager(),
    )

From the shell, ``python -m med42_rs.integrations.lm_eval`` is lm-eval's own command line with the
``med42-rs`` model registered and the offline tasks on the include path (lm-eval has no plug-in
discovery for models, so plain ``lm_eval --model med42-rs`` cannot find it)::

    python -m med42_rs.integrations.lm_eval --model med42-rs \\
        --model_args path=med42-70b.Q4_K_M.gguf,n_ctx=2048,accept_license=True \\
        --tasks med42_medqa_4options,med42_medmcqa,med42_pubmedqa,med42_mmlu_clinical

Requests that share a context (the choices of one question) are scored together: the context
runs through the model once and each choice continues it from the KV cache
(:meth:`~med42_rs.Model.score_many`). Each log-likelihood is ``Model.score``'s, bit for bit, and
llama.cpp's ``logits_all`` score of the same file up to the rounding noise of quantized activations.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models register lazily only into an empty registry)
from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from ..errors import ContextLengthExceededError, InvalidParameterError
from ..model import Model
from ..sampling import SamplingParams

__all__ = ["TASKS_DIR", "Med42LM", "main", "task_manager"]

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")
"""The offline task configurations (YAML) and their sample data (see its README.md)."""


def task_manager(
    include_path: str | Path | Sequence[str | Path] | None = None, *, include_defaults: bool = False
) -> Any:
    """An ``lm_eval.tasks.TaskManager`` that knows the offline medical tasks of :data:`TASKS_DIR`
    and the task folders in ``include_path`` (for configurations pointing at your own files).
    ``include_defaults=True`` adds lm-eval's own tasks (indexing them takes seconds)."""
    from lm_eval.tasks import TaskManager

    extra = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])
    return TaskManager(include_path=[str(TASKS_DIR), *map(str, extra)], include_defaults=include_defaults)


class Med42LM(LM):
    """An lm-eval model over a :class:`~med42_rs.Model`, loaded from ``path`` or given as ``model``.

    ``n_ctx``, ``n_threads``, ``device``, ``backend`` and ``accept_license`` are passed to
    :meth:`Model.load`; ``max_gen_toks`` is the default generation length of ``generate_until``.
    ``batch_size`` and ``max_batch_size`` (which lm-eval passes to every model) are accepted and
    ignored: requests sharing a context are grouped instead. The device comes from the model
    arguments (``--model_args path=FILE,device=cuda``) only: lm-eval's own ``--device`` is a
    PyTorch setting that defaults to ``cuda:0`` even where there is no GPU.
    """

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> Med42LM:
        """The model from lm-eval's ``--model_args`` string (``key=value,...``)."""
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> Med42LM:
        """The model from a dict of model arguments, plus lm-eval's own settings except ``device``."""
        extra = {
            k: v
            for k, v in (additional_config or {}).items()
            if v is not None and k != "device" and k not in arg_dict
        }
        return cls(**arg_dict, **extra)

    def __init__(
        self,
        path: str | None = None,
        *,
        model: Model | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        device: str | None = None,
        backend: str | None = None,
        accept_license: bool | None = None,
        max_gen_toks: int = 256,
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise InvalidParameterError(
                f"med42-rs: unknown model argument(s) {', '.join(sorted(unknown))}; known: path, n_ctx, "
                "n_threads, device, backend, accept_license, max_gen_toks"
            )
        if (model is None) == (path is None):
            raise InvalidParameterError(
                "med42-rs: give exactly one of `path` (a GGUF file, e.g. --model_args path=FILE) or `model`"
            )
        if model is None:
            assert path is not None
            model = Model.load(
                path, device=device or "cpu", n_ctx=n_ctx, n_threads=n_threads, backend=backend,
                accept_license=accept_license,
            )  # fmt: skip
        self.model = model
        self._name = Path(path).name if path is not None else "model"
        self._special = False
        self.max_gen_toks = int(max_gen_toks)
        tok = model.tokenizer
        prefix = tok.bos_id if tok.bos_id is not None else tok.eos_id
        if prefix is None:
            raise InvalidParameterError(
                "med42-rs: the vocabulary has neither BOS nor EOS to start a context with"
            )
        self.prefix_token_id: int = prefix

    # ------------------------------------------------------------------------------------------
    # chat templates (lm-eval's --apply_chat_template): the model's own, as Model.chat uses it

    @property
    def tokenizer_name(self) -> str:
        """A name for lm-eval's cache keys."""
        return f"med42-rs:{self._name}"

    def chat_template(self, chat_template: bool | str = False) -> str:
        """The template :meth:`apply_chat_template` renders with: the file's Jinja chat template,
        or ``"med42"`` (the Med42 format) when it has none. lm-eval's argument is ignored."""
        return self.model._template(None)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text of ``chat_history`` (:meth:`Model.chat_prompt`). Without
        ``add_generation_prompt`` the last message, the assistant's, is continued as written.
        Contexts become token ids with control-token text parsed from then on."""
        self._special = True
        if add_generation_prompt or not chat_history or chat_history[-1].get("role") != "assistant":
            return self.model.chat_prompt(chat_history)
        return self.model.chat_prompt(chat_history[:-1]) + chat_history[-1]["content"]

    @property
    def max_length(self) -> int:
        """The context length (lm-eval's name for it)."""
        return self.model.n_ctx

    # ------------------------------------------------------------------------------------------
    # tokenization, as lm-eval's own models do it

    def tok_encode(self, text: str) -> list[int]:
        """``text`` to ids, with BOS when the vocabulary asks for it (and the chat template's
        control tokens parsed once :meth:`apply_chat_template` made the prompts)."""
        return self.model.tokenizer.encode(text, special=self._special)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids, split where the joined text's tokens cross into the
        continuation (so a merge across the boundary is tokenized as the whole text is). Spaces
        at the end of the context move to the continuation."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        tok = self.model.tokenizer
        if not context:  # the prefix token (BOS, else EOS) stands for the empty context
            return [self.prefix_token_id], self._nonempty(
                tok.encode(continuation, add_bos=False), continuation
            )
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        n = len(ctx)
        if whole[:n] != ctx:  # the boundary merged into a context token: keep the common prefix
            n = next(i for i, (a, b) in enumerate(zip(whole, ctx)) if a != b)
        ctx, cont = whole[:n], whole[n:]
        return (ctx or [self.prefix_token_id]), self._nonempty(cont, continuation)

    @staticmethod
    def _nonempty(cont: list[int], continuation: str) -> list[int]:
        if not cont:
            raise InvalidParameterError(
                f"med42-rs: the continuation {continuation!r} has no tokens: nothing to score"
            )
        return cont

    def _fit(self, ctx: list[int], cont: list[int]) -> list[int]:
        """``ctx`` cut from the left so that context and continuation fit the context window
        (the last continuation token takes no position), as lm-eval's models truncate."""
        over = len(ctx) + len(cont) - 1 - self.max_length
        if over <= 0:
            return ctx
        if over >= len(ctx):
            raise ContextLengthExceededError(
                f"med42-rs: a continuation of {len(cont)} tokens does not fit the context of "
                f"{self.max_length} tokens; load the model with a larger n_ctx"
            )
        return ctx[over:]

    # ------------------------------------------------------------------------------------------
    # the three request types

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(log P(continuation | context), is_greedy)`` per request. Requests with the same
        context ids are scored together, the context run once."""
        pairs = [self._encode_pair(*req.args) for req in requests]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            groups.setdefault(tuple(self._fit(ctx, cont)), []).append(i)
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        with tqdm(total=len(requests), desc="med42-rs loglikelihood", disable=disable_tqdm) as bar:
            for ctx_key, idx in groups.items():
                scores = self.model.score_many(list(ctx_key), [pairs[i][1] for i in idx])
                for i, (logprob, greedy) in zip(idx, scores):
                    out[i] = (float(logprob), bool(greedy))
                    self.cache_hook.add_partial("loglikelihood", requests[i].args, out[i])
                bar.update(len(idx))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole text after the prefix token (BOS), in windows of the
        context length where it is longer (each token is predicted once)."""
        out: list[float] = []
        for req in tqdm(requests, desc="med42-rs loglikelihood_rolling", disable=disable_tqdm):
            (text,) = req.args
            ids = self.model.tokenizer.encode(text, add_bos=False)
            windows = map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=ids, prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                    context_len=1,
                ),
            )  # fmt: skip
            total = sum(self.model.score_many(list(ctx), [list(pred)])[0][0] for ctx, pred in windows)
            out.append(float(total))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), out[-1])
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or, with ``do_sample``, sampled) text after each context, cut at the first of
        ``until`` and at most ``max_gen_toks`` tokens."""
        out: list[str] = []
        for req in tqdm(requests, desc="med42-rs generate_until", disable=disable_tqdm):
            context, gen_kwargs = req.args
            params = self._sampling(dict(gen_kwargs or {}))
            ids = self.tok_encode(context) or [self.prefix_token_id]
            room = self.max_length - params.max_tokens
            if room < 1:
                raise ContextLengthExceededError(
                    f"med42-rs: max_gen_toks={params.max_tokens} leaves no room for a context in "
                    f"{self.max_length} tokens"
                )
            text = self.model.generate(ids[-room:], params).text
            out.append(text)
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out

    def _sampling(self, kw: dict[str, Any]) -> SamplingParams:
        """lm-eval's generation arguments as :class:`SamplingParams`: greedy unless ``do_sample``,
        and like Hugging Face's ``generate`` no repeat penalty or top-k/top-p/min-p cut unless
        asked for (the engine's chat defaults would change the text)."""
        until = kw.pop("until", None)
        stop = [until] if isinstance(until, str) else list(until or [])
        max_tokens = int(kw.pop("max_gen_toks", self.max_gen_toks))
        do_sample = bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 1.0 if do_sample else 0.0))
        fields: dict[str, Any] = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
        for name in ("top_k", "top_p", "min_p", "repeat_penalty", "seed"):
            if name in kw:
                fields[name] = kw.pop(name)
        if kw:
            raise InvalidParameterError(
                f"med42-rs: unsupported generation argument(s): {', '.join(sorted(kw))}"
            )
        return SamplingParams(
            max_tokens=max_tokens, temperature=temperature if do_sample else 0.0, stop=stop, **fields
        )


# Once per process: ``python -m`` runs this file as ``__main__`` besides any import of it.
if "med42-rs" not in model_registry:
    model_registry.register("med42-rs")(Med42LM)


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line (``run``, ``ls``, ``validate``) with ``med42-rs`` registered and the
    offline tasks included."""
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    # lm-eval takes one include path: a folder of your own replaces ours (your task files can still
    # include ours by path, see lm_eval_tasks/README.md)
    if args and args[0] not in ("-h", "--help") and "--include_path" not in args:
        args += ["--include_path", str(TASKS_DIR)]
    sys.argv = [sys.argv[0], *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
