"""Open time and resident memory of a stored collection: flat float32, flat sq8, IVF float32, IVF sq8
and IVF pq4, measured in a fresh process each (open = PersistentClient + get_collection + count; then
the first query, then 20 more; queries are drawn like the data). RSS is split into anonymous memory
(what the process owns) and mapped file pages (the snapshot's vectors: page cache, reclaimable);
"resident / raw" is both together after the queries over the raw float32 size (n x d x 4). Each
collection is opened twice: first with its files dropped from the page cache (cold: open reads what
it reads from disk, and a query pages in only what it touches, so the mapped pages are the process's
real footprint; memory is from this run), then again (warm: what the first run read is cached).

    python -m benchmarks.bench_open --quick            # 200k x 128 (a few minutes)
    python -m benchmarks.bench_open --sizes 1000000x128 200000x384
    python -m benchmarks.bench_open --sizes 1000000x384 --kinds "ivf sq8" "ivf pq4"   # ~10 GB free RAM
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.machine import machine_markdown, machine_summary

KINDS = {
    "flat": {},
    "flat sq8": {"quantization": "sq8"},
    "ivf": {"use_ivf": True},
    "ivf sq8": {"use_ivf": True, "quantization": "sq8"},
    "ivf pq4": {"use_ivf": True, "quantization": "pq4"},
}

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0
def mem():
    return {"anon": status("RssAnon"), "file": status("RssFile")}
import vectordb
from vectordb import _core
d = int(sys.argv[2])
# Queries drawn like the data (the build's centres, another draw of points): what a user asks.
centres = np.random.default_rng(0).standard_normal((1000, d)).astype(np.float32) * 3
rq = np.random.default_rng(1)
q = centres[rq.integers(0, len(centres), 21)] + rq.standard_normal((21, d), dtype=np.float32)
m0 = mem()
t = time.perf_counter()
client = vectordb.PersistentClient(sys.argv[1])
col = client.get_collection("bench", embedding_function=None)
n = col.count()
t_open = time.perf_counter() - t
m1 = mem()
t = time.perf_counter()
col.query(query_embeddings=q[:1], n_results=10, include=[])
t_first = time.perf_counter() - t
m2 = mem()
lat, reranked = [], 0
for i in range(1, 21):
    t = time.perf_counter()
    col.query(query_embeddings=q[i:i + 1], n_results=10, include=[])
    lat.append(time.perf_counter() - t)
    reranked += _core.last_reranked()
m3 = mem()
client.close()
print(json.dumps({"n": n, "open": t_open, "first": t_first, "p50": sorted(lat)[10], "m0": m0, "m1": m1,
                  "m2": m2, "m3": m3, "reranked": reranked / 20}))
"""


def build(path: str, n: int, d: int, kw: dict) -> float:
    """Builds the collection in batch mode and checkpoints it; returns the seconds of add + checkpoint
    (the data is generated before the clock starts)."""
    import vectordb

    rng = np.random.default_rng(0)
    # Clustered like embeddings (1,000 blobs), not iid Gaussian: that would make every distance
    # alike, and any code's bounds useless.
    centres = rng.standard_normal((1000, d)).astype(np.float32) * 3
    x = centres[rng.integers(0, len(centres), n)]
    x += rng.standard_normal((n, d), dtype=np.float32)
    ids = [str(j) for j in range(n)]
    client = vectordb.PersistentClient(path)
    col = client.create_collection("bench", embedding_function=None, **kw)
    t = time.perf_counter()
    step = 50_000
    with col.batch():
        for i in range(0, n, step):
            col.add(ids=ids[i:i + step], embeddings=x[i:i + step])
    col.checkpoint()
    took = time.perf_counter() - t
    client.close()
    return took


def drop_cache(path: str) -> None:
    """Asks the kernel to drop path's files from the page cache (they are clean: the build synced them)."""
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def mib(b: int) -> str:
    return f"{b / 2**20:,.0f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1000000x128", "200000x384"], help="N x D")
    ap.add_argument("--quick", action="store_true", help="200000x128 only")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--dir", default=None, help="where to build (default: a temporary directory)")
    args = ap.parse_args(argv)
    sizes = ["200000x128"] if args.quick else args.sizes
    print(machine_markdown(machine_summary()))
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other work: times are noisy)\n")
    print("| collection | N x D | raw f32 MiB | build s | open s cold / warm | anon after open MiB | first query ms "
          "| anon after queries MiB | mapped file after queries MiB | resident / raw | query p50 ms "
          "| rows re-ranked |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    root = tempfile.mkdtemp(prefix="vdb-open-", dir=args.dir)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        for size in sizes:
            n, d = (int(x) for x in size.lower().split("x"))
            for kind in args.kinds:
                path = os.path.join(root, f"{kind.replace(' ', '-')}-{size}")
                took = build(path, n, d, KINDS[kind])
                drop_cache(path)
                runs = []
                for _ in range(2):
                    out = subprocess.run([sys.executable, "-c", CHILD, path, str(d), repo], check=True,
                                         capture_output=True, text=True).stdout
                    runs.append(json.loads(out.strip().splitlines()[-1]))
                r, warm = runs
                assert r["n"] == n
                anon, file = r["m3"]["anon"] - r["m0"]["anon"], r["m3"]["file"] - r["m0"]["file"]
                print(f"| {kind} | {n:,} x {d} | {mib(n * d * 4)} | {took:.1f} | {r['open']:.3f} / {warm['open']:.3f} "
                      f"| {mib(r['m1']['anon'] - r['m0']['anon'])} | {r['first'] * 1e3:.1f} "
                      f"| {mib(anon)} | {mib(file)} | {(anon + file) / (n * d * 4):.2f}x "
                      f"| {r['p50'] * 1e3:.2f} | {r['reranked']:.0f} |", flush=True)
                shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
