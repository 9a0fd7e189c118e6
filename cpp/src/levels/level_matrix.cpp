// LevelMatrix: building and checking it, building it from a .nnp tensor, and the product's dispatch
// (argument checks, ISA choice, threads over rows, column scales, list entries, row scales); see
// nnpress/kernels/levels.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define NNPRESS_LEVELS_X86_64 1
#endif

#include "../common/parallel.h"
#include "levels_internal.h"
#include "nnpress/kernels/levels.h"
#include "nnpress/quant/dequantize.h"
#include "scale_checks.h"

namespace nnpress::levels {
namespace detail {
#ifndef NNPRESS_HAVE_AVX2_TU
const LevelKernelTable* avx2_level_kernels() { return nullptr; }
#endif
#ifndef NNPRESS_HAVE_AVX512_TU
const LevelKernelTable* avx512_level_kernels() { return nullptr; }
#endif
#ifndef NNPRESS_HAVE_NEON_TU
const LevelKernelTable* neon_level_kernels() { return nullptr; }
#endif
}  // namespace detail

namespace {

using detail::positive_finite;

Status check_scales(const float* s, uint32_t n, const char* what) {
  return detail::check_scales("LevelMatrix", s, n, what);
}

uint64_t magnitude(int32_t u) { return u < 0 ? uint64_t(-int64_t(u)) : uint64_t(u); }

}  // namespace

void LevelMatrix::FreeAligned::operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(kRowAlign)); }

std::unique_ptr<uint8_t[], LevelMatrix::FreeAligned> LevelMatrix::alloc_dense(size_t bytes) {
  auto* p = static_cast<uint8_t*>(::operator new[](std::max<size_t>(bytes, 1), std::align_val_t(kRowAlign)));
  return std::unique_ptr<uint8_t[], FreeAligned>(p);
}

LevelMatrix::LevelMatrix(const LevelMatrix& o)
    : rows_(o.rows_),
      cols_(o.cols_),
      bits_(o.bits_),
      dense_max_(o.dense_max_),
      stride_(o.stride_),
      out_ptr_(o.out_ptr_),
      out_col_(o.out_col_),
      out_val_(o.out_val_),
      row_scale_(o.row_scale_),
      col_scale_(o.col_scale_) {
  if (o.dense_) {
    dense_ = alloc_dense(o.dense_bytes());
    std::memcpy(dense_.get(), o.dense_.get(), o.dense_bytes());
  }
}

LevelMatrix& LevelMatrix::operator=(const LevelMatrix& o) {
  if (this != &o) {
    LevelMatrix copy(o);
    *this = std::move(copy);
  }
  return *this;
}

size_t LevelMatrix::nbytes() const {
  return (dense_ ? dense_bytes() : 0) + out_ptr_.size() * sizeof(uint64_t) + out_col_.size() * sizeof(uint32_t) +
         out_val_.size() * sizeof(int32_t) + (row_scale_.size() + col_scale_.size()) * sizeof(float);
}

Status LevelMatrix::from_levels(uint32_t rows, uint32_t cols, const int32_t* u, const float* row_scale,
                                const float* col_scale, LevelMatrix* out) {
  if (out == nullptr) return invalid_argument("LevelMatrix::from_levels: null output");
  if (u == nullptr && rows != 0 && cols != 0) return invalid_argument("LevelMatrix::from_levels: null levels");
  bool given = false;
  auto one_block = [&](uint32_t* first, uint32_t* n, const int32_t** block) {
    *first = 0, *n = given ? 0 : rows, *block = u;
    given = true;
    return Status::Ok();
  };
  return build("LevelMatrix::from_levels", rows, cols, one_block, row_scale, col_scale, out);
}

