/* vdb_nearest — nearest centroid of many points: the k-means assignment step and the IVF add path.
 *
 * A register-blocked GEMM with the argmin fused in: the k centroids are packed once into panels of
 * VDB_PANEL_WIDTH (for each dimension, the panel's 32 values side by side), so each point value,
 * broadcast into a register, meets 32 centroids per pair of FMAs, and a tile of points x 32
 * centroids stays in registers for the whole dot product. No distance matrix is written.
 *
 * What is ranked: for point x and centroid c_j, v_j = bias[j] - 2 x.c_j, the smallest wins, ties to
 * the lowest j. With bias[j] = |c_j|^2 this is the squared L2 order (|x|^2 is the same for every
 * j: add it to v for the distance); with bias = 0 it is the largest dot product.
 *
 * Arithmetic: each dot product is accumulated in dimension order with one fused multiply-add per
 * term, so AVX2 and AVX-512 return bit-identical results, as does the serial twin where fmaf is
 * an instruction (arm64); on x86-64 the serial twin rounds the multiply and the add separately.
 * Ownership: the caller allocates the packed panels (vdb_panel_floats), best and best_val.
 * Pure functions of their inputs: thread-safe.
 */
#ifndef VDB_NEAREST_H
#define VDB_NEAREST_H

#include <stddef.h>
#include <stdint.h>

enum { VDB_PANEL_WIDTH = 32 };

/* Floats needed to pack k centroids of dimension d: ceil(k / 32) * 32 * d (0 when it overflows). */
size_t vdb_panel_floats(size_t k, size_t d);

/* Packs the k x d row-major centroids into panels (padding columns are zeros). */
void vdb_panel_pack(const float *centroids, size_t k, size_t d, float *packed);

/* |v|^2 summed in double in dimension order, rounded once: the norms the panel kernels' callers
 * (k-means biases, the exact batch's bounds) start from. */
static inline float vdb_sumsq(const float *v, size_t d)
{
    double s = 0;
    for (size_t t = 0; t < d; t++) s += (double)v[t] * v[t];
    return (float)s;
}

/* For each of the n points (row-major, n x d): best[i] = argmin_j bias[j] - 2 x_i.c_j and
 * best_val[i] = that value (best_val may be NULL). k >= 1; bias has k entries. */
void vdb_nearest_packed(const float *x, size_t n, size_t d, const float *packed, const float *bias,
                        size_t k, uint32_t *best, float *best_val);

/* Variant access for tests: isa is "serial", "avx2" or "avx512". Returns -1 when that variant is
 * not compiled in or not supported by this CPU, else 0. */
int vdb_nearest_packed_isa(const char *isa, const float *x, size_t n, size_t d, const float *packed,
                           const float *bias, size_t k, uint32_t *best, float *best_val);

#endif
