/* Standalone C test of vdb_meta's typed columns and vdb_filter's column evaluation.
 *
 * Random stores (common keys that turn dense, rare keys that stay sparse, a key per record, every
 * value type with NaN, -0.0, inf and int64 extremes, lists), random updates and document changes,
 * random allocation failures inside column upkeep, and random filter programs: every evaluation
 * through the columns must equal the blob-walking reference path (vdb_meta_force_blob), for the
 * whole store and for a prefix of its rows; stored blobs and documents must read back unchanged;
 * a store rebuilt row by row (what compaction does) must evaluate the same.
 *
 * Build and run from the repository root:
 *   gcc -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -DVDB_META_FAULTS -Icsrc tests/c/test_meta.c \
 *       csrc/vdb_meta.c csrc/vdb_filter.c csrc/vdb_bytes.c csrc/vdb_error.c -o /tmp/test_meta && /tmp/test_meta
 * Add -fsanitize=address,undefined for the sanitizer run; run also with MALLOC_PERTURB_=165 (glibc
 * fills fresh memory, so a column slot never written cannot pass for "key absent").
 * Optional argument: the random seed.
 * Exit status 0 = all passed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_bytes.h"
#include "vdb_error.h"
#include "vdb_filter.h"
#include "vdb_meta.h"
#include "vdb_test.h"


static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static unsigned rn(unsigned n) { return (unsigned)(rnd() % n); }

/* ---- shadow model: what each row must read back ---- */

typedef struct {
    uint8_t *meta;
    size_t meta_len;
    const char *doc; /* NULL = none */
} shadow_row;

static shadow_row *shadow;
static size_t n_shadow, cap_shadow;

/* ---- value pools (shared by stored values and operands, so that filters hit) ---- */

static const char *STRS[] = {"", "a", "b", "c", "abc", "sunset", "beach", "x1", "x2", "x3", "x4", "x5",
                             "x6", "x7", "x8", "x9", "x10", "x11", "x12", "\xc3\xa9t\xc3\xa9"};
#define N_STRS (sizeof STRS / sizeof *STRS)

static int64_t rand_int(void)
{
    static const int64_t special[] = {INT64_MIN, INT64_MAX, (int64_t)1 << 53, ((int64_t)1 << 53) + 1,
                                      -((int64_t)1 << 53) - 1, INT64_MIN + 1, INT64_MAX - 1};
    if (rn(6) == 0) return special[rn(sizeof special / sizeof *special)];
    return (int64_t)rn(9) - 4;
}

static double rand_float(int allow_nan)
{
    static const double special[] = {-0.0, INFINITY, -INFINITY, 9007199254740992.0, 9007199254740994.0,
                                     9223372036854775808.0, -9223372036854775808.0, 1e300, -1e-300,
                                     4.9e-324, 9223372036854774784.0};
    unsigned k = rn(10);
    if (k == 0 && allow_nan) return NAN;
    if (k <= 2) return special[rn(sizeof special / sizeof *special)];
    return ((double)rn(11) - 5.0) / 2.0; /* -2.5 .. 2.5 step 0.5: exact ints among them */
}

static void put_bare(vdb_buf *b, uint8_t tag, int allow_nan)
{
    switch (tag) {
    case VDB_TAG_STR: {
        const char *s = STRS[rn(N_STRS)];
        vdb_buf_u32(b, (uint32_t)strlen(s));
        vdb_buf_append(b, s, strlen(s));
        break;
    }
    case VDB_TAG_INT: vdb_buf_u64(b, (uint64_t)rand_int()); break;
    case VDB_TAG_FLOAT: {
        double d = rand_float(allow_nan);
        uint64_t u;
        memcpy(&u, &d, 8);
        vdb_buf_u64(b, u);
        break;
    }
    default: {
        uint8_t v = (uint8_t)rn(2);
        vdb_buf_append(b, &v, 1);
    }
    }
}

