/* vdb_distance — see vdb_distance.h for the contract.
 *
 * Layout: for every ISA the metric-generic building blocks are always_inline functions taking the
 * metric as a compile-time constant, so each public kernel (l2/ip/cosine x pair/batch/block) is a
 * straight loop with the arithmetic inlined: no function-pointer call per row.
 *   raw sums:  l2 -> sum (q-r)^2;  ip and cosine -> dot(q,r) (cosine also sum r^2 of the row)
 *   finish:    l2 -> s;  ip -> 1 - s;  cosine -> 1 - s / (|q| |r|), 1 when a norm is 0
 * The query norm of a cosine batch is computed once per call, the row norm in the same pass as
 * the dot product. Each ISA's code carries a per-function target attribute (no global -m flags).
 */
#include "vdb_distance.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "vdb_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define VDB_HAVE_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#define VDB_INLINE static inline __attribute__((always_inline))

typedef float (*vdb_pair_fn)(const float *a, const float *b, size_t d);
typedef void (*vdb_batch_fn)(const float *q, const float *rows, size_t n, size_t d, float *out);
typedef void (*vdb_block_fn)(const float *queries, size_t nq, const float *rows, size_t n, size_t d,
                             float *out);

typedef struct {
    const char *name;
    unsigned feature; /* VDB_CPU_* bit required, 0 for serial */
    vdb_pair_fn pair[3];
    vdb_batch_fn batch[3];
    vdb_block_fn block[3];
    vdb_batch_fn block_one[3]; /* NULL: this variant has none (vdb_distance_block_one returns -1) */
    /* The cosine pair with a's squared norm given, and that norm (NULL: vdb_distance_aa falls back
     * to the pair) */
    float (*sumsq)(const float *a, size_t d);
    float (*cosine_aa)(const float *a, float aa, const float *b, size_t d);
} vdb_kernel_set;

/* Scalar epilogue (serial kernels, SIMD tails). The cosine denominator is formed in double:
 * |q|^2 |r|^2 overflows float for norms above ~1e19. The SIMD batch/block epilogues compute
 * sqrt(qq) * sqrt(rr) in float vectors instead (same range, 16 rows per sqrt/divide). */
VDB_INLINE float vdb_finish(int m, float s, float qq, float rr)
{
    if (m == VDB_METRIC_L2)
        return s;
    if (m == VDB_METRIC_IP)
        return 1.0f - s;
    if (qq == 0.0f || rr == 0.0f)
        return 1.0f;
    return (float)(1.0 - (double)s / sqrt((double)qq * (double)rr));
}

/* Rows per cache chunk in the block kernels: the chunk (~64 KB) stays in L1/L2 while every
 * query tile passes over it. Multiple of 4, at least 16. */
static size_t vdb_block_chunk_rows(size_t d)
{
    size_t r = (size_t)65536 / (d * sizeof(float) + 1);
    r &= ~(size_t)3;
    return r < 16 ? 16 : r;
}

/* One SIMD variant's block kernel for one metric, in parts: a tile of 4 queries x nr rows writing
 * finished distances (row stride n; qn = the 4 queries' norms, filled for cosine only), the
 * squared norm of a query, and the pair and batch kernels for the rows and queries left over. */
typedef struct {
    size_t nr;
    void (*tile)(const float *q, size_t d, const float *qn, const float *rows, float *out, size_t n);
    void (*tile1)(const float *q, size_t d, const float *qn, const float *rows, float *out, size_t n);
    float (*sumsq)(const float *a, size_t d);
    vdb_pair_fn pair;
    vdb_batch_fn batch;
} vdb_block_parts;

/* The work order every SIMD block kernel shares: rows in cache-sized chunks; over each chunk,
 * queries in fours through tiles of nr rows, then the chunk's last rows one pair at a time;
 * queries beyond a multiple of 4 through the batch kernel. Inlined into each variant's block
 * function with a constant parts table, so the tile calls become direct and inline: an out-of-line
 * AVX-512 tile call cost up to 1.7x at d=33. */
VDB_INLINE void vdb_block_drive(const vdb_block_parts *p, int m, const float *qs, size_t nq, const float *rows,
                                size_t n, size_t d, float *out)
{
    size_t chunk = vdb_block_chunk_rows(d);
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        size_t c1 = n - c0 < chunk ? n : c0 + chunk;
        for (size_t qi = 0; qi + 4 <= nq; qi += 4) {
            const float *q = qs + qi * d;
            float qn[4] = {0, 0, 0, 0};
            if (m == VDB_METRIC_COSINE)
                for (int j = 0; j < 4; j++)
                    qn[j] = sqrtf(p->sumsq(q + j * d, d));
            size_t i = c0;
            for (; i + p->nr <= c1; i += p->nr)
                p->tile(q, d, qn, rows + i * d, out + qi * n + i, n);
            for (; i < c1; i++)
                for (size_t j = 0; j < 4; j++)
                    out[(qi + j) * n + i] = p->pair(q + j * d, rows + i * d, d);
        }
    }
    for (size_t qi = nq & ~(size_t)3; qi < nq; qi++)
        p->batch(qs + qi * d, rows, n, d, out + qi * n);
}

/* vdb_block_drive for one query as the first of a tile: the same chunks, tiles (tile1: the tile's
 * arithmetic for its first query alone) and leftover pairs, so every distance is the block's bit
 * for bit, at a quarter of the tile's work. */
VDB_INLINE void vdb_block_drive_one(const vdb_block_parts *p, int m, const float *q, const float *rows, size_t n,
                                    size_t d, float *out)
{
    size_t chunk = vdb_block_chunk_rows(d);
    float qn[4] = {0, 0, 0, 0};
    if (m == VDB_METRIC_COSINE)
        qn[0] = qn[1] = qn[2] = qn[3] = sqrtf(p->sumsq(q, d));
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        size_t c1 = n - c0 < chunk ? n : c0 + chunk;
        size_t i = c0;
        for (; i + p->nr <= c1; i += p->nr)
            p->tile1(q, d, qn, rows + i * d, out + i, n);
        for (; i < c1; i++)
            out[i] = p->pair(q, rows + i * d, d);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* serial: the reference twin. One accumulator, plain order: the compiler (no -ffast-math) keeps it
 * scalar, which is what a reference should be. */

VDB_INLINE float vdb_sumsq_serial(const float *a, size_t d)
{
    float s = 0.0f;
    for (size_t i = 0; i < d; i++)
        s += a[i] * a[i];
    return s;
}

VDB_INLINE float vdb_raw1_serial(int m, const float *q, const float *r, size_t d, float *rr)
{
    float s = 0.0f, n = 0.0f;
    if (m == VDB_METRIC_L2) {
        for (size_t i = 0; i < d; i++) {
            float t = q[i] - r[i];
            s += t * t;
        }
    } else {
        for (size_t i = 0; i < d; i++) {
            s += q[i] * r[i];
            if (m == VDB_METRIC_COSINE)
                n += r[i] * r[i];
        }
    }
    *rr = n;
    return s;
}

/* qq: a's squared norm (cosine only) */
VDB_INLINE float vdb_pair_qq_serial(int m, const float *a, float qq, const float *b, size_t d)
{
    float rr;
    float s = vdb_raw1_serial(m, a, b, d, &rr);
    return vdb_finish(m, s, qq, rr);
}

VDB_INLINE float vdb_pair_serial(int m, const float *a, const float *b, size_t d)
{
    return vdb_pair_qq_serial(m, a, m == VDB_METRIC_COSINE ? vdb_sumsq_serial(a, d) : 0.0f, b, d);
}

VDB_INLINE void vdb_batch_serial(int m, const float *q, const float *rows, size_t n, size_t d, float *out)
{
    float qq = m == VDB_METRIC_COSINE ? vdb_sumsq_serial(q, d) : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float rr;
        float s = vdb_raw1_serial(m, q, rows + i * d, d, &rr);
        out[i] = vdb_finish(m, s, qq, rr);
    }
}

