// Whole-file decode throughput by thread count (Google Benchmark).
//
//   NNPRESS_DECODE_NNP=model.nnp bench_decode --benchmark_repetitions=5 [--benchmark_format=json]
//
// Without NNPRESS_DECODE_NNP a synthetic file is built in memory (encoder builds only): 24 tensors of
// 512 x 1024 Laplacian levels (12.6 M weights), default writer options.
//
// Benchmarks (real time; the argument is the thread count, 0 = all hardware threads):
//   BM_DecodeInto/T       ContainerReader::decode_all into buffers allocated once (the decode itself),
//                         file bytes in memory (open_memory)
//   BM_MappedDecodeInto/T the same from the file mapped by Model::open_file (the synthetic file is
//                         written to a temporary file, opened and unlinked; the page cache holds it)
//   BM_MappedDecodeOne/T  random access: the largest tensor by name from the mapped file
//   BM_ModelDecodeAll/T   nnpress::Model::decode_all (allocates the output tensors every call)
// CPU time is the whole process's (all decode threads) for BM_DecodeInto: on a busy machine, CPU
// time per run shows the work a thread count costs even when wall time is inflated by other load.
// Counters: weights/s (items_per_second), output MB/s (bytes_per_second), file_MB.
// Repetitions also report "min" next to mean/median: in that row the times are the best run's, but
// the rate counters are the minimum rates (the slowest run) — compute rates from the best time. Before timing, the
// outputs of every thread count are compared with the 1-thread output; a difference aborts the benchmark with an error.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "nnpress/runtime.h"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace {

struct Fixture {
  std::vector<uint8_t> bytes;
  nnpress::Model model;
  nnpress::Model mapped;  // the same file through Model::open_file
  std::string largest;  // name of the largest tensor
  uint64_t largest_weights = 0, largest_bytes = 0;
  std::vector<std::vector<uint8_t>> outs;
  std::vector<void*> ptrs;
  std::vector<size_t> sizes;
  uint64_t weights = 0, out_bytes = 0;
  std::vector<std::vector<uint8_t>> reference;  // 1-thread output
  std::string error;
};

bool read_file(const char* path, std::vector<uint8_t>* out) {
  std::FILE* f = std::fopen(path, "rb");
  if (!f) return false;
  std::fseek(f, 0, SEEK_END);
  const long n = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  out->resize(n > 0 ? size_t(n) : 0);
  const bool ok = n >= 0 && std::fread(out->data(), 1, out->size(), f) == out->size();
  std::fclose(f);
  return ok;
}

Fixture* make_fixture() {
  auto* fx = new Fixture();
  const char* path = std::getenv("NNPRESS_DECODE_NNP");
  if (path && *path) {
    if (!read_file(path, &fx->bytes)) {
      fx->error = std::string("cannot read ") + path;
      return fx;
    }
  } else {
#ifdef NNPRESS_WITH_ENCODER
    std::mt19937_64 rng(1);
    std::exponential_distribution<double> e(1.0 / 2.0);
    std::bernoulli_distribution coin(0.5);
    const uint64_t rows = 512, cols = 1024, n = 24;
    std::vector<std::vector<int32_t>> levels(n, std::vector<int32_t>(rows * cols));
    std::vector<nnpress::TensorInput> in(n);
    for (uint64_t t = 0; t < n; ++t) {
      for (auto& x : levels[t]) {
        const int32_t m = int32_t(std::round(e(rng)));
        x = coin(rng) ? -m : m;
      }
      in[t].name = "layer." + std::to_string(t) + ".weight";
      in[t].storage = nnpress::Storage::kQuantized;
      in[t].shape = {rows, cols};
      in[t].levels = levels[t].data();
      in[t].step = 0.01;
    }
    nnpress::Status s = nnpress::write_container(in, nnpress::WriterOptions(), &fx->bytes);
    if (!s.ok()) {
      fx->error = s.message();
      return fx;
    }
#else
    fx->error = "set NNPRESS_DECODE_NNP (decoder-only build: no synthetic file)";
    return fx;
#endif
  }
  nnpress::Status s = nnpress::Model::open_memory(fx->bytes.data(), fx->bytes.size(), &fx->model);
  if (!s.ok()) {
    fx->error = s.message();
    return fx;
  }
  const nnpress::ContainerReader& r = fx->model.reader();
  for (size_t i = 0; i < r.tensor_count(); ++i) {
    const nnpress::TensorInfo& t = r.tensor(i);
    fx->outs.emplace_back(t.output_bytes());
    fx->sizes.push_back(t.output_bytes());
    fx->ptrs.push_back(t.output_bytes() ? fx->outs.back().data() : nullptr);
    fx->out_bytes += t.output_bytes();
    if (t.storage == nnpress::Storage::kQuantized) fx->weights += t.count;
  }
  s = r.decode_all(fx->ptrs, fx->sizes, 1);
  if (!s.ok()) {
    fx->error = s.message();
    return fx;
  }
  fx->reference = fx->outs;
  for (unsigned th : {2u, 3u, 4u}) {  // bit-identical for every thread count
    for (auto& o : fx->outs) std::fill(o.begin(), o.end(), uint8_t(0xA5));
    s = r.decode_all(fx->ptrs, fx->sizes, th);
    if (!s.ok() || fx->outs != fx->reference) {
      fx->error = "decode with " + std::to_string(th) + " threads differs from 1 thread";
      return fx;
    }
  }
  for (size_t i = 0; i < r.tensor_count(); ++i) {
    if (r.tensor(i).output_bytes() > fx->largest_bytes) {
      fx->largest = r.tensor(i).name;
      fx->largest_bytes = r.tensor(i).output_bytes();
      fx->largest_weights = r.tensor(i).count;
    }
  }
  // The mapped file: the given path, or the synthetic bytes in a temporary file (unlinked once
  // open: the mapping keeps it).
  std::string file = path && *path ? path : "";
#if defined(__unix__) || defined(__APPLE__)
  if (file.empty()) {
    char tmpl[] = "/tmp/bench_decode_XXXXXX";
    const int fd = mkstemp(tmpl);
    bool ok = fd >= 0;
    for (size_t off = 0; ok && off < fx->bytes.size();) {
      const ssize_t w = write(fd, fx->bytes.data() + off, fx->bytes.size() - off);
      ok = w > 0;
      off += ok ? size_t(w) : 0;
    }
    if (fd >= 0) close(fd);
    if (!ok) {
      fx->error = "cannot write a temporary file";
      return fx;
    }
    file = tmpl;
  }
#endif
  if (!file.empty()) {
    s = nnpress::Model::open_file(file, &fx->mapped);
    if (!(path && *path)) std::remove(file.c_str());
    if (!s.ok()) {
      fx->error = s.message();
      return fx;
    }
    for (auto& o : fx->outs) std::fill(o.begin(), o.end(), uint8_t(0xA5));
    s = fx->mapped.reader().decode_all(fx->ptrs, fx->sizes, 2);
    if (!s.ok() || fx->outs != fx->reference) {
      fx->error = "the mapped file decodes differently from the bytes in memory";
      return fx;
    }
  }
  std::fprintf(stderr,
               "bench_decode: %s, %zu bytes, %zu tensors, %llu quantized weights, %llu output bytes; "
               "1/2/3/4-thread outputs identical\n",
               path && *path ? path : "synthetic", fx->bytes.size(), r.tensor_count(), (unsigned long long)fx->weights,
               (unsigned long long)fx->out_bytes);
  return fx;
}

