/* vdb_ivf_file — the IVF index's files: ivf.bin (centroids, list rows) written whole with a trailing
 * CRC32C and read back with every header field, length and row number validated before use,
 * ivfvec.bin (the vectors in list order, mapped; vdb_store.h's vectors format), and ivfpq4.bin with
 * ivfpq4.crc (the pq4 codes in list segments, mapped, pages checked on first use). See vdb_ivf.h. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdb_bytes.h"
#include "vdb_crc32c.h"
#include "vdb_error.h"
#include "vdb_ivf_internal.h"
#include "vdb_store.h"

#define IVF_MAX_DIM ((uint64_t)1 << 24)        /* sanity bound for files */

#define IVF_MAGIC "VDBIVF1\n"
#define IVF_VERSION 2u /* 1: the vectors inline after each list's rows (still read) */
#define IVF_HEADER_LEN 88

/* Largest row number a file may hold for n vectors (exclusive): the row map read allocates is
 * sized by it, so a damaged row number cannot demand more than ~16 bytes per vector. */
static uint64_t ivf_file_row_limit(uint64_t n_vectors) { return 2 * n_vectors + 1024; }

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define IVF_BIG_ENDIAN 1
#else
#define IVF_BIG_ENDIAN 0
#endif

typedef struct {
    int fd;
    const char *path;
    uint32_t crc;
    uint64_t written;
    size_t len;
    uint8_t buf[1 << 16];
} ivf_writer;

static int ivf_write_all(ivf_writer *w, const void *p, size_t n)
{
    w->crc = vdb_crc32c(w->crc, p, n);
    int rc = vdb_write_all(w->fd, p, n, w->path);
    if (rc == VDB_OK) w->written += n;
    return rc;
}

static int ivf_flush(ivf_writer *w)
{
    int rc = ivf_write_all(w, w->buf, w->len);
    w->len = 0;
    return rc;
}

static int ivf_put(ivf_writer *w, const void *p, size_t n)
{
    if (n == 0) return VDB_OK; /* p may be NULL for an empty list */
    if (n > sizeof w->buf / 2) {
        int rc = ivf_flush(w);
        return rc ? rc : ivf_write_all(w, p, n);
    }
    if (w->len + n > sizeof w->buf) {
        int rc = ivf_flush(w);
        if (rc) return rc;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return VDB_OK;
}

static int ivf_put_u64(ivf_writer *w, uint64_t v)
{
    uint8_t t[8];
    vdb_put_u64(t, v);
    return ivf_put(w, t, 8);
}

/* Arrays of 4- or 8-byte little-endian values: written as is on little-endian hosts. */
static int ivf_put_f32s(ivf_writer *w, const float *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        uint8_t t[4];
        memcpy(&u, v + i, 4);
        vdb_put_u32(t, u);
        int rc = ivf_put(w, t, 4);
        if (rc) return rc;
    }
    return VDB_OK;
#else
    return ivf_put(w, v, n * sizeof(float));
#endif
}

static int ivf_put_i64s(ivf_writer *w, const int64_t *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) {
        int rc = ivf_put_u64(w, (uint64_t)v[i]);
        if (rc) return rc;
    }
    return VDB_OK;
#else
    return ivf_put(w, v, n * sizeof(int64_t));
#endif
}

/* ivfvec.bin in the directory of path. */
static void ivf_vec_path(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path) : 1;
    int n = snprintf(out, cap, "%.*s/ivfvec.bin", dl, slash ? path : ".");
    if (n < 0 || (size_t)n >= cap) out[0] = 0;
}

static int ivf_write_vectors(const vdb_ivf *ivf, const char *path, uint64_t *bytes)
{
    char vpath[4200];
    ivf_vec_path(path, vpath, sizeof vpath);
    const float **chunks = malloc((ivf->n_lists ? ivf->n_lists : 1) * sizeof *chunks);
    uint64_t *rows = malloc((ivf->n_lists ? ivf->n_lists : 1) * sizeof *rows);
    int rc = VDB_OK;
    if (!chunks || !rows) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory writing '%s'", vpath);
    } else {
        for (size_t l = 0; l < ivf->n_lists; l++) {
            chunks[l] = ivf->lists[l].vecs;
            rows[l] = ivf->lists[l].n;
        }
        /* Re-ranking reads single rows: a checksum per page verifies (and pages in) no more. */
        rc = vdb_vectors_write(vpath, (uint32_t)ivf->metric, ivf->d, chunks, rows, ivf->n_lists, VDB_VECTORS_SMALL_CHUNK);
        *bytes = (uint64_t)ivf->n_vectors * ivf->d * sizeof(float);
    }
    free(chunks);
    free(rows);
    return rc;
}

/* Points every list into the mapped ivfvec.bin beside path (which holds exactly the lists' current
 * contents, in order), freeing the copies in memory. */
