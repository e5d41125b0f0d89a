"""I/O errors at write and fsync: a clean error, the data as before, and
after a failed log write or sync the collection refuses writes (ReadOnlyError) until reopened.

Two real ways to make the calls fail:
  - a fault-injection shim, compiled here with gcc and LD_PRELOADed into a child process, that
    makes the N-th write()/writev() or fsync()/fdatasync() on a file under the database fail
    (EIO, or a short write followed by ENOSPC), for N = 1, 2, ... until the operation no longer
    reaches an N-th call, as SQLite's I/O-error tests do. Each (operation, fault) sweep runs in
    one child; a crash of the child is a test failure naming the N it died at.
  - a small tmpfs mounted by the test (we run as root; skipped with the reason otherwise) and
    filled up, for a real ENOSPC from the kernel.

Checked after every injected fault:
  - the operation raised OSError or a vectordb error (nothing else, no crash), or succeeded with
    its full effect;
  - when it raised, the data read in the same process and after a reopen is the data before it;
  - after a failed log write or sync, the next write raises ReadOnlyError; after any other
    failure a write either raises ReadOnlyError or is kept (present after reopen);
  - one exception: when only the directory sync after catalog.json's rename fails, the catalog
    change is in place; the client raises ReadOnlyError saying so, shows the change, and refuses
    later catalog changes until reopened;
  - after reopening (without faults) the database opens and takes writes again.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import vectordb
from vectordb.errors import ReadOnlyError, VectorDBError

DIM = 8
K_WRITE, K_SYNC = 1, 2

SHIM_SOURCE = r"""
/* Fault injection for tests/test_io_errors.py: the N-th matching call fails. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { K_WRITE = 1, K_SYNC = 2 };
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char prefix[4096];
static size_t prefix_len;
static int armed, kinds, fail_errno, persistent, short_write;
static long target, calls, hits;

void vdbfault_arm(const char *pfx, int kind_mask, long n, int err, int persist, int shortw)
{
    pthread_mutex_lock(&mu);
    snprintf(prefix, sizeof prefix, "%s", pfx);
    prefix_len = strlen(prefix);
    kinds = kind_mask;
    target = n;
    fail_errno = err;
    persistent = persist;
    short_write = shortw;
    calls = hits = 0;
    armed = 1;
    pthread_mutex_unlock(&mu);
}

void vdbfault_disarm(void) { pthread_mutex_lock(&mu); armed = 0; pthread_mutex_unlock(&mu); }
long vdbfault_hits(void) { return hits; }
long vdbfault_calls(void) { return calls; }

static int under_prefix(int fd)
{
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return strncmp(path, prefix, prefix_len) == 0;
}

/* 0: let the call through; 1: fail it; 2: shorten it (a write that half fits). */
static int decide(int kind, int fd)
{
    int r = 0, e = errno;
    pthread_mutex_lock(&mu);
    if (armed && (kinds & kind) && under_prefix(fd)) {
        calls++;
        if (calls == target || (persistent && calls > target)) {
            hits++;
            r = kind == K_WRITE && short_write && calls == target ? 2 : 1;
        }
    }
    pthread_mutex_unlock(&mu);
    errno = e;
    return r;
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*sync_fn)(int);
#define REAL(name, type) static type real_##name; if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(write, write_fn);
    int d = decide(K_WRITE, fd);
    if (d == 1) { errno = fail_errno; return -1; }
    if (d == 2 && n > 1) n /= 2;
    return real_write(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    REAL(writev, writev_fn);
    int d = decide(K_WRITE, fd);
    if (d == 1) { errno = fail_errno; return -1; }
    if (d == 2) {
        size_t total = 0;
        for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
        size_t want = total / 2;
        struct iovec cut[64];
        int m = 0;
        for (int i = 0; i < cnt && i < 64 && want; i++) {
            cut[m] = iov[i];
            if (cut[m].iov_len > want) cut[m].iov_len = want;
            want -= cut[m].iov_len;
            m++;
        }
        if (m) return real_writev(fd, cut, m);
    }
    return real_writev(fd, iov, cnt);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(pwrite, pwrite_fn);
    int d = decide(K_WRITE, fd);
    if (d == 1) { errno = fail_errno; return -1; }
    if (d == 2 && n > 1) n /= 2;
    return real_pwrite(fd, buf, n, off);
}

