// Integer-level matrices and kernels (nnpress/kernels/levels.h): building and its checks, the storage
// (int8 + exact list, int16), products of every ISA this CPU runs against a float64 product, bit-identical
// results for every thread count, argument checks, and Model::decode_level_matrix against the decoded
// float32 weights (golden files in every build; trellis / nearest / rdoq levels with and without channel
// scales, aliases and raw tensors in encoder builds).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "nnpress/kernels/levels.h"
#include "nnpress/quant/dequantize.h"
#include "nnpress/runtime.h"

using namespace nnpress;
using levels::level_matrix_from_reader;
using levels::LevelKernelOptions;
using levels::LevelMatrix;

namespace {

std::vector<Isa> runnable_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512})
    if (isa_supported(i)) out.push_back(i);
  return out;
}

// Max over outputs of |y - ref| / (sum_j |w_ij x_bj| + tiny), with ref and the scale in float64 from the
// float32 weights W (rows x cols) and X (batch x cols).
double rel_error(const std::vector<float>& W, uint32_t rows, uint32_t cols, const std::vector<float>& X, size_t batch,
                 const std::vector<float>& Y) {
  double worst = 0;
  for (size_t b = 0; b < batch; ++b) {
    for (uint32_t r = 0; r < rows; ++r) {
      double ref = 0, mag = 0;
      for (uint32_t j = 0; j < cols; ++j) {
        const double p = double(W[size_t(r) * cols + j]) * double(X[b * cols + j]);
        ref += p;
        mag += std::fabs(p);
      }
      const double e = std::fabs(double(Y[b * rows + r]) - ref) / (mag + 1e-30);
      if (!(e <= worst)) worst = e;  // NaN propagates as a failure
    }
  }
  return worst;
}

// u with mostly small values, some beyond int8 (and a few beyond int16 when `wide`).
std::vector<int32_t> random_u(uint32_t rows, uint32_t cols, double p_big, bool huge, std::mt19937& rng) {
  std::vector<int32_t> u(size_t(rows) * cols);
  std::uniform_real_distribution<double> U(0, 1);
  std::uniform_int_distribution<int> small(-127, 127), big(128, 30000);
  for (int32_t& v : u) {
    const double p = U(rng);
    if (p < p_big) {
      v = big(rng) * (U(rng) < 0.5 ? -1 : 1);
    } else if (huge && p < p_big + 0.01) {
      v = (U(rng) < 0.5 ? -1 : 1) * int32_t(40000 + (rng() % 1000000));
    } else {
      v = small(rng) / (U(rng) < 0.5 ? 1 : 8);
    }
  }
  return u;
}

void test_build_checks() {
  // 2 x 40, two entries beyond int8: int8 dense part + a list of 2.
  std::vector<int32_t> u(80);
  for (size_t k = 0; k < u.size(); ++k) u[k] = int32_t(k % 7) - 3;
  u[3] = 200, u[45] = -128;
  const float rs[2] = {0.5f, 2.0f};
  std::vector<float> cs(40, 1.0f);
  cs[3] = 0.25f, cs[5] = 4.0f;
  LevelMatrix m;
  CHECK(LevelMatrix::from_levels(2, 40, u.data(), rs, cs.data(), &m).ok());
  CHECK(m.rows() == 2 && m.cols() == 40 && m.index_bits() == 8 && m.outliers() == 2);
  CHECK(m.stride() == 64);
  CHECK(m.nbytes() == 2 * 64 + 3 * 8 + 2 * 4 + 2 * 4 + 42 * 4);
  std::vector<int32_t> back(80);
  m.indices(back.data());
  CHECK(back == u);
  std::vector<float> w(80);
  m.to_dense(w.data());
  CHECK(w[0] == -1.5f && w[3] == 25.0f && w[5] == 4.0f && w[45] == -1024.0f);
  // A 2 x 3 matrix with 2 of 6 entries beyond int8: int16, nothing in the list.
  const int32_t small[6] = {1, -2, 3, 200, 0, -128};
  LevelMatrix m16;
  CHECK(LevelMatrix::from_levels(2, 3, small, rs, nullptr, &m16).ok());
  CHECK(m16.index_bits() == 16 && m16.outliers() == 0 && m16.stride() == 32 && m16.q16() && !m16.q8());

  // Every refusal is kInvalidArgument and leaves *out as it was.
  const float bad_vals[] = {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity()};
  for (float bad : bad_vals) {
    const float brs[2] = {1.0f, bad};
    std::vector<float> bcs(40, 1.0f);
    bcs[2] = bad;
    Status s = LevelMatrix::from_levels(2, 40, u.data(), brs, nullptr, &m);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("row_scale[1]") != std::string::npos);
    s = LevelMatrix::from_levels(2, 40, u.data(), rs, bcs.data(), &m);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("col_scale[2]") != std::string::npos);
  }
  CHECK(LevelMatrix::from_levels(0, 40, u.data(), rs, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LevelMatrix::from_levels(2, 0, u.data(), rs, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LevelMatrix::from_levels(2, 40, nullptr, rs, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LevelMatrix::from_levels(2, 40, u.data(), nullptr, nullptr, &m).code() == StatusCode::kInvalidArgument);
  CHECK(LevelMatrix::from_levels(2, 40, u.data(), rs, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
  CHECK(m.rows() == 2 && m.outliers() == 2 && m.has_col_scale());  // unchanged by the refusals

  // Copies are deep and equal.
  LevelMatrix c = m;
  std::vector<int32_t> back2(80);
  c.indices(back2.data());
  CHECK(back2 == u && c.q8() != m.q8());

  // Extremes of int32 go to the list exactly.
  const int32_t ext[4] = {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), 127, -127};
  const float one[1] = {1.0f};
  LevelMatrix e;
  CHECK(LevelMatrix::from_levels(1, 4, ext, one, nullptr, &e).ok());
  int32_t eb[4];
  e.indices(eb);
  CHECK(std::memcmp(eb, ext, sizeof ext) == 0);
  CHECK(e.outliers() == 2);
}

void test_storage_choice() {
  std::mt19937 rng(1);
  // Few outliers: int8 + list; many: int16 + list of those beyond int16.
  for (double p : {0.01, 0.2}) {
    const uint32_t rows = 40, cols = 70;
    std::vector<int32_t> u = random_u(rows, cols, p, true, rng);
    std::vector<float> rs(rows, 1.0f);
    LevelMatrix m;
    CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
    uint64_t n8 = 0, n16 = 0;
    for (int32_t v : u) n8 += std::abs(int64_t(v)) > 127, n16 += std::abs(int64_t(v)) > 32767;
    const bool wide = n8 * 16 > u.size();
    CHECK(wide == (p > 0.1));
    CHECK(m.index_bits() == (wide ? 16 : 8));
    CHECK(m.outliers() == (wide ? n16 : n8));
    CHECK(m.stride() == (wide ? 96u : 128u));
    std::vector<int32_t> back(u.size());
    m.indices(back.data());
    CHECK(back == u);
  }
}

void test_products() {
  std::mt19937 rng(7);
  const std::vector<Isa> isas = runnable_isas();
  struct Shape {
    uint32_t rows, cols;
    double p_big;
    bool huge;
  };
  const Shape shapes[] = {{1, 1, 0, false},    {13, 37, 0.02, false},   {33, 100, 0.0, false}, {70, 129, 0.3, true},
                          {9, 64, 0.05, true}, {130, 200, 0.01, false}, {5, 513, 0.0, false}};
  for (const Shape& sh : shapes) {
    for (int with_cs = 0; with_cs < 2; ++with_cs) {
      std::vector<int32_t> u = random_u(sh.rows, sh.cols, sh.p_big, sh.huge, rng);
      std::vector<float> rs(sh.rows), cs(sh.cols);
      std::uniform_real_distribution<float> S(0.001f, 0.1f), C(0.5f, 2.0f), N(-1.0f, 1.0f);
      for (float& v : rs) v = S(rng);
      for (float& v : cs) v = C(rng);
      LevelMatrix m;
      CHECK(LevelMatrix::from_levels(sh.rows, sh.cols, u.data(), rs.data(), with_cs ? cs.data() : nullptr, &m).ok());
      std::vector<float> W(u.size());
      m.to_dense(W.data());
      for (size_t batch : {1, 2, 3, 4, 5, 8, 16, 17}) {
        std::vector<float> X(batch * sh.cols);
        for (float& v : X) v = N(rng);
        for (Isa isa : isas) {
          LevelKernelOptions o;
          o.isa = isa;
          std::vector<float> Y(batch * sh.rows, 12345.0f);
          Status s = levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o);
          CHECK(s.ok());
          const double e = rel_error(W, sh.rows, sh.cols, X, batch, Y);
          if (!(e < 2e-5)) {
            std::fprintf(stderr, "  %s %ux%u batch %zu col scales %d: rel error %g\n", isa_name(isa), sh.rows, sh.cols,
                         batch, with_cs, e);
          }
          CHECK(e < 2e-5);
        }
      }
    }
  }
}

// Special values propagate as in float math (0 * Inf = NaN, also for a zero weight), in every ISA.
void test_nonfinite_inputs() {
  const int32_t u[4] = {1, 0, 0, 2};
  const float rs[2] = {1.0f, 1.0f};
  LevelMatrix m;
  CHECK(LevelMatrix::from_levels(2, 2, u, rs, nullptr, &m).ok());
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
  std::vector<int32_t> u = random_u(rows, cols, 0.01, false, rng);
  std::vector<float> rs(rows, 0.01f);
  LevelMatrix m;
  CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
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
  LevelMatrix m;
  CHECK(LevelMatrix::from_levels(2, 3, u, rs, nullptr, &m).ok());
  float X[6] = {1, 1, 1, 1, 1, 1}, Y[4] = {7, 7, 7, 7};
  auto untouched = [&] { return Y[0] == 7 && Y[1] == 7 && Y[2] == 7 && Y[3] == 7; };
  CHECK(levels::matmul(m, X, 5, 2, Y, 4).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, X, 6, 2, Y, 3).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, X, 6, 0, Y, 4).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, nullptr, 6, 2, Y, 4).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(m, X, 6, 2, nullptr, 4).code() == StatusCode::kInvalidArgument);
  CHECK(levels::matmul(LevelMatrix(), X, 6, 2, Y, 4).code() == StatusCode::kInvalidArgument);
  for (Isa isa : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    if (isa_supported(isa)) continue;
    LevelKernelOptions o;
    o.isa = isa;
    CHECK(levels::matmul(m, X, 6, 2, Y, 4, o).code() == StatusCode::kInvalidArgument);
  }
  CHECK(untouched());
  CHECK(levels::matmul(m, X, 6, 2, Y, 4).ok());
  CHECK(Y[0] == 6 && Y[1] == 15 && Y[2] == 6 && Y[3] == 15);
}

