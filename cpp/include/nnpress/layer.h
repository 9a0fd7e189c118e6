// nnpress/layer.h — one linear layer (a Linear, or a convolution run as im2col) of a .nnp model, in the
// weight format that MEASURED fastest at the shape and batch it will run with.
// Decoder side only: available in the decoder-only build (-DNNPRESS_ENCODER=OFF).
//
// CONTRACT
//   Layer::create(model, "fc1.weight", batch, options, &layer) views the tensor as rows = shape[0] x
//   cols = prod(shape[1:]) (a Conv2d weight [out, in, kh, kw] is the matrix of im2col, columns in
//   (in, kh, kw) order), builds it in every candidate format that can hold it, times each on the
//   layer's real shape — `batch` input items of `cols` values: tokens x images for a Linear, output
//   pixels x images for a convolution — and keeps the fastest; the others are freed.
//     candidates   LayerFormat::kLevels    integer levels + scales (kernels/levels.h); the dense path:
//                                          every weight as an int8 (int16) reconstruction index
//                  LayerFormat::kLevelsCols the same level matrix, one column per item: an outer-product
//                                          kernel (below) for few rows x many items (convolutions)
//                  LayerFormat::kCSER      value-shared sparse rows (sparse/kernels.h)
//                  LayerFormat::kCodebook  4-bit indices into 16 values (<= 16 distinct values only)
//                  LayerFormat::kLut       4-bit codes into a 16-value table per row (kernels/lut.h;
//                                          <= 16 distinct levels in every row)
//                  LayerFormat::kCER       CSER's groups in global value order plus padding groups, so
//                                          never less work than CSER: timed only when named in
//                                          options.candidates
//     A format that cannot hold the tensor (levels: a raw, unquantized tensor, or a float16/bfloat16 one,
//     whose decoded weights are rounded to its dtype; CER/CSER: more than 65536 values; codebook: more
//     than 16; lut: a row with more than 16 levels, an index beyond +-2^24, or a raw or float16/bfloat16
//     tensor as levels) is skipped; its reason is kept in timings(). No candidate at all: kInvalidArgument naming
//     the tensor and every reason.
//   Timing: every candidate runs one untimed round, then `repetitions` rounds interleave the
//     candidates (A, B, C, A, B, C, ...); each keeps its fastest round (the least disturbed by other
//     processes), per forward() call. A round is as many consecutive forward() calls, on fixed
//     pseudo-random inputs of the real shape, as fill `min_round_seconds` (at least one): a layer runs
//     warm, as in a forward pass repeated over inputs. After the first timed round a candidate whose time
//     exceeds the fastest's by more than the drop ratio (kDropRatio in layer.cpp) is not timed again
//     (its time stays that round's), so the measurement costs about (2 x candidates + repetitions x
//     the close ones) x max(call, min_round_seconds) (bench/RESULTS.md, "Inference on compressed
//     weights", gives the load time of the edge model).
//   Deterministic / forced: options.format names one format: it is built and used without timing
//     (kInvalidArgument if it cannot hold the tensor). options.candidates restricts the timed set.
//     format() and timings() report what was chosen and measured; choice_string() of a set of layers
//     ("conv1.weight=levels,...") fed back via parse_layer_format() reproduces a choice exactly.
//   forward(X, x_len, batch, Y, y_len): Y = act(W X + b), in the layout of the chosen format
//     (layout()):
//       Layout::kItemRows  X: batch x cols, row-major (one row per item); Y: batch x rows   (levels, lut)
//       Layout::kItemCols  X: cols x batch, row-major (one column per item); Y: rows x batch (CER/CSER/
//                          codebook)
//       (kLevelsCols has the kItemCols layout.)
//     At batch 1 both layouts are the same memory. batch may be any value >= 1 (the choice was timed at
//     the batch given to create()). The bias (options.bias, rows values) and ReLU are applied in one
//     pass over Y after the product. Safe to call from several threads at once. No allocation, except
//     that levels::matmul (kLevels) scales X into a temporary when the tensor has column scales.
//     Errors: kInvalidArgument for a null buffer, batch 0, x_len != cols * batch, y_len != rows *
//     batch, or an ISA the CPU cannot run (options.isa); y is unspecified after a failure.
//   Results equal the float64 product of the decoded weights (Model::decode_float32) up to float32
//   summation order, for every format.
//   kLevelsCols kernel (layer.cpp): per row, items in tiles of 64 held as float accumulators; each
//   (row, column) weight u * col_scale is broadcast and multiplied into the column's 64 inputs, then the
//   row is scaled by row_scale; list entries (|u| beyond the int8/int16 part) are added the same way.
//   Compiled three times (generic, AVX2 + FMA, AVX-512 by function target attributes on x86-64 GCC /
//   Clang), the copy run chosen like the other kernels (options.isa, else detect_isa(), which honours
//   NNPRESS_ISA); levels::matmul's kernels instead reduce one dot product per (row, item), which costs
//   more when rows are few and items many.
//   create() errors: kNotFound (no such tensor or bias), kInvalidArgument (rank-0 tensor, a non-float
//   dtype, a bias whose size is not rows, batch 0, an unusable forced format, no candidate), and the
//   Model's decode errors (kCorrupt, ...), each naming the tensor. On failure *out is unchanged.
//
// SURPRISES
//   - The choice depends on this CPU and on the load while create() ran; a noisy machine can pick a
//     format that is a little slower. Pass the reported choice back (options.format) for repeatable
//     runs and benchmarks.
//   - The choice is per layer: it does not see what the caller pays between layers whose layouts differ
//     (a transpose when a kItemRows layer feeds a kItemCols one at batch > 1).
//   - create() decodes the tensor twice (float32 for CER/CSER/codebook, levels for the level formats)
//     unless a format is forced; peak memory during create() is about 5 bytes per weight (the float32
//     values and the level matrix; the levels are decoded a block of chunks at a time, kernels/levels.h)
//     plus the candidates.
//   - No float32 dense candidate: a dense float GEMM would mean either a BLAS dependency (this runtime
//     is a small dependency-free library) or a second, home-made dense path; the level matrix is the
//     dense path, holding each weight in 1 byte (2 for int16 levels) instead of 4, with products equal
//     to the decoded weights' up to float32 rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nnpress/cpu.h"
#include "nnpress/runtime.h"
#include "nnpress/status.h"

