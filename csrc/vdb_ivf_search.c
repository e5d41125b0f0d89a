/* vdb_ivf_search — the IVF index's probed search: rank the lists per query, scan the n_probe
 * nearest with prefetch, probe further while a filter leaves fewer than k hits; batches of
 * queries ordered by nearest list, split over the worker pool, a task's pq4 list scans shared by
 * its queries. See vdb_ivf.h. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_error.h"
#include "vdb_ivf_internal.h"
#include "vdb_threads.h"
#include "vdb_topk.h"

#define IVF_QB 16                              /* queries per search task */
#define IVF_BATCH_COARSE_BYTES (8u << 20)      /* a batch is searched in chunks whose centroid distances fill at most this */
#define IVF_SCAN_CHUNK_BYTES 1024              /* list scan: rows per kernel call, in bytes */
#define IVF_PREFETCH_BYTES 4096                /* list scan: prefetch distance (tuned at 100k and 1M x 128) */

/* Spherical metrics rank lists by dot product with unit centroids. */
static vdb_metric ivf_coarse_metric(vdb_metric m) { return m == VDB_METRIC_L2 ? VDB_METRIC_L2 : VDB_METRIC_IP; }

typedef struct {
    const vdb_ivf *ivf;
    const float *queries;
    size_t q0, nq, qb;   /* the queries [q0, q0 + nq) searched now; scratch sized for qb a task */
    size_t k, n_probe;
    const uint64_t *allow;
    size_t allow_len;
    float *out_dist;
    int64_t *out_rows;
    size_t max_list;
    /* per-worker scratch, one block each */
    unsigned char *scratch;
    size_t scratch_per_worker;
    size_t n_slots; /* workers with a scratch slot */
    /* A batch (see vdb_ivf_search): the centroid distances of queries q0 + i at coarse + i * n_lists,
     * key[i] = the nearest list, searched in the order perm (local numbers). NULL: each task
     * computes its own block's distances and searches its queries in turn. */
    float *coarse;
    uint32_t *key, *perm;
    _Atomic int failed; /* the first failure's code (VDB_ENOMEM, VDB_ECORRUPT: a mapped chunk) */
} ivf_search_ctx;

static void ivf_fail(const ivf_search_ctx *c, int rc)
{
    int none = 0;
    atomic_compare_exchange_strong((_Atomic int *)&c->failed, &none, rc); /* ctx is never const */
}

typedef struct {
    float *coarse;   /* min(nq, IVF_QB) * n_lists */
    float *order_d;  /* n_lists */
    int64_t *order_i;/* n_lists */
    float *ld;       /* max_list */
    uint32_t *lpos;  /* max_list */
    unsigned char *scanned; /* n_lists */
    float *pad;      /* 4 * d: ivf_coarse's tail queries */
    float *pad_out;  /* 4 * n_lists: their distances */
} ivf_scratch;

static size_t ivf_align(size_t x) { return (x + 63) & ~(size_t)63; }

static int ivf_scratch_size(size_t qb, size_t n_lists, size_t max_list, size_t d, size_t *out)
{
    size_t a, b, c, e, f, g, h, i;
    if (ivf_mul(qb * sizeof(float), n_lists, &a) || ivf_mul(n_lists, sizeof(float), &b) ||
        ivf_mul(n_lists, sizeof(int64_t), &c) || ivf_mul(max_list, sizeof(float), &e) ||
        ivf_mul(max_list, sizeof(uint32_t), &f) || ivf_mul(4 * sizeof(float), d, &h) ||
        ivf_mul(4 * sizeof(float), n_lists, &i))
        return -1;
    g = n_lists;
    *out = ivf_align(a) + ivf_align(b) + ivf_align(c) + ivf_align(e) + ivf_align(f) + ivf_align(g) + ivf_align(h) +
           ivf_align(i);
    return 0;
}

static ivf_scratch ivf_scratch_at(unsigned char *base, size_t qb, size_t n_lists, size_t max_list, size_t d)
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
    p += ivf_align(n_lists);
    s.pad = (float *)p;
    p += ivf_align(4 * sizeof(float) * d);
    s.pad_out = (float *)p;
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
    if (ivf_verify_vecs(c->ivf, L, 0, L->n)) {
        ivf_fail(c, VDB_ECORRUPT);
        return;
    }
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

/* Search through the pq4 codes: scan every probed list's codes (vdb_pq4_scan), estimate each
 * distance with margins (the error estimates eps_hi / eps_lo |q| |r - r^| of vdb_pq4.h plus the
 * table's rounding, at most m step / 2), keep the rows whose lower estimate is below the k-th
 * smallest upper estimate (and, once the k best upper estimates are re-ranked early, below their k-th
 * exact distance), and re-rank them with the float32 kernel in order of lower estimate until the
 * next one cannot beat the k-th exact distance. So the rows re-ranked adapt to k and to each
 * vector's code error, and the distances returned are the float32 ones. */
