/* vdb_sq8 — see vdb_sq8.h for the contract.
 *
 * Bounds (u = 2^-24, G = 2 (d + 8) u covers the rounding of a float32 sum of d + a few terms in any
 * order, with a factor 2 of slack):
 *   ip:     w_j = -q_j step_j (float64) is rounded to integers wi_j = round(w_j / delta) small enough
 *           that sum wi_j c_j is exact in int32 on every ISA; s = fl(delta * that sum), so
 *           |s - sum w_j c_j| <= mscan = 255 sum |w_j - delta wi_j| + 2u 255 delta sum |wi_j|; and
 *           q.x^ = A + sum q_j step_j c_j (A = q.lo in float64), so the exact kernel's dot is
 *           <= A - s + mscan + |q| err (err includes G |x|, its own rounding): distance >=
 *           base + s - |q| err, base = 1 - A - mscan.
 *   cosine: the same with the unit query and err = |x/|x| - x^|, and base also lowered by the
 *           exact kernel's error on a cosine (two norms, a dot, a divide: <= 2G + 16u).
 *   l2:     s = c0 + sum s2_j (t_j - c_j)^2 with t_j = fl((q_j - lo_j) / step_j), s2_j = fl(step_j^2):
 *           a sum of non-negative terms, so s >= |q' - x^|^2 (1 - G - 2u) where q' is q moved by at
 *           most eq = u |q - lo| (the rounding of t); |q - x| >= |q' - x^| - eq - err, squared, and
 *           the exact kernel loses at most a relative G.
 * Every bound then subtracts a relative 1e-12 (float64 evaluation) and an absolute d 2^-146
 * (products that underflow). Anything non-finite makes the bound -inf: such a row is re-ranked.
 */
#include "vdb_sq8.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_cpu.h"
#include "vdb_error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define SQ8_HAVE_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#define SQ8_INLINE static inline __attribute__((always_inline))
#define SQ8_U (1.0 / 16777216.0)
#define SQ8_MAX_NORM2 1e30
#define SQ8_MIN_NORM2 1e-30
#define SQ8_MIN_STEP 0x1p-60 /* keeps step^2 a normal float */
#define SQ8_MAX_T 0x1p60     /* keeps (t - c)^2 finite */

static double sq8_gamma(size_t d) { return 2.0 * ((double)d + 8.0) * SQ8_U; }

/* float >= x (x finite, >= 0 or any): the nearest float rounded up; +inf past FLT_MAX. */
static float sq8_up(double x)
{
    if (!(x <= FLT_MAX)) return INFINITY; /* also NaN */
    float f = (float)x;
    if ((double)f < x) f = nextafterf(f, INFINITY);
    return f;
}

static float sq8_down(double x)
{
    float f = (float)x;
    if ((double)f > x) f = nextafterf(f, -INFINITY);
    return f;
}

/* ---- quantizer ---- */

static int sq8_alloc(vdb_metric m, size_t d, vdb_sq8 **out)
{
    *out = NULL;
    if (d == 0 || (m != VDB_METRIC_L2 && m != VDB_METRIC_IP && m != VDB_METRIC_COSINE))
        return vdb_set_error(VDB_EINVAL, "sq8 quantizer needs d > 0 and a known metric (got d=%zu, metric=%d)", d, (int)m);
    vdb_sq8 *q = calloc(1, sizeof *q);
    if (!q) return vdb_set_error(VDB_ENOMEM, "out of memory for an sq8 quantizer");
    q->d = d;
    q->metric = m;
    q->lo = calloc(d, sizeof(float));
    q->step = calloc(d, sizeof(float));
    q->inv_step = calloc(d, sizeof(double));
    if (!q->lo || !q->step || !q->inv_step) {
        vdb_sq8_free(q);
        return vdb_set_error(VDB_ENOMEM, "out of memory for an sq8 quantizer");
    }
    *out = q;
    return VDB_OK;
}

static void sq8_set_inverse(vdb_sq8 *q)
{
    for (size_t j = 0; j < q->d; j++) q->inv_step[j] = q->step[j] > 0 ? 1.0 / (double)q->step[j] : 0.0;
}

void vdb_sq8_free(vdb_sq8 *q)
{
    if (!q) return;
    free(q->inv_step);
    free(q->lo);
    free(q->step);
    free(q);
}

/* The vector the codes approximate (x, or x / |x| for cosine) into v; 0 when the bounds cannot
 * cover x. *norm = |x|. */
