"""The client and Collection API against chromadb 1.x's behaviour (with the deliberate differences
the README lists under "What you get").

Every test that takes `client` runs over PersistentClient, EphemeralClient and HttpClient (see
conftest.py). Numbers are checked against float64 NumPy; every bad input is checked to raise the
documented error class AND to leave the collection exactly as it was.
"""
from __future__ import annotations

import logging
import time
import types
import uuid

import numpy as np
import pytest
from reference import ref_distances

import vectordb
from vectordb.errors import (
    AuthorizationError,
    CollectionExistsError,
    DuplicateIDError,
    InvalidArgumentError,
    InvalidDimensionError,
    NotFoundError,
    VectorDBError,
)

SPACES = ["l2", "ip", "cosine"]
RESULT_KEYS = {"ids", "embeddings", "documents", "uris", "data", "metadatas", "included"}
QUERY_KEYS = RESULT_KEYS | {"distances"}
ALL_GET = ["embeddings", "metadatas", "documents"]


# ---------------------------------------------------------------------------------------- helpers

def stored_as_float32(array: np.ndarray, client) -> bool:
    """Our clients return float32 arrays; chromadb's client turns the float32 values the server
    sends into float64 arrays (its own behaviour): then the values must be float32 values."""
    if type(client).__module__.startswith("chromadb"):
        return bool(np.array_equal(array, array.astype(np.float32)))
    return array.dtype == np.float32


def assert_query_matches(res: dict, ids: list, ref: np.ndarray, k: int, rtol=1e-4, atol=1e-4) -> None:
    """Each query's hits: the k nearest by the reference, ascending. Robust to exact ties: the
    returned distances must equal the k smallest reference distances, and each returned id's own
    reference distance must equal the distance reported for it."""
    assert len(res["ids"]) == ref.shape[0]
    index = {x: i for i, x in enumerate(ids)}
    for qi in range(ref.shape[0]):
        got_ids = res["ids"][qi]
        got_d = np.asarray(res["distances"][qi], dtype=np.float64)
        want_n = min(k, len(ids))
        assert len(got_ids) == want_n, f"query {qi}: {len(got_ids)} results, expected {want_n}"
        assert len(set(got_ids)) == len(got_ids), f"query {qi}: duplicate ids {got_ids}"
        assert np.all(np.diff(got_d) >= -1e-6 * (1 + np.abs(got_d[1:]))), f"query {qi}: not ascending {got_d}"
        np.testing.assert_allclose(got_d, np.sort(ref[qi])[:want_n], rtol=rtol, atol=atol)
        np.testing.assert_allclose(got_d, ref[qi, [index[x] for x in got_ids]], rtol=rtol, atol=atol)


def snapshot(col) -> tuple:
    """Everything observable about a collection's records, in comparable form."""
    r = col.get(include=["embeddings", "metadatas", "documents"])
    emb = r["embeddings"]
    emb = [] if emb is None else np.asarray(emb).tolist()
    return col.count(), r["ids"], emb, r["metadatas"], r["documents"]


def populated(client, name="things", space="l2"):
    """A collection of 3 records of dimension 3 with metadata and documents (no embedding function: its
    documents are text attached to hand-made vectors, never embedded)."""
    col = client.create_collection(name, metadata={"hnsw:space": space}, embedding_function=None)
    col.add(
        ids=["a", "b", "c"],
        embeddings=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [-1.0, 0.5, 2.0]],
        metadatas=[{"kind": "x", "n": 1}, None, {"kind": "y", "flag": True}],
        documents=["apple", None, "cherry"],
    )
    return col


def random_collection(client, space, n=60, d=7, seed=0, name=None):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, d)).astype(np.float32)
    ids = [f"id{i}" for i in range(n)]
    col = client.create_collection(name or f"rand-{space}", metadata={"hnsw:space": space})
    col.add(ids=ids, embeddings=data, documents=[f"doc {i}" for i in range(n)],
            metadatas=[{"i": i, "even": i % 2 == 0} for i in range(n)])
    return col, ids, data, rng


# ------------------------------------------------------------------------------------ client API

def test_heartbeat_is_nanoseconds(client):
    hb = client.heartbeat()
    assert isinstance(hb, int)
    assert abs(hb - time.time_ns()) < 300 * 10**9  # same machine: a clock in ns, not s or ms


def test_version_and_max_batch_size(client):
    v = client.get_version()
    assert isinstance(v, str) and v
    assert v == vectordb.__version__
    b = client.get_max_batch_size()
    assert isinstance(b, int) and b >= 5461  # no lower cap than chromadb's


def test_batch_larger_than_chromadb_cap(client):
    """ours: no 5461-record cap per call."""
    col = client.create_collection("big")
    n = 6000
    data = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    col.add(ids=[str(i) for i in range(n)], embeddings=data)
    assert col.count() == n
    got = col.get(ids=["0", "5999"], include=["embeddings"])
    assert np.array_equal(got["embeddings"], data[[0, 5999]])


def test_count_create_delete_collections(client):
    assert client.count_collections() == 0
    assert client.list_collections() == []
    for name in ["one", "two", "three"]:
        client.create_collection(name)
    assert client.count_collections() == 3
    client.delete_collection("two")
    assert client.count_collections() == 2
    assert [c.name for c in client.list_collections()] == ["one", "three"]


def test_list_collections_returns_collections_with_limit_offset(client):
    names = [f"col{i}" for i in range(5)]
    created = [client.create_collection(n, metadata={"pos": i}) for i, n in enumerate(names)]
    listed = client.list_collections()
    assert [c.name for c in listed] == names  # creation order
    for c, made in zip(listed, created):
        assert c.id == made.id
        assert isinstance(c.id, uuid.UUID)
        assert c.metadata == {"pos": names.index(c.name)}
        assert c.count() == 0  # a usable Collection, not a name
    assert [c.name for c in client.list_collections(limit=2)] == names[:2]
    assert [c.name for c in client.list_collections(offset=3)] == names[3:]
    assert [c.name for c in client.list_collections(limit=2, offset=1)] == names[1:3]
    assert client.list_collections(offset=10) == []
    assert client.list_collections(limit=0) == []


@pytest.mark.parametrize("kwargs", [{"limit": -1}, {"offset": -1}])
def test_list_collections_rejects_negative_paging(client, kwargs):
    with pytest.raises(ValueError):
        client.list_collections(**kwargs)


def test_create_collection_properties(client):
    col = client.create_collection("props", metadata={"owner": "me", "hnsw:space": "cosine"})
    assert col.name == "props"
    assert isinstance(col.id, uuid.UUID)
    assert col.metadata == {"owner": "me", "hnsw:space": "cosine"}
    plain = client.create_collection("plain")
    assert plain.metadata is None
    assert plain.id != col.id


def test_create_existing_collection_fails(client):
    client.create_collection("dupe", metadata={"v": 1})
    with pytest.raises(CollectionExistsError, match=r"dupe.*already exists|already exists.*dupe") as ei:
        client.create_collection("dupe", metadata={"v": 2})
    assert isinstance(ei.value, ValueError) or type(client).__module__.startswith("chromadb")
    assert client.count_collections() == 1
    assert client.get_collection("dupe").metadata == {"v": 1}


def test_create_collection_get_or_create_flag(client):
    a = client.create_collection("flag", metadata={"v": 1})
    b = client.create_collection("flag", metadata={"v": 2}, get_or_create=True)
    assert a.id == b.id
    assert b.metadata == {"v": 1}


def test_get_collection(client):
    made = client.create_collection("findme", metadata={"k": "v"})
    made.add(ids=["x"], embeddings=[[1.0, 2.0]])
    got = client.get_collection("findme")
    assert got.id == made.id and got.name == "findme" and got.metadata == {"k": "v"}
    assert got.count() == 1
    with pytest.raises(NotFoundError, match="missing"):
        client.get_collection("missing")


def test_get_or_create_collection(client):
    a = client.get_or_create_collection("goc", metadata={"v": 1})
    assert a.metadata == {"v": 1}
    a.add(ids=["x"], embeddings=[[1.0]])
    b = client.get_or_create_collection("goc", metadata={"v": 2})  # metadata ignored: it exists
    assert b.id == a.id
    assert b.metadata == {"v": 1}
    assert client.get_collection("goc").metadata == {"v": 1}
    assert b.count() == 1
    assert client.count_collections() == 1


def test_delete_collection(client):
    col = client.create_collection("doomed")
    col.add(ids=["x"], embeddings=[[1.0, 2.0]])
    client.delete_collection("doomed")
    with pytest.raises(NotFoundError):
        client.get_collection("doomed")
    with pytest.raises(NotFoundError):
        client.delete_collection("doomed")
    with pytest.raises(NotFoundError):
        col.count()  # the old handle does not see a ghost
    # the name is free again and the new collection starts empty
    again = client.create_collection("doomed")
    assert again.count() == 0
    assert again.id != col.id


def test_reset_refused_without_allow_reset(client, client_kind, request):
    if client_kind in ("http", "chroma"):
        client = request.getfixturevalue("http_server_noreset").ensure(client_kind)
    try:
        client.create_collection("keep")
        with pytest.raises(AuthorizationError):
            client.reset()
        assert [c.name for c in client.list_collections()] == ["keep"]
    finally:
        if client_kind in ("http", "chroma"):
            for c in client.list_collections():
                client.delete_collection(c.name)
            if client_kind == "http":
                client.close()


def test_reset_allowed_on_http_server_with_allow_reset(client, client_kind):
    if client_kind != "http":
        pytest.skip("the embedded clients are covered by the settings/env tests below")
    for n in ["res1", "res2"]:
        client.create_collection(n).add(ids=["x"], embeddings=[[1.0]])
    assert client.reset() is True
    assert client.count_collections() == 0
    assert client.create_collection("res1").count() == 0


