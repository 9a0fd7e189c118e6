// Quantizer front end (nnpress/quant/quantize.h): argument checks, level-parameter passes,
// dispatch to nearest / RDOQ / trellis.
#include "nnpress/quant/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../common/parallel.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cpu.h"
#include "nnpress/quant/feedback.h"
#include "nnpress/quant/rdoq.h"
#include "nnpress/quant/trellis.h"

namespace nnpress {

namespace {

// A double with the digits that read it back exactly (std::to_string prints 1e-9 as 0.000000).
std::string shortest(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

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
  if (std::isnan(o.size_tolerance)) return invalid_argument("quantize: size_tolerance is NaN");
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
  // Without channel scales every step is o.step (checked above): when every weight is under 2^30
  // steps (a NaN or infinity is not) and the feedback bound holds, the per-weight checks below
  // cannot fail, and this branch-free scan is cheaper than they are.
  bool plain_ok = false;
  if (!o.scales.any() && (!(o.feedback || o.row_feedback) || std::isfinite(o.step * 4294967296.0))) {
    unsigned bad = 0;
    for (uint64_t i = 0; i < count; ++i) bad |= unsigned(!(std::fabs(double(weights[i]) / o.step) < kMaxScaled));
    plain_ok = bad == 0;
  }
  for (uint64_t i = 0; i < count && !plain_ok; ++i) {
    const double w = double(weights[i]);
    if (!std::isfinite(w))
      return invalid_argument("quantize: weight " + std::to_string(i) + " is not finite (" + shortest(w) + ")");
    const double st = o.scales.any() ? step_at(o, cols, i) : o.step;
    if (!(std::isfinite(st) && st > 0))
      return invalid_argument("quantize: the step of weight " + std::to_string(i) +
                              " (step x row scale x column scale) is not finite and > 0");
    if (!(std::fabs(w / st) < kMaxScaled))
      return invalid_argument("quantize: weight " + std::to_string(i) + " = " + shortest(w) +
                              " is 2^30 steps or more from zero (step " + shortest(st) + ")");
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
                                  std::to_string(j) +
                                  ") is not finite or more than 1e12 times its row's diagonal "
                                  "(ill-conditioned)");
    }
  }
  if (o.feedback && count) {
    if (importance)
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t i = 1; i < cols; ++i)
          if (!(importance[r * cols + i] == importance[r * cols]))
            return invalid_argument(
                "quantize: with a feedback factor the importance must be the same along each row "
                "(row " +
                std::to_string(r) + " varies)");
  }
  return Status::Ok();
}

// std::nearbyint(x) for |x| < 2^51 without a library call (so loops over it vectorize): adding
// 1.5 * 2^52 rounds x to an integer in the current rounding mode, as nearbyint does, and removing
// it again is exact. (IEEE arithmetic: the compiler may not fold the two.)
inline double nearest_small(double x) {
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
  return (x + kShift) - kShift;
}

// Nearest levels on the grid `factor` x step_ij (factor 2: the trellis' first guess).
template <class W>
void round_to_grid(const W* weights, uint64_t count, uint64_t cols, const QuantOptions& o, double factor,
                   int32_t* levels) {
  if (!o.scales.any()) {
    const double grid = factor * o.step;
    for (uint64_t i = 0; i < count; ++i) levels[i] = int32_t(nearest_small(double(weights[i]) / grid));
    return;
  }
  for (uint64_t i = 0; i < count; ++i)
    levels[i] = int32_t(std::nearbyint(double(weights[i]) / (factor * step_at(o, cols, i))));
}

