"""Where chromadb is installed: the same operations against chromadb.EphemeralClient and vectordb
give the same answers (README's deliberate differences aside; chromadb is the referee).

Collections are kept small (< 100 records, small n_results) so chromadb's HNSW index is exact and
distances can be compared with rtol 1e-4.

The chromadb side is chromadb.EphemeralClient(): a PersistentClient holds about six file
descriptors per collection open for good, and this suite makes hundreds of collections (one per
test and vectordb client). chromadb's EphemeralClient is ONE system per process, shared with other
test modules (with the default settings they use; so no allow_reset/reset() here), and:
- chromadb 1.5.9 leaks the array-valued metadata of a deleted collection into records of
  collections created later (reproduced: add {"tags": ["t1"]} to "first", delete "first", create
  "second", add {"x": 2} -> get() returns {"x": 2, "tags": ["t1"]}). So collections here get unique
  names and are never deleted, except in the one test about deletion, which stores no arrays.
"""
from __future__ import annotations

import uuid

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb")
import chromadb.errors  # noqa: E402, F811

import vectordb  # noqa: E402
from vectordb.errors import DuplicateIDError, InvalidArgumentError, InvalidDimensionError  # noqa: E402

SPACES = ["l2", "ip", "cosine"]
# What chromadb raises for bad input: its Python-side checks raise ValueError (sometimes TypeError,
# OverflowError or IndexError), its Rust-side validation raises chromadb.errors.InvalidArgumentError /
# DuplicateIDError / NotFoundError, which derive from ChromaError, NOT from ValueError. Ours are
# always ValueError subclasses, so `except ValueError` catches every vectordb input error.
CHROMA_REJECTS = (ValueError, TypeError, OverflowError, IndexError, chromadb.errors.ChromaError)


@pytest.fixture(scope="module")
def chroma_client():
    return chromadb.EphemeralClient()


@pytest.fixture(params=["persistent", "ephemeral", "http"])
def ours_client(request, tmp_path):
    """Each of vectordb's three clients in turn (http: the session's server on loopback)."""
    if request.param == "persistent":
        c = vectordb.PersistentClient(tmp_path / "db")
    elif request.param == "ephemeral":
        c = vectordb.EphemeralClient()
    else:
        c = request.getfixturevalue("http_server").ensure()
    yield c
    if request.param == "http":
        for col in c.list_collections():
            c.delete_collection(col.name)
    c.close()


@pytest.fixture
def pair(chroma_client, ours_client):
    """make(space) -> (our collection, chromadb collection), both empty, same space."""
    made = []

    def make(space="l2", metadata=None):
        md = dict(metadata or {}, **{"hnsw:space": space})
        name = f"compat-{uuid.uuid4().hex[:12]}"
        theirs = chroma_client.create_collection(name, metadata=md, embedding_function=None)
        made.append(name)
        return ours_client.create_collection(name, metadata=md), theirs

    yield make  # chromadb collections stay (see the module docstring)


def both(cols, method, **kwargs):
    """Calls the method on both collections; returns (ours, theirs)."""
    ours, theirs = cols
    return getattr(ours, method)(**kwargs), getattr(theirs, method)(**kwargs)


def assert_same_get(a: dict, b: dict, check_embeddings: bool = True) -> None:
    assert a["ids"] == b["ids"]
    assert a["metadatas"] == b["metadatas"]
    assert a["documents"] == b["documents"]
    if check_embeddings and b.get("embeddings") is not None:
        if len(b["ids"]) == 0:  # chromadb gives shape (0,), ours (0, dim)
            assert len(a["embeddings"]) == 0
        else:
            assert a["embeddings"].shape == np.asarray(b["embeddings"]).shape
            # chromadb's cosine space returns vectors changed in the last bit (normalized and back);
            # ours returns them exactly as added (test_api checks that)
            np.testing.assert_allclose(a["embeddings"], np.asarray(b["embeddings"]), rtol=1e-6, atol=1e-7)


