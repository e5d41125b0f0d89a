"""Shared fixtures for the API suites.

`client` runs a test once per client kind:
    persistent  vectordb.PersistentClient(tmp_path / "db")
    ephemeral   vectordb.EphemeralClient()
    http        vectordb.HttpClient against one `vectordb serve` process per test session
                (skipped with a reason while vectordb.http_client or tests/server_helpers.py
                cannot be imported); every collection is deleted after each test.

`client_kind` says which one a test got; `persistent_path` is the directory a persistent client
opens; `reopen(client)` closes a PersistentClient and opens a new one on the same path (closed
again at teardown).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # so tests can `import server_helpers`

import vectordb  # noqa: E402

CLIENT_KINDS = ["persistent", "ephemeral", "http"]


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

    def ensure(self):
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
            pytest.fail(f"the test server died (exit code {self.proc.returncode}); see {getattr(self.proc, 'log_path', '?')}")
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
        except vectordb.NotFoundError:
            pass


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
        c.close()
    else:
        server = request.getfixturevalue("http_server")
        c = server.ensure()
        _wipe(c)  # whatever an earlier, interrupted test left behind
        yield c
        try:
            _wipe(c)
        finally:
            c.close()


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
