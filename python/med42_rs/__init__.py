"""med42-rs: run the clinical LLM Med42 from its GGUF files.

A Rust engine (candle) memory-maps the GGUF file and runs the Llama forward pass; this package
adds the typed Python surface.
"""

from __future__ import annotations

from typing import Any

# _backend first: it picks the CPU or the CUDA build and installs it as med42_rs._native
from . import _backend, _native
from .errors import (
    AccessDeniedError,
    AuthenticationRequiredError,
    ChatTemplateError,
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
    ModelFileNotFoundError,
    NotGGUFError,
    QueueFullError,
    RemoteFileNotFoundError,
    RepositoryNotFoundError,
    SessionStateError,
    SplitFilesError,
    TokenizerError,
    TruncatedFileError,
    UnsupportedModelError,
)
from .generation import Chunk, Completion, Stream, TokenLogprob, Usage
from .model import Model
from .sampling import SamplingParams
from .session import Chat, Session
from .tokenizer import StreamDecoder, Tokenizer

__version__: str = _native.build_info()["version"]

__all__ = [
    "AccessDeniedError",
    "AuthenticationRequiredError",
    "Chat",
    "ChatTemplateError",
    "Chunk",
    "Completion",
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
    "ModelFileNotFoundError",
    "NotGGUFError",
    "QueueFullError",
    "RemoteFileNotFoundError",
    "RepositoryNotFoundError",
    "SamplingParams",
    "Session",
    "SessionStateError",
    "SplitFilesError",
    "Stream",
    "StreamDecoder",
    "TokenLogprob",
    "Tokenizer",
    "TokenizerError",
    "TruncatedFileError",
    "UnsupportedModelError",
    "Usage",
    "__version__",
    "build_info",
]


def build_info() -> dict[str, Any]:
    """What this build was compiled with and what runs on this CPU: ``kernels``, the instruction
    set the engine's CPU kernels use (chosen at run time, so portable wheels keep them:
    ``avx512vnni`` or ``avxvnni`` where the CPU has VNNI, ``avx2``, or ``scalar``, which is
    slow); ``dot_kernels``, the kernel each weight type gets
    (with ``+multi-row``/``+packed`` where prompts use those, ``+amx`` where the packed GEMM runs
    on AMX tiles); ``amx``, whether prompts use AMX (the K-quants, on a CPU with AMX-INT8,
    unless ``MED42_AMX=0``); ``candle_kernels``, the family
    candle's own kernels were compiled for; the SIMD features compiled in and those the CPU
    offers; the candle version and the cargo features. ``cuda`` says whether this is the CUDA build
    and ``cuda_compute_caps`` lists the GPU architectures its kernels were compiled for (``[90]``:
    H100/H200). ``native_module`` names the extension in use (``med42_rs._native``, the CPU build,
    or ``med42_rs_cuda._native`` from ``med42-rs-cuda``), ``backend`` the ``MED42_BACKEND`` choice
    and ``cuda_unavailable`` why the CUDA build is not in use (None when it is)."""
    info = dict(_native.build_info())
    info["native_module"] = _backend.native_module
    info["backend"] = _backend.choice
    info["cuda_unavailable"] = _backend.cuda_unavailable
    return info
