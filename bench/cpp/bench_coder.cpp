// Google Benchmark for the DeepCABAC level coder: levels/s and bins/s, encode and decode, on
// i.i.d. two-sided geometric levels at several entropies and on sparse (pruned) layers.
// Run: build with -DNNPRESS_BUILD_BENCH=ON, then ./bench/cpp/bench_coder
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "nnpress/cabac/bin_decoder.h"
#include "nnpress/cabac/bin_encoder.h"
#include "nnpress/cabac/level_coder.h"

namespace {

using namespace nnpress;

constexpr uint64_t kRows = 1000, kCols = 1000;

// theta in (0,1): P(|q| = m) ~ theta^m; sparsity: fraction forced to zero.
std::vector<int32_t> make_levels(double theta, double sparsity) {
  std::mt19937_64 rng(42);
  std::geometric_distribution<int> geo(1.0 - theta);
  std::bernoulli_distribution coin(0.5), drop(sparsity);
  std::vector<int32_t> v(kRows * kCols);
  for (auto& x : v) {
    const int m = geo(rng);
    x = drop(rng) ? 0 : (coin(rng) ? -m : m);
  }
  return v;
}

// Number of regular + bypass bins the syntax produces (for bins/s).
struct BinCounter {
  static constexpr bool kDecoding = false;
  uint64_t bins = 0;
  unsigned bin(unsigned b, cabac::ContextModel& m) {
    ++bins;
    m.update(b);
    return b;
  }
  uint32_t bypass(uint32_t v, int n) {
    bins += uint64_t(n);
    return v;
  }
};

uint64_t count_bins(const std::vector<int32_t>& v, const LevelParams& p) {
  BinCounter c;
  cabac::WeightContexts ctx;
  cabac::code_rows(c, ctx, p, const_cast<int32_t*>(v.data()), kRows, kCols);
  return c.bins;
}

void set_counters(benchmark::State& st, uint64_t bins, size_t bytes) {
  st.counters["levels/s"] = benchmark::Counter(double(kRows * kCols), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["bins/s"] = benchmark::Counter(double(bins), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["bits/level"] = double(bytes) * 8.0 / double(kRows * kCols);
}

void BM_Encode(benchmark::State& st) {
  const auto v = make_levels(st.range(0) / 100.0, st.range(1) / 100.0);
  const LevelParams p = choose_level_params_for_speed(v.data(), kRows, kCols);
  std::vector<uint8_t> out;
  for (auto _ : st) {
    out.clear();
    encode_level_payload(v.data(), kRows, kCols, p, &out);
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, count_bins(v, p), out.size());
}

void BM_Decode(benchmark::State& st) {
  const auto v = make_levels(st.range(0) / 100.0, st.range(1) / 100.0);
  const LevelParams p = choose_level_params_for_speed(v.data(), kRows, kCols);
  std::vector<uint8_t> data;
  encode_level_payload(v.data(), kRows, kCols, p, &data);
  std::vector<int32_t> out(v.size());
  for (auto _ : st) {
    Status s = decode_level_payload(data.data(), data.size(), kRows, kCols, p, out.data());
    if (!s.ok() || out != v) st.SkipWithError("decode mismatch");
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, count_bins(v, p), data.size());
}

void BM_EstimateBits(benchmark::State& st) {
  const auto v = make_levels(st.range(0) / 100.0, st.range(1) / 100.0);
  const LevelParams p = choose_level_params_for_speed(v.data(), kRows, kCols);
  for (auto _ : st) benchmark::DoNotOptimize(estimate_level_bits(v.data(), kRows, kCols, p));
  set_counters(st, count_bins(v, p), 0);
}

void BM_ChooseParams(benchmark::State& st) {
  const auto v = make_levels(st.range(0) / 100.0, st.range(1) / 100.0);
  for (auto _ : st) benchmark::DoNotOptimize(choose_level_params(v.data(), v.size()));
  st.counters["levels/s"] = benchmark::Counter(double(kRows * kCols), benchmark::Counter::kIsIterationInvariantRate);
}

// Args: {theta*100, sparsity*100}
#define LEVEL_ARGS ->Args({50, 0})->Args({80, 0})->Args({90, 0})->Args({70, 90})->Unit(benchmark::kMillisecond)
BENCHMARK(BM_Encode) LEVEL_ARGS;
BENCHMARK(BM_Decode) LEVEL_ARGS;
BENCHMARK(BM_EstimateBits) LEVEL_ARGS;
BENCHMARK(BM_ChooseParams) LEVEL_ARGS;

}  // namespace
