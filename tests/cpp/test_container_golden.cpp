// Golden .nnp files (formats 1.0 and 1.1, tests/golden/) decode to exactly the recorded values, forever.
// Decoder side only: also runs in decoder-only builds (NNPRESS_ENCODER=OFF). The expected values
// (byte count and CRC-32C of each decoded tensor) come from tests/golden/nnp_golden_crc.tsv,
// written by scripts/make_golden.py when the files were frozen.
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "check.h"
#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"

using namespace nnpress;

int main() {
  const std::string dir = std::string(NNPRESS_TEST_DATA_DIR) + "/golden/";
  std::ifstream tsv(dir + "nnp_golden_crc.tsv");
  CHECK(tsv.good());
  std::map<std::string, ContainerReader> readers;
  std::string line;
  int checked = 0;
  while (std::getline(tsv, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string file, name, bytes_s, crc_s;
    std::getline(ls, file, '\t');
    std::getline(ls, name, '\t');
    std::getline(ls, bytes_s, '\t');
    std::getline(ls, crc_s, '\t');
    if (!readers.count(file)) {
      Status s = ContainerReader::open_file(dir + file, &readers[file]);
      CHECK(s.ok());
      if (!s.ok()) std::fprintf(stderr, "%s\n", s.message().c_str());
      // golden_v1_*.nnp are format 1.0, golden_v1_1_*.nnp (channel scales) 1.1
      CHECK(readers[file].version_minor() == (file.rfind("golden_v1_1_", 0) == 0 ? 1 : 0));
    }
    const ContainerReader& r = readers[file];
    size_t i = 0;
    CHECK(r.find(name, &i).ok());
    const size_t bytes = std::stoul(bytes_s);
    CHECK(r.tensor(i).output_bytes() == bytes);
    std::vector<uint8_t> out(bytes + 1);
    for (unsigned threads : {1u, 2u}) {
      CHECK(r.decode(i, out.data(), bytes, threads).ok());
      const uint32_t crc = crc32c(out.data(), bytes);
      if (crc != uint32_t(std::stoul(crc_s, nullptr, 16)))
        std::fprintf(stderr, "mismatch: %s %s\n", file.c_str(), name.c_str());
      CHECK(crc == uint32_t(std::stoul(crc_s, nullptr, 16)));
    }
    ++checked;
  }
  CHECK(checked == 21);
  CHECK(readers.size() == 3);
  return TEST_MAIN_RESULT();
}
