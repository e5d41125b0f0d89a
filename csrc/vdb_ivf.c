#include "vdb_ivf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdb_bytes.h"
#include "vdb_crc32c.h"
#include "vdb_error.h"
#include "vdb_kmeans.h"
#include "vdb_threads.h"
#include "vdb_topk.h"

#define IVF_ABSENT UINT64_MAX
#define IVF_MAX_LISTS ((size_t)1 << 31)
#define IVF_MAX_LIST_LEN ((size_t)UINT32_MAX) /* positions are packed in 32 bits */
#define IVF_MAX_DIM ((uint64_t)1 << 24)        /* sanity bound for files */
#define IVF_QB 16                              /* queries per search task */
#define IVF_TRAIN_PER_LIST 256                 /* training sample per list (faiss's rule) */
#define IVF_SCAN_CHUNK_BYTES 1024              /* list scan: rows per kernel call, in bytes */
#define IVF_PREFETCH_BYTES 4096                /* list scan: prefetch distance (tuned at 100k and 1M x 128) */

#define IVF_MAGIC "VDBIVF1\n"
#define IVF_VERSION 1u
#define IVF_HEADER_LEN 88

/* Largest row number a file may hold for n vectors (exclusive): the row map read allocates is
 * sized by it, so a damaged row number cannot demand more than ~16 bytes per vector. */
static uint64_t ivf_file_row_limit(uint64_t n_vectors) { return 2 * n_vectors + 1024; }

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define IVF_BIG_ENDIAN 1
#else
#define IVF_BIG_ENDIAN 0
#endif

typedef struct {
    float *vecs;   /* cap * d floats; the first n are in use */
    int64_t *rows; /* cap row numbers */
    size_t n, cap;
} ivf_list;

struct vdb_ivf {
    size_t d;
    vdb_metric metric;
    size_t n_lists;
    int trained;
    float *centroids; /* n_lists * d */
    vdb_kmeans_prepared assigner; /* the centroids packed for adds; made on first use (packed == NULL:
                                   * not yet), dropped whenever the centroids change */
    ivf_list *lists;  /* n_lists */
    uint64_t *where;  /* row -> list << 32 | position, IVF_ABSENT when not held */
    size_t where_len;
    int64_t n_vectors;
    uint64_t n_train_points, added_since_train, seed;
    uint64_t vectors_at_train; /* vectors held when last trained (or marked, see header) */
};

static int ivf_mul(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b) return -1;
    *out = a * b;
    return 0;
}

static inline uint64_t ivf_pack(size_t list, size_t pos) { return (uint64_t)list << 32 | (uint64_t)pos; }
static inline size_t ivf_list_of(uint64_t w) { return (size_t)(w >> 32); }
static inline size_t ivf_pos_of(uint64_t w) { return (size_t)(w & 0xFFFFFFFFu); }

/* Spherical metrics rank lists by dot product with unit centroids. */
static vdb_metric ivf_coarse_metric(vdb_metric m) { return m == VDB_METRIC_L2 ? VDB_METRIC_L2 : VDB_METRIC_IP; }

static int ivf_metric_ok(vdb_metric m)
{
    return m == VDB_METRIC_L2 || m == VDB_METRIC_IP || m == VDB_METRIC_COSINE;
}

/* Grows a list to hold need vectors: exactly need for a bulk add, 1.25x for one-at-a-time growth.
 * On failure the list's contents are unchanged. */
static int ivf_list_reserve(ivf_list *L, size_t need, size_t d)
{
    if (need <= L->cap) return 0;
    size_t cap = L->cap + L->cap / 4 + 8;
    if (cap < need) cap = need;
    if (cap > IVF_MAX_LIST_LEN) cap = IVF_MAX_LIST_LEN;
    if (need > cap) return -1;
    size_t vbytes, rbytes;
    if (ivf_mul(cap, d, &vbytes) || ivf_mul(vbytes, sizeof(float), &vbytes) ||
        ivf_mul(cap, sizeof(int64_t), &rbytes))
        return -1;
    float *v = realloc(L->vecs, vbytes);
    if (!v) return -1;
    L->vecs = v;
    int64_t *r = realloc(L->rows, rbytes);
    if (!r) return -1; /* vecs is merely larger than cap says: harmless */
    L->rows = r;
    L->cap = cap;
    return 0;
}

/* Gives back unused capacity (best effort: a failed shrink keeps the larger block). */
static void ivf_list_shrink(ivf_list *L, size_t d)
{
    if (L->n == 0) {
        free(L->vecs);
        free(L->rows);
        L->vecs = NULL;
        L->rows = NULL;
        L->cap = 0;
        return;
    }
    if (L->cap == L->n) return;
    float *v = realloc(L->vecs, L->n * d * sizeof(float));
    if (v) L->vecs = v;
    int64_t *r = realloc(L->rows, L->n * sizeof(int64_t));
    if (r) L->rows = r;
    if (v && r) L->cap = L->n;
}

static int ivf_where_reserve(vdb_ivf *ivf, size_t need_len)
{
    if (need_len <= ivf->where_len) return 0;
    size_t len = ivf->where_len + ivf->where_len / 2 + 1024;
    if (len < need_len) len = need_len;
    size_t bytes;
    if (ivf_mul(len, sizeof(uint64_t), &bytes)) return -1;
    uint64_t *w = realloc(ivf->where, bytes);
    if (!w) return -1;
    for (size_t i = ivf->where_len; i < len; i++) w[i] = IVF_ABSENT;
    ivf->where = w;
    ivf->where_len = len;
    return 0;
}

static void ivf_append(vdb_ivf *ivf, size_t l, int64_t row, const float *v)
{
    ivf_list *L = &ivf->lists[l];
    size_t pos = L->n++;
    memcpy(L->vecs + pos * ivf->d, v, ivf->d * sizeof(float));
    L->rows[pos] = row;
    ivf->where[row] = ivf_pack(l, pos);
    ivf->n_vectors++;
}

/* Swap-remove: the list's last entry takes the freed slot. */
static void ivf_remove_at(vdb_ivf *ivf, size_t l, size_t pos)
{
    ivf_list *L = &ivf->lists[l];
    size_t last = L->n - 1;
    int64_t row = L->rows[pos];
    if (pos != last) {
        memcpy(L->vecs + pos * ivf->d, L->vecs + last * ivf->d, ivf->d * sizeof(float));
        L->rows[pos] = L->rows[last];
        ivf->where[L->rows[pos]] = ivf_pack(l, pos);
    }
    L->n = last;
    ivf->where[row] = IVF_ABSENT;
    ivf->n_vectors--;
}

