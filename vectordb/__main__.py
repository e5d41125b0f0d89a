"""Command line: `vectordb serve|info|check|migrate` (also `python -m vectordb ...`).

    vectordb serve                                  # ./vector_db on http://127.0.0.1:8080
    vectordb serve --path /data/vdb --port 9000 --log-level debug
    VECTORDB_API_KEY=secret vectordb serve --host 0.0.0.0
    vectordb info ./vector_db                       # collections, counts, dimensions, index, sizes
    vectordb check ./vector_db                      # every checksum and structure; exit 1 if damaged
    vectordb migrate --chromadb-path ./chroma_db    # copy a ChromaDB database in, and verify it

Settings not given on the command line come from VECTORDB_PATH, VECTORDB_HOST, VECTORDB_PORT,
VECTORDB_MAX_CACHED, VECTORDB_LOG_LEVEL (or RUST_LOG), VECTORDB_LOG_FORMAT (text|json),
VECTORDB_API_KEY and VECTORDB_MAX_BODY_BYTES. When the port is taken, the next free one is used
and the log says which.
"""
from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from typing import Any, List, Optional, Tuple

log = logging.getLogger("vectordb.server")


def bind_socket(host: str, port: int, attempts: int) -> Tuple[socket.socket, int]:
    """Bind and listen on `port`, or on the next free one of `attempts` ports.

    Binding here (not in uvicorn) means no other process can take the port between the probe
    and the bind. Port 0 asks the OS for any free port.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve host {host!r}")
    family, socktype, proto, _, sockaddr = infos[0]
    last_error: Optional[OSError] = None
    candidates = [0] if port == 0 else list(range(port, min(port + max(attempts, 1), 65536)))
    for candidate in candidates:
        sock = socket.socket(family, socktype, proto)
        try:
            # SO_REUSEADDR on POSIX only allows rebinding over TIME_WAIT leftovers, never over a listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((sockaddr[0], candidate) + tuple(sockaddr[2:]))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                last_error = exc
                continue
            raise
        bound_port = sock.getsockname()[1]
        if candidate != port and port != 0:
            log.warning("port %d is in use; using port %d instead", port, bound_port,
                        extra={"requested_port": port, "port": bound_port})
        return sock, bound_port
    raise OSError(
        f"no free port in {candidates[0]}-{candidates[-1]} on {host} ({last_error}); "
        "choose another with --port or VECTORDB_PORT"
    )


def _make_server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which kills the process
            # before our own cleanup; forget the signal so `serve` finishes and exits with 0.
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return Server


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from vectordb.server.app import create_app, warn_if_exposed
    from vectordb.server.logs import configure_logging, flush_logging
    from vectordb.server.settings import ServerSettings, parse_log_level

    try:
        settings = ServerSettings.from_env(
            path=args.path,
            host=args.host,
            port=args.port,
            log_format=args.log_format,
            log_level=parse_log_level(args.log_level) if args.log_level else None,
        )
    except ValueError as exc:
        print(f"vectordb serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    warn_if_exposed(settings.host, settings.api_key)

    try:
        app = create_app(settings)  # opens the database: a locked or damaged one fails here
    except Exception as exc:
        log.error("cannot open %s: %s", settings.path, exc, extra={"db_path": settings.path})
        return 1
    try:
        try:
            sock, port = bind_socket(settings.host, settings.port, settings.port_attempts)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
            return 1
        app.state.address = f"http://{_url_host(settings.host)}:{port}"
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=port,
            log_config=None,  # our handlers (text or JSON) already set up
            log_level=settings.log_level,
            access_log=False,  # we write one structured line per request ourselves
            server_header=False,
            timeout_graceful_shutdown=10,
            # Longer than clients' idle expiry (httpx: 5 s), so a client never reuses a connection
            # the server is closing at that very moment.
            timeout_keep_alive=30,
        )
        server = _make_server_class()(config)
        server.run(sockets=[sock])
        return 0
    finally:
        app.state.close_client()
        flush_logging()


def build_parser() -> argparse.ArgumentParser:
    from vectordb.server.app import package_version

    parser = argparse.ArgumentParser(prog="vectordb", description="vectordb: embedded vector database and server")
    parser.add_argument("--version", action="version", version=f"vectordb {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    p = sub.add_parser("serve", help="serve a database over HTTP (REST API, docs at /docs)",
                       description="Serve a database over HTTP. Options override VECTORDB_* environment variables.")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1, or VECTORDB_HOST)")
    p.add_argument("--port", type=int, default=None,
                   help="port (default 8080, or VECTORDB_PORT); the next free port is used when it is taken; 0 = any")
    p.add_argument("--path", default=None, help="database directory (default ./vector_db, or VECTORDB_PATH)")
    p.add_argument("--log-level", default=None,
                   help="debug, info, warning, error (default info, or VECTORDB_LOG_LEVEL / RUST_LOG)")
    p.add_argument("--log-format", choices=["text", "json"], default=None,
                   help="text or json lines (default text, or VECTORDB_LOG_FORMAT)")
    for name, help_text, description in [
        ("info", "collections, counts, dimensions, index state, sizes on disk and in memory",
         "Describe a database. Read-only: works beside a running server and changes nothing."),
        ("check", "verify every checksum and structure; exit status 0 intact, 1 damaged, 2 not checked",
         "Verify a database like SQLite's integrity_check: every file is validated as an open would, and "
         "damage is reported by file. Read-only: works beside a running server and changes nothing."),
    ]:
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("path", nargs="?", default=None,
                       help="database directory (default ./vector_db, or VECTORDB_PATH)")
        p.add_argument("--json", action="store_true", help="print a JSON report")
    sub.add_parser("migrate", add_help=False, help="copy ChromaDB collections in and verify them (migrate --help)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["migrate"]:  # the migration tool parses its own options
        from vectordb.migrate import main as migrate_main

        return migrate_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command in ("info", "check"):
        from vectordb import config, dbcheck

        return dbcheck.main(args.command, args.path or config.db_path(), args.json)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
