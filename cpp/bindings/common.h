// Shared helpers for the pybind11 bindings (the only code that includes pybind11).
// Bindings only wrap (no math, defaults or policy): convert arrays to views, check shapes, release the GIL,
// call one C++ function. Each binding file registers itself with NNPRESS_BINDING(name) so that
// components add files without editing module.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "nnpress/cpu.h"
#include "nnpress/format/container.h"
#include "nnpress/status.h"

namespace nnpress::bindings {

namespace py = pybind11;
using InitFn = void (*)(py::module_&);

int register_init(const char* name, InitFn fn);

// The Python NnpReader (container.cpp); shared so other components can read from an open file.
struct PyReader {
  ContainerReader reader;
};

// Throws nnpress::Error for a failed status; module.cpp translates it to the Python exception
// for its code (FormatError, ValueError, OSError, KeyError).
inline void check(const Status& s) {
  if (!s.ok()) throw Error(s);
}

// The ISA a kernel argument names ("scalar", "neon", "avx2", "avx512"); none: detect at run time.
inline std::optional<Isa> isa_option(const std::optional<std::string>& name) {
  if (!name) return std::nullopt;
  Isa i;
  if (!parse_isa(name->c_str(), &i))
    throw Error(invalid_argument("unknown ISA '" + *name + "' (expected scalar, neon, avx2 or avx512)"));
  return i;
}

}  // namespace nnpress::bindings

#define NNPRESS_BINDING(name)                                                                       \
  static void nnpress_init_##name(::nnpress::bindings::py::module_& m);                             \
  [[maybe_unused]] static const int nnpress_registered_##name = ::nnpress::bindings::register_init( \
      #name, &nnpress_init_##name);                                                                 \
  static void nnpress_init_##name(::nnpress::bindings::py::module_& m)