namespace {

// The int16 layout's range (kInt16Limit or the narrowest of kInt16DenseRanges) from the entries'
// counts beyond each: the narrowest that leaves at most 1/1024 of the entries to the list, so a
// smaller dense_max gives kInt16 activations a wider input range (activation_range) and a few
// entries beyond 2049 do not make the whole product fall back to float32.
size_t int16_range(const uint64_t (&beyond_range)[4], uint64_t count) {
  size_t k = 0;
  while (k < std::size(LevelMatrix::kInt16DenseRanges) && beyond_range[k] * 1024 > count) ++k;
  return k;  // kInt16DenseRanges[k], or kInt16Limit when k is past them
}

}  // namespace

// One pass over the blocks. The matrix starts int8 with a list of the entries beyond it; once that
// list holds more than 1/16 of all entries (the list costs 8 bytes and a scalar multiply-add per
// entry, the wider dense part one more byte per weight) the layout can only be int16, so the rows
// so far are widened and the rest is filled as int16, its list holding only what int16 cannot.
// At the end an int16 part is narrowed to its range (int16_range), moving the entries beyond it to
// the list. The result depends on u alone, not on how the rows are split into blocks.
Status LevelMatrix::from_row_blocks(uint32_t rows, uint32_t cols, const RowBlocks& next, const float* row_scale,
                                    const float* col_scale, LevelMatrix* out) {
  return build("LevelMatrix::from_row_blocks", rows, cols, next, row_scale, col_scale, out);
}

