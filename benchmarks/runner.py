"""Measure one system on one data set at one thread count, and run many such tasks.

By default each (system, threads) task runs in its own freshly spawned Python process, one after
the other: thread-count environment variables (OpenBLAS/OpenMP) take effect before the libraries
load, RSS growth is that system's alone, and a crash in one system becomes a "failed" row instead
of ending the run. `in_process=True` runs them in this process (faster to start; used by tests).

One after another, a load change on the shared machine between two systems' tasks moves their
ratio; `interleave=ROUNDS` (run_interleaved) builds all systems of a thread count in one process
and times their queries in alternating rounds instead, so each sees the same load.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import traceback
from typing import Any

import numpy as np

from . import datasets, machine, systems

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclasses.dataclass
class Budget:
    """How much measuring each task may do; the quick mode shrinks these."""

    k: int = 10
    n_single: int = 1000  # single queries timed per sweep point (p50/p99)
    single_seconds: float = 6.0  # ...but stop early past this (slow systems)
    batch_repeats: int = 3  # batch QPS = best of this many passes over all queries
    batch_seconds: float = 8.0  # ...no further passes once this much time is spent
    add_batch: int = 1000
    add_repeats: int = 3  # +1k add = median of this many adds of add_batch after the queries
    task_timeout: float = 1200.0


@dataclasses.dataclass
class Task:
    dataset_dir: str
    system: str
    threads: int
    budget: Budget
    options: dict[str, Any]


def _rows_template(task: Task, ds: datasets.Dataset) -> dict[str, Any]:
    return {"dataset": ds.name, "system": task.system, "threads": task.threads, "params": "",
            "config": "", "version": "", "status": "ok", "train_s": None, "add_s": None,
            "build_s": None, "add_per_s": None, "p50_us": None, "p95_us": None, "p99_us": None,
            "mean_us": None,
            "n_single": 0, "batch_qps": None, "nq_batch": 0, "recall": None,
            "recall_single": None, "rss_mb": None, "peak_rss_mb": None, "disk_mb": None,
            "add1k_ms": None, "approximate": None}


class _Built:
    """One system built on a data set: the adapter, its scratch directory and the row template
    holding the build's measurements."""

    def __init__(self, task: Task, system: systems.System, row0: dict[str, Any], workdir: str):
        self.task, self.system, self.row0, self.workdir = task, system, row0, workdir

    def close(self) -> None:
        try:
            self.system.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def _build(task: Task, ds: datasets.Dataset, base: np.ndarray, log) -> _Built | list[dict]:
    """Make the system and build it over the base, measuring time and RSS growth; returns the
    built system, or the rows saying why it could not run."""
    row0 = _rows_template(task, ds)
    scratch_root = datasets.cache_root() / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"{task.system}-", dir=scratch_root)
    system = None
    b = task.budget
    try:
        opts = dict(task.options)
        # capacity for the post-build adds (hnswlib preallocates)
        opts.setdefault("n_extra", ds.extra.shape[0] * max(1, b.add_repeats))
        machine.release_memory()
        try:
            system = systems.make_system(task.system, metric=ds.metric, d=base.shape[1],
                                         n=base.shape[0], threads=task.threads, workdir=workdir,
                                         options=opts)
        except systems.NotAvailable as exc:
            return [dict(row0, status=f"not available: {exc}")]
        row0.update(version=system.version(), config=system.config(),
                    approximate=system.approximate)
        machine.release_memory()
        rss0 = machine.rss_bytes()  # library loaded, index still empty
        machine.reset_peak_rss()
        try:
            timing = system.build(base, b.add_batch)
        except systems.NotAvailable as exc:
            return [dict(row0, status=f"not available: {exc}")]
        machine.release_memory()
        rss1 = machine.rss_bytes()
        peak = machine.peak_rss_bytes()
        row0.update(timing)
        row0["config"] = system.config()  # may know more after the build (e.g. list sizes)
        row0["blas"] = machine.blas_kernels()
        row0["blas_overrides"] = machine.blas_overrides()
        row0["add_per_s"] = base.shape[0] / timing["add_s"] if timing.get("add_s") else None
        row0["rss_mb"] = (rss1 - rss0) / 2**20
        row0["peak_rss_mb"] = (peak - rss0) / 2**20 if peak else None
        disk = system.disk_bytes()
        row0["disk_mb"] = disk / 2**20 if disk is not None else None
        log(f"    built in {timing['build_s']:.2f} s"
            + (f" (train {timing['train_s']:.2f} s)" if timing.get("train_s") else "")
            + f", RSS +{row0['rss_mb']:.0f} MB, disk {row0['disk_mb'] or 0:.1f} MB")
        built = _Built(task, system, row0, workdir)
        system = None  # the caller closes it now
        return built
    except Exception as exc:  # noqa: BLE001 -- one broken system must not end the run
        log(traceback.format_exc(limit=4))
        return [dict(row0, status=f"failed: {_one_line(exc)}")]
    finally:
        if system is not None:
            try:
                system.close()
            except Exception:  # noqa: BLE001
                pass
            shutil.rmtree(workdir, ignore_errors=True)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _measure_adds(built: _Built, ds: datasets.Dataset, rows: list[dict[str, Any]]) -> None:
    """Incremental adds after the queries: batches of 1,000 into the built (trained) index; the
    same extra vectors under new ids each time, so the data set stays small."""
    b = built.task.budget
    extra = np.ascontiguousarray(ds.extra[: b.add_batch], np.float32)
    if not extra.shape[0]:
        return
    n_added = ds.base.shape[0]
    times = []
    for j in range(max(1, b.add_repeats)):
        t0 = time.perf_counter()
        built.system.add(extra, first_id=n_added + j * extra.shape[0])
        times.append((time.perf_counter() - t0) * 1000.0 * (1000.0 / extra.shape[0]))
    for r in rows:
        r["add1k_ms"] = float(np.median(times))
        r["add1k_ms_all"] = times


