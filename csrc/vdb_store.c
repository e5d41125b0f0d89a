/* vdb_store — file I/O of a collection: write-all/read-all, MANIFEST, the write-ahead log, and the
 * vectors.bin and records.bin snapshot files. See vdb_store.h for the format. */
#include "vdb_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vdb_bytes.h"
#include "vdb_crc32c.h"
#include "vdb_error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "vectordb stores float32 little-endian and maps it directly: big-endian hosts are not supported"
#endif

#define MANIFEST_SIZE 36
#define VECTORS_HEADER 64
#define VECTORS_CRC_HEADER 32
#define RECORDS_HEADER 36
#define WAL_HEADER 13
#define WAL_TRAILER 4
/* Each record ends with this marker. A crash can leave a record short or zero-filled at its end,
 * never with other bytes there: so a missing marker is a torn write only when the end is zero. */
static const uint8_t wal_marker[WAL_TRAILER] = {'V', 'D', 'B', 'E'};

static int io_error(const char *what, const char *path)
{
    int e = errno;
    return vdb_set_io_error(e, "%s '%s': %s", what, path, strerror(e));
}

int vdb_write_all(int fd, const void *buf, size_t len, const char *path)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return io_error("cannot write", path);
        }
        p += w;
        len -= (size_t)w;
    }
    return VDB_OK;
}

int vdb_read_all(int fd, void *buf, size_t len, const char *path)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t r = read(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (r < 0) {
            if (errno == EINTR) continue;
            return io_error("cannot read", path);
        }
        if (r == 0) return vdb_set_error(VDB_ECORRUPT, "file '%s' is truncated", path);
        p += r;
        len -= (size_t)r;
    }
    return VDB_OK;
}

/* Opens a snapshot file for reading and stats it. A missing one is damage: the MANIFEST names its
 * generation, so every file of it was written. On failure no descriptor is left open. */
static int open_snapshot_file(const char *path, int *fd, struct stat *st)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) return errno == ENOENT ? vdb_set_error(VDB_ECORRUPT, "file '%s' is missing", path)
                                        : io_error("cannot open", path);
    if (fstat(*fd, st) != 0) {
        int rc = io_error("cannot stat", path);
        close(*fd);
        *fd = -1;
        return rc;
    }
    return VDB_OK;
}

int vdb_fdatasync(int fd, const char *path)
{
    if (fdatasync(fd) != 0) return io_error("cannot sync", path);
    return VDB_OK;
}

int vdb_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_error("cannot open directory", dir);
    int rc = fsync(fd) == 0 ? VDB_OK : io_error("cannot sync directory", dir);
    close(fd);
    return rc;
}

int vdb_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? VDB_OK : io_error("cannot stat", path);
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return io_error("cannot open directory", path);
        struct dirent *e;
        char child[4096];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            int rc = vdb_remove_tree(child);
            if (rc) {
                closedir(d);
                return rc;
            }
        }
        closedir(d);
        if (rmdir(path) != 0) return io_error("cannot remove directory", path);
    } else if (unlink(path) != 0) {
        return io_error("cannot remove", path);
    }
    return VDB_OK;
}

/* Writes a whole new file, fsync'd. */
static int write_new_file(const char *path, const uint8_t *head, size_t head_len, const float *const *chunks,
                          const uint64_t *chunk_bytes, size_t n_chunks)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return io_error("cannot create", path);
    int rc = vdb_write_all(fd, head, head_len, path);
    for (size_t i = 0; rc == VDB_OK && i < n_chunks; i++) rc = vdb_write_all(fd, chunks[i], chunk_bytes[i], path);
    if (rc == VDB_OK && fsync(fd) != 0) rc = io_error("cannot sync", path);
    if (close(fd) != 0 && rc == VDB_OK) rc = io_error("cannot close", path);
    return rc;
}

int vdb_file_write_new(const char *path, const uint8_t *head, size_t head_len, const void *const *chunks,
                       const uint64_t *chunk_bytes, size_t n_chunks)
{
    return write_new_file(path, head, head_len, (const float *const *)chunks, chunk_bytes, n_chunks);
}

