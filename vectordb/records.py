"""The embedded clients' side of the Backend seam: validate a whole request, make one engine call,
shape the engine's output into chroma-style results."""
from __future__ import annotations

import logging
from typing import Any, Optional

from . import _core
from .backend import OP_ADD, OP_DELETE
from .configuration import chroma_shape, validate_modify_args
from .errors import InvalidArgumentError
from .filters import compile_filter_ex
from .utils.embedding_functions import check_modify
from .validation import (
    CHROMA_URI_KEY,
    MAX_COUNT,
    URI_KEY,
    to_matrix,
    validate_count,
    validate_documents,
    validate_ids,
    validate_include,
    validate_metadatas,
    validate_positive_int,
    validate_uris,
)

log = logging.getLogger("vectordb")

_INCLUDE_BITS = {"embeddings": _core.INC_VECTORS, "metadatas": _core.INC_METAS, "documents": _core.INC_DOCS,
                 "distances": _core.INC_DISTANCES}


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
    if "uris" in include:
        mask |= _core.INC_METAS  # uris are kept in the metadata
    return mask


def _with_uris(metas: Optional[list], uris: Optional[list]) -> Optional[list]:
    """The metadatas to write, each record's uri under URI_KEY; a chromadb-style "chroma:uri"
    metadata key is a uri too (chromadb stores uris that way)."""
    if metas is not None:
        for i, m in enumerate(metas):
            if m is not None and CHROMA_URI_KEY in m:
                m = dict(m)
                uri = m.pop(CHROMA_URI_KEY)
                if not isinstance(uri, str):
                    raise InvalidArgumentError(f"metadata {i}: {CHROMA_URI_KEY!r} holds the record's uri: "
                                               "expected a str")
                metas[i] = {**m, URI_KEY: uri}
    if uris is None:
        return metas
    out = list(metas) if metas is not None else [None] * len(uris)
    for i, uri in enumerate(uris):
        if uri is not None:
            out[i] = {**(out[i] or {}), URI_KEY: uri}
    return out


def _take_uris(metas: list) -> list:
    """Each record's uri (None without one), removed from its metadata in place (a metadata that
    held only the uri becomes None)."""
    uris: list = [None] * len(metas)
    for i, m in enumerate(metas):
        if m and URI_KEY in m:
            uris[i] = m.pop(URI_KEY)
            if not m:
                metas[i] = None
    return uris


