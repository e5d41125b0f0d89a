"""What the numbers were measured on: CPU, cores, SIMD kernel, versions; and process measurements
(RSS from /proc/self/status -- psutil is not a dependency -- and bytes on disk)."""
from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "asimd", "sve")


def cpu_info() -> dict:
    """CPU model, family/model numbers, SIMD flags and core count, from /proc/cpuinfo."""
    info = {"model": platform.processor() or platform.machine(), "flags": [],
            "cores": os.cpu_count() or 1}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # first processor block is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    info["model"] = fields.get("model name") or fields.get("Model") or info["model"]
    if "cpu family" in fields:
        info["family_model"] = f"family {fields['cpu family']} model {fields.get('model', '?')}"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    info["flags"] = [f for f in SIMD_FLAGS if f in flags]
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    return info


def mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def vectordb_capabilities() -> dict | str:
    """vectordb._core.capabilities(), or why it is unavailable."""
    try:
        from vectordb import _core  # noqa: PLC0415

        return dict(_core.capabilities())
    except Exception as exc:  # noqa: BLE001 -- report, never crash
        return f"unavailable ({type(exc).__name__}: {exc})"


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    """Versions of Python and every compared system (without importing the heavy ones)."""
    out = {"python": platform.python_version()}
    for label, dist in (("numpy", "numpy"), ("faiss", "faiss-cpu"), ("hnswlib", "hnswlib"),
                        ("chromadb", "chromadb"), ("matplotlib", "matplotlib")):
        out[label] = _dist_version(dist) or "not installed"
    try:
        import vectordb  # noqa: PLC0415

        out["vectordb"] = getattr(vectordb, "__version__", None) or _dist_version("vectordb") \
            or "source tree"
    except Exception as exc:  # noqa: BLE001
        out["vectordb"] = f"not importable ({type(exc).__name__})"
    try:
        import numpy  # noqa: PLC0415

        cfg = numpy.show_config(mode="dicts")  # numpy >= 1.25
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        if blas:
            out["numpy BLAS"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001
        pass
    return out


# OpenBLAS settings that change which kernel a BLAS-using peer (NumPy, faiss's training and
# batch search) runs: the benchmark workers start with them unset (runner.run_isolated).
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_overrides() -> dict[str, str]:
    """The OpenBLAS overrides set in this process's environment."""
    return {k: os.environ[k] for k in BLAS_OVERRIDES if k in os.environ}


def blas_kernels() -> str:
    """The BLAS libraries loaded in this process and the kernel each one runs (threadpoolctl),
    e.g. 'openblas 0.3.15 Prescott (faiss_cpu.libs)'; a reason when threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    out = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        where = Path(lib.get("filepath", "?")).parent.name
        out.append(f"{lib.get('internal_api', '?')} {lib.get('version') or ''} "
                   f"{lib.get('architecture') or '?'} ({where})".replace("  ", " "))
    return "; ".join(out) or "no BLAS loaded"


def machine_summary() -> dict:
    cpu = cpu_info()
    return {"cpu": cpu, "mem_gib": mem_total_gib(), "os": f"{platform.system()} "
            f"{platform.release()}", "vectordb_capabilities": vectordb_capabilities(),
            "versions": versions(), "argv": " ".join(sys.argv),
            "blas_overrides_in_parent": blas_overrides()}


def machine_markdown(m: dict) -> str:
    cpu = m["cpu"]
    caps = m["vectordb_capabilities"]
    if isinstance(caps, dict):
        detected = ", ".join(map(str, caps.get("detected", [])))
        kernel = f"`{caps.get('kernel', '?')}` (detected {detected};" \
                 f" enabled {', '.join(map(str, caps.get('enabled', [])))}; " \
                 f"worker threads {caps.get('threads', '?')})"
    else:
        kernel = caps
    lines = [
        f"- CPU: {cpu['model']}" + (f" ({cpu['family_model']})" if cpu.get("family_model") else "")
        + f", {cpu['cores']} cores" + (f", SIMD flags: {' '.join(cpu['flags'])}" if cpu["flags"]
                                       else ""),
        f"- Memory: {m['mem_gib']:.0f} GiB; {m['os']}" if m.get("mem_gib") else f"- {m['os']}",
        f"- vectordb SIMD kernel: {kernel}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "- OpenBLAS overrides: " + (", ".join(f"{k}={v}" for k, v in
                                               m.get("blas_overrides_in_parent", {}).items())
                                    or "none") + " in the launching shell; each worker process "
        "starts with " + " and ".join(BLAS_OVERRIDES) + " unset (the BLAS kernel each system ran "
        "is in its row's `blas` field of the JSON and under Systems)",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- process

class LoadRange:
    """The lowest and highest 1-minute load average among the samples taken (None before any):
    how busy the shared machine was while something was measured."""

    def __init__(self) -> None:
        self.low: float | None = None
        self.high: float | None = None

    def sample(self) -> None:
        try:
            x = os.getloadavg()[0]
        except OSError:
            return
        self.low = x if self.low is None else min(self.low, x)
        self.high = x if self.high is None else max(self.high, x)


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS), 0 where /proc is unavailable."""
    return _status_field("VmRSS")


def peak_rss_bytes() -> int:
    return _status_field("VmHWM")


def _status_field(name: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); best effort."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS deltas mean what they say."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def dir_bytes(path: str | os.PathLike) -> int:
    """Bytes allocated on disk under a directory (st_blocks, so sparse files count honestly)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def file_bytes(path: str | os.PathLike) -> int:
    st = os.stat(path)
    return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size


def is_importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001
        return False
