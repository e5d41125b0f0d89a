#!/usr/bin/env bash
# tests/sanitize.sh — the C engine under AddressSanitizer + UBSan, or under valgrind (reliability
# target 8).
#
#   bash tests/sanitize.sh                                  # the engine-facing tests (list below)
#   bash tests/sanitize.sh tests/test_storage.py -k torn    # any pytest arguments
#   bash tests/sanitize.sh --valgrind                       # valgrind memcheck smoke run instead
#   VECTORDB_SANITIZE_KEEP=1 bash tests/sanitize.sh ...     # keep the temp copy to debug in
#
# Sanitizer mode, what it does and why:
# - copies the sources (no build/, *.so, caches, benchmark data) to a temp dir and builds there with
#   VECTORDB_SANITIZE=1 (setup.py adds -fsanitize=address,undefined -O1 -g): the in-place build of
#   the checkout stays a normal build (other work in the checkout keeps running against it);
# - runs Python with the ASan and UBSan runtimes preloaded (CPython itself is not instrumented, so
#   the runtime must come first in the library list) and PYTHONPATH pointing at the copy; the
#   script checks that `vectordb._core` really is the sanitizer build before running anything.
#   Subprocesses started by tests inherit all of this, so crash workers run instrumented too;
# - UBSAN_OPTIONS=halt_on_error=1: the first undefined behaviour aborts the process, so pytest sees
#   a failure instead of a line in a log;
# - ASAN_OPTIONS: detect_leaks=0 (CPython keeps objects alive at exit and LeakSanitizer would
#   report them all; leaks are the valgrind run's job); allocator_may_return_null=1 with
#   max_allocation_size_mb=3072, so a huge allocation asked for by a damaged file is an ENOMEM the
#   engine must handle, not an ASan abort (ASan still logs a "failed to allocate" warning);
# - every report goes to a log file per process, printed at the end, so reports from child
#   processes are not lost; the exit code is pytest's, or 1 when a log holds an ASan ERROR or a
#   UBSan "runtime error" even though pytest passed (e.g. in a subprocess a test tolerated).
# Needs gcc with libasan/libubsan. The default set takes ~10 minutes on 2 cores.
#
# Valgrind mode: builds a normal (-O1 -g) extension in the temp copy and runs a short script
# (add/upsert/update/query/get/delete/checkpoint/reopen, flat and IVF) under memcheck with
# PYTHONMALLOC=malloc. CPython and NumPy have their own noise (interned objects, arenas, static
# caches), so instead of a suppression file the XML report is filtered: a finding is an error
# (invalid read/write, use of uninitialised values, bad free) or a definite leak with a frame in
# vectordb's _core module. Exit 1 when there is one. Takes ~2-4 minutes.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
PY="$("$PY" -c 'import sys; print(sys.executable)')" # the interpreter itself, not a pyenv shim script
DEFAULT_TESTS=(tests/test_storage.py tests/test_crash.py tests/test_kernels.py tests/test_filters.py
               tests/test_api.py tests/test_fuzz_files.py tests/test_io_errors.py)
MODE=sanitize
if [ "${1:-}" = "--valgrind" ]; then
    MODE=valgrind
    shift
fi

