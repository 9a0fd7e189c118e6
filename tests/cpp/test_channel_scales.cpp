// Per-row / per-column step scales: the exponent table, dequantize, the quantizers (encoder builds)
// and the .nnp storage code 3 (format 1.1), including hostile tables.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "nnp_frame.h"
#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"
#include "nnpress/quant/dequantize.h"
#include "nnpress/runtime.h"
#ifdef NNPRESS_WITH_ENCODER
#include "nnpress/quant/quantize.h"
#endif

using namespace nnpress;

static uint64_t bits_of(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return u;
}

// 2^(e/8) is exact, monotonic, and round-trips through channel_scale_exp_of.
static void test_exponent_table() {
  for (int e = -128; e <= 127; ++e) {
    const double s = channel_scale_of_exp(int8_t(e));
    CHECK(std::isfinite(s) && s > 0);
    CHECK(channel_scale_exp_of(s) == e);
    // Independent: 2^(e/8) in long double, rounded to double, agrees within one ulp, and whole
    // octaves are exact powers of two.
    const double ref = double(std::exp2((long double)e / 8.0L));
    CHECK(std::fabs(s - ref) <= std::ldexp(std::fabs(ref), -52));
    if (e % 8 == 0) CHECK(s == std::ldexp(1.0, e / 8));
    if (e > -128) CHECK(s > channel_scale_of_exp(int8_t(e - 1)));
    // The table is the same across octaves: 2^(e/8) = 2^((e mod 8)/8) * 2^floor(e/8) exactly.
    if (e <= 119) CHECK(bits_of(s) == bits_of(std::ldexp(channel_scale_of_exp(int8_t(e + 8)), -1)));
  }
  CHECK(channel_scale_of_exp(4) == 0x1.6a09e667f3bcdp+0);  // sqrt(2), correctly rounded
  CHECK(channel_scale_exp_of(1e-300) == -128 && channel_scale_exp_of(1e300) == 127);
  CHECK(channel_scale_exp_of(std::nan("")) == 0 && channel_scale_exp_of(-1.0) == 0);
}

// dequantize with scales: u * ((step * row[i]) * col[j]), both rules; all-ones scales change nothing.
static void test_dequantize() {
  const uint64_t rows = 3, cols = 5;
  std::vector<int32_t> q = {1, -2, 3, 0, 7, -1, 0, 0, 5, -6, 2, 2, -3, 1, 0};
  const double step = 0.1;
  std::vector<double> row = {1.0, 0.5, 3.0}, col = {1.0, 2.0, 0.25, 1.5, 0.75}, ones_r(rows, 1.0), ones_c(cols, 1.0);
  for (QuantMethod m : {QuantMethod::kNearest, QuantMethod::kTrellis}) {
    std::vector<float> plain(rows * cols), ones(rows * cols), scaled(rows * cols), rows_only(rows * cols);
    CHECK(dequantize(q.data(), rows, cols, step, m, plain.data()).ok());
    ChannelScales one{ones_r.data(), ones_c.data()};
    CHECK(dequantize(q.data(), rows, cols, step, m, one, ones.data()).ok());
    CHECK(std::memcmp(plain.data(), ones.data(), plain.size() * 4) == 0);
    ChannelScales sc{row.data(), col.data()};
    CHECK(dequantize(q.data(), rows, cols, step, m, sc, scaled.data()).ok());
    ChannelScales ro{row.data(), nullptr};
    CHECK(dequantize(q.data(), rows, cols, step, m, ro, rows_only.data()).ok());
    for (uint64_t r = 0; r < rows; ++r) {
      int state = 0;
      for (uint64_t j = 0; j < cols; ++j) {
        const int32_t k = q[r * cols + j];
        const int64_t u = m == QuantMethod::kTrellis ? dq_index(state, k) : k;
        state = dq_next_state(state, k);
        CHECK(scaled[r * cols + j] == float(double(u) * ((step * row[r]) * col[j])));
        CHECK(rows_only[r * cols + j] == float(double(u) * (step * row[r])));
      }
    }
  }
  std::vector<float> out(rows * cols);
  for (double bad : {0.0, -1.0, std::nan(""), double(INFINITY)}) {
    std::vector<double> c = col;
    c[2] = bad;
    ChannelScales sc{nullptr, c.data()};
    CHECK(dequantize(q.data(), rows, cols, step, QuantMethod::kNearest, sc, out.data()).code() ==
          StatusCode::kInvalidArgument);
  }
  std::vector<double> huge(rows, 1e300);
  ChannelScales h{huge.data(), huge.data()};  // step x 1e600 overflows
  CHECK(dequantize(q.data(), rows, rows, 1.0, QuantMethod::kNearest, h, out.data()).code() ==
        StatusCode::kInvalidArgument);
}

