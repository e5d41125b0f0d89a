#include "vdb_collection.h"

#include <errno.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdb_bytes.h"
#include "vdb_codes.h"
#include "vdb_error.h"
#include "vdb_filter.h"
#include "vdb_flat.h"
#include "vdb_ivf.h"
#include "vdb_kmeans.h"
#include "vdb_meta.h"
#include "vdb_store.h"
#include "vdb_topk.h"

#define NONE32 UINT32_MAX
#define WAL_WRITE 1 /* log record type: one vdb_collection_write batch */
/* Checkpoint when the log outgrows this and half the snapshot, so replay stays short. */
#define CHECKPOINT_WAL_BYTES (64u << 20)
#define CLOSE_CHECKPOINT_WAL_BYTES (4u << 20)

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

    /* Rows [0, n_base) live in the mapped snapshot, [n_base, n_rows) in tail. */
    void *map;
    size_t map_len;
    float *base;
    size_t n_base;
    float *tail;
    size_t tail_cap; /* rows */

    size_t n_rows, n_live, cap_rows;
    uint64_t *live; /* bitmap over rows */
    uint64_t *id_off;
    uint32_t *id_len;
    uint64_t *id_hash;
    vdb_buf ids; /* id bytes */

    int64_t *slots; /* open-addressing id -> row table, -1 empty */
    size_t n_slots;

    vdb_meta *meta;

    char warning[512]; /* the last failure of maintenance after a write (see after_write) */
    int has_warning;

    vdb_ivf *ivf; /* once trained, the owner of every live row's vector (base/tail are empty) */
    int batch_depth;
    vdb_codes *codes; /* quantized collections: a code per row, searched first (vdb_codes.h) */
};

#define IVF_SEED 0x5eedULL

/* ---- small helpers ---- */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static inline const float *row_vector(const vdb_collection *c, size_t row)
{
    if (c->ivf) return vdb_ivf_vector(c->ivf, (int64_t)row);
    return row < c->n_base ? c->base + row * (size_t)c->dim : c->tail + (row - c->n_base) * (size_t)c->dim;
}

static inline float *row_vector_mut(vdb_collection *c, size_t row)
{
    return (float *)row_vector(c, row);
}

static inline int is_live(const vdb_collection *c, size_t row) { return (c->live[row >> 6] >> (row & 63)) & 1; }

/* allowed: a bitmap from allowed_rows (already ANDed with the live rows), or NULL = every live row. */
static inline int row_allowed(const vdb_collection *c, const uint64_t *allowed, size_t row)
{
    return allowed ? (int)((allowed[row >> 6] >> (row & 63)) & 1) : is_live(c, row);
}

static int refuse_writes(const vdb_collection *c)
{
    return vdb_set_error(VDB_EREADONLY, "collection at '%s' refuses writes after an I/O error; reopen it",
                         c->dir ? c->dir : "(memory)");
}

static int64_t lookup(const vdb_collection *c, const char *id, size_t len, uint64_t h)
{
    if (!c->n_slots) return -1;
    size_t mask = c->n_slots - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
        int64_t r = c->slots[s];
        if (r < 0) return -1;
        if (c->id_hash[r] == h && c->id_len[r] == len && memcmp(c->ids.data + c->id_off[r], id, len) == 0) return r;
    }
}

static void slot_insert(vdb_collection *c, int64_t row)
{
    size_t mask = c->n_slots - 1;
    size_t s = c->id_hash[row] & mask;
    while (c->slots[s] >= 0) s = (s + 1) & mask;
    c->slots[s] = row;
}

/* Linear-probing delete by backward shift: keeps every probe chain unbroken. */
static void slot_remove(vdb_collection *c, int64_t row)
{
    size_t mask = c->n_slots - 1, s = c->id_hash[row] & mask;
    while (c->slots[s] != row) s = (s + 1) & mask;
    size_t hole = s;
    for (size_t j = (hole + 1) & mask; c->slots[j] >= 0; j = (j + 1) & mask) {
        size_t home = c->id_hash[c->slots[j]] & mask;
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            c->slots[hole] = c->slots[j];
            hole = j;
        }
    }
    c->slots[hole] = -1;
}

