"""HTTP load: queries/s and p50/p99 latency of POST /collections/{name}/query with 1, 8 and 32
concurrent clients, against a real `vectordb serve` subprocess on a free loopback port.

    python benchmarks/http_load.py              # 100k x 128 IVF collection, 10 s per level
    python benchmarks/http_load.py --quick      # 10k x 128, 3 s per level
    python benchmarks/http_load.py --levels 1,4,16 --seconds 5 --n-probe 16

Data: Gaussian blobs (100 centres in [-10, 10]^d, std 1), queries held out from the same
distribution; fixed seed. Each client is a thread with its own httpx.Client (keep-alive) sending
single-vector queries (n_results=10, include=["distances"]) with pre-encoded bodies, so the
client spends little CPU per request; still, the client threads and the server share this
machine's cores, and the table reports the server process's CPU use next to each level.
For reference it also measures the same queries through the embedded API (no HTTP).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import vectordb  # noqa: E402

try:  # the HTTP client's encoder: orjson writes NumPy arrays directly when it is installed
    from vectordb.http_client import _dumps
except ImportError:  # pragma: no cover
    def _dumps(obj):
        return json.dumps(obj, default=lambda a: a.tolist()).encode()

_SERVING = re.compile(r"serving .+? on (http://[^\s\"]+)")


def make_data(n: int, n_queries: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, size=(100, dim)).astype(np.float32)
    labels = rng.integers(0, len(centres), size=n + n_queries)
    points = centres[labels] + rng.standard_normal((n + n_queries, dim)).astype(np.float32)
    return np.ascontiguousarray(points[:n]), np.ascontiguousarray(points[n:])


def start_server(path: Path, log_path: Path, env_extra: Dict[str, str]) -> Tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORDB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(env_extra)
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "vectordb", "serve", "--host", "127.0.0.1", "--port", "0",
                             "--path", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    # Default settings, per-request log lines included: what a user gets from `vectordb serve`.
    deadline = time.monotonic() + 60
    url: Optional[str] = None
    while url is None:
        match = _SERVING.search(log_path.read_text(errors="replace"))
        if match:
            url = match.group(1)
        elif proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start:\n" + log_path.read_text(errors="replace"))
        else:
            time.sleep(0.05)
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url: str, name: str, data: np.ndarray, n_clusters: int, n_probe: int, batch: int) -> Dict[str, float]:
    times: Dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=None) as h:
        r = h.post("/collections", json={"name": name, "dimension": int(data.shape[1]), "use_ivf": True,
                                         "n_clusters": n_clusters, "n_probe": n_probe})
        r.raise_for_status()
        t0 = time.perf_counter()
        h.post(f"/collections/{name}/batch/begin").raise_for_status()
        for start in range(0, len(data), batch):
            chunk = data[start:start + batch]
            body = _dumps({"ids": [f"v{i}" for i in range(start, start + len(chunk))], "embeddings": chunk})
            h.post(f"/collections/{name}/add", content=body,
                   headers={"content-type": "application/json"}).raise_for_status()
        h.post(f"/collections/{name}/batch/end").raise_for_status()
        times["add_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        h.post(f"/collections/{name}/rebuild").raise_for_status()
        times["rebuild_s"] = time.perf_counter() - t0
        times["stats"] = h.get(f"/collections/{name}/stats").json()
    return times


def run_level(url: str, name: str, bodies: List[bytes], clients: int, seconds: float,
              warmup: float) -> Tuple[int, float, np.ndarray, int]:
    """`clients` threads query for warmup + seconds; returns (measured requests, measured seconds,
    their latencies in s, all requests including the warm-up)."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    sent = [0] * clients
    errors: List[BaseException] = []
    start_barrier = threading.Barrier(clients + 1)
    state = {"measure_from": 0.0, "stop_at": 0.0}
    path = f"/collections/{name}/query"
    headers = {"content-type": "application/json"}

    def worker(k: int) -> None:
        mine = latencies[k]
        i = k * 7919
        try:
            with httpx.Client(base_url=url, timeout=60) as h:
                h.get("/health")  # open the keep-alive connection before the clock starts
                start_barrier.wait()
                while True:
                    t0 = time.perf_counter()
                    if t0 >= state["stop_at"]:
                        break
                    r = h.post(path, content=bodies[i % len(bodies)], headers=headers)
                    t1 = time.perf_counter()
                    if r.status_code != 200:
                        raise RuntimeError(f"query failed: {r.status_code} {r.text[:200]}")
                    if t0 >= state["measure_from"]:
                        mine.append(t1 - t0)
                    i += 1
                    sent[k] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
            try:
                start_barrier.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    state["measure_from"] = now + 3600  # set for real once every client is connected
    state["stop_at"] = now + 3600
    start_barrier.wait()
    begin = time.perf_counter()
    state["measure_from"] = begin + warmup
    state["stop_at"] = begin + warmup + seconds
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    all_lat = np.array([x for lst in latencies for x in lst])
    return len(all_lat), seconds, all_lat, sum(sent)


