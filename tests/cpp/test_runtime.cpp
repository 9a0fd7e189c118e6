// The edge runtime (nnpress/runtime.h): open from file/memory/bytes, list, decode by name into a
// buffer / float32 / CER / CSER / codebook, decode_all identical for every thread count, float16 and
// bfloat16 widening (all 65536 half patterns), status and exception error modes, corrupt files.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "nnpress/runtime.h"
#include "nnpress/sparse/kernels.h"

using namespace nnpress;

static const std::string kGolden = std::string(NNPRESS_TEST_DATA_DIR) + "/golden/golden_v1_mixed.nnp";

static bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

// Works on the committed golden file, so it also runs in decoder-only builds.
static void test_golden() {
  Model m;
  Status s = Model::open_file(kGolden, &m);
  CHECK(s.ok());
  if (!s.ok()) return;
  const std::vector<TensorSummary> list = m.list();
  CHECK(list.size() == m.tensor_count());
  CHECK(list.size() >= 5);
  size_t idx = 0;
  CHECK(m.find("features.0.weight", &idx).ok());
  CHECK(list[idx].name == "features.0.weight");
  CHECK((list[idx].shape == std::vector<uint64_t>{6, 1, 3, 3}));
  CHECK(list[idx].count == 54 && list[idx].output_bytes == 54 * 4);
  CHECK(list[idx].dtype == DType::kFloat32);
  TensorSummary sum;
  CHECK(m.summary("classifier.weight", &sum).ok());
  CHECK(sum.dtype == DType::kFloat16 && sum.count == 240);
  CHECK(m.summary("nope", &sum).code() == StatusCode::kNotFound);

  // decode into a caller buffer == the reader's decode; decode_float32 of float32 is the same bits.
  std::vector<float> a(54), b;
  CHECK(m.decode("features.0.weight", a.data(), a.size() * 4).ok());
  CHECK(m.decode_float32("features.0.weight", &b).ok());
  CHECK(same_bits(a, b));
  std::vector<float> wrong(53);
  CHECK(m.decode("features.0.weight", wrong.data(), wrong.size() * 4).code() == StatusCode::kInvalidArgument);

  // float16 widening: bits convert back exactly.
  std::vector<uint16_t> half(240);
  CHECK(m.decode("classifier.weight", half.data(), half.size() * 2).ok());
  std::vector<float> wide;
  CHECK(m.decode_float32("classifier.weight", &wide).ok());
  CHECK(wide.size() == 240);
  bool exact = true;
  for (size_t k = 0; k < half.size() && k < wide.size(); ++k) exact &= float_to_half_bits(wide[k]) == half[k];
  CHECK(exact);

  // Matrices: rows = shape[0], cols = the rest; they hold exactly the decoded values.
  sparse::RowGroupMatrix cser, cer;
  CHECK(m.decode_matrix("features.0.weight", sparse::Format::kCSER, &cser).ok());
  CHECK(cser.rows() == 6 && cser.cols() == 9 && cser.format() == sparse::Format::kCSER);
  CHECK(m.decode_matrix("features.0.weight", sparse::Format::kCER, &cer, 2).ok());
  CHECK(cer.format() == sparse::Format::kCER);
  std::vector<float> d1(54), d2(54);
  cser.to_dense(d1.data());
  cer.to_dense(d2.data());
  CHECK(same_bits(d1, b));
  CHECK(same_bits(d2, b));
  CHECK(m.decode_matrix("features.0.weight", sparse::Format::kCodebook, &cser).code() == StatusCode::kInvalidArgument);

  // Non-float tensors are refused by the float paths.
  std::vector<float> junk;
  CHECK(m.decode_float32("bn.num_batches_tracked", &junk).code() == StatusCode::kInvalidArgument);
  CHECK(m.decode_matrix("bn.num_batches_tracked", sparse::Format::kCSER, &cser).code() == StatusCode::kInvalidArgument);

  // decode_all: every tensor equals its single decode, for 1, 2 and 3 threads.
  std::vector<Tensor> all1, all2, all3;
  CHECK(m.decode_all(&all1, 1).ok());
  CHECK(m.decode_all(&all2, 2).ok());
  CHECK(m.decode_all(&all3, 3).ok());
  CHECK(all1.size() == m.tensor_count());
  for (size_t i = 0; i < all1.size(); ++i) {
    std::vector<uint8_t> one(list[i].output_bytes);
    CHECK(m.decode(list[i].name, one.data(), one.size()).ok());
    CHECK(all1[i].name == list[i].name && all1[i].data == one);
    CHECK(all2[i].data == one && all3[i].data == one);
  }

  // open_memory / open_bytes give the same model.
  std::FILE* f = std::fopen(kGolden.c_str(), "rb");
  CHECK(f != nullptr);
  std::vector<uint8_t> bytes;
  if (f) {
    int c;
    while ((c = std::fgetc(f)) != EOF) bytes.push_back(uint8_t(c));
    std::fclose(f);
  }
  Model mm, mb;
  CHECK(Model::open_memory(bytes.data(), bytes.size(), &mm).ok());
  CHECK(Model::open_bytes(bytes, &mb).ok());
  std::vector<Tensor> allm, allb;
  CHECK(mm.decode_all(&allm).ok() && mb.decode_all(&allb).ok());
  CHECK(allm.size() == all1.size() && allb.size() == all1.size());
  for (size_t i = 0; i < allm.size() && i < all1.size() && i < allb.size(); ++i)
    CHECK(allm[i].data == all1[i].data && allb[i].data == all1[i].data);

  // Every truncation fails to open with a status (never a crash); a flipped data byte is caught at
  // decode time by the chunk CRC, naming the tensor.
  for (size_t n = 0; n < bytes.size(); ++n) {
    Model t;
    Status st = Model::open_memory(bytes.data(), n, &t);
    CHECK(!st.ok());
    CHECK(st.is_format_error());
  }
  std::vector<uint8_t> bad = bytes;
  const TensorInfo& info = m.reader().tensor(idx);
  CHECK(!info.chunks.empty());
  if (!info.chunks.empty()) {
    bad[size_t(info.chunks[0].offset)] ^= 0x40;
    Model t;
    CHECK(Model::open_memory(bad.data(), bad.size(), &t).ok());  // the table is intact
    Status st = t.decode_matrix("features.0.weight", sparse::Format::kCSER, &cser);
    CHECK(st.code() == StatusCode::kCorrupt);
    CHECK(st.message().find("features.0.weight") != std::string::npos);
    std::vector<Tensor> out;
    CHECK(t.decode_all(&out, 2).code() == StatusCode::kCorrupt);
    CHECK(out.empty());
  }

  // Exception mode: the same failures throw nnpress::Error carrying the status.
  Model thrower;
  RuntimeOptions opt;
  opt.errors = ErrorMode::kThrow;
  bool threw = false;
  try {
    Model::open_memory(bytes.data(), 10, &thrower, opt);
  } catch (const Error& e) {
    threw = e.status().code() == StatusCode::kTruncated || e.status().is_format_error();
  }
  CHECK(threw);
  CHECK(Model::open_memory(bytes.data(), bytes.size(), &thrower, opt).ok());
  CHECK(thrower.error_mode() == ErrorMode::kThrow);
  threw = false;
  try {
    std::vector<float> v;
    thrower.decode_float32("missing", &v);
  } catch (const Error& e) {
    threw = e.status().code() == StatusCode::kNotFound && e.status().message().find("missing") != std::string::npos;
  }
  CHECK(threw);
  thrower.set_error_mode(ErrorMode::kStatus);
  std::vector<float> v;
  CHECK(thrower.decode_float32("missing", &v).code() == StatusCode::kNotFound);
  threw = false;
  try {
    Model::load(std::string(NNPRESS_TEST_DATA_DIR) + "/golden/does_not_exist.nnp");
  } catch (const Error& e) {
    threw = e.status().code() == StatusCode::kIo;
  }
  CHECK(threw);
  Model loaded = Model::load(kGolden);
  CHECK(loaded.tensor_count() == m.tensor_count());

  // Thread caps.
  RuntimeOptions capped;
  capped.max_threads = 1;
  Model c;
  CHECK(Model::open_file(kGolden, &c, capped).ok());
  CHECK(c.effective_threads(8) == 1 && c.effective_threads(0) == 1);
  CHECK(m.effective_threads(3) == 3 && m.effective_threads(0) >= 1);
  CHECK(Model::open_file(kGolden, nullptr).code() == StatusCode::kInvalidArgument);
}

