// Internal: the SIMD kernel bodies, written once over a small vector-traits struct and instantiated in
// each ISA's translation unit (avx2/, avx512/, neon/), which is compiled with that ISA's flags.
//
// CONTRACT
//   Include only from an ISA translation unit, after kernels_internal.h and the intrinsics header, and
//   after defining the traits struct (below) in an anonymous namespace. Everything here is itself in an
//   anonymous namespace, so every function and every instantiation has internal linkage: code compiled
//   with -mavx512f can never be merged (COMDAT) into another TU or reached on a CPU without it. For the
//   same reason this header calls no standard-library template (no std::min, no <algorithm>).
//
//   Traits V (one per ISA):
//     using F = <float vector>; using M = <lane mask>; static constexpr uint32_t W = lanes;
//     static constexpr int kSums = interleaved partial sums the batched kernel keeps (register budget);
//     F zero(); F set1(float); F loadu(const float*); void storeu(float*, F); F add(F, F);
//     F fmadd(F a, F b, F c) = a * b + c; float reduce(F) = sum of the lanes;
//     M first(uint32_t n)  lanes [0, n), 0 <= n <= W;
//     F load_m(const float* p, M m)        lanes outside m are 0 and their memory is not read;
//     void store_m(float* p, M m, F v)     lanes outside m are not written;
//     void splat8(float* p, float d)       p[0..8) = d;
//     void gather8(const uint16_t* c, const float* x, float* p)   p[i] = x[c[i]] for i < 8 (reads c[0..8));
//                    scalar loads into a register, or a hardware gather (AVX-512 on CPUs where
//                    fast_gathers(), kernels.h).
//     using Narrow = <traits with W <= 8 (zero, add, fmadd, reduce, loadu, first, load_m)>: the batch-1 dot
//                    products of short rows use it (V itself when W <= 8).
//
//   Kernels (each computes output rows [r0, r1), leaving out the Ω[0] term; kernels_internal.h):
//     rows_matvec  batch 1. Whole rows are taken in blocks of up to kBlock entries; for a block,
//                  (1) every entry's value is written into a buffer by U unconditional broadcast stores of
//                  L floats per group (groups are contiguous, so a later group's stores overwrite the
//                  previous one's tail; U * L covers all but the rare longest groups, which take a loop
//                  behind a not-taken branch; L and U are chosen per matrix from its mean group length),
//                  (2) every entry's input x[col] is copied into a second buffer, eight at a time into a
//                  register (V::gather8: scalar loads inserted into a vector, one store; hardware gathers
//                  were slower on AMD Zen 5, faster on Intel with AVX512-FP16, where AVX-512 uses them), (3) each row
//                  is one vector dot product of the two buffers, its tail masked. Loops run over a block's groups and
//                  entries, not per row, so short rows and tiny groups cost no branch misses (bench/RESULTS.md). A row
//                  longer than kBlock is done in kBlock pieces. Very long groups (>= kLongGroup entries on average):
//                  per group, a scalar sum of its inputs and one multiply.
//     rows_matmat  batch > 1, in tiles of up to 4 vectors of batch columns: each group's input rows are
//                  summed (kSums interleaved sums), then scaled once; or, when groups are tiny (<= 12
//                  entries on average), one FMA per entry with the value broadcast from a buffer (rows in
//                  blocks whose group values are looked up once for all tiles, rows_matmat_flat).
//     cb_matmat    codebook, batch > 1: one broadcast weight per column and FMAs across the tile.
//     cb_matvec_generic  codebook, batch 1, for ISAs without an in-register table lookup here (NEON):
//                  decodes a 32-column block into a float buffer, then vector FMAs.
//   Results equal the scalar reference up to float summation order.
#pragma once

// No auto-vectorization in the ISA translation units: the compiler turns the scalar input copy and the
// value lookups into gathers, which were slower than scalar loads on the CPUs measured (bench/RESULTS.md).
// The explicit intrinsics are unaffected. (These files are not forced to -O2 either: the batch-1 kernel
// would gain, but the batched tiles' register arrays need -O3's complete unrolling.)
#if defined(__clang__)
#define NNPRESS_NO_VECTORIZE _Pragma("clang loop vectorize(disable) interleave(disable)")
#elif defined(__GNUC__)
#pragma GCC optimize("no-tree-vectorize")
#define NNPRESS_NO_VECTORIZE
#else
#define NNPRESS_NO_VECTORIZE
#endif

