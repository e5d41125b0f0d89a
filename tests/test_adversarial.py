"""Regression tests for defects found by attacking the database: bad input that reached the disk,
inputs at and past the documented limits, races between threads of one client, and failures of
close. Each test failed before its fix."""
from __future__ import annotations

import os

import httpx
import numpy as np
import pytest

import vectordb
from vectordb import _core
from vectordb.errors import InvalidArgumentError
from vectordb.validation import MAX_DIMENSION

# ---- dimensions: never written past what the reader accepts ----

def test_max_dimension_is_the_engines():
    assert MAX_DIMENSION == _core.MAX_DIMENSION == 2**20


@pytest.mark.parametrize("dimension", [2**70, 2**62, MAX_DIMENSION + 1])
def test_create_collection_refuses_a_dimension_above_the_maximum(client, client_kind, dimension, reopen):
    with pytest.raises(InvalidArgumentError, match="dimension"):
        client.create_collection("huge", dimension=dimension)
    assert client.list_collections() == []
    col = client.create_collection("fine", dimension=MAX_DIMENSION)  # the maximum itself is allowed
    assert col.configuration.get("dimension", MAX_DIMENSION) == MAX_DIMENSION
    if client_kind == "persistent":
        assert [c.name for c in reopen(client).list_collections()] == ["fine"]


def test_first_add_of_a_vector_above_the_maximum_is_refused_and_the_collection_reopens(reopen):
    client = reopen()
    col = client.create_collection("free")  # dimension fixed by the first add
    with pytest.raises(InvalidArgumentError, match="dimension"):
        col.add(ids=["big"], embeddings=np.zeros((1, 1_100_000), np.float32))
    assert col.count() == 0
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    client = reopen(client)  # was: CorruptionError (MANIFEST holds an invalid dimension)
    assert client.get_collection("free").get(include=["embeddings"])["embeddings"].tolist() == [[1.0, 2.0]]


def test_engine_refuses_a_dimension_it_could_not_reopen_before_writing(tmp_path):
    d = tmp_path / "col"
    d.mkdir()
    with pytest.raises(InvalidArgumentError, match="dimension"):
        _core.Collection(str(d), "l2", MAX_DIMENSION + 1)
    assert os.listdir(d) == []
    col = _core.Collection(str(d), "l2", 0)
    with pytest.raises(InvalidArgumentError, match="dimension"):
        col.write(1, ["x"], np.zeros((1, MAX_DIMENSION + 1), np.float32), None, None)
    col.close()
    _core.Collection(str(d), "l2", 0).close()


def test_server_refuses_a_huge_dimension_and_the_database_still_opens(tmp_path):
    import server_helpers

    path = tmp_path / "db"
    proc, base, _ = server_helpers.start_server(path)
    try:
        for raw in (b"1e39", str(2**70).encode(), str(MAX_DIMENSION + 1).encode()):
            body = b'{"name": "huge", "dimension": ' + raw + b"}"
            r = httpx.post(base + "/collections", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, (raw, r.status_code, r.text)
            assert "dimension" in r.text
        assert httpx.get(base + "/health").status_code == 200
    finally:
        server_helpers.stop_server(proc)
    client = vectordb.PersistentClient(path)  # was: CorruptionError naming the MANIFEST
    assert client.list_collections() == []
    client.close()


# ---- regular expressions: linear time, so no pattern stalls the database ----

@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)b", "(?<!a)b", "a++"])
def test_regex_needing_backtracking_is_refused_naming_the_pattern(client, pattern):
    col = client.create_collection("docs")
    col.add(ids=["1"], embeddings=[[1.0]], documents=["ab"])
    for wd in ({"$regex": pattern}, {"$not_regex": pattern}):
        with pytest.raises(InvalidArgumentError, match="regular expression") as info:
            col.get(where_document=wd)
        assert pattern in str(info.value).replace("\\\\", "\\")


