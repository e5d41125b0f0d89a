"""The fast path of the hot record routes (query, add, upsert, update, get; seed API and /api/v2):
plain ASGI in front of FastAPI's router, same handlers, same bodies, same errors.

FastAPI's routing and dependency solving cost ~0.7 ms a request, more than a query on 5,000 vectors
takes in the engine. Here a request to a hot route is matched by one regex, its body parsed and
validated by the same Pydantic model and handled by the same function as its route (routes/records.py,
routes/chroma_collections.py), in one hop to the engine pool. The seed routes also take our
HttpClient's binary frame (float32 vectors without JSON; vectordb/wire.py). Any other content type
goes on to FastAPI's route, which answers with the usual error.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, Callable, Dict, Optional, Tuple

from fastapi.exceptions import RequestValidationError

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
    """ASGI: the hot routes handled here, everything else by `app` (FastAPI)."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Dict[str, Any], receive: Callable, send: Callable) -> None:
        route = None
        if scope["type"] == "http":
            route = _route(self.service, scope.get("method", ""), scope.get("path", ""))
        content_type = ""
        if route is not None:
            for key, value in scope.get("headers", ()):
                if key == b"content-type":
                    content_type = value.decode("latin-1")
        framed = route is not None and route[3] and is_frame(content_type)
        if route is None or not (framed or is_json(content_type)):
            await self.app(scope, receive, send)
            return
        model, handler, chroma, _ = route
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

        response = await asyncio.get_running_loop().run_in_executor(self.service.pool(), run)
        await response(scope, receive, send)