namespace nnpress::sparse::detail {
namespace {

// Value index of group g (row r): CER from the group's position in its row, CSER from the stored index.
struct CerValue {
  static constexpr bool kPerRow = true;
  const uint32_t* row_ptr;
  static CerValue of(const RowsView& m) { return {m.row_ptr}; }
  uint32_t operator()(uint32_t g, uint32_t r) const { return 1 + (g - row_ptr[r]); }
};
struct Gv8 {
  static constexpr bool kPerRow = false;
  const uint8_t* gv;
  static Gv8 of(const RowsView& m) { return {m.gv8}; }
  uint32_t operator()(uint32_t g, uint32_t) const { return gv[g]; }
};
struct Gv16 {
  static constexpr bool kPerRow = false;
  const uint16_t* gv;
  static Gv16 of(const RowsView& m) { return {m.gv16}; }
  uint32_t operator()(uint32_t g, uint32_t) const { return gv[g]; }
};
// Any of the three, told apart per group by predictable branches: for the batched kernel of longer groups
// (rows_matmat_tile), whose work per group (its entries times a tile of batch columns) dwarfs them, so that
// one copy of it serves every layout.
struct AnyValue {
  const uint8_t* gv8;
  const uint16_t* gv16;
  const uint32_t* row_ptr;
  uint32_t operator()(uint32_t g, uint32_t r) const {
    return gv8 ? gv8[g] : gv16 ? uint32_t(gv16[g]) : 1 + (g - row_ptr[r]);
  }
};

// Calls f(col, value_of) with the matrix's column-index type and value-index functor.
template <class F>
void with_layout(const RowsView& m, F&& f) {
  auto with_col = [&](auto value_of) {
    if (m.col16) {
      f(m.col16, value_of);
    } else {
      f(m.col32, value_of);
    }
  };
  if (m.gv8) {
    with_col(Gv8{m.gv8});
  } else if (m.gv16) {
    with_col(Gv16{m.gv16});
  } else {
    with_col(CerValue{m.row_ptr});
  }
}

// ---- batch 1 --------------------------------------------------------------------------------------

constexpr uint32_t kBlock = 2048;     // entries per block (two 8 KiB buffers stay in L1)
constexpr uint32_t kBlockPad = 160;   // buffer slack: value stores may run up to U * L <= 8 * 16 floats past an end

// vals[s, e) = d with U stores of L floats at s, s + L, ..., unconditional (no branch on the group's
// length), then a loop for the rest of a longer group behind a rarely taken branch. The stores may write
// up to U * L floats past s, inside the buffer's slack. An empty group's stores are overwritten by the
// next group, which starts at the same entry. Narrow stores (L = 8) are cheaper when groups are tiny,
// full vectors (L = W) when they are long; U is picked so that U * L covers nearly every group
// (rows_matvec): U stores cost less than the branch misses of a loop over a varying length.
template <class V, uint32_t L, uint32_t U>
inline void fill(float* vals, uint32_t s, uint32_t e, float d) {
  if constexpr (L == 8) {
    for (uint32_t u = 0; u < U; ++u) V::splat8(vals + s + 8 * u, d);
    if (__builtin_expect(e > s + 8 * U, 0)) {
      for (uint32_t t = s + 8 * U; t < e; t += 8) V::splat8(vals + t, d);
    }
  } else {
    const typename V::F dv = V::set1(d);
    for (uint32_t u = 0; u < U; ++u) V::storeu(vals + s + V::W * u, dv);
    if (__builtin_expect(e > s + V::W * U, 0)) {
      for (uint32_t t = s + V::W * U; t < e; t += V::W) V::storeu(vals + t, dv);
    }
  }
}

// Values of the groups of rows [ra, rb), entries relative to entry k0 (the rows' first entry): one loop
// over all groups of the rows (no per-row loop exits). CER: group j of a row holds Ω index 1 + j, so each
// row first copies its group values into gvals: kCerCopy values from ctab (delta[1 ..], zero-padded) by
// unconditional vector copies (a row's copy may run into the next row's slots, which that row then
// overwrites), the rest of a longer row by masked loads from delta. gvals holds the rows' groups +
// kCerCopy floats. Called through a pointer once per block (rows_matvec_t), as is fill_piece: one copy of
// the block loop serves every (L, U) and value layout.
constexpr uint32_t kCerCopy = 16;
template <class V, uint32_t L, uint32_t U, class Value>
void fill_rows(const RowsView& m, uint32_t ra, uint32_t rb, uint32_t k0, float* vals, float* gvals, const float* ctab) {
  // The arrays in locals: the vector stores (may-alias intrinsics) would otherwise reload them from m.
  const Value value_of = Value::of(m);
  const uint32_t* const row_ptr = m.row_ptr;
  const uint32_t* const group_ptr = m.group_ptr;
  const float* const delta = m.delta;
  const uint32_t g0 = row_ptr[ra], g1 = row_ptr[rb];
  if constexpr (Value::kPerRow) {
    NNPRESS_NO_VECTORIZE
    for (uint32_t r = ra; r < rb; ++r) {
      const uint32_t a = row_ptr[r] - g0, n = row_ptr[r + 1] - row_ptr[r];
      for (uint32_t j = 0; j < kCerCopy; j += V::W) V::storeu(gvals + a + j, V::loadu(ctab + j));
      if (__builtin_expect(n > kCerCopy, 0)) {
        for (uint32_t j = kCerCopy; j < n; j += V::W) {
          V::storeu(gvals + a + j, V::load_m(delta + 1 + j, V::first(n - j < V::W ? n - j : V::W)));
        }
      }
    }
  } else {
    (void)gvals, (void)ctab;
  }
  uint32_t s = group_ptr[g0] - k0;
  NNPRESS_NO_VECTORIZE
  for (uint32_t g = g0; g < g1; ++g) {
    const uint32_t e = group_ptr[g + 1] - k0;
    if constexpr (Value::kPerRow) {
      fill<V, L, U>(vals, s, e, gvals[g - g0]);
    } else {
      fill<V, L, U>(vals, s, e, delta[value_of(g, 0)]);
    }
    s = e;
  }
}

// Values of row r's entries [p, p + n) (a piece of a long row), relative to p: groups [g, ...), the
// first one starting at or before p, the last one clipped at n.
template <class V, uint32_t L, uint32_t U, class Value>
void fill_piece(const RowsView& m, uint32_t r, uint32_t g, uint32_t p, uint32_t n, float* vals) {
  const Value value_of = Value::of(m);  // and the arrays in locals, as in fill_rows
  const uint32_t* const group_ptr = m.group_ptr;
  const float* const delta = m.delta;
  const uint32_t g1 = m.row_ptr[r + 1];
  uint32_t s = 0;
  NNPRESS_NO_VECTORIZE
  for (; g < g1 && group_ptr[g] < p + n; ++g) {
    const uint32_t b = group_ptr[g + 1] - p, e = b < n ? b : n;
    fill<V, L, U>(vals, s, e, delta[value_of(g, r)]);
    s = e;
  }
}

// Copies x[col[i]] for i < n into xg. 16-bit indices: eight at a time through a register (V::gather8: one
// vector store instead of eight scalar ones: the stores bound this loop), 32 (one cache line of indices)
// per iteration with one software prefetch of the indices kBlock entries ahead (the next block's; clamped
// to the array's last index, col_last). 32-bit indices: scalar copies (their prefetch is prefetch_block's).
// Not inlined: GCC 12 compiles the batch-1 kernel into faster code so (bench/RESULTS.md).
template <class V, class Col>
__attribute__((noinline)) void gather_inputs(const Col* col, uint32_t n, const float* x, float* xg,
                                             const Col* col_last) {
  uint32_t i = 0;
  if constexpr (sizeof(Col) == 2) {
    // Pointer increments: with indexed addressing GCC kept 32-bit index arithmetic, which was slower.
    const Col* c = col;
    float* o = xg;
    const Col* const ce32 = col + (n & ~31u);
    NNPRESS_NO_VECTORIZE
    for (; c < ce32; c += 32, o += 32) {
      __builtin_prefetch(col_last - c > kBlock ? c + kBlock : col_last);
      V::gather8(c, x, o);
      V::gather8(c + 8, x, o + 8);
      V::gather8(c + 16, x, o + 16);
      V::gather8(c + 24, x, o + 24);
    }
    const Col* const ce8 = col + (n & ~7u);
    NNPRESS_NO_VECTORIZE
    for (; c < ce8; c += 8, o += 8) V::gather8(c, x, o);
    i = n & ~7u;
  } else {
    NNPRESS_NO_VECTORIZE
    for (; i + 4 <= n; i += 4) {
      xg[i] = x[col[i]];
      xg[i + 1] = x[col[i + 1]];
      xg[i + 2] = x[col[i + 2]];
      xg[i + 3] = x[col[i + 3]];
    }
  }
  NNPRESS_NO_VECTORIZE
  for (; i < n; ++i) xg[i] = x[col[i]];
}

// Software prefetch of the next block's group pointers and value indices (and, for 32-bit indices, its
// column indices; 16-bit ones are prefetched during the copy, gather_inputs), issued at the start of a
// block: while one block is computed, the next is on its way (this pays once the matrix is no longer
// in cache, the case of a layer of a model run once per input; bench/RESULTS.md). k: its first
// entry, g: its first group, ng: about how many groups it has. Addresses stay inside the arrays.
template <class Col>
inline void prefetch_block(const RowsView& m, const Col* col, uint32_t k, uint32_t g, uint32_t ng) {
#if defined(__GNUC__)
  // GCC deletes loops that only prefetch; the empty volatile asm keeps them.
#define NNPRESS_PREFETCH(p)        \
  do {                             \
    __builtin_prefetch(p);         \
    __asm__ volatile("" ::"r"(p)); \
  } while (0)
  const uint32_t groups = m.row_ptr[m.rows], total = m.group_ptr[groups];
  if constexpr (sizeof(Col) != 2) {
    const uint32_t ke = total - k > kBlock ? k + kBlock : total;
    for (uint32_t i = k; i < ke; i += 64 / sizeof(Col)) NNPRESS_PREFETCH(col + i);
  } else {
    (void)col, (void)k, (void)total;
  }
  const uint32_t ge = groups - g > ng ? g + ng : groups;
  for (uint32_t i = g; i < ge; i += 16) NNPRESS_PREFETCH(m.group_ptr + i);
  if (m.gv8) {
    for (uint32_t i = g; i < ge; i += 64) NNPRESS_PREFETCH(m.gv8 + i);
  } else if (m.gv16) {
    for (uint32_t i = g; i < ge; i += 32) NNPRESS_PREFETCH(m.gv16 + i);
  }
#undef NNPRESS_PREFETCH
#endif
}

// sum(v[i] * xs[i]) for i < n; masked lanes are never loaded.
template <class V>
inline float dot(const float* v, const float* xs, uint32_t n) {
  constexpr uint32_t W = V::W;
  typename V::F a0 = V::zero(), a1 = V::zero();
  uint32_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    a0 = V::fmadd(V::loadu(v + j), V::loadu(xs + j), a0);
    a1 = V::fmadd(V::loadu(v + j + W), V::loadu(xs + j + W), a1);
  }
  const uint32_t rest = n - j;  // 0 .. 2W - 1
  const typename V::M m0 = V::first(rest < W ? rest : W), m1 = V::first(rest > W ? rest - W : 0);
  a0 = V::fmadd(V::load_m(v + j, m0), V::load_m(xs + j, m0), a0);
  a1 = V::fmadd(V::load_m(v + j + W, m1), V::load_m(xs + j + W, m1), a1);
  return V::reduce(V::add(a0, a1));
}

// The per-matrix choices of the batch-1 kernel, made once per call (rows_matvec) and taken once per block:
// the value fill for the group lengths and value layout (fill_rows / fill_piece at one (L, U, Value)),
// the input copy (gather_inputs: V::gather8, or a variant's), and whether rows' dot products use V::Narrow
// (chosen with the narrow stores: short groups make short rows).
template <class Col>
struct MatvecPlan {
  void (*fill_rows)(const RowsView& m, uint32_t ra, uint32_t rb, uint32_t k0, float* vals, float* gvals,
                    const float* ctab);
  void (*fill_piece)(const RowsView& m, uint32_t r, uint32_t g, uint32_t p, uint32_t n, float* vals);
  void (*gather)(const Col* col, uint32_t n, const float* x, float* xg, const Col* col_last);
  bool narrow;
  bool per_row;  // CER: group values from the group's position in its row (fill_rows' gvals)
};

template <class V>
inline float row_dot(bool narrow, const float* v, const float* xs, uint32_t n) {
  if constexpr (V::W > 8) {
    if (narrow) return dot<typename V::Narrow>(v, xs, n);
  }
  return dot<V>(v, xs, n);
}

// Not inlined or cloned: one copy per (ISA, column type), whatever the plan.
#if defined(__GNUC__) && !defined(__clang__)
#define NNPRESS_ONE_COPY __attribute__((noinline, noclone))
#else
#define NNPRESS_ONE_COPY __attribute__((noinline))
#endif

template <class V, class Col>
NNPRESS_ONE_COPY void rows_matvec_t(const RowsView& m, const Col* col, const MatvecPlan<Col>& plan, const float* x,
                                    float* y, uint32_t r0, uint32_t r1) {
  alignas(64) float vals[kBlock + kBlockPad], xg[kBlock + kBlockPad];
  alignas(64) float gvals[kBlock + kCerCopy];  // CER: group values of a block (fill_rows)
  alignas(64) float ctab[kCerCopy] = {};       // CER: delta[1 .. kCerCopy], zero-padded
  const bool per_row = plan.per_row, narrow = plan.narrow;
  if (per_row) {
    for (uint32_t j = 0; j < kCerCopy && j + 1 < m.nvalues; ++j) ctab[j] = m.delta[j + 1];
  }
  const uint32_t total = m.group_ptr[m.row_ptr[m.rows]];
  const Col* const col_last = col + (total ? total - 1 : 0);  // only prefetched
  // The whole input at once (cols <= 65536 with 16-bit indices: <= 4096 lines): a cold x otherwise costs
  // a miss per line, met in random order by the copy.
  if constexpr (sizeof(Col) == 2) {
    for (uint32_t c = 0; c < m.cols; c += 16) {
      __builtin_prefetch(x + c);
      __asm__ volatile("" ::"r"(c));  // GCC deletes loops that only prefetch
    }
  }
  uint32_t r = r0;
  while (r < r1) {
    const uint32_t ka = m.group_ptr[m.row_ptr[r]], ga = m.row_ptr[r];
    uint32_t re = r;
    // A block: at most kBlock entries, and (CER, whose padding groups are empty) at most kBlock groups.
    while (re < r1 && m.group_ptr[m.row_ptr[re + 1]] - ka <= kBlock && (!per_row || m.row_ptr[re + 1] - ga <= kBlock)) {
      ++re;
    }
    if (re > r) {  // rows [r, re) fit in one block
      const uint32_t n = m.group_ptr[m.row_ptr[re]] - ka;
      prefetch_block(m, col, ka + n, m.row_ptr[re], m.row_ptr[re] - m.row_ptr[r]);
      plan.fill_rows(m, r, re, ka, vals, gvals, ctab);
      plan.gather(col + ka, n, x, xg, col_last);
      for (; r < re; ++r) {
        const uint32_t b = m.group_ptr[m.row_ptr[r]] - ka, e = m.group_ptr[m.row_ptr[r + 1]] - ka;
        y[r] = row_dot<V>(narrow, vals + b, xg + b, e - b);
      }
      continue;
    }
    // Row r alone holds more than kBlock entries (or CER groups): pieces of kBlock entries.
    const uint32_t k1 = m.group_ptr[m.row_ptr[r + 1]];
    uint32_t g = m.row_ptr[r];
    float acc = 0.0f;
    for (uint32_t p = ka; p < k1; p += kBlock) {
      const uint32_t n = k1 - p < kBlock ? k1 - p : kBlock;
      prefetch_block(m, col, p + n, g, 64);
      while (m.group_ptr[g + 1] <= p) ++g;  // first group overlapping the piece
      plan.fill_piece(m, r, g, p, n, vals);
      plan.gather(col + p, n, x, xg, col_last);
      acc += dot<V>(vals, xg, n);
    }
    y[r] = acc;
    ++r;
  }
}

// Long groups (>= kLongGroup entries on average): each group's inputs are summed with scalar loads into
// four accumulators and multiplied once; no buffers, and one loop exit per group is cheap next to its
// length. kLongGroup lies between a mean length where the block kernel with U stores was faster and
// one where this one was (bench/RESULTS.md, "CER/CSER kernels"). (kLongGroup: kernels_internal.h.)

template <class Col>
inline float group_sum(const Col* col, uint32_t n, const float* x) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  uint32_t i = 0;
  NNPRESS_NO_VECTORIZE
  for (; i + 4 <= n; i += 4) {
    s0 += x[col[i]];
    s1 += x[col[i + 1]];
    s2 += x[col[i + 2]];
    s3 += x[col[i + 3]];
  }
  NNPRESS_NO_VECTORIZE
  for (; i < n; ++i) s0 += x[col[i]];
  return (s0 + s1) + (s2 + s3);
}

