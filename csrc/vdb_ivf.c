/* vdb_ivf — the IVF-Flat index: inverted lists and the row map, training, add/remove, retraining,
 * renumbering, stats. The search is in vdb_ivf_search.c, the file in vdb_ivf_file.c. See vdb_ivf.h. */
#include <stdlib.h>
#include <string.h>

#include "vdb_bytes.h"
#include "vdb_error.h"
#include "vdb_ivf_internal.h"
#include "vdb_kmeans.h"

#define IVF_TRAIN_PER_LIST 256                 /* training sample per list (faiss's rule) */

/* Grows a list to hold need vectors: exactly need for a bulk add, 1.25x for one-at-a-time growth.
 * On failure the list's contents are unchanged. */
static int ivf_list_reserve(const vdb_ivf *ivf, ivf_list *L, size_t need)
{
    const size_t d = ivf->d;
    if (need <= L->cap) return 0;
    if (L->mapped) return -1; /* ivf_list_own first */
    size_t cap = L->cap + L->cap / 4 + 8;
    if (cap < need) cap = need;
    if (cap > IVF_MAX_LIST_LEN) cap = IVF_MAX_LIST_LEN;
    if (need > cap) return -1;
    size_t vbytes, rbytes;
    if (ivf_mul(cap, d, &vbytes) || ivf_mul(vbytes, sizeof(float), &vbytes) ||
        ivf_mul(cap, sizeof(int64_t), &rbytes))
        return -1;
    float *v = realloc(L->vecs, vbytes);
    if (!v) return -1;
    L->vecs = v;
    int64_t *r = realloc(L->rows, rbytes);
    if (!r) return -1; /* vecs is merely larger than cap says: harmless */
    L->rows = r;
    if (ivf->pq && vdb_ivf_pq_reserve(L, cap, vdb_pq4_block_bytes(ivf->pq))) return -1;
    L->cap = cap;
    return 0;
}

/* Before a list changes: a mapped list's vectors move to memory (verified first: damage is never
 * copied). Its contents stay the same, so callers may do this before they validate the rest. */
static int ivf_list_own(vdb_ivf *ivf, ivf_list *L)
{
    int rc = vdb_ivf_pq_own(ivf, L);
    if (rc || !L->mapped) return rc;
    if ((rc = ivf_verify_vecs(ivf, L, 0, L->n))) return rc;
    float *v = malloc((L->n ? L->n : 1) * ivf->d * sizeof(float)); /* n * d fit: they are mapped */
    if (!v) return vdb_set_error(VDB_ENOMEM, "out of memory copying an IVF list of %zu vectors", L->n);
    memcpy(v, L->vecs, L->n * ivf->d * sizeof(float));
    L->vecs = v;
    L->mapped = 0;
    return VDB_OK;
}

int vdb_ivf_verify(const vdb_ivf *ivf)
{
    int rc = vdb_vecmap_verify_all(ivf->vmap);
    return rc ? rc : vdb_vecmap_verify_all(ivf->pq_chk);
}

int vdb_ivf_error(const vdb_ivf *ivf)
{
    int rc = vdb_vecmap_error(ivf->vmap);
    return rc ? rc : vdb_vecmap_error(ivf->pq_chk);
}

int vdb_ivf_verify_row(const vdb_ivf *ivf, int64_t row)
{
    if (!ivf->vmap || !vdb_ivf_contains(ivf, row)) return VDB_OK;
    uint64_t w = ivf->where[row];
    return ivf_verify_vecs(ivf, &ivf->lists[ivf_list_of(w)], ivf_pos_of(w), 1);
}

/* Gives back unused capacity (best effort: a failed shrink keeps the larger block). */
static void ivf_list_shrink(ivf_list *L, size_t d)
{
    if (L->n == 0) {
        if (!L->mapped) free(L->vecs);
        L->mapped = 0;
        free(L->rows);
        L->vecs = NULL;
        L->rows = NULL;
        L->cap = 0;
        return;
    }
    if (L->cap == L->n) return;
    float *v = L->mapped ? L->vecs : realloc(L->vecs, L->n * d * sizeof(float));
    if (v) L->vecs = v;
    int64_t *r = realloc(L->rows, L->n * sizeof(int64_t));
    if (r) L->rows = r;
    if (v && r) L->cap = L->n;
}

