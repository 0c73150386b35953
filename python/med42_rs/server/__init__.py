"""An OpenAI-compatible HTTP server for med42-rs models (``med42 serve``, the ``server`` extra).

``create_app(model, ServerConfig(...))`` is the ASGI application (Starlette); ``med42 serve`` and
``python -m med42_rs.server`` load a model behind the license gate and run it with uvicorn.
Importing this package needs no server dependency; :func:`create_app` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