static int rebuild_slots(vdb_collection *c, size_t want_rows)
{
    size_t n = 16;
    while (n < want_rows * 2) n *= 2;
    int64_t *slots = malloc(n * sizeof *slots);
    if (!slots) return vdb_set_error(VDB_ENOMEM, "out of memory growing the id table");
    free(c->slots);
    c->slots = slots;
    c->n_slots = n;
    memset(slots, 0xff, n * sizeof *slots);
    for (size_t r = 0; r < c->n_rows; r++)
        if (is_live(c, r)) slot_insert(c, (int64_t)r);
    return VDB_OK;
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
        while (cap < need) cap *= 2;
        size_t old_words = (c->cap_rows + 63) / 64, new_words = (cap + 63) / 64;
        if (grow_array((void **)&c->id_off, sizeof *c->id_off, c->cap_rows, cap) ||
            grow_array((void **)&c->id_len, sizeof *c->id_len, c->cap_rows, cap) ||
            grow_array((void **)&c->id_hash, sizeof *c->id_hash, c->cap_rows, cap) ||
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
    if ((c->n_live + extra) * 2 > c->n_slots && (rc = rebuild_slots(c, c->n_live + extra))) return rc;
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
    if (b->vectors && op != VDB_OP_DELETE) {
        if (b->dim <= 0) return vdb_set_error(VDB_EINVAL, "vectors need a positive dimension");
        if (c->dim > 0 && b->dim != c->dim)
            return vdb_set_error(VDB_EDIM, "Collection expecting embedding with dimension of %lld, got %lld",
                                 (long long)c->dim, (long long)b->dim);
    }
    if (op == VDB_OP_ADD && !b->vectors) return vdb_set_error(VDB_EINVAL, "add needs an embedding for every record");
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
        if (b->id_lens[i] == 0) {
            rc = vdb_set_error(VDB_EINVAL, "record %zu has an empty id", i);
            goto fail;
        }
        p->hash[i] = hash_bytes(b->ids[i], b->id_lens[i]);
        p->row[i] = lookup(c, b->ids[i], b->id_lens[i], p->hash[i]);
        const uint8_t *meta = b->metas ? b->metas[i] : NULL;
        size_t meta_len = meta ? b->meta_lens[i] : 0;
        if (meta && op != VDB_OP_DELETE && (rc = vdb_meta_blob_check(meta, meta_len, op != VDB_OP_ADD))) {
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
        if (act == ACT_APPEND && lookup(c, b->ids[i], b->id_lens[i], p->hash[i]) >= 0)
            act = op == VDB_OP_ADD ? ACT_SKIP : ACT_UPDATE; /* the id appeared earlier in this batch */
        if (act == ACT_UPDATE && row < 0) row = lookup(c, b->ids[i], b->id_lens[i], p->hash[i]);
        if (status) status[i] = act != ACT_SKIP;
        switch (act) {
        case ACT_APPEND: {
            size_t r = c->n_rows++;
            c->id_off[r] = c->ids.len;
            c->id_len[r] = b->id_lens[i];
            c->id_hash[r] = p->hash[i];
            vdb_buf_append(&c->ids, b->ids[i], b->id_lens[i]); /* reserved */
            if (c->ivf)
                queue_ivf(c, p, (int64_t)r, b->vectors + i * d);
            else
                memcpy(row_vector_mut(c, r), b->vectors + i * d, d * sizeof(float));
            if (c->codes) vdb_codes_set(c->codes, r, b->vectors + i * d);
            vdb_meta_set(c->meta, r, 1, meta, meta_len, 1, doc, doc ? b->doc_lens[i] : 0);
            set_live(c, r, 1);
            c->n_live++;
            slot_insert(c, (int64_t)r);
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
            slot_remove(c, row);
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

/* ---- log payload: op, n, dim, flags, ids, vectors, metas, docs ---- */

static int encode_strings(vdb_buf *out, const char *const *s, const uint32_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (vdb_buf_u32(out, s[i] ? lens[i] : NONE32)) return -1;
        if (s[i] && vdb_buf_append(out, s[i], lens[i])) return -1;
    }
    return 0;
}

static int encode_write(int op, const vdb_batch *b, vdb_buf *out)
{
    uint8_t head[14];
    head[0] = (uint8_t)op;
    vdb_put_u32(head + 1, (uint32_t)b->n);
    vdb_put_u64(head + 5, b->vectors ? (uint64_t)b->dim : 0);
    head[13] = (uint8_t)((b->vectors ? 1 : 0) | (b->metas ? 2 : 0) | (b->docs ? 4 : 0));
    if (vdb_buf_append(out, head, sizeof head) || encode_strings(out, b->ids, b->id_lens, b->n) ||
        (b->vectors && vdb_buf_append(out, b->vectors, b->n * (size_t)b->dim * sizeof(float))) ||
        (b->metas && encode_strings(out, (const char *const *)b->metas, b->meta_lens, b->n)) ||
        (b->docs && encode_strings(out, b->docs, b->doc_lens, b->n)))
        return vdb_set_error(VDB_ENOMEM, "out of memory encoding a write of %zu records", b->n);
    return VDB_OK;
}

typedef struct {
    vdb_batch b;
    int op;
    const char **ids, **metas, **docs;
    uint32_t *id_lens, *meta_lens, *doc_lens;
    float *vectors; /* aligned copy */
} decoded_write;

static void decoded_free(decoded_write *w)
{
    free(w->ids);
    free(w->metas);
    free(w->docs);
    free(w->id_lens);
    free(w->meta_lens);
    free(w->doc_lens);
    free(w->vectors);
}

/* text: the bytes must be valid UTF-8 (ids, documents); metadata blobs are checked on their own. */
static int decode_strings(vdb_reader *r, size_t n, const char **s, uint32_t *lens, int allow_none, int text)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = NULL;
        if (vdb_take_u32(r, &lens[i])) return -1;
        if (lens[i] == NONE32) {
            if (!allow_none) return -1;
            s[i] = NULL;
            lens[i] = 0;
            continue;
        }
        if (vdb_take(r, lens[i], &p) || (text && !vdb_utf8_valid(p, lens[i]))) return -1;
        s[i] = (const char *)p;
    }
    return 0;
}

static int decode_write(const uint8_t *payload, size_t len, decoded_write *w)
{
    vdb_reader r = {payload, len};
    const uint8_t *head, *vec;
    memset(w, 0, sizeof *w);
    if (vdb_take(&r, 14, &head)) return -1;
    w->op = head[0];
    size_t n = vdb_get_u32(head + 1);
    uint64_t dim = vdb_get_u64(head + 5);
    uint8_t flags = head[13];
    if (n > len || dim > (1u << 20) || ((flags & 1) && dim == 0)) return -1;
    w->ids = calloc(n + 1, sizeof *w->ids);
    w->id_lens = calloc(n + 1, sizeof *w->id_lens);
    if (!w->ids || !w->id_lens || decode_strings(&r, n, w->ids, w->id_lens, 0, 1)) return -1;
    if (flags & 1) {
        size_t bytes = n * (size_t)dim * sizeof(float);
        if (bytes / sizeof(float) / (dim ? dim : 1) != n || vdb_take(&r, bytes, &vec)) return -1;
        if (!(w->vectors = malloc(bytes ? bytes : 1))) return -1;
        memcpy(w->vectors, vec, bytes);
    }
    if (flags & 2) {
        w->metas = calloc(n + 1, sizeof *w->metas);
        w->meta_lens = calloc(n + 1, sizeof *w->meta_lens);
        if (!w->metas || !w->meta_lens || decode_strings(&r, n, w->metas, w->meta_lens, 1, 0)) return -1;
    }
    if (flags & 4) {
        w->docs = calloc(n + 1, sizeof *w->docs);
        w->doc_lens = calloc(n + 1, sizeof *w->doc_lens);
        if (!w->docs || !w->doc_lens || decode_strings(&r, n, w->docs, w->doc_lens, 1, 1)) return -1;
    }
    if (r.left) return -1;
    w->b = (vdb_batch){n, (int64_t)dim, w->ids, w->id_lens, w->vectors, (const uint8_t *const *)w->metas,
                       w->meta_lens, w->docs, w->doc_lens};
    return 0;
}

/* ---- checkpoint, compaction ---- */

static int maybe_checkpoint(vdb_collection *c);
static void after_write(vdb_collection *c);
static int codes_open(vdb_collection *c, const char *gdir, size_t n_rows);
static int64_t current_n_probe(const vdb_collection *c);

/* Drops dead rows: rows keep their order; vectors move to one heap array. */
static int compact(vdb_collection *c)
{
    size_t n = c->n_live, d = (size_t)c->dim, k = 0;
    if (c->n_live == c->n_rows) return VDB_OK;
    int rc = VDB_OK;
    float *vec = NULL;
    int64_t *old_to_new = NULL;
    vdb_meta *meta = NULL;
    vdb_buf ids = {0};
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
        uint64_t off = ids.len;
        if (vdb_buf_append(&ids, c->ids.data + c->id_off[r], c->id_len[r])) goto nomem;
        c->id_off[k] = off; /* k <= r: rewriting in place is safe */
        c->id_len[k] = c->id_len[r];
        c->id_hash[k] = c->id_hash[r];
        k++;
    }
    if (c->ivf && (rc = vdb_ivf_renumber(c->ivf, old_to_new, c->n_rows))) goto cleanup;
    /* Nothing can fail from here on. */
    if (c->codes) vdb_codes_compact(c->codes, c->live, c->n_rows);
    vdb_vectors_unmap(c->map, c->map_len);
    c->map = NULL;
    c->map_len = 0;
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
    rc = rebuild_slots(c, n);
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory compacting the collection");
cleanup:
    free(vec);
    free(old_to_new);
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
            vdb_buf_u32(out, mb ? (uint32_t)ml : NONE32) || (mb && vdb_buf_append(out, mb, ml)) ||
            vdb_buf_u32(out, doc ? (uint32_t)dl : NONE32) || (doc && vdb_buf_append(out, doc, dl)))
            return vdb_set_error(VDB_ENOMEM, "out of memory writing a snapshot");
    }
    return VDB_OK;
}

