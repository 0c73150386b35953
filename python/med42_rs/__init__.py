"""med42-rs: run the clinical LLM Med42 from its GGUF files.

A Rust engine (candle) memory-maps the GGUF file and runs the Llama forward pass; this package
adds the typed Python surface.
"""

from __future__ import annotations

from typing import Any

from . import _native
from .errors import (
    AccessDeniedError,
    AuthenticationRequiredError,
    ContextLengthExceededError,
    DeviceUnavailableError,
    DownloadError,
    GenerationCancelled,
    InsufficientDiskSpaceError,
    InsufficientMemoryError,
    InternalError,
    InvalidModelFileError,
    InvalidParameterError,
    LicenseNotAcceptedError,
    Med42Error,
    MetadataError,
    ModelFileError,
    NotGGUFError,
    RemoteFileNotFoundError,
    RepositoryNotFoundError,
    SplitFilesError,
    TokenizerError,
    TruncatedFileError,
    UnsupportedModelError,
)
from .model import Model
from .tokenizer import StreamDecoder, Tokenizer

__version__: str = _native.build_info()["version"]

__all__ = [
    "AccessDeniedError",
    "AuthenticationRequiredError",
    "ContextLengthExceededError",
    "DeviceUnavailableError",
    "DownloadError",
    "GenerationCancelled",
    "InsufficientDiskSpaceError",
    "InsufficientMemoryError",
    "InternalError",
    "InvalidModelFileError",
    "InvalidParameterError",
    "LicenseNotAcceptedError",
    "Med42Error",
    "MetadataError",
    "Model",
    "ModelFileError",
    "NotGGUFError",
    "RemoteFileNotFoundError",
    "RepositoryNotFoundError",
    "SplitFilesError",
    "StreamDecoder",
    "Tokenizer",
    "TokenizerError",
    "TruncatedFileError",
    "UnsupportedModelError",
    "__version__",
    "build_info",
]


def build_info() -> dict[str, Any]:
    """What this build was compiled with: the quantized kernel family (``avx2``, ``neon``, or
    ``scalar``, which is slow), the SIMD features compiled in and those the CPU offers, and in
    ``dot_kernels`` the dot-product kernel each weight type gets on this CPU (``avx2``: chosen at
    run time; ``candle-avx2``/``candle-neon``: fixed at compile time; ``scalar``; with
    ``+multi-row`` where prompts use the multi-row kernel)."""
    return dict(_native.build_info())
