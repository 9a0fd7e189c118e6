// One linear layer in the weight format measured fastest at its shape and batch (see nnpress/layer.h).
#include "nnpress/layer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <utility>

#include "nnpress/kernels/levels.h"
#include "nnpress/sparse/kernels.h"

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

std::string quoted(const std::string& s) { return "'" + s + "'"; }

Status with_context(const Status& s, const std::string& what) {
  return s.ok() ? s : Status(s.code(), what + ": " + s.message());
}

// Y = W X in `format` (the matrix held by impl), no bias.
Status product(const Layer::Impl& impl, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len) {
  switch (impl.format) {
    case LayerFormat::kLevels: {
      levels::LevelKernelOptions o;
      o.isa = impl.isa;
      o.threads = 1;
      return levels::matmul(impl.lm, X, x_len, batch, Y, y_len, o);
    }
    case LayerFormat::kCSER:
    case LayerFormat::kCER: {
      sparse::KernelOptions o;
      o.isa = impl.isa;
      return sparse::matmat(impl.rg, X, x_len, batch, Y, y_len, o);
    }
    case LayerFormat::kCodebook: {
      sparse::KernelOptions o;
      o.isa = impl.isa;
      return sparse::matmat(impl.cb, X, x_len, batch, Y, y_len, o);
    }
    default: return invalid_argument("layer: no format chosen");
  }
}

// Bias and activation in one pass over Y (rows x batch or batch x rows). ReLU is written as
// `v > 0 ? v : 0`, which compilers turn into a branch-free max (the sign of v is unpredictable).
void epilogue(const Layer::Impl& impl, Layout layout, uint32_t rows, size_t batch, float* Y) {
  const float* b = impl.bias.empty() ? nullptr : impl.bias.data();
  const bool relu = impl.act == Activation::kRelu;
  if (b == nullptr && !relu) return;
  if (layout == Layout::kItemRows) {
    for (size_t i = 0; i < batch; ++i) {
      float* y = Y + i * rows;
      if (b && relu) {
        for (uint32_t r = 0; r < rows; ++r) {
          const float v = y[r] + b[r];
          y[r] = v > 0.0f ? v : 0.0f;
        }
      } else if (b) {
        for (uint32_t r = 0; r < rows; ++r) y[r] += b[r];
      } else {
        for (uint32_t r = 0; r < rows; ++r) y[r] = y[r] > 0.0f ? y[r] : 0.0f;
      }
    }
  } else {
    for (uint32_t r = 0; r < rows; ++r) {
      float* y = Y + size_t(r) * batch;
      const float br = b ? b[r] : 0.0f;
      if (relu) {
        for (size_t i = 0; i < batch; ++i) {
          const float v = y[i] + br;
          y[i] = v > 0.0f ? v : 0.0f;
        }
      } else {
        for (size_t i = 0; i < batch; ++i) y[i] += br;
      }
    }
  }
}

Layout layout_of(LayerFormat f) { return f == LayerFormat::kLevels ? Layout::kItemRows : Layout::kItemCols; }

