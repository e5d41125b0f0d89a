/* vdb_collection_ivf — a collection's IVF lifecycle: when to train and retrain, the n_probe rules,
 * rebuild and batch mode, and the maintenance after each write (training, checkpoints) with its
 * per-thread warnings. The rules are stated in vdb_collection.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_collection_internal.h"
#include "vdb_error.h"
#include "vdb_kmeans.h"
#include "vdb_store.h"

#define IVF_SEED 0x5eedULL

/* 4-d sub-spaces (faiss's choice for 4-bit fast-scan), at most 256 sub-quantizers (uint16 sums). */
size_t vdb_collection_pq4_m(size_t d)
{
    size_t m = d / 4;
    if (m < 1) m = d;
    return m > VDB_PQ4_MAX_M ? VDB_PQ4_MAX_M : m;
}

/* The warning of the calling thread's last write, batch end or rebuild (vdb_collection_take_warning).
 * Per thread, so a write's warning goes to its own caller, never to another thread's write. */
static _Thread_local char warning_msg[512];
static _Thread_local int warning_set;

void vdb_coll_clear_warning(void) { warning_set = 0; }

int64_t vdb_collection_default_n_probe(int64_t n_lists, int quantization)
{
    /* max(16, ceil(3 sqrt(n_lists))), at most n_lists. Measured recall@10 through
     * Collection.query (sqrt(n) lists): real 384-d text embeddings (78k all-MiniLM-L6-v2, 279
     * lists -> 51) 0.977, where the earlier max(16, ceil(sqrt)) (17) gave 0.918; synthetic
     * clusters need fewer lists. Real embeddings spread their neighbours over more lists than
     * synthetic clusters do, and a user who sets no n_probe expects recall near a graph index's
     * (~0.99), so the default scans about 3x the lists of sqrt(n_lists); a tuned n_probe remains
     * the way to trade recall for speed. */
    int64_t p = 16;
    while (p * p < 9 * n_lists) p++;
    /* pq4 scans a list's codes ~10x faster than its float32 rows, so the default probes twice the
     * lists: MiniLM recall@10 ~0.99 (n_probe 102) instead of ~0.97, p50 still a fraction of a
     * float32 query at 51 (its re-rank grows with n_probe, see vdb_ivf_pq4.c). */
    if (quantization == VDB_QUANT_PQ4) p *= 2;
    return p > n_lists && n_lists > 0 ? n_lists : p;
}

int64_t vdb_coll_n_probe(const vdb_collection *c)
{
    int64_t set = __atomic_load_n(&c->cfg.n_probe, __ATOMIC_RELAXED); /* see vdb_collection_set_n_probe */
    if (set > 0) return set;
    int64_t lists = c->ivf ? (int64_t)vdb_ivf_n_lists(c->ivf) : c->cfg.n_clusters;
    return vdb_collection_default_n_probe(lists, c->cfg.quantization);
}

static size_t lists_for(const vdb_collection *c, size_t n)
{
    if (c->cfg.n_clusters > 0) return (size_t)c->cfg.n_clusters;
    if (n < 2) return 1;
    size_t k = 1;
    while ((k + 1) * (k + 1) <= n) k++;
    if (n - k * k > k) k++; /* round(sqrt(n)) */
    return k;
}

/* Builds the index from the flat storage: train on a sample, add every live vector, then free the
 * flat copy. On failure the collection stays flat and unchanged. */
