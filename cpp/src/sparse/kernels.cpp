// Kernel dispatch: argument checks, ISA choice, threads over rows, the Ω[0] term (see kernels.h).
#include "nnpress/sparse/kernels.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "../common/parallel.h"
#include "kernels_internal.h"

namespace nnpress::sparse {
namespace detail {
#ifndef NNPRESS_HAVE_AVX2_TU
const KernelTable* avx2_kernels() { return nullptr; }
StartsMatvec avx2_starts_matvec() { return nullptr; }
StartsMatvec avx2_codes_matvec() { return nullptr; }
StartsMatvec avx2_entries_matvec() { return nullptr; }
#endif
#ifndef NNPRESS_HAVE_AVX512_TU
const KernelTable* avx512_kernels(bool) { return nullptr; }
StartsMatvec avx512_starts_matvec(bool) { return nullptr; }
StartsMatvec avx512_entries_matvec() { return nullptr; }
StartsMatvec avx512_codes_matvec() { return nullptr; }
#endif
#ifndef NNPRESS_HAVE_NEON_TU
const KernelTable* neon_kernels() { return nullptr; }
#endif
}  // namespace detail

// Intel cores with AVX512-FP16 (Sapphire Rapids and later): not affected by Gather Data Sampling, whose
// microcode mitigation makes gathers slow on the AVX-512 cores before them; on this class of CPU the
// plan kernel ran faster with gathered inputs, on AMD Zen 5 scalar loads were faster (bench/RESULTS.md,
// "CER/CSER kernels" and "Inference on compressed weights"). Queried once (cpuid is slow in virtual machines).
bool fast_gathers() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool fast = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d) || a < 7) return false;
    const bool intel = b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;  // "GenuineIntel"
    if (!intel) return false;
    __cpuid_count(7, 0, a, b, c, d);
    return ((d >> 23) & 1u) != 0;  // AVX512-FP16
  }();
  return fast;
#else
  return false;
#endif
}

namespace {

using detail::KernelTable;

// The ISA a product runs on and its kernel table: the caller's ISA, else `automatic` (the automatic
// choice for this matrix and batch), which an unknown NNPRESS_ISA makes an error instead of being
// ignored (cpu.h).
Status pick_table(const KernelOptions& opt, Isa automatic, Isa* chosen, const KernelTable** out) {
  if (!opt.isa) {
    Status e = isa_env_status();
    if (!e.ok()) return e;
  }
  const Isa isa = opt.isa ? *opt.isa : automatic;
  *chosen = isa;
  if (!isa_supported(isa))
    return invalid_argument(std::string("kernels: ISA '") + isa_name(isa) + "' is not available on this CPU/build");
  const KernelTable* t = nullptr;
  switch (isa) {
    case Isa::kAvx512: t = detail::avx512_kernels(fast_gathers()); break;
    case Isa::kAvx2: t = detail::avx2_kernels(); break;
    case Isa::kNeon: t = detail::neon_kernels(); break;
    default: t = detail::scalar_kernels(); break;
  }
  *out = t ? t : detail::scalar_kernels();
  return Status::Ok();
}

// threads == 0 (as many as pay): work below which one more thread does not pay, since waking a worker and
// waiting for it costs about as long as one thread takes for this many sparse entries (bench/RESULTS.md,
// "CER/CSER kernels"). `work` counts sparse entries x batch; a dense-codebook weight counts 1/12 (its time
// per weight against a sparse entry's at batch 1).
constexpr uint64_t kWorkPerThread = uint64_t(1) << 17;

template <class F>
void over_rows(uint32_t rows, unsigned threads, uint64_t work, F&& f) {
  nnpress::detail::parallel_rows(rows, threads, work, kWorkPerThread, std::forward<F>(f));
}

detail::RowsView view_of(const RowGroupMatrix& m) {
  detail::RowsView v{};
  v.rows = m.rows(), v.cols = m.cols(), v.delta = m.omega_delta().data();
  v.nvalues = uint32_t(m.omega_delta().size());
  v.col16 = m.wide() ? nullptr : m.col16().data();
  v.col32 = m.wide() ? m.col32().data() : nullptr;
  v.group_ptr = m.group_ptr().data(), v.row_ptr = m.row_ptr().data();
  if (m.format() == Format::kCSER) {
    if (m.group_value8().empty()) {
      v.gv16 = m.group_value16().data();
    } else {
      v.gv8 = m.group_value8().data();
    }
  }
  if (m.has_starts()) {
    v.starts = m.starts().data(), v.start_values = m.start_values(), v.num_starts = uint32_t(m.num_starts());
    v.row_start = m.row_starts().data();
    v.starts_safe_end = m.starts_safe_end();
    if (!m.entry_values().empty()) v.entry_values = m.entry_values().data();
  }
  // Empty vectors may return null data(); kernels never dereference them then (no entries/groups).
  static const uint16_t kNoCol16 = 0;
  if (!v.col16 && !v.col32) v.col16 = &kNoCol16;
  if (m.format() == Format::kCSER && !v.gv8 && !v.gv16) {
    static const uint8_t kNoValue = 0;
    v.gv8 = &kNoValue;
  }
  return v;
}

detail::CodebookView view_of(const CodebookMatrix& m) {
  return detail::CodebookView{m.rows(), m.cols(), CodebookMatrix::row_bytes(m.cols()), m.lut(), m.packed().data()};
}

Status check_buffers(const char* what, const void* x, size_t x_len, size_t x_need, const void* y, size_t y_len,
                     size_t y_need) {
  if (x_len != x_need)
    return invalid_argument(std::string(what) + ": input has " + std::to_string(x_len) + " floats, expected " +
                            std::to_string(x_need));
  if (y_len != y_need)
    return invalid_argument(std::string(what) + ": output has " + std::to_string(y_len) + " floats, expected " +
                            std::to_string(y_need));
  if ((x_need && !x) || (y_need && !y)) return invalid_argument(std::string(what) + ": null buffer");
  return Status::Ok();
}

}  // namespace

