// nnpress/cabac/binarization.h — the DeepCABAC level syntax, written once.
//
// CONTRACT
//   code_level<Coder>() is the one definition of how an int32 level q becomes bins:
//     sig    = (q != 0)                         regular, ctx sig[prev][prev2_nonzero]
//     neg    = (q < 0)                          regular, ctx sign[prev]          (if sig)
//     for n = 1..N: gt_n = (|q| > n)            regular, ctx greater[neg][n-1]   (stop at 0)
//     if |q| > N: r = |q| - N - 1 as Exp-Golomb of order k:
//         prefix: unary bucket index j          regular, ctx eg_prefix[min(j, 23)]
//         suffix: (k + j) bits of r - base_j     bypass
//   N (unary_len, 0..64) and k (eg_order, 0..30) are per-stream parameters chosen by the encoder
//   (level_coder.h) and written in the stream header. Every int32, INT32_MIN included, is codable.
//   The params are not checked here (a unary_len above 64 would index past the contexts):
//   callers pass params that passed check_level_params (level_coder.h).
//
//   Coder is any type with
//     static constexpr bool kDecoding;
//     NNPRESS_INLINE unsigned bin(unsigned b, ContextModel& m);   // code / price / decode one regular bin
//     NNPRESS_INLINE uint32_t bypass(uint32_t v, int nbits);       // nbits (<= 32) equiprobable bins
//   Encoders and estimators return their argument; decoders ignore it and return what they read.
//   So the same template drives BinEncoder, RateEstimator (exactly the coder's contexts: RD
//   decisions price bits as the encoder will spend them) and BinDecoder: the syntax is written
//   once, so encoder, estimator and decoder cannot drift apart.
//
// SURPRISES
//   - When decoding, `q` is ignored; the decoded level is returned. A garbage stream can ask for
//     an Exp-Golomb prefix or magnitude beyond the int32 range: the decoder then stops reading
//     the level and reports it through the `bad` flag (the caller turns it into kCorrupt).
#pragma once

#include <cstdint>

#include "nnpress/cabac/weight_contexts.h"

namespace nnpress::cabac {

struct LevelParams {
  uint32_t unary_len = 10;  // N: number of unary "|q| > n" flags
  uint32_t eg_order = 0;    // k: order of the Exp-Golomb remainder code
};

constexpr uint64_t kMaxMagnitude = uint64_t(1) << 31;  // |INT32_MIN|

template <class Coder>
NNPRESS_INLINE int32_t code_level(Coder& c, WeightContexts& ctx, const LevelParams& p, const Neighbourhood& nb,
                                  int32_t q, bool& bad) {
  const uint32_t mag = q < 0 ? 0u - uint32_t(q) : uint32_t(q);  // unused when decoding
  if (!c.bin(mag != 0, ctx.sig[nb.prev][nb.prev2_nonzero])) return 0;
  const unsigned neg = c.bin(q < 0, ctx.sign[nb.prev]);
  ContextModel* greater = ctx.greater[neg];
  uint64_t m = 1;
  for (; m <= p.unary_len; ++m) {
    if (!c.bin(mag > m, greater[m - 1])) goto done;
  }
  {
    // Remainder r = |q| - m, m = N + 1. Bucket j holds [base_j, base_j + 2^(k+j)).
    const uint64_t r = uint64_t(mag) - m;  // unused when decoding
    uint64_t base = 0;
    uint32_t j = 0;
    for (;;) {
      const uint64_t next = base + (uint64_t(1) << (p.eg_order + j));
      const unsigned ctx_index = j < kPrefixContexts - 1 ? j : kPrefixContexts - 1;
      if (!c.bin(r >= next, ctx.eg_prefix[ctx_index])) break;
      base = next;
      ++j;
      if constexpr (Coder::kDecoding) {
        if (m + base > kMaxMagnitude) {  // the stream asks for more than any int32 needs
          bad = true;
          return 0;
        }
      }
    }
    const uint32_t suffix = c.bypass(uint32_t(r - base), int(p.eg_order + j));
    m += base + suffix;
    if constexpr (Coder::kDecoding) {
      if (m > (neg ? kMaxMagnitude : kMaxMagnitude - 1)) {
        bad = true;
        return 0;
      }
    }
  }
done:
  return neg ? int32_t(0u - uint32_t(m)) : int32_t(m);
}

// Codes `rows` rows of `cols` levels in scan order, resetting the neighbourhood at each row.
// Encoders/estimators read `levels`; decoders write it. Returns false if a decoder found a
// level outside the int32 range or ran past the end of its data (output is then junk).
template <class Coder>
NNPRESS_INLINE bool code_rows(Coder& c, WeightContexts& ctx, const LevelParams& p, int32_t* levels, uint64_t rows,
                              uint64_t cols) {
  bool bad = false;
  if (cols == 0) return true;  // no levels, whatever `rows` says (rows may be huge: no loop)
  for (uint64_t r = 0; r < rows; ++r) {
    Neighbourhood nb;
    int32_t* row = levels + r * cols;
    for (uint64_t i = 0; i < cols; ++i) {
      const int32_t v = code_level(c, ctx, p, nb, row[i], bad);
      if constexpr (Coder::kDecoding) {
        row[i] = v;
        if (bad || ((i & 4095) == 4095 && c.overrun())) return false;
      }
      nb.push(v);
    }
    if constexpr (Coder::kDecoding) {
      if (c.overrun()) return false;
    }
  }
  return true;
}

}  // namespace nnpress::cabac
