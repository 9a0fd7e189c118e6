// Bindings of the integer-level matrices and kernels (nnpress/kernels/levels.h).
#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "levels_common.h"

namespace nnpress::bindings {
namespace {

using levels::LevelMatrix;

LevelMatrix from_levels(const py::array& u, const py::array& row_scale, const py::object& col_scale) {
  const auto u32 = int32_levels(u);
  const uint32_t rows = uint32_t(u.shape(0)), cols = uint32_t(u.shape(1));
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
      .def("matmul", &matmul<LevelMatrix>, py::arg("x"), py::arg("out") = py::none(), py::arg("isa") = py::none(),
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
