// The trellis search (../trellis_soa.h) on AVX-512: the fused step below (trellis_fused) for every
// pass it covers, else trellis_soa with the AVX2 kernel set (../avx2/trellis_avx2_kernels.h,
// compiled here with AVX-512 available) whose two kernels on the doubles of all 8 states are
// replaced by 512-bit ones. Both give the scalar search's results bit for bit (integer rates, the
// double path costs rounded as written, no FMA). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2
// -ffp-contract=off (cpp/CMakeLists.txt); runs only when isa_supported(kAvx512).
#include <algorithm>
#include <cmath>
#include <utility>

#include "../avx2/trellis_avx2_kernels.h"
#include "../avx2/trellis_fused_avx2.h"
#include "../trellis_fused.h"

namespace nnpress::trellis_detail {
namespace {
namespace avx512 {

using namespace fused_simd;

void lane_costs(const Row& base, const Row& pre, const Row& eg, const Row& model, uint32_t add, const double* cost,
                double dist, double lambda, Row& rate, double* out) {
  const int* table = reinterpret_cast<const int*>(&cabac::kBinCostOfState[0][0]);
  const __m256i idx = _mm256_slli_epi32(avx2::states(avx2::load(model)), 1);  // [state][0]
  __m256i r = _mm256_add_epi32(_mm256_add_epi32(avx2::load(base), avx2::load(pre)), avx2::load(eg));
  r = _mm256_add_epi32(_mm256_add_epi32(r, _mm256_i32gather_epi32(table, idx, 4)), _mm256_set1_epi32(int(add)));
  avx2::store(rate, r);
  const __m512d c = _mm512_add_pd(_mm512_loadu_pd(cost), _mm512_set1_pd(dist));
  _mm512_storeu_pd(out, _mm512_add_pd(c, _mm512_mul_pd(_mm512_set1_pd(lambda),
                                                       _mm512_mask_cvtepi32_pd(_mm512_setzero_pd(), 0xFF, r))));
}

// (The masked forms of the conversions in this file, with every lane taken, avoid GCC's spurious
// "uninitialized" warnings on the unmasked ones.)
// Both quantizers in one register: lanes 0..3 are targets 0..3 (reached from the even states),
// lanes 4..7 targets 4..7 (from the odd ones), as the AVX2 kernel's two vectors. A pass over
// every target's lower predecessor, then one over its higher one; lane t reads its
// predecessor's cost from costs[0][c] (indices 0..7) or costs[1][c] (8..15).
void select_branches(const double (*costs)[kCandidates][kLanes], const uint8_t (*parity)[kCandidates], const int* n_of,
                     double* best_cost, uint32_t* best_id) {
  __m512d best = _mm512_set1_pd(std::numeric_limits<double>::infinity());
  __m512i id = _mm512_set1_epi64(-1);
  const int n = n_of[0] > n_of[1] ? n_of[0] : n_of[1];
  for (int pass = 0; pass < 2; ++pass) {
    const __m512i pred = pass == 0 ? _mm512_setr_epi64(0, 2, 0, 2, 8 + 3, 8 + 1, 8 + 3, 8 + 1)
                                   : _mm512_setr_epi64(4, 6, 4, 6, 8 + 7, 8 + 5, 8 + 7, 8 + 5);
    const __m512i state = _mm512_and_si512(pred, _mm512_set1_epi64(7));
    for (int c = 0; c < n; ++c) {
      // Lanes whose target the entry's level parity reaches from this predecessor ({0, 0, 1, 1}
      // needed when z ^ pass == 0, else {1, 1, 0, 0}); none past a quantizer's list.
      unsigned take = 0;
      for (int z = 0; z < 2; ++z)
        if (c < n_of[z]) take |= ((z ^ pass ^ parity[z][c]) ? 0xCu : 0x3u) << (4 * z);
      const __m512d v = _mm512_permutex2var_pd(_mm512_loadu_pd(costs[0][c]), pred, _mm512_loadu_pd(costs[1][c]));
      const __mmask8 better = _mm512_mask_cmp_pd_mask(__mmask8(take), v, best, _CMP_LT_OQ);
      best = _mm512_mask_mov_pd(best, better, v);
      id = _mm512_mask_mov_epi64(id, better, _mm512_add_epi64(state, _mm512_set1_epi64(int64_t(c) << 3)));
    }
  }
  _mm512_storeu_pd(best_cost, best);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(best_id),
                      _mm512_mask_cvtepi64_epi32(_mm256_setzero_si256(), 0xFF, id));
}

// ---- The fused step: one weight for all 8 states with everything but most models in registers ----
//
// The same search as trellis_soa<Avx512Kernels> (decisions, rates, distortions, tie-breaks and
// model updates), restructured so that a weight costs a few dozen vector instructions: per state
// the path cost and neighbourhood rows stay in registers across the row, as do the significance,
// sign and first Exp-Golomb prefix models (the unary flags and later prefix models are moved
// through the two banks); the chosen path's rate and distortion are summed at the row's end
// (finish_fused_row in ../trellis_fused.h); each state prices only its own quantizer's four
// entries (zero, its two indices among b..b+3, its smallest index); both bin costs of a model come
// from one lookup (bin_costs); the best branch into each state is picked from its two predecessors
// by permutes, in the reference order. The weight's sign and its candidates' parity select by
// masks, not branches (either is a coin toss). The dominance check of trellis_soa is not needed: a
// dominated smallest index can never be strictly cheaper than the earlier entry that dominates
// it, so pricing it changes nothing.
//
// Exp-Golomb buckets past the shared last prefix model (priced bin by bin by trellis_soa) are not
// handled: fused_covers() tells whether a pass can have none.

// ContextModel::update of the lanes of `one` with a 1 bin, the others with a 0 bin: the two
// estimates updated as 16-bit halves (fast shifted by kFastShift, slow by kSlowShift; kProbOne -
// an estimate stays below 2^15, so the 16-bit arithmetic is exact).
NNPRESS_INLINE __m256i model_update(__m256i v, __mmask8 one) {
  const __m256i shift = _mm256_set1_epi32(cabac::ContextModel::kFastShift | cabac::ContextModel::kSlowShift << 16);
  const __m256i up = _mm256_add_epi16(
      v, _mm256_srlv_epi16(_mm256_sub_epi16(_mm256_set1_epi16(int16_t(cabac::kProbOne)), v), shift));
  const __m256i down = _mm256_sub_epi16(v, _mm256_srlv_epi16(v, shift));
  return _mm256_mask_blend_epi32(one, down, up);
}

// The Exp-Golomb prefix rows kept in registers across a row (later ones are moved through the
// banks).
constexpr int kEgRegs = 6;

// kPlain: no importance and no column scales (the common case, compiled without their tests).
template <bool kPlain, class W, class F>
uint64_t trellis_fused(const PassArgs<W, F>& args, Workspace& ws) {
  const W* weights = args.weights;
  const F* importance = args.importance;
  const uint64_t rows = args.rows, cols = args.cols, chunk_rows = args.chunk_rows;
  const double tensor_step = args.step;
  const ChannelScales& scales = args.scales;
  const cabac::LevelParams& params = args.params;
  int32_t* levels = args.levels;
  float* recon = args.recon;
  const double lambda_per_unit = args.lambda / double(cabac::kRateOne);
  const uint32_t unary_len = params.unary_len < uint32_t(cabac::kMaxUnaryFlags) ? params.unary_len
                                                                                : uint32_t(cabac::kMaxUnaryFlags);
  const uint32_t eg_order = params.eg_order;
  const double inf = std::numeric_limits<double>::infinity();

  Bank* cur = &ws.banks[0];
  Bank* nxt = &ws.banks[1];
  uint32_t committed[kModelRows];
  uint32_t live_greater, live_eg;
  fused_begin_pass(args, ws, committed, live_greater, live_eg);
  uint8_t* decisions = ws.decisions;
  FusedRowStore store(cols);
  int32_t* index_base = store.index_base.data();
  uint32_t* step_rates = store.step_rate.data();
  uint64_t rate_total = 0;
  double dist_total = 0.0;

  // Predecessors of each target state (kDqNextState): the lower (pass 0) and the higher (pass 1).
  const __m512i pred64[2] = {_mm512_setr_epi64(0, 2, 0, 2, 3, 1, 3, 1), _mm512_setr_epi64(4, 6, 4, 6, 7, 5, 7, 5)};
  const __m256i pred32[2] = {_mm256_setr_epi32(0, 2, 0, 2, 3, 1, 3, 1), _mm256_setr_epi32(4, 6, 4, 6, 7, 5, 7, 5)};
  // Target lanes whose lower predecessor needs a level of parity 1 (the higher one needs parity 0
  // there and parity 1 elsewhere).
  constexpr unsigned kOddFromLower = 0x3C;
  const __m256i zero = _mm256_setzero_si256();
  const __m512d lam = _mm512_set1_pd(lambda_per_unit);
  const __m512d vinf = _mm512_set1_pd(inf);

  // Per state: path cost, and the significance / sign rows its neighbourhood selects (stale but
  // valid values in dead states).
  __m512d cost = vinf;
  __m256i sig_at = splat(kSigRow), sign_at = splat(kSignRow);

  for (uint64_t r = 0; r < rows; ++r) {
    fused_begin_row(r, chunk_rows, *cur, committed, live_greater, live_eg);
    cost = _mm512_mask_mov_pd(vinf, 1, _mm512_setzero_pd());
    sig_at = _mm256_mask_mov_epi32(sig_at, 1, splat(kSigRow + cabac::kZero * 2));
    sign_at = _mm256_mask_mov_epi32(sign_at, 1, splat(kSignRow + cabac::kZero));
    // The significance and sign rows live in registers for the whole row (written back at its end).
    __m256i sig_rows[kSignRow - kSigRow], sign_rows[kGreaterRow - kSignRow];
    for (int q = 0; q < kSignRow - kSigRow; ++q) sig_rows[q] = avx2::load(cur->row[kSigRow + q]);
    for (int q = 0; q < kGreaterRow - kSignRow; ++q) sign_rows[q] = avx2::load(cur->row[kSignRow + q]);
    // So do the first kEgRegs Exp-Golomb prefix rows (rows not yet live hold the initial model in
    // every lane, so moving them would change nothing); later ones stay in the banks.
    __m256i eg_rows[kEgRegs];
#pragma GCC unroll 8
    for (int q = 0; q < kEgRegs; ++q) eg_rows[q] = avx2::load(cur->row[kEgRow + q]);
    const W* w_row = weights + r * cols;
    const double row_step = tensor_step * (scales.row ? scales.row[r] : 1.0);
    auto step_of = [&](uint64_t i) { return !kPlain && scales.col ? row_step * scales.col[i] : row_step; };

    for (uint64_t i = 0; i < cols; ++i) {
      const double step = step_of(i);
      const double f = !kPlain && importance ? double(importance[r * cols + i]) : 1.0;
      const bool zero_only = w_row[i] == W(0);
      const double w = double(w_row[i]);
      const Candidates cand = candidates_of(w / step);
      const int64_t b = cand.base;
      const unsigned neg = cand.sgn < 0;
      const __mmask8 neg_mask = __mmask8(-int(neg));  // every lane for a negative weight
      // The distortion of every candidate j (reconstruction indices 0, b..b+3, 1, 2), each as
      // f * d * d with d = w - double(index) * step, one lane per candidate.
      // The indices are formed in double, exactly (b < 2^30): b + 0..3 in lanes 1..4, 0, 1, 2 elsewhere,
      // the sign flipped for a negative weight (a -0 index changes no distortion).
      const __m512d dist_j = [&] {
        const __m512d mag = _mm512_mask_add_pd(_mm512_setr_pd(0, 0, 0, 0, 0, 1, 2, 0), 0x1E, _mm512_set1_pd(double(b)),
                                               _mm512_setr_pd(0, 0, 1, 2, 3, 0, 0, 0));
        const __m512d index = _mm512_castsi512_pd(
            _mm512_xor_si512(_mm512_castpd_si512(mag), _mm512_set1_epi64(int64_t(uint64_t(neg) << 63))));
        const __m512d d = _mm512_sub_pd(_mm512_set1_pd(w), _mm512_mul_pd(index, _mm512_set1_pd(step)));
        return _mm512_mul_pd(_mm512_mul_pd(_mm512_set1_pd(f), d), d);
      }();
      // Entry c of quantizer z: 0 zero, 1 and 2 its indices u1 and u1 + 2 among b..b+3 (levels m
      // and m + 1, candidates j1 and j1 + 2), 3 its smallest index (level 1, candidate 6 for z = 0,
      // 5 for z = 1) when below b.
      uint32_t m[2] = {0, 0}, j1[2] = {0, 0};
      bool has3[2] = {false, false};
      if (!zero_only)
        for (int z = 0; z < 2; ++z) {
          const int64_t u1 = b + (int64_t(b & 1) != z);
          m[z] = uint32_t((u1 + 1) >> 1);
          j1[z] = uint32_t(u1 - b + 1);
          has3[z] = (z ? 1 : 2) < b;
        }

      // Each state's significance and sign models (rows selected by its neighbourhood).
      __m256i sigm = sig_rows[0];
      for (int q = 1; q < kSignRow - kSigRow; ++q)
        sigm = _mm256_mask_mov_epi32(sigm, _mm256_cmpeq_epi32_mask(sig_at, splat(kSigRow + q)), sig_rows[q]);
      __m256i signm = sign_rows[0];
      for (int q = 1; q < kGreaterRow - kSignRow; ++q)
        signm = _mm256_mask_mov_epi32(signm, _mm256_cmpeq_epi32_mask(sign_at, splat(kSignRow + q)), sign_rows[q]);
      const BinCosts sig_cost = bin_costs(sigm);
      const __m256i rate0 = sig_cost.zero;
      __m256i rate1 = zero, rate2 = zero, rate3 = zero;
      if (!zero_only) {
        const BinCosts sign_cost = bin_costs(signm);
        const __m256i nonzero = _mm256_add_epi32(sig_cost.one,
                                                 _mm256_mask_blend_epi32(neg_mask, sign_cost.zero, sign_cost.one));
        // The rates of the magnitudes (MagnitudeRates), the first kEgRegs prefix rows' models from
        // registers; each quantizer's entries take their rows by index (state p: quantizer p & 1;
        // entry 3, level 1, row 0).
        const uint32_t top = (m[0] > m[1] ? m[0] : m[1]) + 1;
        const uint32_t unary_rows = top < unary_len ? top : unary_len;
        const Row* chain = cur->row + kGreaterRow + neg * cabac::kMaxUnaryFlags;
        alignas(32) MagnitudeRates by_row;
        __m256i ones = zero;
        for (uint32_t q = 0; q < unary_rows; ++q) ones = price_magnitude_row(by_row, q, avx2::load(chain[q]), ones, 0);
        if (top > unary_len) {
          const uint32_t jmax = eg_bucket(top - unary_len - 1, eg_order);
#pragma GCC unroll 8
          for (int q = 0; q < kEgRegs; ++q) {
            if (uint32_t(q) > jmax) break;
            ones = price_magnitude_row(by_row, unary_len + q, eg_rows[q], ones, eg_order + q);
          }
          for (uint32_t q = kEgRegs; q <= jmax; ++q)
            ones = price_magnitude_row(by_row, unary_len + q, avx2::load(cur->row[kEgRow + q]), ones, eg_order + q);
        }
        auto row_of = [&](uint32_t mag) { return magnitude_row(mag, unary_len, eg_order); };
        rate1 = _mm256_mask_blend_epi32(0xAA, avx2::load(by_row[row_of(m[0])]), avx2::load(by_row[row_of(m[1])]));
        rate2 = _mm256_mask_blend_epi32(0xAA, avx2::load(by_row[row_of(m[0] + 1)]),
                                        avx2::load(by_row[row_of(m[1] + 1)]));
        rate3 = avx2::load(by_row[0]);
        rate1 = _mm256_add_epi32(rate1, nonzero);
        rate2 = _mm256_add_epi32(rate2, nonzero);
        rate3 = _mm256_add_epi32(rate3, nonzero);
      }

      // Path cost of every entry from every state: (cost + dist) + lambda * rate, as written.
      auto path_cost = [&](uint32_t jz0, uint32_t jz1, __m256i rt) {
        const __m512i j = _mm512_mask_blend_epi64(0xAA, _mm512_set1_epi64(jz0), _mm512_set1_epi64(jz1));
        const __m512d d = _mm512_maskz_permutexvar_pd(0xFF, j, dist_j);
        return _mm512_add_pd(_mm512_add_pd(cost, d),
                             _mm512_mul_pd(lam, _mm512_mask_cvtepu32_pd(_mm512_setzero_pd(), 0xFF, rt)));
      };
      __m512d costs[4];
      costs[0] = path_cost(0, 0, rate0);
      if (!zero_only) {
        costs[1] = path_cost(j1[0], j1[1], rate1);
        costs[2] = path_cost(j1[0] + 2, j1[1] + 2, rate2);
        const __mmask8 has_small = __mmask8((has3[0] ? 0x55 : 0) | (has3[1] ? 0xAA : 0));
        costs[3] = _mm512_mask_mov_pd(vinf, has_small, path_cost(6, 5, rate3));
      } else {
        costs[1] = costs[2] = costs[3] = vinf;
      }

      // The best branch into every target t. From each predecessor two entries reach t: for an
      // even level the zero, then the even one of entries 1 and 2; for an odd level the odd one of
      // 1 and 2, then the smallest index. The reference takes the first strictly cheapest of the
      // lower predecessor's two, then the higher one's: a tree of strict comparisons, each keeping
      // the earlier branch on ties, picks the same.
      const __mmask8 odd1 = __mmask8((-(m[0] & 1) & 0x0F) | (-(m[1] & 1) & 0xF0));  // entry 1's level is odd
      const __m256i code_odd = _mm256_mask_blend_epi32(odd1, splat(2), splat(1));
      const __m256i code_even = _mm256_mask_blend_epi32(odd1, splat(1), splat(2));
      __m512d win[2];
      __m256i win_code[2];
      for (int pass = 0; pass < 2; ++pass) {
        const __mmask8 odd = __mmask8(pass ? ~kOddFromLower : kOddFromLower);  // targets needing an odd level
        const __m512d v0 = _mm512_maskz_permutexvar_pd(0xFF, pred64[pass], costs[0]);
        const __m512d v1 = _mm512_maskz_permutexvar_pd(0xFF, pred64[pass], costs[1]);
        const __m512d v2 = _mm512_maskz_permutexvar_pd(0xFF, pred64[pass], costs[2]);
        const __m512d v3 = _mm512_maskz_permutexvar_pd(0xFF, pred64[pass], costs[3]);
        const __m512d first = _mm512_mask_blend_pd(odd, v0, _mm512_mask_blend_pd(odd1, v2, v1));
        const __m512d second = _mm512_mask_blend_pd(odd, _mm512_mask_blend_pd(odd1, v1, v2), v3);
        const __m256i first_code = _mm256_mask_blend_epi32(odd, zero, code_odd);
        const __m256i second_code = _mm256_mask_blend_epi32(odd, code_even, splat(3));
        const __mmask8 later = _mm512_cmp_pd_mask(second, first, _CMP_LT_OQ);
        win[pass] = _mm512_mask_mov_pd(first, later, second);
        win_code[pass] = _mm256_or_si256(_mm256_mask_mov_epi32(first_code, later, second_code),
                                         splat(uint32_t(pass << 2)));
      }
      const __mmask8 higher = _mm512_cmp_pd_mask(win[1], win[0], _CMP_LT_OQ);
      const __m512d best = _mm512_mask_mov_pd(win[0], higher, win[1]);
      const __m256i code = _mm256_mask_mov_epi32(win_code[0], higher, win_code[1]);

      // The survivors: predecessor, entry (decision code j, magnitude, extents), next state.
      const __mmask8 live = _mm512_cmp_pd_mask(best, vinf, _CMP_LT_OQ);
      const __m256i from = _mm256_maskz_mov_epi32(live, _mm256_mask_blend_epi32(higher, pred32[0], pred32[1]));
      const __m256i centry = _mm256_and_si256(code, splat(3));
      // rates[c][from]: two 16-entry permutes (c = 0, 1 and c = 2, 3) and a select.
      const __m256i at = _mm256_add_epi32(_mm256_slli_epi32(_mm256_and_si256(centry, splat(1)), 3), from);
      const __m256i step_rate = _mm256_mask_blend_epi32(_mm256_cmpge_epu32_mask(centry, splat(2)),
                                                        _mm256_permutex2var_epi32(rate0, at, rate1),
                                                        _mm256_permutex2var_epi32(rate2, at, rate3));
      // Per target lane (quantizer zt): the chosen entry's magnitude, decision code and distortion.
      const __mmask8 is1 = _mm256_cmpeq_epi32_mask(centry, splat(1)), is2 = _mm256_cmpeq_epi32_mask(centry, splat(2)),
                     is3 = _mm256_cmpeq_epi32_mask(centry, splat(3));
      const __m256i mt = _mm256_mask_blend_epi32(0xF0, splat(m[0]), splat(m[1]));
      __m256i mag = _mm256_mask_mov_epi32(zero, is1, mt);
      mag = _mm256_mask_mov_epi32(mag, is2, _mm256_add_epi32(mt, splat(1)));
      mag = _mm256_maskz_mov_epi32(live, _mm256_mask_mov_epi32(mag, is3, splat(1)));
      const __m256i jt = _mm256_mask_blend_epi32(0xF0, splat(j1[0]), splat(j1[1]));
      __m256i jcode = _mm256_mask_mov_epi32(zero, is1, jt);
      jcode = _mm256_mask_mov_epi32(jcode, is2, _mm256_add_epi32(jt, splat(2)));
      jcode = _mm256_mask_mov_epi32(jcode, is3, _mm256_setr_epi32(6, 6, 6, 6, 5, 5, 5, 5));
      // Unary flags a level updates (min(mag, N + 1), as permute_chain takes them) and its
      // Exp-Golomb prefix extent (bucket + 1; the bucket is the exponent of (rem >> k) + 1, exact
      // in float below 2^24, which fused_covers guarantees).
      const __m256i chain_mag = _mm256_min_epu32(mag, splat(unary_len + 1));
      __m256i eg_mag = zero;
      if (!zero_only && std::max(m[0], m[1]) + 1 > unary_len) {
        const __mmask8 past = _mm256_cmpgt_epu32_mask(mag, splat(unary_len));
        const __m256i rem = _mm256_sub_epi32(mag, splat(unary_len + 1));
        const __m256i q = _mm256_add_epi32(_mm256_srl_epi32(rem, _mm_cvtsi32_si128(int(eg_order))), splat(1));
        const __m256i expo = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(q)), 23);
        eg_mag = _mm256_maskz_sub_epi32(past, expo, splat(126));  // bucket + 1 = exponent - 127 + 1
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(step_rates + size_t(i) * kDqStates), step_rate);
      const __m256i psig = _mm256_permutexvar_epi32(from, sig_at), psign = _mm256_permutexvar_epi32(from, sign_at);
      const __mmask8 nz = _mm256_mask_cmpneq_epi32_mask(live, mag, zero);
      const __m256i cls = _mm256_maskz_mov_epi32(
          nz, _mm256_mask_blend_epi32(neg_mask, splat(cabac::kPositive), splat(cabac::kNegative)));
      const __m256i prev_nonzero = _mm256_maskz_mov_epi32(
          _mm256_cmpneq_epi32_mask(psign, splat(kSignRow + cabac::kZero)), splat(1));
      const __m256i nsig_at = _mm256_add_epi32(splat(kSigRow),
                                               _mm256_add_epi32(_mm256_slli_epi32(cls, 1), prev_nonzero));
      const __m256i nsign_at = _mm256_add_epi32(splat(kSignRow), cls);
      const __m256i dec = _mm256_mask_mov_epi32(splat(kDead), live, _mm256_or_si256(from, _mm256_slli_epi32(jcode, 3)));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(decisions + size_t(i) * kDqStates),
                       _mm256_mask_cvtepi32_epi8(_mm_setzero_si128(), 0xFF, dec));

