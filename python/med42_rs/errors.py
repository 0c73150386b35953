"""The exception hierarchy of med42-rs.

Every error the engine raises derives from :class:`Med42Error`. Where Python users expect a
built-in type, the class also derives from it (a bad parameter is a ``ValueError``, a missing
file is a ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AuthenticationRequiredError",
    "ChatTemplateError",
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
    "ModelFileError",
    "ModelFileNotFoundError",
    "NotGGUFError",
    "QueueFullError",
    "RemoteFileNotFoundError",
    "RepositoryNotFoundError",
    "SessionStateError",
    "SplitFilesError",
    "TokenizerError",
    "TruncatedFileError",
    "UnsupportedModelError",
]


class Med42Error(Exception):
    """Base class of every error raised by med42-rs."""


class ModelFileError(Med42Error, OSError):
    """A model file cannot be opened, read or understood."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """A model file (or a part of a split model) does not exist; also a ``FileNotFoundError``."""


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


class InsufficientDiskSpaceError(Med42Error, OSError):
    """The disk holding the download cache has too little free space for the files to download;
    the message gives the bytes needed, the bytes free and the directory."""


class DownloadError(Med42Error, OSError):
    """A model could not be downloaded from (or found offline in the cache of) the Hugging Face Hub:
    the network failed, the transfer was interrupted, or the model is not cached while offline. The
    subclasses are the failures a user fixes differently (log in, request access, fix a name)."""


class AuthenticationRequiredError(DownloadError, PermissionError):
    """The Hub answered 401: the repository is gated or private and no valid token was sent. Log in
    with ``hf auth login`` or set the ``HF_TOKEN`` environment variable."""


class AccessDeniedError(DownloadError, PermissionError):
    """The Hub answered 403: the token is valid but has no access to the repository (for a gated
    repository: access has not been requested or granted, or its license not accepted on the Hub)."""


class RepositoryNotFoundError(DownloadError, LookupError):
    """The repository, or the requested revision of it, does not exist on the Hub."""


class RemoteFileNotFoundError(DownloadError, LookupError):
    """The requested file does not exist in the repository at that revision."""


class InternalError(Med42Error, RuntimeError):
    """A bug in med42-rs (a Rust panic caught at the boundary); the model stays usable. Please
    report it with the message."""


class ChatTemplateError(Med42Error, ValueError):
    """A chat template that does not compile, refuses the messages (its ``raise_exception``), or
    runs past its step or output limits. Pass ``template="med42"`` or another template."""


class SessionStateError(Med42Error, ValueError):
    """A saved session state that cannot be restored into this session: made with another model or
    KV cache type, damaged or truncated, or longer than the session's context."""


class QueueFullError(Med42Error, RuntimeError):
    """More requests are waiting for the engine than its queue holds (``max_queue`` of
    :meth:`Model.load`); retry later. A server answers it with 429 or 503."""
