/* vdb_store — the files of one collection: manifest, write-ahead log, snapshot generations.
 *
 * Layout of a collection directory (format version 1; all integers little-endian):
 *   MANIFEST        "VDBMANI1" u32 version u32 metric u64 dim u64 generation u32 crc32c(previous bytes)
 *                   Replaced atomically: written to MANIFEST.tmp, fsync, rename, fsync directory.
 *   wal-<G>         the log of writes made since snapshot generation G: records of
 *                   u32 payload_len, u32 ~payload_len, u32 crc32c(type byte + payload), u8 type, payload,
 *                   "VDBE" end marker. A record is appended with one write() and fdatasync'd before the
 *                   call returns. Types (vdb_collection.c): 1 one write (vdb_logrec.h), 2 a batch's
 *                   writes as one group (per write u32 len + a type-1 payload; whole or absent).
 *                   Logs written before type 2 existed hold type 1 only and read as they always did.
 *   gen-<G>/        snapshot generation G (absent for G = 0, the empty collection):
 *     vectors.bin   64-byte header "VDBVECT1" u32 version u32 metric u64 n_rows u64 dim
 *                   u32 crc32c(data) u32 crc32c(header bytes 0..35), zero padding; then n_rows*dim f32.
 *     vectors.crc   32-byte header "VDBVCRC1" u32 version u32 chunk_bytes u64 n_chunks
 *                   u32 crc32c(table) u32 crc32c(header bytes 0..27); then the table: u32 crc32c of
 *                   each chunk_bytes-long piece of vectors.bin's data (the last one shorter).
 *                   chunk_bytes is a power of two from 4096 to 65536: 65536 for vectors.bin, 4096
 *                   for ivfvec.bin and for a quantized collection's vectors.bin (their rows are read
 *                   one by one to re-rank: a page each, not 64 KiB).
 *                   Generations written before vectors.crc existed lack it: their data checksum is
 *                   verified whole at open, as it always was.
 *     records.bin   36-byte header "VDBRECS1" u32 version u64 n_rows u64 payload_len u32 crc32c(payload)
 *                   u32 crc32c(header bytes 0..31); payload: per row u32 id_len id,
 *                   u32 meta_len meta (UINT32_MAX = none), u32 doc_len doc (UINT32_MAX = none).
 *     ids.bin       the ids and their hash table, so that open reads them instead of parsing
 *                   records.bin and rehashing every id (format in vdb_idmap.c; checksummed, and its
 *                   structure checked at open). With it, records.bin's header is checked at open and
 *                   its payload read (and checked) only when metadata or documents are first needed:
 *                   a read that returns them, a filter, a write, a checkpoint, `vectordb check`.
 *                   Generations written before ids.bin existed parse records.bin at open, as before,
 *                   and gain ids.bin at their next checkpoint.
 *     ivf.bin, ivfvec.bin, ivfvec.crc  a trained IVF index (then there is no vectors.bin): its
 *                   centroids and list rows (vdb_ivf.h), and its vectors in list order in the format of
 *                   vectors.bin / vectors.crc, mapped and verified the same way; ivfpq4.bin and
 *                   ivfpq4.crc: its 4-bit PQ codes, when it has them, mapped and verified the same
 *                   way (the lists point into the mapping; vdb_ivf.h).
 *     codes.bin, codes.crc  a quantized collection's 8-bit codes (vdb_codes.h), the codes' checksums
 *                   in the format of vectors.crc (4096-byte chunks), verified the same way.
 *     Other files may be added by the index and are listed in no table: a
 *     generation directory is only ever used after MANIFEST names it, so it is complete.
 * Checkpoint: write gen-<G+1>/ (each file fsync'd, then the directory), switch MANIFEST, start
 * wal-<G+1>, then remove gen-<G>/ and wal-<G>. A crash at any point leaves G or G+1 whole; leftovers
 * are removed on the next open.
 * Open: MANIFEST, every header and every checksum of the other files are validated before use; the
 * vectors are mapped with mmap (MAP_PRIVATE: in-place updates stay in memory until the next
 * checkpoint) and not read: open time and resident memory do not grow with them. What is verified
 * when: vectors.bin's header and the whole of vectors.crc at open; each chunk of vector data
 * on its first use (a search reading it, a re-rank of one of its rows, a get of its embeddings, an
 * in-place update), and every chunk before anything copies them (checkpoint, compaction, training)
 * and in `vectordb check`. A damaged chunk is VDB_ECORRUPT naming vectors.bin, never a wrong result. A torn last
 * log record (shorter than its length, or zero-filled at its end: what a crash leaves) is dropped
 * and the log truncated there; any other damage (a flipped bit anywhere, a record without its end
 * marker that is not zero-filled) is VDB_ECORRUPT naming the file. A log cut exactly at a record
 * boundary looks like a crash before those appends, as in SQLite's WAL.
 *
 * Functions here do file I/O only; they keep no state of their own and are safe to call from any
 * thread on different files. Buffers they return are malloc'd (or mmap'd) and owned by the caller.
 */
#ifndef VDB_STORE_H
#define VDB_STORE_H

#include <stddef.h>
#include <stdint.h>

#define VDB_FORMAT_VERSION 1u
/* The largest vector dimension the files hold: MANIFEST and log readers treat a larger one as
 * damage, so the writers refuse it first (a collection never writes what it cannot reopen). */
#define VDB_MAX_DIM (1u << 20)