static int checkpoint_locked(vdb_collection *c)
{
    char gdir[4096], path[4096], old_wal[4096], old_gen[4096];
    vdb_buf rec = {0};
    int rc, fd = -1;
    if (c->failed) return refuse_writes(c);
    if ((rc = compact(c))) return rc;
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
        uint64_t rows[2] = {c->n_base, c->n_rows - c->n_base};
        path_join(path, sizeof path, gdir, "vectors.bin", 0, 0);
        if ((rc = vdb_vectors_write(path, c->cfg.metric, (uint64_t)c->dim, chunks, rows, 2))) goto cleanup;
        vector_bytes = rows[0] + rows[1];
        vector_bytes *= (uint64_t)c->dim * sizeof(float);
    }
    if ((rc = encode_records(c, &rec))) goto cleanup;
    path_join(path, sizeof path, gdir, "records.bin", 0, 0);
    if ((rc = vdb_records_write(path, c->n_rows, rec.data, rec.len))) goto cleanup;
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
    c->snapshot_bytes = rec.len + vector_bytes;
    vdb_remove_tree(old_wal);
    vdb_remove_tree(old_gen);
cleanup:
    vdb_buf_free(&rec);
    return rc;
}

static int maybe_checkpoint(vdb_collection *c)
{
    int many_dead = c->n_rows - c->n_live > 1024 && (c->n_rows - c->n_live) * 2 > c->n_rows;
    int long_log = c->dir && c->wal_end > CHECKPOINT_WAL_BYTES && c->wal_end > c->snapshot_bytes / 2;
    return many_dead || long_log ? checkpoint_locked(c) : VDB_OK;
}