int fsync(int fd)
{
    REAL(fsync, sync_fn);
    if (decide(K_SYNC, fd)) { errno = fail_errno; return -1; }
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    REAL(fdatasync, sync_fn);
    if (decide(K_SYNC, fd)) { errno = fail_errno; return -1; }
    return real_fdatasync(fd);
}
"""


# ---------------------------------------------------------------------------------------------
# The database every trial starts from.

def build_base(path: str) -> None:
    rng = np.random.default_rng(3)
    client = vectordb.PersistentClient(path)
    flat = client.create_collection("flat", metadata={"hnsw:space": "l2"})
    n = 200
    flat.add(ids=[f"f{i}" for i in range(n)], embeddings=rng.standard_normal((n, DIM)).astype(np.float32),
             metadatas=[{"i": i, "even": i % 2 == 0} for i in range(n)], documents=[f"doc {i}" for i in range(n)])
    flat.checkpoint()
    flat.delete(ids=[f"f{i}" for i in range(0, 40, 3)])
    flat.upsert(ids=["f50", "fx"], embeddings=rng.standard_normal((2, DIM)).astype(np.float32))
    ivf = client.create_collection("ivf", use_ivf=True, n_clusters=8)
    ivf.add(ids=[f"v{i}" for i in range(1200)], embeddings=rng.standard_normal((1200, DIM)).astype(np.float32))
    # an earlier build retrained here
    ivf.add(ids=["settle"], embeddings=rng.standard_normal((1, DIM)).astype(np.float32))
    ivf.delete(ids=["v1", "v2"])
    pre = client.create_collection("pre", use_ivf=True, n_clusters=8)  # trains at 1000 vectors
    pre.add(ids=[f"p{i}" for i in range(995)], embeddings=rng.standard_normal((995, DIM)).astype(np.float32))
    client.close()


def _vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _small_batch(col):
    """A few writes in a batch: kept in memory, then appended to the log as one group at its end."""
    with col.batch():
        col.add(ids=["b1", "b2"], embeddings=_vecs(2, 6), metadatas=[{"b": 1}, {"b": 2}])
        col.delete(ids=["f90"])
        col.update(ids=["f91"], metadatas=[{"in": "batch"}])


# Each operation: (kind, function of the client). "log" operations append to the write-ahead log
# only; "snapshot" ones write a new generation; "catalog" ones replace catalog.json; "batch" ones
# write in batch mode, whose end appends one log record (memory keeps the batch's writes when
# that fails: the collection refuses writes, and reopening drops them).
OPS = {
    "add": ("log", lambda c: c.get_collection("flat").add(
        ids=[f"new{i}" for i in range(5)], embeddings=_vecs(5, 1), metadatas=[{"new": i} for i in range(5)],
        documents=[f"new doc {i}" for i in range(5)])),
    "upsert": ("log", lambda c: c.get_collection("flat").upsert(
        ids=["f60", "f61", "fup"], embeddings=_vecs(3, 2), metadatas=[{"up": 1}] * 3)),
    "update": ("log", lambda c: c.get_collection("flat").update(ids=["f70"], metadatas=[{"i": None, "u": "x"}])),
    "delete": ("log", lambda c: c.get_collection("flat").delete(ids=["f80", "f81", "nope"])),
    "delete_where": ("log", lambda c: c.get_collection("flat").delete(where={"even": True})),
    "add_ivf": ("log", lambda c: c.get_collection("ivf").add(ids=["vnew"], embeddings=_vecs(1, 3))),
    "small_batch": ("batch", lambda c: _small_batch(c.get_collection("flat"))),
    "checkpoint": ("snapshot", lambda c: c.get_collection("flat").checkpoint()),
    "checkpoint_ivf": ("snapshot", lambda c: c.get_collection("ivf").checkpoint()),
    "add_that_trains": ("log", lambda c: c.get_collection("pre").add(
        ids=[f"pnew{i}" for i in range(10)], embeddings=_vecs(10, 4))),
    # VECTORDB_SYNC=relaxed: the log is synced only at checkpoints (set by the child for these).
    "add_relaxed": ("log", lambda c: c.get_collection("flat").add(ids=["relaxed"], embeddings=_vecs(1, 5))),
    "checkpoint_relaxed": ("snapshot", lambda c: c.get_collection("flat").checkpoint()),
    "create_collection": ("catalog", lambda c: c.create_collection("newcol", metadata={"k": "v"})),
    "delete_collection": ("catalog", lambda c: c.delete_collection("pre")),
    "rename_collection": ("catalog", lambda c: c.get_collection("flat").modify(name="renamed")),
}

FAULTS = {
    "write-EIO": dict(kinds=K_WRITE, err=errno.EIO, persist=0, short=0),
    "sync-EIO": dict(kinds=K_SYNC, err=errno.EIO, persist=0, short=0),
    "write-ENOSPC": dict(kinds=K_WRITE, err=errno.ENOSPC, persist=1, short=1),  # half written, then full
}


def db_state(client) -> dict:
    """Every collection's name, metadata and records (a digest), and whether 'after-fault' exists."""
    out, has_after = {}, False
    for col in sorted(client.list_collections(), key=lambda c: c.name):
        if col.name == "after-fault-col":
            continue  # made by the follow-up catalog change
        got = col.get(include=["embeddings", "metadatas", "documents"])
        keep = [i for i, k in enumerate(got["ids"]) if k != "after-fault"]
        has_after |= len(keep) != len(got["ids"])
        h = hashlib.sha256(json.dumps([[got["ids"][i] for i in keep], [got["metadatas"][i] for i in keep],
                                       [got["documents"][i] for i in keep], col.metadata], sort_keys=True).encode())
        if keep:
            h.update(np.asarray(got["embeddings"], "<f4")[keep].tobytes())
        out[col.name] = h.hexdigest()
    return {"collections": out, "after_fault": has_after}


