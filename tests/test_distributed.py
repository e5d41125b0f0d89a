"""Sharded collections on Ray (vectordb.distributed): the same answers as one node, validation before
any shard is written, acknowledged writes surviving shard processes killed mid-write, and shards
reopened from disk after their node died.

One local Ray cluster of two nodes serves the whole module: starting Ray takes seconds."""
from __future__ import annotations

import os
import signal
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import vectordb

ray = pytest.importorskip("ray")

from vectordb.distributed import (  # noqa: E402
    RayClient,
    ShardUnavailableError,
    ShardWriteError,
    shard_of,
)
from vectordb.distributed.client import _read_shardmap, _write_shardmap, actor_name  # noqa: E402
from vectordb.distributed.routing import SEQ_KEY, merge_query, split  # noqa: E402

REPO = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine (a head and a worker node, each its own raylet), one CPU each."""
    from ray.cluster_utils import Cluster

    env = {"PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False, runtime_env={"env_vars": env})
    yield c, worker
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def rc(cluster, tmp_path):
    client = RayClient(path=str(tmp_path / "ray"))
    yield client
    client.close()


def records(n, d=8, seed=0, start=0):
    rng = np.random.default_rng(seed)
    ids = [f"id{i}" for i in range(start, start + n)]
    vecs = rng.standard_normal((n, d)).astype(np.float32)
    vecs[::7] = vecs[0]  # equal vectors: ties in distance, broken by insertion order
    metas = [{"g": i % 5, "tag": f"t{i % 3}"} if i % 4 else None for i in range(start, start + n)]
    docs = [f"doc {i} {'red' if i % 2 else 'blue'}" for i in range(start, start + n)]
    return ids, vecs, metas, docs


def same(a, b):
    """Results equal field by field (arrays compared exactly)."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if key == "embeddings" and x is not None:
            assert len(x) == len(y)
            for u, v in zip(x, y):
                assert np.array_equal(np.asarray(u), np.asarray(v))
        else:
            assert x == y, key


# ---- routing and merging (no cluster) ----
def test_shard_of_is_stable_crc32():
    # The hash decides where every record lives on disk: it must never change.
    keys = ("a", "b", "doc-17", "é")
    assert [shard_of(x, 4) for x in keys] == [zlib.crc32(x.encode()) % 4 for x in keys]
    assert [shard_of("a", 4), shard_of("doc-17", 7)] == [3, 0]
    parts = split([f"x{i}" for i in range(1000)], 4)
    assert sorted(i for p in parts for i in p) == list(range(1000))
    assert min(len(p) for p in parts) > 200


def test_merge_query_breaks_ties_by_sequence():
    def shard(ids, dists, seqs):
        return {"ids": [ids], "distances": [dists], "metadatas": [[{SEQ_KEY: s} for s in seqs]]}

    out = merge_query([shard(["a", "c"], [1.0, 2.0], [5, 1]), shard(["b", "d"], [1.0, 1.5], [3, 9])], 3, ["distances"])
    assert out["ids"] == [["b", "a", "d"]] and out["distances"] == [[1.0, 1.0, 1.5]]


