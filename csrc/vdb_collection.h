/* vdb_collection — one collection: ids <-> rows, vectors, metadata, documents, search.
 *
 * Rows are kept in insertion order; a delete marks the row dead (tombstone) and a checkpoint
 * compacts. Every write call is one atomic, durable operation: it is validated whole, appended to
 * the write-ahead log as one checksummed record (fdatasync'd unless durability is relaxed), then
 * applied; on failure nothing changes.
 *
 * Persistence (dir != NULL): see vdb_store.h for the files. An in-memory collection (dir == NULL)
 * behaves the same but keeps nothing.
 *
 * Concurrency: each collection has a reader-writer lock taken inside these calls: reads
 * (count/get/query/stats) run in parallel; writes are exclusive. close must not race other calls.
 *
 * Ownership: inputs are borrowed for the call; results (vdb_result) are allocated by the callee
 * and released with vdb_result_free, and hold copies, so they stay valid after later writes.
 */
#ifndef VDB_COLLECTION_H
#define VDB_COLLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_distance.h"

typedef struct vdb_collection vdb_collection;
typedef struct vdb_filter vdb_filter; /* see vdb_filter.h */

typedef struct {
    vdb_metric metric;
    int64_t dim;  /* 0: fixed by the first add */
    int durable;  /* 1: fdatasync every write before returning; 0: only at checkpoints */
    int use_ivf;  /* 1: an IVF index once the collection is large enough (see below) */
    int64_t n_clusters; /* IVF lists; 0: round(sqrt(count)) at each training */
    int64_t n_probe;    /* lists a query scans by default; 0: vdb_collection_default_n_probe */
    int quantization;   /* VDB_QUANT_*: codes scanned before the exact float32 re-rank (vdb_codes.h) */
} vdb_collection_config;

/* Quantization: results stay those of the float32 search (flat: exact; IVF: IVF-Flat's at the same
 * n_probe); only the scan reads compact codes. Not persisted here (the caller keeps it with the
 * collection's configuration, like n_probe); the codes are, in codes.bin of each generation. */
enum { VDB_QUANT_NONE = 0, VDB_QUANT_SQ8 = 1, VDB_QUANT_PQ4 = 2 };
/* VDB_QUANT_PQ4 is for IVF collections: once the index is trained, its lists also hold 4-bit PQ
 * fast-scan codes (vdb_ivf_set_pq4, vdb_collection_pq4_m sub-quantizers) that a search scans before
 * re-ranking the promising rows in float32: distances are the float32 ones, the rows are IVF-Flat's
 * up to the codes' measured error estimate (recall is reported, not proven). The codes are written
 * with the index at each checkpoint (ivfpq4.bin) and read back at open. Below the training
 * threshold (and for use_ivf = 0) search stays exact float32. */
size_t vdb_collection_pq4_m(size_t d);

/* IVF lifecycle (use_ivf = 1).
 * - Below max(39 * n_lists, 1000) live vectors search is exact (n_lists = n_clusters, or
 *   round(sqrt(count)) when 0: the auto collection first trains at about 1,500 vectors). Past it,
 *   the write that crosses it trains the index (k-means++ on a sample of 256 per list) and moves
 *   the vectors into the inverted lists, which then own them (memory stays ~1x the raw vectors).
 * - Every later add is assigned to its nearest centroid; update and delete keep the lists exact.
 * - Retraining rule: the collection has doubled since the last training. Precisely, the index
 *   retrains (re-clustering into n_clusters, or round(sqrt(count)), lists) after the write that
 *   makes the vectors added since the last training -- a new vector, or a new vector for an
 *   existing id -- at least as many as the index held at that training. For a collection that
 *   only grows that is "count >= 2 x count at training"; with deletes and re-adds it is "as many
 *   vectors written as there were". Stats: count_at_training, added_since_training (both
 *   persisted with the index, so the rule continues across reopens). A collection that deletes
 *   down below its list count does not retrain until rebuild().
 * - Batch mode (vdb_collection_batch(c, VDB_BATCH_BEGIN) .. (c, VDB_BATCH_END), nestable): nothing
 *   trains inside; leaving
 *   the outermost level applies the rules above once. A batch is one durable unit: its writes are
 *   applied (and visible) at once but nothing of them reaches the disk until the outermost level
 *   is left (or the collection closed, or an explicit checkpoint made inside). Their log records
 *   are kept in memory meanwhile; if they stay within a quarter of the collection's bytes on disk
 *   (snapshot + log; 1 MiB at least) leaving appends them to the log as one group record, with one
 *   sync (a small batch on a large collection costs its own bytes); a larger batch drops them as
 *   soon as it passes that and leaving writes its rows with a checkpoint (a bulk load writes each
 *   vector once, not to the log and again to the snapshot). A crash before leaving, or one that
 *   tears the group, leaves the collection as it was before the batch. If that append or
 *   checkpoint fails, vdb_collection_batch returns its error and the collection refuses writes
 *   until reopened (which drops the batch). A batch spans every write to the collection, whoever
 *   makes it: a process whose writers do not all belong to the batch (a server) uses
 *   VDB_BATCH_BEGIN_LOGGED .. VDB_BATCH_END_LOGGED instead, which defers training the same way but
 *   logs each write as it returns (what bulk levels had buffered is committed first).
 * - Training is followed by a checkpoint, so a reopened collection never retrains. A crash
 *   between a write and its training loses nothing: the reopened collection has every logged
 *   write, trains at its next write.
 * - Queries: n_probe lists, probing further when a filter leaves fewer than k hits in them; a
 *   filter that matches no more rows than the n_probe lists hold on average
 *   (count * n_probe / n_lists) is answered by exact search over the matching rows instead. */
