// CER / CSER / dense-codebook containers: builders, validation, to_dense (see nnpress/sparse/matrix.h).
#include "nnpress/sparse/matrix.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

namespace nnpress::sparse {

const char* format_name(Format f) {
  switch (f) {
    case Format::kCER: return "cer";
    case Format::kCSER: return "cser";
    case Format::kCodebook: return "codebook";
    case Format::kDense: return "dense";
  }
  return "unknown";
}

namespace {

uint32_t float_bits(float v) {
  if (v == 0.0f) v = 0.0f;  // -0.0 -> +0.0
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

std::string where(uint64_t i) { return std::to_string(i); }

Status levels_to_values(const int32_t* levels, size_t n, float step, std::vector<float>* out) {
  if (!(std::isfinite(step) && step > 0.0f)) return invalid_argument("from_levels: step must be finite and > 0");
  out->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const float v = float(levels[i]) * step;
    if (!std::isfinite(v)) return invalid_argument("from_levels: level * step overflows at element " + where(i));
    (*out)[i] = v;
  }
  return Status::Ok();
}

Status check_shape(const float* w, uint32_t rows, uint32_t cols, const char* what) {
  if (w == nullptr && uint64_t(rows) * cols != 0) return invalid_argument(std::string(what) + ": null matrix");
  return Status::Ok();
}

}  // namespace

Status index_values(const float* w, size_t n, uint32_t max_values, std::vector<float>* omega,
                    std::vector<uint32_t>* index) {
  std::unordered_map<uint32_t, uint32_t> id;  // float bits -> provisional id
  std::vector<float> values;
  std::vector<uint64_t> counts;
  index->resize(n);
  uint32_t last_bits = 0, last_id = 0;
  bool have_last = false;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(w[i])) return invalid_argument("matrix entry " + where(i) + " is not finite");
    const uint32_t b = float_bits(w[i]);
    uint32_t k;
    if (have_last && b == last_bits) {
      k = last_id;
    } else {
      auto it = id.find(b);
      if (it == id.end()) {
        if (values.size() >= max_values) {
          return invalid_argument("matrix has more than " + std::to_string(max_values) + " distinct values");
        }
        k = uint32_t(values.size());
        id.emplace(b, k);
        values.push_back(w[i] == 0.0f ? 0.0f : w[i]);
        counts.push_back(0);
      } else {
        k = it->second;
      }
      last_bits = b, last_id = k, have_last = true;
    }
    ++counts[k];
    (*index)[i] = k;
  }
  if (values.empty()) {  // empty matrix: Ω = {0}
    omega->assign(1, 0.0f);
    return Status::Ok();
  }
  std::vector<uint32_t> order(values.size());
  for (uint32_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    if (counts[a] != counts[b]) return counts[a] > counts[b];
    return values[a] < values[b];
  });
  std::vector<uint32_t> rank(values.size());
  omega->resize(values.size());
  for (uint32_t r = 0; r < order.size(); ++r) {
    rank[order[r]] = r;
    (*omega)[r] = values[order[r]];
  }
  for (size_t i = 0; i < n; ++i) (*index)[i] = rank[(*index)[i]];
  return Status::Ok();
}

// ---------------------------------------------------------------- RowGroupMatrix

RowGroupMatrix::RowGroupMatrix() : omega_(1, 0.0f), delta_(1, 0.0f), group_ptr_(1, 0), row_ptr_(1, 0) {}

uint32_t RowGroupMatrix::group_value(uint64_t g, uint32_t r) const {
  if (format_ == Format::kCER) return uint32_t(1 + (g - row_ptr_[r]));
  return gv8_.empty() ? gv16_[g] : gv8_[g];
}

size_t RowGroupMatrix::nbytes() const {
  return omega_.size() * sizeof(float) + col16_.size() * 2 + col32_.size() * 4 + group_ptr_.size() * 4 +
         row_ptr_.size() * 4 + gv8_.size() + gv16_.size() * 2;
}

