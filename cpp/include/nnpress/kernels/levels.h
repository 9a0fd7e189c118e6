// nnpress/kernels/levels.h — products on the integer reconstruction indices of a quantized tensor
// (integer-level kernels). Decoder side: built in the decoder-only build too.
//
// CONTRACT
//   A LevelMatrix is a rows x cols weight matrix held as integers:
//       W[i][j] = row_scale[i] * col_scale[j] * u[i][j]
//   with u the exact reconstruction indices of a quantized tensor (quant/dequantize.h: u = level for
//   nearest/rdoq; u = 2k or 2k - sgn(k) along the dependent-quantization state machine for trellis),
//   row_scale[i] = step * 2^(row_exp[i]/8) and col_scale[j] = 2^(col_exp[j]/8) (or no column scales).
//
//   Building (validated once; products cannot fail on the matrix afterwards):
//     LevelMatrix::from_levels(rows, cols, u, row_scale, col_scale, &m)
//       u: rows*cols int32, row-major; row_scale: rows floats, each finite and > 0; col_scale: cols
//       floats, each finite and > 0, or null (all 1). kInvalidArgument for rows or cols == 0, a null
//       u or row_scale, a scale that is not finite and > 0 (the message names which and where).
//       On failure *out is left unchanged.
//     level_matrix_from_reader(reader, index, &m, threads) / Model::decode_level_matrix (runtime.h):
//       the same matrix straight from a quantized .nnp tensor (an alias gives its target's): its
//       levels (ContainerReader::decode_levels_rows, a block of chunks at a time, `threads`
//       threads), its method (trellis levels go
//       through the state machine of dequantize.h to u), row_scale[i] = float(step * 2^(row_exp/8))
//       (all float(step) without row exponents) and col_scale[j] = float(2^(col_exp/8)). The view is
//       rows_cols_of(shape) (shape.h): a Linear weight as is, a Conv weight as out x (in*kh*kw).
//       kInvalidArgument: index out of range, a raw tensor, a tensor with no elements; kLimit: a
//       dimension above 2^32 - 1 or a u outside int32 (a trellis level beyond +-2^30);
//       kCorrupt / kTruncated as decode_levels.
//   Storage: u in [-127, 127] as int8, one row after another with a row stride padded to 64 bytes
//   (padding holds zeros), plus an exact list of the entries outside int8 (per-row column + int32
//   u). When such entries are more than 1/16 of the matrix, the dense part is int16 instead, holding
//   |u| <= T with T the first of kInt16DenseRanges (255, 511, 1023, 2047) that leaves at most 1/1024 of
//   the entries beyond it, else 32767, and the list holds the rest (a few large entries then do not
//   narrow the kInt16 input range L, below). nbytes() counts every byte held (dense part,
//   list, scales). Nothing else is allocated per matrix, and a float32 product allocates only when
//   the matrix has column scales (X times col_scale, batch x cols floats) or, with the AVX-512
//   kernels, list entries (X' token-minor, cols x batch rounded up to 16 floats: the list entries
//   take 16 tokens per vector, in the scalar loop's order and roundings) — except the thread pool's
//   first use (common/parallel.h).
//
//   Products:
//     matmul(m, X, x_len, batch, Y, y_len, opt)
//       X: batch x cols floats, row-major (one row per token: the layout of a torch Linear input);
//       Y: batch x rows floats, row-major:  Y[b][i] = sum_j W[i][j] * X[b][j].
//       Computed as Y[b][i] = row_scale[i] * (sum_j u[i][j] * X'[b][j]) with X' = X * col_scale
//       (rounded to float), float32 arithmetic, each u converted to float exactly (|u| <= 2^24;
//       beyond, rounded), the list entries added after the dense part. Equal to the float64 product
//       of the decoded weights up to float32 rounding and summation order.
//       kInvalidArgument: x_len != batch * cols, y_len != batch * rows, a null buffer, batch 0, an ISA
//       this build/CPU cannot run, or — automatic choice only — an unknown NNPRESS_ISA value (cpu.h).
//       On failure Y is untouched. Y must not alias X. Inputs may hold any floats.
//     matmul(m, X, x_len, batch, Y, y_len, bias, bias_len, opt): the same, then Y[b][i] += bias[i]: one
//       float add to each rounded result (in both activation modes), so the same bits as adding the bias
//       afterwards. bias: rows floats (bias_len == rows), or null with bias_len 0; else kInvalidArgument.
//     LevelKernelOptions.isa: empty = detect_isa() (honours NNPRESS_ISA); a named ISA must be
//       isa_supported() (tests and benchmarks force each ISA this way). Kernels: scalar reference
//       (always), AVX2 and AVX-512 on x86-64, NEON on aarch64, each compiled with its own flags only.
//     LevelKernelOptions.threads: rows are split into contiguous blocks, one per thread (capped by the
//       hardware and by rows / 64; 0 = as many as pay, one per ~256 Ki multiply-adds). Every output
//       element is computed by one thread in a fixed order that does not depend on the block
//       boundaries, so results are bit-identical for every thread count (not across ISAs).
//     LevelKernelOptions.activations = kInt16 (opt-in): with M = dense_max() (max |u| of the dense part)
//       and L = activation_range() = min(32767, floor((2^31 - 1) / (512 * max(M, 1)))) — so 32767 for
//       every int8 dense part; 2047..32767 for int16 ones with M <= 2049 — each row b of X' is rounded
//       to integers in [-L, L] on its own scale, s_b = max_j |X'[b][j]| / L, xq = round(X' / s_b) (half
//       away from zero); the sums S = sum_j u[i][j] * xq[b][j] (list entries included) are exact integers
//       (int32 partial sums of at most 512 products, each at most M * L, then int64), and
//           Y[b][i] = float(row_scale[i] * s_b * S)   (double, rounded once).
//       So the only error is the rounding of the inputs (at most s_b / 2 per input), and the results
//       are bit-identical for every ISA and thread count. Rows of X with a non-finite value make the
//       whole product run as kFloat32 (so Inf/NaN propagate as in float math), and so does a matrix
//       whose L would be below kMinActivationRange = 2047 (an int16 dense part with M > 2049: its
//       activation_range() is 0), and so does a product with a row whose rounding would be coarse:
//       more of its nonzero inputs round to fewer than kFineSteps = 32 steps (|xq| < 32) than to 32
//       or more, i.e. its median nonzero input keeps fewer than 32 steps, as when a few inputs are
//       hundreds of times the others (the outlier channels of large language models). The SIMD kernels (int8 and int16
//       dense parts) use AVX-512 VNNI (vpdpwssd) where the CPU has it, else AVX-512BW / AVX2 vpmaddwd (NEON: vmlal):
//       twice the multiply-adds per instruction of a float32 FMA and no int -> float conversion per weight (CPUs that
//       issue 512-bit integer multiplies on fewer ports than FMAs gain less; bench/RESULTS.md). The rounding of the
//       inputs, the list entries (16 tokens per vector) and the final multiply have AVX-512 versions doing the scalar
//       reference's double operations lane by lane (no fused multiply-adds), so they do not change the bits. A product
//       in this mode allocates its rounded inputs (batch x stride int16), its sums (batch x rows int64) and, for a
//       matrix with list entries, the rounded inputs token-minor (cols x batch rounded up to 16, int32).
//
//   Python (nnpress._core): LevelMatrix.from_levels(u, row_scale, col_scale=None),
//   LevelMatrix.from_nnp(reader, index, threads=1) and NnpFile.level_matrix(name, threads=None)
//   (python/nnpress/container.py), m.matmul(x, out=None, isa=None, threads=1, activations="float32",
//   bias=None)
//   (x float32 [..., cols], C-contiguous: every leading dimension is a batch dimension),
//   m.rows / cols / nbytes / outliers / index_bits / row_scale / col_scale, m.indices(), m.to_dense().
//
// SURPRISES
//   - The kernels multiply every weight, zeros included: a dense layout. For very sparse matrices
//     CSER (sparse/kernels.h) does less work.
//   - Different ISAs sum in different orders (lanes), so their float32 results differ in the last bits
//     (kInt16 results do not: their sums are exact).
//   - level_matrix_from_reader decodes each tensor once, holding at most kBuildBlockElements int32
//     levels (or one file chunk's, if larger) besides the matrix, which holds ~1 byte per weight
//     (2 for an int16 layout, which also holds its first rows in int8 for a moment while building).
//   - row_scale is rounded to float32 once (step * 2^(e/8) in double, then float): the product's
//     weights differ from decode_float32's by at most that rounding (relative 2^-24).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "nnpress/cpu.h"
#include "nnpress/format/container.h"
#include "nnpress/status.h"

