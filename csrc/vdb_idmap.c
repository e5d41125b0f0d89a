/* vdb_idmap — the collection's id -> row table: FNV-1a hashes, open addressing with linear probing,
 * deletes by backward shift. See vdb_collection_internal.h. */
#include <stdlib.h>
#include <string.h>

#include "vdb_collection_internal.h"
#include "vdb_error.h"

uint64_t vdb_idmap_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

int64_t vdb_idmap_lookup(const vdb_collection *c, const char *id, size_t len, uint64_t h)
{
    if (!c->n_slots) return -1;
    size_t mask = c->n_slots - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
        int64_t r = c->slots[s];
        if (r < 0) return -1;
        if (c->id_hash[r] == h && c->id_len[r] == len && memcmp(c->ids.data + c->id_off[r], id, len) == 0) return r;
    }
}

void vdb_idmap_insert(vdb_collection *c, int64_t row)
{
    size_t mask = c->n_slots - 1;
    size_t s = c->id_hash[row] & mask;
    while (c->slots[s] >= 0) s = (s + 1) & mask;
    c->slots[s] = row;
}

/* Linear-probing delete by backward shift: keeps every probe chain unbroken. */
void vdb_idmap_remove(vdb_collection *c, int64_t row)
{
    size_t mask = c->n_slots - 1, s = c->id_hash[row] & mask;
    while (c->slots[s] != row) s = (s + 1) & mask;
    size_t hole = s;
    for (size_t j = (hole + 1) & mask; c->slots[j] >= 0; j = (j + 1) & mask) {
        size_t home = c->id_hash[c->slots[j]] & mask;
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
        if (n > SIZE_MAX / 2 / sizeof **slots) return vdb_set_error(VDB_ENOMEM, "id table for %zu rows is too large", want_rows);
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
        if (is_live(c, r)) vdb_idmap_insert(c, (int64_t)r);
}

int vdb_idmap_rebuild(vdb_collection *c, size_t want_rows)
{
    int64_t *slots = NULL;
    size_t n = 0;
    int rc = vdb_idmap_alloc(want_rows, &slots, &n);
    if (rc == VDB_OK) vdb_idmap_install(c, slots, n);
    return rc;
}