RowGroupArrays RowGroupMatrix::arrays() const {
  RowGroupArrays a;
  a.format = format_, a.rows = rows_, a.cols = cols_, a.omega = omega_;
  if (wide()) {
    a.col = col32_;
  } else {
    a.col.assign(col16_.begin(), col16_.end());
  }
  a.group_ptr = group_ptr_, a.row_ptr = row_ptr_;
  if (format_ == Format::kCSER) {
    if (gv8_.empty()) {
      a.group_value.assign(gv16_.begin(), gv16_.end());
    } else {
      a.group_value.assign(gv8_.begin(), gv8_.end());
    }
  }
  return a;
}

void RowGroupMatrix::to_dense(float* out) const {
  const size_t n = size_t(rows_) * cols_;
  std::fill(out, out + n, omega_[0]);
  for (uint32_t r = 0; r < rows_; ++r) {
    for (uint64_t g = row_ptr_[r]; g < row_ptr_[r + 1]; ++g) {
      const float v = omega_[group_value(g, r)];
      for (uint64_t k = group_ptr_[g]; k < group_ptr_[g + 1]; ++k) out[size_t(r) * cols_ + column(k)] = v;
    }
  }
}

Status RowGroupMatrix::validate(const RowGroupArrays& a) {
  const bool cser = a.format == Format::kCSER;
  if (a.format != Format::kCER && !cser) return corrupt("row-group matrix: format must be CER or CSER");
  const size_t nv = a.omega.size();
  if (nv == 0 || nv > kMaxValues)
    return corrupt("row-group matrix: omega must hold 1.." + std::to_string(kMaxValues) + " values, has " + where(nv));
  for (size_t k = 0; k < nv; ++k) {
    if (!std::isfinite(a.omega[k])) return corrupt("row-group matrix: omega[" + where(k) + "] is not finite");
  }
  if (a.row_ptr.size() != size_t(a.rows) + 1) {
    return corrupt("row-group matrix: row_ptr has " + where(a.row_ptr.size()) +
                   " entries, expected rows + 1 = " + where(uint64_t(a.rows) + 1));
  }
  if (a.group_ptr.empty()) return corrupt("row-group matrix: group_ptr is empty");
  const uint64_t ngroups = a.group_ptr.size() - 1;
  if (ngroups > 0xFFFFFFFFull || a.col.size() > 0xFFFFFFFFull)
    return corrupt("row-group matrix: more than 2^32 - 1 groups or entries");
  if (a.row_ptr[0] != 0) return corrupt("row-group matrix: row_ptr[0] is not 0");
  for (uint32_t r = 0; r < a.rows; ++r) {
    if (a.row_ptr[r + 1] < a.row_ptr[r]) return corrupt("row-group matrix: row_ptr decreases at row " + where(r));
  }
  if (a.row_ptr[a.rows] != ngroups) {
    return corrupt("row-group matrix: row_ptr ends at " + where(a.row_ptr[a.rows]) + " but there are " +
                   where(ngroups) + " groups");
  }
  if (a.group_ptr[0] != 0) return corrupt("row-group matrix: group_ptr[0] is not 0");
  for (uint64_t g = 0; g < ngroups; ++g) {
    if (a.group_ptr[g + 1] < a.group_ptr[g])
      return corrupt("row-group matrix: group_ptr decreases at group " + where(g));
  }
  if (a.group_ptr[ngroups] != a.col.size()) {
    return corrupt("row-group matrix: group_ptr ends at " + where(a.group_ptr[ngroups]) + " but there are " +
                   where(a.col.size()) + " column indices");
  }
  if (cser) {
    if (a.group_value.size() != ngroups) {
      return corrupt("CSER matrix: group_value has " + where(a.group_value.size()) + " entries, expected " +
                     where(ngroups));
    }
  } else if (!a.group_value.empty()) {
    return corrupt("CER matrix: group_value must be empty");
  }
  std::vector<uint32_t> seen(a.cols, 0xFFFFFFFFu);
  for (uint32_t r = 0; r < a.rows; ++r) {
    const uint64_t g0 = a.row_ptr[r], g1 = a.row_ptr[r + 1];
    if (!cser && g1 - g0 > nv - 1) {
      return corrupt("CER matrix: row " + where(r) + " has " + where(g1 - g0) + " groups but omega has only " +
                     where(nv - 1) + " explicit values");
    }
    uint32_t prev_value = 0;
    for (uint64_t g = g0; g < g1; ++g) {
      if (cser) {
        const uint32_t v = a.group_value[g];
        if (v == 0 || v >= nv)
          return corrupt("CSER matrix: group " + where(g) + " has value index " + where(v) + ", outside 1.." +
                         where(nv - 1));
        if (v <= prev_value)
          return corrupt("CSER matrix: value indices do not ascend in row " + where(r) + " at group " + where(g));
        prev_value = v;
      }
      for (uint64_t k = a.group_ptr[g]; k < a.group_ptr[g + 1]; ++k) {
        const uint32_t c = a.col[k];
        if (c >= a.cols)
          return corrupt("row-group matrix: column index " + where(c) + " at entry " + where(k) + " is outside 0.." +
                         where(uint64_t(a.cols) - 1));
        if (seen[c] == r) return corrupt("row-group matrix: column " + where(c) + " appears twice in row " + where(r));
        seen[c] = r;
      }
    }
  }
  return Status::Ok();
}

