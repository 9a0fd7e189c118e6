// tests/fuzz/fuzz_common.h — shared plumbing of the fuzz targets (tests/fuzz/fuzz_*.cpp).
//
// CONTRACT
//   A target is written once:
//     NNPRESS_FUZZ_TARGET(level_stream) { ... use data, size ...; return 0; }
//   and serves two builds:
//   - libFuzzer (NNPRESS_FUZZ_LIBFUZZER defined, tests/fuzz/CMakeLists.txt, clang only): the body
//     becomes LLVMFuzzerTestOneInput of the executable fuzz_<name>;
//   - corpus replay (tests/cpp/test_fuzz_corpus.cpp, any compiler, no libFuzzer): the file is
//     #included and the body is registered under its name; the test runs it on every file in
//     tests/fuzz/corpus/<name>/.
//   FUZZ_REQUIRE(cond) states a property that must hold for every input; a violation prints the
//   input's name (replay) and aborts, which libFuzzer reports as a crash and saves the input.
//
// SURPRISES
//   - A new target needs one line in tests/cpp/test_fuzz_corpus.cpp (#include of its .cpp) and a
//     non-empty tests/fuzz/corpus/<name>/ (the replay test fails on a missing corpus);
//     tests/fuzz/make_corpus.py writes the seeds from real streams and files.
//   - Targets keep their own memory bounded (limits far below the library defaults) so the
//     fuzzer's 2 GB RSS limit measures leaks and real over-allocation, not legitimate big inputs.
//   - FuzzInput never fails: past the end of the data it returns zeros, so every byte string is
//     a valid input and short inputs still exercise the code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace nnpress_fuzz {

// Name of the input being replayed (set by the replay driver; empty under libFuzzer).
inline const char*& current_input() {
  static const char* name = "";
  return name;
}

[[noreturn]] inline void fail(const char* file, int line, const char* what) {
  std::fprintf(stderr, "%s:%d: fuzz property violated: %s (input: %s)\n", file, line, what, current_input());
  std::fflush(stderr);
  std::abort();
}

// Reads integers from the fuzzer's bytes; zeros once the data runs out.
class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() { return uint16_t(u8() | (uint16_t(u8()) << 8)); }
  uint32_t u32() { return uint32_t(u16()) | (uint32_t(u16()) << 16); }
  uint64_t u64() { return uint64_t(u32()) | (uint64_t(u32()) << 32); }
  size_t remaining() const { return size_ - pos_; }
  const uint8_t* rest() const { return data_ + pos_; }
  void skip_all() { pos_ = size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Deterministic filler once the fuzzer's bytes run out (splitmix64).
inline uint64_t mix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

using TargetFn = int (*)(const uint8_t*, size_t);

#ifndef NNPRESS_FUZZ_LIBFUZZER
struct Registered {
  const char* name;
  TargetFn fn;
};
inline std::vector<Registered>& registry() {
  static std::vector<Registered> targets;
  return targets;
}
inline bool register_target(const char* name, TargetFn fn) {
  registry().push_back({name, fn});
  return true;
}
#endif

}  // namespace nnpress_fuzz

#define FUZZ_REQUIRE(cond)                                      \
  do {                                                          \
    if (!(cond)) nnpress_fuzz::fail(__FILE__, __LINE__, #cond); \
  } while (0)

#ifdef NNPRESS_FUZZ_LIBFUZZER
#define NNPRESS_FUZZ_TARGET(name)                                                                                     \
  static int nnpress_fuzz_##name(const uint8_t* data, size_t size);                                                   \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return nnpress_fuzz_##name(data, size); } \
  static int nnpress_fuzz_##name(const uint8_t* data, size_t size)
#else
#define NNPRESS_FUZZ_TARGET(name)                                                                                \
  static int nnpress_fuzz_##name(const uint8_t* data, size_t size);                                              \
  static const bool nnpress_fuzz_registered_##name = nnpress_fuzz::register_target(#name, &nnpress_fuzz_##name); \
  static int nnpress_fuzz_##name(const uint8_t* data, size_t size)
#endif
