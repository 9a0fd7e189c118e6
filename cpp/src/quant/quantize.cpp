// Quantizer front end (nnpress/quant/quantize.h): argument checks, level-parameter passes,
// dispatch to nearest / RDOQ / trellis.
#include "nnpress/quant/quantize.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/quant/feedback.h"
#include "nnpress/quant/rdoq.h"
#include "nnpress/quant/trellis.h"
#include "../common/parallel.h"

namespace nnpress {

namespace {

constexpr double kMaxScaled = 1073741824.0;  // |w / step| must stay below 2^30
constexpr double kMaxFeedbackCoef = 1e12;     // |U_ij / U_ii| beyond this: rejected as ill-conditioned

bool same_params(const cabac::LevelParams& a, const cabac::LevelParams& b) {
  return a.unary_len == b.unary_len && a.eg_order == b.eg_order;
}

// step_ij (dequantize.h) of weight i of the rows x cols tensor.
inline double step_at(const QuantOptions& o, uint64_t cols, uint64_t i) {
  const double row_step = o.step * (o.scales.row ? o.scales.row[i / cols] : 1.0);
  return o.scales.col ? row_step * o.scales.col[i % cols] : row_step;
}

template <class W, class F>
Status check_inputs(const W* weights, const F* importance, uint64_t rows, uint64_t cols, const QuantOptions& o) {
  const uint64_t count = rows * cols;
  if (!(std::isfinite(o.step) && o.step > 0))
    return invalid_argument("quantize: step must be finite and > 0, got " + std::to_string(o.step));
  if (!(std::isfinite(o.lambda) && o.lambda >= 0))
    return invalid_argument("quantize: lambda must be finite and >= 0, got " + std::to_string(o.lambda));
  if (!is_known_quant_method(uint8_t(o.method)))
    return invalid_argument("quantize: unknown method " + std::to_string(int(o.method)));
  if (o.max_passes < 1) return invalid_argument("quantize: max_passes must be >= 1");
  if (o.params_fixed) {
    Status s = check_level_params(o.params);
    if (!s.ok()) return invalid_argument("quantize: " + s.message());
  }
  if (count && weights == nullptr) return invalid_argument("quantize: null weights");
  if (count) {
    Status s = check_channel_scales(o.scales.row, o.scales.row ? rows : 0, "quantize: row scale");
    if (s.ok()) s = check_channel_scales(o.scales.col, o.scales.col ? cols : 0, "quantize: column scale");
    if (!s.ok()) return s;
  }
  for (uint64_t i = 0; i < count; ++i) {
    const double w = double(weights[i]);
    if (!std::isfinite(w))
      return invalid_argument("quantize: weight " + std::to_string(i) + " is not finite (" + std::to_string(w) + ")");
    const double st = o.scales.any() ? step_at(o, cols, i) : o.step;
    if (!(std::isfinite(st) && st > 0))
      return invalid_argument("quantize: the step of weight " + std::to_string(i) +
                              " (step x row scale x column scale) is not finite and > 0");
    if (!(std::fabs(w / st) < kMaxScaled))
      return invalid_argument("quantize: weight " + std::to_string(i) + " = " + std::to_string(w) +
                              " is 2^30 steps or more from zero (step " + std::to_string(st) + ")");
    // With feedback a target may sit anywhere up to 2^30 steps out: its candidates and errors
    // (a few times 2^30 steps) must stay finite.
    if ((o.feedback || o.row_feedback) && !std::isfinite(st * 4294967296.0))
      return invalid_argument("quantize: with a feedback factor the step of weight " + std::to_string(i) +
                              " must be below DBL_MAX / 2^32");
  }
  if (importance) {
    for (uint64_t i = 0; i < count; ++i) {
      const double f = double(importance[i]);
      if (!(std::isfinite(f) && f >= 0))
        return invalid_argument("quantize: importance " + std::to_string(i) + " = " + std::to_string(f) +
                                " (must be finite and >= 0)");
    }
  }
  for (int side = 0; side < 2 && count; ++side) {  // the column factor, then the row factor
    const double* factor = side == 0 ? o.feedback : o.row_feedback;
    const uint64_t n = side == 0 ? cols : rows;
    const char* name = side == 0 ? "feedback factor" : "row feedback factor";
    for (uint64_t i = 0; factor && i < n; ++i) {
      const double* u = factor + i * n;
      if (!(std::isfinite(u[i]) && u[i] > 0 && std::isfinite(1.0 / (u[i] * u[i]))))
        return invalid_argument(std::string("quantize: ") + name + " diagonal entry " + std::to_string(i) +
                                " must be finite and > 0 (and its inverse square finite)");
      for (uint64_t j = i + 1; j < n; ++j)
        if (!(std::fabs(u[j] / u[i]) <= kMaxFeedbackCoef))
          return invalid_argument(std::string("quantize: ") + name + " entry (" + std::to_string(i) + ", " +
                                  std::to_string(j) + ") is not finite or more than 1e12 times its row's diagonal "
                                  "(ill-conditioned)");
    }
  }
  if (o.feedback && count) {
    if (importance)
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t i = 1; i < cols; ++i)
          if (!(importance[r * cols + i] == importance[r * cols]))
            return invalid_argument("quantize: with a feedback factor the importance must be the same along each row "
                                    "(row " + std::to_string(r) + " varies)");
  }
  return Status::Ok();
}

// Nearest levels on the grid `factor` x step_ij (factor 2: the trellis' first guess).
template <class W>
void round_to_grid(const W* weights, uint64_t count, uint64_t cols, const QuantOptions& o, double factor,
                   int32_t* levels) {
  if (!o.scales.any()) {
    const double grid = factor * o.step;
    for (uint64_t i = 0; i < count; ++i) levels[i] = int32_t(std::nearbyint(double(weights[i]) / grid));
    return;
  }
  for (uint64_t i = 0; i < count; ++i)
    levels[i] = int32_t(std::nearbyint(double(weights[i]) / (factor * step_at(o, cols, i))));
}

// GPTQ-style rounding: each row in scan order, every compensated target rounded to nearest
// (without a column factor: plain rounding of the targets, for row feedback).
template <class W, class F>
uint64_t nearest_feedback_pass(const W* weights, const F* importance, uint64_t rows, uint64_t cols, double tensor_step,
                               const ChannelScales& scales, const ErrorFeedback& fb, int32_t* levels, float* recon,
                               double* distortion) {
  std::vector<double> target(cols);
  double dist = 0.0;
  for (uint64_t r = 0; r < rows; ++r) {
    const W* w_row = weights + r * cols;
    const double row_step = tensor_step * (scales.row ? scales.row[r] : 1.0);
    const double f = importance && cols ? double(importance[r * cols]) : 1.0;
    for (uint64_t i = 0; i < cols; ++i) target[i] = double(w_row[i]);
    for (uint64_t i = 0; i < cols; ++i) {
      const double step = scales.col ? row_step * scales.col[i] : row_step;
      const double w = clamp_scaled(target[i] / step) * step;
      const int32_t q = w_row[i] == W(0) ? 0 : int32_t(std::nearbyint(w / step));
      const double e = w - double(q) * step;
      dist += f * (fb.any() ? fb.weight[i] : 1.0) * e * e;
      levels[r * cols + i] = q;
      if (recon) recon[r * cols + i] = float(double(q) * step);
      if (fb.any()) feedback_update(target.data(), fb.coef + i * cols, i + 1, cols, e);
    }
  }
  *distortion += dist;
  return 0;
}

}  // namespace