static int train_from_flat(vdb_collection *c, size_t n_lists)
{
    int rc;
    vdb_ivf *ivf = NULL;
    float *sample = NULL;
    size_t *idx = NULL;
    int64_t *rows = NULL;
    if ((rc = vdb_coll_verify_all(c)) || (rc = vdb_coll_compact(c)))
        return rc; /* live rows become 0..n-1, contiguous in base then tail */
    size_t n = c->n_rows, d = (size_t)c->dim;
    if (n < n_lists) return vdb_set_error(VDB_EINVAL, "cannot train %zu IVF lists on %zu vectors: fewer points than clusters", n_lists, n);
    size_t m = n < 256 * n_lists ? n : 256 * n_lists;
    sample = malloc(m * d * sizeof(float));
    idx = malloc(m * sizeof *idx);
    rows = malloc(n * sizeof *rows);
    if (!sample || !idx || !rows) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory training the index");
        goto cleanup;
    }
    vdb_kmeans_sample(n, m, IVF_SEED, idx);
    /* the sample is a copy: cosine normalizes it here, so k-means need not copy it again */
    for (size_t i = 0; i < m; i++) {
        memcpy(sample + i * d, row_vector(c, idx[i]), d * sizeof(float));
        if (c->cfg.metric == VDB_METRIC_COSINE) vdb_kmeans_normalize(sample + i * d, d);
    }
    for (size_t r = 0; r < n; r++) rows[r] = (int64_t)r;
    if ((rc = vdb_ivf_create(d, c->cfg.metric, n_lists, &ivf)) || (rc = vdb_ivf_train_normalized(ivf, sample, m, IVF_SEED)))
        goto cleanup;
    if (c->n_base && (rc = vdb_ivf_add(ivf, rows, c->base, c->n_base))) goto cleanup;
    if (n > c->n_base && (rc = vdb_ivf_add(ivf, rows + c->n_base, c->tail, n - c->n_base))) goto cleanup;
    vdb_ivf_mark_trained_contents(ivf); /* these n are the training state, not growth since */
    if (c->cfg.quantization == VDB_QUANT_PQ4 && n >= 16 &&
        (rc = vdb_ivf_set_pq4(ivf, vdb_collection_pq4_m(d), VDB_PQ4_SEED)))
        goto cleanup;
    vdb_vecmap_close(c->vmap);
    c->vmap = NULL;
    free(c->tail);
    c->base = c->tail = NULL;
    c->n_base = c->tail_cap = 0;
    c->ivf = ivf;
    ivf = NULL;
cleanup:
    vdb_ivf_free(ivf);
    free(sample);
    free(idx);
    free(rows);
    return rc;
}

/* Keeps a message for vdb_collection_take_warning: something the caller should know, not a failure. */
static void note(vdb_collection *c, const char *fmt, ...)
{
    va_list ap;
    (void)c;
    va_start(ap, fmt);
    vsnprintf(warning_msg, sizeof warning_msg, fmt, ap);
    va_end(ap);
    warning_set = 1;
}

/* Trains when the rules say so (see vdb_collection.h); checkpoints after training. */
static int maybe_train(vdb_collection *c, int force)
{
    int rc = VDB_OK;
    if (!c->cfg.use_ivf || (c->batch_depth > 0 && !force)) return VDB_OK;
    size_t n = c->dim <= 0 ? 0 : c->n_live;
    if (!c->ivf) {
        size_t lists = lists_for(c, n);
        size_t need = lists * VDB_IVF_POINTS_PER_LIST;
        if (need < VDB_IVF_MIN_TRAIN) need = VDB_IVF_MIN_TRAIN;
        if (!force && n < need) return VDB_OK;
        if (n < lists) { /* k-means cannot train: stay exact, as the automatic rule does */
            note(c, "rebuild: %zu vectors are fewer than the %zu IVF lists to train; search stays exact "
                    "until the collection holds %zu vectors", n, lists, need);
            return VDB_OK;
        }
        rc = train_from_flat(c, lists);
    } else {
        vdb_ivf_stats is;
        vdb_ivf_stats_get(c->ivf, &is);
        uint64_t at_training = is.vectors_at_train > 0 ? is.vectors_at_train : 1;
        if (!force && is.added_since_train < at_training) return VDB_OK; /* not doubled yet */
        size_t lists = lists_for(c, n);
        if (lists > n) {
            /* Shrunk below its list count by deletes: neither a write nor rebuild fails for that. */
            if (force)
                note(c, "rebuild: %zu vectors are fewer than the %zu IVF lists to train; the index "
                        "is kept as it is", n, lists);
            return VDB_OK;
        }
        rc = vdb_ivf_retrain(c->ivf, lists, IVF_SEED);
        if (rc == VDB_ENOMEM) c->failed = 1; /* the index is complete but not as the log says */
    }
    if (rc == VDB_OK) rc = vdb_coll_checkpoint_locked(c); /* persist the trained index: reopening never retrains */
    return rc;
}

