// Tests of nnpress::Layer (layer.h): every format's forward() equals a float64 reference of the decoded
// weights (+ bias, ReLU) in its layout; the measured choice; forced formats; typed errors for bad input.
// Works on the committed golden files (quantized with nearest / rdoq / trellis, row and column scales,
// float16/bfloat16/float64 dtypes, a raw tensor), so it also runs in decoder-only builds.
#include "nnpress/layer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "nnpress/kernels/levels.h"
#include "nnpress/runtime.h"

using namespace nnpress;

static const std::string kDir = std::string(NNPRESS_TEST_DATA_DIR) + "/golden/";
static const LayerFormat kFormats[] = {LayerFormat::kLevels, LayerFormat::kLevelsCols, LayerFormat::kCSER,
                                       LayerFormat::kCER,    LayerFormat::kCodebook,   LayerFormat::kLut};

static bool is_levels(LayerFormat f) { return f == LayerFormat::kLevels || f == LayerFormat::kLevelsCols; }

static Model open(const std::string& file) {
  Model m;
  const Status s = Model::open_file(kDir + file, &m);
  CHECK(s.ok());
  if (!s.ok()) std::fprintf(stderr, "%s: %s\n", file.c_str(), s.message().c_str());
  return m;
}

// Checks layer.forward at several batches against the float64 product of the decoded weights.
static bool forward_matches(const Model& m, const Layer& layer, const std::string& weight, const std::string& bias,
                            bool relu) {
  std::vector<float> w, b;
  if (!m.decode_float32(weight, &w).ok()) return false;
  if (!bias.empty() && !m.decode_float32(bias, &b).ok()) return false;
  const size_t rows = layer.rows(), cols = layer.cols();
  if (w.size() != rows * cols) return false;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  bool ok = true;
  // Batches cover the level-columns kernel's tiles: 1..4 vectors of 16 items, masked tails, two tiles.
  for (size_t batch : {size_t(1), size_t(2), size_t(5), size_t(16), size_t(33), size_t(47), size_t(64), size_t(100)}) {
    // x[i][c]: item i, column c, stored in the layer's layout.
    std::vector<float> xi(batch * cols), X(batch * cols), Y(batch * rows, -777.0f);
    for (float& v : xi) v = u(rng);
    const bool item_rows = layer.layout() == Layout::kItemRows;
    for (size_t i = 0; i < batch; ++i)
      for (size_t c = 0; c < cols; ++c) X[item_rows ? i * cols + c : c * batch + i] = xi[i * cols + c];
    const Status s = layer.forward(X.data(), X.size(), batch, Y.data(), Y.size());
    if (!s.ok()) {
      std::fprintf(stderr, "%s: %s\n", weight.c_str(), s.message().c_str());
      return false;
    }
    for (size_t i = 0; i < batch; ++i)
      for (size_t r = 0; r < rows; ++r) {
        double acc = b.empty() ? 0.0 : double(b[r]), mag = std::fabs(acc);
        for (size_t c = 0; c < cols; ++c) {
          acc += double(w[r * cols + c]) * double(xi[i * cols + c]);
          mag += std::fabs(double(w[r * cols + c]) * double(xi[i * cols + c]));
        }
        if (relu) acc = std::max(acc, 0.0);
        const double got = Y[item_rows ? i * rows + r : r * batch + i];
        if (!(std::fabs(got - acc) <= 1e-5 * mag + 1e-30)) {
          if (ok)
            std::fprintf(stderr, "%s (%s) batch %zu item %zu row %zu: %.9g vs %.9g\n", weight.c_str(),
                         layer_format_name(layer.format()), batch, i, r, got, acc);
          ok = false;
        }
      }
  }
  return ok;
}

// The largest number of distinct levels u in one row (0 without levels).
static size_t max_row_levels(const Model& m, const std::string& weight) {
  levels::LevelMatrix lm;
  if (!m.decode_level_matrix(weight, &lm).ok()) return 0;
  std::vector<int32_t> u(size_t(lm.rows()) * lm.cols());
  lm.indices(u.data());
  size_t most = 0;
  for (uint32_t r = 0; r < lm.rows(); ++r) {
    std::set<int32_t> row(u.begin() + size_t(r) * lm.cols(), u.begin() + size_t(r + 1) * lm.cols());
    most = std::max(most, row.size());
  }
  return most;
}