@pytest.mark.parametrize("how", ["settings-dict", "settings-object", "env"])
@pytest.mark.parametrize("kind", ["persistent", "ephemeral"])
def test_reset_allowed_by_setting(kind, how, tmp_path, monkeypatch, reopen):
    monkeypatch.delenv("VECTORDB_ALLOW_RESET", raising=False)
    kwargs = {}
    if how == "settings-dict":
        kwargs["settings"] = {"allow_reset": True}
    elif how == "settings-object":
        kwargs["settings"] = types.SimpleNamespace(allow_reset=True)
    else:
        monkeypatch.setenv("VECTORDB_ALLOW_RESET", "1")
    c = reopen(**kwargs) if kind == "persistent" else vectordb.EphemeralClient(**kwargs)
    for n in ["res1", "res2", "res3"]:
        c.create_collection(n).add(ids=["x"], embeddings=[[1.0, 2.0]])
    assert c.reset() is True
    assert c.count_collections() == 0
    assert c.list_collections() == []
    col = c.create_collection("res1")
    assert col.count() == 0
    if kind == "persistent":
        c2 = reopen(c)
        assert [x.name for x in c2.list_collections()] == ["res1"]
        assert c2.get_collection("res1").count() == 0
    else:
        c.close()


def test_reset_refused_by_default_settings(tmp_path, monkeypatch, reopen):
    monkeypatch.delenv("VECTORDB_ALLOW_RESET", raising=False)
    for c in [reopen(settings={"allow_reset": False}), vectordb.EphemeralClient()]:
        c.create_collection("keep")
        with pytest.raises(AuthorizationError):
            c.reset()
        assert c.count_collections() == 1
        c.close()


def test_context_manager_and_close_persistent(persistent_path, reopen):
    with vectordb.PersistentClient(persistent_path) as c:
        c.create_collection("ctx").add(ids=["x"], embeddings=[[1.0, 2.0]])
    with pytest.raises(VectorDBError):
        c.count_collections()
    c.close()  # closing twice is harmless
    c2 = reopen()  # the lock was released by the context manager
    assert c2.get_collection("ctx").count() == 1


def test_context_manager_and_close_ephemeral():
    with vectordb.EphemeralClient() as c:
        c.create_collection("ctx")
        assert c.count_collections() == 1
    with pytest.raises(VectorDBError):
        c.create_collection("other")
    c.close()


def test_second_open_of_same_path_shares_the_database(persistent_path, reopen):
    c = reopen()
    c.create_collection("shared").add(ids=["a"], embeddings=[[1.0, 2.0]])
    d = vectordb.PersistentClient(persistent_path)
    assert d.get_collection("shared").count() == 1
    c.close()
    assert d.get_collection("shared").get()["ids"] == ["a"]
    d.close()
    reopen().close()


# ------------------------------------------------------------------------------- collection names

BAD_NAMES = [
    "", "a", "ab", "..", "...", "/", "a/b", "abc/", "../etc", "/abs", "a..b", "x" * 513, "192.168.0.1",
    "10.0.0.255", "-abc", "abc-", "_abc", "abc_", ".abc", "abc.", "ab c", "tab\tx", "ünïcode", "semi;colon",
    "new\nline",
]
GOOD_NAMES = ["abc", "a.b", "A-1_b", "x" * 512, "1.2.3", "999.999.999.999", "a_b-c.d9"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_invalid_collection_names_rejected(client, name):
    with pytest.raises(InvalidArgumentError):
        client.create_collection(name)
    with pytest.raises(InvalidArgumentError):
        client.get_or_create_collection(name)
    assert client.count_collections() == 0
    col = client.create_collection("valid")
    with pytest.raises(InvalidArgumentError):
        col.modify(name=name)
    assert client.get_collection("valid").name == "valid"
    assert [c.name for c in client.list_collections()] == ["valid"]


@pytest.mark.parametrize("name", [123, None, b"abc", ["abc"]], ids=repr)
def test_non_str_collection_names_rejected(client, name):
    with pytest.raises(ValueError):
        client.create_collection(name)
    assert client.count_collections() == 0


@pytest.mark.parametrize("name", ["..", "/", "../etc", "a/b", "192.168.0.1"])
def test_get_collection_with_invalid_name_is_an_error(client, name):
    client.create_collection("etc")
    with pytest.raises(ValueError):  # NotFoundError or InvalidArgumentError; never another collection
        client.get_collection(name)


@pytest.mark.parametrize("name", GOOD_NAMES, ids=lambda n: n[:20])
def test_valid_collection_names_accepted(client, name):
    col = client.create_collection(name)
    col.add(ids=["x"], embeddings=[[1.0]])
    assert client.get_collection(name).name == name
    assert client.get_collection(name).count() == 1
    client.delete_collection(name)
    assert client.count_collections() == 0


def test_names_never_become_paths(client, client_kind, persistent_path):
    client.create_collection("a.b.c")
    if client_kind == "persistent":
        assert not (persistent_path / "a.b.c").exists()
        assert not (persistent_path / "collections" / "a.b.c").exists()


# ------------------------------------------------------------------------ collection configuration

@pytest.mark.parametrize("how", ["metadata", "configuration"])
@pytest.mark.parametrize("space", SPACES)
def test_space_selection(client, space, how):
    if how == "metadata":
        col = client.create_collection("spaces", metadata={"hnsw:space": space})
    else:
        col = client.create_collection("spaces", configuration={"hnsw": {"space": space}})
    data = np.array([[1.0, 0.0], [0.6, 0.8], [-2.0, 0.5]], dtype=np.float32)
    col.add(ids=["p", "q", "r"], embeddings=data)
    q = np.array([[0.3, 0.9]], dtype=np.float32)
    res = col.query(query_embeddings=q, n_results=3)
    assert_query_matches(res, ["p", "q", "r"], ref_distances(space, q, data), 3)


@pytest.mark.parametrize("kwargs", [
    {"metadata": {"hnsw:space": "euclid"}},
    {"metadata": {"hnsw:space": 2}},
    {"configuration": {"hnsw": {"space": "dot"}}},
])
def test_invalid_space_rejected(client, kwargs):
    with pytest.raises(InvalidArgumentError):
        client.create_collection("badspace", **kwargs)
    assert client.count_collections() == 0


def test_default_space_is_l2(client):
    col = client.create_collection("default")
    col.add(ids=["o"], embeddings=[[0.0, 0.0]])
    res = col.query(query_embeddings=[[3.0, 4.0]], n_results=1)
    assert res["distances"][0][0] == pytest.approx(25.0)  # squared, no square root


def test_dimension_keyword_fixes_dimension(client):
    """ours: create_collection(dimension=...) fixes the dimension before the first add."""
    col = client.create_collection("dim3", dimension=3)
    with pytest.raises(InvalidDimensionError, match="expecting embedding with dimension of 3, got 4"):
        col.add(ids=["x"], embeddings=[[1.0, 2.0, 3.0, 4.0]])
    assert col.count() == 0
    col.add(ids=["x"], embeddings=[[1.0, 2.0, 3.0]])
    assert col.count() == 1


@pytest.mark.parametrize("metadata", [
    {}, {"nested": {"a": 1}}, {"empty": []}, {"mixed": [1, "a"]}, {"$key": 1}, {"#key": 1}, {1: "x"},
    {"obj": object()}, {"none_in_list": [None]}, {"": 1},
])
def test_invalid_collection_metadata_rejected(client, client_kind, metadata):
    with pytest.raises(ValueError):
        client.create_collection("badmeta", metadata=metadata)
    assert client.count_collections() == 0


# --------------------------------------------------------------------------------- add, get, peek

def test_add_then_get_roundtrip(client):
    col = populated(client)
    r = col.get(include=ALL_GET)
    assert set(r) >= RESULT_KEYS
    assert r["ids"] == ["a", "b", "c"]
    assert isinstance(r["embeddings"], np.ndarray)
    assert stored_as_float32(r["embeddings"], client) and r["embeddings"].shape == (3, 3)
    assert np.array_equal(r["embeddings"], np.array([[1, 2, 3], [4, 5, 6], [-1, 0.5, 2]], dtype=np.float32))
    assert r["metadatas"] == [{"kind": "x", "n": 1}, None, {"kind": "y", "flag": True}]
    assert r["documents"] == ["apple", None, "cherry"]
    assert r["uris"] is None and r["data"] is None
    assert r["included"] == ALL_GET
    assert col.count() == 3


def test_get_default_include(client):
    col = populated(client)
    r = col.get()
    assert set(r) >= RESULT_KEYS
    assert r["embeddings"] is None
    assert r["documents"] == ["apple", None, "cherry"]
    assert r["metadatas"] == [{"kind": "x", "n": 1}, None, {"kind": "y", "flag": True}]
    assert sorted(r["included"]) == ["documents", "metadatas"]


@pytest.mark.parametrize("include", [[], ["embeddings"], ["metadatas"], ["documents"], ["uris"],
                                     ["documents", "embeddings"]])
def test_get_fields_not_included_are_none(client, include):
    col = populated(client)
    r = col.get(include=include)
    assert r["ids"] == ["a", "b", "c"]
    for key in ["embeddings", "metadatas", "documents", "uris"]:
        if key in include:
            assert r[key] is not None and len(r[key]) == 3
        else:
            assert r[key] is None, key
    assert r["data"] is None
    assert list(r["included"]) == include


def test_metadata_value_types_roundtrip(client):
    col = client.create_collection("types")
    meta = {
        "s": "text ünï \u2603", "i": 42, "neg": -7, "big": 2**62, "imax": 2**63 - 1, "imin": -(2**63),
        "f": 0.125, "f01": 0.1, "fbig": 1e300, "ftiny": 5e-324, "fneg": -2.5, "zero": 0, "fzero": 0.0,
        "t": True, "fl": False, "empty_str": "", "long": "x" * 10000,
        "ls": ["a", "b"], "li": [1, 2, 3], "lf": [0.5, 1.5], "lb": [True, False],
    }
    col.add(ids=["x"], embeddings=[[1.0]], metadatas=[meta], documents=["doc"])
    got = col.get(ids=["x"])["metadatas"][0]
    assert got == meta
    for k in meta:  # bool stays bool, int stays int
        assert type(got[k]) is type(meta[k]), k
        if isinstance(meta[k], list):
            assert [type(e) for e in got[k]] == [type(e) for e in meta[k]], k


def test_get_by_ids_in_order_asked(client):
    """ours: get(ids=[...]) returns the records in the order asked, unknown ids left out."""
    col = populated(client)
    r = col.get(ids=["c", "zzz", "a"], include=ALL_GET)
    assert r["ids"] == ["c", "a"]
    assert r["documents"] == ["cherry", "apple"]
    assert r["metadatas"] == [{"kind": "y", "flag": True}, {"kind": "x", "n": 1}]
    assert np.array_equal(r["embeddings"], np.array([[-1, 0.5, 2], [1, 2, 3]], dtype=np.float32))
    assert col.get(ids="b")["ids"] == ["b"]  # a single str id
    none = col.get(ids=["nope"], include=ALL_GET)
    assert none["ids"] == [] and none["documents"] == [] and none["metadatas"] == []
    assert len(none["embeddings"]) == 0


def test_get_insertion_order_limit_offset(client):
    col = client.create_collection("paging")
    ids = [f"r{i:02d}" for i in [5, 3, 9, 0, 7, 1, 8, 2, 6, 4]]  # not sorted: insertion order must win
    col.add(ids=ids[:4], embeddings=[[float(i)] for i in range(4)])
    col.add(ids=ids[4:], embeddings=[[float(i)] for i in range(4, 10)])
    assert col.get()["ids"] == ids
    assert col.get(limit=3)["ids"] == ids[:3]
    assert col.get(offset=4)["ids"] == ids[4:]
    assert col.get(limit=3, offset=8)["ids"] == ids[8:]
    assert col.get(offset=10)["ids"] == []
    assert col.get(limit=0)["ids"] == []
    # paging with limit/offset yields everything once
    pages = [col.get(limit=3, offset=o)["ids"] for o in range(0, 10, 3)]
    assert sum(pages, []) == ids
    # an upsert of an existing id keeps its place; delete + add moves it to the end
    col.upsert(ids=[ids[2]], embeddings=[[100.0]])
    assert col.get()["ids"] == ids
    col.delete(ids=[ids[0]])
    col.add(ids=[ids[0]], embeddings=[[0.0]])
    assert col.get()["ids"] == ids[1:] + ids[:1]


def test_get_with_where_limit_offset(client):
    col, ids, data, _ = random_collection(client, "l2", n=20)
    evens = [x for i, x in enumerate(ids) if i % 2 == 0]
    assert col.get(where={"even": True})["ids"] == evens
    assert col.get(where={"even": True}, limit=3, offset=2)["ids"] == evens[2:5]
    assert col.get(ids=["id3", "id2", "id4"], where={"even": True})["ids"] == ["id2", "id4"]


@pytest.mark.parametrize("kwargs", [{"limit": -1}, {"offset": -1}, {"limit": 1.5}, {"limit": "3"}])
def test_get_bad_paging_rejected(client, kwargs):
    col = populated(client)
    with pytest.raises(ValueError):
        col.get(**kwargs)


def test_peek(client):
    col = client.create_collection("peek")
    n = 15
    data = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    col.add(ids=[f"p{i}" for i in range(n)], embeddings=data, documents=[f"d{i}" for i in range(n)])
    r = col.peek()
    assert r["ids"] == [f"p{i}" for i in range(10)]
    assert np.array_equal(r["embeddings"], data[:10])
    assert r["documents"] == [f"d{i}" for i in range(10)]
    assert r["metadatas"] == [None] * 10
    r3 = col.peek(limit=3)
    assert r3["ids"] == ["p0", "p1", "p2"]
    assert r3["embeddings"].shape == (3, 2)
    assert col.peek(limit=100)["ids"] == [f"p{i}" for i in range(n)]


def test_peek_and_get_on_empty_collection(client):
    col = client.create_collection("empty")
    assert col.count() == 0
    assert col.peek()["ids"] == []
    r = col.get(include=ALL_GET)
    assert r["ids"] == [] and r["metadatas"] == [] and r["documents"] == []
    assert len(r["embeddings"]) == 0


def test_count(client):
    col = client.create_collection("count")
    assert col.count() == 0
    col.add(ids=["a", "b"], embeddings=[[1.0], [2.0]])
    assert col.count() == 2
    col.add(ids=["b", "c"], embeddings=[[2.0], [3.0]])  # b exists: skipped
    assert col.count() == 3
    col.delete(ids=["a"])
    assert col.count() == 2
    assert isinstance(col.count(), int)


def test_add_existing_id_is_skipped_with_a_warning(client, client_kind, caplog):
    col = populated(client)
    before = snapshot(col)
    with caplog.at_level(logging.WARNING):
        col.add(ids=["a", "new"], embeddings=[[9.0, 9.0, 9.0], [7.0, 7.0, 7.0]],
                metadatas=[{"kind": "changed"}, {"kind": "fresh"}], documents=["changed", "fresh"])
    if client_kind != "http":  # over HTTP the warning is logged by the server process
        import re

        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("vectordb")]
        assert len(warnings) == 1, "adding an existing id logs one warning"
        msg = warnings[0].getMessage()
        assert "things" in msg and re.search(r"\ba\b", msg), msg  # names the collection and the skipped id
        assert not re.search(r"\bnew\b", msg), msg  # not the id that was added
    r = col.get(ids=["a", "new"], include=ALL_GET)
    assert r["ids"] == ["a", "new"]
    assert r["documents"] == ["apple", "fresh"]
    assert r["metadatas"] == [{"kind": "x", "n": 1}, {"kind": "fresh"}]
    assert np.array_equal(r["embeddings"], np.array([[1, 2, 3], [7, 7, 7]], dtype=np.float32))
    assert col.count() == 4
    # all-existing: nothing changes at all
    col.add(ids=["a", "b"], embeddings=[[0.0, 0.0, 0.0]] * 2, documents=["x", "y"])
    after = snapshot(col)
    assert after[0] == 4
    assert after[1][:3] == before[1] and after[2][:3] == before[2] and after[4][:3] == before[4]


