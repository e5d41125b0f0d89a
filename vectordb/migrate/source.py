"""The chromadb side of the migration: reads collections through the chromadb package, in a child
process (so a crash inside chromadb is reported, not shared) or in this one, and the tool's errors.
"""
from __future__ import annotations

import os
import pickle
import signal
import site
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

INSTALL_HINT = "pip install 'vectordb[migrate]'"


class UsageError(Exception):
    """Nothing was done: bad arguments or environment (exit status 2)."""


class ChromadbMissing(UsageError):
    pass


class ReaderDied(Exception):
    pass


class SourceError(Exception):
    """chromadb raised while reading."""


# --------------------------------------------------------------------------------------------
# Reading side: runs where chromadb is imported (a child process unless --no-subprocess)
# --------------------------------------------------------------------------------------------

_PLAIN = (str, bool, int, float)


def _plain_value(v: Any) -> Any:
    """Metadata value as plain Python; anything vectordb cannot hold becomes a tagged tuple, so the
    parent (which never imports chromadb) can unpickle it and report it."""
    if v is None or isinstance(v, _PLAIN):
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, _PLAIN) for x in v):
        return list(v)
    if isinstance(v, np.generic):
        return v.item()
    return ("__unsupported__", type(v).__name__, repr(v)[:80])


def _plain_metadata(md: Optional[dict]) -> Optional[dict]:
    # chromadb can hand out {} (a record whose only metadata was its uri, or whose keys were all
    # deleted); like chromadb's own add, vectordb takes None for "no metadata", never {}.
    if not md:
        return None
    return {str(k): _plain_value(v) for k, v in md.items()}


def _space_of(model: Any) -> Dict[str, Any]:
    """The distance space chromadb uses for a collection, and where each candidate was found."""
    found: Dict[str, Optional[str]] = {}
    schema = getattr(model, "serialized_schema", None) or {}
    try:
        found["schema"] = schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"]
    except (KeyError, TypeError):
        found["schema"] = None
    conf = getattr(model, "configuration_json", None) or {}
    found["configuration.hnsw"] = ((conf.get("hnsw") or {}) if isinstance(conf, dict) else {}).get("space")
    found["configuration.spann"] = ((conf.get("spann") or {}) if isinstance(conf, dict) else {}).get("space")
    md = getattr(model, "metadata", None) or {}
    found["metadata"] = md.get("hnsw:space")
    # Order of authority in chromadb 1.x: the schema, then the configuration, then legacy metadata.
    space = next((v for v in found.values() if v), None) or "l2"
    return {"space": str(space), "found": found}


class ChromaSource:
    """Read-only view of a chromadb PersistentClient directory."""

    METHODS = ("list", "page", "at_offsets", "query")

    def __init__(self, path: str):
        import chromadb  # noqa: F401  (ImportError handled by the caller)
        from chromadb.config import Settings

        self._client = chromadb.PersistentClient(
            path=path, settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        self._cols: Dict[str, Any] = {}

    def _col(self, name: str) -> Any:
        if name not in self._cols:
            # list_collections builds Collection objects without instantiating or validating the
            # stored embedding function (get_collection would; a custom one may need API keys).
            self._cols = {c.name: c for c in self._client.list_collections()}
        if name not in self._cols:
            raise SourceError(f"chromadb collection {name!r} does not exist")
        return self._cols[name]

    def list(self) -> List[dict]:
        out = []
        self._cols = {c.name: c for c in self._client.list_collections()}
        for name, col in self._cols.items():
            model = col._model
            sp = _space_of(model)
            out.append(
                {
                    "name": name,
                    "id": str(col.id),
                    "count": int(col.count()),
                    "metadata": _plain_metadata(col.metadata),
                    "space": sp["space"],
                    "space_found": sp["found"],
                    "dimension": getattr(model, "dimension", None),
                }
            )
        return out

    def page(self, name: str, offset: int, limit: int) -> dict:
        col = self._col(name)
        g = col.get(limit=limit, offset=offset, include=["embeddings", "metadatas", "documents", "uris"])
        ids = list(g["ids"])
        emb = g.get("embeddings")
        if emb is None or len(ids) == 0:
            e32 = np.zeros((len(ids), 0), dtype=np.float32)
            inexact = 0
        else:
            e = np.asarray(emb)
            e32 = np.ascontiguousarray(e, dtype=np.float32)
            # chromadb stores float32 and hands out float64 copies: the round trip must be exact.
            inexact = int(np.count_nonzero(np.any(e32.astype(e.dtype) != e, axis=1))) if e.dtype != np.float32 else 0
        n = len(ids)
        metadatas = g.get("metadatas") or [None] * n
        documents = g.get("documents") or [None] * n
        uris = g.get("uris") or [None] * n
        return {
            "ids": ids,
            "embeddings": e32,
            "metadatas": [_plain_metadata(m) for m in metadatas],
            "documents": list(documents),
            "uris": list(uris),
            "inexact": inexact,
        }

    def at_offsets(self, name: str, offsets: Sequence[int]) -> np.ndarray:
        col = self._col(name)
        rows = []
        for off in offsets:
            g = col.get(limit=1, offset=int(off), include=["embeddings"])
            if len(g["ids"]):
                rows.append(np.asarray(g["embeddings"][0], dtype=np.float32))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)

    def query(self, name: str, queries: np.ndarray, k: int) -> List[List[str]]:
        col = self._col(name)
        r = col.query(query_embeddings=queries, n_results=k, include=["distances"])
        return [list(x) for x in r["ids"]]