int vdb_ivf_where_reserve(vdb_ivf *ivf, size_t need_len)
{
    if (need_len <= ivf->where_len) return 0;
    size_t len = ivf->where_len + ivf->where_len / 2 + 1024;
    if (len < need_len) len = need_len;
    size_t bytes;
    if (ivf_mul(len, sizeof(uint64_t), &bytes)) return -1;
    uint64_t *w = realloc(ivf->where, bytes);
    if (!w) return -1;
    vdb_prefault(w + ivf->where_len, (len - ivf->where_len) * sizeof *w); /* filled whole below */
    for (size_t i = ivf->where_len; i < len; i++) w[i] = IVF_ABSENT;
    ivf->where = w;
    ivf->where_len = len;
    return 0;
}

static void ivf_append(vdb_ivf *ivf, size_t l, int64_t row, const float *v)
{
    ivf_list *L = &ivf->lists[l];
    size_t pos = L->n++;
    memcpy(L->vecs + pos * ivf->d, v, ivf->d * sizeof(float));
    L->rows[pos] = row;
    if (ivf->pq) vdb_ivf_pq_encode_at(ivf, l, pos);
    ivf->where[row] = ivf_pack(l, pos);
    ivf->n_vectors++;
}

/* Swap-remove: the list's last entry takes the freed slot. */
static void ivf_remove_at(vdb_ivf *ivf, size_t l, size_t pos)
{
    ivf_list *L = &ivf->lists[l];
    size_t last = L->n - 1;
    int64_t row = L->rows[pos];
    if (pos != last) {
        memcpy(L->vecs + pos * ivf->d, L->vecs + last * ivf->d, ivf->d * sizeof(float));
        L->rows[pos] = L->rows[last];
        if (ivf->pq) vdb_ivf_pq_move(ivf, L, last, pos);
        ivf->where[L->rows[pos]] = ivf_pack(l, pos);
    }
    L->n = last;
    ivf->where[row] = IVF_ABSENT;
    ivf->n_vectors--;
}

static void ivf_rebuild_where(vdb_ivf *ivf)
{
    for (size_t i = 0; i < ivf->where_len; i++) ivf->where[i] = IVF_ABSENT;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) ivf->where[L->rows[i]] = ivf_pack(l, i);
    }
}

int vdb_ivf_create(size_t d, vdb_metric m, size_t n_lists, vdb_ivf **out)
{
    int rc = VDB_OK;
    vdb_ivf *ivf = NULL;
    size_t cbytes;
    *out = NULL;
    if (d == 0 || !ivf_metric_ok(m) || n_lists == 0 || n_lists >= IVF_MAX_LISTS) {
        rc = vdb_set_error(VDB_EINVAL,
                           "IVF index needs dimension > 0, a known metric and 1 <= n_lists < 2^31 "
                           "(got d=%zu, metric=%d, n_lists=%zu)", d, (int)m, n_lists);
        goto cleanup;
    }
    if (ivf_mul(n_lists, d, &cbytes) || ivf_mul(cbytes, sizeof(float), &cbytes)) {
        rc = vdb_set_error(VDB_ENOMEM, "IVF centroid table size overflows (%zu lists x %zu)", n_lists, d);
        goto cleanup;
    }
    ivf = calloc(1, sizeof *ivf);
    if (!ivf) goto nomem;
    ivf->d = d;
    ivf->metric = m;
    ivf->n_lists = n_lists;
    ivf->centroids = calloc(1, cbytes);
    ivf->lists = calloc(n_lists, sizeof *ivf->lists);
    if (!ivf->centroids || !ivf->lists) goto nomem;
    *out = ivf;
    ivf = NULL;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory creating an IVF index (%zu lists x %zu)", n_lists, d);
cleanup:
    vdb_ivf_free(ivf);
    return rc;
}

