// nnpress/cabac/weight_contexts.h — the context models of the DeepCABAC level syntax.
//
// CONTRACT
//   WeightContexts holds every ContextModel the level syntax (binarization.h) uses, as named
//   fields, plus the small neighbourhood state that selects among them. A fresh
//   WeightContexts{} is the defined initial state of every independent stream (each chunk of a
//   .nnp file starts from it), so encoder, estimator and decoder agree without side channels.
//
//   Context selection:
//     sig[prev][prev2_nonzero]   significance flag; prev = class of the previous level in the
//                                row (0 zero, 1 negative, 2 positive), prev2_nonzero = whether the
//                                level before that was non-zero
//     sign[prev]                 sign flag, by the class of the previous level
//     greater[negative][n-1]     the unary flag "|q| > n", by the level's sign and n
//     eg_prefix[i]               Exp-Golomb prefix bin i of the remainder (the last one shared)
//   The neighbourhood resets at the start of every row (row = first dimension of the tensor).
//
// SURPRISES
//   - Adding or reordering contexts changes the bitstream (a format version change).
#pragma once

#include <cstdint>

#include "nnpress/cabac/context_model.h"

namespace nnpress::cabac {

constexpr int kMaxUnaryFlags = 64;    // largest allowed unary length N
constexpr int kPrefixContexts = 24;   // EG prefix bins 0..22 own a model; later ones share #23

// Class of a level for context selection.
enum NeighbourClass : uint8_t { kZero = 0, kNegative = 1, kPositive = 2 };

struct Neighbourhood {
  uint8_t prev = kZero;         // class of the previous level in the row
  uint8_t prev2_nonzero = 0;    // was the level before that non-zero
  void push(int32_t level) {
    prev2_nonzero = prev != kZero;
    prev = level == 0 ? kZero : (level < 0 ? kNegative : kPositive);
  }
};

struct WeightContexts {
  ContextModel sig[3][2];
  ContextModel sign[3];
  ContextModel greater[2][kMaxUnaryFlags];
  ContextModel eg_prefix[kPrefixContexts];
};

}  // namespace nnpress::cabac
