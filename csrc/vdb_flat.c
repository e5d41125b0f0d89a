/* vdb_flat — see vdb_flat.h for the contract.
 *
 * Work unit: a group of up to VDB_FLAT_GROUP queries against a slice of the rows. Rows are scanned
 * in chunks: the SIMD kernel writes a chunk's distances into a stack buffer, then only distances
 * at or below the heap's current threshold touch the heap (after the first k rows almost none do).
 * With a bitmap, 64-row groups whose word is 0 are skipped, sparse words are scored row by row.
 * Batches: groups of queries go to the worker pool. 12 or more queries, filtered or not, take
 * vdb_exact, whose register tiles only screen the rows and whose candidates the single-query kernel
 * scores; smaller groups of 4 or more are screened the same way by the 4-query block kernel
 * (below; with a bitmap, in its dense 64-row words); the rest score each query with the single-query kernel over blocks of rows kept in
 * L1 for the group. So a batch answers each query bit for bit as alone. When there are fewer groups
 * than threads (a few queries against many rows), the rows are also split into slices whose
 * per-slice top-k are merged at the end; a single query over enough rows is split the same way. The
 * merge keeps the k smallest (distance, row) pairs, so a split search returns exactly what the
 * single-thread scan returns.
 */
#include "vdb_flat.h"

#include <math.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "vdb_error.h"
#include "vdb_exact.h"
#include "vdb_threads.h"
#include "vdb_topk.h"

#define VDB_FLAT_GROUP 8          /* queries per task (a chunk of rows is read once from memory for them) */
/* Batches of at least this many queries, filtered or not, use the GEMM-style kernel (vdb_exact), in
 * groups of up to VDB_FLAT_GEMM_GROUP queries (4 panels: ~200 KB at d = 384, L2-resident). Its cost
 * hardly depends on the number of queries below a panel (50k x 384, one thread: ~25-29 ms for 2 to
 * 32 queries, where the single-query kernel in L1 blocks takes ~9 ms for 2, ~19-25 for 8 and ~36 for 12). */
#define VDB_FLAT_GEMM_MIN 12
#define VDB_FLAT_GEMM_GROUP 128
#define VDB_FLAT_SCRATCH 8192     /* floats of distances per chunk, on the stack (32 KB) */
#define VDB_FLAT_MAX_CHUNK 1024   /* rows per chunk for one query */
#define VDB_FLAT_L1_BYTES 24576   /* a block of rows that stays in L1 while a group's queries score it */
/* A bitmap word with at most this many bits set is scored row by row, else the whole 64-row group
 * in one kernel call: measured crossover ~28 of 64 for one query (10k x 128: 20% density 28 us row
 * by row vs 58 us whole groups); lower for query groups (set when they used the blocked kernel). */
#define VDB_FLAT_SPARSE_ONE 24
#define VDB_FLAT_SPARSE_GROUP 8
/* Below this many query x row x dim products (~25 us of work) stay inline: a pool wake-up costs
 * ~10-30 us. */
#define VDB_FLAT_MIN_PARALLEL (1u << 20)
/* One query splits its rows over the pool from this many row x dim products: measured at 2 threads,
 * 10k x 128 (1.3M) and 5k x 384 (1.9M) gain ~25-40%, 2.5k x 384 (~1M) about breaks even. */
#define VDB_FLAT_MIN_SPLIT_ONE (3u << 19)

typedef struct {
    vdb_metric m;
    size_t d;
    const vdb_vec_range *ranges;
    size_t n_ranges;
    const uint64_t *allow;
    const float *queries;
    size_t nq, k;
    size_t group;     /* queries per group */
    size_t l1_rows;   /* rows per block that several queries score in turn (vdb_flat_score) */
    size_t n_slices;  /* row slices per group */
    int gemm;         /* groups go through vdb_exact */
    size_t total_rows;
    float *out_dist;
    int64_t *out_rows;
    float *part_dist;   /* n_slices > 1: candidates per (slice, query), k each */
    int64_t *part_rows;
} vdb_flat_ctx;

