"""Collection: the ChromaDB-style API over one collection of any client (through the Backend seam).

What is the same for every client lives here (signatures, embedding functions, the query-vector
forms); what depends on where the records are lives behind `Backend` (vectordb/backend.py).
"""
from __future__ import annotations

import contextlib
import uuid
from typing import Any, Iterator, Optional

from .backend import GET_INCLUDE_DEFAULT, OP_ADD, OP_UPDATE, OP_UPSERT, QUERY_INCLUDE_DEFAULT, Backend
from .errors import InvalidArgumentError
from .utils.embedding_functions import (
    NEVER_EMBED,
    DefaultEmbeddingFunction,
    EmbeddingResolver,
    check_modify,
    embedding_function_config,
    validate_persisted_config,
)
from .validation import to_matrix, validate_count

_DEFAULT_EF = DefaultEmbeddingFunction()

_NO_LOADER = "loading from uris needs a data_loader on the collection (create_collection(..., data_loader=...))"


def _persisted(col: Any) -> Optional[dict]:
    """The embedding function the collection was created with, as persisted ({"name", "type", "config"})."""
    configuration = col._client.collection_info(col._id).get("configuration")
    ef = configuration.get("embedding_function") if isinstance(configuration, dict) else None
    return ef if isinstance(ef, dict) else None


def _embed(col: Any, inputs: Any, is_query: bool, what: str) -> Any:
    """`inputs` through the collection's embedding function, its output checked (one finite vector each)."""
    return col._embedder.embed(_persisted(col), inputs, is_query, what)


def embed_records(col: Any, embeddings: Any, documents: Any, images: Any, uris: Any) -> Any:
    """The embeddings to write: those given, else the embedding function's of the documents, the
    images, or the data the data loader loads from the uris (chromadb's order)."""
    if embeddings is not None or col.embedding_function is None:
        if embeddings is None and images is not None:
            raise InvalidArgumentError("images need an embedding_function on the collection (or pass embeddings)")
        return embeddings
    if documents is not None:
        docs = [documents] if isinstance(documents, str) else documents
        if not isinstance(docs, (list, tuple)):
            raise InvalidArgumentError(f"documents must be a list of str, got {type(documents).__name__}")
        for i, d in enumerate(docs):
            if not isinstance(d, str):
                raise InvalidArgumentError(f"document {i} is {type(d).__name__}: documents to embed must be str")
        return _embed(col, list(docs), False, "documents")
    if images is not None:
        return _embed(col, list(images), False, "images")
    if uris is not None and col._data_loader is not None:
        return _embed(col, col._data_loader([uris] if isinstance(uris, str) else list(uris)), False, "uris")
    return None


def query_vectors(col: Any, query_embeddings: Any, query_texts: Any, query_images: Any, query_uris: Any,
                  query_embedding: Any) -> Any:
    """The query vectors from whichever form was given (one of them, as chromadb requires)."""
    if query_images is not None:
        return _embed(col, list(query_images), True, "query_images")
    if query_uris is not None:
        if col._data_loader is None:
            raise InvalidArgumentError(_NO_LOADER)
        uris = [query_uris] if isinstance(query_uris, str) else list(query_uris)
        return _embed(col, col._data_loader(uris), True, "query_uris")
    if query_embedding is not None:
        if query_embeddings is not None:
            raise InvalidArgumentError("pass query_embedding or query_embeddings, not both")
        q = to_matrix(query_embedding, "query_embeddings")
        if q.shape[0] != 1:
            raise InvalidArgumentError("query_embedding takes one vector; use query_embeddings for several")
        return q
    if query_embeddings is not None:
        return query_embeddings
    if query_texts is not None:
        if col.embedding_function is None:
            raise InvalidArgumentError("query_texts needs an embedding_function on the collection")
        return _embed(col, query_texts, True, "query_texts")
    raise InvalidArgumentError("query needs query_embeddings (or query_embedding, or query_texts)")


def include_for_data(include: Any, data_loader: Any) -> Any:
    """The include to ask the client for: "data" is loaded here from the uris."""
    if not isinstance(include, (list, tuple)) or "data" not in include:
        return include
    if data_loader is None:
        raise InvalidArgumentError("include 'data' needs a data_loader on the collection: " + _NO_LOADER)
    return [i for i in include if i != "data"] + ([] if "uris" in include else ["uris"])


def load_data(result: dict, include: Any, data_loader: Any, per_query: bool) -> dict:
    """Fills result["data"] from the uris when "data" was asked for."""
    if not isinstance(include, (list, tuple)) or "data" not in include:
        return result
    uris = result["uris"]
    result["data"] = [data_loader(u) for u in uris] if per_query else data_loader(uris)
    if "uris" not in include:
        result["uris"] = None
    result["included"] = list(include)
    return result