void vdb_ivf_free(vdb_ivf *ivf)
{
    if (!ivf) return;
    if (ivf->lists) {
        for (size_t l = 0; l < ivf->n_lists; l++) {
            if (!ivf->lists[l].mapped) free(ivf->lists[l].vecs);
            free(ivf->lists[l].rows);
            vdb_ivf_pq_free_list(&ivf->lists[l]);
        }
    }
    vdb_ivf_pq_unmap(ivf);
    free(ivf->lists);
    vdb_pq4_free(ivf->pq);
    free(ivf->pq_tmp);
    free(ivf->pq_code);
    free(ivf->pq_eps);
    free(ivf->centroids);
    vdb_kmeans_prepared_free(&ivf->assigner);
    vdb_vecmap_close(ivf->vmap);
    free(ivf->where);
    free(ivf);
}

static int ivf_train(vdb_ivf *ivf, const float *x, size_t n, uint64_t seed, int unit_points)
{
    int rc = VDB_OK;
    float *c = NULL;
    if (ivf->n_vectors > 0) {
        rc = vdb_set_error(VDB_EINVAL, "IVF train needs an empty index (it holds %lld vectors); use retrain",
                           (long long)ivf->n_vectors);
        goto cleanup;
    }
    c = malloc(ivf->n_lists * ivf->d * sizeof(float)); /* size checked at create */
    if (!c) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory for IVF centroids");
        goto cleanup;
    }
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.seed = seed;
    p.max_points_per_centroid = IVF_TRAIN_PER_LIST;
    p.unit_points = unit_points;
    rc = vdb_kmeans_train(ivf->metric, x, n, ivf->d, ivf->n_lists, &p, c, NULL);
    if (rc) goto cleanup;
    memcpy(ivf->centroids, c, ivf->n_lists * ivf->d * sizeof(float));
    vdb_kmeans_prepared_free(&ivf->assigner);
    ivf->trained = 1;
    ivf->n_train_points = n;
    ivf->added_since_train = 0;
    ivf->vectors_at_train = 0; /* the index is empty; vdb_ivf_mark_trained_contents after the adds */
    ivf->seed = seed;
cleanup:
    free(c);
    return rc;
}

int vdb_ivf_train(vdb_ivf *ivf, const float *x, size_t n, uint64_t seed) { return ivf_train(ivf, x, n, seed, 0); }

int vdb_ivf_train_normalized(vdb_ivf *ivf, const float *x, size_t n, uint64_t seed)
{
    return ivf_train(ivf, x, n, seed, 1);
}

static int ivf_check_row(int64_t row)
{
    if (row < 0 || row >= VDB_IVF_MAX_ROW)
        return vdb_set_error(VDB_EINVAL, "IVF row %lld is out of range: expected 0 <= row < 2^48",
                             (long long)row);
    return VDB_OK;
}

