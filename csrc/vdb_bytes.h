/* vdb_bytes — little-endian encode/decode helpers and a bounds-checked reader for untrusted bytes.
 * On-disk integers are read byte by byte through these, never by casting bytes to structs. */
#ifndef VDB_BYTES_H
#define VDB_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline void vdb_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void vdb_put_u64(uint8_t *p, uint64_t v)
{
    vdb_put_u32(p, (uint32_t)v);
    vdb_put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t vdb_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t vdb_get_u64(const uint8_t *p)
{
    return (uint64_t)vdb_get_u32(p) | (uint64_t)vdb_get_u32(p + 4) << 32;
}

/* Cursor over untrusted bytes: every take checks the bounds first. */
typedef struct {
    const uint8_t *p;
    size_t left;
} vdb_reader;

static inline int vdb_take(vdb_reader *r, size_t n, const uint8_t **out)
{
    if (n > r->left) return -1;
    *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}
static inline int vdb_take_u8(vdb_reader *r, uint8_t *v)
{
    const uint8_t *p;
    if (vdb_take(r, 1, &p)) return -1;
    *v = p[0];
    return 0;
}
static inline int vdb_take_u32(vdb_reader *r, uint32_t *v)
{
    const uint8_t *p;
    if (vdb_take(r, 4, &p)) return -1;
    *v = vdb_get_u32(p);
    return 0;
}
static inline int vdb_take_u64(vdb_reader *r, uint64_t *v)
{
    const uint8_t *p;
    if (vdb_take(r, 8, &p)) return -1;
    *v = vdb_get_u64(p);
    return 0;
}

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF): what Python produces. Text
 * read from files is checked with it, so damage never reaches users as replacement characters. */
int vdb_utf8_valid(const uint8_t *p, size_t n);

/* Growable output buffer (malloc'd); functions return 0 or -1 on allocation failure. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} vdb_buf;

int vdb_buf_reserve(vdb_buf *b, size_t extra);
int vdb_buf_append(vdb_buf *b, const void *src, size_t n);
static inline int vdb_buf_u32(vdb_buf *b, uint32_t v)
{
    uint8_t t[4];
    vdb_put_u32(t, v);
    return vdb_buf_append(b, t, 4);
}
static inline int vdb_buf_u64(vdb_buf *b, uint64_t v)
{
    uint8_t t[8];
    vdb_put_u64(t, v);
    return vdb_buf_append(b, t, 8);
}
void vdb_buf_free(vdb_buf *b);

/* Faults in a large malloc'd buffer that is about to be written whole, in one call instead of a
 * fault per 4 KiB page, with huge pages where the kernel gives them: open fills tens of MB this way.
 * Advice only (no effect on contents; ignored below 1 MiB or where unsupported). */
void vdb_prefault(void *p, size_t bytes);

#endif
