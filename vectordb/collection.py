"""Collection: the ChromaDB-style API over one engine collection.

Every call validates its whole input first, then makes one engine call, then shapes the result.
"""
from __future__ import annotations

import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

from . import _core
from .errors import InvalidArgumentError
from .filters import compile_filter_ex
from .validation import (
    to_matrix,
    validate_collection_metadata,
    validate_documents,
    validate_ids,
    validate_include,
    validate_metadatas,
    validate_modify_configuration,
    validate_name,
    validate_nonneg_int,
    validate_positive_int,
)

if TYPE_CHECKING:
    from .client import _BaseClient

log = logging.getLogger("vectordb")

OP_ADD, OP_UPSERT, OP_UPDATE, OP_DELETE = 1, 2, 3, 4
INC_VECTORS, INC_METAS, INC_DOCS, INC_DISTANCES = 1, 2, 4, 8
_INCLUDE_BITS = {"embeddings": INC_VECTORS, "metadatas": INC_METAS, "documents": INC_DOCS, "distances": INC_DISTANCES}
GET_INCLUDE_DEFAULT = ["metadatas", "documents"]
QUERY_INCLUDE_DEFAULT = ["metadatas", "documents", "distances"]


def compile_filter(where: Any, where_document: Any) -> Optional["_core.Filter"]:
    """Validates the filters and compiles them into the engine's form (None when both are None)."""
    compiled = compile_filter_ex(where, where_document)
    if compiled is None:
        return None
    return _core.Filter(compiled.program, list(compiled.patterns))


def _include_mask(include: list[str]) -> int:
    mask = 0
    for item in include:
        mask |= _INCLUDE_BITS.get(item, 0)
    return mask


