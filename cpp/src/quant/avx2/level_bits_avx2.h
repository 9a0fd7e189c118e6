// Private to the encoder: the parts of estimate_level_bits_many (cabac/level_encoder.cpp) that cost
// the most, with AVX2: the Exp-Golomb part of up to 8 level-parameter pairs at once (one pair per
// lane) and the unary flags (8 flag models per vector). Defined in
// level_bits_avx2.cpp, compiled (with -mavx2) only in builds that define
// NNPRESS_HAVE_TRELLIS_AVX2_TU; call it only when isa_supported(Isa::kAvx2).
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnpress::detail {

constexpr int kEgBitsLanes = 8;

// For lane c < lanes: out[c] = the cost (fixed point, cabac::kRateOne per bit) of the Exp-Golomb
// part of every magnitude mags[i] > unary_len[c] (in order: remainder mags[i] - unary_len[c] - 1,
// order eg_order[c]; prefix bins on fresh eg_prefix models as code_level codes them, bypass bits
// at one bit each), exactly the per-pair loop of estimate_level_bits_many. mags: non-zero
// magnitudes up to 2^31; eg_order[c] <= 31.
void eg_bits_avx2(const uint32_t* mags, size_t n, const uint32_t* unary_len, const uint32_t* eg_order, int lanes,
                  uint64_t* out);

// eg_bits_avx2 for up to 16 pairs, one per AVX-512 lane (avx512/level_bits_avx512.cpp, compiled
// only in builds that define NNPRESS_HAVE_TRELLIS_AVX512_TU; call it only when
// isa_supported(Isa::kAvx512)).
constexpr int kEgBitsLanes512 = 16;
void eg_bits_avx512(const uint32_t* mags, size_t n, const uint32_t* unary_len, const uint32_t* eg_order, int lanes,
                    uint64_t* out);

// cost[n] += the cost (fixed point) of unary flag n + 1 (the bin mags[i] > n + 1 on
// greater[negs[i]][n], models fresh at the start) over every magnitude with n + 1 <= min(mags[i],
// max_unary), in order: the flag loop of estimate_level_bits_many. max_unary <= kMaxUnaryFlags.
void unary_flag_bits_avx2(const uint32_t* mags, const uint8_t* negs, size_t n, uint32_t max_unary, uint64_t* cost);

}  // namespace nnpress::detail
