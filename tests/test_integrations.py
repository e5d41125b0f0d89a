"""LangChain (langchain-chroma) and LlamaIndex (llama-index-vector-stores-chroma) over vectordb's
PersistentClient, EphemeralClient and HttpClient (a real server on loopback), each flow checked
against the same flow on real chromadb. Embeddings come from LangChain's hash-based
DeterministicFakeEmbedding, so no model is needed. Needs the `integrations` extra."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, List

import pytest

chromadb = pytest.importorskip("chromadb")
langchain_chroma = pytest.importorskip("langchain_chroma")
pytest.importorskip("llama_index.vector_stores.chroma")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from llama_index.core import Document as LlamaDocument  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.vector_stores.chroma import ChromaVectorStore  # noqa: E402

import vectordb  # noqa: E402

# The fake embeddings are not unit vectors, so LangChain warns that relevance scores leave [0, 1].
pytestmark = pytest.mark.filterwarnings("ignore:Relevance scores must be between 0 and 1")


def assert_same(ours: Any, theirs: Any, where: str = "") -> None:
    """Equal, floats within 1e-4 (float32 arithmetic in two engines)."""
    if isinstance(theirs, float) or isinstance(ours, float):
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-4), where
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs), where
        for k in theirs:
            assert_same(ours[k], theirs[k], f"{where}.{k}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), f"{where}: {ours!r} != {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"

DIM = 32
TEXTS = ["the cat sat on the mat", "dogs chase cats", "a quick brown fox", "vector databases store embeddings",
         "cats and dogs are pets", "the fox jumps over the lazy dog", "embeddings map text to vectors",
         "a mat for the cat"]
METAS = [{"topic": "pets", "year": 2020 + i % 4, "rank": i} for i in range(len(TEXTS))]
for i in (3, 6):
    METAS[i]["topic"] = "db"


def lc_embeddings() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=DIM)


class HashEmbedding(BaseEmbedding):
    """LlamaIndex embedding model over LangChain's hash-based fake embedding."""

    def _get_query_embedding(self, query: str) -> List[float]:
        return lc_embeddings().embed_query(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return lc_embeddings().embed_query(text)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)


@pytest.fixture(scope="module")
def chroma_client(tmp_path_factory):
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("chroma-int")),
                                     settings=Settings(anonymized_telemetry=False))


def _round(pairs: Any) -> list:
    return [(d.page_content, float(s)) for d, s in pairs]


def _texts(docs: Any) -> list:
    return [d.page_content for d in docs]


def langchain_flow(client: Any, space: str) -> dict:
    """Every LangChain call a RAG app makes; returns what each gave."""
    name = f"lc-{space}-{uuid.uuid4().hex[:8]}"
    store = langchain_chroma.Chroma(collection_name=name, embedding_function=lc_embeddings(), client=client,
                                    collection_metadata={"hnsw:space": space})
    out: dict = {}
    ids = [f"t{i}" for i in range(len(TEXTS))]
    out["add_texts"] = store.add_texts(TEXTS[:6], metadatas=METAS[:6], ids=ids[:6])
    out["add_documents"] = store.add_documents([Document(page_content=t, metadata=m) for t, m in
                                                zip(TEXTS[6:], METAS[6:])], ids=ids[6:])
    q = "cat on a mat"
    out["search"] = _texts(store.similarity_search(q, k=3))
    out["with_score"] = _round(store.similarity_search_with_score(q, k=3))
    out["relevance"] = _round(store.similarity_search_with_relevance_scores(q, k=3))
    out["filter"] = _texts(store.similarity_search(q, k=5, filter={"topic": "db"}))
    out["filter_ops"] = _texts(store.similarity_search(q, k=8, filter={"$and": [{"year": {"$gte": 2021}},
                                                                                {"rank": {"$in": [1, 2, 5, 7]}}]}))
    out["where_document"] = _texts(store.similarity_search(q, k=5, where_document={"$contains": "fox"}))
    out["mmr"] = _texts(store.max_marginal_relevance_search(q, k=3, fetch_k=6, lambda_mult=0.3))
    out["by_vector"] = _texts(store.similarity_search_by_vector(lc_embeddings().embed_query("fox"), k=2))
    store.update_document("t2", Document(page_content="a slow red fox", metadata={"topic": "animals", "rank": 2}))
    out["after_update"] = store.get(ids=["t2"])
    store.delete(ids=["t0", "t1"])
    out["get_all"] = store.get(include=["documents", "metadatas"])
    out["by_ids"] = _texts(store.get_by_ids(["t3", "t0", "t4"]))
    retriever = store.as_retriever(search_type="similarity_score_threshold",
                                   search_kwargs={"score_threshold": -10.0, "k": 2})
    out["retriever_threshold"] = _texts(retriever.invoke("fox"))
    out["retriever_mmr"] = _texts(store.as_retriever(search_type="mmr", search_kwargs={"k": 2}).invoke("dog"))

    async def async_calls() -> dict:
        got = {"aadd": await store.aadd_texts(["async text about cats"], metadatas=[{"topic": "pets"}], ids=["a1"])}
        got["asearch"] = _texts(await store.asimilarity_search("cats", k=2))
        got["arelevance"] = _round(await store.asimilarity_search_with_relevance_scores("cats", k=2))
        got["aretriever"] = _texts(await store.as_retriever(search_kwargs={"k": 1}).ainvoke("fox"))
        await store.adelete(ids=["a1"])
        return got

    out.update(asyncio.run(async_calls()))
    out["count_after"] = store._collection.count()
    reopened = langchain_chroma.Chroma(collection_name=name, embedding_function=lc_embeddings(), client=client,
                                       create_collection_if_not_exists=False)
    out["reopened"] = _texts(reopened.similarity_search("fox", k=1))
    store.delete_collection()
    return out


