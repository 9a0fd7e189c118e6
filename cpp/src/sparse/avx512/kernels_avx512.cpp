// AVX-512 (F/BW/VL/DQ) kernels. Compiled with AVX-512 flags; run only when isa_supported(kAvx512).
// The row-group kernels and the batched codebook kernel are the shared bodies of kernels_simd.h over
// the traits below; the batch-1 codebook kernel (an in-register 16-entry table lookup) is this ISA's own.
// GCC 12's own AVX-512 headers trip -W(maybe-)uninitialized (_mm512_undefined_*); not our code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "../kernels_internal.h"
#include "../kernels_simd.h"
#include "../x86_common.h"

namespace nnpress::sparse::detail {
namespace {

// 8-lane vectors with AVX-512VL masks: the batch-1 dot products of short rows (faster than 16 lanes for
// rows of a few dozen entries; bench/RESULTS.md, "CER/CSER kernels").
struct V256m {
  using F = __m256;
  using M = __mmask8;
  static constexpr uint32_t W = 8;
  static F zero() { return _mm256_setzero_ps(); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(F v) { return hsum256(v); }
  static M first(uint32_t n) { return M((1u << n) - 1u); }  // n <= 8
  static F load_m(const float* p, M m) { return _mm256_maskz_loadu_ps(m, p); }
};

struct V512 {
  using Narrow = V256m;
  using F = __m512;
  using M = __mmask16;
  static constexpr uint32_t W = 16;
  static constexpr int kSums = 4;  // 32 registers: four interleaved sums of up to 4 vectors fit
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float d) { return _mm512_set1_ps(d); }
  static F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(F v) { return _mm512_reduce_add_ps(v); }
  static M first(uint32_t n) { return M((1u << n) - 1u); }  // n <= 16
  static F load_m(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store_m(float* p, M m, F v) { _mm512_mask_storeu_ps(p, m, v); }
  static void splat8(float* p, float d) { _mm256_storeu_ps(p, _mm256_set1_ps(d)); }
  static void gather8(const uint16_t* c, const float* x, float* p) { detail::gather8(c, x, p); }
};

// V512 whose batch-1 input copy (kernels_simd.h, gather_inputs) uses hardware gathers: the table for CPUs
// where those are fast (fast_gathers(), kernels.h).
struct V512Gather : V512 {
  static void gather8(const uint16_t* c, const float* x, float* p) {
    const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
    _mm256_storeu_ps(p, _mm256_i32gather_ps(x, idx, 4));
  }
};

inline __mmask16 tail_mask(uint32_t n) { return __mmask16((1u << n) - 1u); }

// 32 weights per 16-byte block: byte j = index(c0 + j) | index(c0 + 16 + j) << 4.
inline void decode_block(const uint8_t* p, __m512i* lo, __m512i* hi) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i nib = _mm_set1_epi8(0x0F);
  *lo = _mm512_cvtepu8_epi32(_mm_and_si128(b, nib));
  *hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), nib));
}

// The 16-entry table lives in one register; vpermps looks up 16 weights at once.
void cb_matvec(const CodebookView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  const __m512 lut = _mm512_load_ps(m.lut);
  const uint32_t full = m.cols / 32, rest = m.cols % 32;
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    uint32_t b = 0;
    for (; b + 2 <= full; b += 2) {
      __m512i i0, i1, i2, i3;
      decode_block(row + 16 * b, &i0, &i1);
      decode_block(row + 16 * (b + 1), &i2, &i3);
      const float* xb = x + 32 * size_t(b);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i0, lut), _mm512_loadu_ps(xb), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i1, lut), _mm512_loadu_ps(xb + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i2, lut), _mm512_loadu_ps(xb + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i3, lut), _mm512_loadu_ps(xb + 48), a3);
    }
    for (; b < full; ++b) {
      __m512i i0, i1;
      decode_block(row + 16 * b, &i0, &i1);
      const float* xb = x + 32 * size_t(b);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i0, lut), _mm512_loadu_ps(xb), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i1, lut), _mm512_loadu_ps(xb + 16), a1);
    }
    if (rest) {
      __m512i i0, i1;
      decode_block(row + 16 * b, &i0, &i1);
      const float* xb = x + 32 * size_t(b);
      const __mmask16 m0 = rest >= 16 ? __mmask16(0xFFFF) : tail_mask(rest);
      const __mmask16 m1 = rest > 16 ? tail_mask(rest - 16) : __mmask16(0);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i0, lut), _mm512_maskz_loadu_ps(m0, xb), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i1, lut), _mm512_maskz_loadu_ps(m1, xb + 16), a1);
    }
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

const KernelTable kTable = {rows_matvec<V512>, rows_matmat<V512>, cb_matvec, cb_matmat<V512>};
const KernelTable kTableGather = {rows_matvec<V512, V512Gather>, rows_matmat<V512>, cb_matvec, cb_matmat<V512>};

}  // namespace

const KernelTable* avx512_kernels(bool gather) { return gather ? &kTableGather : &kTable; }

}  // namespace nnpress::sparse::detail
