// CER / CSER / dense-codebook containers and kernels: the seed talk's golden 5x12 example,
// validation of corrupt structures, and every compiled ISA against the scalar reference.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "check.h"
#include "nnpress/cpu.h"
#include "nnpress/sparse/kernels.h"
#include "nnpress/sparse/matrix.h"

using namespace nnpress;

// The SIMD ISAs this CPU runs (the scalar reference is always there).
static std::vector<Isa> simd_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    if (isa_supported(i)) out.push_back(i);
  }
  return out;
}
using namespace nnpress::sparse;

namespace {

// The 5 x 12 matrix of the seed talk (Wiedemann et al., "Matrix Formats" slides), one row per line
// (clang-format would pack several rows on a line).
// clang-format off
const float kTalk[5][12] = {
    {0, 3, 0, 2, 4, 0, 0, 2, 3, 4, 0, 4},
    {4, 4, 0, 0, 0, 4, 0, 0, 4, 4, 0, 4},
    {4, 0, 3, 4, 0, 0, 0, 4, 0, 2, 0, 0},
    {0, 0, 0, 4, 4, 4, 0, 3, 4, 4, 0, 0},
    {0, 4, 4, 0, 0, 4, 0, 4, 0, 0, 0, 0},
};
// clang-format on

void test_golden_cer() {
  RowGroupMatrix m;
  CHECK(RowGroupMatrix::from_dense(Format::kCER, &kTalk[0][0], 5, 12, &m).ok());
  const std::vector<float> omega = {0, 4, 3, 2};
  const std::vector<uint32_t> col = {4, 9, 11, 1, 8, 3, 7, 0, 1, 5, 8, 9, 11, 0,
                                     3, 7, 2,  9, 3, 4, 5, 8, 9, 7, 1, 2, 5,  7};
  const std::vector<uint32_t> omega_ptr = {0, 3, 5, 7, 13, 16, 17, 18, 23, 24, 28};
  const std::vector<uint32_t> row_ptr = {0, 3, 4, 7, 9, 10};
  const RowGroupArrays a = m.arrays();
  CHECK(a.omega == omega);
  CHECK(a.col == col);
  CHECK(a.group_ptr == omega_ptr);
  CHECK(a.row_ptr == row_ptr);
  CHECK(!m.wide() && m.col16().size() == 28);
  // Storage in entries: |Ω| + |colI| + |ΩPtr| + |rowPtr| = 4 + 28 + 11 + 6 = 49 (dense 60, CSR 62).
  CHECK(a.omega.size() + a.col.size() + a.group_ptr.size() + a.row_ptr.size() == 49);
  // The talk's arrays, given directly, validate and describe the same matrix.
  RowGroupArrays given;
  given.format = Format::kCER, given.rows = 5, given.cols = 12, given.omega = omega, given.col = col;
  given.group_ptr = omega_ptr, given.row_ptr = row_ptr;
  RowGroupMatrix m2;
  CHECK(RowGroupMatrix::from_arrays(given, &m2).ok());
  std::vector<float> dense(60);
  m2.to_dense(dense.data());
  for (int i = 0; i < 60; ++i) CHECK(dense[i] == (&kTalk[0][0])[i]);
  // The second row's dot product: 4 * (a1 + a2 + a6 + a9 + a10 + a12), one multiply.
  std::vector<float> x(12), y(5);
  for (int c = 0; c < 12; ++c) x[c] = float(c + 1);
  CHECK(matvec(m2, x.data(), 12, y.data(), 5, {Isa::kScalar, 1}).ok());
  CHECK(y[1] == 4.0f * (1 + 2 + 6 + 9 + 10 + 12));
  for (int r = 0; r < 5; ++r) {
    float ref = 0;
    for (int c = 0; c < 12; ++c) ref += kTalk[r][c] * x[c];
    CHECK(y[r] == ref);  // small integers: exact in any order
  }
}

void test_golden_cser() {
  RowGroupMatrix m;
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, &kTalk[0][0], 5, 12, &m).ok());
  const RowGroupArrays a = m.arrays();
  // Same groups as CER here (no row lacks a value that a later group uses), plus a value index each.
  CHECK((a.group_value == std::vector<uint32_t>{1, 2, 3, 1, 1, 2, 3, 1, 2, 1}));
  CHECK((a.group_ptr == std::vector<uint32_t>{0, 3, 5, 7, 13, 16, 17, 18, 23, 24, 28}));
  CHECK(m.group_value8().size() == 10);
  // A row with values 4 and 2 but not 3: CER pads an empty group, CSER does not.
  // Counts: 0 x3, 3 x2, 4 x2 (tie: smaller first), 2 x1 -> Ω = [0, 3, 4, 2].
  const float w[2][4] = {{4, 0, 2, 0}, {4, 3, 3, 0}};
  RowGroupMatrix cer, cser;
  CHECK(RowGroupMatrix::from_dense(Format::kCER, &w[0][0], 2, 4, &cer).ok());
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, &w[0][0], 2, 4, &cser).ok());
  const RowGroupArrays ce = cer.arrays(), cs = cser.arrays();
  CHECK((ce.omega == std::vector<float>{0, 3, 4, 2}));
  CHECK((ce.group_ptr == std::vector<uint32_t>{0, 0, 1, 2, 4, 5}));
  CHECK((ce.row_ptr == std::vector<uint32_t>{0, 3, 5}));
  CHECK((ce.col == std::vector<uint32_t>{0, 2, 1, 2, 0}));
  CHECK((cs.group_ptr == std::vector<uint32_t>{0, 1, 2, 4, 5}));
  CHECK((cs.group_value == std::vector<uint32_t>{2, 3, 1, 2}));
  CHECK((cs.row_ptr == std::vector<uint32_t>{0, 2, 4}));
}

