// AVX2 integer-level kernels (levels_internal.h): as the AVX-512 ones (levels/avx512/), with 8 lanes and
// tiles sized for 16 registers (8 rows x 1 token at batch 1, 2 rows x 4 tokens otherwise).
#include <immintrin.h>

#include "../levels_internal.h"

namespace nnpress::levels::detail {
namespace {

inline __m256 widen(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256 widen(const int16_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <int R, int B, class Q>
inline void tile(const Q* q, const LevelView& m, const float* X, float* Y, uint32_t r, size_t b) {
  __m256 acc[R][B];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  const size_t cols = m.cols, full = cols / 8 * 8;
  const Q* qr = q + size_t(r) * m.stride;
  const float* xb = X + b * cols;
  size_t k = 0;
  for (; k < full; k += 8) {
    __m256 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm256_loadu_ps(xb + j * cols + k);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m256 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm256_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
  if (k < cols) {  // the stride is padded with zero indices: only the inputs need a mask
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(cols - k)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 x[B];
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) x[j] = _mm256_maskload_ps(xb + j * cols + k, mask);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m256 w = widen(qr + i * m.stride + k);
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm256_fmadd_ps(w, x[j], acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = hsum(acc[i][j]);
  }
}

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
    for (; r + 8 <= r1; r += 8) tile<8, 1>(q, m, X, Y, r, 0);
    for (; r < r1; ++r) tile<1, 1>(q, m, X, Y, r, 0);
    return;
  }
  for (; r + 2 <= r1; r += 2) rows_all_tokens<2>(q, m, X, batch, Y, r);
  for (; r < r1; ++r) rows_all_tokens<1>(q, m, X, batch, Y, r);
}

// ---- int16 activations: exact integer sums (levels_internal.h, LevelKernelInt) ----
// 16 indices as int16 (int8 ones widened, int16 ones loaded as they are), vpmaddwd + vpaddd into 8 int32
// lanes.
inline __m256i load_i16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i load_i16(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// v[k] = the sum of the 8 int32 lanes of a[k], k < 8: pairs of lanes (vphaddd) twice, then the two
// 128-bit halves. Exact while every partial sum fits int32, i.e. over at most kLaneChunk columns.
inline __m256i reduce8(const __m256i* a) {
  const __m256i h01 = _mm256_hadd_epi32(a[0], a[1]), h23 = _mm256_hadd_epi32(a[2], a[3]);
  const __m256i h45 = _mm256_hadd_epi32(a[4], a[5]), h67 = _mm256_hadd_epi32(a[6], a[7]);
  const __m256i q0 = _mm256_hadd_epi32(h01, h23), q1 = _mm256_hadd_epi32(h45, h67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

// R x B <= 8 accumulators; every kLaneChunk columns they are summed by reduce8 (a partial sum of at most
// kLaneChunk products, which fits int32 by the caller's bound on the inputs) and added in int64.
template <int R, int B, class Q>
inline void tile_i16(const Q* q, const LevelView& m, const int16_t* Xq, int64_t* S, uint32_t r, size_t b) {
  static_assert(R * B <= 8, "one reduce8 per chunk");
  __m256i tot_lo = _mm256_setzero_si256(), tot_hi = _mm256_setzero_si256();
  const Q* qr = q + size_t(r) * m.stride;
  const int16_t* xb = Xq + b * m.stride;
  const size_t end = (size_t(m.cols) + 15) / 16 * 16;  // within the zero-padded stride
  for (size_t c0 = 0; c0 < end; c0 += kLaneChunk) {
    const size_t c1 = end - c0 < kLaneChunk ? end : c0 + kLaneChunk;
    __m256i acc[R][B];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) acc[i][j] = _mm256_setzero_si256();
    }
    for (size_t k = c0; k < c1; k += 16) {
      __m256i x[B];
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) x[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + j * m.stride + k));
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m256i w = load_i16(qr + i * m.stride + k);
#pragma GCC unroll 16
        for (int j = 0; j < B; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(w, x[j]));
      }
    }
    __m256i all[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) all[k] = k < R * B ? acc[k / B][k % B] : _mm256_setzero_si256();
    const __m256i v = reduce8(all);
    tot_lo = _mm256_add_epi64(tot_lo, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)));
    tot_hi = _mm256_add_epi64(tot_hi, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
  }
  alignas(32) int64_t sums[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums), tot_lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 4), tot_hi);
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < B; ++j) S[(b + j) * m.rows + r + i] = sums[i * B + j];
  }
}