static float vdb_l2sq_f32_serial(const float *a, const float *b, size_t d) { return vdb_pair_serial(VDB_METRIC_L2, a, b, d); }
static float vdb_ip_f32_serial(const float *a, const float *b, size_t d) { return vdb_pair_serial(VDB_METRIC_IP, a, b, d); }
static float vdb_cosine_f32_serial(const float *a, const float *b, size_t d) { return vdb_pair_serial(VDB_METRIC_COSINE, a, b, d); }
static float vdb_cosine_aa_serial(const float *a, float aa, const float *b, size_t d) { return vdb_pair_qq_serial(VDB_METRIC_COSINE, a, aa, b, d); }
static float vdb_sumsq_fn_serial(const float *a, size_t d) { return vdb_sumsq_serial(a, d); }

static void vdb_l2sq_batch_serial(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_serial(VDB_METRIC_L2, q, r, n, d, o); }
static void vdb_ip_batch_serial(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_serial(VDB_METRIC_IP, q, r, n, d, o); }
static void vdb_cosine_batch_serial(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_serial(VDB_METRIC_COSINE, q, r, n, d, o); }

static void vdb_l2sq_block_serial(const float *qs, size_t nq, const float *r, size_t n, size_t d, float *o)
{
    for (size_t j = 0; j < nq; j++)
        vdb_batch_serial(VDB_METRIC_L2, qs + j * d, r, n, d, o + j * n);
}
static void vdb_ip_block_serial(const float *qs, size_t nq, const float *r, size_t n, size_t d, float *o)
{
    for (size_t j = 0; j < nq; j++)
        vdb_batch_serial(VDB_METRIC_IP, qs + j * d, r, n, d, o + j * n);
}
static void vdb_cosine_block_serial(const float *qs, size_t nq, const float *r, size_t n, size_t d, float *o)
{
    for (size_t j = 0; j < nq; j++)
        vdb_batch_serial(VDB_METRIC_COSINE, qs + j * d, r, n, d, o + j * n);
}

static const vdb_kernel_set vdb_kernels_serial = {
    "serial", 0,
    {vdb_l2sq_f32_serial, vdb_ip_f32_serial, vdb_cosine_f32_serial},
    {vdb_l2sq_batch_serial, vdb_ip_batch_serial, vdb_cosine_batch_serial},
    {vdb_l2sq_block_serial, vdb_ip_block_serial, vdb_cosine_block_serial},
    {vdb_l2sq_batch_serial, vdb_ip_batch_serial, vdb_cosine_batch_serial}, /* the serial block, per query */
    vdb_sumsq_fn_serial,
    vdb_cosine_aa_serial,
};

#if defined(VDB_HAVE_X86)
/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA: 8 floats per register, 16 registers. Tails use vmaskmovps (no scalar loop). */

#define VDB_AVX2 __attribute__((target("avx2,fma")))

static const int32_t vdb_avx2_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* Mask with the first r (1..7) lanes set. */
VDB_INLINE VDB_AVX2 __m256i vdb_avx2_mask(size_t r)
{
    return _mm256_loadu_si256((const __m256i *)(vdb_avx2_mask_table + 8 - r));
}

VDB_INLINE VDB_AVX2 float vdb_hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four horizontal sums at once: returns [sum a, sum b, sum c, sum d]. */
VDB_INLINE VDB_AVX2 __m128 vdb_hsum4_avx2(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 ab = _mm256_hadd_ps(a, b);
    __m256 cd = _mm256_hadd_ps(c, d);
    __m256 t = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* One accumulation step of metric m for query vector q against row vector r. */
VDB_INLINE VDB_AVX2 void vdb_step_avx2(int m, __m256 q, __m256 r, __m256 *acc, __m256 *nrm)
{
    if (m == VDB_METRIC_L2) {
        __m256 t = _mm256_sub_ps(q, r);
        *acc = _mm256_fmadd_ps(t, t, *acc);
    } else {
        *acc = _mm256_fmadd_ps(q, r, *acc);
        if (m == VDB_METRIC_COSINE)
            *nrm = _mm256_fmadd_ps(r, r, *nrm);
    }
}

VDB_INLINE VDB_AVX2 float vdb_sumsq_avx2(const float *a, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(a + i + 8);
        s0 = _mm256_fmadd_ps(x, x, s0);
        s1 = _mm256_fmadd_ps(y, y, s1);
    }
    if (i + 8 <= d) {
        __m256 x = _mm256_loadu_ps(a + i);
        s0 = _mm256_fmadd_ps(x, x, s0);
        i += 8;
    }
    if (i < d) {
        __m256 x = _mm256_maskload_ps(a + i, vdb_avx2_mask(d - i));
        s1 = _mm256_fmadd_ps(x, x, s1);
    }
    return vdb_hsum_avx2(_mm256_add_ps(s0, s1));
}

/* Raw sum of one row; *rr gets the row's squared norm for cosine. */
VDB_INLINE VDB_AVX2 float vdb_raw1_avx2(int m, const float *q, const float *r, size_t d, float *rr)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, n0 = a0, n1 = a0;
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        vdb_step_avx2(m, _mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), &a0, &n0);
        vdb_step_avx2(m, _mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(r + i + 8), &a1, &n1);
        vdb_step_avx2(m, _mm256_loadu_ps(q + i + 16), _mm256_loadu_ps(r + i + 16), &a2, &n0);
        vdb_step_avx2(m, _mm256_loadu_ps(q + i + 24), _mm256_loadu_ps(r + i + 24), &a3, &n1);
    }
    for (; i + 8 <= d; i += 8)
        vdb_step_avx2(m, _mm256_loadu_ps(q + i), _mm256_loadu_ps(r + i), &a0, &n0);
    if (i < d) {
        __m256i mk = vdb_avx2_mask(d - i);
        vdb_step_avx2(m, _mm256_maskload_ps(q + i, mk), _mm256_maskload_ps(r + i, mk), &a1, &n1);
    }
    *rr = m == VDB_METRIC_COSINE ? vdb_hsum_avx2(_mm256_add_ps(n0, n1)) : 0.0f;
    return vdb_hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