// The kInt16 product by its CONTRACT (levels.h), computed here without the library's kernels: X' = X *
// col_scale in float, L = min(32767, floor((2^31 - 1) / (512 * max(M, 1)))), each row rounded half away
// from zero on the scale max|X'| / L, exact int64 sums over every u, one double multiply.
std::vector<float> int16_by_contract(uint32_t rows, uint32_t cols, const std::vector<int32_t>& u,
                                     const std::vector<float>& rs, const float* cs, const std::vector<float>& X,
                                     size_t batch, int64_t L) {
  std::vector<float> Y(batch * rows);
  std::vector<int64_t> q(cols);
  for (size_t b = 0; b < batch; ++b) {
    std::vector<float> xs(cols);
    float amax = 0.0f;
    for (uint32_t j = 0; j < cols; ++j) {
      xs[j] = cs ? X[b * cols + j] * cs[j] : X[b * cols + j];
      amax = std::max(amax, std::fabs(xs[j]));
    }
    const double s = double(amax) / double(L);
    for (uint32_t j = 0; j < cols; ++j) {
      if (s == 0.0) {
        q[j] = 0;
        continue;
      }
      const double v = double(xs[j]) * (1.0 / s);
      q[j] = std::max<int64_t>(-L, std::min<int64_t>(L, int64_t(v + std::copysign(0.5, v))));
    }
    for (uint32_t r = 0; r < rows; ++r) {
      int64_t acc = 0;
      for (uint32_t j = 0; j < cols; ++j) acc += int64_t(u[size_t(r) * cols + j]) * q[j];
      Y[b * rows + r] = float(double(rs[r]) * s * double(acc));
    }
  }
  return Y;
}

int64_t activation_range_of(int32_t M) {
  const int64_t L = std::min<int64_t>(32767, int64_t(2147483647) / (512 * int64_t(std::max(M, 1))));
  return L >= 2047 ? L : 0;
}

