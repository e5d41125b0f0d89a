"""chromadb drop-in features over every client: query(ids=...), uris, chromadb's configuration
shape, data loaders, chromadb's names (Settings, Client, errors, types)."""
from __future__ import annotations

import numpy as np
import pytest

import vectordb
import vectordb as chromadb
from vectordb.errors import InvalidArgumentError

RNG = np.random.default_rng(7)


def _exact(data: np.ndarray, q: np.ndarray, rows: list, k: int) -> list:
    d = ((data[rows] - q) ** 2).sum(axis=1)
    return [rows[i] for i in np.argsort(d, kind="stable")[:k]]


@pytest.mark.parametrize("use_ivf", [False, True])
def test_query_ids_restricts_the_search(client, use_ivf):
    n, d = 600, 8
    data = RNG.standard_normal((n, d)).astype(np.float32)
    ids = [f"r{i}" for i in range(n)]
    col = client.create_collection("restricted", use_ivf=use_ivf, n_clusters=8 if use_ivf else None)
    col.add(ids=ids, embeddings=data, metadatas=[{"even": i % 2 == 0} for i in range(n)])
    if use_ivf:
        col.rebuild()  # train now (below the automatic threshold)
        assert col.stats()["index"] == "ivf"
    q = RNG.standard_normal((2, d)).astype(np.float32)
    allowed = sorted(RNG.choice(n, 40, replace=False).tolist())
    res = col.query(query_embeddings=q, ids=[ids[i] for i in allowed] + ["unknown"], n_results=5,
                    include=["distances"])
    for j in range(2):
        assert res["ids"][j] == [ids[i] for i in _exact(data, q[j], allowed, 5)]
    both = col.query(query_embeddings=q, ids=[ids[i] for i in allowed], where={"even": True}, n_results=100)
    even = [i for i in allowed if i % 2 == 0]
    assert both["ids"][0] == [ids[i] for i in _exact(data, q[0], even, 100)]
    assert col.query(query_embeddings=q[:1], ids=["unknown"], n_results=3)["ids"] == [[]]
    if use_ivf:
        # Many ids, few lists probed: the inverted lists are searched under the id bitmap.
        many = sorted(RNG.choice(n, 400, replace=False).tolist())
        probe1 = col.query(query_embeddings=q, ids=[ids[i] for i in many], n_results=10, n_probe=1)
        assert all(set(r) <= {ids[i] for i in many} for r in probe1["ids"])
        full = col.query(query_embeddings=q, ids=[ids[i] for i in many], n_results=10, n_probe=8)
        for j in range(2):
            exact = [ids[i] for i in _exact(data, q[j], many, 10)]
            assert full["ids"][j] == exact
            recall = len(set(probe1["ids"][j]) & set(exact)) / 10
            print(f"query(ids=400 of 600, n_probe=1 of 8) recall@10 vs exact: {recall:.2f}")
    with pytest.raises(InvalidArgumentError):
        col.query(query_embeddings=q, ids=[], n_results=3)


def test_uris_are_stored_filtered_and_returned(client, client_kind, reopen):
    col = client.create_collection("with-uris")
    col.add(ids=["a", "b", "c"], embeddings=[[1, 0], [0, 1], [1, 1]], uris=["s3://a.png", None, "s3://c.png"],
            metadatas=[{"k": 1}, {"k": 2}, None])
    got = col.get(include=["uris", "metadatas"])
    assert got["uris"] == ["s3://a.png", None, "s3://c.png"]
    assert got["metadatas"] == [{"k": 1}, {"k": 2}, None]  # the uri is not metadata
    assert col.get(include=["metadatas"])["uris"] is None
    assert col.get(where={"chroma:uri": "s3://c.png"})["ids"] == ["c"]
    assert col.query(query_embeddings=[[1, 0]], n_results=2, include=["uris"])["uris"] == [["s3://a.png", "s3://c.png"]]
    col.update(ids=["a"], metadatas=[{"k": 5}])  # metadata merge keeps the uri
    col.upsert(ids=["b"], embeddings=[[0, 2]], uris=["s3://b.png"])
    col.update(ids=["c"], uris=["s3://c2.png"])
    expected = {"ids": ["a", "b", "c"], "uris": ["s3://a.png", "s3://b.png", "s3://c2.png"],
                "metadatas": [{"k": 5}, {"k": 2}, None]}
    got = col.get(include=["uris", "metadatas"])
    assert {k: got[k] for k in expected} == expected
    with pytest.raises(InvalidArgumentError):
        col.add(ids=["d"], embeddings=[[1, 2]], uris=["x", "y"])
    with pytest.raises(InvalidArgumentError):
        col.add(ids=["d"], embeddings=[[1, 2]], uris=[3])
    with pytest.raises(InvalidArgumentError):
        col.add(ids=["d"], embeddings=[[1, 2]], metadatas=[{"#uri": "x"}])  # the reserved key
    assert col.count() == 3
    if client_kind == "persistent":
        col = reopen(client).get_collection("with-uris")
        got = col.get(include=["uris", "metadatas"])
        assert {k: got[k] for k in expected} == expected


