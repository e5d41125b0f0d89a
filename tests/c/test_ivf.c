/* Standalone tests for vdb_kmeans and vdb_ivf (no Python). Build and run from the repo root:
 *
 *   gcc -std=c11 -O2 -g -Wall -Wextra -pthread -D_GNU_SOURCE -Icsrc tests/c/test_ivf.c \
 *       csrc/vdb_ivf.c csrc/vdb_ivf_search.c csrc/vdb_ivf_pq4.c csrc/vdb_ivf_file.c csrc/vdb_kmeans.c \
 *       csrc/vdb_pq4.c csrc/vdb_sq8.c csrc/vdb_nearest.c csrc/vdb_distance.c csrc/vdb_cpu.c csrc/vdb_threads.c \
 *       csrc/vdb_topk.c csrc/vdb_store.c csrc/vdb_crc32c.c csrc/vdb_bytes.c csrc/vdb_error.c -lm -o /tmp/test_ivf \
 *     && /tmp/test_ivf
 *
 * Add -fsanitize=address,undefined for the sanitizer run. References are computed in double
 * precision by plain loops here, independent of the SIMD kernels.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdb_crc32c.h"
#include "vdb_error.h"
#include "vdb_ivf.h"
#include "vdb_kmeans.h"
#include "vdb_threads.h"
#include "vdb_test.h"


static const char *metric_name(vdb_metric m);

/* ---- data */

static uint64_t rng_state = 42;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(void) { return (double)(rnd() >> 11) * 0x1.0p-53; }
static double gauss(void)
{
    double u = unif(), v = unif();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* make_blobs style: n_centers centres uniform in [-box, box]^d, points with std 1 around them. */
static float *blobs_box(size_t n, size_t d, size_t n_centers, double box, uint64_t seed)
{
    rng_state = seed;
    float *c = malloc(n_centers * d * sizeof(float));
    float *x = malloc(n * d * sizeof(float));
    for (size_t i = 0; i < n_centers * d; i++) c[i] = (float)((unif() * 2 - 1) * box);
    for (size_t i = 0; i < n; i++) {
        size_t b = rnd() % n_centers;
        for (size_t j = 0; j < d; j++) x[i * d + j] = c[b * d + j] + (float)gauss();
    }
    free(c);
    return x;
}

static float *blobs(size_t n, size_t d, size_t n_centers, uint64_t seed)
{
    return blobs_box(n, d, n_centers, 10.0, seed);
}

static double ref_dist(vdb_metric m, const float *a, const float *b, size_t d)
{
    double s = 0, dot = 0, na = 0, nb = 0;
    for (size_t j = 0; j < d; j++) {
        double t = (double)a[j] - b[j];
        s += t * t;
        dot += (double)a[j] * b[j];
        na += (double)a[j] * a[j];
        nb += (double)b[j] * b[j];
    }
    if (m == VDB_METRIC_L2) return s;
    if (m == VDB_METRIC_IP) return 1 - dot;
    if (na == 0 || nb == 0) return 1;
    return 1 - dot / sqrt(na * nb);
}

/* Exact k-th smallest distance among allowed rows (rows = index into x). */
static double kth_dist(vdb_metric m, const float *x, size_t n, size_t d, const float *q, size_t k,
                       const uint64_t *allow)
{
    double *best = malloc(k * sizeof *best);
    size_t have = 0;
    for (size_t i = 0; i < n; i++) {
        if (allow && !(allow[i >> 6] >> (i & 63) & 1)) continue;
        double v = ref_dist(m, q, x + i * d, d);
        if (have < k) {
            size_t j = have++;
            while (j > 0 && best[j - 1] > v) best[j] = best[j - 1], j--;
            best[j] = v;
        } else if (v < best[k - 1]) {
            size_t j = k - 1;
            while (j > 0 && best[j - 1] > v) best[j] = best[j - 1], j--;
            best[j] = v;
        }
    }
    double r = have ? best[have - 1] : INFINITY;
    free(best);
    return r;
}

/* recall@k as ann-benchmarks defines it: share of returned rows whose true distance is within
 * the true k-th distance (+1e-3, relative for large distances). */
static double recall_at(vdb_metric m, const float *x, size_t n, size_t d, const float *qs, size_t nq,
                        size_t k, const int64_t *rows)
{
    size_t good = 0;
    for (size_t qi = 0; qi < nq; qi++) {
        const float *q = qs + qi * d;
        double kth = kth_dist(m, x, n, d, q, k, NULL);
        double tol = 1e-3 * (fabs(kth) > 1 ? fabs(kth) : 1);
        for (size_t j = 0; j < k; j++) {
            int64_t r = rows[qi * k + j];
            if (r >= 0 && (size_t)r < n && ref_dist(m, q, x + r * d, d) <= kth + tol) good++;
        }
    }
    return (double)good / (double)(nq * k);
}

static int sorted_ok(const float *dist, const int64_t *rows, size_t k)
{
    for (size_t j = 1; j < k; j++) {
        if (rows[j] < 0) continue;
        if (dist[j] < dist[j - 1] || (dist[j] == dist[j - 1] && rows[j] < rows[j - 1])) return 0;
    }
    return 1;
}

static vdb_ivf *build(vdb_metric m, const float *x, size_t n, size_t d, size_t n_lists, uint64_t seed)
{
    vdb_ivf *ivf = NULL;
    CHECK_OK(vdb_ivf_create(d, m, n_lists, &ivf));
    if (!ivf) return NULL;
    CHECK_OK(vdb_ivf_train(ivf, x, n, seed));
    int64_t *rows = malloc(n * sizeof *rows);
    for (size_t i = 0; i < n; i++) rows[i] = (int64_t)i;
    CHECK_OK(vdb_ivf_add(ivf, rows, x, n));
    vdb_ivf_stats st;
    vdb_ivf_stats_get(ivf, &st);
    CHECK(st.added_since_train == n && st.vectors_at_train == 0, "counters after train + add");
    vdb_ivf_mark_trained_contents(ivf);
    vdb_ivf_stats_get(ivf, &st);
    CHECK(st.added_since_train == 0 && st.vectors_at_train == n, "counters after mark");
    free(rows);
    return ivf;
}

static const char *metric_name(vdb_metric m)
{
    return m == VDB_METRIC_L2 ? "l2" : m == VDB_METRIC_IP ? "ip" : "cosine";
}

/* ---- tests */

static void test_kmeans_recovers_blobs(void)
{
    /* 8 well separated blobs, k = 8: every true centre must get a centroid within 0.5. */
    const size_t d = 16, k = 8, n = 4000;
    rng_state = 7;
    float centres[8 * 16];
    for (size_t i = 0; i < k * d; i++) centres[i] = (float)(unif() * 200 - 100);
    float *x = malloc(n * d * sizeof(float));
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) x[i * d + j] = centres[(i % k) * d + j] + (float)gauss() * 0.5f;
    float c[8 * 16];
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.seed = 3;
    vdb_kmeans_stats st;
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_L2, x, n, d, k, &p, c, &st));
    for (size_t t = 0; t < k; t++) {
        double best = INFINITY;
        for (size_t ci = 0; ci < k; ci++) {
            double v = ref_dist(VDB_METRIC_L2, centres + t * d, c + ci * d, d);
            if (v < best) best = v;
        }
        CHECK(sqrt(best) < 0.5, "blob %zu: nearest centroid at %.3f", t, sqrt(best));
    }
    CHECK(st.converged && st.n_empty == 0, "converged=%d empty=%zu", st.converged, st.n_empty);
    CHECK(st.n_train == 256 * k, "n_train %zu, expected a sample of 256 per centroid", st.n_train);

    /* Assignment agrees with a double-precision argmin. */
    uint32_t *a = malloc(n * sizeof *a);
    CHECK_OK(vdb_kmeans_assign(VDB_METRIC_L2, c, k, d, x, n, a, NULL));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double best = INFINITY;
        size_t bi = 0;
        for (size_t ci = 0; ci < k; ci++) {
            double v = ref_dist(VDB_METRIC_L2, x + i * d, c + ci * d, d);
            if (v < best) best = v, bi = ci;
        }
        bad += a[i] != bi;
    }
    CHECK(bad == 0, "%zu points assigned to a non-nearest centroid", bad);

    /* Spherical metrics leave unit centroids. */
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_COSINE, x, n, d, k, &p, c, &st));
    for (size_t ci = 0; ci < k; ci++) {
        double nn = 0;
        for (size_t j = 0; j < d; j++) nn += (double)c[ci * d + j] * c[ci * d + j];
        CHECK(fabs(sqrt(nn) - 1) < 1e-5, "cosine centroid %zu has norm %f", ci, sqrt(nn));
    }
    free(a);
    free(x);
}

