/* vdb_filter — compile (validate) a filter program, evaluate it into a row bitmap. See vdb_filter.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem */
#endif
#include "vdb_filter.h"

#include <stdlib.h>
#include <string.h>

#include "vdb_bytes.h"
#include "vdb_error.h"

/* An operand: a scalar in the metadata tags' terms. Strings point into the filter's copy of the
 * program. */
typedef struct {
    uint8_t tag;
    int64_t i; /* INT value, BOOL 0/1 */
    double d;  /* FLOAT value */
    const uint8_t *s;
    uint32_t s_len;
} vdb_fval;

typedef struct {
    uint8_t kind;
    uint32_t n_children; /* AND / OR: n; NOT: 1 */
    uint32_t end;        /* index one past this node's subtree (children follow the node) */
    const uint8_t *key;
    uint32_t key_len;
    vdb_fval v;          /* EQ, ranges, CONTAINS; DOC_CONTAINS / DOC_REGEX use v.s (needle / pattern) */
    uint32_t set_off;    /* IN: values are vals[set_off .. set_off + set_n) */
    uint32_t set_n;
    uint32_t regex_index;
} vdb_fnode;

struct vdb_filter {
    uint8_t *data; /* copy of the program: keys and strings point into it */
    vdb_fnode *nodes;
    size_t n_nodes, cap_nodes;
    vdb_fval *vals;
    size_t n_vals, cap_vals;
    size_t n_regex;
    int depth; /* deepest node level (root = 0) */
    vdb_regex_fn regex_fn;
    void *regex_ctx;
};

/* ---------------------------------------------------------------------------------------------
 * Compile: a recursive-descent reader over the untrusted bytes. */

typedef struct {
    vdb_filter *f;
    vdb_reader r;
    const uint8_t *base;
} vdb_fparser;

static int perr(const vdb_fparser *p, const char *what)
{
    return vdb_set_error(VDB_EINVAL, "invalid filter program: %s at byte offset %zu", what,
                         (size_t)(p->r.p - p->base));
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) {
        if (cap2 > SIZE_MAX / 2 / elem) return -1;
        cap2 *= 2;
    }
    void *p = realloc(*arr, cap2 * elem);
    if (!p) return -1;
    *arr = p;
    *cap = cap2;
    return 0;
}

static int read_bare(vdb_fparser *p, uint8_t tag, vdb_fval *v)
{
    uint64_t u;
    uint8_t b;
    v->tag = tag;
    switch (tag) {
    case VDB_TAG_STR:
        if (vdb_take_u32(&p->r, &v->s_len) || vdb_take(&p->r, v->s_len, &v->s))
            return perr(p, "truncated string value");
        return VDB_OK;
    case VDB_TAG_INT:
        if (vdb_take_u64(&p->r, &u)) return perr(p, "truncated int value");
        v->i = (int64_t)u;
        return VDB_OK;
    case VDB_TAG_FLOAT:
        if (vdb_take_u64(&p->r, &u)) return perr(p, "truncated float value");
        memcpy(&v->d, &u, sizeof v->d);
        if (v->d != v->d) return perr(p, "NaN operand");
        return VDB_OK;
    case VDB_TAG_BOOL:
        if (vdb_take_u8(&p->r, &b)) return perr(p, "truncated bool value");
        if (b > 1) return perr(p, "bool value not 0 or 1");
        v->i = b;
        return VDB_OK;
    default:
        return perr(p, "unknown value tag");
    }
}

static int read_key(vdb_fparser *p, vdb_fnode *n)
{
    if (vdb_take_u32(&p->r, &n->key_len) || vdb_take(&p->r, n->key_len, &n->key))
        return perr(p, "truncated key");
    if (n->key_len == 0) return perr(p, "empty key");
    return VDB_OK;
}

