/* vdb_nearest — see vdb_nearest.h for the contract.
 *
 * Each variant walks the points in micro-blocks of MR rows; for each panel of 32 centroids it keeps
 * an MR x 32 tile of dot products in registers over the whole dimension, then folds the tile into
 * per-lane running minima (value and index, kept in a small stack array). A lane only ever sees
 * indices in increasing order and replaces its minimum on strictly smaller values, so it holds the
 * lowest index of its minimum; the final fold over the 32 lanes breaks ties by index. AVX2 and
 * AVX-512 return the same bits (one FMA per term, in dimension order).
 */
#include "vdb_nearest.h"

#include <math.h>
#include <string.h>

#include "vdb_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define VDB_NEAREST_X86 1
#endif

typedef void (*vdb_nearest_fn)(const float *x, size_t n, size_t d, const float *packed,
                               const float *bias, size_t k, uint32_t *best, float *best_val);

static inline size_t vdb_panel_count(size_t k) { return k / VDB_PANEL_WIDTH + (k % VDB_PANEL_WIDTH != 0); }

/* Row pointers of the micro-block of mr_max points at i0; a short last block repeats its last point
 * (the kernels compute it again and discard the answer), so the kernels need no tail code. */
static inline size_t vdb_block_rows(const float *x, size_t n, size_t d, size_t i0, size_t mr_max, const float **xr)
{
    const size_t mr = n - i0 < mr_max ? n - i0 : mr_max;
    for (size_t r = 0; r < mr_max; r++) xr[r] = x + (i0 + (r < mr ? r : mr - 1)) * d;
    return mr;
}

size_t vdb_panel_floats(size_t k, size_t d)
{
    size_t cols = vdb_panel_count(k) * VDB_PANEL_WIDTH;
    if (d != 0 && cols > SIZE_MAX / sizeof(float) / d) return 0;
    return cols * d;
}

void vdb_panel_pack(const float *centroids, size_t k, size_t d, float *packed)
{
    for (size_t p = 0; p < vdb_panel_count(k); p++) {
        float *P = packed + p * VDB_PANEL_WIDTH * d;
        for (size_t j = 0; j < VDB_PANEL_WIDTH; j++) {
            size_t c = p * VDB_PANEL_WIDTH + j;
            for (size_t t = 0; t < d; t++) P[t * VDB_PANEL_WIDTH + j] = c < k ? centroids[c * d + t] : 0.0f;
        }
    }
}

/* Folds the 32 lanes of one point (value, index) into its answer: smallest value, lowest index. */
static void vdb_lanes_fold(const float *lane_v, const uint32_t *lane_i, uint32_t *best, float *best_val)
{
    float bv = lane_v[0];
    uint32_t bi = lane_i[0];
    for (int l = 1; l < VDB_PANEL_WIDTH; l++) {
        if (lane_v[l] < bv || (lane_v[l] == bv && lane_i[l] < bi)) {
            bv = lane_v[l];
            bi = lane_i[l];
        }
    }
    *best = bi;
    if (best_val) *best_val = bv;
}

/* ---- Serial reference. Where the compiler has a fast fmaf (arm64) it is one rounding per term, as
 * the SIMD FMAs, and the lane loop vectorizes; on x86-64 (no FMA in the baseline ISA, and a libm
 * fmaf call per term is 10x slower) the multiply and the add round separately. */
#if defined(FP_FAST_FMAF)
#define VDB_MADD(a, b, c) fmaf((a), (b), (c))
#else
#define VDB_MADD(a, b, c) ((a) * (b) + (c))
#endif

static void vdb_nearest_serial(const float *x, size_t n, size_t d, const float *packed, const float *bias,
                               size_t k, uint32_t *best, float *best_val)
{
    const size_t panels = vdb_panel_count(k);
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * d;
        float bv = INFINITY;
        uint32_t bi = 0;
        for (size_t p = 0; p < panels; p++) {
            const float *P = packed + p * VDB_PANEL_WIDTH * d;
            float acc[VDB_PANEL_WIDTH] = {0};
            for (size_t t = 0; t < d; t++) {
                const float xv = xi[t], *row = P + t * VDB_PANEL_WIDTH;
                for (int j = 0; j < VDB_PANEL_WIDTH; j++) acc[j] = VDB_MADD(xv, row[j], acc[j]);
            }
            size_t base = p * VDB_PANEL_WIDTH, w = k - base < VDB_PANEL_WIDTH ? k - base : VDB_PANEL_WIDTH;
            for (size_t j = 0; j < w; j++) {
                float v = bias[base + j] - 2.0f * acc[j];
                if (v < bv) {
                    bv = v;
                    bi = (uint32_t)(base + j);
                }
            }
        }
        best[i] = bi;
        if (best_val) best_val[i] = bv;
    }
}

