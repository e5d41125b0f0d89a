"""The default embedding function (all-MiniLM-L6-v2 in NumPy): documents/s by call size, and the latency of
embedding one query, beside onnxruntime on an ONNX copy of the model when one is available.

    python benchmarks/bench_embed.py                       # texts: docstring paragraphs of the standard library
    python benchmarks/bench_embed.py --texts FILE.jsonl.gz # or your own ("text" field per line, or plain lines)
    python benchmarks/bench_embed.py --texts F --reference F.npy   # also: max |difference| to reference vectors
    python benchmarks/bench_embed.py --quick

VECTORDB_BENCH_TEXTS may name the texts file instead of --texts. --onnx DIR adds onnxruntime on the
model.onnx + tokenizer.json in DIR (chromadb's copy is used when present), and chromadb's own
DefaultEmbeddingFunction runs on its downloaded copy or on DIR. The NumPy pass runs twice: on one BLAS
thread (vectordb's default) and on one per core (OpenBLAS's default). Times are wall clock; the
documents are embedded in calls of --batch-sizes texts each.
"""
from __future__ import annotations

import argparse
import gzip
import importlib
import json
import os
import pkgutil
import re
import statistics
import sys
import time
from typing import Any, Optional

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine  # noqa: E402
from vectordb.utils.embedding_functions import minilm  # noqa: E402

QUERIES = ["how do I parse a date string with a time zone", "read a CSV file into a list of dicts",
           "what does the garbage collector do", "open a TCP socket and send bytes"]


def stdlib_paragraphs(limit: int) -> list[str]:
    """Docstring paragraphs (40-600 characters) of the standard library: English text on any machine."""
    out: list[str] = []
    seen = set()
    names = sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith("_"))
    for name in names:
        if name in ("antigravity", "this", "idlelib", "turtledemo", "tkinter", "test"):
            continue
        try:
            mod = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional or platform modules
            continue
        objs = [mod] + [getattr(mod, a, None) for a in sorted(dir(mod)) if not a.startswith("_")]
        for obj in objs:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str):
                continue
            for para in re.split(r"\n\s*\n", doc):
                text = " ".join(para.split())
                if 40 <= len(text) <= 600 and ">>>" not in text and text not in seen:
                    seen.add(text)
                    out.append(text)
                    if len(out) >= limit:
                        return out
    return out


def read_texts(path: str, limit: int) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if len(out) >= limit:
                break
            line = line.rstrip("\n")
            if not line:
                continue
            out.append(json.loads(line)["text"] if line.startswith("{") else line)
    return out


