"""Engine kernels through the private binding vectordb._core: every SIMD variant this CPU has
(serial, AVX2+FMA, AVX-512, NEON) against a float64 NumPy reference, the dispatch switch, and the
exact flat search against a brute-force NumPy model.

The C-level twin of these tests is tests/c/test_kernels.c (build line at its top).
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vectordb import _core

ISAS = ["serial", "avx2", "avx512", "neon"]
METRICS = ["l2", "ip", "cosine"]
DIMS = [1, 3, 7, 16, 17, 100, 128, 384, 1280, 1536]


# ---------------------------------------------------------------- reference model


def ref_distances(metric, queries, rows):
    """float64 distances (nq, n) and the magnitude each one's float32 rounding error scales with."""
    q = np.asarray(queries, dtype=np.float64)
    r = np.asarray(rows, dtype=np.float64)
    if metric == "l2":
        diff2 = (q[:, None, :] - r[None, :, :]) ** 2
        s = diff2.sum(-1)
        return s, s
    dot = q @ r.T
    absdot = np.abs(q) @ np.abs(r).T
    if metric == "ip":
        return 1.0 - dot, absdot + 1.0
    qn = np.sqrt((q * q).sum(1))[:, None]
    rn = np.sqrt((r * r).sum(1))[None, :]
    den = qn * rn
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.where(den == 0, 1.0, 1.0 - dot / den)
        scale = np.where(den == 0, 1.0, absdot / den + 1.0)
    return dist, scale


def assert_close(got, want, scale, d, what):
    # float32 accumulation over d terms: error grows ~linearly in d relative to sum |terms|
    tol = (2e-7 * d + 1e-6) * scale + 1e-6
    err = np.abs(np.asarray(got, dtype=np.float64) - want)
    bad = np.argwhere(err > tol)
    assert bad.size == 0, (
        f"{what}: {len(bad)} of {err.size} values off, first at {tuple(bad[0])}: "
        f"got {np.asarray(got)[tuple(bad[0])]!r} want {want[tuple(bad[0])]!r}"
    )


def detected():
    return set(_core.capabilities()["detected"])


def variant_available(isa):
    return isa == "serial" or isa in detected()


@pytest.fixture
def restore_cpu():
    caps = _core.capabilities()
    threads = caps["threads"]
    yield
    _core.set_cpu_features(list(caps["enabled"]))
    _core.set_num_threads(threads)


def rng_data(rng, shape, ints=False):
    if ints:
        return rng.integers(-4, 5, size=shape).astype(np.float32)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


# ---------------------------------------------------------------- capabilities / dispatch


def test_capabilities_shape():
    caps = _core.capabilities()
    assert set(caps) >= {"detected", "enabled", "kernel", "threads"}
    assert set(caps["enabled"]) <= set(caps["detected"]) <= {"avx2", "avx512", "neon"}
    assert caps["kernel"] in ("avx512", "avx2", "neon", "serial")
    assert caps["threads"] >= 1
    if "avx512" in caps["enabled"]:
        assert caps["kernel"] == "avx512"
    elif "avx2" in caps["enabled"]:
        assert caps["kernel"] == "avx2"


def test_set_cpu_features_switches_kernel(restore_cpu):
    caps = _core.set_cpu_features([])
    assert caps["enabled"] == [] and caps["kernel"] == "serial"
    assert _core.capabilities()["kernel"] == "serial"
    for isa in ("avx2", "avx512", "neon"):
        if isa in detected():
            caps = _core.set_cpu_features([isa])
            assert caps["enabled"] == [isa] and caps["kernel"] == isa
    caps = _core.set_cpu_features(sorted(detected()))
    assert set(caps["enabled"]) == detected()


def test_set_cpu_features_ignores_undetected(restore_cpu):
    missing = [isa for isa in ("avx2", "avx512", "neon") if isa not in detected()]
    caps = _core.set_cpu_features(missing)
    assert caps["enabled"] == [] and caps["kernel"] == "serial"


def run_python(code, **env):
    full_env = dict(os.environ)
    full_env.pop("VECTORDB_DISABLE_CPU_FEATURES", None)
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


CAPS_CODE = "import json, vectordb._core as c; print(json.dumps(c.capabilities()))"


def test_env_disables_to_serial():
    caps = json.loads(run_python(CAPS_CODE, VECTORDB_DISABLE_CPU_FEATURES="avx512,avx2"))
    assert caps["kernel"] in ("serial", "neon")
    assert "avx512" not in caps["enabled"] and "avx2" not in caps["enabled"]
    if "neon" not in caps["detected"]:
        assert caps["kernel"] == "serial"
    caps = json.loads(run_python(CAPS_CODE, VECTORDB_DISABLE_CPU_FEATURES=" ALL "))
    assert caps["kernel"] == "serial" and caps["enabled"] == []


