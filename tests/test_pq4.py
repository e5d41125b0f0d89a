"""The 4-bit PQ fast-scan kernels (csrc/vdb_pq4) through vectordb._core: packing, encoding, lookup
tables and every scan variant this CPU has, against float64 / integer NumPy references at odd sizes.
"""
import numpy as np
import pytest

from vectordb import _core

ISAS = ["serial", "avx2", "avx512"]


def variant_available(isa):
    return isa == "serial" or isa in _core.capabilities()["detected"]


def m_pad(m):
    return (m + 3) // 4 * 4


def offsets(d, m):
    base, extra = divmod(d, m)
    off = [0]
    for j in range(m):
        off.append(off[-1] + base + (j < extra))
    return off


def centroids_of(cent_t, d, m):
    """Per sub-space (16, len) float64 centroid arrays from the transposed storage."""
    off = offsets(d, m)
    out = []
    for j in range(m):
        ln = off[j + 1] - off[j]
        blk = np.asarray(cent_t[16 * off[j]: 16 * off[j] + 16 * ln], dtype=np.float64)
        out.append(blk.reshape(ln, 16).T)
    return out, off


def ref_scan(codes, lut8, m):
    """Integer reference: per vector, the sum of its table entries."""
    tab = lut8.reshape(-1, 16).astype(np.int64)
    return tab[np.arange(m)[None, :], codes.astype(np.int64)].sum(1)


