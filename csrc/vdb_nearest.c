/* vdb_nearest — see vdb_nearest.h for the contract.
 *
 * Work order (each SIMD variant): points in super-blocks of VDB_NEAREST_SB, whose per-lane running
 * minima (value and index for each of a panel's 32 lanes) stay on the stack; for each group of
 * panels small enough to stay in L2, the super-block's points pass over it in micro-blocks of MR
 * rows, an MR x 32 tile of dot products held in registers over the whole dimension; points left
 * over (fewer than MR) go one at a time over several panels at once (a one-point tile would wait
 * on its FMA latency). Each tile is then folded into the lane minima. A lane only ever sees
 * indices in increasing order and replaces its minimum on strictly smaller values, so it holds the
 * lowest index of its minimum; the final fold over the 32 lanes breaks ties by index.
 * Every path computes each dot product as one FMA per term in dimension order, so AVX2 and
 * AVX-512 return the same bits, whatever the block a point falls in.
 */
#include "vdb_nearest.h"

#include <math.h>
#include <string.h>

#include "vdb_cpu.h"
#include "vdb_panel_tile.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define VDB_NEAREST_X86 1
#endif

enum { VDB_NEAREST_SB = 64 };                    /* points whose lane minima stay on the stack */
#define VDB_NEAREST_GROUP_BYTES ((size_t)256 << 10) /* panels per pass: fit in L2 (>= 1 MB) */

typedef void (*vdb_nearest_fn)(const float *x, size_t n, size_t d, const float *packed,
                               const float *bias, size_t k, uint32_t *best, float *best_val);

static inline size_t vdb_panel_count(size_t k) { return k / VDB_PANEL_WIDTH + (k % VDB_PANEL_WIDTH != 0); }

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
/* ---- The SIMD work order (see the top of this file), shared by AVX2 and AVX-512. */

/* Panels per group for dimension d (at least 1). */
static inline size_t vdb_group_panels(size_t d)
{
    size_t g = VDB_NEAREST_GROUP_BYTES / (VDB_PANEL_WIDTH * sizeof(float) * d);
    return g ? g : 1;
}

/* Lane minima of a super-block: row r's 32 lanes. */
typedef struct {
    float v[VDB_NEAREST_SB][VDB_PANEL_WIDTH];
    uint32_t i[VDB_NEAREST_SB][VDB_PANEL_WIDTH];
} vdb_lanes;

static void vdb_lanes_init(vdb_lanes *L, size_t rows)
{
    for (size_t r = 0; r < rows; r++)
        for (int l = 0; l < VDB_PANEL_WIDTH; l++) {
            L->v[r][l] = INFINITY;
            L->i[r][l] = 0;
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

/* One variant's kernels: an MR-row tile over panels [g0, g1) into lane rows r0.., and one point. */
typedef void (*vdb_tile_fn)(const float *x, size_t d, const float *packed, const float *bias, size_t k, size_t g0,
                            size_t g1, vdb_lanes *L, size_t r0);
typedef void (*vdb_row_fn)(const float *x, size_t d, const float *packed, const float *bias, size_t k, size_t g0,
                           size_t g1, float *lane_v, uint32_t *lane_i);

/* The work order every SIMD variant shares (see the top of this file). */
static void vdb_nearest_drive(size_t mr, vdb_tile_fn tile, vdb_row_fn row, const float *x, size_t n, size_t d,
                              const float *packed, const float *bias, size_t k, uint32_t *best, float *best_val)
{
    const size_t panels = vdb_panel_count(k), group = vdb_group_panels(d);
    _Alignas(64) vdb_lanes L;
    for (size_t s0 = 0; s0 < n; s0 += VDB_NEAREST_SB) {
        const size_t sn = n - s0 < VDB_NEAREST_SB ? n - s0 : VDB_NEAREST_SB;
        const float *xs = x + s0 * d;
        vdb_lanes_init(&L, sn);
        for (size_t g0 = 0; g0 < panels; g0 += group) {
            const size_t g1 = panels - g0 < group ? panels : g0 + group;
            size_t r = 0;
            for (; r + mr <= sn; r += mr) tile(xs + r * d, d, packed, bias, k, g0, g1, &L, r);
            for (; r < sn; r++) row(xs + r * d, d, packed, bias, k, g0, g1, L.v[r], L.i[r]);
        }
        for (size_t r = 0; r < sn; r++)
            vdb_lanes_fold(L.v[r], L.i[r], &best[s0 + r], best_val ? &best_val[s0 + r] : NULL);
    }
}

/* ---- AVX2 + FMA: tiles of 6 points x 16 centroids (half a panel) = 12 ymm accumulators, plus 2
 * panel registers and a broadcast (15 of 16 registers); one point goes over 2 panels at once. */

#define VDB_NEAREST_AVX2 __attribute__((target("avx2,fma")))
enum { MR_AVX2 = VDB_TILE_MR_AVX2 };

/* Folds 8 lanes (panel p, lanes off..off+7) of one point's dot products into its lane minima. */
static inline VDB_NEAREST_AVX2 void vdb_fold8_avx2(__m256 dot, size_t p, int off, size_t k, const float *bias,
                                                   float *lane_v, uint32_t *lane_i)
{
    const size_t base = p * VDB_PANEL_WIDTH;
    const int w = (int)(k - base < VDB_PANEL_WIDTH ? k - base : VDB_PANEL_WIDTH);
    const __m256i lanes = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(off));
    const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lanes);
    const __m256 b = _mm256_maskload_ps(bias + base + off, valid);
    const __m256 ids = _mm256_castsi256_ps(_mm256_add_epi32(lanes, _mm256_set1_epi32((int)base)));
    __m256 v = _mm256_fnmadd_ps(dot, _mm256_set1_ps(2.0f), b);
    __m256 cur = _mm256_load_ps(lane_v + off);
    __m256 lt = _mm256_and_ps(_mm256_cmp_ps(v, cur, _CMP_LT_OQ), _mm256_castsi256_ps(valid));
    _mm256_store_ps(lane_v + off, _mm256_blendv_ps(cur, v, lt));
    __m256 cur_i = _mm256_load_ps((const float *)(lane_i + off));
    _mm256_store_ps((float *)(lane_i + off), _mm256_blendv_ps(cur_i, ids, lt));
}

