"""The tokenizer stored in a GGUF file, matching llama.cpp id for id."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Literal, Union

from . import _native
from .errors import InvalidParameterError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["StreamDecoder", "Tokenizer"]

TokenType = Literal["normal", "control", "user_defined", "byte", "unknown", "unused", "undefined"]


def _paths(path: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    if isinstance(path, (list, tuple)) and path and all(isinstance(p, (str, os.PathLike)) for p in path):
        return [os.fspath(p) for p in path]
    raise InvalidParameterError(
        "invalid value for `path`: expected a file path (str or os.PathLike) or a non-empty list "
        f"of them, got {path!r:.80}"
    )


class StreamDecoder:
    """Turns token ids, one at a time, into text chunks that are always whole characters.

    A character spread over several byte tokens is emitted once complete; invalid bytes become
    U+FFFD. The chunks of ``push`` plus ``finish()`` join to ``Tokenizer.decode`` of all ids.
    """

    def __init__(self, native: _native.NativeStreamDecoder) -> None:
        self._native = native

    def push(self, token_id: int) -> str:
        """Add one id and return the text that became final (often ``""`` mid-character)."""
        return self._native.push(token_id)

    def finish(self) -> str:
        """End of stream: return whatever was held back."""
        return self._native.finish()


class Tokenizer:
    """Llama-2 SentencePiece (Med42) or byte-level BPE (Med42-v2, SmolLM2) from GGUF metadata."""

    def __init__(self, native: _native.NativeTokenizer) -> None:
        self._native = native

    @classmethod
    def from_file(cls, path: PathLike | Sequence[PathLike]) -> Tokenizer:
        """Read only the tokenizer of a GGUF file (or its split parts); vocab-only files work."""
        return cls(_native.NativeTokenizer.from_file(_paths(path)))

    def encode(self, text: str, *, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Text to token ids.

        ``add_bos``: ``None`` follows the vocabulary (Llama-2 and Llama-3 prepend BOS), ``True`` or
        ``False`` force it. ``special``: when ``True``, control-token text such as ``</s>`` or
        ``<|eot_id|>`` becomes that token (templates need this); when ``False`` (the default, for
        user text) it is tokenized as plain characters, so user input cannot inject control tokens.
        """
        if not isinstance(text, str):
            raise InvalidParameterError(
                f"invalid value for `text`: expected a str, got {type(text).__name__}"
            )
        native = self._native
        if add_bos is None:
            return native.encode(text, True, special)
        ids = native.encode(text, False, special)
        if add_bos:
            if self.bos_id is None:
                raise InvalidParameterError(
                    "invalid value for `add_bos`: this vocabulary has no BOS token; use add_bos=None or False"
                )
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Iterable[int], *, special: bool = False) -> str:
        """Token ids to text, as llama.cpp detokenizes them.

        Byte tokens are reassembled into UTF-8 (invalid sequences become U+FFFD), ``▁`` becomes a
        space, and the space prefix SentencePiece adds is dropped from the first token unless the
        ids start with BOS. Control tokens (BOS, EOS, ...) render only when ``special`` is true.
        """
        return self._native.decode(ids, special)

    def token_to_piece(self, token_id: int, *, special: bool = True) -> bytes:
        """The raw bytes of one token (a byte token is one byte, possibly part of a character)."""
        return self._native.token_to_piece(token_id, special)

    def token_text(self, token_id: int) -> str:
        """The token as stored in the vocabulary (with ``▁`` or byte-encoding characters)."""
        return self._native.token_text(token_id)

    def token_type(self, token_id: int) -> TokenType:
        """``normal``, ``control``, ``user_defined``, ``byte``, ``unknown``, ``unused`` or ``undefined``."""
        return self._native.token_type(token_id)  # type: ignore[return-value]

    def token_id(self, text: str) -> int | None:
        """The id whose vocabulary text is exactly ``text``, or ``None``."""
        return self._native.token_id(text)

    def stream(self, *, special: bool = False) -> StreamDecoder:
        """A fresh :class:`StreamDecoder`."""
        return StreamDecoder(self._native.stream(special))

    @property
    def vocab_size(self) -> int:
        """Number of tokens."""
        return self._native.vocab_size

    @property
    def kind(self) -> Literal["llama", "gpt2"]:
        """``llama`` (SentencePiece) or ``gpt2`` (byte-level BPE)."""
        return self._native.kind  # type: ignore[return-value]

    @property
    def pre(self) -> str | None:
        """The BPE pre-tokenizer (``llama-bpe``, ``smollm``, ``gpt-2``, ``default``), or ``None``."""
        return self._native.pre

    @property
    def bos_id(self) -> int | None:
        """Beginning-of-sequence id."""
        return self._native.bos_id

    @property
    def eos_id(self) -> int | None:
        """End-of-sequence id."""
        return self._native.eos_id

    @property
    def eot_id(self) -> int | None:
        """End-of-turn id (``<|eot_id|>``, ``<|im_end|>``), if the vocabulary has one."""
        return self._native.eot_id

    @property
    def unk_id(self) -> int | None:
        """Unknown-token id."""
        return self._native.unk_id

    @property
    def eog_ids(self) -> list[int]:
        """Every id that ends a generation (EOS, EOT and other end-of-turn tokens)."""
        return self._native.eog_ids

    @property
    def add_bos(self) -> bool:
        """Whether ``encode`` prepends BOS by default."""
        return self._native.add_bos

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, pre={self.pre!r}, vocab_size={self.vocab_size})"
