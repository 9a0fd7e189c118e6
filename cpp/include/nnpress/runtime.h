// nnpress/runtime.h — the edge runtime: open a .nnp, list its tensors, decode them into your buffers
// or straight into CER / CSER / dense-codebook matrices for the kernels in sparse/kernels.h, or into
// integer-level matrices for the kernels in kernels/levels.h.
// Decoder side only: available in the decoder-only build (-DNNPRESS_ENCODER=OFF).
//
// CONTRACT
//   A complete program (link nnpress::nnpress from an installed prefix, see examples/edge/):
//
//     #include <cstdio>
//     #include <vector>
//     #include "nnpress/runtime.h"
//     #include "nnpress/sparse/kernels.h"
//
//     int main(int argc, char** argv) {
//       nnpress::Model model;
//       nnpress::Status s = nnpress::Model::open_file(argc > 1 ? argv[1] : "model.nnp", &model);
//       if (!s.ok()) { std::fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
//       for (const nnpress::TensorSummary& t : model.list())          // name, dtype, shape, sizes
//         std::printf("%s %s %llu values, %llu bytes stored\n", t.name.c_str(),
//                     nnpress::dtype_name(t.dtype), (unsigned long long)t.count,
//                     (unsigned long long)t.stored_bytes);
//       std::vector<float> bias;                                        // any float dtype -> float32
//       s = model.decode_float32("fc1.bias", &bias);
//       nnpress::sparse::RowGroupMatrix w;                              // shape[0] x prod(shape[1:])
//       if (s.ok()) s = model.decode_matrix("fc1.weight", nnpress::sparse::Format::kCSER, &w);
//       if (!s.ok()) { std::fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
//       std::vector<float> x(w.cols(), 1.0f), y(w.rows());
//       s = nnpress::sparse::matvec(w, x.data(), x.size(), y.data(), y.size());
//       std::vector<nnpress::Tensor> all;                               // everything, 2 threads
//       if (s.ok()) s = model.decode_all(&all, 2);
//       return s.ok() ? 0 : 1;
//     }
//
//   Exceptions instead of status values: open with RuntimeOptions::errors = ErrorMode::kThrow (or
//   call set_error_mode); then every Status-returning member throws nnpress::Error (status.h)
//   carrying the non-ok Status, and returns Status::Ok() otherwise. Model::load(path) opens a file
//   and throws on failure.
//
//   - Opening parses and checks the whole header and tensor table (ContainerReader::open_*, see
//     format/container.h); decoding checks every chunk's CRC-32C and the payload. open_file maps
//     the file: opening reads only the header and the table, and decoding one tensor by name reads
//     only that tensor's chunks (random access without reading or decoding the rest). Bad data gives a
//     kCorrupt / kTruncated / kLimit / kUnsupported Status whose message names the tensor; a missing
//     name gives kNotFound; a wrong buffer size or an unsuitable tensor gives kInvalidArgument.
//     Nothing aborts and nothing reads outside the file or the caller's buffers.
//   - decode writes the tensor in its stored dtype (little endian), output_bytes() bytes.
//     decode_float32 accepts float32/float16/bfloat16 (widened exactly) and float64 (rounded to
//     nearest); other dtypes are kInvalidArgument. Its values are bit-identical to what
//     nnpress.decompress gives in Python (then widened), so a model built on them matches the
//     Python model up to float summation order.
//   - decode_matrix / decode_codebook view the tensor as rows = shape[0] and cols = the product of
//     the other dimensions (rank 0 or 1: one row), the layout of a Linear weight and of a Conv2d
//     weight for im2col, and build the matrix from the decoded float32 values (not from the
//     levels), so the matrix holds exactly the values of decode_float32. Too many distinct values
//     (more than 65536 for CER/CSER, 16 for the codebook) or NaN/Inf values are kInvalidArgument;
//     dimensions above 2^32 - 1, or more than 2^32 - 1 entries other than the most frequent value,
//     are kLimit.
//   - Outputs on failure: decode_all, decode_matrix and decode_codebook leave *out unchanged;
//     decode and decode_float32 leave unspecified contents.
//   - Threads: `threads` = 0 means std::thread::hardware_concurrency(); every count is further
//     capped by RuntimeOptions::max_threads (0 = no cap). Quantized tensors are stored as
//     independent row blocks (entry points), so one large tensor decodes on several threads, and
//     decode_all spreads the blocks of all tensors over one pool. Results are bit-identical for
//     every thread count.
//
// SURPRISES
//   - open_memory does not copy: the buffer must outlive the Model. open_bytes owns its copy,
//     open_file its mapping; do not truncate or rewrite the file in place while it is open
//     (container.h, SURPRISES: replacing it by rename is safe).
//   - A Model is movable, not copyable; all const members may be called from several threads.
//   - decode_all returns tied (alias) tensors as separate copies under each name.
//   - Memory: a matrix decode holds the float32 tensor while it builds the matrix (about 4 bytes
//     per weight extra, for the time of the call).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "nnpress/format/container.h"
#include "nnpress/kernels/levels.h"
#include "nnpress/sparse/matrix.h"
#include "nnpress/status.h"