static void put_key(vdb_buf *b, const char *k)
{
    vdb_buf_u32(b, (uint32_t)strlen(k));
    vdb_buf_append(b, k, strlen(k));
}

/* Keys: k0..k5 common (k0 mostly str, k1 int, k2 float, k3 bool, k4 list, k5 anything), "rare"
 * (2% of records), "u0".."u39" (5% of records, so each is held by a handful), and new keys all the
 * time (g<n>). */
static uint8_t rand_tag_for(int key)
{
    static const uint8_t pref[] = {VDB_TAG_STR, VDB_TAG_INT, VDB_TAG_FLOAT, VDB_TAG_BOOL, 0, 0};
    if (key < 5 && rn(10) != 0) {
        if (pref[key]) return pref[key];
        return (uint8_t)(VDB_TAG_LIST | (1 + rn(4)));
    }
    uint8_t t = (uint8_t)(1 + rn(4));
    return rn(3) == 0 ? (uint8_t)(VDB_TAG_LIST | t) : t;
}

static void put_value(vdb_buf *b, uint8_t tag)
{
    vdb_buf_append(b, &tag, 1);
    if (tag & VDB_TAG_LIST) {
        uint32_t n = 1 + rn(4);
        vdb_buf_u32(b, n);
        for (uint32_t i = 0; i < n; i++) put_bare(b, tag & 0x0F, 1);
    } else {
        put_bare(b, tag, 1);
    }
}

/* A random blob (NULL when it would be empty). */
static uint8_t *rand_blob(size_t *len)
{
    vdb_buf b = {0};
    uint32_t n = 0;
    char key[32];
    vdb_buf_u32(&b, 0);
    for (int k = 0; k < 6; k++) {
        if (rn(10) < 2) continue;
        snprintf(key, sizeof key, "k%d", k);
        put_key(&b, key);
        put_value(&b, rand_tag_for(k));
        n++;
    }
    if (rn(50) == 0) {
        put_key(&b, "rare");
        put_value(&b, rand_tag_for(9));
        n++;
    }
    if (rn(20) == 0) {
        snprintf(key, sizeof key, "u%u", rn(40));
        put_key(&b, key);
        put_value(&b, rand_tag_for(9));
        n++;
    }
    if (rn(3) == 0) { /* keys that keep appearing: g<row / 100>, each held by ~30 neighbouring rows */
        snprintf(key, sizeof key, "g%zu", n_shadow / 100);
        put_key(&b, key);
        put_value(&b, rand_tag_for(9));
        n++;
    }
    if (!n) {
        vdb_buf_free(&b);
        *len = 0;
        return NULL;
    }
    vdb_put_u32(b.data, n);
    *len = b.len;
    return b.data;
}

static const char *DOCS[] = {"", "a sunset at the beach", "sunrise", "the beach", "abcabc", "zzz", "ab", "c",
                             "b", "ca", "0123456789abcdef0123456789abcdef-long enough for 16-byte steps-zz"};
#define N_DOCS (sizeof DOCS / sizeof *DOCS)


/* ---- random filter programs ---- */

static void put_operand_key(vdb_buf *b)
{
    char key[32];
    unsigned k = rn(10);
    if (k < 6) snprintf(key, sizeof key, "k%u", k);
    else if (k == 6) snprintf(key, sizeof key, "rare");
    else if (k == 7) snprintf(key, sizeof key, "u%u", rn(40));
    else if (k == 8) snprintf(key, sizeof key, "missing");
    else snprintf(key, sizeof key, "g%zu", n_shadow / 100 - (n_shadow >= 100 ? rn(2) : 0)); /* the newest */
    put_key(b, key);
}