// GPTQ-style rounding: each row in scan order, every compensated target rounded to nearest
// (without a column factor: plain rounding of the targets, for row feedback). Prices nothing: rate 0.
template <class W, class F>
uint64_t nearest_feedback_pass(const PassArgs<W, F>& a) {
  const uint64_t cols = a.cols;
  const ChannelScales& scales = a.scales;
  const ErrorFeedback& fb = a.feedback;
  std::vector<double> target(cols);
  double dist = 0.0;
  for (uint64_t r = 0; r < a.rows; ++r) {
    const W* w_row = a.weights + r * cols;
    const double row_step = a.step * (scales.row ? scales.row[r] : 1.0);
    const double f = a.importance && cols ? double(a.importance[r * cols]) : 1.0;
    for (uint64_t i = 0; i < cols; ++i) target[i] = double(w_row[i]);
    for (uint64_t i = 0; i < cols; ++i) {
      const double step = scales.col ? row_step * scales.col[i] : row_step;
      const double w = clamp_scaled(target[i] / step) * step;
      const int32_t q = w_row[i] == W(0) ? 0 : int32_t(std::nearbyint(w / step));
      const double e = w - double(q) * step;
      dist += f * (fb.any() ? fb.weight[i] : 1.0) * e * e;
      a.levels[r * cols + i] = q;
      if (a.recon) a.recon[r * cols + i] = float(double(q) * step);
      if (fb.any()) feedback_update(target.data(), fb.coef + i * cols, i + 1, cols, e);
    }
  }
  *a.distortion += dist;
  return 0;
}

// One pass of the method over `a`: its rate, the distortion added to *a.distortion.
template <class W, class F>
uint64_t run_pass(QuantMethod method, const PassArgs<W, F>& a) {
  switch (method) {
    case QuantMethod::kNearest: return nearest_feedback_pass(a);
    case QuantMethod::kTrellis: return trellis_pass(a);
    default: return rdoq_pass(a);
  }
}

// The column feedback as the passes use it (feedback.h): coef_ij = U_ij / U_ii, weight_i = 1 / U_ii^2.
struct FeedbackTables {
  std::vector<double> coef, weight;
  ErrorFeedback view() const {
    ErrorFeedback fb;
    if (!coef.empty()) fb.coef = coef.data(), fb.weight = weight.data();
    return fb;
  }
};

FeedbackTables feedback_tables(const double* u_factor, uint64_t cols) {
  FeedbackTables t;
  if (u_factor == nullptr || cols == 0) return t;
  t.coef.assign(size_t(cols) * cols, 0.0);
  t.weight.resize(cols);
  for (uint64_t i = 0; i < cols; ++i) {
    const double* u = u_factor + i * cols;
    t.weight[i] = 1.0 / (u[i] * u[i]);
    for (uint64_t j = i + 1; j < cols; ++j) t.coef[i * cols + j] = u[j] / u[i];
  }
  return t;
}

// One quantize() call: the validated inputs and outputs the steps below share.
template <class W, class F>
struct Problem {
  const W* weights;
  const F* importance;
  uint64_t rows, cols;
  const QuantOptions& o;
  ErrorFeedback fb;
  int32_t* levels;
  float* recon;
};

// Plain nearest rounding (no feedback): levels, recon and the weighted distortion; nothing priced.
template <class W, class F>
QuantResult quantize_nearest(const Problem<W, F>& p) {
  const QuantOptions& o = p.o;
  const uint64_t count = p.rows * p.cols;
  round_to_grid(p.weights, count, p.cols, o, 1.0, p.levels);
  const bool scaled = o.scales.any();
  if (p.recon)
    for (uint64_t i = 0; i < count; ++i)
      p.recon[i] = float(double(p.levels[i]) * (scaled ? step_at(o, p.cols, i) : o.step));
  double dist = 0.0;
  for (uint64_t i = 0; i < count; ++i) {
    const double d = double(p.weights[i]) - double(p.levels[i]) * (scaled ? step_at(o, p.cols, i) : o.step);
    dist += (p.importance ? double(p.importance[i]) : 1.0) * d * d;
  }
  QuantResult res;
  res.params = o.params;  // nothing is priced; the encoder picks its params when it codes
  res.distortion = dist;
  res.passes = 1;
  return res;
}

