// The .nnp writer (encoder side, NNPRESS_ENCODER=ON). Layout: docs/FORMAT.md.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_set>

#include "../common/parallel.h"
#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"

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

// A quantized tensor's row block: rows [first_row, first_row + rows), coded into `bytes`.
struct Block {
  size_t tensor;
  uint64_t first_row, rows;
  std::vector<uint8_t> bytes;
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

// Entry i: name, dtype, role, shape (its element count into *count) and what its storage needs.
Status check_tensor(const std::vector<TensorInput>& tensors, size_t i, std::unordered_set<std::string>* names,
                    uint64_t* count) {
  const TensorInput& t = tensors[i];
  const std::string tw = "write_container: tensor '" + t.name + "'";
  if (t.name.empty() || t.name.size() > 0xFFFF) return invalid_argument(tw + ": name must have 1..65535 bytes");
  if (!names->insert(t.name).second) return invalid_argument(tw + ": duplicate name");
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
      if (t.alias_of >= i) return invalid_argument(tw + ": alias target must be an earlier tensor");
      const TensorInput& tt = tensors[t.alias_of];
      if (tt.storage == Storage::kAlias) return invalid_argument(tw + ": alias of an alias");
      if (tt.dtype != t.dtype || tt.shape != t.shape) return invalid_argument(tw + ": alias differs from its target");
      return Status::Ok();
    }
    default: return invalid_argument(tw + ": unknown storage");
  }
}

// How each quantized tensor is coded: rows x cols, rows per block, level params, and its blocks in
// table order.
struct CodingPlan {
  std::vector<LevelParams> params;
  std::vector<uint64_t> rows, cols, rows_per_block;
  std::vector<Block> blocks;
  std::vector<size_t> unpinned;  // non-empty quantized tensors whose params the writer chooses
};