Status RowGroupMatrix::from_arrays(RowGroupArrays a, RowGroupMatrix* out) {
  Status s = validate(a);
  if (!s.ok()) return s;
  RowGroupMatrix m;
  m.format_ = a.format, m.rows_ = a.rows, m.cols_ = a.cols;
  m.omega_ = std::move(a.omega);
  m.delta_.resize(m.omega_.size());
  for (size_t k = 0; k < m.omega_.size(); ++k) m.delta_[k] = k == 0 ? 0.0f : m.omega_[k] - m.omega_[0];
  if (m.wide()) {
    m.col32_ = std::move(a.col);
  } else {
    m.col16_.assign(a.col.begin(), a.col.end());
  }
  m.group_ptr_ = std::move(a.group_ptr);
  m.row_ptr_ = std::move(a.row_ptr);
  if (a.format == Format::kCSER) {
    if (m.omega_.size() <= 256) {
      m.gv8_.assign(a.group_value.begin(), a.group_value.end());
    } else {
      m.gv16_.assign(a.group_value.begin(), a.group_value.end());
    }
  }
  m.build_plan();
  *out = std::move(m);
  return Status::Ok();
}

void RowGroupMatrix::build_plan() {
  starts_.clear(), start_values_.clear(), entry_values_.clear(), row_starts_.clear(), num_starts_ = 0,
                                                                                      starts_safe_end_ = 0;
  const uint64_t entries = nnz(), groups = num_groups();
  uint64_t nonempty = 0;
  for (uint64_t g = 0; g < groups; ++g) nonempty += group_ptr_[g + 1] > group_ptr_[g];
  const uint32_t max_mean = omega_.size() > 16 ? kStartsMaxMeanWide : kStartsMaxMean;
  // Entries < 2^31: the kernel counts entries and groups in 32-bit (signed for groups) arithmetic.
  if (wide() || omega_.size() > kStartsMaxValues || entries == 0 || entries >= (uint64_t(1) << 31) ||
      entries > uint64_t(max_mean) * nonempty) {
    return;
  }
  starts_.assign(size_t(entries / 8) + kStartsPad, 0);
  row_starts_.resize(size_t(rows_) + 1);
  for (uint32_t r = 0; r <= rows_; ++r) row_starts_[r] = group_ptr_[row_ptr_[r]];
  const bool copy_values = format_ == Format::kCER || nonempty != groups;
  if (copy_values) start_values_.reserve(size_t(nonempty));
  const bool entry_values = omega_.size() <= kEntryValuesMax;
  if (entry_values) entry_values_.assign(size_t(entries) + kStartsPad, 0);
  for (uint32_t r = 0; r < rows_; ++r) {
    for (uint32_t g = row_ptr_[r]; g < row_ptr_[r + 1]; ++g) {
      const uint32_t k = group_ptr_[g];
      if (group_ptr_[g + 1] == k) continue;
      starts_[k >> 3] = uint8_t(starts_[k >> 3] | (1u << (k & 7)));
      if (entry_values)
        std::fill(entry_values_.begin() + k, entry_values_.begin() + group_ptr_[g + 1], uint8_t(group_value(g, r)));
      if (copy_values) start_values_.push_back(uint8_t(group_value(g, r)));
      if (num_starts_++ == nonempty - 7 && nonempty >= 8) starts_safe_end_ = k;  // start of group N - 7
    }
  }
}