static void test_assign_ties_and_chunks(void)
{
    /* 600 centroids (three kernel chunks of 256), some duplicated, including across chunks:
     * every point goes to the lowest-numbered nearest centroid, for every metric. */
    const size_t d = 20, k = 600, n = 3000;
    float *c = blobs(k, d, k, 17);
    memcpy(c + 13 * d, c + 5 * d, d * sizeof(float));
    memcpy(c + 300 * d, c + 5 * d, d * sizeof(float));
    memcpy(c + 599 * d, c + 270 * d, d * sizeof(float));
    memcpy(c + 511 * d, c + 510 * d, d * sizeof(float));
    float *x = malloc(n * d * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        const float *src = c + ((i * 7) % k) * d;
        for (size_t j = 0; j < d; j++) x[i * d + j] = src[j] + (float)(gauss() * 0.05);
    }
    memcpy(x, c + 5 * d, d * sizeof(float)); /* exact hits on duplicated centroids */
    memcpy(x + d, c + 599 * d, d * sizeof(float));
    uint32_t *a = malloc(n * sizeof *a);
    float *dist = malloc(n * sizeof *dist);
    for (int mi = 0; mi < 3; mi++) {
        vdb_metric m = (vdb_metric)mi;
        if (m != VDB_METRIC_L2) /* spherical metrics expect unit centroids */
            for (size_t ci = 0; ci < k; ci++) {
                double nn = 0;
                for (size_t j = 0; j < d; j++) nn += (double)c[ci * d + j] * c[ci * d + j];
                for (size_t j = 0; j < d; j++) c[ci * d + j] = (float)(c[ci * d + j] / sqrt(nn));
            }
        CHECK_OK(vdb_kmeans_assign(m, c, k, d, x, n, a, dist));
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            double best = INFINITY;
            size_t bi = 0;
            for (size_t ci = 0; ci < k; ci++) {
                double v = m == VDB_METRIC_L2 ? ref_dist(VDB_METRIC_L2, x + i * d, c + ci * d, d)
                                              : ref_dist(VDB_METRIC_IP, x + i * d, c + ci * d, d);
                if (v < best) best = v, bi = ci;
            }
            double got = m == VDB_METRIC_L2 ? ref_dist(VDB_METRIC_L2, x + i * d, c + a[i] * d, d)
                                            : ref_dist(VDB_METRIC_IP, x + i * d, c + a[i] * d, d);
            /* Float rounding may swap near-ties; a clear loss or a higher duplicate is a bug. */
            if (a[i] != bi && (got > best + 1e-3 * (fabs(best) > 1 ? fabs(best) : 1) ||
                               memcmp(c + a[i] * d, c + bi * d, d * sizeof(float)) == 0))
                bad++;
            if (fabs(dist[i] - got) > 1e-3 * (fabs(got) > 1 ? fabs(got) : 1)) bad++;
        }
        CHECK(bad == 0, "%s: %zu wrong assignments or distances", metric_name(m), bad);
        CHECK(a[0] == 5 && a[1] == 270, "%s: duplicates resolved to %u and %u, expected 5 and 270",
              metric_name(m), a[0], a[1]);
    }
    free(a);
    free(dist);
    free(x);
    free(c);
}

