"""Tables (Markdown, also printed), the recall@10-vs-QPS plot, and the JSON record of a run."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

SYSTEM_ORDER = ("vectordb", "vectordb-sq8", "vectordb-ivf", "vectordb-ivf-sq8", "vectordb-ivf-pq4", "numpy",
                "faiss-flat", "faiss-ivf", "faiss-ivf-sq8", "faiss-ivf-pqfs", "faiss-ivf-rabitq",
                "faiss-hnsw", "hnswlib", "chromadb")
COLORS = {"vectordb": "#d62728", "vectordb-sq8": "#e377c2", "vectordb-ivf": "#ff7f0e",
          "vectordb-ivf-sq8": "#bcbd22", "vectordb-ivf-pq4": "#8c564b",
          "numpy": "#7f7f7f", "faiss-flat": "#1f77b4",
          "faiss-ivf": "#17becf", "faiss-ivf-sq8": "#aec7e8", "faiss-ivf-pqfs": "#393b79",
          "faiss-ivf-rabitq": "#6b6ecf", "faiss-hnsw": "#98df8a", "hnswlib": "#2ca02c",
          "chromadb": "#9467bd"}
# Each system its own marker too, so systems stay apart where colours are close or printed grey.
MARKERS = {"vectordb": "o", "vectordb-sq8": "v", "vectordb-ivf": "s", "vectordb-ivf-sq8": "D",
           "vectordb-ivf-pq4": "P", "numpy": "x", "faiss-flat": "^", "faiss-ivf": "<", "faiss-ivf-sq8": ">",
           "faiss-ivf-pqfs": "p", "faiss-ivf-rabitq": "h", "faiss-hnsw": "*", "hnswlib": "X", "chromadb": "d"}

COLUMNS = (
    # key, header, format
    ("params", "search", None),
    ("build_s", "build s", ".2f"),
    ("train_s", "train s", ".2f"),
    ("add_per_s", "adds/s", ",.0f"),
    ("add1k_ms", "+1k add ms", ".1f"),
    ("p50_us", "p50 us", ".0f"),
    ("p95_us", "p95 us", ".0f"),
    ("p99_us", "p99 us", ".0f"),
    ("batch_qps", "batch QPS", ",.0f"),
    ("recall", "recall@10", ".4f"),
    ("rss_mb", "RSS +MB", ".0f"),
    ("disk_mb", "disk MB", ".1f"),
)
BUILD_KEYS = {"build_s", "train_s", "add_per_s", "add1k_ms", "rss_mb", "disk_mb"}

LEGEND = """\
- build s: train + add of the whole base in batches of 1,000 (vectordb: durable adds through
  `PersistentClient`; vectordb-ivf adds inside `with col.batch():`, and *train s* is the batch exit:
  k-means plus filling the lists). adds/s = base size / the add part of the build.
- +1k add ms: median of 3 further adds of 1,000 vectors into the built (trained) index.
- p50/p95/p99 us: single queries one at a time through each system's Python API (k=10, distances
  returned). batch QPS: all held-out queries in one call, best of 2 passes. Interleaved runs
  (`--interleave ROUNDS`): all systems of a thread count built in one process, then timed in
  alternating rounds (each point a slice of the single queries, then one batch pass; order rotated
  each round); percentiles over the pooled single-query times, batch QPS from the median pass.
- faiss-ivf-sq8 / -pqfs / -rabitq: IVF over 8-bit scalar, 4-bit fast-scan PQ or RaBitQ codes,
  then exact re-ranking of k x k_factor candidates (IndexRefineFlat). vectordb-ivf's
  `n_probe=default(N)` row is what a user who sets no n_probe gets.
- recall@10: ann-benchmarks definition (returned ids whose true distance <= the true 10th + 1e-3),
  ground truth by exact float64 search.
- RSS +MB: growth of the process's VmRSS over the build (each system in a fresh process; in an
  interleaved run, over each system's build in the shared process, one after another).
  disk MB: the persistent directory (vectordb, chromadb) or the serialized index (write_index,
  save_index, np.save) for in-memory libraries.
- The machine is 2 vCPUs shared with other work: absolute numbers move from run to run, ratios
  within one run are what to compare. 2-thread rows suffer most when another process holds a core:
  OpenMP (faiss) and OpenBLAS (NumPy) threads wait at barriers for a descheduled partner, which
  shows up as large p50/p99 for their single queries.
