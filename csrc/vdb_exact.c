/* vdb_exact — see vdb_exact.h for the contract and the error bound.
 *
 * For each row and panel of 32 queries the kernel forms lhs_j from the row's dot products with the
 * queries and compares it with lim_j, both chosen so that lhs_j > lim_j proves the row cannot
 * enter query j's heap (x = the row, q_j = the query, thr_j = its heap's current k-th distance):
 *   l2:     lhs = (1 - c) |x|^2 - 2 x.q - 2 c |x| |q|     lim = thr - (1 - c) |q|^2
 *   ip:     lhs = -x.q - c |x| |q|                        lim = thr - 1 + 4 u (1 + |thr|)
 *   cosine: lhs = -(x.q) / |x| / |q| (0 for a zero norm)  lim = thr - 1 + 2 c
 * lim is +inf while the heap is not full (and for a query whose squared norm is outside {0} u
 * [2^-60, 2^60]: ex_wild), -inf for the padding lanes of the last panel; a row with such a norm
 * skips the bound and goes to every query. A NaN lhs is a candidate. Rows are
 * taken in micro-blocks (8 on AVX-512, 6 on AVX2) so a tile of rows x queries stays in registers.
 */
#include "vdb_exact.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_cpu.h"
#include "vdb_error.h"
#include "vdb_nearest.h"
#include "vdb_panel_tile.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define VDB_EXACT_X86 1
#endif

#define EX_U (1.0f / 16777216.0f) /* unit roundoff of float32 */
#define EX_W VDB_PANEL_WIDTH

typedef void (*vdb_exact_fn)(vdb_exact_queries *q, const float *rows, size_t n, int64_t row0, const uint64_t *allow,
                             vdb_topk *heaps);

void vdb_exact_free(vdb_exact_queries *q)
{
    free(q->packed);
    free(q->qsq);
    memset(q, 0, sizeof *q);
}

int vdb_exact_prepare(vdb_metric m, const float *queries, size_t nq, size_t d, vdb_exact_queries *out)
{
    memset(out, 0, sizeof *out);
    if (nq == 0 || d == 0) return vdb_set_error(VDB_EINVAL, "exact batch needs queries and d > 0");
    size_t floats = vdb_panel_floats(nq, d);
    size_t padded = (nq + EX_W - 1) / EX_W * EX_W;
    out->packed = floats ? malloc(floats * sizeof(float)) : NULL;
    out->qsq = malloc(4 * padded * sizeof(float)); /* qsq, qn, iq, lim side by side */
    if (!out->packed || !out->qsq) {
        vdb_exact_free(out);
        return vdb_set_error(VDB_ENOMEM, "out of memory packing %zu queries of dimension %zu", nq, d);
    }
    out->m = m;
    out->d = d;
    out->nq = nq;
    out->panels = padded / EX_W;
    out->queries = queries;
    out->qn = out->qsq + padded;
    out->iq = out->qn + padded;
    out->lim = out->iq + padded;
    out->c = 2.0f * (float)(d + 8) * EX_U;
    vdb_panel_pack(queries, nq, d, out->packed);
    for (size_t j = 0; j < padded; j++) {
        float s = j < nq ? vdb_sumsq(queries + j * d, d) : 0.0f;
        out->qsq[j] = s;
        out->qn[j] = sqrtf(s);
        out->iq[j] = s > 0.0f ? 1.0f / out->qn[j] : 0.0f;
        out->lim[j] = j < nq ? INFINITY : -INFINITY;
    }
    return VDB_OK;
}

/* Whether a squared norm takes no bound: the bounds hold for norms in [2^-30, 2^30] (no overflow,
 * underflow far below c |q| |x|) and for zero vectors (exact products); other rows are offered to
 * every query and other queries take every row. */
static inline int ex_wild(float sq) { return sq != 0.0f && !(sq >= 0x1p-60f && sq <= 0x1p60f); }

