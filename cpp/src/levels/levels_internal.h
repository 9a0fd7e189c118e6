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
// Columns per int32 chunk of the kernels with 8 int32 lanes per row and token (NEON; AVX2 sums its lanes every
// kLaneChunk columns): each lane sums kIntChunk / 8 = kLaneChunk products.
constexpr size_t kIntChunk = 8 * kLaneChunk;

// kInt16 input rounding of one row (levels.h, "Activations"): false when x holds a non-finite value (q and
// *scale untouched); else *scale = double(max_j |x[j]|) / L and, for a nonzero scale, q[j] = x[j] * (1 /
// *scale) in double rounded half away from zero and clamped to [-L, L] (q untouched for a zero scale). The
// double operations are exactly these (no fused multiply-add), so every ISA gives the same q.
using QuantizeRow = bool (*)(const float* x, size_t cols, int32_t L, int16_t* q, double* scale);

// The list entries of rows [r0, r1) added to the exact sums: S[b * rows + r] += sum over row r's entries k
// of val[k] * xt[col[k] * bpad + b], b < batch, with xt the rounded inputs as int32, token-minor (cols x
// bpad, bpad = batch rounded up to 16, padding zero). Integer sums: the same result in any order.
using ListInt = void (*)(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const int32_t* xt, size_t bpad,
                         size_t batch, size_t rows, uint32_t r0, uint32_t r1, int64_t* S);

// y[r] = float(double(rs[r]) * scale * double(S[r])) for r in [r0, r1): the kInt16 result of one token
// (two double multiplies in this order, rounded once to float), plus bias[r] (one float add) when bias is
// not null.
using FinishInt = void (*)(const int64_t* S, const float* rs, double scale, const float* bias, uint32_t r0, uint32_t r1,
                           float* y);

// The list entries of rows [r0, r1) in float32, onto the dense sums: for every b < batch, acc = Y[b * rows + r],
// then acc = acc + float(val[k]) * xt[col[k] * bpad + b] over row r's entries in order (a multiply and an
// add, each rounded: the generic code's order and roundings), Y[b * rows + r] = acc. xt: the float inputs
// token-minor as for ListInt. Null: the generic loop (level_matrix.cpp).
using ListFloat = void (*)(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const float* xt, size_t bpad,
                           size_t batch, size_t rows, uint32_t r0, uint32_t r1, float* Y);

struct LevelKernelTable {
  LevelKernel dense8;
  LevelKernel dense16;
  LevelKernelInt int8_i16;        // null: the scalar one
  LevelKernelInt int8_i16_vnni;   // null unless this ISA has a VNNI variant (used when the CPU has VNNI)
  LevelKernelInt int16_i16;       // int16 dense part; null: the scalar one
  LevelKernelInt int16_i16_vnni;  // as int8_i16_vnni
  QuantizeRow quantize_row;       // kInt16 helpers; null: the scalar ones
  ListInt list_int;
  FinishInt finish_int;
  ListFloat list_float;  // null: the generic loop
};

const LevelKernelTable* scalar_level_kernels();
const LevelKernelTable* avx2_level_kernels();    // null unless compiled (NNPRESS_HAVE_AVX2_TU)
const LevelKernelTable* avx512_level_kernels();  // null unless compiled (NNPRESS_HAVE_AVX512_TU)
const LevelKernelTable* neon_level_kernels();    // null unless compiled (NNPRESS_HAVE_NEON_TU)

}  // namespace nnpress::levels::detail
