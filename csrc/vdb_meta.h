/* vdb_meta — per-row metadata and documents, stored by the engine in a typed binary form.
 *
 * Metadata blob (the one encoding used by the binding, the write-ahead log and snapshots; all
 * integers little-endian):
 *     u32 n_entries, then per entry: u32 key_len, key bytes (UTF-8), u8 tag, value
 *     tag 0 NULL  (no value: only in update/upsert payloads, where it deletes the key)
 *     tag 1 STR   u32 len, bytes (UTF-8)
 *     tag 2 INT   i64
 *     tag 3 FLOAT f64
 *     tag 4 BOOL  u8 (0 or 1)
 *     tag 0x10|t  LIST of scalar tag t (1..4): u32 count (>= 1), then count bare values
 * Keys within a blob are unique. A stored blob never holds NULL entries and never has zero
 * entries (a record without metadata stores no blob at all).
 *
 * Ownership: vdb_meta copies what it is given. Pointers returned by vdb_meta_get stay valid until
 * the next vdb_meta_set / vdb_meta_free on the same object. Not thread-safe by itself: the owning
 * collection's reader-writer lock guards it (vdb_meta_get is safe under a shared lock).
 */
#ifndef VDB_META_H
#define VDB_META_H

#include <stddef.h>
#include <stdint.h>

enum {
    VDB_TAG_NULL = 0,
    VDB_TAG_STR = 1,
    VDB_TAG_INT = 2,
    VDB_TAG_FLOAT = 3,
    VDB_TAG_BOOL = 4,
    VDB_TAG_LIST = 0x10,
};

typedef struct vdb_meta vdb_meta;

int vdb_meta_create(vdb_meta **out);
void vdb_meta_free(vdb_meta *m);
size_t vdb_meta_rows(const vdb_meta *m);

/* Validates an untrusted blob: bounds, tags, UTF-8-free byte lengths, unique keys, no trailing
 * bytes. allow_null admits NULL entries (update payloads). Returns VDB_OK or VDB_ECORRUPT/EINVAL. */
int vdb_meta_blob_check(const uint8_t *blob, size_t len, int allow_null);

/* Merges update blob upd into old (either may be NULL/0): keys in upd replace those in old, NULL
 * entries delete keys, other keys of old stay in their order. *out is malloc'd by the callee
 * (NULL with *out_len 0 when the result is empty). */
int vdb_meta_blob_merge(const uint8_t *old, size_t old_len, const uint8_t *upd, size_t upd_len,
                        uint8_t **out, size_t *out_len);

/* Sets row's metadata and document (row <= vdb_meta_rows; == appends a row). meta NULL = none;
 * doc NULL = none. set_meta / set_doc = 0 leave that part as it was (row must exist). */
int vdb_meta_set(vdb_meta *m, size_t row, int set_meta, const uint8_t *meta, size_t meta_len,
                 int set_doc, const char *doc, size_t doc_len);

/* Reserves room for extra_rows more rows and extra_bytes more blob/document bytes, so that the
 * vdb_meta_set calls of one write cannot fail half-way. */
int vdb_meta_reserve(vdb_meta *m, size_t extra_rows, size_t extra_bytes);

/* *meta / *doc are NULL when the row has none. */
void vdb_meta_get(const vdb_meta *m, size_t row, const uint8_t **meta, size_t *meta_len,
                  const char **doc, size_t *doc_len);

/* Bytes held (for stats). */
size_t vdb_meta_bytes(const vdb_meta *m);

#endif
