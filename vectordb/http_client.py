"""HttpClient: the client and Collection API of the embedded clients, over the REST server.

    import vectordb
    client = vectordb.HttpClient(host="localhost", port=8080)          # `vectordb serve` elsewhere
    col = client.get_or_create_collection("images", dimension=3)
    col.add(ids=["a"], embeddings=[[0.1, 0.2, 0.3]], metadatas=[{"source": "camera"}])
    col.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=1)["ids"]  # [['a']]

Results have the same shapes and types as the embedded client's (embeddings as NumPy arrays);
server errors are raised as the same vectordb.errors classes. One httpx.Client (a keep-alive
connection pool) is shared by the client and its collections; it is safe to use from several
threads at once.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, Generator, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlsplit

import httpx
import numpy as np

from vectordb import errors as _errors
from vectordb.backend import OP_ADD, OP_UPDATE, OP_UPSERT
from vectordb.collection import AsyncCollection, Collection
from vectordb.utils.embedding_functions import DefaultEmbeddingFunction, check_conflict, resolve_on_create
from vectordb.wire import FRAME_CONTENT_TYPE, FRAME_FIELDS, encode_frame

try:  # optional; encodes NumPy arrays directly and parses much faster
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

__all__ = ["HttpClient", "AsyncHttpClient", "AsyncHttpClientAPI", "RemoteCollection", "ServerUnavailableError"]


class ServerUnavailableError(_errors.VectorDBError, ConnectionError):
    """The server could not be reached (not running, wrong host/port, network down)."""


_STATUS_ERRORS = {
    400: "InvalidArgumentError",
    401: "AuthorizationError",
    403: "AuthorizationError",
    404: "NotFoundError",
    409: "CollectionExistsError",
    413: "InvalidArgumentError",
    422: "InvalidArgumentError",
    423: "LockedError",
    503: "ReadOnlyError",
}


def _error_class(name: Optional[str], status: int) -> type:
    cls = getattr(_errors, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, _errors.VectorDBError):
        return cls
    cls = getattr(_errors, _STATUS_ERRORS.get(status, ""), None)
    if isinstance(cls, type) and issubclass(cls, _errors.VectorDBError):
        return cls
    return _errors.VectorDBError


def _raise_for_response(response: httpx.Response) -> None:
    name = None
    try:
        body = _loads(response.content)
        name = body.get("error") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        body, message = None, None
    if not message:
        message = response.text.strip() or response.reason_phrase
    cls = _error_class(name, response.status_code)
    if cls is _errors.VectorDBError:
        message = f"server answered {response.status_code}: {message}"
    raise cls(message)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise _errors.InvalidArgumentError(
        f"cannot send a value of type {type(obj).__name__} ({obj!r:.80}): expected str, int, float, bool, "
        "None, lists, dicts or NumPy arrays"
    )


def _check_keys(obj: Any) -> None:
    """JSON would turn {1: "x"} into {"1": "x"}; the embedded client rejects non-str keys, so do we."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise _errors.InvalidArgumentError(
                    f"key {key!r} is {type(key).__name__}: metadata and filter keys must be str")
            _check_keys(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            if isinstance(value, (dict, list, tuple)):
                _check_keys(value)


def _dumps(body: Any) -> bytes:
    if orjson is not None:
        try:
            data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=_json_default)
        except orjson.JSONEncodeError as exc:
            if isinstance(exc.__cause__, _errors.VectorDBError):
                raise exc.__cause__ from None
            data = None  # e.g. an int beyond 64 bits: the standard encoder writes it, the server judges it
        # orjson writes NaN/Infinity as null; send them as written so the server can name the problem.
        if data is not None and b"null" not in data:
            return data
    _check_keys(body)
    return json.dumps(body, default=_json_default, separators=(",", ":")).encode("utf-8")