static size_t distinct_values(const Model& m, const std::string& weight) {
  std::vector<float> w;
  if (!m.decode_float32(weight, &w).ok()) return 0;
  for (float& v : w) v = v == 0.0f ? 0.0f : v;  // -0 and +0 are one value
  return std::set<float>(w.begin(), w.end()).size();
}

// Every format, forced, on every quantized weight of the golden files: usable exactly where the format
// can hold the tensor, and then equal to the float64 reference (with bias and ReLU where the file has a bias).
static void test_formats_match_reference() {
  struct Case {
    std::string file, weight, bias;
  };
  const Case cases[] = {
      {"golden_v1_blocks.nnp", "big.weight", ""},
      {"golden_v1_blocks.nnp", "dq.weight", ""},
      {"golden_v1_blocks.nnp", "f64.weight", ""},
      {"golden_v1_1_scales.nnp", "rc.weight", ""},
      {"golden_v1_1_scales.nnp", "rows.dq.weight", ""},
      {"golden_v1_1_scales.nnp", "cols.conv", ""},
      {"golden_v1_1_scales.nnp", "bf.weight", ""},
      {"golden_v1_1_scales.nnp", "f64.blocks", ""},
      {"golden_v1_mixed.nnp", "features.0.weight", "features.0.bias"},
      {"golden_v1_mixed.nnp", "classifier.weight", ""},  // float16
      {"golden_v1_mixed.nnp", "bn.running_mean", ""},    // raw, 1 x 6
      {"golden_v1_mixed.nnp", "head.weight", ""},        // alias of a bfloat16 tensor
  };
  int lut_held = 0;
  for (const Case& c : cases) {
    const Model m = open(c.file);
    TensorSummary sm;
    CHECK(m.summary(c.weight, &sm).ok());
    const bool quantized = sm.storage == Storage::kQuantized;
    const size_t values = distinct_values(m, c.weight);
    for (LayerFormat f : kFormats) {
      for (bool relu : {false, true}) {
        LayerOptions o;
        o.format = f;
        o.bias = c.bias;
        o.activation = relu ? Activation::kRelu : Activation::kNone;
        Layer layer;
        const Status s = Layer::create(m, c.weight, 4, o, &layer);
        // Levels: quantized tensors whose dtype holds the step * u values (float32/float64); a float16 or
        // bfloat16 tensor's decoded values are rounded to its dtype, which the level matrix would not be.
        const bool wide_dtype = sm.dtype == DType::kFloat32 || sm.dtype == DType::kFloat64;
        const bool can = is_levels(f)                  ? quantized && wide_dtype
                         : f == LayerFormat::kCodebook ? values <= 16
                         : f == LayerFormat::kLut      ? quantized && wide_dtype && max_row_levels(m, c.weight) <= 16
                                                       : true;
        lut_held += f == LayerFormat::kLut && can && !relu;
        CHECK(s.ok() == can);
        if (!s.ok()) {
          CHECK(s.code() == StatusCode::kInvalidArgument);
          CHECK(s.message().find(c.weight) != std::string::npos);
          continue;
        }
        CHECK(layer.format() == f && layer.forced() && layer.batch() == 4);
        CHECK(layer.layout() ==
              (f == LayerFormat::kLevels || f == LayerFormat::kLut ? Layout::kItemRows : Layout::kItemCols));
        // The lookup kernels on every ISA this CPU runs.
        if (f == LayerFormat::kLut) {
          for (Isa isa : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
            if (!isa_supported(isa)) continue;
            LayerOptions io = o;
            io.isa = isa;
            Layer li;
            CHECK(Layer::create(m, c.weight, 4, io, &li).ok());
            CHECK(forward_matches(m, li, c.weight, c.bias, relu));
          }
        }
        // The level-columns kernel on every ISA this CPU runs (generic, AVX2, AVX-512 copies).
        if (f == LayerFormat::kLevelsCols) {
          for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
            if (!isa_supported(isa)) continue;
            LayerOptions io = o;
            io.isa = isa;
            Layer li;
            CHECK(Layer::create(m, c.weight, 4, io, &li).ok());
            CHECK(forward_matches(m, li, c.weight, c.bias, relu));
          }
        }
        CHECK(layer.timings().size() == 1 && layer.timings()[0].format == f && layer.timings()[0].bytes > 0);
        CHECK(layer.weight_bytes() > 0);
        CHECK(forward_matches(m, layer, c.weight, c.bias, relu));
      }
    }
  }
  CHECK(lut_held >= 1);  // the lookup format was exercised on a golden tensor
}

