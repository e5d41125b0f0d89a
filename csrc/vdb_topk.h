/* vdb_topk — bounded max-heap keeping the k smallest (distance, row) pairs.
 *
 * The caller owns the buffers (k floats, k int64). Ties are broken by smaller row, so results are
 * deterministic. Not thread-safe: one heap per thread. vdb_topk_push is inline: it is the inner
 * loop of every search.
 */
#ifndef VDB_TOPK_H
#define VDB_TOPK_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float *dist;
    int64_t *rows;
    size_t k;
    size_t size;
} vdb_topk;

void vdb_topk_init(vdb_topk *h, size_t k, float *dist_buf, int64_t *row_buf);
void vdb_topk_sift_down_(vdb_topk *h, size_t i);
void vdb_topk_sift_up_(vdb_topk *h, size_t i);

/* Worst distance kept, or +inf while the heap is not full: rows at or above it can be skipped. */
static inline float vdb_topk_threshold(const vdb_topk *h)
{
    return h->size < h->k ? __builtin_inff() : h->dist[0];
}

static inline void vdb_topk_push(vdb_topk *h, float dist, int64_t row)
{
    if (h->size < h->k) {
        h->dist[h->size] = dist;
        h->rows[h->size] = row;
        vdb_topk_sift_up_(h, h->size++);
    } else if (h->k > 0 && (dist < h->dist[0] || (dist == h->dist[0] && row < h->rows[0]))) {
        h->dist[0] = dist;
        h->rows[0] = row;
        vdb_topk_sift_down_(h, 0);
    }
}

/* Sorts the kept pairs ascending by (distance, row) in place; returns the count kept. Afterwards
 * the buffers are a sorted list, no longer a heap: push only after vdb_topk_init again. */
size_t vdb_topk_sort(vdb_topk *h);
/* The min(k, n) smallest pairs (dist[i], i) of an array, ascending by (distance, index), into
 * out_dist / out_rows (room for n each: they are also the scratch); returns their count. Exactly
 * what pushing every pair in index order into a k-heap and sorting gives, NaN included, faster for
 * small k: a selection of the k-th value, one pass, then a sort of the k (the heap sifted for most
 * of the early pushes). */
size_t vdb_topk_smallest(const float *dist, size_t n, size_t k, float *out_dist, int64_t *out_rows);

#endif