static void ivf_rebuild_where(vdb_ivf *ivf)
{
    for (size_t i = 0; i < ivf->where_len; i++) ivf->where[i] = IVF_ABSENT;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) ivf->where[L->rows[i]] = ivf_pack(l, i);
    }
}

int vdb_ivf_create(size_t d, vdb_metric m, size_t n_lists, vdb_ivf **out)
{
    int rc = VDB_OK;
    vdb_ivf *ivf = NULL;
    size_t cbytes;
    *out = NULL;
    if (d == 0 || !ivf_metric_ok(m) || n_lists == 0 || n_lists >= IVF_MAX_LISTS) {
        rc = vdb_set_error(VDB_EINVAL,
                           "IVF index needs dimension > 0, a known metric and 1 <= n_lists < 2^31 "
                           "(got d=%zu, metric=%d, n_lists=%zu)", d, (int)m, n_lists);
        goto cleanup;
    }
    if (ivf_mul(n_lists, d, &cbytes) || ivf_mul(cbytes, sizeof(float), &cbytes)) {
        rc = vdb_set_error(VDB_ENOMEM, "IVF centroid table size overflows (%zu lists x %zu)", n_lists, d);
        goto cleanup;
    }
    ivf = calloc(1, sizeof *ivf);
    if (!ivf) goto nomem;
    ivf->d = d;
    ivf->metric = m;
    ivf->n_lists = n_lists;
    ivf->centroids = calloc(1, cbytes);
    ivf->lists = calloc(n_lists, sizeof *ivf->lists);
    if (!ivf->centroids || !ivf->lists) goto nomem;
    *out = ivf;
    ivf = NULL;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory creating an IVF index (%zu lists x %zu)", n_lists, d);
cleanup:
    vdb_ivf_free(ivf);
    return rc;
}

void vdb_ivf_free(vdb_ivf *ivf)
{
    if (!ivf) return;
    if (ivf->lists) {
        for (size_t l = 0; l < ivf->n_lists; l++) {
            free(ivf->lists[l].vecs);
            free(ivf->lists[l].rows);
        }
    }
    free(ivf->lists);
    free(ivf->centroids);
    vdb_kmeans_prepared_free(&ivf->assigner);
    free(ivf->where);
    free(ivf);
}

int vdb_ivf_train(vdb_ivf *ivf, const float *x, size_t n, uint64_t seed)
{
    int rc = VDB_OK;
    float *c = NULL;
    if (ivf->n_vectors > 0) {
        rc = vdb_set_error(VDB_EINVAL, "IVF train needs an empty index (it holds %lld vectors); use retrain",
                           (long long)ivf->n_vectors);
        goto cleanup;
    }
    c = malloc(ivf->n_lists * ivf->d * sizeof(float)); /* size checked at create */
    if (!c) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for IVF centroids");
        goto cleanup;
    }
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.seed = seed;
    p.max_points_per_centroid = IVF_TRAIN_PER_LIST;
    rc = vdb_kmeans_train(ivf->metric, x, n, ivf->d, ivf->n_lists, &p, c, NULL);
    if (rc) goto cleanup;
    memcpy(ivf->centroids, c, ivf->n_lists * ivf->d * sizeof(float));
    vdb_kmeans_prepared_free(&ivf->assigner);
    ivf->trained = 1;
    ivf->n_train_points = n;
    ivf->added_since_train = 0;
    ivf->vectors_at_train = 0; /* the index is empty; vdb_ivf_mark_trained_contents after the adds */
    ivf->seed = seed;
cleanup:
    free(c);
    return rc;
}

static int ivf_check_row(int64_t row)
{
    if (row < 0 || row >= VDB_IVF_MAX_ROW)
        return vdb_set_error(VDB_EINVAL, "IVF row %lld is out of range: expected 0 <= row < 2^48",
                             (long long)row);
    return VDB_OK;
}

int vdb_ivf_add(vdb_ivf *ivf, const int64_t *rows, const float *x, size_t n)
{
    int rc = VDB_OK;
    uint32_t *assign = NULL;
    size_t *extra = NULL;
    if (n == 0) goto cleanup;
    if (!ivf->trained) {
        rc = vdb_set_error(VDB_EINVAL, "IVF add needs a trained index");
        goto cleanup;
    }
    int64_t max_row = -1;
    for (size_t i = 0; i < n; i++) {
        rc = ivf_check_row(rows[i]);
        if (rc) goto cleanup;
        if (rows[i] > max_row) max_row = rows[i];
    }
    assign = malloc(n * sizeof *assign);
    extra = calloc(ivf->n_lists, sizeof *extra);
    if (!assign || !extra) goto nomem;
    if (!ivf->assigner.packed) {
        rc = vdb_kmeans_prepare(ivf->metric, ivf->centroids, ivf->n_lists, ivf->d, &ivf->assigner);
        if (rc) goto cleanup;
    }
    rc = vdb_kmeans_assign_prepared(&ivf->assigner, x, n, assign, NULL);
    if (rc) goto cleanup;
    /* Reserve everything first, so that applying the batch cannot fail half way. */
    if (ivf_where_reserve(ivf, (size_t)max_row + 1)) goto nomem;
    for (size_t i = 0; i < n; i++) extra[assign[i]]++;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        if (extra[l] && ivf_list_reserve(&ivf->lists[l], ivf->lists[l].n + extra[l], ivf->d)) goto nomem;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t w = ivf->where[rows[i]];
        if (w != IVF_ABSENT) ivf_remove_at(ivf, ivf_list_of(w), ivf_pos_of(w));
        ivf_append(ivf, assign[i], rows[i], x + i * ivf->d);
    }
    ivf->added_since_train += n;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory adding %zu vectors to the IVF index", n);
cleanup:
    free(assign);
    free(extra);
    return rc;
}

void vdb_ivf_mark_trained_contents(vdb_ivf *ivf)
{
    ivf->vectors_at_train = (uint64_t)ivf->n_vectors;
    ivf->added_since_train = 0;
}

