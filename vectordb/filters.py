"""where / where_document filters: validation, then compilation to the engine's filter program.

    >>> prog = compile_filter({"$and": [{"year": {"$gte": 2020}}, {"tag": {"$in": ["a", "b"]}}]},
    ...                       {"$contains": "sunset"})
    >>> prog[:4]
    b'VDBF'

Semantics (chromadb 1.x's, with the deviations named here):
- `$eq $in` and the ranges need the key to be present with a scalar value; `$ne $nin
  $not_contains` are the exact negations of `$eq $in $contains`, so they match rows lacking the key.
- bool is its own type; int and float compare numerically (ours: 1.5 != 1, 2.0 == 2; chromadb
  truncates the float operand when comparing with an int field).
- `$contains` matches an element of a list-valued field (never a scalar field, as in chromadb).
- documents: `$contains` is a case-sensitive substring test, `$regex` is an RE2 search (anywhere
  in the document; linear time in the document's length whatever the pattern, so no pattern can
  stall the database; no backreferences or lookaround); `$not_*` are negations, so they match rows
  without a document.

Filter program (bytes, little-endian, written here and validated again by csrc/vdb_filter.c):

    program := "VDBF" u8 version(=1) node            (nothing may follow the root node)
    node    := u8 kind, then by kind:
      0x01 AND       u32 n (>= 2), n nodes
      0x02 OR        u32 n (>= 2), n nodes
      0x03 NOT       node
      0x10 EQ        key value                         key := u32 len (>= 1), UTF-8 bytes
      0x11 LT | 0x12 LTE | 0x13 GT | 0x14 GTE   key value   (value INT or FLOAT)
      0x15 IN        key u8 tag(1..4) u32 count(>= 1), count bare values of that tag
      0x16 CONTAINS  key value                         (an element of a list-valued field)
      0x20 DOC_CONTAINS  u32 len, bytes                (substring of the document)
      0x21 DOC_REGEX     u32 index, u32 len, pattern bytes   (index = 0, 1, ... in prefix order)
    value   := u8 tag, then STR(1): u32 len, bytes | INT(2): i64 | FLOAT(3): f64 (not NaN) | BOOL(4): u8
Tags are those of the metadata blobs (csrc/vdb_meta.h). Nesting is at most MAX_PROGRAM_DEPTH.

Regex: the engine has no regex engine of its own (RE2, through the `re2` module). A program
with DOC_REGEX nodes is evaluated by the engine with a matcher callback supplied by the binding:
the engine hands it, in batches, the documents of the rows where that node's value still matters,
and the binding calls CompiledFilter.match_regex(index, documents) -> bytes of 0/1. When every match
of a pattern must contain a literal (`record 12[0-9]` needs "record 12"), the node is compiled as
AND(DOC_CONTAINS literal, DOC_REGEX): the engine's substring scan then leaves Python only the
documents that hold the literal. The literal comes from Python's regex parser, which reads RE2's
syntax the same way except for what it refuses (then there is no prefilter) and POSIX classes
(`[[:alpha:]]`: a pattern holding "[:" gets no prefilter).
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import re2

try:  # the regex parser, for the literal prefilter below (Python 3.11+: re._parser)
    from re import _parser as _sre_parse  # type: ignore[attr-defined, unused-ignore]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef, unused-ignore]

from vectordb import _core
from vectordb.errors import InvalidArgumentError
from vectordb.validation import CHROMA_URI_KEY, URI_KEY

__all__ = [
    "MAX_DEPTH",
    "CompiledFilter",
    "compile_filter",
    "compile_filter_ex",
    "validate_filters",
    "validate_where",
    "validate_where_document",
]

MAX_DEPTH = 32  # nesting levels of $and/$or a user filter may use (the top-level dict is level 1)
MAX_PROGRAM_DEPTH = _core.FILTER_MAX_DEPTH  # what the engine accepts: user depth + NOT + the top AND

MAGIC = b"VDBF"
VERSION = _core.FILTER_VERSION

# node kinds (csrc/vdb_filter.h) and value tags (csrc/vdb_meta.h), as the engine exports them
K_AND, K_OR, K_NOT = _core.FK_AND, _core.FK_OR, _core.FK_NOT
K_EQ, K_LT, K_LTE, K_GT, K_GTE = _core.FK_EQ, _core.FK_LT, _core.FK_LTE, _core.FK_GT, _core.FK_GTE
K_IN, K_CONTAINS = _core.FK_IN, _core.FK_CONTAINS
K_DOC_CONTAINS, K_DOC_REGEX = _core.FK_DOC_CONTAINS, _core.FK_DOC_REGEX
T_STR, T_INT, T_FLOAT, T_BOOL = _core.TAG_STR, _core.TAG_INT, _core.TAG_FLOAT, _core.TAG_BOOL

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_WHERE_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains", "$not_contains")
_RANGE_KINDS = {"$gt": K_GT, "$gte": K_GTE, "$lt": K_LT, "$lte": K_LTE}
_DOC_OPS = ("$contains", "$not_contains", "$regex", "$not_regex", "$and", "$or")
_TYPE_NAMES = {T_STR: "str", T_INT: "int", T_FLOAT: "float", T_BOOL: "bool"}


# ---------------------------------------------------------------------------------------------
# Messages


def _show(value: Any, limit: int = 80) -> str:
    """repr() shortened for error messages (a filter operand can be a long list)."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {_show(value)}"


