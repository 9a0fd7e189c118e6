// Bindings of the .nnp reader/writer (nnpress/format/container.h). Thin wrappers: Python
// (python/nnpress/container.py) allocates outputs and maps names to codes.
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"
#include "nnpress/format/container.h"
#include "nnpress/shape.h"

namespace nnpress::bindings {
namespace {

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
    d["channel_scales"] = !t.has_channel_scales()   ? py::object(py::none())
                          : t.col_scale_exp.empty() ? py::object(py::str("rows"))
                          : t.row_scale_exp.empty() ? py::object(py::str("cols"))
                                                    : py::object(py::str("rows+cols"));
  }
  if (t.storage == Storage::kAlias) d["alias_of"] = py::str(r.tensor(t.alias_of).name);
  return d;
}

// A buffer's info, checked to be C-contiguous (the C++ side reads or writes its bytes in order from
// the pointer, which stays valid while the object it came from is alive).
py::buffer_info contiguous(const py::buffer& b, const std::string& what, bool writable = false) {
  py::buffer_info info = b.request(writable);
  py::ssize_t expect = info.itemsize;
  for (py::ssize_t k = info.ndim; k-- > 0;) {
    if (info.shape[k] != 1 && info.strides[k] != expect) throw py::value_error(what + " must be C-contiguous");
    expect *= info.shape[k];
  }
  return info;
}

// A writable, C-contiguous output buffer and its size in bytes.
void* writable(const py::buffer& b, size_t* bytes, py::buffer_info* keep = nullptr) {
  py::buffer_info info = contiguous(b, "output buffer", true);
  *bytes = size_t(info.size) * size_t(info.itemsize);
  void* p = info.ptr;
  if (keep) *keep = std::move(info);
  return p;
}

#ifdef NNPRESS_WITH_ENCODER
// A TensorInput plus the Python objects its pointers point into (kept alive with it).
struct PyTensorInput {
  TensorInput in;
  py::object keep_levels, keep_raw, keep_row_exp, keep_col_exp;
};

PyTensorInput make_tensor_input(std::string name, DType dtype, TensorRole role, Storage storage,
                                std::vector<uint64_t> shape, py::object levels, py::object raw, QuantMethod method,
                                double step, double lam, uint32_t alias_of, uint64_t rows_per_block, int unary_len,
                                int eg_order, py::object row_scale_exp, py::object col_scale_exp) {
  PyTensorInput t;
  TensorInput& in = t.in;
  const std::string what = "TensorInput '" + name + "'";
  in.name = std::move(name);
  in.dtype = dtype;
  in.role = role;
  in.storage = storage;
  in.shape = std::move(shape);
  in.method = method;
  in.step = step;
  in.lambda = lam;
  in.alias_of = alias_of;
  in.rows_per_block = rows_per_block;
  in.unary_len = unary_len;
  in.eg_order = eg_order;
  uint64_t count = 1, rows = 0, cols = 0;
  for (uint64_t d : in.shape) count = d == 0 || count <= UINT64_MAX / d ? count * d : UINT64_MAX;
  rows_cols_of(in.shape, &rows, &cols);
  if (!levels.is_none()) {
    py::buffer_info b = contiguous(levels.cast<py::buffer>(), what + ": levels");
    if (b.format != py::format_descriptor<int32_t>::format() || b.itemsize != 4)
      throw py::type_error(what + ": levels must be int32");
    bool same_shape = uint64_t(b.size) == count && size_t(b.ndim) == in.shape.size();
    for (py::ssize_t k = 0; same_shape && k < b.ndim; ++k) same_shape = uint64_t(b.shape[k]) == in.shape[size_t(k)];
    if (!same_shape) throw py::value_error(what + ": levels do not have the tensor's shape");
    in.levels = static_cast<const int32_t*>(b.ptr);
    t.keep_levels = levels;
  }
  if (!raw.is_none()) {
    py::buffer_info b = contiguous(raw.cast<py::buffer>(), what + ": raw data");
    in.raw = b.ptr;
    in.raw_size = uint64_t(b.size) * uint64_t(b.itemsize);
    t.keep_raw = raw;
  }
  for (int which = 0; which < 2; ++which) {
    const py::object& e = which == 0 ? row_scale_exp : col_scale_exp;
    if (e.is_none()) continue;
    const uint64_t need = which == 0 ? rows : cols;
    const std::string ewhat = what + (which == 0 ? ": row_scale_exp" : ": col_scale_exp");
    py::buffer_info b = contiguous(e.cast<py::buffer>(), ewhat);
    if (b.format != py::format_descriptor<int8_t>::format() || b.itemsize != 1 || b.ndim != 1)
      throw py::type_error(ewhat + " must be 1-D int8");
    if (uint64_t(b.size) != need)
      throw py::value_error(ewhat + " needs " + std::to_string(need) + " values, got " + std::to_string(b.size));
    (which == 0 ? in.row_scale_exp : in.col_scale_exp) = static_cast<const int8_t*>(b.ptr);
    (which == 0 ? t.keep_row_exp : t.keep_col_exp) = e;
  }
  return t;
}

