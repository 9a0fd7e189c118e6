// nnpress/kernels/lut.h — products on weights whose rows each hold at most 16 distinct values: a 4-bit
// code per weight and one 16-entry value table per row (table lookup). Decoder side: built in the
// decoder-only build too.
//
// CONTRACT
//   A LutMatrix is a rows x cols weight matrix of the form of a LevelMatrix (kernels/levels.h),
//       W[i][j] = row_scale[i] * col_scale[j] * u[i][j],
//   whose every row i holds at most kMaxValues = 16 distinct reconstruction indices u[i][.] (values may
//   differ from row to row). It is held as
//       table[i][0..15]  float(u) of the row's distinct indices, ascending (unused entries 0), and
//       code[i][j]       4 bits: u[i][j] = table[i][code[i][j]],
//   so 0.5 byte per weight plus 64 bytes per row (and the scales).
//
//   Building (validated once; products cannot fail on the matrix afterwards):
//     LutMatrix::from_levels(rows, cols, u, row_scale, col_scale, &m)
//       as LevelMatrix::from_levels (u: rows*cols int32, row-major; scales finite and > 0, col_scale may
//       be null). kInvalidArgument for rows or cols == 0, a null u or row_scale, a bad scale, a row
//       with more than 16 distinct values, and an index |u| > kMaxIndex = 2^24 (beyond, float32 tables
//       would round it; the messages name the row). On failure *out is left unchanged.
//     LutMatrix::from_level_matrix(lm, &m): the same matrix from a LevelMatrix (its dense part and list,
//       read one row at a time: no int32 or float32 copy of the matrix); the same row checks.
//     lut_matrix_from_reader(reader, index, &m, threads): straight from a quantized .nnp tensor, as
//       level_matrix_from_reader (levels.h) with the same errors, then from_level_matrix: it holds the
//       tensor's LevelMatrix for the time of the call (and, while building that, a block of its int32
//       levels: levels.h), never a float32 copy.
//   Storage: codes in blocks of 32 columns, 16 bytes per block: byte b of block k holds the code of column
//   32k + b in its low nibble and that of column 32k + 16 + b in its high nibble; a row is
//   ceil(cols / 32) blocks (padding columns hold code 0 and are never multiplied by anything but a zero
//   input). Tables are 64-byte aligned, one 16-float line per row. nbytes() counts codes, tables, scales.
//
//   Products:
//     matmul(m, X, x_len, batch, Y, y_len, opt): the layout, arguments, errors and options of
//       levels::matmul (LevelKernelOptions: isa, threads; activations must be kFloat32, vnni is ignored):
//       X: batch x cols, Y: batch x rows, Y[b][i] = row_scale[i] * (sum_j table[i][code[i][j]] * X'[b][j])
//       with X' = X * col_scale (rounded to float), float32 arithmetic, the table values exact. Equal to the float64
//       product of the decoded weights up to float32 rounding and summation order. Every output element is computed by
//       one thread in an order that does not depend on the row blocks, so results are bit-identical for every thread
//       count (not across ISAs). kInvalidArgument additionally for activations other than kFloat32.
//     Kernels (one per ISA, each compiled with its own flags only): scalar reference (always); AVX-512
//       and AVX2 on x86-64, NEON on aarch64. The design: per row, a register holds the 16-float table, and
//       a permute by the codes turns 16 (AVX2: 8) codes into their float values at once (AVX-512
//       vpermps zmm on the low 4 bits of each 32-bit lane, so a block's bytes widened to 32 bits index the
//       low-nibble columns directly and, shifted right by 4, the high-nibble ones; AVX2 two 8-entry
//       vpermps and a blend on bit 3; NEON a 64-byte tbl on byte indices 4c..4c+3). Those float weights
//       are then multiplied into float32 accumulators by FMA, each one serving every token of a tile
//       (AVX-512: 4 rows x 1 token or 4 x 4; AVX2/NEON: 4 x 1 or 2 x 4), so the lookup costs
//       one permute per 16 weights whatever the batch. Lane l of an accumulator sums, block after block,
//       column 32k + l then column 32k + 16 + l (AVX2 / NEON: 8 / 4 lanes, lane l the block's columns
//       32k + 8q + l / 32k + 4q + l in order of q); the lanes are then reduced in a fixed tree.
//     Why this and not T-MAC's bit-serial tables (per group of g = 4 inputs, the 16 sums of every input
//       subset, indexed by one bit plane of 4 weights): those tables need weights that are a linear
//       function of their code bits (a uniform grid), which 16 arbitrary values per row are not; on u's
//       own bits a row of p-bit indices costs p lookups and adds per 4 weights and per token, where the
//       value table costs one permute per 16 weights shared by every token plus one FMA per weight and
//       token. So on a 4-bit uniform grid both cost one permute per 16 weights at batch 1, T-MAC's tables
//       win only with p <= 3 there, and lose at larger batches, where their lookups grow with the batch;
//       T-MAC's usual int8 tables would also round the inputs (this format is exact). The probe
//       bench/cpp/bench_lut_probe.cpp times both (bench/results/lut.md).
//
//   Python (nnpress._core): LutMatrix.from_levels(u, row_scale, col_scale=None), LutMatrix.from_nnp(
//   reader, index, threads=1), LutMatrix.from_level_matrix(lm), NnpFile.lut_matrix(name, threads=None)
//   (python/nnpress/container.py), m.matmul(x, out=None, isa=None, threads=1) (x float32 [..., cols],
//   C-contiguous), m.rows / cols / nbytes / max_values / row_scale / col_scale, m.indices(),
//   m.to_dense().
//
// SURPRISES
//   - Every weight is multiplied, zeros included (a dense layout); very sparse matrices run faster as
//     CSER (sparse/kernels.h).
//   - A matrix with 16 or fewer values in EVERY row but more in total is held; the whole-matrix codebook
//     (sparse::CodebookMatrix) is not.
//   - Different ISAs sum in different orders (lanes), so their results differ in the last bits.
//   - Half the bytes of an int8 LevelMatrix does not make it twice as fast: the lookup and widening per
//     16 weights, not the memory, bound the kernel at small batches (bench/results/lut.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "nnpress/format/container.h"
#include "nnpress/kernels/levels.h"
#include "nnpress/status.h"

