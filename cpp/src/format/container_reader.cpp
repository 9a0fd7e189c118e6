// The .nnp reader (decoder side, always built). Layout: docs/FORMAT.md.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "../common/parallel.h"
#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define NNPRESS_MMAP 1
#endif

namespace nnpress {

const uint8_t kContainerMagic[8] = {0x89, 'N', 'N', 'P', '\r', '\n', 0x1A, '\n'};

size_t dtype_size(DType d) {
  switch (d) {
    case DType::kFloat32:
    case DType::kInt32:
    case DType::kUInt32: return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
    case DType::kUInt16: return 2;
    case DType::kFloat64:
    case DType::kInt64:
    case DType::kUInt64: return 8;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool: return 1;
  }
  return 0;
}

bool dtype_is_float(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16 || d == DType::kFloat64;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kBool: return "bool";
    case DType::kUInt16: return "uint16";
    case DType::kUInt32: return "uint32";
    case DType::kUInt64: return "uint64";
  }
  return "?";
}

const char* role_name(TensorRole r) {
  switch (r) {
    case TensorRole::kWeight: return "weight";
    case TensorRole::kBias: return "bias";
    case TensorRole::kNorm: return "norm";
    case TensorRole::kEmbedding: return "embedding";
    case TensorRole::kBuffer: return "buffer";
    case TensorRole::kOther: return "other";
  }
  return "?";
}

const char* method_name(QuantMethod m) {
  switch (m) {
    case QuantMethod::kNearest: return "nearest";
    case QuantMethod::kRdoq: return "rdoq";
    case QuantMethod::kTrellis: return "trellis";
  }
  return "?";
}

uint64_t TensorInfo::stored_bytes() const {
  uint64_t s = 0;
  for (const auto& c : chunks) s += c.size;
  return s;
}

