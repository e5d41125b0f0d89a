"""Crash safety: a writer process is killed with SIGKILL at random moments (during adds, upserts,
deletes, batches and checkpoints); after each kill the database reopens, every acknowledged write
is there, and the write (or batch) in flight is either whole or absent.

VECTORDB_CRASH_TRIALS sets the number of trials (default 50; a long run uses thousands)."""
import glob
import os
import random
import textwrap

import numpy as np
import pytest
from crash_helpers import kill_writer_at_random

import vectordb

TRIALS = int(os.environ.get("VECTORDB_CRASH_TRIALS", "50"))
DIM = 8

WRITER = textwrap.dedent(
    """
    import sys, numpy as np, vectordb
    path, start = sys.argv[1], int(sys.argv[2])
    client = vectordb.PersistentClient(path)
    col = client.get_or_create_collection("crash", **KW)
    def batch(i):
        n = 1 + i % 37
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
            col.upsert(ids=ids, embeddings=vecs, metadatas=[{"batch": i, "up": True}] * len(ids))
        elif op == 9:
            col.checkpoint()
        elif op == 6:  # one batch of a few adds: durable together at its end, or not at all
            with col.batch():
                for s in range(0, len(ids), 13):
                    part = ids[s:s + 13]
                    col.add(ids=part, embeddings=vecs[s:s + 13], metadatas=[{"batch": i}] * len(part),
                            documents=[f"doc {i}"] * len(part))
        else:
            col.add(ids=ids, embeddings=vecs, metadatas=[{"batch": i}] * len(ids), documents=[f"doc {i}"] * len(ids))
        print(f"ack {op} {i}", flush=True)
        i += 1
    """
).replace("DIM", str(DIM))


def batch(i):
    n = 1 + i % 37
    rng = np.random.default_rng(i)
    return [f"b{i}-{j}" for j in range(n)], rng.standard_normal((n, DIM)).astype(np.float32)


def apply(model, op, i):
    ids, vecs = batch(i)
    if op == 7 and i >= 3:
        for k in batch(i - 3)[0]:
            model.pop(k, None)
    elif op == 8:
        for k, v in zip(ids, vecs):
            model[k] = (v, {"batch": i, "up": True})
    elif op == 9:
        pass
    else:
        for k, v in zip(ids, vecs):
            model.setdefault(k, (v, {"batch": i}))


def check(path, model, in_flight):
    client = vectordb.PersistentClient(path)
    try:
        col = client.get_or_create_collection("crash")
        if model:
            # A search first (through the codes of a quantized collection, re-ranking mapped rows),
            # then every row read back.
            some = next(iter(model.values()))[0]
            assert col.query(query_embeddings=[some], n_results=1, include=["distances"])["distances"][0][0] <= 1e-5
            lists = col.stats().get("n_clusters") or 0
            if lists:  # an IVF index: every list probed, so every list's codes are read (and checked)
                got = col.query(query_embeddings=[some], n_results=1, include=["distances"], n_probe=lists)
                assert got["distances"][0][0] <= 1e-5
        got = col.get(include=["embeddings", "metadatas"])
        state = {k: (v, m) for k, v, m in zip(got["ids"], got["embeddings"], got["metadatas"])}
        candidates = [model]
        if in_flight is not None:
            after = dict(model)
            apply(after, *in_flight)
            candidates.append(after)
        for cand in candidates:
            if state.keys() == cand.keys() and all(
                np.array_equal(state[k][0], cand[k][0]) and state[k][1] == cand[k][1] for k in cand
            ):
                return cand
        missing = sorted(set(model) - set(state))[:5]
        extra = sorted(set(state) - set(candidates[-1]))[:5]
        raise AssertionError(f"state after kill matches neither before nor after {in_flight}: "
                             f"missing {missing}, extra {extra}")
    finally:
        client.close()


@pytest.mark.parametrize("kw", [{}, {"quantization": "sq8"}, {"use_ivf": True, "quantization": "pq4"}],
                         ids=["flat", "sq8", "ivf-pq4"])