def random_codes_and_table(m, n, seed):
    """n random codes of m indices and a random uint8 table (padding sub-spaces 0); with m = 256 every
    entry is 255, the largest sum (256 * 255, the top of the uint16 range) that must not wrap."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, size=(n, m), dtype=np.uint8)
    lut8 = np.zeros(m_pad(m) * 16, dtype=np.uint8)
    lut8[: m * 16] = rng.integers(0, 256, size=m * 16, dtype=np.uint8)
    if m == 256:
        lut8[:] = 255
    return codes, lut8


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n", [(1, 1), (3, 31), (5, 33), (17, 95), (96, 200), (255, 64), (256, 77)])
def test_scan_matches_integer_reference(isa, m, n):
    if not variant_available(isa):
        pytest.skip(f"{isa} not on this CPU")
    codes, lut8 = random_codes_and_table(m, n, m * 1000 + n)
    packed = _core.pq4_pack(codes)
    got = _core.pq4_scan(isa, packed, lut8)
    assert got.dtype == np.uint16 and len(got) == (n + 31) // 32 * 32
    np.testing.assert_array_equal(got[:n].astype(np.int64), ref_scan(codes, lut8, m))
    # the padding vectors of the last block hold index 0 everywhere
    pad = np.zeros((len(got) - n, m), dtype=np.uint8)
    np.testing.assert_array_equal(got[n:].astype(np.int64), ref_scan(pad, lut8, m))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n", [(1, 1), (3, 31), (5, 33), (96, 200), (256, 77)])
def test_scan_cut_returns_the_survivors_of_the_reference(isa, m, n):
    """The fused cut: sums as the plain scan, plus exactly the positions < n (the padding of the last
    block never) whose sum is >= smin, ascending, for cuts from none to all."""
    if not variant_available(isa):
        pytest.skip(f"{isa} not on this CPU")
    codes, lut8 = random_codes_and_table(m, n, m * 7 + n)
    packed = _core.pq4_pack(codes)
    want = ref_scan(codes, lut8, m)
    for smin in sorted({0, 1, int(np.median(want)), int(want.max()), int(want.max()) + 1, 65535, 65536, 70000}):
        sums, surv = _core.pq4_scan_cut(isa, packed, lut8, n, smin)
        np.testing.assert_array_equal(sums[:n].astype(np.int64), want)
        np.testing.assert_array_equal(surv, np.flatnonzero(want >= smin))
    # n short of the packed blocks: only the blocks holding n vectors, only positions < n
    sums, surv = _core.pq4_scan_cut(isa, packed, lut8, n // 2, 0)
    assert len(sums) == (n // 2 + 31) // 32 * 32 and list(surv) == list(range(n // 2))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,n", [(1, 1), (3, 31), (5, 33), (96, 200), (255, 64)])
def test_query_blocked_scan_and_cut_match_the_reference(isa, m, n):
    """Query blocking: one pass over a list's codes for 1-9 tables (blocks of 4 and every remainder)
    gives each table the plain scan's sums; the cut of stored sums gives the fused cut's survivors."""
    if not variant_available(isa):
        pytest.skip(f"{isa} not on this CPU")
    rng = np.random.default_rng(m * 31 + n)
    codes, _ = random_codes_and_table(m, n, m * 5 + n)
    packed = _core.pq4_pack(codes)
    mp = m_pad(m)
    for nlut in (1, 2, 3, 4, 5, 9):
        luts = rng.integers(0, 256, size=(nlut, mp * 16), dtype=np.uint8)
        luts[:, m * 16:] = 0  # the padding sub-spaces' tables are 0, as vdb_pq4_lut makes them
        got = _core.pq4_scan_multi(isa, packed, luts, n)
        assert got.shape == (nlut, (n + 31) // 32 * 32) and got.dtype == np.uint16
        for g in range(nlut):
            want = ref_scan(codes, luts[g], m)
            np.testing.assert_array_equal(got[g, :n].astype(np.int64), want)
            np.testing.assert_array_equal(got[g], _core.pq4_scan("serial", packed, luts[g])[:got.shape[1]])
            for smin in sorted({0, 1, int(np.median(want)), int(want.max()), int(want.max()) + 1, 65535, 65536}):
                np.testing.assert_array_equal(_core.pq4_cut(isa, got[g, :n], smin), np.flatnonzero(want >= smin))


@pytest.mark.parametrize("m,n", [(1, 5), (3, 40), (96, 65), (130, 97)])
def test_pack_roundtrip_and_overwrite(m, n):
    rng = np.random.default_rng(n)
    codes = rng.integers(0, 16, size=(n, m), dtype=np.uint8)
    packed = _core.pq4_pack(codes)
    np.testing.assert_array_equal(_core.pq4_unpack(packed, m, n), codes)
    assert len(packed) == (n + 31) // 32 * m_pad(m) * 16


@pytest.mark.parametrize("d,m", [(1, 1), (7, 3), (17, 5), (100, 25), (385, 96)])
def test_encode_lut_and_quantized_scan_against_float64(d, m):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(300, d)).astype(np.float32)
    cent_t, eps_hi, eps_lo = _core.pq4_train(x, m, 7)
    assert 0.0 < eps_hi <= 1.0 and 0.0 < eps_lo <= 1.0
    cents, off = centroids_of(cent_t, d, m)
    codes, err = _core.pq4_encode(cent_t, m, x)
    x64 = x.astype(np.float64)
    recon = np.zeros_like(x64)
    for j in range(m):
        sub = x64[:, off[j]: off[j + 1]]
        dist = ((sub[:, None, :] - cents[j][None, :, :]) ** 2).sum(-1)  # (n, 16)
        chosen = dist[np.arange(len(x)), codes[:, j]]
        assert np.all(chosen <= dist.min(1) * (1 + 1e-5) + 1e-6), f"sub-space {j}: not the nearest centroid"
        recon[:, off[j]: off[j + 1]] = cents[j][codes[:, j]]
    np.testing.assert_allclose(err, np.sqrt(((x64 - recon) ** 2).sum(1)), rtol=1e-5, atol=1e-6)
    assert err.mean() < np.sqrt((x64**2).sum(1)).mean()  # the code carries information

    q = rng.normal(size=d).astype(np.float32)
    lut = _core.pq4_lut(cent_t, m, q)
    want = np.zeros(m_pad(m) * 16)
    for j in range(m):
        want[j * 16: j * 16 + 16] = cents[j] @ q[off[j]: off[j + 1]].astype(np.float64)
    np.testing.assert_allclose(lut, want, rtol=1e-5, atol=1e-5 * np.abs(q).sum())

    lut8, step, bias = _core.pq4_lut_quantize(lut)
    tab = lut.reshape(-1, 16).astype(np.float64)
    approx = tab.min(1)[:, None] + step * lut8.reshape(-1, 16)
    assert np.all(np.abs(approx - tab) <= step / 2 * (1 + 1e-6) + 1e-7)
    assert abs(bias - tab.min(1).sum()) <= 1e-6 * (1 + np.abs(tab).sum())

    exact = recon @ q.astype(np.float64)  # <q, x^> in float64
    packed = _core.pq4_pack(codes)
    for isa in filter(variant_available, ISAS):
        sums = _core.pq4_scan(isa, packed, lut8)[: len(x)].astype(np.float64)
        est = bias + step * sums
        assert np.all(np.abs(est - exact) <= m * step / 2 * (1 + 1e-6) + 1e-4 * np.abs(tab).max()), isa


@pytest.mark.parametrize("scale", [1e-3, 1e-5, 1e3])
def test_error_calibration_does_not_depend_on_the_data_scale(scale):
    """The error bounds are ratios <u, e> / (|u| |e|): the same for a collection's vectors at any
    scale. (Small vectors once lost their random-pair ratios to float rounding of 1 - <u, e>, so
    eps_lo shrank and a search cut true neighbours.)"""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    _, hi1, lo1 = _core.pq4_train(x, 16, 1)
    _, hi, lo = _core.pq4_train((x * np.float32(scale)).astype(np.float32), 16, 1)
    assert hi == pytest.approx(hi1, rel=1e-3) and lo == pytest.approx(lo1, rel=1e-3), (scale, hi, lo, hi1, lo1)


def trained_for(isa, d, m, seed):
    """(rng, 203 x d training vectors, their transposed centroids); skips an ISA this CPU lacks."""
    if not variant_available(isa):
        pytest.skip(f"{isa} not on this CPU")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(203, d)).astype(np.float32)
    return rng, x, _core.pq4_train(x, m, 3)[0]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d,m", [(1, 1), (7, 3), (17, 5), (100, 25), (385, 96), (384, 96), (130, 128)])
def test_encoders_match_float64_and_serial_bits(isa, d, m):
    """Each encoder picks, per sub-space, a centroid at the float64 minimum distance (the first one
    on exact ties) and returns the serial encoder's codes and err bit for bit."""
    rng, x, cent_t = trained_for(isa, d, m, d * 7 + m)
    # Ties: rows equal to a centroid set, and a sub-space whose centroids repeat.
    cents, off = centroids_of(cent_t, d, m)
    for j in range(m):
        x[j % 16, off[j]: off[j + 1]] = cents[j][j % 16]
    dup = cent_t.copy()
    dup[16 * off[0]: 16 * off[1]] = np.repeat(dup[16 * off[0]: 16 * off[1]: 16], 16)
    for table in (cent_t, dup):
        codes, err = _core.pq4_encode(table, m, x, isa)
        ref_codes, ref_err = _core.pq4_encode(table, m, x, "serial")
        np.testing.assert_array_equal(codes, ref_codes)
        np.testing.assert_array_equal(err.view(np.uint32), ref_err.view(np.uint32))
        cs, _ = centroids_of(table, d, m)
        x64 = x.astype(np.float64)
        for j in range(m):
            dist = ((x64[:, None, off[j]: off[j + 1]] - cs[j][None]) ** 2).sum(-1)
            chosen = dist[np.arange(len(x)), codes[:, j]]
            assert np.all(chosen <= dist.min(1) * (1 + 1e-5) + 1e-6), f"sub-space {j}"
    assert not _core.pq4_encode(dup, m, x, isa)[0][:, 0].any()  # equal centroids: the first wins
    with pytest.raises(ValueError, match="not available"):
        _core.pq4_encode(cent_t, m, x, "sse9")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d,m", [(1, 1), (7, 3), (17, 5), (100, 25), (385, 96), (384, 96), (130, 128)])