def embedded_baseline(data: np.ndarray, queries: np.ndarray, n_clusters: int, n_probe: int,
                      seconds: float) -> Tuple[float, float, float]:
    """Single-thread queries/s and p50/p99 through the embedded API on the same data (no HTTP)."""
    client = vectordb.EphemeralClient()
    col = client.create_collection("baseline", dimension=int(data.shape[1]), use_ivf=True, n_clusters=n_clusters,
                                   n_probe=n_probe)
    with col.batch():
        for start in range(0, len(data), 20000):
            col.add(ids=[f"v{i}" for i in range(start, min(start + 20000, len(data)))],
                    embeddings=data[start:start + 20000])
    col.rebuild()
    lat = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        col.query(query_embedding=queries[i % len(queries)], n_results=10, include=["distances"])
        lat.append(time.perf_counter() - t0)
        i += 1
    client.close()
    lat_a = np.array(lat)
    return len(lat_a) / lat_a.sum(), float(np.percentile(lat_a, 50)) * 1e3, float(np.percentile(lat_a, 99)) * 1e3


def recall_at_10(url: str, name: str, data: np.ndarray, queries: np.ndarray) -> float:
    """Share of the true 10 nearest (exact, float64) that the server returns, over up to 50 queries."""
    q = queries[:50]
    with httpx.Client(base_url=url, timeout=None) as h:
        got = h.post(f"/collections/{name}/query",
                     json={"query_embeddings": q.tolist(), "n_results": 10, "include": []}).json()["ids"]
    d64 = data.astype(np.float64)
    hits = 0
    for row, qv in zip(got, q.astype(np.float64)):
        dist = ((d64 - qv) ** 2).sum(1)
        truth = {f"v{j}" for j in np.argpartition(dist, 10)[:10]}
        hits += len(truth & set(row))
    return hits / (10 * len(q))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k vectors, 3 s per level")
    parser.add_argument("--n", type=int, default=None, help="vectors (default 100000; 10000 with --quick)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n-clusters", type=int, default=None, help="IVF lists (default ~sqrt(n), e.g. 316)")
    parser.add_argument("--n-probe", type=int, default=8)
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients per level")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per level (10; 3 with --quick)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=1000, help="distinct held-out query vectors")
    parser.add_argument("--no-baseline", action="store_true", help="skip the embedded (no HTTP) reference")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database and server log")
    args = parser.parse_args(argv)

    n = args.n or (10_000 if args.quick else 100_000)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    n_clusters = args.n_clusters or max(1, int(round(n ** 0.5)))
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    data, queries = make_data(n, args.queries, args.dim)
    bodies = [json.dumps({"query_embedding": q.tolist(), "n_results": 10, "include": ["distances"]}).encode()
              for q in queries]

    workdir = Path(tempfile.mkdtemp(prefix="vdb-http-load-"))
    proc, url = start_server(workdir / "db", workdir / "server.log", {})
    try:
        print(f"vectordb {vectordb.__version__} over HTTP: {n} x {args.dim} float32, IVF n_clusters={n_clusters} "
              f"n_probe={args.n_probe}, k=10, {os.cpu_count()} CPUs shared by server and clients")
        info = load(url, "bench", data, n_clusters, args.n_probe, batch=10_000)
        stats = info["stats"]
        print(f"load: add {info['add_s']:.2f} s ({n / info['add_s']:,.0f} vectors/s over HTTP), "
              f"rebuild {info['rebuild_s']:.2f} s; index={stats.get('index')} trained={stats.get('trained')}")
        print(f"recall@10 (50 queries vs exact float64): {recall_at_10(url, 'bench', data, queries):.3f}")
        print()
        print(f"{'clients':>7} {'requests':>9} {'queries/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'server CPU':>11} "
              f"{'CPU us/query':>13}")
        for clients in levels:
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            count, elapsed, lat, served = run_level(url, "bench", bodies, clients, seconds, args.warmup)
            cpu_s, wall_s = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - wall0
            print(f"{clients:>7} {count:>9} {count / elapsed:>10,.0f} {np.percentile(lat, 50) * 1e3:>8.2f} "
                  f"{np.percentile(lat, 99) * 1e3:>8.2f} {cpu_s / wall_s * 100:>10.0f}% "
                  f"{cpu_s / served * 1e6:>13.0f}", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    if not args.no_baseline:
        qps, p50, p99 = embedded_baseline(data, queries, n_clusters, args.n_probe, min(seconds, 3.0))
        print(f"{'embedded':>7} {'(1 thread, no HTTP)':>19} {qps:>10,.0f} {p50:>8.3f} {p99:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
