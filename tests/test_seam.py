"""The Collection/client seam: every client implements vectordb.backend.Backend and returns plain
vectordb.Collection objects; AsyncHttpClient serves the same API as coroutines."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

import vectordb
from vectordb.backend import Backend
from vectordb.collection import AsyncCollection, Collection


def test_every_client_is_a_backend_and_returns_collection(client):
    assert isinstance(client, Backend)
    col = client.create_collection("seam")
    assert type(col) is Collection
    assert type(client.get_collection("seam")) is Collection
    assert all(type(c) is Collection for c in client.list_collections())


def test_rename_is_seen_by_every_handle_of_the_client(client):
    col = client.create_collection("before")
    other = client.get_collection("before")
    col.modify(name="after")
    assert col.name == "after"
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    assert col.count() == 1
    if client.__class__.__name__ != "HttpClient":
        assert other.name == "after"


def test_embedding_function_runs_on_the_collection_side(client):
    calls = []

    def ef(texts):
        calls.append(list(texts))
        return [[float(len(t)), 1.0] for t in texts]

    col = client.create_collection("with-ef", embedding_function=ef)
    col.add(ids=["a", "b"], documents=["xx", "yyyy"])
    assert calls == [["xx", "yyyy"]]
    res = col.query(query_texts=["yyyy"], n_results=1, include=["distances"])
    assert res["ids"] == [["b"]] and res["distances"][0][0] == pytest.approx(0.0)


def test_async_http_client_mirrors_the_sync_one(http_server):
    sync = http_server.ensure()
    port = http_server.port

    async def scenario():
        client = await vectordb.AsyncHttpClient(host="127.0.0.1", port=port)
        async with client:
            assert isinstance(await client.heartbeat(), int)
            col = await client.create_collection("async-col", metadata={"hnsw:space": "cosine"})
            assert isinstance(col, AsyncCollection) and col.name == "async-col"
            await col.add(ids=["a", "b", "c"], embeddings=[[1, 0], [0, 1], [1, 1]],
                          metadatas=[{"k": 1}, {"k": 2}, {"k": 3}], documents=["x", "y", "z"])
            assert await col.count() == 3
            got = await col.get(ids=["b"], include=["embeddings", "metadatas"])
            assert got["ids"] == ["b"] and isinstance(got["embeddings"], np.ndarray)
            res = await col.query(query_embeddings=[[1, 0]], n_results=2, where={"k": {"$gte": 2}})
            assert res["ids"] == [["c", "b"]]
            await col.update(ids=["a"], metadatas=[{"k": 10}])
            await col.upsert(ids=["d"], embeddings=[[2, 2]])
            assert (await col.delete(where={"k": 10})) == {"deleted": 1}
            await col.modify(name="async-renamed")
            assert col.name == "async-renamed"
            assert [c.name for c in await client.list_collections()] == ["async-renamed"]
            assert (await col.peek(2))["ids"] == ["b", "c"]
            await client.delete_collection("async-renamed")
            with pytest.raises(vectordb.NotFoundError):
                await client.get_collection("async-renamed")

    try:
        asyncio.run(scenario())
    finally:
        for c in sync.list_collections():
            sync.delete_collection(c.name)
        sync.close()