def _log_point(log, row: dict[str, Any]) -> None:
    log(f"    {row['params'] or 'exact':<12} p50 {row['p50_us']:9.1f} us  p99 "
        f"{row['p99_us']:9.1f} us  batch {row['batch_qps']:9.0f} q/s  "
        f"recall@10 {row['recall']:.4f}")


def run_task(task: Task, log=print) -> list[dict[str, Any]]:
    """Build, query over the sweep, add extra vectors, measure; one row per sweep value.

    Never raises for a missing or broken system: the row's status says what happened."""
    ds = datasets.load_dir(task.dataset_dir)  # fully in memory before the RSS baseline
    base = np.ascontiguousarray(ds.base, np.float32)
    built = _build(task, ds, base, log)
    if isinstance(built, list):
        return built
    rows: list[dict[str, Any]] = []
    try:
        single_idx = np.arange(min(task.budget.n_single, ds.queries.shape[0]))
        for value in built.system.sweep():
            built.system.set_param(value)
            row = dict(built.row0, params=built.system.param_label())
            row.update(_measure_queries(built.system, ds, single_idx, task.budget))
            rows.append(row)
            _log_point(log, row)
        _measure_adds(built, ds, rows)
        return rows
    except Exception as exc:  # noqa: BLE001 -- one broken system must not end the run
        log(traceback.format_exc(limit=4))
        if rows:  # the measured rows stand; say what broke afterwards
            return [dict(r, status=f"partial: {_one_line(exc)}") for r in rows]
        return [dict(built.row0, status=f"failed: {_one_line(exc)}")]
    finally:
        built.close()


def _warm_up(system: systems.System, queries: np.ndarray, k: int) -> None:
    """First calls pay for lazy initialisation, page faults, thread start-up: a few untimed queries."""
    for i in range(min(5, queries.shape[0])):
        system.query_one(queries[i], k)


def _time_singles(system: systems.System, queries: np.ndarray, idx: np.ndarray, k: int, seconds: float,
                  min_n: int) -> tuple[np.ndarray, list[Any]]:
    """system.query_one over queries[idx] in order, each timed, until at least min_n were timed and
    `seconds` have passed: (the times in microseconds, the raw results)."""
    clock = time.perf_counter_ns
    times, raws = [], []
    deadline = time.perf_counter() + seconds
    for i in idx:
        q = queries[i]
        t0 = clock()
        raw = system.query_one(q, k)
        times.append(clock() - t0)
        raws.append(raw)
        if len(times) >= min_n and time.perf_counter() > deadline:
            break
    return np.array(times, dtype=np.float64) / 1000.0, raws