static int parse_node(vdb_fparser *p, int depth)
{
    vdb_filter *f = p->f;
    vdb_fnode n;
    int rc;
    memset(&n, 0, sizeof n);
    if (depth >= VDB_FILTER_MAX_DEPTH) return perr(p, "nesting deeper than the limit");
    if (depth > f->depth) f->depth = depth;
    if (vdb_take_u8(&p->r, &n.kind)) return perr(p, "truncated node");
    if (f->n_nodes >= UINT32_MAX - 1) return perr(p, "too many nodes");
    if (grow((void **)&f->nodes, &f->cap_nodes, f->n_nodes + 1, sizeof *f->nodes))
        return vdb_set_error(VDB_ENOMEM, "out of memory compiling a filter");
    size_t self = f->n_nodes++;

    switch (n.kind) {
    case VDB_FK_AND:
    case VDB_FK_OR:
        if (vdb_take_u32(&p->r, &n.n_children)) return perr(p, "truncated child count");
        if (n.n_children < 2) return perr(p, "AND/OR with fewer than 2 children");
        if (n.n_children > p->r.left) return perr(p, "child count larger than the program");
        for (uint32_t i = 0; i < n.n_children; i++)
            if ((rc = parse_node(p, depth + 1)) != VDB_OK) return rc;
        break;
    case VDB_FK_NOT:
        n.n_children = 1;
        if ((rc = parse_node(p, depth + 1)) != VDB_OK) return rc;
        break;
    case VDB_FK_EQ:
    case VDB_FK_LT:
    case VDB_FK_LTE:
    case VDB_FK_GT:
    case VDB_FK_GTE:
    case VDB_FK_CONTAINS: {
        uint8_t tag;
        if ((rc = read_key(p, &n)) != VDB_OK) return rc;
        if (vdb_take_u8(&p->r, &tag)) return perr(p, "truncated value");
        if ((rc = read_bare(p, tag, &n.v)) != VDB_OK) return rc;
        if (n.kind >= VDB_FK_LT && n.kind <= VDB_FK_GTE && tag != VDB_TAG_INT && tag != VDB_TAG_FLOAT)
            return perr(p, "range comparison with a non-numeric operand");
        break;
    }
    case VDB_FK_IN: {
        uint8_t tag;
        uint32_t count;
        if ((rc = read_key(p, &n)) != VDB_OK) return rc;
        if (vdb_take_u8(&p->r, &tag) || vdb_take_u32(&p->r, &count)) return perr(p, "truncated IN list");
        if (tag < VDB_TAG_STR || tag > VDB_TAG_BOOL) return perr(p, "unknown IN value tag");
        if (count == 0) return perr(p, "empty IN list");
        if (count > p->r.left) return perr(p, "IN count larger than the program");
        if (f->n_vals > UINT32_MAX - count) return perr(p, "too many values");
        if (grow((void **)&f->vals, &f->cap_vals, f->n_vals + count, sizeof *f->vals))
            return vdb_set_error(VDB_ENOMEM, "out of memory compiling a filter");
        n.set_off = (uint32_t)f->n_vals;
        n.set_n = count;
        for (uint32_t i = 0; i < count; i++) {
            memset(&f->vals[f->n_vals], 0, sizeof f->vals[0]);
            if ((rc = read_bare(p, tag, &f->vals[f->n_vals])) != VDB_OK) return rc;
            f->n_vals++;
        }
        break;
    }
    case VDB_FK_DOC_CONTAINS:
        if (vdb_take_u32(&p->r, &n.v.s_len) || vdb_take(&p->r, n.v.s_len, &n.v.s))
            return perr(p, "truncated document substring");
        n.v.tag = VDB_TAG_STR;
        break;
    case VDB_FK_DOC_REGEX:
        if (vdb_take_u32(&p->r, &n.regex_index)) return perr(p, "truncated regex node");
        if (n.regex_index != f->n_regex) return perr(p, "regex index out of prefix order");
        if (vdb_take_u32(&p->r, &n.v.s_len) || vdb_take(&p->r, n.v.s_len, &n.v.s))
            return perr(p, "truncated regex pattern");
        n.v.tag = VDB_TAG_STR;
        f->n_regex++;
        break;
    default:
        p->r.p--; /* report the kind byte's offset */
        return perr(p, "unknown node kind");
    }
    n.end = (uint32_t)f->n_nodes;
    f->nodes[self] = n; /* f->nodes may have moved while the children were parsed */
    return VDB_OK;
}

