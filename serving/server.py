"""HTTP server of the predictor: KServe's v1/v2 REST data plane on uvicorn, bound to 127.0.0.1 by default.

Built from KServe 0.21's own pieces (``DataPlane``, ``ModelRepository``, the v1 and v2 endpoint routers, the
``/metrics`` handler) mounted on a fresh FastAPI app, rather than ``kserve.ModelServer.start()``, because that
one binds 0.0.0.0 unconditionally, refuses to start while no model is ready (a cold start could not say *why*),
installs process-wide signal handlers and mounts everything on one module-global app. Additions:

- readiness: ``GET /v2/health/ready`` is false (503) while any model is not ready; model readiness
  (``GET /v1/models/<name>``, ``GET /v2/models/<name>/ready``) and predict answer 503 with the reason;
- bad payloads get 400 with the message (v2 bodies that fail KServe's schema too, where FastAPI would say 422);
- request bodies over ``max_body_bytes`` get 413 before they are parsed;
- an online store that errors or misses the deadline gets 503 with the reason; client errors are logged
  without stack traces and no payload is logged.

Endpoints: ``/`` (live), ``/metrics`` (Prometheus), ``/v1/models[/<name>[:predict]]``,
``/v2/health/{live,ready}``, ``/v2/models/<name>[/ready|/infer]``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from datetime import datetime
from typing import TYPE_CHECKING

from serving.predictor import DEFAULT_MODEL, NextWeekCommitsPredictor, OnlineStoreUnavailable

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Largest accepted request body: 1000 instances of 200-character names fit with room to spare.
MAX_BODY_BYTES = 1 << 20
_DRAIN_FACTOR = 16


def _json(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message})


class _BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes`` (declared length, or counted when chunked)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_large = _json(413, f"request body exceeds {self.max_bytes} bytes; send fewer instances per request")

        async def reject():
            # Read (and drop) what the client is sending, up to a bound, so that it sees the 413 rather than a
            # broken pipe; beyond the bound the connection is answered and closed at once.
            drained, more = 0, True
            while more and drained <= _DRAIN_FACTOR * self.max_bytes:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                drained += len(msg.get("body", b""))
                more = msg.get("more_body", False)
            await too_large(scope, receive, send)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await reject()
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                return await reject()
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def build_app(models: list[NextWeekCommitsPredictor], max_body_bytes: int = MAX_BODY_BYTES) -> "FastAPI":
    """A FastAPI app serving ``models`` with KServe's v1/v2 data plane (models need not be ready yet)."""
    from fastapi import APIRouter, FastAPI
    from fastapi.exceptions import RequestValidationError
    from kserve.errors import (InferenceError, InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady,
                               UnsupportedProtocol)
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import metrics_handler
    from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    # KServe's v1 endpoint still answers with FastAPI's deprecated ORJSONResponse: one warning per request otherwise.
    warnings.filterwarnings("ignore", message=r"ORJSONResponse is deprecated")
    registry = ModelRepository()
    for m in models:
        registry.update(m)

    class ReadinessDataPlane(DataPlane):
        async def ready(self) -> bool:
            return all([await m.healthy() for m in self.model_registry.get_models().values()])

    dataplane = ReadinessDataPlane(model_registry=registry)
    app = FastAPI(title="skewless predictor", docs_url=None, redoc_url=None, openapi_url=None)
    root = APIRouter()
    root.add_api_route("/", dataplane.live)
    root.add_api_route("/metrics", metrics_handler, methods=["GET"])
    app.include_router(root)
    extension = ModelRepositoryExtension(model_registry=registry)
    register_v1_endpoints(app, dataplane, extension)
    register_v2_endpoints(app, dataplane, extension)

    def reasons() -> str:
        return "; ".join(f"{n}: {m.not_ready_reason}" for n, m in registry.get_models().items()
                         if not m.ready and getattr(m, "not_ready_reason", None))

    async def not_ready(_, exc: ModelNotReady):
        model = registry.get_model(exc.model_name)
        reason = getattr(model, "not_ready_reason", None) or "not loaded"
        return _json(503, f"model {exc.model_name} is not ready: {reason}")

    async def server_not_ready(_, exc: ServerNotReady):
        return _json(503, f"server is not ready: {reasons() or exc}")

    async def bad_request(_, exc):
        log.info("bad request: %s", exc)
        return _json(400, str(exc))

    async def invalid_schema(_, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        log.info("bad request: %s", problems)
        return _json(400, f"malformed request: {problems}")

    async def unavailable(_, exc: OnlineStoreUnavailable):
        log.warning("online store unavailable: %s", exc)
        return _json(503, str(exc))

    async def not_found(_, exc):
        return _json(404, str(exc))

    async def not_implemented(_, exc):
        return _json(501, str(exc) or type(exc).__name__)

    async def internal(_, exc):
        log.error("inference failed", exc_info=exc)
        return _json(500, f"internal error: {type(exc).__name__}: {exc}")

    app.add_exception_handler(InvalidInput, bad_request)
    app.add_exception_handler(RequestValidationError, invalid_schema)
    app.add_exception_handler(ModelNotReady, not_ready)
    app.add_exception_handler(ServerNotReady, server_not_ready)
    app.add_exception_handler(OnlineStoreUnavailable, unavailable)
    app.add_exception_handler(ModelNotFound, not_found)
    app.add_exception_handler(NotImplementedError, not_implemented)
    app.add_exception_handler(UnsupportedProtocol, not_implemented)
    app.add_exception_handler(InferenceError, internal)
    app.add_exception_handler(Exception, internal)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    return app


def uvicorn_server(app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, access_log: bool = False):
    """A uvicorn server for ``app`` (logging left to the host program; access log off unless asked)."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, calling ``on_started()`` once its sockets listen (None: nothing)."""

        on_started = None

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and self.on_started is not None:
                self.on_started()

    return Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=access_log,
                                 timeout_keep_alive=65, timeout_graceful_shutdown=10))


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, model_name: str = DEFAULT_MODEL,
          model_version: str | None = None, access_log: bool = False, serving_time: datetime | None = None,
          echo=print, **predictor_options) -> None:
    """Load the predictor and serve it until interrupted (a cold start serves too: not ready, with the reason).

    ``serving_time`` is for REPLAYS ONLY (demos and tests on past data): online reads then apply the views' TTL
    at that instant instead of the wall clock (:func:`skewless.feast_ext.ttl.serving_clock`, process wide).
    """
    from skewless.feast_ext.ttl import serving_clock

    with contextlib.ExitStack() as stack:
        if serving_time is not None:
            stack.enter_context(serving_clock(serving_time))
            log.warning("REPLAY: online reads are evaluated at %s, not at the wall clock", serving_time.isoformat())
        model = NextWeekCommitsPredictor(model_name, model_version=model_version, **predictor_options)
        model.load(progress=echo)
        state = f"version {model.version}" if model.ready else f"NOT READY: {model.not_ready_reason}"
        replay = f"; REPLAY at {serving_time.isoformat()}" if serving_time else ""
        echo(f"starting the HTTP server on {host}:{port} ...")
        server = uvicorn_server(build_app([model]), host, port, access_log)
        server.on_started = lambda: echo(f"{'ready' if model.ready else 'serving'} on http://{host}:{port} "
                                         f"(model {model_name} {state}{replay})")
        server.run()


class BackgroundServer:
    """Serve models from a thread on ``host``:``port`` (0: a free port); a context manager. ``url`` when started."""

    def __init__(self, models: list[NextWeekCommitsPredictor], host: str = DEFAULT_HOST, port: int = 0):
        self.server = uvicorn_server(build_app(models), host, port)
        self.host = host
        self.port: int | None = None
        self._thread = threading.Thread(target=self.server.run, name="skewless-predictor", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        import time

        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the predictor server did not start on {self.host}:{self.port or 'a free port'}")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
