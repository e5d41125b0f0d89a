"""IVF partition quality: vectordb's k-means against faiss's, at equal n_clusters and training sample.

    python benchmarks/bench_partition.py                    # blobs2, lowdim, blobs at 100k x 128
    python benchmarks/bench_partition.py --data-dir DIR     # ... and minilm (DIR/minilm)
    python benchmarks/bench_partition.py --quick            # 20k-vector sets, a minute or two

Both train on the same sample (256 points per list, as the IVF index and faiss do) with their
defaults: vectordb `_core.kmeans_train` (the IVF index's k-means) and faiss `IndexIVFFlat.train`.
Then one evaluator judges both partitions alike: every base vector goes to its nearest centroid
(as an IVF add does), and for each held-out query the n_probe lists of nearest centroid are
searched exactly. Columns: the k-means objective over the whole base (mean squared distance to
the assigned centroid; cosine: mean 1 - dot with unit centroids), list-size balance (largest list
/ mean, coefficient of variation, faiss's imbalance factor k * sum(size^2) / n^2, empty lists),
and recall@10 at each n_probe, with the recall at vectordb's default n_probe and at the rules
tried for it. Results: benchmarks/results/<date>-partition.md.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import datasets, machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SWEEP = (1, 4, 8, 16, 32, 64)
SEED = 1234


def blobs2(n: int, d: int, nq: int, seed: int = 7, box: float = 10.0) -> datasets.Dataset:
    """Overlapping Gaussian blobs: 1,000 centres uniform in [-10, 10]^d, std 2 (make_blobs style,
    wider than the `blobs` kind's std 1), exact float64 ground truth."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-box, box, (1000, d)).astype(np.float32)
    labels = rng.integers(0, 1000, n + nq)
    x = centres[labels] + 2.0 * rng.standard_normal((n + nq, d), dtype=np.float32)
    base, queries = np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])
    gt_ids, gt_dist = datasets.exact_knn(base, queries, datasets.GT_K, "l2")
    spec = datasets.DatasetSpec("blobs", n=n, d=d, nq=nq)
    return datasets.Dataset(spec, base, queries, base[:0], gt_ids, gt_dist, Path("."),
                            "Gaussian blobs, 1,000 centres in [-10, 10]^d, std 2")


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def assign(x: np.ndarray, cent: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row and its k-means distance (squared L2, or 1 - dot)."""
    out = np.empty(x.shape[0], np.int64)
    dist = np.empty(x.shape[0], np.float64)
    c64 = cent.astype(np.float64)
    csq = np.einsum("ij,ij->i", c64, c64)
    for s in range(0, x.shape[0], 8192):
        xb = x[s:s + 8192].astype(np.float64)
        if metric == "cosine":
            xb = _unit(xb)
        dot = xb @ c64.T
        if metric == "l2":
            d2 = np.einsum("ij,ij->i", xb, xb)[:, None] + csq[None, :] - 2 * dot
            out[s:s + 8192] = np.argmin(d2, 1)
            dist[s:s + 8192] = np.maximum(d2[np.arange(len(xb)), out[s:s + 8192]], 0)
        else:
            out[s:s + 8192] = np.argmax(dot, 1)
            dist[s:s + 8192] = 1 - dot[np.arange(len(xb)), out[s:s + 8192]]
    return out, dist


def ivf_recall(ds: datasets.Dataset, cent: np.ndarray, lists: np.ndarray, n_probes, k: int = 10) -> dict:
    """recall@10 of an exact search restricted to each query's n_probe nearest lists."""
    metric = ds.metric
    q = ds.queries.astype(np.float64)
    base = ds.base
    if metric == "cosine":
        q = _unit(q)
    c64 = cent.astype(np.float64)
    rank_score = (np.einsum("ij,ij->i", c64, c64)[None, :] - 2 * q @ c64.T) if metric == "l2" else -(q @ c64.T)
    order = np.argsort(rank_score, axis=1, kind="stable")
    members = [np.flatnonzero(lists == j) for j in range(cent.shape[0])]
    out = {}
    for p in n_probes:
        ids = np.full((q.shape[0], k), -1, np.int64)
        for i in range(q.shape[0]):
            cand = np.concatenate([members[j] for j in order[i, :p]])
            if cand.size == 0:
                continue
            xb = base[cand].astype(np.float64)
            if metric == "cosine":
                xb = _unit(xb)
            sc = ((xb - q[i]) ** 2).sum(1) if metric == "l2" else -(xb @ q[i])
            top = np.argsort(sc, kind="stable")[:k]
            ids[i, :top.size] = cand[top]
        out[p] = datasets.recall_at_k(ids, ds, k)
    return out


def balance(lists: np.ndarray, k: int) -> dict:
    sizes = np.bincount(lists, minlength=k).astype(np.float64)
    n = sizes.sum()
    return {"max/mean": sizes.max() / sizes.mean(), "cv": sizes.std() / sizes.mean(),
            "imbalance": k * float((sizes ** 2).sum()) / n ** 2, "empty": int((sizes == 0).sum()),
            "min": int(sizes.min()), "max": int(sizes.max())}


def train_vectordb(sample: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, float, dict]:
    from vectordb import _core  # noqa: PLC0415

    t0 = time.perf_counter()
    cent, st = _core.kmeans_train(metric, sample, k, SEED)
    return cent, time.perf_counter() - t0, st


def train_faiss(sample: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, float, dict]:
    import faiss  # noqa: PLC0415

    d = sample.shape[1]
    x = np.ascontiguousarray(sample, np.float32)
    if metric == "cosine":
        x = x.copy()
        faiss.normalize_L2(x)
    fm = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    quant = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quant, d, k, fm)
    index.cp.seed = SEED
    t0 = time.perf_counter()
    index.train(x)
    secs = time.perf_counter() - t0
    return quant.reconstruct_n(0, k), secs, {"iterations": index.cp.niter}


