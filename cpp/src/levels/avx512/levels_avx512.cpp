// AVX-512 integer-level kernels (levels_internal.h): indices widened to int32 and converted to float32 in
// registers, multiplied into float32 accumulators with FMA. A tile of R rows x B tokens keeps R*B
// accumulators of 16 lanes, so each widened weight vector serves B tokens and each loaded input vector R
// rows. Lane l of an accumulator sums columns l, l + 16, ... in order; the tile's accumulators (at most 16,
// padded with zeros) are then reduced together by a transposing tree (reduce16), whose order for one
// accumulator does not depend on its position, so one (row, token) result does not depend on the tile it
// was computed in.
// GCC 12's own AVX-512 headers trip -W(maybe-)uninitialized (_mm512_undefined_*); not our code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "../levels_internal.h"

namespace nnpress::levels::detail {
namespace {

inline __m512 widen(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 widen(const int16_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
}

// v[k] = the sum of the 16 lanes of a[k]: in every 128-bit block (l0 + l2) + (l1 + l3), then the blocks
// (b0 + b1) + (b2 + b3) — the same order for every k. 15 adds and 30 shuffles for 16 sums.
inline __m512 reduce16(const __m512* a) {
  __m512 t[8], u[4];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p)
    t[p] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * p], a[2 * p + 1]), _mm512_unpackhi_ps(a[2 * p], a[2 * p + 1]));
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(t[2 * p]), _mm512_castps_pd(t[2 * p + 1]));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(t[2 * p]), _mm512_castps_pd(t[2 * p + 1]));
    u[p] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
  }
  const __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// The same tree over int32 lanes (exact while every partial sum fits int32).
inline __m512i reduce16(const __m512i* a) {
  __m512i t[8], u[4];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p)
    t[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * p], a[2 * p + 1]),
                            _mm512_unpackhi_epi32(a[2 * p], a[2 * p + 1]));
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p)
    u[p] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * p], t[2 * p + 1]),
                            _mm512_unpackhi_epi64(t[2 * p], t[2 * p + 1]));
  const __m512i w0 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i w1 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <int R, int B, class Q>
inline void tile(const Q* q, const LevelView& m, const float* X, float* Y, uint32_t r, size_t b) {
  static_assert(R * B <= 16, "one reduce16 per tile");
  __m512 acc[R][B];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const size_t cols = m.cols, full = cols / 16 * 16;
  const Q* qr = q + size_t(r) * m.stride;
  const float* xb = X + b * cols;
  size_t k = 0;
  for (; k < full; k += 16) {
    __m512 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm512_loadu_ps(xb + j * cols + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm512_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
  if (k < cols) {  // the stride is padded with zero indices: only the inputs need a mask
    const __mmask16 mask = __mmask16((1u << (cols - k)) - 1u);
    __m512 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm512_maskz_loadu_ps(mask, xb + j * cols + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm512_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
  __m512 all[16];
#pragma GCC unroll 16
  for (int k = 0; k < 16; ++k) all[k] = k < R * B ? acc[k / B][k % B] : _mm512_setzero_ps();
  alignas(64) float sums[16];
  _mm512_store_ps(sums, reduce16(all));
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = sums[i * B + j];
  }
}

// R rows, every token: tiles of 4 tokens, then the rest.
template <int R, class Q>
inline void rows_all_tokens(const Q* q, const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r) {
  size_t b = 0;
  for (; b + 4 <= batch; b += 4) tile<R, 4>(q, m, X, Y, r, b);
  switch (batch - b) {
    case 3: tile<R, 3>(q, m, X, Y, r, b); break;
    case 2: tile<R, 2>(q, m, X, Y, r, b); break;
    case 1: tile<R, 1>(q, m, X, Y, r, b); break;
    default: break;
  }
}

template <class Q>
void dense(const Q* q, const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  uint32_t r = r0;
  if (batch == 1) {
    for (; r + 16 <= r1; r += 16) tile<16, 1>(q, m, X, Y, r, 0);
    for (; r < r1; ++r) tile<1, 1>(q, m, X, Y, r, 0);
    return;
  }
  for (; r + 4 <= r1; r += 4) rows_all_tokens<4>(q, m, X, batch, Y, r);
  for (; r < r1; ++r) rows_all_tokens<1>(q, m, X, batch, Y, r);
}

// ---- int16 activations: exact integer sums (levels_internal.h, LevelKernelInt) ----
// 32 indices as int16 (int8 ones widened in one instruction, int16 ones loaded as they are); pairs of
// products summed into int32 lanes, either by vpmaddwd + vpaddd (AVX-512BW) or by one vpdpwssd (AVX-512
// VNNI, emitted as inline assembly so that this file needs no VNNI compiler flag; it runs only when the
// CPU has VNNI). Every kLaneChunk columns the tile's lanes are summed by reduce16 (a partial sum of at
// most kLaneChunk products, which fits int32 by the caller's bound on the inputs) and added in int64.
inline __m512i load_i16(const int8_t* p) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512i load_i16(const int16_t* p) { return _mm512_loadu_si512(p); }

struct DotBw {
  static inline __m512i apply(__m512i acc, __m512i w, __m512i x) {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(w, x));
  }
};
struct DotVnni {
  static inline __m512i apply(__m512i acc, __m512i w, __m512i x) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x));
    return acc;
  }
};