def test_env_disables_only_avx512():
    caps = json.loads(run_python(CAPS_CODE, VECTORDB_DISABLE_CPU_FEATURES="avx512"))
    assert "avx512" not in caps["enabled"]
    if "avx2" in caps["detected"]:
        assert caps["kernel"] == "avx2"


def test_env_num_threads():
    caps = json.loads(run_python(CAPS_CODE, VECTORDB_NUM_THREADS="3"))
    assert caps["threads"] == 3


def test_serial_kernel_gives_reference_answers_in_subprocess():
    code = (
        "import numpy as np, vectordb._core as c\n"
        "q = np.array([1, 2, 3], np.float32); r = np.array([[0, 2, 5], [1, 2, 3]], np.float32)\n"
        "print(c.capabilities()['kernel'], c.flat_search('l2', r, q[None], 2, None)[1].tolist())\n"
    )
    out = run_python(code, VECTORDB_DISABLE_CPU_FEATURES="all").split()
    assert out[0] == "serial"
    assert "".join(out[1:]) == "[[1,0]]"


# ---------------------------------------------------------------- distance kernels


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", DIMS)
def test_distance_batch_matches_float64(isa, metric, d):
    if not variant_available(isa):
        pytest.skip(f"{isa} not detected on this CPU")
    rng = np.random.default_rng(d * 31 + METRICS.index(metric))
    q = rng_data(rng, d)
    rows = rng_data(rng, (13, d))
    rows[5] = 0.0  # cosine with a zero-norm row must be 1
    got = _core.distance_batch(isa, metric, q, rows)
    assert got.dtype == np.float32 and got.shape == (13,)
    want, scale = ref_distances(metric, q[None], rows)
    assert_close(got[None], want, scale, d, f"{isa} batch {metric} d={d}")
    if metric == "cosine":
        assert got[5] == 1.0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", DIMS)
def test_distance_block_matches_float64(isa, metric, d):
    if not variant_available(isa):
        pytest.skip(f"{isa} not detected on this CPU")
    rng = np.random.default_rng(d * 17 + METRICS.index(metric))
    queries = rng_data(rng, (7, d))  # one 4-query tile + 3 left over
    rows = rng_data(rng, (23, d))  # tiles + leftover rows
    queries[6] = 0.0
    got = _core.distance_block(isa, metric, queries, rows)
    assert got.dtype == np.float32 and got.shape == (7, 23)
    want, scale = ref_distances(metric, queries, rows)
    assert_close(got, want, scale, d, f"{isa} block {metric} d={d}")
    if metric == "cosine":
        assert np.all(got[6] == 1.0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", [(16, 1100, 9), (1536, 45, 5), (3, 1031, 4), (100, 2, 6), (17, 1, 1)])
def test_distance_block_many_rows(isa, metric, shape):
    """More rows than one cache chunk of the blocked kernel, and every tile remainder."""
    if not variant_available(isa):
        pytest.skip(f"{isa} not detected on this CPU")
    d, n, nq = shape
    rng = np.random.default_rng(n + d)
    queries, rows = rng_data(rng, (nq, d)), rng_data(rng, (n, d))
    got = _core.distance_block(isa, metric, queries, rows)
    want, scale = ref_distances(metric, queries, rows)
    assert_close(got, want, scale, d, f"{isa} block {metric} {shape}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", DIMS)
def test_distance_block_one_is_the_blocks_row(isa, metric, d):
    """One query's block distances computed alone: bit for bit the block's row for it, whichever
    tile position the query has (so an IVF query probes the same lists alone and in a batch), and
    close to float64; rows past a cache chunk and every tile remainder."""
    if not variant_available(isa):
        pytest.skip(f"{isa} not detected on this CPU")
    rng = np.random.default_rng(d * 13 + METRICS.index(metric))
    queries = rng_data(rng, (4, d))
    queries[3] = 0.0
    for n in (1, 2, 3, 5, 23, 1031 if d < 64 else 61):
        rows = rng_data(rng, (n, d))
        block = _core.distance_block(isa, metric, queries, rows)
        want, scale = ref_distances(metric, queries, rows)
        for a in range(4):
            try:
                got = _core.distance_block_one(isa, metric, queries[a], rows)
            except ValueError:
                assert isa == "neon"  # no one-query tile there: callers pad a tile
                return
            assert got.dtype == np.float32 and got.shape == (n,)
            assert np.array_equal(got.view(np.uint32), block[a].view(np.uint32)), (isa, metric, d, n, a)
            assert_close(got[None], want[a:a + 1], scale, d, f"{isa} block_one {metric} d={d} n={n}")


@pytest.mark.parametrize("metric", METRICS)
def test_variants_agree_with_each_other(metric):
    rng = np.random.default_rng(5)
    d = 301
    q, rows = rng_data(rng, d), rng_data(rng, (50, d))
    results = {isa: _core.distance_batch(isa, metric, q, rows) for isa in ISAS if variant_available(isa)}
    base = results.pop("serial")
    for isa, got in results.items():
        np.testing.assert_allclose(got, base, rtol=1e-4, atol=1e-4, err_msg=isa)


def test_unavailable_isa_and_bad_metric_raise():
    q = np.zeros(4, np.float32)
    rows = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError):
        _core.distance_batch("sse9", "l2", q, rows)
    for isa in ("avx2", "avx512", "neon"):
        if isa not in detected():
            with pytest.raises(ValueError):
                _core.distance_batch(isa, "l2", q, rows)
            with pytest.raises(ValueError):
                _core.distance_block(isa, "l2", q[None], rows)
    with pytest.raises(ValueError):
        _core.distance_batch("serial", "manhattan", q, rows)