// The params the first pass prices with: fixed ones, or the writer's pick for a first guess (the
// nearest levels; for the trellis, the nearest multiples of 2 * step). kNearest prices nothing.
template <class W, class F>
cabac::LevelParams initial_params(const Problem<W, F>& p) {
  const QuantOptions& o = p.o;
  if (o.method == QuantMethod::kNearest || o.params_fixed) return o.params;
  const bool trellis = o.method == QuantMethod::kTrellis;
  round_to_grid(p.weights, p.rows * p.cols, p.cols, o, trellis ? 2.0 : 1.0, p.levels);
  return choose_level_params_for_speed(p.levels, p.rows, p.cols, o.size_tolerance);
}

// Rows [r0, r0 + n) in one pass, contexts fresh at r0.
template <class W, class F>
uint64_t quantize_chunk(const Problem<W, F>& p, uint64_t r0, uint64_t n, const cabac::LevelParams& params,
                        double* dist) {
  const size_t at = size_t(r0 * p.cols);
  PassArgs<W, F> a;
  a.weights = p.weights + at;
  a.importance = p.importance ? p.importance + at : nullptr;
  a.rows = n, a.cols = p.cols;
  a.step = p.o.step;
  a.scales = p.o.scales;
  if (a.scales.row) a.scales.row += r0;
  a.feedback = p.fb;
  a.lambda = p.o.lambda;
  a.params = params;
  a.levels = p.levels + at;
  a.recon = p.recon ? p.recon + at : nullptr;
  a.distortion = dist;
  return run_pass(p.o.method, a);
}

// Row feedback over rows [r0, r0 + n): one row at a time (contexts carried), each row's error
// moving the later rows of the chunk.
template <class W, class F>
uint64_t quantize_chunk_rows(const Problem<W, F>& p, uint64_t r0, uint64_t n, const cabac::LevelParams& params,
                             double* dist) {
  const QuantOptions& o = p.o;
  const uint64_t rows = p.rows, cols = p.cols;
  std::vector<double> t(size_t(n) * cols), err(cols), f(cols);
  for (size_t i = 0; i < t.size(); ++i) t[i] = double(p.weights[r0 * cols + i]);
  cabac::WeightContexts ctx;
  uint64_t rate = 0;
  for (uint64_t r = 0; r < n; ++r) {
    const uint64_t row = r0 + r;
    const double* v = o.row_feedback + row * rows;
    const double row_weight = 1.0 / (v[row] * v[row]);
    PassArgs<double, double> a;
    a.scales = o.scales;
    if (a.scales.row) a.scales.row += row;
    double* target = t.data() + r * cols;
    const double row_step = o.step * (a.scales.row ? a.scales.row[0] : 1.0);
    for (uint64_t j = 0; j < cols; ++j) {
      const double st = a.scales.col ? row_step * a.scales.col[j] : row_step;  // step_ij (dequantize.h)
      target[j] = clamp_scaled(target[j] / st) * st;
      f[j] = (p.importance ? double(p.importance[row * cols + j]) : 1.0) * row_weight;
    }
    a.weights = target;
    a.importance = f.data();
    a.rows = 1, a.cols = cols;
    a.step = o.step;
    a.feedback = p.fb;
    a.lambda = o.lambda;
    a.params = params;
    a.levels = p.levels + row * cols;
    a.recon = p.recon ? p.recon + row * cols : nullptr;
    a.distortion = dist;
    if (o.method != QuantMethod::kNearest) a.contexts = &ctx;
    rate += run_pass(o.method, a);
    if (r + 1 == n) break;
    (void)dequantize(a.levels, 1, cols, o.step, o.method, a.scales, err.data());  // validated inputs: cannot fail
    for (uint64_t j = 0; j < cols; ++j) err[j] = target[j] - err[j];
    for (uint64_t s2 = r + 1; s2 < n; ++s2) {
      const double cf = v[r0 + s2] / v[row];
      if (cf == 0.0) continue;
      double* later = t.data() + s2 * cols;
      const W* w_later = p.weights + (r0 + s2) * cols;
      for (uint64_t j = 0; j < cols; ++j)
        if (w_later[j] != W(0)) later[j] -= cf * err[j];
    }
  }
  return rate;
}

