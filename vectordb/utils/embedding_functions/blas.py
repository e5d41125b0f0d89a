"""How many threads OpenBLAS may use during the NumPy forward pass (default 1; VECTORDB_EMBED_THREADS).

OpenBLAS's threads busy-wait for work: on a machine whose cores are busy with other processes, its
default (one thread per core) made the forward pass 5-20x slower than one thread (bench_embed.py),
and one thread is never much slower for this model's small matrices. The count is set on the
OpenBLAS that NumPy loaded, through its own set/get functions (found with ctypes; no threadpoolctl),
for the duration of a forward pass, and restored after the last concurrent pass ends. With another
BLAS, or off Linux, nothing is changed.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Any, Iterator, Optional, Tuple

ENV_THREADS = "VECTORDB_EMBED_THREADS"
# (setter, getter) names: OpenBLAS built plainly, with a 64-bit-integer suffix, or as NumPy's scipy-openblas.
_SYMBOLS = (("openblas_set_num_threads", "openblas_get_num_threads"),
            ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"))

_lock = threading.Lock()
_active = 0
_saved: Optional[int] = None
_found: Optional[Tuple[Any, Any]] = None
_searched = False


def _openblas() -> Optional[Tuple[Any, Any]]:
    """(set, get) of the OpenBLAS loaded in this process, or None."""
    global _found, _searched
    if _searched:
        return _found
    _searched = True
    import numpy  # noqa: F401 - NumPy loads its BLAS

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                _found = (getattr(lib, set_name), getattr(lib, get_name))
                return _found
    return None


def threads_wanted() -> int:
    try:
        return max(1, int(os.environ.get(ENV_THREADS, "1")))
    except ValueError:
        return 1


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """OpenBLAS runs on `n` threads inside the block (process-wide: BLAS has one setting)."""
    global _active, _saved
    with _lock:
        funcs = _openblas()
        if funcs is not None and _active == 0:
            _saved = int(funcs[1]())
            if _saved != n:
                funcs[0](n)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if funcs is not None and _active == 0 and _saved is not None and _saved != n:
                funcs[0](_saved)