int vdb_filter_compile(const uint8_t *prog, size_t len, vdb_filter **out)
{
    int rc = VDB_OK;
    vdb_filter *f = NULL;
    vdb_fparser p;
    const uint8_t *magic;
    uint8_t version = 0;

    *out = NULL;
    if (!prog && len) return vdb_set_error(VDB_EINVAL, "filter program is NULL");
    f = calloc(1, sizeof *f);
    if (!f) return vdb_set_error(VDB_ENOMEM, "out of memory compiling a filter");
    f->data = malloc(len ? len : 1);
    if (!f->data) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory compiling a filter");
        goto cleanup;
    }
    if (len) memcpy(f->data, prog, len);
    p.f = f;
    p.base = f->data;
    p.r.p = f->data;
    p.r.left = len;
    if (vdb_take(&p.r, 4, &magic) || memcmp(magic, "VDBF", 4) != 0) {
        rc = vdb_set_error(VDB_EINVAL, "invalid filter program: missing the VDBF header");
        goto cleanup;
    }
    if (vdb_take_u8(&p.r, &version) || version != VDB_FILTER_VERSION) {
        rc = vdb_set_error(VDB_EINVAL, "invalid filter program: version %u, expected %d", (unsigned)version,
                           VDB_FILTER_VERSION);
        goto cleanup;
    }
    if ((rc = parse_node(&p, 0)) != VDB_OK) goto cleanup;
    if (p.r.left != 0) {
        rc = perr(&p, "trailing bytes after the root node");
        goto cleanup;
    }
    *out = f;
    f = NULL;
cleanup:
    vdb_filter_free(f);
    return rc;
}

void vdb_filter_free(vdb_filter *f)
{
    if (!f) return;
    free(f->data);
    free(f->nodes);
    free(f->vals);
    free(f);
}

size_t vdb_filter_regex_count(const vdb_filter *f) { return f->n_regex; }

const char *vdb_filter_regex_pattern(const vdb_filter *f, size_t index, size_t *len)
{
    for (size_t i = 0; i < f->n_nodes; i++) {
        const vdb_fnode *n = &f->nodes[i];
        if (n->kind == VDB_FK_DOC_REGEX && n->regex_index == index) {
            *len = n->v.s_len;
            return (const char *)n->v.s;
        }
    }
    *len = 0;
    return NULL;
}

void vdb_filter_set_regex(vdb_filter *f, vdb_regex_fn fn, void *ctx)
{
    f->regex_fn = fn;
    f->regex_ctx = ctx;
}

/* ---------------------------------------------------------------------------------------------
 * Comparing values. Numbers compare exactly across int and float (no rounding of either side):
 * the result is -1, 0, 1 for a <, ==, > b, or 2 when unordered (a NaN field value). */

enum { CMP_UNORDERED = 2 };