"""


def _fmt(value: Any, spec: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if spec is None:
        return str(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _sort_key(row: dict) -> tuple:
    name = row.get("system", "")
    order = SYSTEM_ORDER.index(name) if name in SYSTEM_ORDER else len(SYSTEM_ORDER)
    return (order, name)


def heading(rows: list[dict], threads: int, cpu: str) -> str:
    """A thread count's table heading: threads, CPU and the load average range while it ran."""
    sel = [r for r in rows if r.get("threads") == threads]
    lows = [r["load_min"] for r in sel if r.get("load_min") is not None]
    highs = [r["load_max"] for r in sel if r.get("load_max") is not None]
    rounds = max((r.get("interleave_rounds") or 0 for r in sel), default=0)
    text = f"{threads} thread{'s' if threads > 1 else ''} -- {cpu}"
    if lows and highs:
        text += f", load average {min(lows):.2f}-{max(highs):.2f}"
    if rounds:
        text += f", systems interleaved in {rounds} rounds"
    return text


def table(rows: list[dict], threads: int) -> str:
    """Markdown table of one data set at one thread count."""
    head = "| system | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    sep = "|---|" + "|".join("---:" if f else "---" for _, _, f in COLUMNS) + "|"
    lines = [head, sep]
    selected = sorted((r for r in rows if r.get("threads") == threads), key=_sort_key)
    previous = None
    for r in selected:
        first = r.get("system") != previous
        previous = r.get("system")
        status = r.get("status", "ok")
        if status != "ok" and not status.startswith("partial"):
            lines.append(f"| {r.get('system')} | {status} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = []
        for key, _, spec in COLUMNS:
            if key == "params":
                cells.append(r.get("params") or "exact")
            elif key in BUILD_KEYS and not first:
                cells.append("")
            else:
                cells.append(_fmt(r.get(key), spec))
        name = r.get("system", "?") if first else ""
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if status.startswith("partial"):
            lines.append(f"| | {status} |" + " |" * (len(COLUMNS) - 1))
    return "\n".join(lines)


def best_at(rows: Iterable[dict], target: float) -> dict | None:
    """The row with the highest batch QPS among those with recall >= target."""
    ok = [r for r in rows if r.get("status", "ok") in ("ok",) or
          str(r.get("status", "")).startswith("partial")]
    ok = [r for r in ok if r.get("recall") is not None and r["recall"] >= target - 1e-12]
    return max(ok, key=lambda r: r.get("batch_qps") or 0.0, default=None)


def fastest_single_at(rows: Iterable[dict], target: float) -> dict | None:
    ok = [r for r in rows if r.get("recall") is not None and r["recall"] >= target - 1e-12
          and r.get("p50_us") is not None]
    return min(ok, key=lambda r: r["p50_us"], default=None)


def summary_table(rows: list[dict], targets=(0.9, 0.99)) -> str:
    """Per system and thread count: best batch QPS and best single-query p50 at each recall
    target, with the sweep value that reaches it."""
    head = ["system", "threads", "build s"]
    for t in targets:
        head += [f"batch QPS @{t:g} (search)", f"p50 us @{t:g}"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|---:|" * len(targets)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("system"), r.get("threads")), []).append(r)
    for (system, threads), grp in sorted(groups.items(), key=lambda kv: (_sort_key(kv[1][0]),
                                                                          kv[0][1] or 0)):
        status = grp[0].get("status", "ok")
        if status != "ok" and not status.startswith("partial"):
            lines.append(f"| {system} | {threads} | {status} |" + " |" * (2 * len(targets)))
            continue
        cells = [system, str(threads), _fmt(grp[0].get("build_s"), ".2f")]
        for t in targets:
            b = best_at(grp, t)
            s = fastest_single_at(grp, t)
            cells.append(f"{b['batch_qps']:,.0f} ({b.get('params') or 'exact'})" if b
                         else f"not reached (max {max((r.get('recall') or 0) for r in grp):.3f})")
            cells.append(f"{s['p50_us']:.0f}" if s else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> str | None:
    """recall@10 vs QPS (batch and one-at-a-time), log QPS; returns an error string or None."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        return f"matplotlib not installed ({exc}): pip install 'vectordb[bench]'"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharex=True)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("recall") is None or not r.get("batch_qps"):
            continue
        groups.setdefault((r["system"], r["threads"]), []).append(r)
    for (system, threads), grp in sorted(groups.items(), key=lambda kv: (_sort_key(kv[1][0]),
                                                                          kv[0][1])):
        grp = sorted(grp, key=lambda r: r["recall"])
        style = "-" if threads == 1 else "--"
        marker = MARKERS.get(system, ".")
        label = f"{system} ({threads} thr)"
        color = COLORS.get(system)
        x = [r["recall"] for r in grp]
        axes[0].plot(x, [r["batch_qps"] for r in grp], style, marker=marker, color=color,
                     label=label, markersize=4)
        axes[1].plot(x, [1e6 / r["p50_us"] for r in grp], style, marker=marker, color=color,
                     label=label, markersize=4)
    for ax, ylabel in ((axes[0], "batch queries per second"),
                       (axes[1], "single queries per second (1 / p50 latency)")):
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("batched")
    axes[1].set_title("one query at a time")
    axes[1].legend(fontsize=7, loc="best", ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def dataset_markdown(ds_info: dict, rows: list[dict], machine_md: str, command: str,
                     threads: list[int], plot_name: str | None, plot_error: str | None,
                     cpu: str = "") -> str:
    parts = [f"# vectordb benchmark: {ds_info['name']}", "",
             f"{ds_info['date']} -- `{command}`", "",
             "## Data", "",
             f"- {ds_info['description']}",
             f"- base {ds_info['n']:,} x {ds_info['d']} float32, {ds_info['nq']:,} held-out "
             f"queries, metric {ds_info['metric']}, k = 10; ground truth by exact float64 search",
             "", "## Machine", "", machine_md, ""]
    configs = {}
    for r in rows:
        if r.get("config") and r.get("system") not in configs:
            configs[r["system"]] = f"{r['config']}"
    versions = {r["system"]: r.get("version") for r in rows if r.get("version")}
    for r in rows:  # which BLAS kernel each system's process ran (training, batch products)
        if r.get("blas") and r.get("system") in configs and "BLAS" not in configs[r["system"]]:
            configs[r["system"]] += f"; BLAS: {r['blas']}"
    if configs or versions:
        parts += ["## Systems", ""]
        for s in sorted(set(configs) | set(versions), key=lambda n: _sort_key({"system": n})):
            parts.append(f"- {s} {versions.get(s, '')}: {configs.get(s, '')}".rstrip(": "))
        parts.append("")
    parts += ["## Summary (best batch QPS / lowest p50 reaching each recall@10)", "",
              summary_table(rows), ""]
    for t in threads:
        parts += [f"## {heading(rows, t, cpu)}", "", table(rows, t), ""]
    if plot_name:
        parts += [f"![recall@10 vs QPS]({plot_name})", ""]
    elif plot_error:
        parts += [f"(no plot: {plot_error})", ""]
    parts += ["## How to read it", "", LEGEND]
    return "\n".join(parts)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1, default=str))


def _pick(grp: list[dict], target: float, key: str) -> tuple[dict | None, bool]:
    """Row that reaches `target` recall best by `key` ('batch' or 'single'); else the row with
    the highest recall, flagged False."""
    ok = [r for r in grp if r.get("recall") is not None]
    if not ok:
        return None, False
    hit = best_at(ok, target) if key == "batch" else fastest_single_at(ok, target)
    if hit is not None:
        return hit, True
    return max(ok, key=lambda r: r["recall"]), False


def readme_table(results: list[dict], target: float = 0.9) -> str:
    """One compact table over several runs' JSON payloads (one per data set): per system, the
    fastest setting reaching recall@10 >= target (or its best recall, marked *), 1 and 2 threads.
    """
    lines = ["| data set | system | build s (1 thr) | p50 us (1 thr) | batch QPS 1 thr | "
             "batch QPS 2 thr | recall@10 | setting | RSS +MB | disk MB |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for payload in results:
        rows = payload["rows"]
        ds = payload["dataset"]["name"]
        names = sorted({r["system"] for r in rows}, key=lambda n: _sort_key({"system": n}))
        for name in names:
            g1 = [r for r in rows if r["system"] == name and r.get("threads") == 1]
            g2 = [r for r in rows if r["system"] == name and r.get("threads") == 2]
            b1, ok1 = _pick(g1, target, "batch")
            s1, _ = _pick(g1, target, "single")
            b2, _ = _pick(g2, target, "batch")
            if b1 is None:
                status = (g1 or g2 or [{}])[0].get("status", "no data")
                lines.append(f"| {ds} | {name} | {status} |" + " |" * 7)
                continue
            mark = "" if ok1 else "*"
            lines.append(
                f"| {ds} | {name} | {_fmt(b1.get('build_s'), '.2f')} | "
                f"{_fmt(s1.get('p50_us') if s1 else None, '.0f')} | "
                f"{_fmt(b1.get('batch_qps'), ',.0f')} | "
                f"{_fmt(b2.get('batch_qps') if b2 else None, ',.0f')} | "
                f"{b1['recall']:.3f}{mark} | {b1.get('params') or 'exact'} | "
                f"{_fmt(b1.get('rss_mb'), '.0f')} | {_fmt(b1.get('disk_mb'), '.1f')} |")
    return "\n".join(lines) + (f"\n\nSetting: the fastest batch setting reaching recall@10 >= "
                               f"{target:g}; * = never reached, best recall shown.")


if __name__ == "__main__":  # python -m benchmarks.report results/<date>-*.json -> README table
    import sys

    payloads = [json.loads(Path(p).read_text()) for p in sys.argv[1:]
                if not Path(p).name.split("-", 3)[-1].startswith("ivf")]
    print(readme_table(payloads))