def take_embedding_function(col: Any, configuration: Any) -> Any:
    """modify(configuration={"embedding_function": ef}): the configuration the client persists (the
    function in its JSON form, checked against the persisted one), and this handle embeds with `ef`
    from now on (once the client has applied the change)."""
    if not (isinstance(configuration, dict) and "embedding_function" in configuration):
        return configuration, None
    configuration = dict(configuration)
    ef = configuration["embedding_function"]
    if isinstance(ef, dict):
        new = validate_persisted_config(ef, "configuration['embedding_function']")
    elif ef is None or not callable(ef):
        raise InvalidArgumentError("configuration['embedding_function'] must be an embedding function "
                                   f"(or its JSON form), got {type(ef).__name__}")
    else:
        new = embedding_function_config(ef)
    check_modify(_persisted(col), new)
    configuration["embedding_function"] = new
    return configuration, (None if isinstance(ef, dict) else ef)


def _swap_embedding_function(col: Any, ef: Any) -> None:
    if ef is not None:
        col._embedding_function = ef
        col._embedder = EmbeddingResolver(ef)


def check_delete_limit(limit: Any) -> None:
    if limit is not None:
        raise InvalidArgumentError("delete(limit=...) is not supported: select the ids with get(limit=...) first")


class Collection:
    """A named set of records (id, embedding, metadata, document).

    >>> col = client.create_collection("images", metadata={"hnsw:space": "cosine"})
    >>> col.add(ids=["a"], embeddings=[[0.1, 0.2, 0.3]], metadatas=[{"source": "camera"}])
    >>> col.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=1)["ids"]
    [['a']]
    """

    def __init__(self, client: Backend, collection_id: str, embedding_function: Any = _DEFAULT_EF,
                 data_loader: Any = None):
        self._client = client
        self._id = collection_id
        self._embedding_function = embedding_function  # as passed (None: never embed)
        self._embedder = EmbeddingResolver(embedding_function)
        self._data_loader = data_loader

    # ---- identity ----
    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self._id)

    @property
    def name(self) -> str:
        return self._client.collection_info(self._id)["name"]

    @property
    def metadata(self) -> Optional[dict]:
        return self._client.collection_info(self._id)["metadata"]

    @property
    def configuration(self) -> dict:
        """As chromadb 1.x: {"hnsw": {"space": ..., ...}, "spann": None, "embedding_function": ...},
        with vectordb's own keys alongside (dimension, use_ivf, n_clusters, n_probe)."""
        configuration = self._client.collection_info(self._id)["configuration"]
        return {**configuration, "embedding_function": self.embedding_function}

    @property
    def configuration_json(self) -> dict:
        """configuration with the embedding function as JSON: {"name", "type", "config"} as persisted with
        the collection (or, for one persisted without, this handle's)."""
        configuration = self._client.collection_info(self._id)["configuration"]
        persisted = configuration.get("embedding_function")
        if persisted is None and self._embedding_function not in (None, NEVER_EMBED):
            persisted = embedding_function_config(self._embedding_function)
        return {**configuration, "embedding_function": persisted}

    @property
    def data_loader(self) -> Any:
        return self._data_loader

    @property
    def embedding_function(self) -> Any:
        """The embedding function documents and query_texts go through: the one passed, unless that is the
        default: then the one the collection was created with (re-created from its persisted name and
        config). None: none."""
        return self._embedder.function(_persisted(self))

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, id={self._id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collection) and other._id == self._id and other._client is self._client

    def __hash__(self) -> int:
        return hash(self._id)

    # ---- writes ----
    def add(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
            uris: Any = None, images: Any = None) -> None:
        """Adds records; ids that already exist are skipped with a logged warning (as chromadb, which
        skips them silently).

        >>> col.add(ids=["a", "b"], embeddings=[[1, 2], [3, 4]], documents=["first", "second"])
        """
        embeddings = embed_records(self, embeddings, documents, images, uris)
        self._client.records_write(self._id, OP_ADD, ids, embeddings, metadatas, documents, uris)

    def upsert(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
               uris: Any = None, images: Any = None) -> None:
        """Adds new ids and updates existing ones (metadata merged; a None value deletes a key)."""
        embeddings = embed_records(self, embeddings, documents, images, uris)
        self._client.records_write(self._id, OP_UPSERT, ids, embeddings, metadatas, documents, uris)

    def update(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
               uris: Any = None, images: Any = None) -> None:
        """Updates existing ids (unknown ids are ignored); metadata is merged key by key."""
        embeddings = embed_records(self, embeddings, documents, images, uris)
        self._client.records_write(self._id, OP_UPDATE, ids, embeddings, metadatas, documents, uris)

    def delete(self, ids: Any = None, where: Any = None, where_document: Any = None,
               limit: Optional[int] = None) -> dict:
        """Deletes by ids and/or filter; returns {"deleted": n}.

        >>> col.delete(where={"source": {"$ne": "upload"}})
        {'deleted': 3}
        """
        check_delete_limit(limit)
        return {"deleted": self._client.records_delete(self._id, ids, where, where_document)}

    # ---- reads ----
    def count(self) -> int:
        """Number of records."""
        return self._client.records_count(self._id)

    def get(self, ids: Any = None, where: Any = None, limit: Optional[int] = None, offset: Optional[int] = None,
            where_document: Any = None, include: Any = GET_INCLUDE_DEFAULT) -> dict:
        """Records by id (in the order asked; unknown ids left out) and/or filter, in insertion order.

        >>> col.get(where={"source": "camera"}, limit=10, include=["metadatas"])["ids"]
        ['a']
        """
        result = self._client.records_get(self._id, ids, where, limit, offset, where_document,
                                          include_for_data(include, self._data_loader))
        return load_data(result, include, self._data_loader, per_query=False)

    def peek(self, limit: int = 10) -> dict:
        """The first `limit` records with embeddings, metadatas and documents."""
        return self.get(limit=validate_count(limit, "limit", 1), include=["embeddings", "metadatas", "documents"])

    def query(self, query_embeddings: Any = None, query_texts: Any = None, query_images: Any = None,
              query_uris: Any = None, ids: Any = None, n_results: int = 10, where: Any = None,
              where_document: Any = None, include: Any = QUERY_INCLUDE_DEFAULT, *, query_embedding: Any = None,
              n_probe: Optional[int] = None) -> dict:
        """Nearest records to each query, by ascending distance; `ids` restricts the search to those records.

        >>> col.query(query_embeddings=[[1, 2]], n_results=2, where={"source": "camera"})["ids"]
        [['a', 'b']]
        """
        q = query_vectors(self, query_embeddings, query_texts, query_images,
                          query_uris, query_embedding)
        result = self._client.records_query(self._id, q, ids, n_results, where, where_document,
                                            include_for_data(include, self._data_loader), n_probe)
        return load_data(result, include, self._data_loader, per_query=True)

    # ---- index and storage ----
    def modify(self, name: Optional[str] = None, metadata: Optional[dict] = None, configuration: Any = None) -> None:
        """Renames, replaces the metadata (the distance space cannot change), sets the n_probe
        queries use when they give none (None: back to the default rule) and/or the embedding
        function (persisted; one of another name than the persisted one is an error, as in chromadb).

        >>> col.modify(configuration={"n_probe": 32})
        """
        configuration, ef = take_embedding_function(self, configuration)
        self._client.collection_modify(self._id, name, metadata, configuration)
        _swap_embedding_function(self, ef)

    def stats(self) -> dict:
        """What the collection and its index look like: count, dimension, metric, index ("flat" or
        "ivf"), trained, n_clusters, n_probe, list sizes, vectors added since training, bytes on disk
        and in memory.

        >>> col.stats()["index"]
        'ivf'
        """
        return self._client.collection_stats(self._id)

    def checkpoint(self) -> None:
        """Writes a new snapshot now and truncates the log (also happens automatically)."""
        self._client.collection_action(self._id, "checkpoint")

    def begin_batch(self, *, log_each_write: bool = False) -> None:
        """Enters bulk-import mode: the IVF index does not retrain until the matching end_batch(), and
        the writes until then become durable together at end_batch() (a crash before it leaves the
        collection as it was before begin_batch()): a small batch as one log record, a large one
        written once, in a checkpoint. The batch holds every write to the collection, from any
        thread, until it ends. log_each_write=True (embedded clients; the server's batches use it)
        only defers training: each write stays durable as it returns."""
        self._client.collection_action(self._id, "begin_logged_batch" if log_each_write else "begin_batch")

    def end_batch(self, *, log_each_write: bool = False) -> None:
        """Leaves bulk-import mode: the index trains or retrains once if the collection grew enough,
        and the batch's writes are made durable. log_each_write ends a batch begun with it."""
        self._client.collection_action(self._id, "end_logged_batch" if log_each_write else "end_batch")

    @contextlib.contextmanager
    def batch(self) -> Iterator["Collection"]:
        """Bulk import: `with col.batch(): col.add(...)` trains the index once, at the end, where the
        batch's writes become durable together, whole or not at all: appended to the log as one
        record when the batch is small beside the collection (up to a quarter of its bytes on disk, or
        1 MiB), else written once, by a checkpoint (a bulk load does not write each vector twice)."""
        self.begin_batch()
        try:
            yield self
        finally:
            self.end_batch()

    def rebuild(self) -> dict:
        """Retrains the IVF index now (InvalidArgumentError for a collection created without use_ivf).
        With fewer vectors than lists it changes nothing, as the automatic rule does, and says so.

        >>> col.rebuild()
        {'index': 'ivf', 'n_clusters': 35, 'message': 'trained 35 IVF lists on 1200 vectors'}
        """
        return self._client.collection_action(self._id, "rebuild")


