"""The loaded model: a thin typed layer over the native engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import numpy as np
import numpy.typing as npt

from . import _native
from .chat import MED42_STOPS, Message, Part, _check, med42_parts, render_jinja_parts
from .errors import ContextLengthExceededError, InvalidParameterError
from .generation import Completion, Stream, collect
from .license import ensure_accepted, license_for
from .sampling import SamplingArgs, SamplingParams, resolve
from .tokenizer import PathLike, Tokenizer, _paths

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .session import Chat, Session

__all__ = ["KvType", "Model"]

#: The element type of the K/V cache (llama.cpp's ``--cache-type-k/v`` names).
KvType = Literal["f16", "q8_0", "f32"]


class Model:
    """A Llama-architecture GGUF model (Med42, Med42-v2, ...) mapped into memory.

    Weights stay in the file mapping; every generation owns its own KV cache, so one ``Model``
    serves many threads and streams.
    """

    def __init__(self, native: _native.NativeModel) -> None:
        self._native = native
        self._tokenizer: Tokenizer | None = None
        self._chat_template: str | None = None
        self._bos_eos: tuple[str, str] | None = None

    @classmethod
    def load(
        cls,
        path: PathLike | Sequence[PathLike],
        *,
        device: str = "cpu",
        n_ctx: int | None = None,
        n_threads: int | None = None,
        backend: str | None = None,
        accept_license: bool | None = None,
        check_memory: bool = True,
        n_parallel: int | None = None,
        max_queue: int | None = None,
        kv_type: KvType = "f16",
        n_gpu_layers: int | None = None,
    ) -> Model:
        """Map and validate a GGUF model and load it.

        ``path`` is one file, the first of its byte-split parts (``NAME-split-a``) or gguf-split
        shards (``NAME-00001-of-0000N.gguf``; the other parts are found next to it), or the full
        list of parts in order. ``device`` is ``"cpu"``, ``"cuda"``/``"cuda:N"`` or ``"metal"``;
        ``n_ctx`` caps the context (default: the trained context length); ``n_threads`` sets the
        CPU threads (default: all CPUs available to the process). ``backend`` forces
        ``"native"`` (CPU only) or ``"candle"``.

        On a GPU (``device="cuda"``; needs the ``med42-rs-cuda`` package, see docs/GPU.md) the
        weights are uploaded as quantized tensors and the K/V caches live there in ``kv_type``
        (f16 or f32). ``n_gpu_layers`` (as llama.cpp's ``-ngl``) offloads only the last N blocks:
        the blocks before them run on the CPU with the native kernels, reading the mapping, and
        the hidden state crosses to the GPU once per forward pass. ``None`` or ``-1`` (default):
        every block. The token embedding is always gathered on the CPU; the output norm and
        matrix sit with the last block. Loading is refused with
        :class:`~med42_rs.InsufficientMemoryError` when the offloaded part (weights, caches of
        ``n_parallel`` sequences, activations and about 0.75 GiB of CUDA workspace) exceeds the
        GPU's free memory (``MED42_GPU_MEMORY_AVAILABLE`` overrides it, in bytes); running out
        of GPU memory later raises the same class and leaves the model usable.

        ``kv_type`` is the element type of every generation's K/V cache, as llama.cpp's
        ``--cache-type-k/v``: ``"f16"`` (default, 2 bytes per value), ``"q8_0"`` (ggml's 8-bit
        blocks, 34 bytes per 32 values: a quarter of f32; native CPU backend, heads of a multiple
        of 32 values) or ``"f32"``. For Med42-70B at 4,096 tokens one cache is 1.25 GiB in f16,
        0.66 GiB in q8_0 and 2.5 GiB in f32.

        Med42 files are gated by their license (see :mod:`med42_rs.license`): only the header is
        read until the license is accepted. ``accept_license=True`` accepts it; ``False`` never
        prompts; ``None`` (default) prompts on a terminal and raises
        :class:`~med42_rs.LicenseNotAcceptedError` elsewhere.

        On CPU, loading is refused with :class:`~med42_rs.InsufficientMemoryError` when the weights,
        one KV cache of ``n_ctx`` positions (in ``kv_type``) and scratch need more memory than is available
        (``MemAvailable``, or the container's cgroup limit; ``MED42_MEMORY_AVAILABLE`` overrides it
        in bytes); the message says what to do. ``check_memory=False`` skips the check.

        Generations from any number of threads are decoded together by the model's scheduler, one
        pass over the weights for all of them: ``n_parallel`` sequences at most (each with a KV
        cache of up to ``n_ctx`` positions, all counted by the memory check; default: as many as
        fit, at most 4), with up to ``max_queue`` more requests waiting (default 64; beyond it
        :class:`~med42_rs.QueueFullError` is raised at once).
        """
        paths = cls._license_gate(path, accept_license)
        return cls._load_accepted(
            paths, device=device, n_ctx=n_ctx, n_threads=n_threads, backend=backend,
            check_memory=check_memory, n_parallel=n_parallel, max_queue=max_queue, kv_type=kv_type,
            n_gpu_layers=n_gpu_layers,
        )  # fmt: skip

    @staticmethod
    def _license_gate(path: PathLike | Sequence[PathLike], accept_license: bool | None) -> list[str]:
        """The license check of :meth:`load`, from the header alone (no tensor data is read):
        returns the paths to pass to :meth:`_load_accepted`. Callers that show progress (the CLI)
        run it first, so that the question comes before anything else, and the check runs once."""
        paths = _paths(path)
        metadata, _, resolved = _native.read_header(paths)
        lic = license_for(paths=[*paths, *map(str, resolved)], metadata=metadata)
        ensure_accepted(lic, accept_license=accept_license)
        return paths

    @classmethod
    def _load_accepted(
        cls,
        paths: list[str],
        *,
        device: str = "cpu",
        n_ctx: int | None = None,
        n_threads: int | None = None,
        backend: str | None = None,
        check_memory: bool = True,
        n_parallel: int | None = None,
        max_queue: int | None = None,
        kv_type: KvType = "f16",
        n_gpu_layers: int | None = None,
    ) -> Model:
        """:meth:`load` after :meth:`_license_gate` passed for ``paths``."""
        native = _native.NativeModel.load(
            paths, device, n_ctx, n_threads, backend, check_memory, n_parallel, max_queue, kv_type,
            n_gpu_layers,
        )  # fmt: skip
        return cls(native)

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str,
        *,
        quant: str | None = "Q4_K_M",
        filename: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: PathLike | None = None,
        accept_license: bool | None = None,
        device: str = "cpu",
        n_ctx: int | None = None,
        n_threads: int | None = None,
        kv_type: KvType = "f16",
        n_gpu_layers: int | None = None,
    ) -> Model:
        """Download a GGUF model from the Hugging Face Hub (or find it in the local cache) and load it.

        ``quant`` picks the file(s) of that quantization from the repository listing
        (``"Q4_K_M"`` → ``med42-70b.Q4_K_M.gguf``; ``"Q6_K"`` → both ``-split-a``/``-split-b``
        parts, used in place without joining); ``filename`` names a file instead. Downloads go
        through ``huggingface_hub`` (its cache, resume, progress bars, ``HF_TOKEN``,
        ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``); free disk space is checked first. Gated Med42
        repositories need the license accepted before any weights are downloaded (see
        :meth:`load` for ``accept_license``).
        """
        from .hub import download

        def gate(files: list[str]) -> None:
            ensure_accepted(license_for(repo_id=repo_id, paths=files), accept_license=accept_license)

        paths = download(
            repo_id, quant=quant, filename=filename, revision=revision, token=token,
            cache_dir=cache_dir, before_download=gate,
        )  # fmt: skip
        return cls.load(
            paths, device=device, n_ctx=n_ctx, n_threads=n_threads, accept_license=accept_license,
            kv_type=kv_type, n_gpu_layers=n_gpu_layers,
        )  # fmt: skip

    @property
    def config(self) -> dict[str, Any]:
        """Hyper-parameters read from the ``llama.*`` metadata keys."""
        return self._native.config

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer stored in the file's ``tokenizer.ggml.*`` metadata."""
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self._native.tokenizer())
        return self._tokenizer

    @property
    def metadata(self) -> dict[str, Any]:
        """Every GGUF metadata key and value, in file order."""
        return self._native.metadata

    @property
    def n_ctx(self) -> int:
        """The context length generations may use."""
        return self._native.n_ctx

    @property
    def n_threads(self) -> int:
        """CPU threads the forward pass uses."""
        return self._native.n_threads

    @property
    def kv_type(self) -> KvType:
        """The element type of the K/V caches: ``"f16"``, ``"q8_0"`` or ``"f32"``."""
        return cast(KvType, self._native.kv_type)

    @property
    def device(self) -> str:
        """Where the offloaded blocks run: ``"cuda:0"`` etc., or ``"cpu"``."""
        return self._native.device

    @property
    def n_gpu_layers(self) -> int:
        """Blocks that run on the device (the last ones); 0 on the CPU."""
        return self._native.n_gpu_layers

    @property
    def backend(self) -> str:
        """The forward-pass implementation: ``"native"`` (CPU) or ``"candle"`` (GPUs)."""
        return self._native.backend

    @property
    def tensors(self) -> list[tuple[str, list[int], str, int]]:
        """The tensor directory: ``(name, ggml dims, type, bytes)``."""
        return self._native.tensors

    @property
    def n_parallel(self) -> int:
        """Sequences the scheduler decodes in one pass at most."""
        return self._native.n_parallel

    @property
    def scheduler_stats(self) -> dict[str, int]:
        """The scheduler's counters: ``passes`` (forward passes run), ``sequences`` (summed over
        passes), ``max_batch`` (most sequences in one pass), ``abandoned`` (passes interrupted by
        a cancel or Ctrl-C), ``tokens`` (prompt tokens computed and generated tokens fed, over
        completed passes), ``queued`` and ``active`` (now)."""
        return self._native.scheduler_stats

    def session(self, n_ctx: int | None = None) -> Session:
        """A :class:`~med42_rs.Session`: a KV cache that keeps its tokens between generations,
        so a prompt that starts like the previous one only computes what is new."""
        from .session import Session

        return Session(self, self._native.session(n_ctx))

    def start_chat(
        self, *, system: str | None = None, template: str | None = None, n_ctx: int | None = None
    ) -> Chat:
        """A :class:`~med42_rs.Chat`: a conversation whose every turn reuses the KV cache of the
        turns before it."""
        from .session import Chat

        return Chat(self.session(n_ctx), system=system, template=template)

    @property
    def weights_mapped(self) -> bool:
        """True when every weight matrix is used in place from the file mapping."""
        return self._native.weights_mapped

    def logits(self, ids: Sequence[int], n_batch: int | None = None) -> npt.NDArray[np.float32]:
        """Logits for every position of ``ids``: an array ``(len(ids), n_vocab)`` of float32.

        ``n_batch`` tokens go through the model per pass (default 512). On the CPU the result
        does not depend on it, bit for bit, and equals what token-by-token generation sees.
        The array is written once, in place, and is writable. Ctrl-C stops it."""
        data, rows, cols = self._native.logits(ids, n_batch)
        return np.frombuffer(data, dtype=np.float32).reshape(rows, cols)

    def greedy_ids(self, ids: Sequence[int], n: int) -> list[int]:
        """Greedy continuation of the token ids ``ids`` for ``n`` tokens. Ctrl-C stops it."""
        return self._native.greedy(ids, n)

    # ------------------------------------------------------------------------------------------
    # generation

    @overload
    def generate(
        self,
        prompt: str | Sequence[int],
        sampling: SamplingParams | None = ...,
        *,
        stream: Literal[False] = ...,
        logprobs: int | None = ...,
        special: bool = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Completion: ...
    @overload
    def generate(
        self,
        prompt: str | Sequence[int],
        sampling: SamplingParams | None = ...,
        *,
        stream: Literal[True],
        logprobs: int | None = ...,
        special: bool = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Stream: ...

    def generate(
        self,
        prompt: str | Sequence[int],
        sampling: SamplingParams | None = None,
        *,
        stream: bool = False,
        logprobs: int | None = None,
        special: bool = False,
        **kw: Unpack[SamplingArgs],
    ) -> Completion | Stream:
        """Continue ``prompt`` (text, or token ids used as given).

        Sampling is a :class:`~med42_rs.SamplingParams` and/or its fields as keyword arguments
        (``max_tokens``, ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repeat_penalty``,
        ``repeat_last_n``, ``seed``, ``stop``; keywords override ``sampling``'s fields). The
        repeat penalty applies first, then top-k, top-p and min-p, then ``temperature`` (0 means
        greedy); the same ``seed`` gives the same output. Generation ends at an
        end-of-generation token (``finish_reason="eos"``), after ``max_tokens`` (``"length"``)
        or at a ``stop`` string (``"stop"``; the stop string and what follows are not returned).

        Text is encoded with BOS as the vocabulary asks; ``special=True`` lets control-token text in
        the prompt become control tokens (for prompts built from a template).

        ``logprobs=N`` (0 to 20) adds to every chunk (and the completion) a
        :class:`~med42_rs.TokenLogprob` per token: its log-probability under the model (before the
        repeat penalty and temperature) and the ``N`` most likely tokens at that step.

        With ``stream=True`` a :class:`~med42_rs.Stream` of :class:`Chunk` is returned (cancel it
        from any thread with ``cancel()``); otherwise a :class:`Completion`. A prompt that cannot
        fit ``max_tokens`` more tokens in the context raises
        :class:`~med42_rs.ContextLengthExceededError` before anything runs.
        """
        params = resolve(sampling, kw)
        ids = self._prompt_ids(prompt, special)
        chunks = Stream(self._native.generate(ids, params, [], logprobs), params.stop, logprobs is not None)
        return chunks if stream else collect(chunks)

    def _prompt_ids(self, prompt: str | Sequence[int], special: bool) -> Sequence[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, special=special)
        if prompt is None or isinstance(prompt, (bytes, bytearray)):
            raise InvalidParameterError(
                "invalid value for `prompt`: expected a str or a list of token ids, "
                f"got {type(prompt).__name__}"
            )
        return prompt

    def _chat_request(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        system: str | None,
        template: str | None,
        truncate: bool,
    ) -> tuple[list[int], SamplingParams]:
        """The prompt ids of a chat turn and its sampling (with the Med42 role-marker stops)."""
        if truncate:
            messages = self.fit_messages(messages, params.max_tokens, system=system, template=template)
        ids = self.chat_ids(messages, system=system, template=template)
        if self._template(template) == "med42":
            stops = params.stop
            params = params.replace(stop=stops + [s for s in MED42_STOPS if s not in stops])
        return ids, params

    def chat_prompt(
        self, messages: Sequence[Message], *, system: str | None = None, template: str | None = None
    ) -> str:
        """The prompt text for ``messages`` (dicts with ``role`` and ``content``).

        ``template``: ``"med42"`` for the Med42 format, a Jinja chat template string, or ``None``
        to use the file's ``tokenizer.chat_template`` when it has one and the Med42 format
        otherwise. Jinja templates render in the engine's sandbox (see
        :func:`~med42_rs.chat.render_jinja`).
        """
        return "".join(t for t, _ in self._chat_parts(messages, system, template))

    def _template(self, template: str | None) -> str:
        """``template``, or the file's ``tokenizer.chat_template`` (read once: the metadata dict
        holds the whole vocabulary), or ``"med42"``."""
        if template:
            if not isinstance(template, str):
                raise InvalidParameterError(f"template: must be a str, got {type(template).__name__}")
            return template
        if self._chat_template is None:
            found = self._native.metadata.get("tokenizer.chat_template")
            self._chat_template = found if isinstance(found, str) and found else "med42"
        return self._chat_template

    def _chat_parts(
        self, messages: Sequence[Message], system: str | None, template: str | None
    ) -> list[Part]:
        template = self._template(template)
        if template == "med42":
            return med42_parts(messages, system)
        tok = self.tokenizer
        if self._bos_eos is None:
            bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else ""
            eos = tok.token_text(tok.eos_id) if tok.eos_id is not None else ""
            self._bos_eos = (bos, eos)
        bos, eos = self._bos_eos
        parts = render_jinja_parts(
            template, messages, tok._native, bos_token=bos, eos_token=eos, system=system
        )
        if bos and tok.add_bos and parts and parts[0][1] and parts[0][0].startswith(bos):
            parts[0] = (parts[0][0][len(bos) :], True)  # encoding adds BOS itself
            if not parts[0][0]:
                del parts[0]
        return parts

    def chat_ids(
        self, messages: Sequence[Message], *, system: str | None = None, template: str | None = None
    ) -> list[int]:
        """The prompt token ids for ``messages``: special tokens are parsed in the template's markup
        only, never in message contents (a user typing ``</s>`` gets text, not EOS)."""
        parts = self._chat_parts(messages, system, template)
        return self.tokenizer._native.encode_parts(list(parts), True)

    @overload
    def chat(
        self,
        messages: Sequence[Message],
        sampling: SamplingParams | None = ...,
        *,
        system: str | None = ...,
        template: str | None = ...,
        truncate: bool = ...,
        stream: Literal[False] = ...,
        logprobs: int | None = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Completion: ...
    @overload
    def chat(
        self,
        messages: Sequence[Message],
        sampling: SamplingParams | None = ...,
        *,
        system: str | None = ...,
        template: str | None = ...,
        truncate: bool = ...,
        stream: Literal[True],
        logprobs: int | None = ...,
        **kw: Unpack[SamplingArgs],
    ) -> Stream: ...

    def chat(
        self,
        messages: Sequence[Message],
        sampling: SamplingParams | None = None,
        *,
        system: str | None = None,
        template: str | None = None,
        truncate: bool = False,
        stream: bool = False,
        logprobs: int | None = None,
        **kw: Unpack[SamplingArgs],
    ) -> Completion | Stream:
        """Answer the last user message of ``messages``.

        The prompt is :meth:`chat_ids` (the Med42 template with the card's system prompt unless
        the file carries its own chat template). With the Med42 format, generation also stops at
        the next role marker, so the model does not write the user's turn. Sampling is as in
        :meth:`generate`.

        A conversation whose prompt plus ``max_tokens`` does not fit the context raises
        :class:`~med42_rs.ContextLengthExceededError`; with ``truncate=True`` the oldest turns are
        dropped instead (a user message with the answers that follow it), never the system prompt
        and never the last user message. See :meth:`fit_messages`.
        """
        ids, params = self._chat_request(messages, resolve(sampling, kw), system, template, truncate)
        return self.generate(ids, params, stream=stream, logprobs=logprobs)  # type: ignore[call-overload, no-any-return]

    def fit_messages(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        *,
        system: str | None = None,
        template: str | None = None,
    ) -> list[Message]:
        """``messages`` without their oldest turns, so the chat prompt plus ``max_tokens`` fits the
        context. System messages and the last user message are always kept; a turn (a user
        message and the assistant messages after it) is dropped as a whole, oldest first.
        Raises :class:`~med42_rs.ContextLengthExceededError` when even the system prompt and the
        last user message leave no room for ``max_tokens``."""
        _check(messages)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise InvalidParameterError(
                f"invalid value for `max_tokens`: must be an int >= 0, got {max_tokens!r}"
            )
        msgs = list(messages)
        budget = self.n_ctx - max_tokens
        while True:
            n = len(self.chat_ids(msgs, system=system, template=template))
            if n <= budget:
                return msgs
            turns = [i for i, m in enumerate(msgs) if m.get("role") != "system"]
            users = [i for i in turns if msgs[i].get("role") == "user"]
            last_user = users[-1] if users else -1
            if not turns or turns[0] >= last_user:
                raise ContextLengthExceededError(
                    f"the system prompt and the last user message take {n} tokens; with "
                    f"max_tokens={max_tokens} that exceeds the context of {self.n_ctx} tokens. "
                    "Shorten the message, lower max_tokens, or load the model with a larger n_ctx."
                )
            # Drop the oldest non-system message and the assistant replies that follow it (never
            # the last user message or anything after it).
            drop = {turns[0]}
            for i in turns[1:]:
                if msgs[i].get("role") != "assistant" or i >= last_user:
                    break
                drop.add(i)
            msgs = [m for i, m in enumerate(msgs) if i not in drop]

    def score(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[float, bool]:
        """``(log P(continuation | context), is_greedy)`` from one batched forward pass: the
        lm-evaluation-harness ``loglikelihood`` primitive. Both are token-id lists; ``context``
        usually starts with BOS."""
        return self._native.score(context, continuation)

    def score_many(
        self, context: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[tuple[float, bool]]:
        """:meth:`score` of each continuation after the one ``context``: the context runs through
        the model once and every continuation continues it from the KV cache (the choices of a
        multiple-choice question). Each result equals ``score(context, continuation)``."""
        return self._native.score_many(context, continuations)
