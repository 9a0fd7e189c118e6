// Quantizers (nnpress/quant/*.h): nearest, RDOQ and trellis against their contracts — exact
// rates, reconstruction identical to dequantize, lambda = 0 behaviour, cheapest levels for
// zero importance, chunked context resets, argument errors, error feedback.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "check.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cpu.h"
#include "nnpress/format/container.h"
#include "nnpress/quant/dequantize.h"
#include "nnpress/quant/quantize.h"
#include "nnpress/quant/trellis.h"

using namespace nnpress;

static std::vector<float> laplacian_weights(size_t n, double scale, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> e(1.0 / scale);
  std::bernoulli_distribution coin(0.5);
  std::vector<float> v(n);
  for (auto& x : v) x = float(coin(rng) ? -e(rng) : e(rng));
  return v;
}

static std::vector<float> uniform_importance(size_t n, uint32_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = float(u(rng));
  return v;
}

// Non-template wrappers (template argument commas do not pass through CHECK).
static Status quantize_ff(const float* w, const float* f, uint64_t rows, uint64_t cols, const QuantOptions& o,
                          int32_t* q, float* rec, QuantResult* res) {
  return quantize<float, float>(w, f, rows, cols, o, q, rec, res);
}
static Status quantize_dd(const double* w, const double* f, uint64_t rows, uint64_t cols, const QuantOptions& o,
                          int32_t* q, float* rec, QuantResult* res) {
  return quantize<double, double>(w, f, rows, cols, o, q, rec, res);
}

static QuantOptions opts(QuantMethod m, double step, double lambda) {
  QuantOptions o;
  o.method = m;
  o.step = step;
  o.lambda = lambda;
  return o;
}

static void test_nearest() {
  const auto w = laplacian_weights(5000, 0.05, 1);
  std::vector<int32_t> q(w.size());
  std::vector<float> rec(w.size());
  QuantResult res;
  CHECK(quantize_ff(w.data(), nullptr, 50, 100, opts(QuantMethod::kNearest, 0.01, 0), q.data(), rec.data(), &res).ok());
  std::vector<float> deq(w.size());
  CHECK(dequantize(q.data(), 50, 100, 0.01, QuantMethod::kNearest, deq.data()).ok());
  double dist = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    CHECK(q[i] == int32_t(std::nearbyint(double(w[i]) / 0.01)));
    CHECK(std::memcmp(&rec[i], &deq[i], 4) == 0);
    const double d = double(w[i]) - double(q[i]) * 0.01;
    dist += d * d;
  }
  CHECK(std::fabs(dist - res.distortion) <= 1e-12 * dist);
  // Ties go to even, as np.rint.
  const double tw[4] = {0.5, 1.5, -2.5, 2.4999};
  int32_t tq[4];
  CHECK(quantize_dd(tw, nullptr, 1, 4, opts(QuantMethod::kNearest, 1.0, 0), tq, nullptr, nullptr).ok());
  CHECK(tq[0] == 0 && tq[1] == 2 && tq[2] == -2 && tq[3] == 2);
  // Also far from zero (up to the 2^30-step limit), and for the trellis' first guess on the grid 2 x step.
  const double big[6] = {536870912.5, 536870913.5, -1073741822.5, 1073741823.25, -0.4999999999999999, 3e-300};
  int32_t bq[6];
  CHECK(quantize_dd(big, nullptr, 1, 6, opts(QuantMethod::kNearest, 1.0, 0), bq, nullptr, nullptr).ok());
  for (int i = 0; i < 6; ++i) CHECK(bq[i] == int32_t(std::nearbyint(big[i])));
}

// Rate reported by RDOQ / trellis equals the coder's own estimate for the chosen levels, and
// the float reconstructions equal dequantize bit for bit.
static void test_exact_rate_and_reconstruction(QuantMethod m) {
  const uint64_t rows = 37, cols = 211;
  const auto w = laplacian_weights(rows * cols, 0.04, 2);
  const auto f = uniform_importance(rows * cols, 3, 0.1, 3.0);
  for (double lambda_scale : {0.0, 0.05, 0.3, 2.0}) {
    const double step = 0.02;
    std::vector<int32_t> q(w.size());
    std::vector<float> rec(w.size());
    QuantResult res;
    CHECK(
        quantize(w.data(), f.data(), rows, cols, opts(m, step, lambda_scale * step * step), q.data(), rec.data(), &res)
            .ok());
    const double est = estimate_level_bits(q.data(), rows, cols, res.params);
    CHECK(res.rate_bits() == est);
    std::vector<float> deq(w.size());
    CHECK(dequantize(q.data(), rows, cols, step, m, deq.data()).ok());
    CHECK(std::memcmp(rec.data(), deq.data(), deq.size() * 4) == 0);
    std::vector<double> deq64(w.size());
    CHECK(dequantize(q.data(), rows, cols, step, m, deq64.data()).ok());
    double dist = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const double d = double(w[i]) - deq64[i];
      dist += double(f[i]) * d * d;
    }
    CHECK(std::fabs(dist - res.distortion) <= 1e-9 * dist);
    // Fixed params give the same rate identity.
    QuantOptions o = opts(m, step, lambda_scale * step * step);
    o.params_fixed = true;
    o.params.unary_len = 3;
    o.params.eg_order = 1;
    CHECK(quantize(w.data(), f.data(), rows, cols, o, q.data(), rec.data(), &res).ok());
    CHECK(res.passes == 1 && res.params.unary_len == 3 && res.params.eg_order == 1);
    CHECK(res.rate_bits() == estimate_level_bits(q.data(), rows, cols, o.params));
  }
}

static void test_rdoq_lambda_zero_is_nearest() {
  const auto w = laplacian_weights(20000, 0.05, 4);
  const auto f = uniform_importance(w.size(), 5, 0.01, 10.0);
  std::vector<int32_t> qn(w.size()), qr(w.size());
  CHECK(
      quantize(w.data(), f.data(), 100, 200, opts(QuantMethod::kNearest, 0.013, 0), qn.data(), nullptr, nullptr).ok());
  CHECK(quantize(w.data(), f.data(), 100, 200, opts(QuantMethod::kRdoq, 0.013, 0), qr.data(), nullptr, nullptr).ok());
  CHECK(qn == qr);
}

// Larger lambda: fewer bits, more distortion.
static void test_lambda_trade_off(QuantMethod m) {
  const auto w = laplacian_weights(64 * 512, 0.03, 6);
  const double step = 0.01;
  double prev_rate = 1e300, prev_dist = -1;
  for (double c : {0.0, 0.1, 0.5, 2.0, 8.0}) {
    std::vector<int32_t> q(w.size());
    QuantResult res;
    CHECK(quantize_ff(w.data(), nullptr, 64, 512, opts(m, step, c * step * step), q.data(), nullptr, &res).ok());
    CHECK(res.rate_bits() < prev_rate);
    CHECK(res.distortion > prev_dist);
    prev_rate = res.rate_bits();
    prev_dist = res.distortion;
  }
}

