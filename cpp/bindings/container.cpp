// Bindings of the .nnp reader/writer (nnpress/format/container.h). Thin wrappers: Python
// (python/nnpress/container.py) allocates outputs and maps names to codes.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "nnpress/format/container.h"

namespace nnpress::bindings {
namespace {

struct PyReader {
  ContainerReader reader;
};

ReaderOptions make_options(uint64_t max_elements, uint64_t max_total_elements) {
  ReaderOptions o;
  o.limits.max_elements = max_elements;
  o.max_total_elements = max_total_elements;
  return o;
}

py::dict tensor_dict(const ContainerReader& r, size_t i) {
  const TensorInfo& t = r.tensor(i);
  py::dict d;
  d["index"] = i;
  d["name"] = py::str(t.name);
  d["dtype"] = dtype_name(t.dtype);
  d["role"] = role_name(t.role);
  d["storage"] = t.storage == Storage::kRaw ? "raw" : t.storage == Storage::kQuantized ? "quantized" : "alias";
  d["shape"] = py::tuple(py::cast(t.shape));
  d["count"] = t.count;
  d["stored_bytes"] = t.stored_bytes();
  d["output_bytes"] = t.output_bytes();
  d["chunks"] = t.chunks.size();
  if (t.storage == Storage::kQuantized) {
    d["method"] = method_name(t.method);
    d["step"] = t.step;
    d["lambda"] = t.lambda;
    d["unary_len"] = t.params.unary_len;
    d["eg_order"] = t.params.eg_order;
    d["rows_per_block"] = t.rows_per_block;
    d["channel_scales"] = !t.has_channel_scales()        ? py::object(py::none())
                          : t.col_scale_exp.empty()     ? py::object(py::str("rows"))
                          : t.row_scale_exp.empty()     ? py::object(py::str("cols"))
                                                        : py::object(py::str("rows+cols"));
  }
  if (t.storage == Storage::kAlias) d["alias_of"] = py::str(r.tensor(t.alias_of).name);
  return d;
}

void* writable(py::buffer& b, size_t* bytes) {
  py::buffer_info info = b.request(true);
  *bytes = size_t(info.size) * size_t(info.itemsize);
  return info.ptr;
}

}  // namespace
}  // namespace nnpress::bindings

