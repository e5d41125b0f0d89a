/* vdb_collection — one collection: open and close, write planning and apply, checkpoint and
 * compaction, get/count/query and stats. The id map, log records, results and the IVF lifecycle live
 * in vdb_idmap.c, vdb_logrec.c, vdb_result.c and vdb_collection_ivf.c. See vdb_collection.h. */
#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdb_bytes.h"
#include "vdb_codes.h"
#include "vdb_collection_internal.h"
#include "vdb_error.h"
#include "vdb_filter.h"
#include "vdb_flat.h"
#include "vdb_ivf.h"
#include "vdb_logrec.h"
#include "vdb_meta.h"
#include "vdb_store.h"
#include "vdb_topk.h"

#define WAL_WRITE 1 /* log record type: one vdb_collection_write batch */
/* Log record type: a batch's writes, applied whole or not at all (the record's one checksum covers
 * them; a torn group is a torn last record). Payload: per write u32 len + a WAL_WRITE payload. */
#define WAL_GROUP 2
/* A batch is logged as one group when its records stay within a quarter of what a checkpoint would
 * write (the snapshot and the log): such a checkpoint would cost >= 4x the append. A batch that
 * grows past that is written by a checkpoint, once. The floor keeps small collections on the cheap
 * path (one fdatasync, not a new generation); the cap bounds the memory the buffer holds. */
#define BATCH_LOG_FLOOR (1u << 20)
#define BATCH_LOG_CAP ((size_t)1 << 30)
/* Checkpoint when the log outgrows this and half the snapshot, so replay stays short. */
#define CHECKPOINT_WAL_BYTES (64u << 20)
#define CLOSE_CHECKPOINT_WAL_BYTES (4u << 20)

/* ---- small helpers ---- */

static inline float *row_vector_mut(vdb_collection *c, size_t row)
{
    return (float *)row_vector(c, row);
}

/* allowed: a bitmap from allowed_rows (already ANDed with the live rows), or NULL = every live row. */
static inline int row_allowed(const vdb_collection *c, const uint64_t *allowed, size_t row)
{
    return allowed ? (int)((allowed[row >> 6] >> (row & 63)) & 1) : is_live(c, row);
}

int vdb_coll_refuse_writes(const vdb_collection *c)
{
    return vdb_set_error(VDB_EREADONLY, "collection at '%s' refuses writes after an I/O error; reopen it",
                         c->dir ? c->dir : "(memory)");
}

/* Vector storage: 64-byte aligned (the SIMD scan runs ~20% faster), and 2 MiB aligned with
 * transparent huge pages requested when large (a 100k x 128 scan halves: fewer TLB misses). */
static float *vectors_alloc(size_t rows, size_t dim)
{
    if (dim && rows > SIZE_MAX / sizeof(float) / dim) return NULL;
    size_t bytes = rows * dim * sizeof(float);
    size_t align = bytes >= (4u << 20) ? (2u << 20) : 64;
    void *p = NULL;
    if (posix_memalign(&p, align, bytes ? bytes : 64) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (align > 64) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

static int grow_array(void **p, size_t elem, size_t old_cap, size_t new_cap)
{
    if (new_cap > SIZE_MAX / elem) return -1;
    void *q = realloc(*p, new_cap * elem);
    if (!q) return -1;
    memset((uint8_t *)q + old_cap * elem, 0, (new_cap - old_cap) * elem);
    *p = q;
    return 0;
}

/* Makes room for extra more rows, id bytes and metadata bytes, so applying a write cannot fail. */
static int reserve(vdb_collection *c, size_t extra, size_t id_bytes, size_t meta_bytes, int64_t vec_dim)
{
    int rc;
    size_t need = c->n_rows + extra;
    if (need > c->cap_rows) {
        size_t cap = c->cap_rows ? c->cap_rows : 1024;
        if (need < c->n_rows || need > SIZE_MAX / 2 / sizeof(uint64_t))
            return vdb_set_error(VDB_ENOMEM, "cannot grow the collection to %zu more rows", extra);
        while (cap < need) cap *= 2;
        size_t old_words = (c->cap_rows + 63) / 64, new_words = (cap + 63) / 64;
        if (grow_array((void **)&c->id_off, sizeof *c->id_off, c->cap_rows, cap) ||
            grow_array((void **)&c->id_len, sizeof *c->id_len, c->cap_rows, cap) ||
            grow_array((void **)&c->live, sizeof *c->live, old_words, new_words))
            return vdb_set_error(VDB_ENOMEM, "out of memory growing the collection to %zu rows", need);
        c->cap_rows = cap;
    }
    if (vec_dim > 0) {
        size_t tail_need = need - c->n_base;
        if (tail_need > c->tail_cap) {
            size_t cap = c->tail_cap ? c->tail_cap : 256;
            while (cap < tail_need) cap *= 2;
            float *t = vectors_alloc(cap, (size_t)vec_dim);
            if (!t) return vdb_set_error(VDB_ENOMEM, "out of memory growing vector storage to %zu rows", tail_need);
            size_t used = c->n_rows - c->n_base;
            if (used) memcpy(t, c->tail, used * (size_t)vec_dim * sizeof(float));
            free(c->tail);
            c->tail = t;
            c->tail_cap = cap;
        }
    }
    if (vdb_buf_reserve(&c->ids, id_bytes)) return vdb_set_error(VDB_ENOMEM, "out of memory storing ids");
    if ((rc = vdb_meta_reserve(c->meta, extra, meta_bytes))) return rc;
    if ((c->n_live + extra) * 2 > c->n_slots && (rc = vdb_idmap_rebuild(c, c->n_live + extra))) return rc;
    return VDB_OK;
}

/* ---- write planning and applying ---- */

enum { ACT_SKIP = 0, ACT_APPEND, ACT_UPDATE, ACT_DELETE };

typedef struct {
    uint8_t *action;
    int64_t *row;
    uint64_t *hash;
    uint8_t **merged; /* per record: malloc'd merged metadata (or NULL) */
    size_t *merged_len;
    uint8_t *has_merged;
    int64_t *ivf_rows; /* IVF collections: rows whose vector goes into the index, and the vectors */
    float *ivf_vecs;
    size_t n_ivf;
} write_plan;

static void plan_free(write_plan *p, size_t n)
{
    if (p->merged)
        for (size_t i = 0; i < n; i++) free(p->merged[i]);
    free(p->action);
    free(p->row);
    free(p->hash);
    free(p->merged);
    free(p->merged_len);
    free(p->has_merged);
    free(p->ivf_rows);
    free(p->ivf_vecs);
    memset(p, 0, sizeof *p);
}

static const char *op_name(int op)
{
    return op == VDB_OP_ADD ? "add" : op == VDB_OP_UPSERT ? "upsert" : op == VDB_OP_UPDATE ? "update" : "delete";
}

/* Validates b against the current state and decides each record's action; reserves memory. Changes
 * nothing visible. */
static int plan_write(vdb_collection *c, int op, const vdb_batch *b, write_plan *p)
{
    int rc = VDB_OK;
    size_t n = b->n, id_bytes = 0, meta_bytes = 0, appends = 0;
    memset(p, 0, sizeof *p);
    if (op < VDB_OP_ADD || op > VDB_OP_DELETE) return vdb_set_error(VDB_EINVAL, "unknown write operation %d", op);
    if (n == 0) return VDB_OK;
    if ((rc = vdb_coll_meta_load(c))) return rc;
    /* The log and snapshot readers' limits (see vdb_logrec_decode, load_records): refused here, before
     * anything is written, so no record is ever logged that reopening would call damage. */
    if (n >= VDB_NONE32) return vdb_set_error(VDB_EINVAL, "a write of %zu records is too large (at most %u)", n, VDB_NONE32 - 1);
    if (b->vectors && op != VDB_OP_DELETE) {
        if (b->dim <= 0) return vdb_set_error(VDB_EINVAL, "vectors need a positive dimension");
        if (b->dim > VDB_MAX_DIM)
            return vdb_set_error(VDB_EDIM, "embedding dimension %lld is above the maximum of %u",
                                 (long long)b->dim, VDB_MAX_DIM);
        if (c->dim > 0 && b->dim != c->dim)
            return vdb_set_error(VDB_EDIM, "Collection expecting embedding with dimension of %lld, got %lld",
                                 (long long)c->dim, (long long)b->dim);
    }
    if (op == VDB_OP_ADD && !b->vectors) return vdb_set_error(VDB_EINVAL, "add needs an embedding for every record");
    /* Update and upsert may rewrite mapped rows in place: verify them while they are as written. */
    if (!c->ivf && b->vectors && op != VDB_OP_ADD && op != VDB_OP_DELETE && (rc = vdb_coll_verify_all(c))) return rc;
    /* The index copies a mapped list to memory before changing it: never copy damage, and find it
     * before the write is logged (once per snapshot; then a flag test). */
    if (c->ivf && (b->vectors || op == VDB_OP_DELETE) && (rc = vdb_ivf_verify(c->ivf))) return rc;
    p->action = calloc(n, 1);
    p->row = calloc(n, sizeof *p->row);
    p->hash = calloc(n, sizeof *p->hash);
    p->merged = calloc(n, sizeof *p->merged);
    p->merged_len = calloc(n, sizeof *p->merged_len);
    p->has_merged = calloc(n, 1);
    if (!p->action || !p->row || !p->hash || !p->merged || !p->merged_len || !p->has_merged) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory planning a write of %zu records", n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (b->id_lens[i] == 0 || b->id_lens[i] == VDB_NONE32 || !vdb_utf8_valid((const uint8_t *)b->ids[i], b->id_lens[i])) {
            rc = vdb_set_error(VDB_EINVAL, "record %zu has an empty, oversized or non-UTF-8 id", i);
            goto fail;
        }
        if (op != VDB_OP_DELETE && b->docs && b->docs[i] &&
            (b->doc_lens[i] == VDB_NONE32 || !vdb_utf8_valid((const uint8_t *)b->docs[i], b->doc_lens[i]))) {
            rc = vdb_set_error(VDB_EINVAL, "document of record %zu is oversized or not UTF-8", i);
            goto fail;
        }
        p->hash[i] = vdb_idmap_hash(b->ids[i], b->id_lens[i]);
        p->row[i] = vdb_idmap_lookup(c, b->ids[i], b->id_lens[i], p->hash[i]);
        const uint8_t *meta = b->metas ? b->metas[i] : NULL;
        size_t meta_len = meta ? b->meta_lens[i] : 0;
        if (meta && op != VDB_OP_DELETE && (meta_len >= VDB_NONE32 || vdb_meta_blob_check(meta, meta_len, op != VDB_OP_ADD))) {
            rc = vdb_set_error(VDB_EINVAL, "metadata of record %zu ('%.*s') is malformed", i, (int)b->id_lens[i], b->ids[i]);
            goto fail;
        }
        int exists = p->row[i] >= 0;
        switch (op) {
        case VDB_OP_ADD: p->action[i] = exists ? ACT_SKIP : ACT_APPEND; break;
        case VDB_OP_UPSERT: p->action[i] = exists ? ACT_UPDATE : ACT_APPEND; break;
        case VDB_OP_UPDATE: p->action[i] = exists ? ACT_UPDATE : ACT_SKIP; break;
        default: p->action[i] = exists ? ACT_DELETE : ACT_SKIP; break;
        }
        if (p->action[i] == ACT_APPEND) {
            if (!b->vectors) {
                rc = vdb_set_error(VDB_EINVAL, "%s of new id '%.*s' needs an embedding", op_name(op), (int)b->id_lens[i], b->ids[i]);
                goto fail;
            }
            appends++;
            id_bytes += b->id_lens[i];
        }
        if (op != VDB_OP_ADD && meta && (p->action[i] == ACT_APPEND || p->action[i] == ACT_UPDATE)) {
            /* Update semantics: merge into what is stored; NULL values delete keys. */
            const uint8_t *old = NULL;
            size_t old_len = 0;
            if (p->action[i] == ACT_UPDATE) vdb_meta_get(c->meta, (size_t)p->row[i], &old, &old_len, NULL, NULL);
            if ((rc = vdb_meta_blob_merge(old, old_len, meta, meta_len, &p->merged[i], &p->merged_len[i]))) goto fail;
            if (p->merged_len[i] >= VDB_NONE32) {
                rc = vdb_set_error(VDB_EINVAL, "metadata of record %zu would grow past 4 GiB", i);
                goto fail;
            }
            p->has_merged[i] = 1;
            meta_bytes += p->merged_len[i];
        } else if (meta) {
            meta_bytes += meta_len;
        }
        if (b->docs && b->docs[i]) meta_bytes += b->doc_lens[i];
    }
    /* The first add fixes the dimension: reserve vector room with the batch's. */
    int64_t vec_dim = appends && !c->ivf ? (c->dim > 0 ? c->dim : b->dim) : 0;
    if (c->ivf && b->vectors && op != VDB_OP_DELETE) {
        p->ivf_rows = malloc(n * sizeof *p->ivf_rows);
        p->ivf_vecs = malloc(n * (size_t)c->dim * sizeof(float));
        if (!p->ivf_rows || !p->ivf_vecs) {
            rc = vdb_set_error(VDB_ENOMEM, "out of memory planning a write of %zu records", n);
            goto fail;
        }
    }
    if ((rc = reserve(c, appends, id_bytes, meta_bytes, vec_dim))) goto fail;
    if (c->codes && (rc = vdb_codes_prepare_write(c->codes, op != VDB_OP_DELETE ? b->vectors : NULL, n,
                                                  (size_t)(c->dim > 0 ? c->dim : b->dim), c->n_rows + appends)))
        goto fail;
    return VDB_OK;
fail:
    plan_free(p, n);
    return rc;
}

