/* vdb_panel_tile.h — the register tile both panel kernels (vdb_nearest, vdb_exact) are built on: the
 * dot products of MR rows with the columns of one packed panel (vdb_panel_pack), held in registers
 * over the whole dimension, one FMA per term in dimension order (so every variant returns the same
 * bits). AVX-512: 8 rows x 32 columns in 16 zmm; AVX2: 6 rows x 16 columns (half a panel) in 12 ymm.
 *
 * Contract: internal to the engine; static inline, so each kernel inlines the tile into its own
 * target-specific function (the callers' targets include these). x holds MR rows of d floats; P
 * points at the panel's first column to use; acc receives row r's dot products in acc[2r] (first
 * half of the columns) and acc[2r + 1]. Pure functions: safe from any thread.
 */
#ifndef VDB_PANEL_TILE_H
#define VDB_PANEL_TILE_H

#include <stddef.h>

#include "vdb_nearest.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { VDB_TILE_MR_AVX512 = 8, VDB_TILE_MR_AVX2 = 6 };

static inline __attribute__((target("avx512f,fma"))) void vdb_tile_dots_avx512(const float *x, size_t d,
                                                                               const float *P, __m512 *acc)
{
    for (int a = 0; a < 2 * VDB_TILE_MR_AVX512; a++) acc[a] = _mm512_setzero_ps();
    for (size_t t = 0; t < d; t++) {
        __m512 b0 = _mm512_loadu_ps(P + t * VDB_PANEL_WIDTH), b1 = _mm512_loadu_ps(P + t * VDB_PANEL_WIDTH + 16);
#pragma GCC unroll 8
        for (int r = 0; r < VDB_TILE_MR_AVX512; r++) {
            __m512 xv = _mm512_set1_ps(x[(size_t)r * d + t]);
            acc[2 * r] = _mm512_fmadd_ps(xv, b0, acc[2 * r]);
            acc[2 * r + 1] = _mm512_fmadd_ps(xv, b1, acc[2 * r + 1]);
        }
    }
}

static inline __attribute__((target("avx2,fma"))) void vdb_tile_dots_avx2(const float *x, size_t d, const float *P,
                                                                         __m256 *acc)
{
    for (int a = 0; a < 2 * VDB_TILE_MR_AVX2; a++) acc[a] = _mm256_setzero_ps();
    for (size_t t = 0; t < d; t++) {
        __m256 b0 = _mm256_loadu_ps(P + t * VDB_PANEL_WIDTH), b1 = _mm256_loadu_ps(P + t * VDB_PANEL_WIDTH + 8);
#pragma GCC unroll 6
        for (int r = 0; r < VDB_TILE_MR_AVX2; r++) {
            __m256 xv = _mm256_broadcast_ss(x + (size_t)r * d + t);
            acc[2 * r] = _mm256_fmadd_ps(xv, b0, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(xv, b1, acc[2 * r + 1]);
        }
    }
}
#endif

#endif
