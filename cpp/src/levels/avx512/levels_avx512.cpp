// AVX-512 integer-level kernels (levels_internal.h): indices widened to int32 and converted to float32 in
// registers, multiplied into float32 accumulators with FMA. A tile of R rows x B tokens keeps R*B
// accumulators of 16 lanes, so each widened weight vector serves B tokens and each loaded input vector R
// rows. Lane l of an accumulator sums columns l, l + 16, ... in order; the lanes are then reduced in a
// fixed order, so one (row, token) result does not depend on the tile it was computed in.
// GCC 12's own AVX-512 headers trip -W(maybe-)uninitialized (_mm512_undefined_*); not our code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "../levels_internal.h"

namespace nnpress::levels::detail {
namespace {

inline __m512 widen(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 widen(const int16_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
}

template <int R, int B, class Q>
inline void tile(const Q* q, const LevelView& m, const float* X, float* Y, uint32_t r, size_t b) {
  __m512 acc[R][B];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const size_t cols = m.cols, full = cols / 16 * 16;
  const Q* qr = q + size_t(r) * m.stride;
  const float* xb = X + b * cols;
  size_t k = 0;
  for (; k < full; k += 16) {
    __m512 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm512_loadu_ps(xb + j * cols + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm512_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
  if (k < cols) {  // the stride is padded with zero indices: only the inputs need a mask
    const __mmask16 mask = __mmask16((1u << (cols - k)) - 1u);
    __m512 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm512_maskz_loadu_ps(mask, xb + j * cols + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm512_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
  }
}

// R rows, every token: tiles of 4 tokens, then the rest.
template <int R, class Q>
inline void rows_all_tokens(const Q* q, const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r) {
  size_t b = 0;
  for (; b + 4 <= batch; b += 4) tile<R, 4>(q, m, X, Y, r, b);
  switch (batch - b) {
    case 3: tile<R, 3>(q, m, X, Y, r, b); break;
    case 2: tile<R, 2>(q, m, X, Y, r, b); break;
    case 1: tile<R, 1>(q, m, X, Y, r, b); break;
    default: break;
  }
}

template <class Q>
void dense(const Q* q, const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  uint32_t r = r0;
  if (batch == 1) {
    for (; r + 8 <= r1; r += 8) tile<8, 1>(q, m, X, Y, r, 0);
    for (; r < r1; ++r) tile<1, 1>(q, m, X, Y, r, 0);
    return;
  }
  for (; r + 4 <= r1; r += 4) rows_all_tokens<4>(q, m, X, batch, Y, r);
  for (; r < r1; ++r) rows_all_tokens<1>(q, m, X, batch, Y, r);
}

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* avx512_level_kernels() {
  static const LevelKernelTable t{dense8, dense16};
  return &t;
}

}  // namespace nnpress::levels::detail