void expect_corrupt(const RowGroupArrays& a, const char* what) {
  RowGroupMatrix m;
  const Status s = RowGroupMatrix::from_arrays(a, &m);
  if (s.ok() || s.code() != StatusCode::kCorrupt) std::fprintf(stderr, "not rejected: %s\n", what);
  CHECK(!s.ok() && s.code() == StatusCode::kCorrupt);
}

void test_validate() {
  RowGroupMatrix m;
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, &kTalk[0][0], 5, 12, &m).ok());
  const RowGroupArrays good = m.arrays();
  RowGroupArrays a = good;
  a.col[5] = 12;
  expect_corrupt(a, "column out of range");
  a = good, a.col[1] = a.col[0];
  expect_corrupt(a, "duplicate column");
  a = good, a.group_ptr[3] = 40;
  expect_corrupt(a, "group_ptr beyond col");
  a = good, a.group_ptr.back() = 27;
  expect_corrupt(a, "group_ptr end != nnz");
  a = good, a.row_ptr[2] = 11;
  expect_corrupt(a, "row_ptr beyond groups");
  a = good, a.row_ptr.pop_back();
  expect_corrupt(a, "row_ptr size");
  a = good, a.group_value[0] = 4;
  expect_corrupt(a, "value index out of range");
  a = good, a.group_value[0] = 0;
  expect_corrupt(a, "value index 0 (implicit)");
  a = good, a.group_value.pop_back();
  expect_corrupt(a, "group_value size");
  a = good, a.omega[2] = NAN;
  expect_corrupt(a, "non-finite omega");
  a = good, a.omega.clear();
  expect_corrupt(a, "empty omega");
  a = good, a.format = Format::kCER;
  expect_corrupt(a, "CER with group values");
  a = good, a.format = Format::kCER, a.group_value.clear(), a.omega.resize(3);
  expect_corrupt(a, "CER row with more groups than values");
  // Builders reject bad input as invalid arguments.
  const float bad[2] = {1.0f, NAN};
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, bad, 1, 2, &m).code() == StatusCode::kInvalidArgument);
  const int32_t lv[2] = {1, 2};
  CHECK(RowGroupMatrix::from_levels(Format::kCSER, lv, 1, 2, 0.0f, &m).code() == StatusCode::kInvalidArgument);
  std::vector<float> many(17);
  for (int i = 0; i < 17; ++i) many[i] = float(i);
  CodebookMatrix cb;
  CHECK(CodebookMatrix::from_dense(many.data(), 1, 17, &cb).code() == StatusCode::kInvalidArgument);
  CHECK(CodebookMatrix::from_arrays(1, 40, {1.0f}, std::vector<uint8_t>(31), &cb).code() == StatusCode::kCorrupt);
  // Kernel arguments are checked.
  std::vector<float> x(11), y(5);
  CHECK(matvec(m, x.data(), 11, y.data(), 5).code() == StatusCode::kInvalidArgument);
}

struct Case {
  uint32_t rows, cols, values;
  double density;
  bool implicit_nonzero;
};

std::vector<float> random_matrix(std::mt19937& rng, const Case& c) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> vals(c.values);
  for (uint32_t k = 0; k < c.values; ++k) vals[k] = (float(k) - float(c.values) / 2) * 0.037f;
  const float base = c.implicit_nonzero ? 0.25f : 0.0f;
  std::vector<float> w(size_t(c.rows) * c.cols, base);
  std::uniform_int_distribution<uint32_t> pick(0, c.values - 1);
  for (auto& v : w) {
    if (u(rng) < c.density) v = vals[pick(rng)];
  }
  return w;
}

bool close(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& scale) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::fabs(a[i] - b[i]) <= 1e-5f * scale[i] + 1e-6f)) {
      std::fprintf(stderr, "mismatch at %zu: %g vs %g (scale %g)\n", i, a[i], b[i], scale[i]);
      return false;
    }
  }
  return true;
}

