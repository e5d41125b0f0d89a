"""Clients: PersistentClient (a database directory) and EphemeralClient (in memory).

A client is a light handle on a database: every client opened on the same path in one process (and
every EphemeralClient) shares one database, counted by reference; the last one closed closes it.

On disk (see csrc/vdb_store.h for a collection's own files):
    <path>/LOCK                 flock'ed by the one process that has the database open
    <path>/catalog.json         name -> id, metadata, configuration; replaced atomically
    <path>/collections/<id>/    one directory per collection, named by id (never by the user's name)
"""
from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import zlib
from typing import Any, Callable, Optional

from . import _core, config
from . import configuration as configuration_mod
from .collection import Collection
from .errors import (
    AuthorizationError,
    CollectionExistsError,
    CorruptionError,
    InvalidArgumentError,
    InvalidDimensionError,
    LockedError,
    NotFoundError,
    ReadOnlyError,
    VectorDBError,
)
from .records import LocalRecords
from .utils import embedding_functions
from .utils.embedding_functions import DefaultEmbeddingFunction, check_conflict, resolve_on_create
from .validation import (
    SPACES,
    validate_collection_metadata,
    validate_count,
    validate_dimension,
    validate_name,
    validate_positive_int,
)

log = logging.getLogger("vectordb")

__version__ = "0.1.0"
CATALOG_FORMAT = 1
MAX_BATCH_SIZE = 1 << 20  # no hard cap (only memory); answered for chromadb-style batching code

_core._set_exceptions(VectorDBError, CorruptionError, LockedError, InvalidDimensionError, InvalidArgumentError,
                      ReadOnlyError)

# Databases open in this process, by real path ("" for the in-memory one), with their client counts.
_databases: dict[str, "_Database"] = {}

# As chromadb: the default argument is an instance of the default embedding function (cheap: the model
# loads on first use); embedding_function=None means "no embedding function".
_DEFAULT_EF = DefaultEmbeddingFunction()
# Re-entrant: a client freed by the garbage collector inside a locked section releases itself.
_databases_lock = threading.RLock()

_CRC_LINE = re.compile(rb"#crc32 [0-9a-f]{8}")


def _read_catalog(path: str) -> dict:
    """Reads and checks catalog.json: checksum line, format, and every entry's types."""
    def bad(why: str) -> CorruptionError:
        return CorruptionError(f"file '{path}' is corrupt: {why}")

    with open(path, "rb") as f:
        raw = f.read()
    # Last line: "#crc32 <8 lowercase hex digits>" over the JSON before it.
    body, _, trailer = raw.rstrip(b"\n").rpartition(b"\n")
    if not _CRC_LINE.fullmatch(trailer) or int(trailer[7:], 16) != zlib.crc32(body):
        raise bad("checksum mismatch or missing")
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(str(e)) from None
    if not isinstance(data, dict) or data.get("format") != CATALOG_FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else None
        raise CorruptionError(f"file '{path}' has catalog format {fmt!r}; this vectordb reads {CATALOG_FORMAT}")
    cols = data.get("collections")
    if not isinstance(cols, dict):
        raise bad("'collections' is not an object")
    out = {}
    for cid, entry in cols.items():
        try:
            uuid.UUID(cid)
            name, metadata, cfg = entry["name"], entry["metadata"], entry["configuration"]
            validate_name(name)
            if metadata is not None:
                validate_collection_metadata(metadata)
            if (not isinstance(cfg, dict) or cfg.get("space") not in SPACES
                    or not isinstance(cfg.get("use_ivf", False), bool)):
                raise ValueError("bad configuration")
            validate_dimension(cfg.get("dimension"))
            if cfg.get("quantization") not in configuration_mod.QUANTIZATIONS:
                raise ValueError(f"unknown quantization {cfg.get('quantization')!r}")
            for key in ("n_clusters", "n_probe"):
                validate_positive_int(cfg.get(key), key, allow_none=True)
            if cfg.get("embedding_function") is not None:
                embedding_functions.validate_persisted_config(cfg["embedding_function"], "embedding_function")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise bad(f"entry {cid!r}: {err}") from None
        out[cid] = {"name": name, "metadata": metadata, "configuration": cfg}
    return out