/* Pushes dist[j] for row row0 + j, j < cnt, when it can enter the heap. */
/* Whether any of p[0..16) is <= thr (NaN is not). SSE2 / NEON are baseline on x86-64 / arm64;
 * the compiler does not vectorize this any-of on its own. */
static inline int vdb_flat_any_le16(const float *p, float thr)
{
#if defined(__SSE2__)
    __m128 t = _mm_set1_ps(thr);
    __m128 a = _mm_or_ps(_mm_cmple_ps(_mm_loadu_ps(p), t), _mm_cmple_ps(_mm_loadu_ps(p + 4), t));
    __m128 b = _mm_or_ps(_mm_cmple_ps(_mm_loadu_ps(p + 8), t), _mm_cmple_ps(_mm_loadu_ps(p + 12), t));
    return _mm_movemask_ps(_mm_or_ps(a, b)) != 0;
#elif defined(__aarch64__)
    float32x4_t t = vdupq_n_f32(thr);
    uint32x4_t a = vorrq_u32(vcleq_f32(vld1q_f32(p), t), vcleq_f32(vld1q_f32(p + 4), t));
    uint32x4_t b = vorrq_u32(vcleq_f32(vld1q_f32(p + 8), t), vcleq_f32(vld1q_f32(p + 12), t));
    return vmaxvq_u32(vorrq_u32(a, b)) != 0;
#else
    int any = 0;
    for (int t = 0; t < 16; t++)
        any |= p[t] <= thr;
    return any;
#endif
}

static inline void vdb_flat_push_all(vdb_topk *h, const float *dist, size_t cnt, int64_t row0)
{
    float thr = vdb_topk_threshold(h);
    for (size_t j0 = 0; j0 < cnt; j0 += 16) {
        size_t j1 = cnt - j0 < 16 ? cnt : j0 + 16;
        if (j1 - j0 == 16) {
            /* Once the heap is full almost nothing passes: one vector test skips 16 entries. */
            if (!vdb_flat_any_le16(dist + j0, thr))
                continue;
        }
        for (size_t j = j0; j < j1; j++) {
            /* `<=` lets equal distances through for the row tie-break; NaN never passes. */
            if (dist[j] <= thr) {
                vdb_topk_push(h, dist[j], row0 + (int64_t)j);
                thr = vdb_topk_threshold(h);
            }
        }
    }
}

/* Same for the rows whose bit is set in bits (bit j <-> row row0 + j). */
static inline void vdb_flat_push_bits(vdb_topk *h, const float *dist, uint64_t bits, int64_t row0)
{
    float thr = vdb_topk_threshold(h);
    while (bits) {
        unsigned j = (unsigned)__builtin_ctzll(bits);
        bits &= bits - 1;
        if (dist[j] <= thr) {
            vdb_topk_push(h, dist[j], row0 + (int64_t)j);
            thr = vdb_topk_threshold(h);
        }
    }
}

/* Distances of nqg queries against cnt rows into scratch (query-major, stride cnt). Each query
 * through the single-query kernel: the block kernel's 4-query tiles round otherwise, and a query
 * must get the same distance bits (and so the same rows on near-ties) alone and in any batch (the
 * kernel's result for a row does not depend on the rows beside it). Several queries take the rows
 * in blocks of ~24 KB, so only the first query reads a block from memory and the others from L1
 * (8 queries over 50k x 384: 29 -> 19 ms; 96 KB blocks gained nothing). */
static inline void vdb_flat_score(const vdb_flat_ctx *c, const float *q, size_t nqg, const float *rows, size_t cnt,
                                  float *scratch)
{
    size_t blk = nqg == 1 ? cnt : c->l1_rows;
    for (size_t r0 = 0; r0 < cnt; r0 += blk) {
        size_t n = cnt - r0 < blk ? cnt - r0 : blk;
        for (size_t j = 0; j < nqg; j++)
            vdb_distance_batch(c->m, q + j * c->d, rows + r0 * c->d, n, c->d, scratch + j * cnt + r0);
    }
}