/* ---- open / close ---- */

static int replay_record(void *ctx, uint8_t type, const uint8_t *payload, size_t len)
{
    vdb_collection *c = ctx;
    decoded_write w;
    write_plan p;
    int rc;
    char why[512];
    if (type != WAL_WRITE || decode_write(payload, len, &w)) {
        if (type == WAL_WRITE) decoded_free(&w);
        return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: it holds a record this version cannot read (type %u)",
                             c->wal_path, type);
    }
    if ((rc = plan_write(c, w.op, &w.b, &p))) {
        decoded_free(&w);
        if (rc == VDB_ENOMEM) return rc;
        snprintf(why, sizeof why, "%s", vdb_last_error()); /* the message buffer is about to be rewritten */
        return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: it holds an invalid write (%s)", c->wal_path, why);
    }
    rc = apply_write(c, w.op, &w.b, &p, NULL);
    plan_free(&p, w.b.n);
    decoded_free(&w);
    return rc;
}

static int load_records(vdb_collection *c, const char *path, uint64_t n_rows_expected)
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
    if ((rc = reserve(c, n_rows, len, len, 0))) goto cleanup;
    vdb_reader r = {payload, len};
    for (uint64_t i = 0; i < n_rows; i++) {
        const char *s[3];
        uint32_t l[3];
        if (decode_strings(&r, 1, &s[0], &l[0], 0, 1) || l[0] == 0 || decode_strings(&r, 1, &s[1], &l[1], 1, 0) ||
            decode_strings(&r, 1, &s[2], &l[2], 1, 1)) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (record %llu)", path, (unsigned long long)i);
            goto cleanup;
        }
        if (s[1] && vdb_meta_blob_check((const uint8_t *)s[1], l[1], 0)) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (metadata of record %llu)", path, (unsigned long long)i);
            goto cleanup;
        }
        uint64_t h = hash_bytes(s[0], l[0]);
        if (lookup(c, s[0], l[0], h) >= 0) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (id '%.*s' repeated)", path, (int)l[0], s[0]);
            goto cleanup;
        }
        size_t row = c->n_rows++;
        c->id_off[row] = c->ids.len;
        c->id_len[row] = l[0];
        c->id_hash[row] = h;
        vdb_buf_append(&c->ids, s[0], l[0]);
        vdb_meta_set(c->meta, row, 1, (const uint8_t *)s[1], l[1], 1, s[2], l[2]);
        set_live(c, row, 1);
        c->n_live++;
        slot_insert(c, (int64_t)row);
    }
    if (r.left) rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (trailing bytes)", path);
cleanup:
    free(payload);
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
    vdb_vectors_unmap(c->map, c->map_len);
    free(c->tail);
    free(c->live);
    free(c->id_off);
    free(c->id_len);
    free(c->id_hash);
    free(c->slots);
    vdb_buf_free(&c->ids);
    vdb_meta_free(c->meta);
    vdb_ivf_free(c->ivf);
    vdb_codes_free(c->codes);
    pthread_rwlock_destroy(&c->lock);
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
    if ((rc = vdb_meta_create(&c->meta))) goto fail;
    if ((rc = rebuild_slots(c, 0))) goto fail;
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
        } else if (c->dim > 0) {
            path_join(path, sizeof path, gdir, "vectors.bin", 0, 0);
            if ((rc = vdb_vectors_map(path, m.metric, m.dim, &n_rows, &c->base, &c->map, &c->map_len))) goto fail;
            c->n_base = (size_t)n_rows;
            c->snapshot_bytes = c->map_len;
        }
        path_join(path, sizeof path, gdir, "records.bin", 0, 0);
        if ((rc = load_records(c, path, n_rows))) goto fail;
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
    if (c->dir && !c->failed && c->wal_end >= CLOSE_CHECKPOINT_WAL_BYTES) rc = checkpoint_locked(c);
    collection_free(c);
    return rc;
}