def assert_same_query(a: dict, b: dict) -> None:
    assert len(a["ids"]) == len(b["ids"])
    for qi in range(len(a["ids"])):
        np.testing.assert_allclose(a["distances"][qi], b["distances"][qi], rtol=1e-4, atol=1e-5)
        # ids must agree except where two distances tie (within tolerance): then either order is right
        da = np.asarray(a["distances"][qi])
        for j, (x, y) in enumerate(zip(a["ids"][qi], b["ids"][qi])):
            if x != y:
                near = np.isclose(da, da[j], rtol=1e-4, atol=1e-5)
                assert near.sum() > 1, f"query {qi} rank {j}: ours {x}, chromadb {y} (no tie)"
        assert sorted(a["ids"][qi]) == sorted(b["ids"][qi]) or np.isclose(da[-1], b["distances"][qi][-1])


def fill(cols, n=40, d=6, seed=0, docs=True, metas=True):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, d)).astype(np.float32)
    kwargs = dict(ids=[f"id{i}" for i in range(n)], embeddings=data)
    if docs:
        kwargs["documents"] = [f"document {i}" if i % 5 else None for i in range(n)]
    if metas:
        kwargs["metadatas"] = [
            {"i": i, "even": i % 2 == 0, "name": f"n{i}", "score": i / 4, "tags": [f"t{i % 3}", "all"]}
            if i % 7 else None
            for i in range(n)
        ]
    both(cols, "add", **kwargs)
    return data, rng


# ------------------------------------------------------------------------------------- reads

def test_get_matches(pair):
    cols = pair()
    fill(cols)
    a, b = both(cols, "get", include=["embeddings", "metadatas", "documents"])
    assert_same_get(a, b)
    assert a["embeddings"].dtype == np.float32
    for kwargs in [dict(), dict(limit=5), dict(offset=37), dict(limit=4, offset=10), dict(limit=0),
                   dict(offset=100), dict(where={"even": True}), dict(where={"i": {"$gte": 30}}, limit=3)]:
        a, b = both(cols, "get", **kwargs)
        assert_same_get(a, b)
    a, b = both(cols, "count")
    assert a == b == 40


def test_get_by_ids_matches_as_sets(pair):
    """ours (documented deviation): get(ids=[...]) keeps the order asked, chromadb uses insertion
    order. Asked in insertion order the answers are identical; otherwise the same records."""
    cols = pair()
    fill(cols)
    a, b = both(cols, "get", ids=["id3", "id9", "missing", "id20"], include=["embeddings", "metadatas", "documents"])
    assert_same_get(a, b)
    a, b = both(cols, "get", ids=["id20", "id3", "id9"])
    assert a["ids"] == ["id20", "id3", "id9"]
    assert b["ids"] == ["id3", "id9", "id20"]
    assert dict(zip(a["ids"], a["metadatas"])) == dict(zip(b["ids"], b["metadatas"]))


def test_peek_matches(pair):
    cols = pair()
    fill(cols)
    a, b = both(cols, "peek", limit=7)
    assert_same_get(a, b)


