"""vectordb: an embedded vector database with a ChromaDB-style API and a C engine.

>>> import vectordb
>>> client = vectordb.PersistentClient(path="./vector_db")
>>> col = client.get_or_create_collection("images", metadata={"hnsw:space": "cosine"})
"""
from . import errors
from .client import EphemeralClient, PersistentClient, __version__
from .collection import Collection
from .errors import (
    AuthorizationError,
    CollectionExistsError,
    CorruptionError,
    DuplicateIDError,
    InvalidArgumentError,
    InvalidDimensionError,
    LockedError,
    NotFoundError,
    ReadOnlyError,
    VectorDBError,
)


def __getattr__(name: str):
    # The HTTP client pulls in httpx: load it on first use only.
    if name in ("HttpClient", "AsyncHttpClient"):
        from . import http_client

        return getattr(http_client, name)
    raise AttributeError(f"module 'vectordb' has no attribute {name!r}")


__all__ = [
    "PersistentClient",
    "EphemeralClient",
    "HttpClient",
    "AsyncHttpClient",
    "Collection",
    "errors",
    "__version__",
    "VectorDBError",
    "InvalidArgumentError",
    "InvalidDimensionError",
    "DuplicateIDError",
    "NotFoundError",
    "CollectionExistsError",
    "AuthorizationError",
    "CorruptionError",
    "LockedError",
    "ReadOnlyError",
]