static void set_live(vdb_collection *c, size_t row, int on)
{
    if (on)
        c->live[row >> 6] |= 1ull << (row & 63);
    else
        c->live[row >> 6] &= ~(1ull << (row & 63));
}

static void queue_ivf(vdb_collection *c, write_plan *p, int64_t row, const float *v)
{
    p->ivf_rows[p->n_ivf] = row;
    memcpy(p->ivf_vecs + p->n_ivf++ * (size_t)c->dim, v, (size_t)c->dim * sizeof(float));
}

/* Applies a planned write. Flat collections cannot fail here (memory was reserved by plan_write);
 * an IVF collection can run out of memory growing a list: the collection then refuses writes (the
 * logged write is applied whole on reopen). */
static int apply_write(vdb_collection *c, int op, const vdb_batch *b, write_plan *p, uint8_t *status)
{
    if (b->vectors && c->dim == 0 && op != VDB_OP_DELETE) c->dim = b->dim;
    size_t d = (size_t)c->dim;
    for (size_t i = 0; i < b->n; i++) {
        int act = p->action[i];
        int64_t row = p->row[i];
        const uint8_t *meta = b->metas ? b->metas[i] : NULL;
        size_t meta_len = meta ? b->meta_lens[i] : 0;
        if (p->has_merged[i]) {
            meta = p->merged[i];
            meta_len = p->merged_len[i];
        }
        const char *doc = b->docs ? b->docs[i] : NULL;
        if (act == ACT_APPEND && vdb_idmap_lookup(c, b->ids[i], b->id_lens[i], p->hash[i]) >= 0)
            act = op == VDB_OP_ADD ? ACT_SKIP : ACT_UPDATE; /* the id appeared earlier in this batch */
        if (act == ACT_UPDATE && row < 0) row = vdb_idmap_lookup(c, b->ids[i], b->id_lens[i], p->hash[i]);
        if (status) status[i] = act != ACT_SKIP;
        switch (act) {
        case ACT_APPEND: {
            size_t r = c->n_rows++;
            c->id_off[r] = c->ids.len;
            c->id_len[r] = b->id_lens[i];
            vdb_buf_append(&c->ids, b->ids[i], b->id_lens[i]); /* reserved */
            if (c->ivf)
                queue_ivf(c, p, (int64_t)r, b->vectors + i * d);
            else
                memcpy(row_vector_mut(c, r), b->vectors + i * d, d * sizeof(float));
            if (c->codes) vdb_codes_set(c->codes, r, b->vectors + i * d);
            vdb_meta_set(c->meta, r, 1, meta, meta_len, 1, doc, doc ? b->doc_lens[i] : 0);
            set_live(c, r, 1);
            c->n_live++;
            vdb_idmap_insert(c, (int64_t)r, p->hash[i]);
            break;
        }
        case ACT_UPDATE:
            if (b->vectors && c->ivf)
                queue_ivf(c, p, row, b->vectors + i * d);
            else if (b->vectors)
                memcpy(row_vector_mut(c, (size_t)row), b->vectors + i * d, d * sizeof(float));
            if (b->vectors && c->codes) vdb_codes_set(c->codes, (size_t)row, b->vectors + i * d);
            vdb_meta_set(c->meta, (size_t)row, meta != NULL || p->has_merged[i], meta, meta_len, doc != NULL, doc,
                         doc ? b->doc_lens[i] : 0);
            break;
        case ACT_DELETE:
            if (c->ivf) vdb_ivf_remove(c->ivf, row);
            vdb_idmap_remove(c, row);
            set_live(c, (size_t)row, 0);
            c->n_live--;
            break;
        default: break;
        }
    }
    if (p->n_ivf) {
        int rc = vdb_ivf_add(c->ivf, p->ivf_rows, p->ivf_vecs, p->n_ivf);
        if (rc) {
            c->failed = 1;
            return rc;
        }
    }
    return VDB_OK;
}