      // Moves: every survivor's models from its predecessor, with its level's updates.
      const __m256i usig = model_update(_mm256_permutexvar_epi32(from, sigm), nz);
      for (int q = 0; q < kSignRow - kSigRow; ++q)
        sig_rows[q] = _mm256_mask_mov_epi32(_mm256_permutexvar_epi32(from, sig_rows[q]),
                                            _mm256_mask_cmpeq_epi32_mask(live, psig, splat(kSigRow + q)), usig);
      const __m256i usign = model_update(_mm256_permutexvar_epi32(from, signm), neg_mask);
      for (int q = 0; q < kGreaterRow - kSignRow; ++q)
        sign_rows[q] = _mm256_mask_mov_epi32(_mm256_permutexvar_epi32(from, sign_rows[q]),
                                             _mm256_mask_cmpeq_epi32_mask(nz, psign, splat(kSignRow + q)), usign);
      uint32_t chain_top = avx2::max_lane(chain_mag);
      const uint32_t eg_top = avx2::max_lane(eg_mag);
      chain_top = fused_grow(unary_len, chain_top, eg_top, live_greater, live_eg);
      // Rows moved, the first `updated` of them updated in lane t where ext[t] > row (bin: ext[t]
      // > row + 1), as permute_chain / permute do.
      auto moved = [&](__m256i row, uint32_t q, __m256i ext) {
        const __m256i v = _mm256_permutexvar_epi32(from, row);
        const __mmask8 bin = _mm256_cmpgt_epu32_mask(ext, splat(q + 1));
        return _mm256_mask_mov_epi32(v, _mm256_cmpgt_epu32_mask(ext, splat(q)), model_update(v, bin));
      };
      // (Rows first..count - 1 of the group at src / dst; those below `updated` updated.)
      auto move = [&](const Row* src, Row* dst, uint32_t first, uint32_t updated, uint32_t count, __m256i ext) {
        for (uint32_t q = first; q < updated; ++q) avx2::store(dst[q], moved(avx2::load(src[q]), q, ext));
        for (uint32_t q = updated > first ? updated : first; q < count; ++q)
          avx2::store(dst[q], _mm256_permutexvar_epi32(from, avx2::load(src[q])));
      };
      if (live_greater) {
        move(cur->row + kGreaterRow + neg * cabac::kMaxUnaryFlags, nxt->row + kGreaterRow + neg * cabac::kMaxUnaryFlags,
             0, chain_top, live_greater, chain_mag);
        move(cur->row + kGreaterRow + (1 - neg) * cabac::kMaxUnaryFlags,
             nxt->row + kGreaterRow + (1 - neg) * cabac::kMaxUnaryFlags, 0, 0, live_greater, zero);
      }
#pragma GCC unroll 8
      for (int q = 0; q < kEgRegs; ++q) {
        if (uint32_t(q) >= live_eg) break;
        eg_rows[q] = uint32_t(q) < eg_top ? moved(eg_rows[q], uint32_t(q), eg_mag)
                                          : _mm256_permutexvar_epi32(from, eg_rows[q]);
      }
      move(cur->row + kEgRow, nxt->row + kEgRow, kEgRegs, eg_top, live_eg, eg_mag);
      // The signed base index of the weight's candidates, for the trace-back (finish_fused_row).
      index_base[i] = (int32_t(b) ^ -int32_t(neg)) + int32_t(neg);
      std::swap(cur, nxt);
      cost = best;
      sig_at = nsig_at;
      sign_at = nsign_at;
    }

