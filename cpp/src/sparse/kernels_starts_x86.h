// Internal: the batch-1 CER/CSER kernel for short groups that reads group boundaries from the matrix's
// kernel plan (a bit per entry, RowGroupMatrix::starts) instead of walking the group pointers. Included
// by the x86 ISA translation units (avx2/, avx512/), each compiled with its own flags.
//
// CONTRACT
//   starts_matvec(m, x, y, r0, r1, fallback): y[r] for rows [r0, r1) without the Ω[0] term, as rows_matvec
//   (kernels_simd.h). Requires the plan (m.starts, m.start_values non-null), |Ω| <= 256 and 16-bit columns.
//   Rows are taken in blocks of whole rows of up to kStartsBlock entries (their first entries from the
//   plan's row_start: one sequential array, where row_ptr then group_ptr are two dependent loads per row,
//   slow once the matrix is out of cache), and a block's entries in the aligned runs of 8 that
//   hold them (one byte of start bits each; lanes outside the block are computed and not summed):
//     - the 8 inputs x[col] into one register: by scalar loads (each index its own 16-bit load: fewer
//       instructions than shifting them out of one 64-bit load; timings in bench/RESULTS.md), or, with
//       kGather, by one hardware gather (faster on CPUs whose gathers are fast; kernels.cpp decides);
//     - each lane's group, counted from the chunk's first group, from the chunk's 8 start bits by one
//       load from a 256-entry table of prefix counts; the values of the 8 groups from that one come from
//       their 8 Ω indices (start_values) through the Ω-delta table held in two registers (two permutes
//       and a blend; one two-table permute where AVX-512VL is compiled in; more than 16 values: 8 scalar
//       loads), then one permute by the lanes' counts gives every lane its value;
//     - the 8 products go to a buffer, and each row sums its slice of it.
//   So the kernel has no loop, load, store or branch per group: with ~3 entries per group the per-group
//   work of rows_matvec (a group end, a value index, a value and a store per group) was most of its time
//   (bench/RESULTS.md). A row longer than kStartsBlock entries goes to `fallback`.
//   Lanes before a block's first entry or past its end (up to 7 each) compute products of other rows'
//   entries that no row sums (and start no groups);
//   lanes past the matrix's last entry, or group counts past its last group, read zeroed copies.
//   Results equal the scalar reference up to float rounding: each entry is multiplied by its value here
//   (Σ δ·x), where the reference multiplies each group's sum once (δ·Σx).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels_internal.h"
#include "x86_common.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-vectorize")  // as kernels_simd.h: no compiler gathers
#endif

namespace nnpress::sparse::detail {
namespace {

constexpr uint32_t kStartsBlock = 2048;  // entries per block: the product buffer (8 KiB) stays in L1

template <bool B>
struct Bool {
  static constexpr bool value = B;
};

// off[b][j] = (bits of b set in lanes 0..j) - (b & 1): lane j's group relative to lane 0's.
struct PrefixTable {
  alignas(64) uint8_t off[256][8];
};
constexpr PrefixTable make_prefix_table() {
  PrefixTable t{};
  for (int b = 0; b < 256; ++b) {
    int c = 0;
    for (int j = 0; j < 8; ++j) {
      c += (b >> j) & 1;
      t.off[b][j] = uint8_t(c - (b & 1));
    }
  }
  return t;
}
constexpr PrefixTable kPrefix = make_prefix_table();

// Set bits of `bits` in entries [k0, k1).
inline uint32_t starts_in(const uint8_t* bits, uint32_t k0, uint32_t k1) {
  uint32_t n = 0, k = k0;
  for (; k < k1 && (k & 7); ++k) n += (bits[k >> 3] >> (k & 7)) & 1u;
  for (; k + 64 <= k1; k += 64) {
    uint64_t w;
    __builtin_memcpy(&w, bits + (k >> 3), 8);
    n += uint32_t(__builtin_popcountll(w));
  }
  for (; k < k1; ++k) n += (bits[k >> 3] >> (k & 7)) & 1u;
  return n;
}

// sum(p[0 .. n)); masked lanes are never loaded.
inline float slice_sum(const float* p, uint32_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  uint32_t j = 0;
  for (; j + 16 <= n; j += 16) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + j));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + j + 8));
  }
  const int rest = int(n - j);  // 0 .. 15
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  a0 = _mm256_add_ps(a0, _mm256_maskload_ps(p + j, _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), iota)));
  a1 = _mm256_add_ps(a1, _mm256_maskload_ps(p + j + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(rest - 8), iota)));
  return hsum256(_mm256_add_ps(a0, a1));
}

// delta at the 8 value indices g[0..8) (more than 16 values: no in-register table). The indices come out of
// one 64-bit load by shifts: faster here than a load per index (which inputs8 uses for the inputs;
// bench/RESULTS.md, "CER/CSER kernels").
inline __m256 values8(const uint8_t* g, const float* delta) {
  uint64_t q;
  __builtin_memcpy(&q, g, 8);
  __m128 a = _mm_load_ss(delta + (q & 0xFF)), b = _mm_load_ss(delta + ((q >> 32) & 0xFF));
  a = _mm_insert_ps(a, _mm_load_ss(delta + ((q >> 8) & 0xFF)), 0x10);
  b = _mm_insert_ps(b, _mm_load_ss(delta + ((q >> 40) & 0xFF)), 0x10);
  a = _mm_insert_ps(a, _mm_load_ss(delta + ((q >> 16) & 0xFF)), 0x20);
  b = _mm_insert_ps(b, _mm_load_ss(delta + ((q >> 48) & 0xFF)), 0x20);
  a = _mm_insert_ps(a, _mm_load_ss(delta + ((q >> 24) & 0xFF)), 0x30);
  b = _mm_insert_ps(b, _mm_load_ss(delta + (q >> 56)), 0x30);
  return _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1);
}