/* ---- checkpoint, compaction ---- */

int vdb_coll_compact(vdb_collection *c)
{
    size_t n = c->n_live, d = (size_t)c->dim, k = 0;
    if (c->n_live == c->n_rows) return VDB_OK;
    int rc = c->ivf ? VDB_OK : vdb_coll_verify_all(c); /* rows are copied: never copy damage */
    if (rc == VDB_OK) rc = vdb_codes_verify(c->codes);
    if (rc == VDB_OK) rc = vdb_coll_meta_load(c);
    if (rc) return rc;
    float *vec = NULL;
    int64_t *old_to_new = NULL;
    vdb_meta *meta = NULL;
    vdb_buf ids = {0};
    int64_t *slots = NULL;
    size_t n_slots = 0;
    if (c->ivf) {
        /* The index owns the vectors: it only needs the new row numbers. */
        d = 0;
        if (!(old_to_new = malloc((c->n_rows ? c->n_rows : 1) * sizeof *old_to_new))) goto nomem;
        for (size_t r = 0, j = 0; r < c->n_rows; r++) old_to_new[r] = is_live(c, r) ? (int64_t)j++ : -1;
    }
    if (d && n && !(vec = vectors_alloc(n, d))) goto nomem;
    if ((rc = vdb_meta_create(&meta))) goto cleanup;
    for (size_t r = 0; r < c->n_rows; r++) {
        if (!is_live(c, r)) continue;
        const uint8_t *mb;
        const char *doc;
        size_t ml, dl;
        vdb_meta_get(c->meta, r, &mb, &ml, &doc, &dl);
        if ((rc = vdb_meta_set(meta, k, 1, mb, ml, 1, doc, dl))) goto cleanup;
        if (d) memcpy(vec + k * d, row_vector(c, r), d * sizeof(float));
        if (vdb_buf_append(&ids, c->ids.data + c->id_off[r], c->id_len[r])) goto nomem;
        k++;
    }
    /* The id table of the compacted rows, allocated before anything changes. */
    if ((rc = vdb_idmap_alloc(n, &slots, &n_slots))) goto cleanup;
    if (c->ivf && (rc = vdb_ivf_renumber(c->ivf, old_to_new, c->n_rows))) goto cleanup;
    /* Nothing can fail from here on. The codes drop the dead rows (before the live bitmap is reset);
     * the id arrays move down in place (k <= r); the new id bytes hold the live ids in row order. */
    if (c->codes) vdb_codes_compact(c->codes, c->live, c->n_rows);
    k = 0;
    for (size_t r = 0, off = 0; r < c->n_rows; r++) {
        if (!is_live(c, r)) continue;
        c->id_off[k] = off;
        c->id_len[k] = c->id_len[r];
        off += c->id_len[r];
        k++;
    }
    vdb_vecmap_close(c->vmap);
    c->vmap = NULL;
    c->base = NULL;
    c->n_base = 0;
    free(c->tail);
    c->tail = vec;
    c->tail_cap = n;
    vec = NULL;
    vdb_meta_free(c->meta);
    c->meta = meta;
    meta = NULL;
    vdb_buf_free(&c->ids);
    c->ids = ids;
    ids = (vdb_buf){0};
    c->n_rows = n;
    memset(c->live, 0, (c->cap_rows + 63) / 64 * sizeof(uint64_t));
    for (size_t r = 0; r < n; r++) set_live(c, r, 1);
    vdb_idmap_install(c, slots, n_slots);
    slots = NULL;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory compacting the collection");
cleanup:
    free(vec);
    free(old_to_new);
    free(slots);
    vdb_meta_free(meta);
    vdb_buf_free(&ids);
    return rc;
}

/* Paths fit: open refuses directories longer than MAX_DIR_LEN. */
#define MAX_DIR_LEN 3000
static void path_join(char *out, size_t cap, const char *dir, const char *name, uint64_t gen, int with_gen)
{
    int n = with_gen ? snprintf(out, cap, "%s/%s%llu", dir, name, (unsigned long long)gen)
                     : snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) out[0] = 0;
}

static int encode_records(const vdb_collection *c, vdb_buf *out)
{
    for (size_t r = 0; r < c->n_rows; r++) {
        const uint8_t *mb;
        const char *doc;
        size_t ml, dl;
        vdb_meta_get(c->meta, r, &mb, &ml, &doc, &dl);
        if (vdb_buf_u32(out, c->id_len[r]) || vdb_buf_append(out, c->ids.data + c->id_off[r], c->id_len[r]) ||
            vdb_buf_u32(out, mb ? (uint32_t)ml : VDB_NONE32) || (mb && vdb_buf_append(out, mb, ml)) ||
            vdb_buf_u32(out, doc ? (uint32_t)dl : VDB_NONE32) || (doc && vdb_buf_append(out, doc, dl)))
            return vdb_set_error(VDB_ENOMEM, "out of memory writing a snapshot");
    }
    return VDB_OK;
}

int vdb_coll_checkpoint_locked(vdb_collection *c)
{
    char gdir[4096], path[4096], old_wal[4096], old_gen[4096];
    vdb_buf rec = {0};
    int rc, fd = -1;
    if (c->failed) return vdb_coll_refuse_writes(c);
    if ((rc = vdb_coll_meta_load(c)) || (rc = vdb_coll_compact(c))) return rc;
    if (!c->dir) return VDB_OK;
    uint64_t gen = c->generation + 1;
    path_join(gdir, sizeof gdir, c->dir, "gen-", gen, 1);
    if ((rc = vdb_remove_tree(gdir))) return rc;
    if (mkdir(gdir, 0755) != 0) return vdb_set_io_error(errno, "cannot create '%s': %s", gdir, strerror(errno));
    uint64_t vector_bytes = 0;
    if (c->ivf) {
        path_join(path, sizeof path, gdir, "ivf.bin", 0, 0);
        if ((rc = vdb_ivf_write(c->ivf, path, &vector_bytes))) goto cleanup;
    } else if (c->dim > 0) {
        const float *chunks[2] = {c->base, c->tail};
        /* Never copy damage into a new generation under fresh checksums. */
        if ((rc = vdb_coll_verify_all(c))) goto cleanup;
        uint64_t rows[2] = {c->n_base, c->n_rows - c->n_base};
        path_join(path, sizeof path, gdir, "vectors.bin", 0, 0);
        /* With codes, the float32 rows are read one by one to re-rank: a 4 KiB page verified (and
         * resident) per row, not a 64 KiB chunk. Without, searches scan whole chunks. */
        uint32_t crc_bytes = c->codes ? VDB_VECTORS_SMALL_CHUNK : VDB_VECTORS_CHUNK;
        if ((rc = vdb_vectors_write(path, c->cfg.metric, (uint64_t)c->dim, chunks, rows, 2, crc_bytes)))
            goto cleanup;
        vector_bytes = rows[0] + rows[1];
        vector_bytes *= (uint64_t)c->dim * sizeof(float);
    }
    if ((rc = encode_records(c, &rec))) goto cleanup;
    path_join(path, sizeof path, gdir, "records.bin", 0, 0);
    if ((rc = vdb_records_write(path, c->n_rows, rec.data, rec.len))) goto cleanup;
    path_join(path, sizeof path, gdir, "ids.bin", 0, 0);
    if ((rc = vdb_idmap_write(c, path))) goto cleanup;
    if (c->codes && vdb_codes_trained(c->codes) && c->n_rows) {
        uint64_t code_bytes;
        path_join(path, sizeof path, gdir, "codes.bin", 0, 0);
        if ((rc = vdb_codes_write(c->codes, path, c->n_rows, &code_bytes))) goto cleanup;
        vector_bytes += code_bytes;
    }
    if ((rc = vdb_fsync_dir(gdir)) || (rc = vdb_fsync_dir(c->dir))) goto cleanup;
    vdb_manifest m = {(uint32_t)c->cfg.metric, (uint64_t)c->dim, gen};
    if ((rc = vdb_manifest_write(c->dir, &m))) {
        /* Whether the switch reached the disk is unknown: the old log may already be a leftover
         * that the next open deletes. Refuse writes until reopened, which settles it. */
        c->failed = 1;
        goto cleanup;
    }
    /* The new generation is current: start its log, then drop the old files. */
    path_join(path, sizeof path, c->dir, "wal-", gen, 1);
    if ((rc = vdb_wal_open(path, &fd))) {
        c->failed = 1;
        goto cleanup;
    }
    close(c->wal_fd);
    c->wal_fd = fd;
    c->wal_end = 0;
    snprintf(c->wal_path, sizeof c->wal_path, "%s", path);
    path_join(old_wal, sizeof old_wal, c->dir, "wal-", c->generation, 1);
    path_join(old_gen, sizeof old_gen, c->dir, "gen-", c->generation, 1);
    c->generation = gen;
    c->batch_unlogged = 0;
    c->batch_log.len = 0; /* what it held is in the new generation; later writes buffer again */
    c->batch_buffering = c->batch_depth > 0;
    c->snapshot_bytes = rec.len + vector_bytes;
    vdb_remove_tree(old_wal);
    vdb_remove_tree(old_gen);
    /* The index's lists now read from what was just written: memory no longer holds them (best
     * effort: on failure they merely stay in memory). */
    if (c->ivf) {
        path_join(path, sizeof path, gdir, "ivf.bin", 0, 0);
        if (vdb_ivf_remap(c->ivf, path) == VDB_OK && c->cfg.quantization != VDB_QUANT_NONE)
            vdb_ivf_advise_random(c->ivf);
    }
cleanup:
    vdb_buf_free(&rec);
    return rc;
}