static void test_kmeans_sampling_and_determinism(void)
{
    const size_t d = 24, k = 20, n = 20000; /* n > 256 k: trains on a sample of 5120 */
    float *x = blobs(n, d, 30, 11);
    float *c1 = malloc(k * d * sizeof(float)), *c2 = malloc(k * d * sizeof(float));
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.seed = 99;
    vdb_kmeans_stats st;
    size_t old = vdb_threads_count();
    vdb_threads_set_count(1);
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_L2, x, n, d, k, &p, c1, &st));
    CHECK(st.n_train == 256 * k, "sampled %zu points, expected %zu", st.n_train, 256 * k);
    vdb_threads_set_count(2);
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_L2, x, n, d, k, &p, c2, NULL));
    CHECK(memcmp(c1, c2, k * d * sizeof(float)) == 0, "1 thread and 2 threads give different centroids");
    vdb_threads_set_count(old);
    p.seed = 100;
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_L2, x, n, d, k, &p, c2, NULL));
    CHECK(memcmp(c1, c2, k * d * sizeof(float)) != 0, "a different seed gave identical centroids");
    free(c1);
    free(c2);
    free(x);
}

static void test_kmeans_degenerate(void)
{
    const size_t d = 8;
    float x[5 * 8] = {0};
    float c[10 * 8];
    int rc = vdb_kmeans_train(VDB_METRIC_L2, x, 5, d, 10, NULL, c, NULL);
    CHECK(rc == VDB_EINVAL, "n < k gave %d", rc);
    CHECK(strstr(vdb_last_error(), "fewer points than clusters") != NULL, "message: %s", vdb_last_error());

    /* 300 copies of 3 distinct points, k = 10: trains, the 3 points get exact centroids. */
    float *dup = malloc(300 * d * sizeof(float));
    for (size_t i = 0; i < 300; i++)
        for (size_t j = 0; j < d; j++) dup[i * d + j] = (float)((i % 3) * 10 + j);
    vdb_kmeans_stats st;
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_L2, dup, 300, d, 10, &p, c, &st));
    for (size_t t = 0; t < 3; t++) {
        double best = INFINITY;
        for (size_t ci = 0; ci < 10; ci++) {
            double v = ref_dist(VDB_METRIC_L2, dup + t * d, c + ci * d, d);
            if (v < best) best = v;
        }
        CHECK(best < 1e-6, "distinct point %zu is %g from every centroid", t, best);
    }
    /* The objective goes through |x|^2 + |c|^2 - 2 x.c: ~0 up to float cancellation. */
    CHECK(st.objective < 1e-4 * 300 * 2500, "objective %g on 3 distinct points with 10 clusters", st.objective);
    for (size_t i = 0; i < 10 * d; i++) CHECK(isfinite(c[i]), "centroid value %zu not finite", i);

    /* All-zero and mixed-zero inputs with cosine: finite unit-or-zero centroids, no NaN. */
    float *z = calloc(200 * d, sizeof(float));
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_COSINE, z, 200, d, 4, &p, c, &st));
    for (size_t i = 0; i < 4 * d; i++) CHECK(isfinite(c[i]), "all-zero cosine: centroid value %zu", i);
    for (size_t i = 100; i < 200; i++) z[i * d + i % d] = 1.0f;
    CHECK_OK(vdb_kmeans_train(VDB_METRIC_COSINE, z, 200, d, 4, &p, c, &st));
    for (size_t i = 0; i < 4 * d; i++) CHECK(isfinite(c[i]), "mixed-zero cosine: centroid value %zu", i);
    free(z);
    free(dup);
}

static void test_recall(vdb_metric m)
{
    const size_t n = 20000, d = 32, nl = 100, nq = 50, k = 10;
    /* Centres in [-2, 2]^32 with std 1: blobs overlap, so n_probe matters (n_probe 1 gives ~0.85). */
    double box = getenv("IVF_BOX") ? atof(getenv("IVF_BOX")) : 2.0;
    float *x = blobs_box(n + nq, d, 200, box, 1234 + (uint64_t)m);
    const float *qs = x + n * d; /* held-out queries from the same distribution */
    vdb_ivf *ivf = build(m, x, n, d, nl, 5);
    if (!ivf) return;
    CHECK(vdb_ivf_count(ivf) == (int64_t)n, "count %lld", (long long)vdb_ivf_count(ivf));
    float *dist = malloc(nq * k * sizeof(float));
    int64_t *rows = malloc(nq * k * sizeof(int64_t));
    for (size_t np = 1; np <= 16 && getenv("IVF_SWEEP"); np *= 2) {
        CHECK_OK(vdb_ivf_search(ivf, qs, nq, k, np, NULL, 0, dist, rows));
        printf("    n_probe %zu: %.3f\n", np, recall_at(m, x, n, d, qs, nq, k, rows));
    }
    CHECK_OK(vdb_ivf_search(ivf, qs, nq, k, 4, NULL, 0, dist, rows));
    double r10 = recall_at(m, x, n, d, qs, nq, k, rows);
    CHECK(r10 >= 0.9, "%s: recall@10 at n_probe 4/100 is %.3f", metric_name(m), r10);
    /* Returned distances are the true ones. */
    for (size_t i = 0; i < nq * k; i++) {
        double ref = ref_dist(m, qs + (i / k) * d, x + rows[i] * d, d);
        CHECK(fabs(dist[i] - ref) <= 1e-4 * (fabs(ref) > 1 ? fabs(ref) : 1), "%s: distance %g vs %g",
              metric_name(m), dist[i], ref);
    }
    for (size_t qi = 0; qi < nq; qi++) CHECK(sorted_ok(dist + qi * k, rows + qi * k, k), "unsorted");
    CHECK_OK(vdb_ivf_search(ivf, qs, nq, k, nl, NULL, 0, dist, rows));
    double rall = recall_at(m, x, n, d, qs, nq, k, rows);
    CHECK(rall == 1.0, "%s: recall@10 with n_probe = n_lists is %.4f", metric_name(m), rall);
    /* One query at a time gives the same as the batch (nq = 50 runs in parallel tasks). */
    float d1[10];
    int64_t r1[10];
    for (size_t qi = 0; qi < nq; qi += 7) {
        CHECK_OK(vdb_ivf_search(ivf, qs + qi * d, 1, k, nl, NULL, 0, d1, r1));
        CHECK(memcmp(r1, rows + qi * k, sizeof r1) == 0, "single vs batch query %zu differ", qi);
    }
    printf("  %-6s recall@10: n_probe 4/100 = %.3f, n_probe 100/100 = %.3f\n", metric_name(m), r10, rall);
    vdb_ivf_stats st;
    vdb_ivf_stats_get(ivf, &st);
    CHECK(st.n_vectors == (int64_t)n && st.n_lists == nl && st.trained, "stats");
    CHECK(st.list_min <= st.list_mean && st.list_mean <= st.list_max, "list sizes");
    CHECK(st.bytes_in_memory >= n * d * sizeof(float) && st.bytes_in_memory < n * (d * 4 + 16) * 5 / 4 + nl * d * 4 + 65536,
          "bytes in memory %zu for %zu raw bytes", st.bytes_in_memory, n * d * sizeof(float));
    free(dist);
    free(rows);
    free(x);
    vdb_ivf_free(ivf);
}

