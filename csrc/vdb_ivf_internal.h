/* vdb_ivf_internal.h — the IVF index's struct and the helpers its files share (vdb_ivf.c: lists,
 * row map, training; vdb_ivf_search.c: the probed search; vdb_ivf_file.c: ivf.bin). Not part of the
 * engine's API: callers use vdb_ivf.h, whose contract (ownership, concurrency) covers these files.
 */
#ifndef VDB_IVF_INTERNAL_H
#define VDB_IVF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_ivf.h"
#include "vdb_kmeans.h"

#define IVF_ABSENT UINT64_MAX
#define IVF_MAX_LISTS ((size_t)1 << 31)
#define IVF_MAX_LIST_LEN ((size_t)UINT32_MAX) /* positions are packed in 32 bits */

typedef struct {
    float *vecs;   /* cap * d floats; the first n are in use */
    int64_t *rows; /* cap row numbers */
    size_t n, cap;
} ivf_list;

struct vdb_ivf {
    size_t d;
    vdb_metric metric;
    size_t n_lists;
    int trained;
    float *centroids; /* n_lists * d */
    vdb_kmeans_prepared assigner; /* the centroids packed for adds; made on first use (packed == NULL:
                                   * not yet), dropped whenever the centroids change */
    ivf_list *lists;  /* n_lists */
    uint64_t *where;  /* row -> list << 32 | position, IVF_ABSENT when not held */
    size_t where_len;
    int64_t n_vectors;
    uint64_t n_train_points, added_since_train, seed;
    uint64_t vectors_at_train; /* vectors held when last trained (or marked, see header) */
};

static inline int ivf_mul(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b) return -1;
    *out = a * b;
    return 0;
}

static inline uint64_t ivf_pack(size_t list, size_t pos) { return (uint64_t)list << 32 | (uint64_t)pos; }
static inline size_t ivf_list_of(uint64_t w) { return (size_t)(w >> 32); }
static inline size_t ivf_pos_of(uint64_t w) { return (size_t)(w & 0xFFFFFFFFu); }

static inline int ivf_metric_ok(vdb_metric m)
{
    return m == VDB_METRIC_L2 || m == VDB_METRIC_IP || m == VDB_METRIC_COSINE;
}

/* Grows the row map to hold rows below need_len (new entries IVF_ABSENT): 0, or -1 out of memory. */
int vdb_ivf_where_reserve(vdb_ivf *ivf, size_t need_len);

#endif
