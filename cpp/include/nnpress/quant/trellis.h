// nnpress/quant/trellis.h — dependent (trellis-coded) quantization, one pass.
//
// CONTRACT
//   trellis_pass() chooses levels for the dependent reconstruction rule of dequantize.h (two
//   quantizers Q0/Q1 on the grid `step`, 8-state machine driven by level parity, state 0 at
//   every row start) by a Viterbi search over each row:
//   * each of the 8 states carries its own path cost, its own copy of the context models and
//     its own neighbourhood (prev/prev2), so the rate of every branch is exactly what
//     cabac::code_level<RatePeek> returns on the contexts the encoder will have if that path is
//     chosen — no approximation. Without feedback the 8 states' models are held as structure of
//     arrays and updated, moved and priced for all states at once (scalar, AVX2 or AVX-512
//     kernels, picked at run time; identical results; on AVX-512 one fused step per weight keeps
//     the per-state costs, rates and neighbourhoods in registers); only models some level has
//     touched are moved. The feedback variant keeps one WeightContexts per state.
//   * candidates per weight, with x = w / step, s = sign(x) (+ for x == 0), b = max(1, floor(|x|) - 1):
//     reconstruction indices s*b, s*(b+1), s*(b+2), s*(b+3) (two belong to each quantizer,
//     with opposite level parities), 0, and the smallest non-zero index of each quantizer
//     (s*1, s*2) when not already among them — the cheap way to switch state where a weight
//     matters little. From a state with quantizer z the branches are the candidates of
//     quantizer z and the zero level.
//   * cost of a branch: F (w - u*step)^2 + lambda * bits, u*step in double exactly as
//     dequantize computes it. With channel scales every `step` here is the weight's own step_ij
//     (dequantize.h; scales.row points at the first row of this call).
//   * at the end of each row the cheapest final state wins, its path is traced back (one byte
//     per weight and state), and its contexts carry over to the next row.
//   Contexts start fresh at row 0 and every chunk_rows rows (0 = never).
//
//   With feedback (feedback.h) each weight's target is its compensated w', its cost weighted by
//   feedback.weight[i], and the chosen error moves the row's later targets.
//
//   contexts: null = fresh contexts at the call's start; else the contexts to start from,
//   left as the last row's (callers that quantize one row at a time carry them across).
//
//   Unchecked: inputs must already be validated (quantize() in quantize.h does it).
//   Returns the estimated rate of the chosen levels (fixed point, cabac::kRateOne per bit),
//   equal to estimate_level_bits(levels, ..., params) when chunk_rows is 0; adds the weighted
//   distortion to *distortion; writes recon (if not null) as float(double(u) * step) from the
//   search's own candidates.
//
// SURPRISES
//   - Memory: 8 bytes of decisions per weight of the longest row (a 1-D tensor is one row).
//   - The level coder's contexts do not depend on the trellis state (format version 1), so the
//     state only selects the reconstruction, not the probability models.
//   - A weight that is exactly 0.0 always gets level 0 (pruned weights stay pruned), even where a
//     non-zero level would steer the state machine to a cheaper path.
#pragma once

#include <cstdint>

#include "nnpress/cpu.h"
#include "nnpress/quant/pass_args.h"

namespace nnpress {

template <class W, class F>
uint64_t trellis_pass(const PassArgs<W, F>& args);

// The same search with the per-state kernels of `isa`: the AVX-512 ones for kAvx512 when
// isa_supported(Isa::kAvx512), else the AVX2 ones for kAvx2 and above when
// isa_supported(Isa::kAvx2), else the scalar ones. Every choice returns identical results (tests
// compare them); trellis_pass(args) uses detect_isa() (so NNPRESS_ISA caps it, cpu.h).
template <class W, class F>
uint64_t trellis_pass(const PassArgs<W, F>& args, Isa isa);

// The per-state search: one WeightContexts per state and one code_level<RatePeek> per candidate.
// trellis_pass runs it for passes with error feedback (each state has its own compensated
// targets); without feedback it is the scalar reference the lane search must match bit for bit
// (levels, recon, rate, distortion, contexts; tests/cpp/test_quant.cpp).
template <class W, class F>
uint64_t trellis_pass_per_state(const PassArgs<W, F>& args);

}  // namespace nnpress