Status LevelMatrix::build(const char* who, uint32_t rows, uint32_t cols, const RowBlocks& next, const float* row_scale,
                          const float* col_scale, LevelMatrix* out) {
  const std::string name(who);
  if (out == nullptr) return invalid_argument(name + ": null output");
  if (rows == 0 || cols == 0)
    return invalid_argument(name + ": " + std::to_string(rows) + " x " + std::to_string(cols) +
                            " matrix (rows and cols must be >= 1)");
  if (row_scale == nullptr) return invalid_argument(name + ": null row_scale");
  Status s = check_scales(row_scale, rows, "row_scale");
  if (s.ok() && col_scale != nullptr) s = check_scales(col_scale, cols, "col_scale");
  if (!s.ok()) return s;
  const uint64_t count = uint64_t(rows) * cols;
  auto stride_for = [cols](int bits) {
    const size_t per_line = kRowAlign / size_t(bits / 8);
    return (size_t(cols) + per_line - 1) / per_line * per_line;
  };
  if (size_t(rows) > std::numeric_limits<size_t>::max() / 2 / stride_for(16))
    return limit_exceeded(name + ": matrix too large for this machine");

  LevelMatrix m;
  m.rows_ = rows, m.cols_ = cols, m.bits_ = 8, m.stride_ = stride_for(8);
  m.dense_ = alloc_dense(m.dense_bytes());
  std::memset(m.dense_.get(), 0, m.dense_bytes());
  m.out_ptr_.assign(size_t(rows) + 1, 0);
  uint64_t beyond_range[4] = {};
  // int8 -> int16 for rows [0, filled): the int8 values and the list entries int16 holds move to a
  // new int16 part; the list keeps those beyond int16.
  auto widen = [&m, &stride_for](uint32_t filled) {
    const size_t stride16 = stride_for(16);
    auto dense16 = alloc_dense(size_t(m.rows_) * stride16 * 2);
    std::memset(dense16.get(), 0, size_t(m.rows_) * stride16 * 2);
    int16_t* d = reinterpret_cast<int16_t*>(dense16.get());
    const int8_t* q = reinterpret_cast<const int8_t*>(m.dense_.get());
    size_t kept = 0;
    uint64_t k = 0;  // the next entry of the old list (its rows are consecutive)
    for (uint32_t r = 0; r < filled; ++r) {
      for (uint32_t j = 0; j < m.cols_; ++j) d[size_t(r) * stride16 + j] = q[size_t(r) * m.stride_ + j];
      for (const uint64_t end = m.out_ptr_[size_t(r) + 1]; k < end; ++k) {
        const int32_t v = m.out_val_[k];
        if (magnitude(v) > uint64_t(kInt16Limit)) {
          m.out_col_[kept] = m.out_col_[k], m.out_val_[kept] = v, ++kept;
        } else {
          d[size_t(r) * stride16 + m.out_col_[k]] = int16_t(v);
        }
      }
      m.out_ptr_[size_t(r) + 1] = kept;
    }
    m.out_col_.resize(kept), m.out_val_.resize(kept);
    m.dense_ = std::move(dense16);
    m.bits_ = 16, m.stride_ = stride16;
  };
  uint32_t done = 0;  // rows filled so far
  while (done < rows) {
    uint32_t first = 0, n = 0;
    const int32_t* u = nullptr;
    s = next(&first, &n, &u);
    if (!s.ok()) return s;
    if (n == 0 || first != done || n > rows - done || u == nullptr)
      return invalid_argument(name + ": blocks must cover rows 0.." + std::to_string(rows) + " in order (got " +
                              std::to_string(n) + " rows from row " + std::to_string(first) + " after " +
                              std::to_string(done) + ")");
    for (uint32_t r = first; r < first + n; ++r) {
      const int32_t* src = u + size_t(r - first) * cols;
      const uint64_t limit = m.bits_ == 8 ? uint64_t(kInt8Limit) : uint64_t(kInt16Limit);
      for (uint32_t j = 0; j < cols; ++j) {
        const int32_t v = src[j];
        const uint64_t a = magnitude(v);
        if (a > uint64_t(kInt8Limit)) {
          for (size_t k = 0; k < std::size(kInt16DenseRanges); ++k)
            beyond_range[k] += a > uint64_t(kInt16DenseRanges[k]);
        }
        if (a > limit) {
          m.out_col_.push_back(j);
          m.out_val_.push_back(v);
        } else if (m.bits_ == 8) {
          reinterpret_cast<int8_t*>(m.dense_.get())[size_t(r) * m.stride_ + j] = int8_t(v);
        } else {
          reinterpret_cast<int16_t*>(m.dense_.get())[size_t(r) * m.stride_ + j] = int16_t(v);
        }
      }
      m.out_ptr_[size_t(r) + 1] = m.out_col_.size();
      if (m.bits_ == 8 && m.out_col_.size() * 16 > count) widen(r + 1);
    }
    done += n;
  }
  // The int16 part narrowed to its range: entries beyond it join the list, in column order.
  const size_t range = int16_range(beyond_range, count);
  if (m.bits_ == 16 && range < std::size(kInt16DenseRanges)) {
    const uint64_t limit = uint64_t(kInt16DenseRanges[range]);
    std::vector<uint32_t> col;
    std::vector<int32_t> val;
    col.reserve(size_t(beyond_range[range])), val.reserve(size_t(beyond_range[range]));
    int16_t* d = reinterpret_cast<int16_t*>(m.dense_.get());
    uint64_t k = 0;  // the next entry of the old list (its rows are consecutive)
    for (uint32_t r = 0; r < rows; ++r) {
      const uint64_t end = m.out_ptr_[size_t(r) + 1];
      int16_t* row = d + size_t(r) * m.stride_;
      for (uint32_t j = 0; j < cols; ++j) {
        if (k < end && m.out_col_[k] == j) {
          col.push_back(j), val.push_back(m.out_val_[k++]);
        } else if (magnitude(row[j]) > limit) {
          col.push_back(j), val.push_back(row[j]);
          row[j] = 0;
        }
      }
      m.out_ptr_[size_t(r) + 1] = col.size();
    }
    m.out_col_ = std::move(col), m.out_val_ = std::move(val);
  }
  const uint8_t* dense = m.dense_.get();
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t j = 0; j < cols; ++j) {
      const int32_t v = m.bits_ == 8 ? reinterpret_cast<const int8_t*>(dense)[size_t(r) * m.stride_ + j]
                                     : reinterpret_cast<const int16_t*>(dense)[size_t(r) * m.stride_ + j];
      m.dense_max_ = std::max(m.dense_max_, int32_t(magnitude(v)));
    }
  }
  if (m.out_col_.empty()) {
    m.out_ptr_ = {};
  } else {
    m.out_col_.shrink_to_fit(), m.out_val_.shrink_to_fit();
  }
  m.row_scale_.assign(row_scale, row_scale + rows);
  if (col_scale != nullptr) m.col_scale_.assign(col_scale, col_scale + cols);
  *out = std::move(m);
  return Status::Ok();
}

