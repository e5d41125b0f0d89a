"""Benchmark data sets: deterministic synthetic sets, embedding files, exact ground truth, cache.

Every set has a base (what is indexed), held-out queries, `extra` vectors (added after the build to
time incremental adds; never part of the ground truth), and the exact k nearest neighbours of each
query in the base, computed in float64 by blocked NumPy search.

    >>> spec = DatasetSpec("blobs", n=20_000, d=128)
    >>> ds = load(spec)                    # generated on first use, then read from the cache
    >>> ds.base.shape, ds.gt_ids.shape     # ((20000, 128), (nq, 100))

Kinds:
  blobs   Gaussian blobs as sklearn's make_blobs: centres uniform in [-10, 10]^d, std 1 around each.
  lowdim  faiss SyntheticDataset style: a 10-dimensional Gaussian pushed through a random linear
          map into d dimensions, scaled per coordinate and bent by sin() -- clustered on a curved
          low-dimensional manifold, closer to real embeddings than blobs are.
  sphere  uniform on the unit sphere, searched by inner product: no cluster structure at all, the
          worst case for IVF (reported honestly beside the others).
  file    any 2-D float .npy (searched by cosine); queries from a sibling <stem>_queries.npy
          when present, else the last nq rows are held out.
  minilm  real text embeddings: <data dir>/minilm/ holds base.npy (78,000 x 384 unit-norm
          all-MiniLM-L6-v2 vectors), queries_dev.npy and their exact top-100 (gt_dev.npy,
          gt_dev_dist.npy); searched by cosine with that ground truth. The data directory comes
          from --data-dir or $VECTORDB_BENCH_DATA (see data_root); the set is skipped when absent.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_ENV = "VECTORDB_BENCH_DATA"  # directory of external embedding sets (minilm/, *.npy)
GT_K = 100  # neighbours kept in the ground truth (recall@10 needs 10; the rest serve ties/other k)
FORMAT = 1  # bump when generation changes, so stale caches are not reused
SYNTHETIC_KINDS = ("blobs", "lowdim", "sphere")
REAL_KINDS = ("minilm",)
DEFAULT_METRIC = {"blobs": "l2", "lowdim": "l2", "sphere": "ip", "file": "cosine", "minilm": "cosine"}
MINILM_FILES = ("base.npy", "queries_dev.npy", "gt_dev.npy", "gt_dev_dist.npy")
METRICS = ("l2", "ip", "cosine")


def cache_root() -> Path:
    """Where generated sets live: $VECTORDB_BENCH_CACHE, else benchmarks/.cache (gitignored)."""
    env = os.environ.get("VECTORDB_BENCH_CACHE")
    return Path(env) if env else HERE / ".cache"


def data_root(flag: str | os.PathLike | None = None) -> Path | None:
    """Where external embedding sets live: the --data-dir flag, else $VECTORDB_BENCH_DATA, else
    None (no external sets)."""
    value = flag or os.environ.get(DATA_ENV)
    return Path(value).expanduser().resolve() if value else None


def minilm_missing(root: Path | None) -> str | None:
    """Why the minilm set cannot run (None when it can)."""
    if root is None:
        return f"no data directory: pass --data-dir DIR or set ${DATA_ENV} (DIR/minilm/ holds the set)"
    missing = [f for f in MINILM_FILES if not (root / "minilm" / f).is_file()]
    if missing:
        return f"{root / 'minilm'} lacks {', '.join(missing)}"
    return None


def human_count(n: int) -> str:
    """20000 -> '20k', 1000000 -> '1M', 1500 -> '1500'."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What to generate (or which file to read). `n` is the base size; queries come on top."""

    kind: str
    n: int = 0
    d: int = 0
    nq: int = 1000
    n_extra: int = 1000
    metric: str = ""
    seed: int = 20240601
    path: str = ""  # the .npy for kind "file", the set's directory for "minilm"

    def __post_init__(self) -> None:
        kinds = SYNTHETIC_KINDS + REAL_KINDS + ("file",)
        if self.kind not in kinds:
            raise ValueError(f"unknown data set kind {self.kind!r}; expected one of {kinds}")
        if not self.metric:
            object.__setattr__(self, "metric", DEFAULT_METRIC[self.kind])
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} is not one of {METRICS}")
        if self.kind in SYNTHETIC_KINDS and (self.n < 1 or self.d < 1):
            raise ValueError(f"data set {self.kind!r} needs n >= 1 and d >= 1, got n={self.n} "
                             f"d={self.d}")
        if self.nq < 1 or self.n_extra < 0:
            raise ValueError(f"need nq >= 1 and n_extra >= 0, got nq={self.nq} "
                             f"n_extra={self.n_extra}")

    @property
    def name(self) -> str:
        if self.kind == "file":
            return f"{Path(self.path).stem}-{self.metric}"
        if self.kind == "minilm":
            return "minilm" + (f"-{human_count(self.n)}" if self.n else "")
        return f"{self.kind}-{human_count(self.n)}-{self.d}"

    def cache_key(self) -> str:
        raw = json.dumps(dataclasses.asdict(self), sort_keys=True) + f"|v{FORMAT}"
        files = [Path(self.path)] if self.kind == "file" else \
            [Path(self.path) / f for f in MINILM_FILES] if self.kind == "minilm" else []
        for f in files:  # a changed file must not hit a stale cache
            st = f.stat()
            raw += f"|{st.st_size}|{st.st_mtime_ns}"
        digest = hashlib.sha1(raw.encode()).hexdigest()[:10]
        return f"{self.name}-q{self.nq}-{digest}"