def _loads(data: bytes) -> Any:
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def _collection_path(name: str, suffix: str = "") -> str:
    if not isinstance(name, str):
        raise _errors.InvalidArgumentError(f"collection name must be a str, got {type(name).__name__}")
    quoted = quote(name, safe="")
    if set(name) <= {"."}:
        quoted = quoted.replace(".", "%2E")  # keep "." and ".." from being read as path segments
    return f"/collections/{quoted}{suffix}"


_F32_MAX = float(np.finfo(np.float32).max)


def _vectors(name: str, vectors: Any) -> Dict[str, Any]:
    """NumPy float vectors go as float32 in a binary frame (vectordb/wire.py: no base64, no JSON
    numbers); anything else as given, for the server to check and name the problem."""
    if isinstance(vectors, np.ndarray) and vectors.dtype.kind == "f" and vectors.ndim in (1, 2) and vectors.size:
        rows = np.atleast_2d(vectors)
        if rows.dtype != np.float32:
            # float32 is what the server would store; values it would refuse go as JSON, to be named.
            if not (np.isfinite(rows).all() and np.abs(rows).max() <= _F32_MAX):
                return {name: vectors}
            rows = rows.astype(np.float32)
        return {name + "_f32": np.ascontiguousarray(rows, dtype="<f4")}  # sent in a binary frame
    return {} if vectors is None else {name: vectors}


def _drop_none(**kwargs: Any) -> Dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _as_list(x: Any) -> Any:
    return [x] if isinstance(x, str) else x


# One request: method, path, JSON body (or None), query parameters (or None).
_Request = Tuple[str, str, Any, Optional[Dict[str, Any]]]
_Op = Generator[_Request, Any, Any]
# As chromadb: the default argument is the default embedding function (it loads its model on first use).
_DEFAULT_EF = DefaultEmbeddingFunction()
_WRITE_ROUTES = {OP_ADD: ("POST", "/add"), OP_UPSERT: ("POST", "/upsert"), OP_UPDATE: ("PUT", "/update")}
_ACTION_ROUTES = {"begin_batch": "/batch/begin", "end_batch": "/batch/end", "rebuild": "/rebuild",
                  "checkpoint": "/checkpoint"}


