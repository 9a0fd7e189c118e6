// The trellis search (../trellis_soa.h) with AVX-512 kernels: the AVX2 set
// (../avx2/trellis_avx2_kernels.h, compiled here with AVX-512 available) with the two kernels that
// work on doubles of all 8 states replaced by 512-bit ones: one register holds the 8 path costs.
// The same operations in the same order as the scalar kernels, no FMA, so the results equal them
// bit for bit. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -ffp-contract=off
// (cpp/CMakeLists.txt); runs only when isa_supported(kAvx512).
#include "../avx2/trellis_avx2_kernels.h"

namespace nnpress::trellis_detail {
namespace {
namespace avx512 {

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

// (The masked forms of the conversions below, with every lane taken, avoid GCC's spurious
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

}  // namespace

uint64_t trellis_soa_avx512(const PassArgs<float, float>& a, Workspace& ws) {
  return trellis_soa<Avx512Kernels>(a, ws);
}
uint64_t trellis_soa_avx512(const PassArgs<float, double>& a, Workspace& ws) {
  return trellis_soa<Avx512Kernels>(a, ws);
}
uint64_t trellis_soa_avx512(const PassArgs<double, float>& a, Workspace& ws) {
  return trellis_soa<Avx512Kernels>(a, ws);
}
uint64_t trellis_soa_avx512(const PassArgs<double, double>& a, Workspace& ws) {
  return trellis_soa<Avx512Kernels>(a, ws);
}

}  // namespace nnpress::trellis_detail
