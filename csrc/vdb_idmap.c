/* vdb_idmap — the collection's id -> row table: FNV-1a hashes, open addressing with linear probing,
 * deletes by backward shift; and ids.bin, the table as a checkpoint saves it. See vdb_collection_internal.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdb_collection_internal.h"
#include "vdb_crc32c.h"
#include "vdb_error.h"

uint64_t vdb_idmap_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* A slot holds a row (low 32 bits) and the low 32 bits of its id's hash (high 32 bits), so the
 * table needs no per-row hash array: probes compare the hash bits, and a slot's home is its hash
 * bits & mask (tables have at most 2^32 slots). -1 (row 0xffffffff, never a row) is empty. */
static inline int64_t slot_make(int64_t row, uint64_t h) { return (int64_t)(((h & 0xffffffffull) << 32) | (uint64_t)row); }
static inline int64_t slot_row(int64_t v) { return (int64_t)((uint64_t)v & 0xffffffffull); }
static inline uint32_t slot_hash(int64_t v) { return (uint32_t)((uint64_t)v >> 32); }

static uint64_t row_hash(const vdb_collection *c, int64_t row)
{
    return vdb_idmap_hash((const char *)c->ids.data + c->id_off[row], c->id_len[row]);
}

int64_t vdb_idmap_lookup(const vdb_collection *c, const char *id, size_t len, uint64_t h)
{
    if (!c->n_slots) return -1;
    size_t mask = c->n_slots - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
        int64_t v = c->slots[s];
        if (v == -1) return -1;
        int64_t r = slot_row(v);
        if (slot_hash(v) == (uint32_t)h && c->id_len[r] == len && memcmp(c->ids.data + c->id_off[r], id, len) == 0)
            return r;
    }
}

void vdb_idmap_insert(vdb_collection *c, int64_t row, uint64_t h)
{
    size_t mask = c->n_slots - 1;
    size_t s = h & mask;
    while (c->slots[s] != -1) s = (s + 1) & mask;
    c->slots[s] = slot_make(row, h);
}

/* Linear-probing delete by backward shift: keeps every probe chain unbroken. */
void vdb_idmap_remove(vdb_collection *c, int64_t row)
{
    size_t mask = c->n_slots - 1, s = row_hash(c, row) & mask;
    while (slot_row(c->slots[s]) != row) s = (s + 1) & mask;
    size_t hole = s;
    for (size_t j = (hole + 1) & mask; c->slots[j] != -1; j = (j + 1) & mask) {
        size_t home = slot_hash(c->slots[j]) & mask;
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            c->slots[hole] = c->slots[j];
            hole = j;
        }
    }
    c->slots[hole] = -1;
}

/* An empty id table for want_rows ids (at most half full); the caller fills it (vdb_idmap_install). */
int vdb_idmap_alloc(size_t want_rows, int64_t **slots, size_t *n_slots)
{
    size_t n = 16;
    while (n < want_rows * 2) {
        if (n > SIZE_MAX / 2 / sizeof **slots || n >= (1ull << 32)) /* slots keep 32 hash bits */
            return vdb_set_error(VDB_ENOMEM, "id table for %zu rows is too large", want_rows);
        n *= 2;
    }
    if (!(*slots = malloc(n * sizeof **slots))) return vdb_set_error(VDB_ENOMEM, "out of memory growing the id table");
    *n_slots = n;
    return VDB_OK;
}

/* Replaces the id table with slots (from vdb_idmap_alloc) and inserts every live row: cannot fail. */
void vdb_idmap_install(vdb_collection *c, int64_t *slots, size_t n_slots)
{
    free(c->slots);
    c->slots = slots;
    c->n_slots = n_slots;
    memset(slots, 0xff, n_slots * sizeof *slots);
    for (size_t r = 0; r < c->n_rows; r++)
        if (is_live(c, r)) vdb_idmap_insert(c, (int64_t)r, row_hash(c, (int64_t)r));
}