namespace {

// Groups the Ω indices of a rows x cols matrix into CER/CSER arrays.
RowGroupArrays group_rows(Format format, const std::vector<uint32_t>& idx, std::vector<float> omega, uint32_t rows,
                          uint32_t cols) {
  RowGroupArrays a;
  a.format = format, a.rows = rows, a.cols = cols, a.omega = std::move(omega);
  const uint32_t nv = uint32_t(a.omega.size());
  std::vector<uint32_t> count(nv, 0), start(nv, 0), present;
  a.row_ptr.reserve(size_t(rows) + 1);
  a.row_ptr.push_back(0);
  a.group_ptr.push_back(0);
  for (uint32_t r = 0; r < rows; ++r) {
    const uint32_t* row = idx.data() + size_t(r) * cols;
    present.clear();
    for (uint32_t c = 0; c < cols; ++c) {
      const uint32_t k = row[c];
      if (k != 0 && count[k]++ == 0) present.push_back(k);
    }
    std::sort(present.begin(), present.end());
    const uint32_t first = uint32_t(a.col.size());
    if (format == Format::kCER) {
      const uint32_t top = present.empty() ? 0 : present.back();
      uint32_t off = first;
      for (uint32_t k = 1; k <= top; ++k) {
        start[k] = off;
        off += count[k];
        a.group_ptr.push_back(off);
      }
    } else {
      uint32_t off = first;
      for (uint32_t k : present) {
        start[k] = off;
        off += count[k];
        a.group_ptr.push_back(off);
        a.group_value.push_back(k);
      }
    }
    uint32_t row_nnz = 0;
    for (uint32_t k : present) row_nnz += count[k];
    a.col.resize(size_t(first) + row_nnz);
    for (uint32_t c = 0; c < cols; ++c) {
      const uint32_t k = row[c];
      if (k != 0) a.col[start[k]++] = c;
    }
    for (uint32_t k : present) count[k] = 0;
    a.row_ptr.push_back(uint32_t(a.group_ptr.size() - 1));
  }
  return a;
}

Status build_rows(Format format, const float* w, uint32_t rows, uint32_t cols, RowGroupMatrix* out,
                  uint32_t max_values) {
  if (format != Format::kCER && format != Format::kCSER)
    return invalid_argument("row-group matrix: format must be CER or CSER");
  Status s = check_shape(w, rows, cols, "from_dense");
  if (!s.ok()) return s;
  const uint64_t n = uint64_t(rows) * cols;
  if (max_values == 0 || max_values > kMaxValues) max_values = kMaxValues;
  std::vector<float> omega;
  std::vector<uint32_t> idx;
  s = index_values(w, size_t(n), max_values, &omega, &idx);
  if (!s.ok()) return s;
  uint64_t explicit_entries = 0;
  for (uint32_t k : idx) explicit_entries += k != 0;
  if (explicit_entries > 0xFFFFFFFFull) return limit_exceeded("row-group matrix: more than 2^32 - 1 explicit entries");
  return RowGroupMatrix::from_arrays(group_rows(format, idx, std::move(omega), rows, cols), out);
}

}  // namespace

Status RowGroupMatrix::from_dense(Format format, const float* w, uint32_t rows, uint32_t cols, RowGroupMatrix* out,
                                  uint32_t max_values) {
  return build_rows(format, w, rows, cols, out, max_values);
}