static int sq8_target(vdb_metric m, size_t d, const float *x, double *v, double *norm)
{
    double n2 = 0;
    for (size_t j = 0; j < d; j++) n2 += (double)x[j] * (double)x[j];
    *norm = sqrt(n2);
    if (!(n2 <= SQ8_MAX_NORM2)) return 0;
    if (m == VDB_METRIC_COSINE) {
        if (n2 < SQ8_MIN_NORM2) return 0;
        for (size_t j = 0; j < d; j++) v[j] = (double)x[j] / *norm;
    } else {
        for (size_t j = 0; j < d; j++) v[j] = x[j];
    }
    return 1;
}

int vdb_sq8_direction(vdb_metric m, size_t d, const float *x, double *v)
{
    double norm;
    return sq8_target(m, d, x, v, &norm);
}

int vdb_sq8_from_bounds(vdb_metric m, size_t d, const double *lo, const double *hi, vdb_sq8 **out)
{
    vdb_sq8 *q;
    int rc = sq8_alloc(m, d, &q);
    if (rc) return rc;
    for (size_t j = 0; j < d; j++) {
        if (!(lo[j] <= hi[j])) continue; /* nothing coverable: lo = step = 0 */
        q->lo[j] = sq8_down(lo[j]);
        double step = (hi[j] - (double)q->lo[j]) / 255.0;
        if (step > 0 && step < SQ8_MIN_STEP) step = SQ8_MIN_STEP;
        q->step[j] = step > 0 ? sq8_up(step) : 0.0f;
        if (!isfinite(q->step[j])) q->step[j] = FLT_MAX;
    }
    sq8_set_inverse(q);
    *out = q;
    return VDB_OK;
}

int vdb_sq8_train(vdb_metric m, size_t d, const float *x, size_t n, vdb_sq8 **out)
{
    int rc = VDB_OK;
    double *v = malloc((d ? d : 1) * sizeof *v), *lo = malloc((d ? d : 1) * sizeof *lo), *hi = malloc((d ? d : 1) * sizeof *hi);
    *out = NULL;
    if (!v || !lo || !hi) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory training an sq8 quantizer");
        goto cleanup;
    }
    for (size_t j = 0; j < d; j++) {
        lo[j] = INFINITY;
        hi[j] = -INFINITY;
    }
    for (size_t i = 0; i < n; i++) {
        double norm;
        if (!sq8_target(m, d, x + i * d, v, &norm)) continue;
        for (size_t j = 0; j < d; j++) {
            if (v[j] < lo[j]) lo[j] = v[j];
            if (v[j] > hi[j]) hi[j] = v[j];
        }
    }
    rc = vdb_sq8_from_bounds(m, d, lo, hi, out);
cleanup:
    free(v);
    free(lo);
    free(hi);
    return rc;
}

int vdb_sq8_from_ranges(vdb_metric m, size_t d, const float *lo, const float *step, vdb_sq8 **out)
{
    for (size_t j = 0; j < d; j++)
        if (!isfinite(lo[j]) || !isfinite(step[j]) || step[j] < 0)
            return vdb_set_error(VDB_EINVAL, "sq8 range of dimension %zu is not finite or has a negative step", j);
    int rc = sq8_alloc(m, d, out);
    if (rc) return rc;
    memcpy((*out)->lo, lo, d * sizeof(float));
    memcpy((*out)->step, step, d * sizeof(float));
    sq8_set_inverse(*out);
    return VDB_OK;
}

void vdb_sq8_encode(const vdb_sq8 *q, const float *x, size_t n, uint8_t *codes, float *err)
{
    const size_t d = q->d;
    double vbuf[512], *v = d <= 512 ? vbuf : malloc(d * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        uint8_t *c = codes + i * d;
        double norm;
        if (!v || !sq8_target(q->metric, d, x + i * d, v, &norm)) {
            memset(c, 0, d);
            err[i] = INFINITY;
            continue;
        }
        double e2 = 0, slack = 0;
        for (size_t j = 0; j < d; j++) {
            /* the nearest code (any code would do: err below is measured, not assumed) */
            double t = (v[j] - (double)q->lo[j]) * q->inv_step[j];
            t = t > 0 ? t : 0; /* also NaN-free: inv_step is finite */
            t = t < 255 ? t : 255;
            double cj = (double)(int)(t + 0.5);
            c[j] = (uint8_t)cj;
            double r = v[j] - ((double)q->lo[j] + cj * (double)q->step[j]);
            e2 += r * r;
            slack += fabs(v[j]) + fabs((double)q->lo[j]) + cj * (double)q->step[j];
        }
        /* float64 slack: the two roundings of each r, the sum, and the unit direction (cosine) */
        double e = sqrt(e2) * (1 + 1e-12) + slack * 0x1p-51 + (q->metric == VDB_METRIC_COSINE ? 1e-12 : 0);
        if (q->metric == VDB_METRIC_IP) e += sq8_gamma(d) * norm;
        err[i] = sq8_up(e);
    }
    if (v != vbuf) free(v);
}