uint16_t float_to_half_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7FFFFFFFu;
  if (absx >= 0x7F800000u) {  // inf or NaN
    return uint16_t(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u | ((absx >> 13) & 0x3FFu) : 0u));
  }
  if (absx >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds to >= 65520: overflow to inf
  if (absx < 0x38800000u) {                                  // below the smallest normal half (2^-14)
    if (absx < 0x33000000u) return uint16_t(sign);           // < 2^-25: rounds to zero
    const uint32_t e = absx >> 23;                           // 102..112
    const uint32_t mant = (absx & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;                          // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return uint16_t(sign | h);
  }
  uint32_t h = ((absx - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
  const uint32_t rem = absx & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return uint16_t(sign | h);
}

uint16_t float_to_bfloat16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  const uint32_t lsb = (x >> 16) & 1u;
  x += 0x7FFFu + lsb;
  return uint16_t(x >> 16);
}

namespace {

// Bounds-checked little-endian cursor over [p, end).
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  bool bytes(void* dst, size_t k) {
    if (k > left()) return false;
    std::memcpy(dst, p_ + pos_, k);
    pos_ += k;
    return true;
  }
  const uint8_t* view(size_t k) {
    if (k > left()) return nullptr;
    const uint8_t* r = p_ + pos_;
    pos_ += k;
    return r;
  }
  template <class T>
  bool get(T* v) {
    uint8_t b[sizeof(T)];
    if (!bytes(b, sizeof(T))) return false;
    uint64_t u = 0;
    for (size_t i = 0; i < sizeof(T); ++i) u |= uint64_t(b[i]) << (8 * i);
    if constexpr (std::is_same<T, double>::value) {
      std::memcpy(v, &u, 8);
    } else {
      *v = T(u);
    }
    return true;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

bool valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else return false;
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

std::string quoted(const std::string& name) { return "tensor '" + name + "'"; }

bool known_dtype(uint8_t d) { return d >= 1 && d <= 13; }

// ---- parsing, step by step (ContainerReader::parse) ----

struct HeaderFields {
  uint16_t minor = 0;
  uint64_t table_offset = 0, table_size = 0;
};

// The 40-byte header: signature, checksum, version, flags, and where the table is (checked against
// the file size, and the table's checksum).
Status parse_header(const uint8_t* d, size_t n, HeaderFields* h) {
  if (n == 0) return truncated("nnp: empty file");
  if (n < 8 || std::memcmp(d, kContainerMagic, 8) != 0) {
    if (n < 8 && std::memcmp(d, kContainerMagic, n) == 0) return truncated("nnp: file ends inside the signature");
    return corrupt("nnp: not an nnpress .nnp file (bad signature)");
  }
  if (n < kContainerHeaderSize) return truncated("nnp: file ends inside the header (" + std::to_string(n) + " bytes)");
  const uint16_t major = uint16_t(d[8] | d[9] << 8);
  const uint16_t minor = uint16_t(d[10] | d[11] << 8);
  if (le32(d + 36) != crc32c(d, 36)) return corrupt("nnp: header checksum mismatch");
  if (major != kContainerVersionMajor)
    return Status(StatusCode::kUnsupported, "nnp: format version " + std::to_string(major) + "." +
                                                std::to_string(minor) + " is not supported (this build reads " +
                                                std::to_string(kContainerVersionMajor) + ".x)");
  h->minor = minor;
  if (le32(d + 12) != 0) return Status(StatusCode::kUnsupported, "nnp: unknown header flags");
  const uint64_t table_offset = le64(d + 16), table_size = le64(d + 24);
  const uint32_t table_crc = le32(d + 32);
  if (table_offset < kContainerHeaderSize || table_offset > n)
    return table_offset > n ? truncated("nnp: table offset " + std::to_string(table_offset) + " is past the end (" +
                                        std::to_string(n) + " bytes): truncated file")
                            : corrupt("nnp: table offset inside the header");
  if (table_size > n - table_offset)
    return truncated("nnp: table ends past the end of the file (" + std::to_string(n) + " bytes): truncated file");
  if (table_offset + table_size != n)
    return corrupt("nnp: " + std::to_string(n - table_offset - table_size) +
                   " unexpected bytes after the table (appended data?)");
  if (crc32c(d + table_offset, size_t(table_size)) != table_crc) return corrupt("nnp: tensor table checksum mismatch");
  h->table_offset = table_offset;
  h->table_size = table_size;
  return Status::Ok();
}

// Reads the tensor table entry by entry. Chunks must tile [header, table) in table order:
// next_chunk_ is where the next one must start.
class TableParser {
 public:
  TableParser(const uint8_t* table, size_t size, uint64_t table_offset, uint16_t minor, const ReaderOptions& options)
      : c_(table, size), table_offset_(table_offset), minor_(minor), options_(options) {}

  // The tensor count and the metadata.
  Status start(uint32_t* count, std::string* metadata) {
    uint32_t meta_size = 0;
    if (!c_.get(count) || !c_.get(&meta_size)) return truncated("nnp: table too short");
    if (*count > options_.max_tensors)
      return limit_exceeded("nnp: " + std::to_string(*count) + " tensors exceed the limit of " +
                            std::to_string(options_.max_tensors));
    // Each entry needs at least 2 + 1 + 4 + 4 = 11 bytes (an alias of a scalar); reject counts the
    // table cannot hold before reserving memory for them.
    if (uint64_t(*count) * 11 > c_.left())
      return corrupt("nnp: tensor count " + std::to_string(*count) + " does not fit the table");
    const uint8_t* meta = c_.view(meta_size);
    if (meta == nullptr) return truncated("nnp: metadata runs past the table");
    if (!valid_utf8(meta, meta_size)) return corrupt("nnp: metadata is not valid UTF-8");
    metadata->assign(reinterpret_cast<const char*>(meta), meta_size);
    return Status::Ok();
  }

  // Entry ti (`earlier` holds entries 0 .. ti - 1, for aliases).
  Status entry(uint32_t ti, const std::vector<TensorInfo>& earlier, TensorInfo* t) {
    bool scaled = false;
    Status s = entry_head(ti, t, &scaled);
    if (!s.ok()) return s;
    const std::string tw = "nnp: " + quoted(t->name);
    switch (t->storage) {
      case Storage::kRaw: return raw_entry(tw, t);
      case Storage::kQuantized: return quantized_entry(tw, scaled, t);
      default: return alias_entry(tw, ti, earlier, t);
    }
  }

  // After the last entry: the table is used up and the chunks cover the data region.
  Status finish() const {
    if (c_.left() != 0)
      return corrupt("nnp: " + std::to_string(c_.left()) + " unexpected bytes at the end of the table");
    if (next_chunk_ != table_offset_)
      return corrupt("nnp: " + std::to_string(table_offset_ - next_chunk_) +
                     " bytes of the data region belong to no chunk");
    return Status::Ok();
  }

 private:
  // Name, dtype, role, storage code and shape (with the element limits).
  Status entry_head(uint32_t ti, TensorInfo* t, bool* scaled) {
    const std::string where = "nnp: table entry " + std::to_string(ti);
    uint16_t name_size = 0;
    if (!c_.get(&name_size)) return truncated(where + ": truncated");
    const uint8_t* name = c_.view(name_size);
    if (name == nullptr) return truncated(where + ": name runs past the table");
    if (name_size == 0) return corrupt(where + ": empty name");
    if (!valid_utf8(name, name_size)) return corrupt(where + ": name is not valid UTF-8");
    t->name.assign(reinterpret_cast<const char*>(name), name_size);
    const std::string tw = "nnp: " + quoted(t->name);
    uint8_t dtype, role, storage, ndim;
    if (!c_.get(&dtype) || !c_.get(&role) || !c_.get(&storage) || !c_.get(&ndim))
      return truncated(tw + ": truncated entry");
    if (!known_dtype(dtype)) return corrupt(tw + ": unknown dtype code " + std::to_string(dtype));
    if (role > uint8_t(TensorRole::kOther)) return corrupt(tw + ": unknown role code " + std::to_string(role));
    *scaled = storage == kStorageCodeQuantizedScaled;
    if (*scaled && minor_ < 1)
      return corrupt(tw + ": storage code 3 (channel scales) in a version 1." + std::to_string(minor_) +
                     " file (needs 1.1)");
    if (storage > kStorageCodeQuantizedScaled)
      return minor_ > kContainerVersionMinor
                 ? Status(StatusCode::kUnsupported, tw + ": storage code " + std::to_string(storage) + " of format 1." +
                                                        std::to_string(minor_) +
                                                        " is not supported by this reader (reads up to 1." +
                                                        std::to_string(kContainerVersionMinor) + ")")
                 : corrupt(tw + ": unknown storage code " + std::to_string(storage));
    if (*scaled) storage = uint8_t(Storage::kQuantized);
    if (ndim > kMaxDims) return corrupt(tw + ": " + std::to_string(ndim) + " dimensions (at most 8)");
    t->dtype = DType(dtype);
    t->role = TensorRole(role);
    t->storage = Storage(storage);
    t->shape.resize(ndim);
    uint64_t elems = 1;
    bool overflow = false;
    for (unsigned k = 0; k < ndim; ++k) {
      if (!c_.get(&t->shape[k])) return truncated(tw + ": truncated shape");
      const uint64_t v = t->shape[k];
      if (v != 0 && elems > UINT64_MAX / v) overflow = true;
      elems *= v;
    }
    if (overflow) return limit_exceeded(tw + ": element count overflows 64 bits");
    t->count = elems;
    if (elems > options_.limits.max_elements)
      return limit_exceeded(tw + ": " + std::to_string(elems) + " elements exceed the limit of " +
                            std::to_string(options_.limits.max_elements));
    if (elems > (uint64_t(SIZE_MAX) / 8)) return limit_exceeded(tw + ": too large for this machine");
    return Status::Ok();
  }

  // One chunk reference: contiguous with the previous chunk and inside the data region.
  Status chunk(const std::string& tw, ChunkRef* ch) {
    if (!c_.get(&ch->offset) || !c_.get(&ch->size) || !c_.get(&ch->crc))
      return truncated(tw + ": truncated chunk list");
    if (ch->offset != next_chunk_)
      return corrupt(tw + ": chunk at offset " + std::to_string(ch->offset) + ", expected " +
                     std::to_string(next_chunk_) + " (chunks must be contiguous)");
    if (ch->size > table_offset_ - ch->offset)
      return corrupt(tw + ": chunk of " + std::to_string(ch->size) + " bytes runs past the data region");
    next_chunk_ = ch->offset + ch->size;
    return Status::Ok();
  }

  Status raw_entry(const std::string& tw, TensorInfo* t) {
    ChunkRef ch;
    Status s = chunk(tw, &ch);
    if (!s.ok()) return s;
    const uint64_t want = t->count * dtype_size(t->dtype);
    if (ch.size != want)
      return corrupt(tw + ": raw data is " + std::to_string(ch.size) + " bytes, shape and dtype need " +
                     std::to_string(want));
    ch.rows = 1;
    t->chunks.push_back(ch);
    return Status::Ok();
  }

  // Quantizer fields, channel scales (storage code 3), then the row blocks.
  Status quantized_entry(const std::string& tw, bool scaled, TensorInfo* t) {
    uint8_t method, recon, unary, eg;
    if (!c_.get(&method) || !c_.get(&recon) || !c_.get(&unary) || !c_.get(&eg) || !c_.get(&t->step) ||
        !c_.get(&t->lambda) || !c_.get(&t->rows_per_block))
      return truncated(tw + ": truncated quantizer fields");
    if (!dtype_is_float(t->dtype))
      return corrupt(tw + ": quantized tensor with non-float dtype " + dtype_name(t->dtype));
    if (!is_known_quant_method(method))
      return Status(StatusCode::kUnsupported, tw + ": unknown quantizer method " + std::to_string(method));
    if (recon != 0)
      return Status(StatusCode::kUnsupported, tw + ": reserved quantizer byte is " + std::to_string(recon));
    t->method = QuantMethod(method);
    t->params.unary_len = unary;
    t->params.eg_order = eg;
    Status s = check_level_params(t->params);
    if (!s.ok()) return Status(s.code(), tw + ": " + s.message());
    if (!std::isfinite(t->step) || !(t->step > 0)) return corrupt(tw + ": step size is not a positive finite number");
    if (!std::isfinite(t->lambda)) return corrupt(tw + ": lambda is not finite");
    rows_cols_of(t->shape, &t->rows, &t->cols);
    if (scaled) {
      s = channel_scales(tw, t);
      if (!s.ok()) return s;
    }
    return row_blocks(tw, t);
  }

  // The scale flags and the row / column exponents (table bytes: sizes are checked against the
  // table before any allocation), and that every step_ij is finite and > 0.
  Status channel_scales(const std::string& tw, TensorInfo* t) {
    uint8_t flags = 0;
    if (!c_.get(&flags)) return truncated(tw + ": truncated channel scale flags");
    if (flags == 0 || (flags & ~(kScaleFlagRows | kScaleFlagCols)) != 0)
      return corrupt(tw + ": channel scale flags " + std::to_string(flags) + " (must be 1, 2 or 3)");
    for (int which = 0; which < 2; ++which) {
      const uint8_t bit = which == 0 ? kScaleFlagRows : kScaleFlagCols;
      if (!(flags & bit)) continue;
      const uint64_t n = which == 0 ? t->rows : t->cols;
      if (n > c_.left())
        return truncated(tw + ": " + std::to_string(n) + (which == 0 ? " row" : " column") +
                         " scales run past the table");
      const uint8_t* e = c_.view(size_t(n));
      std::vector<int8_t>& exps = which == 0 ? t->row_scale_exp : t->col_scale_exp;
      std::vector<double>& vals = which == 0 ? t->row_scale : t->col_scale;
      exps.resize(size_t(n));
      vals.resize(size_t(n));
      for (uint64_t k = 0; k < n; ++k) {
        exps[k] = int8_t(e[k]);
        vals[k] = channel_scale_of_exp(exps[k]);
      }
    }
    // Check the extreme products (rounding is monotonic).
    double lo = t->step, hi = t->step;
    for (const std::vector<double>* v : {&t->row_scale, &t->col_scale}) {
      if (v->empty()) continue;
      const auto mm = std::minmax_element(v->begin(), v->end());
      lo *= *mm.first;
      hi *= *mm.second;
    }
    if (!(std::isfinite(hi) && lo > 0)) return corrupt(tw + ": step x channel scales overflows or underflows");
    return Status::Ok();
  }

  // The chunk count the shape and rows_per_block need, and one chunk per row block, none claiming
  // more levels than its bytes can hold.
  Status row_blocks(const std::string& tw, TensorInfo* t) {
    uint32_t nchunks = 0;
    if (!c_.get(&nchunks)) return truncated(tw + ": truncated chunk count");
    uint64_t expect = 0;
    if (t->count != 0) {
      if (t->rows_per_block == 0 || t->rows_per_block > t->rows)
        return corrupt(tw + ": rows per block " + std::to_string(t->rows_per_block) + " outside 1.." +
                       std::to_string(t->rows));
      expect = t->rows / t->rows_per_block + (t->rows % t->rows_per_block != 0);
    } else if (t->rows_per_block != 0) {
      return corrupt(tw + ": empty tensor with a row block size");
    }
    if (nchunks != expect)
      return corrupt(tw + ": " + std::to_string(nchunks) + " chunks, the shape needs " + std::to_string(expect));
    if (uint64_t(nchunks) * 20 > c_.left()) return truncated(tw + ": chunk list runs past the table");
    t->chunks.resize(nchunks);
    for (uint32_t k = 0; k < nchunks; ++k) {
      ChunkRef& ch = t->chunks[k];
      Status s = chunk(tw, &ch);
      if (!s.ok()) return s;
      ch.first_row = uint64_t(k) * t->rows_per_block;
      ch.rows = std::min(t->rows_per_block, t->rows - ch.first_row);
      const uint64_t levels = ch.rows * t->cols;
      if (levels > (ch.size + 2) * kMaxLevelsPerPayloadByte)
        return corrupt(tw + ": chunk " + std::to_string(k) + " claims " + std::to_string(levels) +
                       " levels but has only " + std::to_string(ch.size) + " bytes");
    }
    return Status::Ok();
  }

  Status alias_entry(const std::string& tw, uint32_t ti, const std::vector<TensorInfo>& earlier, TensorInfo* t) {
    uint32_t target = 0;
    if (!c_.get(&target)) return truncated(tw + ": truncated alias");
    if (target >= ti) return corrupt(tw + ": alias target " + std::to_string(target) + " is not an earlier entry");
    const TensorInfo& tt = earlier[target];
    if (tt.storage == Storage::kAlias) return corrupt(tw + ": alias of an alias");
    if (tt.dtype != t->dtype || tt.shape != t->shape)
      return corrupt(tw + ": alias differs in dtype or shape from its target");
    t->alias_of = target;
    return Status::Ok();
  }

  Cursor c_;
  uint64_t next_chunk_ = kContainerHeaderSize;
  const uint64_t table_offset_;
  const uint16_t minor_;
  const ReaderOptions& options_;
};

}  // namespace

struct ContainerReader::NameIndex {
  std::unordered_map<std::string, size_t> map;
};

// One unit of decoding work: a chunk of a tensor into a destination buffer.
struct ContainerReader::Task {
  size_t tensor = 0;       // whose chunk (after alias resolution)
  size_t chunk = 0;
  const char* label = nullptr;  // requested tensor's name (for messages)
  uint8_t* out = nullptr;       // destination of the whole tensor
  bool levels_only = false;     // write int32 levels instead of dequantized values
  // levels_only: out holds rows [row_begin, row_end) of the tensor only; a chunk reaching outside
  // them is decoded into the thread's scratch and its rows inside are copied
  uint64_t row_begin = 0, row_end = std::numeric_limits<uint64_t>::max();
  uint64_t cost = 0;
  // A piece of a large raw chunk: bytes [begin, end) of it, copied on its own; its CRC-32C goes to
  // piece_crc and the pieces' CRCs are combined and checked once all have run. end == 0: the whole
  // chunk, checked before it is used.
  uint64_t begin = 0, end = 0;
  uint32_t piece_crc = 0;
  Status status;
};

namespace {
// Raw chunks above this size are copied in pieces of this size on several threads.
constexpr uint64_t kRawPieceBytes = uint64_t(4) << 20;
}  // namespace

// Per-thread buffers of run_tasks: a chunk's levels, and its float32 values on the way to 16 bits.
struct ContainerReader::Scratch {
  std::vector<int32_t> levels;
  std::vector<float> values;
};

#ifdef NNPRESS_MMAP
// A read-only, private mapping of a whole regular file, and the open descriptor (to notice a file
// that shrank before touching pages that no longer exist).
struct ContainerReader::Mapping {
  int fd = -1;
  void* base = nullptr;
  size_t size = 0;
  std::string path;
  size_t page = 4096;
  ~Mapping() {
    if (base != nullptr) ::munmap(base, size);
    if (fd >= 0) ::close(fd);
  }
  // kIo if the file's size is no longer the mapped size (truncated or grown by someone else).
  Status check_unchanged() const {
    struct stat st;
    if (::fstat(fd, &st) != 0) return Status(StatusCode::kIo, "cannot stat '" + path + "': " + std::strerror(errno));
    if (uint64_t(st.st_size) != uint64_t(size))
      return Status(StatusCode::kIo, "'" + path + "' changed size while open (" + std::to_string(size) +
                                         " bytes, now " + std::to_string(uint64_t(st.st_size)) + ")");
    return Status::Ok();
  }
  // The mapping is advised MADV_RANDOM (a page fault reads that page, no read-around), so opening
  // reads the header and the table only; decoding asks for exactly a chunk's pages with
  // MADV_WILLNEED before reading it.
  void advise(uint64_t offset, uint64_t n, int advice) const {
    const uint64_t lo = offset / page * page, hi = std::min<uint64_t>(size, offset + n);
    if (hi > lo) ::madvise(static_cast<uint8_t*>(base) + lo, size_t(hi - lo), advice);
  }
  void will_need(uint64_t offset, uint64_t n) const { advise(offset, n, MADV_WILLNEED); }
  // Gives the pages of [offset, offset + n) back to the OS page cache: they were only read, so a
  // later access maps them again from the file. The pages at either end are included although a
  // neighbouring chunk may share them (its reader then faults them in again): touching such a page
  // can map a whole large page-cache folio (up to 2 MiB at once), and leaving it mapped would keep
  // the neighbour's pages resident after the neighbour released them.
  void release(uint64_t offset, uint64_t n) const { advise(offset, n, MADV_DONTNEED); }
};
#else
struct ContainerReader::Mapping {
  Status check_unchanged() const { return Status::Ok(); }
  void will_need(uint64_t, uint64_t) const {}
  void release(uint64_t, uint64_t) const {}
};
#endif

ContainerReader::ContainerReader() = default;
ContainerReader::~ContainerReader() = default;
ContainerReader::ContainerReader(ContainerReader&&) noexcept = default;
ContainerReader& ContainerReader::operator=(ContainerReader&&) noexcept = default;

Status ContainerReader::open_memory(const uint8_t* data, size_t size, ContainerReader* out,
                                    const ReaderOptions& options) {
  if (out == nullptr) return invalid_argument("ContainerReader::open_memory: null reader");
  if (data == nullptr && size != 0) return invalid_argument("ContainerReader::open_memory: null data");
  ContainerReader r;
  r.data_ = data;
  r.size_ = size;
  Status s = r.parse(options);
  if (!s.ok()) {
    *out = ContainerReader();
    return s;
  }
  *out = std::move(r);
  return Status::Ok();
}

Status ContainerReader::open_bytes(std::vector<uint8_t> bytes, ContainerReader* out, const ReaderOptions& options) {
  if (out == nullptr) return invalid_argument("ContainerReader::open_bytes: null reader");
  ContainerReader r;
  r.owned_ = std::move(bytes);
  r.data_ = r.owned_.data();
  r.size_ = r.owned_.size();
  Status s = r.parse(options);
  if (!s.ok()) {
    *out = ContainerReader();
    return s;
  }
  *out = std::move(r);
  return Status::Ok();
}

namespace {

// The whole file read into memory (for files that cannot be mapped: pipes, devices, platforms
// without mmap).
Status read_whole(std::FILE* f, const std::string& path, std::vector<uint8_t>* bytes) {
  uint8_t buf[1 << 16];
  for (;;) {
    const size_t got = std::fread(buf, 1, sizeof buf, f);
    bytes->insert(bytes->end(), buf, buf + got);
    if (got < sizeof buf) break;
  }
  if (std::ferror(f)) return Status(StatusCode::kIo, "cannot read '" + path + "'");
  return Status::Ok();
}

Status open_error(const std::string& path, int e) {
  return Status(StatusCode::kIo, "cannot open '" + path + "': " + std::strerror(e));
}

}  // namespace

Status ContainerReader::open_file(const std::string& path, ContainerReader* out, const ReaderOptions& options) {
  if (out == nullptr) return invalid_argument("ContainerReader::open_file: null reader");
  Status s;
  ContainerReader r;
#ifdef NNPRESS_MMAP
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return open_error(path, errno);
  auto map = std::make_unique<Mapping>();
  map->fd = fd;
  map->path = path;
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page > 0) map->page = size_t(page);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status(StatusCode::kIo, "cannot stat '" + path + "': " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return Status(StatusCode::kIo, "cannot read '" + path + "': it is a folder");
  if (S_ISREG(st.st_mode)) {
    if (uint64_t(st.st_size) > uint64_t(SIZE_MAX))
      return Status(StatusCode::kIo, "cannot map '" + path + "': too large for this machine's address space");
    map->size = size_t(st.st_size);
    if (map->size != 0) {
      void* p = ::mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) return Status(StatusCode::kIo, "cannot map '" + path + "': " + std::strerror(errno));
      map->base = p;
      map->advise(0, map->size, MADV_RANDOM);
    }
    r.data_ = static_cast<const uint8_t*>(map->base);
    r.size_ = map->size;
    r.map_ = std::move(map);
  } else {
    // Not a regular file (a pipe, a device): read it whole.
    std::FILE* f = ::fdopen(fd, "rb");
    if (f == nullptr) return open_error(path, errno);
    map->fd = -1;  // owned by f now
    s = read_whole(f, path, &r.owned_);
    std::fclose(f);
    if (!s.ok()) return s;
    r.data_ = r.owned_.data();
    r.size_ = r.owned_.size();
  }
#else
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return open_error(path, errno);
  s = read_whole(f, path, &r.owned_);
  std::fclose(f);
  if (!s.ok()) return s;
  r.data_ = r.owned_.data();
  r.size_ = r.owned_.size();
#endif
  s = r.parse(options);
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  *out = std::move(r);
  return Status::Ok();
}

Status ContainerReader::parse(const ReaderOptions& options) {
  HeaderFields h;
  Status s = parse_header(data_, size_, &h);
  if (!s.ok()) return s;
  version_minor_ = h.minor;
  TableParser table(data_ + h.table_offset, size_t(h.table_size), h.table_offset, h.minor, options);
  uint32_t count = 0;
  s = table.start(&count, &metadata_);
  if (!s.ok()) return s;
  tensors_.clear();
  tensors_.reserve(count);
  index_ = std::make_unique<NameIndex>();
  index_->map.reserve(count);
  uint64_t total_elements = 0;
  for (uint32_t ti = 0; ti < count; ++ti) {
    TensorInfo t;
    s = table.entry(ti, tensors_, &t);
    if (!s.ok()) return s;
    if (t.storage != Storage::kAlias) {
      total_elements += t.count;
      if (total_elements > options.max_total_elements)
        return limit_exceeded("nnp: more than " + std::to_string(options.max_total_elements) +
                              " elements in total (limit)");
    }
    if (!index_->map.emplace(t.name, size_t(ti)).second) return corrupt("nnp: " + quoted(t.name) + ": duplicate name");
    tensors_.push_back(std::move(t));
  }
  return table.finish();
}

Status ContainerReader::find(const std::string& name, size_t* index) const {
  if (index == nullptr) return invalid_argument("ContainerReader::find: null index");
  if (index_) {
    auto it = index_->map.find(name);
    if (it != index_->map.end()) {
      *index = it->second;
      return Status::Ok();
    }
  }
  return Status(StatusCode::kNotFound, "nnp: no tensor named '" + name + "'");
}

Status ContainerReader::run_tasks(std::vector<Task>& tasks, unsigned threads) const {
  if (tasks.empty()) return Status::Ok();
  if (map_) {
    Status s = map_->check_unchanged();
    if (!s.ok()) return s;
  }
  // Largest chunks first for balance; ties by file order. Errors are reported in file order.
  std::vector<size_t> order(tasks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tasks[a].cost > tasks[b].cost; });
  std::vector<Scratch> scratch(detail::parallel_slots(tasks.size(), threads));
  detail::parallel_for(order.size(), threads, [&](size_t k, unsigned slot) {
    Task& task = tasks[order[k]];
    task.status = run_task(task, &scratch[slot]);
  });
  // The chunks copied in pieces: their CRC from the pieces' CRCs (the pieces follow each other).
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].end == 0 || tasks[i].begin != 0) continue;
    uint32_t crc = tasks[i].piece_crc;
    for (size_t j = i + 1; j < tasks.size() && tasks[j].end != 0 && tasks[j].begin != 0; ++j)
      crc = crc32c_combine(crc, tasks[j].piece_crc, tasks[j].end - tasks[j].begin);
    if (crc != tensors_[tasks[i].tensor].chunks[tasks[i].chunk].crc)
      tasks[i].status = corrupt(chunk_label(tasks[i]) + ": checksum mismatch (corrupt data)");
  }
  for (const Task& t : tasks)
    if (!t.status.ok()) return t.status;
  return Status::Ok();
}

