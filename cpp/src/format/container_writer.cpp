// The .nnp writer (encoder side, NNPRESS_ENCODER=ON). Layout: docs/FORMAT.md.
//
// One Assembler serves both writers: it validates a batch of tensors, codes the row blocks of the
// whole batch on one pool, and appends the batch's chunks in table order to a Sink while it builds
// the table entries; finish() appends the table and fills in the header. write_container hands it
// every tensor as one batch and a memory sink; ContainerFileWriter hands it one tensor per add()
// and a sink that writes a temporary file. The bytes therefore cannot differ between the two.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <unordered_set>

#include "../common/parallel.h"
#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define NNPRESS_POSIX_FILES 1
#endif

namespace nnpress {
namespace {

void put8(std::vector<uint8_t>* o, uint8_t v) { o->push_back(v); }
void put16(std::vector<uint8_t>* o, uint16_t v) {
  o->push_back(uint8_t(v));
  o->push_back(uint8_t(v >> 8));
}
void put32(std::vector<uint8_t>* o, uint32_t v) {
  for (int i = 0; i < 4; ++i) o->push_back(uint8_t(v >> (8 * i)));
}
void put64(std::vector<uint8_t>* o, uint64_t v) {
  for (int i = 0; i < 8; ++i) o->push_back(uint8_t(v >> (8 * i)));
}
void putf64(std::vector<uint8_t>* o, double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  put64(o, u);
}
void set32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void set64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

// ---- input rules ----

// What later entries need to know about an accepted one (alias checks).
struct EntryShape {
  DType dtype;
  Storage storage;
  std::vector<uint64_t> shape;
};

// Checks that step x the extreme channel scales stays finite and > 0 (rounding is monotonic).
Status check_scaled_steps(const TensorInput& t, const std::string& tw) {
  uint64_t r, c;
  rows_cols_of(t.shape, &r, &c);
  double lo = t.step, hi = t.step;
  for (int which = 0; which < 2; ++which) {
    const int8_t* e = which == 0 ? t.row_scale_exp : t.col_scale_exp;
    const uint64_t m = which == 0 ? r : c;
    if (e == nullptr || m == 0) continue;
    int8_t emin = e[0], emax = e[0];
    for (uint64_t k = 1; k < m; ++k) {
      emin = std::min(emin, e[k]);
      emax = std::max(emax, e[k]);
    }
    lo *= channel_scale_of_exp(emin);
    hi *= channel_scale_of_exp(emax);
  }
  if (!(std::isfinite(hi) && lo > 0)) return invalid_argument(tw + ": step x channel scales overflows or underflows");
  return Status::Ok();
}

Status check_quantized(const TensorInput& t, uint64_t n, const std::string& tw) {
  if (!dtype_is_float(t.dtype)) return invalid_argument(tw + ": only float tensors can be quantized");
  if (!std::isfinite(t.step) || !(t.step > 0)) return invalid_argument(tw + ": step must be positive and finite");
  if (!std::isfinite(t.lambda)) return invalid_argument(tw + ": lambda must be finite");
  if (!is_known_quant_method(uint8_t(t.method))) return invalid_argument(tw + ": unknown method");
  if (t.rows_per_block != 0 && n != 0) {
    uint64_t r, c;
    rows_cols_of(t.shape, &r, &c);
    if (t.rows_per_block > r) return invalid_argument(tw + ": rows_per_block exceeds the rows");
  }
  if (t.levels == nullptr && n != 0) return invalid_argument(tw + ": null levels");
  if (t.row_scale_exp || t.col_scale_exp) {
    Status s = check_scaled_steps(t, tw);
    if (!s.ok()) return s;
  }
  if ((t.unary_len >= 0) != (t.eg_order >= 0))
    return invalid_argument(tw + ": set both unary_len and eg_order, or neither");
  if (t.unary_len >= 0) {
    LevelParams p;
    p.unary_len = uint32_t(t.unary_len);
    p.eg_order = uint32_t(t.eg_order);
    if (!check_level_params(p).ok()) return invalid_argument(tw + ": unary_len/eg_order out of range");
  }
  return Status::Ok();
}

// Entry `index` (earlier holds the accepted entries 0 .. index - 1): name, dtype, role, shape (its
// element count into *count) and what its storage needs. The name is not recorded here.
Status check_tensor(const TensorInput& t, size_t index, const std::vector<EntryShape>& earlier,
                    const std::unordered_set<std::string>& names, const std::string& label, uint64_t* count) {
  const std::string tw = label + ": tensor '" + t.name + "'";
  if (t.name.empty() || t.name.size() > 0xFFFF) return invalid_argument(tw + ": name must have 1..65535 bytes");
  if (names.count(t.name)) return invalid_argument(tw + ": duplicate name");
  if (dtype_size(t.dtype) == 0) return invalid_argument(tw + ": unknown dtype");
  if (uint8_t(t.role) > uint8_t(TensorRole::kOther)) return invalid_argument(tw + ": unknown role");
  if (t.shape.size() > kMaxDims) return invalid_argument(tw + ": more than 8 dimensions");
  uint64_t n = 1;
  for (uint64_t d : t.shape) {
    if (d != 0 && n > UINT64_MAX / d) return invalid_argument(tw + ": element count overflows");
    n *= d;
  }
  *count = n;
  switch (t.storage) {
    case Storage::kRaw:
      if (t.row_scale_exp || t.col_scale_exp) return invalid_argument(tw + ": channel scales on a raw tensor");
      if (t.raw_size != n * dtype_size(t.dtype))
        return invalid_argument(tw + ": raw data has " + std::to_string(t.raw_size) + " bytes, shape and dtype need " +
                                std::to_string(n * dtype_size(t.dtype)));
      if (t.raw == nullptr && t.raw_size != 0) return invalid_argument(tw + ": null raw data");
      return Status::Ok();
    case Storage::kQuantized: return check_quantized(t, n, tw);
    case Storage::kAlias: {
      if (t.alias_of >= index) return invalid_argument(tw + ": alias target must be an earlier tensor");
      const EntryShape& tt = earlier[t.alias_of];
      if (tt.storage == Storage::kAlias) return invalid_argument(tw + ": alias of an alias");
      if (tt.dtype != t.dtype || tt.shape != t.shape) return invalid_argument(tw + ": alias differs from its target");
      return Status::Ok();
    }
    default: return invalid_argument(tw + ": unknown storage");
  }
}

Status check_options(const WriterOptions& options, const std::string& label) {
  if (options.block_elements == 0) return invalid_argument(label + ": block_elements must be > 0");
  if (options.metadata.size() > 0xFFFFFFFFu) return invalid_argument(label + ": metadata too large");
  return Status::Ok();
}

// ---- coding ----

// A quantized tensor's row block: rows [first_row, first_row + rows), coded into `bytes`.
struct Block {
  size_t tensor;  // index within the batch
  uint64_t first_row, rows;
  std::vector<uint8_t> bytes;
};

// How each quantized tensor of a batch is coded: rows x cols, rows per block, level params, and its
// blocks in table order.
struct CodingPlan {
  std::vector<LevelParams> params;
  std::vector<uint64_t> rows, cols, rows_per_block;
  std::vector<Block> blocks;
  std::vector<size_t> unpinned;  // non-empty quantized tensors whose params the writer chooses
};

CodingPlan plan_coding(const TensorInput* tensors, size_t n, const std::vector<uint64_t>& counts,
                       const WriterOptions& options) {
  CodingPlan plan;
  plan.params.resize(n);
  plan.rows.assign(n, 0), plan.cols.assign(n, 0), plan.rows_per_block.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const TensorInput& t = tensors[i];
    if (t.storage != Storage::kQuantized) continue;
    uint64_t& rows = plan.rows[i];
    uint64_t& cols = plan.cols[i];
    uint64_t& rpb = plan.rows_per_block[i];
    rows_cols_of(t.shape, &rows, &cols);
    if (t.unary_len >= 0) {
      plan.params[i].unary_len = uint32_t(t.unary_len);
      plan.params[i].eg_order = uint32_t(t.eg_order);
    }
    if (counts[i] == 0) continue;
    if (t.unary_len < 0) plan.unpinned.push_back(i);
    rpb = t.rows_per_block ? t.rows_per_block
                           : std::max<uint64_t>(1, std::min<uint64_t>(rows, options.block_elements / cols));
    for (uint64_t r = 0; r < rows; r += rpb) plan.blocks.push_back({i, r, std::min(rpb, rows - r), {}});
  }
  return plan;
}

// Level params for the tensors that did not pin them, largest tensors first, in parallel.
void choose_params(const TensorInput* tensors, const std::vector<uint64_t>& counts, const WriterOptions& options,
                   CodingPlan* plan) {
  std::vector<size_t> order = plan->unpinned;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return counts[a] > counts[b]; });
  detail::parallel_for(order.size(), options.threads, [&](size_t k) {
    const size_t i = order[k];
    // (a negative tolerance: the static choice, choose_level_params)
    plan->params[i] = choose_level_params_for_speed(tensors[i].levels, plan->rows[i], plan->cols[i],
                                                    options.size_tolerance);
  });
}

