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
 * Leaves over typed columns (see vdb_meta.h). Each leaf is first resolved against the store into a
 * predicate on (tag, value): string operands become interned ids (an operand no value holds matches
 * nothing), numeric operands become one closed interval over int64 values and one over doubles
 * (exact, so the int/float rule of the blob path holds without per-row conversions), bools a mask.
 * Then a loop over the column: a dense column in one sequential pass, 64 rows per output word; a
 * sparse log entry by entry (the last entry of a row wins). */

typedef struct {
    unsigned tags;          /* bits (vdb_meta_tag_bit) of the value tags that can match */
    int is_set;             /* IN: test membership rather than intervals */
    int is_list;            /* CONTAINS: match the elements of LIST values */
    uint64_t str_id;        /* EQ on strings */
    uint64_t *ids;          /* IN on strings: sorted unique ids (n_ids), or ... */
    size_t n_ids;
    uint64_t *id_bits;      /* ... a bitmap over ids [id_min, id_min + id_span) when they are many */
    uint64_t id_min, id_span;
    int64_t ilo, ihi;       /* INT values in [ilo, ihi] */
    double flo, fhi;        /* FLOAT values in [flo, fhi] (NaN never) */
    int64_t *iset;          /* IN on numbers: sorted INT values and FLOAT values that match */
    size_t n_iset;
    uint64_t *int_bits;     /* IN on numbers: INT values as a bitmap over [int_min, int_min + int_span) */
    uint64_t int_min, int_span;
    double *fset;
    size_t n_fset;
    unsigned bool_mask;     /* BOOL value v matches when bit v is set */
    const uint64_t *pool;   /* lists */
} vdb_leafm;

static void leafm_free(vdb_leafm *L)
{
    free(L->ids);
    free(L->id_bits);
    free(L->iset);
    free(L->fset);
    free(L->int_bits);
}

enum { SET_BITMAP_MAX = 1 << 24 }; /* a set spanning up to 16M values is tested with a 2 MB bitmap */

/* Bitmap over [min, min + span) of sorted values a[0..n) (as uint64 offsets); NULL if too wide. */
static int set_bitmap(const uint64_t *a, size_t n, uint64_t min, uint64_t span, uint64_t **out)
{
    *out = NULL;
    if (span > SET_BITMAP_MAX) return VDB_OK;
    if (!(*out = calloc((size_t)(span + 63) / 64, sizeof **out)))
        return vdb_set_error(VDB_ENOMEM, "out of memory evaluating a filter");
    for (size_t i = 0; i < n; i++) {
        uint64_t b = a[i] - min;
        (*out)[b / 64] |= (uint64_t)1 << (b % 64);
    }
    return VDB_OK;
}

/* Is offset b in the bitmap of span bits? Branch-free. */
static inline int bits_has(const uint64_t *bits, uint64_t span, uint64_t b)
{
    uint64_t in = b < span;
    b = in ? b : 0;
    return (int)(in & (bits[b / 64] >> (b % 64)));
}