#define VDB_IVF_MIN_TRAIN 1000
#define VDB_IVF_POINTS_PER_LIST 39
/* The n_probe of a collection created without one: max(16, ceil(3 sqrt(n_lists))), twice that
 * with quantization VDB_QUANT_PQ4, at most n_lists (recall@10 about 0.97 / 0.99 on real 384-d
 * text embeddings, more on synthetic clusters; see the .c for the numbers). */
int64_t vdb_collection_default_n_probe(int64_t n_lists, int quantization);
#define VDB_BATCH_END 0
#define VDB_BATCH_BEGIN 1
#define VDB_BATCH_BEGIN_LOGGED 2
#define VDB_BATCH_END_LOGGED 3
int vdb_collection_batch(vdb_collection *c, int mode);
/* Retrains (or first trains) the index now, whatever its size, when k-means can: with fewer
 * vectors than lists (an empty collection too) it changes nothing, as the automatic rule, returns
 * VDB_OK and leaves a message saying so for vdb_collection_take_warning. VDB_EINVAL when the
 * collection is not an IVF collection. */
int vdb_collection_rebuild(vdb_collection *c);
/* Sets the n_probe queries use when they give none (0: vdb_collection_default_n_probe). Not
 * persisted here: the caller keeps it with the collection's configuration and passes it to open.
 * VDB_EINVAL for a negative value. */
int vdb_collection_set_n_probe(vdb_collection *c, int64_t n_probe);

/* Opens (or creates, when dir holds no collection yet) the collection stored in dir; dir NULL =
 * in memory. For an existing collection cfg->metric and cfg->dim are ignored (the stored ones
 * win). Damage is VDB_ECORRUPT naming the file; a torn last log record is dropped. */
int vdb_collection_open(const char *dir, const vdb_collection_config *cfg, vdb_collection **out);
/* Checkpoints when the log is large, then frees everything. NULL is a no-op. */
int vdb_collection_close(vdb_collection *c);

enum { VDB_OP_ADD = 1, VDB_OP_UPSERT = 2, VDB_OP_UPDATE = 3, VDB_OP_DELETE = 4 };

/* One write. ids are required (unique within the batch: the caller checks). vectors (n * dim
 * float32) are required for ADD; optional for UPSERT/UPDATE when every record exists; ignored by
 * DELETE. metas / docs: NULL = not given; otherwise per record, a NULL entry = None.
 *   ADD    new ids are appended; existing ids are skipped (status 0).
 *   UPSERT existing ids are updated (vector replaced, metadata merged, document replaced if given);
 *          new ids are appended (need a vector).
 *   UPDATE existing ids only; unknown ids are skipped (status 0).
 *   DELETE existing ids are removed; unknown ids are skipped (status 0).
 * status (optional, n bytes, caller-allocated): 1 where the record was changed, 0 where skipped. */
typedef struct {
    size_t n;
    int64_t dim; /* of vectors (must equal the collection's once fixed) */
    const char *const *ids;
    const uint32_t *id_lens;
    const float *vectors;
    const uint8_t *const *metas;
    const uint32_t *meta_lens;
    const char *const *docs;
    const uint32_t *doc_lens;
} vdb_batch;

