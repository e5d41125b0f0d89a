/* Standalone C test of vdb_collection under allocation failures and oversized writes.
 *
 * Compaction (what a checkpoint starts with) is swept with an allocation failure at its 1st, 2nd,
 * ... allocation until it succeeds: after each failure the collection must be exactly as before
 * (every id finds its own vector, deleted ids are gone, re-adding a live id is skipped, re-adding a
 * deleted one appends). A write of 2^32 records (more than a log record's 32-bit count holds) must
 * be refused before anything is read or allocated.
 *
 * Build and run from the repository root (malloc and friends are wrapped to inject failures):
 *   gcc -std=c11 -O2 -g -Wall -Wextra -pthread -D_GNU_SOURCE -Icsrc -Wl,--wrap=malloc,--wrap=calloc \
 *       -Wl,--wrap=realloc,--wrap=posix_memalign tests/c/test_collection.c csrc/vdb_*.c -lm \
 *       -o /tmp/test_collection && /tmp/test_collection
 * Exit status 0 = all passed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_collection.h"
#include "vdb_error.h"

static long fail_countdown; /* > 0: the allocation that brings it to 0 fails */

static int fail_now(void) { return fail_countdown > 0 && --fail_countdown == 0; }

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return fail_now() ? NULL : __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
int __wrap_posix_memalign(void **p, size_t align, size_t n) { return fail_now() ? 12 : __real_posix_memalign(p, align, n); }

static int failures;

#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            if (++failures <= 20) {                                                                        \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                       \
                fprintf(stderr, __VA_ARGS__);                                                              \
                fputc('\n', stderr);                                                                       \
            }                                                                                              \
        }                                                                                                  \
    } while (0)

#define N 3000
#define D 4

static char id_text[N][16];
static const char *id_ptr[N];
static uint32_t id_len[N];
static float vecs[N * D];

/* Adds ids [from, to) (step) with their vectors; status per record into st. */
static int add_range(vdb_collection *c, int from, int to, int step, int op, uint8_t *st)
{
    const char *ids[N];
    uint32_t lens[N];
    float v[N * D];
    size_t n = 0;
    for (int i = from; i < to; i += step, n++) {
        ids[n] = id_ptr[i];
        lens[n] = id_len[i];
        memcpy(v + n * D, vecs + (size_t)i * D, D * sizeof(float));
    }
    vdb_batch b = {n, D, ids, lens, op == VDB_OP_DELETE ? NULL : v, NULL, NULL, NULL, NULL};
    return vdb_collection_write(c, op, &b, st);
}

/* Every odd id holds its own vector; no even id is there. */
static void check_state(vdb_collection *c, long k)
{
    vdb_get_request req = {id_ptr, id_len, N, NULL, 0, -1, VDB_INC_VECTORS};
    vdb_result *r = NULL;
    int rc = vdb_collection_get(c, &req, &r);
    CHECK(rc == VDB_OK, "failure at allocation %ld: get failed: %s", k, vdb_last_error());
    if (rc) return;
    CHECK(r->n == N / 2, "failure at allocation %ld: %zu ids found, expected %d", k, r->n, N / 2);
    for (size_t j = 0; j < r->n && j < N / 2; j++) {
        int i = (int)(2 * j + 1);
        CHECK(r->id_len[j] == id_len[i] && !memcmp(r->arena + r->id_off[j], id_ptr[i], id_len[i]),
              "failure at allocation %ld: record %zu is not id %d", k, j, i);
        CHECK(!memcmp(r->vectors + j * D, vecs + (size_t)i * D, D * sizeof(float)),
              "failure at allocation %ld: id %d has another id's vector", k, i);
    }
    vdb_result_free(r);
}

static void test_compaction_under_allocation_failures(void)
{
    vdb_collection_config cfg = {VDB_METRIC_L2, D, 1, 0, 0, 0, VDB_QUANT_NONE};
    int succeeded = 0;
    long k_done = 0;
    for (long k = 1; k < 400 && !succeeded; k++) {
        k_done = k - 1;
        vdb_collection *c = NULL;
        uint8_t st[N];
        if (vdb_collection_open(NULL, &cfg, &c) || add_range(c, 0, N, 1, VDB_OP_ADD, st) ||
            add_range(c, 0, N, 2, VDB_OP_DELETE, st)) {
            CHECK(0, "setup failed: %s", vdb_last_error());
            return;
        }
        fail_countdown = k;
        int rc = vdb_collection_checkpoint(c); /* in memory: compaction only */
        succeeded = fail_countdown > 0;        /* no allocation failed: the sweep is complete */
        fail_countdown = 0;
        CHECK(rc == VDB_OK || rc == VDB_ENOMEM, "failure at allocation %ld: checkpoint returned %d", k, rc);
        check_state(c, k);
        /* Live ids are skipped, deleted ones come back: the id table matches the rows. */
        CHECK(add_range(c, 1, N, 2, VDB_OP_ADD, st) == VDB_OK, "re-add failed: %s", vdb_last_error());
        for (int j = 0; j < N / 2; j++) CHECK(st[j] == 0, "failure at allocation %ld: live id %d added twice", k, 2 * j + 1);
        CHECK(add_range(c, 0, N, 2, VDB_OP_ADD, st) == VDB_OK, "re-add failed: %s", vdb_last_error());
        for (int j = 0; j < N / 2; j++) CHECK(st[j] == 1, "failure at allocation %ld: deleted id %d not re-added", k, 2 * j);
        int64_t count = 0;
        vdb_collection_count(c, NULL, &count);
        CHECK(count == N, "failure at allocation %ld: %lld records after re-adding, expected %d", k, (long long)count, N);
        vdb_collection_close(c);
    }
    CHECK(succeeded, "compaction never succeeded within the sweep");
    printf("compaction swept over %ld allocation failures\n", k_done);
}

static void test_write_of_2_32_records_is_refused(void)
{
    vdb_collection_config cfg = {VDB_METRIC_L2, D, 1, 0, 0, 0, VDB_QUANT_NONE};
    vdb_collection *c = NULL;
    if (vdb_collection_open(NULL, &cfg, &c)) {
        CHECK(0, "open failed: %s", vdb_last_error());
        return;
    }
    /* Only the first records exist: the count must be refused before any is read. */
    vdb_batch b = {(size_t)1 << 32, D, id_ptr, id_len, vecs, NULL, NULL, NULL, NULL};
    int rc = vdb_collection_write(c, VDB_OP_ADD, &b, NULL);
    CHECK(rc == VDB_EINVAL, "a write of 2^32 records returned %d (%s)", rc, vdb_last_error());
    int64_t count = -1;
    vdb_collection_count(c, NULL, &count);
    CHECK(count == 0, "%lld records after a refused write", (long long)count);
    vdb_collection_close(c);
}

int main(void)
{
    for (int i = 0; i < N; i++) {
        id_len[i] = (uint32_t)snprintf(id_text[i], sizeof id_text[i], "id-%d", i);
        id_ptr[i] = id_text[i];
        for (int j = 0; j < D; j++) vecs[i * D + j] = (float)(i * D + j);
    }
    test_compaction_under_allocation_failures();
    test_write_of_2_32_records_is_refused();
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("test_collection: all passed\n");
    return 0;
}