int vdb_ivf_add(vdb_ivf *ivf, const int64_t *rows, const float *x, size_t n)
{
    int rc = VDB_OK;
    uint32_t *assign = NULL;
    size_t *extra = NULL;
    if (n == 0) goto cleanup;
    if (!ivf->trained) {
        rc = vdb_set_error(VDB_EINVAL, "IVF add needs a trained index");
        goto cleanup;
    }
    int64_t max_row = -1;
    for (size_t i = 0; i < n; i++) {
        rc = ivf_check_row(rows[i]);
        if (rc) goto cleanup;
        if (rows[i] > max_row) max_row = rows[i];
    }
    assign = malloc(n * sizeof *assign);
    extra = calloc(ivf->n_lists, sizeof *extra);
    if (!assign || !extra) goto nomem;
    if (!ivf->assigner.packed) {
        rc = vdb_kmeans_prepare(ivf->metric, ivf->centroids, ivf->n_lists, ivf->d, &ivf->assigner);
        if (rc) goto cleanup;
    }
    rc = vdb_kmeans_assign_prepared(&ivf->assigner, x, n, assign, NULL);
    if (rc) goto cleanup;
    /* Reserve everything first, so that applying the batch cannot fail half way. */
    if (vdb_ivf_where_reserve(ivf, (size_t)max_row + 1)) goto nomem;
    for (size_t i = 0; i < n; i++) {
        extra[assign[i]]++;
        uint64_t w = ivf->where[rows[i]];
        if (w != IVF_ABSENT && (rc = ivf_list_own(ivf, &ivf->lists[ivf_list_of(w)]))) goto cleanup;
    }
    for (size_t l = 0; l < ivf->n_lists; l++) {
        if (extra[l] && (rc = ivf_list_own(ivf, &ivf->lists[l]))) goto cleanup;
        if (extra[l] && ivf_list_reserve(ivf, &ivf->lists[l], ivf->lists[l].n + extra[l])) goto nomem;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t w = ivf->where[rows[i]];
        if (w != IVF_ABSENT) ivf_remove_at(ivf, ivf_list_of(w), ivf_pos_of(w));
        ivf_append(ivf, assign[i], rows[i], x + i * ivf->d);
    }
    ivf->added_since_train += n;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory adding %zu vectors to the IVF index", n);
cleanup:
    free(assign);
    free(extra);
    return rc;
}

void vdb_ivf_mark_trained_contents(vdb_ivf *ivf)
{
    ivf->vectors_at_train = (uint64_t)ivf->n_vectors;
    ivf->added_since_train = 0;
}

int vdb_ivf_remove(vdb_ivf *ivf, int64_t row)
{
    if (!vdb_ivf_contains(ivf, row))
        return vdb_set_error(VDB_ENOTFOUND, "row %lld is not in the IVF index", (long long)row);
    uint64_t w = ivf->where[row];
    size_t l = ivf_list_of(w);
    ivf_list *L = &ivf->lists[l];
    int rc = ivf_list_own(ivf, L);
    if (rc) return rc;
    ivf_remove_at(ivf, l, ivf_pos_of(w));
    if (L->cap > 64 && L->n < L->cap / 2) {
        /* Keep headroom (n/4) so alternating add/remove does not reallocate every time. */
        size_t keep = L->n + L->n / 4 + 8; /* never 0: realloc(p, 0) may free p */
        float *v = realloc(L->vecs, keep * ivf->d * sizeof(float));
        if (v) L->vecs = v;
        int64_t *r = realloc(L->rows, keep * sizeof(int64_t));
        if (r) L->rows = r;
        if (v && r) L->cap = keep;
    }
    return VDB_OK;
}

int vdb_ivf_contains(const vdb_ivf *ivf, int64_t row)
{
    return row >= 0 && (uint64_t)row < ivf->where_len && ivf->where[row] != IVF_ABSENT;
}

const float *vdb_ivf_vector(const vdb_ivf *ivf, int64_t row)
{
    if (!vdb_ivf_contains(ivf, row)) return NULL;
    uint64_t w = ivf->where[row];
    return ivf->lists[ivf_list_of(w)].vecs + ivf_pos_of(w) * ivf->d;
}

const int64_t *vdb_ivf_list_rows(const vdb_ivf *ivf, size_t l, size_t *n)
{
    *n = l < ivf->n_lists ? ivf->lists[l].n : 0;
    return *n ? ivf->lists[l].rows : NULL;
}

/* ---- Retrain. */

