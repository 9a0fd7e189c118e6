// Private helpers of the x86 kernel files (not installed). Internal linkage: each ISA translation unit
// compiles its own copy with its own flags, so nothing built for AVX-512 is reachable from the AVX2 code.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace nnpress::sparse::detail {
namespace {

// Sum of the 8 lanes.
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// x at four 16-bit indices packed in q.
inline __m128 gather4(uint64_t q, const float* x) {
  __m128 v = _mm_load_ss(x + (q & 0xFFFF));
  v = _mm_insert_ps(v, _mm_load_ss(x + ((q >> 16) & 0xFFFF)), 0x10);
  v = _mm_insert_ps(v, _mm_load_ss(x + ((q >> 32) & 0xFFFF)), 0x20);
  return _mm_insert_ps(v, _mm_load_ss(x + (q >> 48)), 0x30);
}

// Eight inputs x[c[0..8)] through a register (the traits' gather8, kernels_simd.h): scalar loads
// inserted into two 4-lane vectors, one store.
inline void gather8(const uint16_t* c, const float* x, float* p) {
  uint64_t q, u;
  __builtin_memcpy(&q, c, 8);
  __builtin_memcpy(&u, c + 4, 8);
  _mm256_storeu_ps(p, _mm256_insertf128_ps(_mm256_castps128_ps256(gather4(q, x)), gather4(u, x), 1));
}

}  // namespace
}  // namespace nnpress::sparse::detail
