// The trellis' AVX2 kernels (../trellis_kernels.h) as a kernel set, Avx2Kernels: one 256-bit
// register holds one context model of all 8 states. Integer arithmetic, and the double path costs
// rounded as the scalar code rounds them (no FMA), so the results equal the scalar kernels' bit
// for bit. Included only by translation units compiled with AVX2 or more (-ffp-contract=off):
// avx2/trellis_avx2.cpp, and avx512/trellis_avx512.cpp, which replaces some of them.
#pragma once

#include <immintrin.h>

#include <limits>

#include "../trellis_soa.h"

namespace nnpress::trellis_detail {
namespace {
namespace avx2 {

inline __m256i load(const Row& r) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(r)); }
inline void store(Row& r, __m256i v) { _mm256_store_si256(reinterpret_cast<__m256i*>(r), v); }

// The coding state of each lane's packed model: ((fast + slow) >> 8).
inline __m256i states(__m256i v) {
  const __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
  return _mm256_srli_epi32(_mm256_add_epi32(lo, _mm256_srli_epi32(v, 16)), 8);
}

void one_prefix(const Row* chain, uint32_t count, Row* prefix) {
  const int* table = reinterpret_cast<const int*>(&cabac::kBinCostOfState[0][0]);
  const __m256i one = _mm256_set1_epi32(1);
  __m256i acc = _mm256_setzero_si256();
  store(prefix[0], acc);
  for (uint32_t n = 0; n < count; ++n) {
    const __m256i idx = _mm256_add_epi32(_mm256_slli_epi32(states(load(chain[n])), 1), one);  // [state][1]
    acc = _mm256_add_epi32(acc, _mm256_i32gather_epi32(table, idx, 4));
    store(prefix[n + 1], acc);
  }
}

inline __m256i from_index(const uint32_t* from) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from)); }

void permute(const Row* src, Row* dst, uint32_t count, const uint32_t* from) {
  const __m256i idx = from_index(from);
  for (uint32_t r = 0; r < count; ++r) store(dst[r], _mm256_permutevar8x32_epi32(load(src[r]), idx));
}

// ContextModel::update of every lane with its bin (all-ones lanes of `bin` code a 1).
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

void permute_chain(const Row* src, Row* dst, uint32_t count, const uint32_t* from, const uint32_t* mag) {
  const __m256i idx = from_index(from);
  const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mag));  // < 2^31: signed compares hold
  __m256i r = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  for (uint32_t n = 0; n < count; ++n) {
    const __m256i v = _mm256_permutevar8x32_epi32(load(src[n]), idx);
    const __m256i r1 = _mm256_add_epi32(r, one);
    const __m256i active = _mm256_cmpgt_epi32(m, r);  // mag > n
    const __m256i bin = _mm256_cmpgt_epi32(m, r1);    // mag > n + 1
    store(dst[n], _mm256_blendv_epi8(v, update(v, bin), active));
    r = r1;
  }
}

void permute_select(const Row* src, Row* dst, uint32_t count, const uint32_t* from, const uint32_t* sel,
                    const uint32_t* bin) {
  const __m256i idx = from_index(from);
  const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sel));
  const __m256i b = _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bin)),
                                       _mm256_setzero_si256());
  for (uint32_t r = 0; r < count; ++r) {
    const __m256i v = _mm256_permutevar8x32_epi32(load(src[r]), idx);
    const __m256i active = _mm256_cmpeq_epi32(s, _mm256_set1_epi32(int(r)));
    store(dst[r], _mm256_blendv_epi8(v, update(v, b), active));
  }
}