int vdb_file_read_all(const char *path, uint8_t **buf, size_t *len)
{
    struct stat st;
    int fd, rc;
    *buf = NULL;
    *len = 0;
    if ((rc = open_snapshot_file(path, &fd, &st))) return rc;
    if (!(*buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
    } else if ((rc = vdb_read_all(fd, *buf, (size_t)st.st_size, path)) == VDB_OK) {
        *len = (size_t)st.st_size;
    }
    close(fd);
    if (rc) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

int vdb_manifest_write(const char *dir, const vdb_manifest *m)
{
    char tmp[4096], final[4096];
    uint8_t b[MANIFEST_SIZE];
    if (m->metric > 2 || m->dim > VDB_MAX_DIM) /* what vdb_manifest_read would refuse */
        return vdb_set_error(VDB_EINVAL, "cannot write a MANIFEST with metric %u and dimension %llu (at most %u)",
                             m->metric, (unsigned long long)m->dim, VDB_MAX_DIM);
    snprintf(tmp, sizeof tmp, "%s/MANIFEST.tmp", dir);
    snprintf(final, sizeof final, "%s/MANIFEST", dir);
    memcpy(b, "VDBMANI1", 8);
    vdb_put_u32(b + 8, VDB_FORMAT_VERSION);
    vdb_put_u32(b + 12, m->metric);
    vdb_put_u64(b + 16, m->dim);
    vdb_put_u64(b + 24, m->generation);
    vdb_put_u32(b + 32, vdb_crc32c(0, b, 32));
    int rc = write_new_file(tmp, b, sizeof b, NULL, NULL, 0);
    if (rc) return rc;
    if (rename(tmp, final) != 0) return io_error("cannot rename", tmp);
    return vdb_fsync_dir(dir);
}

int vdb_manifest_read(const char *dir, vdb_manifest *out)
{
    char path[4096];
    uint8_t b[MANIFEST_SIZE + 1];
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return vdb_set_error(VDB_ENOTFOUND, "no MANIFEST in '%s'", dir);
        return io_error("cannot open", path);
    }
    ssize_t got = read(fd, b, sizeof b);
    close(fd);
    if (got < 0) return io_error("cannot read", path);
    if (got != MANIFEST_SIZE || memcmp(b, "VDBMANI1", 8) != 0 || vdb_get_u32(b + 32) != vdb_crc32c(0, b, 32))
        return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (bad size, magic or checksum)", path);
    uint32_t version = vdb_get_u32(b + 8);
    if (version != VDB_FORMAT_VERSION)
        return vdb_set_error(VDB_ECORRUPT, "file '%s' has format version %u; this vectordb reads version %u",
                             path, version, VDB_FORMAT_VERSION);
    out->metric = vdb_get_u32(b + 12);
    out->dim = vdb_get_u64(b + 16);
    out->generation = vdb_get_u64(b + 24);
    if (out->metric > 2 || out->dim > VDB_MAX_DIM)
        return vdb_set_error(VDB_ECORRUPT, "file '%s' holds an invalid metric or dimension", path);
    return VDB_OK;
}

/* ---- write-ahead log ---- */

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

int vdb_wal_replay(const char *path, vdb_wal_fn fn, void *ctx, uint64_t *end_out)
{
    int rc = VDB_OK, fd = open(path, O_RDWR | O_CLOEXEC);
    uint8_t *data = NULL;
    *end_out = 0;
    if (fd < 0) return errno == ENOENT ? VDB_OK : io_error("cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = io_error("cannot stat", path);
        goto cleanup;
    }
    size_t size = (size_t)st.st_size, pos = 0;
    if (size) {
        data = malloc(size);
        if (!data) {
            rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
            goto cleanup;
        }
        if ((rc = vdb_read_all(fd, data, size, path))) goto cleanup;
    }
    while (pos < size) {
        size_t left = size - pos;
        const uint8_t *h = data + pos;
        if (left < WAL_HEADER) break; /* torn header: a crash can shorten the file, a bit flip cannot */
        uint32_t len = vdb_get_u32(h), check = vdb_get_u32(h + 4), crc = vdb_get_u32(h + 8);
        if (len != ~check) {
            if (all_zero(h, left)) break; /* a zero-filled tail: the last append never landed */
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: bad record header at byte %zu", path, pos);
            goto cleanup;
        }
        if ((uint64_t)len + WAL_TRAILER > left - WAL_HEADER) break; /* torn: shorter than its length */
        size_t end = pos + WAL_HEADER + (size_t)len;
        if (memcmp(data + end, wal_marker, WAL_TRAILER) != 0) {
            if (end + WAL_TRAILER == size && all_zero(data + end, WAL_TRAILER)) break; /* torn, zero-filled */
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: record at byte %zu has no end marker", path, pos);
            goto cleanup;
        }
        if (vdb_crc32c(0, h + 12, (size_t)len + 1) != crc) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt: checksum mismatch in record at byte %zu",
                               path, pos);
            goto cleanup;
        }
        if ((rc = fn(ctx, h[12], h + WAL_HEADER, len))) goto cleanup;
        pos = end + WAL_TRAILER;
    }
    if (pos < size) {
        /* Drop the torn tail so the next append starts on a record boundary. */
        if (ftruncate(fd, (off_t)pos) != 0 || fdatasync(fd) != 0) {
            rc = io_error("cannot truncate the torn end of", path);
            goto cleanup;
        }
    }
    *end_out = pos;