static int ivf_map_vectors(vdb_ivf *ivf, const char *path)
{
    char vpath[4200];
    uint64_t n_rows;
    float *data;
    vdb_vecmap *m;
    ivf_vec_path(path, vpath, sizeof vpath);
    int rc = vdb_vecmap_open(vpath, (uint32_t)ivf->metric, ivf->d, &n_rows, &data, &m);
    if (rc) return rc;
    if (n_rows != (uint64_t)ivf->n_vectors) {
        vdb_vecmap_close(m);
        return vdb_set_error(VDB_ECORRUPT, "file '%s' holds %llu vectors but '%s' %lld", vpath,
                             (unsigned long long)n_rows, path, (long long)ivf->n_vectors);
    }
    size_t off = 0;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        ivf_list *L = &ivf->lists[l];
        if (!L->mapped) free(L->vecs);
        L->vecs = L->n ? data + off * ivf->d : NULL;
        L->mapped = L->n != 0;
        L->cap = L->n; /* the rows array may be larger: harmless */
        off += L->n;
    }
    vdb_vecmap_close(ivf->vmap);
    ivf->vmap = m;
    ivf->map_data = (const char *)data;
    return VDB_OK;
}

static int ivf_remap_pq4(vdb_ivf *ivf, const char *path);

int vdb_ivf_remap(vdb_ivf *ivf, const char *path)
{
    int rc = ivf_map_vectors(ivf, path);
    return rc || !ivf->pq || IVF_BIG_ENDIAN ? rc : ivf_remap_pq4(ivf, path);
}

void vdb_ivf_advise_random(vdb_ivf *ivf) { vdb_vecmap_advise_random(ivf->vmap); }

static void ivf_fix_f32s(float *v, size_t n);

