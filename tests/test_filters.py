"""where / where_document filters: validation, and the engine's matches against a Python model.

The model (`ref_*` below) states chromadb 1.x's filter semantics (with our numeric deviation, see
vectordb/filters.py) in a few lines. The engine is exercised two ways: the C evaluator directly (csrc/vdb_filter.c built
into a small shared library, driven with ctypes: runs without the Python binding), and through
the public Collection API when it exists. Where chromadb is installed, chromadb is run on the same
data and filters: it must agree with the model's "chroma" mode (which knows chromadb's float
truncation and type-strict $contains), and our engine must agree with chromadb wherever the two
modes of the model agree.
"""
from __future__ import annotations

import ctypes
import math
import os
import shutil
import struct
import subprocess
import uuid

import numpy as np
import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vectordb import filters
from vectordb.filters import compile_filter, compile_filter_ex, validate_filters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------
# Reference model


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _chroma_operand(field, op):
    """chromadb compares an int field with int(operand) when the operand is a float, and a float
    field with float(operand) when the operand is an int (2**53 + 1 then equals 2.0**53)."""
    if isinstance(field, int) and isinstance(op, float) and not math.isinf(op):
        return int(op)
    if isinstance(field, float) and isinstance(op, int) and not isinstance(op, bool):
        return float(op)
    return op


def ref_eq(field, op, mode):
    if isinstance(field, list):
        return False
    if isinstance(op, bool) or isinstance(field, bool):
        return isinstance(op, bool) and isinstance(field, bool) and op == field
    if isinstance(op, str):
        return isinstance(field, str) and field == op
    if not _num(field):
        return False
    if mode == "chroma":
        op = _chroma_operand(field, op)
    return field == op  # Python compares int and float exactly


def ref_range(field, op, cmp, mode):
    if not _num(field):
        return False
    if mode == "chroma":
        op = _chroma_operand(field, op)
    return {"$gt": field > op, "$gte": field >= op, "$lt": field < op, "$lte": field <= op}[cmp]


def ref_contains(field, op, mode):
    if not isinstance(field, list):
        return False
    if mode == "chroma":  # element type must be the operand's type
        return any(type(e) is type(op) and e == op for e in field)
    return any(ref_eq(e, op, mode) for e in field)


def ref_where(meta, doc, where, mode="ours"):
    ((key, value),) = where.items()
    if key == "$and":
        return all(ref_where(meta, doc, c, mode) for c in value)
    if key == "$or":
        return any(ref_where(meta, doc, c, mode) for c in value)
    if key == "#document":
        ((op, text),) = value.items()
        hit = doc is not None and text in doc
        return hit if op == "$contains" else not hit
    if not isinstance(value, dict):
        value = {"$eq": value}
    ((op, operand),) = value.items()
    present = meta is not None and key in meta
    field = meta[key] if present else None
    if op in ("$eq", "$ne"):
        hit = present and ref_eq(field, operand, mode)
        return hit if op == "$eq" else not hit
    if op in ("$in", "$nin"):
        hit = present and any(ref_eq(field, o, mode) for o in operand)
        return hit if op == "$in" else not hit
    if op in ("$contains", "$not_contains"):
        hit = present and ref_contains(field, operand, mode)
        return hit if op == "$contains" else not hit
    return present and ref_range(field, operand, op, mode)


def ref_document(doc, wd):
    ((op, operand),) = wd.items()
    if op == "$and":
        return all(ref_document(doc, c) for c in operand)
    if op == "$or":
        return any(ref_document(doc, c) for c in operand)
    if op in ("$contains", "$not_contains"):
        hit = doc is not None and operand in doc
        return hit if op == "$contains" else not hit
    hit = doc is not None and re2.search(operand, doc) is not None
    return hit if op == "$regex" else not hit


def ref_ids(records, where, where_document, mode="ours"):
    out = set()
    for i, (meta, doc) in enumerate(records):
        if where is not None and not ref_where(meta, doc, where, mode):
            continue
        if where_document is not None and not ref_document(doc, where_document):
            continue
        out.add(f"r{i}")
    return out


# ---------------------------------------------------------------------------------------------
# Strategies: small value pools so that filters hit often, with the int/float/bool edge cases.

KEYS = ["a", "b"]
STRS = ["", "x", "xy"]
INTS = [-1, 0, 1, 2, 2**53 + 1]
FLOATS = [-1.5, -0.0, 1.0, 1.5, 2.0, 2.0**53]
BOOLS = [True, False]
POOLS = [STRS, INTS, FLOATS, BOOLS]
DOCS = ["", "hello world", "Hello", "abc", "xyz abc", "ab", "ba", "héllo wörld"]
DOC_WORDS = ["hello", "Hello", "abc", "a", "b", "wörld", "o w"]
REGEXES = ["^a", "b$", "a.c", "(ab|ba)", "[xy]+z", "^h.llo", "o w", r"\bab"]

scalars = st.one_of(*[st.sampled_from(p) for p in POOLS])
lists = st.sampled_from(POOLS).flatmap(lambda p: st.lists(st.sampled_from(p), min_size=1, max_size=3))
metadata = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(KEYS), st.one_of(scalars, lists), min_size=1, max_size=2),
)
documents = st.one_of(st.none(), st.sampled_from(DOCS))
records_st = st.lists(st.tuples(metadata, documents), min_size=0, max_size=25)