static void rand_node(vdb_buf *b, int depth)
{
    unsigned k = rn(depth >= 3 ? 6 : 10);
    uint8_t kind, tag;
    if (k >= 6) {
        if (k == 6) {
            kind = VDB_FK_NOT;
            vdb_buf_append(b, &kind, 1);
            rand_node(b, depth + 1);
            return;
        }
        kind = k == 7 ? VDB_FK_AND : VDB_FK_OR;
        uint32_t n = 2 + rn(2);
        vdb_buf_append(b, &kind, 1);
        vdb_buf_u32(b, n);
        for (uint32_t i = 0; i < n; i++) rand_node(b, depth + 1);
        return;
    }
    switch (rn(8)) {
    case 0: case 1: kind = VDB_FK_EQ; break;
    case 2: kind = (uint8_t)(VDB_FK_LT + rn(4)); break;
    case 3: case 4: kind = VDB_FK_IN; break;
    case 5: case 6: kind = VDB_FK_CONTAINS; break;
    default: kind = VDB_FK_DOC_CONTAINS; break;
    }
    vdb_buf_append(b, &kind, 1);
    if (kind == VDB_FK_DOC_CONTAINS) {
        static const char *needles[] = {"", "sun", "beach", "abc", "q", "a"};
        const char *s = needles[rn(6)];
        vdb_buf_u32(b, (uint32_t)strlen(s));
        vdb_buf_append(b, s, strlen(s));
        return;
    }
    put_operand_key(b);
    if (kind >= VDB_FK_LT && kind <= VDB_FK_GTE) tag = (uint8_t)(VDB_TAG_INT + rn(2));
    else tag = (uint8_t)(1 + rn(4));
    if (kind == VDB_FK_IN) {
        uint32_t n = rn(3) == 0 ? 9 + rn(10) : 1 + rn(4);
        vdb_buf_append(b, &tag, 1);
        vdb_buf_u32(b, n);
        for (uint32_t i = 0; i < n; i++) put_bare(b, tag, 0);
        return;
    }
    vdb_buf_append(b, &tag, 1);
    put_bare(b, tag, 0);
}

static vdb_filter *rand_filter(void)
{
    vdb_buf b = {0};
    uint8_t v = VDB_FILTER_VERSION;
    vdb_buf_append(&b, "VDBF", 4);
    vdb_buf_append(&b, &v, 1);
    rand_node(&b, 0);
    vdb_filter *f = NULL;
    int rc = vdb_filter_compile(b.data, b.len, &f);
    CHECK(rc == VDB_OK, "compile: %s", vdb_last_error());
    vdb_buf_free(&b);
    return f;
}

static size_t popcount(const uint64_t *b, size_t words)
{
    size_t n = 0;
    for (size_t w = 0; w < words; w++) n += (size_t)__builtin_popcountll(b[w]);
    return n;
}

/* Column kinds seen (VDB_COL_*): the random runs must reach every one. */
static size_t kinds_seen[4];

static void note_kinds(const vdb_meta *m)
{
    static const char *keys[] = {"k0", "k1", "k2", "k3", "k4", "k5", "rare", "u1", "u2", "missing"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        vdb_meta_column col;
        vdb_meta_column_get(m, (const uint8_t *)keys[i], strlen(keys[i]), &col);
        kinds_seen[col.kind]++;
    }
}

/* Evaluates f over the first n_rows rows through the columns and through the blobs. */
static void compare_eval(const vdb_filter *f, const vdb_meta *m, size_t n_rows, const char *what)
{
    size_t words = (n_rows + 63) / 64 + 1;
    uint64_t *a = malloc(words * 8), *b = malloc(words * 8);
    memset(a, 0xAB, words * 8);
    memset(b, 0xCD, words * 8);
    note_kinds(m);
    int rc1 = vdb_filter_eval(f, m, n_rows, a);
    vdb_meta_force_blob = 1;
    int rc2 = vdb_filter_eval(f, m, n_rows, b);
    vdb_meta_force_blob = 0;
    CHECK(rc1 == VDB_OK && rc2 == VDB_OK, "%s: eval failed: %s", what, vdb_last_error());
    size_t used = (n_rows + 63) / 64;
    int same = memcmp(a, b, used * 8) == 0;
    CHECK(same, "%s: columns and blobs disagree over %zu rows (%zu vs %zu matches)", what, n_rows,
          popcount(a, used), popcount(b, used));
    CHECK(a[used] == 0xABABABABABABABABull, "%s: eval wrote past the bitmap", what);
    if (!same && failures < 5) {
        for (size_t r = 0; r < n_rows; r++)
            if (((a[r / 64] ^ b[r / 64]) >> (r % 64)) & 1) {
                fprintf(stderr, "  first differing row %zu: columns %d\n", r, (int)(a[r / 64] >> (r % 64) & 1));
                break;
            }
    }
    free(a);
    free(b);
}