int vdb_ivf_remove(vdb_ivf *ivf, int64_t row)
{
    if (!vdb_ivf_contains(ivf, row))
        return vdb_set_error(VDB_ENOTFOUND, "row %lld is not in the IVF index", (long long)row);
    uint64_t w = ivf->where[row];
    size_t l = ivf_list_of(w);
    ivf_remove_at(ivf, l, ivf_pos_of(w));
    ivf_list *L = &ivf->lists[l];
    if (L->cap > 64 && L->n < L->cap / 2) {
        /* Keep headroom (n/4) so alternating add/remove does not reallocate every time. */
        size_t keep = L->n + L->n / 4 + 8; /* never 0: realloc(p, 0) may free p */
        float *v = realloc(L->vecs, keep * ivf->d * sizeof(float));
        if (v) L->vecs = v;
        int64_t *r = realloc(L->rows, keep * sizeof(int64_t));
        if (r) L->rows = r;
        if (v && r) L->cap = keep;
    }
    return VDB_OK;
}

int vdb_ivf_contains(const vdb_ivf *ivf, int64_t row)
{
    return row >= 0 && (uint64_t)row < ivf->where_len && ivf->where[row] != IVF_ABSENT;
}

const float *vdb_ivf_vector(const vdb_ivf *ivf, int64_t row)
{
    if (!vdb_ivf_contains(ivf, row)) return NULL;
    uint64_t w = ivf->where[row];
    return ivf->lists[ivf_list_of(w)].vecs + ivf_pos_of(w) * ivf->d;
}

/* ---- Search. */

typedef struct {
    const vdb_ivf *ivf;
    const float *queries;
    size_t nq, k, n_probe;
    const uint64_t *allow;
    size_t allow_len;
    float *out_dist;
    int64_t *out_rows;
    size_t max_list;
    /* per-worker scratch, one block each */
    unsigned char *scratch;
    size_t scratch_per_worker;
    size_t n_slots; /* workers with a scratch slot */
    _Atomic int failed;
} ivf_search_ctx;

typedef struct {
    float *coarse;   /* min(nq, IVF_QB) * n_lists */
    float *order_d;  /* n_lists */
    int64_t *order_i;/* n_lists */
    float *ld;       /* max_list */
    uint32_t *lpos;  /* max_list */
    unsigned char *scanned; /* n_lists */
} ivf_scratch;

static size_t ivf_align(size_t x) { return (x + 63) & ~(size_t)63; }

static int ivf_scratch_size(size_t qb, size_t n_lists, size_t max_list, size_t *out)
{
    size_t a, b, c, e, f, g;
    if (ivf_mul(qb * sizeof(float), n_lists, &a) || ivf_mul(n_lists, sizeof(float), &b) ||
        ivf_mul(n_lists, sizeof(int64_t), &c) || ivf_mul(max_list, sizeof(float), &e) ||
        ivf_mul(max_list, sizeof(uint32_t), &f))
        return -1;
    g = n_lists;
    *out = ivf_align(a) + ivf_align(b) + ivf_align(c) + ivf_align(e) + ivf_align(f) + ivf_align(g);
    return 0;
}

static ivf_scratch ivf_scratch_at(unsigned char *base, size_t qb, size_t n_lists, size_t max_list)
{
    ivf_scratch s;
    unsigned char *p = base;
    s.coarse = (float *)p;
    p += ivf_align(qb * sizeof(float) * n_lists);
    s.order_d = (float *)p;
    p += ivf_align(n_lists * sizeof(float));
    s.order_i = (int64_t *)p;
    p += ivf_align(n_lists * sizeof(int64_t));
    s.ld = (float *)p;
    p += ivf_align(max_list * sizeof(float));
    s.lpos = (uint32_t *)p;
    p += ivf_align(max_list * sizeof(uint32_t));
    s.scanned = p;
    return s;
}

/* Distances from q to every vector of L, with software prefetch IVF_PREFETCH_BYTES ahead. A list
 * is one sequential stream, but the hardware prefetchers restart at every 4 KB page and know
 * nothing of the next list; prefetching ahead (into `next`, the list scanned after this one,
 * near the end) measured 10-20% more QPS at 1M x 128 (lists in DRAM) and ~15% at 100k (lists in
 * the last-level cache). Small chunks spread the prefetches between the rows: 8 KB bursts filled
 * the line-fill buffers and stalled the scan at 100k. */
static void ivf_list_distances(vdb_metric m, const float *q, const ivf_list *L, const ivf_list *next,
                               size_t d, float *out)
{
    const size_t row_bytes = d * sizeof(float);
    const size_t chunk = IVF_SCAN_CHUNK_BYTES / row_bytes ? IVF_SCAN_CHUNK_BYTES / row_bytes : 1;
    const char *base = (const char *)L->vecs;
    const size_t total = L->n * row_bytes;
    const char *next_base = next && next->n ? (const char *)next->vecs : NULL;
    const size_t next_total = next_base ? next->n * row_bytes : 0;
    for (size_t i0 = 0; i0 < L->n; i0 += chunk) {
        size_t cn = L->n - i0 < chunk ? L->n - i0 : chunk;
        /* Bytes [from, to) of the stream "this list, then the next one" are prefetched. */
        size_t from = i0 * row_bytes + IVF_PREFETCH_BYTES, to = from + cn * row_bytes;
        for (size_t b = from; b < to; b += 64) {
            if (b < total)
                __builtin_prefetch(base + b);
            else if (b - total < next_total)
                __builtin_prefetch(next_base + (b - total));
        }
        vdb_distance_batch(m, q, L->vecs + i0 * d, cn, d, out + i0);
    }
}

