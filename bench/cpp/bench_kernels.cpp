// Google Benchmark: CER / CSER / dense-codebook products on 4096 x 4096 matrices, every compiled ISA,
// one thread, batch 1 and 32 (and 2..128 for AVX2 vs AVX-512), side by side in one run.
//   build/bench/cpp/bench_kernels --benchmark_filter='/16/' --benchmark_min_time=0.2s
// BM_product_threads: the same products through the worker pool (threads 2, and 0 = as many as pay),
// the automatic ISA, CSER and codebook:
//   build/bench/cpp/bench_kernels --benchmark_filter=BM_product_threads --benchmark_min_time=0.2s
// Arguments: format (0 cer, 1 cser, 2 codebook), ISA (0 scalar, 2 avx2, 3 avx512),
// distinct values, density in percent, batch. BM_product repeats one product (matrix and input in cache);
// BM_product_flushed (batch 1, CER/CSER) times each product after writing a 64 MiB buffer (the matrix
// starts in DRAM, as a model's layer run once per input; manual timing, the flush untimed). Counters: bytes the format
// reads per product (matrix + inputs + outputs) as GB/s, and the matrix's storage bytes.
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "nnpress/cpu.h"
#include "nnpress/sparse/kernels.h"

using namespace nnpress;
using namespace nnpress::sparse;

