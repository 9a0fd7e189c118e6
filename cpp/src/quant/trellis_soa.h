// Private to the trellis: the search without feedback over structure-of-arrays context models
// (trellis_kernels.h), templated on its kernel set K so each ISA's translation unit compiles the
// whole search with its kernels inlined: trellis.cpp with ScalarKernels, avx2/trellis_avx2.cpp
// with AVX2 ones. Everything here has internal linkage and calls no inline function of other
// headers (ContextModel::update is always inlined), so no out-of-line copy compiled with one TU's
// ISA flags can be picked by the linker for another TU.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "nnpress/quant/pass_args.h"
#include "trellis_kernels.h"

namespace nnpress::trellis_detail {
namespace {

constexpr uint8_t kDead = 0xFF;

struct Candidates {
  int32_t sgn;
  int64_t base;  // first reconstruction index magnitude, >= 1
};

inline Candidates candidates_of(double x) {
  const double ax = std::fabs(x);
  const int64_t a = int64_t(ax);  // ax < 2^30
  return {x < 0 ? -1 : 1, a - 1 > 1 ? a - 1 : 1};
}

// Magnitude of the reconstruction index of candidate j: 0 (zero), base + j - 1 (j = 1..4),
// 1 (j = 5) and 2 (j = 6). Candidates 5 and 6 exist only when not already among 1..4.
inline int64_t magnitude_of(const Candidates& c, int j) {
  if (j == 0) return 0;
  if (j <= kUnionCandidates) return c.base + j - 1;
  return j - kUnionCandidates;
}
inline bool exists(const Candidates& c, int j) { return j <= kUnionCandidates || magnitude_of(c, j) < c.base; }
// Level k (signed) of candidate j: u = 2k (Q0) or 2k - 1 (Q1), so |k| = (|u| + 1) / 2.
inline int32_t level_of(const Candidates& c, int j) { return c.sgn * int32_t((magnitude_of(c, j) + 1) >> 1); }
inline int64_t index_of(const Candidates& c, int j) { return c.sgn * magnitude_of(c, j); }

// The DQ state machine (dequantize.h), local so this header calls nothing out of line.
NNPRESS_INLINE int quantizer_of(int state) { return state & 1; }

alignas(64) constexpr Row kZeroRow = {0, 0, 0, 0, 0, 0, 0, 0};

// The reference kernels, and the ones every CPU can run.
struct ScalarKernels {
  static void one_prefix(const Row* chain, uint32_t count, Row* prefix) {
    for (int t = 0; t < kLanes; ++t) prefix[0][t] = 0;
    for (uint32_t n = 0; n < count; ++n)
      for (int t = 0; t < kLanes; ++t) prefix[n + 1][t] = prefix[n][t] + cost_of(chain[n][t], 1);
  }

  static void permute(const Row* src, Row* dst, uint32_t count, const uint32_t* from) {
    for (uint32_t r = 0; r < count; ++r)
      for (int t = 0; t < kLanes; ++t) dst[r][t] = src[r][from[t]];
  }

  static void permute_chain(const Row* src, Row* dst, uint32_t count, const uint32_t* from, const uint32_t* mag) {
    for (uint32_t r = 0; r < count; ++r)
      for (int t = 0; t < kLanes; ++t) {
        const uint32_t v = src[r][from[t]];
        dst[r][t] = mag[t] > r ? updated(v, mag[t] > r + 1) : v;
      }
  }

  static void permute_select(const Row* src, Row* dst, uint32_t count, const uint32_t* from, const uint32_t* sel,
                             const uint32_t* bin) {
    for (uint32_t r = 0; r < count; ++r)
      for (int t = 0; t < kLanes; ++t) {
        const uint32_t v = src[r][from[t]];
        dst[r][t] = sel[t] == r ? updated(v, bin[t]) : v;
      }
  }

