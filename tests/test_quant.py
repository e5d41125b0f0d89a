"""Quantized collections (quantization="sq8"): the 8-bit kernels and their error bounds against a
float64 NumPy reference on every SIMD variant, and search through codes giving exactly the float32
answer (flat: exact search; IVF: IVF-Flat at the same n_probe) on random and adversarial sets;
persistence of the codes (codes.bin) and its damage."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vectordb
from vectordb import _core
from vectordb.errors import CorruptionError, InvalidArgumentError

ISAS = [i for i in ("serial", "avx2", "avx512", "neon") if i == "serial" or i in _core.capabilities()["detected"]]
METRICS = ["l2", "ip", "cosine"]
DIMS = [1, 3, 17, 100, 384]


# ------------------------------------------------------------------------------- kernels vs float64


def _target(metric, x):
    x = np.asarray(x, dtype=np.float64)
    if metric != "cosine":
        return x
    n = np.sqrt((x * x).sum(1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / n


def _f64_distance(metric, q, x):
    q = np.asarray(q, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if metric == "l2":
        return ((x - q) ** 2).sum(1)
    if metric == "ip":
        return 1.0 - x @ q
    den = np.sqrt((q * q).sum()) * np.sqrt((x * x).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den == 0, 1.0, 1.0 - (x @ q) / den)


def _check_probe(metric, train, x, queries):
    """Every variant: codes decode within err, scan values match float64, bounds hold below the
    float32 distance of every kernel variant."""
    d = x.shape[1]
    scans: dict = {}
    for isa in ISAS:
        lo, step, codes, err, scan, lb, ready = _core.sq8_probe(isa, metric, train, x, queries)
        assert np.all(step >= 0) and np.all(np.isfinite(lo))
        xhat = lo.astype(np.float64) + codes.astype(np.float64) * step.astype(np.float64)
        tgt = _target(metric, x)
        finite = np.isfinite(err)
        resid = np.sqrt(((tgt - xhat) ** 2).sum(1))
        assert np.all(resid[finite] <= err[finite]), f"{isa}: err below the true residual"
        for qi, q in enumerate(queries):
            if not ready[qi]:
                continue
            q64 = q.astype(np.float64)
            if metric == "l2":
                # the kernel measures from q moved by the float rounding of (q - lo) / step
                want = np.sqrt(((xhat - q64) ** 2).sum(1))
                moved = 2 ** -23 * np.linalg.norm(q64 - lo)
                assert np.all(np.abs(np.sqrt(scan[qi]) - want) <= 4e-7 * (d + 8) * want + moved + 1e-30), \
                    f"{isa}: scan off the float64 reference"
            else:
                # an integer dot: weights rounded to a grid of max|w| / wmax, wmax keeping int32 exact
                v = q64 if metric == "ip" else q64 / np.linalg.norm(q64)
                w = -(v * step)
                wmax = min(32767, (2**31 - 1) // (255 * d))
                grid = np.abs(w).max() / wmax if np.abs(w).max() > 0 else 1.0
                want = (w * codes).sum(1)
                tol = 255 * d * grid / 2 + 2.0**-22 * np.abs(w * codes).sum(1) + 1e-30
                assert np.all(np.abs(scan[qi] - want) <= tol), f"{isa}: scan off the float64 reference"
                scans.setdefault(qi, scan[qi])
                assert np.array_equal(scans[qi], scan[qi]), f"{isa}: integer scan differs between variants"
            true = _f64_distance(metric, q, x)
            assert np.all(lb[qi] <= true), f"{isa}: bound above the float64 distance"
            for exact_isa in ISAS:
                f32 = _core.distance_batch(exact_isa, metric, q, x)
                bad = np.nonzero(~(lb[qi] <= f32))[0]
                assert bad.size == 0, f"{isa}/{exact_isa}: bound {lb[qi][bad[0]]} above float32 {f32[bad[0]]}"
            # Useful, not just valid: the bound is within a few quantization errors of the distance.
            ok = finite & np.isfinite(true)
            if metric != "l2" and ok.any():
                scale = 1.0 if metric == "cosine" else np.linalg.norm(q64)
                gap = true[ok] - lb[qi][ok]
                assert np.all(gap <= 3 * scale * err[ok] + 1e-3), f"{isa}: bound needlessly loose"


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("d", DIMS)
def test_kernels_and_bounds_match_float64(metric, d):
    rng = np.random.default_rng(d)
    train = rng.standard_normal((200, d)).astype(np.float32)
    # inside the ranges, outside them (clamped codes), and a few queries of each kind
    x = np.concatenate([train[:60], 3 * rng.standard_normal((20, d)).astype(np.float32)])
    queries = np.concatenate([train[:3], rng.standard_normal((3, d)).astype(np.float32) * 5])
    _check_probe(metric, train, x, queries)


@pytest.mark.parametrize("metric", METRICS)
def test_bounds_on_adversarial_data(metric):
    d = 17
    rng = np.random.default_rng(7)
    base = rng.standard_normal((50, d)).astype(np.float32)
    base[:, 3] = 1.5  # a constant dimension
    base[:, 5] = np.float32(1e-3) + rng.integers(0, 2, 50).astype(np.float32) * np.float32(1e-30)  # a tiny range
    x = np.concatenate([base, np.zeros((2, d), np.float32),  # zero vectors (cosine: always re-ranked)
                        np.full((1, d), 1e16, np.float32),  # beyond what the bounds cover
                        base[:3] + np.float32(1e-6)])  # near-duplicates
    queries = np.concatenate([base[:2], np.zeros((1, d), np.float32), np.full((1, d), 1e-20, np.float32),
                              np.full((1, d), 1e16, np.float32), base[:1] * 1e4])
    _check_probe(metric, base, x, queries)


# --------------------------------------------------------------------- exact search through codes


def _pair(metric, d, use_ivf=False, n_clusters=0):
    return [_core.Collection(None, metric, d, False, use_ivf, n_clusters, 0, quant) for quant in (None, "sq8")]


def _write_both(cols, op, ids, vecs):
    for c in cols:
        c.write(op, ids, vecs, None, None)


def _plain(res):
    """ids, float32 distances (as exact bit patterns) and per-query counts of a raw query result."""
    return res[0], np.asarray(res[4], dtype=np.float32).view(np.uint32).tolist(), res[-1]


def _query_both(cols, queries, k, filt=None, n_probe=0, one_at_a_time=False):
    if one_at_a_time:
        return [[_plain(c.query(q[None], k, filt, 8, n_probe)) for q in queries] for c in cols]
    return [_plain(c.query(queries, k, filt, 8, n_probe)) for c in cols]


@st.composite
def vector_sets(draw):
    """Random and adversarial sets: ties (grids of small integers), near-duplicates, tiny ranges,
    constant dimensions, zero vectors."""
    d = draw(st.sampled_from([1, 3, 17, 40]))
    n = draw(st.integers(1, 300))
    kind = draw(st.sampled_from(["normal", "grid", "near_dup", "tiny", "constant", "zeros"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "grid":
        x = rng.integers(-2, 3, (n, d)).astype(np.float32)
    elif kind == "near_dup":
        x = np.repeat(rng.standard_normal((n // 10 + 1, d)), 10, axis=0)[:n]
        x = (x + rng.standard_normal(x.shape) * 1e-6).astype(np.float32)
    elif kind == "tiny":
        x = (1.0 + rng.standard_normal((n, d)) * 1e-7).astype(np.float32)
    elif kind == "constant":
        x = rng.standard_normal((n, d)).astype(np.float32)
        x[:, : max(1, d // 2)] = 0.25
    elif kind == "zeros":
        x = rng.standard_normal((n, d)).astype(np.float32)
        x[rng.random(n) < 0.3] = 0
    else:
        x = rng.standard_normal((n, d)).astype(np.float32) * np.float32(rng.choice([1e-3, 1.0, 1e3]))
    nq = draw(st.integers(1, 6))
    q = np.concatenate([x[rng.integers(0, n, nq)], rng.standard_normal((nq, d)).astype(np.float32)])
    return x, q


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=vector_sets(), metric=st.sampled_from(METRICS), k=st.integers(1, 40), deletes=st.booleans())
def test_flat_sq8_is_exactly_the_float32_search(data, metric, k, deletes):
    x, q = data
    n, d = x.shape
    cols = _pair(metric, d)
    ids = [f"r{i}" for i in range(n)]
    # the first batch trains the ranges; the rest arrive later (some outside them)
    half = max(1, n // 3)
    _write_both(cols, 1, ids[:half], x[:half])
    _write_both(cols, 1, ids[half:], x[half:] * np.float32(1.5))
    if deletes and n > 2:
        _write_both(cols, 4, ids[::3], None)
        _write_both(cols, 2, ids[1:3], x[:2][:, ::-1].copy())  # upsert: new vectors for existing ids
    want, got = _query_both(cols, q, k, one_at_a_time=True)
    assert got == want
    # A batch through codes re-ranks with the one-query kernel: it answers like single queries (the
    # float32 batch path's blocked kernel may differ from those in the last bit).
    batch = _plain(cols[1].query(q, k, None, 8, 0))
    assert batch == tuple([v for w in want for v in w[part]] for part in range(3))


@pytest.mark.parametrize("metric", METRICS)
def test_flat_sq8_across_retraining_of_the_ranges(metric):
    """The collection doubles several times (the ranges are re-derived each time) and later
    batches spread wider than the first: answers stay the float32 ones."""
    rng = np.random.default_rng(3)
    d = 33
    cols = _pair(metric, d)
    for b in range(6):
        n = 50 * 2**b
        x = (rng.standard_normal((n, d)) * (b + 1)).astype(np.float32)
        _write_both(cols, 1, [f"b{b}-{i}" for i in range(n)], x)
    q = rng.standard_normal((5, d)).astype(np.float32) * 3
    want, got = _query_both(cols, q, 25, one_at_a_time=True)
    assert got == want


def _ids_per_query(res):
    ids, counts, out, at = res[0], res[-1], [], 0
    for c in counts:
        out.append(ids[at:at + c])
        at += c
    return out


def _public(tmp_path, name, **kw):
    client = vectordb.PersistentClient(str(tmp_path / name))
    return client, client.create_collection("quant", metadata={"hnsw:space": "cosine"}, **kw)


def test_public_api_filters_reopen_and_stats(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    ids = [str(i) for i in range(len(x))]
    metas = [{"even": i % 2 == 0, "i": i} for i in range(len(x))]
    c1, plain = _public(tmp_path, "plain")
    c2, quant = _public(tmp_path, "quant", quantization="sq8")
    for col in (plain, quant):
        col.add(ids=ids, embeddings=x, metadatas=metas)
        col.delete(ids=ids[:100])
    q = rng.standard_normal((4, 24)).astype(np.float32)
    for where in (None, {"even": True}, {"i": {"$lt": 400}}):
        for one in q:  # one query at a time: see test_flat_sq8_is_exactly_the_float32_search
            a = plain.query(query_embeddings=one[None], n_results=7, where=where, include=["distances"])
            b = quant.query(query_embeddings=one[None], n_results=7, where=where, include=["distances"])
            assert a == b
    st_ = quant.stats()
    assert st_["quantization"] == "sq8" and plain.stats()["quantization"] is None
    quant.checkpoint()
    gen = next(p for p in os.listdir(tmp_path / "quant" / "collections" / str(quant.id)) if p.startswith("gen-"))
    assert os.path.exists(tmp_path / "quant" / "collections" / str(quant.id) / gen / "codes.bin")
    quant.add(ids=["new"], embeddings=x[:1] * 2)  # in the log, encoded again on reopen
    before = quant.query(query_embeddings=q, n_results=7, include=["distances"])
    c2.close()
    c2 = vectordb.PersistentClient(str(tmp_path / "quant"))
    quant = c2.get_collection("quant")
    assert quant.configuration["quantization"] == "sq8"
    assert quant.query(query_embeddings=q, n_results=7, include=["distances"]) == before
    c1.close()
    c2.close()


@pytest.mark.parametrize("args", [{"quantization": "pq"}, {"quantization": 8}, {"quantization": "SQ8"},
                                  {"configuration": {"quantization": "int4"}},
                                  {"configuration": {"quantization": "sq8"}, "quantization": None}])
def test_bad_quantization_is_refused_before_anything_is_written(tmp_path, args):
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    if args.get("configuration", {}).get("quantization") == "sq8":
        # Given in the configuration only: taken from there (the keyword left at its default).
        col = client.create_collection("given", embedding_function=None, **args)
        assert col.configuration_json["quantization"] == "sq8"
        client.close()
        return
    with pytest.raises(InvalidArgumentError, match="quantization must be None, 'sq8' or 'pq4'"):
        client.create_collection("bad", embedding_function=None, **args)
    assert client.list_collections() == []
    assert not os.path.exists(tmp_path / "db" / "collections") or os.listdir(tmp_path / "db" / "collections") == []
    client.close()


def test_quantization_is_kept_and_shown_with_the_other_keys(tmp_path):
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.create_collection("kept", embedding_function=None, quantization="sq8", use_ivf=True, n_probe=3)
    plain = client.create_collection("plain", embedding_function=None)
    for cfg in (col.configuration, col.configuration_json):
        assert {k: cfg[k] for k in ("use_ivf", "n_probe", "quantization")} == {
            "use_ivf": True, "n_probe": 3, "quantization": "sq8"}
    assert plain.configuration_json["quantization"] is None
    with pytest.raises(InvalidArgumentError):
        col.modify(configuration={"quantization": None})  # codes are chosen at creation
    client.close()
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    assert client.get_collection("kept").configuration_json["quantization"] == "sq8"
    assert client.get_collection("kept").stats()["quantization"] == "sq8"
    assert client.get_collection("plain").configuration_json["quantization"] is None
    client.close()


def _damage(path, offset_from_end=None):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        i = len(data) // 2 if offset_from_end is None else len(data) - offset_from_end
        data[i] ^= 0x40
        f.seek(0)
        f.write(data)


def _closed_snapshot_file(tmp_path, client, col, name):
    """Closes client; the path of file name in col's current snapshot generation."""
    cdir = tmp_path / "db" / "collections" / str(col.id)
    client.close()
    return cdir / next(p for p in os.listdir(cdir) if p.startswith("gen-")) / name


