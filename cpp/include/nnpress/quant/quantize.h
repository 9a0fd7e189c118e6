// nnpress/quant/quantize.h — weights -> integer levels: nearest, RDOQ, trellis (encoder side).
//
// CONTRACT
//   quantize() maps rows*cols weights (row-major; rows as in shape.h rows_cols_of) to int32
//   levels with one of three quantizers (QuantMethod, dequantize.h):
//     kNearest  q = round-half-to-even(w / step), w / step formed in double.
//     kRdoq     greedy rate-distortion quantization in scan order (rdoq.h).
//     kTrellis  dependent quantization, Viterbi search over 8 states (trellis.h).
//   RDOQ and trellis minimise, over the whole tensor,
//       sum_i F_i (w_i - w_hat_i)^2  +  lambda * bits
//   where F_i = importance[i] (1 if importance is null), w_hat_i the reconstruction of
//   dequantize.h (computed in double, exactly as there — with options.scales, every weight is
//   quantized on its own step step_ij = (step * row[i]) * col[j], the decoder's rule), and bits
//   the coder's own estimate:
//   every candidate is priced by running the level syntax (cabac::code_level) through a
//   RatePeek on the contexts as the encoder will have them at that weight, and the chosen level
//   is committed through a RateEstimator so the contexts evolve exactly as the encoder's will.
//   lambda is in units of (weight units)^2 per bit; lambda = c * step^2 makes c scale-free.
//
//   Level parameters: the rate depends on the stream's unary length and Exp-Golomb order, which
//   the encoder picks from the final levels with choose_level_params_for_speed (level_coder.h;
//   encode_levels, estimate_bits and the .nnp writer all use it). Unless options.params_fixed is
//   set, quantize() picks them the same way from a first guess (the nearest levels; for the
//   trellis, rounding to the nearest multiple of 2*step), quantizes, re-picks them from the
//   result and, if they changed, quantizes once more with the new ones (at most
//   options.max_passes runs). QuantResult::params are the params the final run priced with. When
//   the re-pick is stable (the usual case; QuantResult::passes < max_passes) they are the params
//   the encoder will choose for these levels, and QuantResult::rate is exactly what
//   estimate_level_bits reports for the coded stream. kNearest prices nothing: it picks no
//   params (QuantResult::params = options.params, rate 0); the encoder picks them when it codes.
//   QuantResult::coded_params are the params the .nnp writer would pick for the final levels
//   (choose_level_params_for_speed with options.size_tolerance): the stable re-pick, or one more
//   pick when there was none (kNearest, params_fixed, max_passes reached).
//
//   Contexts start fresh (WeightContexts{}) at row 0 and again every options.chunk_rows rows
//   (0 = never): set it to the rows per independently coded chunk of the container
//   (TensorInput::rows_per_block in format/container.h). Chunks are then independent and run
//   on options.threads workers; results (levels, rate, distortion) are identical for every
//   thread count. The level params stay one per tensor, as the container writer codes them.
//
//   Error feedback (options.feedback, GPTQ/OBS-style compensation inside each row): with a
//   cols x cols matrix H (symmetric positive definite, e.g. the covariance of a linear layer's
//   inputs) the quantizers minimise instead
//       sum_r f_r (w_r - w_hat_r)^T H (w_r - w_hat_r)  +  lambda * bits
//   over the rows w_r of the tensor, f_r = importance of row r (importance must then be the
//   same for every weight of a row). The caller passes U, the upper Cholesky factor of H^-1
//   (H^-1 = U^T U; row-major, cols x cols, only the upper triangle is read). Each row is
//   quantized in scan order; the error e_i = w'_i - w_hat_i of weight i (w'_i its compensated
//   target) moves the targets of the weights after it, w'_j -= e_i U_ij / U_ii (j > i), and
//   costs f_r e_i^2 / U_ii^2 — summed over the row this is exactly the quadratic form above. The
//   trellis keeps one compensated target vector per state (each survivor path has its own
//   errors): 2 x 8 x cols doubles + 8 x cols int32, O(8 cols^2) work per row; quantize() also
//   holds the cols x cols coefficients U_ij / U_ii (one copy per call). kNearest then rounds every compensated
//   target (GPTQ); kRdoq prices them greedily. Reconstruction is unchanged (the decoder never
//   sees H); QuantResult::distortion is the quadratic form (up to feedback.h's clamp of
//   targets beyond 2^30 steps). Exact zeros stay zero.
//
//   Row feedback (options.row_feedback, V with G^-1 = V^T V, rows x rows; G e.g. the output-side
//   K-FAC factor of a linear layer): rows are quantized one at a time, contexts carried as in one
//   pass; after row r its error vector e_r = w'_r - w_hat_r moves the later rows of its chunk,
//   w'_s -= e_r V_rs / V_rr (s > r, same chunk: chunks stay independent), and row r's cost is
//   weighted by 1 / V_rr^2 (times its importance). With both factors the objective is
//   sum over chunks of tr(G_c E H E^T) (G_c: G restricted to the chunk's rows, as factored by the
//   rows of V). Exact zeros stay zero and are not compensated into; targets are kept within
//   2^30 - 1 steps (feedback.h).
//
//   Errors (Status kInvalidArgument, nothing written to levels, recon or result is meaningful then):
//   rows * cols overflowing 64 bits; null weights or levels with count > 0; an unknown method;
//   kTrellis with an NNPRESS_ISA value that names no ISA (isa_env_status(), cpu.h: the trellis'
//   kernels use the automatic choice);
//   step not finite or <= 0; lambda not finite or < 0; a weight
//   that is NaN or infinite or with |w / step_ij| >= 2^30 (message names the index); a channel
//   scale that is not finite and > 0, or a step_ij that is not (over/underflow); an importance
//   that is NaN, infinite or negative; max_passes < 1; invalid fixed params; a feedback factor
//   with a diagonal entry that is not finite and > 0 (or whose 1/U_ii^2 overflows), an
//   upper-triangle entry with |U_ij / U_ii| > 1e12 or not finite (the same for the row factor
//   V); a column factor (options.feedback) with an importance that varies along a row (the row
//   factor alone accepts any importance); either factor with a step_ij at or above DBL_MAX / 2^32;
//   a weighted distortion that overflows a double (RDOQ, trellis, any method with feedback).
//
// SURPRISES
//   - With lambda == 0 RDOQ returns the nearest levels (ties are broken toward the nearest level).
//   - Weights with F_i == 0 get the level that is cheapest to code among the candidates
//     (usually, but not always, 0: after many non-zero neighbours a small non-zero level can be
//     cheaper than a zero).
//   - lambda has a cliff: at coarse steps and large lambda (in units of step^2) the zeros chosen
//     early make the adaptive significance contexts predict zeros, non-zeros get dearer, and the
//     tensor can collapse to (almost) all zeros. Searches over lambda must expect that
//     discontinuity; trace rate-distortion curves by varying the step at a fixed lambda / step^2.
//   - A weighted distortion that overflows a double (importance, or 1/U_ii^2, near the double
//     limit) is an error (kInvalidArgument) for RDOQ, the trellis and any method with feedback;
//     plain kNearest, which decides nothing by it, only reports it (inf).
//   - Exists only in builds with NNPRESS_ENCODER=ON (NNPRESS_WITH_ENCODER defined).
//   - Within a chunk RDOQ and trellis are sequential (the contexts form a chain): without
//     chunk_rows a tensor uses one thread.
#pragma once