template <int R, int B, class Dot, class Q>
inline void tile_i16(const Q* q, const LevelView& m, const int16_t* Xq, int64_t* S, uint32_t r, size_t b) {
  static_assert(R * B <= 16, "one reduce16 per chunk");
  __m512i tot_lo = _mm512_setzero_si512(), tot_hi = _mm512_setzero_si512();
  const Q* qr = q + size_t(r) * m.stride;
  const int16_t* xb = Xq + b * m.stride;
  const size_t end = (size_t(m.cols) + 31) / 32 * 32;  // within the zero-padded stride
  for (size_t c0 = 0; c0 < end; c0 += kLaneChunk) {
    const size_t c1 = end - c0 < kLaneChunk ? end : c0 + kLaneChunk;
    __m512i acc[R][B];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm512_setzero_si512();
    }
    for (size_t k = c0; k < c1; k += 32) {
      __m512i x[B];
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) x[j] = _mm512_loadu_si512(xb + j * m.stride + k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m512i w = load_i16(qr + i * m.stride + k);
#pragma GCC unroll 16
        for (int j = 0; j < B; ++j) acc[i][j] = Dot::apply(acc[i][j], w, x[j]);
      }
    }
    __m512i all[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) all[k] = k < R * B ? acc[k / B][k % B] : _mm512_setzero_si512();
    const __m512i v = reduce16(all);
    tot_lo = _mm512_add_epi64(tot_lo, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
    tot_hi = _mm512_add_epi64(tot_hi, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
  }
  alignas(64) int64_t sums[16];
  _mm512_store_si512(sums, tot_lo);
  _mm512_store_si512(sums + 8, tot_hi);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) S[(b + j) * m.rows + r + i] = sums[i * B + j];
  }
}

template <int R, class Dot, class Q>
inline void rows_all_tokens_i16(const Q* q, const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S,
                                uint32_t r) {
  size_t b = 0;
  for (; b + 4 <= batch; b += 4) tile_i16<R, 4, Dot>(q, m, Xq, S, r, b);
  switch (batch - b) {
    case 3: tile_i16<R, 3, Dot>(q, m, Xq, S, r, b); break;
    case 2: tile_i16<R, 2, Dot>(q, m, Xq, S, r, b); break;
    case 1: tile_i16<R, 1, Dot>(q, m, Xq, S, r, b); break;
    default: break;
  }
}

template <class Dot, class Q>
void int_i16(const Q* q, const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  uint32_t r = r0;
  if (batch == 1) {
    for (; r + 16 <= r1; r += 16) tile_i16<16, 1, Dot>(q, m, Xq, S, r, 0);
    for (; r < r1; ++r) tile_i16<1, 1, Dot>(q, m, Xq, S, r, 0);
    return;
  }
  for (; r + 4 <= r1; r += 4) rows_all_tokens_i16<4, Dot>(q, m, Xq, batch, S, r);
  for (; r < r1; ++r) rows_all_tokens_i16<1, Dot>(q, m, Xq, batch, S, r);
}

template <class Dot>
void int8_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16<Dot>(m.q8, m, Xq, batch, S, r0, r1);
}
template <class Dot>
void int16_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16<Dot>(m.q16, m, Xq, batch, S, r0, r1);
}

// ---- kInt16 helpers (levels_internal.h): the scalar reference's double operations, 8 lanes at a time ----
// The multiplies and adds carry an explicit rounding mode (round to nearest, the scalar code's), which
// also keeps the compiler from fusing them into a multiply-add.
constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

bool quantize_row(const float* x, size_t cols, int32_t L, int16_t* q, double* scale) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 mx = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (size_t j = 0; j < cols; j += 16) {
    const __mmask16 k = cols - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - j)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + j);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);  // NaN or infinity
    mx = _mm512_max_ps(mx, _mm512_and_ps(v, abs_mask));
  }
  if (bad) return false;
  *scale = double(_mm512_reduce_max_ps(mx)) / double(L);
  if (*scale == 0.0) return true;
  const __m512d inv = _mm512_set1_pd(1.0 / *scale), half = _mm512_set1_pd(0.5), sign = _mm512_set1_pd(-0.0);
  const __m256i lo = _mm256_set1_epi32(-L), hi = _mm256_set1_epi32(L);
  for (size_t j = 0; j < cols; j += 8) {
    const __mmask8 k = cols - j >= 8 ? __mmask8(0xff) : __mmask8((1u << (cols - j)) - 1u);
    const __m512d v = _mm512_mul_round_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + j)), inv, kNearest);
    const __m512d t = _mm512_add_round_pd(v, _mm512_or_pd(half, _mm512_and_pd(v, sign)), kNearest);
    const __m256i r = _mm256_max_epi32(lo, _mm256_min_epi32(hi, _mm512_cvttpd_epi32(t)));
    _mm_mask_storeu_epi16(q + j, k, _mm256_cvtepi32_epi16(r));
  }
  return true;
}

