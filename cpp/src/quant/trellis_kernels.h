// Private to the trellis (quant/trellis.cpp): the per-state context models in structure-of-arrays
// form and what the kernels that work on all 8 states at once do (scalar: trellis_soa.h; AVX2:
// avx2/trellis_avx2_kernels.h; AVX-512: avx512/trellis_avx512.cpp).
//
// Every ContextModel of cabac::WeightContexts becomes one row of 8 lanes (one per trellis state),
// each lane packing the model's two estimates as fast | slow << 16 (the coding state is
// (fast + slow) >> 8, as ContextModel::state_of). Row order: sig[3][2] (rows 0..5), sign[3]
// (6..8), greater[0][0..63] (9..72), greater[1][0..63] (73..136), eg_prefix[0..23] (137..160).
// The update rule and the bin costs are exactly cabac::ContextModel::update and
// cabac::bin_cost: the kernels are integer-only, so every ISA gives identical rates.
#pragma once

#include <cstdint>
#include <limits>

#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cabac/weight_contexts.h"
#include "nnpress/quant/pass_args.h"

namespace nnpress::trellis_detail {

constexpr int kLanes = 8;  // = kDqStates
constexpr int kUnionCandidates = 4;  // reconstruction indices b..b+3
constexpr int kCandidates = 7;       // zero, b..b+3, and the smallest of each quantizer: 1, 2
constexpr uint32_t kDeadBranch = 0xFFFFFFFF;  // select_branches: no branch reaches the state
constexpr int kSigRow = 0, kSignRow = 6, kGreaterRow = 9, kEgRow = kGreaterRow + 2 * cabac::kMaxUnaryFlags;
constexpr int kModelRows = kEgRow + cabac::kPrefixContexts;
constexpr uint32_t kInitialModel = uint32_t(cabac::kProbHalf) | (uint32_t(cabac::kProbHalf) << 16);

using Row = uint32_t[kLanes];  // the AVX2 kernels need every Row they load or store 32-byte aligned

struct alignas(64) Bank {
  Row row[kModelRows];
};

namespace {

NNPRESS_INLINE uint32_t pack(const cabac::ContextModel& m) { return uint32_t(m.fast) | (uint32_t(m.slow) << 16); }
NNPRESS_INLINE cabac::ContextModel unpack(uint32_t v) {
  cabac::ContextModel m;
  m.fast = uint16_t(v & 0xFFFF);
  m.slow = uint16_t(v >> 16);
  m.state = uint8_t(((v & 0xFFFF) + (v >> 16)) >> 8);
  return m;
}
NNPRESS_INLINE uint32_t state_of(uint32_t v) { return ((v & 0xFFFF) + (v >> 16)) >> 8; }
NNPRESS_INLINE uint32_t cost_of(uint32_t v, unsigned bin) { return cabac::kBinCostOfState[state_of(v)][bin != 0]; }
// cabac::ContextModel::update on a packed model (the same arithmetic, written out so nothing
// here calls a function compiled elsewhere).
NNPRESS_INLINE uint32_t updated(uint32_t v, unsigned bin) {
  const uint32_t f = v & 0xFFFF, s = v >> 16;
  constexpr int kFast = cabac::ContextModel::kFastShift, kSlow = cabac::ContextModel::kSlowShift;
  const uint32_t nf = bin ? f + ((cabac::kProbOne - f) >> kFast) : f - (f >> kFast);
  const uint32_t ns = bin ? s + ((cabac::kProbOne - s) >> kSlow) : s - (s >> kSlow);
  return nf | (ns << 16);
}

}  // namespace

// What commit (below) reads and writes for one weight. Per entry e = z * kCandidates + c (entry c
// of quantizer z's candidate list): entry[e] packs the decision code j << 3 (bits 0..7), the unary
// extent chain_mag (kChainShift), the prefix extent eg_mag (kEgShift), whether the level is
// non-zero (kNonzeroShift), its neighbour class (kClassShift) and whether its prefix bucket is
// past the shared last model (kFarShift); entry_dist[e] its distortion; rates[e][p] its rate from
// state p. Per state: sig_at / sign_at (the significance and sign rows its neighbourhood selects),
// dist, rate.
constexpr int kChainShift = 8, kEgShift = 16, kNonzeroShift = 24, kClassShift = 25, kFarShift = 27;
struct CommitIo {
  const uint32_t* best_id;  // select_branches' output
  const uint32_t* entry;
  const double* entry_dist;
  const Row* rates;
  unsigned neg;  // the sign of this weight's non-zero candidates
  const uint32_t *sig_at, *sign_at;
  const double* dist;
  const uint64_t* rate;
  uint8_t* dec;  // out: the decision byte per state
  uint32_t *from, *chain_mag, *eg_mag, *sig_row, *sig_bin, *sign_row, *sign_bin;  // out: the moves
  uint32_t *nsig_at, *nsign_at;                                                   // out: next states
  double* ndist;
  uint64_t* nrate;
};
struct CommitExtent {
  uint32_t chain_top, eg_top;  // the largest chain_mag and eg_mag of the survivors
  bool eg_far;                 // some survivor's bucket is past the shared last prefix model
};

// What a kernel set (a struct of static functions, ScalarKernels in trellis_soa.h, Avx2Kernels in
// avx2/) provides to trellis_soa:
//   one_prefix(chain, count, prefix): prefix[0] = 0, prefix[n + 1] = prefix[n] + cost of a 1 bin
//     in chain[n], per lane, n < count.
//   permute(src, dst, count, from): dst[r][t] = src[r][from[t]] for r < count (from: 8 x uint32).
//   permute_chain(src, dst, count, from, mag): as permute, and lane t's models r < mag[t] are then
//     updated with bin (mag[t] > r + 1): the unary flags of a level of magnitude mag[t] (capped at
//     the unary length + 1 by the caller), or the Exp-Golomb prefix bins of a bucket mag[t] - 1.
//   permute_select(src, dst, count, from, sel, bin): as permute, and lane t's model sel[t] (if
//     < count) is then updated with bin[t] (0 or 1): the one significance or sign flag a level codes.
//   sig_costs(rows, sig_at, sign_at, neg, sig_model, nonzero): per lane t, sig_model[t] =
//     rows[sig_at[t]][t] (the significance model its neighbourhood selects) and nonzero[t] = cost
//     of a 1 in that model + cost of bin `neg` in rows[sign_at[t]][t] (what every non-zero level
//     pays before its magnitude).
//   select_branches(costs, parity, n_of, best_cost, best_id): the best branch into every state t:
//     over states p ascending and entries c < n_of[p & 1] of p's quantizer in order, the first
//     strictly cheapest costs[p & 1][c][p] among those with kDqNextState[p][parity[p & 1][c]] == t;
//     best_id[t] = c << 3 | p and best_cost[t] its cost, or kDeadBranch and +inf when no branch
//     reaching t costs less than +inf (dead states' lanes hold +inf).
//   commit(io): per state t with best_id[t] = c << 3 | p (e = (p & 1) * kCandidates + c):
//     dec[t] = p | j << 3, from[t] = p, chain_mag / eg_mag from entry[e]; sig_row[t] =
//     sig_at[p] - kSigRow, sig_bin[t] = non-zero; sign_row[t] = sign_at[p] - kSignRow and
//     sign_bin[t] = neg for a non-zero level, else kModelRows and 0; nsig_at[t] = kSigRow +
//     class * 2 + (sign_at[p] is not the zero class), nsign_at[t] = kSignRow + class; ndist[t] =
//     dist[p] + entry_dist[e]; nrate[t] = rate[p] + rates[e][p]. Dead states (kDeadBranch):
//     dec kDead, from 0, extents 0, rows kModelRows, bins 0; their next-state values are unread.
//     Returns the extents' maxima and whether any survivor's entry is eg_far.
//   lane_costs(base, pre, eg, model, add, cost, dist, lambda, rate, out):
//     rate[t] = base[t] + pre[t] + eg[t] + (cost of a 0 bin in model[t]) + add and
//     out[t] = (cost[t] + dist) + lambda * double(rate[t]) in double, rounded as written (no FMA):
//     one candidate's rate and path cost from every state. Rates stay below 2^31.

// Buffers of one search, allocated by trellis_pass: two banks and cols * 8 decision bytes.
struct Workspace {
  Bank* banks;
  uint8_t* decisions;
};

// The search on AVX2: its fused step where it covers the pass, else the search with the AVX2
// kernels (avx2/trellis_avx2.cpp; defined only in builds that compile that file,
// NNPRESS_HAVE_TRELLIS_AVX2_TU).
uint64_t trellis_soa_avx2(const PassArgs<float, float>& args, Workspace& ws);
uint64_t trellis_soa_avx2(const PassArgs<float, double>& args, Workspace& ws);
uint64_t trellis_soa_avx2(const PassArgs<double, float>& args, Workspace& ws);
uint64_t trellis_soa_avx2(const PassArgs<double, double>& args, Workspace& ws);

// The search on AVX-512: its fused step where it covers the pass, else the search with the
// AVX-512 kernels (avx512/trellis_avx512.cpp; defined only in builds that compile that file,
// NNPRESS_HAVE_TRELLIS_AVX512_TU).
uint64_t trellis_soa_avx512(const PassArgs<float, float>& args, Workspace& ws);
uint64_t trellis_soa_avx512(const PassArgs<float, double>& args, Workspace& ws);
uint64_t trellis_soa_avx512(const PassArgs<double, float>& args, Workspace& ws);
uint64_t trellis_soa_avx512(const PassArgs<double, double>& args, Workspace& ws);

}  // namespace nnpress::trellis_detail
