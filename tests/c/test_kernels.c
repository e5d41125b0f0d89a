/* Standalone C test of the compute core: vdb_cpu, vdb_distance (every variant this CPU has),
 * vdb_topk, vdb_threads, vdb_flat. No Python, no test framework.
 *
 * Build and run from the repository root:
 *   gcc -std=c11 -O2 -g -Wall -Wextra -pthread -D_GNU_SOURCE -Icsrc tests/c/test_kernels.c \
 *       csrc/vdb_cpu.c csrc/vdb_distance.c csrc/vdb_pq4.c csrc/vdb_sq8.c csrc/vdb_kmeans.c csrc/vdb_topk.c csrc/vdb_threads.c \
 *       csrc/vdb_flat.c \
 *       csrc/vdb_error.c -lm -o /tmp/test_kernels && /tmp/test_kernels
 * Add -fsanitize=address,undefined for the sanitizer run. Exit status 0 = all passed.
 */
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

#include "vdb_cpu.h"
#include "vdb_distance.h"
#include "vdb_error.h"
#include "vdb_flat.h"
#include "vdb_threads.h"
#include "vdb_topk.h"
#include "vdb_test.h"


static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float rng_float(void) { return (float)((rng_next() >> 40) / (double)(1 << 24) * 2.0 - 1.0); } /* [-1,1) */
static float rng_small_int(void) { return (float)((int)(rng_next() % 9) - 4); }                    /* -4..4 */

static float *alloc_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static const char *metric_name(int m) { return m == 0 ? "l2" : m == 1 ? "ip" : "cosine"; }

/* Double-precision reference; *scale gets the magnitude float rounding error is relative to. */
static double ref_distance(int m, const float *a, const float *b, size_t d, double *scale)
{
    double s = 0, abs_s = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < d; i++) {
        if (m == VDB_METRIC_L2) {
            double t = (double)a[i] - b[i];
            s += t * t;
            abs_s += t * t;
        } else {
            s += (double)a[i] * b[i];
            abs_s += fabs((double)a[i] * b[i]);
        }
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (m == VDB_METRIC_L2) {
        *scale = abs_s;
        return s;
    }
    if (m == VDB_METRIC_IP) {
        *scale = abs_s + 1.0;
        return 1.0 - s;
    }
    if (aa == 0 || bb == 0) {
        *scale = 1.0;
        return 1.0;
    }
    *scale = abs_s / sqrt(aa * bb) + 1.0;
    return 1.0 - s / sqrt(aa * bb);
}

static int close_enough(double got, double want, double scale, size_t d)
{
    double tol = (2e-7 * (double)d + 1e-6) * scale + 1e-6;
    return fabs(got - want) <= tol;
}

static const char *isas[] = {"serial", "avx2", "avx512", "neon"};
static const size_t dims[] = {1, 3, 7, 16, 17, 100, 128, 384, 1280, 1536};

static void fill(float *v, size_t n, int ints)
{
    for (size_t i = 0; i < n; i++)
        v[i] = ints ? rng_small_int() : rng_float();
}

