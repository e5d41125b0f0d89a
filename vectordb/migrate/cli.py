"""`vectordb migrate` (and migrate/migrate_from_chromadb.py): arguments, the run over all collections,
the summary table and exit status.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import List, Optional, Sequence

import vectordb
from vectordb.migrate.plan import MigrationState, Result, make_plan
from vectordb.migrate.source import (
    INSTALL_HINT,
    ChromadbMissing,
    InlineReader,
    ReaderDied,
    ReaderProcess,
    SourceError,
    UsageError,
)
from vectordb.migrate.transfer import migrate_collection

EXIT_OK, EXIT_DIFFERENCES, EXIT_USAGE = 0, 1, 2



def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _fmt_recall(r: Result) -> str:
    if r.chroma_recall is None:
        return "-"
    v = f"{r.vectordb_recall:.3f}" + (" exact" if r.exact_checked else f" ({r.index or 'ivf'})")
    return f"{r.chroma_recall:.3f} / {v}"


def print_summary(results: List[Result]) -> None:
    rows = [[r.name, r.action, r.space, str(r.records), str(r.copied), r.status, _fmt_recall(r),
             f"{r.seconds:.1f}s"] for r in results]
    print()
    print(format_table(["collection", "action", "space", "records", "copied", "verified",
                        "recall@k chromadb / vectordb", "time"], rows))
    for r in results:
        for w in r.warnings:
            print(f"warning: {r.name}: {w}")
        for d in r.differences:
            print(f"DIFFERENCE: {r.name}: {d}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vectordb migrate",
        description="Copy ChromaDB collections (ids, embeddings, metadata, documents, collection "
                    "metadata, distance space) into a vectordb database and verify the copy.",
        epilog="After an interruption, run the same command again: it finishes without duplicates. "
               "Exit status: 0 copied and verified, 1 differences found, 2 nothing done.",
    )
    p.add_argument("--chromadb-path", required=True, metavar="DIR",
                   help="directory given to chromadb.PersistentClient (holds chroma.sqlite3)")
    p.add_argument("--collections", nargs="+", metavar="NAME", help="collections to copy (default: all)")
    p.add_argument("--vectordb-path", metavar="DIR",
                   help="vectordb database directory (default: $VECTORDB_PATH or ./vector_db)")
    p.add_argument("--use-ivf", action="store_true", help="create the new collections with an IVF index")
    p.add_argument("--n-clusters", type=int, metavar="N",
                   help="IVF clusters (default: chosen by vectordb from the size)")
    p.add_argument("--n-probe", type=int, metavar="N",
                   help="IVF lists searched per query, stored with the collection (default: vectordb's)")
    p.add_argument("--batch-size", type=int, default=20000, metavar="N",
                   help="records per vectordb write (default 20000)")
    p.add_argument("--page-size", type=int, default=5000, metavar="N", help="records per chromadb read (default 5000)")
    p.add_argument("--on-existing", choices=["error", "skip", "overwrite", "append"], default="error",
                   help="what to do with a collection that already exists in vectordb (default error). "
                        "Whatever this says, a copy interrupted earlier is resumed (unless overwrite) and "
                        "a collection an earlier run finished is left alone (unless overwrite or append)")
    p.add_argument("--uris-key", metavar="KEY",
                   help="keep chromadb uris in this metadata key instead of as uris (the default copies "
                        "them as uris, returned with include=['uris'])")
    p.add_argument("--dry-run", action="store_true", help="report what would be copied, write nothing")
    p.add_argument("--in-place", action="store_true",
                   help="read the chromadb directory itself instead of a temporary copy "
                        "(chromadb may upgrade its files when it opens them)")
    p.add_argument("--verify-sample", type=int, default=1000, metavar="N",
                   help="records compared exactly per collection (default 1000)")
    p.add_argument("--verify-queries", type=int, default=20, metavar="N",
                   help="queries compared per collection (default 20)")
    p.add_argument("--verify-k", type=int, default=10, metavar="K",
                   help="n_results of the verification queries (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the verification sample")
    p.add_argument("--no-subprocess", action="store_true", help="read chromadb in this process")
    p.add_argument("--report", metavar="FILE", help="also write the summary as JSON to FILE")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.page_size < 1:
        p.error("--batch-size and --page-size must be at least 1")
    for opt in ("n_clusters", "n_probe"):
        v = getattr(args, opt)
        if v is not None and (v < 1 or not args.use_ivf):
            p.error(f"--{opt.replace('_', '-')} needs --use-ivf and a value of at least 1")
    if args.verify_sample < 0 or args.verify_queries < 0 or args.verify_k < 1:
        p.error("--verify-sample and --verify-queries must be >= 0, --verify-k >= 1")
    return args


TMP_PREFIX = "vectordb-migrate-"


def _remove_stale_copies() -> None:
    """Delete temporary copies left by runs that were killed (their owner process is gone)."""
    base = tempfile.gettempdir()
    for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if not entry.startswith(TMP_PREFIX):
            continue
        try:
            with open(os.path.join(path, "owner.pid")) as fh:
                pid = int(fh.read().strip())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge (no pid file yet, or no permission)


def run(args: argparse.Namespace) -> int:
    src_path = os.path.abspath(args.chromadb_path)
    if not os.path.isfile(os.path.join(src_path, "chroma.sqlite3")):
        raise UsageError(f"{args.chromadb_path!r} is not a chromadb database: expected a directory holding "
                         "chroma.sqlite3 (the path given to chromadb.PersistentClient)")
    dst_path = os.path.abspath(args.vectordb_path or os.environ.get("VECTORDB_PATH") or "vector_db")
    if os.path.realpath(dst_path) == os.path.realpath(src_path):
        raise UsageError("--vectordb-path must differ from --chromadb-path")

    tmp = None
    reader = None
    client = None
    try:
        read_path = src_path
        if not args.in_place:
            _remove_stale_copies()
            tmp = tempfile.mkdtemp(prefix=TMP_PREFIX)
            with open(os.path.join(tmp, "owner.pid"), "w") as fh:
                fh.write(str(os.getpid()))
            read_path = os.path.join(tmp, "chroma")
            print(f"reading from a temporary copy {read_path} (chromadb upgrades files it opens; "
                  "--in-place reads the original)", file=sys.stderr)
            shutil.copytree(src_path, read_path)
        reader = InlineReader(read_path) if args.no_subprocess else ReaderProcess(read_path)
        sources = reader.call("list")
        by_name = {s["name"]: s for s in sources}
        if args.collections:
            unknown = [n for n in args.collections if n not in by_name]
            if unknown:
                raise UsageError(f"no chromadb collection named {', '.join(map(repr, unknown))}; "
                                 f"the database holds: {', '.join(sorted(by_name)) or '(none)'}")
            selected = [by_name[n] for n in dict.fromkeys(args.collections)]
        else:
            selected = sources

        if not (args.dry_run and not os.path.exists(dst_path)):
            client = vectordb.PersistentClient(path=dst_path)
        state = MigrationState(dst_path)
        plans = [make_plan(client, s, args.on_existing, state) for s in selected]
        print(f"chromadb {reader.version} at {src_path}: {len(sources)} collections; "
              f"vectordb at {dst_path}", file=sys.stderr)
        rows = [[p.src["name"], str(p.src["count"]), str(p.src.get("dimension") or "-"), p.src["space"],
                 p.action, p.reason] for p in plans]
        print(format_table(["collection", "records", "dim", "space", "action", "note"], rows), file=sys.stderr)
        conflicts = [p for p in plans if p.action == "conflict"]
        if conflicts:
            for p in conflicts:
                print(f"error: collection {p.src['name']!r}: {p.reason}", file=sys.stderr)
            print("nothing was written", file=sys.stderr)
            return EXIT_USAGE
        if args.dry_run:
            todo = [p for p in plans if p.action not in ("skip", "done")]
            n = sum(p.src["count"] for p in todo)
            print(f"dry run: would copy {n} records in {len(todo)} collections; "
                  "nothing was written")
            return EXIT_OK

        results: List[Result] = []
        written = 0
        for i, plan in enumerate(plans):
            try:
                r = migrate_collection(reader, client, plan, args, written, state, src_path)
            except ReaderDied as e:
                r = Result(plan.src["name"], plan.action, plan.src["space"], plan.src["count"], status="ERROR")
                r.differences.append(str(e))
                results.append(r)
                for rest in plans[i + 1:]:
                    results.append(Result(rest.src["name"], rest.action, rest.src["space"], rest.src["count"],
                                          status="not run"))
                    results[-1].differences.append("not run: the chromadb reader died earlier")
                break
            except Exception as e:  # noqa: BLE001 - report and go on with the other collections
                r = Result(plan.src["name"], plan.action, plan.src["space"], plan.src["count"], status="ERROR")
                r.differences.append(f"{type(e).__name__}: {e}")
            written += r.copied
            results.append(r)
        print_summary(results)
        if args.report:
            with open(args.report, "w", encoding="utf-8") as fh:
                json.dump([r.__dict__ for r in results], fh, indent=2)
        return EXIT_OK if all(r.ok() for r in results) else EXIT_DIFFERENCES
    finally:
        if reader is not None:
            reader.close()
        if client is not None and hasattr(client, "close"):
            client.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except ChromadbMissing as e:
        print(f"error: chromadb is not installed or cannot be imported ({e}).\n"
              f"The migration reads chromadb databases through the chromadb package; install it with:\n"
              f"    {INSTALL_HINT}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ReaderDied as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SourceError as e:
        print(f"error: chromadb could not read {args.chromadb_path!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to finish; completed collections are kept and "
              "the interrupted one resumes", file=sys.stderr)
        return 130
