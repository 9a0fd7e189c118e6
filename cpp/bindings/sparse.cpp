// Bindings of the CER / CSER / dense-codebook matrices and kernels (nnpress/sparse/*.h, nnpress/cpu.h).
// Arrays handed to Python are read-only views kept alive by the matrix object.
#include <optional>
#include <string>

#include "common.h"
#include "nnpress/cpu.h"
#include "nnpress/sparse/kernels.h"
#include "nnpress/sparse/matrix.h"

namespace nnpress::bindings {
namespace {

using sparse::CodebookMatrix;
using sparse::Format;
using sparse::RowGroupMatrix;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using U32 = py::array_t<uint32_t, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

Format parse_format(const std::string& name) {
  if (name == "cer") return Format::kCER;
  if (name == "cser") return Format::kCSER;
  if (name == "codebook") return Format::kCodebook;
  throw Error(invalid_argument("unknown format '" + name + "' (expected cer, cser or codebook)"));
}

sparse::KernelOptions options(const std::optional<std::string>& isa, unsigned threads) {
  sparse::KernelOptions o;
  o.threads = threads;
  o.isa = isa_option(isa);
  return o;
}

void check_2d(const py::array& a, const char* what) {
  if (a.ndim() != 2) throw Error(invalid_argument(std::string(what) + " must be a 2-D array"));
  if (a.shape(0) > 0xFFFFFFFFll || a.shape(1) > 0xFFFFFFFFll)
    throw Error(invalid_argument(std::string(what) + ": dimension too large"));
}

template <class T>
py::array view(const std::vector<T>& v, py::handle owner) {
  py::array_t<T> a({py::ssize_t(v.size())}, {py::ssize_t(sizeof(T))}, v.data(), owner);
  py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return a;
}

constexpr const char* kProductDoc =
    "y = M @ x for x of shape (cols,) or (cols, batch); GIL released. x must already be a C-contiguous float32\n"
    "ndarray, and threads a non-negative int: anything else selects the second overload, which returns None\n"
    "(the Python wrapper then checks and converts; a failed overload match would build a TypeError message\n"
    "holding repr(x), which cost more than the product for large lists).";

// y = M x (x 1-D, cols) or Y = M X (X 2-D, cols x batch).
template <class M>
py::array product(const M& m, const F32& x, const std::optional<std::string>& isa, unsigned threads) {
  const sparse::KernelOptions o = options(isa, threads);
  Status s;
  if (x.ndim() == 1) {
    py::array_t<float> y(py::ssize_t(m.rows()));
    float* py_ = y.mutable_data();
    const float* px = x.data();
    {
      py::gil_scoped_release release;
      s = sparse::matvec(m, px, size_t(x.size()), py_, size_t(m.rows()), o);
    }
    check(s);
    return y;
  }
  if (x.ndim() != 2) throw Error(invalid_argument("operand must be 1-D (cols) or 2-D (cols x batch)"));
  const size_t batch = size_t(x.shape(1));
  if (size_t(x.shape(0)) != m.cols()) {
    throw Error(
        invalid_argument("operand has " + std::to_string(x.shape(0)) + " rows, expected " + std::to_string(m.cols())));
  }
  py::array_t<float> y({py::ssize_t(m.rows()), py::ssize_t(batch)});
  float* py_ = y.mutable_data();
  const float* px = x.data();
  if (batch == 0) return y;
  {
    py::gil_scoped_release release;
    s = sparse::matmat(m, px, size_t(x.size()), batch, py_, size_t(m.rows()) * batch, o);
  }
  check(s);
  return y;
}

template <class M>
py::array dense_of(const M& m) {
  py::array_t<float> out({py::ssize_t(m.rows()), py::ssize_t(m.cols())});
  m.to_dense(out.mutable_data());
  return out;
}

}  // namespace
}  // namespace nnpress::bindings