// Builds impl->format's matrix from the decoded float32 values (CER/CSER/codebook) or the levels.
Status build(const Model& model, const std::string& name, const std::vector<float>& dense, uint32_t rows,
             uint32_t cols, unsigned threads, Layer::Impl* impl) {
  const LayerFormat format = impl->format;
  switch (format) {
    case LayerFormat::kLevels: {
      // The level matrix multiplies step * u as float32; a float16/bfloat16 tensor's decoded weights are
      // those values rounded to its dtype, so its products would not be the decoded model's.
      TensorSummary s;
      Status st = model.summary(name, &s);
      if (!st.ok()) return st;
      if (s.dtype != DType::kFloat32 && s.dtype != DType::kFloat64)
        return invalid_argument(std::string("dtype ") + dtype_name(s.dtype) +
                                ": its decoded weights are rounded to it, the level matrix's would not be");
      return model.decode_level_matrix(name, &impl->lm, threads);
    }
    case LayerFormat::kCSER:
    case LayerFormat::kCER:
      return sparse::RowGroupMatrix::from_dense(
          format == LayerFormat::kCSER ? sparse::Format::kCSER : sparse::Format::kCER, dense.data(), rows, cols,
          &impl->rg);
    case LayerFormat::kCodebook: return sparse::CodebookMatrix::from_dense(dense.data(), rows, cols, &impl->cb);
    default: return invalid_argument("layer: format 'auto' cannot be built");
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

}  // namespace

const char* layer_format_name(LayerFormat f) {
  switch (f) {
    case LayerFormat::kAuto: return "auto";
    case LayerFormat::kLevels: return "levels";
    case LayerFormat::kCSER: return "cser";
    case LayerFormat::kCER: return "cer";
    case LayerFormat::kCodebook: return "codebook";
  }
  return "?";
}

bool parse_layer_format(const std::string& name, LayerFormat* out) {
  for (LayerFormat f : {LayerFormat::kAuto, LayerFormat::kLevels, LayerFormat::kCSER, LayerFormat::kCER,
                        LayerFormat::kCodebook}) {
    if (name == layer_format_name(f)) {
      if (out) *out = f;
      return true;
    }
  }
  return false;
}

Layer::Layer() = default;
Layer::~Layer() = default;
Layer::Layer(Layer&&) noexcept = default;
Layer& Layer::operator=(Layer&&) noexcept = default;

size_t Layer::weight_bytes() const {
  return impl_ ? format_bytes(*impl_) + impl_->bias.size() * sizeof(float) : 0;
}

Status Layer::create(const Model& model, const std::string& weight, size_t batch, const LayerOptions& options,
                     Layer* out) {
  const std::string what = "layer " + quoted(weight);
  if (out == nullptr) return invalid_argument(what + ": null output");
  if (batch == 0) return invalid_argument(what + ": batch must be >= 1");
  if (!parse_layer_format(layer_format_name(options.format), nullptr))
    return invalid_argument(what + ": unknown format");
  TensorSummary s;
  Status st = model.summary(weight, &s);
  if (!st.ok()) return with_context(st, what);
  if (s.shape.empty()) return invalid_argument(what + ": a scalar is not a weight matrix");
  const uint64_t r = s.shape.size() >= 2 ? s.shape[0] : 1;
  const uint64_t c = r ? s.count / r : 0;
  if (r == 0 || c == 0) return invalid_argument(what + ": empty weight matrix");
  if (r > std::numeric_limits<uint32_t>::max() || c > std::numeric_limits<uint32_t>::max())
    return limit_exceeded(what + ": dimensions above 2^32 - 1");
  const uint32_t rows = uint32_t(r), cols = uint32_t(c);
  if (batch > (size_t(1) << 40) / std::max(rows, cols)) return invalid_argument(what + ": batch too large");
  if (options.isa && !isa_supported(*options.isa))
    return invalid_argument(what + ": ISA '" + isa_name(*options.isa) + "' is not available on this CPU/build");

  std::vector<float> bias;
  if (!options.bias.empty()) {
    st = model.decode_float32(options.bias, &bias, options.decode_threads);
    if (!st.ok()) return with_context(st, what + ": bias " + quoted(options.bias));
    if (bias.size() != rows)
      return invalid_argument(what + ": bias " + quoted(options.bias) + " has " + std::to_string(bias.size()) +
                              " values, the layer " + std::to_string(rows) + " rows");
  }

  const bool forced = options.format != LayerFormat::kAuto;
  std::vector<LayerFormat> cand;
  if (forced) {
    cand = {options.format};
  } else if (!options.candidates.empty()) {
    for (LayerFormat f : options.candidates) {
      if (!parse_layer_format(layer_format_name(f), nullptr) || f == LayerFormat::kAuto)
        return invalid_argument(what + ": candidates must name formats, not 'auto'");
      if (std::find(cand.begin(), cand.end(), f) == cand.end()) cand.push_back(f);
    }
  } else {
    cand.assign(std::begin(kDefaultFormats), std::end(kDefaultFormats));
  }

  // The float32 values, shared by the CER/CSER/codebook builders (the levels decode their own).
  std::vector<float> dense;
  if (std::any_of(cand.begin(), cand.end(), [](LayerFormat f) { return f != LayerFormat::kLevels; })) {
    st = model.decode_float32(weight, &dense, options.decode_threads);
    if (!st.ok()) return with_context(st, what);
  }

  std::vector<FormatTiming> timings(cand.size());
  std::vector<std::unique_ptr<Impl>> impls(cand.size());
  std::vector<size_t> live;
  for (size_t i = 0; i < cand.size(); ++i) {
    timings[i].format = cand[i];
    impls[i] = std::make_unique<Impl>();
    Impl& im = *impls[i];
    im.format = cand[i];
    im.act = options.activation;
    im.isa = options.isa;
    im.bias = bias;
    timings[i].status = build(model, weight, dense, rows, cols, options.decode_threads, &im);
    if (timings[i].status.ok()) {
      timings[i].bytes = format_bytes(im);
      live.push_back(i);
    } else if (forced) {
      return with_context(timings[i].status, what + ": format " + layer_format_name(cand[i]));
    }
  }
  dense = std::vector<float>();
  if (live.empty()) {
    std::string why = what + ": no format can hold this tensor:";
    for (const FormatTiming& t : timings) why += std::string(" ") + layer_format_name(t.format) + ": " + t.status.message() + ";";
    return invalid_argument(why);
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
    auto call = [&](const Impl& im) {
      Status p = product(im, X.data(), X.size(), batch, Y.data(), Y.size());
      if (p.ok()) epilogue(im, layout_of(im.format), rows, batch, Y.data());
      return p;
    };
    // Untimed warm-up per candidate: one call, whose duration sets the calls per round, then one round.
    std::vector<unsigned> calls(cand.size(), 1);
    std::vector<size_t> timed;
    for (size_t i : live) {
      const double t0 = now_seconds();
      Status p = call(*impls[i]);
      const double one = std::max(now_seconds() - t0, 1e-9);
      if (!p.ok()) {  // e.g. an ISA this kernel family does not have
        timings[i].status = p;
        continue;
      }
      calls[i] = unsigned(std::min(100000.0, std::max(1.0, options.min_round_seconds / one)));
      for (unsigned k = 0; k < calls[i]; ++k) (void)call(*impls[i]);
      timings[i].seconds = std::numeric_limits<double>::infinity();
      timed.push_back(i);
    }
    if (timed.empty()) return with_context(timings[live[0]].status, what);
    const unsigned reps = std::max(1u, options.repetitions);
    for (unsigned rep = 0; rep < reps; ++rep) {
      for (size_t i : timed) {
        const double t0 = now_seconds();
        for (unsigned k = 0; k < calls[i]; ++k) (void)call(*impls[i]);
        timings[i].seconds = std::min(timings[i].seconds, (now_seconds() - t0) / calls[i]);
      }
    }
    chosen = timed[0];
    for (size_t i : timed)
      if (timings[i].seconds < timings[chosen].seconds) chosen = i;
  }

  Layer l;
  l.name_ = weight;
  l.rows_ = rows;
  l.cols_ = cols;
  l.batch_ = batch;
  l.format_ = cand[chosen];
  l.forced_ = forced;
  l.timings_ = std::move(timings);
  l.impl_ = std::move(impls[chosen]);
  *out = std::move(l);
  return Status::Ok();
}

Status Layer::forward(const float* X, size_t x_len, size_t batch, float* Y, size_t y_len) const {
  if (!impl_) return invalid_argument("layer: not created");
  if (X == nullptr || Y == nullptr) return invalid_argument("layer " + quoted(name_) + ": null buffer");
  if (batch == 0) return invalid_argument("layer " + quoted(name_) + ": batch must be >= 1");
  if (x_len / batch != cols_ || x_len % batch != 0 || y_len / batch != rows_ || y_len % batch != 0)
    return invalid_argument("layer " + quoted(name_) + ": buffers must hold batch x " + std::to_string(cols_) +
                            " inputs and batch x " + std::to_string(rows_) + " outputs");
  Status s = product(*impl_, X, x_len, batch, Y, y_len);
  if (!s.ok()) return s;
  epilogue(*impl_, layout(), rows_, batch, Y);
  return Status::Ok();
}

}  // namespace nnpress
