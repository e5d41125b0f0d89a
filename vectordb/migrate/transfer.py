"""Copying one collection: chromadb pages in, vectordb batches out, with the sample and exact
neighbours kept for verification, then the rename that makes the copy visible.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from vectordb.migrate.plan import (
    MigrationState,
    Plan,
    Result,
    _existing,
    existing_ids,
    target_ivf,
    target_space,
    temp_name,
)
from vectordb.migrate.verify import (
    MAX_DIFFERENCES_SHOWN,
    ExactTopK,
    Reservoir,
    _verify_queries,
    _verify_sample,
    id_digest,
    same_metadata,
)

# Test aid: SIGKILL this process once this many records have been written (simulates a crash at a
# chosen point, so the resume path can be tested deterministically).
KILL_AFTER_ENV = "VECTORDB_MIGRATE_TEST_KILL_AFTER"



def _maybe_kill(written: int) -> None:
    limit = os.environ.get(KILL_AFTER_ENV)
    if limit and written >= int(limit):
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class Writer:
    """Buffers records and writes them to the vectordb collection in large NumPy batches."""

    def __init__(self, col: Any, batch_size: int, written_before: int):
        self.col, self.batch_size = col, batch_size
        self.ids: List[str] = []
        self.emb: List[np.ndarray] = []
        self.metas: List[Optional[dict]] = []
        self.docs: List[Optional[str]] = []
        self.uris: List[Optional[str]] = []
        self.written = 0
        self.committed = 0  # of self.written, made durable by a checkpoint
        self.total_before = written_before

    def extend(self, ids, emb, metas, docs, uris) -> None:
        self.ids += ids
        self.emb.append(emb)
        self.metas += metas
        self.docs += docs
        self.uris += uris
        if len(self.ids) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.ids:
            return
        emb = np.ascontiguousarray(np.concatenate(self.emb, axis=0), dtype=np.float32)
        kwargs: Dict[str, Any] = {"ids": self.ids, "embeddings": emb}
        if any(m is not None for m in self.metas):
            kwargs["metadatas"] = self.metas
        if any(d is not None for d in self.docs):
            kwargs["documents"] = self.docs
        if any(u is not None for u in self.uris):
            kwargs["uris"] = self.uris
        self.col.add(**kwargs)
        self.written += len(self.ids)
        self.ids, self.emb, self.metas, self.docs, self.uris = [], [], [], [], []
        # In batch mode nothing is on disk until a checkpoint: commit whenever the copy has doubled,
        # so an interrupted run resumes from at least half of what it wrote (disk writes stay ~2x).
        if self.written - self.committed >= max(self.total_before + self.committed, 1) and \
                hasattr(self.col, "checkpoint"):
            self.col.checkpoint()
            self.committed = self.written
        _maybe_kill(self.total_before + self.written)


def _pick_queries(reader: Any, src: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    count = src["count"]
    n = min(n, count)
    if n <= 0:
        return np.zeros((0, 0), dtype=np.float32)
    offsets = sorted(rng.choice(count, size=n, replace=False).tolist())
    base = reader.call("at_offsets", src["name"], offsets)
    if base.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    # Perturb stored vectors a little so queries are realistic rather than exact hits.
    rms = np.sqrt(np.mean(base.astype(np.float64) ** 2, axis=1, keepdims=True))
    noise = rng.standard_normal(base.shape) * 0.05 * np.where(rms > 0, rms, 1.0)
    return (base + noise).astype(np.float32)


@dataclass
class Tally:
    records: int = 0
    digest: int = 0  # id_digest of every id read
    unsupported: int = 0
    uris_dropped: int = 0
    inexact: int = 0


class PageStream:
    """The pages of one chromadb collection; each page is requested before the previous one is
    handed out, so chromadb reads (in the child process) while this process writes to vectordb."""

    def __init__(self, reader: Any, name: str, count: int, page_size: int):
        self.reader, self.name, self.count, self.page_size = reader, name, count, page_size
        self.pending = False

    def _request(self, offset: int) -> None:
        self.reader.send("page", self.name, offset, self.page_size)
        self.pending = True

    def __iter__(self):
        requested = 0
        if self.count > 0:
            self._request(0)
            requested = self.page_size
        while self.pending:
            page = self.reader.receive()
            self.pending = False
            if not page["ids"]:
                return
            if requested < self.count:
                self._request(requested)
                requested += self.page_size
            yield page

    def drain(self) -> None:
        """Collects an answer still on its way, so the next request gets its own answer."""
        if self.pending:
            self.pending = False
            try:
                self.reader.receive()
            except Exception:  # noqa: BLE001 - the error that stopped the copy is what matters
                pass


def _copy_page(page: dict, target: Any, writer: "Writer", truth: "ExactTopK", sample: "Reservoir",
               skip_existing: bool, args: argparse.Namespace, res: "Result", tally: Tally) -> None:
    """Checks one page from chromadb, feeds the verification, and hands its records to the writer."""
    ids = page["ids"]
    emb = page["embeddings"]
    tally.inexact += page["inexact"]
    truth.update(emb, ids)
    tally.records += len(ids)
    tally.digest = (tally.digest + id_digest(ids)) & 0xFFFFFFFFFFFFFFFF
    metas = []
    for rid, md in zip(ids, page["metadatas"]):
        if md is not None:
            bad = [k_ for k_, v in md.items() if isinstance(v, tuple)]
            if bad:
                tally.unsupported += 1
                if tally.unsupported <= MAX_DIFFERENCES_SHOWN:
                    res.differences.append(
                        f"record {rid!r}: metadata {', '.join(f'{b!r} holds a {md[b][1]}' for b in bad)}"
                        ", which vectordb cannot store (key left out)")
                md = {k_: v for k_, v in md.items() if k_ not in bad} or None
        metas.append(md)
    uris = list(page["uris"])
    for i, uri in enumerate(uris):
        if uri is None or not args.uris_key:
            continue  # uris are copied as uris
        # Asked to keep them in a metadata key instead.
        uris[i] = None
        if not (metas[i] and args.uris_key in metas[i]):
            metas[i] = {**(metas[i] or {}), args.uris_key: uri}
            continue
        tally.uris_dropped += 1
        if tally.uris_dropped <= MAX_DIFFERENCES_SHOWN:
            res.differences.append(f"record {ids[i]!r}: metadata already has key {args.uris_key!r}; "
                                   "its uri was not kept")
    for i, rid in enumerate(ids):
        j = sample.slot()
        if j is not None:
            # A copy of the row: a view would keep its whole page alive.
            sample.items[j] = (rid, emb[i].copy(), metas[i], page["documents"][i], uris[i])
    keep = list(range(len(ids)))
    if skip_existing:
        present = existing_ids(target, ids)
        keep = [i for i in keep if ids[i] not in present]
    if keep:
        sel = np.asarray(keep)
        writer.extend([ids[i] for i in keep], emb[sel], [metas[i] for i in keep],
                      [page["documents"][i] for i in keep], [uris[i] for i in keep])


def migrate_collection(reader: Any, client: Any, plan: Plan, args: argparse.Namespace,
                       written_so_far: int, state: MigrationState, source_path: str) -> Result:
    src = plan.src
    name = src["name"]
    res = Result(name=name, action=plan.action, space=src["space"], records=src["count"])
    t0 = time.perf_counter()
    if plan.action in ("skip", "done"):
        res.status = "skipped" if plan.action == "skip" else "done earlier"
        return res
    rng = np.random.default_rng(args.seed)
    pyrng = random.Random(args.seed)
    found = {k: v for k, v in src["space_found"].items() if v}
    if len(set(found.values())) > 1:
        res.warnings.append(f"chromadb records several spaces {found}; using {src['space']!r}")

    tname = temp_name(src)
    if plan.action in ("create", "overwrite"):
        if _existing(client, tname) is not None:
            client.delete_collection(tname)
        target = client.create_collection(
            tname,
            metadata=src["metadata"] or None,
            configuration={"hnsw": {"space": src["space"]}},
            dimension=src.get("dimension"),
            use_ivf=args.use_ivf,
            n_clusters=args.n_clusters,
            n_probe=args.n_probe,
        )
        skip_existing = False
    elif plan.action == "resume":
        target = client.get_collection(tname)
        skip_existing = True
    else:  # append: straight into the existing collection (idempotent: present ids are skipped)
        target = client.get_collection(name)
        skip_existing = True
    before = target.count()

    queries = _pick_queries(reader, src, args.verify_queries, rng)
    k = min(args.verify_k, src["count"])
    truth = ExactTopK(queries, src["space"], k + 20)
    sample = Reservoir(args.verify_sample, pyrng)
    writer = Writer(target, args.batch_size, written_so_far)
    tally = Tally()
    page_size = max(1, min(args.page_size, args.batch_size))
    bar = _progress(total=src["count"], desc=name)
    stream = PageStream(reader, name, src["count"], page_size)
    try:
        with _batch_mode(target):
            for page in stream:
                _copy_page(page, target, writer, truth, sample, skip_existing, args, res, tally)
                bar.update(len(page["ids"]))
            writer.flush()
    finally:
        stream.drain()
        bar.close()
    res.copied = writer.written
    digest = tally.digest
    if tally.records != src["count"]:
        res.differences.append(f"chromadb returned {tally.records} records while counting {src['count']}")
    if tally.unsupported > MAX_DIFFERENCES_SHOWN:
        res.differences.append(f"... {tally.unsupported} records in all hold metadata vectordb cannot store")
    if tally.uris_dropped:
        res.differences.append(f"{tally.uris_dropped} records have uris that --uris-key {args.uris_key!r} "
                               "could not keep (the key was taken)")
    if tally.inexact:
        res.warnings.append(f"{tally.inexact} embeddings were not float32 in chromadb and were rounded")

    # ---- verification
    count = target.count()
    expected = src["count"] if plan.action != "append" else before + res.copied
    if count != expected:
        res.differences.append(f"count: vectordb has {count} records, expected {expected}")
    if plan.action != "append":
        tdigest = 0
        for off in range(0, count, 10000):
            g = target.get(limit=10000, offset=off, include=[])
            tdigest = (tdigest + id_digest(g["ids"])) & 0xFFFFFFFFFFFFFFFF
        if tdigest != digest:
            res.differences.append("ids: the set of ids in vectordb differs from chromadb's")
    _verify_sample(target, sample.items, res)
    res.sampled = len(sample.items)
    if plan.action == "append" and before > 0:
        res.warnings.append("queries not compared: the collection held other records before the append")
    elif len(queries) and k > 0:
        _verify_queries(reader, target, src, queries, truth, k, target_ivf(target), res)

    if plan.action != "append":
        md = target.metadata
        if not same_metadata(md or None, src["metadata"] or None):
            res.differences.append(f"collection metadata: vectordb has {md!r}, chromadb {src['metadata']!r}")
        tsp = target_space(target)
        if tsp != src["space"]:
            res.differences.append(f"space: vectordb collection uses {tsp!r}, chromadb {src['space']!r}")
        if res.differences:
            res.differences.append(
                f"the copy is kept as {tname!r}: rename it with .modify(name={name!r}) to accept it as is, "
                "or run again with --on-existing overwrite")
        else:
            # Publish: the name appears only now, complete and verified. The state entry is keyed by
            # the collection's id, which the rename keeps.
            state.record(target, src, source_path)
            if _existing(client, name) is not None:
                client.delete_collection(name)
            target.modify(name=name)
    res.status = "ok" if not res.differences else f"FAILED ({len(res.differences)})"
    res.seconds = time.perf_counter() - t0
    return res


class _batch_mode:
    """Bulk-import mode of the target (IVF trains once at the end), if the collection offers it."""

    def __init__(self, col: Any):
        self.col = col
        self.on = False

    def __enter__(self):
        if hasattr(self.col, "begin_batch"):
            self.col.begin_batch()
            self.on = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.on:
            self.col.end_batch()
        return False


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="rec", file=sys.stderr,
                    dynamic_ncols=True, mininterval=0.5)
    except ImportError:
        return _PlainProgress(total, desc)


class _PlainProgress:
    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.last = total, desc, 0, 0.0

    def update(self, n: int) -> None:
        self.n += n
        if time.monotonic() - self.last > 1.0 or self.n >= self.total:
            self.last = time.monotonic()
            print(f"{self.desc}: {self.n}/{self.total} records", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
