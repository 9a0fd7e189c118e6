// Fuzz target: arbitrary bytes as a .nnp file, parsed and fully decoded (C++ reader API).
//
// Properties: ContainerReader::open_memory never crashes, reads out of bounds or allocates more
// than the file justifies; every failure is a format error with a message; an opened file's
// tables are consistent with the limits; decode / decode_levels / decode_levels_rows / decode_all / verify_checksums
// never write outside the output buffers, report bad chunks as format errors, and give the same
// bytes and the same status for 1 and 2 threads; open_bytes agrees with open_memory.
// Because CRCs reject almost every mutation, each input is also tried "repaired": header CRC,
// chunk CRCs (found in the table by their offset/size fields) and table CRC recomputed, so the
// fuzzer reaches the table parser and the chunk decoders.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fuzz_common.h"
#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"

namespace {

using namespace nnpress;

ReaderOptions fuzz_options() {
  ReaderOptions o;
  o.limits.max_elements = uint64_t(1) << 22;  // bounded memory for the fuzzer
  o.max_total_elements = uint64_t(1) << 23;
  o.max_tensors = 4096;
  return o;
}

uint64_t get_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

void check_file(const uint8_t* data, size_t size) {
  const ReaderOptions opt = fuzz_options();
  // An empty input arrives as (nullptr, 0): corpus/container/crash-empty-file-memcmp-null once
  // made the reader call memcmp(nullptr, magic, 0) (undefined behaviour, fixed in the reader).
  ContainerReader r;
  Status s = ContainerReader::open_memory(data, size, &r, opt);
  ContainerReader r2;
  const Status s2 = ContainerReader::open_bytes(std::vector<uint8_t>(data, data + size), &r2, opt);
  FUZZ_REQUIRE(s.ok() == s2.ok() && s.code() == s2.code());
  if (s.ok()) FUZZ_REQUIRE(r.tensor_count() == r2.tensor_count());
  if (!s.ok()) {
    FUZZ_REQUIRE(s.is_format_error() && !s.message().empty());
    FUZZ_REQUIRE(r.tensor_count() == 0);
    return;
  }
  FUZZ_REQUIRE(r.file_size() == size);
  uint64_t total = 0;
  for (size_t i = 0; i < r.tensor_count(); ++i) {
    const TensorInfo& t = r.tensor(i);
    FUZZ_REQUIRE(t.count <= opt.limits.max_elements && dtype_size(t.dtype) != 0);
    if (t.storage != Storage::kAlias) total += t.count;
    size_t found;
    FUZZ_REQUIRE(r.find(t.name, &found).ok() && found == i);
    for (const ChunkRef& c : t.chunks) FUZZ_REQUIRE(c.offset >= kContainerHeaderSize && c.offset + c.size <= size);
  }
  FUZZ_REQUIRE(total <= opt.max_total_elements);

  const Status checksums = r.verify_checksums();
  FUZZ_REQUIRE(checksums.ok() || checksums.is_format_error());
  std::vector<std::vector<uint8_t>> outs(r.tensor_count());
  Status first_error;
  for (size_t i = 0; i < r.tensor_count(); ++i) {
    const TensorInfo& t = r.tensor(i);
    const size_t n = t.output_bytes();
    std::vector<uint8_t> a(n + 1, 0xA5), b(n + 1, 0x5A);
    const Status sa = r.decode(i, a.data(), n, 1);
    const Status sb = r.decode(i, b.data(), n, 2);
    FUZZ_REQUIRE(a[n] == 0xA5 && b[n] == 0x5A);
    FUZZ_REQUIRE(sa.ok() == sb.ok() && sa.code() == sb.code() && sa.message() == sb.message());
    if (!sa.ok()) {
      FUZZ_REQUIRE(sa.is_format_error() && !sa.message().empty());
      if (first_error.ok()) first_error = sa;
    } else {
      FUZZ_REQUIRE(std::equal(a.begin(), a.end() - 1, b.begin()));
      outs[i].assign(a.begin(), a.end() - 1);
    }
    // A wrong output size is the caller's mistake.
    FUZZ_REQUIRE(r.decode(i, a.data(), n + 1, 1).code() == StatusCode::kInvalidArgument);
    if (t.storage == Storage::kQuantized) {
      std::vector<int32_t> lv(size_t(t.count) + 1, 0x5A5A5A5A);
      const Status sl = r.decode_levels(i, lv.data(), t.count, 2);
      FUZZ_REQUIRE(lv[size_t(t.count)] == 0x5A5A5A5A);
      FUZZ_REQUIRE(sl.ok() == sa.ok());
      // a row range (the middle third, off chunk boundaries in general): in bounds, the same rows
      // as decode_levels when that succeeds, a format error or success otherwise (it reads fewer chunks)
      const uint64_t r0 = t.rows / 3, rn = t.rows - t.rows / 3 - r0;
      std::vector<int32_t> part(size_t(rn * t.cols) + 1, 0x3C3C3C3C);
      const Status sr = r.decode_levels_rows(i, r0, rn, part.data(), rn * t.cols, 2);
      FUZZ_REQUIRE(part[size_t(rn * t.cols)] == 0x3C3C3C3C);
      FUZZ_REQUIRE(sr.ok() || sr.is_format_error());
      if (sl.ok()) FUZZ_REQUIRE(sr.ok() && std::equal(part.begin(), part.end() - 1, lv.begin() + r0 * t.cols));
      FUZZ_REQUIRE(r.decode_levels_rows(i, r0, rn + 1 + t.rows, part.data(), rn * t.cols, 1).code() ==
                   StatusCode::kInvalidArgument);
    }
  }
  // decode_all: same results, and the error (if any) of the first failing chunk in file order
  // is one of the per-tensor errors.
  std::vector<std::vector<uint8_t>> all(r.tensor_count());
  std::vector<void*> ptrs;
  std::vector<size_t> sizes;
  for (size_t i = 0; i < r.tensor_count(); ++i) {
    all[i].assign(r.tensor(i).output_bytes() + 1, 0xC3);
    ptrs.push_back(all[i].data());
    sizes.push_back(all[i].size() - 1);
  }
  const Status sall = r.decode_all(ptrs, sizes, 2);
  FUZZ_REQUIRE(sall.ok() == first_error.ok());
  for (size_t i = 0; i < r.tensor_count(); ++i) {
    FUZZ_REQUIRE(all[i].back() == 0xC3);
    if (sall.ok()) FUZZ_REQUIRE(std::equal(outs[i].begin(), outs[i].end(), all[i].begin()));
  }
}

// Recompute every CRC the bytes let us find; returns false if nothing could be repaired.
bool repair(std::vector<uint8_t>& f) {
  if (f.size() < kContainerHeaderSize) return false;
  const uint64_t table_offset = get_u64(&f[16]), table_size = get_u64(&f[24]);
  const bool table_in_range = table_offset >= kContainerHeaderSize && table_offset <= f.size() &&
                              table_size == f.size() - table_offset;
  if (table_in_range) {
    // Chunk references: u64 offset, u64 size, u32 crc; each chunk lies inside the data region.
    for (size_t p = size_t(table_offset); p + 20 <= f.size(); ++p) {
      const uint64_t off = get_u64(&f[p]), sz = get_u64(&f[p + 8]);
      if (off >= kContainerHeaderSize && off <= table_offset && sz <= table_offset - off && sz > 0) {
        put_u32(&f[p + 16], crc32c(&f[size_t(off)], size_t(sz)));
        p += 19;
      }
    }
    put_u32(&f[32], crc32c(f.data() + table_offset, size_t(table_size)));
  }
  put_u32(&f[36], crc32c(f.data(), 36));
  return true;
}

}  // namespace

NNPRESS_FUZZ_TARGET(container) {
  {
    std::vector<uint8_t> exact(data, data + size);  // its own heap block: ASan sees over-reads
    check_file(size ? exact.data() : nullptr, exact.size());
  }
  std::vector<uint8_t> fixed(data, data + size);
  if (repair(fixed)) check_file(fixed.data(), fixed.size());
  return 0;
}