/* ---- query programs and bounds ---- */

void vdb_sq8_query_free(vdb_sq8_query *p)
{
    free(p->w);
    free(p->s2);
    free(p->wi);
    p->w = p->s2 = NULL;
    p->wi = NULL;
}

int vdb_sq8_query_prepare(const vdb_sq8 *q, const float *query, vdb_sq8_query *p)
{
    const size_t d = q->d;
    const double G = sq8_gamma(d), u = SQ8_U;
    memset(p, 0, sizeof *p);
    p->d = d;
    double n2 = 0;
    for (size_t j = 0; j < d; j++) n2 += (double)query[j] * (double)query[j];
    if (!(n2 <= SQ8_MAX_NORM2) || (q->metric == VDB_METRIC_COSINE && n2 < SQ8_MIN_NORM2)) return 0;
    double qn = sqrt(n2);
    p->w = malloc(d * sizeof(float));
    p->wi = malloc(d * sizeof(int16_t));
    if (!p->w || !p->wi) {
        vdb_sq8_query_free(p);
        return vdb_set_error(VDB_ENOMEM, "out of memory preparing an sq8 query");
    }
    p->abs_margin = ((double)d + 8.0) * 0x1p-146;
    p->rel_exact = 1.0 - G;
    if (q->metric == VDB_METRIC_L2) {
        p->kind = 1;
        p->s2 = malloc(d * sizeof(float));
        if (!p->s2) {
            vdb_sq8_query_free(p);
            return vdb_set_error(VDB_ENOMEM, "out of memory preparing an sq8 query");
        }
        double c0 = 0, dq2 = 0, mag = 0;
        for (size_t j = 0; j < d; j++) {
            double diff = (double)query[j] - (double)q->lo[j];
            dq2 += diff * diff;
            mag += fabs((double)query[j]) + fabs((double)q->lo[j]);
            if (q->step[j] > 0) {
                double t = diff / (double)q->step[j];
                if (!(fabs(t) < SQ8_MAX_T)) {
                    vdb_sq8_query_free(p);
                    return 0;
                }
                p->w[j] = (float)t;
                p->s2[j] = (float)((double)q->step[j] * (double)q->step[j]);
            } else {
                p->w[j] = 0;
                p->s2[j] = 0;
                c0 += diff * diff;
            }
        }
        p->c0 = (float)c0;
        p->eq = u * sqrt(dq2) * (1 + 1e-6) + mag * 0x1p-50;
        p->rel_scan = 1.0 - G - 2 * u;
        if (!isfinite(p->c0) || !isfinite(p->eq)) {
            vdb_sq8_query_free(p);
            return 0;
        }
        return 1;
    }
    double A = 0, abs_a = 0, max_w = 0, scale = 1;
    double *w = malloc(d * sizeof *w);
    if (!w) {
        vdb_sq8_query_free(p);
        return vdb_set_error(VDB_ENOMEM, "out of memory preparing an sq8 query");
    }
    for (size_t j = 0; j < d; j++) {
        double vj = q->metric == VDB_METRIC_COSINE ? (double)query[j] / qn : (double)query[j];
        w[j] = -vj * (double)q->step[j];
        A += vj * (double)q->lo[j];
        abs_a += fabs(vj * (double)q->lo[j]);
        if (fabs(w[j]) > max_w) max_w = fabs(w[j]);
    }
    /* |wi_j| <= wmax keeps every partial sum of d products (each <= 255 wmax) inside int32. */
    double wmax = floor(2147483647.0 / (255.0 * (double)d));
    if (wmax > 32767) wmax = 32767;
    if (wmax < 1) wmax = 1;
    p->delta = max_w > 0 ? max_w / wmax : 1.0;
    double resid = 0, sum_wi = 0;
    for (size_t j = 0; j < d; j++) {
        double r = nearbyint(w[j] / p->delta);
        if (r > wmax) r = wmax;
        if (r < -wmax) r = -wmax;
        p->wi[j] = (int16_t)r;
        resid += fabs(w[j] - r * p->delta);
        sum_wi += fabs(r);
    }
    free(w);
    double mscan = 255.0 * (resid * (1 + 1e-9) + 2 * u * p->delta * sum_wi) + 1e-300;
    double base = 1.0 - A - mscan - abs_a * ((double)d + 2) * 0x1p-52;
    if (q->metric == VDB_METRIC_COSINE)
        base -= 2 * G + 16 * u;
    else
        scale = qn * (1 + 1e-12);
    p->base = base;
    p->scale = scale;
    if (!isfinite(base) || !isfinite(p->delta) || !(p->delta * sum_wi * 255.0 < 1e30)) {
        vdb_sq8_query_free(p);
        return 0;
    }
    return 1;
}

