"""python -m benchmarks [--quick] -- vectordb against numpy, faiss, hnswlib and chromadb.

    python -m benchmarks --quick                       # < 5 minutes on 2 cores
    python -m benchmarks                               # full run, < 30 minutes on 2 cores
    python -m benchmarks --datasets blobs:50k:384 --systems vectordb,faiss-flat --threads 1
    python -m benchmarks --data-dir DIR --datasets minilm --quick --threads 1   # real embeddings
    python -m benchmarks ... --interleave 10   # systems timed in alternating rounds, same load

External embedding sets (minilm: DIR/minilm/) come from --data-dir DIR or $VECTORDB_BENCH_DATA;
a full run without --datasets includes them when present, and a set asked for but absent is
skipped with a message saying why.

Prints the tables and writes benchmarks/results/<date>-<dataset>.md, .png (recall@10 vs QPS) and
.json (every measured number) for each data set.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from . import datasets, machine, report, runner, systems

RESULTS = Path(__file__).resolve().parent / "results"

QUICK_DATASETS = "blobs:20k:128,sphere:20k:128"
FULL_DATASETS = "blobs:100k:128,lowdim:100k:128,sphere:100k:128"


def parse_count(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if mult > 1 else text) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 20000, 20k or 1M, got {text!r}") from None


def parse_datasets(text: str, nq: int, n_extra: int, data_root: Path | None = None,
                   log=print) -> list[datasets.DatasetSpec]:
    """'blobs:100k:128,sphere:20k:384:cosine' -> specs (kind:n:d[:metric]); 'file:PATH' and
    'minilm' (or 'minilm:N', the first N base vectors) too. An absent minilm set is left out with
    a message."""
    specs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if parts[0] == "minilm":
            why = datasets.minilm_missing(data_root)
            if why:
                log(f"! skipping data set minilm: {why}")
                continue
            assert data_root is not None
            n = parse_count(parts[1]) if len(parts) > 1 else 0
            specs.append(datasets.DatasetSpec("minilm", n=n, nq=nq, n_extra=n_extra,
                                              path=str(data_root / "minilm")))
            continue
        if parts[0] == "file":
            specs.append(datasets.DatasetSpec("file", nq=nq, n_extra=n_extra,
                                              path=":".join(parts[1:])))
            continue
        if len(parts) not in (3, 4):
            raise argparse.ArgumentTypeError(
                f"data set {item!r}: expected kind:n:d or kind:n:d:metric, e.g. blobs:100k:128")
        metric = parts[3] if len(parts) == 4 else ""
        specs.append(datasets.DatasetSpec(parts[0], n=parse_count(parts[1]), d=int(parts[2]),
                                          nq=nq, n_extra=n_extra, metric=metric))
    return specs


_PATH_FLAGS = {"--data-dir": "DIR", "--out": "OUT"}


def public_command(argv: list[str]) -> str:
    """The command line as written into the results: directory flags become placeholders and a
    file:PATH set its file name, so no machine's paths end up in the repository."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        flag, eq, _ = a.partition("=")
        if flag in _PATH_FLAGS:
            out.append(f"{flag}={_PATH_FLAGS[flag]}" if eq else flag)
            if not eq:
                out.extend([_PATH_FLAGS[flag]] if next(it, None) is not None else [])
            continue
        if "file:" in a:
            a = ",".join(f"file:{Path(x[5:]).name}" if x.startswith("file:") else x for x in a.split(","))
        out.append(a)
    return " ".join(["python -m benchmarks"] + out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"small data sets and budgets ({QUICK_DATASETS}); a few minutes")
    p.add_argument("--datasets", help=f"comma-separated kind:n:d[:metric] (kinds: blobs, lowdim, "
                   f"sphere; file:PATH.npy; minilm). Default full: {FULL_DATASETS} and the sets "
                   f"in the data directory")
    p.add_argument("--data-dir", help=f"directory of external embedding sets (minilm/, *.npy); "
                   f"default ${datasets.DATA_ENV}")
    p.add_argument("--no-external", action="store_true",
                   help="a full run without --datasets leaves out the data directory's sets")
    p.add_argument("--systems", default=",".join(systems.ALL_SYSTEMS),
                   help="comma-separated subset of: " + ", ".join(systems.ALL_SYSTEMS))
    p.add_argument("--threads", default="1,2", help="thread counts, measured separately")
    p.add_argument("--nq", type=int, help="held-out queries (batch QPS and recall); "
                   "default 1000, quick 500")
    p.add_argument("--n-single", type=int, help="single queries timed per point (p50/p99); "
                   "default 500, quick 300")
    p.add_argument("--n-clusters", type=int, help="IVF lists for vectordb-ivf and faiss-ivf "
                   "(default round(sqrt(n)))")
    p.add_argument("--n-probe", help="comma-separated n_probe sweep (default "
                   + ",".join(map(str, systems.N_PROBE_SWEEP)) + ")")
    p.add_argument("--ef", help="comma-separated hnswlib ef sweep (default "
                   + ",".join(map(str, systems.EF_SWEEP)) + ")")
    p.add_argument("--out", type=Path, help="where results go (default benchmarks/results; "
                   "--quick: benchmarks/results/quick, scratch that is not committed)")
    p.add_argument("--in-process", action="store_true",
                   help="run every system in this process instead of one fresh process each")
    p.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                   help="build all systems of a thread count in one process, then time their "
                   "single queries and batch passes in ROUNDS alternating rounds (each round: "
                   "every system and sweep point runs a slice of the single queries, then one "
                   "batch pass; order rotated), so load drift on a shared machine hits all alike")
    return p