// Every block's payload, largest blocks first, in parallel.
void encode_blocks(const TensorInput* tensors, unsigned threads, CodingPlan* plan) {
  std::vector<Block>& blocks = plan->blocks;
  const std::vector<uint64_t>& cols = plan->cols;
  std::vector<size_t> order(blocks.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return blocks[a].rows * cols[blocks[a].tensor] > blocks[b].rows * cols[blocks[b].tensor];
  });
  detail::parallel_for(order.size(), threads, [&](size_t k) {
    Block& b = blocks[order[k]];
    const uint64_t c = cols[b.tensor];
    b.bytes.reserve(size_t(b.rows * c / 2 + 64));
    encode_level_payload(tensors[b.tensor].levels + b.first_row * c, b.rows, c, plan->params[b.tensor], &b.bytes);
  });
}

// CRC-32C of a chunk; a large one in pieces on several threads, their CRCs combined in order.
uint32_t chunk_crc(const uint8_t* p, size_t n, unsigned threads) {
  constexpr size_t kPiece = size_t(4) << 20;
  if (n <= kPiece) return crc32c(p, n);
  std::vector<uint32_t> crcs((n + kPiece - 1) / kPiece);
  detail::parallel_for(crcs.size(), threads,
                       [&](size_t k) { crcs[k] = crc32c(p + k * kPiece, std::min(kPiece, n - k * kPiece)); });
  uint32_t crc = crcs[0];
  for (size_t k = 1; k < crcs.size(); ++k) crc = crc32c_combine(crc, crcs[k], std::min(kPiece, n - k * kPiece));
  return crc;
}

