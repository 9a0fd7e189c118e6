// AVX2 + FMA kernels. Compiled with -mavx2 -mfma -mf16c; run only when isa_supported(kAvx2).
// Includes nothing but intrinsics and the plain views (see kernels_internal.h for why).
#include <immintrin.h>

#include "../kernels_internal.h"

namespace nnpress::sparse::detail {
namespace {

struct CerValue {
  const uint32_t* row_ptr;
  uint32_t operator()(uint32_t g, uint32_t r) const { return 1 + (g - row_ptr[r]); }
};
struct Gv8 {
  const uint8_t* gv;
  uint32_t operator()(uint32_t g, uint32_t) const { return gv[g]; }
};
struct Gv16 {
  const uint16_t* gv;
  uint32_t operator()(uint32_t g, uint32_t) const { return gv[g]; }
};

inline __m256i load_idx8(const uint16_t* p) { return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256i load_idx8(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Lanes [0, n) set (n in 0..8), as a vector mask for maskload/maskstore/mask gathers.
inline __m256i lane_mask(uint32_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Batch 1: as in the AVX-512 file. Small groups (<= kSmallGroup entries) broadcast their value into a
// per-entry buffer and consecutive small groups run as one flat stretch of scalar FMAs with four
// accumulators (gathers cost as much as scalar loads on the CPUs measured; varying group lengths
// would cost a branch miss each). Larger groups are summed, then multiplied once.
constexpr uint32_t kSmallGroup = 64;
constexpr uint32_t kSegment = 1024;

struct Acc4 {
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  float total() const { return (a0 + a1) + (a2 + a3); }
};

template <class Col>
inline void flat_matvec(const Col* col, const float* vals, uint32_t n, const float* x, Acc4* acc) {
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    acc->a0 += vals[i] * x[col[i]];
    acc->a1 += vals[i + 1] * x[col[i + 1]];
    acc->a2 += vals[i + 2] * x[col[i + 2]];
    acc->a3 += vals[i + 3] * x[col[i + 3]];
  }
  for (; i < n; ++i) acc->a0 += vals[i] * x[col[i]];
}

template <class Col>
inline float group_sum(const Col* col, uint32_t n, const float* x) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += x[col[i]];
    s1 += x[col[i + 1]];
    s2 += x[col[i + 2]];
    s3 += x[col[i + 3]];
  }
  for (; i < n; ++i) s0 += x[col[i]];
  return (s0 + s1) + (s2 + s3);
}

template <class Col, class Value>
void rows_matvec_t(const RowsView& m, const Col* col, Value value_of, const float* x, float* y, uint32_t r0, uint32_t r1) {
  alignas(32) float vals[kSegment + 16];
  for (uint32_t r = r0; r < r1; ++r) {
    Acc4 acc;
    float big = 0.0f;
    uint32_t seg0 = m.group_ptr[m.row_ptr[r]], seg_len = 0;
    for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
      const uint32_t k0 = m.group_ptr[g], k1 = m.group_ptr[g + 1], n = k1 - k0;
      const float d = m.delta[value_of(g, r)];
      if (n > kSmallGroup) {
        flat_matvec(col + seg0, vals, seg_len, x, &acc);
        big += d * group_sum(col + k0, n, x);
        seg0 = k1, seg_len = 0;
        continue;
      }
      if (seg_len + n > kSegment) {
        flat_matvec(col + seg0, vals, seg_len, x, &acc);
        seg0 = k0, seg_len = 0;
      }
      const __m256 dv = _mm256_set1_ps(d);
      uint32_t i = 0;
      do {
        _mm256_storeu_ps(vals + seg_len + i, dv);
        _mm256_storeu_ps(vals + seg_len + i + 8, dv);
        i += 16;
      } while (i < n);
      seg_len += n;
    }
    flat_matvec(col + seg0, vals, seg_len, x, &acc);
    y[r] = acc.total() + big;
  }
}

template <int NV>
struct Tile {
  __m256i last;  // lanes of the last vector that are inside the batch
  bool partial;
  inline __m256 load(const float* p, int j) const {
    return (partial && j == NV - 1) ? _mm256_maskload_ps(p, last) : _mm256_loadu_ps(p);
  }
  inline void store(float* p, int j, __m256 v) const {
    if (partial && j == NV - 1) {
      _mm256_maskstore_ps(p, last, v);
    } else {
      _mm256_storeu_ps(p, v);
    }
  }
};

template <int NV, class Col, class Value>
void rows_matmat_tile(const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch, float* Y,
                      uint32_t r0, uint32_t r1, size_t b0, const Tile<NV>& t) {
  for (uint32_t r = r0; r < r1; ++r) {
    __m256 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
    for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
      uint32_t k = m.group_ptr[g];
      const uint32_t k1 = m.group_ptr[g + 1];
      __m256 s0[NV], s1[NV];
      for (int j = 0; j < NV; ++j) s0[j] = s1[j] = _mm256_setzero_ps();
      for (; k + 2 <= k1; k += 2) {
        const float* a = X + size_t(col[k]) * batch + b0;
        const float* b = X + size_t(col[k + 1]) * batch + b0;
        for (int j = 0; j < NV; ++j) {
          s0[j] = _mm256_add_ps(s0[j], t.load(a + 8 * j, j));
          s1[j] = _mm256_add_ps(s1[j], t.load(b + 8 * j, j));
        }
      }
      if (k < k1) {
        const float* a = X + size_t(col[k]) * batch + b0;
        for (int j = 0; j < NV; ++j) s0[j] = _mm256_add_ps(s0[j], t.load(a + 8 * j, j));
      }
      const __m256 d = _mm256_set1_ps(m.delta[value_of(g, r)]);
      for (int j = 0; j < NV; ++j) acc[j] = _mm256_fmadd_ps(_mm256_add_ps(s0[j], s1[j]), d, acc[j]);
    }
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) t.store(out + 8 * j, j, acc[j]);
  }
}

