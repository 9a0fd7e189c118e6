// Google Benchmark: integer-level products (nnpress/kernels/levels.h), every compiled ISA, one thread.
//   build/bench/cpp/bench_levels --benchmark_min_time=0.2s
// BM_levels/rows/cols/batch/isa: one matrix, repeated (matrix and inputs in cache after the first product).
// BM_levels_streamed/rows/cols/batch/isa: a stack of distinct matrices of the same shape, one product
// per matrix in turn, the stack's int8 weights totalling NNPRESS_BENCH_STACK_MIB (default 512) MiB, so the
// weights come from memory as in a forward pass over layers larger than the cache.
// Arguments: rows, cols, batch, ISA (0 scalar, 1 neon, 2 avx2, 3 avx512), activations (0 float32,
// 1 int16 with VNNI where the CPU has it, 2 int16 without VNNI). Counters: weights/s (matrix entries per second of
// products, whatever the batch), MAC/s (weights x batch), and the matrix's bytes per weight.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "nnpress/cpu.h"
#include "nnpress/kernels/levels.h"

using namespace nnpress;
using levels::LevelMatrix;

namespace {

// Indices as a trellis-quantized Linear weight has them: mostly small, a few beyond int8.
LevelMatrix make_matrix(uint32_t rows, uint32_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0.0, 12.0);
  std::vector<int32_t> u(size_t(rows) * cols);
  for (int32_t& v : u) v = int32_t(std::lround(g(rng)));
  u[7] = 1000;  // one entry in the exact list
  std::vector<float> rs(rows, 0.01f);
  LevelMatrix m;
  throw_if_error(LevelMatrix::from_levels(rows, cols, u.data(), rs.data(), nullptr, &m));
  return m;
}

const std::vector<LevelMatrix>& stack(uint32_t rows, uint32_t cols, size_t count) {
  static std::map<std::tuple<uint32_t, uint32_t, size_t>, std::unique_ptr<std::vector<LevelMatrix>>> cache;
  auto& slot = cache[{rows, cols, count}];
  if (!slot) {
    slot = std::make_unique<std::vector<LevelMatrix>>();
    for (size_t k = 0; k < count; ++k) slot->push_back(make_matrix(rows, cols, uint32_t(k + 1)));
  }
  return *slot;
}

void run(benchmark::State& state, bool streamed) {
  const uint32_t rows = uint32_t(state.range(0)), cols = uint32_t(state.range(1));
  const size_t batch = size_t(state.range(2));
  const Isa isa = Isa(state.range(3));
  const int mode = int(state.range(4));
  if (!isa_supported(isa)) {
    state.SkipWithError("ISA not available");
    return;
  }
  size_t count = 1;
  if (streamed) {
    const char* env = std::getenv("NNPRESS_BENCH_STACK_MIB");
    const double mib = env ? std::atof(env) : 512.0;
    count = std::max<size_t>(2, size_t(mib * 1048576.0 / (double(rows) * cols)));
  }
  const std::vector<LevelMatrix>& ms = stack(rows, cols, count);
  std::vector<float> X(batch * cols), Y(batch * rows);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (float& v : X) v = d(rng);
  levels::LevelKernelOptions o;
  o.isa = isa;
  o.activations = mode == 0 ? levels::Activations::kFloat32 : levels::Activations::kInt16;
  o.vnni = mode == 1;
  size_t k = 0;
  for (auto _ : state) {
    throw_if_error(levels::matmul(ms[k], X.data(), X.size(), batch, Y.data(), Y.size(), o));
    benchmark::DoNotOptimize(Y.data());
    if (++k == ms.size()) k = 0;
  }
  const double weights = double(rows) * cols;
  state.counters["weights/s"] = benchmark::Counter(weights, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["MAC/s"] = benchmark::Counter(weights * batch, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes/weight"] = double(ms[0].nbytes()) / weights;
  state.SetLabel(std::string(isa_name(isa)) + (mode == 0 ? " float32" : mode == 1 ? " int16" : " int16 no-vnni"));
}

void BM_levels(benchmark::State& state) { run(state, false); }
void BM_levels_streamed(benchmark::State& state) { run(state, true); }

void shapes(benchmark::internal::Benchmark* b) {
  for (int mode : {0, 1, 2}) {
    for (int isa : {0, 1, 2, 3}) {
      if (!isa_supported(Isa(isa)) || (mode == 2 && isa != 3)) continue;
      b->Args({4096, 4096, 1, isa, mode});
      b->Args({384, 384, 16, isa, mode});
      b->Args({1536, 384, 16, isa, mode});
      b->Args({384, 1536, 16, isa, mode});
    }
  }
}

void streamed_shapes(benchmark::internal::Benchmark* b) {
  for (int mode : {0, 1}) {
    for (int isa : {0, 1, 2, 3}) {
      if (!isa_supported(Isa(isa))) continue;
      b->Args({4096, 4096, 1, isa, mode});
    }
  }
}

}  // namespace

BENCHMARK(BM_levels)->Apply(shapes)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_levels_streamed)->Apply(streamed_shapes)->Unit(benchmark::kMicrosecond);