// RDOQ: where F == 0 the chosen level is the cheapest of the candidate set of rdoq.h, priced on
// the contexts as they stand there (replayed here independently).
static void test_zero_importance_cheapest() {
  const uint64_t rows = 20, cols = 300;
  const auto w = laplacian_weights(rows * cols, 0.05, 7);
  auto f = uniform_importance(rows * cols, 8, 0.5, 2.0);
  for (size_t i = 0; i < f.size(); i += 3) f[i] = 0.0f;
  const double step = 0.02;
  std::vector<int32_t> q(w.size());
  QuantResult res;
  CHECK(quantize(w.data(), f.data(), rows, cols, opts(QuantMethod::kRdoq, step, 0.5 * step * step), q.data(), nullptr,
                 &res)
            .ok());
  cabac::WeightContexts ctx;
  cabac::RateEstimator commit;
  bool bad = false;
  int checked = 0, zeros = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    cabac::Neighbourhood nb;
    for (uint64_t i = 0; i < cols; ++i) {
      const size_t at = r * cols + i;
      if (f[at] == 0.0f) {
        const double x = double(w[at]) / step;
        const int32_t sgn = x < 0 ? -1 : 1, a = int32_t(std::fabs(x)), nearest = int32_t(std::nearbyint(x));
        auto rate = [&](int32_t v) {
          cabac::RatePeek p;
          cabac::code_level(p, ctx, res.params, nb, v, bad);
          return p.cost();
        };
        const uint64_t chosen = rate(q[at]);
        std::vector<int32_t> cands = {0, nearest, sgn * a};
        if (a >= 2) cands.push_back(sgn * (a - 1));
        for (int32_t c : cands) CHECK(chosen <= rate(c));
        ++checked;
        zeros += q[at] == 0;
      }
      cabac::code_level(commit, ctx, res.params, nb, q[at], bad);
      nb.push(q[at]);
    }
  }
  CHECK(checked == int((rows * cols + 2) / 3));
  CHECK(zeros > checked * 9 / 10);
  // All-zero importance: everything goes to zero.
  std::vector<float> none(w.size(), 0.0f);
  CHECK(quantize(w.data(), none.data(), rows, cols, opts(QuantMethod::kRdoq, step, 0.1 * step * step), q.data(),
                 nullptr, nullptr)
            .ok());
  bool all_zero = true;
  for (int32_t v : q) all_zero = all_zero && v == 0;
  CHECK(all_zero);
}

// chunk_rows: contexts restart, so the rate is the sum of per-chunk estimates.
static void test_chunk_reset(QuantMethod m) {
  const uint64_t rows = 12, cols = 333, chunk = 5;
  const auto w = laplacian_weights(rows * cols, 0.05, 9);
  const double step = 0.02;
  QuantOptions o = opts(m, step, 0.2 * step * step);
  o.chunk_rows = chunk;
  std::vector<int32_t> q(w.size());
  QuantResult res;
  CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q.data(), nullptr, &res).ok());
  double sum = 0;
  for (uint64_t r0 = 0; r0 < rows; r0 += chunk) {
    const uint64_t n = r0 + chunk <= rows ? chunk : rows - r0;
    sum += estimate_level_bits(q.data() + r0 * cols, n, cols, res.params);
  }
  CHECK(std::fabs(res.rate_bits() - sum) < 1e-6);
  uint64_t rate = 0;
  CHECK(estimate_chunked_rate(q.data(), rows, cols, chunk, res.params, &rate).ok());
  CHECK(rate == res.rate);
  CHECK(estimate_chunked_rate(q.data(), rows, cols, 0, res.params, &rate).ok());
  CHECK(double(rate) / cabac::kRateOne == estimate_level_bits(q.data(), rows, cols, res.params));
  cabac::LevelParams bad_params;
  bad_params.unary_len = 65;
  CHECK(estimate_chunked_rate(q.data(), rows, cols, chunk, bad_params, &rate).code() == StatusCode::kInvalidArgument);
  CHECK(estimate_chunked_rate(nullptr, rows, cols, chunk, res.params, &rate).code() == StatusCode::kInvalidArgument);
  CHECK(estimate_chunked_rate(q.data(), rows, cols, chunk, res.params, nullptr).code() == StatusCode::kInvalidArgument);
  CHECK(res.rate_bits() != estimate_level_bits(q.data(), rows, cols, res.params));
}

// Chunks run on several threads: identical results for every thread count.
static void test_threads_deterministic(QuantMethod m) {
  const uint64_t rows = 23, cols = 257;
  const auto w = laplacian_weights(rows * cols, 0.05, 11);
  const auto f = uniform_importance(rows * cols, 12, 0.0, 2.0);
  const double step = 0.02;
  std::vector<int32_t> q1(w.size()), q2(w.size());
  std::vector<float> r1(w.size()), r2(w.size());
  QuantResult a, b;
  QuantOptions o = opts(m, step, 0.3 * step * step);
  o.chunk_rows = 4;
  o.threads = 1;
  CHECK(quantize_ff(w.data(), f.data(), rows, cols, o, q1.data(), r1.data(), &a).ok());
  for (unsigned t : {2u, 3u, 0u, 64u}) {
    o.threads = t;
    CHECK(quantize_ff(w.data(), f.data(), rows, cols, o, q2.data(), r2.data(), &b).ok());
    CHECK(q1 == q2);
    CHECK(std::memcmp(r1.data(), r2.data(), r1.size() * 4) == 0);
    CHECK(a.rate == b.rate && a.distortion == b.distortion && a.passes == b.passes);
  }
}