static_assert(size_t(LevelMatrix::kActivationChunk) == detail::kLaneChunk, "one chunk length (levels.h, internal)");

int32_t LevelMatrix::activation_range() const {
  // every int32 partial sum of the kernels (kActivationChunk products of at most M * L each) fits int32
  const int64_t M = std::max<int32_t>(dense_max_, 1);
  const int64_t L = std::min<int64_t>(kInt16Limit,
                                      int64_t(std::numeric_limits<int32_t>::max()) / (kActivationChunk * M));
  return L >= kMinActivationRange ? int32_t(L) : 0;
}

void LevelMatrix::indices(int32_t* out) const {
  for (uint32_t r = 0; r < rows_; ++r) {
    int32_t* dst = out + size_t(r) * cols_;
    for (uint32_t j = 0; j < cols_; ++j)
      dst[j] = bits_ == 8 ? q8()[size_t(r) * stride_ + j] : q16()[size_t(r) * stride_ + j];
    if (!out_ptr_.empty()) {
      for (uint64_t k = out_ptr_[r]; k < out_ptr_[size_t(r) + 1]; ++k) dst[out_col_[k]] = out_val_[k];
    }
  }
}

void LevelMatrix::to_dense(float* out) const {
  indices(reinterpret_cast<int32_t*>(out));  // same size; converted in place below
  for (uint32_t r = 0; r < rows_; ++r) {
    float* dst = out + size_t(r) * cols_;
    for (uint32_t j = 0; j < cols_; ++j) {
      int32_t v;
      std::memcpy(&v, &dst[j], sizeof v);
      const double c = col_scale_.empty() ? 1.0 : double(col_scale_[j]);
      dst[j] = float(double(row_scale_[r]) * c * double(v));
    }
  }
}