int vdb_collection_checkpoint(vdb_collection *c)
{
    pthread_rwlock_wrlock(&c->lock);
    int rc = checkpoint_locked(c);
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

/* ---- writes ---- */

static int log_write(vdb_collection *c, int op, const vdb_batch *b)
{
    vdb_buf payload = {0};
    int rc = encode_write(op, b, &payload);
    if (rc == VDB_OK) {
        rc = vdb_wal_append(c->wal_fd, c->wal_path, &c->wal_end, WAL_WRITE, payload.data, payload.len, c->cfg.durable);
        /* After a failed write or sync the file's state is unknown (fsyncgate): stop writing. */
        if (rc == VDB_EIO) c->failed = 1;
    }
    vdb_buf_free(&payload);
    return rc;
}

/* One write under the write lock: plan (validate, reserve), log, apply, then maintenance. */
static int write_locked(vdb_collection *c, int op, const vdb_batch *b, uint8_t *status)
{
    write_plan p;
    int rc;
    if (c->failed) return refuse_writes(c);
    if ((rc = plan_write(c, op, b, &p))) return rc;
    if (c->dir && (rc = log_write(c, op, b))) {
        plan_free(&p, b->n);
        return rc;
    }
    rc = apply_write(c, op, b, &p, status);
    plan_free(&p, b->n);
    if (rc == VDB_OK) after_write(c);
    return rc;
}

int vdb_collection_write(vdb_collection *c, int op, const vdb_batch *b, uint8_t *status)
{
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
        int rc = vdb_filter_eval(f, c->meta, c->n_rows, bm);
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

int vdb_collection_delete_where(vdb_collection *c, const vdb_filter *f, int64_t *n_deleted)
{
    uint64_t *bm = NULL;
    const char **ids = NULL;
    uint32_t *lens = NULL;
    size_t n = 0;
    int rc;
    *n_deleted = 0;
    /* Resolve the matches and log them as a delete by id under one write lock: atomic. */
    pthread_rwlock_wrlock(&c->lock);
    if ((rc = allowed_rows(c, f, &bm))) goto done;
    ids = malloc((c->n_live + 1) * sizeof *ids);
    lens = malloc((c->n_live + 1) * sizeof *lens);
    if (!ids || !lens) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory deleting by filter");
        goto done;
    }
    for (size_t r = 0; r < c->n_rows; r++) {
        if (!row_allowed(c, bm, r)) continue;
        ids[n] = (const char *)c->ids.data + c->id_off[r];
        lens[n++] = c->id_len[r];
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

/* ---- results ---- */

void vdb_result_free(vdb_result *r)
{
    if (!r) return;
    free(r->counts);
    free(r->vectors);
    free(r->distances);
    free(r->id_off);
    free(r->meta_off);
    free(r->doc_off);
    free(r->id_len);
    free(r->meta_len);
    free(r->doc_len);
    free(r->arena);
    free(r);
}

/* Copies rows[0..n) (all live) into a new result. dists may be NULL. */
static int build_result(const vdb_collection *c, const int64_t *rows, size_t n, const float *dists, unsigned include,
                        vdb_result **out)
{
    size_t d = (size_t)c->dim, bytes = 0;
    vdb_result *r = calloc(1, sizeof *r);
    if (!r) goto nomem;
    r->n = n;
    r->dim = c->dim;
    size_t cnt = n ? n : 1;
    r->id_off = malloc(cnt * sizeof(uint64_t));
    r->meta_off = malloc(cnt * sizeof(uint64_t));
    r->doc_off = malloc(cnt * sizeof(uint64_t));
    r->id_len = malloc(cnt * sizeof(uint32_t));
    r->meta_len = malloc(cnt * sizeof(uint32_t));
    r->doc_len = malloc(cnt * sizeof(uint32_t));
    if (!r->id_off || !r->meta_off || !r->doc_off || !r->id_len || !r->meta_len || !r->doc_len) goto nomem;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *mb;
        const char *doc;
        size_t ml, dl;
        vdb_meta_get(c->meta, (size_t)rows[i], &mb, &ml, &doc, &dl);
        bytes += c->id_len[rows[i]];
        if (include & VDB_INC_METAS) bytes += ml;
        if (include & VDB_INC_DOCS) bytes += dl;
    }
    if (!(r->arena = malloc(bytes ? bytes : 1))) goto nomem;
    if ((include & VDB_INC_VECTORS) && !(r->vectors = malloc(cnt * (d ? d : 1) * sizeof(float)))) goto nomem;
    if ((include & VDB_INC_DISTANCES) && !(r->distances = malloc(cnt * sizeof(float)))) goto nomem;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t row = (size_t)rows[i];
        const uint8_t *mb;
        const char *doc;
        size_t ml, dl;
        vdb_meta_get(c->meta, row, &mb, &ml, &doc, &dl);
        r->id_off[i] = pos;
        r->id_len[i] = c->id_len[row];
        memcpy(r->arena + pos, c->ids.data + c->id_off[row], c->id_len[row]);
        pos += c->id_len[row];
        r->meta_len[i] = r->doc_len[i] = NONE32;
        if ((include & VDB_INC_METAS) && mb) {
            r->meta_off[i] = pos;
            r->meta_len[i] = (uint32_t)ml;
            memcpy(r->arena + pos, mb, ml);
            pos += ml;
        }
        if ((include & VDB_INC_DOCS) && doc) {
            r->doc_off[i] = pos;
            r->doc_len[i] = (uint32_t)dl;
            memcpy(r->arena + pos, doc, dl);
            pos += dl;
        }
        if (r->vectors) memcpy(r->vectors + i * d, row_vector(c, row), d * sizeof(float));
        if (r->distances) r->distances[i] = dists ? dists[i] : 0.0f;
    }
    *out = r;
    return VDB_OK;
nomem:
    vdb_result_free(r);
    return vdb_set_error(VDB_ENOMEM, "out of memory building a result of %zu records", n);
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
            int64_t r = lookup(c, req->ids[i], req->id_lens[i], hash_bytes(req->ids[i], req->id_lens[i]));
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
    rc = build_result(c, rows, n, NULL, req->include & ~VDB_INC_DISTANCES, out);
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
    counts = calloc(nq ? nq : 1, sizeof *counts);
    dist = malloc((nq * k > 0 ? nq * k : 1) * sizeof *dist);
    rows = malloc((nq * k > 0 ? nq * k : 1) * sizeof *rows);
    if (!counts || !dist || !rows) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for %zu x %zu results", nq, k);
        goto done;
    }
    if (k > 0 && c->ivf) {
        int64_t n_probe = req->n_probe > 0 ? req->n_probe : current_n_probe(c);
        size_t n_lists = vdb_ivf_n_lists(c->ivf), allowed = c->n_live;
        if (bm) {
            allowed = 0;
            for (size_t w = 0; w < (c->n_rows + 63) / 64; w++) allowed += (size_t)__builtin_popcountll(bm[w]);
        }
        /* What n_probe lists hold on average: a filter matching no more rows is cheaper to answer
         * exactly over its matches (and exact) than by probing lists mostly full of non-matches.
         * With every list probed the scan is exact already and needs no copy. */
        double probed = (double)c->n_live * (double)n_probe / (double)n_lists;
        if (req->filter && n_probe < (int64_t)n_lists && (double)allowed <= probed)
            rc = search_allowed_exact(c, bm, allowed, req->queries, nq, k, dist, rows);
        else if (c->codes)
            rc = vdb_codes_search_ivf(c->codes, c->ivf, req->queries, nq, k, (size_t)n_probe, bm, c->n_rows, dist, rows);
        else
            rc = vdb_ivf_search(c->ivf, req->queries, nq, k, (size_t)n_probe, bm, c->n_rows, dist, rows);
        if (rc) goto done;
    } else if (k > 0) {
        vdb_vec_range ranges[2] = {{c->base, 0, c->n_base}, {c->tail, (int64_t)c->n_base, c->n_rows - c->n_base}};
        if (codes_worth_it(c, bm))
            rc = vdb_codes_search_flat(c->codes, ranges, 2, bm, req->queries, nq, k, dist, rows);
        else
            rc = vdb_flat_search(c->cfg.metric, (size_t)c->dim, ranges, 2, bm, req->queries, nq, k, dist, rows);
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
    if ((rc = build_result(c, rows, total, dist, req->include, out))) goto done;
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
    out->bytes_in_memory = (int64_t)(c->tail_cap * (size_t)(c->dim > 0 ? c->dim : 0) * sizeof(float) + c->map_len +
                                     c->ids.cap + vdb_meta_bytes(c->meta) +
                                     c->cap_rows * (sizeof(uint64_t) * 2 + sizeof(uint32_t)) +
                                     c->n_slots * sizeof(int64_t));
    out->ivf_trained = c->ivf != NULL;
    out->n_lists = c->ivf ? (int64_t)vdb_ivf_n_lists(c->ivf) : c->cfg.n_clusters;
    out->n_probe = current_n_probe(c);
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

/* ---- IVF lifecycle ---- */

int64_t vdb_collection_default_n_probe(int64_t n_lists)
{
    /* max(16, ceil(3 sqrt(n_lists))), at most n_lists. Measured recall@10 through
     * Collection.query (sqrt(n) lists): real 384-d text embeddings (78k all-MiniLM-L6-v2, 279
     * lists -> 51) 0.977, where the earlier max(16, ceil(sqrt)) (17) gave 0.918; synthetic
     * clusters need fewer lists. Real embeddings spread their neighbours over more lists than
     * synthetic clusters do, and a user who sets no n_probe expects recall near a graph index's
     * (~0.99), so the default scans about 3x the lists of sqrt(n_lists); a tuned n_probe remains
     * the way to trade recall for speed. */
    int64_t p = 16;
    while (p * p < 9 * n_lists) p++;
    return p > n_lists && n_lists > 0 ? n_lists : p;
}

static int64_t current_n_probe(const vdb_collection *c)
{
    int64_t set = __atomic_load_n(&c->cfg.n_probe, __ATOMIC_RELAXED); /* see vdb_collection_set_n_probe */
    if (set > 0) return set;
    int64_t lists = c->ivf ? (int64_t)vdb_ivf_n_lists(c->ivf) : c->cfg.n_clusters;
    return vdb_collection_default_n_probe(lists);
}

static size_t lists_for(const vdb_collection *c, size_t n)
{
    if (c->cfg.n_clusters > 0) return (size_t)c->cfg.n_clusters;
    if (n < 2) return 1;
    size_t k = 1;
    while ((k + 1) * (k + 1) <= n) k++;
    if (n - k * k > k) k++; /* round(sqrt(n)) */
    return k;
}

/* Builds the index from the flat storage: train on a sample, add every live vector, then free the
 * flat copy. On failure the collection stays flat and unchanged. */
static int train_from_flat(vdb_collection *c, size_t n_lists)
{
    int rc;
    vdb_ivf *ivf = NULL;
    float *sample = NULL;
    size_t *idx = NULL;
    int64_t *rows = NULL;
    if ((rc = compact(c))) return rc; /* live rows become 0..n-1, contiguous in base then tail */
    size_t n = c->n_rows, d = (size_t)c->dim;
    if (n < n_lists) return vdb_set_error(VDB_EINVAL, "cannot train %zu IVF lists on %zu vectors: fewer points than clusters", n_lists, n);
    size_t m = n < 256 * n_lists ? n : 256 * n_lists;
    sample = malloc(m * d * sizeof(float));
    idx = malloc(m * sizeof *idx);
    rows = malloc(n * sizeof *rows);
    if (!sample || !idx || !rows) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory training the index");
        goto cleanup;
    }
    vdb_kmeans_sample(n, m, IVF_SEED, idx);
    for (size_t i = 0; i < m; i++) memcpy(sample + i * d, row_vector(c, idx[i]), d * sizeof(float));
    for (size_t r = 0; r < n; r++) rows[r] = (int64_t)r;
    if ((rc = vdb_ivf_create(d, c->cfg.metric, n_lists, &ivf)) || (rc = vdb_ivf_train(ivf, sample, m, IVF_SEED)))
        goto cleanup;
    if (c->n_base && (rc = vdb_ivf_add(ivf, rows, c->base, c->n_base))) goto cleanup;
    if (n > c->n_base && (rc = vdb_ivf_add(ivf, rows + c->n_base, c->tail, n - c->n_base))) goto cleanup;
    vdb_ivf_mark_trained_contents(ivf); /* these n are the training state, not growth since */
    vdb_vectors_unmap(c->map, c->map_len);
    free(c->tail);
    c->map = NULL;
    c->map_len = 0;
    c->base = c->tail = NULL;
    c->n_base = c->tail_cap = 0;
    c->ivf = ivf;
    ivf = NULL;
cleanup:
    vdb_ivf_free(ivf);
    free(sample);
    free(idx);
    free(rows);
    return rc;
}

/* Keeps a message for vdb_collection_take_warning: something the caller should know, not a failure. */
static void note(vdb_collection *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->warning, sizeof c->warning, fmt, ap);
    va_end(ap);
    c->has_warning = 1;
}