/* Maps a whole file read-only (*len 0: an empty file, *buf then malloc'd); errors name it. */
static int ivf_map_file(const char *path, uint8_t **buf, size_t *len)
{
    struct stat st;
    int rc = VDB_OK, fd = open(path, O_RDONLY | O_CLOEXEC);
    *buf = NULL;
    *len = 0;
    if (fd < 0)
        return errno == ENOENT ? vdb_set_error(VDB_ECORRUPT, "file '%s' is missing", path)
                               : vdb_set_io_error(errno, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = vdb_set_io_error(errno, "cannot stat '%s': %s", path, strerror(errno));
    } else if (st.st_size == 0) {
        if (!(*buf = malloc(1))) rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
    } else {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = vdb_set_io_error(errno, "cannot map '%s': %s", path, strerror(errno));
        } else {
            madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
            *buf = m;
            *len = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

/* ivfpq4.bin in the directory of path. */
static void ivf_pq_path(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path) : 1;
    int n = snprintf(out, cap, "%.*s/ivfpq4.bin", dl, slash ? path : ".");
    if (n < 0 || (size_t)n >= cap) out[0] = 0;
}

#define PQF_MAGIC "VDBIVPQ1"
#define PQF_VERSION 3u /* 2: lists inline, one CRC over the file, copied at open; 1: also one eps (both still read) */
#define PQF_HEADER_LEN 72
#define PQF_ALIGN 64 /* version 3: each list's segment starts at a multiple of it */

static size_t pqf_list_code_bytes(size_t n, size_t block_bytes)
{
    return (n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * block_bytes;
}

static uint64_t pqf_align(uint64_t x) { return (x + PQF_ALIGN - 1) / PQF_ALIGN * PQF_ALIGN; }

/* Version 3: where the lists' segments start (after the header, eps_rand, the eps table, the
 * sub-quantizers' centroids and the list table), and each segment's length. */
static uint64_t pqf_lists_start(uint64_t n_lists, uint64_t d)
{
    return pqf_align(PQF_HEADER_LEN + 4 + 4 * n_lists + 64 * d + 16 * n_lists);
}

static uint64_t pqf_segment(size_t n, size_t bb) { return pqf_align(pqf_list_code_bytes(n, bb) + 8 * (uint64_t)n); }

static const uint8_t pqf_zeros[PQF_ALIGN];

/* The codes as they are (see vdb_ivf.h, ivfpq4.bin): reopening needs no training or encoding, and
 * maps them (ivfpq4.crc, written here from the synced file, checks their pages on first use). */
static int ivf_write_pq4(const vdb_ivf *ivf, const char *path, uint64_t *bytes)
{
    char ppath[4200];
    int rc = VDB_OK;
    const vdb_pq4 *pq = ivf->pq;
    const size_t bb = vdb_pq4_block_bytes(pq);
    ivf_pq_path(path, ppath, sizeof ppath);
    ivf_writer *w = malloc(sizeof *w);
    if (!w) return vdb_set_error(VDB_ENOMEM, "out of memory writing '%s'", ppath);
    *w = (ivf_writer){.fd = -1, .path = ppath};
    w->fd = open(ppath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); /* read back for its page checksums */
    if (w->fd < 0) {
        rc = vdb_set_io_error(errno, "cannot create '%s': %s", ppath, strerror(errno));
        goto cleanup;
    }
    const uint64_t start = pqf_lists_start(ivf->n_lists, ivf->d);
    uint64_t len = start;
    for (size_t l = 0; l < ivf->n_lists; l++) len += pqf_segment(ivf->lists[l].n, bb);
    uint8_t h[PQF_HEADER_LEN] = {0}, t[16];
    memcpy(h, PQF_MAGIC, 8);
    vdb_put_u32(h + 8, PQF_VERSION);
    vdb_put_u32(h + 12, (uint32_t)bb);
    vdb_put_u64(h + 16, ivf->d);
    vdb_put_u64(h + 24, pq->m);
    vdb_put_u64(h + 32, ivf->n_lists);
    vdb_put_u64(h + 40, (uint64_t)ivf->n_vectors);
    vdb_put_u64(h + 48, ivf->pq_seed);
    uint32_t eu;
    memcpy(&eu, &pq->eps_hi, 4);
    vdb_put_u32(h + 56, eu);
    memcpy(&eu, &pq->eps_lo, 4);
    vdb_put_u32(h + 60, eu);
    vdb_put_u64(h + 64, len - PQF_HEADER_LEN);
    if ((rc = ivf_put(w, h, sizeof h)) || (rc = ivf_put_f32s(w, &pq->eps_rand, 1))) goto cleanup;
    for (size_t l = 0; l < ivf->n_lists; l++)
        if ((rc = ivf_put_f32s(w, ivf->pq_eps ? ivf->pq_eps + l : &pq->eps_hi, 1))) goto cleanup;
    if ((rc = ivf_put_f32s(w, pq->cent, 16 * ivf->d))) goto cleanup;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        uint32_t qm;
        memcpy(&qm, &ivf->lists[l].qerr_max, 4);
        vdb_put_u64(t, ivf->lists[l].n);
        vdb_put_u32(t + 8, qm);
        vdb_put_u32(t + 12, 0);
        if ((rc = ivf_put(w, t, 16))) goto cleanup;
    }
    uint64_t at = PQF_HEADER_LEN + 4 + 4 * (uint64_t)ivf->n_lists + 64 * (uint64_t)ivf->d + 16 * (uint64_t)ivf->n_lists;
    if ((rc = ivf_put(w, pqf_zeros, (size_t)(start - at)))) goto cleanup;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        const uint64_t used = pqf_list_code_bytes(L->n, bb) + 8 * (uint64_t)L->n;
        if ((rc = ivf_put(w, L->codes, pqf_list_code_bytes(L->n, bb))) || (rc = ivf_put_f32s(w, L->qerr, L->n)) ||
            (rc = ivf_put_f32s(w, L->qaux, L->n)) || (rc = ivf_put(w, pqf_zeros, (size_t)(pqf_segment(L->n, bb) - used))))
            goto cleanup;
    }
    if ((rc = ivf_flush(w)) || (rc = vdb_fdatasync(w->fd, ppath))) goto cleanup;
    /* The page checksums, from the file as written (in the page cache: no second encoding pass). */
    void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, w->fd, 0);
    if (m == MAP_FAILED) {
        rc = vdb_set_io_error(errno, "cannot map '%s': %s", ppath, strerror(errno));
        goto cleanup;
    }
    const void *chunks[1] = {m};
    uint64_t cbytes[1] = {len};
    rc = vdb_crc_table_write(ppath, chunks, cbytes, 1, VDB_VECTORS_SMALL_CHUNK);
    munmap(m, (size_t)len);
    if (rc) goto cleanup;
    *bytes = w->written;
cleanup:
    if (w->fd >= 0) {
        if (close(w->fd) != 0 && rc == VDB_OK)
            rc = vdb_set_io_error(errno, "closing '%s' failed: %s", ppath, strerror(errno));
        if (rc != VDB_OK) unlink(ppath);
    }
    free(w);
    return rc;
}

#define PQF_CORRUPT(...)                                 \
    do {                                                 \
        rc = vdb_set_error(VDB_ECORRUPT, __VA_ARGS__);   \
        goto cleanup;                                    \
    } while (0)

/* Reads the header fields and the table of eps by n_probe into a new pq (ivf->pq_eps), checking
 * them against ivf; p: the bytes after the header. */
