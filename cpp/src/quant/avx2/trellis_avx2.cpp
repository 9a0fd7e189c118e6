// The trellis search (../trellis_soa.h) on AVX2: the fused step below (trellis_fused) for every
// pass it covers (fused_covers, ../trellis_fused.h), else trellis_soa with the AVX2 kernel set
// (trellis_avx2_kernels.h). Both give the scalar search's results bit for bit (integer rates, the
// double path costs rounded as written, no FMA). Compiled with -mavx2 -ffp-contract=off only
// (cpp/CMakeLists.txt); runs only when isa_supported(kAvx2).
#include <utility>

#include "../trellis_fused.h"
#include "trellis_avx2_kernels.h"
#include "trellis_fused_avx2.h"

namespace nnpress::trellis_detail {
namespace {
namespace avx2_fused {

using namespace fused_simd;

// ---- The fused step on AVX2: one weight for all 8 states with everything but the models in registers ----
//
// The search of the fused AVX-512 step (avx512/trellis_avx512.cpp) in 256-bit registers: the 8
// states' models as one __m256i of 32-bit lanes, their path costs as two __m256d (states 0..3,
// 4..7); masks are vectors and blends replace masked moves. Each quantizer's two non-zero entries
// among b..b+3 are taken by level parity (the even one, the odd one) rather than by position: a
// target state is reached through a level of one parity, so from each predecessor it has two
// branches in the reference order, the zero then the even entry, or the odd entry then the
// smallest index (level 1), and both are picked with constant blends. The targets of each
// predecessor half come from it with one unpack and one 4 x 64-bit permute per pair of entries.

// ContextModel::update of every lane, with a 1 bin where `one` is all ones, else a 0 bin: the two
// estimates updated as 16-bit halves, each shift by k (kFastShift for the low half, kSlowShift for
// the high one) an unsigned high multiply by 2^(16 - k) (kProbOne - an estimate stays below 2^16,
// so the 16-bit arithmetic is exact).
static_assert(cabac::ContextModel::kFastShift >= 1 && cabac::ContextModel::kFastShift < 16 &&
                  cabac::ContextModel::kSlowShift >= 1 && cabac::ContextModel::kSlowShift < 16,
              "the shifts are 16-bit high multiplies");
NNPRESS_INLINE __m256i model_update(__m256i v, __m256i one) {
  const __m256i mul = _mm256_set1_epi32(
      int((1u << (16 - cabac::ContextModel::kFastShift)) | (1u << (16 - cabac::ContextModel::kSlowShift)) << 16));
  const __m256i up = _mm256_add_epi16(
      v, _mm256_mulhi_epu16(_mm256_sub_epi16(_mm256_set1_epi16(int16_t(uint16_t(cabac::kProbOne))), v), mul));
  const __m256i down = _mm256_sub_epi16(v, _mm256_mulhi_epu16(v, mul));
  return _mm256_blendv_epi8(down, up, one);
}

// Eight 32-bit masks from two vectors of four 64-bit ones (lanes 0..3, 4..7).
NNPRESS_INLINE __m256i narrow_masks(__m256d lo, __m256d hi) {
  const __m256 s = _mm256_shuffle_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi), _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_si256(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Targets 0..3 from predecessors {0, 2, 0, 2} of a 4-state half (lanes 0, 2, 0, 2 of it) with a
// level of the parity `a` needs in lanes 0, 1 and `b` in lanes 2, 3: [a0, a2, b0, b2].
NNPRESS_INLINE __m256d low_targets(__m256d a, __m256d b) {
  return _mm256_permute4x64_pd(_mm256_unpacklo_pd(a, b), _MM_SHUFFLE(3, 1, 2, 0));
}
// Targets 4..7 from predecessors {3, 1, 3, 1} of a half (lanes 3, 1, 3, 1): [a3, a1, b3, b1].
NNPRESS_INLINE __m256d high_targets(__m256d a, __m256d b) {
  return _mm256_permute4x64_pd(_mm256_unpackhi_pd(a, b), _MM_SHUFFLE(1, 3, 0, 2));
}

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

  // The lower predecessor of each target (kDqNextState; the higher one is 4 more), and the targets
  // it reaches with an odd level (lanes 2..5; the higher one reaches the others with an odd level).
  const __m256i pred_lower = _mm256_setr_epi32(0, 2, 0, 2, 3, 1, 3, 1);
  const __m256i odd_from_lower = _mm256_setr_epi32(0, 0, -1, -1, -1, -1, 0, 0);
  const __m256i zero = _mm256_setzero_si256();
  const __m256d lam = _mm256_set1_pd(lambda_per_unit);
  const __m256d vinf = _mm256_set1_pd(inf);
  const __m256i small_code = _mm256_setr_epi32(6, 6, 6, 6, 5, 5, 5, 5);  // candidate of level 1: index 2 (Q0), 1 (Q1)

  // Per state (lanes 0..3 and 4..7 of the doubles): path cost, and the significance / sign rows
  // its neighbourhood selects (stale but valid values in dead states). The path's rate and
  // distortion are summed at the row's end (finish_fused_row).
  __m256d cost_lo = vinf, cost_hi = vinf;
  __m256i sig_at = splat(kSigRow), sign_at = splat(kSignRow);

  for (uint64_t r = 0; r < rows; ++r) {
    fused_begin_row(r, chunk_rows, *cur, committed, live_greater, live_eg);
    cost_lo = _mm256_setr_pd(0.0, inf, inf, inf);
    cost_hi = vinf;
    sig_at = _mm256_blend_epi32(sig_at, splat(kSigRow + cabac::kZero * 2), 1);
    sign_at = _mm256_blend_epi32(sign_at, splat(kSignRow + cabac::kZero), 1);
    // The significance and sign rows live in registers for the whole row (written back at its end).
    __m256i sig_rows[kSignRow - kSigRow], sign_rows[kGreaterRow - kSignRow];
    for (int q = 0; q < kSignRow - kSigRow; ++q) sig_rows[q] = avx2::load(cur->row[kSigRow + q]);
    for (int q = 0; q < kGreaterRow - kSignRow; ++q) sign_rows[q] = avx2::load(cur->row[kSignRow + q]);
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
      const __m256i neg_mask = _mm256_set1_epi32(-int(neg));  // all ones for a negative weight
      // The distortion of every candidate j (reconstruction indices 0, b..b+3, 1, 2), each as
      // f * d * d with d = w - double(index) * step. The indices are formed in double, exactly
      // (b < 2^30), the sign flipped for a negative weight (a -0 index changes no distortion).
      alignas(32) double dj[8];
      {
        const __m256d vb = _mm256_set1_pd(double(b));
        const __m256d sign = _mm256_castsi256_pd(_mm256_set1_epi64x(int64_t(uint64_t(neg) << 63)));
        const __m256d vw = _mm256_set1_pd(w), vs = _mm256_set1_pd(step), vf = _mm256_set1_pd(f);
        const __m256d lo = _mm256_add_pd(_mm256_blend_pd(_mm256_setzero_pd(), vb, 0xE), _mm256_setr_pd(0, 0, 1, 2));
        const __m256d hi = _mm256_add_pd(_mm256_blend_pd(_mm256_setzero_pd(), vb, 0x1), _mm256_setr_pd(3, 1, 2, 0));
        const __m256d d_lo = _mm256_sub_pd(vw, _mm256_mul_pd(_mm256_xor_pd(lo, sign), vs));
        const __m256d d_hi = _mm256_sub_pd(vw, _mm256_mul_pd(_mm256_xor_pd(hi, sign), vs));
        _mm256_store_pd(dj, _mm256_mul_pd(_mm256_mul_pd(vf, d_lo), d_lo));
        _mm256_store_pd(dj + 4, _mm256_mul_pd(_mm256_mul_pd(vf, d_hi), d_hi));
      }
      // Per quantizer z: its indices among b..b+3 are u1 and u1 + 2 (levels m and m + 1,
      // candidates j1 and j1 + 2), one of even level (mag_even, j_even) and one of odd level
      // (mag_odd, j_odd); its smallest index (level 1, candidate 6 for z = 0, 5 for z = 1) exists
      // when below b (else its distortion is +inf: a branch that never wins).
      uint32_t mag_even[2] = {0, 0}, mag_odd[2] = {0, 0}, j_even[2] = {0, 0}, j_odd[2] = {0, 0};
      double d_even[2] = {inf, inf}, d_odd[2] = {inf, inf}, d_small[2] = {inf, inf};
      if (!zero_only)
        for (int z = 0; z < 2; ++z) {
          const int64_t u1 = b + (int64_t(b & 1) != z);
          const uint32_t m = uint32_t((u1 + 1) >> 1), j1 = uint32_t(u1 - b + 1);
          // (Without branches: the parity of m is as likely one as the other.)
          const uint32_t odd = m & 1;
          mag_odd[z] = m | 1;
          j_odd[z] = j1 + 2 * (odd ^ 1);
          mag_even[z] = (m + 1) & ~1u;
          j_even[z] = j1 + 2 * odd;
          d_even[z] = dj[j_even[z]];
          d_odd[z] = dj[j_odd[z]];
          if ((z ? 1 : 2) < b) d_small[z] = dj[z ? 5 : 6];
        }

      const uint32_t top = std::max(std::max(mag_even[0], mag_even[1]),
                                    std::max(mag_odd[0], mag_odd[1]));  // 0: zero only

      // Each state's significance and sign models (rows selected by its neighbourhood).
      __m256i sigm = sig_rows[0];
      for (int q = 1; q < kSignRow - kSigRow; ++q)
        sigm = _mm256_blendv_epi8(sigm, sig_rows[q], _mm256_cmpeq_epi32(sig_at, splat(kSigRow + q)));
      __m256i signm = sign_rows[0];
      for (int q = 1; q < kGreaterRow - kSignRow; ++q)
        signm = _mm256_blendv_epi8(signm, sign_rows[q], _mm256_cmpeq_epi32(sign_at, splat(kSignRow + q)));
      const BinCosts sig_cost = bin_costs(sigm);
      const __m256i rate0 = sig_cost.zero;
      __m256i rate_even = zero, rate_odd = zero, rate_small = zero;
      if (!zero_only) {
        const BinCosts sign_cost = bin_costs(signm);
        const __m256i nonzero = _mm256_add_epi32(sig_cost.one,
                                                 _mm256_blendv_epi8(sign_cost.zero, sign_cost.one, neg_mask));
        // The rates of the magnitudes (MagnitudeRates); each quantizer's entries take their rows by
        // index (one magnitude per quantizer and parity).
        const uint32_t unary_rows = top < unary_len ? top : unary_len;
        const Row* chain = cur->row + kGreaterRow + neg * cabac::kMaxUnaryFlags;
        alignas(32) MagnitudeRates by_row;
        __m256i ones = zero;
        for (uint32_t q = 0; q < unary_rows; ++q) ones = price_magnitude_row(by_row, q, avx2::load(chain[q]), ones, 0);
        if (top > unary_len) {
          const uint32_t jmax = eg_bucket(top - unary_len - 1, eg_order);
          for (uint32_t q = 0; q <= jmax; ++q)
            ones = price_magnitude_row(by_row, unary_len + q, avx2::load(cur->row[kEgRow + q]), ones, eg_order + q);
        }
        auto row_of = [&](uint32_t mag) { return magnitude_row(mag, unary_len, eg_order); };
        // (State p takes quantizer p & 1's entries.)
        rate_even = _mm256_blend_epi32(avx2::load(by_row[row_of(mag_even[0])]), avx2::load(by_row[row_of(mag_even[1])]),
                                       0xAA);
        rate_odd = _mm256_blend_epi32(avx2::load(by_row[row_of(mag_odd[0])]), avx2::load(by_row[row_of(mag_odd[1])]),
                                      0xAA);
        rate_small = avx2::load(by_row[0]);
        rate_even = _mm256_add_epi32(rate_even, nonzero);
        rate_odd = _mm256_add_epi32(rate_odd, nonzero);
        rate_small = _mm256_add_epi32(rate_small, nonzero);
      }

      // Path cost of every entry from every state: (cost + dist) + lambda * rate, as written
      // (distortion d0 in the states of Q0, d1 in those of Q1; rates below 2^31).
      struct Half2 {
        __m256d lo, hi;
      };
      auto path_cost = [&](double d0, double d1, __m256i rt) {
        const __m256d d = _mm256_blend_pd(_mm256_set1_pd(d0), _mm256_set1_pd(d1), 0xA);
        return Half2{_mm256_add_pd(_mm256_add_pd(cost_lo, d),
                                   _mm256_mul_pd(lam, _mm256_cvtepi32_pd(_mm256_castsi256_si128(rt)))),
                     _mm256_add_pd(_mm256_add_pd(cost_hi, d),
                                   _mm256_mul_pd(lam, _mm256_cvtepi32_pd(_mm256_extracti128_si256(rt, 1))))};
      };
      const Half2 c0 = path_cost(dj[0], dj[0], rate0);
      Half2 ce{vinf, vinf}, co{vinf, vinf}, cs{vinf, vinf};
      if (!zero_only) {
        ce = path_cost(d_even[0], d_even[1], rate_even);
        co = path_cost(d_odd[0], d_odd[1], rate_odd);
        cs = path_cost(d_small[0], d_small[1], rate_small);
      }

      // The best branch into every target: from each predecessor the two branches of the parity
      // it needs in the reference order (zero then even, or odd then smallest), the lower
      // predecessor's first. The first strictly cheapest (the reference's choice) is picked by a
      // tree of strict comparisons, each keeping the earlier branch on ties. Targets 0..3 come from
      // the even states (lower: 0, 2; odd levels to targets 2, 3), targets 4..7 from the odd ones
      // (lower: 3, 1; odd levels to targets 4, 5); the higher predecessors are 4 more, with the
      // parities swapped.
      const __m256d first0_lo = low_targets(c0.lo, co.lo), second0_lo = low_targets(ce.lo, cs.lo);
      const __m256d first0_hi = high_targets(co.lo, c0.lo), second0_hi = high_targets(cs.lo, ce.lo);
      const __m256d first1_lo = low_targets(co.hi, c0.hi), second1_lo = low_targets(cs.hi, ce.hi);
      const __m256d first1_hi = high_targets(c0.hi, co.hi), second1_hi = high_targets(ce.hi, cs.hi);
      const __m256d later0_lo = _mm256_cmp_pd(second0_lo, first0_lo, _CMP_LT_OQ);
      const __m256d later0_hi = _mm256_cmp_pd(second0_hi, first0_hi, _CMP_LT_OQ);
      const __m256d later1_lo = _mm256_cmp_pd(second1_lo, first1_lo, _CMP_LT_OQ);
      const __m256d later1_hi = _mm256_cmp_pd(second1_hi, first1_hi, _CMP_LT_OQ);
      const __m256d win0_lo = _mm256_blendv_pd(first0_lo, second0_lo, later0_lo);
      const __m256d win0_hi = _mm256_blendv_pd(first0_hi, second0_hi, later0_hi);
      const __m256d win1_lo = _mm256_blendv_pd(first1_lo, second1_lo, later1_lo);
      const __m256d win1_hi = _mm256_blendv_pd(first1_hi, second1_hi, later1_hi);
      const __m256d higher_lo = _mm256_cmp_pd(win1_lo, win0_lo, _CMP_LT_OQ);
      const __m256d higher_hi = _mm256_cmp_pd(win1_hi, win0_hi, _CMP_LT_OQ);
      const __m256d best_lo = _mm256_blendv_pd(win0_lo, win1_lo, higher_lo);
      const __m256d best_hi = _mm256_blendv_pd(win0_hi, win1_hi, higher_hi);
      // Per target: the second branch of its predecessor taken, an odd level, alive.
      const __m256d second_lo = _mm256_blendv_pd(later0_lo, later1_lo, higher_lo);
      const __m256d second_hi = _mm256_blendv_pd(later0_hi, later1_hi, higher_hi);
      const __m256d live_lo = _mm256_cmp_pd(best_lo, vinf, _CMP_LT_OQ);
      const __m256d live_hi = _mm256_cmp_pd(best_hi, vinf, _CMP_LT_OQ);

      // The survivors (32-bit lanes): predecessor, entry (decision code j, magnitude), rate.
      const __m256i higher = narrow_masks(higher_lo, higher_hi);
      const __m256i second = narrow_masks(second_lo, second_hi);
      const __m256i live = narrow_masks(live_lo, live_hi);
      const __m256i odd = _mm256_xor_si256(higher, odd_from_lower);
      const __m256i from = _mm256_and_si256(_mm256_add_epi32(pred_lower, _mm256_and_si256(higher, splat(4))), live);
      const __m256i is_small = _mm256_and_si256(odd, second), is_odd = _mm256_andnot_si256(second, odd),
                    is_even = _mm256_andnot_si256(odd, second);
      // (Targets 0..3 take Q0's entries, 4..7 Q1's.)
      const __m256i me = _mm256_blend_epi32(splat(mag_even[0]), splat(mag_even[1]), 0xF0);
      const __m256i mo = _mm256_blend_epi32(splat(mag_odd[0]), splat(mag_odd[1]), 0xF0);
      const __m256i je = _mm256_blend_epi32(splat(j_even[0]), splat(j_even[1]), 0xF0);
      const __m256i jo = _mm256_blend_epi32(splat(j_odd[0]), splat(j_odd[1]), 0xF0);
      const __m256i mag = _mm256_and_si256(
          live, _mm256_or_si256(_mm256_and_si256(is_small, splat(1)),
                                _mm256_or_si256(_mm256_and_si256(is_odd, mo), _mm256_and_si256(is_even, me))));
      const __m256i jcode = _mm256_or_si256(
          _mm256_and_si256(is_small, small_code),
          _mm256_or_si256(_mm256_and_si256(is_odd, jo), _mm256_and_si256(is_even, je)));
      const __m256i step_rate = _mm256_blendv_epi8(
          _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(rate0, from), _mm256_permutevar8x32_epi32(rate_even, from),
                             second),
          _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(rate_odd, from), _mm256_permutevar8x32_epi32(rate_small, from),
                             second),
          odd);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(step_rates + size_t(i) * kDqStates), step_rate);