# ---- same answers as one node ----
def test_sharded_answers_equal_single_node(rc):
    col = rc.create_collection("same", shards=3, metadata={"hnsw:space": "l2"})
    one = vectordb.EphemeralClient().create_collection("dist-same")
    ids, vecs, metas, docs = records(300)
    for c in (col, one):
        c.add(ids=ids[:200], embeddings=vecs[:200], metadatas=metas[:200], documents=docs[:200])
        c.upsert(ids=ids[150:], embeddings=vecs[150:] + 1, metadatas=metas[150:], documents=docs[150:])
        c.update(ids=ids[10:40] + ["nope"], metadatas=[{"g": 9, "tag": None}] * 31)
        c.upsert(ids=ids[50:60], metadatas=[{"u": True}] * 10)  # existing ids, no embeddings
        c.delete(ids=ids[0:30:3])
        c.delete(where={"g": 4}, where_document={"$contains": "red"})
        c.add(ids=ids[0:6], embeddings=vecs[0:6], documents=docs[0:6])  # re-added after delete: go last
    assert col.count() == one.count()
    q = np.vstack([vecs[0], vecs[5], np.random.default_rng(1).standard_normal((4, 8))]).astype(np.float32)
    inc = ["embeddings", "metadatas", "documents", "distances"]
    for kw in [{}, {"where": {"g": {"$in": [1, 2, 9]}}}, {"where_document": {"$contains": "blue"}},
               {"where": {"$or": [{"tag": "t1"}, {"u": True}]}, "n_results": 50}, {"n_results": 400}]:
        same(col.query(query_embeddings=q, include=inc, **{"n_results": 12, **kw}),
             one.query(query_embeddings=q, include=inc, **{"n_results": 12, **kw}))
    for kw in [{}, {"limit": 17, "offset": 5}, {"offset": 250}, {"where": {"g": 9}, "limit": 5},
               {"ids": ids[::-11] + ["zz"]}, {"ids": ids[::-5], "offset": 2, "limit": 9, "where": {"g": {"$gte": 2}}}]:
        same(col.get(include=["embeddings", "metadatas", "documents"], **kw),
             one.get(include=["embeddings", "metadatas", "documents"], **kw))
    same(col.peek(7), one.peek(7))
    assert col.delete(where={"tag": "t0"}) == one.delete(where={"tag": "t0"})
    assert col.count() == one.count()
    assert all(SEQ_KEY not in (m or {}) for m in col.get()["metadatas"])


