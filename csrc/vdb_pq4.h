/* vdb_pq4 — 4-bit product quantizer with a register-resident ("fast-scan") code: training,
 * encoding, the packed block layout, query lookup tables and the SIMD table-lookup scan.
 *
 * Quantizer: the d dimensions are cut into m sub-spaces (m in [1, min(d, 256)]; the first d % m
 * sub-spaces get one dimension more). Each sub-space has 16 centroids trained by vdb_kmeans (L2),
 * so a vector's code is m 4-bit indices; x^ = the concatenation of the chosen centroids. encode
 * also returns err = |x - x^| (the residual norm, float64 then rounded to float).
 *
 * Error estimate: the search estimates <q, x> by <q, x^> and needs bounds on <q, e>, e = x - x^.
 * train measures the ratio <u, e> / (|u| |e|) on a sample, for random pairs (probe u, error e of
 * another vector) and for near pairs (u, errors of the vectors whose probes are nearest to u: the
 * pairs a search must get right, where the ratio is biased upward since <x, e> = <x^, e> + |e|^2),
 * keeps the VDB_PQ4_CONFIDENCE quantile of |ratio| over random pairs as eps_rand, and as eps_hi,
 * eps_lo the larger of eps_rand and the near pairs' quantile of the ratio, of its negation:
 * a search then treats -eps_lo |q| err <= <q, e> <= eps_hi |q| err as holding (it does for that
 * share of pairs on data like the sample). This is an estimate, not a proof: the caller reports
 * recall against exact search.
 *
 * Packed layout (blocks of 32 vectors, m_pad = m rounded up to a multiple of 4, padding codes 0):
 * block b occupies m_pad * 16 bytes; sub-space j's 16 bytes at offset j * 16 hold, in byte t,
 * vector 32b+t's index in the low nibble and vector 32b+16+t's in the high nibble. So one 128-bit
 * lane holds one sub-space of the whole block, next to that sub-space's 16-entry table: a byte
 * shuffle (pshufb) looks up 16 vectors at once, two (AVX2) or four (AVX-512) sub-spaces per
 * instruction.
 *
 * Tables: vdb_pq4_lut gives lut[j*16 + c] = <q_j, C_j[c]> (float; the padding sub-spaces 0), so
 * sum_j lut[j][code_j] = <q, x^>. vdb_pq4_lut_quantize maps each sub-space's table to uint8 with
 * one common step: value ~= bias_j + step * u8 with |error| <= step / 2 per sub-space; sums of up
 * to 256 sub-spaces of 255 fit a uint16 exactly. vdb_pq4_scan returns, per vector, the uint16 sum
 * of its table entries: <q, x^> ~= bias + step * sum.
 *
 * Kernels: `_serial` reference plus AVX2 and AVX-512BW variants chosen through vdb_cpu (the serial
 * one is the portable fallback, arm64 included) for the scan, the encoder and the tables; every
 * variant returns the same integers and table bits.
 * Ownership: vdb_pq4 owns its arrays (vdb_pq4_free); every other output is caller-allocated.
 * A trained quantizer is read-only: concurrent encodes, tables and scans are safe.
 */
#ifndef VDB_PQ4_H
#define VDB_PQ4_H

#include <stddef.h>
#include <stdint.h>

#define VDB_PQ4_MAX_M 256
#define VDB_PQ4_BLOCK 32
#define VDB_PQ4_CONFIDENCE 0.999 /* quantile of the error ratio kept as eps_hi / eps_lo (see above) */

typedef struct {
    size_t d, m, m_pad;
    uint32_t *off; /* m + 1 offsets: sub-space j is dimensions [off[j], off[j+1]) */
    float *cent;   /* 16 * d: sub-space j at cent + 16 * off[j], stored transposed (dimension-major:
                    * cent[16 * off[j] + t * 16 + c] = dimension t of centroid c) */
    float eps_hi, eps_lo; /* error-ratio quantiles, see above; 0 before training */
    float eps_rand;       /* the random pairs' quantile of |ratio| (both bounds are at least that) */
} vdb_pq4;

/* Allocates an untrained quantizer (centroids 0). d >= 1, 1 <= m <= min(d, VDB_PQ4_MAX_M). */
int vdb_pq4_create(size_t d, size_t m, vdb_pq4 **out);
void vdb_pq4_free(vdb_pq4 *pq);

/* A near pair of the calibration: probe u, the error of vector x (indices into train's arrays). */
typedef struct {
    uint32_t u, x;
    float ratio; /* <probe u, e_x> / (|probe u| |e_x|) */
} vdb_pq4_pair;
#define VDB_PQ4_NEAR_PAIRS 2048 /* at most this many near pairs are measured */