static void test_add_remove_update(void)
{
    const size_t n = 3000, d = 16, nl = 20, k = 5;
    float *x = blobs(n, d, 20, 77);
    vdb_ivf *ivf = build(VDB_METRIC_L2, x, n, d, nl, 1);
    if (!ivf) return;
    /* Every row's vector reads back exactly. */
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float *v = vdb_ivf_vector(ivf, (int64_t)i);
        bad += !v || memcmp(v, x + i * d, d * sizeof(float)) != 0;
    }
    CHECK(bad == 0, "%zu vectors did not read back", bad);
    CHECK(vdb_ivf_vector(ivf, (int64_t)n) == NULL && vdb_ivf_vector(ivf, -1) == NULL, "absent rows");
    /* Remove every third row: not found afterwards; others still readable. */
    for (size_t i = 0; i < n; i += 3) CHECK_OK(vdb_ivf_remove(ivf, (int64_t)i));
    CHECK(vdb_ivf_remove(ivf, 0) == VDB_ENOTFOUND, "second remove");
    CHECK(vdb_ivf_count(ivf) == (int64_t)(n - (n + 2) / 3), "count after removes");
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float *v = vdb_ivf_vector(ivf, (int64_t)i);
        if (i % 3 == 0) bad += v != NULL || vdb_ivf_contains(ivf, (int64_t)i);
        else bad += !v || memcmp(v, x + i * d, d * sizeof(float)) != 0;
    }
    CHECK(bad == 0, "%zu rows wrong after removes", bad);
    float dist[5];
    int64_t rows[5];
    /* A removed row's own vector finds other rows, never itself. */
    CHECK_OK(vdb_ivf_search(ivf, x + 3 * d, 1, k, nl, NULL, 0, dist, rows));
    for (size_t j = 0; j < k; j++) CHECK(rows[j] % 3 != 0, "removed row %lld returned", (long long)rows[j]);
    /* A kept row finds itself at distance 0. */
    CHECK_OK(vdb_ivf_search(ivf, x + 4 * d, 1, k, 1, NULL, 0, dist, rows));
    CHECK(rows[0] == 4 && dist[0] == 0.0f, "row 4 -> %lld at %g", (long long)rows[0], dist[0]);
    /* Update: row 4 gets a far-away vector; it moves lists, is found at the new place only. */
    float far[16];
    for (size_t j = 0; j < d; j++) far[j] = 1000.0f + (float)j;
    int64_t r4 = 4;
    CHECK_OK(vdb_ivf_add(ivf, &r4, far, 1));
    CHECK(memcmp(vdb_ivf_vector(ivf, 4), far, sizeof far) == 0, "updated vector");
    CHECK_OK(vdb_ivf_search(ivf, far, 1, 1, 1, NULL, 0, dist, rows));
    CHECK(rows[0] == 4 && dist[0] == 0.0f, "updated row found at %lld", (long long)rows[0]);
    CHECK_OK(vdb_ivf_search(ivf, x + 4 * d, 1, k, nl, NULL, 0, dist, rows));
    for (size_t j = 0; j < k; j++) CHECK(rows[j] != 4, "old vector of row 4 still found");
    /* Re-add removed rows with new row numbers past the end; a repeated row keeps the last. */
    int64_t nr[3] = {100000, 100001, 100000};
    float nv[3 * 16];
    for (size_t i = 0; i < 3 * d; i++) nv[i] = (float)i;
    CHECK_OK(vdb_ivf_add(ivf, nr, nv, 3));
    CHECK(memcmp(vdb_ivf_vector(ivf, 100000), nv + 2 * d, d * sizeof(float)) == 0, "last duplicate wins");
    CHECK(vdb_ivf_count(ivf) == (int64_t)(n - (n + 2) / 3) + 2, "count after re-add");
    /* Bad rows are refused, nothing changes. */
    int64_t neg = -5;
    CHECK(vdb_ivf_add(ivf, &neg, far, 1) == VDB_EINVAL, "negative row accepted");
    CHECK(vdb_ivf_count(ivf) == (int64_t)(n - (n + 2) / 3) + 2, "count after refused add");
    /* Exact agreement with brute force over what is left, n_probe = all. */
    size_t live = 0;
    float *lx = malloc((n + 2) * d * sizeof(float));
    int64_t *lrow = malloc((n + 2) * sizeof(int64_t));
    for (int64_t r = 0; r <= 100001; r++) {
        const float *v = vdb_ivf_vector(ivf, r);
        if (!v) continue;
        memcpy(lx + live * d, v, d * sizeof(float));
        lrow[live++] = r;
    }
    CHECK(live == (size_t)vdb_ivf_count(ivf), "live %zu", live);
    CHECK_OK(vdb_ivf_search(ivf, x + 10 * d, 1, k, nl, NULL, 0, dist, rows));
    double kth = kth_dist(VDB_METRIC_L2, lx, live, d, x + 10 * d, k, NULL);
    CHECK(fabs(dist[k - 1] - kth) <= 1e-3 * (kth > 1 ? kth : 1), "k-th %g vs %g", dist[k - 1], kth);
    free(lx);
    free(lrow);
    free(x);
    vdb_ivf_free(ivf);
}