/* ---- Small unfiltered groups: the block kernel screens, the single-query kernel answers.
 *
 * vdb_distance_block's 4-query tiles read each row once for 4 queries but round differently from
 * the single-query kernel (another summation order). Both are within a bound of the same exact
 * value, so the block distance minus twice that bound is a lower bound lb of the single-query
 * distance: a row with lb > the heap's k-th distance cannot enter it; the others are recomputed by
 * the single-query kernel and pushed with that distance. Bounds (u = 2^-24, c = 2 (d + 8) u, as in
 * vdb_exact: a sum of d float32 products in any order, fused or not, is within c/2 |q| |x| of the
 * exact one; the differences q_i - x_i are rounded alike by both kernels):
 *   l2:     terms >= 0, so each sum is within c/2 relative (+ underflow, < d 2^-149) of the same
 *           exact sum: lb = s (1 - 3c) - (d + 8) 2^-146 (-inf where s overflowed)
 *   ip:     lb = s - 4c |q| |x| - 4u (1 + |s|)      (|q|, |x| from their squared norms, within c)
 *   cosine: lb = s - 8c, for a query and a row whose squared norms lie in [2^-60, 2^60] (else
 *           -inf: always recomputed; zero vectors, tiny or huge norms take no bound)
 * A NaN lb becomes -inf: always recomputed (and a NaN distance never enters). */

#define VDB_FLAT_ZEROS 4096 /* the screen needs d <= this (norms as l2 distances to a zero vector) */
static const float vdb_flat_zeros[VDB_FLAT_ZEROS];

/* Squared norms of n rows (vdb_distance_batch's arithmetic: fast, within c). */
static inline void vdb_flat_sqnorms(size_t d, const float *rows, size_t n, float *out)
{
    vdb_distance_batch(VDB_METRIC_L2, vdb_flat_zeros, rows, n, d, out);
}

/* Turns the block distances of nqg queries x cnt rows (query-major) into the lower bounds above;
 * rr: scratch for cnt floats. */
static void vdb_flat_lower_bounds(const vdb_flat_ctx *c, const float *q, size_t nqg, const float *rows, size_t cnt,
                                  float *dist, float *rr)
{
    const size_t d = c->d;
    const float u = 1.0f / 16777216.0f, cc = 2.0f * (float)(d + 8) * u;
    if (c->m == VDB_METRIC_L2) {
        const float k1 = 1.0f - 3.0f * cc, k2 = (float)(d + 8) * ldexpf(1.0f, -146);
        for (size_t t = 0; t < nqg * cnt; t++) /* an overflowed (or NaN) sum: always recomputed */
            dist[t] = dist[t] < INFINITY ? dist[t] * k1 - k2 : -INFINITY;
        return;
    }
    vdb_flat_sqnorms(d, rows, cnt, rr);
    for (size_t j = 0; j < nqg; j++) {
        float qq;
        vdb_flat_sqnorms(d, q + j * d, 1, &qq);
        float *o = dist + j * cnt;
        if (c->m == VDB_METRIC_IP) {
            float qs = 4.0f * cc * sqrtf(qq);
            for (size_t i = 0; i < cnt; i++) {
                float v = o[i] - qs * sqrtf(rr[i]) - 4.0f * u * (1.0f + fabsf(o[i]));
                o[i] = v == v ? v : -INFINITY; /* NaN (inf - inf, NaN inputs): recomputed */
            }
            continue;
        }
        const float lo = ldexpf(1.0f, -60), hi = ldexpf(1.0f, 60);
        int q_ok = qq >= lo && qq <= hi;
        for (size_t i = 0; i < cnt; i++)
            o[i] = q_ok && rr[i] >= lo && rr[i] <= hi ? o[i] - 8.0f * cc : -INFINITY;
    }
}

/* Recomputes with the single-query kernel every row whose lower bound lb[j] is not above the heap's
 * threshold, and pushes its distance when it can enter. allow: NULL, or (cnt <= 64) bit j = row j
 * may be pushed. */