/* Cosine epilogue for 8 lanes: 1 - s / den, and 1 where den (|q| |r|) is 0. */
VDB_INLINE VDB_AVX2 __m256 vdb_cos_finish_avx2(__m256 s, __m256 den)
{
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 zero = _mm256_cmp_ps(den, _mm256_setzero_ps(), _CMP_EQ_OQ);
    __m256 r = _mm256_sub_ps(one, _mm256_div_ps(s, _mm256_blendv_ps(den, one, zero)));
    return _mm256_blendv_ps(r, one, zero);
}

VDB_INLINE VDB_AVX2 float vdb_sqrt_avx2(float x) { return _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(x))); }

VDB_INLINE VDB_AVX2 void vdb_batch_avx2(int m, const float *q, const float *rows, size_t n, size_t d, float *out)
{
    /* One row at a time with four accumulators measured faster than interleaving four rows
     * (10k x 128 in L3): a single sequential stream suits the prefetchers. */
    if (m != VDB_METRIC_COSINE) {
        for (size_t i = 0; i < n; i++) {
            float rr;
            out[i] = vdb_finish(m, vdb_raw1_avx2(m, q, rows + i * d, d, &rr), 0.0f, 0.0f);
        }
        return;
    }
    /* Cosine: raw sums of 8 rows, then one vector sqrt/divide for the 8 (a scalar double
     * sqrt + divide per row cost as much as the dot products at d=128). */
    __m256 qn = _mm256_set1_ps(vdb_sqrt_avx2(vdb_sumsq_avx2(q, d)));
    for (size_t i = 0; i < n; i += 8) {
        size_t cnt = n - i < 8 ? n - i : 8;
        float sb[8] = {0}, rb[8] = {0};
        for (size_t j = 0; j < cnt; j++)
            sb[j] = vdb_raw1_avx2(m, q, rows + (i + j) * d, d, &rb[j]);
        __m256 den = _mm256_mul_ps(qn, _mm256_sqrt_ps(_mm256_loadu_ps(rb)));
        __m256 res = vdb_cos_finish_avx2(_mm256_loadu_ps(sb), den);
        if (cnt == 8)
            _mm256_storeu_ps(out + i, res);
        else
            _mm256_maskstore_ps(out + i, vdb_avx2_mask(cnt), res);
    }
}

/* Tile of 4 queries x 2 rows: 8 accumulators (+2 row norms for cosine) + 4 query registers fit
 * the 16 YMM registers; each step does 6 loads for 8 FMAs. nql: the live queries, 4 or 1 (the
 * others' sums stay 0; each output sums its own accumulator, so query 0's bits do not change). */
VDB_INLINE VDB_AVX2 void vdb_tile4x2_avx2(int m, int nql, const float *q, size_t d, const float *r, __m256 *sums,
                                          __m256 *rnorm)
{
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,
           a31 = a00, n0 = a00, n1 = a00;
    /* one live query: q1..q3 alias it (loaded, never used) */
    const size_t qs = nql == 4 ? d : 0;
    const float *q0 = q, *q1 = q + qs, *q2 = q + 2 * qs, *q3 = q + 3 * qs, *r0 = r, *r1 = r + d;
    size_t i = 0;
    __m256 dummy = a00;
    for (; i + 8 <= d; i += 8) {
        __m256 x0 = _mm256_loadu_ps(q0 + i), x1 = _mm256_loadu_ps(q1 + i), x2 = _mm256_loadu_ps(q2 + i),
               x3 = _mm256_loadu_ps(q3 + i);
        __m256 y = _mm256_loadu_ps(r0 + i);
        if (m == VDB_METRIC_COSINE)
            n0 = _mm256_fmadd_ps(y, y, n0);
        vdb_step_avx2(m, x0, y, &a00, &dummy);
        if (nql == 4) {
            vdb_step_avx2(m, x1, y, &a10, &dummy);
            vdb_step_avx2(m, x2, y, &a20, &dummy);
            vdb_step_avx2(m, x3, y, &a30, &dummy);
        }
        y = _mm256_loadu_ps(r1 + i);
        if (m == VDB_METRIC_COSINE)
            n1 = _mm256_fmadd_ps(y, y, n1);
        vdb_step_avx2(m, x0, y, &a01, &dummy);
        if (nql == 4) {
            vdb_step_avx2(m, x1, y, &a11, &dummy);
            vdb_step_avx2(m, x2, y, &a21, &dummy);
            vdb_step_avx2(m, x3, y, &a31, &dummy);
        }
    }
    if (i < d) {
        __m256i mk = vdb_avx2_mask(d - i);
        __m256 x0 = _mm256_maskload_ps(q0 + i, mk), x1 = _mm256_maskload_ps(q1 + i, mk),
               x2 = _mm256_maskload_ps(q2 + i, mk), x3 = _mm256_maskload_ps(q3 + i, mk);
        __m256 y = _mm256_maskload_ps(r0 + i, mk);
        if (m == VDB_METRIC_COSINE)
            n0 = _mm256_fmadd_ps(y, y, n0);
        vdb_step_avx2(m, x0, y, &a00, &dummy);
        if (nql == 4) {
            vdb_step_avx2(m, x1, y, &a10, &dummy);
            vdb_step_avx2(m, x2, y, &a20, &dummy);
            vdb_step_avx2(m, x3, y, &a30, &dummy);
        }
        y = _mm256_maskload_ps(r1 + i, mk);
        if (m == VDB_METRIC_COSINE)
            n1 = _mm256_fmadd_ps(y, y, n1);
        vdb_step_avx2(m, x0, y, &a01, &dummy);
        if (nql == 4) {
            vdb_step_avx2(m, x1, y, &a11, &dummy);
            vdb_step_avx2(m, x2, y, &a21, &dummy);
            vdb_step_avx2(m, x3, y, &a31, &dummy);
        }
    }
    /* *sums = [q0r0, q0r1, q1r0, q1r1, q2r0, q2r1, q3r0, q3r1] */
    *sums = _mm256_set_m128(vdb_hsum4_avx2(a20, a21, a30, a31), vdb_hsum4_avx2(a00, a01, a10, a11));
    if (m == VDB_METRIC_COSINE) {
        /* [|r0|, |r1|] repeated four times */
        __m128 h = vdb_hsum4_avx2(n0, n1, n0, n1);
        h = _mm_sqrt_ps(h);
        *rnorm = _mm256_set_m128(h, h);
    }
}