def _outcome(fn):
    try:
        return {"ok": True, "value": fn()}
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
        return {"ok": False, "type": type(e).__name__, "message": str(e)[:500],
                "vectordb": isinstance(e, VectorDBError), "oserror": isinstance(e, OSError)}


FOLLOW_UP_COLLECTION = {"add_ivf": "ivf", "checkpoint_ivf": "ivf", "add_that_trains": "pre"}


def _follow_up_write(client, op: str):
    """A write to the collection the operation wrote (flat, or its new name, for catalog operations)."""
    name = FOLLOW_UP_COLLECTION.get(op) or ("renamed" if op == "rename_collection" and
                                           "renamed" in [c.name for c in client.list_collections()] else "flat")
    client.get_collection(name).add(ids=["after-fault"], embeddings=np.full((1, DIM), 0.25, np.float32))


def child_main(spec_json: str) -> None:
    """Runs one (operation, fault) sweep with the shim preloaded; one JSON line per trial."""
    spec = json.loads(spec_json)
    shim = ctypes.CDLL(spec["shim"])
    shim.vdbfault_arm.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_long,
                                  ctypes.c_int, ctypes.c_int, ctypes.c_int]
    shim.vdbfault_hits.restype = ctypes.c_long
    shim.vdbfault_calls.restype = ctypes.c_long
    kind, op = OPS[spec["op"]]
    fault = FAULTS[spec["fault"]]
    for n in range(1, spec["max_n"] + 1):
        print(json.dumps({"begin": n}), flush=True)
        work = os.path.join(spec["scratch"], f"{spec['op']}-{spec['fault']}-{n}")
        shutil.copytree(spec["base"], work)
        trial = {"n": n}
        if spec["op"].endswith("_relaxed"):
            os.environ["VECTORDB_SYNC"] = "relaxed"
        client = vectordb.PersistentClient(work)
        trial["before"] = db_state(client)
        shim.vdbfault_arm(os.path.realpath(work).encode(), fault["kinds"], n,
                          fault["err"], fault["persist"], fault["short"])
        trial["op"] = _outcome(lambda: op(client) and None)
        shim.vdbfault_disarm()
        trial["hits"] = shim.vdbfault_hits()
        trial["calls"] = shim.vdbfault_calls()
        trial["in_process"] = _outcome(lambda: db_state(client))
        trial["follow_up"] = _outcome(lambda: _follow_up_write(client, spec["op"]))
        trial["follow_up_catalog"] = _outcome(lambda: client.create_collection("after-fault-col") and None)
        trial["close"] = _outcome(client.close)
        client.close()

        def reopen():
            c = vectordb.PersistentClient(work)
            try:
                state = db_state(c)
                first = c.get_collection(sorted(state["collections"])[0])
                first.add(ids=["after-reopen"], embeddings=np.zeros((1, DIM), np.float32))
                return state
            finally:
                c.close()
        trial["reopen"] = _outcome(reopen)
        print(json.dumps(trial), flush=True)
        shutil.rmtree(work, ignore_errors=True)
        if trial["hits"] == 0:
            break


