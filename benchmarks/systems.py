"""One adapter per compared system, all driven the same way by benchmarks/runner.py.

Each adapter uses the system's ordinary Python API, as a user would:
    sys = make_system("faiss-ivf", metric="l2", d=128, n=100_000, threads=1, workdir=...,
                      options={})
    timings = sys.build(base, batch=1000)        # train (if any) + add in batches of 1,000
    for value in sys.sweep(): sys.set_param(value); sys.query_one(q, 10); sys.query_batch(Q, 10)
    sys.add(extra, first_id=n); sys.disk_bytes(); sys.close()
A system that cannot run here raises NotAvailable with the reason and the fix; the runner turns that
into a "not available" row instead of failing the whole benchmark.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from typing import Any, Sequence

import numpy as np

from . import machine

BENCH_EXTRA = "pip install 'vectordb[bench]'"

# Default sweeps: wide enough to draw the recall/QPS curve, short enough for the time budget.
N_PROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128)
EF_SWEEP = (10, 20, 40, 80, 160, 320)
HNSW_M = 16  # chromadb's defaults (max_neighbors 16, ef_construction 100), so hnswlib ~ chromadb
HNSW_EF_CONSTRUCTION = 100


class NotAvailable(Exception):
    """This system or feature cannot run here; the message says why and how to get it."""


def default_n_clusters(n: int) -> int:
    """About sqrt(n) lists (vectordb's documented default), at least 1."""
    return max(1, int(round(math.sqrt(n))))


def _import(module: str, pip_name: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise NotAvailable(f"{pip_name} not installed ({exc}): {BENCH_EXTRA}") from exc


def _batches(n: int, batch: int):
    for s in range(0, n, batch):
        yield s, min(s + batch, n)


def _str_ids_to_rows(ids: Sequence[Sequence[str]], k: int) -> np.ndarray:
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for r, row in enumerate(ids):
        m = min(len(row), k)
        if m:
            out[r, :m] = [int(s) for s in row[:m]]
    return out


class System:
    """Base adapter. Subclasses fill in build/query/add; defaults mean 'exact, no parameters'."""

    name = "?"
    family = "?"
    approximate = False
    sweep_name: str | None = None

    def __init__(self, metric: str, d: int, n: int, threads: int, workdir: str,
                 options: dict[str, Any]):
        self.metric, self.d, self.n, self.threads = metric, d, n, threads
        self.workdir = workdir
        self.options = options
        self.param: Any = None

    def version(self) -> str:
        return "?"

    def config(self) -> str:
        """Build parameters worth printing next to the numbers."""
        return ""

    def sweep(self) -> list[Any]:
        return [None]

    def set_param(self, value: Any) -> None:
        self.param = value

    def param_label(self) -> str:
        return f"{self.sweep_name}={self.param}" if self.sweep_name and self.param is not None \
            else ""

    def build(self, base: np.ndarray, batch: int) -> dict[str, float | None]:
        raise NotImplementedError

    def query_one(self, q: np.ndarray, k: int) -> Any:
        """Search one vector (1-D); returns the system's raw result (converted by rows())."""
        raise NotImplementedError

    def query_batch(self, queries: np.ndarray, k: int) -> Any:
        raise NotImplementedError

    def rows(self, raw: Any, k: int) -> np.ndarray:
        """Raw result -> (nq, k) int64 base rows, -1 where fewer than k came back."""
        return np.asarray(raw, dtype=np.int64).reshape(-1, k)

    def add(self, x: np.ndarray, first_id: int) -> None:
        raise NotImplementedError

    def disk_bytes(self) -> int | None:
        return None

    def close(self) -> None:
        pass


# ------------------------------------------------------------------- chromadb's collection API

class ChromaApiSystem(System):
    """A system driven through chromadb's collection API (vectordb's and chromadb's own): the
    subclass opens self.col in self.path and prepares self.ids (string ids, made before timing)."""

    col: Any
    ids: list[str]
    path: str

    def _ids(self, s: int, e: int) -> list[str]:
        if e > len(self.ids):
            self.ids.extend(str(i) for i in range(len(self.ids), e))
        return self.ids[s:e]

    def build(self, base, batch):
        t0 = time.perf_counter()
        for s, e in _batches(base.shape[0], batch):
            self.col.add(ids=self._ids(s, e), embeddings=base[s:e])
        t1 = time.perf_counter()
        return {"train_s": None, "add_s": t1 - t0, "build_s": t1 - t0}

    def query_one(self, q, k):
        return self.col.query(query_embeddings=q[None, :], n_results=k, include=["distances"])

    def query_batch(self, queries, k):
        return self.col.query(query_embeddings=queries, n_results=k, include=["distances"])

    def rows(self, raw, k):
        return _str_ids_to_rows(raw["ids"], k)

    def add(self, x, first_id):
        self.col.add(ids=self._ids(first_id, first_id + x.shape[0]), embeddings=x)

    def disk_bytes(self):
        return machine.dir_bytes(self.path)


# ---------------------------------------------------------------------------------- vectordb

class VectordbExact(ChromaApiSystem):
    name = "vectordb"
    family = "vectordb"
    use_ivf = False
    # Compressed variants: a subclass names the code (create_collection(quantization=...));
    # where this tree does not know it yet, the system's rows say "not available".
    quantization: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        try:
            import vectordb  # noqa: PLC0415
            from vectordb import _core  # noqa: PLC0415
        except Exception as exc:  # noqa: BLE001 -- a half-built tree raises more than ImportError
            raise NotAvailable(f"vectordb not importable ({type(exc).__name__}: {exc}): build it "
                               f"with `python setup.py build_ext --inplace` or `pip install -e .`"
                               ) from exc
        if not hasattr(vectordb, "PersistentClient"):
            raise NotAvailable("vectordb.PersistentClient is missing (the Python API is not in "
                               "this tree yet)")
        self.vectordb, self.core = vectordb, _core
        if hasattr(_core, "set_num_threads"):
            _core.set_num_threads(self.threads)
        self.path = os.path.join(self.workdir, "vectordb")
        self.client = vectordb.PersistentClient(path=self.path)
        kwargs_ivf: dict[str, Any] = {}
        if self.use_ivf:
            self.n_clusters = int(self.options.get("n_clusters") or default_n_clusters(self.n))
            kwargs_ivf = {"use_ivf": True, "n_clusters": self.n_clusters}
        if self.quantization:
            kwargs_ivf["quantization"] = self.quantization
        try:
            self.col = self.client.create_collection(
                "bench", metadata={"hnsw:space": self.metric}, dimension=self.d, **kwargs_ivf)
        except (TypeError, ValueError) as exc:
            if not self.quantization:
                raise
            self.client.close()
            raise NotAvailable(f"vectordb has no quantization={self.quantization!r} in this tree "
                               f"({type(exc).__name__}: {exc})") from exc
        self.ids = [str(i) for i in range(self.n + 100_000)]  # made before timing: user data prep

    def version(self) -> str:
        caps = machine.vectordb_capabilities()
        kernel = caps.get("kernel", "?") if isinstance(caps, dict) else "?"
        return f"{getattr(self.vectordb, '__version__', '?')} ({kernel})"

    def config(self) -> str:
        return "PersistentClient (durable adds), exact search" + (
            f", quantization={self.quantization}" if self.quantization else "")

    def close(self):
        closer = getattr(self.client, "close", None)
        if closer:
            closer()


class VectordbIVF(VectordbExact):
    name = "vectordb-ivf"
    approximate = True
    sweep_name = "n_probe"
    use_ivf = True

    def config(self):
        st = getattr(self, "stats", None)
        if not st:
            return f"n_clusters={self.n_clusters}"
        return (f"n_clusters={st.get('n_clusters', self.n_clusters)} (list sizes min/mean/max "
                f"{st.get('list_min')}/{st.get('list_mean', 0):.0f}/{st.get('list_max')}), "
                f"PersistentClient, built in `with col.batch()`" + (
                    f", quantization={self.quantization}" if self.quantization else ""))

    def sweep(self):
        # None first: the collection's default n_probe, what a user who sets none gets
        values = self.options.get("n_probe_sweep") or N_PROBE_SWEEP
        return [None] + ([p for p in values if p <= self.n_clusters] or [self.n_clusters])

    def param_label(self):
        if self.param is None:
            return f"n_probe=default({getattr(self, 'stats', {}).get('n_probe', '?')})"
        return f"n_probe={self.param}"

    def build(self, base, batch):
        batch_cm = getattr(self.col, "batch", None)
        if batch_cm is None:
            raise NotAvailable("vectordb IVF not available: Collection.batch() is missing "
                               "(IVF issue not merged yet)")
        t0 = time.perf_counter()
        with batch_cm():
            for s, e in _batches(base.shape[0], batch):
                self.col.add(ids=self._ids(s, e), embeddings=base[s:e])
            t1 = time.perf_counter()
        t2 = time.perf_counter()  # leaving batch mode trains once and fills the lists
        self._check_trained()
        return {"train_s": t2 - t1, "add_s": t1 - t0, "build_s": t2 - t0}

    def _check_trained(self) -> None:
        stats_fn = getattr(self.col, "stats", None)
        if stats_fn is None:
            raise NotAvailable("vectordb IVF not available: Collection.stats() is missing")
        stats = stats_fn()
        self.stats = stats
        trained = stats.get("trained", stats.get("is_trained"))
        kind = str(stats.get("index", stats.get("index_kind", stats.get("kind", "")))).lower()
        if trained is False or (kind and "ivf" not in kind and trained is None):
            raise NotAvailable(f"vectordb IVF not available: after the build stats() says "
                               f"index={kind or '?'} trained={trained} (IVF issue not merged yet)")
        try:
            self.col.query(query_embeddings=np.zeros((1, self.d), np.float32) + 1.0,
                           n_results=1, include=[], n_probe=1)
        except TypeError as exc:
            raise NotAvailable(f"vectordb IVF not available: query(n_probe=...) rejected ({exc})"
                               ) from exc

    def query_one(self, q, k):
        return self.col.query(query_embeddings=q[None, :], n_results=k, include=["distances"],
                              n_probe=self.param)

    def query_batch(self, queries, k):
        return self.col.query(query_embeddings=queries, n_results=k, include=["distances"],
                              n_probe=self.param)


# ---------------------------------------------------------------------------------- numpy

class NumpyBrute(System):
    """What a user writes by hand: one matrix product and an argpartition (BLAS does the work)."""

    name = "numpy"
    family = "numpy"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data = np.empty((0, self.d), np.float32)
        self.sq = np.empty(0, np.float32)

    def version(self):
        return np.__version__

    def config(self):
        return "X @ q (BLAS) + argpartition, hand-written as a user would"

    def _prep(self, x):
        x = np.asarray(x, np.float32)
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms == 0, 1, norms)
        return np.ascontiguousarray(x, np.float32)

    def build(self, base, batch):
        t0 = time.perf_counter()
        cap = base.shape[0] + int(self.options.get("n_extra", 1000))
        self._buf = np.empty((cap, self.d), np.float32)
        self._sq = np.empty(cap, np.float32)
        self._n = 0
        for s, e in _batches(base.shape[0], batch):
            self.add(base[s:e], s)
        t1 = time.perf_counter()
        return {"train_s": None, "add_s": t1 - t0, "build_s": t1 - t0}

    def add(self, x, first_id):
        x = self._prep(x)
        m = x.shape[0]
        if self._n + m > self._buf.shape[0]:  # grow geometrically, as a list would
            grow = max(self._n + m, 2 * self._buf.shape[0])
            self._buf = np.resize(self._buf, (grow, self.d))
            self._sq = np.resize(self._sq, grow)
        self._buf[self._n:self._n + m] = x
        self._sq[self._n:self._n + m] = np.einsum("ij,ij->i", x, x)
        self._n += m
        self.data, self.sq = self._buf[: self._n], self._sq[: self._n]

    def _scores(self, dots):
        # smaller is nearer; |q|^2 is the same for every row, so it is left out
        return self.sq - 2.0 * dots if self.metric == "l2" else -dots

    def query_one(self, q, k):
        s = self._scores(self.data @ self._prep(q[None, :])[0])
        k = min(k, s.shape[0])
        top = np.argpartition(s, k - 1)[:k]
        return top[np.argsort(s[top], kind="stable")]

    def query_batch(self, queries, k):
        q = self._prep(queries)
        k = min(k, self.data.shape[0])
        out = np.empty((q.shape[0], k), np.int64)
        block = max(1, min(1024, (1 << 24) // max(1, self.data.shape[0])))  # <= 64 MB of scores
        for s in range(0, q.shape[0], block):
            sc = self._scores(q[s:s + block] @ self.data.T)
            top = np.argpartition(sc, k - 1, axis=1)[:, :k]
            order = np.argsort(np.take_along_axis(sc, top, 1), axis=1, kind="stable")
            out[s:s + block] = np.take_along_axis(top, order, 1)
        return out

    def disk_bytes(self):
        path = os.path.join(self.workdir, "numpy.npy")
        np.save(path, self.data)
        return machine.file_bytes(path)


# ---------------------------------------------------------------------------------- faiss

class FaissFlat(System):
    name = "faiss-flat"
    family = "faiss"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faiss = _import("faiss", "faiss-cpu")
        self.faiss.omp_set_num_threads(self.threads)
        self.faiss_metric = self.faiss.METRIC_L2 if self.metric == "l2" else \
            self.faiss.METRIC_INNER_PRODUCT
        self.index = self._make()

    def _make(self):
        return self.faiss.IndexFlatL2(self.d) if self.metric == "l2" else \
            self.faiss.IndexFlatIP(self.d)

    def config(self):
        return "IndexFlatL2" if self.metric == "l2" else "IndexFlatIP" + (
            " on normalized vectors" if self.metric == "cosine" else "")

    def version(self):
        return self.faiss.__version__

    def _prep(self, x):
        x = np.ascontiguousarray(x, np.float32)
        if self.metric == "cosine":  # faiss has no cosine: normalize, then inner product
            x = x.copy()
            self.faiss.normalize_L2(x)
        return x

    def build(self, base, batch):
        t0 = time.perf_counter()
        for s, e in _batches(base.shape[0], batch):
            self.index.add(self._prep(base[s:e]))
        t1 = time.perf_counter()
        return {"train_s": None, "add_s": t1 - t0, "build_s": t1 - t0}

    def query_one(self, q, k):
        return self.index.search(self._prep(q[None, :]), k)[1]

    def query_batch(self, queries, k):
        return self.index.search(self._prep(queries), k)[1]

    def add(self, x, first_id):
        self.index.add(self._prep(x))

    def disk_bytes(self):
        path = os.path.join(self.workdir, f"{self.name}.index")
        self.faiss.write_index(self.index, path)
        return machine.file_bytes(path)


class FaissIVF(FaissFlat):
    name = "faiss-ivf"
    approximate = True
    sweep_name = "n_probe"

    def _make(self):
        self.n_clusters = int(self.options.get("n_clusters") or default_n_clusters(self.n))
        self.quantizer = FaissFlat._make(self)
        return self.faiss.IndexIVFFlat(self.quantizer, self.d, self.n_clusters, self.faiss_metric)

    def config(self):
        return f"IndexIVFFlat nlist={self.n_clusters}"

    def sweep(self):
        values = self.options.get("n_probe_sweep") or N_PROBE_SWEEP
        return [p for p in values if p <= self.n_clusters] or [self.n_clusters]

    def set_param(self, value):
        self.param = value
        self.index.nprobe = int(value)

    def build(self, base, batch):
        t0 = time.perf_counter()
        self.index.train(self._prep(base))  # faiss subsamples to 256 points per list itself
        t1 = time.perf_counter()
        for s, e in _batches(base.shape[0], batch):
            self.index.add(self._prep(base[s:e]))
        t2 = time.perf_counter()
        return {"train_s": t1 - t0, "add_s": t2 - t1, "build_s": t2 - t0}


def _pq_subquantizers(d: int) -> int:
    """The largest M <= d / 4 dividing d (4-bit fast-scan PQ: 96 sub-quantizers at d = 384)."""
    m = max(1, d // 4)
    while d % m:
        m -= 1
    return m


class FaissIVFRefine(FaissIVF):
    """IVF over compressed codes, then exact re-ranking of k * k_factor candidates against the
    float32 vectors (IndexRefineFlat): faiss's answer to "compact lists, exact results"."""

    name = "faiss-ivf-sq8"
    code = "SQ8"
    k_factor = 2

    def _make(self):
        self.n_clusters = int(self.options.get("n_clusters") or default_n_clusters(self.n))
        self.k_factor = int(self.options.get(f"k_factor_{self.name}", self.k_factor))
        spec = f"IVF{self.n_clusters},{self.code}"
        try:
            self.base_index = self.faiss.index_factory(self.d, spec, self.faiss_metric)
        except RuntimeError as exc:
            raise NotAvailable(f"faiss {self.faiss.__version__} cannot build {spec}: {exc}") from exc
        index = self.faiss.IndexRefineFlat(self.base_index)
        index.k_factor = self.k_factor
        return index

    def config(self):
        return f"index_factory('IVF{self.n_clusters},{self.code}') + IndexRefineFlat k_factor={self.k_factor}"

    def set_param(self, value):
        self.param = value
        self.faiss.extract_index_ivf(self.base_index).nprobe = int(value)


class FaissIVFPQFastScanRefine(FaissIVFRefine):
    name = "faiss-ivf-pqfs"
    k_factor = 8

    def _make(self):
        self.code = f"PQ{_pq_subquantizers(self.d)}x4fs"
        return super()._make()


class FaissIVFRaBitQRefine(FaissIVFRefine):
    name = "faiss-ivf-rabitq"
    code = "RaBitQ"
    k_factor = 8


class FaissHNSW(FaissFlat):
    name = "faiss-hnsw"
    approximate = True
    sweep_name = "ef"

    def _make(self):
        self.m = int(self.options.get("hnsw_m", HNSW_M))
        index = self.faiss.IndexHNSWFlat(self.d, self.m, self.faiss_metric)
        index.hnsw.efConstruction = int(self.options.get("hnsw_ef_construction",
                                                         HNSW_EF_CONSTRUCTION))
        return index

    def config(self):
        return f"IndexHNSWFlat M={self.m} efConstruction={self.index.hnsw.efConstruction}"

    def sweep(self):
        return list(self.options.get("ef_sweep") or EF_SWEEP)

    def set_param(self, value):
        self.param = value
        self.index.hnsw.efSearch = int(value)


# ---------------------------------------------------------------------------------- hnswlib

class Hnswlib(System):
    name = "hnswlib"
    family = "hnswlib"
    approximate = True
    sweep_name = "ef"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hnswlib = _import("hnswlib", "hnswlib")
        self.m = int(self.options.get("hnsw_m", HNSW_M))
        self.ef_construction = int(self.options.get("hnsw_ef_construction", HNSW_EF_CONSTRUCTION))
        self.index = self.hnswlib.Index(space=self.metric, dim=self.d)
        self.index.init_index(max_elements=self.n + int(self.options.get("n_extra", 1000)),
                              ef_construction=self.ef_construction, M=self.m, random_seed=100)
        self.index.set_num_threads(self.threads)

    def version(self):
        from importlib.metadata import version  # noqa: PLC0415

        return version("hnswlib")

    def config(self):
        return f"M={self.m} ef_construction={self.ef_construction}"

    def sweep(self):
        return list(self.options.get("ef_sweep") or EF_SWEEP)

    def set_param(self, value):
        self.param = value
        self.index.set_ef(int(value))

    def build(self, base, batch):
        t0 = time.perf_counter()
        for s, e in _batches(base.shape[0], batch):
            self.index.add_items(base[s:e], np.arange(s, e), num_threads=self.threads)
        t1 = time.perf_counter()
        return {"train_s": None, "add_s": t1 - t0, "build_s": t1 - t0}

    def query_one(self, q, k):
        return self.index.knn_query(q[None, :], k=k, num_threads=1)[0]

    def query_batch(self, queries, k):
        return self.index.knn_query(queries, k=k, num_threads=self.threads)[0]

    def rows(self, raw, k):
        return np.asarray(raw, dtype=np.int64).reshape(-1, k)

    def add(self, x, first_id):
        self.index.add_items(x, np.arange(first_id, first_id + x.shape[0]),
                             num_threads=self.threads)

    def disk_bytes(self):
        path = os.path.join(self.workdir, "hnswlib.bin")
        self.index.save_index(path)
        return machine.file_bytes(path)


# ---------------------------------------------------------------------------------- chromadb

class Chroma(ChromaApiSystem):
    name = "chromadb"
    family = "chromadb"
    approximate = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chromadb = _import("chromadb", "chromadb")
        from chromadb.config import Settings  # noqa: PLC0415

        self.path = os.path.join(self.workdir, "chroma")
        self.client = self.chromadb.PersistentClient(
            path=self.path, settings=Settings(anonymized_telemetry=False))
        # defaults otherwise (ef_search 100, M 16): what a chromadb user gets
        self.col = self.client.create_collection(
            "bench", configuration={"hnsw": {"space": self.metric, "num_threads": self.threads}})
        self.ids = [str(i) for i in range(self.n + 100_000)]

    def version(self):
        return self.chromadb.__version__

    def config(self):
        return "PersistentClient, HNSW defaults (M=16, ef_construction=100, ef_search=100)"

    def param_label(self):
        return "ef_search=100"

    def close(self):
        self.col = None
        self.client = None


class VectordbSQ8(VectordbExact):
    name = "vectordb-sq8"
    quantization = "sq8"


class VectordbIVFSQ8(VectordbIVF):
    name = "vectordb-ivf-sq8"
    quantization = "sq8"


class VectordbIVFPQ4(VectordbIVF):
    name = "vectordb-ivf-pq4"
    quantization = "pq4"


SYSTEMS: dict[str, type[System]] = {cls.name: cls for cls in (
    VectordbExact, VectordbIVF, VectordbSQ8, VectordbIVFSQ8, VectordbIVFPQ4, NumpyBrute, FaissFlat, FaissIVF,
    FaissIVFRefine, FaissIVFPQFastScanRefine, FaissIVFRaBitQRefine, FaissHNSW, Hnswlib, Chroma)}
ALL_SYSTEMS = tuple(SYSTEMS)


def make_system(name: str, **kwargs) -> System:
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; expected one of {', '.join(SYSTEMS)}")
    return SYSTEMS[name](**kwargs)


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