def test_tables_match_float64_and_serial_bits(isa, d, m):
    """Each variant's float table is <q_j, C_j[c]> to float rounding and the serial table bit for
    bit, and so is its quantized table (step and bias too): a query's candidates and results do not
    depend on the CPU's table kernel. Constant sub-spaces, zeros of either sign and ties included."""
    rng, _, cent_t = trained_for(isa, d, m, d * 11 + m)
    cents, off = centroids_of(cent_t, d, m)
    for q in (rng.normal(size=d), np.zeros(d), -np.zeros(d), np.where(np.arange(d) % 3, 0.0, 2.0)):
        q = q.astype(np.float32)
        lut = _core.pq4_lut(cent_t, m, q, isa)
        np.testing.assert_array_equal(lut.view(np.uint32), _core.pq4_lut(cent_t, m, q, "serial").view(np.uint32))
        want = np.zeros(m_pad(m) * 16)
        for j in range(m):
            want[j * 16: j * 16 + 16] = cents[j] @ q[off[j]: off[j + 1]].astype(np.float64)
        np.testing.assert_allclose(lut, want, rtol=1e-5, atol=1e-5 * np.abs(q).sum() + 1e-30)
        tabs = [lut, -lut, np.round(lut * 4) / 4]  # ties and repeated entries
        tabs.append(np.where(np.arange(lut.size) % 5 == 0, np.float32(-0.0), lut).astype(np.float32))
        for tab in tabs:
            tab = np.ascontiguousarray(tab, dtype=np.float32)
            got, ref = _core.pq4_lut_quantize(tab, isa), _core.pq4_lut_quantize(tab, "serial")
            np.testing.assert_array_equal(got[0], ref[0])
            assert np.float64(got[1]).tobytes() == np.float64(ref[1]).tobytes(), (got[1], ref[1])
            assert np.float64(got[2]).tobytes() == np.float64(ref[2]).tobytes(), (got[2], ref[2])
            t64 = tab.reshape(-1, 16).astype(np.float64)
            approx = t64.min(1)[:, None] + got[1] * got[0].reshape(-1, 16)
            assert np.all(np.abs(approx - t64) <= got[1] / 2 * (1 + 1e-6) + 1e-7)
    with pytest.raises(ValueError, match="not available"):
        _core.pq4_lut(cent_t, m, q, "sse9")
    with pytest.raises(ValueError, match="not available"):
        _core.pq4_lut_quantize(lut, "sse9")


