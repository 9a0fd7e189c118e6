// LutMatrix: building and checking it (from levels, a LevelMatrix or a .nnp tensor) and the product's
// dispatch (argument checks, ISA choice, threads over rows, column and row scales); see
// nnpress/kernels/lut.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "../common/parallel.h"
#include "lut_internal.h"
#include "nnpress/kernels/lut.h"
#include "scale_checks.h"

namespace nnpress::levels {
namespace detail {
#ifndef NNPRESS_HAVE_AVX2_TU
LutKernel avx2_lut_kernel() { return nullptr; }
#endif
#ifndef NNPRESS_HAVE_AVX512_TU
LutKernel avx512_lut_kernel() { return nullptr; }
#endif
#ifndef NNPRESS_HAVE_NEON_TU
LutKernel neon_lut_kernel() { return nullptr; }
#endif
}  // namespace detail

namespace {

Status check_scales(const float* s, uint32_t n, const char* what) {
  return detail::check_scales("LutMatrix", s, n, what);
}

uint8_t* alloc_aligned(size_t bytes) {
  return static_cast<uint8_t*>(::operator new[](std::max<size_t>(bytes, 1), std::align_val_t(LutMatrix::kAlign)));
}

size_t code_index(uint32_t j) { return size_t(j / 32) * 16 + j % 16; }
unsigned code_shift(uint32_t j) { return j % 32 < 16 ? 0 : 4; }

}  // namespace

void LutMatrix::FreeAligned::operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }

LutMatrix::LutMatrix(const LutMatrix& o)
    : rows_(o.rows_),
      cols_(o.cols_),
      max_values_(o.max_values_),
      code_stride_(o.code_stride_),
      tables_at_(o.tables_at_),
      row_scale_(o.row_scale_),
      col_scale_(o.col_scale_) {
  if (o.data_) {
    data_.reset(alloc_aligned(o.data_bytes()));
    std::memcpy(data_.get(), o.data_.get(), o.data_bytes());
  }
}

LutMatrix& LutMatrix::operator=(const LutMatrix& o) {
  if (this != &o) {
    LutMatrix copy(o);
    *this = std::move(copy);
  }
  return *this;
}

size_t LutMatrix::nbytes() const {
  return (data_ ? data_bytes() : 0) + (row_scale_.size() + col_scale_.size()) * sizeof(float);
}

// row(ctx, r, buf) writes row r's cols indices into buf (one copy of this code for every source).
Status LutMatrix::build(uint32_t rows, uint32_t cols, RowFn row, const void* ctx, const float* row_scale,
                        const float* col_scale, LutMatrix* out) {
  if (out == nullptr) return invalid_argument("LutMatrix: null output");
  if (rows == 0 || cols == 0)
    return invalid_argument("LutMatrix: " + std::to_string(rows) + " x " + std::to_string(cols) +
                            " matrix (rows and cols must be >= 1)");
  if (row_scale == nullptr) return invalid_argument("LutMatrix: null row_scale");
  Status s = check_scales(row_scale, rows, "row_scale");
  if (s.ok() && col_scale != nullptr) s = check_scales(col_scale, cols, "col_scale");
  if (!s.ok()) return s;
  const size_t stride = (size_t(cols) + kBlockCols - 1) / kBlockCols * kBlockBytes;
  if (size_t(rows) > (std::numeric_limits<size_t>::max() / 2 - kAlign) / (stride + kMaxValues * sizeof(float)))
    return limit_exceeded("LutMatrix: matrix too large for this machine");

  LutMatrix m;
  m.rows_ = rows, m.cols_ = cols, m.code_stride_ = stride;
  m.tables_at_ = (size_t(rows) * stride + kAlign - 1) / kAlign * kAlign;
  m.data_.reset(alloc_aligned(m.data_bytes()));
  std::memset(m.data_.get(), 0, m.data_bytes());
  std::vector<int32_t> buf(cols);
  for (uint32_t r = 0; r < rows; ++r) {
    row(ctx, r, buf.data());
    // the row's distinct values, ascending (at most 16)
    int32_t vals[kMaxValues];
    uint32_t n = 0;
    for (uint32_t j = 0; j < cols; ++j) {
      const int32_t v = buf[j];
      uint32_t k = 0;
      while (k < n && vals[k] < v) ++k;
      if (k < n && vals[k] == v) continue;
      if (n == kMaxValues)
        return invalid_argument("LutMatrix: row " + std::to_string(r) + " holds more than " +
                                std::to_string(kMaxValues) + " distinct values");
      if (v > kMaxIndex || v < -kMaxIndex)
        return invalid_argument("LutMatrix: row " + std::to_string(r) + " holds index " + std::to_string(v) +
                                ", beyond +-2^24 (its float32 table entry would be rounded)");
      std::memmove(vals + k + 1, vals + k, (n - k) * sizeof(int32_t));
      vals[k] = v;
      ++n;
    }
    m.max_values_ = std::max(m.max_values_, n);
    float* table = reinterpret_cast<float*>(m.data_.get() + m.tables_at_) + size_t(r) * kMaxValues;
    for (uint32_t k = 0; k < n; ++k) table[k] = float(vals[k]);
    uint8_t* codes = m.data_.get() + size_t(r) * stride;
    for (uint32_t j = 0; j < cols; ++j) {
      const uint32_t c = uint32_t(std::lower_bound(vals, vals + n, buf[j]) - vals);
      codes[code_index(j)] |= uint8_t(c << code_shift(j));
    }
  }
  m.row_scale_.assign(row_scale, row_scale + rows);
  if (col_scale != nullptr) m.col_scale_.assign(col_scale, col_scale + cols);
  *out = std::move(m);
  return Status::Ok();
}

