// Greedy RDOQ (nnpress/quant/rdoq.h).
#include "nnpress/quant/rdoq.h"

#include <cmath>

#include <vector>

#include "nnpress/cabac/rate_estimator.h"
#include "quant_common.h"

namespace nnpress {

template <class W, class F>
uint64_t rdoq_pass(const PassArgs<W, F>& args) {
  const W* weights = args.weights;
  const F* importance = args.importance;
  const uint64_t rows = args.rows, cols = args.cols, chunk_rows = args.chunk_rows;
  const double tensor_step = args.step, lambda = args.lambda;
  const ChannelScales& scales = args.scales;
  const ErrorFeedback& fb = args.feedback;
  const cabac::LevelParams& params = args.params;
  int32_t* levels = args.levels;
  float* recon = args.recon;
  cabac::WeightContexts* contexts = args.contexts;
  using cabac::code_level;
  const double lambda_per_unit = lambda / double(cabac::kRateOne);  // cost of one fixed-point rate unit
  const uint32_t min_bin = quant_detail::min_bin_cost();
  cabac::WeightContexts ctx = contexts ? *contexts : cabac::WeightContexts();
  cabac::RateEstimator commit;
  double dist_total = 0.0;
  bool bad = false;
  std::vector<double> target(fb.any() ? cols : 0);  // compensated targets w' of the current row
  for (uint64_t r = 0; r < rows; ++r) {
    if (chunk_rows && r && r % chunk_rows == 0) ctx = cabac::WeightContexts();
    cabac::Neighbourhood nb;
    const W* w_row = weights + r * cols;
    int32_t* q_row = levels + r * cols;
    const double row_step = tensor_step * (scales.row ? scales.row[r] : 1.0);
    for (uint64_t i = 0; fb.any() && i < cols; ++i) target[i] = double(w_row[i]);
    for (uint64_t i = 0; i < cols; ++i) {
      const double step = scales.col ? row_step * scales.col[i] : row_step;  // step_ij (dequantize.h)
      const double w = fb.any() ? clamp_scaled(target[i] / step) * step : double(w_row[i]);
      const double f = (importance ? double(importance[r * cols + i]) : 1.0) * (fb.any() ? fb.weight[i] : 1.0);
      // An exact zero (pruned) stays zero also when feedback has moved its target.
      const double x = w_row[i] == W(0) ? 0.0 : w / step;
      int32_t best = 0;
      double best_dist = f * w * w;
      if (x != 0.0) {
        const double ax = std::fabs(x);
        const int32_t sgn = x < 0 ? -1 : 1;
        const int32_t a = int32_t(ax);  // floor, ax < 2^30
        const int32_t nearest = int32_t(std::nearbyint(x));
        auto dist_of = [&](int32_t q) {
          const double d = w - double(q) * step;
          return f * d * d;
        };
        auto rate_of = [&](int32_t q) {
          cabac::RatePeek peek;
          code_level(peek, ctx, params, nb, q, bad);
          return peek.cost();
        };
        if (a == 0) {
          // Candidates 0 and sgn. Can +-1 pay for the bins it needs beyond the significance flag?
          const cabac::ContextModel& sig = ctx.sig[nb.prev][nb.prev2_nonzero];
          const uint32_t c0 = cabac::bin_cost(sig, 0), c1 = cabac::bin_cost(sig, 1);
          const double gain = best_dist - dist_of(sgn);
          const double lower = lambda_per_unit * (double(c1) + 2.0 * min_bin - double(c0));
          const bool zero_wins = nearest == 0 ? gain <= lower : gain < lower;
          if (!zero_wins) {
            const double cost0 = best_dist + lambda_per_unit * double(c0);
            const double d1 = dist_of(sgn);
            const double cost1 = d1 + lambda_per_unit * double(rate_of(sgn));
            if (nearest == 0 ? cost1 < cost0 : !(cost0 < cost1)) {
              best = sgn;
              best_dist = d1;
            }
          }
        } else {
          // The nearest level first; others replace it only when strictly cheaper.
          int32_t cand[4];
          int n = 0;
          cand[n++] = nearest;
          const int32_t other = nearest == sgn * a ? 0 : sgn * a;  // floor when nearest is the ceiling
          if (other) cand[n++] = other;
          if (a >= 2) cand[n++] = sgn * (a - 1);
          cand[n++] = 0;
          best = cand[0];
          best_dist = dist_of(cand[0]);
          double best_cost = best_dist + lambda_per_unit * double(rate_of(cand[0]));
          for (int c = 1; c < n; ++c) {
            const double d = c == n - 1 ? f * w * w : dist_of(cand[c]);
            if (!(d < best_cost)) continue;  // rate >= 0: cannot win
            const double cost = d + lambda_per_unit * double(rate_of(cand[c]));
            if (cost < best_cost) {
              best_cost = cost;
              best = cand[c];
              best_dist = d;
            }
          }
        }
      }
      code_level(commit, ctx, params, nb, best, bad);
      nb.push(best);
      q_row[i] = best;
      dist_total += best_dist;
      if (fb.any()) feedback_update(target.data(), fb.coef + i * cols, i + 1, cols, w - double(best) * step);
      if (recon) recon[r * cols + i] = float(double(best) * step);
    }
  }
  *args.distortion += dist_total;
  if (contexts) *contexts = ctx;
  return commit.cost();
}

#define NNPRESS_INSTANTIATE(W, F) template uint64_t rdoq_pass<W, F>(const PassArgs<W, F>&);
NNPRESS_INSTANTIATE(float, float)
NNPRESS_INSTANTIATE(float, double)
NNPRESS_INSTANTIATE(double, float)
NNPRESS_INSTANTIATE(double, double)
#undef NNPRESS_INSTANTIATE

}  // namespace nnpress
