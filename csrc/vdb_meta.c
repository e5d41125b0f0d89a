/* vdb_meta — metadata rows, documents and typed columns. See vdb_meta.h for the layout and the
 * failure model. */
#include "vdb_meta.h"

#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "vdb_bytes.h"
#include "vdb_error.h"

#define VDB_NONE UINT32_MAX
#define ROW_LIMIT ((size_t)UINT32_MAX - 1) /* sparse entries hold rows as u32 */

enum {
    DENSE_MIN_LIVE = 256, /* a key turns dense when it holds >= this many rows ... */
    DENSE_FRACTION = 4,   /* ... and at least 1/DENSE_FRACTION of all rows */
    COMPACT_SLACK = 64,   /* a sparse log is compacted when n_ent >= 2 * live + COMPACT_SLACK */
};

enum { FORM_SPARSE = 0, FORM_DENSE = 1, FORM_BLOB = 2 };

typedef struct {
    uint64_t meta_off, doc_off; /* doc_off with DOC_IN_ARENA: the document is in `arena` */
    uint32_t meta_len, doc_len; /* VDB_NONE: the row has none */
} meta_row;

#define DOC_IN_ARENA ((uint64_t)1 << 63)

/* Byte strings numbered 0, 1, ... in insertion order, with a hash index (linear probing). */
typedef struct {
    vdb_buf bytes;
    uint64_t *off;
    uint32_t *len;
    uint32_t *hash; /* low 32 bits of the hash: cheap compare and rehash */
    size_t n, cap;
    uint32_t *slots; /* id + 1; 0 = empty */
    size_t n_slots;  /* 0 or a power of two >= 2 * n */
} vdb_interner;

typedef struct {
    uint64_t stamp_old, stamp_new; /* vdb_meta_set: the key is in the row's old / new blob */
    uint8_t *tag;                  /* DENSE: cap rows */
    uint64_t *val;
    vdb_meta_entry *ent; /* SPARSE: the log; NULL while it has at most one entry, kept in `one` */
    vdb_meta_entry one;  /* (a key held by a single record costs no allocation of its own) */
    size_t cap;          /* DENSE: rows covered; SPARSE: capacity of ent */
    size_t n_ent, live;  /* SPARSE: entries, rows whose last entry holds a value */
    uint8_t form;
    uint8_t seen;
} meta_col;

/* Everything derived from the blobs: can be dropped and rebuilt from them at any time. */
typedef struct {
    vdb_interner keys; /* key id == column number */
    meta_col *cols;
    size_t cols_cap;
    vdb_interner strs;
    uint64_t *pool;
    size_t pool_len, pool_cap;
    size_t *dense; /* numbers of the dense columns (some may have turned BLOB since) */
    size_t n_dense, dense_cap;
    uint64_t stamp;
    size_t n_blob; /* columns in FORM_BLOB */
    int keys_blob; /* a key found no column: keys without one are evaluated from the blobs */
} meta_cols;

struct vdb_meta {
    meta_row *rows;
    size_t n_rows, cap_rows;
    vdb_buf arena; /* blobs, appended; replaced ones become garbage until compaction */
    vdb_buf docs;  /* documents, likewise: apart from the blobs so that substring scans read only
                      document bytes, and rows appended in order have adjacent documents. When the
                      docs buffer cannot grow during a set, the document goes to `arena` instead,
                      which vdb_meta_reserve sized for all the bytes of a write. */
    uint64_t *scratch; /* cap_rows bits, all zero between calls: sparse log compaction */
    meta_cols c;
};

#ifdef VDB_META_FAULTS
long vdb_meta_fault_countdown = 0;
int vdb_meta_force_blob = 0;
static int fault(void) { return vdb_meta_fault_countdown > 0 && --vdb_meta_fault_countdown == 0; }
#else
static int fault(void) { return 0; }
#endif

/* Every column allocation goes through here (fault injection in tests). */
static void *col_realloc(void *p, size_t n)
{
    if (fault()) return NULL;
    return realloc(p, n ? n : 1);
}