template <int R, class Q>
inline void rows_all_tokens_i16(const Q* q, const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S,
                                uint32_t r) {
  size_t b = 0;
  for (; b + 4 <= batch; b += 4) tile_i16<R, 4>(q, m, Xq, S, r, b);
  switch (batch - b) {
    case 3: tile_i16<R, 3>(q, m, Xq, S, r, b); break;
    case 2: tile_i16<R, 2>(q, m, Xq, S, r, b); break;
    case 1: tile_i16<R, 1>(q, m, Xq, S, r, b); break;
    default: break;
  }
}

template <class Q>
void int_i16(const Q* q, const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  uint32_t r = r0;
  if (batch == 1) {
    for (; r + 8 <= r1; r += 8) tile_i16<8, 1>(q, m, Xq, S, r, 0);
    for (; r < r1; ++r) tile_i16<1, 1>(q, m, Xq, S, r, 0);
    return;
  }
  for (; r + 2 <= r1; r += 2) rows_all_tokens_i16<2>(q, m, Xq, batch, S, r);
  for (; r < r1; ++r) rows_all_tokens_i16<1>(q, m, Xq, batch, S, r);
}

void int8_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16(m.q8, m, Xq, batch, S, r0, r1);
}
void int16_i16(const LevelView& m, const int16_t* Xq, size_t batch, int64_t* S, uint32_t r0, uint32_t r1) {
  int_i16(m.q16, m, Xq, batch, S, r0, r1);
}

// ---- kInt16 helpers (levels_internal.h): the scalar reference's operations, lane by lane ----
// This file is compiled with -mfma, and GCC may fuse a vector multiply and the add that uses it into one
// FMA (one rounding instead of two). opaque() hides a product from the optimiser, so every multiply and
// add below is rounded on its own, as in the scalar reference.
inline __m256d opaque(__m256d v) {
  __asm__("" : "+x"(v));
  return v;
}
inline __m256 opaque(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

// Lanes [0, n) set, n < 8.
inline __m256i first_lanes(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

bool quantize_row(const float* x, size_t cols, int32_t L, int16_t* q, double* scale) {
  // |x| as bits: for finite values their order as int32 is their order as floats, so the max is an
  // integer max; a lane whose exponent bits are all ones is NaN or infinite
  const __m256i abs_bits = _mm256_set1_epi32(0x7fffffff), exp_bits = _mm256_set1_epi32(0x7f800000);
  __m256i mx = _mm256_setzero_si256(), bad = _mm256_setzero_si256();
  size_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    const __m256i v = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j)), abs_bits);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(v, exp_bits), exp_bits));
    mx = _mm256_max_epi32(mx, v);
  }
  if (j < cols) {
    const __m256i v = _mm256_and_si256(_mm256_castps_si256(_mm256_maskload_ps(x + j, first_lanes(cols - j))), abs_bits);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(v, exp_bits), exp_bits));
    mx = _mm256_max_epi32(mx, v);
  }
  if (!_mm256_testz_si256(bad, bad)) return false;
  __m128i m4 = _mm_max_epi32(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
  m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(1, 0, 3, 2)));
  m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, _MM_SHUFFLE(2, 3, 0, 1)));
  const float amax = _mm_cvtss_f32(_mm_castsi128_ps(m4));
  *scale = double(amax) / double(L);
  if (*scale == 0.0) return true;
  const __m256d inv = _mm256_set1_pd(1.0 / *scale), half = _mm256_set1_pd(0.5), sign = _mm256_set1_pd(-0.0);
  const __m128i lo = _mm_set1_epi32(-L), hi = _mm_set1_epi32(L);
  // 4 inputs: x * inv, then + 0.5 with the sign of the product, truncated, clamped to [-L, L]
  auto round4 = [&](__m128 x4) {
    const __m256d v = opaque(_mm256_mul_pd(_mm256_cvtps_pd(x4), inv));
    const __m256d t = _mm256_add_pd(v, _mm256_or_pd(half, _mm256_and_pd(v, sign)));
    return _mm_max_epi32(lo, _mm_min_epi32(hi, _mm256_cvttpd_epi32(t)));
  };
  for (j = 0; j + 8 <= cols; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    const __m128i r = _mm_packs_epi32(round4(_mm256_castps256_ps128(v)), round4(_mm256_extractf128_ps(v, 1)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), r);
  }
  if (j < cols) {
    const __m256 v = _mm256_maskload_ps(x + j, first_lanes(cols - j));
    alignas(16) int16_t r[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(r),
                    _mm_packs_epi32(round4(_mm256_castps256_ps128(v)), round4(_mm256_extractf128_ps(v, 1))));
    for (size_t k = 0; j + k < cols; ++k) q[j + k] = r[k];
  }
  return true;
}

