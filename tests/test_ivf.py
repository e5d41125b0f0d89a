"""The IVF index through the public API, on real PersistentClient files.

What a user relies on, checked against float64 NumPy (or a flat collection holding the same data):
recall@10 >= 0.9 at the default n_probe and exactly 1.0 with every list probed, for l2, ip and
cosine; writes after training (add, update, delete) found / not found; the lifecycle (exact search
below max(39 * n_clusters, 1000) vectors, training past it, n_clusters ~ sqrt(count) when not
given, retraining when the collection has doubled, none inside batch mode, rebuild on demand); a
reopened collection answers identically without retraining; determinism; degenerate inputs;
filtered queries; stats(); and a kill -9 variant of tests/test_crash.py for IVF collections.

Data: a 10-dimensional Gaussian bent into d dimensions by sin() (the "lowdim" set of benchmarks/),
the hardest of the synthetic sets for IVF, so the recall thresholds mean something.
"""
from __future__ import annotations

import math
import os
import random
import textwrap

import numpy as np
import pytest
from crash_helpers import kill_writer_at_random

import vectordb
from vectordb.errors import InvalidArgumentError

METRICS = ["l2", "ip", "cosine"]


# ---------------------------------------------------------------------------------------- helpers

def lowdim(seed: int, n: int, d: int) -> np.ndarray:
    """n points on a curved 10-dimensional manifold in d dimensions (float32)."""
    rng = np.random.default_rng(seed)
    proj = rng.random((10, d))
    freq = rng.random(d) * 4.0 + 0.1
    return np.sin((rng.standard_normal((n, 10)) @ proj) * freq).astype(np.float32)


