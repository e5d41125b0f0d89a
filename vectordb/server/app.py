"""The REST API: a FastAPI application over one vectordb client.

    from vectordb.server import create_app
    app = create_app("./vector_db")          # or a ServerSettings, or an existing client
    # uvicorn.run(app) -- or simply: vectordb serve

Every engine call runs on a thread pool (VECTORDB_SERVER_THREADS, default 40), so the event loop
only moves bytes; the engine releases the GIL, so concurrent queries run in parallel. Request
bodies over 64 KiB are parsed and validated on the pool too.

Request handling, outermost first: one log line per request -> API key check -> body size limit
(before anything is parsed) -> strict JSON parsing (NaN/Infinity rejected) and Pydantic validation
(json_body) -> the Collection method -> pre-rendered JSON (NumPy arrays written directly when
orjson is installed).
Errors are JSON `{"error": <class>, "message": <what was wrong>}` with 404 for an unknown
collection, 409 for an existing name, 422 for invalid input, 413 for a body over the limit.
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple, Union

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import ValidationError
from typing_extensions import Annotated

import numpy as np

from vectordb import errors as vdb_errors
from vectordb.server import models as m
from vectordb.server.settings import ServerSettings
from vectordb.validation import MAX_COUNT

try:  # optional: ~10x faster JSON, and float32 arrays written in their shortest form
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("vectordb.server")

# Bodies at least this large are parsed and validated on the engine pool instead of the event loop
# (a 10k x 128 add takes ~0.3 s to parse and validate; a one-vector query ~10 us).
_PARSE_IN_THREAD_BYTES = 64 * 1024
# Paths served without an API key: the liveness probe and the API description (no data).
_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_COLLECTION_IN_PATH = re.compile(r"^/collections/([^/]+)")


# ---------------------------------------------------------------- JSON in and out


class _NonFiniteConstant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFiniteConstant(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NonFiniteConstant(text)
    return value


# orjson turns integers beyond 64 bits into floats. That matters where ints and floats differ
# (metadata values, filter operands), so a body with such a float outside the vectors is parsed
# again by the exact parser. Vectors become float32 either way.
_VECTOR_KEYS = frozenset({"embeddings", "query_embedding", "query_embeddings"})
_HUGE = float(2**63)


def _holds_huge_integral_float(obj: Any, top: bool = False) -> bool:
    if isinstance(obj, float):
        return abs(obj) >= _HUGE and obj.is_integer()
    if isinstance(obj, list):
        return any(_holds_huge_integral_float(x) for x in obj)
    if isinstance(obj, dict):
        return any(_holds_huge_integral_float(v) for k, v in obj.items() if not (top and k in _VECTOR_KEYS))
    return False


def _loads_stdlib(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NonFiniteConstant as exc:
        text = body.decode("utf-8", "replace")
        token = str(exc)
        raise json.JSONDecodeError(
            f"{token} is not allowed: numbers in the JSON body must be finite (no NaN or Infinity)",
            text,
            max(text.find(token), 0),
        ) from None


def loads_strict(body: bytes) -> Any:
    """Parse a JSON body, rejecting NaN, Infinity and numbers that overflow to infinity.

    Raises json.JSONDecodeError (which FastAPI turns into a 422) on any invalid input.
    """
    try:
        if orjson is not None:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError:
                # Re-parse for a message that names the problem (e.g. "NaN is not allowed").
                _loads_stdlib(body)
                raise
            if not _holds_huge_integral_float(value, top=True):
                return value
        return _loads_stdlib(body)
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"the body is not valid UTF-8 ({exc.reason})", "", 0) from None
    except RecursionError:
        raise json.JSONDecodeError("the body is nested too deeply", "", 0) from None


def _json_default(obj: Any) -> Any:
    # Called by orjson / json for what they cannot write themselves.
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def dumps_json(content: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_json_default)
    return json.dumps(content, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class FastJSONResponse(JSONResponse):
    """JSONResponse rendered with orjson when available; NumPy arrays are written directly."""

    def render(self, content: Any) -> bytes:
        return dumps_json(content)


def _body_error(loc: Tuple[Any, ...], kind: str, msg: str, ctx: Optional[Dict[str, Any]] = None) -> RequestValidationError:
    err: Dict[str, Any] = {"loc": loc, "type": kind, "msg": msg}
    if ctx is not None:
        err["ctx"] = ctx
    return RequestValidationError([err])


def parse_body(model: type, raw: bytes) -> Any:
    """Strict JSON parse + Pydantic validation of a request body; errors as RequestValidationError."""
    if not raw:
        raise _body_error(("body",), "missing", "a JSON body is required")
    try:
        value = loads_strict(raw)
    except json.JSONDecodeError as exc:
        raise _body_error(("body", exc.pos), "json_invalid", "JSON decode error", {"error": exc.msg}) from None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [dict(e, loc=("body",) + tuple(e.get("loc", ()))) for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


# ---------------------------------------------------------------- errors


def _error_classes() -> List[Tuple[type, int]]:
    """(exception class, HTTP status), most specific first; classes the errors module lacks are skipped."""
    table = [
        ("NotFoundError", 404),
        ("CollectionExistsError", 409),
        ("AuthorizationError", 403),
        ("LockedError", 423),
        ("ReadOnlyError", 503),
        ("CorruptionError", 500),
        ("DuplicateIDError", 422),
        ("InvalidDimensionError", 422),
        ("InvalidArgumentError", 422),
    ]
    return [(getattr(vdb_errors, name), status) for name, status in table if hasattr(vdb_errors, name)]


_ERROR_STATUS = _error_classes()
_VectorDBError: type = getattr(vdb_errors, "VectorDBError", Exception)
_STATUS_NAMES = {
    400: "BadRequest",
    401: "AuthorizationError",
    403: "AuthorizationError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    409: "CollectionExistsError",
    413: "RequestTooLarge",
    415: "UnsupportedMediaType",
    422: "InvalidArgumentError",
}


def error_status(exc: BaseException) -> int:
    for cls, status in _ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    if isinstance(exc, _VectorDBError):
        return 500
    if isinstance(exc, (ValueError, OverflowError)):
        return 422  # OverflowError: a number from the request too large for the engine's 64-bit integers
    if isinstance(exc, MemoryError):
        return 507
    return 500


def error_response(status: int, error: str, message: str, detail: Optional[List[Any]] = None,
                   headers: Optional[Dict[str, str]] = None) -> FastJSONResponse:
    body: Dict[str, Any] = {"error": error, "message": message}
    if detail is not None:
        body["detail"] = detail
    return FastJSONResponse(body, status_code=status, headers=headers)


def _exception_response(exc: Exception) -> FastJSONResponse:
    status = error_status(exc)
    name = type(exc).__name__
    message = str(exc) or name
    if isinstance(exc, MemoryError):
        message = "not enough memory for this request; send smaller batches"
    return error_response(status, name, message)


def _describe_validation_errors(errors: List[Dict[str, Any]]) -> Tuple[str, List[Dict[str, Any]]]:
    detail: List[Dict[str, Any]] = []
    parts: List[str] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            msg = f"invalid JSON body: {ctx.get('error', err.get('msg'))}"
        else:
            msg = str(err.get("msg", "invalid value"))
        entry: Dict[str, Any] = {"loc": loc, "msg": msg, "type": str(err.get("type", ""))}
        detail.append(entry)
        where = ".".join(loc)
        parts.append(f"{where}: {msg}" if where and err.get("type") != "json_invalid" else msg)
    shown = "; ".join(parts[:5])
    if len(parts) > 5:
        shown += f"; and {len(parts) - 5} more"
    return shown or "invalid request", detail


# ---------------------------------------------------------------- middleware


class _ServerMiddleware:
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
            elif key == b"x-api-key":
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

        async def send_and_record(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path = scope.get("path", "")
        try:
            early: Optional[Response] = None
            if self.api_key is not None and path not in _OPEN_PATHS and not self._authorized(scope):
                early = error_response(
                    401,
                    "AuthorizationError",
                    "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
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


# ---------------------------------------------------------------- helpers


def cpu_kernel() -> Optional[str]:
    """The SIMD kernel family the engine dispatches to (e.g. "avx512"), if the engine says."""
    try:
        from vectordb import _core  # type: ignore[attr-defined]

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


def _as_array(vectors: Any) -> Any:
    """Validated vectors (lists of Python floats) -> one float64 array, ~5x faster for the engine
    layer to check than nested lists. float64 keeps its range checks exact. Empty or ragged input
    is passed on as is, so the Collection reports it in its own words."""
    if not vectors:
        return vectors
    try:
        return np.array(vectors, dtype=np.float64)
    except ValueError:
        return vectors


def _with_arrays(kwargs: Dict[str, Any], *names: str) -> Dict[str, Any]:
    for name in names:
        if name in kwargs:
            kwargs[name] = _as_array(kwargs[name])
    return kwargs


def _collection_info(col: Any) -> Dict[str, Any]:
    info: Dict[str, Any] = {"name": col.name, "id": str(col.id), "metadata": col.metadata}
    configuration = getattr(col, "configuration", None)
    if isinstance(configuration, dict):
        info["configuration"] = configuration
    dimension = getattr(col, "dimension", None)
    if isinstance(dimension, int) and not isinstance(dimension, bool):
        info["dimension"] = dimension
    return info


def _client_path(client: Any) -> str:
    for attr in ("path", "_path"):
        value = getattr(client, attr, None)
        if value:
            return os.fspath(value)
    return "(in memory)"


_OK = {"ok": True}
# Body models documented by hand (see json_body): added to components/schemas by _openapi.
_BODY_MODELS: set = set()


def _request_body(model: type) -> Dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }

_ERRORS_COLLECTION = {
    404: {"model": m.ErrorResponse, "description": "no collection of that name"},
    413: {"model": m.ErrorResponse, "description": "body over VECTORDB_MAX_BODY_BYTES"},
    422: {"model": m.ErrorResponse, "description": "invalid input (names the field and what was expected)"},
}
_ERRORS_CREATE = {
    409: {"model": m.ErrorResponse, "description": "a collection of that name exists"},
    413: _ERRORS_COLLECTION[413],
    422: _ERRORS_COLLECTION[422],
}
_ERRORS_MODIFY = {**_ERRORS_COLLECTION, 409: _ERRORS_CREATE[409]}

CollectionName = Annotated[str, Path(description="collection name", examples=["images"])]


# ---------------------------------------------------------------- the app


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
        path = _client_path(client)
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
            while pools:  # requests still running in the engine finish first
                pools.pop().shutdown(wait=True)
            await run_in_threadpool(close_client)
            log.info("stopped", extra={"db_path": path})

    app = FastAPI(
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
    app.state.client = client
    app.state.settings = settings
    app.state.close_client = close_client
    app.add_middleware(_ServerMiddleware, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)

    _install_openapi(app, bool(settings.api_key))

    @app.exception_handler(_VectorDBError)
    async def _vectordb_error(request: Request, exc: Exception) -> Response:
        return _exception_response(exc)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: Exception) -> Response:
        return _exception_response(exc)

    @app.exception_handler(OverflowError)
    async def _overflow_error(request: Request, exc: Exception) -> Response:
        return error_response(422, "InvalidArgumentError", f"a number in the request is out of range: {exc}")

    @app.exception_handler(MemoryError)
    async def _memory_error(request: Request, exc: Exception) -> Response:
        return _exception_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        message, detail = _describe_validation_errors(list(exc.errors()))
        return error_response(422, "InvalidArgumentError", message, detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path} (see /docs)"
            # Starlette lists only the first matching route's methods; list every route's.
            allowed = set()
            for route in app.router.routes:
                regex = getattr(route, "path_regex", None)
                if regex is not None and regex.match(request.url.path) and getattr(route, "methods", None):
                    allowed |= set(route.methods)
            if allowed:
                headers["allow"] = ", ".join(sorted(allowed))
        return error_response(exc.status_code, _STATUS_NAMES.get(exc.status_code, "HTTPError"), message,
                              headers=headers or None)

    # Engine calls run on this pool, never on the event loop. A plain executor hop costs less than
    # FastAPI's `def`-endpoint path (anyio to_thread), which matters for ~50 us queries.
    # Created on first use and shut down at the end of each lifespan (the app may be started again).
    pools: List[ThreadPoolExecutor] = []

    def engine_pool() -> ThreadPoolExecutor:
        if not pools:
            pools.append(ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="vectordb-engine"))
        return pools[0]

    def engine(fn: Callable[..., Response]) -> Callable[..., Any]:
        @functools.wraps(fn)  # FastAPI reads the parameters through __wrapped__
        async def in_pool(*args: Any, **kwargs: Any) -> Response:
            call = functools.partial(fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(engine_pool(), call)

        return in_pool

    def json_body(model: type) -> Any:
        """Depends(): the body parsed strictly and validated off the loop when it is large.

        FastAPI's own body handling would validate on the event loop (and its JSON parser accepts
        NaN); the schema is still documented through openapi_extra and _BODY_MODELS."""
        _BODY_MODELS.add(model)

        async def dependency(request: Request) -> Any:
            if not _is_json(request.headers.get("content-type", "")):
                raise _body_error(("body",), "content_type",
                                  "expected a JSON body: send the header Content-Type: application/json")
            raw = await request.body()
            if len(raw) < _PARSE_IN_THREAD_BYTES:
                return parse_body(model, raw)
            return await asyncio.get_running_loop().run_in_executor(engine_pool(), parse_body, model, raw)

        return Depends(dependency)

    def get(name: str) -> Any:
        # The server never embeds (as chroma's): clients send embeddings, made by their embedding function.
        return client.get_collection(name, embedding_function=None)

    # ---- service

    @app.get("/health", response_model=m.HealthResponse, tags=["service"], summary="Liveness probe (no API key needed)")
    async def health() -> Response:  # no engine call: answered on the loop, no thread hop
        return FastJSONResponse({"status": "ok", "version": version})

    @app.get("/version", response_model=m.VersionResponse, tags=["service"])
    @engine
    def get_version() -> Response:
        return FastJSONResponse({"version": str(client.get_version())})

    @app.get("/heartbeat", response_model=m.HeartbeatResponse, tags=["service"], summary="Server time in nanoseconds")
    @engine
    def heartbeat() -> Response:
        return FastJSONResponse({"nanosecond heartbeat": int(client.heartbeat())})

    @app.get("/max_batch_size", response_model=m.MaxBatchSizeResponse, tags=["service"])
    @engine
    def max_batch_size() -> Response:
        return FastJSONResponse({"max_batch_size": int(client.get_max_batch_size())})

    @app.get("/collections_count", response_model=m.CountResponse, tags=["service"], summary="Number of collections")
    @engine
    def count_collections() -> Response:
        return FastJSONResponse({"count": int(client.count_collections())})

    @app.post(
        "/reset",
        response_model=m.OkResponse,
        tags=["service"],
        summary="Delete every collection (only when the server allows reset)",
        responses={403: {"model": m.ErrorResponse, "description": "reset is not allowed"}},
    )
    @engine
    def reset() -> Response:
        client.reset()
        return FastJSONResponse(_OK)

    # ---- collections

    @app.post("/collections", response_model=m.CollectionInfo, tags=["collections"], responses=_ERRORS_CREATE,
        openapi_extra=_request_body(m.CreateCollectionRequest),
    )
    @engine
    def create_collection(body: m.CreateCollectionRequest = json_body(m.CreateCollectionRequest)) -> Response:
        kwargs = body.kwargs()
        col = client.create_collection(kwargs.pop("name"), embedding_function=None, **kwargs)
        return FastJSONResponse(_collection_info(col))

    @app.get("/collections", response_model=List[m.CollectionInfo], tags=["collections"],
             responses={422: _ERRORS_COLLECTION[422]})
    @engine
    def list_collections(
        limit: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None,
        offset: Annotated[Optional[int], Query(ge=0, le=MAX_COUNT)] = None,
    ) -> Response:
        cols = client.list_collections(limit=limit, offset=offset)
        return FastJSONResponse([_collection_info(c) for c in cols])

    @app.get("/collections/{name}", response_model=m.CollectionInfo, tags=["collections"], responses=_ERRORS_COLLECTION)
    @engine
    def get_collection(name: CollectionName) -> Response:
        return FastJSONResponse(_collection_info(get(name)))

    @app.patch(
        "/collections/{name}",
        response_model=m.CollectionInfo,
        tags=["collections"],
        summary="Rename, replace the metadata and/or set the default n_probe",
        responses=_ERRORS_MODIFY,
        openapi_extra=_request_body(m.ModifyCollectionRequest),
    )
    @engine
    def modify_collection(name: CollectionName, body: m.ModifyCollectionRequest = json_body(m.ModifyCollectionRequest)) -> Response:
        col = get(name)
        col.modify(**body.kwargs())
        return FastJSONResponse(_collection_info(col))

    @app.delete("/collections/{name}", response_model=m.OkResponse, tags=["collections"], responses=_ERRORS_COLLECTION)
    @engine
    def delete_collection(name: CollectionName) -> Response:
        client.delete_collection(name)
        return FastJSONResponse(_OK)

    @app.get("/collections/{name}/count", response_model=m.CountResponse, tags=["collections"], responses=_ERRORS_COLLECTION)
    @engine
    def count(name: CollectionName) -> Response:
        return FastJSONResponse({"count": int(get(name).count())})

    @app.get("/collections/{name}/stats", response_model=Dict[str, Any], tags=["collections"], responses=_ERRORS_COLLECTION)
    @engine
    def stats(name: CollectionName) -> Response:
        return FastJSONResponse(get(name).stats())

    @app.get("/collections/{name}/peek", response_model=m.GetResponse, tags=["records"], responses=_ERRORS_COLLECTION,
             summary="The first records, with embeddings, metadatas and documents")
    @engine
    def peek(name: CollectionName, limit: Annotated[int, Query()] = 10) -> Response:
        return FastJSONResponse(get(name).peek(limit=limit))

    # ---- records

    @app.post("/collections/{name}/add", response_model=m.OkResponse, tags=["records"], responses=_ERRORS_COLLECTION,
              summary="Add records (ids already present are skipped)",
        openapi_extra=_request_body(m.RecordsRequest),
    )
    @engine
    def add(name: CollectionName, body: m.RecordsRequest = json_body(m.RecordsRequest)) -> Response:
        get(name).add(**_with_arrays(body.kwargs(), "embeddings"))
        return FastJSONResponse(_OK)

    @app.post("/collections/{name}/upsert", response_model=m.OkResponse, tags=["records"], responses=_ERRORS_COLLECTION,
              summary="Add new records, update existing ones (metadata merged)",
        openapi_extra=_request_body(m.RecordsRequest),
    )
    @engine
    def upsert(name: CollectionName, body: m.RecordsRequest = json_body(m.RecordsRequest)) -> Response:
        get(name).upsert(**_with_arrays(body.kwargs(), "embeddings"))
        return FastJSONResponse(_OK)

    @app.put("/collections/{name}/update", response_model=m.OkResponse, tags=["records"], responses=_ERRORS_COLLECTION,
             summary="Update existing records (unknown ids are ignored; metadata merged)",
        openapi_extra=_request_body(m.RecordsRequest),
    )
    @engine
    def update(name: CollectionName, body: m.RecordsRequest = json_body(m.RecordsRequest)) -> Response:
        get(name).update(**_with_arrays(body.kwargs(), "embeddings"))
        return FastJSONResponse(_OK)

    @app.post("/collections/{name}/query", response_model=m.QueryResponse, tags=["records"], responses=_ERRORS_COLLECTION,
              summary="Nearest neighbours: one result list per query, ascending distance",
        openapi_extra=_request_body(m.QueryRequest),
    )
    @engine
    def query(name: CollectionName, body: m.QueryRequest = json_body(m.QueryRequest)) -> Response:
        kwargs = _with_arrays(body.kwargs(), "query_embedding", "query_embeddings")
        return FastJSONResponse(get(name).query(**kwargs))

    @app.post("/collections/{name}/get", response_model=m.GetResponse, tags=["records"], responses=_ERRORS_COLLECTION,
              summary="Records by id and/or filter",
        openapi_extra=_request_body(m.GetRequest),
    )
    @engine
    def get_records(name: CollectionName, body: m.GetRequest = json_body(m.GetRequest)) -> Response:
        return FastJSONResponse(get(name).get(**body.kwargs()))

    def _delete(name: str, body: m.DeleteRequest) -> Response:
        result = get(name).delete(**body.kwargs())
        deleted = result.get("deleted") if isinstance(result, dict) else None
        return FastJSONResponse({"deleted": int(deleted or 0)})

    @app.delete("/collections/{name}/delete", response_model=m.DeletedResponse, tags=["records"],
                responses=_ERRORS_COLLECTION, summary="Delete records by id and/or filter (JSON body)",
        openapi_extra=_request_body(m.DeleteRequest),
    )
    @engine
    def delete_records(name: CollectionName, body: m.DeleteRequest = json_body(m.DeleteRequest)) -> Response:
        return _delete(name, body)

    @app.post("/collections/{name}/delete", response_model=m.DeletedResponse, tags=["records"],
              responses=_ERRORS_COLLECTION, summary="Same as DELETE, for clients that cannot send a body with DELETE",
        openapi_extra=_request_body(m.DeleteRequest),
    )
    @engine
    def delete_records_post(name: CollectionName, body: m.DeleteRequest = json_body(m.DeleteRequest)) -> Response:
        return _delete(name, body)

    # ---- maintenance

    @app.post("/collections/{name}/batch/begin", response_model=m.OkResponse, tags=["maintenance"],
              responses=_ERRORS_COLLECTION, summary="Defer index maintenance until batch/end (bulk loading)")
    @engine
    def begin_batch(name: CollectionName) -> Response:
        get(name).begin_batch()
        return FastJSONResponse(_OK)

    @app.post("/collections/{name}/batch/end", response_model=m.OkResponse, tags=["maintenance"],
              responses=_ERRORS_COLLECTION)
    @engine
    def end_batch(name: CollectionName) -> Response:
        get(name).end_batch()
        return FastJSONResponse(_OK)

    @app.post("/collections/{name}/rebuild", response_model=m.RebuildResponse, tags=["maintenance"],
              responses=_ERRORS_COLLECTION, summary="Retrain the IVF index on the current data")
    @engine
    def rebuild(name: CollectionName) -> Response:
        return FastJSONResponse({"ok": True, **get(name).rebuild()})

    @app.post("/collections/{name}/checkpoint", response_model=m.OkResponse, tags=["maintenance"],
              responses=_ERRORS_COLLECTION, summary="Write a snapshot and truncate the write-ahead log")
    @engine
    def checkpoint(name: CollectionName) -> Response:
        get(name).checkpoint()
        return FastJSONResponse(_OK)

    return app


def _install_openapi(app: FastAPI, api_key: bool) -> None:
    """The generated schema plus the hand-documented request bodies and, with a key, its scheme."""

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for model in sorted(_BODY_MODELS, key=lambda cls: cls.__name__):
                body_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(body_schema.pop("$defs", {}))
                schemas[model.__name__] = body_schema
            if api_key:
                components["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                }
                for path, operations in schema.get("paths", {}).items():
                    if path in _OPEN_PATHS:
                        continue
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
                        operation.setdefault("responses", {})["401"] = {
                            "description": "missing or invalid API key",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                        }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
