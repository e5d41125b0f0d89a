/* vdb_codes — see vdb_codes.h for the contract.
 *
 * One query, flat or IVF, runs in three phases over its candidates (every row, or the rows of the
 * probed lists that the filter allows):
 *   1. scan every candidate's codes into one value s each (vdb_sq8_scan) and keep the k smallest;
 *   2. re-rank those k with the float32 kernel: the k-th exact distance is the threshold thr;
 *   3. every other candidate whose s is under vdb_sq8_cut(thr, largest err) -- one compare, 16 at
 *      a time -- and whose own lower bound is <= thr is re-ranked too, thr shrinking as it goes.
 * A candidate left out has a lower bound > thr >= the final k-th distance, so its float32 distance
 * is strictly larger than every distance returned: the answer is the float32 search's, ties
 * included (the heap breaks them by row like vdb_flat / vdb_ivf).
 */
#include "vdb_codes.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdb_bytes.h"
#include "vdb_crc32c.h"
#include "vdb_error.h"
#include "vdb_store.h"
#include "vdb_threads.h"
#include "vdb_topk.h"

#define CODES_MAGIC "VDBSQ8C1"
#define CODES_VERSION 2u /* 1: one checksum over everything (still read) */
#define CODES_HEADER 48
#define CODES_CHUNK 256 /* rows per scan call */

struct vdb_codes {
    vdb_metric metric;
    size_t d;       /* 0 until trained */
    vdb_sq8 *q;
    uint8_t *codes; /* cap * d: malloc'd, or inside map (codes.bin mapped at open) */
    void *map;      /* codes.bin, MAP_PRIVATE: changed pages stay in memory; NULL once codes are owned */
    size_t map_len;
    vdb_vecmap *chk; /* codes.crc over the mapped codes (NULL: all checked, or not mapped) */
    float *err;     /* cap */
    size_t cap;
    float err_max;  /* >= every err set since the last training */
    uint64_t rows_at_train;
};

static _Thread_local size_t codes_reranked;

size_t vdb_codes_last_reranked(void) { return codes_reranked; }

int vdb_codes_create(vdb_metric m, vdb_codes **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return vdb_set_error(VDB_ENOMEM, "out of memory for a code table");
    (*out)->metric = m;
    return VDB_OK;
}

/* Frees or unmaps the codes array. */
static void codes_drop(vdb_codes *t)
{
    if (t->map) munmap(t->map, t->map_len);
    else free(t->codes);
    vdb_vecmap_close(t->chk);
    t->chk = NULL;
    t->map = NULL;
    t->codes = NULL;
}

void vdb_codes_free(vdb_codes *t)
{
    if (!t) return;
    vdb_sq8_free(t->q);
    codes_drop(t);
    free(t->err);
    free(t);
}

int vdb_codes_trained(const vdb_codes *t) { return t && t->q != NULL; }

size_t vdb_codes_bytes(const vdb_codes *t) { return t ? t->cap * ((t->map ? 0 : t->d) + sizeof(float)) : 0; }

static int codes_reserve(vdb_codes *t, size_t rows)
{
    if (rows <= t->cap) return VDB_OK;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < rows) cap *= 2;
    if (cap > SIZE_MAX / (t->d + 1)) return vdb_set_error(VDB_ENOMEM, "code table size overflows (%zu rows)", rows);
    uint8_t *c = t->map ? malloc(cap * t->d) : realloc(t->codes, cap * t->d);
    if (!c) return vdb_set_error(VDB_ENOMEM, "out of memory growing the code table to %zu rows", rows);
    if (t->map) { /* the mapped codes move to owned memory */
        memcpy(c, t->codes, t->cap * t->d);
        codes_drop(t);
    }
    t->codes = c;
    float *e = realloc(t->err, cap * sizeof(float));
    if (!e) return vdb_set_error(VDB_ENOMEM, "out of memory growing the code table to %zu rows", rows);
    t->err = e;
    t->cap = cap;
    return VDB_OK;
}

int vdb_codes_verify(const vdb_codes *t) { return t ? vdb_vecmap_verify_all(t->chk) : VDB_OK; }
int vdb_codes_error(const vdb_codes *t) { return t ? vdb_vecmap_error(t->chk) : VDB_OK; }

