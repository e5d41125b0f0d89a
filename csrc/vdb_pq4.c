/* vdb_pq4 — 4-bit PQ: training, encoding, packing, tables and the shuffle-based scan. See
 * vdb_pq4.h for the contract. */
#include "vdb_pq4.h"

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_cpu.h"
#include "vdb_distance.h"
#include "vdb_error.h"
#include "vdb_kmeans.h"
#include "vdb_topk.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define PQ4_HAVE_X86 1
#endif

#define PQ4_CALIB_POOL 16384      /* sample vectors whose errors calibrate eps (probes' neighbours among them) */
#define PQ4_CALIB_VECTORS 1024    /* random pairs: these pool vectors' errors ... */
#define PQ4_CALIB_PROBES 256      /* ... against these pool probes */
#define PQ4_CALIB_NEAR_PROBES 256 /* near pairs: these pool probes ... */
#define PQ4_CALIB_NEAR (VDB_PQ4_NEAR_PAIRS / PQ4_CALIB_NEAR_PROBES) /* ... with the errors of the vectors of their nearest probes */
#define PQ4_CALIB_NEAR_BLOCK 64   /* probes per distance block (64 x pool floats of scratch) */
#define PQ4_KMEANS_ITER 12
#define PQ4_TRAIN_PER_CENTROID 128 /* 2,048 points per sub-space: plenty for 16 centroids in a few dimensions */

static size_t pq4_len(const vdb_pq4 *pq, size_t j) { return pq->off[j + 1] - pq->off[j]; }

int vdb_pq4_create(size_t d, size_t m, vdb_pq4 **out)
{
    *out = NULL;
    if (d == 0 || m == 0 || m > d || m > VDB_PQ4_MAX_M)
        return vdb_set_error(VDB_EINVAL, "pq4 needs 1 <= sub-quantizers <= min(dimension, %d), got %zu for dimension %zu",
                             VDB_PQ4_MAX_M, m, d);
    if (d > ((size_t)1 << 24))
        return vdb_set_error(VDB_EINVAL, "pq4 dimension %zu too large", d);
    vdb_pq4 *pq = calloc(1, sizeof *pq);
    if (!pq) return vdb_set_error(VDB_ENOMEM, "out of memory for the pq4 quantizer");
    pq->d = d;
    pq->m = m;
    pq->m_pad = (m + 3) & ~(size_t)3;
    pq->off = malloc((m + 1) * sizeof *pq->off);
    pq->cent = calloc(16 * d, sizeof *pq->cent);
    if (!pq->off || !pq->cent) {
        vdb_pq4_free(pq);
        return vdb_set_error(VDB_ENOMEM, "out of memory for the pq4 quantizer");
    }
    size_t base = d / m, extra = d % m, o = 0;
    for (size_t j = 0; j < m; j++) {
        pq->off[j] = (uint32_t)o;
        o += base + (j < extra);
    }
    pq->off[m] = (uint32_t)d;
    *out = pq;
    return VDB_OK;
}

void vdb_pq4_free(vdb_pq4 *pq)
{
    if (!pq) return;
    free(pq->off);
    free(pq->cent);
    free(pq);
}

/* Encoders. Per vector and sub-space, the squared distances to the 16 centroids are summed over the
 * sub-space's dimensions in order, from 0, one rounding per operation (no fused multiply-add), and the
 * first smallest wins: every variant returns the same codes and the same err bits. The SIMD ones hold
 * the 16 centroids of a dimension in one zmm (two ymm), as the transposed storage lays them out. */
typedef void (*pq4_encode_fn)(const vdb_pq4 *pq, const float *x, size_t n, uint8_t *codes, float *err);

/* Nearest of the 16 centroids of sub-space j to xs (len floats); *d2 its squared distance. */
static unsigned pq4_nearest(const vdb_pq4 *pq, size_t j, const float *xs, float *d2)
{
    size_t len = pq4_len(pq, j);
    const float *ct = pq->cent + 16 * (size_t)pq->off[j];
    float acc[16];
    memset(acc, 0, sizeof acc);
    for (size_t t = 0; t < len; t++) {
        float v = xs[t];
        for (int c = 0; c < 16; c++) {
            float diff = v - ct[t * 16 + c];
            acc[c] += diff * diff;
        }
    }
    unsigned best = 0;
    for (unsigned c = 1; c < 16; c++)
        if (acc[c] < acc[best]) best = c;
    *d2 = acc[best];
    return best;
}

static void pq4_encode_serial(const vdb_pq4 *pq, const float *x, size_t n, uint8_t *codes, float *err)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * pq->d;
        double e = 0;
        for (size_t j = 0; j < pq->m; j++) {
            float d2;
            codes[i * pq->m + j] = (uint8_t)pq4_nearest(pq, j, xi + pq->off[j], &d2);
            e += d2;
        }
        if (err) err[i] = (float)sqrt(e);
    }
}

#if defined(PQ4_HAVE_X86)
__attribute__((target("avx512f"))) static void pq4_encode_avx512(const vdb_pq4 *pq, const float *x, size_t n,
                                                                 uint8_t *codes, float *err)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * pq->d;
        double e = 0;
        for (size_t j = 0; j < pq->m; j++) {
            const float *xs = xi + pq->off[j], *ct = pq->cent + 16 * (size_t)pq->off[j];
            __m512 acc = _mm512_setzero_ps();
            for (size_t t = 0; t < pq4_len(pq, j); t++) {
                __m512 diff = _mm512_sub_ps(_mm512_set1_ps(xs[t]), _mm512_loadu_ps(ct + t * 16));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(diff, diff));
            }
            float lo = _mm512_reduce_min_ps(acc);
            unsigned mask = _mm512_cmp_ps_mask(acc, _mm512_set1_ps(lo), _CMP_EQ_OQ);
            unsigned best = mask ? (unsigned)__builtin_ctz(mask) : 0; /* no lane equal: NaN, as serial */
            float lanes[16];
            _mm512_storeu_ps(lanes, acc);
            codes[i * pq->m + j] = (uint8_t)best;
            e += lanes[best];
        }
        if (err) err[i] = (float)sqrt(e);
    }
}