def test_large_values_cosine_does_not_overflow():
    # |q|^2 |r|^2 = 1e80 overflows float32; cosine of parallel vectors is still 0
    q = np.full(8, 1e10, np.float32)
    rows = np.stack([q, -q, q * 0.5]).astype(np.float32)
    for isa in ISAS:
        if variant_available(isa):
            got = _core.distance_batch(isa, "cosine", q, rows)
            np.testing.assert_allclose(got, [0.0, 2.0, 0.0], atol=1e-5, err_msg=isa)


# ---------------------------------------------------------------- nearest centroid (k-means assignment)

NEAREST_ISAS = ["serial", "avx2", "avx512"]  # NEON runs the serial twin


def check_nearest(isa, x, c, bias):
    """The kernel's answer against float64: its value is the float64 value of its index (up to
    float32 rounding), and no centroid is better by more than that rounding."""
    idx, val = _core.nearest_centroids(isa, x, c, bias)
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    v64 = bias.astype(np.float64)[None, :] - 2.0 * (x64 @ c64.T)
    scale = np.abs(bias).astype(np.float64)[None, :] + 2.0 * (np.abs(x64) @ np.abs(c64).T)
    tol = (2e-7 * x.shape[1] + 1e-6) * scale.max(1) + 1e-6
    rows = np.arange(x.shape[0])
    assert idx.dtype == np.uint32 and idx.shape == (x.shape[0],)
    assert (idx < c.shape[0]).all(), f"{isa}: index out of range"
    assert (np.abs(val - v64[rows, idx]) <= tol).all(), f"{isa}: value is not its index's value"
    assert (v64[rows, idx] <= v64.min(1) + 2 * tol).all(), f"{isa}: a better centroid was missed"
    return idx, val


@pytest.mark.parametrize("isa", NEAREST_ISAS)
# (n, k, d): tails of every micro-block size, k around the 32-wide panels, several panel groups
# (d=1280: 2 panels per L2 group) and super-blocks (n > 64), d beyond one group per panel.
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 31, 3), (8, 32, 16), (9, 33, 17), (100, 1000, 128),
                                   (21, 65, 384), (3, 5, 1280), (64, 96, 7), (70, 200, 1280), (10, 100, 3000)])
def test_nearest_centroids_match_float64(isa, shape):
    if not variant_available(isa):
        pytest.skip(f"{isa} not on this CPU")
    n, k, d = shape
    rng = np.random.default_rng(n * 1000 + k + d)
    x, c = rng_data(rng, (n, d)), rng_data(rng, (k, d))
    l2_bias = (c.astype(np.float64) ** 2).sum(1).astype(np.float32)
    for bias in (l2_bias, np.zeros(k, np.float32)):  # squared-L2 order, largest-dot order
        check_nearest(isa, x, c, bias)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 70), d=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       ints=st.booleans())
