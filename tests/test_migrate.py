"""Migration from ChromaDB: real chromadb databases are built in temporary directories, the tool is
run (the script migrate/migrate_from_chromadb.py or `vectordb migrate` in a subprocess, or
vectordb.migrate.main in this process), and the vectordb result is compared with the data the test
generated (every record, strict value types) and with exact float64 nearest neighbours.
"""
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[1] / "migrate" / "migrate_from_chromadb.py"

pytest.importorskip("chromadb")  # the migrate/test extra; the "absent" case runs in a shim subprocess
import vectordb  # noqa: E402
import vectordb.migrate  # noqa: E402
from vectordb.migrate.verify import ExactTopK, Reservoir, check_exact, id_digest, same_metadata  # noqa: E402

# Children import the vectordb this process imported (the in-place build, or the installed package).
VECTORDB_PARENT = str(Path(vectordb.__file__).resolve().parents[1])

TEMP_PREFIX = "migrating-"

# ---------------------------------------------------------------------------------------------
# Building chromadb databases (in a subprocess, so no chromadb handle stays open in the tests)
# ---------------------------------------------------------------------------------------------

BUILDER = r"""
import pickle, sys, time
import chromadb
from chromadb.config import Settings
spec = pickle.load(open(sys.argv[1], "rb"))
client = chromadb.PersistentClient(path=spec["path"], settings=Settings(anonymized_telemetry=False))
t0 = time.perf_counter()
for c in spec["collections"]:
    kw = {}
    if c["metadata"] is not None:
        kw["metadata"] = c["metadata"]
    if c["configuration"] is not None:
        kw["configuration"] = c["configuration"]
    col = client.create_collection(c["name"], **kw)
    n = len(c["ids"])
    for s in range(0, n, 5000):
        e = slice(s, min(n, s + 5000))
        col.add(ids=c["ids"][e], embeddings=c["embeddings"][e], metadatas=c["metadatas"][e],
                documents=c["documents"][e], **({"uris": c["uris"][e]} if c.get("uris") else {}))
    assert col.count() == n
elapsed = time.perf_counter() - t0
# What chromadb itself hands back (for cosine it is not bit-identical to what was added).
view = {}
for c in spec["collections"]:
    g = client.get_collection(c["name"]).get(include=["embeddings", "metadatas", "documents"])
    view[c["name"]] = {"ids": list(g["ids"]), "embeddings": g["embeddings"], "metadatas": g["metadatas"],
                       "documents": g["documents"]}
pickle.dump(view, open(sys.argv[1] + ".view", "wb"))
print(elapsed)
"""


def record_metadata(i: int):
    """Metadata of every type chromadb 1.x accepts, some records without any."""
    if i % 7 == 0:
        return None
    md = {"s": f"str-{i}-ü😀", "i": (-1) ** i * i * 1000003, "f": i / 7.0, "b": i % 2 == 0}
    if i % 3 == 0:
        md.update({"big": 2**62 - i, "neg": -(2**53) - i, "tiny": 5e-324, "huge": 1.5e300, "empty": ""})
    if i % 3 == 1:
        md.update({"ls": ["a", f"x{i}", ""], "li": [i, -i, 2**40], "lf": [0.5, i * 0.25], "lb": [True, False]})
    return md


def record_document(i: int):
    if i % 5 == 0:
        return None
    if i % 11 == 0:
        return ""
    return f"document {i} — ünïcode 😀 \"quoted\"\nsecond line"


def make_collection(name, n, dim, seed, metadata=None, configuration=None, with_extras=True):
    rng = np.random.default_rng(seed)
    ids = [f"rec-{i:06d}" if i % 13 else f"ид-{i}-😀" for i in range(n)]
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    if n:
        emb[0] *= 1e-20  # tiny values survive exactly
    metas = [record_metadata(i) if with_extras else None for i in range(n)]
    docs = [record_document(i) if with_extras else None for i in range(n)]
    return {"name": name, "metadata": metadata, "configuration": configuration, "ids": ids,
            "embeddings": emb, "metadatas": metas, "documents": docs}


