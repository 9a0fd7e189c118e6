// .nnp container: whole-file decode throughput by thread count, and the writers' encode throughput
// (BM_WriteAll: write_container in memory; BM_StreamWrite: ContainerFileWriter, tensor by tensor to
// a temporary file in $TMPDIR or /tmp, removed after each run; the file system's speed is included).
// A synthetic "model" of Laplacian levels (a 30522x384 embedding-like matrix, six 1536x384 and six
// 384x384 matrices: ~16 M weights, MiniLM-like shapes), written once with the default row blocks.
//   ./bench_container --benchmark_counter_table=true
// items_per_second = weights decoded (or encoded) per second; compare Threads:1 and Threads:2.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "nnpress/format/container.h"

using namespace nnpress;

namespace {

struct Synthetic {
  std::vector<std::vector<int32_t>> levels;
  std::vector<TensorInput> inputs;
  uint64_t weights = 0;
};

const Synthetic& synthetic() {
  static Synthetic s = [] {
    Synthetic m;
    std::vector<std::pair<uint64_t, uint64_t>> shapes = {{30522, 384}};
    for (int i = 0; i < 6; ++i) {
      shapes.push_back({1536, 384});
      shapes.push_back({384, 384});
    }
    std::mt19937_64 rng(1);
    std::exponential_distribution<double> e(1.0 / 12.0);  // mean |level| ~ 12 (step ~ std/20)
    std::bernoulli_distribution coin(0.5);
    m.levels.resize(shapes.size());
    for (size_t t = 0; t < shapes.size(); ++t) {
      auto& v = m.levels[t];
      v.resize(shapes[t].first * shapes[t].second);
      for (auto& x : v) {
        const int32_t q = int32_t(std::lround(e(rng)));
        x = coin(rng) ? -q : q;
      }
      TensorInput in;
      in.name = "layer." + std::to_string(t) + ".weight";
      in.storage = Storage::kQuantized;
      in.shape = {shapes[t].first, shapes[t].second};
      in.levels = v.data();
      in.step = 0.002;
      m.inputs.push_back(in);
      m.weights += v.size();
    }
    return m;
  }();
  return s;
}

const std::vector<uint8_t>& file_bytes() {
  static std::vector<uint8_t> bytes = [] {
    std::vector<uint8_t> b;
    WriterOptions o;
    if (!write_container(synthetic().inputs, o, &b).ok()) std::abort();
    return b;
  }();
  return bytes;
}

void BM_DecodeAll(benchmark::State& state) {
  const unsigned threads = unsigned(state.range(0));
  const auto& bytes = file_bytes();
  ContainerReader r;
  if (!ContainerReader::open_memory(bytes.data(), bytes.size(), &r).ok()) {
    state.SkipWithError("open failed");
    return;
  }
  std::vector<std::vector<float>> bufs(r.tensor_count());
  std::vector<void*> outs;
  std::vector<size_t> sizes;
  for (size_t i = 0; i < r.tensor_count(); ++i) {
    bufs[i].resize(r.tensor(i).count);
    outs.push_back(bufs[i].data());
    sizes.push_back(r.tensor(i).output_bytes());
  }
  for (auto _ : state) {
    if (!r.decode_all(outs, sizes, threads).ok()) state.SkipWithError("decode failed");
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(synthetic().weights));
  state.counters["bits/weight"] = 8.0 * double(bytes.size()) / double(synthetic().weights);
}
BENCHMARK(BM_DecodeAll)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_WriteAll(benchmark::State& state) {
  const auto& m = synthetic();
  WriterOptions o;
  o.threads = unsigned(state.range(0));
  std::vector<uint8_t> out;
  for (auto _ : state) {
    if (!write_container(m.inputs, o, &out).ok()) state.SkipWithError("write failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(m.weights));
}
BENCHMARK(BM_WriteAll)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_StreamWrite(benchmark::State& state) {
  const auto& m = synthetic();
  WriterOptions o;
  o.threads = unsigned(state.range(0));
  const char* tmp = std::getenv("TMPDIR");
  const std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/bench_container_stream.nnp";
  uint64_t size = 0;
  for (auto _ : state) {
    ContainerFileWriter w;
    Status s = w.open(path, o);
    for (size_t i = 0; s.ok() && i < m.inputs.size(); ++i) s = w.add(m.inputs[i]);
    if (s.ok()) s = w.finish(&size);
    if (!s.ok()) {
      state.SkipWithError(s.message().c_str());
      break;
    }
  }
  std::remove(path.c_str());
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(m.weights));
  state.counters["file_MB"] = double(size) / 1e6;
}
BENCHMARK(BM_StreamWrite)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