template <class Col, class Value>
void rows_matvec_sums(const RowsView& m, const Col* col, Value value_of, const float* x, float* y, uint32_t r0,
                      uint32_t r1) {
  for (uint32_t r = r0; r < r1; ++r) {
    float acc = 0.0f;
    for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
      const uint32_t k0 = m.group_ptr[g], k1 = m.group_ptr[g + 1];
      acc += m.delta[value_of(g, r)] * group_sum(col + k0, k1 - k0, x);
    }
    y[r] = acc;
  }
}

// ---- batch > 1 ------------------------------------------------------------------------------------

constexpr uint32_t kSegment = 1024;  // entries buffered per flat run (batched, tiny groups)

// A tile of NV vectors of batch columns; with kPartial the last vector is masked by `last`.
template <class V, int NV, bool kPartial>
struct Tile {
  typename V::M last;
  inline typename V::F load(const float* p, int j) const {
    return (kPartial && j == NV - 1) ? V::load_m(p, last) : V::loadu(p);
  }
  inline void store(float* p, int j, typename V::F v) const {
    if (kPartial && j == NV - 1) {
      V::store_m(p, last, v);
    } else {
      V::storeu(p, v);
    }
  }
};

// Each group's input rows summed in registers (kSums interleaved sums), then scaled once.
template <class V, int NV, bool kPartial, class Col, class Value>
void rows_matmat_tile(const RowsView& m, const Col* col, Value value_of, const float* X, size_t batch, float* Y,
                      uint32_t r0, uint32_t r1, size_t b0, const Tile<V, NV, kPartial>& t) {
  constexpr uint32_t W = V::W;
  constexpr int S = V::kSums;
  for (uint32_t r = r0; r < r1; ++r) {
    typename V::F acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = V::zero();
    for (uint32_t g = m.row_ptr[r]; g < m.row_ptr[r + 1]; ++g) {
      uint32_t k = m.group_ptr[g];
      const uint32_t k1 = m.group_ptr[g + 1];
      typename V::F s[S][NV];
      for (int i = 0; i < S; ++i) {
        for (int j = 0; j < NV; ++j) s[i][j] = V::zero();
      }
      for (; k + S <= k1; k += S) {
        for (int i = 0; i < S; ++i) {
          const float* a = X + size_t(col[k + i]) * batch + b0;
          for (int j = 0; j < NV; ++j) s[i][j] = V::add(s[i][j], t.load(a + W * j, j));
        }
      }
      for (; k < k1; ++k) {
        const float* a = X + size_t(col[k]) * batch + b0;
        for (int j = 0; j < NV; ++j) s[0][j] = V::add(s[0][j], t.load(a + W * j, j));
      }
      for (int i = 1; i < S; ++i) {
        for (int j = 0; j < NV; ++j) s[0][j] = V::add(s[0][j], s[i][j]);
      }
      const typename V::F d = V::set1(m.delta[value_of(g, r)]);
      for (int j = 0; j < NV; ++j) acc[j] = V::fmadd(s[0][j], d, acc[j]);
    }
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) t.store(out + W * j, j, acc[j]);
  }
}