// Up to 16 tokens per pass: each list entry multiplies one column's 16 rounded inputs (vpmuldq, exact
// int64 products) into two int64 accumulators. The sums of a block of kListRows rows are gathered first
// and then added token by token, so that each token's sums are written row after row (S is token-major).
constexpr uint32_t kListRows = 16;

void list_int(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const int32_t* xt, size_t bpad,
              size_t batch, size_t rows, uint32_t r0, uint32_t r1, int64_t* S) {
  alignas(64) int64_t t[kListRows][16];
  for (uint32_t rb = r0; rb < r1; rb += kListRows) {
    const uint32_t n_rows = r1 - rb < kListRows ? r1 - rb : kListRows;
    if (ptr[rb] == ptr[rb + n_rows]) continue;
    for (size_t b0 = 0; b0 < batch; b0 += 16) {
      for (uint32_t i = 0; i < n_rows; ++i) {
        __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
        for (uint64_t k = ptr[rb + i]; k < ptr[rb + i + 1]; ++k) {
          const __m512i w = _mm512_set1_epi64(int64_t(val[k]));
          const int32_t* x = xt + size_t(col[k]) * bpad + b0;
          const __m512i x0 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
          const __m512i x1 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8)));
          a0 = _mm512_add_epi64(a0, _mm512_mul_epi32(w, x0));
          a1 = _mm512_add_epi64(a1, _mm512_mul_epi32(w, x1));
        }
        _mm512_store_si512(t[i], a0);
        _mm512_store_si512(t[i] + 8, a1);
      }
      const size_t n = batch - b0 < 16 ? batch - b0 : 16;
      for (size_t j = 0; j < n; ++j) {
        int64_t* s = S + (b0 + j) * rows + rb;
        for (uint32_t i = 0; i < n_rows; ++i) s[i] += t[i][j];
      }
    }
  }
}

// The float32 list entries (ListFloat), 16 tokens per vector, in the generic code's order: each token's
// sum starts from its dense sum and adds one entry at a time (multiply, then add, each rounded).
void list_float(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const float* xt, size_t bpad,
                size_t batch, size_t rows, uint32_t r0, uint32_t r1, float* Y) {
  alignas(64) float t[kListRows][16];
  for (uint32_t rb = r0; rb < r1; rb += kListRows) {
    const uint32_t n_rows = r1 - rb < kListRows ? r1 - rb : kListRows;
    if (ptr[rb] == ptr[rb + n_rows]) continue;
    for (size_t b0 = 0; b0 < batch; b0 += 16) {
      const size_t n = batch - b0 < 16 ? batch - b0 : 16;
      for (size_t j = 0; j < 16; ++j) {
        const float* y = Y + (b0 + j) * rows + rb;
        for (uint32_t i = 0; i < n_rows; ++i) t[i][j] = j < n ? y[i] : 0.0f;
      }
      for (uint32_t i = 0; i < n_rows; ++i) {
        if (ptr[rb + i] == ptr[rb + i + 1]) continue;
        __m512 acc = _mm512_load_ps(t[i]);
        for (uint64_t k = ptr[rb + i]; k < ptr[rb + i + 1]; ++k) {
          const __m512 p = _mm512_mul_round_ps(_mm512_set1_ps(float(val[k])),
                                               _mm512_loadu_ps(xt + size_t(col[k]) * bpad + b0), kNearest);
          acc = _mm512_add_round_ps(acc, p, kNearest);
        }
        _mm512_store_ps(t[i], acc);
      }
      for (size_t j = 0; j < n; ++j) {
        float* y = Y + (b0 + j) * rows + rb;
        for (uint32_t i = 0; i < n_rows; ++i) y[i] = t[i][j];
      }
    }
  }
}

void finish_int(const int64_t* S, const float* rs, double scale, const float* bias, uint32_t r0, uint32_t r1,
                float* y) {
  const __m512d sc = _mm512_set1_pd(scale);
  for (uint32_t r = r0; r < r1; r += 8) {
    const __mmask8 k = r1 - r >= 8 ? __mmask8(0xff) : __mmask8((1u << (r1 - r)) - 1u);
    const __m512d a = _mm512_mul_round_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, rs + r)), sc, kNearest);
    const __m512d s = _mm512_cvtepi64_pd(_mm512_maskz_loadu_epi64(k, S + r));
    __m256 v = _mm512_cvtpd_ps(_mm512_mul_round_pd(a, s, kNearest));
    if (bias) v = _mm256_add_ps(v, _mm256_maskz_loadu_ps(k, bias + r));
    _mm256_mask_storeu_ps(y + r, k, v);
  }
}

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* avx512_level_kernels() {
  static const LevelKernelTable t{
      dense8,       dense16,  int8_i16<DotBw>, int8_i16<DotVnni>, int16_i16<DotBw>, int16_i16<DotVnni>,
      quantize_row, list_int, finish_int,      list_float};
  return &t;
}

}  // namespace nnpress::levels::detail
