// tests/cpp/nnp_frame.h — builds a .nnp file around hand-written table bytes (for hostile-input
// tests): header with signature, version 1.minor, table offset/size and both CRCs, then the data
// region (`data`, whose chunk references the table itself must carry), then the table.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"

namespace nnpress_test {

inline std::vector<uint8_t> frame_nnp(const std::vector<uint8_t>& data, const std::vector<uint8_t>& table,
                                      uint16_t minor = 0) {
  using namespace nnpress;
  std::vector<uint8_t> f(kContainerHeaderSize, 0);
  std::memcpy(f.data(), kContainerMagic, 8);
  f[8] = 1;
  f[10] = uint8_t(minor);
  f[11] = uint8_t(minor >> 8);
  f.insert(f.end(), data.begin(), data.end());
  const uint64_t toff = f.size();
  f.insert(f.end(), table.begin(), table.end());
  auto put = [&](size_t at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) f[at + i] = uint8_t(v >> (8 * i));
  };
  put(16, toff, 8);
  put(24, table.size(), 8);
  put(32, crc32c(table.data(), table.size()), 4);
  put(36, crc32c(f.data(), 36), 4);
  return f;
}

}  // namespace nnpress_test
