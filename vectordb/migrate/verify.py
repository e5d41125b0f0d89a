"""How the migration checks its copy: typed equality, id digests, exact float64 nearest neighbours,
a reservoir sample; then the sample and query comparisons against the new collection.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, List, Optional, Sequence

import numpy as np

from vectordb.migrate.plan import Result

MAX_DIFFERENCES_SHOWN = 10


def same_value(a: Any, b: Any) -> bool:
    """Equality that also requires equal types: True is not 1, 1 is not 1.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    return a == b


def same_metadata(a: Optional[dict], b: Optional[dict]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)


def id_digest(ids: Sequence[str]) -> int:
    """Order-independent digest of a set of ids (sum of 64-bit hashes mod 2**64)."""
    total = 0
    for i in ids:
        total += int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little")
    return total & 0xFFFFFFFFFFFFFFFF


def distances64(queries: np.ndarray, points: np.ndarray, space: str) -> np.ndarray:
    """chromadb's distances in float64: l2 = squared euclidean, ip = 1 - dot, cosine = 1 - cos."""
    q = queries.astype(np.float64)
    p = points.astype(np.float64)
    dots = q @ p.T
    if space == "ip":
        return 1.0 - dots
    qn2 = np.einsum("ij,ij->i", q, q)
    pn2 = np.einsum("ij,ij->i", p, p)
    if space == "cosine":
        denom = np.sqrt(qn2)[:, None] * np.sqrt(pn2)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
        return 1.0 - cos
    return np.maximum(qn2[:, None] - 2.0 * dots + pn2[None, :], 0.0)


class ExactTopK:
    """Exact nearest neighbours of a few queries, accumulated page by page (bounded memory)."""

    def __init__(self, queries: np.ndarray, space: str, keep: int):
        self.queries = queries
        self.space = space
        self.keep = max(1, keep)
        nq = len(queries)
        self.dist = np.zeros((nq, 0), dtype=np.float64)
        self.ids = np.zeros((nq, 0), dtype=object)
        self.max_norm2 = 0.0
        self.seen = 0

    def update(self, emb: np.ndarray, ids: Sequence[str]) -> None:
        if len(ids) == 0:
            return
        self.seen += len(ids)
        e = emb.astype(np.float64)
        self.max_norm2 = max(self.max_norm2, float(np.einsum("ij,ij->i", e, e).max()))
        if len(self.queries) == 0:
            return
        d = distances64(self.queries, emb, self.space)
        id_row = np.empty(len(ids), dtype=object)
        id_row[:] = list(ids)
        all_d = np.concatenate([self.dist, d], axis=1)
        all_i = np.concatenate([self.ids, np.broadcast_to(id_row, d.shape)], axis=1)
        if all_d.shape[1] > self.keep:
            part = np.argpartition(all_d, self.keep - 1, axis=1)[:, : self.keep]
            all_d = np.take_along_axis(all_d, part, axis=1)
            all_i = np.take_along_axis(all_i, part, axis=1)
        self.dist, self.ids = all_d, all_i

    def result(self, qi: int):
        order = np.argsort(self.dist[qi], kind="stable")
        return list(self.ids[qi][order]), self.dist[qi][order]

    def tolerance(self, qi: int) -> float:
        """Slack for float32 rounding in the engine's distances, scaled to the distance magnitude."""
        q = self.queries[qi].astype(np.float64)
        qn2 = float(q @ q)
        if self.space == "l2":
            scale = qn2 + self.max_norm2
        elif self.space == "ip":
            scale = float(np.sqrt(qn2 * self.max_norm2))
        else:
            scale = 1.0
        return 2e-5 * max(scale, 1e-12) + 1e-7


def check_exact(ret_ids: Sequence[str], ret_d: Optional[Sequence[float]], truth_ids, truth_d, k: int,
                complete: bool, tol: float) -> List[str]:
    """Problems with one flat-search answer against the exact answer (empty list = identical up to
    near-ties). truth_* hold the best len(truth_ids) >= k records; complete: they are all records."""
    problems: List[str] = []
    want = min(k, len(truth_ids))
    if len(ret_ids) != want:
        problems.append(f"returned {len(ret_ids)} ids, expected {want}")
    if len(set(ret_ids)) != len(ret_ids):
        problems.append("returned duplicate ids")
    if want == 0:
        return problems
    kth = float(truth_d[want - 1])
    last = float(truth_d[-1])
    pos = {rid: j for j, rid in enumerate(truth_ids)}
    for rank, rid in enumerate(ret_ids):
        j = pos.get(rid)
        if j is None:
            if complete:
                problems.append(f"rank {rank}: id {rid!r} is not in the collection")
            elif last <= kth + tol:
                continue  # a tie region wider than what we kept: undecidable, accept
            else:
                problems.append(f"rank {rank}: id {rid!r} is not among the exact top {want}")
            continue
        if ret_d is not None and abs(float(ret_d[rank]) - float(truth_d[j])) > tol:
            problems.append(
                f"rank {rank}: id {rid!r} distance {float(ret_d[rank]):.7g}, exact {float(truth_d[j]):.7g}"
            )
        if j >= want and float(truth_d[j]) > kth + tol:
            problems.append(
                f"rank {rank}: id {rid!r} (exact distance {float(truth_d[j]):.7g}) is not among the "
                f"exact top {want} (k-th distance {kth:.7g})"
            )
    return problems