class _HttpOps:
    """Every operation once, as a generator that yields the requests it needs and returns its result:
    HttpClient runs them over httpx.Client, AsyncHttpClient over httpx.AsyncClient. Collections are
    addressed by name on the server; `_infos` maps each known collection id to its last known info."""

    _base_url: str

    def _setup(self, host: str, port: int, ssl: bool, headers: Optional[Mapping[str, str]],
               api_key: Optional[str], timeout: Optional[float]) -> Dict[str, Any]:
        scheme = "https" if ssl else "http"
        if "://" in host:
            parts = urlsplit(host)
            scheme = parts.scheme or scheme
            host = parts.hostname or "localhost"
            port = parts.port or port
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        self._base_url = f"{scheme}://{host}:{int(port)}"
        self._infos: Dict[str, Dict[str, Any]] = {}
        self._urls: Dict[str, httpx.URL] = {}  # path -> parsed absolute URL (httpx parses a str per call)
        all_headers = {"accept": "application/json"}
        all_headers.update(headers or {})
        if api_key:
            all_headers["authorization"] = f"Bearer {api_key}"
        return {"base_url": self._base_url, "headers": all_headers,
                "timeout": httpx.Timeout(timeout, connect=min(10.0, timeout) if timeout else 10.0)}

    def _url(self, path: str) -> httpx.URL:
        """The absolute URL of `path`, parsed once (~0.1 ms of httpx's per-call CPU)."""
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= 1024:
                self._urls.clear()
            url = self._urls[path] = httpx.URL(self._base_url + path)
        return url

    def _send_args(self, method: str, path: str, body: Any) -> Dict[str, Any]:
        if body is None:
            return {"content": None, "headers": None}
        for field in FRAME_FIELDS:
            vectors = body.get(field + "_f32") if isinstance(body, dict) else None
            if vectors is not None:
                rest = {k: v for k, v in body.items() if k != field + "_f32"}
                return {"content": encode_frame(_dumps(rest), field, vectors),
                        "headers": {"content-type": FRAME_CONTENT_TYPE}}
        return {"content": _dumps(body), "headers": {"content-type": "application/json"}}

    def _answer(self, method: str, path: str, response: Any = None, exc: Optional[BaseException] = None) -> Any:
        if isinstance(exc, httpx.TimeoutException):
            raise ServerUnavailableError(
                f"the vectordb server at {self._base_url} did not answer {method} {path} in time "
                f"({type(exc).__name__}); pass a larger timeout= to HttpClient for long operations"
            ) from exc
        if exc is not None:
            raise ServerUnavailableError(
                f"cannot reach the vectordb server at {self._base_url} ({type(exc).__name__}: {exc}); "
                "is `vectordb serve` running there?"
            ) from exc
        if response.status_code >= 400:
            _raise_for_response(response)
        return _loads(response.content)

    # ---- collection ids and names
    def _remember(self, info: Dict[str, Any]) -> str:
        cid = str(uuid.UUID(info["id"]))
        self._infos[cid] = info
        return cid

    def _path(self, cid: str, suffix: str = "") -> str:
        return _collection_path(self._info(cid)["name"], suffix)

    @staticmethod
    def _ef_configuration(configuration: Any, embedding_function: Any) -> Tuple[Dict[str, Any], Any]:
        """The configuration to send, holding the embedding function's name and config (the server keeps
        it, so get_collection re-creates the function here), and the function the handle embeds with."""
        if configuration is not None and not isinstance(configuration, dict):
            raise _errors.InvalidArgumentError(f"configuration must be a dict, got {type(configuration).__name__}")
        ef_json, embedding_function = resolve_on_create(configuration, embedding_function)
        rest = {k: v for k, v in (configuration or {}).items() if k != "embedding_function"}
        rest["embedding_function"] = ef_json
        return rest, embedding_function

    def _check_ef(self, cid: str, embedding_function: Any) -> None:
        persisted = (self._info(cid).get("configuration") or {}).get("embedding_function")
        check_conflict(embedding_function, persisted if isinstance(persisted, dict) else None)

    def _info(self, cid: str) -> Dict[str, Any]:
        info = self._infos.get(cid)
        if info is None:
            raise _errors.NotFoundError(f"Collection [{cid}] does not exist (it was deleted)")
        return info

    def _dimension(self, cid: str) -> _Op:
        info = self._info(cid)
        dim = info.get("dimension") or (info.get("configuration") or {}).get("dimension")
        if not dim:
            stats = yield ("GET", self._path(cid, "/stats"), None, None)
            dim = int(stats.get("dimension") or 0)
            if dim:
                info["dimension"] = dim
        return int(dim or 0)

    def _matrix(self, cid: str, rows: Any) -> _Op:
        if len(rows) == 0:
            # JSON [] has lost the width; the embedded client returns shape (0, dimension).
            dim = yield from self._dimension(cid)
            return np.empty((0, dim), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    # ---- client operations
    def _op_heartbeat(self) -> _Op:
        return int((yield ("GET", "/heartbeat", None, None))["nanosecond heartbeat"])

    def _op_version(self) -> _Op:
        return str((yield ("GET", "/version", None, None))["version"])

    def _op_max_batch_size(self) -> _Op:
        return int((yield ("GET", "/max_batch_size", None, None))["max_batch_size"])

    def _op_count_collections(self) -> _Op:
        return int((yield ("GET", "/collections_count", None, None))["count"])

    def _op_list_collections(self, limit: Optional[int], offset: Optional[int]) -> _Op:
        infos = yield ("GET", "/collections", None, _drop_none(limit=limit, offset=offset))
        return [self._remember(info) for info in infos]

    def _op_create_collection(self, name: str, configuration: Any, metadata: Any, get_or_create: bool,
                              dimension: Any, use_ivf: bool, n_clusters: Any, n_probe: Any,
                              quantization: Optional[str] = None) -> _Op:
        body = _drop_none(name=name, metadata=metadata, configuration=configuration, dimension=dimension,
                          n_clusters=n_clusters, n_probe=n_probe, quantization=quantization)
        body["use_ivf"] = use_ivf
        body["get_or_create"] = get_or_create
        return self._remember((yield ("POST", "/collections", body, None)))

    def _op_get_collection(self, name: str) -> _Op:
        return self._remember((yield ("GET", _collection_path(name), None, None)))

    def _op_delete_collection(self, name: str) -> _Op:
        yield ("DELETE", _collection_path(name), None, None)
        for cid in [c for c, info in self._infos.items() if info["name"] == name]:
            del self._infos[cid]

    def _op_reset(self) -> _Op:
        yield ("POST", "/reset", None, None)
        self._infos.clear()
        return True

    # ---- Backend operations
    def collection_info(self, cid: str) -> dict:
        info = self._info(cid)
        return {"name": info["name"], "metadata": info.get("metadata"), "configuration": info.get("configuration")}

    def _op_records_write(self, cid: str, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                          uris: Any) -> _Op:
        method, suffix = _WRITE_ROUTES[op]
        body = _drop_none(ids=_as_list(ids), metadatas=metadatas, documents=documents, uris=uris)
        body.update(_vectors("embeddings", embeddings))
        yield (method, self._path(cid, suffix), body, None)

    def _op_records_delete(self, cid: str, ids: Any, where: Any, where_document: Any) -> _Op:
        if ids is None and where is None and where_document is None:
            raise _errors.InvalidArgumentError("delete needs ids, where or where_document")
        body = _drop_none(ids=ids, where=where, where_document=where_document)
        return int((yield ("DELETE", self._path(cid, "/delete"), body, None))["deleted"])

    def _op_records_get(self, cid: str, ids: Any, where: Any, limit: Any, offset: Any, where_document: Any,
                        include: Any) -> _Op:
        body = _drop_none(ids=ids, where=where, limit=limit, offset=offset, where_document=where_document)
        body["include"] = include
        result = yield ("POST", self._path(cid, "/get"), body, None)
        if result.get("embeddings") is not None:
            result["embeddings"] = yield from self._matrix(cid, result["embeddings"])
        return result

    def _op_records_query(self, cid: str, query_embeddings: Any, ids: Any, n_results: Any, where: Any,
                          where_document: Any, include: Any, n_probe: Optional[int]) -> _Op:
        body = _drop_none(ids=ids, where=where, where_document=where_document, n_probe=n_probe)
        body.update(_vectors("query_embeddings", query_embeddings))
        body["include"] = include
        body["n_results"] = n_results  # sent even when None: the server rejects it, as the embedded client does
        result = yield ("POST", self._path(cid, "/query"), body, None)
        if result.get("embeddings") is not None:
            matrices = []
            for rows in result["embeddings"]:
                matrices.append((yield from self._matrix(cid, rows)))
            result["embeddings"] = matrices
        return result

    def _op_records_count(self, cid: str) -> _Op:
        return int((yield ("GET", self._path(cid, "/count"), None, None))["count"])

    def _op_collection_modify(self, cid: str, name: Optional[str], metadata: Optional[dict], configuration: Any) -> _Op:
        body = _drop_none(name=name, metadata=metadata, configuration=configuration)
        info = yield ("PATCH", self._path(cid), body, None)
        self._infos[cid] = info

    def _op_collection_stats(self, cid: str) -> _Op:
        return (yield ("GET", self._path(cid, "/stats"), None, None))

    def _op_collection_action(self, cid: str, action: str) -> _Op:
        if action not in _ACTION_ROUTES:
            raise _errors.InvalidArgumentError(f"unknown collection action {action!r}")
        out = yield ("POST", self._path(cid, _ACTION_ROUTES[action]), None, None)
        if action != "rebuild":
            return None
        out = dict(out)
        out.pop("ok", None)
        return out


class HttpClient(_HttpOps):
    """A vectordb client that talks to `vectordb serve` over HTTP; its collections are
    vectordb.Collection objects, as the embedded clients'.

        client = HttpClient(host="localhost", port=8080, api_key="secret")

    `host` may also be a URL ("https://db.example.com:8443"); `headers` are sent with every
    request; `api_key` is sent as `Authorization: Bearer <key>`. An embedding_function runs here,
    on the client: documents and query_texts are embedded before they are sent.
    """

    def __init__(self, host: str = "localhost", port: int = 8080, ssl: bool = False,
                 headers: Optional[Mapping[str, str]] = None, api_key: Optional[str] = None,
                 timeout: Optional[float] = 300.0, settings: Any = None, **_ignored: Any) -> None:
        self._http = httpx.Client(**self._setup(host, port, ssl, headers, api_key, timeout))

    def _request(self, method: str, path: str, body: Any = None, params: Optional[Dict[str, Any]] = None) -> Any:
        try:
            response = self._http.request(method, self._url(path), params=params,
                                          **self._send_args(method, path, body))
        except httpx.TransportError as exc:
            return self._answer(method, path, exc=exc)
        return self._answer(method, path, response)

    def _run(self, op: _Op) -> Any:
        try:
            request = next(op)
            while True:
                request = op.send(self._request(*request))
        except StopIteration as stop:
            return stop.value

    # ---- client API
    def heartbeat(self) -> int:
        """Server time in nanoseconds (raises ServerUnavailableError when the server is down)."""
        return self._run(self._op_heartbeat())

    def get_version(self) -> str:
        return self._run(self._op_version())

    def get_max_batch_size(self) -> int:
        return self._run(self._op_max_batch_size())

    def count_collections(self) -> int:
        return self._run(self._op_count_collections())

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None) -> List[Collection]:
        return [Collection(self, cid) for cid in self._run(self._op_list_collections(limit, offset))]

    def create_collection(self, name: str, configuration: Optional[Dict[str, Any]] = None,
                          metadata: Optional[Dict[str, Any]] = None, embedding_function: Any = _DEFAULT_EF,
                          data_loader: Any = None, get_or_create: bool = False, *, dimension: Optional[int] = None,
                          use_ivf: bool = False, n_clusters: Optional[int] = None,
                          n_probe: Optional[int] = None, quantization: Optional[str] = None) -> Collection:
        """Creates a collection on the server (CollectionExistsError if the name is taken).

        >>> client.create_collection("images", metadata={"hnsw:space": "cosine"}, dimension=1280)
        """
        configuration, embedding_function = self._ef_configuration(configuration, embedding_function)
        cid = self._run(self._op_create_collection(name, configuration, metadata, get_or_create, dimension, use_ivf,
                                                   n_clusters, n_probe, quantization))
        self._check_ef(cid, embedding_function)
        return Collection(self, cid, embedding_function, data_loader)

    def get_collection(self, name: str, embedding_function: Any = _DEFAULT_EF, data_loader: Any = None) -> Collection:
        """The collection of that name (NotFoundError if there is none); without embedding_function it
        embeds with the one it was created with; one of another name is an error."""
        cid = self._run(self._op_get_collection(name))
        self._check_ef(cid, embedding_function)
        return Collection(self, cid, embedding_function, data_loader)

    def get_or_create_collection(self, name: str, configuration: Optional[Dict[str, Any]] = None,
                                 metadata: Optional[Dict[str, Any]] = None, embedding_function: Any = _DEFAULT_EF,
                                 data_loader: Any = None, *, dimension: Optional[int] = None, use_ivf: bool = False,
                                 n_clusters: Optional[int] = None, n_probe: Optional[int] = None,
                                 quantization: Optional[str] = None) -> Collection:
        """The existing collection (its metadata unchanged), or a new one."""
        return self.create_collection(name, configuration, metadata, embedding_function, data_loader, True,
                                      dimension=dimension, use_ivf=use_ivf, n_clusters=n_clusters, n_probe=n_probe,
                                      quantization=quantization)

    def delete_collection(self, name: str) -> None:
        self._run(self._op_delete_collection(name))

    def reset(self) -> bool:
        """Delete every collection; the server refuses (AuthorizationError) unless it allows reset."""
        return self._run(self._op_reset())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpClient({self._base_url!r})"

    # ---- Backend (the seam Collection uses)
    def records_write(self, cid: str, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                      uris: Any) -> None:
        self._run(self._op_records_write(cid, op, ids, embeddings, metadatas, documents, uris))

    def records_delete(self, cid: str, ids: Any, where: Any, where_document: Any) -> int:
        return self._run(self._op_records_delete(cid, ids, where, where_document))

    def records_get(self, cid: str, ids: Any, where: Any, limit: Any, offset: Any, where_document: Any,
                    include: Any) -> dict:
        return self._run(self._op_records_get(cid, ids, where, limit, offset, where_document, include))

    def records_query(self, cid: str, query_embeddings: Any, ids: Any, n_results: Any, where: Any,
                      where_document: Any, include: Any, n_probe: Optional[int]) -> dict:
        return self._run(self._op_records_query(cid, query_embeddings, ids, n_results, where, where_document,
                                                include, n_probe))

    def records_count(self, cid: str) -> int:
        return self._run(self._op_records_count(cid))

    def collection_modify(self, cid: str, name: Optional[str], metadata: Optional[dict], configuration: Any) -> None:
        self._run(self._op_collection_modify(cid, name, metadata, configuration))

    def collection_stats(self, cid: str) -> dict:
        return self._run(self._op_collection_stats(cid))

    def collection_action(self, cid: str, action: str) -> Any:
        return self._run(self._op_collection_action(cid, action))