void test_isas_against_scalar() {
  std::mt19937 rng(1234);
  const Case cases[] = {
      {37, 150, 16, 0.3, false},
      {64, 513, 5, 0.05, false},
      {9, 1000, 300, 0.5, false},
      {33, 64, 16, 1.0, false},
      {20, 77, 3, 0.2, true},
      {3, 70000, 12, 0.01, false},
      {1, 1, 1, 1.0, false},
      {17, 31, 16, 0.0, false},
      {130, 257, 15, 0.6, false},
      {20, 2000, 4, 0.8, false},  // large groups: the group-sum paths
      // Rows longer than a batch-1 block (2048 entries): pieces that start and end inside groups.
      {4, 9000, 5, 0.9, false},
      {3, 5000, 200, 0.95, false},
      // Short rows, many of them empty, in blocks that hold many rows.
      {700, 40, 6, 0.05, false},
      // Tiny groups in rows of more groups than the batched kernel buffers values for (2048): their group
      // values in chunks (CER: 2500 groups a row).
      {6, 3000, 2500, 0.6, false},
  };
  std::vector<Isa> isas = simd_isas();
  isas.insert(isas.begin(), Isa::kScalar);
  std::printf("testing ISAs:");
  for (Isa i : isas) std::printf(" %s", isa_name(i));
  std::printf(" (auto: %s)\n", isa_name(detect_isa()));
  const size_t batches[] = {1, 3, 16, 32, 33, 48, 60, 70, 130};
  for (size_t ci = 0; ci <= sizeof(cases) / sizeof(cases[0]); ++ci) {
    // The extra last case: mostly tiny groups (the flat paths) plus one row holding a single group
    // larger than a flat run's buffer (3000 entries).
    const bool mixed = ci == sizeof(cases) / sizeof(cases[0]);
    const Case c = mixed ? Case{40, 3000, 16, 0.01, false} : cases[ci];
    std::vector<float> w = random_matrix(rng, c);
    if (mixed) {
      for (uint32_t k = 0; k < c.cols; ++k) w[k] = 1.0f;
    }
    std::normal_distribution<float> nd;
    for (size_t batch : batches) {
      std::vector<float> X(size_t(c.cols) * batch), scale(size_t(c.rows) * batch, 0.0f), ref(scale.size());
      for (auto& v : X) v = nd(rng);
      for (uint32_t r = 0; r < c.rows; ++r) {
        for (size_t b = 0; b < batch; ++b) {
          double s = 0, sa = 0;
          for (uint32_t k = 0; k < c.cols; ++k) {
            s += double(w[size_t(r) * c.cols + k]) * X[k * batch + b];
            sa += std::fabs(double(w[size_t(r) * c.cols + k]) * X[k * batch + b]);
          }
          ref[r * batch + b] = float(s);
          scale[r * batch + b] = float(sa) + std::fabs(float(s));
        }
      }
      for (Format f : {Format::kCER, Format::kCSER, Format::kCodebook}) {
        if (f == Format::kCodebook && c.values + (c.implicit_nonzero ? 1 : 0) + (mixed ? 1 : 0) > 16) continue;
        RowGroupMatrix rg;
        CodebookMatrix cb;
        if (f == Format::kCodebook) {
          CHECK(CodebookMatrix::from_dense(w.data(), c.rows, c.cols, &cb).ok());
        } else {
          CHECK(RowGroupMatrix::from_dense(f, w.data(), c.rows, c.cols, &rg).ok());
          CHECK(rg.wide() == (c.cols > 65536));
        }
        std::vector<float> dense(w.size());
        if (f == Format::kCodebook) cb.to_dense(dense.data());
        else rg.to_dense(dense.data());
        CHECK(dense == w);
        std::vector<float> y_scalar(ref.size());
        for (Isa isa : isas) {
          for (unsigned threads : {1u, 2u}) {
            std::vector<float> y(ref.size(), NAN);
            KernelOptions o{isa, threads};
            Status s;
            if (batch == 1) {
              s = f == Format::kCodebook ? matvec(cb, X.data(), X.size(), y.data(), y.size(), o)
                                         : matvec(rg, X.data(), X.size(), y.data(), y.size(), o);
            } else {
              s = f == Format::kCodebook ? matmat(cb, X.data(), X.size(), batch, y.data(), y.size(), o)
                                         : matmat(rg, X.data(), X.size(), batch, y.data(), y.size(), o);
            }
            CHECK(s.ok());
            if (isa == Isa::kScalar && threads == 1) {
              y_scalar = y;
              CHECK(close(y, ref, scale));
            } else if (isa == Isa::kScalar) {
              CHECK(y == y_scalar);  // threads never change the result
            } else {
              if (!close(y, y_scalar, scale)) {
                std::fprintf(stderr, "  isa %s format %s case %ux%u batch %zu\n", isa_name(isa), format_name(f), c.rows,
                             c.cols, batch);
                CHECK(false);
              }
            }
          }
        }
      }
    }
  }
}

