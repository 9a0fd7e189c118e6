// Table-lookup matrices (nnpress/kernels/lut.h): building, its checks (more than 16 values in a row),
// the code layout round trip, products of every ISA this CPU runs against a float64 product and against
// the scalar reference, bit-identical results for every thread count, argument checks, and building from
// a LevelMatrix and from a .nnp tensor (written in encoder builds: trellis levels with channel scales).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "nnpress/kernels/lut.h"
#include "nnpress/runtime.h"

using namespace nnpress;
using levels::LevelKernelOptions;
using levels::LevelMatrix;
using levels::LutMatrix;

namespace {

std::vector<Isa> runnable_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512})
    if (isa_supported(i)) out.push_back(i);
  return out;
}

// Max over outputs of |y - ref| / (sum_j |w_ij x_bj| + tiny), ref the float64 product of the float32
// weights, or (given) another kernel's result.
double rel_error(const std::vector<float>& W, uint32_t rows, uint32_t cols, const std::vector<float>& X, size_t batch,
                 const std::vector<float>& Y, const std::vector<float>* other = nullptr) {
  double worst = 0;
  for (size_t b = 0; b < batch; ++b) {
    for (uint32_t r = 0; r < rows; ++r) {
      double ref = 0, mag = 0;
      for (uint32_t j = 0; j < cols; ++j) {
        const double p = double(W[size_t(r) * cols + j]) * double(X[b * cols + j]);
        ref += p;
        mag += std::fabs(p);
      }
      if (other) ref = (*other)[b * rows + r];
      const double e = std::fabs(double(Y[b * rows + r]) - ref) / (mag + 1e-30);
      if (!(e <= worst)) worst = e;
    }
  }
  return worst;
}

// Each row draws its own `values` distinct indices (from a wide range, so rows differ) and fills its
// columns with them; every value occurs when cols allows.
std::vector<int32_t> random_rows(uint32_t rows, uint32_t cols, uint32_t values, std::mt19937& rng) {
  std::vector<int32_t> u(size_t(rows) * cols);
  std::uniform_int_distribution<int32_t> V(-40000, 40000);
  for (uint32_t r = 0; r < rows; ++r) {
    std::vector<int32_t> vals;
    while (vals.size() < values) {
      const int32_t v = vals.size() == 0 ? 0 : V(rng) / int32_t(1 + rng() % 300);
      if (std::find(vals.begin(), vals.end(), v) == vals.end()) vals.push_back(v);
    }
    for (uint32_t j = 0; j < cols; ++j) u[size_t(r) * cols + j] = vals[j < values ? j : rng() % values];
    std::shuffle(u.begin() + size_t(r) * cols, u.begin() + size_t(r + 1) * cols, rng);
  }
  return u;
}

void test_build() {
  std::mt19937 rng(5);
  for (uint32_t cols : {1u, 15u, 16u, 17u, 31u, 32u, 33u, 100u}) {
    const uint32_t rows = 9;
    std::vector<int32_t> u = random_rows(rows, cols, std::min(cols, 16u), rng);
    std::vector<float> rs(rows), cs(cols);
    for (uint32_t r = 0; r < rows; ++r) rs[r] = 0.01f * float(r + 1);
    for (uint32_t j = 0; j < cols; ++j) cs[j] = 0.5f + 0.125f * float(j % 8);
    LutMatrix m;
    CHECK(LutMatrix::from_levels(rows, cols, u.data(), rs.data(), cs.data(), &m).ok());
    CHECK(m.rows() == rows && m.cols() == cols && m.max_values() == std::min(cols, 16u));
    CHECK(m.code_stride() == (cols + 31) / 32 * 16);
    CHECK(m.nbytes() >= size_t(rows) * (m.code_stride() + 64) + (rows + cols) * 4);
    std::vector<int32_t> back(u.size());
    m.indices(back.data());
    CHECK(back == u);
    // tables ascending, then zeros
    bool sorted = true;
    for (uint32_t r = 0; r < rows; ++r) {
      const float* t = m.tables() + size_t(r) * 16;
      for (uint32_t k = 1; k < std::min(cols, 16u); ++k) sorted &= t[k - 1] < t[k];
      for (uint32_t k = std::min(cols, 16u); k < 16; ++k) sorted &= t[k] == 0.0f;
    }
    CHECK(sorted);
    std::vector<float> W(u.size());
    m.to_dense(W.data());
    bool exact = true;
    for (uint32_t r = 0; r < rows; ++r)
      for (uint32_t j = 0; j < cols; ++j)
        exact &= W[size_t(r) * cols + j] == float(double(rs[r]) * cs[j] * u[size_t(r) * cols + j]);
    CHECK(exact);
    // the same from a LevelMatrix (int8 part + list here: the values reach +-40000)
    LevelMatrix lm;
    CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), cs.data(), &lm).ok());
    LutMatrix m2;
    CHECK(LutMatrix::from_level_matrix(lm, &m2).ok());
    CHECK(m2.nbytes() == m.nbytes());
    CHECK(std::memcmp(m2.codes(), m.codes(), size_t(rows) * m.code_stride()) == 0);
    CHECK(std::memcmp(m2.tables(), m.tables(), size_t(rows) * 64) == 0);
    CHECK(m2.col_scale() == m.col_scale() && m2.row_scale() == m.row_scale());
    // copies are deep
    LutMatrix m3 = m;
    CHECK(m3.codes() != m.codes() && std::memcmp(m3.codes(), m.codes(), size_t(rows) * m.code_stride()) == 0);
  }
}