      // Unary flags a level updates (min(mag, N + 1), as permute_chain takes them) and its
      // Exp-Golomb prefix extent (bucket + 1; the bucket is the exponent of (rem >> k) + 1, exact
      // in float below 2^24, which fused_covers guarantees).
      const __m256i chain_mag = _mm256_min_epu32(mag, splat(unary_len + 1));
      __m256i eg_mag = zero;
      if (top > unary_len) {
        const __m256i past = _mm256_cmpgt_epi32(mag, splat(unary_len));
        const __m256i rem = _mm256_sub_epi32(mag, splat(unary_len + 1));
        const __m256i q = _mm256_add_epi32(_mm256_srl_epi32(rem, _mm_cvtsi32_si128(int(eg_order))), splat(1));
        const __m256i expo = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(q)), 23);
        eg_mag = _mm256_and_si256(past, _mm256_sub_epi32(expo, splat(126)));  // bucket + 1 = exponent - 127 + 1
      }
      const __m256i psig = _mm256_permutevar8x32_epi32(sig_at, from);
      const __m256i psign = _mm256_permutevar8x32_epi32(sign_at, from);
      const __m256i nz = _mm256_xor_si256(_mm256_cmpeq_epi32(mag, zero), _mm256_set1_epi32(-1));
      const __m256i cls = _mm256_and_si256(nz, splat(neg ? cabac::kNegative : cabac::kPositive));
      const __m256i prev_nonzero = _mm256_andnot_si256(_mm256_cmpeq_epi32(psign, splat(kSignRow + cabac::kZero)),
                                                       splat(1));
      const __m256i nsig_at = _mm256_add_epi32(splat(kSigRow),
                                               _mm256_add_epi32(_mm256_slli_epi32(cls, 1), prev_nonzero));
      const __m256i nsign_at = _mm256_add_epi32(splat(kSignRow), cls);
      // Decision bytes: from | j << 3, kDead for dead states; one byte per 32-bit lane, packed.
      const __m256i dec = _mm256_blendv_epi8(splat(kDead), _mm256_or_si256(from, _mm256_slli_epi32(jcode, 3)), live);
      const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                            -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
      const __m256i bytes = _mm256_shuffle_epi8(dec, pick);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(decisions + size_t(i) * kDqStates),
                       _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1)));

      // Moves: every survivor's models from its predecessor, with its level's updates.
      const __m256i usig = model_update(_mm256_permutevar8x32_epi32(sigm, from), nz);
      for (int q = 0; q < kSignRow - kSigRow; ++q)
        sig_rows[q] = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(sig_rows[q], from), usig,
                                         _mm256_and_si256(live, _mm256_cmpeq_epi32(psig, splat(kSigRow + q))));
      const __m256i usign = model_update(_mm256_permutevar8x32_epi32(signm, from), neg_mask);
      for (int q = 0; q < kGreaterRow - kSignRow; ++q)
        sign_rows[q] = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(sign_rows[q], from), usign,
                                          _mm256_and_si256(nz, _mm256_cmpeq_epi32(psign, splat(kSignRow + q))));
      const uint32_t eg_top = avx2::max_lane(eg_mag);
      const uint32_t chain_top = fused_grow(unary_len, avx2::max_lane(chain_mag), eg_top, live_greater, live_eg);
      // Rows moved, the first `updated` of them updated in lane t where ext[t] > row (bin: ext[t]
      // > row + 1), as permute_chain / permute do (extents below 2^31: signed compares hold).
      auto move = [&](const Row* src, Row* dst, uint32_t updated, uint32_t count, __m256i ext) {
        __m256i row = zero;
        const __m256i one = splat(1);
        for (uint32_t q = 0; q < updated; ++q) {
          const __m256i v = _mm256_permutevar8x32_epi32(avx2::load(src[q]), from);
          const __m256i next = _mm256_add_epi32(row, one);
          avx2::store(dst[q], _mm256_blendv_epi8(v, model_update(v, _mm256_cmpgt_epi32(ext, next)),
                                                 _mm256_cmpgt_epi32(ext, row)));
          row = next;
        }
        for (uint32_t q = updated; q < count; ++q)
          avx2::store(dst[q], _mm256_permutevar8x32_epi32(avx2::load(src[q]), from));
      };
      if (live_greater) {
        move(cur->row + kGreaterRow + neg * cabac::kMaxUnaryFlags, nxt->row + kGreaterRow + neg * cabac::kMaxUnaryFlags,
             chain_top, live_greater, chain_mag);
        move(cur->row + kGreaterRow + (1 - neg) * cabac::kMaxUnaryFlags,
             nxt->row + kGreaterRow + (1 - neg) * cabac::kMaxUnaryFlags, 0, live_greater, zero);
      }
      move(cur->row + kEgRow, nxt->row + kEgRow, eg_top, live_eg, eg_mag);
      // The signed base index of the weight's candidates, for the trace-back (finish_fused_row).
      index_base[i] = neg ? -int32_t(b) : int32_t(b);
      std::swap(cur, nxt);
      cost_lo = best_lo;
      cost_hi = best_hi;
      sig_at = nsig_at;
      sign_at = nsign_at;
    }

    for (int q = 0; q < kSignRow - kSigRow; ++q) avx2::store(cur->row[kSigRow + q], sig_rows[q]);
    for (int q = 0; q < kGreaterRow - kSignRow; ++q) avx2::store(cur->row[kSignRow + q], sign_rows[q]);
    alignas(32) double cost_l[kDqStates];
    _mm256_store_pd(cost_l, cost_lo);
    _mm256_store_pd(cost_l + 4, cost_hi);
    finish_fused_row(cost_l, *cur, decisions, index_base, step_rates, w_row,
                     !kPlain && importance ? importance + r * cols : static_cast<const F*>(nullptr), step_of, cols,
                     levels + r * cols, recon ? recon + r * cols : nullptr, store.dist.data(), committed, rate_total,
                     dist_total);
  }
  *args.distortion += dist_total;
  if (args.contexts) *args.contexts = unpack_contexts(committed);
  return rate_total;
}

// The fused step when it covers the pass, else the search with the AVX2 kernel set.
template <class W, class F>
uint64_t run(const PassArgs<W, F>& a, Workspace& ws) {
  if (!fused_covers(a)) return trellis_soa<Avx2Kernels>(a, ws);
  return a.importance || a.scales.col ? trellis_fused<false>(a, ws) : trellis_fused<true>(a, ws);
}

}  // namespace avx2_fused
}  // namespace

uint64_t trellis_soa_avx2(const PassArgs<float, float>& a, Workspace& ws) { return avx2_fused::run(a, ws); }
uint64_t trellis_soa_avx2(const PassArgs<float, double>& a, Workspace& ws) { return avx2_fused::run(a, ws); }
uint64_t trellis_soa_avx2(const PassArgs<double, float>& a, Workspace& ws) { return avx2_fused::run(a, ws); }
uint64_t trellis_soa_avx2(const PassArgs<double, double>& a, Workspace& ws) { return avx2_fused::run(a, ws); }

}  // namespace nnpress::trellis_detail