# The collection class HttpClient returns (kept under its former name).
RemoteCollection = Collection


class AsyncHttpClientAPI(_HttpOps):
    """HttpClient's methods as coroutines over httpx.AsyncClient; made by `await AsyncHttpClient(...)`.
    Its collections are AsyncCollection objects."""

    def __init__(self, host: str = "localhost", port: int = 8080, ssl: bool = False,
                 headers: Optional[Mapping[str, str]] = None, api_key: Optional[str] = None,
                 timeout: Optional[float] = 300.0, settings: Any = None, **_ignored: Any) -> None:
        self._http = httpx.AsyncClient(**self._setup(host, port, ssl, headers, api_key, timeout))

    async def _request(self, method: str, path: str, body: Any = None,
                       params: Optional[Dict[str, Any]] = None) -> Any:
        try:
            response = await self._http.request(method, self._url(path), params=params,
                                                **self._send_args(method, path, body))
        except httpx.TransportError as exc:
            return self._answer(method, path, exc=exc)
        return self._answer(method, path, response)

    async def _run(self, op: _Op) -> Any:
        try:
            request = next(op)
            while True:
                request = op.send(await self._request(*request))
        except StopIteration as stop:
            return stop.value

    async def heartbeat(self) -> int:
        return await self._run(self._op_heartbeat())

    async def get_version(self) -> str:
        return await self._run(self._op_version())

    async def get_max_batch_size(self) -> int:
        return await self._run(self._op_max_batch_size())

    async def count_collections(self) -> int:
        return await self._run(self._op_count_collections())

    async def list_collections(self, limit: Optional[int] = None,
                               offset: Optional[int] = None) -> List[AsyncCollection]:
        return [AsyncCollection(self, cid) for cid in await self._run(self._op_list_collections(limit, offset))]

    async def create_collection(self, name: str, configuration: Optional[Dict[str, Any]] = None,
                                metadata: Optional[Dict[str, Any]] = None, embedding_function: Any = _DEFAULT_EF,
                                data_loader: Any = None, get_or_create: bool = False, *,
                                dimension: Optional[int] = None, use_ivf: bool = False,
                                n_clusters: Optional[int] = None, n_probe: Optional[int] = None,
                                quantization: Optional[str] = None) -> AsyncCollection:
        configuration, embedding_function = self._ef_configuration(configuration, embedding_function)
        cid = await self._run(self._op_create_collection(name, configuration, metadata, get_or_create, dimension,
                                                         use_ivf, n_clusters, n_probe, quantization))
        self._check_ef(cid, embedding_function)
        return AsyncCollection(self, cid, embedding_function, data_loader)

    async def get_collection(self, name: str, embedding_function: Any = _DEFAULT_EF,
                             data_loader: Any = None) -> AsyncCollection:
        cid = await self._run(self._op_get_collection(name))
        self._check_ef(cid, embedding_function)
        return AsyncCollection(self, cid, embedding_function, data_loader)

    async def get_or_create_collection(self, name: str, configuration: Optional[Dict[str, Any]] = None,
                                       metadata: Optional[Dict[str, Any]] = None, embedding_function: Any = _DEFAULT_EF,
                                       data_loader: Any = None, *, dimension: Optional[int] = None,
                                       use_ivf: bool = False, n_clusters: Optional[int] = None,
                                       n_probe: Optional[int] = None,
                                       quantization: Optional[str] = None) -> AsyncCollection:
        return await self.create_collection(name, configuration, metadata, embedding_function, data_loader, True,
                                            dimension=dimension, use_ivf=use_ivf, n_clusters=n_clusters,
                                            n_probe=n_probe, quantization=quantization)

    async def delete_collection(self, name: str) -> None:
        await self._run(self._op_delete_collection(name))

    async def reset(self) -> bool:
        return await self._run(self._op_reset())

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncHttpClientAPI":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncHttpClient({self._base_url!r})"

    # ---- the seam, as coroutines (AsyncCollection awaits these)
    async def records_write(self, cid: str, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                            uris: Any) -> None:
        await self._run(self._op_records_write(cid, op, ids, embeddings, metadatas, documents, uris))

    async def records_delete(self, cid: str, ids: Any, where: Any, where_document: Any) -> int:
        return await self._run(self._op_records_delete(cid, ids, where, where_document))

    async def records_get(self, cid: str, ids: Any, where: Any, limit: Any, offset: Any, where_document: Any,
                          include: Any) -> dict:
        return await self._run(self._op_records_get(cid, ids, where, limit, offset, where_document, include))

    async def records_query(self, cid: str, query_embeddings: Any, ids: Any, n_results: Any, where: Any,
                            where_document: Any, include: Any, n_probe: Optional[int]) -> dict:
        return await self._run(self._op_records_query(cid, query_embeddings, ids, n_results, where, where_document,
                                                      include, n_probe))

    async def records_count(self, cid: str) -> int:
        return await self._run(self._op_records_count(cid))

    async def collection_modify(self, cid: str, name: Optional[str], metadata: Optional[dict],
                                configuration: Any) -> None:
        await self._run(self._op_collection_modify(cid, name, metadata, configuration))

    async def collection_stats(self, cid: str) -> dict:
        return await self._run(self._op_collection_stats(cid))

    async def collection_action(self, cid: str, action: str) -> Any:
        return await self._run(self._op_collection_action(cid, action))


async def AsyncHttpClient(host: str = "localhost", port: int = 8080, ssl: bool = False,
                          headers: Optional[Mapping[str, str]] = None, api_key: Optional[str] = None,
                          timeout: Optional[float] = 300.0, settings: Any = None,
                          **_ignored: Any) -> AsyncHttpClientAPI:
    """An asyncio client, made as chromadb's: `client = await AsyncHttpClient(host=..., port=...)`."""
    return AsyncHttpClientAPI(host, port, ssl, headers, api_key, timeout, settings)
