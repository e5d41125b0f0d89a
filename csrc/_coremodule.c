/* vectordb._core — the only file that speaks Python: converts arguments, calls the engine with the
 * GIL released, converts results, and maps engine error codes to exceptions in one place.
 * Validation with user-facing messages happens in the Python layer before these calls; the checks
 * here only guard the engine against misuse. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>
#include <pthread.h>
#include <string.h>

#include "vdb_bytes.h"
#include "vdb_codes.h"
#include "vdb_collection.h"
#include "vdb_cpu.h"
#include "vdb_distance.h"
#include "vdb_error.h"
#include "vdb_exact.h"
#include "vdb_filter.h"
#include "vdb_flat.h"
#include "vdb_ivf.h"
#include "vdb_kmeans.h"
#include "vdb_meta.h"
#include "vdb_nearest.h"
#include "vdb_pq4.h"
#include "vdb_sq8.h"
#include "vdb_store.h"
#include "vdb_threads.h"

typedef struct {
    PyObject *error;          /* VectorDBError base, set by vectordb.errors via _set_exceptions */
    PyObject *corrupt_error;  /* CorruptionError */
    PyObject *locked_error;   /* LockedError */
    PyObject *dim_error;      /* InvalidDimensionError */
    PyObject *arg_error;      /* InvalidArgumentError */
    PyObject *readonly_error; /* ReadOnlyError */
    PyTypeObject *collection_type;
    PyTypeObject *filter_type;
} core_state;

static core_state *get_state(PyObject *module) { return (core_state *)PyModule_GetState(module); }

/* One place maps engine codes to Python exceptions. */
static PyObject *raise_engine(PyObject *module, int rc)
{
    core_state *st = get_state(module);
    const char *msg = vdb_last_error();
    PyObject *exc = st->error ? st->error : PyExc_RuntimeError;
    switch (rc) {
    case VDB_ENOMEM: return PyErr_Format(PyExc_MemoryError, "%s", msg);
    case VDB_EINVAL: exc = st->arg_error ? st->arg_error : PyExc_ValueError; break;
    case VDB_ECORRUPT: exc = st->corrupt_error ? st->corrupt_error : exc; break;
    case VDB_ELOCKED: exc = st->locked_error ? st->locked_error : exc; break;
    case VDB_EDIM: exc = st->dim_error ? st->dim_error : PyExc_ValueError; break;
    case VDB_EREADONLY: exc = st->readonly_error ? st->readonly_error : exc; break;
    case VDB_EIO:
        if (vdb_last_errno()) {
            /* OSError(errno, message): callers can tell ENOSPC from EIO. */
            PyObject *args = Py_BuildValue("(is)", vdb_last_errno(), msg);
            if (args) {
                PyErr_SetObject(PyExc_OSError, args);
                Py_DECREF(args);
            }
            return NULL;
        }
        exc = PyExc_OSError;
        break;
    default: break;
    }
    if (!PyErr_Occurred()) PyErr_SetString(exc, msg);
    return NULL;
}

static int metric_from_str(const char *s, vdb_metric *m)
{
    if (!strcmp(s, "l2")) *m = VDB_METRIC_L2;
    else if (!strcmp(s, "ip")) *m = VDB_METRIC_IP;
    else if (!strcmp(s, "cosine")) *m = VDB_METRIC_COSINE;
    else {
        PyErr_Format(PyExc_ValueError, "unknown metric '%s': expected 'l2', 'ip' or 'cosine'", s);
        return -1;
    }
    return 0;
}

/* A float32, C-contiguous 2-D array view (new reference) or NULL with an exception. */
static PyArrayObject *as_matrix(PyObject *obj, const char *what)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(obj, NPY_FLOAT32, 1, 2, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    if (PyArray_NDIM(a) == 1) {
        npy_intp dims[2] = {1, PyArray_DIM(a, 0)};
        PyArray_Dims shape = {dims, 2};
        PyArrayObject *b = (PyArrayObject *)PyArray_Newshape(a, &shape, NPY_CORDER);
        Py_DECREF(a);
        a = b;
        if (!a) return NULL;
    }
    if (PyArray_DIM(a, 1) == 0) {
        Py_DECREF(a);
        PyErr_Format(PyExc_ValueError, "%s must have a positive dimension", what);
        return NULL;
    }
    return a;
}

/* ---- kernels API (tests, benchmarks) ---- */

static PyObject *feature_list(unsigned mask)
{
    PyObject *l = PyList_New(0);
    if (!l) return NULL;
    static const struct { unsigned bit; const char *name; } names[] = {
        {VDB_CPU_AVX2, "avx2"}, {VDB_CPU_AVX512, "avx512"}, {VDB_CPU_NEON, "neon"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(mask & names[i].bit)) continue;
        PyObject *s = PyUnicode_FromString(names[i].name);
        if (!s || PyList_Append(l, s)) {
            Py_XDECREF(s);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(s);
    }
    return l;
}

static PyObject *core_capabilities(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *det = feature_list(vdb_cpu_detected()), *en = feature_list(vdb_cpu_enabled());
    if (!det || !en) {
        Py_XDECREF(det);
        Py_XDECREF(en);
        return NULL;
    }
    return Py_BuildValue("{sNsNsssn}", "detected", det, "enabled", en, "kernel", vdb_cpu_kernel_name(), "threads",
                         (Py_ssize_t)vdb_threads_count());
}

static PyObject *core_set_cpu_features(PyObject *module, PyObject *names)
{
    unsigned mask = 0;
    PyObject *seq = PySequence_Fast(names, "set_cpu_features takes a list of feature names");
    if (!seq) return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        const char *s = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        if (!s) {
            Py_DECREF(seq);
            return NULL;
        }
        if (!strcmp(s, "avx2")) mask |= VDB_CPU_AVX2;
        else if (!strcmp(s, "avx512")) mask |= VDB_CPU_AVX512;
        else if (!strcmp(s, "neon")) mask |= VDB_CPU_NEON;
        else {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "unknown CPU feature '%s': expected avx2, avx512 or neon", s);
        }
    }
    Py_DECREF(seq);
    vdb_cpu_set_enabled(mask);
    return core_capabilities(module, NULL);
}

static PyObject *core_set_num_threads(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > 64) return PyErr_Format(PyExc_ValueError, "thread count must be in 1..64, got %zd", n);
    return PyLong_FromSize_t(vdb_threads_set_count((size_t)n));
}

/* block: 0 batch (one query), 1 block, 2 block_one (one query, as the block gives it) */
static PyObject *distance_common(PyObject *args, int block)
{
    const char *isa, *metric_s;
    PyObject *qo, *ro;
    vdb_metric m;
    if (!PyArg_ParseTuple(args, "ssOO", &isa, &metric_s, &qo, &ro) || metric_from_str(metric_s, &m)) return NULL;
    PyArrayObject *q = as_matrix(qo, "queries"), *r = q ? as_matrix(ro, "rows") : NULL;
    PyArrayObject *out = NULL;
    if (!q || !r) goto done;
    size_t d = (size_t)PyArray_DIM(q, 1), nq = (size_t)PyArray_DIM(q, 0), n = (size_t)PyArray_DIM(r, 0);
    if ((size_t)PyArray_DIM(r, 1) != d) {
        PyErr_SetString(PyExc_ValueError, "queries and rows must have the same dimension");
        goto done;
    }
    if (block != 1 && nq != 1) {
        PyErr_SetString(PyExc_ValueError, "distance_batch and distance_block_one take one query vector");
        goto done;
    }
    npy_intp dims[2] = {(npy_intp)nq, (npy_intp)n};
    out = block == 1 ? (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32)
                : (PyArrayObject *)PyArray_SimpleNew(1, dims + 1, NPY_FLOAT32);
    if (!out) goto done;
    int rc;
    const float *qp = PyArray_DATA(q), *rp = PyArray_DATA(r);
    float *op = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    rc = block == 1 ? vdb_distance_block_isa(isa, m, qp, nq, rp, n, d, op)
         : block == 2 ? vdb_distance_block_one_isa(isa, m, qp, rp, n, d, op)
                      : vdb_distance_batch_isa(isa, m, qp, rp, n, d, op);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        Py_CLEAR(out);
        PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
    }
done:
    Py_XDECREF(q);
    Py_XDECREF(r);
    return (PyObject *)out;
}

static PyObject *core_distance_batch(PyObject *m, PyObject *args) { (void)m; return distance_common(args, 0); }
static PyObject *core_distance_block(PyObject *m, PyObject *args) { (void)m; return distance_common(args, 1); }
static PyObject *core_distance_block_one(PyObject *m, PyObject *args) { (void)m; return distance_common(args, 2); }

/* sq8_probe(isa, metric, train, x, queries) -> (lo, step, codes uint8[n, d], err float32[n], scan float32[nq, n],
 * lower_bound float64[nq, n], ready bool[nq]): the sq8 quantizer trained on train, x encoded, and
 * each query's scan values and bounds on one kernel variant, for tests against a NumPy reference. */