static int pqf_read_params(vdb_ivf *ivf, const char *ppath, const uint8_t *buf, uint64_t len, uint32_t version,
                           vdb_pq4 **out, const uint8_t **after)
{
    int rc = VDB_OK;
    vdb_pq4 *pq = NULL;
    uint64_t d = vdb_get_u64(buf + 16), m = vdb_get_u64(buf + 24), nl = vdb_get_u64(buf + 32);
    uint64_t nv = vdb_get_u64(buf + 40), payload = vdb_get_u64(buf + 64);
    float eps, eps_lo;
    uint32_t eu = vdb_get_u32(buf + 56);
    memcpy(&eps, &eu, 4);
    eu = version == 1 ? eu : vdb_get_u32(buf + 60);
    memcpy(&eps_lo, &eu, 4);
    const uint64_t table = version == 1 ? 0 : 4 + 4 * nl; /* eps_rand and eps by n_probe */
    const uint64_t trailer = version < 3 ? 4 : 0;         /* the whole file's CRC */
    if (d != ivf->d || nl != ivf->n_lists || nv != (uint64_t)ivf->n_vectors || m == 0 || m > d ||
        m > VDB_PQ4_MAX_M || payload != len - PQF_HEADER_LEN - trailer || !(eps >= 0) || !isfinite(eps) ||
        !(eps_lo >= 0) || !isfinite(eps_lo))
        PQF_CORRUPT("file '%s' does not match its IVF index (dimension, lists, vectors or length)", ppath);
    if ((rc = vdb_pq4_create((size_t)d, (size_t)m, &pq))) goto cleanup;
    if (vdb_get_u32(buf + 12) != vdb_pq4_block_bytes(pq)) PQF_CORRUPT("file '%s' has an invalid block size", ppath);
    const uint8_t *p = buf + PQF_HEADER_LEN;
    pq->eps_hi = pq->eps_rand = eps;
    pq->eps_lo = eps_lo;
    if (table) {
        if (!(ivf->pq_eps = malloc((size_t)nl * sizeof(float)))) {
            rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", ppath);
            goto cleanup;
        }
        memcpy(&pq->eps_rand, p, 4);
        memcpy(ivf->pq_eps, p + 4, (size_t)nl * 4);
        ivf_fix_f32s(&pq->eps_rand, 1);
        ivf_fix_f32s(ivf->pq_eps, (size_t)nl);
        for (size_t l = 0; l < nl; l++)
            if (!(ivf->pq_eps[l] >= 0) || !isfinite(ivf->pq_eps[l])) PQF_CORRUPT("file '%s' has an invalid error bound", ppath);
        if (!(pq->eps_rand >= 0) || !isfinite(pq->eps_rand)) PQF_CORRUPT("file '%s' has an invalid error bound", ppath);
        p += table;
    }
    memcpy(pq->cent, p, 16 * (size_t)d * 4);
    ivf_fix_f32s(pq->cent, 16 * (size_t)d);
    *after = p + 16 * d * 4;
    *out = pq;
    pq = NULL;
cleanup:
    vdb_pq4_free(pq);
    return rc;
}

/* Points every non-empty list's codes, errors and terms into buf (a version 3 file whose sizes
 * match the lists), freeing the lists' own copies. */
static void pqf_point_lists(vdb_ivf *ivf, const uint8_t *buf, size_t bb)
{
    uint64_t off = pqf_lists_start(ivf->n_lists, ivf->d);
    for (size_t l = 0; l < ivf->n_lists; l++) {
        ivf_list *L = &ivf->lists[l];
        if (L->n) {
            vdb_ivf_pq_free_list(L);
            L->codes = (uint8_t *)buf + off;
            L->qerr = (float *)(void *)(buf + off + pqf_list_code_bytes(L->n, bb));
            L->qaux = L->qerr + L->n;
            L->codes_mapped = 1;
        }
        off += pqf_segment(L->n, bb);
    }
}

/* Version 3, mapped: every list's codes, errors and terms point into the mapping, whose pages are
 * checked on first use (ivfpq4.crc); the header, tables and centroids are checked now. */
static int pqf_map_lists(vdb_ivf *ivf, const char *ppath, const uint8_t *buf, size_t len, vdb_pq4 **pq_out)
{
    int rc;
    vdb_vecmap *chk = NULL;
    vdb_pq4 *pq = NULL;
    const uint8_t *p;
    const uint64_t start = pqf_lists_start(ivf->n_lists, ivf->d);
    if ((rc = vdb_vecmap_wrap(ppath, buf, len, &chk)) == VDB_ENOTFOUND)
        PQF_CORRUPT("file '%s' has no checksum table beside it (ivfpq4.crc is missing)", ppath);
    if (rc) goto cleanup;
    if (len < start) PQF_CORRUPT("file '%s' does not match its IVF index (dimension, lists, vectors or length)", ppath);
    if ((rc = vdb_vecmap_verify(chk, 0, start))) goto cleanup;
    if ((rc = pqf_read_params(ivf, ppath, buf, len, 3, &pq, &p))) goto cleanup;
    const size_t bb = vdb_pq4_block_bytes(pq);
    /* Sizes first, from the lists already read: nothing is placed by a number of this file. */
    uint64_t want = start;
    for (size_t l = 0; l < ivf->n_lists; l++) want += pqf_segment(ivf->lists[l].n, bb);
    if (want != len) PQF_CORRUPT("file '%s' does not match the list sizes of its IVF index", ppath);
    for (size_t l = 0; l < ivf->n_lists; l++, p += 16) {
        ivf_list *L = &ivf->lists[l];
        if (vdb_get_u64(p) != L->n) PQF_CORRUPT("file '%s': list %zu does not match its IVF index", ppath, l);
        uint32_t qm = vdb_get_u32(p + 8);
        memcpy(&L->qerr_max, &qm, 4);
        if (!(L->qerr_max >= 0)) PQF_CORRUPT("file '%s' has an invalid error bound", ppath);
    }
    pqf_point_lists(ivf, buf, bb);
    ivf->pq_chk = chk;
    chk = NULL;
    *pq_out = pq;
    pq = NULL;
cleanup:
    vdb_vecmap_close(chk);
    vdb_pq4_free(pq);
    return rc;
}