int vdb_collection_write(vdb_collection *c, int op, const vdb_batch *b, uint8_t *status);

/* Deletes every live row the filter matches (one logged operation); *n_deleted = count. With
 * only_ids (unique, the caller checks), only those of them the filter matches: matching and
 * deleting are one operation, so no other write comes between them. */
int vdb_collection_delete_where(vdb_collection *c, const vdb_filter *f, const char *const *only_ids,
                                const uint32_t *only_lens, size_t n_only, int64_t *n_deleted);

enum { VDB_INC_VECTORS = 1, VDB_INC_METAS = 2, VDB_INC_DOCS = 4, VDB_INC_DISTANCES = 8 };

/* A result: n records (for a query, the concatenation of every query's hits; counts[q] says how
 * many belong to query q). Strings are in one arena: record i's id is arena[id_off[i] ..
 * id_off[i] + id_len[i]); meta_len / doc_len are UINT32_MAX for None. */
typedef struct {
    size_t n;
    size_t nq;
    size_t *counts;
    int64_t dim;
    float *vectors;   /* n * dim, when included */
    float *distances; /* n, when included */
    uint64_t *id_off, *meta_off, *doc_off;
    uint32_t *id_len, *meta_len, *doc_len;
    uint8_t *arena;
} vdb_result;

void vdb_result_free(vdb_result *r);

typedef struct {
    const char *const *ids; /* NULL: every live row in insertion order */
    const uint32_t *id_lens;
    size_t n_ids;
    const vdb_filter *filter; /* NULL: no filter */
    int64_t offset;           /* rows of the matching sequence to skip */
    int64_t limit;            /* < 0: no limit */
    unsigned include;         /* VDB_INC_* */
} vdb_get_request;

/* With ids: the records in the order asked, unknown ids left out (the filter applies too). */
int vdb_collection_get(vdb_collection *c, const vdb_get_request *req, vdb_result **out);

/* Number of live rows the filter matches (NULL: all). */
int vdb_collection_count(vdb_collection *c, const vdb_filter *filter, int64_t *out);

typedef struct {
    const float *queries; /* nq * dim */
    size_t nq;
    int64_t dim; /* of the queries: must equal the collection's (any, while it is empty) */
    size_t k;
    const vdb_filter *filter;
    unsigned include;
    int64_t n_probe; /* <= 0: the collection's default (IVF only) */
    const char *const *ids; /* not NULL: search only these records (unknown ids are ignored) */
    const uint32_t *id_lens;
    size_t n_ids;
} vdb_query_request;

int vdb_collection_query(vdb_collection *c, const vdb_query_request *req, vdb_result **out);
/* Rows the calling thread's last query re-ranked through codes (sq8 or IVF pq4; 0 without codes):
 * for tests and benchmarks. */
size_t vdb_collection_last_reranked(void);

typedef struct {
    int64_t count;
    int64_t dim;
    vdb_metric metric;
    int64_t rows_total; /* live + dead rows held */
    int64_t wal_bytes;
    int64_t generation;
    int64_t bytes_on_disk;
    int64_t bytes_in_memory;
    int ivf_trained;        /* 0: exact search */
    int64_t n_lists, n_probe;
    int64_t list_min, list_max;
    double list_mean;
    int64_t added_since_training;
    int64_t count_at_training; /* vectors the index held at its last training */
    int batch_depth;
    int quantization;
} vdb_collection_stats;

int vdb_collection_stats_get(vdb_collection *c, vdb_collection_stats *out);

/* Writes may trigger maintenance (index training, a checkpoint). When that fails the write still
 * succeeds (it is durable already) and the failure is kept for the thread that made the write:
 * this returns 1 and copies the message of the calling thread's last write, delete_where, batch
 * end or rebuild (each clears it when it starts) once, 0 when there is none. vdb_collection_rebuild
 * leaves its note here too. Per thread, so no other thread's write can take or replace it. */
int vdb_collection_take_warning(char *buf, size_t cap);

/* Writes a new snapshot generation and truncates the log (see vdb_store.h). */
int vdb_collection_checkpoint(vdb_collection *c);
/* Verifies every chunk of the mapped vectors not verified yet (open verifies only headers and
 * small files; see vdb_store.h): VDB_ECORRUPT naming the file on damage. Runs beside readers. */
int vdb_collection_verify(vdb_collection *c);

#endif
