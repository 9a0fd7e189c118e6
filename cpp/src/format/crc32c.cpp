// CRC-32C by slicing-by-8 over a table built once (portable: no ISA-specific instructions).
#include "nnpress/format/crc.h"

#include <array>
#include <cstring>

namespace nnpress {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  constexpr Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

constexpr Tables kTables{};

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t seed) {
  const auto& t = kTables.t;
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~seed;
  while (size >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lo = __builtin_bswap32(lo);
    hi = __builtin_bswap32(hi);
#endif
    lo ^= c;
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][hi & 0xFF] ^
        t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size--) c = t[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
  return ~c;
}

namespace {

// Polynomials over GF(2) modulo the CRC polynomial P, in the CRC's reflected bit order: bit 31 is
// the coefficient of x^0, bit 0 that of x^31.
constexpr uint32_t kOne = 0x80000000u;  // x^0

// a(x) * b(x) mod P: the sum of b(x) * x^k over the terms x^k of a, with b(x) * x^k formed by
// repeated multiplication by x (a right shift; x^32 reduces to P's lower terms, kPoly).
uint32_t mul_mod_p(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (int k = 0; k < 32; ++k) {
    if (a & (kOne >> k)) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return product;
}

// x^(8 n) mod P: appending n bytes multiplies the register by this (square and multiply).
uint32_t x_pow_8n_mod_p(uint64_t n) {
  uint32_t result = kOne, power = kOne >> 8;  // x^8
  for (; n != 0; n >>= 1) {
    if (n & 1) result = mul_mod_p(result, power);
    power = mul_mod_p(power, power);
  }
  return result;
}

}  // namespace

// With the register preset and final xor both all ones, crc(A B) = crc(A) * x^(8|B|) + crc(B)
// (the presets cancel: crc(B) already carries the preset B would start from).
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b) {
  return mul_mod_p(crc_a, x_pow_8n_mod_p(size_b)) ^ crc_b;
}

}  // namespace nnpress