// Batch 1 picks its value stores per group (fill: L floats, U unconditional stores, a loop for longer
// groups) and the group-sum path from the matrix's mean group length. A sweep of mean group lengths from
// ~1 to ~130 entries runs every variant on every ISA, and a bimodal matrix (tiny groups, a few groups of
// hundreds of entries) runs the rare loop past U * L; one row holds more groups than a vector has lanes,
// rows are empty, 1-entry groups are common at the short end, and groups cross vector boundaries.
void test_batch1_group_lengths() {
  std::mt19937 rng(4321);
  const std::vector<Isa> isas = simd_isas();
  // cols * density / (values - 1) = mean group length (16 values: ~1 to ~130 entries). Short groups without
  // a kernel plan (RowGroupMatrix::has_starts) take rows_matvec's group loop on x86 too: 40 values with
  // groups of ~3.5-4.5 entries, and 300 values (16-bit value indices) with groups of ~1.7-4.
  struct Setting {
    uint32_t values;
    double density;
  };
  std::vector<Setting> settings;
  for (double d : {0.004, 0.007, 0.01, 0.013, 0.02, 0.035, 0.05, 0.07, 0.09, 0.12, 0.16, 0.2, 0.25, 0.32, 0.5}) {
    settings.push_back({16, d});
  }
  for (Setting st :
       {Setting{40, 0.035}, Setting{40, 0.045}, Setting{300, 0.13}, Setting{300, 0.2}, Setting{300, 0.3}}) {
    settings.push_back(st);
  }
  for (int bimodal = 0; bimodal < 2; ++bimodal) {
    for (const Setting& st : settings) {
      const double d = st.density;
      if (bimodal && (d > 0.05 || st.values != 16)) continue;
      const Case c{45, 4000, st.values, d, false};
      std::vector<float> w = random_matrix(rng, c);
      for (uint32_t r = 0; r < c.rows; r += 11) {  // empty rows
        for (uint32_t k = 0; k < c.cols; ++k) w[size_t(r) * c.cols + k] = 0.0f;
      }
      if (bimodal) {  // a few groups of 300-900 entries among tiny ones
        for (uint32_t r = 3; r < c.rows; r += 7) {
          const uint32_t len = 300 * (1 + r % 3);
          for (uint32_t k = 0; k < len; ++k) w[size_t(r) * c.cols + (k * 4 + r) % c.cols] = 0.037f * 5;
        }
      }
      std::normal_distribution<float> nd;
      std::vector<float> x(c.cols), scale(c.rows, 0.0f);
      for (auto& v : x) v = nd(rng);
      for (uint32_t r = 0; r < c.rows; ++r) {
        double sa = 0;
        for (uint32_t k = 0; k < c.cols; ++k) sa += std::fabs(double(w[size_t(r) * c.cols + k]) * x[k]);
        scale[r] = float(sa);
      }
      for (Format f : {Format::kCER, Format::kCSER}) {
        RowGroupMatrix rg;
        CHECK(RowGroupMatrix::from_dense(f, w.data(), c.rows, c.cols, &rg).ok());
        std::vector<float> ref(c.rows), y(c.rows);
        CHECK(matvec(rg, x.data(), x.size(), ref.data(), ref.size(), {Isa::kScalar, 1}).ok());
        for (Isa isa : isas) {
          std::fill(y.begin(), y.end(), NAN);
          CHECK(matvec(rg, x.data(), x.size(), y.data(), y.size(), {isa, 1}).ok());
          if (!close(y, ref, scale)) {
            std::fprintf(
                stderr, "  batch 1 group lengths: isa %s format %s values %u density %g bimodal %d (mean group %.1f)\n",
                isa_name(isa), format_name(f), st.values, d, bimodal, double(rg.nnz()) / double(rg.num_groups()));
            CHECK(false);
          }
        }
      }
    }
  }
}

// Inputs may hold any floats: every ISA turns exactly the rows that meet an Inf or a NaN into Inf / NaN
// (a kernel that loaded another row's input, even into a lane it then masks by multiplying with 0,
// would turn 0 * Inf into NaN), and leaves the other rows finite and equal to the scalar result.
void test_nonfinite_inputs() {
  std::mt19937 rng(7);
  const std::vector<Isa> isas = simd_isas();
  // Groups of ~1, ~30 and ~450 entries at batch 1: the plan kernel, the x86 Ω-index kernel (twice: in the
  // second matrix most rows' next rows start with column 17 or 101, which the masked lanes past a row's end
  // load), the group sums.
  for (const Case& c : {Case{300, 200, 12, 0.03, false}, Case{40, 2000, 16, 0.25, false},
                        Case{300, 120, 4, 0.75, false}, Case{50, 3000, 7, 0.9, false}}) {
    const std::vector<float> w = random_matrix(rng, c);
    for (size_t batch : {size_t(1), size_t(5), size_t(40)}) {
      std::normal_distribution<float> nd;
      std::vector<float> X(size_t(c.cols) * batch);
      for (auto& v : X) v = nd(rng);
      for (size_t b = 0; b < batch; ++b) {
        X[size_t(17) * batch + b] = INFINITY;
        X[size_t(101) * batch + b] = NAN;
      }
      for (Format f : {Format::kCER, Format::kCSER, Format::kCodebook}) {
        RowGroupMatrix rg;
        CodebookMatrix cb;
        if (f == Format::kCodebook) {
          CHECK(CodebookMatrix::from_dense(w.data(), c.rows, c.cols, &cb).ok());
        } else {
          CHECK(RowGroupMatrix::from_dense(f, w.data(), c.rows, c.cols, &rg).ok());
        }
        auto run = [&](Isa isa, std::vector<float>* y) {
          y->assign(size_t(c.rows) * batch, 0.0f);
          const KernelOptions o{isa, 1};
          const Status s = f == Format::kCodebook ? matmat(cb, X.data(), X.size(), batch, y->data(), y->size(), o)
                                                  : matmat(rg, X.data(), X.size(), batch, y->data(), y->size(), o);
          CHECK(s.ok());
        };
        std::vector<float> ref, y;
        run(Isa::kScalar, &ref);
        size_t nonfinite = 0;
        for (float v : ref) nonfinite += !std::isfinite(v);
        CHECK(nonfinite > 0);
        // Sparse rows miss the bad columns; the codebook layout multiplies every weight (0 * Inf = NaN).
        if (f != Format::kCodebook && c.density < 0.5) CHECK(nonfinite < ref.size() / 2);
        for (Isa isa : isas) {
          run(isa, &y);
          for (size_t i = 0; i < y.size(); ++i) {
            const bool same = std::isnan(ref[i]) ? std::isnan(y[i])
                              : std::isinf(ref[i])
                                  ? y[i] == ref[i]
                                  : std::isfinite(y[i]) && std::fabs(y[i] - ref[i]) <= 1e-4f * (1 + std::fabs(ref[i]));
            if (!same) {
              std::fprintf(stderr, "non-finite inputs: isa %s format %s batch %zu out %zu: %g vs %g\n", isa_name(isa),
                           format_name(f), batch, i, y[i], ref[i]);
              CHECK(false);
              break;
            }
          }
        }
      }
    }
  }
}