static int cmp_i64_f64(int64_t a, double b)
{
    if (b != b) return CMP_UNORDERED;
    if (b >= 9223372036854775808.0) return -1;  /* 2^63: above every int64 */
    if (b < -9223372036854775808.0) return 1;
    int64_t t = (int64_t)b; /* in range: truncation toward zero, exact */
    if (a != t) return a < t ? -1 : 1;
    double frac = b - (double)t; /* (double)t == trunc(b) exactly */
    return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

static int cmp_f64(double a, double b)
{
    if (a < b) return -1;
    if (a > b) return 1;
    if (a == b) return 0;
    return CMP_UNORDERED;
}

/* A field value: tag plus where its payload starts (bounded by end). */
static int num_cmp(uint8_t tag, const uint8_t *p, const vdb_fval *op)
{
    uint64_t u = vdb_get_u64(p);
    if (tag == VDB_TAG_INT) {
        int64_t a = (int64_t)u;
        if (op->tag == VDB_TAG_INT) return a < op->i ? -1 : a > op->i ? 1 : 0;
        return cmp_i64_f64(a, op->d);
    }
    double a;
    memcpy(&a, &u, sizeof a);
    if (op->tag == VDB_TAG_FLOAT) return cmp_f64(a, op->d);
    int c = cmp_i64_f64(op->i, a);
    return c == CMP_UNORDERED ? c : -c;
}

/* Equality of the scalar at p (tag, `left` bytes available) with op. */
static int scalar_eq(uint8_t tag, const uint8_t *p, size_t left, const vdb_fval *op)
{
    switch (op->tag) {
    case VDB_TAG_STR: {
        if (tag != VDB_TAG_STR || left < 4) return 0;
        uint32_t n = vdb_get_u32(p);
        return n == op->s_len && n <= left - 4 && memcmp(p + 4, op->s, n) == 0;
    }
    case VDB_TAG_BOOL:
        return tag == VDB_TAG_BOOL && left >= 1 && p[0] == (uint8_t)op->i;
    default: /* INT / FLOAT */
        return (tag == VDB_TAG_INT || tag == VDB_TAG_FLOAT) && left >= 8 && num_cmp(tag, p, op) == 0;
    }
}

/* Bytes taken by one bare scalar of tag at p, or SIZE_MAX when it does not fit in left. */
static size_t bare_size(uint8_t tag, const uint8_t *p, size_t left)
{
    size_t need;
    switch (tag) {
    case VDB_TAG_STR:
        if (left < 4) return SIZE_MAX;
        need = 4 + (size_t)vdb_get_u32(p);
        break;
    case VDB_TAG_INT:
    case VDB_TAG_FLOAT: need = 8; break;
    case VDB_TAG_BOOL: need = 1; break;
    default: return SIZE_MAX;
    }
    return need <= left ? need : SIZE_MAX;
}

/* Finds key in a stored metadata blob (see vdb_meta.h). Stored blobs were validated on the way in;
 * the walk still stays in bounds, treating anything malformed as "key absent". */
static int blob_find(const uint8_t *b, size_t len, const uint8_t *key, uint32_t klen, uint8_t *tag,
                     const uint8_t **val, size_t *left)
{
    if (!b || len < 4) return 0;
    uint32_t n = vdb_get_u32(b);
    const uint8_t *p = b + 4, *end = b + len;
    for (uint32_t e = 0; e < n; e++) {
        if ((size_t)(end - p) < 4) return 0;
        uint32_t kl = vdb_get_u32(p);
        p += 4;
        if ((size_t)(end - p) < (size_t)kl + 1) return 0;
        const uint8_t *k = p;
        p += kl;
        uint8_t t = *p++;
        if (kl == klen && memcmp(k, key, klen) == 0) {
            *tag = t;
            *val = p;
            *left = (size_t)(end - p);
            return 1;
        }
        if (t & VDB_TAG_LIST) {
            if ((size_t)(end - p) < 4) return 0;
            uint32_t count = vdb_get_u32(p);
            p += 4;
            for (uint32_t i = 0; i < count; i++) {
                size_t s = bare_size((uint8_t)(t & 0x0f), p, (size_t)(end - p));
                if (s == SIZE_MAX) return 0;
                p += s;
            }
        } else {
            size_t s = bare_size(t, p, (size_t)(end - p));
            if (s == SIZE_MAX) return 0;
            p += s;
        }
    }
    return 0;
}

/* Does the metadata blob of one row satisfy leaf n? */
static int leaf_match(const vdb_filter *f, const vdb_fnode *n, const uint8_t *blob, size_t blob_len)
{
    uint8_t tag;
    const uint8_t *p;
    size_t left;
    if (!blob_find(blob, blob_len, n->key, n->key_len, &tag, &p, &left)) return 0;
    switch (n->kind) {
    case VDB_FK_EQ: return scalar_eq(tag, p, left, &n->v);
    case VDB_FK_IN:
        for (uint32_t i = 0; i < n->set_n; i++)
            if (scalar_eq(tag, p, left, &f->vals[n->set_off + i])) return 1;
        return 0;
    case VDB_FK_CONTAINS: {
        if (!(tag & VDB_TAG_LIST) || left < 4) return 0;
        uint8_t et = (uint8_t)(tag & 0x0f);
        uint32_t count = vdb_get_u32(p);
        p += 4;
        left -= 4;
        for (uint32_t i = 0; i < count; i++) {
            size_t s = bare_size(et, p, left);
            if (s == SIZE_MAX) return 0;
            if (scalar_eq(et, p, s, &n->v)) return 1;
            p += s;
            left -= s;
        }
        return 0;
    }
    default: { /* ranges */
        if ((tag != VDB_TAG_INT && tag != VDB_TAG_FLOAT) || left < 8) return 0;
        int c = num_cmp(tag, p, &n->v);
        if (c == CMP_UNORDERED) return 0;
        switch (n->kind) {
        case VDB_FK_LT: return c < 0;
        case VDB_FK_LTE: return c <= 0;
        case VDB_FK_GT: return c > 0;
        default: return c >= 0;
        }
    }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Evaluation. eval_node(node, care, out) computes the node's value for the rows set in `care` and
 * writes it to `out` (bits outside care are 0): an AND narrows the care set child by child and an
 * OR drops rows already decided, so expensive leaves (regex, blob walks) see only rows that can
 * still change the answer. Each depth level owns two scratch bitmaps. */

typedef struct {
    const vdb_filter *f;
    const vdb_meta *m;
    size_t n_rows, words;
    uint64_t **scratch; /* 2 per depth level, allocated lazily */
} vdb_feval;

static int any_bit(const uint64_t *b, size_t words)
{
    for (size_t w = 0; w < words; w++)
        if (b[w]) return 1;
    return 0;
}

static int scratch_get(vdb_feval *e, size_t slot, uint64_t **out)
{
    if (!e->scratch[slot]) {
        e->scratch[slot] = malloc(e->words * sizeof(uint64_t));
        if (!e->scratch[slot]) return vdb_set_error(VDB_ENOMEM, "out of memory evaluating a filter");
    }
    *out = e->scratch[slot];
    return VDB_OK;
}

static int eval_regex(vdb_feval *e, const vdb_fnode *n, const uint64_t *care, uint64_t *out)
{
    enum { B = VDB_FILTER_REGEX_BATCH };
    int rc = VDB_OK;
    const char **docs = malloc(B * sizeof *docs);
    size_t *lens = malloc(B * sizeof *lens);
    size_t *rows = malloc(B * sizeof *rows);
    uint8_t *match = malloc(B);
    size_t k = 0;

    if (!e->f->regex_fn) {
        rc = vdb_set_error(VDB_EINVAL, "filter has $regex conditions but no regex matcher was installed");
        goto cleanup;
    }
    if (!docs || !lens || !rows || !match) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory evaluating a regex filter");
        goto cleanup;
    }
    for (size_t w = 0; w < e->words; w++) {
        out[w] = 0;
        for (uint64_t bits = care[w]; bits; bits &= bits - 1) {
            size_t r = w * 64 + (size_t)__builtin_ctzll(bits);
            const uint8_t *meta;
            size_t meta_len, doc_len;
            const char *doc;
            vdb_meta_get(e->m, r, &meta, &meta_len, &doc, &doc_len);
            if (!doc) continue;
            docs[k] = doc;
            lens[k] = doc_len;
            rows[k] = r;
            if (++k == B) {
                if ((rc = e->f->regex_fn(e->f->regex_ctx, n->regex_index, k, docs, lens, match)) != VDB_OK)
                    goto cleanup;
                for (size_t i = 0; i < k; i++)
                    if (match[i]) out[rows[i] / 64] |= (uint64_t)1 << (rows[i] % 64);
                k = 0;
            }
        }
    }
    if (k) {
        if ((rc = e->f->regex_fn(e->f->regex_ctx, n->regex_index, k, docs, lens, match)) != VDB_OK)
            goto cleanup;
        for (size_t i = 0; i < k; i++)
            if (match[i]) out[rows[i] / 64] |= (uint64_t)1 << (rows[i] % 64);
    }
cleanup:
    free(docs);
    free(lens);
    free(rows);
    free(match);
    return rc;
}

static int eval_node(vdb_feval *e, size_t idx, int depth, const uint64_t *care, uint64_t *out)
{
    const vdb_fnode *n = &e->f->nodes[idx];
    size_t words = e->words;
    int rc;

    switch (n->kind) {
    case VDB_FK_AND: {
        uint64_t *tmp = NULL;
        if ((rc = scratch_get(e, 2 * (size_t)depth, &tmp)) != VDB_OK) return rc;
        memcpy(out, care, words * sizeof *out);
        size_t c = idx + 1;
        for (uint32_t i = 0; i < n->n_children; i++) {
            if (!any_bit(out, words)) break;
            if ((rc = eval_node(e, c, depth + 1, out, tmp)) != VDB_OK) return rc;
            for (size_t w = 0; w < words; w++) out[w] &= tmp[w];
            c = e->f->nodes[c].end;
        }
        return VDB_OK;
    }
    case VDB_FK_OR: {
        uint64_t *tmp = NULL, *undecided = NULL;
        if ((rc = scratch_get(e, 2 * (size_t)depth, &tmp)) != VDB_OK) return rc;
        if ((rc = scratch_get(e, 2 * (size_t)depth + 1, &undecided)) != VDB_OK) return rc;
        memcpy(undecided, care, words * sizeof *undecided);
        memset(out, 0, words * sizeof *out);
        size_t c = idx + 1;
        for (uint32_t i = 0; i < n->n_children; i++) {
            if (!any_bit(undecided, words)) break;
            if ((rc = eval_node(e, c, depth + 1, undecided, tmp)) != VDB_OK) return rc;
            for (size_t w = 0; w < words; w++) {
                uint64_t hit = tmp[w] & undecided[w];
                out[w] |= hit;
                undecided[w] &= ~hit;
            }
            c = e->f->nodes[c].end;
        }
        return VDB_OK;
    }
    case VDB_FK_NOT:
        if ((rc = eval_node(e, idx + 1, depth + 1, care, out)) != VDB_OK) return rc;
        for (size_t w = 0; w < words; w++) out[w] = care[w] & ~out[w];
        return VDB_OK;
    case VDB_FK_DOC_REGEX:
        return eval_regex(e, n, care, out);
    default:
        break;
    }

    /* Leaves over metadata or documents, row by row over the care set. */
    for (size_t w = 0; w < words; w++) {
        uint64_t res = 0;
        for (uint64_t bits = care[w]; bits; bits &= bits - 1) {
            int b = __builtin_ctzll(bits);
            size_t r = w * 64 + (size_t)b;
            const uint8_t *meta;
            size_t meta_len, doc_len;
            const char *doc;
            int hit;
            vdb_meta_get(e->m, r, &meta, &meta_len, &doc, &doc_len);
            if (n->kind == VDB_FK_DOC_CONTAINS)
                hit = doc && (n->v.s_len == 0 || memmem(doc, doc_len, n->v.s, n->v.s_len) != NULL);
            else
                hit = leaf_match(e->f, n, meta, meta_len);
            if (hit) res |= (uint64_t)1 << b;
        }
        out[w] = res;
    }
    return VDB_OK;
}

int vdb_filter_eval(const vdb_filter *f, const vdb_meta *m, size_t n_rows, uint64_t *bitmap)
{
    int rc = VDB_OK;
    vdb_feval e;
    uint64_t *all = NULL;

    memset(&e, 0, sizeof e);
    if (n_rows > vdb_meta_rows(m))
        return vdb_set_error(VDB_EINVAL, "filter evaluation over %zu rows, but the metadata holds %zu", n_rows,
                             vdb_meta_rows(m));
    if (n_rows == 0) return VDB_OK;
    e.f = f;
    e.m = m;
    e.n_rows = n_rows;
    e.words = (n_rows + 63) / 64;
    e.scratch = calloc(2 * ((size_t)f->depth + 1), sizeof *e.scratch);
    all = malloc(e.words * sizeof *all);
    if (!e.scratch || !all) {
        rc = vdb_set_error(VDB_ENOMEM, "out of memory evaluating a filter");
        goto cleanup;
    }
    memset(all, 0xff, e.words * sizeof *all);
    if (n_rows % 64) all[e.words - 1] = ((uint64_t)1 << (n_rows % 64)) - 1;
    rc = eval_node(&e, 0, 0, all, bitmap);
cleanup:
    if (e.scratch)
        for (size_t i = 0; i < 2 * ((size_t)f->depth + 1); i++) free(e.scratch[i]);
    free(e.scratch);
    free(all);
    return rc;
}
