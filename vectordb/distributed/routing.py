"""Routing and merging for sharded collections: the stable id -> shard hash, per-shard batches, and the
exact merges of per-shard answers. Pure Python (no Ray), so it is tested on its own.

Global order: every record carries a sequence number in the hidden metadata key SEQ_KEY, given by
the client when the record is first written. Within a shard, rows are in insertion order, which is
sequence order; so merging the shards by sequence gives the order one node would keep, and ties in
distance are broken by it exactly as one node breaks them (by row, i.e. insertion order).
"""
from __future__ import annotations

import zlib
from typing import Any, Optional, Sequence

import numpy as np

SEQ_KEY = "vectordb:seq"
HASH_NAME = "crc32-utf8"  # recorded in the shard map: changing the hash would move every record


def shard_of(record_id: str, n_shards: int) -> int:
    """The shard holding `record_id`: CRC-32 of its UTF-8 bytes modulo the shard count. Stable across
    processes, machines and Python versions (unlike hash(), which is salted per process)."""
    return zlib.crc32(record_id.encode("utf-8")) % n_shards


def split(ids: Sequence[str], n_shards: int) -> list[list[int]]:
    """Positions of `ids` per shard, each list in the caller's order."""
    parts: list[list[int]] = [[] for _ in range(n_shards)]
    for i, x in enumerate(ids):
        parts[zlib.crc32(x.encode("utf-8")) % n_shards].append(i)
    return parts


def seq_of(metadata: Optional[dict]) -> int:
    return int(metadata.get(SEQ_KEY, 0)) if metadata else 0


def strip_seq(metadata: Optional[dict]) -> Optional[dict]:
    """The user's metadata: without the hidden key, None when nothing else is left (as one node)."""
    if not metadata:
        return None
    if SEQ_KEY not in metadata:
        return metadata
    out = {k: v for k, v in metadata.items() if k != SEQ_KEY}
    return out or None


def _rows(picks: list[tuple[int, int]], per_shard: list[Any]) -> np.ndarray:
    if not picks:
        dims = [v.shape[1] for v in per_shard if v is not None and getattr(v, "ndim", 0) == 2]
        return np.empty((0, dims[0] if dims else 0), dtype=np.float32)
    return np.stack([np.asarray(per_shard[s][j], dtype=np.float32) for s, j in picks])


def merge_get_by_ids(results: list[Optional[dict]], ids: Sequence[str], offset: int, limit: Optional[int],
                     include: list[str]) -> dict:
    """Per-shard get(ids=...) answers -> one answer in the order the ids were asked (unknown ids left out)."""
    where: dict[str, tuple[int, int]] = {}
    for s, r in enumerate(results):
        if r is not None:
            for j, x in enumerate(r["ids"]):
                where[x] = (s, j)
    picks = [where[x] for x in ids if x in where]
    picks = picks[offset:] if limit is None else picks[offset:offset + limit]
    return _shape_get(results, picks, include)


def merge_get_ordered(results: list[Optional[dict]], offset: int, limit: Optional[int], include: list[str]) -> dict:
    """Per-shard get() answers (each in insertion order, each holding the first offset+limit matches)
    -> the records one node would return: all matches ordered by sequence, then offset and limit."""
    keyed = []
    for s, r in enumerate(results):
        if r is not None:
            for j, m in enumerate(r["metadatas"]):
                keyed.append((seq_of(m), s, j))
    keyed.sort()
    picks = [(s, j) for _, s, j in keyed]
    picks = picks[offset:] if limit is None else picks[offset:offset + limit]
    return _shape_get(results, picks, include)


def _shape_get(results: list[Optional[dict]], picks: list[tuple[int, int]], include: list[str]) -> dict:
    def col(key: str) -> list:
        return [results[s][key][j] for s, j in picks]  # type: ignore[index]

    return {
        "ids": col("ids"),
        "embeddings": _rows(picks, [r and r["embeddings"] for r in results]) if "embeddings" in include else None,
        "documents": col("documents") if "documents" in include else None,
        "uris": col("uris") if "uris" in include else None,
        "data": None,
        "metadatas": [strip_seq(m) for m in col("metadatas")] if "metadatas" in include else None,
        "included": include,
    }


def merge_query(results: list[dict], k: int, include: list[str]) -> dict:
    """Per-shard query answers (each with distances and metadatas) -> the k nearest per query over all
    shards, ordered by (distance, sequence): exactly what one node holding every record returns."""
    n_queries = len(results[0]["ids"])
    out: dict[str, list] = {key: [] for key in ("ids", "embeddings", "documents", "uris", "metadatas", "distances")}
    for q in range(n_queries):
        keyed = []
        for s, r in enumerate(results):
            for j, (d, m) in enumerate(zip(r["distances"][q], r["metadatas"][q])):
                keyed.append((d, seq_of(m), s, j))
        keyed.sort()
        picks = [(s, j) for _, _, s, j in keyed[:k]]
        out["ids"].append([results[s]["ids"][q][j] for s, j in picks])
        out["distances"].append([results[s]["distances"][q][j] for s, j in picks])
        out["metadatas"].append([strip_seq(results[s]["metadatas"][q][j]) for s, j in picks])
        if "documents" in include:
            out["documents"].append([results[s]["documents"][q][j] for s, j in picks])
        if "uris" in include:
            out["uris"].append([results[s]["uris"][q][j] for s, j in picks])
        if "embeddings" in include:
            out["embeddings"].append(_rows(picks, [r["embeddings"][q] for r in results]))
    return {
        "ids": out["ids"],
        "embeddings": out["embeddings"] if "embeddings" in include else None,
        "documents": out["documents"] if "documents" in include else None,
        "uris": out["uris"] if "uris" in include else None,
        "data": None,
        "metadatas": out["metadatas"] if "metadatas" in include else None,
        "distances": out["distances"] if "distances" in include else None,
        "included": include,
    }
