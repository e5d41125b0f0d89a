/* vdb_codes — a collection's 8-bit codes (vdb_sq8), one per row, and exact search through them.
 *
 * The table holds, for rows 0..n-1 of its collection, d code bytes and an error bound each
 * (vdb_sq8_encode), plus the quantizer. The float32 vectors stay the source of truth: searches
 * scan the codes, then re-rank with the float32 kernel every row whose lower bound could still
 * enter the top k, so they return exactly what the float32 search returns (same rows, same
 * float32 distances): flat search = exact search; IVF search = IVF-Flat's answer at the same
 * n_probe. How many rows get re-ranked adapts to k and to the bounds; nothing to tune.
 *
 * Lifecycle: created untrained (d = 0); vdb_codes_prepare_write trains the quantizer on the first
 * vectors it sees and reserves rows; retrain re-derives the ranges from all live vectors (the
 * caller does it when the collection doubled since the last training, see should_retrain).
 *
 * File (codes.bin in a snapshot generation), version 2, integers and floats little-endian:
 *   0 magic "VDBSQ8C1"  8 u32 version  12 u32 metric  16 u64 d  24 u64 n_rows  32 u64 rows at
 *   training  40 u32 CRC-32C of lo, step and err  44 u32 CRC-32C of bytes 0..43;
 *   48 payload: lo (d f32), step (d f32), codes (n_rows * d u8), err (n_rows f32).
 * Beside it, codes.crc: the codes' checksums per 4 KiB, in the format of vectors.crc (vdb_store.h).
 * The file length is exactly 48 + 8 d + n_rows (d + 4); any damage is VDB_ECORRUPT naming it.
 * Open checks the header, codes.crc, the ranges and the error bounds (copied out: 4 bytes a row),
 * and maps the codes unread: a search verifies each 4 KiB page of codes the first time it scans it
 * (a damaged one fails that search naming codes.bin), a write or a checkpoint verifies them all
 * first, as vdb_codes_verify does. Version 1 (one checksum over the whole payload, no codes.crc) is
 * checked whole at open and written as version 2 at the next checkpoint. A write that grows the
 * table moves the codes to memory.
 * Concurrency: searches are const and may run in parallel; everything else needs the
 * collection's write lock. Ownership: the table owns its arrays; inputs are borrowed.
 */
#ifndef VDB_CODES_H
#define VDB_CODES_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_flat.h"
#include "vdb_ivf.h"
#include "vdb_sq8.h"

typedef struct vdb_codes vdb_codes;

int vdb_codes_create(vdb_metric m, vdb_codes **out);
void vdb_codes_free(vdb_codes *t);
int vdb_codes_trained(const vdb_codes *t);
size_t vdb_codes_bytes(const vdb_codes *t);

/* Before a write that will set rows < n_rows_after: trains on vectors (n of dimension d) when
 * untrained, then reserves the rows, so vdb_codes_set cannot fail. */
int vdb_codes_prepare_write(vdb_codes *t, const float *vectors, size_t n, size_t d, size_t n_rows_after);
/* Encodes row's vector (row < the reserved rows). */
void vdb_codes_set(vdb_codes *t, size_t row, const float *v);
/* Row r -> its rank among the live rows (bit r of live[r / 64]), as the collection compacts. */
void vdb_codes_compact(vdb_codes *t, const uint64_t *live, size_t n_rows);

/* Accessor for the float32 vector of a row (NULL: none). */
typedef const float *(*vdb_codes_vec_fn)(const void *ctx, size_t row);
int vdb_codes_should_retrain(const vdb_codes *t, size_t n_live);
/* Re-derives the ranges from the live rows' vectors (of dimension d; trains an untrained table)
 * and re-encodes rows 0..n_rows-1 (a row without a vector gets err = +inf). On failure the codes
 * are unchanged. */
int vdb_codes_retrain(vdb_codes *t, size_t d, size_t n_rows, const uint64_t *live, vdb_codes_vec_fn vec, const void *ctx);

/* Verifies every mapped code page not verified yet (VDB_ECORRUPT naming codes.bin); _error sets
 * the message of the first damaged page found (by any thread) again, or returns VDB_OK. */
int vdb_codes_verify(const vdb_codes *t);
int vdb_codes_error(const vdb_codes *t);
/* Writes path and its .crc (after vdb_codes_verify). */
int vdb_codes_write(const vdb_codes *t, const char *path, size_t n_rows, uint64_t *bytes_written);
/* Reads a table written for n_rows rows of dimension d and metric m. */
int vdb_codes_read(const char *path, vdb_metric m, size_t d, size_t n_rows, vdb_codes **out);

/* Called before a row's float32 vector is read (row -1: before every row is, by a float32 scan),
 * e.g. to verify a mapped file's chunk on first use: non-zero fails the search with that code (the message is the caller's to set again: it
 * may have been set on a worker thread). */
typedef int (*vdb_codes_check_fn)(const void *ctx, int64_t row);
/* Exact flat search through the codes, same contract and results as vdb_flat_search over the
 * same ranges (rows covered by the table). check (may be NULL) runs before each re-ranked row. */
int vdb_codes_search_flat(const vdb_codes *t, const vdb_vec_range *ranges, size_t n_ranges, const uint64_t *allow,
                          const float *queries, size_t nq, size_t k, float *out_dist, int64_t *out_rows,
                          vdb_codes_check_fn check, const void *check_ctx);
/* IVF search through the codes: same contract and results as vdb_ivf_search; every row of the
 * index must be below allow_len (given also without a filter). */
int vdb_codes_search_ivf(const vdb_codes *t, const vdb_ivf *ivf, const float *queries, size_t nq, size_t k,
                         size_t n_probe, const uint64_t *allow, size_t allow_len, float *out_dist,
                         int64_t *out_rows);

/* Rows re-ranked by the last search on this thread (for tests and benchmarks). */
size_t vdb_codes_last_reranked(void);

#endif
