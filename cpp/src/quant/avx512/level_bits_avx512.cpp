// eg_bits_avx512 (../avx2/level_bits_avx2.h): eg_bits_avx2 with 16 pairs per vector. The same bins
// on the same models in the same order as the scalar loop of estimate_level_bits_many, in
// integers, so the totals are equal. Compiled with the AVX-512 flags (cpp/CMakeLists.txt).
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics build their results from a deliberately undefined vector, which
// -Wmaybe-uninitialized reports at every inlined call site; nothing here reads an undefined lane.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "../avx2/level_bits_avx2.h"
#include "nnpress/cabac/context_model.h"
#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cabac/weight_contexts.h"

namespace nnpress::detail {
namespace {

// The coding state (fast + slow) >> 8 of every lane's model packed as fast | slow << 16 (both
// estimates below 2^15: a signed 16-bit multiply-add sums them).
inline __m512i states(__m512i v) { return _mm512_srli_epi32(_mm512_madd_epi16(v, _mm512_set1_epi16(1)), 8); }

// cabac::ContextModel::update of the lanes of `one` with a 1 bin, the others with a 0 bin, on the
// 16-bit halves (kProbOne - an estimate stays below 2^15).
inline __m512i update(__m512i v, __mmask16 one) {
  const __m512i shift = _mm512_set1_epi32(cabac::ContextModel::kFastShift | cabac::ContextModel::kSlowShift << 16);
  const __m512i up = _mm512_add_epi16(
      v, _mm512_srlv_epi16(_mm512_sub_epi16(_mm512_set1_epi16(int16_t(cabac::kProbOne)), v), shift));
  const __m512i down = _mm512_sub_epi16(v, _mm512_srlv_epi16(v, shift));
  return _mm512_mask_blend_epi32(one, down, up);
}

// floor(log2(x)) per lane for 1 <= x <= 2^31 (x as unsigned): the exponent of double(x), exact.
inline __m512i log2_floor(__m512i x) {
  const __m512i lo = _mm512_srli_epi64(
      _mm512_castpd_si512(_mm512_mask_cvtepu32_pd(_mm512_setzero_pd(), 0xFF, _mm512_castsi512_si256(x))), 52);
  const __m512i hi = _mm512_srli_epi64(
      _mm512_castpd_si512(_mm512_mask_cvtepu32_pd(_mm512_setzero_pd(), 0xFF, _mm512_extracti64x4_epi64(x, 1))), 52);
  const __m512i e = _mm512_permutex2var_epi32(
      lo, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), hi);
  return _mm512_sub_epi32(e, _mm512_set1_epi32(1023));
}

}  // namespace

void eg_bits_avx512(const uint32_t* mags, size_t n, const uint32_t* unary_len, const uint32_t* eg_order, int lanes,
                    uint64_t* out) {
  constexpr int kLast = cabac::kPrefixContexts - 1;
  alignas(64) uint32_t u_in[kEgBitsLanes512], k_in[kEgBitsLanes512];
  for (int c = 0; c < kEgBitsLanes512; ++c) {
    u_in[c] = c < lanes ? unary_len[c] : 0xFFFFFFFFu;  // unused lanes: no magnitude exceeds it
    k_in[c] = c < lanes ? eg_order[c] : 0;
  }
  const __m512i u = _mm512_load_si512(u_in), k = _mm512_load_si512(k_in);
  const __m512i one = _mm512_set1_epi32(1);
  const int* table = reinterpret_cast<const int*>(&cabac::kBinCostOfState[0][0]);
  __m512i model[cabac::kPrefixContexts];
  const cabac::ContextModel fresh;
  for (__m512i& m : model) m = _mm512_set1_epi32(int(uint32_t(fresh.fast) | uint32_t(fresh.slow) << 16));
  __m512i acc_lo = _mm512_setzero_si512(), acc_hi = _mm512_setzero_si512();
  for (size_t i = 0; i < n; ++i) {
    const __m512i mag = _mm512_set1_epi32(int(mags[i]));
    const __mmask16 active = _mm512_cmpgt_epu32_mask(mag, u);  // mag > unary_len
    if (!active) continue;
    const __m512i rem = _mm512_sub_epi32(_mm512_sub_epi32(mag, u), one);
    // Bucket j of the remainder (lanes that code no Exp-Golomb part: -1).
    const __m512i j = _mm512_mask_mov_epi32(_mm512_set1_epi32(-1), active,
                                            log2_floor(_mm512_add_epi32(_mm512_srlv_epi32(rem, k), one)));
    const int top = _mm512_reduce_max_epi32(j);
    // j prefix bins 1 on models 0..j-1 (the last shared), a 0 on model j, k + j bypass bits.
    __m512i cost = _mm512_maskz_slli_epi32(active, _mm512_add_epi32(k, j), cabac::kRateBits);
    for (int b = 0; b <= top; ++b) {
      const int at = b < kLast ? b : kLast;
      const __m512i bv = _mm512_set1_epi32(b);
      const __mmask16 act = _mm512_cmpge_epi32_mask(j, bv);
      const __mmask16 bin = _mm512_cmpgt_epi32_mask(j, bv);
      const __m512i v = model[at];
      const __m512i idx = _mm512_mask_add_epi32(_mm512_slli_epi32(states(v), 1), bin, _mm512_slli_epi32(states(v), 1),
                                                one);
      cost = _mm512_add_epi32(cost, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), act, idx, table, 4));
      model[at] = _mm512_mask_mov_epi32(v, act, update(v, bin));
    }
    acc_lo = _mm512_add_epi64(acc_lo, _mm512_cvtepu32_epi64(_mm512_castsi512_si256(cost)));
    acc_hi = _mm512_add_epi64(acc_hi, _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(cost, 1)));
  }
  alignas(64) uint64_t sums[kEgBitsLanes512];
  _mm512_store_si512(sums, acc_lo);
  _mm512_store_si512(sums + 8, acc_hi);
  for (int c = 0; c < lanes; ++c) out[c] = sums[c];
}

}  // namespace nnpress::detail
