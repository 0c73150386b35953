"""The loaded model: a thin typed layer over the native engine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from . import _native
from .tokenizer import Tokenizer

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["Model"]


def _paths(path: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    return [os.fspath(p) for p in path]


class Model:
    """A Llama-architecture GGUF model (Med42, Med42-v2, ...) mapped into memory.

    Weights stay in the file mapping; every generation owns its own KV cache, so one ``Model``
    serves many threads and streams.
    """

    def __init__(self, native: _native.NativeModel) -> None:
        self._native = native
        self._tokenizer: Tokenizer | None = None

    @classmethod
    def load(
        cls,
        path: PathLike | Sequence[PathLike],
        *,
        device: str = "cpu",
        n_ctx: int | None = None,
        n_threads: int | None = None,
        backend: str | None = None,
    ) -> Model:
        """Map and validate a GGUF file (or its byte-split parts, in order) and load the model.

        ``device`` is ``"cpu"``, ``"cuda"``/``"cuda:N"`` or ``"metal"``; ``n_ctx`` caps the context
        (default: the trained context length); ``n_threads`` sets the CPU threads (default: all
        CPUs available to the process). ``backend`` forces ``"native"`` (CPU only) or ``"candle"``.
        """
        return cls(_native.NativeModel.load(_paths(path), device, n_ctx, n_threads, backend))

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
    def backend(self) -> str:
        """The forward-pass implementation: ``"native"`` (CPU) or ``"candle"`` (GPUs)."""
        return self._native.backend

    @property
    def tensors(self) -> list[tuple[str, list[int], str, int]]:
        """The tensor directory: ``(name, ggml dims, type, bytes)``."""
        return self._native.tensors

    @property
    def weights_mapped(self) -> bool:
        """True when every weight matrix is used in place from the file mapping."""
        return self._native.weights_mapped

    def logits(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Logits for every position of ``ids``: an array ``(len(ids), n_vocab)`` of float32."""
        data, rows, cols = self._native.logits_bytes(list(ids))
        return np.frombuffer(data, dtype=np.float32).reshape(rows, cols)

    def greedy_ids(self, ids: Sequence[int], n: int) -> list[int]:
        """Greedy continuation of the token ids ``ids`` for ``n`` tokens."""
        return self._native.greedy(list(ids), n)