double vdb_sq8_lower_bound(const vdb_sq8_query *p, float s, float err)
{
    if (!isfinite(s) || !isfinite(err)) return -INFINITY;
    double lb;
    if (p->kind == 1) {
        double r = sqrt((double)s * p->rel_scan) - p->eq - (double)err;
        lb = r > 0 ? r * r * p->rel_exact : 0;
    } else {
        lb = p->base + (double)s - p->scale * (double)err;
        lb -= (SQ8_U + 1e-12) * fabs(lb);
    }
    return lb - 1e-12 * fabs(lb) - p->abs_margin;
}

float vdb_sq8_cut(const vdb_sq8_query *p, float thr, float err_max)
{
    if (!isfinite(thr) || !isfinite(err_max)) return INFINITY;
    double t = (double)thr + p->abs_margin, cut;
    t += 4 * (SQ8_U + 1e-12) * fabs(t) + 1e-300;
    if (p->kind == 1) {
        double r = sqrt((t > 0 ? t : 0) / p->rel_exact) * (1 + 1e-9) + p->eq + (double)err_max;
        cut = r * r / p->rel_scan;
    } else {
        cut = t - p->base + p->scale * (double)err_max;
    }
    cut += 1e-9 * fabs(cut) + 1e-30;
    return sq8_up(cut);
}

/* ---- kernels: one row of codes ---- */

typedef float (*sq8_row_fn)(const vdb_sq8_query *p, const uint8_t *c);

/* serial: the reference twin, plain order. The ip/cosine sum is exact integer arithmetic, so
 * every variant returns the same bits. */
static float sq8_row0_serial(const vdb_sq8_query *p, const uint8_t *c)
{
    int32_t s = 0;
    for (size_t j = 0; j < p->d; j++) s += (int32_t)p->wi[j] * (int32_t)c[j];
    return (float)(p->delta * (double)s);
}

static float sq8_row1_serial(const vdb_sq8_query *p, const uint8_t *c)
{
    float s = p->c0;
    for (size_t j = 0; j < p->d; j++) {
        float t = p->w[j] - (float)c[j];
        s += p->s2[j] * (t * t);
    }
    return s;
}

#if defined(SQ8_HAVE_X86)
#define SQ8_AVX2 __attribute__((target("avx2,fma")))
#define SQ8_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))

SQ8_INLINE SQ8_AVX2 float sq8_hsum256(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

SQ8_INLINE SQ8_AVX2 __m256 sq8_load8_avx2(const uint8_t *c)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c)));
}

SQ8_INLINE SQ8_AVX2 int32_t sq8_hsum_epi32_256(__m256i v)
{
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0x4E));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0xB1));
    return _mm_cvtsi128_si32(a);
}

static SQ8_AVX2 float sq8_row0_avx2(const vdb_sq8_query *p, const uint8_t *c)
{
    const size_t d = p->d;
    const int16_t *w = p->wi;
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        __m256i c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(c + j)));
        __m256i c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(c + j + 16)));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + j)), c0));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + j + 16)), c1));
    }
    if (j + 16 <= d) {
        __m256i c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(c + j)));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + j)), c0));
        j += 16;
    }
    int32_t s = sq8_hsum_epi32_256(_mm256_add_epi32(a0, a1));
    for (; j < d; j++) s += (int32_t)w[j] * (int32_t)c[j];
    return (float)(p->delta * (double)s);
}

