// Round trips, termination checks and error paths of the CABAC engine and the level coder.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "nnpress/cabac/bin_decoder.h"
#include "nnpress/cabac/bin_encoder.h"
#include "nnpress/cabac/level_coder.h"
#include "nnpress/format/crc.h"

using namespace nnpress;

static std::vector<int32_t> laplacian(size_t n, double scale, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> e(1.0 / scale);
  std::bernoulli_distribution coin(0.5);
  std::vector<int32_t> v(n);
  for (auto& x : v) {
    double m = std::round(e(rng));
    if (m > 2147483647.0) m = 2147483647.0;
    x = coin(rng) ? -int32_t(m) : int32_t(m);
  }
  return v;
}

#ifdef NNPRESS_WITH_ENCODER  // the framed-stream round trips need the encoder side
static void round_trip(const std::vector<int32_t>& v, std::vector<uint64_t> shape) {
  std::vector<uint8_t> bytes;
  CHECK(encode_level_stream(v.data(), v.size(), shape, &bytes).ok());
  LevelStreamInfo info;
  Status s = read_level_stream_info(bytes.data(), bytes.size(), &info);
  CHECK(s.ok());
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return;
  }
  CHECK(info.count == v.size());
  std::vector<int32_t> out(info.count, 12345);
  s = decode_level_stream(bytes.data(), bytes.size(), info, out.data(), out.size());
  if (!s.ok()) std::fprintf(stderr, "%s\n", s.message().c_str());
  CHECK(s.ok());
  CHECK(out == v);
  // Payload decode must also fail on every truncation of the payload.
  for (size_t cut = 0; cut < info.payload_size && cut < 64; ++cut) {
    std::vector<int32_t> junk(info.count);
    Status t = decode_level_payload(bytes.data() + info.payload_offset, cut, info.rows, info.cols, info.params,
                                    junk.data());
    if (t.ok()) std::fprintf(stderr, "truncation to %zu of %zu accepted\n", cut, info.payload_size);
    CHECK(!t.ok());
  }
}

#endif

static void test_engine_random_bins() {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = trial * 37 % 5000;
    std::vector<int> kinds(n), bins(n), nb(n);
    std::vector<uint8_t> out;
    cabac::BinEncoder enc(&out);
    cabac::ContextModel ctx[4];
    std::uniform_int_distribution<int> kind_d(0, 9);
    const double p1 = (trial % 10) / 10.0 + 0.03;
    std::bernoulli_distribution bit(p1);
    for (int i = 0; i < n; ++i) {
      kinds[i] = kind_d(rng);
      if (kinds[i] < 7) {
        bins[i] = bit(rng);
        enc.bin(bins[i], ctx[kinds[i] % 4]);
      } else if (kinds[i] < 9) {
        nb[i] = 1 + int(rng() % 32);
        bins[i] = int(rng() & (nb[i] == 32 ? 0xFFFFFFFFu : ((1u << nb[i]) - 1)));
        enc.bypass(uint32_t(bins[i]), nb[i]);
      } else {
        enc.terminate(0);
      }
    }
    enc.terminate(1);
    enc.finish();
    cabac::BinDecoder dec(out.data(), out.size());
    cabac::ContextModel dctx[4];
    bool ok = true;
    for (int i = 0; i < n; ++i) {
      if (kinds[i] < 7) ok &= int(dec.bin(0, dctx[kinds[i] % 4])) == bins[i];
      else if (kinds[i] < 9) ok &= int(dec.bypass(0, nb[i])) == bins[i];
      else ok &= dec.terminate() == 0;
    }
    CHECK(ok);
    CHECK(dec.terminate() == 1);
    CHECK(dec.finish());
    // One byte more or less must not pass the termination check.
    std::vector<uint8_t> longer = out;
    longer.push_back(0);
    cabac::BinDecoder d2(longer.data(), longer.size());
    cabac::ContextModel c2[4];
    for (int i = 0; i < n; ++i) {
      if (kinds[i] < 7) d2.bin(0, c2[kinds[i] % 4]);
      else if (kinds[i] < 9) d2.bypass(0, nb[i]);
      else d2.terminate();
    }
    CHECK(!(d2.terminate() == 1 && d2.finish()));
  }
}

int main() {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  test_engine_random_bins();
#ifdef NNPRESS_WITH_ENCODER
  round_trip({}, {0});
  round_trip({}, {3, 0, 2});
  round_trip({5}, {});
  round_trip({0}, {1});
  round_trip({INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1}, {2, 3});
  for (double scale : {0.1, 1.0, 10.0, 1e3, 1e4, 1e7})
    round_trip(laplacian(20000, scale, uint32_t(scale * 10)), {100, 200});
  round_trip(std::vector<int32_t>(10000, 0), {10000});
  round_trip(std::vector<int32_t>(999, -7), {9, 111});
  {
    std::vector<uint8_t> bytes;
    auto v = laplacian(1000, 3.0, 1);
    encode_level_stream(v.data(), v.size(), {1000}, &bytes);
    for (size_t i = 0; i < bytes.size(); ++i) {
      auto c = bytes;
      c[i] ^= 0x10;
      LevelStreamInfo info;
      CHECK(!read_level_stream_info(c.data(), c.size(), &info).ok());
    }
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      LevelStreamInfo info;
      CHECK(!read_level_stream_info(bytes.data(), cut, &info).ok());
    }
  }
#endif
  return TEST_MAIN_RESULT();
}