/* The bound a row must reach for query j whose heap's k-th distance is thr. */
static inline float ex_lim(const vdb_exact_queries *q, size_t j, float thr)
{
    if (!(thr < INFINITY) || ex_wild(q->qsq[j])) return INFINITY;
    if (q->m == VDB_METRIC_L2) return thr - (1.0f - q->c) * q->qsq[j];
    if (q->m == VDB_METRIC_IP) return thr - 1.0f + 4.0f * EX_U * (1.0f + fabsf(thr));
    return thr - 1.0f + 2.0f * q->c;
}

/* Per-row terms of lhs: lhs_j = alpha + beta x.q_j + gamma qv_j (l2, ip; qv = |q|), or
 * (beta x.q_j) qv_j (cosine; qv = 1/|q|). */
typedef struct {
    float alpha, beta, gamma;
    int wild; /* the row takes no bound (ex_wild) */
} ex_row;

static inline ex_row ex_row_terms(const vdb_exact_queries *q, const float *x)
{
    ex_row r = {0.0f, 0.0f, 0.0f, 0};
    float s = vdb_sumsq(x, q->d), n = sqrtf(s);
    r.wild = ex_wild(s);
    if (q->m == VDB_METRIC_L2) {
        r.alpha = (1.0f - q->c) * s;
        r.beta = -2.0f;
        r.gamma = -2.0f * q->c * n;
    } else if (q->m == VDB_METRIC_IP) {
        r.beta = -1.0f;
        r.gamma = -q->c * n;
    } else {
        r.beta = s > 0.0f ? -1.0f / n : 0.0f;
    }
    return r;
}

static inline const float *ex_qv(const vdb_exact_queries *q) { return q->m == VDB_METRIC_COSINE ? q->iq : q->qn; }

/* The candidates of one row for panel p (bit j = query 32 p + j): exact distance, heap, bound. */
static void ex_candidates(vdb_exact_queries *q, uint32_t mask, size_t p, const float *x, int64_t row,
                          vdb_topk *heaps)
{
    while (mask) {
        size_t j = p * EX_W + (size_t)__builtin_ctz(mask);
        mask &= mask - 1;
        float e;
        vdb_distance_batch(q->m, q->queries + j * q->d, x, 1, q->d, &e);
        vdb_topk *h = &heaps[j];
        if (e <= vdb_topk_threshold(h)) { /* NaN never enters, as in vdb_flat */
            vdb_topk_push(h, e, row);
            q->lim[j] = ex_lim(q, j, vdb_topk_threshold(h));
        }
    }
}

/* A row without a bound: every live query of every panel recomputes it. */
static void ex_all(vdb_exact_queries *q, const float *x, int64_t row, vdb_topk *heaps)
{
    for (size_t p = 0; p < q->panels; p++) {
        size_t live = q->nq - p * EX_W < EX_W ? q->nq - p * EX_W : EX_W;
        ex_candidates(q, live == 32 ? 0xffffffffu : ((uint32_t)1 << live) - 1u, p, x, row, heaps);
    }
}

/* One variant's kernels: `tile` scans mr rows x (their terms t, first row number row) against every
 * panel, `one` a single row (mr = 1); qv = ex_qv(q), cos: the metric is cosine; on: bit r = row r
 * is offered (the others' products are computed but never become candidates). The driver below
 * gives every variant the same work order. */
typedef void (*ex_rows_fn)(vdb_exact_queries *q, const float *qv, int cos, const float *x, const ex_row *t, int64_t row,
                           uint32_t on, vdb_topk *heaps);

/* Bits of the cnt (<= 32) rows from row on: bit r = row + r is allowed; all of them without a bitmap. */
static inline uint32_t ex_allowed(const uint64_t *allow, int64_t row, size_t cnt)
{
    uint32_t all = cnt >= 32 ? 0xffffffffu : ((uint32_t)1 << cnt) - 1u;
    if (!allow) return all;
    uint64_t g = (uint64_t)row;
    unsigned off = (unsigned)(g & 63);
    uint64_t bits = allow[g >> 6] >> off;
    if (off + cnt > 64) bits |= allow[(g >> 6) + 1] << (64 - off);
    return (uint32_t)bits & all;
}