int vdb_codes_prepare_write(vdb_codes *t, const float *vectors, size_t n, size_t d, size_t n_rows_after)
{
    int rc;
    /* A write changes mapped codes in place or copies them: never over unchecked pages. */
    if (vectors && n && (rc = vdb_codes_verify(t))) return rc;
    if (!t->q) {
        if (!vectors || n == 0) return VDB_OK; /* nothing to encode yet */
        if ((rc = vdb_sq8_train(t->metric, d, vectors, n, &t->q))) return rc;
        t->d = d;
        t->rows_at_train = n;
        t->err_max = 0;
    }
    return codes_reserve(t, n_rows_after);
}

void vdb_codes_set(vdb_codes *t, size_t row, const float *v)
{
    if (!t->q || row >= t->cap) return;
    vdb_sq8_encode(t->q, v, 1, t->codes + row * t->d, &t->err[row]);
    if (!(t->err[row] <= t->err_max)) t->err_max = t->err[row];
}

void vdb_codes_compact(vdb_codes *t, const uint64_t *live, size_t n_rows)
{
    if (!t->q) return;
    size_t k = 0;
    for (size_t r = 0; r < n_rows && r < t->cap; r++) {
        if (!((live[r >> 6] >> (r & 63)) & 1)) continue;
        if (k != r) {
            memmove(t->codes + k * t->d, t->codes + r * t->d, t->d);
            t->err[k] = t->err[r];
        }
        k++;
    }
}

int vdb_codes_should_retrain(const vdb_codes *t, size_t n_live)
{
    return t->q && n_live >= 2 * (t->rows_at_train ? t->rows_at_train : 1);
}

int vdb_codes_retrain(vdb_codes *t, size_t d, size_t n_rows, const uint64_t *live, vdb_codes_vec_fn vec,
                      const void *ctx)
{
    if (n_rows == 0 || d == 0) return VDB_OK;
    if (t->q && t->d != d) return vdb_set_error(VDB_EINVAL, "code table has dimension %zu, not %zu", t->d, d);
    int rc;
    if (!t->q) {
        t->d = d;
        t->cap = 0; /* arrays sized for d from here on */
    }
    if ((rc = codes_reserve(t, n_rows))) return rc;
    vdb_sq8 *q = NULL;
    double *lo = malloc(d * sizeof *lo), *hi = malloc(d * sizeof *hi), *v = malloc(d * sizeof *v);
    uint8_t *codes = NULL;
    float *err = NULL;
    size_t n_live = 0;
    if (!lo || !hi || !v) goto nomem;
    /* Ranges over the live vectors (cosine: their unit directions), read in place. */
    for (size_t j = 0; j < d; j++) {
        lo[j] = INFINITY;
        hi[j] = -INFINITY;
    }
    for (size_t r = 0; r < n_rows; r++) {
        if (!((live[r >> 6] >> (r & 63)) & 1)) continue;
        const float *x = vec(ctx, r);
        if (!x || !vdb_sq8_direction(t->metric, d, x, v)) continue;
        for (size_t j = 0; j < d; j++) {
            if (v[j] < lo[j]) lo[j] = v[j];
            if (v[j] > hi[j]) hi[j] = v[j];
        }
        n_live++;
    }
    if (n_live == 0) goto cleanup;
    if ((rc = vdb_sq8_from_bounds(t->metric, d, lo, hi, &q))) goto cleanup;
    if (!(codes = malloc(t->cap * d)) || !(err = malloc(t->cap * sizeof *err))) goto nomem;
    float err_max = 0;
    for (size_t r = 0; r < n_rows && r < t->cap; r++) {
        const float *x = vec(ctx, r);
        if (!x) {
            memset(codes + r * d, 0, d);
            err[r] = INFINITY;
        } else {
            vdb_sq8_encode(q, x, 1, codes + r * d, &err[r]);
        }
        if (((live[r >> 6] >> (r & 63)) & 1) && !(err[r] <= err_max)) err_max = err[r];
    }
    vdb_sq8_free(t->q);
    codes_drop(t);
    free(t->err);
    t->q = q;
    t->codes = codes;
    t->err = err;
    t->err_max = err_max;
    t->rows_at_train = n_live;
    q = NULL;
    codes = NULL;
    err = NULL;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory retraining the code table");
cleanup:
    vdb_sq8_free(q);
    free(codes);
    free(err);
    free(lo);
    free(hi);
    free(v);
    return rc;
}

/* ---- file ---- */

static void codes_put_f32s(uint8_t *p, const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &v[i], 4);
        vdb_put_u32(p + 4 * i, b);
    }
}