def small_spec():
    return [
        make_collection("docs_l2", 300, 8, 1, metadata={"owner": "team-a", "version": 3, "ratio": 0.25,
                                                         "public": False}),  # lists panic chromadb here
        make_collection("docs_cosine", 200, 12, 2, metadata={"hnsw:space": "cosine", "title": "Cosine ü"}),
        make_collection("docs_ip", 150, 6, 3, configuration={"hnsw": {"space": "ip"}}),
        make_collection("empty_one", 0, 4, 4),
    ]


def expected_space(c):
    if c["configuration"]:
        return c["configuration"]["hnsw"]["space"]
    return (c["metadata"] or {}).get("hnsw:space", "l2")


def build_chroma(path: Path, spec, tmp: Path):
    """Builds the database; returns chromadb's own view of every collection (get of all records)."""
    spec_file = tmp / f"spec-{path.name}.pkl"
    with open(spec_file, "wb") as fh:
        pickle.dump({"path": str(path), "collections": spec}, fh)
    out = subprocess.run([sys.executable, "-c", BUILDER, str(spec_file)], capture_output=True, text=True,
                         env=child_env(), timeout=600)
    assert out.returncode == 0, out.stderr
    with open(str(spec_file) + ".view", "rb") as fh:
        view = pickle.load(fh)
    for c in spec:
        v = view[c["name"]]
        assert v["ids"] == c["ids"]
        e = np.asarray(v["embeddings"], dtype=np.float32).reshape(len(c["ids"]), -1) if c["ids"] else None
        if c["ids"]:
            # chromadb returns float32 values (as float64): the float32 round trip is exact.
            assert np.array_equal(e.astype(np.float64), np.asarray(v["embeddings"]))
            if expected_space(c) == "cosine":
                # chromadb stores cosine vectors normalized: what it returns is within ~1 ulp.
                np.testing.assert_allclose(e, c["embeddings"], rtol=1e-6, atol=0)
            else:
                assert np.array_equal(e, c["embeddings"])
        c["chroma_embeddings"] = e


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "VECTORDB_PATH"}
    env["ANONYMIZED_TELEMETRY"] = "False"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [VECTORDB_PARENT, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chroma_small")
    spec = small_spec()
    build_chroma(tmp / "chroma", spec, tmp)
    return tmp / "chroma", {c["name"]: c for c in spec}


@pytest.fixture(scope="module")
def big_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chroma_big")
    spec = [make_collection("big", 20000, 16, 7, with_extras=False),
            make_collection("side_cos", 500, 16, 8, metadata={"hnsw:space": "cosine"})]
    # a few metadata/documents in the big one too
    for i in range(0, 20000, 997):
        spec[0]["metadatas"][i] = {"n": i}
        spec[0]["documents"][i] = f"doc {i}"
    build_chroma(tmp / "chroma", spec, tmp)
    return tmp / "chroma", {c["name"]: c for c in spec}


# ---------------------------------------------------------------------------------------------
# Running the script and reading the result
# ---------------------------------------------------------------------------------------------


def migrate(chroma, vdb, *args, env=None, check=None, entry="script"):
    """Runs the tool in a subprocess: entry "script" is migrate/migrate_from_chromadb.py, "command" is
    `vectordb migrate` (as `python -m vectordb migrate`)."""
    tool = [str(SCRIPT)] if entry == "script" else ["-m", "vectordb", "migrate"]
    cmd = [sys.executable, *tool, "--chromadb-path", str(chroma), "--vectordb-path", str(vdb), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env or child_env(), timeout=900)
    if check is not None:
        assert out.returncode == check, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


@contextmanager
def open_vdb(path):
    client = vectordb.PersistentClient(path=str(path))
    try:
        yield client
    finally:
        client.close()


def strict_equal(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return a == b


def exact_neighbours(space, q, X):
    q64, X64 = q.astype(np.float64), X.astype(np.float64)
    if space == "l2":
        d = ((X64 - q64) ** 2).sum(axis=1)
    elif space == "ip":
        d = 1.0 - X64 @ q64
    else:
        d = 1.0 - (X64 @ q64) / (np.linalg.norm(X64, axis=1) * np.linalg.norm(q64))
    return d


def assert_collection_equal(client, c, check_queries=True, exact=True):
    """Every record of the vectordb collection equals the generated one; queries match brute force."""
    col = client.get_collection(c["name"])
    n = len(c["ids"])
    assert col.count() == n
    assert strict_equal(col.metadata, c["metadata"]) or (col.metadata in (None, {}) and not c["metadata"]), (
        col.metadata, c["metadata"])
    got = col.get(ids=c["ids"], include=["embeddings", "metadatas", "documents"]) if n else None
    if n:
        assert list(got["ids"]) == c["ids"]
        emb = np.asarray(got["embeddings"])
        assert emb.dtype == np.float32 and emb.shape == c["embeddings"].shape
        assert np.array_equal(emb, c["chroma_embeddings"])  # bit-exact: what chromadb hands out
        for rid, m_got, m_want in zip(c["ids"], got["metadatas"], c["metadatas"]):
            assert strict_equal(m_got, m_want), (rid, m_got, m_want)
        assert got["documents"] == c["documents"]
        # nothing else in the collection
        all_ids = col.get(include=[])["ids"]
        assert sorted(all_ids) == sorted(c["ids"])
    if check_queries and n:
        space = expected_space(c)
        rng = np.random.default_rng(99)
        Q = (c["embeddings"][rng.choice(n, 8, replace=False)]
             + 0.1 * rng.standard_normal((8, c["embeddings"].shape[1]))).astype(np.float32)
        k = min(10, n)
        res = col.query(query_embeddings=Q, n_results=k, include=["distances"])
        recalls = []
        for qi in range(len(Q)):
            d = exact_neighbours(space, Q[qi], c["chroma_embeddings"])
            order = np.argsort(d, kind="stable")
            kth = d[order[k - 1]]
            tol = 1e-4 * max(1.0, abs(kth))
            r_ids = res["ids"][qi]
            r_d = np.asarray(res["distances"][qi], dtype=np.float64)
            pos = {rid: j for j, rid in enumerate(c["ids"])}
            true_d = np.array([d[pos[r]] for r in r_ids])
            np.testing.assert_allclose(r_d, true_d, rtol=1e-4, atol=1e-5)  # the space was carried
            if exact:
                assert len(r_ids) == k and len(set(r_ids)) == k
                assert np.all(true_d <= kth + tol), (qi, r_ids, [c["ids"][j] for j in order[:k]])
            recalls.append(len(set(r_ids) & {c["ids"][j] for j in order[:k]}) / k)
        return float(np.mean(recalls))
    return None


def tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# End-to-end
# ---------------------------------------------------------------------------------------------


def test_migrates_every_record_metadata_space_and_queries(small_db, tmp_path):
    chroma, spec = small_db
    before = tree_digest(chroma)
    vdb = tmp_path / "vdb"
    report = tmp_path / "report.json"
    out = migrate(chroma, vdb, "--report", str(report), check=0)
    assert tree_digest(chroma) == before  # read from a copy: the chromadb directory is untouched
    for name in spec:
        assert re.search(rf"^{name}\s+create\s+\S+\s+\d+\s+\d+\s+ok\b", out.stdout, re.M), out.stdout
    rep = {r["name"]: r for r in json.loads(report.read_text())}
    assert set(rep) == set(spec)
    with open_vdb(vdb) as client:
        assert sorted(c.name for c in client.list_collections()) == sorted(spec)
        for c in spec.values():
            assert_collection_equal(client, c)
            assert rep[c["name"]]["copied"] == len(c["ids"])
            assert rep[c["name"]]["status"] == "ok"
            if c["ids"]:
                assert rep[c["name"]]["exact_checked"] and rep[c["name"]]["vectordb_recall"] == 1.0
                assert 0.0 <= rep[c["name"]]["chroma_recall"] <= 1.0
    # The same command again, as `vectordb migrate`: everything is recognised as done, nothing is copied.
    out = migrate(chroma, vdb, check=0, entry="command")
    for name in spec:
        assert re.search(rf"^{name}\s+done\s+\S+\s+\d+\s+0\s+done earlier", out.stdout, re.M), out.stdout


def test_migrate_main_in_this_process(small_db, tmp_path, capsys):
    chroma, spec = small_db
    name = sorted(spec)[0]
    vdb = tmp_path / "vdb"
    argv = ["--chromadb-path", str(chroma), "--vectordb-path", str(vdb), "--collections", name, "--no-subprocess"]
    assert vectordb.migrate.main(argv) == 0
    assert re.search(rf"^{name}\s+create\s+\S+\s+\d+\s+\d+\s+ok\b", capsys.readouterr().out, re.M)
    with open_vdb(vdb) as client:
        assert [c.name for c in client.list_collections()] == [name]
        assert_collection_equal(client, spec[name])


def test_in_place_reads_the_original(small_db, tmp_path):
    chroma, spec = small_db
    own = tmp_path / "chroma"
    shutil.copytree(chroma, own)
    migrate(own, tmp_path / "vdb", "--in-place", "--collections", "docs_ip", check=0)
    with open_vdb(tmp_path / "vdb") as client:
        assert [c.name for c in client.list_collections()] == ["docs_ip"]
        assert_collection_equal(client, spec["docs_ip"])


def test_big_collection_and_interrupted_run_resumes_without_duplicates(big_db, tmp_path):
    chroma, spec = big_db
    vdb = tmp_path / "vdb"
    # A deterministic crash: SIGKILL right after 7000 records have been written.
    out = migrate(chroma, vdb, "--batch-size", "2000", "--page-size", "1000",
                  env=child_env(VECTORDB_MIGRATE_TEST_KILL_AFTER="7000"))
    assert out.returncode == -signal.SIGKILL, out.stderr
    with open_vdb(vdb) as client:
        # The interrupted copy lives under a temporary name; "big" itself does not exist yet.
        names = [c.name for c in client.list_collections()]
        partial = [n for n in names if n.startswith(TEMP_PREFIX)]
        assert "big" not in names and len(partial) == 1, names
        assert 0 < client.get_collection(partial[0]).count() < 20000
    # Run again with the default --on-existing error: the interrupted copy resumes.
    out = migrate(chroma, vdb, "--batch-size", "5000", check=0)
    assert re.search(r"^big\s+resume\s+l2\s+20000\s+\d+\s+ok\b", out.stdout, re.M), out.stdout
    with open_vdb(vdb) as client:
        for c in spec.values():
            assert_collection_equal(client, c)  # includes: no id twice, nothing missing
        assert sorted(c.name for c in client.list_collections()) == sorted(spec)


def test_sigkill_at_a_random_moment_then_rerun(big_db, tmp_path):
    chroma, spec = big_db
    vdb = tmp_path / "vdb"
    cmd = [sys.executable, str(SCRIPT), "--chromadb-path", str(chroma), "--vectordb-path", str(vdb),
           "--batch-size", "1000", "--page-size", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    seen = []

    def pump():
        while True:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                return
            seen.append(chunk.decode(errors="replace"))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if re.search(r"big:\s+0%", "".join(seen)):  # the copy of "big" has started
            time.sleep(0.15)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=300)
    t.join(timeout=10)
    # Whether the kill landed mid-copy or the run had already finished, a re-run (skip what is
    # complete) ends with every collection complete and nothing duplicated.
    migrate(chroma, vdb, "--on-existing", "skip", check=0)
    with open_vdb(vdb) as client:
        for c in spec.values():
            assert_collection_equal(client, c, check_queries=False)
        assert sorted(c.name for c in client.list_collections()) == sorted(spec)


def test_ivf_collection_reports_recall(big_db, tmp_path):
    chroma, spec = big_db
    vdb = tmp_path / "vdb"
    report = tmp_path / "r.json"
    migrate(chroma, vdb, "--use-ivf", "--n-clusters", "64", "--n-probe", "16", "--collections", "big",
            "--report", str(report), check=0)
    rep = json.loads(report.read_text())[0]
    assert rep["status"] == "ok" and not rep["exact_checked"]
    assert 0.0 < rep["vectordb_recall"] <= 1.0 and 0.0 < rep["chroma_recall"] <= 1.0
    with open_vdb(vdb) as client:
        st = client.get_collection("big").stats()
        assert (st["index"], st["trained"], st["n_clusters"], st["n_probe"]) == ("ivf", True, 64, 16)
        recall = assert_collection_equal(client, spec["big"], exact=False)
        assert recall > 0.3  # approximate, but clearly searching the right space and data


def test_collections_option_copies_only_those(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    migrate(chroma, vdb, "--collections", "docs_cosine", "empty_one", check=0)
    with open_vdb(vdb) as client:
        assert sorted(c.name for c in client.list_collections()) == ["docs_cosine", "empty_one"]
        assert_collection_equal(client, spec["docs_cosine"])
        assert_collection_equal(client, spec["empty_one"])


def test_unknown_collection_is_refused_before_writing(small_db, tmp_path):
    chroma, _ = small_db
    vdb = tmp_path / "vdb"
    out = migrate(chroma, vdb, "--collections", "docs_l2", "nope", check=2)
    assert "nope" in out.stderr and "docs_l2" in out.stderr
    assert not vdb.exists()


def test_on_existing_error_is_the_default_and_writes_nothing(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    migrate(chroma, vdb, "--collections", "docs_l2", check=0)
    with open_vdb(vdb) as client:
        client.get_collection("docs_l2").delete(ids=["rec-000001"])
    out = migrate(chroma, vdb, check=2)
    assert "already exists" in out.stderr and "--on-existing" in out.stderr
    with open_vdb(vdb) as client:
        assert [c.name for c in client.list_collections()] == ["docs_l2"]  # the others not started
        assert client.get_collection("docs_l2").count() == 299


def test_on_existing_skip_leaves_existing_and_copies_the_rest(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    migrate(chroma, vdb, "--collections", "docs_l2", check=0)
    with open_vdb(vdb) as client:
        client.get_collection("docs_l2").delete(ids=["rec-000001"])
    out = migrate(chroma, vdb, "--on-existing", "skip", check=0)
    assert re.search(r"^docs_l2\s+skip\s+.*skipped", out.stdout, re.M), out.stdout
    with open_vdb(vdb) as client:
        assert client.get_collection("docs_l2").count() == 299
        for name in ("docs_cosine", "docs_ip", "empty_one"):
            assert_collection_equal(client, spec[name])


def test_on_existing_overwrite_replaces_the_collection(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    migrate(chroma, vdb, "--collections", "docs_cosine", check=0)
    with open_vdb(vdb) as client:
        col = client.get_collection("docs_cosine")
        col.add(ids=["intruder"], embeddings=np.ones((1, 12), dtype=np.float32), metadatas=[{"x": 1}])
        col.delete(ids=["rec-000002"])
    migrate(chroma, vdb, "--collections", "docs_cosine", "--on-existing", "overwrite", check=0)
    with open_vdb(vdb) as client:
        assert_collection_equal(client, spec["docs_cosine"])


def test_on_existing_append_adds_missing_records_only(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    c = spec["docs_ip"]
    with open_vdb(vdb) as client:
        col = client.create_collection("docs_ip", metadata={"mine": True}, configuration={"hnsw": {"space": "ip"}})
        own = np.full((2, 6), 0.5, dtype=np.float32)
        col.add(ids=["own-1", "own-2"], embeddings=own, documents=["a", "b"])
        # one record of the source is already there, identical
        col.add(ids=[c["ids"][3]], embeddings=c["embeddings"][3:4], metadatas=[c["metadatas"][3]],
                documents=[c["documents"][3]])
    report = tmp_path / "r.json"
    migrate(chroma, vdb, "--collections", "docs_ip", "--on-existing", "append", "--report", str(report),
            "--verify-sample", "100000", check=0)
    assert json.loads(report.read_text())[0]["copied"] == len(c["ids"]) - 1
    with open_vdb(vdb) as client:
        col = client.get_collection("docs_ip")
        assert col.count() == len(c["ids"]) + 2
        assert col.metadata == {"mine": True}  # append does not touch the collection's metadata
        got = col.get(ids=c["ids"], include=["embeddings", "metadatas", "documents"])
        assert np.array_equal(np.asarray(got["embeddings"]), c["embeddings"])
        assert all(strict_equal(a, b) for a, b in zip(got["metadatas"], c["metadatas"]))
        assert got["documents"] == c["documents"]
        assert sorted(col.get(ids=["own-1", "own-2"], include=["documents"])["documents"]) == ["a", "b"]
    # Appending again is a no-op (idempotent).
    migrate(chroma, vdb, "--collections", "docs_ip", "--on-existing", "append", check=0)
    with open_vdb(vdb) as client:
        assert client.get_collection("docs_ip").count() == len(c["ids"]) + 2


def test_append_reports_records_that_differ_and_exits_nonzero(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    c = spec["docs_ip"]
    with open_vdb(vdb) as client:
        col = client.create_collection("docs_ip", configuration={"hnsw": {"space": "ip"}})
        col.add(ids=[c["ids"][5]], embeddings=c["embeddings"][5:6] + 1.0, documents=["changed"])
    out = migrate(chroma, vdb, "--collections", "docs_ip", "--on-existing", "append", "--verify-sample", "100000",
                  check=1)
    assert "DIFFERENCE" in out.stdout and c["ids"][5] in out.stdout


def test_append_into_another_space_is_refused(small_db, tmp_path):
    chroma, _ = small_db
    vdb = tmp_path / "vdb"
    with open_vdb(vdb) as client:
        client.create_collection("docs_ip", metadata={"hnsw:space": "l2"})
    out = migrate(chroma, vdb, "--collections", "docs_ip", "--on-existing", "append", check=2)
    assert "space" in out.stderr and "'ip'" in out.stderr
    with open_vdb(vdb) as client:
        assert client.get_collection("docs_ip").count() == 0


def test_dry_run_writes_nothing(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    before = tree_digest(chroma)
    out = migrate(chroma, vdb, "--dry-run", check=0)
    assert not vdb.exists()
    assert tree_digest(chroma) == before
    total = sum(len(c["ids"]) for c in spec.values())
    assert f"would copy {total} records in {len(spec)} collections" in out.stdout
    for name in spec:
        assert name in out.stderr
    # Against an existing database: the plan is shown, nothing changes.
    migrate(chroma, vdb, "--collections", "docs_ip", check=0)
    vdb_before = tree_digest(vdb)
    out = migrate(chroma, vdb, "--dry-run", check=0)
    assert tree_digest(vdb) == vdb_before
    assert re.search(r"^docs_ip\s+150\s+6\s+ip\s+done", out.stderr, re.M), out.stderr
    assert re.search(r"^docs_l2\s+300\s+8\s+l2\s+create", out.stderr, re.M), out.stderr
    with open_vdb(vdb) as client:
        assert [c.name for c in client.list_collections()] == ["docs_ip"]


def test_clear_message_without_chromadb(small_db, tmp_path):
    chroma, _ = small_db
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "chromadb.py").write_text("raise ImportError(\"No module named 'chromadb'\")\n")
    env = child_env(PYTHONPATH=os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    vdb = tmp_path / "vdb"
    for extra in ([], ["--no-subprocess"]):
        out = migrate(chroma, vdb, *extra, env=env, check=2)
        assert "pip install 'vectordb[migrate]'" in out.stderr
        assert "Traceback" not in out.stderr
    assert not vdb.exists()


def test_not_a_chromadb_directory(tmp_path):
    (tmp_path / "nothing").mkdir()
    out = migrate(tmp_path / "nothing", tmp_path / "vdb", check=2)
    assert "chroma.sqlite3" in out.stderr
    assert not (tmp_path / "vdb").exists()


# ---------------------------------------------------------------------------------------------
# The verification helpers themselves
# ---------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), dim=st.integers(1, 9), page=st.integers(1, 64), keep=st.integers(1, 40),
       space=st.sampled_from(["l2", "ip", "cosine"]), seed=st.integers(0, 2**32 - 1))
def test_streaming_exact_topk_equals_full_sort(n, dim, page, keep, space, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    Q = rng.standard_normal((3, dim)).astype(np.float32)
    ids = [f"i{j}" for j in range(n)]
    topk = ExactTopK(Q, space, keep)
    for s in range(0, n, page):
        topk.update(X[s:s + page], ids[s:s + page])
    for qi in range(3):
        d = exact_neighbours(space, Q[qi], X)
        got_ids, got_d = topk.result(qi)
        want = np.sort(d)[: min(keep, n)]
        np.testing.assert_allclose(got_d, want, rtol=1e-9, atol=1e-9)
        assert all(abs(d[int(g[1:])] - gd) <= 1e-9 for g, gd in zip(got_ids, got_d))


def test_check_exact_accepts_ties_and_rejects_wrong_answers():
    t_ids = ["a", "b", "c", "d", "e"]
    t_d = np.array([0.1, 0.2, 0.3, 0.3000001, 0.9])
    assert check_exact(["a", "b", "c"], [0.1, 0.2, 0.3], t_ids, t_d, 3, True, 1e-5) == []
    assert check_exact(["a", "b", "d"], [0.1, 0.2, 0.3000001], t_ids, t_d, 3, True, 1e-5) == []  # tie
    assert check_exact(["a", "b", "e"], [0.1, 0.2, 0.9], t_ids, t_d, 3, True, 1e-5)  # wrong neighbour
    assert check_exact(["a", "b", "c"], [0.1, 0.2, 0.5], t_ids, t_d, 3, True, 1e-5)  # wrong distance
    assert check_exact(["a", "b"], [0.1, 0.2], t_ids, t_d, 3, True, 1e-5)  # too few
    assert check_exact(["a", "b", "zz"], [0.1, 0.2, 0.3], t_ids, t_d, 3, True, 1e-5)  # unknown id
    assert check_exact(["a", "a", "b"], [0.1, 0.1, 0.2], t_ids, t_d, 3, True, 1e-5)  # duplicate


def test_value_comparison_is_type_strict():
    assert same_metadata({"a": 1, "b": [1.5, 2.0]}, {"b": [1.5, 2.0], "a": 1})
    assert not same_metadata({"a": True}, {"a": 1})
    assert not same_metadata({"a": 1}, {"a": 1.0})
    assert not same_metadata({"a": [1]}, {"a": [True]})
    assert not same_metadata(None, {})
    assert id_digest(["x", "y", "z"]) == id_digest(["z", "x", "y"])
    assert id_digest(["x", "y"]) != id_digest(["x", "y", "y"])


def test_a_crash_inside_chromadb_is_reported(small_db, tmp_path):
    """The reader runs in a child process: a chromadb that dies (as with a damaged HNSW segment)
    gives a clear error instead of killing the migration. The crash is provoked by a shim module."""
    chroma, _ = small_db
    shim = tmp_path / "shim"
    (shim / "chromadb").mkdir(parents=True)
    (shim / "chromadb" / "__init__.py").write_text(
        "import os, signal\n__version__ = 'shim'\n"
        "def PersistentClient(*a, **k):\n    os.kill(os.getpid(), signal.SIGSEGV)\n")
    (shim / "chromadb" / "config.py").write_text("def Settings(**k):\n    return k\n")
    env = child_env(PYTHONPATH=os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = migrate(chroma, tmp_path / "vdb", env=env, check=2)
    assert "reader process was killed by signal 11" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_reservoir_sample_is_uniform_and_bounded():
    import random
    counts = np.zeros(50)
    for seed in range(400):
        r = Reservoir(5, random.Random(seed))
        for i in range(50):
            j = r.slot()
            if j is not None:
                r.items[j] = i
        assert len(r.items) == 5 and len(set(r.items)) == 5
        counts[r.items] += 1
    # each of the 50 items is kept with probability 5/50: 40 times in 400 runs on average
    assert counts.min() > 15 and counts.max() < 70


def test_uris_are_copied_as_uris_or_kept_in_metadata(tmp_path):
    c = make_collection("with_uris", 40, 4, 11)
    c["uris"] = [f"s3://bucket/{i}.png" if i % 3 else None for i in range(40)]
    build_chroma(tmp_path / "chroma", [c], tmp_path)
    # By default uris are copied as uris.
    migrate(tmp_path / "chroma", tmp_path / "vdb1", check=0)
    with open_vdb(tmp_path / "vdb1") as client:
        got = client.get_collection("with_uris").get(ids=c["ids"], include=["metadatas", "uris"])
        assert got["uris"] == c["uris"]
        for i, md in enumerate(got["metadatas"]):
            assert strict_equal(md, c["metadatas"][i] or None), (i, md)
    # With --uris-key the uri is kept in that metadata key; everything else as usual.
    migrate(tmp_path / "chroma", tmp_path / "vdb2", "--uris-key", "uri", check=0)
    with open_vdb(tmp_path / "vdb2") as client:
        got = client.get_collection("with_uris").get(ids=c["ids"], include=["metadatas", "documents"])
        for i, md in enumerate(got["metadatas"]):
            want = dict(c["metadatas"][i] or {})
            if c["uris"][i] is not None:
                want["uri"] = c["uris"][i]
            assert strict_equal(md, want or None), (i, md, want)
        assert got["documents"] == c["documents"]


def test_interrupted_overwrite_keeps_the_old_copy_until_the_new_one_is_verified(small_db, tmp_path):
    chroma, spec = small_db
    vdb = tmp_path / "vdb"
    migrate(chroma, vdb, "--collections", "docs_l2", check=0)
    with open_vdb(vdb) as client:
        client.get_collection("docs_l2").add(ids=["intruder"], embeddings=np.ones((1, 8), dtype=np.float32))
    args = ("--collections", "docs_l2", "--on-existing", "overwrite", "--batch-size", "100", "--page-size", "100")
    out = migrate(chroma, vdb, *args, env=child_env(VECTORDB_MIGRATE_TEST_KILL_AFTER="100"))
    assert out.returncode == -signal.SIGKILL
    with open_vdb(vdb) as client:
        assert client.get_collection("docs_l2").count() == 301  # the old collection, untouched
        partial = [c for c in client.list_collections() if c.name.startswith(TEMP_PREFIX)]
        assert len(partial) == 1 and partial[0].count() == 100
    # Without overwrite, the tool will not guess which of the two to keep.
    out = migrate(chroma, vdb, "--collections", "docs_l2", check=2)
    assert "interrupted copy" in out.stderr
    migrate(chroma, vdb, *args, check=0)
    with open_vdb(vdb) as client:
        assert [c.name for c in client.list_collections()] == ["docs_l2"]
        assert_collection_equal(client, spec["docs_l2"])