typedef struct {
    uint32_t metric;
    uint64_t dim;
    uint64_t generation;
} vdb_manifest;

/* VDB_ENOTFOUND when there is no MANIFEST (a new collection). */
int vdb_manifest_read(const char *dir, vdb_manifest *out);
int vdb_manifest_write(const char *dir, const vdb_manifest *m);

int vdb_fsync_dir(const char *dir);
/* write() / read() until len bytes are done: short counts and EINTR are retried. Errors name path:
 * VDB_EIO with errno's text, or (read) VDB_ECORRUPT "file '<path>' is truncated" at end of file.
 * Every file of a collection, the index's too (vdb_ivf_file.c), goes through these. */
int vdb_write_all(int fd, const void *buf, size_t len, const char *path);
int vdb_read_all(int fd, void *buf, size_t len, const char *path);
/* Removes dir/name recursively (one level of files is enough for generations). */
int vdb_remove_tree(const char *path);

/* Write-ahead log. */
typedef int (*vdb_wal_fn)(void *ctx, uint8_t type, const uint8_t *payload, size_t len);
/* Replays wal at path through fn (stops at fn's first error and returns it); drops a torn tail and
 * truncates the file there. *end_out = bytes of valid log. A missing file is an empty log. */
int vdb_wal_replay(const char *path, vdb_wal_fn fn, void *ctx, uint64_t *end_out);
/* Opens (creating) the log for appending at its end. */
int vdb_wal_open(const char *path, int *fd_out);
/* Appends one record with one write(); fdatasync when sync. On any failure the file is truncated
 * back to its previous size where possible; the caller must refuse further writes. */
int vdb_wal_append(int fd, const char *path, uint64_t *end, uint8_t type, const uint8_t *payload,
                   size_t len, int sync);
int vdb_fdatasync(int fd, const char *path);

/* Snapshot vectors file: written from row ranges (with its vectors.crc beside it), read back as a
 * mapping whose data chunks are verified on first use. */
#define VDB_VECTORS_CHUNK 65536u
#define VDB_VECTORS_SMALL_CHUNK 4096u
/* crc_bytes: the data covered by one checksum of the .crc file (a power of two from
 * VDB_VECTORS_SMALL_CHUNK to VDB_VECTORS_CHUNK). */
int vdb_vectors_write(const char *path, uint32_t metric, uint64_t dim, const float *const *chunks,
                      const uint64_t *chunk_rows, size_t n_chunks, uint32_t crc_bytes);
typedef struct vdb_vecmap vdb_vecmap;
/* Validates the header (and vectors.crc) and maps the file; *data points at n_rows*dim floats
 * (NULL when n_rows is 0). Without vectors.crc (files written before it) the whole data checksum
 * is verified here. Close with vdb_vecmap_close. */
int vdb_vecmap_open(const char *path, uint32_t metric, uint64_t dim, uint64_t *n_rows, float **data,
                    vdb_vecmap **out);
/* Verifies the chunks covering data bytes [lo, hi) not verified yet: VDB_ECORRUPT naming the file
 * on a mismatch. Safe to call from concurrent readers (a chunk may be checked twice, harmlessly).
 * Call before reading those bytes, and before changing them in place. */
int vdb_vecmap_verify(vdb_vecmap *m, uint64_t lo, uint64_t hi);
int vdb_vecmap_verify_all(vdb_vecmap *m);
/* Sets the error of the first damaged chunk found (VDB_ECORRUPT naming the file), or returns VDB_OK. */
int vdb_vecmap_error(const vdb_vecmap *m);
/* Whether every chunk is verified (a reader may then skip vdb_vecmap_verify). */
int vdb_vecmap_verified(const vdb_vecmap *m);
size_t vdb_vecmap_len(const vdb_vecmap *m);
/* Tells the kernel reads will be scattered (re-ranking): no read-ahead around each fault. */
void vdb_vecmap_advise_random(vdb_vecmap *m);
void vdb_vecmap_close(vdb_vecmap *m);

/* The same checksum table (<stem>.crc, chunks of crc_bytes) for data that another file holds (e.g. the
 * codes of codes.bin), and a vdb_vecmap over that data, already mapped by the caller (who keeps the
 * mapping): verified with vdb_vecmap_verify / _verify_all, errors naming path, closed with
 * vdb_vecmap_close. VDB_ENOTFOUND (no error set) when path has no .crc file. */
int vdb_crc_table_write(const char *path, const void *const *chunks, const uint64_t *bytes, size_t n_chunks,
                        uint32_t crc_bytes);
int vdb_vecmap_wrap(const char *path, const void *data, uint64_t data_len, vdb_vecmap **out);

/* Snapshot records file: payload as described above, built by the caller. */
int vdb_records_write(const char *path, uint64_t n_rows, const uint8_t *payload, size_t len);
/* Reads and checks the file; *payload is malloc'd. */
int vdb_records_check_header(const char *path, uint64_t n_rows);
int vdb_records_read(const char *path, uint64_t *n_rows, uint8_t **payload, size_t *len);

/* Other snapshot files (e.g. an index's): creates path from a header and chunks, fsyncs, closes. */
int vdb_file_write_new(const char *path, const uint8_t *head, size_t head_len, const void *const *chunks,
                       const uint64_t *chunk_bytes, size_t n_chunks);
/* Reads a whole file into a malloc'd buffer (a missing file is VDB_ECORRUPT naming it). */
int vdb_file_read_all(const char *path, uint8_t **buf, size_t *len);

#endif
