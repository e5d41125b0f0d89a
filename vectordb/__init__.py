"""vectordb: an embedded vector database with a ChromaDB-style API and a C engine.

>>> import vectordb
>>> client = vectordb.PersistentClient(path="./vector_db")
>>> col = client.get_or_create_collection("images", metadata={"hnsw:space": "cosine"})

Code written for chromadb 1.x runs with `import vectordb as chromadb`: the clients, Settings, the
type names and vectordb.errors carry chromadb's names (README: "Coming from ChromaDB").
"""
from typing import Any

from . import errors
from .client import ClientAPI, EphemeralClient, PersistentClient, __version__
from .collection import AsyncCollection, Collection
from .config import Settings
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
from .types import (
    ID,
    URI,
    CollectionMetadata,
    Document,
    Documents,
    Embedding,
    Embeddings,
    GetResult,
    IDs,
    Include,
    Metadata,
    Metadatas,
    QueryResult,
    UpdateCollectionMetadata,
    UpdateMetadata,
    URIs,
    Where,
    WhereDocument,
)
from .utils.embedding_functions import EmbeddingFunction

_HTTP_NAMES = ("HttpClient", "AsyncHttpClient", "AsyncHttpClientAPI")


def __getattr__(name: str) -> Any:
    # The HTTP clients pull in httpx: load them on first use only.
    if name in _HTTP_NAMES:
        from . import http_client

        return getattr(http_client, name)
    raise AttributeError(f"module 'vectordb' has no attribute {name!r}")


def Client(settings: Any = None, tenant: str = "default_tenant", database: str = "default_database") -> Any:
    """chromadb's Client(settings): a PersistentClient when settings.is_persistent (at
    settings.persist_directory), an HttpClient when settings.chroma_api_impl names chromadb's HTTP
    client, else the EphemeralClient."""
    settings = settings if settings is not None else Settings()
    impl = str(getattr(settings, "chroma_api_impl", None) or "")
    if impl.endswith("FastAPI"):
        from .http_client import HttpClient

        return HttpClient(host=getattr(settings, "chroma_server_host", None) or "localhost",
                          port=int(getattr(settings, "chroma_server_http_port", None) or 8080),
                          ssl=bool(getattr(settings, "chroma_server_ssl_enabled", False)),
                          headers=getattr(settings, "chroma_server_headers", None), settings=settings)
    if getattr(settings, "is_persistent", False):
        return PersistentClient(getattr(settings, "persist_directory", None), settings=settings)
    return EphemeralClient(settings=settings)


__all__ = [
    "EmbeddingFunction",
    "Client",
    "ClientAPI",
    "PersistentClient",
    "EphemeralClient",
    "HttpClient",
    "AsyncHttpClient",
    "AsyncHttpClientAPI",
    "Collection",
    "AsyncCollection",
    "Settings",
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
    "ID",
    "IDs",
    "Document",
    "Documents",
    "Embedding",
    "Embeddings",
    "Metadata",
    "Metadatas",
    "UpdateMetadata",
    "CollectionMetadata",
    "UpdateCollectionMetadata",
    "URI",
    "URIs",
    "Where",
    "WhereDocument",
    "Include",
    "QueryResult",
    "GetResult",
]