def test_kill9_loses_no_acknowledged_write(tmp_path, kw):
    """Kills land in adds, upserts, deletes and checkpoints of a collection whose snapshot vectors
    are mapped (and, with sq8, whose codes are rewritten at each checkpoint; with IVF pq4, whose
    index is trained as it grows and whose codes are mapped from ivfpq4.bin at open and after each
    checkpoint, and copied out of it by the writes that change their lists)."""
    path = str(tmp_path / "db")
    rnd = random.Random(12345)
    model: dict = {}
    next_batch = 0
    for _ in range(TRIALS):
        script = WRITER.replace("KW", f"dict({kw!r})")
        acked, in_flight = kill_writer_at_random(script, path, next_batch, rnd, 0.25)
        for op, i in acked:
            apply(model, op, i)
            next_batch = i + 1
        model = check(path, model, in_flight)
        if in_flight is not None:
            next_batch = in_flight[1] + 1
    assert next_batch > TRIALS  # the writers made progress: the kills landed mid-stream
    if kw.get("use_ivf"):  # the kills landed in a trained index with its codes on disk
        client = vectordb.PersistentClient(path)
        try:
            assert client.get_or_create_collection("crash").stats()["trained"]
        finally:
            client.close()
        assert glob.glob(os.path.join(path, "collections", "*", "gen-*", "ivfpq4.bin"))


# The start of the batch writers: argv[1] the database, argv[2] "flat" or "ivf".
WRITER_HEAD = textwrap.dedent(
    """
    import sys, time, numpy as np, vectordb
    client = vectordb.PersistentClient(sys.argv[1])
    col = client.get_or_create_collection("crash", use_ivf=sys.argv[2] == "ivf")
    rng = np.random.default_rng(0)
    """
)

BATCH_WRITER = WRITER_HEAD + textwrap.dedent(
    """
    col.add(ids=[f"a{j}" for j in range(1500)], embeddings=rng.standard_normal((1500, 8)).astype(np.float32))
    col.begin_batch()
    for s in range(0, 3000, 500):
        col.add(ids=[f"b{j}" for j in range(s, s + 500)], embeddings=rng.standard_normal((500, 8)).astype(np.float32))
    col.delete(ids=["a0"])
    print("in batch", flush=True)
    time.sleep(60)
    """
)


def _run_until_in_batch_then_kill(script, path, kind):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", script, path, kind], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "in batch"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    return vectordb.PersistentClient(path)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_kill9_inside_a_batch_leaves_the_state_before_it(tmp_path, kind):
    """A batch is written once, at its end: killed before, the collection is as it was before the batch
    (writes before it kept, none of the batch's), and it takes writes again."""
    client = _run_until_in_batch_then_kill(BATCH_WRITER, str(tmp_path / "db"), kind)
    try:
        col = client.get_collection("crash")
        assert col.count() == 1500
        assert col.get(ids=["a0", "b0"])["ids"] == ["a0"]
        col.add(ids=["c"], embeddings=[[1.0] * 8])
        assert col.count() == 1501
    finally:
        client.close()


@pytest.mark.parametrize("kind,dim", [("ivf", 8), ("flat", 8), ("flat", 128)])
def test_batch_end_makes_its_writes_durable(tmp_path, kind, dim):
    """Leaving the batch is the acknowledgement: after it, a kill -9 loses nothing of the batch
    (flat, dim 8: small beside the collection, one log append; dim 128: a checkpoint; ivf: the
    retraining the batch triggers checkpoints)."""
    new_generation = kind == "ivf" or dim == 128
    script = BATCH_WRITER.replace(", 8))", f", {dim}))").replace(
        'print("in batch", flush=True)',
        'import glob, os\n'
        'gens = lambda: sorted(glob.glob(os.path.join(sys.argv[1], "collections", "*", "gen-*")))\n'
        'before = gens()\n'
        'col.end_batch()\n'
        f'assert (gens() != before) == {new_generation}\n'
        'print("in batch", flush=True)')
    client = _run_until_in_batch_then_kill(script, str(tmp_path / "db"), kind)
    try:
        col = client.get_collection("crash")
        assert col.count() == 4499
        assert col.get(ids=["a0", "b0", "b2999"])["ids"] == ["b0", "b2999"]
        assert col.stats()["index"] == kind
    finally:
        client.close()


