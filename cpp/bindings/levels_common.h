// Shared by the bindings of the level matrices (levels.cpp, lut.cpp): kernel options, scale and level
// arrays, and the product's argument handling (x [..., cols] -> y [..., rows]).
#pragma once

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "nnpress/cpu.h"
#include "nnpress/kernels/levels.h"
#include "nnpress/kernels/lut.h"

namespace nnpress::bindings {

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;

inline levels::LevelKernelOptions kernel_options(const std::optional<std::string>& isa, unsigned threads,
                                                 const std::string& activations) {
  levels::LevelKernelOptions o;
  o.threads = threads;
  if (activations == "int16") {
    o.activations = levels::Activations::kInt16;
  } else if (activations != "float32") {
    throw Error(invalid_argument("unknown activations '" + activations + "' (expected float32 or int16)"));
  }
  o.isa = isa_option(isa);
  return o;
}

// A float array of n values (any real dtype; integers and floats are converted to float32).
inline F32 scales(const py::array& a, size_t n, const char* what) {
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u')
    throw py::type_error(std::string(what) + " must be a real-valued array, not dtype " +
                         std::string(py::str(a.dtype())));
  if (a.ndim() != 1 || size_t(a.shape(0)) != n)
    throw Error(invalid_argument(std::string(what) + " must be 1-D with " + std::to_string(n) + " values"));
  return F32::ensure(a);
}

// u as a C-contiguous int32 [rows, cols] array: int32 as is, other integer dtypes through int64 with a
// range check (no silent wrap-around).
inline py::array_t<int32_t, py::array::c_style> int32_levels(const py::array& u) {
  const char kind = u.dtype().kind();
  if (kind != 'i' && kind != 'u')
    throw py::type_error("u must be an integer array, not dtype " + std::string(py::str(u.dtype())));
  if (u.ndim() != 2) throw Error(invalid_argument("u must be a 2-D array (rows x cols)"));
  if (u.shape(0) > 0xFFFFFFFFll || u.shape(1) > 0xFFFFFFFFll)
    throw Error(invalid_argument("u: dimension too large (up to 2^32 - 1)"));
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
  return u32;
}

inline py::array float_array(const std::vector<float>& v) {
  py::array_t<float> a(py::ssize_t(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
  return a;
}

// The product with a bias added to each result (LevelMatrix) or without one (LutMatrix: a bias is refused).
inline Status product(const levels::LevelMatrix& m, const float* x, size_t x_len, size_t batch, float* y, size_t y_len,
                      const float* bias, size_t bias_len, const levels::LevelKernelOptions& o) {
  return levels::matmul(m, x, x_len, batch, y, y_len, bias, bias_len, o);
}
inline Status product(const levels::LutMatrix& m, const float* x, size_t x_len, size_t batch, float* y, size_t y_len,
                      const float* bias, size_t, const levels::LevelKernelOptions& o) {
  if (bias != nullptr) return invalid_argument("LutMatrix.matmul takes no bias");
  return levels::matmul(m, x, x_len, batch, y, y_len, o);
}

// Y = X @ W.T (+ bias) for X float32 [..., cols] (LevelMatrix and LutMatrix bindings' matmul).
template <class M>
py::array matmul(const M& m, const py::array& x, const py::object& out, const std::optional<std::string>& isa,
                 unsigned threads, const std::string& activations, const py::object& bias = py::none()) {
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
    // the bias is read after the products are written: a bias inside out would be overwritten first
    const auto* bb = static_cast<const char*>(b.data());
    const auto* yb = reinterpret_cast<const char*>(y.data());
    if (yb < bb + b.nbytes() && bb < yb + y.nbytes()) throw Error(invalid_argument("out must not overlap bias"));
  }
  if (batch == 0) return y;
  const float* px = static_cast<const float*>(x.data());
  float* py_ = y.mutable_data();
  Status s;
  {
    py::gil_scoped_release release;
    s = product(m, px, batch * cols, batch, py_, batch * size_t(m.rows()), pb, pb ? size_t(m.rows()) : 0, o);
  }
  check(s);
  return y;
}

}  // namespace nnpress::bindings