@pytest.mark.parametrize("space", SPACES)
def test_query_matches(pair, space):
    cols = pair(space)
    data, rng = fill(cols, n=60, d=8, seed=SPACES.index(space))
    q = rng.standard_normal((5, 8)).astype(np.float32)
    for k in [1, 3, 10]:
        a, b = both(cols, "query", query_embeddings=q, n_results=k,
                    include=["metadatas", "documents", "distances", "embeddings"])
        assert_same_query(a, b)
        assert a["ids"] == b["ids"]  # random data: no ties
        assert a["metadatas"] == b["metadatas"] and a["documents"] == b["documents"]
        for ea, eb in zip(a["embeddings"], b["embeddings"]):
            # chromadb's cosine index round-trips vectors through normalization (last-bit changes)
            np.testing.assert_allclose(ea, np.asarray(eb), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("space", SPACES)
def test_query_with_where_matches(pair, space):
    cols = pair(space)
    data, rng = fill(cols, n=50, d=5, seed=9)
    q = rng.standard_normal((3, 5)).astype(np.float32)
    for where in [{"even": True}, {"i": {"$lt": 10}}, {"tags": {"$contains": "t1"}}, {"name": "nope"}]:
        a, b = both(cols, "query", query_embeddings=q, n_results=4, where=where)
        assert_same_query(a, b)
        assert a["ids"] == b["ids"]


def test_query_edge_cases_match(pair):
    cols = pair()
    a, b = both(cols, "query", query_embeddings=[[1.0, 2.0, 3.0]], n_results=3)
    assert a["ids"] == b["ids"] == [[]]
    assert a["distances"] == b["distances"] == [[]]
    assert a["metadatas"] == b["metadatas"] and a["documents"] == b["documents"]
    both(cols, "add", ids=["x", "y"], embeddings=[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    a, b = both(cols, "query", query_embeddings=[[1.0, 2.0, 2.0]], n_results=50)  # n_results > count
    assert a["ids"] == b["ids"] == [["x", "y"]]
    assert_same_query(a, b)
    a, b = both(cols, "query", query_embeddings=[[1.0, 2.0, 2.0]], n_results=1, include=[])
    assert a["ids"] == b["ids"]
    for key in ["embeddings", "metadatas", "documents", "distances", "uris", "data"]:
        assert a[key] is None and b[key] is None, key


def test_result_keys_match(pair):
    cols = pair()
    fill(cols, n=5)
    a, b = both(cols, "get")
    assert set(a) == set(b)
    assert sorted(a["included"]) == sorted(b["included"])
    a, b = both(cols, "query", query_embeddings=np.zeros((2, 6)), n_results=2)
    assert set(a) == set(b)
    assert sorted(a["included"]) == sorted(b["included"])
    a, b = both(cols, "get", include=["embeddings"])
    assert set(a) == set(b)
    assert a["metadatas"] is None and b["metadatas"] is None


# ------------------------------------------------------------------------------------ writes

def test_write_semantics_match(pair):
    cols = pair()
    both(cols, "add", ids=["a", "b", "c"], embeddings=[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
         metadatas=[{"x": 1, "y": "s"}, {"x": 2}, None], documents=["da", "db", None])
    # add of an existing id: skipped (ours also logs a warning)
    both(cols, "add", ids=["a", "d"], embeddings=[[9.0, 9.0], [7.0, 8.0]], metadatas=[{"x": 99}, {"x": 4}])
    # update: merge, None deletes a key, unknown ids ignored, None entries keep fields
    both(cols, "update", ids=["a", "zzz", "c"], metadatas=[{"x": None, "z": True}, {"q": 1}, {"new": [1, 2]}])
    both(cols, "update", ids=["b"], documents=["db2"], embeddings=[[3.5, 4.5]])
    # (chromadb rejects a None document in update, and embeds documents given without embeddings
    # with its default embedding function: documents always come with embeddings here)
    both(cols, "update", ids=["b", "d"], metadatas=[None, {"x": 5}])
    both(cols, "update", ids=["d"], documents=["dd"], embeddings=[[7.0, 8.0]])
    # upsert: existing merged, new added
    both(cols, "upsert", ids=["c", "e"], embeddings=[[0.0, 1.0], [1.0, 0.0]],
         metadatas=[{"new": None, "k": "v"}, {"k": "e", "gone": None}], documents=[None, "de"])
    # every key deleted -> None
    both(cols, "update", ids=["d"], metadatas=[{"x": None}])
    a, b = both(cols, "get", include=["embeddings", "metadatas", "documents"])
    assert_same_get(a, b)
    assert a["metadatas"][3] is None
    # delete + re-add moves the id to the end in both
    both(cols, "delete", ids=["b"])
    both(cols, "add", ids=["b"], embeddings=[[1.0, 1.0]])
    a, b = both(cols, "get", include=["embeddings", "metadatas", "documents"])
    assert_same_get(a, b)
    a, b = both(cols, "count")
    assert a == b == 5


def test_delete_matches(pair):
    cols = pair()
    fill(cols, n=30)
    ra, rb = both(cols, "delete", ids=["id1", "id2"])
    assert ra == rb == {"deleted": 2}
    both(cols, "delete", where={"even": True})
    a, b = both(cols, "get")
    assert_same_get(a, b)
    # Not compared: the count for ids that do not exist. chromadb 1.5 reports the number of ids
    # asked for ({"deleted": 1} for an unknown id); ours reports what was actually deleted.
    ra, rb = both(cols, "delete", ids=["unknown"])
    assert ra == {"deleted": 0}
    a, b = both(cols, "get")
    assert_same_get(a, b)


@pytest.mark.parametrize("seed", range(4))
def test_random_operation_sequences_match(pair, seed):
    """A random sequence of writes applied to both; after each, get() agrees; at the end, queries."""
    space = SPACES[seed % 3]
    cols = pair(space)
    rng = np.random.default_rng(100 + seed)
    pool = [f"r{i}" for i in range(15)]
    existing: set = set()

    def vecs(n):
        return (rng.integers(-4, 5, size=(n, 4)) + rng.random((n, 4)) * 0.5 + 0.1).astype(np.float32)

    def meta(allow_none):
        if rng.random() < 0.3:
            return None
        m = {}
        for k in rng.choice(["a", "b", "c"], size=rng.integers(1, 3), replace=False):
            r = rng.random()
            m[str(k)] = (None if allow_none and r < 0.2 else int(rng.integers(0, 5)) if r < 0.5
                         else f"s{int(rng.integers(0, 3))}" if r < 0.8 else bool(rng.random() < 0.5))
        return m

    for step in range(40):
        op = rng.choice(["add", "upsert", "update", "delete"], p=[0.35, 0.25, 0.25, 0.15])
        ids = list(rng.choice(pool, size=rng.integers(1, 5), replace=False))
        n = len(ids)
        if op == "delete":
            both(cols, "delete", ids=ids)
            existing -= set(ids)
        else:
            allow_none = op != "add"
            kwargs = dict(ids=ids)
            if op != "update" or rng.random() < 0.5:
                kwargs["embeddings"] = vecs(n)
            if rng.random() < 0.7:
                metas = [meta(allow_none) for _ in range(n)]
                if op != "add" or any(m is not None for m in metas):
                    kwargs["metadatas"] = metas
            if rng.random() < 0.5:
                # chromadb embeds documents given without embeddings (its default embedding function)
                # and rejects None documents in update: documents come with embeddings, None only in add
                kwargs["embeddings"] = kwargs.get("embeddings", vecs(n))
                kwargs["documents"] = [f"doc {step} {i}" if op == "update" or rng.random() < 0.8 else None
                                       for i in ids]
            if op == "upsert" and "metadatas" in kwargs:
                # chromadb rejects a None value in the metadata of a NEW record in upsert;
                # keep None values for ids that exist (where they delete a key).
                kwargs["metadatas"] = [
                    m if (m is None or i in existing) else {k: v for k, v in m.items() if v is not None} or None
                    for i, m in zip(ids, kwargs["metadatas"])
                ]
            both(cols, op, **kwargs)
            if op in ("add", "upsert"):
                existing |= set(ids)
        a, b = both(cols, "get", include=["embeddings", "metadatas", "documents"])
        assert_same_get(a, b)
    if existing:
        q = vecs(4)
        a, b = both(cols, "query", query_embeddings=q, n_results=5)
        assert_same_query(a, b)


def test_collection_level_behaviour_matches(chroma_client, ours_client):
    ours = ours_client
    name = f"coll-{uuid.uuid4().hex[:10]}"
    try:
        for c in (ours, chroma_client):
            col = c.get_or_create_collection(name, metadata={"v": 1})
            again = c.get_or_create_collection(name, metadata={"v": 2})
            assert again.id == col.id and again.metadata == {"v": 1}
            with pytest.raises(CHROMA_REJECTS):
                c.create_collection(name)  # ours CollectionExistsError; chromadb InternalError
            with pytest.raises(CHROMA_REJECTS):
                c.get_collection(name + "-missing")  # NotFoundError in both
            col.modify(metadata={"v": 3})
            assert c.get_collection(name).metadata == {"v": 3}
            col.modify(name=name + "-renamed")
            assert c.get_collection(name + "-renamed").id == col.id
            c.delete_collection(name + "-renamed")
            with pytest.raises(CHROMA_REJECTS):
                c.get_collection(name + "-renamed")
    finally:
        for n in (name, name + "-renamed"):
            try:
                chroma_client.delete_collection(n)
            except Exception:
                pass


@pytest.mark.parametrize("name", ["..", "a", "ab", "x" * 513, "192.168.0.1", "/", "a..b", "-ab", "ab-", "a b"])
def test_invalid_names_rejected_by_both(chroma_client, name):
    ours = vectordb.EphemeralClient()
    with pytest.raises(InvalidArgumentError):
        ours.create_collection(name)
    with pytest.raises(CHROMA_REJECTS):
        chroma_client.create_collection(name)
    ours.close()


@pytest.mark.parametrize("name", ["abc", "x" * 512, "999.999.999.999", "01.2.3.4", "a_b-c.d"])
def test_valid_names_accepted_by_both(chroma_client, name):
    ours = vectordb.EphemeralClient()
    try:
        assert ours.create_collection(name).name == name
        assert chroma_client.get_or_create_collection(name).name == name
    finally:
        ours.close()


# ---------------------------------------------------------------------------------- bad input

NAN, INF = float("nan"), float("inf")
B = [[1.0, 2.0, 3.0]]
# (case, kwargs, our class). chromadb must reject too (any of CHROMA_REJECTS) and change nothing.
BAD_WRITES = [
    ("nan", dict(ids=["z"], embeddings=[[1.0, NAN, 3.0]]), InvalidArgumentError),
    ("inf", dict(ids=["z"], embeddings=[[1.0, INF, 3.0]]), InvalidArgumentError),
    ("wrong-dim", dict(ids=["z"], embeddings=[[1.0, 2.0, 3.0, 4.0]]), InvalidDimensionError),
    ("mixed-dim", dict(ids=["y", "z"], embeddings=[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]), InvalidArgumentError),
    # chromadb: IndexError (an unguarded index); ours: InvalidArgumentError "must not be empty vectors"
    ("empty-vector", dict(ids=["z"], embeddings=[[]]), InvalidArgumentError),
    ("bool-ndarray", dict(ids=["z"], embeddings=np.array([[True, False, True]])), InvalidArgumentError),
    ("bool-list", dict(ids=["z"], embeddings=[[True, False, True]]), InvalidArgumentError),
    ("too-few-embeddings", dict(ids=["y", "z"], embeddings=B), InvalidArgumentError),
    ("too-few-metadatas", dict(ids=["y", "z"], embeddings=B * 2, metadatas=[{"k": 1}]), InvalidArgumentError),
    ("too-many-documents", dict(ids=["z"], embeddings=B, documents=["x", "y"]), InvalidArgumentError),
    ("empty-ids", dict(ids=[], embeddings=[]), InvalidArgumentError),
    ("duplicate-ids", dict(ids=["d", "o", "d"], embeddings=B * 3), DuplicateIDError),
    ("int-id", dict(ids=[1], embeddings=B), InvalidArgumentError),
    ("none-id", dict(ids=[None], embeddings=B), InvalidArgumentError),
    ("empty-str-id", dict(ids=[""], embeddings=B), InvalidArgumentError),
    ("meta-empty-dict", dict(ids=["z"], embeddings=B, metadatas=[{}]), InvalidArgumentError),
    ("meta-nested", dict(ids=["z"], embeddings=B, metadatas=[{"a": {"b": 1}}]), InvalidArgumentError),
    ("meta-empty-list", dict(ids=["z"], embeddings=B, metadatas=[{"a": []}]), InvalidArgumentError),
    ("meta-mixed-list", dict(ids=["z"], embeddings=B, metadatas=[{"a": [1, "x"]}]), InvalidArgumentError),
    ("meta-int-float-list", dict(ids=["z"], embeddings=B, metadatas=[{"a": [1, 2.5]}]), InvalidArgumentError),
    ("meta-dollar-key", dict(ids=["z"], embeddings=B, metadatas=[{"$a": 1}]), InvalidArgumentError),
    ("meta-hash-key", dict(ids=["z"], embeddings=B, metadatas=[{"#a": 1}]), InvalidArgumentError),
    ("meta-int-key", dict(ids=["z"], embeddings=B, metadatas=[{1: 1}]), InvalidArgumentError),  # chromadb: TypeError
    ("meta-empty-key", dict(ids=["z"], embeddings=B, metadatas=[{"": 1}]), InvalidArgumentError),
    ("document-int", dict(ids=["z"], embeddings=B, documents=[3]), InvalidArgumentError),
]
# Where we reject and chromadb accepts (not compared above; each follows the reference):
# - a NaN metadata value, and an int metadata value beyond 64 bits: chromadb stores them; the
#   reference allows "int (64-bit)" and finite numbers only (a NaN would make filters undefined).
# - NaN/inf in query embeddings: chromadb answers the query; we reject them like written ones.
WE_ALSO_REJECT = [
    ("meta-nan", dict(ids=["z"], embeddings=B, metadatas=[{"a": NAN}])),
    ("meta-int-beyond-64-bits", dict(ids=["z"], embeddings=B, metadatas=[{"a": 2**64}])),
]


@pytest.mark.parametrize("method", ["add", "upsert", "update"])
@pytest.mark.parametrize("case", BAD_WRITES, ids=[c[0] for c in BAD_WRITES])
def test_bad_writes_rejected_by_both(pair, method, case):
    _, kwargs, ours_cls = case
    ours, theirs = cols = pair()
    both(cols, "add", ids=["a", "b", "c"], embeddings=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
         metadatas=[{"k": 1}, None, {"k": 3}], documents=["x", None, "z"])
    before = both(cols, "get", include=["embeddings", "metadatas", "documents"])
    with pytest.raises(ours_cls) as ei:
        getattr(ours, method)(**kwargs)
    assert isinstance(ei.value, ValueError)
    with pytest.raises(CHROMA_REJECTS):
        getattr(theirs, method)(**kwargs)
    after = both(cols, "get", include=["embeddings", "metadatas", "documents"])
    assert_same_get(after[0], before[0])
    assert_same_get(after[1], before[1])


@pytest.mark.parametrize("case", WE_ALSO_REJECT, ids=[c[0] for c in WE_ALSO_REJECT])
def test_documented_stricter_than_chromadb(pair, case):
    _, kwargs = case
    ours, theirs = pair()
    ours.add(ids=["a"], embeddings=B)
    with pytest.raises(InvalidArgumentError):
        ours.add(**kwargs)
    assert ours.count() == 1
    theirs.add(ids=["a"], embeddings=B)
    theirs.add(**kwargs)  # if chromadb starts rejecting these, the comment above can go
    assert theirs.count() == 2


def test_duplicate_message_names_the_duplicates_in_both(pair):
    ours, theirs = pair()
    for col in (ours, theirs):
        with pytest.raises(CHROMA_REJECTS) as ei:
            col.add(ids=["dup-x", "other", "dup-x"], embeddings=B * 3)
        assert "dup-x" in str(ei.value) and "other" not in str(ei.value)


def test_dimension_message_matches(pair):
    ours, theirs = pair()
    for col in (ours, theirs):
        col.add(ids=["a"], embeddings=B)
        with pytest.raises(CHROMA_REJECTS, match="expecting embedding with dimension of 3, got 4"):
            col.add(ids=["b"], embeddings=[[1.0, 2.0, 3.0, 4.0]])
        with pytest.raises(CHROMA_REJECTS, match="expecting embedding with dimension of 3, got 2"):
            col.query(query_embeddings=[[1.0, 2.0]])


BAD_READS = [
    # chromadb raises TypeError for n_results <= 0; ours InvalidArgumentError (a ValueError)
    ("n_results-0", "query", dict(query_embeddings=B, n_results=0)),
    ("n_results-negative", "query", dict(query_embeddings=B, n_results=-1)),
    ("n_results-float", "query", dict(query_embeddings=B, n_results=1.5)),
    ("query-include-unknown", "query", dict(query_embeddings=B, include=["foo"])),
    ("query-wrong-dim", "query", dict(query_embeddings=[[1.0, 2.0]])),
    ("get-include-distances", "get", dict(include=["distances"])),
    ("get-include-unknown", "get", dict(include=["foo"])),
    # chromadb raises OverflowError for a negative limit/offset
    ("get-limit-negative", "get", dict(limit=-1)),
    ("get-offset-negative", "get", dict(offset=-1)),
    ("get-empty-ids", "get", dict(ids=[])),
    ("delete-empty-ids", "delete", dict(ids=[])),
    ("delete-nothing", "delete", dict()),
]


@pytest.mark.parametrize("case", BAD_READS, ids=[c[0] for c in BAD_READS])
def test_bad_reads_rejected_by_both(pair, case):
    _, method, kwargs = case
    ours, theirs = cols = pair()
    both(cols, "add", ids=["a", "b"], embeddings=B * 2)
    with pytest.raises(ValueError):
        getattr(ours, method)(**kwargs)
    with pytest.raises(CHROMA_REJECTS):
        getattr(theirs, method)(**kwargs)
    a, b = both(cols, "count")
    assert a == b == 2


def test_space_change_rejected_by_both(pair):
    ours, theirs = pair("cosine")
    for col in (ours, theirs):
        with pytest.raises(CHROMA_REJECTS):
            col.modify(metadata={"hnsw:space": "l2"})


@pytest.mark.filterwarnings("ignore:space euclid is not supported:UserWarning")
def test_collection_metadata_validation_matches(chroma_client):
    ours = vectordb.EphemeralClient()
    try:
        for md in [{}, {"a": {"b": 1}}, {"$a": 1}, {"hnsw:space": "euclid"}]:
            with pytest.raises(ValueError):
                ours.create_collection("metacheck", metadata=md)
            with pytest.raises(CHROMA_REJECTS):
                chroma_client.create_collection(f"m-{uuid.uuid4().hex[:8]}", metadata=md)
    finally:
        ours.close()


# ------------------------------------------------------------------------ drop-in features

@pytest.mark.parametrize("space", SPACES)
def test_query_restricted_to_ids_matches(pair, space):
    cols = pair(space)
    data, rng = fill(cols)
    q = rng.standard_normal((3, 6)).astype(np.float32)
    some = [f"id{i}" for i in range(0, 40, 3)]
    assert_same_query(*both(cols, "query", query_embeddings=q, ids=some, n_results=4))
    # Documented difference: an unknown id fails chromadb's query (InternalError "Error finding
    # id"); vectordb leaves it out, as get(ids=...) does in both.
    ours, theirs = cols
    with pytest.raises(chromadb.errors.ChromaError):
        theirs.query(query_embeddings=q, ids=some + ["missing"], n_results=4)
    assert_same_query(ours.query(query_embeddings=q, ids=some + ["missing"], n_results=4),
                      theirs.query(query_embeddings=q, ids=some, n_results=4))
    assert_same_query(*both(cols, "query", query_embeddings=q, ids=some, n_results=20, where={"even": True}))


def test_uris_match(pair):
    cols = pair("l2")
    both(cols, "add", ids=["a", "b", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
         uris=["s3://a", None, "s3://c"], metadatas=[{"k": 1}, {"k": 2}, {"k": 3}])
    a, b = both(cols, "get", include=["uris", "metadatas"])
    assert a["uris"] == b["uris"] and a["metadatas"] == b["metadatas"]
    a, b = both(cols, "query", query_embeddings=[[1.0, 0.0]], n_results=2, include=["uris"])
    assert a["uris"] == b["uris"]
    a, b = both(cols, "get", where={"chroma:uri": "s3://c"})
    assert a["ids"] == b["ids"] == ["c"]
    both(cols, "update", ids=["a"], metadatas=[{"k": 9}])
    both(cols, "upsert", ids=["b"], embeddings=[[0.0, 2.0]], uris=["s3://b"])
    a, b = both(cols, "get", include=["uris", "metadatas"])
    assert a["uris"] == b["uris"] and a["metadatas"] == b["metadatas"]


def test_configuration_and_client_methods_match(chroma_client, ours_client):
    name = f"cfg-{uuid.uuid4().hex[:10]}"
    before = ours_client.count_collections(), chroma_client.count_collections()
    for c in (ours_client, chroma_client):
        assert isinstance(c.heartbeat(), int)
        assert isinstance(c.get_version(), str) and c.get_max_batch_size() > 0
        cos = c.create_collection(name, metadata={"hnsw:space": "cosine"})
        ip = c.create_collection(name + "-ip", configuration={"hnsw": {"space": "ip", "ef_construction": 200}})
        assert cos.configuration["hnsw"]["space"] == "cosine"
        assert ip.configuration["hnsw"]["space"] == "ip" and ip.configuration["hnsw"]["ef_construction"] == 200
        assert ip.metadata is None and cos.metadata == {"hnsw:space": "cosine"}
        assert {name, name + "-ip"} <= {x.name for x in c.list_collections()}
    ours_cfg = ours_client.get_collection(name).configuration
    theirs_cfg = chroma_client.get_collection(name).configuration
    assert ours_cfg["hnsw"] == theirs_cfg["hnsw"] and ours_cfg["spann"] == theirs_cfg["spann"]
    assert ours_client.count_collections() - before[0] == chroma_client.count_collections() - before[1] == 2
