/* vdb_ivf — IVF-Flat index: vectors partitioned into inverted lists by their nearest k-means
 * centroid; a query scans only the lists of its n_probe nearest centroids.
 *
 * Rows: every vector is identified by a row number (int64 >= 0, < VDB_IVF_MAX_ROW) chosen by the
 * caller (the collection's row). Each list stores its vectors contiguously (one growable float
 * array plus the matching row numbers), and a row -> (list, position) map lets a row be removed
 * (swap with the list's last entry), replaced, or read back. Once trained and filled, the index
 * is meant to be the only owner of the vectors: memory is ~1x the raw vectors plus 16 bytes per
 * row (row number + map entry) plus the centroids; lists grow by 1.25x, so up to 25% slack in a
 * list that grows one vector at a time (a bulk add reserves exactly).
 *
 * Metrics and distances are those of vdb_distance.h. L2 uses Euclidean centroids; IP and COSINE
 * use unit-length centroids (spherical k-means) and rank lists by largest dot product. Search
 * returns the true distances computed by vdb_distance_batch, like exact search (vdb_flat).
 *
 * Lifecycle: create -> train (k-means on sample vectors; the index must be empty) -> add /
 * remove / search / write; retrain re-clusters the vectors it holds, in place. read loads a
 * written index. renumber rewrites row numbers after the caller compacts its rows.
 *
 * Ownership: the index owns its lists and centroids; inputs are borrowed for the call; search
 * outputs are caller-allocated. vdb_ivf_vector returns a pointer into the index that stays
 * valid until the next call that modifies it.
 *
 * Concurrency: the const functions (search, vector, contains, stats, write, ...) may run
 * concurrently with each other; every other call needs exclusive access (the collection's
 * reader-writer lock provides it). Large batches use the shared worker pool (vdb_threads).
 *
 * Atomicity: add, remove, renumber and train either complete or leave the index unchanged.
 * retrain is atomic except when memory runs out half way: the index is then still valid and
 * complete (every vector findable, n_probe = n_lists still exact) but keeps the not yet moved
 * old lists as extra lists; it returns VDB_ENOMEM.
 */
#ifndef VDB_IVF_H
#define VDB_IVF_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_distance.h"

typedef struct vdb_ivf vdb_ivf;

/* Row numbers must be below this (it bounds the row -> list map of a damaged file). */
#define VDB_IVF_MAX_ROW ((int64_t)1 << 48)

/* d > 0, n_lists in [1, 2^31). The index starts untrained and empty. */
int vdb_ivf_create(size_t d, vdb_metric m, size_t n_lists, vdb_ivf **out);
/* NULL is a no-op. */
void vdb_ivf_free(vdb_ivf *ivf);

/* Trains the centroids with vdb_kmeans_train on x (n vectors; a sample of 256 per list is used
 * when n is larger). The index must hold no vectors (it may already be trained: the centroids
 * are replaced). n < n_lists -> VDB_EINVAL "fewer points than clusters" (no clamping: the caller
 * picks n_lists). Deterministic for a given seed. Resets the growth counters (see below). */
int vdb_ivf_train(vdb_ivf *ivf, const float *x, size_t n, uint64_t seed);
/* vdb_ivf_train for a caller that normalized x already when the metric is COSINE (every row
 * scaled by vdb_kmeans_normalize): k-means then trains on x in place instead of on a normalized
 * copy. Other metrics: the same as vdb_ivf_train. */
int vdb_ivf_train_normalized(vdb_ivf *ivf, const float *x, size_t n, uint64_t seed);

/* Growth counters, for a caller's retraining rule: vectors_at_train = vectors held at the last
 * training, added_since_train = vectors added (a replaced row counts) since. retrain sets them to
 * (vectors held, 0); train leaves the index empty, so a caller that trains and then adds its
 * vectors calls this afterwards to count the vectors now held as the training state. */
void vdb_ivf_mark_trained_contents(vdb_ivf *ivf);

/* Re-clusters the vectors the index holds into n_lists lists (0 = keep the current count),
 * training on a sample drawn in row order (so the result depends only on the (row, vector)
 * set and the seed), then moves every vector to its new list, one old list at a time, so the
 * peak memory is about the vectors once plus the training sample. n_lists must be <= the
 * number of vectors held. See Atomicity above for VDB_ENOMEM. */
int vdb_ivf_retrain(vdb_ivf *ivf, size_t n_lists, uint64_t seed);

/* Assigns each vector (n of them, d floats each) to its nearest centroid (blocked, parallel for
 * large n) and appends it. A row already present is replaced (its old entry removed first); a
 * row repeated within the batch ends with its last vector. Needs a trained index. */
int vdb_ivf_add(vdb_ivf *ivf, const int64_t *rows, const float *x, size_t n);

