"""Start and stop a real `python -m vectordb serve` process for tests.

    proc, base_url, port = start_server(tmp_path / "db")
    try:
        httpx.get(base_url + "/health")
    finally:
        stop_server(proc)

The server's stdout and stderr go to a log file (`proc.log_path`, read with `server_log(proc)`),
so a chatty server never blocks on a full pipe.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving .+? on http://(\[[^\]]+\]|[^:\s\"]+):(\d+)")
# Inherited settings that would change the server under test; tests pass what they want in `env`.
_SCRUBBED = ("VECTORDB_PATH", "VECTORDB_HOST", "VECTORDB_PORT", "VECTORDB_API_KEY", "VECTORDB_LOG_FORMAT",
             "VECTORDB_LOG_LEVEL", "RUST_LOG", "VECTORDB_MAX_BODY_BYTES", "VECTORDB_MAX_CACHED",
             "VECTORDB_ALLOW_RESET", "VECTORDB_SYNC")


def free_port() -> int:
    """A port that was free a moment ago (the server moves on to the next one if it is taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except Exception:
        return None


_PRCTL = _load_prctl()  # resolved before any fork: the child only makes the call


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the test process dies, so a killed pytest leaves no
    # orphaned server holding its database lock. (PR_SET_PDEATHSIG = 1)
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)


def server_log(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def start_server(
    path: "os.PathLike[str] | str",
    env: Optional[Dict[str, str]] = None,
    port: Optional[int] = None,
    args: Sequence[str] = (),
    timeout: float = 60.0,
) -> Tuple[subprocess.Popen, str, int]:
    """Run `python -m vectordb serve --host 127.0.0.1 --port <port> --path <path>` and wait until
    /health answers. Returns (process, base_url, port actually bound)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log_path = path.parent / f"{path.name}.server-{time.time_ns()}.log"
    child_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update(env or {})
    requested = free_port() if port is None else port
    cmd = [sys.executable, "-m", "vectordb", "serve", "--host", "127.0.0.1", "--port", str(requested),
           "--path", str(path), *args]
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=child_env, cwd=str(path.parent),
                            preexec_fn=_die_with_parent if _PRCTL is not None else None)
    log_file.close()  # the child holds its own descriptor
    proc.log_path = str(log_path)  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    bound: Optional[int] = None
    while bound is None:
        match = _SERVING.search(log_path.read_text(errors="replace"))
        if match:
            bound = int(match.group(2))
            break
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before serving:\n{server_log(proc)}")
        if time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"server did not start within {timeout} s:\n{server_log(proc)}")
        time.sleep(0.05)
    base_url = f"http://127.0.0.1:{bound}"
    while True:
        try:
            if httpx.get(base_url + "/health", timeout=2.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"server never answered /health:\n{server_log(proc)}")
        time.sleep(0.05)
    return proc, base_url, bound


def stop_server(proc: subprocess.Popen, kill: bool = False, timeout: float = 20.0) -> Optional[int]:
    """SIGTERM (graceful: the database is closed) or, with kill=True, SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode
