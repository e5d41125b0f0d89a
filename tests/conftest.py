"""Shared fixtures for the API suites.

`client` runs a test once per client kind:
    persistent  vectordb.PersistentClient(tmp_path / "db")
    ephemeral   vectordb.EphemeralClient()
    http        vectordb.HttpClient against one `vectordb serve` process per test session
                (skipped with a reason while vectordb.http_client or tests/server_helpers.py
                cannot be imported); every collection is deleted after each test.
    chroma      chromadb.HttpClient (chroma's own client, through our /api/v2) against the same
                server (skipped when chromadb is not installed). Its errors are chromadb's classes:
                the test module's error names accept chromadb's equivalent (CHROMA_ERRORS).

`client_kind` says which one a test got; `persistent_path` is the directory a persistent client
opens; `reopen(client)` closes a PersistentClient and opens a new one on the same path (closed
again at teardown). `small_fs` mounts a tmpfs of its own for a disk-full test, `fill_fs(fs)` fills it.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # so tests can `import server_helpers`

import vectordb  # noqa: E402

CLIENT_KINDS = ["persistent", "ephemeral", "http", "chroma"]

# Our error class -> what chromadb's HttpClient raises for the same failure: chromadb's class of that
# name, or (for input it checks itself before sending anything) a plain ValueError or TypeError.
CHROMA_ERRORS = {
    "NotFoundError": ("NotFoundError",),
    "CollectionExistsError": ("UniqueConstraintError",),
    "AuthorizationError": ("AuthorizationError",),
    "DuplicateIDError": ("DuplicateIDError", "ValueError"),
    "InvalidArgumentError": ("InvalidArgumentError", "ValueError", "TypeError"),
    "VectorDBError": ("ChromaError",),
    "ValueError": ("InvalidArgumentError", "DuplicateIDError", "TypeError"),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a longer test (deselect with -m 'not slow')")


def _http_support():
    """(HttpClient class, server_helpers module), or a reason why the http variant cannot run."""
    try:
        from vectordb.http_client import HttpClient
    except Exception as e:  # ImportError, or the module not finished yet
        return None, f"vectordb.http_client does not import yet: {type(e).__name__}: {e}"
    try:
        import server_helpers
    except Exception as e:
        return None, f"tests/server_helpers.py does not import yet: {type(e).__name__}: {e}"
    if not hasattr(server_helpers, "start_server") or not hasattr(server_helpers, "stop_server"):
        return None, "tests/server_helpers.py has no start_server/stop_server yet"
    return (HttpClient, server_helpers), None


class _Server:
    """A lazily started `vectordb serve`; a failed start is remembered and reported as a skip."""

    def __init__(self, path: Path, env: dict):
        self.path, self.env = path, env
        self.proc = None
        self.port = None
        self.error = None

    def ensure(self, kind: str = "http"):
        """A client of this server: our HttpClient, or chromadb's (kind "chroma")."""
        support, reason = _http_support()
        if support is None:
            pytest.skip(reason)
        HttpClient, helpers = support
        if self.error is not None:
            pytest.skip(self.error)
        if self.proc is None:
            try:
                self.proc, _, self.port = helpers.start_server(self.path, env=self.env)
            except Exception as e:
                self.error = f"vectordb server did not start: {type(e).__name__}: {str(e)[:2000]}"
                pytest.skip(self.error)
        elif self.proc.poll() is not None:
            pytest.fail(f"the test server died (exit code {self.proc.returncode}); "
                        f"see {getattr(self.proc, 'log_path', '?')}")
        if kind == "chroma":
            chromadb = pytest.importorskip("chromadb")
            return chromadb.HttpClient(host="127.0.0.1", port=self.port)
        return HttpClient("127.0.0.1", self.port)

    def stop(self):
        if self.proc is not None:
            support, _ = _http_support()
            support[1].stop_server(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def http_server(tmp_path_factory) -> Iterator[_Server]:
    """The session's server, started on first use; it allows reset (VECTORDB_ALLOW_RESET=1)."""
    server = _Server(tmp_path_factory.mktemp("http-server") / "db", {"VECTORDB_ALLOW_RESET": "1"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def http_server_noreset(tmp_path_factory) -> Iterator[_Server]:
    """A second server without allow_reset, for the one test that checks reset is refused."""
    server = _Server(tmp_path_factory.mktemp("http-server-noreset") / "db", {"VECTORDB_ALLOW_RESET": "0"})
    yield server
    server.stop()


def _wipe(client) -> None:
    for col in client.list_collections():
        try:
            client.delete_collection(col.name)
        except Exception as e:  # vectordb's NotFoundError, or chromadb's
            if type(e).__name__ != "NotFoundError":
                raise


@pytest.fixture
def persistent_path(tmp_path: Path) -> Path:
    """The database directory of the persistent client of this test."""
    return tmp_path / "db"


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request) -> str:
    return request.param


@pytest.fixture
def client(client_kind: str, persistent_path: Path, request, monkeypatch):
    # Reset permission must come from the test, not from the developer's shell.
    monkeypatch.delenv("VECTORDB_ALLOW_RESET", raising=False)
    if client_kind == "persistent":
        c = vectordb.PersistentClient(persistent_path)
        yield c
        c.close()
    elif client_kind == "ephemeral":
        # Every EphemeralClient of a process is one database (as chromadb's): one another test
        # still holds (e.g. through an app in a reference cycle) may have left collections.
        c = vectordb.EphemeralClient()
        _wipe(c)
        yield c
        try:
            _wipe(c)  # nor does this test leave any to whichever EphemeralClient is still open
        finally:
            c.close()
    elif client_kind == "http":
        server = request.getfixturevalue("http_server")
        c = server.ensure()
        _wipe(c)  # whatever an earlier, interrupted test left behind
        yield c
        try:
            _wipe(c)
        finally:
            c.close()
    else:
        if request.module.__name__ != "test_api":
            pytest.skip("chromadb's client runs the API suite (test_api.py); other suites test our own clients")
        reason = CHROMA_CLIENT_DIFFERENCES.get(request.node.originalname) or \
            CHROMA_CLIENT_DIFFERENCES.get(request.node.name)
        if reason is not None:
            pytest.skip(f"chromadb's client differs here: {reason}")
        c = request.getfixturevalue("http_server").ensure("chroma")
        _accept_chroma_errors(monkeypatch)
        _wipe(c)
        yield c
        try:
            _wipe(c)
        finally:
            close_chroma_clients()


# Tests of the API suite that do not apply to chromadb's HttpClient, and why (the differences are
# its client's own behaviour or API, not the server's: they are the same against `chroma run`).
_OUR_API = "uses vectordb's own API (not in chromadb's client)"
_EMBEDS = "chromadb's client embeds documents itself when no embeddings are given (default model download)"
CHROMA_CLIENT_DIFFERENCES = {
    "test_dimension_keyword_fixes_dimension": _OUR_API,
    "test_query_embedding_singular": _OUR_API,
    "test_query_embedding_and_embeddings_together_rejected": _OUR_API,
    "test_modify_configuration_sets_n_probe_only": _OUR_API,
    "test_modify_configuration_sets_n_probe_and_keeps_chroma_tuning": _OUR_API,
    "test_add_with_embedding_function": "chromadb's client requires EmbeddingFunction.__call__(self, input)",
    "test_add_existing_id_is_skipped_with_a_warning": "the warning is logged by the server process",
    "test_get_collection_with_invalid_name_is_an_error":
        "chromadb's client puts the name in the URL path unchecked: '/' or '..' change the path",
    "test_update_of_unknown_id_is_ignored": _EMBEDS,
    "test_update_merges_metadata_and_keeps_other_fields": _EMBEDS,
    "test_update_with_none_entries_keeps_fields": _EMBEDS,
    "test_add_without_embeddings_rejected": _EMBEDS,
    "test_unusual_ids_and_documents_roundtrip": _EMBEDS,
    "test_modify_space_change_is_an_error": "chromadb's client refuses any 'hnsw:' key in modify(metadata=...)",
    "test_huge_counts_are_handled": "chromadb's client cannot send integers beyond 64 bits (TypeError)",
    "test_float64_beyond_float32_range_message": "chromadb's client converts to float32 itself (overflow -> inf)",
    "test_query_bad_embeddings_rejected": "chromadb's client fails on some inputs itself (IndexError, TypeError)",
    "test_embedding_input_forms_two_records[chroma-tuple-of-tuples]": "chromadb's client refuses tuples",
    "test_embedding_input_forms_two_records[chroma-list-of-np-scalars]": "chromadb's client refuses NumPy scalars",
}
for _method in ("add", "upsert", "update"):
    CHROMA_CLIENT_DIFFERENCES.update({
        f"test_bad_write_rejected_and_nothing_written[chroma-empty-vector-{_method}]":
            "chromadb's client fails on an empty vector itself (IndexError)",
        f"test_bad_write_rejected_and_nothing_written[chroma-meta-nan-value-{_method}]":
            "chromadb's client sends a NaN metadata value as null (which deletes the key)",
        f"test_bad_write_rejected_and_nothing_written[chroma-meta-not-a-dict-{_method}]":
            "chromadb's client fails on a non-dict metadata itself (AttributeError)",
    })


def close_chroma_clients() -> None:
    """chromadb keeps every client's system (and its connections) in a process-wide cache: clear it."""
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def _accept_chroma_errors(monkeypatch) -> None:
    """pytest.raises(ours) also accepts chromadb's equivalent classes (CHROMA_ERRORS)."""
    import builtins

    import chromadb.errors as chroma_errors

    equivalents = {}
    for ours, theirs in CHROMA_ERRORS.items():
        cls = getattr(builtins, ours, None) or getattr(vectordb, ours)
        equivalents[cls] = tuple(getattr(builtins, t, None) or getattr(chroma_errors, t) for t in theirs)
    original = pytest.raises

    def raises(expected, *args, **kwargs):
        widened = []
        for cls in expected if isinstance(expected, tuple) else (expected,):
            widened.append(cls)
            for base in cls.__mro__:  # the most specific class with an equivalent
                if base in equivalents:
                    widened.extend(equivalents[base])
                    break
        return original(tuple(dict.fromkeys(widened)), *args, **kwargs)

    monkeypatch.setattr(pytest, "raises", raises)


@pytest.fixture
def reopen(persistent_path: Path) -> Iterator[Callable]:
    """reopen(client, **kwargs) -> a new PersistentClient on the same path, after closing client."""
    opened: List = []

    def _reopen(client=None, **kwargs):
        if client is not None:
            client.close()
        c = vectordb.PersistentClient(persistent_path, **kwargs)
        opened.append(c)
        return c

    yield _reopen
    for c in opened:
        c.close()


# ---- a small file system of its own, for the disk-full tests ----

@pytest.fixture
def small_fs(tmp_path: Path, request) -> Iterator[str]:
    """A tmpfs mounted for one test: 4 MiB, or the size given by indirect parametrization
    (`@pytest.mark.parametrize("small_fs", ["16m"], indirect=True)`). Skipped, with the reason, where
    mounting is not allowed (it needs root or CAP_SYS_ADMIN)."""
    size = getattr(request, "param", "4m")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full tests (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill_fs(fs: str, leave_pages: int = 0) -> str:
    """Fills the file system with a file of whole pages; then frees leave_pages pages again."""
    filler = os.path.join(fs, "filler")
    page = os.sysconf("SC_PAGE_SIZE")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                if os.write(fd, bytes(page)) < page:
                    break
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    finally:
        os.close(fd)
    size = os.path.getsize(filler) // page * page
    os.truncate(filler, max(0, size - leave_pages * page))
    return filler


@pytest.fixture
def fill_fs() -> Callable[..., str]:
    """`fill_fs(fs, leave_pages=0)`: fills a small_fs up (a file of whole pages), then frees
    leave_pages pages again; returns the filler's path."""
    return _fill_fs
