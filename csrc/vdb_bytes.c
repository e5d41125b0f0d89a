/* vdb_bytes — the growable byte buffer, the UTF-8 check behind vdb_bytes.h's codecs, and prefaulting of large buffers. */
#include "vdb_bytes.h"

#include <stdlib.h>
#include <sys/mman.h>


int vdb_buf_reserve(vdb_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) return -1;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int vdb_buf_append(vdb_buf *b, const void *src, size_t n)
{
    if (vdb_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

void vdb_buf_free(vdb_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int vdb_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((b & 0xE0) == 0xC0) len = 2, cp = b & 0x1F, min = 0x80;
        else if ((b & 0xF0) == 0xE0) len = 3, cp = b & 0x0F, min = 0x800;
        else if ((b & 0xF8) == 0xF0) len = 4, cp = b & 0x07, min = 0x10000;
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

void vdb_prefault(void *p, size_t bytes)
{
    const uintptr_t page = 4096, lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    const uintptr_t hi = ((uintptr_t)p + bytes) & ~(page - 1);
    if (hi <= lo || hi - lo < ((uintptr_t)1 << 20)) return;
#ifdef MADV_HUGEPAGE
    madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#endif
#ifdef MADV_POPULATE_WRITE
    madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
#endif
}