int vdb_coll_maybe_checkpoint(vdb_collection *c)
{
    if (c->batch_unlogged) return VDB_OK; /* half a batch on disk would survive a crash: wait for its end */
    int many_dead = c->n_rows - c->n_live > 1024 && (c->n_rows - c->n_live) * 2 > c->n_rows;
    int long_log = c->dir && c->wal_end > CHECKPOINT_WAL_BYTES && c->wal_end > c->snapshot_bytes / 2;
    return many_dead || long_log ? vdb_coll_checkpoint_locked(c) : VDB_OK;
}

/* ---- quantization codes (vdb_codes.h) ---- */

static const float *codes_vec(const void *ctx, size_t row) { return row_vector(ctx, row); }

/* The codes of an opened generation: codes.bin, or, when the generation has none (written without
 * quantization), encoded from its vectors. */
static int codes_open(vdb_collection *c, const char *gdir, size_t n_rows)
{
    char path[4096];
    struct stat st;
    if (c->cfg.quantization != VDB_QUANT_SQ8) return VDB_OK;
    if (gdir && n_rows) {
        path_join(path, sizeof path, gdir, "codes.bin", 0, 0);
        if (stat(path, &st) == 0) return vdb_codes_read(path, c->cfg.metric, (size_t)c->dim, n_rows, &c->codes);
    }
    int rc = n_rows ? vdb_coll_verify_all(c) : VDB_OK;
    if (rc == VDB_OK) rc = vdb_codes_create(c->cfg.metric, &c->codes);
    if (rc == VDB_OK && n_rows) rc = vdb_codes_retrain(c->codes, (size_t)c->dim, n_rows, c->live, codes_vec, c);
    return rc;
}

/* Ranges follow the data: re-derived when the collection has doubled since they were (amortized
 * O(d) per added vector; results never depend on it, only the re-rank count does). */
int vdb_coll_codes_maybe_retrain(vdb_collection *c)
{
    if (!c->codes || c->batch_depth > 0 || !vdb_codes_should_retrain(c->codes, c->n_live)) return VDB_OK;
    int rc = vdb_coll_verify_all(c);
    if (rc) return rc;
    return vdb_codes_retrain(c->codes, (size_t)c->dim, c->n_rows, c->live, codes_vec, c);
}

/* ---- open / close ---- */

static int replay_write(vdb_collection *c, uint8_t type, const uint8_t *payload, size_t len)
{
    vdb_logrec w;
    write_plan p;
    int rc;
    char why[512];
    if (type != WAL_WRITE || vdb_logrec_decode(payload, len, &w)) {
        if (type == WAL_WRITE) vdb_logrec_free(&w);
        return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: it holds a record this version cannot read (type %u)",
                             c->wal_path, type);
    }
    /* The snapshot's metadata first: its damage is records.bin's, not this log's. */
    if ((rc = vdb_coll_meta_load(c)) || (rc = plan_write(c, w.op, &w.b, &p))) {
        vdb_logrec_free(&w);
        if (rc == VDB_ECORRUPT && atomic_load(&c->meta_pending)) return rc;
        if (rc == VDB_ENOMEM) return rc;
        snprintf(why, sizeof why, "%s", vdb_last_error()); /* the message buffer is about to be rewritten */
        return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: it holds an invalid write (%s)", c->wal_path, why);
    }
    rc = apply_write(c, w.op, &w.b, &p, NULL);
    plan_free(&p, w.b.n);
    vdb_logrec_free(&w);
    return rc;
}

static int replay_record(void *ctx, uint8_t type, const uint8_t *payload, size_t len)
{
    vdb_collection *c = ctx;
    if (type != WAL_GROUP) return replay_write(c, type, payload, len);
    /* The group's checksum matched: it is whole, so a bad length inside is damage, not a tear. */
    size_t pos = 0;
    while (pos < len) {
        if (len - pos < 4 || vdb_get_u32(payload + pos) > len - pos - 4)
            return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: a batch record's length runs past its end",
                                 c->wal_path);
        uint32_t n = vdb_get_u32(payload + pos);
        int rc = replay_write(c, WAL_WRITE, payload + pos + 4, n);
        if (rc) return rc;
        pos += 4 + (size_t)n;
    }
    return VDB_OK;
}

/* Reads records.bin. With ids_known 0 (no ids.bin) it gives the collection its ids, id table and
 * live rows, and meta its metadata and documents; with ids_known 1 (the ids came from ids.bin) it
 * fills meta only, and checks each record's id against its row's. */
static int load_records(vdb_collection *c, const char *path, uint64_t n_rows_expected, int ids_known, vdb_meta *meta)
{
    uint8_t *payload = NULL;
    size_t len = 0;
    uint64_t n_rows;
    int rc = vdb_records_read(path, &n_rows, &payload, &len);
    if (rc) return rc;
    if (n_rows != n_rows_expected) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' holds %llu records but the vectors file %llu", path,
                           (unsigned long long)n_rows, (unsigned long long)n_rows_expected);
        goto cleanup;
    }
    if (n_rows > len) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (record count)", path);
        goto cleanup;
    }
    if ((rc = ids_known ? vdb_meta_reserve(meta, n_rows, len) : reserve(c, n_rows, len, len, 0))) goto cleanup;
    vdb_reader r = {payload, len};
    for (uint64_t i = 0; i < n_rows; i++) {
        const char *s[3];
        uint32_t l[3];
        if (vdb_logrec_take_strings(&r, 1, &s[0], &l[0], 0, !ids_known) || l[0] == 0 ||
            vdb_logrec_take_strings(&r, 1, &s[1], &l[1], 1, 0) || vdb_logrec_take_strings(&r, 1, &s[2], &l[2], 1, 1)) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (record %llu)", path, (unsigned long long)i);
            goto cleanup;
        }
        if (s[1] && vdb_meta_blob_check((const uint8_t *)s[1], l[1], 0)) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (metadata of record %llu)", path, (unsigned long long)i);
            goto cleanup;
        }
        if (ids_known) {
            if (l[0] != c->id_len[i] || memcmp(s[0], c->ids.data + c->id_off[i], l[0])) {
                rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (record %llu has another id than ids.bin's row)",
                                   path, (unsigned long long)i);
                goto cleanup;
            }
            vdb_meta_set(meta, (size_t)i, 1, (const uint8_t *)s[1], l[1], 1, s[2], l[2]);
            continue;
        }
        uint64_t h = vdb_idmap_hash(s[0], l[0]);
        if (vdb_idmap_lookup(c, s[0], l[0], h) >= 0) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (id '%.*s' repeated)", path, (int)l[0], s[0]);
            goto cleanup;
        }
        size_t row = c->n_rows++;
        c->id_off[row] = c->ids.len;
        c->id_len[row] = l[0];
        vdb_buf_append(&c->ids, s[0], l[0]);
        vdb_meta_set(meta, row, 1, (const uint8_t *)s[1], l[1], 1, s[2], l[2]);
        set_live(c, row, 1);
        c->n_live++;
        vdb_idmap_insert(c, (int64_t)row, h);
    }
    if (r.left) rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (trailing bytes)", path);
