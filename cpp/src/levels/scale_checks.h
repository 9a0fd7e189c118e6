// Validation shared by the level-matrix builders (level_matrix.cpp, lut_matrix.cpp): scales must be
// finite and > 0, and the error names the matrix type, the array and the first bad entry.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "nnpress/status.h"

namespace nnpress::levels::detail {

inline bool positive_finite(float v) { return std::isfinite(v) && v > 0.0f; }

inline Status check_scales(const char* type, const float* s, uint32_t n, const char* what) {
  for (uint32_t k = 0; k < n; ++k) {
    if (!positive_finite(s[k]))
      return invalid_argument(std::string(type) + ": " + what + "[" + std::to_string(k) +
                              "] = " + std::to_string(s[k]) + " is not finite and > 0");
  }
  return Status::Ok();
}

}  // namespace nnpress::levels::detail
