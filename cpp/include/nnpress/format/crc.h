// nnpress/format/crc.h — CRC-32C (Castagnoli), the checksum of level streams and .nnp chunks.
//
// CONTRACT
//   crc32c(data, size, seed) returns the standard CRC-32C (reflected polynomial 0x82F63B78,
//   initial value and final xor 0xFFFFFFFF) of the bytes, continuing from `seed` (the value a
//   previous call returned, or 0 to start). crc32c("123456789") == 0xE3069283.
//   Pure functions, thread-safe; crc32c reads exactly [data, data + size).
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnpress {

uint32_t crc32c(const void* data, size_t size, uint32_t seed = 0);

// The CRC-32C of A followed by B from crc32c(A), crc32c(B) and B's length, without the bytes: lets
// pieces of one buffer be checksummed on different threads. O(log size_b).
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b);

}  // namespace nnpress