// ---- where the bytes go ----

class Sink {
 public:
  virtual ~Sink() = default;
  // Appends n bytes at the end of the file.
  virtual Status append(const uint8_t* p, size_t n) = 0;
  // Replaces the first kContainerHeaderSize bytes (the placeholder written first).
  virtual Status put_header(const uint8_t* h) = 0;
  // A hint: about `more` bytes will be appended.
  virtual void reserve(uint64_t more) { (void)more; }
  uint64_t size() const { return size_; }

 protected:
  uint64_t size_ = 0;
};

class MemorySink final : public Sink {
 public:
  explicit MemorySink(std::vector<uint8_t>* out) : o_(*out) { o_.clear(); }
  Status append(const uint8_t* p, size_t n) override {
    o_.insert(o_.end(), p, p + n);
    size_ += n;
    return Status::Ok();
  }
  Status put_header(const uint8_t* h) override {
    std::memcpy(o_.data(), h, kContainerHeaderSize);
    return Status::Ok();
  }
  void reserve(uint64_t more) override { o_.reserve(size_t(o_.size() + more)); }

 private:
  std::vector<uint8_t>& o_;
};

// ---- the assembler ----

// Appends chunks to the sink and entries to the table (docs/FORMAT.md), batch by batch.
class Assembler {
 public:
  Assembler(Sink* sink, const WriterOptions& options, std::string label)
      : sink_(sink), options_(options), label_(std::move(label)) {}

  // The header placeholder.
  Status begin() {
    const uint8_t zeros[kContainerHeaderSize] = {};
    return sink_->append(zeros, sizeof zeros);
  }

