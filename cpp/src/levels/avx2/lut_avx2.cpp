// AVX2 table-lookup kernel (lut_internal.h): per row, the 16-float table in two registers (entries 0-7,
// 8-15); 8 code bytes widened to 32-bit lanes index both with vpermps (low 3 bits of each lane) and a
// blend on bit 3 picks one, giving 8 float weights (the low-nibble columns as is; the high-nibble ones
// permute on the lane shifted right by 4 and blend on bit 7). FMA into float32 accumulators, tiles of
// R rows x B tokens. Lane l of an accumulator sums, block after block, columns 32k + l, 32k + 8 + l,
// 32k + 16 + l, 32k + 24 + l; each accumulator is then reduced on its own in a fixed tree. Inputs past
// the last column are loaded as zeros (masked loads).
#include <immintrin.h>

#include "../lut_internal.h"

namespace nnpress::levels::detail {
namespace {

// The 8 weights of code bytes p[0..8): low nibbles (hi = false) or high nibbles (hi = true).
inline __m256 lookup(__m256i idx, __m256 t0, __m256 t1, bool hi) {
  const __m256i i = hi ? _mm256_srli_epi32(idx, 4) : idx;
  const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, hi ? 24 : 28));  // bit 3 of the code -> sign
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, i), _mm256_permutevar8x32_ps(t1, i), sel);
}

inline __m256i lane_mask(size_t c, size_t cols) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const long n = c >= cols ? 0 : long(cols - c);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n < 8 ? n : 8)), lanes);
}

inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int R, int B>
inline void tile(const LutView& m, const float* X, float* Y, uint32_t r, size_t b) {
  __m256 acc[R][B];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  const size_t cols = m.cols, blocks = (cols + 31) / 32;
  const uint8_t* codes = m.codes + size_t(r) * m.stride;
  const float* tables = m.tables + size_t(r) * 16;
  const float* xb = X + b * cols;
  for (size_t k = 0; k < blocks; ++k) {
    const bool full = 32 * k + 32 <= cols;
    // segment s: columns 32k + 8s .. +8, from code bytes 8 (s % 2) .. +8, nibble s / 2
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      const size_t c = 32 * k + 8 * size_t(s);
      __m256 x[B];
      if (full) {
#pragma GCC unroll 4
        for (int j = 0; j < B; ++j) x[j] = _mm256_loadu_ps(xb + j * cols + c);
      } else {
        const __m256i mask = lane_mask(c, cols);
#pragma GCC unroll 4
        for (int j = 0; j < B; ++j) x[j] = _mm256_maskload_ps(xb + j * cols + (c < cols ? c : 0), mask);
      }
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        const __m256i idx = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i * m.stride + 16 * k + 8 * (s % 2))));
        const __m256 w = lookup(idx, _mm256_load_ps(tables + 16 * i), _mm256_load_ps(tables + 16 * i + 8), s >= 2);
#pragma GCC unroll 4
        for (int j = 0; j < B; ++j) acc[i][j] = _mm256_fmadd_ps(w, x[j], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = sum8(acc[i][j]);
  }
}

// Batch < 4: tiles of 4 rows x 1 token; else 2 rows x 4 tokens.
void lut_avx2(const LutView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
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

LutKernel avx2_lut_kernel() { return lut_avx2; }

}  // namespace nnpress::levels::detail