/* Trains the 16 centroids of every sub-space on x (n >= 16 vectors of d floats) and measures
 * eps_hi / eps_lo with probe directions: probe holds n vectors, probe i the one x[i] stands for (for
 * IVF residuals x[i] = v - c, probe i = v), or is NULL (x itself). near (optional, room for
 * VDB_PQ4_NEAR_PAIRS) receives the near pairs measured, *n_near their count, so a caller can
 * choose its own quantile per situation. Deterministic for a seed and kernel family (vdb_cpu): the near pairs are
 * ranked with the family's distance kernels, whose rounding differs between ISAs. */
int vdb_pq4_train(vdb_pq4 *pq, const float *x, size_t n, const float *probe, uint64_t seed, vdb_pq4_pair *near,
                  size_t *n_near);

/* codes: n * m bytes (one index 0..15 per byte); err (optional): n floats = |x - x^|. Every variant
 * (serial, AVX2, AVX-512) returns the same codes and err bits. */
void vdb_pq4_encode(const vdb_pq4 *pq, const float *x, size_t n, uint8_t *codes, float *err);
/* Variant access for tests: isa "serial", "avx2", "avx512"; -1 when not available. */
int vdb_pq4_encode_isa(const char *isa, const vdb_pq4 *pq, const float *x, size_t n, uint8_t *codes, float *err);
/* x^ of one code (d floats). */
void vdb_pq4_decode(const vdb_pq4 *pq, const uint8_t *code, float *x);

/* Bytes of one packed block of 32 vectors: m_pad * 16. */
size_t vdb_pq4_block_bytes(const vdb_pq4 *pq);
/* Writes / reads the m indices of vector i (global position: block i / 32) in a packed array. */
void vdb_pq4_pack_set(uint8_t *packed, size_t m_pad, size_t m, size_t i, const uint8_t *code);
void vdb_pq4_pack_get(const uint8_t *packed, size_t m_pad, size_t m, size_t i, uint8_t *code);

/* lut: m_pad * 16 floats. */
void vdb_pq4_lut(const vdb_pq4 *pq, const float *q, float *lut);
/* lut8: m_pad * 16 bytes. *step = common step (0 when every table is constant), *bias = sum of
 * the per-sub-space minima (float64). */
void vdb_pq4_lut_quantize(const float *lut, size_t m_pad, uint8_t *lut8, double *step, double *bias);
/* Variant access for tests (isa as for vdb_pq4_encode_isa; -1 when not available). Every variant
 * returns the serial tables bit for bit. */
int vdb_pq4_lut_isa(const char *isa, const vdb_pq4 *pq, const float *q, float *lut);
int vdb_pq4_lut_quantize_isa(const char *isa, const float *lut, size_t m_pad, uint8_t *lut8, double *step,
                             double *bias);

/* out[32 b + t] = sum_j lut8[j * 16 + index_j(vector 32b+t)] for n_blocks blocks. */
void vdb_pq4_scan(const uint8_t *packed, size_t n_blocks, size_t m_pad, const uint8_t *lut8, uint16_t *out);
/* vdb_pq4_scan of the ceil(n / 32) blocks holding n vectors, fused with the caller's cut: also writes
 * to surv (n entries) the positions i < n with out[i] >= smin, ascending, and returns their count
 * (0 when smin > 0xFFFF). The compare runs in the SIMD registers that hold the sums (a mask per
 * block), so only the survivors cost scalar work. */
size_t vdb_pq4_scan_cut(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8, unsigned smin,
                        uint16_t *out, uint32_t *surv);
/* Variant access for tests: isa "serial", "avx2", "avx512"; -1 when not available. */
int vdb_pq4_scan_cut_isa(const char *isa, const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *lut8,
                         unsigned smin, uint16_t *out, uint32_t *surv, size_t *n_surv);
int vdb_pq4_scan_isa(const char *isa, const uint8_t *packed, size_t n_blocks, size_t m_pad, const uint8_t *lut8,
                     uint16_t *out);

/* Query blocking: vdb_pq4_scan's sums of the ceil(n / 32) blocks holding n vectors for nlut tables
 * at once, outs[g] (room for ceil(n / 32) * 32 each) for luts[g]: each block's codes are loaded
 * and split once for up to 4 tables. The same integers as vdb_pq4_scan per table. */
void vdb_pq4_scan_multi(const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts, size_t nlut,
                        uint16_t *const *outs);
/* The positions i < n with sums[i] >= smin, ascending, into surv; returns their count (0 when smin
 * > 0xFFFF): vdb_pq4_scan_cut's survivors, from sums stored by vdb_pq4_scan_multi. */
size_t vdb_pq4_cut(const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv);
/* Variant access for tests: isa "serial", "avx2", "avx512"; -1 when not available. */
int vdb_pq4_scan_multi_isa(const char *isa, const uint8_t *packed, size_t n, size_t m_pad, const uint8_t *const *luts,
                           size_t nlut, uint16_t *const *outs);
int vdb_pq4_cut_isa(const char *isa, const uint16_t *sums, size_t n, unsigned smin, uint32_t *surv, size_t *n_surv);

/* Called by vdb_cpu when the enabled feature set changes. */
void vdb_pq4_select(unsigned enabled_features);

#endif