static void codes_get_f32s(float *v, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t b = vdb_get_u32(p + 4 * i);
        memcpy(&v[i], &b, 4);
    }
}

int vdb_codes_write(const vdb_codes *t, const char *path, size_t n_rows, uint64_t *bytes_written)
{
    if (!t->q || n_rows > t->cap) return vdb_set_error(VDB_EINVAL, "code table holds no codes for %zu rows", n_rows);
    const size_t d = t->d;
    int rc = vdb_codes_verify(t); /* never copy damage into the next generation */
    if (rc) return rc;
    uint8_t h[CODES_HEADER] = {0};
    uint8_t *ranges = malloc(8 * d), *errs = malloc(4 * (n_rows ? n_rows : 1));
    if (!ranges || !errs) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory writing '%s'", path);
        goto cleanup;
    }
    codes_put_f32s(ranges, t->q->lo, d);
    codes_put_f32s(ranges + 4 * d, t->q->step, d);
    codes_put_f32s(errs, t->err, n_rows);
    uint32_t crc = vdb_crc32c(vdb_crc32c(0, ranges, 8 * d), errs, 4 * n_rows);
    memcpy(h, CODES_MAGIC, 8);
    vdb_put_u32(h + 8, CODES_VERSION);
    vdb_put_u32(h + 12, (uint32_t)t->metric);
    vdb_put_u64(h + 16, d);
    vdb_put_u64(h + 24, n_rows);
    vdb_put_u64(h + 32, t->rows_at_train);
    vdb_put_u32(h + 40, crc);
    vdb_put_u32(h + 44, vdb_crc32c(0, h, 44));
    const void *chunks[3] = {ranges, t->codes, errs};
    uint64_t bytes[3] = {8 * d, n_rows * d, 4 * n_rows};
    rc = vdb_file_write_new(path, h, sizeof h, chunks, bytes, 3);
    if (rc == VDB_OK) rc = vdb_crc_table_write(path, chunks + 1, bytes + 1, 1, VDB_VECTORS_SMALL_CHUNK);
    if (rc == VDB_OK && bytes_written) *bytes_written = CODES_HEADER + bytes[0] + bytes[1] + bytes[2];
cleanup:
    free(ranges);
    free(errs);
    return rc;
}

