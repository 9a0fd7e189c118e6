// nnpress/quant/dequantize.h — integer levels -> weights (decoder side, always built).
//
// CONTRACT
//   Two reconstruction rules, named by the quantizer that produced the levels:
//   * Uniform (QuantMethod::kNearest, kRdoq): w_hat = q * step.
//   * Dependent (QuantMethod::kTrellis), 8-state dependent quantization as in the NNR standard:
//       two scalar quantizers on the grid step:  Q0 = even multiples of step,
//                                                Q1 = odd multiples of step and zero.
//       A level k is an index into the quantizer the current state selects:
//         state even (Q0):  u = 2k                    w_hat = u * step
//         state odd  (Q1):  u = 2k - sgn(k)           w_hat = u * step
//       and the state moves on by the parity of k:  state' = kDqNextState[state][k & 1]
//       with kDqNextState = {0,2},{7,5},{1,3},{6,4},{2,0},{5,7},{3,1},{4,6}.
//       The state starts at 0 at the beginning of every row (row = first dimension for tensors
//       of rank >= 2, else the whole tensor is one row — the same rows as the level coder's
//       context reset, rows_cols_of in shape.h). So a dependent level stream can only be
//       reconstructed row by row, from the row's first level.
//   Channel scales (optional, ChannelScales below): the step of weight (i, j) — row i, column j
//   of the rows x cols view — is
//       step_ij = (step * row[i]) * col[j]          (double; a missing vector counts as all 1.0)
//   and u * step_ij replaces u * step in both rules. Without scales step_ij == step exactly.
//   In the .nnp file the scales are stored as exponents e (int8): scale = 2^(e/8), computed by
//   channel_scale_of_exp() exactly (table of the 8 correctly rounded 2^(k/8) times a power of 2),
//   so the encoder and every decoder form bit-identical step_ij.
//   In both rules the product u * step_ij is formed in double precision and rounded once to
//   float32 (or kept in double by the double overload). The quantizers (quantize.h) evaluate
//   their distortion at exactly these double values, and the float32 values they report are
//   bit-identical to what dequantize() returns.
//
//   dequantize() returns kInvalidArgument for rows * cols overflowing 64 bits, a null buffer with a
//   non-zero count, a step that
//   is not finite and > 0, a channel scale that is not finite and > 0, a step_ij that is not
//   finite and > 0 (overflow/underflow of the product), or an unknown method; `out` then holds
//   unspecified values. It never fails on any int32 level values.
//
// SURPRISES
//   - With the dependent rule a level k is about half the reconstruction index u: the coded
//     levels of a trellis-quantized tensor at step s are as large as plain levels at step 2s.
//   - u = 2k - sgn(k) is computed in 64-bit integers: every int32 level has a reconstruction.
#pragma once

#include <cstdint>

#include "nnpress/status.h"

namespace nnpress {

// Which quantizer produced a tensor's levels (also what the .nnp tensor table records).
enum class QuantMethod : uint8_t {
  kNearest = 0,  // plain rounding, uniform reconstruction
  kRdoq = 1,     // rate-distortion optimised, uniform reconstruction
  kTrellis = 2,  // dependent quantization (8 states), dependent reconstruction
};

// True for methods whose levels need the dependent (state machine) reconstruction.
inline bool uses_dependent_reconstruction(QuantMethod m) { return m == QuantMethod::kTrellis; }
// True if m is one of the enumerators above (for values read from files).
inline bool is_known_quant_method(uint8_t m) { return m <= uint8_t(QuantMethod::kTrellis); }

// ---- the dependent-quantization state machine (shared by trellis.cpp and dequantize.cpp) ----
constexpr int kDqStates = 8;
constexpr uint8_t kDqNextState[kDqStates][2] = {{0, 2}, {7, 5}, {1, 3}, {6, 4}, {2, 0}, {5, 7}, {3, 1}, {4, 6}};

// Quantizer of a state: 0 (even multiples) or 1 (odd multiples and zero).
inline int dq_quantizer(int state) { return state & 1; }
inline int dq_next_state(int state, int32_t k) { return kDqNextState[state][uint32_t(k) & 1u]; }
// Reconstruction index u (w_hat = u * step) of level k in `state`.
inline int64_t dq_index(int state, int32_t k) {
  const int64_t u = 2 * int64_t(k);
  if (!dq_quantizer(state) || k == 0) return u;
  return k > 0 ? u - 1 : u + 1;
}

// ---- channel scales ----
// Per-row and per-column multipliers of the step (each may be null = all 1.0). Not owned.
struct ChannelScales {
  const double* row = nullptr;  // rows values, each finite and > 0
  const double* col = nullptr;  // cols values, each finite and > 0
  bool any() const { return row != nullptr || col != nullptr; }
};

// Scale exponents of the .nnp format: scale = 2^(e / kScaleStepsPerOctave), e in [-128, 127].
constexpr int kScaleStepsPerOctave = 8;
// 2^(e/8) in double, exactly the same value on every platform (no libm: a table of the correctly
// rounded 2^(k/8), k = 0..7, times 2^floor(e/8), which is exact).
double channel_scale_of_exp(int8_t e);
// The exponent whose scale is nearest to `scale` on a log scale, clamped to [-128, 127]
// (scale must be finite and > 0; anything else gives 0).
int8_t channel_scale_exp_of(double scale);

// Checks that n scales are finite and > 0 (kInvalidArgument naming `what` and the index; also for
// null scales with n > 0).
Status check_channel_scales(const double* scales, uint64_t n, const char* what);

// Reconstructs rows*cols levels (row-major) into out. Status kInvalidArgument on a bad call.
Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method, float* out);
Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method, double* out);
// With channel scales (step_ij as in the contract above).
Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                  const ChannelScales& scales, float* out);
Status dequantize(const int32_t* levels, uint64_t rows, uint64_t cols, double step, QuantMethod method,
                  const ChannelScales& scales, double* out);

}  // namespace nnpress
