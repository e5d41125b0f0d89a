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
#include "vdb_pq4.h"
#include "vdb_store.h"

#define IVF_ABSENT UINT64_MAX
#define IVF_MAX_LISTS ((size_t)1 << 31)
#define IVF_MAX_LIST_LEN ((size_t)UINT32_MAX) /* positions are packed in 32 bits */

typedef struct {
    float *vecs;   /* cap * d floats; the first n are in use. mapped: inside ivf->vmap (cap == n, not
                    * ours to free or grow; its chunks verified on first use, ivf_verify_vecs) */
    int mapped;
    int64_t *rows; /* cap row numbers */
    size_t n, cap;
    /* 4-bit PQ codes of the residuals (only with vdb_ivf_set_pq4), sized for at least cap vectors:
     * packed blocks of 32 (vdb_pq4 layout), |residual - decoded| per vector, and a per-vector term
     * (L2: |x|^2 - |centroid|^2; unused otherwise). */
    uint8_t *codes;
    float *qerr, *qaux;
    int codes_mapped; /* codes, qerr and qaux point into ivf->pq_map (read-only, checked on first use,
                       * ivf_verify_codes): ivf_list_own copies them out before the list changes */
    float qerr_max; /* >= every qerr of the list (not lowered by removes): a list-wide pruning bound */
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
    vdb_pq4 *pq;      /* NULL: lists are scanned as float32 (IVF-Flat) */
    uint64_t pq_seed;
    float *pq_tmp;    /* d floats: residual scratch for appends (they hold the index exclusively) */
    uint8_t *pq_code; /* pq->m */
    vdb_vecmap *vmap; /* the snapshot's list-ordered vectors (ivfvec.bin) that mapped lists point into */
    const char *map_data; /* its first float */
    float *pq_eps;    /* n_lists: the bound eps_hi a search probing n lists uses (vdb_ivf_pq4.c), NULL: pq->eps_hi */
    const uint8_t *pq_map; /* the mapped ivfpq4.bin that lists' codes may point into (NULL: none) */
    size_t pq_map_len;
    vdb_vecmap *pq_chk;    /* its page checksums (ivfpq4.crc) */
};

/* Verifies the mapped bytes of count vectors of L from pos (a no-op for lists in memory, and for
 * chunks verified before): VDB_ECORRUPT naming the file on damage. Before every read of them. */
static inline int ivf_verify_vecs(const vdb_ivf *ivf, const ivf_list *L, size_t pos, size_t count)
{
    if (!L->mapped || count == 0) return 0;
    uint64_t lo = (uint64_t)((const char *)L->vecs - ivf->map_data) + (uint64_t)pos * ivf->d * sizeof(float);
    return vdb_vecmap_verify(ivf->vmap, lo, lo + (uint64_t)count * ivf->d * sizeof(float));
}

/* Verifies the mapped pages of L's codes, errors and terms (a no-op for codes in memory, and for
 * pages verified before): VDB_ECORRUPT naming ivfpq4.bin on damage. Before every read of them. */
static inline int ivf_verify_codes(const vdb_ivf *ivf, const ivf_list *L)
{
    if (!L->codes_mapped) return 0;
    uint64_t lo = (uint64_t)(L->codes - ivf->pq_map);
    uint64_t hi = (uint64_t)((const uint8_t *)(L->qaux + L->n) - ivf->pq_map);
    return vdb_vecmap_verify(ivf->pq_chk, lo, hi);
}

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

/* pq4 codes (vdb_ivf_pq4.c). reserve sizes a list's code arrays for cap vectors (0, or -1 out of
 * memory, arrays then merely unchanged or larger); encode_at encodes the vector at (l, pos); move
 * copies a vector's code within a list; drop frees every code (the index scans float32 again). */
int vdb_ivf_pq_reserve(ivf_list *L, size_t cap, size_t block_bytes);
void vdb_ivf_pq_encode_at(vdb_ivf *ivf, size_t l, size_t pos);
void vdb_ivf_pq_move(vdb_ivf *ivf, ivf_list *L, size_t from, size_t to);
void vdb_ivf_pq_drop(vdb_ivf *ivf);
/* Frees a list's codes (unless mapped) and forgets them; own copies mapped codes into memory
 * (verified first), sized for the list's cap: 0, or -1 (error set) with the list unchanged. */
void vdb_ivf_pq_free_list(ivf_list *L);
int vdb_ivf_pq_own(vdb_ivf *ivf, ivf_list *L);
/* Unmaps ivfpq4.bin (no list may point into it any more). */
void vdb_ivf_pq_unmap(vdb_ivf *ivf);

#endif