def test_add_without_embeddings_rejected(client):
    col = populated(client)
    before = snapshot(col)
    with pytest.raises(ValueError):
        col.add(ids=["z"], documents=["no vector and no embedding function"])
    assert snapshot(col) == before


def test_add_with_embedding_function(client):
    def ef(texts):
        return [[float(len(t)), 1.0] for t in texts]

    col = client.create_collection("efcol", embedding_function=ef)
    col.add(ids=["a", "b"], documents=["xx", "xxxx"])
    r = col.get(include=["embeddings", "documents"])
    assert np.array_equal(r["embeddings"], np.array([[2, 1], [4, 1]], dtype=np.float32))
    res = col.query(query_texts=["xxx"], n_results=2)
    assert res["ids"] == [["a", "b"]] or res["ids"] == [["b", "a"]]
    assert res["distances"][0] == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("rid", [
    "with space", "a/b", "..", ".", "ünïcödé", "\u2603", "x" * 4096, "quote\"d", "new\nline", "tab\t",
    "emoji\U0001F600", "0", "-1", "$eq", "#document", "nul\x00inside",
], ids=lambda x: repr(x)[:20])
def test_unusual_ids_and_documents_roundtrip(client, rid):
    # No embedding function: update(documents=...) below keeps the vectors instead of re-embedding.
    col = client.create_collection("ids", embedding_function=None)
    doc = "doc of " + rid
    col.add(ids=[rid, "plain"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=[doc, ""],
            metadatas=[{"k": rid}, {"k": "plain"}])
    r = col.get(ids=[rid], include=ALL_GET)
    assert r["ids"] == [rid] and r["documents"] == [doc] and r["metadatas"] == [{"k": rid}]
    assert col.get(ids=["plain"])["documents"] == [""]  # an empty document is a document, not None
    assert col.get()["ids"] == [rid, "plain"]
    assert col.query(query_embeddings=[[1.0, 0.1]], n_results=1)["ids"] == [[rid]]
    assert col.get(where={"k": rid})["ids"] == [rid]
    col.update(ids=[rid], documents=["updated"])
    assert col.get(ids=[rid])["documents"] == ["updated"]
    assert col.delete(ids=[rid]) == {"deleted": 1}
    assert col.get()["ids"] == ["plain"]


def test_similar_ids_are_distinct(client):
    col = client.create_collection("prefix")
    ids = ["a", "a ", " a", "A", "aa", "a\x00", "\u00e9", "e\u0301"]  # é precomposed vs combining
    col.add(ids=ids, embeddings=[[float(i)] for i in range(len(ids))])
    assert col.count() == len(ids)
    assert col.get()["ids"] == ids
    for i, x in enumerate(ids):
        assert np.array_equal(col.get(ids=[x], include=["embeddings"])["embeddings"], [[float(i)]])


def test_single_str_id_and_document(client):
    col = client.create_collection("single")
    col.add(ids="only", embeddings=[1.0, 2.0], documents="the doc", metadatas={"k": 1})
    r = col.get(include=ALL_GET)
    assert r["ids"] == ["only"] and r["documents"] == ["the doc"] and r["metadatas"] == [{"k": 1}]
    assert np.array_equal(r["embeddings"], [[1, 2]])


def test_large_documents_and_dimensions(client):
    col = client.create_collection("large")
    rng = np.random.default_rng(5)
    data = rng.standard_normal((20, 1536)).astype(np.float32)
    docs = [("word%d " % i) * 20000 for i in range(20)]  # ~130 KB each
    col.add(ids=[str(i) for i in range(20)], embeddings=data, documents=docs)
    r = col.get(include=["embeddings", "documents"])
    assert r["documents"] == docs
    assert np.array_equal(np.asarray(r["embeddings"], dtype=np.float32), data)
    q = rng.standard_normal((2, 1536)).astype(np.float32)
    assert_query_matches(col.query(query_embeddings=q, n_results=5), [str(i) for i in range(20)],
                         ref_distances("l2", q, data), 5, rtol=1e-4, atol=1e-2)


# --------------------------------------------------------------------------------- embedding forms

EMB_2x3 = [[1.5, -2.0, 3.0], [0.25, 4.0, -5.0]]
INT_2x3 = [[1, -2, 3], [0, 4, -5]]


@pytest.mark.parametrize("form", [
    "list-of-lists", "tuple-of-tuples", "2d-ndarray", "list-of-ndarrays", "list-of-np-scalars",
    "f16", "f32", "f64", "i32", "i64", "fortran-order", "strided",
])
def test_embedding_input_forms_two_records(client, client_kind, form):
    values = INT_2x3 if form in ("i32", "i64") else EMB_2x3
    expected = np.array(values, dtype=np.float32)
    emb = {
        "list-of-lists": lambda: values,
        "tuple-of-tuples": lambda: tuple(tuple(v) for v in values),
        "2d-ndarray": lambda: np.array(values),
        "list-of-ndarrays": lambda: [np.array(v, dtype=np.float32) for v in values],
        "list-of-np-scalars": lambda: [[np.float32(x) for x in v] for v in values],
        "f16": lambda: np.array(values, dtype=np.float16),
        "f32": lambda: np.array(values, dtype=np.float32),
        "f64": lambda: np.array(values, dtype=np.float64),
        "i32": lambda: np.array(values, dtype=np.int32),
        "i64": lambda: np.array(values, dtype=np.int64),
        "fortran-order": lambda: np.asfortranarray(np.array(values, dtype=np.float32)),
        "strided": lambda: np.array([[v, 99.0] for row in values for v in row], dtype=np.float32)[:, 0].reshape(2, 3),
    }[form]()
    col = client.create_collection("forms")
    col.add(ids=["u", "v"], embeddings=emb)
    got = col.get(include=["embeddings"])["embeddings"]
    assert stored_as_float32(got, client)
    assert np.array_equal(got, expected)
    # the same forms work for upsert, update and query
    col.update(ids=["u", "v"], embeddings=emb)
    col.upsert(ids=["u", "v"], embeddings=emb)
    assert np.array_equal(col.get(include=["embeddings"])["embeddings"], expected)
    res = col.query(query_embeddings=emb, n_results=1)
    assert res["ids"] == [["u"], ["v"]]
    assert res["distances"] == [[0.0], [0.0]]


@pytest.mark.parametrize("form", ["flat-list", "1d-ndarray", "1d-f64", "1d-i32", "list-with-one-ndarray"])
def test_embedding_input_forms_one_record(client, form):
    v = [1, 2, 3]
    emb = {
        "flat-list": lambda: [1.0, 2.0, 3.0],
        "1d-ndarray": lambda: np.array(v, dtype=np.float32),
        "1d-f64": lambda: np.array(v, dtype=np.float64),
        "1d-i32": lambda: np.array(v, dtype=np.int32),
        "list-with-one-ndarray": lambda: [np.array(v, dtype=np.float64)],
    }[form]()
    col = client.create_collection("one")
    col.add(ids=["only"], embeddings=emb)
    got = col.get(include=["embeddings"])["embeddings"]
    assert got.shape == (1, 3) and np.array_equal(got, np.array([v], dtype=np.float32))
    res = col.query(query_embeddings=emb, n_results=5)
    assert res["ids"] == [["only"]] and res["distances"] == [[0.0]]


@pytest.mark.parametrize("form", ["list", "ndarray"])
def test_query_embedding_singular(client, form):
    """ours: query(query_embedding=<one vector>) as the seed project documented."""
    col, ids, data, rng = random_collection(client, "l2", n=30, d=5)
    q = rng.standard_normal(5).astype(np.float32)
    arg = q.tolist() if form == "list" else q
    one = col.query(query_embedding=arg, n_results=4)
    many = col.query(query_embeddings=[q.tolist()], n_results=4)
    assert one["ids"] == many["ids"]
    assert np.allclose(one["distances"], many["distances"])
    assert len(one["ids"]) == 1
    assert_query_matches(one, ids, ref_distances("l2", q[None], data), 4)


def test_query_embedding_and_embeddings_together_rejected(client):
    col = populated(client)
    with pytest.raises(ValueError):
        col.query(query_embedding=[1.0, 2.0, 3.0], query_embeddings=[[1.0, 2.0, 3.0]])


def test_query_without_any_query_rejected(client):
    col = populated(client)
    with pytest.raises(ValueError):
        col.query(n_results=1)


# -------------------------------------------------------------------------------------- query

@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("d", [1, 3, 17, 128])
def test_query_distances_match_numpy(client, space, d):
    col, ids, data, rng = random_collection(client, space, n=80, d=d, seed=d)
    queries = rng.standard_normal((4, d)).astype(np.float32)
    for k in [1, 5, 80]:
        res = col.query(query_embeddings=queries, n_results=k)
        assert_query_matches(res, ids, ref_distances(space, queries, data), k)


@pytest.mark.parametrize("space", SPACES)
def test_query_exact_top_ids(client, space):
    """Well-separated data: the top ids must be exactly NumPy's."""
    rng = np.random.default_rng(7)
    data = (rng.integers(-50, 50, size=(40, 6)) + rng.random((40, 6))).astype(np.float32)
    ids = [f"v{i}" for i in range(40)]
    col = client.create_collection("exact", metadata={"hnsw:space": space})
    col.add(ids=ids, embeddings=data)
    queries = (rng.integers(-50, 50, size=(3, 6))).astype(np.float32)
    ref = ref_distances(space, queries, data)
    res = col.query(query_embeddings=queries, n_results=10)
    compared = 0
    for qi in range(3):
        order = np.argsort(ref[qi], kind="stable")[:10]
        gaps = np.diff(ref[qi][np.argsort(ref[qi])][:11])
        if gaps.min() > 1e-3:
            assert res["ids"][qi] == [ids[i] for i in order]
            compared += 1
    assert compared >= 2  # the data really is well separated


def test_query_result_shape(client):
    col = populated(client)
    res = col.query(query_embeddings=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.1]], n_results=2,
                    include=["embeddings", "metadatas", "documents", "distances"])
    assert set(res) >= QUERY_KEYS
    assert res["ids"] == [["a", "c"], ["b", "a"]]
    assert isinstance(res["embeddings"], list) and len(res["embeddings"]) == 2
    for e in res["embeddings"]:
        assert isinstance(e, np.ndarray) and stored_as_float32(e, client) and e.shape == (2, 3)
    assert np.array_equal(res["embeddings"][0], np.array([[1, 2, 3], [-1, 0.5, 2]], dtype=np.float32))
    assert res["metadatas"] == [[{"kind": "x", "n": 1}, {"kind": "y", "flag": True}],
                                [None, {"kind": "x", "n": 1}]]
    assert res["documents"] == [["apple", "cherry"], [None, "apple"]]
    assert res["distances"][0] == pytest.approx([0.0, 4 + 2.25 + 1])
    assert res["distances"][1] == pytest.approx([0.01, 9 + 9 + 3.1**2], rel=1e-5)
    assert all(isinstance(x, float) for row in res["distances"] for x in row)
    assert res["uris"] is None and res["data"] is None
    assert res["included"] == ["embeddings", "metadatas", "documents", "distances"]


