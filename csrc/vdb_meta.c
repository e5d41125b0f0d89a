#include "vdb_meta.h"

#include <stdlib.h>
#include <string.h>

#include "vdb_bytes.h"
#include "vdb_error.h"

#define VDB_NONE UINT32_MAX

typedef struct {
    uint64_t meta_off, doc_off;
    uint32_t meta_len, doc_len; /* VDB_NONE: the row has none */
} meta_row;

struct vdb_meta {
    meta_row *rows;
    size_t n_rows, cap_rows;
    vdb_buf arena; /* blobs and documents, appended; replaced ones become garbage until compaction */
};

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
    free(m);
}

size_t vdb_meta_rows(const vdb_meta *m) { return m->n_rows; }

size_t vdb_meta_bytes(const vdb_meta *m) { return m->arena.cap + m->cap_rows * sizeof(meta_row); }

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
        return vdb_take_u32(r, &len) || vdb_take(r, len, &p) ? -1 : 0;
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

static int store_bytes(vdb_meta *m, const void *p, size_t len, uint64_t *off, uint32_t *out_len)
{
    if (!p) {
        *off = 0;
        *out_len = VDB_NONE;
        return VDB_OK;
    }
    if (len >= VDB_NONE) return vdb_set_error(VDB_EINVAL, "metadata or document of %zu bytes is too large", len);
    *off = m->arena.len;
    *out_len = (uint32_t)len;
    if (vdb_buf_append(&m->arena, p, len)) return vdb_set_error(VDB_ENOMEM, "out of memory storing metadata");
    return VDB_OK;
}

static int grow_rows(vdb_meta *m, size_t need)
{
    if (need <= m->cap_rows) return VDB_OK;
    size_t cap = m->cap_rows ? m->cap_rows : 1024;
    while (cap < need) cap *= 2;
    meta_row *rows = realloc(m->rows, cap * sizeof *rows);
    if (!rows) return vdb_set_error(VDB_ENOMEM, "out of memory growing metadata rows");
    m->rows = rows;
    m->cap_rows = cap;
    return VDB_OK;
}

int vdb_meta_reserve(vdb_meta *m, size_t extra_rows, size_t extra_bytes)
{
    int rc = grow_rows(m, m->n_rows + extra_rows);
    if (rc) return rc;
    if (vdb_buf_reserve(&m->arena, extra_bytes)) return vdb_set_error(VDB_ENOMEM, "out of memory reserving metadata");
    return VDB_OK;
}

int vdb_meta_set(vdb_meta *m, size_t row, int set_meta, const uint8_t *meta, size_t meta_len,
                 int set_doc, const char *doc, size_t doc_len)
{
    int rc;
    if (row > m->n_rows) return vdb_set_error(VDB_EINVAL, "metadata row %zu out of range", row);
    if (row == m->n_rows) {
        if ((rc = grow_rows(m, m->n_rows + 1))) return rc;
        m->rows[row] = (meta_row){0, 0, VDB_NONE, VDB_NONE};
        set_meta = set_doc = 1;
        m->n_rows++;
    }
    meta_row *r = &m->rows[row];
    if (set_meta && (rc = store_bytes(m, meta, meta_len, &r->meta_off, &r->meta_len))) return rc;
    if (set_doc && (rc = store_bytes(m, doc, doc_len, &r->doc_off, &r->doc_len))) return rc;
    return VDB_OK;
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
        /* An empty document may be stored before any byte was: still a document, not None. */
        *doc = r->doc_len == VDB_NONE ? NULL : m->arena.data ? (const char *)m->arena.data + r->doc_off : "";
        *doc_len = r->doc_len == VDB_NONE ? 0 : r->doc_len;
    }
}
