"""vectordb benchmarks: vectordb against the systems users would pick instead.

    python -m benchmarks --quick      # a few minutes on 2 cores
    python -m benchmarks              # the full run (under 30 minutes on 2 cores)
    python benchmarks/bench_core.py   # exact query latency and durable add, 10k x 128
    python benchmarks/bench_ivf.py    # IVF against faiss IndexIVFFlat, 10k/100k/1M x 128

Results (Markdown table, JSON, PNG plot of recall@10 vs QPS) go to benchmarks/results/.
Data sets and their exact ground truth are cached in benchmarks/.cache (or $VECTORDB_BENCH_CACHE).
"""
