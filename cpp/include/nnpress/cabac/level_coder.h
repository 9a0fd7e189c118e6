// nnpress/cabac/level_coder.h — code integer weight levels with DeepCABAC: payloads and framed streams.
//
// CONTRACT
//   Two layers:
//   1. Payloads: one independent CABAC stream for a block of `rows` x `cols` levels, starting
//      from fresh WeightContexts, ending with a terminating bin + stop bit. No header: the caller
//      (a framed stream below, or a .nnp chunk) records rows, cols, params and the byte length.
//   2. Framed level streams (what nnpress.encode_levels returns), format version 1:
//        offset 0   magic "NPL" + version byte 0x01
//               4   u8 ndim (0..8), then ndim dimensions as unsigned LEB128 varints
//               .   u8 unary_len (0..64), u8 eg_order (0..30)
//               .   CABAC payload
//         size-4    CRC-32C (little endian) of every byte before it
//      Rows for context reset = shape[0] for ndim >= 2, else one row.
//
//   Decoding never reads outside [data, data+size), allocates nothing in proportion to the claimed
//   size (the caller passes the output buffer, sized from read_level_stream_info, which has already
//   checked that the claimed element count is one the data can justify: every level costs at least
//   one regular bin, a regular bin at least log2(510/509) > 1/400 bit with this engine's tables, so
//   no valid payload of B bytes holds more than (B + 2) * 3200 levels), and returns a Status:
//   kTruncated / kCorrupt / kLimit / kUnsupported for bad data, kInvalidArgument for a bad call
//   (each function below lists its codes). Nothing throws except std::bad_alloc. On failure the
//   output buffer holds unspecified values.
//
// SURPRISES
//   - The encoder picks unary_len and eg_order per stream from the level histogram
//     (choose_level_params); pass explicit params to encode_level_payload to fix them.
//   - Encoder-side functions exist only when the library is built with NNPRESS_ENCODER=ON
//     (NNPRESS_WITH_ENCODER defined); decoding is always available.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "nnpress/cabac/binarization.h"
#include "nnpress/shape.h"
#include "nnpress/status.h"

namespace nnpress {

using cabac::LevelParams;

constexpr uint8_t kLevelStreamVersion = 1;
constexpr unsigned kMaxDims = 8;
// Upper bound of levels one payload byte can carry (see CONTRACT); used to reject headers that
// claim more elements than their data could hold before anything is allocated.
constexpr uint64_t kMaxLevelsPerPayloadByte = 3200;

struct DecodeLimits {
  // Per tensor / stream. Also bounds the product of the non-zero dimensions, so a shape such as
  // (2^60, 0) (no levels, but a huge loop bound or array shape) is rejected as kLimit.
  uint64_t max_elements = uint64_t(1) << 36;
};

struct LevelStreamInfo {
  std::vector<uint64_t> shape;
  uint64_t count = 0;  // product of shape (1 for ndim == 0)
  uint64_t rows = 0, cols = 0;
  LevelParams params;
  size_t payload_offset = 0, payload_size = 0;
};

// Validates params read from untrusted data: kCorrupt if unary_len > 64 or eg_order > 30.
Status check_level_params(const LevelParams& p);

// ---- decoding (always built) ----
// Decodes rows*cols levels from one payload into out (rows*cols int32). Checks termination and exact
// length. kInvalidArgument: null data with size > 0, null out with levels to decode. kCorrupt: bad
// params, more levels than `size` bytes can hold, a level outside int32, no end-of-stream marker
// where it belongs (garbage, or bytes after it). kTruncated: fewer than 2 bytes, or the data ends
// before the levels or the marker. kLimit: rows*cols overflows 64 bits.
Status decode_level_payload(const uint8_t* data, size_t size, uint64_t rows, uint64_t cols, const LevelParams& params,
                            int32_t* out);

// Parses and checks a framed stream's header and checksum; fills info (partly filled on failure).
// Allocates nothing big. kInvalidArgument: null data with size > 0. kCorrupt: not "NPL", CRC
// mismatch, more than 8 dimensions, a dimension varint beyond 64 bits, bad params, more levels than
// the payload can hold. kTruncated: shorter than the smallest stream (13 bytes) with a matching or
// incomplete magic, header ends early. kUnsupported: a version other than 1. kLimit: the element
// count overflows 64 bits or exceeds limits.max_elements (also the product of the non-zero dims).
Status read_level_stream_info(const uint8_t* data, size_t size, LevelStreamInfo* info,
                              const DecodeLimits& limits = DecodeLimits());

// Decodes a framed stream whose info came from read_level_stream_info (on the same data); out
// holds info.count levels. kInvalidArgument: out_count != info.count, or info's payload lies outside
// [data, data + size); otherwise the codes of decode_level_payload.
Status decode_level_stream(const uint8_t* data, size_t size, const LevelStreamInfo& info, int32_t* out,
                           uint64_t out_count);

#ifdef NNPRESS_WITH_ENCODER
// ---- encoding (NNPRESS_ENCODER=ON) ----
// Picks the unary length and Exp-Golomb order that minimise the estimated size (an entropy estimate
// from the magnitude histogram of at most 2^20 sampled levels). Never fails; the result passes
// check_level_params.
LevelParams choose_level_params(const int32_t* levels, uint64_t count);

// Size first, then decode speed: measures the real coded size (the coder's own rate estimator on a
// sample of whole rows) of the static choice and of a few shorter-unary candidates, and among those
// within `size_tolerance` (relative) of the smallest returns the one with the least decoder work
// (context-coded bins; bypass bins count 0.35). Adaptive contexts make many pairs cost almost the
// same while their decode time differs widely (bench/RESULTS.md). Used by encode_level_stream and the
// .nnp writer. Never fails; the result passes check_level_params.
LevelParams choose_level_params_for_speed(const int32_t* levels, uint64_t rows, uint64_t cols,
                                          double size_tolerance = 0.001);

// Appends one payload for rows*cols levels to *out. Unchecked: levels holds rows*cols values and
// params passed check_level_params (choose_level_params* always do).
void encode_level_payload(const int32_t* levels, uint64_t rows, uint64_t cols, const LevelParams& params,
                          std::vector<uint8_t>* out);

// Bits the payload's levels cost, from the coder's own contexts (excludes the terminating bin and
// the flush: about 2 bytes). Unchecked, as encode_level_payload.
double estimate_level_bits(const int32_t* levels, uint64_t rows, uint64_t cols, const LevelParams& params);

// bits[c] = estimate_level_bits(levels, rows, cols, params[c]) for c < count, exactly, from one
// pass over the levels plus one over the magnitudes above each unary length (what
// choose_level_params_for_speed prices its candidates with). Unchecked, as estimate_level_bits.
void estimate_level_bits_many(const int32_t* levels, uint64_t rows, uint64_t cols, const LevelParams* params,
                              size_t count, double* bits);

// Appends a complete framed stream (header, payload, CRC) to *out. kInvalidArgument (nothing
// appended) if ndim > 8, the shape does not match count, or levels is null with count > 0.
Status encode_level_stream(const int32_t* levels, uint64_t count, const std::vector<uint64_t>& shape,
                           std::vector<uint8_t>* out);

// Payload bits (as estimate_level_bits) for the levels of a framed stream with the params the
// encoder would choose. Unchecked: shape must match count.
double estimate_level_stream_bits(const int32_t* levels, uint64_t count, const std::vector<uint64_t>& shape);
#endif

}  // namespace nnpress