namespace {

constexpr uint32_t kN = 4096;

// k distinct values including 0 (for density < 1): an entry is non-zero with probability `density`,
// drawn uniformly from the k - 1 non-zero levels (k levels at density 1).
std::vector<float> make_matrix(uint32_t values, double density, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const uint32_t nz = density >= 1.0 ? values : values - 1;
  std::uniform_int_distribution<uint32_t> pick(0, nz - 1);
  std::vector<float> w(size_t(kN) * kN, 0.0f);
  for (auto& v : w) {
    if (u(rng) < density) {
      const int level = int(pick(rng)) - int(nz / 2);
      v = float(level >= 0 && density < 1.0 ? level + 1 : level) * 0.01f;
    }
  }
  return w;
}

struct Built {
  RowGroupMatrix cer, cser;
  CodebookMatrix cb;
  bool has_cb = false;
};

const Built& matrices(uint32_t values, int density_pct) {
  static std::map<std::pair<uint32_t, int>, std::unique_ptr<Built>> cache;
  auto& slot = cache[{values, density_pct}];
  if (!slot) {
    slot = std::make_unique<Built>();
    const std::vector<float> w = make_matrix(values, density_pct / 100.0, 42);
    throw_if_error(RowGroupMatrix::from_dense(Format::kCER, w.data(), kN, kN, &slot->cer));
    throw_if_error(RowGroupMatrix::from_dense(Format::kCSER, w.data(), kN, kN, &slot->cser));
    slot->has_cb = CodebookMatrix::from_dense(w.data(), kN, kN, &slot->cb).ok();
  }
  return *slot;
}

// A normal random input of `batch` columns.
std::vector<float> make_input(size_t batch) {
  std::vector<float> x(size_t(kN) * batch);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  return x;
}

// One product y = W x of format 0 (CER), 1 (CSER) or 2 (codebook).
Status product(const Built& b, int format, const std::vector<float>& x, size_t batch, std::vector<float>* y,
               const KernelOptions& opt) {
  if (format == 2)
    return batch == 1 ? matvec(b.cb, x.data(), x.size(), y->data(), y->size(), opt)
                      : matmat(b.cb, x.data(), x.size(), batch, y->data(), y->size(), opt);
  const RowGroupMatrix& rg = format == 0 ? b.cer : b.cser;
  return batch == 1 ? matvec(rg, x.data(), x.size(), y->data(), y->size(), opt)
                    : matmat(rg, x.data(), x.size(), batch, y->data(), y->size(), opt);
}

void BM_product(benchmark::State& state) {
  const int format = int(state.range(0));
  const Isa isa = Isa(state.range(1));
  const uint32_t values = uint32_t(state.range(2));
  const int density_pct = int(state.range(3));
  const size_t batch = size_t(state.range(4));
  if (!isa_supported(isa)) {
    state.SkipWithError("ISA not supported here");
    return;
  }
  const Built& b = matrices(values, density_pct);
  if (format == 2 && !b.has_cb) {
    state.SkipWithError("more than 16 values");
    return;
  }
  const std::vector<float> x = make_input(batch);
  std::vector<float> y(size_t(kN) * batch);
  KernelOptions opt{isa, 1};
  const size_t matrix_bytes = format == 2 ? b.cb.nbytes() : (format == 0 ? b.cer : b.cser).nbytes();
  for (auto _ : state) {
    const Status s = product(b, format, x, batch, &y, opt);
    benchmark::DoNotOptimize(y.data());
    if (!s.ok()) state.SkipWithError(s.message().c_str());
  }
  const double bytes = double(matrix_bytes) + 4.0 * (x.size() + y.size());
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  state.counters["storage_B"] = double(matrix_bytes);
  state.SetLabel(std::string(format == 0 ? "cer" : format == 1 ? "cser" : "codebook") + "/" + isa_name(isa));
}

// Arguments: format (1 cser, 2 codebook), density in percent, batch, threads (KernelOptions::threads).
void BM_product_threads(benchmark::State& state) {
  const int format = int(state.range(0));
  const int density_pct = int(state.range(1));
  const size_t batch = size_t(state.range(2));
  KernelOptions opt;
  opt.threads = unsigned(state.range(3));
  const Built& b = matrices(16, density_pct);
  const std::vector<float> x = make_input(batch);
  std::vector<float> y(size_t(kN) * batch);
  for (auto _ : state) {
    const Status s = product(b, format, x, batch, &y, opt);
    benchmark::DoNotOptimize(y.data());
    if (!s.ok()) state.SkipWithError(s.message().c_str());
  }
  state.SetLabel(std::string(format == 1 ? "cser" : "codebook") + "/threads " + std::to_string(opt.threads));
}

void BM_product_flushed(benchmark::State& state) {
  const int format = int(state.range(0));
  const Isa isa = Isa(state.range(1));
  const uint32_t values = uint32_t(state.range(2));
  const int density_pct = int(state.range(3));
  if (!isa_supported(isa)) {
    state.SkipWithError("ISA not supported here");
    return;
  }
  const Built& b = matrices(values, density_pct);
  const RowGroupMatrix& rg = format == 0 ? b.cer : b.cser;
  const std::vector<float> x = make_input(1);
  std::vector<float> y(kN);
  static std::vector<char> junk(size_t(64) << 20, 1);
  const KernelOptions opt{isa, 1};
  for (auto _ : state) {
    for (size_t i = 0; i < junk.size(); i += 64) junk[i] = char(junk[i] + 1);
    benchmark::ClobberMemory();
    const auto t0 = std::chrono::steady_clock::now();
    const Status s = matvec(rg, x.data(), x.size(), y.data(), y.size(), opt);
    benchmark::DoNotOptimize(y.data());
    const auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    if (!s.ok()) state.SkipWithError(s.message().c_str());
  }
  state.SetLabel(std::string(format == 0 ? "cer" : "cser") + "/" + isa_name(isa) + "/flushed");
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"fmt", "isa", "values", "dens%", "batch"});
  // The AVX2 / AVX-512 choice per batch size (auto_isa, kernels.h): CSER and codebook, both ISAs.
  for (int batch : {2, 4, 8, 16, 64, 128}) {
    for (int d : {10, 1}) {
      for (int isa : {2, 3}) {
        for (int fmt : {1, 2}) {
          if (fmt == 2 && d < 10) continue;
          b->Args({fmt, isa, 16, d, batch});
        }
      }
    }
  }
  for (int batch : {1, 32}) {
    for (int values : {16, 256}) {
      for (int d : {100, 50, 25, 10, 1}) {
        for (int isa : {0, 2, 3}) {
          for (int fmt : {0, 1, 2}) {
            if (fmt == 2 && values > 16) continue;
            if (isa == 0 && batch > 1 && d > 10) continue;  // the scalar reference is slow there
            b->Args({fmt, isa, values, d, batch});
          }
        }
      }
    }
  }
}

}  // namespace

BENCHMARK(BM_product)->Apply(args)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_product_threads)
    ->ArgNames({"fmt", "dens%", "batch", "threads"})
    ->Args({1, 1, 1, 2})
    ->Args({1, 1, 1, 0})
    ->Args({1, 10, 1, 2})
    ->Args({1, 10, 1, 0})
    ->Args({2, 10, 1, 2})
    ->Args({2, 10, 1, 0})
    ->Args({1, 10, 32, 2})
    ->Args({1, 10, 32, 0})
    ->Args({2, 10, 32, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_product_flushed)
    ->ArgNames({"fmt", "isa", "values", "dens%", "batch"})
    ->ArgsProduct({{0, 1}, {2, 3}, {16, 256}, {10, 1}, {1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime()
    ->Iterations(200);
