"""Batch IVF queries: a batch answers each query exactly as that query alone does (same rows, same
float32 distance bits), whatever the batch's order, size, thread count, metric, codes or filter; and
its recall is measured against exact search.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vectordb
from vectordb import _core

METRICS = ["l2", "ip", "cosine"]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = _core.set_num_threads(2)
    yield
    _core.set_num_threads(before)


def one_by_one(h, queries, k, n_probe):
    got = [_core.ivf_search(h, queries[i:i + 1], k, n_probe) for i in range(len(queries))]
    return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])


def assert_same(batch, alone):
    np.testing.assert_array_equal(batch[1], alone[1])
    # the float32 bits, not a tolerance: the batch must run the very same arithmetic
    np.testing.assert_array_equal(batch[0].view(np.uint32), alone[0].view(np.uint32))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric=st.sampled_from(METRICS), d=st.integers(3, 41).map(lambda v: v | 1),
       n=st.integers(40, 700), n_lists=st.integers(1, 24), pq4=st.booleans(),
       k=st.sampled_from([1, 3, 10, 57, 250]), nq=st.integers(17, 90), probe_share=st.floats(0, 1),
       occupied=st.floats(0.2, 1.0), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**31))
def test_batch_equals_each_query_alone(metric, d, n, n_lists, pq4, k, nq, probe_share, occupied, threads, seed):
    """More than one search task (16 queries each), k beyond the list sizes, lists left empty (the
    index is trained on every cluster but holds vectors of some only), zero and duplicate queries."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d)) * 3
    label = rng.integers(0, 12, n)
    x = (centres[label] + rng.normal(size=(n, d))).astype(np.float32)
    n_lists = min(n_lists, n)
    h = _core.ivf_new(d, metric, n_lists)
    _core.ivf_train(h, x, seed % 1000)
    keep = np.flatnonzero(label < max(1, round(12 * occupied)))
    _core.ivf_add(h, keep * 3 + 1, x[keep])  # sparse row numbers
    if pq4 and len(keep) >= 16:
        _core.ivf_set_pq4(h, max(1, d // 3), 7)
    queries = (centres[rng.integers(0, 12, nq)] + rng.normal(size=(nq, d))).astype(np.float32)
    queries[nq // 2] = 0  # cosine: no direction, searched through the float32 lists
    queries[-1] = queries[0]
    n_probe = 1 + int(probe_share * (n_lists - 1))
    _core.set_num_threads(threads)
    assert_same(_core.ivf_search(h, queries, k, n_probe), one_by_one(h, queries, k, n_probe))


@pytest.mark.parametrize("metric", METRICS)
def test_batches_in_several_chunks_and_threads(metric):
    """A batch larger than one chunk of centroid distances (8 MB: 2,048 queries at 1,024 lists), so
    queries are ordered and searched chunk by chunk, with pq4 codes; recall against exact search."""
    rng = np.random.default_rng(len(metric))
    d, n, n_lists, k = 19, 6000, 1024, 10
    x = rng.normal(size=(n, d)).astype(np.float32)
    h = _core.ivf_new(d, metric, n_lists)
    _core.ivf_train(h, x, 1)
    _core.ivf_add(h, np.arange(n), x)
    _core.ivf_set_pq4(h, 7, 2)
    queries = rng.normal(size=(4500, d)).astype(np.float32)
    alone = one_by_one(h, queries, k, 40)
    for threads in (1, 2):
        _core.set_num_threads(threads)
        batch = _core.ivf_search(h, queries, k, 40)
        assert_same(batch, alone)
    if metric == "l2":  # |q|^2 - 2 q.x + |x|^2: a (4500, 6000, 19) difference array took 3.8 GB
        q64, x64 = queries.astype(np.float64), x.astype(np.float64)
        ref = (q64**2).sum(1)[:, None] - 2 * q64 @ x64.T + (x64**2).sum(1)[None, :]
    else:
        xs = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
        ref = -(queries.astype(np.float64) @ xs.T)
    want = np.argsort(ref, axis=1)[:, :k]
    rec = np.mean([len(set(a) & set(b)) / k for a, b in zip(batch[1], want)])
    print(f"{metric}: recall@{k} of the batch at n_probe 40 of {n_lists}: {rec:.3f}")
    assert rec > 0.5  # 40 of 1,024 lists of uniform data: a sanity floor; the identity is the test


@pytest.mark.parametrize("quantization", [None, "sq8", "pq4"])
@pytest.mark.parametrize("metric", METRICS)
def test_collection_batch_equals_each_query_alone_with_filters(tmp_path, metric, quantization):
    rng = np.random.default_rng(5)
    n, d = 1300, 23
    x = (rng.normal(size=(20, d)) * 3)[rng.integers(0, 20, n)] + rng.normal(size=(n, d))
    x = x.astype(np.float32)
    client = vectordb.PersistentClient(str(tmp_path))
    kw = {"quantization": quantization} if quantization else {}
    col = client.create_collection("batch", metadata={"hnsw:space": metric}, use_ivf=True, n_clusters=20, **kw)
    col.add(ids=[f"id{i}" for i in range(n)], embeddings=x, metadatas=[{"tag": i % 7} for i in range(n)])
    col.delete(ids=[f"id{i}" for i in range(0, n, 5)])
    assert col.stats()["index"] == "ivf"
    queries = rng.normal(size=(40, d)).astype(np.float32) * 3
    for where, k, n_probe in [(None, 10, 4), (None, 200, 2), ({"tag": 3}, 10, 3), ({"tag": {"$ne": 3}}, 25, 5)]:
        batch = col.query(query_embeddings=queries, n_results=k, where=where, n_probe=n_probe,
                          include=["distances"])
        for i in range(len(queries)):
            alone = col.query(query_embeddings=queries[i:i + 1], n_results=k, where=where, n_probe=n_probe,
                              include=["distances"])
            assert alone["ids"][0] == batch["ids"][i]
            assert np.array_equal(np.asarray(alone["distances"][0], np.float32).view(np.uint32),
                                  np.asarray(batch["distances"][i], np.float32).view(np.uint32))
    client.close()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", [33, 384])
def test_queries_on_a_tie_between_two_lists_probe_the_same_list_in_a_batch(metric, d):
    """A query halfway between two centroids (one list per vector here) ties them up to rounding:
    which list it probes must not depend on whether it came alone or in a batch (the centroid
    distances of a batch are computed in blocks of queries)."""
    rng = np.random.default_rng(d)
    n = 64
    x = rng.normal(size=(n, d)).astype(np.float32)
    if metric != "l2":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    h = _core.ivf_new(d, metric, n)
    _core.ivf_train(h, x, 1)
    _core.ivf_add(h, np.arange(n), x)
    i = rng.integers(0, n, 600)
    j = (i + 1 + rng.integers(0, n - 1, 600)) % n
    queries = ((x[i] + x[j]) / 2).astype(np.float32)
    for nq in (5, 18, 600):  # one task (a tail of 1 after 4), two tasks, many
        assert_same(_core.ivf_search(h, queries[:nq], 1, 1), one_by_one(h, queries[:nq], 1, 1))