// Up to 16 tokens per pass: each list entry multiplies one column's 16 rounded inputs (vpmuldq, exact
// int64 products) into four int64 accumulators. The sums of a block of kListRows rows are gathered first
// and then added token by token, so that each token's sums are written row after row (S is token-major).
constexpr uint32_t kListRows = 16;

inline __m256i widen4(const int32_t* p) {
  return _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

void list_int(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const int32_t* xt, size_t bpad,
              size_t batch, size_t rows, uint32_t r0, uint32_t r1, int64_t* S) {
  alignas(32) int64_t t[kListRows][16];
  for (uint32_t rb = r0; rb < r1; rb += kListRows) {
    const uint32_t n_rows = r1 - rb < kListRows ? r1 - rb : kListRows;
    if (ptr[rb] == ptr[rb + n_rows]) continue;
    for (size_t b0 = 0; b0 < batch; b0 += 16) {
      for (uint32_t i = 0; i < n_rows; ++i) {
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (uint64_t k = ptr[rb + i]; k < ptr[rb + i + 1]; ++k) {
          const __m256i w = _mm256_set1_epi64x(int64_t(val[k]));
          const int32_t* x = xt + size_t(col[k]) * bpad + b0;
          a0 = _mm256_add_epi64(a0, _mm256_mul_epi32(w, widen4(x)));
          a1 = _mm256_add_epi64(a1, _mm256_mul_epi32(w, widen4(x + 4)));
          a2 = _mm256_add_epi64(a2, _mm256_mul_epi32(w, widen4(x + 8)));
          a3 = _mm256_add_epi64(a3, _mm256_mul_epi32(w, widen4(x + 12)));
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(t[i]), a0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(t[i] + 4), a1);
        _mm256_store_si256(reinterpret_cast<__m256i*>(t[i] + 8), a2);
        _mm256_store_si256(reinterpret_cast<__m256i*>(t[i] + 12), a3);
      }
      const size_t n = batch - b0 < 16 ? batch - b0 : 16;
      for (size_t j = 0; j < n; ++j) {
        int64_t* s = S + (b0 + j) * rows + rb;
        for (uint32_t i = 0; i < n_rows; ++i) s[i] += t[i][j];
      }
    }
  }
}

// The float32 list entries (ListFloat), 16 tokens in two vectors, in the generic code's order: each
// token's sum starts from its dense sum and adds one entry at a time (multiply, then add, each rounded).
void list_float(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const float* xt, size_t bpad,
                size_t batch, size_t rows, uint32_t r0, uint32_t r1, float* Y) {
  alignas(32) float t[kListRows][16];
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
        __m256 acc0 = _mm256_load_ps(t[i]), acc1 = _mm256_load_ps(t[i] + 8);
        for (uint64_t k = ptr[rb + i]; k < ptr[rb + i + 1]; ++k) {
          const __m256 w = _mm256_set1_ps(float(val[k]));
          const float* x = xt + size_t(col[k]) * bpad + b0;
          acc0 = _mm256_add_ps(acc0, opaque(_mm256_mul_ps(w, _mm256_loadu_ps(x))));
          acc1 = _mm256_add_ps(acc1, opaque(_mm256_mul_ps(w, _mm256_loadu_ps(x + 8))));
        }
        _mm256_store_ps(t[i], acc0);
        _mm256_store_ps(t[i] + 8, acc1);
      }
      for (size_t j = 0; j < n; ++j) {
        float* y = Y + (b0 + j) * rows + rb;
        for (uint32_t i = 0; i < n_rows; ++i) y[i] = t[i][j];
      }
    }
  }
}