class AsyncCollection:
    """A collection of an AsyncHttpClient: Collection's methods as coroutines (as chromadb's
    AsyncCollection); name, id, metadata and configuration are plain properties.

    >>> col = await client.get_or_create_collection("images")
    >>> await col.add(ids=["a"], embeddings=[[0.1, 0.2, 0.3]])
    """

    def __init__(self, client: Any, collection_id: str, embedding_function: Any = _DEFAULT_EF, data_loader: Any = None):
        self._client = client
        self._id = collection_id
        self._embedding_function = embedding_function  # as passed (None: never embed)
        self._embedder = EmbeddingResolver(embedding_function)
        self._data_loader = data_loader

    id = Collection.id
    name = Collection.name
    metadata = Collection.metadata
    configuration = Collection.configuration
    configuration_json = Collection.configuration_json
    embedding_function = Collection.embedding_function
    data_loader = Collection.data_loader
    __hash__ = Collection.__hash__

    def __repr__(self) -> str:
        return f"AsyncCollection(name={self.name!r}, id={self._id!r})"  # type: ignore[misc]  # Collection.name reads only _client and _id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncCollection) and other._id == self._id and other._client is self._client

    async def add(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
                  uris: Any = None, images: Any = None) -> None:
        embeddings = embed_records(self, embeddings, documents, images, uris)
        await self._client.records_write(self._id, OP_ADD, ids, embeddings, metadatas, documents, uris)

    async def upsert(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
                     uris: Any = None, images: Any = None) -> None:
        embeddings = embed_records(self, embeddings, documents, images, uris)
        await self._client.records_write(self._id, OP_UPSERT, ids, embeddings, metadatas, documents, uris)

    async def update(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
                     uris: Any = None, images: Any = None) -> None:
        embeddings = embed_records(self, embeddings, documents, images, uris)
        await self._client.records_write(self._id, OP_UPDATE, ids, embeddings, metadatas, documents, uris)

    async def delete(self, ids: Any = None, where: Any = None, where_document: Any = None,
                     limit: Optional[int] = None) -> dict:
        check_delete_limit(limit)
        return {"deleted": await self._client.records_delete(self._id, ids, where, where_document)}

    async def count(self) -> int:
        return await self._client.records_count(self._id)

    async def get(self, ids: Any = None, where: Any = None, limit: Optional[int] = None, offset: Optional[int] = None,
                  where_document: Any = None, include: Any = GET_INCLUDE_DEFAULT) -> dict:
        result = await self._client.records_get(self._id, ids, where, limit, offset, where_document,
                                                include_for_data(include, self._data_loader))
        return load_data(result, include, self._data_loader, per_query=False)

    async def peek(self, limit: int = 10) -> dict:
        return await self.get(limit=validate_count(limit, "limit", 1),
                              include=["embeddings", "metadatas", "documents"])

    async def query(self, query_embeddings: Any = None, query_texts: Any = None, query_images: Any = None,
                    query_uris: Any = None, ids: Any = None, n_results: int = 10, where: Any = None,
                    where_document: Any = None, include: Any = QUERY_INCLUDE_DEFAULT, *, query_embedding: Any = None,
                    n_probe: Optional[int] = None) -> dict:
        q = query_vectors(self, query_embeddings, query_texts, query_images,
                          query_uris, query_embedding)
        result = await self._client.records_query(self._id, q, ids, n_results, where, where_document,
                                                  include_for_data(include, self._data_loader), n_probe)
        return load_data(result, include, self._data_loader, per_query=True)

    async def modify(self, name: Optional[str] = None, metadata: Optional[dict] = None,
                     configuration: Any = None) -> None:
        configuration, ef = take_embedding_function(self, configuration)
        await self._client.collection_modify(self._id, name, metadata, configuration)
        _swap_embedding_function(self, ef)

    async def stats(self) -> dict:
        return await self._client.collection_stats(self._id)

    async def checkpoint(self) -> None:
        await self._client.collection_action(self._id, "checkpoint")

    async def begin_batch(self) -> None:
        await self._client.collection_action(self._id, "begin_batch")

    async def end_batch(self) -> None:
        await self._client.collection_action(self._id, "end_batch")

    async def rebuild(self) -> dict:
        return await self._client.collection_action(self._id, "rebuild")