static void test_distance_variants(void)
{
    int n_variants = 0;
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        const char *isa = isas[ii];
        float probe_q = 1, probe_r = 2, probe_o;
        if (vdb_distance_batch_isa(isa, VDB_METRIC_L2, &probe_q, &probe_r, 1, 1, &probe_o) != 0) {
            printf("  variant %-7s not available on this CPU (skipped)\n", isa);
            continue;
        }
        n_variants++;
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
            size_t d = dims[di];
            size_t n = 13, nq = 7;
            float *q = alloc_floats(nq * d), *rows = alloc_floats(n * d), *out = alloc_floats(nq * n);
            fill(q, nq * d, 0);
            fill(rows, n * d, 0);
            memset(rows + 5 * d, 0, d * sizeof(float)); /* a zero row: cosine must give 1 */
            memset(q + 6 * d, 0, d * sizeof(float));    /* and a zero query */
            for (int m = 0; m < 3; m++) {
                /* batch */
                int rc = vdb_distance_batch_isa(isa, (vdb_metric)m, q, rows, n, d, out);
                CHECK(rc == 0, "%s batch rc %d", isa, rc);
                for (size_t i = 0; i < n; i++) {
                    double scale, want = ref_distance(m, q, rows + i * d, d, &scale);
                    CHECK(close_enough(out[i], want, scale, d), "%s batch %s d=%zu row %zu: got %.9g want %.9g",
                          isa, metric_name(m), d, i, out[i], want);
                }
                /* the pair with the query's norm given: the pair's bits, and close to float64 */
                for (size_t j = 0; j < nq; j++)
                    for (size_t i = 0; i < n; i++) {
                        float pair, aa_pair;
                        rc = vdb_distance_aa_isa(isa, (vdb_metric)m, q + j * d, rows + i * d, d, &pair, &aa_pair);
                        CHECK(rc == 0, "%s aa rc %d", isa, rc);
                        CHECK(memcmp(&pair, &aa_pair, sizeof pair) == 0, "%s aa %s d=%zu q %zu row %zu: %.9g vs pair %.9g",
                              isa, metric_name(m), d, j, i, aa_pair, pair);
                        double scale, want = ref_distance(m, q + j * d, rows + i * d, d, &scale);
                        CHECK(close_enough(aa_pair, want, scale, d), "%s aa %s d=%zu q %zu row %zu: got %.9g want %.9g",
                              isa, metric_name(m), d, j, i, aa_pair, want);
                    }
                /* block */
                rc = vdb_distance_block_isa(isa, (vdb_metric)m, q, nq, rows, n, d, out);
                CHECK(rc == 0, "%s block rc %d", isa, rc);
                for (size_t j = 0; j < nq; j++)
                    for (size_t i = 0; i < n; i++) {
                        double scale, want = ref_distance(m, q + j * d, rows + i * d, d, &scale);
                        CHECK(close_enough(out[j * n + i], want, scale, d),
                              "%s block %s d=%zu q %zu row %zu: got %.9g want %.9g", isa, metric_name(m), d, j, i,
                              out[j * n + i], want);
                    }
            }
            free(q);
            free(rows);
            free(out);
        }
        /* Block over more rows than one cache chunk, and row counts that leave every tile remainder. */
        size_t shapes[][3] = {{16, 1100, 9}, {1536, 45, 5}, {3, 1031, 4}, {100, 2, 6}, {17, 1, 1}};
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            size_t d = shapes[si][0], n = shapes[si][1], nq = shapes[si][2];
            float *q = alloc_floats(nq * d), *rows = alloc_floats(n * d), *out = alloc_floats(nq * n);
            fill(q, nq * d, 0);
            fill(rows, n * d, 0);
            for (int m = 0; m < 3; m++) {
                vdb_distance_block_isa(isa, (vdb_metric)m, q, nq, rows, n, d, out);
                int bad = 0;
                for (size_t j = 0; j < nq; j++)
                    for (size_t i = 0; i < n; i++) {
                        double scale, want = ref_distance(m, q + j * d, rows + i * d, d, &scale);
                        if (!close_enough(out[j * n + i], want, scale, d))
                            bad++;
                    }
                CHECK(bad == 0, "%s block %s d=%zu n=%zu nq=%zu: %d wrong", isa, metric_name(m), d, n, nq, bad);
            }
            free(q);
            free(rows);
            free(out);
        }
    }
    CHECK(n_variants >= 1, "no variant ran");
    float a = 1, b = 2, o;
    CHECK(vdb_distance_batch_isa("sse9", VDB_METRIC_L2, &a, &b, 1, 1, &o) == -1, "unknown isa must be refused");
    printf("  %d kernel variants checked\n", n_variants);
}