// double(v) for 4 int64 lanes, rounded to nearest as a scalar conversion (AVX2 has no vcvtqq2pd): the
// high 32 bits (signed) times 2^32 and the low 32 bits (unsigned) are each exact as doubles, built from
// their bits around a power of two, and their sum is rounded once.
inline __m256d i64_to_pd(__m256i v) {
  const __m256i hi = _mm256_xor_si256(_mm256_srli_epi64(v, 32),
                                      _mm256_set1_epi64x(0x4530000080000000));  // 2^84 + (h + 2^31) 2^32
  const __m256i lo = _mm256_blend_epi32(_mm256_set1_epi64x(0x4330000000000000), v, 0x55);  // 2^52 + l
  const __m256d h = _mm256_sub_pd(_mm256_castsi256_pd(hi),
                                  _mm256_castsi256_pd(_mm256_set1_epi64x(0x4530000080100000)));  // h 2^32 - 2^52, exact
  return _mm256_add_pd(h, _mm256_castsi256_pd(lo));
}

void finish_int(const int64_t* S, const float* rs, double scale, const float* bias, uint32_t r0, uint32_t r1,
                float* y) {
  const __m256d sc = _mm256_set1_pd(scale);
  for (uint32_t r = r0; r < r1; r += 4) {
    __m128 f, b = _mm_setzero_ps();
    __m256i s;
    const __m128i k = _mm_cmpgt_epi32(_mm_set1_epi32(int(r1 - r)), _mm_setr_epi32(0, 1, 2, 3));
    const bool full = r1 - r >= 4;
    if (full) {
      f = _mm_loadu_ps(rs + r);
      s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(S + r));
      if (bias) b = _mm_loadu_ps(bias + r);
    } else {
      f = _mm_maskload_ps(rs + r, k);
      s = _mm256_maskload_epi64(reinterpret_cast<const long long*>(S + r), _mm256_cvtepi32_epi64(k));
      if (bias) b = _mm_maskload_ps(bias + r, k);
    }
    const __m256d a = _mm256_mul_pd(_mm256_cvtps_pd(f), sc);
    __m128 v = _mm256_cvtpd_ps(_mm256_mul_pd(a, i64_to_pd(s)));
    if (bias) v = _mm_add_ps(v, b);
    if (full) _mm_storeu_ps(y + r, v);
    else _mm_maskstore_ps(y + r, k, v);
  }
}

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* avx2_level_kernels() {
  static const LevelKernelTable t{dense8,  dense16,      int8_i16, nullptr,    int16_i16,
                                  nullptr, quantize_row, list_int, finish_int, list_float};
  return &t;
}

}  // namespace nnpress::levels::detail
