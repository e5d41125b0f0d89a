"""The fast path of the hot record routes (query, add, upsert, update, get; seed API and /api/v2):
plain ASGI in front of FastAPI's router, same handlers, same bodies, same errors.

FastAPI's routing and dependency solving cost ~0.7 ms a request, more than a query on 5,000 vectors
takes in the engine. Here a request to a hot route is matched by one regex, its body parsed and
validated by the same Pydantic model and handled by the same function as its route (routes/records.py,
routes/chroma_collections.py), in one hop to the engine pool. The seed routes also take our
HttpClient's binary frame (float32 vectors without JSON; vectordb/wire.py). Any other content type
goes on to FastAPI's route, which answers with the usual error.

`ServedApp` (the app `create_app` builds) sends a hot request straight to ServerMiddleware (log line,
API key, body limit, 500 on an unexpected error) and then here, before FastAPI's own ASGI stack:
that stack's per-request telemetry lookup and Starlette's exception middleware serve no purpose on
these routes. Every other request takes the full stack, ServerMiddleware included.

A query or get runs on the event loop's own thread when no request is in the engine pool and the
same path took under 2 ms lately (a pool hop costs two thread wake-ups); anything else runs on the
pool, so a long request never holds up the event loop.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Callable, Dict, Optional, Tuple

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.types import Receive, Scope, Send

from vectordb.server import chroma_models as cm
from vectordb.server import models as m
from vectordb.server.errors import handled_error_response, validation_error_response
from vectordb.server.jsonio import is_json, parse_body, parse_frame
from vectordb.server.routes import chroma_collections as v2
from vectordb.server.routes import records as seed
from vectordb.server.service import Service
from vectordb.wire import is_frame

_SEED = re.compile(r"^/collections/([^/]+)/(query|add|upsert|update|get)$")
_V2 = re.compile(r"^/api/v2/tenants/([^/]+)/databases/([^/]+)/collections/([^/]+)/(query|add|upsert|update|get)$")
_READS = ("/query", "/get")
# A read expected to take less than this runs on the event loop's thread when the pool is idle.
_INLINE_MAX_S = 0.002
_SEED_METHODS = {"update": "PUT"}  # the others are POST
# A route: (body model, handler(body, framed vectors), chroma dialect, takes binary frames).
_Route = Tuple[type, Callable[[Any, Any], Any], bool, bool]


def _route(svc: Service, method: str, path: str) -> Optional[_Route]:
    found = _SEED.match(path)
    if found is not None:
        name, action = found.groups()
        if method != _SEED_METHODS.get(action, "POST"):
            return None
        if action == "query":
            return m.QueryRequest, lambda body, framed: seed.query_records(svc, name, body, framed), False, True
        if action == "get":
            return m.GetRequest, lambda body, framed: seed.get_records(svc, name, body), False, False
        return (m.RecordsRequest, lambda body, framed: seed.add_records(svc, name, body, action, framed),
                False, True)
    found = _V2.match(path)
    if found is not None and method == "POST":
        tenant, database, cid, action = found.groups()
        if action == "query":
            return cm.QueryPayload, lambda body, _: v2.query_records(svc, tenant, database, cid, body), True, False
        if action == "get":
            return cm.GetPayload, lambda body, _: v2.get_records(svc, tenant, database, cid, body), True, False
        return (cm.RecordsPayload, lambda body, _: v2.write_records(svc, tenant, database, cid, body, action),
                True, False)
    return None


class FastRoutes:
    """ASGI: the hot routes (`match`) answered here; anything else is sent to `app` (FastAPI's stack)."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service
        self._busy = 0  # requests of this class in the engine pool
        self._cost: Dict[str, float] = {}  # path -> recent seconds a request took (min of last, average)

    def match(self, scope: Scope) -> Optional[Tuple[_Route, bool]]:
        """(the route, whether the body is a binary frame) for a request answered here, else None."""
        if scope["type"] != "http":
            return None
        route = _route(self.service, scope.get("method", ""), scope.get("path", ""))
        if route is None:
            return None
        content_type = ""
        for key, value in scope.get("headers", ()):
            if key == b"content-type":
                content_type = value.decode("latin-1")
        framed = route[3] and is_frame(content_type)
        return (route, framed) if framed or is_json(content_type) else None

    async def __call__(self, scope: Dict[str, Any], receive: Callable, send: Callable) -> None:
        matched = scope.pop("vectordb.fast", None) or self.match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        (model, handler, chroma, _), framed = matched
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)

        def run() -> Any:
            try:
                if framed:
                    body, vectors = parse_frame(model, raw)
                else:
                    body, vectors = parse_body(model, raw), None
            except RequestValidationError as exc:
                return validation_error_response(exc, chroma)
            try:
                return handler(body, vectors)
            except Exception as exc:
                response = handled_error_response(exc, chroma)
                if response is None:
                    raise
                return response

        path = scope.get("path", "")
        if self._busy == 0 and self._cost.get(path, _INLINE_MAX_S) < _INLINE_MAX_S and path.endswith(_READS):
            # Nothing in the pool and a read known to be short: answered on this thread, which saves
            # the two thread wake-ups of a pool hop (on a loaded machine each can cost more than the
            # query). A longer one goes to the pool so the event loop stays responsive.
            start = time.perf_counter()
            response = run()
        else:
            start = time.perf_counter()
            self._busy += 1
            try:
                response = await asyncio.get_running_loop().run_in_executor(self.service.pool(), run)
            finally:
                self._busy -= 1
        if len(self._cost) >= 4096:
            self._cost.clear()  # one entry per collection path: bounded
        elapsed = time.perf_counter() - start
        self._cost[path] = min(elapsed, 0.5 * (self._cost.get(path, elapsed) + elapsed))
        await response(scope, receive, send)


class ServedApp(FastAPI):
    """FastAPI, with the hot routes sent to `edge` (ServerMiddleware in front of FastRoutes) first."""

    edge: Any = None
    fast: Optional[FastRoutes] = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self.fast.match(scope) if self.fast is not None else None
        if matched is not None:
            scope["vectordb.fast"] = matched  # not matched again inside
            await self.edge(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