#ifdef NNPRESS_WITH_ENCODER
static std::vector<int32_t> laplacian(size_t n, double scale, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> e(1.0 / scale);
  std::bernoulli_distribution coin(0.5);
  std::vector<int32_t> v(n);
  for (auto& x : v) {
    const int32_t mag = int32_t(std::round(e(rng)));
    x = coin(rng) ? -mag : mag;
  }
  return v;
}

// Files written here: many row blocks, every float16 and bfloat16 pattern, float64, few-valued
// tensors for the codebook, an alias.
static void test_written() {
  const uint64_t rows = 257, cols = 96;
  std::vector<int32_t> big = laplacian(rows * cols, 4.0, 7);
  std::vector<int32_t> few(40 * 70);
  for (size_t i = 0; i < few.size(); ++i) few[i] = int32_t(i * 2654435761u % 13) - 6;  // 13 values
  std::vector<uint16_t> halves(65536);
  for (uint32_t k = 0; k < 65536; ++k) halves[k] = uint16_t(k);
  std::vector<double> f64 = {1.0, 1.0 / 3.0, -2.5e-40, 1e300, 0.0};

  std::vector<TensorInput> in(7);
  in[0].name = "big.weight";
  in[0].storage = Storage::kQuantized;
  in[0].shape = {rows, 4, 24};
  in[0].levels = big.data();
  in[0].step = 0.0123;
  in[0].rows_per_block = 9;  // 29 row blocks
  in[1].name = "few.weight";
  in[1].storage = Storage::kQuantized;
  in[1].method = QuantMethod::kRdoq;  // u = level: 13 values (trellis reconstruction has more)
  in[1].shape = {40, 70};
  in[1].levels = few.data();
  in[1].step = 0.25;
  in[2].name = "half";
  in[2].dtype = DType::kFloat16;
  in[2].shape = {65536};
  in[2].raw = halves.data();
  in[2].raw_size = 65536 * 2;
  in[3] = in[2];
  in[3].name = "bf";
  in[3].dtype = DType::kBFloat16;
  in[4].name = "f64";
  in[4].dtype = DType::kFloat64;
  in[4].shape = {5};
  in[4].raw = f64.data();
  in[4].raw_size = 40;
  in[5].name = "tied.weight";
  in[5].storage = Storage::kAlias;
  in[5].alias_of = 0;
  in[5].shape = in[0].shape;
  in[6].name = "empty";
  in[6].shape = {0, 5};
  in[6].raw = nullptr;
  in[6].raw_size = 0;
  WriterOptions wo;
  wo.threads = 2;
  std::vector<uint8_t> file;
  Status s = write_container(in, wo, &file);
  CHECK(s.ok());
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return;
  }
  Model m;
  CHECK(Model::open_memory(file.data(), file.size(), &m).ok());
  CHECK(m.tensor_count() == in.size());
  CHECK(m.reader().tensor(0).chunks.size() == 29);
  TensorSummary sm;
  CHECK(m.summary("tied.weight", &sm).ok() && sm.storage == Storage::kAlias && sm.stored_bytes == 0);
  CHECK(m.summary("big.weight", &sm).ok() && sm.stored_bytes > 0 && sm.stored_bytes < file.size());

  // Thread-count independence on a tensor with many entry points.
  std::vector<float> ref, other;
  CHECK(m.decode_float32("big.weight", &ref, 1).ok());
  for (unsigned th : {2u, 3u, 0u}) {
    CHECK(m.decode_float32("big.weight", &other, th).ok());
    CHECK(same_bits(ref, other));
  }
  // The values are the reader's (dequantized in double, rounded once).
  bool match = ref.size() == big.size();
  for (size_t i = 0; match && i < big.size(); ++i) match = ref[i] == float(double(big[i]) * 0.0123);
  CHECK(match);

  std::vector<Tensor> a1, a2;
  CHECK(m.decode_all(&a1, 1).ok());
  CHECK(m.decode_all(&a2, 2).ok());
  CHECK(a1.size() == in.size() && a2.size() == in.size());
  for (size_t i = 0; i < a1.size() && i < a2.size(); ++i) CHECK(a1[i].data == a2[i].data);
  if (a1.size() == in.size()) {
    CHECK(a1[5].data == a1[0].data && a1[5].name == "tied.weight");
    CHECK(a1[6].data.empty());
    CHECK(a1[0].f32() != nullptr && a1[2].f32() == nullptr);
  }

  // CSER product == dense product of the decoded weights (exact here: few terms, small ints * step).
  sparse::RowGroupMatrix w;
  CHECK(m.decode_matrix("big.weight", sparse::Format::kCSER, &w, 2).ok());
  CHECK(w.rows() == rows && w.cols() == cols);
  std::vector<float> dense(rows * cols);
  w.to_dense(dense.data());
  CHECK(same_bits(dense, ref));
  std::vector<float> x(cols), y(rows);
  for (size_t c = 0; c < cols; ++c) x[c] = float(int(c % 7) - 3);
  sparse::KernelOptions ko;
  ko.isa = Isa::kScalar;
  CHECK(sparse::matvec(w, x.data(), x.size(), y.data(), y.size(), ko).ok());
  double worst = 0;
  for (size_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (size_t c = 0; c < cols; ++c) acc += double(ref[r * cols + c]) * x[c];
    worst = std::max(worst, std::fabs(acc - y[r]));
  }
  CHECK(worst < 1e-3);

  // Codebook: <= 16 values works and matches; > 16 values is refused with a message.
  std::vector<float> fewf;
  CHECK(m.decode_float32("few.weight", &fewf).ok());
  sparse::CodebookMatrix cb;
  CHECK(m.decode_codebook("few.weight", &cb).ok());
  CHECK(cb.rows() == 40 && cb.cols() == 70 && cb.num_values() <= 16);
  std::vector<float> cbd(40 * 70);
  cb.to_dense(cbd.data());
  CHECK(same_bits(cbd, fewf));
  Status cs = m.decode_codebook("big.weight", &cb);
  CHECK(cs.code() == StatusCode::kInvalidArgument && cs.message().find("big.weight") != std::string::npos);

  // Every float16 and bfloat16 pattern widens exactly (NaN stays NaN).
  std::vector<float> hf, bf;
  CHECK(m.decode_float32("half", &hf).ok());
  CHECK(m.decode_float32("bf", &bf).ok());
  CHECK(hf.size() == 65536 && bf.size() == 65536);
  bool half_ok = true, bf_ok = true;
  for (uint32_t k = 0; k < 65536 && hf.size() == 65536 && bf.size() == 65536; ++k) {
    const bool half_nan = (k & 0x7c00) == 0x7c00 && (k & 0x3ff) != 0;
    if (half_nan) half_ok &= std::isnan(hf[k]);
    else half_ok &= float_to_half_bits(hf[k]) == k;
    uint32_t bits;
    std::memcpy(&bits, &bf[k], 4);
    bf_ok &= bits == (k << 16);
  }
  CHECK(half_ok);
  CHECK(bf_ok);
  if (hf.size() == 65536) {
    CHECK(hf[0x3c00] == 1.0f && hf[0xc000] == -2.0f && hf[0x0001] == std::ldexp(1.0f, -24));
    CHECK(hf[0x7bff] == 65504.0f && std::isinf(hf[0x7c00]) && std::signbit(hf[0x8000]));
  }
  // A half tensor holding Inf/NaN cannot become a matrix: a status, not a crash.
  CHECK(m.decode_matrix("half", sparse::Format::kCSER, &w).code() == StatusCode::kInvalidArgument);
  std::vector<float> f;
  CHECK(m.decode_float32("f64", &f).ok());
  CHECK(f.size() == 5 && f[1] == float(1.0 / 3.0) && f[2] == float(-2.5e-40) && std::isinf(f[3]));
  CHECK(m.decode_float32("empty", &f).ok() && f.empty());
}
#endif

int main() {
  test_golden();
#ifdef NNPRESS_WITH_ENCODER
  test_written();
#endif
  return TEST_MAIN_RESULT();
}
