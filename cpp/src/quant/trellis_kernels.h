// Private to the trellis (quant/trellis.cpp): the per-state context models in structure-of-arrays
// form and the kernels that work on all 8 states at once (scalar here, AVX2 in avx2/).
//
// Every ContextModel of cabac::WeightContexts becomes one row of 8 lanes (one per trellis state),
// each lane packing the model's two estimates as fast | slow << 16 (the coding state is
// (fast + slow) >> 8, as ContextModel::state_of). Row order: sig[3][2] (rows 0..5), sign[3]
// (6..8), greater[0][0..63] (9..72), greater[1][0..63] (73..136), eg_prefix[0..23] (137..160).
// The update rule and the bin costs are exactly cabac::ContextModel::update and
// cabac::bin_cost: the kernels are integer-only, so every ISA gives identical rates.
#pragma once

#include <cstdint>

#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cabac/weight_contexts.h"

namespace nnpress::trellis_detail {

constexpr int kLanes = 8;  // = kDqStates
constexpr int kSigRow = 0, kSignRow = 6, kGreaterRow = 9, kEgRow = kGreaterRow + 2 * cabac::kMaxUnaryFlags;
constexpr int kModelRows = kEgRow + cabac::kPrefixContexts;
constexpr uint32_t kInitialModel = uint32_t(cabac::kProbHalf) | (uint32_t(cabac::kProbHalf) << 16);

using Row = uint32_t[kLanes];  // the AVX2 kernels need every Row they load or store 32-byte aligned

struct alignas(64) Bank {
  Row row[kModelRows];
};

NNPRESS_INLINE uint32_t pack(const cabac::ContextModel& m) { return uint32_t(m.fast) | (uint32_t(m.slow) << 16); }
NNPRESS_INLINE cabac::ContextModel unpack(uint32_t v) {
  cabac::ContextModel m;
  m.fast = uint16_t(v & 0xFFFF);
  m.slow = uint16_t(v >> 16);
  m.state = cabac::ContextModel::state_of(m.fast, m.slow);
  return m;
}
NNPRESS_INLINE uint32_t state_of(uint32_t v) { return ((v & 0xFFFF) + (v >> 16)) >> 8; }
NNPRESS_INLINE uint32_t cost_of(uint32_t v, unsigned bin) { return cabac::kBinCostOfState[state_of(v)][bin != 0]; }
// cabac::ContextModel::update on a packed model.
NNPRESS_INLINE uint32_t updated(uint32_t v, unsigned bin) {
  cabac::ContextModel m = unpack(v);
  m.update(bin);
  return pack(m);
}

struct Kernels {
  // prefix[0] = 0, prefix[n + 1] = prefix[n] + cost of a 1 bin in chain[n], per lane, n < count.
  void (*one_prefix)(const Row* chain, uint32_t count, Row* prefix);
  // dst[r][t] = src[r][from[t]] for r < count.
  void (*permute)(const Row* src, Row* dst, uint32_t count, const uint8_t* from);
  // As permute, and lane t's models r < mag[t] are then updated with bin (mag[t] > r + 1): the
  // unary flags of a level of magnitude mag[t] (capped at the unary length + 1 by the caller).
  void (*permute_chain)(const Row* src, Row* dst, uint32_t count, const uint8_t* from, const uint32_t* mag);
  // As permute, and lane t's model sel[t] (if < count) is then updated with bin[t] (0 or 1): the
  // one significance or sign flag a level codes.
  void (*permute_select)(const Row* src, Row* dst, uint32_t count, const uint8_t* from, const uint32_t* sel,
                         const uint32_t* bin);
  // rate[t] = base[t] + pre[t] + eg[t] + (cost of `bin` in model[t]) + add, and
  // out[t] = (cost[t] + dist) + lambda * double(rate[t]) in double, rounded as written (no FMA):
  // one candidate's rate and path cost from every state. Rates stay below 2^31.
  void (*lane_costs)(const Row& base, const Row& pre, const Row& eg, const Row& model, uint32_t bin, uint32_t add,
                     const double* cost, double dist, double lambda, Row& rate, double* out);
};

const Kernels& scalar_kernels();
const Kernels* avx2_kernels();  // null when this build has no AVX2 trellis kernels

}  // namespace nnpress::trellis_detail