def test_query_default_include(client):
    col = populated(client)
    res = col.query(query_embeddings=[[1.0, 2.0, 3.0]], n_results=1)
    assert res["embeddings"] is None
    assert res["ids"] == [["a"]] and res["documents"] == [["apple"]]
    assert res["metadatas"] == [[{"kind": "x", "n": 1}]] and res["distances"] == [[0.0]]
    assert sorted(res["included"]) == ["distances", "documents", "metadatas"]


@pytest.mark.parametrize("include", [[], ["distances"], ["embeddings"], ["documents", "uris"]])
def test_query_fields_not_included_are_none(client, include):
    col = populated(client)
    res = col.query(query_embeddings=[[1.0, 2.0, 3.0]], n_results=2, include=include)
    assert res["ids"] == [["a", "c"]]
    for key in ["embeddings", "metadatas", "documents", "distances", "uris"]:
        if key in include:
            assert res[key] is not None and len(res[key]) == 1 and len(res[key][0]) == 2
        else:
            assert res[key] is None, key
    assert res["data"] is None


def test_n_results_larger_than_count(client):
    col = populated(client)
    res = col.query(query_embeddings=[[0.0, 0.0, 0.0]], n_results=100)
    assert sorted(res["ids"][0]) == ["a", "b", "c"]
    assert len(res["distances"][0]) == 3


def test_query_on_empty_collection(client):
    col = client.create_collection("empty")
    res = col.query(query_embeddings=[[1.0, 2.0, 3.0]], n_results=5,
                    include=["embeddings", "metadatas", "documents", "distances"])
    assert res["ids"] == [[]]
    assert res["distances"] == [[]] and res["metadatas"] == [[]] and res["documents"] == [[]]
    assert len(res["embeddings"]) == 1 and len(res["embeddings"][0]) == 0
    two = col.query(query_embeddings=[[1.0, 2.0], [3.0, 4.0]], n_results=5)
    assert two["ids"] == [[], []] and two["distances"] == [[], []]


def test_query_after_everything_deleted(client):
    col = populated(client)
    assert col.delete(ids=["a", "b", "c"]) == {"deleted": 3}
    res = col.query(query_embeddings=[[1.0, 2.0, 3.0]], n_results=5)
    assert res["ids"] == [[]] and res["distances"] == [[]]


def test_query_with_where_filter(client):
    col, ids, data, rng = random_collection(client, "l2", n=50, d=4)
    q = rng.standard_normal((2, 4)).astype(np.float32)
    res = col.query(query_embeddings=q, n_results=5, where={"even": True})
    keep = [i for i in range(50) if i % 2 == 0]
    assert_query_matches(res, [ids[i] for i in keep], ref_distances("l2", q, data[keep]), 5)
    res = col.query(query_embeddings=q, n_results=5, where={"i": {"$lt": 3}})
    assert all(sorted(r) == ["id0", "id1", "id2"] for r in res["ids"])
    res = col.query(query_embeddings=q, n_results=5, where={"i": -1})
    assert res["ids"] == [[], []]


