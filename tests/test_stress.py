"""Stress scenarios, in a size that fits CI; VECTORDB_STRESS=long runs them much longer (release
checks): threads on one client with collections evicted under them, kill -9 of the server under
load, malformed HTTP requests, open/close churn. (Disk-full and write-fault sweeps live in
test_io_errors.py, kill -9 of an embedded writer in test_crash.py.)

Each compares the database with a simple model of what was acknowledged."""
from __future__ import annotations

import os
import random
import threading

import httpx
import numpy as np
import pytest

import vectordb
from vectordb.errors import InvalidArgumentError, VectorDBError

LONG = os.environ.get("VECTORDB_STRESS", "").lower() == "long"


def scale(ci: int, long: int) -> int:
    return long if LONG else ci


def vec(key: str, version: int, d: int = 8) -> list:
    rnd = random.Random(f"{key}/{version}")
    return [rnd.uniform(-1, 1) for _ in range(d)]


def test_threads_on_one_client_with_eviction_match_a_model(tmp_path):
    """Threads write and read several collections through one client that keeps at most two open,
    so collections are closed and reopened under them; the end state equals each thread's model."""
    n_threads, n_ops, n_cols = scale(4, 8), scale(150, 3000), 4
    client = vectordb.PersistentClient(tmp_path / "db", max_cached=2)
    cols = [client.create_collection(f"col{i}") for i in range(n_cols)]
    models: list = [{} for _ in range(n_threads)]  # per thread: (col, id) -> (version, tag)
    errors: list = []

    def worker(t: int) -> None:
        rnd = random.Random(t)
        model = models[t]
        try:
            for op_no in range(n_ops):
                c = rnd.randrange(n_cols)
                col = cols[c]
                key = f"t{t}-{rnd.randrange(40)}"
                op = rnd.choice(["add", "upsert", "update", "delete", "get", "query", "delete_where"])
                if op in ("add", "upsert", "update"):
                    exists = (c, key) in model
                    getattr(col, op)(ids=[key], embeddings=[vec(key, op_no)], metadatas=[{"tag": op_no % 3}])
                    if op == "upsert" or (op == "add" and not exists) or (op == "update" and exists):
                        model[(c, key)] = (op_no, op_no % 3)
                elif op == "delete":
                    col.delete(ids=[key])
                    model.pop((c, key), None)
                elif op == "delete_where":
                    tag = rnd.randrange(3)
                    mine = [k for (cc, k), (_, tg) in model.items() if cc == c and tg == tag]
                    col.delete(ids=list(dict.fromkeys(mine + [key])), where={"tag": tag})
                    for k in mine:
                        del model[(c, k)]
                elif op == "get":
                    got = col.get(ids=[key], include=["embeddings", "metadatas"])
                    if (c, key) in model:
                        version, tag = model[(c, key)]
                        assert got["ids"] == [key] and got["metadatas"] == [{"tag": tag}]
                        np.testing.assert_allclose(got["embeddings"][0], vec(key, version), rtol=1e-6)
                    else:
                        assert got["ids"] == []
                else:
                    col.query(query_embeddings=[vec(key, 0)], n_results=3)
        except Exception as e:  # noqa: BLE001 - reported below with the thread
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    client.close()
    client = vectordb.PersistentClient(tmp_path / "db", max_cached=2)
    for c in range(n_cols):
        got = client.get_collection(f"col{c}").get(include=["embeddings", "metadatas"])
        expect = {k: v for m in models for (cc, k), v in m.items() if cc == c}
        assert sorted(got["ids"]) == sorted(expect)
        for k, e, md in zip(got["ids"], got["embeddings"], got["metadatas"]):
            assert md == {"tag": expect[k][1]}
            np.testing.assert_allclose(e, vec(k, expect[k][0]), rtol=1e-6)
    client.close()