numbers = st.sampled_from(INTS + FLOATS)


def _seen_values(records):
    """Scalars stored in the records (list elements included), so that filters hit often."""
    out = []
    for meta, _ in records:
        for v in (meta or {}).values():
            out.extend(v if isinstance(v, list) else [v])
    return out


def filters_for(records):
    """(where, where_document) pairs, not both None; operands are mostly values the records hold."""
    seen = _seen_values(records)
    seen_num = [v for v in seen if _num(v)]
    pick_scalar = st.one_of(scalars, st.sampled_from(seen)) if seen else scalars
    pick_number = st.one_of(numbers, st.sampled_from(seen_num)) if seen_num else numbers
    seen_lists = st.sampled_from(POOLS + ([seen] if seen else [])).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=3)
    ).filter(lambda xs: len({type(x) for x in xs}) == 1)

    @st.composite
    def where_leaf(draw):
        key = draw(st.sampled_from(KEYS + ["#document"]))
        if key == "#document":
            op = draw(st.sampled_from(["$contains", "$not_contains"]))
            return {key: {op: draw(st.sampled_from(DOC_WORDS + [""]))}}
        op = draw(st.sampled_from(["=", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
                                   "$contains", "$not_contains"]))
        if op == "=":
            return {key: draw(pick_scalar)}
        if op in ("$gt", "$gte", "$lt", "$lte"):
            return {key: {op: draw(pick_number)}}
        if op in ("$in", "$nin"):
            return {key: {op: draw(seen_lists)}}
        return {key: {op: draw(pick_scalar)}}

    where_st = st.recursive(
        where_leaf(),
        lambda kids: st.builds(lambda op, cs: {op: cs}, st.sampled_from(["$and", "$or"]),
                               st.lists(kids, min_size=2, max_size=3)),
        max_leaves=5,
    )
    return st.tuples(st.one_of(st.none(), where_st), st.one_of(st.none(), where_document_st)).filter(
        lambda t: t != (None, None)
    )


doc_leaf = st.one_of(
    st.builds(lambda op, w: {op: w}, st.sampled_from(["$contains", "$not_contains"]), st.sampled_from(DOC_WORDS)),
    st.builds(lambda op, p: {op: p}, st.sampled_from(["$regex", "$not_regex"]), st.sampled_from(REGEXES)),
)
where_document_st = st.recursive(
    doc_leaf,
    lambda kids: st.builds(lambda op, cs: {op: cs}, st.sampled_from(["$and", "$or"]),
                           st.lists(kids, min_size=2, max_size=3)),
    max_leaves=4,
)
filters_st = filters_for([])


def cases(min_records=0, max_filters=4):
    """(records, [filters...]) with filters drawn for those records."""
    return records_st.filter(lambda r: len(r) >= min_records).flatmap(
        lambda recs: st.tuples(st.just(recs), st.lists(filters_for(recs), min_size=1, max_size=max_filters))
    )


# ---------------------------------------------------------------------------------------------
# Validation


INVALID_WHERE = [
    ({}, "exactly one key"),
    ({"a": 1, "b": 2}, "exactly one key"),
    ([{"a": 1}], "a dict"),
    ("a", "a dict"),
    ({1: 1}, "key"),
    ({"": 1}, "non-empty"),
    ({"$foo": 1}, "$and or $or"),
    ({"$contains": "x"}, "applied to a field"),
    ({"$eq": 1}, "applied to a field"),
    ({"#foo": 1}, "'#'"),
    ({"a": None}, "None"),
    ({"a": [1, 2]}, "$in"),
    ({"a": (1, 2)}, "$in"),
    ({"a": {}}, "exactly one key"),
    ({"a": {"$eq": 1, "$ne": 2}}, "exactly one key"),
    ({"a": {"$regex": "x"}}, "unknown operator"),
    ({"a": {"eq": 1}}, "unknown operator"),
    ({"a": {"$eq": None}}, "$eq operand"),
    ({"a": {"$eq": [1]}}, "$eq operand"),
    ({"a": {"$eq": {"x": 1}}}, "$eq operand"),
    ({"a": {"$ne": object()}}, "$ne operand"),
    ({"a": {"$eq": float("nan")}}, "NaN"),
    ({"a": {"$eq": 2**63}}, "64-bit"),
    ({"a": {"$gt": -(2**63) - 1}}, "64-bit"),
    ({"a": {"$eq": "\ud800"}}, "Unicode"),
    ({"a": {"$gt": "x"}}, "int or float"),
    ({"a": {"$gte": True}}, "int or float"),
    ({"a": {"$lt": None}}, "int or float"),
    ({"a": {"$lte": [1]}}, "int or float"),
    ({"a": {"$in": []}}, "non-empty"),
    ({"a": {"$in": "x"}}, "list"),
    ({"a": {"$nin": 1}}, "list"),
    ({"a": {"$in": (1, 2)}}, "list"),
    ({"a": {"$in": [1, "x"]}}, "one type"),
    ({"a": {"$in": [1, 2.0]}}, "one type"),
    ({"a": {"$in": [1, True]}}, "one type"),
    ({"a": {"$nin": [True, 0]}}, "one type"),
    ({"a": {"$in": [[1]]}}, "element"),
    ({"a": {"$in": [None]}}, "element"),
    ({"a": {"$in": [float("nan")]}}, "NaN"),
    ({"a": {"$contains": ["x"]}}, "one str"),
    ({"a": {"$not_contains": None}}, "$not_contains operand"),
    ({"$and": [{"a": 1}]}, "at least two"),
    ({"$or": []}, "at least two"),
    ({"$and": {"a": 1}}, "list"),
    ({"$or": "x"}, "list"),
    ({"$and": [{"a": 1}, 3]}, "a dict"),
    ({"$or": [{}, {"a": 1}]}, "exactly one key"),
    ({"$and": [{"a": 1}, {"a": {"$gt": "x"}}]}, "int or float"),
    ({"#document": "x"}, "'#document'"),
    ({"#document": {"$regex": "x"}}, "$contains and $not_contains"),
    ({"#document": {"$eq": "x"}}, "$contains and $not_contains"),
    ({"#document": {"$contains": 1}}, "takes a str"),
    ({"#document": {"$contains": "x", "$not_contains": "y"}}, "exactly one key"),
]


