"""The REST server, run for real: `python -m vectordb serve` in a subprocess on a loopback port.

Covers every endpoint (including the seed README's request bodies verbatim), error codes and
bodies (404/405/409/413/422, NaN/Infinity rejected, nothing changed by a rejected request),
the API key, port fallback, request logs, restarts (SIGTERM and SIGKILL) keeping the data,
HttpClient against the embedded client, and a schemathesis run over /openapi.json.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vectordb
from vectordb import errors
from vectordb.http_client import HttpClient, ServerUnavailableError
from vectordb.server import app as server_app
from vectordb.server.settings import ServerSettings, parse_log_level

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import free_port, server_log, start_server, stop_server  # noqa: E402

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("server") / "db"
    proc, base_url, port = start_server(path)
    yield {"proc": proc, "url": base_url, "port": port, "path": path}
    stop_server(proc)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server["url"], timeout=60) as client:
        yield client


def _raw(http: httpx.Client, method: str, path: str, text: "str | bytes") -> httpx.Response:
    body = text.encode() if isinstance(text, str) else text
    return http.request(method, path, content=body, headers=JSON)


def _fmt(vector) -> str:
    return ", ".join(repr(float(x)) for x in vector)


def _l2_reference(data: np.ndarray, queries: np.ndarray, k: int):
    d = ((queries[:, None, :].astype(np.float64) - data[None, :, :].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def _assert_error(resp: httpx.Response, status: int, error: "str | None" = None, mentions: "str | None" = None):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    if error is not None:
        assert body["error"] == error, body
    if mentions is not None:
        assert mentions in body["message"], body
    return body


# ------------------------------------------------------------------ pure helpers (no server)


finite_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)
any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


def _has_nonfinite(obj) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, list):
        return any(_has_nonfinite(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_nonfinite(x) for x in obj.values())
    return False


def _same_json(a, b) -> bool:
    # Python compares 1 == 1.0; JSON round trips must also keep int vs float apart.
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(any_json)
def test_strict_json_parser_rejects_exactly_the_non_finite(obj):
    text = json.dumps(obj).encode()  # the stdlib writes NaN / Infinity literals
    for parse in (server_app.loads_strict, server_app._loads_stdlib):
        if _has_nonfinite(obj):
            with pytest.raises(json.JSONDecodeError):
                parse(text)
        else:
            assert _same_json(parse(text), obj)


@pytest.mark.parametrize("text", [b"NaN", b"[1, -Infinity]", b'{"a": Infinity}', b"[1e400]", b"[-1e999]"])
def test_strict_json_parser_names_the_problem(text):
    with pytest.raises(json.JSONDecodeError, match="not allowed"):
        server_app.loads_strict(text)


def test_strict_json_parser_keeps_big_integers_exact():
    assert server_app.loads_strict(b"[18446744073709551617]") == [18446744073709551617]
    with pytest.raises(json.JSONDecodeError, match="UTF-8"):
        server_app.loads_strict(b'"\xff"')


def test_log_level_parsing():
    assert parse_log_level("debug") == logging.DEBUG
    assert parse_log_level("WARN") == logging.WARNING
    assert parse_log_level("warn,vectordb=debug,hyper=info") == logging.DEBUG
    assert parse_log_level("info,tower_http=trace") == logging.INFO
    assert parse_log_level(None) == logging.INFO
    with pytest.raises(ValueError, match="unknown log level"):
        parse_log_level("loud")


def test_settings_from_environment():
    s = ServerSettings.from_env({"VECTORDB_PATH": "/data/x", "VECTORDB_PORT": "9001", "RUST_LOG": "warn",
                                 "VECTORDB_LOG_FORMAT": "JSON", "VECTORDB_MAX_BODY_BYTES": "1000",
                                 "VECTORDB_MAX_CACHED": "3", "VECTORDB_API_KEY": "k"})
    assert (s.path, s.port, s.log_level, s.log_format, s.max_body_bytes, s.max_cached, s.api_key) == (
        "/data/x", 9001, logging.WARNING, "json", 1000, 3, "k")
    defaults = ServerSettings.from_env({})
    assert (defaults.path, defaults.host, defaults.port, defaults.max_cached, defaults.api_key) == (
        "./vector_db", "127.0.0.1", 8080, 20, None)
    assert ServerSettings.from_env({"VECTORDB_PORT": "9001"}, port=7000).port == 7000
    with pytest.raises(ValueError, match="VECTORDB_PORT"):
        ServerSettings.from_env({"VECTORDB_PORT": "eighty"})
    with pytest.raises(ValueError, match="VECTORDB_LOG_FORMAT"):
        ServerSettings.from_env({"VECTORDB_LOG_FORMAT": "xml"})


def test_warning_when_binding_beyond_loopback_without_key(caplog):
    with caplog.at_level(logging.WARNING, logger="vectordb.server"):
        server_app.warn_if_exposed("127.0.0.1", None)
        server_app.warn_if_exposed("::1", None)
        server_app.warn_if_exposed("localhost", None)
        server_app.warn_if_exposed("0.0.0.0", "a-key")
        assert not caplog.records
        server_app.warn_if_exposed("0.0.0.0", None)
    assert len(caplog.records) == 1 and "without an API key" in caplog.records[0].getMessage()


# ------------------------------------------------------------------ in-process app (TestClient)


def test_create_app_from_a_path_owns_and_closes_its_client(tmp_path):
    from fastapi.testclient import TestClient

    from vectordb.server import create_app

    with TestClient(create_app(str(tmp_path / "db"), settings=None)) as c:
        assert c.post("/collections", json={"name": "inproc", "dimension": 2}).status_code == 200
        assert c.post("/collections/inproc/add", json={"ids": ["a"], "embeddings": [[1, 2]]}).status_code == 200
        # A client of the same path in the same process shares the server's database.
        shared = vectordb.PersistentClient(path=str(tmp_path / "db"))
        assert shared.get_collection("inproc").count() == 1
        shared.close()
    # the lifespan closed the database: another client may open it now
    client = vectordb.PersistentClient(path=str(tmp_path / "db"))
    assert client.get_collection("inproc").count() == 1
    client.close()


def test_unexpected_exception_is_a_json_500_and_the_server_goes_on(caplog):
    from fastapi.testclient import TestClient

    from vectordb.server import create_app

    class BrokenClient(vectordb.EphemeralClient):
        # a defect on purpose: the real clients have no way to raise RuntimeError on demand
        def get_collection(self, name, *args, **kwargs):
            if name == "broken":
                raise RuntimeError("boom")
            return super().get_collection(name, *args, **kwargs)

    broken = BrokenClient()
    with TestClient(create_app(broken), raise_server_exceptions=False) as c:
        with caplog.at_level(logging.ERROR, logger="vectordb.server"):
            body = _assert_error(c.get("/collections/broken/count"), 500, "InternalError", "boom")
        assert "RuntimeError" in body["message"]
        assert any("unhandled error" in r.getMessage() for r in caplog.records)
        assert c.get("/health").status_code == 200
        _assert_error(c.get("/collections/other/count"), 404, "NotFoundError")
    broken.close()


# ------------------------------------------------------------------ service endpoints


def test_service_endpoints(http):
    assert http.get("/health").json() == {"status": "ok", "version": vectordb.__version__}
    assert http.get("/version").json() == {"version": vectordb.__version__}
    beat = http.get("/heartbeat").json()["nanosecond heartbeat"]
    assert isinstance(beat, int) and beat > 0
    assert http.get("/max_batch_size").json()["max_batch_size"] >= 5461
    assert isinstance(http.get("/collections_count").json()["count"], int)
    _assert_error(http.post("/reset"), 403, "AuthorizationError", "VECTORDB_ALLOW_RESET")
    schema = http.get("/openapi.json").json()
    for path in ["/collections", "/collections/{name}/add", "/collections/{name}/query", "/collections/{name}/get",
                 "/collections/{name}/update", "/collections/{name}/delete", "/collections/{name}/batch/begin",
                 "/collections/{name}/batch/end", "/collections/{name}/rebuild", "/collections/{name}/stats",
                 "/health"]:
        assert path in schema["paths"], path
    assert set(schema["paths"]["/collections/{name}/delete"]) == {"delete", "post"}
    assert "422" in schema["paths"]["/collections/{name}/add"]["post"]["responses"]
    assert http.get("/docs").status_code == 200


# ------------------------------------------------------------------ the seed README, verbatim


def test_seed_readme_request_bodies(http):
    rng = np.random.default_rng(5)
    v1, v2 = np.round(rng.standard_normal((2, 1280)), 4)
    r = _raw(http, "POST", "/collections", '{"name": "images", "dimension": 1280, "use_ivf": true, "n_clusters": 100}')
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "images" and r.json()["configuration"]["use_ivf"] is True

    r = _raw(http, "POST", "/collections/images/add",
             '{"ids": ["id1", "id2"], "embeddings": [[%s], [%s]], '
             '"metadatas": [{"key": "value"}, {"source": "camera"}]}'
             % (_fmt(v1), _fmt(v2)))
    assert r.status_code == 200, r.text

    r = _raw(http, "POST", "/collections/images/query",
             '{"query_embedding": [%s], "n_results": 10, "where": {"source": "camera"}}' % _fmt(v2 + 0.01))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ids"] == [["id2"]]
    assert body["metadatas"] == [[{"source": "camera"}]]
    assert body["distances"][0][0] == pytest.approx(1280 * 0.01**2, rel=1e-3)

    r = _raw(http, "POST", "/collections/images/get", '{"ids": ["id1", "id2"], "include": ["embeddings", "metadatas"]}')
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ids"] == ["id1", "id2"]
    np.testing.assert_array_equal(np.asarray(body["embeddings"], dtype=np.float32),
                                  np.stack([v1, v2]).astype(np.float32))
    assert body["metadatas"] == [{"key": "value"}, {"source": "camera"}]
    assert body["documents"] is None and body["included"] == ["embeddings", "metadatas"]

    r = _raw(http, "PUT", "/collections/images/update", '{"ids": ["id1"], "metadatas": [{"new_key": "new_value"}]}')
    assert r.status_code == 200, r.text
    got = http.post("/collections/images/get", json={"ids": ["id1"]}).json()
    assert got["metadatas"] == [{"key": "value", "new_key": "new_value"}]  # merged, as chromadb

    r = _raw(http, "DELETE", "/collections/images/delete", '{"ids": ["id1", "id2"]}')
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": 2}
    assert http.get("/collections/images/count").json() == {"count": 0}
    assert http.delete("/collections/images").status_code == 200


# ------------------------------------------------------------------ collections


def test_collection_lifecycle(http):
    r = http.post("/collections", json={"name": "life-1", "metadata": {"hnsw:space": "cosine", "owner": "me"}})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["name"] == "life-1" and info["metadata"] == {"hnsw:space": "cosine", "owner": "me"}
    assert info["configuration"]["hnsw"]["space"] == "cosine"
    _assert_error(http.post("/collections", json={"name": "life-1"}), 409, "CollectionExistsError", "life-1")
    again = http.post("/collections", json={"name": "life-1", "get_or_create": True, "metadata": {"other": 1}})
    assert again.status_code == 200 and again.json()["id"] == info["id"]
    assert again.json()["metadata"] == {"hnsw:space": "cosine", "owner": "me"}  # unchanged, as chromadb

    assert http.get("/collections/life-1").json()["id"] == info["id"]
    names = [c["name"] for c in http.get("/collections").json()]
    assert "life-1" in names
    count = http.get("/collections_count").json()["count"]
    assert count == len(names)
    assert len(http.get("/collections", params={"limit": 1}).json()) == min(1, count)
    assert http.get("/collections", params={"offset": count}).json() == []

    r = http.patch("/collections/life-1", json={"name": "life-2", "metadata": {"hnsw:space": "cosine", "v": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "life-2" and r.json()["metadata"]["v"] == 2
    _assert_error(http.get("/collections/life-1"), 404, "NotFoundError", "life-1")
    _assert_error(http.patch("/collections/life-2", json={"metadata": {"hnsw:space": "l2"}}),
                  422, "InvalidArgumentError")

    stats = http.get("/collections/life-2/stats").json()
    assert stats["count"] == 0 and stats["name"] == "life-2"
    assert http.delete("/collections/life-2").json() == {"ok": True}
    _assert_error(http.delete("/collections/life-2"), 404, "NotFoundError")
    assert "life-2" not in [c["name"] for c in http.get("/collections").json()]


@pytest.mark.parametrize("code", ["sq8", "pq4"])
def test_quantized_collection_over_http(http, code):
    """quantization="sq8"/"pq4" is accepted, kept in the configuration, and answers like float32
    (pq4 stays exact below the IVF training threshold)."""
    rng = np.random.default_rng(12)
    data = rng.standard_normal((200, 9)).astype(np.float32)
    r = http.post("/collections", json={"name": f"quant-{code}", "quantization": code})
    assert r.status_code == 200, r.text
    assert r.json()["configuration"]["quantization"] == code
    _assert_error(http.post("/collections", json={"name": "quant-bad", "quantization": "pq"}), 422)
    ids = [f"q{i}" for i in range(200)]
    r = http.post(f"/collections/quant-{code}/add", json={"ids": ids, "embeddings": data.tolist()})
    assert r.status_code == 200
    body = http.post(f"/collections/quant-{code}/query", json={"query_embeddings": data[:2].tolist(), "n_results": 3,
                                                              "include": ["distances"]}).json()
    order, _ = _l2_reference(data, data[:2], 3)
    assert body["ids"] == [[ids[j] for j in row] for row in order]
    assert http.get(f"/collections/quant-{code}/stats").json()["quantization"] == code
    assert http.delete(f"/collections/quant-{code}").json() == {"ok": True}


# ------------------------------------------------------------------ records against a NumPy model


@pytest.fixture(scope="module")
def records(http):
    rng = np.random.default_rng(11)
    n, d = 300, 16
    data = rng.standard_normal((n, d)).astype(np.float32)
    ids = [f"r{i}" for i in range(n)]
    metas = [{"group": i % 3, "name": f"item {i}", "even": i % 2 == 0} for i in range(n)]
    docs = [f"document number {i} {'cat' if i % 5 == 0 else 'dog'}" for i in range(n)]
    assert http.post("/collections", json={"name": "records", "dimension": d}).status_code == 200
    for start in range(0, n, 100):  # several requests, as a loader would
        r = http.post("/collections/records/add", json={
            "ids": ids[start:start + 100], "embeddings": data[start:start + 100].tolist(),
            "metadatas": metas[start:start + 100], "documents": docs[start:start + 100]})
        assert r.status_code == 200, r.text
    return {"data": data, "ids": ids, "metas": metas, "docs": docs}


def test_query_matches_numpy(http, records):
    data, ids = records["data"], records["ids"]
    queries = np.random.default_rng(3).standard_normal((4, data.shape[1])).astype(np.float32)
    r = http.post("/collections/records/query", json={"query_embeddings": queries.tolist(), "n_results": 7,
                                                      "include": ["distances", "metadatas", "documents", "embeddings"]})
    assert r.status_code == 200, r.text
    body = r.json()
    order, dist = _l2_reference(data, queries, 7)
    assert body["ids"] == [[ids[j] for j in row] for row in order]
    np.testing.assert_allclose(np.asarray(body["distances"]), dist, rtol=1e-4, atol=1e-4)
    assert body["documents"][0] == [records["docs"][j] for j in order[0]]
    assert body["metadatas"][1] == [records["metas"][j] for j in order[1]]
    np.testing.assert_array_equal(np.asarray(body["embeddings"][2], dtype=np.float32), data[order[2]])
    assert body["included"] == ["distances", "metadatas", "documents", "embeddings"]


def test_query_with_filters_matches_numpy(http, records):
    data, ids, metas, docs = records["data"], records["ids"], records["metas"], records["docs"]
    q = data[10] + 0.05
    body = http.post("/collections/records/query", json={
        "query_embedding": q.tolist(), "n_results": 5, "where": {"$and": [{"group": {"$ne": 1}}, {"even": True}]},
        "where_document": {"$contains": "cat"}}).json()
    keep = [i for i in range(len(ids)) if metas[i]["group"] != 1 and metas[i]["even"] and "cat" in docs[i]]
    order, dist = _l2_reference(data[keep], q[None, :], 5)
    assert body["ids"] == [[ids[keep[j]] for j in order[0]]]
    assert body["documents"] is not None and body["distances"] is not None  # default include
    np.testing.assert_allclose(body["distances"][0], dist[0], rtol=1e-4, atol=1e-4)
    # n_results beyond what matches returns what exists; no match gives an empty list for that query
    none = http.post("/collections/records/query", json={"query_embeddings": [q.tolist(), q.tolist()],
                                                         "where": {"group": 99}}).json()
    assert none["ids"] == [[], []]


def test_get_paths(http, records):
    ids, metas = records["ids"], records["metas"]
    body = http.post("/collections/records/get", json={"ids": ["r5", "nope", "r2"]}).json()
    assert body["ids"] == ["r5", "r2"]  # order asked, unknown left out
    assert body["metadatas"] == [metas[5], metas[2]] and body["embeddings"] is None
    page = http.post("/collections/records/get", json={"where": {"group": 2}, "limit": 4, "offset": 3,
                                                       "include": []}).json()
    assert page["ids"] == [ids[i] for i in range(len(ids)) if metas[i]["group"] == 2][3:7]
    assert page["metadatas"] is None and page["documents"] is None
    all_ids = http.post("/collections/records/get", json={"include": []}).json()["ids"]
    assert all_ids == ids  # insertion order
    peek = http.get("/collections/records/peek", params={"limit": 3}).json()
    assert peek["ids"] == ids[:3]
    np.testing.assert_array_equal(np.asarray(peek["embeddings"], dtype=np.float32), records["data"][:3])
    assert http.get("/collections/records/count").json() == {"count": len(ids)}
    assert http.get("/collections/records/stats").json()["dimension"] == records["data"].shape[1]


def test_writes_and_deletes(http):
    assert http.post("/collections", json={"name": "writes"}).status_code == 200
    add = {"ids": ["a", "b", "c"], "embeddings": [[1, 0], [0, 1], [1, 1]],
           "metadatas": [{"k": 1}, {"k": 2}, None], "documents": ["alpha", "beta", None]}
    assert http.post("/collections/writes/add", json=add).status_code == 200
    # add of an existing id is skipped (the stored record is unchanged)
    assert http.post("/collections/writes/add", json={"ids": ["a"], "embeddings": [[9, 9]]}).status_code == 200
    got = http.post("/collections/writes/get", json={"ids": ["a"], "include": ["embeddings"]}).json()
    assert got["embeddings"] == [[1, 0]]
    # upsert: new and existing, metadata merged, None deletes a key
    r = http.post("/collections/writes/upsert", json={"ids": ["a", "d"], "embeddings": [[2, 0], [3, 3]],
                                                      "metadatas": [{"k": None, "j": "x"}, {"k": 4}]})
    assert r.status_code == 200, r.text
    got = http.post("/collections/writes/get", json={"ids": ["a", "d"], "include": ["embeddings", "metadatas"]}).json()
    assert got["embeddings"] == [[2, 0], [3, 3]] and got["metadatas"] == [{"j": "x"}, {"k": 4}]
    # update of an unknown id is ignored
    assert http.put("/collections/writes/update", json={"ids": ["zz"], "documents": ["x"]}).status_code == 200
    assert http.put("/collections/writes/update", json={"ids": ["b"], "documents": ["BETA"]}).status_code == 200
    assert http.post("/collections/writes/get", json={"ids": ["b"]}).json()["documents"] == ["BETA"]
    # deletes: by filter with a DELETE body, by ids with the POST alias, unknown ids are no error
    assert http.request("DELETE", "/collections/writes/delete", json={"where": {"k": 4}}).json() == {"deleted": 1}
    assert http.post("/collections/writes/delete", json={"ids": ["b", "nope"]}).json() == {"deleted": 1}
    assert http.post("/collections/writes/get", json={"include": []}).json()["ids"] == ["a", "c"]
    # maintenance endpoints answer
    for path in ("batch/begin", "batch/end", "checkpoint"):
        assert http.post(f"/collections/writes/{path}").json() == {"ok": True}, path
    _assert_error(http.post("/collections/writes/batch/end"), 422, "InvalidArgumentError", "begin")
    _assert_error(http.post("/collections/writes/rebuild"), 422, "InvalidArgumentError", "use_ivf")


def test_rebuild_with_fewer_vectors_than_lists_stays_exact_over_http(http):
    assert http.post("/collections", json={"name": "tiny", "use_ivf": True, "n_clusters": 100}).status_code == 200
    vecs = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert http.post("/collections/tiny/add", json={"ids": ["a", "b"], "embeddings": vecs}).status_code == 200
    r = http.post("/collections/tiny/rebuild")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["ok"], body["index"]) == (True, "flat") and "search stays exact" in body["message"]
    q = http.post("/collections/tiny/query", json={"query_embeddings": [[0.9, 0.1, 0.0]], "n_results": 2,
                                                   "include": []}).json()
    assert q["ids"] == [["a", "b"]]


def test_ivf_collection_over_http(http):
    rng = np.random.default_rng(4)
    data = rng.standard_normal((400, 8)).astype(np.float32)
    ids = [f"v{i}" for i in range(400)]
    r = http.post("/collections", json={"name": "ivf-small", "use_ivf": True, "n_clusters": 4, "n_probe": 1})
    assert r.status_code == 200, r.text
    assert http.post("/collections/ivf-small/batch/begin").json() == {"ok": True}
    for start in (0, 200):
        r = http.post("/collections/ivf-small/add", json={"ids": ids[start:start + 200],
                                                          "embeddings": data[start:start + 200].tolist()})
        assert r.status_code == 200, r.text
    assert http.post("/collections/ivf-small/batch/end").json() == {"ok": True}
    assert http.post("/collections/ivf-small/rebuild").json() == {
        "ok": True, "index": "ivf", "n_clusters": 4, "message": "trained 4 IVF lists on 400 vectors"}
    stats = http.get("/collections/ivf-small/stats").json()
    assert stats["count"] == 400 and stats["use_ivf"] is True and stats["n_clusters"] == 4
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    order, dist = _l2_reference(data, queries, 10)
    # probing every list is exact search
    body = http.post("/collections/ivf-small/query", json={"query_embeddings": queries.tolist(), "n_results": 10,
                                                           "n_probe": 4, "include": ["distances"]}).json()
    assert body["ids"] == [[ids[j] for j in row] for row in order]
    np.testing.assert_allclose(np.asarray(body["distances"]), dist, rtol=1e-4, atol=1e-4)
    # one list of four: fewer candidates, still sorted, never better than exact
    body = http.post("/collections/ivf-small/query", json={"query_embeddings": queries.tolist(), "n_results": 10,
                                                           "include": ["distances"]}).json()
    for row, exact in zip(body["distances"], dist):
        assert row == sorted(row) and all(a >= b - 1e-4 for a, b in zip(row, exact))


# ------------------------------------------------------------------ errors


def test_unknown_collection_is_404_everywhere(http):
    calls = [
        ("GET", "/collections/ghost", None), ("PATCH", "/collections/ghost", {"metadata": {"a": 1}}),
        ("DELETE", "/collections/ghost", None), ("GET", "/collections/ghost/count", None),
        ("GET", "/collections/ghost/stats", None), ("GET", "/collections/ghost/peek", None),
        ("POST", "/collections/ghost/add", {"ids": ["a"], "embeddings": [[1.0]]}),
        ("POST", "/collections/ghost/upsert", {"ids": ["a"], "embeddings": [[1.0]]}),
        ("PUT", "/collections/ghost/update", {"ids": ["a"], "embeddings": [[1.0]]}),
        ("POST", "/collections/ghost/query", {"query_embedding": [1.0]}),
        ("POST", "/collections/ghost/get", {}), ("DELETE", "/collections/ghost/delete", {"ids": ["a"]}),
        ("POST", "/collections/ghost/delete", {"ids": ["a"]}), ("POST", "/collections/ghost/batch/begin", None),
        ("POST", "/collections/ghost/batch/end", None), ("POST", "/collections/ghost/rebuild", None),
        ("POST", "/collections/ghost/checkpoint", None),
    ]
    for method, path, body in calls:
        resp = http.request(method, path, json=body)
        _assert_error(resp, 404, "NotFoundError", "ghost")


NAN_BODIES = [
    '{"ids": ["x"], "embeddings": [[1.0, NaN, 0.5]]}',
    '{"ids": ["x"], "embeddings": [[1.0, Infinity, 0.5]]}',
    '{"ids": ["x"], "embeddings": [[1.0, -Infinity, 0.5]]}',
    '{"ids": ["x"], "embeddings": [[1.0, 1e999, 0.5]]}',
    '{"ids": ["x"], "embeddings": [[1.0, 2.0, 0.5]], "metadatas": [{"score": NaN}]}',
]
BAD_ADDS = [
    ({"ids": ["x"], "embeddings": [[1.0, 2.0]]}, "InvalidDimensionError", "dimension"),
    ({"ids": ["x", "x"], "embeddings": [[1, 2, 3], [1, 2, 3]]}, "DuplicateIDError", "x"),
    ({"ids": ["x"], "embeddings": [[True, False, True]]}, "InvalidArgumentError", "embeddings"),
    ({"ids": ["x"], "embeddings": [["1.5", 2, 3]]}, "InvalidArgumentError", "embeddings"),
    ({"ids": ["x"], "embeddings": [[1, 2, 3]], "unknown_field": 1}, "InvalidArgumentError", "unknown_field"),
    ({"embeddings": [[1, 2, 3]]}, "InvalidArgumentError", "ids"),
    ({"ids": [], "embeddings": []}, "InvalidArgumentError", None),
    ({"ids": [""], "embeddings": [[1, 2, 3]]}, "InvalidArgumentError", None),
    ({"ids": ["x", "y"], "embeddings": [[1, 2, 3]]}, "InvalidArgumentError", None),
    ({"ids": ["x"], "embeddings": [[1, 2, 3]], "metadatas": [{}]}, "InvalidArgumentError", None),
    ({"ids": ["x"], "embeddings": [[1, 2, 3]], "metadatas": [{"$bad": 1}]}, "InvalidArgumentError", None),
    ({"ids": ["x"], "embeddings": [[1, 2, 3]], "metadatas": [{"big": 2**64}]}, "InvalidArgumentError", None),
    ({"ids": ["x"], "embeddings": [[1, 2, 3]], "uris": ["u", "v"]}, "InvalidArgumentError", "uris"),
]


@pytest.fixture(scope="module")
def guarded(http):
    """A 3-d collection with two records, for checking that rejected requests change nothing."""
    assert http.post("/collections", json={"name": "guarded", "dimension": 3}).status_code == 200
    r = http.post("/collections/guarded/add", json={"ids": ["a", "b"], "embeddings": [[1, 2, 3], [4, 5, 6]],
                                                    "metadatas": [{"m": 1}, {"m": 2}], "documents": ["A", "B"]})
    assert r.status_code == 200
    return http.post("/collections/guarded/get", json={"include": ["embeddings", "metadatas", "documents"]}).json()


def _unchanged(http, snapshot):
    now = http.post("/collections/guarded/get", json={"include": ["embeddings", "metadatas", "documents"]}).json()
    assert now == snapshot


@pytest.mark.parametrize("text", NAN_BODIES)
@pytest.mark.parametrize("endpoint", [("POST", "add"), ("POST", "upsert"), ("PUT", "update")])
def test_non_finite_numbers_are_rejected(http, guarded, text, endpoint):
    method, name = endpoint
    body = _assert_error(_raw(http, method, f"/collections/guarded/{name}", text.replace('"x"', '"a"')), 422,
                         "InvalidArgumentError")
    assert "finite" in body["message"] or "NaN" in body["message"] or "Infinity" in body["message"]
    _unchanged(http, guarded)


@pytest.mark.parametrize("body,error,mentions", BAD_ADDS)
def test_invalid_records_are_422_and_change_nothing(http, guarded, body, error, mentions):
    for method, name in (("POST", "add"), ("POST", "upsert")):
        _assert_error(http.request(method, f"/collections/guarded/{name}", json=body), 422, error, mentions)
    _unchanged(http, guarded)


@pytest.mark.parametrize("body,mentions", [
    ({"query_embedding": [1, 0, 2], "n_results": 0}, "n_results"),
    ({"query_embedding": [1, 2]}, "dimension"),
    ({"query_embeddings": [[1, 2, 3]], "include": ["vectors"]}, "include"),
    ({"query_embeddings": [[1, 2, 3]], "where": {"m": {"$gt": "text"}}}, "$gt"),
    ({"query_embeddings": [[1, 2, 3]], "where": {}}, None),
    ({"query_embeddings": [[1, 2, 3]], "where_document": {"$contains": ""}}, None),
    ({"query_embedding": [1, 2, 3], "query_embeddings": [[1, 2, 3]]}, "query_embedding"),
    ({"n_results": 3}, "query_embeddings"),
    ({"query_texts": ["needs an embedding function"]}, "embedding_function"),
    ({"query_embedding": [1, 2, 3], "n_probe": 0}, "n_probe"),
])
def test_invalid_queries_are_422(http, guarded, body, mentions):
    _assert_error(http.post("/collections/guarded/query", json=body), 422, None, mentions)


def test_invalid_requests_of_other_kinds(http, guarded):
    _assert_error(_raw(http, "POST", "/collections/guarded/get", '{"ids": ["a"'), 422, "InvalidArgumentError", "JSON")
    _assert_error(_raw(http, "POST", "/collections/guarded/get", b'{"ids": ["\xff"]}'),
                  422, "InvalidArgumentError", "UTF-8")
    _assert_error(http.post("/collections/guarded/get", json={"include": ["distances"]}), 422, None, "distances")
    _assert_error(http.post("/collections/guarded/get", json={"limit": -1}), 422, None, "limit")
    _assert_error(http.post("/collections/guarded/delete", json={}), 422, None, None)
    _assert_error(http.post("/collections", json={"name": "x"}), 422, "InvalidArgumentError", "name")
    _assert_error(http.post("/collections", json={"name": "192.168.0.1"}), 422, "InvalidArgumentError", "IPv4")
    _assert_error(http.post("/collections", json={"name": "sp-1", "metadata": {"hnsw:space": "manhattan"}}), 422,
                  None, "manhattan")
    _assert_error(http.post("/collections", json={"name": "dim-0", "dimension": 0}), 422, None, "dimension")
    # numbers beyond 64 bits are the engine layer's to judge (capped or rejected), never a server error
    for huge in ({"limit": 2**80}, {"limit": -(2**80)}):
        assert http.get("/collections/guarded/peek", params=huge).status_code in (200, 422)
    assert http.post("/collections/guarded/get", json={"offset": 2**70}).status_code in (200, 422)
    _unchanged(http, guarded)
    names = [c["name"] for c in http.get("/collections").json()]
    assert not {"x", "192.168.0.1", "sp-1", "dim-0"} & set(names)


def _frame(header: bytes, payload: bytes) -> bytes:
    return len(header).to_bytes(4, "little") + header + payload


def test_binary_frame_round_trip_and_bad_frames_change_nothing(http, guarded):
    from vectordb.wire import FRAME_CONTENT_TYPE, encode_frame

    frame = {"content-type": FRAME_CONTENT_TYPE}
    vectors = np.array([[1, 2, 3.5]], dtype=np.float32)
    r = http.post("/collections/guarded/query", headers=frame,
                  content=encode_frame(b'{"n_results":1,"include":["distances"]}', "query_embeddings", vectors))
    assert r.status_code == 200, r.text
    assert r.json()["ids"] == [["a"]]
    good = np.array([[7, 8, 9]], dtype="<f4").tobytes()
    bad = [
        (b"\x01\x00", "shorter"),
        (_frame(b'{"ids":["n"],"embeddings_f32":[1,3]}', good[:8]), "needs 12 bytes"),
        (_frame(b'{"ids":["n"],"embeddings_f32":[1,-3]}', good), "shape"),
        (_frame(b'{"ids":["n"],"embeddings_f32":[1,3],"embeddings":[[1,2,3]]}', good), "not both"),
        (_frame(b'{"ids":["n"]}', good), "no <field>_f32"),
        (_frame(b'{"ids":["n"],"embeddings_f32":[1,3]', good), "JSON"),
        (b"\xff\xff\xff\x7f" + good, "exceeds"),
        (_frame(b'{"ids":["n"],"embeddings_f32":[1,3],"bogus":1}', good), "bogus"),
        (_frame(b'{"ids":["n"],"embeddings_f32":[1,3]}', np.array([[7, np.nan, 9]], dtype="<f4").tobytes()), None),
        (_frame(b'{"ids":["n","m"],"embeddings_f32":[1,3]}', good), None),
        (_frame(b'{"ids":["n"],"query_embeddings_f32":[1,3]}', good), "embeddings"),
    ]
    for body, mentions in bad:
        for method, name in (("POST", "add"), ("POST", "upsert"), ("PUT", "update")):
            _assert_error(http.request(method, f"/collections/guarded/{name}", content=body, headers=frame), 422,
                          "InvalidArgumentError", mentions)
    _unchanged(http, guarded)
    # A frame is our client's format for the seed API's record routes only.
    _assert_error(http.post("/collections/guarded/get", content=_frame(b"{}", b""), headers=frame), 422,
                  "InvalidArgumentError", "JSON")


def test_unknown_route_and_method(http):
    _assert_error(http.get("/no/such/thing"), 404, "NotFoundError", "/no/such/thing")
    r = http.put("/collections")
    _assert_error(r, 405, "MethodNotAllowed")
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_request_log_lines(server, http):
    http.post("/collections/ghost/query", json={"query_embedding": [1.0]})
    text = server_log(server["proc"])
    assert re.search(r"request method=POST path=/collections/ghost/query status=404 "
                     r"duration_ms=[0-9.]+ collection=ghost", text), text[-2000:]
    assert re.search(r"request method=GET path=/health status=200 duration_ms=[0-9.]+", text)
    startup = re.search(r"vectordb (\S+): serving (\S+) on (http://\S+) (.*)", text)
    assert startup and startup.group(1) == vectordb.__version__
    assert startup.group(3) == server["url"]
    assert "cpu_kernel=" in startup.group(4) and "auth=off" in startup.group(4)


# ------------------------------------------------------------------ HttpClient vs the embedded client


def _compare_results(remote, local):
    assert remote.keys() == local.keys()
    for key in local:
        a, b = remote[key], local[key]
        if key == "embeddings" and b is not None:
            if isinstance(b, list):
                assert len(a) == len(b)
                for x, y in zip(a, b):
                    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == y.shape
                    np.testing.assert_array_equal(x, y)
            else:
                assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == b.shape
                np.testing.assert_array_equal(a, b)
        elif key == "distances" and b is not None:
            assert [len(x) for x in a] == [len(y) for y in b]
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=1e-6)
        else:
            assert a == b, key


def _error_of(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the class is what is compared
        return type(exc)
    return None


def test_http_client_matches_embedded_client(server):
    rng = np.random.default_rng(7)
    data = rng.standard_normal((60, 8)).astype(np.float32)
    metas = [{"i": i, "tag": ["a", "b", "c"][i % 3]} if i % 7 else None for i in range(60)]
    docs = [f"text {i}" if i % 4 else None for i in range(60)]
    ids = [f"id{i}" for i in range(60)]
    with vectordb.EphemeralClient() as local_client, HttpClient(host="127.0.0.1", port=server["port"]) as remote_client:
        assert remote_client.heartbeat() > 0 and remote_client.get_version() == local_client.get_version()
        pairs = []
        for client in (remote_client, local_client):
            col = client.create_collection("parity", metadata={"hnsw:space": "cosine"}, embedding_function=None)
            assert col.get(include=["embeddings"])["embeddings"].shape == (0, 0)
            col.add(ids=ids[:40], embeddings=data[:40], metadatas=metas[:40], documents=docs[:40])
            col.add(ids=ids[40:], embeddings=list(data[40:]), metadatas=metas[40:], documents=docs[40:])
            col.upsert(ids=["id3", "new"], embeddings=data[:2] * 2, metadatas=[{"i": -1}, {"i": 100}])
            col.update(ids="id5", documents="changed")
            pairs.append(col)
        remote, local = pairs
        assert remote.name == local.name and remote.metadata == local.metadata and remote.count() == local.count()
        assert isinstance(remote.id, type(local.id))
        queries = rng.standard_normal((3, 8))
        calls = [
            lambda c: c.get(),
            lambda c: c.get(ids=["id9", "id1", "missing"], include=["embeddings", "metadatas", "documents"]),
            lambda c: c.get(where={"tag": "b"}, limit=5, offset=2, include=["embeddings"]),
            lambda c: c.get(ids=["missing"], include=["embeddings"]),
            lambda c: c.get(where_document={"$contains": "text 1"}),
            lambda c: c.peek(4),
            lambda c: c.query(query_embeddings=queries, n_results=6, include=["embeddings", "distances", "metadatas",
                                                                              "documents"]),
            lambda c: c.query(query_embedding=queries[0], n_results=100, where={"i": {"$gte": 10}}),
            lambda c: c.query(query_embeddings=queries[:1].tolist(), where={"tag": "zzz"}, include=["embeddings"]),
        ]
        for call in calls:
            _compare_results(call(remote), call(local))
        # the same errors, by class
        bad_calls = [
            lambda cl, c: c.add(ids=["z"], embeddings=[[1.0, 2.0]]),
            lambda cl, c: c.add(ids=["z", "z"], embeddings=data[:2]),
            lambda cl, c: c.add(ids=["z"], embeddings=[[float("nan")] * 8]),
            lambda cl, c: c.add(ids=["z"], embeddings=np.ones((1, 8), dtype=bool)),
            lambda cl, c: c.add(ids=[], embeddings=[]),
            lambda cl, c: c.add(ids=["z"], embeddings=data[:1], metadatas=[{1: "int key"}]),
            lambda cl, c: c.add(ids=["z"], embeddings=data[:1], metadatas=[{"o": object()}]),
            lambda cl, c: c.add(ids=["z"], embeddings=data[:1], metadatas=[{"big": 2**64}]),
            lambda cl, c: c.add(ids=["y", "z"], embeddings=data[:2], documents=["ok", b"bytes"]),
            lambda cl, c: c.add(ids=["z"], embeddings=np.ones((1, 8), dtype=np.complex64)),
            lambda cl, c: c.query(query_embeddings=queries, n_results=None),
            lambda cl, c: c.query(query_embeddings=queries, include="distances"),
            lambda cl, c: c.query(query_embeddings=queries, n_results=0),
            lambda cl, c: c.get(where={"i": {"$bad": 1}}),
            lambda cl, c: c.get(include=["distances"]),
            lambda cl, c: c.delete(),
            lambda cl, c: c.modify(metadata={"hnsw:space": "l2"}),
            lambda cl, c: cl.get_collection("absent"),
            lambda cl, c: cl.delete_collection("absent"),
            lambda cl, c: cl.create_collection("parity"),
            lambda cl, c: cl.create_collection("no"),
            lambda cl, c: cl.reset(),
        ]
        for i, bad in enumerate(bad_calls):
            expected = _error_of(lambda: bad(local_client, local))
            assert expected is not None, i
            assert _error_of(lambda: bad(remote_client, remote)) is expected, (i, expected)
        # deletes and rename
        assert remote.delete(where={"tag": "a"}) == local.delete(where={"tag": "a"})
        assert remote.delete(ids=["id1", "id2", "gone"]) == local.delete(ids=["id1", "id2", "gone"])
        remote.modify(name="parity-2", metadata={"hnsw:space": "cosine", "x": 1})
        assert remote.name == "parity-2" and remote.metadata["x"] == 1 and remote.count() == local.count()
        assert [c.name for c in remote_client.list_collections()].count("parity-2") == 1
        with remote.batch():
            remote.add(ids=["late"], embeddings=data[:1])
        assert remote.get(ids=["late"])["ids"] == ["late"]
        assert remote.stats()["count"] == remote.count()
        remote_client.delete_collection("parity-2")


def test_http_client_embedding_function_runs_on_the_client(server):
    def embed(texts):
        return [[float(len(t)), float(t.count("a"))] for t in texts]

    with HttpClient(host="127.0.0.1", port=server["port"]) as client:
        col = client.create_collection("with-ef", embedding_function=embed)
        col.add(ids=["x", "y"], documents=["banana", "kiwi"])
        assert col.query(query_texts="bananas", n_results=1)["ids"] == [["x"]]
        client.delete_collection("with-ef")


def test_http_client_unreachable_server():
    client = HttpClient(host="127.0.0.1", port=free_port())
    with pytest.raises(ServerUnavailableError, match="cannot reach"):
        client.heartbeat()
    assert issubclass(ServerUnavailableError, errors.VectorDBError)


def test_concurrent_queries_return_correct_results(server, records):
    data, ids = records["data"], records["ids"]
    queries = np.random.default_rng(99).standard_normal((48, data.shape[1])).astype(np.float32)
    order, _ = _l2_reference(data, queries, 5)
    expected = [[ids[j] for j in row] for row in order]
    failures = []
    with HttpClient(host="127.0.0.1", port=server["port"]) as shared:
        col = shared.get_collection("records")

        def worker(offset):
            try:
                for i in range(offset, len(queries), 8):
                    got = col.query(query_embedding=queries[i], n_results=5, include=[])["ids"][0]
                    if got != expected[i]:
                        failures.append((i, got))
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_event_loop_answers_while_the_engine_works(server, http):
    """A long engine call (training an IVF index) must not stop the server answering others."""
    rng = np.random.default_rng(8)
    data = rng.standard_normal((20000, 32)).astype(np.float32)
    r = http.post("/collections", json={"name": "slow", "dimension": 32, "use_ivf": True, "n_clusters": 2000})
    assert r.status_code == 200, r.text
    http.post("/collections/slow/batch/begin")
    for start in range(0, len(data), 5000):
        r = http.post("/collections/slow/add", json={"ids": [f"s{i}" for i in range(start, start + 5000)],
                                                     "embeddings": data[start:start + 5000].tolist()})
        assert r.status_code == 200, r.text
    http.post("/collections/slow/batch/end")
    done = threading.Event()
    answered_meanwhile = []

    def train():  # k-means, 2000 lists over 20000 vectors: a second or more of engine time, tiny request
        with httpx.Client(base_url=server["url"], timeout=600) as h:
            assert h.post("/collections/slow/rebuild").status_code == 200
        done.set()

    worker = threading.Thread(target=train)
    worker.start()
    done.wait(0.2)  # let the rebuild reach the engine first
    with httpx.Client(base_url=server["url"], timeout=600) as h:
        while not done.is_set():
            assert isinstance(h.get("/heartbeat").json()["nanosecond heartbeat"], int)  # through the engine pool
            if not done.is_set():
                answered_meanwhile.append(True)
    worker.join()
    # A server that trained on its event loop could answer at most the one request queued behind
    # the rebuild before the rebuild's own answer; several answers mean the loop stayed free.
    assert len(answered_meanwhile) >= 3, answered_meanwhile
    assert http.get("/collections/slow/stats").json()["trained"] is True
    http.delete("/collections/slow")


# ------------------------------------------------------------------ servers with other settings


def test_api_key(tmp_path):
    key = "s3cret-key"
    proc, url, port = start_server(tmp_path / "db", env={"VECTORDB_API_KEY": key})
    try:
        with httpx.Client(base_url=url) as h:
            assert h.get("/health").status_code == 200  # open, for probes
            assert h.get("/openapi.json").json()["components"]["securitySchemes"]
            r = h.get("/collections")
            _assert_error(r, 401, "AuthorizationError", "API key")
            assert r.headers["www-authenticate"] == "Bearer"
            for headers in ({"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"authorization": key},
                            {"authorization": f"Basic {key}"}, {"x-api-key": key[:-1]}):
                _assert_error(h.get("/collections", headers=headers), 401, "AuthorizationError")
            _assert_error(h.post("/collections", json={"name": "nokey"}), 401)
            assert h.get("/collections", headers={"authorization": f"Bearer {key}"}).status_code == 200
            assert h.get("/collections", headers={"x-api-key": key}).status_code == 200
        with HttpClient(host="127.0.0.1", port=port, api_key=key) as client:
            col = client.create_collection("secured")
            col.add(ids=["a"], embeddings=[[1.0, 2.0]])
            assert col.query(query_embedding=[1.0, 2.0], n_results=1)["ids"] == [["a"]]
        with HttpClient(host="127.0.0.1", port=port) as anonymous, pytest.raises(errors.AuthorizationError):
            anonymous.list_collections()
        with HttpClient(host="127.0.0.1", port=port, headers={"X-API-Key": key}) as by_header:
            assert [c.name for c in by_header.list_collections()] == ["secured"]
        assert "auth=api-key" in server_log(proc) and key not in server_log(proc)
    finally:
        stop_server(proc)


def test_body_limit_and_json_logs(tmp_path):
    limit = 64 * 1024
    proc, url, _ = start_server(tmp_path / "db", env={"VECTORDB_MAX_BODY_BYTES": str(limit),
                                                      "VECTORDB_LOG_FORMAT": "json"})
    try:
        with httpx.Client(base_url=url) as h:
            assert h.post("/collections", json={"name": "small", "dimension": 4}).status_code == 200
            ok = {"ids": ["a"], "embeddings": [[1, 2, 3, 4]], "documents": ["x" * 1000]}
            assert h.post("/collections/small/add", json=ok).status_code == 200
            big = {"ids": ["b"], "embeddings": [[1, 2, 3, 4]], "documents": ["x" * (limit + 10)]}
            _assert_error(h.post("/collections/small/add", json=big), 413, "RequestTooLarge", str(limit))
            # the limit applies before parsing: an oversized body of garbage is 413, not 422
            _assert_error(_raw(h, "POST", "/collections/small/add", b"{" * (limit + 1)), 413)

            def chunks():  # no Content-Length: counted while reading
                yield b'{"ids": ["c"], "embeddings": [[1, 2, 3, 4]], "documents": ["'
                for _ in range(limit // 1000 + 1):
                    yield b"y" * 1000
                yield b'"]}'

            _assert_error(h.post("/collections/small/add", content=chunks(), headers=JSON), 413, "RequestTooLarge")

            def small_chunks():
                yield b'{"ids": ["d"], "embeddings": '
                yield b"[[1, 2, 3, 4]]}"

            assert h.post("/collections/small/add", content=small_chunks(), headers=JSON).status_code == 200
            assert h.post("/collections/small/get", json={}).json()["ids"] == ["a", "d"]
            h.post("/collections/small/query", json={"query_embedding": [1, 2, 3, 4], "n_results": 1})
    finally:
        stop_server(proc)
    lines = [json.loads(line) for line in server_log(proc).splitlines() if line.strip()]  # every line is JSON
    startup = next(rec for rec in lines if "serving" in rec["message"])
    assert startup["version"] == vectordb.__version__ and startup["address"] == url
    assert startup["db_path"] == str(tmp_path / "db") and "cpu_kernel" in startup
    requests = [rec for rec in lines if rec["message"] == "request"]
    query = next(rec for rec in requests if rec["path"] == "/collections/small/query")
    assert query["method"] == "POST" and query["status"] == 200 and query["collection"] == "small"
    assert isinstance(query["duration_ms"], float) and query["duration_ms"] >= 0
    assert sum(1 for rec in requests if rec["status"] == 413) == 3


def test_port_fallback_and_reset(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        proc, url, port = start_server(tmp_path / "db", port=taken, env={"VECTORDB_ALLOW_RESET": "1"})
        try:
            assert port != taken and taken < port <= taken + 20
            assert f"port {taken} is in use; using port {port} instead" in server_log(proc)
            assert f"on http://127.0.0.1:{port}" in server_log(proc)
            with httpx.Client(base_url=url) as h:
                assert h.get("/health").status_code == 200
                h.post("/collections", json={"name": "r1"})
                h.post("/collections", json={"name": "r2"})
                assert h.post("/reset").json() == {"ok": True}
                assert h.get("/collections").json() == []
        finally:
            stop_server(proc)


def test_cli_reports_a_locked_database(tmp_path):
    proc, url, _ = start_server(tmp_path / "db")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORDB_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                          env.get("PYTHONPATH")]))
        second = subprocess.run([sys.executable, "-m", "vectordb", "serve", "--port", "0", "--path",
                                 str(tmp_path / "db")], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "cannot open" in second.stderr and str(tmp_path / "db") in second.stderr
    finally:
        stop_server(proc)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_keeps_data(tmp_path, kill):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((120, 6)).astype(np.float32)
    ids = [f"k{i}" for i in range(120)]
    metas = [{"n": i} for i in range(120)]
    proc, url, port = start_server(tmp_path / "db")
    try:
        with HttpClient(host="127.0.0.1", port=port) as client:
            col = client.create_collection("kept", metadata={"purpose": "restart"})
            col.add(ids=ids, embeddings=data, metadatas=metas, documents=ids)
            col.delete(ids=["k0", "k1"])
            col.update(ids=["k2"], metadatas=[{"n": -2}])
    finally:
        code = stop_server(proc, kill=kill)
    if kill:
        assert code == -9
    else:  # graceful: requests finish, the database is closed, the exit status is 0
        assert code == 0 and "stopped" in server_log(proc)
    proc, url, port = start_server(tmp_path / "db")
    try:
        with HttpClient(host="127.0.0.1", port=port) as client:
            col = client.get_collection("kept")
            assert col.metadata == {"purpose": "restart"} and col.count() == 118
            got = col.get(include=["embeddings", "metadatas", "documents"])
            assert got["ids"] == ids[2:]
            np.testing.assert_array_equal(got["embeddings"], data[2:])
            assert got["metadatas"] == [{"n": -2}] + metas[3:]
            assert got["documents"] == ids[2:]
    finally:
        stop_server(proc)


# ------------------------------------------------------------------ schemathesis


def test_schemathesis_finds_no_server_errors(tmp_path):
    cli = shutil.which("schemathesis") or shutil.which("st")
    if cli is None:
        pytest.skip("schemathesis is not installed (pip install -e .[test])")
    proc, url, _ = start_server(tmp_path / "db")
    try:
        # Give the fuzzer a real collection: "images" is the example name in the schema.
        httpx.post(url + "/collections", json={"name": "images", "dimension": 3})
        httpx.post(url + "/collections/images/add", json={"ids": ["id1", "id2"], "embeddings": [[1, 2, 3], [4, 5, 6]]})
        run = subprocess.run(
            [cli, "run", url + "/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--max-examples", "30", "--phases", "examples,coverage,fuzzing", "--no-shrink", "--seed", "1",
             "--request-timeout", "30"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-6000:]
        assert "status=500" not in server_log(proc) and "unhandled error" not in server_log(proc)
    finally:
        stop_server(proc)


# ------------------------------------------------------------------ binary vectors (base64 float32)


def test_base64_vectors_on_the_seed_api(http):
    vectors = np.random.default_rng(7).standard_normal((5, 6)).astype(np.float32)
    encoded = [base64.b64encode(v.tobytes()).decode() for v in vectors]
    assert http.post("/collections", json={"name": "b64"}).status_code == 200
    r = http.post("/collections/b64/add", json={"ids": [str(i) for i in range(5)], "embeddings_base64": encoded})
    assert r.status_code == 200, r.text
    got = http.post("/collections/b64/get", json={"include": ["embeddings"]}).json()["embeddings"]
    assert np.array_equal(np.asarray(got, dtype=np.float32), vectors)
    r = http.post("/collections/b64/query", json={"query_embeddings_base64": encoded[:2], "n_results": 1})
    assert r.json()["ids"] == [["0"], ["1"]]
    before = http.post("/collections/b64/get", json={"include": ["embeddings"]}).json()
    for bad in ({"ids": ["x"], "embeddings_base64": ["###"]},
                {"ids": ["x"], "embeddings_base64": [base64.b64encode(b"12345").decode()]},
                {"ids": ["x"], "embeddings_base64": [base64.b64encode(b"1234").decode()]},  # dimension 1, not 6
                {"ids": ["x"], "embeddings_base64": encoded[:1], "embeddings": [[1.0] * 6]}):
        r = http.post("/collections/b64/add", json=bad)
        assert r.status_code == 422 and r.json()["error"] in ("InvalidArgumentError", "InvalidDimensionError"), r.text
    assert http.post("/collections/b64/get", json={"include": ["embeddings"]}).json() == before


def test_http_client_sends_numpy_vectors_in_a_binary_frame():
    from vectordb.http_client import _vectors
    from vectordb.wire import FRAME_CONTENT_TYPE, split_frame

    rows = np.array([[1.5, -2.0], [3.0, 4.25]], dtype=np.float32)
    sent = _vectors("embeddings", rows)
    assert list(sent) == ["embeddings_f32"] and np.array_equal(sent["embeddings_f32"], rows)
    assert list(_vectors("embeddings", rows.astype(np.float64))) == ["embeddings_f32"]
    assert list(_vectors("query_embeddings", rows[0])) == ["query_embeddings_f32"]
    args = HttpClient._send_args(None, "POST", "/x", {"ids": ["a", "b"], **sent})  # type: ignore[arg-type]
    assert args["headers"]["content-type"] == FRAME_CONTENT_TYPE
    header, (field, vectors) = split_frame(args["content"], json.loads)
    assert header == {"ids": ["a", "b"]} and field == "embeddings" and np.array_equal(vectors, rows)
    # what the server must judge and name goes as JSON
    for value in ([[1.0, 2.0]], np.array([[1e300, 0.0]]), np.array([[np.nan, 0.0]]), np.array([[1, 2]]),
                  np.zeros((0, 3), dtype=np.float32)):
        assert "embeddings_f32" not in _vectors("embeddings", value)
    assert _vectors("embeddings", None) == {}
