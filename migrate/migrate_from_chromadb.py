#!/usr/bin/env python3
"""Copy ChromaDB collections into a vectordb database, then verify the copy.

    pip install 'vectordb[migrate]'
    python migrate/migrate_from_chromadb.py --chromadb-path ./chroma_db --use-ivf
    python migrate/migrate_from_chromadb.py --chromadb-path ./chroma_db --collections images docs

What is copied, per collection: every id, embedding (float32, bit for bit), metadata and document,
the collection's metadata and its distance space (chromadb 1.x keeps the space in the collection's
schema/configuration, older databases in the metadata key "hnsw:space").

How it reads: through the chromadb package, in pages (get with limit/offset), in a child process so
that a crash inside chromadb (a corrupt HNSW segment can segfault its loader) is reported instead of
taking this process down. Opening a chromadb directory upgrades its files in place, so by default the
tool reads from a temporary copy (placed under $TMPDIR); --in-place reads the original.

Re-running is safe; the rule:
- A collection is copied into a temporary vectordb collection named "migrating-<chromadb collection
  UUID>" and renamed to its own name only once it is complete and verified, so a name never shows a
  partial copy. Finding that temporary collection means an earlier run was interrupted: the run
  resumes it (ids already there are skipped, the missing ones added), whatever --on-existing says,
  except --on-existing overwrite, which starts that copy again from nothing.
- Finished copies are recorded in <vectordb path>/migrate-chromadb.json (vectordb collection id ->
  chromadb collection id and record count). A collection recorded there, from the same chromadb
  collection and unchanged since, is "done": running the same command again skips it.
- Any other collection that already exists is handled by --on-existing: error (default: stop
  before anything is written), skip, overwrite (copy into the temporary collection, verify, then
  replace), append (add the records whose ids are not in the collection yet; records already there
  are never modified and any that differ from chromadb are reported; appending again is a no-op).
So after an interruption (Ctrl-C, kill -9, power loss), run the same command again.

Verification after each collection: the record count, the set of ids (an order-independent digest),
a random sample of records compared exactly (ids, float32 embeddings, metadata with value types,
documents), and a sample of queries. The query answers are compared with exact nearest neighbours
computed in NumPy (float64) over the embeddings read from chromadb, so a flat vectordb collection
must return the exact top ids (near-ties within float32 rounding are accepted); an IVF collection
reports its recall, and chromadb's own (approximate, HNSW) recall is reported next to it. Any
difference is printed and the exit status is 1. Exit status 2: nothing was done (bad arguments,
chromadb not installed, a collection that already exists with --on-existing error, ...).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

INSTALL_HINT = "pip install 'vectordb[migrate]'"
TEMP_PREFIX = "migrating-"  # + the chromadb collection's UUID: where a copy lives until verified
EXIT_OK, EXIT_DIFFERENCES, EXIT_USAGE = 0, 1, 2
# Test aid: SIGKILL this process once this many records have been written (simulates a crash at a
# chosen point, so the resume path can be tested deterministically).
KILL_AFTER_ENV = "VECTORDB_MIGRATE_TEST_KILL_AFTER"
MAX_DIFFERENCES_SHOWN = 10


class UsageError(Exception):
    """Nothing was done: bad arguments or environment (exit status 2)."""


class ChromadbMissing(UsageError):
    pass


class ReaderDied(Exception):
    pass


class SourceError(Exception):
    """chromadb raised while reading."""


# --------------------------------------------------------------------------------------------
# Reading side: runs where chromadb is imported (a child process unless --no-subprocess)
# --------------------------------------------------------------------------------------------

_PLAIN = (str, bool, int, float)


def _plain_value(v: Any) -> Any:
    """Metadata value as plain Python; anything vectordb cannot hold becomes a tagged tuple, so the
    parent (which never imports chromadb) can unpickle it and report it."""
    if v is None or isinstance(v, _PLAIN):
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, _PLAIN) for x in v):
        return list(v)
    if isinstance(v, np.generic):
        return v.item()
    return ("__unsupported__", type(v).__name__, repr(v)[:80])


def _plain_metadata(md: Optional[dict]) -> Optional[dict]:
    # chromadb can hand out {} (a record whose only metadata was its uri, or whose keys were all
    # deleted); like chromadb's own add, vectordb takes None for "no metadata", never {}.
    if not md:
        return None
    return {str(k): _plain_value(v) for k, v in md.items()}


def _space_of(model: Any) -> Dict[str, Any]:
    """The distance space chromadb uses for a collection, and where each candidate was found."""
    found: Dict[str, Optional[str]] = {}
    schema = getattr(model, "serialized_schema", None) or {}
    try:
        found["schema"] = schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"]
    except (KeyError, TypeError):
        found["schema"] = None
    conf = getattr(model, "configuration_json", None) or {}
    found["configuration.hnsw"] = ((conf.get("hnsw") or {}) if isinstance(conf, dict) else {}).get("space")
    found["configuration.spann"] = ((conf.get("spann") or {}) if isinstance(conf, dict) else {}).get("space")
    md = getattr(model, "metadata", None) or {}
    found["metadata"] = md.get("hnsw:space")
    # Order of authority in chromadb 1.x: the schema, then the configuration, then legacy metadata.
    space = next((v for v in found.values() if v), None) or "l2"
    return {"space": str(space), "found": found}


class ChromaSource:
    """Read-only view of a chromadb PersistentClient directory."""

    METHODS = ("list", "page", "at_offsets", "query")

    def __init__(self, path: str):
        import chromadb  # noqa: F401  (ImportError handled by the caller)
        from chromadb.config import Settings

        self._client = chromadb.PersistentClient(
            path=path, settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        self._cols: Dict[str, Any] = {}

    def _col(self, name: str) -> Any:
        if name not in self._cols:
            # list_collections builds Collection objects without instantiating or validating the
            # stored embedding function (get_collection would; a custom one may need API keys).
            self._cols = {c.name: c for c in self._client.list_collections()}
        if name not in self._cols:
            raise SourceError(f"chromadb collection {name!r} does not exist")
        return self._cols[name]

    def list(self) -> List[dict]:
        out = []
        self._cols = {c.name: c for c in self._client.list_collections()}
        for name, col in self._cols.items():
            model = col._model
            sp = _space_of(model)
            out.append(
                {
                    "name": name,
                    "id": str(col.id),
                    "count": int(col.count()),
                    "metadata": _plain_metadata(col.metadata),
                    "space": sp["space"],
                    "space_found": sp["found"],
                    "dimension": getattr(model, "dimension", None),
                }
            )
        return out

    def page(self, name: str, offset: int, limit: int) -> dict:
        col = self._col(name)
        g = col.get(limit=limit, offset=offset, include=["embeddings", "metadatas", "documents", "uris"])
        ids = list(g["ids"])
        emb = g.get("embeddings")
        if emb is None or len(ids) == 0:
            e32 = np.zeros((len(ids), 0), dtype=np.float32)
            inexact = 0
        else:
            e = np.asarray(emb)
            e32 = np.ascontiguousarray(e, dtype=np.float32)
            # chromadb stores float32 and hands out float64 copies: the round trip must be exact.
            inexact = int(np.count_nonzero(np.any(e32.astype(e.dtype) != e, axis=1))) if e.dtype != np.float32 else 0
        n = len(ids)
        metadatas = g.get("metadatas") or [None] * n
        documents = g.get("documents") or [None] * n
        uris = g.get("uris") or [None] * n
        return {
            "ids": ids,
            "embeddings": e32,
            "metadatas": [_plain_metadata(m) for m in metadatas],
            "documents": list(documents),
            "uris": list(uris),
            "inexact": inexact,
        }

    def at_offsets(self, name: str, offsets: Sequence[int]) -> np.ndarray:
        col = self._col(name)
        rows = []
        for off in offsets:
            g = col.get(limit=1, offset=int(off), include=["embeddings"])
            if len(g["ids"]):
                rows.append(np.asarray(g["embeddings"][0], dtype=np.float32))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)

    def query(self, name: str, queries: np.ndarray, k: int) -> List[List[str]]:
        col = self._col(name)
        r = col.query(query_embeddings=queries, n_results=k, include=["distances"])
        return [list(x) for x in r["ids"]]


def _reader_main(path: str) -> int:
    """Child process loop: pickled (method, args) requests on stdin, ("ok"|"err", value) on the
    original stdout. Anything chromadb prints goes to stderr so it cannot corrupt the channel."""
    # Ctrl-C reaches the whole process group: the parent decides, then closes this reader.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer

    def send(obj: Any) -> None:
        pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    try:
        import chromadb
    except ImportError as e:
        send(("import_error", str(e)))
        return 3
    try:
        src = ChromaSource(path)
    except Exception as e:  # noqa: BLE001 - reported to the parent verbatim
        send(("err", f"cannot open the chromadb database at {path}: {type(e).__name__}: {e}"))
        return 4
    send(("ok", getattr(chromadb, "__version__", "?")))
    while True:
        try:
            method, args = pickle.load(inp)
        except EOFError:
            return 0
        if method == "close":
            send(("ok", None))
            return 0
        try:
            if method not in ChromaSource.METHODS:
                raise SourceError(f"unknown reader method {method!r}")
            send(("ok", getattr(src, method)(*args)))
        except Exception as e:  # noqa: BLE001
            send(("err", f"{type(e).__name__}: {e}"))


class ReaderProcess:
    """The parent's handle on the reading child."""

    def __init__(self, path: str):
        env = dict(os.environ)
        env.setdefault("ANONYMIZED_TELEMETRY", "False")
        self.path = path
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_reader", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.version = self._receive(first=True)

    def _receive(self, first: bool = False) -> Any:
        try:
            status, value = pickle.load(self._proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError):
            rc = self._proc.wait()
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            raise ReaderDied(
                f"the chromadb reader process {how}"
                + (" while opening the database" if first else "")
                + " (a damaged HNSW segment in the chromadb directory can crash chromadb; see its output above)"
            ) from None
        if status == "import_error":
            raise ChromadbMissing(value)
        if status == "err":
            raise SourceError(value)
        return value

    def send(self, method: str, *args: Any) -> None:
        """Starts a request; the child works on it while this process does something else."""
        try:
            pickle.dump((method, args), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child is gone: receive() reports how it ended

    def receive(self) -> Any:
        return self._receive()

    def call(self, method: str, *args: Any) -> Any:
        self.send(method, *args)
        return self._receive()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.call("close")
            except Exception:  # noqa: BLE001
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class InlineReader:
    """Same interface as ReaderProcess, chromadb imported into this process (--no-subprocess)."""

    def __init__(self, path: str):
        try:
            import chromadb
        except ImportError as e:
            raise ChromadbMissing(str(e)) from None
        self.version = getattr(chromadb, "__version__", "?")
        self._src = ChromaSource(path)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self._src, method)(*args)

    def send(self, method: str, *args: Any) -> None:
        self._pending = (method, args)

    def receive(self) -> Any:
        method, args = self._pending
        return self.call(method, *args)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Verification helpers (pure NumPy / Python)
