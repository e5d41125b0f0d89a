"""RayClient and ShardedCollection: the chromadb-shaped API over collections split into shards, each shard
a Ray actor (vectordb.distributed.shard.Shard) owning a PersistentClient on its node's disk.

On the client's disk (`path`):
    <path>/LOCK          flock'ed by the one RayClient that has the shard map open
    <path>/shardmap.json collections: name, metadata, configuration, how they were created, and each
                         shard's node and directory; replaced atomically, CRC-checked
Each shard's files live on its own node, in <shard_path>/<collection id>/<shard index>/.

Writes: the whole request is validated here, then split by shard_of(id) and sent to the shards in
parallel; it is acknowledged only when every shard it touched acknowledged it (else ShardWriteError
says which shards applied it). Reads fan out to every shard (or to the shards owning the ids asked)
and are retried while a shard restarts; answers are merged exactly (see routing.py).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
import zlib
from typing import Any, Callable, Optional, Sequence

from .. import EphemeralClient
from ..client import _DEFAULT_EF
from ..collection import Collection
from ..errors import (
    CollectionExistsError,
    CorruptionError,
    InvalidArgumentError,
    LockedError,
    NotFoundError,
    VectorDBError,
)
from ..utils.embedding_functions import NEVER_EMBED, check_conflict, check_modify, resolve_on_create
from ..validation import (
    validate_collection_metadata,
    validate_name,
    validate_nonneg_int,
    validate_positive_int,
)
from .records import ShardedRecords
from .routing import HASH_NAME
from .shard import Shard

log = logging.getLogger("vectordb.distributed")

SHARDMAP_FORMAT = 1


class ShardUnavailableError(VectorDBError):
    """A shard did not answer (its actor died and was not back in time, or its node is gone)."""


class ShardWriteError(VectorDBError):
    """A write reached some shards but not all: it was not acknowledged. `applied` and `failed` list
    shard indexes; repeating the same upsert (or add) is safe and completes it."""

    def __init__(self, message: str, applied: list[int], failed: dict[int, BaseException]):
        super().__init__(message)
        self.applied = applied
        self.failed = failed


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("vectordb.distributed needs Ray: pip install 'vectordb[distributed]'") from None
    return ray


# ---- shard map on disk ----
def _read_shardmap(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    body, _, trailer = raw.rstrip(b"\n").rpartition(b"\n")
    try:
        ok = trailer.startswith(b"#crc32 ") and int(trailer[7:], 16) == zlib.crc32(body)
        data = json.loads(body) if ok else None
    except ValueError:
        ok = False
    if not ok or not isinstance(data, dict) or not isinstance(data.get("collections"), dict):
        raise CorruptionError(f"file '{path}' is corrupt: checksum mismatch or not a shard map")
    if data.get("format") != SHARDMAP_FORMAT or data.get("hash") != HASH_NAME:
        raise CorruptionError(f"file '{path}' has shard map format {data.get('format')!r} / hash "
                              f"{data.get('hash')!r}; this vectordb reads {SHARDMAP_FORMAT} / {HASH_NAME}")
    return data["collections"]


def _write_shardmap(path: str, collections: dict) -> None:
    """tmp file, fsync, rename, fsync the directory: a crash leaves the old map or the new one."""
    body = json.dumps({"format": SHARDMAP_FORMAT, "hash": HASH_NAME, "collections": collections}, indent=1).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(body + b"\n#crc32 %08x\n" % zlib.crc32(body))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class RayClient(ShardedRecords):
    """A client whose collections are split into shards served by Ray actors across a cluster.

    >>> client = RayClient(path="./vector_db_ray")           # starts a local Ray cluster
    >>> col = client.create_collection("docs", shards=4, dimension=384)
    >>> client = RayClient(address="auto", path="/data/vdb")  # joins a running cluster

    `path` holds the shard map (on this machine); `shard_path` (default `<path>/shards`) is where each
    node keeps its shards. `timeout` bounds every wait for a shard; `max_restarts` is how often Ray
    restarts a dead shard; `read_retries` how often a read is resent to a restarting shard.
    """

    def __init__(self, address: Optional[str] = None, path: str = "./vector_db_ray", *,
                 shard_path: Optional[str] = None, timeout: float = 120.0, max_restarts: int = 16,
                 read_retries: int = 5, ray_init_args: Optional[dict] = None):
        ray = _ray()
        self._path = os.path.abspath(os.fspath(path))
        self._shard_path = os.path.abspath(shard_path) if shard_path else os.path.join(self._path, "shards")
        self._timeout = float(timeout)
        self._max_restarts = validate_nonneg_int(max_restarts, "max_restarts")
        self._read_retries = validate_nonneg_int(read_retries, "read_retries") or 0
        self._lock = threading.RLock()
        self._actors: dict[str, list[Any]] = {}
        self._dead: set[tuple[str, int]] = set()  # shards whose actor Ray will not bring back: start anew
        self._last_seq = 0
        self._closed = False
        os.makedirs(self._path, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self._path, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise LockedError(f"shard map '{self._path}' is open in another RayClient "
                              "(its LOCK file is held)") from None
        self._map_path = os.path.join(self._path, "shardmap.json")
        try:
            self._catalog: dict[str, dict] = _read_shardmap(self._map_path) if os.path.exists(self._map_path) else {}
            self._started_ray = False
            if not ray.is_initialized():
                # address None: a new local cluster ("local"), never one found running on this machine.
                args = {"address": address or "local", "include_dashboard": False, "log_to_driver": False,
                        **(ray_init_args or {})}
                if address is None:
                    # A local cluster runs this same vectordb: let its workers import it from here.
                    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                    env = {"PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
                    args.setdefault("runtime_env", {"env_vars": env})
                ray.init(**args)
                self._started_ray = True
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---- shards ----
    def _alive_nodes(self) -> list[dict]:
        nodes = [n for n in _ray().nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        return sorted(nodes, key=lambda n: n["NodeID"])

    def _place(self, cid: str, n_shards: int) -> list[dict]:
        """Spreads the shards round-robin over the live nodes (starting at a node chosen by the
        collection id, so small collections do not all start on the same node)."""
        nodes = self._alive_nodes()
        if not nodes:
            raise ShardUnavailableError("the Ray cluster has no live node with CPUs to place shards on")
        start = zlib.crc32(cid.encode()) % len(nodes)
        return [{"node_id": nodes[(start + i) % len(nodes)]["NodeID"],
                 "node_ip": nodes[(start + i) % len(nodes)]["NodeManagerAddress"],
                 "path": os.path.join(self._shard_path, cid, str(i))} for i in range(n_shards)]

    def _start_actor(self, cid: str, index: int, placement: dict, create_args: dict) -> Any:
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = {n["NodeID"]: n for n in self._alive_nodes()}
        node_id = placement["node_id"]
        if node_id not in alive:
            # A node that restarted has a new id: its disk is found again by its address.
            same = [n for n in alive.values() if n["NodeManagerAddress"] == placement["node_ip"]]
            if not same:
                raise ShardUnavailableError(
                    f"shard {index} of collection {self._catalog[cid]['name']!r} lives on node {placement['node_ip']} "
                    f"({node_id}), which is not in the cluster; its data is in {placement['path']} on that node")
            node_id = same[0]["NodeID"]
            shards = [dict(p) for p in self._entry(cid)["shards"]]
            shards[index]["node_id"] = node_id
            self._save(cid, {**self._entry(cid), "shards": shards})
        # num_cpus=0: a shard waits on disk and memory, not on a CPU slot; many fit on a node.
        actor_cls = ray.remote(Shard).options(
            name=actor_name(cid, index), num_cpus=0, max_restarts=self._max_restarts, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
        deadline = time.monotonic() + 10.0
        while True:
            try:
                return actor_cls.remote(placement["path"], create_args)
            except ValueError:
                # The name is held by the actor of a client closed a moment ago (Ray frees it
                # asynchronously), or by a live client elsewhere: then refuse, as the shard's LOCK would.
                if time.monotonic() > deadline:
                    raise LockedError(f"shard {index} of collection {self._catalog[cid]['name']!r} is already "
                                      "served by another RayClient in this Ray cluster") from None
                time.sleep(0.1)

    def _shards(self, cid: str) -> list[Any]:
        with self._lock:
            self._check_open()
            actors = self._actors.get(cid)
            e = self._entry(cid)
            if actors is None:
                actors = [self._start_actor(cid, i, p, e["create_args"]) for i, p in enumerate(e["shards"])]
                self._actors[cid] = actors
            for c, i in sorted(self._dead):
                if c == cid:
                    # Its node died (or Ray gave up restarting it): a new actor on the node holding its
                    # directory (the same node, or a new one at the same address) reopens it from disk.
                    _ray().kill(actors[i], no_restart=True)
                    actors[i] = self._start_actor(cid, i, e["shards"][i], e["create_args"])
                    self._dead.discard((c, i))
            return actors

    def _failed(self, cid: str, shard: int, e: BaseException, gave_up: bool) -> None:
        """Notes a shard that Ray will not restart by itself, so the next call starts a new actor."""
        ex = _ray().exceptions
        if not isinstance(e, (ex.RayActorError, ShardUnavailableError, *_unschedulable())):
            return  # the shard answered (with an error of the request)
        # A process that died is restarted by Ray (max_restarts); an actor whose node is gone, or that
        # Ray could not restart, is not: then a new actor reopens the shard.
        permanent = gave_up or isinstance(e, _unschedulable())
        if not permanent:
            node = self._entry(cid)["shards"][shard]["node_id"]
            permanent = node not in {n["NodeID"] for n in self._alive_nodes()}
        if permanent:
            with self._lock:
                self._dead.add((cid, shard))

    def _get_one(self, ref: Any, shard: int) -> Any:
        """One shard's answer; a shard-side error is raised as its own class (e.g. InvalidDimensionError)."""
        ray = _ray()
        if isinstance(ref, BaseException):
            raise ref  # the request could not be sent
        try:
            return ray.get(ref, timeout=self._timeout)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else None
            if cause is not None and not isinstance(cause, ray.exceptions.RayError):
                raise cause from None
            raise
        except ray.exceptions.GetTimeoutError:
            raise ShardUnavailableError(f"shard {shard} did not answer within {self._timeout:g} s") from None

    def _read(self, cid: str, calls: dict[int, tuple[str, tuple]]) -> dict[int, Any]:
        """Sends reads (shard -> (method, args)) in parallel; a shard that died is asked again once Ray
        has restarted it, or once a new actor has reopened it (reads are idempotent), up to
        read_retries times."""
        ray = _ray()
        actors = self._shards(cid)
        pending = {s: getattr(actors[s], m).remote(*a) for s, (m, a) in calls.items()}
        out: dict[int, Any] = {}
        for s in calls:
            attempt = 0
            while True:
                try:
                    out[s] = self._get_one(pending[s], s)
                    break
                except (ray.exceptions.RayActorError, ShardUnavailableError, *_unschedulable()) as e:
                    if attempt >= self._read_retries:
                        self._failed(cid, s, e, gave_up=True)
                        raise ShardUnavailableError(
                            f"shard {s} of collection {self._catalog[cid]['name']!r} is unavailable after "
                            f"{attempt + 1} attempts: {_first_line(e)}") from None
                    self._failed(cid, s, e, gave_up=False)
                    attempt += 1
                    time.sleep(min(0.2 * 2 ** attempt, 5.0))
                    m, a = calls[s]
                    try:
                        pending[s] = getattr(self._shards(cid)[s], m).remote(*a)
                    except ShardUnavailableError as again:  # its node is not back yet
                        pending[s] = again
        return out

    def _write(self, cid: str, calls: dict[int, tuple[str, tuple]], what: str) -> dict[int, Any]:
        """Sends writes in parallel and waits for every one: acknowledged only if all shards acknowledged.
        A write is not resent by itself (the shard may have applied it before dying): the error says
        which shards applied it, and the caller repeats it (upsert and add are idempotent)."""
        actors = self._shards(cid)
        pending = {s: getattr(actors[s], m).remote(*a) for s, (m, a) in calls.items()}
        done: dict[int, Any] = {}
        failed: dict[int, BaseException] = {}
        for s, ref in pending.items():
            try:
                done[s] = self._get_one(ref, s)
            except Exception as e:
                failed[s] = e
        if failed:
            if not done and len({type(e) for e in failed.values()}) == 1:
                e0 = next(iter(failed.values()))
                if isinstance(e0, InvalidArgumentError):
                    raise e0  # refused by every shard it touched: nothing was applied
            reasons = "; ".join(f"shard {s}: {type(e).__name__}: {_first_line(e)}" for s, e in sorted(failed.items()))
            raise ShardWriteError(
                f"{what} on collection {self._catalog[cid]['name']!r} was NOT acknowledged: shards "
                f"{sorted(done)} applied it, shards {sorted(failed)} failed ({reasons}). A shard that failed may "
                "or may not hold its part; repeat the same upsert (or add) to complete it, or delete the ids.",
                sorted(done), failed)
        return done

    def _next_seqs(self, n: int) -> int:
        """First of n sequence numbers, above every one given before (time-based, so a new client
        process continues above the numbers an earlier one gave)."""
        with self._lock:
            base = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = base + n - 1
            return base

    # ---- catalog ----
    def _check_open(self) -> None:
        if self._closed:
            raise VectorDBError("client is closed")

    def _entry(self, cid: str) -> dict:
        e = self._catalog.get(cid)
        if e is None:
            raise NotFoundError(f"Collection [{cid}] does not exist (it was deleted)")
        return e

    def _find(self, name: str) -> Optional[str]:
        for cid, e in self._catalog.items():
            if e["name"] == name:
                return cid
        return None

    def _save(self, cid: str, entry: Optional[dict]) -> None:
        """Applies one catalog change and persists it, or leaves the catalog as it was."""
        old = self._catalog.get(cid)
        if entry is None:
            self._catalog.pop(cid, None)
        else:
            self._catalog[cid] = entry
        try:
            _write_shardmap(self._map_path, self._catalog)
        except BaseException:
            if old is None:
                self._catalog.pop(cid, None)
            else:
                self._catalog[cid] = old
            raise

    # ---- public API ----
    def heartbeat(self) -> int:
        self._check_open()
        return time.time_ns()

    def count_collections(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._catalog)

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None) -> list["ShardedCollection"]:
        limit = validate_nonneg_int(limit, "limit")
        offset = validate_nonneg_int(offset, "offset") or 0
        with self._lock:
            self._check_open()
            cids = list(self._catalog)[offset:]
            cids = cids if limit is None else cids[:limit]
            return [ShardedCollection(self, cid) for cid in cids]

    def create_collection(self, name: str, configuration: Optional[dict] = None, metadata: Optional[dict] = None,
                          embedding_function: Optional[Callable] = _DEFAULT_EF, data_loader: Any = None,
                          get_or_create: bool = False, *, shards: Optional[int] = None,
                          **create_args: Any) -> "ShardedCollection":
        """Creates a collection split into `shards` shards (default: one per live node). Every other
        keyword (dimension, use_ivf, n_clusters, n_probe, ...) is what PersistentClient.create_collection
        takes, and each shard is created with it.

        >>> client.create_collection("docs", shards=4, metadata={"hnsw:space": "cosine"}, use_ivf=True)
        """
        validate_name(name)
        metadata = validate_collection_metadata(metadata)
        n_shards = validate_positive_int(shards, "shards", allow_none=True)
        # The embedding function is persisted in the shard map (JSON form), never given to the shards.
        ef_json, embedding_function = resolve_on_create(configuration, embedding_function)
        if isinstance(configuration, dict):
            configuration = {k: v for k, v in configuration.items() if k != "embedding_function"}
        with self._lock:
            self._check_open()
            existing = self._find(name)
            if existing is not None:
                if not get_or_create:
                    raise CollectionExistsError(f"Collection [{name}] already exists")
                check_conflict(embedding_function, self._entry(existing)["configuration"].get("embedding_function"))
                return ShardedCollection(self, existing, embedding_function, data_loader)
            args = {"configuration": configuration, "metadata": metadata, **create_args}
            # The arguments are checked by creating the collection in memory, with the same code every
            # shard runs: so a bad argument (of today or of a later version) fails here, before any shard.
            probe_name = f"vectordb-ray-probe-{uuid.uuid4()}"
            probe_client = EphemeralClient()
            try:
                configuration = probe_client.create_collection(probe_name, embedding_function=NEVER_EMBED,
                                                               **args).configuration_json
            finally:
                try:
                    probe_client.delete_collection(probe_name)
                except NotFoundError:
                    pass  # the arguments were refused: nothing was created
            try:
                json.dumps(args)
            except (TypeError, ValueError) as e:
                raise InvalidArgumentError(
                    f"create_collection arguments must be JSON values to be stored: {e}") from None
            configuration["embedding_function"] = ef_json
            cid = str(uuid.uuid4())
            placement = self._place(cid, n_shards or len(self._alive_nodes()))
            entry = {"name": name, "metadata": metadata, "configuration": configuration,
                     "create_args": args, "shards": placement, "dimension": configuration.get("dimension")}
            self._save(cid, entry)
            try:
                # Actors start in parallel; where() returns once each has created its shard.
                actors = self._shards(cid)
                self._read(cid, {s: ("where", ()) for s in range(len(actors))})
            except BaseException:
                self._drop(cid)
                raise
            return ShardedCollection(self, cid, embedding_function, data_loader)

    def get_collection(self, name: str, embedding_function: Optional[Callable] = _DEFAULT_EF,
                       data_loader: Any = None) -> "ShardedCollection":
        """The collection of that name; without embedding_function it embeds with the one it was created
        with (re-created from the shard map's name and config); one of another name is an error."""
        with self._lock:
            self._check_open()
            cid = self._find(name)
            if cid is None:
                raise NotFoundError(f"Collection [{name}] does not exist")
            check_conflict(embedding_function, self._entry(cid)["configuration"].get("embedding_function"))
            return ShardedCollection(self, cid, embedding_function, data_loader)

    def get_or_create_collection(self, name: str, configuration: Optional[dict] = None,
                                 metadata: Optional[dict] = None, embedding_function: Optional[Callable] = _DEFAULT_EF,
                                 data_loader: Any = None, **kwargs: Any) -> "ShardedCollection":
        """The existing collection (unchanged), or a new one (same keywords as create_collection)."""
        return self.create_collection(name, configuration, metadata, embedding_function, data_loader,
                                      get_or_create=True, **kwargs)

    def delete_collection(self, name: str) -> None:
        """Removes the collection from the shard map first (so it is gone even if a node is down), then
        each shard's directory (a node that is down keeps its directory until removed by hand)."""
        with self._lock:
            self._check_open()
            cid = self._find(name)
            if cid is None:
                raise NotFoundError(f"Collection [{name}] does not exist")
            self._drop(cid)

    def _modify(self, cid: str, name: Optional[str], metadata: Optional[dict], changes: dict) -> None:
        """Collection.modify after its checks (collection_modify): n_probe goes to every shard, the rest
        (name, metadata, embedding function) is the shard map's."""
        with self._lock:
            self._check_open()
            entry = dict(self._entry(cid))
            if name is not None and name != entry["name"] and self._find(name) is not None:
                raise CollectionExistsError(f"Collection [{name}] already exists")
            if "embedding_function" in changes:
                check_modify(entry["configuration"].get("embedding_function"), changes["embedding_function"])
            # The embedding function lives in the shard map only (shards never embed).
            shard_changes = {k: v for k, v in changes.items() if k != "embedding_function"}
            if shard_changes:
                self._write(cid, self._everywhere(cid, "modify", shard_changes), "modify")
            if changes:
                entry["configuration"] = {**entry["configuration"], **changes}
            if name is not None:
                entry["name"] = name
            if metadata is not None:
                entry["metadata"] = metadata
            self._save(cid, entry)

    def _drop(self, cid: str) -> None:
        ray = _ray()
        entry = self._catalog[cid]
        self._save(cid, None)
        actors = self._actors.pop(cid, None)
        if actors is not None:
            refs = [a.destroy.remote() for a in actors]
            for ref in refs:
                try:
                    ray.get(ref, timeout=self._timeout)
                except Exception as e:
                    log.warning("deleting a shard of %r failed: %s", entry["name"], _first_line(e))
            for a in actors:
                ray.kill(a, no_restart=True)
        else:
            for p in entry["shards"]:
                shutil.rmtree(p["path"], ignore_errors=True)  # shards on this machine; others need their node

    def close(self) -> None:
        """Closes every shard (their logs are checkpointed), releases the shard map, and stops Ray if
        this client started it."""
        ray = _ray()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for actors in self._actors.values():
                refs = [a.close.remote() for a in actors]
                for ref in refs:
                    try:
                        ray.get(ref, timeout=self._timeout)
                    except Exception as e:
                        log.warning("closing a shard failed: %s", _first_line(e))
                for a in actors:
                    ray.kill(a, no_restart=True)
            self._actors.clear()
            os.close(self._lock_fd)
            if self._started_ray:
                ray.shutdown()

    def __enter__(self) -> "RayClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def actor_name(cid: str, index: int) -> str:
    """The Ray name of a shard's actor (unique in the cluster: a second client opening the same
    collection is refused by Ray rather than running two writers on one shard)."""
    return f"vectordb-shard-{cid}-{index}"


