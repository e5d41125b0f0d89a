/* vdb_topk — see vdb_topk.h. The heap is ordered by (distance, row), largest at the root, so the
 * root is the entry the next better candidate replaces. */
#include <string.h>

#include "vdb_topk.h"

/* (da, ra) ranks after (db, rb): larger distance, or equal distance and larger row. */
static inline int vdb_topk_after(float da, int64_t ra, float db, int64_t rb)
{
    return da > db || (da == db && ra > rb);
}

void vdb_topk_init(vdb_topk *h, size_t k, float *dist_buf, int64_t *row_buf)
{
    h->dist = dist_buf;
    h->rows = row_buf;
    h->k = k;
    h->size = 0;
}

void vdb_topk_sift_up_(vdb_topk *h, size_t i)
{
    float d = h->dist[i];
    int64_t r = h->rows[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!vdb_topk_after(d, r, h->dist[p], h->rows[p]))
            break;
        h->dist[i] = h->dist[p];
        h->rows[i] = h->rows[p];
        i = p;
    }
    h->dist[i] = d;
    h->rows[i] = r;
}

/* Sift within the first n entries (n may be less than h->size during the sort). */
static void vdb_topk_sift_down_n(vdb_topk *h, size_t i, size_t n)
{
    float d = h->dist[i];
    int64_t r = h->rows[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && vdb_topk_after(h->dist[c + 1], h->rows[c + 1], h->dist[c], h->rows[c]))
            c++;
        if (!vdb_topk_after(h->dist[c], h->rows[c], d, r))
            break;
        h->dist[i] = h->dist[c];
        h->rows[i] = h->rows[c];
        i = c;
    }
    h->dist[i] = d;
    h->rows[i] = r;
}

void vdb_topk_sift_down_(vdb_topk *h, size_t i) { vdb_topk_sift_down_n(h, i, h->size); }

size_t vdb_topk_sort(vdb_topk *h)
{
    /* Heap sort: move the root (largest) to the end, shrink, repeat -> ascending order. */
    for (size_t n = h->size; n > 1; n--) {
        float d = h->dist[0];
        int64_t r = h->rows[0];
        h->dist[0] = h->dist[n - 1];
        h->rows[0] = h->rows[n - 1];
        h->dist[n - 1] = d;
        h->rows[n - 1] = r;
        vdb_topk_sift_down_n(h, 0, n - 1);
    }
    return h->size;
}

/* Moves the entries of v[lo, hi] that pass (t < p, or t <= p when le) to the front, without
 * branches on the data (an unconditional swap, the front advancing by the comparison: the
 * comparisons of a selection are coin tosses a branch predictor loses); returns the front's end. */
static size_t vdb_topk_partition(float *v, size_t lo, size_t hi, float p, int le)
{
    size_t front = lo;
    for (size_t i = lo; i <= hi; i++) {
        const float t = v[i];
        v[i] = v[front];
        v[front] = t;
        front += le ? t <= p : t < p;
    }
    return front;
}

/* The value of rank r (0-based) among v[lo, hi] (no NaN), reordering them: quickselect with a
 * three-way split (below, equal to, above the pivot: ties never make it quadratic). */
static float vdb_topk_rank_value(float *v, size_t lo, size_t hi, size_t r)
{
    while (lo < hi) {
        const float p = v[lo + (hi - lo) / 2];
        const size_t lt = vdb_topk_partition(v, lo, hi, p, 0);
        const size_t gt = vdb_topk_partition(v, lt, hi, p, 1); /* [lt, gt) == p, never empty */
        if (r < lt) hi = lt - 1;
        else if (r >= gt) lo = gt;
        else return p;
    }
    return v[lo];
}

#define VDB_TOPK_SELECT_MAX 64 /* above this k the final insertion sort loses to the heap */

size_t vdb_topk_smallest(const float *dist, size_t n, size_t k, float *out_dist, int64_t *out_rows)
{
    if (k > n) k = n;
    int nan = 0;
    for (size_t i = 0; i < n; i++) nan |= dist[i] != dist[i];
    if (k == 0 || nan || k > VDB_TOPK_SELECT_MAX) {
        vdb_topk h;
        vdb_topk_init(&h, k, out_dist, out_rows);
        for (size_t i = 0; i < n; i++) vdb_topk_push(&h, dist[i], (int64_t)i);
        return vdb_topk_sort(&h);
    }
    memcpy(out_dist, dist, n * sizeof *dist);
    const float v = vdb_topk_rank_value(out_dist, 0, n - 1, k - 1);
    size_t below = 0, m = 0;
    for (size_t i = 0; i < n; i++) below += dist[i] < v;
    size_t ties = k - below; /* the pairs at v with the smallest indices complete the k */
    for (size_t i = 0; i < n && m < k; i++) {
        const int take = dist[i] < v || (dist[i] == v && ties > 0);
        ties -= dist[i] == v && ties > 0;
        if (take) {
            out_dist[m] = dist[i];
            out_rows[m++] = (int64_t)i;
        }
    }
    for (size_t i = 1; i < m; i++) { /* by (distance, index): collected in index order, so stable */
        float d = out_dist[i];
        int64_t r = out_rows[i];
        size_t j = i;
        for (; j > 0 && out_dist[j - 1] > d; j--) {
            out_dist[j] = out_dist[j - 1];
            out_rows[j] = out_rows[j - 1];
        }
        out_dist[j] = d;
        out_rows[j] = r;
    }
    return m;
}