static void ivf_scan_list(const ivf_search_ctx *c, ivf_scratch *s, const float *q, const ivf_list *L,
                          const ivf_list *next, vdb_topk *R)
{
    const size_t d = c->ivf->d;
    const vdb_metric m = c->ivf->metric;
    if (L->n == 0) return;
    if (!c->allow) {
        ivf_list_distances(m, q, L, next, d, s->ld);
        float thr = vdb_topk_threshold(R); /* most rows lose to the k kept: one compare each */
        for (size_t i = 0; i < L->n; i++) {
            if (s->ld[i] > thr) continue;
            vdb_topk_push(R, s->ld[i], L->rows[i]);
            thr = vdb_topk_threshold(R);
        }
        return;
    }
    size_t na = 0;
    for (size_t i = 0; i < L->n; i++) {
        uint64_t r = (uint64_t)L->rows[i];
        if (r < c->allow_len && (c->allow[r >> 6] >> (r & 63) & 1)) s->lpos[na++] = (uint32_t)i;
    }
    if (na == 0) return;
    if (na * 4 < L->n) {
        /* Few allowed rows: pairwise beats scanning the whole list. */
        for (size_t j = 0; j < na; j++) {
            size_t i = s->lpos[j];
            vdb_topk_push(R, vdb_distance(m, q, L->vecs + i * d, d), L->rows[i]);
        }
    } else {
        ivf_list_distances(m, q, L, next, d, s->ld);
        for (size_t j = 0; j < na; j++) {
            size_t i = s->lpos[j];
            vdb_topk_push(R, s->ld[i], L->rows[i]);
        }
    }
}

static void ivf_search_task(void *vctx, size_t task, size_t worker)
{
    ivf_search_ctx *c = vctx;
    const vdb_ivf *ivf = c->ivf;
    const size_t d = ivf->d, nl = ivf->n_lists;
    size_t q0 = task * IVF_QB;
    size_t nqb = c->nq - q0 < IVF_QB ? c->nq - q0 : IVF_QB;
    unsigned char *own = NULL, *base;
    if (worker < c->n_slots) {
        base = c->scratch + worker * c->scratch_per_worker;
    } else {
        /* The pool grew after the slots were sized (a concurrent vdb_threads_set_count). */
        base = own = malloc(c->scratch_per_worker);
        if (!base) {
            c->failed = 1;
            return;
        }
    }
    ivf_scratch s = ivf_scratch_at(base, c->nq < IVF_QB ? c->nq : IVF_QB, nl, c->max_list);
    vdb_distance_block(ivf_coarse_metric(ivf->metric), c->queries + q0 * d, nqb, ivf->centroids, nl, d,
                       s.coarse);
    for (size_t qi = 0; qi < nqb; qi++) {
        const float *q = c->queries + (q0 + qi) * d;
        const float *cd = s.coarse + qi * nl;
        vdb_topk H, R;
        vdb_topk_init(&H, c->n_probe, s.order_d, s.order_i);
        for (size_t l = 0; l < nl; l++) vdb_topk_push(&H, cd[l], (int64_t)l);
        size_t np = vdb_topk_sort(&H);
        vdb_topk_init(&R, c->k, c->out_dist + (q0 + qi) * c->k, c->out_rows + (q0 + qi) * c->k);
        for (size_t j = 0; j < np; j++)
            ivf_scan_list(c, &s, q, &ivf->lists[s.order_i[j]],
                          j + 1 < np ? &ivf->lists[s.order_i[j + 1]] : NULL, &R);
        if (R.size < c->k && np < nl) {
            /* Too few hits (small lists or a selective filter): continue in centroid order. */
            memset(s.scanned, 0, nl);
            for (size_t j = 0; j < np; j++) s.scanned[s.order_i[j]] = 1;
            vdb_topk_init(&H, nl, s.order_d, s.order_i);
            for (size_t l = 0; l < nl; l++) vdb_topk_push(&H, cd[l], (int64_t)l);
            size_t all = vdb_topk_sort(&H);
            for (size_t j = 0; j < all && R.size < c->k; j++) {
                size_t l = (size_t)s.order_i[j];
                if (s.scanned[l]) continue;
                ivf_scan_list(c, &s, q, &ivf->lists[l], NULL, &R);
            }
        }
        size_t got = vdb_topk_sort(&R);
        for (size_t j = got; j < c->k; j++) {
            R.dist[j] = INFINITY;
            R.rows[j] = -1;
        }
    }
    free(own);
}

int vdb_ivf_search(const vdb_ivf *ivf, const float *queries, size_t nq, size_t k, size_t n_probe,
                   const uint64_t *allow, size_t allow_len, float *out_dist, int64_t *out_rows)
{
    int rc = VDB_OK;
    unsigned char *scratch = NULL;
    if (nq == 0 || k == 0) goto cleanup;
    if (!ivf->trained) {
        rc = vdb_set_error(VDB_EINVAL, "IVF search needs a trained index");
        goto cleanup;
    }
    if (n_probe < 1) n_probe = 1;
    if (n_probe > ivf->n_lists) n_probe = ivf->n_lists;
    size_t max_list = 0;
    for (size_t l = 0; l < ivf->n_lists; l++)
        if (ivf->lists[l].n > max_list) max_list = ivf->lists[l].n;
    size_t per, total;
    size_t n_tasks = (nq + IVF_QB - 1) / IVF_QB;
    size_t workers = vdb_threads_count();
    if (workers > n_tasks) workers = n_tasks;
    if (ivf_scratch_size(nq < IVF_QB ? nq : IVF_QB, ivf->n_lists, max_list, &per) || ivf_mul(per, workers, &total)) {
        rc = vdb_set_error(VDB_ENOMEM, "IVF search scratch size overflows");
        goto cleanup;
    }
    scratch = malloc(total);
    if (!scratch) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for IVF search scratch (%zu bytes)", total);
        goto cleanup;
    }
    ivf_search_ctx ctx = {ivf, queries, nq, k, n_probe, allow, allow_len, out_dist, out_rows,
                          max_list, scratch, per, workers, 0};
    if (n_tasks == 1)
        ivf_search_task(&ctx, 0, 0); /* a small query stays on the calling thread */
    else
        vdb_parallel_for(n_tasks, ivf_search_task, &ctx);
    if (ctx.failed) rc = vdb_set_error(VDB_ENOMEM, "out of memory for IVF search scratch");
cleanup:
    free(scratch);
    return rc;
}

void vdb_ivf_probe_order(const vdb_ivf *ivf, const float *q, float *scratch, int64_t *order)
{
    vdb_topk H;
    vdb_distance_block(ivf_coarse_metric(ivf->metric), q, 1, ivf->centroids, ivf->n_lists, ivf->d, scratch);
    /* The heap sorts in place: rank copies of the distances so scratch can double as its buffer. */
    vdb_topk_init(&H, ivf->n_lists, scratch, order);
    for (size_t l = 0; l < ivf->n_lists; l++) {
        float dl = scratch[l]; /* the heap fills [0, l): entries from l on are still unranked */
        vdb_topk_push(&H, dl, (int64_t)l);
    }
    vdb_topk_sort(&H);
}