void test_build_checks() {
  // 2 x 40: row 1 holds 17 distinct values
  std::vector<int32_t> u(80, 0);
  for (int j = 0; j < 16; ++j) u[j] = j * 3;        // row 0: 16 values
  for (int j = 0; j < 17; ++j) u[40 + j] = j - 8;  // row 1: 17 values
  const float rs[2] = {0.5f, 2.0f};
  LutMatrix m;
  Status s = LutMatrix::from_levels(2, 40, u.data(), rs, nullptr, &m);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("row 1") != std::string::npos);
  CHECK(m.rows() == 0);  // unchanged
  LevelMatrix lm;
  CHECK(LevelMatrix::from_levels(2, 40, u.data(), rs, nullptr, &lm).ok());
  CHECK(LutMatrix::from_level_matrix(lm, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LutMatrix::from_level_matrix(LevelMatrix(), &m).code() == StatusCode::kInvalidArgument);
  u[56] = 0;  // row 1 now 16 values
  CHECK(LutMatrix::from_levels(2, 40, u.data(), rs, nullptr, &m).ok());
  CHECK(m.max_values() == 16);
  CHECK(LutMatrix::from_levels(0, 40, u.data(), rs, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LutMatrix::from_levels(2, 0, u.data(), rs, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LutMatrix::from_levels(2, 40, nullptr, rs, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LutMatrix::from_levels(2, 40, u.data(), nullptr, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LutMatrix::from_levels(2, 40, u.data(), rs, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
  const float bad_rs[2] = {0.5f, std::numeric_limits<float>::quiet_NaN()};
  CHECK(LutMatrix::from_levels(2, 40, u.data(), bad_rs, nullptr, &m).code() == StatusCode::kInvalidArgument);
  std::vector<float> cs(40, 1.0f);
  cs[7] = 0.0f;
  CHECK(LutMatrix::from_levels(2, 40, u.data(), rs, cs.data(), &m).code() == StatusCode::kInvalidArgument);
  // indices up to +-2^24 are held exactly; beyond, the float32 table would round them: refused
  int32_t big[4] = {1 << 24, -(1 << 24), 3, (1 << 24) - 1};
  CHECK(LutMatrix::from_levels(1, 4, big, rs, nullptr, &m).ok());
  int32_t back[4];
  m.indices(back);
  CHECK(std::equal(back, back + 4, big));
  for (int32_t v :
       {(1 << 24) + 1, -(1 << 24) - 1, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()}) {
    big[2] = v;
    LutMatrix before = m;
    s = LutMatrix::from_levels(1, 4, big, rs, nullptr, &m);
    CHECK(s.code() == StatusCode::kInvalidArgument && s.message().find("row 0") != std::string::npos);
    CHECK(m.cols() == 4 && std::memcmp(m.tables(), before.tables(), 64) == 0);  // unchanged
    LevelMatrix big_lm;
    CHECK(LevelMatrix::from_levels(1, 4, big, rs, nullptr, &big_lm).ok());
    CHECK(LutMatrix::from_level_matrix(big_lm, &m).code() == StatusCode::kInvalidArgument);
  }
}

void test_products() {
  std::mt19937 rng(7);
  const std::vector<Isa> isas = runnable_isas();
  struct Shape {
    uint32_t rows, cols, values;
  };
  const Shape shapes[] = {{1, 1, 1},  {13, 37, 16},   {33, 100, 5}, {70, 129, 16},
                          {9, 64, 2}, {130, 200, 11}, {5, 513, 16}, {17, 48, 16}};
  for (const Shape& sh : shapes) {
    for (int with_cs = 0; with_cs < 2; ++with_cs) {
      std::vector<int32_t> u = random_rows(sh.rows, sh.cols, sh.values, rng);
      std::vector<float> rs(sh.rows), cs(sh.cols);
      std::uniform_real_distribution<float> S(0.001f, 0.1f), C(0.5f, 2.0f), N(-1.0f, 1.0f);
      for (float& v : rs) v = S(rng);
      for (float& v : cs) v = C(rng);
      LutMatrix m;
      CHECK(LutMatrix::from_levels(sh.rows, sh.cols, u.data(), rs.data(), with_cs ? cs.data() : nullptr, &m).ok());
      std::vector<float> W(u.size());
      m.to_dense(W.data());
      for (size_t batch : {1, 2, 3, 4, 5, 8, 16, 17}) {
        std::vector<float> X(batch * sh.cols);
        for (float& v : X) v = N(rng);
        std::vector<float> ref;
        for (Isa isa : isas) {
          LevelKernelOptions o;
          o.isa = isa;
          std::vector<float> Y(batch * sh.rows, 12345.0f);
          CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
          const double e = rel_error(W, sh.rows, sh.cols, X, batch, Y);
          if (!(e < 2e-5))
            std::fprintf(stderr, "  %s %ux%u batch %zu col scales %d: rel error %g\n", isa_name(isa), sh.rows, sh.cols,
                         batch, with_cs, e);
          CHECK(e < 2e-5);
          if (isa == Isa::kScalar) {
            ref = Y;
          } else {  // against the scalar reference: the same up to summation order
            CHECK(rel_error(W, sh.rows, sh.cols, X, batch, Y, &ref) < 4e-5);
          }
        }
      }
    }
  }
}

// Inputs past the last column must never reach the sums: the padding columns hold code 0, here a large
// table[0], and past a token's last column lie the next token's inputs (ones).
void test_padding_columns() {
  const uint32_t rows = 3, cols = 37;
  std::vector<int32_t> u(size_t(rows) * cols, 7);
  for (uint32_t r = 0; r < rows; ++r) u[size_t(r) * cols] = -1000000;  // table[0] = -1e6 in every row
  const std::vector<float> rs(rows, 1.0f);
  LutMatrix m;
  CHECK(LutMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
  for (size_t batch : {1, 4, 5}) {
    std::vector<float> X(batch * cols, 1.0f);
    for (Isa isa : runnable_isas()) {
      LevelKernelOptions o;
      o.isa = isa;
      std::vector<float> Y(batch * rows);
      CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
      bool ok = true;
      for (float y : Y) ok &= y == float(-1000000 + 7 * 36);
      CHECK(ok);
    }
  }
}

// Special values propagate as in float math (0 * Inf = NaN, also for a zero weight), in every ISA.
void test_nonfinite_inputs() {
  const int32_t u[4] = {1, 0, 0, 2};
  const float rs[2] = {1.0f, 1.0f};
  LutMatrix m;
  CHECK(LutMatrix::from_levels(2, 2, u, rs, nullptr, &m).ok());
  for (Isa isa : runnable_isas()) {
    LevelKernelOptions o;
    o.isa = isa;
    const float x[2] = {std::numeric_limits<float>::infinity(), 1.0f};
    float y[2];
    CHECK(levels::matmul(m, x, 2, 1, y, 2, o).ok());
    CHECK(std::isinf(y[0]) && std::isnan(y[1]));
  }
}

void test_threads_deterministic() {
  std::mt19937 rng(3);
  const uint32_t rows = 517, cols = 301;
  std::vector<int32_t> u = random_rows(rows, cols, 16, rng);
  std::vector<float> rs(rows, 0.01f);
  LutMatrix m;
  CHECK(LutMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
  std::uniform_real_distribution<float> N(-1.0f, 1.0f);
  for (size_t batch : {1, 7}) {
    std::vector<float> X(batch * cols);
    for (float& v : X) v = N(rng);
    for (Isa isa : runnable_isas()) {
      std::vector<float> ref(batch * rows);
      LevelKernelOptions o;
      o.isa = isa;
      CHECK(levels::matmul(m, X.data(), X.size(), batch, ref.data(), ref.size(), o).ok());
      for (unsigned t : {0u, 2u, 3u, 8u}) {
        o.threads = t;
        std::vector<float> Y(batch * rows);
        CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
        CHECK(std::memcmp(Y.data(), ref.data(), Y.size() * 4) == 0);
      }
    }
  }
}

void test_product_checks() {
  const int32_t u[6] = {1, 2, 3, 4, 5, 6};
  const float rs[2] = {1.0f, 1.0f};
  LutMatrix m;
  CHECK(LutMatrix::from_levels(2, 3, u, rs, nullptr, &m).ok());
  float x[6] = {1, 1, 1, 1, 1, 1}, y[4] = {9, 9, 9, 9};
  CHECK(levels::matmul(m, x, 3, 1, y, 2).ok());
  CHECK(y[0] == 6.0f && y[1] == 15.0f);
  CHECK(levels::matmul(m, x, 4, 1, y, 2).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, x, 3, 1, y, 3).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, x, 0, 0, y, 0).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, nullptr, 3, 1, y, 2).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, x, 3, 1, nullptr, 2).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(LutMatrix(), x, 3, 1, y, 2).code() == StatusCode::kInvalidArgument);
  LevelKernelOptions o;
  o.activations = levels::Activations::kInt16;
  CHECK(levels::matmul(m, x, 3, 1, y, 2, o).code() == StatusCode::kInvalidArgument);
  for (Isa isa : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    LevelKernelOptions oi;
    oi.isa = isa;
    CHECK(levels::matmul(m, x, 6, 2, y, 4, oi).ok() == isa_supported(isa));
  }
}

// Every quantized tensor of a model as a LutMatrix (where its rows hold <= 16 values) against the
// decoded float32 weights; returns how many were built.
int check_model(const Model& model, const ContainerReader& reader) {
  int built = 0;
  for (size_t i = 0; i < reader.tensor_count(); ++i) {
    const TensorInfo& t = reader.tensor(i);
    LevelMatrix lm;
    if (!levels::level_matrix_from_reader(reader, i, &lm).ok()) {
      LutMatrix m;
      CHECK(!levels::lut_matrix_from_reader(reader, i, &m).ok());
      continue;
    }
    std::vector<int32_t> u(size_t(lm.rows()) * lm.cols());
    lm.indices(u.data());
    uint32_t most = 0;
    for (uint32_t r = 0; r < lm.rows(); ++r) {
      std::vector<int32_t> row(u.begin() + size_t(r) * lm.cols(), u.begin() + size_t(r + 1) * lm.cols());
      std::sort(row.begin(), row.end());
      most = std::max(most, uint32_t(std::unique(row.begin(), row.end()) - row.begin()));
    }
    LutMatrix m;
    Status s = levels::lut_matrix_from_reader(reader, i, &m);
    if (most > 16) {
      CHECK(s.code() == StatusCode::kInvalidArgument && s.message().find(t.name) != std::string::npos);
      continue;
    }
    CHECK(s.ok());
    if (!s.ok()) continue;
    CHECK(m.max_values() == most);
    std::vector<float> w;
    CHECK(model.decode_float32(t.name, &w).ok());
    std::vector<float> W(w.size());
    m.to_dense(W.data());
    bool close = true;
    for (size_t k = 0; k < w.size(); ++k) close &= std::fabs(W[k] - w[k]) <= 3e-7 * std::fabs(w[k]);
    // float16/bfloat16 tensors decode through their narrower dtype: compare at that precision.
    if (t.dtype != DType::kFloat32 && t.dtype != DType::kFloat64) {
      close = true;
      for (size_t k = 0; k < w.size(); ++k) close &= std::fabs(W[k] - w[k]) <= 8e-3 * std::fabs(w[k]) + 1e-30;
    }
    CHECK(close);
    std::mt19937 rng{uint32_t(i)};
    std::uniform_real_distribution<float> N(-1.0f, 1.0f);
    for (size_t batch : {1, 5}) {
      std::vector<float> X(batch * m.cols());
      for (float& v : X) v = N(rng);
      for (Isa isa : runnable_isas()) {
        LevelKernelOptions o;
        o.isa = isa;
        std::vector<float> Y(batch * m.rows());
        CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
        CHECK(rel_error(W, m.rows(), m.cols(), X, batch, Y) < 2e-5);
      }
    }
    ++built;
  }
  return built;
}

void test_golden_files() {
  int built = 0;
  for (const char* f : {"golden_v1_mixed.nnp", "golden_v1_blocks.nnp", "golden_v1_1_scales.nnp"}) {
    const std::string path = std::string(NNPRESS_TEST_DATA_DIR) + "/golden/" + f;
    Model model;
    ContainerReader reader;
    CHECK(Model::open_file(path, &model).ok());
    CHECK(ContainerReader::open_file(path, &reader).ok());
    built += check_model(model, reader);
  }
  CHECK(built >= 1);  // some golden tensor holds <= 16 levels per row: products were checked, not only refusals
}

#ifdef NNPRESS_WITH_ENCODER
// Trellis levels (u through the state machine) with row and column scales, <= 16 values per row, and a
// tensor with a row of 17 values.
void test_written_file() {
  std::mt19937 rng(11);
  const uint32_t rows = 40, cols = 75;
  std::vector<int32_t> few(size_t(rows) * cols), many;
  for (int32_t& v : few) v = int32_t(rng() % 4) - 2;  // trellis u from levels in [-2, 1]: at most 8 values
  many = few;
  for (uint32_t j = 0; j < 20; ++j) many[size_t(3) * cols + j] = int32_t(j) * 5 - 50;
  std::vector<int8_t> rexp(rows), cexp(cols);
  for (auto& e : rexp) e = int8_t(int(rng() % 64) - 32);
  for (auto& e : cexp) e = int8_t(int(rng() % 32) - 16);
  std::vector<TensorInput> in;
  for (int k = 0; k < 2; ++k) {
    TensorInput t;
    t.name = k ? "many" : "few";
    t.dtype = DType::kFloat32;
    t.storage = Storage::kQuantized;
    t.shape = {rows, 3, 25};
    t.levels = k ? many.data() : few.data();
    t.method = k ? QuantMethod::kNearest : QuantMethod::kTrellis;
    t.step = 0.0123;
    t.row_scale_exp = rexp.data();
    t.col_scale_exp = cexp.data();
    in.push_back(t);
  }
  std::vector<uint8_t> bytes;
  CHECK(write_container(in, WriterOptions(), &bytes).ok());
  Model model;
  ContainerReader reader;
  CHECK(Model::open_bytes(bytes, &model).ok());
  CHECK(ContainerReader::open_memory(bytes.data(), bytes.size(), &reader).ok());
  CHECK(check_model(model, reader) == 1);
  LutMatrix m;
  Status s = levels::lut_matrix_from_reader(reader, 1, &m);
  CHECK(s.code() == StatusCode::kInvalidArgument && s.message().find("row 3") != std::string::npos);
  CHECK(levels::lut_matrix_from_reader(reader, 2, &m).code() == StatusCode::kInvalidArgument);
  CHECK(levels::lut_matrix_from_reader(reader, 0, nullptr).code() == StatusCode::kInvalidArgument);
}
#endif

}  // namespace

int main() {
  std::printf("testing ISAs:");
  for (Isa i : runnable_isas()) std::printf(" %s", isa_name(i));
  std::printf(" (auto: %s)\n", isa_name(detect_isa()));
  test_build();
  test_build_checks();
  test_products();
  test_padding_columns();
  test_nonfinite_inputs();
  test_threads_deterministic();
  test_product_checks();
  test_golden_files();
#ifdef NNPRESS_WITH_ENCODER
  test_written_file();
#endif
  return TEST_MAIN_RESULT();
}