/* Tile of the block driver: 4 queries x 2 rows, finished and stored. */
VDB_INLINE VDB_AVX2 void vdb_tile_avx2(int m, int nql, const float *q, size_t d, const float *qn, const float *rows,
                                       float *out, size_t n)
{
    __m256 sv, rn = _mm256_setzero_ps();
    vdb_tile4x2_avx2(m, nql, q, d, rows, &sv, &rn);
    if (m == VDB_METRIC_IP)
        sv = _mm256_sub_ps(_mm256_set1_ps(1.0f), sv);
    else if (m == VDB_METRIC_COSINE)
        sv = vdb_cos_finish_avx2(
            sv, _mm256_mul_ps(_mm256_set_ps(qn[3], qn[3], qn[2], qn[2], qn[1], qn[1], qn[0], qn[0]), rn));
    float res[8];
    _mm256_storeu_ps(res, sv);
    for (size_t j = 0; j < (size_t)nql; j++) {
        out[j * n] = res[2 * j];
        out[j * n + 1] = res[2 * j + 1];
    }
}

/* qq: a's squared norm (cosine only) */
VDB_INLINE VDB_AVX2 float vdb_pair_qq_avx2(int m, const float *a, float qq, const float *b, size_t d)
{
    float rr;
    float s = vdb_raw1_avx2(m, a, b, d, &rr);
    if (m == VDB_METRIC_COSINE) {
        /* The batch epilogue's float arithmetic, so a row's distance does not depend on whether a
         * search scored it alone (sparse filter) or in a batch. */
        float den = vdb_sqrt_avx2(qq) * vdb_sqrt_avx2(rr);
        return den != 0.0f ? 1.0f - s / den : 1.0f;
    }
    return vdb_finish(m, s, qq, rr);
}

VDB_INLINE VDB_AVX2 float vdb_pair_avx2(int m, const float *a, const float *b, size_t d)
{
    return vdb_pair_qq_avx2(m, a, m == VDB_METRIC_COSINE ? vdb_sumsq_avx2(a, d) : 0.0f, b, d);
}

static VDB_AVX2 float vdb_l2sq_f32_avx2(const float *a, const float *b, size_t d) { return vdb_pair_avx2(VDB_METRIC_L2, a, b, d); }
static VDB_AVX2 float vdb_ip_f32_avx2(const float *a, const float *b, size_t d) { return vdb_pair_avx2(VDB_METRIC_IP, a, b, d); }
static VDB_AVX2 float vdb_cosine_f32_avx2(const float *a, const float *b, size_t d) { return vdb_pair_avx2(VDB_METRIC_COSINE, a, b, d); }
static VDB_AVX2 float vdb_cosine_aa_avx2(const float *a, float aa, const float *b, size_t d) { return vdb_pair_qq_avx2(VDB_METRIC_COSINE, a, aa, b, d); }

static VDB_AVX2 void vdb_l2sq_batch_avx2(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_avx2(VDB_METRIC_L2, q, r, n, d, o); }
static VDB_AVX2 void vdb_ip_batch_avx2(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_avx2(VDB_METRIC_IP, q, r, n, d, o); }
static VDB_AVX2 void vdb_cosine_batch_avx2(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_avx2(VDB_METRIC_COSINE, q, r, n, d, o); }
static VDB_AVX2 float vdb_sumsq_fn_avx2(const float *a, size_t d) { return vdb_sumsq_avx2(a, d); }
VDB_INLINE VDB_AVX2 void vdb_l2sq_tile_avx2(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx2(VDB_METRIC_L2, 4, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX2 void vdb_l2sq_tile1_avx2(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx2(VDB_METRIC_L2, 1, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX2 void vdb_ip_tile_avx2(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx2(VDB_METRIC_IP, 4, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX2 void vdb_ip_tile1_avx2(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx2(VDB_METRIC_IP, 1, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX2 void vdb_cosine_tile_avx2(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx2(VDB_METRIC_COSINE, 4, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX2 void vdb_cosine_tile1_avx2(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx2(VDB_METRIC_COSINE, 1, q, d, qn, r, o, n); }
static const vdb_block_parts vdb_block_parts_avx2[3] = {
    {2, vdb_l2sq_tile_avx2, vdb_l2sq_tile1_avx2, vdb_sumsq_fn_avx2, vdb_l2sq_f32_avx2, vdb_l2sq_batch_avx2},
    {2, vdb_ip_tile_avx2, vdb_ip_tile1_avx2, vdb_sumsq_fn_avx2, vdb_ip_f32_avx2, vdb_ip_batch_avx2},
    {2, vdb_cosine_tile_avx2, vdb_cosine_tile1_avx2, vdb_sumsq_fn_avx2, vdb_cosine_f32_avx2, vdb_cosine_batch_avx2},
};
static VDB_AVX2 void vdb_l2sq_block_avx2(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_drive(&vdb_block_parts_avx2[VDB_METRIC_L2], VDB_METRIC_L2, q, nq, r, n, d, o); }
static VDB_AVX2 void vdb_l2sq_block_one_avx2(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_block_drive_one(&vdb_block_parts_avx2[VDB_METRIC_L2], VDB_METRIC_L2, q, r, n, d, o); }
static VDB_AVX2 void vdb_ip_block_avx2(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_drive(&vdb_block_parts_avx2[VDB_METRIC_IP], VDB_METRIC_IP, q, nq, r, n, d, o); }
static VDB_AVX2 void vdb_ip_block_one_avx2(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_block_drive_one(&vdb_block_parts_avx2[VDB_METRIC_IP], VDB_METRIC_IP, q, r, n, d, o); }
static VDB_AVX2 void vdb_cosine_block_avx2(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_drive(&vdb_block_parts_avx2[VDB_METRIC_COSINE], VDB_METRIC_COSINE, q, nq, r, n, d, o); }
static VDB_AVX2 void vdb_cosine_block_one_avx2(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_block_drive_one(&vdb_block_parts_avx2[VDB_METRIC_COSINE], VDB_METRIC_COSINE, q, r, n, d, o); }

static const vdb_kernel_set vdb_kernels_avx2 = {
    "avx2", VDB_CPU_AVX2,
    {vdb_l2sq_f32_avx2, vdb_ip_f32_avx2, vdb_cosine_f32_avx2},
    {vdb_l2sq_batch_avx2, vdb_ip_batch_avx2, vdb_cosine_batch_avx2},
    {vdb_l2sq_block_avx2, vdb_ip_block_avx2, vdb_cosine_block_avx2},
    {vdb_l2sq_block_one_avx2, vdb_ip_block_one_avx2, vdb_cosine_block_one_avx2},
    vdb_sumsq_fn_avx2,
    vdb_cosine_aa_avx2,
};

/* ------------------------------------------------------------------------------------------ */
/* AVX-512 (F+BW+DQ+VL): 16 floats per register, 32 registers, masked loads for every tail. */

#define VDB_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))

VDB_INLINE VDB_AVX512 __mmask16 vdb_mask16(size_t r) { return (__mmask16)((1u << r) - 1u); }

VDB_INLINE VDB_AVX512 void vdb_step_avx512(int m, __m512 q, __m512 r, __m512 *acc, __m512 *nrm)
{
    if (m == VDB_METRIC_L2) {
        __m512 t = _mm512_sub_ps(q, r);
        *acc = _mm512_fmadd_ps(t, t, *acc);
    } else {
        *acc = _mm512_fmadd_ps(q, r, *acc);
        if (m == VDB_METRIC_COSINE)
            *nrm = _mm512_fmadd_ps(r, r, *nrm);
    }
}

/* [sum a, sum b, sum c, sum d] with shuffles instead of four separate reductions. */
VDB_INLINE VDB_AVX512 __m128 vdb_hsum4_avx512(__m512 a, __m512 b, __m512 c, __m512 d)
{
    /* fold 512 -> 256: ab = [a_lo+a_hi | b_lo+b_hi] */
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    /* fold 256 -> 128: lane j holds 4 partial sums of input j */
    __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    y = _mm512_add_ps(y, _mm512_permute_ps(y, 0x4E));
    y = _mm512_add_ps(y, _mm512_permute_ps(y, 0xB1));
    __m512i idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, y));
}

/* Sixteen horizontal sums: v[4*j + L] -> result element 4*L + j. */
VDB_INLINE VDB_AVX512 __m512 vdb_hsum16_avx512(const __m512 v[16])
{
    __m512 y[4];
    for (int j = 0; j < 4; j++) {
        const __m512 *x = v + 4 * j;
        __m512 x01 = _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], 0x44), _mm512_shuffle_f32x4(x[0], x[1], 0xEE));
        __m512 x23 = _mm512_add_ps(_mm512_shuffle_f32x4(x[2], x[3], 0x44), _mm512_shuffle_f32x4(x[2], x[3], 0xEE));
        y[j] = _mm512_add_ps(_mm512_shuffle_f32x4(x01, x23, 0x88), _mm512_shuffle_f32x4(x01, x23, 0xDD));
    }
    /* 4x4 transpose inside each 128-bit lane, adding as we go */
    __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(y[0], y[1]), _mm512_unpackhi_ps(y[0], y[1]));
    __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(y[2], y[3]), _mm512_unpackhi_ps(y[2], y[3]));
    __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23));
    __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23));
    return _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
}

