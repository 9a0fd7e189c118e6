// nnpress/quant/feedback.h — error feedback inside each row for the quantizers (encoder side).
//
// CONTRACT
//   ErrorFeedback is what quantize() (quantize.h, QuantOptions::feedback) derives from the
//   caller's factor U (upper Cholesky factor of H^-1) before it runs a pass:
//     coef[i * cols + j] = U_ij / U_ii  (j > i; the rest is unused),
//     weight[i]          = 1 / U_ii^2.
//   A pass quantizing row r in scan order keeps compensated targets w'_j (= w_j at the row's
//   start); after choosing w_hat_i it sets e = w'_i - w_hat_i, adds f_r * weight[i] * e^2 to
//   the distortion and does w'_j -= e * coef[i * cols + j] for every j > i.
//   Both arrays are owned by quantize(); null coef = no feedback.
//
// SURPRISES
//   - O(cols^2) work per row (times 8 in the trellis, one target vector per state).
//   - Targets more than 2^30 - 1 steps from zero (only an ill-conditioned H gets there) are
//     quantized as if they were at that bound (clamp_scaled).
#pragma once

#include <cstdint>

namespace nnpress {

struct ErrorFeedback {
  const double* coef = nullptr;    // cols x cols, row-major
  const double* weight = nullptr;  // cols
  bool any() const { return coef != nullptr; }
};

// w' / step, kept inside (-2^30, 2^30) (NaN -> 0): an ill-conditioned H can push a compensated
// target anywhere; the candidates must stay representable.
inline double clamp_scaled(double x) {
  constexpr double kMax = 1073741823.0;  // 2^30 - 1
  if (!(x == x)) return 0.0;
  return x > kMax ? kMax : (x < -kMax ? -kMax : x);
}

// w'[j] -= e * c[j] for j in [from, cols): the target update after one decision.
inline void feedback_update(double* target, const double* c, uint64_t from, uint64_t cols, double e) {
  for (uint64_t j = from; j < cols; ++j) target[j] -= e * c[j];
}

}  // namespace nnpress
