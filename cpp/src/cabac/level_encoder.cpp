#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "nnpress/cabac/bin_encoder.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/cabac/rate_estimator.h"
#include "nnpress/cpu.h"
#include "nnpress/format/crc.h"
#ifdef NNPRESS_HAVE_TRELLIS_AVX2_TU
#include "../quant/avx2/level_bits_avx2.h"
#endif

namespace nnpress {
namespace {

// Unary lengths the parameter search tries (every N up to 16, then coarser).
constexpr uint32_t kUnaryCandidates[] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12,
                                         13, 14, 15, 16, 20, 24, 28, 32, 40, 48, 56, 64};
// A regular bin costs CPU time; among parameter choices of (nearly) equal size prefer fewer bins.
constexpr double kBinPenaltyBits = 0.002;
constexpr uint64_t kMaxParamSample = uint64_t(1) << 20;

double binary_entropy_cost(double ones, double total) {  // total * H(ones/total), in bits
  if (ones <= 0 || ones >= total) return 0.0;
  const double zeros = total - ones;
  return -(ones * std::log2(ones / total) + zeros * std::log2(zeros / total));
}

struct MagnitudeCount {
  uint32_t mag;
  uint64_t count;
};

}  // namespace

LevelParams choose_level_params(const int32_t* levels, uint64_t count) {
  // Histogram of non-zero magnitudes over a deterministic strided sample.
  const uint64_t stride = count > kMaxParamSample ? (count + kMaxParamSample - 1) / kMaxParamSample : 1;
  // Small magnitudes are counted directly; the rare large ones are sorted.
  constexpr uint32_t kDirect = 4096;
  std::vector<uint64_t> direct(kDirect, 0);
  std::vector<uint32_t> large;
  for (uint64_t i = 0; i < count; i += stride) {
    const int32_t q = levels[i];
    const uint32_t m = q < 0 ? 0u - uint32_t(q) : uint32_t(q);
    if (m < kDirect) ++direct[m];
    else large.push_back(m);
  }
  LevelParams best;
  best.unary_len = 0;
  best.eg_order = 0;
  std::vector<MagnitudeCount> hist;
  for (uint32_t m = 1; m < kDirect; ++m)
    if (direct[m]) hist.push_back({m, direct[m]});
  std::sort(large.begin(), large.end());
  for (uint32_t m : large) {
    if (!hist.empty() && hist.back().mag == m) ++hist.back().count;
    else hist.push_back({m, 1});
  }
  if (hist.empty()) return best;
  const uint32_t max_mag = hist.back().mag;
  // tail[i] = number of magnitudes >= hist[i].mag
  std::vector<uint64_t> tail(hist.size() + 1, 0);
  for (size_t i = hist.size(); i-- > 0;) tail[i] = tail[i + 1] + hist[i].count;

  double best_cost = INFINITY;
  std::vector<double> prefix_reach, prefix_ones;
  for (uint32_t n_cand : kUnaryCandidates) {
    if (n_cand > 0 && n_cand >= max_mag + 8) break;  // longer unary codes change nothing
    // Unary flags n = 1..N: reached by magnitudes >= n, "1" for magnitudes > n.
    double unary = 0.0;
    size_t h = 0;
    for (uint32_t n = 1; n <= n_cand; ++n) {
      while (h < hist.size() && hist[h].mag < n) ++h;
      const double reach = double(tail[h]);
      if (reach == 0) break;
      size_t h2 = h;
      while (h2 < hist.size() && hist[h2].mag <= n) ++h2;
      unary += binary_entropy_cost(double(tail[h2]), reach) + kBinPenaltyBits * reach;
    }
    // Magnitudes > N go to the Exp-Golomb remainder.
    size_t first_rem = 0;
    while (first_rem < hist.size() && hist[first_rem].mag <= n_cand) ++first_rem;
    if (first_rem == hist.size()) {
      if (unary < best_cost) {
        best_cost = unary;
        best.unary_len = n_cand;
        best.eg_order = 0;
      }
      continue;
    }
    const uint64_t max_rem = uint64_t(max_mag) - n_cand - 1;
    const int max_k = max_rem ? std::min(30, 64 - __builtin_clzll(max_rem)) : 0;
    for (int k = 0; k <= max_k; ++k) {
      // Bucket j = floor(log2((r >> k) + 1)) grows with r, so "j >= b" is "mag >= threshold_b":
      // the count reaching prefix bin b is a tail sum, found by binary search (O(log) per bin,
      // not O(distinct magnitudes), which is slow when there are many distinct large levels).
      // Counts are integers, so the sums below equal the per-magnitude sums exactly.
      uint64_t reach[41];
      for (int b = 0; b <= 40; ++b) {
        reach[b] = 0;
        if (b == 40 || b + k > 34) continue;  // threshold beyond any uint32 magnitude
        const uint64_t threshold = uint64_t(n_cand) + 1 + (((uint64_t(1) << b) - 1) << k);
        const auto it = std::lower_bound(hist.begin() + first_rem, hist.end(), threshold,
                                         [](const MagnitudeCount& e, uint64_t t) { return e.mag < t; });
        reach[b] = tail[size_t(it - hist.begin())];
      }
      prefix_reach.assign(40, 0.0);
      prefix_ones.assign(40, 0.0);
      uint64_t suffix = uint64_t(k) * reach[0];  // sum of count * (k + j)
      for (int b = 0; b < 40; ++b) {
        prefix_reach[b] = double(reach[b]);
        prefix_ones[b] = double(reach[b + 1]);
        if (b > 0) suffix += reach[b];
      }
      const double suffix_bits = double(suffix);
      double cost = unary + suffix_bits;
      // Prefix bins j >= 23 share one model: pool them.
      double pooled_reach = 0, pooled_ones = 0;
      for (int b = 0; b < 40; ++b) {
        if (b < cabac::kPrefixContexts - 1) {
          cost += binary_entropy_cost(prefix_ones[b], prefix_reach[b]) + kBinPenaltyBits * prefix_reach[b];
        } else {
          pooled_reach += prefix_reach[b];
          pooled_ones += prefix_ones[b];
        }
      }
      cost += binary_entropy_cost(pooled_ones, pooled_reach) + kBinPenaltyBits * pooled_reach;
      if (cost < best_cost) {
        best_cost = cost;
        best.unary_len = n_cand;
        best.eg_order = uint32_t(k);
      }
    }
  }
  return best;
}