int vdb_codes_read(const char *path, vdb_metric m, size_t d, size_t n_rows, vdb_codes **out)
{
    uint8_t h[CODES_HEADER], *ranges = NULL;
    vdb_codes *t = NULL;
    float *lo = NULL, *step = NULL;
    struct stat st;
    int rc = VDB_OK, fd = open(path, O_RDONLY | O_CLOEXEC);
    *out = NULL;
    if (fd < 0)
        return errno == ENOENT ? vdb_set_error(VDB_ECORRUPT, "file '%s' is missing", path)
                               : vdb_set_io_error(errno, "cannot open '%s': %s", path, strerror(errno));
#define CORRUPT(...) do { rc = vdb_set_error(VDB_ECORRUPT, __VA_ARGS__); goto cleanup; } while (0)
    if (fstat(fd, &st) != 0) {
        rc = vdb_set_io_error(errno, "cannot stat '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    size_t len = (size_t)st.st_size;
    if (len < CODES_HEADER || vdb_read_all(fd, h, CODES_HEADER, path) || memcmp(h, CODES_MAGIC, 8) ||
        vdb_get_u32(h + 44) != vdb_crc32c(0, h, 44))
        CORRUPT("file '%s' is corrupt (bad magic or header checksum)", path);
    const uint32_t version = vdb_get_u32(h + 8);
    if (version != 1 && version != CODES_VERSION)
        CORRUPT("file '%s' has format version %u; this vectordb reads version %u", path, vdb_get_u32(h + 8),
                CODES_VERSION);
    if (vdb_get_u32(h + 12) != (uint32_t)m || vdb_get_u64(h + 16) != d || vdb_get_u64(h + 24) != n_rows || d == 0)
        CORRUPT("file '%s' does not match its collection (metric, dimension or row count)", path);
    if (n_rows > (SIZE_MAX - CODES_HEADER - 8 * d) / (d + 4) || len != CODES_HEADER + 8 * d + n_rows * (d + 4))
        CORRUPT("file '%s' is corrupt (its length does not match its header)", path);
    if (!(lo = malloc(d * sizeof *lo)) || !(step = malloc(d * sizeof *step)) || !(ranges = malloc(8 * d))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
        goto cleanup;
    }
    if ((rc = vdb_read_all(fd, ranges, 8 * d, path))) goto cleanup;
    codes_get_f32s(lo, ranges, d);
    codes_get_f32s(step, ranges + 4 * d, d);
    if ((rc = vdb_codes_create(m, &t))) goto cleanup;
    if (vdb_sq8_from_ranges(m, d, lo, step, &t->q)) CORRUPT("file '%s' is corrupt (invalid ranges)", path);
    t->d = d;
    t->rows_at_train = vdb_get_u64(h + 32);
    /* The codes are mapped, not read (MAP_PRIVATE: a write changes memory, never the file); the
     * error bounds (4 bytes a row) are copied out. Everything is checked before use. */
    if (!n_rows) {
        if ((rc = codes_reserve(t, 1))) goto cleanup;
    } else {
        void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = vdb_set_io_error(errno, "cannot map '%s': %s", path, strerror(errno));
            goto cleanup;
        }
        t->map = map;
        t->map_len = len;
        t->codes = (uint8_t *)map + CODES_HEADER + 8 * d;
        t->cap = n_rows;
        if (!(t->err = malloc(n_rows * sizeof(float)))) {
            rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
            goto cleanup;
        }
        const uint8_t *errs = t->codes + n_rows * d;
        uint32_t crc = vdb_crc32c(0, ranges, 8 * d);
        if (version == 1) { /* one checksum over everything: checked whole, now */
            crc = vdb_crc32c(crc, t->codes, n_rows * d);
        } else { /* the codes' pages are checked on first use (codes.crc), the rest now */
            if ((rc = vdb_vecmap_wrap(path, t->codes, (uint64_t)n_rows * d, &t->chk)) == VDB_ENOTFOUND)
                CORRUPT("file '%s' has no checksum table beside it (codes.crc is missing)", path);
            if (rc) goto cleanup;
        }
        if (vdb_crc32c(crc, errs, n_rows * 4) != vdb_get_u32(h + 40))
            CORRUPT("file '%s' is corrupt (checksum mismatch)", path);
        codes_get_f32s(t->err, errs, n_rows);
        /* Open keeps none of what it read resident: searches page in (and verify) what they scan. */
        madvise(map, len, MADV_DONTNEED);
    }
    for (size_t r = 0; r < n_rows; r++) {
        if (!(t->err[r] >= 0)) CORRUPT("file '%s' is corrupt (error bound of row %zu)", path, r);
        if (t->err[r] > t->err_max) t->err_max = t->err[r];
    }
#undef CORRUPT
    *out = t;
    t = NULL;
cleanup:
    close(fd);
    vdb_codes_free(t);
    free(ranges);
    free(lo);
    free(step);
    return rc;
}

/* ---- search ---- */

/* Whether any of p[0..16) is <= thr (NaN counts: its row goes to the exact check). */
static inline int codes_any_le16(const float *p, float thr)
{
    int any = 0;
    for (int i = 0; i < 16; i++) any |= !(p[i] > thr);
    return any;
}

static inline int allowed(const uint64_t *allow, size_t allow_len, int64_t row)
{
    return !allow || ((uint64_t)row < allow_len && ((allow[row >> 6] >> (row & 63)) & 1));
}

typedef struct {
    const vdb_codes *t;
    const vdb_sq8_query *qp;
    const float *q;
    size_t k;
    /* candidates: i -> row (rows NULL: row = i), scan values s[i] */
    const int64_t *rows;
    const float *s;
    size_t n;
    const float *(*vec)(const void *ctx, int64_t row);
    const void *vctx;
    const uint64_t *allow; /* candidates not yet filtered (flat), else NULL */
    size_t allow_len;
    vdb_codes_check_fn check; /* before a row is re-ranked (NULL: none) */
    const void *check_ctx;
    int *failed;              /* the first check's failure */
} codes_job;

static inline int64_t job_row(const codes_job *j, size_t i) { return j->rows ? j->rows[i] : (int64_t)i; }

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void rerank(const codes_job *j, vdb_topk *R, int64_t row)
{
    float dist;
    if (j->check && !*j->failed) *j->failed = j->check(j->check_ctx, row);
    if (*j->failed) return;
    vdb_distance_batch(j->t->metric, j->q, j->vec(j->vctx, row), 1, j->t->d, &dist);
    codes_reranked++;
    if (dist <= vdb_topk_threshold(R)) vdb_topk_push(R, dist, row);
}

/* Phases 2 and 3 (phase 1 filled s and the k-smallest heap A); R gets the answer, sorted. */
static void codes_finish(const codes_job *j, vdb_topk *A, vdb_topk *R)
{
    size_t na = A->size;
    int64_t *first = A->rows; /* A's rows, sorted by row, to skip them in phase 3 */
    for (size_t i = 0; i < na; i++) rerank(j, R, first[i]);
    if (R->size == R->k) {
        qsort(first, na, sizeof *first, cmp_i64);
        float thr = vdb_topk_threshold(R);
        const float err_max = j->t->err_max;
        float cut = vdb_sq8_cut(j->qp, thr, err_max);
        for (size_t i0 = 0; i0 < j->n; i0 += 16) {
            size_t i1 = j->n - i0 < 16 ? j->n : i0 + 16;
            if (i1 - i0 == 16 && !codes_any_le16(j->s + i0, cut)) continue;
            for (size_t i = i0; i < i1; i++) {
                if (j->s[i] > cut) continue;
                int64_t row = job_row(j, i);
                if (!allowed(j->allow, j->allow_len, row)) continue;
                if (vdb_sq8_lower_bound(j->qp, j->s[i], j->t->err[row]) > (double)thr) continue;
                if (bsearch(&row, first, na, sizeof *first, cmp_i64)) continue;
                rerank(j, R, row);
                if (vdb_topk_threshold(R) != thr) {
                    thr = vdb_topk_threshold(R);
                    cut = vdb_sq8_cut(j->qp, thr, err_max);
                }
            }
        }
    }
    size_t got = vdb_topk_sort(R);
    for (size_t i = got; i < R->k; i++) {
        R->dist[i] = INFINITY;
        R->rows[i] = -1;
    }
}

/* Pushes s[i0..i1) of allowed candidates into the k-smallest heap. */
static inline void push_approx(vdb_topk *A, const float *s, size_t i0, size_t i1, const int64_t *rows)
{
    float thr = vdb_topk_threshold(A);
    for (size_t i = i0; i < i1; i++) {
        if (!(s[i] <= thr) && A->size == A->k) continue;
        vdb_topk_push(A, s[i] == s[i] ? s[i] : -INFINITY, rows ? rows[i] : (int64_t)i);
        thr = vdb_topk_threshold(A);
    }
}

/* Runs one(ctx, q) for every query: on the calling thread for one query (or one thread), else
 * over the worker pool; the first failure's code is returned. */
typedef int (*codes_one_fn)(void *ctx, size_t qi);
typedef struct {
    codes_one_fn one;
    void *ctx;
    int rc;
} codes_run_ctx;

static void codes_run_task(void *ctx, size_t task, size_t worker)
{
    (void)worker;
    codes_run_ctx *r = ctx;
    int rc = r->one(r->ctx, task);
    if (rc) __atomic_store_n(&r->rc, rc, __ATOMIC_RELAXED);
}

static int codes_run(size_t nq, codes_one_fn one, void *ctx)
{
    codes_run_ctx r = {one, ctx, VDB_OK};
    if (nq == 1 || vdb_threads_count() <= 1) {
        for (size_t qi = 0; qi < nq && r.rc == VDB_OK; qi++) r.rc = one(ctx, qi);
        return r.rc;
    }
    vdb_parallel_for(nq, codes_run_task, &r);
    if (r.rc == VDB_ENOMEM) return vdb_set_error(r.rc, "search through codes failed (out of memory)");
    return r.rc ? vdb_set_error(r.rc, "search through codes failed") : VDB_OK;
}

/* ---- flat ---- */

typedef struct {
    const vdb_codes *t;
    const vdb_vec_range *ranges;
    size_t n_ranges, n_rows;
    const uint64_t *allow;
    const float *queries;
    size_t k;
    float *out_dist;
    int64_t *out_rows;
    vdb_codes_check_fn check;
    const void *check_ctx;
} flat_ctx;

static const float *flat_vec(const void *ctx, int64_t row)
{
    const flat_ctx *c = ctx;
    for (size_t i = 0; i < c->n_ranges; i++) {
        const vdb_vec_range *r = &c->ranges[i];
        if (row >= r->first_row && row < r->first_row + (int64_t)r->n)
            return r->data + (size_t)(row - r->first_row) * c->t->d;
    }
    return NULL;
}

static int flat_one(void *ctx, size_t qi)
{
    const flat_ctx *c = ctx;
    const vdb_codes *t = c->t;
    const float *q = c->queries + qi * t->d;
    float *od = c->out_dist + qi * c->k;
    int64_t *orow = c->out_rows + qi * c->k;
    vdb_sq8_query qp;
    int rc = vdb_sq8_query_prepare(t->q, q, &qp);
    if (rc < 0) return rc;
    if (rc == 0) { /* no code scan for this query: the float32 scan reads every row */
        if (c->check && (rc = c->check(c->check_ctx, -1))) return rc;
        return vdb_flat_search(t->metric, t->d, c->ranges, c->n_ranges, c->allow, q, 1, c->k, od, orow);
    }
    float *s = malloc((c->n_rows ? c->n_rows : 1) * sizeof *s);
    float *ad = malloc(c->k * sizeof *ad);
    int64_t *ar = malloc(c->k * sizeof *ar);
    if (!s || !ad || !ar) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for a search through codes");
        goto cleanup;
    }
    vdb_topk A, R;
    vdb_topk_init(&A, c->k, ad, ar);
    vdb_topk_init(&R, c->k, od, orow);
    for (size_t i0 = 0; i0 < c->n_rows; i0 += CODES_CHUNK) {
        size_t i1 = c->n_rows - i0 < CODES_CHUNK ? c->n_rows : i0 + CODES_CHUNK;
        if (t->chk && (rc = vdb_vecmap_verify(t->chk, i0 * t->d, i1 * t->d))) goto cleanup;
        vdb_sq8_scan(&qp, t->codes + i0 * t->d, i1 - i0, s + i0);
        if (!c->allow) {
            push_approx(&A, s, i0, i1, NULL);
            continue;
        }
        for (size_t i = i0; i < i1; i++)
            if (allowed(c->allow, c->n_rows, (int64_t)i) && (A.size < A.k || s[i] <= vdb_topk_threshold(&A)))
                vdb_topk_push(&A, s[i] == s[i] ? s[i] : -INFINITY, (int64_t)i);
    }
    int failed = VDB_OK;
    codes_job j = {t, &qp, q, c->k, NULL, s, c->n_rows, flat_vec, c, c->allow, c->n_rows, c->check, c->check_ctx,
                   &failed};
    codes_finish(&j, &A, &R);
    rc = failed;
cleanup:
    vdb_sq8_query_free(&qp);
    free(s);
    free(ad);
    free(ar);
    return rc;
}

