// AVX-512 (F/BW/VL/DQ) kernels. Compiled with AVX-512 flags; run only when isa_supported(kAvx512).
// Includes nothing but intrinsics and the plain views (see kernels_internal.h for why).
// GCC 12's own AVX-512 headers trip -Wmaybe-uninitialized (_mm512_undefined_*); not our code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "../kernels_internal.h"

namespace nnpress::sparse::detail {
namespace {

inline __m512i load_idx16(const uint16_t* p) { return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512i load_idx16(const uint32_t* p) { return _mm512_loadu_si512(p); }
inline __m512i maskz_idx16(__mmask16 k, const uint16_t* p) { return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)); }
inline __m512i maskz_idx16(__mmask16 k, const uint32_t* p) { return _mm512_maskz_loadu_epi32(k, p); }

inline __mmask16 tail_mask(uint32_t n) { return __mmask16((1u << n) - 1u); }

// Value index of group g in row r: CER from its position, CSER from the stored index.
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

// Groups of at most kSmallGroup entries are not summed one by one (their varying lengths cost a
// branch miss each): their value is broadcast into a per-entry buffer, and the run of consecutive
// small groups is then handled as one flat stretch (gather 16 inputs, FMA with 16 buffered values).
// Larger groups are summed with gathers and multiplied once. Same terms, different association.
constexpr uint32_t kSmallGroup = 64;
constexpr uint32_t kSegment = 1024;  // entries buffered per flat stretch

// AMD's gathers cost about as much as scalar loads, so the batch-1 kernel uses scalar loads with
// four independent accumulators; AVX-512 only fills the per-entry value buffer.
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
  alignas(64) float vals[kSegment + 16];
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
      const __m512 dv = _mm512_set1_ps(d);
      uint32_t i = 0;
      do {
        _mm512_storeu_ps(vals + seg_len + i, dv);
        i += 16;
      } while (i < n);
      seg_len += n;
    }
    flat_matvec(col + seg0, vals, seg_len, x, &acc);
    y[r] = acc.total() + big;
  }
}

// Loads/stores of a batch tile: the last vector is masked only when the tile is partial (masked
// loads cost more than plain ones on the AMD cores measured).
template <bool kPartial>
inline __m512 tile_load(const float* p, bool is_last, __mmask16 last) {
  return (kPartial && is_last) ? _mm512_maskz_loadu_ps(last, p) : _mm512_loadu_ps(p);
}
template <bool kPartial>
inline void tile_store(float* p, bool is_last, __mmask16 last, __m512 v) {
  if (kPartial && is_last) {
    _mm512_mask_storeu_ps(p, last, v);
  } else {
    _mm512_storeu_ps(p, v);
  }
}

// Batch tile of NV vectors (16 * NV columns of X/Y, the last vector masked by `last`). Each group's
// input rows are summed in registers (two interleaved sums), then scaled once by the group's value.
// (Measured: this beats a per-entry FMA on the flat run, unlike the batch-1 case.)
template <int NV, bool kPartial, class Col, class Value>
void rows_matmat_tile(const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch, float* Y,
                      uint32_t r0, uint32_t r1, size_t b0, __mmask16 last) {
  for (uint32_t r = r0; r < r1; ++r) {
    __m512 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_setzero_ps();
    for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
      uint32_t k = m.group_ptr[g];
      const uint32_t k1 = m.group_ptr[g + 1];
      // Four interleaved sums: enough independent adds to cover the add latency at NV = 1..2.
      __m512 s0[NV], s1[NV], s2[NV], s3[NV];
      for (int j = 0; j < NV; ++j) s0[j] = s1[j] = s2[j] = s3[j] = _mm512_setzero_ps();
      for (; k + 4 <= k1; k += 4) {
        const float* a = X + size_t(col[k]) * batch + b0;
        const float* b = X + size_t(col[k + 1]) * batch + b0;
        const float* c = X + size_t(col[k + 2]) * batch + b0;
        const float* e = X + size_t(col[k + 3]) * batch + b0;
        for (int j = 0; j < NV; ++j) {
          s0[j] = _mm512_add_ps(s0[j], tile_load<kPartial>(a + 16 * j, j == NV - 1, last));
          s1[j] = _mm512_add_ps(s1[j], tile_load<kPartial>(b + 16 * j, j == NV - 1, last));
          s2[j] = _mm512_add_ps(s2[j], tile_load<kPartial>(c + 16 * j, j == NV - 1, last));
          s3[j] = _mm512_add_ps(s3[j], tile_load<kPartial>(e + 16 * j, j == NV - 1, last));
        }
      }
      for (; k < k1; ++k) {
        const float* a = X + size_t(col[k]) * batch + b0;
        for (int j = 0; j < NV; ++j) s0[j] = _mm512_add_ps(s0[j], tile_load<kPartial>(a + 16 * j, j == NV - 1, last));
      }
      for (int j = 0; j < NV; ++j) s0[j] = _mm512_add_ps(_mm512_add_ps(s0[j], s2[j]), _mm512_add_ps(s1[j], s3[j]));
      const __m512 d = _mm512_set1_ps(m.delta[value_of(g, r)]);
      for (int j = 0; j < NV; ++j) acc[j] = _mm512_fmadd_ps(s0[j], d, acc[j]);
    }
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) tile_store<kPartial>(out + 16 * j, j == NV - 1, last, acc[j]);
  }
}