namespace nnpress::levels {

// How the activations enter the product (see CONTRACT, LevelKernelOptions.activations).
enum class Activations : int {
  kFloat32 = 0,  // exact float32 inputs (the default)
  kInt16 = 1,    // each input row rounded to integers in [-L, L] (int16) on its own scale, exact integer sums
};

struct LevelKernelOptions {
  std::optional<Isa> isa;                      // empty: detect_isa()
  unsigned threads = 1;                        // 0: as many as pay (see CONTRACT)
  Activations activations = Activations::kFloat32;
  bool vnni = true;  // kInt16: use AVX-512 VNNI where the CPU has it (false: the AVX-512BW kernel; tests)
};

class LevelMatrix {
 public:
  // Largest |u| held in the int8 / int16 dense part.
  static constexpr int32_t kInt8Limit = 127;
  static constexpr int32_t kInt16Limit = 32767;
  // The narrower ranges an int16 dense part may hold instead of kInt16Limit (CONTRACT, Storage).
  static constexpr int32_t kInt16DenseRanges[4] = {255, 511, 1023, 2047};
  // Dense-part row strides are padded to this many bytes (and the part is aligned to it).
  static constexpr size_t kRowAlign = 64;
  // kInt16 activations (CONTRACT): products per exact int32 partial sum, and the smallest input range L
  // for which the mode runs (below it the matrix computes kInt16 as kFloat32).
  static constexpr int32_t kActivationChunk = 512;
  static constexpr int32_t kMinActivationRange = 2047;
  // kInt16 activations (CONTRACT): the rounding steps a row's median nonzero input must keep (at most
  // ~1.6 % of it lost); rows below it (a few inputs hundreds of times the others) run the product as
  // kFloat32.
  static constexpr int32_t kFineSteps = 32;