cleanup:
    free(payload);
    return rc;
}

int vdb_coll_meta_load(const vdb_collection *cc)
{
    vdb_collection *c = (vdb_collection *)cc; /* the load fills what open deferred; callers see no change */
    if (!atomic_load_explicit(&c->meta_pending, memory_order_acquire)) return VDB_OK;
    char path[4096], gdir[4096];
    vdb_meta *meta = NULL;
    int rc = VDB_OK;
    pthread_mutex_lock(&c->meta_mu);
    if (atomic_load_explicit(&c->meta_pending, memory_order_relaxed)) {
        /* Pending only until the first write or checkpoint: rows are still the snapshot's. */
        path_join(gdir, sizeof gdir, c->dir, "gen-", c->generation, 1);
        path_join(path, sizeof path, gdir, "records.bin", 0, 0);
        if ((rc = vdb_meta_create(&meta)) == VDB_OK && (rc = load_records(c, path, c->n_rows, 1, meta)) == VDB_OK) {
            vdb_meta_free(c->meta);
            c->meta = meta;
            meta = NULL;
            atomic_store_explicit(&c->meta_pending, 0, memory_order_release);
        }
    }
    pthread_mutex_unlock(&c->meta_mu);
    vdb_meta_free(meta);
    return rc;
}

/* Whether dir holds generations or logs: then a missing MANIFEST is damage, not a new collection. */
static int dir_has_data(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    if (!d) return 0;
    while (!found && (e = readdir(d))) found = !strncmp(e->d_name, "gen-", 4) || !strncmp(e->d_name, "wal-", 4);
    closedir(d);
    return found;
}

/* Removes what a crashed checkpoint may have left: generations and logs other than the current. */
static void remove_leftovers(vdb_collection *c)
{
    DIR *d = opendir(c->dir);
    struct dirent *e;
    char keep_gen[64], keep_wal[64], path[4096];
    if (!d) return;
    snprintf(keep_gen, sizeof keep_gen, "gen-%llu", (unsigned long long)c->generation);
    snprintf(keep_wal, sizeof keep_wal, "wal-%llu", (unsigned long long)c->generation);
    while ((e = readdir(d))) {
        int is_gen = !strncmp(e->d_name, "gen-", 4), is_wal = !strncmp(e->d_name, "wal-", 4);
        if ((is_gen && strcmp(e->d_name, keep_gen)) || (is_wal && strcmp(e->d_name, keep_wal)) ||
            !strcmp(e->d_name, "MANIFEST.tmp")) {
            snprintf(path, sizeof path, "%s/%s", c->dir, e->d_name);
            vdb_remove_tree(path);
        }
    }
    closedir(d);
}

static void collection_free(vdb_collection *c)
{
    if (!c) return;
    if (c->wal_fd >= 0) close(c->wal_fd);
    vdb_vecmap_close(c->vmap);
    free(c->tail);
    free(c->live);
    free(c->id_off);
    free(c->id_len);
    free(c->slots);
    vdb_buf_free(&c->ids);
    vdb_meta_free(c->meta);
    vdb_ivf_free(c->ivf);
    vdb_codes_free(c->codes);
    vdb_buf_free(&c->batch_log);
    pthread_rwlock_destroy(&c->lock);
    pthread_mutex_destroy(&c->meta_mu);
    free(c->dir);
    free(c);
}

int vdb_collection_open(const char *dir, const vdb_collection_config *cfg, vdb_collection **out)
{
    int rc;
    char path[4096];
    vdb_manifest m;
    pthread_rwlockattr_t attr;
    vdb_collection *c = calloc(1, sizeof *c);
    *out = NULL;
    if ((unsigned)cfg->metric > VDB_METRIC_COSINE || cfg->dim < 0 || cfg->dim > VDB_MAX_DIM) {
        free(c);
        return vdb_set_error(VDB_EINVAL, "dimension %lld is not valid: expected 1 to %u (or 0: fixed by the first add)",
                             (long long)cfg->dim, VDB_MAX_DIM);
    }
    if (!c) return vdb_set_error(VDB_ENOMEM, "out of memory opening a collection");
    c->wal_fd = -1;
    c->cfg = *cfg;
    c->dim = cfg->dim;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    /* Writers must not starve behind a stream of queries. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&c->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&c->meta_mu, NULL);
    if ((rc = vdb_meta_create(&c->meta))) goto fail;
    if ((rc = vdb_idmap_rebuild(c, 0))) goto fail;
    if (!dir) {
        if ((rc = codes_open(c, NULL, 0))) goto fail;
        *out = c;
        return VDB_OK;
    }
    if (strlen(dir) > MAX_DIR_LEN) {
        rc = vdb_set_error(VDB_EINVAL, "collection path is longer than %d bytes", MAX_DIR_LEN);
        goto fail;
    }
    if (!(c->dir = strdup(dir))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory");
        goto fail;
    }
    rc = vdb_manifest_read(dir, &m);
    if (rc == VDB_ENOTFOUND && dir_has_data(dir)) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s/MANIFEST' is missing but the collection holds data files", dir);
        goto fail;
    }
    if (rc == VDB_ENOTFOUND) {
        m = (vdb_manifest){(uint32_t)cfg->metric, (uint64_t)(cfg->dim > 0 ? cfg->dim : 0), 0};
        if ((rc = vdb_manifest_write(dir, &m))) goto fail;
    } else if (rc) {
        goto fail;
    }
    c->cfg.metric = (vdb_metric)m.metric;
    c->dim = (int64_t)m.dim;
    c->generation = m.generation;
    remove_leftovers(c);
    if (c->generation > 0) {
        uint64_t n_rows = 0;
        char gdir[4096];
        path_join(gdir, sizeof gdir, dir, "gen-", c->generation, 1);
        struct stat st;
        path_join(path, sizeof path, gdir, "ivf.bin", 0, 0);
        if (c->dim > 0 && stat(path, &st) == 0) {
            if ((rc = vdb_ivf_read(path, &c->ivf))) goto fail;
            if ((int64_t)vdb_ivf_dim(c->ivf) != c->dim || vdb_ivf_metric(c->ivf) != c->cfg.metric ||
                vdb_ivf_count(c->ivf) < 0) {
                rc = vdb_set_error(VDB_ECORRUPT, "file '%s' does not match its collection (metric or dimension)", path);
                goto fail;
            }
            n_rows = (uint64_t)vdb_ivf_count(c->ivf);
            c->snapshot_bytes = (uint64_t)st.st_size;
            /* The codes come with the index (ivfpq4.bin); a generation written without them (or a
             * collection whose quantization differs) gets them made, or dropped, here. */
            size_t want_m = c->cfg.quantization == VDB_QUANT_PQ4 && vdb_ivf_count(c->ivf) >= 16
                                ? vdb_collection_pq4_m((size_t)c->dim) : 0;
            if (vdb_ivf_pq4_m(c->ivf) != want_m && (rc = vdb_ivf_set_pq4(c->ivf, want_m, VDB_PQ4_SEED))) goto fail;
            /* Codes answer first: the float32 rows are read only to re-rank a few candidates. */
            if (c->cfg.quantization != VDB_QUANT_NONE) vdb_ivf_advise_random(c->ivf);
        } else if (c->dim > 0) {
            path_join(path, sizeof path, gdir, "vectors.bin", 0, 0);
            if ((rc = vdb_vecmap_open(path, m.metric, m.dim, &n_rows, &c->base, &c->vmap))) goto fail;
            c->n_base = (size_t)n_rows;
            c->snapshot_bytes = vdb_vecmap_len(c->vmap);
            /* Codes answer first: the float32 rows are read only to re-rank a few candidates. */
            if (c->cfg.quantization == VDB_QUANT_SQ8) vdb_vecmap_advise_random(c->vmap);
        }
        path_join(path, sizeof path, gdir, "ids.bin", 0, 0);
        rc = vdb_idmap_read(c, path, n_rows);
        if (rc == VDB_OK) {
            /* The ids are known: metadata and documents wait in records.bin until first needed
             * (its header is checked now, so a damaged one fails the open). */
            path_join(path, sizeof path, gdir, "records.bin", 0, 0);
            if ((rc = vdb_records_check_header(path, n_rows))) goto fail;
            atomic_store(&c->meta_pending, 1);
        } else if (rc == VDB_ENOTFOUND) { /* written before ids.bin existed: parse records.bin */
            path_join(path, sizeof path, gdir, "records.bin", 0, 0);
            if ((rc = load_records(c, path, n_rows, 0, c->meta))) goto fail;
        } else {
            goto fail;
        }
        /* A snapshot's index holds exactly rows 0..n-1: anything else is damage. */
        for (uint64_t r = 0; c->ivf && r < n_rows; r++)
            if (!vdb_ivf_contains(c->ivf, (int64_t)r)) {
                rc = vdb_set_error(VDB_ECORRUPT, "file '%s/ivf.bin' lacks row %llu of records.bin", gdir, (unsigned long long)r);
                goto fail;
            }
        c->snapshot_bytes += c->ids.len;
        if ((rc = codes_open(c, gdir, (size_t)n_rows))) goto fail;
    } else if ((rc = codes_open(c, NULL, 0))) {
        goto fail;
    }
    path_join(c->wal_path, sizeof c->wal_path, dir, "wal-", c->generation, 1);
    snprintf(path, sizeof path, "%s", c->wal_path);
    if ((rc = vdb_wal_replay(path, replay_record, c, &c->wal_end))) goto fail;
    if ((rc = vdb_wal_open(path, &c->wal_fd))) goto fail;
    *out = c;
    return VDB_OK;