__attribute__((target("avx2"))) static void pq4_encode_avx2(const vdb_pq4 *pq, const float *x, size_t n,
                                                            uint8_t *codes, float *err)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * pq->d;
        double e = 0;
        for (size_t j = 0; j < pq->m; j++) {
            const float *xs = xi + pq->off[j], *ct = pq->cent + 16 * (size_t)pq->off[j];
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;
            for (size_t t = 0; t < pq4_len(pq, j); t++) {
                __m256 v = _mm256_set1_ps(xs[t]);
                __m256 d0 = _mm256_sub_ps(v, _mm256_loadu_ps(ct + t * 16));
                __m256 d1 = _mm256_sub_ps(v, _mm256_loadu_ps(ct + t * 16 + 8));
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(d0, d0));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(d1, d1));
            }
            __m256 mn = _mm256_min_ps(a0, a1);
            mn = _mm256_min_ps(mn, _mm256_permute2f128_ps(mn, mn, 1));
            mn = _mm256_min_ps(mn, _mm256_shuffle_ps(mn, mn, _MM_SHUFFLE(1, 0, 3, 2)));
            mn = _mm256_min_ps(mn, _mm256_shuffle_ps(mn, mn, _MM_SHUFFLE(2, 3, 0, 1)));
            unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a0, mn, _CMP_EQ_OQ)) |
                            (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a1, mn, _CMP_EQ_OQ)) << 8;
            unsigned best = mask ? (unsigned)__builtin_ctz(mask) : 0; /* no lane equal: NaN, as serial */
            float lanes[16];
            _mm256_storeu_ps(lanes, a0);
            _mm256_storeu_ps(lanes + 8, a1);
            codes[i * pq->m + j] = (uint8_t)best;
            e += lanes[best];
        }
        if (err) err[i] = (float)sqrt(e);
    }
}
#endif


void vdb_pq4_decode(const vdb_pq4 *pq, const uint8_t *code, float *x)
{
    for (size_t j = 0; j < pq->m; j++) {
        const float *ct = pq->cent + 16 * (size_t)pq->off[j];
        for (size_t t = 0; t < pq4_len(pq, j); t++) x[pq->off[j] + t] = ct[t * 16 + (code[j] & 15)];
    }
}

static double pq4_dot(const float *a, const float *b, size_t d)
{
    double s = 0;
    for (size_t t = 0; t < d; t++) s += (double)a[t] * b[t];
    return s;
}

/* e = xs - its decoded code (d floats; code: m bytes of scratch); returns |e|. */
static double pq4_error(const vdb_pq4 *pq, const float *xs, uint8_t *code, float *e)
{
    vdb_pq4_encode(pq, xs, 1, code, NULL);
    vdb_pq4_decode(pq, code, e);
    double ee = 0;
    for (size_t t = 0; t < pq->d; t++) {
        e[t] = xs[t] - e[t];
        ee += (double)e[t] * e[t];
    }
    return sqrt(ee);
}

/* The k-th smallest of v[0..n) (k < n), reordering v: Hoare's selection with a median-of-three
 * pivot, O(n) expected, where sorting the ~260k calibration ratios took longer than measuring them. */
static float pq4_select(float *v, size_t n, size_t k)
{
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, want = (ptrdiff_t)k;
    while (lo < hi) {
        float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi];
        float pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        ptrdiff_t i = lo, j = hi;
        while (i <= j) { /* the pivot is in [lo, hi]: both scans stop inside it */
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (want <= j) hi = j;        /* v[lo..j] <= pivot */
        else if (want >= i) lo = i;   /* v[i..hi] >= pivot */
        else break;                   /* v[j+1..i-1] == pivot */
    }
    return v[k];
}

/* Gives the VDB_PQ4_CONFIDENCE quantile of v[0..n) (signed ratios) as *hi and that of -v as *lo,
 * each at least 0; both 0 when n == 0. Reorders v. */
static void pq4_tails(float *v, size_t n, float *hi, float *lo)
{
    *hi = *lo = 0.0f;
    if (n == 0) return;
    size_t at = (size_t)ceil(VDB_PQ4_CONFIDENCE * (double)(n - 1));
    float top = pq4_select(v, n, at), bottom = pq4_select(v, n, n - 1 - at);
    if (top > 0) *hi = top;
    if (-bottom > 0) *lo = -bottom;
}

/* eps_hi / eps_lo over a pool of sample vectors: the VDB_PQ4_CONFIDENCE quantile of |<u, e>| /
 * (|u| |e|) over random pairs (probe p, error of vector s) bounds both sides; near pairs (probe p,
 * errors of the PQ4_CALIB_NEAR vectors whose probes are nearest p's) raise each side to their own
 * quantile of the signed ratio. Near pairs are the ones a search must get right, and their ratio
 * is biased upward: a query close to x has <q, e> ~ <x, e> = <x^, e> + |e|^2 > 0, so the random
 * pairs' bound alone was exceeded by ~10% of true neighbours (recall@10 stopped at 0.986 on
 * 78k x 384 text embeddings whatever n_probe). */
