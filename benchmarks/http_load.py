"""HTTP load side by side: `vectordb serve` and `chroma run` (chromadb's server) on the same data.

    python benchmarks/http_load.py                 # 5,000 x 384 cosine, 8 s per query level
    python benchmarks/http_load.py --quick         # 1,000 x 64, 2 s per level (a smoke run)
    python benchmarks/http_load.py --levels 1,8,32 --n 20000

Both servers run as subprocesses on free loopback ports with fresh temporary databases.
Add throughput (records/s, batches of --batch):
    vectordb  <- vectordb.HttpClient (NumPy vectors go as float32 in a binary frame)
    chroma    <- chromadb.HttpClient
    vectordb  <- chromadb.HttpClient through vectordb's chroma-compatible /api/v2
Query throughput (queries/s and p50/p99 latency, n_results=10, include=["distances"]) at each
level of concurrent clients: threads with their own keep-alive HTTP/1.1 connection (http.client)
sending pre-encoded single-vector bodies (each server's own request format), so the client spends
little CPU; still clients and servers share this machine's cores. The server process's CPU use is reported beside
each level (200% = both cores of a 2-core machine), and queries per CPU-second of the server (what
a query costs, which a machine shared with other work shows better than queries/s).
Query vectors are held out from the data.
Data: Gaussian blobs (100 centres), fixed seed.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import vectordb  # noqa: E402
from benchmarks.machine import cpu_info  # noqa: E402
from vectordb.wire import FRAME_CONTENT_TYPE, encode_frame  # noqa: E402

_SERVING = re.compile(r"serving .+? on (http://[^\s\"]+)")
CHROMA_DB = "/api/v2/tenants/default_tenant/databases/default_database"


def make_data(n: int, n_queries: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, size=(100, dim)).astype(np.float32)
    labels = rng.integers(0, len(centres), size=n + n_queries)
    points = centres[labels] + rng.standard_normal((n + n_queries, dim)).astype(np.float32)
    return np.ascontiguousarray(points[:n]), np.ascontiguousarray(points[n:])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, probe: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')[-3000:]}")


def start_vectordb(path: Path, log_path: Path, env_extra: Dict[str, str]) -> Tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORDB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(env_extra)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vectordb", "serve", "--host", "127.0.0.1", "--port", "0",
                                 "--path", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        match = _SERVING.search(log_path.read_text(errors="replace"))
        if match:
            url = match.group(1)
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("vectordb did not start:\n" + log_path.read_text(errors="replace"))
        time.sleep(0.05)
    _wait(url, "/health", proc, log_path)
    return proc, url


def start_chroma(path: Path, log_path: Path) -> Tuple[subprocess.Popen, str]:
    cli = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if cli is None:
        raise RuntimeError("the `chroma` command is not installed (pip install chromadb)")
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([cli, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait(url, "/api/v2/heartbeat", proc, log_path)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ------------------------------------------------------------------ add


def add_rate(add_batch: Callable[[np.ndarray, List[str]], None], data: np.ndarray, batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(data), batch):
        chunk = data[start:start + batch]
        add_batch(chunk, [f"v{i}" for i in range(start, start + len(chunk))])
    return len(data) / (time.perf_counter() - t0)


def add_vectordb(url: str, name: str, data: np.ndarray, batch: int) -> float:
    client = vectordb.HttpClient(host="127.0.0.1", port=_port(url))
    col = client.create_collection(name, metadata={"hnsw:space": "cosine"})
    try:
        return add_rate(lambda chunk, ids: col.add(ids=ids, embeddings=chunk), data, batch)
    finally:
        client.close()


def add_chroma_client(url: str, name: str, data: np.ndarray, batch: int) -> Tuple[float, str]:
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=_port(url))
    col = client.create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    return add_rate(lambda chunk, ids: col.add(ids=ids, embeddings=chunk), data, batch), str(col.id)


# ------------------------------------------------------------------ query


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: Dict[str, str]) -> bytes:
    """One POST on a kept-alive HTTP/1.1 connection (http.client: a fraction of httpx's CPU per
    request, so the load generator leaves the cores to the server being measured)."""
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"query failed: {response.status} {data[:200]!r}")
    return data


def query_level(url: str, path: str, bodies: List[bytes], clients: int, seconds: float, warmup: float,
                pid: int, content_type: str = "application/json", more: Tuple[Tuple[str, int], ...] = ()
                ) -> Dict[str, float]:
    """`clients` threads post the bodies for warmup + seconds; queries/s, latencies, server CPU.
    `more`: other servers (url, pid) of the same data; client k talks to server k mod their number."""
    urls, pids = [url] + [u for u, _ in more], [pid] + [p for _, p in more]
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[BaseException] = []
    barrier = threading.Barrier(clients + 1)
    window = {"from": float("inf"), "to": float("inf")}
    headers = {"content-type": content_type}

    def worker(k: int) -> None:
        mine, i = latencies[k], k * 7919
        try:
            conn = http.client.HTTPConnection("127.0.0.1", _port(urls[k % len(urls)]), timeout=60)
            try:
                _post(conn, path, bodies[0], headers)  # connect before the clock
                barrier.wait()
                while True:
                    t0 = time.perf_counter()
                    if t0 >= window["to"]:
                        break
                    _post(conn, path, bodies[i % len(bodies)], headers)
                    t1 = time.perf_counter()
                    if t0 >= window["from"]:
                        mine.append(t1 - t0)
                    i += 1
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    begin = time.perf_counter()
    window["from"], window["to"] = begin + warmup, begin + warmup + seconds
    time.sleep(warmup)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    for t in threads:
        t.join()
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    if errors:
        raise errors[0]
    lat = np.array([x for lst in latencies for x in lst])
    return {"qps": len(lat) / seconds, "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3), "cpu_pct": 100.0 * cpu / seconds,
            "per_cpu_s": len(lat) / cpu if cpu > 0 else float("nan")}


def vectordb_bodies(queries: np.ndarray) -> List[bytes]:
    # As vectordb.HttpClient sends a query: a binary frame (JSON header + float32 vector).
    return [encode_frame(b'{"n_results":10,"include":["distances"]}', "query_embeddings", q[None, :])
            for q in queries]


def chroma_bodies(queries: np.ndarray) -> List[bytes]:
    import orjson

    # chromadb's client sends query vectors as lists of numbers.
    return [orjson.dumps({"query_embeddings": [q.astype(np.float64).tolist()], "n_results": 10,
                          "include": ["distances"]}) for q in queries]


def check_same_answers(urls: Dict[str, Tuple[str, bytes, str]], n: int = 20) -> None:
    """Both servers find the same nearest neighbours for the first queries (a sanity check)."""
    import orjson

    answers = {}
    for system, (url_path, body, content_type) in urls.items():
        answers[system] = orjson.loads(httpx.post(url_path, content=body, headers={"content-type": content_type},
                                                  timeout=60).content)["ids"][0]
    first, *rest = answers.values()
    for other in rest:
        overlap = len(set(first) & set(other)) / max(1, len(first))
        if overlap < 0.8:
            print(f"warning: the servers' top-10 overlap only {overlap:.0%}: {answers}", file=sys.stderr)


# ------------------------------------------------------------------ main


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 x 64, 2 s per level")
    parser.add_argument("--n", type=int, default=None, help="vectors (default 5000; 1000 with --quick)")
    parser.add_argument("--dim", type=int, default=None, help="dimension (default 384; 64 with --quick)")
    parser.add_argument("--batch", type=int, default=1000, help="records per add call")
    parser.add_argument("--levels", default="1,8", help="concurrent query clients per level")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per level (8; 2 with --quick)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=500, help="distinct held-out query vectors")
    parser.add_argument("--no-chroma", action="store_true", help="vectordb only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases and server logs")
    parser.add_argument("--rounds", type=int, default=1, help="measure every level this many times, interleaved; "
                        "report the median")
    parser.add_argument("--processes", type=int, default=1,
                        help="also measure queries on this many vectordb server processes, each on its own copy "
                             "of the database (what a read-only multi-process mode could give)")
    parser.add_argument("--server-threads", type=int, default=None,
                        help="vectordb's engine thread pool (VECTORDB_SERVER_THREADS; default: the server's)")
    args = parser.parse_args(argv)
    n = args.n or (1000 if args.quick else 5000)
    dim = args.dim or (64 if args.quick else 384)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    data, queries = make_data(n, args.queries, dim)
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="vectordb-http-load-"))
    procs: List[subprocess.Popen] = []
    try:
        env = {"VECTORDB_LOG_LEVEL": "warning"}
        if args.server_threads is not None:
            env["VECTORDB_SERVER_THREADS"] = str(args.server_threads)
        vproc, vurl = start_vectordb(tmp / "vdb", tmp / "vectordb.log", env)
        procs.append(vproc)
        servers = {"vectordb": (vproc, vurl)}
        if not args.no_chroma:
            cproc, curl = start_chroma(tmp / "chroma", tmp / "chroma.log")
            procs.append(cproc)
            servers["chroma"] = (cproc, curl)

        add = {"vectordb <- vectordb.HttpClient": add_vectordb(vurl, "bench", data, args.batch)}
        if "chroma" in servers:
            add["chroma <- chromadb.HttpClient"], chroma_id = add_chroma_client(curl, "bench", data, args.batch)
            add["vectordb /api/v2 <- chromadb.HttpClient"], _ = add_chroma_client(vurl, "bench-v2", data, args.batch)

        vname = "bench"
        targets = {"vectordb": (vurl, f"/collections/{vname}/query", vectordb_bodies(queries), vproc.pid,
                                FRAME_CONTENT_TYPE)}
        if "chroma" in servers:
            cb = chroma_bodies(queries)
            targets["chroma"] = (curl, f"{CHROMA_DB}/collections/{chroma_id}/query", cb, cproc.pid,
                                 "application/json")
            check_same_answers({"vectordb": (vurl + targets["vectordb"][1], targets["vectordb"][2][0],
                                             FRAME_CONTENT_TYPE),
                                "chroma": (curl + targets["chroma"][1], cb[0], "application/json")})
        if args.processes > 1:
            copies = []
            for i in range(1, args.processes):
                shutil.copytree(tmp / "vdb", tmp / f"vdb-{i}", ignore=shutil.ignore_patterns("LOCK"))
                proc, url = start_vectordb(tmp / f"vdb-{i}", tmp / f"vectordb-{i}.log", env)
                procs.append(proc)
                copies.append((url, proc.pid))
            vtarget = targets["vectordb"]
            targets[f"vectordb x{args.processes}"] = vtarget + (tuple(copies),)
        # Rounds interleave the systems, so a change of load on a shared machine hits them alike;
        # each figure is the round with the median queries/s.
        runs: Dict[Tuple[str, int], List[Dict[str, float]]] = {}
        for _ in range(args.rounds):
            for clients in levels:
                for system, (url, path, bodies, pid, content_type, *more) in targets.items():
                    runs.setdefault((system, clients), []).append(
                        query_level(url, path, bodies, clients, seconds, args.warmup, pid, content_type, *more))
        results = {key: sorted(rs, key=lambda r: r["qps"])[len(rs) // 2] for key, rs in runs.items()}

        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\nHTTP side by side: {n:,} x {dim} cosine, add batches of {args.batch}, "
              f"{seconds:g} s per query level, median of {args.rounds} round(s)")
        print(f"CPU: {cpu_info()['model']}, {os.cpu_count()} cores; load average at start {load_start}, "
              f"at end {load}")
        print(f"\n{'add path':<44}{'records/s':>12}")
        for label, rate in add.items():
            print(f"{label:<44}{rate:>12,.0f}")
        if "chroma" in servers:
            base = add["chroma <- chromadb.HttpClient"]
            print(f"ratios: vectordb own client / chroma = {add['vectordb <- vectordb.HttpClient'] / base:.1f}x, "
                  f"vectordb v2 via chromadb client / chroma = "
                  f"{add['vectordb /api/v2 <- chromadb.HttpClient'] / base:.1f}x")
        print(f"\n{'system':<14}{'clients':>8}{'queries/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>12}"
              f"{'queries/CPU-s':>15}")
        for clients in levels:
            for system in targets:
                r = results[(system, clients)]
                print(f"{system:<14}{clients:>8}{r['qps']:>12,.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                      f"{r['cpu_pct']:>11.0f}%{r['per_cpu_s']:>15,.0f}")
            if "chroma" in targets:
                for system in (s for s in targets if s.startswith("vectordb")):
                    ratio = results[(system, clients)]["qps"] / results[("chroma", clients)]["qps"]
                    print(f"{'':<14}{'':>8}  {system} / chroma = {ratio:.1f}x")
    finally:
        for proc in procs:
            stop(proc)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