#if defined(VDB_NEAREST_X86)
/* ---- AVX2 + FMA: 6 points x 16 centroids (half a panel) = 12 ymm accumulators, plus 2 panel
 * registers and a broadcast (15 of 16 registers); each half panel is one pass over the dimension. */

#define VDB_NEAREST_AVX2 __attribute__((target("avx2,fma")))
enum { MR_AVX2 = 6 };

static VDB_NEAREST_AVX2 void vdb_nearest_avx2(const float *x, size_t n, size_t d, const float *packed,
                                              const float *bias, size_t k, uint32_t *best, float *best_val)
{
    const size_t panels = vdb_panel_count(k);
    const __m256 two = _mm256_set1_ps(2.0f);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _Alignas(32) float lane_v[MR_AVX2][VDB_PANEL_WIDTH];
    _Alignas(32) uint32_t lane_i[MR_AVX2][VDB_PANEL_WIDTH];
    for (size_t i0 = 0; i0 < n; i0 += MR_AVX2) {
        const float *xr[MR_AVX2];
        const size_t mr = vdb_block_rows(x, n, d, i0, MR_AVX2, xr);
        for (size_t r = 0; r < MR_AVX2; r++)
            for (int l = 0; l < VDB_PANEL_WIDTH; l++) {
                lane_v[r][l] = INFINITY;
                lane_i[r][l] = 0;
            }
        for (size_t p = 0; p < panels; p++) {
            const size_t base = p * VDB_PANEL_WIDTH;
            const int w = (int)(k - base < VDB_PANEL_WIDTH ? k - base : VDB_PANEL_WIDTH);
            for (int half = 0; half < 2 && 16 * half < w; half++) {
                const float *P = packed + base * d + 16 * half;
                __m256 acc[MR_AVX2 * 2];
                for (int a = 0; a < MR_AVX2 * 2; a++) acc[a] = _mm256_setzero_ps();
                for (size_t t = 0; t < d; t++) {
                    __m256 b0 = _mm256_loadu_ps(P + t * VDB_PANEL_WIDTH);
                    __m256 b1 = _mm256_loadu_ps(P + t * VDB_PANEL_WIDTH + 8);
#pragma GCC unroll 6
                    for (int r = 0; r < MR_AVX2; r++) {
                        __m256 xv = _mm256_broadcast_ss(xr[r] + t);
                        acc[2 * r] = _mm256_fmadd_ps(xv, b0, acc[2 * r]);
                        acc[2 * r + 1] = _mm256_fmadd_ps(xv, b1, acc[2 * r + 1]);
                    }
                }
                for (int h = 0; h < 2; h++) {
                    const int off = 16 * half + 8 * h; /* lane offset inside the panel */
                    __m256i lanes = _mm256_add_epi32(iota, _mm256_set1_epi32(off));
                    __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lanes);
                    __m256 bias_h = _mm256_maskload_ps(bias + base + off, valid);
                    __m256i ids = _mm256_add_epi32(lanes, _mm256_set1_epi32((int)base));
                    for (size_t r = 0; r < MR_AVX2; r++) {
                        __m256 v = _mm256_fnmadd_ps(acc[2 * r + h], two, bias_h);
                        __m256 cur = _mm256_load_ps(&lane_v[r][off]);
                        __m256 lt = _mm256_and_ps(_mm256_cmp_ps(v, cur, _CMP_LT_OQ), _mm256_castsi256_ps(valid));
                        _mm256_store_ps(&lane_v[r][off], _mm256_blendv_ps(cur, v, lt));
                        __m256i cur_i = _mm256_load_si256((const __m256i *)&lane_i[r][off]);
                        _mm256_store_si256((__m256i *)&lane_i[r][off],
                                           _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(cur_i),
                                                                                _mm256_castsi256_ps(ids), lt)));
                    }
                }
            }
        }
        for (size_t r = 0; r < mr; r++)
            vdb_lanes_fold(lane_v[r], lane_i[r], &best[i0 + r], best_val ? &best_val[i0 + r] : NULL);
    }
}

/* ---- AVX-512: 8 points x 32 centroids = 16 zmm accumulators; per dimension 2 panel loads and 8
 * broadcasts feed 16 FMAs. */

#define VDB_NEAREST_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
enum { MR_AVX512 = 8 };

