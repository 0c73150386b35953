"""The exception hierarchy of med42-rs.

Every error the engine raises derives from :class:`Med42Error`. Where Python users expect a
built-in type, the class also derives from it (a bad parameter is a ``ValueError``, a missing
file is a ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ContextLengthExceededError",
    "DeviceUnavailableError",
    "GenerationCancelled",
    "InsufficientMemoryError",
    "InvalidModelFileError",
    "InvalidParameterError",
    "LicenseNotAcceptedError",
    "Med42Error",
    "MetadataError",
    "ModelFileError",
    "NotGGUFError",
    "SplitFilesError",
    "TokenizerError",
    "TruncatedFileError",
    "UnsupportedModelError",
]


class Med42Error(Exception):
    """Base class of every error raised by med42-rs."""


class ModelFileError(Med42Error, OSError):
    """A model file cannot be opened, read or understood."""


class NotGGUFError(ModelFileError, ValueError):
    """The file is not a GGUF file (a safetensors file, an HTML page, ...)."""


class InvalidModelFileError(ModelFileError, ValueError):
    """The GGUF file is structurally invalid or its tensors do not fit its config."""


class TruncatedFileError(InvalidModelFileError):
    """The file ends before the data it declares: usually an interrupted download."""


class SplitFilesError(InvalidModelFileError):
    """The parts of a split model file do not form a whole: a part is missing, the parts are in
    the wrong order, or a later part was given alone. The message names the missing file(s) and the
    naming convention detected."""


class MetadataError(InvalidModelFileError):
    """A required GGUF metadata key is missing or has the wrong type."""


class UnsupportedModelError(Med42Error, ValueError):
    """A valid file this engine does not run (another architecture, an IQ quant type, ...)."""


class DeviceUnavailableError(Med42Error, RuntimeError):
    """The requested device is not in this build or not on this machine."""


class InvalidParameterError(Med42Error, ValueError):
    """An argument is out of range; the message names the parameter."""


class ContextLengthExceededError(InvalidParameterError):
    """The prompt plus the requested tokens do not fit in the context window."""


class InsufficientMemoryError(Med42Error, MemoryError):
    """Loading would need more memory than the machine has available."""


class TokenizerError(Med42Error, ValueError):
    """Tokenizer metadata is inconsistent or text cannot be tokenized."""


class GenerationCancelled(Med42Error):
    """A generation was cancelled before it finished."""


class LicenseNotAcceptedError(Med42Error, PermissionError):
    """Med42's license has not been accepted; the message lists the ways to accept it."""