def default_n_probe(n_lists: int) -> int:
    """vectordb's rule for a collection without n_probe: max(16, ceil(3 sqrt(n_lists))), capped."""
    return min(max(16, math.isqrt(9 * n_lists - 1) + 1), n_lists)


def run_set(ds: datasets.Dataset, sweep, log=print) -> list[dict]:
    n = ds.base.shape[0]
    k = max(1, int(round(math.sqrt(n))))
    rng = np.random.default_rng(SEED)
    m = min(n, 256 * k)
    sample = np.ascontiguousarray(ds.base[np.sort(rng.choice(n, m, replace=False))], np.float32)
    rows = []
    probes = sorted({p for p in sweep if p <= k} | {default_n_probe(k)})
    for name, train in (("vectordb", train_vectordb), ("faiss", train_faiss)):
        try:
            cent, secs, st = train(sample, k, ds.metric)
        except ImportError as exc:
            log(f"  {name}: not available ({exc})")
            continue
        lists, dist = assign(ds.base, cent, ds.metric)
        row = {"set": ds.name, "system": name, "n_lists": k, "train_s": secs,
               "objective": float(dist.mean()), **balance(lists, k),
               "recall": ivf_recall(ds, cent, lists, probes), "stats": st}
        log(f"  {name:9s} train {secs:6.2f} s  objective {row['objective']:.5g}  max/mean "
            f"{row['max/mean']:.2f}  imbalance {row['imbalance']:.3f}  recall "
            + " ".join(f"{p}:{r:.3f}" for p, r in row["recall"].items()))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    probes = sorted({p for r in rows for p in r["recall"]})
    head = ("| set | system | lists | train s | objective | max/mean | cv | imbalance | empty | "
            + " | ".join(f"R@{p}" for p in probes) + " |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(probes)]
    for r in rows:
        lines.append(f"| {r['set']} | {r['system']} | {r['n_lists']} | {r['train_s']:.2f} | "
                     f"{r['objective']:.5g} | {r['max/mean']:.2f} | {r['cv']:.3f} | "
                     f"{r['imbalance']:.3f} | {r['empty']} | "
                     + " | ".join(f"{r['recall'][p]:.3f}" if p in r["recall"] else "" for p in probes)
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data-dir", help=f"external sets (minilm/); default ${datasets.DATA_ENV}")
    p.add_argument("--sets", default="blobs2,lowdim,blobs,minilm")
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    n = 20_000 if args.quick else 100_000
    nq = min(args.nq, 200) if args.quick else args.nq
    root = datasets.data_root(args.data_dir)
    print(machine.machine_markdown(machine.machine_summary()), flush=True)
    rows: list[dict] = []
    for name in args.sets.split(","):
        if name == "blobs2":
            ds = blobs2(n, 128, nq)
            label = f"blobs2-{datasets.human_count(n)}-128"
        elif name == "minilm":
            why = datasets.minilm_missing(root)
            if why:
                print(f"! skipping minilm: {why}")
                continue
            ds = datasets.load(datasets.DatasetSpec("minilm", nq=nq, path=str(root / "minilm")))
            label = ds.name
        else:
            ds = datasets.load(datasets.DatasetSpec(name, n=n, d=128, nq=nq))
            label = ds.name
        print(f"## {label}", flush=True)
        for r in run_set(ds, SWEEP):
            r["set"] = label
            rows.append(r)
    md = markdown(rows)
    print(md)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{datetime.date.today().isoformat()}-partition.md"
    path.write_text(f"# IVF partition quality\n\n`python benchmarks/bench_partition.py "
                    f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
                    f"{machine.machine_markdown(machine.machine_summary())}\n\n{md}\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