void sig_costs(const Row* rows, const uint32_t* sig_at, const uint32_t* sign_at, unsigned neg, Row& sig_model,
               Row& nonzero) {
  const int* table = reinterpret_cast<const int*>(&cabac::kBinCostOfState[0][0]);
  const int* models = reinterpret_cast<const int*>(&rows[0][0]);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // Row index * 8 + lane: each lane's model in the row its neighbourhood selects.
  const __m256i sig_idx = _mm256_add_epi32(_mm256_slli_epi32(from_index(sig_at), 3), lane);
  const __m256i sign_idx = _mm256_add_epi32(_mm256_slli_epi32(from_index(sign_at), 3), lane);
  const __m256i sig = _mm256_i32gather_epi32(models, sig_idx, 4);
  const __m256i sign = _mm256_i32gather_epi32(models, sign_idx, 4);
  store(sig_model, sig);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i sig_cost = _mm256_i32gather_epi32(table, _mm256_add_epi32(_mm256_slli_epi32(states(sig), 1), one), 4);
  const __m256i sign_cost = _mm256_i32gather_epi32(
      table, _mm256_add_epi32(_mm256_slli_epi32(states(sign), 1), _mm256_set1_epi32(int(neg))), 4);
  store(nonzero, _mm256_add_epi32(sig_cost, sign_cost));
}

// Targets 0..3 are reached from the even states, 4..7 from the odd ones (kDqNextState): one
// vector of 4 doubles per quantizer, lane t - 4z. Every target has two predecessors, a < b; a
// pass over the entries from a, then one from b, keeps the reference order (states ascending,
// then entries). Predecessors per lane: z = 0: a = {0, 2, 0, 2}, b = {4, 6, 4, 6}; z = 1:
// a = {3, 1, 3, 1}, b = {7, 5, 7, 5}. The level parity each lane needs from its predecessor is
// {0, 0, 1, 1} when z ^ pass == 0, else {1, 1, 0, 0}.
void select_branches(const double (*costs)[kCandidates][kLanes], const uint8_t (*parity)[kCandidates], const int* n_of,
                     double* best_cost, uint32_t* best_id) {
  const __m256d low = _mm256_castsi256_pd(_mm256_setr_epi64x(-1, -1, 0, 0));
  const __m256d high = _mm256_castsi256_pd(_mm256_setr_epi64x(0, 0, -1, -1));
  for (int z = 0; z < 2; ++z) {
    __m256d best = _mm256_set1_pd(std::numeric_limits<double>::infinity());
    __m256d id = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
    for (int pass = 0; pass < 2; ++pass) {
      const __m256i states = z == 0 ? _mm256_setr_epi64x(0, 2, 0, 2) : _mm256_setr_epi64x(3, 1, 3, 1);
      const __m256i pred = _mm256_add_epi64(states, _mm256_set1_epi64x(4 * pass));
      for (int c = 0; c < n_of[z]; ++c) {
        const __m256d row = _mm256_loadu_pd(&costs[z][c][4 * pass]);
        const __m256d v = z == 0 ? _mm256_permute4x64_pd(row, _MM_SHUFFLE(2, 0, 2, 0))
                                 : _mm256_permute4x64_pd(row, _MM_SHUFFLE(1, 3, 1, 3));
        const __m256d take = (z ^ pass ^ parity[z][c]) ? high : low;
        const __m256d better = _mm256_and_pd(_mm256_cmp_pd(v, best, _CMP_LT_OQ), take);
        best = _mm256_blendv_pd(best, v, better);
        const __m256i branch = _mm256_add_epi64(pred, _mm256_set1_epi64x(int64_t(c) << 3));
        id = _mm256_blendv_pd(id, _mm256_castsi256_pd(branch), better);
      }
    }
    _mm256_storeu_pd(best_cost + 4 * z, best);
    const __m256i packed = _mm256_permutevar8x32_epi32(_mm256_castpd_si256(id),
                                                       _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(best_id + 4 * z), _mm256_castsi256_si128(packed));
  }
}

inline uint32_t max_lane(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return uint32_t(_mm_cvtsi128_si32(m));
}