def test_catastrophic_patterns_answer_at_once_and_health_stays_up(tmp_path):
    """Was: Python's backtracking re ran for hours holding the GIL; /health stopped answering."""
    import threading

    import server_helpers

    proc, base, _ = server_helpers.start_server(tmp_path / "db")
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            assert http.post("/collections", json={"name": "docs"}).status_code == 200
            docs = ["a" * 5000 + "!" for _ in range(300)] + ["a" * 10]
            ids = [str(i) for i in range(len(docs))]
            r = http.post("/collections/docs/add", json={"ids": ids, "embeddings": [[1.0]] * len(docs),
                                                         "documents": docs})
            assert r.status_code in (200, 201), r.text
            for pattern in ("(a+)+$", "(a|aa)+$"):
                result: dict = {}

                def query() -> None:
                    result["r"] = http.post("/collections/docs/get",
                                            json={"where_document": {"$regex": pattern}, "include": []})

                t = threading.Thread(target=query)
                t.start()
                assert httpx.get(base + "/health", timeout=30).status_code == 200
                t.join(120)
                assert not t.is_alive(), f"the query for {pattern!r} did not finish"
                assert result["r"].status_code == 200, result["r"].text
                assert result["r"].json()["ids"] == [str(len(docs) - 1)]
    finally:
        server_helpers.stop_server(proc, kill=True)


# ---- close on a full disk ----

@pytest.mark.parametrize("small_fs", ["16m"], indirect=True)
def test_close_failing_on_a_full_disk_leaves_the_client_closed_and_the_data_whole(small_fs, fill_fs):
    """Was: close() raised ENOSPC from its checkpoint and released the LOCK, while the client kept
    reading and writing (beside any process that then opened the database)."""
    path = os.path.join(small_fs, "db")
    client = vectordb.PersistentClient(path)
    cols = [client.create_collection(f"col{i}") for i in range(2)]
    vecs = np.random.default_rng(1).random((4300, 256), dtype=np.float32)  # > 4 MiB of log: close checkpoints
    for col in cols:
        col.add(ids=[str(i) for i in range(len(vecs))], embeddings=vecs)
    filler = fill_fs(small_fs)
    with pytest.raises(OSError) as info:
        client.close()
    assert info.value.errno == 28  # ENOSPC
    for col in cols:
        with pytest.raises(vectordb.errors.VectorDBError, match="closed"):
            col.add(ids=["late"], embeddings=vecs[:1])
        with pytest.raises(vectordb.errors.VectorDBError, match="closed"):
            col.count()
    client.close()  # a second close is a no-op
    os.remove(filler)
    client = vectordb.PersistentClient(path)  # the lock is free, and nothing was lost
    for i in range(2):
        got = client.get_collection(f"col{i}").get(include=["embeddings"])
        assert got["ids"] == [str(i) for i in range(len(vecs))]
        assert np.array_equal(got["embeddings"], vecs)
    client.close()


# ---- writes read the caller's array once ----

@pytest.mark.parametrize("op", ["add", "upsert", "update"])
def test_a_write_validates_and_stores_one_snapshot_of_the_callers_array(client_kind, persistent_path, op,
                                                                        monkeypatch, reopen):
    """Was: the engine read the caller's float32 array after validation (twice, GIL released): a
    thread writing NaN into it meanwhile got NaN into the database, past validation."""
    if client_kind == "http":
        pytest.skip("the HTTP client serializes the array once")
    from vectordb.records import LocalRecords

    client = vectordb.PersistentClient(persistent_path) if client_kind == "persistent" else vectordb.EphemeralClient()
    col = client.create_collection("snap")
    col.add(ids=["0", "1", "2"], embeddings=np.zeros((3, 4), np.float32))
    emb = np.ones((3, 4), np.float32)
    real = LocalRecords._write_call

    def another_thread_writes_after_validation(self, *args):
        emb[:] = np.nan
        return real(self, *args)

    monkeypatch.setattr(LocalRecords, "_write_call", another_thread_writes_after_validation)
    getattr(col, op)(ids=["0", "1", "2"] if op != "add" else ["3", "4", "5"], embeddings=emb)
    monkeypatch.undo()
    got = col.get(include=["embeddings"])["embeddings"]
    assert np.isfinite(got).all()
    assert (got == 1).sum() == 12
    if client_kind == "persistent":
        assert np.array_equal(reopen(client).get_collection("snap").get(include=["embeddings"])["embeddings"], got)
    else:
        client.close()