// One run over the whole tensor with `params`. Contexts restart at every chunk, so chunks are
// independent and run on options.threads workers; per-chunk rates and distortions are combined in
// chunk order, so the result does not depend on the number of threads.
template <class W, class F>
void quantize_all_chunks(const Problem<W, F>& p, const cabac::LevelParams& params, uint64_t* rate, double* dist) {
  const uint64_t rows = p.rows;
  const uint64_t chunk = p.o.chunk_rows && p.o.chunk_rows < rows ? p.o.chunk_rows : rows;
  const uint64_t nchunks = chunk ? (rows + chunk - 1) / chunk : 0;
  std::vector<uint64_t> chunk_rate(nchunks);
  std::vector<double> chunk_dist(nchunks, 0.0);
  detail::parallel_for(size_t(nchunks), p.o.threads, [&](size_t c) {
    const uint64_t r0 = c * chunk, n = std::min(chunk, rows - r0);
    chunk_rate[c] = p.o.row_feedback ? quantize_chunk_rows(p, r0, n, params, &chunk_dist[c])
                                     : quantize_chunk(p, r0, n, params, &chunk_dist[c]);
  });
  *rate = 0;
  *dist = 0.0;
  for (uint64_t c = 0; c < nchunks; ++c) {
    *rate += chunk_rate[c];
    *dist += chunk_dist[c];
  }
}

// Quantize, re-pick the params from the result, and quantize again while they change (at most
// options.max_passes runs; see quantize.h). want_coded: also fill res->coded_params.
template <class W, class F>
Status quantize_with_passes(const Problem<W, F>& p, QuantResult* res, bool want_coded) {
  const QuantOptions& o = p.o;
  const bool prices = o.method != QuantMethod::kNearest;
  cabac::LevelParams params = initial_params(p);
  for (int pass = 1;; ++pass) {
    quantize_all_chunks(p, params, &res->rate, &res->distortion);
    res->params = params;
    res->passes = pass;
    if (!std::isfinite(res->distortion))
      return invalid_argument(
          "quantize: the weighted distortion overflows a double (importance x feedback "
          "weight x error^2): scale the importance or the hessian down");
    if (!prices || o.params_fixed || pass >= o.max_passes) break;
    const cabac::LevelParams again = choose_level_params_for_speed(p.levels, p.rows, p.cols, o.size_tolerance);
    if (same_params(again, params)) {
      res->coded_params = again;  // the re-pick of the final levels: nothing left to choose
      return Status::Ok();
    }
    params = again;
  }
  if (want_coded) res->coded_params = choose_level_params_for_speed(p.levels, p.rows, p.cols, o.size_tolerance);
  return Status::Ok();
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
  if (o.method == QuantMethod::kTrellis) {  // its kernels use the automatic ISA choice (cpu.h)
    s = isa_env_status();
    if (!s.ok()) return s;
  }
  const FeedbackTables fb = feedback_tables(count ? o.feedback : nullptr, cols);
  const Problem<W, F> p{weights, importance, rows, cols, o, fb.view(), levels, recon};
  QuantResult res;
  if (o.method == QuantMethod::kNearest && !p.fb.any() && !o.row_feedback) {
    res = quantize_nearest(p);
    if (result && count) res.coded_params = choose_level_params_for_speed(levels, rows, cols, o.size_tolerance);
  } else {
    s = quantize_with_passes(p, &res, result != nullptr);
    if (!s.ok()) return s;
  }
  if (count == 0) res.coded_params = cabac::LevelParams();  // the writer codes no payload, stores defaults
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

#define NNPRESS_INSTANTIATE(W, F)                                                                               \
  template Status quantize<W, F>(const W*, const F*, uint64_t, uint64_t, const QuantOptions&, int32_t*, float*, \
                                 QuantResult*);
NNPRESS_INSTANTIATE(float, float)
NNPRESS_INSTANTIATE(float, double)
NNPRESS_INSTANTIATE(double, float)
NNPRESS_INSTANTIATE(double, double)
#undef NNPRESS_INSTANTIATE

}  // namespace nnpress
