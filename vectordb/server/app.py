"""The REST API: a FastAPI application over one vectordb client.

    from vectordb.server import create_app
    app = create_app("./vector_db")          # or a ServerSettings, or an existing client
    # uvicorn.run(app) -- or simply: vectordb serve

The app is assembled here from its parts: middleware.py (log line, API key, body limit), errors.py
(error bodies), jsonio.py (strict JSON in, fast JSON out), service.py (the one client and the engine
pool every route uses) and the routers in routes/ (one per resource): the seed API's paths, and
chroma's /api/v2 (routes/chroma_*.py) so chromadb's HttpClient works against this server.

Every engine call runs on a thread pool (VECTORDB_SERVER_THREADS, default 40), so the event loop
only moves bytes; the engine releases the GIL, so concurrent queries run in parallel. Request
bodies over 64 KiB are parsed and validated on the pool too.

Request handling, outermost first: one log line per request -> API key check -> body size limit
(before anything is parsed) -> the hot record routes straight to their handlers (fastpath.py) ->
FastAPI's routing -> strict JSON parsing (NaN/Infinity rejected) and Pydantic validation
(Service.json_body) -> the Collection method -> pre-rendered JSON (NumPy arrays written directly
when orjson is installed).
Errors are JSON `{"error": <class>, "message": <what was wrong>}` with 404 for an unknown
collection, 409 for an existing name, 422 for invalid input, 413 for a body over the limit.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from vectordb.server.errors import install_error_handlers
from vectordb.server.fastpath import FastRoutes, ServedApp
from vectordb.server.jsonio import FastJSONResponse, _loads_stdlib, dumps_json, loads_strict, parse_body
from vectordb.server.middleware import ServerMiddleware
from vectordb.server.openapi import install_openapi
from vectordb.server.routes.chroma_collections import chroma_collections_router
from vectordb.server.routes.chroma_system import chroma_system_router
from vectordb.server.routes.collections import collections_router
from vectordb.server.routes.maintenance import maintenance_router
from vectordb.server.routes.records import records_router
from vectordb.server.routes.system import system_router
from vectordb.server.service import Service, client_path
from vectordb.server.settings import ServerSettings

__all__ = ["create_app", "cpu_kernel", "package_version", "is_loopback_host", "warn_if_exposed",
           "loads_strict", "_loads_stdlib", "dumps_json", "parse_body"]

log = logging.getLogger("vectordb.server")


def cpu_kernel() -> Optional[str]:
    """The SIMD kernel family the engine dispatches to (e.g. "avx512"), if the engine says."""
    try:
        from vectordb import _core

        caps = _core.capabilities()
        kernel = caps.get("kernel") if isinstance(caps, dict) else None
        return None if kernel is None else str(kernel)
    except Exception:
        return None


def package_version() -> str:
    import vectordb

    version = getattr(vectordb, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version("vectordb")
    except Exception:
        return "0+unknown"


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, api_key: Optional[str]) -> None:
    """Log a warning when binding beyond loopback with no API key set."""
    if not api_key and not is_loopback_host(host):
        log.warning(
            "binding %s without an API key: anyone who can reach this address can read, change and delete "
            "every collection; set VECTORDB_API_KEY or bind 127.0.0.1",
            host,
        )


def create_app(client_or_settings: Any = None, *, settings: Optional[ServerSettings] = None) -> FastAPI:
    """Build the FastAPI app.

    `client_or_settings` is a vectordb client (PersistentClient, EphemeralClient: used as is and
    not closed by the app), a ServerSettings or a database path (a PersistentClient is opened
    now, so a locked or corrupt database fails here, and closed at shutdown), or None (settings
    from the environment). API key and body limit come from `settings` or the environment.
    """
    import vectordb

    owns_client = False
    if client_or_settings is None or isinstance(client_or_settings, (str, os.PathLike, ServerSettings)):
        if isinstance(client_or_settings, ServerSettings):
            settings = client_or_settings
        elif client_or_settings is not None:
            settings = ServerSettings.from_env(path=os.fspath(client_or_settings))
        elif settings is None:
            settings = ServerSettings.from_env()
        client = vectordb.PersistentClient(path=settings.path, max_cached=settings.max_cached)
        owns_client = True
    else:
        client = client_or_settings
        if settings is None:
            settings = ServerSettings.from_env()
    assert settings is not None
    version = package_version()
    service = Service(client, settings, version)
    closed = False

    def close_client() -> None:
        nonlocal closed
        if owns_client and not closed:
            closed = True
            client.close()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        address = getattr(app.state, "address", None)
        kernel = cpu_kernel()
        path = client_path(client)
        # The address line is written even when INFO is off: whoever started the server needs it.
        log.log(
            logging.INFO if log.isEnabledFor(logging.INFO) else logging.WARNING,
            "vectordb %s: serving %s%s",
            version,
            path,
            f" on {address}" if address else "",
            extra={
                "version": version,
                "db_path": path,
                "address": address,
                "cpu_kernel": kernel,
                "auth": "api-key" if settings.api_key else "off",
                "max_body_bytes": settings.max_body_bytes,
                "max_cached": settings.max_cached,
            },
        )
        try:
            yield
        finally:
            service.shutdown()  # requests still running in the engine finish first
            await run_in_threadpool(close_client)
            log.info("stopped", extra={"db_path": path})

    app = ServedApp(
        title="vectordb",
        version=version,
        description=(
            "Embedded vector database served over HTTP. Errors are JSON "
            '`{"error": <class>, "message": <text>}`. With VECTORDB_API_KEY set, every route but '
            "/health and the API description needs `Authorization: Bearer <key>` or `X-API-Key: <key>`."
        ),
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
    )
    # No redirect of "/x/" to "/x": chroma's server answers 404 there (a collection name never ends in "/").
    app.router.redirect_slashes = False
    app.state.client = client
    app.state.settings = settings

    app.state.close_client = close_client
    app.state.service = service
    # The hot routes: ServerMiddleware (API key, body limit, log line, 500s), then FastRoutes, ahead of
    # FastAPI's stack; every other request goes through that stack, ServerMiddleware first.
    app.fast = FastRoutes(app=None, service=service)
    app.edge = ServerMiddleware(app.fast, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ServerMiddleware, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    install_openapi(app, bool(settings.api_key))
    install_error_handlers(app)
    for router in (system_router, collections_router, records_router, maintenance_router,  # the seed API
                   chroma_system_router, chroma_collections_router):  # chroma's /api/v2
        app.include_router(router(service))
    return app