static void ex_drive(size_t mr, ex_rows_fn tile, ex_rows_fn one, vdb_exact_queries *q, const float *rows, size_t n,
                     int64_t row0, const uint64_t *allow, vdb_topk *heaps)
{
    const size_t d = q->d;
    const float *qv = ex_qv(q);
    const int cos = q->m == VDB_METRIC_COSINE;
    ex_row t[VDB_TILE_MR_AVX512 > VDB_TILE_MR_AVX2 ? VDB_TILE_MR_AVX512 : VDB_TILE_MR_AVX2];
    size_t i = 0;
    for (; i + mr <= n; i += mr) {
        const float *x = rows + i * d;
        int64_t row = row0 + (int64_t)i;
        uint32_t on = ex_allowed(allow, row, mr);
        if (on == 0) continue;
        int wild = 0;
        for (size_t r = 0; r < mr; r++) {
            t[r] = ex_row_terms(q, x + r * d);
            wild |= t[r].wild && ((on >> r) & 1);
        }
        if (wild || (size_t)__builtin_popcount(on) * 2 <= mr) {
            /* A few allowed rows (one by one costs less than the tile's every row), or a row
             * without a bound among them. */
            while (on) {
                unsigned r = (unsigned)__builtin_ctz(on);
                on &= on - 1;
                if (t[r].wild)
                    ex_all(q, x + (size_t)r * d, row + r, heaps);
                else
                    one(q, qv, cos, x + (size_t)r * d, &t[r], row + r, 1, heaps);
            }
            continue;
        }
        tile(q, qv, cos, x, t, row, on, heaps);
    }
    for (; i < n; i++) {
        if (!ex_allowed(allow, row0 + (int64_t)i, 1)) continue;
        t[0] = ex_row_terms(q, rows + i * d);
        if (t[0].wild)
            ex_all(q, rows + i * d, row0 + (int64_t)i, heaps);
        else
            one(q, qv, cos, rows + i * d, t, row0 + (int64_t)i, 1, heaps);
    }
}

/* ---- Serial reference: one row at a time, the 32 lanes of a panel in a plain loop. */

static void ex_row_serial(vdb_exact_queries *q, const float *qv, int cos, const float *x, const ex_row *t, int64_t row,
                          uint32_t on, vdb_topk *heaps)
{
    (void)on; /* mr = 1: the driver offers only allowed rows */
    const size_t d = q->d;
    for (size_t p = 0; p < q->panels; p++) {
        const float *P = q->packed + p * EX_W * d;
        float acc[EX_W] = {0};
        for (size_t k = 0; k < d; k++)
            for (int j = 0; j < EX_W; j++) acc[j] += x[k] * P[k * EX_W + j];
        uint32_t mask = 0;
        for (int j = 0; j < EX_W; j++) {
            float v = qv[p * EX_W + j];
            float lhs = cos ? t->beta * acc[j] * v : t->alpha + t->beta * acc[j] + t->gamma * v;
            if (!(lhs > q->lim[p * EX_W + j])) mask |= 1u << j; /* NaN too */
        }
        if (mask) ex_candidates(q, mask, p, x, row, heaps);
    }
}

static void vdb_exact_serial(vdb_exact_queries *q, const float *rows, size_t n, int64_t row0, const uint64_t *allow,
                             vdb_topk *heaps)
{
    ex_drive(1, ex_row_serial, ex_row_serial, q, rows, n, row0, allow, heaps);
}

#if defined(VDB_EXACT_X86)
/* ---- AVX-512: tiles of 8 rows x 32 queries = 16 zmm accumulators; leftover rows one by one. */

#define VDB_EXACT_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
enum { EX_MR512 = VDB_TILE_MR_AVX512 };

/* Bits of the 16 lanes at off..off+15 of panel p that can enter their heaps. */
static inline VDB_EXACT_AVX512 uint32_t ex_mask16_avx512(const vdb_exact_queries *q, const float *qv, int cos,
                                                        ex_row t, size_t p, int off, __m512 dot)
{
    const __m512 v = _mm512_loadu_ps(qv + p * EX_W + off);
    __m512 l;
    if (cos)
        l = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(t.beta), dot), v);
    else
        l = _mm512_fmadd_ps(_mm512_set1_ps(t.gamma), v,
                            _mm512_fmadd_ps(_mm512_set1_ps(t.beta), dot, _mm512_set1_ps(t.alpha)));
    return (uint32_t)_mm512_cmp_ps_mask(l, _mm512_loadu_ps(q->lim + p * EX_W + off), _CMP_NGT_UQ) << off;
}

