// Bindings of the table-lookup matrices (nnpress/kernels/lut.h).
#include <optional>
#include <string>

#include "levels_common.h"

NNPRESS_BINDING(lut) {
  using namespace nnpress;
  using namespace nnpress::bindings;
  using levels::LevelMatrix;
  using levels::LutMatrix;

  py::class_<LutMatrix>(m, "LutMatrix",
                        "Weights with at most 16 distinct reconstruction indices per row, as 4-bit codes into a "
                        "16-value table per row:\nW[i, j] = row_scale[i] * col_scale[j] * table[i][code[i, j]] "
                        "(nnpress/kernels/lut.h). Immutable, validated when built.")
      .def_static(
          "from_levels",
          [](const py::array& u, const py::array& row_scale, const py::object& col_scale) {
            const auto u32 = int32_levels(u);
            const uint32_t rows = uint32_t(u.shape(0)), cols = uint32_t(u.shape(1));
            const F32 rs = scales(row_scale, rows, "row_scale");
            std::optional<F32> cs;
            if (!col_scale.is_none()) cs = scales(py::array::ensure(col_scale), cols, "col_scale");
            LutMatrix out;
            Status s;
            {
              const int32_t* pu = u32.data();
              const float* prs = rs.data();
              const float* pcs = cs ? cs->data() : nullptr;
              py::gil_scoped_release release;
              s = LutMatrix::from_levels(rows, cols, pu, prs, pcs, &out);
            }
            check(s);
            return out;
          },
          py::arg("u"), py::arg("row_scale"), py::arg("col_scale") = py::none(),
          "u: integer [rows, cols] (|u| <= 2^24, at most 16 distinct per row, else ValueError naming the "
          "row); row_scale: [rows] finite > 0; col_scale: [cols] finite > 0 or None.")
      .def_static(
          "from_level_matrix",
          [](const LevelMatrix& lm) {
            LutMatrix out;
            Status s;
            {
              py::gil_scoped_release release;
              s = LutMatrix::from_level_matrix(lm, &out);
            }
            check(s);
            return out;
          },
          py::arg("lm"), "The same weights as a LevelMatrix (ValueError for a row of more than 16 values).")
      .def_static(
          "from_nnp",
          [](const PyReader& r, size_t index, unsigned threads) {
            LutMatrix out;
            Status s;
            {
              py::gil_scoped_release release;
              s = levels::lut_matrix_from_reader(r.reader, index, &out, threads);
            }
            check(s);
            return out;
          },
          py::arg("reader"), py::arg("index"), py::arg("threads") = 1u,
          "From quantized tensor `index` of an open NnpReader (NnpFile.lut_matrix(name) is the friendly form): "
          "its levels, method, step and channel scales; the view rows = shape[0], cols = the rest.")
      .def(
          "matmul",
          [](const LutMatrix& lm, const py::array& x, const py::object& out, const std::optional<std::string>& isa,
             unsigned threads) { return matmul(lm, x, out, isa, threads, "float32"); },
          py::arg("x"), py::arg("out") = py::none(), py::arg("isa") = py::none(), py::arg("threads") = 1u,
          "Y = X @ W.T for X float32 [..., cols], C-contiguous; returns float32 [..., rows], written into `out` if "
          "given (C-contiguous float32 of that shape, not overlapping x). GIL released. isa: None (automatic, "
          "NNPRESS_ISA honoured) or 'scalar'/'avx2'/'avx512'/'neon'; threads: 0 = as many as pay.")
      .def_property_readonly("rows", &LutMatrix::rows)
      .def_property_readonly("cols", &LutMatrix::cols)
      .def_property_readonly("nbytes", &LutMatrix::nbytes, "Bytes held (codes, tables, scales).")
      .def_property_readonly("max_values", &LutMatrix::max_values, "The most distinct values in one row (1..16).")
      .def_property_readonly("row_scale", [](const LutMatrix& lm) { return float_array(lm.row_scale()); })
      .def_property_readonly("col_scale",
                             [](const LutMatrix& lm) -> py::object {
                               if (!lm.has_col_scale()) return py::none();
                               return float_array(lm.col_scale());
                             })
      .def(
          "indices",
          [](const LutMatrix& lm) {
            py::array_t<int32_t> a({py::ssize_t(lm.rows()), py::ssize_t(lm.cols())});
            lm.indices(a.mutable_data());
            return a;
          },
          "u as int32 [rows, cols].")
      .def(
          "to_dense",
          [](const LutMatrix& lm) {
            py::array_t<float> a({py::ssize_t(lm.rows()), py::ssize_t(lm.cols())});
            lm.to_dense(a.mutable_data());
            return a;
          },
          "W as float32 [rows, cols].")
      .def("__repr__", [](const LutMatrix& lm) {
        return "<LutMatrix " + std::to_string(lm.rows()) + "x" + std::to_string(lm.cols()) + ", up to " +
               std::to_string(lm.max_values()) + " values per row, " + std::to_string(lm.nbytes()) + " bytes>";
      });
}