// Random corruptions of valid arrays: each is either rejected as kCorrupt or, if it happens to be a
// valid structure, usable by every kernel (run under NNPRESS_SANITIZE=ON to see no wild access).
void test_random_corruptions() {
  std::mt19937 rng(99);
  const Case c{23, 90, 6, 0.3, false};
  const std::vector<float> w = random_matrix(rng, c);
  std::vector<Isa> isas = simd_isas();
  isas.insert(isas.begin(), Isa::kScalar);
  int rejected = 0, accepted = 0;
  for (Format f : {Format::kCER, Format::kCSER}) {
    RowGroupMatrix m;
    CHECK(RowGroupMatrix::from_dense(f, w.data(), c.rows, c.cols, &m).ok());
    const RowGroupArrays good = m.arrays();
    for (int trial = 0; trial < 3000; ++trial) {
      RowGroupArrays a = good;
      std::vector<uint32_t>* arrays[] = {&a.col, &a.group_ptr, &a.row_ptr, &a.group_value};
      const int which = int(rng() % (f == Format::kCSER ? 4 : 3));
      std::vector<uint32_t>& v = *arrays[which];
      switch (rng() % 4) {
        case 0:  // one entry anywhere in range of small values
          if (!v.empty()) v[rng() % v.size()] = rng() % 128;
          break;
        case 1:  // one entry huge
          if (!v.empty()) v[rng() % v.size()] = 0xFFFFFFF0u + rng() % 16;
          break;
        case 2:  // truncate
          if (!v.empty()) v.resize(rng() % v.size());
          break;
        default:  // off by one
          if (!v.empty()) v[rng() % v.size()] += (rng() & 1) ? 1 : uint32_t(-1);
          break;
      }
      RowGroupMatrix bad;
      const Status s = RowGroupMatrix::from_arrays(a, &bad);
      if (!s.ok()) {
        CHECK(s.code() == StatusCode::kCorrupt);
        ++rejected;
        continue;
      }
      ++accepted;
      std::vector<float> x(c.cols, 1.0f), y(c.rows), X(size_t(c.cols) * 3, 1.0f), Y(size_t(c.rows) * 3), d(w.size());
      bad.to_dense(d.data());
      for (Isa isa : isas) {
        CHECK(matvec(bad, x.data(), x.size(), y.data(), y.size(), {isa, 1}).ok());
        CHECK(matmat(bad, X.data(), X.size(), 3, Y.data(), Y.size(), {isa, 1}).ok());
      }
    }
  }
  std::printf("random corruptions: %d rejected, %d still valid structures\n", rejected, accepted);
  CHECK(rejected > 1000);
}

