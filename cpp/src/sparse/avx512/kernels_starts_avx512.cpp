// The batch-1 kernel-plan kernels (kernels_starts_x86.h, kernels_entries_x86.h) and the Ω-index kernel
// (kernels_codes_x86.h), compiled with this directory's ISA flags. A TU of
// its own, not an entry of kernels_avx512.cpp's table: more code in that file changed how GCC 12 inlines
// the group loop, and made it slower (bench/RESULTS.md, "CER/CSER kernels").
// GCC 12's own AVX-512 headers trip -W(maybe-)uninitialized (_mm512_undefined_*); not our code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "../kernels_codes_x86.h"
#include "../kernels_entries_x86.h"
#include "../kernels_starts_x86.h"

namespace nnpress::sparse::detail {

StartsMatvec avx512_starts_matvec(bool gather) { return gather ? starts_matvec<true> : starts_matvec<false>; }
StartsMatvec avx512_codes_matvec() { return codes_matvec; }
StartsMatvec avx512_entries_matvec() { return entries_matvec; }

}  // namespace nnpress::sparse::detail
