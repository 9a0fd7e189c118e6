// nnpress/cabac/bin_encoder.h — the binary arithmetic encoder (CABAC engine, encoder side).
//
// CONTRACT
//   BinEncoder appends a CABAC bitstream to a caller-owned std::vector<uint8_t> (never cleared,
//   only appended to). It holds only engine state (low, range, pending bytes); the probability
//   model of each regular bin is passed on every call, so the engine knows nothing of the syntax
//   and one set of models can be run through the encoder, the rate estimator or the decoder
//   (binarization.h). Engine: 9-bit range in [256, 510], LPS range from the table
//   kRangeLpsOfState (context_model.h), renormalisation by whole bits, carry propagation through
//   a buffered byte plus a count of pending 0xFF bytes (as in the HEVC/VVC engines).
//   Bins: regular (bin(b, ctx): context-coded, updates ctx), bypass (bypass(value, nbits):
//   equiprobable, no model) and terminating (terminate(b)). A stream is closed by terminate(1)
//   followed by finish(), which settles the carry, flushes the interval and writes a stop bit '1'
//   padded with zeros to a byte boundary. BinDecoder (bin_decoder.h) checks exactly that ending.
//   bin() and bypass() return their value argument (the Coder interface of binarization.h).
//   Nothing here fails or throws, except std::bad_alloc from the output vector.
//
// SURPRISES
//   - Bytes are written only once they are settled (a carry can still change them); the
//     output is complete only after finish(). Call terminate(1) and finish() exactly once each, at
//     the end; the encoder cannot be reused afterwards.
//   - bypass() takes nbits in 0..32, most significant bit first; bits of `value` above nbits
//     are ignored.
#pragma once

#include <cstdint>
#include <vector>

#include "nnpress/cabac/context_model.h"

namespace nnpress::cabac {

class BinEncoder {
 public:
  static constexpr bool kDecoding = false;

  explicit BinEncoder(std::vector<uint8_t>* out) : out_(out) {}

  // Regular (context-coded) bin; updates the model. Returns bin (so one syntax template can
  // serve encoder, estimator and decoder; see binarization.h).
  NNPRESS_INLINE unsigned bin(unsigned bin, ContextModel& ctx) {
    const unsigned mps = ctx.mps();
    const uint32_t lps = kRangeLpsOfState[ctx.state][(range_ >> 5) & 7];
    range_ -= lps;
    if (bin != mps) {
      const int shift = __builtin_clz(lps) - 23;  // bring lps up to [256, 511)
      low_ = (low_ + range_) << shift;
      range_ = lps << shift;
      bits_left_ -= shift;
      write_if_needed();
    } else if (range_ < 256) {
      low_ <<= 1;
      range_ <<= 1;
      --bits_left_;
      write_if_needed();
    }
    ctx.update(bin);
    return bin;
  }

  // nbits (0..32) equiprobable bins, most significant first. Returns value.
  NNPRESS_INLINE uint32_t bypass(uint32_t value, int nbits) {
    while (nbits > 8) {
      nbits -= 8;
      bypass_chunk((value >> nbits) & 0xFF, 8);
    }
    if (nbits > 0) bypass_chunk(value & ((1u << nbits) - 1), nbits);
    return value;
  }

  // Terminating bin (probability fixed by the engine: range 2). terminate(0) may be coded any
  // number of times; terminate(1) ends the stream and must be followed by finish().
  void terminate(unsigned bin) {
    range_ -= 2;
    if (bin) {
      low_ += range_;
      low_ <<= 7;
      range_ = 2 << 7;
      bits_left_ -= 7;
    } else if (range_ >= 256) {
      return;
    } else {
      low_ <<= 1;
      range_ <<= 1;
      --bits_left_;
    }
    write_if_needed();
  }

  // Flush after terminate(1): settles the carry, writes the remaining bits of low, then the
  // stop bit and zero padding.
  void finish() {
    if ((low_ >> (32 - bits_left_)) != 0) {  // carry into the buffered byte
      out_->push_back(uint8_t(buffered_byte_ + 1));
      for (; pending_ff_ > 1; --pending_ff_) out_->push_back(0x00);
      low_ -= 1u << (32 - bits_left_);
    } else {
      if (pending_ff_ > 0) out_->push_back(uint8_t(buffered_byte_));
      for (; pending_ff_ > 1; --pending_ff_) out_->push_back(0xFF);
    }
    pending_ff_ = 0;
    // Remaining settled bits: (24 - bits_left_) bits of low >> 8, then the stop bit.
    const int nbits = 24 - bits_left_;
    uint64_t tail = (uint64_t(low_ >> 8) & ((uint64_t(1) << nbits) - 1)) << 1 | 1u;
    int total = nbits + 1;
    const int pad = (8 - total % 8) % 8;
    tail <<= pad;
    total += pad;
    for (int s = total - 8; s >= 0; s -= 8) out_->push_back(uint8_t(tail >> s));
  }

 private:
  NNPRESS_INLINE void bypass_chunk(uint32_t value, int nbits) {  // nbits in 1..8
    low_ <<= nbits;
    low_ += range_ * value;
    bits_left_ -= nbits;
    write_if_needed();
  }

  void write_if_needed() {
    if (bits_left_ < 12) write_byte();
  }

  void write_byte() {
    const uint32_t lead = low_ >> (24 - bits_left_);  // 9 bits: carry + byte
    bits_left_ += 8;
    low_ &= 0xFFFFFFFFu >> bits_left_;
    if (lead == 0xFF) {
      ++pending_ff_;
    } else if (pending_ff_ > 0) {
      const uint32_t carry = lead >> 8;
      out_->push_back(uint8_t(buffered_byte_ + carry));
      const uint8_t fill = uint8_t(0xFF + carry);
      for (; pending_ff_ > 1; --pending_ff_) out_->push_back(fill);
      buffered_byte_ = lead & 0xFF;
    } else {
      pending_ff_ = 1;
      buffered_byte_ = lead;
    }
  }

  std::vector<uint8_t>* out_;
  uint32_t low_ = 0;
  uint32_t range_ = 510;
  int bits_left_ = 23;
  uint32_t pending_ff_ = 0;     // buffered byte (if >0) followed by pending_ff_-1 bytes of 0xFF
  uint32_t buffered_byte_ = 0xFF;
};

}  // namespace nnpress::cabac