fail:
    collection_free(c);
    return rc;
}

int vdb_collection_close(vdb_collection *c)
{
    int rc = VDB_OK;
    if (!c) return VDB_OK;
    /* A batch left open commits: its writes were acknowledged to be kept when it ends. */
    if (c->dir && !c->failed && c->batch_unlogged) rc = vdb_coll_batch_commit(c);
    if (rc == VDB_OK && c->dir && !c->failed && c->wal_end >= CLOSE_CHECKPOINT_WAL_BYTES)
        rc = vdb_coll_checkpoint_locked(c);
    collection_free(c);
    return rc;
}

int vdb_collection_verify(vdb_collection *c)
{
    pthread_rwlock_rdlock(&c->lock);
    int rc = vdb_coll_verify_all(c);
    if (rc == VDB_OK) rc = vdb_codes_verify(c->codes);
    if (rc == VDB_OK) rc = vdb_coll_meta_load(c); /* records.bin, if open left it unread */
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

int vdb_collection_checkpoint(vdb_collection *c)
{
    pthread_rwlock_wrlock(&c->lock);
    int rc = vdb_coll_checkpoint_locked(c);
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

/* ---- writes ---- */

/* Logs b; *applied is b with its vectors read from the logged bytes, so that memory holds exactly
 * what the log holds even if the caller's buffer changed meanwhile (payload owns them). */
static int log_write(vdb_collection *c, int op, const vdb_batch *b, vdb_buf *payload, vdb_batch *applied)
{
    size_t vec_off = 0;
    int rc = vdb_logrec_encode(op, b, payload, &vec_off);
    *applied = *b;
    if (rc == VDB_OK) {
        if (b->vectors && op != VDB_OP_DELETE) applied->vectors = (const float *)(payload->data + vec_off);
        rc = vdb_wal_append(c->wal_fd, c->wal_path, &c->wal_end, WAL_WRITE, payload->data, payload->len, c->cfg.durable);
        /* After a failed write or sync the file's state is unknown (fsyncgate): stop writing. */
        if (rc == VDB_EIO) c->failed = 1;
    }
    return rc;
}

static int batch_log_small(const vdb_collection *c)
{
    uint64_t quarter = (c->snapshot_bytes + c->wal_end) / 4;
    return c->batch_log.len <= BATCH_LOG_CAP && (c->batch_log.len <= BATCH_LOG_FLOOR || c->batch_log.len <= quarter);
}

/* Batch mode: b's record goes to the batch's buffer (not to disk), *applied as in log_write. When
 * the buffer outgrows batch_log_small it is dropped: the batch's end will checkpoint instead. */
static int buffer_write(vdb_collection *c, int op, const vdb_batch *b, vdb_batch *applied)
{
    size_t start = c->batch_log.len, vec_off = 0;
    *applied = *b;
    if (!c->batch_buffering) {
        c->batch_unlogged = 1;
        return VDB_OK;
    }
    int rc = vdb_buf_u32(&c->batch_log, 0) ? vdb_set_error(VDB_ENOMEM, "out of memory buffering a batch")
                                            : vdb_logrec_encode(op, b, &c->batch_log, &vec_off);
    if (rc) {
        c->batch_log.len = start;
        return rc;
    }
    c->batch_unlogged = 1;
    size_t n = c->batch_log.len - start - 4;
    if (n > UINT32_MAX - 1 || !batch_log_small(c)) {
        vdb_buf_free(&c->batch_log);
        c->batch_buffering = 0;
        return VDB_OK;
    }
    vdb_put_u32(c->batch_log.data + start, (uint32_t)n);
    if (b->vectors && op != VDB_OP_DELETE) applied->vectors = (const float *)(c->batch_log.data + vec_off);
    return VDB_OK;
}

int vdb_coll_batch_commit(vdb_collection *c)
{
    if (!c->batch_unlogged) return VDB_OK;
    if (!c->batch_buffering || !batch_log_small(c)) return vdb_coll_checkpoint_locked(c);
    int rc = vdb_wal_append(c->wal_fd, c->wal_path, &c->wal_end, WAL_GROUP, c->batch_log.data, c->batch_log.len,
                            c->cfg.durable);
    if (rc) return rc;
    c->batch_unlogged = 0;
    c->batch_log.len = 0;
    c->batch_buffering = c->batch_depth > 0;
    return vdb_coll_maybe_checkpoint(c);
}

/* One write under the write lock: plan (validate, reserve), log, apply, then maintenance. */
static int write_locked(vdb_collection *c, int op, const vdb_batch *b, uint8_t *status)
{
    write_plan p;
    vdb_buf payload = {0};
    vdb_batch logged;
    int rc;
    if (c->failed) return vdb_coll_refuse_writes(c);
    if ((rc = plan_write(c, op, b, &p))) return rc;
    /* Batch mode logs nothing yet: the batch's end writes its records as one group, or its rows
     * once, in the next generation. */
    if (c->dir && c->batch_depth > 0 && c->batch_logged_depth == 0)
        rc = buffer_write(c, op, b, &logged);
    else if (c->dir)
        rc = log_write(c, op, b, &payload, &logged);
    if (rc) {
        plan_free(&p, b->n);
        vdb_buf_free(&payload);
        return rc;
    }
    rc = apply_write(c, op, c->dir ? &logged : b, &p, status);
    plan_free(&p, b->n);
    vdb_buf_free(&payload);
    if (rc == VDB_OK) vdb_coll_after_write(c);
    return rc;
}

int vdb_collection_write(vdb_collection *c, int op, const vdb_batch *b, uint8_t *status)
{
    vdb_coll_clear_warning();
    pthread_rwlock_wrlock(&c->lock);
    int rc = write_locked(c, op, b, status);
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

/* Rows allowed by the filter among live rows, as a bitmap (caller frees), or NULL meaning every row
 * is allowed. */
static int allowed_rows(const vdb_collection *c, const vdb_filter *f, uint64_t **out)
{
    size_t words = (c->n_rows + 63) / 64;
    *out = NULL;
    if (!f && c->n_live == c->n_rows) return VDB_OK;
    uint64_t *bm = calloc(words ? words : 1, sizeof *bm);
    if (!bm) return vdb_set_error(VDB_ENOMEM, "out of memory evaluating a filter");
    if (f) {
        int rc = vdb_coll_meta_load(c);
        if (rc == VDB_OK) rc = vdb_filter_eval(f, c->meta, c->n_rows, bm);
        if (rc) {
            free(bm);
            return rc;
        }
        for (size_t w = 0; w < words; w++) bm[w] &= c->live[w];
    } else {
        memcpy(bm, c->live, words * sizeof *bm);
    }
    *out = bm;
    return VDB_OK;
}

int vdb_collection_delete_where(vdb_collection *c, const vdb_filter *f, const char *const *only_ids,
                                const uint32_t *only_lens, size_t n_only, int64_t *n_deleted)
{
    uint64_t *bm = NULL;
    const char **ids = NULL;
    uint32_t *lens = NULL;
    size_t n = 0;
    int rc;
    vdb_coll_clear_warning();
    *n_deleted = 0;
    /* Resolve the matches and log them as a delete by id under one write lock: atomic. */
    pthread_rwlock_wrlock(&c->lock);
    if ((rc = allowed_rows(c, f, &bm))) goto done;
    size_t cap = only_ids ? n_only : c->n_live;
    ids = malloc((cap + 1) * sizeof *ids);
    lens = malloc((cap + 1) * sizeof *lens);
    if (!ids || !lens) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory deleting by filter");
        goto done;
    }
    if (only_ids) {
        for (size_t i = 0; i < n_only; i++) {
            int64_t r = vdb_idmap_lookup(c, only_ids[i], only_lens[i], vdb_idmap_hash(only_ids[i], only_lens[i]));
            if (r < 0 || !row_allowed(c, bm, (size_t)r)) continue;
            ids[n] = (const char *)c->ids.data + c->id_off[r];
            lens[n++] = c->id_len[r];
        }
    } else {
        for (size_t r = 0; r < c->n_rows; r++) {
            if (!row_allowed(c, bm, r)) continue;
            ids[n] = (const char *)c->ids.data + c->id_off[r];
            lens[n++] = c->id_len[r];
        }
    }
    if (n) {
        vdb_batch b = {n, 0, ids, lens, NULL, NULL, NULL, NULL, NULL};
        if ((rc = write_locked(c, VDB_OP_DELETE, &b, NULL)) == VDB_OK) *n_deleted = (int64_t)n;
    }
done:
    pthread_rwlock_unlock(&c->lock);
    free(bm);
    free(ids);
    free(lens);
    return rc;
}


int vdb_collection_get(vdb_collection *c, const vdb_get_request *req, vdb_result **out)
{
    uint64_t *bm = NULL;
    int64_t *rows = NULL;
    size_t n = 0;
    int rc;
    *out = NULL;
    pthread_rwlock_rdlock(&c->lock);
    if ((rc = allowed_rows(c, req->filter, &bm))) goto done;
    size_t cap = req->ids ? req->n_ids : c->n_live;
    if (!(rows = malloc((cap ? cap : 1) * sizeof *rows))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory");
        goto done;
    }
    int64_t skip = req->offset > 0 ? req->offset : 0, limit = req->limit;
    if (req->ids) {
        for (size_t i = 0; i < req->n_ids && (limit < 0 || (int64_t)n < limit); i++) {
            int64_t r = vdb_idmap_lookup(c, req->ids[i], req->id_lens[i], vdb_idmap_hash(req->ids[i], req->id_lens[i]));
            if (r < 0 || !row_allowed(c, bm, (size_t)r)) continue;
            if (skip > 0) {
                skip--;
                continue;
            }
            rows[n++] = r;
        }
    } else {
        for (size_t r = 0; r < c->n_rows && (limit < 0 || (int64_t)n < limit); r++) {
            if (!row_allowed(c, bm, r)) continue;
            if (skip > 0) {
                skip--;
                continue;
            }
            rows[n++] = (int64_t)r;
        }
    }
    rc = vdb_result_build(c, rows, n, NULL, req->include & ~VDB_INC_DISTANCES, out);
    if (rc == VDB_OK) {
        (*out)->nq = 1;
        if (((*out)->counts = malloc(sizeof(size_t))))
            (*out)->counts[0] = n;
        else {
            vdb_result_free(*out);
            *out = NULL;
            rc = vdb_set_error(VDB_ENOMEM, "out of memory");
        }
    }
done:
    pthread_rwlock_unlock(&c->lock);
    free(bm);
    free(rows);
    return rc;
}

int vdb_collection_count(vdb_collection *c, const vdb_filter *filter, int64_t *out)
{
    uint64_t *bm = NULL;
    int rc = VDB_OK;
    pthread_rwlock_rdlock(&c->lock);
    if (!filter) {
        *out = (int64_t)c->n_live;
    } else if ((rc = allowed_rows(c, filter, &bm)) == VDB_OK) {
        int64_t n = 0;
        for (size_t w = 0; w < (c->n_rows + 63) / 64; w++) n += __builtin_popcountll(bm[w]);
        *out = n;
    }
    pthread_rwlock_unlock(&c->lock);
    free(bm);
    return rc;
}

/* Exact search over the m rows bm allows, read out of the index (IVF collections, when a filter
 * matches few rows: see vdb_collection.h). One query reads them in place; a batch gathers them
 * (at most what n_probe lists hold) for the blocked flat search. */
static int search_allowed_exact(const vdb_collection *c, const uint64_t *bm, size_t m, const float *queries,
                                size_t nq, size_t k, float *dist, int64_t *rows)
{
    int rc = VDB_OK;
    size_t d = (size_t)c->dim, n = 0, words = (c->n_rows + 63) / 64;
    if (nq == 1) {
        vdb_topk h;
        vdb_topk_init(&h, k, dist, rows);
        for (size_t w = 0; w < words; w++) {
            for (uint64_t bits = bm[w]; bits; bits &= bits - 1) {
                size_t r = w * 64 + (size_t)__builtin_ctzll(bits);
                const float *v = vdb_ivf_vector(c->ivf, (int64_t)r);
                if ((rc = vdb_ivf_verify_row(c->ivf, (int64_t)r))) return rc;
                if (v) vdb_topk_push(&h, vdb_distance(c->cfg.metric, queries, v, d), (int64_t)r);
            }
        }
        for (size_t j = vdb_topk_sort(&h); j < k; j++) {
            dist[j] = INFINITY;
            rows[j] = -1;
        }
        return VDB_OK;
    }
    float *g = m ? vectors_alloc(m, d) : NULL;
    int64_t *map = malloc((m ? m : 1) * sizeof *map);
    if ((m && !g) || !map) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory gathering %zu filtered vectors", m);
        goto cleanup;
    }
    for (size_t w = 0; w < words && n < m; w++) {
        for (uint64_t bits = bm[w]; bits; bits &= bits - 1) {
            size_t r = w * 64 + (size_t)__builtin_ctzll(bits);
            const float *v = vdb_ivf_vector(c->ivf, (int64_t)r);
            if (!v || n == m) continue; /* every allowed row is live, so in the index */
            if ((rc = vdb_ivf_verify_row(c->ivf, (int64_t)r))) goto cleanup;
            memcpy(g + n * d, v, d * sizeof(float));
            map[n++] = (int64_t)r;
        }
    }
    /* Ascending rows, so the (distance, index) order of the flat search is (distance, row). */
    vdb_vec_range range = {g, 0, n};
    if ((rc = vdb_flat_search(c->cfg.metric, d, &range, 1, NULL, queries, nq, k, dist, rows))) goto cleanup;
    for (size_t i = 0; i < nq * k; i++)
        if (rows[i] >= 0) rows[i] = map[rows[i]];
cleanup:
    free(g);
    free(map);
    return rc;
}

/* Narrows *bm (NULL: every live row) to the rows of the given ids. */
static int restrict_to_ids(const vdb_collection *c, const char *const *ids, const uint32_t *lens, size_t n,
                           uint64_t **bm)
{
    size_t words = (c->n_rows + 63) / 64;
    uint64_t *only = calloc(words ? words : 1, sizeof *only);
    if (!only) return vdb_set_error(VDB_ENOMEM, "out of memory restricting a query to %zu ids", n);
    for (size_t i = 0; i < n; i++) {
        int64_t r = vdb_idmap_lookup(c, ids[i], lens[i], vdb_idmap_hash(ids[i], lens[i]));
        if (r >= 0 && row_allowed(c, *bm, (size_t)r)) only[(size_t)r >> 6] |= UINT64_C(1) << ((size_t)r & 63);
    }
    free(*bm);
    *bm = only;
    return VDB_OK;
}

/* A re-ranked row's float32 vector (-1: every row), verified on first use. */
static int check_row(const void *ctx, int64_t row)
{
    return row < 0 ? vdb_coll_verify_all(ctx) : vdb_coll_verify_rows(ctx, (size_t)row, (size_t)row + 1);
}

/* Flat search through codes scans every row's code: with a filter matching few rows the float32
 * scan of just those rows is cheaper. */
static int codes_worth_it(const vdb_collection *c, const uint64_t *bm)
{
    if (!c->codes || !vdb_codes_trained(c->codes)) return 0;
    if (!bm) return 1;
    size_t allowed = 0;
    for (size_t w = 0; w < (c->n_rows + 63) / 64; w++) allowed += (size_t)__builtin_popcountll(bm[w]);
    return allowed * 4 >= c->n_rows;
}

static _Thread_local size_t last_reranked;

size_t vdb_collection_last_reranked(void) { return last_reranked; }

int vdb_collection_query(vdb_collection *c, const vdb_query_request *req, vdb_result **out)
{
    uint64_t *bm = NULL;
    float *dist = NULL;
    int64_t *rows = NULL;
    size_t *counts = NULL;
    int rc;
    *out = NULL;
    pthread_rwlock_rdlock(&c->lock);
    size_t nq = req->nq, k = req->k;
    if (c->dim > 0 && req->dim != c->dim) {
        rc = vdb_set_error(VDB_EDIM, "Collection expecting embedding with dimension of %lld, got %lld",
                           (long long)c->dim, (long long)req->dim);
        goto done;
    }
    if (c->n_live == 0 || c->dim == 0) {
        k = 0;
    } else if (k > c->n_live) {
        k = c->n_live;
    }
    if ((rc = allowed_rows(c, req->filter, &bm))) goto done;
    if (req->ids && (rc = restrict_to_ids(c, req->ids, req->id_lens, req->n_ids, &bm))) goto done;
    int restricted = req->filter || req->ids;
    counts = calloc(nq ? nq : 1, sizeof *counts);
    dist = malloc((nq * k > 0 ? nq * k : 1) * sizeof *dist);
    rows = malloc((nq * k > 0 ? nq * k : 1) * sizeof *rows);
    if (!counts || !dist || !rows) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for %zu x %zu results", nq, k);
        goto done;
    }
    if (k > 0 && c->ivf) {
        int64_t n_probe = req->n_probe > 0 ? req->n_probe : vdb_coll_n_probe(c);
        size_t n_lists = vdb_ivf_n_lists(c->ivf), allowed = c->n_live;
        if (bm) {
            allowed = 0;
            for (size_t w = 0; w < (c->n_rows + 63) / 64; w++) allowed += (size_t)__builtin_popcountll(bm[w]);
        }
        /* What n_probe lists hold on average: a filter matching no more rows is cheaper to answer
         * exactly over its matches (and exact) than by probing lists mostly full of non-matches.
         * With every list probed the scan is exact already and needs no copy. */
        double probed = (double)c->n_live * (double)n_probe / (double)n_lists;
        if (restricted && n_probe < (int64_t)n_lists && (double)allowed <= probed)
            rc = search_allowed_exact(c, bm, allowed, req->queries, nq, k, dist, rows);
        else if (c->codes)
            rc = vdb_codes_search_ivf(c->codes, c->ivf, req->queries, nq, k, (size_t)n_probe, bm, c->n_rows, dist, rows);
        else
            rc = vdb_ivf_search(c->ivf, req->queries, nq, k, (size_t)n_probe, bm, c->n_rows, dist, rows);
        last_reranked = c->codes ? vdb_codes_last_reranked() : vdb_ivf_pq4_m(c->ivf) ? vdb_ivf_last_reranked() : 0;
        /* A damaged chunk found on a worker thread: its message, set again on this one. */
        if (rc == VDB_ECORRUPT && (vdb_ivf_error(c->ivf) || vdb_codes_error(c->codes))) rc = VDB_ECORRUPT;
        if (rc) goto done;
    } else if (k > 0) {
        vdb_vec_range ranges[2] = {{c->base, 0, c->n_base}, {c->tail, (int64_t)c->n_base, c->n_rows - c->n_base}};
        last_reranked = 0;
        if (codes_worth_it(c, bm)) {
            rc = vdb_codes_search_flat(c->codes, ranges, 2, bm, req->queries, nq, k, dist, rows, check_row, c);
            last_reranked = vdb_codes_last_reranked();
            /* A damaged chunk found on a worker thread: its message, set again on this one. */
            if (rc == VDB_ECORRUPT && ((c->vmap && vdb_vecmap_error(c->vmap)) || vdb_codes_error(c->codes)))
                rc = VDB_ECORRUPT;
        } else if ((rc = vdb_coll_verify_all(c)) == VDB_OK) {
            rc = vdb_flat_search(c->cfg.metric, (size_t)c->dim, ranges, 2, bm, req->queries, nq, k, dist, rows);
        }
        if (rc) goto done;
    }
    /* Pack each query's hits (padding rows are -1) to the front. */
    size_t total = 0;
    for (size_t q = 0; q < nq; q++) {
        for (size_t j = 0; j < k; j++) {
            if (rows[q * k + j] < 0) break;
            rows[total] = rows[q * k + j];
            dist[total++] = dist[q * k + j];
            counts[q]++;
        }
    }
    if ((rc = vdb_result_build(c, rows, total, dist, req->include, out))) goto done;
    (*out)->nq = nq;
    (*out)->counts = counts;
    counts = NULL;
done:
    pthread_rwlock_unlock(&c->lock);
    free(bm);
    free(dist);
    free(rows);
    free(counts);
    return rc;
}