static void test_filtered(void)
{
    const size_t n = 10000, d = 16, nl = 50, k = 10;
    float *x = blobs(n, d, 50, 31);
    vdb_ivf *ivf = build(VDB_METRIC_L2, x, n, d, nl, 2);
    if (!ivf) return;
    size_t words = (n + 63) / 64;
    uint64_t *allow = calloc(words, sizeof *allow);
    /* 25 allowed rows spread over the data: n_probe 1 cannot hold them all. */
    for (size_t i = 0; i < 25; i++) {
        size_t r = (i * 397 + 11) % n;
        allow[r >> 6] |= 1ull << (r & 63);
    }
    float dist[10];
    int64_t rows[10];
    for (size_t qi = 0; qi < 20; qi++) {
        const float *q = x + (qi * 131) * d;
        CHECK_OK(vdb_ivf_search(ivf, q, 1, k, 1, allow, n, dist, rows));
        size_t got = 0;
        for (size_t j = 0; j < k; j++) {
            if (rows[j] < 0) continue;
            got++;
            CHECK(allow[rows[j] >> 6] >> (rows[j] & 63) & 1, "row %lld not allowed", (long long)rows[j]);
        }
        CHECK(got == k, "filtered query %zu returned %zu of %zu", qi, got, k);
        CHECK(sorted_ok(dist, rows, k), "filtered unsorted");
    }
    /* With n_probe = all, the filtered result equals brute force over the allowed rows. */
    const float *q = x + 5 * d;
    CHECK_OK(vdb_ivf_search(ivf, q, 1, k, nl, allow, n, dist, rows));
    double kth = kth_dist(VDB_METRIC_L2, x, n, d, q, k, allow);
    CHECK(fabs(dist[k - 1] - kth) <= 1e-3 * (kth > 1 ? kth : 1), "filtered k-th %g vs %g", dist[k - 1], kth);
    /* Only 4 allowed rows: 4 hits then padding. */
    memset(allow, 0, words * sizeof *allow);
    size_t only[4] = {3, 999, 5000, 9999};
    for (size_t i = 0; i < 4; i++) allow[only[i] >> 6] |= 1ull << (only[i] & 63);
    CHECK_OK(vdb_ivf_search(ivf, q, 1, k, 2, allow, n, dist, rows));
    for (size_t j = 0; j < k; j++) {
        if (j < 4) CHECK(rows[j] >= 0, "hit %zu missing", j);
        else CHECK(rows[j] == -1 && isinf(dist[j]), "slot %zu not padded (%lld)", j, (long long)rows[j]);
    }
    /* allow_len shorter than the rows: rows past it are not allowed. */
    for (size_t i = 0; i < words; i++) allow[i] = ~0ull;
    CHECK_OK(vdb_ivf_search(ivf, q, 1, k, nl, allow, 100, dist, rows));
    for (size_t j = 0; j < k; j++) CHECK(rows[j] >= 0 && rows[j] < 100, "row %lld past allow_len", (long long)rows[j]);
    /* Batch filtered search matches single. */
    float bd[3 * 10];
    int64_t br[3 * 10];
    CHECK_OK(vdb_ivf_search(ivf, x, 3, k, 3, allow, 100, bd, br));
    CHECK_OK(vdb_ivf_search(ivf, x + 2 * d, 1, k, 3, allow, 100, dist, rows));
    CHECK(memcmp(br + 2 * k, rows, sizeof rows) == 0, "filtered batch vs single");
    free(allow);
    free(x);
    vdb_ivf_free(ivf);
}

static void test_small_lists_pad(void)
{
    /* k larger than the probed lists hold: the search keeps probing, then pads. */
    const size_t n = 60, d = 4, nl = 6;
    float *x = blobs(n, d, 6, 5);
    vdb_ivf *ivf = build(VDB_METRIC_L2, x, n, d, nl, 1);
    if (!ivf) return;
    float dist[80];
    int64_t rows[80];
    CHECK_OK(vdb_ivf_search(ivf, x, 1, 50, 1, NULL, 0, dist, rows));
    for (size_t j = 0; j < 50; j++) CHECK(rows[j] >= 0, "k=50 of 60 rows: slot %zu empty", j);
    CHECK_OK(vdb_ivf_search(ivf, x, 1, 80, 1, NULL, 0, dist, rows));
    for (size_t j = 0; j < 80; j++) CHECK((j < 60) == (rows[j] >= 0), "k=80 of 60 rows: slot %zu", j);
    free(x);
    vdb_ivf_free(ivf);
}

static void test_determinism(void)
{
    const size_t n = 5000, d = 16, nl = 30;
    float *x = blobs(n, d, 40, 8);
    vdb_ivf *a = build(VDB_METRIC_COSINE, x, n, d, nl, 123);
    vdb_ivf *b = build(VDB_METRIC_COSINE, x, n, d, nl, 123);
    vdb_ivf *c = build(VDB_METRIC_COSINE, x, n, d, nl, 124);
    if (a && b && c) {
        CHECK(memcmp(vdb_ivf_centroids(a), vdb_ivf_centroids(b), nl * d * sizeof(float)) == 0,
              "same seed, different centroids");
        CHECK(memcmp(vdb_ivf_centroids(a), vdb_ivf_centroids(c), nl * d * sizeof(float)) != 0,
              "different seeds, same centroids");
        size_t same = 1;
        for (size_t l = 0; l < nl; l++) same &= vdb_ivf_list_size(a, l) == vdb_ivf_list_size(b, l);
        CHECK(same, "same seed, different list sizes");
    }
    vdb_ivf_free(a);
    vdb_ivf_free(b);
    vdb_ivf_free(c);
    free(x);
}

static char tmp_path[256];

static int file_roundtrip_equal(const vdb_ivf *a, const vdb_ivf *b, const float *qs, size_t nq)
{
    const size_t k = 10;
    float da[200], db[200];
    int64_t ra[200], rb[200];
    if (vdb_ivf_search(a, qs, nq, k, 4, NULL, 0, da, ra) || vdb_ivf_search(b, qs, nq, k, 4, NULL, 0, db, rb))
        return 0;
    return memcmp(da, db, nq * k * sizeof(float)) == 0 && memcmp(ra, rb, nq * k * sizeof(int64_t)) == 0;
}

