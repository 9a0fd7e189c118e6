// The .nnp container: round trips (quantized, raw, alias, empty, scalar), random access, thread-count
// independence, byte-identical output, and every single-byte corruption / truncation rejected.
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

using namespace nnpress;

static std::vector<int32_t> laplacian(size_t n, double scale, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> e(1.0 / scale);
  std::bernoulli_distribution coin(0.5);
  std::vector<int32_t> v(n);
  for (auto& x : v) {
    const int32_t m = int32_t(std::round(e(rng)));
    x = coin(rng) ? -m : m;
  }
  return v;
}

#ifdef NNPRESS_WITH_ENCODER
struct Model {
  std::vector<int32_t> big, small, scalar;
  std::vector<int64_t> counter;
  std::vector<uint8_t> flags;
  std::vector<float> bias;
  std::vector<TensorInput> inputs;
};

static Model make_model(uint64_t rows = 300, uint64_t cols = 130) {
  Model m;
  m.big = laplacian(rows * cols, 3.0, 1);  // several row blocks with block_elements = 4096
  m.small = laplacian(7 * 5, 1.0, 2);
  m.scalar = {-3};
  m.counter = {42, -7};
  m.flags = {1, 0, 1};
  m.bias = {0.5f, -1.25f, 3.0f};
  TensorInput t;
  t.name = "layer.0.weight";
  t.dtype = DType::kFloat32;
  t.storage = Storage::kQuantized;
  t.shape = {rows, cols};
  t.levels = m.big.data();
  t.step = 0.01;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "conv.\xC3\xA9t\xC3\xA9.w";  // UTF-8 name
  t.dtype = DType::kFloat16;
  t.storage = Storage::kQuantized;
  t.method = QuantMethod::kTrellis;  // dependent reconstruction, restarting every row
  t.shape = {7, 1, 5};
  t.levels = m.small.data();
  t.step = 0.125;
  t.lambda = 0.5;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "scale";
  t.dtype = DType::kBFloat16;
  t.storage = Storage::kQuantized;
  t.shape = {};
  t.levels = m.scalar.data();
  t.step = 0.3;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "empty";
  t.dtype = DType::kFloat32;
  t.storage = Storage::kQuantized;
  t.shape = {0, 4};
  t.step = 1.0;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "steps";
  t.dtype = DType::kInt64;
  t.role = TensorRole::kBuffer;
  t.storage = Storage::kRaw;
  t.shape = {2};
  t.raw = m.counter.data();
  t.raw_size = 16;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "mask";
  t.dtype = DType::kBool;
  t.role = TensorRole::kBuffer;
  t.storage = Storage::kRaw;
  t.shape = {3};
  t.raw = m.flags.data();
  t.raw_size = 3;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "layer.0.bias";
  t.dtype = DType::kFloat32;
  t.role = TensorRole::kBias;
  t.storage = Storage::kRaw;
  t.shape = {3};
  t.raw = m.bias.data();
  t.raw_size = 12;
  m.inputs.push_back(t);
  t = TensorInput();
  t.name = "head.weight";  // tied to layer.0.weight
  t.dtype = DType::kFloat32;
  t.storage = Storage::kAlias;
  t.shape = {rows, cols};
  t.alias_of = 0;
  m.inputs.push_back(t);
  return m;
}

static std::vector<uint8_t> write(const Model& m, unsigned threads, uint64_t block_elements = 4096) {
  WriterOptions opt;
  opt.block_elements = block_elements;
  opt.threads = threads;
  opt.metadata = "{\"producer\": \"test\"}";
  std::vector<uint8_t> out;
  CHECK(write_container(m.inputs, opt, &out).ok());
  return out;
}

