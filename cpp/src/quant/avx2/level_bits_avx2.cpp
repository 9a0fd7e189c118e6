// The Exp-Golomb part of estimate_level_bits_many with one level-parameter pair per lane
// (level_bits_avx2.h): the same bins on the same models in the same order as the scalar loop, in
// integers, so the totals are equal. Compiled with -mavx2 only (cpp/CMakeLists.txt).
#include "level_bits_avx2.h"

#include <immintrin.h>

#include "nnpress/cabac/context_model.h"
#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cabac/weight_contexts.h"

namespace nnpress::detail {
namespace {

// A model packed as fast | slow << 16 per lane (as the trellis kernels hold them).
inline __m256i states(__m256i v) {
  const __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
  return _mm256_srli_epi32(_mm256_add_epi32(lo, _mm256_srli_epi32(v, 16)), 8);
}

// cabac::ContextModel::update of every lane with its bin (all-ones lanes of `bin` code a 1).
inline __m256i update(__m256i v, __m256i bin) {
  const __m256i mask16 = _mm256_set1_epi32(0xFFFF), one = _mm256_set1_epi32(int(cabac::kProbOne));
  const __m256i f = _mm256_and_si256(v, mask16), s = _mm256_srli_epi32(v, 16);
  const __m256i f_up = _mm256_add_epi32(f,
                                        _mm256_srli_epi32(_mm256_sub_epi32(one, f), cabac::ContextModel::kFastShift));
  const __m256i f_down = _mm256_sub_epi32(f, _mm256_srli_epi32(f, cabac::ContextModel::kFastShift));
  const __m256i s_up = _mm256_add_epi32(s,
                                        _mm256_srli_epi32(_mm256_sub_epi32(one, s), cabac::ContextModel::kSlowShift));
  const __m256i s_down = _mm256_sub_epi32(s, _mm256_srli_epi32(s, cabac::ContextModel::kSlowShift));
  const __m256i nf = _mm256_blendv_epi8(f_down, f_up, bin), ns = _mm256_blendv_epi8(s_down, s_up, bin);
  return _mm256_or_si256(nf, _mm256_slli_epi32(ns, 16));
}

// floor(log2(x)) per lane for 1 <= x <= 2^31: the exponent of double(x >> 1) (exact) plus one, 0
// for x = 1.
inline __m256i log2_floor(__m256i x) {
  const __m256i y = _mm256_srli_epi32(x, 1);
  const __m256i lo = _mm256_srli_epi64(_mm256_castpd_si256(_mm256_cvtepi32_pd(_mm256_castsi256_si128(y))), 52);
  const __m256i hi = _mm256_srli_epi64(_mm256_castpd_si256(_mm256_cvtepi32_pd(_mm256_extracti128_si256(y, 1))), 52);
  const __m256i e = _mm256_permutevar8x32_epi32(_mm256_or_si256(lo, _mm256_slli_epi64(hi, 32)),
                                                _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
  return _mm256_max_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1022)), _mm256_setzero_si256());
}

inline uint32_t max_lane(__m256i v) {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return uint32_t(_mm_cvtsi128_si32(m));
}

}  // namespace

