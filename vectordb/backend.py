"""The seam between a Collection and the client that holds its records.

`Collection` (and `AsyncCollection`) keep what is the same for every client: the chroma-style
signatures, the embedding function, result defaults. Everything that depends on where the records
live goes through one `Backend`: the embedded clients implement it with validation and one engine
call (vectordb/records.py), `HttpClient` with one request to the server. A collection is named by
its id (a str holding a UUID) in every call.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

from vectordb import _core

# Write operations, as the engine numbers them.
OP_ADD, OP_UPSERT, OP_UPDATE, OP_DELETE = _core.OP_ADD, _core.OP_UPSERT, _core.OP_UPDATE, _core.OP_DELETE
GET_INCLUDE_DEFAULT = ["metadatas", "documents"]
QUERY_INCLUDE_DEFAULT = ["metadatas", "documents", "distances"]
# The maintenance actions Collection.begin_batch/end_batch/rebuild/checkpoint map to.
ACTIONS = ("begin_batch", "end_batch", "rebuild", "checkpoint")
# The embedded clients also take begin_logged_batch / end_logged_batch (the server's batches).


@runtime_checkable
class Backend(Protocol):
    """What a Collection needs from its client. Methods raise vectordb.errors classes."""

    def collection_info(self, cid: str) -> dict:
        """{"name", "metadata", "configuration"} of the collection (NotFoundError once deleted)."""
        ...

    def records_write(self, cid: str, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                      uris: Any) -> None:
        """add / upsert / update (op is OP_ADD, OP_UPSERT or OP_UPDATE), all validated before anything is written."""
        ...

    def records_delete(self, cid: str, ids: Any, where: Any, where_document: Any) -> int:
        """Deletes by ids and/or filter; the number of records deleted."""
        ...

    def records_get(self, cid: str, ids: Any, where: Any, limit: Any, offset: Any, where_document: Any,
                    include: Any) -> dict:
        """A GetResult."""
        ...

    def records_query(self, cid: str, query_embeddings: Any, ids: Any, n_results: Any, where: Any,
                      where_document: Any, include: Any, n_probe: Optional[int]) -> dict:
        """A QueryResult; `ids` restricts the search to those records."""
        ...

    def records_count(self, cid: str) -> int:
        ...

    def collection_modify(self, cid: str, name: Optional[str], metadata: Optional[dict], configuration: Any) -> None:
        ...

    def collection_stats(self, cid: str) -> dict:
        ...

    def collection_action(self, cid: str, action: str) -> Any:
        """One of ACTIONS; rebuild returns {"index", "n_clusters", "message"}, the others None."""
        ...