static void test_round_trip() {
  Model m = make_model();
  const std::vector<uint8_t> bytes = write(m, 1);
  CHECK(write(m, 2) == bytes);  // identical for any thread count
  CHECK(write(m, 7) == bytes);
  ContainerReader r;
  Status s = ContainerReader::open_memory(bytes.data(), bytes.size(), &r);
  CHECK(s.ok());
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return;
  }
  CHECK(r.tensor_count() == m.inputs.size());
  CHECK(r.metadata() == "{\"producer\": \"test\"}");
  const TensorInfo& w = r.tensor(0);
  CHECK(w.chunks.size() == 10);  // 4096 / 130 = 31 rows per block, 300 rows
  CHECK(w.rows_per_block == 31);
  // Big tensor: every value is float(level * step); identical for 1, 2 and 5 threads.
  std::vector<float> v1(w.count), v2(w.count), v5(w.count);
  CHECK(r.decode("layer.0.weight", v1.data(), v1.size() * 4, 1).ok());
  CHECK(r.decode("layer.0.weight", v2.data(), v2.size() * 4, 2).ok());
  CHECK(r.decode("layer.0.weight", v5.data(), v5.size() * 4, 5).ok());
  CHECK(std::memcmp(v1.data(), v2.data(), v1.size() * 4) == 0);
  CHECK(std::memcmp(v1.data(), v5.data(), v1.size() * 4) == 0);
  bool same = true;
  for (size_t i = 0; i < m.big.size(); ++i) same &= v1[i] == float(double(m.big[i]) * 0.01);
  CHECK(same);
  std::vector<int32_t> lv(w.count);
  CHECK(r.decode_levels(0, lv.data(), lv.size(), 2).ok());
  CHECK(lv == m.big);
  // float16 tensor
  size_t i;
  CHECK(r.find("conv.\xC3\xA9t\xC3\xA9.w", &i).ok() && i == 1);
  CHECK(r.tensor(1).method == QuantMethod::kTrellis && r.tensor(1).lambda == 0.5);
  std::vector<uint16_t> h(35);
  CHECK(r.decode(1, h.data(), 70).ok());
  std::vector<float> ref(35);
  CHECK(dequantize(m.small.data(), 7, 5, 0.125, QuantMethod::kTrellis, ref.data()).ok());
  same = true;
  bool differs_from_uniform = false;
  for (size_t k = 0; k < 35; ++k) {
    same &= h[k] == float_to_half_bits(ref[k]);
    differs_from_uniform |= ref[k] != float(m.small[k] * 0.125);
  }
  CHECK(same);
  CHECK(differs_from_uniform);
  // bfloat16 scalar
  uint16_t b = 0;
  CHECK(r.tensor(2).shape.empty() && r.tensor(2).count == 1);
  CHECK(r.decode(2, &b, 2).ok());
  CHECK(b == float_to_bfloat16_bits(float(-3 * 0.3)));
  // empty
  CHECK(r.tensor(3).count == 0 && r.tensor(3).chunks.empty());
  CHECK(r.decode(3, nullptr, 0).ok());
  // raw
  int64_t c[2];
  CHECK(r.decode("steps", c, 16).ok() && c[0] == 42 && c[1] == -7);
  uint8_t f[3];
  CHECK(r.decode("mask", f, 3).ok() && f[0] == 1 && f[1] == 0 && f[2] == 1);
  float bias[3];
  CHECK(r.decode("layer.0.bias", bias, 12).ok() && bias[1] == -1.25f);
  // alias
  CHECK(r.tensor(7).storage == Storage::kAlias && r.tensor(7).alias_of == 0);
  std::vector<float> a(w.count);
  CHECK(r.decode("head.weight", a.data(), a.size() * 4).ok());
  CHECK(a == v1);
  // decode_all with mixed skips, threads 1 and 2
  std::vector<std::vector<uint8_t>> bufs(r.tensor_count());
  std::vector<void*> outs;
  std::vector<size_t> sizes;
  for (size_t k = 0; k < r.tensor_count(); ++k) {
    bufs[k].resize(r.tensor(k).output_bytes() + 1);
    outs.push_back(k == 4 ? nullptr : bufs[k].data());
    sizes.push_back(r.tensor(k).output_bytes());
  }
  CHECK(r.decode_all(outs, sizes, 2).ok());
  CHECK(std::memcmp(bufs[0].data(), v1.data(), v1.size() * 4) == 0);
  CHECK(std::memcmp(bufs[7].data(), v1.data(), v1.size() * 4) == 0);
  // errors
  CHECK(r.find("nope", &i).code() == StatusCode::kNotFound);
  CHECK(r.decode(0, v1.data(), 4, 1).code() == StatusCode::kInvalidArgument);
  CHECK(r.decode_levels(4, lv.data(), 2).code() == StatusCode::kInvalidArgument);
  CHECK(r.verify_checksums().ok());
}

