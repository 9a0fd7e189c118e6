// Fuzz target: arbitrary CER / CSER / dense-codebook structures through validate() and
// from_arrays(), then the kernels that trust what validation accepted.
//
// Input layout: u8 mode, u8 rows, u16 cols (mode bit 1 adds 65536: the 32-bit column path),
// u8 number of values, the values (mode bit 2: raw float bits, NaN/Inf included; else small
// multiples of 1/4), then the structure. Mode bit 3 picks "plausible" structures (monotone
// pointers built from small steps, columns modulo cols + 1) that get deep into validation;
// otherwise pointers and indices are raw bytes. Mode bit 4 instead builds a real matrix with
// from_dense and mutates a few of its array entries.
// Properties:
//   - validate() and from_arrays() agree: accepted arrays build an object, rejected ones give
//     kCorrupt (never a crash, an out-of-bounds read or a huge allocation);
//   - an accepted matrix hands its arrays back unchanged (-0.0 aside) and its to_dense() equals
//     the matrix the CONTRACT of matrix.h describes (recomputed here independently);
//   - matvec on every ISA this CPU runs matches the dense product within float rounding;
//   - from_dense of the decoded dense matrix gives a valid matrix with the same dense content;
//   - CodebookMatrix::from_arrays with fuzzer-chosen tables and packed bytes never misbehaves.
#include <cmath>
#include <cstring>
#include <vector>

#include "fuzz_common.h"
#include "nnpress/cpu.h"
#include "nnpress/sparse/kernels.h"
#include "nnpress/sparse/matrix.h"