def _path(parts: Sequence[Any]) -> str:
    return parts[0] + "".join(f"[{p!r}]" for p in parts[1:])


def _fail(path: Sequence[Any], message: str) -> "InvalidArgumentError":
    return InvalidArgumentError(f"Invalid filter at {_path(path)}: {message}")


# ---------------------------------------------------------------------------------------------
# Validation into an intermediate tree: ("and"|"or", [nodes]) | ("not", node)
# | ("cmp", kind, key, (tag, value)) | ("in", key, tag, [values]) | ("contains", key, (tag, value))
# | ("doc", text) | ("regex", pattern)


def _scalar(value: Any, path: Sequence[Any], what: str) -> Tuple[int, Any]:
    """(tag, normalized value) of a str/int/float/bool operand, or an error naming path."""
    if isinstance(value, bool):
        return T_BOOL, value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(path, f"{what} must be valid Unicode text (no lone surrogates), got {_show(value)}") from None
        return T_STR, value
    if isinstance(value, Integral):
        ivalue = int(value)
        if not _INT64_MIN <= ivalue <= _INT64_MAX:
            raise _fail(path, f"{what} must fit in a signed 64-bit integer, got {ivalue}")
        return T_INT, ivalue
    if isinstance(value, Real):
        fvalue = float(value)
        if math.isnan(fvalue):
            raise _fail(path, f"{what} must not be NaN")
        return T_FLOAT, fvalue
    raise _fail(path, f"{what} must be a str, int, float or bool, got {_kind(value)}")