// Many random configurations (heavy tails reaching the Exp-Golomb remainder, every unary length
// class, zero importances, chunking): the contract identities must hold in all of them.
static void test_random_configurations() {
  std::mt19937_64 rng(2024);
  for (int iter = 0; iter < 60; ++iter) {
    const uint64_t rows = 1 + rng() % 9, cols = 1 + rng() % 120;
    const size_t n = size_t(rows * cols);
    std::vector<double> w(n);
    std::vector<double> f(n);
    std::student_t_distribution<double> heavy(1.5);
    std::uniform_real_distribution<double> u(0.0, 2.0);
    for (size_t i = 0; i < n; ++i) {
      w[i] = heavy(rng) * 0.01;
      if (std::fabs(w[i]) > 1e3) w[i] = 0.0;
      f[i] = rng() % 5 == 0 ? 0.0 : u(rng);
    }
    const QuantMethod m = rng() % 2 ? QuantMethod::kTrellis : QuantMethod::kRdoq;
    const double step = 0.002 * double(1 + rng() % 20);
    QuantOptions o = opts(m, step, double(rng() % 5) * 0.1 * step * step);
    if (rng() % 2) {
      o.params_fixed = true;
      const uint32_t lens[] = {0, 1, 2, 7, 8, 9, 15, 64};
      o.params.unary_len = lens[rng() % 8];
      o.params.eg_order = uint32_t(rng() % 4);
    }
    const bool chunked = rng() % 3 == 0;
    if (chunked) o.chunk_rows = 1 + rng() % 3;
    o.threads = unsigned(rng() % 3);
    std::vector<int32_t> q(n);
    std::vector<float> rec(n), deq(n);
    QuantResult res;
    const bool use_f = rng() % 2;
    CHECK(quantize_dd(w.data(), use_f ? f.data() : nullptr, rows, cols, o, q.data(), rec.data(), &res).ok());
    CHECK(dequantize(q.data(), rows, cols, step, m, deq.data()).ok());
    CHECK(std::memcmp(rec.data(), deq.data(), n * 4) == 0);
    double rate = 0;
    if (!chunked) {
      rate = estimate_level_bits(q.data(), rows, cols, res.params);
    } else {
      for (uint64_t r0 = 0; r0 < rows; r0 += o.chunk_rows) {
        const uint64_t nr = std::min<uint64_t>(o.chunk_rows, rows - r0);
        rate += estimate_level_bits(q.data() + r0 * cols, nr, cols, res.params);
      }
    }
    CHECK(std::fabs(res.rate_bits() - rate) <= 1e-6 * (1 + rate));
    if (!chunked) CHECK(res.rate_bits() == rate);
    // A round trip through the coder with the priced params.
    std::vector<uint8_t> bytes;
    encode_level_payload(q.data(), rows, cols, res.params, &bytes);
    std::vector<int32_t> back(n);
    CHECK(decode_level_payload(bytes.data(), bytes.size(), rows, cols, res.params, back.data()).ok());
    CHECK(back == q);
  }
}

// Trellis: the state machine really constrains the reconstruction (levels differ from plain
// rounding at 2*step) and at lambda = 0 it beats plain rounding at 2*step in distortion.
static void test_trellis_distortion() {
  const auto w = laplacian_weights(50000, 0.05, 10);
  const double step = 0.01;
  QuantResult rt, rn;
  std::vector<int32_t> qt(w.size()), qn(w.size());
  CHECK(
      quantize_ff(w.data(), nullptr, 1, w.size(), opts(QuantMethod::kTrellis, step, 0), qt.data(), nullptr, &rt).ok());
  CHECK(quantize_ff(w.data(), nullptr, 1, w.size(), opts(QuantMethod::kNearest, 2 * step, 0), qn.data(), nullptr, &rn)
            .ok());
  CHECK(rt.distortion < 0.9 * rn.distortion);
  CHECK(rt.distortion > 0.25 * rn.distortion);  // cannot be as good as the full grid `step`
}