static void test_fixed_params() {
  Model m = make_model();
  m.inputs[0].unary_len = 3;
  m.inputs[0].eg_order = 1;
  std::vector<uint8_t> out;
  CHECK(write_container(m.inputs, WriterOptions(), &out).ok());
  ContainerReader r;
  CHECK(ContainerReader::open_memory(out.data(), out.size(), &r).ok());
  CHECK(r.tensor(0).params.unary_len == 3 && r.tensor(0).params.eg_order == 1);
  std::vector<int32_t> lv(r.tensor(0).count);
  CHECK(r.decode_levels(0, lv.data(), lv.size()).ok() && lv == m.big);
  m.inputs[0].eg_order = -1;  // only one of the two
  CHECK(write_container(m.inputs, WriterOptions(), &out).code() == StatusCode::kInvalidArgument);
  m.inputs[0].eg_order = 31;
  CHECK(write_container(m.inputs, WriterOptions(), &out).code() == StatusCode::kInvalidArgument);
}

static void test_writer_rejects() {
  Model m = make_model();
  std::vector<uint8_t> out;
  WriterOptions opt;
  auto bad = [&](auto mutate) {
    Model mm = make_model();
    mutate(mm.inputs);
    return write_container(mm.inputs, opt, &out).code() == StatusCode::kInvalidArgument;
  };
  CHECK(bad([](auto& v) { v[1].name = v[0].name; }));
  CHECK(bad([](auto& v) { v[0].name = ""; }));
  CHECK(bad([](auto& v) { v[0].step = 0; }));
  CHECK(bad([](auto& v) { v[0].step = NAN; }));
  CHECK(bad([](auto& v) { v[4].raw_size = 15; }));
  CHECK(bad([](auto& v) { v[4].storage = Storage::kQuantized; }));  // int64 cannot be quantized
  CHECK(bad([](auto& v) { v[7].alias_of = 7; }));
  CHECK(bad([](auto& v) { v[7].shape = {130, 300}; }));
  CHECK(bad([](auto& v) { v[0].shape = {1, 2, 3, 4, 5, 6, 7, 8, 9}; }));
}

#endif  // NNPRESS_WITH_ENCODER

[[maybe_unused]] static bool is_format_error(const Status& s) { return !s.ok() && s.is_format_error(); }

// Opens and fully decodes; returns the status of the first failure.
[[maybe_unused]] static Status open_and_decode(const std::vector<uint8_t>& bytes) {
  ContainerReader r;
  Status s = ContainerReader::open_memory(bytes.data(), bytes.size(), &r);
  if (!s.ok()) return s;
  std::vector<std::vector<uint8_t>> bufs(r.tensor_count());
  std::vector<void*> outs;
  std::vector<size_t> sizes;
  for (size_t k = 0; k < r.tensor_count(); ++k) {
    bufs[k].resize(r.tensor(k).output_bytes());
    outs.push_back(bufs[k].empty() ? static_cast<void*>(&sizes) : bufs[k].data());
    sizes.push_back(bufs[k].size());
  }
  return r.decode_all(outs, sizes, 1);
}