def _check_field_key(key: Any, path: Sequence[Any]) -> None:
    if not isinstance(key, str):
        raise _fail(path, f"expected a metadata key (str) or $and/$or, got key {_kind(key)}")
    if key == "":
        raise _fail(path, "metadata key must be a non-empty str, got ''")
    if key.startswith("$"):
        if key in _WHERE_OPS:
            raise _fail(
                path,
                f"{key} must be applied to a field, as in {{'field': {{'{key}': value}}}}; "
                "a where dict's key is a metadata key or $and/$or",
            )
        raise _fail(path, f"unknown logical operator {key!r}: expected $and or $or "
                          "(metadata keys cannot start with '$')")
    if key.startswith("#"):
        raise _fail(
            path,
            f"metadata keys cannot start with '#', got {key!r}; the only '#' key is '#document'",
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(path, f"metadata key must be valid Unicode text, got {_show(key)}") from None


def _single_entry(value: Any, path: Sequence[Any], what: str) -> Tuple[Any, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected {what} (a dict), got {_kind(value)}")
    if len(value) != 1:
        if not value:
            raise _fail(path, f"expected {what} with exactly one key, got an empty dict {{}}")
        raise _fail(path, f"expected {what} with exactly one key, got {len(value)} keys {_show(list(value))}")
    return next(iter(value.items()))


def _logical(op: str, clauses: Any, path: List[Any], depth: int, sub) -> tuple:
    if not isinstance(clauses, list):
        raise _fail(path, f"{op} takes a list of at least two clauses, got {_kind(clauses)}")
    if len(clauses) < 2:
        raise _fail(path, f"{op} takes a list of at least two clauses, got {len(clauses)}")
    if depth >= MAX_DEPTH:
        raise _fail(path, f"filter nesting is deeper than the limit of {MAX_DEPTH} levels")
    return ("and" if op == "$and" else "or", [sub(c, path + [i], depth + 1) for i, c in enumerate(clauses)])


def _where_node(where: Any, path: List[Any], depth: int) -> tuple:
    key, value = _single_entry(where, path, "a where clause")
    path = path + [key]
    if key in ("$and", "$or"):
        return _logical(key, value, path, depth, _where_node)
    if key == "#document":
        op, operand = _single_entry(value, path, "an operator dict such as {'$contains': 'text'} for '#document'")
        if op not in ("$contains", "$not_contains"):
            raise _fail(path, f"'#document' in where supports $contains and $not_contains, got {_show(op)}")
        path = path + [op]
        if not isinstance(operand, str):
            raise _fail(path, f"{op} on '#document' takes a str, got {_kind(operand)}")
        _scalar(operand, path, "the operand")  # Unicode check
        node: tuple = ("doc", operand)
        return node if op == "$contains" else ("not", node)
    _check_field_key(key, path)
    if key == CHROMA_URI_KEY:
        key = URI_KEY  # where the records' uris are kept
    if not isinstance(value, Mapping):
        if isinstance(value, (list, tuple)):
            raise _fail(path, f"a value to match must be a str, int, float or bool, got {_kind(value)}; "
                              "use $in for a list")
        if value is None:
            raise _fail(path, "a value to match must be a str, int, float or bool, got None")
        return ("cmp", K_EQ, key, _scalar(value, path, "the value to match"))
    op, operand = _single_entry(value, path, "an operator dict such as {'$eq': value}")
    path = path + [op]
    if op not in _WHERE_OPS:
        raise _fail(path, f"unknown operator {_show(op)}: expected one of {', '.join(_WHERE_OPS)}")
    if op in ("$eq", "$ne"):
        node = ("cmp", K_EQ, key, _scalar(operand, path, f"{op} operand"))
        return node if op == "$eq" else ("not", node)
    if op in _RANGE_KINDS:
        if isinstance(operand, bool) or not isinstance(operand, Real):
            raise _fail(path, f"{op} takes an int or float operand, got {_kind(operand)}")
        return ("cmp", _RANGE_KINDS[op], key, _scalar(operand, path, f"{op} operand"))
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise _fail(path, f"{op} takes a non-empty list of str, int, float or bool values of one type, "
                              f"got {_kind(operand)}")
        if not operand:
            raise _fail(path, f"{op} takes a non-empty list, got []")
        items = [_scalar(v, path + [i], f"{op} element") for i, v in enumerate(operand)]
        tag = items[0][0]
        for i, (t, _) in enumerate(items):
            if t != tag:
                raise _fail(
                    path,
                    f"{op} list values must all have one type, but element 0 is {_TYPE_NAMES[tag]} "
                    f"and element {i} is {_TYPE_NAMES[t]} ({_show(operand[i])})",
                )
        node = ("in", key, tag, [v for _, v in items])
        return node if op == "$in" else ("not", node)
    # $contains / $not_contains: one element of a list-valued field
    if isinstance(operand, (list, tuple, Mapping)):
        raise _fail(path, f"{op} takes one str, int, float or bool (an element of a list field), got {_kind(operand)}")
    node = ("contains", key, _scalar(operand, path, f"{op} operand"))
    return node if op == "$contains" else ("not", node)


def _document_node(where_document: Any, path: List[Any], depth: int) -> tuple:
    op, operand = _single_entry(where_document, path, "a where_document clause such as {'$contains': 'text'}")
    path = path + [op]
    if op not in _DOC_OPS:
        raise _fail(path, f"unknown where_document operator {_show(op)}: expected one of {', '.join(_DOC_OPS)}")
    if op in ("$and", "$or"):
        return _logical(op, operand, path, depth, _document_node)
    if not isinstance(operand, str):
        raise _fail(path, f"{op} takes a non-empty str, got {_kind(operand)}")
    if operand == "":
        raise _fail(path, f"{op} takes a non-empty str, got ''")
    _scalar(operand, path, f"{op} operand")  # Unicode check
    if op in ("$regex", "$not_regex"):
        compile_regex(operand, path)
        node = ("regex", operand)
        return node if op == "$regex" else ("not", node)
    node = ("doc", operand)
    return node if op == "$contains" else ("not", node)


def _tree(where: Any, where_document: Any) -> Optional[tuple]:
    parts = []
    if where is not None:
        parts.append(_where_node(where, ["where"], 1))
    if where_document is not None:
        parts.append(_document_node(where_document, ["where_document"], 1))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ("and", parts)


def validate_where(where: Any) -> None:
    """Raises InvalidArgumentError (a ValueError) naming the bad part unless `where` is a valid
    where filter. `validate_where({"year": {"$gte": 2020}})` returns None."""
    if where is None:
        raise InvalidArgumentError("Invalid filter at where: expected a where dict, got None")
    _where_node(where, ["where"], 1)


def validate_where_document(where_document: Any) -> None:
    """Raises InvalidArgumentError (a ValueError) unless `where_document` is valid, e.g.
    `validate_where_document({"$contains": "sunset"})` returns None."""
    if where_document is None:
        raise InvalidArgumentError("Invalid filter at where_document: expected a where_document dict, got None")
    _document_node(where_document, ["where_document"], 1)


def validate_filters(where: Any = None, where_document: Any = None) -> None:
    """Validates both filters (None = not given) without compiling."""
    _tree(where, where_document)


# ---------------------------------------------------------------------------------------------
# Encoding


def _enc_bare(tag: int, value: Any, out: bytearray) -> None:
    if tag == T_STR:
        data = value.encode("utf-8")
        out += struct.pack("<I", len(data))
        out += data
    elif tag == T_INT:
        out += struct.pack("<q", value)
    elif tag == T_FLOAT:
        out += struct.pack("<d", value)
    else:
        out.append(1 if value else 0)


def _enc_key(key: str, out: bytearray) -> None:
    data = key.encode("utf-8")
    out += struct.pack("<I", len(data))
    out += data


def _encode(node: tuple, out: bytearray, patterns: List[str]) -> None:
    kind = node[0]
    if kind in ("and", "or"):
        out.append(K_AND if kind == "and" else K_OR)
        out += struct.pack("<I", len(node[1]))
        for child in node[1]:
            _encode(child, out, patterns)
    elif kind == "not":
        out.append(K_NOT)
        _encode(node[1], out, patterns)
    elif kind in ("cmp", "contains"):
        if kind == "cmp":
            out.append(node[1])
            key, (tag, value) = node[2], node[3]
        else:
            out.append(K_CONTAINS)
            key, (tag, value) = node[1], node[2]
        _enc_key(key, out)
        out.append(tag)
        _enc_bare(tag, value, out)
    elif kind == "in":
        _, key, tag, values = node
        out.append(K_IN)
        _enc_key(key, out)
        out.append(tag)
        out += struct.pack("<I", len(values))
        for v in values:
            _enc_bare(tag, v, out)
    elif kind == "doc":
        data = node[1].encode("utf-8")
        out.append(K_DOC_CONTAINS)
        out += struct.pack("<I", len(data))
        out += data
    elif kind == "regex":
        literal = required_literal(node[1])
        if literal:  # same value (a match implies the literal), but Python sees far fewer documents
            out.append(K_AND)
            out += struct.pack("<I", 2)
            _encode(("doc", literal), out, patterns)
        data = node[1].encode("utf-8")
        out.append(K_DOC_REGEX)
        out += struct.pack("<II", len(patterns), len(data))
        out += data
        patterns.append(node[1])
    else:  # pragma: no cover - the validator builds only the kinds above
        raise AssertionError(kind)


def _re2_options() -> "re2.Options":
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller; RE2 would also print it
    options.never_capture = True  # only whether it matches counts: groups would only cost time
    return options


_RE2_OPTIONS = _re2_options()


def compile_regex(pattern: str, path: Sequence[Any] = ("where_document",)) -> "re2._Regexp":
    """The RE2 form of a $regex operand, or InvalidArgumentError naming the pattern and why (RE2
    has no backreferences, lookaround or possessive repeats: what would need backtracking)."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise _fail(path, f"invalid regular expression {_show(pattern)}: {why} (the syntax is RE2's: no "
                          "backreferences or lookaround)") from None


def required_literal(pattern: str) -> Optional[str]:
    """The longest run of literal characters that every match of `pattern` (re.search) contains,
    or None. Only the pattern's top level counts (each of its items is matched in sequence, so a
    run of top-level literals appears as is in any match); nothing with case-insensitive matching.
    `required_literal("record 12[0-9] ")` -> 'record 12'."""
    if "[:" in pattern:  # RE2 reads [[:alpha:]] as a class; Python as a class and a literal ']'
        return None
    try:
        parsed = _sre_parse.parse(pattern)
        if parsed.state.flags & re.IGNORECASE:
            return None
        best, run = "", []
        for op, av in list(parsed) + [(None, None)]:
            if op is _sre_parse.LITERAL:
                run.append(chr(av))
                continue
            if len(run) > len(best):
                best = "".join(run)
            run = []
        best.encode("utf-8")  # a lone surrogate (r"\ud800"): no document holds it; no prefilter
        return best or None
    except Exception:  # noqa: BLE001 - a parser we do not understand: no prefilter, same answers
        return None


@dataclass(frozen=True)
class CompiledFilter:
    """A validated filter: the engine program plus the compiled regular expressions it refers to
    (pattern i belongs to the i-th DOC_REGEX node in prefix order)."""

    program: bytes
    patterns: Tuple["re2._Regexp", ...] = field(default=())

    @property
    def has_regex(self) -> bool:
        return bool(self.patterns)

    def match_regex(self, index: int, documents: Sequence[str]) -> bytes:
        """The engine's regex callback: one byte per document, 1 where pattern `index` matches
        (an RE2 search: anywhere in the document). `cf.match_regex(0, ["a sunset", "rain"])` -> b'\\x01\\x00'."""
        search = self.patterns[index].search
        return bytes([1 if search(doc) is not None else 0 for doc in documents])


def compile_filter_ex(where: Any = None, where_document: Any = None) -> Optional[CompiledFilter]:
    """Validates and compiles; None when both filters are None. Raises InvalidArgumentError."""
    tree = _tree(where, where_document)
    if tree is None:
        return None
    out = bytearray(MAGIC)
    out.append(VERSION)
    patterns: List[str] = []
    _encode(tree, out, patterns)
    return CompiledFilter(bytes(out), tuple(compile_regex(p) for p in patterns))


def compile_filter(where: Any = None, where_document: Any = None) -> Optional[bytes]:
    """The engine program for these filters (None when both are None), e.g.
    `compile_filter({"source": "camera"}, None)`. Raises InvalidArgumentError (a ValueError)."""
    compiled = compile_filter_ex(where, where_document)
    return None if compiled is None else compiled.program