namespace {

using namespace nnpress;
using namespace nnpress::sparse;

float value_from(nnpress_fuzz::FuzzInput& in, bool raw) {
  if (raw) {
    const uint32_t bits = in.u32();
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  return float(int8_t(in.u8())) * 0.25f;
}

// Dense matrix as matrix.h's CONTRACT defines it, from arrays that validate() accepted.
std::vector<float> dense_from_contract(const RowGroupArrays& a) {
  std::vector<float> w(size_t(a.rows) * a.cols, a.omega.empty() ? 0.0f : a.omega[0]);
  for (uint32_t r = 0; r < a.rows; ++r) {
    for (uint32_t g = a.row_ptr[r]; g < a.row_ptr[r + 1]; ++g) {
      const uint32_t v = a.format == Format::kCER ? 1 + (g - a.row_ptr[r]) : a.group_value[g];
      for (uint32_t k = a.group_ptr[g]; k < a.group_ptr[g + 1]; ++k) w[size_t(r) * a.cols + a.col[k]] = a.omega[v];
    }
  }
  return w;
}

void check_products(const RowGroupMatrix& m, const std::vector<float>& w, nnpress_fuzz::FuzzInput& in) {
  const uint32_t rows = m.rows(), cols = m.cols();
  std::vector<float> x(cols);
  for (auto& v : x) v = float(int(in.u8() % 9) - 4);
  float omega0 = m.omega().empty() ? 0.0f : m.omega()[0];
  double sum_abs_x = 0;
  for (float v : x) sum_abs_x += std::fabs(v);
  for (int isa = 0; isa <= int(Isa::kAvx512); ++isa) {
    if (!isa_supported(Isa(isa))) continue;
    KernelOptions opt;
    opt.isa = Isa(isa);
    std::vector<float> y(size_t(rows) + 1, 12345.0f);
    FUZZ_REQUIRE(matvec(m, x.data(), x.size(), y.data(), rows, opt).ok());
    FUZZ_REQUIRE(y[rows] == 12345.0f);
    for (uint32_t r = 0; r < rows; ++r) {
      double ref = 0, bound = std::fabs(double(omega0)) * sum_abs_x;
      for (uint32_t c = 0; c < cols; ++c) {
        const double t = double(w[size_t(r) * cols + c]) * x[c];
        ref += t;
        bound += std::fabs(t) + std::fabs(double(w[size_t(r) * cols + c] - omega0) * x[c]);
      }
      if (bound < 1e30)
        FUZZ_REQUIRE(std::fabs(double(y[r]) - ref) <= 1e-5 * bound + 1e-30 + (cols + 8) * 1.2e-7 * bound);
    }
  }
}

}  // namespace

NNPRESS_FUZZ_TARGET(sparse) {
  nnpress_fuzz::FuzzInput in(data, size);
  const uint8_t mode = in.u8();
  RowGroupArrays a;
  a.format = (mode & 1) ? Format::kCER : Format::kCSER;
  a.rows = in.u8() % 40;
  a.cols = in.u16() % 300 + ((mode & 2) ? 65536u : 0u);
  if (mode & 2) a.rows %= 3;  // wide rows: keep the dense checks cheap
  const bool raw_values = mode & 4, plausible = mode & 8;
  const unsigned nvalues = in.u8() % 20;
  for (unsigned i = 0; i < nvalues; ++i) a.omega.push_back(value_from(in, raw_values));

  if (mode & 16) {
    // A real matrix (small levels, mostly zero) from from_dense, then a few targeted mutations
    // of its arrays: near-valid structures that probe each check of validate().
    const uint32_t rows = (mode & 2) ? a.rows % 3 : a.rows % 16, cols = (mode & 2) ? 65537 + in.u8() % 64 : a.cols % 64;
    std::vector<float> w(size_t(rows) * cols, 0.0f);
    for (auto& f : w) {
      const uint8_t b = in.u8();
      if (b < 96) f = float(int(b % 7) - 3) * 0.5f;
      if (in.remaining() == 0) break;
    }
    RowGroupMatrix base;
    FUZZ_REQUIRE(RowGroupMatrix::from_dense(a.format, w.data(), rows, cols, &base).ok());
    a = base.arrays();
    FUZZ_REQUIRE(RowGroupMatrix::validate(a).ok());
    for (unsigned n = in.u8() % 4; n > 0; --n) {
      const uint8_t which = in.u8() % 5;
      const uint32_t pos = in.u16(), val = (in.u8() & 1) ? in.u32() : in.u8();
      std::vector<uint32_t>* v = which == 0   ? &a.row_ptr
                                 : which == 1 ? &a.group_ptr
                                 : which == 2 ? &a.col
                                              : &a.group_value;
      if (which == 4) {
        if (!a.omega.empty()) a.omega[pos % a.omega.size()] = value_from(in, true);
      } else if (!v->empty()) {
        (*v)[pos % v->size()] = val;
      } else {
        v->push_back(val);
      }
    }
  } else if (plausible) {
    // Monotone pointers from small steps; indices mostly in range.
    a.row_ptr.push_back(0);
    for (uint32_t r = 0; r < a.rows; ++r) a.row_ptr.push_back(a.row_ptr.back() + in.u8() % 4);
    const uint32_t groups = a.row_ptr.back() + (in.u8() % 16 == 0 ? 1 : 0);  // sometimes off by one
    a.group_ptr.push_back(0);
    for (uint32_t g = 0; g < groups; ++g) a.group_ptr.push_back(a.group_ptr.back() + in.u8() % 5);
    const uint32_t nnz = a.group_ptr.back();
    for (uint32_t k = 0; k < nnz; ++k) a.col.push_back(in.u16() % (a.cols + 1));
    if (a.format == Format::kCSER)
      for (uint32_t g = 0; g < groups; ++g) a.group_value.push_back(in.u8() % (nvalues + 1));
  } else {
    const unsigned nrow = in.u8(), ngroup = in.u8(), ncol = in.u8(), nval = in.u8() % 8;
    for (unsigned i = 0; i < nrow; ++i) a.row_ptr.push_back(in.u8() < 240 ? in.u8() : in.u32());
    for (unsigned i = 0; i < ngroup; ++i) a.group_ptr.push_back(in.u8() < 240 ? in.u8() : in.u32());
    for (unsigned i = 0; i < ncol; ++i) a.col.push_back(in.u8() < 240 ? in.u16() : in.u32());
    for (unsigned i = 0; i < nval; ++i) a.group_value.push_back(in.u8() < 240 ? in.u8() : in.u32());
  }

  const Status v = RowGroupMatrix::validate(a);
  RowGroupMatrix m;
  const Status s = RowGroupMatrix::from_arrays(a, &m);
  FUZZ_REQUIRE(v.ok() == s.ok());
  if (!s.ok()) {
    FUZZ_REQUIRE(s.code() == StatusCode::kCorrupt && !s.message().empty());
  } else if (uint64_t(a.rows) * a.cols <= (uint64_t(1) << 22)) {
    const RowGroupArrays back = m.arrays();
    FUZZ_REQUIRE(back.rows == a.rows && back.cols == a.cols && back.format == a.format);
    FUZZ_REQUIRE(back.col == a.col && back.group_ptr == a.group_ptr && back.row_ptr == a.row_ptr);
    FUZZ_REQUIRE(back.group_value == a.group_value && back.omega.size() == a.omega.size());
    for (size_t i = 0; i < a.omega.size(); ++i) FUZZ_REQUIRE(back.omega[i] == a.omega[i]);  // -0 == +0
    const std::vector<float> w = dense_from_contract(a);
    std::vector<float> d(w.size() + 1, 777.0f);
    m.to_dense(d.data());
    FUZZ_REQUIRE(d[w.size()] == 777.0f);
    for (size_t i = 0; i < w.size(); ++i) FUZZ_REQUIRE(d[i] == w[i]);
    if (a.cols <= 4096) check_products(m, w, in);
    // Building from the dense matrix gives an equivalent valid matrix.
    RowGroupMatrix m2;
    if (RowGroupMatrix::from_dense(a.format, w.data(), a.rows, a.cols, &m2).ok()) {
      FUZZ_REQUIRE(RowGroupMatrix::validate(m2.arrays()).ok());
      std::vector<float> d2(w.size());
      m2.to_dense(d2.data());
      for (size_t i = 0; i < w.size(); ++i) FUZZ_REQUIRE(d2[i] == w[i]);
    }
  }

  // Dense codebook layout from fuzzer tables and packed bytes.
  {
    const uint32_t rows = in.u8() % 20, cols = in.u8() % 100;
    std::vector<float> lut(in.u8() % 18);
    for (auto& f : lut) f = value_from(in, raw_values);
    const size_t want = size_t(rows) * CodebookMatrix::row_bytes(cols);
    size_t have = want;
    if (in.u8() % 8 == 0) {  // sometimes one byte short or long
      const uint8_t d = in.u8() % 3;
      have = d == 0 ? (want ? want - 1 : 1) : want + (d - 1);
    }
    std::vector<uint8_t> packed(have);
    for (auto& b : packed) b = in.u8();
    CodebookMatrix cb;
    const Status cs = CodebookMatrix::from_arrays(rows, cols, lut, packed, &cb);
    if (!cs.ok()) {
      FUZZ_REQUIRE(cs.code() == StatusCode::kCorrupt || cs.code() == StatusCode::kInvalidArgument);
    } else {
      FUZZ_REQUIRE(have == want && !lut.empty() && lut.size() <= 16);
      std::vector<float> d(size_t(rows) * cols + 1, 777.0f);
      cb.to_dense(d.data());
      FUZZ_REQUIRE(d.back() == 777.0f);
      std::vector<float> x(cols, 1.0f), y(size_t(rows) + 1, 777.0f);
      for (int isa = 0; isa <= int(Isa::kAvx512); ++isa) {
        if (!isa_supported(Isa(isa))) continue;
        KernelOptions opt;
        opt.isa = Isa(isa);
        FUZZ_REQUIRE(matvec(cb, x.data(), x.size(), y.data(), rows, opt).ok());
        FUZZ_REQUIRE(y[rows] == 777.0f);
      }
    }
  }
  return 0;
}