@pytest.mark.parametrize("where,fragment", INVALID_WHERE, ids=[repr(w)[:60] for w, _ in INVALID_WHERE])
def test_invalid_where_is_rejected_with_a_helpful_message(where, fragment):
    with pytest.raises(ValueError) as info:
        compile_filter(where, None)
    message = str(info.value)
    assert "where" in message
    assert fragment in message, message
    with pytest.raises(ValueError):
        filters.validate_where(where)
    with pytest.raises(ValueError):
        validate_filters(where, {"$contains": "x"})


INVALID_DOC = [
    ({}, "exactly one key"),
    ("x", "a dict"),
    ({"$contains": "x", "$regex": "y"}, "exactly one key"),
    ({"$contains": ""}, "non-empty"),
    ({"$not_contains": ""}, "non-empty"),
    ({"$regex": ""}, "non-empty"),
    ({"$contains": 1}, "non-empty str"),
    ({"$regex": None}, "non-empty str"),
    ({"$regex": ["a"]}, "non-empty str"),
    ({"$regex": "["}, "regular expression"),
    ({"$not_regex": "(?P<x"}, "regular expression"),
    ({"$foo": "x"}, "unknown where_document operator"),
    ({"contains": "x"}, "unknown where_document operator"),
    ({"$eq": "x"}, "unknown where_document operator"),
    ({"$and": [{"$contains": "x"}]}, "at least two"),
    ({"$or": {"$contains": "x"}}, "list"),
    ({"$and": [{"$contains": "x"}, "y"]}, "a dict"),
    ({"$or": [{"$contains": "x"}, {"$contains": ""}]}, "non-empty"),
]


@pytest.mark.parametrize("wd,fragment", INVALID_DOC, ids=[repr(w)[:60] for w, _ in INVALID_DOC])
def test_invalid_where_document_is_rejected_with_a_helpful_message(wd, fragment):
    with pytest.raises(ValueError) as info:
        compile_filter(None, wd)
    message = str(info.value)
    assert "where_document" in message
    assert fragment in message, message
    with pytest.raises(ValueError):
        filters.validate_where_document(wd)


def test_error_message_names_the_path_to_the_bad_part():
    where = {"$and": [{"source": "camera"}, {"$or": [{"year": {"$gte": 2020}}, {"year": {"$lt": "1990"}}]}]}
    with pytest.raises(ValueError) as info:
        compile_filter(where, None)
    assert "where['$and'][1]['$or'][1]['year']['$lt']" in str(info.value)
    assert "'1990'" in str(info.value)


def test_invalid_argument_error_class_when_available():
    try:
        from vectordb.errors import InvalidArgumentError
    except ImportError:
        pytest.skip("vectordb.errors not written yet")
    assert issubclass(InvalidArgumentError, ValueError)
    with pytest.raises(InvalidArgumentError):
        compile_filter({}, None)


def _nest(depth, leaf):
    node = leaf
    for _ in range(depth - 1):
        node = {"$and": [node, leaf]}
    return node


def test_nesting_depth_limit():
    compile_filter(_nest(filters.MAX_DEPTH, {"a": 1}), _nest(filters.MAX_DEPTH, {"$contains": "x"}))
    with pytest.raises(ValueError, match="deeper than the limit"):
        compile_filter(_nest(filters.MAX_DEPTH + 1, {"a": 1}), None)
    with pytest.raises(ValueError, match="deeper than the limit"):
        compile_filter(None, _nest(filters.MAX_DEPTH + 1, {"$contains": "x"}))
    cyclic = {"$or": [{"a": 1}]}
    cyclic["$or"].append(cyclic)
    with pytest.raises(ValueError, match="deeper than the limit"):
        compile_filter(cyclic, None)


