// Probe (issue 17, the low-bit path by table lookup): the library's LutMatrix kernel (per-row value
// tables, one vpermps per 16 weights shared by every token of a tile; nnpress/kernels/lut.h) next to an
// experimental T-MAC-style bit-serial kernel on the same 4-bit codes: per group of 4 inputs a table of
// the 16 sums of every input subset (per token), indexed with vpermps by one bit plane of 16 rows' codes;
// W x = sum_p 2^p (plane p sums) - 8 sum x for codes c = u + 8 of a uniform 16-level grid (u in
// [-8, 7]; T-MAC's tables need such a grid). Same 0.5 byte per weight. 4096 x 4096, batch 1 and 16, a
// cycle of 8 matrices (64 MB of codes each way, beyond the L3) so codes stream from memory. Not part of
// the library: it decided the kernel design (bench/results/lut.md).
//   build/bench/cpp/bench_lut_probe --benchmark_min_time=0.5
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "nnpress/cpu.h"
#include "nnpress/kernels/lut.h"

using namespace nnpress;

namespace {

constexpr uint32_t kN = 4096, kMats = 8;

// T-MAC layout: per block of 16 rows, per group of 4 columns, 2 x 16 bytes: byte k of half h holds
// plane 2h of row k in its low nibble and plane 2h + 1 in its high nibble (a plane's nibble: the bits of
// the 4 columns' codes).
struct TmacMatrix {
  std::vector<uint8_t> bits;  // (kN / 16) * (kN / 4) * 32
};

TmacMatrix to_tmac(const std::vector<uint8_t>& code) {  // code: kN x kN values 0..15
  TmacMatrix t;
  t.bits.assign(size_t(kN / 16) * (kN / 4) * 32, 0);
  for (uint32_t rb = 0; rb < kN / 16; ++rb)
    for (uint32_t g = 0; g < kN / 4; ++g)
      for (uint32_t k = 0; k < 16; ++k)
        for (int p = 0; p < 4; ++p) {
          unsigned nib = 0;
          for (int i = 0; i < 4; ++i) nib |= ((code[size_t(rb * 16 + k) * kN + 4 * g + i] >> p) & 1u) << i;
          t.bits[(size_t(rb) * (kN / 4) + g) * 32 + (p / 2) * 16 + k] |= uint8_t(nib << (4 * (p % 2)));
        }
  return t;
}

#define NNPRESS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

// Y (batch x kN) = W X for one matrix; tables: batch x (kN / 4) x 16 floats (scratch).
NNPRESS_AVX512 void tmac_matmul(const TmacMatrix& m, const float* X, size_t batch, float* Y, float* tables) {
  const __m512 sub = _mm512_setr_ps(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1);  // bit i of s as 0/1
  const __m512 b1 = _mm512_setr_ps(0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1);
  const __m512 b2 = _mm512_setr_ps(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  const __m512 b3 = _mm512_setr_ps(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  std::vector<float> xsum(batch);
  for (size_t b = 0; b < batch; ++b) {  // the subset sums of every group of 4 inputs
    const float* x = X + b * kN;
    float s = 0;
    for (uint32_t g = 0; g < kN / 4; ++g) {
      __m512 t = _mm512_mul_ps(sub, _mm512_set1_ps(x[4 * g]));
      t = _mm512_fmadd_ps(b1, _mm512_set1_ps(x[4 * g + 1]), t);
      t = _mm512_fmadd_ps(b2, _mm512_set1_ps(x[4 * g + 2]), t);
      t = _mm512_fmadd_ps(b3, _mm512_set1_ps(x[4 * g + 3]), t);
      _mm512_storeu_ps(tables + (b * (kN / 4) + g) * 16, t);
      s += x[4 * g] + x[4 * g + 1] + x[4 * g + 2] + x[4 * g + 3];
    }
    xsum[b] = s;
  }
  for (uint32_t rb = 0; rb < kN / 16; ++rb) {
    const uint8_t* bits = m.bits.data() + size_t(rb) * (kN / 4) * 32;
    for (size_t b = 0; b < batch; ++b) {
      const float* tb = tables + b * (kN / 4) * 16;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (uint32_t g = 0; g < kN / 4; ++g) {
        const __m512 t = _mm512_loadu_ps(tb + g * 16);
        const __m512i i01 = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(bits + g * 32)));
        const __m512i i23 = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(bits + g * 32 + 16)));
        a0 = _mm512_add_ps(a0, _mm512_permutexvar_ps(i01, t));
        a1 = _mm512_add_ps(a1, _mm512_permutexvar_ps(_mm512_srli_epi32(i01, 4), t));
        a2 = _mm512_add_ps(a2, _mm512_permutexvar_ps(i23, t));
        a3 = _mm512_add_ps(a3, _mm512_permutexvar_ps(_mm512_srli_epi32(i23, 4), t));
      }
      __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), a1, a0);
      y = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), a2, y);
      y = _mm512_fmadd_ps(_mm512_set1_ps(8.0f), a3, y);
      y = _mm512_sub_ps(y, _mm512_set1_ps(8.0f * xsum[b]));
      _mm512_storeu_ps(Y + b * kN + rb * 16, y);
    }
  }
}

