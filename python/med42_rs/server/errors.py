"""OpenAI error objects: every failure the server reports is ``{"error": {"message", "type",
"param", "code"}}`` with the HTTP status clients map to their exception classes (400
``BadRequestError``, 401 ``AuthenticationError``, 404 ``NotFoundError``, 413, 429
``RateLimitError``, 500 ``InternalServerError``)."""

from __future__ import annotations

import re
from typing import Any

from ..errors import (
    ChatTemplateError,
    ContextLengthExceededError,
    InternalError,
    InvalidParameterError,
    Med42Error,
    TokenizerError,
)

__all__ = ["APIError", "from_exception", "queue_full_error"]


class APIError(Exception):
    """An error answered to the client as an OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(param: str | None, message: str, code: str = "invalid_value") -> APIError:
    """A 400 for a request field that has the wrong type or value."""
    return APIError(400, message, param=param, code=code)


def unsupported(param: str, message: str) -> APIError:
    """A 400 for a request field whose feature the server does not offer."""
    return APIError(400, message, param=param, code="unsupported_parameter")


_FIELD = re.compile(r"`([a-z_]+)`")


def from_exception(e: BaseException, *, prompt_param: str = "messages") -> APIError:
    """The error object for an exception raised while serving a request: the engine's typed
    errors become 400s naming the parameter; anything else is a 500 that keeps the message."""
    if isinstance(e, APIError):
        return e
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, ContextLengthExceededError):
        return APIError(400, msg, param=prompt_param, code="context_length_exceeded")
    if isinstance(e, ChatTemplateError):
        return APIError(400, msg, param=prompt_param, code="chat_template_error")
    if isinstance(e, (InvalidParameterError, TokenizerError)):
        m = _FIELD.search(msg)
        return APIError(400, msg, param=m.group(1) if m else None, code="invalid_value")
    if type(e).__name__ == "QueueFullError":  # the engine's own queue (with the batching scheduler)
        return queue_full_error(msg)
    if isinstance(e, InternalError):
        return APIError(500, msg, type="server_error", code="internal_error")
    if isinstance(e, Med42Error):
        return APIError(500, msg, type="server_error", code=type(e).__name__)
    return APIError(500, f"{type(e).__name__}: {msg}", type="server_error", code="internal_error")


def queue_full_error(message: str) -> APIError:
    """429: every slot is busy and the waiting queue is full; the client should retry later."""
    return APIError(429, message, type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})