// kInt16 activations: exact integer sums, so every ISA (and VNNI or not) gives the same bits as the
// scalar reference; the error against the float64 product is the rounding of the inputs only.
void test_int16_activations() {
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> N(-1.0f, 1.0f);
  const uint32_t shapes[][2] = {{13, 37}, {70, 129}, {9, 64}, {130, 200}, {3, 4500}};
  for (const auto& sh : shapes) {
    const uint32_t rows = sh[0], cols = sh[1];
    for (int with_cs = 0; with_cs < 2; ++with_cs) {
      std::vector<int32_t> u = random_u(rows, cols, 0.01, false, rng);
      std::vector<float> rs(rows), cs(cols);
      for (float& v : rs) v = 0.001f + 0.01f * (N(rng) + 1.0f);
      for (float& v : cs) v = 1.0f + 0.5f * N(rng);
      LevelMatrix m;
      CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), with_cs ? cs.data() : nullptr, &m).ok());
      CHECK(m.index_bits() == 8 && m.activation_range() == 32767);
      std::vector<float> W(u.size());
      m.to_dense(W.data());
      for (size_t batch : {1, 2, 5, 16, 17, 33}) {  // list entries take up to 16 tokens per pass
        std::vector<float> X(batch * cols);
        for (float& v : X) v = N(rng);
        X[0] = 0.0f;
        LevelKernelOptions o;
        o.activations = levels::Activations::kInt16;
        o.isa = Isa::kScalar;
        std::vector<float> ref(batch * rows);
        CHECK(levels::matmul(m, X.data(), X.size(), batch, ref.data(), ref.size(), o).ok());
        const std::vector<float> want = int16_by_contract(rows, cols, u, rs, with_cs ? cs.data() : nullptr, X, batch,
                                                          32767);
        CHECK(std::memcmp(want.data(), ref.data(), ref.size() * 4) == 0);
        // the error bound: |W| times half a rounding step of each input row, plus float rounding
        bool within = true;
        for (size_t b = 0; b < batch; ++b) {
          double amax = 0;
          for (uint32_t j = 0; j < cols; ++j) {
            const double xs = double(X[b * cols + j]) * (with_cs ? cs[j] : 1.0f);
            amax = std::max(amax, std::fabs(xs));
          }
          for (uint32_t r = 0; r < rows; ++r) {
            double exact = 0, wabs = 0, mag = 0;
            for (uint32_t j = 0; j < cols; ++j) {
              const double w = W[size_t(r) * cols + j], x = X[b * cols + j];
              exact += w * x, wabs += std::fabs(w) / (with_cs ? cs[j] : 1.0f), mag += std::fabs(w * x);
            }
            const double bound = wabs * amax / 32767.0 * 0.5 * 1.0001 + 1e-6 * mag + 1e-30;
            within &= std::fabs(double(ref[b * rows + r]) - exact) <= bound;
          }
        }
        CHECK(within);
        for (Isa isa : runnable_isas()) {
          for (bool vnni : {true, false}) {
            o.isa = isa;
            o.vnni = vnni;
            for (unsigned t : {1u, 3u}) {
              o.threads = t;
              std::vector<float> Y(batch * rows, 5.0f);
              CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
              CHECK(std::memcmp(Y.data(), ref.data(), Y.size() * 4) == 0);
            }
          }
        }
      }
    }
  }
  // Sums at the edge of the int32 lanes: u = +-127 and inputs at the int16 limit over many columns.
  for (int sign : {1, -1}) {
    const uint32_t cols = 8200;
    std::vector<int32_t> u(cols, 127 * sign);
    std::vector<float> X(cols, 32767.0f * float(sign)), one(1, 1.0f);
    LevelMatrix m;
    CHECK(LevelMatrix::from_levels(1, cols, u.data(), one.data(), nullptr, &m).ok());
    for (Isa isa : runnable_isas()) {
      LevelKernelOptions o;
      o.isa = isa;
      o.activations = levels::Activations::kInt16;
      float y = 0;
      CHECK(levels::matmul(m, X.data(), X.size(), 1, &y, 1, o).ok());
      CHECK(y == float(double(int64_t(cols) * 127 * 32767)));
    }
  }
  // int16 dense parts with M beyond 2049 and non-finite inputs compute as kFloat32.
  std::vector<int32_t> u = random_u(20, 30, 0.5, false, rng);
  std::vector<float> rs(20, 0.01f), X(2 * 30);
  for (float& v : X) v = N(rng);
  LevelMatrix m16;
  CHECK(LevelMatrix::from_levels(20, 30, u.data(), rs.data(), nullptr, &m16).ok());
  CHECK(m16.index_bits() == 16 && m16.dense_max() > 2049 && m16.activation_range() == 0);
  for (Isa isa : runnable_isas()) {
    for (int nonfinite = 0; nonfinite < 2; ++nonfinite) {
      LevelMatrix m8;
      std::vector<int32_t> small(600, 3);
      CHECK(LevelMatrix::from_levels(20, 30, small.data(), rs.data(), nullptr, &m8).ok());
      std::vector<float> Xn = X;
      if (nonfinite) Xn[31] = std::numeric_limits<float>::infinity();
      for (const LevelMatrix* pm : {&m16, &m8}) {
        if (pm == &m8 && !nonfinite) continue;
        LevelKernelOptions o;
        o.isa = isa;
        std::vector<float> a(40), b(40);
        CHECK(levels::matmul(*pm, Xn.data(), Xn.size(), 2, a.data(), a.size(), o).ok());
        o.activations = levels::Activations::kInt16;
        CHECK(levels::matmul(*pm, Xn.data(), Xn.size(), 2, b.data(), b.size(), o).ok());
        CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
      }
    }
  }
  // A row whose rounding would be coarse (its median nonzero input below kFineSteps steps: one input
  // thousands of times the others on an int16 part with L near 2047) makes the product kFloat32; rows
  // just fine enough, rows of zeros and rows mostly zero (ReLU outputs) keep the kInt16 contract.
  {
    const uint32_t rows = 24, cols = 384;
    std::vector<int32_t> u = random_u(rows, cols, 0.0, false, rng);
    for (size_t k = 0; k < u.size(); k += 8) u[k] = (k % 16 ? -1 : 1) * int32_t(128 + k % 1800);  // 1/8 beyond int8
    u[7] = 2000;
    std::vector<float> rs(rows, 0.002f);
    LevelMatrix m;
    CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
    const int64_t L = activation_range_of(2000);
    CHECK(m.index_bits() == 16 && m.dense_max() == 2000 && m.activation_range() == L);
    // one input at amax, the others at t (0 from `zero_from` on): they round to round(t * L / amax) steps
    auto row_with = [&](float amax, float t, uint32_t zero_from) {
      std::vector<float> x(cols, t);
      for (uint32_t j = zero_from; j < cols; ++j) x[j] = 0.0f;
      x[5] = amax;
      return x;
    };
    const float fine_max = 0.9f * float(L) / float(LevelMatrix::kFineSteps);  // the others keep 284 steps
    std::vector<float> coarse = row_with(1e4f, 1.0f, cols), fine = row_with(fine_max, 1.0f, cols),
                       sparse = row_with(fine_max, 1.0f, 20), zeros(cols, 0.0f);
    CHECK(std::lround(double(L) / double(fine_max)) >= LevelMatrix::kFineSteps);
    CHECK(std::lround(double(L) / 1e4) < LevelMatrix::kFineSteps);
    for (Isa isa : runnable_isas()) {
      for (const auto& rows_in :
           {std::vector<std::vector<float>>{fine, zeros, sparse}, {fine, coarse}, {coarse}, {sparse, coarse}}) {
        std::vector<float> X;
        for (const auto& r : rows_in) X.insert(X.end(), r.begin(), r.end());
        const size_t batch = rows_in.size();
        LevelKernelOptions o;
        o.isa = isa;
        std::vector<float> f32(batch * rows), i16(batch * rows);
        CHECK(levels::matmul(m, X.data(), X.size(), batch, f32.data(), f32.size(), o).ok());
        o.activations = levels::Activations::kInt16;
        CHECK(levels::matmul(m, X.data(), X.size(), batch, i16.data(), i16.size(), o).ok());
        const bool has_coarse = rows_in.back() == coarse;
        const std::vector<float> want = has_coarse ? f32 : int16_by_contract(rows, cols, u, rs, nullptr, X, batch, L);
        CHECK(std::memcmp(want.data(), i16.data(), i16.size() * 4) == 0);
        if (!has_coarse) CHECK(std::memcmp(f32.data(), i16.data(), i16.size() * 4) != 0);
      }
    }
  }
  LevelKernelOptions bad;
  bad.activations = levels::Activations(7);
  float y[20];
  CHECK(levels::matmul(m16, X.data(), 30, 1, y, 20, bad).code() == StatusCode::kInvalidArgument);
}

