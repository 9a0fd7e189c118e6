// Internal: the batch-1 CER/CSER kernel for matrices of at most 16 values whose groups are too long for the
// kernel plan (kernels_starts_x86.h) and too short for the group sums (rows_matvec's kLongGroup); kernels.cpp
// picks it from a mean of kCodesMinMean entries per group (kernels_internal.h). Included by
// the AVX2 and AVX-512 batch-1 translation units (avx2/, avx512/kernels_starts_*.cpp), compiled with their flags.
//
// CONTRACT
//   codes_matvec(m, x, y, r0, r1, fallback): y[r] for rows [r0, r1) without the Ω[0] term, as rows_matvec
//   (kernels_simd.h). Requires 16-bit columns and |Ω| <= 16 (m.nvalues); CER or CSER with 8-bit value
//   indices. Rows are taken in blocks of whole rows of up to kCodesBlock entries; a row longer than that
//   goes to `fallback`. Per block:
//     - every entry's Ω index into a byte buffer (in L1): U unconditional 32-byte stores per group (U from
//       the mean group length; a loop behind a rarely taken branch for longer groups; a later group's
//       stores overwrite the previous one's tail, an empty CER group's stores are overwritten by the next);
//     - each row's entries in runs of 8 from its first entry: the 8 inputs x[col] into one register by
//       scalar loads (inputs8, x86_common.h), the 8 lanes' values from their Ω indices through
//       the Ω-delta table held in two registers (table16_values8, x86_common.h), one FMA into the row's
//       accumulators; the row's last run masks its inputs past the row's end to 0 (they belong to other
//       rows: an Inf there must not turn into NaN), and takes its column indices from a zero-padded copy
//       where it would read past the matrix's last entry.
//   So the group loop only stores (no branch on a group's length, no per-group sum), and the entries' loop
//   has no buffer of inputs or values to store and reload (rows_matvec's block kernel).
//   Results equal the scalar reference up to float rounding: each entry is multiplied by its value here
//   (Σ δ·x), where the reference multiplies each group's sum once (δ·Σx).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels_internal.h"
#include "x86_common.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-vectorize")  // as kernels_simd.h: no compiler gathers
#endif

namespace nnpress::sparse::detail {
namespace {

constexpr uint32_t kCodesBlock = 4096;  // entries per block: the index buffer (4 KiB) stays in L1

// kCer: a group's Ω index from its position in its row, else from m.gv8. U: unconditional stores per group.
template <bool kCer, uint32_t U>
void codes_matvec_t(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1, RowsMatvec fallback) {
  alignas(64) float dtab[16] = {};  // Ω[k] - Ω[0], zero-padded to 16
  for (uint32_t k = 0; k < m.nvalues && k < 16; ++k) dtab[k] = m.delta[k];
  const __m256 tlo = _mm256_load_ps(dtab), thi = _mm256_load_ps(dtab + 8);
  alignas(64) uint8_t code[kCodesBlock + 32 * U + 32] = {};
  const uint16_t* const col = m.col16;
  const uint32_t* const gp = m.group_ptr;
  const uint32_t* const rp = m.row_ptr;
  const uint8_t* const gv = m.gv8;
  const uint32_t total = gp[rp[m.rows]];
  for (uint32_t c = 0; c < m.cols; c += 16) {  // the whole input at once (see rows_matvec_t)
    __builtin_prefetch(x + c);
    __asm__ volatile("" ::"r"(c));  // GCC deletes loops that only prefetch
  }
  uint32_t r = r0;
  while (r < r1) {
    const uint32_t ka = gp[rp[r]];
    uint32_t re = r;
    while (re < r1 && gp[rp[re + 1]] - ka <= kCodesBlock) ++re;
    if (re == r) {  // row r alone holds more than a block
      fallback(m, x, y, r, r + 1);
      ++r;
      continue;
    }
    auto fill = [&](uint32_t g, uint32_t v) {
      const uint32_t s = gp[g] - ka, e = gp[g + 1] - ka;
      const __m256i cv = _mm256_set1_epi8(char(v));
      for (uint32_t u = 0; u < U; ++u) _mm256_storeu_si256(reinterpret_cast<__m256i*>(code + s + 32 * u), cv);
      if (__builtin_expect(e > s + 32 * U, 0)) {
        for (uint32_t t = s + 32 * U; t < e; t += 32) _mm256_storeu_si256(reinterpret_cast<__m256i*>(code + t), cv);
      }
    };
    if constexpr (kCer) {
      for (uint32_t q = r; q < re; ++q) {
        for (uint32_t g = rp[q]; g < rp[q + 1]; ++g) fill(g, 1 + (g - rp[q]));
      }
    } else {
      for (uint32_t g = rp[r]; g < rp[re]; ++g) fill(g, gv[g]);
    }
    for (; r < re; ++r) {
      const uint32_t a = gp[rp[r]] - ka, b = gp[rp[r + 1]] - ka;
      const uint16_t* const c = col + ka;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      uint32_t k = a;
      for (; k + 16 <= b; k += 16) {
        a0 = _mm256_fmadd_ps(inputs8(c + k, x), table16_values8(code + k, tlo, thi), a0);
        a1 = _mm256_fmadd_ps(inputs8(c + k + 8, x), table16_values8(code + k + 8, tlo, thi), a1);
      }
      if (k + 8 <= b) {
        a0 = _mm256_fmadd_ps(inputs8(c + k, x), table16_values8(code + k, tlo, thi), a0);
        k += 8;
      }
      // The last 0..7 entries: lanes past the row's end are masked to 0 after the load.
      alignas(16) uint16_t cc[8] = {};
      const uint16_t* ci = c + k;
      if (__builtin_expect(uint64_t(ka) + k + 8 > total, 0)) {  // the matrix's last entries
        for (uint32_t i = 0; ka + k + i < total; ++i) cc[i] = ci[i];
        ci = cc;
      }
      const __m256 mask = _mm256_castsi256_ps(
          _mm256_cmpgt_epi32(_mm256_set1_epi32(int(b - k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
      a1 = _mm256_fmadd_ps(_mm256_and_ps(inputs8(ci, x), mask), table16_values8(code + k, tlo, thi), a1);
      y[r] = hsum256(_mm256_add_ps(a0, a1));
    }
  }
}

// U from the mean group length (mean + two standard deviations of a Poisson count, as rows_matvec).
template <bool kCer>
void codes_matvec_u(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1, RowsMatvec fallback) {
  const uint64_t groups = m.row_ptr[m.rows], entries = m.group_ptr[groups];
  const double mean = groups ? double(entries) / double(groups) : 0.0;
  const double cover = mean + 2.0 * __builtin_sqrt(mean);
  if (cover <= 32) {
    codes_matvec_t<kCer, 1>(m, x, y, r0, r1, fallback);
  } else if (cover <= 64) {
    codes_matvec_t<kCer, 2>(m, x, y, r0, r1, fallback);
  } else {
    codes_matvec_t<kCer, 4>(m, x, y, r0, r1, fallback);
  }
}

void codes_matvec(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1, RowsMatvec fallback) {
  if (m.gv8) {
    codes_matvec_u<false>(m, x, y, r0, r1, fallback);
  } else {
    codes_matvec_u<true>(m, x, y, r0, r1, fallback);
  }
}

}  // namespace
}  // namespace nnpress::sparse::detail