NNPRESS_BINDING(sparse) {
  using namespace nnpress;
  using namespace nnpress::bindings;
  using sparse::CodebookMatrix;
  using sparse::RowGroupMatrix;

  py::class_<RowGroupMatrix>(m, "RowGroupMatrix", "CER / CSER matrix (nnpress/sparse/matrix.h); immutable, validated.")
      .def_static(
          "from_dense",
          [](const std::string& format, const F32& w, uint32_t max_values) {
            check_2d(w, "matrix");
            const Format f = parse_format(format);
            RowGroupMatrix out;
            Status s;
            {
              py::gil_scoped_release release;
              s = RowGroupMatrix::from_dense(f, w.data(), uint32_t(w.shape(0)), uint32_t(w.shape(1)), &out, max_values);
            }
            check(s);
            return out;
          },
          py::arg("format"), py::arg("w"), py::arg("max_values") = sparse::kMaxValues)
      .def_static(
          "from_levels",
          [](const std::string& format, const I32& levels, float step) {
            check_2d(levels, "levels");
            const Format f = parse_format(format);
            RowGroupMatrix out;
            Status s;
            {
              py::gil_scoped_release release;
              s = RowGroupMatrix::from_levels(f, levels.data(), uint32_t(levels.shape(0)), uint32_t(levels.shape(1)),
                                              step, &out);
            }
            check(s);
            return out;
          },
          py::arg("format"), py::arg("levels"), py::arg("step"))
      .def_static(
          "from_arrays",
          [](const std::string& format, uint32_t rows, uint32_t cols, const F32& omega, const U32& col,
             const U32& group_ptr, const U32& row_ptr, std::optional<U32> group_value) {
            sparse::RowGroupArrays a;
            a.format = parse_format(format);
            a.rows = rows, a.cols = cols;
            a.omega.assign(omega.data(), omega.data() + omega.size());
            a.col.assign(col.data(), col.data() + col.size());
            a.group_ptr.assign(group_ptr.data(), group_ptr.data() + group_ptr.size());
            a.row_ptr.assign(row_ptr.data(), row_ptr.data() + row_ptr.size());
            if (group_value) a.group_value.assign(group_value->data(), group_value->data() + group_value->size());
            RowGroupMatrix out;
            check(RowGroupMatrix::from_arrays(std::move(a), &out));
            return out;
          },
          py::arg("format"), py::arg("rows"), py::arg("cols"), py::arg("omega"), py::arg("col"), py::arg("group_ptr"),
          py::arg("row_ptr"), py::arg("group_value") = py::none())
      .def_property_readonly("format",
                             [](const RowGroupMatrix& s) { return std::string(sparse::format_name(s.format())); })
      .def_property_readonly("rows", &RowGroupMatrix::rows)
      .def_property_readonly("cols", &RowGroupMatrix::cols)
      .def_property_readonly("nnz", &RowGroupMatrix::nnz)
      .def_property_readonly("num_groups", &RowGroupMatrix::num_groups)
      .def_property_readonly("nbytes", &RowGroupMatrix::nbytes)
      .def_property_readonly("plan_nbytes", &RowGroupMatrix::plan_bytes,
                             "Bytes of the batch-1 kernel plan derived from the arrays (not stored in files)")
      .def_property_readonly("omega",
                             [](py::object self) { return view(self.cast<const RowGroupMatrix&>().omega(), self); })
      .def_property_readonly("col",
                             [](py::object self) {
                               const auto& s = self.cast<const RowGroupMatrix&>();
                               return s.wide() ? view(s.col32(), self) : view(s.col16(), self);
                             })
      .def_property_readonly("group_ptr",
                             [](py::object self) { return view(self.cast<const RowGroupMatrix&>().group_ptr(), self); })
      .def_property_readonly("row_ptr",
                             [](py::object self) { return view(self.cast<const RowGroupMatrix&>().row_ptr(), self); })
      .def_property_readonly("group_value",
                             [](py::object self) -> py::object {
                               const auto& s = self.cast<const RowGroupMatrix&>();
                               if (s.format() != sparse::Format::kCSER) return py::none();
                               return s.group_value8().empty() && s.num_groups() > 0 ? view(s.group_value16(), self)
                                                                                     : view(s.group_value8(), self);
                             })
      .def("to_dense", &dense_of<RowGroupMatrix>)
      .def("product", &product<RowGroupMatrix>, py::arg("x").noconvert(), py::arg("isa") = py::none(),
           py::arg("threads") = 1u, kProductDoc)
      .def(
          "product", [](py::object, py::object, py::object, py::object) { return py::none(); }, py::arg("x"),
          py::arg("isa") = py::none(), py::arg("threads") = 1u);

  py::class_<CodebookMatrix>(m, "CodebookMatrix",
                             "Dense-codebook matrix: 4-bit value index per weight, 16-entry table.")
      .def_static(
          "from_dense",
          [](const F32& w) {
            check_2d(w, "matrix");
            CodebookMatrix out;
            Status s;
            {
              py::gil_scoped_release release;
              s = CodebookMatrix::from_dense(w.data(), uint32_t(w.shape(0)), uint32_t(w.shape(1)), &out);
            }
            check(s);
            return out;
          },
          py::arg("w"))
      .def_static(
          "from_levels",
          [](const I32& levels, float step) {
            check_2d(levels, "levels");
            CodebookMatrix out;
            Status s;
            {
              py::gil_scoped_release release;
              s = CodebookMatrix::from_levels(levels.data(), uint32_t(levels.shape(0)), uint32_t(levels.shape(1)), step,
                                              &out);
            }
            check(s);
            return out;
          },
          py::arg("levels"), py::arg("step"))
      .def_static(
          "from_arrays",
          [](uint32_t rows, uint32_t cols, const F32& lut, const U8& packed) {
            CodebookMatrix out;
            check(CodebookMatrix::from_arrays(rows, cols, std::vector<float>(lut.data(), lut.data() + lut.size()),
                                              std::vector<uint8_t>(packed.data(), packed.data() + packed.size()),
                                              &out));
            return out;
          },
          py::arg("rows"), py::arg("cols"), py::arg("lut"), py::arg("packed"))
      .def_property_readonly("rows", &CodebookMatrix::rows)
      .def_property_readonly("cols", &CodebookMatrix::cols)
      .def_property_readonly("num_values", &CodebookMatrix::num_values)
      .def_property_readonly("nbytes", &CodebookMatrix::nbytes)
      .def_property_readonly(
          "lut", [](const CodebookMatrix& s) { return py::array_t<float>(py::ssize_t(s.num_values()), s.lut()); })
      .def_property_readonly("packed",
                             [](py::object self) { return view(self.cast<const CodebookMatrix&>().packed(), self); })
      .def("to_dense", &dense_of<CodebookMatrix>)
      .def("product", &product<CodebookMatrix>, py::arg("x").noconvert(), py::arg("isa") = py::none(),
           py::arg("threads") = 1u, kProductDoc)
      .def(
          "product", [](py::object, py::object, py::object, py::object) { return py::none(); }, py::arg("x"),
          py::arg("isa") = py::none(), py::arg("threads") = 1u);

  m.def(
      "choose_format",
      [](uint32_t rows, uint32_t cols, uint64_t nnz, uint32_t num_values, size_t batch, bool allow_dense) {
        return std::string(sparse::format_name(sparse::choose_format(rows, cols, nnz, num_values, batch, allow_dense)));
      },
      py::arg("rows"), py::arg("cols"), py::arg("nnz"), py::arg("num_values"), py::arg("batch"),
      py::arg("allow_dense") = false);
  m.def("isa_supported", [](const std::string& name) { return isa_supported(*isa_option(name)); }, py::arg("name"));
  m.def("detect_isa", [] { return std::string(isa_name(detect_isa())); });
}
