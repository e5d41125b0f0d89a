"""The benchmark harness must keep working: a tiny configuration runs end to end here.

Never asserts a time. Asserts what the published tables rely on: exact ground truth, the recall
definition, files written, recall in [0, 1], exact systems at recall 1.0, IVF at n_probe =
n_clusters at recall 1.0, and missing peers reported as "not available" instead of a crash.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import datasets, runner, systems

ROOT = Path(__file__).resolve().parent.parent
EXACT_SYSTEMS = {"vectordb", "numpy", "faiss-flat"}
MODULE_OF = {"faiss-flat": "faiss", "faiss-ivf": "faiss", "faiss-ivf-sq8": "faiss",
             "faiss-ivf-pqfs": "faiss", "faiss-ivf-rabitq": "faiss", "faiss-hnsw": "faiss",
             "hnswlib": "hnswlib", "chromadb": "chromadb", "numpy": "numpy"}
QUANTIZED_VECTORDB = {"vectordb-sq8", "vectordb-ivf-sq8", "vectordb-ivf-pq4"}


def _vectordb_quantization_present() -> bool:
    import inspect  # noqa: PLC0415

    import vectordb  # noqa: PLC0415

    return "quantization" in inspect.signature(vectordb.PersistentClient.create_collection).parameters


def _vectordb_api_present() -> bool:
    try:
        import vectordb  # noqa: PLC0415

        return hasattr(vectordb, "PersistentClient")
    except Exception:  # noqa: BLE001
        return False


def _reference_knn(base, queries, metric):
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "l2":
        full = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    elif metric == "ip":
        full = 1.0 - q @ b.T
    else:
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        full = 1.0 - qn @ bn.T
    return full


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), nq=st.integers(1, 20), d=st.integers(1, 9),
       k=st.integers(1, 12), db_block=st.integers(1, 64), q_block=st.integers(1, 8),
       metric=st.sampled_from(["l2", "ip", "cosine"]), seed=st.integers(0, 2**16))
def test_exact_knn_matches_float64_reference(n, nq, d, k, db_block, q_block, metric, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    ids, dist = datasets.exact_knn(base, queries, k, metric, db_block=db_block, q_block=q_block)
    full = _reference_knn(base, queries, metric)
    kk = min(k, n)
    assert ids.shape == (nq, kk) and dist.shape == (nq, kk)
    expected = np.sort(full, axis=1)[:, :kk]
    np.testing.assert_allclose(dist, expected, rtol=1e-9, atol=1e-9)
    # the ids are the ones at those distances, each row distinct
    np.testing.assert_allclose(np.take_along_axis(full, ids, 1), expected, rtol=1e-9, atol=1e-9)
    assert all(len(set(r)) == kk for r in ids.tolist())


def _tiny_dataset(tmp_path, monkeypatch, kind="blobs", metric=""):
    monkeypatch.setenv("VECTORDB_BENCH_CACHE", str(tmp_path / "cache"))
    return datasets.load(datasets.DatasetSpec(kind, n=500, d=8, nq=30, n_extra=50, metric=metric),
                         verbose=False)


def test_recall_definition(tmp_path, monkeypatch):
    ds = _tiny_dataset(tmp_path, monkeypatch)
    assert datasets.recall_at_k(ds.gt_ids, ds, 10) == 1.0
    assert datasets.recall_at_k(np.full((30, 10), -1), ds, 10) == 0.0
    # the 11th..20th true neighbours count only where they tie the 10th within 1e-3
    shifted = ds.gt_ids[:, 10:20]
    ties = (ds.gt_dist[:, 10:20] <= ds.gt_dist[:, 9:10] + 1e-3).sum()
    assert datasets.recall_at_k(shifted, ds, 10) == pytest.approx(ties / 300)
    # half right, half missing
    half = ds.gt_ids[:, :10].copy()
    half[:, 5:] = -1
    assert datasets.recall_at_k(half, ds, 10) == pytest.approx(0.5)
    # one true neighbour returned ten times counts once
    dup = np.repeat(ds.gt_ids[:, :1], 10, axis=1)
    assert datasets.recall_at_k(dup, ds, 10) == pytest.approx(0.1)


def test_datasets_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VECTORDB_BENCH_CACHE", str(tmp_path / "cache"))
    for kind in datasets.SYNTHETIC_KINDS:
        spec = datasets.DatasetSpec(kind, n=300, d=5, nq=7, n_extra=11)
        a = datasets.generate(spec)
        b = datasets.generate(spec)
        for x, y, rows in zip(a[:3], b[:3], (300, 7, 11)):
            assert x.dtype == np.float32 and x.shape == (rows, 5) and x.flags.c_contiguous
            np.testing.assert_array_equal(x, y)
        ds = datasets.load(spec, verbose=False)
        np.testing.assert_array_equal(ds.base, a[0])
        ids, _ = datasets.exact_knn(a[0], a[1], datasets.GT_K, spec.metric)
        np.testing.assert_array_equal(ds.gt_ids, ids)
        if kind == "sphere":
            np.testing.assert_allclose(np.linalg.norm(ds.base, axis=1), 1.0, rtol=1e-5)
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_missing_peer_is_reported_not_raised(tmp_path, monkeypatch):
    ds = _tiny_dataset(tmp_path, monkeypatch)
    # an import that fails exactly as it does when faiss-cpu is not installed
    monkeypatch.setitem(sys.modules, "faiss", None)
    budget = runner.Budget(n_single=10, single_seconds=1, batch_repeats=1)
    rows = runner.run_tasks([runner.Task(str(ds.directory), "faiss-ivf", 1, budget, {})],
                            in_process=True, log=lambda s: None)
    assert len(rows) == 1
    assert rows[0]["status"].startswith("not available: faiss-cpu not installed")
    assert "pip install 'vectordb[bench]'" in rows[0]["status"]


def test_in_process_numpy_rows(tmp_path, monkeypatch):
    ds = _tiny_dataset(tmp_path, monkeypatch, kind="sphere")
    budget = runner.Budget(n_single=10, single_seconds=1, batch_repeats=1)
    rows = runner.run_tasks([runner.Task(str(ds.directory), "numpy", 1, budget, {})],
                            in_process=True, log=lambda s: None)
    (row,) = rows
    assert row["status"] == "ok"
    assert row["recall"] == 1.0 and row["recall_single"] == 1.0
    assert row["n_single"] == 10 and row["nq_batch"] == 30
    assert row["disk_mb"] > 0 and row["add1k_ms"] is not None


def test_tiny_harness_end_to_end(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, VECTORDB_BENCH_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "benchmarks", "--datasets", "blobs:2000:16", "--nq", "40",
           "--n-single", "30", "--threads", "1", "--n-clusters", "10", "--n-probe", "1,10",
           "--ef", "10,50", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = list(out.glob("*-blobs-2k-16.md"))
    png = list(out.glob("*-blobs-2k-16.png"))
    js = list(out.glob("*-blobs-2k-16.json"))
    assert len(md) == 1 and len(js) == 1
    text = md[0].read_text()
    assert "recall@10" in text and "CPU:" in text and "Versions:" in text
    for written in (text, js[0].read_text()):  # no path of this machine in the results
        assert str(tmp_path) not in written and str(ROOT) not in written
    assert "| system |" in proc.stdout  # the tables are printed too
    rows = json.loads(js[0].read_text())["rows"]
    by_system: dict[str, list[dict]] = {}
    for r in rows:
        by_system.setdefault(r["system"], []).append(r)
    assert set(by_system) == {"vectordb", "vectordb-ivf", "vectordb-sq8", "vectordb-ivf-sq8", "vectordb-ivf-pq4",
                              "numpy",
                              "faiss-flat", "faiss-ivf", "faiss-ivf-sq8", "faiss-ivf-pqfs",
                              "faiss-ivf-rabitq", "faiss-hnsw", "hnswlib", "chromadb"}

    for name, grp in by_system.items():
        installed = (_vectordb_api_present() if name.startswith("vectordb")
                     else importlib.util.find_spec(MODULE_OF[name]) is not None)
        if name in QUANTIZED_VECTORDB and installed and not _vectordb_quantization_present():
            assert [r["status"][:40] for r in grp] == ["not available: vectordb has no quantizat"]
            continue  # the hook for compressed collections, before they exist in this tree
        if not installed:
            assert all(r["status"].startswith("not available") for r in grp), grp
            continue
        assert all(r["status"] == "ok" for r in grp), grp
        for r in grp:
            assert 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["recall_single"] <= 1.0
            assert r["p50_us"] > 0 and r["batch_qps"] > 0 and r["build_s"] >= 0
        if name in EXACT_SYSTEMS:
            assert [r["recall"] for r in grp] == [1.0], grp
            assert [r["recall_single"] for r in grp] == [1.0], grp
        if name.startswith("vectordb-ivf"):  # first the default n_probe, what a user gets
            assert [r["params"] for r in grp] == ["n_probe=default(10)", "n_probe=1", "n_probe=10"]
            assert grp[-1]["recall"] == 1.0  # probing every list is exact
        if name.startswith("faiss-ivf"):
            assert [r["params"] for r in grp] == ["n_probe=1", "n_probe=10"]
        if name == "faiss-ivf":
            assert grp[-1]["recall"] == 1.0
        if name in ("hnswlib", "faiss-hnsw"):
            assert [r["params"] for r in grp] == ["ef=10", "ef=50"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert len(png) == 1 and png[0].stat().st_size > 10_000
        assert png[0].name in text


def test_assignment_benchmark_quick_mode():
    proc = subprocess.run([sys.executable, "benchmarks/bench_assign.py", "--quick", "--repeats", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| n x k x d |"))
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| 5,000 x 256 x 128 |"))
    assert "vectordb serial GFLOPS" in header and "numpy" in header
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert len(cells) == header.count("GFLOPS")
    assert all(float(c.split()[0]) > 0 for c in cells)


def _fake_minilm(root: Path, n: int = 1200, nq: int = 30, d: int = 24) -> None:
    """A small set laid out as the minilm directory is: unit-norm base and queries, exact top-100."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n + nq, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    base, queries = x[:n], x[n:]
    dist = 1.0 - queries.astype(np.float64) @ base.astype(np.float64).T
    order = np.argsort(dist, axis=1, kind="stable")[:, :100]
    (root / "minilm").mkdir(parents=True)
    np.save(root / "minilm" / "base.npy", base)
    np.save(root / "minilm" / "queries_dev.npy", queries)
    np.save(root / "minilm" / "gt_dev.npy", order.astype(np.int32))
    np.save(root / "minilm" / "gt_dev_dist.npy", np.take_along_axis(dist, order, 1).astype(np.float32))


