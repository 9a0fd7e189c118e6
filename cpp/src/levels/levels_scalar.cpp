// The scalar reference of the integer-level kernels (levels_internal.h): one row and one token at a
// time, columns in order (float32), or exact int64 sums (int16 activations); and of the int16-activation
// helpers (rounding an input row, the list entries, the final multiply).
#include <algorithm>
#include <cmath>

#include "levels_internal.h"

namespace nnpress::levels::detail {
namespace {

template <class Q>
void dense_scalar(const Q* q, const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const Q* row = q + size_t(r) * m.stride;
    for (size_t b = 0; b < batch; ++b) {
      const float* x = X + b * m.cols;
      float acc = 0.0f;
      for (uint32_t j = 0; j < m.cols; ++j) acc += float(row[j]) * x[j];
      Y[b * m.rows + r] = acc;
    }
  }
}

template <class Q>
void int_i16(const Q* q, const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const Q* row = q + size_t(r) * m.stride;
    for (size_t b = 0; b < batch; ++b) {
      const int16_t* x = Xq + b * m.stride;
      int64_t acc = 0;
      for (uint32_t j = 0; j < m.cols; ++j) acc += int32_t(row[j]) * int32_t(x[j]);
      S[b * m.rows + r] = acc;
    }
  }
}

void int8_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16(m.q8, m, Xq, batch, S, r0, r1);
}
void int16_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16(m.q16, m, Xq, batch, S, r0, r1);
}

bool quantize_row(const float* x, size_t cols, int32_t L, int16_t* q, double* scale) {
  float amax = 0.0f;
  bool finite = true;
  for (size_t j = 0; j < cols; ++j) {
    finite &= std::isfinite(x[j]);
    amax = std::max(amax, std::fabs(x[j]));
  }
  if (!finite) return false;
  *scale = double(amax) / double(L);
  if (*scale == 0.0) return true;
  const double inv = 1.0 / *scale;
  for (size_t j = 0; j < cols; ++j) {
    // round half away from zero; |v| <= L up to rounding, so the clamp only trims that
    const double v = double(x[j]) * inv;
    const int32_t r = int32_t(v + std::copysign(0.5, v));
    q[j] = int16_t(std::max(-L, std::min(L, r)));
  }
  return true;
}

void list_int(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const int32_t* xt, size_t bpad,
              size_t batch, size_t rows, uint32_t r0, uint32_t r1, int64_t* S) {
  for (uint32_t r = r0; r < r1; ++r) {
    for (uint64_t k = ptr[r]; k < ptr[r + 1]; ++k) {
      const int32_t* x = xt + size_t(col[k]) * bpad;
      for (size_t b = 0; b < batch; ++b) S[b * rows + r] += int64_t(val[k]) * x[b];
    }
  }
}

void finish_int(const int64_t* S, const float* rs, double scale, const float* bias, uint32_t r0, uint32_t r1,
                float* y) {
  for (uint32_t r = r0; r < r1; ++r) {
    const float v = float(double(rs[r]) * scale * double(S[r]));
    y[r] = bias ? v + bias[r] : v;
  }
}

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense_scalar(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense_scalar(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* scalar_level_kernels() {
  static const LevelKernelTable t{dense8,  dense16,      int8_i16, nullptr,    int16_i16,
                                  nullptr, quantize_row, list_int, finish_int, nullptr};
  return &t;
}

}  // namespace nnpress::levels::detail
