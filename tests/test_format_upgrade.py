"""A database written before vectors.crc existed (tests/fixtures/format1.tar.gz, made by
tests/fixtures/make_format1.py with that version) opens, answers as it did, verifies its vector data
whole at open (it has no per-chunk checksums), and gains vectors.crc at its first checkpoint."""
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