int vdb_ivf_retrain(vdb_ivf *ivf, size_t n_lists, uint64_t seed)
{
    int rc = VDB_OK;
    const size_t d = ivf->d, old_n = ivf->n_lists;
    size_t k = n_lists ? n_lists : old_n;
    size_t *idx = NULL, *counts = NULL, *offs = NULL;
    float *xs = NULL, *newc = NULL, *all_c = NULL;
    uint32_t *assign = NULL;
    ivf_list *all = NULL;
    vdb_kmeans_prepared newp = {0};
    size_t n = (size_t)ivf->n_vectors;
    if (k == 0 || k >= IVF_MAX_LISTS) {
        rc = vdb_set_error(VDB_EINVAL, "IVF retrain needs 1 <= n_lists < 2^31, got %zu", k);
        goto cleanup;
    }
    if (!ivf->trained) {
        rc = vdb_set_error(VDB_EINVAL, "IVF retrain needs a trained index");
        goto cleanup;
    }
    if (n < k) {
        rc = vdb_set_error(VDB_EINVAL, "fewer points than clusters: the IVF index holds %zu vectors, "
                                       "retrain asked for %zu lists", n, k);
        goto cleanup;
    }
    if ((rc = vdb_ivf_verify(ivf))) goto cleanup; /* every vector is read, and moved */
    size_t m = n, cap, bytes;
    if (!ivf_mul(k, IVF_TRAIN_PER_LIST, &cap) && cap < n) m = cap;
    if (ivf_mul(m, d, &bytes) || ivf_mul(bytes, sizeof(float), &bytes) ||
        ivf_mul(k + old_n, d * sizeof(float), &cap)) {
        rc = vdb_set_error(VDB_ENOMEM, "IVF retrain sizes overflow");
        goto cleanup;
    }
    idx = malloc(m * sizeof *idx);
    xs = malloc(bytes);
    newc = malloc(k * d * sizeof(float));
    if (!idx || !xs || !newc) goto nomem;
    /* Sample by ordinal in ascending row order, so layout history does not matter. */
    vdb_kmeans_sample(n, m, seed, idx);
    size_t ord = 0, taken = 0;
    for (size_t r = 0; r < ivf->where_len && taken < m; r++) {
        uint64_t w = ivf->where[r];
        if (w == IVF_ABSENT) continue;
        if (ord++ == idx[taken]) {
            memcpy(xs + taken * d, ivf->lists[ivf_list_of(w)].vecs + ivf_pos_of(w) * d, d * sizeof(float));
            if (ivf->metric == VDB_METRIC_COSINE) vdb_kmeans_normalize(xs + taken * d, d); /* no second copy */
            taken++;
        }
    }
    free(idx);
    idx = NULL;
    vdb_kmeans_params p;
    vdb_kmeans_params_default(&p);
    p.seed = seed;
    p.max_points_per_centroid = IVF_TRAIN_PER_LIST;
    p.unit_points = 1;
    rc = vdb_kmeans_train(ivf->metric, xs, m, d, k, &p, newc, NULL);
    if (rc) goto cleanup;
    free(xs);
    xs = NULL;

    /* New list of every vector, per old list. */
    assign = malloc((n ? n : 1) * sizeof *assign);
    offs = malloc(old_n * sizeof *offs);
    counts = calloc(k, sizeof *counts);
    all = calloc(k + old_n, sizeof *all);
    all_c = malloc((k + old_n) * d * sizeof(float));
    if (!assign || !offs || !counts || !all || !all_c) goto nomem;
    rc = vdb_kmeans_prepare(ivf->metric, newc, k, d, &newp); /* packed once for every old list */
    if (rc) goto cleanup;
    size_t off = 0;
    for (size_t l = 0; l < old_n; l++) {
        const ivf_list *L = &ivf->lists[l];
        offs[l] = off;
        rc = vdb_kmeans_assign_prepared(&newp, L->vecs, L->n, assign + off, NULL);
        if (rc) goto cleanup;
        off += L->n;
    }
    for (size_t i = 0; i < n; i++) counts[assign[i]]++;

    /* From here the index changes: new lists first, then the old ones (emptied as we go). */
    memcpy(all_c, newc, k * d * sizeof(float));
    memcpy(all_c + k * d, ivf->centroids, old_n * d * sizeof(float));
    memcpy(all + k, ivf->lists, old_n * sizeof *all);
    size_t done = 0;
    int short_of_memory = 0;
    for (; done < old_n && !short_of_memory; done++) {
        ivf_list *O = &all[k + done];
        const uint32_t *a = assign + offs[done];
        for (size_t i = 0; i < O->n; i++) {
            ivf_list *N = &all[a[i]];
            if (N->cap == 0 && ivf_list_reserve(ivf, N, counts[a[i]])) {
                short_of_memory = 1;
                break;
            }
        }
        if (short_of_memory) break;
        for (size_t i = 0; i < O->n; i++) {
            ivf_list *N = &all[a[i]];
            memcpy(N->vecs + N->n * d, O->vecs + i * d, d * sizeof(float));
            N->rows[N->n++] = O->rows[i];
        }
        if (!O->mapped) free(O->vecs);
        free(O->rows);
        vdb_ivf_pq_free_list(O);
        memset(O, 0, sizeof *O);
    }
    /* Keep the new lists plus any old list not moved yet (only after a failed allocation). */
    size_t keep = k + (old_n - done);
    memmove(all + k, all + k + done, (old_n - done) * sizeof *all);
    memmove(all_c + k * d, all_c + (k + done) * d, (old_n - done) * d * sizeof(float));
    free(ivf->lists);
    free(ivf->centroids);
    ivf_list *shrunk = realloc(all, keep * sizeof *all);
    ivf->lists = shrunk ? shrunk : all;
    float *shrunk_c = realloc(all_c, keep * d * sizeof(float));
    ivf->centroids = shrunk_c ? shrunk_c : all_c;
    vdb_kmeans_prepared_free(&ivf->assigner);
    all = NULL;
    all_c = NULL;
    ivf->n_lists = keep;
    ivf_rebuild_where(ivf);
    ivf->n_train_points = n;
    ivf->added_since_train = 0;
    ivf->vectors_at_train = n;
    ivf->seed = seed;
    if (ivf->pq && !short_of_memory) {
        /* the residuals changed with the centroids: train the codes again */
        rc = vdb_ivf_set_pq4(ivf, ivf->pq->m, ivf->pq_seed);
        if (rc) vdb_ivf_pq_drop(ivf); /* stays a complete IVF-Flat index */
        goto cleanup;
    }
    if (short_of_memory) {
        if (ivf->pq) vdb_ivf_pq_drop(ivf);
        rc = vdb_set_error(VDB_ENOMEM, "out of memory while retraining the IVF index: it stays valid "
                                       "with %zu new and %zu old lists", k, old_n - done);
    }
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory retraining the IVF index (%zu vectors, %zu lists)", n, k);
cleanup:
    vdb_kmeans_prepared_free(&newp);
    free(idx);
    free(xs);
    free(newc);
    free(assign);
    free(offs);
    free(counts);
    free(all);
    free(all_c);
    return rc;
}