std::string ContainerReader::chunk_label(const Task& task) const {
  return "nnp: " + quoted(task.label) + ", chunk " + std::to_string(task.chunk + 1) + " of " +
         std::to_string(tensors_[task.tensor].chunks.size());
}

Status ContainerReader::run_task(Task& task, Scratch* scratch) const {
  const TensorInfo& t = tensors_[task.tensor];
  const ChunkRef& ch = t.chunks[task.chunk];
  const uint64_t begin = task.begin, size = task.end != 0 ? task.end - task.begin : ch.size;
  const uint8_t* src = data_ + ch.offset + begin;
  struct Release {  // mapped pages go back to the page cache once used
    const Mapping* map;
    uint64_t offset, size;
    ~Release() {
      if (map) map->release(offset, size);
    }
  } release{map_.get(), ch.offset + begin, size};
  if (map_) map_->will_need(ch.offset + begin, size);
  if (task.end != 0) {  // a piece of a raw chunk (checked in run_tasks)
    task.piece_crc = crc32c(src, size_t(size));
    std::memcpy(task.out + begin, src, size_t(size));
    return Status::Ok();
  }
  if (crc32c(src, size_t(ch.size)) != ch.crc) return corrupt(chunk_label(task) + ": checksum mismatch (corrupt data)");
  if (t.storage == Storage::kRaw) {
    if (ch.size) std::memcpy(task.out, src, size_t(ch.size));
    return Status::Ok();
  }
  const uint64_t n = ch.rows * t.cols;
  const uint64_t first = ch.first_row * t.cols;
  int32_t* lv;
  const bool partial = task.levels_only && (ch.first_row < task.row_begin || ch.first_row + ch.rows > task.row_end);
  if (task.levels_only && !partial) {
    lv = reinterpret_cast<int32_t*>(task.out) + (ch.first_row - task.row_begin) * t.cols;
  } else {
    scratch->levels.resize(size_t(n));
    lv = scratch->levels.data();
  }
  Status s = decode_level_payload(src, size_t(ch.size), ch.rows, t.cols, t.params, lv);
  if (s.ok() && partial) {
    const uint64_t r0 = std::max(ch.first_row, task.row_begin), r1 = std::min(ch.first_row + ch.rows, task.row_end);
    std::memcpy(reinterpret_cast<int32_t*>(task.out) + (r0 - task.row_begin) * t.cols,
                lv + (r0 - ch.first_row) * t.cols, size_t((r1 - r0) * t.cols) * sizeof(int32_t));
  }
  ChannelScales sc;
  if (!t.row_scale.empty()) sc.row = t.row_scale.data() + ch.first_row;
  if (!t.col_scale.empty()) sc.col = t.col_scale.data();
  if (s.ok() && !task.levels_only) {
    switch (t.dtype) {
      case DType::kFloat32:
        s = dequantize(lv, ch.rows, t.cols, t.step, t.method, sc, reinterpret_cast<float*>(task.out) + first);
        break;
      case DType::kFloat64:
        s = dequantize(lv, ch.rows, t.cols, t.step, t.method, sc, reinterpret_cast<double*>(task.out) + first);
        break;
      case DType::kFloat16:
      case DType::kBFloat16: {
        scratch->values.resize(size_t(n));
        float* f = scratch->values.data();
        s = dequantize(lv, ch.rows, t.cols, t.step, t.method, sc, f);
        uint16_t* o = reinterpret_cast<uint16_t*>(task.out) + first;
        if (t.dtype == DType::kFloat16) {
          for (uint64_t i = 0; i < n; ++i) o[i] = float_to_half_bits(f[i]);
        } else {
          for (uint64_t i = 0; i < n; ++i) o[i] = float_to_bfloat16_bits(f[i]);
        }
        break;
      }
      default: s = corrupt("quantized tensor with non-float dtype");
    }
  }
  if (!s.ok()) return Status(s.code(), chunk_label(task) + ": " + s.message());
  return Status::Ok();
}