SMALL_BATCH_WRITER = WRITER_HEAD + textwrap.dedent(
    """
    col.add(ids=[f"a{j}" for j in range(3000)], embeddings=rng.standard_normal((3000, 8)).astype(np.float32))
    col.checkpoint()
    col.begin_batch()
    col.add(ids=[f"b{j}" for j in range(10)], embeddings=rng.standard_normal((10, 8)).astype(np.float32))
    col.delete(ids=["a0"])
    col.upsert(ids=["a1"], embeddings=np.zeros((1, 8), np.float32), metadatas=[{"in": "batch"}])
    print("in batch", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_kill9_inside_a_small_batch_leaves_the_state_before_it(tmp_path, kind):
    """A small batch is buffered in memory until its end: killed before, none of it is on disk."""
    client = _run_until_in_batch_then_kill(SMALL_BATCH_WRITER, str(tmp_path / "db"), kind)
    try:
        col = client.get_collection("crash")
        assert col.count() == 3000
        assert col.get(ids=["a0", "a1", "b0"])["ids"] == ["a0", "a1"]
        assert col.get(ids=["a1"])["metadatas"] == [None]
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_small_batch_end_makes_its_writes_durable(tmp_path, kind):
    """end_batch of a small batch returns after its one log append is synced: a kill -9 then loses
    nothing of it, and the snapshot was not rewritten for it."""
    path = str(tmp_path / "db")
    script = SMALL_BATCH_WRITER.replace(
        'print("in batch", flush=True)',
        'import glob, os\n'
        'gens = sorted(glob.glob(os.path.join(sys.argv[1], "collections", "*", "gen-*")))\n'
        'col.end_batch()\n'
        'assert sorted(glob.glob(os.path.join(sys.argv[1], "collections", "*", "gen-*"))) == gens, gens\n'
        'print("in batch", flush=True)')
    client = _run_until_in_batch_then_kill(script, path, kind)
    try:
        col = client.get_collection("crash")
        assert col.count() == 3009
        assert col.get(ids=["a0", "a1", "b0", "b9"])["ids"] == ["a1", "b0", "b9"]
        assert col.get(ids=["a1"])["metadatas"] == [{"in": "batch"}]
        assert col.stats()["index"] == kind
    finally:
        client.close()


LOGGED_BATCH_WRITER = WRITER_HEAD + textwrap.dedent(
    """
    col.add(ids=[f"a{j}" for j in range(1500)], embeddings=rng.standard_normal((1500, 8)).astype(np.float32))
    col.begin_batch()  # a bulk level first: what it buffered is committed when the logged level begins
    col.add(ids=["bulk"], embeddings=rng.standard_normal((1, 8)).astype(np.float32))
    col.begin_batch(log_each_write=True)
    for s in range(0, 1000, 250):
        col.add(ids=[f"b{j}" for j in range(s, s + 250)], embeddings=rng.standard_normal((250, 8)).astype(np.float32))
    col.delete(ids=["a0"])
    print("in batch", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_kill9_inside_a_logged_batch_loses_no_acknowledged_write(tmp_path, kind):
    """The server's batches (begin_batch(log_each_write=True)) span every client's writes, so each
    write is durable when it returns: a kill -9 inside one loses none of them, nor what an enclosing
    bulk level had applied before it began."""
    client = _run_until_in_batch_then_kill(LOGGED_BATCH_WRITER, str(tmp_path / "db"), kind)
    try:
        col = client.get_collection("crash")
        assert col.count() == 1500 + 1 + 1000 - 1
        assert col.get(ids=["a0", "bulk", "b0", "b999"])["ids"] == ["bulk", "b0", "b999"]
        col.add(ids=["c"], embeddings=[[1.0] * 8])
        assert col.count() == 2501
    finally:
        client.close()


def test_logged_batch_end_without_its_begin_is_refused(tmp_path):
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    try:
        col = client.create_collection("crash")
        col.begin_batch()
        with pytest.raises(vectordb.errors.InvalidArgumentError, match="without a matching begin"):
            col.end_batch(log_each_write=True)
        col.end_batch()
    finally:
        client.close()
