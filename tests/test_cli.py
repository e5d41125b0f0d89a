"""The command line: `vectordb info`, `vectordb check` (on intact and damaged databases, beside a running
writer) and `vectordb migrate` as an entry point. Each command runs as a user runs it, in a subprocess.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_fuzz_files import put_u32, wal_records

import vectordb
import vectordb.dbcheck

DIM = 8
# Children import the vectordb this process imported (the in-place build, or the installed package).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [str(Path(vectordb.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}


def vectordb_cli(*args: str, check: int | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "vectordb", *args], capture_output=True, text=True, env=ENV,
                         timeout=300)
    if check is not None:
        assert out.returncode == check, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


def report(*args: str, check: int) -> dict:
    return json.loads(vectordb_cli(*args, "--json", check=check).stdout)


def make_db(path: Path) -> dict:
    """A flat collection with a snapshot and logged writes after it, and a trained IVF collection."""
    client = vectordb.PersistentClient(str(path))
    rng = np.random.default_rng(3)
    flat = client.create_collection("flat", metadata={"hnsw:space": "cosine"})
    flat.add(ids=[f"f{i}" for i in range(50)], embeddings=rng.standard_normal((50, DIM)),
             metadatas=[{"i": i} for i in range(50)], documents=[f"doc {i}" for i in range(50)])
    flat.checkpoint()
    flat.add(ids=["late1"], embeddings=rng.standard_normal((1, DIM)))
    flat.add(ids=["late2"], embeddings=rng.standard_normal((1, DIM)))
    ivf = client.create_collection("ivf", use_ivf=True, n_clusters=4)
    ivf.add(ids=[f"v{i}" for i in range(600)], embeddings=rng.standard_normal((600, 4)))
    ivf.rebuild()  # trained now, whatever the size threshold
    ivf.checkpoint()
    ids = {c.name: str(c.id) for c in client.list_collections()}
    client.close()
    return ids


def tree(path: Path) -> dict:
    """Every file's bytes and modification time: what a read-only command must leave as it was."""
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "db"
    return path, make_db(path)


def cfile(path: Path, cid: str, pattern: str) -> Path:
    (found,) = glob.glob(str(path / "collections" / cid / pattern))
    return Path(found)


def test_info_describes_collections_beside_an_open_writer(db):
    path, ids = db
    client = vectordb.PersistentClient(str(path))  # holds the LOCK for the whole test
    col = client.get_collection("flat")
    before = tree(path)
    rep = report("info", str(path), check=0)
    assert tree(path) == before  # nothing written, renamed or touched
    assert rep["writer_pid"] == os.getpid()
    by_name = {c["name"]: c for c in rep["collections"]}
    assert set(by_name) == {"flat", "ivf"}
    flat, ivf = by_name["flat"], by_name["ivf"]
    assert flat["id"] == ids["flat"] and flat["stats"]["count"] == 52 and flat["stats"]["dimension"] == DIM
    assert flat["stats"]["metric"] == "cosine" and flat["stats"]["index"] == "flat"
    assert ivf["stats"]["count"] == 600 and ivf["stats"]["dimension"] == 4
    assert ivf["stats"]["index"] == "ivf" and ivf["stats"]["trained"] and ivf["stats"]["n_clusters"] == 4
    for c in (flat, ivf):
        on_disk = sum(p.stat().st_size for p in (path / "collections" / c["id"]).rglob("*") if p.is_file())
        assert c["bytes_on_disk"] == on_disk
        assert c["stats"]["bytes_in_memory"] > 0
    # the writer was not disturbed
    col.add(ids=["after-info"], embeddings=np.ones((1, DIM)))
    assert col.count() == 53
    client.close()
    text = vectordb_cli("info", str(path), check=0).stdout
    assert "not open in any process" in text
    assert any(line.split()[:3] == ["flat", "53", str(DIM)] for line in text.splitlines()), text


def test_check_passes_an_intact_database_and_changes_nothing(db):
    path, _ = db
    before = tree(path)
    out = vectordb_cli("check", str(path), check=0)
    assert out.stdout.strip().splitlines()[-1] == "ok (2 collection(s))"
    assert tree(path) == before
    assert not os.path.exists(path / "LOCK") or vectordb.dbcheck.writer_pid(str(path)) is None


def test_check_of_an_empty_or_missing_database(tmp_path):
    vectordb.PersistentClient(str(tmp_path / "empty")).close()
    vectordb_cli("check", str(tmp_path / "empty"), check=0)
    out = vectordb_cli("check", str(tmp_path / "absent"), check=2)
    assert "is not a directory" in out.stderr
    assert not (tmp_path / "absent").exists()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x40
    path.write_bytes(bytes(data))