  // Validates the n tensors (an alias may refer to any earlier tensor, of this batch or an earlier
  // one), codes their row blocks on one pool and appends them. A refused input changes nothing; a
  // sink failure leaves the file incomplete (the caller discards it).
  Status add(const TensorInput* batch, size_t n) {
    if (n > size_t(0xFFFFFFFFu) - entries_.size()) return invalid_argument(label_ + ": too many tensors");
    std::vector<uint64_t> counts(n);
    const size_t first = entries_.size();
    std::unordered_set<std::string> batch_names;
    Status s;
    for (size_t k = 0; k < n && s.ok(); ++k) {
      const TensorInput& t = batch[k];
      s = check_tensor(t, first + k, entries_, names_, label_, &counts[k]);
      if (s.ok() && !batch_names.insert(t.name).second)
        s = invalid_argument(label_ + ": tensor '" + t.name + "': duplicate name");
      if (s.ok()) entries_.push_back({t.dtype, t.storage, t.shape});
    }
    if (!s.ok()) {
      entries_.resize(first);
      return s;
    }
    names_.insert(batch_names.begin(), batch_names.end());
    stored_.resize(entries_.size(), 0);

    CodingPlan plan = plan_coding(batch, n, counts, options_);
    choose_params(batch, counts, options_, &plan);
    encode_blocks(batch, options_.threads, &plan);

    uint64_t data_bytes = 0;
    for (size_t k = 0; k < n; ++k)
      if (batch[k].storage == Storage::kRaw) data_bytes += batch[k].raw_size;
    for (const Block& b : plan.blocks) data_bytes += b.bytes.size();
    sink_->reserve(data_bytes);
    size_t next_block = 0;
    for (size_t k = 0; k < n && s.ok(); ++k) s = add_entry(batch[k], k, first + k, &plan, &next_block);
    return s;
  }

  // The table after the chunks, then the header (version 1.1 only if a tensor has channel scales).
  Status finish(WriteResult* result) {
    std::vector<uint8_t> table;
    table.reserve(8 + options_.metadata.size() + entries_table_.size());
    put32(&table, uint32_t(entries_.size()));
    put32(&table, uint32_t(options_.metadata.size()));
    table.insert(table.end(), options_.metadata.begin(), options_.metadata.end());
    table.insert(table.end(), entries_table_.begin(), entries_table_.end());
    const uint64_t table_offset = sink_->size();
    Status s = sink_->append(table.data(), table.size());
    if (!s.ok()) return s;
    uint8_t h[kContainerHeaderSize];
    std::memcpy(h, kContainerMagic, 8);
    h[8] = uint8_t(kContainerVersionMajor);
    h[9] = uint8_t(kContainerVersionMajor >> 8);
    const uint16_t minor = any_scaled_ ? 1 : 0;
    h[10] = uint8_t(minor);
    h[11] = uint8_t(minor >> 8);
    set32(h + 12, 0);
    set64(h + 16, table_offset);
    set64(h + 24, table.size());
    set32(h + 32, crc32c(table.data(), table.size()));
    set32(h + 36, crc32c(h, 36));
    s = sink_->put_header(h);
    if (!s.ok()) return s;
    if (result) {
      result->stored_bytes = stored_;
      result->table_bytes = table.size();
    }
    return Status::Ok();
  }

  size_t tensor_count() const { return entries_.size(); }
  const std::vector<uint64_t>& stored() const { return stored_; }

 private:
  // Entry `index` (batch position k) with its chunks; a quantized tensor's blocks are taken from
  // plan->blocks in order (their bytes are released once appended).
  Status add_entry(const TensorInput& t, size_t k, size_t index, CodingPlan* plan, size_t* next_block) {
    std::vector<uint8_t>& tb = entries_table_;
    put16(&tb, uint16_t(t.name.size()));
    tb.insert(tb.end(), t.name.begin(), t.name.end());
    put8(&tb, uint8_t(t.dtype));
    put8(&tb, uint8_t(t.role));
    const bool scaled = t.storage == Storage::kQuantized && (t.row_scale_exp || t.col_scale_exp);
    any_scaled_ = any_scaled_ || scaled;
    put8(&tb, scaled ? kStorageCodeQuantizedScaled : uint8_t(t.storage));
    put8(&tb, uint8_t(t.shape.size()));
    for (uint64_t d : t.shape) put64(&tb, d);
    if (t.storage == Storage::kRaw) {
      stored_[index] = t.raw_size;
      return add_chunk(static_cast<const uint8_t*>(t.raw), size_t(t.raw_size));
    }
    if (t.storage == Storage::kQuantized) return add_quantized(t, k, index, scaled, plan, next_block);
    put32(&tb, t.alias_of);
    return Status::Ok();
  }

