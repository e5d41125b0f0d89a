/* vdb_flat — exact top-k search over vectors held in one or more contiguous row ranges.
 *
 * Rows are numbered globally: range r holds rows [first_row, first_row + n). An optional bitmap
 * (bit i of allow[i / 64] = row i allowed; covers every row of every range) restricts the search;
 * NULL allows all rows. Outputs are caller-allocated, nq * k each, sorted ascending by
 * (distance, row); slots past the number of allowed rows hold row -1 and distance +inf.
 * A single query runs on the calling thread; a batch is split over the worker pool, and each of
 * its queries gets the answer it gets alone, bit for bit. Thread-safe for concurrent calls over
 * read-only data.
 */
#ifndef VDB_FLAT_H
#define VDB_FLAT_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_distance.h"

typedef struct {
    const float *data;
    int64_t first_row;
    size_t n;
} vdb_vec_range;

int vdb_flat_search(vdb_metric m, size_t d, const vdb_vec_range *ranges, size_t n_ranges,
                    const uint64_t *allow, const float *queries, size_t nq, size_t k, float *out_dist,
                    int64_t *out_rows);

#endif