# ---------------------------------------------------------------------------------------------
# Parent side.

@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc) to build the fault-injection shim")
    d = tmp_path_factory.mktemp("shim")
    src, so = d / "vdbfault.c", d / "vdbfault.so"
    src.write_text(SHIM_SOURCE)
    cmd = [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(so), str(src), "-ldl", "-pthread"]
    r = subprocess.run(cmd,
                       capture_output=True, text=True)
    assert r.returncode == 0, f"building the shim failed:\n{r.stderr}"
    return str(so)


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("io-base") / "db")
    build_base(path)
    return path


def run_sweep(shim: str, base: str, scratch: str, op: str, fault: str, max_n: int = 60) -> list[dict]:
    spec = json.dumps({"shim": shim, "base": base, "scratch": scratch, "op": op, "fault": fault, "max_n": max_n})
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (env.get("LD_PRELOAD", ""), shim) if p)  # after ASan's, if any
    code = ("import sys; sys.path.insert(0, %r); import test_io_errors as t; t.child_main(sys.argv[1])"
            % os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True, env=env, timeout=600)
    trials, last_begin = [], None
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if "begin" in rec:
            last_begin = rec["begin"]
        else:
            trials.append(rec)
    if proc.returncode != 0:
        pytest.fail(f"{op} with {fault}: the child died (exit code {proc.returncode}) at fault N={last_begin}:\n"
                    f"{proc.stderr[-4000:]}")
    assert trials and trials[-1]["hits"] == 0, f"{op} with {fault}: sweep did not finish within N={max_n}"
    return trials


def check_trial(op: str, fault: str, t: dict, after: dict) -> None:
    kind = OPS[op][0]
    where = f"{op} with {fault} at call N={t['n']} (of {t['calls']})"
    assert t["close"]["ok"], f"{where}: close() raised {t['close']}"
    assert t["reopen"]["ok"], f"{where}: the database does not reopen: {t['reopen']}"
    reopened = t["reopen"]["value"]
    if t["op"]["ok"]:
        # Succeeded in spite of the fault (e.g. it hit a call whose failure is harmless): all of it.
        assert reopened["collections"] == after["collections"], f"{where}: succeeded, but the data after reopen differs"
        return
    err = t["op"]
    assert err["oserror"] or err["vectordb"], \
        f"{where}: raised {err['type']}: {err['message']} (expected OSError or a vectordb error)"
    reason = os.strerror(FAULTS[fault]["err"])
    assert reason in err["message"], f"{where}: the error does not say what failed ({reason!r}): {err['message']}"
    if kind == "catalog" and err["type"] == "ReadOnlyError":
        # The directory sync after catalog.json's rename failed: the change is in place (visible,
        # maybe not durable), the client says so, and refuses further catalog changes.
        assert t["in_process"]["value"]["collections"] == after["collections"], \
            f"{where}: raised {err['message']!r} but the client does not show the change that is on disk"
        assert reopened["collections"] == after["collections"], f"{where}: after reopen the change is not in place"
        fc = t["follow_up_catalog"]
        assert not fc["ok"] and fc["type"] == "ReadOnlyError", f"{where}: a later catalog change gave {fc}"
        return
    assert t["in_process"]["ok"], f"{where}: reading after the error raised {t['in_process']}"
    assert kind == "batch" or t["in_process"]["value"]["collections"] == t["before"]["collections"], \
        f"{where}: raised {err['type']}: {err['message']}, but the data in memory changed"
    assert reopened["collections"] == t["before"]["collections"], \
        f"{where}: raised {err['type']}: {err['message']}, but after reopen the data is not as before"
    fu = t["follow_up"]
    if kind in ("log", "batch"):
        assert not fu["ok"] and fu["type"] == "ReadOnlyError", \
            f"{where}: after a failed log {fault.split('-')[0]}, the next write gave {fu} (expected ReadOnlyError)"
    elif fu["ok"]:
        assert reopened["after_fault"], f"{where}: a write acknowledged after the failed {op} is lost after reopen"
    else:
        assert fu["type"] == "ReadOnlyError", f"{where}: the next write gave {fu}"


