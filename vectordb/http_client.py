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

import contextlib
import json
import uuid
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote, urlsplit

import httpx
import numpy as np

from vectordb import errors as _errors

try:  # optional; encodes NumPy arrays directly and parses much faster
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

__all__ = ["HttpClient", "RemoteCollection", "ServerUnavailableError"]


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


def _float_matrix(rows: Any, dimension: Callable[[], int]) -> np.ndarray:
    if len(rows) == 0:
        # JSON [] has lost the width; the embedded client returns shape (0, dimension).
        return np.empty((0, dimension()), dtype=np.float32)
    return np.asarray(rows, dtype=np.float32)


def _collection_path(name: str, suffix: str = "") -> str:
    if not isinstance(name, str):
        raise _errors.InvalidArgumentError(f"collection name must be a str, got {type(name).__name__}")
    quoted = quote(name, safe="")
    if set(name) <= {"."}:
        quoted = quoted.replace(".", "%2E")  # keep "." and ".." from being read as path segments
    return f"/collections/{quoted}{suffix}"


def _drop_none(**kwargs: Any) -> Dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _as_list(x: Any) -> Any:
    return [x] if isinstance(x, str) else x


class HttpClient:
    """A vectordb client that talks to `vectordb serve` over HTTP.

        client = HttpClient(host="localhost", port=8080, api_key="secret")

    `host` may also be a URL ("https://db.example.com:8443"); `headers` are sent with every
    request; `api_key` is sent as `Authorization: Bearer <key>`.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8080,
        ssl: bool = False,
        headers: Optional[Mapping[str, str]] = None,
        api_key: Optional[str] = None,
        timeout: Optional[float] = 300.0,
    ) -> None:
        scheme = "https" if ssl else "http"
        if "://" in host:
            parts = urlsplit(host)
            scheme = parts.scheme or scheme
            host = parts.hostname or "localhost"
            port = parts.port or port
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        self._base_url = f"{scheme}://{host}:{int(port)}"
        all_headers = {"accept": "application/json"}
        all_headers.update(headers or {})
        if api_key:
            all_headers["authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self._base_url,
            headers=all_headers,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout) if timeout else 10.0),
        )

    # ---- transport

    def _request(self, method: str, path: str, body: Any = None, params: Optional[Dict[str, Any]] = None) -> Any:
        content = None if body is None else _dumps(body)
        headers = {"content-type": "application/json"} if content is not None else None
        try:
            response = self._http.request(method, path, content=content, params=params, headers=headers)
        except httpx.TimeoutException as exc:
            raise ServerUnavailableError(
                f"the vectordb server at {self._base_url} did not answer {method} {path} in time "
                f"({type(exc).__name__}); pass a larger timeout= to HttpClient for long operations"
            ) from exc
        except httpx.TransportError as exc:
            raise ServerUnavailableError(
                f"cannot reach the vectordb server at {self._base_url} ({type(exc).__name__}: {exc}); "
                "is `vectordb serve` running there?"
            ) from exc
        if response.status_code >= 400:
            _raise_for_response(response)
        return _loads(response.content)

    # ---- client API

    def heartbeat(self) -> int:
        """Server time in nanoseconds (raises ServerUnavailableError when the server is down)."""
        return int(self._request("GET", "/heartbeat")["nanosecond heartbeat"])

    def get_version(self) -> str:
        return str(self._request("GET", "/version")["version"])

    def get_max_batch_size(self) -> int:
        return int(self._request("GET", "/max_batch_size")["max_batch_size"])

    def count_collections(self) -> int:
        return int(self._request("GET", "/collections_count")["count"])

    def list_collections(self, limit: Optional[int] = None, offset: Optional[int] = None) -> List["RemoteCollection"]:
        infos = self._request("GET", "/collections", params=_drop_none(limit=limit, offset=offset))
        return [RemoteCollection(self, info) for info in infos]

    def create_collection(
        self,
        name: str,
        configuration: Optional[Dict[str, Any]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        embedding_function: Optional[Callable[[List[str]], Any]] = None,
        data_loader: Any = None,
        get_or_create: bool = False,
        *,
        dimension: Optional[int] = None,
        use_ivf: bool = False,
        n_clusters: Optional[int] = None,
        n_probe: Optional[int] = None,
    ) -> "RemoteCollection":
        """Creates a collection on the server (CollectionExistsError if the name is taken).

        >>> client.create_collection("images", metadata={"hnsw:space": "cosine"}, dimension=1280)

        An embedding_function runs here, on the client: documents and query_texts are embedded
        before they are sent.
        """
        body = _drop_none(
            name=name,
            metadata=metadata,
            configuration=configuration,
            dimension=dimension,
            n_clusters=n_clusters,
            n_probe=n_probe,
        )
        body["use_ivf"] = use_ivf
        body["get_or_create"] = get_or_create
        info = self._request("POST", "/collections", body)
        return RemoteCollection(self, info, embedding_function)

    def get_collection(
        self,
        name: str,
        embedding_function: Optional[Callable[[List[str]], Any]] = None,
        data_loader: Any = None,
    ) -> "RemoteCollection":
        """The collection of that name (NotFoundError if there is none)."""
        return RemoteCollection(self, self._request("GET", _collection_path(name)), embedding_function)

    def get_or_create_collection(
        self,
        name: str,
        configuration: Optional[Dict[str, Any]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        embedding_function: Optional[Callable[[List[str]], Any]] = None,
        data_loader: Any = None,
        *,
        dimension: Optional[int] = None,
        use_ivf: bool = False,
        n_clusters: Optional[int] = None,
        n_probe: Optional[int] = None,
    ) -> "RemoteCollection":
        """The existing collection (its metadata unchanged), or a new one."""
        return self.create_collection(
            name,
            configuration,
            metadata,
            embedding_function,
            get_or_create=True,
            dimension=dimension,
            use_ivf=use_ivf,
            n_clusters=n_clusters,
            n_probe=n_probe,
        )

    def delete_collection(self, name: str) -> None:
        self._request("DELETE", _collection_path(name))

    def reset(self) -> bool:
        """Delete every collection; the server refuses (AuthorizationError) unless it allows reset."""
        self._request("POST", "/reset")
        return True

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpClient({self._base_url!r})"


class RemoteCollection:
    """A collection on a vectordb server; same methods and results as vectordb's Collection."""

    def __init__(
        self,
        client: HttpClient,
        info: Dict[str, Any],
        embedding_function: Optional[Callable[[List[str]], Any]] = None,
    ) -> None:
        self._client = client
        self._embedding_function = embedding_function
        self._set_info(info)

    def _set_info(self, info: Dict[str, Any]) -> None:
        self._name: str = info["name"]
        self._id = uuid.UUID(info["id"])
        self._metadata: Optional[Dict[str, Any]] = info.get("metadata")
        self._configuration: Optional[Dict[str, Any]] = info.get("configuration")
        self._dimension: Optional[int] = info.get("dimension")

    @property
    def name(self) -> str:
        return self._name

    @property
    def id(self) -> uuid.UUID:
        return self._id

    @property
    def metadata(self) -> Optional[Dict[str, Any]]:
        return self._metadata

    @property
    def configuration(self) -> Optional[Dict[str, Any]]:
        return self._configuration

    def _dimension_now(self) -> int:
        if self._dimension is None:
            configured = (self._configuration or {}).get("dimension")
            self._dimension = int(configured) if configured else int(self.stats().get("dimension") or 0)
            if not self._dimension:
                self._dimension = None  # not fixed yet: ask again next time
                return 0
        return self._dimension

    def _call(self, method: str, suffix: str, body: Any = None) -> Any:
        return self._client._request(method, _collection_path(self._name, suffix), body)

    def _embed(self, texts: Any) -> Any:
        assert self._embedding_function is not None
        return self._embedding_function(_as_list(texts))

    # ---- reads

    def count(self) -> int:
        return int(self._call("GET", "/count")["count"])

    def get(
        self,
        ids: Optional[Union[str, Sequence[str]]] = None,
        where: Optional[Dict[str, Any]] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        where_document: Optional[Dict[str, Any]] = None,
        include: Optional[Sequence[str]] = None,
    ) -> Dict[str, Any]:
        body = _drop_none(ids=ids, where=where, limit=limit, offset=offset, where_document=where_document,
                          include=include)
        result = self._call("POST", "/get", body)
        if result.get("embeddings") is not None:
            result["embeddings"] = _float_matrix(result["embeddings"], self._dimension_now)
        return result

    def peek(self, limit: int = 10) -> Dict[str, Any]:
        """The first `limit` records with embeddings, metadatas and documents."""
        result = self._client._request("GET", _collection_path(self._name, "/peek"), params={"limit": limit})
        if result.get("embeddings") is not None:
            result["embeddings"] = _float_matrix(result["embeddings"], self._dimension_now)
        return result

    def query(
        self,
        query_embeddings: Any = None,
        query_texts: Optional[Union[str, Sequence[str]]] = None,
        query_images: Any = None,
        query_uris: Any = None,
        ids: Any = None,
        n_results: int = 10,
        where: Optional[Dict[str, Any]] = None,
        where_document: Optional[Dict[str, Any]] = None,
        include: Optional[Sequence[str]] = None,
        *,
        query_embedding: Any = None,
        n_probe: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Nearest records to each query: lists with one entry per query, by ascending distance."""
        if query_images is not None or query_uris is not None:
            raise _errors.InvalidArgumentError("query_images and query_uris are not supported: pass query_embeddings")
        if ids is not None:
            raise _errors.InvalidArgumentError("query(ids=...) is not supported: filter with where instead")
        if query_texts is not None and query_embeddings is None and query_embedding is None and self._embedding_function:
            query_embeddings, query_texts = self._embed(query_texts), None
        body = _drop_none(
            query_embeddings=query_embeddings,
            query_texts=query_texts,
            query_embedding=query_embedding,
            where=where,
            where_document=where_document,
            include=include,
            n_probe=n_probe,
        )
        body["n_results"] = n_results  # sent even when None: the server rejects it, as the embedded client does
        result = self._call("POST", "/query", body)
        if result.get("embeddings") is not None:
            result["embeddings"] = [_float_matrix(rows, self._dimension_now) for rows in result["embeddings"]]
        return result

    def stats(self) -> Dict[str, Any]:
        return self._call("GET", "/stats")

    # ---- writes

    def _records(self, ids: Any, embeddings: Any, metadatas: Any, documents: Any, uris: Any,
                 images: Any) -> Dict[str, Any]:
        if images is not None:
            raise _errors.InvalidArgumentError("images are not supported: pass embeddings")
        if embeddings is None and documents is not None and self._embedding_function is not None:
            embeddings = self._embed(documents)
        return _drop_none(ids=_as_list(ids), embeddings=embeddings, metadatas=metadatas, documents=documents,
                          uris=uris)

    def add(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
            uris: Any = None, images: Any = None) -> None:
        """Adds records; ids that already exist are skipped (the server logs a warning)."""
        self._call("POST", "/add", self._records(ids, embeddings, metadatas, documents, uris, images))

    def upsert(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
               uris: Any = None, images: Any = None) -> None:
        """Adds new ids and updates existing ones (metadata merged; a None value deletes a key)."""
        self._call("POST", "/upsert", self._records(ids, embeddings, metadatas, documents, uris, images))

    def update(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
               uris: Any = None, images: Any = None) -> None:
        """Updates existing ids (unknown ids are ignored); metadata is merged key by key."""
        self._call("PUT", "/update", self._records(ids, embeddings, metadatas, documents, uris, images))

    def delete(self, ids: Any = None, where: Optional[Dict[str, Any]] = None,
               where_document: Optional[Dict[str, Any]] = None, limit: Optional[int] = None) -> Dict[str, int]:
        """Deletes by ids and/or filter; returns {"deleted": n}."""
        if ids is None and where is None and where_document is None:
            raise _errors.InvalidArgumentError("delete needs ids, where or where_document")
        if limit is not None:
            raise _errors.InvalidArgumentError(
                "delete(limit=...) is not supported: select the ids with get(limit=...) first")
        result = self._call("DELETE", "/delete", _drop_none(ids=ids, where=where, where_document=where_document))
        return {"deleted": int(result["deleted"])}

    def modify(self, name: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
               configuration: Any = None) -> None:
        """Renames, replaces the metadata and/or sets the default n_probe ({"n_probe": N})."""
        info = self._call("PATCH", "", _drop_none(name=name, metadata=metadata, configuration=configuration))
        self._set_info(info)

    # ---- maintenance

    def begin_batch(self) -> None:
        """Defer index maintenance on the server until end_batch() (shared by all its clients)."""
        self._call("POST", "/batch/begin")

    def end_batch(self) -> None:
        self._call("POST", "/batch/end")

    @contextlib.contextmanager
    def batch(self) -> Iterator["RemoteCollection"]:
        """`with col.batch(): col.add(...)` -- begin_batch/end_batch around the block."""
        self.begin_batch()
        try:
            yield self
        finally:
            self.end_batch()

    def rebuild(self) -> dict:
        out = dict(self._call("POST", "/rebuild"))
        out.pop("ok", None)
        return out

    def checkpoint(self) -> None:
        self._call("POST", "/checkpoint")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteCollection) and other._id == self._id and other._client is self._client

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"RemoteCollection(name={self._name!r}, id={str(self._id)!r})"
