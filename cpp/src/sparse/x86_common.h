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

// x at c[0 .. 8): one 16-bit load per index, inserted into two 4-lane halves.
inline __m256 inputs8(const uint16_t* c, const float* x) {
  __m128 a = _mm_load_ss(x + c[0]), b = _mm_load_ss(x + c[4]);
  a = _mm_insert_ps(a, _mm_load_ss(x + c[1]), 0x10);
  b = _mm_insert_ps(b, _mm_load_ss(x + c[5]), 0x10);
  a = _mm_insert_ps(a, _mm_load_ss(x + c[2]), 0x20);
  b = _mm_insert_ps(b, _mm_load_ss(x + c[6]), 0x20);
  a = _mm_insert_ps(a, _mm_load_ss(x + c[3]), 0x30);
  b = _mm_insert_ps(b, _mm_load_ss(x + c[7]), 0x30);
  return _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1);
}

// The values of the 8 Ω indices at q[0 .. 8) (each < 16) from a 16-entry table held in two registers
// (lo: entries 0..7, hi: 8..15). With AVX-512VL one two-table permute (index bit 3 picks the table), else
// two permutes and a blend on that bit.
inline __m256 table16_values8(const uint8_t* q, __m256 lo, __m256 hi) {
  const __m256i gi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)));
#ifdef __AVX512VL__
  return _mm256_permutex2var_ps(lo, gi, hi);
#else
  const __m256 a = _mm256_permutevar8x32_ps(lo, gi), b = _mm256_permutevar8x32_ps(hi, gi);
  return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(gi, 28)));
#endif
}

}  // namespace
}  // namespace nnpress::sparse::detail