# Sweeps that find a known bug: (op, fault) -> reason (none open; see the regression tests below
# for the ones found and fixed).
KNOWN: dict = {}


def sweep_params():
    for op in OPS:
        for fault in FAULTS:
            if (op, fault) == ("add_relaxed", "sync-EIO"):
                continue  # a relaxed write makes no sync call: nothing to inject
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN[(op, fault)])] if (op, fault) in KNOWN else []
            yield pytest.param(op, fault, marks=marks, id=f"{op}-{fault}")


@pytest.mark.parametrize("op,fault", list(sweep_params()))
def test_fault_at_every_call(shim, base_db, tmp_path, op, fault):
    trials = run_sweep(shim, base_db, str(tmp_path), op, fault)
    after = trials[-1]  # no fault reached: the operation's full effect
    assert after["op"]["ok"], f"{op} fails even without a fault: {after['op']}"
    assert after["reopen"]["ok"], after["reopen"]
    faulted = trials[:-1]
    assert faulted, f"{op} makes no {fault.split('-')[0]} call on the database files: the sweep tested nothing"
    for t in faulted:
        check_trial(op, fault, t, after["reopen"]["value"])
    # At least one injected fault must have surfaced as an error: faults are not silently dropped.
    assert any(not t["op"]["ok"] for t in faulted), f"{op}: every injected {fault} was ignored"


# ---------------------------------------------------------------------------------------------
# The bugs the sweeps found, each pinned by a focused regression test (all fixed).

def test_write_after_failed_manifest_switch_is_refused_or_kept(shim, base_db, tmp_path):
    """Was: the directory sync after MANIFEST's rename failed, checkpoint raised, the collection went
    on writing to the old wal-<G>, and the next open deleted that log as a leftover."""
    trials = run_sweep(shim, base_db, str(tmp_path), "checkpoint", "sync-EIO")
    t = trials[-2]  # the last sync of the checkpoint: the directory's, after the rename
    assert not t["op"]["ok"], t
    fu, reopened = t["follow_up"], t["reopen"]["value"]
    assert (not fu["ok"] and fu["type"] == "ReadOnlyError") or reopened["after_fault"], \
        f"checkpoint raised {t['op']['message']!r}; the next write was acknowledged, then lost on reopen"


def test_add_that_trains_succeeds_when_only_its_checkpoint_fails(shim, base_db, tmp_path):
    """Was: the checkpoint after training ran inside add() and its failure failed the add, although
    the add was logged and applied (present after reopen)."""
    trials = run_sweep(shim, base_db, str(tmp_path), "add_that_trains", "sync-EIO")
    t, after = trials[-2], trials[-1]  # a sync inside the checkpoint, after the log record's sync
    assert t["op"]["ok"], f"add() raised {t['op']} though its record was durable"
    assert t["reopen"]["value"]["collections"] == after["reopen"]["value"]["collections"]


def test_catalog_change_whose_directory_sync_fails_is_reported_and_in_place(shim, base_db, tmp_path):
    """Was: the client rolled back its in-memory catalog although the new catalog.json was in place,
    so a 'failed' delete_collection had happened after reopen."""
    trials = run_sweep(shim, base_db, str(tmp_path), "delete_collection", "sync-EIO")
    t = trials[-2]  # the directory sync after catalog.json.tmp was renamed over catalog.json
    assert not t["op"]["ok"] and t["op"]["type"] == "ReadOnlyError", t["op"]
    assert "pre" not in t["in_process"]["value"]["collections"]
    assert "pre" not in t["reopen"]["value"]["collections"]


