"""The k-means assignment kernel (csrc/vdb_nearest.c: nearest centroid of each point, a blocked GEMM
with the argmin fused in) in GFLOPS, one thread, per SIMD variant, beside NumPy (BLAS sgemm, then
argmin) and faiss (IndexFlatL2.search with k=1, what faiss's k-means runs).

    python benchmarks/bench_assign.py            # three shapes (~1 minute)
    python benchmarks/bench_assign.py --quick    # one small shape

GFLOPS counts 2 * n * k * d. Each time is the best of --repeats calls; vectordb's includes packing
the centroids into panels (done once per call here, once per training iteration in k-means).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy loads its BLAS: one thread for every system

import numpy as np  # noqa: E402

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine  # noqa: E402
from vectordb import _core  # noqa: E402

SHAPES = [(20_000, 1_000, 128), (5_000, 4_096, 768), (2_000, 100, 1_280)]  # (n points, k centroids, d)
QUICK_SHAPES = [(5_000, 256, 128)]


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    caps = _core.capabilities()
    isas = ["serial"] + [isa for isa in ("avx2", "avx512") if isa in caps["detected"]]
    try:
        import faiss  # noqa: PLC0415
        faiss.omp_set_num_threads(1)
    except ImportError:
        faiss = None
    print("# k-means assignment, one thread\n")
    print(f"`python benchmarks/bench_assign.py{' --quick' if args.quick else ''}`\n")
    print(machine.machine_markdown(machine.machine_summary()) + "\n")
    cols = [f"vectordb {isa}" for isa in isas] + ["numpy (sgemm + argmin)"] + (["faiss IndexFlatL2"] if faiss else [])
    print("| n x k x d | " + " | ".join(f"{c} GFLOPS" for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    rng = np.random.default_rng(7)
    for n, k, d in QUICK_SHAPES if args.quick else SHAPES:
        x = rng.standard_normal((n, d)).astype(np.float32)
        c = rng.standard_normal((k, d)).astype(np.float32)
        bias = (c.astype(np.float64) ** 2).sum(1).astype(np.float32)
        flops = 2.0 * n * k * d
        want = None
        row = []
        for isa in isas:
            t = best_time(lambda isa=isa: _core.nearest_centroids(isa, x, c, bias), args.repeats)
            idx = _core.nearest_centroids(isa, x, c, bias)[0]
            want = idx if want is None else want
            row.append(f"{flops / t / 1e9:.1f}")
        t = best_time(lambda: np.argmin(bias[None, :] - 2.0 * (x @ c.T), axis=1), args.repeats)
        row.append(f"{flops / t / 1e9:.1f}")
        if faiss:
            index = faiss.IndexFlatL2(d)
            index.add(c)
            t = best_time(lambda: index.search(x, 1), args.repeats)
            row.append(f"{flops / t / 1e9:.1f}")
            agree = float(np.mean(index.search(x, 1)[1][:, 0] == want))
            row[-1] += f" (same answer {agree:.1%})"
        print(f"| {n:,} x {k:,} x {d} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
