// Internal: the plain view the per-ISA table-lookup kernels work on (nnpress/kernels/lut.h). Like
// levels_internal.h, the per-ISA .cpp files include only this header and intrinsics.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnpress::levels::detail {

struct LutView {
  uint32_t rows, cols;
  size_t stride;         // bytes of codes per row: ceil(cols / 32) * 16
  const uint8_t* codes;  // rows * stride bytes (layout: lut.h, "Storage"), 64-byte aligned
  const float* tables;   // rows * 16 floats, 64-byte aligned
};

// Y[b * rows + r] = sum_j table[r][code[r][j]] * X[b * cols + j] for rows r in [r0, r1) and every
// b < batch, in float32 (no scales). The order of the sum for one (r, b) must not depend on r0, r1 or on
// which other rows or tokens are computed with it.
using LutKernel = void (*)(const LutView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1);

LutKernel scalar_lut_kernel();
LutKernel avx2_lut_kernel();    // null unless compiled (NNPRESS_HAVE_AVX2_TU)
LutKernel avx512_lut_kernel();  // null unless compiled (NNPRESS_HAVE_AVX512_TU)
LutKernel neon_lut_kernel();    // null unless compiled (NNPRESS_HAVE_NEON_TU)

}  // namespace nnpress::levels::detail