cleanup:
    free(data);
    close(fd);
    return rc;
}

int vdb_wal_open(const char *path, int *fd_out)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return io_error("cannot open", path);
    *fd_out = fd;
    return VDB_OK;
}

int vdb_wal_append(int fd, const char *path, uint64_t *end, uint8_t type, const uint8_t *payload,
                   size_t len, int sync)
{
    if (len > UINT32_MAX - 1) return vdb_set_error(VDB_EINVAL, "a single write of %zu bytes is too large (max 4 GiB)", len);
    uint8_t head[WAL_HEADER];
    vdb_put_u32(head, (uint32_t)len);
    vdb_put_u32(head + 4, ~(uint32_t)len);
    head[12] = type;
    vdb_put_u32(head + 8, vdb_crc32c(vdb_crc32c(0, &type, 1), payload, len));
    /* One writev: the record reaches the file in a single call, without copying the payload. */
    struct iovec iov[3] = {{head, WAL_HEADER}, {(void *)payload, len}, {(void *)wal_marker, WAL_TRAILER}};
    size_t done = 0;
    int rc = VDB_OK;
    ssize_t w = writev(fd, iov, 3);
    if (w < 0 && errno != EINTR) {
        rc = io_error("cannot write", path);
    } else {
        done = w < 0 ? 0 : (size_t)w;
        /* A short write: finish piece by piece. */
        for (int i = 0; rc == VDB_OK && i < 3; i++) {
            size_t sz = iov[i].iov_len;
            if (done >= sz) {
                done -= sz;
                continue;
            }
            rc = vdb_write_all(fd, (const uint8_t *)iov[i].iov_base + done, sz - done, path);
            done = 0;
        }
    }
    if (rc == VDB_OK && sync) rc = vdb_fdatasync(fd, path);
    if (rc) {
        /* Best effort: take the partial record back so the log stays clean. */
        if (ftruncate(fd, (off_t)*end) != 0) { /* the caller refuses further writes anyway */
        }
        return rc;
    }
    *end += WAL_HEADER + len + WAL_TRAILER;
    return VDB_OK;
}

/* ---- snapshot files ---- */

/* vectors.crc beside vectors.bin: the same directory, the same stem. */
static void crc_path_of(const char *path, char *out, size_t cap)
{
    size_t n = strlen(path);
    if (n >= 4 && strcmp(path + n - 4, ".bin") == 0 && n < cap) {
        memcpy(out, path, n - 4);
        memcpy(out + n - 4, ".crc", 5);
    } else {
        snprintf(out, cap, "%s.crc", path);
    }
}

/* The checksums of data given as chunks: one per crc_bytes (*table, malloc'd, n_crc of them) and the
 * whole data's (*whole). */
