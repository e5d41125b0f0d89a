"""Sharded collections on Ray: ingest and query throughput against shard count, the scatter-gather
overhead per query against one node, and a projection to N nodes from the measured per-shard figures.

    python benchmarks/bench_distributed.py --quick   # 20k x 64, shards 1, 2, 4 (a few minutes)
    python benchmarks/bench_distributed.py           # 200k x 128, shards 1, 2, 4, 8

Everything runs on this machine: a local Ray cluster (one node) holds every shard, so shard counts
above the core count measure overhead, not scale. The projection therefore takes the per-shard
figures measured in-process (a PersistentClient holding n/N records) and adds the measured fixed
costs of the scatter-gather; its assumptions are printed with it.
Results: benchmarks/results/<date>-distributed.md (and .json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `vectordb` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vectordb  # noqa: E402
from benchmarks import machine  # noqa: E402
from vectordb.distributed.routing import SEQ_KEY, merge_query, split  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def data(n: int, d: int, nq: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"r{i}" for i in range(n)], rng.standard_normal((n, d)).astype(np.float32), \
        rng.standard_normal((nq, d)).astype(np.float32)


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def latencies(col, queries: np.ndarray, k: int) -> np.ndarray:
    """Seconds per single query, one at a time."""
    out = []
    for q in queries:
        t = time.perf_counter()
        col.query(query_embeddings=q[None, :], n_results=k, include=["distances"])
        out.append(time.perf_counter() - t)
    return np.array(out)


def ingest(col, ids, vecs, batch: int) -> float:
    """Records per second, adding in batches of `batch` (each batch durable before the next)."""
    t = time.perf_counter()
    for i in range(0, len(ids), batch):
        col.add(ids=ids[i:i + batch], embeddings=vecs[i:i + batch])
    return len(ids) / (time.perf_counter() - t)


def batch_qps(col, queries: np.ndarray, k: int) -> float:
    """Queries per second of one call with all the queries (best of 3: the machine is shared)."""
    return len(queries) / min(timed(lambda: col.query(query_embeddings=queries, n_results=k, include=["distances"]))
                              for _ in range(3))


_LINES: list[str] = []


def say(text: str = "", **_: object) -> None:
    """Prints a line of the report and keeps it for the results file."""
    print(text, flush=True)
    _LINES.append(text)


def ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k x 64, shards 1,2,4")
    ap.add_argument("--n", type=int)
    ap.add_argument("--dim", type=int)
    ap.add_argument("--shards", type=str, help="comma-separated shard counts")
    ap.add_argument("--queries", type=int, default=200, help="single queries timed per setting")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000, help="records per add call")
    ap.add_argument("--network-rtt-ms", type=float, default=0.2, help="assumed round trip between nodes")
    ap.add_argument("--nic-gbps", type=float, default=10.0, help="assumed network bandwidth of the client node")
    ap.add_argument("--project-to", type=str, default="1,2,4,8,16,32", help="node counts of the projection")
    ap.add_argument("--out", type=str, default=str(RESULTS))
    a = ap.parse_args()
    n = a.n or (20_000 if a.quick else 200_000)
    d = a.dim or (64 if a.quick else 128)
    shard_counts = [int(s) for s in (a.shards or ("1,2,4" if a.quick else "1,2,4,8")).split(",")]
    project = [int(s) for s in a.project_to.split(",")]
    ids, vecs, queries = data(n, d, max(a.queries, 100))
    single_q = queries[:a.queries]
    tmp = tempfile.mkdtemp(prefix="bench-distributed-")
    report: dict = {"n": n, "dim": d, "k": a.k, "batch": a.batch, "machine": machine.machine_summary()}
    say(f"# sharded collections on Ray: {n:,} x {d}, k={a.k}, adds of {a.batch}, {os.cpu_count()} cores "
          f"(shared with other work: figures are noisy)\n", flush=True)

    # 1. One node, in this process: the baseline, and per-shard figures at n/N records.
    per_shard = []
    for parts in sorted(set(shard_counts + project)):
        rows = n // parts
        if rows < 1000 and parts != 1:
            continue
        client = vectordb.PersistentClient(path=os.path.join(tmp, f"local-{parts}"))
        col = client.create_collection("bench")
        rate = ingest(col, ids[:rows], vecs[:rows], a.batch)
        lat = latencies(col, single_q, a.k)
        per_shard.append({"rows": rows, "ingest_per_s": rate, "query_p50_s": float(np.median(lat)),
                          "batch_qps": batch_qps(col, queries, a.k)})
        client.close()
    report["in_process"] = per_shard
    base = per_shard[0]
    say("## one node, in process (per-shard figures at n/N records)\n")
    say("| records | ingest rec/s | query p50 ms | batch QPS |\n|---:|---:|---:|---:|")
    for r in per_shard:
        say(f"| {r['rows']:,} | {r['ingest_per_s']:,.0f} | {ms(r['query_p50_s'])} | {r['batch_qps']:,.0f} |")

    # Client-side work per record (validation, routing, slicing) and per-query merge cost per shard.
    from vectordb.validation import to_matrix, validate_ids

    t_prep = timed(lambda: [(validate_ids(ids[i:i + a.batch]), to_matrix(vecs[i:i + a.batch]),
                             split(ids[i:i + a.batch], 8)) for i in range(0, n, a.batch)]) / n
    # Per query and per shard, the client unpickles the shard's answer and merges it: measured on real
    # answers of 8 shards (each holding n/8 records), with their hidden sequence numbers.
    parts = []
    for part in range(8):
        lo, hi = part * n // 8, (part + 1) * n // 8
        client = vectordb.PersistentClient(path=os.path.join(tmp, f"part-{part}"))
        col = client.create_collection("bench")
        col.add(ids=ids[lo:hi], embeddings=vecs[lo:hi], metadatas=[{SEQ_KEY: i} for i in range(lo, hi)])
        parts.append(pickle.dumps(col.query(query_embeddings=queries, n_results=a.k,
                                            include=["metadatas", "distances"])))
        client.close()
    t_client = timed(lambda: merge_query([pickle.loads(b) for b in parts], a.k, ["distances"])) / (8 * len(queries))
    report["client_prep_s_per_record"] = t_prep
    report["client_s_per_query_per_shard"] = t_client

    # 2. Sharded on a local Ray cluster.
    from vectordb.distributed import RayClient

    t0 = time.perf_counter()
    rc = RayClient(path=os.path.join(tmp, "ray"), ray_init_args={"num_cpus": os.cpu_count() or 1})
    report["ray_start_s"] = time.perf_counter() - t0
    sharded = []
    for s in shard_counts:
        col = rc.create_collection(f"shards-{s}", shards=s)
        rate = ingest(col, ids, vecs, a.batch)
        col.count()
        fan = latencies_of(lambda: col.count(), a.queries)
        lat = latencies(col, single_q, a.k)
        local = min(per_shard, key=lambda r: abs(r["rows"] - n // s))
        row = {"shards": s, "ingest_per_s": rate, "query_p50_s": float(np.median(lat)),
               "query_p95_s": float(np.percentile(lat, 95)), "batch_qps": batch_qps(col, queries, a.k),
               "fanout_p50_s": float(np.median(fan)), "shard_search_s": local["query_p50_s"]}
        row["overhead_s"] = row["query_p50_s"] - base["query_p50_s"]
        sharded.append(row)
        rc.delete_collection(f"shards-{s}")
        print(f"  measured {s} shard(s)", file=sys.stderr, flush=True)
    # Cost of one more shard at the client: submitting its request, plus its answer's share of the merge.
    import ray

    @ray.remote(num_cpus=0)
    class Idle:
        def ping(self) -> int:
            return 0

    idle = Idle.remote()
    ray.get(idle.ping.remote())
    reps = 500
    t0 = time.perf_counter()
    refs = [idle.ping.remote() for _ in range(reps)]
    t_submit = (time.perf_counter() - t0) / reps
    ray.get(refs)
    rc.close()
    report["sharded"] = sharded
    say(f"\n## sharded, local Ray cluster (one node; Ray started in {report['ray_start_s']:.1f} s)\n")
    say("| shards | ingest rec/s | query p50 ms | p95 ms | batch QPS | empty fan-out (count) p50 ms | "
          "per-shard search ms | overhead vs one node ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sharded:
        say(f"| {r['shards']} | {r['ingest_per_s']:,.0f} | {ms(r['query_p50_s'])} | {ms(r['query_p95_s'])} | "
              f"{r['batch_qps']:,.0f} | {ms(r['fanout_p50_s'])} | {ms(r['shard_search_s'])} | {ms(r['overhead_s'])} |")
    say(f"\nclient work: {t_prep * 1e6:.2f} us per record to validate and route; "
          f"{t_client * 1e6:.1f} us per query per shard to unpickle and merge answers "
          f"(k={a.k}, batch of {len(queries)})")

    # 3. Projection: one shard per node, N nodes, the same n records.
    fixed = sharded[0]["fanout_p50_s"]  # one Ray round trip through the client, on this machine
    measured_slope = max(0.0, (sharded[-1]["fanout_p50_s"] - fixed) / max(1, sharded[-1]["shards"] - 1)) \
        if len(sharded) > 1 else 0.0
    slope = t_submit + t_client
    rows_fit = np.array([r["rows"] for r in per_shard], dtype=float)
    # Exact search time is linear in the rows scanned: fit t = c0 + c1 * rows on the in-process figures.
    if len(per_shard) > 1:
        c1, c0 = np.polyfit(rows_fit, [r["query_p50_s"] for r in per_shard], 1)
        q1, q0 = np.polyfit(rows_fit, [1 / r["batch_qps"] for r in per_shard], 1)
    else:
        c1, c0 = 0.0, base["query_p50_s"]
        q1, q0 = 0.0, 1 / base["batch_qps"]
    bytes_per_record = d * 4 + 40
    nic = a.nic_gbps * 1e9 / 8
    proj = []
    for N in project:
        shard_rows = n / N
        lat = fixed + slope * (N - 1) + a.network_rtt_ms / 1e3 + max(c0 + c1 * shard_rows, 0.0)
        # Every query visits every node: one node's batch rate on n/N records, unless the client's
        # unpickling and merging of N answers per query is slower.
        qps = min(1 / max(q0 + q1 * shard_rows, 1e-9), 1 / (t_client * N))
        ingest_cap = min(N * base["ingest_per_s"], 1 / t_prep, nic / bytes_per_record)
        proj.append({"nodes": N, "rows_per_node": shard_rows, "query_p50_s": lat, "batch_qps": qps,
                     "ingest_per_s": ingest_cap})
    report["projection"] = {"rows": proj, "network_rtt_ms": a.network_rtt_ms, "nic_gbps": a.nic_gbps,
                            "fixed_s": fixed, "per_shard_s": slope}
    say(f"\n## projection to N nodes ({n:,} records; assumptions below)\n")
    say("| nodes | records per node | query p50 ms | batch QPS | ingest rec/s |\n|---:|---:|---:|---:|---:|")
    for r in proj:
        say(f"| {r['nodes']} | {r['rows_per_node']:,.0f} | {ms(r['query_p50_s'])} | {r['batch_qps']:,.0f} | "
              f"{r['ingest_per_s']:,.0f} |")
    say(f"""