def ref_dist(metric: str, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(nq, n) float64 distances as the engine defines them (cosine of a zero vector: 1)."""
    q = np.asarray(q, dtype=np.float32).astype(np.float64)
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    if metric == "l2":
        return ((q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * q @ x.T).clip(min=0.0)
    if metric == "ip":
        return 1.0 - q @ x.T
    qn = np.linalg.norm(q, axis=1, keepdims=True)
    xn = np.linalg.norm(x, axis=1, keepdims=True)
    qs = np.divide(q, qn, out=np.zeros_like(q), where=qn > 0)
    xs = np.divide(x, xn, out=np.zeros_like(x), where=xn > 0)
    return 1.0 - qs @ xs.T


def exact_ids(metric: str, q: np.ndarray, x: np.ndarray, ids: list, k: int) -> list:
    order = np.argsort(ref_dist(metric, q, x), axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order]


def recall(got: list, want: list) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want)]))


def sid(i: int) -> str:
    return f"id{i}"


def open_client(path) -> vectordb.PersistentClient:
    return vectordb.PersistentClient(str(path))


def add_all(col, x: np.ndarray, start: int = 0, chunk: int | None = None, **kw) -> None:
    chunk = chunk or len(x)
    for s in range(0, len(x), chunk):
        part = x[s:s + chunk]
        col.add(ids=[sid(start + s + j) for j in range(len(part))], embeddings=part, **kw)


def default_n_probe(n_lists: int, quantization: str | None = None) -> int:
    """The documented rule: max(16, ceil(3 sqrt(n_lists))), twice that for pq4, at most n_lists."""
    return min(max(16, math.isqrt(9 * n_lists - 1) + 1) * (2 if quantization == "pq4" else 1), n_lists)


@pytest.fixture
def client(tmp_path):
    c = open_client(tmp_path / "db")
    yield c
    c.close()


# ---------------------------------------------------------------------------------------- recall

@pytest.mark.parametrize("quantization", [None, "sq8", "pq4"])
@pytest.mark.parametrize("metric", METRICS)
def test_recall_at_default_n_probe_and_exact_with_every_list(client, metric, quantization):
    n, d = 6000, 64
    data = lowdim(1, n + 200, d)
    x, q = data[:n], data[n:]
    ids = [sid(i) for i in range(n)]
    col = client.create_collection(f"r-{metric}", metadata={"hnsw:space": metric}, use_ivf=True,
                                   quantization=quantization)
    col.add(ids=ids, embeddings=x)
    st = col.stats()
    assert st["index"] == "ivf" and st["trained"] is True
    assert st["n_clusters"] == round(math.sqrt(n)) == 77
    assert st["n_probe"] == default_n_probe(77, quantization) == (54 if quantization == "pq4" else 27)
    want = exact_ids(metric, q, x, ids, 10)

    res = col.query(query_embeddings=q, n_results=10, include=["distances"])
    r_default = recall(res["ids"], want)
    assert r_default >= 0.97, f"{metric}: recall@10 {r_default:.3f} at the default n_probe"
    r_one = recall(col.query(query_embeddings=q, n_results=10, n_probe=1, include=[])["ids"], want)
    assert r_one < r_default  # the index really is approximate: n_probe matters

    full = col.query(query_embeddings=q, n_results=10, n_probe=77, include=["distances"])
    # every list: exact, but for pq4 codes whose error passed their estimate (see vdb_pq4.h)
    assert recall(full["ids"], want) >= (0.995 if quantization == "pq4" else 1.0)
    # A probe count past the number of lists is the same exact search.
    assert col.query(query_embeddings=q[:20], n_results=10, n_probe=10_000, include=[])["ids"] == full["ids"][:20]
    # Distances are the true ones, ascending.
    ref = ref_dist(metric, q, x)
    index = {s: i for i, s in enumerate(ids)}
    for qi in range(len(q)):
        got = np.array(full["distances"][qi])
        assert np.all(np.diff(got) >= 0)
        np.testing.assert_allclose(got, ref[qi, [index[s] for s in full["ids"][qi]]], rtol=1e-4, atol=1e-4)


def test_exact_search_below_threshold_matches_numpy(client):
    x = lowdim(2, 900, 16)
    q = lowdim(3, 30, 16)
    ids = [sid(i) for i in range(len(x))]
    col = client.create_collection("small", use_ivf=True, n_clusters=10)
    col.add(ids=ids, embeddings=x)
    assert col.stats()["index"] == "flat"
    assert col.query(query_embeddings=q, n_results=10, include=[])["ids"] == exact_ids("l2", q, x, ids, 10)


# ---------------------------------------------------------------------------------------- lifecycle

@pytest.mark.parametrize("n_clusters, threshold", [(30, 1170), (10, 1000), (None, 1521)])
def test_training_threshold(client, n_clusters, threshold):
    """Below max(39 * n_clusters, 1000) the search is exact; the write that crosses it trains.
    Without n_clusters the lists are round(sqrt(count)), so training starts at 39^2 = 1521."""
    x = lowdim(4, threshold, 8)
    col = client.create_collection("thr", use_ivf=True, n_clusters=n_clusters)
    add_all(col, x[:threshold - 1])
    st = col.stats()
    assert (st["index"], st["trained"], st["count"]) == ("flat", False, threshold - 1)
    assert st["list_max"] == 0 and st["added_since_training"] == 0
    add_all(col, x[threshold - 1:], start=threshold - 1)
    st = col.stats()
    assert (st["index"], st["trained"], st["count"]) == ("ivf", True, threshold)
    lists = n_clusters or round(math.sqrt(threshold))
    assert st["n_clusters"] == lists
    assert st["added_since_training"] == 0
    assert st["list_mean"] * lists == pytest.approx(threshold)
    assert st["list_min"] <= st["list_mean"] <= st["list_max"]


@pytest.mark.parametrize("n", [2000, 5000])
def test_auto_n_clusters_is_about_sqrt_n(client, n):
    col = client.create_collection("auto", use_ivf=True)
    col.add(ids=[sid(i) for i in range(n)], embeddings=lowdim(5, n, 8))
    st = col.stats()
    assert st["index"] == "ivf" and st["n_clusters"] == round(math.sqrt(n))
    assert st["n_probe"] == default_n_probe(st["n_clusters"])


@pytest.mark.parametrize("n_clusters", [1, 2, 9, 16, 100, 256, 257, 1000, 4096])
def test_default_n_probe_rule(client, n_clusters):
    col = client.create_collection("npr", use_ivf=True, n_clusters=n_clusters)
    assert col.stats()["n_probe"] == default_n_probe(n_clusters)
    col2 = client.create_collection("npr2", use_ivf=True, n_clusters=n_clusters, n_probe=3)
    assert col2.stats()["n_probe"] == 3


def test_modify_sets_the_default_n_probe_and_keeps_it(tmp_path):
    path = tmp_path / "db"
    data, q = lowdim(21, 2000, 16), lowdim(22, 30, 16)
    client = open_client(path)
    col = client.create_collection("tune", use_ivf=True, n_clusters=40)
    add_all(col, data)
    assert col.stats()["index"] == "ivf" and col.stats()["n_probe"] == default_n_probe(40)
    explicit = col.query(query_embeddings=q, n_results=10, include=["distances"], n_probe=2)
    col.modify(configuration={"n_probe": 2})
    assert col.stats()["n_probe"] == 2 and col.configuration["n_probe"] == 2
    assert col.query(query_embeddings=q, n_results=10, include=["distances"]) == explicit
    for bad in ({"n_probe": 0}, {"n_probe": "4"}, {"n_probe": True}, {"hnsw": {"space": "ip"}},
                {"n_probe": 3, "space": "ip"}, [("n_probe", 3)]):
        with pytest.raises(InvalidArgumentError):
            col.modify(name="renamed", configuration=bad)
        assert col.stats()["n_probe"] == 2 and col.name == "tune", bad
    client.close()

    client = open_client(path)  # the setting is kept with the collection
    col = client.get_collection("tune")
    assert col.stats()["n_probe"] == 2 and col.configuration["n_probe"] == 2
    assert col.query(query_embeddings=q, n_results=10, include=["distances"]) == explicit
    col.modify(configuration={"n_probe": None})  # back to the default rule
    assert col.stats()["n_probe"] == default_n_probe(40)
    client.close()
    with open_client(path) as client:
        assert client.get_collection("tune").stats()["n_probe"] == default_n_probe(40)


def test_retrains_when_the_collection_has_doubled(tmp_path):
    path = tmp_path / "db"
    x = lowdim(6, 8000, 8)
    client = open_client(path)
    col = client.create_collection("grow", use_ivf=True)
    add_all(col, x[:1600])  # trains here: round(sqrt(1600)) = 40 lists, threshold 1560
    st = col.stats()
    assert (st["index"], st["n_clusters"], st["added_since_training"]) == ("ivf", 40, 0)
    gen = st["generation"]
    # The very next write must not retrain (the vectors moved in at training are not growth).
    add_all(col, x[1600:1601], start=1600)
    st = col.stats()
    assert (st["added_since_training"], st["generation"], st["n_clusters"]) == (1, gen, 40)
    add_all(col, x[1601:3199], start=1601, chunk=400)
    st = col.stats()
    assert (st["added_since_training"], st["generation"], st["n_clusters"]) == (1599, gen, 40)
    # Deletes are not growth; an update with a new vector is a written vector.
    col.delete(ids=[sid(i) for i in range(100)])
    col.update(ids=[sid(200)], metadatas=[{"m": 1}])  # no vector: not counted
    st = col.stats()
    assert (st["added_since_training"], st["count"], st["generation"]) == (1599, 3099, gen)
    col.update(ids=[sid(201)], embeddings=x[3199:3200])  # the 1600th vector written since: retrain
    st = col.stats()
    assert st["added_since_training"] == 0 and st["generation"] > gen
    assert st["n_clusters"] == round(math.sqrt(3099)) == 56
    gen = st["generation"]
    # The rule continues across a reopen: 3099 held at training, so 3099 more writes retrain.
    add_all(col, x[3200:4200], start=3200)
    client.close()
    client = open_client(path)
    col = client.get_collection("grow")
    st = col.stats()
    assert (st["added_since_training"], st["generation"], st["n_clusters"]) == (1000, gen, 56)
    add_all(col, x[4200:6298], start=4200, chunk=700)
    st = col.stats()
    assert (st["added_since_training"], st["generation"]) == (3098, gen)
    add_all(col, x[6298:6299], start=6298)
    st = col.stats()
    assert st["added_since_training"] == 0 and st["generation"] > gen
    assert st["n_clusters"] == round(math.sqrt(6199))
    client.close()


# ---------------------------------------------------------------------------------------- writes

@pytest.mark.parametrize("metric", METRICS)
def test_adds_updates_deletes_after_training(client, metric):
    n, d = 3000, 16
    data = lowdim(7, n + 600, d)
    col = client.create_collection("wri", metadata={"hnsw:space": metric}, use_ivf=True, n_clusters=20)
    add_all(col, data[:n])
    assert col.stats()["index"] == "ivf"
    model = {sid(i): data[i] for i in range(n)}
    # Adds after training.
    add_all(col, data[n:n + 200], start=n)
    model.update({sid(n + j): data[n + j] for j in range(200)})
    # Updates move vectors to the other side of the data: negated (far from where they were).
    moved = [sid(i) for i in range(0, 600, 6)]
    new_vecs = -data[n + 200:n + 300]
    col.update(ids=moved, embeddings=new_vecs)
    model.update(dict(zip(moved, new_vecs)))
    # Upserts: some existing (moved), some new.
    ups = [sid(i) for i in range(1, 101, 2)] + [sid(n + 1000 + j) for j in range(50)]
    up_vecs = data[n + 300:n + 400]
    col.upsert(ids=ups, embeddings=up_vecs)
    model.update(dict(zip(ups, up_vecs)))
    # Deletes, including rows added and moved after training.
    gone = list(dict.fromkeys([sid(i) for i in range(3, 900, 5)] + [sid(n + j) for j in range(0, 200, 7)] + moved[:10]))
    col.delete(ids=gone)
    for g in gone:
        model.pop(g, None)
    assert col.count() == len(model)
    assert col.stats()["index"] == "ivf"

    mids = list(model)
    mx = np.stack([model[k] for k in mids])
    got = col.get(ids=mids, include=["embeddings"])
    stored = dict(zip(got["ids"], got["embeddings"]))
    assert stored.keys() == model.keys()
    assert all(np.array_equal(stored[k], model[k]) for k in mids)
    assert col.get(ids=gone)["ids"] == []

    # Every list probed: exactly the NumPy answer over the current records.
    queries = np.concatenate([data[n + 400:n + 440], new_vecs[10:30], up_vecs[:10]])
    res = col.query(query_embeddings=queries, n_results=10, n_probe=20, include=[])
    assert res["ids"] == exact_ids(metric, queries, mx, mids, 10)
    for row in res["ids"]:
        assert not set(row) & set(gone)

    if metric != "ip":  # a vector is its own nearest neighbour for l2 and cosine
        kept = [m for m in moved if m in model]
        own = col.query(query_embeddings=np.stack([model[m] for m in kept]), n_results=1, include=["distances"])
        assert [r[0] for r in own["ids"]] == kept
        assert max(r[0] for r in own["distances"]) < 1e-5
        # The old places no longer hold the moved ids.
        old = col.query(query_embeddings=data[[int(m[2:]) for m in kept]], n_results=1, include=[])
        assert all(r[0] != m for r, m in zip(old["ids"], kept))


# ---------------------------------------------------------------------------------------- batch, rebuild

def test_batch_mode_defers_training_to_the_end(client):
    x = lowdim(8, 6000, 8)
    q = lowdim(9, 10, 8)
    col = client.create_collection("bulk", use_ivf=True, n_clusters=10)
    col.begin_batch()
    add_all(col, x[:1500], chunk=500)
    st = col.stats()
    assert (st["index"], st["batch_depth"], st["count"]) == ("flat", 1, 1500)
    # Searching inside a batch is exact.
    ids = [sid(i) for i in range(1500)]
    assert col.query(query_embeddings=q, n_results=5, include=[])["ids"] == exact_ids("l2", q, x[:1500], ids, 5)
    with col.batch():  # nested
        add_all(col, x[1500:2000], start=1500)
        assert col.stats()["batch_depth"] == 2
    st = col.stats()
    assert (st["index"], st["batch_depth"]) == ("flat", 1)
    col.end_batch()
    st = col.stats()
    assert (st["index"], st["batch_depth"], st["added_since_training"], st["count"]) == ("ivf", 0, 0, 2000)
    gen = st["generation"]
    # Doubling inside a batch: no retraining until it ends, then exactly one.
    with col.batch():
        add_all(col, x[2000:6000], start=2000, chunk=500)
        st = col.stats()
        assert (st["added_since_training"], st["generation"]) == (4000, gen)
    st = col.stats()
    assert st["added_since_training"] == 0 and st["generation"] == gen + 1
    ids = [sid(i) for i in range(6000)]
    assert col.query(query_embeddings=q, n_results=10, n_probe=10, include=[])["ids"] == exact_ids("l2", q, x, ids, 10)


def test_batch_mode_ends_on_exception(client):
    col = client.create_collection("bulk2", use_ivf=True, n_clusters=10)
    with pytest.raises(RuntimeError), col.batch():
        add_all(col, lowdim(10, 1200, 8))
        raise RuntimeError("import failed half way")
    st = col.stats()
    assert (st["batch_depth"], st["index"]) == (0, "ivf")


def test_rebuild(client):
    x = lowdim(11, 1200, 8)
    q = lowdim(12, 10, 8)
    flat = client.create_collection("plain")
    flat.add(ids=["a"], embeddings=x[:1])
    with pytest.raises(InvalidArgumentError, match="use_ivf"):
        flat.rebuild()

    # Too few vectors for k-means: rebuild changes nothing, as the automatic rule, and says so.
    empty = client.create_collection("empty", use_ivf=True)
    out = empty.rebuild()
    assert out["index"] == "flat" and "stays exact" in out["message"]
    assert empty.stats()["count"] == 0

    few = client.create_collection("few", use_ivf=True, n_clusters=100)
    add_all(few, x[:2])
    out = few.rebuild()
    assert out["index"] == "flat" and "2 vectors are fewer than the 100 IVF lists" in out["message"]
    add_all(few, x[2:30], start=2)
    assert few.rebuild()["index"] == "flat"
    st = few.stats()
    assert (st["index"], st["count"]) == ("flat", 30)
    ids30 = [sid(i) for i in range(30)]
    assert few.query(query_embeddings=q, n_results=5, include=[])["ids"] == exact_ids("l2", q, x[:30], ids30, 5)

    # Below the threshold, rebuild trains anyway.
    col = client.create_collection("small", use_ivf=True, n_clusters=10)
    add_all(col, x[:200])
    assert col.stats()["index"] == "flat"
    assert col.rebuild() == {"index": "ivf", "n_clusters": 10, "message": "trained 10 IVF lists on 200 vectors"}
    st = col.stats()
    assert (st["index"], st["n_clusters"], st["added_since_training"]) == ("ivf", 10, 0)
    ids = [sid(i) for i in range(200)]
    got = col.query(query_embeddings=q, n_results=10, n_probe=10, include=[])["ids"]
    assert got == exact_ids("l2", q, x[:200], ids, 10)
    # Retrain on demand after adds (fewer than the 200 trained on: no automatic retraining).
    add_all(col, x[200:350], start=200)
    assert col.stats()["added_since_training"] == 150
    gen = col.stats()["generation"]
    col.rebuild()
    st = col.stats()
    assert st["added_since_training"] == 0 and st["generation"] == gen + 1 and st["count"] == 350
    ids = [sid(i) for i in range(350)]
    got = col.query(query_embeddings=q, n_results=10, n_probe=10, include=[])["ids"]
    assert got == exact_ids("l2", q, x[:350], ids, 10)


# ---------------------------------------------------------------------------------------- persistence

def _snapshot_stats(st: dict) -> tuple:
    keys = ("count", "index", "n_clusters", "n_probe", "list_min", "list_max", "list_mean",
            "added_since_training", "generation")
    return tuple(st[k] for k in keys)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_reopened_collection_answers_identically_without_retraining(tmp_path, metric):
    path = tmp_path / "db"
    data = lowdim(13, 3500, 16)
    q = lowdim(14, 50, 16)
    client = open_client(path)
    col = client.create_collection("keep", metadata={"hnsw:space": metric}, use_ivf=True, n_clusters=20)
    add_all(col, data[:3000], chunk=1000)
    # Writes after training live in the log, replayed on open.
    add_all(col, data[3000:3300], start=3000)
    col.update(ids=[sid(i) for i in range(0, 100, 2)], embeddings=data[3300:3350])
    col.delete(ids=[sid(i) for i in range(1, 140, 2)])
    before = col.query(query_embeddings=q, n_results=10, include=["distances"])
    st_before = col.stats()
    # Trained at 1,000, retrained at 2,000 (doubled), then 1,000 + 300 + 50 written since.
    assert st_before["index"] == "ivf" and st_before["added_since_training"] == 1350
    client.close()

    for step in ("reopen", "checkpoint-then-reopen"):
        client = open_client(path)
        col = client.get_collection("keep")
        assert _snapshot_stats(col.stats()) == _snapshot_stats(st_before), step
        after = col.query(query_embeddings=q, n_results=10, include=["distances"])
        assert after["ids"] == before["ids"], step
        assert after["distances"] == before["distances"], step
        if step == "reopen":
            col.checkpoint()
            st_before = dict(st_before, generation=col.stats()["generation"])
        client.close()


def test_determinism_for_a_fixed_seed(tmp_path):
    data = lowdim(15, 4000, 16)
    q = lowdim(16, 40, 16)
    results = []
    for copy in range(2):
        client = open_client(tmp_path / f"db{copy}")
        col = client.create_collection("det", use_ivf=True)
        add_all(col, data[:2500], chunk=500)
        add_all(col, data[2500:], start=2500, chunk=300)
        col.delete(ids=[sid(i) for i in range(0, 4000, 9)])
        st = col.stats()
        res = col.query(query_embeddings=q, n_results=10, n_probe=3, include=["distances"])
        results.append((_snapshot_stats(st), res["ids"], res["distances"]))
        client.close()
    assert results[0] == results[1]


# ---------------------------------------------------------------------------------------- degenerate

def test_duplicate_vectors(client):
    distinct = lowdim(17, 6, 8)
    x = np.repeat(distinct, 200, axis=0)  # 1200 rows, 6 distinct vectors, 20 lists
    col = client.create_collection("dup", use_ivf=True, n_clusters=20)
    add_all(col, x)
    st = col.stats()
    assert st["index"] == "ivf" and st["count"] == 1200
    for g in range(6):
        res = col.query(query_embeddings=distinct[g:g + 1], n_results=10, include=["distances"])
        assert len(res["ids"][0]) == 10
        assert all(int(s[2:]) // 200 == g for s in res["ids"][0])
        assert max(res["distances"][0]) < 1e-6
        wide = col.query(query_embeddings=distinct[g:g + 1], n_results=250, include=["distances"])
        assert len(wide["ids"][0]) == 250
        assert sorted(int(s[2:]) for s in wide["ids"][0][:200]) == list(range(200 * g, 200 * g + 200))


def test_cosine_with_all_zero_vectors(client):
    rng = np.random.default_rng(18)
    x = lowdim(18, 1100, 8)
    zero_rows = rng.choice(1100, 100, replace=False)
    x[zero_rows] = 0.0
    ids = [sid(i) for i in range(1100)]
    col = client.create_collection("zeros", metadata={"hnsw:space": "cosine"}, use_ivf=True, n_clusters=10)
    flat = client.create_collection("zeros-flat", metadata={"hnsw:space": "cosine"})
    col.add(ids=ids, embeddings=x)
    flat.add(ids=ids, embeddings=x)
    assert col.stats()["index"] == "ivf"
    q = lowdim(19, 20, 8)
    res = col.query(query_embeddings=q, n_results=10, n_probe=10, include=["distances"])
    assert res["ids"] == exact_ids("cosine", q, x, ids, 10)
    assert res["ids"] == flat.query(query_embeddings=q, n_results=10, include=[])["ids"]
    # A zero vector is at distance 1 from everything; all of them are still stored and findable.
    zq = col.query(query_embeddings=np.zeros((1, 8), np.float32), n_results=20, include=["distances"])
    assert len(zq["ids"][0]) == 20 and np.allclose(zq["distances"][0], 1.0)
    got = col.get(ids=[sid(i) for i in zero_rows], include=["embeddings"])
    assert len(got["ids"]) == 100 and not np.any(np.asarray(got["embeddings"]))
    far = col.query(query_embeddings=q[:1], n_results=1100, include=["distances"])
    assert sorted(far["ids"][0]) == sorted(ids)
    dist = dict(zip(far["ids"][0], far["distances"][0]))
    assert all(dist[sid(i)] == pytest.approx(1.0) for i in zero_rows)


def test_more_results_than_records_and_bad_n_probe(client):
    col = client.create_collection("kkk", use_ivf=True, n_clusters=10)
    add_all(col, lowdim(20, 1000, 8))
    q = lowdim(21, 2, 8)
    res = col.query(query_embeddings=q, n_results=5000, include=[])
    assert [len(r) for r in res["ids"]] == [1000, 1000]
    for bad in (0, -1, 1.5, "4"):
        with pytest.raises(InvalidArgumentError):
            col.query(query_embeddings=q, n_results=5, n_probe=bad)


# ---------------------------------------------------------------------------------------- filters

def test_filtered_queries_return_n_results_whenever_that_many_match(client):
    n, d = 4000, 16
    x = lowdim(22, n, d)
    q = lowdim(23, 30, d)
    ids = [sid(i) for i in range(n)]
    metas = [{"tag": i % 50, "grp": i % 4, "side": int(x[i, 0] > 0), "i": i} for i in range(n)]
    col = client.create_collection("flt", use_ivf=True, n_clusters=40)  # 16 of 40 lists by default
    col.add(ids=ids, embeddings=x, metadatas=metas)
    assert col.stats()["index"] == "ivf"

    def matching(pred):
        rows = [i for i in range(n) if pred(metas[i])]
        return rows, x[rows], [ids[i] for i in rows]

    # Few matches (80 rows, fewer than the 1,600 the probed lists hold): exact over the matches.
    rows, xm, idm = matching(lambda m: m["tag"] == 7)
    res = col.query(query_embeddings=q, n_results=10, where={"tag": 7}, include=["metadatas"])
    assert res["ids"] == exact_ids("l2", q, xm, idm, 10)
    assert all(m["tag"] == 7 for row in res["metadatas"] for m in row)
    # One query at a time (read in place rather than gathered): the same answers.
    for qi in range(5):
        one = col.query(query_embeddings=q[qi:qi + 1], n_results=10, where={"tag": 7}, include=["distances"])
        assert one["ids"][0] == res["ids"][qi]
    # ... also with n_probe 1, where probing alone would find few of them.
    assert col.query(query_embeddings=q, n_results=10, n_probe=1, where={"tag": 7}, include=[])["ids"] == res["ids"]
    # Fewer matches than n_results: all of them, in order.
    where8 = {"$and": [{"tag": 7}, {"i": {"$lt": 400}}]}
    rows8, xm8, idm8 = matching(lambda m: m["tag"] == 7 and m["i"] < 400)
    assert len(rows8) == 8
    eight = col.query(query_embeddings=q[:3], n_results=10, where=where8, include=[])
    assert eight["ids"] == exact_ids("l2", q[:3], xm8, idm8, 10)
    assert col.query(query_embeddings=q[:1], n_results=10, where=where8, include=[])["ids"] == eight["ids"][:1]
    assert all(len(r) == 8 for r in eight["ids"])

    # Many matches: the IVF search, which probes further when its lists hold fewer than k matches.
    for where, pred in (({"grp": {"$ne": 0}}, lambda m: m["grp"] != 0), ({"side": 1}, lambda m: m["side"] == 1)):
        rows, xm, idm = matching(pred)
        for n_probe in (1, None):
            res = col.query(query_embeddings=q, n_results=10, where=where, n_probe=n_probe, include=["metadatas"])
            assert all(len(r) == 10 for r in res["ids"]), (where, n_probe)
            assert all(pred(m) for row in res["metadatas"] for m in row)
            if n_probe is None:
                assert recall(res["ids"], exact_ids("l2", q, xm, idm, 10)) >= 0.9
    # Queries from the far side, filtered to the near side, with one list probed: still 10 each.
    far_q = x[x[:, 0] < -0.5][:10]
    res = col.query(query_embeddings=far_q, n_results=10, where={"side": 1}, n_probe=1, include=[])
    assert all(len(r) == 10 for r in res["ids"])


# ---------------------------------------------------------------------------------------- stats

def test_stats_fields(client):
    n, d = 3000, 32
    x = lowdim(24, n, d)
    col = client.create_collection("sta", metadata={"hnsw:space": "ip"}, use_ivf=True, n_clusters=25, n_probe=5)
    st = col.stats()
    expected = {"count", "dimension", "metric", "index", "trained", "n_clusters", "n_probe", "list_min",
                "list_mean", "list_max", "added_since_training", "bytes_on_disk", "bytes_in_memory"}
    assert expected <= st.keys()
    assert (st["count"], st["index"], st["trained"], st["n_clusters"], st["n_probe"]) == (0, "flat", False, 25, 5)
    add_all(col, x[:n - 100])
    add_all(col, x[n - 100:], start=n - 100)
    st = col.stats()
    assert (st["count"], st["dimension"], st["metric"], st["index"], st["trained"]) == (n, d, "ip", "ivf", True)
    assert (st["n_clusters"], st["n_probe"], st["added_since_training"]) == (25, 5, 100)
    assert isinstance(st["list_mean"], float) and st["list_mean"] * 25 == pytest.approx(n)
    assert 0 <= st["list_min"] <= st["list_mean"] <= st["list_max"] <= n
    raw = n * d * 4
    assert st["bytes_on_disk"] >= raw
    assert raw <= st["bytes_in_memory"] <= 2 * raw + (1 << 20)
    # n_probe per query overrides the collection's: 25 lists = exact.
    q = lowdim(25, 10, d)
    ids = [sid(i) for i in range(n)]
    assert col.query(query_embeddings=q, n_results=10, n_probe=25, include=[])["ids"] == exact_ids("ip", q, x, ids, 10)


# ---------------------------------------------------------------------------------------- kill -9

CRASH_TRIALS = int(os.environ.get("VECTORDB_IVF_CRASH_TRIALS", "10"))
CRASH_DIM = 16

CRASH_WRITER = textwrap.dedent(
    """
    import sys, numpy as np, vectordb
    path, start = sys.argv[1], int(sys.argv[2])
    client = vectordb.PersistentClient(path)
    col = client.get_or_create_collection("crash", use_ivf=True, n_clusters=32, quantization=QUANT)
    def batch(i):
        n = 20 + (i * 37) % 180
        rng = np.random.default_rng(i)
        return [f"b{i}-{j}" for j in range(n)], rng.standard_normal((n, DIM)).astype(np.float32)
    i = start
    while True:
        ids, vecs = batch(i)
        op = i % 10
        print(f"begin {op} {i}", flush=True)
        if op == 7 and i >= 3:
            col.delete(ids=batch(i - 3)[0])
        elif op == 8:
            col.upsert(ids=ids, embeddings=vecs)
        elif op == 9:
            col.rebuild()
        else:
            col.add(ids=ids, embeddings=vecs)
        print(f"ack {op} {i}", flush=True)
        i += 1
    """
).replace("DIM", str(CRASH_DIM))


def _crash_batch(i):
    n = 20 + (i * 37) % 180
    rng = np.random.default_rng(i)
    return [f"b{i}-{j}" for j in range(n)], rng.standard_normal((n, CRASH_DIM)).astype(np.float32)


def _crash_apply(model, op, i):
    ids, vecs = _crash_batch(i)
    if op == 7 and i >= 3:
        for k in _crash_batch(i - 3)[0]:
            model.pop(k, None)
    elif op == 8:
        model.update(zip(ids, vecs))
    elif op in (0, 1, 2, 3, 4, 5, 6):
        for k, v in zip(ids, vecs):
            model.setdefault(k, v)


def _crash_check(path, model, in_flight, quantization):
    client = vectordb.PersistentClient(path)
    try:
        col = client.get_or_create_collection("crash", use_ivf=True, n_clusters=32, quantization=quantization)
        got = col.get(include=["embeddings"])
        state = dict(zip(got["ids"], got["embeddings"]))
        candidates = [model]
        if in_flight is not None:
            after = dict(model)
            _crash_apply(after, *in_flight)
            candidates.append(after)
        match = None
        for cand in candidates:
            if state.keys() == cand.keys() and all(np.array_equal(state[k], cand[k]) for k in cand):
                match = cand
                break
        if match is None:
            missing = sorted(set(model) - set(state))[:5]
            extra = sorted(set(state) - set(candidates[-1]))[:5]
            raise AssertionError(f"state after kill matches neither before nor after {in_flight}: "
                                 f"missing {missing}, extra {extra}")
        # The index answers: every list probed finds a record's own vector first.
        st = col.stats()
        if match:
            keys = sorted(match)[:: max(1, len(match) // 20)]
            res = col.query(query_embeddings=np.stack([match[k] for k in keys]), n_results=1,
                            n_probe=max(1, st["n_clusters"]), include=["distances"])
            assert [r[0] for r in res["ids"]] == keys
        return match, st
    finally:
        client.close()


@pytest.mark.parametrize("quantization", [None, "sq8", "pq4"])
def test_kill9_during_ivf_training_and_adds_loses_no_acknowledged_write(tmp_path, quantization):
    """Also for a quantized collection: its codes are trained, checkpointed and reopened too."""
    path = str(tmp_path / "db")
    rnd = random.Random(2024)
    model: dict = {}
    next_batch = 0
    trained_seen = False
    for _ in range(CRASH_TRIALS):
        script = CRASH_WRITER.replace("QUANT", repr(quantization))
        acked, in_flight = kill_writer_at_random(script, path, next_batch, rnd, 0.4)
        for op, i in acked:
            _crash_apply(model, op, i)
            next_batch = i + 1
        model, st = _crash_check(path, model, in_flight, quantization)
        assert st["quantization"] == quantization
        trained_seen |= st["index"] == "ivf"
        if in_flight is not None:
            next_batch = in_flight[1] + 1
    assert next_batch > CRASH_TRIALS  # the writers made progress: kills landed mid-stream
    assert trained_seen  # and the index was trained along the way