/* Versions 1 and 2: checked whole (one CRC) and copied into the lists. */
static int pqf_copy_lists(vdb_ivf *ivf, const char *ppath, const uint8_t *buf, size_t len, uint32_t version,
                          vdb_pq4 **pq_out)
{
    int rc;
    vdb_pq4 *pq = NULL;
    const uint8_t *p;
    if (vdb_get_u32(buf + len - 4) != vdb_crc32c(0, buf, len - 4)) PQF_CORRUPT("file '%s' failed its CRC-32C check", ppath);
    if ((rc = pqf_read_params(ivf, ppath, buf, len, version, &pq, &p))) goto cleanup;
    const size_t bb = vdb_pq4_block_bytes(pq);
    uint64_t want = (uint64_t)(p - buf) + 4;
    for (size_t l = 0; l < ivf->n_lists; l++)
        want += 16 + pqf_list_code_bytes(ivf->lists[l].n, bb) + 8 * (uint64_t)ivf->lists[l].n;
    if (want != len) PQF_CORRUPT("file '%s' does not match the list sizes of its IVF index", ppath);
    for (size_t l = 0; l < ivf->n_lists; l++) {
        ivf_list *L = &ivf->lists[l];
        if (vdb_get_u64(p) != L->n) PQF_CORRUPT("file '%s': list %zu does not match its IVF index", ppath, l);
        uint32_t qm = vdb_get_u32(p + 8);
        p += 16;
        size_t cb = pqf_list_code_bytes(L->n, bb);
        if (vdb_ivf_pq_reserve(L, L->cap > L->n ? L->cap : L->n, bb)) {
            rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", ppath);
            goto cleanup;
        }
        memcpy(&L->qerr_max, &qm, 4);
        memcpy(L->codes, p, cb);
        p += cb;
        memcpy(L->qerr, p, L->n * 4);
        ivf_fix_f32s(L->qerr, L->n);
        p += L->n * 4;
        memcpy(L->qaux, p, L->n * 4);
        ivf_fix_f32s(L->qaux, L->n);
        p += L->n * 4;
    }
    *pq_out = pq;
    pq = NULL;
cleanup:
    vdb_pq4_free(pq);
    return rc;
}

/* Loads ivfpq4.bin beside path into ivf (its lists read already). VDB_ENOTFOUND: there is none (an
 * index without codes, or written before the file existed). Damage is VDB_ECORRUPT naming it. */
static int ivf_read_pq4(vdb_ivf *ivf, const char *path)
{
    char ppath[4200];
    uint8_t *buf = NULL;
    size_t len = 0;
    vdb_pq4 *pq = NULL;
    int rc;
    ivf_pq_path(path, ppath, sizeof ppath);
    if (access(ppath, F_OK) != 0 && errno == ENOENT) return VDB_ENOTFOUND;
    if ((rc = ivf_map_file(ppath, &buf, &len))) return rc;
    if (len < PQF_HEADER_LEN + 4 || memcmp(buf, PQF_MAGIC, 8) != 0)
        PQF_CORRUPT("file '%s' is not a pq4 code file (bad magic or truncated)", ppath);
    const uint32_t version = vdb_get_u32(buf + 8);
    if (version < 1 || version > PQF_VERSION)
        PQF_CORRUPT("file '%s' has format version %u; this build reads versions 1 to %u", ppath, version, PQF_VERSION);
    if (version == 3) {
        madvise(buf, len, MADV_NORMAL); /* lists are scanned whole: read-ahead helps */
        rc = pqf_map_lists(ivf, ppath, buf, len, &pq);
        if (rc == VDB_OK) {
            ivf->pq_map = buf;
            ivf->pq_map_len = len;
            buf = NULL;
            len = 0;
        }
    } else {
        rc = pqf_copy_lists(ivf, ppath, buf, len, version, &pq);
    }
    if (rc) goto cleanup;
    if (!(ivf->pq_tmp = malloc(ivf->d * sizeof(float))) || !(ivf->pq_code = malloc(pq->m))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", ppath);
        goto cleanup;
    }
    ivf->pq = pq;
    ivf->pq_seed = vdb_get_u64((ivf->pq_map ? ivf->pq_map : buf) + 48);
    pq = NULL;
#if IVF_BIG_ENDIAN
    /* The file's floats are little-endian: this host copies the lists out and converts them. */
    for (size_t l = 0; l < ivf->n_lists && rc == VDB_OK; l++) {
        ivf_list *L = &ivf->lists[l];
        if (!L->codes_mapped || (rc = vdb_ivf_pq_own(ivf, L))) continue;
        ivf_fix_f32s(L->qerr, L->n);
        ivf_fix_f32s(L->qaux, L->n);
    }
#endif
cleanup:
    if (rc && !ivf->pq) {
        vdb_ivf_pq_drop(ivf); /* frees what the lists got, forgets what they pointed at */
    }
    vdb_pq4_free(pq);
    if (len) munmap(buf, len);
    else free(buf);
    return rc;
}

