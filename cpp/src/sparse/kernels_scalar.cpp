// The scalar reference kernels: plain loops in the order the formats describe. Every SIMD kernel is
// tested against these.
#include <cstring>

#include "kernels_internal.h"

namespace nnpress::sparse::detail {
namespace {

template <class Col, class Value>
void rows_matvec_t(const RowsView& m, const Col* col, Value value_of, const float* x, float* y, uint32_t r0,
                   uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    float acc = 0.0f;
    for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
      float sum = 0.0f;
      for (uint32_t k = m.group_ptr[g]; k < m.group_ptr[g + 1]; ++k) sum += x[col[k]];
      acc += m.delta[value_of(g, r)] * sum;
    }
    y[r] = acc;
  }
}

template <class Col, class Value>
void rows_matmat_t(const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch, float* Y,
                   uint32_t r0, uint32_t r1) {
  constexpr size_t kTile = 64;  // batch columns per pass; same arithmetic as one column at a time
  float acc[kTile], sum[kTile];
  for (uint32_t r = r0; r < r1; ++r) {
    for (size_t b0 = 0; b0 < batch; b0 += kTile) {
      const size_t nb = batch - b0 < kTile ? batch - b0 : kTile;
      for (size_t b = 0; b < nb; ++b) acc[b] = 0.0f;
      for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
        const float d = m.delta[value_of(g, r)];
        for (size_t b = 0; b < nb; ++b) sum[b] = 0.0f;
        for (uint32_t k = m.group_ptr[g]; k < m.group_ptr[g + 1]; ++k) {
          const float* xr = X + size_t(col[k]) * batch + b0;
          for (size_t b = 0; b < nb; ++b) sum[b] += xr[b];
        }
        for (size_t b = 0; b < nb; ++b) acc[b] += d * sum[b];
      }
      float* out = Y + size_t(r) * batch + b0;
      for (size_t b = 0; b < nb; ++b) out[b] = acc[b];
    }
  }
}

template <class F>
void with_value(const RowsView& m, F&& f) {
  if (m.gv8) {
    f([&m](uint32_t g, uint32_t) { return uint32_t(m.gv8[g]); });
  } else if (m.gv16) {
    f([&m](uint32_t g, uint32_t) { return uint32_t(m.gv16[g]); });
  } else {
    f([&m](uint32_t g, uint32_t r) { return 1 + (g - m.row_ptr[r]); });
  }
}

void rows_matvec(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  with_value(m, [&](auto value_of) {
    if (m.col16) {
      rows_matvec_t(m, m.col16, value_of, x, y, r0, r1);
    } else {
      rows_matvec_t(m, m.col32, value_of, x, y, r0, r1);
    }
  });
}

void rows_matmat(const RowsView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  with_value(m, [&](auto value_of) {
    if (m.col16) {
      rows_matmat_t(m, m.col16, value_of, X, batch, Y, r0, r1);
    } else {
      rows_matmat_t(m, m.col32, value_of, X, batch, Y, r0, r1);
    }
  });
}

inline uint32_t cb_index(const uint8_t* row, uint32_t c) {
  const uint32_t j = c % 32;
  const uint8_t b = row[size_t(c / 32) * 16 + (j & 15)];
  return j < 16 ? (b & 15u) : (b >> 4);
}

void cb_matvec(const CodebookView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    float acc = 0.0f;
    for (uint32_t c = 0; c < m.cols; ++c) acc += m.lut[cb_index(row, c)] * x[c];
    y[r] = acc;
  }
}

void cb_matmat(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    float* acc = Y + size_t(r) * batch;
    for (size_t b = 0; b < batch; ++b) acc[b] = 0.0f;
    for (uint32_t c = 0; c < m.cols; ++c) {
      const float w = m.lut[cb_index(row, c)];
      const float* xr = X + size_t(c) * batch;
      for (size_t b = 0; b < batch; ++b) acc[b] += w * xr[b];
    }
  }
}

const KernelTable kTable = {rows_matvec, rows_matmat, cb_matvec, cb_matmat};

}  // namespace

const KernelTable* scalar_kernels() { return &kTable; }

}  // namespace nnpress::sparse::detail
