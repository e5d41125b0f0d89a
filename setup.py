"""Builds the C engine (csrc/) into the private extension vectordb._core.

SIMD kernels are selected at run time (csrc/vdb_cpu.c), so the build uses no -march flag and runs
on any x86-64 or arm64 CPU. No fast-math flags either: they would change float behaviour in the whole process.
"""
import glob
import os

import numpy
from setuptools import Extension, setup

ENGINE_SOURCES = [
    "vdb_error.c",
    "vdb_bytes.c",
    "vdb_cpu.c",
    "vdb_distance.c",
    "vdb_nearest.c",
    "vdb_topk.c",
    "vdb_threads.c",
    "vdb_exact.c",
    "vdb_flat.c",
    "vdb_kmeans.c",
    "vdb_pq4.c",
    "vdb_ivf.c",
    "vdb_ivf_search.c",
    "vdb_ivf_pq4.c",
    "vdb_ivf_file.c",
    "vdb_sq8.c",
    "vdb_codes.c",
    "vdb_crc32c.c",
    "vdb_store.c",
    "vdb_meta.c",
    "vdb_filter.c",
    "vdb_idmap.c",
    "vdb_logrec.c",
    "vdb_result.c",
    "vdb_collection.c",
    "vdb_collection_ivf.c",
]
BINDING = "_coremodule.c"

extra_compile_args = ["-std=c11", "-O3", "-Wall", "-Wextra", "-fvisibility=hidden", "-pthread"]
extra_link_args = ["-pthread"]
if os.environ.get("VECTORDB_SANITIZE"):
    # ASan + UBSan build for the sanitizer job (LD_PRELOAD the ASan runtime when running Python).
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_compile_args += flags
    extra_link_args += flags

setup(
    ext_modules=[
        Extension(
            "vectordb._core",
            sources=[os.path.join("csrc", f) for f in [BINDING] + ENGINE_SOURCES],
            # A header change rebuilds the extension (build_ext compares sources and depends only).
            depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
            include_dirs=["csrc", numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("_GNU_SOURCE", "1")],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]
)