int vdb_idmap_rebuild(vdb_collection *c, size_t want_rows)
{
    int64_t *slots = NULL;
    size_t n = 0;
    int rc = vdb_idmap_alloc(want_rows, &slots, &n);
    if (rc == VDB_OK) vdb_idmap_install(c, slots, n);
    return rc;
}

/* ---- ids.bin: the id table as a checkpoint writes it, so open reads it instead of rebuilding it ----
 * 64-byte header: "VDBIDTB1" u32 version u32 0 u64 n_rows u64 n_slots u64 id_bytes u32 crc32c(payload)
 * zero padding to byte 60, u32 crc32c(header bytes 0..59); payload (little-endian): u64 id_off[n_rows],
 * u32 id_len[n_rows], i64 slots[n_slots] (as in memory: row | hash bits << 32), id bytes[id_bytes].
 * Version 1 also held u64 id_hash[n_rows] after id_len and plain rows in its slots: read, and its
 * table rebuilt. */
#define IDS_HEADER 64
#define IDS_VERSION 2u

static int host_is_le(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* Arrays go to disk as they are in memory on little-endian hosts; others convert a copy. */
static void *le_copy(const void *src, size_t n, size_t elem)
{
    uint8_t *out = malloc(n ? n * elem : 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (elem == 8) vdb_put_u64(out + 8 * i, ((const uint64_t *)src)[i]);
        else vdb_put_u32(out + 4 * i, ((const uint32_t *)src)[i]);
    }
    return out;
}

static void le_fix(void *p, size_t n, size_t elem)
{
    if (host_is_le()) return;
    for (size_t i = 0; i < n; i++) {
        uint8_t *b = (uint8_t *)p + elem * i;
        if (elem == 8) ((uint64_t *)p)[i] = vdb_get_u64(b);
        else ((uint32_t *)p)[i] = vdb_get_u32(b);
    }
}

int vdb_idmap_write(const vdb_collection *c, const char *path)
{
    size_t n = c->n_rows;
    const void *chunks[4] = {c->id_off, c->id_len, c->slots, c->ids.data};
    uint64_t bytes[4] = {n * 8, n * 4, c->n_slots * 8, c->ids.len};
    void *conv[3] = {0};
    int rc = VDB_OK;
    if (!host_is_le()) {
        size_t counts[3] = {n, n, c->n_slots}, elems[3] = {8, 4, 8};
        for (int i = 0; i < 3; i++)
            if (!(conv[i] = le_copy(chunks[i], counts[i], elems[i]))) {
                rc = vdb_set_error(VDB_ENOMEM, "out of memory writing '%s'", path);
                goto cleanup;
            }
        for (int i = 0; i < 3; i++) chunks[i] = conv[i];
    }
    uint32_t crc = 0;
    for (int i = 0; i < 4; i++) crc = vdb_crc32c(crc, chunks[i], bytes[i]);
    uint8_t h[IDS_HEADER] = {0};
    memcpy(h, "VDBIDTB1", 8);
    vdb_put_u32(h + 8, IDS_VERSION);
    vdb_put_u64(h + 16, n);
    vdb_put_u64(h + 24, c->n_slots);
    vdb_put_u64(h + 32, c->ids.len);
    vdb_put_u32(h + 40, crc);
    vdb_put_u32(h + 60, vdb_crc32c(0, h, 60));
    rc = vdb_file_write_new(path, h, sizeof h, chunks, bytes, 4);
cleanup:
    for (int i = 0; i < 3; i++) free(conv[i]);
    return rc;
}

static int ids_corrupt(const char *path, const char *why)
{
    return vdb_set_error(VDB_ECORRUPT, "file '%s' is corrupt (%s)", path, why);
}

/* Checks what the checksum cannot vouch for (a file whose checksum was made to match): every id
 * inside the id bytes, every row in the table exactly once, with its id's hash bits, reachable
 * from its home slot, and no id twice. O(rows + slots + the probes of a lookup of every id); the
 * table is never walked from untrusted bytes before this. */
static int ids_check(const vdb_collection *c, const char *path)
{
    size_t n = c->n_rows, mask = c->n_slots - 1;
    for (size_t r = 0; r < n; r++)
        if (c->id_len[r] == 0 || c->id_off[r] > c->ids.len || c->id_len[r] > c->ids.len - c->id_off[r])
            return ids_corrupt(path, "an id lies outside the id bytes");
    /* The hash bits the table gives each row (hash[r]), and the rows seen. */
    uint32_t *hash = malloc((n ? n : 1) * sizeof *hash);
    uint64_t *seen = calloc((n + 63) / 64 + 1, sizeof *seen);
    int rc = VDB_OK;
    if (!hash || !seen) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory checking '%s'", path);
        goto cleanup;
    }
    size_t empty = 0, found = 0;
    while (empty < c->n_slots && c->slots[empty] != -1) empty++;
    if (empty == c->n_slots) {
        rc = ids_corrupt(path, "the id table has no empty slot");
        goto cleanup;
    }
    /* Walk the slots once from an empty one: a row's home must lie in the run it sits in. The
     * walk trusts each slot's hash bits h and notes them by row (hash[r]); the ids' real hashes
     * are compared with those afterwards, row by row. Both passes read sequentially: only the
     * small bitmap and the notes are written at random. */
    size_t run_start = (empty + 1) & mask;
    for (size_t i = 1; i <= c->n_slots; i++) {
        size_t s = (empty + i) & mask;
        int64_t v = c->slots[s];
        if (v == -1) {
            run_start = (s + 1) & mask;
            continue;
        }
        int64_t r = slot_row(v);
        const uint32_t h = slot_hash(v);
        if ((uint64_t)r >= n || (seen[r >> 6] >> (r & 63)) & 1) {
            rc = ids_corrupt(path, "the id table names a row that does not exist, names it twice or with another hash");
            goto cleanup;
        }
        seen[r >> 6] |= 1ull << (r & 63);
        hash[r] = h;
        found++;
        if (((s - (h & mask)) & mask) > ((s - run_start) & mask)) {
            rc = ids_corrupt(path, "the id table holds a row out of its place");
            goto cleanup;
        }
        /* A repeated id has the same home: it sits between that home and s, in slots of this run
         * already checked (as many as a lookup of r probes). */
        for (size_t t = h & mask; t != s; t = (t + 1) & mask) {
            int64_t w = c->slots[t], o = slot_row(w);
            if (slot_hash(w) == h && c->id_len[o] == c->id_len[r] &&
                memcmp(c->ids.data + c->id_off[o], c->ids.data + c->id_off[r], c->id_len[r]) == 0) {
                rc = ids_corrupt(path, "an id is repeated");
                goto cleanup;
            }
        }
    }
    if (found != n) {
        rc = ids_corrupt(path, "the id table lacks rows");
        goto cleanup;
    }
    for (size_t r = 0; r < n; r++)
        if (hash[r] != (uint32_t)row_hash(c, (int64_t)r)) {
            rc = ids_corrupt(path, "the id table names a row that does not exist, names it twice or with another hash");
            goto cleanup;
        }
cleanup:
    free(hash);
    free(seen);
    return rc;
}