# --------------------------------------------------------------------------------------------


def same_value(a: Any, b: Any) -> bool:
    """Equality that also requires equal types: True is not 1, 1 is not 1.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    return a == b


def same_metadata(a: Optional[dict], b: Optional[dict]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)


def id_digest(ids: Sequence[str]) -> int:
    """Order-independent digest of a set of ids (sum of 64-bit hashes mod 2**64)."""
    total = 0
    for i in ids:
        total += int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little")
    return total & 0xFFFFFFFFFFFFFFFF


def distances64(queries: np.ndarray, points: np.ndarray, space: str) -> np.ndarray:
    """chromadb's distances in float64: l2 = squared euclidean, ip = 1 - dot, cosine = 1 - cos."""
    q = queries.astype(np.float64)
    p = points.astype(np.float64)
    dots = q @ p.T
    if space == "ip":
        return 1.0 - dots
    qn2 = np.einsum("ij,ij->i", q, q)
    pn2 = np.einsum("ij,ij->i", p, p)
    if space == "cosine":
        denom = np.sqrt(qn2)[:, None] * np.sqrt(pn2)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
        return 1.0 - cos
    return np.maximum(qn2[:, None] - 2.0 * dots + pn2[None, :], 0.0)


class ExactTopK:
    """Exact nearest neighbours of a few queries, accumulated page by page (bounded memory)."""

    def __init__(self, queries: np.ndarray, space: str, keep: int):
        self.queries = queries
        self.space = space
        self.keep = max(1, keep)
        nq = len(queries)
        self.dist = np.zeros((nq, 0), dtype=np.float64)
        self.ids = np.zeros((nq, 0), dtype=object)
        self.max_norm2 = 0.0
        self.seen = 0

    def update(self, emb: np.ndarray, ids: Sequence[str]) -> None:
        if len(ids) == 0:
            return
        self.seen += len(ids)
        e = emb.astype(np.float64)
        self.max_norm2 = max(self.max_norm2, float(np.einsum("ij,ij->i", e, e).max()))
        if len(self.queries) == 0:
            return
        d = distances64(self.queries, emb, self.space)
        id_row = np.empty(len(ids), dtype=object)
        id_row[:] = list(ids)
        all_d = np.concatenate([self.dist, d], axis=1)
        all_i = np.concatenate([self.ids, np.broadcast_to(id_row, d.shape)], axis=1)
        if all_d.shape[1] > self.keep:
            part = np.argpartition(all_d, self.keep - 1, axis=1)[:, : self.keep]
            all_d = np.take_along_axis(all_d, part, axis=1)
            all_i = np.take_along_axis(all_i, part, axis=1)
        self.dist, self.ids = all_d, all_i

    def result(self, qi: int):
        order = np.argsort(self.dist[qi], kind="stable")
        return list(self.ids[qi][order]), self.dist[qi][order]

    def tolerance(self, qi: int) -> float:
        """Slack for float32 rounding in the engine's distances, scaled to the distance magnitude."""
        q = self.queries[qi].astype(np.float64)
        qn2 = float(q @ q)
        if self.space == "l2":
            scale = qn2 + self.max_norm2
        elif self.space == "ip":
            scale = float(np.sqrt(qn2 * self.max_norm2))
        else:
            scale = 1.0
        return 2e-5 * max(scale, 1e-12) + 1e-7


