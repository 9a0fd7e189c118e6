// NEON (AArch64 Advanced SIMD) integer-level kernels (levels_internal.h): 8 indices at a time widened to
// two int32x4 and converted to float32, multiplied into 4-lane float32 accumulators with FMA, in tiles of
// R rows x B tokens as the x86 kernels (levels/avx512/). AArch64 always has NEON: no extra compiler
// flags. The last columns (cols % 8) are read through a zero-padded copy of the inputs (NEON has no
// masked loads); the indices' row stride is padded with zeros. Tested against the scalar reference under
// qemu-aarch64 (scripts/aarch64_check.sh --all). int16 activations: exact int16 x int16 -> int32 sums.
#include <arm_neon.h>

#include "../levels_internal.h"

namespace nnpress::levels::detail {
namespace {

inline void widen(const int8_t* p, float32x4_t* lo, float32x4_t* hi) {
  const int16x8_t w = vmovl_s8(vld1_s8(p));
  *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
  *hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)));
}
inline void widen(const int16_t* p, float32x4_t* lo, float32x4_t* hi) {
  const int16x8_t w = vld1q_s16(p);
  *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
  *hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)));
}

template <int R, int B, class Q>
inline void step(const Q* qr, size_t stride, size_t k, const float* const* xs, float32x4_t (&acc)[R][B]) {
  float32x4_t xl[B], xh[B];
#pragma GCC unroll 16
  for (int j = 0; j < B; ++j) {
    xl[j] = vld1q_f32(xs[j] + k);
    xh[j] = vld1q_f32(xs[j] + k + 4);
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    float32x4_t wl, wh;
    widen(qr + i * stride + k, &wl, &wh);
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) {
      acc[i][j] = vfmaq_f32(acc[i][j], wl, xl[j]);
      acc[i][j] = vfmaq_f32(acc[i][j], wh, xh[j]);
    }
  }
}

template <int R, int B, class Q>
inline void tile(const Q* q, const LevelView& m, const float* X, float* Y, uint32_t r, size_t b) {
  float32x4_t acc[R][B];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) acc[i][j] = vdupq_n_f32(0.0f);
  }
  const size_t cols = m.cols, full = cols / 8 * 8;
  const Q* qr = q + size_t(r) * m.stride;
  const float* xs[B];
#pragma GCC unroll 16
  for (int j = 0; j < B; ++j) xs[j] = X + (b + j) * cols;
  for (size_t k = 0; k < full; k += 8) step<R, B>(qr, m.stride, k, xs, acc);
  if (full < cols) {
    float tail[B][8];
    const float* ts[B];
    for (int j = 0; j < B; ++j) {
      for (size_t c = 0; c < 8; ++c) tail[j][c] = full + c < cols ? xs[j][full + c] : 0.0f;
      ts[j] = tail[j];
    }
    step<R, B>(qr + full, m.stride, 0, ts, acc);
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) Y[(b + j) * m.rows + r + i] = vaddvq_f32(acc[i][j]);
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
  for (; r + 4 <= r1; r += 4) rows_all_tokens<4>(q, m, X, batch, Y, r);
  for (; r < r1; ++r) rows_all_tokens<1>(q, m, X, batch, Y, r);
}

// ---- int16 activations: exact integer sums (levels_internal.h, LevelKernelInt) ----
// 8 indices as int16 (int8 ones widened, int16 ones loaded as they are), multiplied with 8 inputs into
// two int32x4 accumulators (vmlal): over kIntChunk columns a lane sums kLaneChunk products, which fits
// int32 by the caller's bound on the inputs; the lanes then go to int64 (vaddlvq).
inline int16x8_t load_i16(const int8_t* p) { return vmovl_s8(vld1_s8(p)); }
inline int16x8_t load_i16(const int16_t* p) { return vld1q_s16(p); }

