"""Issue 2 figures: exact single-query latency through Collection.query, and durable add time.

    python benchmarks/bench_core.py               # 10k x 128 float32, k=10, one thread
    python benchmarks/bench_core.py --threads 2 --n 100000

For one query at a time (k=10) it times, side by side in alternating rounds: Collection.query on a
PersistentClient collection, the bare engine call vectordb._core.flat_search on the same vectors
(the floor the Python layer adds to), NumPy brute force, and faiss IndexFlatL2 when installed.
Then the time of one durable add of 1,000 x 128 (PersistentClient on the work disk: returns after
fdatasync), median over several fresh collections and over further adds into a full one.
Targets (this machine, one thread): query <= 80 us median, add of 1,000 <= 3 ms.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pin_blas_threads(argv: list[str]) -> None:
    """NumPy's BLAS reads its thread count once, at import: set it from --threads before that."""
    n = "1"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, n)


if __name__ == "__main__":
    _pin_blas_threads(sys.argv[1:])

import numpy as np  # noqa: E402

from benchmarks import datasets, machine, runner, systems  # noqa: E402

TARGET_QUERY_US = 80.0
TARGET_ADD_MS = 3.0


def _table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def bench_query(ds: datasets.Dataset, n_queries: int, rounds: int, client_path: str) -> tuple:
    import vectordb  # noqa: PLC0415
    from vectordb import _core  # noqa: PLC0415

    base = np.ascontiguousarray(ds.base, np.float32)
    queries = np.ascontiguousarray(ds.queries, np.float32)
    k = 10
    client = vectordb.PersistentClient(path=client_path)
    col = client.create_collection("core_bench", metadata={"hnsw:space": ds.metric},
                                   dimension=base.shape[1])
    ids = [str(i) for i in range(base.shape[0])]
    for s in range(0, base.shape[0], 1000):
        col.add(ids=ids[s:s + 1000], embeddings=base[s:s + 1000])

    # correctness first: the measured path must return the exact neighbours
    res = col.query(query_embeddings=queries, n_results=k, include=["distances"])
    got = np.array([[int(x) for x in r] for r in res["ids"]])
    recall = datasets.recall_at_k(got, ds, k)

    numpy_sys = systems.NumpyBrute(metric=ds.metric, d=base.shape[1], n=base.shape[0], threads=1,
                                   workdir=client_path, options={})
    numpy_sys.build(base, 1000)
    metric = ds.metric
    fns = {
        "Collection.query, include=[]": lambda q: col.query(query_embeddings=q[None, :],
                                                            n_results=k, include=[]),
        'Collection.query, include=["distances"]': lambda q: col.query(
            query_embeddings=q[None, :], n_results=k, include=["distances"]),
        "Collection.query, default include": lambda q: col.query(query_embeddings=q[None, :],
                                                                 n_results=k),
        "_core.flat_search (bare engine call)": lambda q: _core.flat_search(metric, base,
                                                                           q[None, :], k),
        "NumPy brute force (X @ q, argpartition)": lambda q: numpy_sys.query_one(q, k),
    }
    try:
        faiss_sys = systems.FaissFlat(metric=ds.metric, d=base.shape[1], n=base.shape[0],
                                      threads=1, workdir=client_path, options={})
        faiss_sys.build(base, 1000)
        fns["faiss IndexFlatL2.search" if metric == "l2" else "faiss IndexFlatIP.search"] = \
            lambda q: faiss_sys.query_one(q, k)
    except systems.NotAvailable as exc:
        print(f"(faiss row skipped: {exc})")
    samples = runner.interleaved_latency_us(fns, queries, n_queries, rounds=rounds)
    bare = float(np.median(samples["_core.flat_search (bare engine call)"]))
    rows = []
    for name, t in samples.items():
        med = float(np.median(t))
        rows.append([name, f"{med:.1f}", f"{np.percentile(t, 99):.1f}", f"{t.mean():.1f}",
                     f"{med - bare:+.1f}", f"{med / bare:.2f}x"])
    close = getattr(client, "close", None)
    if close:
        close()
    main_med = float(np.median(samples['Collection.query, include=["distances"]']))
    return rows, recall, main_med


