"""Model-based test: a hypothesis state machine drives a collection through
add / upsert / update / delete / get / query / count (and, for PersistentClient, checkpoint and
reopen: close the client, open a new one on the same path) and compares every answer with a plain
Python/NumPy model: an ordered dict id -> (float32 vector, metadata, document) and brute-force
float64 distances. Rejected writes (NaN, wrong dimension, duplicate ids, bad metadata) must change
nothing. Zero mismatches allowed.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from typing import Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from reference import ref_distances

import vectordb

DIM = 3
ID_POOL = [f"id{i}" for i in range(12)] + ["ünï", "a b", "x" * 40]
SPACES = ["l2", "ip", "cosine"]

coord = st.one_of(
    st.integers(-3, 3).map(float),  # small integers: many exact ties
    st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32),
)
vector = st.lists(coord, min_size=DIM, max_size=DIM).filter(lambda v: any(x != 0 for x in v))
scalar = st.one_of(
    st.integers(-5, 5), st.integers(-(2**63), 2**63 - 1), st.booleans(),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), st.text(max_size=4),
)
meta_value = st.one_of(scalar, st.lists(st.integers(-3, 3), min_size=1, max_size=3),
                       st.lists(st.text(max_size=2), min_size=1, max_size=2))
META_KEYS = ["a", "b", "c", "ünï"]
metadata_add = st.one_of(st.none(), st.dictionaries(st.sampled_from(META_KEYS), meta_value, min_size=1, max_size=3))
# in update/upsert a None value deletes the key
metadata_upd = st.one_of(st.none(), st.dictionaries(st.sampled_from(META_KEYS), st.one_of(st.none(), meta_value),
                                                    min_size=1, max_size=3))
document = st.one_of(st.none(), st.text(max_size=6))
id_batch = st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=5, unique=True)


def merge(old: Optional[dict], new: Optional[dict]) -> Optional[dict]:
    """update/upsert metadata: keys merged, a None value deletes the key; no keys left = None."""
    if new is None:
        return old
    out = dict(old or {})
    for k, v in new.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out or None


def strip_none(m: Optional[dict]) -> Optional[dict]:
    if m is None:
        return None
    out = {k: v for k, v in m.items() if v is not None}
    return out or None


def same_value(a, b) -> bool:
    """Metadata equality that also tells bool from int and int from float."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same_value, a, b))
    return type(a) is type(b) and a == b


def same_meta(a: Optional[dict], b: Optional[dict]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)