// The kernel plan (group starts as bits, RowGroupMatrix::has_starts) exists exactly for <= 256 values,
// 16-bit columns and non-empty groups of <= 8 entries on average, and adds no format bytes. Its batch-1
// kernel (x86) matches the scalar reference with rows longer than a block (the fallback), CER padding
// groups, empty rows, a last row that ends the matrix mid-chunk, and thread splits that start mid-matrix.
void starts_plan_case(std::mt19937& rng, uint32_t values) {
  const Case c{300, 3000, values, values > 16 ? 0.05 : 0.01, false};
  std::vector<float> w = random_matrix(rng, c);
  std::uniform_int_distribution<uint32_t> pick(1, c.values - 1);
  for (uint32_t r : {5u, 150u, 299u}) {  // rows of ~3000 entries: more than a block
    for (uint32_t k = 0; k < c.cols; ++k) w[size_t(r) * c.cols + k] = (float(pick(rng)) - float(c.values) / 2) * 0.037f;
  }
  for (uint32_t r = 7; r < c.rows; r += 13) {  // empty rows
    for (uint32_t k = 0; k < c.cols; ++k) w[size_t(r) * c.cols + k] = 0.0f;
  }
  for (uint32_t k = 0; k < c.cols; ++k) {  // the last row: 11 entries (the matrix ends mid-chunk)
    if (k >= 11) w[size_t(c.rows - 1) * c.cols + k] = 0.0f;
  }
  std::normal_distribution<float> nd;
  std::vector<float> x(c.cols), scale(c.rows, 0.0f);
  for (auto& v : x) v = nd(rng);
  for (uint32_t r = 0; r < c.rows; ++r) {
    for (uint32_t k = 0; k < c.cols; ++k) scale[r] += std::fabs(w[size_t(r) * c.cols + k] * x[k]);
  }
  for (Format f : {Format::kCER, Format::kCSER}) {
    RowGroupMatrix rg;
    CHECK(RowGroupMatrix::from_dense(f, w.data(), c.rows, c.cols, &rg).ok());
    CHECK(rg.has_starts());
    CHECK(rg.plan_bytes() >= rg.nnz() / 8);
    std::vector<float> ref(c.rows), y(c.rows);
    CHECK(matvec(rg, x.data(), x.size(), ref.data(), ref.size(), {Isa::kScalar, 1}).ok());
    for (Isa isa : simd_isas()) {
      for (unsigned threads : {1u, 2u, 3u}) {
        std::fill(y.begin(), y.end(), NAN);
        CHECK(matvec(rg, x.data(), x.size(), y.data(), y.size(), {isa, threads}).ok());
        if (!close(y, ref, scale)) {
          std::fprintf(stderr, "  starts plan: isa %s format %s threads %u values %u\n", isa_name(isa), format_name(f),
                       threads, values);
          CHECK(false);
        }
      }
    }
  }
}

void test_starts_plan() {
  std::mt19937 rng(99);
  starts_plan_case(rng, 15);   // the in-register value table (<= 16 values)
  starts_plan_case(rng, 200);  // values loaded per group
  // CSER with empty groups (from_arrays allows them): the plan copies the non-empty groups' value indices.
  // 3 rows x 20 columns, Ω = {0, 1, 2, 3, 4}: row 0 groups v1 {0, 3}, v2 {}, v3 {5}; row 1 none; row 2
  // v2 {1, 2, 7}, v4 {}.
  RowGroupArrays ea;
  ea.format = Format::kCSER, ea.rows = 3, ea.cols = 20, ea.omega = {0.0f, 1.0f, -2.0f, 0.5f, 3.0f};
  ea.col = {0, 3, 5, 1, 2, 7};
  ea.group_ptr = {0, 2, 2, 3, 6, 6};
  ea.row_ptr = {0, 3, 3, 5};
  ea.group_value = {1, 2, 3, 2, 4};
  RowGroupMatrix em;
  CHECK(RowGroupMatrix::from_arrays(ea, &em).ok());
  CHECK(em.has_starts() && em.num_starts() == 3);
  std::vector<float> ex(20), eref(3), ey(3);
  for (uint32_t k = 0; k < 20; ++k) ex[k] = float(k) * 0.25f - 1.0f;
  CHECK(matvec(em, ex.data(), ex.size(), eref.data(), eref.size(), {Isa::kScalar, 1}).ok());
  CHECK(eref[0] == 1.0f * (ex[0] + ex[3]) + 0.5f * ex[5] && eref[1] == 0.0f);
  for (Isa isa : simd_isas()) {
    std::fill(ey.begin(), ey.end(), NAN);
    CHECK(matvec(em, ex.data(), ex.size(), ey.data(), ey.size(), {isa, 1}).ok());
    CHECK(close(ey, eref, std::vector<float>(3, 10.0f)));
  }
  // No plan: 257 values, long groups, 32-bit columns.
  RowGroupMatrix a, b, d;
  std::vector<float> w257 = random_matrix(rng, Case{40, 2000, 257, 0.5, false});
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, w257.data(), 40, 2000, &a).ok());
  CHECK(a.omega().size() > 256);
  CHECK(!a.has_starts() && a.plan_bytes() == 0);
  std::vector<float> wl = random_matrix(rng, Case{20, 500, 3, 0.5, false});  // ~125 entries per group
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, wl.data(), 20, 500, &b).ok());
  CHECK(!b.has_starts());
  std::vector<float> ww = random_matrix(rng, Case{1, 70000, 3, 0.001, false});
  CHECK(RowGroupMatrix::from_dense(Format::kCER, ww.data(), 1, 70000, &d).ok());
  CHECK(d.wide() && !d.has_starts());
}

