// AVX2 integer-level kernels (levels_internal.h): as the AVX-512 ones (levels/avx512/), with 8 lanes and
// tiles sized for 16 registers (8 rows x 1 token at batch 1, 2 rows x 4 tokens otherwise).
#include <immintrin.h>

#include "../levels_internal.h"

namespace nnpress::levels::detail {
namespace {

inline __m256 widen(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256 widen(const int16_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <int R, int B, class Q>
inline void tile(const Q* q, const LevelView& m, const float* X, float* Y, uint32_t r, size_t b) {
  __m256 acc[R][B];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  const size_t cols = m.cols, full = cols / 8 * 8;
  const Q* qr = q + size_t(r) * m.stride;
  const float* xb = X + b * cols;
  size_t k = 0;
  for (; k < full; k += 8) {
    __m256 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm256_loadu_ps(xb + j * cols + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m256 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm256_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
  if (k < cols) {  // the stride is padded with zero indices: only the inputs need a mask
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(cols - k)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm256_maskload_ps(xb + j * cols + k, mask);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m256 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm256_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = hsum(acc[i][j]);
  }
}

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
  for (; r + 2 <= r1; r += 2) rows_all_tokens<2>(q, m, X, batch, Y, r);
  for (; r < r1; ++r) rows_all_tokens<1>(q, m, X, batch, Y, r);
}

// ---- int16 activations: exact integer sums (levels_internal.h, LevelKernelInt) ----
// 16 indices as int16 (int8 ones widened, int16 ones loaded as they are), vpmaddwd + vpaddd into 8 int32
// lanes: over kIntChunk columns a lane sums kLaneChunk products, which fits int32 by the caller's bound
// on the inputs; lanes then go to int64.
inline __m256i load_i16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load_i16(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

inline int64_t sum64(__m256i a) {
  const __m256i s = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(a)),
                                     _mm256_cvtepi32_epi64(_mm256_extracti128_si256(a, 1)));
  const __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  return _mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1);
}

template <int R, int B, class Q>
inline void tile_i16(const Q* q, const LevelView& m, const int16_t* Xq, int64_t* S, uint32_t r, size_t b) {
  int64_t tot[R][B] = {};
  const Q* qr = q + size_t(r) * m.stride;
  const int16_t* xb = Xq + b * m.stride;
  const size_t end = (size_t(m.cols) + 15) / 16 * 16;  // within the zero-padded stride
  for (size_t c0 = 0; c0 < end; c0 += kIntChunk) {
    const size_t c1 = end - c0 < kIntChunk ? end : c0 + kIntChunk;
    __m256i acc[R][B];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm256_setzero_si256();
    }
    for (size_t k = c0; k < c1; k += 16) {
      __m256i x[B];
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) x[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + j * m.stride + k));
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m256i w = load_i16(qr + i * m.stride + k);
#pragma GCC unroll 16
        for (int j = 0; j < B; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(w, x[j]));
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) tot[i][j] += sum64(acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) S[(b + j) * m.rows + r + i] = tot[i][j];
  }
}

template <int R, class Q>
inline void rows_all_tokens_i16(const Q* q, const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S,
                                uint32_t r) {
  size_t b = 0;
  for (; b + 4 <= batch; b += 4) tile_i16<R, 4>(q, m, Xq, S, r, b);
  switch (batch - b) {
    case 3: tile_i16<R, 3>(q, m, Xq, S, r, b); break;
    case 2: tile_i16<R, 2>(q, m, Xq, S, r, b); break;
    case 1: tile_i16<R, 1>(q, m, Xq, S, r, b); break;
    default: break;
  }
}

template <class Q>
void int_i16(const Q* q, const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  uint32_t r = r0;
  if (batch == 1) {
    for (; r + 8 <= r1; r += 8) tile_i16<8, 1>(q, m, Xq, S, r, 0);
    for (; r < r1; ++r) tile_i16<1, 1>(q, m, Xq, S, r, 0);
    return;
  }
  for (; r + 2 <= r1; r += 2) rows_all_tokens_i16<2>(q, m, Xq, batch, S, r);
  for (; r < r1; ++r) rows_all_tokens_i16<1>(q, m, Xq, batch, S, r);
}

void int8_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16(m.q8, m, Xq, batch, S, r0, r1);
}
void int16_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16(m.q16, m, Xq, batch, S, r0, r1);
}

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* avx2_level_kernels() {
  static const LevelKernelTable t{dense8,  dense16, int8_i16, nullptr, int16_i16,
                                  nullptr, nullptr, nullptr,  nullptr, nullptr};
  return &t;
}

}  // namespace nnpress::levels::detail