static PyObject *core_sq8_probe(PyObject *module, PyObject *args)
{
    (void)module;
    const char *isa, *metric_s;
    PyObject *to, *xo, *qo, *res = NULL;
    vdb_metric m;
    vdb_sq8 *sq = NULL;
    if (!PyArg_ParseTuple(args, "ssOOO", &isa, &metric_s, &to, &xo, &qo) || metric_from_str(metric_s, &m)) return NULL;
    PyArrayObject *t = as_matrix(to, "train"), *x = t ? as_matrix(xo, "x") : NULL, *q = x ? as_matrix(qo, "queries") : NULL;
    PyArrayObject *codes = NULL, *err = NULL, *scan = NULL, *lb = NULL, *ready = NULL, *lo = NULL, *step = NULL;
    if (!q) goto done;
    size_t d = (size_t)PyArray_DIM(t, 1), n = (size_t)PyArray_DIM(x, 0), nq = (size_t)PyArray_DIM(q, 0);
    if ((size_t)PyArray_DIM(x, 1) != d || (size_t)PyArray_DIM(q, 1) != d) {
        PyErr_SetString(PyExc_ValueError, "train, x and queries must have the same dimension");
        goto done;
    }
    if (vdb_sq8_train(m, d, PyArray_DATA(t), (size_t)PyArray_DIM(t, 0), &sq)) {
        PyErr_SetString(PyExc_MemoryError, vdb_last_error());
        goto done;
    }
    npy_intp cd[2] = {(npy_intp)n, (npy_intp)d}, sd[2] = {(npy_intp)nq, (npy_intp)n}, rd[1] = {(npy_intp)nq};
    codes = (PyArrayObject *)PyArray_SimpleNew(2, cd, NPY_UINT8);
    err = (PyArrayObject *)PyArray_SimpleNew(1, cd, NPY_FLOAT32);
    scan = (PyArrayObject *)PyArray_ZEROS(2, sd, NPY_FLOAT32, 0);
    lb = (PyArrayObject *)PyArray_ZEROS(2, sd, NPY_FLOAT64, 0);
    ready = (PyArrayObject *)PyArray_ZEROS(1, rd, NPY_BOOL, 0);
    npy_intp dd[1] = {(npy_intp)d};
    lo = (PyArrayObject *)PyArray_SimpleNew(1, dd, NPY_FLOAT32);
    step = (PyArrayObject *)PyArray_SimpleNew(1, dd, NPY_FLOAT32);
    if (!codes || !err || !scan || !lb || !ready || !lo || !step) goto done;
    memcpy(PyArray_DATA(lo), sq->lo, d * sizeof(float));
    memcpy(PyArray_DATA(step), sq->step, d * sizeof(float));
    vdb_sq8_encode(sq, PyArray_DATA(x), n, PyArray_DATA(codes), PyArray_DATA(err));
    for (size_t i = 0; i < nq; i++) {
        vdb_sq8_query p;
        int ok = vdb_sq8_query_prepare(sq, (const float *)PyArray_DATA(q) + i * d, &p);
        if (ok < 0) {
            PyErr_NoMemory();
            goto done;
        }
        if (!ok) continue;
        float *sp = (float *)PyArray_DATA(scan) + i * n;
        double *lp = (double *)PyArray_DATA(lb) + i * n;
        int rc = vdb_sq8_scan_isa(isa, &p, PyArray_DATA(codes), n, sp);
        for (size_t r = 0; rc == 0 && r < n; r++) lp[r] = vdb_sq8_lower_bound(&p, sp[r], ((float *)PyArray_DATA(err))[r]);
        vdb_sq8_query_free(&p);
        if (rc) {
            PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
            goto done;
        }
        ((npy_bool *)PyArray_DATA(ready))[i] = 1;
    }
    res = Py_BuildValue("(OOOOOOO)", lo, step, codes, err, scan, lb, ready);
done:
    vdb_sq8_free(sq);
    Py_XDECREF(t);
    Py_XDECREF(x);
    Py_XDECREF(q);
    Py_XDECREF(codes);
    Py_XDECREF(err);
    Py_XDECREF(scan);
    Py_XDECREF(lb);
    Py_XDECREF(ready);
    Py_XDECREF(lo);
    Py_XDECREF(step);
    return res;
}

static PyObject *core_last_reranked(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromSize_t(vdb_collection_last_reranked());
}

/* nearest_centroids(isa, points, centroids, bias) -> (index uint32[n], value float32[n]): the
 * k-means assignment kernel (vdb_nearest) on one variant, for tests against a NumPy reference. */
static PyObject *core_nearest_centroids(PyObject *module, PyObject *args)
{
    (void)module;
    const char *isa;
    PyObject *xo, *co, *bo, *result = NULL;
    if (!PyArg_ParseTuple(args, "sOOO", &isa, &xo, &co, &bo)) return NULL;
    PyArrayObject *x = as_matrix(xo, "points"), *c = x ? as_matrix(co, "centroids") : NULL;
    PyArrayObject *b = c ? (PyArrayObject *)PyArray_FROMANY(bo, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY) : NULL;
    PyArrayObject *best = NULL, *val = NULL;
    float *packed = NULL;
    if (!b) goto done;
    size_t n = (size_t)PyArray_DIM(x, 0), d = (size_t)PyArray_DIM(x, 1), k = (size_t)PyArray_DIM(c, 0);
    if ((size_t)PyArray_DIM(c, 1) != d || (size_t)PyArray_DIM(b, 0) != k || k == 0) {
        PyErr_SetString(PyExc_ValueError, "need points (n, d), centroids (k, d) with k >= 1 and bias (k,)");
        goto done;
    }
    size_t floats = vdb_panel_floats(k, d);
    packed = floats ? PyMem_RawMalloc(floats * sizeof(float)) : NULL;
    npy_intp dims[1] = {(npy_intp)n};
    best = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT32);
    val = best ? (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32) : NULL;
    if (!packed || !val) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    vdb_panel_pack(PyArray_DATA(c), k, d, packed);
    rc = vdb_nearest_packed_isa(isa, PyArray_DATA(x), n, d, packed, PyArray_DATA(b), k, PyArray_DATA(best),
                                PyArray_DATA(val));
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
        goto done;
    }
    result = PyTuple_Pack(2, (PyObject *)best, (PyObject *)val);
done:
    PyMem_RawFree(packed);
    Py_XDECREF(x);
    Py_XDECREF(c);
    Py_XDECREF(b);
    Py_XDECREF(best);
    Py_XDECREF(val);
    return result;
}

/* Builds a row bitmap from a boolean array of n entries (caller frees). */
static uint64_t *bitmap_from_bools(PyObject *obj, size_t n)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(obj, NPY_BOOL, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    if ((size_t)PyArray_DIM(a, 0) != n) {
        Py_DECREF(a);
        PyErr_Format(PyExc_ValueError, "allow must have one entry per row (%zu)", n);
        return NULL;
    }
    uint64_t *bm = calloc((n + 63) / 64 + 1, sizeof *bm);
    const npy_bool *b = PyArray_DATA(a);
    if (!bm) {
        Py_DECREF(a);
        PyErr_NoMemory();
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (b[i]) bm[i >> 6] |= 1ull << (i & 63);
    Py_DECREF(a);
    return bm;
}

/* The (nq, k) float32 distances and int64 rows a search fills; 0, or -1 with an exception set. */
static int new_search_result(size_t nq, Py_ssize_t k, PyArrayObject **dist, PyArrayObject **rows)
{
    npy_intp dims[2] = {(npy_intp)nq, k};
    *dist = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    *rows = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64);
    return *dist && *rows ? 0 : -1;
}

static PyObject *core_flat_search(PyObject *module, PyObject *args)
{
    const char *metric_s;
    PyObject *data_o, *q_o, *allow_o = Py_None, *res = NULL;
    Py_ssize_t k;
    vdb_metric m;
    uint64_t *allow = NULL;
    PyArrayObject *data = NULL, *q = NULL, *dist = NULL, *rows = NULL;
    if (!PyArg_ParseTuple(args, "sOOn|O", &metric_s, &data_o, &q_o, &k, &allow_o) || metric_from_str(metric_s, &m))
        return NULL;
    if (k < 0) return PyErr_Format(PyExc_ValueError, "k must be >= 0");
    if (!(data = as_matrix(data_o, "data")) || !(q = as_matrix(q_o, "queries"))) goto done;
    size_t n = (size_t)PyArray_DIM(data, 0), d = (size_t)PyArray_DIM(data, 1), nq = (size_t)PyArray_DIM(q, 0);
    if ((size_t)PyArray_DIM(q, 1) != d) {
        PyErr_SetString(PyExc_ValueError, "queries and data must have the same dimension");
        goto done;
    }
    if (allow_o != Py_None && !(allow = bitmap_from_bools(allow_o, n))) goto done;
    if (new_search_result(nq, k, &dist, &rows)) goto done;
    vdb_vec_range range = {PyArray_DATA(data), 0, n};
    const float *qp = PyArray_DATA(q);
    float *dp = PyArray_DATA(dist);
    int64_t *rp = PyArray_DATA(rows);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = vdb_flat_search(m, d, &range, 1, allow, qp, nq, (size_t)k, dp, rp);
    Py_END_ALLOW_THREADS
    if (rc) {
        raise_engine(module, rc);
        goto done;
    }
    res = PyTuple_Pack(2, dist, rows);
done:
    free(allow);
    Py_XDECREF(data);
    Py_XDECREF(q);
    Py_XDECREF(dist);
    Py_XDECREF(rows);
    return res;
}

/* One variant of the GEMM-style exact batch kernel over all of data, for the kernel tests:
 * exact_search_isa(isa, metric, data, queries, k, allow=None) -> (dist, rows) as flat_search
 * returns them. */
static PyObject *core_exact_search_isa(PyObject *module, PyObject *args)
{
    const char *isa, *metric_s;
    PyObject *data_o, *q_o, *allow_o = Py_None, *res = NULL;
    Py_ssize_t k;
    vdb_metric m;
    uint64_t *allow = NULL;
    PyArrayObject *data = NULL, *q = NULL, *dist = NULL, *rows = NULL;
    vdb_topk *heaps = NULL;
    vdb_exact_queries eq = {0};
    if (!PyArg_ParseTuple(args, "ssOOn|O", &isa, &metric_s, &data_o, &q_o, &k, &allow_o) ||
        metric_from_str(metric_s, &m))
        return NULL;
    if (k < 1) return PyErr_Format(PyExc_ValueError, "k must be >= 1");
    if (!(data = as_matrix(data_o, "data")) || !(q = as_matrix(q_o, "queries"))) goto done;
    size_t n = (size_t)PyArray_DIM(data, 0), d = (size_t)PyArray_DIM(data, 1), nq = (size_t)PyArray_DIM(q, 0);
    if ((size_t)PyArray_DIM(q, 1) != d || nq == 0 || d == 0) {
        PyErr_SetString(PyExc_ValueError, "need queries (nq >= 1, d) and data (n, d) with d >= 1");
        goto done;
    }
    if (allow_o != Py_None && !(allow = bitmap_from_bools(allow_o, n))) goto done;
    if (new_search_result(nq, k, &dist, &rows)) goto done;
    heaps = PyMem_RawMalloc(nq * sizeof *heaps);
    if (!heaps) {
        PyErr_NoMemory();
        goto done;
    }
    int rc = vdb_exact_prepare(m, PyArray_DATA(q), nq, d, &eq);
    if (rc) {
        raise_engine(module, rc);
        goto done;
    }
    float *dp = PyArray_DATA(dist);
    int64_t *rp = PyArray_DATA(rows);
    for (size_t j = 0; j < nq; j++) vdb_topk_init(&heaps[j], (size_t)k, dp + j * (size_t)k, rp + j * (size_t)k);
    Py_BEGIN_ALLOW_THREADS
    rc = vdb_exact_scan_isa(isa, &eq, PyArray_DATA(data), n, 0, allow, heaps);
    if (rc == 0)
        for (size_t j = 0; j < nq; j++)
            for (size_t t = vdb_topk_sort(&heaps[j]); t < (size_t)k; t++) {
                dp[j * (size_t)k + t] = INFINITY;
                rp[j * (size_t)k + t] = -1;
            }
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
        goto done;
    }
    res = PyTuple_Pack(2, dist, rows);
done:
    free(allow);
    vdb_exact_free(&eq);
    PyMem_RawFree(heaps);
    Py_XDECREF(data);
    Py_XDECREF(q);
    Py_XDECREF(dist);
    Py_XDECREF(rows);
    return res;
}

/* The IVF index's k-means itself (benchmarks/bench_partition.py compares its partitions with
 * faiss's): kmeans_train(metric, x, k, seed, n_iter=0, seed_points_per_centroid=0) ->
 * (centroids, stats dict); 0 = the default. */