static int pq4_calibrate(vdb_pq4 *pq, const float *x, size_t n, const float *probe, uint64_t seed,
                         vdb_pq4_pair *pairs, size_t *n_pairs)
{
    int rc = VDB_OK;
    const size_t d = pq->d, npool = n < PQ4_CALIB_POOL ? n : PQ4_CALIB_POOL;
    const size_t nrp = npool < PQ4_CALIB_PROBES ? npool : PQ4_CALIB_PROBES;
    const size_t nrs = npool < PQ4_CALIB_VECTORS ? npool : PQ4_CALIB_VECTORS;
    const size_t nnp = npool < PQ4_CALIB_NEAR_PROBES ? npool : PQ4_CALIB_NEAR_PROBES;
    const size_t nb = PQ4_CALIB_NEAR_BLOCK;
    size_t *si = malloc(npool * sizeof *si);
    float *e = malloc((nrs + 1) * d * sizeof *e), *u = malloc(npool * d * sizeof *u), *uu = malloc(nrp * d * sizeof *uu + 1);
    double *en = malloc((nrs + 1) * sizeof *en), *un = malloc(npool * sizeof *un);
    float *far = malloc((nrp * nrs + 1) * sizeof *far), *near = malloc(nnp * PQ4_CALIB_NEAR * sizeof *near + 1);
    float *dist = malloc(nb * npool * sizeof *dist), nd[PQ4_CALIB_NEAR];
    int64_t ni[PQ4_CALIB_NEAR];
    uint8_t *code = malloc(pq->m);
    if (!si || !e || !u || !uu || !en || !un || !far || !near || !dist || !code) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory calibrating the pq4 error estimate");
        goto cleanup;
    }
    vdb_kmeans_sample(n, npool, seed ^ 0x9e3779b97f4a7c15ull, si);
    for (size_t s = 0; s < npool; s++) {
        memcpy(u + s * d, probe + si[s] * d, d * sizeof *u);
        un[s] = sqrt(pq4_dot(u + s * d, u + s * d, d));
    }
    /* errors of the random partners (the pool's first nrs) now, of near partners when chosen */
    for (size_t s = 0; s < nrs; s++) en[s] = pq4_error(pq, x + si[s] * d, code, e + s * d);
    float *ne = e + nrs * d; /* one near partner's error */
    size_t nf = 0, nn = 0;
    /* The pool is a random sample: its first vectors are random probes and random partners. Their
     * nrp x nrs dot products come from the blocked kernel, on unit-length copies (1 - dot in float
     * is then ~1e-7 off the ratio itself, whose 0.999 quantile is kept, at any scale of the data:
     * unscaled, small vectors' dot products vanished in the rounding of 1 - dot), written into far
     * and compacted in place (nf never passes the entry read). */
    for (size_t p = 0; p < nrp; p++)
        for (size_t j = 0; j < d; j++) uu[p * d + j] = un[p] > 0 ? (float)(u[p * d + j] / un[p]) : 0.0f;
    for (size_t s = 0; s < nrs; s++)
        for (size_t j = 0; j < d; j++) e[s * d + j] = en[s] > 0 ? (float)(e[s * d + j] / en[s]) : 0.0f;
    vdb_distance_block(VDB_METRIC_IP, uu, nrp, e, nrs, d, far);
    for (size_t p = 0; p < nrp; p++)
        for (size_t s = 0; s < nrs; s++) {
            float one_minus_dot = far[p * nrs + s];
            if (s == p || !(un[p] > 0) || !(en[s] > 0)) continue;
            double r = fabs(1.0 - (double)one_minus_dot);
            far[nf++] = r < 1.0 ? (float)r : 1.0f; /* Cauchy-Schwarz, against the float rounding */
        }
    for (size_t p0 = 0; p0 < nnp; p0 += nb) {
        size_t bq = nnp - p0 < nb ? nnp - p0 : nb;
        vdb_distance_block(VDB_METRIC_L2, u + p0 * d, bq, u, npool, d, dist);
        for (size_t b = 0; b < bq; b++) {
            const size_t p = p0 + b;
            if (!(un[p] > 0)) continue;
            vdb_topk H;
            vdb_topk_init(&H, PQ4_CALIB_NEAR, nd, ni);
            for (size_t s = 0; s < npool; s++)
                if (s != p) vdb_topk_push(&H, dist[b * npool + s], (int64_t)s);
            for (size_t h = 0; h < H.size; h++) {
                size_t s = (size_t)ni[h];
                double es = pq4_error(pq, x + si[s] * d, code, ne);
                if (!(es > 0)) continue;
                double r = pq4_dot(u + p * d, ne, d) / (un[p] * es);
                if (pairs) pairs[nn] = (vdb_pq4_pair){(uint32_t)si[p], (uint32_t)si[s], (float)r};
                near[nn++] = (float)r;
            }
        }
    }
    if (n_pairs) *n_pairs = nn;
    if (nf + nn == 0) {
        pq->eps_rand = pq->eps_hi = pq->eps_lo = 1.0f; /* nothing measured: Cauchy-Schwarz */
    } else {
        float f, unused, hi_n, lo_n;
        pq4_tails(far, nf, &f, &unused); /* far holds |ratio|: one bound for both sides */
        pq4_tails(near, nn, &hi_n, &lo_n);
        pq->eps_rand = f;
        pq->eps_hi = f > hi_n ? f : hi_n;
        pq->eps_lo = f > lo_n ? f : lo_n;
    }
cleanup:
    free(si);
    free(e);
    free(u);
    free(uu);
    free(en);
    free(un);
    free(far);
    free(near);
    free(dist);
    free(code);
    return rc;
}

int vdb_pq4_train(vdb_pq4 *pq, const float *x, size_t n, const float *probe, uint64_t seed, vdb_pq4_pair *near,
                  size_t *n_near)
{
    if (n < 16) return vdb_set_error(VDB_EINVAL, "pq4 training needs at least 16 vectors, got %zu", n);
    int rc = VDB_OK;
    size_t d = pq->d, maxlen = pq4_len(pq, 0); /* the first sub-space is the longest */
    float *sub = malloc(n * maxlen * sizeof *sub), *c = malloc(16 * maxlen * sizeof *c);
    if (!sub || !c) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory training the pq4 quantizer");
        goto cleanup;
    }
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.n_iter = PQ4_KMEANS_ITER;
    p.max_points_per_centroid = PQ4_TRAIN_PER_CENTROID;
    for (size_t j = 0; j < pq->m; j++) {
        size_t len = pq4_len(pq, j), o = pq->off[j];
        for (size_t i = 0; i < n; i++) memcpy(sub + i * len, x + i * d + o, len * sizeof(float));
        p.seed = seed + 0x632be59bd9b4e019ull * (j + 1);
        rc = vdb_kmeans_train(VDB_METRIC_L2, sub, n, len, 16, &p, c, NULL);
        if (rc) goto cleanup;
        for (size_t cc = 0; cc < 16; cc++)
            for (size_t t = 0; t < len; t++) pq->cent[16 * o + t * 16 + cc] = c[cc * len + t];
    }
    rc = pq4_calibrate(pq, x, n, probe ? probe : x, seed, near, n_near);
cleanup:
    free(sub);
    free(c);
    return rc;
}

size_t vdb_pq4_block_bytes(const vdb_pq4 *pq) { return pq->m_pad * 16; }

void vdb_pq4_pack_set(uint8_t *packed, size_t m_pad, size_t m, size_t i, const uint8_t *code)
{
    uint8_t *blk = packed + (i / VDB_PQ4_BLOCK) * m_pad * 16;
    size_t t = i % VDB_PQ4_BLOCK, byte = t & 15;
    int high = t >= 16;
    for (size_t j = 0; j < m_pad; j++) {
        uint8_t v = j < m ? (code[j] & 15) : 0;
        uint8_t *b = blk + j * 16 + byte;
        *b = high ? (uint8_t)((*b & 0x0f) | (v << 4)) : (uint8_t)((*b & 0xf0) | v);
    }
}

void vdb_pq4_pack_get(const uint8_t *packed, size_t m_pad, size_t m, size_t i, uint8_t *code)
{
    const uint8_t *blk = packed + (i / VDB_PQ4_BLOCK) * m_pad * 16;
    size_t t = i % VDB_PQ4_BLOCK, byte = t & 15;
    for (size_t j = 0; j < m; j++) {
        uint8_t b = blk[j * 16 + byte];
        code[j] = t >= 16 ? (uint8_t)(b >> 4) : (uint8_t)(b & 15);
    }
}