static void test_persistence(void)
{
    const size_t n = 4000, d = 12, nl = 25;
    float *x = blobs(n, d, 30, 21);
    vdb_ivf *ivf = build(VDB_METRIC_IP, x, n, d, nl, 9);
    if (!ivf) return;
    for (size_t i = 0; i < n; i += 5) CHECK_OK(vdb_ivf_remove(ivf, (int64_t)i));
    /* ivf.bin and its ivfvec.bin (the vectors in list order) in a directory of this process. */
    char tmp_dir[200], vec_path[300], vcrc_path[300];
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_ivf_%d", (int)getpid());
    mkdir(tmp_dir, 0755);
    snprintf(tmp_path, sizeof tmp_path, "%s/ivf.bin", tmp_dir);
    snprintf(vec_path, sizeof vec_path, "%s/ivfvec.bin", tmp_dir);
    snprintf(vcrc_path, sizeof vcrc_path, "%s/ivfvec.crc", tmp_dir);
    uint64_t written = 0;
    CHECK_OK(vdb_ivf_write(ivf, tmp_path, &written));
    uint64_t live = (uint64_t)vdb_ivf_count(ivf);
    uint64_t bytes = 88 + nl * d * 4 + nl * 8 + live * 8 + 4; /* ivf.bin alone */
    CHECK(written == bytes + live * d * 4, "bytes written %llu", (unsigned long long)written);
    vdb_ivf *back = NULL;
    CHECK_OK(vdb_ivf_read(tmp_path, &back));
    if (back) {
        vdb_ivf_stats s1, s2;
        vdb_ivf_stats_get(ivf, &s1);
        vdb_ivf_stats_get(back, &s2);
        CHECK(s1.n_vectors == s2.n_vectors && s1.n_lists == s2.n_lists && s1.metric == s2.metric &&
                  s1.d == s2.d && s1.trained == s2.trained && s1.seed == s2.seed &&
                  s1.n_train_points == s2.n_train_points && s1.added_since_train == s2.added_since_train &&
                  s1.vectors_at_train == s2.vectors_at_train && s1.vectors_at_train == n &&
                  s1.list_max == s2.list_max,
              "stats differ after read");
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            const float *v1 = vdb_ivf_vector(ivf, (int64_t)i), *v2 = vdb_ivf_vector(back, (int64_t)i);
            bad += (v1 == NULL) != (v2 == NULL) || (v1 && memcmp(v1, v2, d * sizeof(float)) != 0);
        }
        CHECK(bad == 0, "%zu rows differ after read", bad);
        CHECK(file_roundtrip_equal(ivf, back, x, 20), "search differs after read");
        /* The loaded index keeps working: add and remove (its mapped lists move to memory). */
        int64_t r = 0;
        CHECK_OK(vdb_ivf_add(back, &r, x, 1));
        CHECK_OK(vdb_ivf_remove(back, 1));
        CHECK_OK(vdb_ivf_retrain(back, nl - 3, 5));
        CHECK(vdb_ivf_count(back) == (int64_t)live, "count after retrain");
        vdb_ivf_free(back);
    }
    /* Damaged vectors: the read maps them unverified; the search that reads the damaged chunk, a
     * write that copies it and verify are VDB_ECORRUPT naming ivfvec.bin. */
    {
        FILE *vf = fopen(vec_path, "r+b");
        fseek(vf, 64 + 70000, SEEK_SET); /* the second 64 KiB chunk of the data */
        int ch = fgetc(vf);
        fseek(vf, 64 + 70000, SEEK_SET);
        fputc(ch ^ 0x04, vf);
        fclose(vf);
        vdb_ivf *dmg = NULL;
        CHECK_OK(vdb_ivf_read(tmp_path, &dmg));
        if (dmg) {
            float *dd = malloc(20 * 10 * sizeof(float));
            int64_t *rr = malloc(20 * 10 * sizeof(int64_t));
            CHECK(vdb_ivf_search(dmg, x, 20, 10, nl, NULL, 0, dd, rr) == VDB_ECORRUPT &&
                      strstr(vdb_last_error(), "ivfvec.bin"), "search over damage: %s", vdb_last_error());
            CHECK(vdb_ivf_verify(dmg) == VDB_ECORRUPT && strstr(vdb_last_error(), "ivfvec.bin"), "verify");
            CHECK(vdb_ivf_retrain(dmg, nl, 5) == VDB_ECORRUPT, "retrain copied damage");
            CHECK(vdb_ivf_write(dmg, tmp_path, NULL) == VDB_ECORRUPT, "write copied damage");
            free(dd);
            free(rr);
            vdb_ivf_free(dmg);
        }
        CHECK_OK(vdb_ivf_write(ivf, tmp_path, NULL));
        vf = fopen(vcrc_path, "r+b");
        fseek(vf, 40, SEEK_SET);
        fputc(0x5a, vf);
        fclose(vf);
        CHECK(vdb_ivf_read(tmp_path, &dmg) == VDB_ECORRUPT && strstr(vdb_last_error(), "ivfvec.crc"),
              "damaged checksum table: %s", vdb_last_error());
        CHECK_OK(vdb_ivf_write(ivf, tmp_path, NULL));
    }

    /* Damage: every flipped byte position class and truncations are VDB_ECORRUPT naming the file. */
    FILE *f = fopen(tmp_path, "rb");
    uint8_t *buf = malloc(bytes);
    CHECK(fread(buf, 1, bytes, f) == bytes, "reread");
    fclose(f);
    char bad_path[300];
    snprintf(bad_path, sizeof bad_path, "%s.bad", tmp_path);
    size_t positions[] = {0, 9, 13, 17, 30, 45, 60, 80, 86, 89 + nl * d * 2, 88 + nl * d * 4 + 3,
                          (size_t)bytes / 2, (size_t)bytes - 5, (size_t)bytes - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        size_t p = positions[i];
        buf[p] ^= 0x10;
        f = fopen(bad_path, "wb");
        fwrite(buf, 1, bytes, f);
        fclose(f);
        buf[p] ^= 0x10;
        vdb_ivf *r = NULL;
        int rc = vdb_ivf_read(bad_path, &r);
        CHECK(rc == VDB_ECORRUPT && r == NULL, "flipped byte %zu: rc %d", p, rc);
        CHECK(strstr(vdb_last_error(), bad_path) != NULL, "message does not name the file: %s", vdb_last_error());
        vdb_ivf_free(r);
    }
    size_t cuts[] = {0, 10, 83, 84, 91, 92, 200, (size_t)bytes / 2, (size_t)bytes - 4, (size_t)bytes - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        f = fopen(bad_path, "wb");
        fwrite(buf, 1, cuts[i], f);
        fclose(f);
        vdb_ivf *r = NULL;
        int rc = vdb_ivf_read(bad_path, &r);
        CHECK(rc == VDB_ECORRUPT && r == NULL, "truncated to %zu: rc %d", cuts[i], rc);
    }
    /* Appended garbage is damage too. */
    f = fopen(bad_path, "wb");
    fwrite(buf, 1, bytes, f);
    fputc(0, f);
    fclose(f);
    vdb_ivf *r = NULL;
    CHECK(vdb_ivf_read(bad_path, &r) == VDB_ECORRUPT, "appended byte accepted");
    vdb_ivf_free(r);
    /* A newer format version is refused with a clear message. */
    buf[8] = 3;
    f = fopen(bad_path, "wb");
    fwrite(buf, 1, bytes, f);
    fclose(f);
    CHECK(vdb_ivf_read(bad_path, &r) == VDB_ECORRUPT && strstr(vdb_last_error(), "version 3"),
          "newer version: %s", vdb_last_error());
    CHECK(vdb_ivf_read("/tmp/definitely/not/here.ivf", &r) == VDB_ENOTFOUND, "missing file");
    /* Row numbers far past the vector count: write refuses them, and a checksum-valid file holding
     * one is damage (reading it must not size the row map by it). */
    {
        vdb_ivf *sparse = NULL;
        float v2[2 * 3] = {1, 0, 0, 0, 1, 0};
        int64_t r2[2] = {0, 1};
        CHECK_OK(vdb_ivf_create(3, VDB_METRIC_L2, 1, &sparse));
        CHECK_OK(vdb_ivf_train(sparse, v2, 2, 1));
        CHECK_OK(vdb_ivf_add(sparse, r2, v2, 2));
        CHECK_OK(vdb_ivf_write(sparse, tmp_path, NULL));
        f = fopen(tmp_path, "rb");
        uint8_t small[200];
        size_t len = fread(small, 1, sizeof small, f);
        fclose(f);
        size_t row1 = 88 + 3 * 4 + 8 + 8; /* header, centroid, list count, row 0 */
        CHECK(len == 88 + 12 + 8 + 2 * 8 + 4 && small[row1] == 1, "sparse file layout (%zu bytes)", len);
        small[row1 + 5] = 1; /* row 1 -> 2^40 + 1 */
        uint32_t crc = vdb_crc32c(0, small, len - 4);
        for (int i = 0; i < 4; i++) small[len - 4 + i] = (uint8_t)(crc >> (8 * i));
        f = fopen(bad_path, "wb");
        fwrite(small, 1, len, f);
        fclose(f);
        CHECK(vdb_ivf_read(bad_path, &r) == VDB_ECORRUPT && strstr(vdb_last_error(), "out of range"),
              "huge row accepted: %s", vdb_last_error());
        int64_t far_row = 5000;
        CHECK_OK(vdb_ivf_add(sparse, &far_row, v2, 1));
        CHECK(vdb_ivf_write(sparse, tmp_path, NULL) == VDB_EINVAL, "sparse rows written");
        vdb_ivf_free(sparse);
    }
    /* An untrained, empty index round-trips too. */
    vdb_ivf *empty = NULL;
    CHECK_OK(vdb_ivf_create(3, VDB_METRIC_L2, 4, &empty));
    CHECK_OK(vdb_ivf_write(empty, tmp_path, NULL));
    CHECK_OK(vdb_ivf_read(tmp_path, &r));
    CHECK(r && !vdb_ivf_is_trained(r) && vdb_ivf_count(r) == 0, "empty round trip");
    vdb_ivf_free(r);
    vdb_ivf_free(empty);
    unlink(bad_path);
    unlink(tmp_path);
    unlink(vec_path);
    unlink(vcrc_path);
    rmdir(tmp_dir);
    free(buf);
    free(x);
    vdb_ivf_free(ivf);
}