const int64_t *vdb_ivf_list_rows(const vdb_ivf *ivf, size_t l, size_t *n)
{
    *n = l < ivf->n_lists ? ivf->lists[l].n : 0;
    return *n ? ivf->lists[l].rows : NULL;
}

/* ---- Retrain. */

int vdb_ivf_retrain(vdb_ivf *ivf, size_t n_lists, uint64_t seed)
{
    int rc = VDB_OK;
    const size_t d = ivf->d, old_n = ivf->n_lists;
    size_t k = n_lists ? n_lists : old_n;
    size_t *idx = NULL, *counts = NULL, *offs = NULL;
    float *xs = NULL, *newc = NULL, *all_c = NULL;
    uint32_t *assign = NULL;
    ivf_list *all = NULL;
    vdb_kmeans_prepared newp = {0};
    size_t n = (size_t)ivf->n_vectors;
    if (k == 0 || k >= IVF_MAX_LISTS) {
        rc = vdb_set_error(VDB_EINVAL, "IVF retrain needs 1 <= n_lists < 2^31, got %zu", k);
        goto cleanup;
    }
    if (!ivf->trained) {
        rc = vdb_set_error(VDB_EINVAL, "IVF retrain needs a trained index");
        goto cleanup;
    }
    if (n < k) {
        rc = vdb_set_error(VDB_EINVAL, "fewer points than clusters: the IVF index holds %zu vectors, "
                                       "retrain asked for %zu lists", n, k);
        goto cleanup;
    }
    size_t m = n, cap, bytes;
    if (!ivf_mul(k, IVF_TRAIN_PER_LIST, &cap) && cap < n) m = cap;
    if (ivf_mul(m, d, &bytes) || ivf_mul(bytes, sizeof(float), &bytes) ||
        ivf_mul(k + old_n, d * sizeof(float), &cap)) {
        rc = vdb_set_error(VDB_ENOMEM, "IVF retrain sizes overflow");
        goto cleanup;
    }
    idx = malloc(m * sizeof *idx);
    xs = malloc(bytes);
    newc = malloc(k * d * sizeof(float));
    if (!idx || !xs || !newc) goto nomem;
    /* Sample by ordinal in ascending row order, so layout history does not matter. */
    vdb_kmeans_sample(n, m, seed, idx);
    size_t ord = 0, taken = 0;
    for (size_t r = 0; r < ivf->where_len && taken < m; r++) {
        uint64_t w = ivf->where[r];
        if (w == IVF_ABSENT) continue;
        if (ord++ == idx[taken]) {
            memcpy(xs + taken * d, ivf->lists[ivf_list_of(w)].vecs + ivf_pos_of(w) * d, d * sizeof(float));
            taken++;
        }
    }
    free(idx);
    idx = NULL;
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.seed = seed;
    p.max_points_per_centroid = IVF_TRAIN_PER_LIST;
    rc = vdb_kmeans_train(ivf->metric, xs, m, d, k, &p, newc, NULL);
    if (rc) goto cleanup;
    free(xs);
    xs = NULL;

    /* New list of every vector, per old list. */
    assign = malloc((n ? n : 1) * sizeof *assign);
    offs = malloc(old_n * sizeof *offs);
    counts = calloc(k, sizeof *counts);
    all = calloc(k + old_n, sizeof *all);
    all_c = malloc((k + old_n) * d * sizeof(float));
    if (!assign || !offs || !counts || !all || !all_c) goto nomem;
    rc = vdb_kmeans_prepare(ivf->metric, newc, k, d, &newp); /* packed once for every old list */
    if (rc) goto cleanup;
    size_t off = 0;
    for (size_t l = 0; l < old_n; l++) {
        const ivf_list *L = &ivf->lists[l];
        offs[l] = off;
        rc = vdb_kmeans_assign_prepared(&newp, L->vecs, L->n, assign + off, NULL);
        if (rc) goto cleanup;
        off += L->n;
    }
    for (size_t i = 0; i < n; i++) counts[assign[i]]++;

    /* From here the index changes: new lists first, then the old ones (emptied as we go). */
    memcpy(all_c, newc, k * d * sizeof(float));
    memcpy(all_c + k * d, ivf->centroids, old_n * d * sizeof(float));
    memcpy(all + k, ivf->lists, old_n * sizeof *all);
    size_t done = 0;
    int short_of_memory = 0;
    for (; done < old_n && !short_of_memory; done++) {
        ivf_list *O = &all[k + done];
        const uint32_t *a = assign + offs[done];
        for (size_t i = 0; i < O->n; i++) {
            ivf_list *N = &all[a[i]];
            if (N->cap == 0 && ivf_list_reserve(N, counts[a[i]], d)) {
                short_of_memory = 1;
                break;
            }
        }
        if (short_of_memory) break;
        for (size_t i = 0; i < O->n; i++) {
            ivf_list *N = &all[a[i]];
            memcpy(N->vecs + N->n * d, O->vecs + i * d, d * sizeof(float));
            N->rows[N->n++] = O->rows[i];
        }
        free(O->vecs);
        free(O->rows);
        memset(O, 0, sizeof *O);
    }
    /* Keep the new lists plus any old list not moved yet (only after a failed allocation). */
    size_t keep = k + (old_n - done);
    memmove(all + k, all + k + done, (old_n - done) * sizeof *all);
    memmove(all_c + k * d, all_c + (k + done) * d, (old_n - done) * d * sizeof(float));
    free(ivf->lists);
    free(ivf->centroids);
    ivf_list *shrunk = realloc(all, keep * sizeof *all);
    ivf->lists = shrunk ? shrunk : all;
    float *shrunk_c = realloc(all_c, keep * d * sizeof(float));
    ivf->centroids = shrunk_c ? shrunk_c : all_c;
    vdb_kmeans_prepared_free(&ivf->assigner);
    all = NULL;
    all_c = NULL;
    ivf->n_lists = keep;
    ivf_rebuild_where(ivf);
    ivf->n_train_points = n;
    ivf->added_since_train = 0;
    ivf->vectors_at_train = n;
    ivf->seed = seed;
    if (short_of_memory) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory while retraining the IVF index: it stays valid "
                                       "with %zu new and %zu old lists", k, old_n - done);
    }
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory retraining the IVF index (%zu vectors, %zu lists)", n, k);
cleanup:
    vdb_kmeans_prepared_free(&newp);
    free(idx);
    free(xs);
    free(newc);
    free(assign);
    free(offs);
    free(counts);
    free(all);
    free(all_c);
    return rc;
}