def test_constant_tables_and_bad_inputs():
    lut8, step, bias = _core.pq4_lut_quantize(np.full(64, 0.5, dtype=np.float32))
    assert step == 0.0 and not lut8.any() and bias == pytest.approx(2.0)
    with pytest.raises(ValueError):
        _core.pq4_lut_quantize(np.zeros(48, dtype=np.float32))  # m_pad must be a multiple of 4
    with pytest.raises(ValueError):
        _core.pq4_scan("serial", np.zeros(100, dtype=np.uint8), np.zeros(64, dtype=np.uint8))
    with pytest.raises(Exception, match="at least 16"):
        _core.pq4_train(np.zeros((10, 8), dtype=np.float32), 2, 0)
    with pytest.raises(Exception, match="sub-quantizers"):
        _core.pq4_train(np.zeros((100, 8), dtype=np.float32), 9, 0)


# ---------------------------------------------------------------- IVF search through the codes


def ref_dist(metric, q, x):
    q = q.astype(np.float64)
    x = x.astype(np.float64)
    if metric == "l2":
        return ((x - q) ** 2).sum(1)
    if metric == "ip":
        return 1.0 - x @ q
    return 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))


def clustered(rng, n, d, centres=40):
    c = rng.normal(size=(centres, d)) * 3
    return (c[rng.integers(0, centres, n)] + rng.normal(size=(n, d))).astype(np.float32)