static void test_errors() {
  const float w[4] = {0.1f, -0.2f, 0.3f, 0.0f};
  int32_t q[4];
  float f[4] = {1, 1, 1, 1};
  for (QuantMethod m : {QuantMethod::kNearest, QuantMethod::kRdoq, QuantMethod::kTrellis}) {
    CHECK(quantize_ff(w, nullptr, 2, 2, opts(m, 0.0, 0), q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
    CHECK(quantize_ff(w, nullptr, 2, 2, opts(m, -1.0, 0), q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
    CHECK(quantize_ff(w, nullptr, 2, 2, opts(m, NAN, 0), q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
    CHECK(quantize_ff(w, nullptr, 2, 2, opts(m, 0.1, -1), q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
    float bad_w[4] = {0.1f, NAN, 0.0f, 0.0f};
    CHECK(quantize_ff(bad_w, nullptr, 2, 2, opts(m, 0.1, 0), q, nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    bad_w[1] = INFINITY;
    CHECK(quantize_ff(bad_w, nullptr, 2, 2, opts(m, 0.1, 0), q, nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    bad_w[1] = 1e9f;
    CHECK(quantize_ff(bad_w, nullptr, 2, 2, opts(m, 0.1, 0), q, nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    f[2] = -1;
    CHECK(quantize_ff(w, f, 2, 2, opts(m, 0.1, 0), q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
    f[2] = NAN;
    CHECK(quantize_ff(w, f, 2, 2, opts(m, 0.1, 0), q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
    f[2] = 1;
    CHECK(quantize_ff(nullptr, nullptr, 2, 2, opts(m, 0.1, 0), q, nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    CHECK(quantize_ff(w, nullptr, 2, 2, opts(m, 0.1, 0), nullptr, nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    CHECK(quantize_ff(nullptr, nullptr, 0, 0, opts(m, 0.1, 0), nullptr, nullptr, nullptr).ok());
    QuantOptions o = opts(m, 0.1, 0);
    o.max_passes = 0;
    CHECK(quantize_ff(w, nullptr, 2, 2, o, q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
    o = opts(m, 0.1, 0);
    o.params_fixed = true;
    o.params.unary_len = 65;
    CHECK(quantize_ff(w, nullptr, 2, 2, o, q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
  }
  QuantOptions o = opts(QuantMethod(7), 0.1, 0);
  CHECK(quantize_ff(w, nullptr, 2, 2, o, q, nullptr, nullptr).code() == StatusCode::kInvalidArgument);
  float out[4];
  const int32_t lv[4] = {1, 2, 3, 4};
  CHECK(dequantize(lv, 2, 2, 0.0, QuantMethod::kRdoq, out).code() == StatusCode::kInvalidArgument);
  CHECK(dequantize(lv, 2, 2, INFINITY, QuantMethod::kRdoq, out).code() == StatusCode::kInvalidArgument);
  CHECK(dequantize(lv, 2, 2, 1.0, QuantMethod(9), out).code() == StatusCode::kInvalidArgument);
  CHECK(dequantize(nullptr, 2, 2, 1.0, QuantMethod::kRdoq, out).code() == StatusCode::kInvalidArgument);
  CHECK(dequantize(lv, 2, 2, 1.0, QuantMethod::kRdoq, static_cast<float*>(nullptr)).code() ==
        StatusCode::kInvalidArgument);
}

// Error feedback (QuantOptions::feedback): with U = I nothing changes; with a correlated H the
// reported distortion is the quadratic form sum_r e_r^T H e_r of the decoder's reconstruction,
// and it is lower than without feedback; hostile factors are errors.
static void test_feedback() {
  const uint64_t rows = 40, cols = 10;
  const auto w = laplacian_weights(rows * cols, 0.05, 31);
  // H = I + 4 (1 1^T) / cols: strongly correlated columns. U = upper Cholesky factor of H^-1,
  // computed here by Cholesky of H^-1 = I - a 1 1^T, a = 4 / (cols (1 + 4)).
  const double a = 4.0 / (double(cols) * 5.0);
  std::vector<double> hinv(cols * cols), u(cols * cols, 0.0), h(cols * cols);
  for (uint64_t i = 0; i < cols; ++i)
    for (uint64_t j = 0; j < cols; ++j) {
      hinv[i * cols + j] = (i == j ? 1.0 : 0.0) - a;
      h[i * cols + j] = (i == j ? 1.0 : 0.0) + 4.0 / double(cols);
    }
  // lower L with H^-1 = L L^T; U = L^T
  std::vector<double> l(cols * cols, 0.0);
  for (uint64_t j = 0; j < cols; ++j) {
    double d = hinv[j * cols + j];
    for (uint64_t k = 0; k < j; ++k) d -= l[j * cols + k] * l[j * cols + k];
    l[j * cols + j] = std::sqrt(d);
    for (uint64_t i = j + 1; i < cols; ++i) {
      double s = hinv[i * cols + j];
      for (uint64_t k = 0; k < j; ++k) s -= l[i * cols + k] * l[j * cols + k];
      l[i * cols + j] = s / l[j * cols + j];
    }
  }
  for (uint64_t i = 0; i < cols; ++i)
    for (uint64_t j = 0; j < cols; ++j) u[i * cols + j] = l[j * cols + i];
  std::vector<double> eye(cols * cols, 0.0);
  for (uint64_t i = 0; i < cols; ++i) eye[i * cols + i] = 1.0;
  for (QuantMethod m : {QuantMethod::kNearest, QuantMethod::kRdoq, QuantMethod::kTrellis}) {
    const double step = 0.02, lam = m == QuantMethod::kNearest ? 0.0 : 0.1 * step * step;
    std::vector<int32_t> q0(rows * cols), q1(rows * cols), q2(rows * cols);
    std::vector<float> rec(rows * cols);
    QuantResult r0, r1, r2;
    QuantOptions o = opts(m, step, lam);
    CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q0.data(), nullptr, &r0).ok());
    o.feedback = eye.data();
    CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q1.data(), nullptr, &r1).ok());
    CHECK(q0 == q1);
    o.feedback = u.data();
    CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q2.data(), rec.data(), &r2).ok());
    std::vector<float> deq(rows * cols);
    CHECK(dequantize(q2.data(), rows, cols, step, m, deq.data()).ok());
    CHECK(std::memcmp(deq.data(), rec.data(), deq.size() * sizeof(float)) == 0);
    auto form = [&](const std::vector<int32_t>& q) {
      std::vector<double> r(rows * cols);  // the reconstruction in double, as the search forms it
      CHECK(dequantize(q.data(), rows, cols, step, m, r.data()).ok());
      double total = 0.0;
      for (uint64_t row = 0; row < rows; ++row)
        for (uint64_t i = 0; i < cols; ++i)
          for (uint64_t j = 0; j < cols; ++j)
            total += (double(w[row * cols + i]) - double(r[row * cols + i])) * h[i * cols + j] *
                     (double(w[row * cols + j]) - double(r[row * cols + j]));
      return total;
    };
    const double d2 = form(q2);
    CHECK(std::fabs(r2.distortion - d2) <= 1e-9 * d2);
    // feedback optimises the H-weighted cost: lower than what plain quantization gets under H
    CHECK(d2 + lam * r2.rate_bits() < form(q0) + lam * r0.rate_bits());
    // hostile factors
    std::vector<double> bad = u;
    bad[3 * cols + 3] = 0.0;
    CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q2.data(), nullptr, nullptr).ok());
    o.feedback = bad.data();
    CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q2.data(), nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    bad = u;
    bad[2 * cols + 5] = NAN;
    CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q2.data(), nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    bad[2 * cols + 5] = 1e13 * u[2 * cols + 2];
    CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q2.data(), nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
    std::vector<float> f(rows * cols, 1.0f);
    f[5] = 2.0f;  // importance varies along row 0
    o.feedback = u.data();
    CHECK(quantize_ff(w.data(), f.data(), rows, cols, o, q2.data(), nullptr, nullptr).code() ==
          StatusCode::kInvalidArgument);
  }
}

// The dependent reconstruction rule on a hand-worked sequence.
static void test_dependent_rule() {
  // state 0 (Q0): k=1 -> u=2, parity 1 -> state 2 (Q0): k=-1 -> u=-2, parity 1 -> state 3 (Q1):
  // k=2 -> u=3, parity 0 -> state 6 (Q0): k=0 -> u=0, parity 0 -> state 3 (Q1): k=-1 -> u=-1.
  const int32_t k[5] = {1, -1, 2, 0, -1};
  const double expect[5] = {2, -2, 3, 0, -1};
  double out[5];
  CHECK(dequantize(k, 1, 5, 0.5, QuantMethod::kTrellis, out).ok());
  for (int i = 0; i < 5; ++i) CHECK(out[i] == expect[i] * 0.5);
  // Every row restarts at state 0.
  const int32_t k2[4] = {1, 1, 1, 1};
  double out2[4];
  CHECK(dequantize(k2, 2, 2, 1.0, QuantMethod::kTrellis, out2).ok());
  CHECK(out2[0] == 2 && out2[1] == 2 && out2[2] == 2 && out2[3] == 2);  // state 0 -> 2 (Q0) both rows
  const int32_t k3[3] = {1, 1, 1};
  double out3[3];
  CHECK(dequantize(k3, 1, 3, 1.0, QuantMethod::kTrellis, out3).ok());
  CHECK(out3[0] == 2 && out3[1] == 2 && out3[2] == 1);  // 0 -> 2 -> 3 (Q1): u = 2*1 - 1
  const int32_t extreme[2] = {INT32_MIN, INT32_MAX};
  double out4[2];
  CHECK(dequantize(extreme, 1, 2, 1.0, QuantMethod::kTrellis, out4).ok());
  CHECK(out4[0] == -4294967296.0);
}

// QuantResult::coded_params are the params the .nnp writer picks for the final levels: writing
// with them pinned gives the same bytes as letting the writer choose, for every method, with
// chunk_rows as the writer's rows_per_block.
static std::vector<uint8_t> write_one(const std::vector<int32_t>& q, uint64_t rows, uint64_t cols, QuantMethod m,
                                      double step, uint64_t rows_per_block, int unary_len, int eg_order,
                                      double size_tolerance) {
  TensorInput t;
  t.name = "w";
  t.storage = Storage::kQuantized;
  t.shape = {rows, cols};
  t.levels = q.data();
  t.method = m;
  t.step = step;
  t.rows_per_block = rows_per_block;
  t.unary_len = unary_len;
  t.eg_order = eg_order;
  WriterOptions wo;
  wo.size_tolerance = size_tolerance;
  std::vector<uint8_t> out;
  CHECK(write_container({t}, wo, &out).ok());
  return out;
}

static void test_coded_params() {
  const uint64_t rows = 40, cols = 301;
  int distinct_from_default = 0;
  for (QuantMethod m : {QuantMethod::kNearest, QuantMethod::kRdoq, QuantMethod::kTrellis}) {
    for (double scale : {0.01, 0.05, 0.4}) {
      for (int variant = 0; variant < 4; ++variant) {
        const auto w = laplacian_weights(rows * cols, scale, 31 + variant);
        const double step = 0.02;
        QuantOptions o = opts(m, step, 0.15 * step * step);
        o.chunk_rows = 7;
        o.threads = 2;
        if (variant == 1) o.max_passes = 1;  // no re-pick in the loop: picked at the end
        if (variant == 2) {                  // fixed params: priced as given, coded as the writer picks
          o.params_fixed = true;
          o.params.unary_len = 2;
          o.params.eg_order = 1;
        }
        if (variant == 3) o.size_tolerance = -1;  // choose_level_params, as the writer with tolerance < 0
        std::vector<int32_t> q(w.size());
        QuantResult res;
        CHECK(quantize_ff(w.data(), nullptr, rows, cols, o, q.data(), nullptr, &res).ok());
        const cabac::LevelParams want = o.size_tolerance < 0
                                            ? choose_level_params(q.data(), q.size())
                                            : choose_level_params_for_speed(q.data(), rows, cols, 0.001);
        CHECK(res.coded_params.unary_len == want.unary_len && res.coded_params.eg_order == want.eg_order);
        if (m != QuantMethod::kNearest && variant == 0 && res.passes < o.max_passes)
          CHECK(res.coded_params.unary_len == res.params.unary_len && res.coded_params.eg_order == res.params.eg_order);
        const cabac::LevelParams dflt;
        if (res.coded_params.unary_len != dflt.unary_len || res.coded_params.eg_order != dflt.eg_order)
          ++distinct_from_default;
        const auto chosen = write_one(q, rows, cols, m, step, o.chunk_rows, -1, -1, o.size_tolerance);
        const auto pinned = write_one(q, rows, cols, m, step, o.chunk_rows, int(res.coded_params.unary_len),
                                      int(res.coded_params.eg_order), o.size_tolerance);
        CHECK(chosen == pinned);
      }
    }
  }
  CHECK(distinct_from_default > 0);  // the checks above compared something other than defaults
  // An empty tensor: the writer codes no payload and stores default params.
  QuantOptions o = opts(QuantMethod::kRdoq, 0.02, 0.0);
  QuantResult res;
  res.coded_params.unary_len = 9;
  CHECK(quantize_ff(nullptr, nullptr, 0, 5, o, nullptr, nullptr, &res).ok());
  const cabac::LevelParams dflt;
  CHECK(res.coded_params.unary_len == dflt.unary_len && res.coded_params.eg_order == dflt.eg_order);
  // ... while the params it priced with are still the pick for no levels, as before.
  const cabac::LevelParams none = choose_level_params_for_speed(nullptr, 0, 5);
  CHECK(res.params.unary_len == none.unary_len && res.params.eg_order == none.eg_order);
  CHECK(none.unary_len != dflt.unary_len);
  // size_tolerance NaN is an argument error.
  o.size_tolerance = std::nan("");
  const auto w = laplacian_weights(10, 0.05, 3);
  std::vector<int32_t> q(10);
  CHECK(quantize_ff(w.data(), nullptr, 1, 10, o, q.data(), nullptr, &res).code() == StatusCode::kInvalidArgument);
}

// ---- the lane search against the per-state search ----
// trellis_pass_per_state is the array-of-structures search (one WeightContexts per state, one
// code_level<RatePeek> per candidate); without feedback trellis_pass runs the lane search, which must
// return the same levels, recon, rate, distortion and contexts, bit for bit, with every kernel set
// this machine can run.

struct PassCase {
  uint64_t rows = 0, cols = 0;
  std::vector<double> w, f, row_scale, col_scale, coef, fb_weight;
  bool use_f = false, use_contexts = false;
  PassArgs<double, double> args;
};

static void random_pass_case(std::mt19937_64& rng, PassCase& c) {
  c.rows = 1 + rng() % 7;
  c.cols = rng() % 9 == 0 ? 1 + rng() % 3 : 1 + rng() % 150;
  const size_t n = size_t(c.rows * c.cols);
  c.w.assign(n, 0.0);
  c.f.assign(n, 0.0);
  std::normal_distribution<double> g(0.0, 1.0);
  std::student_t_distribution<double> heavy(1.2);
  std::uniform_real_distribution<double> u(0.0, 2.0);
  const double spread = std::pow(10.0, double(rng() % 5) - 1.0);  // std / step from 0.1 to 1000
  const int kind = int(rng() % 3);
  for (size_t i = 0; i < n; ++i) {
    double x = kind == 0 ? g(rng) : (kind == 1 ? heavy(rng) : double(int64_t(rng() % 9) - 4));
    x *= spread;
    if (rng() % 11 == 0) x = 0.0;                                       // pruned weights
    if (rng() % 97 == 0) x = (rng() % 2 ? 1 : -1) * double(1 + rng() % 50000000);  // huge levels
    if (std::fabs(x) > 5e7) x = std::copysign(5e7, x);  // |w / step_ij| < 2^30 (the contract)
    c.w[i] = x;
    c.f[i] = rng() % 5 == 0 ? 0.0 : u(rng);
  }
  c.use_f = rng() % 2;
  PassArgs<double, double>& a = c.args;
  a = PassArgs<double, double>();
  a.weights = c.w.data();
  a.importance = c.use_f ? c.f.data() : nullptr;
  a.rows = c.rows, a.cols = c.cols;
  a.step = 1.0;
  // lambda in step^2 per bit: 0, small, a few (where level +-1 and zero beat the nearest
  // indices of weights a few steps out), huge.
  const int lam_kind = int(rng() % 4);
  a.lambda = lam_kind == 0   ? 0.0
             : lam_kind == 1 ? double(rng() % 40) * 0.05
             : lam_kind == 2 ? 2.0 + 10.0 * u(rng)
                             : double(rng() % 40) * 5.0;
  a.chunk_rows = rng() % 3 == 0 ? 1 + rng() % 3 : 0;
  const uint32_t lens[] = {0, 1, 2, 3, 7, 8, 9, 10, 15, 16, 17, 31, 63, 64};
  a.params.unary_len = lens[rng() % 14];
  a.params.eg_order = uint32_t(rng() % 5);
  if (rng() % 3 == 0) {
    c.row_scale.resize(c.rows);
    for (auto& s : c.row_scale) s = channel_scale_of_exp(int8_t(int(rng() % 9) - 4));
    a.scales.row = c.row_scale.data();
  }
  if (rng() % 3 == 0) {
    c.col_scale.resize(c.cols);
    for (auto& s : c.col_scale) s = channel_scale_of_exp(int8_t(int(rng() % 9) - 4));
    a.scales.col = c.col_scale.data();
  }
  if (rng() % 5 == 0) {  // column feedback: a well-conditioned random upper factor
    c.coef.assign(size_t(c.cols) * c.cols, 0.0);
    c.fb_weight.assign(c.cols, 0.0);
    for (uint64_t i = 0; i < c.cols; ++i) {
      c.fb_weight[i] = 0.5 + u(rng);
      for (uint64_t j = i + 1; j < c.cols; ++j) c.coef[i * c.cols + j] = (u(rng) - 1.0) * 0.3;
    }
    a.feedback.coef = c.coef.data();
    a.feedback.weight = c.fb_weight.data();
    if (c.use_f)  // the feedback contract: importance constant along each row
      for (uint64_t r = 0; r < c.rows; ++r)
        for (uint64_t i = 1; i < c.cols; ++i) c.f[r * c.cols + i] = c.f[r * c.cols];
  }
  c.use_contexts = rng() % 3 == 0;
}

// Contexts as a previous row could leave them: a few random levels coded through fresh ones.
static cabac::WeightContexts random_contexts(std::mt19937_64& rng, const cabac::LevelParams& p) {
  cabac::WeightContexts ctx;
  std::vector<int32_t> lv(1 + rng() % 40);
  for (auto& x : lv) x = int32_t(rng() % 41) - 20;
  if (rng() % 4 == 0) lv[0] = 5000000;
  cabac::RateEstimator est;
  cabac::code_rows(est, ctx, p, lv.data(), 1, lv.size());
  return ctx;
}

static void same_contexts(const cabac::WeightContexts& a, const cabac::WeightContexts& b) {
  const auto* x = reinterpret_cast<const cabac::ContextModel*>(&a);
  const auto* y = reinterpret_cast<const cabac::ContextModel*>(&b);
  bool same = true;
  for (size_t i = 0; i < sizeof(a) / sizeof(cabac::ContextModel); ++i)
    same = same && x[i].fast == y[i].fast && x[i].slow == y[i].slow && x[i].state == y[i].state;
  CHECK(same);
}

static void test_lane_search_matches_per_state_search() {
  std::mt19937_64 rng(15);
  std::vector<Isa> isas{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) isas.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) isas.push_back(Isa::kAvx512);
  int differing = 0;
  for (int iter = 0; iter < 400; ++iter) {
    PassCase c;
    random_pass_case(rng, c);
    const size_t n = size_t(c.rows * c.cols);
    const cabac::WeightContexts start = random_contexts(rng, c.args.params);
    std::vector<int32_t> q_ref(n, 7);
    std::vector<float> rec_ref(n, 7.0f);
    double dist_ref = 0.5;
    cabac::WeightContexts ctx_ref = start;
    PassArgs<double, double> a = c.args;
    a.levels = q_ref.data(), a.recon = rec_ref.data(), a.distortion = &dist_ref;
    a.contexts = c.use_contexts ? &ctx_ref : nullptr;
    const uint64_t rate_ref = trellis_pass_per_state(a);
    for (Isa isa : isas) {
      std::vector<int32_t> q(n, 7);
      std::vector<float> rec(n, 7.0f);
      double dist = 0.5;
      cabac::WeightContexts ctx = start;
      a.levels = q.data(), a.recon = rec.data(), a.distortion = &dist;
      a.contexts = c.use_contexts ? &ctx : nullptr;
      const uint64_t rate = trellis_pass(a, isa);
      CHECK(rate == rate_ref);
      CHECK(q == q_ref);
      CHECK(std::memcmp(rec.data(), rec_ref.data(), n * sizeof(float)) == 0);
      CHECK(std::memcmp(&dist, &dist_ref, sizeof(double)) == 0);
      if (c.use_contexts) same_contexts(ctx, ctx_ref);
      // The same call through quantize()'s dispatch (detect_isa()).
      if (isa == Isa::kScalar) {
        std::vector<int32_t> q2(n);
        double dist2 = 0.5;
        cabac::WeightContexts ctx2 = start;
        a.levels = q2.data(), a.recon = nullptr, a.distortion = &dist2;
        a.contexts = c.use_contexts ? &ctx2 : nullptr;
        CHECK(trellis_pass(a) == rate_ref);
        CHECK(q2 == q_ref);
      }
    }
    // The search is not trivial: the levels differ from every weight's nearest even index.
    for (size_t i = 0; i < n; ++i)
      if (q_ref[i] != int32_t(std::nearbyint(c.w[i] / 2.0))) ++differing;
  }
  CHECK(differing > 1000);

  // Weights a few steps out and lambdas of a few step^2 per bit: where the smallest index of a
  // quantizer (level +-1) competes with the nearest ones.
  int small_chosen = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const uint64_t cols = 200;
    std::vector<double> w(cols);
    std::uniform_real_distribution<double> x(-6.0, 6.0);
    for (auto& v : w) v = x(rng);
    PassArgs<double, double> a;
    a.weights = w.data();
    a.rows = 1, a.cols = cols;
    a.lambda = 0.25 * double(1 + iter % 24);
    a.params.unary_len = uint32_t(rng() % 4);
    a.params.eg_order = uint32_t(rng() % 2);
    std::vector<int32_t> q_ref(cols), q(cols);
    double d_ref = 0.0, d = 0.0;
    a.levels = q_ref.data(), a.distortion = &d_ref;
    const uint64_t rate_ref = trellis_pass_per_state(a);
    for (uint64_t i = 0; i < cols; ++i)
      if (std::abs(q_ref[i]) == 1 && std::fabs(w[i]) > 3.0) ++small_chosen;
    for (Isa isa : isas) {
      a.levels = q.data(), a.distortion = &d;
      d = 0.0;
      CHECK(trellis_pass(a, isa) == rate_ref);
      CHECK(q == q_ref);
      CHECK(d == d_ref);
    }
  }
  CHECK(small_chosen > 100);
}

// Weights shaped like a real layer's (Gaussian, std / step from 2 to 200, some exact zeros, no
// outliers): the passes the fused AVX-512 step runs whole (no Exp-Golomb bucket reaches the shared
// last prefix model), long rows, every unary length from 0 to 64, importance, row and column
// channel scales, chunked contexts and carried contexts: the same levels, recon, rate, distortion and contexts as
// the per-state search on every ISA.
static void test_layer_like_passes_match_per_state_search() {
  std::mt19937_64 rng(17);
  std::vector<Isa> isas{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) isas.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) isas.push_back(Isa::kAvx512);
  const double spreads[] = {2.0, 12.0, 48.0, 200.0};
  const uint32_t lens[] = {0, 0, 1, 2, 3, 8, 14, 64};
  for (int iter = 0; iter < 60; ++iter) {
    const uint64_t rows = 1 + rng() % 5, cols = 50 + rng() % 400;
    const size_t n = size_t(rows * cols);
    std::vector<double> w(n), f(n), col_scale(cols);
    std::normal_distribution<double> g(0.0, spreads[iter % 4]);
    std::uniform_real_distribution<double> u(0.0, 2.0);
    for (size_t i = 0; i < n; ++i) {
      w[i] = rng() % 50 == 0 ? 0.0 : g(rng);
      f[i] = u(rng);
    }
    for (auto& s : col_scale) s = channel_scale_of_exp(int8_t(int(rng() % 5) - 2));
    std::vector<double> row_scale(rows);
    for (auto& s : row_scale) s = channel_scale_of_exp(int8_t(int(rng() % 5) - 2));
    PassArgs<double, double> a;
    a.weights = w.data();
    a.importance = iter % 3 == 0 ? f.data() : nullptr;
    a.rows = rows, a.cols = cols;
    a.lambda = (iter % 5 == 0 ? 0.0 : 0.06 * double(1 + iter % 8));
    a.chunk_rows = iter % 4 == 1 ? 2 : 0;
    a.params.unary_len = lens[rng() % 8];
    a.params.eg_order = uint32_t(rng() % 5);
    if (iter % 6 == 2) a.scales.col = col_scale.data();
    if (iter % 6 == 4 || iter % 12 == 2) a.scales.row = row_scale.data();
    const bool carry = iter % 2 == 1;
    const cabac::WeightContexts start = random_contexts(rng, a.params);
    std::vector<int32_t> q_ref(n);
    std::vector<float> rec_ref(n);
    double dist_ref = 0.0;
    cabac::WeightContexts ctx_ref = start;
    a.levels = q_ref.data(), a.recon = rec_ref.data(), a.distortion = &dist_ref;
    a.contexts = carry ? &ctx_ref : nullptr;
    const uint64_t rate_ref = trellis_pass_per_state(a);
    for (Isa isa : isas) {
      std::vector<int32_t> q(n);
      std::vector<float> rec(n);
      double dist = 0.0;
      cabac::WeightContexts ctx = start;
      a.levels = q.data(), a.recon = rec.data(), a.distortion = &dist;
      a.contexts = carry ? &ctx : nullptr;
      CHECK(trellis_pass(a, isa) == rate_ref);
      CHECK(q == q_ref);
      CHECK(std::memcmp(rec.data(), rec_ref.data(), n * sizeof(float)) == 0);
      CHECK(std::memcmp(&dist, &dist_ref, sizeof(double)) == 0);
      if (carry) same_contexts(ctx, ctx_ref);
    }
  }
}

// The fused steps' edges: passes whose largest magnitude reaches the last Exp-Golomb bucket the
// fused steps price (the largest covered: fused_covers holds) and one step past it (a bucket on
// the shared last prefix model: the kernel-set search runs instead), for short and full unary
// lengths and several Exp-Golomb orders, with long runs of large levels (every prefix model live),
// zeros, both signs, importance and carried contexts: the same results as the per-state search on
// every ISA.
static void test_fused_step_edges() {
  std::mt19937_64 rng(19);
  std::vector<Isa> isas{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) isas.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) isas.push_back(Isa::kAvx512);
  const uint32_t lens[] = {0, 1, 3, 64};
  int iter = 0;
  for (uint32_t n : lens)
    for (uint32_t k : {0u, 1u, 4u})
      for (int past = 0; past < 2; ++past, ++iter) {
        // Largest covered magnitude: remainder (2^24 - 1) * 2^k - 1 (bucket 23), index 2 * mag; a
        // weight w has candidate indices up to floor(w) + 2 (step 1).
        const double mag_max = double(n) + 1.0 + double((uint64_t(1) << 24) - 1) * double(1u << k) - 1.0;
        const double w_max = 2.0 * mag_max - (past ? 0.5 : 2.5);
        const uint64_t rows = 2, cols = 120;
        const size_t sz = size_t(rows * cols);
        std::vector<double> w(sz), f(sz);
        std::uniform_real_distribution<double> u(0.0, 1.0);
        std::normal_distribution<double> g(0.0, 6.0);
        for (size_t i = 0; i < sz; ++i) {
          const int kind = int(rng() % 6);
          // Small levels, zeros, and magnitudes spread over every bucket up to the largest.
          const double x = kind < 2 ? g(rng) : (kind == 2 ? 0.0 : std::exp2(u(rng) * std::log2(w_max)));
          w[i] = (rng() % 2 ? -1.0 : 1.0) * x;
          f[i] = 0.25 + u(rng);
        }
        w[size_t(rng() % sz)] = (rng() % 2 ? -1.0 : 1.0) * w_max;
        PassArgs<double, double> a;
        a.weights = w.data();
        a.importance = iter % 2 ? f.data() : nullptr;
        a.rows = rows, a.cols = cols;
        a.lambda = 0.05 * double(iter % 5);
        a.params.unary_len = n;
        a.params.eg_order = k;
        const bool carry = iter % 3 == 0;
        const cabac::WeightContexts start = random_contexts(rng, a.params);
        std::vector<int32_t> q_ref(sz);
        std::vector<float> rec_ref(sz);
        double dist_ref = 0.0;
        cabac::WeightContexts ctx_ref = start;
        a.levels = q_ref.data(), a.recon = rec_ref.data(), a.distortion = &dist_ref;
        a.contexts = carry ? &ctx_ref : nullptr;
        const uint64_t rate_ref = trellis_pass_per_state(a);
        CHECK(*std::max_element(q_ref.begin(), q_ref.end()) > 1000);
        for (Isa isa : isas) {
          std::vector<int32_t> q(sz);
          std::vector<float> rec(sz);
          double dist = 0.0;
          cabac::WeightContexts ctx = start;
          a.levels = q.data(), a.recon = rec.data(), a.distortion = &dist;
          a.contexts = carry ? &ctx : nullptr;
          CHECK(trellis_pass(a, isa) == rate_ref);
          CHECK(q == q_ref);
          CHECK(std::memcmp(rec.data(), rec_ref.data(), sz * sizeof(float)) == 0);
          CHECK(std::memcmp(&dist, &dist_ref, sizeof(double)) == 0);
          if (carry) same_contexts(ctx, ctx_ref);
        }
      }
}

// estimate_level_bits_many prices every pair as estimate_level_bits does, exactly: levels with
// zeros, both signs, magnitudes on both sides of every unary length, huge ones (Exp-Golomb buckets
// past the shared last prefix model, INT32_MIN), several rows (neighbourhood reset, contexts kept).
static void test_level_bits_many() {
  std::mt19937_64 rng(16);
  const uint32_t lens[] = {0, 1, 2, 3, 5, 8, 13, 14, 16, 20, 32, 63, 64};
  for (int iter = 0; iter < 200; ++iter) {
    const uint64_t rows = 1 + rng() % 5, cols = rng() % 7 == 0 ? 1 : 1 + rng() % 300;
    std::vector<int32_t> lv(size_t(rows * cols));
    const int scale = 1 << (rng() % 12);
    for (auto& x : lv) {
      const int kind = int(rng() % 10);
      x = kind < 3 ? 0 : int32_t(int64_t(rng() % uint64_t(2 * scale + 1)) - scale);
      if (rng() % 200 == 0) x = int32_t(rng() % 2 ? INT32_MIN : INT32_MAX - int32_t(rng() % 1000));
    }
    std::vector<LevelParams> ps(1 + rng() % 20);
    for (auto& p : ps) {
      p.unary_len = lens[rng() % 13];
      p.eg_order = uint32_t(rng() % 31);
    }
    std::vector<double> bits(ps.size(), -1.0);
    estimate_level_bits_many(lv.data(), rows, cols, ps.data(), ps.size(), bits.data());
    for (size_t c = 0; c < ps.size(); ++c) CHECK(bits[c] == estimate_level_bits(lv.data(), rows, cols, ps[c]));
  }
  // No levels: every pair costs nothing.
  LevelParams p;
  double none = -1.0;
  estimate_level_bits_many(nullptr, 0, 0, &p, 1, &none);
  CHECK(none == 0.0);
}

// choose_level_params_for_speed against its contract written out plainly: the static choice and
// the shorter-unary candidates, each priced whole by estimate_level_bits on the sample of rows,
// decoder work summed per magnitude in scan order, and among the candidates within the tolerance
// of the smallest the first of least work. Tolerance 0 (only the cheapest), small ones (one or a
// few candidates eligible) and infinity (every candidate eligible).
static double reference_work(uint32_t mag, const LevelParams& p) {
  if (mag == 0) return 1.0;
  double w = 2.0;
  w += mag < p.unary_len ? mag : p.unary_len;
  if (mag > p.unary_len) {
    const uint64_t r = uint64_t(mag) - p.unary_len - 1;
    const int j = 63 - __builtin_clzll((r >> p.eg_order) + 1);
    w += (j + 1) + 0.35 * (p.eg_order + j);
  }
  return w;
}

static LevelParams reference_speed_pick(const std::vector<int32_t>& lv, uint64_t rows, uint64_t cols, double tol) {
  const LevelParams base = choose_level_params(lv.data(), lv.size());
  const uint64_t kSample = 65536;
  std::vector<int32_t> sample;
  uint64_t srows = 1, scols = cols;
  if (cols >= kSample || rows == 1) {
    scols = std::min<uint64_t>(cols, kSample);
    sample.assign(lv.begin(), lv.begin() + ptrdiff_t(scols));
  } else {
    srows = std::min(rows, std::max<uint64_t>(1, kSample / cols));
    for (uint64_t k = 0; k < srows; ++k) {
      const uint64_t r = k * rows / srows;
      sample.insert(sample.end(), lv.begin() + ptrdiff_t(r * cols), lv.begin() + ptrdiff_t((r + 1) * cols));
    }
  }
  double mean = 0;
  uint64_t nonzero = 0;
  for (int32_t q : sample)
    if (q) mean += std::abs(double(q)), ++nonzero;
  if (nonzero == 0) return base;
  mean /= double(nonzero);
  std::vector<LevelParams> cands{base};
  for (uint32_t u : {0u, 2u, 4u, 8u, 14u}) {
    if (u >= base.unary_len) continue;
    const double rem = std::max(0.0, mean - u - 1);
    const int k0 = std::max(0, int(std::floor(std::log2(rem + 1.0))) - 1);
    for (int k = std::max(0, k0 - 1); k <= std::min(30, k0 + 1); ++k) {
      LevelParams p;
      p.unary_len = u;
      p.eg_order = uint32_t(k);
      cands.push_back(p);
    }
  }
  std::vector<double> bits, work;
  double best = INFINITY;
  for (const LevelParams& p : cands) {
    bits.push_back(estimate_level_bits(sample.data(), srows, scols, p));
    best = std::min(best, bits.back());
    double w = 0;
    for (int32_t q : sample) w += reference_work(q < 0 ? 0u - uint32_t(q) : uint32_t(q), p);
    work.push_back(w);
  }
  size_t pick = cands.size();
  for (size_t i = 0; i < cands.size(); ++i) {
    if (bits[i] > best * (1.0 + tol)) continue;
    if (pick == cands.size() || work[i] < work[pick]) pick = i;
  }
  return cands[pick];
}

static void test_speed_pick_matches_reference() {
  std::mt19937_64 rng(23);
  const double inf = std::numeric_limits<double>::infinity();
  int work_decided = 0, picked_not_base = 0;
  for (int iter = 0; iter < 100; ++iter) {
    const uint64_t rows = 1 + rng() % 40, cols = 1 + rng() % 500;
    std::vector<int32_t> lv(size_t(rows * cols));
    const double spread = std::ldexp(1.0, int(rng() % 9));
    std::geometric_distribution<int> geo(1.0 / (1.0 + spread));
    for (auto& x : lv) {
      x = rng() % 3 == 0 ? 0 : geo(rng);
      if (rng() % 64 == 0) x = int32_t(1024 + rng() % 50000);  // past the work table
      if (rng() % 2) x = -x;
    }
    LevelParams cheapest;
    for (double tol : {0.0, 0.001, 0.01, 0.05, inf}) {
      const LevelParams got = choose_level_params_for_speed(lv.data(), rows, cols, tol);
      const LevelParams want = reference_speed_pick(lv, rows, cols, tol);
      CHECK(got.unary_len == want.unary_len && got.eg_order == want.eg_order);
      const LevelParams base = choose_level_params(lv.data(), lv.size());
      if (want.unary_len != base.unary_len || want.eg_order != base.eg_order) ++picked_not_base;
      if (tol == 0.0) cheapest = want;
      if (want.unary_len != cheapest.unary_len || want.eg_order != cheapest.eg_order) ++work_decided;
    }
  }
  CHECK(picked_not_base > 0);
  CHECK(work_decided > 0);  // some picks were made on work among several eligible candidates
}

// Run with an NNPRESS_ISA value that names no ISA (ctest's test_quant_isa_bogus): the trellis
// returns isa_env_status()'s error, naming the value; the quantizers without kernels still run.
static void test_isa_env_error() {
  const Status env = isa_env_status();
  CHECK(env.code() == StatusCode::kInvalidArgument);
  const auto w = laplacian_weights(64, 0.05, 4);
  std::vector<int32_t> q(64);
  QuantResult res;
  const Status s = quantize_ff(w.data(), nullptr, 4, 16, opts(QuantMethod::kTrellis, 0.01, 1e-5), q.data(), nullptr,
                               &res);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message() == env.message());
  CHECK(quantize_ff(w.data(), nullptr, 4, 16, opts(QuantMethod::kRdoq, 0.01, 1e-5), q.data(), nullptr, &res).ok());
  CHECK(quantize_ff(w.data(), nullptr, 4, 16, opts(QuantMethod::kNearest, 0.01, 0.0), q.data(), nullptr, &res).ok());
}

int main() {
  if (!isa_env_status().ok()) {
    test_isa_env_error();
    return TEST_MAIN_RESULT();
  }
  test_nearest();
  test_level_bits_many();
  test_speed_pick_matches_reference();
  test_exact_rate_and_reconstruction(QuantMethod::kRdoq);
  test_exact_rate_and_reconstruction(QuantMethod::kTrellis);
  test_rdoq_lambda_zero_is_nearest();
  test_lambda_trade_off(QuantMethod::kRdoq);
  test_lambda_trade_off(QuantMethod::kTrellis);
  test_zero_importance_cheapest();
  test_chunk_reset(QuantMethod::kRdoq);
  test_chunk_reset(QuantMethod::kTrellis);
  test_threads_deterministic(QuantMethod::kRdoq);
  test_threads_deterministic(QuantMethod::kTrellis);
  test_random_configurations();
  test_trellis_distortion();
  test_lane_search_matches_per_state_search();
  test_layer_like_passes_match_per_state_search();
  test_fused_step_edges();
  test_errors();
  test_dependent_rule();
  test_feedback();
  test_coded_params();
  return TEST_MAIN_RESULT();
}