static VDB_NEAREST_AVX512 void vdb_nearest_avx512(const float *x, size_t n, size_t d, const float *packed,
                                                  const float *bias, size_t k, uint32_t *best, float *best_val)
{
    const size_t panels = vdb_panel_count(k);
    const __m512 two = _mm512_set1_ps(2.0f);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _Alignas(64) float lane_v[MR_AVX512][VDB_PANEL_WIDTH];
    _Alignas(64) uint32_t lane_i[MR_AVX512][VDB_PANEL_WIDTH];
    for (size_t i0 = 0; i0 < n; i0 += MR_AVX512) {
        const float *xr[MR_AVX512];
        const size_t mr = vdb_block_rows(x, n, d, i0, MR_AVX512, xr);
        for (size_t r = 0; r < MR_AVX512; r++) {
            _mm512_store_ps(&lane_v[r][0], _mm512_set1_ps(INFINITY));
            _mm512_store_ps(&lane_v[r][16], _mm512_set1_ps(INFINITY));
            _mm512_store_si512(&lane_i[r][0], _mm512_setzero_si512());
            _mm512_store_si512(&lane_i[r][16], _mm512_setzero_si512());
        }
        for (size_t p = 0; p < panels; p++) {
            const float *P = packed + p * VDB_PANEL_WIDTH * d;
            __m512 acc[MR_AVX512 * 2];
            for (int a = 0; a < MR_AVX512 * 2; a++) acc[a] = _mm512_setzero_ps();
            for (size_t t = 0; t < d; t++) {
                __m512 b0 = _mm512_loadu_ps(P + t * VDB_PANEL_WIDTH);
                __m512 b1 = _mm512_loadu_ps(P + t * VDB_PANEL_WIDTH + 16);
#pragma GCC unroll 8
                for (int r = 0; r < MR_AVX512; r++) {
                    __m512 xv = _mm512_set1_ps(xr[r][t]);
                    acc[2 * r] = _mm512_fmadd_ps(xv, b0, acc[2 * r]);
                    acc[2 * r + 1] = _mm512_fmadd_ps(xv, b1, acc[2 * r + 1]);
                }
            }
            const size_t base = p * VDB_PANEL_WIDTH;
            const size_t w = k - base < VDB_PANEL_WIDTH ? k - base : VDB_PANEL_WIDTH;
            const __mmask16 m0 = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1u);
            const __mmask16 m1 = w >= 32 ? (__mmask16)0xFFFF : w > 16 ? (__mmask16)((1u << (w - 16)) - 1u) : 0;
            const __m512 bias0 = _mm512_maskz_loadu_ps(m0, bias + base);
            const __m512 bias1 = _mm512_maskz_loadu_ps(m1, bias + base + 16);
            const __m512i id0 = _mm512_add_epi32(iota, _mm512_set1_epi32((int)base));
            const __m512i id1 = _mm512_add_epi32(id0, _mm512_set1_epi32(16));
            for (size_t r = 0; r < MR_AVX512; r++) {
                __m512 v0 = _mm512_fnmadd_ps(acc[2 * r], two, bias0);
                __m512 v1 = _mm512_fnmadd_ps(acc[2 * r + 1], two, bias1);
                __mmask16 lt0 = _mm512_mask_cmp_ps_mask(m0, v0, _mm512_load_ps(&lane_v[r][0]), _CMP_LT_OQ);
                __mmask16 lt1 = _mm512_mask_cmp_ps_mask(m1, v1, _mm512_load_ps(&lane_v[r][16]), _CMP_LT_OQ);
                _mm512_mask_store_ps(&lane_v[r][0], lt0, v0);
                _mm512_mask_store_ps(&lane_v[r][16], lt1, v1);
                _mm512_mask_store_epi32(&lane_i[r][0], lt0, id0);
                _mm512_mask_store_epi32(&lane_i[r][16], lt1, id1);
            }
        }
        for (size_t r = 0; r < mr; r++)
            vdb_lanes_fold(lane_v[r], lane_i[r], &best[i0 + r], best_val ? &best_val[i0 + r] : NULL);
    }
}
#endif /* VDB_NEAREST_X86 */

/* ---- Dispatch: the widest variant the enabled CPU features allow (vdb_cpu). */

static vdb_nearest_fn vdb_nearest_variant(const char *isa, unsigned features)
{
#if defined(VDB_NEAREST_X86)
    if ((!isa || strcmp(isa, "avx512") == 0) && (features & VDB_CPU_AVX512)) return vdb_nearest_avx512;
    if ((!isa || strcmp(isa, "avx2") == 0) && (features & VDB_CPU_AVX2)) return vdb_nearest_avx2;
#endif
    if (!isa || strcmp(isa, "serial") == 0) return vdb_nearest_serial;
    return NULL;
}

void vdb_nearest_packed(const float *x, size_t n, size_t d, const float *packed, const float *bias, size_t k,
                        uint32_t *best, float *best_val)
{
    if (n == 0 || k == 0) return;
    vdb_nearest_variant(NULL, vdb_cpu_enabled())(x, n, d, packed, bias, k, best, best_val);
}

int vdb_nearest_packed_isa(const char *isa, const float *x, size_t n, size_t d, const float *packed,
                           const float *bias, size_t k, uint32_t *best, float *best_val)
{
    vdb_nearest_fn f = isa ? vdb_nearest_variant(isa, vdb_cpu_detected()) : NULL;
    if (!f) return -1;
    if (n > 0 && k > 0) f(x, n, d, packed, bias, k, best, best_val);
    return 0;
}