/* ---- Renumber. */

int vdb_ivf_renumber(vdb_ivf *ivf, const int64_t *old_to_new, size_t n_old)
{
    int rc = VDB_OK;
    uint64_t *nw = NULL;
    int64_t max_new = -1;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; i < L->n; i++) {
            int64_t r = L->rows[i];
            if ((uint64_t)r >= n_old) {
                rc = vdb_set_error(VDB_EINVAL, "IVF renumber: row %lld is not covered by the map of %zu rows",
                                   (long long)r, n_old);
                goto cleanup;
            }
            int64_t nr = old_to_new[r];
            if (nr < -1 || nr >= VDB_IVF_MAX_ROW) {
                rc = vdb_set_error(VDB_EINVAL, "IVF renumber: row %lld maps to %lld, expected -1 or 0 <= row < 2^48",
                                   (long long)r, (long long)nr);
                goto cleanup;
            }
            if (nr > max_new) max_new = nr;
        }
    }
    size_t len = (size_t)(max_new + 1), bytes;
    if (ivf_mul(len ? len : 1, sizeof *nw, &bytes)) goto nomem;
    nw = malloc(bytes);
    if (!nw) goto nomem;
    for (size_t i = 0; i < len; i++) nw[i] = IVF_ABSENT;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        size_t pos = 0;
        for (size_t i = 0; i < L->n; i++) {
            int64_t nr = old_to_new[L->rows[i]];
            if (nr < 0) continue;
            if (nw[nr] != IVF_ABSENT) {
                rc = vdb_set_error(VDB_EINVAL, "IVF renumber: two rows map to row %lld", (long long)nr);
                goto cleanup;
            }
            nw[nr] = ivf_pack(l, pos++);
        }
    }
    /* Lists that lose rows move their vectors: in memory first (their contents stay the same). */
    for (size_t l = 0; l < ivf->n_lists; l++) {
        ivf_list *L = &ivf->lists[l];
        for (size_t i = 0; L->mapped && i < L->n; i++)
            if (old_to_new[L->rows[i]] < 0 && (rc = ivf_list_own(ivf, L))) goto cleanup;
    }
    /* Validated: apply (cannot fail). Stable compaction keeps list order. */
    int64_t total = 0;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        ivf_list *L = &ivf->lists[l];
        size_t w = 0;
        for (size_t i = 0; i < L->n; i++) {
            int64_t nr = old_to_new[L->rows[i]];
            if (nr < 0) continue;
            if (w != i) {
                memcpy(L->vecs + w * ivf->d, L->vecs + i * ivf->d, ivf->d * sizeof(float));
                if (ivf->pq) vdb_ivf_pq_move(ivf, L, i, w);
            }
            L->rows[w++] = nr;
        }
        L->n = w;
        total += (int64_t)w;
        ivf_list_shrink(L, ivf->d);
    }
    free(ivf->where);
    ivf->where = nw;
    ivf->where_len = len;
    ivf->n_vectors = total;
    nw = NULL;
    goto cleanup;