  LevelMatrix() = default;
  LevelMatrix(const LevelMatrix& other);
  LevelMatrix& operator=(const LevelMatrix& other);
  LevelMatrix(LevelMatrix&&) noexcept = default;
  LevelMatrix& operator=(LevelMatrix&&) noexcept = default;
  ~LevelMatrix() = default;

  static Status from_levels(uint32_t rows, uint32_t cols, const int32_t* u, const float* row_scale,
                            const float* col_scale, LevelMatrix* out);

  // The same matrix with u handed over a block of rows at a time (what level_matrix_from_reader
  // uses so as not to hold a large tensor's whole int32 levels): next(&first_row, &rows, &u) gives
  // the next block (rows x cols int32, row-major, valid until the following call), the blocks
  // covering rows 0..rows-1 in order; it returns an error status to stop (passed on) or rows = 0 at
  // the end. One pass: the layout (CONTRACT, Storage) is decided as the blocks arrive, and is the
  // one from_levels gives for the whole u. While building, an int16 matrix may briefly hold its
  // rows so far in int8 as well. kInvalidArgument as from_levels, and for blocks out of order or
  // missing rows. On failure *out is left unchanged.
  using RowBlocks = std::function<Status(uint32_t* first_row, uint32_t* rows, const int32_t** u)>;
  static Status from_row_blocks(uint32_t rows, uint32_t cols, const RowBlocks& next, const float* row_scale,
                                const float* col_scale, LevelMatrix* out);
  // level_matrix_from_reader decodes at most this many levels at a time (or one file chunk, if larger).
  static constexpr uint64_t kBuildBlockElements = uint64_t(1) << 20;