class CollectionMachine(RuleBasedStateMachine):
    persistent = False

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="vdb-model-") if self.persistent else None
        self.client = self._open()
        self.col = None
        self.space = "l2"
        self.model: "OrderedDict[str, tuple]" = OrderedDict()  # id -> (vector f32, metadata, document)
        self.dim_fixed = False
        self.batch_depth = 0  # batch mode levels entered and not left

    def _open(self):
        if self.persistent:
            return vectordb.PersistentClient(self.tmp)
        return vectordb.EphemeralClient()

    def teardown(self):
        try:
            self.client.close()
        finally:
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(space=st.sampled_from(SPACES))
    def create(self, space):
        self.space = space
        # No embedding function: document-only updates keep the vectors, as the model expects.
        self.col = self.client.create_collection("model", metadata={"hnsw:space": space}, embedding_function=None)

    # ---- writes -------------------------------------------------------------------------------
    @rule(ids=id_batch, data=st.data())
    def add(self, ids, data):
        n = len(ids)
        vecs = data.draw(st.lists(vector, min_size=n, max_size=n))
        metas = data.draw(st.one_of(st.none(), st.lists(metadata_add, min_size=n, max_size=n)))
        docs = data.draw(st.one_of(st.none(), st.lists(document, min_size=n, max_size=n)))
        as_array = data.draw(st.booleans())
        self.col.add(ids=ids, embeddings=np.array(vecs, dtype=np.float64) if as_array else vecs,
                     metadatas=metas, documents=docs)
        for i, rid in enumerate(ids):
            if rid in self.model:
                continue  # add of an existing id is skipped
            self.model[rid] = (np.array(vecs[i], dtype=np.float32), metas[i] if metas else None,
                               docs[i] if docs else None)
        self.dim_fixed = True

    @rule(ids=id_batch, data=st.data())
    def upsert(self, ids, data):
        n = len(ids)
        all_exist = all(i in self.model for i in ids)
        with_vectors = not all_exist or data.draw(st.booleans())
        vecs = data.draw(st.lists(vector, min_size=n, max_size=n)) if with_vectors else None
        metas = data.draw(st.one_of(st.none(), st.lists(metadata_upd, min_size=n, max_size=n)))
        docs = data.draw(st.one_of(st.none(), st.lists(document, min_size=n, max_size=n)))
        self.col.upsert(ids=ids, embeddings=vecs, metadatas=metas, documents=docs)
        for i, rid in enumerate(ids):
            m = metas[i] if metas else None
            d = docs[i] if docs else None
            if rid in self.model:
                v, om, od = self.model[rid]
                self.model[rid] = (np.array(vecs[i], dtype=np.float32) if vecs else v, merge(om, m),
                                   d if d is not None else od)
            else:
                self.model[rid] = (np.array(vecs[i], dtype=np.float32), strip_none(m), d)
        self.dim_fixed = True

    @precondition(lambda self: self.dim_fixed)
    @rule(ids=id_batch, data=st.data())
    def update(self, ids, data):
        n = len(ids)
        vecs = data.draw(st.one_of(st.none(), st.lists(vector, min_size=n, max_size=n)))
        metas = data.draw(st.one_of(st.none(), st.lists(metadata_upd, min_size=n, max_size=n)))
        docs = data.draw(st.one_of(st.none(), st.lists(document, min_size=n, max_size=n)))
        self.col.update(ids=ids, embeddings=vecs, metadatas=metas, documents=docs)
        for i, rid in enumerate(ids):
            if rid not in self.model:
                continue  # update of an unknown id is ignored
            v, om, od = self.model[rid]
            d = docs[i] if docs else None
            self.model[rid] = (np.array(vecs[i], dtype=np.float32) if vecs else v,
                               merge(om, metas[i] if metas else None), d if d is not None else od)

    @rule(ids=id_batch)
    def delete(self, ids):
        expected = sum(1 for i in ids if i in self.model)
        assert self.col.delete(ids=ids) == {"deleted": expected}
        for i in ids:
            self.model.pop(i, None)

    @precondition(lambda self: self.dim_fixed)
    @rule(kind=st.sampled_from(["nan", "inf", "dim", "dup", "meta", "empty-id", "mismatch"]),
          method=st.sampled_from(["add", "upsert", "update"]), ids=id_batch, data=st.data())
    def rejected_write(self, kind, method, ids, data):
        n = len(ids)
        vecs = data.draw(st.lists(vector, min_size=n, max_size=n))
        metas = [None] * n
        bad = data.draw(st.integers(0, n - 1))  # which record is bad: any of them, not only the first
        if kind == "nan":
            vecs[bad] = [vecs[bad][0], float("nan"), vecs[bad][2]]
        elif kind == "inf":
            vecs[bad] = [float("-inf"), vecs[bad][1], vecs[bad][2]]
        elif kind == "dim":
            vecs = [v + [1.0] for v in vecs]
        elif kind == "dup":
            ids = ids + [ids[bad]]
            vecs = vecs + [vecs[bad]]
            metas = metas + [None]
        elif kind == "meta":
            metas[bad] = data.draw(st.sampled_from([{}, {"$x": 1}, {"a": {"b": 1}}, {"a": []}, {"a": [1, "x"]}]))
        elif kind == "empty-id":
            ids = list(ids)
            ids[bad] = ""
        elif kind == "mismatch":
            vecs = vecs + [vecs[0]]
        before = self._observed()
        with pytest.raises(ValueError):
            getattr(self.col, method)(ids=ids, embeddings=vecs, metadatas=metas)
        assert self._observed() == before

    # ---- persistence --------------------------------------------------------------------------
    @precondition(lambda self: self.persistent)
    @rule()
    def reopen(self):
        self.client.close()  # closing makes an open batch's writes durable, as leaving it would
        self.batch_depth = 0
        self.client = self._open()
        self.col = self.client.get_collection("model", embedding_function=None)

    @precondition(lambda self: self.persistent)
    @rule()
    def checkpoint(self):
        self.col.checkpoint()

    # Batch mode changes when writes reach the disk (a group in the log, or a checkpoint), never what
    # is read: the model ignores it.
    @precondition(lambda self: self.col is not None and self.batch_depth < 2)
    @rule()
    def begin_batch(self):
        self.col.begin_batch()
        self.batch_depth += 1

    @precondition(lambda self: self.batch_depth > 0)
    @rule()
    def end_batch(self):
        self.col.end_batch()
        self.batch_depth -= 1

    @precondition(lambda self: self.persistent)
    @rule(ids=id_batch, more=id_batch, data=st.data())
    def batch_then_reopen(self, ids, more, data):
        """Several writes in one batch, read back from what its end wrote."""
        self.begin_batch()
        self.add(ids, data)
        self.upsert(more, data)
        self.end_batch()
        self.reopen()

    # ---- reads --------------------------------------------------------------------------------
    def _observed(self):
        r = self.col.get(include=["embeddings", "metadatas", "documents"])
        return (r["ids"], np.asarray(r["embeddings"]).tolist(), repr(r["metadatas"]), r["documents"])

    def _check_records(self, r, expected_ids):
        assert r["ids"] == expected_ids
        for j, rid in enumerate(expected_ids):
            v, m, d = self.model[rid]
            assert np.array_equal(r["embeddings"][j], v), (rid, r["embeddings"][j], v)
            assert same_meta(r["metadatas"][j], m), (rid, r["metadatas"][j], m)
            assert r["documents"][j] == d, (rid, r["documents"][j], d)

    @rule()
    def get_all(self):
        r = self.col.get(include=["embeddings", "metadatas", "documents"])
        assert isinstance(r["embeddings"], np.ndarray) and r["embeddings"].dtype == np.float32
        self._check_records(r, list(self.model))

    @rule(ids=st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=6, unique=True))
    def get_ids(self, ids):
        r = self.col.get(ids=ids, include=["embeddings", "metadatas", "documents"])
        self._check_records(r, [i for i in ids if i in self.model])  # order asked, unknown left out

    @rule(limit=st.one_of(st.none(), st.integers(0, 15)), offset=st.one_of(st.none(), st.integers(0, 15)))
    def get_page(self, limit, offset):
        r = self.col.get(limit=limit, offset=offset, include=["embeddings", "metadatas", "documents"])
        start = offset or 0
        order = list(self.model)
        self._check_records(r, order[start:] if limit is None else order[start:start + limit])

    @rule(value=st.text(max_size=4))
    def get_where(self, value):
        r = self.col.get(where={"c": value}, include=["embeddings", "metadatas", "documents"])
        want = [i for i, (_, m, _) in self.model.items() if m is not None and same_value(m.get("c"), value)]
        self._check_records(r, want)

    @rule(queries=st.lists(vector, min_size=1, max_size=3), k=st.integers(1, 16), data=st.data())
    def query(self, queries, k, data):
        q = np.array(queries, dtype=np.float32)
        use_filter = data.draw(st.booleans())
        if use_filter:
            value = data.draw(st.text(max_size=4))
            res = self.col.query(query_embeddings=q, n_results=k, where={"c": value},
                                 include=["embeddings", "metadatas", "documents", "distances"])
            ids = [i for i, (_, m, _) in self.model.items() if m is not None and same_value(m.get("c"), value)]
        else:
            res = self.col.query(query_embeddings=q, n_results=k,
                                 include=["embeddings", "metadatas", "documents", "distances"])
            ids = list(self.model)
        assert len(res["ids"]) == len(q)
        if not ids:
            assert res["ids"] == [[]] * len(q) and res["distances"] == [[]] * len(q)
            return
        x = np.stack([self.model[i][0] for i in ids])
        ref = ref_distances(self.space, q, x)
        pos = {rid: j for j, rid in enumerate(ids)}
        for qi in range(len(q)):
            got = res["ids"][qi]
            dist = np.array(res["distances"][qi], dtype=np.float64)
            n = min(k, len(ids))
            assert len(got) == n and len(set(got)) == n
            assert all(dist[j] <= dist[j + 1] + 1e-9 for j in range(n - 1)), dist
            tol = dict(rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(dist, np.sort(ref[qi])[:n], **tol)  # the k smallest, ties in any order
            np.testing.assert_allclose(dist, ref[qi, [pos[i] for i in got]], **tol)
            self._check_records({"ids": got, "embeddings": res["embeddings"][qi], "metadatas": res["metadatas"][qi],
                                 "documents": res["documents"][qi]}, got)

    @invariant()
    def count_matches(self):
        if self.col is not None:
            assert self.col.count() == len(self.model)


MODEL_SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class EphemeralMachine(CollectionMachine):
    persistent = False


class PersistentMachine(CollectionMachine):
    persistent = True


TestEphemeralModel = EphemeralMachine.TestCase
TestEphemeralModel.settings = MODEL_SETTINGS
TestPersistentModel = PersistentMachine.TestCase
TestPersistentModel.settings = MODEL_SETTINGS
