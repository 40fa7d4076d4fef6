"""The HTTP server of ``kubetune serve``: FastAPI routes over a model loaded once, behind a
batcher.

Endpoints (only those of what is served exist; any other path answers 404 with one line
saying what is served instead):

- ``GET /healthz``: 200 while the process answers (liveness); 500 if loading failed.
- ``GET /readyz``: 503 while loading, then 200 with what is served (readiness).
- ``POST /v1/predict`` ``{"texts": [...]}`` or ``{"text": "..."}`` → ``{"predictions": [...]}``
  (a model: each ``{"label", "score", "scores"}`` or ``{"entities": [...]}``).
- ``POST /v1/embed`` → ``{"embeddings": [[...]], "dim": n}`` (an encoder).
- ``POST /v1/search`` ``{"query", "k", "mode"}`` → ``{"hits": [{"id", "score", "text"}]}``
  (an index with its encoder).
- ``GET /metrics``: model calls, texts and requests so far, in Prometheus' text format.

A request the server refuses gets one line naming the field: 422 ``{"detail": "texts: at most
256 texts per request (got 300)"}``.

Bodies are parsed by the request models of :mod:`kubetune.serve.schemas` straight from the raw
JSON (pydantic's own parser), with their schemas, limits included, at ``/docs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from kubetune.errors import ConfigError
from kubetune.serve import served
from kubetune.serve.batcher import Batcher, BatchError
from kubetune.serve.schemas import Limits, one_line, request_models

Body = TypeVar("Body", bound=BaseModel)

log = logging.getLogger(__name__)

#: Texts per model call, at most (the engine cuts them further by its token budget).
MAX_BATCH = 32
#: How long a batch waits for more requests after its first: short enough that a lone
#: request hardly notices, long enough that concurrent ones meet.
MAX_WAIT_MS = 5.0


class _State:
    """What the app has loaded, or why it could not."""

    def __init__(self) -> None:
        self.served: served.Served | None = None
        self.batcher: Batcher[Any] | None = None
        self.error: BaseException | None = None


def create_app(
    *,
    model: str | Path | None = None,
    index: str | Path | None = None,
    encoder: str | Path | None = None,
    model_sha256: str | None = None,
    source: str | None = None,
    limits: Limits = Limits(),
    max_batch: int = MAX_BATCH,
    max_wait_ms: float = MAX_WAIT_MS,
    max_length: int | None = None,
    device: str | None = None,
    int8: bool = False,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The server of a model folder (``model``), or of an encoder folder (``encoder``) and,
    with it, an index folder (``index``). ``source`` (the run or index URI) and
    ``model_sha256`` are shown at ``/readyz``. ``on_load_error`` is called (on the event loop)
    if loading fails.

    Raises:
        ConfigError: not one of these combinations, or a folder is not what it should be.
    """
    if (model is None) == (encoder is None):
        raise ConfigError(
            "serve: give a model folder, or an encoder folder (with an index folder to search)"
        )
    if model is not None and index is not None:
        raise ConfigError("serve: an index is searched with its encoder, not with a model")
    if model is not None:
        target = served.model(model, model_sha256=model_sha256, source=source,
                              max_length=max_length, device=device, int8=int8)  # fmt: skip
    else:
        assert encoder is not None
        target = served.encoder(encoder, index=index, source=source, max_length=max_length,
                                device=device, int8=int8)  # fmt: skip
    return app_for(target, limits=limits, max_batch=max_batch, max_wait_ms=max_wait_ms,
                   on_load_error=on_load_error)  # fmt: skip


