// nnpress/format/crc.h — CRC-32C (Castagnoli), the checksum of level streams and .nnp chunks.
//
// CONTRACT
//   crc32c(data, size, seed) returns the standard CRC-32C (reflected polynomial 0x82F63B78,
//   initial value and final xor 0xFFFFFFFF) of the bytes, continuing from `seed` (the value a
//   previous call returned, or 0 to start). crc32c("123456789") == 0xE3069283.
//   Pure function, thread-safe, reads exactly [data, data + size).
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnpress {

uint32_t crc32c(const void* data, size_t size, uint32_t seed = 0);

}  // namespace nnpress