/* ---- Renumber. */

int vdb_ivf_renumber(vdb_ivf *ivf, const int64_t *old_to_new, size_t n_old)
{
    int rc = VDB_OK;
    uint64_t *nw = NULL;
    int64_t max_new = -1;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) {
            int64_t r = L->rows[i];
            if ((uint64_t)r >= n_old) {
                rc = vdb_set_error(VDB_EINVAL, "IVF renumber: row %lld is not covered by the map of %zu rows",
                                   (long long)r, n_old);
                goto cleanup;
            }
            int64_t nr = old_to_new[r];
            if (nr < -1 || nr >= VDB_IVF_MAX_ROW) {
                rc = vdb_set_error(VDB_EINVAL, "IVF renumber: row %lld maps to %lld, expected -1 or 0 <= row < 2^48",
                                   (long long)r, (long long)nr);
                goto cleanup;
            }
            if (nr > max_new) max_new = nr;
        }
    }
    size_t len = (size_t)(max_new + 1), bytes;
    if (ivf_mul(len ? len : 1, sizeof *nw, &bytes)) goto nomem;
    nw = malloc(bytes);
    if (!nw) goto nomem;
    for (size_t i = 0; i < len; i++) nw[i] = IVF_ABSENT;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        size_t pos = 0;
        for (size_t i = 0; i < L->n; i++) {
            int64_t nr = old_to_new[L->rows[i]];
            if (nr < 0) continue;
            if (nw[nr] != IVF_ABSENT) {
                rc = vdb_set_error(VDB_EINVAL, "IVF renumber: two rows map to row %lld", (long long)nr);
                goto cleanup;
            }
            nw[nr] = ivf_pack(l, pos++);
        }
    }
    /* Validated: apply (cannot fail). Stable compaction keeps list order. */
    int64_t total = 0;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        ivf_list *L = &ivf->lists[l];
        size_t w = 0;
        for (size_t i = 0; i < L->n; i++) {
            int64_t nr = old_to_new[L->rows[i]];
            if (nr < 0) continue;
            if (w != i) memcpy(L->vecs + w * ivf->d, L->vecs + i * ivf->d, ivf->d * sizeof(float));
            L->rows[w++] = nr;
        }
        L->n = w;
        total += (int64_t)w;
        ivf_list_shrink(L, ivf->d);
    }
    free(ivf->where);
    ivf->where = nw;
    ivf->where_len = len;
    ivf->n_vectors = total;
    nw = NULL;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory renumbering the IVF index");
cleanup:
    free(nw);
    return rc;
}

/* ---- Persistence. */

typedef struct {
    int fd;
    const char *path;
    uint32_t crc;
    uint64_t written;
    size_t len;
    uint8_t buf[1 << 16];
} ivf_writer;

static int ivf_write_all(ivf_writer *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    w->crc = vdb_crc32c(w->crc, p, n);
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t got = write(w->fd, b, chunk);
        if (got < 0) {
            if (errno == EINTR) continue;
            return vdb_set_io_error(errno, "writing IVF index file '%s' failed: %s", w->path, strerror(errno));
        }
        b += got;
        n -= (size_t)got;
        w->written += (uint64_t)got;
    }
    return VDB_OK;
}

static int ivf_flush(ivf_writer *w)
{
    int rc = ivf_write_all(w, w->buf, w->len);
    w->len = 0;
    return rc;
}

static int ivf_put(ivf_writer *w, const void *p, size_t n)
{
    if (n == 0) return VDB_OK; /* p may be NULL for an empty list */
    if (n > sizeof w->buf / 2) {
        int rc = ivf_flush(w);
        return rc ? rc : ivf_write_all(w, p, n);
    }
    if (w->len + n > sizeof w->buf) {
        int rc = ivf_flush(w);
        if (rc) return rc;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return VDB_OK;
}

static int ivf_put_u64(ivf_writer *w, uint64_t v)
{
    uint8_t t[8];
    vdb_put_u64(t, v);
    return ivf_put(w, t, 8);
}

/* Arrays of 4- or 8-byte little-endian values: written as is on little-endian hosts. */
static int ivf_put_f32s(ivf_writer *w, const float *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        uint8_t t[4];
        memcpy(&u, v + i, 4);
        vdb_put_u32(t, u);
        int rc = ivf_put(w, t, 4);
        if (rc) return rc;
    }
    return VDB_OK;
#else
    return ivf_put(w, v, n * sizeof(float));
#endif
}

static int ivf_put_i64s(ivf_writer *w, const int64_t *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) {
        int rc = ivf_put_u64(w, (uint64_t)v[i]);
        if (rc) return rc;
    }
    return VDB_OK;
#else
    return ivf_put(w, v, n * sizeof(int64_t));
#endif
}