// Automatic choice: every candidate that can hold the tensor is timed, the fastest is kept, the others
// carry the reason they were skipped; a restricted candidate set is honoured; the choice string names it.
static void test_measured_choice() {
  const Model m = open("golden_v1_blocks.nnp");
  LayerOptions o;
  o.repetitions = 3;
  Layer layer;
  Status s = Layer::create(m, "big.weight", 7, o, &layer);
  CHECK(s.ok());
  CHECK(!layer.forced() && layer.batch() == 7 && layer.rows() == 40 && layer.cols() == 33);
  CHECK(layer.timings().size() == 5);  // levels, levels_cols, CSER, codebook, lut (CER only when named)
  const bool cb_ok = distinct_values(m, "big.weight") <= 16;
  const bool lut_ok = max_row_levels(m, "big.weight") <= 16;
  double best = 1e9;
  for (const FormatTiming& t : layer.timings()) {
    const bool expect_ok = t.format == LayerFormat::kCodebook ? cb_ok : t.format == LayerFormat::kLut ? lut_ok : true;
    CHECK(t.format != LayerFormat::kCER);
    CHECK(t.status.ok() == expect_ok);
    if (t.status.ok()) {
      CHECK(t.seconds > 0 && t.seconds < 1.0 && t.bytes > 0);
      best = std::min(best, t.seconds);
    } else {
      CHECK(t.seconds == 0);
    }
  }
  for (const FormatTiming& t : layer.timings())
    if (t.format == layer.format()) CHECK(t.seconds == best);
  CHECK(forward_matches(m, layer, "big.weight", "", false));
  LayerFormat parsed = LayerFormat::kAuto;
  const std::string cs = layer.choice_string();
  CHECK(cs.rfind("big.weight=", 0) == 0);
  CHECK(parse_layer_format(cs.substr(cs.find('=') + 1), &parsed) && parsed == layer.format());

  // Restricted candidates: only those are timed.
  o.candidates = {LayerFormat::kCSER, LayerFormat::kCER, LayerFormat::kCSER};
  CHECK(Layer::create(m, "big.weight", 1, o, &layer).ok());
  CHECK(layer.timings().size() == 2 && layer.timings()[1].format == LayerFormat::kCER);
  CHECK(layer.format() == LayerFormat::kCSER || layer.format() == LayerFormat::kCER);
  o.candidates = {LayerFormat::kAuto};
  CHECK(Layer::create(m, "big.weight", 1, o, &layer).code() == StatusCode::kInvalidArgument);

  // A raw tensor: levels is skipped with its reason, another format is chosen.
  const Model mixed = open("golden_v1_mixed.nnp");
  LayerOptions r;
  r.repetitions = 1;
  r.activation = Activation::kRelu;
  CHECK(Layer::create(mixed, "bn.running_mean", 64, r, &layer).ok());
  CHECK(!is_levels(layer.format()));
  CHECK(layer.timings()[0].format == LayerFormat::kLevels && !layer.timings()[0].status.ok());
  CHECK(layer.timings()[1].format == LayerFormat::kLevelsCols && !layer.timings()[1].status.ok());
  CHECK(forward_matches(mixed, layer, "bn.running_mean", "", true));
  // Only levels allowed on a raw tensor: nothing can hold it; the message names every reason.
  r.candidates = {LayerFormat::kLevels};
  s = Layer::create(mixed, "bn.running_mean", 1, r, &layer);
  CHECK(s.code() == StatusCode::kInvalidArgument && s.message().find("levels") != std::string::npos);
  // The failed create left the previous layer untouched.
  CHECK(layer.name() == "bn.running_mean" && !is_levels(layer.format()) && layer.batch() == 64);
}