class LocalRecords:
    """Backend methods over the engine; mixed into the embedded clients, which provide
    _engine_call, _entry, _pin and _modify."""

    _engine_call: Any
    _entry: Any
    _pin: Any
    _modify: Any

    def collection_info(self, cid: str) -> dict:
        e = self._entry(cid)
        return {"name": e["name"], "metadata": dict(e["metadata"]) if e["metadata"] is not None else None,
                "configuration": chroma_shape(e["configuration"])}

    def _write_call(self, cid: str, *args: Any) -> Any:
        """An engine write, then any failure of the maintenance it triggered (training, checkpoint),
        which does not fail the write (it is durable already) but must not go unnoticed."""
        out = self._engine_call(cid, *args)
        warning = self._engine_call(cid, "take_warning")
        if warning:
            log.warning("collection %r: maintenance after a write failed (the write itself succeeded): %s",
                        self._entry(cid)["name"], warning)
        return out

    def records_write(self, cid: str, op: int, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                      uris: Any) -> None:
        ids = validate_ids(ids)
        n = len(ids)
        docs = validate_documents(documents, n)
        metas = _with_uris(validate_metadatas(metadatas, n, allow_none_values=op != OP_ADD), validate_uris(uris, n))
        vectors = None
        if embeddings is not None:
            vectors = to_matrix(embeddings, snapshot=True)  # validated and written from one copy
            if vectors.shape[0] != n:
                raise InvalidArgumentError(f"got {vectors.shape[0]} embeddings for {n} ids: expected one per id")
        elif op == OP_ADD:
            raise InvalidArgumentError(
                "embeddings are required: pass embeddings=..., "
                "or documents with an embedding_function on the collection"
            )
        # The engine checks the dimension (InvalidDimensionError) before writing.
        status = self._write_call(cid, "write", op, ids, vectors, metas, docs)
        if op == OP_ADD and status.count(0):
            skipped = [i for i, s in zip(ids, status) if not s]
            log.warning("add to collection %r skipped %d existing id(s): %s", self._entry(cid)["name"], len(skipped),
                        ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))

    def records_delete(self, cid: str, ids: Any, where: Any, where_document: Any) -> int:
        if ids is None and where is None and where_document is None:
            raise InvalidArgumentError("delete needs ids, where or where_document")
        id_list = validate_ids(ids) if ids is not None else None
        flt = compile_filter(where, where_document)
        if flt is None:
            return self._write_call(cid, "write", OP_DELETE, id_list, None, None, None).count(1)
        # Matching and deleting in one engine call: no other write comes between them.
        return int(self._write_call(cid, "delete_where", flt, id_list))

    def records_get(self, cid: str, ids: Any, where: Any, limit: Any, offset: Any, where_document: Any,
                    include: Any) -> dict:
        include = validate_include(include, ("documents", "embeddings", "metadatas", "uris", "data"), "get")
        id_list = validate_ids(ids) if ids is not None else None
        limit = validate_count(limit, "limit", 0)
        offset = validate_count(offset, "offset", 0)
        flt = compile_filter(where, where_document)
        rids, vecs, metas, docs, _, _ = self._engine_call(
            cid, "get", id_list, flt, offset or 0, -1 if limit is None else limit, _include_mask(include)
        )
        uris = _take_uris(metas) if metas is not None else None
        return {
            "ids": rids,
            "embeddings": vecs if "embeddings" in include else None,
            "documents": docs if "documents" in include else None,
            "uris": uris if "uris" in include else None,
            "data": None,
            "metadatas": metas if "metadatas" in include else None,
            "included": include,
        }

    def records_query(self, cid: str, query_embeddings: Any, ids: Any, n_results: Any, where: Any,
                      where_document: Any, include: Any, n_probe: Optional[int]) -> dict:
        q = to_matrix(query_embeddings, "query_embeddings")
        id_list = validate_ids(ids) if ids is not None else None
        k = validate_count(n_results, "n_results", 1)
        if k is None:
            raise InvalidArgumentError(f"n_results must be an integer from 1 to {MAX_COUNT}, got None")
        n_probe = validate_positive_int(n_probe, "n_probe", allow_none=True)
        include = validate_include(include, ("documents", "embeddings", "metadatas", "distances", "uris", "data"),
                                   "query")
        flt = compile_filter(where, where_document)
        rids, vecs, metas, docs, dists, counts = self._engine_call(cid, "query", q, k, flt, _include_mask(include),
                                                                   n_probe or 0, id_list)
        uris = _take_uris(metas) if metas is not None else None
        return _shape_query(rids, vecs, metas, uris, docs, dists, counts, include)

    def records_count(self, cid: str) -> int:
        return int(self._engine_call(cid, "count"))

    def collection_modify(self, cid: str, name: Optional[str], metadata: Optional[dict], configuration: Any) -> None:
        metadata, changes = validate_modify_args(name, metadata, configuration,
                                                 lambda: self._entry(cid)["configuration"]["space"])
        if "embedding_function" in changes:
            check_modify(self._entry(cid)["configuration"].get("embedding_function"), changes["embedding_function"])
        for kind in ("hnsw", "spann"):
            if kind in changes:  # tuning merges into what was given before
                changes[kind] = {**self._entry(cid)["configuration"].get(kind, {}), **changes[kind]}
        self._modify(cid, name, metadata, changes)

    def collection_stats(self, cid: str) -> dict:
        s = dict(self._engine_call(cid, "stats"))
        e = self._entry(cid)
        s["name"] = e["name"]
        s["use_ivf"] = bool(e["configuration"].get("use_ivf"))
        return s

    def collection_action(self, cid: str, action: str) -> Any:
        if action in ("begin_batch", "begin_logged_batch"):
            # Pinned: a collection in batch mode is never evicted (the mode lives in the handle).
            self._pin(cid, +1)
            try:
                # a logged batch (the server's: its writers are not all the batch's) only defers training
                self._engine_call(cid, "batch",
                                  _core.BATCH_BEGIN if action == "begin_batch" else _core.BATCH_BEGIN_LOGGED)
            except BaseException:
                self._pin(cid, -1)
                raise
        elif action in ("end_batch", "end_logged_batch"):
            try:
                self._write_call(cid, "batch", _core.BATCH_END if action == "end_batch" else _core.BATCH_END_LOGGED)
            except InvalidArgumentError:
                raise  # no matching begin: no level ended, so the batches below stay pinned
            except BaseException:
                self._pin(cid, -1)  # the level ended; only what followed failed
                raise
            self._pin(cid, -1)
        elif action == "rebuild":
            self._engine_call(cid, "rebuild")
            note = self._engine_call(cid, "take_warning")
            st = self._engine_call(cid, "stats")
            if note:
                log.info("collection %r: %s", self._entry(cid)["name"], note)
            else:
                note = f"trained {st['n_clusters']} IVF lists on {st['count']} vectors"
            return {"index": st["index"], "n_clusters": st["n_clusters"], "message": note}
        elif action == "checkpoint":
            self._engine_call(cid, "checkpoint")
        else:
            raise InvalidArgumentError(f"unknown collection action {action!r}")
        return None


def _shape_query(rids: list, vecs: Any, metas: Any, uris: Any, docs: Any, dists: Any, counts: list,
                 include: list) -> dict:
    if len(counts) == 1 and vecs is None and metas is None and docs is None and dists is not None:
        # One query for ids and distances (a search's hot loop): what the loop below returns, unsliced.
        return {"ids": [rids], "embeddings": [] if "embeddings" in include else None,
                "documents": [] if "documents" in include else None, "uris": [] if "uris" in include else None,
                "data": None, "metadatas": [] if "metadatas" in include else None,
                "distances": [dists.tolist()] if "distances" in include else None, "included": include}
    out_ids, out_v, out_m, out_u, out_d, out_dist = [], [], [], [], [], []
    pos = 0
    for c in counts:
        out_ids.append(rids[pos:pos + c])
        if vecs is not None:
            out_v.append(vecs[pos:pos + c])
        if metas is not None:
            out_m.append(metas[pos:pos + c])
            out_u.append(uris[pos:pos + c])
        if docs is not None:
            out_d.append(docs[pos:pos + c])
        if dists is not None:
            out_dist.append(dists[pos:pos + c].tolist())
        pos += c
    return {
        "ids": out_ids,
        "embeddings": out_v if "embeddings" in include else None,
        "documents": out_d if "documents" in include else None,
        "uris": out_u if "uris" in include else None,
        "data": None,
        "metadatas": out_m if "metadatas" in include else None,
        "distances": out_dist if "distances" in include else None,
        "included": include,
    }