static PyObject *core_kmeans_train(PyObject *module, PyObject *args)
{
    const char *metric_s;
    PyObject *x_o, *res = NULL;
    Py_ssize_t k, n_iter = 0, seed_points = 0;
    unsigned long long seed;
    vdb_metric m;
    PyArrayObject *x = NULL, *cent = NULL;
    if (!PyArg_ParseTuple(args, "sOnK|nn", &metric_s, &x_o, &k, &seed, &n_iter, &seed_points) ||
        metric_from_str(metric_s, &m))
        return NULL;
    if (k < 1 || n_iter < 0 || seed_points < 0)
        return PyErr_Format(PyExc_ValueError, "need k >= 1, n_iter >= 0 and seed_points_per_centroid >= 0");
    if (!(x = as_matrix(x_o, "points"))) goto done;
    size_t n = (size_t)PyArray_DIM(x, 0), d = (size_t)PyArray_DIM(x, 1);
    npy_intp dims[2] = {k, (npy_intp)d};
    if (!(cent = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32))) goto done;
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.seed = seed;
    p.n_iter = (size_t)n_iter;
    p.seed_points_per_centroid = (size_t)seed_points;
    vdb_kmeans_stats st;
    const float *xp = PyArray_DATA(x);
    float *cp = PyArray_DATA(cent);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = vdb_kmeans_train(m, xp, n, d, (size_t)k, &p, cp, &st);
    Py_END_ALLOW_THREADS
    if (rc) {
        raise_engine(module, rc);
        goto done;
    }
    res = Py_BuildValue("(O{s:n,s:n,s:n,s:n,s:O,s:d})", cent, "n_train", (Py_ssize_t)st.n_train, "iterations",
                        (Py_ssize_t)st.iterations, "n_splits", (Py_ssize_t)st.n_splits, "n_empty",
                        (Py_ssize_t)st.n_empty, "converged", st.converged ? Py_True : Py_False, "objective",
                        st.objective);
done:
    Py_XDECREF(x);
    Py_XDECREF(cent);
    return res;
}

/* ---- pq4 kernels (tests, benchmarks): the quantizer travels as its transposed centroids ---- */

static PyArrayObject *as_u8(PyObject *obj, int ndim, const char *what)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(obj, NPY_UINT8, ndim, ndim, NPY_ARRAY_IN_ARRAY);
    if (!a) PyErr_Format(PyExc_ValueError, "%s must be a %d-d uint8 array", what, ndim);
    return a;
}

/* A quantizer from centroids as pq4_train returns them (16 * d floats) and m. */
static vdb_pq4 *pq4_from_centroids(PyObject *module, PyObject *cent_o, Py_ssize_t m)
{
    PyArrayObject *c = (PyArrayObject *)PyArray_FROMANY(cent_o, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!c) return NULL;
    size_t len = (size_t)PyArray_DIM(c, 0);
    vdb_pq4 *pq = NULL;
    if (len == 0 || len % 16 || m < 1) {
        PyErr_SetString(PyExc_ValueError, "centroids must hold 16 * d floats and m >= 1");
    } else {
        int rc = vdb_pq4_create(len / 16, (size_t)m, &pq);
        if (rc) raise_engine(module, rc);
        else memcpy(pq->cent, PyArray_DATA(c), len * sizeof(float));
    }
    Py_DECREF(c);
    return pq;
}

static PyObject *core_pq4_train(PyObject *module, PyObject *args)
{
    PyObject *x_o, *res = NULL;
    Py_ssize_t m;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OnK", &x_o, &m, &seed)) return NULL;
    PyArrayObject *x = as_matrix(x_o, "vectors"), *cent = NULL;
    vdb_pq4 *pq = NULL;
    if (!x) return NULL;
    size_t n = (size_t)PyArray_DIM(x, 0), d = (size_t)PyArray_DIM(x, 1);
    int rc = vdb_pq4_create(d, (size_t)(m < 0 ? 0 : m), &pq);
    if (!rc) {
        const float *xp = PyArray_DATA(x);
        Py_BEGIN_ALLOW_THREADS
        rc = vdb_pq4_train(pq, xp, n, NULL, seed, NULL, NULL);
        Py_END_ALLOW_THREADS
    }
    if (rc) {
        raise_engine(module, rc);
        goto done;
    }
    npy_intp dims[1] = {(npy_intp)(16 * d)};
    if (!(cent = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32))) goto done;
    memcpy(PyArray_DATA(cent), pq->cent, 16 * d * sizeof(float));
    res = Py_BuildValue("(Odd)", cent, (double)pq->eps_hi, (double)pq->eps_lo);
done:
    vdb_pq4_free(pq);
    Py_XDECREF(x);
    Py_XDECREF(cent);
    return res;
}

static PyObject *core_pq4_encode(PyObject *module, PyObject *args)
{
    PyObject *c_o, *x_o, *res = NULL;
    Py_ssize_t m;
    const char *isa = NULL;
    if (!PyArg_ParseTuple(args, "OnO|z", &c_o, &m, &x_o, &isa)) return NULL;
    vdb_pq4 *pq = pq4_from_centroids(module, c_o, m);
    PyArrayObject *x = pq ? as_matrix(x_o, "vectors") : NULL, *codes = NULL, *err = NULL;
    if (!x) goto done;
    size_t n = (size_t)PyArray_DIM(x, 0);
    if ((size_t)PyArray_DIM(x, 1) != pq->d) {
        PyErr_SetString(PyExc_ValueError, "vectors and centroids differ in dimension");
        goto done;
    }
    npy_intp dims[2] = {(npy_intp)n, (npy_intp)m};
    codes = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    err = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
    if (!codes || !err) goto done;
    if (!isa) {
        vdb_pq4_encode(pq, PyArray_DATA(x), n, PyArray_DATA(codes), PyArray_DATA(err));
    } else if (vdb_pq4_encode_isa(isa, pq, PyArray_DATA(x), n, PyArray_DATA(codes), PyArray_DATA(err))) {
        PyErr_Format(PyExc_ValueError, "pq4 encoder '%s' is not available on this CPU", isa);
        goto done;
    }
    res = Py_BuildValue("(OO)", codes, err);
done:
    vdb_pq4_free(pq);
    Py_XDECREF(x);
    Py_XDECREF(codes);
    Py_XDECREF(err);
    return res;
}

static PyObject *core_pq4_lut(PyObject *module, PyObject *args)
{
    PyObject *c_o, *q_o;
    Py_ssize_t m;
    const char *isa = NULL;
    if (!PyArg_ParseTuple(args, "OnO|z", &c_o, &m, &q_o, &isa)) return NULL;
    vdb_pq4 *pq = pq4_from_centroids(module, c_o, m);
    PyArrayObject *q = pq ? as_matrix(q_o, "query") : NULL, *lut = NULL;
    if (!q) goto done;
    if ((size_t)PyArray_DIM(q, 1) != pq->d || PyArray_DIM(q, 0) != 1) {
        PyErr_SetString(PyExc_ValueError, "one query of the centroids' dimension expected");
        goto done;
    }
    npy_intp dims[1] = {(npy_intp)(pq->m_pad * 16)};
    if (!(lut = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32))) goto done;
    if (!isa) {
        vdb_pq4_lut(pq, PyArray_DATA(q), PyArray_DATA(lut));
    } else if (vdb_pq4_lut_isa(isa, pq, PyArray_DATA(q), PyArray_DATA(lut))) {
        PyErr_Format(PyExc_ValueError, "pq4 table kernel '%s' is not available on this CPU", isa);
        Py_CLEAR(lut);
    }
done:
    vdb_pq4_free(pq);
    Py_XDECREF(q);
    return (PyObject *)lut;
}

static PyObject *core_pq4_lut_quantize(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *arg;
    const char *isa = NULL;
    if (!PyArg_ParseTuple(args, "O|z", &arg, &isa)) return NULL;
    PyArrayObject *lut = (PyArrayObject *)PyArray_FROMANY(arg, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY), *l8 = NULL;
    PyObject *res = NULL;
    if (!lut) return NULL;
    size_t len = (size_t)PyArray_DIM(lut, 0);
    if (len == 0 || len % 64 || len / 16 > VDB_PQ4_MAX_M) {
        PyErr_SetString(PyExc_ValueError, "a table holds m_pad * 16 floats, m_pad a multiple of 4 up to 256");
        goto done;
    }
    npy_intp dims[1] = {(npy_intp)len};
    if (!(l8 = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT8))) goto done;
    double step, bias;
    if (!isa) {
        vdb_pq4_lut_quantize(PyArray_DATA(lut), len / 16, PyArray_DATA(l8), &step, &bias);
    } else if (vdb_pq4_lut_quantize_isa(isa, PyArray_DATA(lut), len / 16, PyArray_DATA(l8), &step, &bias)) {
        PyErr_Format(PyExc_ValueError, "pq4 table kernel '%s' is not available on this CPU", isa);
        goto done;
    }
    res = Py_BuildValue("(Odd)", l8, step, bias);
done:
    Py_DECREF(lut);
    Py_XDECREF(l8);
    return res;
}

static PyObject *core_pq4_pack(PyObject *module, PyObject *arg)
{
    (void)module;
    PyArrayObject *codes = as_u8(arg, 2, "codes"), *packed = NULL;
    if (!codes) return NULL;
    size_t n = (size_t)PyArray_DIM(codes, 0), m = (size_t)PyArray_DIM(codes, 1), m_pad = (m + 3) & ~(size_t)3;
    if (m == 0 || m > VDB_PQ4_MAX_M) {
        PyErr_SetString(PyExc_ValueError, "codes must have 1..256 columns");
        goto done;
    }
    size_t nb = (n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK;
    npy_intp dims[1] = {(npy_intp)(nb * m_pad * 16)};
    if (!(packed = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_UINT8, 0))) goto done;
    const uint8_t *cp = PyArray_DATA(codes);
    for (size_t i = 0; i < n; i++) vdb_pq4_pack_set(PyArray_DATA(packed), m_pad, m, i, cp + i * m);
done:
    Py_DECREF(codes);
    return (PyObject *)packed;
}

static PyObject *core_pq4_unpack(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *p_o;
    Py_ssize_t m, n;
    if (!PyArg_ParseTuple(args, "Onn", &p_o, &m, &n)) return NULL;
    PyArrayObject *packed = as_u8(p_o, 1, "packed"), *codes = NULL;
    if (!packed) return NULL;
    size_t m_pad = ((size_t)m + 3) & ~(size_t)3;
    if (m < 1 || m > VDB_PQ4_MAX_M || n < 0 ||
        (size_t)PyArray_DIM(packed, 0) < ((size_t)n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * m_pad * 16) {
        PyErr_SetString(PyExc_ValueError, "packed array too short for n vectors of m indices");
        goto done;
    }
    npy_intp dims[2] = {n, m};
    if (!(codes = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8))) goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        vdb_pq4_pack_get(PyArray_DATA(packed), m_pad, (size_t)m, (size_t)i, (uint8_t *)PyArray_DATA(codes) + i * m);
done:
    Py_DECREF(packed);
    return (PyObject *)codes;
}

