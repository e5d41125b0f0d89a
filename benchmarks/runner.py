"""Measure one system on one data set at one thread count, and run many such tasks.

By default each (system, threads) task runs in its own freshly spawned Python process, one after
the other: thread-count environment variables (OpenBLAS/OpenMP) take effect before the libraries
load, RSS growth is that system's alone, and a crash in one system becomes a "failed" row instead
of ending the run. `in_process=True` runs them in this process (faster to start; used by tests).
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
            "build_s": None, "add_per_s": None, "p50_us": None, "p99_us": None, "mean_us": None,
            "n_single": 0, "batch_qps": None, "nq_batch": 0, "recall": None,
            "recall_single": None, "rss_mb": None, "peak_rss_mb": None, "disk_mb": None,
            "add1k_ms": None, "approximate": None}


def run_task(task: Task, log=print) -> list[dict[str, Any]]:
    """Build, query over the sweep, add extra vectors, measure; one row per sweep value.

    Never raises for a missing or broken system: the row's status says what happened."""
    ds = datasets.load_dir(task.dataset_dir)  # fully in memory before the RSS baseline
    base = np.ascontiguousarray(ds.base, np.float32)
    row0 = _rows_template(task, ds)
    scratch_root = datasets.cache_root() / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"{task.system}-", dir=scratch_root)
    system = None
    rows: list[dict[str, Any]] = []
    b = task.budget
    try:
        opts = dict(task.options)
        # capacity for the post-build adds (hnswlib preallocates)
        opts.setdefault("n_extra", ds.extra.shape[0] * max(1, b.add_repeats))
        machine.release_memory()
        rss0 = machine.rss_bytes()
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
        n_added = base.shape[0]
        row0["add_per_s"] = n_added / timing["add_s"] if timing.get("add_s") else None
        row0["rss_mb"] = (rss1 - rss0) / 2**20
        row0["peak_rss_mb"] = (peak - rss0) / 2**20 if peak else None
        disk = system.disk_bytes()
        row0["disk_mb"] = disk / 2**20 if disk is not None else None
        log(f"    built in {timing['build_s']:.2f} s"
            + (f" (train {timing['train_s']:.2f} s)" if timing.get("train_s") else "")
            + f", RSS +{row0['rss_mb']:.0f} MB, disk {row0['disk_mb'] or 0:.1f} MB")

        single_idx = np.arange(min(b.n_single, ds.queries.shape[0]))
        for value in system.sweep():
            system.set_param(value)
            row = dict(row0, params=system.param_label())
            row.update(_measure_queries(system, ds, single_idx, b))
            rows.append(row)
            log(f"    {row['params'] or 'exact':<12} p50 {row['p50_us']:9.1f} us  p99 "
                f"{row['p99_us']:9.1f} us  batch {row['batch_qps']:9.0f} q/s  "
                f"recall@10 {row['recall']:.4f}")

        # incremental adds after the queries: batches of 1,000 into the built (trained) index;
        # the same extra vectors under new ids each time, so the data set stays small
        extra = np.ascontiguousarray(ds.extra[: b.add_batch], np.float32)
        if extra.shape[0]:
            times = []
            for j in range(max(1, b.add_repeats)):
                t0 = time.perf_counter()
                system.add(extra, first_id=n_added + j * extra.shape[0])
                times.append((time.perf_counter() - t0) * 1000.0 * (1000.0 / extra.shape[0]))
            for r in rows:
                r["add1k_ms"] = float(np.median(times))
                r["add1k_ms_all"] = times
        return rows
    except Exception as exc:  # noqa: BLE001 -- one broken system must not end the run
        tb = traceback.format_exc(limit=4)
        log(tb)
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if rows:  # the measured rows stand; say what broke afterwards
            return [dict(r, status=f"partial: {msg}") for r in rows]
        return [dict(row0, status=f"failed: {msg}")]
    finally:
        if system is not None:
            try:
                system.close()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(workdir, ignore_errors=True)


def _measure_queries(system: systems.System, ds: datasets.Dataset, single_idx: np.ndarray,
                     b: Budget) -> dict[str, Any]:
    k = b.k
    queries = np.ascontiguousarray(ds.queries, np.float32)
    # warm-up: first calls pay for lazy initialisation, page faults, thread start-up
    for i in range(min(5, queries.shape[0])):
        system.query_one(queries[i], k)
    machine.release_memory()

    times = []
    raws = []
    deadline = time.perf_counter() + b.single_seconds
    clock = time.perf_counter_ns
    for i in single_idx:
        q = queries[i]
        t0 = clock()
        raw = system.query_one(q, k)
        times.append(clock() - t0)
        raws.append(raw)
        if len(times) >= 50 and time.perf_counter() > deadline:
            break
    t_us = np.array(times, dtype=np.float64) / 1000.0
    single_rows = np.vstack([system.rows(r, k) for r in raws])
    n_single = len(times)
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
    return {"p50_us": float(np.percentile(t_us, 50)), "p99_us": float(np.percentile(t_us, 99)),
            "mean_us": float(t_us.mean()), "n_single": n_single,
            "batch_qps": queries.shape[0] / best, "nq_batch": int(queries.shape[0]),
            "recall": datasets.recall_at_k(batch_rows, ds, k), "recall_single": recall_single}


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


# ---------------------------------------------------------------------------------- processes

def _child(conn, task: Task) -> None:
    try:
        rows = run_task(task, log=lambda s: print(s, flush=True))
        conn.send(rows)
    except BaseException as exc:  # noqa: BLE001
        conn.send([{"system": task.system, "threads": task.threads,
                    "status": f"failed: {type(exc).__name__}: {exc}"}])
    finally:
        conn.close()


def run_isolated(task: Task, log=print) -> list[dict[str, Any]]:
    """run_task in a fresh spawned process with the thread-count variables set before start."""
    ctx = mp.get_context("spawn")
    saved = {k: os.environ.get(k) for k in THREAD_ENV + machine.BLAS_OVERRIDES}
    for k in THREAD_ENV:
        os.environ[k] = str(task.threads)
    for k in machine.BLAS_OVERRIDES:  # each BLAS picks its own kernel for this CPU
        os.environ.pop(k, None)
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, task), daemon=True)
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
    try:
        if parent.poll(task.budget.task_timeout):
            rows = parent.recv()
    except (EOFError, OSError):
        rows = None
    proc.join(timeout=30)
    if proc.is_alive():  # our own child: stop it by its handle
        proc.terminate()
        proc.join(timeout=10)
        status = f"failed: timed out after {task.budget.task_timeout:.0f} s"
    elif rows is None:
        code = proc.exitcode
        status = f"failed: worker died (exit code {code}" + (
            f", signal {-code})" if code is not None and code < 0 else ")")
    else:
        return rows
    ds_name = datasets.load_dir(task.dataset_dir, mmap=True).name
    return [{"dataset": ds_name, "system": task.system, "threads": task.threads,
             "params": "", "status": status}]


def run_tasks(tasks: list[Task], in_process: bool = False, log=print) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in tasks:
        log(f"  [{t.system}, {t.threads} thread{'s' if t.threads > 1 else ''}]")
        start = time.perf_counter()
        if in_process:
            for k in THREAD_ENV:  # too late for already-loaded BLAS; systems set theirs directly
                os.environ[k] = str(t.threads)
            rows = run_task(t, log=log)
        else:
            rows = run_isolated(t, log=log)
        for r in rows:
            r.setdefault("status", "ok")
            r["task_s"] = time.perf_counter() - start
            if r["status"] != "ok":
                log(f"    {r['status']}")
        out.extend(rows)
    return out
