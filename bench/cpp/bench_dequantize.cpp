// Dequantization (quant/dequantize.h) of a 1536 x 384 tensor (all-MiniLM-L6-v2's feed-forward
// shape): uniform rule, uniform with row + column scales (format 1.1), dependent (trellis) rule.
// Compare the rows side by side in one run: the scaled rule costs one extra load and multiply
// per weight; both are small next to decoding the levels (bench_decode).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "nnpress/quant/dequantize.h"

namespace {

using namespace nnpress;

constexpr uint64_t kRows = 1536, kCols = 384;

struct Data {
  std::vector<int32_t> q;
  std::vector<double> row, col;
  std::vector<float> out;
  Data() : q(kRows * kCols), row(kRows), col(kCols), out(kRows * kCols) {
    std::mt19937 g(1);
    for (auto& x : q) x = int32_t(g() % 31) - 15;
    for (auto& x : row) x = channel_scale_of_exp(int8_t(int(g() % 17) - 8));
    for (auto& x : col) x = channel_scale_of_exp(int8_t(int(g() % 17) - 8));
  }
};

void run(benchmark::State& state, QuantMethod m, bool scaled) {
  static Data d;
  const ChannelScales sc = scaled ? ChannelScales{d.row.data(), d.col.data()} : ChannelScales();
  for (auto _ : state) {
    Status s = dequantize(d.q.data(), kRows, kCols, 0.01, m, sc, d.out.data());
    benchmark::DoNotOptimize(d.out.data());
    if (!s.ok()) state.SkipWithError("dequantize failed");
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(kRows * kCols));
}

void BM_Dequantize_Uniform(benchmark::State& s) { run(s, QuantMethod::kRdoq, false); }
void BM_Dequantize_UniformScaled(benchmark::State& s) { run(s, QuantMethod::kRdoq, true); }
void BM_Dequantize_Trellis(benchmark::State& s) { run(s, QuantMethod::kTrellis, false); }
void BM_Dequantize_TrellisScaled(benchmark::State& s) { run(s, QuantMethod::kTrellis, true); }

}  // namespace

BENCHMARK(BM_Dequantize_Uniform);
BENCHMARK(BM_Dequantize_UniformScaled);
BENCHMARK(BM_Dequantize_Trellis);
BENCHMARK(BM_Dequantize_TrellisScaled);