// ---- products ----
namespace {

// Multiply-adds below which one more thread does not pay (waking a worker and waiting for it).
constexpr uint64_t kWorkPerThread = uint64_t(1) << 18;

template <class F>
void over_rows(uint32_t rows, unsigned threads, uint64_t work, F&& f) {
  nnpress::detail::parallel_rows(rows, threads, work, kWorkPerThread, std::forward<F>(f));
}

// AVX-512 VNNI (cpuid leaf 7, ECX bit 11); the OS state it needs is that of AVX-512 (isa_supported).
bool cpu_has_avx512_vnni() {
#ifdef NNPRESS_LEVELS_X86_64
  static const bool has = [] {
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    return ((c >> 11) & 1u) != 0;
  }();
  return has;
#else
  return false;
#endif
}

Status pick_table(const LevelKernelOptions& opt, const detail::LevelKernelTable** out, Isa* chosen) {
  if (!opt.isa) {
    Status e = isa_env_status();
    if (!e.ok()) return e;
  }
  const Isa isa = opt.isa ? *opt.isa : detect_isa();
  *chosen = isa;
  if (!isa_supported(isa))
    return invalid_argument(std::string("levels::matmul: ISA '") + isa_name(isa) +
                            "' is not available on this CPU/build");
  const detail::LevelKernelTable* t = nullptr;
  switch (isa) {
    case Isa::kAvx512: t = detail::avx512_level_kernels(); break;
    case Isa::kAvx2: t = detail::avx2_level_kernels(); break;
    case Isa::kNeon: t = detail::neon_level_kernels(); break;
    default: break;
  }
  *out = t ? t : detail::scalar_level_kernels();
  return Status::Ok();
}

// Whether a row's rounding is fine (levels.h, kFineSteps): at least as many of its nonzero inputs
// round to kFineSteps or more steps as to fewer, i.e. its median nonzero input keeps kFineSteps steps.
// Integer counts and exact compares, so the decision is the same on every ISA.
bool rounds_finely(const float* x, const int16_t* q, size_t cols) {
  size_t coarse = 0, fine = 0;
  for (size_t j = 0; j < cols; ++j) {
    const int32_t a = q[j] < 0 ? -int32_t(q[j]) : int32_t(q[j]);
    coarse += size_t(x[j] != 0.0f && a < LevelMatrix::kFineSteps);
    fine += size_t(a >= LevelMatrix::kFineSteps);
  }
  return coarse <= fine;
}

// The kInt16 product (levels.h, "Activations") on X' (X times the column scales, batch x cols); false
// (nothing written) when X' holds a non-finite value or a row whose rounding would be coarse.
bool matmul_int16(const LevelMatrix& m, const float* xs, size_t batch, float* Y, const float* bias,
                  const LevelKernelOptions& opt, const detail::LevelKernelTable* table, Isa isa) {
  const size_t rows = m.rows(), cols = m.cols(), stride = m.stride();
  const int32_t L = m.activation_range();
  if (L == 0) return false;
  const detail::LevelKernelTable* scalar = detail::scalar_level_kernels();
  const detail::QuantizeRow quantize = table->quantize_row ? table->quantize_row : scalar->quantize_row;
  std::vector<double> xscale(batch);
  std::vector<int16_t> xq(batch * stride, 0);
  for (size_t b = 0; b < batch; ++b) {
    if (!quantize(xs + b * cols, cols, L, xq.data() + b * stride, &xscale[b])) return false;
    if (xscale[b] != 0.0 && !rounds_finely(xs + b * cols, xq.data() + b * stride, cols)) return false;
  }
  const bool vnni = opt.vnni && isa == Isa::kAvx512 && cpu_has_avx512_vnni();
  detail::LevelKernelInt kernel;
  if (m.index_bits() == 8) {
    kernel = table->int8_i16 ? table->int8_i16 : scalar->int8_i16;
    if (vnni && table->int8_i16_vnni) kernel = table->int8_i16_vnni;
  } else {
    kernel = table->int16_i16 ? table->int16_i16 : scalar->int16_i16;
    if (vnni && table->int16_i16_vnni) kernel = table->int16_i16_vnni;
  }
  const detail::ListInt list = table->list_int ? table->list_int : scalar->list_int;
  const detail::FinishInt finish = table->finish_int ? table->finish_int : scalar->finish_int;
  // the list entries read the rounded inputs token-minor: every token of one column in one vector
  const uint64_t* optr = m.outlier_ptr().empty() ? nullptr : m.outlier_ptr().data();
  const size_t bpad = (batch + 15) / 16 * 16;
  std::vector<int32_t> xt(optr ? cols * bpad : 0, 0);
  if (optr) {
    for (size_t b = 0; b < batch; ++b) {
      for (size_t j = 0; j < cols; ++j) xt[j * bpad + b] = xq[b * stride + j];
    }
  }
  std::vector<int64_t> S(batch * rows);
  const detail::LevelView v{m.rows(), m.cols(), stride, m.q8(), m.q16()};
  const float* rs = m.row_scale().data();
  over_rows(m.rows(), opt.threads, uint64_t(rows) * cols * batch / 2, [&](uint32_t r0, uint32_t r1) {
    kernel(v, xq.data(), batch, S.data(), r0, r1);
    if (optr)
      list(optr, m.outlier_col().data(), m.outlier_val().data(), xt.data(), bpad, batch, rows, r0, r1, S.data());
    for (size_t b = 0; b < batch; ++b) finish(S.data() + b * rows, rs, xscale[b], bias, r0, r1, Y + b * rows);
  });
  return true;
}

}  // namespace

Status matmul(const LevelMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const LevelKernelOptions& opt) {
  return matmul(m, X, x_len, batch, Y, y_len, nullptr, 0, opt);
}