/* Trains when the rules say so (see vdb_collection.h); checkpoints after training. */
static int maybe_train(vdb_collection *c, int force)
{
    int rc = VDB_OK;
    if (!c->cfg.use_ivf || (c->batch_depth > 0 && !force)) return VDB_OK;
    size_t n = c->dim <= 0 ? 0 : c->n_live;
    if (!c->ivf) {
        size_t lists = lists_for(c, n);
        size_t need = lists * VDB_IVF_POINTS_PER_LIST;
        if (need < VDB_IVF_MIN_TRAIN) need = VDB_IVF_MIN_TRAIN;
        if (!force && n < need) return VDB_OK;
        if (n < lists) { /* k-means cannot train: stay exact, as the automatic rule does */
            note(c, "rebuild: %zu vectors are fewer than the %zu IVF lists to train; search stays exact "
                    "until the collection holds %zu vectors", n, lists, need);
            return VDB_OK;
        }
        rc = train_from_flat(c, lists);
    } else {
        vdb_ivf_stats is;
        vdb_ivf_stats_get(c->ivf, &is);
        uint64_t at_training = is.vectors_at_train > 0 ? is.vectors_at_train : 1;
        if (!force && is.added_since_train < at_training) return VDB_OK; /* not doubled yet */
        size_t lists = lists_for(c, n);
        if (lists > n) {
            /* Shrunk below its list count by deletes: neither a write nor rebuild fails for that. */
            if (force)
                note(c, "rebuild: %zu vectors are fewer than the %zu IVF lists to train; the index "
                        "is kept as it is", n, lists);
            return VDB_OK;
        }
        rc = vdb_ivf_retrain(c->ivf, lists, IVF_SEED);
        if (rc == VDB_ENOMEM) c->failed = 1; /* the index is complete but not as the log says */
    }
    if (rc == VDB_OK) rc = checkpoint_locked(c); /* persist the trained index: reopening never retrains */
    return rc;
}