VDB_INLINE VDB_AVX512 float vdb_sumsq_avx512(const float *a, size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512 x = _mm512_loadu_ps(a + i), y = _mm512_loadu_ps(a + i + 16);
        s0 = _mm512_fmadd_ps(x, x, s0);
        s1 = _mm512_fmadd_ps(y, y, s1);
    }
    if (i + 16 <= d) {
        __m512 x = _mm512_loadu_ps(a + i);
        s0 = _mm512_fmadd_ps(x, x, s0);
        i += 16;
    }
    if (i < d) {
        __m512 x = _mm512_maskz_loadu_ps(vdb_mask16(d - i), a + i);
        s1 = _mm512_fmadd_ps(x, x, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

VDB_INLINE VDB_AVX512 float vdb_raw1_avx512(int m, const float *q, const float *r, size_t d, float *rr)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, n0 = a0, n1 = a0;
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        vdb_step_avx512(m, _mm512_loadu_ps(q + i), _mm512_loadu_ps(r + i), &a0, &n0);
        vdb_step_avx512(m, _mm512_loadu_ps(q + i + 16), _mm512_loadu_ps(r + i + 16), &a1, &n1);
        vdb_step_avx512(m, _mm512_loadu_ps(q + i + 32), _mm512_loadu_ps(r + i + 32), &a2, &n0);
        vdb_step_avx512(m, _mm512_loadu_ps(q + i + 48), _mm512_loadu_ps(r + i + 48), &a3, &n1);
    }
    for (; i + 16 <= d; i += 16)
        vdb_step_avx512(m, _mm512_loadu_ps(q + i), _mm512_loadu_ps(r + i), &a0, &n0);
    if (i < d) {
        __mmask16 mk = vdb_mask16(d - i);
        vdb_step_avx512(m, _mm512_maskz_loadu_ps(mk, q + i), _mm512_maskz_loadu_ps(mk, r + i), &a1, &n1);
    }
    *rr = m == VDB_METRIC_COSINE ? _mm512_reduce_add_ps(_mm512_add_ps(n0, n1)) : 0.0f;
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* Cosine epilogue for 16 lanes: 1 - s / den, and 1 where den (|q| |r|) is 0. */
VDB_INLINE VDB_AVX512 __m512 vdb_cos_finish_avx512(__m512 s, __m512 den)
{
    __mmask16 nz = _mm512_cmp_ps_mask(den, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    return _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_maskz_div_ps(nz, s, den));
}

VDB_INLINE VDB_AVX512 float vdb_sqrt_avx512(float x) { return _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(x))); }

VDB_INLINE VDB_AVX512 void vdb_batch_avx512(int m, const float *q, const float *rows, size_t n, size_t d,
                                            float *out)
{
    /* One row at a time with four accumulators measured faster than interleaving four rows
     * (10k x 128 in L3: 53 vs 62 us): a single sequential stream suits the prefetchers. */
    if (m != VDB_METRIC_COSINE) {
        for (size_t i = 0; i < n; i++) {
            float rr;
            out[i] = vdb_finish(m, vdb_raw1_avx512(m, q, rows + i * d, d, &rr), 0.0f, 0.0f);
        }
        return;
    }
    /* Cosine: raw sums of 16 rows, then one vector sqrt/divide for the 16. */
    __m512 qn = _mm512_set1_ps(vdb_sqrt_avx512(vdb_sumsq_avx512(q, d)));
    for (size_t i = 0; i < n; i += 16) {
        size_t cnt = n - i < 16 ? n - i : 16;
        float sb[16], rb[16];
        for (size_t j = 0; j < cnt; j++)
            sb[j] = vdb_raw1_avx512(m, q, rows + (i + j) * d, d, &rb[j]);
        __mmask16 mk = vdb_mask16(cnt);
        __m512 den = _mm512_mul_ps(qn, _mm512_sqrt_ps(_mm512_maskz_loadu_ps(mk, rb)));
        _mm512_mask_storeu_ps(out + i, mk, vdb_cos_finish_avx512(_mm512_maskz_loadu_ps(mk, sb), den));
    }
}