static void test_dispatch(void)
{
    unsigned det = vdb_cpu_detected(), en0 = vdb_cpu_enabled();
    printf("  detected 0x%x enabled 0x%x kernel %s\n", det, en0, vdb_cpu_kernel_name());
    CHECK((en0 & ~det) == 0, "enabled must be a subset of detected");
    CHECK(vdb_cpu_set_enabled(0) == 0, "disable all");
    CHECK(strcmp(vdb_cpu_kernel_name(), "serial") == 0, "kernel must be serial, is %s", vdb_cpu_kernel_name());
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {0, 2, 3, 4, 7}, z[5] = {0};
    CHECK(vdb_distance(VDB_METRIC_L2, a, b, 5) == 5.0f, "l2 pair");
    CHECK(vdb_distance(VDB_METRIC_IP, a, b, 5) == 1.0f - 64.0f, "ip pair");
    CHECK(vdb_distance(VDB_METRIC_COSINE, a, z, 5) == 1.0f, "cosine with zero vector");
    if (det & VDB_CPU_AVX2) {
        vdb_cpu_set_enabled(VDB_CPU_AVX2);
        CHECK(strcmp(vdb_cpu_kernel_name(), "avx2") == 0, "kernel must be avx2");
        CHECK(vdb_distance(VDB_METRIC_L2, a, b, 5) == 5.0f, "l2 pair avx2");
    }
    vdb_cpu_set_enabled(~0u);
    CHECK(vdb_cpu_enabled() == det, "enable all gives detected");
    /* pair API of every enabled family against the reference at every size */
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        size_t d = dims[di];
        float *x = alloc_floats(d), *y = alloc_floats(d);
        fill(x, d, 0);
        fill(y, d, 0);
        for (int m = 0; m < 3; m++) {
            double scale, want = ref_distance(m, x, y, d, &scale);
            float got = vdb_distance((vdb_metric)m, x, y, d);
            CHECK(close_enough(got, want, scale, d), "pair %s d=%zu got %.9g want %.9g", metric_name(m), d, got, want);
        }
        free(x);
        free(y);
    }
    vdb_cpu_set_enabled(en0);
}