int vdb_codes_search_flat(const vdb_codes *t, const vdb_vec_range *ranges, size_t n_ranges, const uint64_t *allow,
                          const float *queries, size_t nq, size_t k, float *out_dist, int64_t *out_rows,
                          vdb_codes_check_fn check, const void *check_ctx)
{
    size_t n_rows = 0;
    codes_reranked = 0;
    if (nq == 0 || k == 0) return VDB_OK;
    int contiguous = 1, rc;
    for (size_t i = 0; i < n_ranges; i++) {
        contiguous &= ranges[i].first_row == (int64_t)n_rows; /* rows must be 0..n-1 in order */
        n_rows += ranges[i].n;
    }
    if (!contiguous || !t->q || n_rows > t->cap) {
        if (check && (rc = check(check_ctx, -1))) return rc;
        return vdb_flat_search(t->metric, t->d, ranges, n_ranges, allow, queries, nq, k, out_dist, out_rows);
    }
    flat_ctx c = {t, ranges, n_ranges, n_rows, allow, queries, k, out_dist, out_rows, check, check_ctx};
    return codes_run(nq, flat_one, &c);
}

/* ---- IVF ---- */

typedef struct {
    const vdb_codes *t;
    const vdb_ivf *ivf;
    const float *queries;
    size_t k, n_probe;
    const uint64_t *allow;
    size_t allow_len;
    float *out_dist;
    int64_t *out_rows;
} ivf_ctx;