static inline VDB_EXACT_AVX512 uint32_t ex_mask_avx512(const vdb_exact_queries *q, const float *qv, int cos,
                                                      ex_row t, size_t p, __m512 d0, __m512 d1)
{
    return ex_mask16_avx512(q, qv, cos, t, p, 0, d0) | ex_mask16_avx512(q, qv, cos, t, p, 16, d1);
}


static VDB_EXACT_AVX512 void ex_tile_avx512(vdb_exact_queries *q, const float *qv, int cos, const float *x,
                                            const ex_row *t, int64_t row, uint32_t on, vdb_topk *heaps)
{
    const size_t d = q->d;
    for (size_t p = 0; p < q->panels; p++) {
        __m512 acc[2 * EX_MR512];
        vdb_tile_dots_avx512(x, d, q->packed + p * EX_W * d, acc);
        for (int r = 0; r < EX_MR512; r++) {
            uint32_t mask = (on >> r) & 1 ? ex_mask_avx512(q, qv, cos, t[r], p, acc[2 * r], acc[2 * r + 1]) : 0;
            if (mask) ex_candidates(q, mask, p, x + (size_t)r * d, row + r, heaps);
        }
    }
}

static VDB_EXACT_AVX512 void ex_row_avx512(vdb_exact_queries *q, const float *qv, int cos, const float *x,
                                           const ex_row *t, int64_t row, uint32_t on, vdb_topk *heaps)
{
    (void)on; /* the driver offers only allowed rows one by one */
    const size_t d = q->d;
    for (size_t p = 0; p < q->panels; p++) {
        const float *P = q->packed + p * EX_W * d;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        for (size_t k = 0; k < d; k++) {
            __m512 xv = _mm512_set1_ps(x[k]);
            a0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(P + k * EX_W), a0);
            a1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(P + k * EX_W + 16), a1);
        }
        uint32_t mask = ex_mask_avx512(q, qv, cos, *t, p, a0, a1);
        if (mask) ex_candidates(q, mask, p, x, row, heaps);
    }
}

static void vdb_exact_avx512(vdb_exact_queries *q, const float *rows, size_t n, int64_t row0, const uint64_t *allow,
                             vdb_topk *heaps)
{
    ex_drive(EX_MR512, ex_tile_avx512, ex_row_avx512, q, rows, n, row0, allow, heaps);
}

/* ---- AVX2 + FMA: tiles of 6 rows x 16 queries (half a panel) = 12 ymm accumulators. */

#define VDB_EXACT_AVX2 __attribute__((target("avx2,fma")))
enum { EX_MR2 = VDB_TILE_MR_AVX2 };

/* Bits of the 8 lanes at off..off+7 of panel p that can enter their heaps. */
static inline VDB_EXACT_AVX2 uint32_t ex_mask8_avx2(const vdb_exact_queries *q, const float *qv, int cos, ex_row t,
                                                   size_t p, int off, __m256 dot)
{
    const __m256 v = _mm256_loadu_ps(qv + p * EX_W + off);
    __m256 l = cos ? _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(t.beta), dot), v)
                   : _mm256_fmadd_ps(_mm256_set1_ps(t.gamma), v,
                                     _mm256_fmadd_ps(_mm256_set1_ps(t.beta), dot, _mm256_set1_ps(t.alpha)));
    __m256 le = _mm256_cmp_ps(l, _mm256_loadu_ps(q->lim + p * EX_W + off), _CMP_NGT_UQ);
    return (uint32_t)_mm256_movemask_ps(le) << off;
}