def test_many_queries_in_one_call(client):
    col, ids, data, rng = random_collection(client, "cosine", n=100, d=16)
    q = rng.standard_normal((64, 16)).astype(np.float32)
    res = col.query(query_embeddings=q, n_results=7)
    assert_query_matches(res, ids, ref_distances("cosine", q, data), 7)


# ----------------------------------------------------------------------- update / upsert / delete

def test_update_merges_metadata_and_keeps_other_fields(client):
    col = populated(client)
    col.update(ids=["a"], metadatas=[{"n": 2, "extra": "e"}])
    r = col.get(ids=["a"], include=ALL_GET)
    assert r["metadatas"] == [{"kind": "x", "n": 2, "extra": "e"}]
    assert r["documents"] == ["apple"]
    assert np.array_equal(r["embeddings"], [[1, 2, 3]])
    col.update(ids=["a"], metadatas=[{"kind": None}])  # None deletes a key
    assert col.get(ids=["a"])["metadatas"] == [{"n": 2, "extra": "e"}]
    col.update(ids=["a"], documents=["avocado"])
    r = col.get(ids=["a"], include=ALL_GET)
    assert r["documents"] == ["avocado"] and r["metadatas"] == [{"n": 2, "extra": "e"}]
    col.update(ids=["a"], embeddings=[[0.0, 0.0, 1.0]])
    r = col.get(ids=["a"], include=ALL_GET)
    assert np.array_equal(r["embeddings"], [[0, 0, 1]])
    assert r["documents"] == ["avocado"] and r["metadatas"] == [{"n": 2, "extra": "e"}]
    # the query index follows the new vector
    assert col.query(query_embeddings=[[0.0, 0.0, 1.0]], n_results=1)["ids"] == [["a"]]
    # a record without metadata gains some
    col.update(ids=["b"], metadatas=[{"new": 1}])
    assert col.get(ids=["b"])["metadatas"] == [{"new": 1}]
    assert col.get()["ids"] == ["a", "b", "c"]  # order unchanged


def test_update_deleting_every_key(client):
    col = populated(client)
    col.update(ids=["a"], metadatas=[{"kind": None, "n": None}])
    assert col.get(ids=["a"])["metadatas"] == [None]  # as chromadb: no keys left = None


def test_update_with_none_entries_keeps_fields(client):
    """A None metadata or document in update/upsert means "not given" for that record (as chromadb)."""
    col = populated(client)
    col.update(ids=["a", "c"], metadatas=[None, {"kind": "z"}], documents=[None, "cranberry"])
    r = col.get(ids=["a", "c"])
    assert r["metadatas"] == [{"kind": "x", "n": 1}, {"kind": "z", "flag": True}]
    assert r["documents"] == ["apple", "cranberry"]
    col.upsert(ids=["a"], embeddings=[[1.0, 2.0, 3.0]], metadatas=[None], documents=[None])
    r = col.get(ids=["a"])
    assert r["metadatas"] == [{"kind": "x", "n": 1}] and r["documents"] == ["apple"]


def test_update_of_unknown_id_is_ignored(client):
    col = populated(client)
    before = snapshot(col)
    col.update(ids=["ghost"], embeddings=[[0.0, 0.0, 0.0]], metadatas=[{"k": 1}], documents=["boo"])
    assert snapshot(col) == before
    col.update(ids=["ghost", "c"], documents=["boo", "changed"])
    assert col.count() == 3
    assert col.get(ids=["c"])["documents"] == ["changed"]
    assert col.get(ids=["ghost"])["ids"] == []


def test_upsert(client):
    col = populated(client)
    col.upsert(ids=["a", "d"], embeddings=[[0.0, 0.0, 0.0], [7.0, 8.0, 9.0]],
               metadatas=[{"n": 5, "kind": None}, {"kind": "new"}], documents=[None, "date"])
    r = col.get(include=ALL_GET)
    assert r["ids"] == ["a", "b", "c", "d"]
    assert r["metadatas"][0] == {"n": 5}  # merged; None deleted "kind"
    assert r["metadatas"][3] == {"kind": "new"}
    assert r["documents"][3] == "date"
    assert r["documents"][0] == "apple"  # a None document in upsert keeps the old one (as chromadb)
    assert np.array_equal(r["embeddings"][0], [0, 0, 0])
    assert np.array_equal(r["embeddings"][3], [7, 8, 9])
    # upsert without metadatas/documents keeps them
    col.upsert(ids=["d"], embeddings=[[1.0, 1.0, 1.0]])
    r = col.get(ids=["d"], include=ALL_GET)
    assert r["metadatas"] == [{"kind": "new"}] and r["documents"] == ["date"]
    assert np.array_equal(r["embeddings"], [[1, 1, 1]])


def test_upsert_new_id_without_embedding_rejected(client):
    col = populated(client)
    before = snapshot(col)
    with pytest.raises(ValueError):
        col.upsert(ids=["b", "zz"], metadatas=[{"k": 1}, {"k": 2}])
    assert snapshot(col) == before


def test_delete(client):
    col = populated(client)
    assert col.delete(ids=["b"]) == {"deleted": 1}
    assert col.get()["ids"] == ["a", "c"]
    assert col.delete(ids=["nope", "also-nope"]) == {"deleted": 0}
    assert col.delete(ids=["a", "nope"]) == {"deleted": 1}
    assert col.count() == 1
    assert col.query(query_embeddings=[[1.0, 2.0, 3.0]], n_results=3)["ids"] == [["c"]]
    assert col.delete(ids="c") == {"deleted": 1}
    assert col.count() == 0
    # deleted ids can be added again
    col.add(ids=["b"], embeddings=[[4.0, 5.0, 6.0]], documents=["again"])
    assert col.get(include=ALL_GET)["documents"] == ["again"]


def test_delete_where(client):
    col, ids, data, _ = random_collection(client, "l2", n=20)
    assert col.delete(where={"even": True}) == {"deleted": 10}
    assert col.get()["ids"] == [x for i, x in enumerate(ids) if i % 2 == 1]
    assert col.delete(ids=["id1", "id2", "id3"], where={"i": {"$gte": 3}}) == {"deleted": 1}
    assert "id3" not in col.get()["ids"] and "id1" in col.get()["ids"]
    assert col.delete(where={"i": -5}) == {"deleted": 0}


def test_delete_needs_something(client):
    col = populated(client)
    with pytest.raises(ValueError):
        col.delete()
    assert col.count() == 3


def test_delete_then_query_and_reopen(client, client_kind, reopen):
    col, ids, data, rng = random_collection(client, "l2", n=40, d=5)
    gone = ids[::3]
    assert col.delete(ids=gone) == {"deleted": len(gone)}
    keep = [i for i, x in enumerate(ids) if x not in gone]
    q = rng.standard_normal((3, 5)).astype(np.float32)
    assert_query_matches(col.query(query_embeddings=q, n_results=40), [ids[i] for i in keep],
                         ref_distances("l2", q, data[keep]), 40)
    if client_kind == "persistent":
        c2 = reopen(client)
        col2 = c2.get_collection(col.name)
        assert col2.get()["ids"] == [ids[i] for i in keep]
        assert_query_matches(col2.query(query_embeddings=q, n_results=40), [ids[i] for i in keep],
                             ref_distances("l2", q, data[keep]), 40)


# --------------------------------------------------------------------------------------- modify

def test_modify_name_and_metadata(client):
    col = populated(client)
    col.modify(name="renamed")
    assert col.name == "renamed"
    with pytest.raises(NotFoundError):
        client.get_collection("things")
    got = client.get_collection("renamed")
    assert got.id == col.id and got.count() == 3
    assert got.get()["ids"] == ["a", "b", "c"]
    col.modify(metadata={"owner": "me"})  # metadata replaced whole (hnsw:space stays in config)
    assert client.get_collection("renamed").metadata == {"owner": "me"}
    assert col.metadata == {"owner": "me"}
    # the space did not change with the metadata
    col.add(ids=["o"], embeddings=[[0.0, 0.0, 0.0]])
    res = col.query(query_embeddings=[[0.0, 0.0, -3.0]], n_results=1, include=["distances"])
    assert res["ids"] == [["o"]] and res["distances"][0][0] == pytest.approx(9.0)  # still squared l2
    col.modify(name="renamed")  # same name: fine
    assert [c.name for c in client.list_collections()] == ["renamed"]


def test_modify_configuration_sets_n_probe_and_keeps_chroma_tuning(client):
    col = client.create_collection("tuned", use_ivf=True, n_clusters=4)
    col.modify(configuration={"n_probe": 3})
    assert col.configuration["n_probe"] == 3
    assert client.get_collection("tuned").configuration["n_probe"] == 3
    assert col.stats()["n_probe"] == 3  # the engine uses it, not only the catalog
    for bad in ({"n_probe": 0}, {"n_probe": 2.5}, {"hnsw": {"space": "ip"}}, {"hnsw": {"ef": 5}},
                {"dimension": 3}, "n_probe=3"):
        with pytest.raises(InvalidArgumentError):
            col.modify(configuration=bad)
        assert client.get_collection("tuned").configuration["n_probe"] == 3
    # chromadb's HNSW tuning means nothing here: accepted and reported back, as chromadb does.
    col.modify(configuration={"hnsw": {"ef_search": 50}})
    assert client.get_collection("tuned").configuration["hnsw"]["ef_search"] == 50
    col.modify(configuration={"n_probe": None})
    assert client.get_collection("tuned").configuration["n_probe"] is None
    assert col.stats()["n_probe"] == 4  # the rule: max(16, ceil(3 sqrt(4))), at most the 4 lists


def test_modify_to_existing_name_fails(client):
    a = client.create_collection("first")
    client.create_collection("second")
    with pytest.raises(CollectionExistsError):
        a.modify(name="second")
    assert sorted(c.name for c in client.list_collections()) == ["first", "second"]
    assert client.get_collection("first").id == a.id