static const float *ivf_vec(const void *ctx, int64_t row) { return vdb_ivf_vector(((const ivf_ctx *)ctx)->ivf, row); }
static int ivf_check(const void *ctx, int64_t row) { return vdb_ivf_verify_row(((const ivf_ctx *)ctx)->ivf, row); }

/* Verifies the pages holding the codes of rows (a list's) not verified yet. */
static int codes_verify_rows(const vdb_codes *t, const int64_t *rows, size_t n)
{
    if (vdb_vecmap_verified(t->chk)) return VDB_OK;
    int rc = VDB_OK;
    for (size_t i = 0; i < n && rc == VDB_OK; i++)
        rc = vdb_vecmap_verify(t->chk, (uint64_t)rows[i] * t->d, ((uint64_t)rows[i] + 1) * t->d);
    return rc;
}

static int ivf_one(void *ctx, size_t qi)
{
    const ivf_ctx *c = ctx;
    const vdb_codes *t = c->t;
    const size_t d = t->d, nl = vdb_ivf_n_lists(c->ivf);
    const float *q = c->queries + qi * d;
    float *od = c->out_dist + qi * c->k;
    int64_t *orow = c->out_rows + qi * c->k;
    vdb_sq8_query qp;
    int rc = vdb_sq8_query_prepare(t->q, q, &qp);
    if (rc <= 0)
        return rc < 0 ? rc
                      : vdb_ivf_search(c->ivf, q, 1, c->k, c->n_probe, c->allow, c->allow_len, od, orow);
    float *cd = malloc(nl * sizeof *cd), *s = NULL, *ad = malloc(c->k * sizeof *ad);
    int64_t *order = malloc(nl * sizeof *order), *rows = NULL, *ar = malloc(c->k * sizeof *ar);
    size_t n = 0, cap = 0;
    if (!cd || !order || !ad || !ar) goto nomem;
    vdb_ivf_probe_order(c->ivf, q, cd, order);
    vdb_topk A, R;
    vdb_topk_init(&A, c->k, ad, ar);
    vdb_topk_init(&R, c->k, od, orow);
    /* n_probe lists, then further ones in centroid order while fewer than k rows were allowed. */
    for (size_t jl = 0; jl < nl && (jl < c->n_probe || n < c->k); jl++) {
        size_t ln;
        const int64_t *lr = vdb_ivf_list_rows(c->ivf, (size_t)order[jl], &ln);
        if (n + ln > cap) {
            size_t nc = cap ? cap : 4096;
            while (nc < n + ln) nc *= 2;
            float *s2 = realloc(s, nc * sizeof *s);
            if (!s2) goto nomem;
            s = s2;
            int64_t *r2 = realloc(rows, nc * sizeof *rows);
            if (!r2) goto nomem;
            rows = r2;
            cap = nc;
        }
        size_t n0 = n;
        if (!c->allow) {
            memcpy(rows + n, lr, ln * sizeof *lr);
            n += ln;
        } else {
            for (size_t i = 0; i < ln; i++)
                if (allowed(c->allow, c->allow_len, lr[i])) rows[n++] = lr[i];
        }
        if ((rc = codes_verify_rows(t, rows + n0, n - n0))) goto cleanup;
        vdb_sq8_scan_rows(&qp, t->codes, rows + n0, n - n0, s + n0);
        push_approx(&A, s, n0, n, rows);
    }
    int failed = VDB_OK;
    codes_job j = {t, &qp, q, c->k, rows, s, n, ivf_vec, c, NULL, 0, ivf_check, c, &failed};
    codes_finish(&j, &A, &R);
    rc = failed;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory for an IVF search through codes");
cleanup:
    vdb_sq8_query_free(&qp);
    free(cd);
    free(order);
    free(s);
    free(rows);
    free(ad);
    free(ar);
    return rc;
}

int vdb_codes_search_ivf(const vdb_codes *t, const vdb_ivf *ivf, const float *queries, size_t nq, size_t k,
                         size_t n_probe, const uint64_t *allow, size_t allow_len, float *out_dist,
                         int64_t *out_rows)
{
    codes_reranked = 0;
    if (nq == 0 || k == 0) return VDB_OK;
    /* Every row of the index is below allow_len (the collection's row count): codes cover them. */
    if (!t->q || !vdb_ivf_is_trained(ivf) || allow_len > t->cap)
        return vdb_ivf_search(ivf, queries, nq, k, n_probe, allow, allow_len, out_dist, out_rows);
    size_t nl = vdb_ivf_n_lists(ivf);
    if (n_probe < 1) n_probe = 1;
    if (n_probe > nl) n_probe = nl;
    ivf_ctx c = {t, ivf, queries, k, n_probe, allow, allow_len, out_dist, out_rows};
    return codes_run(nq, ivf_one, &c);
}