  static void sig_costs(const Row* rows, const uint32_t* sig_at, const uint32_t* sign_at, unsigned neg, Row& sig_model,
                        Row& nonzero) {
    for (int t = 0; t < kLanes; ++t) {
      sig_model[t] = rows[sig_at[t]][t];
      nonzero[t] = cost_of(sig_model[t], 1) + cost_of(rows[sign_at[t]][t], neg);
    }
  }

  static void select_branches(const double (*costs)[kCandidates][kLanes], const uint8_t (*parity)[kCandidates],
                              const int* n_of, double* best_cost, uint32_t* best_id) {
    for (int t = 0; t < kLanes; ++t) {
      best_cost[t] = std::numeric_limits<double>::infinity();
      best_id[t] = kDeadBranch;
    }
    for (int p = 0; p < kLanes; ++p) {
      const int z = quantizer_of(p);
      for (int c = 0; c < n_of[z]; ++c) {
        const int t = kDqNextState[p][parity[z][c]];
        if (costs[z][c][p] < best_cost[t]) {
          best_cost[t] = costs[z][c][p];
          best_id[t] = uint32_t(c << 3 | p);
        }
      }
    }
  }

  static CommitExtent commit(const CommitIo& io) {
    CommitExtent x{0, 0, false};
    for (int t = 0; t < kLanes; ++t) {
      const uint32_t id = io.best_id[t];
      if (id == kDeadBranch) {
        io.dec[t] = kDead;
        io.from[t] = 0;
        io.chain_mag[t] = io.eg_mag[t] = 0;
        io.sig_row[t] = io.sign_row[t] = uint32_t(kModelRows);  // no update
        io.sig_bin[t] = io.sign_bin[t] = 0;
        continue;
      }
      const uint32_t p = id & 7, e = (p & 1) * kCandidates + (id >> 3);
      const uint32_t packed = io.entry[e];
      const uint32_t chain = (packed >> kChainShift) & 0xFF, eg = (packed >> kEgShift) & 0xFF;
      const uint32_t nz = (packed >> kNonzeroShift) & 1, cls = (packed >> kClassShift) & 3;
      io.dec[t] = uint8_t(p | (packed & 0xFF));
      io.from[t] = p;
      io.chain_mag[t] = chain;
      io.eg_mag[t] = eg;
      x.chain_top = chain > x.chain_top ? chain : x.chain_top;
      x.eg_top = eg > x.eg_top ? eg : x.eg_top;
      x.eg_far = x.eg_far || ((packed >> kFarShift) & 1);
      io.sig_row[t] = io.sig_at[p] - kSigRow;
      io.sig_bin[t] = nz;
      io.sign_row[t] = nz ? io.sign_at[p] - kSignRow : uint32_t(kModelRows);
      io.sign_bin[t] = nz ? io.neg : 0;
      io.nsig_at[t] = kSigRow + cls * 2 + (io.sign_at[p] != kSignRow + cabac::kZero);
      io.nsign_at[t] = kSignRow + cls;
      io.ndist[t] = io.dist[p] + io.entry_dist[e];
      io.nrate[t] = io.rate[p] + io.rates[e][p];
    }
    return x;
  }

