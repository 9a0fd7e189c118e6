// Private helpers shared by the quantizer sources (not installed).
#pragma once

#include <cstdint>

#include "nnpress/cabac/rate_estimator.h"

namespace nnpress::quant_detail {

// The cheapest any regular bin can be (fixed point): a lower bound for pricing shortcuts.
inline uint32_t min_bin_cost() {
  static const uint32_t m = [] {
    uint32_t best = UINT32_MAX;
    for (int s = 0; s < cabac::kStates; ++s)
      for (int b = 0; b < 2; ++b)
        if (cabac::kBinCostOfState[s][b] < best) best = cabac::kBinCostOfState[s][b];
    return best;
  }();
  return m;
}

}  // namespace nnpress::quant_detail