// The plan's entry values (<= 16 values: one Ω index per entry, read by the x86 row-wise kernel) exist exactly
// with a plan and at most 16 values, hold each entry's group value, and that kernel matches the scalar
// reference on edge shapes: one entry, rows of 1, 7, 8, 9, 15, 16 and 17 entries (runs of 8 and their
// tails), empty rows, rows longer than the plan kernel's block, a matrix whose entries all hold one value,
// and a last row that ends the matrix mid-run.
void entry_values_case(const std::vector<float>& w, uint32_t rows, uint32_t cols, const char* what) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> x(cols), scale(rows, 0.0f);
  for (auto& v : x) v = nd(rng);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t k = 0; k < cols; ++k) scale[r] += std::fabs(w[size_t(r) * cols + k] * x[k]);
  }
  for (Format f : {Format::kCER, Format::kCSER}) {
    RowGroupMatrix rg;
    CHECK(RowGroupMatrix::from_dense(f, w.data(), rows, cols, &rg).ok());
    if (!rg.has_starts()) std::fprintf(stderr, "  entry values (%s): no plan\n", what);
    CHECK(rg.has_starts());
    const std::vector<uint8_t>& ev = rg.entry_values();
    CHECK(ev.size() == rg.nnz() + RowGroupMatrix::kStartsPad);
    for (uint32_t r = 0; r < rows; ++r) {
      for (uint32_t g = rg.row_ptr()[r]; g < rg.row_ptr()[r + 1]; ++g) {
        for (uint32_t k = rg.group_ptr()[g]; k < rg.group_ptr()[g + 1]; ++k) {
          CHECK(ev[k] == rg.group_value(g, r));
          CHECK(w[size_t(r) * cols + rg.column(k)] == rg.omega()[ev[k]]);
        }
      }
    }
    for (size_t k = rg.nnz(); k < ev.size(); ++k) CHECK(ev[k] == 0);
    std::vector<float> ref(rows), y(rows);
    CHECK(matvec(rg, x.data(), x.size(), ref.data(), ref.size(), {Isa::kScalar, 1}).ok());
    for (Isa isa : simd_isas()) {
      for (unsigned threads : {1u, 2u, 3u}) {
        std::fill(y.begin(), y.end(), NAN);
        CHECK(matvec(rg, x.data(), x.size(), y.data(), y.size(), {isa, threads}).ok());
        if (!close(y, ref, scale)) {
          std::fprintf(stderr, "  entry values (%s): isa %s format %s threads %u\n", what, isa_name(isa),
                       format_name(f), threads);
          CHECK(false);
        }
      }
    }
  }
}

void test_entry_values() {
  std::mt19937 rng(17);
  {  // one entry: a 1 x 3 matrix, and one entry in a 50 x 300 matrix
    entry_values_case({0.0f, 0.75f, 0.0f}, 1, 3, "1x3");
    std::vector<float> w(50 * 300, 0.0f);
    w[size_t(49) * 300 + 299] = -1.5f;
    entry_values_case(w, 50, 300, "one entry");
  }
  {  // rows of 0, 1, 7, 8, 9, 15, 16, 17 entries, 15 values (short groups), cycled; the last row has 3
    const uint32_t rows = 160, cols = 600;
    const uint32_t lens[] = {0, 1, 7, 8, 9, 15, 16, 17};
    std::vector<float> w(size_t(rows) * cols, 0.0f);
    std::uniform_int_distribution<uint32_t> pick(1, 15), at(0, cols - 1);
    for (uint32_t r = 0; r < rows; ++r) {
      const uint32_t len = r == rows - 1 ? 3 : lens[r % 8];
      for (uint32_t n = 0; n < len;) {
        float& v = w[size_t(r) * cols + at(rng)];
        if (v == 0.0f) v = (float(pick(rng)) - 8.0f) * 0.037f + 0.01f, ++n;
      }
    }
    entry_values_case(w, rows, cols, "row lengths");
    // Every entry one value (one group per row; the plan needs groups of <= 8 entries on average): rows 8k + 5
    // and 8k + 6 cut to 1 and 2 entries.
    for (uint32_t r = 0; r < rows; ++r) {
      uint32_t keep = r % 8 == 5 ? 1 : r % 8 == 6 ? 2 : cols;
      for (uint32_t k = 0; k < cols; ++k) {
        float& v = w[size_t(r) * cols + k];
        if (v != 0.0f) v = keep > 0 ? 0.3f : 0.0f, keep -= keep > 0;
      }
    }
    entry_values_case(w, rows, cols, "one value");
  }
  {  // rows of ~5 entries around two rows of 2600 and 5000 entries (longer than a plan kernel block, 2048)
    const uint32_t rows = 2000, cols = 6000;
    std::vector<float> w = random_matrix(rng, Case{rows, cols, 16, 5.0 / 6000, false});
    std::uniform_int_distribution<uint32_t> pick(9, 23);  // random_matrix's non-zero values (k != 8, mod 16)
    for (uint32_t k = 0; k < 2600; ++k) w[size_t(3) * cols + k * 2] = (float(pick(rng) % 16) - 8.0f) * 0.037f;
    for (uint32_t k = 0; k < 5000; ++k) w[size_t(1000) * cols + k] = (float(pick(rng) % 16) - 8.0f) * 0.037f;
    entry_values_case(w, rows, cols, "long rows");
  }
  // Not built: more than 16 values (the plan kernel's loaded values), or no plan.
  RowGroupMatrix a, b;
  std::vector<float> w40 = random_matrix(rng, Case{100, 500, 40, 0.05, false});
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, w40.data(), 100, 500, &a).ok());
  CHECK(a.has_starts() && a.omega().size() > 16 && a.entry_values().empty());
  std::vector<float> wl = random_matrix(rng, Case{20, 500, 3, 0.5, false});
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, wl.data(), 20, 500, &b).ok());
  CHECK(!b.has_starts() && b.entry_values().empty() && b.plan_bytes() == 0);
}