namespace nnpress {

enum class ErrorMode : int { kStatus = 0, kThrow = 1 };

struct RuntimeOptions {
  ReaderOptions reader;              // resource limits applied while parsing (container.h)
  unsigned max_threads = 0;          // cap on the threads of any call; 0 = no cap
  ErrorMode errors = ErrorMode::kStatus;
};

// One entry of Model::list().
struct TensorSummary {
  std::string name;
  DType dtype = DType::kFloat32;
  TensorRole role = TensorRole::kWeight;
  Storage storage = Storage::kRaw;
  std::vector<uint64_t> shape;
  uint64_t count = 0;         // number of values (product of shape; 1 for a scalar)
  size_t output_bytes = 0;    // bytes decode() writes: count * dtype size
  uint64_t stored_bytes = 0;  // bytes of its chunks in the file (0 for an alias)
};

// A decoded tensor (decode_all): the stored dtype's bytes, little endian.
struct Tensor {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> data;
  // data viewed as float32 (nullptr unless dtype is float32).
  const float* f32() const { return dtype == DType::kFloat32 ? reinterpret_cast<const float*>(data.data()) : nullptr; }
};

class Model {
 public:
  Model() = default;
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // On failure *out is left empty. In kThrow mode these throw nnpress::Error instead.
  static Status open_file(const std::string& path, Model* out, const RuntimeOptions& options = RuntimeOptions());
  static Status open_memory(const uint8_t* data, size_t size, Model* out,
                            const RuntimeOptions& options = RuntimeOptions());
  static Status open_bytes(std::vector<uint8_t> bytes, Model* out, const RuntimeOptions& options = RuntimeOptions());
  // Throws nnpress::Error on failure; the returned model stays in the mode of `options`.
  static Model load(const std::string& path, const RuntimeOptions& options = RuntimeOptions());

  void set_error_mode(ErrorMode mode) { options_.errors = mode; }
  ErrorMode error_mode() const { return options_.errors; }

  size_t tensor_count() const { return reader_.tensor_count(); }
  std::vector<TensorSummary> list() const;
  Status find(const std::string& name, size_t* index) const;  // kNotFound if absent
  // The summary of one tensor (kNotFound if absent).
  Status summary(const std::string& name, TensorSummary* out) const;
  const std::string& metadata() const { return reader_.metadata(); }
  size_t file_size() const { return reader_.file_size(); }
  const ContainerReader& reader() const { return reader_; }  // the full reader API

  // ContainerReader::decode by name (kNotFound if absent).
  Status decode(const std::string& name, void* out, size_t out_bytes, unsigned threads = 1) const;
  // Resizes *out to count floats. kInvalidArgument: null out, a dtype that is not a float dtype.
  Status decode_float32(const std::string& name, std::vector<float>* out, unsigned threads = 1) const;
  // format: Format::kCER or Format::kCSER (anything else: kInvalidArgument). null out: kInvalidArgument.
  Status decode_matrix(const std::string& name, sparse::Format format, sparse::RowGroupMatrix* out,
                       unsigned threads = 1) const;
  Status decode_codebook(const std::string& name, sparse::CodebookMatrix* out, unsigned threads = 1) const;
  // The integer levels of a quantized tensor as a LevelMatrix for levels::matmul (kernels/levels.h,
  // level_matrix_from_reader): no float32 copy of the tensor is made. kInvalidArgument: null out, a raw
  // tensor. On failure *out is left unchanged.
  Status decode_level_matrix(const std::string& name, levels::LevelMatrix* out, unsigned threads = 1) const;
  // Every tensor, in table order, all row blocks on one pool of `threads` threads.
  Status decode_all(std::vector<Tensor>* out, unsigned threads = 0) const;

  // The thread count a call with `threads` runs with (before the per-call task count caps it).
  unsigned effective_threads(unsigned threads) const;

 private:
  static Status open_impl(Model* out, const RuntimeOptions& options, const uint8_t* data, size_t size,
                          std::vector<uint8_t>* bytes, const std::string* path);
  Status finish(Status s) const;  // throws in kThrow mode
  Status float32_impl(const std::string& name, std::vector<float>* out, uint32_t* rows, uint32_t* cols,
                      unsigned threads) const;

  ContainerReader reader_;
  RuntimeOptions options_;
};

}  // namespace nnpress