def app_for(
    target: served.Target,
    *,
    limits: Limits = Limits(),
    max_batch: int = MAX_BATCH,
    max_wait_ms: float = MAX_WAIT_MS,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The server of ``target`` (:func:`create_app` makes the target from folders)."""
    if max_batch < 1 or max_wait_ms < 0:
        raise ConfigError(
            f"serve: max_batch must be at least 1 and max_wait_ms at least 0 "
            f"(got {max_batch}, {max_wait_ms})"
        )
    state = _State()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def loaded(what: served.Served) -> None:
            state.batcher = Batcher(what.run, max_batch=max_batch, max_wait_ms=max_wait_ms)
            state.batcher.start()
            state.served = what
            log.info("ready: %s", target.what)

        def failed(exc: BaseException) -> None:
            state.error = exc
            log.error("loading %s failed: %s", target.what, _line(exc), exc_info=exc)
            if on_load_error is not None:
                on_load_error(exc)

        def load() -> None:
            # A thread, not the event loop: /healthz answers while torch and the weights load.
            try:
                what = target.load()
            except BaseException as exc:  # reported at /readyz, /healthz and to on_load_error
                done = functools.partial(failed, exc)
            else:
                done = functools.partial(loaded, what)
            with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped
                loop.call_soon_threadsafe(done)

        # A daemon thread: stopping the server (Ctrl-C) need not wait for a load to finish.
        threading.Thread(target=load, name="kubetune-load", daemon=True).start()
        log.info("loading %s", target.what)
        yield
        if state.batcher is not None:
            await state.batcher.stop()

    app = FastAPI(
        title="kubetune serve",
        summary=f"serves {target.what}",
        lifespan=lifespan,
    )
    models = request_models(limits)
    texts_body = _documented(models.texts)
    search_body = _documented(models.search)
    answer_body = _documented(models.answer)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = (
                f"{request.method} {request.url.path} is not served here: this server serves "
                f"{target.what}; use {', '.join('POST ' + e for e in target.endpoints)}"
            )
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(BatchError)
    async def model_failed(request: Request, exc: BatchError) -> JSONResponse:
        return JSONResponse({"detail": f"the model call failed: {exc}"}, status_code=500)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback too; the client gets one line.
        line = f"internal error: {type(exc).__name__}: {_line(exc)}"
        return JSONResponse({"detail": line}, status_code=500)

    def ready() -> tuple[served.Served, Batcher[Any]]:
        if state.error is not None:
            raise HTTPException(503, f"loading failed: {_line(state.error)}")
        if state.served is None or state.batcher is None:
            raise HTTPException(503, f"not ready: loading {target.what}",
                                headers={"Retry-After": "1"})  # fmt: skip
        return state.served, state.batcher

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the process answers (500 once loading failed: restart it)."""
        if state.error is not None:
            return JSONResponse({"detail": f"loading failed: {_line(state.error)}"}, 500)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: 503 while loading, then what is served."""
        what, _ = ready()
        return JSONResponse({"ready": True, **what.about})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Counters since the start, in Prometheus' text format."""
        stats = state.batcher.stats if state.batcher is not None else None
        counters = {
            "batches": ("model calls", stats.batches if stats else 0),
            "texts": ("texts over all model calls", stats.texts if stats else 0),
            "requests": ("requests answered by model calls", stats.requests if stats else 0),
            "failed_batches": ("model calls that raised", stats.failed if stats else 0),
        }
        lines = []
        for name, (about, value) in counters.items():
            metric = f"kubetune_serve_{name}_total"
            lines += [f"# HELP {metric} {about}", f"# TYPE {metric} counter", f"{metric} {value}"]
        lines += ["# HELP kubetune_serve_ready 1 once loaded", "# TYPE kubetune_serve_ready gauge",
                  f"kubetune_serve_ready {int(state.served is not None)}"]  # fmt: skip
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    if served.PREDICT in target.endpoints:

        @app.post(served.PREDICT, openapi_extra=texts_body)
        async def predict(request: Request) -> JSONResponse:
            """One prediction per text, in order."""
            body = await _parse(request, models.texts)
            _, batcher = ready()
            return JSONResponse({"predictions": await batcher.submit(body.all_texts())})

    if served.ANSWER in target.endpoints:

        @app.post(served.ANSWER, openapi_extra=answer_body)
        async def answer(request: Request) -> JSONResponse:
            """The answer to the question in the context: its text and character offsets,
            or an empty answer when the model finds none."""
            body = await _parse(request, models.answer)
            loaded, batcher = ready()
            pair = (body.question, body.context)
            problem = loaded.check(pair) if loaded.check else None
            if problem is not None:
                raise HTTPException(422, problem)
            [found] = await batcher.submit([pair])
            return JSONResponse(found)

    if served.EMBED in target.endpoints:

        @app.post(served.EMBED, openapi_extra=texts_body)
        async def embed(request: Request) -> JSONResponse:
            """One L2-normalised vector per text, in order."""
            body = await _parse(request, models.texts)
            _, batcher = ready()
            vectors = await batcher.submit(body.all_texts())
            dim = len(vectors[0]) if vectors else 0
            return JSONResponse({"embeddings": [v.tolist() for v in vectors], "dim": dim})

    if served.SEARCH in target.endpoints:

        @app.post(served.SEARCH, openapi_extra=search_body)
        async def search(request: Request) -> JSONResponse:
            """The k documents nearest the query, best first."""
            body = await _parse(request, models.search)
            what, batcher = ready()
            index = what.index
            assert index is not None
            if body.mode == "bm25":
                found = await asyncio.to_thread(index.search_bm25, [body.query], body.k)
            else:
                import numpy as np

                vector = np.stack(await batcher.submit([body.query]))
                if body.mode == "dense":
                    found = await asyncio.to_thread(index.search, vector, body.k)
                else:
                    found = await asyncio.to_thread(
                        index.search_hybrid, vector, [body.query], body.k
                    )
            hits = [{"id": doc, "score": score, "text": index.doc(doc).text}
                    for doc, score in found[0]]  # fmt: skip
            return JSONResponse({"hits": hits})

    return app


def serve(
    *,
    model: str | Path | None = None,
    index: str | Path | None = None,
    encoder: str | Path | None = None,
    model_sha256: str | None = None,
    source: str | None = None,
    limits: Limits = Limits(),
    max_batch: int = MAX_BATCH,
    max_wait_ms: float = MAX_WAIT_MS,
    max_length: int | None = None,
    device: str | None = None,
    int8: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = True,
    log_level: str = "info",
) -> None:
    """Serve :func:`create_app`'s app (same arguments) with uvicorn on ``host``:``port``
    (``0.0.0.0`` in a pod) until SIGINT or SIGTERM; in-flight requests finish first.

    Raises:
        ConfigError: as :func:`create_app`; the address cannot be listened on; or what is
            served could not be loaded (the server stops at once then: a pod exits with the
            reason instead of staying unready).
    """
    import uvicorn

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(model=model, index=index, encoder=encoder, model_sha256=model_sha256,
                     source=source, limits=limits, max_batch=max_batch, max_wait_ms=max_wait_ms,
                     max_length=max_length, device=device, int8=int8,
                     on_load_error=stop)  # fmt: skip
    # The socket is bound here, not by uvicorn, so an address in use is one line (uvicorn
    # logs it and exits 1).
    listening = _listen(host, port)
    config = uvicorn.Config(app, access_log=access_log, log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
    if failures:
        raise failures[0]


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"serve: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "give another port or host"
        ) from exc
    return sock


async def _parse(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as ``model``; a bad one raises FastAPI's validation error,
    which the app answers with 422 and one line."""
    raw = await request.body()
    if not raw.strip():
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI request body of ``model``'s JSON schema (the routes parse bodies themselves)."""
    schema = {"schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}
    return {"requestBody": {"content": {"application/json": schema}, "required": True}}


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
