/* vdb_topk — see vdb_topk.h. The heap is ordered by (distance, row), largest at the root, so the
 * root is the entry the next better candidate replaces. */
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
