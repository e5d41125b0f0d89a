"""The ASGI middleware in front of every route: one log line per request, the API key, the body size limit."""
from __future__ import annotations

import hmac
import logging
import re
import time
from typing import Any, Callable, Dict, List, MutableMapping, Optional, Union

from fastapi.responses import Response

from vectordb.server.errors import error_response, is_chroma_path

log = logging.getLogger("vectordb.server")

# Paths served without an API key: the liveness probe and the API description (no data).
# chroma's liveness routes are open too, as on a chroma server with token auth.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/api/v2/heartbeat", "/api/v2/healthcheck", "/api/v2/version"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_COLLECTION_IN_PATH = re.compile(r"^/collections/([^/]+)")

class ServerMiddleware:
    """Per request: log line, API key, body size limit. Plain ASGI (no BaseHTTPMiddleware overhead)."""

    def __init__(self, app: Any, *, api_key: Optional[str], max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = max_body_bytes

    def _authorized(self, scope: Dict[str, Any]) -> bool:
        assert self.api_key is not None
        ok = False
        for key, value in scope.get("headers", ()):
            candidate = None
            if key == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    candidate = token.strip()
            elif key in (b"x-api-key", b"x-chroma-token"):  # the second: chromadb's token auth header
                candidate = value.strip()
            # Every candidate is compared (constant time each), so timing says nothing about the key.
            if candidate is not None and hmac.compare_digest(candidate, self.api_key):
                ok = True
        return ok

    async def _limited_receive(self, scope: Dict[str, Any], receive: Callable) -> Union[Response, Callable]:
        """A receive callable that honours the body limit, or the 413 response to send."""
        content_length = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                content_length = value
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                return error_response(400, "BadRequest", f"invalid Content-Length header {content_length!r}")
            if declared > self.max_body_bytes:
                return self._too_large(f"request body is {declared} bytes")
            return receive  # the HTTP server never delivers more than Content-Length
        # Chunked upload without a length: count while reading, then replay the buffered body.
        chunks: List[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                return self._too_large("request body (sent without Content-Length) is larger than allowed")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        sent = False

        async def replay_receive() -> Dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return replay
            return await receive()

        return replay_receive

    def _too_large(self, what: str) -> Response:
        return error_response(
            413,
            "RequestTooLarge",
            f"{what}; the limit is {self.max_body_bytes} bytes (VECTORDB_MAX_BODY_BYTES): send smaller batches",
            headers={"connection": "close"},
        )

    async def __call__(self, scope: Dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: List[Optional[int]] = [None]

        async def send_and_record(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path = scope.get("path", "")
        try:
            early: Optional[Response] = None
            if self.api_key is not None and path not in OPEN_PATHS and not self._authorized(scope):
                early = error_response(
                    401,
                    "AuthError" if is_chroma_path(path) else "AuthorizationError",
                    "missing or invalid API key: send 'Authorization: Bearer <key>', 'X-API-Key: <key>' "
                    "or 'X-Chroma-Token: <key>'",
                    headers={"www-authenticate": "Bearer"},
                )
            elif scope.get("method") in _BODY_METHODS:
                limited = await self._limited_receive(scope, receive)
                if isinstance(limited, Response):
                    early = limited
                else:
                    receive = limited
            if early is not None:
                await early(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        except Exception as exc:
            log.exception("unhandled error in %s %s", scope.get("method"), path)
            if status[0] is not None:
                raise  # response already started: let the server drop the connection
            await error_response(500, "InternalError", f"internal error ({type(exc).__name__}): {exc}")(
                scope, receive, send_and_record
            )
        finally:
            fields: Dict[str, Any] = {
                "method": scope.get("method"),
                "path": path,
                "status": status[0],
                "duration_ms": round((time.perf_counter() - start) * 1000.0, 3),
            }
            name = (scope.get("path_params") or {}).get("name")
            if name is None:
                match = _COLLECTION_IN_PATH.match(path)
                name = match.group(1) if match else None
            if name is not None:
                fields["collection"] = name
            log.info("request", extra=fields)
