"""A database written before vectors.crc existed (tests/fixtures/format1.tar.gz, made by
tests/fixtures/make_format1.py with that version) opens, answers as it did, verifies its vector data
whole at open (it has no per-chunk checksums), and gains vectors.crc at its first checkpoint. An IVF
index written before ivfvec.bin existed (ivf.bin version 1, each list's vectors inline) is read whole
and written in the new layout at the next checkpoint; pq4 codes written with one error bound
(ivfpq4.bin versions 1 and 2) open and are written as version 3 at the next checkpoint."""
from __future__ import annotations

import glob
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import vectordb
from vectordb.errors import CorruptionError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_format1 import data  # noqa: E402

NAMES = ["flat", "quant", "ivf"]


def _unpack(tmp_path) -> str:
    with tarfile.open(FIXTURES / "format1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return str(tmp_path / "db")


def _expect(name):
    ids, vecs = data(name)
    return ids[5:], vecs[5:]


def _check(col, name):
    ids, vecs = _expect(name)
    got = col.get(include=["embeddings", "metadatas", "documents"])
    order = np.argsort(got["ids"])
    want = np.argsort(ids)
    assert [got["ids"][i] for i in order] == [ids[i] for i in want]
    assert np.array_equal(np.asarray(got["embeddings"])[order], vecs[want])
    assert got["metadatas"][order[0]] == {"i": int(ids[want[0]].split("-")[1])}
    exact = vectordb.EphemeralClient().create_collection(
        f"exact-{name}", embedding_function=None, metadata=col.metadata)
    exact.add(ids=ids, embeddings=vecs)
    q = np.random.default_rng(9).standard_normal((4, vecs.shape[1])).astype(np.float32)
    kw = {"n_probe": 4} if name == "ivf" else {}
    a = col.query(query_embeddings=q, n_results=6, include=["distances"], **kw)
    b = exact.query(query_embeddings=q, n_results=6, include=["distances"])
    assert a["ids"] == b["ids"] and a["distances"] == b["distances"]


def test_previous_format_opens_answers_and_is_upgraded_at_checkpoint(tmp_path):
    path = _unpack(tmp_path)
    assert not glob.glob(os.path.join(path, "collections", "*", "gen-*", "vectors.crc"))
    client = vectordb.PersistentClient(path)
    for name in NAMES:
        col = client.get_collection(name, embedding_function=None)
        assert col.count() == len(_expect(name)[0])
        _check(col, name)
        col.checkpoint()
    assert client.get_collection("quant", embedding_function=None).configuration_json["quantization"] == "sq8"
    client.close()
    assert len(glob.glob(os.path.join(path, "collections", "*", "gen-*", "vectors.crc"))) >= 2
    client = vectordb.PersistentClient(path)
    for name in NAMES:
        _check(client.get_collection(name, embedding_function=None), name)
    client.close()


def test_previous_format_damage_is_found_at_open(tmp_path):
    """Without per-chunk checksums the whole data checksum is verified at open, as before."""
    path = _unpack(tmp_path)
    client = vectordb.PersistentClient(path)
    cid = client.get_collection("flat", embedding_function=None).id
    client.close()
    vec = glob.glob(os.path.join(path, "collections", str(cid), "gen-*", "vectors.bin"))[0]
    with open(vec, "r+b") as f:
        f.seek(200)
        b = f.read(1)[0]
        f.seek(200)
        f.write(bytes([b ^ 1]))
    client = vectordb.PersistentClient(path)
    with pytest.raises(CorruptionError, match="vectors.bin"):
        client.get_collection("flat", embedding_function=None).count()
    client.close()


def _ivf_v1(gen: str) -> None:
    """Rewrites gen's ivf.bin + ivfvec.bin as the version-1 ivf.bin that held the vectors inline."""
    from test_fuzz_files import crc32c  # noqa: PLC0415

    with open(os.path.join(gen, "ivf.bin"), "rb") as f:
        v2 = f.read()
    with open(os.path.join(gen, "ivfvec.bin"), "rb") as f:
        vecs = f.read()[64:]
    d, n_lists = int.from_bytes(v2[16:24], "little"), int.from_bytes(v2[24:32], "little")
    out = bytearray(v2[:88 + n_lists * d * 4])
    pos, vpos = len(out), 0
    for _ in range(n_lists):
        n = int.from_bytes(v2[pos:pos + 8], "little")
        out += v2[pos:pos + 8 + 8 * n] + vecs[vpos:vpos + 4 * d * n]
        pos, vpos = pos + 8 + 8 * n, vpos + 4 * d * n
    assert pos == len(v2) - 4 and vpos == len(vecs)
    out[8:12] = (1).to_bytes(4, "little")
    out[40:48] = (len(out) - 88).to_bytes(8, "little")
    out += crc32c(bytes(out)).to_bytes(4, "little")
    with open(os.path.join(gen, "ivf.bin"), "wb") as f:
        f.write(out)
    os.remove(os.path.join(gen, "ivfvec.bin"))
    os.remove(os.path.join(gen, "ivfvec.crc"))


def _blobs(seed: int, centres: int, d: int, n: int, scale: float) -> np.ndarray:
    """n float32 vectors around `centres` Gaussian centres (spread `scale`), unit noise."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((centres, d)) * scale)[rng.integers(0, centres, n)].astype(np.float32)
    x += rng.standard_normal(x.shape).astype(np.float32)
    return x


def _checkpointed_ivf(tmp_path, name: str, x: np.ndarray, quantization):
    """An IVF collection holding x (ids r0, r1, ...) after a checkpoint: (client, col, ids, its directory)."""
    ids = [f"r{i}" for i in range(len(x))]
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.create_collection(name, embedding_function=None, use_ivf=True, quantization=quantization)
    col.add(ids=ids, embeddings=x)
    col.checkpoint()
    return client, col, ids, str(tmp_path / "db" / "collections" / str(col.id))


@pytest.mark.parametrize("quantization", [None, "pq4"])
def test_ivf_index_with_inline_vectors_opens_and_is_upgraded_at_checkpoint(tmp_path, quantization):
    x = _blobs(3, 30, 12, 3000, 4)
    client, col, ids, cdir = _checkpointed_ivf(tmp_path, "ivfc", x, quantization)
    want = col.query(query_embeddings=x[:5], n_results=4, include=["distances"], n_probe=4)
    client.close()
    (gen,) = glob.glob(os.path.join(cdir, "gen-*"))
    _ivf_v1(gen)
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("ivfc", embedding_function=None)
    assert col.query(query_embeddings=x[:5], n_results=4, include=["distances"], n_probe=4) == want
    got = col.get(ids=ids[::7], include=["embeddings"])
    assert np.array_equal(np.asarray(got["embeddings"]), x[::7])
    col.add(ids=["new"], embeddings=x[:1] + 1)
    col.checkpoint()
    client.close()
    (gen,) = glob.glob(os.path.join(cdir, "gen-*"))
    assert os.path.exists(os.path.join(gen, "ivfvec.crc"))
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("ivfc", embedding_function=None)
    assert col.count() == len(x) + 1
    assert col.query(query_embeddings=x[:5], n_results=4, include=["distances"], n_probe=4) == want
    client.close()


def _pq4_v2(gen: str) -> None:
    """Rewrites gen's ivfpq4.bin (version 3: lists in 64-byte aligned segments after a list table,
    ivfpq4.crc beside it) as version 2 (each list's n and bound inline before its codes, one CRC-32C
    at the end, no ivfpq4.crc)."""
    from test_fuzz_files import crc32c  # noqa: PLC0415

    path = os.path.join(gen, "ivfpq4.bin")
    with open(path, "rb") as f:
        v3 = f.read()
    assert int.from_bytes(v3[8:12], "little") == 3
    bb = int.from_bytes(v3[12:16], "little")
    d, n_lists = int.from_bytes(v3[16:24], "little"), int.from_bytes(v3[32:40], "little")
    head = 72 + 4 + 4 * n_lists + 64 * d
    at = -(-(head + 16 * n_lists) // 64) * 64
    out = bytearray(v3[:head])
    for li in range(n_lists):
        entry = v3[head + 16 * li:head + 16 * li + 16]
        n = int.from_bytes(entry[:8], "little")
        used = -(-n // 32) * bb + 8 * n
        out += entry + v3[at:at + used]
        at += -(-used // 64) * 64
    assert at == len(v3)
    out[8:12] = (2).to_bytes(4, "little")
    out[64:72] = (len(out) - 72).to_bytes(8, "little")
    out += crc32c(bytes(out)).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(out)
    os.remove(os.path.join(gen, "ivfpq4.crc"))


def _pq4_v1(gen: str) -> float:
    """Rewrites gen's ivfpq4.bin as version 1 (one eps, no bounds by n_probe); returns its eps."""
    from test_fuzz_files import crc32c  # noqa: PLC0415

    _pq4_v2(gen)
    path = os.path.join(gen, "ivfpq4.bin")
    with open(path, "rb") as f:
        v2 = f.read()
    assert int.from_bytes(v2[8:12], "little") == 2
    n_lists = int.from_bytes(v2[32:40], "little")
    table = 4 + 4 * n_lists
    out = bytearray(v2[:72] + v2[72 + table:-4])
    out[8:12] = (1).to_bytes(4, "little")
    out[60:64] = bytes(4)
    out[64:72] = (int.from_bytes(v2[64:72], "little") - table).to_bytes(8, "little")
    out += crc32c(bytes(out)).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(out)
    return float(np.frombuffer(v2[56:60], dtype="<f4")[0])