def _measure_queries(system: systems.System, ds: datasets.Dataset, single_idx: np.ndarray,
                     b: Budget) -> dict[str, Any]:
    k = b.k
    queries = np.ascontiguousarray(ds.queries, np.float32)
    _warm_up(system, queries, k)
    machine.release_memory()

    t_us, raws = _time_singles(system, queries, single_idx, k, b.single_seconds, 50)
    single_rows = np.vstack([system.rows(r, k) for r in raws])
    n_single = len(raws)
    recall_single = datasets.recall_at_k(single_rows, ds, k, rows=single_idx[:n_single])

    best = None
    spent = 0.0
    batch_raw = None
    for _ in range(max(1, b.batch_repeats)):
        t0 = time.perf_counter()
        batch_raw = system.query_batch(queries, k)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        spent += dt
        if spent > b.batch_seconds:
            break
    batch_rows = system.rows(batch_raw, k)
    return {**_latency_stats(t_us), "n_single": n_single,
            "batch_qps": queries.shape[0] / best, "nq_batch": int(queries.shape[0]),
            "recall": datasets.recall_at_k(batch_rows, ds, k), "recall_single": recall_single}


def _latency_stats(t_us: np.ndarray) -> dict[str, float]:
    p50, p95, p99 = np.percentile(t_us, [50, 95, 99])
    return {"p50_us": float(p50), "p95_us": float(p95), "p99_us": float(p99),
            "mean_us": float(t_us.mean())}


def latency_us(fn, queries: np.ndarray, n: int, warmup: int = 5) -> np.ndarray:
    """Wall time of fn(queries[i]) for i in 0..n-1 (cycling), in microseconds, after a warm-up."""
    for i in range(min(warmup, queries.shape[0])):
        fn(queries[i])
    clock = time.perf_counter_ns
    out = np.empty(n, dtype=np.float64)
    m = queries.shape[0]
    for i in range(n):
        q = queries[i % m]
        t0 = clock()
        fn(q)
        out[i] = clock() - t0
    return out / 1000.0


