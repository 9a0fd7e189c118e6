// One linear layer in the weight format measured fastest at its shape and batch (see nnpress/layer.h).
// Kept small: it is part of the edge library, so error paths are out-of-line helpers and the candidates
// share one code path.
#include "nnpress/layer.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "nnpress/kernels/levels.h"
#include "nnpress/kernels/lut.h"
#include "nnpress/sparse/kernels.h"

// kLevelsCols kernel copies for AVX2 / AVX-512 by function target attributes (x86 GCC / Clang); the
// intrinsics are used only inside functions that carry those attributes.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NNPRESS_LAYER_X86 1
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define NNPRESS_NOINLINE __attribute__((noinline))
#define NNPRESS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define NNPRESS_NOINLINE
#define NNPRESS_ALWAYS_INLINE inline
#endif
namespace nnpress {

// One format's matrix (one of lm / lut / rg / cb, as `format` says), the bias and the kernel options.
// During create() every candidate format is an Impl of its own.
struct Layer::Impl {
  LayerFormat format = LayerFormat::kAuto;
  levels::LevelMatrix lm;
  levels::LutMatrix lut;
  sparse::RowGroupMatrix rg;  // CER or CSER
  sparse::CodebookMatrix cb;
  std::vector<float> bias;  // empty: none
  Activation act = Activation::kNone;
  std::optional<Isa> isa;
};

namespace {

// The default candidates (layer.h: CER is timed only when named).
const LayerFormat kDefaultFormats[] = {LayerFormat::kLevels, LayerFormat::kLevelsCols, LayerFormat::kCSER,
                                       LayerFormat::kCodebook, LayerFormat::kLut};
constexpr int kLastFormat = int(LayerFormat::kLut);

// "layer 'name': msg" with the given code.
NNPRESS_NOINLINE Status fail(StatusCode code, const std::string& weight, const std::string& msg) {
  return Status(code, "layer '" + weight + "': " + msg);
}
NNPRESS_NOINLINE Status context(const Status& s, const std::string& weight, const char* what) {
  return fail(s.code(), weight, std::string(what) + s.message());
}

// ---- kLevelsCols: Y (rows x batch) = W X (X cols x batch) on the level matrix (layer.h) ----
constexpr size_t kColsTile = 64;  // items per tile: 4 AVX-512 / 8 AVX2 registers of accumulators

struct ColsArgs {
  const levels::LevelMatrix* m;
  const float* X;
  size_t batch;
  float* Y;
};

// Accumulates weight w times inputs x[0 .. n) into acc; n == kColsTile is the common, unrolled case.
NNPRESS_ALWAYS_INLINE void axpy_tile(float* acc, float w, const float* x, size_t n) {
  if (n == kColsTile) {
    for (size_t t = 0; t < kColsTile; ++t) acc[t] += w * x[t];
  } else {
    for (size_t t = 0; t < n; ++t) acc[t] += w * x[t];
  }
}

// One copy of the kernel for both index widths: the width test per weight is loop-invariant and cheap
// next to the 64 multiply-adds it feeds, and keeps the library small.
NNPRESS_ALWAYS_INLINE void cols_body(const ColsArgs& a) {
  const levels::LevelMatrix& m = *a.m;
  const uint32_t rows = m.rows(), cols = m.cols();
  const size_t stride = m.stride(), batch = a.batch;
  const int8_t* q8 = m.q8();
  const int16_t* q16 = m.q16();
  const float* rs = m.row_scale().data();
  const float* cs = m.has_col_scale() ? m.col_scale().data() : nullptr;
  const uint64_t* optr = m.outlier_ptr().empty() ? nullptr : m.outlier_ptr().data();
  for (uint32_t r = 0; r < rows; ++r) {
    const size_t row = size_t(r) * stride;
    for (size_t i0 = 0; i0 < batch; i0 += kColsTile) {
      const size_t n = std::min(kColsTile, batch - i0);
      float acc[kColsTile] = {};
      for (uint32_t c = 0; c < cols; ++c) {
        const float u = q8 ? float(q8[row + c]) : float(q16[row + c]);
        axpy_tile(acc, cs ? u * cs[c] : u, a.X + size_t(c) * batch + i0, n);
      }
      if (optr) {
        for (uint64_t k = optr[r]; k < optr[r + 1]; ++k) {
          const uint32_t c = m.outlier_col()[k];
          const float u = float(m.outlier_val()[k]);
          axpy_tile(acc, cs ? u * cs[c] : u, a.X + size_t(c) * batch + i0, n);
        }
      }
      float* y = a.Y + size_t(r) * batch + i0;
      for (size_t t = 0; t < n; ++t) y[t] = acc[t] * rs[r];
    }
  }
}

NNPRESS_NOINLINE void cols_generic(const ColsArgs& a) { cols_body(a); }
#ifdef NNPRESS_LAYER_X86
__attribute__((target("avx2,fma"))) NNPRESS_NOINLINE void cols_avx2(const ColsArgs& a) { cols_body(a); }

// AVX-512: R rows x V vectors of 16 items in R*V <= 8 register accumulators (independent FMA chains:
// one broadcast weight per row and column, one input load per vector and column); the last vector of a
// partial tile uses masked loads and stores.
#define NNPRESS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

// acc[i][v] += w[i] * x[16 v ..]: one column's inputs into every row's accumulators.
template <int R, int V>
NNPRESS_AVX512 NNPRESS_ALWAYS_INLINE void step512(__m512 (&acc)[R][V], const float* x, const float* w, __mmask16 last) {
  __m512 xv[V];
  for (int v = 0; v < V; ++v)
    xv[v] = v == V - 1 ? _mm512_maskz_loadu_ps(last, x + 16 * v) : _mm512_loadu_ps(x + 16 * v);
  for (int i = 0; i < R; ++i) {
    const __m512 wv = _mm512_set1_ps(w[i]);
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(wv, xv[v], acc[i][v]);
  }
}

template <int R, int V>
NNPRESS_AVX512 NNPRESS_ALWAYS_INLINE void cols_tile512(const ColsArgs& a, uint32_t r, size_t i0, __mmask16 last) {
  const levels::LevelMatrix& m = *a.m;
  const size_t batch = a.batch, stride = m.stride();
  const float* cs = m.has_col_scale() ? m.col_scale().data() : nullptr;
  __m512 acc[R][V];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
  for (uint32_t c = 0; c < m.cols(); ++c) {
    float w[R];
    for (int i = 0; i < R; ++i) {
      const size_t k = size_t(r + i) * stride + c;
      const float u = m.q8() ? float(m.q8()[k]) : float(m.q16()[k]);
      w[i] = cs ? u * cs[c] : u;
    }
    step512<R, V>(acc, a.X + size_t(c) * batch + i0, w, last);
  }
  if (!m.outlier_ptr().empty()) {  // list entries, one row at a time (the other rows' weights are 0)
    for (int i = 0; i < R; ++i) {
      for (uint64_t k = m.outlier_ptr()[r + i]; k < m.outlier_ptr()[r + i + 1]; ++k) {
        const uint32_t c = m.outlier_col()[k];
        float w[R] = {};
        w[i] = cs ? float(m.outlier_val()[k]) * cs[c] : float(m.outlier_val()[k]);
        step512<R, V>(acc, a.X + size_t(c) * batch + i0, w, last);
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    const __m512 s = _mm512_set1_ps(m.row_scale()[r + i]);
    float* y = a.Y + size_t(r + i) * batch + i0;
    for (int v = 0; v < V; ++v) {
      const __m512 out = _mm512_mul_ps(acc[i][v], s);
      if (v == V - 1) _mm512_mask_storeu_ps(y + 16 * v, last, out);
      else _mm512_storeu_ps(y + 16 * v, out);
    }
  }
}

template <int V>
NNPRESS_AVX512 NNPRESS_ALWAYS_INLINE void cols_rows512(const ColsArgs& a, size_t i0, __mmask16 last) {
  constexpr int R = 8 / V;
  const uint32_t rows = a.m->rows();
  uint32_t r = 0;
  for (; r + R <= rows; r += R) cols_tile512<R, V>(a, r, i0, last);
  for (; r < rows; ++r) cols_tile512<1, V>(a, r, i0, last);
}

NNPRESS_AVX512 NNPRESS_NOINLINE void cols_avx512(const ColsArgs& a) {
  for (size_t i0 = 0; i0 < a.batch; i0 += kColsTile) {
    const size_t n = std::min(kColsTile, a.batch - i0);
    const __mmask16 last = n % 16 ? __mmask16((1u << (n % 16)) - 1u) : __mmask16(0xffff);
    switch ((n + 15) / 16) {
      case 4: cols_rows512<4>(a, i0, last); break;
      case 3: cols_rows512<3>(a, i0, last); break;
      case 2: cols_rows512<2>(a, i0, last); break;
      default: cols_rows512<1>(a, i0, last); break;
    }
  }
}
#undef NNPRESS_AVX512
#endif  // NNPRESS_LAYER_X86

Status levels_cols(const Layer::Impl& impl, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len) {
  const levels::LevelMatrix& m = impl.lm;
  if (x_len != size_t(m.cols()) * batch || y_len != size_t(m.rows()) * batch)
    return invalid_argument("levels_cols: buffer sizes do not match the matrix and batch");
  if (!impl.isa) {
    Status e = isa_env_status();
    if (!e.ok()) return e;
  }
  const Isa isa = impl.isa ? *impl.isa : detect_isa();
  if (!isa_supported(isa))
    return invalid_argument(std::string("levels_cols: ISA '") + isa_name(isa) + "' is not available");
  const ColsArgs a{&m, X, batch, Y};
#ifdef NNPRESS_LAYER_X86
  if (isa == Isa::kAvx512) {
    cols_avx512(a);
    return Status::Ok();
  }
  if (isa == Isa::kAvx2) {
    cols_avx2(a);
    return Status::Ok();
  }
#endif
  cols_generic(a);
  return Status::Ok();
}

// Y = W X in impl.format, no bias.
NNPRESS_NOINLINE Status product(const Layer::Impl& impl, const float* X, size_t x_len, size_t batch, float* Y,
                                size_t y_len) {
  if (impl.format == LayerFormat::kLevelsCols) return levels_cols(impl, X, x_len, batch, Y, y_len);
  if (impl.format == LayerFormat::kLevels || impl.format == LayerFormat::kLut) {
    levels::LevelKernelOptions o;
    o.isa = impl.isa;
    return impl.format == LayerFormat::kLut ? levels::matmul(impl.lut, X, x_len, batch, Y, y_len, o)
                                            : levels::matmul(impl.lm, X, x_len, batch, Y, y_len, o);
  }
  sparse::KernelOptions o;
  o.isa = impl.isa;
  if (impl.format == LayerFormat::kCodebook) return sparse::matmat(impl.cb, X, x_len, batch, Y, y_len, o);
  return sparse::matmat(impl.rg, X, x_len, batch, Y, y_len, o);
}

Layout layout_of(LayerFormat f) {
  return f == LayerFormat::kLevels || f == LayerFormat::kLut ? Layout::kItemRows : Layout::kItemCols;
}

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
    case LayerFormat::kLevelsCols:
    case LayerFormat::kLut: {
      // The level matrix multiplies step * u in float32; a float16/bfloat16 tensor's decoded weights are
      // those values rounded to its dtype, so its products would not be the decoded model's.
      if (dtype != DType::kFloat32 && dtype != DType::kFloat64)
        return invalid_argument(std::string("dtype ") + dtype_name(dtype) +
                                ": its decoded weights are rounded to it, the level matrix's would not be");
      if (impl->format != LayerFormat::kLut) return model.decode_level_matrix(name, &impl->lm, threads);
      levels::LevelMatrix lm;  // the lookup tables are built from it, then it is freed
      Status s = model.decode_level_matrix(name, &lm, threads);
      return s.ok() ? levels::LutMatrix::from_level_matrix(lm, &impl->lut) : s;
    }
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
    case LayerFormat::kLevels:
    case LayerFormat::kLevelsCols: return impl.lm.nbytes();
    case LayerFormat::kLut: return impl.lut.nbytes();
    case LayerFormat::kCSER:
    case LayerFormat::kCER: return impl.rg.nbytes() + impl.rg.plan_bytes();
    case LayerFormat::kCodebook: return impl.cb.nbytes();
    default: return 0;
  }
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool known(LayerFormat f) { return int(f) >= int(LayerFormat::kAuto) && int(f) <= kLastFormat; }

}  // namespace

const char* layer_format_name(LayerFormat f) {
  static const char* const names[] = {"auto", "levels", "cser", "cer", "codebook", "levels_cols", "lut"};
  return known(f) ? names[int(f)] : "?";
}

bool parse_layer_format(const std::string& name, LayerFormat* out) {
  for (int i = int(LayerFormat::kAuto); i <= kLastFormat; ++i) {
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
  if (std::any_of(cand.begin(), cand.end(), [](LayerFormat f) {
        return f != LayerFormat::kLevels && f != LayerFormat::kLevelsCols && f != LayerFormat::kLut;
      })) {
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
    // After the first timed round, a candidate more than kDropRatio times slower than the fastest stops
    // being timed (it cannot win), so a slow format costs one round, not `repetitions`.
    constexpr double kDropRatio = 3.0;
    std::vector<unsigned> calls(cand.size(), 0);
    std::vector<char> timing(cand.size(), 1);
    const unsigned reps = std::max(1u, options.repetitions);
    for (unsigned rep = 0; rep <= reps; ++rep) {  // round 0: untimed warm-up, sets calls
      for (size_t i : live) {
        if (rep > 0 && (calls[i] == 0 || !timing[i])) continue;
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
      if (rep == 1) {
        double best = std::numeric_limits<double>::infinity();
        for (size_t i : live)
          if (calls[i] > 0) best = std::min(best, timings[i].seconds);
        for (size_t i : live) timing[i] = calls[i] > 0 && timings[i].seconds <= kDropRatio * best;
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