// A ContainerFileWriter for Python: one call at a time (the mutex is taken with the GIL released,
// so a thread waiting for it never holds the GIL the running call needs to return).
struct PyFileWriter {
  ContainerFileWriter writer;
  std::mutex mu;

  template <class Fn>
  auto locked(Fn&& fn) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mu);
    return fn(writer);
  }
};
#endif

}  // namespace
}  // namespace nnpress::bindings

NNPRESS_BINDING(container) {
  using namespace nnpress;
  using namespace nnpress::bindings;

  py::enum_<DType> dtype_enum(m, "DType", "Element type of a stored tensor (docs/FORMAT.md).");
  for (int c = 1; c <= 13; ++c) dtype_enum.value(dtype_name(DType(c)), DType(c));
  py::enum_<TensorRole> role_enum(m, "TensorRole", "What a tensor is in its model.");
  for (int c = 0; c <= 5; ++c) role_enum.value(role_name(TensorRole(c)), TensorRole(c));
  py::enum_<Storage>(m, "Storage", "How a tensor is stored.")
      .value("raw", Storage::kRaw)
      .value("quantized", Storage::kQuantized)
      .value("alias", Storage::kAlias);
  py::enum_<QuantMethod> method_enum(m, "QuantMethod", "Quantizer / reconstruction rule (nnpress/quant/dequantize.h).");
  for (int c = 0; c <= 2; ++c) method_enum.value(method_name(QuantMethod(c)), QuantMethod(c));
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
      .def_property_readonly(
          "version", [](const PyReader& r) { return py::make_tuple(kContainerVersionMajor, r.reader.version_minor()); })
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
          [](const PyReader& r, size_t index, py::buffer out, unsigned threads) {
            size_t bytes;
            py::buffer_info info;
            void* raw = writable(out, &bytes, &info);
            if (info.format != py::format_descriptor<int32_t>::format())
              throw py::type_error("decode_levels_into: the output must be int32");
            int32_t* p = static_cast<int32_t*>(raw);
            const uint64_t n = uint64_t(bytes / sizeof(int32_t));
            Status s;
            {
              py::gil_scoped_release release;
              s = r.reader.decode_levels(index, p, n, threads);
            }
            check(s);
          },
          py::arg("index"), py::arg("out"), py::arg("threads"))
      .def(
          "decode_levels_rows_into",
          [](const PyReader& r, size_t index, uint64_t row_begin, uint64_t row_count, py::buffer out,
             unsigned threads) {
            size_t bytes;
            py::buffer_info info;
            void* raw = writable(out, &bytes, &info);
            if (info.format != py::format_descriptor<int32_t>::format())
              throw py::type_error("decode_levels_rows_into: the output must be int32");
            int32_t* p = static_cast<int32_t*>(raw);
            const uint64_t n = uint64_t(bytes / sizeof(int32_t));
            Status s;
            {
              py::gil_scoped_release release;
              s = r.reader.decode_levels_rows(index, row_begin, row_count, p, n, threads);
            }
            check(s);
          },
          py::arg("index"), py::arg("row_begin"), py::arg("row_count"), py::arg("out"), py::arg("threads"),
          "Levels of rows [row_begin, row_begin + row_count) of a quantized tensor's rows x cols view.")
      .def(
          "level_row_blocks",
          [](const PyReader& r, size_t index) {
            if (index >= r.reader.tensor_count()) throw py::index_error("tensor index out of range");
            const TensorInfo& req = r.reader.tensor(index);
            const TensorInfo& t = req.storage == Storage::kAlias ? r.reader.tensor(req.alias_of) : req;
            py::list out;
            if (t.storage == Storage::kQuantized)
              for (const ChunkRef& ch : t.chunks) out.append(py::make_tuple(ch.first_row, ch.rows));
            return out;
          },
          py::arg("index"),
          "(first row, rows) of each chunk of a quantized tensor (its independently coded row blocks); [] "
          "for a raw tensor.")
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
  py::class_<PyTensorInput>(m, "TensorInput",
                            "One tensor for write_nnp (TensorInput in nnpress/format/container.h). Arrays are "
                            "referenced, not copied: the object keeps them alive.")
      .def(py::init(&make_tensor_input), py::kw_only(), py::arg("name"), py::arg("dtype"), py::arg("role"),
           py::arg("storage"), py::arg("shape"), py::arg("levels") = py::none(), py::arg("raw") = py::none(),
           py::arg("method") = QuantMethod::kNearest, py::arg("step") = 0.0, py::arg("lam") = 0.0,
           py::arg("alias_of") = 0, py::arg("rows_per_block") = 0, py::arg("unary_len") = -1, py::arg("eg_order") = -1,
           py::arg("row_scale_exp") = py::none(), py::arg("col_scale_exp") = py::none())
      .def_property_readonly("name", [](const PyTensorInput& t) { return t.in.name; })
      .def_property_readonly("dtype", [](const PyTensorInput& t) { return t.in.dtype; })
      .def_property_readonly("role", [](const PyTensorInput& t) { return t.in.role; })
      .def_property_readonly("storage", [](const PyTensorInput& t) { return t.in.storage; })
      .def_property_readonly("shape", [](const PyTensorInput& t) { return py::tuple(py::cast(t.in.shape)); })
      .def_property_readonly("method", [](const PyTensorInput& t) { return t.in.method; })
      .def_property_readonly("step", [](const PyTensorInput& t) { return t.in.step; })
      .def_property_readonly("lam", [](const PyTensorInput& t) { return t.in.lambda; })
      .def_property_readonly("rows_per_block", [](const PyTensorInput& t) { return t.in.rows_per_block; })
      .def_property_readonly("unary_len", [](const PyTensorInput& t) { return t.in.unary_len; })
      .def_property_readonly("eg_order", [](const PyTensorInput& t) { return t.in.eg_order; })
      .def("__repr__", [](const PyTensorInput& t) {
        return "<TensorInput '" + t.in.name + "' " + dtype_name(t.in.dtype) + " " +
               (t.in.storage == Storage::kQuantized ? "quantized"
                : t.in.storage == Storage::kRaw     ? "raw"
                                                    : "alias") +
               ">";
      });

  py::class_<WriterOptions>(m, "WriterOptions", "Options of write_nnp (WriterOptions in nnpress/format/container.h).")
      .def(py::init<>())
      .def_readwrite("block_elements", &WriterOptions::block_elements)
      .def_readwrite("threads", &WriterOptions::threads)
      .def_readwrite("size_tolerance", &WriterOptions::size_tolerance)
      .def_readwrite("metadata", &WriterOptions::metadata)
      .def_readwrite("verify", &WriterOptions::verify);

  m.def(
      "write_nnp",
      [](const std::vector<const PyTensorInput*>& tensors, const WriterOptions& options) {
        std::vector<TensorInput> in;
        in.reserve(tensors.size());
        for (const PyTensorInput* t : tensors) {
          if (t == nullptr) throw py::type_error("write_nnp: None in the tensor list");
          in.push_back(t->in);
        }
        std::vector<uint8_t> out;
        WriteResult res;
        Status s;
        {
          py::gil_scoped_release release;
          s = write_container(in, options, &out, &res);
        }
        check(s);
        return py::make_tuple(py::bytes(reinterpret_cast<const char*>(out.data()), out.size()),
                              py::cast(res.stored_bytes), res.table_bytes);
      },
      py::arg("tensors"), py::arg("options"),
      "Assemble a .nnp file in memory (options.verify: and check that it parses); returns (bytes, stored bytes per "
      "tensor, table bytes).");

  py::class_<PyFileWriter>(
      m, "NnpFileWriter",
      "Writes a .nnp file tensor by tensor (ContainerFileWriter in nnpress/format/container.h): a temporary file "
      "next to `path`, renamed onto it by finish(). The bytes equal write_nnp's for the same tensors in the same "
      "order. As a context manager, leaving the block without finish() — by an exception or not — aborts: the "
      "temporary file is removed and an existing file at `path` is left untouched. I/O errors raise OSError "
      "(the temporary file is then gone), bad inputs ValueError/TypeError, and a failed options.verify "
      "FormatError.")
      .def(py::init([](const std::string& path, const WriterOptions& options) {
             auto w = std::make_unique<PyFileWriter>();
             check(w->locked([&](ContainerFileWriter& f) { return f.open(path, options); }));
             return w;
           }),
           py::arg("path"), py::arg("options"))
      .def(
          "add",
          [](PyFileWriter& w, const PyTensorInput& t) {
            check(w.locked([&](ContainerFileWriter& f) { return f.add(t.in); }));
          },
          py::arg("t"),
          "Code one tensor's row blocks (on options.threads threads, GIL released) and append them. An alias may "
          "refer only to a tensor added before. A refused input writes nothing and the writer stays usable.")
      .def(
          "add_many",
          [](PyFileWriter& w, const std::vector<const PyTensorInput*>& ts) {
            std::vector<TensorInput> in;
            in.reserve(ts.size());
            for (const PyTensorInput* t : ts) {
              if (t == nullptr) throw py::type_error("add_many: None in the tensor list");
              in.push_back(t->in);
            }
            check(w.locked([&](ContainerFileWriter& f) { return f.add(in); }));
          },
          py::arg("ts"),
          "Several tensors in order, their row blocks coded on one pool (for many small tensors); validated as a "
          "whole first: one refused input refuses the batch and writes nothing.")
      .def(
          "finish",
          [](PyFileWriter& w) {
            uint64_t size = 0;
            check(w.locked([&](ContainerFileWriter& f) { return f.finish(&size); }));
            return size;
          },
          "Write the table and header, (options.verify: read the file back and check it), fsync, rename onto the "
          "path; returns the file's size in bytes.")
      .def(
          "abort", [](PyFileWriter& w) { w.locked([](ContainerFileWriter& f) { f.abort(); }); },
          "Remove the temporary file (nothing happens after finish() or a second abort()).")
      .def_property_readonly(
          "tensor_count",
          [](PyFileWriter& w) { return w.locked([](ContainerFileWriter& f) { return f.tensor_count(); }); })
      .def_property_readonly(
          "bytes_written",
          [](PyFileWriter& w) { return w.locked([](ContainerFileWriter& f) { return f.bytes_written(); }); },
          "Bytes in the file so far (the whole file after finish()).")
      .def_property_readonly(
          "stored_bytes",
          [](PyFileWriter& w) { return w.locked([](ContainerFileWriter& f) { return f.stored_bytes(); }); },
          "Chunk bytes of each tensor added so far, in order.")
      .def_property_readonly(
          "is_open", [](PyFileWriter& w) { return w.locked([](ContainerFileWriter& f) { return f.is_open(); }); },
          "True until finish(), abort() or an I/O error.")
      .def(
          "__enter__", [](PyFileWriter& w) -> PyFileWriter& { return w; }, py::return_value_policy::reference)
      .def(
          "__exit__",
          [](PyFileWriter& w, const py::object&, const py::object&, const py::object&) {
            w.locked([](ContainerFileWriter& f) { f.abort(); });
            return false;
          },
          py::arg("exc_type"), py::arg("exc_value"), py::arg("traceback"),
          "Abort unless finish() has run (the exception, if any, propagates).");
#endif
}
