/* vdb_kmeans — k-means clustering, the coarse quantizer of the IVF index.
 *
 * vdb_kmeans_train: k-means++ seeding (D^2 sampling) followed by Lloyd iterations.
 *   - Metric: VDB_METRIC_L2 runs Euclidean k-means. VDB_METRIC_IP and VDB_METRIC_COSINE run
 *     spherical k-means: centroids are rescaled to unit length after every update and points
 *     are assigned to the centroid of largest dot product. For COSINE the training points are
 *     normalized first, into a copy unless the caller did it (unit_points); an all-zero point
 *     stays zero: it ties with every centroid and joins the lowest-numbered one. Seeding always samples by squared L2 distance (non-negative for
 *     every metric).
 *   - Large inputs: when n > max_points_per_centroid * k, Lloyd runs on a uniform random sample
 *     of that many points (faiss's rule, 256 per centroid); k-means++ seeding samples from at
 *     most seed_points_per_centroid * k of them (16 per centroid: the candidates stay cache
 *     resident), because every seed costs one pass over its candidates and that pass cannot be
 *     blocked; the triangle inequality skips candidates that cannot get closer to a new seed.
 *   - Warm start: all but the last 2 iterations run on a uniform quarter of the training set (when
 *     that quarter still holds >= 32 points per centroid), the last 2 on all of it: early
 *     iterations move the centroids most and a quarter places them about as well, at a quarter
 *     of the cost (partition recall unchanged, objective within ~0.5% on the sets measured).
 *   - Stops after n_iter iterations or as soon as an assignment step on the whole training set
 *     changes nothing (a quiet step on the quarter moves on to the whole set).
 *   - Empty clusters are re-seeded by splitting the largest cluster: its centroid is copied and
 *     the two copies are pushed apart by a relative 1/1024 in alternating directions per
 *     coordinate (as faiss does). With too few distinct points a cluster may stay empty.
 *   - n < k is refused with VDB_EINVAL ("fewer points than clusters"); k is never clamped here,
 *     because the caller chose it and must decide (the IVF index reports the same error).
 *   - Deterministic: the same input, k, parameters and kernel family (vdb_cpu) give the same
 *     centroids, whatever the thread count (work is split in fixed-size blocks; sums are done
 *     in a fixed order, in double precision). The assignment step is bit-identical between AVX2
 *     and AVX-512 (see vdb_nearest); k-means++ seeding uses the family's distance kernels.
 *
 * vdb_kmeans_assign: nearest centroid of each point (the hot loop of training and of IVF adds),
 *   through vdb_nearest (a register-blocked GEMM with the argmin fused in), split over the worker
 *   pool (vdb_threads) in blocks of a fixed size.
 *
 * Ownership: the caller allocates every output (centroids: k * d floats; assign: n entries).
 * Inputs are read-only and borrowed for the call. Functions are reentrant; concurrent calls
 * share the worker pool (vdb_parallel_for serializes them).
 */
#ifndef VDB_KMEANS_H
#define VDB_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_distance.h"

typedef struct {
    size_t n_iter;                   /* Lloyd iterations at most; 0 = VDB_KMEANS_DEFAULT_ITER */
    size_t max_points_per_centroid;  /* training sample cap per centroid; 0 = 256 */
    size_t seed_points_per_centroid; /* k-means++ candidate cap per centroid; 0 = 16 */
    uint64_t seed;                   /* PRNG seed (splitmix64) */
    int unit_points;                 /* COSINE: the caller normalized the points already (each has unit
                                      * length as vdb_kmeans_normalize leaves it, or is zero), so no
                                      * normalized copy is made; other metrics ignore it */
} vdb_kmeans_params;

enum { VDB_KMEANS_DEFAULT_ITER = 10 };

typedef struct {
    size_t n_train;    /* points Lloyd ran on (after sampling) */
    size_t iterations; /* assignment steps run */
    size_t n_splits;   /* empty clusters re-seeded, over all iterations */
    size_t n_empty;    /* clusters still empty at the end */
    int converged;     /* 1: stopped because an assignment changed nothing */
    double objective;  /* sum of the last assignment's distances (L2: squared; IP/cosine: 1-dot) */
} vdb_kmeans_stats;

/* Fills p with the defaults (seed 0, unit_points 0). */
void vdb_kmeans_params_default(vdb_kmeans_params *p);

/* Clusters x (n points of d floats, row-major) into k centroids written to centroids (k * d).
 * params NULL = defaults; stats may be NULL. Errors: VDB_EINVAL (k == 0, d == 0, n < k),
 * VDB_ENOMEM. On error centroids is unspecified. */
int vdb_kmeans_train(vdb_metric m, const float *x, size_t n, size_t d, size_t k,
                     const vdb_kmeans_params *params, float *centroids, vdb_kmeans_stats *stats);

/* For each of the n points, assign[i] = index of the nearest of the k centroids (ties: lowest
 * index). L2 ranks by squared L2 distance; IP and COSINE rank by largest dot product, which is
 * the cosine order when the centroids have unit length (as vdb_kmeans_train leaves them).
 * L2 is ranked by |c|^2 - 2 x.c, as sgemm-based k-means (faiss) does: near-ties may break either
 * way against an exact difference-based distance.
 * dist (optional, n floats) receives the ranking value: squared L2 (>= 0), or 1 - dot. */
int vdb_kmeans_assign(vdb_metric m, const float *centroids, size_t k, size_t d, const float *x,
                      size_t n, uint32_t *assign, float *dist);

/* Centroids made ready for many assignments (packed vdb_nearest panels and the L2 biases), for a
 * caller that assigns small batches against fixed centroids (IVF adds): packing costs k * d, as
 * much as assigning one point. Owns its buffers (vdb_kmeans_prepared_free; freeing a zeroed one is
 * a no-op). Read-only once prepared: concurrent assignments may share it. */
typedef struct {
    float *packed;
    float *bias;
    size_t k, d;
    int l2; /* 1: squared-L2 order; 0: largest dot product (IP, COSINE) */
} vdb_kmeans_prepared;

/* Same errors as vdb_kmeans_assign; on error *out is zeroed. */
int vdb_kmeans_prepare(vdb_metric m, const float *centroids, size_t k, size_t d, vdb_kmeans_prepared *out);
void vdb_kmeans_prepared_free(vdb_kmeans_prepared *p);
/* vdb_kmeans_assign against prepared centroids. */
int vdb_kmeans_assign_prepared(const vdb_kmeans_prepared *p, const float *x, size_t n, uint32_t *assign,
                               float *dist);

/* Scales v (d floats) to unit length, as k-means does with COSINE points; a zero v stays zero. */
void vdb_kmeans_normalize(float *v, size_t d);

/* Uniform random sample of m of the n indices [0, n), written ascending to idx (m <= n);
 * deterministic for a seed. Used to draw training samples. */
void vdb_kmeans_sample(size_t n, size_t m, uint64_t seed, size_t *idx);

#endif