// Batched, for matrices with small groups (<= 12 entries on average, e.g. 256 values at density
// <= 0.5, 16 values at 0.01): per-group sums buy little there and their varying lengths cost branch
// misses, so every entry is one FMA of its value (broadcast from a per-entry buffer) with its input
// row, over runs of whole groups. (Measured: 1.7-2x faster there, slower for larger groups.)
template <int NV, bool kPartial, class Col, class Value>
void rows_matmat_tile_flat(const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch,
                           float* Y, uint32_t r0, uint32_t r1, size_t b0, __mmask16 last) {
  alignas(64) float vals[kSegment + 16];
  for (uint32_t r = r0; r < r1; ++r) {
    __m512 acc0[NV], acc1[NV];
    for (int j = 0; j < NV; ++j) acc0[j] = acc1[j] = _mm512_setzero_ps();
    uint32_t seg0 = m.group_ptr[m.row_ptr[r]], seg_len = 0;
    auto flush = [&] {
      uint32_t i = 0;
      for (; i + 2 <= seg_len; i += 2) {
        const float* a = X + size_t(col[seg0 + i]) * batch + b0;
        const float* b = X + size_t(col[seg0 + i + 1]) * batch + b0;
        const __m512 va = _mm512_set1_ps(vals[i]), vb = _mm512_set1_ps(vals[i + 1]);
        for (int j = 0; j < NV; ++j) {
          acc0[j] = _mm512_fmadd_ps(va, tile_load<kPartial>(a + 16 * j, j == NV - 1, last), acc0[j]);
          acc1[j] = _mm512_fmadd_ps(vb, tile_load<kPartial>(b + 16 * j, j == NV - 1, last), acc1[j]);
        }
      }
      if (i < seg_len) {
        const float* a = X + size_t(col[seg0 + i]) * batch + b0;
        const __m512 va = _mm512_set1_ps(vals[i]);
        for (int j = 0; j < NV; ++j) acc0[j] = _mm512_fmadd_ps(va, tile_load<kPartial>(a + 16 * j, j == NV - 1, last), acc0[j]);
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
      const __m512 dv = _mm512_set1_ps(d);
      uint32_t i = 0;
      do {
        _mm512_storeu_ps(vals + seg_len + i, dv);
        i += 16;
      } while (i < n);
      seg_len += n;
    }
    flush();
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) tile_store<kPartial>(out + 16 * j, j == NV - 1, last, _mm512_add_ps(acc0[j], acc1[j]));
  }
}

template <int NV, bool kPartial, class Col, class Value>
inline void run_tile(bool tiny, const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch,
                     float* Y, uint32_t r0, uint32_t r1, size_t b0, __mmask16 last) {
  if (tiny) {
    rows_matmat_tile_flat<NV, kPartial>(m, col, value_of, X, batch, Y, r0, r1, b0, last);
  } else {
    rows_matmat_tile<NV, kPartial>(m, col, value_of, X, batch, Y, r0, r1, b0, last);
  }
}

template <class Col, class Value>
void rows_matmat_t(const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch, float* Y,
                   uint32_t r0, uint32_t r1) {
  const uint64_t groups = m.row_ptr[m.rows], entries = m.group_ptr[groups];
  const bool tiny = groups > 0 && entries <= 12 * groups;
  size_t b0 = 0;
  for (; b0 + 64 <= batch; b0 += 64) run_tile<4, false>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, 0xFFFF);
  const size_t rest = batch - b0;
  if (rest == 0) return;
  const uint32_t nv = uint32_t((rest + 15) / 16), lastn = uint32_t(rest - 16 * (nv - 1));
  const __mmask16 last = lastn == 16 ? __mmask16(0xFFFF) : tail_mask(lastn);
  if (lastn == 16) {
    switch (nv) {
      case 1: run_tile<1, false>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, last); break;
      case 2: run_tile<2, false>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, last); break;
      default: run_tile<3, false>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, last); break;
    }
  } else {
    switch (nv) {
      case 1: run_tile<1, true>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, last); break;
      case 2: run_tile<2, true>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, last); break;
      case 3: run_tile<3, true>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, last); break;
      default: run_tile<4, true>(tiny, m, col, value_of, X, batch, Y, r0, r1, b0, last); break;
    }
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
  with_layout(m, [&](auto col, auto value_of) { rows_matmat_t(m, col, value_of, X, batch, Y, r0, r1); });
}