def check_exact(ret_ids: Sequence[str], ret_d: Sequence[float], truth_ids, truth_d, k: int,
                complete: bool, tol: float) -> List[str]:
    """Problems with one flat-search answer against the exact answer (empty list = identical up to
    near-ties). truth_* hold the best len(truth_ids) >= k records; complete: they are all records."""
    problems: List[str] = []
    want = min(k, len(truth_ids))
    if len(ret_ids) != want:
        problems.append(f"returned {len(ret_ids)} ids, expected {want}")
    if len(set(ret_ids)) != len(ret_ids):
        problems.append("returned duplicate ids")
    if want == 0:
        return problems
    kth = float(truth_d[want - 1])
    last = float(truth_d[-1])
    pos = {rid: j for j, rid in enumerate(truth_ids)}
    for rank, rid in enumerate(ret_ids):
        j = pos.get(rid)
        if j is None:
            if complete:
                problems.append(f"rank {rank}: id {rid!r} is not in the collection")
            elif last <= kth + tol:
                continue  # a tie region wider than what we kept: undecidable, accept
            else:
                problems.append(f"rank {rank}: id {rid!r} is not among the exact top {want}")
            continue
        if ret_d is not None and abs(float(ret_d[rank]) - float(truth_d[j])) > tol:
            problems.append(
                f"rank {rank}: id {rid!r} distance {float(ret_d[rank]):.7g}, exact {float(truth_d[j]):.7g}"
            )
        if j >= want and float(truth_d[j]) > kth + tol:
            problems.append(
                f"rank {rank}: id {rid!r} (exact distance {float(truth_d[j]):.7g}) is not among the "
                f"exact top {want} (k-th distance {kth:.7g})"
            )
    return problems


def recall(ret_ids: Sequence[str], truth_ids, truth_d, k: int, tol: float) -> float:
    want = min(k, len(truth_ids))
    if want == 0:
        return 1.0
    kth = float(truth_d[want - 1])
    # Records tied with the k-th within rounding count as correct answers too.
    good = {rid for rid, d in zip(truth_ids, truth_d) if float(d) <= kth + tol}
    return sum(1 for r in ret_ids[:want] if r in good) / want


class Reservoir:
    """Uniform random sample of a stream of records (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.seen = size, rng, 0
        self.items: List[tuple] = []

    def slot(self) -> Optional[int]:
        """Counts one more record; returns where to store it, or None to leave it out."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(None)
            return len(self.items) - 1
        if self.size > 0:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                return j
        return None


# --------------------------------------------------------------------------------------------
# vectordb side
# --------------------------------------------------------------------------------------------


def import_vectordb():
    try:
        import vectordb  # noqa: F401
        if hasattr(vectordb, "PersistentClient"):
            return vectordb
    except ImportError:
        pass
    # Running from a source checkout: migrate/ sits next to the vectordb package.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "vectordb", "__init__.py")):
        sys.path.insert(0, root)
        for mod in [m for m in sys.modules if m == "vectordb" or m.startswith("vectordb.")]:
            del sys.modules[mod]
        import vectordb

        if hasattr(vectordb, "PersistentClient"):
            return vectordb
    raise UsageError("cannot import vectordb (expected the installed package or a source checkout "
                     "with the extension built: python setup.py build_ext --inplace)")