// kInt16 input rounding at its edges, on an int8 matrix with list entries and 37 columns (masked tails):
// ties round half away from zero (the row's max |x| is 32767, so the scale is exactly 1; 16 of its
// inputs keep kFineSteps steps or more, so that the row's rounding counts as fine), -0.0, a row of
// zeros (scale 0: every result 0), a row with one nonzero input, inputs just below a tie; the same bits
// as the contract on every ISA and thread count.
void test_int16_rounding_edges() {
  const uint32_t rows = 5, cols = 37;
  std::vector<int32_t> u(size_t(rows) * cols);
  for (size_t k = 0; k < u.size(); ++k) u[k] = int32_t(k % 9) - 4;
  u[2] = 300, u[cols + 20] = -1000, u[4 * cols + 7] = 1 << 20;
  std::vector<float> rs(rows);
  for (uint32_t r = 0; r < rows; ++r) rs[r] = 0.25f + 0.1f * float(r);
  LevelMatrix m;
  CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
  CHECK(m.index_bits() == 8 && m.outliers() == 3 && m.activation_range() == 32767);
  const size_t batch = 4;
  std::vector<float> X(batch * cols, 0.0f);
  const float ties[] = {32767.0f,  0.5f,     -0.5f,     1.5f,      -1.5f,       2.5f,         -2.5f,    100.5f,
                        -100.5f,   -0.0f,    32766.5f,  -32766.5f, 0.49999997f, -0.49999997f, 7.0f,     2.4999998f,
                        -3.5f,     4.5f,     0.0f,      1.0f,      -32767.0f,   1000.5f,      -1000.5f, 20000.5f,
                        -20000.5f, 256.5f,   -256.5f,   511.5f,    -511.5f,     300.0f,       -300.0f,  4095.5f,
                        -4095.5f,  12345.5f, -12345.5f, 256.0f,    -256.0f};
  for (uint32_t j = 0; j < cols; ++j) X[j] = ties[j];
  for (uint32_t j = 0; j < cols; ++j) X[cols + j] = j % 2 ? -0.0f : 0.0f;  // row 1: zeros
  X[2 * cols + 20] = -3.0f;                                                 // row 2: one nonzero
  for (uint32_t j = 0; j < cols; ++j) X[3 * cols + j] = 0.001f * float(j) - 0.0105f;
  const std::vector<float> want = int16_by_contract(rows, cols, u, rs, nullptr, X, batch, 32767);
  for (size_t r = 0; r < rows; ++r) CHECK(want[rows + r] == 0.0f);  // token 1: the zero row
  // token 0 by hand: its rounded inputs q (scale 1)
  const int64_t q[] = {32767, 1,   -1,   2,   -2,   3,    -3,    101,    -101,   0,     32767, -32767, 0,
                       0,     7,   2,    -4,  5,    0,    1,     -32767, 1001,   -1001, 20001, -20001, 257,
                       -257,  512, -512, 300, -300, 4096, -4096, 12346,  -12346, 256,   -256};
  for (uint32_t r = 0; r < rows; ++r) {
    int64_t acc = 0;
    for (uint32_t j = 0; j < cols; ++j) acc += int64_t(u[size_t(r) * cols + j]) * q[j];
    CHECK(want[r] == float(double(rs[r]) * 1.0 * double(acc)));
  }
  for (Isa isa : runnable_isas()) {
    for (unsigned t : {1u, 2u}) {
      LevelKernelOptions o;
      o.isa = isa;
      o.threads = t;
      o.activations = levels::Activations::kInt16;
      std::vector<float> Y(batch * rows, 5.0f);
      CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
      CHECK(std::memcmp(Y.data(), want.data(), Y.size() * 4) == 0);
    }
  }
}

// The product with a bias equals the product without one plus the bias (one float add per result), bit
// for bit, in both activation modes, on every ISA and thread count; bad bias arguments are refused.
void test_bias() {
  std::mt19937 rng(29);
  std::uniform_real_distribution<float> N(-1.0f, 1.0f);
  for (int wide = 0; wide < 2; ++wide) {
    const uint32_t rows = 45, cols = 70;
    std::vector<int32_t> u = random_u(rows, cols, wide ? 0.3 : 0.01, false, rng);
    if (wide) {  // an int16 part that runs kInt16 (M <= 2049), one list entry
      for (int32_t& v : u) v = std::max(-2000, std::min(2000, v));
      u[5] = 100000;
    }
    std::vector<float> rs(rows), bias(rows);
    for (float& v : rs) v = 0.001f + 0.01f * (N(rng) + 1.0f);
    for (float& v : bias) v = 3.0f * N(rng);
    LevelMatrix m;
    CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
    CHECK(m.index_bits() == (wide ? 16 : 8) && m.outliers() > 0 && m.activation_range() > 0);
    for (size_t batch : {1, 14, 17}) {
      std::vector<float> X(batch * cols);
      for (float& v : X) v = N(rng);
      for (auto act : {levels::Activations::kFloat32, levels::Activations::kInt16}) {
        for (Isa isa : runnable_isas()) {
          for (unsigned t : {1u, 3u}) {
            LevelKernelOptions o;
            o.isa = isa;
            o.threads = t;
            o.activations = act;
            std::vector<float> plain(batch * rows), Y(batch * rows, 5.0f);
            CHECK(levels::matmul(m, X.data(), X.size(), batch, plain.data(), plain.size(), o).ok());
            CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), bias.data(), rows, o).ok());
            for (size_t b = 0; b < batch; ++b) {
              for (uint32_t r = 0; r < rows; ++r) plain[b * rows + r] += bias[r];
            }
            CHECK(std::memcmp(Y.data(), plain.data(), Y.size() * 4) == 0);
          }
        }
      }
    }
    std::vector<float> X(cols, 1.0f), Y(rows, 7.0f);
    CHECK(levels::matmul(m, X.data(), cols, 1, Y.data(), rows, bias.data(), rows - 1).code() ==
          StatusCode::kInvalidArgument);
    CHECK(levels::matmul(m, X.data(), cols, 1, Y.data(), rows, bias.data(), 0).code() == StatusCode::kInvalidArgument);
    CHECK(levels::matmul(m, X.data(), cols, 1, Y.data(), rows, nullptr, rows).code() == StatusCode::kInvalidArgument);
    CHECK(std::all_of(Y.begin(), Y.end(), [](float v) { return v == 7.0f; }));
  }
}