@dataclasses.dataclass
class Dataset:
    spec: DatasetSpec
    base: np.ndarray  # (n, d) float32, C-contiguous
    queries: np.ndarray  # (nq, d) float32
    extra: np.ndarray  # (n_extra, d) float32, added after the build; not in the ground truth
    gt_ids: np.ndarray  # (nq, GT_K) int64, rows of base, nearest first
    gt_dist: np.ndarray  # (nq, GT_K) float64, natural distance (see natural_distances)
    directory: Path
    description: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metric(self) -> str:
        return self.spec.metric


# ---------------------------------------------------------------------------------- generation

_CHUNK = 65_536  # rows generated per step, so 1M x 384 never needs a float64 copy of everything


def _blobs(rng: np.random.Generator, total: int, d: int) -> np.ndarray:
    n_centers = int(min(max(10, total // 1000), 1000))
    centers = rng.uniform(-10.0, 10.0, size=(n_centers, d)).astype(np.float32)
    # equal-sized blobs (as make_blobs), in shuffled order so base/queries/extra share the mixture
    labels = rng.permutation(np.arange(total) % n_centers)
    out = np.empty((total, d), dtype=np.float32)
    for s in range(0, total, _CHUNK):
        e = min(s + _CHUNK, total)
        out[s:e] = centers[labels[s:e]]
        out[s:e] += rng.standard_normal((e - s, d), dtype=np.float32)
    return out


def _lowdim(rng: np.random.Generator, total: int, d: int) -> np.ndarray:
    intrinsic = 10
    projection = rng.random((intrinsic, d))
    frequency = rng.random(d) * 4.0 + 0.1  # larger -> more curved, less linear
    out = np.empty((total, d), dtype=np.float32)
    for s in range(0, total, _CHUNK):
        e = min(s + _CHUNK, total)
        z = rng.standard_normal((e - s, intrinsic))
        out[s:e] = np.sin((z @ projection) * frequency)
    return out


def _sphere(rng: np.random.Generator, total: int, d: int) -> np.ndarray:
    out = np.empty((total, d), dtype=np.float32)
    for s in range(0, total, _CHUNK):
        e = min(s + _CHUNK, total)
        x = rng.standard_normal((e - s, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    return out


def generate(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(base, queries, extra, description) for a spec; deterministic for a given spec."""
    if spec.kind == "file":
        return _from_file(spec)
    if spec.kind == "minilm":
        return _minilm(spec)[:4]
    rng = np.random.default_rng(spec.seed)
    total = spec.n + spec.nq + spec.n_extra
    make = {"blobs": _blobs, "lowdim": _lowdim, "sphere": _sphere}[spec.kind]
    x = make(rng, total, spec.d)
    base = np.ascontiguousarray(x[: spec.n])
    queries = np.ascontiguousarray(x[spec.n: spec.n + spec.nq])
    extra = np.ascontiguousarray(x[spec.n + spec.nq:])
    desc = {
        "blobs": f"Gaussian blobs ({min(max(10, total // 1000), 1000)} centres uniform in "
                 f"[-10, 10]^{spec.d}, std 1)",
        "lowdim": f"faiss-style synthetic: 10-d Gaussian -> random projection to {spec.d}-d -> sin",
        "sphere": f"uniform on the unit sphere in {spec.d}-d (IVF's worst case)",
    }[spec.kind]
    return base, queries, extra, f"{desc}, seed {spec.seed}"


def _from_file(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    path = Path(spec.path)
    x = np.load(path, mmap_mode="r")
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"{path}: expected a 2-D float array, got shape {x.shape} dtype {x.dtype}")
    qpath = next((p for p in (path.with_name(path.stem + "_queries.npy"),
                              path.with_name(path.stem + ".queries.npy")) if p.exists()), None)
    if qpath is not None:
        queries = np.load(qpath).astype(np.float32)[: spec.nq]
        held = min(spec.n_extra, max(0, x.shape[0] - 1))
        base, extra = x[: x.shape[0] - held], x[x.shape[0] - held:]
    else:
        if x.shape[0] <= spec.nq + spec.n_extra:
            raise ValueError(f"{path}: {x.shape[0]} rows is too few to hold out {spec.nq} queries "
                             f"and {spec.n_extra} extra vectors")
        cut = x.shape[0] - spec.nq - spec.n_extra
        base, queries, extra = x[:cut], x[cut: cut + spec.nq], x[cut + spec.nq:]
    if spec.n:
        base = base[: spec.n]
    as32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    desc = f"{path.name} ({x.shape[0]} x {x.shape[1]} {x.dtype})" + (
        f", queries from {qpath.name}" if qpath else ", last rows held out as queries")
    return as32(base), as32(queries), as32(extra), desc


def _minilm(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, tuple]:
    """The MiniLM set with its shipped exact ground truth (float64 inner products over the whole
    base, so a base cut to spec.n recomputes it instead). `extra` (only ever added after the
    queries) is the queries after the first nq: real vectors that are not in the base."""
    root = Path(spec.path)
    base = np.load(root / "base.npy", mmap_mode="r")
    queries_all = np.load(root / "queries_dev.npy")
    nq = min(spec.nq, queries_all.shape[0])
    queries = queries_all[:nq]
    extra = queries_all[nq:][: spec.n_extra]
    if extra.shape[0] < spec.n_extra:  # fewer spare queries than asked: repeat them
        extra = np.resize(queries_all, (spec.n_extra, queries_all.shape[1]))
    as32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    desc = (f"all-MiniLM-L6-v2 embeddings of English docstring paragraphs ({base.shape[0]:,} x "
            f"{base.shape[1]}, unit norm), held-out dev queries")
    gt: tuple = ()
    if spec.n and spec.n < base.shape[0]:
        base = base[: spec.n]
        desc += f", base cut to the first {spec.n:,}"
    else:
        gt_ids = np.load(root / "gt_dev.npy")[:nq].astype(np.int64)
        gt_dist = np.load(root / "gt_dev_dist.npy")[:nq].astype(np.float64)
        gt = (gt_ids[:, :GT_K], gt_dist[:, :GT_K])
        desc += "; ground truth shipped with the set (exact float64)"
    return as32(base), as32(queries), as32(extra), desc, gt


def external_specs(root: Path | None, nq: int = 1000, n_extra: int = 1000) -> list[DatasetSpec]:
    """The sets found in the data directory: minilm/, and one "file" set per 2-D float .npy
    directly in it (query and ground-truth files excluded)."""
    if root is None or not root.is_dir():
        return []
    specs = []
    if minilm_missing(root) is None:
        specs.append(DatasetSpec("minilm", nq=nq, n_extra=n_extra, path=str(root / "minilm")))
    for p in sorted(root.glob("*.npy")):
        if p.stem.endswith("_queries") or p.stem.endswith(".queries") or "gt" in p.stem.split("_"):
            continue
        try:
            arr = np.load(p, mmap_mode="r")
        except (ValueError, OSError):
            continue
        if arr.ndim == 2 and arr.dtype.kind == "f" and arr.shape[0] > nq + n_extra:
            specs.append(DatasetSpec("file", nq=nq, n_extra=n_extra, path=str(p)))
    return specs


# ---------------------------------------------------------------------------------- exact search

def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms == 0.0, 1.0, norms)
    return x


def natural_distances(base: np.ndarray, queries: np.ndarray, ids: np.ndarray,
                      metric: str) -> np.ndarray:
    """Distances (float64) from each query to the base rows `ids` (nq, m); -1 ids give +inf.

    The distance the recall definition compares (ann-benchmarks): Euclidean (not squared) for
    l2, 1 - dot for ip, 1 - cosine similarity for cosine.
    """
    ids = np.asarray(ids, dtype=np.int64)
    valid = (ids >= 0) & (ids < base.shape[0])
    safe = np.where(valid, ids, 0)
    q = _prepare(queries, metric)
    out = np.empty(ids.shape, dtype=np.float64)
    for s in range(0, ids.shape[0], 1024):
        e = min(s + 1024, ids.shape[0])
        x = _prepare(base[safe[s:e].ravel()], metric).reshape(e - s, ids.shape[1], -1)
        if metric == "l2":
            diff = x - q[s:e, None, :]
            out[s:e] = np.sqrt(np.einsum("qkd,qkd->qk", diff, diff))
        else:
            out[s:e] = 1.0 - np.einsum("qkd,qd->qk", x, q[s:e])
    out[~valid] = np.inf
    return out


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str,
              db_block: int = 32_768, q_block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `base` for each query, in float64: (ids int64, distances float64).

    Blocked over the base (each block converted to float64 once) and the queries, keeping a running
    top-k, so memory stays at a few hundred MB for any n. Ties are broken by row number.
    """
    n, nq = base.shape[0], queries.shape[0]
    k = min(k, n)
    q_all = _prepare(queries, metric)
    q_sq = np.einsum("ij,ij->i", q_all, q_all)
    best_d = np.full((nq, k), np.inf)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    for bs in range(0, n, db_block):
        be = min(bs + db_block, n)
        xb = _prepare(base[bs:be], metric)
        x_sq = np.einsum("ij,ij->i", xb, xb)
        for qs in range(0, nq, q_block):
            qe = min(qs + q_block, nq)
            dot = q_all[qs:qe] @ xb.T
            if metric == "l2":
                dist = np.maximum(q_sq[qs:qe, None] + x_sq[None, :] - 2.0 * dot, 0.0)
            else:
                dist = -dot  # ranks as 1 - dot; converted below
            kk = min(k, be - bs)
            part = np.argpartition(dist, kk - 1, axis=1)[:, :kk] if kk < be - bs else \
                np.broadcast_to(np.arange(be - bs), (qe - qs, be - bs))
            cand_d = np.concatenate([best_d[qs:qe], np.take_along_axis(dist, part, 1)], axis=1)
            cand_i = np.concatenate([best_i[qs:qe], part + bs], axis=1)
            # sort by (distance, row): lexsort's last key is primary
            order = np.lexsort((cand_i, cand_d), axis=1)[:, :k]
            best_d[qs:qe] = np.take_along_axis(cand_d, order, 1)
            best_i[qs:qe] = np.take_along_axis(cand_i, order, 1)
    if metric == "l2":
        best_d = np.sqrt(best_d)
    else:
        best_d = 1.0 + best_d
    return best_i, best_d


def recall_at_k(ids: np.ndarray, ds: Dataset, k: int = 10, eps: float = 1e-3,
                rows: np.ndarray | None = None) -> float:
    """ann-benchmarks recall@k: share of returned ids whose true distance <= the k-th true
    distance + eps. `ids` is (nq, >=k) of base rows, one row per query (or per query in `rows`);
    missing results are -1 and count as misses."""
    ids = np.asarray(ids)[:, :k]
    rows = np.arange(ds.queries.shape[0]) if rows is None else np.asarray(rows)
    if ids.shape[0] != rows.shape[0]:
        raise ValueError(f"recall needs one row of ids per query ({rows.shape[0]}), "
                         f"got {ids.shape[0]}")
    if ids.shape[1] < k:
        ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
    threshold = ds.gt_dist[rows, k - 1] + eps
    dist = natural_distances(ds.base, ds.queries[rows], ids, ds.metric)
    # a row id returned twice must not count twice
    dup = np.zeros(ids.shape, dtype=bool)
    srt = np.sort(ids, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        for r in range(ids.shape[0]):
            _, first = np.unique(ids[r], return_index=True)
            mask = np.ones(ids.shape[1], dtype=bool)
            mask[first] = False
            dup[r] = mask
    hits = (dist <= threshold[:, None]) & ~dup
    return float(hits.sum()) / float(ids.shape[0] * k)


# ---------------------------------------------------------------------------------- cache

def load(spec: DatasetSpec, mmap: bool = False, verbose: bool = True) -> Dataset:
    """The data set for `spec`, generated and ground-truthed on first use, then cached on disk."""
    directory = cache_root() / spec.cache_key()
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        _build_cache(spec, directory, verbose)
    meta = json.loads(meta_path.read_text())
    mode = "r" if mmap else None
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode=mode)
              for name in ("base", "queries", "extra", "gt_ids", "gt_dist")}
    return Dataset(spec=spec, directory=directory, description=meta["description"], **arrays)


def load_dir(directory: str | os.PathLike, mmap: bool = False) -> Dataset:
    """Reopen a cached data set by its directory (used by benchmark worker processes)."""
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    spec = DatasetSpec(**meta["spec"])
    mode = "r" if mmap else None
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode=mode)
              for name in ("base", "queries", "extra", "gt_ids", "gt_dist")}
    return Dataset(spec=spec, directory=directory, description=meta["description"], **arrays)


def _build_cache(spec: DatasetSpec, directory: Path, verbose: bool) -> None:
    t0 = time.perf_counter()
    if verbose:
        print(f"[data] generating {spec.name} (n={spec.n or 'file'}, d={spec.d or 'file'}, "
              f"nq={spec.nq}, metric={spec.metric}) ...", flush=True)
    if spec.kind == "minilm":
        base, queries, extra, desc, gt = _minilm(spec)
    else:
        (base, queries, extra, desc), gt = generate(spec), ()
    t1 = time.perf_counter()
    gt_ids, gt_dist = gt or exact_knn(base, queries, GT_K, spec.metric)
    t2 = time.perf_counter()
    if verbose:
        print(f"[data] {spec.name}: generated in {t1 - t0:.1f} s, exact ground truth "
              f"({queries.shape[0]} queries, k={GT_K}, float64) in {t2 - t1:.1f} s", flush=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    try:
        for name, arr in (("base", base), ("queries", queries), ("extra", extra),
                          ("gt_ids", gt_ids), ("gt_dist", gt_dist)):
            np.save(tmp / f"{name}.npy", arr)
        meta = {"spec": dataclasses.asdict(spec), "description": desc, "format": FORMAT,
                "shape": list(base.shape), "seconds_generate": t1 - t0,
                "seconds_ground_truth": t2 - t1}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, directory)  # atomic: a concurrent run sees all files or none
        except OSError:
            if not (directory / "meta.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