def target_space(col: Any) -> str:
    conf = getattr(col, "configuration", None)
    if callable(conf):
        conf = conf()
    if isinstance(conf, dict):
        hn = conf.get("hnsw")
        if isinstance(hn, dict) and hn.get("space"):
            return str(hn["space"])
        if conf.get("space"):
            return str(conf["space"])
    md = col.metadata or {}
    return str(md.get("hnsw:space") or "l2")


def target_ivf(col: Any) -> Optional[str]:
    """A description of the collection's trained IVF index, or None when queries scan every
    record (a flat collection, or an IVF one too small to have been trained yet)."""
    try:
        st = col.stats()
    except Exception:  # noqa: BLE001
        return None
    if not isinstance(st, dict) or str(st.get("index", "")).lower() != "ivf" or not st.get("trained", True):
        return None
    return f"ivf, n_probe {st.get('n_probe')} of {st.get('n_clusters')} lists"


def existing_ids(col: Any, ids: Sequence[str]) -> set:
    try:
        got = col.get(ids=list(ids), include=[])
    except (ValueError, TypeError):
        got = col.get(ids=list(ids), include=["metadatas"])
    return set(got["ids"])


def target_dimension(col: Any) -> Optional[int]:
    g = col.get(limit=1, include=["embeddings"])
    e = g.get("embeddings")
    if e is None or len(g["ids"]) == 0:
        return None
    return int(np.asarray(e).shape[1])


# --------------------------------------------------------------------------------------------
# Planning and copying
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    src: dict
    action: str  # create | resume | overwrite | skip | done | append | conflict
    reason: str = ""


@dataclass
class Result:
    name: str
    action: str
    space: str = ""
    records: int = 0
    copied: int = 0
    status: str = ""
    differences: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    chroma_recall: Optional[float] = None
    vectordb_recall: Optional[float] = None
    exact_checked: bool = False
    index: str = ""  # "flat", or the IVF index's n_probe and n_clusters
    sampled: int = 0
    queries: int = 0
    seconds: float = 0.0

    def ok(self) -> bool:
        return not self.differences and not self.status.startswith("ERROR")


def temp_name(src: dict) -> str:
    return TEMP_PREFIX + src["id"]


def _existing(client: Any, name: str) -> Any:
    if client is None:
        return None
    try:
        return client.get_collection(name)
    except Exception:  # noqa: BLE001 - "does not exist", whatever class the client uses for it
        return None


STATE_FILE = "migrate-chromadb.json"