// Typed errors: missing tensors, bad bias, scalars, empty tensors, non-float dtypes, bad forward buffers.
static void test_errors() {
  const Model m = open("golden_v1_mixed.nnp");
  const Model blocks = open("golden_v1_blocks.nnp");
  LayerOptions o;
  o.format = LayerFormat::kCSER;
  Layer layer;
  CHECK(Layer::create(m, "nope.weight", 1, o, &layer).code() == StatusCode::kNotFound);
  CHECK(Layer::create(m, "features.0.weight", 0, o, &layer).code() == StatusCode::kInvalidArgument);
  CHECK(Layer::create(m, "features.0.weight", 1, o, nullptr).code() == StatusCode::kInvalidArgument);
  CHECK(Layer::create(m, "scale", 1, o, &layer).code() == StatusCode::kInvalidArgument);  // rank 0
  CHECK(Layer::create(m, "empty", 1, o, &layer).code() == StatusCode::kInvalidArgument);  // 0 x 4
  CHECK(Layer::create(m, "ids", 1, o, &layer).code() == StatusCode::kInvalidArgument);    // int32
  LayerOptions lv;
  lv.format = LayerFormat::kLevels;
  Status s = Layer::create(m, "bn.running_mean", 1, lv, &layer);  // raw tensor
  CHECK(s.code() == StatusCode::kInvalidArgument && s.message().find("bn.running_mean") != std::string::npos);
  s = Layer::create(m, "classifier.weight", 1, lv, &layer);  // float16
  CHECK(s.code() == StatusCode::kInvalidArgument && s.message().find("float16") != std::string::npos);
  LayerOptions cb;
  cb.format = LayerFormat::kCodebook;
  if (distinct_values(blocks, "big.weight") > 16)
    CHECK(Layer::create(blocks, "big.weight", 1, cb, &layer).code() == StatusCode::kInvalidArgument);
  o.bias = "nope.bias";
  CHECK(Layer::create(m, "features.0.weight", 1, o, &layer).code() == StatusCode::kNotFound);
  o.bias = "bn.running_mean";  // 6 values: fits
  CHECK(Layer::create(m, "features.0.weight", 1, o, &layer).ok());
  o.bias = "classifier.weight";  // 240 values for 6 rows
  s = Layer::create(m, "features.0.weight", 1, o, &layer);
  CHECK(s.code() == StatusCode::kInvalidArgument && s.message().find("classifier.weight") != std::string::npos);
  LayerOptions bad;
  bad.format = LayerFormat(42);
  CHECK(Layer::create(m, "features.0.weight", 1, bad, &layer).code() == StatusCode::kInvalidArgument);
  for (Isa isa : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    LayerOptions io;
    io.isa = isa;
    io.repetitions = 1;
    s = Layer::create(blocks, "big.weight", 3, io, &layer);
    CHECK(s.ok() == isa_supported(isa));
    if (s.ok()) CHECK(forward_matches(blocks, layer, "big.weight", "", false));
    else CHECK(s.code() == StatusCode::kInvalidArgument);
  }

  // forward: the buffers must hold batch x cols inputs and batch x rows outputs.
  Layer fresh;
  std::vector<float> x(9 * 3), y(6 * 3);
  CHECK(fresh.forward(x.data(), 9, 1, y.data(), 6).code() == StatusCode::kInvalidArgument);  // not created
  for (LayerFormat f : {LayerFormat::kLevels, LayerFormat::kLevelsCols, LayerFormat::kCSER}) {
    LayerOptions fo;
    fo.format = f;
    const Model& src = is_levels(f) ? blocks : m;
    const std::string name = is_levels(f) ? "dq.weight" : "features.0.weight";
    CHECK(Layer::create(src, name, 3, fo, &layer).ok());
    const size_t R = layer.rows(), C = layer.cols();
    std::vector<float> X(C * 3 + 1, 0.5f), Y(R * 3 + 1);
    CHECK(layer.forward(X.data(), C * 3 + 1, 3, Y.data(), R * 3).code() == StatusCode::kInvalidArgument);
    CHECK(layer.forward(X.data(), C * 3, 3, Y.data(), R * 3 + 1).code() == StatusCode::kInvalidArgument);
    X.pop_back();
    Y.pop_back();
    CHECK(layer.forward(X.data(), X.size(), 3, Y.data(), Y.size()).ok());
    CHECK(layer.forward(X.data(), X.size(), 2, Y.data(), R * 2).code() == StatusCode::kInvalidArgument);
    CHECK(layer.forward(X.data(), C * 2, 2, Y.data(), Y.size()).code() == StatusCode::kInvalidArgument);
    CHECK(layer.forward(X.data(), X.size() - 1, 3, Y.data(), Y.size()).code() == StatusCode::kInvalidArgument);
    CHECK(layer.forward(X.data(), 0, 0, Y.data(), 0).code() == StatusCode::kInvalidArgument);
    CHECK(layer.forward(nullptr, X.size(), 3, Y.data(), Y.size()).code() == StatusCode::kInvalidArgument);
    CHECK(layer.forward(X.data(), X.size(), 3, nullptr, Y.size()).code() == StatusCode::kInvalidArgument);
    // A batch other than the one the layer was created for runs too.
    CHECK(layer.forward(X.data(), C, 1, Y.data(), R).ok());
  }
}