#include <cstdint>

#include "nnpress/cabac/binarization.h"
#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/quant/dequantize.h"
#include "nnpress/status.h"

namespace nnpress {

struct QuantOptions {
  double step = 1.0;
  double lambda = 0.0;
  QuantMethod method = QuantMethod::kNearest;
  uint64_t chunk_rows = 0;       // fresh contexts every chunk_rows rows (0: one chunk)
  bool params_fixed = false;     // price with `params` as given (no re-picking)
  cabac::LevelParams params;     // used only if params_fixed
  int max_passes = 2;            // runs with re-picked params (RDOQ / trellis)
  // How level params are picked (the first guess, the re-picks, QuantResult::coded_params), as
  // WriterOptions::size_tolerance: choose_level_params_for_speed with this tolerance; < 0:
  // choose_level_params. NaN is an error.
  double size_tolerance = 0.001;
  unsigned threads = 1;          // workers over independent chunks (0: hardware_concurrency)
  ChannelScales scales;          // per-row / per-column step multipliers (null: none), not owned
  const double* feedback = nullptr;  // cols x cols upper Cholesky factor of H^-1 (CONTRACT), not owned
  const double* row_feedback = nullptr;  // rows x rows upper Cholesky factor of G^-1 (CONTRACT), not owned
};

struct QuantResult {
  cabac::LevelParams params;     // params the final run priced with (kNearest: options.params, unpriced)
  uint64_t rate = 0;             // estimated bits of the chosen levels, fixed point (kRateOne = 1 bit);
                                 // 0 for kNearest (not priced)
  double distortion = 0.0;       // sum F_i (w_i - w_hat_i)^2 in double (w_hat in double)
  int passes = 0;                // quantization runs performed
  // The params the .nnp writer picks for the returned levels with options.size_tolerance (and
  // default params for an empty tensor): pass them as TensorInput::unary_len / eg_order and the
  // writer codes the same bytes without searching again. Equal to `params` when the last re-pick
  // was stable; for kNearest computed from the final levels.
  cabac::LevelParams coded_params;
  double rate_bits() const { return double(rate) / double(cabac::kRateOne); }
};

#ifdef NNPRESS_WITH_ENCODER
// W: float or double weights; F: float or double importance (null = all ones).
// levels: rows*cols outputs. recon (may be null): the float32 reconstructions the search
// evaluated, bit-identical to dequantize(levels, ..., method). result may be null.
template <class W, class F>
Status quantize(const W* weights, const F* importance, uint64_t rows, uint64_t cols, const QuantOptions& options,
                int32_t* levels, float* recon, QuantResult* result);

// Bits (fixed point, kRateOne per bit) of rows*cols levels coded with `params`, contexts fresh
// every chunk_rows rows (0: never) — what quantize() reports as QuantResult::rate for its levels.
// kInvalidArgument for null buffers with count > 0 or invalid params.
Status estimate_chunked_rate(const int32_t* levels, uint64_t rows, uint64_t cols, uint64_t chunk_rows,
                             const cabac::LevelParams& params, uint64_t* rate);
#endif

}  // namespace nnpress
