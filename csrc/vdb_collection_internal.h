/* vdb_collection_internal.h — the collection's struct and the helpers its files share
 * (vdb_collection.c: open, write, query, checkpoint; vdb_idmap.c: ids -> rows; vdb_result.c: results;
 * vdb_collection_ivf.c: the IVF lifecycle and maintenance after writes). Not part of the engine's API.
 *
 * Contract: every function here takes a collection whose lock the caller holds (write lock for
 * anything that changes it, read lock at least otherwise); none takes the lock itself. Functions
 * that can fail return VDB_OK or a negative code with the message set (vdb_error.h).
 */
#ifndef VDB_COLLECTION_INTERNAL_H
#define VDB_COLLECTION_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "vdb_bytes.h"
#include "vdb_codes.h"
#include "vdb_pq4.h"

#define VDB_PQ4_SEED 0x9e4ULL
#include "vdb_collection.h"
#include "vdb_error.h"
#include "vdb_ivf.h"
#include "vdb_meta.h"
#include "vdb_store.h"

struct vdb_collection {
    char *dir; /* NULL: in memory */
    vdb_collection_config cfg;
    int64_t dim;
    uint64_t generation;
    int wal_fd;
    char wal_path[4096]; /* named in errors */
    uint64_t wal_end;
    uint64_t snapshot_bytes;
    int failed; /* an fsync or apply failed: writes refused until reopened */
    pthread_rwlock_t lock;

    /* Rows [0, n_base) live in the mapped snapshot (its chunks verified on first use: verify
     * before reading them, vdb_coll_verify_rows), [n_base, n_rows) in tail. */
    vdb_vecmap *vmap;
    float *base;
    size_t n_base;
    float *tail;
    size_t tail_cap; /* rows */

    size_t n_rows, n_live, cap_rows;
    uint64_t *live; /* bitmap over rows */
    uint64_t *id_off;
    uint32_t *id_len;
    vdb_buf ids; /* id bytes */

    int64_t *slots; /* open-addressing id -> row table: row | 32 hash bits << 32, -1 empty (vdb_idmap.c) */
    size_t n_slots;

    vdb_meta *meta;
    /* Opened from ids.bin, the metadata and documents are read from records.bin only when first
     * needed (vdb_coll_meta_load): until then meta_pending is 1 and meta is empty. meta_mu orders
     * that load between readers holding the shared lock. */
    atomic_int meta_pending;
    pthread_mutex_t meta_mu;


    vdb_ivf *ivf; /* once trained, the owner of every live row's vector (base/tail are empty) */
    int batch_depth;
    int batch_logged_depth; /* levels begun with VDB_BATCH_BEGIN_LOGGED: while > 0 writes are logged */
    /* Writes applied in batch mode that are not on disk yet (nothing of them is until the batch
     * ends). While batch_buffering, batch_log holds their log records, each u32 len + payload: the
     * payload of one WAL_GROUP record, appended at the batch's end when it stayed small (see
     * vdb_coll_batch_commit); once it outgrows that it is dropped and the end checkpoints. */
    int batch_unlogged;
    int batch_buffering;
    vdb_buf batch_log;
    vdb_codes *codes; /* quantized collections: a code per row, searched first (vdb_codes.h) */
};

static inline const float *row_vector(const vdb_collection *c, size_t row)
{
    if (c->ivf) return vdb_ivf_vector(c->ivf, (int64_t)row);
    return row < c->n_base ? c->base + row * (size_t)c->dim : c->tail + (row - c->n_base) * (size_t)c->dim;
}

static inline int is_live(const vdb_collection *c, size_t row) { return (c->live[row >> 6] >> (row & 63)) & 1; }

/* ---- vdb_collection.c ---- */
/* Verifies the mapped snapshot's data behind rows [lo, hi) (a no-op once verified, and for rows
 * in memory): VDB_ECORRUPT naming vectors.bin on damage. Every reader of base rows calls it first. */