nomem:
    rc = vdb_set_error(VDB_ENOMEM, "out of memory renumbering the IVF index");
cleanup:
    free(nw);
    return rc;
}

/* ---- Persistence. */

/* ---- Stats and accessors. */

void vdb_ivf_stats_get(const vdb_ivf *ivf, vdb_ivf_stats *out)
{
    memset(out, 0, sizeof *out);
    out->d = ivf->d;
    out->metric = ivf->metric;
    out->n_lists = ivf->n_lists;
    out->trained = ivf->trained;
    out->n_vectors = ivf->n_vectors;
    out->n_train_points = ivf->n_train_points;
    out->added_since_train = ivf->added_since_train;
    out->seed = ivf->seed;
    out->vectors_at_train = ivf->vectors_at_train;
    size_t bytes = sizeof *ivf + ivf->n_lists * (sizeof(ivf_list) + ivf->d * sizeof(float)) +
                   ivf->where_len * sizeof(uint64_t);
    out->list_min = SIZE_MAX;
    for (size_t l = 0; l < ivf->n_lists; l++) {
        const ivf_list *L = &ivf->lists[l];
        if (L->n < out->list_min) out->list_min = L->n;
        if (L->n > out->list_max) out->list_max = L->n;
        out->n_empty_lists += L->n == 0;
        bytes += L->cap * ((L->mapped ? 0 : ivf->d * sizeof(float)) + sizeof(int64_t));
        if (ivf->pq && !L->codes_mapped) /* codes, error and term per vector */
            bytes += (L->cap + VDB_PQ4_BLOCK - 1) / VDB_PQ4_BLOCK * vdb_pq4_block_bytes(ivf->pq) + 8 * L->cap;
    }
    out->list_mean = (double)ivf->n_vectors / (double)ivf->n_lists;
    out->bytes_in_memory = bytes;
}

size_t vdb_ivf_dim(const vdb_ivf *ivf) { return ivf->d; }
vdb_metric vdb_ivf_metric(const vdb_ivf *ivf) { return ivf->metric; }
size_t vdb_ivf_n_lists(const vdb_ivf *ivf) { return ivf->n_lists; }
int vdb_ivf_is_trained(const vdb_ivf *ivf) { return ivf->trained; }
int64_t vdb_ivf_count(const vdb_ivf *ivf) { return ivf->n_vectors; }
size_t vdb_ivf_list_size(const vdb_ivf *ivf, size_t list) { return list < ivf->n_lists ? ivf->lists[list].n : 0; }
const float *vdb_ivf_centroids(const vdb_ivf *ivf) { return ivf->trained ? ivf->centroids : NULL; }
