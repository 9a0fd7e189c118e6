// Internal: the batch-1 CER/CSER kernel that walks each row's entries with their own Ω indices (the kernel plan's
// entry_values, RowGroupMatrix) instead of their groups. Included by the AVX2 and AVX-512 batch-1 translation units.
//
// CONTRACT
//   entries_matvec(m, x, y, r0, r1, fallback): y[r] for rows [r0, r1) without the Ω[0] term, as rows_matvec
//   (kernels_simd.h). Requires m.entry_values (so the plan, <= 16 values and 16-bit columns); `fallback` is
//   not called (every row length is taken).
//   Each row from its first entry (the plan's row_start) in runs of 8 entries:
//     - the 8 inputs x[col] by scalar loads inserted into one register (inputs8, x86_common.h);
//     - the 8 values from the 8 entries' Ω indices (one 8-byte load) through the Ω-delta table held in two
//       registers (table16_values8, x86_common.h);
//     - one FMA into the row's accumulator; the row's last run (1..7 entries) zeroes the inputs and the values
//       of the lanes past the row's end (an Inf or NaN input of another row's entry, or an Ω delta that
//       overflowed to Inf, must not reach this row: 0 · Inf is NaN) and, at the
//       matrix's last entries, takes its column indices from a zero-padded copy (entry_values has 8 bytes of
//       slack for its load).
//   So no work is done per group: with the ~3 entries per group of the plan's matrices, grouping by value
//   saves almost no multiplies, and the plan kernel's per-run group counting, product buffer and row sums
//   over that buffer cost more than one FMA per run into a register (bench/results/cser4.md).
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

void entries_matvec(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1, RowsMatvec) {
  alignas(32) float dtab[16] = {};  // Ω[k] - Ω[0], zero-padded to 16
  for (uint32_t k = 0; k < m.nvalues && k < 16; ++k) dtab[k] = m.delta[k];
  const __m256 tlo = _mm256_load_ps(dtab), thi = _mm256_load_ps(dtab + 8);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const uint16_t* const col = m.col16;
  const uint8_t* const ev = m.entry_values;
  const uint32_t total = m.row_start[m.rows];
  for (uint32_t c = 0; c < m.cols; c += 16) {  // the whole input at once (see rows_matvec_t)
    __builtin_prefetch(x + c);
    __asm__ volatile("" ::"r"(c));  // GCC deletes loops that only prefetch
  }
  for (uint32_t r = r0; r < r1; ++r) {
    uint32_t k = m.row_start[r];
    const uint32_t k1 = m.row_start[r + 1];
    __m256 acc = _mm256_setzero_ps();
    for (; k + 8 <= k1; k += 8) acc = _mm256_fmadd_ps(inputs8(col + k, x), table16_values8(ev + k, tlo, thi), acc);
    if (k < k1) {  // the row's last 1..7 entries
      alignas(16) uint16_t cc[8] = {};
      const uint16_t* c = col + k;
      if (total - k < 8) {  // the matrix's last entries
        for (uint32_t i = 0; k + i < total; ++i) cc[i] = col[k + i];
        c = cc;
      }
      const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(k1 - k)), iota));
      acc = _mm256_fmadd_ps(_mm256_and_ps(inputs8(c, x), live), _mm256_and_ps(table16_values8(ev + k, tlo, thi), live),
                            acc);
    }
    y[r] = hsum256(acc);
  }
}

}  // namespace
}  // namespace nnpress::sparse::detail