/* After a write to path (the index unchanged since): points every list's codes into the new
 * ivfpq4.bin, freeing the copies in memory and the previous mapping (its file is gone). Checked like
 * a read, and nothing changes unless all of it matches. */
static int ivf_remap_pq4(vdb_ivf *ivf, const char *path)
{
    char ppath[4200];
    uint8_t *buf;
    size_t len;
    vdb_vecmap *chk = NULL;
    const size_t bb = vdb_pq4_block_bytes(ivf->pq);
    const uint64_t start = pqf_lists_start(ivf->n_lists, ivf->d);
    ivf_pq_path(path, ppath, sizeof ppath);
    int rc = ivf_map_file(ppath, &buf, &len);
    if (rc) return rc;
    uint64_t want = start;
    for (size_t l = 0; l < ivf->n_lists; l++) want += pqf_segment(ivf->lists[l].n, bb);
    if (len != want || memcmp(buf, PQF_MAGIC, 8) != 0 || vdb_get_u32(buf + 8) != PQF_VERSION) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' does not match its IVF index", ppath);
    } else if ((rc = vdb_vecmap_wrap(ppath, buf, len, &chk)) == VDB_OK) {
        madvise(buf, len, MADV_NORMAL);
        pqf_point_lists(ivf, buf, bb); /* the old mapping, if any, is unused from here */
        vdb_ivf_pq_unmap(ivf);
        ivf->pq_map = buf;
        ivf->pq_map_len = len;
        ivf->pq_chk = chk;
        return VDB_OK;
    }
    if (len) munmap(buf, len);
    else free(buf);
    return rc == VDB_ENOTFOUND ? vdb_set_error(VDB_ECORRUPT, "file '%s' has no checksum table beside it", ppath) : rc;
}

int vdb_ivf_write(const vdb_ivf *ivf, const char *path, uint64_t *bytes_written)
{
    int rc = VDB_OK;
    uint64_t vec_bytes = 0, pq_bytes = 0;
    /* Never copy damage into a new generation under fresh checksums. */
    if ((rc = vdb_ivf_verify(ivf)) || (rc = ivf_write_vectors(ivf, path, &vec_bytes))) return rc;
    if (ivf->pq && (rc = ivf_write_pq4(ivf, path, &pq_bytes))) return rc;
    size_t end = ivf->where_len;
    while (end > 0 && ivf->where[end - 1] == IVF_ABSENT) end--;
    if ((uint64_t)end > ivf_file_row_limit((uint64_t)ivf->n_vectors))
        return vdb_set_error(VDB_EINVAL, "cannot write IVF index file '%s': row %zu is too large for %lld "
                                         "vectors (rows must be below 2 * vectors + 1024); renumber first",
                             path, end - 1, (long long)ivf->n_vectors);
    ivf_writer *w = malloc(sizeof *w);
    if (!w) return vdb_set_error(VDB_ENOMEM, "out of memory writing IVF index file '%s'", path);
    w->path = path;
    w->crc = 0;
    w->written = 0;
    w->len = 0;
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = vdb_set_io_error(errno, "cannot create IVF index file '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    const size_t d = ivf->d;
    uint64_t payload = (uint64_t)ivf->n_lists * d * 4;
    for (size_t l = 0; l < ivf->n_lists; l++) payload += 8 + (uint64_t)ivf->lists[l].n * 8;
    uint8_t h[IVF_HEADER_LEN];
    memcpy(h, IVF_MAGIC, 8);
    vdb_put_u32(h + 8, IVF_VERSION);
    vdb_put_u32(h + 12, (uint32_t)ivf->metric);
    vdb_put_u64(h + 16, d);
    vdb_put_u64(h + 24, ivf->n_lists);
    vdb_put_u64(h + 32, (uint64_t)ivf->n_vectors);
    vdb_put_u64(h + 40, payload);
    vdb_put_u64(h + 48, (uint64_t)ivf->trained);
    vdb_put_u64(h + 56, ivf->n_train_points);
    vdb_put_u64(h + 64, ivf->added_since_train);
    vdb_put_u64(h + 72, ivf->seed);
    vdb_put_u64(h + 80, ivf->vectors_at_train);
    if ((rc = ivf_put(w, h, sizeof h))) goto cleanup;
    if ((rc = ivf_put_f32s(w, ivf->centroids, ivf->n_lists * d))) goto cleanup;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        if ((rc = ivf_put_u64(w, L->n))) goto cleanup;
        if ((rc = ivf_put_i64s(w, L->rows, L->n))) goto cleanup;
    }
    if ((rc = ivf_flush(w))) goto cleanup;
    uint8_t t[4];
    vdb_put_u32(t, w->crc);
    if ((rc = ivf_write_all(w, t, 4))) goto cleanup;
    if ((rc = vdb_fdatasync(w->fd, path))) goto cleanup;
    if (bytes_written) *bytes_written = w->written + vec_bytes + pq_bytes;
cleanup:
    if (w->fd >= 0) {
        if (close(w->fd) != 0 && rc == VDB_OK)
            rc = vdb_set_io_error(errno, "closing IVF index file '%s' failed: %s", path, strerror(errno));
        if (rc != VDB_OK) unlink(path); /* never leave a partial file behind */
    }
    free(w);
    return rc;
}