# (collection, file pattern, offset to flip, negative = from the end)
DAMAGE = [
    ("flat", "MANIFEST", 20),
    ("flat", "gen-*/vectors.bin", 100),  # vector data: caught by the data checksum
    ("flat", "gen-*/vectors.bin", 3),  # header magic
    ("flat", "gen-*/records.bin", 40),
    ("flat", "gen-*/ids.bin", 100),
    ("ivf", "gen-*/ivf.bin", -5),
    ("ivf", "gen-*/records.bin", -1),
]


@pytest.mark.parametrize("name,pattern,offset", DAMAGE, ids=[f"{c}-{p}-{o}" for c, p, o in DAMAGE])
def test_check_reports_the_damaged_file(db, name, pattern, offset):
    path, ids = db
    victim = cfile(path, ids[name], pattern)
    _flip(victim, offset)
    before = tree(path)
    rep = report("check", str(path), check=1)
    damaged = [f for f in rep["findings"] if f["damage"]]
    assert [f["file"] for f in damaged] == [str(victim.relative_to(path))], rep["findings"]
    other = next(c for c in rep["collections"] if c["name"] != name)
    assert other["ok"] and other["stats"]["count"] > 0  # the other collection is still checked
    assert tree(path) == before  # reported, not repaired
    text = vectordb_cli("check", str(path), check=1).stdout
    assert f"damaged: {victim.relative_to(path)}: " in text and text.strip().endswith("1 damaged file(s)")


def test_check_reports_a_damaged_log_record_but_only_notes_a_torn_tail(db):
    path, ids = db
    wal = cfile(path, ids["flat"], "wal-*")
    original = wal.read_bytes()
    (first, _), (second, _) = wal_records(original)
    # a torn last record (what a crash leaves): the next open drops it; not damage
    wal.write_bytes(original[:-7])
    rep = report("check", str(path), check=0)
    (note,) = rep["findings"]
    assert not note["damage"] and note["file"] == str(wal.relative_to(path)) and "torn" in note["problem"]
    assert wal.read_bytes() == original[:-7]  # the original log keeps its tail until a writer opens it
    # the first of two records damaged: an acknowledged write is lost, that is damage
    data = bytearray(original)
    put_u32(data, first + 8, int.from_bytes(data[first + 8:first + 12], "little") ^ 1)
    wal.write_bytes(bytes(data))
    rep = report("check", str(path), check=1)
    assert [f["file"] for f in rep["findings"] if f["damage"]] == [str(wal.relative_to(path))]


def test_check_reports_catalog_damage_and_still_checks_the_collections(db):
    path, ids = db
    _flip(path / "catalog.json", 30)
    _flip(cfile(path, ids["ivf"], "gen-*/ivf.bin"), 90)
    rep = report("check", str(path), check=1)
    damaged = sorted(f["file"] for f in rep["findings"] if f["damage"])
    assert damaged == sorted(["catalog.json", str(cfile(path, ids["ivf"], "gen-*/ivf.bin").relative_to(path))])
    # without the catalog, the MANIFEST gives the space and dimension
    flat = next(c for c in rep["collections"] if c["id"] == ids["flat"])
    assert flat["ok"] and flat["stats"]["count"] == 52 and flat["stats"]["metric"] == "cosine"


def test_check_reports_a_missing_collection_directory_and_notes_leftovers(db):
    path, ids = db
    os.rename(path / "collections" / ids["ivf"], path / "collections" / "leftover")
    rep = report("check", str(path), check=1)
    findings = {f["file"]: f for f in rep["findings"]}
    assert findings[f"collections/{ids['ivf']}"]["damage"]
    assert not findings["collections/leftover"]["damage"]


WRITER = r"""
import sys, numpy as np, vectordb
client = vectordb.PersistentClient(sys.argv[1])
col = client.get_collection("flat")
print("ready", flush=True)
i = 0
while True:
    col.add(ids=[f"w{i}"], embeddings=np.ones((1, 8)))
    if i % 5 == 0:
        col.checkpoint()
    i += 1
"""


def test_check_beside_a_writer_that_checkpoints_all_the_time(db):
    """The snapshot is consistent even while checkpoints switch generations under it, and the
    writer is never blocked (it keeps the LOCK; check never takes it)."""
    path, _ = db
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert writer.stdout.readline().strip() == "ready"
        for _ in range(3):
            rep = report("check", str(path), check=0)
            assert rep["writer_pid"] == writer.pid
            assert not [f for f in rep["findings"] if f["damage"]]
            assert writer.poll() is None
        time.sleep(0.2)
    finally:
        writer.kill()
        writer.wait()
    vectordb_cli("check", str(path), check=0)


def test_migrate_is_a_subcommand():
    out = vectordb_cli("migrate", "--help", check=0)
    assert out.stdout.startswith("usage: vectordb migrate") and "--chromadb-path" in out.stdout
    out = vectordb_cli("--help", check=0)
    for command in ("serve", "info", "check", "migrate"):
        assert command in out.stdout