static inline int vdb_coll_verify_rows(const vdb_collection *c, size_t lo, size_t hi)
{
    for (size_t r = lo; c->ivf && r < hi; r++) {
        int rc = vdb_ivf_verify_row(c->ivf, (int64_t)r);
        if (rc) return rc;
    }
    if (!c->vmap || lo >= c->n_base) return VDB_OK;
    size_t row_bytes = (size_t)c->dim * sizeof(float);
    return vdb_vecmap_verify(c->vmap, (uint64_t)lo * row_bytes, (uint64_t)(hi < c->n_base ? hi : c->n_base) * row_bytes);
}
static inline int vdb_coll_verify_all(const vdb_collection *c)
{
    int rc = c->ivf ? vdb_ivf_verify(c->ivf) : VDB_OK;
    return rc ? rc : vdb_vecmap_verify_all(c->vmap);
}
int vdb_coll_refuse_writes(const vdb_collection *c);
/* Reads the snapshot's metadata and documents into c->meta if open left them on disk (a no-op
 * after the first call): call before reading c->meta or changing it. Safe under the shared lock. */
int vdb_coll_meta_load(const vdb_collection *c);
/* Drops dead rows: rows keep their order; vectors move to one heap array. */
int vdb_coll_compact(vdb_collection *c);
int vdb_coll_checkpoint_locked(vdb_collection *c);
int vdb_coll_maybe_checkpoint(vdb_collection *c);
/* Makes the writes of a batch durable: one WAL_GROUP append when its buffer stayed small, else a
 * checkpoint. Called at the outermost end of a batch and at close. */
int vdb_coll_batch_commit(vdb_collection *c);
/* Quantized collections: re-derives the codes' ranges once the collection has doubled since. */
int vdb_coll_codes_maybe_retrain(vdb_collection *c);

/* ---- vdb_idmap.c: the open-addressing id -> row table (c->slots, at most half full) ---- */
uint64_t vdb_idmap_hash(const char *p, size_t n);
/* The live row holding id (h = vdb_idmap_hash of it), or -1. */
int64_t vdb_idmap_lookup(const vdb_collection *c, const char *id, size_t len, uint64_t h);
void vdb_idmap_insert(vdb_collection *c, int64_t row, uint64_t h);
void vdb_idmap_remove(vdb_collection *c, int64_t row);
/* An empty id table for want_rows ids (at most half full); the caller fills it (vdb_idmap_install). */
int vdb_idmap_alloc(size_t want_rows, int64_t **slots, size_t *n_slots);
/* Replaces the id table with slots (from vdb_idmap_alloc) and inserts every live row: cannot fail. */
void vdb_idmap_install(vdb_collection *c, int64_t *slots, size_t n_slots);
int vdb_idmap_rebuild(vdb_collection *c, size_t want_rows);
/* ids.bin (a checkpoint's copy of the ids and of this table, so open reads them instead of parsing
 * records.bin and rehashing): written from a compacted collection (every row live). */
int vdb_idmap_write(const vdb_collection *c, const char *path);
/* Fills an empty collection's ids, id table and live rows (all live) from path, after checking its
 * header, checksum and structure: VDB_ENOTFOUND when there is no such file (written before ids.bin
 * existed), VDB_ECORRUPT naming it on damage or when it holds other than n_rows_expected ids. */
int vdb_idmap_read(vdb_collection *c, const char *path, uint64_t n_rows_expected);

/* ---- vdb_result.c ---- */
/* Copies rows[0..n) (all live) into a new result. dists may be NULL. */
int vdb_result_build(const vdb_collection *c, const int64_t *rows, size_t n, const float *dists, unsigned include,
                     vdb_result **out);

/* ---- vdb_collection_ivf.c ---- */
/* Forgets the calling thread's warning: each write, batch end and rebuild starts with it. */
void vdb_coll_clear_warning(void);
/* The n_probe a query uses when it gives none. */
int64_t vdb_coll_n_probe(const vdb_collection *c);
/* Maintenance after a durable write: training and checkpoints (failures become the warning). */
void vdb_coll_after_write(vdb_collection *c);

#endif
