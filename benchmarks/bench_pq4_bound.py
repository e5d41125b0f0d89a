"""Why an IVF pq4 search re-ranks the rows it does, on the MiniLM set (cosine, dev queries, exact
ground truth), and what a tighter bound on the code's error could save.

1. The engine (vectordb._core's IVF index with pq4 codes, m = d / 4, one query at a time): recall@10
   and the float32 rows re-ranked a query, per n_probe.
2. The code's error on a k-means partition like the engine's (same k-means, same pq4 training):
   e = r - r^ is a vector's residual error, s = <x, e> its bias term (for unit x near q, <q, e> is
   about <q, x> s: x^ = x - e is shorter than x). The search bounds <q, e> <= eps |q| |e|; the table
   gives that ratio <q, e> / (|q| |e|) over the true neighbours (the pairs a search must get right)
   and over random pairs, with and without the bias term a^ s removed (a^ = <q, c + r^>, what the
   code estimates of <q, x>); how well |e| alone predicts s; how much a per-query error scale
   sqrt(q' S q) (S: the errors' covariance of direction) varies between queries.
3. A simulation of the final re-rank at one n_probe (candidates in ascending lower bound until the
   next cannot beat the k-th exact distance; no seeding, no table rounding) for two margins:
   eps |e| (today's form), the same scaled by the query's error scale over its mean, and
   a^ s + eps |e| (with s stored per row) or with s predicted from |e| (three numbers an index),
   over a sweep of eps: compare rows re-ranked at equal recall.

    python -m benchmarks.bench_pq4_bound --data-dir DIR              # DIR/minilm/ holds the set
    python -m benchmarks.bench_pq4_bound --n-probe 32,40,64 --sim-n-probe 40 --queries 500
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from benchmarks.datasets import data_root, minilm_missing
from benchmarks.machine import machine_summary
from vectordb import _core

K = 10
SEED = 7


def engine_table(base, queries, gt, n_lists, n_probes):
    d = base.shape[1]
    h = _core.ivf_new(d, "cosine", n_lists)
    t = time.perf_counter()
    _core.ivf_train(h, base, SEED)
    _core.ivf_add(h, np.arange(base.shape[0], dtype=np.int64), base)
    _core.ivf_set_pq4(h, d // 4, SEED)
    print(f"engine: {n_lists} lists, pq4 m={d // 4}, built in {time.perf_counter() - t:.1f} s\n")
    print("| n_probe | recall@10 | rows re-ranked / query (mean) | (median) | p50 us |")
    print("|---:|---:|---:|---:|---:|")
    for npb in n_probes:
        hits, rows, lat = 0, [], []
        for i in range(queries.shape[0]):
            t = time.perf_counter()
            _, ids = _core.ivf_search(h, queries[i:i + 1], K, npb)
            lat.append(time.perf_counter() - t)
            rows.append(_core.ivf_info(h)["last_reranked"])
            hits += len(set(ids[0].tolist()) & set(gt[i].tolist()))
        print(f"| {npb} | {hits / (K * queries.shape[0]):.4f} | {np.mean(rows):.1f} | "
              f"{np.median(rows):.0f} | {np.median(lat) * 1e6:.0f} |")


def decode(cent, codes, d, m):
    """x^ of pq4 codes (n x m, one index a byte) from vdb_pq4's transposed centroid layout."""
    off = [0]
    for j in range(m):
        off.append(off[-1] + d // m + (1 if j < d % m else 0))
    out = np.empty((codes.shape[0], d), np.float32)
    for j in range(m):
        w = off[j + 1] - off[j]
        block = cent[16 * off[j]: 16 * off[j + 1]].reshape(w, 16)  # dimension t of centroid c
        out[:, off[j]:off[j + 1]] = block[:, codes[:, j]].T
    return out


def quantiles(x):
    return (f"{x.mean():+.3f} | {x.std():.3f} | {np.quantile(x, 0.97):+.3f} | "
            f"{np.quantile(x, 0.999):+.3f} | {np.quantile(np.abs(x), 0.999):.3f}")


def error_model(base, queries, gt, n_lists, sim_np, eps_today, eps_bias):
    n, d = base.shape
    m = d // 4
    cent_l, _ = _core.kmeans_train("cosine", base, n_lists, SEED)
    cent_l = np.asarray(cent_l, np.float32).reshape(n_lists, d)
    lab = np.empty(n, np.int64)
    for s in range(0, n, 16384):
        lab[s:s + 16384] = np.argmax(base[s:s + 16384] @ cent_l.T, axis=1)
    res = base - cent_l[lab]
    sample = np.random.default_rng(SEED).choice(n, min(n, 16384), replace=False)
    cent, _, _ = _core.pq4_train(np.ascontiguousarray(res[sample]), m, SEED)
    cent = np.asarray(cent)
    codes, err = _core.pq4_encode(cent, m, np.ascontiguousarray(res))
    rh = decode(cent, np.asarray(codes).reshape(n, m), d, m)
    e = res - rh
    err = np.asarray(err, np.float64)
    s = np.einsum("ij,ij->i", base, e)
    xh = cent_l[lab] + rh  # what the code holds of x

    qn = np.linalg.norm(queries, axis=1)
    rows = gt.reshape(-1)
    qi = np.repeat(np.arange(queries.shape[0]), gt.shape[1])
    rand = np.random.default_rng(SEED + 1).integers(0, n, rows.shape[0])

    def ratios(r):
        qe = np.einsum("ij,ij->i", queries[qi], e[r])
        a = np.einsum("ij,ij->i", queries[qi], xh[r]) / qn[qi]
        return qe / (qn[qi] * err[r]), (qe - a * qn[qi] * s[r]) / (qn[qi] * err[r])

    near, near_b = ratios(rows)
    far, far_b = ratios(rand)
    print(f"\ncode error: |e| mean {err.mean():.3f}; s = <x, e>: mean {s.mean():+.3f} std {s.std():.3f}")
    print("\n| ratio <q, e> / (|q| |e|) | mean | std | q0.97 | q0.999 | q0.999 of abs |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| true top-10 pairs | {quantiles(near)} |")
    print(f"| true top-10 pairs, a^ s removed | {quantiles(near_b)} |")
    print(f"| random pairs | {quantiles(far)} |")
    print(f"| random pairs, a^ s removed | {quantiles(far_b)} |")
    fit = np.stack([err, err * err, np.ones_like(err)], 1)
    coef = np.linalg.lstsq(fit, s, rcond=None)[0]
    r2 = 1 - np.var(s - fit @ coef) / np.var(s)
    print(f"\ns predicted from |e| alone (a |e| + b |e|^2 + c): R^2 {r2:.2f}")
    en = e / np.maximum(err, 1e-12)[:, None]
    cov = en[sample].T @ en[sample] / sample.shape[0]
    sig = np.sqrt(np.einsum("ij,jk,ik->i", queries, cov, queries)) / qn
    print(f"per-query error scale sqrt(q' S q) / |q|: mean {sig.mean():.4f}, min {sig.min():.4f}, "
          f"max {sig.max():.4f} (isotropic: {1 / math.sqrt(d):.4f})")

    # the final re-rank, simulated at sim_np probed lists
    members = [np.flatnonzero(lab == li) for li in range(n_lists)]
    cases = []
    for i in range(queries.shape[0]):
        q = queries[i] / qn[i]
        cs = cent_l @ q
        idx = np.concatenate([members[li] for li in np.argsort(-cs)[:sim_np]])
        a = cs[lab[idx]] + rh[idx] @ q
        cases.append((idx, 1 - a, 1 - base[idx] @ q, a, sig[i] / sig.mean()))

    def simulate(margin):
        hits, rr = 0, []
        for i, (idx, est, true, a, scale) in enumerate(cases):
            lb = est - margin(idx, a, scale)
            o = np.argsort(lb)
            lbs, ts = lb[o], true[o]
            lo, hi = K, len(o)
            while lo < hi:  # the first position whose lower bound passes the k-th exact distance
                mid = (lo + hi) // 2
                if lbs[mid] > np.partition(ts[:mid], K - 1)[K - 1]:
                    hi = mid
                else:
                    lo = mid + 1
            top = idx[o[:lo][np.argsort(ts[:lo])[:K]]]
            hits += len(set(top.tolist()) & set(gt[i].tolist()))
            rr.append(lo)
        return hits / (K * len(cases)), np.mean(rr), np.median(rr)

    print(f"\nsimulated final re-rank at n_probe {sim_np} ({len(cases)} queries):\n")
    print("| margin | eps | recall@10 | rows (mean) | rows (median) |")
    print("|---|---:|---:|---:|---:|")
    for eps in eps_today:
        r = simulate(lambda idx, a, scale, eps=eps: eps * err[idx])
        print(f"| eps \\|e\\| | {eps:.3f} | {r[0]:.4f} | {r[1]:.1f} | {r[2]:.0f} |")
    for eps in eps_today:
        r = simulate(lambda idx, a, scale, eps=eps: eps * scale * err[idx])
        print(f"| eps (per-query scale / its mean) \\|e\\| | {eps:.3f} | {r[0]:.4f} | {r[1]:.1f} | {r[2]:.0f} |")
    for eps in eps_bias:
        r = simulate(lambda idx, a, scale, eps=eps: a * s[idx] + eps * err[idx])
        print(f"| a^ s + eps \\|e\\| | {eps:.3f} | {r[0]:.4f} | {r[1]:.1f} | {r[2]:.0f} |")
    s_fit = fit @ coef
    for eps in eps_bias:
        r = simulate(lambda idx, a, scale, eps=eps: a * s_fit[idx] + eps * err[idx])
        print(f"| a^ s(\\|e\\|) + eps \\|e\\| (s fitted from \\|e\\|) | {eps:.3f} | {r[0]:.4f} | {r[1]:.1f} | "
              f"{r[2]:.0f} |")


def floats(text):
    return [float(v) for v in text.split(",") if v]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="directory holding minilm/ (else $VECTORDB_BENCH_DATA)")
    ap.add_argument("--queries", type=int, default=1000, help="dev queries used (default 1000)")
    ap.add_argument("--n-probe", default="24,32,40,48,64,128", help="engine n_probe values")
    ap.add_argument("--sim-n-probe", type=int, default=40, help="n_probe of the simulation")
    ap.add_argument("--eps", default="0.18,0.21,0.237,0.26", help="eps sweep of the margin eps |e|")
    ap.add_argument("--eps-bias", default="0.04,0.06,0.08,0.10",
                    help="eps sweep of the margin a^ s + eps |e|")
    args = ap.parse_args(argv)
    root = data_root(args.data_dir)
    why = minilm_missing(root)
    if why:
        raise SystemExit(f"minilm set not available: {why}")
    assert root is not None
    base = np.ascontiguousarray(np.load(root / "minilm" / "base.npy"), np.float32)
    queries = np.ascontiguousarray(np.load(root / "minilm" / "queries_dev.npy")[: args.queries], np.float32)
    gt = np.load(root / "minilm" / "gt_dev.npy")[: args.queries, :K].astype(np.int64)
    n_lists = max(1, round(math.sqrt(base.shape[0])))  # vectordb's default
    print(machine_summary())
    engine_table(base, queries, gt, n_lists, [int(v) for v in args.n_probe.split(",") if v])
    error_model(base, queries, gt, n_lists, args.sim_n_probe, floats(args.eps), floats(args.eps_bias))


if __name__ == "__main__":
    main()
