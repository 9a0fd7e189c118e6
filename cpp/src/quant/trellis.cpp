// Dependent quantization by Viterbi search (nnpress/quant/trellis.h).
#include "nnpress/quant/trellis.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cpu.h"
#include "nnpress/quant/dequantize.h"
#include "trellis_soa.h"

namespace nnpress {
namespace {

using trellis_detail::Candidates;
using trellis_detail::candidates_of;
using trellis_detail::exists;
using trellis_detail::index_of;
using trellis_detail::kCandidates;
using trellis_detail::kDead;
using trellis_detail::level_of;
using trellis_detail::magnitude_of;

struct PathState {
  double cost;
  double dist;
  uint64_t rate;
  cabac::Neighbourhood nb;
  cabac::WeightContexts ctx;
};

// Copies the models that coding with `unary_len` can touch (the others never leave their
// initial state in any path). The unary flags go in fixed blocks of 8 models (copying a few
// untouched ones too): a variable-length memcpy here costs more than the rest of the step.
inline void copy_live_models(cabac::WeightContexts& dst, const cabac::WeightContexts& src, uint32_t unary_len) {
  static_assert(cabac::kMaxUnaryFlags % 8 == 0, "unary flags are copied in blocks of 8");
  std::memcpy(dst.sig, src.sig, sizeof(src.sig));
  std::memcpy(dst.sign, src.sign, sizeof(src.sign));
  for (uint32_t n = 0; n < unary_len; n += 8) {
    std::memcpy(dst.greater[0] + n, src.greater[0] + n, 8 * sizeof(cabac::ContextModel));
    std::memcpy(dst.greater[1] + n, src.greater[1] + n, 8 * sizeof(cabac::ContextModel));
  }
  std::memcpy(dst.eg_prefix, src.eg_prefix, sizeof(src.eg_prefix));
}

}  // namespace

// The search with one WeightContexts per state (array of structures). Serves the feedback variant
// (kFeedback: every state carries its own compensated targets, feedback.h, and its own candidate
// set); trellis_soa below is the same search without feedback.
template <bool kFeedback, class W, class F>
uint64_t trellis_impl(const PassArgs<W, F>& args) {
  const W* weights = args.weights;
  const F* importance = args.importance;
  const uint64_t rows = args.rows, cols = args.cols, chunk_rows = args.chunk_rows;
  const double tensor_step = args.step, lambda = args.lambda;
  const ChannelScales& scales = args.scales;
  const ErrorFeedback& fb = args.feedback;
  const cabac::LevelParams& params = args.params;
  int32_t* levels = args.levels;
  float* recon = args.recon;
  double* distortion = args.distortion;
  cabac::WeightContexts* contexts = args.contexts;
  using cabac::code_level;
  const double lambda_per_unit = lambda / double(cabac::kRateOne);
  const uint32_t unary_len = params.unary_len < uint32_t(cabac::kMaxUnaryFlags) ? params.unary_len
                                                                                : uint32_t(cabac::kMaxUnaryFlags);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<PathState> bank_a(kDqStates), bank_b(kDqStates);
  PathState* cur = bank_a.data();
  PathState* nxt = bank_b.data();
  cabac::WeightContexts committed = contexts ? *contexts : cabac::WeightContexts();
  std::vector<uint8_t> decisions(size_t(cols) * kDqStates);
  // Feedback only: targets per state (two banks) and the chosen reconstruction index per step
  // and state (the candidates differ per state, so the traceback cannot re-derive them).
  std::vector<double> targets_a(kFeedback ? size_t(cols) * kDqStates : 0), targets_b(targets_a.size());
  std::vector<int32_t> chosen(kFeedback ? size_t(cols) * kDqStates : 0);
  double* tcur = targets_a.data();
  double* tnxt = targets_b.data();
  uint64_t rate_total = 0;
  double dist_total = 0.0;
  bool bad = false;

  for (uint64_t r = 0; r < rows; ++r) {
    if (chunk_rows && r && r % chunk_rows == 0) committed = cabac::WeightContexts();
    for (int s = 0; s < kDqStates; ++s) {
      cur[s].cost = inf;
      nxt[s].cost = inf;
    }
    cur[0].cost = 0.0;
    cur[0].dist = 0.0;
    cur[0].rate = 0;
    cur[0].nb = cabac::Neighbourhood();
    cur[0].ctx = committed;
    const W* w_row = weights + r * cols;
    if constexpr (kFeedback)
      for (uint64_t i = 0; i < cols; ++i) tcur[i] = double(w_row[i]);  // state 0's targets
    const double row_step = tensor_step * (scales.row ? scales.row[r] : 1.0);
    auto step_of = [&](uint64_t i) { return scales.col ? row_step * scales.col[i] : row_step; };  // step_ij

    for (uint64_t i = 0; i < cols; ++i) {
      const double step = step_of(i);
      const double f = (importance ? double(importance[r * cols + i]) : 1.0) * (kFeedback ? fb.weight[i] : 1.0);
      // An exact zero (e.g. a pruned weight) stays zero: both quantizers hold 0, so every state
      // keeps a branch, and no state-machine gain may buy a non-zero level for it.
      const bool zero_only = w_row[i] == W(0);
      // Candidates and their distortions: one set (no feedback) or one per state.
      Candidates cands[kFeedback ? kDqStates : 1];
      double dists[kFeedback ? kDqStates : 1][kCandidates];
      for (int p = 0; p < (kFeedback ? kDqStates : 1); ++p) {
        if (kFeedback && !(cur[p].cost < inf)) continue;
        double w = double(w_row[i]);
        if constexpr (kFeedback) {  // the compensated target, kept representable (feedback.h)
          w = clamp_scaled(tcur[size_t(p) * cols + i] / step) * step;
          tcur[size_t(p) * cols + i] = w;
        }
        cands[p] = candidates_of(w / step);
        for (int j = 0; j < kCandidates; ++j) {
          const double d = w - double(index_of(cands[p], j)) * step;
          dists[p][j] = f * d * d;
        }
      }
      // Best incoming branch per target state.
      double best_cost[kDqStates];
      uint64_t best_rate[kDqStates];
      uint8_t best_from[kDqStates];
      uint8_t best_cand[kDqStates];
      for (int t = 0; t < kDqStates; ++t) {
        best_cost[t] = inf;
        best_from[t] = kDead;
      }
      for (int p = 0; p < kDqStates; ++p) {
        PathState& ps = cur[p];
        if (!(ps.cost < inf)) continue;
        const int z = dq_quantizer(p);
        const Candidates& cand = cands[kFeedback ? p : 0];
        const double* dist = dists[kFeedback ? p : 0];
        for (int j = 0; j < kCandidates; ++j) {
          if (j != 0 && (zero_only || (magnitude_of(cand, j) & 1) != z || !exists(cand, j)))
            continue;  // other quantizer
          const int32_t k = level_of(cand, j);
          const double partial = ps.cost + dist[j];
          const int t = dq_next_state(p, k);
          if (!(partial < best_cost[t])) continue;  // rate >= 0: cannot win
          uint64_t rate;
          if (k == 0) {  // a zero is its significance flag alone (what code_level would price)
            rate = cabac::bin_cost(ps.ctx.sig[ps.nb.prev][ps.nb.prev2_nonzero], 0);
          } else {
            cabac::RatePeek peek;
            code_level(peek, ps.ctx, params, ps.nb, k, bad);
            rate = peek.cost();
          }
          const double cost = partial + lambda_per_unit * double(rate);
          if (cost < best_cost[t]) {
            best_cost[t] = cost;
            best_rate[t] = rate;
            best_from[t] = uint8_t(p);
            best_cand[t] = uint8_t(j);
          }
        }
      }
      uint8_t* dec = decisions.data() + size_t(i) * kDqStates;
      for (int t = 0; t < kDqStates; ++t) {
        PathState& ns = nxt[t];
        if (best_from[t] == kDead) {
          ns.cost = inf;
          dec[t] = kDead;
          continue;
        }
        const int from = best_from[t];
        const PathState& ps = cur[from];
        const Candidates& cand = cands[kFeedback ? from : 0];
        const int32_t k = level_of(cand, best_cand[t]);
        copy_live_models(ns.ctx, ps.ctx, unary_len);
        cabac::RateEstimator update;
        code_level(update, ns.ctx, params, ps.nb, k, bad);
        ns.nb = ps.nb;
        ns.nb.push(k);
        ns.cost = best_cost[t];
        ns.dist = ps.dist + dists[kFeedback ? from : 0][best_cand[t]];
        ns.rate = ps.rate + best_rate[t];
        dec[t] = uint8_t(from | (best_cand[t] << 3));
        if constexpr (kFeedback) {
          const int64_t u = index_of(cand, best_cand[t]);
          chosen[size_t(i) * kDqStates + t] = int32_t(u);
          const double* src = tcur + size_t(from) * cols;
          double* dst = tnxt + size_t(t) * cols;
          const double e = src[i] - double(u) * step;
          const double* c = fb.coef + i * cols;
          for (uint64_t j = i + 1; j < cols; ++j) dst[j] = src[j] - e * c[j];
        }
      }
      PathState* tmp = cur;
      cur = nxt;
      nxt = tmp;
      if constexpr (kFeedback) std::swap(tcur, tnxt);
    }

    // The cheapest final state wins; trace its path back.
    int best = -1;
    for (int s = 0; s < kDqStates; ++s)
      if (cur[s].cost < inf && (best < 0 || cur[s].cost < cur[best].cost)) best = s;
    if (cols == 0) continue;
    if (best < 0) {  // every path's cost overflowed: defined output, and an infinite distortion
      for (uint64_t i = 0; i < cols; ++i) {  // that quantize() reports as an error
        levels[r * cols + i] = 0;
        if (recon) recon[r * cols + i] = 0.0f;
      }
      dist_total = std::numeric_limits<double>::infinity();
      continue;
    }
    rate_total += cur[best].rate;
    dist_total += cur[best].dist;
    committed = cur[best].ctx;
    int32_t* q_row = levels + r * cols;
    int state = best;
    for (uint64_t i = cols; i-- > 0;) {
      const uint8_t d = decisions[size_t(i) * kDqStates + state];
      const double step = step_of(i);
      int64_t u;
      if constexpr (kFeedback) {
        u = chosen[size_t(i) * kDqStates + state];
      } else {
        u = index_of(candidates_of(double(w_row[i]) / step), d >> 3);
      }
      // Level k of index u: u = 2k (Q0) or 2k - 1 (Q1), so |k| = (|u| + 1) / 2.
      const int64_t au = u < 0 ? -u : u;
      q_row[i] = int32_t(u < 0 ? -((au + 1) >> 1) : (au + 1) >> 1);
      if (recon) recon[r * cols + i] = float(double(u) * step);
      state = d & 7;
    }
  }
  *distortion += dist_total;
  if (contexts) *contexts = committed;
  return rate_total;
}

template <class W, class F>
uint64_t trellis_pass(const PassArgs<W, F>& args, Isa isa) {
  if (args.feedback.any()) return trellis_impl<true>(args);
  // The search writes every decision byte before it reads it: no zero fill.
  std::vector<trellis_detail::Bank> banks(2);
  const std::unique_ptr<uint8_t[]> decisions(new uint8_t[size_t(args.cols) * kDqStates]);
  trellis_detail::Workspace ws{banks.data(), decisions.get()};
#ifdef NNPRESS_HAVE_TRELLIS_AVX512_TU
  if (isa >= Isa::kAvx512 && isa_supported(Isa::kAvx512)) return trellis_detail::trellis_soa_avx512(args, ws);
#endif
#ifdef NNPRESS_HAVE_TRELLIS_AVX2_TU
  if (isa >= Isa::kAvx2 && isa_supported(Isa::kAvx2)) return trellis_detail::trellis_soa_avx2(args, ws);
#endif
  return trellis_detail::trellis_soa<trellis_detail::ScalarKernels>(args, ws);
}

template <class W, class F>
uint64_t trellis_pass(const PassArgs<W, F>& args) {
  return trellis_pass(args, detect_isa());
}

template <class W, class F>
uint64_t trellis_pass_per_state(const PassArgs<W, F>& args) {
  return args.feedback.any() ? trellis_impl<true>(args) : trellis_impl<false>(args);
}

#define NNPRESS_INSTANTIATE(W, F)                                   \
  template uint64_t trellis_pass<W, F>(const PassArgs<W, F>&);      \
  template uint64_t trellis_pass<W, F>(const PassArgs<W, F>&, Isa); \
  template uint64_t trellis_pass_per_state<W, F>(const PassArgs<W, F>&);
NNPRESS_INSTANTIATE(float, float)
NNPRESS_INSTANTIATE(float, double)
NNPRESS_INSTANTIATE(double, float)
NNPRESS_INSTANTIATE(double, double)
#undef NNPRESS_INSTANTIATE

}  // namespace nnpress