def test_valid_forms_compile():
    assert compile_filter(None, None) is None
    assert compile_filter_ex(None, None) is None
    for where in [
        {"a": "x"}, {"a": 1}, {"a": 1.5}, {"a": True}, {"a": ""}, {"a": {"$eq": False}},
        {"a": {"$ne": "x"}}, {"a": {"$gt": 1}}, {"a": {"$gte": -1.5}}, {"a": {"$lt": float("inf")}},
        {"a": {"$lte": 2**63 - 1}}, {"a": {"$in": ["x", "y"]}}, {"a": {"$nin": [True]}},
        {"a": {"$in": [1.5, 2.5]}}, {"a": {"$contains": "x"}}, {"a": {"$not_contains": 3}},
        {"a": np.float64(1.5)}, {"a": {"$in": [np.int64(1), 2]}},
        {"#document": {"$contains": "x"}}, {"#document": {"$not_contains": ""}},
        {"key with spaces and ü": 1}, {"a#b": 1}, {"a$": 1},
        {"$and": [{"a": 1}, {"$or": [{"b": 2}, {"c": {"$in": [1, 2]}}]}]},
    ]:
        prog = compile_filter(where, None)
        assert isinstance(prog, bytes) and prog[:5] == b"VDBF\x01", where
    cf = compile_filter_ex({"a": 1}, {"$or": [{"$regex": "^a"}, {"$not_regex": "b$"}]})
    assert len(cf.patterns) == 2
    assert cf.match_regex(0, ["abc", "cab", ""]) == b"\x01\x00\x00"
    assert cf.match_regex(1, ["ab", "ba"]) == b"\x01\x00"


def test_program_encoding_is_the_documented_one():
    prog = compile_filter({"$and": [{"k": {"$ne": 2}}, {"t": {"$in": ["a", "bc"]}}]}, {"$regex": "x+"})
    expected = (
        b"VDBF\x01"
        + b"\x01" + struct.pack("<I", 2)  # AND(where, where_document)
        + b"\x01" + struct.pack("<I", 2)  # AND of the where
        + b"\x03" + b"\x10" + struct.pack("<I", 1) + b"k" + b"\x02" + struct.pack("<q", 2)  # NOT EQ k 2
        + b"\x15" + struct.pack("<I", 1) + b"t" + b"\x01" + struct.pack("<I", 2)  # IN t [str x2]
        + struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
        + b"\x21" + struct.pack("<II", 0, 2) + b"x+"  # DOC_REGEX #0 "x+"
    )
    assert prog == expected


# ---------------------------------------------------------------------------------------------
# The C evaluator through ctypes (no Python binding needed)

TAGS = {str: 1, int: 2, float: 3, bool: 4}


def _bare(v):
    if isinstance(v, bool):
        return bytes([1 if v else 0])
    if isinstance(v, str):
        data = v.encode()
        return struct.pack("<I", len(data)) + data
    if isinstance(v, int):
        return struct.pack("<q", v)
    return struct.pack("<d", v)


def encode_meta(meta):
    """The metadata blob of csrc/vdb_meta.h."""
    if meta is None:
        return None
    out = struct.pack("<I", len(meta))
    for k, v in meta.items():
        kb = k.encode()
        out += struct.pack("<I", len(kb)) + kb
        if isinstance(v, list):
            out += bytes([0x10 | TAGS[type(v[0])]]) + struct.pack("<I", len(v)) + b"".join(_bare(e) for e in v)
        else:
            out += bytes([TAGS[type(v)]]) + _bare(v)
    return out


REGEX_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t,
                            ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t),
                            ctypes.POINTER(ctypes.c_uint8))