/* Tile of 4 queries x 4 rows: 16 accumulators (+4 row norms for cosine), 8 loads per 16 FMAs.
 * nql: the live queries, 4 or 1 (the others' accumulators stay 0: vdb_hsum16 sums each on its own). */
VDB_INLINE VDB_AVX512 void vdb_tile4x4_avx512(int m, int nql, const float *q, size_t d, const float *r, __m512 *sums,
                                              __m128 *rr)
{
    __m512 acc[16], nrm[4], dummy = _mm512_setzero_ps();
    for (int j = 0; j < 16; j++)
        acc[j] = dummy;
    for (int j = 0; j < 4; j++)
        nrm[j] = dummy;
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m512 x[4];
        for (int a = 0; a < nql; a++)
            x[a] = _mm512_loadu_ps(q + a * d + i);
        for (int b = 0; b < 4; b++) {
            __m512 y = _mm512_loadu_ps(r + b * d + i);
            if (m == VDB_METRIC_COSINE)
                nrm[b] = _mm512_fmadd_ps(y, y, nrm[b]);
            for (int a = 0; a < nql; a++) /* acc[4*row + query]: the order vdb_hsum16 transposes */
                vdb_step_avx512(m, x[a], y, &acc[4 * b + a], &dummy);
        }
    }
    if (i < d) {
        __mmask16 mk = vdb_mask16(d - i);
        __m512 x[4];
        for (int a = 0; a < nql; a++)
            x[a] = _mm512_maskz_loadu_ps(mk, q + a * d + i);
        for (int b = 0; b < 4; b++) {
            __m512 y = _mm512_maskz_loadu_ps(mk, r + b * d + i);
            if (m == VDB_METRIC_COSINE)
                nrm[b] = _mm512_fmadd_ps(y, y, nrm[b]);
            for (int a = 0; a < nql; a++)
                vdb_step_avx512(m, x[a], y, &acc[4 * b + a], &dummy);
        }
    }
    /* result element 4*query + row */
    *sums = vdb_hsum16_avx512(acc);
    if (m == VDB_METRIC_COSINE)
        *rr = vdb_hsum4_avx512(nrm[0], nrm[1], nrm[2], nrm[3]);
}

/* Tile of the block driver: 4 queries x 4 rows, finished and stored. */
VDB_INLINE VDB_AVX512 void vdb_tile_avx512(int m, int nql, const float *q, size_t d, const float *qn, const float *rows,
                                           float *out, size_t n)
{
    __m512 v;
    __m128 rr = _mm_setzero_ps();
    vdb_tile4x4_avx512(m, nql, q, d, rows, &v, &rr);
    if (m == VDB_METRIC_IP) {
        v = _mm512_sub_ps(_mm512_set1_ps(1.0f), v);
    } else if (m == VDB_METRIC_COSINE) {
        /* element 4*query + row, the layout of the tile's sums */
        __m512 qnv = _mm512_set_ps(qn[3], qn[3], qn[3], qn[3], qn[2], qn[2], qn[2], qn[2], qn[1], qn[1], qn[1],
                                   qn[1], qn[0], qn[0], qn[0], qn[0]);
        v = vdb_cos_finish_avx512(v, _mm512_mul_ps(qnv, _mm512_broadcast_f32x4(_mm_sqrt_ps(rr))));
    }
    _mm_storeu_ps(out, _mm512_castps512_ps128(v));
    if (nql == 1)
        return;
    _mm_storeu_ps(out + n, _mm512_extractf32x4_ps(v, 1));
    _mm_storeu_ps(out + 2 * n, _mm512_extractf32x4_ps(v, 2));
    _mm_storeu_ps(out + 3 * n, _mm512_extractf32x4_ps(v, 3));
}

/* qq: a's squared norm (cosine only) */
VDB_INLINE VDB_AVX512 float vdb_pair_qq_avx512(int m, const float *a, float qq, const float *b, size_t d)
{
    float rr;
    float s = vdb_raw1_avx512(m, a, b, d, &rr);
    if (m == VDB_METRIC_COSINE) {
        /* The batch epilogue's float arithmetic, so a row's distance does not depend on whether a
         * search scored it alone (sparse filter) or in a batch. */
        float den = vdb_sqrt_avx512(qq) * vdb_sqrt_avx512(rr);
        return den != 0.0f ? 1.0f - s / den : 1.0f;
    }
    return vdb_finish(m, s, qq, rr);
}

VDB_INLINE VDB_AVX512 float vdb_pair_avx512(int m, const float *a, const float *b, size_t d)
{
    return vdb_pair_qq_avx512(m, a, m == VDB_METRIC_COSINE ? vdb_sumsq_avx512(a, d) : 0.0f, b, d);
}

static VDB_AVX512 float vdb_l2sq_f32_avx512(const float *a, const float *b, size_t d) { return vdb_pair_avx512(VDB_METRIC_L2, a, b, d); }
static VDB_AVX512 float vdb_ip_f32_avx512(const float *a, const float *b, size_t d) { return vdb_pair_avx512(VDB_METRIC_IP, a, b, d); }
static VDB_AVX512 float vdb_cosine_f32_avx512(const float *a, const float *b, size_t d) { return vdb_pair_avx512(VDB_METRIC_COSINE, a, b, d); }
static VDB_AVX512 float vdb_cosine_aa_avx512(const float *a, float aa, const float *b, size_t d) { return vdb_pair_qq_avx512(VDB_METRIC_COSINE, a, aa, b, d); }

