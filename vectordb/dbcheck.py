"""`vectordb info` and `vectordb check`: read-only inspection of a database directory, safe beside a writer.

Both work on a snapshot: the catalog, each collection's MANIFEST and log are copied, and the files of
the snapshot generation the MANIFEST names are hard-linked (copied where links are impossible) into
a temporary directory, which is then opened with the engine. Nothing in the database directory is
written, renamed or locked, so a running server or writer is neither blocked nor disturbed. The
snapshot is consistent because snapshot generation files are never modified once written and a
generation is removed only after the MANIFEST stops naming it: a collection whose MANIFEST changed
while it was being copied (a checkpoint ran) is copied again.

Opening a collection validates every header and checksum and decodes every record (the same code
that opens it for use), so `check` reports what the next open would refuse, file by file, as
SQLite's `PRAGMA integrity_check` does. Within one collection the open stops at the first damaged
file it meets.

    vectordb info ./vector_db            # collections, counts, dimensions, index, sizes
    vectordb check ./vector_db && echo ok
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from vectordb import _core
from vectordb.errors import VectorDBError

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2
_METRICS = {0: "l2", 1: "ip", 2: "cosine"}  # MANIFEST's metric field
_SNAPSHOT_ATTEMPTS = 20


@dataclass
class Finding:
    file: str  # relative to the database directory
    problem: str
    damage: bool  # False: a note (e.g. a torn log tail, which the next open drops as designed)


@dataclass
class CollectionReport:
    id: str
    name: Optional[str]
    stats: Dict[str, Any] = field(default_factory=dict)  # the engine's, when it opened
    bytes_on_disk: int = 0
    ok: bool = True


@dataclass
class Report:
    path: str
    writer_pid: Optional[int]
    collections: List[CollectionReport] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return any(f.damage for f in self.findings)


def writer_pid(path: str) -> Optional[int]:
    """The pid holding the database's LOCK, read from /proc/locks (Linux) without touching the lock."""
    try:
        st = os.stat(os.path.join(path, "LOCK"))
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2e:5678 0 EOF" (a "->" marks a waiter)
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        dev_major, dev_minor, inode = parts[5].split(":")
        if int(inode) == st.st_ino and os.makedev(int(dev_major, 16), int(dev_minor, 16)) == st.st_dev:
            return int(parts[4])
    return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _snapshot_collection(src: str, dst: str) -> None:
    """Copies one collection directory consistently (see the module docstring)."""
    for _ in range(_SNAPSHOT_ATTEMPTS):
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        before = _read(os.path.join(src, "MANIFEST"))
        try:
            for entry in sorted(os.listdir(src)):
                s, d = os.path.join(src, entry), os.path.join(dst, entry)
                if entry.startswith("gen-") and os.path.isdir(s):
                    os.makedirs(d)
                    for name in os.listdir(s):
                        _link_or_copy(os.path.join(s, name), os.path.join(d, name))
                elif os.path.isfile(s) and entry != "MANIFEST":
                    shutil.copyfile(s, d)  # the log is copied: opening the snapshot may cut its torn tail
        except FileNotFoundError:
            continue  # a checkpoint removed a file under us: copy again
        if _read(os.path.join(src, "MANIFEST")) == before:
            if before is not None:
                with open(os.path.join(dst, "MANIFEST"), "wb") as f:
                    f.write(before)
            return
        time.sleep(0.01)
    raise OSError(f"{src} changed on each of {_SNAPSHOT_ATTEMPTS} attempts to copy it (checkpoints in a loop?)")


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _manifest_params(manifest: Optional[bytes]) -> Tuple[str, int]:
    """(metric, dim) from a MANIFEST's bytes, to open a collection the catalog cannot describe."""
    if manifest is None or len(manifest) < 24:
        return "l2", 0
    metric, dim = struct.unpack_from("<IQ", manifest, 12)
    return _METRICS.get(metric, "l2"), dim