static PyObject *core_pq4_scan(PyObject *module, PyObject *args)
{
    (void)module;
    const char *isa;
    PyObject *p_o, *l_o;
    if (!PyArg_ParseTuple(args, "sOO", &isa, &p_o, &l_o)) return NULL;
    PyArrayObject *packed = as_u8(p_o, 1, "packed"), *lut8 = packed ? as_u8(l_o, 1, "lut8") : NULL, *out = NULL;
    if (!lut8) goto done;
    size_t m_pad = (size_t)PyArray_DIM(lut8, 0) / 16, plen = (size_t)PyArray_DIM(packed, 0);
    if (m_pad == 0 || m_pad % 4 || m_pad > VDB_PQ4_MAX_M || (size_t)PyArray_DIM(lut8, 0) != m_pad * 16 ||
        plen % (m_pad * 16)) {
        PyErr_SetString(PyExc_ValueError, "lut8 must hold m_pad * 16 bytes and packed whole blocks of m_pad * 16");
        goto done;
    }
    size_t nb = plen / (m_pad * 16);
    npy_intp dims[1] = {(npy_intp)(nb * VDB_PQ4_BLOCK)};
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT16))) goto done;
    if (vdb_pq4_scan_isa(isa, PyArray_DATA(packed), nb, m_pad, PyArray_DATA(lut8), PyArray_DATA(out))) {
        Py_CLEAR(out);
        PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
    }
done:
    Py_XDECREF(packed);
    Py_XDECREF(lut8);
    return (PyObject *)out;
}

static PyObject *core_pq4_scan_multi(PyObject *module, PyObject *args)
{
    (void)module;
    const char *isa;
    PyObject *p_o, *l_o;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "sOOn", &isa, &p_o, &l_o, &n)) return NULL;
    PyArrayObject *packed = as_u8(p_o, 1, "packed"), *luts = packed ? as_u8(l_o, 2, "luts") : NULL, *out = NULL;
    if (!luts) goto done;
    size_t nlut = (size_t)PyArray_DIM(luts, 0), m_pad = (size_t)PyArray_DIM(luts, 1) / 16;
    size_t plen = (size_t)PyArray_DIM(packed, 0);
    if (nlut == 0 || nlut > 64 || m_pad == 0 || m_pad % 4 || m_pad > VDB_PQ4_MAX_M ||
        (size_t)PyArray_DIM(luts, 1) != m_pad * 16 || plen % (m_pad * 16) || n < 0 ||
        (size_t)n > plen / (m_pad * 16) * VDB_PQ4_BLOCK) {
        PyErr_SetString(PyExc_ValueError, "luts must be 1-64 rows of m_pad * 16 bytes, packed whole blocks of "
                                          "m_pad * 16, and n at most the vectors those blocks hold");
        goto done;
    }
    size_t per = ((size_t)n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * VDB_PQ4_BLOCK;
    npy_intp dims[2] = {(npy_intp)nlut, (npy_intp)per};
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT16))) goto done;
    const uint8_t *lp[64];
    uint16_t *op[64];
    for (size_t g = 0; g < nlut; g++) {
        lp[g] = (const uint8_t *)PyArray_DATA(luts) + g * m_pad * 16;
        op[g] = (uint16_t *)PyArray_DATA(out) + g * per;
    }
    if (vdb_pq4_scan_multi_isa(isa, PyArray_DATA(packed), (size_t)n, m_pad, lp, nlut, op)) {
        Py_CLEAR(out);
        PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
    }
done:
    Py_XDECREF(packed);
    Py_XDECREF(luts);
    return (PyObject *)out;
}

static PyObject *core_pq4_cut(PyObject *module, PyObject *args)
{
    (void)module;
    const char *isa;
    PyObject *s_o, *res = NULL;
    unsigned long smin;
    if (!PyArg_ParseTuple(args, "sOk", &isa, &s_o, &smin)) return NULL;
    PyArrayObject *sums = (PyArrayObject *)PyArray_FROMANY(s_o, NPY_UINT16, 1, 1, NPY_ARRAY_IN_ARRAY), *surv = NULL;
    if (!sums) return NULL;
    npy_intp dims[1] = {PyArray_DIM(sums, 0)};
    if (!(surv = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT32))) goto done;
    size_t ns;
    if (vdb_pq4_cut_isa(isa, PyArray_DATA(sums), (size_t)dims[0], smin > 0x10000 ? 0x10000u : (unsigned)smin,
                        PyArray_DATA(surv), &ns)) {
        PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
        goto done;
    }
    res = PySequence_GetSlice((PyObject *)surv, 0, (Py_ssize_t)ns);
done:
    Py_DECREF(sums);
    Py_XDECREF(surv);
    return res;
}

static PyObject *core_pq4_scan_cut(PyObject *module, PyObject *args)
{
    (void)module;
    const char *isa;
    PyObject *p_o, *l_o, *res = NULL;
    Py_ssize_t n;
    unsigned long smin;
    if (!PyArg_ParseTuple(args, "sOOnk", &isa, &p_o, &l_o, &n, &smin)) return NULL;
    PyArrayObject *packed = as_u8(p_o, 1, "packed"), *lut8 = packed ? as_u8(l_o, 1, "lut8") : NULL, *out = NULL,
                  *surv = NULL;
    if (!lut8) goto done;
    size_t m_pad = (size_t)PyArray_DIM(lut8, 0) / 16, plen = (size_t)PyArray_DIM(packed, 0);
    if (m_pad == 0 || m_pad % 4 || m_pad > VDB_PQ4_MAX_M || (size_t)PyArray_DIM(lut8, 0) != m_pad * 16 ||
        plen % (m_pad * 16) || n < 0 || (size_t)n > plen / (m_pad * 16) * VDB_PQ4_BLOCK) {
        PyErr_SetString(PyExc_ValueError, "lut8 must hold m_pad * 16 bytes, packed whole blocks of m_pad * 16, "
                                          "and n at most the vectors those blocks hold");
        goto done;
    }
    npy_intp dims[1] = {(npy_intp)(((size_t)n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * VDB_PQ4_BLOCK)};
    npy_intp sdims[1] = {(npy_intp)n};
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT16)) ||
        !(surv = (PyArrayObject *)PyArray_SimpleNew(1, sdims, NPY_UINT32)))
        goto done;
    size_t ns;
    if (vdb_pq4_scan_cut_isa(isa, PyArray_DATA(packed), (size_t)n, m_pad, PyArray_DATA(lut8),
                             smin > 0x10000 ? 0x10000u : (unsigned)smin, PyArray_DATA(out), PyArray_DATA(surv), &ns)) {
        PyErr_Format(PyExc_ValueError, "kernel variant '%s' is not available on this CPU or build", isa);
        goto done;
    }
    PyObject *head = PySequence_GetSlice((PyObject *)surv, 0, (Py_ssize_t)ns);
    if (head) res = Py_BuildValue("(ON)", out, head);
done:
    Py_XDECREF(packed);
    Py_XDECREF(lut8);
    Py_XDECREF(out);
    Py_XDECREF(surv);
    return res;
}

/* ---- a bare IVF index (tests, benchmarks): a capsule owning a vdb_ivf, no lock (one thread) ---- */

#define IVF_CAPSULE "vectordb._core.ivf"

static void ivf_capsule_free(PyObject *cap) { vdb_ivf_free(PyCapsule_GetPointer(cap, IVF_CAPSULE)); }

static vdb_ivf *ivf_of(PyObject *cap) { return PyCapsule_GetPointer(cap, IVF_CAPSULE); }

static PyObject *ivf_done(PyObject *module, int rc)
{
    if (rc) return raise_engine(module, rc);
    Py_RETURN_NONE;
}

static PyObject *core_ivf_new(PyObject *module, PyObject *args)
{
    const char *metric_s;
    Py_ssize_t d, n_lists;
    vdb_metric m;
    vdb_ivf *ivf;
    if (!PyArg_ParseTuple(args, "nsn", &d, &metric_s, &n_lists) || metric_from_str(metric_s, &m)) return NULL;
    if (d < 1 || n_lists < 1) return PyErr_Format(PyExc_ValueError, "need d >= 1 and n_lists >= 1");
    int rc = vdb_ivf_create((size_t)d, m, (size_t)n_lists, &ivf);
    if (rc) return raise_engine(module, rc);
    PyObject *cap = PyCapsule_New(ivf, IVF_CAPSULE, ivf_capsule_free);
    if (!cap) vdb_ivf_free(ivf);
    return cap;
}

/* x must match the index's dimension; returns a new reference or NULL. */
static PyArrayObject *ivf_vectors(vdb_ivf *ivf, PyObject *xo)
{
    PyArrayObject *x = as_matrix(xo, "vectors");
    if (x && (size_t)PyArray_DIM(x, 1) != vdb_ivf_dim(ivf)) {
        PyErr_Format(PyExc_ValueError, "vectors have dimension %zd, the index %zu", PyArray_DIM(x, 1), vdb_ivf_dim(ivf));
        Py_CLEAR(x);
    }
    return x;
}

static PyObject *core_ivf_train(PyObject *module, PyObject *args)
{
    PyObject *cap, *xo;
    unsigned long long seed;
    vdb_ivf *ivf;
    if (!PyArg_ParseTuple(args, "OOK", &cap, &xo, &seed) || !(ivf = ivf_of(cap))) return NULL;
    PyArrayObject *x = ivf_vectors(ivf, xo);
    if (!x) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = vdb_ivf_train(ivf, PyArray_DATA(x), (size_t)PyArray_DIM(x, 0), seed);
    Py_END_ALLOW_THREADS
    Py_DECREF(x);
    return ivf_done(module, rc);
}