struct Fixture {
  std::vector<levels::LutMatrix> lut;
  std::vector<TmacMatrix> tmac;
  Fixture() {
    std::mt19937 rng(1);
    std::vector<int32_t> u(size_t(kN) * kN);
    std::vector<uint8_t> code(u.size());
    const std::vector<float> rs(kN, 1.0f);
    for (uint32_t k = 0; k < kMats; ++k) {
      for (size_t i = 0; i < u.size(); ++i) {
        code[i] = uint8_t(rng() & 15u);
        u[i] = int32_t(code[i]) - 8;
      }
      levels::LutMatrix m;
      if (!levels::LutMatrix::from_levels(kN, kN, u.data(), rs.data(), nullptr, &m).ok()) std::abort();
      lut.push_back(std::move(m));
      tmac.push_back(to_tmac(code));
    }
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

std::vector<float> inputs(size_t batch) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> x(batch * kN);
  for (float& v : x) v = d(rng);
  return x;
}

void BM_lut(benchmark::State& st) {
  Fixture& f = fixture();
  const size_t batch = size_t(st.range(0));
  std::vector<float> X = inputs(batch), Y(batch * kN);
  levels::LevelKernelOptions o;
  o.isa = Isa::kAvx512;
  uint32_t k = 0;
  for (auto _ : st) {
    (void)levels::matmul(f.lut[k], X.data(), X.size(), batch, Y.data(), Y.size(), o);
    k = (k + 1) % kMats;
    benchmark::DoNotOptimize(Y.data());
  }
}

void BM_tmac(benchmark::State& st) {
  Fixture& f = fixture();
  const size_t batch = size_t(st.range(0));
  std::vector<float> X = inputs(batch), Y(batch * kN), T(batch * kN * 4), ref(batch * kN);
  // the two kernels compute the same product (up to float rounding)
  levels::LevelKernelOptions o;
  o.isa = Isa::kAvx512;
  (void)levels::matmul(f.lut[0], X.data(), X.size(), batch, ref.data(), ref.size(), o);
  tmac_matmul(f.tmac[0], X.data(), batch, Y.data(), T.data());
  double worst = 0;
  for (size_t i = 0; i < Y.size(); ++i) worst = std::max(worst, double(std::fabs(Y[i] - ref[i])));
  if (worst > 1e-2) st.SkipWithError("T-MAC kernel disagrees with LutMatrix");
  uint32_t k = 0;
  for (auto _ : st) {
    tmac_matmul(f.tmac[k], X.data(), batch, Y.data(), T.data());
    k = (k + 1) % kMats;
    benchmark::DoNotOptimize(Y.data());
  }
}

bool have_avx512() { return isa_supported(Isa::kAvx512); }

[[maybe_unused]] const int kRegistered = [] {
  if (!have_avx512()) return 0;
  for (const int batch : {1, 16}) {
    benchmark::RegisterBenchmark("lut_permute", BM_lut)
        ->Arg(batch)
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("tmac_bitserial", BM_tmac)
        ->Arg(batch)
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return 0;
}();

}  // namespace
