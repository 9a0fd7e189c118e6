// nnpress/sparse/matrix.h — CER, CSER and dense-codebook matrices: immutable, validated containers.
//
// CONTRACT
//   All three represent a rows x cols float matrix W whose entries take few distinct values.
//
//   CER (Compressed Entropy Row) and CSER (Compressed Shared Elements Row), one class RowGroupMatrix:
//     omega      Ω, the distinct values ordered by global frequency (ties: smaller value first);
//                omega[0] (the most frequent value, usually 0) is implicit: it is never stored.
//     col        column indices of the explicit entries, row by row, grouped by value: within a
//                row the groups follow Ω order, within a group columns ascend. 16-bit when
//                cols <= 65536 (col16), else 32-bit (col32).
//     group_ptr  ΩPtr: num_groups + 1 offsets into col; group g = col[group_ptr[g] .. group_ptr[g+1]).
//     row_ptr    rows + 1 offsets into the groups; row r owns groups row_ptr[r] .. row_ptr[r+1].
//     CER:  group j of row r (j = g - row_ptr[r]) holds value omega[1 + j]; a row lists groups for
//           Ω indices 1 .. (largest index present in the row), with empty padding groups for the
//           indices it lacks.
//     CSER: group g holds value omega[group_value[g]] (8-bit when |Ω| <= 256, else 16-bit); only
//           values present in a row get a group, in ascending Ω index.
//   CodebookMatrix (dense codebook): a 4-bit value index per weight into a 16-entry table
//     (lut, unused entries 0). Each row is ceil(cols / 32) blocks of 16 bytes; in a block starting
//     at column c0, byte j holds the index of column c0 + j in its low nibble and of column
//     c0 + j + 16 in its high nibble. Padding columns carry index 0.
//
//   Objects are immutable and always valid: the builders produce valid structures, and
//   from_arrays() runs validate() — every pointer, offset, column index and value index is
//   checked, no column appears twice in a row, values are finite — before the object exists.
//   Kernels (kernels.h) therefore trust any RowGroupMatrix / CodebookMatrix they are given.
//   Builders (from_dense, from_levels) return kInvalidArgument for bad input (a null matrix with
//   rows * cols > 0, NaN/Inf values or a level * step that overflows, a step that is not finite and
//   > 0, too many distinct values, a format other than CER/CSER) and kLimit for more than 2^32 - 1
//   explicit entries; from_arrays returns kCorrupt for inconsistent structures. Messages say what and
//   where. On failure *out is unchanged. `out` must not be null (not checked).
//
// SURPRISES
//   - -0.0 and +0.0 are the same value (stored as +0.0).
//   - omega[0] need not be 0: if the most frequent value is, say, 0.5, then 0.5 is implicit and
//     the kernels add omega[0] * sum(x) to every output (exact for the common omega[0] == 0).
//   - from_levels computes each value as float(level) * step in float32, exactly as a dequantized
//     float32 model does (one rounding), so outputs match that model to float summation order.
//   - Counts and offsets are 32-bit: at most 2^32 - 1 explicit entries and groups per matrix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "nnpress/status.h"

namespace nnpress::sparse {

enum class Format : int { kCER = 0, kCSER = 1, kCodebook = 2, kDense = 3 };  // kDense: only from choose_format
const char* format_name(Format f);  // "cer", "cser", "codebook", "dense"

constexpr uint32_t kMaxValues = 65536;      // distinct values a CER/CSER matrix may hold
constexpr uint32_t kCodebookSize = 16;      // table entries of the dense-codebook layout
constexpr uint32_t kCodebookBlockCols = 32;  // columns per 16-byte block
constexpr uint32_t kCol16Limit = 65536;     // cols <= this: 16-bit column indices

// Plain arrays describing a CER/CSER matrix (input of from_arrays; every index 32-bit here).
struct RowGroupArrays {
  Format format = Format::kCSER;
  uint32_t rows = 0, cols = 0;
  std::vector<float> omega;
  std::vector<uint32_t> col, group_ptr, row_ptr;
  std::vector<uint32_t> group_value;  // CSER only (empty for CER)
};

class RowGroupMatrix {
 public:
  RowGroupMatrix();  // 0 x 0, valid

  // Builds from a dense row-major float matrix (any number of distinct values up to max_values;
  // max_values 0 or above kMaxValues means kMaxValues).
  static Status from_dense(Format format, const float* w, uint32_t rows, uint32_t cols, RowGroupMatrix* out,
                           uint32_t max_values = kMaxValues);
  // Builds from integer levels: W = float(level) * step. step must be finite and > 0.
  static Status from_levels(Format format, const int32_t* levels, uint32_t rows, uint32_t cols, float step,
                            RowGroupMatrix* out, uint32_t max_values = kMaxValues);
  // Validates and adopts the arrays (kCorrupt with a message for any inconsistency).
  static Status from_arrays(RowGroupArrays arrays, RowGroupMatrix* out);
  // Checks every invariant of CONTRACT; the objects this class hands out always pass.
  static Status validate(const RowGroupArrays& a);