def bench_add(d: int, n_collections: int, n_more: int, root: str, seed: int = 7) -> tuple:
    import vectordb  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    batches = [rng.standard_normal((1000, d), dtype=np.float32) for _ in range(4)]
    client = vectordb.PersistentClient(path=os.path.join(root, "persistent"))
    fresh, grown = [], []
    counter = 0

    def ids(n):
        nonlocal counter
        out = [f"v{counter + i}" for i in range(n)]
        counter += n
        return out

    for c in range(n_collections):  # first add into an empty collection
        col = client.create_collection(f"add_{c}", dimension=d)
        x, idl = batches[c % len(batches)], ids(1000)
        t0 = time.perf_counter()
        col.add(ids=idl, embeddings=x)
        fresh.append(time.perf_counter() - t0)
    col = client.create_collection("add_grow", dimension=d)
    for j in range(n_more):  # adds into a growing collection (1k .. n_more k vectors)
        x, idl = batches[j % len(batches)], ids(1000)
        t0 = time.perf_counter()
        col.add(ids=idl, embeddings=x)
        grown.append(time.perf_counter() - t0)
    close = getattr(client, "close", None)
    if close:
        close()

    eph = vectordb.EphemeralClient()
    mem = []
    col = eph.create_collection("add_mem", dimension=d)
    for j in range(n_more):
        x, idl = batches[j % len(batches)], ids(1000)
        t0 = time.perf_counter()
        col.add(ids=idl, embeddings=x)
        mem.append(time.perf_counter() - t0)

    def row(name, t):
        t = np.array(t) * 1000.0
        return [name, f"{np.median(t):.2f}", f"{t.min():.2f}", f"{t.max():.2f}", str(len(t))]

    rows = [row("PersistentClient: first add into a new collection (durable)", fresh),
            row(f"PersistentClient: add into a growing collection (1k..{n_more}k, durable)", grown),
            row("EphemeralClient: add (in memory, for comparison)", mem)]
    return rows, float(np.median(np.array(fresh + grown) * 1000.0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--queries", type=int, default=5000, help="single queries timed per path")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds over the paths")
    p.add_argument("--adds", type=int, default=15, help="fresh collections / further adds timed")
    args = p.parse_args(argv)

    try:
        import vectordb  # noqa: PLC0415
        from vectordb import _core  # noqa: PLC0415

        vectordb.EphemeralClient  # noqa: B018 -- the API must exist
    except Exception as exc:  # noqa: BLE001
        print(f"vectordb is not usable here ({type(exc).__name__}: {exc}); build it with "
              f"`python setup.py build_ext --inplace`")
        return 1
    _core.set_num_threads(args.threads)
    m = machine.machine_summary()
    print(f"# bench_core: {args.n:,} x {args.d} float32, k=10, {args.threads} thread(s)")
    print(machine.machine_markdown(m))
    print()
    ds = datasets.load(datasets.DatasetSpec("blobs", n=args.n, d=args.d, nq=1000))
    scratch = datasets.cache_root() / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    root = tempfile.mkdtemp(prefix="bench_core-", dir=scratch)  # on the work disk, not tmpfs
    try:
        rows, recall, med = bench_query(ds, args.queries, args.rounds, os.path.join(root, "q"))
        print(f"## Single exact queries ({ds.name}, {args.queries} per path, "
              f"{args.rounds} alternating rounds)\n")
        print(_table(["path", "median us", "p99 us", "mean us", "over bare", "vs bare"], rows))
        print(f"\nrecall@10 of Collection.query against float64 ground truth: {recall:.4f}")
        print(f"target: median <= {TARGET_QUERY_US:.0f} us through Collection.query -> "
              f"{'MET' if med <= TARGET_QUERY_US else 'NOT MET'} ({med:.1f} us)\n")
        add_rows, add_med = bench_add(args.d, args.adds, args.adds, os.path.join(root, "a"))
        print(f"## Add 1,000 x {args.d} float32\n")
        print(_table(["operation", "median ms", "min ms", "max ms", "n"], add_rows))
        print(f"\ntarget: durable add of 1,000 <= {TARGET_ADD_MS:.0f} ms -> "
              f"{'MET' if add_med <= TARGET_ADD_MS else 'NOT MET'} (median {add_med:.2f} ms)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