Status matmul(const LevelMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const float* bias, size_t bias_len, const LevelKernelOptions& opt) {
  if (m.rows() == 0) return invalid_argument("levels::matmul: empty LevelMatrix (build it with from_levels)");
  if (batch == 0) return invalid_argument("levels::matmul: batch must be >= 1");
  const size_t rows = m.rows(), cols = m.cols();
  if (batch > std::numeric_limits<size_t>::max() / std::max(rows, cols))
    return invalid_argument("levels::matmul: batch too large");
  if (x_len != batch * cols)
    return invalid_argument("levels::matmul: input has " + std::to_string(x_len) + " floats, expected " +
                            std::to_string(batch * cols) + " (batch x cols)");
  if (y_len != batch * rows)
    return invalid_argument("levels::matmul: output has " + std::to_string(y_len) + " floats, expected " +
                            std::to_string(batch * rows) + " (batch x rows)");
  if (X == nullptr || Y == nullptr) return invalid_argument("levels::matmul: null buffer");
  if ((bias == nullptr) != (bias_len == 0) || (bias && bias_len != rows))
    return invalid_argument("levels::matmul: bias has " + std::to_string(bias_len) + " floats, expected " +
                            std::to_string(rows) + " (rows) or none");
  if (opt.activations != Activations::kFloat32 && opt.activations != Activations::kInt16)
    return invalid_argument("levels::matmul: unknown activations mode");
  const detail::LevelKernelTable* table = nullptr;
  Isa isa = Isa::kScalar;
  Status s = pick_table(opt, &table, &isa);
  if (!s.ok()) return s;
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
  if (opt.activations == Activations::kInt16 && matmul_int16(m, xs, batch, Y, bias, opt, table, isa))
    return Status::Ok();
  const detail::LevelView v{m.rows(), m.cols(), m.stride(), m.q8(), m.q16()};
  const detail::LevelKernel kernel = m.index_bits() == 8 ? table->dense8 : table->dense16;
  const float* rs = m.row_scale().data();
  const uint64_t* optr = m.outlier_ptr().empty() ? nullptr : m.outlier_ptr().data();
  const uint32_t* ocol = m.outlier_col().data();
  const int32_t* oval = m.outlier_val().data();
  // a kernel for the list entries reads the inputs token-minor (every token of one column in one vector)
  const detail::ListFloat list = optr ? table->list_float : nullptr;
  const size_t bpad = (batch + 15) / 16 * 16;
  std::vector<float> xt(list ? cols * bpad : 0, 0.0f);
  if (list) {
    for (size_t b = 0; b < batch; ++b) {
      for (size_t j = 0; j < cols; ++j) xt[j * bpad + b] = xs[b * cols + j];
    }
  }
  over_rows(m.rows(), opt.threads, uint64_t(rows) * cols * batch, [&](uint32_t r0, uint32_t r1) {
    kernel(v, xs, batch, Y, r0, r1);
    if (list) list(optr, ocol, oval, xt.data(), bpad, batch, rows, r0, r1, Y);
    for (size_t b = 0; b < batch; ++b) {
      float* y = Y + b * rows;
      const float* x = xs + b * cols;
      for (uint32_t r = r0; r < r1; ++r) {
        float acc = y[r];
        if (optr && !list) {
          for (uint64_t k = optr[r]; k < optr[r + 1]; ++k) acc += float(oval[k]) * x[ocol[k]];
        }
        y[r] = rs[r] * acc;
      }
    }
    if (bias) {  // a pass of its own: added to the rounded products, never fused with the row scale
      for (size_t b = 0; b < batch; ++b) {
        for (uint32_t r = r0; r < r1; ++r) Y[b * rows + r] += bias[r];
      }
    }
  });
  return Status::Ok();
}