def test_engine_memory_and_log_hold_the_same_vectors_when_the_buffer_changes_during_a_write(tmp_path):
    """The engine's own guarantee (a caller of _core that shares its buffer): each write is applied
    from the bytes it logged, so what get returns before a reopen is what the reopen returns."""
    import threading

    d = tmp_path / "col"
    d.mkdir()
    col = _core.Collection(str(d), "l2", 0)
    buf = np.zeros((600, 64), np.float32)  # 20 writes: < 4 MiB of log, so close does not checkpoint
    stop = threading.Event()

    def scribble() -> None:
        k = 0.0
        while not stop.is_set():
            k += 1.0
            buf[:] = k

    t = threading.Thread(target=scribble)
    t.start()
    try:
        for i in range(20):
            col.write(1, [f"{i}-{j}" for j in range(len(buf))], buf, None, None)
    finally:
        stop.set()
        t.join()
    before = col.get(None, None, 0, -1, 1)
    col.close()
    col = _core.Collection(str(d), "l2", 0)
    after = col.get(None, None, 0, -1, 1)
    col.close()
    assert before[0] == after[0]
    assert np.array_equal(before[1], after[1])


# ---- documented limits of counts and ids, the same in every client ----

@pytest.mark.parametrize("value", [10**12, 2**32, 2**64])
def test_counts_beyond_the_limit_are_refused(client, value):
    from vectordb.validation import MAX_COUNT

    col = client.create_collection("counts")
    col.add(ids=["a", "b"], embeddings=[[1.0], [2.0]])
    with pytest.raises(InvalidArgumentError, match="n_results"):
        col.query(query_embeddings=[[1.0]], n_results=value)
    for what in ("limit", "offset"):
        with pytest.raises(InvalidArgumentError, match=what):
            col.get(**{what: value})
        with pytest.raises(InvalidArgumentError, match=what):
            client.list_collections(**{what: value})
    with pytest.raises(InvalidArgumentError, match="limit"):
        col.peek(limit=value)
    # The limit itself: everything there is.
    assert sorted(col.query(query_embeddings=[[1.0]], n_results=MAX_COUNT)["ids"][0]) == ["a", "b"]
    assert col.get(limit=MAX_COUNT)["ids"] == ["a", "b"]
    assert col.get(offset=MAX_COUNT)["ids"] == []


