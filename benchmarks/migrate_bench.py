#!/usr/bin/env python3
"""Time to migrate a chromadb collection into vectordb, next to the time chromadb took to ingest it.

    python benchmarks/migrate_bench.py            # 100,000 x 384
    python benchmarks/migrate_bench.py --quick    # 10,000 x 384
    python benchmarks/migrate_bench.py --use-ivf  # the migration builds IVF collections

Steps timed (wall clock, each in its own process so nothing is cached across them):
  1. chromadb ingest: PersistentClient.add in batches of 5000 (chromadb's cap is 5461 per call)
  2. migration: migrate/migrate_from_chromadb.py end to end (temporary copy of the chromadb
     directory, paged reads, vectordb writes, verification), and its per-collection time
  3. vectordb direct ingest of the same arrays (what the write side costs on its own)
Records carry a small metadata dict and a short document, as real collections do.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "migrate", "migrate_from_chromadb.py")

CHROMA_INGEST = r"""
import pickle, sys, time
import chromadb
from chromadb.config import Settings
d = pickle.load(open(sys.argv[1], "rb"))
client = chromadb.PersistentClient(path=d["path"], settings=Settings(anonymized_telemetry=False))
col = client.create_collection("bench", metadata={"hnsw:space": d["space"]})
t0 = time.perf_counter()
n = len(d["ids"])
for s in range(0, n, 5000):
    e = min(n, s + 5000)
    col.add(ids=d["ids"][s:e], embeddings=d["emb"][s:e], metadatas=d["metas"][s:e], documents=d["docs"][s:e])
assert col.count() == n
print(time.perf_counter() - t0)
"""

VECTORDB_INGEST = r"""
import pickle, sys, time
sys.path.insert(0, sys.argv[2])
import vectordb
d = pickle.load(open(sys.argv[1], "rb"))
client = vectordb.PersistentClient(path=d["path"])
col = client.create_collection("bench", metadata={"hnsw:space": d["space"]}, use_ivf=d["use_ivf"])
t0 = time.perf_counter()
n = len(d["ids"])
with col.batch():
    for s in range(0, n, 20000):
        e = min(n, s + 20000)
        col.add(ids=d["ids"][s:e], embeddings=d["emb"][s:e], metadatas=d["metas"][s:e], documents=d["docs"][s:e])
assert col.count() == n
client.close()
print(time.perf_counter() - t0)
"""


def dir_size(path: str) -> int:
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(base, f))
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--quick", action="store_true", help="10,000 vectors")
    p.add_argument("--space", default="cosine", choices=["l2", "ip", "cosine"])
    p.add_argument("--use-ivf", action="store_true")
    p.add_argument("--workdir", help="keep the databases here (default: a temporary directory, removed); "
                                     "a chromadb database already there from the same settings is reused")
    args = p.parse_args()
    n = 10_000 if args.quick else args.n

    work = args.workdir or tempfile.mkdtemp(prefix="migrate-bench-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
    try:
        rng = np.random.default_rng(0)
        emb = rng.standard_normal((n, args.dim)).astype(np.float32)
        data = {
            "ids": [f"doc-{i:08d}" for i in range(n)],
            "emb": emb,
            "metas": [{"i": i, "group": f"g{i % 17}", "score": i / n, "even": i % 2 == 0} for i in range(n)],
            "docs": [f"document number {i} with a few words of text" for i in range(n)],
            "space": args.space,
            "use_ivf": args.use_ivf,
        }
        chroma_path = os.path.join(work, "chroma")
        data_file = os.path.join(work, "data.pkl")

        def dump(path: str) -> None:
            data["path"] = path
            with open(data_file, "wb") as fh:
                pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)

        print(f"{n} x {args.dim} float32, space {args.space}, workdir {work}", file=sys.stderr)
        settings = {"n": n, "dim": args.dim, "space": args.space}
        ingest_file = os.path.join(work, "chroma_ingest.json")
        previous = json.load(open(ingest_file)) if os.path.exists(ingest_file) else None
        if previous and previous["settings"] == settings and os.path.isdir(chroma_path):
            t_chroma = previous["seconds"]
            print(f"reusing the chromadb database in {chroma_path} (ingest took {t_chroma:.1f}s)", file=sys.stderr)
        else:
            shutil.rmtree(chroma_path, ignore_errors=True)
            dump(chroma_path)
            out = subprocess.run([sys.executable, "-c", CHROMA_INGEST, data_file], capture_output=True,
                                 text=True, env=env, check=True)
            t_chroma = float(out.stdout.strip().splitlines()[-1])
            with open(ingest_file, "w") as fh:
                json.dump({"settings": settings, "seconds": t_chroma}, fh)

        vdb_path = os.path.join(work, "vdb")
        shutil.rmtree(vdb_path, ignore_errors=True)
        report = os.path.join(work, "report.json")
        cmd = [sys.executable, SCRIPT, "--chromadb-path", chroma_path, "--vectordb-path", vdb_path,
               "--report", report] + (["--use-ivf"] if args.use_ivf else [])
        t0 = time.perf_counter()
        mig = subprocess.run(cmd, capture_output=True, text=True, env=env)
        t_mig = time.perf_counter() - t0
        if mig.returncode != 0:
            print(mig.stdout, mig.stderr, file=sys.stderr)
            raise SystemExit(f"migration exited with status {mig.returncode}")
        rep = json.load(open(report))[0]

        direct_path = os.path.join(work, "vdb_direct")
        shutil.rmtree(direct_path, ignore_errors=True)
        dump(direct_path)
        out = subprocess.run([sys.executable, "-c", VECTORDB_INGEST, data_file, ROOT], capture_output=True,
                             text=True, env=env, check=True)
        t_direct = float(out.stdout.strip().splitlines()[-1])

        rows = [
            ("chromadb ingest (add, 5000/call)", t_chroma),
            ("migration, whole command", t_mig),
            ("  of which: read + write + verify", rep["seconds"]),
            ("vectordb direct ingest (add, 20000/call)", t_direct),
        ]
        w = max(len(r[0]) for r in rows)
        print(f"\nmigrate {n} x {args.dim} ({args.space}{', IVF' if args.use_ivf else ', flat'}); "
              f"chromadb dir {dir_size(chroma_path) / 1e6:.0f} MB, vectordb dir {dir_size(vdb_path) / 1e6:.0f} MB")
        print(f"{'step'.ljust(w)}  {'seconds':>8}  {'records/s':>10}")
        print(f"{'-' * w}  {'-' * 8}  {'-' * 10}")
        for name, t in rows:
            print(f"{name.ljust(w)}  {t:8.2f}  {n / t:10,.0f}")
        print(f"\nverified: {rep['status']}; {rep['sampled']} records compared exactly, {rep['queries']} queries; "
              f"recall@10 chromadb {rep['chroma_recall']:.3f}, vectordb {rep['vectordb_recall']:.3f}"
              f"{' (exact search)' if rep['exact_checked'] else ''}")
        print(f"migration is {t_chroma / t_mig:.1f}x faster than the chromadb ingest it replaces")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
