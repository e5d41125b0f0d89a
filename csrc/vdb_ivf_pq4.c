/* vdb_ivf_pq4 — the IVF index's optional 4-bit PQ codes: training them on the residuals, encoding
 * vectors as they enter a list, moving codes with their vectors, and owning them (copied out of
 * the mapped ivfpq4.bin before a list changes; freed or unmapped). See vdb_ivf.h (vdb_ivf_set_pq4). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "vdb_distance.h"
#include "vdb_error.h"
#include "vdb_ivf_internal.h"
#include "vdb_kmeans.h"
#include "vdb_pq4.h"

int vdb_ivf_pq_reserve(ivf_list *L, size_t cap, size_t block_bytes)
{
    size_t nb = (cap + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK, cbytes;
    if (ivf_mul(nb ? nb : 1, block_bytes, &cbytes)) return -1;
    uint8_t *c = realloc(L->codes, cbytes);
    if (!c) return -1;
    L->codes = c;
    float *e = realloc(L->qerr, (cap ? cap : 1) * sizeof(float));
    if (!e) return -1;
    L->qerr = e;
    float *a = realloc(L->qaux, (cap ? cap : 1) * sizeof(float));
    if (!a) return -1;
    L->qaux = a;
    return 0;
}

/* The residual the code holds for vector v of list l (cosine: of v / |v|); returns |v|^2. */
static double pq_residual(const vdb_ivf *ivf, size_t l, const float *v, float *out)
{
    const size_t d = ivf->d;
    const float *c = ivf->centroids + l * d;
    double xx = 0;
    for (size_t t = 0; t < d; t++) xx += (double)v[t] * v[t];
    /* cosine ranks directions: the residual is that of x / |x| (a zero vector is always re-ranked) */
    float inv = ivf->metric == VDB_METRIC_COSINE && xx > 0 ? (float)(1.0 / sqrt(xx)) : 1.0f;
    for (size_t t = 0; t < d; t++) out[t] = v[t] * inv - c[t];
    return xx;
}

static double pq_centroid_norm(const vdb_ivf *ivf, size_t l)
{
    const float *c = ivf->centroids + l * ivf->d;
    double cc = 0;
    for (size_t t = 0; t < ivf->d; t++) cc += (double)c[t] * c[t];
    return cc;
}

/* Stores the code of (l, pos) with its error and the L2 term |x|^2 - |c|^2. */
static void pq_store(vdb_ivf *ivf, ivf_list *L, size_t pos, const uint8_t *code, float err, double xx, double cc)
{
    vdb_pq4_pack_set(L->codes, ivf->pq->m_pad, ivf->pq->m, pos, code);
    L->qerr[pos] = ivf->metric == VDB_METRIC_COSINE && !(xx > 0) ? INFINITY : err;
    if (!(L->qerr[pos] <= L->qerr_max)) L->qerr_max = L->qerr[pos];
    L->qaux[pos] = ivf->metric == VDB_METRIC_L2 ? (float)(xx - cc) : 0.0f;
}

/* Encodes the vector at (l, pos) into its list's codes. */
void vdb_ivf_pq_encode_at(vdb_ivf *ivf, size_t l, size_t pos)
{
    ivf_list *L = &ivf->lists[l];
    double xx = pq_residual(ivf, l, L->vecs + pos * ivf->d, ivf->pq_tmp);
    float err;
    vdb_pq4_encode(ivf->pq, ivf->pq_tmp, 1, ivf->pq_code, &err);
    pq_store(ivf, L, pos, ivf->pq_code, err, xx, pq_centroid_norm(ivf, l));
}

#define PQ_CHUNK 64 /* vectors encoded per encoder call when a whole list is coded */

