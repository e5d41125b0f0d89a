"""The standalone C unit tests (tests/c/*.c) under pytest: each is compiled with gcc against the
engine sources it needs and run; a non-zero exit fails the test with the program's output.

Skipped when gcc is not installed. The source lists mirror the build line at the top of each C
file; VECTORDB_C_TEST_CFLAGS adds flags (e.g. "-fsanitize=address,undefined").
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CFLAGS = ["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-pthread", "-D_GNU_SOURCE", "-Icsrc"]

PROGRAMS = {
    "test_ivf": ["vdb_ivf.c", "vdb_ivf_search.c", "vdb_ivf_pq4.c", "vdb_ivf_file.c", "vdb_kmeans.c", "vdb_pq4.c",
                 "vdb_sq8.c", "vdb_nearest.c", "vdb_distance.c", "vdb_cpu.c", "vdb_threads.c", "vdb_topk.c",
                 "vdb_store.c", "vdb_crc32c.c", "vdb_bytes.c", "vdb_error.c"],
    "test_kernels": ["vdb_cpu.c", "vdb_distance.c", "vdb_pq4.c", "vdb_sq8.c", "vdb_kmeans.c", "vdb_topk.c",
                     "vdb_threads.c", "vdb_flat.c", "vdb_exact.c", "vdb_nearest.c", "vdb_error.c"],
    "test_meta": ["vdb_meta.c", "vdb_filter.c", "vdb_bytes.c", "vdb_error.c"],
    "test_collection": sorted(p.name for p in (ROOT / "csrc").glob("vdb_*.c")),
}
# Per program: extra compile flags and environment (test_meta and test_collection inject allocation
# failures; test_meta scribbles over freed memory to catch use-after-free).
EXTRA_FLAGS = {"test_meta": ["-DVDB_META_FAULTS"],
               "test_collection": ["-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign"]}
EXTRA_ENV = {"test_meta": {"MALLOC_PERTURB_": "165"}}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_c_unit_program(name, tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path / name
    extra = shlex.split(os.environ.get("VECTORDB_C_TEST_CFLAGS", ""))
    cmd = [gcc, *CFLAGS, *EXTRA_FLAGS.get(name, []), *extra, f"tests/c/{name}.c",
           *(f"csrc/{s}" for s in PROGRAMS[name]), "-lm", "-o", str(exe)]
    build = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"{shlex.join(cmd)} failed:\n{build.stderr[-4000:]}"
    # Warnings in the engine or the test are defects too (the extension builds with -Wall -Wextra).
    assert "warning:" not in build.stderr, build.stderr[-4000:]
    env = {**os.environ, **EXTRA_ENV.get(name, {})}
    run = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, f"{name} exited with {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