/* vdb_meta_doc_contains against memmem over the model's documents, with dense and sparse care sets
 * (both of its strategies); needles that would straddle two adjacent documents must not match. */
static void check_doc_contains(const vdb_meta *m, const char *what)
{
    static const char *needles[] = {"", "sun", "beach", "abc", "q", "a", "bc", "cab", "ca", "b", "the beach",
                                    "zzzz", "cb", "f0123456789abcdef-", "-zz", "abcabc", "bcab"};
    size_t n = n_shadow, words = (n + 63) / 64;
    uint64_t *care = malloc((words + 1) * 8), *out = malloc((words + 1) * 8);
    for (size_t k = 0; k < sizeof needles / sizeof *needles; k++) {
        for (int dense = 0; dense < 2; dense++) {
            for (size_t w = 0; w < words; w++)
                care[w] = dense ? ~(rnd() & rnd() & rnd()) : rnd() & rnd() & rnd() & rnd();
            if (n % 64) care[words - 1] &= ((uint64_t)1 << (n % 64)) - 1;
            out[words] = 0x5A5A5A5A5A5A5A5Aull;
            const char *nd = needles[k];
            vdb_meta_doc_contains(m, n, nd, strlen(nd), care, out);
            int ok = 1;
            for (size_t r = 0; r < n; r++) {
                const char *doc = shadow[r].doc;
                int want = (care[r / 64] >> (r % 64) & 1) && doc && (!*nd || memmem(doc, strlen(doc), nd, strlen(nd)));
                if (want != (int)(out[r / 64] >> (r % 64) & 1)) {
                    CHECK(0, "%s: doc contains '%s' (%s care) row %zu: got %d", what, nd, dense ? "dense" : "sparse", r,
                          !want);
                    ok = 0;
                    break;
                }
            }
            if (ok) CHECK(out[words] == 0x5A5A5A5A5A5A5A5Aull, "%s: doc contains wrote past the bitmap", what);
        }
    }
    free(care);
    free(out);
}

static void check_readback(const vdb_meta *m, const char *what)
{
    CHECK(vdb_meta_rows(m) == n_shadow, "%s: %zu rows, expected %zu", what, vdb_meta_rows(m), n_shadow);
    for (size_t r = 0; r < n_shadow && r < vdb_meta_rows(m); r++) {
        const uint8_t *mb;
        const char *doc;
        size_t ml, dl;
        vdb_meta_get(m, r, &mb, &ml, &doc, &dl);
        const shadow_row *s = &shadow[r];
        CHECK((mb == NULL) == (s->meta == NULL) && ml == s->meta_len && (!mb || memcmp(mb, s->meta, ml) == 0),
              "%s: row %zu metadata differs", what, r);
        CHECK((doc == NULL) == (s->doc == NULL) && (!doc || (dl == strlen(s->doc) && memcmp(doc, s->doc, dl) == 0)),
              "%s: row %zu document differs", what, r);
    }
}

static void shadow_set(size_t r, int set_meta, uint8_t *meta, size_t meta_len, int set_doc, const char *doc)
{
    if (r == n_shadow) {
        if (n_shadow == cap_shadow) {
            cap_shadow = cap_shadow ? cap_shadow * 2 : 1024;
            shadow = realloc(shadow, cap_shadow * sizeof *shadow);
        }
        shadow[n_shadow++] = (shadow_row){NULL, 0, NULL};
    }
    if (set_meta) {
        free(shadow[r].meta);
        shadow[r].meta = meta;
        shadow[r].meta_len = meta_len;
    } else {
        free(meta);
    }
    if (set_doc) shadow[r].doc = doc;
}