int vdb_collection_stats_get(vdb_collection *c, vdb_collection_stats *out)
{
    pthread_rwlock_rdlock(&c->lock);
    out->count = (int64_t)c->n_live;
    out->dim = c->dim;
    out->metric = c->cfg.metric;
    out->rows_total = (int64_t)c->n_rows;
    out->wal_bytes = (int64_t)c->wal_end;
    out->generation = (int64_t)c->generation;
    out->bytes_on_disk = c->dir ? (int64_t)(c->snapshot_bytes + c->wal_end) : 0;
    pthread_mutex_lock(&c->meta_mu); /* a reader may be loading it */
    size_t meta_bytes = vdb_meta_bytes(c->meta);
    pthread_mutex_unlock(&c->meta_mu);
    out->bytes_in_memory = (int64_t)(c->tail_cap * (size_t)(c->dim > 0 ? c->dim : 0) * sizeof(float) + vdb_vecmap_len(c->vmap) +
                                     c->ids.cap + meta_bytes +
                                     c->cap_rows * (sizeof(uint64_t) + sizeof(uint32_t)) +
                                     c->n_slots * sizeof(int64_t));
    out->ivf_trained = c->ivf != NULL;
    out->n_lists = c->ivf ? (int64_t)vdb_ivf_n_lists(c->ivf) : c->cfg.n_clusters;
    out->n_probe = vdb_coll_n_probe(c);
    out->list_min = out->list_max = out->added_since_training = out->count_at_training = 0;
    out->list_mean = 0;
    out->batch_depth = c->batch_depth;
    out->quantization = c->cfg.quantization;
    out->bytes_in_memory += (int64_t)vdb_codes_bytes(c->codes);
    if (c->ivf) {
        vdb_ivf_stats is;
        vdb_ivf_stats_get(c->ivf, &is);
        out->list_min = (int64_t)is.list_min;
        out->list_max = (int64_t)is.list_max;
        out->list_mean = is.list_mean;
        out->added_since_training = (int64_t)is.added_since_train;
        out->count_at_training = (int64_t)is.vectors_at_train;
        out->bytes_in_memory += (int64_t)is.bytes_in_memory;
    }
    pthread_rwlock_unlock(&c->lock);
    return VDB_OK;
}