static void vdb_flat_push_screened(const vdb_flat_ctx *c, const float *q, vdb_topk *h, const float *lb,
                                   const float *rows, size_t cnt, int64_t row0, const uint64_t *allow)
{
    float thr = vdb_topk_threshold(h);
    for (size_t j0 = 0; j0 < cnt; j0 += 16) {
        size_t j1 = cnt - j0 < 16 ? cnt : j0 + 16;
        if (j1 - j0 == 16 && !vdb_flat_any_le16(lb + j0, thr))
            continue;
        for (size_t j = j0; j < j1; j++) {
            if (lb[j] > thr || (allow && !((*allow >> j) & 1)))
                continue;
            float e;
            vdb_distance_batch(c->m, q, rows + j * c->d, 1, c->d, &e);
            if (e <= thr) {
                vdb_topk_push(h, e, row0 + (int64_t)j);
                thr = vdb_topk_threshold(h);
            }
        }
    }
}

/* Scans local rows [i0, i1) of range r for queries q0..q0+nqg-1 into heaps[0..nqg). */
static void vdb_flat_scan_range(const vdb_flat_ctx *c, const vdb_vec_range *r, size_t i0, size_t i1, size_t q0,
                                size_t nqg, vdb_topk *heaps)
{
    float scratch[VDB_FLAT_SCRATCH];
    const size_t d = c->d;
    const float *q = c->queries + q0 * d;

    if (!c->allow) {
        size_t chunk = VDB_FLAT_SCRATCH / nqg;
        if (chunk > VDB_FLAT_MAX_CHUNK)
            chunk = VDB_FLAT_MAX_CHUNK;
        for (size_t c0 = i0; c0 < i1; c0 += chunk) {
            size_t cnt = i1 - c0 < chunk ? i1 - c0 : chunk;
            const float *rows = r->data + c0 * d;
            if (nqg >= 4 && d <= VDB_FLAT_ZEROS) { /* fewer: no whole 4-query tile */
                float rr[VDB_FLAT_MAX_CHUNK];
                vdb_distance_block(c->m, q, nqg, rows, cnt, d, scratch);
                vdb_flat_lower_bounds(c, q, nqg, rows, cnt, scratch, rr);
                for (size_t j = 0; j < nqg; j++)
                    vdb_flat_push_screened(c, q + j * d, &heaps[j], scratch + j * cnt, rows, cnt,
                                           r->first_row + (int64_t)c0, NULL);
                continue;
            }
            vdb_flat_score(c, q, nqg, rows, cnt, scratch);
            for (size_t j = 0; j < nqg; j++)
                vdb_flat_push_all(&heaps[j], scratch + j * cnt, cnt, r->first_row + (int64_t)c0);
        }
        return;
    }

    /* With a bitmap: walk 64-row groups aligned to the global row numbers. */
    const int sparse = nqg == 1 ? VDB_FLAT_SPARSE_ONE : VDB_FLAT_SPARSE_GROUP;
    size_t i = i0;
    while (i < i1) {
        uint64_t g = (uint64_t)r->first_row + i;
        unsigned off = (unsigned)(g & 63);
        size_t span = 64 - off;
        if (span > i1 - i)
            span = i1 - i;
        uint64_t bits = c->allow[g >> 6] >> off;
        if (span < 64)
            bits &= ((uint64_t)1 << span) - 1;
        int64_t row0 = r->first_row + (int64_t)i;
        const float *rows = r->data + i * d;
        if (bits == 0) {
            /* nothing allowed in this group */
        } else if (__builtin_popcountll(bits) <= sparse) {
            uint64_t b = bits;
            while (b) {
                unsigned j = (unsigned)__builtin_ctzll(b);
                b &= b - 1;
                for (size_t t = 0; t < nqg; t++) {
                    float dist = vdb_distance(c->m, q + t * d, rows + (size_t)j * d, d);
                    if (dist <= vdb_topk_threshold(&heaps[t]))
                        vdb_topk_push(&heaps[t], dist, row0 + (int64_t)j);
                }
            }
        } else if (nqg >= 4 && d <= VDB_FLAT_ZEROS) {
            float rr[64];
            vdb_distance_block(c->m, q, nqg, rows, span, d, scratch);
            vdb_flat_lower_bounds(c, q, nqg, rows, span, scratch, rr);
            for (size_t t = 0; t < nqg; t++)
                vdb_flat_push_screened(c, q + t * d, &heaps[t], scratch + t * span, rows, span, row0, &bits);
        } else {
            vdb_flat_score(c, q, nqg, rows, span, scratch);
            for (size_t t = 0; t < nqg; t++)
                vdb_flat_push_bits(&heaps[t], scratch + t * span, bits, row0);
        }
        i += span;
    }
}