int vdb_ivf_write(const vdb_ivf *ivf, const char *path, uint64_t *bytes_written)
{
    int rc = VDB_OK;
    size_t end = ivf->where_len;
    while (end > 0 && ivf->where[end - 1] == IVF_ABSENT) end--;
    if ((uint64_t)end > ivf_file_row_limit((uint64_t)ivf->n_vectors))
        return vdb_set_error(VDB_EINVAL, "cannot write IVF index file '%s': row %zu is too large for %lld "
                                         "vectors (rows must be below 2 * vectors + 1024); renumber first",
                             path, end - 1, (long long)ivf->n_vectors);
    ivf_writer *w = malloc(sizeof *w);
    if (!w) return vdb_set_error(VDB_ENOMEM, "out of memory writing IVF index file '%s'", path);
    w->path = path;
    w->crc = 0;
    w->written = 0;
    w->len = 0;
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = vdb_set_io_error(errno, "cannot create IVF index file '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    const size_t d = ivf->d;
    uint64_t payload = (uint64_t)ivf->n_lists * d * 4;
    for (size_t l = 0; l < ivf->n_lists; l++) payload += 8 + (uint64_t)ivf->lists[l].n * (8 + 4 * (uint64_t)d);
    uint8_t h[IVF_HEADER_LEN];
    memcpy(h, IVF_MAGIC, 8);
    vdb_put_u32(h + 8, IVF_VERSION);
    vdb_put_u32(h + 12, (uint32_t)ivf->metric);
    vdb_put_u64(h + 16, d);
    vdb_put_u64(h + 24, ivf->n_lists);
    vdb_put_u64(h + 32, (uint64_t)ivf->n_vectors);
    vdb_put_u64(h + 40, payload);
    vdb_put_u64(h + 48, (uint64_t)ivf->trained);
    vdb_put_u64(h + 56, ivf->n_train_points);
    vdb_put_u64(h + 64, ivf->added_since_train);
    vdb_put_u64(h + 72, ivf->seed);
    vdb_put_u64(h + 80, ivf->vectors_at_train);
    if ((rc = ivf_put(w, h, sizeof h))) goto cleanup;
    if ((rc = ivf_put_f32s(w, ivf->centroids, ivf->n_lists * d))) goto cleanup;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        if ((rc = ivf_put_u64(w, L->n))) goto cleanup;
        if ((rc = ivf_put_i64s(w, L->rows, L->n))) goto cleanup;
        if ((rc = ivf_put_f32s(w, L->vecs, L->n * d))) goto cleanup;
    }
    if ((rc = ivf_flush(w))) goto cleanup;
    uint8_t t[4];
    vdb_put_u32(t, w->crc);
    if ((rc = ivf_write_all(w, t, 4))) goto cleanup;
    if (fdatasync(w->fd) != 0) {
        rc = vdb_set_io_error(errno, "fdatasync of IVF index file '%s' failed: %s", path, strerror(errno));
        goto cleanup;
    }
    if (bytes_written) *bytes_written = w->written;
cleanup:
    if (w->fd >= 0) {
        if (close(w->fd) != 0 && rc == VDB_OK)
            rc = vdb_set_io_error(errno, "closing IVF index file '%s' failed: %s", path, strerror(errno));
        if (rc != VDB_OK) unlink(path); /* never leave a partial file behind */
    }
    free(w);
    return rc;
}

typedef struct {
    int fd;
    const char *path;
    uint32_t crc;
} ivf_reader;

static int ivf_read_exact(ivf_reader *r, void *p, size_t n)
{
    uint8_t *b = p;
    size_t left = n;
    while (left > 0) {
        size_t chunk = left > ((size_t)1 << 30) ? (size_t)1 << 30 : left;
        ssize_t got = read(r->fd, b, chunk);
        if (got < 0) {
            if (errno == EINTR) continue;
            return vdb_set_io_error(errno, "reading IVF index file '%s' failed: %s", r->path, strerror(errno));
        }
        if (got == 0) return vdb_set_error(VDB_ECORRUPT, "IVF index file '%s' is truncated", r->path);
        b += got;
        left -= (size_t)got;
    }
    r->crc = vdb_crc32c(r->crc, p, n);
    return VDB_OK;
}

static void ivf_fix_f32s(float *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) {
        uint32_t u = vdb_get_u32((const uint8_t *)(v + i));
        memcpy(v + i, &u, 4);
    }
#else
    (void)v;
    (void)n;
#endif
}

static void ivf_fix_i64s(int64_t *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) v[i] = (int64_t)vdb_get_u64((const uint8_t *)(v + i));
#else
    (void)v;
    (void)n;
#endif
}

#define IVF_CORRUPT(...)                                 \
    do {                                                 \
        rc = vdb_set_error(VDB_ECORRUPT, __VA_ARGS__);   \
        goto cleanup;                                    \
    } while (0)