namespace {

constexpr uint64_t kSpeedSampleElements = 65536;

// Decoder work of one level under p, in units of a context-coded bin (bypass bins are cheaper).
double level_work(uint32_t mag, const LevelParams& p) {
  if (mag == 0) return 1.0;
  double w = 2.0;  // significance + sign
  w += mag < p.unary_len ? mag : p.unary_len;
  if (mag > p.unary_len) {
    const uint64_t r = uint64_t(mag) - p.unary_len - 1;
    const int j = 63 - __builtin_clzll((r >> p.eg_order) + 1);
    w += (j + 1) + 0.35 * (p.eg_order + j);
  }
  return w;
}

}  // namespace

LevelParams choose_level_params_for_speed(const int32_t* levels, uint64_t rows, uint64_t cols, double size_tolerance) {
  const uint64_t count = rows * cols;
  const LevelParams base = choose_level_params(levels, count);
  if (count == 0 || size_tolerance < 0) return base;
  // Sample: whole rows spread over the tensor (or a prefix of a single long row).
  std::vector<int32_t> sample;
  uint64_t srows, scols;
  if (cols >= kSpeedSampleElements || rows == 1) {
    scols = std::min<uint64_t>(cols, kSpeedSampleElements);
    srows = 1;
    sample.assign(levels, levels + scols);
  } else {
    const uint64_t want = std::max<uint64_t>(1, kSpeedSampleElements / cols);
    srows = std::min(rows, want);
    scols = cols;
    sample.reserve(size_t(srows * cols));
    for (uint64_t k = 0; k < srows; ++k) {
      const uint64_t r = k * rows / srows;
      sample.insert(sample.end(), levels + r * cols, levels + (r + 1) * cols);
    }
  }
  double mean_mag = 0;
  uint64_t nonzero = 0;
  std::vector<uint32_t> mags(sample.size());
  for (size_t i = 0; i < sample.size(); ++i) {
    const int32_t q = sample[i];
    mags[i] = q < 0 ? 0u - uint32_t(q) : uint32_t(q);
    if (mags[i]) {
      mean_mag += mags[i];
      ++nonzero;
    }
  }
  if (nonzero == 0) return base;
  mean_mag /= double(nonzero);
  std::vector<LevelParams> cands{base};
  for (uint32_t u : {0u, 2u, 4u, 8u, 14u}) {
    if (u >= base.unary_len) continue;
    const double rem = std::max(0.0, mean_mag - u - 1);
    const int k0 = std::max(0, int(std::floor(std::log2(rem + 1.0))) - 1);
    for (int k = std::max(0, k0 - 1); k <= std::min(30, k0 + 1); ++k) {
      LevelParams p;
      p.unary_len = u;
      p.eg_order = uint32_t(k);
      cands.push_back(p);
    }
  }
  if (cands.size() == 1) return base;  // nothing to compare: no pricing needed
  std::vector<double> bits(cands.size());
  estimate_level_bits_many(sample.data(), srows, scols, cands.data(), cands.size(), bits.data());
  const size_t nc = cands.size();
  double best_bits = INFINITY;
  for (size_t i = 0; i < nc; ++i) best_bits = std::min(best_bits, bits[i]);
  // Only the candidates within the tolerance compete on work (the others are never picked); with a
  // single one there is nothing to compare.
  std::vector<size_t> eligible;
  for (size_t i = 0; i < nc; ++i)
    if (!(bits[i] > best_bits * (1.0 + size_tolerance))) eligible.push_back(i);
  if (eligible.empty()) return base;
  if (eligible.size() == 1) return cands[eligible[0]];
  // Work per magnitude from a table for the common small magnitudes (the same doubles, summed in
  // the same order, so the same totals).
  uint32_t max_mag = 0;
  for (uint32_t m : mags) max_mag = std::max(max_mag, m);
  // work_of[m * ne + e]: eligible candidate e's work for magnitude m; every candidate's sum runs
  // over the magnitudes in order (one accumulator each, interleaved across candidates).
  const size_t ne = eligible.size(), table = std::min<uint32_t>(max_mag, 1023) + 1;
  std::vector<double> work_of(table * ne), work(ne, 0.0);
  for (size_t m = 0; m < table; ++m)
    for (size_t e = 0; e < ne; ++e) work_of[m * ne + e] = level_work(uint32_t(m), cands[eligible[e]]);
  for (uint32_t m : mags) {
    if (m < table) {
      const double* w = work_of.data() + size_t(m) * ne;
      for (size_t e = 0; e < ne; ++e) work[e] += w[e];
    } else {
      for (size_t e = 0; e < ne; ++e) work[e] += level_work(m, cands[eligible[e]]);
    }
  }
  // The first eligible candidate of least work.
  size_t pick = 0;
  for (size_t e = 1; e < ne; ++e)
    if (work[e] < work[pick]) pick = e;
  return cands[eligible[pick]];
}

