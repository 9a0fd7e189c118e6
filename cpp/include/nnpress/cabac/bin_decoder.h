// nnpress/cabac/bin_decoder.h — the binary arithmetic decoder (CABAC engine, decoder side).
//
// CONTRACT
//   BinDecoder(data, size) decodes a stream written by BinEncoder. It NEVER reads outside
//   [data, data + size): past the end it feeds zero bytes and counts them. It never throws and
//   never loops by itself; callers decode a bounded number of bins, then call terminate() and,
//   if it returned 1, finish(). terminate() == 1 && finish() holds only if the stream ended
//   exactly as BinEncoder::terminate(1) + finish() end it: the terminating bin is 1, the stop bit
//   sits where the engine expects it, every byte was consumed and no byte beyond the end was
//   needed. A truncated, extended or garbage stream therefore fails that check (or hits an
//   over-read earlier: see overrun()). finish() does not look at the terminating bin itself:
//   called without a terminate() that returned 1 its answer means nothing.
//   bin() and bypass() ignore their value argument and return the decoded value (the Coder
//   interface of binarization.h); position() is the number of bytes consumed so far, at most size.
//
// SURPRISES
//   - A garbage stream still decodes to *some* bins; the caller must treat its output as junk
//     unless the end check above passes, and should stop early when overrun() turns true (the
//     stream has run out, so everything decoded from here on is invented).
//   - The constructor reads 6 bytes (zeros past the end): the 2 bytes every valid stream has at
//     least, plus 32 bits of look-ahead that the decoder keeps ahead of the engine from then on.
//     So it reads (zero-filled) bytes past the end of a stream that is still valid; overrun(),
//     position() and finish() account for that: they judge by the bytes the arithmetic decoding
//     has actually consumed, exactly as a decoder without look-ahead would.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nnpress/cabac/context_model.h"

namespace nnpress::cabac {

class BinDecoder {
 public:
  static constexpr bool kDecoding = true;

  BinDecoder(const uint8_t* data, size_t size) : data_(data), size_(size) {
    // The 16-bit window the engine compares against range << 7, followed by kLookahead bits.
    value_ = read_byte() << 8;
    value_ |= read_byte();
    value_ = (value_ << kLookahead) | read_word();
  }

  // Regular bin: decodes with the model and updates it. The argument is ignored (it exists so
  // one syntax template serves encoder and decoder; see binarization.h).
  NNPRESS_INLINE unsigned bin(unsigned /*unused*/, ContextModel& ctx) {
    // Branch-free: the MPS/LPS outcome is data, so both outcomes' next range and shift are
    // computed side by side and one is selected (conditional moves). The compare uses
    // value >> kShift, which does not wait for the LPS table load.
    const uint64_t lps = kRangeLpsOfState[ctx.state][(range_ >> 5) & 7];
    const uint64_t top = value_ >> kShift;
    const uint64_t mps_range = range_ - lps;
    const bool is_lps = top >= mps_range;
    const unsigned bin = ctx.mps() ^ unsigned(is_lps);
    const unsigned mps_shift = mps_range < 256 ? 1u : 0u;
    const unsigned lps_shift = unsigned(__builtin_clz(uint32_t(lps))) - 23u;
    const uint64_t reduced = is_lps ? value_ - (mps_range << kShift) : value_;
    const unsigned shift = is_lps ? lps_shift : mps_shift;
    range_ = is_lps ? (lps << lps_shift) : (mps_range << mps_shift);
    value_ = reduced << shift;
    unknown_ += shift;
    if (unknown_ >= 32) refill();
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

  // Terminating bin: 1 at the end of a stream (the engine is then left as it is, for finish()).
  unsigned terminate(unsigned /*unused*/ = 0) {
    range_ -= 2;
    if ((value_ >> kShift) >= range_) return 1;  // end of stream: no renormalisation
    if (range_ < 256) {
      range_ <<= 1;
      value_ <<= 1;
      if (++unknown_ >= 32) refill();
    }
    return 0;
  }

  // After terminate() returned 1: true iff the stop bit and byte alignment are where the encoder
  // puts them and the stream was consumed exactly (no missing, no extra bytes).
  bool finish() const {
    const uint64_t pos = consumed_bytes();
    if (pos != size_ || pos == 0) return false;
    const unsigned last = data_[pos - 1];
    // Bits of the last byte already shifted into the window: (shifts mod 8); the rest must be the
    // stop bit followed by zeros.
    return ((last << (total_shifts() & 7)) & 0xFF) == 0x80;
  }

  // True once the decoder has needed bytes beyond the end of the buffer (bytes merely read ahead
  // into the look-ahead window do not count).
  bool overrun() const { return consumed_bytes() > size_; }
  // Bytes consumed by the arithmetic decoding so far, capped at size (for error messages).
  size_t position() const {
    const uint64_t p = consumed_bytes();
    return p < size_ ? size_t(p) : size_;
  }

 private:
  // The window holds kLookahead bits read ahead beyond what the engine has shifted in; the
  // engine compares value >> kShift with the range. `unknown_` counts the bits shifted in since
  // the last refill (zeros so far, < 32 at every compare: they lie below the compared bits).
  static constexpr int kLookahead = 32;
  static constexpr int kShift = 7 + kLookahead;

  // Renormalisation shifts since the start: every byte the engine of a one-byte look-ahead
  // decoder would have read corresponds to 8 of them.
  uint64_t total_shifts() const { return (uint64_t(pos_) - 6) * 8 + unknown_; }
  // Bytes a decoder without look-ahead would have consumed so far: 2 + floor(shifts / 8).
  uint64_t consumed_bytes() const { return 2 + total_shifts() / 8; }

  NNPRESS_INLINE uint64_t read_byte() {
    const uint64_t b = pos_ < size_ ? data_[pos_] : 0;
    ++pos_;
    return b;
  }

  NNPRESS_INLINE uint64_t read_word() {  // 4 bytes, big endian; zeros past the end
    if (pos_ + 4 <= size_) {
      const uint8_t* p = data_ + pos_;
      pos_ += 4;
      return (uint64_t(p[0]) << 24) | (uint64_t(p[1]) << 16) | (uint64_t(p[2]) << 8) | p[3];
    }
    uint64_t w = 0;
    for (int i = 0; i < 4; ++i) w = (w << 8) | read_byte();
    return w;
  }

  NNPRESS_INLINE void refill() {
    unknown_ -= 32;
    value_ |= read_word() << unknown_;
  }

  NNPRESS_INLINE uint32_t bypass_chunk(int n) {  // n in 1..8
    value_ <<= n;
    unknown_ += n;
    if (unknown_ >= 32) refill();
    uint64_t scaled = range_ << (kShift + n);
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
  uint64_t size_;
  uint64_t pos_ = 0;       // bytes read into the window (may exceed size_: zeros were read)
  uint64_t value_ = 0;
  uint64_t range_ = 510;
  uint64_t unknown_ = 0;
};

}  // namespace nnpress::cabac