class MigrationState:
    """Which vectordb collections earlier runs copied completely, and from which chromadb collection
    (<vectordb path>/migrate-chromadb.json, replaced atomically), so that running the same command
    again recognises its own finished work instead of calling it a conflict."""

    def __init__(self, dst_path: str):
        self.path = os.path.join(dst_path, STATE_FILE)
        self.entries: Dict[str, dict] = {}
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    self.entries = dict(json.load(fh)["collections"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"warning: ignoring {self.path}: {e}", file=sys.stderr)

    def entry(self, target: Any) -> Optional[dict]:
        return self.entries.get(str(target.id)) if target is not None else None

    def record(self, target: Any, src: dict, source_path: str) -> None:
        self.entries[str(target.id)] = {"name": src["name"], "source_id": src["id"], "source_path": source_path,
                                        "records": src["count"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"format": 1, "collections": self.entries}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def make_plan(client: Any, src: dict, on_existing: str, state: Optional[MigrationState] = None) -> Plan:
    """What to do with one collection. A copy is written under temp_name(src) and renamed to the
    collection's name once verified, so a name only ever shows a complete copy; finding the
    temporary collection means an earlier run was interrupted."""
    name = src["name"]
    target = _existing(client, name)
    partial = _existing(client, temp_name(src))
    if partial is not None:
        if on_existing == "overwrite":
            return Plan(src, "overwrite", f"an interrupted copy ({temp_name(src)}) is started again")
        if target is not None:
            return Plan(src, "conflict", f"both an interrupted copy {temp_name(src)!r} and a collection "
                                         f"{name!r} exist; --on-existing overwrite starts the copy again and "
                                         "replaces the collection")
        return Plan(src, "resume", f"finishing the interrupted copy {temp_name(src)}")
    if target is None:
        return Plan(src, "create")
    done = state.entry(target) if state is not None else None
    if done and done["records"] != target.count():
        done = None  # changed since it was copied: an ordinary existing collection now
    if done and done["source_id"] == src["id"] and on_existing in ("error", "skip"):
        if done["records"] == src["count"] or on_existing == "skip":
            return Plan(src, "done", "copied completely by an earlier run")
        return Plan(src, "conflict", f"an earlier run copied it when chromadb held {done['records']} records, "
                                     f"now {src['count']}: use --on-existing append (adds the new ids) or overwrite")
    if on_existing == "error":
        return Plan(src, "conflict", "already exists in vectordb; choose --on-existing skip, overwrite or append")
    if on_existing == "append":
        tspace = target_space(target)
        if tspace != src["space"]:
            return Plan(src, "conflict", f"cannot append: the vectordb collection uses space {tspace!r}, "
                                         f"the chromadb collection {src['space']!r}")
        tdim = target_dimension(target)
        sdim = src.get("dimension")
        if tdim is not None and sdim is not None and tdim != sdim:
            return Plan(src, "conflict", f"cannot append: the vectordb collection has dimension {tdim}, "
                                         f"the chromadb collection {sdim}")
    return Plan(src, on_existing)


def _maybe_kill(written: int) -> None:
    limit = os.environ.get(KILL_AFTER_ENV)
    if limit and written >= int(limit):
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class Writer:
    """Buffers records and writes them to the vectordb collection in large NumPy batches."""

    def __init__(self, col: Any, batch_size: int, written_before: int):
        self.col, self.batch_size = col, batch_size
        self.ids: List[str] = []
        self.emb: List[np.ndarray] = []
        self.metas: List[Optional[dict]] = []
        self.docs: List[Optional[str]] = []
        self.written = 0
        self.total_before = written_before

    def extend(self, ids, emb, metas, docs) -> None:
        self.ids += ids
        self.emb.append(emb)
        self.metas += metas
        self.docs += docs
        if len(self.ids) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.ids:
            return
        emb = np.ascontiguousarray(np.concatenate(self.emb, axis=0), dtype=np.float32)
        kwargs: Dict[str, Any] = {"ids": self.ids, "embeddings": emb}
        if any(m is not None for m in self.metas):
            kwargs["metadatas"] = self.metas
        if any(d is not None for d in self.docs):
            kwargs["documents"] = self.docs
        self.col.add(**kwargs)
        self.written += len(self.ids)
        self.ids, self.emb, self.metas, self.docs = [], [], [], []
        _maybe_kill(self.total_before + self.written)


def _pick_queries(reader: Any, src: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    count = src["count"]
    n = min(n, count)
    if n <= 0:
        return np.zeros((0, 0), dtype=np.float32)
    offsets = sorted(rng.choice(count, size=n, replace=False).tolist())
    base = reader.call("at_offsets", src["name"], offsets)
    if base.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    # Perturb stored vectors a little so queries are realistic rather than exact hits.
    rms = np.sqrt(np.mean(base.astype(np.float64) ** 2, axis=1, keepdims=True))
    noise = rng.standard_normal(base.shape) * 0.05 * np.where(rms > 0, rms, 1.0)
    return (base + noise).astype(np.float32)


@dataclass
class Tally:
    records: int = 0
    digest: int = 0  # id_digest of every id read
    unsupported: int = 0
    uris_dropped: int = 0
    inexact: int = 0


class PageStream:
    """The pages of one chromadb collection; each page is requested before the previous one is
    handed out, so chromadb reads (in the child process) while this process writes to vectordb."""

    def __init__(self, reader: Any, name: str, count: int, page_size: int):
        self.reader, self.name, self.count, self.page_size = reader, name, count, page_size
        self.pending = False

    def _request(self, offset: int) -> None:
        self.reader.send("page", self.name, offset, self.page_size)
        self.pending = True

    def __iter__(self):
        requested = 0
        if self.count > 0:
            self._request(0)
            requested = self.page_size
        while self.pending:
            page = self.reader.receive()
            self.pending = False
            if not page["ids"]:
                return
            if requested < self.count:
                self._request(requested)
                requested += self.page_size
            yield page

    def drain(self) -> None:
        """Collects an answer still on its way, so the next request gets its own answer."""
        if self.pending:
            self.pending = False
            try:
                self.reader.receive()
            except Exception:  # noqa: BLE001 - the error that stopped the copy is what matters
                pass


def _copy_page(page: dict, target: Any, writer: "Writer", truth: "ExactTopK", sample: "Reservoir",
               skip_existing: bool, args: argparse.Namespace, res: "Result", tally: Tally) -> None:
    """Checks one page from chromadb, feeds the verification, and hands its records to the writer."""
    ids = page["ids"]
    emb = page["embeddings"]
    tally.inexact += page["inexact"]
    truth.update(emb, ids)
    tally.records += len(ids)
    tally.digest = (tally.digest + id_digest(ids)) & 0xFFFFFFFFFFFFFFFF
    metas = []
    for rid, md in zip(ids, page["metadatas"]):
        if md is not None:
            bad = [k_ for k_, v in md.items() if isinstance(v, tuple)]
            if bad:
                tally.unsupported += 1
                if tally.unsupported <= MAX_DIFFERENCES_SHOWN:
                    res.differences.append(
                        f"record {rid!r}: metadata {', '.join(f'{b!r} holds a {md[b][1]}' for b in bad)}"
                        ", which vectordb cannot store (key left out)")
                md = {k_: v for k_, v in md.items() if k_ not in bad} or None
        metas.append(md)
    for i, uri in enumerate(page["uris"]):
        if uri is None:
            continue
        # vectordb has no uris field: keep them in metadata when asked, else report them.
        if args.uris_key and not (metas[i] and args.uris_key in metas[i]):
            metas[i] = {**(metas[i] or {}), args.uris_key: uri}
            continue
        tally.uris_dropped += 1
        if args.uris_key and tally.uris_dropped <= MAX_DIFFERENCES_SHOWN:
            res.differences.append(f"record {ids[i]!r}: metadata already has key {args.uris_key!r}; "
                                   "its uri was not kept")
    for i, rid in enumerate(ids):
        j = sample.slot()
        if j is not None:
            # A copy of the row: a view would keep its whole page alive.
            sample.items[j] = (rid, emb[i].copy(), metas[i], page["documents"][i])
    keep = list(range(len(ids)))
    if skip_existing:
        present = existing_ids(target, ids)
        keep = [i for i in keep if ids[i] not in present]
    if keep:
        sel = np.asarray(keep)
        writer.extend([ids[i] for i in keep], emb[sel], [metas[i] for i in keep],
                      [page["documents"][i] for i in keep])


def migrate_collection(reader: Any, client: Any, plan: Plan, args: argparse.Namespace,
                       written_so_far: int, state: MigrationState, source_path: str) -> Result:
    src = plan.src
    name = src["name"]
    res = Result(name=name, action=plan.action, space=src["space"], records=src["count"])
    t0 = time.perf_counter()
    if plan.action in ("skip", "done"):
        res.status = "skipped" if plan.action == "skip" else "done earlier"
        return res
    rng = np.random.default_rng(args.seed)
    pyrng = random.Random(args.seed)
    found = {k: v for k, v in src["space_found"].items() if v}
    if len(set(found.values())) > 1:
        res.warnings.append(f"chromadb records several spaces {found}; using {src['space']!r}")

    tname = temp_name(src)
    if plan.action in ("create", "overwrite"):
        if _existing(client, tname) is not None:
            client.delete_collection(tname)
        target = client.create_collection(
            tname,
            metadata=src["metadata"] or None,
            configuration={"hnsw": {"space": src["space"]}},
            dimension=src.get("dimension"),
            use_ivf=args.use_ivf,
            n_clusters=args.n_clusters,
            n_probe=args.n_probe,
        )
        skip_existing = False
    elif plan.action == "resume":
        target = client.get_collection(tname)
        skip_existing = True
    else:  # append: straight into the existing collection (idempotent: present ids are skipped)
        target = client.get_collection(name)
        skip_existing = True
    before = target.count()

    queries = _pick_queries(reader, src, args.verify_queries, rng)
    k = min(args.verify_k, src["count"])
    truth = ExactTopK(queries, src["space"], k + 20)
    sample = Reservoir(args.verify_sample, pyrng)
    writer = Writer(target, args.batch_size, written_so_far)
    tally = Tally()
    page_size = max(1, min(args.page_size, args.batch_size))
    bar = _progress(total=src["count"], desc=name)
    stream = PageStream(reader, name, src["count"], page_size)
    try:
        with _batch_mode(target):
            for page in stream:
                _copy_page(page, target, writer, truth, sample, skip_existing, args, res, tally)
                bar.update(len(page["ids"]))
            writer.flush()
    finally:
        stream.drain()
        bar.close()
    res.copied = writer.written
    digest = tally.digest
    if tally.records != src["count"]:
        res.differences.append(f"chromadb returned {tally.records} records while counting {src['count']}")
    if tally.unsupported > MAX_DIFFERENCES_SHOWN:
        res.differences.append(f"... {tally.unsupported} records in all hold metadata vectordb cannot store")
    if tally.uris_dropped:
        res.differences.append(f"{tally.uris_dropped} records have uris, which vectordb does not store"
                               + ("" if args.uris_key else "; --uris-key KEY keeps them in metadata KEY"))
    if tally.inexact:
        res.warnings.append(f"{tally.inexact} embeddings were not float32 in chromadb and were rounded")

    # ---- verification
    count = target.count()
    expected = src["count"] if plan.action != "append" else before + res.copied
    if count != expected:
        res.differences.append(f"count: vectordb has {count} records, expected {expected}")
    if plan.action != "append":
        tdigest = 0
        for off in range(0, count, 10000):
            g = target.get(limit=10000, offset=off, include=[])
            tdigest = (tdigest + id_digest(g["ids"])) & 0xFFFFFFFFFFFFFFFF
        if tdigest != digest:
            res.differences.append("ids: the set of ids in vectordb differs from chromadb's")
    _verify_sample(target, sample.items, res)
    res.sampled = len(sample.items)
    if plan.action == "append" and before > 0:
        res.warnings.append("queries not compared: the collection held other records before the append")
    elif len(queries) and k > 0:
        _verify_queries(reader, target, src, queries, truth, k, target_ivf(target), res)

    if plan.action != "append":
        md = target.metadata
        if not same_metadata(md or None, src["metadata"] or None):
            res.differences.append(f"collection metadata: vectordb has {md!r}, chromadb {src['metadata']!r}")
        tsp = target_space(target)
        if tsp != src["space"]:
            res.differences.append(f"space: vectordb collection uses {tsp!r}, chromadb {src['space']!r}")
        if res.differences:
            res.differences.append(
                f"the copy is kept as {tname!r}: rename it with .modify(name={name!r}) to accept it as is, "
                "or run again with --on-existing overwrite")
        else:
            # Publish: the name appears only now, complete and verified. The state entry is keyed by
            # the collection's id, which the rename keeps.
            state.record(target, src, source_path)
            if _existing(client, name) is not None:
                client.delete_collection(name)
            target.modify(name=name)
    res.status = "ok" if not res.differences else f"FAILED ({len(res.differences)})"
    res.seconds = time.perf_counter() - t0
    return res


def _verify_sample(target: Any, items: List[tuple], res: Result) -> None:
    shown = 0
    bad = 0
    for start in range(0, len(items), 1000):
        chunk = items[start:start + 1000]
        g = target.get(ids=[r[0] for r in chunk], include=["embeddings", "metadatas", "documents"])
        by_id = {}
        emb = np.asarray(g["embeddings"]) if g.get("embeddings") is not None else None
        for j, rid in enumerate(g["ids"]):
            by_id[rid] = (emb[j] if emb is not None else None, g["metadatas"][j], g["documents"][j])
        for rid, e, md, doc in chunk:
            problem = None
            got = by_id.get(rid)
            if got is None:
                problem = f"record {rid!r} is missing"
            else:
                ge, gmd, gdoc = got
                if ge is None or ge.dtype != np.float32 or ge.shape != e.shape or not np.array_equal(ge, e):
                    problem = f"record {rid!r}: embedding differs"
                elif not same_metadata(gmd, md):
                    problem = f"record {rid!r}: metadata {gmd!r}, chromadb {md!r}"
                elif gdoc != doc:
                    problem = f"record {rid!r}: document {gdoc!r}, chromadb {doc!r}"
            if problem:
                bad += 1
                if shown < MAX_DIFFERENCES_SHOWN:
                    res.differences.append(problem)
                    shown += 1
    if bad > shown:
        res.differences.append(f"... {bad} of {len(items)} sampled records differ")


def _verify_queries(reader: Any, target: Any, src: dict, queries: np.ndarray, truth: ExactTopK,
                    k: int, ivf: Optional[str], res: Result) -> None:
    got = target.query(query_embeddings=queries, n_results=k, include=["distances"])
    chroma_ids = reader.call("query", src["name"], queries, k)
    complete = truth.seen <= truth.keep
    v_rec, c_rec = [], []
    shown = 0
    for qi in range(len(queries)):
        t_ids, t_d = truth.result(qi)
        tol = truth.tolerance(qi)
        r_ids = list(got["ids"][qi])
        r_d = got["distances"][qi] if got.get("distances") is not None else None
        v_rec.append(recall(r_ids, t_ids, t_d, k, tol))
        c_rec.append(recall(chroma_ids[qi], t_ids, t_d, k, tol))
        if ivf:
            # Approximate search: only the distances of what it returns must be right.
            pos = {rid: j for j, rid in enumerate(t_ids)}
            problems = [f"id {rid!r} distance {float(r_d[i]):.7g}, exact {float(t_d[pos[rid]]):.7g}"
                        for i, rid in enumerate(r_ids)
                        if r_d is not None and rid in pos and abs(float(r_d[i]) - float(t_d[pos[rid]])) > tol]
        else:
            problems = check_exact(r_ids, r_d, t_ids, t_d, k, complete, tol)
        if problems and shown < MAX_DIFFERENCES_SHOWN:
            res.differences.append(f"query {qi}: " + "; ".join(problems[:3]))
            shown += 1
    res.queries = len(queries)
    res.exact_checked = ivf is None
    res.index = ivf or "flat"
    res.vectordb_recall = float(np.mean(v_rec))
    res.chroma_recall = float(np.mean(c_rec))


class _batch_mode:
    """Bulk-import mode of the target (IVF trains once at the end), if the collection offers it."""

    def __init__(self, col: Any):
        self.col = col
        self.on = False

    def __enter__(self):
        if hasattr(self.col, "begin_batch"):
            self.col.begin_batch()
            self.on = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.on:
            self.col.end_batch()
        return False


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="rec", file=sys.stderr,
                    dynamic_ncols=True, mininterval=0.5)
    except ImportError:
        return _PlainProgress(total, desc)


class _PlainProgress:
    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.last = total, desc, 0, 0.0

    def update(self, n: int) -> None:
        self.n += n
        if time.monotonic() - self.last > 1.0 or self.n >= self.total:
            self.last = time.monotonic()
            print(f"{self.desc}: {self.n}/{self.total} records", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _fmt_recall(r: Result) -> str:
    if r.chroma_recall is None:
        return "-"
    v = f"{r.vectordb_recall:.3f}" + (" exact" if r.exact_checked else f" ({r.index or 'ivf'})")
    return f"{r.chroma_recall:.3f} / {v}"


def print_summary(results: List[Result]) -> None:
    rows = [[r.name, r.action, r.space, str(r.records), str(r.copied), r.status, _fmt_recall(r),
             f"{r.seconds:.1f}s"] for r in results]
    print()
    print(format_table(["collection", "action", "space", "records", "copied", "verified",
                        "recall@k chromadb / vectordb", "time"], rows))
    for r in results:
        for w in r.warnings:
            print(f"warning: {r.name}: {w}")
        for d in r.differences:
            print(f"DIFFERENCE: {r.name}: {d}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="migrate_from_chromadb.py",
        description="Copy ChromaDB collections (ids, embeddings, metadata, documents, collection "
                    "metadata, distance space) into a vectordb database and verify the copy.",
        epilog="After an interruption, run the same command again: it finishes without duplicates. "
               "Exit status: 0 copied and verified, 1 differences found, 2 nothing done.",
    )
    p.add_argument("--chromadb-path", required=True, metavar="DIR",
                   help="directory given to chromadb.PersistentClient (holds chroma.sqlite3)")
    p.add_argument("--collections", nargs="+", metavar="NAME", help="collections to copy (default: all)")
    p.add_argument("--vectordb-path", metavar="DIR",
                   help="vectordb database directory (default: $VECTORDB_PATH or ./vector_db)")
    p.add_argument("--use-ivf", action="store_true", help="create the new collections with an IVF index")
    p.add_argument("--n-clusters", type=int, metavar="N",
                   help="IVF clusters (default: chosen by vectordb from the size)")
    p.add_argument("--n-probe", type=int, metavar="N",
                   help="IVF lists searched per query, stored with the collection (default: vectordb's)")
    p.add_argument("--batch-size", type=int, default=20000, metavar="N",
                   help="records per vectordb write (default 20000)")
    p.add_argument("--page-size", type=int, default=5000, metavar="N", help="records per chromadb read (default 5000)")
    p.add_argument("--on-existing", choices=["error", "skip", "overwrite", "append"], default="error",
                   help="what to do with a collection that already exists in vectordb (default error). "
                        "Whatever this says, a copy interrupted earlier is resumed (unless overwrite) and "
                        "a collection an earlier run finished is left alone (unless overwrite or append)")
    p.add_argument("--uris-key", metavar="KEY",
                   help="keep chromadb uris in this metadata key (vectordb has no uris field; without this "
                        "option, records with uris are reported as differences)")
    p.add_argument("--dry-run", action="store_true", help="report what would be copied, write nothing")
    p.add_argument("--in-place", action="store_true",
                   help="read the chromadb directory itself instead of a temporary copy "
                        "(chromadb may upgrade its files when it opens them)")
    p.add_argument("--verify-sample", type=int, default=1000, metavar="N",
                   help="records compared exactly per collection (default 1000)")
    p.add_argument("--verify-queries", type=int, default=20, metavar="N",
                   help="queries compared per collection (default 20)")
    p.add_argument("--verify-k", type=int, default=10, metavar="K",
                   help="n_results of the verification queries (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the verification sample")
    p.add_argument("--no-subprocess", action="store_true", help="read chromadb in this process")
    p.add_argument("--report", metavar="FILE", help="also write the summary as JSON to FILE")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.page_size < 1:
        p.error("--batch-size and --page-size must be at least 1")
    for opt in ("n_clusters", "n_probe"):
        v = getattr(args, opt)
        if v is not None and (v < 1 or not args.use_ivf):
            p.error(f"--{opt.replace('_', '-')} needs --use-ivf and a value of at least 1")
    if args.verify_sample < 0 or args.verify_queries < 0 or args.verify_k < 1:
        p.error("--verify-sample and --verify-queries must be >= 0, --verify-k >= 1")
    return args


TMP_PREFIX = "vectordb-migrate-"


def _remove_stale_copies() -> None:
    """Delete temporary copies left by runs that were killed (their owner process is gone)."""
    base = tempfile.gettempdir()
    for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if not entry.startswith(TMP_PREFIX):
            continue
        try:
            with open(os.path.join(path, "owner.pid")) as fh:
                pid = int(fh.read().strip())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge (no pid file yet, or no permission)


def run(args: argparse.Namespace) -> int:
    src_path = os.path.abspath(args.chromadb_path)
    if not os.path.isfile(os.path.join(src_path, "chroma.sqlite3")):
        raise UsageError(f"{args.chromadb_path!r} is not a chromadb database: expected a directory holding "
                         "chroma.sqlite3 (the path given to chromadb.PersistentClient)")
    dst_path = os.path.abspath(args.vectordb_path or os.environ.get("VECTORDB_PATH") or "vector_db")
    if os.path.realpath(dst_path) == os.path.realpath(src_path):
        raise UsageError("--vectordb-path must differ from --chromadb-path")
    vectordb = import_vectordb()

    tmp = None
    reader = None
    client = None
    try:
        read_path = src_path
        if not args.in_place:
            _remove_stale_copies()
            tmp = tempfile.mkdtemp(prefix=TMP_PREFIX)
            with open(os.path.join(tmp, "owner.pid"), "w") as fh:
                fh.write(str(os.getpid()))
            read_path = os.path.join(tmp, "chroma")
            print(f"reading from a temporary copy {read_path} (chromadb upgrades files it opens; "
                  "--in-place reads the original)", file=sys.stderr)
            shutil.copytree(src_path, read_path)
        reader = InlineReader(read_path) if args.no_subprocess else ReaderProcess(read_path)
        sources = reader.call("list")
        by_name = {s["name"]: s for s in sources}
        if args.collections:
            unknown = [n for n in args.collections if n not in by_name]
            if unknown:
                raise UsageError(f"no chromadb collection named {', '.join(map(repr, unknown))}; "
                                 f"the database holds: {', '.join(sorted(by_name)) or '(none)'}")
            selected = [by_name[n] for n in dict.fromkeys(args.collections)]
        else:
            selected = sources

        if not (args.dry_run and not os.path.exists(dst_path)):
            client = vectordb.PersistentClient(path=dst_path)
        state = MigrationState(dst_path)
        plans = [make_plan(client, s, args.on_existing, state) for s in selected]
        print(f"chromadb {reader.version} at {src_path}: {len(sources)} collections; "
              f"vectordb at {dst_path}", file=sys.stderr)
        rows = [[p.src["name"], str(p.src["count"]), str(p.src.get("dimension") or "-"), p.src["space"],
                 p.action, p.reason] for p in plans]
        print(format_table(["collection", "records", "dim", "space", "action", "note"], rows), file=sys.stderr)
        conflicts = [p for p in plans if p.action == "conflict"]
        if conflicts:
            for p in conflicts:
                print(f"error: collection {p.src['name']!r}: {p.reason}", file=sys.stderr)
            print("nothing was written", file=sys.stderr)
            return EXIT_USAGE
        if args.dry_run:
            todo = [p for p in plans if p.action not in ("skip", "done")]
            n = sum(p.src["count"] for p in todo)
            print(f"dry run: would copy {n} records in {len(todo)} collections; "
                  "nothing was written")
            return EXIT_OK

        results: List[Result] = []
        written = 0
        for i, plan in enumerate(plans):
            try:
                r = migrate_collection(reader, client, plan, args, written, state, src_path)
            except ReaderDied as e:
                r = Result(plan.src["name"], plan.action, plan.src["space"], plan.src["count"], status="ERROR")
                r.differences.append(str(e))
                results.append(r)
                for rest in plans[i + 1:]:
                    results.append(Result(rest.src["name"], rest.action, rest.src["space"], rest.src["count"],
                                          status="not run"))
                    results[-1].differences.append("not run: the chromadb reader died earlier")
                break
            except Exception as e:  # noqa: BLE001 - report and go on with the other collections
                r = Result(plan.src["name"], plan.action, plan.src["space"], plan.src["count"], status="ERROR")
                r.differences.append(f"{type(e).__name__}: {e}")
            written += r.copied
            results.append(r)
        print_summary(results)
        if args.report:
            with open(args.report, "w", encoding="utf-8") as fh:
                json.dump([r.__dict__ for r in results], fh, indent=2)
        return EXIT_OK if all(r.ok() for r in results) else EXIT_DIFFERENCES
    finally:
        if reader is not None:
            reader.close()
        if client is not None and hasattr(client, "close"):
            client.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--_reader":
        return _reader_main(argv[1])
    args = parse_args(argv)
    try:
        return run(args)
    except ChromadbMissing as e:
        print(f"error: chromadb is not installed or cannot be imported ({e}).\n"
              f"The migration reads chromadb databases through the chromadb package; install it with:\n"
              f"    {INSTALL_HINT}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ReaderDied as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as e:
        print(f"error: chromadb could not read {args.chromadb_path!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to finish; completed collections are kept and "
              "the interrupted one resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