int vdb_idmap_read(vdb_collection *c, const char *path, uint64_t n_rows_expected)
{
    uint8_t h[IDS_HEADER];
    struct stat st;
    uint64_t *old_hash = NULL;
    int rc = VDB_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? VDB_ENOTFOUND : vdb_set_io_error(errno, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = vdb_set_io_error(errno, "cannot stat '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    if ((size_t)st.st_size < IDS_HEADER || (rc = vdb_read_all(fd, h, sizeof h, path)) || memcmp(h, "VDBIDTB1", 8) ||
        vdb_get_u32(h + 60) != vdb_crc32c(0, h, 60)) {
        rc = ids_corrupt(path, "bad header");
        goto cleanup;
    }
    uint32_t version = vdb_get_u32(h + 8);
    if (version != IDS_VERSION && version != 1) {
        rc = vdb_set_error(VDB_ECORRUPT, "file '%s' has format version %u; this vectordb reads versions 1 to %u", path,
                           version, IDS_VERSION);
        goto cleanup;
    }
    uint64_t n = vdb_get_u64(h + 16), n_slots = vdb_get_u64(h + 24), id_bytes = vdb_get_u64(h + 32);
    uint64_t size = (uint64_t)st.st_size - IDS_HEADER, per_row = version == 1 ? 20 : 12;
    /* Sizes are bounded by the file's before anything is allocated from them. */
    if (n != n_rows_expected || n >= UINT32_MAX || n_slots < 16 || (n_slots & (n_slots - 1)) || n_slots / 2 < n ||
        n_slots > (1ull << 32) || n_slots > size / 8 || n > size / per_row || id_bytes != size - per_row * n - 8 * n_slots) {
        rc = n != n_rows_expected && n < UINT32_MAX
                 ? vdb_set_error(VDB_ECORRUPT, "file '%s' holds %llu ids but the vectors file %llu rows", path,
                                 (unsigned long long)n, (unsigned long long)n_rows_expected)
                 : ids_corrupt(path, "sizes do not match the file");
        goto cleanup;
    }
    size_t cap = n ? (size_t)n : 1;
    if (!(c->id_off = malloc(cap * 8)) || !(c->id_len = malloc(cap * 4)) ||
        (version == 1 && !(old_hash = malloc(cap * 8))) || !(c->live = calloc((cap + 63) / 64, 8)) ||
        vdb_buf_reserve(&c->ids, (size_t)id_bytes + 1)) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
        goto cleanup;
    }
    free(c->slots);
    c->n_slots = 0;
    if (!(c->slots = malloc((size_t)n_slots * 8))) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory reading '%s'", path);
        goto cleanup;
    }
    c->n_slots = (size_t)n_slots;
    c->cap_rows = cap;
    void *dst[5] = {c->id_off, c->id_len, old_hash, c->slots, c->ids.data};
    uint64_t bytes[5] = {n * 8, n * 4, version == 1 ? n * 8 : 0, n_slots * 8, id_bytes};
    for (int i = 0; i < 5; i++)
        if (bytes[i]) vdb_prefault(dst[i], (size_t)bytes[i]); /* filled whole just below */

    uint32_t crc = 0;
    for (int i = 0; i < 5; i++) {
        if (!bytes[i]) continue;
        if ((rc = vdb_read_all(fd, dst[i], (size_t)bytes[i], path))) goto cleanup;
        crc = vdb_crc32c(crc, dst[i], (size_t)bytes[i]);
    }
    if (crc != vdb_get_u32(h + 40)) {
        rc = ids_corrupt(path, "checksum mismatch");
        goto cleanup;
    }
    le_fix(c->id_off, n, 8);
    le_fix(c->id_len, n, 4);
    le_fix(c->slots, n_slots, 8);
    c->ids.len = (size_t)id_bytes;
    c->n_rows = (size_t)n;
    /* A snapshot holds live rows only (a checkpoint compacts first). */
    for (size_t r = 0; r < n; r++) c->live[r >> 6] |= 1ull << (r & 63);
    c->n_live = (size_t)n;
    if (version == 1) {
        for (size_t r = 0; r < n; r++)
            if (c->id_len[r] == 0 || c->id_off[r] > c->ids.len || c->id_len[r] > c->ids.len - c->id_off[r]) {
                rc = ids_corrupt(path, "an id lies outside the id bytes");
                goto cleanup;
            }
        /* Its slots hold plain rows: the table is rebuilt from the ids. */
        memset(c->slots, 0xff, c->n_slots * sizeof *c->slots);
        for (size_t r = 0; r < n; r++) {
            const char *id = (const char *)c->ids.data + c->id_off[r];
            uint64_t hr = vdb_idmap_hash(id, c->id_len[r]);
            if (vdb_idmap_lookup(c, id, c->id_len[r], hr) >= 0) {
                rc = ids_corrupt(path, "an id is repeated");
                goto cleanup;
            }
            vdb_idmap_insert(c, (int64_t)r, hr);
        }
    } else {
        rc = ids_check(c, path);
    }
cleanup:
    free(old_hash);
    close(fd);
    return rc;
}
