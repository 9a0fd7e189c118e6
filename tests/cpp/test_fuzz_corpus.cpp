// Replays the saved fuzz corpus (tests/fuzz/corpus/<target>/*: seeds and every crash
// reproducer) through the fuzz targets' own bodies, as an ordinary test built with any compiler
// and without libFuzzer. A violated property aborts with the input's name (see fuzz_common.h).
// Every registered target must have a non-empty corpus directory, so a lost corpus fails here.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "check.h"

#include "../fuzz/fuzz_container.cpp"
#include "../fuzz/fuzz_container_round_trip.cpp"
#include "../fuzz/fuzz_level_payload.cpp"
#include "../fuzz/fuzz_level_stream.cpp"
#include "../fuzz/fuzz_round_trip.cpp"
#include "../fuzz/fuzz_sparse.cpp"

int main() {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(NNPRESS_TEST_DATA_DIR) / "fuzz" / "corpus";
  size_t total = 0;
  for (const auto& target : nnpress_fuzz::registry()) {
    const fs::path dir = root / target.name;
    std::vector<fs::path> files;
    if (fs::is_directory(dir)) {
      for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    CHECK(!files.empty());
    if (files.empty()) std::fprintf(stderr, "no corpus for target %s in %s\n", target.name, dir.c_str());
    for (const auto& f : files) {
      std::ifstream is(f, std::ios::binary);
      std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
      CHECK(is.good() || is.eof());
      const std::string name = f.string();
      nnpress_fuzz::current_input() = name.c_str();
      // Own heap block of exactly the file's size, so a sanitizer build sees over-reads.
      std::vector<uint8_t> exact(bytes);
      target.fn(exact.empty() ? nullptr : exact.data(), exact.size());
      ++total;
    }
    std::printf("%-16s %zu inputs\n", target.name, files.size());
  }
  CHECK(nnpress_fuzz::registry().size() >= 6);
  std::printf("replayed %zu corpus inputs\n", total);
  return TEST_MAIN_RESULT();
}
