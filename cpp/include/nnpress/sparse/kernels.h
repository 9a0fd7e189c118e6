// nnpress/sparse/kernels.h — products with CER / CSER / dense-codebook matrices, and the choice of
// representation per layer.
//
// CONTRACT
//   matvec: y = W x          x: cols floats, y: rows floats.
//   matmat: Y = W X          X: cols x batch floats, row-major (row c of X is the batch of
//                            inputs for column c); Y: rows x batch floats, row-major.
//                            batch == 1 runs the matvec kernel (same memory layout).
//   The lengths passed with each buffer are checked (kInvalidArgument on a mismatch, a null
//   buffer, batch 0, an ISA this build/CPU cannot run, or — automatic choice only — an unknown
//   NNPRESS_ISA value, cpu.h); nothing else can fail, because the matrices are validated when they
//   are built (matrix.h). Inputs may hold any floats; y must not alias x. On failure y is untouched.
//   KernelOptions.isa: empty = auto_isa(matrix, batch) (below); a named ISA must be isa_supported() and is
//   used for every kernel of the product (tests and benchmarks force each ISA this way).
//   KernelOptions.threads: rows are split into contiguous blocks, one per thread (capped by the hardware
//   and by rows / 64; 0 = as many as pay: one per hardware thread, and one per ~128 Ki sparse entries x
//   batch, a codebook weight counting 1/12, so small products stay on one thread; kernels.cpp):
//   the caller's and those of a pool of
//   persistent workers (hardware threads - 1, started on first use; a product that finds the pool
//   busy with another thread's product computes its blocks on its caller). Each output element is
//   computed by one thread in a fixed order, so results do not depend on the thread count.
//
//   Row-group (CER/CSER) products compute, per row, y = sum over groups of (Ω[v] - Ω[0]) * (sum of
//   the group's inputs), plus Ω[0] * sum(x) when Ω[0] != 0: one multiply per group, as the formats
//   intend, in the scalar reference and the group loops. The x86 batch-1 kernel for matrices with a
//   kernel plan (short groups, matrix.h) multiplies each entry by its group's value instead, because
//   with ~3 entries per group the per-group work cost more than the multiplies (bench/RESULTS.md; with
//   AVX2 and <= 16 values it walks each row's entries with the plan's per-entry value indices,
//   kernels_entries_x86.h, bench/results/cser4.md); so
//   does the AVX2 batch-1 kernel for matrices without a plan with <= 16 values and groups of 20-95
//   entries on average (kernels_codes_x86.h: it reads each entry's value from a per-block buffer). SIMD
//   kernels match the scalar reference up to float rounding (summation order; per-entry products).
//
// SURPRISES
//   - Products of the codebook layout touch every weight (it is a dense layout); padding columns
//     multiply zeros. Its speed is independent of density.
//   - Automatic ISA choice (auto_isa) is per batch size, chosen from measurements on one x86-64 CPU
//     with AVX-512 (bench/RESULTS.md, "CER/CSER kernels"): batch 1 uses the best ISA, except CER/CSER
//     matrices with groups of <= 6 entries on average, which run the AVX2 kernels (the same algorithm
//     is faster compiled for AVX2 there) unless they have a kernel plan and fast_gathers() (Intel
//     Sapphire Rapids and later: the AVX-512 plan kernel gathers its inputs); batch 2..32 uses AVX2 even where AVX-512
//     runs, because tiles narrower than 16 columns need masked 512-bit loads; batch > 32 uses AVX-512 again. Other CPUs
//     may prefer other choices: KernelOptions.isa overrides it.
//   - choose_format() encodes measured crossovers on x86-64 with AVX-512/AVX2 (bench/RESULTS.md);
//     it is a heuristic, not a guarantee. Force a format by building that class directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "nnpress/cpu.h"
#include "nnpress/sparse/matrix.h"
#include "nnpress/status.h"

namespace nnpress::sparse {

struct KernelOptions {
  std::optional<Isa> isa;  // empty: detect_isa()
  unsigned threads = 1;  // 0: as many as pay (see CONTRACT)
};

Status matvec(const RowGroupMatrix& m, const float* x, size_t x_len, float* y, size_t y_len,
              const KernelOptions& opt = {});
Status matmat(const RowGroupMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const KernelOptions& opt = {});
Status matvec(const CodebookMatrix& m, const float* x, size_t x_len, float* y, size_t y_len,
              const KernelOptions& opt = {});
Status matmat(const CodebookMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const KernelOptions& opt = {});

// The ISA a product with `batch` input columns uses when KernelOptions.isa is empty: detect_isa()
// (which honours NNPRESS_ISA; with an unknown value the products fail instead, cpu.h), except that
// batch 2..32 prefers AVX2 over AVX-512 (SURPRISES).
Isa auto_isa(size_t batch);
// The same for a CER/CSER matrix: also batch 1 prefers AVX2 over AVX-512 when groups average <= 6
// entries (the same algorithm runs faster as AVX2 code on such short groups, slower on longer ones;
// bench/RESULTS.md, "CER/CSER kernels"), unless the matrix has a kernel plan and fast_gathers().
Isa auto_isa(const RowGroupMatrix& m, size_t batch);

// Whether the AVX-512 batch-1 CER/CSER kernels (the kernel-plan kernel and the group loop's input copy)
// load their inputs by hardware gathers on this CPU: x86 Intel cores with AVX512-FP16 (Sapphire Rapids and later),
// whose gathers are faster than scalar loads; elsewhere (AMD, and older Intel cores whose gathers the Gather Data
// Sampling mitigation slows) scalar loads (bench/RESULTS.md, "Inference on compressed weights"). False on other
// architectures.
bool fast_gathers();

// The representation expected to be fastest for a rows x cols matrix with `nnz` entries that differ
// from its most frequent value, `num_values` distinct values, used with `batch` input columns.
// With allow_dense, kDense means "keep the dense float matrix and a BLAS product", chosen where BLAS
// was faster: batch 1 with more than 16 values and density >= 0.4; batch > 1 with density >= 0.75.
// Rules (x86-64, one thread; bench/RESULTS.md): batch 1 with <= 16 values and density >=
// max(0.03, 0.097 - 49 / cols) (0.085 at 4096 columns, 0.065 at 1536, 0.03 at <= 730): kCodebook;
// otherwise kCSER (kCER has the same speed or less, and padding groups).
Format choose_format(uint32_t rows, uint32_t cols, uint64_t nnz, uint32_t num_values, size_t batch,
                     bool allow_dense = false);

}  // namespace nnpress::sparse