static PyObject *core_ivf_add(PyObject *module, PyObject *args)
{
    PyObject *cap, *ro, *xo;
    vdb_ivf *ivf;
    if (!PyArg_ParseTuple(args, "OOO", &cap, &ro, &xo) || !(ivf = ivf_of(cap))) return NULL;
    PyArrayObject *x = ivf_vectors(ivf, xo), *r = NULL;
    PyObject *res = NULL;
    if (!x) return NULL;
    if (!(r = (PyArrayObject *)PyArray_FROMANY(ro, NPY_INT64, 1, 1, NPY_ARRAY_IN_ARRAY))) goto done;
    if (PyArray_DIM(r, 0) != PyArray_DIM(x, 0)) {
        PyErr_SetString(PyExc_ValueError, "one row number per vector expected");
        goto done;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = vdb_ivf_add(ivf, PyArray_DATA(r), PyArray_DATA(x), (size_t)PyArray_DIM(x, 0));
    Py_END_ALLOW_THREADS
    res = ivf_done(module, rc);
done:
    Py_DECREF(x);
    Py_XDECREF(r);
    return res;
}

static PyObject *core_ivf_remove(PyObject *module, PyObject *args)
{
    PyObject *cap;
    long long row;
    vdb_ivf *ivf;
    if (!PyArg_ParseTuple(args, "OL", &cap, &row) || !(ivf = ivf_of(cap))) return NULL;
    return ivf_done(module, vdb_ivf_remove(ivf, row));
}

/* (capsule, count, seed) -> fn(ivf, count, seed) without the GIL; `what` names the count in errors. */
static PyObject *ivf_call_count_seed(PyObject *module, PyObject *args, const char *what,
                                     int (*fn)(vdb_ivf *, size_t, uint64_t))
{
    PyObject *cap;
    Py_ssize_t count;
    unsigned long long seed;
    vdb_ivf *ivf;
    if (!PyArg_ParseTuple(args, "OnK", &cap, &count, &seed) || !(ivf = ivf_of(cap))) return NULL;
    if (count < 0) return PyErr_Format(PyExc_ValueError, "%s must be >= 0", what);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fn(ivf, (size_t)count, seed);
    Py_END_ALLOW_THREADS
    return ivf_done(module, rc);
}

static PyObject *core_ivf_set_pq4(PyObject *module, PyObject *args)
{
    return ivf_call_count_seed(module, args, "m", vdb_ivf_set_pq4);
}

static PyObject *core_ivf_retrain(PyObject *module, PyObject *args)
{
    return ivf_call_count_seed(module, args, "n_lists", vdb_ivf_retrain);
}

static PyObject *core_ivf_search(PyObject *module, PyObject *args)
{
    PyObject *cap, *qo, *res = NULL;
    Py_ssize_t k, n_probe;
    vdb_ivf *ivf;
    if (!PyArg_ParseTuple(args, "OOnn", &cap, &qo, &k, &n_probe) || !(ivf = ivf_of(cap))) return NULL;
    if (k < 1 || n_probe < 1) return PyErr_Format(PyExc_ValueError, "need k >= 1 and n_probe >= 1");
    PyArrayObject *q = ivf_vectors(ivf, qo), *dist = NULL, *rows = NULL;
    if (!q) return NULL;
    size_t nq = (size_t)PyArray_DIM(q, 0);
    if (new_search_result(nq, k, &dist, &rows)) goto done;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = vdb_ivf_search(ivf, PyArray_DATA(q), nq, (size_t)k, (size_t)n_probe, NULL, 0, PyArray_DATA(dist),
                        PyArray_DATA(rows));
    Py_END_ALLOW_THREADS
    if (rc) raise_engine(module, rc);
    else res = Py_BuildValue("(OO)", dist, rows);
done:
    Py_DECREF(q);
    Py_XDECREF(dist);
    Py_XDECREF(rows);
    return res;
}

static PyObject *core_ivf_info(PyObject *module, PyObject *cap)
{
    (void)module;
    vdb_ivf *ivf = ivf_of(cap);
    if (!ivf) return NULL;
    vdb_ivf_stats st;
    vdb_ivf_stats_get(ivf, &st);
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n}", "n_lists", (Py_ssize_t)st.n_lists, "count", (Py_ssize_t)st.n_vectors,
                         "pq4_m", (Py_ssize_t)vdb_ivf_pq4_m(ivf), "bytes", (Py_ssize_t)st.bytes_in_memory,
                         "last_reranked", (Py_ssize_t)vdb_ivf_last_reranked());
}

/* ---- metadata blobs ---- */

static int put_scalar(vdb_buf *b, PyObject *v, uint8_t tag)
{
    switch (tag) {
    case VDB_TAG_STR: {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(v, &len);
        if (!s) return -1;
        if (vdb_buf_u32(b, (uint32_t)len) || vdb_buf_append(b, s, (size_t)len)) goto nomem;
        return 0;
    }
    case VDB_TAG_INT: {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_ValueError, "metadata integer out of the 64-bit range");
            return -1;
        }
        if (x == -1 && PyErr_Occurred()) return -1;
        if (vdb_buf_u64(b, (uint64_t)x)) goto nomem;
        return 0;
    }
    case VDB_TAG_FLOAT: {
        double x = PyFloat_AsDouble(v);
        uint64_t bits;
        if (x == -1.0 && PyErr_Occurred()) return -1;
        memcpy(&bits, &x, 8);
        if (vdb_buf_u64(b, bits)) goto nomem;
        return 0;
    }
    case VDB_TAG_BOOL: {
        uint8_t x = v == Py_True;
        if (vdb_buf_append(b, &x, 1)) goto nomem;
        return 0;
    }
    }
    return -1;
nomem:
    PyErr_NoMemory();
    return -1;
}

static int scalar_tag(PyObject *v)
{
    if (PyBool_Check(v)) return VDB_TAG_BOOL;
    if (PyLong_Check(v)) return VDB_TAG_INT;
    if (PyFloat_Check(v)) return VDB_TAG_FLOAT;
    if (PyUnicode_Check(v)) return VDB_TAG_STR;
    return -1;
}

/* Encodes a metadata dict into the blob format of vdb_meta.h (None values become NULL entries). */
static int encode_meta(PyObject *dict, vdb_buf *b)
{
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    if (!PyDict_Check(dict)) {
        PyErr_SetString(PyExc_TypeError, "metadata must be a dict or None");
        return -1;
    }
    if (vdb_buf_u32(b, (uint32_t)PyDict_Size(dict))) goto nomem;
    while (PyDict_Next(dict, &pos, &key, &val)) {
        Py_ssize_t klen;
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &klen) : NULL;
        if (!k) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "metadata keys must be str");
            return -1;
        }
        if (vdb_buf_u32(b, (uint32_t)klen) || vdb_buf_append(b, k, (size_t)klen)) goto nomem;
        uint8_t tag;
        if (val == Py_None) {
            tag = VDB_TAG_NULL;
            if (vdb_buf_append(b, &tag, 1)) goto nomem;
            continue;
        }
        int t = scalar_tag(val);
        if (t > 0) {
            tag = (uint8_t)t;
            if (vdb_buf_append(b, &tag, 1) || put_scalar(b, val, tag)) goto fail_or_nomem;
            continue;
        }
        if (!PyList_Check(val) || PyList_GET_SIZE(val) == 0 || (t = scalar_tag(PyList_GET_ITEM(val, 0))) < 0) {
            PyErr_Format(PyExc_TypeError, "metadata value of '%s' must be str, int, float, bool or a non-empty list of one of those", k);
            return -1;
        }
        tag = (uint8_t)(VDB_TAG_LIST | t);
        Py_ssize_t n = PyList_GET_SIZE(val);
        if (vdb_buf_append(b, &tag, 1) || vdb_buf_u32(b, (uint32_t)n)) goto nomem;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyList_GET_ITEM(val, i);
            if (scalar_tag(item) != t) {
                PyErr_Format(PyExc_TypeError, "metadata list '%s' mixes element types", k);
                return -1;
            }
            if (put_scalar(b, item, (uint8_t)t)) return -1;
        }
    }
    return 0;
fail_or_nomem:
    if (!PyErr_Occurred()) PyErr_NoMemory();
    return -1;
nomem:
    PyErr_NoMemory();
    return -1;
}

static PyObject *decode_scalar(vdb_reader *r, uint8_t tag)
{
    const uint8_t *p;
    uint32_t len;
    uint64_t u;
    double f;
    uint8_t byte;
    switch (tag) {
    case VDB_TAG_STR:
        if (vdb_take_u32(r, &len) || vdb_take(r, len, &p)) break;
        return PyUnicode_DecodeUTF8((const char *)p, len, "replace");
    case VDB_TAG_INT:
        if (vdb_take_u64(r, &u)) break;
        return PyLong_FromLongLong((long long)u);
    case VDB_TAG_FLOAT:
        if (vdb_take_u64(r, &u)) break;
        memcpy(&f, &u, 8);
        return PyFloat_FromDouble(f);
    case VDB_TAG_BOOL:
        if (vdb_take_u8(r, &byte)) break;
        return PyBool_FromLong(byte);
    }
    PyErr_SetString(PyExc_RuntimeError, "malformed metadata blob");
    return NULL;
}

/* Decodes a stored (already validated) blob into a dict. */
static PyObject *decode_meta(const uint8_t *blob, size_t len)
{
    vdb_reader r = {blob, len};
    uint32_t n, klen, count;
    const uint8_t *k;
    uint8_t tag;
    PyObject *d = PyDict_New();
    if (!d || vdb_take_u32(&r, &n)) goto bad;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *v;
        if (vdb_take_u32(&r, &klen) || vdb_take(&r, klen, &k) || vdb_take_u8(&r, &tag)) goto bad;
        if (tag & VDB_TAG_LIST) {
            if (vdb_take_u32(&r, &count) || !(v = PyList_New(count))) goto bad;
            for (uint32_t j = 0; j < count; j++) {
                PyObject *item = decode_scalar(&r, tag & 0x0F);
                if (!item) {
                    Py_DECREF(v);
                    goto bad;
                }
                PyList_SET_ITEM(v, j, item);
            }
        } else if (!(v = decode_scalar(&r, tag))) {
            goto bad;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)k, klen, "replace");
        int rc = key ? PyDict_SetItem(d, key, v) : -1;
        Py_XDECREF(key);
        Py_DECREF(v);
        if (rc) goto bad;
    }
    return d;
bad:
    Py_XDECREF(d);
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "malformed metadata blob");
    return NULL;
}

/* ---- Filter type ---- */

typedef struct {
    PyObject_HEAD
    vdb_filter *filter;
    PyObject *regexes; /* list of compiled patterns (objects with .search), or NULL */
} FilterObject;

/* Matcher for $regex nodes: called by the engine (GIL released, collection read-locked). */
static int filter_regex_match(void *ctx, uint32_t index, size_t n, const char *const *docs, const size_t *lens,
                              uint8_t *match)
{
    FilterObject *self = ctx;
    int rc = VDB_OK;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *pat = PyList_GetItem(self->regexes, (Py_ssize_t)index);
    for (size_t i = 0; pat && i < n; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(docs[i], (Py_ssize_t)lens[i], "replace");
        PyObject *m = s ? PyObject_CallMethod(pat, "search", "O", s) : NULL;
        Py_XDECREF(s);
        if (!m) {
            rc = vdb_set_error(VDB_EINVAL, "regular expression %u failed", index);
            PyErr_Clear();
            break;
        }
        match[i] = m != Py_None;
        Py_DECREF(m);
    }
    if (!pat) {
        PyErr_Clear();
        rc = vdb_set_error(VDB_EINVAL, "regular expression %u missing", index);
    }
    PyGILState_Release(g);
    return rc;
}