void encode_level_payload(const int32_t* levels, uint64_t rows, uint64_t cols, const LevelParams& params,
                          std::vector<uint8_t>* out) {
  cabac::BinEncoder enc(out);
  cabac::WeightContexts ctx;
  cabac::code_rows(enc, ctx, params, const_cast<int32_t*>(levels), rows, cols);
  enc.terminate(1);
  enc.finish();
}

double estimate_level_bits(const int32_t* levels, uint64_t rows, uint64_t cols, const LevelParams& params) {
  cabac::RateEstimator est;
  cabac::WeightContexts ctx;
  cabac::code_rows(est, ctx, params, const_cast<int32_t*>(levels), rows, cols);
  return est.bits();
}

namespace {

// Cost of one regular bin on `m`, then m's update (RateEstimator::bin).
NNPRESS_INLINE uint64_t price(cabac::ContextModel& m, unsigned bin) {
  const uint64_t c = cabac::bin_cost(m, bin);
  m.update(bin);
  return c;
}

}  // namespace

// Every model sees its own bin sequence and a bin's cost depends only on its model, so the total
// is a sum over models. The significance and sign bins and the unary flag n (coded for every
// level with |q| >= n when n <= N, bin |q| > n) do not depend on the params beyond N: they are
// priced once, flag n's cost kept per n, and a pair (N, k) adds the flags n <= N and the
// Exp-Golomb part of the magnitudes above N, which is the only part priced once per pair.
void estimate_level_bits_many(const int32_t* levels, uint64_t rows, uint64_t cols, const LevelParams* params,
                              size_t count, double* bits) {
  if (count == 0) return;
  uint32_t max_unary = 0;
  for (size_t c = 0; c < count; ++c) max_unary = std::max(max_unary, params[c].unary_len);
  cabac::WeightContexts ctx;
  uint64_t shared = 0;                                  // significance and sign bins
  uint64_t flag_cost[cabac::kMaxUnaryFlags + 1] = {0};  // flag_cost[n]: unary flag n, both signs
  // The non-zero magnitudes in scan order and whether each level is negative: mags[0, nz), negs[0, nz)
  // (written by index, not appended: this loop runs once per level).
  std::vector<uint32_t> mags(size_t(rows * cols));
  std::vector<uint8_t> negs(size_t(rows * cols));
  size_t nz = 0;
  if (cols != 0) {
    for (uint64_t r = 0; r < rows; ++r) {
      cabac::Neighbourhood nb;
      const int32_t* row = levels + r * cols;
      for (uint64_t i = 0; i < cols; ++i) {
        const int32_t q = row[i];
        const uint32_t mag = q < 0 ? 0u - uint32_t(q) : uint32_t(q);
        shared += price(ctx.sig[nb.prev][nb.prev2_nonzero], mag != 0);
        if (mag != 0) {
          shared += price(ctx.sign[nb.prev], q < 0);
          mags[nz] = mag;
          negs[nz] = q < 0;
          ++nz;
        }
        nb.push(q);
      }
    }
  }
  // The unary flags (their models see only the non-zero levels, in order): flag n of a level of
  // magnitude mag (n <= min(mag, max_unary)) codes mag > n on greater[sign][n - 1].
  bool flags_done = false;
#ifdef NNPRESS_HAVE_TRELLIS_AVX2_TU
  if (max_unary > 0 && detect_isa() >= Isa::kAvx2 && isa_supported(Isa::kAvx2)) {
    detail::unary_flag_bits_avx2(mags.data(), negs.data(), nz, max_unary, flag_cost + 1);
    flags_done = true;
  }
#endif
  if (!flags_done) {
    for (size_t i = 0; i < nz; ++i) {
      cabac::ContextModel* greater = ctx.greater[negs[i]];
      const uint32_t mag = mags[i], top = std::min(mag, max_unary);
      for (uint32_t n = 1; n <= top; ++n) flag_cost[n] += price(greater[n - 1], mag > n);
    }
  }
  size_t first = 0;  // pairs before it are priced
#ifdef NNPRESS_HAVE_TRELLIS_AVX512_TU
  if (detect_isa() >= Isa::kAvx512 && isa_supported(Isa::kAvx512)) {  // the Exp-Golomb parts, 16 pairs at once
    for (; first < count; first += detail::kEgBitsLanes512) {
      const int lanes = int(std::min<size_t>(detail::kEgBitsLanes512, count - first));
      uint32_t u[detail::kEgBitsLanes512], k[detail::kEgBitsLanes512];
      uint64_t eg[detail::kEgBitsLanes512];
      for (int c = 0; c < lanes; ++c) u[c] = params[first + c].unary_len, k[c] = params[first + c].eg_order;
      detail::eg_bits_avx512(mags.data(), nz, u, k, lanes, eg);
      for (int c = 0; c < lanes; ++c) {
        uint64_t total = shared + eg[c];
        for (uint32_t n = 1; n <= u[c] && n <= max_unary; ++n) total += flag_cost[n];
        bits[first + c] = double(total) / cabac::kRateOne;
      }
    }
  }
#endif
#ifdef NNPRESS_HAVE_TRELLIS_AVX2_TU
  if (detect_isa() >= Isa::kAvx2 && isa_supported(Isa::kAvx2)) {  // the Exp-Golomb parts, 8 pairs at once
    for (; first < count; first += detail::kEgBitsLanes) {
      const int lanes = int(std::min<size_t>(detail::kEgBitsLanes, count - first));
      uint32_t u[detail::kEgBitsLanes], k[detail::kEgBitsLanes];
      uint64_t eg[detail::kEgBitsLanes];
      for (int c = 0; c < lanes; ++c) u[c] = params[first + c].unary_len, k[c] = params[first + c].eg_order;
      detail::eg_bits_avx2(mags.data(), nz, u, k, lanes, eg);
      for (int c = 0; c < lanes; ++c) {
        uint64_t total = shared + eg[c];
        for (uint32_t n = 1; n <= u[c] && n <= max_unary; ++n) total += flag_cost[n];
        bits[first + c] = double(total) / cabac::kRateOne;
      }
    }
  }
#endif
  for (size_t c = first; c < count; ++c) {
    const uint32_t unary_len = params[c].unary_len, k = params[c].eg_order;
    uint64_t total = shared;
    for (uint32_t n = 1; n <= unary_len && n <= max_unary; ++n) total += flag_cost[n];
    cabac::ContextModel eg[cabac::kPrefixContexts];
    constexpr uint32_t kLast = cabac::kPrefixContexts - 1;
    for (size_t i = 0; i < nz; ++i) {
      const uint32_t mag = mags[i];
      if (mag <= unary_len) continue;
      // code_level's bucket j of the remainder r (it holds [2^k (2^j - 1), 2^k (2^(j+1) - 1))):
      // j prefix bins 1 on models 0..j-1 (the last shared), a 0 on model j, k + j bypass bits.
      const uint64_t rem = uint64_t(mag) - unary_len - 1;
      const uint32_t j = uint32_t(63 - __builtin_clzll((rem >> k) + 1));
      for (uint32_t b = 0; b < j; ++b) total += price(eg[b < kLast ? b : kLast], 1);
      total += price(eg[j < kLast ? j : kLast], 0);
      total += uint64_t(k + j) * cabac::kRateOne;
    }
    bits[c] = double(total) / cabac::kRateOne;
  }
}

