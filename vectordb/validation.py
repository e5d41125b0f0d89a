"""Input validation and normalization: everything is checked here, before the one engine call that
applies it, so a bad request changes nothing."""
from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from typing import Any, Dict, Literal, Mapping, Optional, Sequence, overload

import numpy as np

from . import _core
from .errors import DuplicateIDError, InvalidArgumentError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
VALID_INCLUDE = ("documents", "embeddings", "metadatas", "distances", "uris", "data")
SPACES = ("l2", "ip", "cosine")
# A record's uri is kept in its metadata under URI_KEY: a '#' key, which no user metadata can hold
# (validate_metadata refuses them), so it rides the metadata's durable, checksummed log records and
# snapshots without a new file format, and old databases cannot contain it by accident. chromadb
# keeps uris under "chroma:uri", and its users filter them with that key: filters translate it.
URI_KEY = "#uri"
CHROMA_URI_KEY = "chroma:uri"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
_ACCEPTED_DTYPES = (np.float16, np.float32, np.float64, np.int32, np.int64)


def validate_name(name: Any) -> str:
    """Collection names as chromadb: 3-512 chars of [a-zA-Z0-9._-], alphanumeric at both ends, no
    "..", not an IPv4 address. They never become paths (directories are named by id)."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"collection name must be a str, got {type(name).__name__}")
    if not _NAME_RE.match(name) or ".." in name:
        raise InvalidArgumentError(
            f"invalid collection name {name!r}: expected 3-512 characters from [a-zA-Z0-9._-], "
            "starting and ending with a letter or digit, with no '..'"
        )
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidArgumentError(f"invalid collection name {name!r}: it must not be an IPv4 address")


def validate_ids(ids: Any) -> list[str]:
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, (list, tuple)):
        raise InvalidArgumentError(f"ids must be a list of str, got {type(ids).__name__}")
    if len(ids) == 0:
        raise InvalidArgumentError("expected ids to be a non-empty list, got an empty list")
    out = list(ids)
    try:  # one pass in C when every id is a short non-empty str (a bulk add's 1,000 ids: ~10x faster)
        plain = bool("".join(out)) and all(out) and max(map(len, out)) <= MAX_ID_BYTES // 4
    except TypeError:  # a non-str id: the loop below names it
        plain = False
    for i, x in enumerate([] if plain else out):
        if not isinstance(x, str):
            raise InvalidArgumentError(f"id {i} is {type(x).__name__} {x!r}: ids must be str")
        if x == "":
            raise InvalidArgumentError(f"id {i} is an empty string: ids must be non-empty str")
        if len(x) > MAX_ID_BYTES // 4 and len(x.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise InvalidArgumentError(f"id {i} ({x[:40]!r}...) is {len(x.encode('utf-8', 'surrogatepass'))} bytes "
                                       f"long: ids are at most {MAX_ID_BYTES} bytes of UTF-8")
    if len(set(out)) != len(out):
        dups = sorted(x for x, count in Counter(out).items() if count > 1)
        shown = ", ".join(dups[:10]) + (f" and {len(dups) - 10} more" if len(dups) > 10 else "")
        raise DuplicateIDError(f"expected ids to be unique, found duplicates of: {shown}")
    return out


def _check_matrix(a: np.ndarray, what: str, private: bool) -> np.ndarray:
    """a as float32 C-contiguous (n, d), checked. The check runs on the array returned: when a is
    the caller's (private False), that is a copy of it, taken once before checking, so what is
    checked is what the engine writes even if another thread changes the caller's array."""
    if a.dtype == np.bool_ or not any(a.dtype == t for t in _ACCEPTED_DTYPES):
        raise InvalidArgumentError(
            f"{what} have dtype {a.dtype}: expected float16, float32, float64, int32 or int64 numbers"
        )
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidArgumentError(f"{what} must be a vector or a list of vectors, got an array of shape {a.shape}")
    if a.shape[1] == 0:
        raise InvalidArgumentError(f"{what} must not be empty vectors")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: reported below, not warned
        out = np.ascontiguousarray(a, dtype=np.float32)
    if not private and np.may_share_memory(out, a):
        out = out.copy()
    if a.dtype.kind == "f":  # a float64 beyond the float32 range became infinity in out
        finite = np.isfinite(out)
        if not finite.all():
            row = int(np.nonzero(~finite.all(axis=1))[0][0])
            if a.dtype == np.float64 and np.isfinite(a[row]).all():
                raise InvalidArgumentError(f"{what[:-1]} {row} holds a value beyond the float32 range (about 3.4e38)")
            raise InvalidArgumentError(f"{what[:-1]} {row} contains NaN or infinity: expected finite numbers")
    return out