def recall(ret_ids: Sequence[str], truth_ids, truth_d, k: int, tol: float) -> float:
    want = min(k, len(truth_ids))
    if want == 0:
        return 1.0
    kth = float(truth_d[want - 1])
    # Records tied with the k-th within rounding count as correct answers too.
    good = {rid for rid, d in zip(truth_ids, truth_d) if float(d) <= kth + tol}
    return sum(1 for r in ret_ids[:want] if r in good) / want


class Reservoir:
    """Uniform random sample of a stream of records (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.seen = size, rng, 0
        self.items: List[Any] = []  # record tuples; a new slot is filled by the caller

    def slot(self) -> Optional[int]:
        """Counts one more record; returns where to store it, or None to leave it out."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(None)
            return len(self.items) - 1
        if self.size > 0:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                return j
        return None


def _verify_sample(target: Any, items: List[tuple], res: Result) -> None:
    shown = 0
    bad = 0
    for start in range(0, len(items), 1000):
        chunk = items[start:start + 1000]
        g = target.get(ids=[r[0] for r in chunk], include=["embeddings", "metadatas", "documents", "uris"])
        by_id = {}
        emb = np.asarray(g["embeddings"]) if g.get("embeddings") is not None else None
        for j, rid in enumerate(g["ids"]):
            by_id[rid] = (emb[j] if emb is not None else None, g["metadatas"][j], g["documents"][j], g["uris"][j])
        for rid, e, md, doc, uri in chunk:
            problem = None
            got = by_id.get(rid)
            if got is None:
                problem = f"record {rid!r} is missing"
            else:
                ge, gmd, gdoc, guri = got
                if ge is None or ge.dtype != np.float32 or ge.shape != e.shape or not np.array_equal(ge, e):
                    problem = f"record {rid!r}: embedding differs"
                elif not same_metadata(gmd, md):
                    problem = f"record {rid!r}: metadata {gmd!r}, chromadb {md!r}"
                elif gdoc != doc:
                    problem = f"record {rid!r}: document {gdoc!r}, chromadb {doc!r}"
                elif guri != uri:
                    problem = f"record {rid!r}: uri {guri!r}, chromadb {uri!r}"
            if problem:
                bad += 1
                if shown < MAX_DIFFERENCES_SHOWN:
                    res.differences.append(problem)
                    shown += 1
    if bad > shown:
        res.differences.append(f"... {bad} of {len(items)} sampled records differ")


def _verify_queries(reader: Any, target: Any, src: dict, queries: np.ndarray, truth: ExactTopK,
                    k: int, ivf: Optional[str], res: Result) -> None:
    got = target.query(query_embeddings=queries, n_results=k, include=["distances"])
    chroma_ids = reader.call("query", src["name"], queries, k)
    complete = truth.seen <= truth.keep
    v_rec, c_rec = [], []
    shown = 0
    for qi in range(len(queries)):
        t_ids, t_d = truth.result(qi)
        tol = truth.tolerance(qi)
        r_ids = list(got["ids"][qi])
        r_d = got["distances"][qi] if got.get("distances") is not None else None
        v_rec.append(recall(r_ids, t_ids, t_d, k, tol))
        c_rec.append(recall(chroma_ids[qi], t_ids, t_d, k, tol))
        if ivf:
            # Approximate search: only the distances of what it returns must be right.
            pos = {rid: j for j, rid in enumerate(t_ids)}
            problems = [f"id {rid!r} distance {float(r_d[i]):.7g}, exact {float(t_d[pos[rid]]):.7g}"
                        for i, rid in enumerate(r_ids)
                        if r_d is not None and rid in pos and abs(float(r_d[i]) - float(t_d[pos[rid]])) > tol]
        else:
            problems = check_exact(r_ids, r_d, t_ids, t_d, k, complete, tol)
        if problems and shown < MAX_DIFFERENCES_SHOWN:
            res.differences.append(f"query {qi}: " + "; ".join(problems[:3]))
            shown += 1
    res.queries = len(queries)
    res.exact_checked = ivf is None
    res.index = ivf or "flat"
    res.vectordb_recall = float(np.mean(v_rec))
    res.chroma_recall = float(np.mean(c_rec))