// ---- hand-built tables (decoder side: no encoder needed) ----
struct Entry {
  uint16_t minor = 1;
  uint8_t storage = kStorageCodeQuantizedScaled;
  uint64_t rows = 2, cols = 3;
  double step = 0.5;
  uint8_t flags = kScaleFlagRows | kScaleFlagCols;
  std::vector<int8_t> row_exp = {8, -8}, col_exp = {0, 1, 16};
};

static std::vector<uint8_t> build(const Entry& e) {
  std::vector<uint8_t> table;
  auto p32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) table.push_back(uint8_t(v >> (8 * i)));
  };
  auto p64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) table.push_back(uint8_t(v >> (8 * i)));
  };
  p32(1);
  p32(0);
  table.push_back(1);
  table.push_back(0);
  table.push_back('w');
  table.insert(table.end(), {1, 0, e.storage, 2});  // float32, weight, storage, 2 dims
  p64(e.rows);
  p64(e.cols);
  table.insert(table.end(), {0, 0, 4, 0});  // nearest, reserved, unary 4, eg 0
  p64(bits_of(e.step));
  p64(bits_of(0.0));
  p64(e.rows);  // one row block
  if (e.storage == kStorageCodeQuantizedScaled) {
    table.push_back(e.flags);
    table.insert(table.end(), e.row_exp.begin(), e.row_exp.end());
    table.insert(table.end(), e.col_exp.begin(), e.col_exp.end());
  }
  p32(1);
  p64(kContainerHeaderSize);
  p64(8);
  const uint8_t payload[8] = {1, 2, 3, 4, 5, 6, 7, 8};  // parsing never decodes it
  p32(crc32c(payload, 8));
  return nnpress_test::frame_nnp(std::vector<uint8_t>(payload, payload + 8), table, uint16_t(e.minor));
}

static Status parse(const Entry& e, ContainerReader* r = nullptr) {
  ContainerReader tmp;
  const std::vector<uint8_t> f = build(e);
  return ContainerReader::open_bytes(f, r ? r : &tmp);
}

static void test_hostile_tables() {
  ContainerReader r;
  CHECK(parse(Entry(), &r).ok());
  CHECK(r.version_minor() == 1);
  const TensorInfo& t = r.tensor(0);
  CHECK(t.storage == Storage::kQuantized && t.has_channel_scales());
  CHECK(t.row_scale_exp == std::vector<int8_t>({8, -8}) && t.col_scale_exp == std::vector<int8_t>({0, 1, 16}));
  CHECK(t.row_scale[0] == 2.0 && t.row_scale[1] == 0.5 && t.col_scale[2] == 4.0);
  {
    Entry e;  // rows only / columns only
    e.flags = kScaleFlagRows;
    e.col_exp.clear();
    CHECK(parse(e, &r).ok() && r.tensor(0).col_scale_exp.empty() && r.tensor(0).row_scale_exp.size() == 2);
    e.flags = kScaleFlagCols;
    e.row_exp.clear();
    e.col_exp = {0, 0, 0};
    CHECK(parse(e, &r).ok() && r.tensor(0).row_scale_exp.empty());
  }
  {
    Entry e;  // storage 3 needs a 1.1 file
    e.minor = 0;
    Status s = parse(e);
    CHECK(s.code() == StatusCode::kCorrupt && s.message().find("1.1") != std::string::npos);
  }
  {
    Entry e;  // a plain quantized entry in a 1.1 file is fine
    e.storage = 1;
    CHECK(parse(e, &r).ok() && !r.tensor(0).has_channel_scales());
  }
  for (uint8_t flags : {0, 4, 5, 0x80}) {
    Entry e;
    e.flags = flags;
    CHECK(parse(e).code() == StatusCode::kCorrupt);
  }
  {
    Entry e;  // 2^40 row scales claimed by a table of a few dozen bytes: rejected before allocating
    e.rows = uint64_t(1) << 40;
    e.cols = 1;
    ReaderOptions big;
    big.limits.max_elements = uint64_t(1) << 41;
    ContainerReader rr;
    const std::vector<uint8_t> f = build(e);
    Status s = ContainerReader::open_memory(f.data(), f.size(), &rr, big);
    CHECK(s.code() == StatusCode::kTruncated && s.message().find("row scales") != std::string::npos);
  }
  {
    Entry e;  // scales missing at the end of the table (one column exponent short)
    e.col_exp = {0, 1};
    CHECK(!parse(e).ok());
  }
  {
    Entry e;  // step x scales overflows / underflows
    e.step = 1e308;
    e.row_exp = {127, 0};
    CHECK(parse(e).code() == StatusCode::kCorrupt);
    e.step = 1e-320;
    e.row_exp = {-128, 0};
    e.col_exp = {-128, 0, 0};
    CHECK(parse(e).code() == StatusCode::kCorrupt);
  }
  {
    Entry e;  // unknown storage 4: corrupt in a 1.1 file, unsupported in a newer minor version
    e.storage = 4;
    CHECK(parse(e).code() == StatusCode::kCorrupt);
    e.minor = 2;
    CHECK(parse(e).code() == StatusCode::kUnsupported);
  }
}