// Batched, small groups (<= 12 entries on average): one FMA per entry over runs of whole groups,
// as in the AVX-512 file.
template <int NV, class Col, class Value>
void rows_matmat_tile_flat(const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch,
                           float* Y, uint32_t r0, uint32_t r1, size_t b0, const Tile<NV>& t) {
  alignas(32) float vals[kSegment + 16];
  for (uint32_t r = r0; r < r1; ++r) {
    __m256 acc0[NV], acc1[NV];
    for (int j = 0; j < NV; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
    uint32_t seg0 = m.group_ptr[m.row_ptr[r]], seg_len = 0;
    auto flush = [&] {
      uint32_t i = 0;
      for (; i + 2 <= seg_len; i += 2) {
        const float* a = X + size_t(col[seg0 + i]) * batch + b0;
        const float* b = X + size_t(col[seg0 + i + 1]) * batch + b0;
        const __m256 va = _mm256_set1_ps(vals[i]), vb = _mm256_set1_ps(vals[i + 1]);
        for (int j = 0; j < NV; ++j) {
          acc0[j] = _mm256_fmadd_ps(va, t.load(a + 8 * j, j), acc0[j]);
          acc1[j] = _mm256_fmadd_ps(vb, t.load(b + 8 * j, j), acc1[j]);
        }
      }
      if (i < seg_len) {
        const float* a = X + size_t(col[seg0 + i]) * batch + b0;
        const __m256 va = _mm256_set1_ps(vals[i]);
        for (int j = 0; j < NV; ++j) acc0[j] = _mm256_fmadd_ps(va, t.load(a + 8 * j, j), acc0[j]);
      }
    };
    for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
      const uint32_t k0 = m.group_ptr[g], n = m.group_ptr[g + 1] - k0;
      if (seg_len + n > kSegment) {
        flush();
        seg0 = k0, seg_len = 0;
      }
      const float d = m.delta[value_of(g, r)];
      if (n > kSegment) {  // a huge group: its own run, in kSegment pieces
        for (uint32_t done = 0; done < n;) {
          const uint32_t piece = n - done < kSegment ? n - done : kSegment;
          for (uint32_t i = 0; i < piece; ++i) vals[i] = d;
          seg0 = k0 + done, seg_len = piece;
          flush();
          done += piece;
        }
        seg0 = k0 + n, seg_len = 0;
        continue;
      }
      const __m256 dv = _mm256_set1_ps(d);
      uint32_t i = 0;
      do {
        _mm256_storeu_ps(vals + seg_len + i, dv);
        _mm256_storeu_ps(vals + seg_len + i + 8, dv);
        i += 16;
      } while (i < n);
      seg_len += n;
    }
    flush();
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) t.store(out + 8 * j, j, _mm256_add_ps(acc0[j], acc1[j]));
  }
}

template <class F>
void for_tiles(size_t batch, F&& f) {
  // Full tiles of 32 columns (4 vectors), then one tile of 1..4 vectors for the rest.
  size_t b0 = 0;
  for (; b0 + 32 <= batch; b0 += 32) f(b0, Tile<4>{_mm256_set1_epi32(-1), false});
  const size_t rest = batch - b0;
  if (rest == 0) return;
  const uint32_t nv = uint32_t((rest + 7) / 8), lastn = uint32_t(rest - 8 * (nv - 1));
  const __m256i last = lane_mask(lastn);
  const bool partial = lastn != 8;
  switch (nv) {
    case 1: f(b0, Tile<1>{last, partial}); break;
    case 2: f(b0, Tile<2>{last, partial}); break;
    case 3: f(b0, Tile<3>{last, partial}); break;
    default: f(b0, Tile<4>{last, partial}); break;
  }
}