/* Removes a row: VDB_OK, or VDB_ENOTFOUND when it is not in the index. */
int vdb_ivf_remove(vdb_ivf *ivf, int64_t row);
int vdb_ivf_contains(const vdb_ivf *ivf, int64_t row);
/* The row's vector (d floats) inside the index, or NULL when absent. It may lie in the mapped
 * ivfvec.bin: call vdb_ivf_verify_row first (search, write, retrain and set_pq4 verify what they read). */
const float *vdb_ivf_vector(const vdb_ivf *ivf, int64_t row);
/* Verifies the mapped chunks holding the row's vector (every chunk: vdb_ivf_verify) not verified
 * yet: VDB_ECORRUPT naming ivfvec.bin on damage. A no-op for vectors in memory. Thread-safe. */
int vdb_ivf_verify_row(const vdb_ivf *ivf, int64_t row);
int vdb_ivf_verify(const vdb_ivf *ivf);
/* The error of the first damaged chunk found (VDB_ECORRUPT, message set again on this thread), or VDB_OK. */
int vdb_ivf_error(const vdb_ivf *ivf);

/* k nearest rows for each of nq queries. For each query the n_probe lists of nearest centroid
 * (clamped to [1, n_lists]; ties by list number) are scanned; when they hold fewer than k rows
 * that pass the filter, further lists are scanned in centroid order until k are found or every
 * list was scanned, so k hits come back whenever k allowed rows exist. allow (NULL = all rows)
 * is a bitmap, bit r of allow[r / 64] = row r allowed, covering rows [0, allow_len); rows at or
 * past allow_len are not allowed. Outputs are nq * k each, sorted ascending by (distance, row);
 * unused slots hold row -1 and distance +inf. One query runs on the calling thread; a batch is
 * split over the worker pool, its queries searched in the order of their nearest list (cache reuse),
 * a pq4 list's codes scanned once for the queries of a task that probe it, and each query exactly
 * as it would be alone: same rows, same distances. Needs a trained index. */
int vdb_ivf_search(const vdb_ivf *ivf, const float *queries, size_t nq, size_t k, size_t n_probe,
                   const uint64_t *allow, size_t allow_len, float *out_dist, int64_t *out_rows);

/* Every list in the order a query probes them (nearest centroid first, ties by list number):
 * order gets n_lists list numbers; scratch holds n_lists floats. Needs a trained index. */
void vdb_ivf_probe_order(const vdb_ivf *ivf, const float *q, float *scratch, int64_t *order);
/* The row numbers list l holds (*n of them), valid until the index changes. */
const int64_t *vdb_ivf_list_rows(const vdb_ivf *ivf, size_t l, size_t *n);
/* 4-bit PQ codes (vdb_pq4) of every vector's residual (x - centroid; cosine: x / |x| - centroid),
 * kept per list in fast-scan blocks beside the float32 vectors. m > 0 trains m sub-quantizers on
 * a sample of the residuals (needs a trained index holding >= 16 vectors) and encodes every
 * vector; later adds, removes, renumbers are encoded as they happen, and retrain trains the codes
 * again (on failure there the codes are dropped). m = 0 drops the codes. With codes, a search
 * scans them and re-ranks the promising rows with the float32 kernel (see the search in the .c):
 * the distances returned are the float32 ones; a true neighbour is missed only when its code
 * error exceeds the estimate of vdb_pq4.h, whose quantile follows n_probe: the codes may lose a
 * share of the neighbours the probed lists hold that is half the share probing loses, measured on
 * the training sample (recall is measured, not assumed). On failure the
 * index keeps no codes (IVF-Flat search). Deterministic for a seed. vdb_ivf_write writes the codes
 * as they are (ivfpq4.bin) and vdb_ivf_read loads them: reopening trains and encodes nothing. */
int vdb_ivf_set_pq4(vdb_ivf *ivf, size_t m, uint64_t seed);
/* Sub-quantizers of the codes, 0 without codes. */
size_t vdb_ivf_pq4_m(const vdb_ivf *ivf);
/* Rows re-ranked by the last single query of this thread that used the codes (benchmarks). */
size_t vdb_ivf_last_reranked(void);

/* After the caller compacts its rows: row r becomes old_to_new[r] (-1 = dropped from the index).
 * Every row in the index must be < n_old; the new numbers must be distinct and < VDB_IVF_MAX_ROW
 * (VDB_EINVAL otherwise, index unchanged). List order is kept (no swaps), so the result does not
 * depend on which rows were dropped first. Also releases the lists' unused capacity. */
int vdb_ivf_renumber(vdb_ivf *ivf, const int64_t *old_to_new, size_t n_old);