// kWide: more than 16 values (up to 256): the groups' values by scalar loads instead of the register table.
// kGather: the inputs by a hardware gather instead of scalar loads.
template <bool kWide, bool kGather>
void starts_matvec_t(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1, RowsMatvec fallback) {
  constexpr uint32_t L = 8;  // lanes (16 lanes with AVX-512 permutes measured no faster)
  alignas(64) float dtab[16] = {};  // Ω[k] - Ω[0], zero-padded to 16
  for (uint32_t k = 0; k < m.nvalues && k < 16; ++k) dtab[k] = m.delta[k];  // (kWide: unused)
  const __m256 tlo = _mm256_load_ps(dtab), thi = _mm256_load_ps(dtab + 8);
  alignas(64) float p[kStartsBlock + 2 * L];
  const uint16_t* const col = m.col16;
  const uint8_t* const bits = m.starts;
  const uint8_t* const sv = m.start_values;
  const uint32_t total = m.row_start[m.rows], nstarts = m.num_starts, safe_end = m.starts_safe_end;
  for (uint32_t c = 0; c < m.cols; c += 16) {  // the whole input at once (see rows_matvec_t)
    __builtin_prefetch(x + c);
    __asm__ volatile("" ::"r"(c));  // GCC deletes loops that only prefetch
  }
  uint32_t r = r0;
  uint32_t next = starts_in(bits, 0, m.row_start[r0]);  // non-empty groups before the block
  while (r < r1) {
    const uint32_t ka = m.row_start[r];
    uint32_t re = r;
    while (re < r1 && m.row_start[re + 1] - ka <= kStartsBlock) ++re;
    if (re == r) {  // row r alone holds more than a block
      const uint32_t k1 = m.row_start[r + 1];
      fallback(m, x, y, r, r + 1);
      next += starts_in(bits, ka, k1);
      ++r;
      continue;
    }
    const uint32_t kb = m.row_start[re];
    // Chunks are the aligned 8-entry runs (one byte of start bits each) from the one holding ka; lanes
    // before ka (the previous rows' entries) start no groups here and, like lanes past kb, are not summed.
    const uint32_t e0 = ka & ~(L - 1);
    int32_t last = int32_t(next) - 1;  // the group of the entry before the chunk
    // One chunk of 8 entries from e; `keep` masks its start bits. kTail: a chunk that may begin before ka or
    // end past the block, past the matrix's last entry, or whose 8 groups run past the last group; chunks
    // that start before m.starts_safe_end and end inside the block need none of these checks.
    auto chunk = [&](uint32_t e, uint32_t keep, auto tail) {
      constexpr bool kTail = decltype(tail)::value;
      uint32_t b = bits[e >> 3] & keep;
      if (kTail && kb - e < L) b &= (1u << (kb - e)) - 1u;
      const int32_t first = last + int32_t(b & 1u);  // the group of lane 0
      last += __builtin_popcount(b);
      alignas(16) uint16_t cc[L] = {};
      const uint16_t* c = col + e;
      if (kTail && uint64_t(e) + L > total) {  // the matrix's last entries
        for (uint32_t i = 0; e + i < total; ++i) cc[i] = col[e + i];
        c = cc;
      }
      alignas(16) uint8_t gg[16] = {};
      const uint8_t* g = sv + first;
      if (kTail && uint64_t(uint32_t(first)) + L > nstarts) {  // the matrix's last groups
        for (uint32_t i = 0; uint32_t(first) + i < nstarts; ++i) gg[i] = sv[uint32_t(first) + i];
        g = gg;
      }
      __m256 xs;
      if constexpr (kGather) {
        xs = _mm256_i32gather_ps(x, _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c))), 4);
      } else {
        xs = inputs8(c, x);
      }
      __m256 gv;
      if constexpr (kWide) {
        gv = values8(g, m.delta);
      } else {
        gv = table16_values8(g, tlo, thi);
      }
      const __m256i off = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(kPrefix.off[b])));
      _mm256_store_ps(p + (e - e0), _mm256_mul_ps(xs, _mm256_permutevar8x32_ps(gv, off)));
    };
    uint32_t e = e0;
    if (e < ka) {  // the chunk holding ka, from its aligned start
      chunk(e, 0xFFu << (ka - e) & 0xFFu, Bool<true>{});
      e += L;
    }
    const uint64_t main_end = kb < uint64_t(safe_end) + L - 1 ? kb : uint64_t(safe_end) + L - 1;
    for (; uint64_t(e) + L <= main_end; e += L) chunk(e, 0xFFu, Bool<false>{});
    for (; e < kb; e += L) chunk(e, 0xFFu, Bool<true>{});
    next = uint32_t(last + 1);
    for (; r < re; ++r) {
      const uint32_t s = m.row_start[r] - e0, t = m.row_start[r + 1] - e0;
      y[r] = slice_sum(p + s, t - s);
    }
  }
}

template <bool kGather>
void starts_matvec(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1, RowsMatvec fallback) {
  if (m.nvalues > 16) {
    starts_matvec_t<true, kGather>(m, x, y, r0, r1, fallback);
  } else {
    starts_matvec_t<false, kGather>(m, x, y, r0, r1, fallback);
  }
}

}  // namespace
}  // namespace nnpress::sparse::detail
