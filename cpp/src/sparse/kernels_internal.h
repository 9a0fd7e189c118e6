// Internal: the plain views the per-ISA kernel files work on, and their dispatch tables.
// The per-ISA .cpp files include only this header, kernels_simd.h (the shared kernel bodies, all with
// internal linkage) and intrinsics: no standard-library templates, so no inline function compiled with
// AVX flags can be merged into generic code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnpress::sparse::detail {

struct RowsView {
  uint32_t rows, cols;
  const float* delta;  // Ω[k] - Ω[0]
  uint32_t nvalues;    // |Ω|, the length of delta
  const uint16_t* col16;  // exactly one of col16 / col32 is set
  const uint32_t* col32;
  const uint32_t* group_ptr;
  const uint32_t* row_ptr;
  const uint8_t* gv8;  // CSER: one of gv8 / gv16 set; CER: both null
  const uint16_t* gv16;
  // The matrix's kernel plan (RowGroupMatrix::has_starts; null without one): group starts as bits,
  // the Ω index of each non-empty group, their count, and the entry before which every entry's group
  // has 7 more after it.
  const uint8_t* starts;
  const uint8_t* start_values;
  const uint32_t* row_start;  // row r's first entry (group_ptr[row_ptr[r]]), rows + 1
  uint32_t num_starts, starts_safe_end;
  const uint8_t* entry_values;  // the plan's Ω index per entry (RowGroupMatrix::entry_values; null without)
};

struct CodebookView {
  uint32_t rows, cols;
  size_t row_bytes;
  const float* lut;  // 16 entries, 64-byte aligned
  const uint8_t* packed;
};

// Each kernel computes output rows [r0, r1). Row-group kernels leave out the Ω[0] term.
struct KernelTable {
  void (*rows_matvec)(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1);
  void (*rows_matmat)(const RowsView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1);
  void (*cb_matvec)(const CodebookView& m, const float* x, float* y, uint32_t r0, uint32_t r1);
  void (*cb_matmat)(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1);
};

// Mean group length from which batch 1 sums each group's inputs once (kernels_simd.h, rows_matvec_sums);
// the AVX2 Ω-index kernel (kernels_codes_x86.h) takes the matrices without a plan between kCodesMinMean
// and it.
constexpr uint32_t kLongGroup = 96, kCodesMinMean = 20;

// Batch 1 from the kernel plan (kernels_starts_x86.h); rows it cannot take go to `fallback` (the same
// ISA's rows_matvec).
using RowsMatvec = void (*)(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1);
using StartsMatvec = void (*)(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1,
                              RowsMatvec fallback);
StartsMatvec avx2_starts_matvec();  // null unless compiled (NNPRESS_HAVE_AVX2_TU); scalar input loads
// Batch 1 from the plan's entry values, row by row (kernels_entries_x86.h); null unless compiled
// (NNPRESS_HAVE_AVX2_TU)
StartsMatvec avx2_entries_matvec();
// Batch 1 without a plan, <= 16 values, 16-bit columns (kernels_codes_x86.h); null unless compiled
// (NNPRESS_HAVE_AVX2_TU)
StartsMatvec avx2_codes_matvec();
// null unless compiled (NNPRESS_HAVE_AVX512_TU); gather: its inputs by hardware gathers (fast_gathers())
StartsMatvec avx512_starts_matvec(bool gather);
// The entry-value and Ω-index kernels above compiled with AVX-512 (their value lookup one two-table permute);
// null unless compiled (NNPRESS_HAVE_AVX512_TU)
StartsMatvec avx512_entries_matvec();
StartsMatvec avx512_codes_matvec();

const KernelTable* scalar_kernels();
const KernelTable* avx2_kernels();    // null unless compiled (NNPRESS_HAVE_AVX2_TU)
// null unless compiled (NNPRESS_HAVE_AVX512_TU); gather: the batch-1 row-group kernel copies its inputs by
// hardware gathers (fast_gathers())
const KernelTable* avx512_kernels(bool gather);
const KernelTable* neon_kernels();    // null unless compiled (NNPRESS_HAVE_NEON_TU)

}  // namespace nnpress::sparse::detail