Status matvec(const RowGroupMatrix& m, const float* x, size_t x_len, float* y, size_t y_len, const KernelOptions& opt) {
  Status s = check_buffers("matvec", x, x_len, m.cols(), y, y_len, m.rows());
  if (!s.ok()) return s;
  const KernelTable* t;
  Isa isa;
  s = pick_table(opt, auto_isa(m, 1), &isa, &t);
  if (!s.ok()) return s;
  const detail::RowsView v = view_of(m);
  // The kernel plan's kernel (short groups; x86), else the ISA's row-group kernel.
  detail::StartsMatvec sk = nullptr;
  if (v.starts && isa == Isa::kAvx512) sk = detail::avx512_starts_matvec(fast_gathers());
  if (v.starts && isa == Isa::kAvx2) sk = detail::avx2_starts_matvec();
  // The x86 batch-1 kernels that take a matrix of at most 16 values by its entries' value indices: with the
  // plan's entry values, the row-wise kernel; without a plan and groups of kCodesMinMean up to kLongGroup
  // entries on average, the Ω-index kernel (each faster than the kernel it replaces there; bench/RESULTS.md,
  // "Inference on compressed weights"). Where AVX-512's plan kernel gathers its inputs (fast_gathers) it
  // keeps that kernel.
  const bool avx2 = isa == Isa::kAvx2, avx512 = isa == Isa::kAvx512;
  const detail::StartsMatvec entries = avx2                        ? detail::avx2_entries_matvec()
                                       : avx512 && !fast_gathers() ? detail::avx512_entries_matvec()
                                                                   : nullptr;
  const detail::StartsMatvec codes = avx2     ? detail::avx2_codes_matvec()
                                     : avx512 ? detail::avx512_codes_matvec()
                                              : nullptr;
  const uint64_t groups = m.num_groups();
  if (v.entry_values && entries) sk = entries;
  if (!v.starts && codes && v.col16 && v.nvalues <= 16 && groups > 0 &&
      m.nnz() >= uint64_t(detail::kCodesMinMean) * groups && m.nnz() < uint64_t(detail::kLongGroup) * groups) {
    sk = codes;
  }
  if (sk) {
    over_rows(m.rows(), opt.threads, m.nnz(), [&](uint32_t r0, uint32_t r1) { sk(v, x, y, r0, r1, t->rows_matvec); });
  } else {
    over_rows(m.rows(), opt.threads, m.nnz(), [&](uint32_t r0, uint32_t r1) { t->rows_matvec(v, x, y, r0, r1); });
  }
  const float w0 = m.omega()[0];
  if (w0 != 0.0f) {
    float sx = 0.0f;
    for (size_t c = 0; c < x_len; ++c) sx += x[c];
    for (size_t r = 0; r < y_len; ++r) y[r] += w0 * sx;
  }
  return Status::Ok();
}

