// The 256-bit helpers both fused trellis steps use (avx2/trellis_avx2.cpp, avx512/trellis_avx512.cpp,
// whose models are one __m256i of the 8 states' 32-bit lanes in either case): a lane splat, every
// lane's coding state, both bin costs of every lane's model and the rates of a weight's magnitudes. Internal linkage,
// as
// ../trellis_soa.h: each of those translation units compiles its own copy with its own ISA flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "../trellis_fused.h"

namespace nnpress::trellis_detail {
namespace {
namespace fused_simd {

NNPRESS_INLINE __m256i splat(uint32_t v) { return _mm256_set1_epi32(int(v)); }

// The coding state (fast + slow) >> 8 of every lane's packed model: both estimates are below 2^15,
// so a signed 16-bit multiply-add sums them.
NNPRESS_INLINE __m256i model_states(__m256i v) {
  return _mm256_srli_epi32(_mm256_madd_epi16(v, _mm256_set1_epi16(1)), 8);
}

// Both bin costs of every lane's model (cabac::kBinCostOfState of its state). The eight table rows
// are loaded one by one: on AMD Zen 4 and Zen 5 a gather instruction is slower than eight loads and
// a few shuffles (bench/results/trel.md, trel6.md).
struct BinCosts {
  __m256i zero, one;  // the cost of a 0 bin, of a 1 bin
};
// The (cost of 0, cost of 1) pairs of states lo and hi in one register.
NNPRESS_INLINE __m128i two_rows(uint32_t lo, uint32_t hi) {
  const __m128i a = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(cabac::kBinCostOfState[lo]));
  return _mm_castpd_si128(
      _mm_loadh_pd(_mm_castsi128_pd(a), reinterpret_cast<const double*>(cabac::kBinCostOfState[hi])));
}
NNPRESS_INLINE BinCosts bin_costs(__m256i model) {
#ifdef __AVX512F__
  // (The AVX-512 step reads the lanes' states one by one, which GCC compiles to lane extracts.)
  alignas(32) uint32_t st[kLanes];
  _mm256_store_si256(reinterpret_cast<__m256i*>(st), model_states(model));
  auto state = [&](int t) { return st[t]; };
#else
  // The AVX2 step packs them first: a lane's state, fast + slow < 2^16 shifted right by 8, is byte 1
  // of their sum; one byte shuffle and one permute gather the eight into 64 bits (byte t: lane t),
  // read by one move (bench/results/trel7.md).
  const __m256i bytes = _mm256_shuffle_epi8(
      _mm256_madd_epi16(model, _mm256_set1_epi16(1)),
      _mm256_setr_epi8(1, 5, 9, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 5, 9, 13, -1, -1, -1, -1, -1, -1,
                       -1, -1, -1, -1, -1, -1));
  const uint64_t packed = uint64_t(_mm_cvtsi128_si64(
      _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0)))));
  auto state = [&](int t) { return uint32_t(packed >> (8 * t)) & 0xFF; };
#endif
  // (cost of 0, cost of 1) pairs of states 0, 1 | 4, 5 and 2, 3 | 6, 7: one in-lane shuffle each
  // splits them into the two costs in state order.
  const __m256 a = _mm256_castsi256_ps(
      _mm256_inserti128_si256(_mm256_castsi128_si256(two_rows(state(0), state(1))), two_rows(state(4), state(5)), 1));
  const __m256 b = _mm256_castsi256_ps(
      _mm256_inserti128_si256(_mm256_castsi128_si256(two_rows(state(2), state(3))), two_rows(state(6), state(7)), 1));
  return {_mm256_castps_si256(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
          _mm256_castps_si256(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)))};
}

// The rate of every magnitude an entry may have, by row: row n - 1 for a magnitude n <= N (the 1 bins
// of unary flags 0..n-2 and the 0 bin of flag n-1), row N + j past them (all N flags at 1, then
// Exp-Golomb bucket j: j prefix 1 bins, a 0 bin on model j, eg_order + j bypass bits). A step prices
// the rows it needs in order with price_magnitude_row, carrying `ones` (the running sum of the 1 bins
// before the row), then takes each entry's row by magnitude_row.
using MagnitudeRates = uint32_t[cabac::kMaxUnaryFlags + cabac::kPrefixContexts][kLanes];

// Row `at` of `rates`: `ones`, the 0 bin of `model` and `bypass` bypass bits; returns `ones` with
// `model`'s 1 bin added.
NNPRESS_INLINE __m256i price_magnitude_row(MagnitudeRates& rates, uint32_t at, __m256i model, __m256i ones,
                                           uint32_t bypass) {
  const BinCosts pair = bin_costs(model);
  _mm256_store_si256(reinterpret_cast<__m256i*>(rates[at]),
                     _mm256_add_epi32(_mm256_add_epi32(ones, pair.zero), splat(bypass * cabac::kRateOne)));
  return _mm256_add_epi32(ones, pair.one);
}

// The row of magnitude `mag` >= 1.
NNPRESS_INLINE uint32_t magnitude_row(uint32_t mag, uint32_t unary_len, uint32_t eg_order) {
  return mag <= unary_len ? mag - 1 : unary_len + eg_bucket(mag - unary_len - 1, eg_order);
}

}  // namespace fused_simd
}  // namespace
}  // namespace nnpress::trellis_detail
