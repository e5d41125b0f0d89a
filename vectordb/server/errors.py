"""Errors as JSON: `{"error": <class>, "message": <what was wrong>}` with the status of each class,
and the exception handlers that turn every failure into such a body.

Two dialects: the seed API's (our class names; 422 for invalid input) and, under /api/v2, chroma's
(the names chromadb's client maps to its own exceptions; 400 for invalid input)."""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vectordb import errors as vdb_errors
from vectordb.server.jsonio import FastJSONResponse

CHROMA_PREFIX = "/api/v2"
_V2_COLLECTION_PATH = re.compile(r"^/api/v2/tenants/[^/]+/databases/[^/]+/collections/(.+)$")


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


# chroma's dialect: (our class, status, the error name chromadb's client knows), most specific first.
_CHROMA_ERRORS = [
    (vdb_errors.NotFoundError, 404, "NotFoundError"),
    (vdb_errors.CollectionExistsError, 409, "UniqueConstraintError"),
    (vdb_errors.AuthorizationError, 403, "AuthorizationError"),
    (vdb_errors.DuplicateIDError, 400, "DuplicateID"),
    (vdb_errors.InvalidArgumentError, 400, "InvalidArgumentError"),
]
_CHROMA_STATUS_NAMES = {401: "AuthError", 403: "AuthorizationError", 404: "NotFoundError",
                        409: "UniqueConstraintError", 400: "InvalidArgumentError", 422: "InvalidArgumentError"}


def is_chroma_path(path: str) -> bool:
    return path == CHROMA_PREFIX or path.startswith(CHROMA_PREFIX + "/")


def chroma_error(exc: BaseException) -> Tuple[int, str]:
    """(status, error name) of an exception in chroma's dialect."""
    for cls, status, name in _CHROMA_ERRORS:
        if isinstance(exc, cls):
            return status, name
    if isinstance(exc, _VectorDBError):
        return error_status(exc), "InternalError"
    if isinstance(exc, (ValueError, OverflowError)):
        return 400, "InvalidArgumentError"
    if isinstance(exc, MemoryError):
        return 507, "InternalError"
    return 500, "InternalError"


def exception_response(exc: Exception, chroma: bool = False) -> FastJSONResponse:
    status, name = chroma_error(exc) if chroma else (error_status(exc), type(exc).__name__)
    message = str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        message = "not enough memory for this request; send smaller batches"
    return error_response(status, name, message)


def status_error_name(status: int, chroma: bool) -> str:
    if chroma:
        return _CHROMA_STATUS_NAMES.get(status, "ChromaError")
    return _STATUS_NAMES.get(status, "HTTPError")


def describe_validation_errors(errors: List[Dict[str, Any]]) -> Tuple[str, List[Dict[str, Any]]]:
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


def _flat_routes(routes: Any) -> List[Any]:
    """Every route, looking inside included routers (included without a prefix here)."""
    out: List[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(_flat_routes(inner.routes) if inner is not None else [route])
    return out


def handled_error_response(exc: BaseException, chroma: bool) -> Optional[FastJSONResponse]:
    """The error body of an exception a handler raised, or None for one the handlers do not know
    (an internal error: the middleware answers 500)."""
    if isinstance(exc, OverflowError):
        return error_response(400 if chroma else 422, "InvalidArgumentError",
                              f"a number in the request is out of range: {exc}")
    if isinstance(exc, (_VectorDBError, ValueError, MemoryError)):
        return exception_response(exc, chroma)  # type: ignore[arg-type]
    return None


def validation_error_response(exc: RequestValidationError, chroma: bool) -> FastJSONResponse:
    errors = list(exc.errors())
    message, detail = describe_validation_errors(errors)
    if not chroma:
        return error_response(422, "InvalidArgumentError", message, detail)
    if any(err.get("type") == "content_type" for err in errors):
        return error_response(415, "ChromaError", message)
    return error_response(400, "InvalidArgumentError", message)


def install_error_handlers(app: FastAPI) -> None:
    """Every exception a route can raise becomes an error body (never a bare 500 page)."""

    async def _error(request: Request, exc: Exception) -> Response:
        response = handled_error_response(exc, is_chroma_path(request.url.path))
        assert response is not None
        return response

    for cls in (_VectorDBError, ValueError, MemoryError, OverflowError):
        app.add_exception_handler(cls, _error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return validation_error_response(exc, is_chroma_path(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        if exc.status_code == 404 and message == "Not Found":
            unrouted = _V2_COLLECTION_PATH.match(request.url.path)
            if unrouted is not None:  # e.g. a name with "/" (never a valid name): chroma's answer
                message = f"Collection [{unrouted.group(1)}] does not exist"
            else:
                message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path} (see /docs)"
            # Starlette lists only the first matching route's methods; list every route's.
            allowed = set()
            for route in _flat_routes(app.router.routes):
                regex = getattr(route, "path_regex", None)
                if regex is not None and regex.match(request.url.path) and getattr(route, "methods", None):
                    allowed |= set(route.methods)
            if allowed:
                headers["allow"] = ", ".join(sorted(allowed))
        return error_response(exc.status_code, status_error_name(exc.status_code, is_chroma_path(request.url.path)),
                              message, headers=headers or None)