/* ---- quantization codes (vdb_codes.h) ---- */

static const float *codes_vec(const void *ctx, size_t row) { return row_vector(ctx, row); }

/* The codes of an opened generation: codes.bin, or, when the generation has none (written without
 * quantization), encoded from its vectors. */
static int codes_open(vdb_collection *c, const char *gdir, size_t n_rows)
{
    char path[4096];
    struct stat st;
    if (!c->cfg.quantization) return VDB_OK;
    if (gdir && n_rows) {
        path_join(path, sizeof path, gdir, "codes.bin", 0, 0);
        if (stat(path, &st) == 0) return vdb_codes_read(path, c->cfg.metric, (size_t)c->dim, n_rows, &c->codes);
    }
    int rc = vdb_codes_create(c->cfg.metric, &c->codes);
    if (rc == VDB_OK && n_rows) rc = vdb_codes_retrain(c->codes, (size_t)c->dim, n_rows, c->live, codes_vec, c);
    return rc;
}

/* Ranges follow the data: re-derived when the collection has doubled since they were (amortized
 * O(d) per added vector; results never depend on it, only the re-rank count does). */
static int codes_maybe_retrain(vdb_collection *c)
{
    if (!c->codes || c->batch_depth > 0 || !vdb_codes_should_retrain(c->codes, c->n_live)) return VDB_OK;
    return vdb_codes_retrain(c->codes, (size_t)c->dim, c->n_rows, c->live, codes_vec, c);
}