  Status add_chunk(const uint8_t* p, size_t n) {
    put64(&entries_table_, sink_->size());
    put64(&entries_table_, n);
    put32(&entries_table_, chunk_crc(p, n, options_.threads));
    return n ? sink_->append(p, n) : Status::Ok();
  }

  Status add_quantized(const TensorInput& t, size_t k, size_t index, bool scaled, CodingPlan* plan,
                       size_t* next_block) {
    std::vector<uint8_t>& tb = entries_table_;
    put8(&tb, uint8_t(t.method));
    put8(&tb, 0);  // reserved
    put8(&tb, uint8_t(plan->params[k].unary_len));
    put8(&tb, uint8_t(plan->params[k].eg_order));
    putf64(&tb, t.step);
    putf64(&tb, t.lambda);
    put64(&tb, plan->rows_per_block[k]);
    if (scaled) {
      uint64_t r, c;
      rows_cols_of(t.shape, &r, &c);
      put8(&tb, uint8_t((t.row_scale_exp ? kScaleFlagRows : 0) | (t.col_scale_exp ? kScaleFlagCols : 0)));
      if (t.row_scale_exp) tb.insert(tb.end(), t.row_scale_exp, t.row_scale_exp + r);
      if (t.col_scale_exp) tb.insert(tb.end(), t.col_scale_exp, t.col_scale_exp + c);
    }
    std::vector<Block>& blocks = plan->blocks;
    const size_t first = *next_block;
    size_t& next = *next_block;
    while (next < blocks.size() && blocks[next].tensor == k) ++next;
    put32(&tb, uint32_t(next - first));
    for (size_t b = first; b < next; ++b) {
      Status s = add_chunk(blocks[b].bytes.data(), blocks[b].bytes.size());
      if (!s.ok()) return s;
      stored_[index] += blocks[b].bytes.size();
      std::vector<uint8_t>().swap(blocks[b].bytes);
    }
    return Status::Ok();
  }

  Sink* sink_;
  const WriterOptions options_;
  const std::string label_;
  std::vector<EntryShape> entries_;
  std::unordered_set<std::string> names_;
  std::vector<uint8_t> entries_table_;  // the table after its count and metadata
  std::vector<uint64_t> stored_;
  bool any_scaled_ = false;
};

}  // namespace

Status write_container(const std::vector<TensorInput>& tensors, const WriterOptions& options, std::vector<uint8_t>* out,
                       WriteResult* result) {
  const std::string label = "write_container";
  if (out == nullptr) return invalid_argument(label + ": null output");
  Status s = check_options(options, label);
  if (!s.ok()) return s;
  if (tensors.size() > 0xFFFFFFFFu) return invalid_argument(label + ": too many tensors");
  std::vector<uint8_t> bytes;
  MemorySink sink(&bytes);
  Assembler file(&sink, options, label);
  s = file.begin();
  if (s.ok()) s = file.add(tensors.data(), tensors.size());
  if (s.ok()) s = file.finish(result);
  if (!s.ok()) return s;
  *out = std::move(bytes);
  if (options.verify) {
    ContainerReader reader;
    s = ContainerReader::open_memory(out->data(), out->size(), &reader);
    if (s.ok()) s = reader.verify_checksums();
    if (!s.ok()) return Status(s.code(), label + ": the assembled file does not parse: " + s.message());
  }
  return Status::Ok();
}

// ---- ContainerFileWriter ----

#ifdef NNPRESS_POSIX_FILES
namespace {

std::string errno_text(int e) { return std::strerror(e); }

// Writes to the open temporary file; every failure names the destination and the reason.
class FileSink final : public Sink {
 public:
  FileSink(int fd, std::string dest) : fd_(fd), dest_(std::move(dest)) {}
  Status append(const uint8_t* p, size_t n) override {
    Status s = write_all(p, n, size_);
    if (s.ok()) size_ += n;
    return s;
  }
  Status put_header(const uint8_t* h) override { return write_all(h, kContainerHeaderSize, 0); }

