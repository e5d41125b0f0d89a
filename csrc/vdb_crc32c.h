/* vdb_crc32c — CRC-32C (Castagnoli), the checksum of every log record and snapshot file.
 * Pure function, thread-safe. Start with crc = 0; feed chunks by passing the previous result. */
#ifndef VDB_CRC32C_H
#define VDB_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t vdb_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