  Format format() const { return format_; }
  uint32_t rows() const { return rows_; }
  uint32_t cols() const { return cols_; }
  uint64_t nnz() const { return wide() ? col32_.size() : col16_.size(); }  // explicit entries
  uint64_t num_groups() const { return group_ptr_.size() - 1; }
  bool wide() const { return cols_ > kCol16Limit; }  // 32-bit column indices
  const std::vector<float>& omega() const { return omega_; }
  const std::vector<float>& omega_delta() const { return delta_; }  // omega[k] - omega[0]
  const std::vector<uint16_t>& col16() const { return col16_; }
  const std::vector<uint32_t>& col32() const { return col32_; }
  const std::vector<uint32_t>& group_ptr() const { return group_ptr_; }
  const std::vector<uint32_t>& row_ptr() const { return row_ptr_; }
  const std::vector<uint8_t>& group_value8() const { return gv8_; }
  const std::vector<uint16_t>& group_value16() const { return gv16_; }
  uint32_t column(uint64_t k) const { return wide() ? col32_[k] : col16_[k]; }
  // Ω index of group g, which belongs to row r.
  uint32_t group_value(uint64_t g, uint32_t r) const;
  // Bytes of all arrays (Ω as float32, indices at their stored width).
  size_t nbytes() const;
  RowGroupArrays arrays() const;  // a 32-bit copy
  void to_dense(float* out) const;  // rows * cols floats, row-major

  // Kernel plan for batch-1 products with short groups (derived from the arrays above by from_arrays,
  // not part of the format): built when |Ω| <= kStartsMaxValues, columns are 16-bit, there are fewer
  // than 2^31 entries and the non-empty
  // groups average <= kStartsMaxMean entries (kStartsMaxMeanWide with more than 16 values, whose kernel
  // loads the group values: beyond these means the group loop is the faster kernel); has_starts() says
  // whether it exists. Bit k of
  // starts() (byte k / 8, bit k % 8; kStartsPad zero bytes of slack) is set when entry k is the first of its group;
  // start_values()[i] is the Ω index of the i-th non-empty group (CSER without empty groups: group_value8 itself);
  // row_starts()[r] = group_ptr[row_ptr[r]], each row's first entry. With |Ω| <= kEntryValuesMax the plan also
  // holds entry_values(): entry_values()[k] is the Ω index of entry k's group (one byte per entry, kStartsPad zero
  // bytes of slack; empty otherwise), read by the AVX2 row-wise kernel. plan_bytes() = the bytes it adds (0
  // without a plan).
  static constexpr uint32_t kStartsMaxValues = 256, kStartsMaxMean = 8, kStartsMaxMeanWide = 3, kStartsPad = 8;
  static constexpr uint32_t kEntryValuesMax = 16;
  bool has_starts() const { return !starts_.empty(); }
  const std::vector<uint8_t>& starts() const { return starts_; }
  const uint8_t* start_values() const { return start_values_.empty() ? gv8_.data() : start_values_.data(); }
  uint64_t num_starts() const { return num_starts_; }
  const std::vector<uint32_t>& row_starts() const { return row_starts_; }  // group_ptr[row_ptr[r]], r <= rows
  // The entry before which each entry's group has at least 7 non-empty groups after it (0 if < 8).
  uint32_t starts_safe_end() const { return starts_safe_end_; }
  const std::vector<uint8_t>& entry_values() const { return entry_values_; }
  size_t plan_bytes() const {
    return starts_.size() + start_values_.size() + row_starts_.size() * 4 + entry_values_.size();
  }

 private:
  void build_plan();
  Format format_ = Format::kCSER;
  uint32_t rows_ = 0, cols_ = 0;
  std::vector<float> omega_, delta_;
  std::vector<uint16_t> col16_;
  std::vector<uint32_t> col32_, group_ptr_, row_ptr_;
  std::vector<uint8_t> gv8_;
  std::vector<uint16_t> gv16_;
  std::vector<uint8_t> starts_, start_values_, entry_values_;  // kernel plan (build_plan)
  std::vector<uint32_t> row_starts_;
  uint64_t num_starts_ = 0;
  uint32_t starts_safe_end_ = 0;
};

class CodebookMatrix {
 public:
  CodebookMatrix() = default;  // 0 x 0
  // At most 16 distinct values (kInvalidArgument otherwise). lut in Ω order (most frequent first).
  static Status from_dense(const float* w, uint32_t rows, uint32_t cols, CodebookMatrix* out);
  static Status from_levels(const int32_t* levels, uint32_t rows, uint32_t cols, float step, CodebookMatrix* out);
  // lut: 1..16 finite values (padded with 0 to 16); packed: rows * row_bytes(cols) bytes
  // (kCorrupt otherwise). Any nibble is accepted: an index >= lut.size() reads 0.0, and padding
  // columns only ever meet zero inputs (kernels.h).
  static Status from_arrays(uint32_t rows, uint32_t cols, std::vector<float> lut, std::vector<uint8_t> packed,
                            CodebookMatrix* out);
  static size_t row_bytes(uint32_t cols) {
    return size_t((uint64_t(cols) + kCodebookBlockCols - 1) / kCodebookBlockCols) * 16;
  }

  uint32_t rows() const { return rows_; }
  uint32_t cols() const { return cols_; }
  uint32_t num_values() const { return num_values_; }
  const float* lut() const { return lut_; }  // 16 entries
  const std::vector<uint8_t>& packed() const { return packed_; }
  uint32_t index(uint32_t r, uint32_t c) const;  // value index of W[r, c]
  size_t nbytes() const { return packed_.size() + sizeof(float) * num_values_; }
  void to_dense(float* out) const;

 private:
  uint32_t rows_ = 0, cols_ = 0, num_values_ = 1;
  alignas(64) float lut_[kCodebookSize] = {};
  std::vector<uint8_t> packed_;
};

// Distinct values of w (n entries) in Ω order, and each entry's Ω index. kInvalidArgument for
// NaN/Inf or more than max_values distinct values.
Status index_values(const float* w, size_t n, uint32_t max_values, std::vector<float>* omega,
                    std::vector<uint32_t>* index);

}  // namespace nnpress::sparse
