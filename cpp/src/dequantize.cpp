// Reconstruction of quantized levels (nnpress/quant/dequantize.h). Decoder side: always built.
#include <cmath>
#include <string>

#include "nnpress/quant/dequantize.h"

namespace nnpress {
namespace {

template <class Out>
Status dequantize_impl(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                       Out* out) {
  if (!(std::isfinite(step) && step > 0))
    return invalid_argument("dequantize: step must be finite and > 0, got " + std::to_string(step));
  if (!is_known_quant_method(uint8_t(method)))
    return invalid_argument("dequantize: unknown quantizer method " + std::to_string(int(method)));
  if (cols != 0 && rows > UINT64_MAX / cols) return invalid_argument("dequantize: rows * cols overflows");
  const uint64_t count = rows * cols;
  if (count != 0 && (levels == nullptr || out == nullptr)) return invalid_argument("dequantize: null buffer");
  if (!uses_dependent_reconstruction(method)) {
    for (uint64_t i = 0; i < count; ++i) out[i] = Out(double(levels[i]) * step);
    return Status::Ok();
  }
  for (uint64_t r = 0; r < rows; ++r) {
    const int32_t* q = levels + r * cols;
    Out* o = out + r * cols;
    int state = 0;
    for (uint64_t i = 0; i < cols; ++i) {
      o[i] = Out(double(dq_index(state, q[i])) * step);
      state = dq_next_state(state, q[i]);
    }
  }
  return Status::Ok();
}

}  // namespace

Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                  float* out) {
  return dequantize_impl(levels, rows, cols, step, method, out);
}

Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                  double* out) {
  return dequantize_impl(levels, rows, cols, step, method, out);
}

}  // namespace nnpress