def docs_per_second(model: Any, texts: list[str], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        model.embed(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - t0)


def query_latency_ms(model: Any, repeats: int) -> tuple[float, float]:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        model.embed([QUERIES[i % len(QUERIES)]])
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


class _ChromaDefault:
    """chromadb's DefaultEmbeddingFunction (its tokenizer settings: every text padded to 256 tokens; its
    onnxruntime session), behind the `embed` the measurements call."""

    def __init__(self, ef: Any) -> None:
        self.ef = ef

    def embed(self, texts: list[str]) -> Any:
        return self.ef(texts)


def chroma_default(onnx_dir: Optional[str]) -> tuple[str, Optional[Any], str]:
    """chromadb's default embedding function on its own downloaded copy, else on `onnx_dir` (its files
    linked into a temporary copy of chromadb's cache layout)."""
    name = "chromadb DefaultEmbeddingFunction"
    try:
        from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2
    except ImportError:
        return name, None, "not available: chromadb is not installed"
    if not minilm.chroma_model_dir().is_dir():
        if not onnx_dir:
            return name, None, "not available: chromadb's model is not downloaded, and no --onnx copy was given"
        import tempfile

        root = tempfile.mkdtemp(prefix="chroma-onnx-")
        os.makedirs(os.path.join(root, "onnx"))
        for f in ("model.onnx", "tokenizer.json"):
            os.symlink(os.path.abspath(os.path.join(onnx_dir, f)), os.path.join(root, "onnx", f))
        for f in ("config.json", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"):
            open(os.path.join(root, "onnx", f), "w").close()  # checked for, not read
        ONNXMiniLM_L6_V2.DOWNLOAD_PATH = root  # type: ignore[assignment]
        note = f"its code on {onnx_dir} (its own copy is not downloaded here)"
    else:
        note = f"its own copy in {minilm.chroma_model_dir()}"
    try:
        ef = ONNXMiniLM_L6_V2(preferred_providers=["CPUExecutionProvider"])
        ef(["warm up"])
    except Exception as exc:  # noqa: BLE001
        return name, None, f"not available: {exc}"
    return name, _ChromaDefault(ef), note


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", default=os.environ.get("VECTORDB_BENCH_TEXTS"))
    p.add_argument("--n", type=int, default=1000, help="number of texts")
    p.add_argument("--batch-sizes", default="1,8,32,128,512")
    p.add_argument("--reference", help=".npy of reference embeddings, one row per text in --texts order")
    p.add_argument("--onnx", help="a directory with model.onnx and tokenizer.json, for onnxruntime")
    p.add_argument("--queries", type=int, default=50, help="single-query repetitions")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n = 40 if args.quick else args.n
    texts = read_texts(args.texts, n) if args.texts else stdlib_paragraphs(n)
    batches = [8] if args.quick else [int(b) for b in args.batch_sizes.split(",")]

    runtimes: list[tuple[str, Optional[Any], str]] = []
    t0 = time.perf_counter()
    model = minilm.MiniLM.load(runtime="numpy")
    runtimes.append(("numpy (default: 1 BLAS thread)", model,
                     f"{model.files.origin}, loaded in {time.perf_counter() - t0:.2f} s"))
    spinning = minilm.MiniLM(model._tokenizer, model._encoder, model.files)
    spinning._threads = os.cpu_count() or 1
    runtimes.append((f"numpy, {spinning._threads} BLAS threads", spinning, "OpenBLAS's own default (one per core)"))
    onnx_dir = args.onnx or (str(minilm.chroma_model_dir()) if minilm.chroma_model_dir().is_dir() else None)
    if onnx_dir:
        try:
            runtimes.append(("onnxruntime", minilm.MiniLM.load(onnx_dir, runtime="onnx"), onnx_dir))
        except Exception as exc:  # noqa: BLE001
            runtimes.append(("onnxruntime", None, f"not available: {exc}"))
    else:
        runtimes.append(("onnxruntime", None, "not available: no ONNX copy of the model on this machine"))
    runtimes.append(chroma_default(onnx_dir))

    tokens = [len(e.ids) for e in model._tokenizer.encode_batch(texts)]
    print("# Embedding: all-MiniLM-L6-v2\n")
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"`python benchmarks/bench_embed.py{' ' + shown if shown else ''}`\n")
    print(machine.machine_markdown(machine.machine_summary()))
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    source = "from " + os.path.basename(args.texts) if args.texts else "standard-library docstrings"
    print(f"{len(texts)} texts ({source}), "
          f"tokens per text: mean {np.mean(tokens):.0f}, max {max(tokens)}\n")
    for name, _, note in runtimes:
        print(f"- {name}: {note}")
    print()
    print("| runtime | " + " | ".join(f"docs/s, calls of {b}" for b in batches) + " | one query: median ms | p95 ms |")
    print("|---|" + "---:|" * (len(batches) + 2))
    for name, m, _ in runtimes:
        if m is None:
            continue
        m.embed(texts[:8])  # warm up
        rates = [f"{r:.1f}" if r < 10 else f"{r:.0f}" for r in (docs_per_second(m, texts, b) for b in batches)]
        med, p95 = query_latency_ms(m, 10 if args.quick else args.queries)
        print(f"| {name} | " + " | ".join(rates) + f" | {med:.1f} | {p95:.1f} |")
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.reference:
        ref = np.load(args.reference, mmap_mode="r")[:len(texts)]
        got = model.embed(texts)
        print(f"\nnumpy runtime vs {os.path.basename(args.reference)} ({len(texts)} texts): max |difference| "
              f"{np.abs(got - ref).max():.2e}, min cosine {(got * ref).sum(1).min():.7f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