def to_matrix(x: Any, what: str = "embeddings", snapshot: bool = False) -> np.ndarray:
    """Embeddings in any accepted form -> float32 C-contiguous (n, d); one flat vector -> (1, d).
    snapshot: never return (a view of) the caller's array: writes take their one copy here."""
    if isinstance(x, np.ndarray):
        if not snapshot and x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous and x.shape[1] > 0:
            # Fast path: the query hot loop. A finite sum means every value is finite (NaN and
            # infinity propagate); a sum that overflowed or is not finite gets the full check.
            # One reduction costs a fraction of isfinite().all()'s two passes and temporary.
            if not math.isfinite(x.sum()):
                return _check_matrix(x, what, private=False)
            return x
        return _check_matrix(x, what, private=not snapshot)
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty list of vectors or a NumPy array")
    first = x[0]
    if isinstance(first, (list, tuple, np.ndarray)):
        dims = {len(v) if not isinstance(v, np.ndarray) else v.size for v in x}
        if len(dims) != 1:
            raise InvalidArgumentError(f"{what} have mixed dimensions {sorted(dims)}: all must have the same length")
        for i, v in enumerate(x):
            _check_python_numbers(v, f"{what[:-1]} {i}")
        try:
            arr = np.array([np.asarray(v).ravel() if isinstance(v, np.ndarray) else v for v in x])
        except (ValueError, TypeError) as e:
            raise InvalidArgumentError(f"{what} could not be read as numbers: {e}") from None
    else:
        _check_python_numbers(x, what[:-1])
        arr = np.array(x)
    if arr.dtype == object or arr.dtype.kind in "USO":
        raise InvalidArgumentError(f"{what} must contain only numbers")
    if arr.dtype.kind == "i":
        arr = arr.astype(np.int64)
    return _check_matrix(arr, what, private=True)  # np.array copied the caller's numbers


_PLAIN_NUMBERS = frozenset((float, int))  # exact types: bool (a subclass of int) is not one of them


def _check_python_numbers(v: Any, what: str) -> None:
    if isinstance(v, np.ndarray):
        return
    if _PLAIN_NUMBERS.issuperset(map(type, v)):
        return  # the usual vector of floats, checked at C speed (the loop below costs ~0.3 us a number)
    for j, e in enumerate(v):
        if isinstance(e, bool) or not isinstance(e, (int, float, np.number)):
            raise InvalidArgumentError(f"{what} element {j} is {type(e).__name__} {e!r}: expected a number")


def _check_scalar(key: str, v: Any, where: str) -> None:
    if isinstance(v, (bool, str)):
        return
    if isinstance(v, int):
        if not INT64_MIN <= v <= INT64_MAX:
            raise InvalidArgumentError(f"{where}: value of {key!r} is {v}, outside the 64-bit integer range")
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidArgumentError(f"{where}: value of {key!r} is {v}: expected a finite float")
        return
    raise InvalidArgumentError(
        f"{where}: value of {key!r} is {type(v).__name__}: "
        "expected str, int, float, bool or a non-empty list of one of those"
    )


def validate_metadata(m: Any, where: str, allow_none_values: bool) -> Optional[dict]:
    """One record's metadata. None passes; {} is rejected (as chromadb)."""
    if m is None:
        return None
    if not isinstance(m, Mapping):
        raise InvalidArgumentError(f"{where}: expected a dict or None, got {type(m).__name__}")
    if len(m) == 0:
        raise InvalidArgumentError(f"{where}: expected a non-empty dict or None, got {{}}")
    out: Dict[str, Any] = {}
    for k, v in m.items():
        if not isinstance(k, str) or not k:
            raise InvalidArgumentError(f"{where}: key {k!r} must be a non-empty str")
        if k[0] in "#$":
            raise InvalidArgumentError(f"{where}: key {k!r} must not start with '#' or '$' (reserved)")
        if v is None:
            if allow_none_values:
                out[k] = None
            continue  # in add, a None value means the key is absent
        if isinstance(v, (list, tuple)):
            if len(v) == 0:
                raise InvalidArgumentError(f"{where}: list value of {k!r} is empty: expected a non-empty list")
            kinds = {_kind(e) for e in v}
            if len(kinds) != 1 or None in kinds:
                raise InvalidArgumentError(
                    f"{where}: list value of {k!r} must hold elements of one type (str, int, float or bool)"
                )
            for e in v:
                _check_scalar(k, e, where)
            out[k] = list(v)
        else:
            _check_scalar(k, v, where)
            out[k] = v
    return out if out or allow_none_values else None


def _kind(e: Any) -> Optional[type]:
    for t in (bool, int, float, str):
        if isinstance(e, t):
            return t
    return None