// kInt16 activations on int16 dense parts: the input range L shrinks with M = max |u| of the dense part so
// that every int32 partial sum stays exact; the same bits as the contract on every ISA (VNNI or not) and
// thread count; within the rounding bound of the float64 product; M beyond 2049 computes as kFloat32.
void test_int16_activations_wide() {
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> N(-1.0f, 1.0f);
  std::uniform_real_distribution<double> U(0, 1);
  struct Case {
    uint32_t rows, cols;
    int32_t M;
  };
  const Case cases[] = {{13, 37, 300}, {70, 1100, 2049}, {9, 64, 1000}, {40, 4500, 2049}, {5, 600, 200}};
  for (const Case& c : cases) {
    for (int with_cs = 0; with_cs < 2; ++with_cs) {
      // about a third of the entries beyond int8 (int16 storage), |u| <= M with M itself present, and a
      // few list entries beyond int16 (up to 2^30)
      std::vector<int32_t> u(size_t(c.rows) * c.cols);
      std::uniform_int_distribution<int> small(-127, 127), big(-c.M, c.M), huge(32768, 1 << 30);
      for (int32_t& v : u) {
        const double p = U(rng);
        v = p < 0.3 ? big(rng) : p < 0.305 ? huge(rng) * (U(rng) < 0.5 ? -1 : 1) : small(rng);
      }
      u[u.size() / 2] = -c.M;
      std::vector<float> rs(c.rows), cs(c.cols);
      for (float& v : rs) v = 0.001f + 0.01f * (N(rng) + 1.0f);
      for (float& v : cs) v = 1.0f + 0.5f * N(rng);
      const float* csp = with_cs ? cs.data() : nullptr;
      LevelMatrix m;
      CHECK(LevelMatrix::from_levels(c.rows, c.cols, u.data(), rs.data(), csp, &m).ok());
      CHECK(m.index_bits() == 16);
      CHECK(m.outliers() > 0);
      CHECK(m.dense_max() == c.M);
      const int64_t L = activation_range_of(c.M);
      CHECK(L >= 2047 && m.activation_range() == L);
      std::vector<float> W(u.size());
      m.to_dense(W.data());
      for (size_t batch : {1, 2, 5, 16, 19}) {
        std::vector<float> X(batch * c.cols);
        for (float& v : X) v = N(rng);
        const std::vector<float> want = int16_by_contract(c.rows, c.cols, u, rs, csp, X, batch, L);
        bool within = true;
        for (size_t b = 0; b < batch; ++b) {
          double amax = 0;
          for (uint32_t j = 0; j < c.cols; ++j)
            amax = std::max(amax, std::fabs(double(X[b * c.cols + j]) * (with_cs ? cs[j] : 1.0f)));
          for (uint32_t r = 0; r < c.rows; ++r) {
            double exact = 0, wabs = 0, mag = 0;
            for (uint32_t j = 0; j < c.cols; ++j) {
              const double w = W[size_t(r) * c.cols + j], x = X[b * c.cols + j];
              exact += w * x, wabs += std::fabs(w) / (with_cs ? cs[j] : 1.0f), mag += std::fabs(w * x);
            }
            const double bound = wabs * amax / double(L) * 0.5 * 1.0001 + 1e-6 * mag + 1e-30;
            within &= std::fabs(double(want[b * c.rows + r]) - exact) <= bound;
          }
        }
        CHECK(within);
        for (Isa isa : runnable_isas()) {
          for (bool vnni : {true, false}) {
            for (unsigned t : {1u, 3u}) {
              LevelKernelOptions o;
              o.activations = levels::Activations::kInt16;
              o.isa = isa;
              o.vnni = vnni;
              o.threads = t;
              std::vector<float> Y(batch * c.rows, 5.0f);
              CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
              CHECK(std::memcmp(Y.data(), want.data(), Y.size() * 4) == 0);
            }
          }
        }
      }
    }
  }
  // Sums at the edge of the int32 partial sums: every u = +-M (M = 2049, so L = 2047) and every input at
  // the row's maximum over many columns: 512 products of M * L = 2^31 - 511.
  for (int sign : {1, -1}) {
    const uint32_t cols = 8200;
    const int32_t M = 2049;
    std::vector<int32_t> u(cols, M * sign);
    std::vector<float> X(cols, 3.0f * float(sign)), one(1, 1.0f);
    LevelMatrix m;
    CHECK(LevelMatrix::from_levels(1, cols, u.data(), one.data(), nullptr, &m).ok());
    CHECK(m.index_bits() == 16 && m.activation_range() == 2047);
    const std::vector<float> want = int16_by_contract(1, cols, u, one, nullptr, X, 1, 2047);
    for (Isa isa : runnable_isas()) {
      for (bool vnni : {true, false}) {
        LevelKernelOptions o;
        o.isa = isa;
        o.vnni = vnni;
        o.activations = levels::Activations::kInt16;
        float y = 0;
        CHECK(levels::matmul(m, X.data(), X.size(), 1, &y, 1, o).ok());
        CHECK(y == want[0]);
        CHECK(std::fabs(double(y) - 3.0 * cols * M) <= 1e-6 * 3.0 * cols * M);
      }
    }
  }
  // int8 dense parts keep L = 32767; an int16 dense part with M = 2050 (L would be 2046) computes as
  // kFloat32.
  {
    std::vector<int32_t> u8(64, 127), u16(64, 2050);
    std::vector<float> rs(1, 0.5f), X(64);
    for (float& v : X) v = N(rng);
    LevelMatrix m8, m16;
    CHECK(LevelMatrix::from_levels(1, 64, u8.data(), rs.data(), nullptr, &m8).ok());
    CHECK(LevelMatrix::from_levels(1, 64, u16.data(), rs.data(), nullptr, &m16).ok());
    CHECK(m8.activation_range() == 32767 && m16.activation_range() == 0 && m16.dense_max() == 2050);
    for (Isa isa : runnable_isas()) {
      LevelKernelOptions o;
      o.isa = isa;
      float a = 0, b = 0;
      CHECK(levels::matmul(m16, X.data(), X.size(), 1, &a, 1, o).ok());
      o.activations = levels::Activations::kInt16;
      CHECK(levels::matmul(m16, X.data(), X.size(), 1, &b, 1, o).ok());
      CHECK(a == b);
    }
  }
}

