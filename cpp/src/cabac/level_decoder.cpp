#include <cstring>
#include <string>

#include "nnpress/cabac/bin_decoder.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/format/crc.h"

namespace nnpress {

Status check_level_params(const LevelParams& p) {
  if (p.unary_len > uint32_t(cabac::kMaxUnaryFlags))
    return corrupt("level stream: unary length " + std::to_string(p.unary_len) + " exceeds " +
                   std::to_string(cabac::kMaxUnaryFlags));
  if (p.eg_order > 30) return corrupt("level stream: Exp-Golomb order " + std::to_string(p.eg_order) + " exceeds 30");
  return Status::Ok();
}

Status decode_level_payload(const uint8_t* data, size_t size, uint64_t rows, uint64_t cols, const LevelParams& params,
                            int32_t* out) {
  if (data == nullptr && size != 0) return invalid_argument("decode_level_payload: null data");
  Status s = check_level_params(params);
  if (!s.ok()) return s;
  if (rows != 0 && cols != 0 && out == nullptr) return invalid_argument("decode_level_payload: null output");
  const uint64_t count = rows * cols;
  if (rows != 0 && count / rows != cols) return limit_exceeded("level payload: rows x cols overflows");
  if (count > (uint64_t(size) + 2) * kMaxLevelsPerPayloadByte)
    return corrupt("level payload: " + std::to_string(count) + " levels cannot fit in " + std::to_string(size) +
                   " bytes");
  if (size < 2) return truncated("level payload: " + std::to_string(size) + " bytes, at least 2 needed");
  cabac::BinDecoder dec(data, size);
  cabac::WeightContexts ctx;
  if (!cabac::code_rows(dec, ctx, params, out, rows, cols)) {
    if (dec.overrun())
      return truncated("level payload: data ends before all levels are decoded (" + std::to_string(size) + " bytes)");
    return corrupt("level payload: a level outside the int32 range was coded (corrupt data)");
  }
  if (dec.terminate() != 1 || !dec.finish()) {
    if (dec.overrun())
      return truncated("level payload: data ends before the end-of-stream marker (" + std::to_string(size) + " bytes)");
    return corrupt(
        "level payload: end-of-stream marker not found where expected (corrupt data or "
        "wrong length: consumed " +
        std::to_string(dec.position()) + " of " + std::to_string(size) + " bytes)");
  }
  return Status::Ok();
}

Status read_level_stream_info(const uint8_t* data, size_t size, LevelStreamInfo* info, const DecodeLimits& limits) {
  if (data == nullptr && size != 0) return invalid_argument("read_level_stream_info: null data");
  if (size < 4 + 1 + 2 + 2 + 4) {
    if (size >= 3 && std::memcmp(data, "NPL", 3) != 0)
      return corrupt("level stream: bad magic (not an nnpress level stream)");
    return truncated("level stream: " + std::to_string(size) + " bytes is shorter than the smallest stream");
  }
  if (std::memcmp(data, "NPL", 3) != 0) return corrupt("level stream: bad magic (not an nnpress level stream)");
  if (data[3] != kLevelStreamVersion)
    return Status(StatusCode::kUnsupported, "level stream: format version " + std::to_string(data[3]) +
                                                " is not supported (this build reads version " +
                                                std::to_string(kLevelStreamVersion) + ")");
  const size_t body = size - 4;  // bytes covered by the CRC
  uint32_t stored;
  std::memcpy(&stored, data + body, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  stored = __builtin_bswap32(stored);
#endif
  if (crc32c(data, body) != stored) return corrupt("level stream: checksum mismatch (corrupt or truncated data)");
  size_t pos = 4;
  const unsigned ndim = data[pos++];
  if (ndim > kMaxDims) return corrupt("level stream: " + std::to_string(ndim) + " dimensions (at most 8)");
  info->shape.assign(ndim, 0);
  uint64_t count = 1;
  uint64_t nonzero_product = 1;  // bounds every dimension even when another one is 0
  bool overflow = false;
  for (unsigned d = 0; d < ndim; ++d) {
    uint64_t v = 0;
    int shift = 0;
    for (;;) {
      if (pos >= body) return truncated("level stream: header ends inside dimension " + std::to_string(d));
      const uint8_t b = data[pos++];
      if (shift == 63 && (b & 0x7E))
        return corrupt("level stream: dimension " + std::to_string(d) + " overflows 64 bits");
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) break;
      shift += 7;
      if (shift > 63) return corrupt("level stream: dimension " + std::to_string(d) + " overflows 64 bits");
    }
    info->shape[d] = v;
    if (v != 0 && count > UINT64_MAX / v) overflow = true;
    count *= v;
    if (v != 0) {
      if (nonzero_product > UINT64_MAX / v) overflow = true;
      nonzero_product *= v;
    }
  }
  if (overflow) return limit_exceeded("level stream: element count overflows 64 bits");
  if (nonzero_product > limits.max_elements)
    return limit_exceeded("level stream: dimensions (product of the non-zero ones " + std::to_string(nonzero_product) +
                          ") exceed the limit of " + std::to_string(limits.max_elements) + " elements");
  if (pos + 2 > body) return truncated("level stream: header ends before the coding parameters");
  info->params.unary_len = data[pos++];
  info->params.eg_order = data[pos++];
  Status s = check_level_params(info->params);
  if (!s.ok()) return s;
  info->count = count;
  rows_cols_of(info->shape, &info->rows, &info->cols);
  info->payload_offset = pos;
  info->payload_size = body - pos;
  if (count > limits.max_elements)
    return limit_exceeded("level stream: " + std::to_string(count) + " elements exceed the limit of " +
                          std::to_string(limits.max_elements));
  if (count > (uint64_t(info->payload_size) + 2) * kMaxLevelsPerPayloadByte)
    return corrupt("level stream: header claims " + std::to_string(count) + " levels but the payload has only " +
                   std::to_string(info->payload_size) + " bytes");
  return Status::Ok();
}

Status decode_level_stream(const uint8_t* data, size_t size, const LevelStreamInfo& info, int32_t* out,
                           uint64_t out_count) {
  if (out_count != info.count)
    return invalid_argument("decode_level_stream: output holds " + std::to_string(out_count) + " levels, stream has " +
                            std::to_string(info.count));
  if (info.payload_offset + info.payload_size > size)
    return invalid_argument("decode_level_stream: info does not match data");
  return decode_level_payload(data + info.payload_offset, info.payload_size, info.rows, info.cols, info.params, out);
}

}  // namespace nnpress
