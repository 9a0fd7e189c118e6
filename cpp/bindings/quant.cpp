// Bindings of the quantizers (nnpress/quant/quantize.h, dequantize.h).
#include <vector>

#include "common.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/quant/dequantize.h"
#include "nnpress/quant/quantize.h"

namespace nnpress::bindings {
namespace {

void rows_cols(const py::array& a, uint64_t* rows, uint64_t* cols) {
  std::vector<uint64_t> shape(a.ndim());
  for (py::ssize_t i = 0; i < a.ndim(); ++i) shape[i] = uint64_t(a.shape(i));
  rows_cols_of(shape, rows, cols);
}

std::vector<py::ssize_t> shape_vec(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

bool is_c_float(const py::array& a, bool dbl) {
  const bool ok_type = dbl ? py::isinstance<py::array_t<double>>(a) : py::isinstance<py::array_t<float>>(a);
  return ok_type && (a.flags() & py::array::c_style);
}

using ScaleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Optional per-row / per-column scales (float64, sizes rows / cols) -> ChannelScales views.
ChannelScales scales_of(const py::object& row, const py::object& col, uint64_t rows, uint64_t cols,
                        ScaleArray* keep_row, ScaleArray* keep_col) {
  ChannelScales sc;
  if (!row.is_none()) {
    *keep_row = row.cast<ScaleArray>();
    if (keep_row->ndim() != 1 || uint64_t(keep_row->size()) != rows)
      throw py::value_error("row_scale must be 1-D with one value per row (" + std::to_string(rows) + ")");
    sc.row = keep_row->data();
  }
  if (!col.is_none()) {
    *keep_col = col.cast<ScaleArray>();
    if (keep_col->ndim() != 1 || uint64_t(keep_col->size()) != cols)
      throw py::value_error("col_scale must be 1-D with one value per column (" + std::to_string(cols) + ")");
    sc.col = keep_col->data();
  }
  return sc;
}

#ifdef NNPRESS_WITH_ENCODER
// A feedback factor (n x n float64, kept alive by *keep) or null for None.
const double* factor_of(const py::object& factor, uint64_t n, const char* name, const char* what, ScaleArray* keep) {
  if (factor.is_none()) return nullptr;
  *keep = factor.cast<ScaleArray>();
  if (keep->ndim() != 2 || uint64_t(keep->shape(0)) != n || uint64_t(keep->shape(1)) != n)
    throw py::value_error(std::string(name) + " must be a (" + what + ", " + what + ") matrix with " + what + " = " +
                          std::to_string(n));
  return keep->data();
}

template <class W, class F>
Status run(const py::array& w, const py::array* f, uint64_t rows, uint64_t cols, const QuantOptions& o, int32_t* q,
           float* rec, QuantResult* res) {
  const W* wp = static_cast<const W*>(w.data());
  const F* fp = f ? static_cast<const F*>(f->data()) : nullptr;
  py::gil_scoped_release release;
  return quantize<W, F>(wp, fp, rows, cols, o, q, rec, res);
}

py::tuple quantize_binding(py::array w, const QuantOptions& options, py::object importance, py::object row_scale,
                           py::object col_scale, py::object feedback, py::object row_feedback, bool want_recon) {
  const bool w64 = is_c_float(w, true);
  if (!w64 && !is_c_float(w, false)) throw py::type_error("quantize: weights must be C-contiguous float32 or float64");
  py::array f;
  const bool has_f = !importance.is_none();
  bool f64 = false;
  if (has_f) {
    f = importance.cast<py::array>();
    f64 = is_c_float(f, true);
    if (!f64 && !is_c_float(f, false))
      throw py::type_error("quantize: importance must be C-contiguous float32 or float64");
    if (shape_vec(f) != shape_vec(w)) throw py::value_error("quantize: importance shape differs from the weights'");
  }
  uint64_t rows, cols;
  rows_cols(w, &rows, &cols);
  QuantOptions o = options;
  ScaleArray keep_row, keep_col;
  o.scales = scales_of(row_scale, col_scale, rows, cols, &keep_row, &keep_col);
  ScaleArray keep_fb, keep_rfb;
  o.feedback = factor_of(feedback, cols, "feedback", "cols", &keep_fb);
  o.row_feedback = factor_of(row_feedback, rows, "row_feedback", "rows", &keep_rfb);
  py::array_t<int32_t> levels(shape_vec(w));
  py::object recon = py::none();
  float* rec = nullptr;
  if (want_recon) {
    py::array_t<float> r(shape_vec(w));
    rec = r.mutable_data();
    recon = r;
  }
  QuantResult res;
  int32_t* q = levels.mutable_data();
  const py::array* fp = has_f ? &f : nullptr;
  Status s = w64 ? (f64 ? run<double, double>(w, fp, rows, cols, o, q, rec, &res)
                        : run<double, float>(w, fp, rows, cols, o, q, rec, &res))
                 : (f64 ? run<float, double>(w, fp, rows, cols, o, q, rec, &res)
                        : run<float, float>(w, fp, rows, cols, o, q, rec, &res));
  check(s);
  return py::make_tuple(levels, recon, res);
}

double rate_bits_binding(py::array_t<int32_t, py::array::c_style | py::array::forcecast> levels, uint32_t unary_len,
                         uint32_t eg_order, uint64_t chunk_rows) {
  uint64_t rows, cols;
  rows_cols(levels, &rows, &cols);
  cabac::LevelParams p;
  p.unary_len = unary_len;
  p.eg_order = eg_order;
  uint64_t rate = 0;
  const int32_t* q = levels.data();
  Status s;
  {
    py::gil_scoped_release release;
    s = estimate_chunked_rate(q, rows, cols, chunk_rows, p, &rate);
  }
  check(s);
  return double(rate) / double(cabac::kRateOne);
}
#endif

py::array_t<float> dequantize_binding(py::array_t<int32_t, py::array::c_style | py::array::forcecast> levels,
                                      double step, QuantMethod method, py::object row_scale, py::object col_scale) {
  uint64_t rows, cols;
  rows_cols(levels, &rows, &cols);
  ScaleArray keep_row, keep_col;
  const ChannelScales sc = scales_of(row_scale, col_scale, rows, cols, &keep_row, &keep_col);
  py::array_t<float> out(shape_vec(levels));
  const int32_t* q = levels.data();
  float* o = out.mutable_data();
  Status s;
  {
    py::gil_scoped_release release;
    s = dequantize(q, rows, cols, step, method, sc, o);
  }
  check(s);
  return out;
}

}  // namespace
}  // namespace nnpress::bindings

NNPRESS_BINDING(quant) {
  using namespace nnpress;
  using namespace nnpress::bindings;
  m.def("dequantize", &dequantize_binding, py::arg("levels"), py::arg("step"), py::arg("method"),
        py::arg("row_scale") = py::none(), py::arg("col_scale") = py::none(),
        "Reconstruct float32 weights from int32 levels (method: a QuantMethod), optional "
        "float64 per-row / per-column step scales.");
  m.def(
      "channel_scales_of_exps",
      [](py::array_t<int8_t, py::array::c_style | py::array::forcecast> e) {
        py::array_t<double> out(e.size());
        const int8_t* p = e.data();
        double* o = out.mutable_data();
        for (py::ssize_t i = 0; i < e.size(); ++i) o[i] = nnpress::channel_scale_of_exp(p[i]);
        return out;
      },
      py::arg("exps"), "Scales 2^(e/8) (float64, bit-exact as the .nnp decoder forms them) of int8 exponents.");
  m.def(
      "channel_scale_exps_of",
      [](ScaleArray v) {
        py::array_t<int8_t> out(v.size());
        const double* p = v.data();
        int8_t* o = out.mutable_data();
        for (py::ssize_t i = 0; i < v.size(); ++i) o[i] = nnpress::channel_scale_exp_of(p[i]);
        return out;
      },
      py::arg("scales"), "Nearest int8 exponents e (scale 2^(e/8), clamped to [-128, 127]) of positive scales.");
#ifdef NNPRESS_WITH_ENCODER
  py::class_<cabac::LevelParams>(m, "LevelParams", "Binarization parameters of a level stream (binarization.h).")
      .def(py::init<>())
      .def_readwrite("unary_len", &cabac::LevelParams::unary_len)
      .def_readwrite("eg_order", &cabac::LevelParams::eg_order)
      .def("__repr__", [](const cabac::LevelParams& p) {
        return "LevelParams(unary_len=" + std::to_string(p.unary_len) + ", eg_order=" + std::to_string(p.eg_order) +
               ")";
      });
  py::class_<QuantOptions>(m, "QuantOptions",
                           "Scalar options of quantize (QuantOptions in nnpress/quant/quantize.h); the arrays "
                           "(scales, feedback factors) are quantize's arguments.")
      .def(py::init<>())
      .def_readwrite("step", &QuantOptions::step)
      .def_readwrite("lam", &QuantOptions::lambda)
      .def_readwrite("method", &QuantOptions::method)
      .def_readwrite("rows_per_block", &QuantOptions::chunk_rows)  // rows per independently coded block
      .def_readwrite("max_passes", &QuantOptions::max_passes)
      .def_readwrite("threads", &QuantOptions::threads)
      .def_readwrite("size_tolerance", &QuantOptions::size_tolerance);
  py::class_<QuantResult>(m, "QuantResult", "What quantize chose and measured (QuantResult in quantize.h).")
      .def_readonly("params", &QuantResult::params)
      .def_readonly("coded_params", &QuantResult::coded_params)
      .def_property_readonly("rate_bits", &QuantResult::rate_bits)
      .def_readonly("distortion", &QuantResult::distortion)
      .def_readonly("passes", &QuantResult::passes);
  m.def("quantize", &quantize_binding, py::arg("weights"), py::arg("options"), py::kw_only(),
        py::arg("importance") = py::none(), py::arg("row_scale") = py::none(), py::arg("col_scale") = py::none(),
        py::arg("feedback") = py::none(), py::arg("row_feedback") = py::none(), py::arg("want_recon") = false,
        "Quantize C-contiguous float32/float64 weights -> (int32 levels, float32 reconstruction or None, "
        "QuantResult).");
  m.def("rate_bits", &rate_bits_binding, py::arg("levels"), py::arg("unary_len"), py::arg("eg_order"),
        py::arg("rows_per_block"), "Estimated bits of int32 levels with the given level params and chunked contexts.");
#endif
}