Assumptions: one shard per node, each node as fast as one in-process collection here; exact search
time linear in the records per node (fit on the in-process rows above); per query a fixed client
cost of {ms(fixed)} ms (one Ray round trip measured here) plus {slope * 1e3:.3f} ms per extra shard
(submitting one more request, {t_submit * 1e6:.0f} us, and unpickling and merging its answer, measured
here; the fan-out slope measured on this one machine, {measured_slope * 1e3:.3f} ms, also holds CPU
contention between shards sharing {os.cpu_count()} cores) plus an assumed network round
trip of {a.network_rtt_ms} ms; every query visits every node, so batch QPS is one node's rate on its
n/N records, capped by the client's unpickle+merge rate for N answers; ingest is N nodes' durable
ingest rate, capped by the client's validation+routing rate
({1 / t_prep:,.0f} rec/s) and an assumed {a.nic_gbps} Gbit/s client link ({bytes_per_record} bytes per record).""")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(a.out, exist_ok=True)
    stem = Path(a.out) / f"{datetime.date.today().isoformat()}-distributed{'-quick' if a.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    command = "python benchmarks/bench_distributed.py " + " ".join(sys.argv[1:])
    stem.with_suffix(".md").write_text("\n".join(_LINES) + f"\n\nCommand: `{command.strip()}`\n\n"
                                       + machine.machine_markdown(report["machine"]) + "\n")
    print(f"\nresults: {stem}.md, {stem}.json", file=sys.stderr)


def latencies_of(f, reps: int) -> np.ndarray:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return np.array(out)


if __name__ == "__main__":
    main()
