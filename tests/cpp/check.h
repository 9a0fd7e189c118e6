// Minimal test harness for the C++ unit tests (no third-party test framework needed).
// CHECK(cond) records a failure with file:line and keeps going; main returns the failure count.
#pragma once
#include <cstdio>
#include <cstdlib>

namespace nnpress_test {
inline int& failures() {
  static int n = 0;
  return n;
}
}  // namespace nnpress_test

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++nnpress_test::failures();                                                   \
    }                                                                               \
  } while (0)

#define TEST_MAIN_RESULT() \
  (std::printf("%s\n", nnpress_test::failures() ? "FAILED" : "all checks passed"), nnpress_test::failures() ? 1 : 0)