/* Scans global row positions [p0, p1) (counting through the ranges in order); eq: the group's
 * queries prepared for vdb_exact, or NULL. */
static void vdb_flat_scan(const vdb_flat_ctx *c, size_t p0, size_t p1, size_t q0, size_t nqg, vdb_topk *heaps,
                          vdb_exact_queries *eq)
{
    size_t pos = 0;
    for (size_t ri = 0; ri < c->n_ranges && pos < p1; ri++) {
        const vdb_vec_range *r = &c->ranges[ri];
        size_t a = p0 > pos ? p0 - pos : 0;
        size_t b = p1 - pos < r->n ? p1 - pos : r->n;
        if (a < b && eq)
            vdb_exact_scan(eq, r->data + a * c->d, b - a, r->first_row + (int64_t)a, c->allow, heaps);
        else if (a < b)
            vdb_flat_scan_range(c, r, a, b, q0, nqg, heaps);
        pos += r->n;
    }
}

static void vdb_flat_task(void *ctxp, size_t task, size_t worker)
{
    (void)worker;
    const vdb_flat_ctx *c = ctxp;
    size_t g = task / c->n_slices, s = task % c->n_slices;
    size_t q0 = g * c->group;
    size_t nqg = c->nq - q0 < c->group ? c->nq - q0 : c->group;
    size_t p0 = c->total_rows * s / c->n_slices, p1 = c->total_rows * (s + 1) / c->n_slices;
    vdb_topk heaps[VDB_FLAT_GEMM_GROUP];
    const size_t k = c->k;

    for (size_t j = 0; j < nqg; j++) {
        if (c->n_slices == 1)
            vdb_topk_init(&heaps[j], k, c->out_dist + (q0 + j) * k, c->out_rows + (q0 + j) * k);
        else
            vdb_topk_init(&heaps[j], k, c->part_dist + (s * c->nq + q0 + j) * k,
                          c->part_rows + (s * c->nq + q0 + j) * k);
    }
    /* Out of memory for the packed queries: the single-query kernel gives the same answers. */
    vdb_exact_queries eq;
    int gemm = c->gemm && vdb_exact_prepare(c->m, c->queries + q0 * c->d, nqg, c->d, &eq) == VDB_OK;
    vdb_flat_scan(c, p0, p1, q0, nqg, heaps, gemm ? &eq : NULL);
    if (gemm)
        vdb_exact_free(&eq);
    for (size_t j = 0; j < nqg; j++) {
        size_t cnt = c->n_slices == 1 ? vdb_topk_sort(&heaps[j]) : heaps[j].size;
        for (size_t t = cnt; t < k; t++) {
            heaps[j].dist[t] = INFINITY;
            heaps[j].rows[t] = -1;
        }
    }
}

