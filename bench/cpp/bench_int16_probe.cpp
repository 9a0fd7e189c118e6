// Probe (issue 5, "an int8/int16 accumulate path where inputs are quantized, if it pays"): batch-1 CSER
// products on 4096 x 4096, 16 values, with float inputs (the library's AVX-512 kernel) next to an
// experimental int16 variant of the same kernel: x quantized to int16 per call, values as int16, int16
// value/input buffers, vpmaddwd dot products into int32, one float conversion per row. Not part of the
// library: it was measured and did not pay (bench/RESULTS.md, "CER/CSER kernels").
//   build/bench/cpp/bench_int16_probe --benchmark_min_time=0.2
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "nnpress/cpu.h"
#include "nnpress/sparse/kernels.h"

using namespace nnpress;
using namespace nnpress::sparse;

namespace {

constexpr uint32_t kN = 4096, kBlock = 2048;

std::vector<float> make_matrix(double density) {  // as bench_kernels.cpp, 16 values
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<uint32_t> pick(0, 14);
  std::vector<float> w(size_t(kN) * kN, 0.0f);
  for (auto& v : w) {
    if (u(rng) < density) {
      const int level = int(pick(rng)) - 7;
      v = float(level >= 0 ? level + 1 : level) * 0.01f;
    }
  }
  return w;
}

// The int16 variant: the library's block structure (bench/RESULTS.md), int16 buffers.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi2"))) void matvec_int16(
    const RowGroupMatrix& m, const int16_t* dq, float dscale, const float* x, float* y) {
  alignas(64) int16_t vals[kBlock + 128], xg[kBlock + 128], xq[kN];
  float amax = 0.0f;
  for (uint32_t c = 0; c < kN; ++c) amax = std::fmax(amax, std::fabs(x[c]));
  const float sx = amax > 0 ? 32767.0f / amax : 1.0f;
  for (uint32_t c = 0; c < kN; ++c) xq[c] = int16_t(std::lrintf(x[c] * sx));
  const float out_scale = 1.0f / (sx * dscale);
  const uint32_t* gp = m.group_ptr().data();
  const uint32_t* rp = m.row_ptr().data();
  const uint8_t* gv = m.group_value8().data();
  const uint16_t* col = m.col16().data();
  uint32_t r = 0;
  while (r < kN) {
    const uint32_t kb = gp[rp[r]];
    uint32_t re = r;
    while (re < kN && gp[rp[re + 1]] - kb <= kBlock) ++re;
    uint32_t s = 0;
    for (uint32_t g = rp[r]; g < rp[re]; ++g) {
      const uint32_t e = gp[g + 1] - kb;
      const __m256i d = _mm256_set1_epi16(dq[gv[g]]);
      for (uint32_t t = s; t < e || t == s; t += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(vals + t), d);
      s = e;
    }
    const uint32_t nk = gp[rp[re]] - kb;
    for (uint32_t i = 0; i < nk; ++i) xg[i] = xq[col[kb + i]];
    for (; r < re; ++r) {
      const uint32_t b = gp[rp[r]] - kb, n = gp[rp[r + 1]] - kb - b;
      __m512i a = _mm512_setzero_si512();
      uint32_t j = 0;
      for (; j + 32 <= n; j += 32) {
        a = _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_loadu_si512(vals + b + j), _mm512_loadu_si512(xg + b + j)));
      }
      const __mmask32 k = __mmask32(_bzhi_u32(0xFFFFFFFFu, n - j));
      a = _mm512_add_epi32(
          a, _mm512_madd_epi16(_mm512_maskz_loadu_epi16(k, vals + b + j), _mm512_maskz_loadu_epi16(k, xg + b + j)));
      y[r] = float(_mm512_reduce_add_epi32(a)) * out_scale;
    }
  }
}

void BM_probe(benchmark::State& state) {
  const bool int16 = state.range(0) == 1;
  const double density = state.range(1) / 100.0;
  if (!isa_supported(Isa::kAvx512)) {
    state.SkipWithError("needs AVX-512");
    return;
  }
  const std::vector<float> w = make_matrix(density);
  RowGroupMatrix m;
  throw_if_error(RowGroupMatrix::from_dense(Format::kCSER, w.data(), kN, kN, &m));
  std::vector<int16_t> dq(m.omega_delta().size());
  const float dscale = 100.0f;  // values are multiples of 0.01: exact as int16
  for (size_t k = 0; k < dq.size(); ++k) dq[k] = int16_t(std::lrintf(m.omega_delta()[k] * dscale));
  std::vector<float> x(kN), y(kN), ref(kN);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  const KernelOptions opt{Isa::kAvx512, 1};
  throw_if_error(matvec(m, x.data(), kN, ref.data(), kN, opt));
  for (auto _ : state) {
    if (int16) {
      matvec_int16(m, dq.data(), dscale, x.data(), y.data());
    } else {
      throw_if_error(matvec(m, x.data(), kN, y.data(), kN, opt));
    }
    benchmark::DoNotOptimize(y.data());
  }
  double err = 0, mag = 0;
  for (uint32_t i = 0; i < kN; ++i)
    err = std::fmax(err, std::fabs(y[i] - ref[i])), mag = std::fmax(mag, std::fabs(ref[i]));
  state.counters["max_err_rel"] = err / mag;
  state.SetLabel(int16 ? "int16 inputs" : "float (library)");
}

}  // namespace

BENCHMARK(BM_probe)->ArgNames({"int16", "dens%"})->ArgsProduct({{0, 1}, {1, 10, 25}})->Unit(benchmark::kMicrosecond);
