// NEON (AArch64 Advanced SIMD) kernels: the shared bodies of kernels_simd.h over 4-lane float vectors.
// AArch64 always has NEON, so these need no extra compiler flags; they run when isa_supported(kNeon).
// Masked loads/stores (NEON has none) copy the lanes through a small buffer: only the lanes inside the
// mask are ever read or written. Tested against the scalar reference under qemu-aarch64
// (scripts/aarch64_check.sh).
#include <arm_neon.h>

#include "../kernels_internal.h"
#include "../kernels_simd.h"

namespace nnpress::sparse::detail {
namespace {

struct V128 {
  using Narrow = V128;
  using F = float32x4_t;
  using M = uint32_t;  // number of leading lanes inside the mask (0..4)
  static constexpr uint32_t W = 4;
  static constexpr int kSums = 4;  // 32 registers
  static F zero() { return vdupq_n_f32(0.0f); }
  static F set1(float d) { return vdupq_n_f32(d); }
  static F loadu(const float* p) { return vld1q_f32(p); }
  static void storeu(float* p, F v) { vst1q_f32(p, v); }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F fmadd(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  static float reduce(F v) { return vaddvq_f32(v); }
  static M first(uint32_t n) { return n; }
  static F load_m(const float* p, M n) {
    if (n == 4) return vld1q_f32(p);
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (uint32_t i = 0; i < n; ++i) t[i] = p[i];
    return vld1q_f32(t);
  }
  static void store_m(float* p, M n, F v) {
    if (n == 4) {
      vst1q_f32(p, v);
      return;
    }
    float t[4];
    vst1q_f32(t, v);
    for (uint32_t i = 0; i < n; ++i) p[i] = t[i];
  }
  static void splat8(float* p, float d) {
    const float32x4_t v = vdupq_n_f32(d);
    vst1q_f32(p, v);
    vst1q_f32(p + 4, v);
  }
  static void gather8(const uint16_t* c, const float* x, float* p) {
    for (int i = 0; i < 8; ++i) p[i] = x[c[i]];
  }
};

const KernelTable kTable = {rows_matvec<V128>, rows_matmat<V128>, cb_matvec_generic<V128>, cb_matmat<V128>};

}  // namespace

const KernelTable* neon_kernels() { return &kTable; }

}  // namespace nnpress::sparse::detail