@pytest.mark.parametrize("where", ["header", "truncated", "error bounds", "crc", "no crc"])
def test_damaged_code_file_is_an_error_naming_it_at_open(tmp_path, where):
    """What open checks: codes.bin's header, length, ranges and error bounds, and all of codes.crc."""
    client, col = _public(tmp_path, "db", quantization="sq8")
    x = np.random.default_rng(1).standard_normal((500, 8)).astype(np.float32)
    col.add(ids=[str(i) for i in range(500)], embeddings=x)
    col.checkpoint()
    path = _closed_snapshot_file(tmp_path, client, col, "codes.bin")
    name = "codes.bin"
    if where == "header":
        with open(path, "r+b") as f:
            f.seek(20)
            f.write(b"\x01")
    elif where == "truncated":
        os.truncate(path, os.path.getsize(path) - 3)
    elif where == "error bounds":
        _damage(path, offset_from_end=10)
    elif where == "crc":
        name = "codes.crc"
        _damage(path.with_name(name), offset_from_end=2)
    else:
        name = "codes.crc"
        os.remove(path.with_name(name))
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    with pytest.raises(CorruptionError, match=name):
        client.get_collection("quant").count()
    client.close()


def _sorted_blobs(n, d, centres, seed):
    """Well separated blobs, each one's rows contiguous: a code page holds one blob's rows."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)) * 20
    which = np.sort(rng.integers(0, centres, n))
    return (c[which] + rng.standard_normal((n, d))).astype(np.float32), which


@pytest.mark.parametrize("use_ivf", [False, True])
def test_damaged_code_page_is_found_on_first_use_naming_codes_bin(tmp_path, use_ivf):
    """Open checks no code page: a damaged one is an error naming codes.bin when a search first scans
    it (a flat search scans them all; an IVF search only its probed lists' rows, so a query elsewhere
    is answered), and `verify` (what `vectordb check` runs) finds it without a query."""
    d, n = 16, 20000  # 320 KB of codes: 79 pages of 4 KiB (256 rows each)
    x, blob = _sorted_blobs(n, d, 8, 3)
    kw = {"use_ivf": True, "n_clusters": 8} if use_ivf else {}
    client, col = _public(tmp_path, "db", quantization="sq8", **kw)
    col.add(ids=[str(i) for i in range(n)], embeddings=x)
    col.checkpoint()
    path = _closed_snapshot_file(tmp_path, client, col, "codes.bin")
    with open(path.with_name("codes.crc"), "rb") as f:
        assert struct.unpack_from("<I", f.read(16), 12)[0] == 4096
    victim = int(np.flatnonzero(blob == blob[-1])[len(np.flatnonzero(blob == blob[-1])) // 2])  # mid last blob
    with open(path, "r+b") as f:
        f.seek(48 + 8 * d + victim * d + 5)
        b = f.read(1)[0]
        f.seek(48 + 8 * d + victim * d + 5)
        f.write(bytes([b ^ 0x08]))
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("quant")
    assert col.count() == n  # open checks no code page
    q = {"n_probe": 1} if use_ivf else {}
    if use_ivf:  # a query in the first blob probes its list only: the damaged page is never scanned
        got = col.query(query_embeddings=x[:1], n_results=3, include=["distances"], **q)
        assert got["ids"][0][0] == "0"
    with pytest.raises(CorruptionError, match="codes.bin"):
        col.query(query_embeddings=x[victim:victim + 1], n_results=3, **q)
    with pytest.raises(CorruptionError, match="codes.bin"):  # found again, not remembered as checked
        col.query(query_embeddings=x[victim:victim + 1], n_results=3, **q)
    with pytest.raises(CorruptionError, match="codes.bin"):  # a write never changes unchecked codes
        col.update(ids=["1"], embeddings=x[2:3])
    client.close()
    cdir = path.parent.parent
    engine = _core.Collection(str(cdir), "cosine", d, False, use_ivf, 8 if use_ivf else 0, 0, "sq8")
    with pytest.raises(CorruptionError, match="codes.bin"):
        engine.verify()
    engine.close()


def _codes_as_version_1(path):
    """Rewrites codes.bin as version 1 (one checksum over its whole payload, no codes.crc)."""
    from test_fuzz_files import crc32c  # noqa: PLC0415

    b = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", b, 8)[0] == 2
    struct.pack_into("<II", b, 8, 1, struct.unpack_from("<I", b, 12)[0])
    struct.pack_into("<I", b, 40, crc32c(bytes(b[48:])))
    struct.pack_into("<I", b, 44, crc32c(bytes(b[:44])))
    path.write_bytes(bytes(b))
    os.remove(path.with_name("codes.crc"))


@pytest.mark.parametrize("damaged", [False, True])
def test_code_file_of_version_1_is_checked_whole_and_upgraded_at_checkpoint(tmp_path, damaged):
    client, col = _public(tmp_path, "db", quantization="sq8")
    x = np.random.default_rng(6).standard_normal((3000, 12)).astype(np.float32)
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    col.checkpoint()
    want = col.query(query_embeddings=x[:4], n_results=5, include=["distances"])
    path = _closed_snapshot_file(tmp_path, client, col, "codes.bin")
    _codes_as_version_1(path)
    if damaged:
        _damage(path)
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    if damaged:  # no page checksums: the whole file is checked at open
        with pytest.raises(CorruptionError, match="codes.bin"):
            client.get_collection("quant").count()
        client.close()
        return
    col = client.get_collection("quant")
    assert col.query(query_embeddings=x[:4], n_results=5, include=["distances"]) == want
    col.add(ids=["new"], embeddings=-x[:1])
    col.checkpoint()
    path = _closed_snapshot_file(tmp_path, client, col, "codes.bin")
    assert struct.unpack_from("<I", path.read_bytes(), 8)[0] == 2 and path.with_name("codes.crc").exists()
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("quant")
    assert col.count() == len(x) + 1
    assert col.query(query_embeddings=x[:4], n_results=5, include=["distances"]) == want
    client.close()


@pytest.mark.parametrize("quantization", [None, "sq8"])
def test_damaged_vector_chunk_is_found_on_first_use_naming_the_file(tmp_path, quantization):
    """Open maps vectors.bin and checks its header only; a damaged data chunk is an error naming the
    file when a search or read first touches it (a quantized search re-ranks only a few rows, so it
    reads only their chunks), and `verify` (what `vectordb check` runs) finds it without a query."""
    client, col = _public(tmp_path, "db", quantization=quantization)
    d = 16
    x = np.random.default_rng(4).standard_normal((20000, d)).astype(np.float32)  # 1.3 MB: 20 chunks
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    col.checkpoint()
    cdir = tmp_path / "db" / "collections" / str(col.id)
    client.close()
    gen = next(p for p in os.listdir(cdir) if p.startswith("gen-"))
    # With codes, rows are read one by one to re-rank: a 4 KiB page checked (and paged in) per row.
    with open(cdir / gen / "vectors.crc", "rb") as f:
        assert struct.unpack_from("<I", f.read(16), 12)[0] == (4096 if quantization else 65536)
    victim = 15000  # its chunk holds rows 14336..15359 (64 KiB) or 14976..15039 (4 KiB)
    with open(cdir / gen / "vectors.bin", "r+b") as f:
        f.seek(64 + victim * d * 4 + 3)
        b = f.read(1)[0]
        f.seek(64 + victim * d * 4 + 3)
        f.write(bytes([b ^ 0x10]))
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("quant")
    assert col.count() == len(x)  # open checks no vector page, so the damage is not found yet
    if quantization:
        # Far from the damage: answered exactly, the damaged chunk never read.
        got = col.query(query_embeddings=x[:1], n_results=3, include=["distances"])
        assert got["ids"][0][0] == "0"
    with pytest.raises(CorruptionError, match="vectors.bin"):
        col.query(query_embeddings=x[victim:victim + 1], n_results=3)
    if quantization:
        # A zero query has no cosine code scan: the float32 scan it falls back to checks every chunk.
        with pytest.raises(CorruptionError, match="vectors.bin"):
            col.query(query_embeddings=np.zeros((1, d), dtype=np.float32), n_results=3)
    with pytest.raises(CorruptionError, match="vectors.bin"):
        col.get(ids=[str(victim)], include=["embeddings"])
    assert col.get(ids=[str(victim)], include=["metadatas"])["ids"] == [str(victim)]
    client.close()
    engine = _core.Collection(str(cdir), "cosine", d, False, False, 0, 0, quantization)
    with pytest.raises(CorruptionError, match="vectors.bin"):
        engine.verify()
    engine.close()


def test_missing_code_file_is_rebuilt_from_the_vectors(tmp_path):
    client, col = _public(tmp_path, "db", quantization="sq8")
    x = np.random.default_rng(2).standard_normal((400, 8)).astype(np.float32)
    col.add(ids=[str(i) for i in range(400)], embeddings=x)
    col.checkpoint()
    want = col.query(query_embeddings=x[:3], n_results=5, include=["distances"])
    cdir = tmp_path / "db" / "collections" / str(col.id)
    client.close()
    gen = next(p for p in os.listdir(cdir) if p.startswith("gen-"))
    os.remove(cdir / gen / "codes.bin")
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    assert client.get_collection("quant").query(query_embeddings=x[:3], n_results=5, include=["distances"]) == want
    client.close()


# ------------------------------------------------------------------------------------------- IVF


def _blobs(n, d, centres, seed):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)) * 3
    return (c[rng.integers(0, centres, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("metric", METRICS)
def test_ivf_sq8_answers_like_ivf_flat_and_reports_recall(metric):
    d, n = 48, 6000
    x = _blobs(n, d, 40, 11)
    q = _blobs(40, d, 40, 12)
    cols = _pair(metric, d, use_ivf=True, n_clusters=40)
    ids = [f"r{i}" for i in range(n)]
    _write_both(cols, 1, ids[:3000], x[:3000])
    _write_both(cols, 1, ids[3000:], x[3000:])  # after training: adds go into the lists
    _write_both(cols, 4, ids[::7], None)
    assert all(c.stats()["index"] == "ivf" for c in cols)
    for n_probe in (1, 4, 40):
        want, got = _query_both(cols, q, 10, n_probe=n_probe, one_at_a_time=True)
        assert got == want
    filt = None
    # recall of the quantized IVF against exact float32 search, reported, and exact at n_probe = all
    exact = _core.Collection(None, metric, d, False, False, 0, 0, None)
    live = [i for i in range(n) if i % 7]
    exact.write(1, [ids[i] for i in live], x[live], None, None)
    truth = _ids_per_query(exact.query(q, 10, filt, 8, 0))
    got = _ids_per_query(cols[1].query(q, 10, filt, 8, 0))
    hits = sum(len(set(a) & set(b)) for a, b in zip(truth, got))
    print(f"ivf sq8 {metric}: recall@10 at the default n_probe = {hits / (10 * len(q)):.3f}")
    assert hits >= 0.9 * 10 * len(q)
    assert _ids_per_query(cols[1].query(q, 10, filt, 8, 40)) == truth


@pytest.mark.parametrize("quantization", [None, "sq8", "pq4"])
def test_ivf_vectors_are_mapped_and_a_damaged_chunk_is_found_on_first_use(tmp_path, quantization):
    """An IVF collection's snapshot keeps its vectors in list order in ivfvec.bin, mapped at open and
    checked per 64 KiB chunk on first use, as vectors.bin is: open reads no vector data, a search,
    a read or a write touching the damaged chunk is an error naming the file, `verify` finds it."""
    client, col = _public(tmp_path, "db", quantization=quantization, use_ivf=True)
    d = 16
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((40, d)) * 4)[rng.integers(0, 40, 20000)].astype(np.float32)
    x += rng.standard_normal(x.shape).astype(np.float32)
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    col.checkpoint()
    cdir = tmp_path / "db" / "collections" / str(col.id)
    client.close()
    gen = next(p for p in os.listdir(cdir) if p.startswith("gen-"))
    assert not os.path.exists(cdir / gen / "vectors.bin")
    vec = cdir / gen / "ivfvec.bin"
    pos = 64 + 7 * 65536 + 100  # the eighth chunk's data
    with open(vec, "r+b") as f:
        f.seek(pos - pos % (4 * d))
        row = np.frombuffer(f.read(4 * d), dtype=np.float32)
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ 0x10]))
    victim = int(np.flatnonzero((x == row).all(axis=1))[0])
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("quant")
    assert col.count() == len(x)  # open checks no vector page, so the damage is not found yet
    with pytest.raises(CorruptionError, match="ivfvec.bin"):
        col.query(query_embeddings=x[victim:victim + 1], n_results=3)
    with pytest.raises(CorruptionError, match="ivfvec.bin"):
        col.get(ids=[str(victim)], include=["embeddings"])
    with pytest.raises(CorruptionError, match="ivfvec.bin"):
        col.upsert(ids=[str(victim)], embeddings=x[:1])
    assert col.get(ids=[str(victim)], include=["metadatas"])["ids"] == [str(victim)]
    client.close()
    engine = _core.Collection(str(cdir), "cosine", d, False, True, 0, 0, quantization)
    with pytest.raises(CorruptionError, match="ivfvec.bin"):
        engine.verify()
    engine.close()


@pytest.mark.parametrize("codes", ["kept", "missing"])
def test_ivf_pq4_reopen_reads_codes_not_vectors(tmp_path, codes):
    """Reopening a pq4 collection takes its codes from ivfpq4.bin and touches no vector page, so a
    damaged ivfvec.bin is only found by what reads vectors (a re-rank); without the code file the codes
    are made again from every vector at open, which finds the damage there."""
    client, col = _public(tmp_path, "db", quantization="pq4", use_ivf=True)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((30, 24)) * 4)[rng.integers(0, 30, 6000)].astype(np.float32)
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    col.checkpoint()
    vec = _closed_snapshot_file(tmp_path, client, col, "ivfvec.bin")
    if codes == "missing":
        os.remove(vec.parent / "ivfpq4.bin")
    with open(vec, "r+b") as f:  # one flipped byte in every 4 KiB page of vector data
        for pos in range(64 + 100, os.path.getsize(vec), 4096):
            f.seek(pos)
            b = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([b ^ 0x10]))
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    if codes == "missing":
        with pytest.raises(CorruptionError, match="ivfvec.bin"):
            client.get_collection("quant").count()
    else:
        col = client.get_collection("quant")
        assert col.count() == len(x) and col.stats()["trained"]
        assert col.get(ids=["7"], include=["metadatas"])["ids"] == ["7"]
        with pytest.raises(CorruptionError, match="ivfvec.bin"):
            col.query(query_embeddings=x[:1], n_results=3)
    client.close()


@pytest.mark.parametrize("damage", ["none", "middle", "header", "truncated", "crc", "no crc", "missing"])
def test_ivf_pq4_codes_are_written_with_the_index_and_read_back(tmp_path, damage):
    """A checkpoint writes the pq4 codes as they are (ivfpq4.bin, with ivfpq4.crc: a checksum per 4 KiB
    page): reopening maps them and answers the same (that it reads them rather than encoding again is
    the test above). Open checks the header, tables and sizes and all of ivfpq4.crc; a list's pages
    are checked when first scanned, so damage there is an error naming the file at the first query
    that probes it (and in verify). A missing code file (a generation written before the file
    existed) has its codes made again from the vectors."""
    client, col = _public(tmp_path, "db", quantization="pq4", use_ivf=True)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((30, 24)) * 4)[rng.integers(0, 30, 6000)].astype(np.float32)
    x += rng.standard_normal(x.shape).astype(np.float32)
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    col.checkpoint()
    col.add(ids=["late"], embeddings=x[:1] * 2)  # encoded on add, kept in the next file as is
    col.checkpoint()
    want = col.query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=3)
    path = _closed_snapshot_file(tmp_path, client, col, "ivfpq4.bin")
    assert struct.unpack_from("<I", path.read_bytes(), 8)[0] == 3
    if damage == "middle":
        _damage(path)
    elif damage == "header":
        _damage(path, offset_from_end=os.path.getsize(path) - 100)  # the eps table
    elif damage == "truncated":
        os.truncate(path, os.path.getsize(path) - 3)
    elif damage == "crc":
        _damage(path.with_name("ivfpq4.crc"), offset_from_end=2)
    elif damage == "no crc":
        os.remove(path.with_name("ivfpq4.crc"))
    elif damage == "missing":
        os.remove(path)
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    if damage in ("header", "truncated", "no crc"):
        with pytest.raises(CorruptionError, match="ivfpq4.bin"):
            client.get_collection("quant").count()
    elif damage == "crc":
        with pytest.raises(CorruptionError, match="ivfpq4.crc"):
            client.get_collection("quant").count()
    elif damage == "middle":
        col = client.get_collection("quant")
        assert col.count() == len(x) + 1
        with pytest.raises(CorruptionError, match="ivfpq4.bin"):  # every list probed
            col.query(query_embeddings=x[:20], n_results=5, n_probe=col.stats()["n_clusters"] - 1)
        client.close()
        cdir = tmp_path / "db" / "collections" / str(col.id)
        engine = _core.Collection(str(cdir), "cosine", 24, False, True, 0, 0, "pq4")
        with pytest.raises(CorruptionError, match="ivfpq4.bin"):
            engine.verify()
        engine.close()
    else:
        got = client.get_collection("quant").query(query_embeddings=x[:20], n_results=5, include=["distances"],
                                                   n_probe=3)
        if damage == "none":
            assert got == want
        else:  # codes trained again: the same float32 distances for the rows both found
            assert got["ids"][0][0] == want["ids"][0][0]
    client.close()


def test_mapped_pq4_codes_take_writes_like_codes_in_memory(tmp_path):
    """Open maps ivfpq4.bin's lists (version 3) and copies a list out only when it first changes:
    deletes, updates and adds on the mapped codes answer exactly as the same writes on codes read
    into memory (a version 2 file), before and after a checkpoint, and the mapped file never changes."""
    import shutil  # noqa: PLC0415

    from test_format_upgrade import _pq4_v2  # noqa: PLC0415

    client, col = _public(tmp_path, "a", quantization="pq4", use_ivf=True)
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((30, 24)) * 4)[rng.integers(0, 30, 4000)].astype(np.float32)
    x += rng.standard_normal(x.shape).astype(np.float32)
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    col.checkpoint()
    client.close()
    cdir = tmp_path / "a" / "collections" / str(col.id)
    path = cdir / next(p for p in os.listdir(cdir) if p.startswith("gen-")) / "ivfpq4.bin"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _pq4_v2(str(path.parent).replace(str(tmp_path / "a"), str(tmp_path / "b")))
    before = path.read_bytes()
    answers = []
    for name in ("a", "b"):
        client = vectordb.PersistentClient(str(tmp_path / name))
        col = client.get_collection("quant")
        col.delete(ids=[str(i) for i in range(0, 4000, 7)])
        col.update(ids=[str(i) for i in range(1, 400, 5)], embeddings=x[1:400:5][::-1].copy())
        col.add(ids=["new%d" % i for i in range(50)], embeddings=x[:50] + 0.5)
        got = [col.query(query_embeddings=x[:30], n_results=6, include=["distances"], n_probe=9)]
        if name == "a":
            assert path.read_bytes() == before
        col.checkpoint()
        got.append(col.query(query_embeddings=x[:30], n_results=6, include=["distances"], n_probe=9))
        client.close()
        client = vectordb.PersistentClient(str(tmp_path / name))
        got.append(client.get_collection("quant").query(query_embeddings=x[:30], n_results=6, include=["distances"],
                                                         n_probe=9))
        client.close()
        answers.append(got)
    assert answers[0] == answers[1]
    assert answers[0][0] == answers[0][1] == answers[0][2]


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the process's mappings")
def test_checkpoint_maps_the_pq4_codes_it_wrote(tmp_path):
    """After a checkpoint the lists' codes point into the ivfpq4.bin it wrote, as after a reopen (the
    copies in memory are freed), and the previous generation's file is no longer held open; answers
    stay those of a reopen."""
    client, col = _public(tmp_path, "db", quantization="pq4", use_ivf=True)
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((30, 24)) * 4)[rng.integers(0, 30, 3000)].astype(np.float32)
    col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
    cdir = tmp_path / "db" / "collections" / str(col.id)
    for step in range(2):
        col.delete(ids=[str(step)])
        col.checkpoint()
        (gen,) = [p for p in os.listdir(cdir) if p.startswith("gen-")]
        with open("/proc/self/maps") as f:
            mapped = [line.split(maxsplit=5)[-1].strip() for line in f if "ivfpq4.bin" in line]
        assert mapped and all(m == str(cdir / gen / "ivfpq4.bin") for m in mapped), mapped
    want = col.query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=9)
    client.close()
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    got = client.get_collection("quant").query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=9)
    assert got == want
    client.close()


@pytest.mark.parametrize("use_ivf", [False, True])
def test_mapped_codes_take_writes_and_never_change_the_file(tmp_path, use_ivf):
    """Open maps codes.bin (pages checked on first use, copy-on-write): in-place updates, deletes, appends that grow
    the table and the compaction of a checkpoint work on the mapped codes, answers stay exactly the
    float32 ones, and the file itself never changes (only a checkpoint writes a new one)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4000, 20)).astype(np.float32)
    ids = [str(i) for i in range(len(x))]
    kw = {"use_ivf": True, "n_clusters": 8} if use_ivf else {}
    c1, plain = _public(tmp_path, "plain", **kw)
    c2, quant = _public(tmp_path, "db", quantization="sq8", **kw)
    for col in (plain, quant):
        col.add(ids=ids, embeddings=x)
        col.checkpoint()
    c1.close()
    path = _closed_snapshot_file(tmp_path, c2, quant, "codes.bin")
    before = path.read_bytes()
    cols = []
    for name in ("plain", "db"):
        client = vectordb.PersistentClient(str(tmp_path / name))
        cols.append((client, client.get_collection("quant")))
    q = rng.standard_normal((5, 20)).astype(np.float32)
    new = rng.standard_normal((700, 20)).astype(np.float32)

    def same():  # one query at a time (a float32 batch's blocked kernel may differ in the last bit)
        for v in q:
            a, b = (col.query(query_embeddings=v[None], n_results=10, include=["distances"]) for _, col in cols)
            assert a["ids"] == b["ids"]
            np.testing.assert_array_equal(a["distances"], b["distances"])

    same()
    for _, col in cols:
        col.update(ids=ids[:50], embeddings=x[:50] * -1)  # in place, on mapped pages
        col.delete(ids=ids[100:300])
    same()
    assert path.read_bytes() == before
    for _, col in cols:
        col.add(ids=[f"n{i}" for i in range(len(new))], embeddings=new)  # grows the table
    same()
    assert path.read_bytes() == before
    for client, col in cols:
        col.checkpoint()
        client.close()
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    cols[1] = (client, client.get_collection("quant"))
    client = vectordb.PersistentClient(str(tmp_path / "plain"))
    cols[0] = (client, client.get_collection("quant"))
    same()
    for client, _ in cols:
        client.close()