typedef struct {
    float lb;
    uint32_t l, pos;
} ivf_cand;

typedef struct {
    float *lut;
    uint8_t *lut8;
    uint16_t *sums;
    uint32_t *surv;
    ivf_cand *cand, *sorted; /* as collected; grouped by bucket of lower bound */
    uint32_t *bucket;        /* IVF_PQ_BUCKETS + 2 starts */
    float *ub_d;
    int64_t *ub_i;
} ivf_pq_scratch;

#define IVF_PQ_BUCKETS 4096 /* at most; ~4 candidates a bucket */
#define IVF_PQ_RERANK_AHEAD 2 /* rows prefetched ahead of the one re-ranked */

static _Thread_local size_t ivf_reranked;

size_t vdb_ivf_last_reranked(void) { return ivf_reranked; }

static int ivf_cand_before(const ivf_cand *a, const ivf_cand *b)
{
    if (a->lb != b->lb) return a->lb < b->lb;
    if (a->l != b->l) return a->l < b->l;
    return a->pos < b->pos;
}

/* Sorts cand[0, n) by ivf_cand_before: insertion sort for the few a bucket usually holds. */
static int ivf_cand_cmp(const void *a, const void *b)
{
    return ivf_cand_before(a, b) ? -1 : ivf_cand_before(b, a) ? 1 : 0;
}

static void ivf_cand_sort(ivf_cand *cand, size_t n)
{
    if (n > 24) {
        qsort(cand, n, sizeof *cand, ivf_cand_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        ivf_cand x = cand[i];
        size_t j = i;
        for (; j > 0 && ivf_cand_before(&x, &cand[j - 1]); j--) cand[j] = cand[j - 1];
        cand[j] = x;
    }
}

static inline void ivf_prefetch_row(const float *row, size_t d)
{
    for (size_t b = 0; b < d * sizeof(float); b += 64) __builtin_prefetch((const char *)row + b);
}

/* Bucket of a lower bound in [lo, hi] among nb (monotone in lb): (lb - lo) * scale clamped to [0, nb - 1]
 * (a NaN to 0), without branches. */
static inline size_t ivf_bucket_of(float lb, float lo, float scale, size_t nb)
{
    float t = (lb - lo) * scale;
    t = t > 0.0f ? t : 0.0f;
    const float top = (float)(nb - 1);
    return (size_t)(uint32_t)(t < top ? t : top);
}

/* Groups the candidates cand[0, n) with lower bound <= hi (and >= lo) into ps->sorted by bucket of
 * lower bound, buckets in ascending order, dropping the others; sets *nb to the bucket count
 * (ps->bucket[b] starts bucket b) and returns how many were kept. Only the buckets the re-rank
 * reaches are sorted (ivf_cand_sort), so ordering the many candidates it never reaches costs a few
 * linear passes, where a heap paid a branchy sift for each. The kept ones are first compacted in
 * place (no branch: about half are kept, a coin toss): counting the dropped ones in one more bucket
 * made a chain of increments of one counter through memory, 4x slower (~10 us a query at n_probe 36
 * on MiniLM). Order within a bucket is cand's. */
static size_t ivf_cand_bucket(ivf_pq_scratch *ps, size_t n, float lo, float hi, size_t *nb_out)
{
    ivf_cand *cand = ps->cand;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const ivf_cand x = cand[i];
        cand[m] = x;
        m += x.lb <= hi; /* false for NaN (a seeded candidate) */
    }
    size_t nb = 1;
    while (nb * 4 < n && nb < IVF_PQ_BUCKETS) nb *= 2;
    const float scale = hi > lo ? (float)nb / (hi - lo) : 0.0f;
    uint32_t *start = ps->bucket;
    memset(start, 0, (nb + 1) * sizeof *start);
    /* the bucket is computed twice (count, then place): cheaper than storing it */
    for (size_t i = 0; i < m; i++) start[ivf_bucket_of(cand[i].lb, lo, scale, nb) + 1]++;
    for (size_t b = 0; b < nb; b++) start[b + 1] += start[b];
    for (size_t i = 0; i < m; i++) ps->sorted[start[ivf_bucket_of(cand[i].lb, lo, scale, nb)]++] = cand[i];
    /* start[b] now ends bucket b: shift back to starts */
    for (size_t b = nb; b > 0; b--) start[b] = start[b - 1];
    start[0] = 0;
    *nb_out = nb;
    return m;
}

/* One scratch block per thread, kept between searches: the candidate array can pass the mmap
 * threshold of malloc, and mapping, faulting in and unmapping it for every query cost more than
 * the scan (measured ~40 us a query at n_probe 32 on 78k x 384). It only grows (to the largest
 * search the thread ran: 12 bytes per probed vector) and is freed when the thread exits. */
typedef struct {
    unsigned char *p[2]; /* 0: a query's scratch; 1: a batch task's shared scans (ivf_pq_batch) */
    size_t size[2];
} ivf_pq_blocks;