def build(metric, x, n_lists, m, rows=None):
    h = _core.ivf_new(x.shape[1], metric, n_lists)
    _core.ivf_train(h, x, 3)
    _core.ivf_add(h, np.arange(len(x)) if rows is None else rows, x)
    if m:
        _core.ivf_set_pq4(h, m, 5)
    return h


@pytest.mark.parametrize("scale", [1e-4, 1e-8, 1e-12])
def test_ivf_pq4_cosine_answers_small_queries_as_their_direction(scale):
    """Cosine ranks directions: a query scaled down gets the answers of the query itself (same
    rows as the float32 lists at every list probed). The estimate of <q, c> / |q| from a centroid
    distance 1 - <q, c> rounded in float once lost <q, c> for a small query, and the bounds cut
    true neighbours (recall@10 0.88 at full probe)."""
    rng = np.random.default_rng(11)
    x = clustered(rng, 3000, 24)
    queries = clustered(rng, 40, 24)
    flat, pq = build("cosine", x, 16, 0), build("cosine", x, 16, 8)
    _, want = _core.ivf_search(flat, queries, 10, 16)
    _, got = _core.ivf_search(pq, (queries * np.float32(scale)).astype(np.float32), 10, 16)
    _, got1 = _core.ivf_search(pq, queries, 10, 16)
    same = np.mean([set(a) == set(b) for a, b in zip(got, want)])
    same1 = np.mean([set(a) == set(b) for a, b in zip(got1, want)])
    assert same >= same1 - 0.03 and same >= 0.95, (same, same1)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("d,m", [(33, 11), (64, 16)])
def test_ivf_pq4_returns_float32_distances_and_keeps_recall(metric, d, m):
    rng = np.random.default_rng(d + len(metric))
    x = clustered(rng, 3000, d)
    if metric == "ip":
        x /= np.linalg.norm(x, axis=1, keepdims=True)  # ip on unit vectors, as embeddings are used
    queries = clustered(rng, 60, d)
    flat = build(metric, x, 30, 0)
    pq = build(metric, x, 30, m)
    assert _core.ivf_info(pq)["pq4_m"] == m
    k, n_probe = 10, 8
    fd, fr = _core.ivf_search(flat, queries, k, n_probe)
    pd, pr = _core.ivf_search(pq, queries, k, n_probe)
    hits = 0
    for i, q in enumerate(queries):
        want = ref_dist(metric, q, x)
        # every returned distance is the float32 distance of that row (the flat search's own value)
        exact = _core.distance_batch("serial", metric, q, x[pr[i]])
        np.testing.assert_allclose(pd[i], exact, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pd[i], want[pr[i]], rtol=1e-4, atol=1e-4)
        assert np.all(np.diff(pd[i]) >= 0)
        hits += len(set(pr[i]) & set(fr[i]))
    recall = hits / (k * len(queries))
    print(f"{metric} d={d} m={m}: recall against IVF-Flat at the same n_probe {recall:.3f}")
    assert recall >= 0.97


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_ivf_pq4_recall_follows_ivf_flat_up_to_every_list(metric):
    """Against exact search: at every n_probe the codes lose few of the neighbours IVF-Flat finds,
    and probing every list finds nearly all. A neighbour's code error is biased toward the query
    (<x, e> = <x^, e> + |e|^2): an error bound measured on random pairs only left l2 at recall
    0.971 here with every list probed."""
    rng = np.random.default_rng(7)
    d, m, n_lists = 96, 24, 60
    centres = rng.normal(size=(300, d))
    data = (centres[rng.integers(0, 300, 6200)] + rng.normal(size=(6200, d))).astype(np.float32)
    if metric == "ip":
        data /= np.linalg.norm(data, axis=1, keepdims=True)
    x, queries = data[:6000], data[6000:]
    want = [set(np.argsort(ref_dist(metric, q, x), kind="stable")[:10]) for q in queries]
    flat, pq = build(metric, x, n_lists, 0), build(metric, x, n_lists, m)
    for n_probe in (4, 8, 16, n_lists):
        rf = np.mean([len(set(r) & w) / 10 for r, w in zip(_core.ivf_search(flat, queries, 10, n_probe)[1], want)])
        rp = np.mean([len(set(r) & w) / 10 for r, w in zip(_core.ivf_search(pq, queries, 10, n_probe)[1], want)])
        print(f"{metric} n_probe {n_probe}: recall IVF-Flat {rf:.4f}, pq4 {rp:.4f}")
        assert rp >= rf - 0.01, (n_probe, rf, rp)
    assert rp >= 0.995  # every list probed: IVF-Flat is exact (1.0)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_ivf_pq4_many_equal_bounds_rerank_like_the_float32_scan(metric):
    """Duplicated vectors give many candidates one lower bound (one crowded bucket of the re-rank
    order, sorted by the fallback) and a large k reaches deep into it: the answers are IVF-Flat's."""
    rng = np.random.default_rng(11)
    x = np.repeat(clustered(rng, 150, 24, centres=6), 25, axis=0)  # 3,750 rows, 25 copies each
    queries = np.concatenate([x[::400] + 0.01, clustered(rng, 8, 24, centres=6)]).astype(np.float32)
    flat = build(metric, x, 12, 0)
    pq = build(metric, x, 12, 6)
    for k in (1, 10, 137):
        fd, fr = _core.ivf_search(flat, queries, k, 12)
        pd, pr = _core.ivf_search(pq, queries, k, 12)
        np.testing.assert_allclose(pd, fd, rtol=1e-5, atol=1e-5)
        for i in range(len(queries)):  # ties between copies may come in another order: same distances
            np.testing.assert_allclose(_core.distance_batch("serial", metric, queries[i], x[pr[i]]), pd[i],
                                       rtol=1e-5, atol=1e-5)