static void pq4_lut_serial(const vdb_pq4 *pq, const float *q, float *lut)
{
    for (size_t j = 0; j < pq->m; j++) {
        const float *ct = pq->cent + 16 * (size_t)pq->off[j];
        const float *qs = q + pq->off[j];
        float acc[16] = {0};
        if (pq4_len(pq, j) == 4) { /* the default shape, unrolled as in pq4_nearest */
            for (int c = 0; c < 16; c++)
                acc[c] = qs[0] * ct[c] + qs[1] * ct[16 + c] + qs[2] * ct[32 + c] + qs[3] * ct[48 + c];
        } else {
            for (size_t t = 0; t < pq4_len(pq, j); t++)
                for (int c = 0; c < 16; c++) acc[c] += qs[t] * ct[t * 16 + c];
        }
        memcpy(lut + j * 16, acc, sizeof acc);
    }
    memset(lut + pq->m * 16, 0, (pq->m_pad - pq->m) * 16 * sizeof(float));
}

static void pq4_quantize_serial(const float *lut, size_t m_pad, uint8_t *lut8, double *step, double *bias)
{
    double span = 0, b = 0;
    float mins[VDB_PQ4_MAX_M];
    for (size_t j = 0; j < m_pad; j++) {
        /* four lanes, then across them: min / max of 4-wide vectors, not a 15-step dependent chain */
        float lo4[4], hi4[4];
        for (int t = 0; t < 4; t++) lo4[t] = hi4[t] = lut[j * 16 + t];
        for (int c = 4; c < 16; c += 4)
            for (int t = 0; t < 4; t++) {
                float v = lut[j * 16 + c + t];
                lo4[t] = v < lo4[t] ? v : lo4[t];
                hi4[t] = v > hi4[t] ? v : hi4[t];
            }
        float lo = lo4[0], hi = hi4[0];
        for (int t = 1; t < 4; t++) {
            lo = lo4[t] < lo ? lo4[t] : lo;
            hi = hi4[t] > hi ? hi4[t] : hi;
        }
        mins[j] = lo;
        b += lo;
        if ((double)hi - lo > span) span = (double)hi - lo;
    }
    const float a = span > 0 ? (float)(255.0 / span) : 0.0f;
    for (size_t j = 0; j < m_pad; j++)
        for (int c = 0; c < 16; c++) {
            /* >= 0, so truncating x + 0.5 rounds to nearest; clamped against float rounding */
            float u = (lut[j * 16 + c] - mins[j]) * a + 0.5f;
            u = u < 255.0f ? u : 255.0f; /* min / max / truncate: the compiler vectorizes these */
            u = u > 0.0f ? u : 0.0f;
            lut8[j * 16 + c] = (uint8_t)(int)u;
        }
    *step = span > 0 ? span / 255.0 : 0.0;
    *bias = b;
}


/* The tables' SIMD variants: the serial arithmetic lane for lane (a sub-space's 16 centroids in one
 * register; products and sums in the serial order, no fused multiply-add; min / max as the
 * serial ternaries, which are what MINPS / MAXPS compute, NaN and signed zeros included), so every
 * variant gives the same bits. The scalar parts (the table's bias and span in double) are shared. */
typedef void (*pq4_lut_fn)(const vdb_pq4 *pq, const float *q, float *lut);
typedef void (*pq4_quantize_fn)(const float *lut, size_t m_pad, uint8_t *lut8, double *step, double *bias);

#if defined(PQ4_HAVE_X86)
/* A sub-space table's min and max as the serial loop finds them (4 lanes, then across them). */
static inline void pq4_minmax_sse(const float *t, float *lo_out, float *hi_out)
{
    __m128 lo = _mm_loadu_ps(t), hi = lo;
    for (int c = 4; c < 16; c += 4) {
        __m128 v = _mm_loadu_ps(t + c);
        lo = _mm_min_ps(v, lo); /* v < lo ? v : lo */
        hi = _mm_max_ps(v, hi);
    }
    float l4[4], h4[4];
    _mm_storeu_ps(l4, lo);
    _mm_storeu_ps(h4, hi);
    float l = l4[0], h = h4[0];
    for (int t = 1; t < 4; t++) {
        l = l4[t] < l ? l4[t] : l;
        h = h4[t] > h ? h4[t] : h;
    }
    *lo_out = l;
    *hi_out = h;
}

/* The serial first pass: mins, bias and the common scale a (0 for constant tables). */
static inline float pq4_quantize_scale(const float *lut, size_t m_pad, float *mins, double *step, double *bias)
{
    double span = 0, b = 0;
    for (size_t j = 0; j < m_pad; j++) {
        float lo, hi;
        pq4_minmax_sse(lut + j * 16, &lo, &hi);
        mins[j] = lo;
        b += lo;
        if ((double)hi - lo > span) span = (double)hi - lo;
    }
    *step = span > 0 ? span / 255.0 : 0.0;
    *bias = b;
    return span > 0 ? (float)(255.0 / span) : 0.0f;
}

__attribute__((target("avx512f"))) static void pq4_lut_avx512(const vdb_pq4 *pq, const float *q, float *lut)
{
    for (size_t j = 0; j < pq->m; j++) {
        const float *ct = pq->cent + 16 * (size_t)pq->off[j], *qs = q + pq->off[j];
        const size_t len = pq4_len(pq, j);
        __m512 acc;
        if (len == 4) {
            acc = _mm512_mul_ps(_mm512_set1_ps(qs[0]), _mm512_loadu_ps(ct));
            for (size_t t = 1; t < 4; t++)
                acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(qs[t]), _mm512_loadu_ps(ct + t * 16)));
        } else {
            acc = _mm512_setzero_ps();
            for (size_t t = 0; t < len; t++)
                acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(qs[t]), _mm512_loadu_ps(ct + t * 16)));
        }
        _mm512_storeu_ps(lut + j * 16, acc);
    }
    memset(lut + pq->m * 16, 0, (pq->m_pad - pq->m) * 16 * sizeof(float));
}

__attribute__((target("avx512f"))) static void pq4_quantize_avx512(const float *lut, size_t m_pad, uint8_t *lut8,
                                                                  double *step, double *bias)
{
    float mins[VDB_PQ4_MAX_M];
    const __m512 a = _mm512_set1_ps(pq4_quantize_scale(lut, m_pad, mins, step, bias));
    for (size_t j = 0; j < m_pad; j++) {
        __m512 u = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(lut + j * 16), _mm512_set1_ps(mins[j])), a),
                                 _mm512_set1_ps(0.5f));
        u = _mm512_max_ps(_mm512_min_ps(u, _mm512_set1_ps(255.0f)), _mm512_setzero_ps());
        _mm_storeu_si128((__m128i *)(lut8 + j * 16), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(u)));
    }
}