static VDB_NEAREST_AVX2 void vdb_tile_avx2(const float *x, size_t d, const float *packed, const float *bias,
                                                  size_t k, size_t g0, size_t g1, vdb_lanes *L, size_t r0)
{
    for (size_t p = g0; p < g1; p++) {
        const int w = (int)(k - p * VDB_PANEL_WIDTH < VDB_PANEL_WIDTH ? k - p * VDB_PANEL_WIDTH : VDB_PANEL_WIDTH);
        for (int half = 0; half < 2 && 16 * half < w; half++) {
            const float *P = packed + p * VDB_PANEL_WIDTH * d + 16 * half;
            __m256 acc[MR_AVX2 * 2];
            vdb_tile_dots_avx2(x, d, P, acc);
            for (size_t r = 0; r < MR_AVX2; r++) {
                vdb_fold8_avx2(acc[2 * r], p, 16 * half, k, bias, L->v[r0 + r], L->i[r0 + r]);
                vdb_fold8_avx2(acc[2 * r + 1], p, 16 * half + 8, k, bias, L->v[r0 + r], L->i[r0 + r]);
            }
        }
    }
}

static VDB_NEAREST_AVX2 void vdb_row_avx2(const float *x, size_t d, const float *packed, const float *bias,
                                                 size_t k, size_t g0, size_t g1, float *lane_v, uint32_t *lane_i)
{
    for (size_t p = g0; p < g1; p += 2) {
        const size_t np = g1 - p < 2 ? 1 : 2; /* a lone last panel reads panel p twice, folds once */
        const float *P0 = packed + p * VDB_PANEL_WIDTH * d, *P1 = P0 + (np - 1) * VDB_PANEL_WIDTH * d;
        __m256 acc[8];
        for (int a = 0; a < 8; a++) acc[a] = _mm256_setzero_ps();
        for (size_t t = 0; t < d; t++) {
            __m256 xv = _mm256_broadcast_ss(x + t);
            for (int h = 0; h < 4; h++) {
                acc[h] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(P0 + t * VDB_PANEL_WIDTH + 8 * h), acc[h]);
                acc[4 + h] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(P1 + t * VDB_PANEL_WIDTH + 8 * h), acc[4 + h]);
            }
        }
        for (size_t j = 0; j < np; j++)
            for (int h = 0; h < 4; h++) vdb_fold8_avx2(acc[4 * j + h], p + j, 8 * h, k, bias, lane_v, lane_i);
    }
}

static void vdb_nearest_avx2(const float *x, size_t n, size_t d, const float *packed, const float *bias, size_t k,
                             uint32_t *best, float *best_val)
{
    vdb_nearest_drive(MR_AVX2, vdb_tile_avx2, vdb_row_avx2, x, n, d, packed, bias, k, best, best_val);
}

/* ---- AVX-512: tiles of 8 points x 32 centroids = 16 zmm accumulators (per dimension 2 panel
 * loads and 8 broadcasts feed 16 FMAs); one point goes over 4 panels at once. */

