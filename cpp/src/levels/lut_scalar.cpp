// The scalar reference of the table-lookup kernel (lut_internal.h): one row and one token at a time,
// columns in order (float32).
#include "lut_internal.h"

namespace nnpress::levels::detail {
namespace {

void lut_scalar(const LutView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.codes + size_t(r) * m.stride;
    const float* table = m.tables + size_t(r) * 16;
    for (size_t b = 0; b < batch; ++b) {
      const float* x = X + b * m.cols;
      float acc = 0.0f;
      for (uint32_t j = 0; j < m.cols; ++j) {
        const uint8_t byte = row[j / 32 * 16 + j % 16];
        acc += table[j % 32 < 16 ? byte & 15 : byte >> 4] * x[j];
      }
      Y[b * m.rows + r] = acc;
    }
  }
}

}  // namespace

LutKernel scalar_lut_kernel() { return lut_scalar; }

}  // namespace nnpress::levels::detail