def test_minilm_set_is_skipped_with_a_message_when_its_directory_is_absent(tmp_path, monkeypatch):
    from benchmarks.__main__ import parse_datasets  # noqa: PLC0415

    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    said: list[str] = []
    assert parse_datasets("minilm", nq=10, n_extra=10, data_root=datasets.data_root(None),
                          log=said.append) == []
    assert "skipping data set minilm" in said[0] and "--data-dir" in said[0]
    said.clear()
    assert parse_datasets("minilm,blobs:100:4", nq=10, n_extra=10, data_root=tmp_path,
                          log=said.append)[0].kind == "blobs"
    assert "lacks base.npy" in said[0]
    assert datasets.external_specs(tmp_path) == []


def test_minilm_set_uses_its_shipped_ground_truth(tmp_path, monkeypatch):
    from benchmarks.__main__ import parse_datasets  # noqa: PLC0415

    _fake_minilm(tmp_path / "data")
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path / "data"))
    monkeypatch.setenv("VECTORDB_BENCH_CACHE", str(tmp_path / "cache"))
    (spec,) = parse_datasets("minilm", nq=20, n_extra=15, data_root=datasets.data_root(None))
    assert [s.kind for s in datasets.external_specs(datasets.data_root(None), nq=20)] == ["minilm"]
    ds = datasets.load(spec, verbose=False)
    assert ds.name == "minilm" and ds.metric == "cosine" and ds.base.shape == (1200, 24)
    assert ds.queries.shape == (20, 24) and ds.extra.shape == (15, 24)
    gt = np.load(tmp_path / "data" / "minilm" / "gt_dev.npy")
    np.testing.assert_array_equal(ds.gt_ids, gt[:20])
    ids, dist = datasets.exact_knn(ds.base, ds.queries, 100, "cosine")
    np.testing.assert_array_equal(ids, ds.gt_ids)  # the shipped truth is the exact one
    np.testing.assert_allclose(dist, ds.gt_dist, atol=1e-6)
    # a cut base cannot use the shipped truth: it is recomputed
    (cut,) = parse_datasets("minilm:300", nq=20, n_extra=15, data_root=datasets.data_root(None))
    small = datasets.load(cut, verbose=False)
    assert small.name == "minilm-300" and small.base.shape == (300, 24) and small.gt_ids.max() < 300

    budget = runner.Budget(n_single=10, single_seconds=1, batch_repeats=1)
    tasks = [runner.Task(str(ds.directory), name, 1, budget, {"n_clusters": 8, "n_probe_sweep": [8]})
             for name in ("vectordb", "vectordb-ivf")]
    rows = runner.run_tasks(tasks, in_process=True, log=lambda s: None)
    assert [(r["system"], r["params"], r["recall"]) for r in rows] == [
        ("vectordb", "", 1.0), ("vectordb-ivf", "n_probe=default(8)", 1.0), ("vectordb-ivf", "n_probe=8", 1.0)]