typedef struct {
    float d;
    int64_t r;
} pair_t;
static int pair_cmp(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

static void test_topk(void)
{
    for (int trial = 0; trial < 200; trial++) {
        size_t n = rng_next() % 300, k = rng_next() % (trial % 2 ? 80 : 40);
        pair_t *all = malloc((n + 1) * sizeof *all);
        float *hd = alloc_floats(k + 1);
        int64_t *hr = malloc((k + 1) * sizeof *hr);
        vdb_topk h;
        vdb_topk_init(&h, k, hd, hr);
        for (size_t i = 0; i < n; i++) {
            all[i].d = (float)(rng_next() % 7); /* many ties */
            all[i].r = (int64_t)(rng_next() % 1000000);
            vdb_topk_push(&h, all[i].d, all[i].r);
            CHECK(vdb_topk_threshold(&h) == (h.size < k ? INFINITY : hd[0]), "threshold");
        }
        size_t cnt = vdb_topk_sort(&h);
        /* vdb_topk_smallest: the same k pairs as pushing (value, index) one by one and sorting */
        float *vals = alloc_floats(n + 1), *sd = alloc_floats(n + 1), *hd2 = alloc_floats(k + 1);
        int64_t *sr = malloc((n + 1) * sizeof *sr), *hr2 = malloc((k + 1) * sizeof *hr2);
        for (size_t i = 0; i < n; i++) vals[i] = all[i].d;
        if (trial % 5 == 1 && n > 0) vals[rng_next() % n] = NAN; /* the heap's NaN rules too */
        if (trial % 5 == 2 && n > 0) vals[rng_next() % n] = -0.0f;
        vdb_topk h2;
        vdb_topk_init(&h2, k, hd2, hr2);
        for (size_t i = 0; i < n; i++) vdb_topk_push(&h2, vals[i], (int64_t)i);
        size_t c2 = vdb_topk_sort(&h2), cs = vdb_topk_smallest(vals, n, k, sd, sr);
        CHECK(cs == c2, "topk_smallest count %zu want %zu", cs, c2);
        for (size_t i = 0; i < cs && i < c2; i++)
            CHECK(memcmp(&sd[i], &hd2[i], sizeof(float)) == 0 && sr[i] == hr2[i],
                  "topk_smallest trial %d pos %zu: (%g,%lld) want (%g,%lld)", trial, i, sd[i], (long long)sr[i],
                  hd2[i], (long long)hr2[i]);
        free(vals);
        free(sd);
        free(hd2);
        free(sr);
        free(hr2);
        qsort(all, n, sizeof *all, pair_cmp);
        size_t want = n < k ? n : k;
        CHECK(cnt == want, "topk count %zu want %zu", cnt, want);
        for (size_t i = 0; i < cnt && i < want; i++)
            CHECK(hd[i] == all[i].d && hr[i] == all[i].r, "topk trial %d pos %zu: (%g,%lld) want (%g,%lld)", trial,
                  i, hd[i], (long long)hr[i], all[i].d, (long long)all[i].r);
        free(all);
        free(hd);
        free(hr);
    }
}

/* ---- thread pool ---- */
typedef struct {
    _Atomic int *hits;
    _Atomic int bad_worker;
    size_t limit;
} pool_ctx;

static void pool_task(void *p, size_t task, size_t worker)
{
    pool_ctx *c = p;
    atomic_fetch_add(&c->hits[task], 1);
    if (worker >= c->limit)
        atomic_store(&c->bad_worker, 1);
}

static void nested_task(void *p, size_t task, size_t worker)
{
    (void)worker;
    pool_ctx *c = p;
    /* a task that starts a parallel loop itself must not deadlock */
    pool_ctx inner = {c->hits + 100 + task * 10, 0, c->limit};
    vdb_parallel_for(10, pool_task, &inner);
}

static void *pool_caller(void *p)
{
    pool_ctx *c = p;
    for (int rep = 0; rep < 50; rep++)
        vdb_parallel_for(64, pool_task, c);
    return NULL;
}

static void test_threads(void)
{
    size_t saved = vdb_threads_count();
    CHECK(saved >= 1 && saved <= 64, "thread count %zu", saved);
    CHECK(vdb_threads_set_count(0) == saved, "set_count(0) keeps the count");
    CHECK(vdb_threads_set_count(1000) == 64, "capped at 64");
    size_t counts[] = {1, 2, 3, 4};
    for (size_t ci = 0; ci < 4; ci++) {
        vdb_threads_set_count(counts[ci]);
        size_t ns[] = {0, 1, 2, 5, 1000};
        for (size_t ni = 0; ni < 5; ni++) {
            _Atomic int *hits = calloc(ns[ni] + 1, sizeof *hits);
            pool_ctx c = {hits, 0, counts[ci]};
            vdb_parallel_for(ns[ni], pool_task, &c);
            int ok = 1;
            for (size_t i = 0; i < ns[ni]; i++)
                ok &= hits[i] == 1;
            CHECK(ok, "threads=%zu n=%zu: every task exactly once", counts[ci], ns[ni]);
            CHECK(!c.bad_worker, "worker index out of range");
            free(hits);
        }
    }
    /* nested */
    vdb_threads_set_count(3);
    _Atomic int *hits = calloc(200, sizeof *hits);
    pool_ctx c = {hits, 0, 3};
    vdb_parallel_for(8, nested_task, &c);
    int ok = 1;
    for (size_t i = 100; i < 180; i++)
        ok &= hits[i] == 1;
    CHECK(ok, "nested parallel_for ran every inner task once");
    free(hits);
    /* concurrent callers */
    _Atomic int *h1 = calloc(64, sizeof *h1), *h2 = calloc(64, sizeof *h2);
    pool_ctx c1 = {h1, 0, 3}, c2 = {h2, 0, 3};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, pool_caller, &c1);
    pthread_create(&t2, NULL, pool_caller, &c2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    ok = 1;
    for (size_t i = 0; i < 64; i++)
        ok &= h1[i] == 50 && h2[i] == 50;
    CHECK(ok && !c1.bad_worker && !c2.bad_worker, "concurrent callers");
    free(h1);
    free(h2);
    /* fork: the child must be able to use the pool (new workers) without deadlocking */
    pid_t pid = fork();
    if (pid == 0) {
        alarm(10);
        _Atomic int *hc = calloc(100, sizeof *hc);
        pool_ctx cc = {hc, 0, 3};
        vdb_parallel_for(100, pool_task, &cc);
        for (size_t i = 0; i < 100; i++)
            if (hc[i] != 1)
                _exit(3);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child after fork: status 0x%x", status);
    vdb_threads_set_count(saved);
}

/* ---- flat search ---- */

/* Brute force: all allowed rows sorted by (double distance, row). */
static size_t brute(int m, size_t d, const vdb_vec_range *rg, size_t nr, const uint64_t *allow, const float *q,
                    pair_t *outp)
{
    size_t cnt = 0;
    for (size_t r = 0; r < nr; r++)
        for (size_t i = 0; i < rg[r].n; i++) {
            int64_t row = rg[r].first_row + (int64_t)i;
            if (allow && !((allow[row >> 6] >> (row & 63)) & 1))
                continue;
            double scale;
            outp[cnt].d = (float)ref_distance(m, q, rg[r].data + i * d, d, &scale);
            outp[cnt].r = row;
            cnt++;
        }
    qsort(outp, cnt, sizeof *outp, pair_cmp);
    return cnt;
}

static void check_flat(int m, size_t d, size_t n_total, size_t nq, size_t k, int ints, int bitmap_kind,
                       size_t n_threads)
{
    /* three ranges with unaligned first rows and a gap in the global numbering */
    size_t n0 = n_total / 3, n1 = n_total / 5, n2 = n_total - n0 - n1;
    int64_t first[3] = {0, (int64_t)n0 + 37, (int64_t)(n0 + n1) + 100};
    size_t total_ids = (size_t)first[2] + n2;
    float *data = alloc_floats(n_total * d + 1), *q = alloc_floats(nq * d);
    fill(data, n_total * d, ints);
    fill(q, nq * d, ints);
    if (n_total > 10)
        memcpy(data + 7 * d, data + 3 * d, d * sizeof(float)); /* exact duplicate rows: ties */
    vdb_vec_range rg[3] = {{data, first[0], n0}, {data + n0 * d, first[1], n1}, {data + (n0 + n1) * d, first[2], n2}};
    size_t words = total_ids / 64 + 1;
    uint64_t *allow = NULL;
    if (bitmap_kind) {
        allow = calloc(words, sizeof *allow);
        for (size_t i = 0; i < total_ids; i++) {
            int on = bitmap_kind == 1 ? (rng_next() % 2 == 0)       /* dense */
                     : bitmap_kind == 2 ? (rng_next() % 50 == 0)    /* sparse */
                     : bitmap_kind == 3 ? ((i / 64) % 3 == 1)       /* whole words on/off */
                                        : 0;                        /* nothing allowed */
            if (on)
                allow[i >> 6] |= (uint64_t)1 << (i & 63);
        }
    }
    float *od = alloc_floats(nq * k);
    int64_t *orow = malloc(nq * k * sizeof *orow);
    pair_t *bf = malloc((n_total + 1) * sizeof *bf);
    vdb_threads_set_count(n_threads);
    int rc = vdb_flat_search((vdb_metric)m, d, rg, 3, allow, q, nq, k, od, orow);
    CHECK(rc == 0, "flat rc %d: %s", rc, vdb_last_error());
    int bad = 0;
    for (size_t j = 0; j < nq && !bad; j++) {
        size_t cnt = brute(m, d, rg, 3, allow, q + j * d, bf);
        size_t want = cnt < k ? cnt : k;
        for (size_t t = 0; t < k; t++) {
            float gd = od[j * k + t];
            int64_t gr = orow[j * k + t];
            if (t >= want) {
                if (gr != -1 || !isinf(gd))
                    bad = 1;
                continue;
            }
            if (ints && m != VDB_METRIC_COSINE) {
                /* integer data: every distance is exact, so rows must match the brute force exactly */
                if (gd != bf[t].d || gr != bf[t].r)
                    bad = 2;
            } else {
                /* float data: the distance at each rank must match, the row must be allowed and in range */
                double tol = (2e-7 * (double)d + 1e-6) * (fabs(bf[t].d) + 1.0);
                if (fabs(gd - bf[t].d) > tol || gr < 0 || (size_t)gr >= total_ids)
                    bad = 3;
                if (allow && gr >= 0 && !((allow[gr >> 6] >> (gr & 63)) & 1))
                    bad = 4;
                if (t > 0 && (gd < od[j * k + t - 1] || (gd == od[j * k + t - 1] && gr <= orow[j * k + t - 1])))
                    bad = 5;
            }
            if (bad) {
                fprintf(stderr, "  q %zu rank %zu: got (%.9g, %lld) want (%.9g, %lld)\n", j, t, gd, (long long)gr,
                        bf[t].d, (long long)bf[t].r);
                break;
            }
        }
    }
    CHECK(!bad, "flat %s d=%zu n=%zu nq=%zu k=%zu ints=%d bitmap=%d threads=%zu: mismatch kind %d", metric_name(m),
          d, n_total, nq, k, ints, bitmap_kind, n_threads, bad);
    free(data);
    free(q);
    free(allow);
    free(od);
    free(orow);
    free(bf);
}

static void test_flat(void)
{
    size_t saved = vdb_threads_count();
    unsigned en0 = vdb_cpu_enabled();
    unsigned sets[] = {en0, 0};
    for (int si = 0; si < 2; si++) {
        vdb_cpu_set_enabled(sets[si]);
        for (int m = 0; m < 3; m++)
            for (int ints = 0; ints < 2; ints++)
                for (int bk = 0; bk < 5; bk++) {
                    check_flat(m, 17, 1000, 1, 10, ints, bk, 1);
                    check_flat(m, 3, 300, 9, 7, ints, bk, 2);
                    check_flat(m, 128, 700, 13, 1, ints, bk, 2);
                    check_flat(m, 64, 10000, 2, 10, ints, bk, 4);  /* row slices + merge */
                    check_flat(m, 100, 200, 40, 25, ints, bk, 3);
                    check_flat(m, 1, 50, 3, 80, ints, bk, 2);      /* k > rows */
                }
    }
    vdb_cpu_set_enabled(en0);
    /* errors */
    float q[2] = {0, 0}, od[1];
    int64_t orow[1];
    CHECK(vdb_flat_search(VDB_METRIC_L2, 0, NULL, 0, NULL, q, 1, 1, od, orow) == VDB_EINVAL, "d=0 refused");
    CHECK(vdb_flat_search((vdb_metric)7, 2, NULL, 0, NULL, q, 1, 1, od, orow) == VDB_EINVAL, "bad metric refused");
    CHECK(vdb_flat_search(VDB_METRIC_L2, 2, NULL, 0, NULL, q, 1, 1, od, orow) == VDB_OK && orow[0] == -1,
          "empty search gives -1");
    vdb_threads_set_count(saved);
}

int main(void)
{
    printf("dispatch\n");
    test_dispatch();
    printf("distance variants\n");
    test_distance_variants();
    printf("topk\n");
    test_topk();
    printf("threads\n");
    test_threads();
    printf("flat\n");
    test_flat();
    return vdb_test_summary();
}