def test_ids_longer_than_the_limit_are_refused(client):
    from vectordb.validation import MAX_ID_BYTES

    col = client.create_collection("ids")
    longest = "é" * (MAX_ID_BYTES // 2)  # 2 bytes each: exactly the limit
    col.add(ids=[longest], embeddings=[[1.0]])
    assert col.get(ids=[longest])["ids"] == [longest]
    for too_long in ("x" * 100_000, "é" * (MAX_ID_BYTES // 2) + "x"):
        for call in (lambda i: col.add(ids=[i], embeddings=[[1.0]]), lambda i: col.get(ids=[i]),
                     lambda i: col.upsert(ids=[i], embeddings=[[1.0]]), lambda i: col.delete(ids=[i])):
            with pytest.raises(InvalidArgumentError, match="bytes"):
                call(too_long)
    assert col.count() == 1


# ---- from reading the code ----

def test_filter_cannot_be_reinitialized_under_a_running_query():
    """Was: Filter.__init__ called again freed the compiled program another thread might be using."""
    from vectordb.filters import compile_filter

    f = _core.Filter(compile_filter({"a": 1}, None))
    with pytest.raises(RuntimeError, match="already initialized"):
        f.__init__(compile_filter({"b": 2}, None))
    col = _core.Collection(None, "l2", 0)
    col.write(1, ["x", "y"], np.zeros((2, 2), np.float32), [{"a": 1}, {"b": 2}], None)
    assert col.get(None, f, 0, -1, 0)[0] == ["x"]  # still the first program


def test_a_writes_warning_goes_to_its_own_thread():
    """Was: the warning of one thread's write was kept on the collection and fetched by a second
    call, so another thread's write could take it (and 1 meant both 'a warning' and 'closed')."""
    import threading

    col = _core.Collection(None, "l2", 0, True, True, 100)  # IVF, 100 lists
    col.write(1, [str(i) for i in range(10)], np.random.default_rng(0).random((10, 4), dtype=np.float32), None, None)
    col.rebuild()  # 10 vectors, 100 lists: stays exact and leaves a note
    other: list = []
    t = threading.Thread(target=lambda: other.append(col.take_warning()))
    t.start()
    t.join()
    assert other == [None]
    col.close()
    note = col.take_warning()  # closed meanwhile: still this thread's note
    assert note is not None and "fewer than" in note
    assert col.take_warning() is None  # once


def test_dealloc_checkpoint_lets_other_threads_run(tmp_path):
    """Was: a collection dropped without close() checkpointed (compaction, a snapshot, fsyncs) in its
    dealloc with the GIL held, stopping every other thread of the process meanwhile."""
    import threading

    d = tmp_path / "col"
    d.mkdir()
    col = _core.Collection(str(d), "l2", 0)
    vecs = np.random.default_rng(2).random((30000, 64), dtype=np.float32)
    col.write(1, [str(i) for i in range(len(vecs))], vecs, None, None)  # 7.7 MiB of log: closing checkpoints
    ticks = [0]
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=tick)
    t.start()
    try:
        while ticks[0] == 0:
            pass
        before = ticks[0]
        del col  # the last reference: dealloc closes and checkpoints
        during = ticks[0] - before
    finally:
        stop.set()
        t.join()
    assert during > 0, "no other thread ran while the dropped collection checkpointed"
    assert any(n.startswith("gen-") for n in os.listdir(d))  # it did checkpoint


def test_delete_by_ids_and_filter_is_one_operation(monkeypatch, tmp_path):
    """Was: delete(ids=..., where=...) read the matching ids, then deleted them in a second call: an
    upsert by another thread in between (making a record no longer match) was deleted anyway, an
    outcome of no order of the two operations."""
    from vectordb.client import _Database

    client = vectordb.PersistentClient(tmp_path / "db")
    col = client.create_collection("atomic")
    col.add(ids=["a", "b"], embeddings=[[1.0], [2.0]], metadatas=[{"tag": "old"}, {"tag": "old"}])
    real = _Database._engine_call
    raced: list = []

    def other_thread_upserts_after_the_first_call(self, cid, method, *args):
        out = real(self, cid, method, *args)
        if not raced and method in ("get", "delete_where"):
            raced.append(method)
            real(self, cid, "write", 2, ["a"], np.array([[5.0]], np.float32), [{"tag": "new"}], None)
        return out

    monkeypatch.setattr(_Database, "_engine_call", other_thread_upserts_after_the_first_call)
    try:
        col.delete(ids=["a", "b"], where={"tag": "old"})
    finally:
        monkeypatch.undo()
    # Delete then upsert: "a" is back with its new tag. (Upsert then delete: "a" no longer matches.)
    got = col.get(include=["metadatas"])
    assert got["ids"] == ["a"] and got["metadatas"] == [{"tag": "new"}]
    client.close()


class _SlowHandle:
    """An engine handle whose close waits for a gate (a slow checkpoint)."""

    def __init__(self, h, gate):
        self._h, self._gate = h, gate

    def close(self):
        self._gate.wait(60)
        return self._h.close()

    def __getattr__(self, name):
        return getattr(self._h, name)


@pytest.mark.parametrize("slow", ["open", "close"])
def test_a_slow_open_or_close_of_one_collection_does_not_stall_the_others(tmp_path, monkeypatch, slow):
    """Was: opening an evicted collection (log replay) and closing one (checkpoint) ran under the
    client-wide lock, so every thread of the client waited for one slow collection."""
    import threading

    from vectordb.client import _Database

    client = vectordb.PersistentClient(tmp_path / "db", max_cached=2)
    cols = {n: client.create_collection(n) for n in ("aaa", "bbb", "ccc")}  # "aaa" evicted
    for n, col in cols.items():
        col.add(ids=[n], embeddings=[[1.0]])
    cols["ccc"].count()  # cached: bbb, ccc (ccc most recent)
    gate = threading.Event()
    real_open = _Database._open_engine

    def open_engine(self, cid, cfg):
        h = real_open(self, cid, cfg)
        if slow == "open":
            gate.wait(60)
            return h
        return _SlowHandle(h, gate)

    monkeypatch.setattr(_Database, "_open_engine", open_engine)
    if slow == "close":  # make bbb's handle the slow closer: evict and reopen it with the patch
        cols["aaa"].count()
        cols["bbb"].count()
        gate.set()
        cols["ccc"].count()
        gate.clear()
        # cached now: bbb (slow to close), ccc; using aaa evicts bbb, whose close blocks.
    slow_one = threading.Thread(target=lambda: cols["aaa"].count())
    slow_one.start()
    other: list = []
    t = threading.Thread(target=lambda: other.append(cols["ccc"].get()["ids"]))
    t.start()
    t.join(20)
    stalled = t.is_alive()
    gate.set()
    slow_one.join(60)
    t.join(60)
    assert not stalled, f"a slow {slow} of one collection stalled a call on another"
    assert other == [["ccc"]]
    for n, col in cols.items():
        assert col.get()["ids"] == [n]
    client.close()