class CFilterEngine:
    """csrc/vdb_filter.c + vdb_meta.c compiled into a shared library, driven with ctypes."""

    SOURCES = ["vdb_filter.c", "vdb_meta.c", "vdb_error.c", "vdb_bytes.c"]

    def __init__(self, workdir):
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            pytest.skip("no C compiler to build the standalone filter library")
        lib_path = os.path.join(workdir, "libvdbfilter.so")
        cmd = [cc, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-shared", "-fPIC",
               "-o", lib_path] + [os.path.join(ROOT, "csrc", s) for s in self.SOURCES]
        if os.environ.get("VECTORDB_SANITIZE"):  # run with LD_PRELOAD of the ASan runtime
            cmd[1:1] = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                        "-fno-omit-frame-pointer"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        lib = ctypes.CDLL(lib_path)
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        lib.vdb_meta_create.argtypes = [ctypes.POINTER(vp)]
        lib.vdb_meta_free.argtypes = [vp]
        lib.vdb_meta_set.argtypes = [vp, sz, ctypes.c_int, ctypes.c_char_p, sz, ctypes.c_int, ctypes.c_char_p, sz]
        lib.vdb_filter_compile.argtypes = [ctypes.c_char_p, sz, ctypes.POINTER(vp)]
        lib.vdb_filter_free.argtypes = [vp]
        lib.vdb_filter_regex_count.argtypes = [vp]
        lib.vdb_filter_regex_count.restype = sz
        lib.vdb_filter_set_regex.argtypes = [vp, REGEX_FN, vp]
        lib.vdb_filter_eval.argtypes = [vp, vp, sz, ctypes.POINTER(ctypes.c_uint64)]
        lib.vdb_last_error.restype = ctypes.c_char_p
        self.lib = lib

    def check(self, rc):
        if rc != 0:
            raise RuntimeError(f"engine error {rc}: {self.lib.vdb_last_error().decode()}")

    def compile(self, prog):
        f = ctypes.c_void_p()
        rc = self.lib.vdb_filter_compile(prog, len(prog), ctypes.byref(f))
        return rc, f

    def bitmap(self, records, compiled):
        lib = self.lib
        m = ctypes.c_void_p()
        self.check(lib.vdb_meta_create(ctypes.byref(m)))
        f = None
        try:
            for i, (meta, doc) in enumerate(records):
                blob = encode_meta(meta)
                d = None if doc is None else doc.encode()
                self.check(lib.vdb_meta_set(m, i, 1, blob, len(blob or b""), 1, d, len(d or b"")))
            rc, f = self.compile(compiled.program)
            self.check(rc)
            assert lib.vdb_filter_regex_count(f) == len(compiled.patterns)

            def matcher(ctx, index, n, docs, lens, match):
                texts = [ctypes.string_at(docs[i], lens[i]).decode() if lens[i] else "" for i in range(n)]
                result = compiled.match_regex(index, texts)
                ctypes.memmove(match, result, n)
                return 0

            callback = REGEX_FN(matcher)
            lib.vdb_filter_set_regex(f, callback, None)
            n = len(records)
            words = (ctypes.c_uint64 * max(1, (n + 63) // 64))(*([0xDEADBEEF] * max(1, (n + 63) // 64)))
            self.check(lib.vdb_filter_eval(f, m, n, words))
            return [int(w) for w in words], n
        finally:
            if f is not None:
                lib.vdb_filter_free(f)
            lib.vdb_meta_free(m)

    def ids(self, records, where, where_document):
        bits, n = self.bitmap(records, compile_filter_ex(where, where_document))
        if n % 64:  # bits past n_rows must be clear
            assert bits[n // 64] >> (n % 64) == 0
        return {f"r{r}" for r in range(n) if bits[r // 64] >> (r % 64) & 1}


@pytest.fixture(scope="module")
def cengine(tmp_path_factory):
    return CFilterEngine(str(tmp_path_factory.mktemp("vdbfilter")))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_c_evaluator_matches_reference(cengine, case):
    records, flts = case
    for where, where_document in flts:
        assert cengine.ids(records, where, where_document) == ref_ids(records, where, where_document)


# Hand-picked cases: the semantics a user relies on, written out.
SEMANTIC_RECORDS = [
    ({"k": "hello world"}, "Hello"),     # r0
    ({"k": 1}, "hello world"),           # r1
    ({"k": 1.0}, None),                  # r2
    ({"k": True}, "abc"),                # r3
    ({"k": ["a", "hello"]}, ""),         # r4
    ({"k": [1, 2, 3]}, "x"),             # r5
    ({"k": [1.5, 2.0]}, "y"),            # r6
    (None, None),                        # r7
    ({"k": 1.5, "z": 0}, "ab"),          # r8
    ({"k": 2**53 + 1}, None),            # r9
    ({"k": False}, "hello"),             # r10
]
SEMANTIC_CASES = [
    ({"k": 1}, None, {"r1", "r2"}),
    ({"k": 1.5}, None, {"r8"}),                         # ours: no truncation
    ({"k": {"$eq": 2.0**53}}, None, set()),             # exact int/float comparison
    ({"k": {"$gt": 2.0**53}}, None, {"r9"}),
    ({"k": True}, None, {"r3"}),                        # bool is its own type
    ({"k": {"$ne": True}}, None, {f"r{i}" for i in range(11)} - {"r3"}),
    ({"k": {"$ne": 1}}, None, {f"r{i}" for i in range(11)} - {"r1", "r2"}),
    ({"k": {"$gte": 1}}, None, {"r1", "r2", "r8", "r9"}),
    ({"k": {"$lt": 1.7}}, None, {"r1", "r2", "r8"}),
    ({"k": {"$in": ["hello world", "a"]}}, None, {"r0"}),  # $in never looks into lists
    ({"k": {"$nin": ["a"]}}, None, {f"r{i}" for i in range(11)}),
    ({"k": {"$contains": "hello"}}, None, {"r4"}),     # list element, not substring of a scalar
    ({"k": {"$contains": "hello world"}}, None, set()),  # scalars never match $contains
    ({"k": {"$contains": 2}}, None, {"r5", "r6"}),     # ours: numeric equality for elements too
    ({"k": {"$not_contains": 1}}, None, {f"r{i}" for i in range(11)} - {"r5"}),
    ({"z": {"$ne": 0}}, None, {f"r{i}" for i in range(11)} - {"r8"}),  # missing key matches $ne
    ({"z": {"$nin": [5]}}, None, {f"r{i}" for i in range(11)}),
    ({"z": {"$lt": 5}}, None, {"r8"}),
    ({"#document": {"$contains": "hello"}}, None, {"r1", "r10"}),
    ({"#document": {"$contains": ""}}, None, {"r0", "r1", "r3", "r4", "r5", "r6", "r8", "r10"}),
    ({"#document": {"$not_contains": "hello"}}, None, {"r0", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}),
    (None, {"$contains": "Hello"}, {"r0"}),             # case-sensitive
    (None, {"$not_contains": "x"}, {f"r{i}" for i in range(11)} - {"r5"}),
    (None, {"$regex": "^h"}, {"r1", "r10"}),
    (None, {"$regex": "(?i)^h"}, {"r0", "r1", "r10"}),
    (None, {"$not_regex": "^h"}, {f"r{i}" for i in range(11)} - {"r1", "r10"}),
    ({"k": {"$gt": 0}}, {"$or": [{"$regex": "^a"}, {"$contains": "world"}]}, {"r1", "r8"}),
]


@pytest.mark.parametrize("pattern,literal", [
    ("record 12[0-9] ", "record 12"), ("^h.llo", "llo"), ("b$", "b"), (r"\bab", "ab"), ("abc*", "ab"),
    ("(?s)a.bc", "bc"), ("[[:alpha:]]x]", None), ("[a]bc", "abc"), ("x+", None), ("a|b", None), ("ab|cd", None),
    ("(?i)abc", None), ("x(?i:abc)yz", "yz"), (r"\x{e9}t", None), ("é+t", "t"),
])
def test_required_literal(pattern, literal):
    assert filters.required_literal(pattern) == literal
    prog = compile_filter(None, {"$regex": pattern})
    prefix = b"VDBF\x01\x01" + struct.pack("<I", 2) + b"\x20"  # AND(DOC_CONTAINS literal, DOC_REGEX)
    assert prog.startswith(prefix) == (literal is not None)


REGEX_PARTS = ["a", "b", "ab", "a*", "b+", ".", "[ab]", "(a|b)", "^", "$", r"\b", "(?:ab)?", "é", "x{2}",
               r"\d", " ", "[[:alpha:]]", "]", r"\pL", "(?U)a+"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(REGEX_PARTS), min_size=1, max_size=5),
       docs=st.lists(st.text(alphabet="abéx1 ]:", max_size=8), min_size=1, max_size=12))
def test_regex_literal_prefilter_keeps_the_answers(cengine, parts, docs):
    # Every match holds the literal; and the engine (prefilter + RE2) answers as an RE2 search.
    pattern = "".join(parts)
    literal = filters.required_literal(pattern)
    for d in docs:
        if literal is not None and re2.search(pattern, d):
            assert literal in d, (pattern, d)
    records = [(None, d) for d in docs]
    for wd in ({"$regex": pattern}, {"$not_regex": pattern}):
        assert cengine.ids(records, None, wd) == ref_ids(records, None, wd), wd


@pytest.mark.parametrize("where,wd,expected", SEMANTIC_CASES, ids=[repr(c[:2])[:70] for c in SEMANTIC_CASES])
def test_c_evaluator_semantics(cengine, where, wd, expected):
    assert ref_ids(SEMANTIC_RECORDS, where, wd) == expected  # the model says what the table says
    assert cengine.ids(SEMANTIC_RECORDS, where, wd) == expected


def test_c_evaluator_many_rows_and_regex_batches(cengine):
    # More rows than one regex batch (1024) and than one bitmap word, with rows without documents.
    rng = np.random.default_rng(7)
    records = []
    for i in range(2600):
        meta = None if i % 7 == 0 else {"n": int(rng.integers(0, 100)), "s": ["a", "b", "c"][i % 3]}
        doc = None if i % 5 == 0 else f"doc {i} {'sunset' if i % 11 == 0 else 'rain'}"
        records.append((meta, doc))
    for where, wd in [
        ({"n": {"$lt": 30}}, {"$regex": r"\d3 "}),
        ({"$or": [{"s": "a"}, {"n": {"$gte": 90}}]}, {"$not_regex": "sunset$"}),
        (None, {"$or": [{"$regex": "^doc 1"}, {"$contains": "sunset"}]}),
        ({"s": {"$nin": ["a", "b"]}}, None),
    ]:
        assert cengine.ids(records, where, wd) == ref_ids(records, where, wd)


def test_empty_document_is_a_document(cengine):
    # "" is a document (not None) even when it is the only thing ever stored.
    records = [(None, "")]
    for where, wd in [({"#document": {"$contains": ""}}, None), (None, {"$regex": "^$"}),
                      (None, {"$not_contains": "x"})]:
        assert cengine.ids(records, where, wd) == {"r0"} == ref_ids(records, where, wd)


def test_regex_node_without_matcher_is_an_error(cengine):
    lib = cengine.lib
    m = ctypes.c_void_p()
    cengine.check(lib.vdb_meta_create(ctypes.byref(m)))
    try:
        cengine.check(lib.vdb_meta_set(m, 0, 1, None, 0, 1, b"abc", 3))
        rc, f = cengine.compile(compile_filter(None, {"$regex": "a"}))
        cengine.check(rc)
        words = (ctypes.c_uint64 * 1)()
        assert lib.vdb_filter_eval(f, m, 1, words) == -2
        assert b"regex" in lib.vdb_last_error()
        lib.vdb_filter_free(f)
    finally:
        lib.vdb_meta_free(m)


BAD_PROGRAMS = [
    (b"", "VDBF header"),
    (b"VDBX\x01\x10", "VDBF header"),
    (b"VDBF\x02\x10", "version"),
    (b"VDBF\x01", "truncated node"),
    (b"VDBF\x01\x99", "unknown node kind"),
    (b"VDBF\x01\x01" + struct.pack("<I", 1) + b"\x20" + struct.pack("<I", 0), "fewer than 2"),
    (b"VDBF\x01\x10" + struct.pack("<I", 0) + b"\x02" + struct.pack("<q", 1), "empty key"),
    (b"VDBF\x01\x10" + struct.pack("<I", 5) + b"k", "truncated key"),
    (b"VDBF\x01\x10" + struct.pack("<I", 1) + b"k\x07", "unknown value tag"),
    (b"VDBF\x01\x10" + struct.pack("<I", 1) + b"k\x03" + struct.pack("<d", float("nan")), "NaN"),
    (b"VDBF\x01\x10" + struct.pack("<I", 1) + b"k\x04\x02", "bool"),
    (b"VDBF\x01\x11" + struct.pack("<I", 1) + b"k\x01" + struct.pack("<I", 1) + b"x", "non-numeric"),
    (b"VDBF\x01\x15" + struct.pack("<I", 1) + b"k\x02" + struct.pack("<I", 0), "empty IN"),
    (b"VDBF\x01\x15" + struct.pack("<I", 1) + b"k\x02" + struct.pack("<I", 1000), "IN count"),
    (b"VDBF\x01\x21" + struct.pack("<II", 1, 1) + b"a", "prefix order"),
    (b"VDBF\x01\x20" + struct.pack("<I", 1) + b"ab", "trailing bytes"),
    (b"VDBF\x01" + b"\x03" * 70 + b"\x20" + struct.pack("<I", 0), "deeper"),
]


@pytest.mark.parametrize("prog,fragment", BAD_PROGRAMS, ids=[f[1] for f in BAD_PROGRAMS])
def test_c_compile_rejects_malformed_programs(cengine, prog, fragment):
    rc, f = cengine.compile(prog)
    assert rc == -2 and not f.value
    assert fragment in cengine.lib.vdb_last_error().decode()


@settings(max_examples=300, deadline=None)
@given(flt=filters_st, data=st.data())
def test_c_compile_survives_corrupted_programs(cengine, flt, data):
    """Untrusted bytes: truncations and byte flips compile or fail cleanly; what compiles evaluates."""
    prog = bytearray(compile_filter(*flt))
    cut = data.draw(st.integers(0, len(prog)))
    mutated = bytearray(prog[:cut]) if data.draw(st.booleans()) else prog
    for _ in range(data.draw(st.integers(0, 3))):
        if mutated:
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    rc, f = cengine.compile(bytes(mutated))
    assert rc in (0, -2)
    if rc == 0:
        lib = cengine.lib
        m = ctypes.c_void_p()
        cengine.check(lib.vdb_meta_create(ctypes.byref(m)))
        try:
            for i, (meta, doc) in enumerate(SEMANTIC_RECORDS):
                blob = encode_meta(meta)
                d = None if doc is None else doc.encode()
                cengine.check(lib.vdb_meta_set(m, i, 1, blob, len(blob or b""), 1, d, len(d or b"")))
            def all_match(ctx, index, n, docs, lens, match):
                ctypes.memset(match, 1, n)
                return 0

            cb = REGEX_FN(all_match)
            lib.vdb_filter_set_regex(f, cb, None)
            words = (ctypes.c_uint64 * 1)()
            assert lib.vdb_filter_eval(f, m, len(SEMANTIC_RECORDS), words) == 0
        finally:
            lib.vdb_filter_free(f)
            lib.vdb_meta_free(m)
    else:
        assert not f.value


# ---------------------------------------------------------------------------------------------
# chromadb agreement


def _chroma_collection(client, records):
    col = client.create_collection(f"f{uuid.uuid4().hex[:12]}", embedding_function=None)
    if records:
        col.add(
            ids=[f"r{i}" for i in range(len(records))],
            embeddings=[[float(i), 1.0] for i in range(len(records))],
            metadatas=[m for m, _ in records],
            documents=[d for _, d in records],
        )
    return col


@pytest.fixture(scope="module")
def chroma_client():
    chromadb = pytest.importorskip("chromadb")
    return chromadb.EphemeralClient()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(min_records=1))
def test_chromadb_gives_the_same_ids(chroma_client, cengine, case):
    # The collections are not deleted: chromadb 1.5.9 keeps a deleted collection's index entries for
    # a list value [""] and answers {"a": {"$contains": ""}} in a later collection with the record at
    # the same position (reproduced: create A with record 6 = {"a": [""]}, delete A, create B with 8
    # records without metadata: B's query returns "r6"). Live collections do not leak.
    records, flt = case
    col = _chroma_collection(chroma_client, records)
    for where, wd in flt:
        got = set(col.get(where=where, where_document=wd, include=[])["ids"])
        # chromadb's semantics, as the model states them (float truncation, strict $contains):
        expected = ref_ids(records, where, wd, mode="chroma")
        assert got == expected, (where, wd)
        if expected == ref_ids(records, where, wd, mode="ours"):
            assert cengine.ids(records, where, wd) == got, (where, wd)


def test_chromadb_rejects_what_we_reject(chroma_client):
    """The invalid filters of the tables above are errors in chromadb too, except the few we reject
    on purpose although chromadb answers them (keys no metadata can have: they match nothing)."""
    col = _chroma_collection(chroma_client, [({"a": 1}, "x")])  # not deleted: see the test above
    accepted = []
    for where, _ in INVALID_WHERE:
        try:
            col.get(where=where, include=[])
            accepted.append(where)
        except Exception:
            pass
    for wd, _ in INVALID_DOC:
        with pytest.raises(Exception):  # noqa: B017 - chromadb's error classes vary by version
            col.get(where_document=wd, include=[])
    # chromadb answers these; we reject them: keys no metadata can have, an int operand beyond int64
    assert accepted == [{"": 1}, {"#foo": 1}, {"a": {"$gt": -(2**63) - 1}}]


# ---------------------------------------------------------------------------------------------
# Through the public API (once the Collection exists)


def _api():
    import vectordb

    if not hasattr(vectordb, "EphemeralClient"):
        pytest.skip("vectordb.EphemeralClient is not available yet")
    return vectordb


def _our_collection(records, dim=4, seed=0):
    vectordb = _api()
    client = vectordb.EphemeralClient()
    col = client.create_collection(f"f{uuid.uuid4().hex[:12]}")
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((len(records), dim)).astype(np.float32)
    if records:
        col.add(ids=[f"r{i}" for i in range(len(records))], embeddings=emb,
                metadatas=[m for m, _ in records], documents=[d for _, d in records])
    return client, col, emb


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_collection_get_count_match_reference(case):
    records, flt = case
    _, col, _ = _our_collection(records)
    for where, wd in flt:
        got = col.get(where=where, where_document=wd, include=[])["ids"]
        expected = ref_ids(records, where, wd)
        assert set(got) == expected
        assert got == sorted(got, key=lambda s: int(s[1:]))  # insertion order


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(min_records=1, max_filters=1), k=st.integers(1, 8), limit=st.integers(0, 10),
       offset=st.integers(0, 10))
def test_filtered_query_paging_and_delete(case, k, limit, offset):
    records, (flt,) = case
    where, wd = flt
    _, col, emb = _our_collection(records)
    match = [i for i in range(len(records)) if f"r{i}" in ref_ids(records, where, wd)]

    # get with limit / offset pages through the matches in insertion order
    page = col.get(where=where, where_document=wd, limit=limit, offset=offset, include=[])["ids"]
    assert page == [f"r{i}" for i in match][offset: offset + limit]

    # filtered exact query == brute force over the matching subset (float64)
    q = np.random.default_rng(1).standard_normal(emb.shape[1]).astype(np.float32)
    res = col.query(query_embeddings=[q], n_results=k, where=where, where_document=wd,
                    include=["distances"])
    d = ((emb[match].astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1)
    order = np.argsort(d, kind="stable")[:k]
    assert len(res["ids"][0]) == len(order)
    np.testing.assert_allclose(res["distances"][0], d[order], rtol=1e-4, atol=1e-5)
    assert set(res["ids"][0]) <= {f"r{i}" for i in match}

    # delete by filter removes exactly the matches
    col.delete(where=where, where_document=wd)
    left = set(col.get(include=[])["ids"])
    assert left == {f"r{i}" for i in range(len(records))} - {f"r{i}" for i in match}
    assert col.count() == len(records) - len(match)


def test_collection_empty_document_and_regex_batches():
    # "" is a document (not None); regex runs over more rows than one matcher batch (1024).
    _, col, _ = _our_collection([(None, "")])
    assert col.get(where={"#document": {"$contains": ""}}, include=[])["ids"] == ["r0"]
    assert col.get(where_document={"$regex": "^$"}, include=[])["ids"] == ["r0"]

    records = [({"n": i % 10} if i % 3 else None, None if i % 4 == 0 else f"doc {i}") for i in range(2500)]
    _, col, _ = _our_collection(records)
    for where, wd in [(None, {"$regex": r"^doc \d*7$"}), ({"n": {"$gte": 5}}, {"$not_regex": "1"}),
                      ({"$or": [{"n": 1}, {"#document": {"$not_contains": "2"}}]}, {"$regex": "3"})]:
        assert col.get(where=where, where_document=wd, include=[])["ids"] == sorted(
            ref_ids(records, where, wd), key=lambda s: int(s[1:]))
    expected = ref_ids(records, None, {"$regex": "9$"})
    assert col.delete(where_document={"$regex": "9$"}) == {"deleted": len(expected)}
    assert col.count() == len(records) - len(expected)


def test_collection_rejects_invalid_filters_before_deleting():
    _, col, _ = _our_collection([({"a": 1}, "x"), ({"a": 2}, "y")])
    for where, wd in [({"a": {"$gt": "1"}}, None), (None, {"$regex": "["}), ({}, None), (None, {})]:
        with pytest.raises(ValueError):
            col.delete(where=where, where_document=wd)
        with pytest.raises(ValueError):
            col.get(where=where, where_document=wd)
        with pytest.raises(ValueError):
            col.query(query_embeddings=[[0.0] * 4], where=where, where_document=wd)
    assert col.count() == 2