__attribute__((target("avx2"))) static void pq4_lut_avx2(const vdb_pq4 *pq, const float *q, float *lut)
{
    for (size_t j = 0; j < pq->m; j++) {
        const float *ct = pq->cent + 16 * (size_t)pq->off[j], *qs = q + pq->off[j];
        const size_t len = pq4_len(pq, j);
        __m256 a0, a1;
        size_t t = 0;
        if (len == 4) {
            __m256 v = _mm256_set1_ps(qs[0]);
            a0 = _mm256_mul_ps(v, _mm256_loadu_ps(ct));
            a1 = _mm256_mul_ps(v, _mm256_loadu_ps(ct + 8));
            t = 1;
        } else {
            a0 = a1 = _mm256_setzero_ps();
        }
        for (; t < len; t++) {
            __m256 v = _mm256_set1_ps(qs[t]);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(v, _mm256_loadu_ps(ct + t * 16)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(v, _mm256_loadu_ps(ct + t * 16 + 8)));
        }
        _mm256_storeu_ps(lut + j * 16, a0);
        _mm256_storeu_ps(lut + j * 16 + 8, a1);
    }
    memset(lut + pq->m * 16, 0, (pq->m_pad - pq->m) * 16 * sizeof(float));
}

__attribute__((target("avx2"))) static void pq4_quantize_avx2(const float *lut, size_t m_pad, uint8_t *lut8,
                                                             double *step, double *bias)
{
    float mins[VDB_PQ4_MAX_M];
    const __m256 a = _mm256_set1_ps(pq4_quantize_scale(lut, m_pad, mins, step, bias));
    const __m256 top = _mm256_set1_ps(255.0f), half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
    for (size_t j = 0; j < m_pad; j++) {
        const __m256 mn = _mm256_set1_ps(mins[j]);
        __m256i w[2];
        for (int h = 0; h < 2; h++) {
            __m256 u = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(lut + j * 16 + h * 8), mn), a), half);
            w[h] = _mm256_cvttps_epi32(_mm256_max_ps(_mm256_min_ps(u, top), zero));
        }
        /* 0..255 each: the saturating packs are exact; packus_epi32 interleaves the 128-bit lanes */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(w[0], w[1]), 0xD8);
        __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        _mm_storeu_si128((__m128i *)(lut8 + j * 16), b);
    }
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* Scan kernels */

/* A scan kernel: sums of the ceil(n / 32) blocks into out; with surv, also the positions i < n
 * whose sum is >= smin (<= 0xFFFF), ascending, returning their count (0 without surv). */
typedef size_t (*pq4_scan_fn)(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8, unsigned smin,
                              uint16_t *out, uint32_t *surv);

static size_t pq4_scan_serial(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8, unsigned smin,
                              uint16_t *out, uint32_t *surv)
{
    size_t ns = 0, n_blocks = (n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK;
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = packed + b * m_pad * 16;
        for (size_t t = 0; t < VDB_PQ4_BLOCK; t++) {
            unsigned s = 0;
            for (size_t j = 0; j < m_pad; j++) {
                uint8_t byte = blk[j * 16 + (t & 15)];
                s += lut8[j * 16 + (t < 16 ? (byte & 15) : (byte >> 4))];
            }
            size_t i = b * VDB_PQ4_BLOCK + t;
            out[i] = (uint16_t)s;
            if (surv && i < n && s >= smin) surv[ns++] = (uint32_t)i;
        }
    }
    return ns;
}

/* The survivors of one block from its 32-bit mask (bit t: vector 32b + t passed), the padding
 * vectors past n masked off. */
static inline size_t pq4_emit(uint32_t mask, size_t b, size_t n, uint32_t *surv, size_t ns)
{
    size_t base = b * VDB_PQ4_BLOCK;
    if (n - base < VDB_PQ4_BLOCK) mask &= (1u << (n - base)) - 1;
    while (mask) {
        surv[ns++] = (uint32_t)(base + (size_t)__builtin_ctz(mask));
        mask &= mask - 1;
    }
    return ns;
}

/* Query blocking: the sums of one packed list for up to PQ4_MULTI tables at once (each block's
 * codes loaded and split into nibbles once, then looked up in every table); out[g] as
 * pq4_scan's out for table g. And the cut of stored sums: positions i < n with sums[i] >= smin. */
#define PQ4_MULTI 4
typedef void (*pq4_multi_fn)(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts, size_t nlut,
                             uint16_t *const *outs);
typedef size_t (*pq4_cut_fn)(const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv);

static void pq4_multi_serial(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts, size_t nlut,
                             uint16_t *const *outs)
{
    for (size_t g = 0; g < nlut; g++) pq4_scan_serial(packed, n, m_pad, luts[g], 0, outs[g], NULL);
}

static size_t pq4_cut_serial(const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv)
{
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        surv[ns] = (uint32_t)i; /* branch-free: written always, kept when it passes */
        ns += sums[i] >= smin;
    }
    return ns;
}

/* Runs fn_g (an always-inline kernel whose last argument, the table count, is a constant in each
 * case, so its loops over tables unroll into registers) over the tables in groups of PQ4_MULTI. */
#define PQ4_MULTI_GROUPS(fn_g)                                                                         \
    for (size_t g0 = 0; g0 < nlut; g0 += PQ4_MULTI) {                                                  \
        switch (nlut - g0 < PQ4_MULTI ? nlut - g0 : PQ4_MULTI) {                                       \
        case 1: fn_g(packed, n, m_pad, luts + g0, outs + g0, 1); break;                               \
        case 2: fn_g(packed, n, m_pad, luts + g0, outs + g0, 2); break;                               \
        case 3: fn_g(packed, n, m_pad, luts + g0, outs + g0, 3); break;                               \
        default: fn_g(packed, n, m_pad, luts + g0, outs + g0, 4); break;                              \
        }                                                                                              \
    }

#if defined(PQ4_HAVE_X86)
#define PQ4_AVX2 __attribute__((target("avx2")))
#define PQ4_AVX512 __attribute__((target("avx512f,avx512bw,avx2,popcnt"))) /* popcnt: every AVX-512 CPU has it */

/* Accumulation: adding the looked-up bytes as 16-bit words sums (even byte + 256 * odd byte)
 * modulo 2^16; a second accumulator adds the odd bytes alone (word >> 8). The even sums are then
 * acc - (odd << 8), exact because every true sum is below 2^16. Even bytes are vectors 0, 2, ...
 * of a lane, odd bytes vectors 1, 3, ...; lanes hold different sub-spaces and are added last. */