void eg_bits_avx2(const uint32_t* mags, size_t n, const uint32_t* unary_len, const uint32_t* eg_order, int lanes,
                  uint64_t* out) {
  constexpr int kLast = cabac::kPrefixContexts - 1;
  alignas(32) uint32_t u_in[kEgBitsLanes], k_in[kEgBitsLanes];
  for (int c = 0; c < kEgBitsLanes; ++c) {
    u_in[c] = c < lanes ? unary_len[c] : 0xFFFFFFFFu;  // unused lanes: no magnitude exceeds it
    k_in[c] = c < lanes ? eg_order[c] : 0;
  }
  const __m256i u = _mm256_load_si256(reinterpret_cast<const __m256i*>(u_in));
  const __m256i k = _mm256_load_si256(reinterpret_cast<const __m256i*>(k_in));
  const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
  const __m256i u_signed = _mm256_xor_si256(u, sign);  // unsigned compares as signed ones
  const __m256i one = _mm256_set1_epi32(1), minus_one = _mm256_set1_epi32(-1);
  const int* table = reinterpret_cast<const int*>(&cabac::kBinCostOfState[0][0]);
  __m256i model[cabac::kPrefixContexts];
  const cabac::ContextModel fresh;
  for (__m256i& m : model) m = _mm256_set1_epi32(int(uint32_t(fresh.fast) | uint32_t(fresh.slow) << 16));
  __m256i acc_lo = _mm256_setzero_si256(), acc_hi = _mm256_setzero_si256();
  for (size_t i = 0; i < n; ++i) {
    const __m256i mag = _mm256_set1_epi32(int(mags[i]));
    const __m256i active = _mm256_cmpgt_epi32(_mm256_xor_si256(mag, sign), u_signed);  // mag > unary_len
    const __m256i rem = _mm256_sub_epi32(_mm256_sub_epi32(mag, u), one);
    // Bucket j of the remainder; -1 in lanes that code no Exp-Golomb part.
    const __m256i j = _mm256_blendv_epi8(minus_one, log2_floor(_mm256_add_epi32(_mm256_srlv_epi32(rem, k), one)),
                                         active);
    const int top = int(max_lane(j));
    if (top < 0) continue;
    // j prefix bins 1 on models 0..j-1 (the last shared), a 0 on model j, k + j bypass bits.
    __m256i cost = _mm256_and_si256(_mm256_slli_epi32(_mm256_add_epi32(k, j), cabac::kRateBits), active);
    for (int b = 0; b <= top; ++b) {
      const int at = b < kLast ? b : kLast;
      const __m256i bv = _mm256_set1_epi32(b);
      const __m256i act = _mm256_cmpgt_epi32(j, _mm256_sub_epi32(bv, one));  // j >= b
      const __m256i bin = _mm256_cmpgt_epi32(j, bv);                         // j > b
      const __m256i v = model[at];
      const __m256i idx = _mm256_sub_epi32(_mm256_slli_epi32(states(v), 1), bin);  // [state][bin]
      cost = _mm256_add_epi32(cost, _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), table, idx, act, 4));
      model[at] = _mm256_blendv_epi8(v, update(v, bin), act);
    }
    acc_lo = _mm256_add_epi64(acc_lo, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(cost)));
    acc_hi = _mm256_add_epi64(acc_hi, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(cost, 1)));
  }
  alignas(32) uint64_t sums[kEgBitsLanes];
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums), acc_lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 4), acc_hi);
  for (int c = 0; c < lanes; ++c) out[c] = sums[c];
}

void unary_flag_bits_avx2(const uint32_t* mags, const uint8_t* negs, size_t n, uint32_t max_unary, uint64_t* cost) {
  constexpr int kBlocks = cabac::kMaxUnaryFlags / 8;
  static_assert(cabac::kMaxUnaryFlags % 8 == 0, "flags in blocks of 8");
  const int* table = reinterpret_cast<const int*>(&cabac::kBinCostOfState[0][0]);
  const cabac::ContextModel fresh;
  __m256i model[2][kBlocks];
  for (auto& side : model)
    for (__m256i& m : side) m = _mm256_set1_epi32(int(uint32_t(fresh.fast) | uint32_t(fresh.slow) << 16));
  __m256i acc[kBlocks][2];
  for (auto& a : acc) a[0] = a[1] = _mm256_setzero_si256();
  const __m256i flag = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8);  // flag number n of lane l in block 0
  const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
  for (size_t i = 0; i < n; ++i) {
    const uint32_t top = mags[i] < max_unary ? mags[i] : max_unary;
    const __m256i mag = _mm256_xor_si256(_mm256_set1_epi32(int(mags[i])), sign);  // unsigned compares
    const __m256i topv = _mm256_set1_epi32(int(top));
    __m256i* side = model[negs[i] != 0];
    for (uint32_t b = 0; b * 8 < top; ++b) {
      const __m256i nv = _mm256_add_epi32(flag, _mm256_set1_epi32(int(8 * b)));
      const __m256i act = _mm256_cmpgt_epi32(_mm256_add_epi32(topv, _mm256_set1_epi32(1)), nv);  // n <= top
      const __m256i bin = _mm256_cmpgt_epi32(mag, _mm256_xor_si256(nv, sign));                     // mag > n
      const __m256i v = side[b];
      const __m256i idx = _mm256_sub_epi32(_mm256_slli_epi32(states(v), 1), bin);
      const __m256i c = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), table, idx, act, 4);
      acc[b][0] = _mm256_add_epi64(acc[b][0], _mm256_cvtepu32_epi64(_mm256_castsi256_si128(c)));
      acc[b][1] = _mm256_add_epi64(acc[b][1], _mm256_cvtepu32_epi64(_mm256_extracti128_si256(c, 1)));
      side[b] = _mm256_blendv_epi8(v, update(v, bin), act);
    }
  }
  alignas(32) uint64_t sums[8];
  for (int b = 0; b < kBlocks && uint32_t(b * 8) < max_unary; ++b) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums), acc[b][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 4), acc[b][1]);
    for (int l = 0; l < 8 && uint32_t(b * 8 + l) < max_unary; ++l) cost[b * 8 + l] += sums[l];
  }
}

}  // namespace nnpress::detail