def test_data_loader_loads_from_uris(client):
    loaded = []

    def loader(uris):
        loaded.append(list(uris))
        return [f"data:{u}" for u in uris]

    def ef(items):
        return [[float(len(x)), 1.0] for x in items]

    col = client.create_collection("loaded", embedding_function=ef, data_loader=loader)
    col.add(ids=["a", "b"], uris=["u1", "uu2"])
    assert loaded == [["u1", "uu2"]]
    got = col.get(include=["data"])
    assert got["data"] == ["data:u1", "data:uu2"] and got["uris"] is None
    res = col.query(query_uris=["uu2"], n_results=1, include=["data", "uris"])
    assert res["ids"] == [["b"]] and res["data"] == [["data:uu2"]] and res["uris"] == [["uu2"]]
    plain = client.get_collection("loaded")
    with pytest.raises(InvalidArgumentError, match="data_loader"):
        plain.get(include=["data"])


def test_configuration_has_chromas_shape(client):
    col = client.create_collection("shaped", metadata={"hnsw:space": "cosine"}, use_ivf=True, n_clusters=4)
    cfg = col.configuration
    assert cfg["hnsw"]["space"] == "cosine"  # what LangChain reads for relevance scores
    assert cfg["spann"] is None
    # as chromadb: the (default) embedding function object, and its name and config in configuration_json
    assert cfg["embedding_function"].name() == "default"
    assert col.configuration_json["embedding_function"]["name"] == "default"
    assert (cfg["use_ivf"], cfg["n_clusters"], cfg["n_probe"], cfg["dimension"]) == (True, 4, None, None)
    assert col.configuration_json["hnsw"] == cfg["hnsw"]
    tuned = client.create_collection("tuned-hnsw", configuration={"hnsw": {"space": "ip", "ef_construction": 200,
                                                                           "max_neighbors": 32}})
    assert tuned.configuration["hnsw"]["space"] == "ip"
    assert tuned.configuration["hnsw"]["ef_construction"] == 200
    assert client.get_collection("tuned-hnsw").configuration["hnsw"]["max_neighbors"] == 32
    spann = client.create_collection("spann-cfg", configuration={"spann": {"space": "cosine", "search_nprobe": 8}})
    assert spann.configuration["spann"] == {"space": "cosine", "search_nprobe": 8}
    own = client.create_collection("own-keys", configuration={"dimension": 3, "use_ivf": True, "n_probe": 2})
    assert (own.configuration["dimension"], own.configuration["use_ivf"], own.configuration["n_probe"]) == (3, True, 2)
    for bad in ({"hnsw": {"space": "manhattan"}}, {"hnsw": {"bogus": 1}}, {"hnsw": {"ef_search": "x"}},
                {"hnsw": {"space": "l2"}, "spann": {"space": "l2"}}, {"unknown": 1}, "hnsw"):
        with pytest.raises(InvalidArgumentError):
            client.create_collection("bad-cfg", configuration=bad)
    with pytest.raises(InvalidArgumentError):
        client.create_collection("bad-cfg", configuration={"hnsw": {"space": "ip"}}, metadata={"hnsw:space": "l2"})
    assert [c.name for c in client.list_collections()] == ["shaped", "tuned-hnsw", "spann-cfg", "own-keys"]


def test_embedding_function_inside_configuration(client):
    def ef(texts):
        return [[float(len(t)), 0.5] for t in texts]

    col = client.create_collection("ef-in-cfg", configuration={"embedding_function": ef})
    assert col.configuration["embedding_function"] is ef
    assert col.configuration_json["embedding_function"] == {"type": "legacy"}
    col.add(ids=["a"], documents=["abc"])
    assert col.get(include=["embeddings"])["embeddings"].tolist() == [[3.0, 0.5]]


def test_chroma_names():
    for name in ["Client", "PersistentClient", "EphemeralClient", "HttpClient", "AsyncHttpClient", "Settings",
                 "Collection", "Documents", "Embeddings", "Metadata", "Metadatas", "IDs", "Where", "WhereDocument",
                 "Include", "QueryResult", "GetResult", "URIs", "CollectionMetadata"]:
        assert hasattr(chromadb, name), name
    import chromadb as real

    for name in real.errors.error_types:
        assert name in vectordb.errors.error_types
    for cls in real.errors.error_types.values():
        assert hasattr(vectordb.errors, cls.__name__), cls.__name__
    assert issubclass(vectordb.errors.CollectionExistsError, vectordb.errors.InternalError)
    assert vectordb.errors.InvalidDimensionError.name() == "InvalidDimension"


def test_client_and_settings(tmp_path):
    s = chromadb.Settings(anonymized_telemetry=False, allow_reset=True, is_persistent=True,
                          persist_directory=str(tmp_path / "db"))
    c = chromadb.Client(s)
    assert isinstance(c, vectordb.PersistentClient)
    c.create_collection("kept").add(ids=["a"], embeddings=[[1.0]])
    assert c.reset() is True  # allow_reset is honoured
    c.close()
    e = chromadb.Client(chromadb.Settings(anonymized_telemetry=False))
    assert isinstance(e, vectordb.EphemeralClient)
    with pytest.raises(vectordb.AuthorizationError):
        e.reset()
    e.close()