    for (int q = 0; q < kSignRow - kSigRow; ++q) avx2::store(cur->row[kSigRow + q], sig_rows[q]);
    for (int q = 0; q < kGreaterRow - kSignRow; ++q) avx2::store(cur->row[kSignRow + q], sign_rows[q]);
    for (int q = 0; q < kEgRegs; ++q) avx2::store(cur->row[kEgRow + q], eg_rows[q]);
    alignas(64) double cost_l[kDqStates];
    _mm512_store_pd(cost_l, cost);
    finish_fused_row(cost_l, *cur, decisions, index_base, step_rates, w_row,
                     !kPlain && importance ? importance + r * cols : static_cast<const F*>(nullptr), step_of, cols,
                     levels + r * cols, recon ? recon + r * cols : nullptr, store.dist.data(), committed, rate_total,
                     dist_total);
  }
  *args.distortion += dist_total;
  if (args.contexts) *args.contexts = unpack_contexts(committed);
  return rate_total;
}

template <class W, class F>
uint64_t run(const PassArgs<W, F>& a, Workspace& ws);

}  // namespace avx512

struct Avx512Kernels : Avx2Kernels {
  static void select_branches(const double (*costs)[kCandidates][kLanes], const uint8_t (*parity)[kCandidates],
                              const int* n_of, double* best_cost, uint32_t* best_id) {
    avx512::select_branches(costs, parity, n_of, best_cost, best_id);
  }
  static void lane_costs(const Row& base, const Row& pre, const Row& eg, const Row& model, uint32_t add,
                         const double* cost, double dist, double lambda, Row& rate, double* out) {
    avx512::lane_costs(base, pre, eg, model, add, cost, dist, lambda, rate, out);
  }
};

namespace avx512 {
// The fused step when it covers the pass, else the search with the AVX-512 kernel set.
template <class W, class F>
uint64_t run(const PassArgs<W, F>& a, Workspace& ws) {
  if (!fused_covers(a)) return trellis_soa<Avx512Kernels>(a, ws);
  return a.importance || a.scales.col ? trellis_fused<false>(a, ws) : trellis_fused<true>(a, ws);
}
}  // namespace avx512

}  // namespace

uint64_t trellis_soa_avx512(const PassArgs<float, float>& a, Workspace& ws) { return avx512::run(a, ws); }
uint64_t trellis_soa_avx512(const PassArgs<float, double>& a, Workspace& ws) { return avx512::run(a, ws); }
uint64_t trellis_soa_avx512(const PassArgs<double, float>& a, Workspace& ws) { return avx512::run(a, ws); }
uint64_t trellis_soa_avx512(const PassArgs<double, double>& a, Workspace& ws) { return avx512::run(a, ws); }

}  // namespace nnpress::trellis_detail
