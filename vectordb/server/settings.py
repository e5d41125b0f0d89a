"""Server settings: command-line values over environment variables over defaults.

    settings = ServerSettings.from_env()            # VECTORDB_* variables
    settings = ServerSettings.from_env(port=9000)   # explicit values win
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

DEFAULT_PATH = "./vector_db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_CACHED = 20
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# How many ports after the requested one are tried when it is busy.
DEFAULT_PORT_ATTEMPTS = 20
DEFAULT_THREADS = 40

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}


def parse_log_level(text: Optional[str], default: int = logging.INFO) -> int:
    """Log level from "debug", "INFO", "20" or a RUST_LOG directive list.

    RUST_LOG is accepted for compatibility with the seed project: in
    "warn,vectordb=debug" the level for the "vectordb" target wins over the global one.
    """
    if text is None or not text.strip():
        return default
    text = text.strip()
    if text.isdigit():
        return int(text)
    global_level: Optional[int] = None
    target_level: Optional[int] = None
    for directive in text.split(","):
        directive = directive.strip().lower()
        if not directive:
            continue
        if "=" in directive:
            target, _, level = directive.partition("=")
            target = target.strip()
            if target == "vectordb" or target.startswith(("vectordb::", "vectordb.")):
                if level.strip() in _LEVELS:
                    target_level = _LEVELS[level.strip()]
        elif directive in _LEVELS:
            global_level = _LEVELS[directive]
    if target_level is not None:
        return target_level
    if global_level is not None:
        return global_level
    raise ValueError(
        f"unknown log level {text!r}: expected one of {', '.join(sorted(_LEVELS))} "
        "(or a RUST_LOG list such as 'warn,vectordb=debug')"
    )


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} is out of range: expected an integer >= {minimum}")
    return value


def _env_str(env: Mapping[str, str], name: str) -> Optional[str]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw


@dataclass
class ServerSettings:
    """Everything `vectordb serve` needs. Unset fields take the documented defaults."""

    path: str = DEFAULT_PATH
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_cached: int = DEFAULT_MAX_CACHED
    log_level: int = logging.INFO
    log_format: str = "text"  # "text" or "json"
    api_key: Optional[str] = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    port_attempts: int = DEFAULT_PORT_ATTEMPTS
    threads: int = DEFAULT_THREADS  # engine calls in flight at once (the engine releases the GIL)

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, **overrides: object) -> "ServerSettings":
        """Read VECTORDB_PATH, VECTORDB_HOST, VECTORDB_PORT, VECTORDB_MAX_CACHED,
        VECTORDB_LOG_LEVEL (or RUST_LOG), VECTORDB_LOG_FORMAT, VECTORDB_API_KEY,
        VECTORDB_MAX_BODY_BYTES and VECTORDB_SERVER_THREADS; keyword arguments that are not None override them."""
        env = os.environ if env is None else env
        log_format = (_env_str(env, "VECTORDB_LOG_FORMAT") or "text").strip().lower()
        if log_format not in ("text", "json"):
            raise ValueError(f"VECTORDB_LOG_FORMAT={log_format!r}: expected 'text' or 'json'")
        level_text = _env_str(env, "VECTORDB_LOG_LEVEL") or _env_str(env, "RUST_LOG")
        settings = cls(
            path=_env_str(env, "VECTORDB_PATH") or DEFAULT_PATH,
            host=_env_str(env, "VECTORDB_HOST") or DEFAULT_HOST,
            port=_env_int(env, "VECTORDB_PORT", DEFAULT_PORT),
            max_cached=_env_int(env, "VECTORDB_MAX_CACHED", DEFAULT_MAX_CACHED, minimum=1),
            log_level=parse_log_level(level_text),
            log_format=log_format,
            api_key=_env_str(env, "VECTORDB_API_KEY"),
            max_body_bytes=_env_int(env, "VECTORDB_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1),
            threads=_env_int(env, "VECTORDB_SERVER_THREADS", DEFAULT_THREADS, minimum=1),
        )
        for name, value in overrides.items():
            if not hasattr(settings, name):
                raise TypeError(f"unknown server setting {name!r}")
            if value is not None:
                setattr(settings, name, value)
        if not 0 <= settings.port <= 65535:
            raise ValueError(f"port {settings.port} is out of range: expected 0-65535")
        return settings
