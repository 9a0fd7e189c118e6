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

void dense8(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q8, m, X, batch, Y, r0, r1);
}
void dense16(const LevelView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  dense(m.q16, m, X, batch, Y, r0, r1);
}

}  // namespace

const LevelKernelTable* neon_level_kernels() {
  static const LevelKernelTable t{dense8,  dense16, int8_i16, nullptr, int16_i16,
                                  nullptr, nullptr, nullptr,  nullptr, nullptr};
  return &t;
}

}  // namespace nnpress::levels::detail
