"""The service layer both HTTP APIs share: one embedded client, the engine thread pool, request bodies.

Routers (the seed's paths in routes/, chroma's /api/v2 in routes/chroma_*) only translate HTTP to
calls here and results back to JSON; every engine call runs on the pool, never on the event loop.

    service = Service(client, settings, version)
    col = service.collection("images")              # NotFoundError if absent
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

import numpy as np
from fastapi import Depends, Request

from vectordb.errors import CollectionExistsError, CorruptionError, InvalidArgumentError, NotFoundError
from vectordb.server.jsonio import body_error, decode_base64_vectors, is_json, parse_body
from vectordb.server.settings import ServerSettings
from vectordb.utils.embedding_functions import NEVER_EMBED

# Bodies at least this large are parsed and validated on the engine pool instead of the event loop
# (a 10k x 128 add takes ~0.3 s to parse and validate; a one-vector query ~10 us).
PARSE_IN_THREAD_BYTES = 64 * 1024
# Body models documented by hand (see Service.json_body): added to components/schemas by openapi.py.
BODY_MODELS: set = set()


def as_array(vectors: Any) -> Any:
    """Validated vectors (lists of Python floats) -> one float64 array, ~5x faster for the engine
    layer to check than nested lists. float64 keeps its range checks exact. Empty or ragged input
    is passed on as is, so the Collection reports it in its own words."""
    if not vectors or isinstance(vectors, np.ndarray):
        return vectors
    try:
        return np.array(vectors, dtype=np.float64)
    except ValueError:
        return vectors


def with_arrays(kwargs: Dict[str, Any], *names: str) -> Dict[str, Any]:
    for name in names:
        if name in kwargs:
            kwargs[name] = as_array(kwargs[name])
    return kwargs


def with_vectors(kwargs: Dict[str, Any], name: str, framed: Optional[Tuple[str, Any]] = None) -> Dict[str, Any]:
    """The vectors of a seed-API body as the Collection takes them: `name` as lists of numbers,
    `name`_base64 (one base64 float32 string per vector) decoded into an array, or the array of a
    binary frame (`framed`: field, array; see jsonio.parse_frame)."""
    if framed is not None:
        field, array = framed
        if field != name:
            raise InvalidArgumentError(f"this route takes {name}, the frame carries {field}")
        kwargs[name] = array
        return kwargs
    encoded = kwargs.pop(name + "_base64", None)
    if encoded is not None:
        if name in kwargs:
            raise InvalidArgumentError(f"pass {name} or {name}_base64, not both")
        kwargs[name] = decode_base64_vectors(encoded, name + "_base64")
    elif name in kwargs:
        kwargs[name] = as_array(kwargs[name])
    return kwargs


def client_path(client: Any) -> str:
    for attr in ("path", "_path"):
        value = getattr(client, attr, None)
        if value:
            return os.fspath(value)
    return "(in memory)"

# Tenants and databases created through /api/v2, kept beside the catalog so a restart keeps the empty ones.
NAMESPACES_FILE = "chroma_namespaces.json"
DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
_NAMESPACE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{1,61}[a-zA-Z0-9]$")


class AlreadyExistsError(CollectionExistsError):
    """A tenant or database of that name exists."""


class Namespace(NamedTuple):
    """A (tenant, database) pair; its collections are the catalog names starting with `prefix`."""

    tenant: str = DEFAULT_TENANT
    database: str = DEFAULT_DATABASE

    @property
    def is_default(self) -> bool:
        return self.tenant == DEFAULT_TENANT and self.database == DEFAULT_DATABASE

    @property
    def prefix(self) -> str:
        return "" if self.is_default else f"{self.tenant}.{self.database}."

    def catalog_name(self, name: Any) -> Any:
        """The catalog's name for this namespace's collection `name` (non-strings pass on to be rejected)."""
        return self.prefix + name if isinstance(name, str) and not self.is_default else name

    def local_name(self, catalog_name: str) -> Optional[str]:
        """The name inside this namespace, or None when the collection is not in it."""
        prefix = self.prefix
        return catalog_name[len(prefix):] if catalog_name.startswith(prefix) else None


DEFAULT_NAMESPACE = Namespace()


def validate_namespace_name(name: Any, what: str) -> str:
    if name in (DEFAULT_TENANT, DEFAULT_DATABASE):
        return str(name)
    if not isinstance(name, str) or not _NAMESPACE_NAME.match(name):
        raise InvalidArgumentError(
            f"{what} name {name!r} is not valid: expected 3-63 characters of [a-zA-Z0-9_-], "
            "starting and ending with a letter or digit")
    return name


def _namespace_of(catalog_name: str) -> Optional[Tuple[str, str]]:
    parts = catalog_name.split(".", 2)
    if len(parts) == 3 and _NAMESPACE_NAME.match(parts[0]) and _NAMESPACE_NAME.match(parts[1]) and parts[2]:
        return parts[0], parts[1]
    return None


class Service:
    """One embedded client behind the HTTP APIs, and the pool its calls run on."""

    def __init__(self, client: Any, settings: ServerSettings, version: str) -> None:
        self.client = client
        self.settings = settings
        self.version = version
        # Created on first use and shut down at the end of each lifespan (the app may be started again).
        self._pools: List[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self._tenants: Set[str] = {DEFAULT_TENANT}
        self._databases: Set[Tuple[str, str]] = {(DEFAULT_TENANT, DEFAULT_DATABASE)}
        path = client_path(client)
        self._namespaces_file = os.path.join(path, NAMESPACES_FILE) if os.path.isdir(path) else None
        self._load_namespaces()
        # Collections by id (the objects stay valid across renames; a deleted one raises NotFoundError).
        self._by_id: Dict[str, Any] = {}

    # ---- the engine pool

    def pool(self) -> ThreadPoolExecutor:
        if not self._pools:
            self._pools.append(ThreadPoolExecutor(max_workers=self.settings.threads,
                                                  thread_name_prefix="vectordb-engine"))
        return self._pools[0]

    def shutdown(self) -> None:
        """Waits for the calls still running in the engine, then drops the pool."""
        while self._pools:
            self._pools.pop().shutdown(wait=True)

    def engine(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: the endpoint body runs on the engine pool.

        A plain executor hop costs less than FastAPI's `def`-endpoint path (anyio to_thread), which
        matters for ~50 us queries."""

        @functools.wraps(fn)  # FastAPI reads the parameters through __wrapped__
        async def in_pool(*args: Any, **kwargs: Any) -> Any:
            call = functools.partial(fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self.pool(), call)

        return in_pool

    def json_body(self, model: type) -> Any:
        """Depends(): the body parsed strictly and validated off the loop when it is large.

        FastAPI's own body handling would validate on the event loop (and its JSON parser accepts
        NaN); the schema is still documented through openapi_extra and BODY_MODELS."""
        BODY_MODELS.add(model)

        async def dependency(request: Request) -> Any:
            if not is_json(request.headers.get("content-type", "")):
                raise body_error(("body",), "content_type",
                                 "expected a JSON body: send the header Content-Type: application/json")
            raw = await request.body()
            if len(raw) < PARSE_IN_THREAD_BYTES:
                return parse_body(model, raw)
            return await asyncio.get_running_loop().run_in_executor(self.pool(), parse_body, model, raw)

        return Depends(dependency)

    # ---- tenants and databases

    def _load_namespaces(self) -> None:
        """The tenants and databases created through /api/v2 (those without collections too)."""
        if self._namespaces_file is None or not os.path.exists(self._namespaces_file):
            return
        try:
            with open(self._namespaces_file, "rb") as f:
                saved = json.loads(f.read())
            tenants = [validate_namespace_name(t, "tenant") for t in saved["tenants"]]
            databases = [(validate_namespace_name(t, "tenant"), validate_namespace_name(d, "database"))
                         for t, d in saved["databases"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptionError(f"file '{self._namespaces_file}' is corrupt or unreadable: {exc}") from None
        self._tenants.update(tenants)
        self._databases.update(databases)

    def _save_namespaces(self) -> None:
        """Replaces the namespaces file atomically (temporary file, fsync, rename, fsync of the directory)."""
        if self._namespaces_file is None:
            return
        data = json.dumps({"tenants": sorted(self._tenants), "databases": sorted(map(list, self._databases))})
        tmp = self._namespaces_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._namespaces_file)
        dfd = os.open(os.path.dirname(self._namespaces_file), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _derived_databases(self) -> Set[Tuple[str, str]]:
        found = set()
        for col in self.client.list_collections():
            ns = _namespace_of(col.name)
            if ns is not None:
                found.add(ns)
        return found

    def create_tenant(self, tenant: Any) -> None:
        tenant = validate_namespace_name(tenant, "tenant")
        with self._lock:
            if self.tenant_exists(tenant):
                raise AlreadyExistsError(f"Tenant [{tenant}] already exists")
            self._tenants.add(tenant)
            try:
                self._save_namespaces()
            except BaseException:
                self._tenants.discard(tenant)
                raise

    def tenant_exists(self, tenant: str) -> bool:
        return tenant in self._tenants or any(t == tenant for t, _ in self._derived_databases())

    def get_tenant(self, tenant: str) -> str:
        if not self.tenant_exists(tenant):
            raise NotFoundError(f"Tenant [{tenant}] not found")
        return tenant

    def list_databases(self, tenant: str) -> List[str]:
        self.get_tenant(tenant)
        names = {d for t, d in self._databases | self._derived_databases() if t == tenant}
        return sorted(names)

    def create_database(self, tenant: str, database: Any) -> None:
        database = validate_namespace_name(database, "database")
        with self._lock:
            self.get_tenant(tenant)
            if database in self.list_databases(tenant):
                raise AlreadyExistsError(f"Database [{database}] already exists")
            self._databases.add((tenant, database))
            try:
                self._save_namespaces()
            except BaseException:
                self._databases.discard((tenant, database))
                raise

    def namespace(self, tenant: str, database: str) -> Namespace:
        """The namespace of an existing tenant and database (NotFoundError otherwise)."""
        ns = Namespace(tenant, database)
        if ns.is_default or (tenant, database) in self._databases:
            return ns
        if database not in self.list_databases(tenant):
            raise NotFoundError(f"Database [{database}] not found. Are you sure it exists?")
        return ns

    def delete_database(self, tenant: str, database: str) -> None:
        """Deletes the database and every collection in it (the default database cannot be deleted)."""
        ns = self.namespace(tenant, database)
        if ns.is_default:
            raise InvalidArgumentError("the default database cannot be deleted")
        for col in self.list_collections(ns=ns):
            self.client.delete_collection(col.name)
        with self._lock:
            if (tenant, database) in self._databases:
                self._databases.discard((tenant, database))
                self._save_namespaces()

    # ---- collections

    # The server never embeds (as chroma's): clients send embeddings, made by their embedding function.
    def collection(self, name: Any, ns: Namespace = DEFAULT_NAMESPACE) -> Any:
        return self.client.get_collection(ns.catalog_name(name), embedding_function=NEVER_EMBED)

    def collection_by_id(self, collection_id: str, ns: Namespace = DEFAULT_NAMESPACE) -> Any:
        col = self._by_id.get(collection_id)
        if col is None:
            for candidate in self.client.list_collections():
                self._by_id[str(candidate.id)] = candidate
            col = self._by_id.get(collection_id)
        if col is None:
            raise NotFoundError(f"Collection [{collection_id}] does not exist")
        try:
            in_namespace = ns.local_name(col.name) is not None
        except NotFoundError:
            self._by_id.pop(collection_id, None)
            raise NotFoundError(f"Collection [{collection_id}] does not exist") from None
        if not in_namespace:
            raise NotFoundError(f"Collection [{collection_id}] does not exist")
        return col

    def create_collection(self, name: Any, ns: Namespace = DEFAULT_NAMESPACE, **kwargs: Any) -> Any:
        return self.client.create_collection(ns.catalog_name(name), embedding_function=NEVER_EMBED, **kwargs)

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None,
                         ns: Namespace = DEFAULT_NAMESPACE) -> List[Any]:
        if ns.is_default:
            return list(self.client.list_collections(limit=limit, offset=offset))
        cols = [c for c in self.client.list_collections() if c.name.startswith(ns.prefix)]
        start = offset or 0
        return cols[start:] if limit is None else cols[start:start + limit]

    def count_collections(self, ns: Namespace = DEFAULT_NAMESPACE) -> int:
        if ns.is_default:
            return int(self.client.count_collections())
        return len(self.list_collections(ns=ns))

    def delete_collection(self, name: Any, ns: Namespace = DEFAULT_NAMESPACE) -> None:
        self.client.delete_collection(ns.catalog_name(name))

def collection_info(col: Any) -> Dict[str, Any]:
    """The seed API's description of a collection."""
    info: Dict[str, Any] = {"name": col.name, "id": str(col.id), "metadata": col.metadata}
    configuration = getattr(col, "configuration_json", None)
    if isinstance(configuration, dict):
        info["configuration"] = configuration
    dimension = getattr(col, "dimension", None)
    if isinstance(dimension, int) and not isinstance(dimension, bool):
        info["dimension"] = dimension
    return info