Status matmat(const RowGroupMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const KernelOptions& opt) {
  if (batch == 0) return invalid_argument("matmat: batch must be >= 1");
  if (batch == 1) return matvec(m, X, x_len, Y, y_len, opt);  // same layout, the batch-1 kernel
  Status s = check_buffers("matmat", X, x_len, size_t(m.cols()) * batch, Y, y_len, size_t(m.rows()) * batch);
  if (!s.ok()) return s;
  const KernelTable* t;
  Isa isa;
  s = pick_table(opt, auto_isa(m, batch), &isa, &t);
  if (!s.ok()) return s;
  const detail::RowsView v = view_of(m);
  over_rows(m.rows(), opt.threads, m.nnz() * batch,
            [&](uint32_t r0, uint32_t r1) { t->rows_matmat(v, X, batch, Y, r0, r1); });
  const float w0 = m.omega()[0];
  if (w0 != 0.0f) {
    std::vector<float> sx(batch, 0.0f);
    for (size_t c = 0; c < m.cols(); ++c) {
      for (size_t b = 0; b < batch; ++b) sx[b] += X[c * batch + b];
    }
    for (size_t r = 0; r < m.rows(); ++r) {
      for (size_t b = 0; b < batch; ++b) Y[r * batch + b] += w0 * sx[b];
    }
  }
  return Status::Ok();
}

Status matvec(const CodebookMatrix& m, const float* x, size_t x_len, float* y, size_t y_len, const KernelOptions& opt) {
  Status s = check_buffers("matvec", x, x_len, m.cols(), y, y_len, m.rows());
  if (!s.ok()) return s;
  const KernelTable* t;
  Isa isa;
  s = pick_table(opt, auto_isa(1), &isa, &t);
  if (!s.ok()) return s;
  const detail::CodebookView v = view_of(m);
  over_rows(m.rows(), opt.threads, uint64_t(m.rows()) * m.cols() / 12,
            [&](uint32_t r0, uint32_t r1) { t->cb_matvec(v, x, y, r0, r1); });
  return Status::Ok();
}

Status matmat(const CodebookMatrix& m, const float* X, size_t x_len, size_t batch, float* Y, size_t y_len,
              const KernelOptions& opt) {
  if (batch == 0) return invalid_argument("matmat: batch must be >= 1");
  if (batch == 1) return matvec(m, X, x_len, Y, y_len, opt);
  Status s = check_buffers("matmat", X, x_len, size_t(m.cols()) * batch, Y, y_len, size_t(m.rows()) * batch);
  if (!s.ok()) return s;
  const KernelTable* t;
  Isa isa;
  s = pick_table(opt, auto_isa(batch), &isa, &t);
  if (!s.ok()) return s;
  const detail::CodebookView v = view_of(m);
  over_rows(m.rows(), opt.threads, uint64_t(m.rows()) * m.cols() * batch / 12,
            [&](uint32_t r0, uint32_t r1) { t->cb_matmat(v, X, batch, Y, r0, r1); });
  return Status::Ok();
}

Isa auto_isa(size_t batch) {
  const Isa best = detect_isa();
  if (best == Isa::kAvx512 && batch > 1 && batch <= 32 && isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return best;
}

Isa auto_isa(const RowGroupMatrix& m, size_t batch) {
  const Isa isa = auto_isa(batch);
  const uint64_t groups = m.num_groups();
  if (batch <= 1 && isa == Isa::kAvx512 && groups > 0 && m.nnz() <= 6 * groups && isa_supported(Isa::kAvx2)) {
    // A matrix with a kernel plan keeps AVX-512 where its plan kernel gathers (fast_gathers).
    if (m.has_starts() && fast_gathers()) return Isa::kAvx512;
    return Isa::kAvx2;
  }
  return isa;
}

Format choose_format(uint32_t rows, uint32_t cols, uint64_t nnz, uint32_t num_values, size_t batch, bool allow_dense) {
  const double n = double(rows) * double(cols);
  const double density = n > 0 ? double(nnz) / n : 0.0;
  if (batch <= 1) {
    // Codebook vs CSER: the codebook reads every weight (cost ~ cols per row), CSER its entries plus a
    // per-row cost, so the crossover density falls with shorter rows. Fitted to the measured crossovers
    // (bench/RESULTS.md, "CER/CSER kernels"), with a floor for tiny layers, where per-call costs dominate.
    if (num_values <= kCodebookSize) {
      const double cross = std::max(0.03, 0.097 - 49.0 / std::max(1.0, double(cols)));
      return density >= cross ? Format::kCodebook : Format::kCSER;
    }
    return allow_dense && density >= 0.4 ? Format::kDense : Format::kCSER;
  }
  return allow_dense && density >= 0.75 ? Format::kDense : Format::kCSER;
}

}  // namespace nnpress::sparse