// kInt16 sums beyond 2^53: list entries near +-2^31 times inputs at the int16 limit, a few hundred per
// row, so the final conversion of the int64 sum to double rounds (to nearest, as a scalar conversion);
// every ISA gives the contract's bits, also with the row count not a multiple of the vector width.
void test_int16_large_sums() {
  std::mt19937 rng(31);
  const uint32_t rows = 7, cols = 4800;
  std::uniform_int_distribution<int32_t> small(-127, 127), huge(1 << 30, std::numeric_limits<int32_t>::max());
  std::uniform_real_distribution<float> N(-1.0f, 1.0f);
  std::vector<int32_t> u(size_t(rows) * cols);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t j = 0; j < cols; ++j) {
      int32_t& v = u[size_t(r) * cols + j];
      v = small(rng);
      // rows 0-4 hold ~300 huge entries of one sign (sums up to ~2^55), rows 5-6 none
      if (r < 5 && j % 16 == r) v = huge(rng) * (r % 2 ? -1 : 1);
    }
  }
  u[3] = std::numeric_limits<int32_t>::min();
  std::vector<float> rs(rows, 1.0f);
  LevelMatrix m;
  CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m).ok());
  CHECK(m.index_bits() == 8 && m.outliers() == 5 * 300 + 1 && m.activation_range() == 32767);
  const size_t batch = 3;
  std::vector<float> X(batch * cols);
  for (float& v : X) v = N(rng);
  for (uint32_t j = 0; j < cols; ++j) {
    if (j % 16 < 5) X[j] = 1.0f;  // token 0: the row max at the huge entries' columns
  }
  const std::vector<float> want = int16_by_contract(rows, cols, u, rs, nullptr, X, batch, 32767);
  // token 0's integer sums are beyond 2^53 (the huge entries times q = 32767 dominate), so the
  // conversion to double rounds
  for (uint32_t r = 0; r < 5; ++r) {
    int64_t big = 0;
    for (uint32_t j = r; j < cols; j += 16) big += int64_t(u[size_t(r) * cols + j]) * 32767;
    CHECK(std::fabs(double(big)) > 9007199254740992.0);
  }
  for (Isa isa : runnable_isas()) {
    for (unsigned t : {1u, 2u}) {
      LevelKernelOptions o;
      o.isa = isa;
      o.threads = t;
      o.activations = levels::Activations::kInt16;
      std::vector<float> Y(batch * rows, 5.0f);
      CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
      CHECK(std::memcmp(Y.data(), want.data(), Y.size() * 4) == 0);
    }
  }
}

// float32 activations, list entries only: rows whose dense part is zero sum 0 exactly in any order, so
// their results are the list's own arithmetic: starting from 0, one float multiply and one float add per
// entry in the list's order, then the row scale, on every ISA (no fused multiply-add), for batches beyond
// the 16 tokens a SIMD list pass takes and with column scales.
void test_list_float_roundings() {
  std::mt19937 rng(37);
  const uint32_t rows = 37, cols = 300;
  std::uniform_int_distribution<int32_t> small(-127, 127), big(128, 1 << 24);
  std::uniform_real_distribution<float> N(-1.0f, 1.0f), C(0.5f, 2.0f);
  std::vector<int32_t> u(size_t(rows) * cols, 0);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t j = 0; j < cols; ++j) {
      int32_t& v = u[size_t(r) * cols + j];
      if (r % 3 != 0) v = small(rng);                          // rows with a dense part
      if ((j * 7 + r) % 23 == 0) v = big(rng) * (j % 2 ? -1 : 1);  // ~13 list entries per row
    }
  }
  std::vector<float> rs(rows), cs(cols);
  for (float& v : rs) v = 0.01f + 0.01f * (N(rng) + 1.0f);
  for (float& v : cs) v = C(rng);
  for (int with_cs = 0; with_cs < 2; ++with_cs) {
    LevelMatrix m;
    CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), with_cs ? cs.data() : nullptr, &m).ok());
    CHECK(m.index_bits() == 8 && m.outliers() > 0);
    for (size_t batch : {1, 5, 17, 33}) {
      std::vector<float> X(batch * cols);
      for (float& v : X) v = N(rng);
      std::vector<float> want(batch * rows);
      for (size_t b = 0; b < batch; ++b) {
        for (uint32_t r = 0; r < rows; r += 3) {
          float acc = 0.0f;
          for (uint32_t j = 0; j < cols; ++j) {
            const int32_t v = u[size_t(r) * cols + j];
            if (v == 0) continue;
            volatile float x = with_cs ? X[b * cols + j] * cs[j] : X[b * cols + j];
            volatile float p = float(v) * x;  // volatile: rounded here, not fused into the add
            acc = acc + p;
          }
          want[b * rows + r] = rs[r] * acc;
        }
      }
      for (Isa isa : runnable_isas()) {
        LevelKernelOptions o;
        o.isa = isa;
        std::vector<float> Y(batch * rows, 5.0f);
        CHECK(levels::matmul(m, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
        bool same = true;
        for (size_t b = 0; b < batch; ++b) {
          for (uint32_t r = 0; r < rows; r += 3) same &= Y[b * rows + r] == want[b * rows + r];
        }
        CHECK(same);
      }
    }
  }
}

// decode_level_matrix of every quantized tensor of a file: to_dense equals decode_float32 up to the
// float rounding of the row scale, and products match the float64 product of the decoded weights.
int check_model_levels(const Model& model, bool expect_scales) {
  int checked = 0;
  bool saw_scales = false;
  for (const TensorSummary& t : model.list()) {
    size_t i;
    CHECK(model.find(t.name, &i).ok());
    const TensorInfo& info = model.reader().tensor(i);
    const TensorInfo& src = info.storage == Storage::kAlias ? model.reader().tensor(info.alias_of) : info;
    LevelMatrix lm;
    Status s = model.decode_level_matrix(t.name, &lm, 2);
    if (src.storage != Storage::kQuantized || src.count == 0) {
      CHECK(s.code() == StatusCode::kInvalidArgument);
      continue;
    }
    CHECK(s.ok());
    if (!s.ok()) {
      std::fprintf(stderr, "  %s: %s\n", t.name.c_str(), s.message().c_str());
      continue;
    }
    saw_scales |= src.has_channel_scales();
    std::vector<float> w;
    CHECK(model.decode_float32(t.name, &w).ok());
    CHECK(uint64_t(lm.rows()) * lm.cols() == w.size());
    std::vector<float> W(w.size());
    lm.to_dense(W.data());
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
    for (size_t batch : {1, 3}) {
      std::vector<float> X(batch * lm.cols());
      for (float& v : X) v = N(rng);
      for (Isa isa : runnable_isas()) {
        LevelKernelOptions o;
        o.isa = isa;
        std::vector<float> Y(batch * lm.rows());
        CHECK(levels::matmul(lm, X.data(), X.size(), batch, Y.data(), Y.size(), o).ok());
        CHECK(rel_error(W, lm.rows(), lm.cols(), X, batch, Y) < 2e-5);
      }
    }
    ++checked;
  }
  CHECK(!expect_scales || saw_scales);
  levels::LevelMatrix lm;
  CHECK(model.decode_level_matrix("no such tensor", &lm).code() == StatusCode::kNotFound);
  CHECK(model.decode_level_matrix(model.list()[0].name, nullptr).code() == StatusCode::kInvalidArgument);
  return checked;
}