/* Stores 16 sums in vector order and returns the 16-bit mask of those >= vmin (unsigned). */
PQ4_AVX2 static unsigned pq4_finish_128(__m128i even_w, __m128i odd, uint16_t *out, __m128i vmin)
{
    __m128i even = _mm_sub_epi16(even_w, _mm_slli_epi16(odd, 8));
    __m128i a = _mm_unpacklo_epi16(even, odd), b = _mm_unpackhi_epi16(even, odd);
    _mm_storeu_si128((__m128i *)out, a);
    _mm_storeu_si128((__m128i *)(out + 8), b);
    __m128i ga = _mm_cmpeq_epi16(_mm_max_epu16(a, vmin), a), gb = _mm_cmpeq_epi16(_mm_max_epu16(b, vmin), b);
    return (unsigned)_mm_movemask_epi8(_mm_packs_epi16(ga, gb));
}

PQ4_AVX2 static size_t pq4_scan_avx2(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8, unsigned smin,
                                     uint16_t *out, uint32_t *surv)
{
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m128i vmin = _mm_set1_epi16((short)(uint16_t)smin);
    size_t ns = 0, n_blocks = (n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK;
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = packed + b * m_pad * 16;
        __m256i lo_w = _mm256_setzero_si256(), lo_o = lo_w, hi_w = lo_w, hi_o = lo_w;
        for (size_t j = 0; j < m_pad; j += 2) {
            __m256i c = _mm256_loadu_si256((const __m256i *)(blk + j * 16));
            __m256i t = _mm256_loadu_si256((const __m256i *)(lut8 + j * 16));
            __m256i rl = _mm256_shuffle_epi8(t, _mm256_and_si256(c, nib));
            __m256i rh = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16(c, 4), nib));
            lo_w = _mm256_add_epi16(lo_w, rl);
            lo_o = _mm256_add_epi16(lo_o, _mm256_srli_epi16(rl, 8));
            hi_w = _mm256_add_epi16(hi_w, rh);
            hi_o = _mm256_add_epi16(hi_o, _mm256_srli_epi16(rh, 8));
        }
        uint16_t *o = out + b * VDB_PQ4_BLOCK;
        uint32_t mask = pq4_finish_128(_mm_add_epi16(_mm256_castsi256_si128(lo_w), _mm256_extracti128_si256(lo_w, 1)),
                                       _mm_add_epi16(_mm256_castsi256_si128(lo_o), _mm256_extracti128_si256(lo_o, 1)),
                                       o, vmin);
        mask |= pq4_finish_128(_mm_add_epi16(_mm256_castsi256_si128(hi_w), _mm256_extracti128_si256(hi_w, 1)),
                               _mm_add_epi16(_mm256_castsi256_si128(hi_o), _mm256_extracti128_si256(hi_o, 1)),
                               o + 16, vmin) << 16;
        if (surv) ns = pq4_emit(mask, b, n, surv, ns);
    }
    return ns;
}

/* G tables over one list: per block, the codes' nibbles once, then G lookups and accumulations. */
PQ4_AVX2 static inline __attribute__((always_inline)) void pq4_multi_avx2_g(const uint8_t *packed, size_t n,
                                                                            size_t m_pad, const uint8_t *const *luts,
                                                                            uint16_t *const *outs, const int G)
{
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m128i zero = _mm_setzero_si128();
    const size_t n_blocks = (n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK;
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = packed + b * m_pad * 16;
        __m256i acc[PQ4_MULTI][4];
        for (int g = 0; g < G; g++)
            for (int a = 0; a < 4; a++) acc[g][a] = _mm256_setzero_si256();
        for (size_t j = 0; j < m_pad; j += 2) {
            __m256i c = _mm256_loadu_si256((const __m256i *)(blk + j * 16));
            __m256i cl = _mm256_and_si256(c, nib), ch = _mm256_and_si256(_mm256_srli_epi16(c, 4), nib);
            for (int g = 0; g < G; g++) {
                __m256i t = _mm256_loadu_si256((const __m256i *)(luts[g] + j * 16));
                __m256i rl = _mm256_shuffle_epi8(t, cl), rh = _mm256_shuffle_epi8(t, ch);
                acc[g][0] = _mm256_add_epi16(acc[g][0], rl);
                acc[g][1] = _mm256_add_epi16(acc[g][1], _mm256_srli_epi16(rl, 8));
                acc[g][2] = _mm256_add_epi16(acc[g][2], rh);
                acc[g][3] = _mm256_add_epi16(acc[g][3], _mm256_srli_epi16(rh, 8));
            }
        }
        for (int g = 0; g < G; g++) {
            uint16_t *o = outs[g] + b * VDB_PQ4_BLOCK;
            __m128i s[4];
            for (int a = 0; a < 4; a++)
                s[a] = _mm_add_epi16(_mm256_castsi256_si128(acc[g][a]), _mm256_extracti128_si256(acc[g][a], 1));
            pq4_finish_128(s[0], s[1], o, zero);
            pq4_finish_128(s[2], s[3], o + 16, zero);
        }
    }
}

PQ4_AVX2 static void pq4_multi_avx2(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts,
                                    size_t nlut, uint16_t *const *outs)
{
    PQ4_MULTI_GROUPS(pq4_multi_avx2_g);
}

PQ4_AVX2 static size_t pq4_cut_avx2(const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv)
{
    const __m256i vmin = _mm256_set1_epi16((short)(uint16_t)smin);
    size_t ns = 0, b = 0;
    for (; (b + 1) * VDB_PQ4_BLOCK <= n; b++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(sums + b * VDB_PQ4_BLOCK));
        __m256i c = _mm256_loadu_si256((const __m256i *)(sums + b * VDB_PQ4_BLOCK + 16));
        __m256i ga = _mm256_cmpeq_epi16(_mm256_max_epu16(a, vmin), a), gc = _mm256_cmpeq_epi16(_mm256_max_epu16(c, vmin), c);
        /* packs interleaves the 128-bit lanes: put them back in order before the byte mask */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi16(ga, gc), 0xD8);
        ns = pq4_emit((uint32_t)_mm256_movemask_epi8(p), b, n, surv, ns);
    }
    for (size_t i = b * VDB_PQ4_BLOCK; i < n; i++) { /* the last partial block */
        surv[ns] = (uint32_t)i;
        ns += sums[i] >= smin;
    }
    return ns;
}

/* pq4_emit without its loop over the mask's bits (one branch mispredicted a block, the survivor
 * count being a coin toss): each half's positions compressed into one store of 16 (the lanes past
 * the survivors are junk, written below base + 32 <= n). A partial last block goes through
 * pq4_emit, which writes no position >= n. */
