// NEON (AArch64 Advanced SIMD) table-lookup kernel (lut_internal.h): per row, the 16-float table as 64
// bytes in four registers; 4 codes at a time become byte indices 4c .. 4c + 3 and one tbl (vqtbl4q_u8)
// gives their 4 float weights, multiplied into 4-lane float32 accumulators with FMA, in tiles of R rows
// x B tokens. Lane l of an accumulator sums, block after block, columns 32k + 4q + l for q = 0..7 in
// order; each accumulator is then reduced on its own (vaddvq_f32). The last, partial block reads its
// inputs through a zero-padded copy (NEON has no masked loads). Tested against the scalar reference
// under qemu-aarch64 (scripts/aarch64_check.sh --all).
#include <arm_neon.h>

#include "../lut_internal.h"

namespace nnpress::levels::detail {
namespace {

// Byte indices of the 4 floats of codes q*4 .. q*4 + 3 of c4 (codes times 4).
inline uint8x16_t float_bytes(uint8x16_t c4, int q) {
  static const uint8_t spread[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
                                        {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
                                        {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
                                        {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};
  static const uint8_t offs[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
  return vaddq_u8(vqtbl1q_u8(c4, vld1q_u8(spread[q])), vld1q_u8(offs));
}

template <int R, int B>
inline void tile(const LutView& m, const float* X, float* Y, uint32_t r, size_t b) {
  float32x4_t acc[R][B];
  uint8x16x4_t table[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    table[i] = vld1q_u8_x4(reinterpret_cast<const uint8_t*>(m.tables + size_t(r + i) * 16));
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) acc[i][j] = vdupq_n_f32(0.0f);
  }
  const size_t cols = m.cols, blocks = (cols + 31) / 32;
  const uint8_t* codes = m.codes + size_t(r) * m.stride;
  const float* xs[B];
  float pad[B][32];
  for (size_t k = 0; k < blocks; ++k) {
    const size_t c0 = 32 * k;
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) {
      const float* x = X + (b + j) * cols + c0;
      if (c0 + 32 <= cols) {
        xs[j] = x;
      } else {
        for (size_t t = 0; t < 32; ++t) pad[j][t] = c0 + t < cols ? x[t] : 0.0f;
        xs[j] = pad[j];
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const uint8x16_t c = vld1q_u8(codes + i * m.stride + 16 * k);
      const uint8x16_t c4[2] = {vshlq_n_u8(vandq_u8(c, vdupq_n_u8(15)), 2), vshlq_n_u8(vshrq_n_u8(c, 4), 2)};
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) {
        const float32x4_t w = vreinterpretq_f32_u8(vqtbl4q_u8(table[i], float_bytes(c4[q / 4], q % 4)));
#pragma GCC unroll 4
        for (int j = 0; j < B; ++j) acc[i][j] = vfmaq_f32(acc[i][j], w, vld1q_f32(xs[j] + 4 * q));
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = vaddvq_f32(acc[i][j]);
  }
}

// Batch < 4: tiles of 4 rows x 1 token; else 2 rows x 4 tokens.
void lut_neon(const LutView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  uint32_t r = r0;
  if (batch < 4) {
    for (; r + 4 <= r1; r += 4)
      for (size_t b = 0; b < batch; ++b) tile<4, 1>(m, X, Y, r, b);
    for (; r < r1; ++r)
      for (size_t b = 0; b < batch; ++b) tile<1, 1>(m, X, Y, r, b);
    return;
  }
  for (; r + 2 <= r1; r += 2) {
    size_t b = 0;
    for (; b + 4 <= batch; b += 4) tile<2, 4>(m, X, Y, r, b);
    for (; b < batch; ++b) tile<2, 1>(m, X, Y, r, b);
  }
  for (; r < r1; ++r) {
    size_t b = 0;
    for (; b + 4 <= batch; b += 4) tile<1, 4>(m, X, Y, r, b);
    for (; b < batch; ++b) tile<1, 1>(m, X, Y, r, b);
  }
}

}  // namespace

LutKernel neon_lut_kernel() { return lut_neon; }

}  // namespace nnpress::levels::detail
