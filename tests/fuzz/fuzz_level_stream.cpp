// Fuzz target: arbitrary bytes as a framed level stream (nnpress.decode_levels in C++).
//
// Properties: read_level_stream_info + decode_level_stream never crash, hang, read out of bounds
// or allocate more than the header can justify; bad data is a format error (never
// kInvalidArgument, never ok with an inconsistent info). Because the CRC-32C rejects almost every
// mutation, each input is also tried with its last 4 bytes replaced by the correct checksum, so
// the fuzzer reaches the header parser and the CABAC payload decoder.
#include <vector>

#include "fuzz_common.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/format/crc.h"

namespace {

void decode_framed(const uint8_t* data, size_t size) {
  using namespace nnpress;
  LevelStreamInfo info;
  DecodeLimits limits;
  limits.max_elements = uint64_t(1) << 24;  // bounded memory for the fuzzer (64 MiB of levels)
  Status s = read_level_stream_info(data, size, &info, limits);
  if (!s.ok()) {
    FUZZ_REQUIRE(s.is_format_error());
    FUZZ_REQUIRE(!s.message().empty());
    return;
  }
  FUZZ_REQUIRE(size >= 4 && info.payload_offset + info.payload_size + 4 == size);
  FUZZ_REQUIRE(info.count <= limits.max_elements);
  FUZZ_REQUIRE(info.count <= (uint64_t(info.payload_size) + 2) * kMaxLevelsPerPayloadByte);
  FUZZ_REQUIRE(info.shape.size() <= kMaxDims);
  uint64_t product = 1, nonzero_product = 1;
  for (uint64_t d : info.shape) {
    product *= d;
    if (d != 0) {
      FUZZ_REQUIRE(d <= limits.max_elements / nonzero_product);
      nonzero_product *= d;
    }
  }
  FUZZ_REQUIRE(product == info.count);
  FUZZ_REQUIRE(info.rows * info.cols == info.count);
  std::vector<int32_t> out(size_t(info.count) + 1, 0x5A5A5A5A);  // +1: a canary past the end
  s = decode_level_stream(data, size, info, out.data(), info.count);
  FUZZ_REQUIRE(out[size_t(info.count)] == 0x5A5A5A5A);
  if (!s.ok()) {
    FUZZ_REQUIRE(s.is_format_error());
    FUZZ_REQUIRE(!s.message().empty());
    return;
  }
  // A wrong output size is the caller's mistake, reported as such.
  FUZZ_REQUIRE(decode_level_stream(data, size, info, out.data(), info.count + 1).code() ==
               StatusCode::kInvalidArgument);
#ifdef NNPRESS_WITH_ENCODER
  // Whatever decoded cleanly re-encodes and decodes to the same levels.
  std::vector<uint8_t> again;
  FUZZ_REQUIRE(encode_level_stream(out.data(), info.count, info.shape, &again).ok());
  LevelStreamInfo info2;
  FUZZ_REQUIRE(read_level_stream_info(again.data(), again.size(), &info2, limits).ok());
  FUZZ_REQUIRE(info2.shape == info.shape);
  std::vector<int32_t> out2(size_t(info.count));
  FUZZ_REQUIRE(decode_level_stream(again.data(), again.size(), info2, out2.data(), info2.count).ok());
  FUZZ_REQUIRE(std::equal(out2.begin(), out2.end(), out.begin()));
#endif
}

}  // namespace

NNPRESS_FUZZ_TARGET(level_stream) {
  decode_framed(data, size);
  if (size >= 4) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint32_t crc = nnpress::crc32c(fixed.data(), size - 4);
    for (int i = 0; i < 4; ++i) fixed[size - 4 + i] = uint8_t(crc >> (8 * i));
    decode_framed(fixed.data(), fixed.size());
  }
  return 0;
}