def test_ivf_pq4_follows_adds_removes_and_retrain():
    rng = np.random.default_rng(11)
    d, metric = 24, "l2"
    x = clustered(rng, 2000, d)
    h = build(metric, x[:1500], 20, 6)
    _core.ivf_add(h, np.arange(1500, 2000), x[1500:])  # encoded as they arrive
    for r in range(0, 2000, 3):
        _core.ivf_remove(h, r)  # swap-removes move codes with their vectors
    _core.ivf_add(h, np.arange(0, 300, 3), x[0:300:3] + 0.5)  # rows back, new vectors
    live = np.array(sorted(set(range(2000)) - set(range(300, 2000, 3))))
    vecs = x.copy()
    vecs[0:300:3] += 0.5
    queries = clustered(rng, 40, d)

    def check(tag):
        # every list probed: the answer is exact search's up to the codes' error estimate. A code
        # left behind by a move would rank its row by another vector's code: recall would collapse.
        dist, rows = _core.ivf_search(h, queries, 5, 20)
        hits = 0
        for i, q in enumerate(queries):
            assert set(rows[i]) <= set(live), tag
            np.testing.assert_allclose(dist[i], ref_dist(metric, q, vecs[rows[i]]), rtol=1e-4, atol=1e-3)
            want = ref_dist(metric, q, vecs[live])
            hits += len(set(rows[i]) & set(live[np.argsort(want, kind="stable")[:5]]))
        assert hits / (5 * len(queries)) >= 0.97, tag

    check("after adds and removes")
    _core.ivf_retrain(h, 12, 9)
    assert _core.ivf_info(h)["pq4_m"] == 6 and _core.ivf_info(h)["n_lists"] == 12
    check("after retrain")
    _core.ivf_set_pq4(h, 0, 0)
    assert _core.ivf_info(h)["pq4_m"] == 0
    check("codes dropped")


