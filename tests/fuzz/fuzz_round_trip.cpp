// Fuzz target: round trip of fuzzer-chosen levels and shapes through the encoder (needs
// NNPRESS_ENCODER=ON; in a decoder-only build the target does nothing).
//
// Input layout: u8 ndim selector, up to 4 dimensions (u8 each), u8 value distribution, u8 unary
// length, u8 Exp-Golomb order, then values (the distribution says how bytes become levels;
// once the bytes run out a deterministic generator seeded from the input continues).
// Properties:
//   - encode_level_stream succeeds, decodes to the same shape and levels (bit-exact), and
//     encoding twice gives the same bytes;
//   - with explicit params (any unary_len 0..64, eg_order 0..30) a payload round-trips too, and
//     fails to decode when cut by one byte;
//   - the rate estimate is finite and non-negative.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fuzz_common.h"
#include "nnpress/cabac/level_coder.h"

NNPRESS_FUZZ_TARGET(round_trip) {
#ifdef NNPRESS_WITH_ENCODER
  using namespace nnpress;
  nnpress_fuzz::FuzzInput in(data, size);
  const unsigned ndim = in.u8() % 5;  // 0..4 (rank 0 = one scalar)
  std::vector<uint64_t> shape(ndim);
  uint64_t count = 1;
  bool big = false;
  for (unsigned d = 0; d < ndim; ++d) {
    const uint8_t b = in.u8();
    shape[d] = b < 250 ? b % 40 : uint64_t(b - 249) * 1000;  // mostly small, sometimes 1000..6000
    big = big || b >= 250;
    count *= shape[d];
  }
  // Keep each run fast: up to 8192 levels, or 2^17 when a large dimension was asked for.
  if (count > (uint64_t(1) << (big ? 17 : 13))) return 0;
  const uint8_t dist = in.u8() % 6;
  LevelParams explicit_params;
  explicit_params.unary_len = in.u8() % 65;
  explicit_params.eg_order = in.u8() % 31;

  uint64_t state = 0x243F6A8885A308D3ull ^ size;
  for (size_t i = 0; i < size && i < 64; ++i) state = state * 131 + data[i];
  std::vector<int32_t> levels(static_cast<size_t>(count), 0);
  for (auto& v : levels) {
    const bool fresh = in.remaining() > 0;
    const uint64_t r = fresh ? 0 : nnpress_fuzz::mix64(state);
    switch (dist) {
      case 0:  // small signed values, mostly zero (typical quantized weights)
        v = fresh ? int8_t(in.u8()) / 16 : int32_t(r % 9) - 4;
        if (!fresh && (r >> 8) % 4) v = 0;
        break;
      case 1:  // full int32 range
        v = fresh ? int32_t(in.u32()) : int32_t(uint32_t(r));
        break;
      case 2: {  // extremes
        static const int32_t kExtremes[] = {std::numeric_limits<int32_t>::min(),
                                            std::numeric_limits<int32_t>::max(),
                                            0,
                                            1,
                                            -1,
                                            std::numeric_limits<int32_t>::min() + 1,
                                            65,
                                            -66};
        v = kExtremes[(fresh ? in.u8() : r) % 8];
        break;
      }
      case 3:  // int16 from the bytes
        v = fresh ? int16_t(in.u16()) : int16_t(r);
        break;
      case 4:  // geometric-like magnitudes of every scale
        v = int32_t((fresh ? in.u32() : uint32_t(r)) >> ((fresh ? in.u8() : r >> 32) % 32));
        if ((fresh ? in.u8() : (r >> 40)) & 1) v = int32_t(0u - uint32_t(v));  // INT32_MIN stays
        break;
      default:  // raw bytes
        v = fresh ? int32_t(in.u8()) - 128 : int32_t(r % 256) - 128;
        break;
    }
  }

  // Framed stream: round trip and determinism.
  std::vector<uint8_t> a, b;
  FUZZ_REQUIRE(encode_level_stream(levels.data(), count, shape, &a).ok());
  FUZZ_REQUIRE(encode_level_stream(levels.data(), count, shape, &b).ok());
  FUZZ_REQUIRE(a == b);
  LevelStreamInfo info;
  // Default limits also bound the product of the non-zero dimensions (an empty array of shape
  // (4000, 4000, 6000, 0) is kLimit); lifted limits accept everything the encoder writes.
  const Status with_defaults = read_level_stream_info(a.data(), a.size(), &info);
  FUZZ_REQUIRE(with_defaults.ok() || (count == 0 && with_defaults.code() == StatusCode::kLimit));
  DecodeLimits unlimited;
  unlimited.max_elements = UINT64_MAX;
  FUZZ_REQUIRE(read_level_stream_info(a.data(), a.size(), &info, unlimited).ok());
  FUZZ_REQUIRE(info.shape == shape && info.count == count);
  std::vector<int32_t> out(size_t(count) + 1, 0x5A5A5A5A);
  FUZZ_REQUIRE(decode_level_stream(a.data(), a.size(), info, out.data(), count).ok());
  FUZZ_REQUIRE(std::equal(levels.begin(), levels.end(), out.begin()));
  FUZZ_REQUIRE(out[size_t(count)] == 0x5A5A5A5A);
  const double bits = estimate_level_stream_bits(levels.data(), count, shape);
  FUZZ_REQUIRE(std::isfinite(bits) && bits >= 0);

  // A shape that does not match the count is the caller's error.
  std::vector<uint64_t> wrong = shape;
  wrong.push_back(2);
  if (count != 0)
    FUZZ_REQUIRE(encode_level_stream(levels.data(), count, wrong, &b).code() == StatusCode::kInvalidArgument);

  // Explicit params: payload round trip, and a payload cut short fails.
  uint64_t rows, cols;
  rows_cols_of(shape, &rows, &cols);
  std::vector<uint8_t> payload;
  encode_level_payload(levels.data(), rows, cols, explicit_params, &payload);
  std::fill(out.begin(), out.end(), 0x5A5A5A5A);
  FUZZ_REQUIRE(decode_level_payload(payload.data(), payload.size(), rows, cols, explicit_params, out.data()).ok());
  FUZZ_REQUIRE(std::equal(levels.begin(), levels.end(), out.begin()));
  FUZZ_REQUIRE(out[size_t(count)] == 0x5A5A5A5A);
  std::vector<uint8_t> cut(payload.begin(), payload.end() - 1);
  FUZZ_REQUIRE(!decode_level_payload(cut.data(), cut.size(), rows, cols, explicit_params, out.data()).ok());
  const double pbits = estimate_level_bits(levels.data(), rows, cols, explicit_params);
  FUZZ_REQUIRE(std::isfinite(pbits) && pbits >= 0);
#else
  (void)data;
  (void)size;
#endif
  return 0;
}