def run(args: argparse.Namespace) -> list[Path]:
    """Run the benchmark described by parsed arguments; returns the Markdown files written."""
    quick = args.quick
    nq = args.nq or (500 if quick else 1000)
    n_single = args.n_single or (300 if quick else 500)
    # sized so the full run stays under 30 minutes on 2 busy cores (chromadb's build is ~1/3)
    budget = runner.Budget(n_single=n_single,
                           single_seconds=2.0 if quick else 4.0,
                           batch_repeats=2,
                           batch_seconds=3.0 if quick else 5.0)
    root = datasets.data_root(args.data_dir)
    specs = parse_datasets(args.datasets or (QUICK_DATASETS if quick else FULL_DATASETS),
                           nq=nq, n_extra=1000, data_root=root)
    if not args.no_external and not quick and not args.datasets:
        specs += datasets.external_specs(root, nq=nq)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    for name in names:
        if name not in systems.SYSTEMS:
            raise SystemExit(f"unknown system {name!r}; expected some of "
                             f"{', '.join(systems.ALL_SYSTEMS)}")
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    options: dict = {}
    if args.n_clusters:
        options["n_clusters"] = args.n_clusters
    if args.n_probe:
        options["n_probe_sweep"] = [int(v) for v in args.n_probe.split(",")]
    if args.ef:
        options["ef_sweep"] = [int(v) for v in args.ef.split(",")]

    m = machine.machine_summary()
    machine_md = machine.machine_markdown(m)
    print("# vectordb benchmarks" + (" (quick)" if quick else ""))
    print(machine_md)
    missing = [f"{label}: {ver}" for label, ver in m["versions"].items()
               if str(ver).startswith("not")]
    for line in missing:
        print(f"! {line} -- its rows will say 'not available' ({systems.BENCH_EXTRA})")
    print(flush=True)

    out_dir = Path(args.out) if args.out else (RESULTS / "quick" if quick else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    command = public_command(getattr(args, "_argv", []))
    m["argv"] = command  # the script's own path would name this checkout
    written: list[Path] = []
    t_start = time.perf_counter()
    for spec in specs:
        ds = datasets.load(spec)
        print(f"## {ds.name}: {ds.description}; base {ds.base.shape[0]:,} x {ds.base.shape[1]}, "
              f"{ds.queries.shape[0]} queries, metric {ds.metric}", flush=True)
        tasks = [runner.Task(dataset_dir=str(ds.directory), system=name, threads=t,
                             budget=budget, options=options)
                 for t in threads for name in names]
        rows = runner.run_tasks(tasks, in_process=args.in_process,
                                log=lambda s: print(s, flush=True), interleave=args.interleave)
        stem = f"{date}-{ds.name}"
        png = out_dir / f"{stem}.png"
        title = (f"{ds.name} ({ds.base.shape[0]:,} x {ds.base.shape[1]}, {ds.metric}), k=10 -- "
                 f"{m['cpu']['model']}, {m['cpu']['cores']} cores")
        plot_error = report.plot(rows, png, title)
        ds_info = {"name": ds.name, "description": ds.description, "n": ds.base.shape[0],
                   "d": ds.base.shape[1], "nq": ds.queries.shape[0], "metric": ds.metric,
                   "date": date}
        cpu = f"{m['cpu']['model']}, {m['cpu']['cores']} cores"
        md = report.dataset_markdown(ds_info, rows, machine_md, command, threads,
                                     png.name if plot_error is None else None, plot_error, cpu)
        md_path = out_dir / f"{stem}.md"
        md_path.write_text(md)
        report.write_json(out_dir / f"{stem}.json",
                          {"dataset": ds_info, "machine": m, "command": command, "rows": rows,
                           "budget": budget.__dict__, "options": options,
                           "interleave": args.interleave})
        written.append(md_path)
        print()
        print(f"### {ds.name}: summary")
        print(report.summary_table(rows))
        for t in threads:
            print(f"\n### {ds.name}: {report.heading(rows, t, cpu)}")
            print(report.table(rows, t))
        print(f"\nwrote {md_path}" + (f" and {png.name}" if plot_error is None else
                                       f" (no plot: {plot_error})"), flush=True)
        print()
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