template <int R, int B, class Q>
inline void tile_i16(const Q* q, const LevelView& m, const int16_t* Xq, int64_t* S, uint32_t r, size_t b) {
  int64_t tot[R][B] = {};
  const Q* qr = q + size_t(r) * m.stride;
  const int16_t* xb = Xq + b * m.stride;
  const size_t end = (size_t(m.cols) + 7) / 8 * 8;  // within the zero-padded stride
  for (size_t c0 = 0; c0 < end; c0 += kIntChunk) {
    const size_t c1 = end - c0 < kIntChunk ? end : c0 + kIntChunk;
    int32x4_t lo[R][B], hi[R][B];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) lo[i][j] = hi[i][j] = vdupq_n_s32(0);
    }
    for (size_t k = c0; k < c1; k += 8) {
      int16x8_t x[B];
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) x[j] = vld1q_s16(xb + j * m.stride + k);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const int16x8_t w = load_i16(qr + i * m.stride + k);
#pragma GCC unroll 16
        for (int j = 0; j < B; ++j) {
          lo[i][j] = vmlal_s16(lo[i][j], vget_low_s16(w), vget_low_s16(x[j]));
          hi[i][j] = vmlal_high_s16(hi[i][j], w, x[j]);
        }
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < B; ++j) tot[i][j] += vaddlvq_s32(lo[i][j]) + vaddlvq_s32(hi[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < B; ++j) S[(b + j) * m.rows + r + i] = tot[i][j];
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
    for (; r + 4 <= r1; r += 4) tile_i16<4, 1>(q, m, Xq, S, r, 0);
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
// GCC may fuse a multiply and the add that uses it into one fused multiply-add (one rounding instead of
// two); opaque() hides a product from the optimiser, so every multiply and add is rounded on its own.
inline float64x2_t opaque(float64x2_t v) {
  __asm__("" : "+w"(v));
  return v;
}

// 8 inputs rounded as the scalar reference: x * inv, + 0.5 with the sign of the product, truncated,
// clamped to [-L, L].
inline int16x8_t round8(const float* x, float64x2_t inv, int32x4_t lo, int32x4_t hi) {
  const float64x2_t half = vdupq_n_f64(0.5);
  const uint64x2_t sign = vdupq_n_u64(uint64_t(1) << 63);
  int32x4_t r[2];
  for (int h = 0; h < 2; ++h) {
    const float32x4_t x4 = vld1q_f32(x + 4 * h);
    int64x2_t t[2];
    for (int p = 0; p < 2; ++p) {
      const float64x2_t xd = p == 0 ? vcvt_f64_f32(vget_low_f32(x4)) : vcvt_high_f64_f32(x4);
      const float64x2_t v = opaque(vmulq_f64(xd, inv));
      const float64x2_t s = vreinterpretq_f64_u64(
          vorrq_u64(vreinterpretq_u64_f64(half), vandq_u64(vreinterpretq_u64_f64(v), sign)));
      t[p] = vcvtq_s64_f64(vaddq_f64(v, s));  // toward zero; |t| <= L + 1
    }
    r[h] = vmaxq_s32(lo, vminq_s32(hi, vcombine_s32(vmovn_s64(t[0]), vmovn_s64(t[1]))));
  }
  return vcombine_s16(vmovn_s32(r[0]), vmovn_s32(r[1]));
}

bool quantize_row(const float* x, size_t cols, int32_t L, int16_t* q, double* scale) {
  // |x| as bits: for finite values their order as integers is their order as floats; a lane whose
  // exponent bits are all ones is NaN or infinite
  const uint32x4_t abs_bits = vdupq_n_u32(0x7fffffff), exp_bits = vdupq_n_u32(0x7f800000);
  uint32x4_t mx = vdupq_n_u32(0), bad = vdupq_n_u32(0);
  float tail[8] = {};
  const size_t full = cols / 8 * 8;
  for (size_t j = full; j < cols; ++j) tail[j - full] = x[j];
  for (size_t j = 0; j < cols; j += 4) {
    const float* p = j < full ? x + j : tail + (j - full);
    const uint32x4_t v = vandq_u32(vreinterpretq_u32_f32(vld1q_f32(p)), abs_bits);
    bad = vorrq_u32(bad, vceqq_u32(vandq_u32(v, exp_bits), exp_bits));
    mx = vmaxq_u32(mx, v);
  }
  if (vmaxvq_u32(bad) != 0) return false;
  const uint32_t mbits = vmaxvq_u32(mx);
  float amax;
  __builtin_memcpy(&amax, &mbits, sizeof amax);
  *scale = double(amax) / double(L);
  if (*scale == 0.0) return true;
  const float64x2_t inv = vdupq_n_f64(1.0 / *scale);
  const int32x4_t lo = vdupq_n_s32(-L), hi = vdupq_n_s32(L);
  for (size_t j = 0; j < full; j += 8) vst1q_s16(q + j, round8(x + j, inv, lo, hi));
  if (full < cols) {
    int16_t r[8];
    vst1q_s16(r, round8(tail, inv, lo, hi));
    for (size_t j = full; j < cols; ++j) q[j] = r[j - full];
  }
  return true;
}

// Up to 16 tokens per pass: each list entry multiplies one column's 16 rounded inputs into eight int64x2
// accumulators (vmlal_s32, exact). The sums of a block of kListRows rows are gathered first and then
// added token by token, so that each token's sums are written row after row (S is token-major).
constexpr uint32_t kListRows = 16;

void list_int(const uint64_t* ptr, const uint32_t* col, const int32_t* val, const int32_t* xt, size_t bpad,
              size_t batch, size_t rows, uint32_t r0, uint32_t r1, int64_t* S) {
  int64_t t[kListRows][16];
  for (uint32_t rb = r0; rb < r1; rb += kListRows) {
    const uint32_t n_rows = r1 - rb < kListRows ? r1 - rb : kListRows;
    if (ptr[rb] == ptr[rb + n_rows]) continue;
    for (size_t b0 = 0; b0 < batch; b0 += 16) {
      for (uint32_t i = 0; i < n_rows; ++i) {
        int64x2_t a[8];
        for (int h = 0; h < 8; ++h) a[h] = vdupq_n_s64(0);
        for (uint64_t k = ptr[rb + i]; k < ptr[rb + i + 1]; ++k) {
          const int32x4_t w = vdupq_n_s32(val[k]);
          const int32_t* x = xt + size_t(col[k]) * bpad + b0;
#pragma GCC unroll 4
          for (int h = 0; h < 4; ++h) {
            const int32x4_t x4 = vld1q_s32(x + 4 * h);
            a[2 * h] = vmlal_s32(a[2 * h], vget_low_s32(w), vget_low_s32(x4));
            a[2 * h + 1] = vmlal_high_s32(a[2 * h + 1], w, x4);
          }
        }
        for (int h = 0; h < 8; ++h) vst1q_s64(t[i] + 2 * h, a[h]);
      }
      const size_t n = batch - b0 < 16 ? batch - b0 : 16;
      for (size_t j = 0; j < n; ++j) {
        int64_t* s = S + (b0 + j) * rows + rb;
        for (uint32_t i = 0; i < n_rows; ++i) s[i] += t[i][j];
      }
    }
  }
}

void finish_int(const int64_t* S, const float* rs, double scale, const float* bias, uint32_t r0, uint32_t r1,
                float* y) {
  const float64x2_t sc = vdupq_n_f64(scale);
  uint32_t r = r0;
  for (; r + 2 <= r1; r += 2) {
    const float64x2_t a = vmulq_f64(vcvt_f64_f32(vld1_f32(rs + r)), sc);
    float32x2_t v = vcvt_f32_f64(vmulq_f64(a, vcvtq_f64_s64(vld1q_s64(S + r))));  // each rounded to nearest
    if (bias) v = vadd_f32(v, vld1_f32(bias + r));
    vst1_f32(y + r, v);
  }
  if (r < r1) {
    const float v = float(double(rs[r]) * scale * double(S[r]));
    y[r] = bias ? v + bias[r] : v;
  }
}

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* neon_level_kernels() {
  static const LevelKernelTable t{dense8,  dense16,      int8_i16, nullptr,    int16_i16,
                                  nullptr, quantize_row, list_int, finish_int, nullptr};
  return &t;
}

}  // namespace nnpress::levels::detail