#ifdef NNPRESS_WITH_ENCODER
static void test_corruption() {
  Model m = make_model(12, 10);  // small, so that every byte position can be tried
  const std::vector<uint8_t> good = write(m, 2, 40);
  ContainerReader probe;
  CHECK(ContainerReader::open_memory(good.data(), good.size(), &probe).ok());
  CHECK(probe.tensor(0).chunks.size() == 3);
  CHECK(open_and_decode(good).ok());
  // Every single-byte change (xor with a few patterns) anywhere in the file is detected.
  size_t undetected = 0;
  for (size_t pos = 0; pos < good.size(); ++pos) {
    for (uint8_t x : {0x01, 0x80, 0xFF}) {
      std::vector<uint8_t> bad = good;
      bad[pos] ^= x;
      if (!is_format_error(open_and_decode(bad))) ++undetected;
    }
  }
  CHECK(undetected == 0);
  // Every truncation.
  size_t bad_trunc = 0;
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    if (!is_format_error(open_and_decode(cut))) ++bad_trunc;
  }
  CHECK(bad_trunc == 0);
  // Appended garbage.
  for (size_t extra : {1, 7, 100}) {
    std::vector<uint8_t> more = good;
    more.insert(more.end(), extra, 0xAB);
    CHECK(is_format_error(open_and_decode(more)));
  }
  // The checksum mismatch names the tensor.
  ContainerReader r;
  CHECK(ContainerReader::open_memory(good.data(), good.size(), &r).ok());
  std::vector<uint8_t> bad = good;
  bad[r.tensor(1).chunks[0].offset] ^= 0x10;
  Status s = open_and_decode(bad);
  CHECK(s.code() == StatusCode::kCorrupt);
  CHECK(s.message().find("conv.\xC3\xA9t\xC3\xA9.w") != std::string::npos);
}

// decode_levels_rows: every row range equals the same rows of decode_levels, on and off chunk
// boundaries, for any thread count and through an alias; a corrupt chunk fails exactly the ranges
// that reach it; bad ranges and outputs are refused.
static void test_level_rows() {
  Model m = make_model();
  const std::vector<uint8_t> bytes = write(m, 1);
  ContainerReader r;
  CHECK(ContainerReader::open_memory(bytes.data(), bytes.size(), &r).ok());
  const TensorInfo& w = r.tensor(0);
  const uint64_t rows = w.rows, cols = w.cols;
  CHECK(w.chunks.size() == 10 && rows == 300);
  std::vector<int32_t> all(w.count);
  CHECK(r.decode_levels(0, all.data(), all.size()).ok());
  bool same = true;
  for (uint64_t r0 : {0, 1, 30, 31, 62, 150, 298, 299}) {
    for (uint64_t n : {1, 2, 31, 40, 100, 300}) {
      if (r0 + n > rows) continue;
      for (unsigned threads : {1u, 3u}) {
        std::vector<int32_t> part(n * cols, 7);
        CHECK(r.decode_levels_rows(0, r0, n, part.data(), part.size(), threads).ok());
        same &= std::equal(part.begin(), part.end(), all.begin() + r0 * cols);
        std::vector<int32_t> via_alias(n * cols, 7);
        CHECK(r.decode_levels_rows(7, r0, n, via_alias.data(), via_alias.size(), threads).ok());
        same &= via_alias == part;
      }
    }
  }
  CHECK(same);
  std::vector<int32_t> none;
  CHECK(r.decode_levels_rows(0, 300, 0, none.data(), 0).ok());  // an empty range at the end
  std::vector<int32_t> buf(2 * cols);
  CHECK(r.decode_levels_rows(0, 299, 2, buf.data(), buf.size()).code() == StatusCode::kInvalidArgument);
  CHECK(r.decode_levels_rows(0, ~uint64_t(0), 2, buf.data(), buf.size()).code() == StatusCode::kInvalidArgument);
  CHECK(r.decode_levels_rows(0, 0, 2, buf.data(), buf.size() - 1).code() == StatusCode::kInvalidArgument);
  CHECK(r.decode_levels_rows(0, 0, 2, nullptr, buf.size()).code() == StatusCode::kInvalidArgument);
  CHECK(r.decode_levels_rows(4, 0, 1, buf.data(), 1).code() == StatusCode::kInvalidArgument);  // raw
  CHECK(r.decode_levels_rows(99, 0, 1, buf.data(), 1).code() == StatusCode::kInvalidArgument);
  // a corrupt third chunk (rows 62..92): ranges reaching it fail as corrupt, others decode
  std::vector<uint8_t> bad = bytes;
  bad[w.chunks[2].offset + w.chunks[2].size / 2] ^= 0x20;
  ContainerReader rb;
  CHECK(ContainerReader::open_memory(bad.data(), bad.size(), &rb).ok());
  std::vector<int32_t> part(40 * cols);
  CHECK(rb.decode_levels_rows(0, 0, 40, part.data(), part.size()).ok());
  CHECK(std::equal(part.begin(), part.end(), all.begin()));
  Status s = rb.decode_levels_rows(0, 50, 40, part.data(), part.size());
  CHECK(s.code() == StatusCode::kCorrupt && s.message().find("chunk 3 of 10") != std::string::npos);
}

