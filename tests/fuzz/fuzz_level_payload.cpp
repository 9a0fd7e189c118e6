// Fuzz target: arbitrary bytes as one raw CABAC payload with fuzzer-chosen shape and params
// (the entry point the .nnp reader uses for every chunk).
//
// Input layout: u16 rows, u16 cols, u8 unary_len, u8 eg_order (any value: bad ones must be
// rejected), then the payload bytes.
// Properties: decode_level_payload never writes outside rows*cols levels, rejects a count the
// payload cannot justify before touching the output, rejects bad params, and reports bad data
// as a format error. A payload that decodes cleanly stops decoding when cut short by one byte or
// extended by one byte.
#include <algorithm>
#include <vector>

#include "fuzz_common.h"
#include "nnpress/cabac/level_coder.h"

NNPRESS_FUZZ_TARGET(level_payload) {
  using namespace nnpress;
  nnpress_fuzz::FuzzInput in(data, size);
  const uint64_t rows = in.u16(), cols = in.u16();
  LevelParams params;
  params.unary_len = in.u8();
  params.eg_order = in.u8();
  const uint8_t* payload = in.rest();
  const size_t psize = in.remaining();
  const uint64_t count = rows * cols;
  const bool params_ok = check_level_params(params).ok();
  FUZZ_REQUIRE(params_ok == (params.unary_len <= 64 && params.eg_order <= 30));

  if (count > (uint64_t(psize) + 2) * kMaxLevelsPerPayloadByte) {
    // The claim is rejected before the (too small) output is touched.
    int32_t canary[2] = {0x5A5A5A5A, 0x5A5A5A5A};
    Status s = decode_level_payload(payload, psize, rows, cols, params, canary);
    FUZZ_REQUIRE(!s.ok() && s.is_format_error());
    FUZZ_REQUIRE(canary[0] == 0x5A5A5A5A && canary[1] == 0x5A5A5A5A);
    return 0;
  }
  // Copy the payload to its own heap block so ASan sees any read past its end.
  std::vector<uint8_t> buf(payload, payload + psize);
  std::vector<int32_t> out(size_t(count) + 1, 0x5A5A5A5A);
  Status s = decode_level_payload(buf.data(), buf.size(), rows, cols, params, out.data());
  FUZZ_REQUIRE(out[size_t(count)] == 0x5A5A5A5A);
  if (!params_ok) FUZZ_REQUIRE(!s.ok());
  if (!s.ok()) {
    FUZZ_REQUIRE(s.is_format_error());
    return 0;
  }
  // Accepted: exactly this length. One byte less or one byte more must fail.
  std::vector<int32_t> scratch(size_t(count) + 1);
  if (psize > 0) {
    std::vector<uint8_t> shorter(buf.begin(), buf.end() - 1);
    FUZZ_REQUIRE(!decode_level_payload(shorter.data(), shorter.size(), rows, cols, params, scratch.data()).ok());
  }
  std::vector<uint8_t> longer(buf);
  longer.push_back(0);
  FUZZ_REQUIRE(!decode_level_payload(longer.data(), longer.size(), rows, cols, params, scratch.data()).ok());
  longer.back() = 0x80;
  FUZZ_REQUIRE(!decode_level_payload(longer.data(), longer.size(), rows, cols, params, scratch.data()).ok());
  // And decodes identically a second time (no hidden state).
  std::vector<int32_t> out2(size_t(count) + 1, 0x5A5A5A5A);
  FUZZ_REQUIRE(decode_level_payload(buf.data(), buf.size(), rows, cols, params, out2.data()).ok());
  FUZZ_REQUIRE(std::equal(out2.begin(), out2.end() - 1, out.begin()));
#ifdef NNPRESS_WITH_ENCODER
  // Levels that decoded cleanly re-encode (same params) and decode back.
  std::vector<uint8_t> again;
  encode_level_payload(out.data(), rows, cols, params, &again);
  std::vector<int32_t> out3(size_t(count) + 1, 0x5A5A5A5A);
  FUZZ_REQUIRE(decode_level_payload(again.data(), again.size(), rows, cols, params, out3.data()).ok());
  FUZZ_REQUIRE(std::equal(out3.begin(), out3.end() - 1, out.begin()));
#endif
  return 0;
}