int vdb_flat_search(vdb_metric m, size_t d, const vdb_vec_range *ranges, size_t n_ranges, const uint64_t *allow,
                    const float *queries, size_t nq, size_t k, float *out_dist, int64_t *out_rows)
{
    int rc = VDB_OK;
    vdb_flat_ctx c = {0};
    if (m != VDB_METRIC_L2 && m != VDB_METRIC_IP && m != VDB_METRIC_COSINE)
        return vdb_set_error(VDB_EINVAL, "unknown metric %d: expected l2, ip or cosine", (int)m);
    if (d == 0)
        return vdb_set_error(VDB_EINVAL, "vector dimension is 0: expected at least 1");
    if (nq == 0 || k == 0)
        return VDB_OK;
    if (!queries || !out_dist || !out_rows || (n_ranges > 0 && !ranges))
        return vdb_set_error(VDB_EINVAL, "flat search: NULL queries, outputs or ranges");
    if (nq > SIZE_MAX / k)
        return vdb_set_error(VDB_ENOMEM, "flat search: %zu queries x k=%zu overflows", nq, k);

    size_t total = 0;
    for (size_t i = 0; i < n_ranges; i++) {
        if (ranges[i].n > 0 && (!ranges[i].data || ranges[i].first_row < 0))
            return vdb_set_error(VDB_EINVAL, "flat search: range %zu has no data or a negative first row", i);
        total += ranges[i].n;
    }

    c.m = m;
    c.d = d;
    c.ranges = ranges;
    c.n_ranges = n_ranges;
    c.allow = allow;
    c.queries = queries;
    c.nq = nq;
    c.k = k;
    c.total_rows = total;
    c.out_dist = out_dist;
    c.out_rows = out_rows;
    c.n_slices = 1;
    c.group = nq < VDB_FLAT_GROUP ? nq : VDB_FLAT_GROUP;
    c.l1_rows = VDB_FLAT_L1_BYTES / (d * sizeof(float));
    if (c.l1_rows < 8)
        c.l1_rows = 8;
    size_t threads = vdb_threads_count();
    if (nq >= VDB_FLAT_GEMM_MIN) {
        /* Whole panels of 32, enough groups for every thread, at most VDB_FLAT_GEMM_GROUP. */
        size_t per = (nq + threads - 1) / threads;
        per = (per + 31) / 32 * 32;
        c.gemm = 1;
        c.group = per < VDB_FLAT_GEMM_GROUP ? per : VDB_FLAT_GEMM_GROUP;
    }

    /* Little work: the calling thread does it all (a pool wake-up costs more). One query splits
     * its rows only from a larger scan: the per-slice merge is extra work for it alone. */
    double work = (double)nq * (double)total * (double)d;
    double min_work = nq == 1 ? (double)VDB_FLAT_MIN_SPLIT_ONE : (double)VDB_FLAT_MIN_PARALLEL;
    if (threads <= 1 || work < min_work) {
        size_t n_tasks = (nq + c.group - 1) / c.group;
        for (size_t t = 0; t < n_tasks; t++)
            vdb_flat_task(&c, t, 0);
        return VDB_OK;
    }

    size_t n_groups = (nq + c.group - 1) / c.group;
    if (n_groups < threads && !c.gemm) {
        /* Spread the queries over the threads first... */
        c.group = (nq + threads - 1) / threads;
        n_groups = (nq + c.group - 1) / c.group;
    }
    if (n_groups < 2 * threads && total >= 4096) {
        /* ...then, with few queries, split the rows too (2 tasks per thread for balance). */
        size_t s = (2 * threads + n_groups - 1) / n_groups;
        size_t max_s = total / 2048;
        c.n_slices = s < max_s ? s : max_s;
        if (c.n_slices < 1)
            c.n_slices = 1;
    }
    if (c.n_slices > 1) {
        size_t per = c.n_slices * nq;
        if (per / c.n_slices != nq || per > SIZE_MAX / k || per * k > SIZE_MAX / sizeof(int64_t)) {
            rc = vdb_set_error(VDB_ENOMEM, "flat search: candidate buffer size overflows");
            goto cleanup;
        }
        c.part_dist = malloc(per * k * sizeof(float));
        c.part_rows = malloc(per * k * sizeof(int64_t));
        if (!c.part_dist || !c.part_rows) {
            rc = vdb_set_error(VDB_ENOMEM, "flat search: out of memory for %zu candidates", per * k);
            goto cleanup;
        }
    }

    vdb_parallel_for(n_groups * c.n_slices, vdb_flat_task, &c);

    if (c.n_slices > 1) {
        for (size_t qi = 0; qi < nq; qi++) {
            vdb_topk h;
            vdb_topk_init(&h, k, out_dist + qi * k, out_rows + qi * k);
            for (size_t s = 0; s < c.n_slices; s++) {
                const float *pd = c.part_dist + (s * nq + qi) * k;
                const int64_t *pr = c.part_rows + (s * nq + qi) * k;
                for (size_t t = 0; t < k && pr[t] >= 0; t++)
                    vdb_topk_push(&h, pd[t], pr[t]);
            }
            size_t cnt = vdb_topk_sort(&h);
            for (size_t t = cnt; t < k; t++) {
                out_dist[qi * k + t] = INFINITY;
                out_rows[qi * k + t] = -1;
            }
        }
    }

cleanup:
    free(c.part_dist);
    free(c.part_rows);
    return rc;
}
