/* vdb_logrec — the byte codec of one write record (the log's payload): encode a batch, decode and
 * check one. See vdb_logrec.h. */
#include "vdb_logrec.h"

#include <stdlib.h>
#include <string.h>

#include "vdb_error.h"
#include "vdb_store.h"

static int logrec_put_strings(vdb_buf *out, const char *const *s, const uint32_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (vdb_buf_u32(out, s[i] ? lens[i] : VDB_NONE32)) return -1;
        if (s[i] && vdb_buf_append(out, s[i], lens[i])) return -1;
    }
    return 0;
}

/* *vec_off: where the vectors start in out (they are applied from there: see write_locked). */
int vdb_logrec_encode(int op, const vdb_batch *b, vdb_buf *out, size_t *vec_off)
{
    uint8_t head[14];
    vdb_batch ids_only = {b->n, 0, b->ids, b->id_lens, NULL, NULL, NULL, NULL, NULL};
    if (op == VDB_OP_DELETE) b = &ids_only; /* a delete applies ids only: log nothing unchecked */
    head[0] = (uint8_t)op;
    vdb_put_u32(head + 1, (uint32_t)b->n);
    vdb_put_u64(head + 5, b->vectors ? (uint64_t)b->dim : 0);
    head[13] = (uint8_t)((b->vectors ? 1 : 0) | (b->metas ? 2 : 0) | (b->docs ? 4 : 0));
    if (vdb_buf_append(out, head, sizeof head) || logrec_put_strings(out, b->ids, b->id_lens, b->n)) goto nomem;
    *vec_off = out->len;
    if ((b->vectors && vdb_buf_append(out, b->vectors, b->n * (size_t)b->dim * sizeof(float))) ||
        (b->metas && logrec_put_strings(out, (const char *const *)b->metas, b->meta_lens, b->n)) ||
        (b->docs && logrec_put_strings(out, b->docs, b->doc_lens, b->n)))
        goto nomem;
    return VDB_OK;
nomem:
    return vdb_set_error(VDB_ENOMEM, "out of memory encoding a write of %zu records", b->n);
}


void vdb_logrec_free(vdb_logrec *w)
{
    free(w->ids);
    free(w->metas);
    free(w->docs);
    free(w->id_lens);
    free(w->meta_lens);
    free(w->doc_lens);
    free(w->vectors);
}

/* text: the bytes must be valid UTF-8 (ids, documents); metadata blobs are checked on their own. */
int vdb_logrec_take_strings(vdb_reader *r, size_t n, const char **s, uint32_t *lens, int allow_none, int text)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = NULL;
        if (vdb_take_u32(r, &lens[i])) return -1;
        if (lens[i] == VDB_NONE32) {
            if (!allow_none) return -1;
            s[i] = NULL;
            lens[i] = 0;
            continue;
        }
        if (vdb_take(r, lens[i], &p) || (text && !vdb_utf8_valid(p, lens[i]))) return -1;
        s[i] = (const char *)p;
    }
    return 0;
}

int vdb_logrec_decode(const uint8_t *payload, size_t len, vdb_logrec *w)
{
    vdb_reader r = {payload, len};
    const uint8_t *head, *vec;
    memset(w, 0, sizeof *w);
    if (vdb_take(&r, 14, &head)) return -1;
    w->op = head[0];
    size_t n = vdb_get_u32(head + 1);
    uint64_t dim = vdb_get_u64(head + 5);
    uint8_t flags = head[13];
    if (n > len || dim > VDB_MAX_DIM || ((flags & 1) && dim == 0)) return -1;
    w->ids = calloc(n + 1, sizeof *w->ids);
    w->id_lens = calloc(n + 1, sizeof *w->id_lens);
    if (!w->ids || !w->id_lens || vdb_logrec_take_strings(&r, n, w->ids, w->id_lens, 0, 1)) return -1;
    if (flags & 1) {
        size_t bytes = n * (size_t)dim * sizeof(float);
        if (bytes / sizeof(float) / (dim ? dim : 1) != n || vdb_take(&r, bytes, &vec)) return -1;
        if (!(w->vectors = malloc(bytes ? bytes : 1))) return -1;
        memcpy(w->vectors, vec, bytes);
    }
    if (flags & 2) {
        w->metas = calloc(n + 1, sizeof *w->metas);
        w->meta_lens = calloc(n + 1, sizeof *w->meta_lens);
        if (!w->metas || !w->meta_lens || vdb_logrec_take_strings(&r, n, w->metas, w->meta_lens, 1, 0)) return -1;
    }
    if (flags & 4) {
        w->docs = calloc(n + 1, sizeof *w->docs);
        w->doc_lens = calloc(n + 1, sizeof *w->doc_lens);
        if (!w->docs || !w->doc_lens || vdb_logrec_take_strings(&r, n, w->docs, w->doc_lens, 1, 1)) return -1;
    }
    if (r.left) return -1;
    w->b = (vdb_batch){n, (int64_t)dim, w->ids, w->id_lens, w->vectors, (const uint8_t *const *)w->metas,
                       w->meta_lens, w->docs, w->doc_lens};
    return 0;
}
