// Internal: the plain view the per-ISA integer-level kernels work on, and their dispatch table.
// The per-ISA .cpp files include only this header and intrinsics (no standard-library templates), so no
// inline function compiled with ISA flags can be merged into generic code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnpress::levels::detail {

struct LevelView {
  uint32_t rows, cols;
  size_t stride;       // elements per stored row (a multiple of 32; padding holds zeros)
  const int8_t* q8;    // exactly one of q8 / q16 is set; 64-byte aligned, rows * stride elements
  const int16_t* q16;
};

// Y[b * rows + r] = sum_j u[r][j] * X[b * cols + j] for rows r in [r0, r1) and every b < batch, in
// float32 (the dense part only: no list entries, no scales). The order of the sum for one (r, b) must
// not depend on r0, r1 or on which other rows or tokens are computed with it.
using LevelKernel = void (*)(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1);

// S[b * rows + r] = sum_j u[r][j] * Xq[b * stride + j] for rows r in [r0, r1) and every b < batch, exactly
// (the int8 or int16 dense part by table entry; Xq rows padded with zeros to the stride). The caller
// keeps |Xq| <= L with kLaneChunk * M * L <= 2^31 - 1, M = max |u| of the dense part, so a kernel may sum
// up to kLaneChunk products in an int32 (lane or lane tree) before moving the sum to int64.
using LevelKernelInt = void (*)(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0,
                                uint32_t r1);
constexpr size_t kLaneChunk = 512;
// Columns per int32 chunk of the kernels with 8 int32 lanes per row and token (AVX2, NEON): each lane
// sums kIntChunk / 8 = kLaneChunk products.
constexpr size_t kIntChunk = 8 * kLaneChunk;

struct LevelKernelTable {
  LevelKernel dense8;
  LevelKernel dense16;
  LevelKernelInt int8_i16;        // null: the scalar one
  LevelKernelInt int8_i16_vnni;   // null unless this ISA has a VNNI variant (used when the CPU has VNNI)
  LevelKernelInt int16_i16;       // int16 dense part; null: the scalar one
  LevelKernelInt int16_i16_vnni;  // as int8_i16_vnni
};

const LevelKernelTable* scalar_level_kernels();
const LevelKernelTable* avx2_level_kernels();    // null unless compiled (NNPRESS_HAVE_AVX2_TU)
const LevelKernelTable* avx512_level_kernels();  // null unless compiled (NNPRESS_HAVE_AVX512_TU)
const LevelKernelTable* neon_level_kernels();    // null unless compiled (NNPRESS_HAVE_NEON_TU)

}  // namespace nnpress::levels::detail