template <class F>
void with_layout(const RowsView& m, F&& f) {
  auto with_col = [&](auto value_of) {
    if (m.col16) {
      f(m.col16, value_of);
    } else {
      f(m.col32, value_of);
    }
  };
  if (m.gv8) {
    with_col(Gv8{m.gv8});
  } else if (m.gv16) {
    with_col(Gv16{m.gv16});
  } else {
    with_col(CerValue{m.row_ptr});
  }
}

void rows_matvec(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  with_layout(m, [&](auto col, auto value_of) { rows_matvec_t(m, col, value_of, x, y, r0, r1); });
}

void rows_matmat(const RowsView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  const uint64_t groups = m.row_ptr[m.rows], entries = m.group_ptr[groups];
  const bool small = groups > 0 && entries <= 12 * groups;
  with_layout(m, [&](auto col, auto value_of) {
    for_tiles(batch, [&](size_t b0, const auto& tile) {
      if (small) {
        rows_matmat_tile_flat(m, col, value_of, X, batch, Y, r0, r1, b0, tile);
      } else {
        rows_matmat_tile(m, col, value_of, X, batch, Y, r0, r1, b0, tile);
      }
    });
  });
}

// 16 weights (one half of a 32-column block, already nibble-masked) -> two 8-lane value vectors.
// A 16-entry table needs two 8-entry permutes and a blend on bit 3 of the index.
inline __m256 lookup8(__m256i idx, __m256 lut_lo, __m256 lut_hi) {
  const __m256 lo = _mm256_permutevar8x32_ps(lut_lo, idx), hi = _mm256_permutevar8x32_ps(lut_hi, idx);
  return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

void cb_matvec(const CodebookView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  const __m256 lut_lo = _mm256_loadu_ps(m.lut), lut_hi = _mm256_loadu_ps(m.lut + 8);
  const __m128i nib = _mm_set1_epi8(0x0F);
  const uint32_t full = m.cols / 32, rest = m.cols % 32;
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (uint32_t b = 0; b <= full; ++b) {
      if (b == full && rest == 0) break;
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * size_t(b)));
      const __m128i lo = _mm_and_si128(bytes, nib), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nib);
      const __m256 w0 = lookup8(_mm256_cvtepu8_epi32(lo), lut_lo, lut_hi);
      const __m256 w1 = lookup8(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), lut_lo, lut_hi);
      const __m256 w2 = lookup8(_mm256_cvtepu8_epi32(hi), lut_lo, lut_hi);
      const __m256 w3 = lookup8(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), lut_lo, lut_hi);
      const float* xb = x + 32 * size_t(b);
      if (b < full) {
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + 8), a1);
        a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + 16), a2);
        a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + 24), a3);
      } else {
        auto n_in = [&](uint32_t off) { return rest > off ? (rest - off > 8 ? 8u : rest - off) : 0u; };
        a0 = _mm256_fmadd_ps(w0, _mm256_maskload_ps(xb, lane_mask(n_in(0))), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_maskload_ps(xb + 8, lane_mask(n_in(8))), a1);
        a2 = _mm256_fmadd_ps(w2, _mm256_maskload_ps(xb + 16, lane_mask(n_in(16))), a2);
        a3 = _mm256_fmadd_ps(w3, _mm256_maskload_ps(xb + 24, lane_mask(n_in(24))), a3);
      }
    }
    y[r] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  }
}

template <int NV>
void cb_matmat_tile(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1, size_t b0,
                    const Tile<NV>& t) {
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    __m256 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
    for (uint32_t c = 0; c < m.cols; ++c) {
      const uint32_t jj = c % 32;
      const uint8_t byte = row[size_t(c / 32) * 16 + (jj & 15)];
      const __m256 w = _mm256_set1_ps(m.lut[jj < 16 ? (byte & 15u) : (byte >> 4)]);
      const float* xr = X + size_t(c) * batch + b0;
      for (int j = 0; j < NV; ++j) acc[j] = _mm256_fmadd_ps(w, t.load(xr + 8 * j, j), acc[j]);
    }
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) t.store(out + 8 * j, j, acc[j]);
  }
}

void cb_matmat(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  for_tiles(batch, [&](size_t b0, const auto& tile) { cb_matmat_tile(m, X, batch, Y, r0, r1, b0, tile); });
}

const KernelTable kTable = {rows_matvec, rows_matmat, cb_matvec, cb_matmat};

}  // namespace

const KernelTable* avx2_kernels() { return &kTable; }

}  // namespace nnpress::sparse::detail
