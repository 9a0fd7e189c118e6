// nnpress/cabac/bin_decoder.h — the binary arithmetic decoder (CABAC engine, decoder side).
//
// CONTRACT
//   BinDecoder(data, size) decodes a stream written by BinEncoder. It NEVER reads outside
//   [data, data + size): past the end it feeds zero bytes and counts them. It never throws and
//   never loops by itself; callers decode a bounded number of bins and then call finish(),
//   which returns true only if the stream ended exactly as BinEncoder::finish() ends it: the
//   terminating bin was 1, the stop bit sits where the engine expects it, and every byte was
//   consumed and no byte beyond the end was needed. A truncated, extended or garbage stream
//   therefore fails finish() (or hits an over-read earlier: see overrun()).
//
// SURPRISES
//   - A garbage stream still decodes to *some* bins; the caller must treat its output as junk
//     unless finish() returns true, and should stop early when overrun() turns true (the stream
//     has run out, so everything decoded from here on is invented).
//   - The decoder reads 2 bytes ahead at start; a valid stream is always at least 2 bytes long.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nnpress/cabac/context_model.h"

namespace nnpress::cabac {

class BinDecoder {
 public:
  static constexpr bool kDecoding = true;

  BinDecoder(const uint8_t* data, size_t size) : data_(data), size_(size) {
    value_ = (read_byte() << 8);
    value_ |= read_byte();
  }

  // Regular bin: decodes with the model and updates it. The argument is ignored (it exists so
  // one syntax template serves encoder and decoder; see binarization.h).
  NNPRESS_INLINE unsigned bin(unsigned /*unused*/, ContextModel& ctx) {
    // Branch-free: the MPS/LPS outcome is data, so select with conditional moves and
    // renormalise both paths with one count-leading-zeros (MPS: shift 0 or 1; LPS: 1..8).
    const uint64_t lps = kRangeLps[ctx.lps_index()][(range_ >> 5) & 7];
    const uint64_t mps_range = range_ - lps;
    const uint64_t scaled = mps_range << 7;
    const bool is_lps = value_ >= scaled;
    const unsigned bin = ctx.mps() ^ unsigned(is_lps);
    value_ -= is_lps ? scaled : 0u;
    range_ = is_lps ? lps : mps_range;
    const int shift = __builtin_clz(uint32_t(range_)) - 23;
    range_ <<= shift;
    value_ <<= shift;
    bits_needed_ += shift;
    if (bits_needed_ >= 0) {
      value_ |= read_byte() << bits_needed_;
      bits_needed_ -= 8;
    }
    ctx.update(bin);
    return bin;
  }

  // nbits (0..32) bypass bins, most significant first. The argument is ignored.
  NNPRESS_INLINE uint32_t bypass(uint32_t /*unused*/, int nbits) {
    uint32_t v = 0;
    while (nbits > 0) {
      const int n = nbits > 8 ? 8 : nbits;
      v = (v << n) | bypass_chunk(n);
      nbits -= n;
    }
    return v;
  }

  unsigned terminate(unsigned /*unused*/ = 0) {
    range_ -= 2;
    const uint64_t scaled = range_ << 7;
    if (value_ >= scaled) return 1;  // end of stream: no renormalisation
    if (scaled < (256u << 7)) {
      range_ = scaled >> 6;
      value_ <<= 1;
      if (++bits_needed_ == 0) {
        bits_needed_ = -8;
        value_ |= read_byte();
      }
    }
    return 0;
  }

  // After terminate() returned 1: true iff the stop bit and byte alignment are where the encoder
  // puts them and the stream was consumed exactly (no missing, no extra bytes).
  bool finish() const {
    if (overrun_ != 0 || pos_ != size_ || pos_ == 0) return false;
    const unsigned last = data_[pos_ - 1];
    return ((last << (8 + bits_needed_)) & 0xFF) == 0x80;
  }

  // True once the decoder has needed bytes beyond the end of the buffer.
  bool overrun() const { return overrun_ != 0; }
  size_t position() const { return pos_; }

 private:
  NNPRESS_INLINE uint64_t read_byte() {
    if (pos_ < size_) return data_[pos_++];
    ++overrun_;
    return 0;
  }

  NNPRESS_INLINE uint32_t bypass_chunk(int n) {  // n in 1..8
    value_ = (value_ << n);
    bits_needed_ += n;
    if (bits_needed_ >= 0) {
      value_ |= read_byte() << bits_needed_;
      bits_needed_ -= 8;
    }
    uint64_t scaled = range_ << (7 + n);
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) {
      scaled >>= 1;
      v <<= 1;
      if (value_ >= scaled) {
        v |= 1;
        value_ -= scaled;
      }
    }
    return v;
  }

  // 64-bit engine state on purpose: decoded levels are written through int32_t pointers, and
  // 32-bit (u)int members could alias them, forcing the compiler to reload the state from memory
  // after every output store. int64_t/uint64_t cannot alias int32_t, so the state stays in registers.
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  uint64_t overrun_ = 0;
  uint64_t value_ = 0;
  uint64_t range_ = 510;
  int64_t bits_needed_ = -8;
};

}  // namespace nnpress::cabac