class VowelsEF(vectordb.EmbeddingFunction):
    """A deterministic 3-d embedding (length, vowels, scale): enough to tell configs apart."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, input):
        return [[float(len(t)), float(sum(t.count(v) for v in "aeiou")), self.scale] for t in input]

    @staticmethod
    def name() -> str:
        return "test_vowels"

    def get_config(self):
        return {"scale": self.scale}

    @staticmethod
    def build_from_config(config):
        return VowelsEF(config["scale"])


class ConsonantsEF(VowelsEF):
    @staticmethod
    def name() -> str:
        return "test_consonants"


def test_uris_query_ids_and_embedding_functions_as_one_node(cluster, tmp_path):
    path = str(tmp_path / "ray")
    one = vectordb.EphemeralClient().create_collection("dist-ef", embedding_function=VowelsEF(2.0))
    texts = [f"record {i} {'banana' if i % 3 else 'kiwi'}" for i in range(30)]
    ids = [f"r{i}" for i in range(30)]
    with RayClient(path=path) as client:
        col = client.create_collection("efs", shards=2, embedding_function=VowelsEF(2.0))
        for c in (col, one):
            c.add(ids=ids, documents=texts, uris=[f"s3://b/{i}" if i % 4 else None for i in range(30)],
                  metadatas=[{"i": i} for i in range(30)])
            c.update(ids=ids[:3], uris=["u0", "u1", "u2"])
        assert col.configuration_json["embedding_function"] == one.configuration_json["embedding_function"] == \
            {"name": "test_vowels", "type": "known", "config": {"scale": 2.0}}
        inc = ["uris", "documents", "distances", "metadatas"]
        for kw in [{}, {"ids": ids[::3] + ["missing"]}, {"ids": ids[:10], "where": {"i": {"$gte": 4}}},
                   {"ids": ["r7"], "n_results": 5}]:
            kw = {"n_results": 4, **kw}
            same(col.query(query_texts=["a banana", "kiwi"], include=inc, **kw),
                 one.query(query_texts=["a banana", "kiwi"], include=inc, **kw))
        for kw in [{}, {"ids": ids[::-4]}, {"where": {"i": {"$lt": 5}}}]:
            same(col.get(include=["uris", "metadatas"], **kw), one.get(include=["uris", "metadatas"], **kw))
        with pytest.raises(ValueError, match="needs 30 entries|one per id|30"):
            col.add(ids=["x"], embeddings=[[1.0, 2.0, 3.0]], uris=["a", "b"])
        for c in (col, one):
            with pytest.raises(ValueError, match="incompatible types"):
                c.modify(configuration={"embedding_function": ConsonantsEF()})
            c.modify(configuration={"embedding_function": VowelsEF(5.0)})
        with pytest.raises(ValueError, match="Embedding function conflict"):
            client.get_collection("efs", embedding_function=ConsonantsEF())
    with RayClient(path=path) as client:  # the function comes back from the shard map, modified
        again = client.get_collection("efs", embedding_function=None)
        assert again.configuration_json["embedding_function"]["config"] == {"scale": 5.0}
        again.add(ids=["new"], documents=["aeiou"])
        assert again.get(ids=["new"], include=["embeddings"])["embeddings"].tolist() == [[5.0, 5.0, 5.0]]
        assert again.get(ids=["r1"], include=["uris"])["uris"] == ["u1"]


def test_ivf_with_every_list_probed_equals_single_node(rc):
    n, k = 2600, 10
    ids, vecs, metas, _ = records(n, d=8, seed=3)
    col = rc.create_collection("ivf", shards=2, use_ivf=True, n_clusters=4)
    one = vectordb.EphemeralClient().create_collection("dist-ivf", use_ivf=True, n_clusters=4)
    with col.batch():  # bulk mode on every shard: each trains once, at the end
        col.add(ids=ids[:1500], embeddings=vecs[:1500], metadatas=metas[:1500])
        col.add(ids=ids[1500:], embeddings=vecs[1500:], metadatas=metas[1500:])
    one.add(ids=ids, embeddings=vecs, metadatas=metas)
    assert all(s["trained"] and s["n_clusters"] == 4 for s in col.stats()["shards"])
    q = np.random.default_rng(4).standard_normal((20, 8)).astype(np.float32)
    got = col.query(query_embeddings=q, n_results=k, n_probe=4, include=["distances"])
    assert got == one.query(query_embeddings=q, n_results=k, n_probe=4, include=["distances"])
    exact = vectordb.EphemeralClient().create_collection("dist-exact")
    exact.add(ids=ids, embeddings=vecs)
    assert got["ids"] == exact.query(query_embeddings=q, n_results=k, include=[])["ids"]
    col.modify(configuration={"n_probe": 4})
    assert col.query(query_embeddings=q, n_results=k, include=["distances"]) == got
    assert col.configuration["n_probe"] == 4


def test_quantized_shards_answer_like_one_quantized_node(rc):
    """quantization= is honoured on every shard (each keeps codes and re-ranks exactly), refused
    before any shard when wrong, and kept in the shard map's configuration."""
    with pytest.raises(vectordb.InvalidArgumentError, match="quantization"):
        rc.create_collection("badquant", shards=2, quantization="pq")
    assert rc.list_collections() == []
    ids, vecs, metas, _ = records(700, d=8, seed=6)
    col = rc.create_collection("quant", shards=2, quantization="sq8")
    one = vectordb.EphemeralClient().create_collection("dist-quant", quantization="sq8")
    for c in (col, one):
        c.add(ids=ids, embeddings=vecs, metadatas=metas)
    assert col.configuration["quantization"] == "sq8"
    assert all(s["quantization"] == "sq8" for s in col.stats()["shards"])
    q = np.random.default_rng(7).standard_normal((5, 8)).astype(np.float32)
    for kw in [{}, {"where": {"g": 2}}]:
        same(col.query(query_embeddings=q, n_results=9, include=["distances"], **kw),
             one.query(query_embeddings=q, n_results=9, include=["distances"], **kw))