def test_nearest_centroids_variants_agree_and_break_ties_low(n, k, d, seed, ints):
    # Small integers make exact ties common (and the arithmetic exact): every variant must then
    # return the first index holding the minimum. AVX2 and AVX-512 (one FMA per term, in dimension
    # order) must return the same bits on any data.
    rng = np.random.default_rng(seed)
    x, c = rng_data(rng, (n, d), ints), rng_data(rng, (k, d), ints)
    c[rng.integers(0, k, size=k // 3)] = c[0]  # duplicate centroids
    bias = (c.astype(np.float64) ** 2).sum(1).astype(np.float32)
    v64 = bias.astype(np.float64)[None, :] - 2.0 * (x.astype(np.float64) @ c.astype(np.float64).T)
    results = {isa: check_nearest(isa, x, c, bias) for isa in NEAREST_ISAS if variant_available(isa)}
    for isa, (idx, val) in results.items():
        if ints:
            np.testing.assert_array_equal(idx, v64.argmin(1), err_msg=isa)
            np.testing.assert_array_equal(val, v64.min(1), err_msg=isa)
    if "avx2" in results and "avx512" in results:
        np.testing.assert_array_equal(results["avx2"][0], results["avx512"][0])
        np.testing.assert_array_equal(results["avx2"][1], results["avx512"][1])


def test_nearest_centroids_nan_and_unavailable():
    c = np.eye(4, dtype=np.float32)
    x = np.array([[np.nan] * 4, [0, 0, 1, 0]], np.float32)
    for isa in NEAREST_ISAS:
        if variant_available(isa):
            idx, val = _core.nearest_centroids(isa, x, c, np.ones(4, np.float32))
            assert idx.tolist() == [0, 2], isa  # a NaN point gets a valid index
            assert np.isinf(val[0]) and val[1] == -1.0
    with pytest.raises(ValueError):
        _core.nearest_centroids("sse9", x, c, np.ones(4, np.float32))
    with pytest.raises(ValueError):
        _core.nearest_centroids("serial", x, c, np.ones(3, np.float32))


# ---------------------------------------------------------------- flat search


def brute_force(metric, data, queries, k, allow):
    """Top-k by (float64 distance, row), -1/inf padding: the model the engine must match."""
    dist, _ = ref_distances(metric, queries, data)
    nq = len(queries)
    out_d = np.full((nq, k), np.inf)
    out_r = np.full((nq, k), -1, np.int64)
    idx = np.arange(len(data)) if allow is None else np.flatnonzero(allow)
    for j in range(nq):
        dj = dist[j, idx]
        order = np.lexsort((idx, dj))[:k]
        out_d[j, : len(order)] = dj[order]
        out_r[j, : len(order)] = idx[order]
    return out_d, out_r


def check_flat(metric, data, queries, k, allow, exact):
    got_d, got_r = _core.flat_search(metric, data, queries, k, allow)
    nq = len(queries)
    assert got_d.shape == (nq, k) and got_r.shape == (nq, k)
    assert got_d.dtype == np.float32 and got_r.dtype == np.int64
    want_d, want_r = brute_force(metric, data, queries, k, allow)
    pad = want_r < 0
    assert np.array_equal(got_r < 0, pad), "padding slots differ"
    assert np.all(np.isinf(got_d[pad]))
    if exact:
        # integer-valued data: every l2/ip distance is exact in float32, so ties are real and the
        # (distance, row) order must match exactly
        np.testing.assert_array_equal(got_r, want_r)
        np.testing.assert_array_equal(got_d[~pad], want_d[~pad])
        return
    d = data.shape[1]
    tol = (2e-7 * d + 1e-6) * (np.abs(want_d[~pad]) + 1.0)
    assert np.all(np.abs(got_d[~pad] - want_d[~pad]) <= tol), "k-th distances differ"
    # returned rows are allowed, distinct, sorted, and their own distances are right
    ref_all, _ = ref_distances(metric, queries, data)
    for j in range(nq):
        rows = got_r[j][got_r[j] >= 0]
        assert len(set(rows.tolist())) == len(rows)
        if allow is not None:
            assert allow[rows].all()
        own = ref_all[j, rows]
        assert np.all(np.abs(own - got_d[j, : len(rows)]) <= (2e-7 * d + 1e-6) * (np.abs(own) + 1.0))
        assert np.all(np.diff(got_d[j, : len(rows)]) >= 0)


FLAT_CASES = [
    # (n, d, nq, k)
    (1000, 17, 1, 10),
    (300, 3, 9, 7),
    (700, 128, 13, 1),
    (10000, 64, 2, 10),  # few queries, many rows: rows split over workers and merged
    (200, 100, 40, 25),
    (50, 1, 3, 80),  # k larger than the number of rows
]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", FLAT_CASES)
@pytest.mark.parametrize("mask", ["none", "dense", "sparse", "words", "empty"])
@pytest.mark.parametrize("kernel", ["best", "serial"])
def test_flat_search_matches_brute_force(restore_cpu, metric, case, mask, kernel):
    n, d, nq, k = case
    if kernel == "serial":
        _core.set_cpu_features([])
    _core.set_num_threads(2)
    rng = np.random.default_rng(n * 7 + d + nq + k)
    allow = {
        "none": None,
        "dense": rng.random(n) < 0.5,
        "sparse": rng.random(n) < 0.02,
        "words": (np.arange(n) // 64) % 3 == 1,
        "empty": np.zeros(n, bool),
    }[mask]
    for ints in (True, False):
        data = rng_data(rng, (n, d), ints)
        if n > 10:
            data[7] = data[3]  # duplicate rows: ties broken by the smaller row
        queries = rng_data(rng, (nq, d), ints)
        check_flat(metric, data, queries, k, allow, exact=ints and metric != "cosine")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_flat_search_same_answer_for_any_thread_count(restore_cpu, threads):
    assert _core.set_num_threads(threads) == threads
    assert _core.capabilities()["threads"] == threads
    rng = np.random.default_rng(11)
    data = rng_data(rng, (5000, 128), ints=True)  # enough work for the pool (and row slices)
    queries = rng_data(rng, (20, 128), ints=True)
    check_flat("l2", data, queries, 15, None, exact=True)
    check_flat("ip", data, queries[:2], 15, rng.random(5000) < 0.3, exact=True)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    d=st.integers(1, 40),
    nq=st.integers(1, 12),
    k=st.integers(1, 20),
    metric=st.sampled_from(["l2", "ip"]),
    density=st.sampled_from([None, 0.0, 0.05, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_flat_search_property(n, d, nq, k, metric, density, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(-2, 3, size=(n, d)).astype(np.float32)  # small range: many exact ties
    queries = rng.integers(-2, 3, size=(nq, d)).astype(np.float32)
    allow = None if density is None else rng.random(n) < density
    check_flat(metric, data, queries, k, allow, exact=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # row x dim products on both sides of the one-query split (from 1.5M)
    rows=st.one_of(st.integers(1, 1572864), st.integers(1400000, 3200000)),
    d=st.sampled_from([1, 7, 64, 128, 384]),
    k=st.integers(1, 40),
    metric=st.sampled_from(METRICS),
    density=st.sampled_from([None, 0.02, 0.5]),
    ints=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_query_split_over_threads_is_the_single_thread_answer(restore_cpu, rows, d, k, metric, density, ints,
                                                                  seed):
    """One query over many rows is split over the pool; its answer is bit for bit the 1-thread one."""
    rng = np.random.default_rng(seed)
    n = max(1, rows // d)
    data = rng_data(rng, (n, d), ints)
    data[n // 2] = data[n // 3]  # a tie across slices: the smaller row wins in both
    query = rng_data(rng, (1, d), ints)
    allow = None if density is None else rng.random(n) < density
    _core.set_num_threads(1)
    want = _core.flat_search(metric, data, query, k, allow)
    _core.set_num_threads(2)
    got = _core.flat_search(metric, data, query, k, allow)
    assert np.array_equal(got[1], want[1])
    assert np.array_equal(got[0], want[0])
    check_flat(metric, data, query, k, allow, exact=ints and metric != "cosine")


def test_pool_survives_fork(restore_cpu):
    """A forked child must be able to search with threads (the parent's workers do not exist there)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    _core.set_num_threads(2)
    rng = np.random.default_rng(3)
    data = rng_data(rng, (4000, 64), ints=True)
    queries = rng_data(rng, (16, 64), ints=True)
    want = _core.flat_search("l2", data, queries, 5, None)  # starts the workers
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, just exit status
        code = 1
        try:
            signal.alarm(30)  # a deadlock becomes a SIGALRM death, not a hung test run
            got = _core.flat_search("l2", data, queries, 5, None)
            code = 0 if np.array_equal(got[1], want[1]) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status:#x}"


# ---------------------------------------------------------------- exact batch (GEMM-style) kernel

EXACT_ISAS = ["serial", "avx2", "avx512"]


def one_by_one(metric, data, queries, k):
    """The single-query exact path, query by query: what a batch must return bit for bit."""
    outs = [_core.flat_search(metric, data, queries[i:i + 1], k) for i in range(len(queries))]
    return np.vstack([o[0] for o in outs]), np.vstack([o[1] for o in outs])


def check_exact_batch(isa, metric, data, queries, k):
    got_d, got_r = _core.exact_search_isa(isa, metric, data, queries, k)
    want_d, want_r = one_by_one(metric, data, queries, k)
    np.testing.assert_array_equal(got_r, want_r)
    np.testing.assert_array_equal(got_d, want_d)  # the same float32 bits: recomputed by that path
    return got_d, got_r


@pytest.mark.parametrize("isa", EXACT_ISAS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (9, 3, 33, 4), (1031, 17, 37, 10), (700, 129, 70, 7),
                                   (300, 384, 5, 300), (2000, 7, 100, 1)])
def test_exact_batch_kernel_matches_float64_and_single_queries(isa, metric, shape):
    if not variant_available(isa):
        pytest.skip(f"{isa} not detected on this CPU")
    n, d, nq, k = shape
    rng = np.random.default_rng(n + d + nq + k)
    data, queries = rng_data(rng, (n, d)), rng_data(rng, (nq, d))
    got_d, got_r = check_exact_batch(isa, metric, data, queries, k)
    want_d, want_r = brute_force(metric, data, queries, min(k, n), None)
    ref_all, scale = ref_distances(metric, queries, data)
    for j in range(nq):  # each returned distance is that row's, and the k-th is the true k-th
        rows = got_r[j][got_r[j] >= 0]
        assert len(rows) == min(k, n) and len(set(rows.tolist())) == len(rows)
        assert_close(got_d[j, : len(rows)], ref_all[j, rows], scale[j, rows], d, f"{isa} {metric} q{j}")
        assert_close(got_d[j, len(rows) - 1:len(rows)], want_d[j, -1:], np.abs(want_d[j, -1:]) + 1, d, "k-th")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), d=st.integers(1, 40), nq=st.integers(1, 70), k=st.integers(1, 20),
       metric=st.sampled_from(METRICS), kind=st.sampled_from(["ints", "offset", "zeros", "scaled"]),
       seed=st.integers(0, 2**32 - 1))
def test_exact_batch_kernel_same_as_single_queries_on_adversarial_data(n, d, nq, k, metric, kind, seed):
    # ints: exact ties everywhere; offset: a large common offset (l2 by |x|^2 - 2 x.q cancels
    # badly); zeros: zero rows and queries (cosine distance 1); scaled: norms from 1e-3 to 1e3.
    rng = np.random.default_rng(seed)
    data, queries = rng_data(rng, (n, d), ints=True), rng_data(rng, (nq, d), ints=True)
    if kind == "offset":
        data, queries = data * 1e-3 + 100.0, queries * 1e-3 + 100.0
    elif kind == "zeros":
        data[rng.random(n) < 0.3] = 0
        queries[rng.random(nq) < 0.3] = 0
    elif kind == "scaled":
        data *= (10.0 ** rng.uniform(-3, 3, (n, 1))).astype(np.float32)
        queries *= (10.0 ** rng.uniform(-3, 3, (nq, 1))).astype(np.float32)
    data, queries = data.astype(np.float32), queries.astype(np.float32)
    for isa in EXACT_ISAS:
        if variant_available(isa):
            check_exact_batch(isa, metric, data, queries, k)


@pytest.mark.parametrize("features", [None, ["avx2"], []])
@pytest.mark.parametrize("threads", [1, 2])
def test_exact_batch_through_flat_search_is_the_single_query_answer(restore_cpu, features, threads):
    # flat_search sends unfiltered batches of >= 16 queries through the GEMM-style kernel
    if features is not None:
        _core.set_cpu_features(features)
    _core.set_num_threads(threads)
    rng = np.random.default_rng(5)
    data, queries = rng_data(rng, (6000, 45)), rng_data(rng, (130, 45))
    data[100] = data[50]  # a duplicate row: the tie goes to the smaller row
    for metric in METRICS:
        got = _core.flat_search(metric, data, queries, 12)
        want = one_by_one(metric, data, queries, 12)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("features", [None, ["avx2"], []])
def test_small_and_filtered_batches_through_flat_search_are_the_single_query_answer(restore_cpu, features):
    """Batches below the GEMM-style kernel's 16 queries, and filtered batches, return each query's
    single-query answer bit for bit too (they once took 4-query tiles' distances, rounded otherwise:
    other distance bits and, on near-ties, other rows)."""
    if features is not None:
        _core.set_cpu_features(features)
    rng = np.random.default_rng(8)
    data, queries = rng_data(rng, (3000, 37)), rng_data(rng, (40, 37))
    allow = np.ones(3000, dtype=bool)
    allow[::3] = False
    for metric in METRICS:
        for nq, k, filt in [(2, 3000, None), (5, 50, None), (9, 3000, None), (40, 3000, allow), (6, 100, allow)]:
            got = _core.flat_search(metric, data, queries[:nq], k, filt)
            outs = [_core.flat_search(metric, data, queries[i:i + 1], k, filt) for i in range(nq)]
            np.testing.assert_array_equal(got[1], np.vstack([o[1] for o in outs]), err_msg=f"{metric} {nq}")
            np.testing.assert_array_equal(got[0], np.vstack([o[0] for o in outs]), err_msg=f"{metric} {nq}")


def near_tie_data(rng, kind, n, nq, d):
    """Rows and queries whose distances tie or nearly tie: small integers (exact ties), points near
    one large common point (distances agree in their leading bits), duplicated rows, rows on a shell
    around the queries (equal up to rounding); or of
    extreme scale: norms from 1e-25 to 1e20 per vector, some zero vectors."""
    data, queries = rng_data(rng, (n, d), ints=True), rng_data(rng, (nq, d), ints=True)
    if kind == "shell":  # every row at one distance (and angle) from every query, up to rounding
        centre = rng_data(rng, (1, d))
        unit = centre / max(np.linalg.norm(centre), 1e-6)
        w = rng.standard_normal((n, d))
        w -= (w @ unit.T) * unit
        w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        data = 0.7 * unit + 0.5 * w
        queries = np.repeat(centre, nq, axis=0) * (1 + 1e-7 * rng.standard_normal((nq, 1)))
        return data.astype(np.float32), queries.astype(np.float32)
    if kind == "extreme":
        data = rng_data(rng, (n, d)) * (10.0 ** rng.uniform(-25, 20, (n, 1)))
        queries = rng_data(rng, (nq, d)) * (10.0 ** rng.uniform(-25, 20, (nq, 1)))
        data[rng.random(n) < 0.1] = 0
        queries[rng.random(nq) < 0.1] = 0
    elif kind == "offset":
        data, queries = data * 1e-3 + 100.0, queries * 1e-3 + 100.0
    elif kind == "duplicates":
        data = data[rng.integers(0, max(1, n // 4), n)]
        queries = data[rng.integers(0, n, nq)] + rng_data(rng, (nq, d)) * 1e-4
    return data.astype(np.float32), queries.astype(np.float32)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 2500), d=st.sampled_from([1, 5, 16, 37, 130]), nq=st.integers(1, 15),
       k=st.integers(1, 30), metric=st.sampled_from(METRICS), density=st.sampled_from([None, 0.03, 0.4, 0.9]),
       kind=st.sampled_from(["ints", "offset", "duplicates", "extreme", "shell"]),
       features=st.sampled_from([None, ["avx2"], []]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_small_batches_filtered_or_not_are_each_querys_single_answer(restore_cpu, n, d, nq, k, metric, density, kind,
                                                                     features, threads, seed):
    """A batch of 1..15 queries, with or without a filter, returns for each query exactly the rows
    and float32 distance bits that query gets alone, on near-tie and extreme-scale data, on every
    kernel variant (small unfiltered groups screen with the 4-query block kernel, 12+ take the
    GEMM-style kernel, the rest the single-query kernel)."""
    check_batch_is_single(features, threads, seed, near_tie_data, kind, n, d, nq, k, metric, density)


def check_batch_is_single(features, threads, seed, make, kind, n, d, nq, k, metric, density):
    """On that variant and thread count, a flat batch over make(...)'s data (filtered at density)
    returns each query's single-query rows and float32 bits."""
    if features is not None:
        _core.set_cpu_features(features)
    _core.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    data, queries = make(rng, kind, n, nq, d)
    allow = None if density is None else rng.random(n) < density
    with np.errstate(all="ignore"):  # extreme scales overflow in NumPy's casts
        got_d, got_r = _core.flat_search(metric, data, queries, k, allow)
        outs = [_core.flat_search(metric, data, queries[i:i + 1], k, allow) for i in range(nq)]
    np.testing.assert_array_equal(got_r, np.vstack([o[1] for o in outs]))
    np.testing.assert_array_equal(got_d, np.vstack([o[0] for o in outs]))


@pytest.mark.parametrize("features", [None, ["avx2"], []])
def test_small_batches_on_a_shell_keep_the_rows_the_screen_could_misjudge(restore_cpu, features):
    """Rows on a shell around the queries: their distances differ only in rounding, so the 4-query
    tiles that screen small batches (filtered or not) put many rows an ulp or two away from the
    single-query value; without the screen's error margin, rows at the k-th distance would be lost."""
    if features is not None:
        _core.set_cpu_features(features)
    rng = np.random.default_rng(11)
    for d in (37, 130, 384):
        data, queries = near_tie_data(rng, "shell", 3000, 11, d)
        dense = rng.random(3000) < 0.7  # filtered: dense 64-row words take the screen too
        for metric, allow in [(m, a) for m in METRICS for a in (None, dense)]:
            for nq, k in [(2, 7), (5, 40), (8, 1), (11, 300)]:
                got = _core.flat_search(metric, data, queries[:nq], k, allow)
                outs = [_core.flat_search(metric, data, queries[i:i + 1], k, allow) for i in range(nq)]
                np.testing.assert_array_equal(got[1], np.vstack([o[1] for o in outs]), err_msg=f"{metric} {d} {nq}")
                np.testing.assert_array_equal(got[0], np.vstack([o[0] for o in outs]), err_msg=f"{metric} {d} {nq}")


def scale_edge_data(rng, kind, n, nq, d):
    """Data at the edges of the screens' bounds: per-element scales 1e-44..1e30 (subnormals inside
    a vector), vectors of norm 1e-40..1e19, near-overflow inner products, norms at powers of two
    around 2^-30 / 2^30 / 2^-60 / 2^60, a shell of near-ties scaled to such a norm, small integers
    (ties) with a few elements at the float32 limit."""
    exps = [-75, -63, -61, -60, -59, -31, -30, -29, 0, 29, 30, 31, 59, 60, 61, 63]
    if kind == "elements":
        data = rng.uniform(-1, 1, (n, d)) * 10.0 ** rng.uniform(-44, 30, (n, d))
        queries = rng.uniform(-1, 1, (nq, d)) * 10.0 ** rng.uniform(-44, 30, (nq, d))
    elif kind == "vectors":
        data = rng.uniform(-1, 1, (n, d)) * 10.0 ** rng.uniform(-40, 19.5, (n, 1))
        queries = rng.uniform(-1, 1, (nq, d)) * 10.0 ** rng.uniform(-40, 19.5, (nq, 1))
    elif kind == "huge":
        data = rng.integers(-3, 4, (n, d)) * 10.0 ** rng.uniform(17, 19.3, (n, 1))
        queries = rng.integers(-3, 4, (nq, d)) * 10.0 ** rng.uniform(17, 19.3, (nq, 1))
    elif kind == "pow2":
        data = rng.uniform(-1, 1, (n, d)) * 2.0 ** rng.choice(exps, (n, 1))
        queries = rng.uniform(-1, 1, (nq, d)) * 2.0 ** rng.choice(exps, (nq, 1))
    elif kind == "ints":  # exact and near ties, with a few elements at the float32 limit
        data, queries = rng.integers(-3, 4, (n, d)).astype(np.float64), rng.integers(-3, 4, (nq, d)).astype(np.float64)
        for a in (data, queries):
            big = rng.random(a.shape) < 0.02
            a[big] = rng.choice([3e38, -3e38], int(big.sum()))
    else:
        data, queries = near_tie_data(rng, "shell", n, nq, d)
        scale = 2.0 ** rng.choice(exps)
        data, queries = data * scale, queries * scale
    data, queries = data.astype(np.float32), queries.astype(np.float32)
    data[rng.random(n) < 0.05] = 0
    return data, queries


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([1, 63, 65, 130, 700]), d=st.sampled_from([1, 3, 16, 33, 130]),
       nq=st.sampled_from([4, 5, 8, 11, 12, 33]), k=st.sampled_from([1, 10, 64, 1000]),
       metric=st.sampled_from(METRICS), density=st.sampled_from([None, 0.25, 0.5, 1.0]),
       kind=st.sampled_from(["elements", "vectors", "huge", "pow2", "shell", "ints"]),
       features=st.sampled_from([None, ["avx2"], []]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_batches_on_extreme_scales_are_each_querys_single_answer(restore_cpu, n, d, nq, k, metric, density, kind,
                                                                 features, threads, seed):
    """Batches screened by the 4-query block kernel (4-11 queries) or the GEMM-style kernel (12+),
    filtered or not, return each query's single-query rows and float32 bits on data where a
    screen's rounding margin could fall short: over/underflowing norms and products."""
    check_batch_is_single(features, threads, seed, scale_edge_data, kind, n, d, nq, k, metric, density)


@pytest.mark.parametrize("isa", EXACT_ISAS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 0.7, 1.0])
def test_exact_batch_kernel_with_a_filter_is_the_filtered_single_answer(isa, metric, density):
    """The GEMM-style kernel skips the rows a bitmap leaves out (whole tiles, tiles of a few rows
    taken one by one, partly allowed tiles) and returns each query's filtered single-query answer."""
    if not variant_available(isa):
        pytest.skip(f"{isa} not detected on this CPU")
    rng = np.random.default_rng(int(density * 100) + len(metric))
    for kind, n, d, nq in [("ints", 1037, 19, 13), ("offset", 700, 64, 40), ("duplicates", 203, 7, 33),
                           ("extreme", 300, 24, 20), ("shell", 500, 33, 35)]:
        data, queries = near_tie_data(rng, kind, n, nq, d)
        allow = rng.random(n) < density
        allow[: rng.integers(0, 70)] = density > 0.5  # a run of whole words on or off
        got_d, got_r = _core.exact_search_isa(isa, metric, data, queries, 9, allow)
        outs = [_core.flat_search(metric, data, queries[i:i + 1], 9, allow) for i in range(nq)]
        np.testing.assert_array_equal(got_r, np.vstack([o[1] for o in outs]), err_msg=f"{isa} {kind}")
        np.testing.assert_array_equal(got_d, np.vstack([o[0] for o in outs]), err_msg=f"{isa} {kind}")


@pytest.mark.parametrize("metric", METRICS)
def test_exact_batch_kernel_keeps_rows_its_rounding_would_misjudge(metric):
    # Rows and queries near one large common point: the dot products behind the GEMM-style bound
    # carry an error far above the distances' spread, so only its error margin keeps the true
    # neighbours among the rows it recomputes.
    rng = np.random.default_rng(3)
    centre = rng.uniform(50, 100, 64).astype(np.float32)
    data = (centre + rng.standard_normal((3000, 64)).astype(np.float32) * 1e-2).astype(np.float32)
    queries = (centre + rng.standard_normal((40, 64)).astype(np.float32) * 1e-2).astype(np.float32)
    for isa in EXACT_ISAS:
        if variant_available(isa):
            check_exact_batch(isa, metric, data, queries, 5)