static void run(size_t target_rows, int with_faults, int n_filters)
{
    vdb_meta *m = NULL;
    CHECK(vdb_meta_create(&m) == VDB_OK, "create");
    n_shadow = 0;
    size_t ops = 0;
    while (n_shadow < target_rows) {
        /* one "write": reserve, then a few sets that must not fail */
        size_t batch = 1 + rn(40);
        int rc = vdb_meta_reserve(m, batch, 4096);
        if (rc == VDB_ENOMEM && with_faults) continue; /* an injected failure: the write is refused whole */
        CHECK(rc == VDB_OK, "reserve: %s", vdb_last_error());
        for (size_t i = 0; i < batch; i++, ops++) {
            size_t row;
            int set_meta = 1, set_doc = 1;
            unsigned what = rn(10);
            if (what < 6 || n_shadow == 0) {
                row = n_shadow;
            } else {
                /* updates: mostly recent rows, some old ones (sparse logs get out-of-order rows) */
                row = rn(2) ? n_shadow - 1 - rn((unsigned)(n_shadow < 50 ? n_shadow : 50)) : rn((unsigned)n_shadow);
                set_meta = what != 9;
                set_doc = what >= 8;
            }
            size_t ml = 0;
            uint8_t *mb = set_meta && rn(12) ? rand_blob(&ml) : NULL;
            const char *doc = rn(5) ? DOCS[rn(N_DOCS)] : NULL;
            /* armed across sets and reserves: failures hit column upkeep, key creation, rebuilds */
            if (with_faults && vdb_meta_fault_countdown == 0 && rn(3) == 0) vdb_meta_fault_countdown = 1 + rn(8);
            rc = vdb_meta_set(m, row, set_meta, mb, ml, set_doc, doc, doc ? strlen(doc) : 0);
            CHECK(rc == VDB_OK, "set after reserve failed: %s", vdb_last_error());
            if (rc == VDB_OK) shadow_set(row, set_meta || row == n_shadow, mb, ml, set_doc || row == n_shadow, doc);
            else free(mb);
            /* the rare key, updated over and over on a few rows: sparse log compaction */
            if (n_shadow > 10 && rn(4) == 0) {
                vdb_buf b = {0};
                size_t r2 = rn(10);
                vdb_buf_u32(&b, 1);
                put_key(&b, "rare");
                put_value(&b, rand_tag_for(9));
                rc = vdb_meta_set(m, r2, 1, b.data, b.len, 0, NULL, 0);
                CHECK(rc == VDB_OK, "set: %s", vdb_last_error());
                shadow_set(r2, 1, b.data, b.len, 0, NULL);
            }
        }
        if (ops % 200 < 40 || n_shadow >= target_rows) {
            for (int i = 0; i < n_filters; i++) {
                vdb_filter *f = rand_filter();
                if (!f) continue;
                compare_eval(f, m, n_shadow, "store");
                if (n_shadow > 1) compare_eval(f, m, 1 + rn((unsigned)n_shadow - 1), "prefix");
                vdb_filter_free(f);
            }
        }
    }
    vdb_meta_fault_countdown = 0;
    check_readback(m, "store");
    check_doc_contains(m, "store");

    /* what compaction does: a fresh store filled row by row (every other row dropped) */
    vdb_meta *m2 = NULL;
    CHECK(vdb_meta_create(&m2) == VDB_OK, "create");
    size_t k = 0;
    for (size_t r = 0; r < n_shadow; r++) {
        if (r % 3 == 1) continue;
        const uint8_t *mb;
        const char *doc;
        size_t ml, dl;
        vdb_meta_get(m, r, &mb, &ml, &doc, &dl);
        CHECK(vdb_meta_set(m2, k++, 1, mb, ml, 1, doc, dl) == VDB_OK, "copy set");
    }
    for (int i = 0; i < n_filters * 4; i++) {
        vdb_filter *f = rand_filter();
        if (!f) continue;
        compare_eval(f, m2, k, "rebuilt");
        vdb_filter_free(f);
    }
    /* after faults, a reserve rebuilds the columns: still the same answers */
    CHECK(vdb_meta_reserve(m, 0, 0) == VDB_OK, "reserve");
    for (int i = 0; i < n_filters * 2; i++) {
        vdb_filter *f = rand_filter();
        if (!f) continue;
        compare_eval(f, m, n_shadow, "after rebuild");
        vdb_filter_free(f);
    }
    /* a set whose input points into the store's own arena (copying a row onto a new one) */
    {
        const uint8_t *mb;
        const char *doc;
        size_t ml, dl;
        vdb_meta_get(m, 0, &mb, &ml, &doc, &dl);
        size_t row = vdb_meta_rows(m);
        uint8_t *copy = mb ? malloc(ml) : NULL;
        if (mb) memcpy(copy, mb, ml);
        CHECK(vdb_meta_set(m, row, 1, mb, ml, 1, doc, dl) == VDB_OK, "self copy");
        shadow_set(row, 1, copy, ml, 1, shadow[0].doc);
        check_readback(m, "self copy");
    }
    CHECK(vdb_meta_bytes(m) > 0, "bytes");
    vdb_meta_free(m);
    vdb_meta_free(m2);
    for (size_t r = 0; r < n_shadow; r++) free(shadow[r].meta);
}

