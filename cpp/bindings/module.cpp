// nnpress._core: the extension module. Creates the exception types and runs every registered
// binding initialiser (one per component file) in name order.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace nnpress::bindings {

static std::vector<std::pair<std::string, InitFn>>& registry() {
  static std::vector<std::pair<std::string, InitFn>> r;
  return r;
}

int register_init(const char* name, InitFn fn) {
  registry().emplace_back(name, fn);
  return 0;
}

}  // namespace nnpress::bindings

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using nnpress::StatusCode;
  m.doc() = "nnpress C++ core: CABAC level coder, quantizers, .nnp container, CER/CSER kernels";
  static py::exception<nnpress::Error> format_error(m, "FormatError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nnpress::Error& e) {
      const auto& s = e.status();
      if (s.is_format_error()) {
        py::set_error(format_error, e.what());
      } else if (s.code() == StatusCode::kIo) {
        py::set_error(PyExc_OSError, e.what());
      } else if (s.code() == StatusCode::kNotFound) {
        py::set_error(PyExc_KeyError, e.what());
      } else {
        py::set_error(PyExc_ValueError, e.what());
      }
    }
  });
#ifdef NNPRESS_WITH_ENCODER
  m.attr("HAS_ENCODER") = true;
#else
  m.attr("HAS_ENCODER") = false;
#endif
  auto& reg = nnpress::bindings::registry();
  std::sort(reg.begin(), reg.end());
  for (auto& [name, fn] : reg) fn(m);
}