// ---- from a .nnp tensor ----
Status level_matrix_from_reader(const ContainerReader& reader, size_t index, LevelMatrix* out, unsigned threads) {
  if (out == nullptr) return invalid_argument("level_matrix_from_reader: null output");
  if (index >= reader.tensor_count())
    return invalid_argument("level_matrix_from_reader: tensor index " + std::to_string(index) + " out of range");
  const TensorInfo& req = reader.tensor(index);
  const TensorInfo& t = req.storage == Storage::kAlias ? reader.tensor(req.alias_of) : req;
  const std::string what = "tensor '" + req.name + "'";
  if (t.storage != Storage::kQuantized)
    return invalid_argument(what + " is stored raw, not quantized: it has no integer levels");
  if (t.count == 0) return invalid_argument(what + " has no elements");
  if (t.rows > std::numeric_limits<uint32_t>::max() || t.cols > std::numeric_limits<uint32_t>::max())
    return limit_exceeded(what + ": " + std::to_string(t.rows) + " x " + std::to_string(t.cols) +
                          " is too large for a LevelMatrix (dimensions up to 2^32 - 1)");
  const uint32_t rows = uint32_t(t.rows), cols = uint32_t(t.cols);
  std::vector<float> rs(rows), cs;
  for (uint32_t r = 0; r < rows; ++r) {
    rs[r] = float(t.step * (t.row_scale.empty() ? 1.0 : t.row_scale[r]));
    if (!positive_finite(rs[r]))
      return limit_exceeded(what + ": row " + std::to_string(r) + "'s step is not representable in float32");
  }
  if (!t.col_scale.empty()) {
    cs.resize(cols);
    for (uint32_t j = 0; j < cols; ++j) cs[j] = float(t.col_scale[j]);
  }
  // The levels a block of the file's chunks at a time (at most kBuildBlockElements int32 unless one
  // chunk is larger), each block's rows taken to their reconstruction indices u, each decoded once.
  std::vector<std::pair<uint64_t, uint64_t>> blocks;  // (first row, rows)
  for (const ChunkRef& ch : t.chunks) {
    if (!blocks.empty() && (blocks.back().second + ch.rows) * cols <= LevelMatrix::kBuildBlockElements)
      blocks.back().second += ch.rows;
    else blocks.emplace_back(ch.first_row, ch.rows);
  }
  uint64_t largest = 0;
  for (const auto& b : blocks) largest = std::max(largest, b.second);
  std::vector<int32_t> u(size_t(largest * cols));
  auto decode_block = [&](size_t k) -> Status {
    const uint64_t first = blocks[k].first, n = blocks[k].second;
    Status s = reader.decode_levels_rows(index, first, n, u.data(), n * cols, threads);
    if (!s.ok()) return s;
    if (!uses_dependent_reconstruction(t.method)) return Status::Ok();
    for (uint64_t r = 0; r < n; ++r) {
      int32_t* row = u.data() + size_t(r) * cols;
      int state = 0;
      for (uint32_t j = 0; j < cols; ++j) {
        const int32_t k = row[j];
        const int64_t v = dq_index(state, k);
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
          return limit_exceeded(what + ": reconstruction index " + std::to_string(v) + " at row " +
                                std::to_string(first + r) + " is outside int32");
        row[j] = int32_t(v);
        state = dq_next_state(state, k);
      }
    }
    return Status::Ok();
  };
  Status decode_error;
  size_t next_block = 0;
  auto next = [&](uint32_t* first, uint32_t* n, const int32_t** block) -> Status {
    *n = 0;
    if (next_block == blocks.size()) return Status::Ok();
    decode_error = decode_block(next_block);
    if (!decode_error.ok()) return decode_error;
    *first = uint32_t(blocks[next_block].first), *n = uint32_t(blocks[next_block].second), *block = u.data();
    ++next_block;
    return Status::Ok();
  };
  Status s = LevelMatrix::from_row_blocks(rows, cols, next, rs.data(), cs.empty() ? nullptr : cs.data(), out);
  if (!decode_error.ok()) return decode_error;
  if (!s.ok()) return Status(s.code(), what + ": " + s.message());
  return Status::Ok();
}

}  // namespace nnpress::levels