#ifdef NNPRESS_WITH_ENCODER
// Written here: level matrices with list entries beyond int8 (a few: int8 part + list), many (int16 part),
// beyond int16 (int16 part + list), with and without channel scales, trellis and nearest; every format and
// ISA against the float64 reference, through both level kernels.
static void test_written_levels() {
  const uint32_t rows = 37, cols = 70;
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> small(-60, 60), pick(0, 999);
  std::vector<int32_t> few(rows * cols), many(rows * cols), huge(rows * cols);
  for (size_t i = 0; i < few.size(); ++i) {
    few[i] = small(rng) + (pick(rng) < 20 ? 500 : 0);         // ~2 %: beyond int8
    many[i] = small(rng) * (pick(rng) < 300 ? 9 : 1);        // ~30 % beyond int8: int16 part
    huge[i] = many[i] + (pick(rng) < 10 ? 40000 : 0);         // ~1 % beyond int16
  }
  std::vector<int8_t> rexp(rows), cexp(cols);
  for (auto& e : rexp) e = int8_t(small(rng) / 10);
  for (auto& e : cexp) e = int8_t(small(rng) / 10);
  std::vector<float> bias(rows);
  for (auto& b : bias) b = float(small(rng)) / 64.0f;
  std::vector<TensorInput> in(5);
  const std::vector<int32_t>* src[] = {&few, &many, &huge, &few, &many};
  const char* names[] = {"few.weight", "many.weight", "huge.weight", "scaled.weight", "trellis.weight"};
  for (size_t t = 0; t < 5; ++t) {
    in[t].name = names[t];
    in[t].storage = Storage::kQuantized;
    in[t].shape = {rows, 2, cols / 2};
    in[t].levels = src[t]->data();
    in[t].step = 0.0037;
  }
  in[3].row_scale_exp = rexp.data();
  in[3].col_scale_exp = cexp.data();
  in[4].method = QuantMethod::kTrellis;
  TensorInput b;
  b.name = "bias";
  b.shape = {rows};
  b.raw = bias.data();
  b.raw_size = rows * sizeof(float);
  in.push_back(b);
  std::vector<uint8_t> file;
  Status s = write_container(in, WriterOptions(), &file);
  CHECK(s.ok());
  Model m;
  CHECK(Model::open_memory(file.data(), file.size(), &m).ok());
  for (const char* name : names) {
    levels::LevelMatrix lm;
    CHECK(m.decode_level_matrix(name, &lm).ok());
    if (std::string(name) == "few.weight") CHECK(lm.index_bits() == 8 && lm.outliers() > 0);
    if (std::string(name) == "many.weight") CHECK(lm.index_bits() == 16 && lm.outliers() == 0);
    if (std::string(name) == "huge.weight") CHECK(lm.index_bits() == 16 && lm.outliers() > 0);
    if (std::string(name) == "scaled.weight") CHECK(lm.has_col_scale());
    for (LayerFormat f : {LayerFormat::kLevels, LayerFormat::kLevelsCols, LayerFormat::kCSER}) {
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
        if (!isa_supported(isa)) continue;
        LayerOptions o;
        o.format = f;
        o.isa = isa;
        o.bias = "bias";
        o.activation = Activation::kRelu;
        Layer layer;
        CHECK(Layer::create(m, name, 64, o, &layer).ok());
        CHECK(forward_matches(m, layer, name, "bias", true));
      }
    }
  }
}