int vdb_ivf_read(const char *path, vdb_ivf **out)
{
    int rc = VDB_OK;
    vdb_ivf *ivf = NULL;
    ivf_reader r = {-1, path, 0};
    *out = NULL;
    r.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0) {
        rc = vdb_set_error(errno == ENOENT ? VDB_ENOTFOUND : VDB_EIO, "cannot open IVF index file '%s': %s",
                           path, strerror(errno));
        goto cleanup;
    }
    struct stat st;
    if (fstat(r.fd, &st) != 0) {
        rc = vdb_set_io_error(errno, "cannot stat IVF index file '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < IVF_HEADER_LEN + 4)
        IVF_CORRUPT("IVF index file '%s' is truncated: %llu bytes, a header alone is %d", path,
                    (unsigned long long)size, IVF_HEADER_LEN + 4);
    uint8_t h[IVF_HEADER_LEN];
    if ((rc = ivf_read_exact(&r, h, sizeof h))) goto cleanup;
    if (memcmp(h, IVF_MAGIC, 8) != 0) IVF_CORRUPT("file '%s' is not an IVF index (bad magic)", path);
    uint32_t version = vdb_get_u32(h + 8), metric = vdb_get_u32(h + 12);
    uint64_t d = vdb_get_u64(h + 16), n_lists = vdb_get_u64(h + 24), n_vectors = vdb_get_u64(h + 32);
    uint64_t payload = vdb_get_u64(h + 40), trained = vdb_get_u64(h + 48);
    if (version > IVF_VERSION)
        IVF_CORRUPT("IVF index file '%s' has format version %u; this build reads version %u (upgrade vectordb)",
                    path, version, IVF_VERSION);
    if (version != IVF_VERSION) IVF_CORRUPT("IVF index file '%s' has invalid format version %u", path, version);
    if (!ivf_metric_ok((vdb_metric)metric) || d == 0 || d > IVF_MAX_DIM || n_lists == 0 ||
        n_lists >= IVF_MAX_LISTS || trained > 1 || n_vectors > (uint64_t)VDB_IVF_MAX_ROW ||
        (!trained && n_vectors != 0))
        IVF_CORRUPT("IVF index file '%s' has an invalid header (metric %u, d %llu, %llu lists, %llu vectors)",
                    path, metric, (unsigned long long)d, (unsigned long long)n_lists,
                    (unsigned long long)n_vectors);
    /* Bounds above keep these products below 2^64: d < 2^25, n_lists < 2^31, n_vectors <= 2^48
     * would overflow n_vectors * 4d, so check that one against the file size first. */
    if (payload != size - IVF_HEADER_LEN - 4)
        IVF_CORRUPT("IVF index file '%s' is %llu bytes but its header says %llu", path,
                    (unsigned long long)size, (unsigned long long)(payload + IVF_HEADER_LEN + 4));
    uint64_t fixed = n_lists * d * 4 + n_lists * 8;
    uint64_t per_vec = 8 + 4 * d;
    if (fixed > payload || n_vectors > (payload - fixed) / per_vec || fixed + n_vectors * per_vec != payload)
        IVF_CORRUPT("IVF index file '%s': payload of %llu bytes does not match %llu lists x %llu dims and %llu vectors",
                    path, (unsigned long long)payload, (unsigned long long)n_lists, (unsigned long long)d,
                    (unsigned long long)n_vectors);
    if ((rc = vdb_ivf_create((size_t)d, (vdb_metric)metric, (size_t)n_lists, &ivf))) goto cleanup;
    if ((rc = ivf_read_exact(&r, ivf->centroids, (size_t)(n_lists * d * 4)))) goto cleanup;
    ivf_fix_f32s(ivf->centroids, (size_t)(n_lists * d));
    uint64_t seen = 0;
    for (size_t l = 0; l < (size_t)n_lists; l++) {
        uint8_t t[8];
        if ((rc = ivf_read_exact(&r, t, 8))) goto cleanup;
        uint64_t n = vdb_get_u64(t);
        if (n > n_vectors - seen || n > IVF_MAX_LIST_LEN)
            IVF_CORRUPT("IVF index file '%s': list %zu claims %llu vectors, only %llu remain", path, l,
                        (unsigned long long)n, (unsigned long long)(n_vectors - seen));
        ivf_list *L = &ivf->lists[l];
        if (n) {
            L->vecs = malloc((size_t)n * (size_t)d * sizeof(float)); /* bounded by the file size */
            L->rows = malloc((size_t)n * sizeof(int64_t));
            if (!L->vecs || !L->rows) {
                rc = vdb_set_error(VDB_ENOMEM, "out of memory reading IVF index file '%s'", path);
                goto cleanup;
            }
            L->cap = (size_t)n;
            if ((rc = ivf_read_exact(&r, L->rows, (size_t)n * sizeof(int64_t)))) goto cleanup;
            if ((rc = ivf_read_exact(&r, L->vecs, (size_t)(n * d) * sizeof(float)))) goto cleanup;
            ivf_fix_i64s(L->rows, (size_t)n);
            ivf_fix_f32s(L->vecs, (size_t)(n * d));
            L->n = (size_t)n;
        }
        seen += n;
    }
    if (seen != n_vectors)
        IVF_CORRUPT("IVF index file '%s': lists hold %llu vectors, header says %llu", path,
                    (unsigned long long)seen, (unsigned long long)n_vectors);
    uint32_t want = r.crc;
    uint8_t t[4];
    if ((rc = ivf_read_exact(&r, t, 4))) goto cleanup;
    if (vdb_get_u32(t) != want) IVF_CORRUPT("IVF index file '%s' failed its CRC-32C check", path);
    /* Checksum good; still check the rows before sizing the map with them. */
    int64_t max_row = -1;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) {
            if (L->rows[i] < 0 || (uint64_t)L->rows[i] >= ivf_file_row_limit(n_vectors))
                IVF_CORRUPT("IVF index file '%s': row %lld out of range for %llu vectors", path,
                            (long long)L->rows[i], (unsigned long long)n_vectors);
            if (L->rows[i] > max_row) max_row = L->rows[i];
        }
    }
    if (ivf_where_reserve(ivf, (size_t)(max_row + 1))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading IVF index file '%s'", path);
        goto cleanup;
    }
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) {
            if (ivf->where[L->rows[i]] != IVF_ABSENT)
                IVF_CORRUPT("IVF index file '%s': row %lld appears twice", path, (long long)L->rows[i]);
            ivf->where[L->rows[i]] = ivf_pack(l, i);
        }
    }
    ivf->n_vectors = (int64_t)n_vectors;
    ivf->trained = (int)trained;
    ivf->n_train_points = vdb_get_u64(h + 56);
    ivf->added_since_train = vdb_get_u64(h + 64);
    ivf->seed = vdb_get_u64(h + 72);
    ivf->vectors_at_train = vdb_get_u64(h + 80);
    *out = ivf;
    ivf = NULL;
cleanup:
    if (r.fd >= 0) close(r.fd);
    vdb_ivf_free(ivf);
    return rc;
}

/* ---- Stats and accessors. */

void vdb_ivf_stats_get(const vdb_ivf *ivf, vdb_ivf_stats *out)
{
    memset(out, 0, sizeof *out);
    out->d = ivf->d;
    out->metric = ivf->metric;
    out->n_lists = ivf->n_lists;
    out->trained = ivf->trained;
    out->n_vectors = ivf->n_vectors;
    out->n_train_points = ivf->n_train_points;
    out->added_since_train = ivf->added_since_train;
    out->seed = ivf->seed;
    out->vectors_at_train = ivf->vectors_at_train;
    size_t bytes = sizeof *ivf + ivf->n_lists * (sizeof(ivf_list) + ivf->d * sizeof(float)) +
                   ivf->where_len * sizeof(uint64_t);
    out->list_min = SIZE_MAX;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        if (L->n < out->list_min) out->list_min = L->n;
        if (L->n > out->list_max) out->list_max = L->n;
        out->n_empty_lists += L->n == 0;
        bytes += L->cap * (ivf->d * sizeof(float) + sizeof(int64_t));
    }
    out->list_mean = (double)ivf->n_vectors / (double)ivf->n_lists;
    out->bytes_in_memory = bytes;
}

size_t vdb_ivf_dim(const vdb_ivf *ivf) { return ivf->d; }
vdb_metric vdb_ivf_metric(const vdb_ivf *ivf) { return ivf->metric; }
size_t vdb_ivf_n_lists(const vdb_ivf *ivf) { return ivf->n_lists; }
int vdb_ivf_is_trained(const vdb_ivf *ivf) { return ivf->trained; }
int64_t vdb_ivf_count(const vdb_ivf *ivf) { return ivf->n_vectors; }
size_t vdb_ivf_list_size(const vdb_ivf *ivf, size_t list) { return list < ivf->n_lists ? ivf->lists[list].n : 0; }
const float *vdb_ivf_centroids(const vdb_ivf *ivf) { return ivf->trained ? ivf->centroids : NULL; }