static int Filter_init(FilterObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"program", "regexes", NULL};
    Py_buffer prog;
    PyObject *regexes = NULL;
    if (self->filter) {
        /* Re-initializing would free the program under a query of another thread. */
        PyErr_SetString(PyExc_RuntimeError, "Filter is already initialized: build a new Filter instead");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|O", kwlist, &prog, &regexes)) return -1;
    vdb_filter *f = NULL;
    int rc = vdb_filter_compile(prog.buf, (size_t)prog.len, &f);
    PyBuffer_Release(&prog);
    if (rc) {
        PyErr_Format(PyExc_ValueError, "invalid filter program: %s", vdb_last_error());
        return -1;
    }
    size_t n_regex = vdb_filter_regex_count(f);
    if (n_regex) {
        if (!regexes || !PyList_Check(regexes) || (size_t)PyList_GET_SIZE(regexes) != n_regex) {
            vdb_filter_free(f);
            PyErr_Format(PyExc_ValueError, "filter needs a list of %zu compiled regular expressions", n_regex);
            return -1;
        }
        Py_XSETREF(self->regexes, Py_NewRef(regexes));
        vdb_filter_set_regex(f, filter_regex_match, self);
    }
    self->filter = f;
    return 0;
}

static void Filter_dealloc(FilterObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    vdb_filter_free(self->filter);
    Py_XDECREF(self->regexes);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot filter_slots[] = {
    {Py_tp_init, Filter_init},
    {Py_tp_dealloc, Filter_dealloc},
    {Py_tp_doc, "Filter(program: bytes, regexes=None): a compiled where / where_document filter."},
    {0, NULL},
};
static PyType_Spec filter_spec = {"vectordb._core.Filter", sizeof(FilterObject), 0, Py_TPFLAGS_DEFAULT, filter_slots};

/* ---- Collection type ---- */

typedef struct {
    PyObject_HEAD
    vdb_collection *col;
    pthread_rwlock_t use; /* shared by calls, exclusive for close: no call sees a freed collection */
    PyObject *module;
} CollectionObject;

static int Collection_init(CollectionObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", "metric", "dim", "durable", "use_ivf", "n_clusters", "n_probe", "quantization", NULL};
    PyObject *path_o = Py_None;
    const char *metric_s = "l2", *quant_s = NULL;
    long long dim = 0, n_clusters = 0, n_probe = 0;
    int durable = 1, use_ivf = 0, quant = VDB_QUANT_NONE;
    vdb_metric m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OsLppLLz", kwlist, &path_o, &metric_s, &dim, &durable, &use_ivf,
                                     &n_clusters, &n_probe, &quant_s))
        return -1;
    if (metric_from_str(metric_s, &m)) return -1;
    if (quant_s && strcmp(quant_s, "sq8") == 0) {
        quant = VDB_QUANT_SQ8;
    } else if (quant_s && strcmp(quant_s, "pq4") == 0) {
        quant = VDB_QUANT_PQ4;
    } else if (quant_s) {
        PyErr_Format(PyExc_ValueError, "unknown quantization '%s': expected None, 'sq8' or 'pq4'", quant_s);
        return -1;
    }
    if (self->col) {
        PyErr_SetString(PyExc_RuntimeError, "collection already open");
        return -1;
    }
    PyObject *path_b = NULL;
    if (path_o != Py_None && !PyUnicode_FSConverter(path_o, &path_b)) return -1;
    vdb_collection_config cfg = {m, dim, durable, use_ivf, n_clusters, n_probe, quant};
    const char *path = path_b ? PyBytes_AS_STRING(path_b) : NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = vdb_collection_open(path, &cfg, &self->col);
    Py_END_ALLOW_THREADS
    Py_XDECREF(path_b);
    if (rc) {
        raise_engine(self->module, rc);
        return -1;
    }
    return 0;
}

static PyObject *Collection_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    CollectionObject *self = (CollectionObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    pthread_rwlock_init(&self->use, NULL);
    self->module = PyType_GetModule(type);
    Py_XINCREF(self->module);
    return (PyObject *)self;
}

static void Collection_dealloc(CollectionObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    vdb_collection *col = self->col;
    self->col = NULL;
    if (col) {
        /* Closing may checkpoint (compaction, a snapshot, fsyncs): other threads run meanwhile. */
        Py_BEGIN_ALLOW_THREADS
        vdb_collection_close(col);
        Py_END_ALLOW_THREADS
    }
    pthread_rwlock_destroy(&self->use);
    Py_XDECREF(self->module);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Every call: GIL released, handle use-lock shared; returns the engine code, or 1 when closed. */
#define WITH_COLLECTION(self, rc, call)                   \
    do {                                                  \
        Py_BEGIN_ALLOW_THREADS                            \
        pthread_rwlock_rdlock(&(self)->use);              \
        rc = (self)->col ? (call) : 1;                    \
        pthread_rwlock_unlock(&(self)->use);              \
        Py_END_ALLOW_THREADS                              \
    } while (0)

static PyObject *closed_error(void)
{
    PyErr_SetString(PyExc_RuntimeError, "collection is closed");
    return NULL;
}

static PyObject *engine_result(CollectionObject *self, int rc)
{
    if (rc == 1) return closed_error();
    return raise_engine(self->module, rc);
}

/* Borrowed UTF-8 pointers of a list of str ids (valid while the list lives). */
static int collect_strs(PyObject *list, const char ***ptrs, uint32_t **lens, size_t *n, int allow_none, const char *what)
{
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list", what);
        return -1;
    }
    *n = (size_t)PyList_GET_SIZE(list);
    *ptrs = calloc(*n + 1, sizeof **ptrs);
    *lens = calloc(*n + 1, sizeof **lens);
    if (!*ptrs || !*lens) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < *n; i++) {
        PyObject *s = PyList_GET_ITEM(list, i);
        if (s == Py_None && allow_none) continue;
        Py_ssize_t len;
        if (!PyUnicode_Check(s)) {
            PyErr_Format(PyExc_TypeError, "%s[%zu] must be str", what, i);
            return -1;
        }
        if (!((*ptrs)[i] = PyUnicode_AsUTF8AndSize(s, &len))) return -1;
        if ((size_t)len >= UINT32_MAX) {
            PyErr_Format(PyExc_ValueError, "%s[%zu] is too long", what, i);
            return -1;
        }
        (*lens)[i] = (uint32_t)len;
    }
    return 0;
}

static PyObject *Collection_write(CollectionObject *self, PyObject *args)
{
    int op;
    PyObject *ids_o, *vec_o, *metas_o, *docs_o, *res = NULL;
    PyArrayObject *vec = NULL;
    const char **ids = NULL, **docs = NULL;
    uint32_t *id_lens = NULL, *doc_lens = NULL, *meta_lens = NULL;
    const uint8_t **metas = NULL;
    vdb_buf blobs = {0};
    size_t *meta_offs = NULL, n = 0, nd = 0;
    if (!PyArg_ParseTuple(args, "iOOOO", &op, &ids_o, &vec_o, &metas_o, &docs_o)) return NULL;
    if (collect_strs(ids_o, &ids, &id_lens, &n, 0, "ids")) goto done;
    vdb_batch b = {n, 0, ids, id_lens, NULL, NULL, NULL, NULL, NULL};
    if (vec_o != Py_None) {
        if (!(vec = as_matrix(vec_o, "embeddings"))) goto done;
        if ((size_t)PyArray_DIM(vec, 0) != n) {
            PyErr_Format(PyExc_ValueError, "%zu embeddings for %zu ids", (size_t)PyArray_DIM(vec, 0), n);
            goto done;
        }
        b.vectors = PyArray_DATA(vec);
        b.dim = PyArray_DIM(vec, 1);
    }
    if (metas_o != Py_None) {
        if (!PyList_Check(metas_o) || (size_t)PyList_GET_SIZE(metas_o) != n) {
            PyErr_Format(PyExc_ValueError, "metadatas must be a list of %zu entries", n);
            goto done;
        }
        metas = calloc(n + 1, sizeof *metas);
        meta_lens = calloc(n + 1, sizeof *meta_lens);
        meta_offs = calloc(n + 1, sizeof *meta_offs);
        if (!metas || !meta_lens || !meta_offs) {
            PyErr_NoMemory();
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            PyObject *m = PyList_GET_ITEM(metas_o, i);
            meta_offs[i] = SIZE_MAX;
            if (m == Py_None) continue;
            meta_offs[i] = blobs.len;
            if (encode_meta(m, &blobs)) goto done;
            meta_lens[i] = (uint32_t)(blobs.len - meta_offs[i]);
        }
        for (size_t i = 0; i < n; i++) metas[i] = meta_offs[i] == SIZE_MAX ? NULL : blobs.data + meta_offs[i];
        b.metas = metas;
        b.meta_lens = meta_lens;
    }
    if (docs_o != Py_None) {
        if (collect_strs(docs_o, &docs, &doc_lens, &nd, 1, "documents")) goto done;
        if (nd != n) {
            PyErr_Format(PyExc_ValueError, "%zu documents for %zu ids", nd, n);
            goto done;
        }
        b.docs = docs;
        b.doc_lens = doc_lens;
    }
    PyObject *status = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!status) goto done;
    int rc;
    uint8_t *st = (uint8_t *)PyBytes_AS_STRING(status);
    WITH_COLLECTION(self, rc, vdb_collection_write(self->col, op, &b, st));
    if (rc) {
        Py_DECREF(status);
        engine_result(self, rc);
        goto done;
    }
    res = status;
done:
    Py_XDECREF(vec);
    free(ids);
    free(id_lens);
    free(docs);
    free(doc_lens);
    free(metas);
    free(meta_lens);
    free(meta_offs);
    vdb_buf_free(&blobs);
    return res;
}

static int get_filter(CollectionObject *self, PyObject *o, const vdb_filter **f)
{
    core_state *st = get_state(self->module);
    *f = NULL;
    if (o == Py_None) return 0;
    if (!PyObject_TypeCheck(o, st->filter_type)) {
        PyErr_SetString(PyExc_TypeError, "filter must be a vectordb._core.Filter or None");
        return -1;
    }
    *f = ((FilterObject *)o)->filter;
    return 0;
}