namespace nnpress {

enum class LayerFormat : int { kAuto = 0, kLevels = 1, kCSER = 2, kCER = 3, kCodebook = 4, kLevelsCols = 5, kLut = 6 };
// "auto", "levels", "cser", "cer", "codebook", "levels_cols", "lut".
const char* layer_format_name(LayerFormat f);
// Parses the names above (lower case); false for anything else.
bool parse_layer_format(const std::string& name, LayerFormat* out);

enum class Layout : int {
  kItemRows = 0,  // X: batch x cols, Y: batch x rows (row-major; one row per item)
  kItemCols = 1,  // X: cols x batch, Y: rows x batch (row-major; one column per item)
};
enum class Activation : int { kNone = 0, kRelu = 1 };

struct LayerOptions {
  LayerFormat format = LayerFormat::kAuto;  // a named format: used without timing
  std::vector<LayerFormat> candidates;      // formats timed by kAuto; empty: all but CER
  std::string bias;                         // bias tensor (rows values); empty: none
  Activation activation = Activation::kNone;
  unsigned repetitions = 7;          // timed rounds per candidate (0 counts as 1)
  double min_round_seconds = 20e-6;  // a round repeats forward() until it lasts this long
  unsigned decode_threads = 1;      // threads of the tensor decode (Model threads rule)
  std::optional<Isa> isa;           // kernels' ISA; empty: each kernel family's automatic choice
};

// One candidate of the measurement.
struct FormatTiming {
  LayerFormat format = LayerFormat::kAuto;
  Status status;               // why it was skipped (not ok) — or Ok
  double seconds = 0;          // fastest round, per forward() call (0 if skipped or forced)
  size_t bytes = 0;            // bytes the weights take in this format
};

class Layer {
 public:
  Layer();
  ~Layer();
  Layer(Layer&&) noexcept;
  Layer& operator=(Layer&&) noexcept;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  static Status create(const Model& model, const std::string& weight, size_t batch, const LayerOptions& options,
                       Layer* out);

  Status forward(const float* X, size_t x_len, size_t batch, float* Y, size_t y_len) const;

  const std::string& name() const { return name_; }
  uint32_t rows() const { return rows_; }
  uint32_t cols() const { return cols_; }
  size_t batch() const { return batch_; }  // the batch the choice was made for
  LayerFormat format() const { return format_; }
  Layout layout() const {
    return format_ == LayerFormat::kLevels || format_ == LayerFormat::kLut ? Layout::kItemRows : Layout::kItemCols;
  }
  bool forced() const { return forced_; }
  // Every candidate considered, in the order timed (one entry when forced); skipped ones carry their
  // reason in status.
  const std::vector<FormatTiming>& timings() const { return timings_; }
  size_t weight_bytes() const;  // bytes the chosen format holds (weights + bias)
  // "name=format" (parse it back with parse_layer_format after the '=').
  std::string choice_string() const { return name_ + "=" + layer_format_name(format_); }

  struct Impl;  // the formats' matrices (layer.cpp)

 private:
  std::string name_;
  uint32_t rows_ = 0, cols_ = 0;
  size_t batch_ = 0;
  LayerFormat format_ = LayerFormat::kAuto;
  bool forced_ = false;
  std::vector<FormatTiming> timings_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nnpress
