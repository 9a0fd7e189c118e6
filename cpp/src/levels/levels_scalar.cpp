// The scalar reference of the integer-level kernels (levels_internal.h): one row and one token at a
// time, columns in order (float32), or exact int64 sums (int16 activations).
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

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense_scalar(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense_scalar(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* scalar_level_kernels() {
  static const LevelKernelTable t{dense8, dense16, int8_i16, nullptr, int16_i16, nullptr};
  return &t;
}

}  // namespace nnpress::levels::detail
