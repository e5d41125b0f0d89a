/* vdb_store — file I/O of a collection: write-all/read-all, MANIFEST, the write-ahead log, and the
 * vectors.bin and records.bin snapshot files. See vdb_store.h for the format. */
#include "vdb_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

/* write() until done: a short write is retried, EINTR too. */
static int write_all(int fd, const void *buf, size_t len, const char *path)
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

static int read_all(int fd, void *buf, size_t len, const char *path)
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
    int rc = write_all(fd, head, head_len, path);
    for (size_t i = 0; rc == VDB_OK && i < n_chunks; i++) rc = write_all(fd, chunks[i], chunk_bytes[i], path);
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
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
    *buf = NULL;
    *len = 0;
    if (fd < 0) return errno == ENOENT ? vdb_set_error(VDB_ECORRUPT, "file '%s' is missing", path)
                                       : io_error("cannot open", path);
    if (fstat(fd, &st) != 0) {
        rc = io_error("cannot stat", path);
    } else if (!(*buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
    } else if ((rc = read_all(fd, *buf, (size_t)st.st_size, path)) == VDB_OK) {
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
        if ((rc = read_all(fd, data, size, path))) goto cleanup;
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
            rc = write_all(fd, (const uint8_t *)iov[i].iov_base + done, sz - done, path);
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

int vdb_vectors_write(const char *path, uint32_t metric, uint64_t dim, const float *const *chunks,
                      const uint64_t *chunk_rows, size_t n_chunks)
{
    uint8_t h[VECTORS_HEADER] = {0};
    uint64_t n_rows = 0, bytes[8];
    uint32_t crc = 0;
    if (n_chunks > 8) return vdb_set_error(VDB_EINVAL, "too many vector chunks");
    for (size_t i = 0; i < n_chunks; i++) {
        n_rows += chunk_rows[i];
        bytes[i] = chunk_rows[i] * dim * sizeof(float);
        crc = vdb_crc32c(crc, chunks[i], bytes[i]);
    }
    memcpy(h, "VDBVECT1", 8);
    vdb_put_u32(h + 8, VDB_FORMAT_VERSION);
    vdb_put_u32(h + 12, metric);
    vdb_put_u64(h + 16, n_rows);
    vdb_put_u64(h + 24, dim);
    vdb_put_u32(h + 32, crc);
    vdb_put_u32(h + 36, vdb_crc32c(0, h, 36));
    return write_new_file(path, h, sizeof h, chunks, bytes, n_chunks);
}

int vdb_vectors_map(const char *path, uint32_t metric, uint64_t dim, uint64_t *n_rows, float **data,
                    void **map, size_t *map_len)
{
    uint8_t h[VECTORS_HEADER];
    int rc = VDB_OK, fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    *map = NULL;
    *map_len = 0;
    *data = NULL;
    if (fd < 0) return errno == ENOENT ? vdb_set_error(VDB_ECORRUPT, "file '%s' is missing", path)
                                       : io_error("cannot open", path);
    if (fstat(fd, &st) != 0) {
        rc = io_error("cannot stat", path);
        goto cleanup;
    }
    if ((size_t)st.st_size < VECTORS_HEADER || (rc = read_all(fd, h, sizeof h, path))) {
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
    *n_rows = rows;
    if (rows) {
        *map_len = (size_t)st.st_size;
        /* Private and writable: an in-place update changes memory only, never the snapshot. */
        void *m = mmap(NULL, *map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            *map_len = 0;
            rc = io_error("cannot map", path);
            goto cleanup;
        }
        *map = m;
        *data = (float *)((uint8_t *)m + VECTORS_HEADER);
        if (vdb_crc32c(0, *data, rows * d * 4) != vdb_get_u32(h + 32)) {
            vdb_vectors_unmap(*map, *map_len);
            *map = NULL;
            *data = NULL;
            *map_len = 0;
            rc = vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (vector data checksum mismatch)", path);
            goto cleanup;
        }
    }
cleanup:
    close(fd);
    return rc;
}

void vdb_vectors_unmap(void *map, size_t map_len)
{
    if (map) munmap(map, map_len);
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

int vdb_records_read(const char *path, uint64_t *n_rows, uint8_t **payload, size_t *len)
{
    uint8_t h[RECORDS_HEADER];
    int rc = VDB_OK, fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    *payload = NULL;
    if (fd < 0) return errno == ENOENT ? vdb_set_error(VDB_ECORRUPT, "file '%s' is missing", path)
                                       : io_error("cannot open", path);
    if (fstat(fd, &st) != 0) {
        rc = io_error("cannot stat", path);
        goto cleanup;
    }
    if ((size_t)st.st_size < RECORDS_HEADER || read_all(fd, h, sizeof h, path) ||
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
    if ((rc = read_all(fd, *payload, plen, path))) goto cleanup;
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