static double f64_of(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Neighbouring doubles of a non-NaN y below / above it (the IEEE bit order trick). */
static double f64_prev(double y)
{
    uint64_t u;
    if (y == 0) return -f64_of(1); /* below both zeros: the negative smallest subnormal */
    memcpy(&u, &y, sizeof u);
    u = y > 0 ? u - 1 : u + 1;
    return f64_of(u);
}

static double f64_next(double y) { return -f64_prev(-y); }

/* y as an int64 when it is integral and in range. */
static int i64_of_f64(double y, int64_t *out)
{
    if (!(y >= -9223372036854775808.0 && y < 9223372036854775808.0)) return 0;
    int64_t t = (int64_t)y;
    if ((double)t != y) return 0;
    *out = t;
    return 1;
}

/* x as a double when exactly representable. */
static int f64_of_i64(int64_t x, double *out)
{
    double d = (double)x;
    if (d >= 9223372036854775808.0 || (int64_t)d != x) return 0;
    *out = d;
    return 1;
}

enum { IV_NONE = 0, IV_SOME = 1 };

/* The INT values a (kind, operand) comparison accepts, as [*lo, *hi]. */
static int int_interval(uint8_t kind, const vdb_fval *op, int64_t *lo, int64_t *hi)
{
    int64_t fl, ce;
    *lo = INT64_MIN;
    *hi = INT64_MAX;
    if (op->tag == VDB_TAG_INT) {
        fl = ce = op->i;
    } else {
        double y = op->d;
        if (y >= 9223372036854775808.0) /* above every int64 */
            return kind == VDB_FK_LT || kind == VDB_FK_LTE ? IV_SOME : IV_NONE;
        if (y < -9223372036854775808.0)
            return kind == VDB_FK_GT || kind == VDB_FK_GTE ? IV_SOME : IV_NONE;
        int64_t t = (int64_t)y; /* truncation, exact in range */
        fl = (double)t > y ? t - 1 : t;
        ce = (double)t < y ? t + 1 : t;
    }
    switch (kind) {
    case VDB_FK_EQ:
        if (fl != ce) return IV_NONE;
        *lo = *hi = fl;
        return IV_SOME;
    case VDB_FK_LT:
        if (ce == INT64_MIN) return IV_NONE;
        *hi = ce - 1;
        return IV_SOME;
    case VDB_FK_LTE: *hi = fl; return IV_SOME;
    case VDB_FK_GT:
        if (fl == INT64_MAX) return IV_NONE;
        *lo = fl + 1;
        return IV_SOME;
    default: *lo = ce; return IV_SOME; /* GTE */
    }
}

/* The FLOAT values a (kind, operand) comparison accepts, as [*lo, *hi]. */
static int f64_interval(uint8_t kind, const vdb_fval *op, double *lo, double *hi)
{
    double y;
    int c = 0; /* sign of (exact operand - y) */
    *lo = -1.0 / 0.0;
    *hi = 1.0 / 0.0;
    if (op->tag == VDB_TAG_FLOAT) {
        y = op->d;
    } else {
        y = (double)op->i;
        if (y >= 9223372036854775808.0) {
            c = -1; /* rounded up to 2^63 */
        } else {
            int64_t t = (int64_t)y;
            c = op->i < t ? -1 : op->i > t ? 1 : 0;
        }
    }
    switch (kind) {
    case VDB_FK_EQ:
        if (c) return IV_NONE;
        *lo = *hi = y;
        return IV_SOME;
    case VDB_FK_LT: /* d < x */
        if (c == 0 && y == -1.0 / 0.0) return IV_NONE;
        *hi = c > 0 ? y : f64_prev(y);
        return IV_SOME;
    case VDB_FK_LTE: *hi = c < 0 ? f64_prev(y) : y; return IV_SOME;
    case VDB_FK_GT:
        if (c == 0 && y == 1.0 / 0.0) return IV_NONE;
        *lo = c < 0 ? y : f64_next(y);
        return IV_SOME;
    default: *lo = c > 0 ? f64_next(y) : y; return IV_SOME; /* GTE */
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_f64s(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Resolves leaf n against the store. VDB_OK or VDB_ENOMEM. */
static int leafm_init(vdb_leafm *L, const vdb_filter *f, const vdb_fnode *n, const vdb_meta *m)
{
    memset(L, 0, sizeof *L);
    L->pool = vdb_meta_list_pool(m);
    L->is_list = n->kind == VDB_FK_CONTAINS;
    uint8_t kind = n->kind == VDB_FK_CONTAINS ? VDB_FK_EQ : n->kind;
    if (kind != VDB_FK_IN) {
        const vdb_fval *op = &n->v;
        switch (op->tag) {
        case VDB_TAG_STR:
            if (vdb_meta_string_id(m, op->s, op->s_len, &L->str_id)) L->tags = vdb_meta_tag_bit(VDB_TAG_STR);
            break;
        case VDB_TAG_BOOL:
            L->bool_mask = 1u << op->i;
            L->tags = vdb_meta_tag_bit(VDB_TAG_BOOL);
            break;
        default:
            if (int_interval(kind, op, &L->ilo, &L->ihi)) L->tags |= vdb_meta_tag_bit(VDB_TAG_INT);
            if (f64_interval(kind, op, &L->flo, &L->fhi)) L->tags |= vdb_meta_tag_bit(VDB_TAG_FLOAT);
            break;
        }
    } else {
        const vdb_fval *vals = f->vals + n->set_off;
        size_t k = n->set_n;
        L->is_set = 1;
        switch (vals[0].tag) {
        case VDB_TAG_STR: {
            if (!(L->ids = malloc(k * sizeof *L->ids))) goto nomem;
            for (size_t i = 0; i < k; i++)
                if (vdb_meta_string_id(m, vals[i].s, vals[i].s_len, &L->ids[L->n_ids])) L->n_ids++;
            if (!L->n_ids) break;
            L->tags = vdb_meta_tag_bit(VDB_TAG_STR);
            qsort(L->ids, L->n_ids, sizeof *L->ids, cmp_u64);
            L->id_min = L->ids[0];
            L->id_span = L->ids[L->n_ids - 1] - L->ids[0] + 1;
            if (set_bitmap(L->ids, L->n_ids, L->id_min, L->id_span, &L->id_bits)) goto fail;
            break;
        }
        case VDB_TAG_BOOL:
            for (size_t i = 0; i < k; i++) L->bool_mask |= 1u << vals[i].i;
            L->tags = vdb_meta_tag_bit(VDB_TAG_BOOL);
            break;
        default:
            if (!(L->iset = malloc(k * sizeof *L->iset)) || !(L->fset = malloc(k * sizeof *L->fset))) goto nomem;
            for (size_t i = 0; i < k; i++) {
                const vdb_fval *v = &vals[i];
                if (v->tag == VDB_TAG_INT) {
                    L->iset[L->n_iset++] = v->i;
                    if (f64_of_i64(v->i, &L->fset[L->n_fset])) L->n_fset++;
                } else {
                    L->fset[L->n_fset++] = v->d;
                    if (i64_of_f64(v->d, &L->iset[L->n_iset])) L->n_iset++;
                }
            }
            qsort(L->iset, L->n_iset, sizeof *L->iset, cmp_i64);
            qsort(L->fset, L->n_fset, sizeof *L->fset, cmp_f64s);
            if (L->n_iset) {
                L->tags |= vdb_meta_tag_bit(VDB_TAG_INT);
                L->int_min = (uint64_t)L->iset[0];
                L->int_span = (uint64_t)L->iset[L->n_iset - 1] - L->int_min + 1; /* 0: all of int64 */
                if (L->int_span && set_bitmap((const uint64_t *)L->iset, L->n_iset, L->int_min, L->int_span,
                                              &L->int_bits))
                    goto fail;
            }
            if (L->n_fset) L->tags |= vdb_meta_tag_bit(VDB_TAG_FLOAT);
            break;
        }
    }
    if (L->is_list) L->tags <<= 4; /* scalar bit -> the bit of a list of that scalar */
    return VDB_OK;
nomem:
    vdb_set_error(VDB_ENOMEM, "out of memory evaluating a filter");
fail:
    leafm_free(L);
    memset(L, 0, sizeof *L);
    return VDB_ENOMEM;
}

static int set_has_u64(const uint64_t *a, size_t n, uint64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == x;
}

static int set_has_i64(const int64_t *a, size_t n, int64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == x;
}

static int set_has_f64(const double *a, size_t n, double x)
{
    size_t lo = 0, hi = n;
    if (x != x) return 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == x;
}

/* Does a scalar value (tag t, column value v) match? */
static inline int scalar_hit(const vdb_leafm *L, uint8_t t, uint64_t v)
{
    switch (t) {
    case VDB_TAG_STR:
        if (!L->is_set) return v == L->str_id;
        if (L->id_bits) return bits_has(L->id_bits, L->id_span, v - L->id_min);
        return set_has_u64(L->ids, L->n_ids, v);
    case VDB_TAG_INT:
        if (L->int_bits) return bits_has(L->int_bits, L->int_span, v - L->int_min);
        if (L->is_set) return set_has_i64(L->iset, L->n_iset, (int64_t)v);
        return (int64_t)v >= L->ilo && (int64_t)v <= L->ihi;
    case VDB_TAG_FLOAT: {
        double d = f64_of(v);
        if (L->is_set) return set_has_f64(L->fset, L->n_fset, d);
        return d >= L->flo && d <= L->fhi;
    }
    case VDB_TAG_BOOL: return (L->bool_mask >> (v & 1)) & 1;
    default: return 0;
    }
}

/* Does value (t, v) satisfy the leaf? (tags already filtered by L->tags) */
static inline int value_hit(const vdb_leafm *L, uint8_t t, uint64_t v)
{
    if (t == 0 || !(vdb_meta_tag_bit(t) & L->tags)) return 0;
    if (!L->is_list) return scalar_hit(L, t, v);
    const uint64_t *p = L->pool + v;
    uint8_t et = (uint8_t)(t & 0x0F);
    for (uint64_t i = 1; i <= p[0]; i++)
        if (scalar_hit(L, et, p[i])) return 1;
    return 0;
}

/* One dense pass: bit b of word w is EXPR for row w * 64 + b, with t = tag and v = value of the
 * row; words without care rows are skipped. Rows >= lim (not covered by the column) are 0. */
#define DENSE_ROW_(EXPR, g, j)                                                                      \
    do {                                                                                            \
        uint8_t t = T_[(g) + (j)];                                                                  \
        uint64_t v = V_[(g) + (j)];                                                                 \
        x8 |= (uint64_t)(EXPR) << (j);                                                              \
    } while (0)

#define DENSE_SCAN(EXPR)                                                                            \
    do {                                                                                            \
        size_t full_ = lim / 64;                                                                    \
        for (size_t w = 0; w < full_; w++) {                                                        \
            uint64_t cw = care[w], bits = 0;                                                        \
            if (!cw) {                                                                              \
                out[w] = 0;                                                                         \
                continue;                                                                           \
            }                                                                                       \
            const uint8_t *T_ = tag + w * 64;                                                       \
            const uint64_t *V_ = val + w * 64;                                                      \
            for (unsigned g = 0; g < 64; g += 8) { /* unrolled by 8: constant shifts */            \
                uint64_t x8 = 0;                                                                    \
                DENSE_ROW_(EXPR, g, 0); DENSE_ROW_(EXPR, g, 1); DENSE_ROW_(EXPR, g, 2);               \
                DENSE_ROW_(EXPR, g, 3); DENSE_ROW_(EXPR, g, 4); DENSE_ROW_(EXPR, g, 5);               \
                DENSE_ROW_(EXPR, g, 6); DENSE_ROW_(EXPR, g, 7);                                      \
                bits |= x8 << g;                                                                    \
            }                                                                                       \
            out[w] = bits & cw;                                                                     \
        }                                                                                           \
        for (size_t w = full_; w < words; w++) out[w] = 0;                                          \
        for (size_t r = full_ * 64; r < lim; r++) {                                                 \
            uint8_t t = tag[r];                                                                     \
            uint64_t v = val[r];                                                                    \
            out[r / 64] |= (uint64_t)(EXPR) << (r % 64);                                            \
        }                                                                                           \
        if (full_ < words) out[full_] &= care[full_];                                               \
    } while (0)

static void eval_dense(const vdb_leafm *L, const vdb_meta_column *col, size_t n_rows, size_t words,
                       const uint64_t *care, uint64_t *out)
{
    const uint8_t *tag = col->tag;
    const uint64_t *val = col->val;
    size_t lim = col->n < n_rows ? col->n : n_rows;
    unsigned tags = L->tags & col->seen;
    const unsigned B_STR = vdb_meta_tag_bit(VDB_TAG_STR), B_INT = vdb_meta_tag_bit(VDB_TAG_INT),
                   B_FLT = vdb_meta_tag_bit(VDB_TAG_FLOAT), B_BOOL = vdb_meta_tag_bit(VDB_TAG_BOOL);

    if (!tags) {
        memset(out, 0, words * sizeof *out);
        return;
    }
    if (!L->is_list && !L->is_set) {
        /* Branch-free loops for the common single-type columns. */
        const uint64_t id = L->str_id, span = (uint64_t)L->ihi - (uint64_t)L->ilo;
        const int64_t ilo = L->ilo;
        const double flo = L->flo, fhi = L->fhi;
        const unsigned bm = L->bool_mask;
        if (tags == B_STR) {
            DENSE_SCAN((t == VDB_TAG_STR) & (v == id));
            return;
        }
        if (tags == B_INT) {
            DENSE_SCAN((t == VDB_TAG_INT) & (v - (uint64_t)ilo <= span));
            return;
        }
        if (tags == B_FLT) {
            DENSE_SCAN((t == VDB_TAG_FLOAT) & (f64_of(v) >= flo) & (f64_of(v) <= fhi));
            return;
        }
        if (tags == (B_INT | B_FLT)) {
            DENSE_SCAN(((t == VDB_TAG_INT) & (v - (uint64_t)ilo <= span)) |
                       ((t == VDB_TAG_FLOAT) & (f64_of(v) >= flo) & (f64_of(v) <= fhi)));
            return;
        }
        if (tags == B_BOOL) {
            DENSE_SCAN((t == VDB_TAG_BOOL) & ((bm >> (v & 1)) & 1));
            return;
        }
    }
    if (!L->is_list && L->is_set) {
        const uint64_t *ib = L->int_bits, *sb = L->id_bits;
        const uint64_t imin = L->int_min, ispan = L->int_span, smin = L->id_min, sspan = L->id_span;
        if (tags == B_STR && L->n_ids <= 8) {
            /* few strings: eight compares (the set padded with its last id) beat a bitmap probe */
            uint64_t s8[8];
            for (size_t i = 0; i < 8; i++) s8[i] = L->ids[i < L->n_ids ? i : L->n_ids - 1];
            DENSE_SCAN((t == VDB_TAG_STR) & ((v == s8[0]) | (v == s8[1]) | (v == s8[2]) | (v == s8[3]) |
                                             (v == s8[4]) | (v == s8[5]) | (v == s8[6]) | (v == s8[7])));
            return;
        }
        if (tags == B_STR && sb) {
            DENSE_SCAN((t == VDB_TAG_STR) & bits_has(sb, sspan, v - smin));
            return;
        }
        if (tags == B_INT && ib) {
            DENSE_SCAN((t == VDB_TAG_INT) & bits_has(ib, ispan, v - imin));
            return;
        }
    }
    DENSE_SCAN(value_hit(L, t, v));
}

static void eval_sparse(const vdb_leafm *L, const vdb_meta_column *col, size_t n_rows, size_t words,
                        const uint64_t *care, uint64_t *out)
{
    memset(out, 0, words * sizeof *out);
    if (!(L->tags & col->seen)) return;
    for (size_t i = 0; i < col->n; i++) {
        const vdb_meta_entry *e = &col->entries[i];
        if (e->row >= n_rows) continue;
        uint64_t bit = (uint64_t)1 << (e->row % 64);
        if (value_hit(L, e->tag, e->val)) out[e->row / 64] |= bit;
        else out[e->row / 64] &= ~bit;
    }
    for (size_t w = 0; w < words; w++) out[w] &= care[w];
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

/* Row by row over the care set, from the blobs: keys without a usable column. */
static void eval_rows(vdb_feval *e, const vdb_fnode *n, const uint64_t *care, uint64_t *out)
{
    for (size_t w = 0; w < e->words; w++) {
        uint64_t res = 0;
        for (uint64_t bits = care[w]; bits; bits &= bits - 1) {
            int b = __builtin_ctzll(bits);
            size_t r = w * 64 + (size_t)b;
            const uint8_t *meta;
            size_t meta_len;
            vdb_meta_get(e->m, r, &meta, &meta_len, NULL, NULL);
            if (leaf_match(e->f, n, meta, meta_len)) res |= (uint64_t)1 << b;
        }
        out[w] = res;
    }
}

static int eval_leaf(vdb_feval *e, const vdb_fnode *n, const uint64_t *care, uint64_t *out)
{
    vdb_meta_column col;
    vdb_leafm L;
    int rc;
    if (n->kind == VDB_FK_DOC_CONTAINS) {
        vdb_meta_doc_contains(e->m, e->n_rows, (const char *)n->v.s, n->v.s_len, care, out);
        return VDB_OK;
    }
    vdb_meta_column_get(e->m, n->key, n->key_len, &col);
    switch (col.kind) {
    case VDB_COL_DENSE:
    case VDB_COL_SPARSE:
        if ((rc = leafm_init(&L, e->f, n, e->m)) != VDB_OK) return rc;
        if (col.kind == VDB_COL_DENSE) eval_dense(&L, &col, e->n_rows, e->words, care, out);
        else eval_sparse(&L, &col, e->n_rows, e->words, care, out);
        leafm_free(&L);
        return VDB_OK;
    case VDB_COL_BLOB:
        eval_rows(e, n, care, out);
        return VDB_OK;
    default: /* no row holds the key */
        memset(out, 0, e->words * sizeof *out);
        return VDB_OK;
    }
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

    return eval_leaf(e, n, care, out);
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