CommitExtent commit(const CommitIo& io) {
  const __m256i id = _mm256_load_si256(reinterpret_cast<const __m256i*>(io.best_id));
  const __m256i dead = _mm256_cmpeq_epi32(id, _mm256_set1_epi32(-1));
  const __m256i p = _mm256_andnot_si256(dead, _mm256_and_si256(id, _mm256_set1_epi32(7)));
  const __m256i c = _mm256_andnot_si256(dead, _mm256_srli_epi32(id, 3));
  const __m256i z = _mm256_and_si256(p, _mm256_set1_epi32(1));
  const __m256i e = _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(z, 3), z), c);  // z * 7 + c
  static_assert(kCandidates == 7, "e = z * 7 + c");
  const __m256i packed = _mm256_andnot_si256(dead,
                                             _mm256_i32gather_epi32(reinterpret_cast<const int*>(io.entry), e, 4));
  const __m256i byte = _mm256_set1_epi32(0xFF);
  const __m256i chain = _mm256_and_si256(_mm256_srli_epi32(packed, kChainShift), byte);
  const __m256i eg = _mm256_and_si256(_mm256_srli_epi32(packed, kEgShift), byte);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i nz = _mm256_and_si256(_mm256_srli_epi32(packed, kNonzeroShift), one);
  const __m256i cls = _mm256_and_si256(_mm256_srli_epi32(packed, kClassShift), _mm256_set1_epi32(3));
  const __m256i far = _mm256_and_si256(_mm256_srli_epi32(packed, kFarShift), one);
  // Decision bytes: p | j << 3, 0xFF for dead states; one byte per 32-bit lane, packed.
  const __m256i code = _mm256_or_si256(_mm256_or_si256(p, _mm256_and_si256(packed, byte)),
                                       _mm256_and_si256(dead, byte));
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                                        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i bytes = _mm256_shuffle_epi8(code, pick);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(io.dec),
                   _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1)));
  auto put = [](uint32_t* dst, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v); };
  put(io.from, p);
  put(io.chain_mag, chain);
  put(io.eg_mag, eg);
  const __m256i sig_at = _mm256_permutevar8x32_epi32(from_index(io.sig_at), p);
  const __m256i sign_at = _mm256_permutevar8x32_epi32(from_index(io.sign_at), p);
  const __m256i no_row = _mm256_set1_epi32(kModelRows);
  put(io.sig_row, _mm256_blendv_epi8(_mm256_sub_epi32(sig_at, _mm256_set1_epi32(kSigRow)), no_row, dead));
  put(io.sig_bin, nz);
  const __m256i nz_mask = _mm256_cmpeq_epi32(nz, one);
  put(io.sign_row, _mm256_blendv_epi8(no_row, _mm256_sub_epi32(sign_at, _mm256_set1_epi32(kSignRow)), nz_mask));
  put(io.sign_bin, _mm256_and_si256(nz, _mm256_set1_epi32(int(io.neg))));
  const __m256i prev_nonzero = _mm256_andnot_si256(
      _mm256_cmpeq_epi32(sign_at, _mm256_set1_epi32(kSignRow + cabac::kZero)), one);
  put(io.nsig_at,
      _mm256_add_epi32(_mm256_set1_epi32(kSigRow), _mm256_add_epi32(_mm256_slli_epi32(cls, 1), prev_nonzero)));
  put(io.nsign_at, _mm256_add_epi32(_mm256_set1_epi32(kSignRow), cls));
  // Distortion and rate of the survivors' paths (dead states: unread values from state 0).
  const __m256i rate_idx = _mm256_add_epi32(_mm256_slli_epi32(e, 3), p);  // rates[e][p]
  const __m256i step_rate = _mm256_i32gather_epi32(reinterpret_cast<const int*>(&io.rates[0][0]), rate_idx, 4);
  for (int h = 0; h < 2; ++h) {
    const __m128i ph = h ? _mm256_extracti128_si256(p, 1) : _mm256_castsi256_si128(p);
    const __m128i eh = h ? _mm256_extracti128_si256(e, 1) : _mm256_castsi256_si128(e);
    const __m128i rh = h ? _mm256_extracti128_si256(step_rate, 1) : _mm256_castsi256_si128(step_rate);
    const __m256d all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1)), none = _mm256_setzero_pd();
    const __m256d d = _mm256_add_pd(_mm256_mask_i32gather_pd(none, io.dist, ph, all, 8),
                                    _mm256_mask_i32gather_pd(none, io.entry_dist, eh, all, 8));
    _mm256_storeu_pd(io.ndist + 4 * h, d);
    const __m256i r = _mm256_add_epi64(_mm256_i32gather_epi64(reinterpret_cast<const long long*>(io.rate), ph, 8),
                                       _mm256_cvtepu32_epi64(rh));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(io.nrate + 4 * h), r);
  }
  return {max_lane(chain), max_lane(eg), !_mm256_testz_si256(far, far)};
}

