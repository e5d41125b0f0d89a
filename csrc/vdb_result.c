/* vdb_result — get/query results: copies of the chosen rows' ids, metadata, documents, vectors and
 * distances in one arena (vdb_result in vdb_collection.h), and their release. */
#include <stdlib.h>
#include <string.h>

#include "vdb_collection_internal.h"
#include "vdb_error.h"
#include "vdb_logrec.h"

void vdb_result_free(vdb_result *r)
{
    if (!r) return;
    free(r->counts);
    free(r->vectors);
    free(r->distances);
    free(r->id_off);
    free(r->meta_off);
    free(r->doc_off);
    free(r->id_len);
    free(r->meta_len);
    free(r->doc_len);
    free(r->arena);
    free(r);
}

int vdb_result_build(const vdb_collection *c, const int64_t *rows, size_t n, const float *dists, unsigned include,
                     vdb_result **out)
{
    size_t d = (size_t)c->dim, bytes = 0;
    int with_meta = (include & (VDB_INC_METAS | VDB_INC_DOCS)) != 0;
    if (with_meta) {
        int rc = vdb_coll_meta_load(c);
        if (rc) return rc;
    }
    if (include & VDB_INC_VECTORS)
        for (size_t i = 0; i < n; i++) {
            int rc = vdb_coll_verify_rows(c, (size_t)rows[i], (size_t)rows[i] + 1);
            if (rc) return rc;
        }
    vdb_result *r = calloc(1, sizeof *r);
    if (!r) goto nomem;
    r->n = n;
    r->dim = c->dim;
    size_t cnt = n ? n : 1;
    r->id_off = malloc(cnt * sizeof(uint64_t));
    r->meta_off = malloc(cnt * sizeof(uint64_t));
    r->doc_off = malloc(cnt * sizeof(uint64_t));
    r->id_len = malloc(cnt * sizeof(uint32_t));
    r->meta_len = malloc(cnt * sizeof(uint32_t));
    r->doc_len = malloc(cnt * sizeof(uint32_t));
    if (!r->id_off || !r->meta_off || !r->doc_off || !r->id_len || !r->meta_len || !r->doc_len) goto nomem;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *mb = NULL;
        const char *doc = NULL;
        size_t ml = 0, dl = 0;
        if (with_meta) vdb_meta_get(c->meta, (size_t)rows[i], &mb, &ml, &doc, &dl);
        bytes += c->id_len[rows[i]];
        if (include & VDB_INC_METAS) bytes += ml;
        if (include & VDB_INC_DOCS) bytes += dl;
    }
    if (!(r->arena = malloc(bytes ? bytes : 1))) goto nomem;
    if ((include & VDB_INC_VECTORS) && !(r->vectors = malloc(cnt * (d ? d : 1) * sizeof(float)))) goto nomem;
    if ((include & VDB_INC_DISTANCES) && !(r->distances = malloc(cnt * sizeof(float)))) goto nomem;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t row = (size_t)rows[i];
        const uint8_t *mb = NULL;
        const char *doc = NULL;
        size_t ml = 0, dl = 0;
        if (with_meta) vdb_meta_get(c->meta, row, &mb, &ml, &doc, &dl);
        r->id_off[i] = pos;
        r->id_len[i] = c->id_len[row];
        memcpy(r->arena + pos, c->ids.data + c->id_off[row], c->id_len[row]);
        pos += c->id_len[row];
        r->meta_len[i] = r->doc_len[i] = VDB_NONE32;
        if ((include & VDB_INC_METAS) && mb) {
            r->meta_off[i] = pos;
            r->meta_len[i] = (uint32_t)ml;
            memcpy(r->arena + pos, mb, ml);
            pos += ml;
        }
        if ((include & VDB_INC_DOCS) && doc) {
            r->doc_off[i] = pos;
            r->doc_len[i] = (uint32_t)dl;
            memcpy(r->arena + pos, doc, dl);
            pos += dl;
        }
        if (r->vectors) memcpy(r->vectors + i * d, row_vector(c, row), d * sizeof(float));
        if (r->distances) r->distances[i] = dists ? dists[i] : 0.0f;
    }
    *out = r;
    return VDB_OK;
nomem:
    vdb_result_free(r);
    return vdb_set_error(VDB_ENOMEM, "out of memory building a result of %zu records", n);
}