def test_pq4_codes_of_version_2_are_copied_at_open_and_upgraded_at_checkpoint(tmp_path):
    """ivfpq4.bin version 2 (lists inline, one CRC, no ivfpq4.crc) opens with the same answers, takes
    writes, and the next checkpoint writes version 3 with its page checksums, which opens the same."""
    x = _blobs(8, 40, 16, 3000, 3)
    client, col, ids, cdir = _checkpointed_ivf(tmp_path, "pqc", x, "pq4")
    want = col.query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=7)
    client.close()
    (gen,) = glob.glob(os.path.join(cdir, "gen-*"))
    _pq4_v2(gen)
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("pqc", embedding_function=None)
    assert col.query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=7) == want
    col.delete(ids=["r3"])
    col.checkpoint()
    want = col.query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=7)
    client.close()
    (gen,) = glob.glob(os.path.join(cdir, "gen-*"))
    with open(os.path.join(gen, "ivfpq4.bin"), "rb") as f:
        assert int.from_bytes(f.read(12)[8:12], "little") == 3
    assert os.path.exists(os.path.join(gen, "ivfpq4.crc"))
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("pqc", embedding_function=None)
    assert col.count() == len(x) - 1
    assert col.query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=7) == want
    client.close()


def test_pq4_codes_of_version_1_open_with_one_bound_and_are_upgraded_at_checkpoint(tmp_path):
    """ivfpq4.bin version 1 kept one error bound (eps): it opens, searches with eps as every bound
    (returned distances exact float32), and the next checkpoint writes version 2."""
    x = _blobs(5, 40, 16, 3000, 3)
    client, col, ids, cdir = _checkpointed_ivf(tmp_path, "pqc", x, "pq4")
    client.close()
    (gen,) = glob.glob(os.path.join(cdir, "gen-*"))
    assert _pq4_v1(gen) > 0
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    col = client.get_collection("pqc", embedding_function=None)
    res = col.query(query_embeddings=x[:20], n_results=5, include=["distances"], n_probe=55)
    index = {s: i for i, s in enumerate(ids)}
    for qi in range(20):
        rows = x[[index[s] for s in res["ids"][qi]]].astype(np.float64)
        want = ((rows - x[qi].astype(np.float64)) ** 2).sum(1)
        np.testing.assert_allclose(res["distances"][qi], want, rtol=1e-4, atol=1e-4)
        assert res["ids"][qi][0] == ids[qi] or res["distances"][qi][0] == 0.0
    col.add(ids=["new"], embeddings=x[:1] + 1)
    col.checkpoint()
    client.close()
    (gen,) = glob.glob(os.path.join(cdir, "gen-*"))
    with open(os.path.join(gen, "ivfpq4.bin"), "rb") as f:
        assert int.from_bytes(f.read(12)[8:12], "little") == 3
    client = vectordb.PersistentClient(str(tmp_path / "db"))
    assert client.get_collection("pqc", embedding_function=None).count() == len(x) + 1
    client.close()