def test_quantization_benchmark_quick_mode():
    """bench_quant.py end to end on synthetic data: sq8 returns the float32 answers, every row has a
    recall in [0, 1], exact systems at 1.0, and a missing data directory is a skip, not a failure."""
    proc = subprocess.run([sys.executable, "benchmarks/bench_quant.py", "--synthetic", "--quick", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "identical to float32 flat (ids and float32 distances): True" in proc.stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith(("| vectordb", "| faiss", "| hnswlib"))]
    measured = [r for r in rows if len(r) >= 4 and r[3].replace(".", "").isdigit()]
    assert any(r[0] == "vectordb flat sq8" for r in measured)
    for r in measured:
        assert 0.0 <= float(r[3]) <= 1.0
        if r[1] == "exact":
            assert float(r[3]) == 1.0, r
    env = {**os.environ, "VECTORDB_BENCH_DATA": str(ROOT / "no-such-dir")}
    skip = subprocess.run([sys.executable, "benchmarks/bench_quant.py", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert skip.returncode == 0 and skip.stdout.startswith("skipped:")


def test_open_benchmark_runs_and_reports_every_collection_kind():
    """bench_open.py at a tiny size: one row per kind, with an open time and memory columns."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_open", "--sizes", "3000x16"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith(("| flat", "| ivf"))]
    assert [r[0] for r in rows] == ["flat", "flat sq8", "ivf", "ivf sq8", "ivf pq4"]
    assert all(float(r[4].split("/")[1]) >= 0 and float(r[9].rstrip("x")) > 0 for r in rows)


def test_results_name_no_local_path():
    from benchmarks.__main__ import public_command  # noqa: PLC0415

    argv = ["--data-dir", "/home/me/data", "--datasets", "minilm,file:/home/me/x.npy", "--out=/tmp/r",
            "--quick"]
    cmd = public_command(argv)
    assert cmd == "python -m benchmarks --data-dir DIR --datasets minilm,file:x.npy --out=OUT --quick"
    assert public_command(["--data-dir"]) == "python -m benchmarks --data-dir"


def test_every_system_has_its_own_colour_and_marker():
    from benchmarks import report, systems  # noqa: PLC0415

    names = list(systems.SYSTEMS)
    assert set(names) <= set(report.COLORS) and set(names) <= set(report.MARKERS)
    assert len({report.COLORS[n] for n in names}) == len(names)
    assert len({report.MARKERS[n] for n in names}) == len(names)


def test_interleaved_mode_measures_every_point_with_the_sequential_recall(tmp_path, monkeypatch):
    """--interleave: every system and sweep point gets a row with pooled timings from every round,
    and the recall (batch and single) is the one the one-after-another mode measures."""
    monkeypatch.setenv("VECTORDB_BENCH_CACHE", str(tmp_path / "cache"))
    ds = datasets.load(datasets.DatasetSpec("blobs", n=3000, d=16, nq=30, n_extra=50), verbose=False)
    names = ["vectordb", "vectordb-ivf-pq4", "numpy", "faiss-ivf-pqfs", "hnswlib", "chromadb"]
    names = [n for n in names if n.startswith("vectordb") or importlib.util.find_spec(MODULE_OF[n])]
    budget = runner.Budget(n_single=20, single_seconds=5, batch_repeats=1, add_repeats=1)
    options = {"n_clusters": 12, "n_probe_sweep": [1, 3, 12], "ef_sweep": [10, 40]}
    tasks = [runner.Task(str(ds.directory), n, 1, budget, options) for n in names]
    said: list[str] = []
    seq = runner.run_tasks(tasks, in_process=True, log=lambda s: None)
    mixed = runner.run_tasks(tasks, in_process=True, log=said.append, interleave=4)
    key = lambda r: (r["system"], r["params"])  # noqa: E731
    assert [key(r) for r in mixed] == [key(r) for r in seq]
    assert len({r["system"] for r in mixed}) == len(names) and len(mixed) > len(names)
    assert sum("round 4/4" in s for s in said) == 1
    for a, b in zip(seq, mixed):
        assert b["status"] == "ok" == a["status"], b
        assert (b["recall"], b["recall_single"]) == (a["recall"], a["recall_single"]), key(b)
        assert b["interleave_rounds"] == 4 and len(b["p50_rounds_us"]) == 4
        assert len(b["batch_qps_rounds"]) == 4 and b["nq_batch"] == 30 and b["n_single"] == 20
        assert 0 < b["p50_us"] <= b["p95_us"] <= b["p99_us"] and b["batch_qps"] > 0
        assert b["build_s"] >= 0 and b["add1k_ms"] is not None
        assert b["load_min"] <= b["load_max"]


class _Spinner(systems.NumpyBrute):
    """numpy's system whose every search leaves a thread burning CPU for a while after it returns,
    as a BLAS or OpenMP pool does (OpenBLAS workers spin ~0.1 s after a matrix product)."""

    name = "spinner"
    busy = threading.Event()

    def _spin(self) -> None:
        type(self).busy.set()
        end = time.perf_counter() + 0.15
        while time.perf_counter() < end:
            pass
        type(self).busy.clear()

    def query_one(self, q, k):
        out = super().query_one(q, k)
        threading.Thread(target=self._spin, daemon=True).start()
        time.sleep(0.001)  # the thread is running when the search returns
        return out

    def query_batch(self, queries, k):
        out = super().query_batch(queries, k)
        threading.Thread(target=self._spin, daemon=True).start()
        time.sleep(0.001)
        return out


class _Observer(systems.NumpyBrute):
    """numpy's system noting, at each search it is timed on, whether another system's thread still
    burns CPU in the process."""

    name = "observer"
    saw_busy: list[bool] = []

    def query_one(self, q, k):
        type(self).saw_busy.append(_Spinner.busy.is_set())
        return super().query_one(q, k)

    def query_batch(self, queries, k):
        type(self).saw_busy.append(_Spinner.busy.is_set())
        return super().query_batch(queries, k)


def test_interleaved_mode_times_no_system_while_another_ones_threads_still_run(tmp_path, monkeypatch):
    """In one process, a system's thread pool can keep a core busy after its search returns: the next
    system must not be timed meanwhile (interleaved rounds put the same neighbour before it every
    round, so the cost would land on it alone)."""
    monkeypatch.setenv("VECTORDB_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(systems.SYSTEMS, "spinner", _Spinner)
    monkeypatch.setitem(systems.SYSTEMS, "observer", _Observer)
    _Observer.saw_busy = []
    ds = datasets.load(datasets.DatasetSpec("blobs", n=500, d=8, nq=10, n_extra=10), verbose=False)
    budget = runner.Budget(n_single=6, single_seconds=5, batch_repeats=1, add_repeats=1)
    tasks = [runner.Task(str(ds.directory), n, 1, budget, {}) for n in ("spinner", "observer")]
    rows = runner.run_tasks(tasks, in_process=True, log=lambda s: None, interleave=3)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert len(_Observer.saw_busy) > 3 and not any(_Observer.saw_busy), _Observer.saw_busy


def test_interleaved_run_prints_tables_with_cpu_and_load(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, VECTORDB_BENCH_CACHE=str(tmp_path / "cache"), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "benchmarks", "--datasets", "sphere:1000:12", "--nq", "20",
           "--n-single", "12", "--threads", "1,2", "--n-clusters", "8", "--n-probe", "2,8",
           "--systems", "vectordb-ivf,numpy", "--interleave", "3", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = next(out.glob("*-sphere-1k-12.md")).read_text()
    for threads in ("1 thread", "2 threads"):
        (head,) = [line for line in text.splitlines() if line.startswith(f"## {threads} -- ")]
        assert "cores, load average " in head and head.endswith("systems interleaved in 3 rounds")
        assert any(line.startswith(f"### sphere-1k-12: {threads} -- ") for line in proc.stdout.splitlines())
    rows = json.loads(next(out.glob("*-sphere-1k-12.json")).read_text())["rows"]
    assert sorted((r["threads"], r["system"], r["params"]) for r in rows) == sorted(
        (t, s, p) for t in (1, 2) for s, p in [("numpy", ""), ("vectordb-ivf", "n_probe=default(8)"),
                                               ("vectordb-ivf", "n_probe=2"), ("vectordb-ivf", "n_probe=8")])
    assert all(r["status"] == "ok" and r["recall"] == 1.0 for r in rows if r["params"] != "n_probe=2")


def test_pq4_bound_benchmark_reports_engine_and_error_model(tmp_path):
    """bench_pq4_bound.py on a small MiniLM-shaped set (clustered unit vectors, exact ground truth):
    the engine table and the simulation give a recall in [0, 1] and at least k rows re-ranked a
    query; without the set it says why and fails."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 32))
    base = centres[rng.integers(0, 40, 3000)] + 0.4 * rng.normal(size=(3000, 32))
    queries = centres[rng.integers(0, 40, 30)] + 0.4 * rng.normal(size=(30, 32))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    sim = queries @ base.T
    gt = np.argsort(-sim, axis=1)[:, :100]
    d = tmp_path / "minilm"
    d.mkdir()
    np.save(d / "base.npy", base.astype(np.float32))
    np.save(d / "queries_dev.npy", queries.astype(np.float32))
    np.save(d / "gt_dev.npy", gt.astype(np.int32))
    np.save(d / "gt_dev_dist.npy", (1 - np.take_along_axis(sim, gt, 1)).astype(np.float32))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_pq4_bound", "--data-dir", str(tmp_path),
                           "--n-probe", "4,55", "--sim-n-probe", "4", "--eps", "0.2", "--eps-bias", "0.1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = [[c.strip() for c in line.replace("\\|", "").strip("|").split("|")] for line in proc.stdout.splitlines()]
    engine = [r for r in cells if r[0] in ("4", "55")]
    assert len(engine) == 2 and all(0 <= float(r[1]) <= 1 and float(r[2]) >= 10 for r in engine), proc.stdout
    simulated = [r for r in cells if r[0].startswith(("eps", "a^"))]
    assert len(simulated) == 4 and all(0 <= float(r[2]) <= 1 and float(r[3]) >= 10 for r in simulated), proc.stdout
    missing = subprocess.run([sys.executable, "-m", "benchmarks.bench_pq4_bound", "--data-dir", str(tmp_path / "no")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "minilm set not available" in missing.stderr


def test_flat_batch_benchmark_runs_and_checks_batches_against_single_queries():
    proc = subprocess.run([sys.executable, "benchmarks/bench_flat_batch.py", "--n", "3000", "--d", "16", "--sizes",
                           "1,3,13", "--rounds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "differs" not in proc.stdout and "load average" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1:3] for r in rows] == [[f" {n} ", f" {f} "] for n in (1, 3, 13) for f in ("none", "half")]