/* Capacity for need elements of size elem, doubling from cap (at least min); 0 on overflow. */
static size_t grown_cap(size_t cap, size_t need, size_t min, size_t elem)
{
    size_t c = cap ? cap : min;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return 0;
        c *= 2;
    }
    return c > SIZE_MAX / elem ? 0 : c;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xC2B2AE3D27D4EB4Full);
    uint64_t v;
    while (n >= 8) {
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    v = 0;
    if (n) memcpy(&v, p, n);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static size_t scalar_size(uint8_t tag)
{
    switch (tag) {
    case VDB_TAG_INT:
    case VDB_TAG_FLOAT: return 8;
    case VDB_TAG_BOOL: return 1;
    default: return 0;
    }
}

/* Skips one value of scalar tag; strings carry their own length. */
static int skip_scalar(vdb_reader *r, uint8_t tag)
{
    const uint8_t *p;
    if (tag == VDB_TAG_STR) {
        uint32_t len;
        return vdb_take_u32(r, &len) || vdb_take(r, len, &p) || !vdb_utf8_valid(p, len) ? -1 : 0;
    }
    if (vdb_take(r, scalar_size(tag), &p)) return -1;
    return tag == VDB_TAG_BOOL && p[0] > 1 ? -1 : 0;
}

/* One entry of a blob, as spans into it. */
typedef struct {
    const uint8_t *key;
    uint32_t key_len;
    const uint8_t *start; /* first byte of the entry */
    size_t size;          /* whole entry */
    uint8_t tag;
} meta_entry;

static int next_entry(vdb_reader *r, meta_entry *e, int allow_null)
{
    const uint8_t *start = r->p;
    size_t left0 = r->left;
    uint32_t count;
    if (vdb_take_u32(r, &e->key_len) || e->key_len == 0 || vdb_take(r, e->key_len, &e->key) ||
        !vdb_utf8_valid(e->key, e->key_len) ||
        vdb_take_u8(r, &e->tag))
        return -1;
    uint8_t base = e->tag & 0x0F;
    if (e->tag == VDB_TAG_NULL) {
        if (!allow_null) return -1;
    } else if (e->tag & VDB_TAG_LIST) {
        if ((e->tag & ~(VDB_TAG_LIST | 0x0F)) || base < VDB_TAG_STR || base > VDB_TAG_BOOL ||
            vdb_take_u32(r, &count) || count == 0)
            return -1;
        for (uint32_t i = 0; i < count; i++)
            if (skip_scalar(r, base)) return -1;
    } else {
        if (e->tag < VDB_TAG_STR || e->tag > VDB_TAG_BOOL || skip_scalar(r, e->tag)) return -1;
    }
    e->start = start;
    e->size = left0 - r->left;
    return 0;
}

static int same_key(const meta_entry *a, const meta_entry *b)
{
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

int vdb_meta_blob_check(const uint8_t *blob, size_t len, int allow_null)
{
    vdb_reader r = {blob, len};
    uint32_t n;
    meta_entry e;
    if (vdb_take_u32(&r, &n)) return vdb_set_error(VDB_ECORRUPT, "metadata blob shorter than its header");
    /* Each entry takes at least 6 bytes: bound n before the quadratic duplicate check. */
    if ((uint64_t)n * 6 > r.left) return vdb_set_error(VDB_ECORRUPT, "metadata blob entry count out of range");
    const uint8_t *first = r.p;
    size_t first_left = r.left;
    for (uint32_t i = 0; i < n; i++) {
        if (next_entry(&r, &e, allow_null))
            return vdb_set_error(VDB_ECORRUPT, "metadata blob entry %u is malformed", i);
        /* Duplicate keys: compare with every earlier entry (blobs are small). */
        vdb_reader r2 = {first, first_left};
        meta_entry prev;
        for (uint32_t j = 0; j < i; j++) {
            next_entry(&r2, &prev, allow_null);
            if (same_key(&prev, &e))
                return vdb_set_error(VDB_ECORRUPT, "metadata blob repeats key '%.*s'", (int)e.key_len, e.key);
        }
    }
    if (r.left) return vdb_set_error(VDB_ECORRUPT, "metadata blob has %zu trailing bytes", r.left);
    return VDB_OK;
}

/* Finds key in a checked blob; returns 1 and fills e when present. */
static int find_key(const uint8_t *blob, size_t len, const meta_entry *key, meta_entry *e)
{
    if (!blob) return 0;
    vdb_reader r = {blob, len};
    uint32_t n = 0;
    vdb_take_u32(&r, &n);
    for (uint32_t i = 0; i < n; i++) {
        if (next_entry(&r, e, 1)) return 0;
        if (same_key(e, key)) return 1;
    }
    return 0;
}

int vdb_meta_blob_merge(const uint8_t *old, size_t old_len, const uint8_t *upd, size_t upd_len,
                        uint8_t **out, size_t *out_len)
{
    vdb_buf b = {0};
    uint32_t count = 0, n = 0;
    meta_entry e, found;
    vdb_reader r;
    *out = NULL;
    *out_len = 0;
    if (vdb_buf_u32(&b, 0)) goto nomem;
    /* Old keys in their order, replaced by the update's value where it has one. */
    if (old) {
        r = (vdb_reader){old, old_len};
        vdb_take_u32(&r, &n);
        for (uint32_t i = 0; i < n; i++) {
            if (next_entry(&r, &e, 0)) break;
            if (find_key(upd, upd_len, &e, &found)) {
                if (found.tag == VDB_TAG_NULL) continue;
                if (vdb_buf_append(&b, found.start, found.size)) goto nomem;
            } else if (vdb_buf_append(&b, e.start, e.size)) {
                goto nomem;
            }
            count++;
        }
    }
    /* Then the update's new keys. */
    if (upd) {
        r = (vdb_reader){upd, upd_len};
        vdb_take_u32(&r, &n);
        for (uint32_t i = 0; i < n; i++) {
            if (next_entry(&r, &e, 1)) break;
            if (e.tag == VDB_TAG_NULL || find_key(old, old_len, &e, &found)) continue;
            if (vdb_buf_append(&b, e.start, e.size)) goto nomem;
            count++;
        }
    }
    if (count == 0) {
        vdb_buf_free(&b);
        return VDB_OK;
    }
    vdb_put_u32(b.data, count);
    *out = b.data;
    *out_len = b.len;
    return VDB_OK;
nomem:
    vdb_buf_free(&b);
    return vdb_set_error(VDB_ENOMEM, "out of memory merging metadata");
}


/* ---------------------------------------------------------------------------------------------
 * Interner */

static void intern_free(vdb_interner *in)
{
    vdb_buf_free(&in->bytes);
    free(in->off);
    free(in->len);
    free(in->hash);
    free(in->slots);
    memset(in, 0, sizeof *in);
}

static size_t intern_bytes_held(const vdb_interner *in)
{
    return in->bytes.cap + in->cap * (sizeof *in->off + sizeof *in->len + sizeof *in->hash) +
           in->n_slots * sizeof *in->slots;
}

static uint32_t intern_find(const vdb_interner *in, const uint8_t *p, size_t n, uint64_t h)
{
    if (!in->n_slots) return UINT32_MAX;
    size_t mask = in->n_slots - 1;
    for (size_t s = (uint32_t)h & mask;; s = (s + 1) & mask) {
        uint32_t v = in->slots[s];
        if (!v) return UINT32_MAX;
        uint32_t id = v - 1;
        if (in->hash[id] == (uint32_t)h && in->len[id] == n &&
            (n == 0 || memcmp(in->bytes.data + in->off[id], p, n) == 0))
            return id;
    }
}

static void slots_put(uint32_t *slots, size_t n_slots, uint32_t h, uint32_t id)
{
    size_t mask = n_slots - 1, s = h & mask;
    while (slots[s]) s = (s + 1) & mask;
    slots[s] = id + 1;
}

/* Finds or adds p[0..n); -1 (nothing changed) when an allocation fails. */
static int intern_add(vdb_interner *in, const uint8_t *p, size_t n, uint64_t h, uint32_t *id)
{
    uint32_t found = intern_find(in, p, n, h);
    if (found != UINT32_MAX) {
        *id = found;
        return 0;
    }
    if (in->n >= UINT32_MAX - 1 || n >= UINT32_MAX) return -1;
    if (in->n + 1 > in->cap) {
        size_t cap = grown_cap(in->cap, in->n + 1, 16, sizeof(uint64_t));
        if (!cap) return -1;
        uint64_t *off = col_realloc(in->off, cap * sizeof *off);
        if (!off) return -1;
        in->off = off;
        uint32_t *len = col_realloc(in->len, cap * sizeof *len);
        if (!len) return -1;
        in->len = len;
        uint32_t *hash = col_realloc(in->hash, cap * sizeof *hash);
        if (!hash) return -1;
        in->hash = hash;
        in->cap = cap;
    }
    if ((in->n + 1) * 2 > in->n_slots) {
        size_t ns = grown_cap(in->n_slots, (in->n + 1) * 2, 32, sizeof(uint32_t));
        if (!ns || fault()) return -1;
        uint32_t *slots = calloc(ns, sizeof *slots);
        if (!slots) return -1;
        for (size_t i = 0; i < in->n; i++) slots_put(slots, ns, in->hash[i], (uint32_t)i);
        free(in->slots);
        in->slots = slots;
        in->n_slots = ns;
    }
    if (fault() || vdb_buf_reserve(&in->bytes, n)) return -1;
    *id = (uint32_t)in->n;
    in->off[in->n] = in->bytes.len;
    in->len[in->n] = (uint32_t)n;
    in->hash[in->n] = (uint32_t)h;
    vdb_buf_append(&in->bytes, p, n); /* reserved */
    slots_put(in->slots, in->n_slots, (uint32_t)h, *id);
    in->n++;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Columns */

static void cols_free(meta_cols *c)
{
    for (size_t i = 0; i < c->keys.n; i++) {
        free(c->cols[i].tag);
        free(c->cols[i].val);
        free(c->cols[i].ent);
    }
    free(c->cols);
    intern_free(&c->keys);
    intern_free(&c->strs);
    free(c->pool);
    free(c->dense);
    memset(c, 0, sizeof *c);
}

static void col_to_blob(meta_cols *c, meta_col *col)
{
    free(col->tag);
    free(col->val);
    free(col->ent);
    col->tag = NULL;
    col->val = NULL;
    col->ent = NULL;
    col->cap = col->n_ent = col->live = 0;
    col->form = FORM_BLOB;
    c->n_blob++;
}

/* Grows a dense column to cover cap rows (new rows lack the key). */
static int dense_grow(meta_col *col, size_t cap)
{
    if (cap <= col->cap) return 0;
    uint8_t *tag = col_realloc(col->tag, cap);
    if (!tag) return -1;
    col->tag = tag;
    memset(tag + col->cap, 0, cap - col->cap);
    uint64_t *val = col_realloc(col->val, cap * sizeof *val);
    if (!val) return -1; /* tag is larger than cap: harmless */
    col->val = val;
    col->cap = cap;
    return 0;
}

/* Sparse log -> dense arrays, when the key has become common. Stays sparse if memory is short. */
static void maybe_densify(vdb_meta *m, meta_cols *c, size_t col_no)
{
    meta_col *col = &c->cols[col_no];
    if (col->live < DENSE_MIN_LIVE || col->live < m->n_rows / DENSE_FRACTION) return;
    if (c->n_dense + 1 > c->dense_cap) {
        size_t cap = grown_cap(c->dense_cap, c->n_dense + 1, 8, sizeof *c->dense);
        size_t *d = cap ? col_realloc(c->dense, cap * sizeof *d) : NULL;
        if (!d) return;
        c->dense = d;
        c->dense_cap = cap;
    }
    size_t cap = m->cap_rows; /* >= n_rows > every logged row */
    uint8_t *tag = col_realloc(NULL, cap);
    uint64_t *val = tag ? col_realloc(NULL, cap * sizeof *val) : NULL;
    if (!val) {
        free(tag);
        return;
    }
    memset(tag, 0, cap);
    const vdb_meta_entry *e = col->ent ? col->ent : &col->one;
    for (size_t i = 0; i < col->n_ent; i++) { /* in order: the last entry of a row wins */
        tag[e[i].row] = e[i].tag;
        val[e[i].row] = e[i].val;
    }
    free(col->ent);
    col->ent = NULL;
    col->n_ent = col->live = 0;
    col->tag = tag;
    col->val = val;
    col->cap = cap;
    col->form = FORM_DENSE;
    c->dense[c->n_dense++] = col_no;
}

/* Keeps the last entry of each row, drops rows whose last entry is a removal. In place; uses the
 * store's scratch bitmap (cap_rows bits, left all zero). */
static void sparse_compact(vdb_meta *m, meta_col *col)
{
    vdb_meta_entry *e = col->ent;
    uint64_t *seen = m->scratch;
    size_t n = col->n_ent, k = n, j = 0;
    for (size_t i = n; i-- > 0;) {
        uint32_t r = e[i].row;
        uint64_t bit = (uint64_t)1 << (r % 64);
        if (seen[r / 64] & bit) continue;
        seen[r / 64] |= bit;
        e[--k] = e[i]; /* k > i: only entries already read are overwritten */
    }
    for (size_t i = k; i < n; i++) {
        seen[e[i].row / 64] &= ~((uint64_t)1 << (e[i].row % 64));
        if (e[i].tag) e[j++] = e[i];
    }
    col->n_ent = j;
}

/* Appends (row, tag, val) to a sparse log; tag 0 records a removal. */
static int sparse_append(vdb_meta *m, meta_col *col, size_t row, uint8_t tag, uint64_t val)
{
    vdb_meta_entry add = {(uint32_t)row, tag, val};
    if (!col->ent && col->n_ent == 0) {
        col->one = add;
        col->n_ent = 1;
        return 0;
    }
    if (col->ent && col->n_ent >= 2 * col->live + COMPACT_SLACK) sparse_compact(m, col);
    if (col->n_ent + 1 > col->cap) {
        size_t cap = grown_cap(col->cap, col->n_ent + 1, 4, sizeof *col->ent);
        vdb_meta_entry *e = cap ? col_realloc(col->ent, cap * sizeof *e) : NULL;
        if (!e) return -1;
        if (!col->ent) e[0] = col->one; /* the inline entry moves to the log */
        col->ent = e;
        col->cap = cap;
    }
    col->ent[col->n_ent++] = add;
    return 0;
}

/* Value of a blob entry in column terms (interning strings, copying lists to the pool). The entry
 * was validated; a short read is still handled, like a failed allocation. */
static int column_value(meta_cols *c, const meta_entry *e, uint8_t *tag, uint64_t *val)
{
    vdb_reader r = {e->start + 4 + e->key_len + 1, e->size - 4 - e->key_len - 1};
    uint8_t base = e->tag & 0x0F;
    uint32_t count = 1, id;
    const uint8_t *p;
    uint64_t *dst = val;
    *tag = e->tag;
    if (e->tag & VDB_TAG_LIST) {
        if (vdb_take_u32(&r, &count)) return -1;
        if (c->pool_len + 1 + (size_t)count > c->pool_cap) {
            size_t cap = grown_cap(c->pool_cap, c->pool_len + 1 + (size_t)count, 1024, sizeof *c->pool);
            uint64_t *pool = cap ? col_realloc(c->pool, cap * sizeof *pool) : NULL;
            if (!pool) return -1;
            c->pool = pool;
            c->pool_cap = cap;
        }
        dst = c->pool + c->pool_len + 1;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t len;
        switch (base) {
        case VDB_TAG_STR:
            if (vdb_take_u32(&r, &len) || vdb_take(&r, len, &p)) return -1;
            if (intern_add(&c->strs, p, len, hash_bytes(p, len), &id)) return -1;
            dst[i] = id;
            break;
        case VDB_TAG_BOOL:
            if (vdb_take(&r, 1, &p)) return -1;
            dst[i] = p[0];
            break;
        default:
            if (vdb_take(&r, 8, &p)) return -1;
            dst[i] = vdb_get_u64(p);
            break;
        }
    }
    if (e->tag & VDB_TAG_LIST) {
        c->pool[c->pool_len] = count;
        *val = c->pool_len;
        c->pool_len += 1 + (size_t)count;
    }
    return 0;
}

static uint32_t key_find(const meta_cols *c, const uint8_t *key, size_t len)
{
    return intern_find(&c->keys, key, len, hash_bytes(key, len));
}

/* Column of a key, created (sparse, empty) if new; UINT32_MAX when it has none. */
static uint32_t key_column(meta_cols *c, const meta_entry *e)
{
    uint64_t h = hash_bytes(e->key, e->key_len);
    uint32_t id = intern_find(&c->keys, e->key, e->key_len, h);
    if (id != UINT32_MAX || c->keys_blob) return id;
    if (c->keys.n + 1 > c->cols_cap) {
        size_t cap = grown_cap(c->cols_cap, c->keys.n + 1, 16, sizeof *c->cols);
        meta_col *cols = cap ? col_realloc(c->cols, cap * sizeof *cols) : NULL;
        if (!cols) goto fail;
        c->cols = cols;
        c->cols_cap = cap;
    }
    if (intern_add(&c->keys, e->key, e->key_len, h, &id)) goto fail;
    memset(&c->cols[id], 0, sizeof c->cols[id]);
    c->cols[id].form = FORM_SPARSE;
    return id;
fail:
    /* From now on, until a rebuild, keys without a column are evaluated from the blobs: a column
     * created later would miss this row. */
    c->keys_blob = 1;
    return UINT32_MAX;
}

/* Brings the columns from the row's old blob to its new one (either may be NULL). Never fails:
 * a column whose upkeep cannot allocate turns BLOB. */
static void cols_update(vdb_meta *m, meta_cols *c, size_t row, const uint8_t *old, size_t old_len,
                        const uint8_t *new_blob, size_t new_len)
{
    vdb_reader r;
    meta_entry e;
    uint32_t n = 0, id;
    uint64_t st = ++c->stamp;
    if (old) { /* mark the keys the row held */
        r = (vdb_reader){old, old_len};
        vdb_take_u32(&r, &n);
        for (uint32_t i = 0; i < n && next_entry(&r, &e, 0) == 0; i++)
            if ((id = key_find(c, e.key, e.key_len)) != UINT32_MAX) c->cols[id].stamp_old = st;
    }
    if (new_blob) {
        r = (vdb_reader){new_blob, new_len};
        vdb_take_u32(&r, &n);
        for (uint32_t i = 0; i < n && next_entry(&r, &e, 0) == 0; i++) {
            if ((id = key_column(c, &e)) == UINT32_MAX) continue;
            meta_col *col = &c->cols[id];
            uint8_t tag;
            uint64_t val;
            col->stamp_new = st;
            if (col->form == FORM_BLOB) continue;
            if (column_value(c, &e, &tag, &val)) {
                col_to_blob(c, col);
                continue;
            }
            col->seen |= (uint8_t)vdb_meta_tag_bit(tag);
            if (col->form == FORM_DENSE) {
                if (row >= col->cap && dense_grow(col, m->cap_rows)) {
                    col_to_blob(c, col);
                    continue;
                }
                col->tag[row] = tag;
                col->val[row] = val;
            } else {
                if (sparse_append(m, col, row, tag, val)) {
                    col_to_blob(c, col);
                    continue;
                }
                if (col->stamp_old != st) {
                    col->live++;
                    maybe_densify(m, c, id);
                }
            }
        }
    }
    if (old) { /* keys the row no longer holds */
        r = (vdb_reader){old, old_len};
        vdb_take_u32(&r, &n);
        for (uint32_t i = 0; i < n && next_entry(&r, &e, 0) == 0; i++) {
            if ((id = key_find(c, e.key, e.key_len)) == UINT32_MAX) continue;
            meta_col *col = &c->cols[id];
            if (col->stamp_new == st || col->form == FORM_BLOB) continue;
            if (col->form == FORM_DENSE) {
                if (row < col->cap) col->tag[row] = 0;
            } else if (sparse_append(m, col, row, 0, 0)) {
                col_to_blob(c, col);
            } else {
                col->live--;
            }
        }
    }
}

/* Rebuilds every column from the blobs; keeps the old columns if memory is short. */
static void cols_rebuild(vdb_meta *m)
{
    meta_cols fresh;
    memset(&fresh, 0, sizeof fresh);
    for (size_t r = 0; r < m->n_rows; r++) {
        const meta_row *row = &m->rows[r];
        if (row->meta_len != VDB_NONE)
            cols_update(m, &fresh, r, NULL, 0, m->arena.data + row->meta_off, row->meta_len);
        if (fresh.n_blob || fresh.keys_blob) {
            cols_free(&fresh);
            return;
        }
    }
    cols_free(&m->c);
    m->c = fresh;
}

/* ---------------------------------------------------------------------------------------------
 * The store */

int vdb_meta_create(vdb_meta **out)
{
    vdb_meta *m = calloc(1, sizeof *m);
    if (!m) return vdb_set_error(VDB_ENOMEM, "out of memory creating metadata store");
    *out = m;
    return VDB_OK;
}

void vdb_meta_free(vdb_meta *m)
{
    if (!m) return;
    free(m->rows);
    vdb_buf_free(&m->arena);
    vdb_buf_free(&m->docs);
    free(m->scratch);
    cols_free(&m->c);
    free(m);
}

size_t vdb_meta_rows(const vdb_meta *m) { return m->n_rows; }

size_t vdb_meta_bytes(const vdb_meta *m)
{
    const meta_cols *c = &m->c;
    size_t b = m->arena.cap + m->docs.cap + m->cap_rows * sizeof(meta_row) + (m->cap_rows + 63) / 64 * sizeof(uint64_t);
    b += intern_bytes_held(&c->keys) + intern_bytes_held(&c->strs) + c->cols_cap * sizeof(meta_col) +
         c->pool_cap * sizeof(uint64_t) + c->dense_cap * sizeof(size_t);
    for (size_t i = 0; i < c->keys.n; i++) {
        const meta_col *col = &c->cols[i];
        b += col->form == FORM_DENSE ? col->cap * (1 + sizeof(uint64_t))
                                     : col->cap * sizeof(vdb_meta_entry);
    }
    return b;
}

/* Row capacity for need rows: the row array, the scratch bitmap and every dense column. */
static int grow_rows(vdb_meta *m, size_t need)
{
    if (need > ROW_LIMIT)
        return vdb_set_error(VDB_ENOMEM, "metadata store of %zu rows is too large (limit %zu)", need, ROW_LIMIT);
    if (need > m->cap_rows) {
        size_t cap = grown_cap(m->cap_rows, need, 1024, sizeof(meta_row));
        if (!cap) return vdb_set_error(VDB_ENOMEM, "metadata store of %zu rows is too large", need);
        size_t old_words = (m->cap_rows + 63) / 64, words = (cap + 63) / 64;
        uint64_t *scratch = realloc(m->scratch, words * sizeof *scratch);
        if (!scratch) goto nomem;
        memset(scratch + old_words, 0, (words - old_words) * sizeof *scratch);
        m->scratch = scratch;
        meta_row *rows = realloc(m->rows, cap * sizeof *rows);
        if (!rows) goto nomem;
        m->rows = rows;
        m->cap_rows = cap;
    }
    /* Dense columns follow the row capacity, so that setting a row never grows them. */
    for (size_t i = 0; i < m->c.n_dense; i++) {
        meta_col *col = &m->c.cols[m->c.dense[i]];
        if (col->form == FORM_DENSE && dense_grow(col, m->cap_rows)) goto nomem;
    }
    return VDB_OK;
nomem:
    return vdb_set_error(VDB_ENOMEM, "out of memory growing metadata to %zu rows", need);
}

int vdb_meta_reserve(vdb_meta *m, size_t extra_rows, size_t extra_bytes)
{
    if (m->c.n_blob || m->c.keys_blob) cols_rebuild(m); /* after an allocation failure: try again */
    if (extra_rows > ROW_LIMIT - m->n_rows)
        return vdb_set_error(VDB_ENOMEM, "metadata store of %zu + %zu rows is too large (limit %zu)", m->n_rows,
                             extra_rows, ROW_LIMIT);
    int rc = grow_rows(m, m->n_rows + extra_rows);
    if (rc) return rc;
    /* Blobs and documents alike fit in `arena` (see vdb_meta_set): reserving extra_bytes in the docs
     * buffer too would hold up to twice a write's bytes (a snapshot load: the whole payload). */
    if (vdb_buf_reserve(&m->arena, extra_bytes)) return vdb_set_error(VDB_ENOMEM, "out of memory reserving metadata");
    return VDB_OK;
}

/* An input that may point into one of the store's own buffers (a copy of another row), which may
 * move when they grow: remembered as (buffer, offset) across the growth. */
typedef struct {
    const vdb_buf *buf;
    size_t off;
} buf_ref;

static buf_ref ref_of(const vdb_meta *m, const void *p)
{
    const vdb_buf *bufs[2] = {&m->arena, &m->docs};
    for (int i = 0; i < 2; i++) {
        uintptr_t a = (uintptr_t)bufs[i]->data, q = (uintptr_t)p;
        if (p && a && q >= a && q < a + bufs[i]->cap) return (buf_ref){bufs[i], (size_t)(q - a)};
    }
    return (buf_ref){NULL, 0};
}

static const void *ref_ptr(buf_ref r, const void *p) { return r.buf ? r.buf->data + r.off : p; }

int vdb_meta_set(vdb_meta *m, size_t row, int set_meta, const uint8_t *meta, size_t meta_len,
                 int set_doc, const char *doc, size_t doc_len)
{
    int rc;
    int append = row == m->n_rows;
    if (row > m->n_rows) return vdb_set_error(VDB_EINVAL, "metadata row %zu out of range", row);
    if (append) {
        if ((rc = grow_rows(m, m->n_rows + 1))) return rc;
        set_meta = set_doc = 1;
    }
    if (!set_meta) meta = NULL;
    if (!set_doc) doc = NULL;
    if ((meta && meta_len >= VDB_NONE) || (doc && doc_len >= VDB_NONE))
        return vdb_set_error(VDB_EINVAL, "metadata or document of %zu bytes is too large (limit %u)",
                             meta && meta_len >= VDB_NONE ? meta_len : doc_len, VDB_NONE - 1);
    buf_ref meta_ref = ref_of(m, meta), doc_ref = ref_of(m, doc);
    /* A document the docs buffer has no room for goes to `arena`: after vdb_meta_reserve, arena
     * holds the write's blob and document bytes without growing, so this cannot fail. */
    int doc_in_arena = doc && (fault() || vdb_buf_reserve(&m->docs, doc_len));
    if (vdb_buf_reserve(&m->arena, (meta ? meta_len : 0) + (doc_in_arena ? doc_len : 0)))
        return vdb_set_error(VDB_ENOMEM, "out of memory storing metadata");
    meta = ref_ptr(meta_ref, meta);
    doc = ref_ptr(doc_ref, doc);

    meta_row old = append ? (meta_row){0, 0, VDB_NONE, VDB_NONE} : m->rows[row];
    meta_row now = old;
    if (set_meta) {
        now.meta_off = meta ? m->arena.len : 0;
        now.meta_len = meta ? (uint32_t)meta_len : VDB_NONE;
        if (meta) vdb_buf_append(&m->arena, meta, meta_len); /* reserved */
    }
    if (set_doc) {
        vdb_buf *to = doc_in_arena ? &m->arena : &m->docs;
        now.doc_off = doc ? to->len | (doc_in_arena ? DOC_IN_ARENA : 0) : 0;
        now.doc_len = doc ? (uint32_t)doc_len : VDB_NONE;
        if (doc) vdb_buf_append(to, doc, doc_len); /* reserved */
    }
    m->rows[row] = now;
    if (append) m->n_rows++;
    if (set_meta && (old.meta_len != VDB_NONE || now.meta_len != VDB_NONE))
        cols_update(m, &m->c, row, old.meta_len == VDB_NONE ? NULL : m->arena.data + old.meta_off,
                    old.meta_len == VDB_NONE ? 0 : old.meta_len,
                    now.meta_len == VDB_NONE ? NULL : m->arena.data + now.meta_off,
                    now.meta_len == VDB_NONE ? 0 : now.meta_len);
    return VDB_OK;
}

/* A row's document (NULL: none). An empty one may be stored before any byte was: still a
 * document, not None. */
static const char *doc_of(const vdb_meta *m, const meta_row *r)
{
    if (r->doc_len == VDB_NONE) return NULL;
    const vdb_buf *b = r->doc_off & DOC_IN_ARENA ? &m->arena : &m->docs;
    return b->data ? (const char *)b->data + (r->doc_off & ~DOC_IN_ARENA) : "";
}

void vdb_meta_get(const vdb_meta *m, size_t row, const uint8_t **meta, size_t *meta_len,
                  const char **doc, size_t *doc_len)
{
    const meta_row *r = &m->rows[row];
    if (meta) {
        *meta = r->meta_len == VDB_NONE ? NULL : m->arena.data + r->meta_off;
        *meta_len = r->meta_len == VDB_NONE ? 0 : r->meta_len;
    }
    if (doc) {
        *doc = doc_of(m, r);
        *doc_len = r->doc_len == VDB_NONE ? 0 : r->doc_len;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Column access */

void vdb_meta_column_get(const vdb_meta *m, const uint8_t *key, size_t key_len, vdb_meta_column *out)
{
    const meta_cols *c = &m->c;
    memset(out, 0, sizeof *out);
#ifdef VDB_META_FAULTS
    if (vdb_meta_force_blob) {
        out->kind = VDB_COL_BLOB;
        return;
    }
#endif
    uint32_t id = key_find(c, key, key_len);
    if (id == UINT32_MAX) {
        out->kind = c->keys_blob ? VDB_COL_BLOB : VDB_COL_ABSENT;
        return;
    }
    const meta_col *col = &c->cols[id];
    out->seen = col->seen;
    switch (col->form) {
    case FORM_DENSE:
        out->kind = VDB_COL_DENSE;
        out->tag = col->tag;
        out->val = col->val;
        out->n = col->cap < m->n_rows ? col->cap : m->n_rows;
        break;
    case FORM_SPARSE:
        out->kind = VDB_COL_SPARSE;
        out->entries = col->ent ? col->ent : &col->one;
        out->n = col->n_ent;
        break;
    default:
        out->kind = VDB_COL_BLOB;
        break;
    }
}

int vdb_meta_string_id(const vdb_meta *m, const uint8_t *s, size_t len, uint64_t *id)
{
    uint32_t i = intern_find(&m->c.strs, s, len, hash_bytes(s, len));
    if (i == UINT32_MAX) return 0;
    *id = i;
    return 1;
}

const uint64_t *vdb_meta_list_pool(const vdb_meta *m) { return m->c.pool; }

/* ---------------------------------------------------------------------------------------------
 * Document substring search */

/* How common a byte is in typical text (higher = more common), to pick the needle's two rarest
 * bytes as the candidate filter: "record 12345 " is then searched by its digits, not by 'r' and
 * ' ', which nearly every document has. Only a heuristic: any choice gives the same answers. */
static unsigned byte_commonness(unsigned char c)
{
    static const char order[] = " etaoinshrdlcumwfgypbvkjxqz"; /* English letter frequency */
    const char *p = c ? strchr(order, c) : NULL;
    if (p) return 250 - 4 * (unsigned)(p - order);
    if (c >= 'A' && c <= 'Z') return 90;
    if (c >= '0' && c <= '9') return 80;
    if (c == '.' || c == ',' || c == '\n') return 120;
    if (c >= 0x80) return 70; /* UTF-8 sequences */
    return 50;
}

/* A needle prepared for find_bytes: the positions of its two rarest bytes. */
typedef struct {
    const char *nd;
    size_t m, a, b;
} vdb_finder;

static void finder_init(vdb_finder *f, const char *nd, size_t m)
{
    f->nd = nd;
    f->m = m;
    f->a = 0;
    f->b = m > 1 ? 1 : 0;
    for (size_t i = 0; i < m; i++) { /* a: rarest, b: next rarest at another position */
        unsigned ci = byte_commonness((unsigned char)nd[i]);
        if (ci < byte_commonness((unsigned char)nd[f->a])) {
            f->b = f->a;
            f->a = i;
        } else if (i != f->a && (f->b == f->a || ci < byte_commonness((unsigned char)nd[f->b]))) {
            f->b = i;
        }
    }
}

/* First occurrence of the needle in h[0..n), or NULL. Candidates are the starts whose two chosen
 * bytes match, 16 at a time with SSE2 (part of every x86-64), then memcmp. */
static const char *find_bytes(const vdb_finder *f, const char *h, size_t n)
{
    const char *nd = f->nd;
    size_t m = f->m, a = f->a, b = f->b;
    if (m == 0) return h;
    if (m > n) return NULL;
    if (m == 1) return memchr(h, nd[0], n);
    size_t last = n - m, i = 0; /* last possible start */
#if defined(__SSE2__)
    const __m128i fa = _mm_set1_epi8(nd[a]), fb = _mm_set1_epi8(nd[b]);
    for (; i + 15 <= last; i += 16) { /* starts i..i+15 are all possible: both loads stay in h */
        __m128i va = _mm_loadu_si128((const __m128i *)(const void *)(h + i + a));
        __m128i vb = _mm_loadu_si128((const __m128i *)(const void *)(h + i + b));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(va, fa), _mm_cmpeq_epi8(vb, fb)));
        while (mask) {
            unsigned k = (unsigned)__builtin_ctz(mask);
            if (memcmp(h + i + k, nd, m) == 0) return h + i + k;
            mask &= mask - 1;
        }
    }
#endif
    while (i <= last) {
        const char *p = memchr(h + i + a, nd[a], last - i + 1);
        if (!p) return NULL;
        i = (size_t)(p - h) - a;
        if (h[i + b] == nd[b] && memcmp(h + i, nd, m) == 0) return h + i;
        i++;
    }
    return NULL;
}

void vdb_meta_doc_contains(const vdb_meta *m, size_t n_rows, const char *needle, size_t len,
                           const uint64_t *care, uint64_t *out)
{
    size_t words = (n_rows + 63) / 64, n_care = 0;
    const meta_row *rows = m->rows;
    const char *base = m->docs.data ? (const char *)m->docs.data : ""; /* NULL: only empty documents */
    vdb_finder f;
    finder_init(&f, needle, len);
    memset(out, 0, words * sizeof *out);
    for (size_t w = 0; w < words; w++) n_care += (size_t)__builtin_popcountll(care[w]);
    if (n_care == 0) return;
    if (len == 0 || n_care < n_rows / 8) {
        /* Few rows to look at: each document on its own. */
        for (size_t w = 0; w < words; w++)
            for (uint64_t bits = care[w]; bits; bits &= bits - 1) {
                size_t r = w * 64 + (size_t)__builtin_ctzll(bits);
                const char *doc = doc_of(m, &rows[r]);
                if (doc && (len == 0 || find_bytes(&f, doc, rows[r].doc_len)))
                    out[w] |= (uint64_t)1 << (r % 64);
            }
        return;
    }
    /* Many rows: runs of rows whose documents lie back to back are searched as one span; a hit is
     * mapped to its row by walking the run; one that straddles two documents does not count. */
    size_t r = 0;
    while (r < n_rows) {
        if (rows[r].doc_len == VDB_NONE) {
            r++;
            continue;
        }
        if (rows[r].doc_off & DOC_IN_ARENA) { /* rare: stored while memory was short */
            if (find_bytes(&f, doc_of(m, &rows[r]), rows[r].doc_len))
                out[r / 64] |= ((uint64_t)1 << (r % 64)) & care[r / 64];
            r++;
            continue;
        }
        size_t end_row = r + 1;
        uint64_t span_end = rows[r].doc_off + rows[r].doc_len;
        while (end_row < n_rows && rows[end_row].doc_len != VDB_NONE && rows[end_row].doc_off == span_end) {
            span_end += rows[end_row].doc_len;
            end_row++;
        }
        size_t cur = r;
        uint64_t pos = rows[r].doc_off;
        while (pos < span_end) {
            const char *h = find_bytes(&f, base + pos, (size_t)(span_end - pos));
            if (!h) break;
            uint64_t at = (uint64_t)(h - base);
            while (rows[cur].doc_off + rows[cur].doc_len <= at) cur++; /* the document holding `at` */
            uint64_t doc_end = rows[cur].doc_off + rows[cur].doc_len;
            /* A hit inside the document: one is enough. One that runs past its end: so would any
             * later start in it. Either way the search goes on from the next document. */
            if (at + len <= doc_end) out[cur / 64] |= ((uint64_t)1 << (cur % 64)) & care[cur / 64];
            pos = doc_end;
            cur++;
        }
        r = end_row;
    }
}
