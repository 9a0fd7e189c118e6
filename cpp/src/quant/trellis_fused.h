// Private to the trellis: the ISA-neutral parts of the fused steps (avx2/trellis_avx2.cpp,
// avx512/trellis_avx512.cpp), which run the search of trellis_soa.h one weight at a time with every
// state's path in registers: which passes they cover, the Exp-Golomb bucket of a remainder, the
// pass set-up (banks, committed models, live extents), each row's start, the extents' growth and
// the row's end (the trace-back, with the path's rate and distortion). Internal linkage, as
// trellis_soa.h: every translation unit compiles its own copy with its own ISA flags.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "trellis_soa.h"

namespace nnpress::trellis_detail {
namespace {

// Prefix bucket of Exp-Golomb remainder `rem` (as code_level computes it).
inline uint32_t eg_bucket(uint64_t rem, uint32_t eg_order) {
  return uint32_t(63 - __builtin_clzll((rem >> eg_order) + 1));
}

// The fused steps do not price Exp-Golomb buckets past the shared last prefix model (trellis_soa
// prices those bin by bin). True when no candidate of the pass can have one: the largest candidate
// index of a weight is floor(|w / step|) + 2, at least 4.
template <class W, class F>
bool fused_covers(const PassArgs<W, F>& a) {
  const uint32_t n = a.params.unary_len < uint32_t(cabac::kMaxUnaryFlags) ? a.params.unary_len
                                                                          : uint32_t(cabac::kMaxUnaryFlags);
  double top = 0.0;
  for (uint64_t r = 0; r < a.rows; ++r) {
    const W* w = a.weights + r * a.cols;
    const double row_step = a.step * (a.scales.row ? a.scales.row[r] : 1.0);
    if (a.scales.col) {
      for (uint64_t i = 0; i < a.cols; ++i) top = std::max(top, std::fabs(double(w[i]) / (row_step * a.scales.col[i])));
    } else {
      double m = 0.0;
      for (uint64_t i = 0; i < a.cols; ++i) m = std::max(m, std::fabs(double(w[i])));
      top = std::max(top, m / row_step);
    }
  }
  const uint64_t index = std::max<uint64_t>(uint64_t(top) + 2, 4);
  const uint64_t mag = (index + 1) >> 1;
  if (mag <= n) return true;
  return eg_bucket(mag - n - 1, a.params.eg_order) < uint32_t(cabac::kPrefixContexts);
}

// The pass set-up of a fused step, as trellis_soa's: both banks at the initial models, the
// committed models (the carried contexts or the initial ones) and the live extents of the unary
// chains and the Exp-Golomb prefix they imply.
template <class W, class F>
NNPRESS_INLINE void fused_begin_pass(const PassArgs<W, F>& args, Workspace& ws, uint32_t* committed,
                                     uint32_t& live_greater, uint32_t& live_eg) {
  for (int k = 0; k < 2; ++k)
    for (Row& r : ws.banks[k].row)
      for (uint32_t& m : r) m = kInitialModel;
  live_greater = live_eg = 0;
  if (args.contexts) {
    pack_contexts(*args.contexts, committed);
    for (int g = 0; g < 2; ++g) {
      const uint32_t top = live_extent(committed, kGreaterRow + g * cabac::kMaxUnaryFlags, cabac::kMaxUnaryFlags);
      live_greater = top > live_greater ? top : live_greater;
    }
    live_eg = live_extent(committed, kEgRow, cabac::kPrefixContexts);
  } else {
    for (int m = 0; m < kModelRows; ++m) committed[m] = kInitialModel;
  }
}

// Row r's start: fresh contexts at a chunk boundary, and lane 0 of `cur` (state 0, the only live
// one) holding the committed models of every live row.
NNPRESS_INLINE void fused_begin_row(uint64_t r, uint64_t chunk_rows, Bank& cur, uint32_t* committed,
                                    uint32_t live_greater, uint32_t live_eg) {
  if (chunk_rows && r && r % chunk_rows == 0)
    for (int m = 0; m < kModelRows; ++m) committed[m] = kInitialModel;
  for (int q = 0; q < kGreaterRow; ++q) cur.row[q][0] = committed[q];
  for (int g = 0; g < 2; ++g)
    for (uint32_t n = 0; n < live_greater; ++n) {
      const int q = kGreaterRow + g * cabac::kMaxUnaryFlags + int(n);
      cur.row[q][0] = committed[q];
    }
  for (uint32_t n = 0; n < live_eg; ++n) cur.row[kEgRow + n][0] = committed[kEgRow + n];
}

// The live extents after a weight whose survivors update the unary flags below chain_top (at most
// N + 1: only N flag models exist) and the prefix models below eg_top; returns how many unary rows
// the move updates (the rest of the live ones are only moved).
NNPRESS_INLINE uint32_t fused_grow(uint32_t unary_len, uint32_t chain_top, uint32_t eg_top, uint32_t& live_greater,
                                   uint32_t& live_eg) {
  const uint32_t touched = chain_top < unary_len ? chain_top : unary_len;
  live_greater = touched > live_greater ? touched : live_greater;
  live_eg = eg_top > live_eg ? eg_top : live_eg;
  return chain_top < live_greater ? chain_top : live_greater;
}

// The end of a row of a fused step: finish_row (trellis_soa.h) with the chosen path's rate and
// distortion taken from the path itself rather than carried per state through the search: its
// rate as the sum of each weight's step rate (step_rate[i * 8 + t]: the rate a step added on the
// way into state t), its distortion as the sum, in step order, of each chosen entry's f * d * d
// (d = w - double(index) * step, formed as the steps form their candidates' distortions), which is
// the double the search would carry along the path. index_base[i] is the signed base index of
// weight i's candidates (sgn * base, as candidates_of gives them), so the trace-back takes the
// chosen entry's reconstruction index without dividing again.
template <class W, class F, class StepOf>
void finish_fused_row(const double* cost, const Bank& bank, const uint8_t* decisions, const int32_t* index_base,
                      const uint32_t* step_rate, const W* w_row, const F* importance_row, const StepOf& step_of,
                      uint64_t cols, int32_t* q_row, float* recon_row, double* dist_of, uint32_t* committed,
                      uint64_t& rate_total, double& dist_total) {
  const int best = best_final_state(cost, cols, q_row, recon_row, dist_total);
  if (best < 0) return;
  for (int m = 0; m < kModelRows; ++m) committed[m] = bank.row[m][best];
  uint64_t rate = 0;
  int state = best;
  for (uint64_t i = cols; i-- > 0;) {
    const uint8_t d = decisions[size_t(i) * kDqStates + state];
    rate += step_rate[size_t(i) * kDqStates + state];
    // (Signs applied without branches: they are as likely one as the other.)
    const int64_t sb = index_base[i], sm = sb >> 63, base = (sb ^ sm) - sm;
    const int j = d >> 3;
    const int64_t au = j == 0 ? 0 : j <= kUnionCandidates ? base + j - 1 : j - kUnionCandidates;
    const int64_t u = (au ^ sm) - sm;
    q_row[i] = int32_t((((au + 1) >> 1) ^ sm) - sm);
    const double step = step_of(i);
    if (recon_row) recon_row[i] = float(double(u) * step);
    const double e = double(w_row[i]) - double(u) * step;
    const double f = importance_row ? double(importance_row[i]) : 1.0;
    dist_of[i] = f * e * e;
    state = d & 7;
  }
  double dist = 0.0;
  for (uint64_t i = 0; i < cols; ++i) dist += dist_of[i];
  rate_total += rate;
  dist_total += dist;
}

// What a fused step keeps per weight of a row for finish_fused_row: each weight's signed base
// index, the step rate into every state, and room for the chosen entries' distortions.
struct FusedRowStore {
  std::vector<int32_t> index_base;
  std::vector<uint32_t> step_rate;
  std::vector<double> dist;
  explicit FusedRowStore(uint64_t cols) : index_base(cols), step_rate(size_t(cols) * kDqStates), dist(cols) {}
};

}  // namespace
}  // namespace nnpress::trellis_detail