Status ContainerReader::decode_all(const std::vector<void*>& outs, const std::vector<size_t>& out_bytes,
                                   unsigned threads) const {
  if (outs.size() != tensors_.size() || out_bytes.size() != tensors_.size())
    return invalid_argument("decode_all: need one output per tensor (" + std::to_string(tensors_.size()) + ")");
  std::vector<Task> tasks;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (outs[i] == nullptr) continue;
    const TensorInfo& req = tensors_[i];
    if (out_bytes[i] != req.output_bytes())
      return invalid_argument("decode_all: output for " + quoted(req.name) + " holds " + std::to_string(out_bytes[i]) +
                              " bytes, the tensor needs " + std::to_string(req.output_bytes()));
    const size_t src = req.storage == Storage::kAlias ? req.alias_of : i;
    const TensorInfo& t = tensors_[src];
    for (size_t k = 0; k < t.chunks.size(); ++k) {
      Task task;
      task.tensor = src;
      task.chunk = k;
      task.label = req.name.c_str();
      task.out = static_cast<uint8_t*>(outs[i]);
      const uint64_t size = t.chunks[k].size;
      if (t.storage == Storage::kRaw && size > kRawPieceBytes) {
        for (uint64_t b = 0; b < size; b += kRawPieceBytes) {
          task.begin = b;
          task.end = std::min(size, b + kRawPieceBytes);
          task.cost = (task.end - b) / 16;
          tasks.push_back(task);
        }
        continue;
      }
      task.cost = t.storage == Storage::kRaw ? size / 16 : t.chunks[k].rows * t.cols + size * 8;
      tasks.push_back(std::move(task));
    }
  }
  return run_tasks(tasks, threads);
}

