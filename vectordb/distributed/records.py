"""RayClient's side of the Backend seam: validate a whole request here, then scatter it to the shards
and merge their answers (routing.py). Mixed into RayClient, which provides the shard map (_entry,
_save, _lock), the transport (_read, _write) and sequence numbers (_next_seqs)."""
from __future__ import annotations

from typing import Any, Optional

from ..backend import OP_ADD, OP_UPDATE, OP_UPSERT
from ..configuration import validate_modify_args
from ..errors import InvalidArgumentError, InvalidDimensionError
from ..filters import validate_filters
from ..validation import (
    to_matrix,
    validate_documents,
    validate_ids,
    validate_include,
    validate_metadatas,
    validate_nonneg_int,
    validate_positive_int,
    validate_uris,
)
from .routing import SEQ_KEY, merge_get_by_ids, merge_get_ordered, merge_query, split

_OP_NAMES = {OP_ADD: "add", OP_UPSERT: "upsert", OP_UPDATE: "update"}
Calls = dict[int, tuple[str, tuple]]


class ShardedRecords:
    _entry: Any
    _find: Any
    _save: Any
    _lock: Any
    _read: Any
    _write: Any
    _next_seqs: Any
    _check_open: Any
    _modify: Any

    def _n_shards(self, cid: str) -> int:
        return len(self._entry(cid)["shards"])

    def _everywhere(self, cid: str, method: str, *args: Any) -> Calls:
        return {s: (method, args) for s in range(self._n_shards(cid))}

    def collection_info(self, cid: str) -> dict:
        e = self._entry(cid)
        return {"name": e["name"], "metadata": dict(e["metadata"]) if e["metadata"] is not None else None,
                "configuration": dict(e["configuration"])}

    # ---- writes ----
    def _dimension(self, cid: str) -> Optional[int]:
        """The collection's dimension: configured, learned, or asked of the shards (then remembered).
        Checked here because one node's engine refuses a wrong dimension before writing anything, and a
        shard refusing after another shard wrote would leave half a write."""
        entry = self._entry(cid)
        if entry.get("dimension"):
            return int(entry["dimension"])
        dims = {d for d in self._read(cid, self._everywhere(cid, "dimension")).values() if d}
        if not dims:
            return None
        with self._lock:
            self._save(cid, {**self._entry(cid), "dimension": min(dims)})
        return min(dims)

    def records_write(self, cid: str, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                      uris: Any) -> None:
        """Validates the whole request, then one write per shard touched, in parallel."""
        name = _OP_NAMES[op]
        ids = validate_ids(ids)
        n = len(ids)
        docs = validate_documents(documents, n)
        uri_list = validate_uris(uris, n)
        metas = validate_metadatas(metadatas, n, allow_none_values=op != OP_ADD)
        for i, m in enumerate(metas or ()):
            if m and SEQ_KEY in m:
                raise InvalidArgumentError(f"metadata {i}: key {SEQ_KEY!r} is reserved by sharded collections")
        vectors = None
        if embeddings is not None:
            vectors = to_matrix(embeddings)
            if vectors.shape[0] != n:
                raise InvalidArgumentError(f"got {vectors.shape[0]} embeddings for {n} ids: expected one per id")
            dim = self._dimension(cid)
            if dim is not None and vectors.shape[1] != dim:
                raise InvalidDimensionError(
                    f"Collection expecting embedding with dimension of {dim}, got {vectors.shape[1]}")
        elif op == OP_ADD:
            raise InvalidArgumentError(
                "embeddings are required: pass embeddings=..., "
                "or documents with an embedding_function on the collection")
        parts = split(ids, self._n_shards(cid))
        if op == OP_UPSERT and vectors is None:
            # One node refuses the whole upsert if a new id has no embedding: check before any shard writes.
            asked: Calls = {s: ("existing", ([ids[i] for i in idx],)) for s, idx in enumerate(parts) if idx}
            found = set().union(*self._read(cid, asked).values())
            new = [x for x in ids if x not in found]
            if new:
                raise InvalidArgumentError(f"upsert of new id {new[0]!r} needs an embedding")
        base = self._next_seqs(n) if op != OP_UPDATE else 0
        calls: Calls = {}
        for s, idx in enumerate(parts):
            if idx:
                calls[s] = ("write", (
                    name, [ids[i] for i in idx],
                    vectors[idx] if vectors is not None else None,
                    [metas[i] for i in idx] if metas is not None else None,
                    [docs[i] for i in idx] if docs is not None else None,
                    [base + i for i in idx] if op != OP_UPDATE else None,
                    [uri_list[i] for i in idx] if uri_list is not None else None))
        self._write(cid, calls, f"{name} of {n} record(s)")

    def records_delete(self, cid: str, ids: Any, where: Any, where_document: Any) -> int:
        """By ids (sent to their shards) and/or filter (evaluated in every shard)."""
        if ids is None and where is None and where_document is None:
            raise InvalidArgumentError("delete needs ids, where or where_document")
        id_list = validate_ids(ids) if ids is not None else None
        validate_filters(where, where_document)
        if id_list is None:
            calls = self._everywhere(cid, "delete", None, where, where_document)
        else:
            calls = {s: ("delete", ([id_list[i] for i in idx], where, where_document))
                     for s, idx in enumerate(split(id_list, self._n_shards(cid))) if idx}
        return sum(self._write(cid, calls, "delete").values())

    # ---- reads ----
    def records_count(self, cid: str) -> int:
        return sum(self._read(cid, self._everywhere(cid, "count")).values())

    def records_get(self, cid: str, ids: Any, where: Any, limit: Any, offset: Any, where_document: Any,
                    include: Any) -> dict:
        """By ids: from the shards owning them, in the order asked. Otherwise in insertion order over all
        shards: each sends its first offset+limit matches, and the merge by sequence keeps the right ones."""
        include = validate_include(include, ("documents", "embeddings", "metadatas", "uris", "data"), "get")
        id_list = validate_ids(ids) if ids is not None else None
        limit = validate_nonneg_int(limit, "limit")
        offset = validate_nonneg_int(offset, "offset") or 0
        validate_filters(where, where_document)
        n = self._n_shards(cid)
        asked = [x for x in include if x in ("documents", "embeddings", "uris")] + ["metadatas"]
        if id_list is not None:
            calls: Calls = {s: ("get", ([id_list[i] for i in idx], where, where_document, None, asked))
                            for s, idx in enumerate(split(id_list, n)) if idx}
            got = self._read(cid, calls)
            return merge_get_by_ids([got.get(s) for s in range(n)], id_list, offset, limit, include)
        first = None if limit is None else offset + limit
        got = self._read(cid, self._everywhere(cid, "get", None, where, where_document, first, asked))
        return merge_get_ordered([got[s] for s in range(n)], offset, limit, include)

    def records_query(self, cid: str, query_embeddings: Any, ids: Any, n_results: Any, where: Any,
                      where_document: Any, include: Any, n_probe: Optional[int]) -> dict:
        """Every shard filters and searches its part; the n_results nearest of all are kept, ordered by
        distance and then insertion order: exactly one node's answer."""
        q = to_matrix(query_embeddings, "query_embeddings")
        id_list = validate_ids(ids) if ids is not None else None
        k = validate_positive_int(n_results, "n_results")
        n_probe = validate_positive_int(n_probe, "n_probe", allow_none=True)
        include = validate_include(include, ("documents", "embeddings", "metadatas", "distances", "uris", "data"),
                                   "query")
        validate_filters(where, where_document)
        asked = [x for x in include if x in ("documents", "embeddings", "uris")] + ["metadatas", "distances"]
        if id_list is None:
            calls = self._everywhere(cid, "query", q, k, where, where_document, asked, n_probe)
        else:  # only the shards owning some of the ids search, each among its own
            calls = {s: ("query", (q, k, where, where_document, asked, n_probe, [id_list[i] for i in idx]))
                     for s, idx in enumerate(split(id_list, self._n_shards(cid))) if idx}
        got = self._read(cid, calls)
        return merge_query([got[s] for s in sorted(got)], k, include)

    # ---- collection ----
    def collection_modify(self, cid: str, name: Optional[str], metadata: Optional[dict], configuration: Any) -> None:
        """Renames, replaces the metadata (the space cannot change), sets the default n_probe of every
        shard and/or the embedding function (persisted in the shard map): checked here, applied by _modify."""
        def space() -> Optional[str]:
            cfg = self._entry(cid)["configuration"]
            return (cfg.get("hnsw") or cfg.get("spann") or {}).get("space")

        metadata, changes = validate_modify_args(name, metadata, configuration, space)
        self._modify(cid, name, metadata, changes)

    def collection_stats(self, cid: str) -> dict:
        """Counts summed over the shards, and each shard's own stats under "shards"."""
        got = self._read(cid, self._everywhere(cid, "stats"))
        per = [got[s] for s in range(len(got))]
        e = self._entry(cid)
        return {"name": e["name"], "use_ivf": bool(e["configuration"].get("use_ivf")),
                "count": sum(p["count"] for p in per), "dimension": max(p["dimension"] for p in per),
                "bytes_on_disk": sum(p["bytes_on_disk"] for p in per),
                "bytes_in_memory": sum(p["bytes_in_memory"] for p in per), "shards": per}

    def collection_action(self, cid: str, action: str) -> Any:
        """begin_batch / end_batch / checkpoint on every shard; rebuild retrains every shard's index."""
        if action not in ("begin_batch", "end_batch", "rebuild", "checkpoint"):
            raise InvalidArgumentError(f"unknown collection action {action!r}")
        done = self._write(cid, self._everywhere(cid, "action", action), action)
        if action != "rebuild":
            return None
        per = [done[s] for s in range(len(done))]
        return {"index": per[0]["index"], "n_clusters": sum(p["n_clusters"] for p in per),
                "message": "; ".join(f"shard {s}: {p['message']}" for s, p in enumerate(per))}
