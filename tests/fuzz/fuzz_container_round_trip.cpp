// Fuzz target: .nnp writer -> reader round trip with fuzzer-chosen tensors (needs
// NNPRESS_ENCODER=ON; in a decoder-only build the target does nothing).
//
// Input: u8 tensor count, u8 block size, then per tensor u8 kind, dtype, shape (rank 0-3, dims
// 0-8), method, step, binarization params, rows_per_block, values; a final u16 position and u8
// xor for a single-byte corruption and a u16 truncation length.
// Properties:
//   - write_container accepts the valid inputs, and writes the same bytes with 1 and 2 threads;
//   - the reader returns every tensor's name, dtype, shape and storage; raw tensors decode to their
//     bytes, quantized ones (nearest / rdoq) to level * step rounded once as docs/FORMAT.md says,
//     and decode_levels returns the levels (trellis too); aliases decode as their target;
//   - one changed byte anywhere, or a truncation, is reported (open or decode), never accepted.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "nnpress/format/container.h"

NNPRESS_FUZZ_TARGET(container_round_trip) {
#ifdef NNPRESS_WITH_ENCODER
  using namespace nnpress;
  nnpress_fuzz::FuzzInput in(data, size);
  const unsigned ntensors = 1 + in.u8() % 5;
  WriterOptions wopt;
  wopt.block_elements = 1 + uint64_t(in.u8()) * 3;
  static const double kSteps[] = {1e-3, 0.03125, 0.5, 1.0, 3.0, 1e-30, 1e20, 0.1};
  static const DType kFloat[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64};
  static const QuantMethod kMethods[] = {QuantMethod::kNearest, QuantMethod::kRdoq, QuantMethod::kTrellis};

  std::vector<TensorInput> inputs;
  std::vector<std::vector<int32_t>> levels(ntensors);
  std::vector<std::vector<uint8_t>> raws(ntensors);
  for (unsigned t = 0; t < ntensors; ++t) {
    TensorInput ti;
    ti.name = (in.u8() & 1) ? "t" + std::to_string(t) : "\xc3\xa9\xe2\x82\xac." + std::to_string(t);  // é€.
    const uint8_t kind = in.u8() % 4;
    const unsigned ndim = in.u8() % 4;
    uint64_t count = 1;
    for (unsigned d = 0; d < ndim; ++d) {
      ti.shape.push_back(in.u8() % 9);
      count *= ti.shape.back();
    }
    // Alias of the first earlier non-alias tensor, if there is one.
    int target = -1;
    for (unsigned k = 0; k < t && kind == 3; ++k)
      if (inputs[k].storage != Storage::kAlias) {
        target = int(k);
        break;
      }
    if (target >= 0) {
      ti.storage = Storage::kAlias;
      ti.alias_of = uint32_t(target);
      ti.dtype = inputs[size_t(target)].dtype;
      ti.shape = inputs[size_t(target)].shape;
    } else if (kind <= 1) {
      ti.storage = Storage::kQuantized;
      ti.dtype = kFloat[in.u8() % 4];
      ti.method = kMethods[in.u8() % 3];
      ti.step = kSteps[in.u8() % 8];
      uint64_t rows, cols;
      rows_cols_of(ti.shape, &rows, &cols);
      ti.rows_per_block = std::min<uint64_t>(in.u8() % 4, rows);  // 0: the writer derives it
      if (in.u8() & 1) {
        ti.unary_len = in.u8() % 65;
        ti.eg_order = in.u8() % 31;
      }
      for (uint64_t i = 0; i < count; ++i) {
        const uint8_t b = in.u8();
        levels[t].push_back(b < 240 ? int32_t(int8_t(b)) / 8 : int32_t(in.u32()));
      }
      ti.levels = levels[t].data();
    } else {
      ti.storage = Storage::kRaw;
      ti.dtype = DType(1 + in.u8() % 13);
      raws[t].resize(size_t(count) * dtype_size(ti.dtype));
      for (auto& b : raws[t]) b = in.u8();
      if (ti.dtype == DType::kBool)
        for (auto& b : raws[t]) b &= 1;
      ti.raw = raws[t].data();
      ti.raw_size = raws[t].size();
    }
    inputs.push_back(ti);
  }

  std::vector<uint8_t> file, file2;
  wopt.threads = 1;
  const Status ws = write_container(inputs, wopt, &file);
  if (!ws.ok()) std::fprintf(stderr, "write_container: %s\n", ws.message().c_str());
  FUZZ_REQUIRE(ws.ok());
  wopt.threads = 2;
  FUZZ_REQUIRE(write_container(inputs, wopt, &file2).ok());
  FUZZ_REQUIRE(file == file2);

  ContainerReader r;
  FUZZ_REQUIRE(ContainerReader::open_memory(file.data(), file.size(), &r).ok());
  FUZZ_REQUIRE(r.tensor_count() == ntensors);
  FUZZ_REQUIRE(r.verify_checksums().ok());
  std::vector<std::vector<uint8_t>> expected(ntensors);
  for (unsigned t = 0; t < ntensors; ++t) {
    const TensorInput& ti = inputs[t];
    const TensorInfo& info = r.tensor(t);
    FUZZ_REQUIRE(info.name == ti.name && info.dtype == ti.dtype && info.shape == ti.shape &&
                 info.storage == ti.storage);
    std::vector<uint8_t> out(info.output_bytes());
    FUZZ_REQUIRE(r.decode(t, out.data(), out.size(), 2).ok());
    if (ti.storage == Storage::kRaw) {
      FUZZ_REQUIRE(out == raws[t]);
    } else if (ti.storage == Storage::kAlias) {
      FUZZ_REQUIRE(out == expected[ti.alias_of]);
    } else {
      std::vector<int32_t> lv(levels[t].size());
      FUZZ_REQUIRE(r.decode_levels(t, lv.data(), lv.size(), 1).ok());
      FUZZ_REQUIRE(lv == levels[t]);
      if (ti.method != QuantMethod::kTrellis) {
        for (size_t i = 0; i < lv.size(); ++i) {
          const double v = double(lv[i]) * ti.step;
          uint8_t want[8];
          size_t n = 0;
          if (ti.dtype == DType::kFloat64) {
            std::memcpy(want, &v, 8);
            n = 8;
          } else if (ti.dtype == DType::kFloat32) {
            const float f = float(v);
            std::memcpy(want, &f, 4);
            n = 4;
          } else {
            const uint16_t h = ti.dtype == DType::kFloat16 ? float_to_half_bits(float(v))
                                                           : float_to_bfloat16_bits(float(v));
            std::memcpy(want, &h, 2);
            n = 2;
          }
          FUZZ_REQUIRE(std::memcmp(out.data() + i * n, want, n) == 0);
        }
      }
    }
    expected[t] = out;
  }

  // One changed byte, or a cut, never passes unnoticed.
  auto rejected = [](const std::vector<uint8_t>& f) {
    ContainerReader rr;
    if (!ContainerReader::open_memory(f.data(), f.size(), &rr).ok()) return true;
    std::vector<std::vector<uint8_t>> bufs(rr.tensor_count());
    std::vector<void*> outs;
    std::vector<size_t> sizes;
    for (size_t k = 0; k < rr.tensor_count(); ++k) {
      bufs[k].resize(rr.tensor(k).output_bytes() + 1);
      outs.push_back(bufs[k].data());
      sizes.push_back(bufs[k].size() - 1);
    }
    const Status s = rr.decode_all(outs, sizes, 1);
    return !s.ok() && s.is_format_error();
  };
  std::vector<uint8_t> bad(file);
  const uint8_t flip = in.u8();
  bad[in.u16() % bad.size()] ^= uint8_t(flip ? flip : 1);
  FUZZ_REQUIRE(rejected(bad));
  std::vector<uint8_t> cut(file.begin(), file.begin() + (in.u16() % file.size()));
  FUZZ_REQUIRE(rejected(cut));
#else
  (void)data;
  (void)size;
#endif
  return 0;
}