#endif  // NNPRESS_WITH_ENCODER

// A table entry that claims a huge tensor is rejected before anything is allocated.
static void test_hostile_table() {
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
  table.insert(table.end(), {1, 0, 1, 2});  // float32, weight, quantized, 2 dims
  p64(1u << 15);
  p64(1u << 15);
  table.insert(table.end(), {1, 0, 0, 0});
  for (double d : {1.0, 0.0}) {
    uint64_t u;
    std::memcpy(&u, &d, 8);
    p64(u);
  }
  p64(1u << 15);  // rows per block
  p32(1);
  p64(kContainerHeaderSize);
  p64(8);
  const uint8_t payload[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  p32(crc32c(payload, 8));
  const std::vector<uint8_t> f = nnpress_test::frame_nnp(std::vector<uint8_t>(payload, payload + 8), table);
  ContainerReader r;
  Status s = ContainerReader::open_memory(f.data(), f.size(), &r);
  CHECK(s.code() == StatusCode::kCorrupt);  // 2^30 levels in 8 bytes
  CHECK(s.message().find("claims") != std::string::npos);
  ReaderOptions small;
  small.limits.max_elements = 1000;
  s = ContainerReader::open_memory(f.data(), f.size(), &r, small);
  CHECK(s.code() == StatusCode::kLimit);
}

static void test_half_conversion() {
  CHECK(float_to_half_bits(1.0f) == 0x3C00);
  CHECK(float_to_half_bits(-2.0f) == 0xC000);
  CHECK(float_to_half_bits(65504.0f) == 0x7BFF);
  CHECK(float_to_half_bits(65520.0f) == 0x7C00);
  CHECK(float_to_half_bits(5.9604645e-08f) == 0x0001);  // smallest subnormal
  CHECK(float_to_half_bits(2.9802322e-08f) == 0x0000);  // half of it: ties to even (0)
  CHECK(float_to_half_bits(1.0f + 1.0f / 2048) == 0x3C00);  // tie -> even
  CHECK(float_to_half_bits(1.0f + 3.0f / 2048) == 0x3C02);  // tie -> even (up)
  CHECK(float_to_bfloat16_bits(1.0f) == 0x3F80);
  CHECK(float_to_bfloat16_bits(1.00390625f) == 0x3F80);  // tie -> even
  CHECK(float_to_bfloat16_bits(1.01171875f) == 0x3F82);  // tie -> even (up)
}

#ifdef NNPRESS_WITH_ENCODER
static void test_file_io() {
  Model m = make_model();
  std::vector<uint8_t> bytes;
  CHECK(write_container(m.inputs, WriterOptions(), &bytes).ok());
  const std::string path = "test_container_tmp.nnp";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  CHECK(f != nullptr);
  if (f == nullptr) return;
  CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
  std::fclose(f);
  ContainerReader r;
  CHECK(ContainerReader::open_file(path, &r).ok());
  CHECK(r.tensor_count() == m.inputs.size());
  std::remove(path.c_str());
  CHECK(ContainerReader::open_file(path, &r).code() == StatusCode::kIo);
}

#endif  // NNPRESS_WITH_ENCODER

int main() {
  test_half_conversion();
  test_hostile_table();
#ifdef NNPRESS_WITH_ENCODER  // the rest writes files first (decoder-only builds: test_container_golden)
  test_round_trip();
  test_fixed_params();
  test_writer_rejects();
  test_corruption();
  test_file_io();
  test_level_rows();
#endif
  return TEST_MAIN_RESULT();
}