static void test_renumber_retrain(void)
{
    const size_t n = 6000, d = 16, nl = 40;
    float *x = blobs(n, d, 60, 55);
    vdb_ivf *ivf = build(VDB_METRIC_L2, x, n, d, nl, 4);
    if (!ivf) return;
    /* Drop odd rows, compact: row 2i -> i. */
    int64_t *map = malloc(n * sizeof *map);
    for (size_t i = 0; i < n; i++) map[i] = i % 2 ? -1 : (int64_t)(i / 2);
    int64_t bad_map_row = map[2];
    map[2] = 0; /* collision with row 0 -> refused, index unchanged */
    CHECK(vdb_ivf_renumber(ivf, map, n) == VDB_EINVAL, "colliding renumber accepted");
    CHECK(vdb_ivf_count(ivf) == (int64_t)n, "refused renumber changed the index");
    map[2] = bad_map_row;
    CHECK(vdb_ivf_renumber(ivf, map, n - 1) == VDB_EINVAL, "short map accepted");
    CHECK_OK(vdb_ivf_renumber(ivf, map, n));
    CHECK(vdb_ivf_count(ivf) == (int64_t)(n / 2), "count after renumber");
    size_t bad = 0;
    for (size_t i = 0; i < n / 2; i++) {
        const float *v = vdb_ivf_vector(ivf, (int64_t)i);
        bad += !v || memcmp(v, x + 2 * i * d, d * sizeof(float)) != 0;
    }
    CHECK(bad == 0 && !vdb_ivf_contains(ivf, (int64_t)(n / 2)), "%zu rows wrong after renumber", bad);

    /* Retrain into a different list count: every vector kept, search exact with all lists. */
    CHECK_OK(vdb_ivf_retrain(ivf, 17, 8));
    CHECK(vdb_ivf_n_lists(ivf) == 17 && vdb_ivf_count(ivf) == (int64_t)(n / 2), "after retrain");
    bad = 0;
    size_t total = 0;
    for (size_t l = 0; l < 17; l++) total += vdb_ivf_list_size(ivf, l);
    for (size_t i = 0; i < n / 2; i++) {
        const float *v = vdb_ivf_vector(ivf, (int64_t)i);
        bad += !v || memcmp(v, x + 2 * i * d, d * sizeof(float)) != 0;
    }
    CHECK(bad == 0 && total == n / 2, "%zu rows wrong after retrain, total %zu", bad, total);
    vdb_ivf_stats st;
    vdb_ivf_stats_get(ivf, &st);
    CHECK(st.added_since_train == 0 && st.n_train_points == n / 2 && st.vectors_at_train == n / 2,
          "retrain counters");
    float dist[10];
    int64_t rows[10];
    CHECK_OK(vdb_ivf_search(ivf, x + 2 * 7 * d, 1, 10, 17, NULL, 0, dist, rows));
    CHECK(rows[0] == 7 && dist[0] == 0.0f, "row 7 after retrain -> %lld", (long long)rows[0]);
    /* Retrain is deterministic given the (row, vector) set: a rebuilt copy matches. */
    vdb_ivf *copy = NULL;
    CHECK_OK(vdb_ivf_create(d, VDB_METRIC_L2, 5, &copy));
    if (copy) {
        float *cx = malloc((n / 2) * d * sizeof(float));
        int64_t *cr = malloc((n / 2) * sizeof(int64_t));
        for (size_t i = 0; i < n / 2; i++) {
            memcpy(cx + i * d, x + 2 * i * d, d * sizeof(float));
            cr[i] = (int64_t)(n / 2 - 1 - i); /* insert in reverse, then renumber back */
        }
        CHECK_OK(vdb_ivf_train(copy, cx, n / 2, 1));
        CHECK_OK(vdb_ivf_add(copy, cr, cx, n / 2));
        int64_t *rev = malloc((n / 2) * sizeof(int64_t));
        for (size_t i = 0; i < n / 2; i++) rev[i] = (int64_t)(n / 2 - 1 - i);
        CHECK_OK(vdb_ivf_renumber(copy, rev, n / 2));
        CHECK_OK(vdb_ivf_retrain(copy, 17, 8));
        CHECK(memcmp(vdb_ivf_centroids(copy), vdb_ivf_centroids(ivf), 17 * d * sizeof(float)) == 0,
              "retrain depends on history");
        free(rev);
        free(cx);
        free(cr);
    }
    vdb_ivf_free(copy);
    CHECK(vdb_ivf_retrain(ivf, n, 1) == VDB_EINVAL, "retrain with more lists than vectors accepted");
    free(map);
    free(x);
    vdb_ivf_free(ivf);
}