// The values (Ω deltas) of the groups g in [g0, g1) of rows [ra, rb), into gv[g - g0]: for the batched
// kernel of tiny groups (rows_matmat_flat), once per block of rows and outside its tiles, so that one copy
// of its tile kernels serves every value layout and reads each group's value with one load.
using GroupValues = void (*)(const RowsView& m, uint32_t ra, uint32_t rb, uint32_t g0, uint32_t g1, float* gv);
template <class Value>
void group_values(const RowsView& m, uint32_t ra, uint32_t rb, uint32_t g0, uint32_t g1, float* gv) {
  const Value value_of = Value::of(m);
  const float* const delta = m.delta;
  if constexpr (Value::kPerRow) {
    for (uint32_t r = ra; r < rb; ++r) {
      const uint32_t a = m.row_ptr[r] > g0 ? m.row_ptr[r] : g0, b = m.row_ptr[r + 1] < g1 ? m.row_ptr[r + 1] : g1;
      NNPRESS_NO_VECTORIZE
      for (uint32_t g = a; g < b; ++g) gv[g - g0] = delta[value_of(g, r)];
    }
  } else {  // CSER: one loop over the groups, whatever their rows
    (void)ra, (void)rb;
    NNPRESS_NO_VECTORIZE
    for (uint32_t g = g0; g < g1; ++g) gv[g - g0] = delta[value_of(g, 0)];
  }
}