Status ContainerReader::decode(size_t i, void* out, size_t out_bytes, unsigned threads) const {
  if (i >= tensors_.size()) return invalid_argument("decode: tensor index " + std::to_string(i) + " out of range");
  if (out == nullptr && out_bytes != 0) return invalid_argument("decode: null output");
  std::vector<void*> outs(tensors_.size(), nullptr);
  std::vector<size_t> sizes(tensors_.size(), 0);
  if (out_bytes != tensors_[i].output_bytes())
    return invalid_argument("decode: output for " + quoted(tensors_[i].name) + " holds " + std::to_string(out_bytes) +
                            " bytes, the tensor needs " + std::to_string(tensors_[i].output_bytes()));
  if (out_bytes == 0) return Status::Ok();
  outs[i] = out;
  sizes[i] = out_bytes;
  return decode_all(outs, sizes, threads == 0 ? 0 : threads);
}

Status ContainerReader::decode(const std::string& name, void* out, size_t out_bytes, unsigned threads) const {
  size_t i;
  Status s = find(name, &i);
  if (!s.ok()) return s;
  return decode(i, out, out_bytes, threads);
}

Status ContainerReader::decode_levels(size_t i, int32_t* out, uint64_t out_count, unsigned threads) const {
  if (i >= tensors_.size()) return invalid_argument("decode_levels: tensor index out of range");
  const TensorInfo& req = tensors_[i];
  const size_t src = req.storage == Storage::kAlias ? req.alias_of : i;
  const TensorInfo& t = tensors_[src];
  if (t.storage != Storage::kQuantized)
    return invalid_argument("decode_levels: " + quoted(req.name) + " is not quantized");
  if (out_count != t.count)
    return invalid_argument("decode_levels: output holds " + std::to_string(out_count) + " levels, " +
                            quoted(req.name) + " has " + std::to_string(t.count));
  if (out == nullptr && out_count != 0) return invalid_argument("decode_levels: null output");
  std::vector<Task> tasks;
  for (size_t k = 0; k < t.chunks.size(); ++k) {
    Task task;
    task.tensor = src;
    task.chunk = k;
    task.label = req.name.c_str();
    task.out = reinterpret_cast<uint8_t*>(out);
    task.levels_only = true;
    task.cost = t.chunks[k].rows * t.cols;
    tasks.push_back(std::move(task));
  }
  return run_tasks(tasks, threads);
}

