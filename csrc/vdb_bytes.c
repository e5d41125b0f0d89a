#include "vdb_bytes.h"

#include <stdlib.h>


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