static void test_degenerate_ivf(void)
{
    const size_t d = 8;
    vdb_ivf *ivf = NULL;
    CHECK(vdb_ivf_create(0, VDB_METRIC_L2, 4, &ivf) == VDB_EINVAL, "d = 0");
    CHECK(vdb_ivf_create(8, VDB_METRIC_L2, 0, &ivf) == VDB_EINVAL, "n_lists = 0");
    CHECK(vdb_ivf_create(8, (vdb_metric)7, 4, &ivf) == VDB_EINVAL, "bad metric");
    CHECK_OK(vdb_ivf_create(d, VDB_METRIC_COSINE, 10, &ivf));
    if (!ivf) return;
    float q[8] = {1, 0, 0, 0, 0, 0, 0, 0}, dist[4];
    int64_t rows[4], r0 = 0;
    CHECK(vdb_ivf_search(ivf, q, 1, 4, 1, NULL, 0, dist, rows) == VDB_EINVAL, "search untrained");
    CHECK(vdb_ivf_add(ivf, &r0, q, 1) == VDB_EINVAL, "add untrained");
    float few[5 * 8] = {0};
    CHECK(vdb_ivf_train(ivf, few, 5, 1) == VDB_EINVAL && strstr(vdb_last_error(), "fewer points than clusters"),
          "n < n_lists: %s", vdb_last_error());
    /* Cosine with many all-zero vectors and duplicates. */
    const size_t n = 400;
    float *x = calloc(n * d, sizeof(float));
    for (size_t i = 200; i < n; i++) x[i * d + (i % 3)] = (float)(1 + i % 2); /* 3 directions, repeated */
    int64_t *rr = malloc(n * sizeof *rr);
    for (size_t i = 0; i < n; i++) rr[i] = (int64_t)i;
    CHECK_OK(vdb_ivf_train(ivf, x, n, 1));
    CHECK_OK(vdb_ivf_add(ivf, rr, x, n));
    float zq[8] = {0};
    CHECK_OK(vdb_ivf_search(ivf, zq, 1, 4, 2, NULL, 0, dist, rows));
    for (size_t j = 0; j < 4; j++) CHECK(rows[j] >= 0 && dist[j] == 1.0f, "zero query: row %lld dist %g", (long long)rows[j], dist[j]);
    CHECK_OK(vdb_ivf_search(ivf, q, 1, 4, 1, NULL, 0, dist, rows));
    for (size_t j = 0; j < 4; j++)
        CHECK(rows[j] >= 200 && rows[j] % 3 == 0 && fabsf(dist[j]) < 1e-6f, "direction query: row %lld dist %g",
              (long long)rows[j], dist[j]);
    /* k = 0 and nq = 0 are no-ops. */
    CHECK_OK(vdb_ivf_search(ivf, q, 1, 0, 1, NULL, 0, dist, rows));
    CHECK_OK(vdb_ivf_search(ivf, q, 0, 4, 1, NULL, 0, dist, rows));
    CHECK(vdb_ivf_train(ivf, x, n, 1) == VDB_EINVAL, "train on a non-empty index accepted");
    free(x);
    free(rr);
    vdb_ivf_free(ivf);
}

int main(void)
{
    printf("kmeans: recovers blobs\n");
    test_kmeans_recovers_blobs();
    printf("kmeans: assignment ties and chunking\n");
    test_assign_ties_and_chunks();
    printf("kmeans: sampling, determinism across thread counts\n");
    test_kmeans_sampling_and_determinism();
    printf("kmeans: degenerate inputs\n");
    test_kmeans_degenerate();
    printf("ivf: recall, all metrics\n");
    test_recall(VDB_METRIC_L2);
    test_recall(VDB_METRIC_IP);
    test_recall(VDB_METRIC_COSINE);
    printf("ivf: add / remove / update / vector\n");
    test_add_remove_update();
    printf("ivf: filtered search returns k\n");
    test_filtered();
    test_small_lists_pad();
    printf("ivf: determinism\n");
    test_determinism();
    printf("ivf: write / read / corruption\n");
    test_persistence();
    printf("ivf: renumber / retrain\n");
    test_renumber_retrain();
    printf("ivf: degenerate inputs\n");
    test_degenerate_ivf();
    return vdb_test_summary();
}