typedef struct {
    int fd;
    const char *path;
    uint32_t crc;
} ivf_reader;

static int ivf_read_exact(ivf_reader *r, void *p, size_t n)
{
    int rc = vdb_read_all(r->fd, p, n, r->path);
    if (rc == VDB_OK) r->crc = vdb_crc32c(r->crc, p, n);
    return rc;
}

static void ivf_fix_f32s(float *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) {
        uint32_t u = vdb_get_u32((const uint8_t *)(v + i));
        memcpy(v + i, &u, 4);
    }
#else
    (void)v;
    (void)n;
#endif
}

static void ivf_fix_i64s(int64_t *v, size_t n)
{
#if IVF_BIG_ENDIAN
    for (size_t i = 0; i < n; i++) v[i] = (int64_t)vdb_get_u64((const uint8_t *)(v + i));
#else
    (void)v;
    (void)n;
#endif
}

#define IVF_CORRUPT(...)                                 \
    do {                                                 \
        rc = vdb_set_error(VDB_ECORRUPT, __VA_ARGS__);   \
        goto cleanup;                                    \
    } while (0)

int vdb_ivf_read(const char *path, vdb_ivf **out)
{
    int rc = VDB_OK;
    vdb_ivf *ivf = NULL;
    ivf_reader r = {-1, path, 0};
    *out = NULL;
    r.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0) {
        rc = vdb_set_error(errno == ENOENT ? VDB_ENOTFOUND : VDB_EIO, "cannot open IVF index file '%s': %s",
                           path, strerror(errno));
        goto cleanup;
    }
    struct stat st;
    if (fstat(r.fd, &st) != 0) {
        rc = vdb_set_io_error(errno, "cannot stat IVF index file '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < IVF_HEADER_LEN + 4)
        IVF_CORRUPT("IVF index file '%s' is truncated: %llu bytes, a header alone is %d", path,
                    (unsigned long long)size, IVF_HEADER_LEN + 4);
    uint8_t h[IVF_HEADER_LEN];
    if ((rc = ivf_read_exact(&r, h, sizeof h))) goto cleanup;
    if (memcmp(h, IVF_MAGIC, 8) != 0) IVF_CORRUPT("file '%s' is not an IVF index (bad magic)", path);
    uint32_t version = vdb_get_u32(h + 8), metric = vdb_get_u32(h + 12);
    uint64_t d = vdb_get_u64(h + 16), n_lists = vdb_get_u64(h + 24), n_vectors = vdb_get_u64(h + 32);
    uint64_t payload = vdb_get_u64(h + 40), trained = vdb_get_u64(h + 48);
    if (version > IVF_VERSION)
        IVF_CORRUPT("IVF index file '%s' has format version %u; this build reads version %u (upgrade vectordb)",
                    path, version, IVF_VERSION);
    if (version != IVF_VERSION && version != 1)
        IVF_CORRUPT("IVF index file '%s' has invalid format version %u", path, version);
    const int inline_vecs = version == 1;
    if (!ivf_metric_ok((vdb_metric)metric) || d == 0 || d > IVF_MAX_DIM || n_lists == 0 ||
        n_lists >= IVF_MAX_LISTS || trained > 1 || n_vectors > (uint64_t)VDB_IVF_MAX_ROW ||
        (!trained && n_vectors != 0))
        IVF_CORRUPT("IVF index file '%s' has an invalid header (metric %u, d %llu, %llu lists, %llu vectors)",
                    path, metric, (unsigned long long)d, (unsigned long long)n_lists,
                    (unsigned long long)n_vectors);
    /* Bounds above keep these products below 2^64: d < 2^25, n_lists < 2^31, n_vectors <= 2^48
     * would overflow n_vectors * 4d, so check that one against the file size first. */
    if (payload != size - IVF_HEADER_LEN - 4)
        IVF_CORRUPT("IVF index file '%s' is %llu bytes but its header says %llu", path,
                    (unsigned long long)size, (unsigned long long)(payload + IVF_HEADER_LEN + 4));
    uint64_t fixed = n_lists * d * 4 + n_lists * 8;
    uint64_t per_vec = 8 + (inline_vecs ? 4 * d : 0);
    if (fixed > payload || n_vectors > (payload - fixed) / per_vec || fixed + n_vectors * per_vec != payload)
        IVF_CORRUPT("IVF index file '%s': payload of %llu bytes does not match %llu lists x %llu dims and %llu vectors",
                    path, (unsigned long long)payload, (unsigned long long)n_lists, (unsigned long long)d,
                    (unsigned long long)n_vectors);
    if ((rc = vdb_ivf_create((size_t)d, (vdb_metric)metric, (size_t)n_lists, &ivf))) goto cleanup;
    if ((rc = ivf_read_exact(&r, ivf->centroids, (size_t)(n_lists * d * 4)))) goto cleanup;
    ivf_fix_f32s(ivf->centroids, (size_t)(n_lists * d));
    uint64_t seen = 0;
    for (size_t l = 0; l < (size_t)n_lists; l++) {
        uint8_t t[8];
        if ((rc = ivf_read_exact(&r, t, 8))) goto cleanup;
        uint64_t n = vdb_get_u64(t);
        if (n > n_vectors - seen || n > IVF_MAX_LIST_LEN)
            IVF_CORRUPT("IVF index file '%s': list %zu claims %llu vectors, only %llu remain", path, l,
                        (unsigned long long)n, (unsigned long long)(n_vectors - seen));
        ivf_list *L = &ivf->lists[l];
        if (n) {
            if (inline_vecs) L->vecs = malloc((size_t)n * (size_t)d * sizeof(float)); /* bounded by the file size */
            L->rows = malloc((size_t)n * sizeof(int64_t));
            if ((inline_vecs && !L->vecs) || !L->rows) {
                rc = vdb_set_error(VDB_ENOMEM, "out of memory reading IVF index file '%s'", path);
                goto cleanup;
            }
            L->cap = (size_t)n;
            if ((rc = ivf_read_exact(&r, L->rows, (size_t)n * sizeof(int64_t)))) goto cleanup;
            if (inline_vecs && (rc = ivf_read_exact(&r, L->vecs, (size_t)(n * d) * sizeof(float)))) goto cleanup;
            ivf_fix_i64s(L->rows, (size_t)n);
            if (inline_vecs) ivf_fix_f32s(L->vecs, (size_t)(n * d));
            L->n = (size_t)n;
        }
        seen += n;
    }
    if (seen != n_vectors)
        IVF_CORRUPT("IVF index file '%s': lists hold %llu vectors, header says %llu", path,
                    (unsigned long long)seen, (unsigned long long)n_vectors);
    uint32_t want = r.crc;
    uint8_t t[4];
    if ((rc = ivf_read_exact(&r, t, 4))) goto cleanup;
    if (vdb_get_u32(t) != want) IVF_CORRUPT("IVF index file '%s' failed its CRC-32C check", path);
    /* Checksum good; still check the rows before sizing the map with them. */
    int64_t max_row = -1;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) {
            if (L->rows[i] < 0 || (uint64_t)L->rows[i] >= ivf_file_row_limit(n_vectors))
                IVF_CORRUPT("IVF index file '%s': row %lld out of range for %llu vectors", path,
                            (long long)L->rows[i], (unsigned long long)n_vectors);
            if (L->rows[i] > max_row) max_row = L->rows[i];
        }
    }
    if (vdb_ivf_where_reserve(ivf, (size_t)(max_row + 1))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading IVF index file '%s'", path);
        goto cleanup;
    }
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) {
            if (ivf->where[L->rows[i]] != IVF_ABSENT)
                IVF_CORRUPT("IVF index file '%s': row %lld appears twice", path, (long long)L->rows[i]);
            ivf->where[L->rows[i]] = ivf_pack(l, i);
        }
    }
    ivf->n_vectors = (int64_t)n_vectors;
    if (!inline_vecs && (rc = ivf_map_vectors(ivf, path))) goto cleanup;
    if (!inline_vecs && (rc = ivf_read_pq4(ivf, path)) && rc != VDB_ENOTFOUND) goto cleanup;
    rc = VDB_OK;
    ivf->trained = (int)trained;
    ivf->n_train_points = vdb_get_u64(h + 56);
    ivf->added_since_train = vdb_get_u64(h + 64);
    ivf->seed = vdb_get_u64(h + 72);
    ivf->vectors_at_train = vdb_get_u64(h + 80);
    *out = ivf;
    ivf = NULL;
cleanup:
    if (r.fd >= 0) close(r.fd);
    vdb_ivf_free(ivf);
    return rc;
}