template <class W, class F>
Status quantize(const W* weights, const F* importance, uint64_t rows, uint64_t cols, const QuantOptions& o,
                int32_t* levels, float* recon, QuantResult* result) {
  if (cols != 0 && rows > UINT64_MAX / cols) return invalid_argument("quantize: rows * cols overflows");
  const uint64_t count = rows * cols;
  Status s = check_inputs(weights, importance, rows, cols, o);
  if (!s.ok()) return s;
  if (count && levels == nullptr) return invalid_argument("quantize: null levels");
  QuantResult res;
  // Error feedback: coef / weight from the factor U (feedback.h).
  std::vector<double> fb_coef, fb_weight;
  ErrorFeedback fb;
  if (o.feedback && count) {
    fb_coef.assign(size_t(cols) * cols, 0.0);
    fb_weight.resize(cols);
    for (uint64_t i = 0; i < cols; ++i) {
      const double* u = o.feedback + i * cols;
      fb_weight[i] = 1.0 / (u[i] * u[i]);
      for (uint64_t j = i + 1; j < cols; ++j) fb_coef[i * cols + j] = u[j] / u[i];
    }
    fb.coef = fb_coef.data();
    fb.weight = fb_weight.data();
  }

  if (o.method == QuantMethod::kNearest && !fb.any() && !o.row_feedback) {
    round_to_grid(weights, count, cols, o, 1.0, levels);
    const bool scaled = o.scales.any();
    if (recon)
      for (uint64_t i = 0; i < count; ++i) recon[i] = float(double(levels[i]) * (scaled ? step_at(o, cols, i) : o.step));
    double dist = 0.0;
    for (uint64_t i = 0; i < count; ++i) {
      const double d = double(weights[i]) - double(levels[i]) * (scaled ? step_at(o, cols, i) : o.step);
      dist += (importance ? double(importance[i]) : 1.0) * d * d;
    }
    res.params = o.params;  // nothing is priced; the encoder picks its params when it codes
    res.distortion = dist;
    res.passes = 1;
    if (result) *result = res;
    return Status::Ok();
  }

  const bool trellis = o.method == QuantMethod::kTrellis;
  const bool nearest = o.method == QuantMethod::kNearest;  // with feedback
  cabac::LevelParams params = o.params;
  if (nearest) {
    params = o.params;  // nothing is priced (as without feedback)
  } else if (!o.params_fixed) {
    round_to_grid(weights, count, cols, o, trellis ? 2.0 : 1.0, levels);
    params = choose_level_params_for_speed(levels, rows, cols);
  }
  // Contexts restart at every chunk, so chunks are independent: run them on `threads` workers.
  // Per-chunk rates and distortions are combined in chunk order: results do not depend on the
  // number of threads.
  const uint64_t chunk = o.chunk_rows && o.chunk_rows < rows ? o.chunk_rows : rows;
  const uint64_t nchunks = chunk ? (rows + chunk - 1) / chunk : 0;
  std::vector<uint64_t> chunk_rate(nchunks);
  std::vector<double> chunk_dist(nchunks);
  for (int pass = 1;; ++pass) {
    auto run_chunk = [&](uint64_t c) {
      const uint64_t r0 = c * chunk, n = std::min(chunk, rows - r0);
      const size_t at = size_t(r0 * cols);
      double dist = 0.0;
      ChannelScales sc = o.scales;
      if (sc.row) sc.row += r0;
      const F* imp = importance ? importance + at : nullptr;
      float* rec = recon ? recon + at : nullptr;
      chunk_rate[c] = nearest ? nearest_feedback_pass(weights + at, imp, n, cols, o.step, sc, fb, levels + at, rec, &dist)
                      : trellis ? trellis_pass(weights + at, imp, n, cols, o.step, sc, fb, o.lambda, 0, params, levels + at,
                                               rec, &dist)
                                : rdoq_pass(weights + at, imp, n, cols, o.step, sc, fb, o.lambda, 0, params, levels + at,
                                            rec, &dist);
      chunk_dist[c] = dist;
    };
    // Row feedback: one row at a time (contexts carried), each row's error moving the later rows
    // of its chunk.
    auto run_rows = [&](uint64_t c) {
      const uint64_t r0 = c * chunk, n = std::min(chunk, rows - r0);
      std::vector<double> t(size_t(n) * cols), err(cols), f(cols);
      for (size_t i = 0; i < t.size(); ++i) t[i] = double(weights[r0 * cols + i]);
      cabac::WeightContexts ctx;
      uint64_t rate = 0;
      double dist = 0.0;
      for (uint64_t r = 0; r < n; ++r) {
        const uint64_t row = r0 + r;
        const double* v = o.row_feedback + row * rows;
        const double row_weight = 1.0 / (v[row] * v[row]);
        ChannelScales sc = o.scales;
        if (sc.row) sc.row += row;
        double* target = t.data() + r * cols;
        const double row_step = o.step * (sc.row ? sc.row[0] : 1.0);
        for (uint64_t j = 0; j < cols; ++j) {
          const double st = sc.col ? row_step * sc.col[j] : row_step;  // step_ij (dequantize.h)
          target[j] = clamp_scaled(target[j] / st) * st;
          f[j] = (importance ? double(importance[row * cols + j]) : 1.0) * row_weight;
        }
        int32_t* lv = levels + row * cols;
        float* rec = recon ? recon + row * cols : nullptr;
        rate += nearest   ? nearest_feedback_pass(target, f.data(), 1, cols, o.step, sc, fb, lv, rec, &dist)
                : trellis ? trellis_pass(target, f.data(), 1, cols, o.step, sc, fb, o.lambda, 0, params, lv, rec, &dist,
                                         &ctx)
                          : rdoq_pass(target, f.data(), 1, cols, o.step, sc, fb, o.lambda, 0, params, lv, rec, &dist,
                                      &ctx);
        if (r + 1 == n) break;
        (void)dequantize(lv, 1, cols, o.step, o.method, sc, err.data());  // validated inputs: cannot fail
        for (uint64_t j = 0; j < cols; ++j) err[j] = target[j] - err[j];
        for (uint64_t s2 = r + 1; s2 < n; ++s2) {
          const double cf = v[r0 + s2] / v[row];
          if (cf == 0.0) continue;
          double* later = t.data() + s2 * cols;
          const W* w_later = weights + (r0 + s2) * cols;
          for (uint64_t j = 0; j < cols; ++j)
            if (w_later[j] != W(0)) later[j] -= cf * err[j];
        }
      }
      chunk_rate[c] = rate;
      chunk_dist[c] = dist;
    };
    auto run = [&](uint64_t c) {
      if (o.row_feedback) run_rows(c);
      else run_chunk(c);
    };
    detail::parallel_for(size_t(nchunks), o.threads, run);
    res.params = params;
    res.rate = 0;
    res.distortion = 0.0;
    for (uint64_t c = 0; c < nchunks; ++c) {
      res.rate += chunk_rate[c];
      res.distortion += chunk_dist[c];
    }
    res.passes = pass;
    if (!std::isfinite(res.distortion))
      return invalid_argument("quantize: the weighted distortion overflows a double (importance x feedback "
                              "weight x error^2): scale the importance or the hessian down");
    if (nearest || o.params_fixed || pass >= o.max_passes) break;
    const cabac::LevelParams again = choose_level_params_for_speed(levels, rows, cols);
    if (same_params(again, params)) break;
    params = again;
  }
  if (result) *result = res;
  return Status::Ok();
}