// Products from several threads at once, each asking for two threads: the worker pool serves one of
// them at a time and the others compute on their callers; every result equals the one-thread result.
void test_concurrent_threaded_products() {
  std::mt19937 rng(31);
  const Case c{700, 900, 16, 0.05, false};
  const std::vector<float> w = random_matrix(rng, c);
  RowGroupMatrix rg;
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, w.data(), c.rows, c.cols, &rg).ok());
  std::normal_distribution<float> nd;
  std::vector<float> x(c.cols), want(c.rows);
  for (auto& v : x) v = nd(rng);
  CHECK(matvec(rg, x.data(), x.size(), want.data(), want.size(), {std::nullopt, 1}).ok());
  std::atomic<int> bad{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      std::vector<float> y(c.rows);
      for (int i = 0; i < 200; ++i) {
        std::fill(y.begin(), y.end(), NAN);
        if (!matvec(rg, x.data(), x.size(), y.data(), y.size(), {std::nullopt, 2}).ok() || y != want) ++bad;
      }
    });
  }
  for (auto& t : callers) t.join();
  CHECK(bad.load() == 0);
}

// With no ISA named, a product runs exactly the kernels of auto_isa(matrix, batch) (bit-identical results).
void test_auto_dispatch() {
  std::mt19937 rng(5);
  const Case c{70, 300, 12, 0.2, false};
  const std::vector<float> w = random_matrix(rng, c);
  RowGroupMatrix rg;
  CodebookMatrix cb;
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, w.data(), c.rows, c.cols, &rg).ok());
  CHECK(CodebookMatrix::from_dense(w.data(), c.rows, c.cols, &cb).ok());
  for (size_t batch : {size_t(1), size_t(2), size_t(20), size_t(32), size_t(33), size_t(100)}) {
    const Isa chosen = auto_isa(batch);
    CHECK(isa_supported(chosen));
    if (batch == 1 || batch > 32) CHECK(chosen == detect_isa());
    if (detect_isa() == Isa::kAvx512 && batch > 1 && batch <= 32) CHECK(chosen == Isa::kAvx2);
    std::normal_distribution<float> nd;
    std::vector<float> X(size_t(c.cols) * batch), a(size_t(c.rows) * batch), b(a.size()), d(a.size()), e(a.size());
    for (auto& v : X) v = nd(rng);
    // Row-group matrices: batch 1 with short groups (this one averages ~5.5 entries) prefers AVX2, except
    // for a matrix with a kernel plan (this one has one) where the plan kernel gathers (fast_gathers).
    const Isa chosen_rg = auto_isa(rg, batch);
    CHECK(isa_supported(chosen_rg));
    CHECK(rg.has_starts());
    if (batch > 1) CHECK(chosen_rg == chosen);
    if (batch == 1 && detect_isa() == Isa::kAvx512) CHECK(chosen_rg == (fast_gathers() ? Isa::kAvx512 : Isa::kAvx2));
    CHECK(matmat(rg, X.data(), X.size(), batch, a.data(), a.size(), {}).ok());
    CHECK(matmat(rg, X.data(), X.size(), batch, b.data(), b.size(), {chosen_rg, 1}).ok());
    CHECK(matmat(cb, X.data(), X.size(), batch, d.data(), d.size(), {}).ok());
    CHECK(matmat(cb, X.data(), X.size(), batch, e.data(), e.size(), {chosen, 1}).ok());
    CHECK(a == b);
    CHECK(d == e);
  }
  // Long groups (density 0.9, ~100 entries per group): batch 1 keeps the detected ISA.
  const Case dense_case{8, 1300, 12, 0.9, false};
  const std::vector<float> wd = random_matrix(rng, dense_case);
  RowGroupMatrix rd;
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, wd.data(), dense_case.rows, dense_case.cols, &rd).ok());
  CHECK(auto_isa(rd, 1) == detect_isa());
}

void test_isa_names() {
  Isa i;
  CHECK(parse_isa("avx512", &i) && i == Isa::kAvx512);
  CHECK(!parse_isa("sse9", &i));
  CHECK(isa_supported(Isa::kScalar));
  CHECK(isa_supported(detect_isa()));
}

}  // namespace

int main() {
  test_golden_cer();
  test_golden_cser();
  test_validate();
  test_isa_names();
  test_auto_dispatch();
  test_isas_against_scalar();
  test_batch1_group_lengths();
  test_starts_plan();
  test_entry_values();
  test_concurrent_threaded_products();
  test_nonfinite_inputs();
  test_random_corruptions();
  return TEST_MAIN_RESULT();
}