def test_ivf_pq4_zero_vectors_and_errors():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x[:5] = 0  # cosine distance 1 for a zero vector: never trusted to its code
    h = build("cosine", x, 4, 4)
    dist, rows = _core.ivf_search(h, np.zeros((1, 8), np.float32), 3, 4)  # zero query: float32 path
    assert np.all(dist == 1.0)
    q = rng.normal(size=(1, 8)).astype(np.float32)
    dist, rows = _core.ivf_search(h, q, 200, 4)
    assert set(rows[0]) == set(range(200))
    assert np.all(dist[0][np.isin(rows[0], range(5))] == 1.0)
    small = _core.ivf_new(8, "l2", 2)
    _core.ivf_train(small, x[:10], 1)
    _core.ivf_add(small, np.arange(10), x[:10])
    with pytest.raises(Exception, match="at least 16"):
        _core.ivf_set_pq4(small, 4, 1)
    with pytest.raises(Exception, match="sub-quantizers"):
        _core.ivf_set_pq4(h, 9, 1)


# ---------------------------------------------------------------- collections (quantization="pq4")


@pytest.mark.parametrize("space", ["cosine", "l2"])
def test_collection_pq4_filters_reopen_and_float32_distances(tmp_path, space):
    import vectordb

    rng = np.random.default_rng(8)
    x = clustered(rng, 2500, 48)
    ids = [f"id{i}" for i in range(len(x))]
    metas = [{"even": i % 2 == 0} for i in range(len(x))]
    kw = {"metadata": {"hnsw:space": space}, "embedding_function": None, "use_ivf": True, "n_clusters": 20,
          "n_probe": 5}
    client = vectordb.PersistentClient(path=str(tmp_path / "db"))
    plain = client.create_collection("plain", **kw)
    quant = client.create_collection("quant", quantization="pq4", **kw)
    for col in (plain, quant):
        col.add(ids=ids, embeddings=x, metadatas=metas)
        col.delete(ids=ids[:50])
    assert quant.stats()["trained"] and quant.stats()["quantization"] == "pq4"
    assert quant.configuration_json["quantization"] == "pq4"
    queries = clustered(rng, 30, 48)

    def compare(col):
        hits = total = 0
        for where in (None, {"even": True}):
            a = plain.query(query_embeddings=queries, n_results=10, where=where, include=["distances", "embeddings"])
            b = col.query(query_embeddings=queries, n_results=10, where=where, include=["distances", "embeddings"])
            for i, q in enumerate(queries):
                emb = np.asarray(b["embeddings"][i], dtype=np.float32)
                # the distances returned are float32 search's own for those rows
                np.testing.assert_allclose(b["distances"][i], _core.distance_batch("serial", space, q, emb),
                                           rtol=1e-5, atol=1e-5)
                if where:
                    assert all(int(r[2:]) % 2 == 0 for r in b["ids"][i])
                hits += len(set(a["ids"][i]) & set(b["ids"][i]))
                total += len(a["ids"][i])
        return hits / total

    recall = compare(quant)
    print(f"{space}: recall against IVF-Flat at the same n_probe {recall:.3f}")
    assert recall >= 0.97
    client = vectordb.PersistentClient(path=str(tmp_path / "db"))  # reopen: the codes come back
    plain, quant = client.get_collection("plain"), client.get_collection("quant")
    assert quant.stats()["quantization"] == "pq4"
    assert compare(quant) == recall  # deterministic codes


def test_collection_pq4_below_training_threshold_is_exact(tmp_path):
    import vectordb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    client = vectordb.PersistentClient(path=str(tmp_path / "db"))
    col = client.create_collection("small", embedding_function=None, use_ivf=True, quantization="pq4")
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    q = rng.normal(size=16).astype(np.float32)
    got = col.query(query_embeddings=q[None], n_results=5, include=["distances"])
    want = np.sort(((x - q) ** 2).sum(1))[:5]
    np.testing.assert_allclose(got["distances"][0], want, rtol=1e-5)