class _Database(LocalRecords):
    """One open database (a directory or memory): the catalog in memory, collection handles, the
    client API, and the Backend collections use (LocalRecords). Clients share it (see _acquire)."""

    def __init__(self, path: Optional[str], max_cached: int):
        self._path = path
        self._max_cached = max_cached
        self._refs = 0  # clients holding it (changed under _databases_lock)
        self._lock = threading.RLock()
        self._catalog: dict[str, dict] = {}  # id -> {"name", "metadata", "configuration"}
        self._handles: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
        self._pinned: dict[str, int] = {}  # collections in batch mode: never evicted (the mode lives in the handle)
        self._in_use: dict[str, int] = {}  # calls running on each handle: never evicted under them
        # Collections being opened (log replay) or closed (checkpoint) outside the lock, so a slow
        # one stalls only the threads that need that collection; _changed wakes their waiters.
        self._busy: set[str] = set()
        self._changed = threading.Condition(self._lock)
        self._closed = False

    # ---- engine handles (LRU) ----
    def _collection_dir(self, cid: str) -> Optional[str]:
        return None if self._path is None else os.path.join(self._path, "collections", cid)

    def _wait_not_busy(self, cid: Optional[str] = None) -> None:
        """Under the lock: waits until cid (None: every collection) is neither opening nor closing."""
        while (cid in self._busy) if cid is not None else self._busy:
            self._changed.wait()

    def _acquire_handle(self, cid: str) -> Any:
        """cid's open handle, marked in use (eviction skips it). Opening replays the log: that runs
        outside the lock, and closing what it evicts too."""
        with self._lock:
            self._wait_not_busy(cid)
            self._check_open()
            h = self._handles.get(cid)
            if h is None:
                if cid not in self._catalog:
                    raise NotFoundError(f"Collection [{cid}] does not exist")
                cfg = self._catalog[cid]["configuration"]
                self._busy.add(cid)
            else:
                self._handles.move_to_end(cid)
                self._in_use[cid] = self._in_use.get(cid, 0) + 1
                return h
        try:
            h = self._open_engine(cid, cfg)
        except BaseException:
            with self._lock:
                self._busy.discard(cid)
                self._changed.notify_all()
            raise
        with self._lock:
            self._busy.discard(cid)
            self._changed.notify_all()
            gone = self._closed or cid not in self._catalog  # closed or deleted meanwhile
            if not gone:
                self._handles[cid] = h
                self._in_use[cid] = self._in_use.get(cid, 0) + 1
                h.set_n_probe(self._catalog[cid]["configuration"].get("n_probe") or 0)  # modified meanwhile
                victims = self._evict(keep=cid)
        if gone:
            h.close()
            raise VectorDBError("client is closed") if self._closed else NotFoundError(
                f"Collection [{cid}] does not exist (it was deleted)")
        self._close_evicted(victims)
        return h

    def _open_engine(self, cid: str, cfg: dict) -> Any:
        return _core.Collection(self._collection_dir(cid), cfg["space"], cfg.get("dimension") or 0, config.durable(),
                                bool(cfg.get("use_ivf")), cfg.get("n_clusters") or 0, cfg.get("n_probe") or 0,
                                cfg.get("quantization"))

    def _evict(self, keep: Optional[str] = None) -> list:
        """Under the lock: takes the least recently used handles beyond max_cached out of the cache
        and marks them busy; the caller closes them after releasing the lock (_close_evicted)."""
        victims: list = []
        if self._path is None:
            return victims  # in-memory collections cannot be closed and reopened
        for cid in list(self._handles):
            if len(self._handles) <= self._max_cached:
                break
            if cid == keep or self._pinned.get(cid) or self._in_use.get(cid):
                continue
            victims.append((cid, self._handles.pop(cid)))
            self._busy.add(cid)
        return victims

    def _close_evicted(self, victims: list) -> None:
        """Closes evicted handles (a checkpoint when their log is long), not holding the lock. A
        failure is logged: the collection's files stay as they were, and its next use reopens it."""
        for cid, h in victims:
            try:
                h.close()
            except Exception as e:  # noqa: BLE001 - the caller's own operation is not at fault
                log.warning("closing collection %s (evicted from the cache) failed: %s", cid, e)
            finally:
                with self._lock:
                    self._busy.discard(cid)
                    self._changed.notify_all()

    def _engine_call(self, cid: str, method: str, *args: Any) -> Any:
        h = self._acquire_handle(cid)  # marked in use: eviction by another thread skips it
        try:
            return getattr(h, method)(*args)
        finally:
            with self._lock:
                self._in_use[cid] -= 1

    def _pin(self, cid: str, delta: int) -> None:
        with self._lock:
            self._pinned[cid] = max(0, self._pinned.get(cid, 0) + delta)

    def _entry(self, cid: str) -> dict:
        with self._lock:
            e = self._catalog.get(cid)
            if e is None:
                raise NotFoundError(f"Collection [{cid}] does not exist (it was deleted)")
            return e

    def _check_open(self) -> None:
        if self._closed:
            raise VectorDBError("client is closed")

    def _find(self, name: str) -> Optional[str]:
        for cid, e in self._catalog.items():
            if e["name"] == name:
                return cid
        return None

    _catalog_unsynced: Optional[str] = None

    def _save_catalog(self) -> None:
        """Persists the catalog (nothing for in-memory clients)."""

    def _raise_if_unsynced(self) -> None:
        """Raises after a catalog change whose directory sync failed (persistent clients)."""

    # ---- public API ----
    def heartbeat(self) -> int:
        """Current time in nanoseconds (as chromadb)."""
        self._check_open()
        return time.time_ns()

    def get_version(self) -> str:
        return __version__

    def get_max_batch_size(self) -> int:
        return MAX_BATCH_SIZE

    def count_collections(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._catalog)

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None) -> list[Collection]:
        """Collections in creation order."""
        limit = validate_count(limit, "limit", 0)
        offset = validate_count(offset, "offset", 0) or 0
        with self._lock:
            self._check_open()
            ids = list(self._catalog)[offset:]
            if limit is not None:
                ids = ids[:limit]
            return [Collection(self, cid) for cid in ids]

    def create_collection(self, name: str, configuration: Optional[dict] = None, metadata: Optional[dict] = None,
                          embedding_function: Optional[Callable] = _DEFAULT_EF, data_loader: Any = None,
                          get_or_create: bool = False, *, dimension: Optional[int] = None, use_ivf: bool = False,
                          n_clusters: Optional[int] = None, n_probe: Optional[int] = None,
                          quantization: Optional[str] = None) -> Collection:
        """Creates a collection; the space comes from metadata={"hnsw:space": ...} or configuration.

        >>> client.create_collection("images", metadata={"hnsw:space": "cosine"}, dimension=1280)
        """
        validate_name(name)
        metadata = validate_collection_metadata(metadata)
        cfg = configuration_mod.resolve(metadata, configuration, dimension, use_ivf, n_clusters, n_probe,
                                        quantization)
        ef_json, embedding_function = resolve_on_create(configuration, embedding_function)
        cfg["embedding_function"] = ef_json
        with self._lock:
            self._check_open()
            existing = self._find(name)
            if existing is not None:
                if get_or_create:
                    persisted = self._catalog[existing]["configuration"].get("embedding_function")
                    check_conflict(embedding_function, persisted)
                    return Collection(self, existing, embedding_function)
                raise CollectionExistsError(f"Collection [{name}] already exists")
            cid = str(uuid.uuid4())
            directory = self._collection_dir(cid)
            if directory is not None:
                os.makedirs(directory)
            # Opening creates the collection's files (its MANIFEST records space and dimension).
            self._handles[cid] = self._open_engine(cid, cfg)
            self._catalog[cid] = {"name": name, "metadata": metadata, "configuration": cfg}
            try:
                self._save_catalog()
            except BaseException:
                del self._catalog[cid]
                self._handles.pop(cid).close()
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)
                raise
            victims = self._evict(keep=cid)
        self._close_evicted(victims)
        self._raise_if_unsynced()
        return Collection(self, cid, embedding_function)

    def get_collection(self, name: str, embedding_function: Optional[Callable] = _DEFAULT_EF,
                       data_loader: Any = None) -> Collection:
        with self._lock:
            self._check_open()
            cid = self._find(name)
            if cid is None:
                raise NotFoundError(f"Collection [{name}] does not exist")
            check_conflict(embedding_function, self._catalog[cid]["configuration"].get("embedding_function"))
            return Collection(self, cid, embedding_function)

    def get_or_create_collection(self, name: str, configuration: Optional[dict] = None, metadata: Optional[dict] = None,
                                 embedding_function: Optional[Callable] = _DEFAULT_EF, data_loader: Any = None, *,
                                 dimension: Optional[int] = None, use_ivf: bool = False,
                                 n_clusters: Optional[int] = None, n_probe: Optional[int] = None,
                                 quantization: Optional[str] = None) -> Collection:
        """The existing collection (its metadata unchanged), or a new one."""
        return self.create_collection(name, configuration, metadata, embedding_function, get_or_create=True,
                                      dimension=dimension, use_ivf=use_ivf, n_clusters=n_clusters, n_probe=n_probe,
                                      quantization=quantization)

    def delete_collection(self, name: str) -> None:
        with self._lock:
            self._check_open()
            cid = self._find(name)
            if cid is None:
                raise NotFoundError(f"Collection [{name}] does not exist")
            self._wait_not_busy(cid)  # its files are not being opened or checkpointed
            if self._find(name) != cid:
                raise NotFoundError(f"Collection [{name}] does not exist")
            entry = self._catalog.pop(cid)
            try:
                self._save_catalog()
            except BaseException:
                self._catalog[cid] = entry
                raise
            h = self._handles.pop(cid, None)
            if h is not None:
                h.close()
            self._pinned.pop(cid, None)
            directory = self._collection_dir(cid)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
            self._raise_if_unsynced()

    def _modify(self, cid: str, name: Optional[str], metadata: Optional[dict], config_changes: dict) -> None:
        with self._lock:
            self._check_open()
            entry = self._entry(cid)
            if name is not None and name != entry["name"]:
                if self._find(name) is not None:
                    raise CollectionExistsError(f"Collection [{name}] already exists")
            old = dict(entry)
            if name is not None:
                entry["name"] = name
            if metadata is not None:
                entry["metadata"] = metadata
            if config_changes:
                entry["configuration"] = {**entry["configuration"], **config_changes}
            try:
                self._save_catalog()
            except BaseException:
                entry.update(old)
                raise
            # The catalog is what a reopened handle reads; an open one learns the change here.
            h = self._handles.get(cid)
            if h is not None and "n_probe" in config_changes:
                h.set_n_probe(config_changes["n_probe"] or 0)
            self._raise_if_unsynced()

    def reset(self) -> bool:
        """Deletes every collection (the client checked that reset is allowed)."""
        with self._lock:
            for e in list(self._catalog.values()):
                self.delete_collection(e["name"])
        return True

    def close(self) -> None:
        """Closes every collection (checkpointing large logs) and releases the database lock.

        The client is closed afterwards even when a checkpoint fails (a full disk): every write
        is in the log already, the failed checkpoint leaves the files as they were, and a client
        that stayed usable after its lock was released could write beside another process. The
        first failure is raised once everything is closed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wait_not_busy()  # opens and closes running outside the lock finish first
            first: Optional[BaseException] = None
            while self._handles:
                _, h = self._handles.popitem(last=False)
                try:
                    h.close()
                except Exception as e:  # noqa: BLE001 - close the others, then raise the first
                    first = first or e
            if first is not None:
                raise first



def _allow_reset_from(settings: Any) -> bool:
    if settings is None:
        return config.allow_reset()
    if isinstance(settings, dict):
        return bool(settings.get("allow_reset", False)) or config.allow_reset()
    return bool(getattr(settings, "allow_reset", False)) or config.allow_reset()


class _MemoryDatabase(_Database):
    def __init__(self) -> None:
        super().__init__(None, 0)


class _PersistentDatabase(_Database):
    """A database directory, held by one process at a time (flock on its LOCK file)."""

    _path: str

    def __init__(self, path: str, max_cached: int):
        super().__init__(path, max_cached)
        os.makedirs(os.path.join(path, "collections"), exist_ok=True)
        self._lock_fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise LockedError(
                f"database '{path}' is open in another process (its LOCK file is held): "
                "one process at a time may open it; use the server to share it"
            ) from None
        try:
            self._load_catalog()
        except BaseException:
            self._release_lock()
            raise

    def _catalog_path(self) -> str:
        return os.path.join(self._path, "catalog.json")

    def _load_catalog(self) -> None:
        path = self._catalog_path()
        root = os.path.join(self._path, "collections")
        if os.path.exists(path):
            self._catalog = _read_catalog(path)
        elif os.listdir(root):
            # Collections without a catalog: the catalog was lost, not never written. Refuse rather
            # than treat their directories as leftovers and delete them.
            raise CorruptionError(f"file '{path}' is missing but '{root}' holds collections")
        # Directories no catalog entry names are leftovers of an interrupted create or delete.
        for d in os.listdir(root):
            if d not in self._catalog:
                shutil.rmtree(os.path.join(root, d), ignore_errors=True)

    def _save_catalog(self) -> None:
        """Replaces catalog.json atomically. A failure before the rename changes nothing on disk and
        is raised as is (the caller rolls back). A failed directory sync after the rename leaves the
        new catalog visible but maybe not durable: the caller completes the change, and then
        _raise_if_unsynced refuses it and every later catalog change until the client is reopened."""
        if self._catalog_unsynced:
            raise ReadOnlyError(f"database '{self._path}' refuses catalog changes after a failed sync; reopen it")
        path = self._catalog_path()
        tmp = path + ".tmp"
        body = json.dumps({"format": CATALOG_FORMAT, "collections": self._catalog}, indent=1).encode("utf-8")
        data = memoryview(body + b"\n#crc32 %08x\n" % zlib.crc32(body))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            while data:  # os.write may write less than asked (disk full): loop or raise
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        try:
            dfd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            self._catalog_unsynced = f"syncing '{self._path}' after replacing catalog.json failed: {e}"

    def _raise_if_unsynced(self) -> None:
        if self._catalog_unsynced:
            raise ReadOnlyError(
                f"{self._catalog_unsynced}; the change is in place but may not survive a power cut. "
                "The client refuses further catalog changes: reopen it"
            )

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                super().close()
            finally:
                self._release_lock()


def _acquire(key: str, open_database: Callable[[], _Database]) -> _Database:
    """The database open under `key` in this process (opened now if none), with one more client."""
    with _databases_lock:
        db = _databases.get(key)
        if db is None or db._closed:
            db = open_database()
            _databases[key] = db
        db._refs += 1
        return db


def _release(key: str, db: _Database) -> None:
    """One client fewer; the last one closes the database (checkpointing, releasing its LOCK)."""
    with _databases_lock:
        db._refs -= 1
        if db._refs > 0:
            return
        if _databases.get(key) is db:
            del _databases[key]
        db.close()


class ClientAPI:
    """What PersistentClient and EphemeralClient offer: chroma's client API over a shared database.
    Closing a client leaves the other clients of its database working; its collections are closed
    with it."""

    _db: Optional[_Database] = None
    _closed = True

    def __init__(self, key: str, open_database: Callable[[], _Database], settings: Any) -> None:
        self._allow_reset = _allow_reset_from(settings)
        self._key = key
        self._db = _acquire(key, open_database)
        self._closed = False

    def _live(self) -> _Database:
        if self._closed or self._db is None:
            raise VectorDBError("client is closed")
        return self._db

    def _own(self, col: Collection, data_loader: Any = None) -> Collection:
        # Collections reach the database through their client, so a closed client closes them too.
        return Collection(self, col._id, col._embedding_function, data_loader)

    # ---- client API
    def heartbeat(self) -> int:
        """Current time in nanoseconds (as chromadb)."""
        return self._live().heartbeat()

    def get_version(self) -> str:
        return __version__

    def get_max_batch_size(self) -> int:
        return MAX_BATCH_SIZE

    def count_collections(self) -> int:
        return self._live().count_collections()

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None) -> list[Collection]:
        """Collections in creation order."""
        return [self._own(c) for c in self._live().list_collections(limit, offset)]

    def create_collection(self, name: str, configuration: Optional[dict] = None, metadata: Optional[dict] = None,
                          embedding_function: Optional[Callable] = _DEFAULT_EF, data_loader: Any = None,
                          get_or_create: bool = False, *, dimension: Optional[int] = None, use_ivf: bool = False,
                          n_clusters: Optional[int] = None, n_probe: Optional[int] = None,
                          quantization: Optional[str] = None) -> Collection:
        """Creates a collection; the space comes from metadata={"hnsw:space": ...} or configuration.
        quantization="sq8" keeps 8-bit codes that searches scan before re-ranking exactly in float32
        (same results as without, less memory traffic). quantization="pq4" (with use_ivf=True) keeps
        4-bit PQ fast-scan codes in the IVF lists: the fastest IVF search, float32 distances, recall
        within a few thousandths of IVF-Flat's at the same n_probe (see README, Performance).

        >>> client.create_collection("images", metadata={"hnsw:space": "cosine"}, dimension=1280)

        The embedding function (the default all-MiniLM-L6-v2 unless given; None for none) embeds
        documents and query_texts given without embeddings; its name and config are persisted so
        get_collection re-creates it.
        """
        return self._own(self._live().create_collection(
            name, configuration, metadata, embedding_function, data_loader, get_or_create, dimension=dimension,
            use_ivf=use_ivf, n_clusters=n_clusters, n_probe=n_probe, quantization=quantization), data_loader)

    def get_collection(self, name: str, embedding_function: Optional[Callable] = _DEFAULT_EF,
                       data_loader: Any = None) -> Collection:
        """The collection of that name; without embedding_function it embeds with the one it was created
        with (re-created from its persisted name and config); one of another name is an error."""
        return self._own(self._live().get_collection(name, embedding_function, data_loader), data_loader)

    def get_or_create_collection(self, name: str, configuration: Optional[dict] = None, metadata: Optional[dict] = None,
                                 embedding_function: Optional[Callable] = _DEFAULT_EF, data_loader: Any = None, *,
                                 dimension: Optional[int] = None, use_ivf: bool = False,
                                 n_clusters: Optional[int] = None, n_probe: Optional[int] = None,
                                 quantization: Optional[str] = None) -> Collection:
        """The existing collection (its metadata unchanged), or a new one."""
        return self.create_collection(name, configuration, metadata, embedding_function, data_loader, True,
                                      dimension=dimension, use_ivf=use_ivf, n_clusters=n_clusters, n_probe=n_probe,
                                      quantization=quantization)

    def delete_collection(self, name: str) -> None:
        self._live().delete_collection(name)

    def reset(self) -> bool:
        """Deletes every collection; only when allowed (VECTORDB_ALLOW_RESET=1 or settings allow_reset)."""
        db = self._live()
        if not self._allow_reset:
            raise AuthorizationError("reset is disabled: set VECTORDB_ALLOW_RESET=1 "
                                     "or pass settings with allow_reset=True")
        return db.reset()

    def close(self) -> None:
        """Releases this client; the last client of a database closes it (checkpointing large logs
        and releasing the database's LOCK)."""
        if self._closed or self._db is None:
            return
        self._closed = True
        _release(self._key, self._db)

    def __enter__(self) -> "ClientAPI":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ---- Backend (the seam Collection uses)
    def collection_info(self, cid: str) -> dict:
        # Name and metadata stay readable after close (from the catalog held in memory), as in chromadb.
        if self._db is None:
            raise VectorDBError("client is closed")
        return self._db.collection_info(cid)

    def records_write(self, cid: str, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                      uris: Any) -> None:
        self._live().records_write(cid, op, ids, embeddings, metadatas, documents, uris)

    def records_delete(self, cid: str, ids: Any, where: Any, where_document: Any) -> int:
        return self._live().records_delete(cid, ids, where, where_document)

    def records_get(self, cid: str, ids: Any, where: Any, limit: Any, offset: Any, where_document: Any,
                    include: Any) -> dict:
        return self._live().records_get(cid, ids, where, limit, offset, where_document, include)

    def records_query(self, cid: str, query_embeddings: Any, ids: Any, n_results: Any, where: Any,
                      where_document: Any, include: Any, n_probe: Optional[int]) -> dict:
        return self._live().records_query(cid, query_embeddings, ids, n_results, where, where_document, include,
                                          n_probe)

    def records_count(self, cid: str) -> int:
        return self._live().records_count(cid)

    def collection_modify(self, cid: str, name: Optional[str], metadata: Optional[dict], configuration: Any) -> None:
        self._live().collection_modify(cid, name, metadata, configuration)

    def collection_stats(self, cid: str) -> dict:
        return self._live().collection_stats(cid)

    def collection_action(self, cid: str, action: str) -> Any:
        return self._live().collection_action(cid, action)


class EphemeralClient(ClientAPI):
    """An in-memory database with the same behaviour as PersistentClient; nothing is kept. As in
    chromadb, every EphemeralClient of a process shares one database, until the last is closed.

    >>> client = vectordb.EphemeralClient()
    """

    def __init__(self, settings: Any = None, **_ignored: Any):
        super().__init__("", _MemoryDatabase, settings)


class PersistentClient(ClientAPI):
    """A database directory (default $VECTORDB_PATH, else ./vector_db), held by one process at a time.
    Clients of the same path in one process share one open database (the first one's max_cached
    applies); another process gets LockedError.

    >>> client = vectordb.PersistentClient(path="./vector_db")
    """

    def __init__(self, path: Optional[str] = None, max_cached: Optional[int] = None, settings: Any = None,
                 **_ignored: Any):
        path = os.path.abspath(os.fspath(path) if path is not None else config.db_path())
        max_cached = validate_positive_int(max_cached, "max_cached") if max_cached is not None else config.max_cached()
        os.makedirs(path, exist_ok=True)
        self._path = path
        super().__init__(os.path.realpath(path), lambda: _PersistentDatabase(path, max_cached), settings)