def _reader_main(path: str) -> int:
    """Child process loop: pickled (method, args) requests on stdin, ("ok"|"err", value) on the
    original stdout. Anything chromadb prints goes to stderr so it cannot corrupt the channel."""
    # Ctrl-C reaches the whole process group: the parent decides, then closes this reader.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer

    def send(obj: Any) -> None:
        pickle.dump(obj, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    try:
        import chromadb
    except ImportError as e:
        send(("import_error", str(e)))
        return 3
    try:
        src = ChromaSource(path)
    except Exception as e:  # noqa: BLE001 - reported to the parent verbatim
        send(("err", f"cannot open the chromadb database at {path}: {type(e).__name__}: {e}"))
        return 4
    send(("ok", getattr(chromadb, "__version__", "?")))
    while True:
        try:
            method, args = pickle.load(inp)
        except EOFError:
            return 0
        if method == "close":
            send(("ok", None))
            return 0
        try:
            if method not in ChromaSource.METHODS:
                raise SourceError(f"unknown reader method {method!r}")
            send(("ok", getattr(src, method)(*args)))
        except Exception as e:  # noqa: BLE001
            send(("err", f"{type(e).__name__}: {e}"))


def _child_pythonpath(pythonpath: Optional[str]) -> Optional[str]:
    """The reading child's PYTHONPATH: it must import this very vectordb (installed, or a source
    checkout found through the parent's sys.path) and otherwise resolve imports as the parent does.

    The directory holding this vectordb goes last: no earlier PYTHONPATH entry holds another
    vectordb (the parent would have imported that one), and the user's entries keep their order and
    their precedence over site-packages (a module placed first on PYTHONPATH, chromadb included, is
    the one the child imports). An installed vectordb's site directory is left out: the same
    interpreter finds it anyway, after the standard library, where it belongs."""
    parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    site_dirs = {os.path.realpath(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if os.path.realpath(parent) in site_dirs:
        return pythonpath
    return os.pathsep.join(filter(None, [pythonpath, parent]))


class ReaderProcess:
    """The parent's handle on the reading child."""

    def __init__(self, path: str):
        env = dict(os.environ)
        env.setdefault("ANONYMIZED_TELEMETRY", "False")
        pythonpath = _child_pythonpath(env.get("PYTHONPATH"))
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.path = path
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vectordb.migrate.source", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.version = self._receive(first=True)

    def _receive(self, first: bool = False) -> Any:
        try:
            assert self._proc.stdout is not None  # a pipe (Popen above)
            status, value = pickle.load(self._proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError):
            rc = self._proc.wait()
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            raise ReaderDied(
                f"the chromadb reader process {how}"
                + (" while opening the database" if first else "")
                + " (a damaged HNSW segment in the chromadb directory can crash chromadb; see its output above)"
            ) from None
        if status == "import_error":
            raise ChromadbMissing(value)
        if status == "err":
            raise SourceError(value)
        return value

    def send(self, method: str, *args: Any) -> None:
        """Starts a request; the child works on it while this process does something else."""
        try:
            assert self._proc.stdin is not None  # a pipe (Popen above)
            pickle.dump((method, args), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child is gone: receive() reports how it ended

    def receive(self) -> Any:
        return self._receive()

    def call(self, method: str, *args: Any) -> Any:
        self.send(method, *args)
        return self._receive()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.call("close")
            except Exception:  # noqa: BLE001
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class InlineReader:
    """Same interface as ReaderProcess, chromadb imported into this process (--no-subprocess)."""

    def __init__(self, path: str):
        try:
            import chromadb
        except ImportError as e:
            raise ChromadbMissing(str(e)) from None
        self.version = getattr(chromadb, "__version__", "?")
        self._src = ChromaSource(path)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self._src, method)(*args)

    def send(self, method: str, *args: Any) -> None:
        self._pending = (method, args)

    def receive(self) -> Any:
        method, args = self._pending
        return self.call(method, *args)

    def close(self) -> None:
        pass


if __name__ == "__main__":  # the reader child: python -m vectordb.migrate.source PATH
    sys.exit(_reader_main(sys.argv[1]))