class _Inspector:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.snap = tempfile.mkdtemp(prefix="vectordb-check-")
        self.report = Report(self.path, writer_pid(self.path))

    def close(self) -> None:
        shutil.rmtree(self.snap, ignore_errors=True)

    def relative(self, message: str) -> Tuple[str, str]:
        """(file named by an error message, the message) with snapshot paths put back as the user's."""
        found = re.search(re.escape(self.snap) + r"/([^\s'\":,)]+)", message)
        message = message.replace(self.snap + os.sep, "").replace(self.snap, ".")
        return (found.group(1) if found else "?"), message

    def damage(self, file: str, problem: str) -> None:
        self.report.findings.append(Finding(file, problem, True))

    def note(self, file: str, problem: str) -> None:
        self.report.findings.append(Finding(file, problem, False))

    def catalog(self, dirs: List[str]) -> Optional[Dict[str, Any]]:
        """The catalog's entries, read through the client's own checks; None when it is damaged."""
        from vectordb.client import PersistentClient

        raw = _read(os.path.join(self.path, "catalog.json"))
        if raw is None:
            if dirs:
                self.damage("catalog.json", "missing, but collections/ holds collections")
                return None
            return {}  # a database nothing was created in yet
        with open(os.path.join(self.snap, "catalog.json"), "wb") as f:
            f.write(raw)
        try:
            client = PersistentClient(self.snap)
        except VectorDBError as exc:
            self.damage("catalog.json", self.relative(str(exc))[1])
            return None
        try:
            return {str(c.id): {"name": c.name, "configuration": dict(c.configuration)}
                    for c in client.list_collections()}
        finally:
            client.close()

    def collection(self, cid: str, entry: Optional[Dict[str, Any]]) -> CollectionReport:
        rel = os.path.join("collections", cid)
        src, dst = os.path.join(self.path, rel), os.path.join(self.snap, rel)
        rep = CollectionReport(cid, entry["name"] if entry else None, bytes_on_disk=_dir_bytes(src))
        _snapshot_collection(src, dst)
        cfg = (entry or {}).get("configuration") or {}
        manifest = _read(os.path.join(dst, "MANIFEST"))
        metric, dim = _manifest_params(manifest)
        if entry is None:  # no catalog to say: what the files say
            use_ivf = any(os.path.exists(os.path.join(dst, d, "ivf.bin")) for d in os.listdir(dst))
            cfg = {"space": metric, "dimension": dim or None, "use_ivf": use_ivf}
        logs = {n: os.path.getsize(os.path.join(dst, n)) for n in os.listdir(dst) if n.startswith("wal-")}
        try:
            engine = _core.Collection(dst, cfg.get("space") or "l2", cfg.get("dimension") or 0, False,
                                      bool(cfg.get("use_ivf")), cfg.get("n_clusters") or 0, cfg.get("n_probe") or 0,
                                      cfg.get("quantization"))
            try:
                engine.verify()  # open checks headers only; the vector data is checked on first use
                rep.stats = engine.stats()
            finally:
                engine.close()
        except (VectorDBError, ValueError, OSError) as exc:
            file, message = self.relative(str(exc))
            self.damage(file if file != "?" else rel, message)
            rep.ok = False
            return rep
        for name, size in logs.items():
            now = os.path.getsize(os.path.join(dst, name)) if os.path.exists(os.path.join(dst, name)) else size
            if now < size:
                self.note(os.path.join(rel, name), f"ends in a torn record ({size - now} bytes), what an interrupted "
                          "write leaves: the next open drops it" + (" (or a writer is appending it right now)"
                                                                    if self.report.writer_pid else ""))
        return rep

    def run(self) -> Report:
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"{self.path} is not a directory")
        root = os.path.join(self.path, "collections")
        dirs = []
        if os.path.isdir(root):
            dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        entries = self.catalog(dirs)
        if entries is not None:
            for cid, entry in sorted(entries.items(), key=lambda kv: kv[1]["name"]):
                if cid not in dirs:
                    self.damage(os.path.join("collections", cid),
                                f"collection {entry['name']!r} is in catalog.json but its directory is missing")
                    self.report.collections.append(CollectionReport(cid, entry["name"], ok=False))
                    continue
                self.report.collections.append(self.collection(cid, entry))
        for cid in dirs:
            if entries is None:  # no catalog to go by: check what the files say
                self.report.collections.append(self.collection(cid, None))
            elif cid not in entries:
                self.note(os.path.join("collections", cid), "not in catalog.json: left by an interrupted "
                          "create or delete, the next open removes it")
        return self.report


def inspect(path: str) -> Report:
    """Snapshots and opens every collection of the database at `path`; nothing there is modified.

    >>> report = vectordb.dbcheck.inspect("./vector_db"); report.damaged
    False
    """
    inspector = _Inspector(path)
    try:
        return inspector.run()
    finally:
        inspector.close()


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}"
    return f"{n} B"  # not reached


def _index(stats: Dict[str, Any]) -> str:
    if stats.get("index") == "ivf":
        return f"ivf {stats.get('n_clusters')} lists, n_probe {stats.get('n_probe')}"
    return "flat"


def _as_json(report: Report) -> str:
    out = asdict(report)
    out["damaged"] = report.damaged
    return json.dumps(out, indent=1, sort_keys=True)


def _print_findings(report: Report) -> None:
    for f in report.findings:
        print(f"{'damaged' if f.damage else 'note'}: {f.file}: {f.problem}")


def main(command: str, path: str, as_json: bool) -> int:
    """`vectordb info|check PATH [--json]`: prints the report; exit status 0 intact, 1 damaged, 2 not checked."""
    try:
        report = inspect(path)
    except OSError as exc:
        print(f"vectordb {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if as_json:
        print(_as_json(report))
    elif command == "info":
        _print_info(report)
    else:
        _print_findings(report)
        damaged = sorted({f.file for f in report.findings if f.damage})
        print(f"{len(damaged)} damaged file(s)" if damaged else f"ok ({len(report.collections)} collection(s))")
    return EXIT_DAMAGED if report.damaged else EXIT_OK


def _print_info(report: Report) -> None:
    writer = f"open in process {report.writer_pid}" if report.writer_pid else "not open in any process"
    print(f"{report.path}: {len(report.collections)} collection(s), {writer}")
    rows = [("name", "count", "dim", "metric", "index", "on disk", "in memory")]
    for c in report.collections:
        s = c.stats
        rows.append((c.name or f"({c.id}, not in catalog)", str(s.get("count", "?")), str(s.get("dimension", "?")),
                     str(s.get("metric", "?")), _index(s) if c.ok else "DAMAGED", _size(c.bytes_on_disk),
                     _size(int(s.get("bytes_in_memory", 0))) if c.ok else "?"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    _print_findings(report)