/* Exact int/float boundaries: values next to each other, every comparison, both paths. */
static void test_numeric_edges(void)
{
    static const double fv[] = {-0.0, 0.0, 0.5, -0.5, 1.0, 9007199254740992.0, 9007199254740994.0,
                                9223372036854775808.0, -9223372036854775808.0, 9223372036854774784.0,
                                INFINITY, -INFINITY, NAN, 4.9e-324, -4.9e-324};
    static const int64_t iv[] = {0, 1, -1, (int64_t)1 << 53, ((int64_t)1 << 53) + 1, INT64_MAX, INT64_MIN,
                                 INT64_MAX - 1, INT64_MIN + 1, 9223372036854774784};
    vdb_meta *m = NULL;
    vdb_meta_create(&m);
    size_t row = 0;
    /* 300 copies of each, so the column turns dense; then a second key kept sparse */
    for (int rep = 0; rep < 2; rep++) {
        for (size_t i = 0; i < sizeof fv / sizeof *fv + sizeof iv / sizeof *iv; i++) {
            vdb_buf b = {0};
            vdb_buf_u32(&b, 1);
            put_key(&b, rep ? "s" : "x");
            if (i < sizeof fv / sizeof *fv) {
                uint8_t t = VDB_TAG_FLOAT;
                uint64_t u;
                memcpy(&u, &fv[i], 8);
                vdb_buf_append(&b, &t, 1);
                vdb_buf_u64(&b, u);
            } else {
                uint8_t t = VDB_TAG_INT;
                vdb_buf_append(&b, &t, 1);
                vdb_buf_u64(&b, (uint64_t)iv[i - sizeof fv / sizeof *fv]);
            }
            int copies = rep ? 1 : 30;
            for (int c = 0; c < copies; c++) vdb_meta_set(m, row++, 1, b.data, b.len, 0, NULL, 0);
            vdb_buf_free(&b);
        }
    }
    for (int key = 0; key < 2; key++) {
        for (int kind = VDB_FK_EQ; kind <= VDB_FK_GTE; kind++) {
            for (size_t i = 0; i < sizeof fv / sizeof *fv + sizeof iv / sizeof *iv; i++) {
                vdb_buf b = {0};
                uint8_t v = VDB_FILTER_VERSION, k8 = (uint8_t)kind, t;
                vdb_buf_append(&b, "VDBF", 4);
                vdb_buf_append(&b, &v, 1);
                vdb_buf_append(&b, &k8, 1);
                put_key(&b, key ? "s" : "x");
                if (i < sizeof fv / sizeof *fv) {
                    if (isnan(fv[i])) {
                        vdb_buf_free(&b);
                        continue;
                    }
                    uint64_t u;
                    t = VDB_TAG_FLOAT;
                    memcpy(&u, &fv[i], 8);
                    vdb_buf_append(&b, &t, 1);
                    vdb_buf_u64(&b, u);
                } else {
                    t = VDB_TAG_INT;
                    vdb_buf_append(&b, &t, 1);
                    vdb_buf_u64(&b, (uint64_t)iv[i - sizeof fv / sizeof *fv]);
                }
                vdb_filter *f = NULL;
                CHECK(vdb_filter_compile(b.data, b.len, &f) == VDB_OK, "compile edge");
                if (f) compare_eval(f, m, row, "numeric edges");
                vdb_filter_free(f);
                vdb_buf_free(&b);
            }
        }
    }
    vdb_meta_free(m);
}