constexpr uint32_t kFlatGroups = 2048;  // group values buffered per block of rows (8 KiB)

// gv[0 .. g1 - g0) holds the values of groups [g0, g1): a block's, or a chunk of a long row's (a row with more
// than kFlatGroups groups, alone in its block), which the tile kernel refills by `fill` as it goes.
struct FlatValues {
  float* gv;
  GroupValues fill;
  uint32_t g0, g1;
};

// Tiny groups: per-group sums buy little and their varying lengths cost branch misses, so every entry
// is one FMA of its value (broadcast from a per-entry buffer) with its input row, over runs of whole
// groups.
template <class V, int NV, bool kPartial, class Col>
void rows_matmat_tile_flat(const RowsView& m, const Col* col, FlatValues& fv, const float* X, size_t batch, float* Y,
                           uint32_t r0, uint32_t r1, size_t b0, const Tile<V, NV, kPartial>& t) {
  constexpr uint32_t W = V::W;
  alignas(64) float vals[kSegment + kBlockPad];
  // The arrays and the value chunk in locals: the vector stores (may-alias intrinsics) would otherwise
  // reload them from m and fv.
  const uint32_t* const row_ptr = m.row_ptr;
  const uint32_t* const group_ptr = m.group_ptr;
  const float* const gv = fv.gv;
  uint32_t gv0 = fv.g0, gv1 = fv.g1;
  for (uint32_t r = r0; r < r1; ++r) {
    typename V::F acc0[NV], acc1[NV];
    for (int j = 0; j < NV; ++j) acc0[j] = acc1[j] = V::zero();
    uint32_t seg0 = group_ptr[row_ptr[r]], seg_len = 0;
    // Always inlined (the accumulators stay in registers): the chunk loop below made GCC 12 call it instead.
    auto flush = [&]() __attribute__((always_inline)) {
      uint32_t i = 0;
      for (; i + 2 <= seg_len; i += 2) {
        const float* a = X + size_t(col[seg0 + i]) * batch + b0;
        const float* b = X + size_t(col[seg0 + i + 1]) * batch + b0;
        const typename V::F va = V::set1(vals[i]), vb = V::set1(vals[i + 1]);
        for (int j = 0; j < NV; ++j) {
          acc0[j] = V::fmadd(va, t.load(a + W * j, j), acc0[j]);
          acc1[j] = V::fmadd(vb, t.load(b + W * j, j), acc1[j]);
        }
      }
      if (i < seg_len) {
        const float* a = X + size_t(col[seg0 + i]) * batch + b0;
        const typename V::F va = V::set1(vals[i]);
        for (int j = 0; j < NV; ++j) acc0[j] = V::fmadd(va, t.load(a + W * j, j), acc0[j]);
      }
    };
    const uint32_t ge = row_ptr[r + 1];
    for (uint32_t gc = row_ptr[r]; gc < ge;) {
      if (gc < gv0 || gc >= gv1) {  // a long row: the next chunk of its group values
        gv0 = gc, gv1 = ge - gc < kFlatGroups ? ge : gc + kFlatGroups;
        fv.g0 = gv0, fv.g1 = gv1;
        fv.fill(m, r, r + 1, gv0, gv1, fv.gv);
      }
      const uint32_t gce = ge < gv1 ? ge : gv1;
      for (uint32_t g = gc; g < gce; ++g) {
        const uint32_t k0 = group_ptr[g], n = group_ptr[g + 1] - k0;
        if (n == 0) continue;  // CER padding group
        if (seg_len + n > kSegment) {
          flush();
          seg0 = k0, seg_len = 0;
        }
        const float d = gv[g - gv0];
        if (n > kSegment) {  // a huge group: its own runs, kSegment entries each
          for (uint32_t done = 0; done < n;) {
            const uint32_t piece = n - done < kSegment ? n - done : kSegment;
            fill<V, V::W, 1>(vals, 0, piece, d);
            seg0 = k0 + done, seg_len = piece;
            flush();
            done += piece;
          }
          seg0 = k0 + n, seg_len = 0;
          continue;
        }
        fill<V, V::W, 1>(vals, seg_len, seg_len + n, d);
        seg_len += n;
      }
      gc = gce;
    }
    flush();
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) t.store(out + W * j, j, V::add(acc0[j], acc1[j]));
  }
}