/* Encodes every vector of list l, PQ_CHUNK at a time. res: PQ_CHUNK * d floats, codes: PQ_CHUNK * m bytes. */
static void pq_encode_list(vdb_ivf *ivf, size_t l, float *res, uint8_t *codes)
{
    ivf_list *L = &ivf->lists[l];
    const size_t d = ivf->d, m = ivf->pq->m;
    double cc = pq_centroid_norm(ivf, l), xx[PQ_CHUNK];
    float err[PQ_CHUNK];
    for (size_t s = 0; s < L->n; s += PQ_CHUNK) {
        size_t k = L->n - s < PQ_CHUNK ? L->n - s : PQ_CHUNK;
        for (size_t i = 0; i < k; i++) xx[i] = pq_residual(ivf, l, L->vecs + (s + i) * d, res + i * d);
        vdb_pq4_encode(ivf->pq, res, k, codes, err);
        for (size_t i = 0; i < k; i++) pq_store(ivf, L, s + i, codes + i * m, err[i], xx[i], cc);
    }
}

void vdb_ivf_pq_move(vdb_ivf *ivf, ivf_list *L, size_t from, size_t to)
{
    vdb_pq4_pack_get(L->codes, ivf->pq->m_pad, ivf->pq->m, from, ivf->pq_code);
    vdb_pq4_pack_set(L->codes, ivf->pq->m_pad, ivf->pq->m, to, ivf->pq_code);
    L->qerr[to] = L->qerr[from];
    L->qaux[to] = L->qaux[from];
}

#define IVF_PQ_MISS_SHARE 0.5 /* see ivf_pq_eps_table */
#define IVF_PQ_TRAIN 16384 /* residuals the sub-quantizers train on (they use 16 x 256 at most) */

void vdb_ivf_pq_free_list(ivf_list *L)
{
    if (!L->codes_mapped) {
        free(L->codes);
        free(L->qerr);
        free(L->qaux);
    }
    L->codes_mapped = 0;
    L->codes = NULL;
    L->qerr = L->qaux = NULL;
}