static int crc_table_build(const char *path, const void *const *chunks, const uint64_t *bytes, size_t n_chunks,
                           uint32_t crc_bytes, uint8_t **table, uint64_t *n_crc, uint32_t *whole)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n_chunks; i++) total += bytes[i];
    *n_crc = (total + crc_bytes - 1) / crc_bytes;
    *whole = 0;
    if (!(*table = malloc(*n_crc ? *n_crc * 4 : 1)))
        return vdb_set_error(VDB_ENOMEM, "out of memory for the checksums of '%s'", path);
    uint64_t pos = 0, k = 0;
    uint32_t part = 0;
    for (size_t i = 0; i < n_chunks; i++) {
        const uint8_t *p = (const uint8_t *)chunks[i];
        uint64_t left = bytes[i];
        *whole = vdb_crc32c(*whole, p, left);
        while (left) {
            uint64_t take = crc_bytes - pos % crc_bytes;
            if (take > left) take = left;
            part = vdb_crc32c(part, p, take);
            p += take;
            left -= take;
            pos += take;
            if (pos % crc_bytes == 0 || pos == total) {
                vdb_put_u32(*table + 4 * k++, part);
                part = 0;
            }
        }
    }
    return VDB_OK;
}

/* Writes path's .crc file from a table made by crc_table_build. */
static int crc_table_file_write(const char *path, const uint8_t *table, uint64_t n_crc, uint32_t crc_bytes)
{
    uint8_t ch[VECTORS_CRC_HEADER] = {0};
    char cpath[4200];
    memcpy(ch, "VDBVCRC1", 8);
    vdb_put_u32(ch + 8, VDB_FORMAT_VERSION);
    vdb_put_u32(ch + 12, crc_bytes);
    vdb_put_u64(ch + 16, n_crc);
    vdb_put_u32(ch + 24, vdb_crc32c(0, table, n_crc * 4));
    vdb_put_u32(ch + 28, vdb_crc32c(0, ch, 28));
    crc_path_of(path, cpath, sizeof cpath);
    const float *tc[1] = {(const float *)(const void *)table};
    uint64_t tb[1] = {n_crc * 4};
    return write_new_file(cpath, ch, sizeof ch, tc, tb, 1);
}

int vdb_crc_table_write(const char *path, const void *const *chunks, const uint64_t *bytes, size_t n_chunks,
                        uint32_t crc_bytes)
{
    uint8_t *table;
    uint64_t n_crc;
    uint32_t whole;
    int rc = crc_table_build(path, chunks, bytes, n_chunks, crc_bytes, &table, &n_crc, &whole);
    if (rc == VDB_OK) rc = crc_table_file_write(path, table, n_crc, crc_bytes);
    free(table);
    return rc;
}

int vdb_vectors_write(const char *path, uint32_t metric, uint64_t dim, const float *const *chunks,
                      const uint64_t *chunk_rows, size_t n_chunks, uint32_t crc_bytes)
{
    uint8_t h[VECTORS_HEADER] = {0}, *table = NULL;
    uint64_t n_rows = 0, n_crc;
    uint32_t crc;
    uint64_t *bytes = malloc((n_chunks ? n_chunks : 1) * sizeof *bytes);
    if (!bytes) return vdb_set_error(VDB_ENOMEM, "out of memory writing '%s'", path);
    for (size_t i = 0; i < n_chunks; i++) {
        n_rows += chunk_rows[i];
        bytes[i] = chunk_rows[i] * dim * sizeof(float);
    }
    /* One checksum per crc_bytes of data (vectors.crc), and the whole data's (header). */
    int rc = crc_table_build(path, (const void *const *)chunks, bytes, n_chunks, crc_bytes, &table, &n_crc, &crc);
    if (rc == VDB_OK) {
        memcpy(h, "VDBVECT1", 8);
        vdb_put_u32(h + 8, VDB_FORMAT_VERSION);
        vdb_put_u32(h + 12, metric);
        vdb_put_u64(h + 16, n_rows);
        vdb_put_u64(h + 24, dim);
        vdb_put_u32(h + 32, crc);
        vdb_put_u32(h + 36, vdb_crc32c(0, h, 36));
        rc = write_new_file(path, h, sizeof h, chunks, bytes, n_chunks);
    }
    if (rc == VDB_OK) rc = crc_table_file_write(path, table, n_crc, crc_bytes);
    free(table);
    free(bytes);
    return rc;
}