void test_golden_files() {
  for (const char* f : {"golden_v1_mixed.nnp", "golden_v1_blocks.nnp", "golden_v1_1_scales.nnp"}) {
    Model model;
    CHECK(Model::open_file(std::string(NNPRESS_TEST_DATA_DIR) + "/golden/" + f, &model).ok());
    CHECK(check_model_levels(model, std::string(f).find("scales") != std::string::npos) > 0);
  }
}

// The layout a matrix must have (CONTRACT, Storage), computed here from u alone: int16 when more
// than 1/16 of the entries lie beyond int8, its range the narrowest of kInt16DenseRanges leaving at
// most 1/1024 of the entries beyond it (else int16's); the list: every entry beyond the range, row by
// row in column order.
struct Layout {
  int bits;
  int32_t limit, dense_max = 0;
  std::vector<uint64_t> ptr;
  std::vector<uint32_t> col;
  std::vector<int32_t> val;
};
Layout expected_layout(const std::vector<int32_t>& u, uint32_t rows, uint32_t cols) {
  auto beyond = [&u](int64_t lim) {
    uint64_t n = 0;
    for (int32_t v : u) n += std::abs(int64_t(v)) > lim;
    return n;
  };
  Layout l;
  l.bits = beyond(127) * 16 > u.size() ? 16 : 8;
  l.limit = l.bits == 8 ? 127 : 32767;
  if (l.bits == 16) {
    for (int32_t r : LevelMatrix::kInt16DenseRanges) {
      if (beyond(r) * 1024 <= u.size()) {
        l.limit = r;
        break;
      }
    }
  }
  l.ptr.assign(size_t(rows) + 1, 0);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t j = 0; j < cols; ++j) {
      const int32_t v = u[size_t(r) * cols + j];
      if (std::abs(int64_t(v)) > l.limit) {
        l.col.push_back(j), l.val.push_back(v);
      } else {
        l.dense_max = std::max<int32_t>(l.dense_max, std::abs(v));
      }
    }
    l.ptr[size_t(r) + 1] = l.col.size();
  }
  if (l.col.empty()) l.ptr.clear();
  return l;
}

// One pass over row blocks of any split (a row at a time, uneven blocks, one block) gives the layout
// above, including matrices that turn int16 only in their last rows (widened late), in their first
// rows (early), int16 parts narrowed to each range with list entries of both origins merged in
// column order, and lists of entries beyond int16.
void test_one_pass_layout() {
  std::mt19937 rng(11);
  const uint32_t rows = 64, cols = 50;
  std::uniform_int_distribution<int> small(-127, 127), mid(127, 255), wide(255, 2048), huge(32767, 900000);
  std::uniform_real_distribution<double> U(0, 1);
  auto make = [&](int kind) {
    std::vector<int32_t> u(size_t(rows) * cols);
    for (uint32_t r = 0; r < rows; ++r) {
      for (uint32_t j = 0; j < cols; ++j) {
        int32_t v = small(rng);
        const double p = U(rng);
        switch (kind) {
          case 1: v = p < 0.03 ? mid(rng) : v; break;                    // int8 + list
          case 2: v = (r >= rows - 8 && p < 0.9) ? mid(rng) : v; break;  // int16 only from the last rows on
          case 3: v = (r < 6 && p < 0.9) ? mid(rng) : v; break;          // int16 from the first rows on
          case 4: v = p < 0.3 ? mid(rng) : (p < 0.3005 ? wide(rng) : v); break;  // int16 narrowed to 255
          case 5: v = p < 0.3 ? wide(rng) : (p < 0.31 ? huge(rng) : v); break;   // int16, list beyond int16
          case 6: v = p < 0.3 ? mid(rng) : (p < 0.301 ? wide(rng) : (p < 0.302 ? huge(rng) : v)); break;
          default: break;
        }
        if (kind >= 5 || U(rng) < 0.5) v = v * (U(rng) < 0.5 ? -1 : 1);
        u[size_t(r) * cols + j] = v;
      }
    }
    return u;
  };
  std::vector<float> rs(rows, 0.5f);
  int bits_seen = 0, limits_seen = 0;
  for (int kind = 0; kind <= 6; ++kind) {
    const std::vector<int32_t> u = make(kind);
    const Layout want = expected_layout(u, rows, cols);
    bits_seen |= want.bits;
    limits_seen |= want.limit == 255 ? 1 : want.limit == 32767 ? 2 : 0;
    for (int split = 0; split < 3; ++split) {
      uint32_t done = 0;
      auto next = [&](uint32_t* first, uint32_t* n, const int32_t** b) {
        const uint32_t sizes[3] = {1, 7, rows};
        *first = done, *n = std::min(rows - done, sizes[split] + (split == 1 ? done % 3 : 0));
        *b = u.data() + size_t(done) * cols;
        done += *n;
        return Status::Ok();
      };
      LevelMatrix m;
      CHECK(LevelMatrix::from_row_blocks(rows, cols, next, rs.data(), nullptr, &m).ok());
      const bool ok = m.index_bits() == want.bits && m.dense_max() == want.dense_max && m.outlier_ptr() == want.ptr &&
                      m.outlier_col() == want.col && m.outlier_val() == want.val;
      if (!ok) std::fprintf(stderr, "  one-pass layout: kind %d split %d differs\n", kind, split);
      CHECK(ok);
      CHECK(m.stride() == 64u);  // 50 columns: one 64-byte line in int8, two in int16
      std::vector<int32_t> back(u.size());
      m.indices(back.data());
      CHECK(back == u);
    }
  }
  CHECK(bits_seen == (8 | 16) && limits_seen == 3);
}