// Calls f(b0, tile) for full tiles of 4 vectors, then one tile of 1..4 vectors for the rest.
template <class V, class F>
void for_tiles(size_t batch, F&& f) {
  constexpr uint32_t W = V::W;
  size_t b0 = 0;
  for (; b0 + 4 * W <= batch; b0 += 4 * W) f(b0, Tile<V, 4, false>{V::first(W)});
  const size_t rest = batch - b0;
  if (rest == 0) return;
  const uint32_t nv = uint32_t((rest + W - 1) / W), lastn = uint32_t(rest - W * (nv - 1));
  const typename V::M last = V::first(lastn);
  if (lastn == W) {
    switch (nv) {
      case 1: f(b0, Tile<V, 1, false>{last}); break;
      case 2: f(b0, Tile<V, 2, false>{last}); break;
      default: f(b0, Tile<V, 3, false>{last}); break;
    }
  } else {
    switch (nv) {
      case 1: f(b0, Tile<V, 1, true>{last}); break;
      case 2: f(b0, Tile<V, 2, true>{last}); break;
      case 3: f(b0, Tile<V, 3, true>{last}); break;
      default: f(b0, Tile<V, 4, true>{last}); break;
    }
  }
}

// Tiny groups, batch > 1: blocks of whole rows whose groups fit in kFlatGroups values (or one longer row);
// per block, the group values once (fill: the layout's group_values), then every tile of batch columns.
template <class V, class Col>
NNPRESS_ONE_COPY void rows_matmat_flat(const RowsView& m, const Col* col, GroupValues fill, const float* X,
                                       size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  alignas(64) float gv[kFlatGroups];
  uint32_t r = r0;
  while (r < r1) {
    const uint32_t g0 = m.row_ptr[r];
    uint32_t re = r + 1;
    while (re < r1 && m.row_ptr[re + 1] - g0 <= kFlatGroups) ++re;
    FlatValues fv{gv, fill, g0, m.row_ptr[re] - g0 <= kFlatGroups ? m.row_ptr[re] : g0 + kFlatGroups};
    fill(m, r, re, fv.g0, fv.g1, gv);
    for_tiles<V>(batch,
                 [&](size_t b0, const auto& tile) { rows_matmat_tile_flat(m, col, fv, X, batch, Y, r, re, b0, tile); });
    r = re;
  }
}