struct vdb_vecmap {
    void *map;
    size_t map_len;
    const uint8_t *data;
    uint64_t data_len;
    uint32_t *crc;                /* per chunk; NULL when the whole file was verified at open */
    size_t n_chunks;
    uint32_t chunk;               /* bytes a checksum covers (vectors.crc's header) */
    _Atomic unsigned char *ok;    /* chunk verified */
    _Atomic int all;              /* every chunk verified */
    _Atomic size_t n_ok;          /* chunks verified (all is set when it reaches n_chunks) */
    _Atomic int64_t bad;          /* first damaged chunk found, -1 none */
    char *path;
};

static int chunk_ok(uint32_t c)
{
    return c >= VDB_VECTORS_SMALL_CHUNK && c <= VDB_VECTORS_CHUNK && (c & (c - 1)) == 0;
}

static int vecmap_crc_table(vdb_vecmap *m, const char *path)
{
    char cpath[4200];
    uint8_t *buf = NULL;
    size_t len;
    crc_path_of(path, cpath, sizeof cpath);
    if (access(cpath, F_OK) != 0 && errno == ENOENT) return VDB_ENOTFOUND; /* written before vectors.crc */
    int rc = vdb_file_read_all(cpath, &buf, &len);
    if (rc) return rc;
    uint32_t chunk = len >= VECTORS_CRC_HEADER ? vdb_get_u32(buf + 12) : 0;
    uint64_t want = chunk_ok(chunk) ? (m->data_len + chunk - 1) / chunk : 0;
    if (len < VECTORS_CRC_HEADER || memcmp(buf, "VDBVCRC1", 8) != 0 ||
        vdb_get_u32(buf + 28) != vdb_crc32c(0, buf, 28)) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (bad magic or header checksum)", cpath);
    } else if (vdb_get_u32(buf + 8) != VDB_FORMAT_VERSION || !chunk_ok(chunk)) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' has format version %u, chunk %u; this vectordb reads version %u, "
                           "chunks of %u to %u bytes (powers of two)", cpath, vdb_get_u32(buf + 8), chunk,
                           VDB_FORMAT_VERSION, VDB_VECTORS_SMALL_CHUNK, VDB_VECTORS_CHUNK);
    } else if (vdb_get_u64(buf + 16) != want || len != VECTORS_CRC_HEADER + want * 4 ||
               vdb_get_u32(buf + 24) != vdb_crc32c(0, buf + VECTORS_CRC_HEADER, want * 4)) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (its checksum table does not match '%s')", cpath,
                           path);
    } else if (!(m->crc = malloc(want ? want * 4 : 4)) || !(m->ok = calloc(want ? want : 1, 1))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", cpath);
    } else {
        m->n_chunks = (size_t)want;
        m->chunk = chunk;
        for (size_t i = 0; i < m->n_chunks; i++) m->crc[i] = vdb_get_u32(buf + VECTORS_CRC_HEADER + 4 * i);
    }
    free(buf);
    return rc;
}