# ---- validation before any shard is written ----
def test_bad_input_is_rejected_before_any_shard_is_written(rc):
    col = rc.create_collection("valid", shards=3, dimension=4)
    ids = [f"v{i}" for i in range(30)]  # spread over all 3 shards
    assert {shard_of(x, 3) for x in ids} == {0, 1, 2}
    good = np.ones((30, 4), dtype=np.float32)
    last = max(range(30), key=lambda i: shard_of(ids[i], 3))  # a record of the last shard
    bad_meta = [{"a": 1}] * 30
    bad_meta[last] = {"a": [1, "x"]}
    nan = good.copy()
    nan[last, 2] = np.nan
    cases = [
        dict(embeddings=nan),
        dict(embeddings=np.ones((30, 5))),                      # dimension 5, collection has 4
        dict(embeddings=good, metadatas=bad_meta),
        dict(embeddings=good, metadatas=[{SEQ_KEY: 1}] * 30),   # the hidden key is reserved
        dict(embeddings=good, documents=["d"] * 29),
        dict(embeddings=good[:29]),
    ]
    for kw in cases:
        for op in (col.add, col.upsert):
            with pytest.raises(vectordb.InvalidArgumentError):
                op(ids=ids, **kw)
            assert col.count() == 0
    with pytest.raises(vectordb.DuplicateIDError):
        col.add(ids=ids + ids[:1], embeddings=np.ones((31, 4)))
    col.add(ids=ids[:10], embeddings=good[:10])
    with pytest.raises(vectordb.InvalidArgumentError, match="needs an embedding"):
        col.upsert(ids=ids, metadatas=[{"a": 2}] * 30)  # 20 of them are new: one node refuses it whole
    assert col.get(ids=ids, include=["metadatas"])["metadatas"] == [None] * 10
    with pytest.raises(vectordb.InvalidArgumentError):
        col.delete(where={"$bad": 1})
    with pytest.raises(TypeError):
        rc.create_collection("badargs", shards=2, no_such_option=1)
    with pytest.raises(vectordb.InvalidArgumentError):
        rc.create_collection("badargs", shards=2, use_ivf="yes")
    assert [c.name for c in rc.list_collections()] == ["valid"]


# ---- the collection API and the shard map ----
def test_collections_and_reopen_from_the_shard_map(cluster, tmp_path):
    path = str(tmp_path / "ray")
    with RayClient(path=path) as client:
        with pytest.raises(vectordb.LockedError):
            RayClient(path=path)
        a = client.create_collection("alpha", shards=2, metadata={"hnsw:space": "cosine", "k": 1})
        assert client.get_or_create_collection("alpha", shards=5) == a and a.shards == 2
        with pytest.raises(vectordb.CollectionExistsError):
            client.create_collection("alpha")
        client.create_collection("beta", shards=1)
        ids, vecs, metas, docs = records(120)
        a.add(ids=ids, embeddings=vecs, metadatas=metas, documents=docs)
        a.modify(name="gamma", metadata={"k": 2})
        before = a.query(query_embeddings=vecs[:3], n_results=5)
        client.delete_collection("beta")
        with pytest.raises(vectordb.NotFoundError):
            client.get_collection("beta")
        assert client.count_collections() == 1
    with RayClient(path=path) as client:  # new actors reopen each shard from its directory
        g = client.get_collection("gamma")
        assert (g.metadata, g.shards, g.configuration["hnsw"]["space"]) == ({"k": 2}, 2, "cosine")
        assert g.count() == 120
        assert g.query(query_embeddings=vecs[:3], n_results=5) == before
        assert sorted(os.listdir(tmp_path / "ray" / "shards")) == [str(g.id)]
    # A shard map naming a node that is not in the cluster (another machine): a clear error.
    shardmap = os.path.join(path, "shardmap.json")
    cols = _read_shardmap(shardmap)
    cols[str(g.id)]["shards"][1].update(node_id="f" * 56, node_ip="203.0.113.9")
    _write_shardmap(shardmap, cols)
    unavailable = r"shard 1 .* lives on node 203\.0\.113\.9 .*not in the cluster"
    with RayClient(path=path, read_retries=0) as client, pytest.raises(ShardUnavailableError, match=unavailable):
        client.get_collection("gamma").count()


# ---- failures ----
def _pids(col):
    return [loc["pid"] for loc in col.shard_locations()]


def test_reads_are_retried_while_a_killed_shard_restarts(rc):
    col = rc.create_collection("restart", shards=2)
    ids, vecs, _, _ = records(50)
    col.add(ids=ids, embeddings=vecs)
    old = _pids(col)
    os.kill(old[0], signal.SIGKILL)
    assert col.count() == 50  # answered by the restarted shard, from its log
    assert col.query(query_embeddings=vecs[:2], n_results=3, include=[])["ids"][0][0] == "id0"
    assert _pids(col)[0] != old[0]


