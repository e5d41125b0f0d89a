"""Settings read from the environment (documented in README.md)."""
import os

DEFAULT_PATH = "./vector_db"
DEFAULT_PORT = 8080
DEFAULT_MAX_CACHED = 20


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from None
    if value < 1:
        raise ValueError(f"environment variable {name}={raw!r} must be >= 1")
    return value


def db_path() -> str:
    """$VECTORDB_PATH, else ./vector_db."""
    return os.environ.get("VECTORDB_PATH") or DEFAULT_PATH


def port() -> int:
    """$VECTORDB_PORT, else 8080."""
    return _int_env("VECTORDB_PORT", DEFAULT_PORT)


def max_cached() -> int:
    """$VECTORDB_MAX_CACHED, else 20: collections kept open by a PersistentClient."""
    return _int_env("VECTORDB_MAX_CACHED", DEFAULT_MAX_CACHED)


def allow_reset() -> bool:
    """$VECTORDB_ALLOW_RESET=1 lets client.reset() delete everything (as chromadb's allow_reset)."""
    return os.environ.get("VECTORDB_ALLOW_RESET", "").lower() in ("1", "true", "yes")


def durable() -> bool:
    """$VECTORDB_SYNC=relaxed syncs the log only at checkpoints (faster, may lose recent writes)."""
    return os.environ.get("VECTORDB_SYNC", "full").lower() != "relaxed"


class Settings:
    """chromadb's Settings, for code that passes them. Honoured: allow_reset; is_persistent and
    persist_directory (for Client(settings)); chroma_server_host, chroma_server_http_port,
    chroma_server_ssl_enabled and chroma_server_headers (for Client(settings) with chroma_api_impl
    naming chromadb's HTTP client). Every other field (anonymized_telemetry, chroma_*_impl, ...) is
    accepted, kept, and means nothing here.

    >>> settings = vectordb.Settings(anonymized_telemetry=False, allow_reset=True)
    >>> client = vectordb.PersistentClient("./db", settings=settings)
    """

    def __init__(self, **fields: object) -> None:
        self.allow_reset = False
        self.is_persistent = False
        self.persist_directory: "str | None" = None
        self.anonymized_telemetry = True
        self.chroma_api_impl: "str | None" = None
        self.chroma_server_host: "str | None" = None
        self.chroma_server_http_port: "int | str | None" = None
        self.chroma_server_ssl_enabled = False
        self.chroma_server_headers: "dict | None" = None
        for name, value in fields.items():
            setattr(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"