Status ContainerReader::decode_levels_rows(size_t i, uint64_t row_begin, uint64_t row_count, int32_t* out,
                                           uint64_t out_count, unsigned threads) const {
  if (i >= tensors_.size()) return invalid_argument("decode_levels_rows: tensor index out of range");
  const TensorInfo& req = tensors_[i];
  const size_t src = req.storage == Storage::kAlias ? req.alias_of : i;
  const TensorInfo& t = tensors_[src];
  if (t.storage != Storage::kQuantized)
    return invalid_argument("decode_levels_rows: " + quoted(req.name) + " is not quantized");
  if (row_begin > t.rows || row_count > t.rows - row_begin)
    return invalid_argument("decode_levels_rows: " + std::to_string(row_count) + " rows from row " +
                            std::to_string(row_begin) + " are outside " + quoted(req.name) + "'s " +
                            std::to_string(t.rows) + " rows");
  if (out_count != row_count * t.cols)
    return invalid_argument("decode_levels_rows: output holds " + std::to_string(out_count) + " levels, " +
                            std::to_string(row_count) + " rows of " + quoted(req.name) + " have " +
                            std::to_string(row_count * t.cols));
  if (out == nullptr && out_count != 0) return invalid_argument("decode_levels_rows: null output");
  const uint64_t row_end = row_begin + row_count;
  std::vector<Task> tasks;
  for (size_t k = 0; k < t.chunks.size(); ++k) {
    const ChunkRef& ch = t.chunks[k];
    if (ch.first_row + ch.rows <= row_begin || ch.first_row >= row_end) continue;
    Task task;
    task.tensor = src;
    task.chunk = k;
    task.label = req.name.c_str();
    task.out = reinterpret_cast<uint8_t*>(out);
    task.levels_only = true;
    task.row_begin = row_begin;
    task.row_end = row_end;
    task.cost = ch.rows * t.cols;
    tasks.push_back(std::move(task));
  }
  return run_tasks(tasks, threads);
}

Status ContainerReader::verify_checksums() const {
  if (map_) {
    Status s = map_->check_unchanged();
    if (!s.ok()) return s;
  }
  for (const TensorInfo& t : tensors_) {
    for (size_t k = 0; k < t.chunks.size(); ++k) {
      const ChunkRef& ch = t.chunks[k];
      if (map_) map_->will_need(ch.offset, ch.size);
      const uint32_t crc = crc32c(data_ + ch.offset, size_t(ch.size));
      if (map_) map_->release(ch.offset, ch.size);
      if (crc != ch.crc)
        return corrupt("nnp: " + quoted(t.name) + ", chunk " + std::to_string(k + 1) + " of " +
                       std::to_string(t.chunks.size()) + ": checksum mismatch (corrupt data)");
    }
  }
  return Status::Ok();
}

}  // namespace nnpress
