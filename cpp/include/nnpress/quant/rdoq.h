// nnpress/quant/rdoq.h — greedy rate-distortion optimised quantization (RDOQ), one pass.
//
// CONTRACT
//   rdoq_pass() walks the levels in the coder's scan order (row-major, neighbourhood reset at
//   every row, contexts fresh at row 0 and every chunk_rows rows, as cabac::code_rows and the
//   container do) and, for each weight w with x = w / step, a = floor(|x|), s = sign(x), picks
//   (step = step_ij of dequantize.h when channel scales are given; scales.row points at the
//   first row of this call) among the candidates
//       0,  s*a,  s*(a+1) (if it is the nearest level, or a == 0),  s*(a-1) (if a >= 2)
//   the one minimising  F (w - q*step)^2 + lambda * bits(q),  bits(q) priced by
//   cabac::code_level<RatePeek> on the live contexts and neighbourhood. The nearest level is
//   evaluated first and only a strictly cheaper candidate replaces it (so lambda == 0 gives
//   the nearest levels). The choice is then committed with code_level<RateEstimator>, so the
//   contexts evolve exactly as the encoder's will: the returned rate equals
//   estimate_level_bits(levels, ..., params) when chunk_rows is 0.
//   Shortcuts that change no decision: x == 0 takes 0 unpriced; when a == 0 and the
//   distortion gain of +-1 cannot pay for its cheapest possible extra bins (sig + 2 bins at the
//   table's minimum cost), 0 is taken after pricing only the significance flag.
//
//   With feedback (feedback.h) each weight's target is its compensated w', its cost weighted by
//   feedback.weight[i], and the chosen error moves the row's later targets.
//
//   contexts: null = fresh contexts at the call's start; else the contexts to start from,
//   left as the last row's (callers that quantize one row at a time carry them across).
//
//   Unchecked: inputs must already be validated (quantize() in quantize.h does it).
//   Returns the estimated rate (fixed point, cabac::kRateOne per bit); adds the weighted
//   distortion to *distortion; writes recon (if not null) as float(double(q) * step_ij).
//
// SURPRISES
//   - Greedy: a decision never looks ahead at how it changes the contexts of later weights.
#pragma once

#include <cstdint>

#include "nnpress/quant/pass_args.h"

namespace nnpress {

template <class W, class F>
uint64_t rdoq_pass(const PassArgs<W, F>& args);

}  // namespace nnpress