static VDB_EXACT_AVX2 void ex_tile_avx2(vdb_exact_queries *q, const float *qv, int cos, const float *x,
                                        const ex_row *t, int64_t row, uint32_t on, vdb_topk *heaps)
{
    const size_t d = q->d;
    for (size_t p = 0; p < q->panels; p++) {
        for (int half = 0; half < 2 && p * EX_W + 16 * (size_t)half < q->nq; half++) {
            __m256 acc[2 * EX_MR2];
            vdb_tile_dots_avx2(x, d, q->packed + p * EX_W * d + 16 * half, acc);
            for (int r = 0; r < EX_MR2; r++) {
                if (!((on >> r) & 1)) continue;
                uint32_t mask = ex_mask8_avx2(q, qv, cos, t[r], p, 16 * half, acc[2 * r]) |
                                ex_mask8_avx2(q, qv, cos, t[r], p, 16 * half + 8, acc[2 * r + 1]);
                if (mask) ex_candidates(q, mask, p, x + (size_t)r * d, row + r, heaps);
            }
        }
    }
}

static VDB_EXACT_AVX2 void ex_row_avx2(vdb_exact_queries *q, const float *qv, int cos, const float *x,
                                       const ex_row *t, int64_t row, uint32_t on, vdb_topk *heaps)
{
    (void)on; /* the driver offers only allowed rows one by one */
    const size_t d = q->d;
    for (size_t p = 0; p < q->panels; p++) {
        const float *P = q->packed + p * EX_W * d;
        __m256 a[4];
        for (int h = 0; h < 4; h++) a[h] = _mm256_setzero_ps();
        for (size_t k = 0; k < d; k++) {
            __m256 xv = _mm256_broadcast_ss(x + k);
            for (int h = 0; h < 4; h++) a[h] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(P + k * EX_W + 8 * h), a[h]);
        }
        uint32_t mask = 0;
        for (int h = 0; h < 4; h++) mask |= ex_mask8_avx2(q, qv, cos, *t, p, 8 * h, a[h]);
        if (mask) ex_candidates(q, mask, p, x, row, heaps);
    }
}

static void vdb_exact_avx2(vdb_exact_queries *q, const float *rows, size_t n, int64_t row0, const uint64_t *allow,
                           vdb_topk *heaps)
{
    ex_drive(EX_MR2, ex_tile_avx2, ex_row_avx2, q, rows, n, row0, allow, heaps);
}
#endif /* VDB_EXACT_X86 */

/* ---- Dispatch: the widest variant the enabled CPU features allow (vdb_cpu). */

static vdb_exact_fn vdb_exact_variant(const char *isa, unsigned features)
{
    (void)features;
#if defined(VDB_EXACT_X86)
    if ((!isa || strcmp(isa, "avx512") == 0) && (features & VDB_CPU_AVX512)) return vdb_exact_avx512;
    if ((!isa || strcmp(isa, "avx2") == 0) && (features & VDB_CPU_AVX2)) return vdb_exact_avx2;
#endif
    if (!isa || strcmp(isa, "serial") == 0) return vdb_exact_serial;
    return NULL;
}

/* The bounds start from the heaps as they are (they may hold rows of an earlier call). */
static void ex_sync(vdb_exact_queries *q, vdb_topk *heaps)
{
    for (size_t j = 0; j < q->nq; j++) q->lim[j] = ex_lim(q, j, vdb_topk_threshold(&heaps[j]));
}

void vdb_exact_scan(vdb_exact_queries *q, const float *rows, size_t n, int64_t row0, const uint64_t *allow,
                    vdb_topk *heaps)
{
    if (n == 0) return;
    ex_sync(q, heaps);
    vdb_exact_variant(NULL, vdb_cpu_enabled())(q, rows, n, row0, allow, heaps);
}

int vdb_exact_scan_isa(const char *isa, vdb_exact_queries *q, const float *rows, size_t n, int64_t row0,
                       const uint64_t *allow, vdb_topk *heaps)
{
    vdb_exact_fn f = isa ? vdb_exact_variant(isa, vdb_cpu_detected()) : NULL;
    if (!f) return -1;
    ex_sync(q, heaps);
    if (n > 0) f(q, rows, n, row0, allow, heaps);
    return 0;
}