WORK="$(mktemp -d /tmp/vdb-sanitize.XXXXXX)"
LOGDIR="$WORK/sanitizer-logs"
cleanup() {
    if [ -n "${VECTORDB_SANITIZE_KEEP:-}" ]; then
        echo "sanitize.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

mkdir -p "$WORK/tree" "$LOGDIR"
tar -C "$SRC" --exclude=build --exclude='*.so' --exclude=.git --exclude=.hypothesis --exclude=.pytest_cache \
    --exclude=__pycache__ --exclude=.benchmarks --exclude=.cache --exclude=vector_db --exclude=.venv \
    --warning=no-file-changed -cf - . | tar -C "$WORK/tree" -xf -
cd "$WORK/tree"
export PYTHONPATH="$WORK/tree${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

build() {
    echo "sanitize.sh: building the extension ($MODE) in $WORK/tree" >&2
    "$@" "$PY" setup.py build_ext --inplace -q >"$WORK/build.log" 2>&1 || {
        cat "$WORK/build.log" >&2
        echo "sanitize.sh: build failed" >&2
        exit 2
    }
}

check_copy() {
    "$PY" - "$WORK/tree" <<'EOF'
import sys, vectordb._core as c
if not c.__file__.startswith(sys.argv[1]):
    sys.exit(f"sanitize.sh: vectordb._core comes from {c.__file__}, not from the temp copy")
EOF
}

if [ "$MODE" = valgrind ]; then
    command -v valgrind >/dev/null || { echo "sanitize.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
    build env CFLAGS="-g -fno-omit-frame-pointer"
    check_copy
    cat >"$WORK/smoke.py" <<'EOF'
import sys, tempfile
import numpy as np
import vectordb

path = tempfile.mkdtemp(prefix="vdb-valgrind-")
rng = np.random.default_rng(0)
client = vectordb.PersistentClient(path)
col = client.create_collection("smoke", metadata={"hnsw:space": "cosine"})
n, d = 300, 16
vecs = rng.standard_normal((n, d)).astype(np.float32)
col.add(ids=[f"id{i}" for i in range(n)], embeddings=vecs,
        metadatas=[{"i": i, "tag": f"t{i % 5}", "ok": i % 2 == 0, "l": [i, i + 1]} for i in range(n)],
        documents=[f"document number {i}" if i % 3 else None for i in range(n)])
col.query(query_embeddings=vecs[:4], n_results=7, where={"tag": {"$in": ["t1", "t2"]}})
col.get(where={"$and": [{"i": {"$gte": 10}}, {"ok": True}]}, where_document={"$contains": "number 1"}, limit=20,
        include=["embeddings", "metadatas", "documents"])
col.upsert(ids=["id5", "new"], embeddings=rng.standard_normal((2, d)).astype(np.float32), metadatas=[{"up": 1}, None])
col.update(ids=["id6"], metadatas=[{"i": None, "x": "y"}], documents=["changed"])
col.delete(ids=[f"id{i}" for i in range(0, 60, 7)])
col.delete(where={"tag": "t4"})
col.checkpoint()
col.add(ids=["after"], embeddings=rng.standard_normal((1, d)).astype(np.float32))
ivf = client.create_collection("smoke-ivf", use_ivf=True, n_clusters=8)
iv = rng.standard_normal((1100, 8)).astype(np.float32)
ivf.add(ids=[f"v{i}" for i in range(1100)], embeddings=iv)
ivf.query(query_embeddings=iv[:3], n_results=5, n_probe=2)
ivf.delete(ids=[f"v{i}" for i in range(0, 1100, 3)])
ivf.checkpoint()
client.close()
client = vectordb.PersistentClient(path)
col = client.get_collection("smoke")
col.query(query_embeddings=vecs[:2], n_results=5, include=["embeddings", "metadatas", "documents", "distances"])
assert "after" in col.get()["ids"]
ivf = client.get_collection("smoke-ivf")
ivf.query(query_embeddings=iv[:2], n_results=5)
ivf.add(ids=["vnew"], embeddings=iv[:1])
client.close()
# Error paths: a torn log tail (dropped), then damaged snapshot files (CorruptionError).
import glob, os, shutil
(wal,) = glob.glob(os.path.join(path, "collections", "*", "wal-*"))[:1]
with open(wal, "ab") as f:
    f.write(b"\x05\x00\x00")
client = vectordb.PersistentClient(path)
for c in client.list_collections():
    c.count()
client.close()
for name in ("records.bin", "ids.bin", "vectors.bin", "ivf.bin", "MANIFEST"):
    for target in glob.glob(os.path.join(path, "collections", "*", "gen-*", name)) + \
                  glob.glob(os.path.join(path, "collections", "*", name)):
        copy = path + "-damaged"
        shutil.copytree(path, copy)
        damaged = copy + target[len(path):]
        with open(damaged, "r+b") as f:
            f.seek(os.path.getsize(damaged) // 2)
            f.write(b"\xff\xfe")
        client = vectordb.PersistentClient(copy)
        for c in client.list_collections():
            try:
                c.count()
            except vectordb.CorruptionError:
                pass
        client.close()
        shutil.rmtree(copy)
e = vectordb.EphemeralClient()
m = e.create_collection("mem")
m.add(ids=["a", "b"], embeddings=[[1.0, 2.0], [3.0, 4.0]])
m.query(query_embeddings=[[1.0, 2.0]], n_results=1)
e.close()
print("smoke run finished", file=sys.stderr)
EOF
    echo "sanitize.sh: valgrind memcheck of the smoke script" >&2
    set +e
    PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --track-origins=yes --num-callers=30 --xml=yes \
        --xml-file="$LOGDIR/valgrind.%p.xml" --log-file="$LOGDIR/valgrind.%p.log" --trace-children=no "$PY" "$WORK/smoke.py"
    vrc=$?
    set -e
    [ "$vrc" -eq 0 ] || { echo "sanitize.sh: the smoke script failed under valgrind (exit $vrc)" >&2; tail -50 "$LOGDIR"/valgrind.*.log >&2; }
    "$PY" - "$LOGDIR"/valgrind.*.xml <<'EOF'
import sys, xml.etree.ElementTree as ET
errors = [e for path in sys.argv[1:] for e in ET.parse(path).getroot().iter("error")]
ours, total = [], 0
for err in errors:
    total += 1
    stacks = err.findall("stack")  # where it happened, and (for uninitialised values) the origin
    frames = [f for st in stacks for f in st.findall("frame")]
    if not any("/vectordb/_core" in (f.findtext("obj") or "") for f in frames):
        continue
    frames = stacks[0].findall("frame")
    what = err.findtext("what") or (err.find("xwhat").findtext("text") if err.find("xwhat") is not None else "")
    lines = [f"{err.findtext('kind')}: {what}"]
    for f in frames[:14]:
        where = f.findtext("file")
        loc = f"{f.findtext('dir', '')}/{where}:{f.findtext('line')}" if where else f.findtext("obj")
        lines.append(f"    {f.findtext('fn') or f.findtext('ip')}  {loc}")
    ours.append("\n".join(lines))
print(f"sanitize.sh: valgrind reported {total} error(s)/definite leak(s) in the process, {len(ours)} with a frame in vectordb._core",
      file=sys.stderr)
for o in ours:
    print(o, file=sys.stderr)
sys.exit(1 if ours else 0)
EOF
    prc=$?
    [ "$vrc" -ne 0 ] && exit 1
    exit "$prc"
fi

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
    [ -e "$lib" ] || { echo "sanitize.sh: $lib not found (install gcc's sanitizer runtimes)" >&2; exit 2; }
done
build env VECTORDB_SANITIZE=1

export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$LOGDIR/asan:strict_string_checks=1:detect_stack_use_after_return=1:allocator_may_return_null=1:max_allocation_size_mb=3072"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$LOGDIR/ubsan"
export PYTHONMALLOC=malloc # ASan then sees CPython's allocations too
command -v llvm-symbolizer >/dev/null && export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer)"
check_copy

if [ "$#" -gt 0 ]; then
    ARGS=("$@")
else
    ARGS=()
    for t in "${DEFAULT_TESTS[@]}"; do [ -e "$t" ] && ARGS+=("$t"); done
fi
echo "sanitize.sh: pytest ${ARGS[*]}" >&2
set +e
"$PY" -m pytest -q -p no:cacheprovider "${ARGS[@]}"
rc=$?
set -e

reports=$(find "$LOGDIR" -type f | sort)
if [ -n "$reports" ]; then
    echo "sanitize.sh: sanitizer logs:" >&2
    for f in $reports; do
        echo "==== $f" >&2
        cat "$f" >&2
    done
    if grep -lE "ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer" $reports >/dev/null; then
        echo "sanitize.sh: a sanitizer reported an error (above)" >&2
        [ "$rc" -eq 0 ] && rc=1
    fi
fi
exit "$rc"
