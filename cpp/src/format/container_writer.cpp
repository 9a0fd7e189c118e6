// The .nnp writer (encoder side, NNPRESS_ENCODER=ON). Layout: docs/FORMAT.md.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_set>

#include "nnpress/format/container.h"
#include "nnpress/format/crc.h"
#include "../common/parallel.h"

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

struct Block {
  size_t tensor;
  uint64_t first_row, rows;
  std::vector<uint8_t> bytes;
};


}  // namespace

Status write_container(const std::vector<TensorInput>& tensors, const WriterOptions& options,
                       std::vector<uint8_t>* out, WriteResult* result) {
  if (out == nullptr) return invalid_argument("write_container: null output");
  if (options.block_elements == 0) return invalid_argument("write_container: block_elements must be > 0");
  if (tensors.size() > 0xFFFFFFFFu) return invalid_argument("write_container: too many tensors");
  if (options.metadata.size() > 0xFFFFFFFFu) return invalid_argument("write_container: metadata too large");
  // ---- validate ----
  std::unordered_set<std::string> names;
  std::vector<uint64_t> counts(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInput& t = tensors[i];
    const std::string tw = "write_container: tensor '" + t.name + "'";
    if (t.name.empty() || t.name.size() > 0xFFFF) return invalid_argument(tw + ": name must have 1..65535 bytes");
    if (!names.insert(t.name).second) return invalid_argument(tw + ": duplicate name");
    if (dtype_size(t.dtype) == 0) return invalid_argument(tw + ": unknown dtype");
    if (uint8_t(t.role) > uint8_t(TensorRole::kOther)) return invalid_argument(tw + ": unknown role");
    if (t.shape.size() > kMaxDims) return invalid_argument(tw + ": more than 8 dimensions");
    uint64_t n = 1;
    for (uint64_t d : t.shape) {
      if (d != 0 && n > UINT64_MAX / d) return invalid_argument(tw + ": element count overflows");
      n *= d;
    }
    counts[i] = n;
    switch (t.storage) {
      case Storage::kRaw:
        if (t.row_scale_exp || t.col_scale_exp) return invalid_argument(tw + ": channel scales on a raw tensor");
        if (t.raw_size != n * dtype_size(t.dtype))
          return invalid_argument(tw + ": raw data has " + std::to_string(t.raw_size) + " bytes, shape and dtype need " +
                                  std::to_string(n * dtype_size(t.dtype)));
        if (t.raw == nullptr && t.raw_size != 0) return invalid_argument(tw + ": null raw data");
        break;
      case Storage::kQuantized:
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
          if (!(std::isfinite(hi) && lo > 0))
            return invalid_argument(tw + ": step x channel scales overflows or underflows");
        }
        if ((t.unary_len >= 0) != (t.eg_order >= 0)) return invalid_argument(tw + ": set both unary_len and eg_order, or neither");
        if (t.unary_len >= 0) {
          LevelParams p;
          p.unary_len = uint32_t(t.unary_len);
          p.eg_order = uint32_t(t.eg_order);
          if (!check_level_params(p).ok()) return invalid_argument(tw + ": unary_len/eg_order out of range");
        }
        break;
      case Storage::kAlias: {
        if (t.alias_of >= i) return invalid_argument(tw + ": alias target must be an earlier tensor");
        const TensorInput& tt = tensors[t.alias_of];
        if (tt.storage == Storage::kAlias) return invalid_argument(tw + ": alias of an alias");
        if (tt.dtype != t.dtype || tt.shape != t.shape) return invalid_argument(tw + ": alias differs from its target");
        break;
      }
      default:
        return invalid_argument(tw + ": unknown storage");
    }
  }

  // ---- coding parameters per quantized tensor, and the row blocks ----
  std::vector<LevelParams> params(tensors.size());
  std::vector<uint64_t> rows(tensors.size(), 0), cols(tensors.size(), 0), rpb(tensors.size(), 0);
  std::vector<Block> blocks;
  std::vector<size_t> quantized;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInput& t = tensors[i];
    if (t.storage != Storage::kQuantized) continue;
    rows_cols_of(t.shape, &rows[i], &cols[i]);
    if (t.unary_len >= 0) {
      params[i].unary_len = uint32_t(t.unary_len);
      params[i].eg_order = uint32_t(t.eg_order);
    }
    if (counts[i] == 0) continue;
    if (t.unary_len < 0) quantized.push_back(i);  // params still to choose
    rpb[i] = t.rows_per_block ? t.rows_per_block
                             : std::max<uint64_t>(1, std::min<uint64_t>(rows[i], options.block_elements / cols[i]));
    for (uint64_t r = 0; r < rows[i]; r += rpb[i]) blocks.push_back({i, r, std::min(rpb[i], rows[i] - r), {}});
  }
  {
    std::vector<size_t> order = quantized;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return counts[a] > counts[b]; });
    detail::parallel_for(order.size(), options.threads, [&](size_t k) {
      const size_t i = order[k];
      params[i] = options.size_tolerance < 0
                      ? choose_level_params(tensors[i].levels, counts[i])
                      : choose_level_params_for_speed(tensors[i].levels, rows[i], cols[i], options.size_tolerance);
    });
  }
  {
    std::vector<size_t> order(blocks.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return blocks[a].rows * cols[blocks[a].tensor] > blocks[b].rows * cols[blocks[b].tensor];
    });
    detail::parallel_for(order.size(), options.threads, [&](size_t k) {
      Block& b = blocks[order[k]];
      const uint64_t c = cols[b.tensor];
      b.bytes.reserve(size_t(b.rows * c / 2 + 64));
      encode_level_payload(tensors[b.tensor].levels + b.first_row * c, b.rows, c, params[b.tensor], &b.bytes);
    });
  }

  // ---- assemble: header, chunks in table order, table ----
  std::vector<uint8_t>& o = *out;
  o.clear();
  uint64_t data_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].storage == Storage::kRaw) data_bytes += tensors[i].raw_size;
  for (const Block& b : blocks) data_bytes += b.bytes.size();
  o.reserve(size_t(kContainerHeaderSize + data_bytes + 64 * tensors.size() + options.metadata.size()));
  o.resize(kContainerHeaderSize, 0);

  std::vector<uint8_t> table;
  put32(&table, uint32_t(tensors.size()));
  put32(&table, uint32_t(options.metadata.size()));
  table.insert(table.end(), options.metadata.begin(), options.metadata.end());
  std::vector<uint64_t> stored(tensors.size(), 0);
  size_t next_block = 0;
  bool any_scaled = false;  // a file with channel scales is version 1.1, otherwise 1.0
  auto add_chunk = [&](const uint8_t* p, size_t n) {
    put64(&table, o.size());
    put64(&table, n);
    put32(&table, crc32c(p, n));
    o.insert(o.end(), p, p + n);
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInput& t = tensors[i];
    put16(&table, uint16_t(t.name.size()));
    table.insert(table.end(), t.name.begin(), t.name.end());
    put8(&table, uint8_t(t.dtype));
    put8(&table, uint8_t(t.role));
    const bool scaled = t.storage == Storage::kQuantized && (t.row_scale_exp || t.col_scale_exp);
    any_scaled = any_scaled || scaled;
    put8(&table, scaled ? kStorageCodeQuantizedScaled : uint8_t(t.storage));
    put8(&table, uint8_t(t.shape.size()));
    for (uint64_t d : t.shape) put64(&table, d);
    if (t.storage == Storage::kRaw) {
      add_chunk(static_cast<const uint8_t*>(t.raw), size_t(t.raw_size));
      stored[i] = t.raw_size;
    } else if (t.storage == Storage::kQuantized) {
      put8(&table, uint8_t(t.method));
      put8(&table, 0);  // reserved
      put8(&table, uint8_t(params[i].unary_len));
      put8(&table, uint8_t(params[i].eg_order));
      putf64(&table, t.step);
      putf64(&table, t.lambda);
      put64(&table, rpb[i]);
      if (scaled) {
        uint64_t r, c;
        rows_cols_of(t.shape, &r, &c);
        put8(&table, uint8_t((t.row_scale_exp ? kScaleFlagRows : 0) | (t.col_scale_exp ? kScaleFlagCols : 0)));
        if (t.row_scale_exp) table.insert(table.end(), t.row_scale_exp, t.row_scale_exp + r);
        if (t.col_scale_exp) table.insert(table.end(), t.col_scale_exp, t.col_scale_exp + c);
      }
      const size_t first = next_block;
      while (next_block < blocks.size() && blocks[next_block].tensor == i) ++next_block;
      put32(&table, uint32_t(next_block - first));
      for (size_t k = first; k < next_block; ++k) {
        add_chunk(blocks[k].bytes.data(), blocks[k].bytes.size());
        stored[i] += blocks[k].bytes.size();
        std::vector<uint8_t>().swap(blocks[k].bytes);
      }
    } else {
      put32(&table, t.alias_of);
    }
  }
  const uint64_t table_offset = o.size();
  o.insert(o.end(), table.begin(), table.end());
  std::memcpy(o.data(), kContainerMagic, 8);
  o[8] = uint8_t(kContainerVersionMajor);
  o[9] = uint8_t(kContainerVersionMajor >> 8);
  const uint16_t minor = any_scaled ? 1 : 0;
  o[10] = uint8_t(minor);
  o[11] = uint8_t(minor >> 8);
  set32(o.data() + 12, 0);
  set64(o.data() + 16, table_offset);
  set64(o.data() + 24, table.size());
  set32(o.data() + 32, crc32c(table.data(), table.size()));
  set32(o.data() + 36, crc32c(o.data(), 36));
  if (result) {
    result->stored_bytes = std::move(stored);
    result->table_bytes = table.size();
  }
  return Status::Ok();
}

}  // namespace nnpress