def test_modify_space_change_is_an_error(client):
    col = client.create_collection("cos", metadata={"hnsw:space": "cosine"})
    col.add(ids=["x", "y"], embeddings=[[1.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError):
        col.modify(metadata={"hnsw:space": "l2"})
    assert client.get_collection("cos").metadata == {"hnsw:space": "cosine"}
    col.modify(metadata={"hnsw:space": "cosine", "note": "same space is fine"})
    res = col.query(query_embeddings=[[3.0, 0.0]], n_results=2)
    assert res["distances"][0] == pytest.approx([0.0, 1.0], abs=1e-6)  # still cosine


@pytest.mark.parametrize("metadata", [{}, {"$bad": 1}, {"nested": {"x": 1}}])
def test_modify_invalid_metadata_rejected(client, metadata):
    col = client.create_collection("modme", metadata={"v": 1})
    with pytest.raises(ValueError):
        col.modify(metadata=metadata)
    assert client.get_collection("modme").metadata == {"v": 1}


# ------------------------------------------------------------------------------------ bad input

BASE_EMB = [[1.0, 2.0, 3.0]]
NAN, INF = float("nan"), float("inf")

# (name, method, kwargs, error class, message fragment or None)
BAD_WRITES = [
    ("nan", {"ids": ["z"], "embeddings": [[1.0, NAN, 3.0]]}, InvalidArgumentError, None),
    ("inf", {"ids": ["z"], "embeddings": [[1.0, INF, 3.0]]}, InvalidArgumentError, None),
    ("-inf", {"ids": ["z"], "embeddings": [[-INF, 2.0, 3.0]]}, InvalidArgumentError, None),
    ("nan-ndarray", {"ids": ["z"], "embeddings": np.array([[1.0, 2.0, np.nan]])}, InvalidArgumentError, None),
    ("inf-f32-ndarray", {"ids": ["z"], "embeddings": np.array([[1.0, np.inf, 2.0]], dtype=np.float32)},
     InvalidArgumentError, None),
    ("nan-in-last-record", {"ids": ["y", "z"], "embeddings": [[1.0, 2.0, 3.0], [1.0, 2.0, NAN]]},
     InvalidArgumentError, None),
    ("wrong-dim", {"ids": ["z"], "embeddings": [[1.0, 2.0, 3.0, 4.0]]}, InvalidDimensionError,
     "expecting embedding with dimension of 3, got 4"),
    ("wrong-dim-2", {"ids": ["y", "z"], "embeddings": np.ones((2, 2))}, InvalidDimensionError,
     "expecting embedding with dimension of 3, got 2"),
    ("mixed-dim", {"ids": ["y", "z"], "embeddings": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]},
     InvalidArgumentError, None),
    ("empty-vector", {"ids": ["z"], "embeddings": [[]]}, InvalidArgumentError, None),
    ("no-vectors", {"ids": ["z"], "embeddings": []}, InvalidArgumentError, None),
    ("bool-ndarray", {"ids": ["z"], "embeddings": np.array([[True, False, True]])}, InvalidArgumentError, None),
    ("bool-list", {"ids": ["z"], "embeddings": [[True, False, True]]}, InvalidArgumentError, None),
    ("none-among-floats", {"ids": ["z"], "embeddings": [[1.0, 2.0, None]]}, InvalidArgumentError, None),
    ("str-values", {"ids": ["z"], "embeddings": [["1", "2", "3"]]}, InvalidArgumentError, None),
    ("3d-array", {"ids": ["z"], "embeddings": np.ones((1, 1, 3))}, InvalidArgumentError, None),
    ("complex", {"ids": ["z"], "embeddings": np.ones((1, 3), dtype=np.complex64)}, InvalidArgumentError, None),
    ("too-few-embeddings", {"ids": ["y", "z"], "embeddings": BASE_EMB}, InvalidArgumentError, None),
    ("too-many-embeddings", {"ids": ["z"], "embeddings": BASE_EMB * 2}, InvalidArgumentError, None),
    ("too-few-metadatas", {"ids": ["y", "z"], "embeddings": BASE_EMB * 2, "metadatas": [{"k": 1}]},
     InvalidArgumentError, None),
    ("too-many-documents", {"ids": ["z"], "embeddings": BASE_EMB, "documents": ["x", "y"]},
     InvalidArgumentError, None),
    ("empty-ids", {"ids": [], "embeddings": []}, InvalidArgumentError, None),
    ("duplicate-ids", {"ids": ["dup-one", "other", "dup-one"], "embeddings": BASE_EMB * 3}, DuplicateIDError,
     "dup-one"),
    ("int-id", {"ids": [1], "embeddings": BASE_EMB}, InvalidArgumentError, None),
    ("none-id", {"ids": [None], "embeddings": BASE_EMB}, InvalidArgumentError, None),
    ("int-id-last", {"ids": ["y", 2], "embeddings": BASE_EMB * 2}, InvalidArgumentError, None),
    ("empty-str-id", {"ids": [""], "embeddings": BASE_EMB}, InvalidArgumentError, None),
    ("empty-str-id-last", {"ids": ["y", ""], "embeddings": BASE_EMB * 2}, InvalidArgumentError, None),
    ("ids-not-a-list", {"ids": 5, "embeddings": BASE_EMB}, InvalidArgumentError, None),
    ("meta-empty-dict", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{}]}, InvalidArgumentError, None),
    ("meta-nested", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"a": {"b": 1}}]}, InvalidArgumentError,
     None),
    ("meta-empty-list", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"a": []}]}, InvalidArgumentError,
     None),
    ("meta-mixed-list", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"a": [1, "x"]}]},
     InvalidArgumentError, None),
    ("meta-list-of-lists", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"a": [[1], [2]]}]},
     InvalidArgumentError, None),
    ("meta-dollar-key", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"$and": 1}]}, InvalidArgumentError,
     None),
    ("meta-hash-key", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"#document": "x"}]},
     InvalidArgumentError, None),
    ("meta-int-key", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{1: "x"}]}, InvalidArgumentError, None),
    ("meta-empty-key", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"": "x"}]}, InvalidArgumentError,
     None),
    ("meta-nan-value", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"a": NAN}]}, InvalidArgumentError,
     None),
    ("meta-int-too-big", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": [{"a": 2**64}]},
     InvalidArgumentError, None),
    ("meta-not-a-dict", {"ids": ["z"], "embeddings": BASE_EMB, "metadatas": ["k=v"]}, InvalidArgumentError, None),
    ("meta-bad-in-last", {"ids": ["y", "z"], "embeddings": BASE_EMB * 2, "metadatas": [{"ok": 1}, {"a": {}}]},
     InvalidArgumentError, None),
    ("document-int", {"ids": ["z"], "embeddings": BASE_EMB, "documents": [3]}, InvalidArgumentError, None),
    ("document-bytes-last", {"ids": ["y", "z"], "embeddings": BASE_EMB * 2, "documents": ["ok", b"x"]},
     InvalidArgumentError, None),
]


def _expect_unchanged(col, before):
    after = snapshot(col)
    assert after == before, "a rejected call changed the collection"


@pytest.mark.parametrize("method", ["add", "upsert", "update"])
@pytest.mark.parametrize("case", BAD_WRITES, ids=[c[0] for c in BAD_WRITES])
def test_bad_write_rejected_and_nothing_written(client, client_kind, method, case):
    name, kwargs, exc, fragment = case
    col = populated(client)
    if method == "update" and "ids" in kwargs and isinstance(kwargs["ids"], list) and kwargs["ids"] \
            and all(isinstance(i, str) and i for i in kwargs["ids"]) and len(set(kwargs["ids"])) == len(kwargs["ids"]):
        # make update target existing ids so "unknown id ignored" cannot hide a missing check
        kwargs = dict(kwargs, ids=["a", "b", "c"][: len(kwargs["ids"])])
    before = snapshot(col)
    with pytest.raises(exc, match=fragment) as ei:
        getattr(col, method)(**kwargs)
    # (chromadb's client raises its own classes, which are not ValueError subclasses)
    assert isinstance(ei.value, ValueError) or client_kind == "chroma", "input errors are ValueError subclasses"
    _expect_unchanged(col, before)
    if name == "duplicate-ids":
        assert "other" not in str(ei.value)  # names the duplicates, not every id


@pytest.mark.parametrize("method", ["add", "upsert", "update"])
def test_wrong_dimension_does_not_change_the_collection_dimension(client, method):
    col = populated(client)
    with pytest.raises(InvalidDimensionError):
        getattr(col, method)(ids=["a"], embeddings=[[1.0, 2.0]])
    col.add(ids=["d"], embeddings=[[1.0, 1.0, 1.0]])  # dimension still 3
    assert col.count() == 4