 private:
  // pwrite in pieces until everything is written: a short write is retried, and a write that
  // makes no progress is an error (the kernel reports the reason on the next attempt).
  Status write_all(const uint8_t* p, size_t n, uint64_t offset) {
    while (n > 0) {
      const size_t piece = std::min<size_t>(n, size_t(1) << 30);
      const ssize_t w = ::pwrite(fd_, p, piece, off_t(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        return Status(StatusCode::kIo, "cannot write '" + dest_ + "': " + errno_text(errno));
      }
      if (w == 0) return Status(StatusCode::kIo, "cannot write '" + dest_ + "': short write");
      p += w;
      n -= size_t(w);
      offset += uint64_t(w);
    }
    return Status::Ok();
  }

  const int fd_;
  const std::string dest_;
};

// The folder of `path` ("." for a bare name) and its last component.
void split_path(const std::string& path, std::string* dir, std::string* base) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    *dir = ".";
    *base = path;
  } else {
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *base = path.substr(slash + 1);
  }
}

// Eight random characters for a temporary name (uniqueness comes from O_EXCL; this only makes
// collisions rare).
std::string random_tag() {
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  uint64_t seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^ (uint64_t(::getpid()) << 32) ^
                  uint64_t(reinterpret_cast<uintptr_t>(&seed));
  try {
    std::random_device rd;
    seed ^= (uint64_t(rd()) << 32) | rd();
  } catch (...) {  // no entropy source: the clock and addresses above remain
  }
  std::mt19937_64 rng(seed);
  std::string s(8, 'a');
  for (char& c : s) c = kChars[rng() % (sizeof kChars - 1)];
  return s;
}

}  // namespace
#endif

struct ContainerFileWriter::Impl {
  enum class State { kClosed, kOpen, kFinished };
  State state = State::kClosed;
  std::string path, temp;
  int fd = -1;
  WriterOptions options;
  std::unique_ptr<Sink> sink;
  std::unique_ptr<Assembler> assembler;
  uint64_t final_size = 0;
  std::string closed_why = "not open";  // for the error of a call on a closed writer

  // Closes and removes the temporary file (if any); the writer is closed afterwards.
  void discard(const std::string& why) {
#ifdef NNPRESS_POSIX_FILES
    if (fd >= 0) ::close(fd);
    if (!temp.empty()) ::unlink(temp.c_str());
#endif
    fd = -1;
    temp.clear();
    if (state == State::kOpen) {
      state = State::kClosed;
      closed_why = why;
    }
  }
  // Returns s after discarding the file when s is an error.
  Status fail_if(Status s) {
    if (!s.ok()) discard("closed after an error (" + s.message() + ")");
    return s;
  }
  Status io_error(const std::string& what, int e) {
    return fail_if(Status(StatusCode::kIo, what + " '" + path + "': " + std::strerror(e)));
  }
  Status closed_error(const char* call) const {
    return invalid_argument(std::string("ContainerFileWriter::") + call + ": the writer is " + closed_why);
  }
};