static SQ8_AVX2 float sq8_row1_avx2(const vdb_sq8_query *p, const uint8_t *c)
{
    const size_t d = p->d;
    const float *t = p->w, *s2 = p->s2;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m256 x0 = _mm256_sub_ps(_mm256_loadu_ps(t + j), sq8_load8_avx2(c + j));
        __m256 x1 = _mm256_sub_ps(_mm256_loadu_ps(t + j + 8), sq8_load8_avx2(c + j + 8));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(s2 + j), _mm256_mul_ps(x0, x0), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(s2 + j + 8), _mm256_mul_ps(x1, x1), a1);
    }
    if (j + 8 <= d) {
        __m256 x0 = _mm256_sub_ps(_mm256_loadu_ps(t + j), sq8_load8_avx2(c + j));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(s2 + j), _mm256_mul_ps(x0, x0), a0);
        j += 8;
    }
    float s = p->c0 + sq8_hsum256(_mm256_add_ps(a0, a1));
    for (; j < d; j++) {
        float x = t[j] - (float)c[j];
        s += s2[j] * (x * x);
    }
    return s;
}

SQ8_INLINE SQ8_AVX512 __m512 sq8_load16_avx512(const uint8_t *c)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c)));
}

SQ8_INLINE SQ8_AVX512 __m512 sq8_load16_mask_avx512(const uint8_t *c, __mmask16 mk)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, c)));
}

static SQ8_AVX512 float sq8_row0_avx512(const vdb_sq8_query *p, const uint8_t *c)
{
    const size_t d = p->d;
    const int16_t *w = p->wi;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 64 <= d; j += 64) {
        __m512i c0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(c + j)));
        __m512i c1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(c + j + 32)));
        a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_loadu_si512(w + j), c0));
        a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(_mm512_loadu_si512(w + j + 32), c1));
    }
    for (; j < d; j += 32) {
        __mmask32 mk = d - j >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (d - j)) - 1u);
        __m512i c0 = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mk, c + j));
        a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_maskz_loadu_epi16(mk, w + j), c0));
    }
    return (float)(p->delta * (double)_mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)));
}

static SQ8_AVX512 float sq8_row1_avx512(const vdb_sq8_query *p, const uint8_t *c)
{
    const size_t d = p->d;
    const float *t = p->w, *s2 = p->s2;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        __m512 x0 = _mm512_sub_ps(_mm512_loadu_ps(t + j), sq8_load16_avx512(c + j));
        __m512 x1 = _mm512_sub_ps(_mm512_loadu_ps(t + j + 16), sq8_load16_avx512(c + j + 16));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(s2 + j), _mm512_mul_ps(x0, x0), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(s2 + j + 16), _mm512_mul_ps(x1, x1), a1);
    }
    for (; j < d; j += 16) {
        __mmask16 mk = d - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - j)) - 1u);
        __m512 x0 = _mm512_sub_ps(_mm512_maskz_loadu_ps(mk, t + j), sq8_load16_mask_avx512(c + j, mk));
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, s2 + j), _mm512_mul_ps(x0, x0), a0);
    }
    return p->c0 + _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
#endif

#if defined(__aarch64__)
SQ8_INLINE void sq8_load8_neon(const uint8_t *c, float32x4_t *lo, float32x4_t *hi)
{
    uint16x8_t h = vmovl_u8(vld1_u8(c));
    *lo = vcvtq_f32_u32(vmovl_u16(vget_low_u16(h)));
    *hi = vcvtq_f32_u32(vmovl_u16(vget_high_u16(h)));
}

static float sq8_row0_neon(const vdb_sq8_query *p, const uint8_t *c)
{
    const size_t d = p->d;
    const int16_t *w = p->wi;
    int32x4_t a0 = vdupq_n_s32(0), a1 = vdupq_n_s32(0);
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        int16x8_t cv = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(c + j)));
        int16x8_t wv = vld1q_s16(w + j);
        a0 = vmlal_s16(a0, vget_low_s16(wv), vget_low_s16(cv));
        a1 = vmlal_s16(a1, vget_high_s16(wv), vget_high_s16(cv));
    }
    int32_t s = vaddvq_s32(vaddq_s32(a0, a1));
    for (; j < d; j++) s += (int32_t)w[j] * (int32_t)c[j];
    return (float)(p->delta * (double)s);
}