/* Persistence. write creates/truncates path, writes the index (format below), fdatasyncs and
 * closes it, and writes the vectors in list order to ivfvec.bin (with ivfvec.crc) in the same
 * directory (vdb_store.h's vectors file format); *bytes_written (optional) = both files' bytes.
 * The caller syncs the directory. read maps ivfvec.bin (see vdb_store.h: chunks verified on first
 * use) instead of reading the vectors: a list's vectors move to memory when the list first changes.
 * remap, after a write to path (the index unchanged since), maps what was written (the vectors,
 * and the pq4 codes), dropping the copies in memory. With pq4 codes, write also writes ivfpq4.bin (version 3, little-endian):
 *   0 magic "VDBIVPQ1"  8 u32 version  12 u32 block bytes  16 u64 d  24 u64 m  32 u64 n_lists
 *   40 u64 n_vectors  48 u64 seed  56 f32 eps_hi  60 f32 eps_lo  64 u64 payload length (the
 *   file's length - 72)  72 payload: f32 eps_rand, n_lists f32: the eps_hi of a search probing
 *   1..n_lists lists, the sub-quantizers' centroids (16 d f32, vdb_pq4.h), the list table (per
 *   list: u64 n, f32 qerr_max, u32 0), zeros to a multiple of 64 bytes; then per list a segment:
 *   the packed code blocks (ceil(n / 32) x block bytes), n f32 qerr, n f32 qaux, zeros to a
 *   multiple of 64 bytes. Beside it ivfpq4.crc: a CRC-32C per 4096 bytes of the whole file
 *   (vdb_store.h's vectors.crc format).
 * read maps it (every size checked against the lists of ivf.bin first, the pages up to the first
 * segment and all of ivfpq4.crc checked at once); the lists' codes point into the mapping, each
 * list's pages checked when a search first scans it (or a write first copies it into memory:
 * a list's codes move to memory, like its vectors, when the list first changes); without the file
 * the index has no codes. Versions 1 and 2 still read (checked whole and copied into the lists;
 * the next write writes version 3): version 2 had no list table, each list's n, qerr_max and u32 0
 * inline before its codes, no padding, a u32 CRC-32C of every byte before it at the end and no
 * ivfpq4.crc; version 1 also lacked eps_rand and the table (one f32 eps at 56: every bound).
 * Row numbers in a file must be below 2 * n_vectors + 1024 (write refuses others with
 * VDB_EINVAL: renumber first), so that a damaged row number cannot make read size its row map
 * beyond ~16 bytes per vector. read loads an index written by write; any damage (bad magic,
 * length, count, row, CRC) is VDB_ECORRUPT with a message naming path; an unknown newer format
 * version too.
 *
 * Format version 2, all integers little-endian, floats as IEEE-754 binary32 little-endian:
 *   0  magic "VDBIVF1\n" (8 bytes)     8  u32 format version (2)     12 u32 metric
 *   16 u64 d          24 u64 n_lists    32 u64 n_vectors      40 u64 payload length (bytes)
 *   48 u64 trained (0/1)   56 u64 training points   64 u64 added since training   72 u64 seed
 *   80 u64 vectors at training (the growth counters above)
 *   88 payload: centroids (n_lists * d f32), then per list: u64 n, n x i64 row
 *   end: u32 CRC-32C of every byte before it. ivfvec.bin holds the lists' vectors in list order.
 * Version 1 (still read; the next checkpoint writes version 2) held each list's n * d f32 after
 * its rows, and no ivfvec.bin.
 * The file length must be exactly 88 + payload length + 4. (Version 1 was extended by the field
 * at offset 80 before any release; no 80-byte-header file exists outside development.) */
int vdb_ivf_write(const vdb_ivf *ivf, const char *path, uint64_t *bytes_written);
int vdb_ivf_read(const char *path, vdb_ivf **out);
int vdb_ivf_remap(vdb_ivf *ivf, const char *path);
/* The mapped vectors will be read row by row (re-ranking through codes): no read-ahead around each
 * page fault. Without it the kernel reads ahead, which a float32 list scan wants. Until the next remap. */
void vdb_ivf_advise_random(vdb_ivf *ivf);

typedef struct {
    size_t d;
    vdb_metric metric;
    size_t n_lists;
    int trained;
    int64_t n_vectors;
    size_t list_min, list_max; /* sizes of the smallest and largest lists */
    double list_mean;
    size_t n_empty_lists;
    uint64_t n_train_points;   /* vectors given to the last train/retrain */
    uint64_t added_since_train;/* rows added (incl. replaced) since then */
    uint64_t vectors_at_train; /* rows held at the last training (see mark_trained_contents) */
    uint64_t seed;             /* seed of the last train/retrain */
    size_t bytes_in_memory;    /* lists (allocated capacity), rows, map, centroids */
} vdb_ivf_stats;

void vdb_ivf_stats_get(const vdb_ivf *ivf, vdb_ivf_stats *out);

/* Small accessors. */
size_t vdb_ivf_dim(const vdb_ivf *ivf);
vdb_metric vdb_ivf_metric(const vdb_ivf *ivf);
size_t vdb_ivf_n_lists(const vdb_ivf *ivf);
int vdb_ivf_is_trained(const vdb_ivf *ivf);
int64_t vdb_ivf_count(const vdb_ivf *ivf);
size_t vdb_ivf_list_size(const vdb_ivf *ivf, size_t list);
const float *vdb_ivf_centroids(const vdb_ivf *ivf); /* n_lists * d floats, NULL if untrained */

#endif