int vdb_vecmap_open(const char *path, uint32_t metric, uint64_t dim, uint64_t *n_rows, float **data,
                    vdb_vecmap **out)
{
    uint8_t h[VECTORS_HEADER];
    int rc, fd;
    struct stat st;
    vdb_vecmap *m = NULL;
    *out = NULL;
    *data = NULL;
    if ((rc = open_snapshot_file(path, &fd, &st))) return rc;
    if ((size_t)st.st_size < VECTORS_HEADER || (rc = vdb_read_all(fd, h, sizeof h, path))) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is truncated (no complete header)", path);
        goto cleanup;
    }
    if (memcmp(h, "VDBVECT1", 8) != 0 || vdb_get_u32(h + 36) != vdb_crc32c(0, h, 36)) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (bad magic or header checksum)", path);
        goto cleanup;
    }
    if (vdb_get_u32(h + 8) != VDB_FORMAT_VERSION) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' has format version %u; this vectordb reads version %u", path,
                           vdb_get_u32(h + 8), VDB_FORMAT_VERSION);
        goto cleanup;
    }
    for (size_t i = 40; i < VECTORS_HEADER; i++)
        if (h[i]) {
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (header padding is not zero)", path);
            goto cleanup;
        }
    uint64_t rows = vdb_get_u64(h + 16), d = vdb_get_u64(h + 24);
    if (vdb_get_u32(h + 12) != metric || d != dim || (d && rows > (UINT64_MAX / 4) / d) ||
        (uint64_t)st.st_size != VECTORS_HEADER + rows * d * 4) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' does not match its collection (size, metric or dimension)", path);
        goto cleanup;
    }
    if (!(m = calloc(1, sizeof *m)) || !(m->path = strdup(path))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory opening '%s'", path);
        goto cleanup;
    }
    atomic_store(&m->bad, -1);
    *n_rows = rows;
    m->data_len = rows * d * 4;
    if (rows) {
        m->map_len = (size_t)st.st_size;
        /* Private and writable: an in-place update changes memory only, never the snapshot. */
        void *mp = mmap(NULL, m->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (mp == MAP_FAILED) {
            m->map_len = 0;
            rc = io_error("cannot map", path);
            goto cleanup;
        }
        m->map = mp;
        m->data = (const uint8_t *)mp + VECTORS_HEADER;
        *data = (float *)(void *)(uintptr_t)m->data;
    }
    rc = vecmap_crc_table(m, path);
    if (rc == VDB_ENOTFOUND) {
        /* Written before vectors.crc existed: one checksum over all the data, checked now. */
        rc = VDB_OK;
        if (rows && vdb_crc32c(0, m->data, m->data_len) != vdb_get_u32(h + 32))
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (vector data checksum mismatch)", path);
        atomic_store(&m->all, 1);
    } else if (rc == VDB_OK && m->n_chunks == 0) {
        atomic_store(&m->all, 1);
    }
cleanup:
    close(fd);
    if (rc) {
        vdb_vecmap_close(m);
        *data = NULL;
        return rc;
    }
    *out = m;
    return VDB_OK;
}

int vdb_vecmap_wrap(const char *path, const void *data, uint64_t data_len, vdb_vecmap **out)
{
    vdb_vecmap *m = calloc(1, sizeof *m);
    *out = NULL;
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return vdb_set_error(VDB_ENOMEM, "out of memory opening '%s'", path);
    }
    atomic_store(&m->bad, -1);
    m->data = data;
    m->data_len = data_len;
    int rc = vecmap_crc_table(m, path);
    if (rc) {
        vdb_vecmap_close(m);
        return rc;
    }
    if (m->n_chunks == 0) atomic_store(&m->all, 1);
    *out = m;
    return VDB_OK;
}

int vdb_vecmap_verify(vdb_vecmap *m, uint64_t lo, uint64_t hi)
{
    if (!m || atomic_load_explicit(&m->all, memory_order_acquire) || lo >= hi) return VDB_OK;
    if (hi > m->data_len) hi = m->data_len;
    const uint64_t cb = m->chunk;
    for (uint64_t c = lo / cb; c * cb < hi; c++) {
        if (atomic_load_explicit(&m->ok[c], memory_order_acquire)) continue;
        uint64_t a = c * cb, b = a + cb < m->data_len ? a + cb : m->data_len;
        if (vdb_crc32c(0, m->data + a, b - a) != m->crc[c]) {
            int64_t none = -1;
            atomic_compare_exchange_strong(&m->bad, &none, (int64_t)c);
            return vdb_vecmap_error(m);
        }
        if (!atomic_exchange_explicit(&m->ok[c], 1, memory_order_acq_rel) &&
            atomic_fetch_add_explicit(&m->n_ok, 1, memory_order_acq_rel) + 1 == m->n_chunks)
            atomic_store_explicit(&m->all, 1, memory_order_release);
    }
    return VDB_OK;
}

int vdb_vecmap_verify_all(vdb_vecmap *m)
{
    if (!m || atomic_load_explicit(&m->all, memory_order_acquire)) return VDB_OK;
    int rc = vdb_vecmap_verify(m, 0, m->data_len);
    if (rc == VDB_OK) atomic_store_explicit(&m->all, 1, memory_order_release);
    return rc;
}

int vdb_vecmap_error(const vdb_vecmap *m)
{
    int64_t c = m ? atomic_load(&m->bad) : -1;
    if (c < 0) return VDB_OK;
    uint64_t a = (uint64_t)c * m->chunk;
    return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (%s checksum mismatch in bytes %llu..%llu of its data)",
                         m->path, m->map ? "vector data" : "data", (unsigned long long)a,
                         (unsigned long long)(a + m->chunk < m->data_len ? a + m->chunk : m->data_len));
}