Status RowGroupMatrix::from_levels(Format format, const int32_t* levels, uint32_t rows, uint32_t cols, float step,
                                   RowGroupMatrix* out, uint32_t max_values) {
  if (levels == nullptr && uint64_t(rows) * cols != 0) return invalid_argument("from_levels: null levels");
  std::vector<float> w;
  Status s = levels_to_values(levels, size_t(uint64_t(rows) * cols), step, &w);
  if (!s.ok()) return s;
  return build_rows(format, w.data(), rows, cols, out, max_values);
}

// ---------------------------------------------------------------- CodebookMatrix

uint32_t CodebookMatrix::index(uint32_t r, uint32_t c) const {
  const uint8_t* row = packed_.data() + size_t(r) * row_bytes(cols_);
  const uint32_t block = c / kCodebookBlockCols, j = c % kCodebookBlockCols;
  const uint8_t b = row[size_t(block) * 16 + (j & 15)];
  return j < 16 ? (b & 15u) : (b >> 4);
}

void CodebookMatrix::to_dense(float* out) const {
  for (uint32_t r = 0; r < rows_; ++r) {
    for (uint32_t c = 0; c < cols_; ++c) out[size_t(r) * cols_ + c] = lut_[index(r, c)];
  }
}

Status CodebookMatrix::from_arrays(uint32_t rows, uint32_t cols, std::vector<float> lut, std::vector<uint8_t> packed,
                                   CodebookMatrix* out) {
  if (lut.empty() || lut.size() > kCodebookSize)
    return corrupt("codebook matrix: lut must hold 1..16 values, has " + where(lut.size()));
  for (size_t k = 0; k < lut.size(); ++k) {
    if (!std::isfinite(lut[k])) return corrupt("codebook matrix: lut[" + where(k) + "] is not finite");
  }
  const uint64_t need = uint64_t(rows) * row_bytes(cols);
  if (packed.size() != need)
    return corrupt("codebook matrix: packed has " + where(packed.size()) + " bytes, expected " + where(need));
  CodebookMatrix m;
  m.rows_ = rows, m.cols_ = cols, m.num_values_ = uint32_t(lut.size());
  for (size_t k = 0; k < kCodebookSize; ++k) m.lut_[k] = k < lut.size() ? lut[k] : 0.0f;
  m.packed_ = std::move(packed);
  // Indices >= num_values read lut entries that are 0; any nibble is a valid index.
  *out = std::move(m);
  return Status::Ok();
}

Status CodebookMatrix::from_dense(const float* w, uint32_t rows, uint32_t cols, CodebookMatrix* out) {
  Status s = check_shape(w, rows, cols, "from_dense");
  if (!s.ok()) return s;
  std::vector<float> omega;
  std::vector<uint32_t> idx;
  s = index_values(w, size_t(uint64_t(rows) * cols), kCodebookSize, &omega, &idx);
  if (!s.ok()) {
    return invalid_argument("codebook layout needs at most 16 distinct values: " + s.message());
  }
  const size_t rb = row_bytes(cols);
  std::vector<uint8_t> packed(size_t(rows) * rb, 0);
  for (uint32_t r = 0; r < rows; ++r) {
    uint8_t* row = packed.data() + size_t(r) * rb;
    for (uint32_t c = 0; c < cols; ++c) {
      const uint32_t k = idx[size_t(r) * cols + c];
      const uint32_t block = c / kCodebookBlockCols, j = c % kCodebookBlockCols;
      row[size_t(block) * 16 + (j & 15)] |= uint8_t(j < 16 ? k : (k << 4));
    }
  }
  return from_arrays(rows, cols, std::move(omega), std::move(packed), out);
}

Status CodebookMatrix::from_levels(const int32_t* levels, uint32_t rows, uint32_t cols, float step,
                                   CodebookMatrix* out) {
  if (levels == nullptr && uint64_t(rows) * cols != 0) return invalid_argument("from_levels: null levels");
  std::vector<float> w;
  Status s = levels_to_values(levels, size_t(uint64_t(rows) * cols), step, &w);
  if (!s.ok()) return s;
  return from_dense(w.data(), rows, cols, out);
}

}  // namespace nnpress::sparse