def validate_metadatas(metadatas: Any, n: int, allow_none_values: bool) -> Optional[list]:
    if metadatas is None:
        return None
    if isinstance(metadatas, Mapping):
        metadatas = [metadatas]
    if not isinstance(metadatas, (list, tuple)):
        raise InvalidArgumentError(f"metadatas must be a list of dicts, got {type(metadatas).__name__}")
    if len(metadatas) != n:
        raise InvalidArgumentError(f"got {len(metadatas)} metadatas for {n} ids: expected one per id")
    return [validate_metadata(m, f"metadata {i}", allow_none_values) for i, m in enumerate(metadatas)]


def _strs_per_id(values: Any, n: int, what: str) -> Optional[list]:
    """One str or None per id (a single str stands for a list of one); None: none given."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise InvalidArgumentError(f"{what}s must be a list of str, got {type(values).__name__}")
    if len(values) != n:
        raise InvalidArgumentError(f"got {len(values)} {what}s for {n} ids: expected one per id")
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            raise InvalidArgumentError(f"{what} {i} is {type(v).__name__}: expected str or None")
    return list(values)


def validate_documents(documents: Any, n: int) -> Optional[list]:
    return _strs_per_id(documents, n, "document")


def validate_uris(uris: Any, n: int) -> Optional[list]:
    return _strs_per_id(uris, n, "uri")


def validate_include(include: Any, allowed: Sequence[str], call: str) -> list[str]:
    if include is None:
        return []
    if isinstance(include, str) or not isinstance(include, (list, tuple)):
        raise InvalidArgumentError(f"include must be a list of str, got {include!r}")
    for item in include:
        if item not in VALID_INCLUDE:
            raise InvalidArgumentError(f"include item {item!r} is not valid: "
                                       f"expected some of {', '.join(VALID_INCLUDE)}")
        if item not in allowed:
            raise InvalidArgumentError(f"include item {item!r} is not allowed in {call}")
    return list(include)


# Counts above this mean "all of them": no collection holds 2**62 records.
COUNT_CAP = 2**62
# n_results, limit and offset: at most 2**32 - 1 (as chromadb's, which are 32-bit), far above any
# collection's size; 1e12 or 2**64 is a mistake to report, not a request for everything.
MAX_COUNT = 2**32 - 1
# An id is at most 4096 bytes of UTF-8 (a path or a URL fits; a document passed as an id does not).
MAX_ID_BYTES = 4096


def validate_count(x: Any, what: str, minimum: int) -> Optional[int]:
    """n_results (minimum 1), limit or offset (minimum 0): None, or minimum .. MAX_COUNT."""
    if type(x) is int and minimum <= x <= MAX_COUNT:  # the usual case, without the checks below
        return x
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not minimum <= x <= MAX_COUNT:
        raise InvalidArgumentError(f"{what} must be an integer from {minimum} to {MAX_COUNT}, got {x!r}")
    return int(x)


@overload
def validate_positive_int(x: Any, what: str, allow_none: Literal[False] = False) -> int: ...
@overload
def validate_positive_int(x: Any, what: str, allow_none: bool) -> Optional[int]: ...
def validate_positive_int(x: Any, what: str, allow_none: bool = False) -> Optional[int]:
    if x is None and allow_none:
        return None
    if type(x) is int and 0 < x <= COUNT_CAP:  # the usual case, without the checks below
        return x
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x <= 0:
        raise InvalidArgumentError(f"{what} must be a positive integer, got {x!r}")
    return min(int(x), COUNT_CAP)


# The largest vector dimension: the engine's files cannot hold more (it refuses it as well).
MAX_DIMENSION: int = _core.MAX_DIMENSION


def validate_dimension(x: Any) -> Optional[int]:
    """A collection's dimension: None (fixed by the first add) or 1 .. MAX_DIMENSION (2**20)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not 1 <= x <= MAX_DIMENSION:
        raise InvalidArgumentError(f"dimension must be an integer from 1 to {MAX_DIMENSION}, got {x!r}")
    return int(x)


def validate_nonneg_int(x: Any, what: str) -> Optional[int]:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0:
        raise InvalidArgumentError(f"{what} must be a non-negative integer, got {x!r}")
    return min(int(x), COUNT_CAP)


def validate_collection_metadata(metadata: Any) -> Optional[dict]:
    if metadata is None:
        return None
    m = validate_metadata(metadata, "collection metadata", allow_none_values=False)
    space = (m or {}).get("hnsw:space")
    if space is not None and space not in SPACES:
        raise InvalidArgumentError(f"hnsw:space {space!r} is not valid: expected one of {', '.join(SPACES)}")
    return m