PQ4_AVX512 static inline size_t pq4_emit_512(uint32_t mask, size_t b, size_t n, uint32_t *surv, size_t ns)
{
    const size_t base = b * VDB_PQ4_BLOCK;
    if (n - base < VDB_PQ4_BLOCK) return pq4_emit(mask, b, n, surv, ns);
    const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32((int)base),
                                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(16));
    _mm512_storeu_si512((void *)(surv + ns), _mm512_maskz_compress_epi32((__mmask16)mask, lo));
    ns += (size_t)__builtin_popcount(mask & 0xFFFFu);
    _mm512_storeu_si512((void *)(surv + ns), _mm512_maskz_compress_epi32((__mmask16)(mask >> 16), hi));
    return ns + (size_t)__builtin_popcount(mask >> 16);
}

PQ4_AVX512 static __m128i pq4_sum_lanes_512(__m512i v)
{
    __m256i h = _mm256_add_epi16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    return _mm_add_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

PQ4_AVX512 static size_t pq4_scan_avx512(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8,
                                         unsigned smin, uint16_t *out, uint32_t *surv)
{
    const __m512i nib = _mm512_set1_epi8(0x0f);
    const __m128i vmin = _mm_set1_epi16((short)(uint16_t)smin);
    size_t ns = 0, n_blocks = (n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK;
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = packed + b * m_pad * 16;
        __m512i lo_w = _mm512_setzero_si512(), lo_o = lo_w, hi_w = lo_w, hi_o = lo_w;
        for (size_t j = 0; j < m_pad; j += 4) {
            __m512i c = _mm512_loadu_si512((const void *)(blk + j * 16));
            __m512i t = _mm512_loadu_si512((const void *)(lut8 + j * 16));
            __m512i rl = _mm512_shuffle_epi8(t, _mm512_and_si512(c, nib));
            __m512i rh = _mm512_shuffle_epi8(t, _mm512_and_si512(_mm512_srli_epi16(c, 4), nib));
            lo_w = _mm512_add_epi16(lo_w, rl);
            lo_o = _mm512_add_epi16(lo_o, _mm512_srli_epi16(rl, 8));
            hi_w = _mm512_add_epi16(hi_w, rh);
            hi_o = _mm512_add_epi16(hi_o, _mm512_srli_epi16(rh, 8));
        }
        uint16_t *o = out + b * VDB_PQ4_BLOCK;
        uint32_t mask = pq4_finish_128(pq4_sum_lanes_512(lo_w), pq4_sum_lanes_512(lo_o), o, vmin);
        mask |= pq4_finish_128(pq4_sum_lanes_512(hi_w), pq4_sum_lanes_512(hi_o), o + 16, vmin) << 16;
        if (surv) ns = pq4_emit_512(mask, b, n, surv, ns);
    }
    return ns;
}
PQ4_AVX512 static inline __attribute__((always_inline)) void pq4_multi_avx512_g(const uint8_t *packed, size_t n,
                                                                                size_t m_pad,
                                                                                const uint8_t *const *luts,
                                                                                uint16_t *const *outs, const int G)
{
    const __m512i nib = _mm512_set1_epi8(0x0f);
    const __m128i zero = _mm_setzero_si128();
    const size_t n_blocks = (n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK;
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = packed + b * m_pad * 16;
        __m512i acc[PQ4_MULTI][4];
        for (int g = 0; g < G; g++)
            for (int a = 0; a < 4; a++) acc[g][a] = _mm512_setzero_si512();
        for (size_t j = 0; j < m_pad; j += 4) {
            __m512i c = _mm512_loadu_si512((const void *)(blk + j * 16));
            __m512i cl = _mm512_and_si512(c, nib), ch = _mm512_and_si512(_mm512_srli_epi16(c, 4), nib);
            for (int g = 0; g < G; g++) {
                __m512i t = _mm512_loadu_si512((const void *)(luts[g] + j * 16));
                __m512i rl = _mm512_shuffle_epi8(t, cl), rh = _mm512_shuffle_epi8(t, ch);
                acc[g][0] = _mm512_add_epi16(acc[g][0], rl);
                acc[g][1] = _mm512_add_epi16(acc[g][1], _mm512_srli_epi16(rl, 8));
                acc[g][2] = _mm512_add_epi16(acc[g][2], rh);
                acc[g][3] = _mm512_add_epi16(acc[g][3], _mm512_srli_epi16(rh, 8));
            }
        }
        for (int g = 0; g < G; g++) {
            uint16_t *o = outs[g] + b * VDB_PQ4_BLOCK;
            pq4_finish_128(pq4_sum_lanes_512(acc[g][0]), pq4_sum_lanes_512(acc[g][1]), o, zero);
            pq4_finish_128(pq4_sum_lanes_512(acc[g][2]), pq4_sum_lanes_512(acc[g][3]), o + 16, zero);
        }
    }
}

PQ4_AVX512 static void pq4_multi_avx512(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts,
                                        size_t nlut, uint16_t *const *outs)
{
    PQ4_MULTI_GROUPS(pq4_multi_avx512_g);
}

PQ4_AVX512 static size_t pq4_cut_avx512(const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv)
{
    const __m512i vmin = _mm512_set1_epi16((short)(uint16_t)smin);
    size_t ns = 0, b = 0;
    for (; (b + 1) * VDB_PQ4_BLOCK <= n; b++) {
        __m512i a = _mm512_loadu_si512((const void *)(sums + b * VDB_PQ4_BLOCK));
        ns = pq4_emit_512((uint32_t)_mm512_cmpge_epu16_mask(a, vmin), b, n, surv, ns);
    }
    for (size_t i = b * VDB_PQ4_BLOCK; i < n; i++) { /* the last partial block */
        surv[ns] = (uint32_t)i;
        ns += sums[i] >= smin;
    }
    return ns;
}
#endif

typedef struct {
    const char *name;
    unsigned feature;
    pq4_scan_fn scan;
    pq4_encode_fn encode;
    pq4_multi_fn multi;
    pq4_cut_fn cut;
    pq4_lut_fn lut;
    pq4_quantize_fn quantize;
} pq4_kernel;

static const pq4_kernel pq4_kernels[] = {
#if defined(PQ4_HAVE_X86)
    {"avx512", VDB_CPU_AVX512, pq4_scan_avx512, pq4_encode_avx512, pq4_multi_avx512, pq4_cut_avx512, pq4_lut_avx512, pq4_quantize_avx512},
    {"avx2", VDB_CPU_AVX2, pq4_scan_avx2, pq4_encode_avx2, pq4_multi_avx2, pq4_cut_avx2, pq4_lut_avx2, pq4_quantize_avx2},
#endif
    {"serial", 0, pq4_scan_serial, pq4_encode_serial, pq4_multi_serial, pq4_cut_serial, pq4_lut_serial, pq4_quantize_serial},
};
#define PQ4_N_KERNELS (sizeof pq4_kernels / sizeof pq4_kernels[0])

static _Atomic(pq4_scan_fn) pq4_current;
static _Atomic(const pq4_kernel *) pq4_current_kernel; /* the multi and cut variants */
static _Atomic(pq4_encode_fn) pq4_encode_current;

void vdb_pq4_select(unsigned enabled_features)
{
    const pq4_kernel *pick = &pq4_kernels[PQ4_N_KERNELS - 1]; /* serial */
    for (size_t i = 0; i < PQ4_N_KERNELS; i++)
        if ((pq4_kernels[i].feature & enabled_features) == pq4_kernels[i].feature) {
            pick = &pq4_kernels[i];
            break;
        }
    atomic_store_explicit(&pq4_encode_current, pick->encode, memory_order_release);
    atomic_store_explicit(&pq4_current_kernel, pick, memory_order_release);
    atomic_store_explicit(&pq4_current, pick->scan, memory_order_release);
}

/* The variant called isa when this CPU has it, else NULL. */
static const pq4_kernel *pq4_kernel_named(const char *isa)
{
    unsigned detected = vdb_cpu_detected();
    for (size_t i = 0; i < PQ4_N_KERNELS; i++)
        if (isa && strcmp(pq4_kernels[i].name, isa) == 0 && (pq4_kernels[i].feature & detected) == pq4_kernels[i].feature)
            return &pq4_kernels[i];
    return NULL;
}

static pq4_scan_fn pq4_scan_current(void)
{
    pq4_scan_fn f = atomic_load_explicit(&pq4_current, memory_order_acquire);
    if (!f) {
        vdb_cpu_enabled(); /* first use: detection selects the kernels */
        f = atomic_load_explicit(&pq4_current, memory_order_acquire);
    }
    return f;
}

void vdb_pq4_scan(const uint8_t *packed, size_t n_blocks, size_t m_pad, const uint8_t *lut8, uint16_t *out)
{
    pq4_scan_current()(packed, n_blocks * VDB_PQ4_BLOCK, m_pad, lut8, 0, out, NULL);
}

size_t vdb_pq4_scan_cut(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8, unsigned smin,
                        uint16_t *out, uint32_t *surv)
{
    return pq4_scan_current()(packed, n, m_pad, lut8, smin, out, smin > 0xFFFF ? NULL : surv);
}

int vdb_pq4_scan_isa(const char *isa, const uint8_t *packed, size_t n_blocks, size_t m_pad, const uint8_t *lut8,
                     uint16_t *out)
{
    const pq4_kernel *k = pq4_kernel_named(isa);
    if (!k) return -1;
    k->scan(packed, n_blocks * VDB_PQ4_BLOCK, m_pad, lut8, 0, out, NULL);
    return 0;
}

int vdb_pq4_scan_cut_isa(const char *isa, const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8,
                         unsigned smin, uint16_t *out, uint32_t *surv, size_t *n_surv)
{
    const pq4_kernel *k = pq4_kernel_named(isa);
    if (!k) return -1;
    *n_surv = k->scan(packed, n, m_pad, lut8, smin, out, smin > 0xFFFF ? NULL : surv);
    return 0;
}

void vdb_pq4_encode(const vdb_pq4 *pq, const float *x, size_t n, uint8_t *codes, float *err)
{
    pq4_encode_fn f = atomic_load_explicit(&pq4_encode_current, memory_order_acquire);
    if (!f) {
        vdb_cpu_enabled(); /* first use: detection selects the kernels */
        f = atomic_load_explicit(&pq4_encode_current, memory_order_acquire);
    }
    f(pq, x, n, codes, err);
}

int vdb_pq4_encode_isa(const char *isa, const vdb_pq4 *pq, const float *x, size_t n, uint8_t *codes, float *err)
{
    const pq4_kernel *k = pq4_kernel_named(isa);
    if (!k) return -1;
    k->encode(pq, x, n, codes, err);
    return 0;
}

static const pq4_kernel *pq4_kernel_current(void)
{
    const pq4_kernel *k = atomic_load_explicit(&pq4_current_kernel, memory_order_acquire);
    if (!k) {
        vdb_cpu_enabled(); /* first use: detection selects the kernels */
        k = atomic_load_explicit(&pq4_current_kernel, memory_order_acquire);
    }
    return k;
}

void vdb_pq4_scan_multi(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts, size_t nlut,
                        uint16_t *const *outs)
{
    pq4_kernel_current()->multi(packed, n, m_pad, luts, nlut, outs);
}

size_t vdb_pq4_cut(const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv)
{
    return smin > 0xFFFF ? 0 : pq4_kernel_current()->cut(sums, n, smin, surv);
}

int vdb_pq4_scan_multi_isa(const char *isa, const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts,
                           size_t nlut, uint16_t *const *outs)
{
    const pq4_kernel *k = pq4_kernel_named(isa);
    if (!k) return -1;
    k->multi(packed, n, m_pad, luts, nlut, outs);
    return 0;
}

int vdb_pq4_cut_isa(const char *isa, const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv, size_t *n_surv)
{
    const pq4_kernel *k = pq4_kernel_named(isa);
    if (!k) return -1;
    *n_surv = smin > 0xFFFF ? 0 : k->cut(sums, n, smin, surv);
    return 0;
}

void vdb_pq4_lut(const vdb_pq4 *pq, const float *q, float *lut) { pq4_kernel_current()->lut(pq, q, lut); }

void vdb_pq4_lut_quantize(const float *lut, size_t m_pad, uint8_t *lut8, double *step, double *bias)
{
    pq4_kernel_current()->quantize(lut, m_pad, lut8, step, bias);
}

int vdb_pq4_lut_isa(const char *isa, const vdb_pq4 *pq, const float *q, float *lut)
{
    const pq4_kernel *k = pq4_kernel_named(isa);
    if (!k) return -1;
    k->lut(pq, q, lut);
    return 0;
}

int vdb_pq4_lut_quantize_isa(const char *isa, const float *lut, size_t m_pad, uint8_t *lut8, double *step,
                             double *bias)
{
    const pq4_kernel *k = pq4_kernel_named(isa);
    if (!k) return -1;
    k->quantize(lut, m_pad, lut8, step, bias);
    return 0;
}
