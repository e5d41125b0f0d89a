/* vdb_meta — per-row metadata and documents, stored by the engine in a typed binary form, plus typed
 * columns over the metadata so that filters run as tight loops instead of blob walks.
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
 * Columns. The blobs stay the source of truth (vdb_meta_get returns them); vdb_meta_set also keeps,
 * per key that some row holds, a column of (tag, value) per row:
 *   - value: INT bits, FLOAT bits, BOOL 0/1, STR = id of the interned string (one string table
 *     for the whole store: equal bytes <=> equal id), LIST = offset into the list pool, where
 *     pool[off] = count and count element values follow (string ids, numbers, 0/1).
 *   - a key starts SPARSE: an append-only log of (row, tag, value) entries where a later entry for a
 *     row overrides earlier ones and tag 0 says "key removed" (updates never search the log). The
 *     log is compacted in place when it holds more than twice its live rows. A key held by at least
 *     a quarter of the rows (and by 256 rows or more) turns DENSE: tag[row] and val[row] arrays of
 *     the store's row capacity (9 bytes per row).
 *   Why: dense arrays give one sequential, branch-light pass per condition (the 1 ms at 1M rows
 *   target), but n_rows x n_keys of them would explode for collections where records carry their
 *   own keys (one key per record: a million keys). Sparse keys cost 16 bytes per entry plus about
 *   150 bytes per key (a key held by one record needs no allocation of its own), so memory stays
 *   linear in the number of stored entries whatever the key pattern (measured, 1M records of one
 *   int: 193 bytes per record all told with a key per record, 68 with one shared key), and the 1/4
 *   threshold keeps a dense column at most ~2.3x the size of its sparse log while eval of a sparse
 *   key costs in proportion to its entries. Replaced strings and lists are garbage until the
 *   collection compacts (it rebuilds the store row by row).
 *
 * Documents live in their own buffer (rows appended in order have adjacent documents), so that
 * vdb_meta_doc_contains scans only document bytes, runs of adjacent documents as one span.
 *
 * Failure model. vdb_meta_set fails only for its own row/byte storage (which vdb_meta_reserve
 * reserves, along with the growth of every dense column; a document the docs buffer cannot take
 * goes with the blobs, whose reservation covers a write's blob and document bytes). Column upkeep
 * never fails a write: when an allocation it needs fails (a sparse log, the string table, the list
 * pool, a new key), that column is marked BLOB -- filters then evaluate that key from the blobs,
 * correct, only slower -- and the next vdb_meta_reserve tries to rebuild all columns from the
 * blobs (it keeps the old ones if that fails too).
 *
 * Ownership: vdb_meta copies what it is given. Pointers returned by vdb_meta_get and
 * vdb_meta_column_get stay valid until the next vdb_meta_set / vdb_meta_reserve / vdb_meta_free on the
 * same object. Not thread-safe by itself: the owning collection's reader-writer lock guards it (the
 * const functions are safe under a shared lock).
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
 * doc NULL = none. set_meta / set_doc = 0 leave that part as it was (row must exist). meta must be
 * a blob that passed vdb_meta_blob_check(allow_null = 0). On failure nothing changed. */
int vdb_meta_set(vdb_meta *m, size_t row, int set_meta, const uint8_t *meta, size_t meta_len,
                 int set_doc, const char *doc, size_t doc_len);

/* Reserves room for extra_rows more rows and extra_bytes more blob/document bytes, so that the
 * vdb_meta_set calls of one write cannot fail half-way. Rows are limited to UINT32_MAX - 1. */
int vdb_meta_reserve(vdb_meta *m, size_t extra_rows, size_t extra_bytes);

/* *meta / *doc are NULL when the row has none. */
void vdb_meta_get(const vdb_meta *m, size_t row, const uint8_t **meta, size_t *meta_len,
                  const char **doc, size_t *doc_len);

/* Bytes held, columns included (for stats). */
size_t vdb_meta_bytes(const vdb_meta *m);

/* ---- Column access (read side, used by vdb_filter) ---- */

enum {
    VDB_COL_ABSENT = 0, /* no row holds the key */
    VDB_COL_DENSE = 1,  /* tag[r], val[r] for r < n; rows >= n lack the key */
    VDB_COL_SPARSE = 2, /* entries[0..n) in write order; the last entry of a row wins; tag 0 = absent */
    VDB_COL_BLOB = 3,   /* no usable column (allocation failed): evaluate from the blobs */
};

typedef struct {
    uint32_t row;
    uint8_t tag;
    uint64_t val;
} vdb_meta_entry;

/* Bit of a tag in vdb_meta_column.seen: scalars 1..4 -> bits 0..3, lists 0x11..0x14 -> bits 4..7. */
static inline unsigned vdb_meta_tag_bit(uint8_t tag)
{
    return (tag & VDB_TAG_LIST) ? 1u << (3 + (tag & 0x0F)) : 1u << ((tag & 0x0F) - 1);
}

typedef struct {
    int kind;
    unsigned seen; /* tags the column may hold (a superset: bits are never cleared) */
    const uint8_t *tag;           /* DENSE */
    const uint64_t *val;          /* DENSE */
    const vdb_meta_entry *entries; /* SPARSE */
    size_t n;                     /* DENSE: rows covered; SPARSE: entries */
} vdb_meta_column;

void vdb_meta_column_get(const vdb_meta *m, const uint8_t *key, size_t key_len, vdb_meta_column *out);

/* Id of a string as stored in the columns: returns 1 and sets *id when some value ever held these
 * bytes, 0 when none did (then no row can equal it). */
int vdb_meta_string_id(const vdb_meta *m, const uint8_t *s, size_t len, uint64_t *id);

/* The list pool: a LIST value v of any column is pool[v] = count, then pool[v + 1 .. v + count]. */
const uint64_t *vdb_meta_list_pool(const vdb_meta *m);

/* Document substring search (used by vdb_filter): sets bit r of out for each row r < n_rows set in
 * care whose document contains needle[0..len) (bytes, case-sensitive; len 0 = has a document),
 * clears every other bit of out's ceil(n_rows / 64) words. Scans runs of adjacent documents as one
 * span when care holds many rows, document by document otherwise. */
void vdb_meta_doc_contains(const vdb_meta *m, size_t n_rows, const char *needle, size_t len,
                           const uint64_t *care, uint64_t *out);

#ifdef VDB_META_FAULTS
/* Tests only: the column allocation that finds this counter at 1 fails (counted down per
 * allocation; 0 disables). vdb_meta_force_blob != 0 makes every column read as VDB_COL_BLOB (the
 * blob-walking reference path). */
extern long vdb_meta_fault_countdown;
extern int vdb_meta_force_blob;
#endif

#endif