  uint32_t rows() const { return rows_; }
  uint32_t cols() const { return cols_; }
  // Bits per stored index in the dense part: 8 or 16.
  int index_bits() const { return bits_; }
  // Entries held in the list (outside the dense part's range).
  uint64_t outliers() const { return out_col_.size(); }
  // M = max |u| over the dense part (list entries excluded; 0 for an all-zero dense part).
  int32_t dense_max() const { return dense_max_; }
  // kInt16 activations: the integer range L of the rounded inputs, or 0 when this matrix computes
  // kInt16 as kFloat32 (CONTRACT).
  int32_t activation_range() const;
  // Bytes held: dense part (with padding), list, scales.
  size_t nbytes() const;
  bool has_col_scale() const { return !col_scale_.empty(); }
  const std::vector<float>& row_scale() const { return row_scale_; }
  const std::vector<float>& col_scale() const { return col_scale_; }  // empty: all 1
  // Elements per stored row of the dense part (cols rounded up to kRowAlign bytes).
  size_t stride() const { return stride_; }

  // u as int32, row-major (rows*cols values into out).
  void indices(int32_t* out) const;
  // W as float32, row-major: float(double(row_scale[i]) * col_scale[j] * u), rows*cols values.
  void to_dense(float* out) const;

  // For the kernels (internal layout, see CONTRACT).
  const int8_t* q8() const { return bits_ == 8 ? reinterpret_cast<const int8_t*>(dense_.get()) : nullptr; }
  const int16_t* q16() const { return bits_ == 16 ? reinterpret_cast<const int16_t*>(dense_.get()) : nullptr; }
  const std::vector<uint64_t>& outlier_ptr() const { return out_ptr_; }  // rows + 1, or empty
  const std::vector<uint32_t>& outlier_col() const { return out_col_; }
  const std::vector<int32_t>& outlier_val() const { return out_val_; }

 private:
  struct FreeAligned {
    void operator()(uint8_t* p) const;
  };
  static std::unique_ptr<uint8_t[], FreeAligned> alloc_dense(size_t bytes);
  static Status build(const char* who, uint32_t rows, uint32_t cols, const RowBlocks& next, const float* row_scale,
                      const float* col_scale, LevelMatrix* out);
  size_t dense_bytes() const { return size_t(rows_) * stride_ * size_t(bits_ / 8); }

  uint32_t rows_ = 0, cols_ = 0;
  int bits_ = 8;
  int32_t dense_max_ = 0;
  size_t stride_ = 0;
  std::unique_ptr<uint8_t[], FreeAligned> dense_;
  std::vector<uint64_t> out_ptr_;
  std::vector<uint32_t> out_col_;
  std::vector<int32_t> out_val_;
  std::vector<float> row_scale_, col_scale_;
};

Status matmul(const LevelMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const LevelKernelOptions& opt = {});
// The same plus a bias: Y[b][i] = product + bias[i] (bias: rows floats, bias_len == rows; or null and 0).
Status matmul(const LevelMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const float* bias, size_t bias_len, const LevelKernelOptions& opt = {});

// A LevelMatrix from quantized tensor `index` of an open .nnp file (see CONTRACT).
Status level_matrix_from_reader(const ContainerReader& reader, size_t index, LevelMatrix* out, unsigned threads = 1);

}  // namespace nnpress::levels