class Collection:
    """A named set of records (id, embedding, metadata, document).

    >>> col = client.create_collection("images", metadata={"hnsw:space": "cosine"})
    >>> col.add(ids=["a"], embeddings=[[0.1, 0.2, 0.3]], metadatas=[{"source": "camera"}])
    >>> col.query(query_embeddings=[[0.1, 0.2, 0.3]], n_results=1)["ids"]
    [['a']]
    """

    def __init__(self, client: "_BaseClient", collection_id: str, embedding_function: Any = None):
        self._client = client
        self._id = collection_id
        self._embedding_function = embedding_function

    # ---- identity ----
    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self._id)

    @property
    def name(self) -> str:
        return self._client._entry(self._id)["name"]

    @property
    def metadata(self) -> Optional[dict]:
        m = self._client._entry(self._id)["metadata"]
        return dict(m) if m is not None else None

    @property
    def configuration(self) -> dict:
        return dict(self._client._entry(self._id)["configuration"])

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, id={self._id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collection) and other._id == self._id and other._client is self._client

    def __hash__(self) -> int:
        return hash(self._id)

    def _call(self, method: str, *args: Any) -> Any:
        return self._client._engine_call(self._id, method, *args)

    def _write_call(self, *args: Any) -> Any:
        """An engine write, then any failure of the maintenance it triggered (training, checkpoint),
        which does not fail the write (it is durable already) but must not go unnoticed."""
        out = self._call(*args)
        warning = self._call("take_warning")
        if warning:
            log.warning("collection %r: maintenance after a write failed (the write itself succeeded): %s",
                        self.name, warning)
        return out

    # ---- writes ----
    def _embeddings_for(self, embeddings: Any, documents: Optional[list], n: int, required: bool) -> Optional[np.ndarray]:
        if embeddings is None:
            if documents is not None and self._embedding_function is not None:
                embeddings = self._embedding_function(documents)
            elif required:
                raise InvalidArgumentError(
                    "embeddings are required: pass embeddings=..., or documents with an embedding_function on the collection"
                )
            else:
                return None
        m = to_matrix(embeddings)
        if m.shape[0] != n:
            raise InvalidArgumentError(f"got {m.shape[0]} embeddings for {n} ids: expected one per id")
        return m  # the engine checks the dimension (InvalidDimensionError) before writing

    def _write(self, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
               uris: Any) -> tuple[list[str], bytes]:
        """Validates everything, then one engine write; returns the ids and each one's status."""
        if uris is not None:
            raise InvalidArgumentError("uris are not supported by vectordb: store them in metadata")
        ids = validate_ids(ids)
        n = len(ids)
        docs = validate_documents(documents, n)
        metas = validate_metadatas(metadatas, n, allow_none_values=op != OP_ADD)
        vectors = self._embeddings_for(embeddings, docs, n, required=op == OP_ADD)
        return ids, self._write_call("write", op, ids, vectors, metas, docs)

    def add(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
            uris: Any = None, images: Any = None) -> None:
        """Adds records; ids that already exist are skipped with a logged warning (as chromadb, which
        skips them silently).

        >>> col.add(ids=["a", "b"], embeddings=[[1, 2], [3, 4]], documents=["first", "second"])
        """
        ids, status = self._write(OP_ADD, ids, embeddings, metadatas, documents, uris)
        if status.count(0):
            skipped = [i for i, s in zip(ids, status) if not s]
            log.warning("add to collection %r skipped %d existing id(s): %s", self.name, len(skipped),
                        ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))

    def upsert(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
               uris: Any = None, images: Any = None) -> None:
        """Adds new ids and updates existing ones (metadata merged; a None value deletes a key)."""
        self._write(OP_UPSERT, ids, embeddings, metadatas, documents, uris)

    def update(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None,
               uris: Any = None, images: Any = None) -> None:
        """Updates existing ids (unknown ids are ignored); metadata is merged key by key."""
        self._write(OP_UPDATE, ids, embeddings, metadatas, documents, uris)

    def delete(self, ids: Any = None, where: Any = None, where_document: Any = None,
               limit: Optional[int] = None) -> dict:
        """Deletes by ids and/or filter; returns {"deleted": n}.

        >>> col.delete(where={"source": {"$ne": "upload"}})
        {'deleted': 3}
        """
        if ids is None and where is None and where_document is None:
            raise InvalidArgumentError("delete needs ids, where or where_document")
        if limit is not None:
            raise InvalidArgumentError("delete(limit=...) is not supported: select the ids with get(limit=...) first")
        id_list = validate_ids(ids) if ids is not None else None
        flt = compile_filter(where, where_document)
        if flt is None:
            status = self._write_call("write", OP_DELETE, id_list, None, None, None)
            return {"deleted": status.count(1)}
        if id_list is None:
            return {"deleted": int(self._write_call("delete_where", flt))}
        matched = self._call("get", id_list, flt, 0, -1, 0)[0]
        if not matched:
            return {"deleted": 0}
        status = self._write_call("write", OP_DELETE, matched, None, None, None)
        return {"deleted": status.count(1)}

    # ---- reads ----
    def count(self) -> int:
        """Number of records."""
        return int(self._call("count"))

    def get(self, ids: Any = None, where: Any = None, limit: Optional[int] = None, offset: Optional[int] = None,
            where_document: Any = None, include: Any = GET_INCLUDE_DEFAULT) -> dict:
        """Records by id (in the order asked; unknown ids left out) and/or filter, in insertion order.

        >>> col.get(where={"source": "camera"}, limit=10, include=["metadatas"])["ids"]
        ['a']
        """
        include = validate_include(include, ("documents", "embeddings", "metadatas", "uris", "data"), "get")
        id_list = validate_ids(ids) if ids is not None else None
        limit = validate_nonneg_int(limit, "limit")
        offset = validate_nonneg_int(offset, "offset")
        flt = compile_filter(where, where_document)
        rids, vecs, metas, docs, _, _ = self._call(
            "get", id_list, flt, offset or 0, -1 if limit is None else limit, _include_mask(include)
        )
        return {
            "ids": rids,
            "embeddings": vecs if "embeddings" in include else None,
            "documents": docs if "documents" in include else None,
            "uris": [None] * len(rids) if "uris" in include else None,
            "data": None,
            "metadatas": metas if "metadatas" in include else None,
            "included": include,
        }

    def peek(self, limit: int = 10) -> dict:
        """The first `limit` records with embeddings, metadatas and documents."""
        return self.get(limit=validate_positive_int(limit, "limit"), include=["embeddings", "metadatas", "documents"])

    def query(self, query_embeddings: Any = None, query_texts: Any = None, query_images: Any = None,
              query_uris: Any = None, ids: Any = None, n_results: int = 10, where: Any = None,
              where_document: Any = None, include: Any = QUERY_INCLUDE_DEFAULT, *, query_embedding: Any = None,
              n_probe: Optional[int] = None) -> dict:
        """Nearest records to each query, by ascending distance.

        >>> col.query(query_embeddings=[[1, 2]], n_results=2, where={"source": "camera"})["ids"]
        [['a', 'b']]
        """
        if query_embedding is not None:
            if query_embeddings is not None:
                raise InvalidArgumentError("pass query_embedding or query_embeddings, not both")
            q = to_matrix(query_embedding, "query_embeddings")
            if q.shape[0] != 1:
                raise InvalidArgumentError("query_embedding takes one vector; use query_embeddings for several")
        elif query_embeddings is not None:
            q = to_matrix(query_embeddings, "query_embeddings")
        elif query_texts is not None:
            if self._embedding_function is None:
                raise InvalidArgumentError("query_texts needs an embedding_function on the collection")
            texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
            q = to_matrix(self._embedding_function(texts), "query_embeddings")
        else:
            raise InvalidArgumentError("query needs query_embeddings (or query_embedding, or query_texts)")
        if ids is not None:
            raise InvalidArgumentError("query(ids=...) is not supported: filter with where instead")
        k = validate_positive_int(n_results, "n_results")
        n_probe = validate_positive_int(n_probe, "n_probe", allow_none=True)
        include = validate_include(include, ("documents", "embeddings", "metadatas", "distances", "uris", "data"), "query")
        flt = compile_filter(where, where_document)
        rids, vecs, metas, docs, dists, counts = self._call("query", q, k, flt, _include_mask(include), n_probe or 0)
        return _shape_query(rids, vecs, metas, docs, dists, counts, include)

    # ---- index and storage ----
    def modify(self, name: Optional[str] = None, metadata: Optional[dict] = None, configuration: Any = None) -> None:
        """Renames, replaces the metadata (the distance space cannot change) and/or sets the n_probe
        queries use when they give none (None: back to the default rule).

        >>> col.modify(configuration={"n_probe": 32})
        """
        if name is not None:
            validate_name(name)
        if metadata is not None:
            metadata = validate_collection_metadata(metadata)
            space = metadata.get("hnsw:space") if metadata else None
            if space is not None and space != self.configuration["space"]:
                raise InvalidArgumentError("changing the distance space of an existing collection is not supported")
        changes = validate_modify_configuration(configuration) if configuration is not None else {}
        self._client._modify(self._id, name, metadata, changes)

    def stats(self) -> dict:
        """What the collection and its index look like: count, dimension, metric, index ("flat" or
        "ivf"), trained, n_clusters, n_probe, list sizes, vectors added since training, bytes on disk
        and in memory.

        >>> col.stats()["index"]
        'ivf'
        """
        s = dict(self._call("stats"))
        s["name"] = self.name
        s["use_ivf"] = bool(self.configuration.get("use_ivf"))
        return s

    def checkpoint(self) -> None:
        """Writes a new snapshot now and truncates the log (also happens automatically)."""
        self._call("checkpoint")

    def begin_batch(self) -> None:
        """Enters bulk-import mode: the IVF index does not retrain until the matching end_batch()."""
        self._client._pin(self._id, +1)
        try:
            self._call("batch", True)
        except BaseException:
            self._client._pin(self._id, -1)
            raise

    def end_batch(self) -> None:
        """Leaves bulk-import mode; the index trains or retrains once if the collection grew enough."""
        try:
            self._write_call("batch", False)
        finally:
            self._client._pin(self._id, -1)

    @contextlib.contextmanager
    def batch(self) -> Iterator["Collection"]:
        """Bulk import: `with col.batch(): col.add(...)` trains the index once, at the end."""
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
        self._call("rebuild")
        note = self._call("take_warning")
        st = self._call("stats")
        if note:
            log.info("collection %r: %s", self.name, note)
        else:
            note = f"trained {st['n_clusters']} IVF lists on {st['count']} vectors"
        return {"index": st["index"], "n_clusters": st["n_clusters"], "message": note}


def _shape_query(rids: list, vecs: Any, metas: Any, docs: Any, dists: Any, counts: list, include: list) -> dict:
    out_ids, out_v, out_m, out_d, out_dist = [], [], [], [], []
    pos = 0
    for c in counts:
        out_ids.append(rids[pos:pos + c])
        if vecs is not None:
            out_v.append(vecs[pos:pos + c])
        if metas is not None:
            out_m.append(metas[pos:pos + c])
        if docs is not None:
            out_d.append(docs[pos:pos + c])
        if dists is not None:
            out_dist.append(dists[pos:pos + c].tolist())
        pos += c
    return {
        "ids": out_ids,
        "embeddings": out_v if "embeddings" in include else None,
        "documents": out_d if "documents" in include else None,
        "uris": [[None] * len(x) for x in out_ids] if "uris" in include else None,
        "data": None,
        "metadatas": out_m if "metadatas" in include else None,
        "distances": out_dist if "distances" in include else None,
        "included": include,
    }