Fixture& fixture() {
  static Fixture* fx = make_fixture();
  return *fx;
}

void set_counters(benchmark::State& state, const Fixture& fx) {
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(fx.weights));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(fx.out_bytes));
  state.counters["file_MB"] = double(fx.bytes.size()) / 1e6;
}

void BM_DecodeInto(benchmark::State& state) {
  Fixture& fx = fixture();
  if (!fx.error.empty()) {
    state.SkipWithError(fx.error.c_str());
    return;
  }
  const unsigned th = unsigned(state.range(0));
  for (auto _ : state) {
    nnpress::Status s = fx.model.reader().decode_all(fx.ptrs, fx.sizes, th);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      break;
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, fx);
}

void BM_MappedDecodeInto(benchmark::State& state) {
  Fixture& fx = fixture();
  if (!fx.error.empty() || fx.mapped.tensor_count() == 0) {
    state.SkipWithError(fx.error.empty() ? "no mapped file on this platform" : fx.error.c_str());
    return;
  }
  const unsigned th = unsigned(state.range(0));
  for (auto _ : state) {
    nnpress::Status s = fx.mapped.reader().decode_all(fx.ptrs, fx.sizes, th);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      break;
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, fx);
}

void BM_MappedDecodeOne(benchmark::State& state) {
  Fixture& fx = fixture();
  if (!fx.error.empty() || fx.mapped.tensor_count() == 0) {
    state.SkipWithError(fx.error.empty() ? "no mapped file on this platform" : fx.error.c_str());
    return;
  }
  const unsigned th = unsigned(state.range(0));
  std::vector<uint8_t> out(size_t(fx.largest_bytes));
  for (auto _ : state) {
    nnpress::Status s = fx.mapped.decode(fx.largest, out.data(), out.size(), th);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(fx.largest_weights));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(fx.largest_bytes));
}

void BM_ModelDecodeAll(benchmark::State& state) {
  Fixture& fx = fixture();
  if (!fx.error.empty()) {
    state.SkipWithError(fx.error.c_str());
    return;
  }
  const unsigned th = unsigned(state.range(0));
  for (auto _ : state) {
    std::vector<nnpress::Tensor> out;
    nnpress::Status s = fx.model.decode_all(&out, th);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(state, fx);
}

double min_of(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }

}  // namespace

BENCHMARK(BM_DecodeInto)
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMillisecond)
    ->ComputeStatistics("min", min_of);
BENCHMARK(BM_MappedDecodeInto)
    ->Arg(1)
    ->Arg(2)
    ->Arg(0)
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMillisecond)
    ->ComputeStatistics("min", min_of);
BENCHMARK(BM_MappedDecodeOne)
    ->Arg(1)
    ->Arg(0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->ComputeStatistics("min", min_of);
BENCHMARK(BM_ModelDecodeAll)
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->ComputeStatistics("min", min_of);