def test_first_add_fixes_dimension(client):
    col = client.create_collection("fresh")
    with pytest.raises(InvalidArgumentError):
        col.add(ids=["x", "y"], embeddings=[[1.0, 2.0], [1.0, 2.0, 3.0]])  # mixed: nothing fixed
    col.add(ids=["x"], embeddings=[[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(InvalidDimensionError, match="expecting embedding with dimension of 4, got 3"):
        col.add(ids=["y"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidDimensionError):
        col.query(query_embeddings=[[1.0, 2.0, 3.0]])
    assert col.count() == 1


BAD_IDS = [
    ("empty", [], InvalidArgumentError),
    ("duplicates", ["a", "a"], DuplicateIDError),
    ("int", [1], InvalidArgumentError),
    ("none", [None], InvalidArgumentError),
    ("empty-str", [""], InvalidArgumentError),
]


@pytest.mark.parametrize("case", BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_bad_ids_in_delete_rejected(client, case):
    _, ids, exc = case
    col = populated(client)
    before = snapshot(col)
    with pytest.raises(exc):
        col.delete(ids=ids)
    _expect_unchanged(col, before)


@pytest.mark.parametrize("case", [c for c in BAD_IDS if c[0] != "duplicates"], ids=lambda c: c[0])
def test_bad_ids_in_get_rejected(client, case):
    _, ids, exc = case
    col = populated(client)
    with pytest.raises(exc):
        col.get(ids=ids)


@pytest.mark.parametrize("include", [["foo"], ["documents", "embedings"], ["distances"], "documents"],
                         ids=repr)
def test_get_bad_include_rejected(client, include):
    col = populated(client)
    with pytest.raises(ValueError):
        col.get(include=include)


@pytest.mark.parametrize("include", [["foo"], ["distance"], ["metadatas", "Documents"], "distances"], ids=repr)
def test_query_bad_include_rejected(client, include):
    col = populated(client)
    with pytest.raises(ValueError):
        col.query(query_embeddings=BASE_EMB, include=include)


@pytest.mark.parametrize("n_results", [0, -1, -100, 1.5, "3", None, True], ids=repr)
def test_query_bad_n_results_rejected(client, n_results):
    # n_results=None: once a bug of HttpClient (dropped from the body, so the server used 10)
    col = populated(client)
    with pytest.raises(ValueError):
        col.query(query_embeddings=BASE_EMB, n_results=n_results)


@pytest.mark.parametrize("q", [
    [[1.0, NAN, 3.0]], [[INF, 0.0, 0.0]], [[1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0]], [[True, False, True]], [],
    [[]], [[1.0, 2.0, 3.0], [1.0, 2.0]], [["a", "b", "c"]],
], ids=repr)
def test_query_bad_embeddings_rejected(client, q):
    col = populated(client)
    with pytest.raises(InvalidArgumentError):
        col.query(query_embeddings=q)


def test_wrong_dimension_query_message(client):
    col = populated(client)
    with pytest.raises(InvalidDimensionError, match="expecting embedding with dimension of 3, got 2"):
        col.query(query_embeddings=[[1.0, 2.0]])


def test_rejected_write_on_empty_collection_leaves_it_empty(client):
    col = client.create_collection("pristine")
    with pytest.raises(InvalidArgumentError):
        col.add(ids=["x", "y"], embeddings=[[1.0, 2.0], [NAN, 1.0]])
    assert col.count() == 0
    # and did not fix the dimension either
    col.add(ids=["x"], embeddings=[[1.0, 2.0, 3.0, 4.0, 5.0]])
    assert col.count() == 1


# ---------------------------------------------------------------------------------- persistence

@pytest.mark.parametrize("space", SPACES)
def test_reopen_gives_identical_results(persistent_path, reopen, space):
    rng = np.random.default_rng(3)
    data = rng.standard_normal((50, 9)).astype(np.float32)
    ids = [f"k{i}" for i in range(50)]
    q = rng.standard_normal((5, 9)).astype(np.float32)
    c = reopen()
    col = c.create_collection("persist", metadata={"hnsw:space": space, "note": "kept"}, embedding_function=None)
    col.add(ids=ids[:30], embeddings=data[:30], metadatas=[{"i": i} for i in range(30)],
            documents=[f"doc{i}" for i in range(30)])
    col.add(ids=ids[30:], embeddings=data[30:])
    col.update(ids=["k1"], metadatas=[{"i": None, "u": "updated"}], documents=["changed"])
    col.upsert(ids=["k2"], embeddings=[data[2] * 2])
    data[2] *= 2
    col.delete(ids=["k5", "k40"])
    other = c.create_collection("other")
    other.add(ids=["o"], embeddings=[[1.0]])
    c.delete_collection("other")
    c.create_collection("renamed-later").modify(name="renamed", metadata={"m": 1})

    full = ["embeddings", "metadatas", "documents"]
    before_get = col.get(include=full)
    before_q = col.query(query_embeddings=q, n_results=8, include=full + ["distances"])
    c2 = reopen(c)
    assert [x.name for x in c2.list_collections()] == ["persist", "renamed"]
    assert c2.get_collection("renamed").metadata == {"m": 1}
    col2 = c2.get_collection("persist")
    assert col2.metadata == {"hnsw:space": space, "note": "kept"}
    assert col2.count() == 48
    after_get = col2.get(include=full)
    assert after_get["ids"] == before_get["ids"]
    assert np.array_equal(after_get["embeddings"], before_get["embeddings"])
    assert after_get["metadatas"] == before_get["metadatas"]
    assert after_get["documents"] == before_get["documents"]
    after_q = col2.query(query_embeddings=q, n_results=8, include=full + ["distances"])
    assert after_q["ids"] == before_q["ids"]
    assert after_q["distances"] == before_q["distances"]
    assert after_q["metadatas"] == before_q["metadatas"]
    keep = [i for i in range(50) if ids[i] not in ("k5", "k40")]
    assert_query_matches(after_q, [ids[i] for i in keep], ref_distances(space, q, data[keep]), 8)
    # and writes keep working after the reopen, the dimension is remembered
    with pytest.raises(InvalidDimensionError):
        col2.add(ids=["new"], embeddings=[[1.0] * 8])
    col2.add(ids=["new"], embeddings=[[1.0] * 9])
    assert col2.count() == 49


def test_reopen_after_checkpoint_and_more_writes(persistent_path, reopen):
    c = reopen()
    col = c.create_collection("ckpt", embedding_function=None)
    col.add(ids=[f"a{i}" for i in range(20)], embeddings=np.arange(40, dtype=np.float32).reshape(20, 2))
    col.checkpoint()
    col.delete(ids=["a3"])
    col.add(ids=["b0"], embeddings=[[0.5, 0.5]], metadatas=[{"after": True}])
    col.update(ids=["a4"], documents=["doc after checkpoint"])
    before = snapshot(col)
    c2 = reopen(c)
    assert snapshot(c2.get_collection("ckpt")) == before


def test_reopen_empty_collection_keeps_dimension_unset_or_fixed(persistent_path, reopen):
    c = reopen()
    c.create_collection("empty")
    c.create_collection("fixed", dimension=2)
    c2 = reopen(c)
    assert c2.get_collection("empty").count() == 0
    c2.get_collection("empty").add(ids=["x"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidDimensionError):
        c2.get_collection("fixed").add(ids=["x"], embeddings=[[1.0, 2.0, 3.0]])


def test_lru_of_open_collections(persistent_path, reopen):
    """PersistentClient(max_cached=2) with 5 collections used round-robin: the least recently used
    are closed and reopened lazily, and every answer stays right."""
    c = reopen(max_cached=2)
    rng = np.random.default_rng(11)
    names = [f"lru{i}" for i in range(5)]
    spaces = ["l2", "ip", "cosine", "l2", "cosine"]
    model = {n: ([], []) for n in names}  # name -> (ids, vectors)
    cols = {n: c.create_collection(n, metadata={"hnsw:space": s}) for n, s in zip(names, spaces)}
    for rnd in range(6):
        for n, s in zip(names, spaces):
            col = cols[n] if rnd % 2 else c.get_collection(n)  # old handles and fresh ones both work
            v = rng.standard_normal((3, 4)).astype(np.float32)
            new_ids = [f"{n}-{rnd}-{j}" for j in range(3)]
            col.add(ids=new_ids, embeddings=v, metadatas=[{"round": rnd}] * 3)
            model[n][0].extend(new_ids)
            model[n][1].extend(v)
            if rnd == 3:
                col.delete(ids=[model[n][0][0]])
                del model[n][0][0], model[n][1][0]
            q = rng.standard_normal((2, 4)).astype(np.float32)
            res = col.query(query_embeddings=q, n_results=5)
            assert_query_matches(res, model[n][0], ref_distances(s, q, np.array(model[n][1])), 5)
            assert col.count() == len(model[n][0])
            # white-box: the cache really is bounded, so eviction and lazy reopen were exercised
            assert len(c._db._handles) <= 2
    for n in names:
        assert c.get_collection(n).get()["ids"] == model[n][0]
    c2 = reopen(c, max_cached=1)
    for n in names:
        col = c2.get_collection(n)
        assert col.get()["ids"] == model[n][0]
        assert np.allclose(col.get(include=["embeddings"])["embeddings"], np.array(model[n][1]))


def test_unmatched_end_batch_keeps_the_open_batch_cached(persistent_path, reopen):
    """An end_batch without a matching begin is refused and ends nothing, so the batch still open
    below it keeps its collection in the cache: using other collections does not close it, and its
    own end_batch later commits its writes."""
    c = reopen(max_cached=1)
    a = c.create_collection("batched")
    b = c.create_collection("other")
    a.begin_batch()
    a.begin_batch(log_each_write=True)
    a.add(ids=["x"], embeddings=[[1.0, 2.0]])
    a.end_batch(log_each_write=True)
    with pytest.raises(vectordb.InvalidArgumentError, match="without a matching begin"):
        a.end_batch(log_each_write=True)  # the logged level is gone; the plain one stays
    a.add(ids=["y"], embeddings=[[3.0, 4.0]])
    b.add(ids=["z"], embeddings=[[5.0, 6.0]])  # with max_cached=1 this would evict an unpinned a
    assert a.stats()["batch_depth"] == 1
    a.end_batch()
    assert a.stats()["batch_depth"] == 0
    c = reopen(c)
    assert c.get_collection("batched").get()["ids"] == ["x", "y"]


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5])
def test_max_cached_must_be_positive(persistent_path, bad):
    with pytest.raises(ValueError):
        vectordb.PersistentClient(persistent_path, max_cached=bad)


def test_ephemeral_clients_share_one_database_until_the_last_is_closed():
    """As chromadb: every EphemeralClient of a process is the same in-memory database."""
    a, b = vectordb.EphemeralClient(), vectordb.EphemeralClient()
    col = a.create_collection("shared-name")
    col.add(ids=["x"], embeddings=[[1.0]])
    assert b.get_collection("shared-name").count() == 1
    a.close()
    with pytest.raises(vectordb.VectorDBError, match="closed"):
        col.count()  # a closed client's collections are closed with it
    assert b.get_collection("shared-name").count() == 1
    b.close()
    with vectordb.EphemeralClient() as fresh:
        assert fresh.count_collections() == 0


def test_a_collection_keeps_its_client_alive():
    col = vectordb.EphemeralClient().create_collection("orphan")
    col.add(ids=["x"], embeddings=[[1.0]])
    assert col.count() == 1


def test_import_vectordb_as_chromadb_style():
    """`import vectordb as chromadb` code finds the same names."""
    for name in ["PersistentClient", "EphemeralClient", "HttpClient", "Collection"]:
        assert getattr(vectordb, name) is not None
    for name in ["NotFoundError", "DuplicateIDError", "InvalidDimensionError", "InvalidArgumentError"]:
        assert issubclass(getattr(vectordb.errors, name), ValueError)
    assert issubclass(CollectionExistsError, ValueError)


def test_threads_share_a_client_with_a_small_cache(persistent_path, reopen):
    """Several threads query and write collections while the LRU (max_cached=1) keeps closing and
    reopening them: no errors, every answer right, every write kept."""
    import threading

    c = reopen(max_cached=1)
    rng = np.random.default_rng(21)
    names = ["thr0", "thr1", "thr2"]
    data = {n: rng.standard_normal((40, 6)).astype(np.float32) for n in names}
    for n in names:
        c.create_collection(n).add(ids=[f"{n}-{i}" for i in range(40)], embeddings=data[n])
    queries = rng.standard_normal((5, 6)).astype(np.float32)
    errors: list = []

    def worker(t: int) -> None:
        try:
            for it in range(25):
                n = names[(t + it) % 3]
                col = c.get_collection(n)
                res = col.query(query_embeddings=queries, n_results=3)
                assert_query_matches(res, [f"{n}-{i}" for i in range(40)], ref_distances("l2", queries, data[n]), 3)
                col.add(ids=[f"extra-{t}-{it}"], embeddings=[[1e3 + t, 0, 0, 0, 0, it]])  # far away: no effect
        except BaseException as e:  # reported below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    total = sum(c.get_collection(n).count() for n in names)
    assert total == 3 * 40 + 4 * 25
    c2 = reopen(c)
    assert sum(c2.get_collection(n).count() for n in names) == 3 * 40 + 4 * 25


def test_deleted_collection_leaves_nothing_behind(client):
    """chromadb 1.5.9 leaks array-valued metadata of a deleted collection into records of a later
    one (see test_chroma_compat.py); ours must not."""
    first = client.create_collection("first")
    first.add(ids=["r1", "r2"], embeddings=[[1.0, 2.0], [3.0, 4.0]],
              metadatas=[{"tags": ["t1", "all"], "n": 1}, {"tags": ["t2"]}], documents=["d1", "d2"])
    client.delete_collection("first")
    second = client.create_collection("second")
    second.add(ids=["r1", "other"], embeddings=[[1.0, 2.0], [5.0, 6.0]], metadatas=[{"x": 2}, None])
    r = second.get()
    assert r["metadatas"] == [{"x": 2}, None] and r["documents"] == [None, None]
    assert second.get(where={"tags": {"$contains": "all"}})["ids"] == []
    again = client.create_collection("first")
    assert again.count() == 0 and again.get()["ids"] == []


def test_deleted_record_leaves_nothing_behind(client):
    col = client.create_collection("recycle")
    col.add(ids=["a", "b"], embeddings=[[1.0], [2.0]], metadatas=[{"tags": ["x"], "k": 1}, {"k": 2}],
            documents=["old a", "old b"])
    col.delete(ids=["a"])
    col.add(ids=["a", "c"], embeddings=[[3.0], [4.0]])
    r = col.get(include=ALL_GET)
    assert r["ids"] == ["b", "a", "c"]
    assert r["metadatas"] == [{"k": 2}, None, None] and r["documents"] == ["old b", None, None]
    assert np.array_equal(r["embeddings"], [[2.0], [3.0], [4.0]])
    assert col.get(where={"tags": {"$contains": "x"}})["ids"] == []


@pytest.mark.parametrize("space", SPACES)
def test_space_from_configuration_survives_reopen(reopen, space):
    c = reopen()
    col = c.create_collection("cfg", configuration={"hnsw": {"space": space}})
    data = np.array([[1.0, 0.5], [-0.5, 2.0]], dtype=np.float32)
    col.add(ids=["p", "q"], embeddings=data)
    q = np.array([[0.2, 1.0]], dtype=np.float32)
    col2 = reopen(c).get_collection("cfg")
    assert_query_matches(col2.query(query_embeddings=q, n_results=2), ["p", "q"], ref_distances(space, q, data), 2)


@pytest.mark.parametrize("value", [2**63, 2**64, 10**30])
@pytest.mark.parametrize("what", ["n_results", "limit", "offset"])
def test_huge_counts_are_handled(client, what, value):
    """n_results/limit larger than any collection: what exists (or, at worst, a ValueError), never
    an OverflowError from the conversion to C (a bug found and fixed: >= 2**63 raised OverflowError)."""
    col = populated(client)
    try:
        if what == "n_results":
            res = col.query(query_embeddings=BASE_EMB, n_results=value)
            assert sorted(res["ids"][0]) == ["a", "b", "c"]
        else:
            res = col.get(**{what: value})
            assert res["ids"] == (["a", "b", "c"] if what == "limit" else [])
    except ValueError:
        pass


def test_float64_beyond_float32_range_message(client):
    """A finite float64 too large for float32 is rejected with a message that says so, and without
    a NumPy RuntimeWarning escaping to the user (a bug found and fixed: it was reported as 'NaN or
    infinity', with NumPy's 'overflow encountered in cast' warning)."""
    import warnings

    col = populated(client)
    before = snapshot(col)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidArgumentError, match="float32"):
            col.add(ids=["big"], embeddings=np.array([[1e39, 0.0, 0.0]]))
    assert snapshot(col) == before


def test_query_float32_array_finiteness(client):
    """A float32 array query (the hot path, checked by one sum): NaN or an infinity anywhere in any
    query is rejected; finite values whose sum overflows float32 are still a valid
    query (a sum alone would call them infinite)."""
    col = populated(client)
    for bad in (np.nan, np.inf, -np.inf):
        for row in (0, 1):
            q = np.ones((2, 3), dtype=np.float32)
            q[row, 2] = bad
            with pytest.raises(InvalidArgumentError, match="query_embedding"):
                col.query(query_embeddings=q, n_results=1)
    huge = np.full((1, 3), 3e38, dtype=np.float32)
    assert not np.isfinite(huge.sum())
    assert col.query(query_embeddings=huge, n_results=3, include=[])["ids"][0] == \
        col.query(query_embeddings=[[3e38, 3e38, 3e38]], n_results=3, include=[])["ids"][0]


def test_single_query_result_shape(client):
    """One query's result has the shape a batch's first query has, whatever include asks for."""
    col = populated(client)
    q = np.array([[1.0, 2.0, 2.5]], dtype=np.float32)
    for include in ([], ["distances"], ["documents"], ["metadatas", "distances"], ["embeddings"],
                    ["uris", "distances"]):
        one = col.query(query_embeddings=q, n_results=2, include=include)
        two = col.query(query_embeddings=np.vstack([q, q + 1]), n_results=2, include=include)
        assert one.keys() == two.keys()
        for key, value in one.items():  # repr: embeddings are arrays
            expected = two[key][:1] if isinstance(value, list) and key != "included" else two[key]
            assert repr(value) == repr(expected), (include, key)


def test_reopen_across_close_checkpoint_and_compaction(reopen):
    """Enough data that close() checkpoints (the log passes a few MB), with deleted rows to compact,
    then more writes replayed from the log on top of the new snapshot: nothing lost or reordered."""
    rng = np.random.default_rng(17)
    n, d = 3000, 384
    data = rng.standard_normal((n, d)).astype(np.float32)
    ids = [f"big{i}" for i in range(n)]
    c = reopen()
    col = c.create_collection("bigone", metadata={"hnsw:space": "cosine"})
    col.add(ids=ids, embeddings=data, metadatas=[{"i": i} for i in range(n)])
    col.delete(ids=ids[::7])
    col.update(ids=ids[1:20:3], metadatas=[{"i": -1}] * len(ids[1:20:3]), embeddings=data[1:20:3] * -1)
    model = {x: (data[i] * (-1 if x in ids[1:20:3] else 1), {"i": -1 if x in ids[1:20:3] else i})
             for i, x in enumerate(ids) if i % 7}
    c2 = reopen(c)
    col = c2.get_collection("bigone")
    col.add(ids=["late0", ids[0]], embeddings=data[:2] + 1, metadatas=[{"late": True}, None])
    model["late0"] = (data[0] + 1, {"late": True})
    model[ids[0]] = (data[1] + 1, None)
    col.delete(ids=[ids[1]])
    del model[ids[1]]
    c3 = reopen(c2)
    col = c3.get_collection("bigone")
    r = col.get(include=["embeddings", "metadatas"])
    assert r["ids"] == list(model)
    assert np.array_equal(r["embeddings"], np.stack([v for v, _ in model.values()]))
    assert r["metadatas"] == [m for _, m in model.values()]
    q = rng.standard_normal((3, d)).astype(np.float32)
    keys = list(model)
    assert_query_matches(col.query(query_embeddings=q, n_results=10), keys,
                         ref_distances("cosine", q, np.stack([model[k][0] for k in keys])), 10)


def test_vectors_of_python_numbers_are_checked_element_by_element():
    from vectordb.validation import to_matrix  # noqa: PLC0415

    for bad, message in (([1.0, True, 3.0], "element 1 is bool"), ([1.0, 2.0, "3"], "element 2 is str"),
                         ([1.0, None, 3.0], "element 1 is NoneType")):
        with pytest.raises(InvalidArgumentError, match=message):
            to_matrix([bad], "query_embeddings")
    got = to_matrix([[1, 2.5, np.float32(3), np.int64(4)]], "query_embeddings")
    assert got.dtype == np.float32 and got.tolist() == [[1.0, 2.5, 3.0, 4.0]]
