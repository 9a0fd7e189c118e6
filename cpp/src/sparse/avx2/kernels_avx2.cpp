// AVX2 + FMA kernels. Compiled with -mavx2 -mfma -mf16c; run only when isa_supported(kAvx2).
// The row-group kernels and the batched codebook kernel are the shared bodies of kernels_simd.h over
// the traits below; the batch-1 codebook kernel (a 16-entry table lookup by two permutes) is this ISA's own.
#include <immintrin.h>

#include "../kernels_internal.h"
#include "../kernels_simd.h"
#include "../x86_common.h"

namespace nnpress::sparse::detail {
namespace {

// Lanes [0, n) set (n in 0..8), as a vector mask for maskload/maskstore.
inline __m256i lane_mask(uint32_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

struct V256 {
  using Narrow = V256;
  using F = __m256;
  using M = __m256i;
  static constexpr uint32_t W = 8;
  static constexpr int kSums = 2;  // 16 registers: two interleaved sums of up to 4 vectors + 4 accumulators
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float d) { return _mm256_set1_ps(d); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void storeu(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(F v) { return hsum256(v); }
  static M first(uint32_t n) { return lane_mask(n); }
  static F load_m(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static void store_m(float* p, M m, F v) { _mm256_maskstore_ps(p, m, v); }
  static void splat8(float* p, float d) { _mm256_storeu_ps(p, _mm256_set1_ps(d)); }
  static void gather8(const uint16_t* c, const float* x, float* p) { detail::gather8(c, x, p); }
};

// 16 weights (one half of a 32-column block, already nibble-masked) -> two 8-lane value vectors.
// A 16-entry table needs two 8-entry permutes and a blend on bit 3 of the index.
inline __m256 lookup8(__m256i idx, __m256 lut_lo, __m256 lut_hi) {
  const __m256 lo = _mm256_permutevar8x32_ps(lut_lo, idx), hi = _mm256_permutevar8x32_ps(lut_hi, idx);
  return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

void cb_matvec(const CodebookView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  const __m256 lut_lo = _mm256_loadu_ps(m.lut), lut_hi = _mm256_loadu_ps(m.lut + 8);
  const __m128i nib = _mm_set1_epi8(0x0F);
  const uint32_t full = m.cols / 32, rest = m.cols % 32;
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (uint32_t b = 0; b <= full; ++b) {
      if (b == full && rest == 0) break;
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * size_t(b)));
      const __m128i lo = _mm_and_si128(bytes, nib), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
      const __m256 w0 = lookup8(_mm256_cvtepu8_epi32(lo), lut_lo, lut_hi);
      const __m256 w1 = lookup8(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), lut_lo, lut_hi);
      const __m256 w2 = lookup8(_mm256_cvtepu8_epi32(hi), lut_lo, lut_hi);
      const __m256 w3 = lookup8(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), lut_lo, lut_hi);
      const float* xb = x + 32 * size_t(b);
      if (b < full) {
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a1);
        a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), a2);
        a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), a3);
      } else {
        auto n_in = [&](uint32_t off) { return rest > off ? (rest - off > 8 ? 8u : rest - off) : 0u; };
        a0 = _mm256_fmadd_ps(w0, _mm256_maskload_ps(xb, lane_mask(n_in(0))), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_maskload_ps(xb + 8, lane_mask(n_in(8))), a1);
        a2 = _mm256_fmadd_ps(w2, _mm256_maskload_ps(xb + 16, lane_mask(n_in(16))), a2);
        a3 = _mm256_fmadd_ps(w3, _mm256_maskload_ps(xb + 24, lane_mask(n_in(24))), a3);
      }
    }
    y[r] = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  }
}

const KernelTable kTable = {rows_matvec<V256>, rows_matmat<V256>, cb_matvec, cb_matmat<V256>};

}  // namespace

const KernelTable* avx2_kernels() { return &kTable; }

}  // namespace nnpress::sparse::detail
