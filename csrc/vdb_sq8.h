/* vdb_sq8 — 8-bit scalar quantizer: per-dimension ranges, codes, SIMD scan kernels and rigorous
 * lower bounds on the float32 distances of vdb_distance.h.
 *
 * Quantizer: dimension j maps [lo_j, lo_j + 255 step_j] onto codes 0..255 (step_j = range / 255,
 * 0 for a constant dimension); x^_j = lo_j + c_j step_j. Cosine collections quantize x / |x|.
 * Each encoded vector also gets err = an upper bound on |x - x^| (computed in float64, rounded up;
 * at most half a step per dimension, sqrt(sum (step_j / 2)^2), while x is inside the trained
 * ranges, larger for a clamped vector), widened for IP by the float32 rounding of the exact kernel.
 * A vector the bounds cannot cover (norm^2 above 1e30; for cosine below 1e-30, e.g. zero) gets
 * err = +inf: it is always re-ranked.
 *
 * Search: vdb_sq8_query_prepare turns a query into a scan program; vdb_sq8_scan computes one
 * value s per code row (smaller = nearer); vdb_sq8_lower_bound(s, err) is <= the float32
 * distance vdb_distance_batch returns for that row, whatever the ISA on either side (it covers
 * the quantization error by Cauchy-Schwarz / the triangle inequality and every float32 rounding
 * of both kernels). vdb_sq8_cut(thr, err_max) is a scan value above which no row with err <=
 * err_max can have a lower bound <= thr, so most rows are dismissed with one compare.
 * prepare returns 0 when the query is outside the range the bounds cover (the caller then uses
 * the float32 kernels).
 *
 * Kernels: `_serial` twin plus AVX2+FMA and AVX-512 (NEON on arm64), chosen through vdb_cpu like
 * vdb_distance; every variant is covered by the same bounds. Pure functions: thread-safe.
 * Ownership: vdb_sq8 holds two caller-visible arrays (lo, step) it allocates; a query program
 * holds its own arrays and is freed with vdb_sq8_query_free.
 */
#ifndef VDB_SQ8_H
#define VDB_SQ8_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_distance.h"

typedef struct {
    size_t d;
    vdb_metric metric;
    float *lo;   /* d */
    float *step; /* d, >= 0 */
    double *inv_step; /* d: 1 / step (0 for a constant dimension), for encoding */
} vdb_sq8;

/* Allocates a quantizer whose ranges cover the n vectors x (n >= 1; cosine: their unit
 * directions; vectors the bounds cannot cover are left out of the ranges). */
int vdb_sq8_train(vdb_metric m, size_t d, const float *x, size_t n, vdb_sq8 **out);
/* Allocates a quantizer covering [lo_j, hi_j] per dimension (lo_j > hi_j: an empty range). */
int vdb_sq8_from_bounds(vdb_metric m, size_t d, const double *lo, const double *hi, vdb_sq8 **out);
/* The vector codes approximate (x, or x / |x| for cosine) into v (d doubles); 0 when the bounds
 * cannot cover x (it is then left out of ranges and always re-ranked). */
int vdb_sq8_direction(vdb_metric m, size_t d, const float *x, double *v);
/* Allocates a quantizer from stored ranges (validated: finite lo, finite step >= 0). */
int vdb_sq8_from_ranges(vdb_metric m, size_t d, const float *lo, const float *step, vdb_sq8 **out);
void vdb_sq8_free(vdb_sq8 *q);

/* Codes of n vectors (n * d bytes) and their error bounds (n floats). */
void vdb_sq8_encode(const vdb_sq8 *q, const float *x, size_t n, uint8_t *codes, float *err);

typedef struct {
    int kind;      /* 0: s = delta * sum wi_j c_j (ip, cosine); 1: s = c0 + sum s2_j (t_j - c_j)^2 (l2) */
    size_t d;
    int16_t *wi;   /* ip/cosine: -q_j step_j / delta rounded (an exact integer dot on every ISA) */
    double delta;
    float *w;      /* l2: t_j */
    float *s2;     /* l2: step_j^2 */
    float c0;      /* l2: contribution of the constant dimensions */
    double base, scale, eq, rel_scan, rel_exact, abs_margin; /* bound constants, see the .c */
} vdb_sq8_query;

/* 1: ready; 0: use the float32 kernels for this query; < 0: VDB_ENOMEM. */
int vdb_sq8_query_prepare(const vdb_sq8 *q, const float *query, vdb_sq8_query *out);
void vdb_sq8_query_free(vdb_sq8_query *p);

/* out[i] = scan value of code row i (rows of d bytes, contiguous). */
void vdb_sq8_scan(const vdb_sq8_query *p, const uint8_t *codes, size_t n, float *out);
/* Same for rows at codes + rows[i] * d (gathered; the caller prefetches). */
void vdb_sq8_scan_rows(const vdb_sq8_query *p, const uint8_t *codes, const int64_t *rows, size_t n, float *out);
double vdb_sq8_lower_bound(const vdb_sq8_query *p, float s, float err);
float vdb_sq8_cut(const vdb_sq8_query *p, float thr, float err_max);

/* Variant access for tests: isa as in vdb_distance.h; -1 when not available. */
int vdb_sq8_scan_isa(const char *isa, const vdb_sq8_query *p, const uint8_t *codes, size_t n, float *out);
/* Called by vdb_cpu when the enabled feature set changes. */
void vdb_sq8_select(unsigned enabled_features);

#endif