#define VDB_NEAREST_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
enum { MR_AVX512 = VDB_TILE_MR_AVX512 };

/* Folds one panel (p) of one point's 32 dot products into its lane minima. */
static inline VDB_NEAREST_AVX512 void vdb_fold32_avx512(__m512 dot0, __m512 dot1, size_t p, size_t k,
                                                        const float *bias, float *lane_v, uint32_t *lane_i)
{
    const size_t base = p * VDB_PANEL_WIDTH;
    const size_t w = k - base < VDB_PANEL_WIDTH ? k - base : VDB_PANEL_WIDTH;
    const __mmask16 m0 = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1u);
    const __mmask16 m1 = w >= 32 ? (__mmask16)0xFFFF : w > 16 ? (__mmask16)((1u << (w - 16)) - 1u) : 0;
    const __m512i id0 = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32((int)base));
    const __m512i id1 = _mm512_add_epi32(id0, _mm512_set1_epi32(16));
    const __m512 two = _mm512_set1_ps(2.0f);
    __m512 v0 = _mm512_fnmadd_ps(dot0, two, _mm512_maskz_loadu_ps(m0, bias + base));
    __m512 v1 = _mm512_fnmadd_ps(dot1, two, _mm512_maskz_loadu_ps(m1, bias + base + 16));
    __mmask16 lt0 = _mm512_mask_cmp_ps_mask(m0, v0, _mm512_load_ps(lane_v), _CMP_LT_OQ);
    __mmask16 lt1 = _mm512_mask_cmp_ps_mask(m1, v1, _mm512_load_ps(lane_v + 16), _CMP_LT_OQ);
    _mm512_mask_store_ps(lane_v, lt0, v0);
    _mm512_mask_store_ps(lane_v + 16, lt1, v1);
    _mm512_mask_store_epi32(lane_i, lt0, id0);
    _mm512_mask_store_epi32(lane_i + 16, lt1, id1);
}

static VDB_NEAREST_AVX512 void vdb_tile_avx512(const float *x, size_t d, const float *packed,
                                                      const float *bias, size_t k, size_t g0, size_t g1,
                                                      vdb_lanes *L, size_t r0)
{
    for (size_t p = g0; p < g1; p++) {
        const float *P = packed + p * VDB_PANEL_WIDTH * d;
        __m512 acc[MR_AVX512 * 2];
        vdb_tile_dots_avx512(x, d, P, acc);
        for (size_t r = 0; r < MR_AVX512; r++)
            vdb_fold32_avx512(acc[2 * r], acc[2 * r + 1], p, k, bias, L->v[r0 + r], L->i[r0 + r]);
    }
}

static VDB_NEAREST_AVX512 void vdb_row_avx512(const float *x, size_t d, const float *packed,
                                                     const float *bias, size_t k, size_t g0, size_t g1,
                                                     float *lane_v, uint32_t *lane_i)
{
    for (size_t p = g0; p < g1; p += 4) {
        const size_t np = g1 - p < 4 ? g1 - p : 4; /* missing panels repeat the last one, folded once */
        const float *P[4];
        for (size_t j = 0; j < 4; j++) P[j] = packed + (p + (j < np ? j : np - 1)) * VDB_PANEL_WIDTH * d;
        __m512 acc[8];
        for (int a = 0; a < 8; a++) acc[a] = _mm512_setzero_ps();
        for (size_t t = 0; t < d; t++) {
            __m512 xv = _mm512_set1_ps(x[t]);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                acc[2 * j] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(P[j] + t * VDB_PANEL_WIDTH), acc[2 * j]);
                acc[2 * j + 1] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(P[j] + t * VDB_PANEL_WIDTH + 16), acc[2 * j + 1]);
            }
        }
        for (size_t j = 0; j < np; j++) vdb_fold32_avx512(acc[2 * j], acc[2 * j + 1], p + j, k, bias, lane_v, lane_i);
    }
}

static void vdb_nearest_avx512(const float *x, size_t n, size_t d, const float *packed, const float *bias, size_t k,
                               uint32_t *best, float *best_val)
{
    vdb_nearest_drive(MR_AVX512, vdb_tile_avx512, vdb_row_avx512, x, n, d, packed, bias, k, best, best_val);
}
#endif /* VDB_NEAREST_X86 */

/* ---- Dispatch: the widest variant the enabled CPU features allow (vdb_cpu). */

static vdb_nearest_fn vdb_nearest_variant(const char *isa, unsigned features)
{
    (void)features; /* only x86-64 has SIMD variants here */
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