def test_acknowledged_writes_survive_shards_killed_mid_write(rc):
    """A writer upserts batches while one shard's worker process gets SIGKILL and another shard is
    killed through Ray. Every acknowledged batch is there afterwards; an unacknowledged one is, within
    each shard, all there or not at all; repeating it completes it."""
    shards, per_batch, d = 3, 24, 4
    col = rc.create_collection("crash", shards=shards)
    acked: list[int] = []
    failed: list[tuple[int, Exception]] = []
    stop = threading.Event()

    def batch(b):
        ids = [f"b{b}-{i}" for i in range(per_batch)]
        vecs = np.arange(per_batch * d, dtype=np.float32).reshape(per_batch, d) + b
        return ids, vecs

    def writer():
        b = 0
        while not stop.is_set():
            ids, vecs = batch(b)
            try:
                col.upsert(ids=ids, embeddings=vecs, metadatas=[{"b": b}] * per_batch)
                acked.append(b)
            except (ShardWriteError, ShardUnavailableError) as e:
                failed.append((b, e))
            b += 1

    def wait_for(n):
        deadline = time.monotonic() + 60
        while len(acked) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_for(15)
        os.kill(_pids(col)[0], signal.SIGKILL)            # the worker process, as the OS would
        wait_for(len(acked) + 15)
        ray.kill(ray.get_actor(actor_name(str(col.id), 1)), no_restart=False)  # through Ray
        wait_for(len(acked) + 15)
    finally:
        stop.set()
        t.join()
    written = sorted(acked + [b for b, _ in failed])
    assert len(acked) >= 45 and written == list(range(len(written)))
    for b in acked:
        ids, vecs = batch(b)
        got = col.get(ids=ids, include=["embeddings", "metadatas"])
        assert got["ids"] == ids and np.array_equal(got["embeddings"], vecs), f"acknowledged batch {b} lost"
        assert got["metadatas"] == [{"b": b}] * per_batch
    for b, e in failed:
        assert isinstance(e, ShardWriteError) and e.failed, e
        ids, vecs = batch(b)
        present = set(col.get(ids=ids, include=[])["ids"])
        for s, part in enumerate(split(ids, shards)):
            n = sum(ids[i] in present for i in part)
            assert n in (0, len(part)), f"batch {b} half-applied in shard {s}"
            if s in e.applied:
                assert n == len(part)
        col.upsert(ids=ids, embeddings=vecs, metadatas=[{"b": b}] * per_batch)  # the documented recovery
    assert col.count() == len(written) * per_batch


def test_shards_spread_over_nodes_and_reopen_after_their_node_dies(rc, cluster):
    """The worker node is removed (its raylet and every process on it killed). Its shard's actor is
    gone for good; the next call starts a new one on a live node at the same address (here: this
    machine, whose disk holds the shard), which reopens the shard from its directory. Runs last: the
    module's cluster has one node afterwards."""
    c, worker = cluster
    col = rc.create_collection("nodes", shards=4)
    nodes = [loc["node_id"] for loc in col.shard_locations()]
    assert set(nodes) == {c.head_node.node_id, worker.node_id}  # spread over both nodes
    ids, vecs, metas, docs = records(400)
    col.add(ids=ids, embeddings=vecs, metadatas=metas, documents=docs)
    before = col.query(query_embeddings=vecs[:5], n_results=8, include=["metadatas", "distances"])
    c.remove_node(worker)
    assert col.count() == 400  # read retried: the lost shards are started again and reopened
    assert col.query(query_embeddings=vecs[:5], n_results=8, include=["metadatas", "distances"]) == before
    assert {loc["node_id"] for loc in col.shard_locations()} == {c.head_node.node_id}
    col.upsert(ids=ids[:10], embeddings=vecs[:10] * 2)
    assert np.array_equal(col.get(ids=ids[:10], include=["embeddings"])["embeddings"], vecs[:10] * 2)
