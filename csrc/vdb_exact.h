/* vdb_exact — exact top-k of a batch of queries through a register-blocked (GEMM-style) kernel.
 *
 * The queries are packed once into panels of VDB_PANEL_WIDTH (vdb_nearest's layout); the rows are
 * read in place. A tile of a few rows x 32 queries of dot products stays in registers over the
 * whole dimension, so each loaded row value serves 32 queries. From the dot products a lower
 * bound of each distance is formed (the dot product minus a bound of its float32 rounding error,
 * with the norms); only a row whose bound is at or below a query's current k-th distance is a
 * candidate, and a candidate's distance is then recomputed by vdb_distance_batch, the kernel of
 * single-query search. So the results (rows and distances, bit for bit) are those of searching
 * each query alone: the bound only decides which rows are worth recomputing, never the answer.
 *
 * Error bound used (u = 2^-24, c = 2 (d + 8) u): a dot product of length d accumulated in float32
 * is within d u |q| |x| of the exact one (with FMAs, in any order); so is each norm. Then for
 *   l2:     |approx - exact| <= c (|q| + |x|)^2
 *   ip:     |approx - exact| <= c |q| |x| + 4 u (1 + |thr|)
 *   cosine: |approx - exact| <= 2 c
 * and c doubles the first-order bound, which covers the few roundings of the bound itself.
 *
 * Ownership: vdb_exact_prepare allocates the panels and per-query state inside *out (free with
 * vdb_exact_free) and borrows queries until then. A prepared set is used by one thread at a time
 * (scan updates its thresholds); prepare one per task.
 */
#ifndef VDB_EXACT_H
#define VDB_EXACT_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_distance.h"
#include "vdb_topk.h"

typedef struct {
    vdb_metric m;
    size_t d, nq, panels;
    const float *queries; /* borrowed: nq x d */
    float *packed;        /* panels x 32 x d */
    float *qsq, *qn, *iq; /* per padded query: |q|^2, |q|, 1/|q| (0 for a zero query) */
    float *lim;           /* per padded query: the bound a row must reach (see the .c) */
    float c;              /* the error constant above */
} vdb_exact_queries;

int vdb_exact_prepare(vdb_metric m, const float *queries, size_t nq, size_t d, vdb_exact_queries *out);
void vdb_exact_free(vdb_exact_queries *q);

/* Offers rows [0, n) of rows (row-major, n x d; row numbers row0 + i) to every query: heaps[j]
 * (query j's heap, possibly partly filled) receives, with its exact distance, every row that
 * can still enter it. Afterwards heaps[j] holds what pushing every row would have left.
 * allow: NULL, or a bitmap over row numbers (bit r of allow[r / 64] = row r may be offered; it
 * covers rows row0 .. row0 + n - 1): rows whose bit is 0 are skipped. */
void vdb_exact_scan(vdb_exact_queries *q, const float *rows, size_t n, int64_t row0, const uint64_t *allow,
                    vdb_topk *heaps);

/* Variant access for tests: isa "serial", "avx2" or "avx512"; -1 when not available here. */
int vdb_exact_scan_isa(const char *isa, vdb_exact_queries *q, const float *rows, size_t n, int64_t row0,
                       const uint64_t *allow, vdb_topk *heaps);

#endif