/* One key per record: memory must stay linear in the records, not records x keys. */
static void test_unique_keys(void)
{
    vdb_meta *m = NULL;
    vdb_meta_create(&m);
    size_t n = 20000;
    vdb_meta_reserve(m, n, n * 40);
    for (size_t r = 0; r < n; r++) {
        vdb_buf b = {0};
        char key[32];
        uint8_t t = VDB_TAG_INT;
        snprintf(key, sizeof key, "key%zu", r);
        vdb_buf_u32(&b, 1);
        put_key(&b, key);
        vdb_buf_append(&b, &t, 1);
        vdb_buf_u64(&b, r);
        CHECK(vdb_meta_set(m, r, 1, b.data, b.len, 0, NULL, 0) == VDB_OK, "set");
        vdb_buf_free(&b);
    }
    size_t bytes = vdb_meta_bytes(m);
    CHECK(bytes < n * 400, "%zu unique keys take %zu bytes (%zu per record)", n, bytes, bytes / n);
    vdb_filter *f = NULL;
    uint8_t prog[64];
    size_t len = 0;
    memcpy(prog, "VDBF\x01\x10", 6);
    len = 6;
    vdb_put_u32(prog + len, 8);
    memcpy(prog + len + 4, "key12345", 8);
    len += 12;
    prog[len++] = VDB_TAG_INT;
    vdb_put_u64(prog + len, 12345);
    len += 8;
    CHECK(vdb_filter_compile(prog, len, &f) == VDB_OK, "compile");
    uint64_t *bm = calloc((n + 63) / 64, 8);
    CHECK(vdb_filter_eval(f, m, n, bm) == VDB_OK && popcount(bm, (n + 63) / 64) == 1 &&
              (bm[12345 / 64] >> (12345 % 64) & 1),
          "unique key lookup");
    free(bm);
    vdb_filter_free(f);
    vdb_meta_free(m);
}

/* One allocation failure at each position in turn of a scripted sequence of writes (no reserve,
 * so nothing repairs it): every filter must still give the blob path's answer. */
static void test_fault_sweep(void)
{
    for (long k = 1; k <= 400; k++) {
        uint64_t saved = rng_state;
        rng_state = 12345;
        vdb_meta *m = NULL;
        vdb_meta_create(&m);
        n_shadow = 0;
        vdb_meta_fault_countdown = k;
        for (size_t i = 0; i < 600; i++) {
            size_t row = i < 400 || rn(2) ? n_shadow : rn((unsigned)n_shadow);
            size_t ml = 0;
            uint8_t *mb = rand_blob(&ml);
            CHECK(vdb_meta_set(m, row, 1, mb, ml, 1, "doc", 3) == VDB_OK, "set: %s", vdb_last_error());
            if (row == n_shadow) n_shadow++;
            free(mb);
        }
        long left = vdb_meta_fault_countdown;
        vdb_meta_fault_countdown = 0;
        for (int i = 0; i < 25; i++) {
            vdb_filter *f = rand_filter();
            if (f) compare_eval(f, m, n_shadow, "fault sweep");
            vdb_filter_free(f);
        }
        vdb_meta_free(m);
        rng_state = saved;
        if (left > 0) break; /* k is past the script's last allocation */
    }
    n_shadow = 0;
}