// 32 weights per 16-byte block: byte j = index(c0 + j) | index(c0 + 16 + j) << 4.
inline void decode_block(const uint8_t* p, __m512i* lo, __m512i* hi) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i nib = _mm_set1_epi8(0x0F);
  *lo = _mm512_cvtepu8_epi32(_mm_and_si128(b, nib));
  *hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), nib));
}

void cb_matvec(const CodebookView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  const __m512 lut = _mm512_load_ps(m.lut);
  const uint32_t full = m.cols / 32, rest = m.cols % 32;
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    uint32_t b = 0;
    for (; b + 2 <= full; b += 2) {
      __m512i i0, i1, i2, i3;
      decode_block(row + 16 * b, &i0, &i1);
      decode_block(row + 16 * (b + 1), &i2, &i3);
      const float* xb = x + 32 * size_t(b);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i0, lut), _mm512_loadu_ps(xb), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i1, lut), _mm512_loadu_ps(xb + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i2, lut), _mm512_loadu_ps(xb + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i3, lut), _mm512_loadu_ps(xb + 48), a3);
    }
    for (; b < full; ++b) {
      __m512i i0, i1;
      decode_block(row + 16 * b, &i0, &i1);
      const float* xb = x + 32 * size_t(b);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i0, lut), _mm512_loadu_ps(xb), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i1, lut), _mm512_loadu_ps(xb + 16), a1);
    }
    if (rest) {
      __m512i i0, i1;
      decode_block(row + 16 * b, &i0, &i1);
      const float* xb = x + 32 * size_t(b);
      const __mmask16 m0 = rest >= 16 ? __mmask16(0xFFFF) : tail_mask(rest);
      const __mmask16 m1 = rest > 16 ? tail_mask(rest - 16) : __mmask16(0);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i0, lut), _mm512_maskz_loadu_ps(m0, xb), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(i1, lut), _mm512_maskz_loadu_ps(m1, xb + 16), a1);
    }
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

template <int NV, bool kPartial>
void cb_matmat_tile(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1, size_t b0,
                    __mmask16 last) {
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    __m512 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_setzero_ps();
    for (uint32_t c = 0; c < m.cols; ++c) {
      const uint32_t jj = c % 32;
      const uint8_t byte = row[size_t(c / 32) * 16 + (jj & 15)];
      const __m512 w = _mm512_set1_ps(m.lut[jj < 16 ? (byte & 15u) : (byte >> 4)]);
      const float* xr = X + size_t(c) * batch + b0;
      for (int j = 0; j < NV; ++j) acc[j] = _mm512_fmadd_ps(w, tile_load<kPartial>(xr + 16 * j, j == NV - 1, last), acc[j]);
    }
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) tile_store<kPartial>(out + 16 * j, j == NV - 1, last, acc[j]);
  }
}

void cb_matmat(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  size_t b0 = 0;
  for (; b0 + 64 <= batch; b0 += 64) cb_matmat_tile<4, false>(m, X, batch, Y, r0, r1, b0, 0xFFFF);
  const size_t rest = batch - b0;
  if (rest == 0) return;
  const uint32_t nv = uint32_t((rest + 15) / 16), lastn = uint32_t(rest - 16 * (nv - 1));
  const __mmask16 last = lastn == 16 ? __mmask16(0xFFFF) : tail_mask(lastn);
  if (lastn == 16) {
    switch (nv) {
      case 1: cb_matmat_tile<1, false>(m, X, batch, Y, r0, r1, b0, last); break;
      case 2: cb_matmat_tile<2, false>(m, X, batch, Y, r0, r1, b0, last); break;
      default: cb_matmat_tile<3, false>(m, X, batch, Y, r0, r1, b0, last); break;
    }
  } else {
    switch (nv) {
      case 1: cb_matmat_tile<1, true>(m, X, batch, Y, r0, r1, b0, last); break;
      case 2: cb_matmat_tile<2, true>(m, X, batch, Y, r0, r1, b0, last); break;
      case 3: cb_matmat_tile<3, true>(m, X, batch, Y, r0, r1, b0, last); break;
      default: cb_matmat_tile<4, true>(m, X, batch, Y, r0, r1, b0, last); break;
    }
  }
}

const KernelTable kTable = {rows_matvec, rows_matmat, cb_matvec, cb_matmat};

}  // namespace

const KernelTable* avx512_kernels() { return &kTable; }

}  // namespace nnpress::sparse::detail