def _unschedulable() -> tuple:
    cls = getattr(_ray().exceptions, "ActorUnschedulableError", None)
    return (cls,) if cls is not None else ()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class ShardedCollection(Collection):
    """A vectordb.Collection whose records live in shards (every method is Collection's, through
    RayClient's side of the Backend seam); it also says how many shards and where they run.

    >>> col = client.create_collection("docs", shards=4)
    >>> col.add(ids=["a", "b"], embeddings=[[1, 2], [3, 4]])
    """

    _client: "RayClient"

    def __init__(self, client: "RayClient", cid: str, embedding_function: Optional[Callable] = _DEFAULT_EF,
                 data_loader: Any = None):
        super().__init__(client, cid, embedding_function, data_loader)

    @property
    def shards(self) -> int:
        return len(self._client._entry(self._id)["shards"])

    def __repr__(self) -> str:
        return f"ShardedCollection(name={self.name!r}, id={self._id!r}, shards={self.shards})"

    def shard_locations(self) -> list[dict]:
        """Where each shard runs now: node id and address, process id, directory."""
        got = self._client._read(self._id, {s: ("where", ()) for s in range(self.shards)})
        return [got[s] for s in range(self.shards)]


__all__: Sequence[str] = ["RayClient", "ShardUnavailableError", "ShardWriteError", "ShardedCollection"]