Status estimate_chunked_rate(const int32_t* levels, uint64_t rows, uint64_t cols, uint64_t chunk_rows,
                             const cabac::LevelParams& params, uint64_t* rate) {
  if (cols != 0 && rows > UINT64_MAX / cols) return invalid_argument("estimate_chunked_rate: rows * cols overflows");
  if (rows * cols != 0 && levels == nullptr) return invalid_argument("estimate_chunked_rate: null levels");
  if (rate == nullptr) return invalid_argument("estimate_chunked_rate: null rate");
  Status s = check_level_params(params);
  if (!s.ok()) return invalid_argument("estimate_chunked_rate: " + s.message());
  const uint64_t chunk = chunk_rows && chunk_rows < rows ? chunk_rows : rows;
  uint64_t total = 0;
  for (uint64_t r0 = 0; r0 < rows; r0 += chunk) {
    const uint64_t n = std::min(chunk, rows - r0);
    cabac::RateEstimator est;
    cabac::WeightContexts ctx;
    cabac::code_rows(est, ctx, params, const_cast<int32_t*>(levels + r0 * cols), n, cols);
    total += est.cost();
  }
  *rate = total;
  return Status::Ok();
}

#define NNPRESS_INSTANTIATE(W, F)                                                                       \
  template Status quantize<W, F>(const W*, const F*, uint64_t, uint64_t, const QuantOptions&, int32_t*, \
                                 float*, QuantResult*);
NNPRESS_INSTANTIATE(float, float)
NNPRESS_INSTANTIATE(float, double)
NNPRESS_INSTANTIATE(double, float)
NNPRESS_INSTANTIATE(double, double)
#undef NNPRESS_INSTANTIATE

}  // namespace nnpress
