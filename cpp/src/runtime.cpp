// The edge runtime (nnpress/runtime.h): a thin layer over ContainerReader and the sparse builders.
#include "nnpress/runtime.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/parallel.h"

namespace nnpress {
namespace {

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// IEEE binary16 bits -> float32, exact (every half value is a float).
float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // 112 = 127 - 15
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    bits = sign | uint32_t(112 - e) << 23 | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bfloat16_bits_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TensorSummary make_summary(const TensorInfo& t, const ContainerReader& r) {
  TensorSummary s;
  s.name = t.name;
  s.dtype = t.dtype;
  s.role = t.role;
  s.storage = t.storage;
  s.shape = t.shape;
  s.count = t.count;
  s.output_bytes = t.output_bytes();
  s.stored_bytes = t.storage == Storage::kAlias ? 0 : t.stored_bytes();
  (void)r;
  return s;
}

}  // namespace

Status Model::finish(Status s) const {
  if (!s.ok() && options_.errors == ErrorMode::kThrow) throw Error(std::move(s));
  return s;
}

unsigned Model::effective_threads(unsigned threads) const {
  if (threads == 0) threads = detail::hardware_threads();
  if (options_.max_threads != 0) threads = std::min(threads, options_.max_threads);
  return threads;
}

Status Model::open_impl(Model* out, const RuntimeOptions& options, const uint8_t* data, size_t size,
                        std::vector<uint8_t>* bytes, const std::string* path) {
  Status s;
  if (out == nullptr) {
    s = invalid_argument("Model::open: null output");
  } else {
    *out = Model();
    ContainerReader r;
    if (path != nullptr) {
      s = ContainerReader::open_file(*path, &r, options.reader);
    } else if (bytes != nullptr) {
      s = ContainerReader::open_bytes(std::move(*bytes), &r, options.reader);
    } else {
      s = ContainerReader::open_memory(data, size, &r, options.reader);
    }
    if (s.ok()) {
      out->reader_ = std::move(r);
      out->options_ = options;
    }
  }
  if (!s.ok() && options.errors == ErrorMode::kThrow) throw Error(s);
  return s;
}

Status Model::open_file(const std::string& path, Model* out, const RuntimeOptions& options) {
  return open_impl(out, options, nullptr, 0, nullptr, &path);
}

Status Model::open_memory(const uint8_t* data, size_t size, Model* out, const RuntimeOptions& options) {
  return open_impl(out, options, data, size, nullptr, nullptr);
}

Status Model::open_bytes(std::vector<uint8_t> bytes, Model* out, const RuntimeOptions& options) {
  return open_impl(out, options, nullptr, 0, &bytes, nullptr);
}

Model Model::load(const std::string& path, const RuntimeOptions& options) {
  Model m;
  Status s = open_file(path, &m, options);
  if (!s.ok()) throw Error(s);  // kStatus mode returns instead of throwing
  return m;
}

std::vector<TensorSummary> Model::list() const {
  std::vector<TensorSummary> out;
  out.reserve(reader_.tensor_count());
  for (const TensorInfo& t : reader_.tensors()) out.push_back(make_summary(t, reader_));
  return out;
}

Status Model::find(const std::string& name, size_t* index) const {
  if (index == nullptr) return finish(invalid_argument("Model::find: null output"));
  return finish(reader_.find(name, index));
}

Status Model::summary(const std::string& name, TensorSummary* out) const {
  if (out == nullptr) return finish(invalid_argument("Model::summary: null output"));
  size_t i;
  Status s = reader_.find(name, &i);
  if (s.ok()) *out = make_summary(reader_.tensor(i), reader_);
  return finish(s);
}

Status Model::decode(const std::string& name, void* out, size_t out_bytes, unsigned threads) const {
  return finish(reader_.decode(name, out, out_bytes, effective_threads(threads)));
}

Status Model::float32_impl(const std::string& name, std::vector<float>* out, uint32_t* rows, uint32_t* cols,
                           unsigned threads) const {
  if (out == nullptr) return invalid_argument("decode_float32: null output");
  size_t i;
  Status s = reader_.find(name, &i);
  if (!s.ok()) return s;
  const TensorInfo& t = reader_.tensor(i);
  if (rows != nullptr) {
    uint64_t r = 1, c = t.count;
    if (t.shape.size() >= 2) {
      r = t.shape[0];
      c = r ? t.count / r : 0;
    } else if (t.count == 0) {
      r = 0;
    }
    if (r > std::numeric_limits<uint32_t>::max() || c > std::numeric_limits<uint32_t>::max())
      return limit_exceeded("tensor " + quoted(name) + ": " + std::to_string(r) + " x " + std::to_string(c) +
                            " is too large for a matrix (dimensions up to 2^32 - 1)");
    *rows = uint32_t(r);
    *cols = uint32_t(c);
  }
  const size_t n = size_t(t.count);
  const unsigned th = effective_threads(threads);
  switch (t.dtype) {
    case DType::kFloat32: out->resize(n); return reader_.decode(i, out->data(), n * sizeof(float), th);
    case DType::kFloat16:
    case DType::kBFloat16: {
      std::vector<uint16_t> tmp(n);
      s = reader_.decode(i, tmp.data(), n * 2, th);
      if (!s.ok()) return s;
      out->resize(n);
      if (t.dtype == DType::kFloat16) {
        for (size_t k = 0; k < n; ++k) (*out)[k] = half_bits_to_float(tmp[k]);
      } else {
        for (size_t k = 0; k < n; ++k) (*out)[k] = bfloat16_bits_to_float(tmp[k]);
      }
      return Status::Ok();
    }
    case DType::kFloat64: {
      std::vector<double> tmp(n);
      s = reader_.decode(i, tmp.data(), n * 8, th);
      if (!s.ok()) return s;
      out->resize(n);
      for (size_t k = 0; k < n; ++k) (*out)[k] = float(tmp[k]);
      return Status::Ok();
    }
    default:
      return invalid_argument("decode_float32: tensor " + quoted(name) + " has dtype " + dtype_name(t.dtype) +
                              ", not a float dtype");
  }
}

Status Model::decode_float32(const std::string& name, std::vector<float>* out, unsigned threads) const {
  return finish(float32_impl(name, out, nullptr, nullptr, threads));
}

Status Model::decode_matrix(const std::string& name, sparse::Format format, sparse::RowGroupMatrix* out,
                            unsigned threads) const {
  if (out == nullptr) return finish(invalid_argument("decode_matrix: null output"));
  if (format != sparse::Format::kCER && format != sparse::Format::kCSER)
    return finish(invalid_argument("decode_matrix: format must be CER or CSER (use decode_codebook for the codebook)"));
  std::vector<float> w;
  uint32_t rows = 0, cols = 0;
  Status s = float32_impl(name, &w, &rows, &cols, threads);
  if (s.ok()) {
    s = sparse::RowGroupMatrix::from_dense(format, w.data(), rows, cols, out);
    if (!s.ok()) s = Status(s.code(), "decode_matrix: tensor " + quoted(name) + ": " + s.message());
  }
  return finish(s);
}

Status Model::decode_codebook(const std::string& name, sparse::CodebookMatrix* out, unsigned threads) const {
  if (out == nullptr) return finish(invalid_argument("decode_codebook: null output"));
  std::vector<float> w;
  uint32_t rows = 0, cols = 0;
  Status s = float32_impl(name, &w, &rows, &cols, threads);
  if (s.ok()) {
    s = sparse::CodebookMatrix::from_dense(w.data(), rows, cols, out);
    if (!s.ok()) s = Status(s.code(), "decode_codebook: tensor " + quoted(name) + ": " + s.message());
  }
  return finish(s);
}

Status Model::decode_all(std::vector<Tensor>* out, unsigned threads) const {
  if (out == nullptr) return finish(invalid_argument("decode_all: null output"));
  const size_t n = reader_.tensor_count();
  std::vector<Tensor> result(n);
  std::vector<void*> ptrs(n);
  std::vector<size_t> sizes(n);
  for (size_t i = 0; i < n; ++i) {
    const TensorInfo& t = reader_.tensor(i);
    result[i].name = t.name;
    result[i].dtype = t.dtype;
    result[i].shape = t.shape;
    result[i].data.resize(t.output_bytes());
    sizes[i] = result[i].data.size();
    // A zero-size tensor has nothing to decode; a null pointer skips it.
    ptrs[i] = sizes[i] ? result[i].data.data() : nullptr;
  }
  Status s = reader_.decode_all(ptrs, sizes, effective_threads(threads));
  if (s.ok()) *out = std::move(result);
  return finish(s);
}

}  // namespace nnpress