  static void lane_costs(const Row& base, const Row& pre, const Row& eg, const Row& model, uint32_t add,
                         const double* cost, double dist, double lambda, Row& rate, double* out) {
    for (int t = 0; t < kLanes; ++t) {
      rate[t] = base[t] + pre[t] + eg[t] + cost_of(model[t], 0) + add;
      out[t] = (cost[t] + dist) + lambda * double(rate[t]);
    }
  }
};

// Packed models (trellis_kernels.h) of one WeightContexts, in row order, and back.
void pack_contexts(const cabac::WeightContexts& c, uint32_t* out) {
  for (int i = 0; i < 6; ++i) out[kSigRow + i] = trellis_detail::pack(c.sig[i / 2][i % 2]);
  for (int i = 0; i < 3; ++i) out[kSignRow + i] = trellis_detail::pack(c.sign[i]);
  for (int g = 0; g < 2; ++g)
    for (int n = 0; n < cabac::kMaxUnaryFlags; ++n)
      out[kGreaterRow + g * cabac::kMaxUnaryFlags + n] = trellis_detail::pack(c.greater[g][n]);
  for (int n = 0; n < cabac::kPrefixContexts; ++n) out[kEgRow + n] = trellis_detail::pack(c.eg_prefix[n]);
}
cabac::WeightContexts unpack_contexts(const uint32_t* in) {
  cabac::WeightContexts c;
  for (int i = 0; i < 6; ++i) c.sig[i / 2][i % 2] = trellis_detail::unpack(in[kSigRow + i]);
  for (int i = 0; i < 3; ++i) c.sign[i] = trellis_detail::unpack(in[kSignRow + i]);
  for (int g = 0; g < 2; ++g)
    for (int n = 0; n < cabac::kMaxUnaryFlags; ++n)
      c.greater[g][n] = trellis_detail::unpack(in[kGreaterRow + g * cabac::kMaxUnaryFlags + n]);
  for (int n = 0; n < cabac::kPrefixContexts; ++n) c.eg_prefix[n] = trellis_detail::unpack(in[kEgRow + n]);
  return c;
}

// Bits of the Exp-Golomb part (prefix bins on lane `lane`'s models, suffix bypass) of remainder
// r, as code_level<RatePeek> prices it.
uint64_t eg_cost(const Bank& b, int lane, uint32_t eg_order, uint64_t r) {
  uint64_t cost = 0, base = 0;
  uint32_t j = 0;
  for (;;) {
    const uint64_t next = base + (uint64_t(1) << (eg_order + j));
    const uint32_t idx = j < cabac::kPrefixContexts - 1 ? j : cabac::kPrefixContexts - 1;
    const bool bin = r >= next;
    cost += cost_of(b.row[kEgRow + idx][lane], bin);
    if (!bin) break;
    base = next;
    ++j;
  }
  return cost + uint64_t(eg_order + j) * cabac::kRateOne;
}

// code_level<RateEstimator>'s updates of the Exp-Golomb prefix models on lane `lane`; returns one
// past the highest prefix model it touched.
uint32_t eg_update(Bank& b, int lane, uint32_t eg_order, uint64_t r) {
  uint64_t base = 0;
  uint32_t j = 0, top = 0;
  for (;;) {
    const uint64_t next = base + (uint64_t(1) << (eg_order + j));
    const uint32_t idx = j < cabac::kPrefixContexts - 1 ? j : cabac::kPrefixContexts - 1;
    const bool bin = r >= next;
    uint32_t& m = b.row[kEgRow + idx][lane];
    m = updated(m, bin);
    top = idx + 1;
    if (!bin) break;
    base = next;
    ++j;
  }
  return top;
}

// One past the highest model of [first, first + count) that is not in its initial state.
uint32_t live_extent(const uint32_t* models, int first, uint32_t count) {
  uint32_t top = 0;
  for (uint32_t n = 0; n < count; ++n)
    if (models[first + n] != kInitialModel) top = n + 1;
  return top;
}

// The state a row's best path ends in (the least finite final cost, the first on ties); -1 for an
// empty row, and -1 when no path is finite: the row's levels and reconstructions are then zeroed
// and dist_total is infinity.
inline int best_final_state(const double* cost, uint64_t cols, int32_t* q_row, float* recon_row, double& dist_total) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  int best = -1;
  for (int s = 0; s < kDqStates; ++s)
    if (cost[s] < inf && (best < 0 || cost[s] < cost[best])) best = s;
  if (cols == 0) return -1;
  if (best < 0) {
    for (uint64_t i = 0; i < cols; ++i) {
      q_row[i] = 0;
      if (recon_row) recon_row[i] = 0.0f;
    }
    dist_total = inf;
  }
  return best;
}

// The search without feedback, the 8 states' context models held as structure of arrays
// (trellis_kernels.h) so the kernels work on all states at once. Decisions, rates and tie-breaks
// are those of trellis_impl: the same candidates in the same order, each rate the integer sum of
// the same bin costs code_level<RatePeek> adds (priced here from one prefix sum of the unary
// flags per state instead of one code_level per candidate), and each state's models updated
// exactly as code_level<RateEstimator> updates them.
//
// Only the live models are moved: sig, sign, greater[.][0, live_greater) and
// eg_prefix[0, live_eg), where the extents grow with the largest levels coded so far. Every model
// past them is in its initial state in every lane of both banks (nothing ever wrote it), so
// moving it would change nothing.
// The end of one row's search, shared by the lane search below and the fused steps (trellis_fused.h): the
// cheapest final state (the lowest on ties), the row's levels and reconstruction traced back from it
// through the decisions, its rate and distortion added to the totals and its models committed. With no
// finite final state the row gets zero levels and the pass an infinite distortion. index_at(i, j): the
// signed reconstruction index of candidate entry j of weight i (j the decision byte's d >> 3).
template <class IndexAt, class StepOf>
inline void finish_row(const double* cost, const double* dist, const uint64_t* rate, const Bank& bank,
                       const uint8_t* decisions, const IndexAt& index_at, const StepOf& step_of, uint64_t cols,
                       int32_t* q_row, float* recon_row, uint32_t* committed, uint64_t& rate_total,
                       double& dist_total) {
  const int best = best_final_state(cost, cols, q_row, recon_row, dist_total);
  if (best < 0) return;
  rate_total += rate[best];
  dist_total += dist[best];
  for (int m = 0; m < kModelRows; ++m) committed[m] = bank.row[m][best];
  int state = best;
  for (uint64_t i = cols; i-- > 0;) {
    const uint8_t d = decisions[size_t(i) * kDqStates + state];
    const int64_t u = index_at(i, d >> 3);
    const int64_t au = u < 0 ? -u : u;
    q_row[i] = int32_t(u < 0 ? -((au + 1) >> 1) : (au + 1) >> 1);
    if (recon_row) recon_row[i] = float(double(u) * step_of(i));
    state = d & 7;
  }
}

// finish_row's index_at for a search that keeps no candidates: weight i's recomputed from w / step.
template <class W, class StepOf>
inline auto recomputed_index(const W* w_row, const StepOf& step_of) {
  return [w_row, &step_of](uint64_t i, int j) { return index_of(candidates_of(double(w_row[i]) / step_of(i)), j); };
}

template <class K, class W, class F>
uint64_t trellis_soa(const PassArgs<W, F>& args, Workspace& ws) {
  const W* weights = args.weights;
  const F* importance = args.importance;
  const uint64_t rows = args.rows, cols = args.cols, chunk_rows = args.chunk_rows;
  const double tensor_step = args.step, lambda = args.lambda;
  const ChannelScales& scales = args.scales;
  const cabac::LevelParams& params = args.params;
  int32_t* levels = args.levels;
  float* recon = args.recon;
  const double lambda_per_unit = lambda / double(cabac::kRateOne);
  const uint32_t unary_len = params.unary_len < uint32_t(cabac::kMaxUnaryFlags) ? params.unary_len
                                                                                : uint32_t(cabac::kMaxUnaryFlags);
  const double inf = std::numeric_limits<double>::infinity();

  for (int k = 0; k < 2; ++k)
    for (Row& r : ws.banks[k].row)
      for (uint32_t& m : r) m = kInitialModel;
  Bank* cur = &ws.banks[0];
  Bank* nxt = &ws.banks[1];
  alignas(64) Row prefix[cabac::kMaxUnaryFlags + 1];
  alignas(64) Row eg_sum[cabac::kPrefixContexts + 1];
  uint32_t committed[kModelRows];
  uint32_t live_greater = 0, live_eg = 0;
  if (args.contexts) {
    pack_contexts(*args.contexts, committed);
    for (int g = 0; g < 2; ++g) {
      const uint32_t top = live_extent(committed, kGreaterRow + g * cabac::kMaxUnaryFlags, cabac::kMaxUnaryFlags);
      live_greater = top > live_greater ? top : live_greater;
    }
    live_eg = live_extent(committed, kEgRow, cabac::kPrefixContexts);
  } else {
    for (uint32_t& m : committed) m = kInitialModel;
  }

  // Per state (two buffers, swapped every weight): path cost, distortion, rate, and the
  // neighbourhood as the two context rows it selects: sig_at = kSigRow + prev * 2 +
  // prev2_nonzero and sign_at = kSignRow + prev (cabac::Neighbourhood). Dead states keep stale
  // but valid row indices (their lanes are computed and never read).
  double cost_buf[2][kDqStates], dist_buf[2][kDqStates];
  uint64_t rate_buf[2][kDqStates];
  alignas(32) uint32_t sig_buf[2][kDqStates], sign_buf[2][kDqStates];
  uint8_t* decisions = ws.decisions;  // cols * kDqStates
  uint64_t rate_total = 0;
  double dist_total = 0.0;

  // The live rows of a bank: sig + sign, the two unary chains, the Exp-Golomb prefix.
  auto for_live_lane0 = [&](Bank& b, const uint32_t* from_models) {
    for (int r = 0; r < kGreaterRow; ++r) b.row[r][0] = from_models[r];
    for (int g = 0; g < 2; ++g)
      for (uint32_t n = 0; n < live_greater; ++n) {
        const int r = kGreaterRow + g * cabac::kMaxUnaryFlags + int(n);
        b.row[r][0] = from_models[r];
      }
    for (uint32_t n = 0; n < live_eg; ++n) b.row[kEgRow + n][0] = from_models[kEgRow + n];
  };

  double* cost = cost_buf[0];
  double* dist = dist_buf[0];
  uint64_t* rate = rate_buf[0];
  uint32_t* sig_at = sig_buf[0];
  uint32_t* sign_at = sign_buf[0];
  double* ncost = cost_buf[1];
  double* ndist = dist_buf[1];
  uint64_t* nrate = rate_buf[1];
  uint32_t* nsig_at = sig_buf[1];
  uint32_t* nsign_at = sign_buf[1];
  for (int k = 0; k < 2; ++k)
    for (int s = 0; s < kDqStates; ++s) {
      dist_buf[k][s] = 0.0;
      rate_buf[k][s] = 0;
      sig_buf[k][s] = uint32_t(kSigRow);
      sign_buf[k][s] = uint32_t(kSignRow);
    }

  for (uint64_t r = 0; r < rows; ++r) {
    if (chunk_rows && r && r % chunk_rows == 0)
      for (uint32_t& m : committed) m = kInitialModel;
    for_live_lane0(*cur, committed);
    for (int s = 0; s < kDqStates; ++s) cost[s] = inf;
    cost[0] = 0.0;
    dist[0] = 0.0;
    rate[0] = 0;
    sig_at[0] = uint32_t(kSigRow + cabac::kZero * 2);
    sign_at[0] = uint32_t(kSignRow + cabac::kZero);
    const W* w_row = weights + r * cols;
    const double row_step = tensor_step * (scales.row ? scales.row[r] : 1.0);
    auto step_of = [&](uint64_t i) { return scales.col ? row_step * scales.col[i] : row_step; };

    for (uint64_t i = 0; i < cols; ++i) {
      const double step = step_of(i);
      const double f = importance ? double(importance[r * cols + i]) : 1.0;
      const bool zero_only = w_row[i] == W(0);
      const double w = double(w_row[i]);
      const Candidates cand = candidates_of(w / step);
      double dists[kCandidates];
      for (int j = 0; j < kCandidates; ++j) {
        const double d = w - double(index_of(cand, j)) * step;
        dists[j] = f * d * d;
      }
      // The candidates of each quantizer in the order trellis_impl tries them, with what their
      // rate and their commit need beyond the per-state models: magnitude, the Exp-Golomb bucket
      // (bins) and bypass bits for magnitudes past the unary flags, and the extents of the unary
      // and prefix models a commit updates (permute_chain's mag).
      struct Entry {
        uint8_t j;       // candidate index (the decision byte stores j << 3)
        uint8_t parity;  // of the level: picks the next state
        uint8_t cls;     // neighbour class of the level (cabac::NeighbourClass)
        bool eg_far;     // a prefix bucket past the shared last model: priced and updated bin by bin
        uint32_t mag, bucket;
        uint32_t chain_mag, eg_mag;
        uint64_t bypass;
      };
      int n_of[2] = {0, 0};
      Entry list[2][kCandidates];
      uint32_t kmax = 0, eg_rows = 0;
      // Per quantizer z: the zero (j = 0), its two indices among b..b+3 (j = 1..4, ascending),
      // then its smallest index (1 for Q1: j = 5; 2 for Q0: j = 6) when below b.
      const uint8_t nonzero_cls = cand.sgn < 0 ? cabac::kNegative : cabac::kPositive;
      auto add = [&](int z, int j, int64_t u) {
        Entry& e = list[z][n_of[z]++];
        e.j = uint8_t(j);
        e.mag = uint32_t((u + 1) >> 1);
        e.parity = uint8_t(e.mag & 1);
        e.cls = e.mag ? nonzero_cls : uint8_t(cabac::kZero);
        e.bucket = 0;
        e.bypass = 0;
        e.eg_far = false;
        e.eg_mag = 0;
        e.chain_mag = e.mag <= unary_len ? e.mag : unary_len + 1;  // flags r < min(mag, N), each 1 iff mag > r + 1
        kmax = e.mag > kmax ? e.mag : kmax;
        if (e.mag > unary_len) {
          const uint64_t rem = uint64_t(e.mag) - unary_len - 1;
          e.bucket = uint32_t(63 - __builtin_clzll((rem >> params.eg_order) + 1));
          e.bypass = uint64_t(params.eg_order + e.bucket) * cabac::kRateOne;
          if (e.bucket < uint32_t(cabac::kPrefixContexts)) {
            eg_rows = e.bucket > eg_rows ? e.bucket : eg_rows;
            e.eg_mag = e.bucket + 1;  // prefix bins 0..bucket-1 are 1, bin `bucket` is 0
          } else {
            e.eg_far = true;  // past the shared last model: eg_cost / eg_update
          }
        }
      };
      for (int z = 0; z < 2; ++z) {
        add(z, 0, 0);
        if (zero_only) continue;
        const int64_t u1 = cand.base + (int64_t(cand.base & 1) != z);  // first index of parity z
        add(z, int(u1 - cand.base) + 1, u1);
        add(z, int(u1 - cand.base) + 3, u1 + 2);
        const int64_t small = z ? 1 : 2;
        if (small < cand.base) add(z, z ? 5 : 6, small);
      }
      const unsigned neg = cand.sgn < 0;
      const Row* chain = cur->row + kGreaterRow + neg * cabac::kMaxUnaryFlags;
      // Unary flags priced as prefix[k - 1] + the 0 flag of model k - 1 (k <= N), or prefix[N] +
      // the Exp-Golomb prefix: eg_sum[J] + the 0 bin of model J + the bypass bits.
      if (kmax) K::one_prefix(chain, kmax - 1 < unary_len ? kmax - 1 : unary_len, prefix);
      if (kmax > unary_len) K::one_prefix(cur->row + kEgRow, eg_rows, eg_sum);

      // Rate and cost of every entry of each quantizer's list, for all 8 states at once (the
      // states of the other quantizer get values nobody reads): rate = base + unary prefix +
      // Exp-Golomb prefix + the closing 0 bin + bypass bits, cost = (cost + dist) + lambda * rate.
      alignas(32) Row sig_model, nonzero;
      K::sig_costs(cur->row, sig_at, sign_at, neg, sig_model, nonzero);
      alignas(32) Row rates[2 * kCandidates];  // entry e = z * kCandidates + c
      alignas(32) double costs[2][kCandidates][kDqStates];
      for (int z = 0; z < 2; ++z)
        for (int c = 0; c < n_of[z]; ++c) {
          const Entry& e = list[z][c];
          const double dj = dists[e.j];
          if (e.j >= 5) {
            // The smallest index (last in the list, level +-1) reaches the same state as the
            // earlier entry of odd level from every state. Where that entry's cost is at most this
            // one's cost + distortion, this one cannot win (its rate >= 0, and ties keep the
            // earlier branch): when that holds in every live state, it is left out.
            const int odd = list[z][1].parity ? 1 : 2;
            bool dominated = true;
            for (int p = z; p < kDqStates && dominated; p += 2)
              dominated = !(cost[p] < inf) || costs[z][odd][p] <= cost[p] + dj;
            if (dominated) {
              n_of[z] = c;
              break;
            }
          }
          if (e.mag == 0) {
            K::lane_costs(kZeroRow, kZeroRow, kZeroRow, sig_model, 0, cost, dj, lambda_per_unit,
                          rates[z * kCandidates + c], costs[z][c]);
          } else if (e.mag <= unary_len) {
            K::lane_costs(nonzero, prefix[e.mag - 1], kZeroRow, chain[e.mag - 1], 0, cost, dj, lambda_per_unit,
                          rates[z * kCandidates + c], costs[z][c]);
          } else if (!e.eg_far) {
            K::lane_costs(nonzero, prefix[unary_len], eg_sum[e.bucket], cur->row[kEgRow + e.bucket], uint32_t(e.bypass),
                          cost, dj, lambda_per_unit, rates[z * kCandidates + c], costs[z][c]);
          } else {  // a bucket past the shared last prefix model: bin by bin
            for (int p = z; p < kDqStates; p += 2) {
              if (!(cost[p] < inf)) {  // a dead state: a cost select_branches never takes
                rates[z * kCandidates + c][p] = 0;
                costs[z][c][p] = inf;
                continue;
              }
              const uint64_t rt = uint64_t(nonzero[p]) + prefix[unary_len][p] +
                                  eg_cost(*cur, p, params.eg_order, uint64_t(e.mag) - unary_len - 1);
              rates[z * kCandidates + c][p] = uint32_t(rt);  // < 2^31: at most ~90 regular bins and 53 bypass bits
              costs[z][c][p] = (cost[p] + dj) + lambda_per_unit * double(rt);
            }
          }
        }

      alignas(32) uint32_t best_id[kDqStates];
      uint8_t parity[2][kCandidates];
      alignas(32) uint32_t entry[2 * kCandidates];
      double entry_dist[2 * kCandidates];
      for (int z = 0; z < 2; ++z)
        for (int c = 0; c < n_of[z]; ++c) {
          const Entry& e = list[z][c];
          parity[z][c] = e.parity;
          entry[z * kCandidates + c] = uint32_t(e.j << 3) | e.chain_mag << kChainShift | e.eg_mag << kEgShift |
                                       uint32_t(e.mag != 0) << kNonzeroShift | uint32_t(e.cls) << kClassShift |
                                       uint32_t(e.eg_far) << kFarShift;
          entry_dist[z * kCandidates + c] = dists[e.j];
        }
      K::select_branches(costs, parity, n_of, ncost, best_id);

      // Every state's models move to its successors (dead lanes copy lane 0: never read), and
      // each survivor's level updates them: the significance flag, the sign flag of a non-zero
      // level, its unary flags and Exp-Golomb prefix bins.
      alignas(32) uint32_t from[kDqStates], chain_mag[kDqStates], eg_mag[kDqStates];
      alignas(32) uint32_t sig_row[kDqStates], sig_bin[kDqStates], sign_row[kDqStates], sign_bin[kDqStates];
      CommitIo io;
      io.best_id = best_id, io.entry = entry, io.entry_dist = entry_dist, io.rates = rates, io.neg = neg;
      io.sig_at = sig_at, io.sign_at = sign_at, io.dist = dist, io.rate = rate;
      io.dec = decisions + size_t(i) * kDqStates, io.from = from, io.chain_mag = chain_mag, io.eg_mag = eg_mag;
      io.sig_row = sig_row, io.sig_bin = sig_bin, io.sign_row = sign_row, io.sign_bin = sign_bin;
      io.nsig_at = nsig_at, io.nsign_at = nsign_at, io.ndist = ndist, io.nrate = nrate;
      const CommitExtent x = K::commit(io);
      uint32_t chain_top = x.chain_top;
      const uint32_t eg_top = x.eg_top;
      // Models touched so far (chain_mag may be N + 1: only N flag models exist).
      const uint32_t touched = chain_top < unary_len ? chain_top : unary_len;
      live_greater = touched > live_greater ? touched : live_greater;
      live_eg = eg_top > live_eg ? eg_top : live_eg;
      // Rows past the largest coded magnitude are only moved, not updated.
      chain_top = chain_top < live_greater ? chain_top : live_greater;
      K::permute_select(cur->row + kSigRow, nxt->row + kSigRow, kSignRow - kSigRow, from, sig_row, sig_bin);
      K::permute_select(cur->row + kSignRow, nxt->row + kSignRow, kGreaterRow - kSignRow, from, sign_row, sign_bin);
      const Row* src_chain = cur->row + kGreaterRow + neg * cabac::kMaxUnaryFlags;
      Row* dst_chain = nxt->row + kGreaterRow + neg * cabac::kMaxUnaryFlags;
      K::permute_chain(src_chain, dst_chain, chain_top, from, chain_mag);
      K::permute(src_chain + chain_top, dst_chain + chain_top, live_greater - chain_top, from);
      K::permute(cur->row + kGreaterRow + (1 - neg) * cabac::kMaxUnaryFlags,
                 nxt->row + kGreaterRow + (1 - neg) * cabac::kMaxUnaryFlags, live_greater, from);
      K::permute_chain(cur->row + kEgRow, nxt->row + kEgRow, eg_top, from, eg_mag);
      K::permute(cur->row + kEgRow + eg_top, nxt->row + kEgRow + eg_top, live_eg - eg_top, from);
      if (x.eg_far)  // buckets sharing the last prefix model: coded bin by bin
        for (int t = 0; t < kDqStates; ++t) {
          if (best_id[t] == kDeadBranch) continue;
          const Entry& e = list[quantizer_of(int(best_id[t] & 7))][best_id[t] >> 3];
          if (!e.eg_far) continue;
          const uint32_t top = eg_update(*nxt, t, params.eg_order, uint64_t(e.mag) - unary_len - 1);
          live_eg = top > live_eg ? top : live_eg;
        }
      Bank* const done = cur;
      cur = nxt;
      nxt = done;
      std::swap(cost, ncost);
      std::swap(dist, ndist);
      std::swap(rate, nrate);
      std::swap(sig_at, nsig_at);
      std::swap(sign_at, nsign_at);
    }

    finish_row(cost, dist, rate, *cur, decisions, recomputed_index(w_row, step_of), step_of, cols, levels + r * cols,
               recon ? recon + r * cols : nullptr, committed, rate_total, dist_total);
  }
  *args.distortion += dist_total;
  if (args.contexts) *args.contexts = unpack_contexts(committed);
  return rate_total;
}

}  // namespace
}  // namespace nnpress::trellis_detail
