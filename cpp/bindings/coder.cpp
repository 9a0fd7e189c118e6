// Bindings of the level coder (nnpress/cabac/level_coder.h).
#include <cstring>

#include "common.h"
#include "nnpress/cabac/level_coder.h"

namespace nnpress::bindings {
namespace {

using Levels = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

py::array_t<int32_t> decode_stream(py::buffer data, uint64_t max_elements) {
  py::buffer_info buf = data.request();
  const auto* p = static_cast<const uint8_t*>(buf.ptr);
  const size_t size = size_t(buf.size * buf.itemsize);
  LevelStreamInfo info;
  DecodeLimits limits;
  limits.max_elements = max_elements;
  check(read_level_stream_info(p, size, &info, limits));
  std::vector<py::ssize_t> shape(info.shape.begin(), info.shape.end());
  py::array_t<int32_t> out(shape);
  int32_t* dst = out.mutable_data();
  Status s;
  {
    py::gil_scoped_release release;
    s = decode_level_stream(p, size, info, dst, info.count);
  }
  check(s);
  return out;
}

}  // namespace
}  // namespace nnpress::bindings

NNPRESS_BINDING(coder) {
  using namespace nnpress;
  using namespace nnpress::bindings;
  m.def("decode_levels", &decode_stream, py::arg("data"), py::arg("max_elements") = DecodeLimits().max_elements,
        "Decode a framed level stream (bytes-like) into an int32 array of its stored shape.");
  m.def(
      "level_stream_info",
      [](py::buffer data) {
        py::buffer_info buf = data.request();
        LevelStreamInfo info;
        check(read_level_stream_info(static_cast<const uint8_t*>(buf.ptr), size_t(buf.size * buf.itemsize), &info));
        py::dict d;
        d["shape"] = py::tuple(py::cast(info.shape));
        d["count"] = info.count;
        d["unary_len"] = info.params.unary_len;
        d["eg_order"] = info.params.eg_order;
        d["payload_bytes"] = info.payload_size;
        return d;
      },
      py::arg("data"), "Header fields of a framed level stream (checks the checksum, decodes nothing).");
#ifdef NNPRESS_WITH_ENCODER
  m.def(
      "encode_levels",
      [](Levels levels, std::vector<uint64_t> shape) {
        const int32_t* p = levels.data();
        const uint64_t n = uint64_t(levels.size());
        std::vector<uint8_t> out;
        Status s;
        {
          py::gil_scoped_release release;
          s = encode_level_stream(p, n, shape, &out);
        }
        check(s);
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
      },
      py::arg("levels"), py::arg("shape"),
      "Encode C-contiguous int32 levels (any layout of `shape`'s elements) as a framed level stream.");
  m.def(
      "estimate_bits",
      [](Levels levels, std::vector<uint64_t> shape) {
        const int32_t* p = levels.data();
        const uint64_t n = uint64_t(levels.size());
        py::gil_scoped_release release;
        return estimate_level_stream_bits(p, n, shape);
      },
      py::arg("levels"), py::arg("shape"), "Bits the coder's contexts predict for the levels (payload only).");
#endif
}