/* Maintenance after a durable write: training and checkpoints. Its failure does not fail the
 * write, which is logged and applied already (the current generation stays valid); the message is
 * kept for vdb_collection_take_warning. */
static void after_write(vdb_collection *c)
{
    int rc = codes_maybe_retrain(c);
    if (rc == VDB_OK) rc = maybe_train(c, 0);
    if (rc == VDB_OK) rc = maybe_checkpoint(c);
    if (rc != VDB_OK) {
        snprintf(c->warning, sizeof c->warning, "%s", vdb_last_error());
        c->has_warning = 1;
    }
}

int vdb_collection_take_warning(vdb_collection *c, char *buf, size_t cap)
{
    pthread_rwlock_wrlock(&c->lock);
    int had = c->has_warning;
    if (had) snprintf(buf, cap, "%s", c->warning);
    c->has_warning = 0;
    pthread_rwlock_unlock(&c->lock);
    return had;
}

int vdb_collection_batch(vdb_collection *c, int begin)
{
    int rc = VDB_OK;
    pthread_rwlock_wrlock(&c->lock);
    if (begin) {
        c->batch_depth++;
    } else if (c->batch_depth == 0) {
        rc = vdb_set_error(VDB_EINVAL, "end of batch mode without a matching begin");
    } else if (--c->batch_depth == 0 && !c->failed) {
        after_write(c);
    }
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

int vdb_collection_set_n_probe(vdb_collection *c, int64_t n_probe)
{
    if (n_probe < 0) return vdb_set_error(VDB_EINVAL, "n_probe must be >= 1 (or 0 for the default), got %lld",
                                          (long long)n_probe);
    /* An atomic store, not the write lock: waiting behind a long write or a rebuild would stall the
     * caller (the Python client calls this under its own lock). */
    __atomic_store_n(&c->cfg.n_probe, n_probe, __ATOMIC_RELAXED);
    return VDB_OK;
}

int vdb_collection_rebuild(vdb_collection *c)
{
    int rc;
    pthread_rwlock_wrlock(&c->lock);
    if (!c->cfg.use_ivf)
        rc = vdb_set_error(VDB_EINVAL, "rebuild needs an IVF collection (create it with use_ivf=True)");
    else if (c->failed)
        rc = refuse_writes(c);
    else
        rc = maybe_train(c, 1);
    pthread_rwlock_unlock(&c->lock);
    return rc;
}