CodingPlan plan_coding(const std::vector<TensorInput>& tensors, const std::vector<uint64_t>& counts,
                       const WriterOptions& options) {
  const size_t n = tensors.size();
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
void choose_params(const std::vector<TensorInput>& tensors, const std::vector<uint64_t>& counts,
                   const WriterOptions& options, CodingPlan* plan) {
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
void encode_blocks(const std::vector<TensorInput>& tensors, unsigned threads, CodingPlan* plan) {
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

// Appends chunks to the file and their entries to the table (docs/FORMAT.md).
class Assembler {
 public:
  Assembler(std::vector<uint8_t>* file, const std::vector<TensorInput>& tensors, const std::string& metadata)
      : o_(*file), stored_(tensors.size(), 0) {
    put32(&table_, uint32_t(tensors.size()));
    put32(&table_, uint32_t(metadata.size()));
    table_.insert(table_.end(), metadata.begin(), metadata.end());
  }

  // Entry i with its chunks; the quantized tensors' blocks are taken from plan->blocks in order
  // (their bytes are released once copied).
  void add_tensor(const TensorInput& t, size_t i, CodingPlan* plan) {
    put16(&table_, uint16_t(t.name.size()));
    table_.insert(table_.end(), t.name.begin(), t.name.end());
    put8(&table_, uint8_t(t.dtype));
    put8(&table_, uint8_t(t.role));
    const bool scaled = t.storage == Storage::kQuantized && (t.row_scale_exp || t.col_scale_exp);
    any_scaled_ = any_scaled_ || scaled;
    put8(&table_, scaled ? kStorageCodeQuantizedScaled : uint8_t(t.storage));
    put8(&table_, uint8_t(t.shape.size()));
    for (uint64_t d : t.shape) put64(&table_, d);
    if (t.storage == Storage::kRaw) {
      add_chunk(static_cast<const uint8_t*>(t.raw), size_t(t.raw_size));
      stored_[i] = t.raw_size;
    } else if (t.storage == Storage::kQuantized) {
      add_quantized(t, i, scaled, plan);
    } else {
      put32(&table_, t.alias_of);
    }
  }

  // The table after the chunks, then the header (version 1.1 only if a tensor has channel scales).
  void finish(WriteResult* result) {
    const uint64_t table_offset = o_.size();
    o_.insert(o_.end(), table_.begin(), table_.end());
    std::memcpy(o_.data(), kContainerMagic, 8);
    o_[8] = uint8_t(kContainerVersionMajor);
    o_[9] = uint8_t(kContainerVersionMajor >> 8);
    const uint16_t minor = any_scaled_ ? 1 : 0;
    o_[10] = uint8_t(minor);
    o_[11] = uint8_t(minor >> 8);
    set32(o_.data() + 12, 0);
    set64(o_.data() + 16, table_offset);
    set64(o_.data() + 24, table_.size());
    set32(o_.data() + 32, crc32c(table_.data(), table_.size()));
    set32(o_.data() + 36, crc32c(o_.data(), 36));
    if (result) {
      result->stored_bytes = std::move(stored_);
      result->table_bytes = table_.size();
    }
  }

 private:
  void add_chunk(const uint8_t* p, size_t n) {
    put64(&table_, o_.size());
    put64(&table_, n);
    put32(&table_, crc32c(p, n));
    o_.insert(o_.end(), p, p + n);
  }

  void add_quantized(const TensorInput& t, size_t i, bool scaled, CodingPlan* plan) {
    put8(&table_, uint8_t(t.method));
    put8(&table_, 0);  // reserved
    put8(&table_, uint8_t(plan->params[i].unary_len));
    put8(&table_, uint8_t(plan->params[i].eg_order));
    putf64(&table_, t.step);
    putf64(&table_, t.lambda);
    put64(&table_, plan->rows_per_block[i]);
    if (scaled) {
      uint64_t r, c;
      rows_cols_of(t.shape, &r, &c);
      put8(&table_, uint8_t((t.row_scale_exp ? kScaleFlagRows : 0) | (t.col_scale_exp ? kScaleFlagCols : 0)));
      if (t.row_scale_exp) table_.insert(table_.end(), t.row_scale_exp, t.row_scale_exp + r);
      if (t.col_scale_exp) table_.insert(table_.end(), t.col_scale_exp, t.col_scale_exp + c);
    }
    std::vector<Block>& blocks = plan->blocks;
    const size_t first = next_block_;
    while (next_block_ < blocks.size() && blocks[next_block_].tensor == i) ++next_block_;
    put32(&table_, uint32_t(next_block_ - first));
    for (size_t k = first; k < next_block_; ++k) {
      add_chunk(blocks[k].bytes.data(), blocks[k].bytes.size());
      stored_[i] += blocks[k].bytes.size();
      std::vector<uint8_t>().swap(blocks[k].bytes);
    }
  }

  std::vector<uint8_t>& o_;
  std::vector<uint8_t> table_;
  std::vector<uint64_t> stored_;
  size_t next_block_ = 0;
  bool any_scaled_ = false;
};

}  // namespace

Status write_container(const std::vector<TensorInput>& tensors, const WriterOptions& options, std::vector<uint8_t>* out,
                       WriteResult* result) {
  if (out == nullptr) return invalid_argument("write_container: null output");
  if (options.block_elements == 0) return invalid_argument("write_container: block_elements must be > 0");
  if (tensors.size() > 0xFFFFFFFFu) return invalid_argument("write_container: too many tensors");
  if (options.metadata.size() > 0xFFFFFFFFu) return invalid_argument("write_container: metadata too large");
  std::unordered_set<std::string> names;
  std::vector<uint64_t> counts(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    Status s = check_tensor(tensors, i, &names, &counts[i]);
    if (!s.ok()) return s;
  }

  CodingPlan plan = plan_coding(tensors, counts, options);
  choose_params(tensors, counts, options, &plan);
  encode_blocks(tensors, options.threads, &plan);

  // Header (filled last), chunks in table order, table.
  std::vector<uint8_t>& o = *out;
  o.clear();
  uint64_t data_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].storage == Storage::kRaw) data_bytes += tensors[i].raw_size;
  for (const Block& b : plan.blocks) data_bytes += b.bytes.size();
  o.reserve(size_t(kContainerHeaderSize + data_bytes + 64 * tensors.size() + options.metadata.size()));
  o.resize(kContainerHeaderSize, 0);
  Assembler file(out, tensors, options.metadata);
  for (size_t i = 0; i < tensors.size(); ++i) file.add_tensor(tensors[i], i, &plan);
  file.finish(result);
  if (options.verify) {
    ContainerReader reader;
    Status s = ContainerReader::open_memory(out->data(), out->size(), &reader);
    if (s.ok()) s = reader.verify_checksums();
    if (!s.ok()) return Status(s.code(), "write_container: the assembled file does not parse: " + s.message());
  }
  return Status::Ok();
}

}  // namespace nnpress