static VDB_AVX512 void vdb_l2sq_batch_avx512(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_avx512(VDB_METRIC_L2, q, r, n, d, o); }
static VDB_AVX512 void vdb_ip_batch_avx512(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_avx512(VDB_METRIC_IP, q, r, n, d, o); }
static VDB_AVX512 void vdb_cosine_batch_avx512(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_avx512(VDB_METRIC_COSINE, q, r, n, d, o); }
static VDB_AVX512 float vdb_sumsq_fn_avx512(const float *a, size_t d) { return vdb_sumsq_avx512(a, d); }
VDB_INLINE VDB_AVX512 void vdb_l2sq_tile_avx512(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx512(VDB_METRIC_L2, 4, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX512 void vdb_l2sq_tile1_avx512(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx512(VDB_METRIC_L2, 1, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX512 void vdb_ip_tile_avx512(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx512(VDB_METRIC_IP, 4, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX512 void vdb_ip_tile1_avx512(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx512(VDB_METRIC_IP, 1, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX512 void vdb_cosine_tile_avx512(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx512(VDB_METRIC_COSINE, 4, q, d, qn, r, o, n); }
VDB_INLINE VDB_AVX512 void vdb_cosine_tile1_avx512(const float *q, size_t d, const float *qn, const float *r, float *o, size_t n) { vdb_tile_avx512(VDB_METRIC_COSINE, 1, q, d, qn, r, o, n); }
static const vdb_block_parts vdb_block_parts_avx512[3] = {
    {4, vdb_l2sq_tile_avx512, vdb_l2sq_tile1_avx512, vdb_sumsq_fn_avx512, vdb_l2sq_f32_avx512, vdb_l2sq_batch_avx512},
    {4, vdb_ip_tile_avx512, vdb_ip_tile1_avx512, vdb_sumsq_fn_avx512, vdb_ip_f32_avx512, vdb_ip_batch_avx512},
    {4, vdb_cosine_tile_avx512, vdb_cosine_tile1_avx512, vdb_sumsq_fn_avx512, vdb_cosine_f32_avx512, vdb_cosine_batch_avx512},
};
static VDB_AVX512 void vdb_l2sq_block_avx512(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_drive(&vdb_block_parts_avx512[VDB_METRIC_L2], VDB_METRIC_L2, q, nq, r, n, d, o); }
static VDB_AVX512 void vdb_l2sq_block_one_avx512(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_block_drive_one(&vdb_block_parts_avx512[VDB_METRIC_L2], VDB_METRIC_L2, q, r, n, d, o); }
static VDB_AVX512 void vdb_ip_block_avx512(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_drive(&vdb_block_parts_avx512[VDB_METRIC_IP], VDB_METRIC_IP, q, nq, r, n, d, o); }
static VDB_AVX512 void vdb_ip_block_one_avx512(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_block_drive_one(&vdb_block_parts_avx512[VDB_METRIC_IP], VDB_METRIC_IP, q, r, n, d, o); }
static VDB_AVX512 void vdb_cosine_block_avx512(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_drive(&vdb_block_parts_avx512[VDB_METRIC_COSINE], VDB_METRIC_COSINE, q, nq, r, n, d, o); }
static VDB_AVX512 void vdb_cosine_block_one_avx512(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_block_drive_one(&vdb_block_parts_avx512[VDB_METRIC_COSINE], VDB_METRIC_COSINE, q, r, n, d, o); }

static const vdb_kernel_set vdb_kernels_avx512 = {
    "avx512", VDB_CPU_AVX512,
    {vdb_l2sq_f32_avx512, vdb_ip_f32_avx512, vdb_cosine_f32_avx512},
    {vdb_l2sq_batch_avx512, vdb_ip_batch_avx512, vdb_cosine_batch_avx512},
    {vdb_l2sq_block_avx512, vdb_ip_block_avx512, vdb_cosine_block_avx512},
    {vdb_l2sq_block_one_avx512, vdb_ip_block_one_avx512, vdb_cosine_block_one_avx512},
    vdb_sumsq_fn_avx512,
    vdb_cosine_aa_avx512,
};
#endif /* VDB_HAVE_X86 */

#if defined(__aarch64__)
/* ------------------------------------------------------------------------------------------ */
/* NEON (arm64 baseline): 4 floats per register; short tails finish with a scalar loop. */

VDB_INLINE void vdb_step_neon(int m, float32x4_t q, float32x4_t r, float32x4_t *acc, float32x4_t *nrm)
{
    if (m == VDB_METRIC_L2) {
        float32x4_t t = vsubq_f32(q, r);
        *acc = vfmaq_f32(*acc, t, t);
    } else {
        *acc = vfmaq_f32(*acc, q, r);
        if (m == VDB_METRIC_COSINE)
            *nrm = vfmaq_f32(*nrm, r, r);
    }
}

VDB_INLINE float vdb_sumsq_neon(const float *a, size_t d)
{
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0;
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        float32x4_t x = vld1q_f32(a + i), y = vld1q_f32(a + i + 4);
        s0 = vfmaq_f32(s0, x, x);
        s1 = vfmaq_f32(s1, y, y);
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < d; i++)
        s += a[i] * a[i];
    return s;
}

VDB_INLINE float vdb_raw1_neon(int m, const float *q, const float *r, size_t d, float *rr)
{
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0, n0 = a0, n1 = a0;
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        vdb_step_neon(m, vld1q_f32(q + i), vld1q_f32(r + i), &a0, &n0);
        vdb_step_neon(m, vld1q_f32(q + i + 4), vld1q_f32(r + i + 4), &a1, &n1);
        vdb_step_neon(m, vld1q_f32(q + i + 8), vld1q_f32(r + i + 8), &a2, &n0);
        vdb_step_neon(m, vld1q_f32(q + i + 12), vld1q_f32(r + i + 12), &a3, &n1);
    }
    for (; i + 4 <= d; i += 4)
        vdb_step_neon(m, vld1q_f32(q + i), vld1q_f32(r + i), &a0, &n0);
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    float n = vaddvq_f32(vaddq_f32(n0, n1));
    for (; i < d; i++) {
        if (m == VDB_METRIC_L2) {
            float t = q[i] - r[i];
            s += t * t;
        } else {
            s += q[i] * r[i];
            n += r[i] * r[i];
        }
    }
    *rr = m == VDB_METRIC_COSINE ? n : 0.0f;
    return s;
}

VDB_INLINE void vdb_batch_neon(int m, const float *q, const float *rows, size_t n, size_t d, float *out)
{
    float qq = m == VDB_METRIC_COSINE ? vdb_sumsq_neon(q, d) : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float rr;
        float s = vdb_raw1_neon(m, q, rows + i * d, d, &rr);
        out[i] = vdb_finish(m, s, qq, rr);
    }
}

VDB_INLINE float vdb_pair_neon(int m, const float *a, const float *b, size_t d)
{
    float rr;
    float qq = m == VDB_METRIC_COSINE ? vdb_sumsq_neon(a, d) : 0.0f;
    float s = vdb_raw1_neon(m, a, b, d, &rr);
    return vdb_finish(m, s, qq, rr);
}

/* Block: rows in cache-sized chunks, every query over the chunk while it is hot. */
VDB_INLINE void vdb_block_neon(int m, const float *qs, size_t nq, const float *rows, size_t n, size_t d, float *out)
{
    size_t chunk = vdb_block_chunk_rows(d);
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        size_t cn = n - c0 < chunk ? n - c0 : chunk;
        for (size_t j = 0; j < nq; j++)
            vdb_batch_neon(m, qs + j * d, rows + c0 * d, cn, d, out + j * n + c0);
    }
}

static float vdb_l2sq_f32_neon(const float *a, const float *b, size_t d) { return vdb_pair_neon(VDB_METRIC_L2, a, b, d); }
static float vdb_ip_f32_neon(const float *a, const float *b, size_t d) { return vdb_pair_neon(VDB_METRIC_IP, a, b, d); }
static float vdb_cosine_f32_neon(const float *a, const float *b, size_t d) { return vdb_pair_neon(VDB_METRIC_COSINE, a, b, d); }

static void vdb_l2sq_batch_neon(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_neon(VDB_METRIC_L2, q, r, n, d, o); }
static void vdb_ip_batch_neon(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_neon(VDB_METRIC_IP, q, r, n, d, o); }
static void vdb_cosine_batch_neon(const float *q, const float *r, size_t n, size_t d, float *o) { vdb_batch_neon(VDB_METRIC_COSINE, q, r, n, d, o); }
static void vdb_l2sq_block_neon(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_neon(VDB_METRIC_L2, q, nq, r, n, d, o); }
static void vdb_ip_block_neon(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_neon(VDB_METRIC_IP, q, nq, r, n, d, o); }
static void vdb_cosine_block_neon(const float *q, size_t nq, const float *r, size_t n, size_t d, float *o) { vdb_block_neon(VDB_METRIC_COSINE, q, nq, r, n, d, o); }

static const vdb_kernel_set vdb_kernels_neon = {
    "neon", VDB_CPU_NEON,
    {vdb_l2sq_f32_neon, vdb_ip_f32_neon, vdb_cosine_f32_neon},
    {vdb_l2sq_batch_neon, vdb_ip_batch_neon, vdb_cosine_batch_neon},
    {vdb_l2sq_block_neon, vdb_ip_block_neon, vdb_cosine_block_neon},
    {NULL, NULL, NULL}, /* no one-query tile yet: callers pad a tile */
    NULL, /* vdb_distance_aa: the pair */
    NULL,
};
#endif /* __aarch64__ */

/* ------------------------------------------------------------------------------------------ */
/* Dispatch */

static const vdb_kernel_set *const vdb_kernel_sets[] = {
#if defined(VDB_HAVE_X86)
    &vdb_kernels_avx512,
    &vdb_kernels_avx2,
#endif
#if defined(__aarch64__)
    &vdb_kernels_neon,
#endif
    &vdb_kernels_serial,
};

static _Atomic(const vdb_kernel_set *) vdb_kernels_current;

void vdb_distance_select(unsigned enabled_features)
{
    const vdb_kernel_set *pick = &vdb_kernels_serial;
    for (size_t i = 0; i < sizeof vdb_kernel_sets / sizeof vdb_kernel_sets[0]; i++) {
        unsigned f = vdb_kernel_sets[i]->feature;
        if ((f & enabled_features) == f) {
            pick = vdb_kernel_sets[i];
            break;
        }
    }
    atomic_store_explicit(&vdb_kernels_current, pick, memory_order_release);
}

static const vdb_kernel_set *vdb_kernels(void)
{
    const vdb_kernel_set *k = atomic_load_explicit(&vdb_kernels_current, memory_order_acquire);
    if (k)
        return k;
    vdb_cpu_enabled(); /* first use: detection calls vdb_distance_select */
    return atomic_load_explicit(&vdb_kernels_current, memory_order_acquire);
}

static int vdb_metric_ok(vdb_metric m) { return m == VDB_METRIC_L2 || m == VDB_METRIC_IP || m == VDB_METRIC_COSINE; }

float vdb_distance(vdb_metric m, const float *a, const float *b, size_t d)
{
    if (!vdb_metric_ok(m))
        return __builtin_nanf("");
    return vdb_kernels()->pair[m](a, b, d);
}

float vdb_distance_norm2(vdb_metric m, const float *a, size_t d)
{
    const vdb_kernel_set *k = vdb_kernels();
    return m == VDB_METRIC_COSINE && k->sumsq ? k->sumsq(a, d) : 0.0f;
}

float vdb_distance_aa(vdb_metric m, const float *a, float aa, const float *b, size_t d)
{
    const vdb_kernel_set *k = vdb_kernels();
    if (m == VDB_METRIC_COSINE && k->cosine_aa)
        return k->cosine_aa(a, aa, b, d);
    return vdb_distance(m, a, b, d);
}

void vdb_distance_batch(vdb_metric m, const float *q, const float *rows, size_t n, size_t d, float *out)
{
    if (vdb_metric_ok(m) && n > 0)
        vdb_kernels()->batch[m](q, rows, n, d, out);
}

void vdb_distance_block(vdb_metric m, const float *queries, size_t nq, const float *rows, size_t n, size_t d,
                        float *out)
{
    if (vdb_metric_ok(m) && n > 0 && nq > 0)
        vdb_kernels()->block[m](queries, nq, rows, n, d, out);
}

static const vdb_kernel_set *vdb_kernels_by_name(const char *isa)
{
    if (!isa)
        return NULL;
    unsigned detected = vdb_cpu_detected();
    for (size_t i = 0; i < sizeof vdb_kernel_sets / sizeof vdb_kernel_sets[0]; i++) {
        const vdb_kernel_set *k = vdb_kernel_sets[i];
        if (strcmp(k->name, isa) == 0 && (k->feature & detected) == k->feature)
            return k;
    }
    return NULL;
}

int vdb_distance_batch_isa(const char *isa, vdb_metric m, const float *q, const float *rows, size_t n, size_t d,
                           float *out)
{
    const vdb_kernel_set *k = vdb_kernels_by_name(isa);
    if (!k || !vdb_metric_ok(m))
        return -1;
    if (n > 0)
        k->batch[m](q, rows, n, d, out);
    return 0;
}

int vdb_distance_aa_isa(const char *isa, vdb_metric m, const float *a, const float *b, size_t d, float *pair,
                        float *aa_pair)
{
    const vdb_kernel_set *k = vdb_kernels_by_name(isa);
    if (!k || !vdb_metric_ok(m))
        return -1;
    *pair = k->pair[m](a, b, d);
    *aa_pair = m == VDB_METRIC_COSINE && k->cosine_aa ? k->cosine_aa(a, k->sumsq(a, d), b, d) : *pair;
    return 0;
}

int vdb_distance_block_one(vdb_metric m, const float *q, const float *rows, size_t n, size_t d, float *out)
{
    const vdb_kernel_set *k = vdb_kernels();
    if (!vdb_metric_ok(m) || !k->block_one[m])
        return -1;
    if (n > 0)
        k->block_one[m](q, rows, n, d, out);
    return 0;
}

int vdb_distance_block_one_isa(const char *isa, vdb_metric m, const float *q, const float *rows, size_t n, size_t d,
                               float *out)
{
    const vdb_kernel_set *k = vdb_kernels_by_name(isa);
    if (!k || !vdb_metric_ok(m) || !k->block_one[m])
        return -1;
    if (n > 0)
        k->block_one[m](q, rows, n, d, out);
    return 0;
}

int vdb_distance_block_isa(const char *isa, vdb_metric m, const float *queries, size_t nq, const float *rows,
                           size_t n, size_t d, float *out)
{
    const vdb_kernel_set *k = vdb_kernels_by_name(isa);
    if (!k || !vdb_metric_ok(m))
        return -1;
    if (n > 0 && nq > 0)
        k->block[m](queries, nq, rows, n, d, out);
    return 0;
}