// ---- entry points ---------------------------------------------------------------------------------

template <class V, uint32_t L, uint32_t U, class Value, class Col>
inline void set_fill(MatvecPlan<Col>* plan) {
  plan->fill_rows = fill_rows<V, L, U, Value>;
  plan->fill_piece = fill_piece<V, L, U, Value>;
}

template <class V, class G, class Col, class Value>
void rows_matvec_layout(const RowsView& m, const Col* col, Value value_of, bool narrow, uint32_t U, bool long_groups,
                        const float* x, float* y, uint32_t r0, uint32_t r1) {
  if (long_groups) {
    rows_matvec_sums(m, col, value_of, x, y, r0, r1);
    return;
  }
  MatvecPlan<Col> plan{};
  plan.gather = gather_inputs<G, Col>;
  plan.narrow = narrow;
  plan.per_row = Value::kPerRow;
  if (narrow) {
    set_fill<V, 8, 1, Value>(&plan);
  } else if (U == 1) {
    set_fill<V, V::W, 1, Value>(&plan);
  } else if (U == 2) {
    set_fill<V, V::W, 2, Value>(&plan);
  } else if (U == 3) {
    set_fill<V, V::W, 3, Value>(&plan);
  } else if (U == 4) {
    set_fill<V, V::W, 4, Value>(&plan);
  } else {
    set_fill<V, V::W, 8, Value>(&plan);
  }
  rows_matvec_t<V>(m, col, plan, x, y, r0, r1);
}

