"""chroma's /api/v2 on `vectordb serve`: raw requests side by side with `chroma run` (the server in the
chromadb package), bad requests (chroma-shaped 4xx, data unchanged), token auth with chromadb's
client headers, tenants and databases, chromadb's AsyncHttpClient, base64 embeddings.

The API suite itself also runs through chromadb.HttpClient (client kind "chroma" in conftest.py).
"""
from __future__ import annotations

import asyncio
import base64
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import free_port, server_log, start_server, stop_server  # noqa: E402

chromadb = pytest.importorskip("chromadb")
from chromadb import errors as chroma_errors  # noqa: E402

DB = "/api/v2/tenants/default_tenant/databases/default_database"


@pytest.fixture(autouse=True)
def _close_chroma_clients() -> Iterator[None]:
    yield
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()  # chromadb keeps every client's connections otherwise


@pytest.fixture(scope="module")
def vdb(tmp_path_factory) -> Iterator[str]:
    proc, url, _ = start_server(tmp_path_factory.mktemp("v2") / "db")
    yield url
    assert "unhandled error" not in server_log(proc)
    stop_server(proc)


def start_chroma(path: Path) -> Tuple[subprocess.Popen, str]:
    """`chroma run` on loopback; skips the test when it cannot start."""
    cli = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if cli is None:
        pytest.skip("the `chroma` command (chromadb package) is not installed")
    port = free_port()
    log = open(path.parent / "chroma.log", "wb")
    proc = subprocess.Popen([cli, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/v2/heartbeat", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    pytest.skip("`chroma run` did not start")


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory) -> Iterator[str]:
    proc, url = start_chroma(tmp_path_factory.mktemp("chroma") / "db")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def b64(vector: List[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


# ------------------------------------------------------------------ side by side with chroma run

# (method, path with {cid} for the collection id, JSON body or None, what to compare)
# what: "status" = status and error class only; "body" = the whole body as well.
SCRIPT: List[Tuple[str, str, Any, str]] = [
    ("GET", "/api/v2/auth/identity", None, "body"),
    ("GET", "/api/v2/tenants/default_tenant", None, "body"),
    ("GET", "/api/v2/tenants/no_such_tenant", None, "status"),
    ("GET", "/api/v2/tenants/default_tenant/databases", None, "body"),
    ("GET", DB, None, "body"),
    ("GET", "/api/v2/tenants/default_tenant/databases/no_such_db", None, "status"),
    ("POST", "/api/v2/tenants", {"name": "t1"}, "status"),  # too short
    ("POST", "/api/v2/tenants", {"name": "tenant-one"}, "body"),
    ("POST", "/api/v2/tenants", {"name": "tenant-one"}, "status"),
    ("POST", "/api/v2/tenants/tenant-one/databases", {"name": "db-one"}, "body"),
    ("POST", "/api/v2/tenants/tenant-one/databases", {"name": "db-one"}, "status"),
    ("GET", "/api/v2/tenants/tenant-one/databases/db-one/collections", None, "body"),
    ("POST", DB + "/collections", {"name": "x"}, "status"),
    ("POST", DB + "/collections", {"name": "things", "metadata": {"hnsw:space": "cosine", "team": "a"}}, "status"),
    ("POST", DB + "/collections", {"name": "things"}, "status"),
    ("GET", DB + "/collections_count", None, "body"),
    ("GET", DB + "/collections/no-such-collection", None, "status"),
    ("GET", DB + "/collections/by-id/00000000-0000-4000-8000-000000000000", None, "status"),
    ("POST", DB + "/collections/{cid}/add",
     {"ids": ["a", "b", "c"], "embeddings": [[1, 2, 3], [3, 2, 1], [0, 1, 0]],
      "metadatas": [{"k": 1, "tag": "x"}, None, {"k": 3, "tag": "y"}], "documents": ["hello world", "bye", None]},
     "body"),
    ("POST", DB + "/collections/{cid}/add", {"ids": ["d"], "embeddings": [b64([1, 1, 1])]}, "body"),
    ("POST", DB + "/collections/{cid}/add", {"ids": ["e"], "embeddings": [[1, 2]]}, "status"),
    ("POST", DB + "/collections/00000000-0000-4000-8000-000000000000/add",
     {"ids": ["e"], "embeddings": [[1, 2, 3]]}, "status"),
    ("POST", DB + "/collections/not-a-uuid/add", {"ids": ["e"], "embeddings": [[1, 2, 3]]}, "status"),
    ("GET", DB + "/collections/{cid}/count", None, "body"),
    ("POST", DB + "/collections/{cid}/get", {"ids": ["c", "a"], "include": ["metadatas", "documents", "embeddings"]},
     "sorted"),
    ("POST", DB + "/collections/{cid}/get", {"where": {"k": {"$gte": 2}}}, "body"),
    ("POST", DB + "/collections/{cid}/get", {"where_document": {"$contains": "hello"}, "include": []}, "body"),
    ("POST", DB + "/collections/{cid}/get", {"where": {"k": {"$bad": 1}}}, "status"),
    ("POST", DB + "/collections/{cid}/get", {"limit": 2, "offset": 1, "include": ["documents"]}, "body"),
    ("POST", DB + "/collections/{cid}/query",
     {"query_embeddings": [[1, 2, 3], [0, 1, 0]], "n_results": 2,
      "include": ["metadatas", "documents", "distances", "embeddings"]}, "body"),
    ("POST", DB + "/collections/{cid}/query",
     {"query_embeddings": [[1, 2, 3]], "n_results": 5, "where": {"tag": {"$in": ["x", "y"]}}}, "body"),
    ("POST", DB + "/collections/{cid}/query", {"query_embeddings": [[1, 2]], "n_results": 1}, "status"),
    ("POST", DB + "/collections/{cid}/update", {"ids": ["a"], "metadatas": [{"k": 10}]}, "body"),
    ("POST", DB + "/collections/{cid}/upsert", {"ids": ["z"], "embeddings": [[0, 0, 1]], "documents": ["zed"]}, "body"),
    ("POST", DB + "/collections/{cid}/get", {"ids": ["a", "z"]}, "sorted"),
    ("POST", DB + "/collections/{cid}/delete", {"where": {"k": {"$eq": 3}}}, "body"),
    ("GET", DB + "/collections/{cid}/count", None, "body"),
    ("PUT", DB + "/collections/{cid}", {"new_name": "renamed", "new_metadata": {"team": "b"}}, "body"),
    ("GET", DB + "/collections/things", None, "status"),
    ("DELETE", DB + "/collections/renamed", None, "body"),
    ("DELETE", DB + "/collections/renamed", None, "status"),
    ("POST", "/api/v2/reset", None, "status"),
    ("GET", "/api/v2/no/such/route", None, "status"),
]


def _normalize(body: Any) -> Any:
    """Floats rounded (float32 printing differs), so bodies compare by value."""
    if isinstance(body, float):
        return round(body, 4)
    if isinstance(body, list):
        return [_normalize(x) for x in body]
    if isinstance(body, dict):
        return {k: _normalize(v) for k, v in body.items()}
    return body


def _sorted_by_id(body: Dict[str, Any]) -> Dict[str, Any]:
    # chroma returns get(ids=...) in storage order, vectordb in the order asked (documented).
    order = sorted(range(len(body["ids"])), key=lambda i: body["ids"][i])
    return {k: ([v[i] for i in order] if isinstance(v, list) and k != "include" else v) for k, v in body.items()}


def run_script(url: str) -> List[Tuple[int, Any]]:
    out: List[Tuple[int, Any]] = []
    cid = None
    with httpx.Client(base_url=url, timeout=60) as http:
        for method, path, body, _ in SCRIPT:
            r = http.request(method, path.replace("{cid}", str(cid)), json=body)
            data = r.json() if r.content else None
            if path.endswith("/collections") and method == "POST" and r.status_code == 200:
                cid = data["id"]
            out.append((r.status_code, data))
    return out


def test_v2_answers_as_chroma_run_does(vdb, chroma_url):
    ours, theirs = run_script(vdb), run_script(chroma_url)
    for (method, path, body, what), (s1, b1), (s2, b2) in zip(SCRIPT, ours, theirs):
        step = f"{method} {path} {body}"
        assert (s1 >= 400) == (s2 >= 400), f"{step}: vectordb {s1} {b1}, chroma {s2} {b2}"
        if s2 >= 400:
            # The same class of error reaches chromadb's client (names it knows), message our own.
            assert set(b1) >= {"error", "message"}, step
            assert b1["error"] in chroma_errors.error_types, step
            if isinstance(b2, dict) and b2.get("error") != "ChromaError":  # its generic name: ours is specific
                assert (s1, b1["error"]) == (s2, b2["error"]), f"{step}: vectordb {s1} {b1}, chroma {s2} {b2}"
        elif what == "body":
            assert _normalize(b1) == _normalize(b2), step
        elif what == "sorted":
            assert _normalize(_sorted_by_id(b1)) == _normalize(_sorted_by_id(b2)), step


# ------------------------------------------------------------------ bad requests


def _snapshot(http: httpx.Client, cid: str) -> Dict[str, Any]:
    r = http.post(f"{DB}/collections/{cid}/get", json={"include": ["embeddings", "metadatas", "documents"]})
    assert r.status_code == 200
    return r.json()


@pytest.fixture
def records(vdb) -> Iterator[Tuple[httpx.Client, str]]:
    with httpx.Client(base_url=vdb, timeout=60) as http:
        http.delete(DB + "/collections/badreq")
        cid = http.post(DB + "/collections", json={"name": "badreq"}).json()["id"]
        r = http.post(f"{DB}/collections/{cid}/add",
                      json={"ids": ["a", "b"], "embeddings": [[1, 2, 3], [4, 5, 6]],
                            "metadatas": [{"k": 1}, {"k": 2}], "documents": ["one", "two"]})
        assert r.status_code == 201
        yield http, cid
        http.delete(DB + "/collections/badreq")


BAD_WRITES = {
    "wrong-dimension": ({"ids": ["c"], "embeddings": [[1, 2]]}, 400, "InvalidArgumentError"),
    "mixed-dimensions": ({"ids": ["c", "d"], "embeddings": [[1, 2, 3], [1, 2]]}, 400, "InvalidArgumentError"),
    "duplicate-ids": ({"ids": ["c", "c"], "embeddings": [[1, 2, 3], [1, 2, 3]]}, 400, "DuplicateID"),
    "ids-not-strings": ({"ids": [1], "embeddings": [[1, 2, 3]]}, 400, "InvalidArgumentError"),
    "ids-missing": ({"embeddings": [[1, 2, 3]]}, 400, "InvalidArgumentError"),
    "embeddings-a-string": ({"ids": ["c"], "embeddings": "xx"}, 400, "InvalidArgumentError"),
    "embeddings-of-strings": ({"ids": ["c"], "embeddings": [["a", "b", "c"]]}, 400, "InvalidArgumentError"),
    "embeddings-of-bools": ({"ids": ["c"], "embeddings": [[True, False, True]]}, 400, "InvalidArgumentError"),
    "bad-base64": ({"ids": ["c"], "embeddings": ["not base64!"]}, 400, "InvalidArgumentError"),
    "base64-not-float32": ({"ids": ["c"], "embeddings": [base64.b64encode(b"abcde").decode()]}, 400,
                           "InvalidArgumentError"),
    "base64-nan": ({"ids": ["c"], "embeddings": [b64([math.nan, 1, 2])]}, 400, "InvalidArgumentError"),
    "base64-wrong-dimension": ({"ids": ["c"], "embeddings": [b64([1, 2])]}, 400, "InvalidArgumentError"),
    "too-few-embeddings": ({"ids": ["c", "d"], "embeddings": [[1, 2, 3]]}, 400, "InvalidArgumentError"),
    "too-many-documents": ({"ids": ["c"], "embeddings": [[1, 2, 3]], "documents": ["x", "y"]}, 400,
                           "InvalidArgumentError"),
    "nested-metadata": ({"ids": ["c"], "embeddings": [[1, 2, 3]], "metadatas": [{"x": {"y": 1}}]}, 400,
                        "InvalidArgumentError"),
    "reserved-metadata-key": ({"ids": ["c"], "embeddings": [[1, 2, 3]], "metadatas": [{"$x": 1}]}, 400,
                              "InvalidArgumentError"),
    "document-not-a-string": ({"ids": ["c"], "embeddings": [[1, 2, 3]], "documents": [5]}, 400,
                              "InvalidArgumentError"),
    "number-too-large": ({"ids": ["c"], "embeddings": [[1e300, 2, 3]]}, 400, "InvalidArgumentError"),
}


@pytest.mark.parametrize("method", ["add", "upsert", "update"])
@pytest.mark.parametrize("case", sorted(BAD_WRITES))
def test_bad_writes_get_chroma_errors_and_change_nothing(records, method, case):
    http, cid = records
    body, status, error = BAD_WRITES[case]
    if method == "update" and isinstance(body.get("ids"), list) and body["ids"] and isinstance(body["ids"][0], str):
        body = dict(body, ids=[["a", "b"][i % 2] if len(set(body["ids"])) == len(body["ids"]) else "a"
                               for i in range(len(body["ids"]))])
    before = _snapshot(http, cid)
    r = http.post(f"{DB}/collections/{cid}/{method}", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and r.json()["message"], r.text
    assert r.json()["error"] in chroma_errors.error_types
    assert _snapshot(http, cid) == before


@pytest.mark.parametrize("path, body, status, error", [
    ("get", {"where": {"k": {"$bad": 1}}}, 400, "InvalidArgumentError"),
    ("get", {"where": {}}, 400, "InvalidArgumentError"),
    ("get", {"limit": -1}, 400, "InvalidArgumentError"),
    ("get", {"include": ["nonsense"]}, 400, "InvalidArgumentError"),
    ("query", {"query_embeddings": [[1, 2, 3]], "n_results": -1}, 400, "InvalidArgumentError"),
    ("query", {"query_embeddings": [[1, 2]]}, 400, "InvalidArgumentError"),
    ("query", {"n_results": 1}, 400, "InvalidArgumentError"),
    ("delete", {"where": {"k": {"$gt": "text"}}}, 400, "InvalidArgumentError"),
    ("delete", {"where_document": {"$regex": ""}}, 400, "InvalidArgumentError"),
    ("delete", {"ids": [3]}, 400, "InvalidArgumentError"),
])
def test_bad_reads_and_deletes_get_chroma_errors(records, path, body, status, error):
    http, cid = records
    before = _snapshot(http, cid)
    r = http.post(f"{DB}/collections/{cid}/{path}", json=body)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert _snapshot(http, cid) == before


def test_bad_bodies_and_unknown_collections(records):
    http, cid = records
    before = _snapshot(http, cid)
    r = http.post(f"{DB}/collections/{cid}/add", content=b"{not json", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (400, "InvalidArgumentError")
    r = http.post(f"{DB}/collections/{cid}/add", content=b'{"ids": ["c"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "ChromaError"
    r = http.post(f"{DB}/collections/not-a-uuid/add", json={"ids": ["c"], "embeddings": [[1, 2, 3]]})
    assert (r.status_code, r.json()["error"]) == (400, "InvalidArgumentError")
    r = http.post(f"{DB}/collections/00000000-0000-4000-8000-000000000000/get", json={})
    assert (r.status_code, r.json()["error"]) == (404, "NotFoundError")
    r = http.post(f"/api/v2/tenants/nobody/databases/default_database/collections/{cid}/get", json={})
    assert (r.status_code, r.json()["error"]) == (404, "NotFoundError")
    r = http.put(f"{DB}/collections/{cid}", json={"new_name": "x"})
    assert (r.status_code, r.json()["error"]) == (400, "InvalidArgumentError")
    assert http.get(f"{DB}/collections/badreq").status_code == 200
    assert _snapshot(http, cid) == before


def test_base64_and_list_embeddings_store_the_same_values(records):
    http, cid = records
    vectors = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
    r = http.post(f"{DB}/collections/{cid}/add",
                  json={"ids": ["l0", "l1"], "embeddings": vectors[:2].astype(np.float64).tolist()})
    assert r.status_code == 201
    r = http.post(f"{DB}/collections/{cid}/add",
                  json={"ids": ["b0", "b1"], "embeddings": [b64(v) for v in vectors[2:]]})
    assert r.status_code == 201
    got = http.post(f"{DB}/collections/{cid}/get", json={"ids": ["l0", "l1", "b0", "b1"], "include": ["embeddings"]})
    assert np.array_equal(np.asarray(got.json()["embeddings"], dtype=np.float32), vectors)


# ------------------------------------------------------------------ chromadb's clients


def test_chroma_token_auth_headers(tmp_path):
    key = "s3cret-key"
    proc, url, port = start_server(tmp_path / "db", env={"VECTORDB_API_KEY": key})
    try:
        for header in ("Authorization", "X-Chroma-Token"):
            settings = chromadb.config.Settings(
                chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
                chroma_client_auth_credentials=key, chroma_auth_token_transport_header=header)
            client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings)
            col = client.get_or_create_collection("secured", embedding_function=None)
            col.upsert(ids=[header], embeddings=[[1.0, 2.0]])
        assert client.get_collection("secured", embedding_function=None).count() == 2
        with pytest.raises(chroma_errors.ChromaError):
            chromadb.HttpClient(host="127.0.0.1", port=port)  # no key: its first call is refused
        r = httpx.get(f"{url}{DB}/collections", headers={"X-Chroma-Token": "wrong"})
        assert r.status_code == 401 and r.json()["error"] == "AuthError"
        assert httpx.get(url + "/api/v2/heartbeat").status_code == 200  # open, as on chroma
    finally:
        stop_server(proc)


def test_tenants_and_databases_survive_a_restart_without_collections(tmp_path):
    path = tmp_path / "db"
    proc, url, port = start_server(path)
    try:
        admin = chromadb.AdminClient(chromadb.config.Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
            chroma_server_http_port=port))
        admin.create_tenant("acme")
        admin.create_database("empty", tenant="acme")
        admin.create_database("gone", tenant="acme")
        admin.delete_database("gone", tenant="acme")
    finally:
        stop_server(proc)
    proc, url, port = start_server(path)
    try:
        admin = chromadb.AdminClient(chromadb.config.Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
            chroma_server_http_port=port))
        assert admin.get_tenant("acme")["name"] == "acme"
        assert [d["name"] for d in admin.list_databases(tenant="acme")] == ["empty"]
        client = chromadb.HttpClient(host="127.0.0.1", port=port, tenant="acme", database="empty")
        assert client.list_collections() == []
    finally:
        stop_server(proc)


def test_names_with_a_slash_are_not_found_not_redirected(vdb):
    db = f"{vdb}/api/v2/tenants/default_tenant/databases/default_database"
    for path in ("/collections/a/b", "/collections/abc/", "/collections/a%2Fb"):
        r = httpx.get(db + path)
        assert r.status_code == 404 and r.json()["error"] == "NotFoundError", (path, r.text)
    assert httpx.get(db + "/collections/a%2Fb").json()["message"] == "Collection [a/b] does not exist"
    client = chromadb.HttpClient(host="127.0.0.1", port=int(vdb.rsplit(":", 1)[1]))
    for name in ("a/b", "abc/"):
        with pytest.raises(chroma_errors.NotFoundError):
            client.get_collection(name)


def test_tenants_and_databases_are_namespaces_of_the_catalog(vdb):
    admin = chromadb.AdminClient(chromadb.config.Settings(
        chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
        chroma_server_http_port=int(vdb.rsplit(":", 1)[1])))
    admin.create_tenant("acme")
    admin.create_database("prod", tenant="acme")
    admin.create_database("test", tenant="acme")
    assert sorted(d["name"] for d in admin.list_databases(tenant="acme")) == ["prod", "test"]
    port = int(vdb.rsplit(":", 1)[1])
    prod = chromadb.HttpClient(host="127.0.0.1", port=port, tenant="acme", database="prod")
    test = chromadb.HttpClient(host="127.0.0.1", port=port, tenant="acme", database="test")
    prod.create_collection("docs", embedding_function=None).add(ids=["p"], embeddings=[[1.0]])
    test.create_collection("docs", embedding_function=None).add(ids=["t1", "t2"], embeddings=[[1.0], [2.0]])
    assert prod.get_collection("docs", embedding_function=None).count() == 1
    assert test.get_collection("docs", embedding_function=None).count() == 2
    assert [c.name for c in prod.list_collections()] == ["docs"] and prod.count_collections() == 1
    # the seed API (and the default database) see the catalog names
    names = [c["name"] for c in httpx.get(vdb + "/collections").json()]
    assert {"acme.prod.docs", "acme.test.docs"} <= set(names)
    # a collection id from another database is not found here
    other = test.get_collection("docs", embedding_function=None).id
    r = httpx.post(f"{vdb}/api/v2/tenants/acme/databases/prod/collections/{other}/get", json={})
    assert r.status_code == 404
    admin.delete_database("test", tenant="acme")
    with pytest.raises(chroma_errors.NotFoundError):
        admin.get_database("test", tenant="acme")
    assert "acme.test.docs" not in [c["name"] for c in httpx.get(vdb + "/collections").json()]
    prod.delete_collection("docs")


def test_async_http_client(vdb):
    port = int(vdb.rsplit(":", 1)[1])

    async def scenario() -> None:
        client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=port)
        col = await client.create_collection("async-col", metadata={"hnsw:space": "cosine"}, embedding_function=None)
        await col.add(ids=["a", "b", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                      metadatas=[{"g": 1}, {"g": 2}, {"g": 1}], documents=["x", "y", "z"])
        assert await col.count() == 3
        res = await col.query(query_embeddings=[[1.0, 0.1]], n_results=2, where={"g": 1})
        assert res["ids"] == [["a", "c"]]
        got = await col.get(ids=["b"], include=["documents", "metadatas"])
        assert got["documents"] == ["y"] and got["metadatas"] == [{"g": 2}]
        await col.delete(ids=["a"])
        assert await col.count() == 2
        with pytest.raises(chroma_errors.NotFoundError):
            await client.get_collection("missing-col")
        await client.delete_collection("async-col")

    asyncio.run(scenario())


def test_openapi_documents_both_apis(vdb):
    paths = httpx.get(vdb + "/openapi.json").json()["paths"]
    assert "/collections/{name}/query" in paths
    assert "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query" in paths
    assert "/api/v2/pre-flight-checks" in paths


def test_langchain_chroma_store_through_v2(vdb):
    langchain_chroma = pytest.importorskip("langchain_chroma")
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding

    client = chromadb.HttpClient(host="127.0.0.1", port=int(vdb.rsplit(":", 1)[1]))
    store = langchain_chroma.Chroma(collection_name="lc-docs", client=client,
                                    embedding_function=DeterministicFakeEmbedding(size=16),
                                    collection_metadata={"hnsw:space": "cosine"})
    docs = [Document(page_content=text, metadata={"n": i}) for i, text in enumerate(["cats", "dogs", "birds"])]
    ids = store.add_documents(docs, ids=["c", "d", "b"])
    assert ids == ["c", "d", "b"]
    hits = store.similarity_search_with_relevance_scores("dogs", k=2)
    assert hits[0][0].page_content == "dogs" and hits[0][0].metadata == {"n": 1}
    assert 0.99 <= hits[0][1] <= 1.0 + 1e-6  # cosine relevance of the identical text
    assert [d.page_content for d in store.similarity_search("birds", k=1, filter={"n": 2})] == ["birds"]
    store.delete(ids=["c"])
    assert sorted(store.get()["ids"]) == ["b", "d"]
    client.delete_collection("lc-docs")
