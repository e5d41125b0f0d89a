"""Flat (exact) batch search time by batch size, filtered or not: the engine call _core.flat_search.

    python benchmarks/bench_flat_batch.py                      # 50k x 384 cosine, one thread
    python benchmarks/bench_flat_batch.py --baseline OTHER.so  # beside another build of _core

For each batch size it times one flat_search call over the batch, unfiltered and with a filter
allowing half the rows, against the same queries searched one at a time (what every batch must
equal bit for bit; checked here too). With --baseline, a second build of the engine (another
checkout's vectordb/_core*.so) is timed in the same rounds, so before/after compare under the
same load. Systems and sizes are interleaved in rounds; the table gives the median and the
minimum over rounds. The machine may be shared: compare columns of one run, not runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `vectordb` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import cpu_info  # noqa: E402


def load_core(path: str):
    """Another build of the engine module, loaded beside this tree's under its own name."""
    spec = importlib.util.spec_from_file_location("_core", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline {path}: not a loadable extension module")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--metric", default="cosine", choices=["l2", "ip", "cosine"])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--sizes", default="1,2,4,8,12,16,32", help="batch sizes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--baseline", help="path of another build's vectordb/_core*.so to time beside this one")
    a = p.parse_args(argv)

    from vectordb import _core  # noqa: PLC0415

    cores = {"this build": _core}
    if a.baseline:
        cores["baseline"] = load_core(a.baseline)
    for core in cores.values():
        core.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((a.n, a.d)).astype(np.float32)
    sizes = [int(s) for s in a.sizes.split(",")]
    queries = rng.standard_normal((max(sizes), a.d)).astype(np.float32)
    half = rng.random(a.n) < 0.5
    cases = [(nq, filt) for nq in sizes for filt in (None, half)]

    for name, core in cores.items():  # every batch is each query's single answer, bit for bit
        for nq, filt in cases:
            got = core.flat_search(a.metric, data, queries[:nq], a.k, filt)
            alone = [core.flat_search(a.metric, data, queries[i:i + 1], a.k, filt) for i in range(nq)]
            if not (np.array_equal(got[1], np.vstack([o[1] for o in alone]))
                    and np.array_equal(got[0], np.vstack([o[0] for o in alone]))):
                print(f"! {name}: a batch of {nq} differs from its queries alone")

    times: dict = {}
    loads = []
    for r in range(a.rounds):
        loads.append(os.getloadavg()[0])
        order = list(cores.items())
        order = order[r % len(order):] + order[:r % len(order)]
        for name, core in order:
            for nq, filt in cases:
                t0 = time.perf_counter()
                core.flat_search(a.metric, data, queries[:nq], a.k, filt)
                times.setdefault((name, nq, filt is not None), []).append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                for i in range(nq):
                    core.flat_search(a.metric, data, queries[i:i + 1], a.k, filt)
                times.setdefault((name, nq, filt is not None, "alone"), []).append((time.perf_counter() - t0) * 1e3)
    loads.append(os.getloadavg()[0])

    cpu = cpu_info()
    print(f"# flat_search batches: {a.n:,} x {a.d} {a.metric}, k={a.k}, {a.threads} thread(s); "
          f"{cpu['model']}, {cpu['cores']} cores; load average {min(loads):.2f}-{max(loads):.2f}; "
          f"kernel {_core.capabilities()['kernel']}")
    print("# ms per call, median (min) over rounds; 'alone' = the same queries one call each; "
          "filter: half the rows allowed\n")
    head = "| queries | filter |" + "".join(f" {n} batch | {n} alone |" for n in cores)
    print(head)
    print("|---:|---|" + "---:|---:|" * len(cores))
    for nq, filt in cases:
        f = filt is not None
        cells = []
        for n in cores:
            for key in ((n, nq, f), (n, nq, f, "alone")):
                v = times[key]
                cells.append(f"{np.median(v):.1f} ({min(v):.1f})")
        print(f"| {nq} | {'half' if f else 'none'} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