// Value stores per group for batch 1 (fill): narrow (L = 8) when groups average <= 8 entries on a wider ISA,
// else full vectors; U = the stores that cover the mean group length plus two standard deviations of a
// Poisson count (a loop over each group's length would cost a branch miss per group; bench/RESULTS.md).
// G: the traits whose gather8 copies the inputs (V, or a variant of V that differs only there).
template <class V, class G = V>
void rows_matvec(const RowsView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  const uint64_t groups = m.row_ptr[m.rows], entries = m.group_ptr[groups];
  const double mean = groups ? double(entries) / double(groups) : 0.0;
  const bool narrow = V::W > 8 && mean <= 8.0;  // then one 8-float store (faster than two for such groups)
  const uint32_t L = V::W;
  const double cover = mean + 2.0 * __builtin_sqrt(mean);
  const uint32_t U = cover <= L ? 1 : cover <= 2 * L ? 2 : cover <= 3 * L ? 3 : cover <= 4 * L ? 4 : 8;
  const bool long_groups = mean >= kLongGroup;
  with_layout(m, [&](auto col, auto value_of) {
    rows_matvec_layout<V, G>(m, col, value_of, narrow, U, long_groups, x, y, r0, r1);
  });
}

template <class V>
void rows_matmat(const RowsView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  const uint64_t groups = m.row_ptr[m.rows], entries = m.group_ptr[groups];
  const bool tiny = groups > 0 && entries <= 12 * groups;
  if (tiny) {
    with_layout(m, [&](auto col, auto value_of) {
      rows_matmat_flat<V>(m, col, group_values<decltype(value_of)>, X, batch, Y, r0, r1);
    });
    return;
  }
  const AnyValue value_of{m.gv8, m.gv16, m.row_ptr};
  auto with_col = [&](auto col) {
    for_tiles<V>(
        batch, [&](size_t b0, const auto& tile) { rows_matmat_tile(m, col, value_of, X, batch, Y, r0, r1, b0, tile); });
  };
  if (m.col16) {
    with_col(m.col16);
  } else {
    with_col(m.col32);
  }
}

template <class V, int NV, bool kPartial>
void cb_matmat_tile(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1, size_t b0,
                    const Tile<V, NV, kPartial>& t) {
  constexpr uint32_t W = V::W;
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    typename V::F acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = V::zero();
    for (uint32_t c = 0; c < m.cols; ++c) {
      const uint32_t jj = c % 32;
      const uint8_t byte = row[size_t(c / 32) * 16 + (jj & 15)];
      const typename V::F w = V::set1(m.lut[jj < 16 ? (byte & 15u) : (byte >> 4)]);
      const float* xr = X + size_t(c) * batch + b0;
      for (int j = 0; j < NV; ++j) acc[j] = V::fmadd(w, t.load(xr + W * j, j), acc[j]);
    }
    float* out = Y + size_t(r) * batch + b0;
    for (int j = 0; j < NV; ++j) t.store(out + W * j, j, acc[j]);
  }
}

template <class V>
void cb_matmat(const CodebookView& m, const float* X, size_t batch, float* Y, uint32_t r0, uint32_t r1) {
  for_tiles<V>(batch, [&](size_t b0, const auto& tile) { cb_matmat_tile(m, X, batch, Y, r0, r1, b0, tile); });
}

template <class V>
void cb_matvec_generic(const CodebookView& m, const float* x, float* y, uint32_t r0, uint32_t r1) {
  alignas(64) float w[32];
  for (uint32_t r = r0; r < r1; ++r) {
    const uint8_t* row = m.packed + size_t(r) * m.row_bytes;
    typename V::F a0 = V::zero(), a1 = V::zero();
    for (uint32_t c0 = 0; c0 < m.cols; c0 += 32) {
      const uint8_t* blk = row + size_t(c0 / 32) * 16;
      for (int j = 0; j < 16; ++j) {
        w[j] = m.lut[blk[j] & 15u];
        w[j + 16] = m.lut[blk[j] >> 4];
      }
      const uint32_t n = m.cols - c0 < 32 ? m.cols - c0 : 32;
      for (uint32_t j = 0; j < 32; j += 2 * V::W) {
        const uint32_t n0 = n > j ? (n - j < V::W ? n - j : V::W) : 0;
        const uint32_t n1 = n > j + V::W ? (n - j - V::W < V::W ? n - j - V::W : V::W) : 0;
        a0 = V::fmadd(V::loadu(w + j), V::load_m(x + c0 + j, V::first(n0)), a0);
        a1 = V::fmadd(V::loadu(w + j + V::W), V::load_m(x + c0 + j + V::W, V::first(n1)), a1);
      }
    }
    y[r] = V::reduce(V::add(a0, a1));
  }
}

}  // namespace
}  // namespace nnpress::sparse::detail