/* (ids, embeddings | None, metadatas | None, documents | None, distances | None, counts) */
static PyObject *convert_result(vdb_result *r, unsigned include)
{
    PyObject *ids = PyList_New((Py_ssize_t)r->n), *metas = NULL, *docs = NULL, *counts = NULL;
    PyArrayObject *vec = NULL, *dist = NULL;
    if (!ids) goto fail;
    if ((include & VDB_INC_METAS) && !(metas = PyList_New((Py_ssize_t)r->n))) goto fail;
    if ((include & VDB_INC_DOCS) && !(docs = PyList_New((Py_ssize_t)r->n))) goto fail;
    for (size_t i = 0; i < r->n; i++) {
        PyObject *s = PyUnicode_DecodeUTF8((const char *)r->arena + r->id_off[i], r->id_len[i], "replace");
        if (!s) goto fail;
        PyList_SET_ITEM(ids, i, s);
        if (metas) {
            PyObject *m = r->meta_len[i] == UINT32_MAX ? Py_NewRef(Py_None) : decode_meta(r->arena + r->meta_off[i], r->meta_len[i]);
            if (!m) goto fail;
            PyList_SET_ITEM(metas, i, m);
        }
        if (docs) {
            PyObject *dd = r->doc_len[i] == UINT32_MAX
                               ? Py_NewRef(Py_None)
                               : PyUnicode_DecodeUTF8((const char *)r->arena + r->doc_off[i], r->doc_len[i], "replace");
            if (!dd) goto fail;
            PyList_SET_ITEM(docs, i, dd);
        }
    }
    if (include & VDB_INC_VECTORS) {
        npy_intp dims[2] = {(npy_intp)r->n, (npy_intp)(r->dim > 0 ? r->dim : 0)};
        if (!(vec = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32))) goto fail;
        if (r->n && r->dim > 0) memcpy(PyArray_DATA(vec), r->vectors, r->n * (size_t)r->dim * sizeof(float));
    }
    if (include & VDB_INC_DISTANCES) {
        npy_intp dims[1] = {(npy_intp)r->n};
        if (!(dist = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32))) goto fail;
        if (r->n) memcpy(PyArray_DATA(dist), r->distances, r->n * sizeof(float));
    }
    if (!(counts = PyList_New((Py_ssize_t)r->nq))) goto fail;
    for (size_t q = 0; q < r->nq; q++) {
        PyObject *c = PyLong_FromSize_t(r->counts[q]);
        if (!c) goto fail;
        PyList_SET_ITEM(counts, q, c);
    }
    return Py_BuildValue("(NNNNNN)", ids, vec ? (PyObject *)vec : Py_NewRef(Py_None), metas ? metas : Py_NewRef(Py_None),
                         docs ? docs : Py_NewRef(Py_None), dist ? (PyObject *)dist : Py_NewRef(Py_None), counts);
fail:
    Py_XDECREF(ids);
    Py_XDECREF(metas);
    Py_XDECREF(docs);
    Py_XDECREF(vec);
    Py_XDECREF(dist);
    Py_XDECREF(counts);
    return NULL;
}

static PyObject *Collection_get(CollectionObject *self, PyObject *args)
{
    PyObject *ids_o, *filter_o, *res = NULL;
    long long offset, limit;
    unsigned include;
    const char **ids = NULL;
    uint32_t *lens = NULL;
    size_t n = 0;
    vdb_result *r = NULL;
    const vdb_filter *f;
    if (!PyArg_ParseTuple(args, "OOLLI", &ids_o, &filter_o, &offset, &limit, &include)) return NULL;
    if (get_filter(self, filter_o, &f)) return NULL;
    if (ids_o != Py_None && collect_strs(ids_o, &ids, &lens, &n, 0, "ids")) goto done;
    vdb_get_request req = {ids, lens, n, f, offset, limit, include};
    int rc;
    WITH_COLLECTION(self, rc, vdb_collection_get(self->col, &req, &r));
    if (rc) {
        engine_result(self, rc);
        goto done;
    }
    res = convert_result(r, include & ~VDB_INC_DISTANCES);
done:
    vdb_result_free(r);
    free(ids);
    free(lens);
    return res;
}

static PyObject *Collection_query(CollectionObject *self, PyObject *args)
{
    PyObject *q_o, *filter_o, *ids_o = Py_None, *res = NULL;
    Py_ssize_t k;
    unsigned include;
    long long n_probe;
    const vdb_filter *f;
    vdb_result *r = NULL;
    const char **ids = NULL;
    uint32_t *lens = NULL;
    size_t n_ids = 0;
    if (!PyArg_ParseTuple(args, "OnOIL|O", &q_o, &k, &filter_o, &include, &n_probe, &ids_o)) return NULL;
    if (k < 0) return PyErr_Format(PyExc_ValueError, "n_results must be positive");
    if (get_filter(self, filter_o, &f)) return NULL;
    PyArrayObject *q = NULL;
    if (ids_o != Py_None && collect_strs(ids_o, &ids, &lens, &n_ids, 0, "ids")) goto done;
    if (!(q = as_matrix(q_o, "query_embeddings"))) goto done;
    vdb_query_request req = {PyArray_DATA(q), (size_t)PyArray_DIM(q, 0), PyArray_DIM(q, 1), (size_t)k, f, include, n_probe,
                             ids, lens, n_ids};
    int rc;
    WITH_COLLECTION(self, rc, vdb_collection_query(self->col, &req, &r));
    if (rc)
        engine_result(self, rc);
    else
        res = convert_result(r, include);
    vdb_result_free(r);
done:
    Py_XDECREF(q);
    free(ids);
    free(lens);
    return res;
}

static PyObject *Collection_count(CollectionObject *self, PyObject *args)
{
    PyObject *filter_o = Py_None;
    const vdb_filter *f;
    int64_t n = 0;
    int rc;
    if (!PyArg_ParseTuple(args, "|O", &filter_o) || get_filter(self, filter_o, &f)) return NULL;
    WITH_COLLECTION(self, rc, vdb_collection_count(self->col, f, &n));
    if (rc) return engine_result(self, rc);
    return PyLong_FromLongLong(n);
}

static PyObject *Collection_delete_where(CollectionObject *self, PyObject *args)
{
    PyObject *filter_o, *ids_o = Py_None, *res = NULL;
    const vdb_filter *f;
    const char **ids = NULL;
    uint32_t *lens = NULL;
    size_t n_ids = 0;
    int64_t n = 0;
    int rc;
    if (!PyArg_ParseTuple(args, "O|O", &filter_o, &ids_o) || get_filter(self, filter_o, &f)) return NULL;
    if (ids_o != Py_None && collect_strs(ids_o, &ids, &lens, &n_ids, 0, "ids")) goto done;
    WITH_COLLECTION(self, rc, vdb_collection_delete_where(self->col, f, ids, lens, n_ids, &n));
    res = rc ? engine_result(self, rc) : PyLong_FromLongLong(n);
done:
    free(ids);
    free(lens);
    return res;
}

static PyObject *Collection_checkpoint(CollectionObject *self, PyObject *unused)
{
    (void)unused;
    int rc;
    WITH_COLLECTION(self, rc, vdb_collection_checkpoint(self->col));
    if (rc) return engine_result(self, rc);
    Py_RETURN_NONE;
}

static PyObject *Collection_verify(CollectionObject *self, PyObject *unused)
{
    (void)unused;
    int rc;
    WITH_COLLECTION(self, rc, vdb_collection_verify(self->col));
    if (rc) return engine_result(self, rc);
    Py_RETURN_NONE;
}

static PyObject *Collection_stats(CollectionObject *self, PyObject *unused)
{
    (void)unused;
    vdb_collection_stats s;
    int rc;
    static const char *metrics[] = {"l2", "ip", "cosine"};
    WITH_COLLECTION(self, rc, vdb_collection_stats_get(self->col, &s));
    if (rc) return engine_result(self, rc);
    return Py_BuildValue("{sLsLsssLsLsLsLsLsssOsLsLsLsLsdsLsisLsz}", "count", (long long)s.count, "dimension",
                         (long long)s.dim, "metric", metrics[s.metric], "rows_total", (long long)s.rows_total,
                         "wal_bytes", (long long)s.wal_bytes, "generation", (long long)s.generation, "bytes_on_disk",
                         (long long)s.bytes_on_disk, "bytes_in_memory", (long long)s.bytes_in_memory, "index",
                         s.ivf_trained ? "ivf" : "flat", "trained", s.ivf_trained ? Py_True : Py_False, "n_clusters",
                         (long long)s.n_lists, "n_probe", (long long)s.n_probe, "list_min", (long long)s.list_min,
                         "list_max", (long long)s.list_max, "list_mean", s.list_mean, "added_since_training",
                         (long long)s.added_since_training, "batch_depth", s.batch_depth, "count_at_training",
                         (long long)s.count_at_training, "quantization",
                         s.quantization == VDB_QUANT_SQ8 ? "sq8" : s.quantization == VDB_QUANT_PQ4 ? "pq4" : NULL);
}

static PyObject *Collection_batch(CollectionObject *self, PyObject *arg)
{
    /* BATCH_* (True / False: begin / end a bulk batch); vdb_collection_batch checks the mode */
    long mode = PyLong_AsLong(arg);
    int rc;
    if (mode == -1 && PyErr_Occurred()) return NULL;
    if (mode != (int)mode) return PyErr_Format(PyExc_ValueError, "batch mode out of range: %ld", mode);
    WITH_COLLECTION(self, rc, vdb_collection_batch(self->col, (int)mode));
    if (rc) return engine_result(self, rc);
    Py_RETURN_NONE;
}

static PyObject *Collection_take_warning(CollectionObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    char buf[512];
    /* The calling thread's own (see vdb_collection.h): no collection needed, so closed or not. */
    if (!vdb_collection_take_warning(buf, sizeof buf)) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(buf, (Py_ssize_t)strlen(buf), "replace");
}

static PyObject *Collection_rebuild(CollectionObject *self, PyObject *unused)
{
    (void)unused;
    int rc;
    WITH_COLLECTION(self, rc, vdb_collection_rebuild(self->col));
    if (rc) return engine_result(self, rc);
    Py_RETURN_NONE;
}

static PyObject *Collection_set_n_probe(CollectionObject *self, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    int rc;
    WITH_COLLECTION(self, rc, vdb_collection_set_n_probe(self->col, (int64_t)n));
    if (rc) return engine_result(self, rc);
    Py_RETURN_NONE;
}

static PyObject *Collection_close(CollectionObject *self, PyObject *unused)
{
    (void)unused;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_rwlock_wrlock(&self->use);
    rc = vdb_collection_close(self->col);
    self->col = NULL;
    pthread_rwlock_unlock(&self->use);
    Py_END_ALLOW_THREADS
    if (rc) return raise_engine(self->module, rc);
    Py_RETURN_NONE;
}

static PyObject *Collection_closed(CollectionObject *self, void *unused)
{
    (void)unused;
    return PyBool_FromLong(self->col == NULL);
}

