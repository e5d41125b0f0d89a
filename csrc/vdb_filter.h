/* vdb_filter — where / where_document filters: a compiled filter program evaluated into a row bitmap.
 *
 * The program (bytes) is produced by vectordb/filters.py, which documents the format; it is
 * untrusted here: vdb_filter_compile validates it whole (bounds, kinds, tags, counts, nesting depth,
 * no NaN, no trailing bytes) and copies what it needs, so the bytes may be freed afterwards.
 *
 * Semantics (chromadb 1.x, with our numeric deviation):
 *   EQ / IN / LT.. GTE  need the key present with a scalar value; bool is its own type; int and float
 *                       compare numerically and exactly (1.5 != 1, 2.0 == 2, 2^53+1 != 2^53 as double).
 *   CONTAINS            the key holds a list with an element equal to the operand (scalars never match).
 *   DOC_CONTAINS        the row has a document containing the bytes (case-sensitive; "" = has a document).
 *   DOC_REGEX           the row has a document and the regex matcher says it matches.
 *   NOT / AND / OR      boolean algebra over rows 0..n_rows-1 ($ne = NOT EQ, $nin = NOT IN, ...).
 *
 * Regex: the engine has no regex engine (semantics must be Python's `re`). A filter whose program
 * holds DOC_REGEX nodes needs a matcher (vdb_filter_set_regex) before vdb_filter_eval; eval calls it
 * on the calling thread, in batches of at most VDB_FILTER_REGEX_BATCH documents, only for rows whose
 * value at that node can still change the result and that have a document.
 *
 * Evaluation: each metadata leaf is resolved against vdb_meta's typed columns (string operands to
 * interned ids, numeric operands to exact int64 and double intervals) and runs as one pass over the
 * key's column (dense: 64 rows per output word; sparse: its entries); a key without a usable
 * column falls back to walking the blobs row by row. Documents: vdb_meta_doc_contains. AND narrows
 * the rows its later children look at, OR skips rows already decided, so regex nodes see only rows
 * whose answer still depends on them.
 *
 * Ownership and concurrency: the caller frees the filter with vdb_filter_free. After
 * vdb_filter_set_regex (call it before sharing), a filter is read-only: any number of threads may
 * evaluate it at once (the matcher must then be thread-safe). vdb_filter_eval reads `m` only; the
 * caller holds the owning collection's lock (shared is enough).
 */
#ifndef VDB_FILTER_H
#define VDB_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_meta.h"

typedef struct vdb_filter vdb_filter;

enum {
    VDB_FILTER_VERSION = 1,
    VDB_FILTER_MAX_DEPTH = 64,      /* nesting of nodes accepted in a program */
    VDB_FILTER_REGEX_BATCH = 1024,  /* documents per matcher call */
};

/* Node kinds and value tags of the program format (see vectordb/filters.py). */
enum {
    VDB_FK_AND = 0x01,
    VDB_FK_OR = 0x02,
    VDB_FK_NOT = 0x03,
    VDB_FK_EQ = 0x10,
    VDB_FK_LT = 0x11,
    VDB_FK_LTE = 0x12,
    VDB_FK_GT = 0x13,
    VDB_FK_GTE = 0x14,
    VDB_FK_IN = 0x15,
    VDB_FK_CONTAINS = 0x16,
    VDB_FK_DOC_CONTAINS = 0x20,
    VDB_FK_DOC_REGEX = 0x21,
};

/* Regex matcher: for pattern `index` (0-based, DOC_REGEX nodes in prefix order), set match[i] to 1
 * when docs[i] (UTF-8, docs_len[i] bytes, not NUL-terminated) matches, else 0; for i < n. Returns
 * VDB_OK or a negative code (then eval stops and returns it; the matcher keeps its own error). */
typedef int (*vdb_regex_fn)(void *ctx, uint32_t index, size_t n, const char *const *docs,
                            const size_t *docs_len, uint8_t *match);

/* Validates prog[0..len) and builds the filter (*out, freed by vdb_filter_free). VDB_EINVAL names
 * the offset and the problem when the program is malformed; VDB_ENOMEM on allocation failure. */
int vdb_filter_compile(const uint8_t *prog, size_t len, vdb_filter **out);
void vdb_filter_free(vdb_filter *f); /* NULL is a no-op */

/* Number of DOC_REGEX nodes; pattern text of node `index` (UTF-8, *len bytes, NULL when out of range). */
size_t vdb_filter_regex_count(const vdb_filter *f);
const char *vdb_filter_regex_pattern(const vdb_filter *f, size_t index, size_t *len);
/* Installs the matcher used for DOC_REGEX nodes (ctx is passed back as is). */
void vdb_filter_set_regex(vdb_filter *f, vdb_regex_fn fn, void *ctx);

/* Sets bit r of bitmap (word r / 64, bit r % 64) for each row r < n_rows that matches, clears the
 * others, including the unused high bits of the last word. bitmap has ceil(n_rows / 64) words,
 * allocated by the caller. n_rows <= vdb_meta_rows(m). Dead rows are evaluated like any other: the
 * caller ANDs the result with its live-row bitmap. Returns VDB_OK, VDB_ENOMEM, VDB_EINVAL (regex
 * nodes without a matcher, n_rows too large) or the matcher's error. */
int vdb_filter_eval(const vdb_filter *f, const vdb_meta *m, size_t n_rows, uint64_t *bitmap);

#endif
