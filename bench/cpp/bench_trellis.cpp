// The trellis (quant/trellis.h) on all-MiniLM-L6-v2-shaped tensors: Gaussian weights with
// std / step = 48 (the default step of a MiniLM weight is about std / 48), lambda = 0.24 step^2
// (the tuner's trellis trade-off), 384 x 1536 and 384 x 384.
//   BM_TrellisPass     one trellis_pass over the whole tensor with fixed params (the search alone):
//                      args cols / unary_len / eg_order; (0, 2) is the pair quantize() picks for
//                      all-MiniLM-L6-v2's layer-0 feed-forward weights at qp -38, (14, 3) exercises
//                      long unary chains
//   BM_TrellisQuantize quantize(): the params pick and up to two passes, with a given number of
//                      threads (0: all cores) and rows per chunk (0: one chunk)
// Items/s are weights/s. bench/python/bench_trellis_vs_nncodec.py runs the same search on the real
// MiniLM tensors side by side with NNCodec's dependent quantization (and bench_quant.py --minilm
// against another build).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "nnpress/quant/quantize.h"
#include "nnpress/quant/trellis.h"

namespace {

using namespace nnpress;

constexpr double kStep = 1.0 / 48.0;  // std = 1

struct Data {
  uint64_t rows, cols;
  std::vector<float> w;
  std::vector<int32_t> q;
  std::vector<float> recon;
  Data(uint64_t r, uint64_t c) : rows(r), cols(c), w(r * c), q(r * c), recon(r * c) {
    std::mt19937_64 g(7);
    std::normal_distribution<double> n(0.0, 1.0);
    for (auto& x : w) x = float(n(g));
  }
};

Data& data(uint64_t cols) {
  static Data wide(384, 1536), square(384, 384);
  return cols == 1536 ? wide : square;
}

void BM_TrellisPass(benchmark::State& state) {
  Data& d = data(uint64_t(state.range(0)));
  PassArgs<float, float> a;
  a.weights = d.w.data();
  a.rows = d.rows, a.cols = d.cols;
  a.step = kStep;
  a.lambda = 0.24 * kStep * kStep;
  a.params.unary_len = uint32_t(state.range(1));
  a.params.eg_order = uint32_t(state.range(2));
  a.levels = d.q.data();
  a.recon = d.recon.data();
  double dist = 0.0;
  a.distortion = &dist;
  for (auto _ : state) {
    benchmark::DoNotOptimize(trellis_pass(a));
    benchmark::DoNotOptimize(d.q.data());
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(d.rows * d.cols));
}

void BM_TrellisQuantize(benchmark::State& state) {
  Data& d = data(uint64_t(state.range(0)));
  QuantOptions o;
  o.method = QuantMethod::kTrellis;
  o.step = kStep;
  o.lambda = 0.24 * kStep * kStep;
  o.threads = unsigned(state.range(1));
  o.chunk_rows = uint64_t(state.range(2));
  for (auto _ : state) {
    QuantResult res;
    Status s = quantize<float, float>(d.w.data(), nullptr, d.rows, d.cols, o, d.q.data(), d.recon.data(), &res);
    if (!s.ok()) state.SkipWithError("quantize failed");
    benchmark::DoNotOptimize(d.q.data());
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(d.rows * d.cols));
}

}  // namespace

BENCHMARK(BM_TrellisPass)->Args({384, 0, 2})->Args({1536, 0, 2})->Args({1536, 14, 3})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrellisQuantize)
    ->Args({1536, 1, 0})
    ->Args({1536, 0, 64})
    ->Args({384, 1, 0})
    ->Args({384, 0, 64})
    ->Unit(benchmark::kMillisecond);
