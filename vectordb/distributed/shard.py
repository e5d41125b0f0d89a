"""Shard: one part of a sharded collection, run as a Ray actor that owns an ordinary PersistentClient
on its node's disk. Every method is one call of the public Collection API, so a shard validates,
logs and recovers exactly as a single-node collection does. Ray restarts a shard whose process died;
__init__ then reopens its directory, and the write-ahead log gives back every acknowledged write.

The actor runs one call at a time (Ray's default), which orders a shard's writes as they arrive."""
from __future__ import annotations

import os
import shutil
import time
from typing import Any, Optional

from ..client import PersistentClient
from ..errors import LockedError
from ..utils.embedding_functions import NEVER_EMBED
from .routing import SEQ_KEY

SHARD_COLLECTION = "shard"


class Shard:
    def __init__(self, path: str, create_args: dict):
        self._path = path
        os.makedirs(path, exist_ok=True)
        deadline = time.monotonic() + 60.0
        while True:
            try:
                self._client = PersistentClient(path=path)
                break
            except LockedError:
                # The shard's previous process (killed, replaced by this one) may not have exited yet.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # No embedding function: the RayClient embeds (if at all) before records reach a shard.
        self._col = self._client.get_or_create_collection(SHARD_COLLECTION, embedding_function=NEVER_EMBED,
                                                          **create_args)

    def where(self) -> dict:
        """Where this shard runs: node id and address, process id, directory."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "path": self._path}

    # ---- writes (the client has validated everything; metadatas are already normalized) ----
    def write(self, op: str, ids: list[str], embeddings: Any, metadatas: Optional[list], documents: Optional[list],
              seqs: Optional[list[int]], uris: Optional[list] = None) -> int:
        """add / upsert / update one batch; new records get their sequence number. Returns the count."""
        if op == "update":
            self._col.update(ids=ids, embeddings=embeddings, metadatas=metadatas, documents=documents, uris=uris)
            return len(ids)
        assert seqs is not None
        existing: set[str] = set()
        if op == "upsert":
            # An existing record keeps its sequence (one node keeps its row): only new ones get one.
            existing = set(self._col.get(ids=ids, include=[])["ids"])
        metas = []
        for i, x in enumerate(ids):
            m = metadatas[i] if metadatas is not None else None
            metas.append(m if x in existing else {**(m or {}), SEQ_KEY: seqs[i]})
        if op == "add":
            self._col.add(ids=ids, embeddings=embeddings, metadatas=metas, documents=documents, uris=uris)
        else:
            self._col.upsert(ids=ids, embeddings=embeddings, metadatas=metas, documents=documents, uris=uris)
        return len(ids)

    def delete(self, ids: Optional[list[str]], where: Any, where_document: Any) -> int:
        return int(self._col.delete(ids=ids, where=where, where_document=where_document)["deleted"])

    def modify(self, configuration: dict) -> None:
        self._col.modify(configuration=configuration)

    # ---- reads ----
    def existing(self, ids: list[str]) -> list[str]:
        return list(self._col.get(ids=ids, include=[])["ids"])

    def count(self) -> int:
        return self._col.count()

    def dimension(self) -> Optional[int]:
        return self._col.stats().get("dimension") or None

    def stats(self) -> dict:
        return self._col.stats()

    def get(self, ids: Optional[list[str]], where: Any, where_document: Any, limit: Optional[int],
            include: list[str]) -> dict:
        return self._col.get(ids=ids, where=where, where_document=where_document, limit=limit, include=include)

    def query(self, queries: Any, k: int, where: Any, where_document: Any, include: list[str],
              n_probe: Optional[int], ids: Optional[list[str]] = None) -> dict:
        return self._col.query(query_embeddings=queries, n_results=k, where=where, where_document=where_document,
                               include=include, n_probe=n_probe, ids=ids)

    # ---- life cycle ----
    def action(self, action: str) -> Any:
        """begin_batch, end_batch, rebuild or checkpoint (Collection's methods of those names)."""
        return getattr(self._col, action)()

    def close(self) -> None:
        self._client.close()

    def destroy(self) -> None:
        """Closes the shard and removes its directory (the collection was deleted)."""
        self._client.close()
        shutil.rmtree(self._path, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self._path))  # the collection's directory, once its last shard here is gone
        except OSError:
            pass