int vdb_ivf_pq_own(vdb_ivf *ivf, ivf_list *L)
{
    if (!L->codes_mapped) return VDB_OK;
    int rc = ivf_verify_codes(ivf, L);
    if (rc) return rc;
    ivf_list copy = *L;
    L->codes = NULL;
    L->qerr = L->qaux = NULL;
    const size_t bb = vdb_pq4_block_bytes(ivf->pq);
    if (vdb_ivf_pq_reserve(L, L->cap > L->n ? L->cap : L->n, bb)) {
        free(L->codes);
        free(L->qerr);
        free(L->qaux);
        *L = copy;
        return vdb_set_error(VDB_ENOMEM, "out of memory copying the codes of an IVF list of %zu vectors", L->n);
    }
    memcpy(L->codes, copy.codes, (L->n + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * bb);
    memcpy(L->qerr, copy.qerr, L->n * sizeof(float));
    memcpy(L->qaux, copy.qaux, L->n * sizeof(float));
    L->codes_mapped = 0;
    return VDB_OK;
}

void vdb_ivf_pq_unmap(vdb_ivf *ivf)
{
    if (ivf->pq_map) munmap((void *)ivf->pq_map, ivf->pq_map_len);
    vdb_vecmap_close(ivf->pq_chk);
    ivf->pq_map = NULL;
    ivf->pq_map_len = 0;
    ivf->pq_chk = NULL;
}

void vdb_ivf_pq_drop(vdb_ivf *ivf)
{
    for (size_t l = 0; l < ivf->n_lists; l++) {
        vdb_ivf_pq_free_list(&ivf->lists[l]);
        ivf->lists[l].qerr_max = 0;
    }
    vdb_ivf_pq_unmap(ivf);
    vdb_pq4_free(ivf->pq);
    free(ivf->pq_tmp);
    free(ivf->pq_code);
    free(ivf->pq_eps);
    ivf->pq = NULL;
    ivf->pq_tmp = NULL;
    ivf->pq_code = NULL;
    ivf->pq_eps = NULL;
}

typedef struct {
    uint32_t rank; /* of the neighbour's list in the probe's order */
    float ratio;
} ivf_pq_found;

static int ivf_found_cmp(const void *a, const void *b)
{
    const ivf_pq_found *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return (x->ratio > y->ratio) - (x->ratio < y->ratio);
}

/* The margin a search probing np lists needs. The codes should lose few of the neighbours that
 * probing finds, relative to those that probing loses: a user asking for more lists asks for more
 * recall. Over the calibration's near pairs (probe u, its neighbour x; vdb_pq4.h), with r the rank
 * of x's list in u's probe order: probing np lists misses the share m(np) of pairs with r >= np,
 * and eps[np - 1] is the (1 - IVF_PQ_MISS_SHARE m(np)) quantile of the error ratios of the pairs it
 * finds (their maximum once it finds them all), never below eps[np - 2] nor the random pairs' bound. */
static void ivf_pq_eps_table(const vdb_ivf *ivf, const float *probe, const uint32_t *list_of, const vdb_pq4_pair *pr,
                             size_t npr, float *score, ivf_pq_found *f, float *sorted, float *eps)
{
    const size_t d = ivf->d, nl = ivf->n_lists;
    const vdb_metric cm = ivf->metric == VDB_METRIC_L2 ? VDB_METRIC_L2 : VDB_METRIC_IP;
    size_t last_u = SIZE_MAX;
    for (size_t i = 0; i < npr; i++) {
        if (pr[i].u != last_u) { /* the pairs of one probe are consecutive */
            last_u = pr[i].u;
            vdb_distance_block(cm, probe + (size_t)last_u * d, 1, ivf->centroids, nl, d, score);
        }
        float own = score[list_of[pr[i].x]];
        uint32_t r = 0;
        for (size_t l = 0; l < nl; l++) r += score[l] < own;
        f[i].rank = r;
        f[i].ratio = pr[i].ratio;
    }
    qsort(f, npr, sizeof *f, ivf_found_cmp);
    size_t found = 0;
    float prev = 0;
    for (size_t np = 1; np <= nl; np++) {
        for (; found < npr && f[found].rank < np; found++) {
            size_t at = found; /* insertion keeps sorted[0, found] ascending */
            while (at > 0 && sorted[at - 1] > f[found].ratio) {
                sorted[at] = sorted[at - 1];
                at--;
            }
            sorted[at] = f[found].ratio;
        }
        float e = ivf->pq->eps_hi;
        if (found > 0) {
            double miss = IVF_PQ_MISS_SHARE * (double)(npr - found) / (double)npr;
            e = sorted[(size_t)ceil((1.0 - miss) * (double)(found - 1))];
            if (e < ivf->pq->eps_rand) e = ivf->pq->eps_rand; /* pairs that are not near need it */
        }
        prev = eps[np - 1] = e > prev ? e : prev;
    }
}

int vdb_ivf_set_pq4(vdb_ivf *ivf, size_t m, uint64_t seed)
{
    int rc = VDB_OK;
    const size_t d = ivf->d;
    size_t n = (size_t)ivf->n_vectors;
    vdb_pq4 *pq = NULL;
    float *xs = NULL, *probe = NULL, *tmp = NULL, *eps = NULL, *score = NULL, *sorted = NULL;
    size_t *idx = NULL, npr = 0;
    uint32_t *list_of = NULL;
    ivf_pq_found *found = NULL;
    vdb_pq4_pair *pairs = NULL;
    uint8_t *code = NULL, *chunk_codes = NULL;
    float *chunk = NULL;
    if (m == 0) {
        vdb_ivf_pq_drop(ivf);
        return VDB_OK;
    }
    if (!ivf->trained || n < 16)
        return vdb_set_error(VDB_EINVAL, "pq4 codes need a trained IVF index holding at least 16 vectors (it holds %zu)", n);
    if ((rc = vdb_ivf_verify(ivf))) return rc; /* every vector is read */
    if ((rc = vdb_pq4_create(d, m, &pq))) return rc;
    size_t ns = n < IVF_PQ_TRAIN ? n : IVF_PQ_TRAIN, bytes;
    if (ivf_mul(ns, d * sizeof(float), &bytes)) goto nomem;
    xs = malloc(bytes);
    probe = malloc(bytes);
    idx = malloc(ns * sizeof *idx);
    tmp = malloc(d * sizeof *tmp);
    code = malloc(m);
    chunk = malloc(PQ_CHUNK * d * sizeof *chunk); /* d <= 2^24 (vdb_pq4_create): no overflow */
    chunk_codes = malloc(PQ_CHUNK * m);
    list_of = malloc(ns * sizeof *list_of);
    pairs = malloc(VDB_PQ4_NEAR_PAIRS * sizeof *pairs);
    found = malloc(VDB_PQ4_NEAR_PAIRS * sizeof *found);
    sorted = malloc(VDB_PQ4_NEAR_PAIRS * sizeof *sorted);
    eps = malloc(ivf->n_lists * sizeof *eps);
    score = malloc(ivf->n_lists * sizeof *score);
    if (!xs || !probe || !idx || !tmp || !code || !chunk || !chunk_codes || !list_of || !pairs || !found || !sorted ||
        !eps || !score)
        goto nomem;
    /* Residuals of a sample drawn by ordinal in row order (deterministic whatever the layout);
     * the sampled vectors themselves are the probe directions of the error estimate. */
    vdb_kmeans_sample(n, ns, seed, idx);
    size_t ord = 0, taken = 0;
    for (size_t r = 0; r < ivf->where_len && taken < ns; r++) {
        uint64_t w = ivf->where[r];
        if (w == IVF_ABSENT) continue;
        if (ord++ != idx[taken]) continue;
        size_t l = ivf_list_of(w);
        const float *v = ivf->lists[l].vecs + ivf_pos_of(w) * d, *c = ivf->centroids + l * d;
        double xx = 0;
        for (size_t t = 0; t < d; t++) xx += (double)v[t] * v[t];
        float inv = ivf->metric == VDB_METRIC_COSINE && xx > 0 ? (float)(1.0 / sqrt(xx)) : 1.0f;
        for (size_t t = 0; t < d; t++) {
            probe[taken * d + t] = v[t] * inv;
            xs[taken * d + t] = v[t] * inv - c[t];
        }
        list_of[taken] = (uint32_t)l;
        taken++;
    }
    if ((rc = vdb_pq4_train(pq, xs, taken, probe, seed, pairs, &npr))) goto cleanup;
    vdb_pq4 *old = ivf->pq; /* the table reads ivf->pq: lend it the new one, then put the old back so
                             * vdb_ivf_pq_drop below frees it */
    ivf->pq = pq;
    ivf_pq_eps_table(ivf, probe, list_of, pairs, npr, score, found, sorted, eps);
    ivf->pq = old;
    /* Old codes go first (their block size may differ): a failure below leaves an IVF-Flat index. */
    vdb_ivf_pq_drop(ivf);
    for (size_t l = 0; l < ivf->n_lists; l++)
        if (vdb_ivf_pq_reserve(&ivf->lists[l], ivf->lists[l].cap, vdb_pq4_block_bytes(pq))) goto nomem;
    ivf->pq = pq;
    ivf->pq_tmp = tmp;
    ivf->pq_code = code;
    ivf->pq_seed = seed;
    ivf->pq_eps = eps;
    pq = NULL;
    tmp = NULL;
    code = NULL;
    eps = NULL;
    for (size_t l = 0; l < ivf->n_lists; l++) pq_encode_list(ivf, l, chunk, chunk_codes);
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory building the pq4 codes of the IVF index");
cleanup:
    vdb_pq4_free(pq);
    free(xs);
    free(probe);
    free(idx);
    free(tmp);
    free(code);
    free(chunk);
    free(chunk_codes);
    free(list_of);
    free(pairs);
    free(found);
    free(sorted);
    free(eps);
    free(score);
    return rc;
}

size_t vdb_ivf_pq4_m(const vdb_ivf *ivf) { return ivf->pq ? ivf->pq->m : 0; }
