"""Storage: reopen, torn log tails, damaged files, leftovers of interrupted checkpoints, the writer lock.

Real files on disk; damage is done to the bytes the engine wrote."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vectordb
from vectordb.errors import CorruptionError, LockedError


def make_db(path, n=200, dim=16, checkpoint=True, extra_after_checkpoint=20, seed=0):
    rng = np.random.default_rng(seed)
    client = vectordb.PersistentClient(path)
    col = client.create_collection("things", metadata={"hnsw:space": "cosine"}, embedding_function=None)
    vecs = rng.standard_normal((n + extra_after_checkpoint, dim)).astype(np.float32)
    ids = [f"id{i}" for i in range(n + extra_after_checkpoint)]
    metas = [{"i": i, "tag": f"t{i % 7}", "f": i / 3, "flag": i % 2 == 0, "l": [i, i + 1]} for i in range(len(ids))]
    docs = [f"document {i}" if i % 3 else None for i in range(len(ids))]
    col.add(ids=ids[:n], embeddings=vecs[:n], metadatas=metas[:n], documents=docs[:n])
    col.delete(ids=["id3", "id4"])
    if checkpoint:
        col.checkpoint()
    col.add(ids=ids[n:], embeddings=vecs[n:], metadatas=metas[n:], documents=docs[n:])
    col.update(ids=["id10"], metadatas=[{"i": None, "new": "yes"}], documents=["changed"])
    expected = col.get(include=["embeddings", "metadatas", "documents"])
    query = col.query(query_embeddings=vecs[:3], n_results=5)
    client.close()
    return expected, query, vecs


def open_things(path):
    client = vectordb.PersistentClient(path)
    return client, client.get_collection("things")


def open_damaged(path, read_vectors: bool = False) -> CorruptionError:
    """Opens a damaged database and counts its collection (read_vectors: then reads every vector):
    the CorruptionError that must come."""
    with pytest.raises(CorruptionError) as info:
        client, col = open_things(path)
        try:
            col.count()
            if read_vectors:
                # Open checks vectors.bin's header; its data chunks are checked when first read.
                col.get(include=["embeddings"])
        finally:
            client.close()
    return info.value


def collection_dir(path):
    (d,) = glob.glob(os.path.join(path, "collections", "*"))
    return d


def test_reopen_gives_identical_results(tmp_path):
    expected, query, vecs = make_db(str(tmp_path))
    client, col = open_things(str(tmp_path))
    got = col.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == expected["ids"]
    assert got["metadatas"] == expected["metadatas"]
    assert got["documents"] == expected["documents"]
    np.testing.assert_array_equal(got["embeddings"], expected["embeddings"])
    want = {"tag": "t3", "f": 10 / 3, "flag": True, "l": [10, 11], "new": "yes"}
    assert got["metadatas"][got["ids"].index("id10")] == want
    again = col.query(query_embeddings=vecs[:3], n_results=5)
    assert again["ids"] == query["ids"]
    assert again["distances"] == query["distances"]
    client.close()


def test_reopen_many_times_with_checkpoints_between(tmp_path):
    path = str(tmp_path)
    rng = np.random.default_rng(1)
    model = {}
    for round_ in range(6):
        client = vectordb.PersistentClient(path)
        col = client.get_or_create_collection("ccc")
        ids = [f"r{round_}-{i}" for i in range(30)]
        vecs = rng.standard_normal((30, 8)).astype(np.float32)
        col.add(ids=ids, embeddings=vecs)
        model.update(zip(ids, vecs))
        gone = [k for k in list(model)[::5]]
        col.delete(ids=gone)
        for k in gone:
            del model[k]
        if round_ % 2:
            col.checkpoint()
        client.close()
    client = vectordb.PersistentClient(path)
    got = client.get_collection("ccc").get(include=["embeddings"])
    assert got["ids"] == list(model)
    np.testing.assert_array_equal(got["embeddings"], np.array(list(model.values())))
    client.close()


def wal_file(path):
    (w,) = glob.glob(os.path.join(collection_dir(path), "wal-*"))
    return w


@pytest.mark.parametrize("tail", [b"\x01\x02\x03", bytes(40), None])
def test_torn_log_tail_is_dropped(tmp_path, tail):
    """What a crash leaves at the end of the log: a short header, a zero-filled tail, or a record cut
    short. The acknowledged writes before it stay; the file is usable for new writes."""
    path = str(tmp_path)
    expected, _, _ = make_db(path)
    w = wal_file(path)
    if tail is None:
        # A whole record, then cut: append a copy of the last record minus its last 10 bytes.
        client, col = open_things(path)
        col.add(ids=["late"], embeddings=np.ones((1, 16), np.float32))
        client.close()
        with open(w, "rb") as f:
            grown = f.read()
        with open(w, "wb") as f:
            f.write(grown[:-10])
    else:
        with open(w, "ab") as f:
            f.write(tail)
    client, col = open_things(path)
    got = col.get()
    assert got["ids"] == expected["ids"]
    col.add(ids=["after"], embeddings=np.ones((1, 16), np.float32))
    client.close()
    client, col = open_things(path)
    assert col.get()["ids"] == expected["ids"] + ["after"]
    client.close()


def damage_positions(size, count=12):
    rng = np.random.default_rng(size)
    picks = set(rng.integers(0, size, count).tolist()) | {0, size // 2, size - 1}
    return sorted(p for p in picks if 0 <= p < size)


FILES = {
    "MANIFEST": lambda d: os.path.join(d, "MANIFEST"),
    "vectors": lambda d: glob.glob(os.path.join(d, "gen-*", "vectors.bin"))[0],
    "vectors_crc": lambda d: glob.glob(os.path.join(d, "gen-*", "vectors.crc"))[0],
    "records": lambda d: glob.glob(os.path.join(d, "gen-*", "records.bin"))[0],
    "ids": lambda d: glob.glob(os.path.join(d, "gen-*", "ids.bin"))[0],
    "wal": lambda d: glob.glob(os.path.join(d, "wal-*"))[0],
}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_bit_flip_anywhere_gives_an_error_naming_the_file(tmp_path, kind):
    base = tmp_path / "base"
    make_db(str(base))
    target_rel = os.path.relpath(FILES[kind](collection_dir(str(base))), str(base))
    size = os.path.getsize(base / target_rel)
    for pos in damage_positions(size):
        for bit in (0, 7):
            work = tmp_path / f"w{pos}-{bit}"
            shutil.copytree(base, work)
            target = work / target_rel
            with open(target, "r+b") as f:
                f.seek(pos)
                b = f.read(1)[0]
                f.seek(pos)
                f.write(bytes([b ^ (1 << bit)]))
            err = open_damaged(str(work), read_vectors=True)
            assert os.path.basename(str(target)) in str(err), str(err)
            shutil.rmtree(work)


@pytest.mark.parametrize("kind", ["MANIFEST", "vectors", "vectors_crc", "records", "ids"])
def test_truncated_snapshot_file_gives_an_error_naming_it(tmp_path, kind):
    base = tmp_path / "base"
    make_db(str(base))
    target_rel = os.path.relpath(FILES[kind](collection_dir(str(base))), str(base))
    size = os.path.getsize(base / target_rel)
    for cut in sorted({0, 1, size // 3, size - 1}):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(base, work)
        os.truncate(work / target_rel, cut)
        assert os.path.basename(target_rel) in str(open_damaged(str(work)))
        shutil.rmtree(work)


def test_truncated_log_keeps_a_prefix_of_the_writes(tmp_path):
    """A cut log is what a crash leaves: every write before the cut is there, whole; none after."""
    path = str(tmp_path / "base")
    client = vectordb.PersistentClient(path)
    col = client.create_collection("things", embedding_function=None)
    for i in range(10):
        col.add(ids=[f"b{i}-{j}" for j in range(5)], embeddings=np.full((5, 4), i, np.float32))
    client.close()
    w = wal_file(path)
    size = os.path.getsize(w)
    for cut in range(0, size, max(1, size // 23)):
        work = str(tmp_path / f"cut{cut}")
        shutil.copytree(path, work)
        os.truncate(wal_file(work), cut)
        client, col = open_things(work)
        ids = col.get()["ids"]
        batches = len(ids) // 5
        assert ids == [f"b{i}-{j}" for i in range(batches) for j in range(5)]
        client.close()
        shutil.rmtree(work)


def test_catalog_damage_is_reported(tmp_path):
    path = str(tmp_path)
    make_db(path)
    cat = os.path.join(path, "catalog.json")
    data = bytearray(open(cat, "rb").read())
    data[len(data) // 2] ^= 0x04
    open(cat, "wb").write(bytes(data))
    with pytest.raises(CorruptionError, match="catalog.json"):
        vectordb.PersistentClient(path)


def test_leftovers_of_an_interrupted_checkpoint_are_ignored(tmp_path):
    path = str(tmp_path)
    expected, _, _ = make_db(path)
    d = collection_dir(path)
    (gen,) = glob.glob(os.path.join(d, "gen-*"))
    n = int(gen.rsplit("-", 1)[1])
    # A crash while writing generation n+1: a half-written directory, a temp manifest, a new log.
    os.makedirs(os.path.join(d, f"gen-{n + 1}"))
    with open(os.path.join(d, f"gen-{n + 1}", "vectors.bin"), "wb") as f:
        f.write(b"partial")
    with open(os.path.join(d, "MANIFEST.tmp"), "wb") as f:
        f.write(b"xx")
    client, col = open_things(path)
    assert col.get()["ids"] == expected["ids"]
    col.checkpoint()  # and a later checkpoint can still use that generation number
    client.close()
    client, col = open_things(path)
    assert col.get()["ids"] == expected["ids"]
    assert sorted(os.listdir(d)) == ["MANIFEST", f"gen-{n + 1}", f"wal-{n + 1}"]
    client.close()


def test_second_open_in_the_same_process_shares_one_engine(tmp_path):
    client = vectordb.PersistentClient(str(tmp_path))
    other = vectordb.PersistentClient(str(tmp_path / "." ))
    assert other._db is client._db
    client.close()
    other.get_or_create_collection("still").add(ids=["x"], embeddings=[[1.0]])
    other.close()
    assert vectordb.PersistentClient(str(tmp_path)).get_collection("still").count() == 1


HOLDER = textwrap.dedent(
    """
    import sys, time, vectordb
    c = vectordb.PersistentClient(sys.argv[1])
    c.get_or_create_collection("held").add(ids=["x"], embeddings=[[1.0, 2.0]])
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_writer_lock_across_processes_released_when_holder_dies(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(LockedError, match="another process"):
            vectordb.PersistentClient(str(tmp_path))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    client = vectordb.PersistentClient(str(tmp_path))
    assert client.get_collection("held").get()["ids"] == ["x"]
    client.close()


def snapshot_files(path):
    """Each file of the current generation (and MANIFEST) with its mtime: a checkpoint changes them."""
    d = collection_dir(path)
    files = [os.path.join(d, "MANIFEST")] + glob.glob(os.path.join(d, "gen-*", "*"))
    return {os.path.relpath(f, d): os.stat(f).st_mtime_ns for f in files}


def test_small_batch_on_a_large_collection_is_one_log_append(tmp_path):
    """A few writes in a batch on a large collection are appended to the log as one group (the
    snapshot is not rewritten); they are all there after reopening."""
    path = str(tmp_path)
    expected, _, vecs = make_db(path, n=30000, extra_after_checkpoint=5)
    client, col = open_things(path)
    col.checkpoint()
    before, wal_before = snapshot_files(path), os.path.getsize(wal_file(path))
    with col.batch():
        col.add(ids=[f"new{i}" for i in range(10)], embeddings=vecs[:10] + 1)
        col.update(ids=["id10"], metadatas=[{"in": "batch"}])
        col.delete(ids=["id11"])
    assert snapshot_files(path) == before
    assert os.path.getsize(wal_file(path)) > wal_before + 10 * 16 * 4
    got = col.get(include=["embeddings", "metadatas"])
    client.close()
    assert snapshot_files(path) == before
    client, col = open_things(path)
    again = col.get(include=["embeddings", "metadatas"])
    assert again["ids"] == got["ids"] and len(got["ids"]) == len(expected["ids"]) + 9
    np.testing.assert_array_equal(again["embeddings"], got["embeddings"])
    assert again["metadatas"] == got["metadatas"]
    assert col.get(ids=["id10"])["metadatas"][0]["in"] == "batch"
    client.close()


def test_bulk_batch_is_written_once_by_a_checkpoint(tmp_path):
    """A batch larger than what it is added to goes to a new snapshot, not to the log too."""
    path = str(tmp_path)
    make_db(path, n=100, extra_after_checkpoint=5)
    client, col = open_things(path)
    before = snapshot_files(path)
    rng = np.random.default_rng(1)
    with col.batch():
        for s in range(0, 40000, 10000):
            col.add(ids=[f"bulk{i}" for i in range(s, s + 10000)], embeddings=rng.standard_normal((10000, 16)))
    assert snapshot_files(path).keys() != before.keys()  # a new generation
    assert os.path.getsize(wal_file(path)) == 0
    client.close()
    client, col = open_things(path)
    assert col.count() == 103 + 40000
    client.close()


def _db_with_a_batch_group(path, then_add=False):
    """make_db, then a batch of a few writes logged as one group (and, then_add: one write after it).
    Returns the expected ids before the batch and the group's byte range in the log."""
    expected, _, _ = make_db(path)
    w = wal_file(path)
    start = os.path.getsize(w)
    client, col = open_things(path)
    with col.batch():
        col.add(ids=["g1", "g2"], embeddings=np.ones((2, 16), np.float32))
        col.delete(ids=["id0"])
        col.add(ids=["g3"], embeddings=np.full((1, 16), 2, np.float32))
    end = os.path.getsize(w)
    if then_add:
        col.add(ids=["after"], embeddings=np.ones((1, 16), np.float32))
    client.close()
    return expected["ids"], start, end


def test_torn_batch_group_at_the_log_tail_is_dropped_whole(tmp_path):
    """A crash while a batch's group is appended leaves part of it: reopened, none of the batch is
    there (not its first writes either), and the collection takes writes."""
    base = str(tmp_path / "base")
    ids_before, start, end = _db_with_a_batch_group(base)
    assert end - start > 100
    cuts = sorted({start + 1, start + 12, start + 13, start + (end - start) // 2, end - 5, end - 1})
    for cut in cuts + ["zeros"]:
        work = str(tmp_path / f"cut{cut}")
        shutil.copytree(base, work)
        if cut == "zeros":  # a zero-filled end: the last pages of the append never landed
            with open(wal_file(work), "r+b") as f:
                f.seek(end - 40)
                f.write(bytes(40))
        else:
            os.truncate(wal_file(work), cut)
        client, col = open_things(work)
        assert col.get()["ids"] == ids_before, cut
        col.add(ids=["next"], embeddings=np.ones((1, 16), np.float32))
        client.close()
        client, col = open_things(work)
        assert col.get()["ids"] == ids_before + ["next"]
        client.close()
        shutil.rmtree(work)


@pytest.mark.parametrize("then_add", [False, True])
def test_damaged_batch_group_is_an_error_naming_the_log(tmp_path, then_add):
    """A flipped byte inside a batch's group (last in the log or followed by more) is damage, not a
    crash: an error naming the log file."""
    base = str(tmp_path / "base")
    _, start, end = _db_with_a_batch_group(base, then_add=then_add)
    for pos in sorted({start, start + 8, start + 13, start + 20, (start + end) // 2, end - 6}):
        work = str(tmp_path / f"flip{pos}")
        shutil.copytree(base, work)
        with open(wal_file(work), "r+b") as f:
            f.seek(pos)
            b = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([b ^ 0x10]))
        err = open_damaged(work)
        assert os.path.basename(wal_file(work)) in str(err), str(err)
        shutil.rmtree(work)


def _big_collection(path, n=6000, dim=8, use_ivf=False):
    """A checkpointed collection of n records with metadata and documents, nothing in its log."""
    rng = np.random.default_rng(5)
    client = vectordb.PersistentClient(path)
    kw = {"use_ivf": True, "n_clusters": 16} if use_ivf else {}
    col = client.create_collection("big", embedding_function=None, **kw)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"rec-{i:05d}-{'x' * (i % 5)}" for i in range(n)]
    col.add(ids=ids, embeddings=vecs, metadatas=[{"k": i % 9, "s": f"v{i % 4}"} for i in range(n)],
            documents=[f"doc {i}" if i % 2 else None for i in range(n)])
    col.delete(ids=ids[100:200])  # the checkpoint compacts: rows move
    col.checkpoint()
    client.close()
    return vecs, ids


def _answers(col, vecs, ids):
    full = col.get(include=["embeddings", "metadatas", "documents"])
    return {
        "all": (full["ids"], full["metadatas"], full["documents"], np.asarray(full["embeddings"]).tobytes()),
        "by_id": col.get(ids=[ids[7], ids[150], ids[-1], "missing"], include=["metadatas", "documents"]),
        "where": col.get(where={"k": 3}, where_document={"$contains": "doc 1"}, include=["metadatas"]),
        "query": col.query(query_embeddings=vecs[:4], n_results=7, where={"s": {"$in": ["v1", "v2"]}}),
        "query_ids": col.query(query_embeddings=vecs[4:6], n_results=5, include=["distances"]),
        "count": col.count(),
    }


@pytest.mark.parametrize("use_ivf", [False, True])
def test_open_reads_ids_from_ids_bin_and_metadata_when_first_needed(tmp_path, use_ivf):
    """A checkpoint writes ids.bin (the ids and their hash table): open reads it instead of parsing
    records.bin, whose metadata and documents are read when a read, filter or write first needs them.
    Answers are the same as before the reopen, and as when records.bin is parsed at open (a
    generation written before ids.bin existed: it gains ids.bin at its next checkpoint)."""
    path = str(tmp_path / "db")
    vecs, ids = _big_collection(path, use_ivf=use_ivf)
    client = vectordb.PersistentClient(path)
    col = client.get_collection("big", embedding_function=None)
    before = _answers(col, vecs, ids)
    client.close()
    cdir = collection_dir(path)
    (gen,) = glob.glob(os.path.join(cdir, "gen-*"))
    assert os.path.exists(os.path.join(gen, "ids.bin"))

    # Open never reads records.bin's payload: damage there shows only when metadata is needed.
    work = str(tmp_path / "damaged")
    shutil.copytree(path, work)
    rec = glob.glob(os.path.join(collection_dir(work), "gen-*", "records.bin"))[0]
    with open(rec, "r+b") as f:
        f.seek(os.path.getsize(rec) // 2)
        b = f.read(1)[0]
        f.seek(os.path.getsize(rec) // 2)
        f.write(bytes([b ^ 0x04]))
    client = vectordb.PersistentClient(work)
    col = client.get_collection("big", embedding_function=None)
    assert col.count() == before["count"]
    assert col.query(query_embeddings=vecs[4:6], n_results=5, include=["distances"]) == before["query_ids"]
    assert col.get(ids=[ids[7], "missing"], include=[])["ids"] == [ids[7]]
    for call in (lambda: col.get(include=["metadatas"]), lambda: col.get(where={"k": 1}, include=[]),
                 lambda: col.add(ids=["new"], embeddings=vecs[:1])):
        with pytest.raises(CorruptionError, match="records.bin"):
            call()
    client.close()

    # The same answers after a reopen from ids.bin, after writes replayed on top of it, and from a
    # generation without ids.bin.
    client = vectordb.PersistentClient(path)
    col = client.get_collection("big", embedding_function=None)
    assert _answers(col, vecs, ids) == before
    client.close()
    os.remove(os.path.join(gen, "ids.bin"))
    client = vectordb.PersistentClient(path)
    col = client.get_collection("big", embedding_function=None)
    assert _answers(col, vecs, ids) == before
    col.upsert(ids=[ids[7], "new"], embeddings=vecs[:2], metadatas=[{"k": 3}, {"k": 3}], documents=["doc 1a", "doc 1b"])
    col.delete(ids=[ids[8]])
    after = _answers(col, vecs, ids)
    client.close()
    client = vectordb.PersistentClient(path)
    col = client.get_collection("big", embedding_function=None)
    assert _answers(col, vecs, ids) == after  # the log replayed over the parsed records.bin
    col.checkpoint()
    client.close()
    assert len(glob.glob(os.path.join(cdir, "gen-*", "ids.bin"))) == 1
    client = vectordb.PersistentClient(path)
    col = client.get_collection("big", embedding_function=None)
    assert _answers(col, vecs, ids) == after
    col.delete(ids=[ids[9]])  # a write first: it reads the metadata, then the log replays over ids.bin
    after = _answers(col, vecs, ids)
    client.close()
    client = vectordb.PersistentClient(path)
    assert _answers(client.get_collection("big", embedding_function=None), vecs, ids) == after
    client.close()


def _fnv(b: bytes) -> int:
    h = 1469598103934665603
    for x in b:
        h = ((h ^ x) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h ^ (h >> 29)


def test_ids_bin_version_1_still_opens_and_is_rewritten(tmp_path):
    """ids.bin version 1 (its ids' hashes in an array of their own, plain rows in its slots) opens
    with the same answers; the next checkpoint writes the current version."""
    import struct

    from tests.test_fuzz_files import crc32c

    path = str(tmp_path / "db")
    vecs, ids = _big_collection(path, n=3000)
    client = vectordb.PersistentClient(path)
    before = _answers(client.get_collection("big", embedding_function=None), vecs, ids)
    client.close()
    (ids_bin,) = glob.glob(os.path.join(collection_dir(path), "gen-*", "ids.bin"))
    data = open(ids_bin, "rb").read()
    version, n, n_slots, id_bytes = struct.unpack_from("<I4xQQQ", data, 8)
    assert version == 2
    off = np.frombuffer(data, "<u8", n, 64)
    lens = np.frombuffer(data, "<u4", n, 64 + 8 * n)
    slots = np.frombuffer(data, "<i8", n_slots, 64 + 12 * n)
    raw = data[64 + 12 * n + 8 * n_slots:]
    hashes = np.array([_fnv(raw[o:o + ln]) for o, ln in zip(off.tolist(), lens.tolist())], "<u8")
    plain = np.where(slots == -1, -1, slots & 0xFFFFFFFF).astype("<i8")
    payload = off.tobytes() + lens.tobytes() + hashes.tobytes() + plain.tobytes() + raw
    head = bytearray(data[:64])
    struct.pack_into("<I", head, 8, 1)
    struct.pack_into("<I", head, 40, crc32c(payload))
    struct.pack_into("<I", head, 60, crc32c(bytes(head[:60])))
    with open(ids_bin, "wb") as f:
        f.write(bytes(head) + payload)
    client = vectordb.PersistentClient(path)
    col = client.get_collection("big", embedding_function=None)
    assert _answers(col, vecs, ids) == before
    col.checkpoint()
    client.close()
    (ids_bin,) = glob.glob(os.path.join(collection_dir(path), "gen-*", "ids.bin"))
    assert struct.unpack_from("<I", open(ids_bin, "rb").read(), 8)[0] == 2
    client = vectordb.PersistentClient(path)
    assert _answers(client.get_collection("big", embedding_function=None), vecs, ids) == before
    client.close()


def _fifty_ids_checkpointed(tmp_path, name):
    """A collection of 50 ids, checkpointed and closed: (database path, its ids.bin)."""
    path = str(tmp_path / "db")
    client = vectordb.PersistentClient(path)
    col = client.create_collection(name, embedding_function=None)
    col.add(ids=[f"id{i:02d}" for i in range(50)], embeddings=np.eye(50, 4, dtype=np.float32))
    col.checkpoint()
    client.close()
    (ids_bin,) = glob.glob(os.path.join(collection_dir(path), "gen-*", "ids.bin"))
    return path, ids_bin


def _open_is_refused_naming_ids_bin(path, name):
    with pytest.raises(CorruptionError, match="ids.bin"):
        client = vectordb.PersistentClient(path)
        try:
            client.get_collection(name, embedding_function=None).count()
        finally:
            client.close()


def test_ids_bin_with_a_repeated_id_is_damage_naming_it(tmp_path):
    """ids.bin whose checksums and table were made to match but that names one id twice is refused
    at open, naming ids.bin (it once opened: reads returned the id twice, and the metadata's load
    later blamed records.bin)."""
    import struct

    from tests.test_fuzz_files import crc32c

    path, ids_bin = _fifty_ids_checkpointed(tmp_path, "dups")
    data = open(ids_bin, "rb").read()
    _, n, n_slots, _ = struct.unpack_from("<I4xQQQ", data, 8)
    off = np.frombuffer(data, "<u8", n, 64).tolist()
    lens = np.frombuffer(data, "<u4", n, 64 + 8 * n).tolist()
    raw = bytearray(data[64 + 12 * n + 8 * n_slots:])
    raw[off[5]:off[5] + lens[5]] = raw[off[0]:off[0] + lens[0]]  # row 5 gets row 0's id
    slots = np.full(n_slots, -1, "<i8")
    for r in range(n):  # the table as the engine builds it, for the ids as they now are
        h = _fnv(bytes(raw[off[r]:off[r] + lens[r]]))
        s = h & (n_slots - 1)
        while slots[s] != -1:
            s = (s + 1) & (n_slots - 1)
        slots[s] = np.uint64(((h & 0xFFFFFFFF) << 32) | r).astype(np.int64)
    payload = np.asarray(off, "<u8").tobytes() + np.asarray(lens, "<u4").tobytes() + slots.tobytes() + bytes(raw)
    head = bytearray(data[:64])
    struct.pack_into("<I", head, 40, crc32c(payload))
    struct.pack_into("<I", head, 60, crc32c(bytes(head[:60])))
    with open(ids_bin, "wb") as f:
        f.write(bytes(head) + payload)
    _open_is_refused_naming_ids_bin(path, "dups")



def test_ids_bin_with_wrong_hash_bits_is_damage_naming_it(tmp_path):
    """ids.bin whose checksums were made to match but whose table gives a row hash bits that are not
    its id's (a high bit: the slot is still in its run) is refused at open, naming ids.bin: a lookup
    of that id would miss it, and a later add would store the id twice."""
    import struct

    from tests.test_fuzz_files import crc32c

    path, ids_bin = _fifty_ids_checkpointed(tmp_path, "bits")
    data = bytearray(open(ids_bin, "rb").read())
    _, n, n_slots, _ = struct.unpack_from("<I4xQQQ", data, 8)
    start = 64 + 12 * n
    slots = np.frombuffer(bytes(data[start:start + 8 * n_slots]), "<u8").copy()
    (at,) = np.nonzero((slots & np.uint64(0xFFFFFFFF)) == np.uint64(7))
    slots[at] ^= np.uint64(1 << 63)
    data[start:start + 8 * n_slots] = slots.tobytes()
    struct.pack_into("<I", data, 40, crc32c(bytes(data[64:])))
    struct.pack_into("<I", data, 60, crc32c(bytes(data[:60])))
    with open(ids_bin, "wb") as f:
        f.write(bytes(data))
    _open_is_refused_naming_ids_bin(path, "bits")
