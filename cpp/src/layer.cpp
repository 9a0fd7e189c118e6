// One linear layer in the weight format measured fastest at its shape and batch (see nnpress/layer.h).
// Kept small: it is part of the edge library, so error paths are out-of-line helpers and the candidates
// share one code path.
#include "nnpress/layer.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "nnpress/kernels/levels.h"
#include "nnpress/sparse/kernels.h"

#if defined(__GNUC__)
#define NNPRESS_NOINLINE __attribute__((noinline))
#else
#define NNPRESS_NOINLINE
#endif

namespace nnpress {

// One format's matrix (one of lm / rg / cb, as `format` says), the bias and the kernel options.
// During create() every candidate format is an Impl of its own.
struct Layer::Impl {
  LayerFormat format = LayerFormat::kAuto;
  levels::LevelMatrix lm;
  sparse::RowGroupMatrix rg;  // CER or CSER
  sparse::CodebookMatrix cb;
  std::vector<float> bias;  // empty: none
  Activation act = Activation::kNone;
  std::optional<Isa> isa;
};

namespace {

// The default candidates (layer.h: CER is timed only when named).
const LayerFormat kDefaultFormats[] = {LayerFormat::kLevels, LayerFormat::kCSER, LayerFormat::kCodebook};

// "layer 'name': msg" with the given code.
NNPRESS_NOINLINE Status fail(StatusCode code, const std::string& weight, const std::string& msg) {
  return Status(code, "layer '" + weight + "': " + msg);
}
NNPRESS_NOINLINE Status context(const Status& s, const std::string& weight, const char* what) {
  return fail(s.code(), weight, std::string(what) + s.message());
}

// Y = W X in impl.format, no bias.
NNPRESS_NOINLINE Status product(const Layer::Impl& impl, const float* X, size_t x_len, size_t batch, float* Y,
                                size_t y_len) {
  if (impl.format == LayerFormat::kLevels) {
    levels::LevelKernelOptions o;
    o.isa = impl.isa;
    return levels::matmul(impl.lm, X, x_len, batch, Y, y_len, o);
  }
  sparse::KernelOptions o;
  o.isa = impl.isa;
  if (impl.format == LayerFormat::kCodebook) return sparse::matmat(impl.cb, X, x_len, batch, Y, y_len, o);
  return sparse::matmat(impl.rg, X, x_len, batch, Y, y_len, o);
}

Layout layout_of(LayerFormat f) { return f == LayerFormat::kLevels ? Layout::kItemRows : Layout::kItemCols; }

// Bias and activation in one pass over Y (batch x rows for kItemRows, rows x batch for kItemCols). ReLU
// is written `v > 0 ? v : 0`, which compilers turn into a branch-free max (the sign of v is unpredictable).
NNPRESS_NOINLINE void epilogue(const Layer::Impl& impl, uint32_t rows, size_t batch, float* Y) {
  const bool has_bias = !impl.bias.empty(), relu = impl.act == Activation::kRelu;
  if (!has_bias && !relu) return;
  const float* b = impl.bias.data();
  const bool item_rows = layout_of(impl.format) == Layout::kItemRows;
  const size_t outer = item_rows ? batch : rows, inner = item_rows ? rows : batch;
  for (size_t o = 0; o < outer; ++o) {
    float* y = Y + o * inner;
    if (item_rows) {
      if (!has_bias) {
        for (size_t i = 0; i < inner; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
      } else if (relu) {
        for (size_t i = 0; i < inner; ++i) {
          const float v = y[i] + b[i];
          y[i] = v > 0.0f ? v : 0.0f;
        }
      } else {
        for (size_t i = 0; i < inner; ++i) y[i] += b[i];
      }
    } else {
      const float br = has_bias ? b[o] : 0.0f;
      if (relu) {
        for (size_t i = 0; i < inner; ++i) {
          const float v = y[i] + br;
          y[i] = v > 0.0f ? v : 0.0f;
        }
      } else {
        for (size_t i = 0; i < inner; ++i) y[i] += br;
      }
    }
  }
}

// Builds impl->format's matrix from the decoded float32 values (CER/CSER/codebook) or the levels.
NNPRESS_NOINLINE Status build(const Model& model, const std::string& name, DType dtype, const std::vector<float>& dense,
                              uint32_t rows, uint32_t cols, unsigned threads, Layer::Impl* impl) {
  switch (impl->format) {
    case LayerFormat::kLevels:
      // The level matrix multiplies step * u in float32; a float16/bfloat16 tensor's decoded weights are
      // those values rounded to its dtype, so its products would not be the decoded model's.
      if (dtype != DType::kFloat32 && dtype != DType::kFloat64)
        return invalid_argument(std::string("dtype ") + dtype_name(dtype) +
                                ": its decoded weights are rounded to it, the level matrix's would not be");
      return model.decode_level_matrix(name, &impl->lm, threads);
    case LayerFormat::kCSER:
    case LayerFormat::kCER:
      return sparse::RowGroupMatrix::from_dense(
          impl->format == LayerFormat::kCSER ? sparse::Format::kCSER : sparse::Format::kCER, dense.data(), rows, cols,
          &impl->rg);
    case LayerFormat::kCodebook: return sparse::CodebookMatrix::from_dense(dense.data(), rows, cols, &impl->cb);
    default: return invalid_argument("format 'auto' cannot be built");
  }
}

size_t format_bytes(const Layer::Impl& impl) {
  switch (impl.format) {
    case LayerFormat::kLevels: return impl.lm.nbytes();
    case LayerFormat::kCSER:
    case LayerFormat::kCER: return impl.rg.nbytes() + impl.rg.plan_bytes();
    case LayerFormat::kCodebook: return impl.cb.nbytes();
    default: return 0;
  }
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool known(LayerFormat f) { return int(f) >= int(LayerFormat::kAuto) && int(f) <= int(LayerFormat::kCodebook); }

}  // namespace

const char* layer_format_name(LayerFormat f) {
  static const char* const names[] = {"auto", "levels", "cser", "cer", "codebook"};
  return known(f) ? names[int(f)] : "?";
}

bool parse_layer_format(const std::string& name, LayerFormat* out) {
  for (int i = int(LayerFormat::kAuto); i <= int(LayerFormat::kCodebook); ++i) {
    if (name == layer_format_name(LayerFormat(i))) {
      if (out) *out = LayerFormat(i);
      return true;
    }
  }
  return false;
}

Layer::Layer() = default;
Layer::~Layer() = default;
Layer::Layer(Layer&&) noexcept = default;
Layer& Layer::operator=(Layer&&) noexcept = default;

size_t Layer::weight_bytes() const { return impl_ ? format_bytes(*impl_) + impl_->bias.size() * sizeof(float) : 0; }

Status Layer::create(const Model& model, const std::string& weight, size_t batch, const LayerOptions& options,
                     Layer* out) {
  const StatusCode kBad = StatusCode::kInvalidArgument;
  if (out == nullptr) return fail(kBad, weight, "null output");
  if (batch == 0) return fail(kBad, weight, "batch must be >= 1");
  if (!known(options.format)) return fail(kBad, weight, "unknown format");
  TensorSummary s;
  Status st = model.summary(weight, &s);
  if (!st.ok()) return context(st, weight, "");
  if (s.shape.empty()) return fail(kBad, weight, "a scalar is not a weight matrix");
  const uint64_t r = s.shape.size() >= 2 ? s.shape[0] : 1, c = r ? s.count / r : 0;
  if (r == 0 || c == 0) return fail(kBad, weight, "empty weight matrix");
  if (r > std::numeric_limits<uint32_t>::max() || c > std::numeric_limits<uint32_t>::max())
    return fail(StatusCode::kLimit, weight, "dimensions above 2^32 - 1");
  const uint32_t rows = uint32_t(r), cols = uint32_t(c);
  if (batch > (size_t(1) << 40) / std::max(rows, cols)) return fail(kBad, weight, "batch too large");
  if (options.isa && !isa_supported(*options.isa))
    return fail(kBad, weight, std::string("ISA '") + isa_name(*options.isa) + "' is not available on this CPU/build");

  std::vector<float> bias;
  if (!options.bias.empty()) {
    st = model.decode_float32(options.bias, &bias, options.decode_threads);
    if (!st.ok()) return context(st, weight, "bias: ");
    if (bias.size() != rows) return fail(kBad, weight, "bias '" + options.bias + "' does not hold one value per row");
  }

  const bool forced = options.format != LayerFormat::kAuto;
  std::vector<LayerFormat> cand;
  if (forced) {
    cand.push_back(options.format);
  } else if (options.candidates.empty()) {
    cand.assign(std::begin(kDefaultFormats), std::end(kDefaultFormats));
  } else {
    for (LayerFormat f : options.candidates) {
      if (!known(f) || f == LayerFormat::kAuto) return fail(kBad, weight, "candidates must name formats, not 'auto'");
      if (std::find(cand.begin(), cand.end(), f) == cand.end()) cand.push_back(f);
    }
  }

  // The float32 values, shared by the CER/CSER/codebook builders (the levels decode their own).
  std::vector<float> dense;
  if (cand.size() > 1 || cand[0] != LayerFormat::kLevels) {
    st = model.decode_float32(weight, &dense, options.decode_threads);
    if (!st.ok()) return context(st, weight, "");
  }

  std::vector<FormatTiming> timings(cand.size());
  std::vector<Impl> impls(cand.size());
  std::vector<size_t> live;
  for (size_t i = 0; i < cand.size(); ++i) {
    Impl& im = impls[i];
    im.format = timings[i].format = cand[i];
    im.act = options.activation;
    im.isa = options.isa;
    im.bias = bias;
    timings[i].status = build(model, weight, s.dtype, dense, rows, cols, options.decode_threads, &im);
    if (timings[i].status.ok()) {
      timings[i].bytes = format_bytes(im);
      live.push_back(i);
    }
  }
  dense = std::vector<float>();
  if (forced && live.empty()) return context(timings[0].status, weight, "forced format: ");
  if (live.empty()) {
    std::string why = "no format can hold this tensor:";
    for (const FormatTiming& t : timings)
      why += std::string(" ") + layer_format_name(t.format) + ": " + t.status.message() + ";";
    return fail(kBad, weight, why);
  }

  size_t chosen = live[0];
  if (!forced) {
    // Inputs of the real shape: fixed pseudo-random values in [-1, 1).
    std::vector<float> X(batch * cols), Y(batch * rows);
    uint32_t state = 0x9e3779b9u;
    for (float& v : X) {
      state = state * 1664525u + 1013904223u;
      v = float(int32_t(state >> 8) - (1 << 23)) / float(1 << 23);
    }
    // calls[i] forward() calls make one round of candidate i; 0: it failed to run (e.g. its ISA).
    std::vector<unsigned> calls(cand.size(), 0);
    const unsigned reps = std::max(1u, options.repetitions);
    for (unsigned rep = 0; rep <= reps; ++rep) {  // round 0: untimed warm-up, sets calls
      for (size_t i : live) {
        if (rep > 0 && calls[i] == 0) continue;
        const unsigned n = rep == 0 ? 1 : calls[i];
        const double t0 = now_seconds();
        for (unsigned k = 0; k < n; ++k) {
          Status p = product(impls[i], X.data(), X.size(), batch, Y.data(), Y.size());
          if (!p.ok()) {
            timings[i].status = p;
            break;
          }
          epilogue(impls[i], rows, batch, Y.data());
        }
        const double dt = (now_seconds() - t0) / n;
        if (!timings[i].status.ok()) continue;
        if (rep == 0) {
          calls[i] = unsigned(std::min(100000.0, std::max(1.0, options.min_round_seconds / std::max(dt, 1e-9))));
          for (unsigned k = 1; k < calls[i]; ++k)
            (void)product(impls[i], X.data(), X.size(), batch, Y.data(), Y.size());
          timings[i].seconds = std::numeric_limits<double>::infinity();
        } else {
          timings[i].seconds = std::min(timings[i].seconds, dt);
        }
      }
    }
    chosen = cand.size();
    for (size_t i : live)
      if (calls[i] > 0 && (chosen == cand.size() || timings[i].seconds < timings[chosen].seconds)) chosen = i;
    if (chosen == cand.size()) return context(timings[live[0]].status, weight, "");
  }

  Layer l;
  l.name_ = weight;
  l.rows_ = rows;
  l.cols_ = cols;
  l.batch_ = batch;
  l.format_ = cand[chosen];
  l.forced_ = forced;
  l.timings_ = std::move(timings);
  l.impl_ = std::make_unique<Impl>(std::move(impls[chosen]));
  *out = std::move(l);
  return Status::Ok();
}

Status Layer::forward(const float* X, size_t x_len, size_t batch, float* Y, size_t y_len) const {
  if (!impl_) return invalid_argument("layer: not created");
  if (X == nullptr || Y == nullptr) return fail(StatusCode::kInvalidArgument, name_, "null buffer");
  if (batch == 0 || x_len / batch != cols_ || x_len % batch != 0 || y_len / batch != rows_ || y_len % batch != 0)
    return fail(StatusCode::kInvalidArgument, name_,
                "buffers must hold batch (>= 1) x cols inputs and batch x rows outputs");
  Status s = product(*impl_, X, x_len, batch, Y, y_len);
  if (s.ok()) epilogue(*impl_, rows_, batch, Y);
  return s;
}

}  // namespace nnpress
