// Bindings of the integer-level matrices and kernels (nnpress/kernels/levels.h).
#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "nnpress/cpu.h"
#include "nnpress/kernels/levels.h"

namespace nnpress::bindings {
namespace {

using levels::LevelMatrix;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;

levels::LevelKernelOptions kernel_options(const std::optional<std::string>& isa, unsigned threads,
                                          const std::string& activations) {
  levels::LevelKernelOptions o;
  o.threads = threads;
  if (activations == "int16") {
    o.activations = levels::Activations::kInt16;
  } else if (activations != "float32") {
    throw Error(invalid_argument("unknown activations '" + activations + "' (expected float32 or int16)"));
  }
  if (isa) {
    Isa i;
    if (!parse_isa(isa->c_str(), &i))
      throw Error(invalid_argument("unknown ISA '" + *isa + "' (expected scalar, neon, avx2 or avx512)"));
    o.isa = i;
  }
  return o;
}

// A float array of n values (any real dtype; integers and floats are converted to float32).
F32 scales(const py::array& a, size_t n, const char* what) {
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u')
    throw py::type_error(std::string(what) + " must be a real-valued array, not dtype " +
                         std::string(py::str(a.dtype())));
  if (a.ndim() != 1 || size_t(a.shape(0)) != n)
    throw Error(invalid_argument(std::string(what) + " must be 1-D with " + std::to_string(n) + " values"));
  return F32::ensure(a);
}

LevelMatrix from_levels(const py::array& u, const py::array& row_scale, const py::object& col_scale) {
  const char kind = u.dtype().kind();
  if (kind != 'i' && kind != 'u')
    throw py::type_error("u must be an integer array, not dtype " + std::string(py::str(u.dtype())));
  if (u.ndim() != 2) throw Error(invalid_argument("u must be a 2-D array (rows x cols)"));
  if (u.shape(0) > 0xFFFFFFFFll || u.shape(1) > 0xFFFFFFFFll)
    throw Error(invalid_argument("u: dimension too large (up to 2^32 - 1)"));
  const uint32_t rows = uint32_t(u.shape(0)), cols = uint32_t(u.shape(1));
  // int32 as is; other integer dtypes through int64 with a range check (no silent wrap-around).
  py::array_t<int32_t, py::array::c_style> u32;
  if (u.dtype().is(py::dtype::of<int32_t>())) {
    u32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>::ensure(u);
  } else {
    auto wide = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(u);
    if (kind == 'u' && u.itemsize() == 8) {  // uint64 values above int64 wrap in the cast: check the source
      auto src = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(u);
      for (py::ssize_t k = 0; k < src.size(); ++k)
        if (src.data()[k] > 0x7FFFFFFFull) throw Error(invalid_argument("u: value outside int32"));
    }
    u32 = py::array_t<int32_t, py::array::c_style>({u.shape(0), u.shape(1)});
    const int64_t* s = wide.data();
    int32_t* d = u32.mutable_data();
    for (py::ssize_t k = 0; k < wide.size(); ++k) {
      if (s[k] < INT32_MIN || s[k] > INT32_MAX)
        throw Error(invalid_argument("u: value " + std::to_string(s[k]) + " outside int32"));
      d[k] = int32_t(s[k]);
    }
  }
  const F32 rs = scales(row_scale, rows, "row_scale");
  std::optional<F32> cs;
  if (!col_scale.is_none()) cs = scales(py::array::ensure(col_scale), cols, "col_scale");
  LevelMatrix out;
  Status s;
  {
    const int32_t* pu = u32.data();
    const float* prs = rs.data();
    const float* pcs = cs ? cs->data() : nullptr;
    py::gil_scoped_release release;
    s = LevelMatrix::from_levels(rows, cols, pu, prs, pcs, &out);
  }
  check(s);
  return out;
}

py::array matmul(const LevelMatrix& m, const py::array& x, const py::object& out, const std::optional<std::string>& isa,
                 unsigned threads, const std::string& activations, const py::object& bias) {
  const levels::LevelKernelOptions o = kernel_options(isa, threads, activations);
  if (!x.dtype().is(py::dtype::of<float>()))
    throw py::type_error("x must be a float32 array, not dtype " + std::string(py::str(x.dtype())));
  if (!(x.flags() & py::array::c_style)) throw Error(invalid_argument("x must be C-contiguous"));
  if (x.ndim() < 1) throw Error(invalid_argument("x must have at least 1 dimension (..., cols)"));
  const size_t cols = size_t(x.shape(x.ndim() - 1));
  if (cols != m.cols())
    throw Error(invalid_argument("x has " + std::to_string(cols) + " columns, the matrix " + std::to_string(m.cols())));
  // Every leading dimension is a batch dimension (a torch Linear input [batch, tokens, cols] as is).
  size_t batch = 1;
  std::vector<py::ssize_t> shape;
  for (py::ssize_t d = 0; d + 1 < x.ndim(); ++d) {
    batch *= size_t(x.shape(d));
    shape.push_back(x.shape(d));
  }
  shape.push_back(py::ssize_t(m.rows()));
  py::array_t<float> y;
  if (out.is_none()) {
    y = py::array_t<float>(shape);
  } else {
    if (!py::isinstance<py::array>(out)) throw py::type_error("out must be a float32 numpy array or None");
    py::array a = out.cast<py::array>();
    if (!a.dtype().is(py::dtype::of<float>())) throw py::type_error("out must be float32");
    if (!(a.flags() & py::array::c_style) || !a.writeable())
      throw Error(invalid_argument("out must be C-contiguous and writable"));
    if (a.ndim() != py::ssize_t(shape.size()) || !std::equal(shape.begin(), shape.end(), a.shape()))
      throw Error(invalid_argument("out has the wrong shape (expected x's leading dimensions, then rows)"));
    const auto* xb = static_cast<const char*>(x.data());
    const auto* yb = static_cast<const char*>(a.data());
    if (yb < xb + x.nbytes() && xb < yb + a.nbytes()) throw Error(invalid_argument("out must not overlap x"));
    y = py::array_t<float>::ensure(a);
  }
  const float* pb = nullptr;
  py::array b;
  if (!bias.is_none()) {
    if (!py::isinstance<py::array>(bias)) throw py::type_error("bias must be a float32 numpy array or None");
    b = bias.cast<py::array>();
    if (!b.dtype().is(py::dtype::of<float>())) throw py::type_error("bias must be float32");
    if (b.ndim() != 1 || size_t(b.shape(0)) != m.rows() || !(b.flags() & py::array::c_style))
      throw Error(
          invalid_argument("bias must be a contiguous 1-D array of " + std::to_string(m.rows()) + " floats (rows)"));
    pb = static_cast<const float*>(b.data());
  }
  if (batch == 0) return y;
  const float* px = static_cast<const float*>(x.data());
  float* py_ = y.mutable_data();
  Status s;
  {
    py::gil_scoped_release release;
    s = levels::matmul(m, px, batch * cols, batch, py_, batch * size_t(m.rows()), pb, pb ? size_t(m.rows()) : 0, o);
  }
  check(s);
  return y;
}

py::array float_array(const std::vector<float>& v) {
  py::array_t<float> a(py::ssize_t(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
  return a;
}

}  // namespace
}  // namespace nnpress::bindings

NNPRESS_BINDING(levels) {
  using namespace nnpress;
  using namespace nnpress::bindings;

  py::class_<LevelMatrix>(m, "LevelMatrix",
                          "Weights held as integer reconstruction indices u with per-row (and per-column) scales:\n"
                          "W[i, j] = row_scale[i] * col_scale[j] * u[i, j] (nnpress/kernels/levels.h). Immutable, "
                          "validated when built.")
      .def_static("from_levels", &from_levels, py::arg("u"), py::arg("row_scale"), py::arg("col_scale") = py::none(),
                  "u: integer [rows, cols] (values within int32); row_scale: [rows] finite > 0; col_scale: [cols] "
                  "finite > 0 or None.")
      .def_static(
          "from_nnp",
          [](const PyReader& r, size_t index, unsigned threads) {
            LevelMatrix out;
            Status s;
            {
              py::gil_scoped_release release;
              s = levels::level_matrix_from_reader(r.reader, index, &out, threads);
            }
            check(s);
            return out;
          },
          py::arg("reader"), py::arg("index"), py::arg("threads") = 1u,
          "From quantized tensor `index` of an open NnpReader (NnpFile.level_matrix(name) is the friendly form): "
          "its levels, method, step and channel scales; the view rows = shape[0], cols = the rest.")
      .def("matmul", &matmul, py::arg("x"), py::arg("out") = py::none(), py::arg("isa") = py::none(),
           py::arg("threads") = 1u, py::arg("activations") = "float32", py::arg("bias") = py::none(),
           "Y = X @ W.T (+ bias) for X float32 [..., cols] (e.g. [cols], [batch, cols], [batch, tokens, cols]), "
           "C-contiguous; "
           "returns float32 [..., rows], written into `out` if given (C-contiguous float32 of that shape, not "
           "overlapping x). GIL released. isa: "
           "None (automatic, NNPRESS_ISA honoured) or 'scalar'/'avx2'/'avx512'/'neon'; threads: 0 = as many as pay. "
           "activations: 'float32' (exact inputs) or 'int16' (each row of x rounded to integers in [-L, L] on its "
           "own scale max|x| / L, then exact integer sums: opt-in; L = 32767 for int8 dense parts, "
           "min(32767, (2^31 - 1) // (512 * max|u|)) for int16 ones, float32 when that is below 2047; see "
           "nnpress/kernels/levels.h). bias: None or float32 [rows], added to each rounded result.")
      .def_property_readonly("rows", &LevelMatrix::rows)
      .def_property_readonly("cols", &LevelMatrix::cols)
      .def_property_readonly("nbytes", &LevelMatrix::nbytes, "Bytes held (dense part with padding, list, scales).")
      .def_property_readonly("outliers", &LevelMatrix::outliers,
                             "Entries held in the exact list, outside the dense part's int8 (or int16) range.")
      .def_property_readonly("index_bits", &LevelMatrix::index_bits, "8 or 16: bits per index in the dense part.")
      .def_property_readonly("row_scale", [](const LevelMatrix& lm) { return float_array(lm.row_scale()); })
      .def_property_readonly("col_scale",
                             [](const LevelMatrix& lm) -> py::object {
                               if (!lm.has_col_scale()) return py::none();
                               return float_array(lm.col_scale());
                             })
      .def(
          "indices",
          [](const LevelMatrix& lm) {
            py::array_t<int32_t> a({py::ssize_t(lm.rows()), py::ssize_t(lm.cols())});
            lm.indices(a.mutable_data());
            return a;
          },
          "u as int32 [rows, cols].")
      .def(
          "to_dense",
          [](const LevelMatrix& lm) {
            py::array_t<float> a({py::ssize_t(lm.rows()), py::ssize_t(lm.cols())});
            lm.to_dense(a.mutable_data());
            return a;
          },
          "W as float32 [rows, cols].")
      .def("__repr__", [](const LevelMatrix& lm) {
        return "<LevelMatrix " + std::to_string(lm.rows()) + "x" + std::to_string(lm.cols()) + " int" +
               std::to_string(lm.index_bits()) + ", " + std::to_string(lm.outliers()) + " outliers, " +
               std::to_string(lm.nbytes()) + " bytes>";
      });
}
