// nnpress/quant/pass_args.h — what one quantization pass (rdoq_pass, trellis_pass) works on.
//
// CONTRACT
//   The inputs, outputs and coding state of one pass over `rows` x `cols` weights (row-major), as
//   quantize() (quantize.h) fills it per chunk or per row. Pointers are not owned. Unchecked: the
//   passes trust quantize()'s validation.
#pragma once

#include <cstdint>

#include "nnpress/cabac/binarization.h"
#include "nnpress/cabac/weight_contexts.h"
#include "nnpress/quant/dequantize.h"
#include "nnpress/quant/feedback.h"

namespace nnpress {

template <class W, class F>
struct PassArgs {
  const W* weights = nullptr;     // rows * cols weights (compensated targets for row feedback)
  const F* importance = nullptr;  // rows * cols factors F_i; null = all ones
  uint64_t rows = 0, cols = 0;
  double step = 1.0;              // the tensor's step (each weight's own is step_ij, dequantize.h)
  ChannelScales scales;           // scales.row points at the first row of this call
  ErrorFeedback feedback;         // column-side error feedback (feedback.h); empty: none
  double lambda = 0.0;            // (weight units)^2 per bit
  uint64_t chunk_rows = 0;        // fresh contexts every chunk_rows rows (0: never)
  cabac::LevelParams params;      // binarization the rates are priced with
  int32_t* levels = nullptr;      // out: rows * cols levels
  float* recon = nullptr;         // out (optional): float(double(u) * step_ij) per weight
  double* distortion = nullptr;   // in/out: the pass adds its weighted distortion
  // null: fresh contexts at the call's start; else the contexts to start from, left as the last
  // row's (callers that quantize one row at a time carry them across).
  cabac::WeightContexts* contexts = nullptr;
};

}  // namespace nnpress