def test_kill9_of_the_server_under_load_loses_no_acknowledged_write(tmp_path):
    """Writers add batches over HTTP while the server is killed with SIGKILL at random moments;
    after each restart every acknowledged record is there, bit for bit."""
    import time

    import server_helpers

    rounds, rnd = scale(2, 20), random.Random(5)
    path = tmp_path / "db"
    acked: dict = {}
    next_id = 0
    for _round in range(rounds):
        proc, base, _ = server_helpers.start_server(path)
        stop = threading.Event()
        lock = threading.Lock()

        def writer(w: int) -> None:
            nonlocal next_id
            with httpx.Client(base_url=base, timeout=30) as http:
                http.post("/collections", json={"name": "load", "get_or_create": True})
                while not stop.is_set():
                    with lock:
                        start, next_id = next_id, next_id + 20
                    ids = [f"r{i}" for i in range(start, start + 20)]
                    body = {"ids": ids, "embeddings": [vec(i, 0) for i in ids]}
                    try:
                        if http.post("/collections/load/add", json=body).status_code == 200:
                            with lock:
                                acked.update((i, vec(i, 0)) for i in ids)
                    except httpx.TransportError:
                        return  # killed: this batch was never acknowledged

        writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for w in writers:
            w.start()
        time.sleep(0.3 + rnd.random())
        server_helpers.stop_server(proc, kill=True)
        stop.set()
        for w in writers:
            w.join()
    client = vectordb.PersistentClient(path)
    got = client.get_collection("load").get(include=["embeddings"])
    have = dict(zip(got["ids"], got["embeddings"]))
    assert acked, "no write was acknowledged before the kills"
    missing = [i for i in acked if i not in have]
    assert missing == []
    for i, v in acked.items():
        assert np.array_equal(have[i], np.asarray(v, np.float32))
    client.close()


MALFORMED = [
    ("POST", "/collections", b"{"),
    ("POST", "/collections", b'{"name": "x"'),
    ("POST", "/collections", b'{"name": 5}'),
    ("POST", "/collections", b'{"name": "okname", "dimension": 1e39}'),
    ("POST", "/collections", b'{"name": "okname", "dimension": -1}'),
    ("POST", "/collections", b'{"name": "okname", "dimension": "3"}'),
    ("POST", "/collections", b'{"name": "../etc"}'),
    ("POST", "/collections", b"[]"),
    ("POST", "/collections", b"null"),
    ("POST", "/collections", "\u00ff".encode("latin-1")),
    ("POST", "/collections/good/add", b'{"ids": ["a"], "embeddings": [[NaN, 1]]}'),
    ("POST", "/collections/good/add", b'{"ids": ["a"], "embeddings": [[1, 2, 3]]}'),
    ("POST", "/collections/good/add", b'{"ids": [], "embeddings": []}'),
    ("POST", "/collections/good/add", b'{"ids": ["a", "a"], "embeddings": [[1, 2], [1, 2]]}'),
    ("POST", "/collections/good/add", b'{"ids": ["a"], "embeddings": [[1e39, 2]]}'),
    ("POST", "/collections/good/add", b'{"ids": ["' + b"x" * 5000 + b'"], "embeddings": [[1, 2]]}'),
    ("POST", "/collections/good/add", b'{"ids": ["a"], "embeddings": [[1, 2]], "metadatas": [{"$k": 1}]}'),
    ("POST", "/collections/good/add",
     b'{"ids": ["a"], "embeddings": [[1, 2]], "metadatas": [{"k": 18446744073709551616}]}'),
    ("POST", "/collections/good/query", b'{"query_embeddings": [[1, 2]], "n_results": 18446744073709551616}'),
    ("POST", "/collections/good/query", b'{"query_embeddings": [[1, 2]], "n_results": 1e12}'),
    ("POST", "/collections/good/query", b'{"query_embeddings": [[1, 2]], "n_results": 0}'),
    ("POST", "/collections/good/get", b'{"limit": 18446744073709551616}'),
    ("POST", "/collections/good/get", b'{"offset": -1}'),
    ("POST", "/collections/good/get", b'{"where_document": {"$regex": "(a)\\\\1"}}'),
    ("POST", "/collections/good/get", b'{"where_document": {"$regex": "("}}'),
    ("POST", "/collections/good/get", b'{"where": {"a": {"$gt": "x"}}}'),
    ("POST", "/collections/good/get", b'{"where": ' + b'{"$and": [' * 200 + b'{"a": 1}' + b"]}" * 200 + b"}"),
    ("POST", "/collections/good/delete", b"{}"),
    ("GET", "/collections?limit=18446744073709551616", b""),
    ("GET", "/collections?limit=-1", b""),
]