# ---------------------------------------------------------------------------------------------
# A real ENOSPC: a tiny tmpfs, filled up.

def state_of(col) -> tuple:
    got = col.get(include=["embeddings", "metadatas", "documents"])
    return got["ids"], np.asarray(got["embeddings"]).tobytes(), got["metadatas"], got["documents"]


def test_disk_full_during_add_is_clean_and_read_only_until_reopen(small_fs, fill_fs):
    path = os.path.join(small_fs, "db")
    client = vectordb.PersistentClient(path)
    col = client.create_collection("full")
    col.add(ids=[f"a{i}" for i in range(50)], embeddings=_vecs(50, 5), metadatas=[{"i": i} for i in range(50)])
    before = state_of(col)
    filler = fill_fs(small_fs)
    with pytest.raises(OSError, match="No space left on device"):
        col.add(ids=[f"b{i}" for i in range(400)], embeddings=_vecs(400, 6), documents=["x" * 100] * 400)
    assert state_of(col) == before
    os.remove(filler)  # space again, but the collection stays read-only until reopened
    with pytest.raises(ReadOnlyError):
        col.add(ids=["c"], embeddings=_vecs(1, 7))
    assert state_of(col) == before
    client.close()
    client = vectordb.PersistentClient(path)
    col = client.get_collection("full")
    assert state_of(col) == before
    col.add(ids=["c"], embeddings=_vecs(1, 7))
    client.close()
    client = vectordb.PersistentClient(path)
    assert client.get_collection("full").get()["ids"] == before[0] + ["c"]
    client.close()


def test_disk_full_during_checkpoint_keeps_the_old_generation(small_fs, fill_fs):
    path = os.path.join(small_fs, "db")
    client = vectordb.PersistentClient(path)
    col = client.create_collection("full")
    col.add(ids=[f"a{i}" for i in range(3000)], embeddings=_vecs(3000, 8))
    col.delete(ids=[f"a{i}" for i in range(0, 3000, 2)])
    before = state_of(col)
    filler = fill_fs(small_fs)
    with pytest.raises(OSError, match="No space left on device"):
        col.checkpoint()
    assert state_of(col) == before
    os.remove(filler)
    try:
        col.add(ids=["late"], embeddings=_vecs(1, 9))  # allowed (the log was never touched) or refused
        added = ["late"]
    except ReadOnlyError:
        added = []
    client.close()
    client = vectordb.PersistentClient(path)
    col = client.get_collection("full")
    assert col.get()["ids"] == before[0] + added
    col.checkpoint()  # with space, a checkpoint works and leaves one generation
    cdir = os.path.join(path, "collections", os.listdir(os.path.join(path, "collections"))[0])
    assert sorted(n for n in os.listdir(cdir) if n.startswith(("gen-", "wal-"))).__len__() == 2, os.listdir(cdir)
    client.close()


def test_disk_full_while_saving_the_catalog_keeps_the_database_openable(small_fs, fill_fs):
    """Was: os.write's short count was ignored and a truncated catalog.json was renamed into place."""
    path = os.path.join(small_fs, "db")
    client = vectordb.PersistentClient(path)
    for i in range(40):  # a catalog of several pages
        client.create_collection(f"collection-{i:03d}", metadata={"description": "m" * 60, "i": i})
    assert os.path.getsize(os.path.join(path, "catalog.json")) > 3 * os.sysconf("SC_PAGE_SIZE")
    # Room for the new collection's MANIFEST and one page of the new catalog, not all of it.
    fill_fs(small_fs, leave_pages=2)
    try:
        client.create_collection("one-more")
    except OSError:
        pass  # a clean error is fine; a half-written catalog is not
    client.close()
    client = vectordb.PersistentClient(path)  # CorruptionError: catalog.json was cut short
    assert len(client.list_collections()) in (40, 41)
    client.close()
