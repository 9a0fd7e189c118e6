// AVX-512 table-lookup kernel (lut_internal.h): per row, the 16-float table in one register; a block's
// 16 code bytes widened to 32-bit lanes index it with vpermps (which reads only the low 4 bits of each
// lane: the low-nibble columns as is, the high-nibble ones after a shift by 4), giving 16 float weights
// per permute, multiplied into float32 accumulators with FMA. A tile of R rows x B tokens keeps R*B
// accumulators, so each looked-up weight vector serves B tokens and each loaded input vector R rows.
// Lane l of an accumulator sums, block after block, column 32k + l then 32k + 16 + l; each accumulator
// is then reduced on its own (_mm512_reduce_add_ps, a fixed tree), so a (row, token) result does not
// depend on the tile it was computed in. Inputs past the last column are loaded as zeros (masks).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "../lut_internal.h"

namespace nnpress::levels::detail {
namespace {

// One block of 32 columns (c0 = 32k) into the tile's accumulators; inputs outside the masks read as 0.
template <int R, int B>
inline void block(const LutView& m, const uint8_t* codes, const float* xb, size_t k, const __m512 (&table)[R],
                  __m512 (&acc)[R][B], __mmask16 lo, __mmask16 hi) {
  const size_t cols = m.cols, c0 = 32 * k;
  __m512i idx[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    idx[i] = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(codes + i * m.stride + 16 * k)));
  __m512 x[B];
#pragma GCC unroll 4
  for (int j = 0; j < B; ++j) x[j] = _mm512_maskz_loadu_ps(lo, xb + j * cols + c0);
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    const __m512 w = _mm512_permutexvar_ps(idx[i], table[i]);
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) acc[i][j] = _mm512_fmadd_ps(w, x[j], acc[i][j]);
  }
#pragma GCC unroll 4
  for (int j = 0; j < B; ++j) x[j] = _mm512_maskz_loadu_ps(hi, xb + j * cols + c0 + 16);
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    const __m512 w = _mm512_permutexvar_ps(_mm512_srli_epi32(idx[i], 4), table[i]);
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) acc[i][j] = _mm512_fmadd_ps(w, x[j], acc[i][j]);
  }
}

template <int R, int B>
inline void tile(const LutView& m, const float* X, float* Y, uint32_t r, size_t b) {
  __m512 acc[R][B], table[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    table[i] = _mm512_load_ps(m.tables + size_t(r + i) * 16);
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const size_t cols = m.cols, full = cols / 32;
  const uint8_t* codes = m.codes + size_t(r) * m.stride;
  const float* xb = X + b * cols;
  for (size_t k = 0; k < full; ++k) block<R, B>(m, codes, xb, k, table, acc, 0xffff, 0xffff);
  if (cols % 32) {  // the last, partial block: inputs past cols read as zeros
    const size_t n = cols % 32;
    const __mmask16 lo = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1u);
    const __mmask16 hi = n > 16 ? __mmask16((1u << (n - 16)) - 1u) : __mmask16(0);
    block<R, B>(m, codes, xb, full, table, acc, lo, hi);
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
  }
}

// Batch < 4: tiles of 4 rows x 1 token (four independent FMA chains); else 4 rows x 4 tokens.
void lut_avx512(const LutView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  uint32_t r = r0;
  if (batch < 4) {
    for (; r + 4 <= r1; r += 4)
      for (size_t b = 0; b < batch; ++b) tile<4, 1>(m, X, Y, r, b);
    for (; r < r1; ++r)
      for (size_t b = 0; b < batch; ++b) tile<1, 1>(m, X, Y, r, b);
    return;
  }
  for (; r < r1; r += 4) {
    const bool full = r + 4 <= r1;
    size_t b = 0;
    for (; b + 4 <= batch; b += 4) {
      if (full) {
        tile<4, 4>(m, X, Y, r, b);
      } else {
        for (uint32_t i = r; i < r1; ++i) tile<1, 4>(m, X, Y, i, b);
      }
    }
    for (; b < batch; ++b) {
      if (full) {
        tile<4, 1>(m, X, Y, r, b);
      } else {
        for (uint32_t i = r; i < r1; ++i) tile<1, 1>(m, X, Y, i, b);
      }
    }
  }
}

}  // namespace

LutKernel avx512_lut_kernel() { return lut_avx512; }

}  // namespace nnpress::levels::detail