def test_malformed_requests_are_4xx_and_change_nothing(tmp_path):
    import server_helpers

    proc, base, _ = server_helpers.start_server(tmp_path / "db")
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.post("/collections", json={"name": "good"}).status_code == 200
            keep = {"ids": ["keep"], "embeddings": [[0.5, 0.25]]}
            assert http.post("/collections/good/add", json=keep).status_code == 200
            cases = list(MALFORMED)
            rnd = random.Random(9)
            valid = b'{"ids": ["m"], "embeddings": [[1.0, 2.0]], "metadatas": [{"k": "v"}], "documents": ["d"]}'
            for _ in range(scale(60, 3000)):  # random byte damage to a valid body
                body = bytearray(valid)
                for _ in range(rnd.randint(1, 4)):
                    body[rnd.randrange(len(body))] = rnd.randrange(256)
                cases.append(("POST", "/collections/good/upsert", bytes(body)))
            for method, url, body in cases:
                r = http.request(method, url, content=body, headers={"content-type": "application/json"})
                assert r.status_code < 500, (url, body[:200], r.status_code, r.text[:300])
                if body in (b"{}",) or url.endswith("/upsert"):
                    continue
                assert 400 <= r.status_code < 500, (url, body[:200], r.status_code, r.text[:300])
            assert http.get("/health").status_code == 200
            got = http.post("/collections/good/get", json={"include": ["embeddings"]}).json()
            assert "keep" in got["ids"] and set(got["ids"]) <= {"keep", "m"}
            names = [c["name"] for c in http.get("/collections").json()]
            assert names == ["good"]
    finally:
        server_helpers.stop_server(proc)
    client = vectordb.PersistentClient(tmp_path / "db")  # and the database opens
    assert [c.name for c in client.list_collections()] == ["good"]
    client.close()


def test_open_close_churn_keeps_every_record(tmp_path):
    """Clients opened and closed over and over, collections created, evicted and deleted, records
    added between: after every reopen the database holds exactly what was written."""
    rounds, rnd = scale(15, 400), random.Random(3)
    path = tmp_path / "db"
    model: dict = {}  # name -> {id: version}
    for r in range(rounds):
        with vectordb.PersistentClient(path, max_cached=1) as client:
            assert {c.name: c.count() for c in client.list_collections()} == {n: len(m) for n, m in model.items()}
            for _ in range(rnd.randint(1, 4)):
                choice = rnd.random()
                if choice < 0.15 and model:
                    name = rnd.choice(sorted(model))
                    client.delete_collection(name)
                    del model[name]
                    continue
                name = f"churn{rnd.randrange(5)}"
                col = client.get_or_create_collection(name)
                m = model.setdefault(name, {})
                ids = [f"{name}-{rnd.randrange(50)}" for _ in range(rnd.randint(1, 6))]
                ids = list(dict.fromkeys(ids))
                col.upsert(ids=ids, embeddings=[vec(i, r) for i in ids])
                m.update((i, r) for i in ids)
                if rnd.random() < 0.2:
                    col.checkpoint()
    with vectordb.PersistentClient(path) as client:
        for name, m in model.items():
            got = client.get_collection(name).get(include=["embeddings"])
            assert sorted(got["ids"]) == sorted(m)
            for i, e in zip(got["ids"], got["embeddings"]):
                np.testing.assert_allclose(e, vec(i, m[i]), rtol=1e-6)


def test_invalid_input_never_reaches_the_disk(tmp_path):
    """Every kind of bad input is refused and the database reopens with exactly the good records."""
    path = tmp_path / "db"
    with vectordb.PersistentClient(path) as client:
        col = client.create_collection("strict")
        col.add(ids=["good"], embeddings=[[1.0, 2.0]])
        bad_calls = [
            lambda: client.create_collection("huge", dimension=2**70),
            lambda: col.add(ids=["x"], embeddings=[[float("nan"), 1.0]]),
            lambda: col.add(ids=["x"], embeddings=[[1.0, 2.0, 3.0]]),
            lambda: col.add(ids=["x" * 5000], embeddings=[[1.0, 2.0]]),
            lambda: col.add(ids=["x", "x"], embeddings=[[1.0, 2.0]] * 2),
            lambda: col.add(ids=["x"], embeddings=[[1.0, 2.0]], metadatas=[{"k": 2**64}]),
            lambda: col.get(where_document={"$regex": "(?=x)"}),
            lambda: col.query(query_embeddings=[[1.0, 2.0]], n_results=2**64),
        ]
        for call in bad_calls:
            with pytest.raises((InvalidArgumentError, VectorDBError)):
                call()
    with vectordb.PersistentClient(path) as client:
        assert [c.name for c in client.list_collections()] == ["strict"]
        assert client.get_collection("strict").get()["ids"] == ["good"]