def interleaved_latency_us(fns: dict, queries: np.ndarray, n: int, rounds: int = 5) -> dict:
    """latency_us for several callables, measured in alternating rounds so that noise from other
    processes on the machine lands on all of them alike; returns name -> all samples."""
    per_round = max(1, n // rounds)
    samples: dict = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            start = (r * per_round) % max(1, queries.shape[0])
            qs = np.roll(queries, -start, axis=0)
            samples[name].append(latency_us(fn, qs, per_round, warmup=5 if r == 0 else 1))
    return {name: np.concatenate(v) for name, v in samples.items()}


# ------------------------------------------------------------------------------ interleaved

class _Point:
    """One (system, sweep value) of an interleaved run and what its rounds measured."""

    def __init__(self, built: _Built, value: Any):
        self.built, self.value = built, value
        self.label = ""
        self.round_us: list[np.ndarray] = []  # single-query times, one array per round
        self.single: dict[int, Any] = {}  # query index -> raw single-query result
        self.batch_s: list[float] = []  # one pass over every query per round
        self.batch_raw: Any = None

    def row(self, ds: datasets.Dataset, k: int) -> dict[str, Any]:
        system = self.built.system
        row = dict(self.built.row0, params=self.label, interleave_rounds=len(self.batch_s))
        t_us = np.concatenate(self.round_us) if self.round_us else np.zeros(0)
        if t_us.size:
            idx = np.array(sorted(self.single))
            single_rows = np.vstack([system.rows(self.single[i], k) for i in idx])
            row.update(_latency_stats(t_us), n_single=int(t_us.size),
                       recall_single=datasets.recall_at_k(single_rows, ds, k, rows=idx),
                       p50_rounds_us=[float(np.median(t)) for t in self.round_us if t.size])
        if self.batch_s:
            nq = ds.queries.shape[0]
            row.update(batch_qps=nq / float(np.median(self.batch_s)), nq_batch=int(nq),
                       batch_qps_best=nq / min(self.batch_s),
                       batch_qps_rounds=[nq / t for t in self.batch_s],
                       recall=datasets.recall_at_k(system.rows(self.batch_raw, k), ds, k))
        return row


def _quiesce(max_s: float = 1.0, step: float = 0.01) -> None:
    """Waits (at most max_s) until this process uses no CPU while its main thread sleeps: a BLAS or
    OpenMP pool keeps spinning after its work returns (OpenBLAS workers ~85 ms of CPU in the 200 ms
    after a matrix product), and a system timed meanwhile would share a core with the previous
    one's spinning threads. Quiet means two steps in a row: on a loaded machine a spinning thread
    can wait a step for a core."""
    end = time.perf_counter() + max_s
    quiet = 0
    while quiet < 2 and time.perf_counter() < end:
        c0 = time.process_time()
        time.sleep(step)
        quiet = quiet + 1 if time.process_time() - c0 < step / 10 else 0


def run_interleaved(tasks: list[Task], rounds: int, log=print) -> list[dict[str, Any]]:
    """Build every task's system (one after another, timed as in run_task), then time single
    queries and batch passes in alternating rounds, so load from other processes lands on every
    system alike. Round r: each (system, sweep value) in turn -- the order rotated by r -- runs
    the r-th slice of the single queries, then each runs one batch pass over all queries. Each
    point's turn starts once the process is idle (_quiesce): the point before it, always the same
    one but in the first slot, cannot hand it its thread pools' spinning.

    Per point: p50/p95/p99 over the pooled single-query times, batch QPS from the median pass;
    recall from a full batch pass (and the pooled single results) against the exact ground truth,
    as in run_task. All tasks must share a data set and a thread count."""
    ds = datasets.load_dir(tasks[0].dataset_dir)
    base = np.ascontiguousarray(ds.base, np.float32)
    b = tasks[0].budget
    k = b.k
    rounds = max(1, rounds)
    out: list[list[dict[str, Any]]] = [[] for _ in tasks]  # rows in the order of the tasks
    built: list[_Built] = []
    broken: dict[int, str] = {}  # id(_Built) -> what failed
    try:
        for n, task in enumerate(tasks):
            log(f"  [{task.system}, {task.threads} thread{'s' if task.threads > 1 else ''}: build]")
            result = _build(task, ds, base, log)
            if isinstance(result, list):
                out[n] = result
            else:
                built.append(result)
        points = [_Point(bt, v) for bt in built for v in bt.system.sweep()]
        queries = np.ascontiguousarray(ds.queries, np.float32)
        nq = queries.shape[0]
        slices = np.array_split(np.arange(min(b.n_single, nq)), rounds)
        min_per_slice = -(-50 // rounds)  # slow systems: at least 50 queries before the deadline

        def attempt(pt: _Point, what) -> None:
            if id(pt.built) in broken:
                return
            try:
                pt.built.system.set_param(pt.value)
                pt.label = pt.label or pt.built.system.param_label()
                _quiesce()  # the previous point's threads may still spin: not on this one's clock
                what(pt)
            except Exception as exc:  # noqa: BLE001 -- one broken system must not end the run
                log(traceback.format_exc(limit=4))
                broken[id(pt.built)] = _one_line(exc)

        def warm_up(pt: _Point) -> None:
            _warm_up(pt.built.system, queries, k)

        def singles(pt: _Point, part: np.ndarray) -> None:
            system = pt.built.system
            if part.size:  # two untimed queries first: the previous point left other data cached
                for j in (1, 2):
                    system.query_one(queries[(int(part[0]) - j) % nq], k)
            t_us, raws = _time_singles(system, queries, part, k, b.single_seconds / rounds, min_per_slice)
            pt.single.update((int(i), raw) for i, raw in zip(part, raws))
            pt.round_us.append(t_us)

        def batch(pt: _Point) -> None:
            t0 = time.perf_counter()
            raw = pt.built.system.query_batch(queries, k)
            pt.batch_s.append(time.perf_counter() - t0)
            if pt.batch_raw is None:
                pt.batch_raw = raw

        for pt in points:
            attempt(pt, warm_up)
        machine.release_memory()
        for r in range(rounds):
            shift = r % max(1, len(points))
            order = points[shift:] + points[:shift]
            for pt in order:
                attempt(pt, lambda p: singles(p, slices[r]))
            for pt in order:
                attempt(pt, batch)
            log(f"    round {r + 1}/{rounds}: load average {os.getloadavg()[0]:.2f}")

        for bt in built:
            pts = [pt for pt in points if pt.built is bt]
            rows = [pt.row(ds, k) for pt in pts if pt.batch_s and pt.round_us]
            for row in rows:
                _log_point(log, row)
            if id(bt) not in broken:
                try:
                    _measure_adds(bt, ds, rows)
                except Exception as exc:  # noqa: BLE001
                    log(traceback.format_exc(limit=4))
                    broken[id(bt)] = _one_line(exc)
            if id(bt) in broken:
                why = broken[id(bt)]
                rows = [dict(r, status=f"partial: {why}") for r in rows] or \
                    [dict(bt.row0, status=f"failed: {why}")]
            out[tasks.index(bt.task)] = rows
        return [r for rows in out for r in rows]
    finally:
        for bt in built:
            bt.close()


# ---------------------------------------------------------------------------------- processes

def _child(conn, fn, args: tuple, system: str, threads: int) -> None:
    try:
        rows = fn(*args, log=lambda s: print(s, flush=True))
        conn.send(rows)
    except BaseException as exc:  # noqa: BLE001
        conn.send([{"system": system, "threads": threads,
                    "status": f"failed: {type(exc).__name__}: {exc}"}])
    finally:
        conn.close()


def run_isolated(task: Task, log=print, tasks: list[Task] | None = None, interleave: int = 0,
                 load: machine.LoadRange | None = None) -> list[dict[str, Any]]:
    """run_task in a fresh spawned process with the thread-count variables set before start;
    with `tasks` and `interleave`, run_interleaved(tasks, interleave) there instead (`task` is
    then the first of them). `load` is sampled while the child runs."""
    ctx = mp.get_context("spawn")
    group = tasks or [task]
    timeout = task.budget.task_timeout * len(group)
    saved = {k: os.environ.get(k) for k in THREAD_ENV + machine.BLAS_OVERRIDES}
    for k in THREAD_ENV:
        os.environ[k] = str(task.threads)
    for k in machine.BLAS_OVERRIDES:  # each BLAS picks its own kernel for this CPU
        os.environ.pop(k, None)
    parent, child = ctx.Pipe(duplex=False)
    fn, args = (run_interleaved, (group, interleave)) if tasks else (run_task, (task,))
    proc = ctx.Process(target=_child, args=(child, fn, args, task.system, task.threads),
                       daemon=True)
    try:
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    child.close()
    rows = None
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline:
            if load is not None:
                load.sample()
            if parent.poll(min(2.0, max(0.0, deadline - time.perf_counter()))):
                rows = parent.recv()
                break
    except (EOFError, OSError):
        rows = None
    proc.join(timeout=30)
    if proc.is_alive():  # our own child: stop it by its handle
        proc.terminate()
        proc.join(timeout=10)
        status = f"failed: timed out after {timeout:.0f} s"
    elif rows is None:
        code = proc.exitcode
        status = f"failed: worker died (exit code {code}" + (
            f", signal {-code})" if code is not None and code < 0 else ")")
    else:
        return rows
    ds_name = datasets.load_dir(task.dataset_dir, mmap=True).name
    return [{"dataset": ds_name, "system": t.system, "threads": t.threads,
             "params": "", "status": status} for t in group]


def run_tasks(tasks: list[Task], in_process: bool = False, log=print,
              interleave: int = 0) -> list[dict[str, Any]]:
    """Run the tasks one after another (each in a fresh process unless in_process); with
    `interleave` = ROUNDS, the tasks of one thread count together in one process, their queries
    timed in that many alternating rounds (run_interleaved). Every row records the range of the
    1-minute load average seen while its task ran (load_min, load_max)."""
    groups: list[list[Task]]
    if interleave:
        by_threads: dict[int, list[Task]] = {}
        for t in tasks:
            by_threads.setdefault(t.threads, []).append(t)
        groups = list(by_threads.values())
    else:
        groups = [[t] for t in tasks]
    out: list[dict[str, Any]] = []
    for group in groups:
        t = group[0]
        load = machine.LoadRange()
        load.sample()
        if interleave:
            log(f"  [{', '.join(g.system for g in group)}, {t.threads} "
                f"thread{'s' if t.threads > 1 else ''}, interleaved in {interleave} rounds]")
        else:
            log(f"  [{t.system}, {t.threads} thread{'s' if t.threads > 1 else ''}]")
        start = time.perf_counter()

        def sampled_log(text: str) -> None:
            load.sample()
            log(text)

        if in_process:
            for k in THREAD_ENV:  # too late for already-loaded BLAS; systems set theirs directly
                os.environ[k] = str(t.threads)
            rows = (run_interleaved(group, interleave, log=sampled_log) if interleave
                    else run_task(t, log=sampled_log))
        else:
            rows = run_isolated(t, log=log, tasks=group if interleave else None,
                                interleave=interleave, load=load)
        load.sample()
        for r in rows:
            r.setdefault("status", "ok")
            r["task_s"] = time.perf_counter() - start
            r["load_min"], r["load_max"] = load.low, load.high
            if r["status"] != "ok":
                log(f"    [{r.get('system')}] {r['status']}")
        out.extend(rows)
    return out
