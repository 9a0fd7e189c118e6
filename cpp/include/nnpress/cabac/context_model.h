// nnpress/cabac/context_model.h — adaptive binary probability models for CABAC.
//
// CONTRACT
//   A ContextModel estimates P(bin == 1) for one binary decision. It holds two estimates with
//   different adaptation rates (a fast one, window ~2^5 bins, and a slow one, window ~2^8 bins)
//   and codes with their mean — the two-rate estimator of DeepCABAC / the NNR standard. Both
//   are 15-bit fixed point (P = p / 32768) and stay strictly inside (0, 32768) for ever.
//   The model knows nothing of weights or of the arithmetic engine, so the same models serve the
//   encoder, the rate estimator and the decoder: engines read `state` (and mps()) and call
//   update(bin) after every regular bin they code.
//
// SURPRISES
//   - The engine quantizes the LPS probability to 128 classes (state, or 255 - state when the MPS
//     is 1), which the range table kRangeLpsOfState and the rate table (rate_estimator.h) encode. Changing kFastShift,
//     kSlowShift or the tables changes the bitstream: it is a format version change (golden
//     files in tests/golden/ will fail, on purpose).
#pragma once

#include <cstdint>

// Hot paths of the coder must inline into the syntax loops whatever the optimisation level.
#if defined(__GNUC__) || defined(__clang__)
#define NNPRESS_INLINE inline __attribute__((always_inline))
#else
#define NNPRESS_INLINE inline
#endif

namespace nnpress::cabac {

constexpr int kProbBits = 15;
constexpr uint32_t kProbOne = 1u << kProbBits;  // 32768 == probability 1.0
constexpr uint32_t kProbHalf = kProbOne >> 1;
constexpr int kLpsClasses = 128;    // LPS probability classes, each 1/256 wide
constexpr int kLpsClassShift = 7;   // 15-bit probability >> 7 -> class 0..127
constexpr int kRangeClasses = 8;    // 9-bit range in [256, 511): (range >> 5) & 7

// LPS sub-ranges. An LPS class c (LPS probability in [c/256, (c+1)/256)) and a range in
// [256 + 32 r, 288 + 32 r) give an LPS sub-range in [1, 128 + 16 r]: at most half the smallest
// range of the class, so after an MPS one doubling renormalises (scripts/gen_cabac_tables.py).
// A model's 8-bit state is its combined P(1) in units of 1/256: MPS = state >> 7, LPS class =
// state (MPS 0) or 255 - state (MPS 1). kRangeLpsOfState[state][r] is the sub-range of that
// class, so the engine indexes one table by the state it reads, with no arithmetic in between.
// Defined in cabac/tables.cpp.
constexpr int kStates = 256;
extern const uint8_t kRangeLpsOfState[kStates][kRangeClasses];

struct ContextModel {
  static constexpr int kFastShift = 5;
  static constexpr int kSlowShift = 8;

  uint16_t fast = kProbHalf;  // P(1), fast-adapting estimate
  uint16_t slow = kProbHalf;  // P(1), slow-adapting estimate
  // The coding state: the mean of the two estimates in units of 1/256, (fast + slow) >> 8, kept
  // up to date by every update so that the engine's critical path reads one byte.
  uint8_t state = state_of(kProbHalf, kProbHalf);

  static constexpr uint8_t state_of(uint32_t f, uint32_t s) { return uint8_t((f + s) >> 8); }

  // Most probable symbol (0 or 1).
  NNPRESS_INLINE unsigned mps() const { return state >> 7; }
  NNPRESS_INLINE void update(unsigned bin) {
    // Written as selects so the compiler emits conditional moves (the bin is unpredictable).
    const uint32_t f = fast, s = slow;
    const uint32_t f_up = f + ((kProbOne - f) >> kFastShift), f_down = f - (f >> kFastShift);
    const uint32_t s_up = s + ((kProbOne - s) >> kSlowShift), s_down = s - (s >> kSlowShift);
    const uint32_t nf = bin ? f_up : f_down, ns = bin ? s_up : s_down;
    fast = uint16_t(nf);
    slow = uint16_t(ns);
    state = state_of(nf, ns);
  }
};

}  // namespace nnpress::cabac