static PyMethodDef collection_methods[] = {
    {"write", (PyCFunction)Collection_write, METH_VARARGS, "write(op, ids, embeddings, metadatas, documents) -> bytes status"},
    {"get", (PyCFunction)Collection_get, METH_VARARGS, "get(ids, filter, offset, limit, include) -> tuple"},
    {"query", (PyCFunction)Collection_query, METH_VARARGS, "query(queries, k, filter, include, n_probe, ids=None) -> tuple"},
    {"count", (PyCFunction)Collection_count, METH_VARARGS, "count(filter=None) -> int"},
    {"delete_where", (PyCFunction)Collection_delete_where, METH_VARARGS,
     "delete_where(filter, ids=None) -> int: deletes the rows (of ids, when given) the filter matches, atomically"},
    {"checkpoint", (PyCFunction)Collection_checkpoint, METH_NOARGS, "checkpoint()"},
    {"verify", (PyCFunction)Collection_verify, METH_NOARGS,
     "verify(): checks every vector chunk not checked yet (CorruptionError naming the file)"},
    {"stats", (PyCFunction)Collection_stats, METH_NOARGS, "stats() -> dict"},
    {"batch", (PyCFunction)Collection_batch, METH_O, "batch(mode: int): 1 / 0 (True / False) begin / end a bulk batch, 2 / 3 a logged one"},
    {"rebuild", (PyCFunction)Collection_rebuild, METH_NOARGS, "rebuild(): (re)train the IVF index now"},
    {"set_n_probe", (PyCFunction)Collection_set_n_probe, METH_O,
     "set_n_probe(n_probe): lists a query scans when it gives no n_probe (0: the default rule)"},
    {"take_warning", (PyCFunction)Collection_take_warning, METH_NOARGS,
     "take_warning() -> str | None: a failure of maintenance after this thread's last write (training, checkpoint)"},
    {"close", (PyCFunction)Collection_close, METH_NOARGS, "close()"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef collection_getset[] = {
    {"closed", (getter)Collection_closed, NULL, "True after close()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot collection_slots[] = {
    {Py_tp_new, Collection_new},
    {Py_tp_init, Collection_init},
    {Py_tp_dealloc, Collection_dealloc},
    {Py_tp_methods, collection_methods},
    {Py_tp_getset, collection_getset},
    {Py_tp_doc, "Collection(path=None, metric='l2', dim=0, durable=True): the engine's handle on one collection."},
    {0, NULL},
};
static PyType_Spec collection_spec = {"vectordb._core.Collection", sizeof(CollectionObject), 0, Py_TPFLAGS_DEFAULT,
                                      collection_slots};

/* ---- module ---- */

static PyObject *core_set_exceptions(PyObject *module, PyObject *args)
{
    core_state *st = get_state(module);
    PyObject *e[6];
    if (!PyArg_ParseTuple(args, "OOOOOO", &e[0], &e[1], &e[2], &e[3], &e[4], &e[5])) return NULL;
    Py_XSETREF(st->error, Py_NewRef(e[0]));
    Py_XSETREF(st->corrupt_error, Py_NewRef(e[1]));
    Py_XSETREF(st->locked_error, Py_NewRef(e[2]));
    Py_XSETREF(st->dim_error, Py_NewRef(e[3]));
    Py_XSETREF(st->arg_error, Py_NewRef(e[4]));
    Py_XSETREF(st->readonly_error, Py_NewRef(e[5]));
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"capabilities", core_capabilities, METH_NOARGS, "capabilities() -> dict of detected/enabled CPU features"},
    {"set_cpu_features", core_set_cpu_features, METH_O, "set_cpu_features(names) -> dict: enable exactly these"},
    {"set_num_threads", core_set_num_threads, METH_O, "set_num_threads(n) -> int"},
    {"distance_batch", core_distance_batch, METH_VARARGS, "distance_batch(isa, metric, q, rows) -> ndarray"},
    {"distance_block", core_distance_block, METH_VARARGS, "distance_block(isa, metric, queries, rows) -> ndarray"},
    {"distance_block_one", core_distance_block_one, METH_VARARGS,
     "distance_block_one(isa, metric, query, rows) -> ndarray: one query's distance_block row"},
    {"nearest_centroids", core_nearest_centroids, METH_VARARGS,
     "nearest_centroids(isa, points, centroids, bias) -> (index, value): argmin_j bias[j] - 2 x.c_j"},
    {"sq8_probe", core_sq8_probe, METH_VARARGS,
     "sq8_probe(isa, metric, train, x, queries) -> (lo, step, codes, err, scan, lower_bound, ready)"},
    {"last_reranked", core_last_reranked, METH_NOARGS,
     "last_reranked() -> int: rows the calling thread's last query of a quantized collection re-ranked (sq8 or pq4)"},
    {"flat_search", core_flat_search, METH_VARARGS, "flat_search(metric, data, queries, k, allow=None) -> (dist, rows)"},
    {"exact_search_isa", core_exact_search_isa, METH_VARARGS,
     "exact_search_isa(isa, metric, data, queries, k, allow=None) -> (dist, rows): one variant of the exact batch kernel"},
    {"pq4_train", core_pq4_train, METH_VARARGS, "pq4_train(x, m, seed) -> (centroids, eps_hi, eps_lo)"},
    {"pq4_encode", core_pq4_encode, METH_VARARGS, "pq4_encode(centroids, m, x, isa=None) -> (codes, err); isa: serial, avx2, avx512"},
    {"pq4_lut", core_pq4_lut, METH_VARARGS, "pq4_lut(centroids, m, q, isa=None) -> float table; isa: serial, avx2, avx512"},
    {"pq4_lut_quantize", core_pq4_lut_quantize, METH_VARARGS, "pq4_lut_quantize(lut, isa=None) -> (lut8, step, bias); isa: serial, avx2, avx512"},
    {"pq4_pack", core_pq4_pack, METH_O, "pq4_pack(codes) -> packed blocks"},
    {"pq4_unpack", core_pq4_unpack, METH_VARARGS, "pq4_unpack(packed, m, n) -> codes"},
    {"pq4_scan", core_pq4_scan, METH_VARARGS, "pq4_scan(isa, packed, lut8) -> uint16 sums"},
    {"pq4_scan_multi", core_pq4_scan_multi, METH_VARARGS,
     "pq4_scan_multi(isa, packed, luts, n) -> (len(luts), ceil(n / 32) * 32) uint16 sums"},
    {"pq4_cut", core_pq4_cut, METH_VARARGS, "pq4_cut(isa, sums, smin) -> uint32 positions of sums >= smin"},
    {"pq4_scan_cut", core_pq4_scan_cut, METH_VARARGS,
     "pq4_scan_cut(isa, packed, lut8, n, smin) -> (uint16 sums, uint32 positions < n with sum >= smin)"},
    {"ivf_new", core_ivf_new, METH_VARARGS, "ivf_new(d, metric, n_lists) -> handle (tests, benchmarks; one thread)"},
    {"ivf_train", core_ivf_train, METH_VARARGS, "ivf_train(h, x, seed)"},
    {"ivf_add", core_ivf_add, METH_VARARGS, "ivf_add(h, rows, x)"},
    {"ivf_remove", core_ivf_remove, METH_VARARGS, "ivf_remove(h, row)"},
    {"ivf_set_pq4", core_ivf_set_pq4, METH_VARARGS, "ivf_set_pq4(h, m, seed): 4-bit PQ codes (m = 0 drops them)"},
    {"ivf_retrain", core_ivf_retrain, METH_VARARGS, "ivf_retrain(h, n_lists, seed)"},
    {"ivf_search", core_ivf_search, METH_VARARGS, "ivf_search(h, queries, k, n_probe) -> (dist, rows)"},
    {"ivf_info", core_ivf_info, METH_O, "ivf_info(h) -> dict"},
    {"kmeans_train", core_kmeans_train, METH_VARARGS,
     "kmeans_train(metric, x, k, seed, n_iter=0, seed_points_per_centroid=0) -> (centroids, stats)"},
    {"_set_exceptions", core_set_exceptions, METH_VARARGS, "internal: install the exception classes"},
    {NULL, NULL, 0, NULL},
};

/* The numbers Python passes to the engine (write ops, include bits, filter program kinds and value
 * tags), exported once from the C headers so that vectordb/ never copies them. */
#define CORE_CONSTANT(prefix, name) {#name, prefix##name}
static const struct {
    const char *name;
    long value;
} core_constants[] = {
    CORE_CONSTANT(VDB_, OP_ADD), CORE_CONSTANT(VDB_, OP_UPSERT), CORE_CONSTANT(VDB_, OP_UPDATE),
    CORE_CONSTANT(VDB_, OP_DELETE), CORE_CONSTANT(VDB_, BATCH_END), CORE_CONSTANT(VDB_, BATCH_BEGIN),
    CORE_CONSTANT(VDB_, BATCH_BEGIN_LOGGED), CORE_CONSTANT(VDB_, BATCH_END_LOGGED),
    CORE_CONSTANT(VDB_, INC_VECTORS), CORE_CONSTANT(VDB_, INC_METAS),
    CORE_CONSTANT(VDB_, INC_DOCS), CORE_CONSTANT(VDB_, INC_DISTANCES), CORE_CONSTANT(VDB_, FILTER_VERSION),
    CORE_CONSTANT(VDB_, FILTER_MAX_DEPTH), CORE_CONSTANT(VDB_, FK_AND), CORE_CONSTANT(VDB_, FK_OR),
    CORE_CONSTANT(VDB_, FK_NOT), CORE_CONSTANT(VDB_, FK_EQ), CORE_CONSTANT(VDB_, FK_LT), CORE_CONSTANT(VDB_, FK_LTE),
    CORE_CONSTANT(VDB_, FK_GT), CORE_CONSTANT(VDB_, FK_GTE), CORE_CONSTANT(VDB_, FK_IN),
    CORE_CONSTANT(VDB_, FK_CONTAINS), CORE_CONSTANT(VDB_, FK_DOC_CONTAINS), CORE_CONSTANT(VDB_, FK_DOC_REGEX),
    CORE_CONSTANT(VDB_, TAG_STR), CORE_CONSTANT(VDB_, TAG_INT), CORE_CONSTANT(VDB_, TAG_FLOAT),
    CORE_CONSTANT(VDB_, TAG_BOOL),
};
#undef CORE_CONSTANT

static int core_exec(PyObject *module)
{
    core_state *st = get_state(module);
    if (_import_array() < 0) return -1;
    for (size_t i = 0; i < sizeof core_constants / sizeof core_constants[0]; i++)
        if (PyModule_AddIntConstant(module, core_constants[i].name, core_constants[i].value)) return -1;
    st->collection_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &collection_spec, NULL);
    st->filter_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &filter_spec, NULL);
    if (!st->collection_type || !st->filter_type) return -1;
    if (PyModule_AddType(module, st->collection_type) || PyModule_AddType(module, st->filter_type)) return -1;
    if (PyModule_AddIntConstant(module, "MAX_DIMENSION", VDB_MAX_DIM)) return -1;
    return 0;
}

static int core_traverse(PyObject *module, visitproc visit, void *arg)
{
    core_state *st = get_state(module);
    Py_VISIT(st->error);
    Py_VISIT(st->corrupt_error);
    Py_VISIT(st->locked_error);
    Py_VISIT(st->dim_error);
    Py_VISIT(st->arg_error);
    Py_VISIT(st->readonly_error);
    Py_VISIT(st->collection_type);
    Py_VISIT(st->filter_type);
    return 0;
}

static int core_clear(PyObject *module)
{
    core_state *st = get_state(module);
    Py_CLEAR(st->error);
    Py_CLEAR(st->corrupt_error);
    Py_CLEAR(st->locked_error);
    Py_CLEAR(st->dim_error);
    Py_CLEAR(st->arg_error);
    Py_CLEAR(st->readonly_error);
    Py_CLEAR(st->collection_type);
    Py_CLEAR(st->filter_type);
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "vectordb._core", "The vectordb engine (C).", sizeof(core_state), core_methods, core_slots,
    core_traverse, core_clear, NULL,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&core_module); }
