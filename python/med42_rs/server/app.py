"""The ASGI application: OpenAI's ``/v1/models``, ``/v1/chat/completions`` and
``/v1/completions``, llama.cpp's ``/tokenize``, ``/detokenize``, ``/health``, ``/slots`` and
``/props``, and the chat page at ``/``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import _native
from ..model import Model
from .errors import APIError, from_exception, invalid
from .protocol import GenerationRequest, ids_field, parse_chat, parse_completion
from .responses import Choices
from .slots import Event, Job, SlotPool

__all__ = ["GENERIC_DISCLAIMER", "ServerConfig", "create_app"]

GENERIC_DISCLAIMER = "Answers come from a language model and can be wrong; they are not medical advice."


@dataclass
class ServerConfig:
    """What ``med42 serve`` was started with."""

    model_id: str
    parallel: int = 1
    max_waiting: int = 16
    """Choices that may wait for a slot; more get 429."""
    api_key: str | None = None
    template: str | None = None
    """Chat template: ``None`` (the file's, else Med42's), ``"med42"`` or a Jinja string."""
    max_body: int = 4 << 20
    """Largest request body in bytes (413 past it)."""
    license: dict[str, Any] | None = None
    """The model's license and how it was accepted (``None``: not gated), for ``/props``."""
    disclaimer: str = GENERIC_DISCLAIMER
    """Shown on the chat page (``med42 serve`` shows the Med42 license summary for Med42 files)."""
    extra: dict[str, Any] = field(default_factory=dict)


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(receive: Receive, work: Awaitable[Any]) -> Any:
    """Await ``work``; if the client disconnects first, cancel it (and with it the generation)
    and raise ``asyncio.CancelledError``."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        raise asyncio.CancelledError
    return task.result()


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response that ends (and so cancels its generation) the moment the
    client disconnects, whatever the ASGI server's spec version."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for part in self.body_iterator:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await _unless_disconnected(receive, pump())
        finally:  # whatever ended it, the generations stop (the body's own cleanup cancels them)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


class Server:
    """The model, its slots and the request handlers."""

    def __init__(self, model: Model, config: ServerConfig) -> None:
        self.model = model
        self.config = config
        self.pool: SlotPool | None = None
        self.started = int(time.time())
        self.fingerprint = f"med42-rs-{_native.build_info()['version']}"

    @property
    def slots(self) -> SlotPool:
        assert self.pool is not None, "the app's lifespan has not started"
        return self.pool

    # -- plumbing --------------------------------------------------------------------------

    def _authorized(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise APIError(
                401,
                "invalid or missing API key: send the key given to `med42 serve --api-key` as "
                "`Authorization: Bearer KEY`",
                param=None,
                code="invalid_api_key",
            )

    async def _json(self, request: Request) -> Any:
        limit = self.config.max_body
        declared = request.headers.get("content-length", "")
        too_big = declared.isdigit() and int(declared) > limit
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                too_big = True
            if not too_big:
                parts.append(part)
            elif size > 64 * limit:  # stop reading a body that does not end
                break
        if too_big:
            raise APIError(
                413,
                f"the request body is larger than this server accepts ({limit} bytes; "
                "`med42 serve --max-body` sets it)",
                code="request_too_large",
            )
        try:
            return json.loads(b"".join(parts))
        except ValueError as e:
            raise invalid(None, f"the request body is not valid JSON: {e}", "invalid_json") from None

    def endpoint(
        self, handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                if auth:
                    self._authorized(request)
                return await handler(request)
            except APIError as e:
                return _error(e)
            except asyncio.CancelledError:
                return Response(status_code=499)  # the client went away; nobody reads this
            except Exception as e:
                return _error(from_exception(e))

        return run

    # -- generation ------------------------------------------------------------------------

    def _prepare(self, req: GenerationRequest) -> tuple[list[Job], list[str]]:
        """Tokenize (in a worker thread: prompts may be long), check the context, make the jobs."""
        model, n_ctx = self.model, self.model.n_ctx
        prompts: list[tuple[list[int], Any]] = []
        if req.messages is not None:
            prompts.append((model.chat_ids(req.messages, template=self.config.template), req.messages))
        else:
            for p in req.prompts:
                ids = model.tokenizer.encode(p) if isinstance(p, str) else p
                prompts.append((ids, p))
        jobs: list[Job] = []
        echo: list[str] = []
        for g, (ids, what) in enumerate(prompts):
            # Without max_tokens the answer may fill the context (at least one token must fit).
            max_tokens = req.sampling.max_tokens if req.max_tokens_given else n_ctx - len(ids)
            if len(ids) + max(max_tokens, 1 if not req.max_tokens_given else 0) > n_ctx:
                raise APIError(
                    400,
                    f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                    f"{len(ids) + max_tokens} tokens ({len(ids)} in the {req.prompt_param}, "
                    f"{max_tokens if req.max_tokens_given else 'at least 1'} in the completion). "
                    f"Please reduce the length of the {req.prompt_param} or completion.",
                    param=req.prompt_param,
                    code="context_length_exceeded",
                )
            if req.echo:
                echo.append(what if isinstance(what, str) else model.tokenizer.decode(what))
            for j in range(req.n):
                sampling = req.sampling.replace(max_tokens=max_tokens)
                if j and sampling.seed is not None:  # each choice its own draw, reproducibly
                    sampling = sampling.replace(seed=(sampling.seed + j) % 2**64)
                jobs.append(
                    Job(
                        index=len(jobs),
                        ids=list(ids),
                        sampling=sampling,
                        messages=req.messages,
                        prompt=None if req.messages is not None else list(ids),
                        cache_prompt=req.cache_prompt,
                        logprobs=req.logprobs,
                        group=g,
                    )
                )
        return jobs, echo

    async def generate(self, request: Request, parse: Callable[[Any], GenerationRequest]) -> Response:
        req = parse(await self._json(request))
        try:
            jobs, echo = await asyncio.to_thread(self._prepare, req)
        except APIError:
            raise
        except Exception as e:
            raise from_exception(e, prompt_param=req.prompt_param) from e
        choices = Choices(
            req.kind, self.config.model_id, self.fingerprint, len(jobs),
            [j.group for j in jobs], echo, piece=self._piece if req.logprobs is not None else None,
        )  # fmt: skip
        events = self.slots.run(jobs)
        try:
            first = await _unless_disconnected(request.receive, events.__anext__())
        except BaseException:
            await events.aclose()
            raise
        if first[1] == "error":
            await events.aclose()
            raise from_exception(first[2], prompt_param=req.prompt_param)
        if req.stream:
            return EventStream(self._stream(req, choices, first, events))
        try:
            await _unless_disconnected(request.receive, self._collect(req, choices, first, events))
        finally:
            await events.aclose()
        return JSONResponse(choices.response())

    async def _collect(
        self, req: GenerationRequest, choices: Choices, first: Event, events: AsyncGenerator[Event, None]
    ) -> None:
        event: Event | None = first
        while event is not None:
            index, kind, item = event
            if kind == "error":
                raise from_exception(item, prompt_param=req.prompt_param)
            if kind == "chunk":
                choices.add(index, item)
            event = await anext_or_none(events)

    async def _stream(
        self, req: GenerationRequest, choices: Choices, first: Event, events: AsyncGenerator[Event, None]
    ) -> AsyncIterator[bytes]:
        event: Event | None = first
        usage = req.include_usage
        try:
            while event is not None:
                index, kind, item = event
                obj: dict[str, Any] | None = None
                if kind == "start":
                    obj = choices.start_chunk(index, usage)
                elif kind == "chunk":
                    choices.add(index, item)
                    obj = choices.text_chunk(index, item, usage)
                elif kind == "error":
                    yield _sse(from_exception(item, prompt_param=req.prompt_param).body())
                    return
                elif kind == "end" and choices.finish[index] is None:
                    err = APIError(500, "the generation was cancelled (the server is shutting down)",
                                   type="server_error", code="cancelled")  # fmt: skip
                    yield _sse(err.body())
                    return
                if obj is not None:
                    yield _sse(obj)
                event = await anext_or_none(events)
            if usage:
                yield _sse(choices.usage_chunk())
            yield b"data: [DONE]\n\n"
        finally:
            await events.aclose()

    def _piece(self, token_id: int) -> bytes:
        return self.model.tokenizer.token_to_piece(token_id)

    # -- the other endpoints ---------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self.generate(request, parse_chat)

    async def completions(self, request: Request) -> Response:
        return await self.generate(request, parse_completion)

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_object()]})

    def _model_object(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "id": self.config.model_id,
            "object": "model",
            "created": self.started,
            "owned_by": "med42-rs",
            "meta": {
                "n_ctx": self.model.n_ctx,
                "n_ctx_train": cfg.get("n_ctx_train"),
                "n_vocab": cfg.get("n_vocab"),
            },
        }

    async def model_info(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name != self.config.model_id:
            raise APIError(
                404, f"the model {name!r} does not exist; this server serves {self.config.model_id!r}",
                param="model", code="model_not_found",
            )  # fmt: skip
        return JSONResponse(self._model_object())

    async def tokenize(self, request: Request) -> Response:
        body = await self._json(request)
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, str):
            raise invalid("content", "`content` must be a string")
        add_special, with_pieces = body.get("add_special", False), body.get("with_pieces", False)
        parse_special = body.get("parse_special", True)
        for name, v in (
            ("add_special", add_special),
            ("with_pieces", with_pieces),
            ("parse_special", parse_special),
        ):
            if not isinstance(v, bool):
                raise invalid(name, f"`{name}` must be a boolean", "invalid_type")
        tok = self.model.tokenizer
        ids = await asyncio.to_thread(
            tok.encode, content, add_bos=None if add_special else False, special=parse_special
        )
        if not with_pieces:
            return JSONResponse({"tokens": ids})
        pieces = [{"id": i, "piece": tok.token_to_piece(i).decode("utf-8", "replace")} for i in ids]
        return JSONResponse({"tokens": pieces})

    async def detokenize(self, request: Request) -> Response:
        ids = ids_field(await self._json(request), "tokens")
        n_vocab = self.model.tokenizer.vocab_size
        bad = next((t for t in ids if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise invalid("tokens", f"token id {bad} is out of range for a vocabulary of {n_vocab}")
        return JSONResponse({"content": self.model.tokenizer.decode(ids)})

    async def health(self, request: Request) -> Response:
        pool = self.slots
        body: dict[str, Any] = {
            "status": "ok",
            "slots_idle": len(pool.slots) - pool.n_busy,
            "slots_processing": pool.n_busy,
            "requests_waiting": pool.n_waiting,
            "tokens_generated": pool.tokens_generated,
        }
        stats = getattr(self.model, "scheduler_stats", None)  # the engine's batching scheduler
        if isinstance(stats, dict):
            body["scheduler"] = stats
        return JSONResponse(body)

    async def slot_status(self, request: Request) -> Response:
        return JSONResponse(self.slots.status())

    async def props(self, request: Request) -> Response:
        return JSONResponse(
            {
                "model": self._model_object(),
                "n_ctx": self.model.n_ctx,
                "parallel": len(self.slots.slots),
                "max_waiting": self.config.max_waiting,
                "prompt_cache": self.slots.sessions,
                "license": self.config.license,
                "disclaimer": self.config.disclaimer,
                "api_key_required": self.config.api_key is not None,
            }
        )

    async def page(self, request: Request) -> Response:
        html = resources.files(__package__).joinpath("static/chat.html").read_text(encoding="utf-8")
        return HTMLResponse(html)


async def anext_or_none(it: AsyncIterator[Event]) -> Event | None:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


def create_app(model: Model, config: ServerConfig) -> Starlette:
    """The ASGI app serving ``model`` (run it with uvicorn; ``med42 serve`` does)."""
    server = Server(model, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.pool = SlotPool(model, config.parallel, config.max_waiting, template=config.template)
        try:
            yield
        finally:
            server.pool.shutdown()

    e = server.endpoint
    routes = [
        Route("/", e(server.page, auth=False), methods=["GET"]),
        Route("/health", e(server.health, auth=False), methods=["GET"]),
        Route("/props", e(server.props, auth=False), methods=["GET"]),
        Route("/slots", e(server.slot_status), methods=["GET"]),
        Route("/tokenize", e(server.tokenize), methods=["POST"]),
        Route("/detokenize", e(server.detokenize), methods=["POST"]),
    ]
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/models", e(server.models), methods=["GET"]),
            Route(f"{prefix}/models/{{name:path}}", e(server.model_info), methods=["GET"]),
            Route(f"{prefix}/chat/completions", e(server.chat_completions), methods=["POST"]),
            Route(f"{prefix}/completions", e(server.completions), methods=["POST"]),
        ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        msg = "no such endpoint" if status == 404 else "method not allowed"
        return _error(APIError(status, f"{msg}: {request.method} {request.url.path}", code="not_found"))

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.server = server
    return app