#ifdef NNPRESS_WITH_ENCODER
static Status qf(const float* w, const float* f, uint64_t rows, uint64_t cols, const QuantOptions& o, int32_t* q,
                 float* rec, QuantResult* res) {
  return quantize<float, float>(w, f, rows, cols, o, q, rec, res);
}

static std::vector<float> gaussian(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

static std::vector<int8_t> random_exps(size_t n, uint32_t seed, int lo, int hi) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = int8_t(d(g));
  return v;
}

static std::vector<double> values(const std::vector<int8_t>& e) {
  std::vector<double> v(e.size());
  for (size_t i = 0; i < e.size(); ++i) v[i] = channel_scale_of_exp(e[i]);
  return v;
}

// The quantizers evaluate exactly what dequantize reconstructs, on each weight's own step.
static void test_quantizers() {
  const uint64_t rows = 24, cols = 40;
  std::vector<float> w = gaussian(rows * cols, 1);
  std::vector<float> f = gaussian(rows * cols, 2);
  for (auto& x : f) x = x * x;
  const std::vector<double> rs = values(random_exps(rows, 3, -16, 16)), cs = values(random_exps(cols, 4, -16, 16));
  const double step = 0.08;
  for (QuantMethod m : {QuantMethod::kNearest, QuantMethod::kRdoq, QuantMethod::kTrellis}) {
    QuantOptions o;
    o.step = step;
    o.lambda = m == QuantMethod::kNearest ? 0.0 : 0.1 * step * step;
    o.method = m;
    o.chunk_rows = 7;
    o.threads = 2;
    o.scales = {rs.data(), cs.data()};
    std::vector<int32_t> q(rows * cols), q1(rows * cols);
    std::vector<float> rec(rows * cols), deq(rows * cols);
    QuantResult res, res1;
    CHECK(qf(w.data(), f.data(), rows, cols, o, q.data(), rec.data(), &res).ok());
    CHECK(dequantize(q.data(), rows, cols, step, m, o.scales, deq.data()).ok());
    CHECK(std::memcmp(rec.data(), deq.data(), rec.size() * 4) == 0);
    // The reported distortion is the weighted error of exactly those reconstructions (in double).
    double dist = 0.0;
    std::vector<double> deq64(rows * cols);
    CHECK(dequantize(q.data(), rows, cols, step, m, o.scales, deq64.data()).ok());
    for (size_t i = 0; i < w.size(); ++i) dist += double(f[i]) * (double(w[i]) - deq64[i]) * (double(w[i]) - deq64[i]);
    CHECK(std::fabs(dist - res.distortion) <= 1e-9 * (1.0 + dist));
    // Thread count does not matter.
    o.threads = 1;
    CHECK(qf(w.data(), f.data(), rows, cols, o, q1.data(), nullptr, &res1).ok());
    CHECK(q == q1 && res.rate == res1.rate);
    // Nearest: each level is rint(w / step_ij).
    if (m == QuantMethod::kNearest)
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t j = 0; j < cols; ++j)
          CHECK(q[r * cols + j] == int32_t(std::nearbyint(double(w[r * cols + j]) / ((step * rs[r]) * cs[j]))));
    // Scales matter: without them the levels differ.
    QuantOptions plain = o;
    plain.scales = ChannelScales();
    CHECK(qf(w.data(), f.data(), rows, cols, plain, q1.data(), nullptr, nullptr).ok());
    CHECK(q != q1);
    // A constant column scale c on a one-row tensor is the same search as step * c without scales
    // (same step_ij bit for bit), so levels and rate agree exactly.
    std::vector<double> c(cols, channel_scale_of_exp(5));
    QuantOptions one = o;
    one.chunk_rows = 0;
    one.scales = {nullptr, c.data()};
    QuantOptions same = one;
    same.scales = ChannelScales();
    same.step = step * c[0];
    same.lambda = o.lambda;
    QuantResult ra, rb;
    std::vector<int32_t> qa(cols), qb(cols);
    CHECK(qf(w.data(), f.data(), 1, cols, one, qa.data(), nullptr, &ra).ok());
    CHECK(qf(w.data(), f.data(), 1, cols, same, qb.data(), nullptr, &rb).ok());
    CHECK(qa == qb && ra.rate == rb.rate && ra.distortion == rb.distortion);
  }
  // Bad scales are argument errors.
  std::vector<int32_t> q(rows * cols);
  for (double bad : {0.0, -2.0, std::nan(""), double(INFINITY)}) {
    std::vector<double> r2 = rs;
    r2[5] = bad;
    QuantOptions o;
    o.step = step;
    o.method = QuantMethod::kRdoq;
    o.scales = {r2.data(), nullptr};
    CHECK(qf(w.data(), nullptr, rows, cols, o, q.data(), nullptr, nullptr).code() == StatusCode::kInvalidArgument);
  }
  {
    QuantOptions o;  // |w / step_ij| >= 2^30 through a tiny scale
    o.step = 1e-3;
    std::vector<double> tiny(rows, 1e-7);
    o.scales = {tiny.data(), nullptr};
    CHECK(qf(w.data(), nullptr, rows, cols, o, q.data(), nullptr, nullptr).code() == StatusCode::kInvalidArgument);
  }
}

