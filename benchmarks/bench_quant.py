"""Quantized search (quantization="sq8") on real text embeddings, one thread, side by side with faiss
and hnswlib in one run: single-query p50 latency and recall@10 against the exact ground truth.

    python benchmarks/bench_quant.py --data DIR            # DIR/minilm/{base,queries_dev,gt_dev}.npy
    VECTORDB_BENCH_DATA=DIR python benchmarks/bench_quant.py --quick
    python benchmarks/bench_quant.py --synthetic --quick  # no data needed (the harness test)

Sections: exact search (vectordb float32 and sq8 flat, faiss IndexFlatIP; sq8 must return the
float32 answers: checked and printed), IVF sweeps over n_probe (vectordb IVF float32 / sq8, faiss
IVF-SQ8 + refine, IVF-RaBitQ + refine, IVF-PQ 4-bit fast-scan + refine) and hnswlib over ef, and
memory (the engine's bytes_in_memory beside the raw float32 size). Missing peers are reported as
not available. Skips (exit 0) when the data directory is absent.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy loads its BLAS: one thread for every system

import numpy as np  # noqa: E402

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `vectordb` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vectordb  # noqa: E402
from vectordb import _core  # noqa: E402

K = 10


def load(args):
    if args.synthetic:
        rng = np.random.default_rng(0)
        n, d = (6000, 48) if args.quick else (50_000, 128)
        centres = rng.standard_normal((64, d))
        base = centres[rng.integers(0, 64, n)] + rng.standard_normal((n, d)) * 0.7
        base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
        queries = base[rng.integers(0, n, 40)] + rng.standard_normal((40, d)).astype(np.float32) * 0.1
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        gt = np.argsort(-(queries.astype(np.float64) @ base.T.astype(np.float64)), axis=1)[:, :K]
        return "synthetic", base, queries, gt
    root = args.data or os.environ.get("VECTORDB_BENCH_DATA")
    path = os.path.join(root, "minilm") if root else None
    if not path or not os.path.exists(os.path.join(path, "base.npy")):
        print(f"skipped: no minilm data set (give --data DIR or VECTORDB_BENCH_DATA; looked in {path})")
        sys.exit(0)
    base = np.load(os.path.join(path, "base.npy"))
    queries = np.load(os.path.join(path, "queries_dev.npy"))
    gt = np.load(os.path.join(path, "gt_dev.npy"))[:, :K]
    nq = 50 if args.quick else args.queries
    return "minilm", base, queries[:nq], gt[:nq]


def recall(found, gt):
    return float(np.mean([len(set(f) & set(g)) / K for f, g in zip(found, gt)]))


def timed(search, queries, repeats):
    """(p50 seconds, results of the last pass): each query alone, `repeats` passes."""
    times, out = [], None
    for _ in range(repeats):
        out = []
        for q in queries:
            t0 = time.perf_counter()
            out.append(search(q))
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def row(table, system, param, p50, rec, build=None, extra=""):
    table.append((system, param, p50, rec, build, extra))
    b = "" if build is None else f"{build:8.1f}"
    print(f"| {system:<34} | {param:<12} | {p50 * 1e6:9.0f} | {rec:6.3f} | {b:>8} | {extra}", flush=True)


def vectordb_collection(base, tmp, name, **kw):
    client = vectordb.PersistentClient(os.path.join(tmp, name))
    col = client.create_collection("bench", metadata={"hnsw:space": "cosine"}, **kw)
    ids = [str(i) for i in range(len(base))]
    t0 = time.perf_counter()
    col.begin_batch()
    for s in range(0, len(base), 5000):
        col.add(ids=ids[s:s + 5000], embeddings=base[s:s + 5000])
    col.end_batch()
    return client, col, time.perf_counter() - t0


def vdb_search(col, n_probe=None):
    def search(q):
        r = col.query(query_embeddings=q[None], n_results=K, n_probe=n_probe, include=["distances"])
        return [int(i) for i in r["ids"][0]], r["distances"][0]
    return search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="directory holding minilm/ (default: $VECTORDB_BENCH_DATA)")
    ap.add_argument("--quick", action="store_true", help="50 queries, a short sweep")
    ap.add_argument("--synthetic", action="store_true", help="clustered random unit vectors instead of minilm")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    name, base, queries, gt = load(args)
    n, d = base.shape
    n_lists = int(round(np.sqrt(n)))
    probes = [8, 32] if args.quick else [8, 16, 24, 32, 48, 64]
    efs = [16, 64] if args.quick else [16, 24, 32, 48, 64, 96]
    _core.set_num_threads(1)
    try:
        import faiss
        faiss.omp_set_num_threads(1)
    except ImportError:
        faiss = None
    try:
        import hnswlib
    except ImportError:
        hnswlib = None
    print(f"# {name}: {n} x {d} (cosine), {len(queries)} queries, k={K}, one thread, single-query p50")
    print(f"# CPU kernels: {_core.capabilities()['kernel']}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (a loaded machine slows every system alike: compare within this run)")
    print("| system | param | p50 us | recall@10 | build s | notes |\n|---|---|---:|---:|---:|---|")
    table: list = []
    raw = n * d * 4
    with tempfile.TemporaryDirectory() as tmp:
        # ---- exact
        results = {}
        for quant in (None, "sq8"):
            client, col, build = vectordb_collection(base, tmp, f"flat-{quant}", quantization=quant)
            p50, out = timed(vdb_search(col), queries, args.repeats)
            results[quant] = out
            mem = col.stats()["bytes_in_memory"]
            row(table, f"vectordb flat {quant or 'float32'}", "exact", p50, recall([o[0] for o in out], gt), build,
                f"engine memory {mem / raw:.2f}x raw float32")
            client.close()
        same = all(a[0] == b[0] and a[1] == b[1] for a, b in zip(results[None], results["sq8"]))
        print(f"# sq8 flat answers identical to float32 flat (ids and float32 distances): {same}")
        if faiss is not None:
            index = faiss.IndexFlatIP(d)
            t0 = time.perf_counter()
            index.add(base)
            build = time.perf_counter() - t0
            p50, out = timed(lambda q: index.search(q[None], K)[1][0].tolist(), queries, args.repeats)
            agree = all(a == b[0] for a, b in zip(out, results["sq8"]))
            row(table, "faiss IndexFlatIP", "exact", p50, recall(out, gt), build,
                f"same ids as vectordb sq8: {agree}")
        else:
            print("| faiss | not available | | | | |")

        # ---- IVF
        for quant in (None, "sq8"):
            client, col, build = vectordb_collection(base, tmp, f"ivf-{quant}", use_ivf=True, n_clusters=n_lists,
                                                     quantization=quant)
            for npb in probes:
                p50, out = timed(vdb_search(col, npb), queries, args.repeats)
                row(table, f"vectordb IVF {quant or 'float32'} ({n_lists} lists)", f"n_probe {npb}", p50,
                    recall([o[0] for o in out], gt), build if npb == probes[0] else None)
            client.close()
        if faiss is not None:
            variants = [
                ("faiss IVF-SQ8 + refine x2", lambda q: faiss.IndexIVFScalarQuantizer(
                    q, d, n_lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT), 2),
                ("faiss IVF-RaBitQ + refine x8", lambda q: faiss.IndexIVFRaBitQ(
                    q, d, n_lists, faiss.METRIC_INNER_PRODUCT), 8),
                ("faiss IVF-PQ4 fast-scan + refine x8", lambda q: faiss.IndexIVFPQFastScan(
                    q, d, n_lists, d // 4 if d % 4 == 0 else d, 4, faiss.METRIC_INNER_PRODUCT), 8),
            ]
            for label, make, k_factor in variants:
                try:
                    coarse = faiss.IndexFlatIP(d)
                    ivf = make(coarse)
                    index = faiss.IndexRefineFlat(ivf)
                    index.k_factor = k_factor
                    t0 = time.perf_counter()
                    index.train(base)
                    index.add(base)
                    build = time.perf_counter() - t0
                except (AttributeError, RuntimeError) as e:
                    print(f"| {label} | not available ({e}) | | | | |")
                    continue
                for npb in probes:
                    ivf.nprobe = npb
                    p50, out = timed(lambda q: index.search(q[None], K)[1][0].tolist(), queries, args.repeats)
                    row(table, label, f"nprobe {npb}", p50, recall(out, gt), build if npb == probes[0] else None)
        if hnswlib is not None:
            index = hnswlib.Index(space="ip", dim=d)
            t0 = time.perf_counter()
            index.init_index(max_elements=n, M=16, ef_construction=200)
            index.set_num_threads(1)
            index.add_items(base)
            build = time.perf_counter() - t0
            for ef in efs:
                index.set_ef(max(ef, K))
                p50, out = timed(lambda q: index.knn_query(q[None], k=K)[0][0].tolist(), queries, args.repeats)
                row(table, "hnswlib (M=16)", f"ef {ef}", p50, recall(out, gt), build if ef == efs[0] else None)
        else:
            print("| hnswlib | not available | | | | |")

    print("\n# fastest setting at recall@10 >= 0.95, per system")
    best: dict = {}
    for system, param, p50, rec, _, _ in table:
        if rec >= 0.95 and (system not in best or p50 < best[system][1]):
            best[system] = (param, p50, rec)
    for system, (param, p50, rec) in sorted(best.items(), key=lambda kv: kv[1][1]):
        print(f"| {system:<34} | {param:<12} | {p50 * 1e6:9.0f} us | recall {rec:.3f} |")


if __name__ == "__main__":
    main()
