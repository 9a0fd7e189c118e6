// Reconstruction of quantized levels (nnpress/quant/dequantize.h). Decoder side: always built.
#include <cmath>
#include <string>

#include "nnpress/quant/dequantize.h"

namespace nnpress {
namespace {

// 2^(k/8), k = 0..7, correctly rounded to double (docs/FORMAT.md lists the same bit patterns).
constexpr double kScaleFraction[kScaleStepsPerOctave] = {
    0x1.0000000000000p+0, 0x1.172b83c7d517bp+0, 0x1.306fe0a31b715p+0, 0x1.4bfdad5362a27p+0,
    0x1.6a09e667f3bcdp+0, 0x1.8ace5422aa0dbp+0, 0x1.ae89f995ad3adp+0, 0x1.d5818dcfba487p+0};

#if defined(__GNUC__)
#define NNPRESS_NOINLINE __attribute__((noinline))
#else
#define NNPRESS_NOINLINE
#endif

// One row: u * step_ij with step_ij = row_step * col[i] (or row_step), state 0 at the row start.
// Not inlined: inlined into dequantize_impl, GCC reloads the output pointer and the step from the
// stack on every element; a separate loop keeps them in registers.
template <bool kDependent, bool kCols, class Out>
NNPRESS_NOINLINE void dequantize_row(const int32_t* __restrict q, uint64_t cols, double row_step,
                                     const double* __restrict col, Out* __restrict o) {
  int state = 0;
  for (uint64_t i = 0; i < cols; ++i) {
    const double st = kCols ? row_step * col[i] : row_step;
    if (kDependent) {
      o[i] = Out(double(dq_index(state, q[i])) * st);
      state = dq_next_state(state, q[i]);
    } else {
      o[i] = Out(double(q[i]) * st);
    }
  }
}

template <class Out>
Status dequantize_impl(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                       const ChannelScales& sc, Out* out) {
  if (!(std::isfinite(step) && step > 0))
    return invalid_argument("dequantize: step must be finite and > 0, got " + std::to_string(step));
  if (!is_known_quant_method(uint8_t(method)))
    return invalid_argument("dequantize: unknown quantizer method " + std::to_string(int(method)));
  if (cols != 0 && rows > UINT64_MAX / cols) return invalid_argument("dequantize: rows * cols overflows");
  const uint64_t count = rows * cols;
  if (count != 0 && (levels == nullptr || out == nullptr)) return invalid_argument("dequantize: null buffer");
  if (count != 0) {
    Status s = check_channel_scales(sc.row, sc.row ? rows : 0, "dequantize: row scale");
    if (s.ok()) s = check_channel_scales(sc.col, sc.col ? cols : 0, "dequantize: column scale");
    if (!s.ok()) return s;
  }
  if (!sc.any() && !uses_dependent_reconstruction(method)) {  // the common case: one flat loop
    dequantize_row<false, false>(levels, count, step, nullptr, out);
    return Status::Ok();
  }
  double cmin = 1.0, cmax = 1.0;  // products are monotonic: checking the extremes checks them all
  if (sc.col && cols) {
    cmin = cmax = sc.col[0];
    for (uint64_t i = 1; i < cols; ++i) {
      cmin = sc.col[i] < cmin ? sc.col[i] : cmin;
      cmax = sc.col[i] > cmax ? sc.col[i] : cmax;
    }
  }
  for (uint64_t r = 0; r < rows; ++r) {
    const double row_step = step * (sc.row ? sc.row[r] : 1.0);
    if (!(std::isfinite(row_step * cmax) && row_step * cmin > 0))
      return invalid_argument("dequantize: a step of row " + std::to_string(r) +
                              " (step x row scale x column scale) is not finite and > 0");
    const int32_t* q = levels + r * cols;
    Out* o = out + r * cols;
    const bool dependent = uses_dependent_reconstruction(method);
    if (dependent && sc.col) dequantize_row<true, true>(q, cols, row_step, sc.col, o);
    else if (dependent) dequantize_row<true, false>(q, cols, row_step, nullptr, o);
    else if (sc.col) dequantize_row<false, true>(q, cols, row_step, sc.col, o);
    else dequantize_row<false, false>(q, cols, row_step, nullptr, o);
  }
  return Status::Ok();
}

}  // namespace

double channel_scale_of_exp(int8_t e) {
  const int v = int(e);
  const int octave = v >= 0 ? v / kScaleStepsPerOctave : -((-v + kScaleStepsPerOctave - 1) / kScaleStepsPerOctave);
  return std::ldexp(kScaleFraction[v - octave * kScaleStepsPerOctave], octave);
}

int8_t channel_scale_exp_of(double scale) {
  if (!(std::isfinite(scale) && scale > 0)) return 0;
  const double e = std::nearbyint(std::log2(scale) * kScaleStepsPerOctave);
  const int k = e < -128 ? -128 : e > 127 ? 127 : int(e);
  // log2 may be off by an ulp near a midpoint: settle on the nearer neighbour in the log domain.
  int best = k;
  double best_d = std::fabs(std::log2(channel_scale_of_exp(int8_t(k)) / scale));
  for (int c = k - 1; c <= k + 1; c += 2) {
    if (c < -128 || c > 127) continue;
    const double d = std::fabs(std::log2(channel_scale_of_exp(int8_t(c)) / scale));
    if (d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return int8_t(best);
}

Status check_channel_scales(const double* scales, uint64_t n, const char* what) {
  if (n != 0 && scales == nullptr) return invalid_argument(std::string(what) + ": null");
  for (uint64_t i = 0; i < n; ++i)
    if (!(std::isfinite(scales[i]) && scales[i] > 0))
      return invalid_argument(std::string(what) + " " + std::to_string(i) + " = " + std::to_string(scales[i]) +
                              " (must be finite and > 0)");
  return Status::Ok();
}

Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method, float* out) {
  return dequantize_impl(levels, rows, cols, step, method, ChannelScales(), out);
}

Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method, double* out) {
  return dequantize_impl(levels, rows, cols, step, method, ChannelScales(), out);
}

Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                  const ChannelScales& scales, float* out) {
  return dequantize_impl(levels, rows, cols, step, method, scales, out);
}

Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                  const ChannelScales& scales, double* out) {
  return dequantize_impl(levels, rows, cols, step, method, scales, out);
}

}  // namespace nnpress