static pthread_key_t ivf_pq_key;
static pthread_once_t ivf_pq_once = PTHREAD_ONCE_INIT;
static _Thread_local ivf_pq_blocks *ivf_pq_tls;

static void ivf_pq_blocks_free(void *v)
{
    ivf_pq_blocks *b = v;
    free(b->p[0]);
    free(b->p[1]);
    free(b);
}

static void ivf_pq_key_make(void) { pthread_key_create(&ivf_pq_key, ivf_pq_blocks_free); }

static unsigned char *ivf_pq_thread_block(int slot, size_t size)
{
    if (ivf_pq_tls && size <= ivf_pq_tls->size[slot]) return ivf_pq_tls->p[slot];
    pthread_once(&ivf_pq_once, ivf_pq_key_make);
    if (!ivf_pq_tls) {
        if (!(ivf_pq_tls = calloc(1, sizeof *ivf_pq_tls))) return NULL;
        pthread_setspecific(ivf_pq_key, ivf_pq_tls); /* frees the blocks at thread exit */
    }
    unsigned char *p = malloc(size + size / 4);
    if (!p) return NULL;
    free(ivf_pq_tls->p[slot]);
    ivf_pq_tls->p[slot] = p;
    ivf_pq_tls->size[slot] = size + size / 4;
    return p;
}

