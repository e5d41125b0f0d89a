/* vdb_logrec — the log record of one write (vdb_collection_write): its bytes and back.
 *
 * Payload (little-endian): u8 op, u32 n, u64 dim (0: no vectors), u8 flags (1 vectors, 2 metadata,
 * 4 documents); n ids (u32 len + bytes); n*dim f32 vectors; then, as flagged, n metadata blobs and n
 * documents (u32 len + bytes, VDB_NONE32 = None). A delete logs its ids only.
 *
 * Contract: pure functions on caller-owned buffers, safe from any thread. Decoding checks every
 * length against the payload and that ids and documents are UTF-8, but not the metadata blobs
 * (vdb_meta checks them) nor the op's rules (the collection plans the write as for a new one).
 * A decoded record points into the payload (strings) and owns its arrays: vdb_logrec_free.
 */
#ifndef VDB_LOGREC_H
#define VDB_LOGREC_H

#include <stddef.h>
#include <stdint.h>

#include "vdb_bytes.h"
#include "vdb_collection.h"

#define VDB_NONE32 UINT32_MAX /* the length of an absent string field */

typedef struct {
    vdb_batch b;
    int op;
    const char **ids, **metas, **docs;
    uint32_t *id_lens, *meta_lens, *doc_lens;
    float *vectors; /* aligned copy */
} vdb_logrec;

/* Appends the record of op on b to out; *vec_off: where the vectors start in out. */
int vdb_logrec_encode(int op, const vdb_batch *b, vdb_buf *out, size_t *vec_off);
/* 0, or -1 when the payload is not a valid record (w is then to be freed all the same). */
int vdb_logrec_decode(const uint8_t *payload, size_t len, vdb_logrec *w);
void vdb_logrec_free(vdb_logrec *w);
/* Reads n string fields (u32 len + bytes) from r: VDB_NONE32 only when allow_none (then s[i] = NULL,
 * lens[i] = 0); text: the bytes must be valid UTF-8. 0, or -1 on malformed input. */
int vdb_logrec_take_strings(vdb_reader *r, size_t n, const char **s, uint32_t *lens, int allow_none, int text);

#endif