def llamaindex_flow(client: Any) -> dict:
    """LlamaIndex: index build, retrieve, metadata filters (every operator), delete by ref doc,
    reload from the vector store, the vector-store-level query."""
    name = f"li-{uuid.uuid4().hex[:8]}"
    col = client.get_or_create_collection(name)
    store = ChromaVectorStore(chroma_collection=col)  # what ChromaVectorStore.from_collection does
    ctx = StorageContext.from_defaults(vector_store=store)
    docs = [LlamaDocument(text=t, metadata={"topic": m["topic"], "year": m["year"], "rank": m["rank"]},
                          doc_id=f"doc{i}") for i, (t, m) in enumerate(zip(TEXTS, METAS))]
    index = VectorStoreIndex.from_documents(docs, storage_context=ctx, embed_model=HashEmbedding())
    out: dict = {}

    def retrieve(filters: Any = None, k: int = 3, q: str = "cat on a mat") -> list:
        nodes = index.as_retriever(similarity_top_k=k, filters=filters).retrieve(q)
        return [(n.node.get_content(), float(n.score)) for n in nodes]

    out["retrieve"] = retrieve()
    ops = {FilterOperator.EQ: "pets", FilterOperator.NE: "pets", FilterOperator.GT: 2021, FilterOperator.LT: 2022,
           FilterOperator.GTE: 2022, FilterOperator.LTE: 2021, FilterOperator.IN: [2020, 2023],
           FilterOperator.NIN: [2020, 2023]}
    for op, value in ops.items():
        key = "topic" if isinstance(value, str) else "year"
        one = MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])
        out[f"filter {op.value}"] = retrieve(one, k=8)
    both = MetadataFilters(filters=[MetadataFilter(key="topic", value="pets"),
                                    MetadataFilter(key="rank", value=4, operator=FilterOperator.GTE)],
                           condition=FilterCondition.AND)
    either = MetadataFilters(filters=[MetadataFilter(key="topic", value="db"),
                                      MetadataFilter(key="rank", value=0)], condition=FilterCondition.OR)
    out["filter and"] = retrieve(both, k=8)
    out["filter or"] = retrieve(either, k=8)
    index.delete_ref_doc("doc0", delete_from_docstore=True)
    out["after_delete"] = col.count()
    reloaded = VectorStoreIndex.from_vector_store(ChromaVectorStore(chroma_collection=client.get_collection(name)),
                                                  embed_model=HashEmbedding())
    out["reloaded"] = [n.node.get_content() for n in reloaded.as_retriever(similarity_top_k=2).retrieve("fox")]
    node = TextNode(text="direct node", id_="n1", embedding=lc_embeddings().embed_query("direct"),
                    relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="src")})
    store.add([node])
    res = store.query(VectorStoreQuery(query_embedding=lc_embeddings().embed_query("direct"), similarity_top_k=1))
    out["store_query"] = (res.ids, [float(s) for s in res.similarities])
    mmr = store.query(VectorStoreQuery(query_embedding=lc_embeddings().embed_query("cat"), similarity_top_k=2,
                                       mode="mmr"), mmr_threshold=0.5)
    out["store_mmr"] = [n.get_content() for n in mmr.nodes]
    store.delete("src")
    out["nodes_after"] = col.count()
    client.delete_collection(name)
    return out


def _vectordb_client(kind: str, tmp_path: Any, http_server: Any) -> Any:
    if kind == "persistent":
        return vectordb.PersistentClient(tmp_path / "db")
    if kind == "ephemeral":
        return vectordb.EphemeralClient()
    return http_server.ensure()


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
@pytest.mark.parametrize("kind", ["persistent", "ephemeral", "http"])
def test_langchain_flow_matches_chromadb(kind, space, tmp_path, chroma_client, request):
    server = request.getfixturevalue("http_server") if kind == "http" else None
    client = _vectordb_client(kind, tmp_path, server)
    try:
        ours = langchain_flow(client, space)
    finally:
        client.close()
    theirs = langchain_flow(chroma_client, space)
    assert_same(ours, theirs)


@pytest.mark.parametrize("kind", ["persistent", "ephemeral", "http"])
def test_llamaindex_flow_matches_chromadb(kind, tmp_path, chroma_client, request):
    server = request.getfixturevalue("http_server") if kind == "http" else None
    client = _vectordb_client(kind, tmp_path, server)
    try:
        ours = llamaindex_flow(client)
    finally:
        client.close()
    theirs = llamaindex_flow(chroma_client)
    assert_same(ours, theirs)


def test_llamaindex_from_collection_needs_the_constructor():
    """ChromaVectorStore.from_collection checks isinstance(collection, chromadb.Collection), a
    concrete chromadb class; ChromaVectorStore(chroma_collection=collection) is what it then
    does, and takes a vectordb collection as it is."""
    col = vectordb.EphemeralClient().get_or_create_collection("from-collection")
    with pytest.raises(Exception, match="not chromadb collection"):
        ChromaVectorStore.from_collection(col)
    store = ChromaVectorStore(chroma_collection=col)
    store.add([TextNode(text="x", id_="x1", embedding=[1.0, 0.0])])
    assert col.count() == 1