void lane_costs(const Row& base, const Row& pre, const Row& eg, const Row& model, uint32_t add, const double* cost,
                double dist, double lambda, Row& rate, double* out) {
  const int* table = reinterpret_cast<const int*>(&cabac::kBinCostOfState[0][0]);
  const __m256i idx = _mm256_slli_epi32(states(load(model)), 1);  // [state][0]
  __m256i r = _mm256_add_epi32(_mm256_add_epi32(load(base), load(pre)), load(eg));
  r = _mm256_add_epi32(_mm256_add_epi32(r, _mm256_i32gather_epi32(table, idx, 4)), _mm256_set1_epi32(int(add)));
  store(rate, r);
  const __m256d d = _mm256_set1_pd(dist), l = _mm256_set1_pd(lambda);
  const __m256d lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(r)),
                hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(r, 1));
  _mm256_storeu_pd(out, _mm256_add_pd(_mm256_add_pd(_mm256_loadu_pd(cost), d), _mm256_mul_pd(l, lo)));
  _mm256_storeu_pd(out + 4, _mm256_add_pd(_mm256_add_pd(_mm256_loadu_pd(cost + 4), d), _mm256_mul_pd(l, hi)));
}

}  // namespace avx2

struct Avx2Kernels {
  static void one_prefix(const Row* chain, uint32_t count, Row* prefix) { avx2::one_prefix(chain, count, prefix); }
  static void permute(const Row* src, Row* dst, uint32_t count, const uint32_t* from) {
    avx2::permute(src, dst, count, from);
  }
  static void permute_chain(const Row* src, Row* dst, uint32_t count, const uint32_t* from, const uint32_t* mag) {
    avx2::permute_chain(src, dst, count, from, mag);
  }
  static void permute_select(const Row* src, Row* dst, uint32_t count, const uint32_t* from, const uint32_t* sel,
                             const uint32_t* bin) {
    avx2::permute_select(src, dst, count, from, sel, bin);
  }
  static void sig_costs(const Row* rows, const uint32_t* sig_at, const uint32_t* sign_at, unsigned neg, Row& sig_model,
                        Row& nonzero) {
    avx2::sig_costs(rows, sig_at, sign_at, neg, sig_model, nonzero);
  }
  static void select_branches(const double (*costs)[kCandidates][kLanes], const uint8_t (*parity)[kCandidates],
                              const int* n_of, double* best_cost, uint32_t* best_id) {
    avx2::select_branches(costs, parity, n_of, best_cost, best_id);
  }
  static CommitExtent commit(const CommitIo& io) { return avx2::commit(io); }
  static void lane_costs(const Row& base, const Row& pre, const Row& eg, const Row& model, uint32_t add,
                         const double* cost, double dist, double lambda, Row& rate, double* out) {
    avx2::lane_costs(base, pre, eg, model, add, cost, dist, lambda, rate, out);
  }
};

}  // namespace
}  // namespace nnpress::trellis_detail