// Write -> read: format 1.1 only with scales, exponents stored, values = dequantize with the same
// scales for every float dtype, and any damage to the table is detected.
static void test_container() {
  const uint64_t rows = 30, cols = 21;
  std::vector<float> w = gaussian(rows * cols, 5);
  const std::vector<int8_t> re = random_exps(rows, 6, -30, 30), ce = random_exps(cols, 7, -30, 30);
  const std::vector<double> rs = values(re), cs = values(ce);
  QuantOptions o;
  o.step = 0.05;
  o.lambda = 0.2 * o.step * o.step;
  o.method = QuantMethod::kTrellis;
  o.chunk_rows = 8;
  o.scales = {rs.data(), cs.data()};
  std::vector<int32_t> q(rows * cols);
  std::vector<float> rec(rows * cols);
  CHECK(qf(w.data(), nullptr, rows, cols, o, q.data(), rec.data(), nullptr).ok());

  std::vector<TensorInput> in(4);
  const DType dtypes[4] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};
  for (int k = 0; k < 4; ++k) {
    in[k].name = "t" + std::to_string(k);
    in[k].dtype = dtypes[k];
    in[k].storage = Storage::kQuantized;
    in[k].shape = {rows, 3, 7};
    in[k].levels = q.data();
    in[k].method = o.method;
    in[k].step = o.step;
    in[k].rows_per_block = 8;
    in[k].row_scale_exp = k == 3 ? nullptr : re.data();
    in[k].col_scale_exp = k == 2 ? nullptr : ce.data();
  }
  std::vector<uint8_t> file, file2;
  WriterOptions wo;
  wo.threads = 2;
  CHECK(write_container(in, wo, &file).ok());
  wo.threads = 1;
  CHECK(write_container(in, wo, &file2).ok());
  CHECK(file == file2);
  CHECK(file[10] == 1 && file[11] == 0);  // version 1.1
  ContainerReader r;
  CHECK(ContainerReader::open_memory(file.data(), file.size(), &r).ok());
  for (int k = 0; k < 4; ++k) {
    const TensorInfo& t = r.tensor(k);
    CHECK(t.row_scale_exp == (k == 3 ? std::vector<int8_t>() : re));
    CHECK(t.col_scale_exp == (k == 2 ? std::vector<int8_t>() : ce));
    ChannelScales sc{k == 3 ? nullptr : rs.data(), k == 2 ? nullptr : cs.data()};
    if (dtypes[k] == DType::kFloat64) {
      std::vector<double> got(rows * cols), want(rows * cols);
      CHECK(r.decode(k, got.data(), got.size() * 8, 2).ok());
      CHECK(dequantize(q.data(), rows, cols, o.step, o.method, sc, want.data()).ok());
      CHECK(got == want);
    } else {
      std::vector<float> want(rows * cols);
      CHECK(dequantize(q.data(), rows, cols, o.step, o.method, sc, want.data()).ok());
      if (k == 0) CHECK(std::memcmp(want.data(), rec.data(), want.size() * 4) == 0);  // what the search evaluated
      if (dtypes[k] == DType::kFloat32) {
        std::vector<float> got(rows * cols);
        CHECK(r.decode(k, got.data(), got.size() * 4, 2).ok());
        CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
      } else {
        std::vector<uint16_t> got(rows * cols);
        CHECK(r.decode(k, got.data(), got.size() * 2, 2).ok());
        bool same = true;
        for (size_t i = 0; i < got.size(); ++i)
          same = same && got[i] == (dtypes[k] == DType::kFloat16 ? float_to_half_bits(want[i])
                                                                 : float_to_bfloat16_bits(want[i]));
        CHECK(same);
      }
    }
  }
  // The edge runtime reads the same values (dense float32 and a CSER matrix of them).
  {
    Model model;
    CHECK(Model::open_memory(file.data(), file.size(), &model).ok());
    std::vector<float> got, want(rows * cols);
    CHECK(model.decode_float32("t0", &got, 2).ok());
    ChannelScales sc{rs.data(), cs.data()};
    CHECK(dequantize(q.data(), rows, cols, o.step, o.method, sc, want.data()).ok());
    CHECK(got.size() == want.size() && std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
  }
  // Without scales the same tensors make a 1.0 file.
  for (auto& t : in) t.row_scale_exp = t.col_scale_exp = nullptr;
  CHECK(write_container(in, wo, &file2).ok());
  CHECK(file2[10] == 0 && file2.size() < file.size());
  // Every single-byte change of the table (scales included) and every truncation is rejected.
  uint64_t table_offset = 0;
  for (int i = 0; i < 8; ++i) table_offset |= uint64_t(file[16 + i]) << (8 * i);
  int accepted = 0;
  for (size_t i = size_t(table_offset); i < file.size(); ++i) {
    std::vector<uint8_t> bad = file;
    bad[i] ^= 0x01;
    ContainerReader rr;
    if (ContainerReader::open_memory(bad.data(), bad.size(), &rr).ok()) ++accepted;
  }
  CHECK(accepted == 0);
  for (size_t n = 0; n < file.size(); n += 7) {
    ContainerReader rr;
    CHECK(!ContainerReader::open_memory(file.data(), n, &rr).ok());
  }
  // Writer argument checks.
  in[0].row_scale_exp = re.data();
  in[0].step = 1e308;
  std::vector<int8_t> big(rows, 127);
  in[0].row_scale_exp = big.data();
  CHECK(write_container(in, wo, &file2).code() == StatusCode::kInvalidArgument);
  std::vector<TensorInput> raw(1);
  float one = 1.f;
  raw[0].name = "r";
  raw[0].shape = {1};
  raw[0].raw = &one;
  raw[0].raw_size = 4;
  raw[0].row_scale_exp = big.data();
  CHECK(write_container(raw, wo, &file2).code() == StatusCode::kInvalidArgument);
}
#endif

int main() {
  test_exponent_table();
  test_dequantize();
  test_hostile_tables();
#ifdef NNPRESS_WITH_ENCODER
  test_quantizers();
  test_container();
#endif
  return TEST_MAIN_RESULT();
}