Status encode_level_stream(const int32_t* levels, uint64_t count, const std::vector<uint64_t>& shape,
                           std::vector<uint8_t>* out) {
  if (shape.size() > kMaxDims)
    return invalid_argument("encode_levels: " + std::to_string(shape.size()) + " dimensions (at most 8)");
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  if (n != count) return invalid_argument("encode_levels: shape does not match the number of levels");
  if (count != 0 && levels == nullptr) return invalid_argument("encode_levels: null levels");
  uint64_t rows, cols;
  rows_cols_of(shape, &rows, &cols);
  const LevelParams params = choose_level_params_for_speed(levels, rows, cols);
  const size_t start = out->size();
  out->insert(out->end(), {'N', 'P', 'L', kLevelStreamVersion, uint8_t(shape.size())});
  for (uint64_t d : shape) {
    do {
      uint8_t b = d & 0x7F;
      d >>= 7;
      if (d) b |= 0x80;
      out->push_back(b);
    } while (d);
  }
  out->push_back(uint8_t(params.unary_len));
  out->push_back(uint8_t(params.eg_order));
  out->reserve(out->size() + count / 2 + 64);
  encode_level_payload(levels, rows, cols, params, out);
  const uint32_t crc = crc32c(out->data() + start, out->size() - start);
  for (int i = 0; i < 4; ++i) out->push_back(uint8_t(crc >> (8 * i)));
  return Status::Ok();
}

double estimate_level_stream_bits(const int32_t* levels, uint64_t count, const std::vector<uint64_t>& shape) {
  uint64_t rows, cols;
  rows_cols_of(shape, &rows, &cols);
  return estimate_level_bits(levels, rows, cols, choose_level_params_for_speed(levels, rows, cols));
}

}  // namespace nnpress