NNPRESS_BINDING(container) {
  using namespace nnpress;
  using namespace nnpress::bindings;

  py::dict dtypes, roles, storages, methods;
  for (int c = 1; c <= 13; ++c) dtypes[dtype_name(DType(c))] = c;
  for (int c = 0; c <= 5; ++c) roles[role_name(TensorRole(c))] = c;
  for (int c = 0; c <= 2; ++c) methods[method_name(QuantMethod(c))] = c;
  storages["raw"] = 0;
  storages["quantized"] = 1;
  storages["alias"] = 2;
  m.attr("NNP_DTYPES") = dtypes;
  m.attr("NNP_ROLES") = roles;
  m.attr("NNP_STORAGES") = storages;
  m.attr("NNP_METHODS") = methods;
  m.attr("NNP_VERSION") = py::make_tuple(kContainerVersionMajor, kContainerVersionMinor);

  py::class_<PyReader>(m, "NnpReader", "A parsed .nnp file (see nnpress/format/container.h).")
      .def_static(
          "from_file",
          [](const std::string& path, uint64_t max_elements, uint64_t max_total) {
            auto r = std::make_unique<PyReader>();
            Status s;
            {
              py::gil_scoped_release release;
              s = ContainerReader::open_file(path, &r->reader, make_options(max_elements, max_total));
            }
            check(s);
            return r;
          },
          py::arg("path"), py::arg("max_elements"), py::arg("max_total_elements"))
      .def_static(
          "from_bytes",
          [](py::buffer data, uint64_t max_elements, uint64_t max_total) {
            py::buffer_info info = data.request();
            const auto* p = static_cast<const uint8_t*>(info.ptr);
            std::vector<uint8_t> bytes(p, p + size_t(info.size) * size_t(info.itemsize));
            auto r = std::make_unique<PyReader>();
            Status s;
            {
              py::gil_scoped_release release;
              s = ContainerReader::open_bytes(std::move(bytes), &r->reader, make_options(max_elements, max_total));
            }
            check(s);
            return r;
          },
          py::arg("data"), py::arg("max_elements"), py::arg("max_total_elements"))
      .def("__len__", [](const PyReader& r) { return r.reader.tensor_count(); })
      .def_property_readonly("metadata", [](const PyReader& r) { return py::str(r.reader.metadata()); })
      .def_property_readonly("file_size", [](const PyReader& r) { return r.reader.file_size(); })
      .def_property_readonly("version", [](const PyReader& r) {
        return py::make_tuple(kContainerVersionMajor, r.reader.version_minor());
      })
      .def("tensors",
           [](const PyReader& r) {
             py::list l;
             for (size_t i = 0; i < r.reader.tensor_count(); ++i) l.append(tensor_dict(r.reader, i));
             return l;
           })
      .def(
          "decode_into",
          [](const PyReader& r, size_t index, py::buffer out, unsigned threads) {
            size_t bytes;
            void* p = writable(out, &bytes);
            Status s;
            {
              py::gil_scoped_release release;
              s = r.reader.decode(index, p, bytes, threads);
            }
            check(s);
          },
          py::arg("index"), py::arg("out"), py::arg("threads"))
      .def(
          "decode_all_into",
          [](const PyReader& r, py::list outs, unsigned threads) {
            const size_t n = r.reader.tensor_count();
            if (size_t(py::len(outs)) != n) throw py::value_error("decode_all_into: need one entry per tensor");
            std::vector<void*> ptrs(n, nullptr);
            std::vector<size_t> sizes(n, 0);
            std::vector<py::buffer> keep;
            for (size_t i = 0; i < n; ++i) {
              py::object o = outs[i];
              if (o.is_none()) continue;
              py::buffer b = o.cast<py::buffer>();
              ptrs[i] = writable(b, &sizes[i]);
              if (ptrs[i] == nullptr) ptrs[i] = &sizes[i];  // empty buffer: any non-null pointer
              keep.push_back(b);
            }
            Status s;
            {
              py::gil_scoped_release release;
              s = r.reader.decode_all(ptrs, sizes, threads);
            }
            check(s);
          },
          py::arg("outs"), py::arg("threads"))
      .def(
          "decode_levels_into",
          [](const PyReader& r, size_t index, py::array_t<int32_t, py::array::c_style> out, unsigned threads) {
            int32_t* p = out.mutable_data();
            const uint64_t n = uint64_t(out.size());
            Status s;
            {
              py::gil_scoped_release release;
              s = r.reader.decode_levels(index, p, n, threads);
            }
            check(s);
          },
          py::arg("index"), py::arg("out"), py::arg("threads"))
      .def(
          "channel_scale_exps",
          [](const PyReader& r, size_t index) {
            if (index >= r.reader.tensor_count()) throw py::index_error("tensor index out of range");
            const TensorInfo& t = r.reader.tensor(index);
            auto arr = [](const std::vector<int8_t>& v) -> py::object {
              if (v.empty()) return py::none();
              py::array_t<int8_t> a(v.size());
              std::memcpy(a.mutable_data(), v.data(), v.size());
              return a;
            };
            return py::make_tuple(arr(t.row_scale_exp), arr(t.col_scale_exp));
          },
          py::arg("index"), "(row exponents, column exponents) of a quantized tensor, int8 arrays or None.")
      .def("verify_checksums", [](const PyReader& r) {
        Status s;
        {
          py::gil_scoped_release release;
          s = r.reader.verify_checksums();
        }
        check(s);
      });

  m.def(
      "nnp_validate",
      [](py::buffer data) {
        py::buffer_info info = data.request();
        ContainerReader r;
        Status s;
        {
          py::gil_scoped_release release;
          s = ContainerReader::open_memory(static_cast<const uint8_t*>(info.ptr),
                                           size_t(info.size) * size_t(info.itemsize), &r);
          if (s.ok()) s = r.verify_checksums();
        }
        check(s);
      },
      py::arg("data"), "Parse a .nnp file held in a buffer (no copy) and check every CRC; raises on bad data.");

#ifdef NNPRESS_WITH_ENCODER
  // specs: list of (name, dtype, role, storage, shape, data, method, step, lambda, alias_of,
  // rows_per_block, unary_len, eg_order, row_scale_exp, col_scale_exp), codes
  // as in NNP_*; data is an int32 C-contiguous array (quantized), a bytes-like (raw) or None.
  m.def(
      "nnp_write",
      [](py::list specs, uint64_t block_elements, unsigned threads, const std::string& metadata,
         double size_tolerance) {
        std::vector<TensorInput> in;
        std::vector<py::buffer_info> keep;
        keep.reserve(3 * py::len(specs));
        for (py::handle h : specs) {
          py::tuple t = h.cast<py::tuple>();
          if (t.size() != 15) throw py::value_error("nnp_write: each spec has 15 fields");
          TensorInput ti;
          ti.name = t[0].cast<std::string>();
          ti.dtype = DType(t[1].cast<int>());
          ti.role = TensorRole(t[2].cast<int>());
          ti.storage = Storage(t[3].cast<int>());
          ti.shape = t[4].cast<std::vector<uint64_t>>();
          ti.method = QuantMethod(t[6].cast<int>());
          ti.step = t[7].cast<double>();
          ti.lambda = t[8].cast<double>();
          ti.alias_of = t[9].cast<uint32_t>();
          ti.rows_per_block = t[10].cast<uint64_t>();
          ti.unary_len = t[11].cast<int>();
          ti.eg_order = t[12].cast<int>();
          for (int which = 0; which < 2; ++which) {
            py::object e = t[13 + which];
            if (e.is_none()) continue;
            keep.push_back(e.cast<py::buffer>().request());
            const py::buffer_info& b = keep.back();
            if (b.format != py::format_descriptor<int8_t>::format() || b.itemsize != 1 || b.ndim != 1)
              throw py::type_error("nnp_write: channel scale exponents must be 1-D int8");
            uint64_t r = 0, c = 0;
            rows_cols_of(ti.shape, &r, &c);
            if (uint64_t(b.size) != (which == 0 ? r : c) || (b.size > 1 && b.strides[0] != 1))
              throw py::value_error("nnp_write: channel scale exponents of '" + ti.name + "' need " +
                                    std::to_string(which == 0 ? r : c) + " contiguous values");
            (which == 0 ? ti.row_scale_exp : ti.col_scale_exp) = static_cast<const int8_t*>(b.ptr);
          }
          if (!t[5].is_none()) {
            keep.push_back(t[5].cast<py::buffer>().request());
            const py::buffer_info& b = keep.back();
            const uint64_t nbytes = uint64_t(b.size) * uint64_t(b.itemsize);
            bool contiguous = true;
            py::ssize_t expect = b.itemsize;
            for (py::ssize_t k = b.ndim; k-- > 0;) {
              if (b.shape[k] != 1 && b.strides[k] != expect) contiguous = false;
              expect *= b.shape[k];
            }
            if (!contiguous) throw py::value_error("nnp_write: data of '" + ti.name + "' must be C-contiguous");
            if (ti.storage == Storage::kQuantized) {
              if (b.format != py::format_descriptor<int32_t>::format() || b.itemsize != 4)
                throw py::type_error("nnp_write: levels must be int32");
              uint64_t n = 1;
              for (uint64_t d : ti.shape) n *= d;
              if (uint64_t(b.size) != n) throw py::value_error("nnp_write: levels do not match the shape of '" + ti.name + "'");
              ti.levels = static_cast<const int32_t*>(b.ptr);
            } else {
              ti.raw = b.ptr;
              ti.raw_size = nbytes;
            }
          }
          in.push_back(std::move(ti));
        }
        WriterOptions opt;
        opt.block_elements = block_elements;
        opt.threads = threads;
        opt.metadata = metadata;
        opt.size_tolerance = size_tolerance;
        std::vector<uint8_t> out;
        WriteResult res;
        Status s;
        {
          py::gil_scoped_release release;
          s = write_container(in, opt, &out, &res);
        }
        check(s);
        return py::make_tuple(py::bytes(reinterpret_cast<const char*>(out.data()), out.size()),
                              py::cast(res.stored_bytes), res.table_bytes);
      },
      py::arg("specs"), py::arg("block_elements"), py::arg("threads"), py::arg("metadata"),
      py::arg("size_tolerance"),
      "Assemble a .nnp file in memory; returns (bytes, stored bytes per tensor, table bytes).");
#endif
}