/* Maintenance after a durable write: the codes' ranges, training and checkpoints. Its failure does not fail the
 * write, which is logged and applied already (the current generation stays valid); the message is
 * kept for vdb_collection_take_warning. */
void vdb_coll_after_write(vdb_collection *c)
{
    int rc = vdb_coll_codes_maybe_retrain(c);
    if (rc == VDB_OK) rc = maybe_train(c, 0);
    if (rc == VDB_OK) rc = vdb_coll_maybe_checkpoint(c);
    if (rc != VDB_OK) note(c, "%s", vdb_last_error());
}

int vdb_collection_take_warning(char *buf, size_t cap)
{
    int had = warning_set;
    if (had) snprintf(buf, cap, "%s", warning_msg);
    warning_set = 0;
    return had;
}

int vdb_collection_batch(vdb_collection *c, int mode)
{
    vdb_coll_clear_warning();
    if (mode < VDB_BATCH_END || mode > VDB_BATCH_END_LOGGED)
        return vdb_set_error(VDB_EINVAL, "batch mode %d: expected VDB_BATCH_BEGIN/END(_LOGGED)", mode);
    const int begin = mode == VDB_BATCH_BEGIN || mode == VDB_BATCH_BEGIN_LOGGED;
    const int logged = mode == VDB_BATCH_BEGIN_LOGGED || mode == VDB_BATCH_END_LOGGED;
    int rc = VDB_OK;
    pthread_rwlock_wrlock(&c->lock);
    if (begin && logged) {
        /* From here every write is logged as it returns: what bulk levels buffered goes to disk first,
         * so the log never holds a write without the ones applied before it. */
        if (c->failed) {
            rc = vdb_coll_refuse_writes(c);
        } else if ((rc = vdb_coll_batch_commit(c))) {
            c->failed = 1;
        } else {
            c->batch_logged_depth++;
            c->batch_depth++;
        }
    } else if (begin) {
        if (c->batch_depth++ == 0 && !c->batch_unlogged) c->batch_buffering = 1;
    } else if (c->batch_depth == 0 || (logged && c->batch_logged_depth == 0)) {
        rc = vdb_set_error(VDB_EINVAL, "end of batch mode without a matching begin");
    } else {
        if (logged) c->batch_logged_depth--;
        if (--c->batch_depth == 0 && !c->failed) {
            vdb_coll_after_write(c); /* trains (and checkpoints) when the rules say so */
            /* The batch's writes become durable here, all at once: a crash before leaves none of
             * them. If that fails, memory holds writes the disk does not: refuse writes until
             * reopened. */
            if ((rc = vdb_coll_batch_commit(c)) && !c->failed) c->failed = 1;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

int vdb_collection_set_n_probe(vdb_collection *c, int64_t n_probe)
{
    if (n_probe < 0) return vdb_set_error(VDB_EINVAL, "n_probe must be >= 1 (or 0 for the default), got %lld",
                                          (long long)n_probe);
    /* An atomic store, not the write lock: waiting behind a long write or a rebuild would stall the
     * caller (the Python client calls this under its own lock). */
    __atomic_store_n(&c->cfg.n_probe, n_probe, __ATOMIC_RELAXED);
    return VDB_OK;
}

int vdb_collection_rebuild(vdb_collection *c)
{
    vdb_coll_clear_warning();
    int rc;
    pthread_rwlock_wrlock(&c->lock);
    if (!c->cfg.use_ivf)
        rc = vdb_set_error(VDB_EINVAL, "rebuild needs an IVF collection (create it with use_ivf=True)");
    else if (c->failed)
        rc = vdb_coll_refuse_writes(c);
    else
        rc = maybe_train(c, 1);
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