int vdb_vecmap_verified(const vdb_vecmap *m) { return !m || atomic_load_explicit(&m->all, memory_order_acquire); }

size_t vdb_vecmap_len(const vdb_vecmap *m) { return m ? m->map_len : 0; }

void vdb_vecmap_advise_random(vdb_vecmap *m)
{
    if (m && m->map) madvise(m->map, m->map_len, MADV_RANDOM);
}

void vdb_vecmap_close(vdb_vecmap *m)
{
    if (!m) return;
    if (m->map) munmap(m->map, m->map_len);
    free(m->crc);
    free((void *)m->ok);
    free(m->path);
    free(m);
}

int vdb_records_write(const char *path, uint64_t n_rows, const uint8_t *payload, size_t len)
{
    uint8_t h[RECORDS_HEADER];
    memcpy(h, "VDBRECS1", 8);
    vdb_put_u32(h + 8, VDB_FORMAT_VERSION);
    vdb_put_u64(h + 12, n_rows);
    vdb_put_u64(h + 20, len);
    vdb_put_u32(h + 28, vdb_crc32c(0, payload, len));
    vdb_put_u32(h + 32, vdb_crc32c(0, h, 32));
    const float *chunk = (const float *)payload;
    uint64_t bytes = len;
    return write_new_file(path, h, sizeof h, &chunk, &bytes, len ? 1 : 0);
}

int vdb_records_check_header(const char *path, uint64_t n_rows)
{
    uint8_t h[RECORDS_HEADER];
    int rc, fd;
    struct stat st;
    if ((rc = open_snapshot_file(path, &fd, &st))) return rc;
    if ((size_t)st.st_size < RECORDS_HEADER || vdb_read_all(fd, h, sizeof h, path) ||
        memcmp(h, "VDBRECS1", 8) != 0 || vdb_get_u32(h + 32) != vdb_crc32c(0, h, 32))
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (bad header)", path);
    else if (vdb_get_u32(h + 8) != VDB_FORMAT_VERSION)
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' has format version %u; this vectordb reads version %u", path,
                           vdb_get_u32(h + 8), VDB_FORMAT_VERSION);
    else if (vdb_get_u64(h + 20) != (uint64_t)st.st_size - RECORDS_HEADER)
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is truncated or has trailing bytes", path);
    else if (vdb_get_u64(h + 12) != n_rows)
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' holds %llu records but the vectors file %llu", path,
                           (unsigned long long)vdb_get_u64(h + 12), (unsigned long long)n_rows);
    close(fd);
    return rc;
}

int vdb_records_read(const char *path, uint64_t *n_rows, uint8_t **payload, size_t *len)
{
    uint8_t h[RECORDS_HEADER];
    int rc, fd;
    struct stat st;
    *payload = NULL;
    if ((rc = open_snapshot_file(path, &fd, &st))) return rc;
    if ((size_t)st.st_size < RECORDS_HEADER || vdb_read_all(fd, h, sizeof h, path) ||
        memcmp(h, "VDBRECS1", 8) != 0 || vdb_get_u32(h + 32) != vdb_crc32c(0, h, 32)) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (bad header)", path);
        goto cleanup;
    }
    if (vdb_get_u32(h + 8) != VDB_FORMAT_VERSION) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' has format version %u; this vectordb reads version %u", path,
                           vdb_get_u32(h + 8), VDB_FORMAT_VERSION);
        goto cleanup;
    }
    uint64_t plen = vdb_get_u64(h + 20);
    if (plen != (uint64_t)st.st_size - RECORDS_HEADER) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is truncated or has trailing bytes", path);
        goto cleanup;
    }
    *payload = malloc(plen ? plen : 1);
    if (!*payload) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
        goto cleanup;
    }
    if ((rc = vdb_read_all(fd, *payload, plen, path))) goto cleanup;
    if (vdb_crc32c(0, *payload, plen) != vdb_get_u32(h + 28)) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (checksum mismatch)", path);
        goto cleanup;
    }
    *n_rows = vdb_get_u64(h + 12);
    *len = plen;
cleanup:
    if (rc) {
        free(*payload);
        *payload = NULL;
    }
    close(fd);
    return rc;
}