static float sq8_row1_neon(const vdb_sq8_query *p, const uint8_t *c)
{
    const size_t d = p->d;
    const float *t = p->w, *s2 = p->s2;
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        float32x4_t x0, x1;
        sq8_load8_neon(c + j, &x0, &x1);
        x0 = vsubq_f32(vld1q_f32(t + j), x0);
        x1 = vsubq_f32(vld1q_f32(t + j + 4), x1);
        a0 = vfmaq_f32(a0, vld1q_f32(s2 + j), vmulq_f32(x0, x0));
        a1 = vfmaq_f32(a1, vld1q_f32(s2 + j + 4), vmulq_f32(x1, x1));
    }
    float s = p->c0 + vaddvq_f32(vaddq_f32(a0, a1));
    for (; j < d; j++) {
        float x = t[j] - (float)c[j];
        s += s2[j] * (x * x);
    }
    return s;
}
#endif

/* ---- dispatch ---- */

typedef struct {
    const char *name;
    unsigned feature;
    sq8_row_fn row[2];
} sq8_kernel_set;

static const sq8_kernel_set sq8_sets[] = {
#if defined(SQ8_HAVE_X86)
    {"avx512", VDB_CPU_AVX512, {sq8_row0_avx512, sq8_row1_avx512}},
    {"avx2", VDB_CPU_AVX2, {sq8_row0_avx2, sq8_row1_avx2}},
#endif
#if defined(__aarch64__)
    {"neon", VDB_CPU_NEON, {sq8_row0_neon, sq8_row1_neon}},
#endif
    {"serial", 0, {sq8_row0_serial, sq8_row1_serial}},
};
#define SQ8_N_SETS (sizeof sq8_sets / sizeof sq8_sets[0])

static _Atomic(const sq8_kernel_set *) sq8_current;

void vdb_sq8_select(unsigned enabled)
{
    const sq8_kernel_set *pick = &sq8_sets[SQ8_N_SETS - 1];
    for (size_t i = 0; i < SQ8_N_SETS; i++)
        if ((sq8_sets[i].feature & enabled) == sq8_sets[i].feature) {
            pick = &sq8_sets[i];
            break;
        }
    atomic_store_explicit(&sq8_current, pick, memory_order_release);
}

static const sq8_kernel_set *sq8_kernels(void)
{
    const sq8_kernel_set *k = atomic_load_explicit(&sq8_current, memory_order_acquire);
    if (k) return k;
    vdb_sq8_select(vdb_cpu_enabled());
    return atomic_load_explicit(&sq8_current, memory_order_acquire);
}

static void sq8_scan_with(const sq8_kernel_set *k, const vdb_sq8_query *p, const uint8_t *codes, size_t n,
                          float *out)
{
    sq8_row_fn f = k->row[p->kind];
    const size_t d = p->d;
    for (size_t i = 0; i < n; i++) {
        /* Rows are one sequential stream: a light prefetch ~2 KB ahead helps across 4 KB pages. */
        __builtin_prefetch(codes + (i + 8) * d);
        out[i] = f(p, codes + i * d);
    }
}

void vdb_sq8_scan(const vdb_sq8_query *p, const uint8_t *codes, size_t n, float *out)
{
    sq8_scan_with(sq8_kernels(), p, codes, n, out);
}

void vdb_sq8_scan_rows(const vdb_sq8_query *p, const uint8_t *codes, const int64_t *rows, size_t n, float *out)
{
    sq8_row_fn f = sq8_kernels()->row[p->kind];
    const size_t d = p->d;
    for (size_t i = 0; i < n; i++) {
        if (i + 4 < n) {
            const uint8_t *a = codes + (size_t)rows[i + 4] * d;
            for (size_t b = 0; b < d; b += 64) __builtin_prefetch(a + b);
        }
        out[i] = f(p, codes + (size_t)rows[i] * d);
    }
}

int vdb_sq8_scan_isa(const char *isa, const vdb_sq8_query *p, const uint8_t *codes, size_t n, float *out)
{
    unsigned detected = vdb_cpu_detected();
    for (size_t i = 0; i < SQ8_N_SETS; i++)
        if (!strcmp(sq8_sets[i].name, isa) && (sq8_sets[i].feature & detected) == sq8_sets[i].feature) {
            sq8_scan_with(&sq8_sets[i], p, codes, n, out);
            return 0;
        }
    return -1;
}