#ifdef NNPRESS_WITH_ENCODER
// Levels written directly (any int32 levels are valid for every method): trellis levels whose u
// leave int8, nearest/rdoq, row and column scales, several row blocks, an alias and a raw tensor.
void test_written_file() {
  std::mt19937 rng(11);
  const uint32_t rows = 96, cols = 75;
  std::vector<int32_t> lv = random_u(rows, cols, 0.03, false, rng);
  for (int32_t& v : lv) v /= 2;  // trellis u ~ 2k: the same magnitudes after reconstruction
  std::vector<int8_t> rexp(rows), cexp(cols);
  for (auto& e : rexp) e = int8_t(int(rng() % 64) - 32);
  for (auto& e : cexp) e = int8_t(int(rng() % 32) - 16);
  std::vector<float> raw(cols, 0.5f);
  std::vector<TensorInput> in;
  const QuantMethod methods[] = {QuantMethod::kTrellis, QuantMethod::kNearest, QuantMethod::kRdoq};
  for (int k = 0; k < 6; ++k) {
    TensorInput t;
    t.name = std::string("t") + std::to_string(k);
    t.dtype = DType::kFloat32;
    t.storage = Storage::kQuantized;
    t.shape = {rows, 3, 25};
    t.levels = lv.data();
    t.method = methods[k % 3];
    t.step = 0.0123;
    t.rows_per_block = 10;
    if (k >= 3) t.row_scale_exp = rexp.data();
    if (k == 4 || k == 5) t.col_scale_exp = cexp.data();
    in.push_back(t);
  }
  TensorInput alias;
  alias.name = "alias";
  alias.storage = Storage::kAlias;
  alias.shape = {rows, 3, 25};
  alias.alias_of = 0;
  in.push_back(alias);
  TensorInput r;
  r.name = "raw";
  r.shape = {cols};
  r.raw = raw.data();
  r.raw_size = raw.size() * 4;
  in.push_back(r);
  std::vector<uint8_t> bytes;
  WriterOptions wo;
  Status s = write_container(in, wo, &bytes);
  CHECK(s.ok());
  if (!s.ok()) return;
  Model model;
  CHECK(Model::open_bytes(bytes, &model).ok());
  CHECK(check_model_levels(model, true) == 7);
  LevelMatrix lm;
  CHECK(model.decode_level_matrix("t0", &lm).ok());
  CHECK(lm.rows() == rows && lm.cols() == cols && lm.outliers() > 0);
  // Trellis u: the level through the state machine (u = 2k or 2k -+ 1), not the level.
  std::vector<int32_t> u(size_t(rows) * cols);
  lm.indices(u.data());
  bool odd_seen = false;
  for (int32_t v : u) odd_seen |= (v & 1) != 0;
  CHECK(odd_seen);
  CHECK(model.decode_level_matrix("raw", &lm).code() == StatusCode::kInvalidArgument);
  CHECK(lm.rows() == rows);  // unchanged
  // kThrow mode throws for a raw tensor.
  model.set_error_mode(ErrorMode::kThrow);
  bool threw = false;
  try {
    (void)model.decode_level_matrix("raw", &lm);
  } catch (const Error& e) {
    threw = e.status().code() == StatusCode::kInvalidArgument;
  }
  CHECK(threw);
}

// Tensors larger than kBuildBlockElements are built a block of chunks at a time, each decoded once:
// the matrix equals from_levels on the whole decoded tensor (same layout, indices, list, bytes), for
// an int8 and an int16 layout, trellis and nearest; from_row_blocks refuses blocks out of order.
void test_chunked_build() {
  std::mt19937 rng(5);
  const uint32_t rows = 1100, cols = 1000;  // 1.1 M levels: two build blocks
  std::vector<std::vector<int32_t>> lvs = {random_u(rows, cols, 0.02, false, rng),
                                           random_u(rows, cols, 0.2, false, rng)};
  for (int32_t& v : lvs[0]) v /= 2;
  std::vector<TensorInput> in;
  for (size_t k = 0; k < 4; ++k) {
    TensorInput t;
    t.name = "w" + std::to_string(k);
    t.storage = Storage::kQuantized;
    t.shape = {rows, cols};
    t.levels = lvs[k / 2].data();
    t.method = k % 2 ? QuantMethod::kNearest : QuantMethod::kTrellis;
    t.step = 0.01;
    t.rows_per_block = 100;
    in.push_back(t);
  }
  std::vector<uint8_t> bytes;
  CHECK(write_container(in, WriterOptions(), &bytes).ok());
  ContainerReader r;
  CHECK(ContainerReader::open_memory(bytes.data(), bytes.size(), &r).ok());
  int bits_seen = 0;
  for (size_t k = 0; k < 4; ++k) {
    LevelMatrix chunked;
    CHECK(level_matrix_from_reader(r, k, &chunked, 2).ok());
    std::vector<int32_t> u(size_t(rows) * cols);
    CHECK(r.decode_levels(k, u.data(), u.size()).ok());
    if (in[k].method == QuantMethod::kTrellis) {
      for (uint32_t i = 0; i < rows; ++i) {
        int state = 0;
        for (uint32_t j = 0; j < cols; ++j) {
          const int32_t lv = u[size_t(i) * cols + j];
          u[size_t(i) * cols + j] = int32_t(dq_index(state, lv));
          state = dq_next_state(state, lv);
        }
      }
    }
    std::vector<float> rs(rows, 0.01f);
    LevelMatrix whole;
    CHECK(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &whole).ok());
    CHECK(chunked.index_bits() == whole.index_bits() && chunked.outliers() == whole.outliers());
    CHECK(chunked.nbytes() == whole.nbytes() && chunked.dense_max() == whole.dense_max());
    std::vector<int32_t> a(u.size()), b(u.size());
    chunked.indices(a.data());
    whole.indices(b.data());
    CHECK(a == u && b == u);
    bits_seen |= chunked.index_bits();
  }
  CHECK(bits_seen == (8 | 16));
  // misuse: blocks out of order, missing rows
  std::vector<int32_t> u = lvs[1];
  u.resize(size_t(4) * cols);
  std::vector<float> rs(4, 1.0f);
  auto blocks = [&](std::vector<std::pair<uint32_t, uint32_t>> list) {
    size_t k = 0;
    return [&u, list, k, cols](uint32_t* first, uint32_t* n, const int32_t** b) mutable {
      *n = 0;
      if (k < list.size()) *first = list[k].first, *n = list[k].second, *b = u.data() + size_t(list[k].first) * cols;
      ++k;
      return Status::Ok();
    };
  };
  LevelMatrix m;
  CHECK(LevelMatrix::from_row_blocks(4, cols, blocks({{0, 2}, {2, 2}}), rs.data(), nullptr, &m).ok());
  CHECK(m.rows() == 4);
  CHECK(LevelMatrix::from_row_blocks(4, cols, blocks({{2, 2}, {0, 2}}), rs.data(), nullptr, &m).code() ==
        StatusCode::kInvalidArgument);
  CHECK(LevelMatrix::from_row_blocks(4, cols, blocks({{0, 2}}), rs.data(), nullptr, &m).code() ==
        StatusCode::kInvalidArgument);
  CHECK(LevelMatrix::from_row_blocks(4, cols, blocks({{0, 2}, {1, 3}}), rs.data(), nullptr, &m).code() ==
        StatusCode::kInvalidArgument);
  CHECK(m.rows() == 4);  // unchanged after the failures
  auto failing = [](uint32_t*, uint32_t*, const int32_t**) { return Status(StatusCode::kCorrupt, "bad chunk"); };
  CHECK(LevelMatrix::from_row_blocks(4, cols, failing, rs.data(), nullptr, &m).code() == StatusCode::kCorrupt);
}
#endif

}  // namespace

int main() {
  std::printf("testing ISAs:");
  for (Isa i : runnable_isas()) std::printf(" %s", isa_name(i));
  std::printf(" (auto: %s)\n", isa_name(detect_isa()));
  test_build_checks();
  test_storage_choice();
  test_one_pass_layout();
  test_products();
  test_nonfinite_inputs();
  test_threads_deterministic();
  test_product_checks();
  test_int16_activations();
  test_int16_activations_wide();
  test_int16_rounding_edges();
  test_bias();
  test_int16_large_sums();
  test_list_float_roundings();
  test_golden_files();
#ifdef NNPRESS_WITH_ENCODER
  test_written_file();
  test_chunked_build();
#endif
  return TEST_MAIN_RESULT();
}