// Written here: <= 16 levels per row (a different set in every row, some beyond int8), trellis with row and
// column scales; the automatic choice times the lookup format, forced it matches the reference on every
// ISA; a row of 17 levels makes it skip with its reason.
static void test_written_lut() {
  const uint32_t rows = 45, cols = 77;
  std::mt19937 rng(9);
  std::vector<int32_t> lv(rows * cols);
  for (uint32_t r = 0; r < rows; ++r) {
    int32_t vals[8];  // trellis levels k: u = 2k or 2k -+ 1, so 8 levels give at most 16 u
    for (int32_t& v : vals) v = int32_t(rng() % 401) - 200;
    for (uint32_t j = 0; j < cols; ++j) lv[r * cols + j] = vals[rng() % 8];
  }
  std::vector<int32_t> wide = lv;
  for (uint32_t j = 0; j < 17; ++j) wide[5 * cols + j] = int32_t(j) * 3 - 20;
  std::vector<int8_t> rexp(rows), cexp(cols);
  for (auto& e : rexp) e = int8_t(int(rng() % 40) - 20);
  for (auto& e : cexp) e = int8_t(int(rng() % 40) - 20);
  std::vector<TensorInput> in(2);
  const char* names[] = {"lut.weight", "wide.weight"};
  for (size_t t = 0; t < 2; ++t) {
    in[t].name = names[t];
    in[t].storage = Storage::kQuantized;
    in[t].shape = {rows, cols};
    in[t].levels = t ? wide.data() : lv.data();
    in[t].method = t ? QuantMethod::kNearest : QuantMethod::kTrellis;
    in[t].step = 0.0021;
    in[t].row_scale_exp = rexp.data();
    in[t].col_scale_exp = cexp.data();
  }
  std::vector<uint8_t> file;
  CHECK(write_container(in, WriterOptions(), &file).ok());
  Model m;
  CHECK(Model::open_memory(file.data(), file.size(), &m).ok());
  CHECK(max_row_levels(m, "lut.weight") <= 16 && max_row_levels(m, "lut.weight") > 8);
  LayerOptions o;
  o.repetitions = 2;
  Layer layer;
  CHECK(Layer::create(m, "lut.weight", 16, o, &layer).ok());
  bool timed = false;
  for (const FormatTiming& t : layer.timings())
    timed |= t.format == LayerFormat::kLut && t.status.ok() && t.seconds > 0;
  CHECK(timed);
  CHECK(forward_matches(m, layer, "lut.weight", "", false));
  for (Isa isa : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    if (!isa_supported(isa)) continue;
    LayerOptions f;
    f.format = LayerFormat::kLut;
    f.isa = isa;
    CHECK(Layer::create(m, "lut.weight", 3, f, &layer).ok());
    // 16 bytes per 32 columns + a 64-byte table per row (+ alignment), and the scales
    CHECK(layer.weight_bytes() <= size_t(rows) * (3 * 16 + 64) + 64 + (rows + cols) * 4);
    CHECK(forward_matches(m, layer, "lut.weight", "", false));
  }
  CHECK(Layer::create(m, "wide.weight", 4, o, &layer).ok());
  CHECK(layer.format() != LayerFormat::kLut);
  bool skipped = false;
  for (const FormatTiming& t : layer.timings())
    skipped |= t.format == LayerFormat::kLut && t.status.message().find("row 5") != std::string::npos;
  CHECK(skipped);
}
#endif

static void test_names() {
  for (LayerFormat f :
       {LayerFormat::kAuto, LayerFormat::kLevels, LayerFormat::kCSER, LayerFormat::kCER, LayerFormat::kCodebook}) {
    LayerFormat back = LayerFormat(99);
    CHECK(parse_layer_format(layer_format_name(f), &back) && back == f);
  }
  LayerFormat f = LayerFormat::kCSER;
  CHECK(!parse_layer_format("CSER", &f) && !parse_layer_format("", &f) && !parse_layer_format("dense", &f));
  CHECK(f == LayerFormat::kCSER);
}

int main() {
  test_formats_match_reference();
  test_measured_choice();
  test_errors();
#ifdef NNPRESS_WITH_ENCODER
  test_written_levels();
  test_written_lut();
#endif
  test_names();
  return TEST_MAIN_RESULT();
}