Status LutMatrix::from_levels(uint32_t rows, uint32_t cols, const int32_t* u, const float* row_scale,
                              const float* col_scale, LutMatrix* out) {
  if (u == nullptr) return invalid_argument("LutMatrix::from_levels: null levels");
  struct Src {
    const int32_t* u;
    uint32_t cols;
  } src{u, cols};
  const RowFn row = [](const void* ctx, uint32_t r, int32_t* buf) {
    const Src& s = *static_cast<const Src*>(ctx);
    std::memcpy(buf, s.u + size_t(r) * s.cols, s.cols * sizeof(int32_t));
  };
  return build(rows, cols, row, &src, row_scale, col_scale, out);
}

Status LutMatrix::from_level_matrix(const LevelMatrix& lm, LutMatrix* out) {
  if (lm.rows() == 0) return invalid_argument("LutMatrix::from_level_matrix: empty LevelMatrix");
  const RowFn row = [](const void* ctx, uint32_t r, int32_t* buf) {
    const LevelMatrix& lm = *static_cast<const LevelMatrix*>(ctx);
    const size_t at = size_t(r) * lm.stride();
    for (uint32_t j = 0; j < lm.cols(); ++j) buf[j] = lm.q8() ? lm.q8()[at + j] : lm.q16()[at + j];
    if (!lm.outlier_ptr().empty()) {
      for (uint64_t k = lm.outlier_ptr()[r]; k < lm.outlier_ptr()[size_t(r) + 1]; ++k)
        buf[lm.outlier_col()[k]] = lm.outlier_val()[k];
    }
  };
  return build(lm.rows(), lm.cols(), row, &lm, lm.row_scale().data(),
               lm.has_col_scale() ? lm.col_scale().data() : nullptr, out);
}

void LutMatrix::indices(int32_t* out) const {
  for (uint32_t r = 0; r < rows_; ++r) {
    const uint8_t* codes = data_.get() + size_t(r) * code_stride_;
    const float* table = tables() + size_t(r) * kMaxValues;
    for (uint32_t j = 0; j < cols_; ++j)
      out[size_t(r) * cols_ + j] = int32_t(table[(codes[code_index(j)] >> code_shift(j)) & 15]);
  }
}