ContainerFileWriter::ContainerFileWriter() : impl_(std::make_unique<Impl>()) {}
ContainerFileWriter::~ContainerFileWriter() { abort(); }
ContainerFileWriter::ContainerFileWriter(ContainerFileWriter&&) noexcept = default;
ContainerFileWriter& ContainerFileWriter::operator=(ContainerFileWriter&& other) noexcept {
  if (this != &other) {
    abort();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

void ContainerFileWriter::abort() {
  if (impl_ && impl_->state == Impl::State::kOpen) impl_->discard("aborted");
}

bool ContainerFileWriter::is_open() const { return impl_ && impl_->state == Impl::State::kOpen; }

size_t ContainerFileWriter::tensor_count() const {
  return impl_ && impl_->assembler ? impl_->assembler->tensor_count() : 0;
}

uint64_t ContainerFileWriter::bytes_written() const {
  if (!impl_) return 0;
  if (impl_->state == Impl::State::kFinished) return impl_->final_size;
  return impl_->sink ? impl_->sink->size() : 0;
}

const std::vector<uint64_t>& ContainerFileWriter::stored_bytes() const {
  static const std::vector<uint64_t> none;
  return impl_ && impl_->assembler ? impl_->assembler->stored() : none;
}

const std::string& ContainerFileWriter::temp_path() const {
  static const std::string none;
  return impl_ ? impl_->temp : none;
}

Status ContainerFileWriter::open(const std::string& path, const WriterOptions& options) {
  const std::string label = "ContainerFileWriter";
  if (!impl_) impl_ = std::make_unique<Impl>();
  if (impl_->state == Impl::State::kOpen) return invalid_argument(label + ": already open ('" + impl_->path + "')");
  if (path.empty()) return invalid_argument(label + ": empty path");
  Status s = check_options(options, label);
  if (!s.ok()) return s;
#ifndef NNPRESS_POSIX_FILES
  return Status(StatusCode::kUnsupported, label + ": streaming to a file needs POSIX file functions");
#else
  std::string dir, base;
  split_path(path, &dir, &base);
  if (base.empty()) return invalid_argument(label + ": '" + path + "' names a folder, not a file");
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return Status(StatusCode::kIo, "cannot write '" + path + "': it is a folder");
  *impl_ = Impl();
  Impl& w = *impl_;
  w.path = path;
  w.options = options;
  int fd = -1;
  std::string temp;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    temp = (dir == "/" ? "" : dir) + "/." + base + "." + random_tag() + ".tmp";
    do {
      fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0)
    return Status(StatusCode::kIo, "cannot create a temporary file next to '" + path + "': " + std::strerror(errno));
  w.fd = fd;
  w.temp = temp;
  w.state = Impl::State::kOpen;
  w.sink = std::make_unique<FileSink>(fd, w.path);
  w.assembler = std::make_unique<Assembler>(w.sink.get(), w.options, "writing '" + path + "'");
  return w.fail_if(w.assembler->begin());
#endif
}

Status ContainerFileWriter::add(const TensorInput& tensor) { return add_batch(&tensor, 1); }

Status ContainerFileWriter::add(const std::vector<TensorInput>& tensors) {
  return add_batch(tensors.data(), tensors.size());
}

Status ContainerFileWriter::add_batch(const TensorInput* tensors, size_t n) {
  if (!is_open()) return impl_ ? impl_->closed_error("add") : invalid_argument("ContainerFileWriter::add: moved-from");
  Status s = impl_->assembler->add(tensors, n);
  // A refused input wrote nothing; anything else failing left the file incomplete.
  if (s.code() == StatusCode::kInvalidArgument) return s;
  return impl_->fail_if(s);
}

Status ContainerFileWriter::finish(uint64_t* file_size, WriteResult* result) {
  if (!is_open())
    return impl_ ? impl_->closed_error("finish") : invalid_argument("ContainerFileWriter::finish: moved-from");
#ifndef NNPRESS_POSIX_FILES
  return Status(StatusCode::kUnsupported, "ContainerFileWriter: not supported on this platform");
#else
  Impl& w = *impl_;
  WriteResult res;
  Status s = w.assembler->finish(&res);
  if (!s.ok()) return w.fail_if(s);
  const uint64_t size = w.sink->size();
  if (::fsync(w.fd) != 0) return w.io_error("cannot sync", errno);
  const int fd = w.fd;
  w.fd = -1;
  if (::close(fd) != 0) return w.io_error("cannot write", errno);
  if (w.options.verify) {
    ContainerReader reader;
    s = ContainerReader::open_file(w.temp, &reader);
    if (s.ok()) s = reader.verify_checksums();
    if (!s.ok())
      return w.fail_if(
          Status(s.code(), "writing '" + w.path + "': the written file does not read back: " + s.message()));
  }
  if (::rename(w.temp.c_str(), w.path.c_str()) != 0) return w.io_error("cannot rename the temporary file onto", errno);
  w.temp.clear();
  w.state = Impl::State::kFinished;
  w.closed_why = "already finished";
  w.final_size = size;
  if (file_size) *file_size = size;
  if (result) *result = std::move(res);
  // Make the rename durable. Some file systems cannot sync a folder (EINVAL): nothing to report.
  std::string dir, base;
  split_path(w.path, &dir, &base);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  if (dfd >= 0) {
    const int rc = ::fsync(dfd);
    const int e = errno;
    ::close(dfd);
    if (rc != 0 && e != EINVAL && e != EROFS && e != EBADF)
      return Status(StatusCode::kIo,
                    "'" + w.path + "' was written, but its folder could not be synced: " + std::strerror(e));
  }
  return Status::Ok();
#endif
}

}  // namespace nnpress
