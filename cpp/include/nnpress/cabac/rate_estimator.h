// nnpress/cabac/rate_estimator.h — what a bin costs, from the model's current state.
//
// CONTRACT
//   bin_cost(ctx, bin) is the cost in fractional bits (fixed point, kRateOne = 1 bit) of coding
//   `bin` with `ctx` as it is now. The table behind it is derived from the engine's own range
//   table (kRangeLpsOfState), averaged over the engine's range classes with the log-uniform weights a
//   range register settles into, so it prices the real coder, not an ideal one.
//   RateEstimator is a Coder (binarization.h): run the level syntax through it to get the bits
//   the encoder would spend, with contexts evolving exactly as the encoder's will. Bypass bins
//   cost exactly one bit each.
//
// SURPRISES
//   - The estimate excludes the stream header, the terminating bin and the final flush
//     (a few bytes per stream); level_coder.h's estimate_level_bits documents what it includes.
//   - kUpdate = false gives a "peek" estimator that prices without adapting the models (what RD
//     quantizers use to compare candidate levels before committing to one).
#pragma once

#include <cstdint>

#include "nnpress/cabac/context_model.h"

namespace nnpress::cabac {

constexpr int kRateBits = 16;
constexpr uint32_t kRateOne = 1u << kRateBits;  // 1 bit in fixed point

// kBinCostOfState[s][b] = cost of coding bin b in model state s (MPS or LPS cost of the state's
// LPS class). Defined in cabac/tables.cpp.
extern const uint32_t kBinCostOfState[kStates][2];

NNPRESS_INLINE uint32_t bin_cost(const ContextModel& ctx, unsigned bin) { return kBinCostOfState[ctx.state][bin != 0]; }

template <bool kUpdate = true>
class RateCounter {
 public:
  static constexpr bool kDecoding = false;

  NNPRESS_INLINE unsigned bin(unsigned b, ContextModel& ctx) {
    cost_ += bin_cost(ctx, b);
    if constexpr (kUpdate) ctx.update(b);
    return b;
  }
  NNPRESS_INLINE uint32_t bypass(uint32_t v, int nbits) {
    cost_ += uint64_t(nbits) * kRateOne;
    return v;
  }
  uint64_t cost() const { return cost_; }  // fixed point, kRateOne per bit
  double bits() const { return double(cost_) / kRateOne; }
  void reset() { cost_ = 0; }

 private:
  uint64_t cost_ = 0;
};

using RateEstimator = RateCounter<true>;
using RatePeek = RateCounter<false>;

}  // namespace nnpress::cabac
