"""JSON in and out: strict parsing (NaN/Infinity rejected, 64-bit-exact integers), fast rendering
(orjson, NumPy arrays written directly), and request bodies parsed into Pydantic models."""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Dict, List, Optional, Tuple, Type

import numpy as np
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from vectordb.wire import split_frame

try:  # optional: ~10x faster JSON, and float32 arrays written in their shortest form
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

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


def body_error(loc: Tuple[Any, ...], kind: str, msg: str,
               ctx: Optional[Dict[str, Any]] = None) -> RequestValidationError:
    err: Dict[str, Any] = {"loc": loc, "type": kind, "msg": msg}
    if ctx is not None:
        err["ctx"] = ctx
    return RequestValidationError([err])


def parse_body(model: Type[BaseModel], raw: bytes) -> Any:
    """Strict JSON parse + Pydantic validation of a request body; errors as RequestValidationError."""
    if not raw:
        raise body_error(("body",), "missing", "a JSON body is required")
    try:
        value = loads_strict(raw)
    except json.JSONDecodeError as exc:
        raise body_error(("body", exc.pos), "json_invalid", "JSON decode error", {"error": exc.msg}) from None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [dict(e, loc=("body",) + tuple(e.get("loc", ()))) for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def parse_frame(model: Type[BaseModel], raw: bytes) -> Tuple[Any, Optional[Tuple[str, np.ndarray]]]:
    """A binary frame (vectordb/wire.py): its header validated by `model`, and its vectors."""
    try:
        header, vectors = split_frame(raw, loads_strict)
    except json.JSONDecodeError as exc:
        raise body_error(("body", exc.pos), "json_invalid", "JSON decode error", {"error": exc.msg}) from None
    except ValueError as exc:
        raise body_error(("body",), "frame", str(exc)) from None
    try:
        return model.model_validate(header), vectors
    except ValidationError as exc:
        errors = [dict(e, loc=("body",) + tuple(e.get("loc", ()))) for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def decode_base64_vectors(items: List[str], field: str) -> Any:
    """Vectors sent as base64 strings of little-endian float32, one string per vector (chroma's
    encoding; our HttpClient sends NumPy arrays this way). Returns one (n, d) float32 array, or a
    list of 1-D arrays when the lengths differ (the Collection then names the problem)."""
    from vectordb.errors import InvalidArgumentError

    if items and len(items[0]) % 4 == 0 and not items[0].endswith("=") and len({len(item) for item in items}) == 1:
        # Rows of a multiple of 3 bytes have no padding: one decode for the whole matrix.
        try:
            raw = base64.b64decode("".join(items), validate=True)
            if len(raw) % (4 * len(items)) == 0:
                return np.frombuffer(raw, dtype="<f4").reshape(len(items), -1).astype(np.float32, copy=False)
        except (binascii.Error, ValueError):
            pass  # the loop below names the bad item
    vectors = []
    for i, item in enumerate(items):
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgumentError(f"{field}[{i}] is not valid base64") from None
        if len(raw) % 4:
            raise InvalidArgumentError(f"{field}[{i}] is {len(raw)} bytes: expected a multiple of 4 (float32)")
        vectors.append(np.frombuffer(raw, dtype="<f4"))
    if vectors and len({v.shape[0] for v in vectors}) == 1:
        return np.stack(vectors).astype(np.float32, copy=False)
    return vectors