namespace nnpress::levels {

class LutMatrix {
 public:
  static constexpr uint32_t kMaxValues = 16;   // distinct values per row
  static constexpr int32_t kMaxIndex = 1 << 24;  // largest |u| (float32 holds every integer up to it)
  static constexpr uint32_t kBlockCols = 32;   // columns per code block
  static constexpr size_t kBlockBytes = 16;    // bytes per code block
  static constexpr size_t kAlign = 64;         // alignment of the tables and codes

  LutMatrix() = default;
  LutMatrix(const LutMatrix& other);
  LutMatrix& operator=(const LutMatrix& other);
  LutMatrix(LutMatrix&&) noexcept = default;
  LutMatrix& operator=(LutMatrix&&) noexcept = default;
  ~LutMatrix() = default;

  static Status from_levels(uint32_t rows, uint32_t cols, const int32_t* u, const float* row_scale,
                            const float* col_scale, LutMatrix* out);
  static Status from_level_matrix(const LevelMatrix& lm, LutMatrix* out);

  uint32_t rows() const { return rows_; }
  uint32_t cols() const { return cols_; }
  // The largest number of distinct values in one row (1..16).
  uint32_t max_values() const { return max_values_; }
  size_t nbytes() const;
  bool has_col_scale() const { return !col_scale_.empty(); }
  const std::vector<float>& row_scale() const { return row_scale_; }
  const std::vector<float>& col_scale() const { return col_scale_; }  // empty: all 1

  // Bytes per row of codes (ceil(cols / 32) * 16).
  size_t code_stride() const { return code_stride_; }
  const uint8_t* codes() const { return data_.get(); }                                        // rows * code_stride
  const float* tables() const { return reinterpret_cast<const float*>(data_.get() + tables_at_); }  // rows * 16

  // u as int32, row-major (rows*cols values into out).
  void indices(int32_t* out) const;
  // W as float32, row-major: float(double(row_scale[i]) * col_scale[j] * u), rows*cols values.
  void to_dense(float* out) const;

 private:
  struct FreeAligned {
    void operator()(uint8_t* p) const;
  };
  using RowFn = void (*)(const void* ctx, uint32_t r, int32_t* buf);
  static Status build(uint32_t rows, uint32_t cols, RowFn row, const void* ctx, const float* row_scale,
                      const float* col_scale, LutMatrix* out);
  size_t data_bytes() const { return tables_at_ + size_t(rows_) * kMaxValues * sizeof(float); }

  uint32_t rows_ = 0, cols_ = 0, max_values_ = 0;
  size_t code_stride_ = 0, tables_at_ = 0;
  std::unique_ptr<uint8_t[], FreeAligned> data_;  // codes, then (64-byte aligned) tables
  std::vector<float> row_scale_, col_scale_;
};

Status matmul(const LutMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const LevelKernelOptions& opt = {});

// A LutMatrix from quantized tensor `index` of an open .nnp file (see CONTRACT).
Status lut_matrix_from_reader(const ContainerReader& reader, size_t index, LutMatrix* out, unsigned threads = 1);

}  // namespace nnpress::levels