/* Scratch of one search task, in the thread's block; NULL when out of memory. */
static ivf_pq_scratch *ivf_pq_scratch_new(const vdb_ivf *ivf, size_t k, size_t n_probe, size_t max_list)
{
    size_t m_pad = ivf->pq->m_pad, ncand = n_probe * max_list, total = 0;
    if (ncand / (max_list ? max_list : 1) != n_probe || ncand > (size_t)ivf->n_vectors) ncand = (size_t)ivf->n_vectors;
    size_t nsum = (max_list + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * VDB_PQ4_BLOCK;
    size_t sz[9] = {sizeof(ivf_pq_scratch), m_pad * 16 * sizeof(float), m_pad * 16, nsum * sizeof(uint16_t),
                    (ncand ? ncand : 1) * sizeof(ivf_cand), k * (sizeof(float) + sizeof(int64_t)),
                    nsum * sizeof(uint32_t), (ncand ? ncand : 1) * sizeof(ivf_cand),
                    (IVF_PQ_BUCKETS + 2) * sizeof(uint32_t)};
    for (int i = 0; i < 9; i++) total += ivf_align(sz[i]);
    unsigned char *p = ivf_pq_thread_block(0, total);
    if (!p) return NULL;
    ivf_pq_scratch *s = (ivf_pq_scratch *)p;
    p += ivf_align(sz[0]);
    s->lut = (float *)p;
    p += ivf_align(sz[1]);
    s->lut8 = p;
    p += ivf_align(sz[2]);
    s->sums = (uint16_t *)p;
    p += ivf_align(sz[3]);
    s->cand = (ivf_cand *)p;
    p += ivf_align(sz[4]);
    s->ub_i = (int64_t *)p;
    s->ub_d = (float *)(p + k * sizeof(int64_t));
    p += ivf_align(sz[5]);
    s->surv = (uint32_t *)p;
    p += ivf_align(sz[6]);
    s->sorted = (ivf_cand *)p;
    p += ivf_align(sz[7]);
    s->bucket = (uint32_t *)p;
    return s;
}

/* A batch query's table and list sums, made for several queries at once (ivf_pq_batch). */
typedef struct {
    double step, bias;         /* of its quantized table */
    uint16_t *const *sums;     /* sums[j]: vdb_pq4_scan's sums of list order[j] for this query */
} ivf_pq_pre;

/* 0: this query cannot use the codes (cosine with a zero query): the caller scans float32. pre
 * (NULL: a query alone) gives the table's step and bias and the sums already scanned. */
static int ivf_pq_search_one(const ivf_search_ctx *c, ivf_pq_scratch *ps, const float *q, const float *cd,
                             const int64_t *order, size_t np, vdb_topk *R, const ivf_pq_pre *pre)
{
    const vdb_ivf *ivf = c->ivf;
    const vdb_pq4 *pq = ivf->pq;
    const size_t d = ivf->d;
    const vdb_metric metric = ivf->metric;
    double qq = 0;
    for (size_t t = 0; t < d; t++) qq += (double)q[t] * q[t];
    const float qn = (float)sqrt(qq);
    if (metric == VDB_METRIC_COSINE && !(qn > 0)) return 0;
    const float q_aa = vdb_distance_norm2(metric, q, d); /* for the re-rank's pairs: |q| once, not per row */
    double step, bias;
    if (pre) {
        step = pre->step, bias = pre->bias;
    } else {
        vdb_pq4_lut(pq, q, ps->lut);
        vdb_pq4_lut_quantize(ps->lut, pq->m_pad, ps->lut8, &step, &bias);
    }
    /* <q, r^> ~= bias + step * sum; each estimate is A + B * sum (+ aux for L2). The distance falls
     * as <q, e> grows: lower estimate est - (C err + D), upper est + (Cu err + D) (vdb_pq4.h). */
    const float lm = (float)(pq->m * step / 2) * 1.0001f + 1e-6f * (float)fabs(bias);
    const float eh = ivf->pq_eps ? ivf->pq_eps[np - 1] : pq->eps_hi; /* np >= 1 */
    float B, C, Cu, D;
    if (metric == VDB_METRIC_L2) {
        B = (float)(-2 * step), C = 2 * eh * qn, Cu = 2 * pq->eps_lo * qn, D = 2 * lm;
    } else if (metric == VDB_METRIC_IP) {
        B = (float)-step, C = eh * qn, Cu = pq->eps_lo * qn, D = lm;
    } else {
        /* A takes <q, c> from cd = 1 - <q, c> rounded to float (an error up to 2^-24 (1 + |q|)
         * whatever <q, c> is): divided by |q| below, it matters for a small query */
        B = (float)(-step / qn), C = eh, Cu = pq->eps_lo, D = (lm + 0x1p-23f * (1.0f + qn)) / qn;
    }
    for (size_t j = 0; j < np; j++)
        if (ivf_verify_codes(ivf, &ivf->lists[order[j]])) { /* mapped codes: checked on first use */
            ivf_fail(c, VDB_ECORRUPT);
            return 1;
        }
    vdb_topk U;
    vdb_topk_init(&U, c->k, ps->ub_d, ps->ub_i);
    /* thr: the cut a lower bound must pass, min(ubk, the k-th exact distance once seeded) */
    float ubk = INFINITY, thr = INFINITY, lo = INFINITY; /* lo: the smallest lower bound kept */
    size_t nc = 0, done = 0, next_seed = 0;
    int seeded = 0;
    for (size_t j = 0; j < np; j++) {
        const size_t l = (size_t)order[j];
        const ivf_list *L = &ivf->lists[l];
        if (L->n == 0) continue;
        float A;
        if (metric == VDB_METRIC_L2) A = (float)(cd[l] - 2 * bias);
        else if (metric == VDB_METRIC_IP) A = (float)(cd[l] - bias);
        else A = (float)(1.0 - (1.0 - cd[l] + bias) / qn); /* cd = 1 - <q, c> for unit centroids */
        const int l2 = metric == VDB_METRIC_L2;
        /* Sums below smin cannot pass thr whatever their error: the scan kernel compares them in its
         * registers and hands back only the survivors. (L2's per-vector term varies: no list-wide
         * cut there.) */
        float cut = l2 ? -INFINITY : (A - D - C * L->qerr_max - thr) / -B;
        unsigned smin = !(cut > 0) ? 0 : cut >= 65536.0f ? 65536u : (unsigned)cut;
        if (smin > 0xFFFF) continue; /* the whole list is out */
        const size_t ns = pre ? vdb_pq4_cut(pre->sums[j], L->n, smin, ps->surv)
                              : vdb_pq4_scan_cut(L->codes, L->n, pq->m_pad, ps->lut8, smin, ps->sums, ps->surv);
        /* Branch-free but for the rare new upper bound: whether a survivor becomes a candidate is
         * a coin toss that the branch predictor loses. */
        const uint16_t *sums = pre ? pre->sums[j] : ps->sums;
        const uint32_t *surv = ps->surv;
        const float *qe = L->qerr, *qa = L->qaux;
        ivf_cand *cand = ps->cand;
        for (size_t si = 0; si < ns; si++) {
            const uint32_t i = surv[si];
            if (c->allow) {
                uint64_t r = (uint64_t)L->rows[i];
                if (!(r < c->allow_len && (c->allow[r >> 6] >> (r & 63) & 1))) continue;
            }
            const float est = A + B * (float)sums[i] + (l2 ? qa[i] : 0.0f);
            const float mg = C * qe[i] + D, ub = est + (Cu * qe[i] + D);
            const int keep = est - mg <= thr;
            cand[nc].lb = est - mg;
            cand[nc].l = (uint32_t)l;
            cand[nc].pos = i;
            if (ub < ubk) {
                vdb_topk_push(&U, ub, (int64_t)nc);
                ubk = vdb_topk_threshold(&U);
                thr = ubk < thr ? ubk : thr;
            }
            nc += keep;
        }
        if (U.size == c->k && (!seeded || j + 1 == next_seed)) {
            /* Seed the exact top k with the k best upper estimates so far (mostly from the nearest
             * list): their k-th exact distance bounds every later lower bound that matters, far
             * tighter than ubk, so most survivors of the later lists are cut at once. Seeding
             * again after 2, 4, 8, ... lists brings that cut down as the probed lists find nearer
             * vectors, at k rows at most each time (rows the final re-rank mostly reaches anyway).
             * A candidate re-ranked here leaves the candidates (NaN lower bound: skipped by later
             * seeds, dropped by the bucketing). U's entries index ps->cand; one not kept may have
             * been overwritten since by another candidate: re-ranking that one is merely early. */
            size_t fresh = 0;
            for (size_t e = 0; e < U.size; e++) {
                ivf_cand *cc = &ps->cand[U.rows[e]];
                if (isnan(cc->lb)) continue;
                ivf_prefetch_row(ivf->lists[cc->l].vecs + (size_t)cc->pos * d, d);
            }
            for (size_t e = 0; e < U.size; e++) {
                ivf_cand *cc = &ps->cand[U.rows[e]];
                if (isnan(cc->lb)) continue;
                const ivf_list *S = &ivf->lists[cc->l];
                if (ivf_verify_vecs(ivf, S, cc->pos, 1)) {
                    ivf_fail(c, VDB_ECORRUPT);
                    ivf_reranked = done;
                    return 1;
                }
                vdb_topk_push(R, vdb_distance_aa(metric, q, q_aa, S->vecs + (size_t)cc->pos * d, d), S->rows[cc->pos]);
                cc->lb = NAN;
                fresh++;
            }
            done += fresh;
            seeded = 1;
            next_seed = 2 * (j + 1);
            float rk = vdb_topk_threshold(R);
            thr = rk < thr ? rk : thr;
        }
    }
    /* lo: the smallest lower bound kept (a seeded candidate's NaN compares false), found here: in
     * the loop above it was a dependency chain through memory, per survivor */
    for (size_t i = 0; i < nc; i++) lo = ps->cand[i].lb < lo ? ps->cand[i].lb : lo;
    float hi = thr;
    if (!(hi < INFINITY)) /* fewer than k upper bounds: few candidates, all kept */
        for (size_t i = 0; i < nc; i++) hi = i == 0 || ps->cand[i].lb > hi ? ps->cand[i].lb : hi;
    size_t nb;
    const size_t w = nc ? ivf_cand_bucket(ps, nc, lo, hi, &nb) : 0;
    if (w > 0) {
        /* Re-rank in ascending lower bound until the next one cannot beat the k-th exact distance.
         * The order is known ahead, so the next rows are fetched while one is computed: they are
         * scattered over the probed lists, a few cache lines each that the hardware cannot predict. */
        const ivf_cand *sc = ps->sorted;
        ivf_cand_sort(ps->sorted, ps->bucket[1]); /* the first bucket, to fetch its first row now */
        size_t sorted_end = ps->bucket[1], bi = 1;
        ivf_prefetch_row(ivf->lists[sc[0].l].vecs + (size_t)sc[0].pos * d, d);
        for (size_t i = 0; i < w; i++) {
            const size_t ahead = i + IVF_PQ_RERANK_AHEAD;
            while (bi < nb && sorted_end <= (ahead < w ? ahead : w - 1)) {
                ivf_cand_sort(ps->sorted + ps->bucket[bi], ps->bucket[bi + 1] - ps->bucket[bi]);
                sorted_end = ps->bucket[++bi];
            }
            if (sc[i].lb > vdb_topk_threshold(R)) break;
            for (size_t a = i == 0 ? 1 : ahead; a <= ahead && a < w; a++)
                ivf_prefetch_row(ivf->lists[sc[a].l].vecs + (size_t)sc[a].pos * d, d);
            const ivf_list *L = &ivf->lists[sc[i].l];
            if (ivf_verify_vecs(ivf, L, sc[i].pos, 1)) {
                ivf_fail(c, VDB_ECORRUPT);
                break;
            }
            vdb_topk_push(R, vdb_distance_aa(metric, q, q_aa, L->vecs + (size_t)sc[i].pos * d, d), L->rows[sc[i].pos]);
            done++;
        }
    }
    ivf_reranked = done;
    return 1;
}

/* Centroid distances of nq queries into out (nq x n_lists), every query through the block
 * kernel's tiles of 4 queries, a remainder of 1-3 through vdb_distance_block_one (the tile's
 * arithmetic for one query) or, without it, padded with copies of its last query (pad: 4 d floats,
 * pad_out: 4 n_lists). A tile computes each query's distances alone (its tile mates change no bit)
 * and the lone-query batch kernel rounds differently: so a query probes the same lists and
 * estimates the same bounds alone as in any batch, near-ties included. */
static void ivf_coarse(const vdb_ivf *ivf, const float *qs, size_t nq, float *out, float *pad, float *pad_out)
{
    const size_t d = ivf->d, nl = ivf->n_lists, full = nq & ~(size_t)3, rest = nq - full;
    const vdb_metric cm = ivf_coarse_metric(ivf->metric);
    if (full) vdb_distance_block(cm, qs, full, ivf->centroids, nl, d, out);
    if (!rest) return;
    /* The rest one at a time, each as a tile gives it, at a quarter of a padded tile's work; a kernel
     * variant without that (-1: NEON) pads a tile with copies. */
    if (vdb_distance_block_one(cm, qs + full * d, ivf->centroids, nl, d, out + full * nl) == 0) {
        for (size_t j = 1; j < rest; j++)
            vdb_distance_block_one(cm, qs + (full + j) * d, ivf->centroids, nl, d, out + (full + j) * nl);
        return;
    }
    for (size_t j = 0; j < 4; j++) memcpy(pad + j * d, qs + (full + (j < rest ? j : rest - 1)) * d, d * sizeof(float));
    vdb_distance_block(cm, pad, 4, ivf->centroids, nl, d, pad_out);
    memcpy(out + full * nl, pad_out, rest * nl * sizeof(float));
}

/* Query blocking for a task's queries through the codes: each probed list's codes are scanned
 * once for every query of the task that probes it (vdb_pq4_scan_multi: a block's codes loaded and
 * split once for up to 4 tables), the sums kept; each query then runs alone over its sums
 * (ivf_pq_search_one with pre: the same cut, candidates and re-rank, so the same results). */
#define IVF_PQ_BATCH_BYTES ((size_t)8 << 20) /* a task's kept sums above this: each query scans alone */

typedef struct {
    uint32_t l, q, j; /* query q probes list l as its j-th */
} ivf_pq_pair;

typedef struct {
    int64_t *order; /* query qi's probed lists at order + qi * n_probe */
    size_t *np;
    ivf_pq_pre *pre; /* pre[qi].sums NULL: query qi searches alone (it cannot use the codes) */
} ivf_pq_batch;

static int ivf_pq_pair_cmp(const void *a, const void *b)
{
    const ivf_pq_pair *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return x->q < y->q ? -1 : x->q > y->q;
}

/* Probes, tables and the shared scans of the nqb queries qs[i] (centroid distances cds[i]) into
 * the thread's second block; 0 when the kept sums would pass IVF_PQ_BATCH_BYTES or memory is short
 * (the queries then search alone, as they would anyway). */
static int ivf_pq_batch_prepare(const ivf_search_ctx *c, ivf_pq_scratch *ps, ivf_scratch *s, const float *const *qs,
                                const float *const *cds, size_t nqb, ivf_pq_batch *b)
{
    const vdb_ivf *ivf = c->ivf;
    const vdb_pq4 *pq = ivf->pq;
    const size_t nl = ivf->n_lists, npr = c->n_probe, tab = pq->m_pad * 16;
    const size_t per_list = (c->max_list + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * VDB_PQ4_BLOCK;
    if (per_list && nqb * npr > IVF_PQ_BATCH_BYTES / sizeof(uint16_t) / per_list) return 0;
    const size_t sums_len = nqb * npr * per_list;
    size_t sz[7] = {nqb * npr * sizeof(int64_t), nqb * sizeof(size_t), nqb * sizeof(ivf_pq_pre),
                    nqb * npr * sizeof(uint16_t *), nqb * tab, nqb * npr * sizeof(ivf_pq_pair),
                    (sums_len ? sums_len : 1) * sizeof(uint16_t)};
    size_t total = 0;
    for (int i = 0; i < 7; i++) total += ivf_align(sz[i]);
    unsigned char *p = ivf_pq_thread_block(1, total);
    if (!p) return 0;
    b->order = (int64_t *)p;
    p += ivf_align(sz[0]);
    b->np = (size_t *)p;
    p += ivf_align(sz[1]);
    b->pre = (ivf_pq_pre *)p;
    p += ivf_align(sz[2]);
    uint16_t **sp = (uint16_t **)p;
    p += ivf_align(sz[3]);
    uint8_t *luts = p;
    p += ivf_align(sz[4]);
    ivf_pq_pair *pairs = (ivf_pq_pair *)p;
    p += ivf_align(sz[5]);
    uint16_t *sums = (uint16_t *)p;
    size_t n_pairs = 0;
    for (size_t qi = 0; qi < nqb; qi++) {
        const size_t np = vdb_topk_smallest(cds[qi], nl, npr, s->order_d, s->order_i);
        memcpy(b->order + qi * npr, s->order_i, np * sizeof(int64_t));
        b->np[qi] = np;
        b->pre[qi].sums = NULL;
        double qq = 0; /* as ivf_pq_search_one: a zero cosine query searches the float32 lists */
        for (size_t t = 0; t < ivf->d; t++) qq += (double)qs[qi][t] * qs[qi][t];
        if (ivf->metric == VDB_METRIC_COSINE && !((float)sqrt(qq) > 0)) continue;
        vdb_pq4_lut(pq, qs[qi], ps->lut);
        vdb_pq4_lut_quantize(ps->lut, pq->m_pad, luts + qi * tab, &b->pre[qi].step, &b->pre[qi].bias);
        b->pre[qi].sums = sp + qi * npr;
        for (size_t j = 0; j < np; j++) {
            sp[qi * npr + j] = NULL;
            const size_t l = (size_t)b->order[qi * npr + j];
            if (ivf->lists[l].n) pairs[n_pairs++] = (ivf_pq_pair){(uint32_t)l, (uint32_t)qi, (uint32_t)j};
        }
    }
    qsort(pairs, n_pairs, sizeof *pairs, ivf_pq_pair_cmp);
    size_t off = 0;
    for (size_t a = 0, e; a < n_pairs; a = e) {
        const ivf_list *L = &ivf->lists[pairs[a].l];
        const uint8_t *lp[IVF_QB];
        uint16_t *op[IVF_QB];
        for (e = a; e < n_pairs && pairs[e].l == pairs[a].l; e++) {
            lp[e - a] = luts + pairs[e].q * tab;
            op[e - a] = sp[pairs[e].q * npr + pairs[e].j] = sums + off;
            off += (L->n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * VDB_PQ4_BLOCK;
        }
        if (ivf_verify_codes(ivf, L)) return 0; /* each query alone then meets (and reports) the damage */
        vdb_pq4_scan_multi(L->codes, L->n, pq->m_pad, lp, e - a, op);
    }
    return 1;
}

/* The worker's scratch slot, or (*own) a new block when the pool grew after the slots were sized
 * (a concurrent vdb_threads_set_count); NULL when out of memory. */
static unsigned char *ivf_task_scratch(const ivf_search_ctx *c, size_t worker, unsigned char **own)
{
    *own = NULL;
    if (worker < c->n_slots) return c->scratch + worker * c->scratch_per_worker;
    return *own = malloc(c->scratch_per_worker);
}

static void ivf_search_task(void *vctx, size_t task, size_t worker)
{
    ivf_search_ctx *c = vctx;
    const vdb_ivf *ivf = c->ivf;
    const size_t d = ivf->d, nl = ivf->n_lists;
    const size_t t0 = task * IVF_QB, nqb = c->nq - t0 < IVF_QB ? c->nq - t0 : IVF_QB;
    unsigned char *own, *base = ivf_task_scratch(c, worker, &own);
    if (!base) {
        ivf_fail(c, VDB_ENOMEM);
        return;
    }
    ivf_scratch s = ivf_scratch_at(base, c->qb, nl, c->max_list, d);
    ivf_pq_scratch *ps = NULL;
    if (ivf->pq && !(ps = ivf_pq_scratch_new(ivf, c->k, c->n_probe, c->max_list))) {
        free(own);
        ivf_fail(c, VDB_ENOMEM);
        return;
    }
    if (!c->coarse) ivf_coarse(ivf, c->queries + (c->q0 + t0) * d, nqb, s.coarse, s.pad, s.pad_out);
    const float *qs[IVF_QB], *cds[IVF_QB];
    size_t ats[IVF_QB];
    for (size_t qi = 0; qi < nqb; qi++) {
        const size_t local = c->perm ? c->perm[t0 + qi] : t0 + qi;
        ats[qi] = c->q0 + local;
        qs[qi] = c->queries + ats[qi] * d;
        cds[qi] = c->coarse ? c->coarse + local * nl : s.coarse + qi * nl;
    }
    ivf_pq_batch b;
    const int batched = ps && nqb > 1 && ivf_pq_batch_prepare(c, ps, &s, qs, cds, nqb, &b);
    for (size_t qi = 0; qi < nqb; qi++) {
        const size_t at = ats[qi];
        const float *q = qs[qi], *cd = cds[qi];
        vdb_topk H, R;
        size_t np;
        const int64_t *order;
        if (batched) {
            np = b.np[qi];
            order = b.order + qi * c->n_probe;
        } else {
            np = vdb_topk_smallest(cd, nl, c->n_probe, s.order_d, s.order_i);
            order = s.order_i;
        }
        const ivf_pq_pre *pre = batched && b.pre[qi].sums ? &b.pre[qi] : NULL;
        vdb_topk_init(&R, c->k, c->out_dist + at * c->k, c->out_rows + at * c->k);
        if (!ps || !ivf_pq_search_one(c, ps, q, cd, order, np, &R, pre))
            for (size_t j = 0; j < np; j++)
                ivf_scan_list(c, &s, q, &ivf->lists[order[j]], j + 1 < np ? &ivf->lists[order[j + 1]] : NULL, &R);
        if (R.size < c->k && np < nl) {
            /* Too few hits (small lists or a selective filter): continue in centroid order. */
            memset(s.scanned, 0, nl);
            for (size_t j = 0; j < np; j++) s.scanned[order[j]] = 1;
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

/* A batch's first pass: the centroid distances of a block of queries (the block kernel: each
 * centroid loaded serves 4 queries) and each one's nearest list. */
static void ivf_coarse_task(void *vctx, size_t task, size_t worker)
{
    ivf_search_ctx *c = vctx;
    const vdb_ivf *ivf = c->ivf;
    const size_t nl = ivf->n_lists, t0 = task * IVF_QB, nqb = c->nq - t0 < IVF_QB ? c->nq - t0 : IVF_QB;
    unsigned char *own, *base = ivf_task_scratch(c, worker, &own);
    if (!base) {
        ivf_fail(c, VDB_ENOMEM);
        return;
    }
    ivf_scratch s = ivf_scratch_at(base, c->qb, nl, c->max_list, ivf->d);
    float *cd = c->coarse + t0 * nl;
    ivf_coarse(ivf, c->queries + (c->q0 + t0) * ivf->d, nqb, cd, s.pad, s.pad_out);
    free(own);
    for (size_t qi = 0; qi < nqb; qi++, cd += nl) {
        size_t best = 0;
        for (size_t l = 1; l < nl; l++) best = cd[l] < cd[best] ? l : best;
        c->key[t0 + qi] = (uint32_t)best;
    }
}

/* perm = 0..n-1 ordered by key, ties in query order (a counting sort; start has n_lists + 1 slots). */
static void ivf_order_by_key(const uint32_t *key, size_t n, size_t n_lists, size_t *start, uint32_t *perm)
{
    memset(start, 0, (n_lists + 1) * sizeof *start);
    for (size_t i = 0; i < n; i++) start[key[i] + 1]++;
    for (size_t l = 0; l < n_lists; l++) start[l + 1] += start[l];
    for (size_t i = 0; i < n; i++) perm[start[key[i]]++] = (uint32_t)i;
}

int vdb_ivf_search(const vdb_ivf *ivf, const float *queries, size_t nq, size_t k, size_t n_probe,
                   const uint64_t *allow, size_t allow_len, float *out_dist, int64_t *out_rows)
{
    int rc = VDB_OK;
    unsigned char *scratch = NULL, *batch = NULL;
    ivf_reranked = 0; /* a search without codes re-ranks nothing */
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
    if (ivf_scratch_size(nq < IVF_QB ? nq : IVF_QB, ivf->n_lists, max_list, ivf->d, &per) || ivf_mul(per, workers, &total)) {
        rc = vdb_set_error(VDB_ENOMEM, "IVF search scratch size overflows");
        goto cleanup;
    }
    scratch = malloc(total);
    if (!scratch) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for IVF search scratch (%zu bytes)", total);
        goto cleanup;
    }
    const size_t nl = ivf->n_lists, qb = nq < IVF_QB ? nq : IVF_QB;
    ivf_search_ctx ctx = {ivf, queries, 0, nq, qb, k, n_probe, allow, allow_len, out_dist, out_rows,
                          max_list, scratch, per, workers, NULL, NULL, NULL, 0};
    if (n_tasks == 1) {
        ivf_search_task(&ctx, 0, 0); /* a small query stays on the calling thread */
    } else {
        /* A batch, in chunks: the centroid distances of the whole chunk first, then its queries in
         * the order of their nearest list, so that the queries of a task (and the tasks a worker
         * takes one after another) probe mostly the same lists and find their codes and vectors
         * still in the core's cache. Each query is searched exactly as alone: same results. */
        size_t chunk = IVF_BATCH_COARSE_BYTES / (nl * sizeof(float)) / IVF_QB * IVF_QB;
        if (chunk < IVF_QB) chunk = IVF_QB;
        if (chunk > nq) chunk = nq;
        size_t bytes = ivf_align(chunk * nl * sizeof(float)) + ivf_align(2 * chunk * sizeof(uint32_t)) +
                       (nl + 1) * sizeof(size_t);
        if (!(batch = malloc(bytes))) {
            rc = vdb_set_error(VDB_ENOMEM, "out of memory for a batch of IVF queries (%zu bytes)", bytes);
            goto cleanup;
        }
        ctx.coarse = (float *)batch;
        ctx.key = (uint32_t *)(batch + ivf_align(chunk * nl * sizeof(float)));
        ctx.perm = ctx.key + chunk;
        size_t *start = (size_t *)(batch + ivf_align(chunk * nl * sizeof(float)) + ivf_align(2 * chunk * sizeof(uint32_t)));
        for (size_t q0 = 0; q0 < nq && !ctx.failed; q0 += chunk) {
            ctx.q0 = q0;
            ctx.nq = nq - q0 < chunk ? nq - q0 : chunk;
            const size_t tasks = (ctx.nq + IVF_QB - 1) / IVF_QB;
            vdb_parallel_for(tasks, ivf_coarse_task, &ctx);
            ivf_order_by_key(ctx.key, ctx.nq, nl, start, ctx.perm);
            vdb_parallel_for(tasks, ivf_search_task, &ctx);
        }
    }
    if (ctx.failed == VDB_ECORRUPT)
        rc = vdb_ivf_error(ivf); /* the message again, on this thread */
    else if (ctx.failed)
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for IVF search scratch");
cleanup:
    free(scratch);
    free(batch);
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