void LutMatrix::to_dense(float* out) const {
  for (uint32_t r = 0; r < rows_; ++r) {
    const uint8_t* codes = data_.get() + size_t(r) * code_stride_;
    const float* table = tables() + size_t(r) * kMaxValues;
    for (uint32_t j = 0; j < cols_; ++j) {
      const double u = table[(codes[code_index(j)] >> code_shift(j)) & 15];
      const double c = col_scale_.empty() ? 1.0 : double(col_scale_[j]);
      out[size_t(r) * cols_ + j] = float(double(row_scale_[r]) * c * u);
    }
  }
}

// ---- products ----

Status matmul(const LutMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const LevelKernelOptions& opt) {
  if (m.rows() == 0) return invalid_argument("levels::matmul: empty LutMatrix (build it with from_levels)");
  if (batch == 0) return invalid_argument("levels::matmul: batch must be >= 1");
  const size_t rows = m.rows(), cols = m.cols();
  if (batch > std::numeric_limits<size_t>::max() / std::max(rows, cols))
    return invalid_argument("levels::matmul: batch too large");
  if (x_len != batch * cols || y_len != batch * rows)
    return invalid_argument("levels::matmul: input has " + std::to_string(x_len) + " floats and output " +
                            std::to_string(y_len) + ", expected " + std::to_string(batch * cols) +
                            " (batch x cols) and " + std::to_string(batch * rows) + " (batch x rows)");
  if (X == nullptr || Y == nullptr) return invalid_argument("levels::matmul: null buffer");
  if (opt.activations != Activations::kFloat32)
    return invalid_argument("levels::matmul: a LutMatrix takes float32 activations only");
  if (!opt.isa) {
    Status e = isa_env_status();
    if (!e.ok()) return e;
  }
  const Isa isa = opt.isa ? *opt.isa : detect_isa();
  if (!isa_supported(isa))
    return invalid_argument(std::string("levels::matmul: ISA '") + isa_name(isa) +
                            "' is not available on this CPU/build");
  detail::LutKernel kernel = nullptr;
  if (isa == Isa::kAvx512) kernel = detail::avx512_lut_kernel();
  if (isa == Isa::kAvx2) kernel = detail::avx2_lut_kernel();
  if (isa == Isa::kNeon) kernel = detail::neon_lut_kernel();
  if (kernel == nullptr) kernel = detail::scalar_lut_kernel();

  const float* xs = X;
  std::vector<float> scaled;
  if (m.has_col_scale()) {
    scaled.resize(batch * cols);
    const float* cs = m.col_scale().data();
    for (size_t b = 0; b < batch; ++b) {
      for (size_t j = 0; j < cols; ++j) scaled[b * cols + j] = X[b * cols + j] * cs[j];
    }
    xs = scaled.data();
  }
  const detail::LutView v{m.rows(), m.cols(), m.code_stride(), m.codes(), m.tables()};
  const float* rs = m.row_scale().data();
  // multiply-adds below which one more thread does not pay (as the level kernels)
  constexpr uint64_t kWorkPerThread = uint64_t(1) << 18;
  nnpress::detail::parallel_rows(m.rows(), opt.threads, uint64_t(rows) * cols * batch, kWorkPerThread,
                                 [&](uint32_t r0, uint32_t r1) {
                                   kernel(v, xs, batch, Y, r0, r1);
                                   for (size_t b = 0; b < batch; ++b) {
                                     float* y = Y + b * rows;
                                     for (uint32_t r = r0; r < r1; ++r) y[r] *= rs[r];
                                   }
                                 });
  return Status::Ok();
}

// ---- from a .nnp tensor ----
Status lut_matrix_from_reader(const ContainerReader& reader, size_t index, LutMatrix* out, unsigned threads) {
  if (out == nullptr) return invalid_argument("lut_matrix_from_reader: null output");
  LevelMatrix lm;
  Status s = level_matrix_from_reader(reader, index, &lm, threads);
  if (!s.ok()) return s;
  s = LutMatrix::from_level_matrix(lm, out);
  if (!s.ok()) return Status(s.code(), "tensor '" + reader.tensor(index).name + "': " + s.message());
  return Status::Ok();
}

}  // namespace nnpress::levels