/* Document search on a small alphabet (many near misses), short and long documents, some rows
 * without one, some rewritten (runs of adjacent documents broken): against memmem. */
static void test_doc_search_random(void)
{
    static const char alpha[] = "abc 1";
    enum { N = 700 };
    char *docs[N];
    vdb_meta *m = NULL;
    vdb_meta_create(&m);
    for (int pass = 0; pass < 2; pass++)
        for (size_t r = 0; r < N; r++) {
            if (pass == 1 && rn(4)) continue; /* pass 1 rewrites a quarter of them */
            if (pass == 1) free(docs[r]);
            size_t len = rn(5) == 0 ? 20 + rn(60) : rn(12);
            docs[r] = rn(10) == 0 ? NULL : malloc(len + 1);
            if (docs[r]) {
                for (size_t i = 0; i < len; i++) docs[r][i] = alpha[rn(sizeof alpha - 1)];
                docs[r][len] = 0;
            }
            CHECK(vdb_meta_set(m, r, 0 + (pass == 0), NULL, 0, 1, docs[r], docs[r] ? len : 0) == VDB_OK, "set");
        }
    size_t words = (N + 63) / 64;
    uint64_t care[(N + 63) / 64], out[(N + 63) / 64];
    for (int t = 0; t < 400; t++) {
        char nd[8];
        size_t m_len = 1 + rn(6);
        for (size_t i = 0; i < m_len; i++) nd[i] = alpha[rn(sizeof alpha - 1)];
        nd[m_len] = 0;
        int dense = t % 2;
        for (size_t w = 0; w < words; w++) care[w] = dense ? ~(rnd() & rnd()) : rnd() & rnd() & rnd() & rnd();
        care[words - 1] &= ((uint64_t)1 << (N % 64)) - 1;
        vdb_meta_doc_contains(m, N, nd, m_len, care, out);
        for (size_t r = 0; r < N; r++) {
            int want = (care[r / 64] >> (r % 64) & 1) && docs[r] && memmem(docs[r], strlen(docs[r]), nd, m_len);
            if (want != (int)(out[r / 64] >> (r % 64) & 1)) {
                CHECK(0, "doc search '%s' in '%s' (%s care): got %d", nd, docs[r], dense ? "dense" : "sparse", !want);
                break;
            }
        }
    }
    for (size_t r = 0; r < N; r++) free(docs[r]);
    vdb_meta_free(m);
}

int main(int argc, char **argv)
{
    if (argc > 1) rng_state = strtoull(argv[1], NULL, 10) | 1;
    test_numeric_edges();
    test_unique_keys();
    test_fault_sweep();
    test_doc_search_random();
    run(300, 0, 10);
    run(3000, 0, 6);
    run(3000, 1, 6);
    run(1500, 1, 6);
    CHECK(kinds_seen[VDB_COL_ABSENT] && kinds_seen[VDB_COL_DENSE] && kinds_seen[VDB_COL_SPARSE] &&
              kinds_seen[VDB_COL_BLOB],
          "column kinds not all reached: absent %zu dense %zu sparse %zu blob %zu", kinds_seen[0], kinds_seen[1],
          kinds_seen[2], kinds_seen[3]);
    printf("column kinds evaluated: absent %zu, dense %zu, sparse %zu, blob %zu\n", kinds_seen[0], kinds_seen[1],
           kinds_seen[2], kinds_seen[3]);
    return vdb_test_summary();
}
