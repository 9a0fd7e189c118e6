// The batch-1 kernel-plan kernels (kernels_starts_x86.h, kernels_entries_x86.h) and the Ω-index kernel
// (kernels_codes_x86.h), compiled with this directory's ISA flags. A TU of their own, not entries of
// kernels_avx2.cpp's table: more code in that file changed how GCC 12 inlines the group loop, and made it slower
// (bench/RESULTS.md, "CER/CSER kernels").
#include "../kernels_codes_x86.h"
#include "../kernels_entries_x86.h"
#include "../kernels_starts_x86.h"

namespace nnpress::sparse::detail {

StartsMatvec avx2_starts_matvec() { return starts_matvec<false>; }
StartsMatvec avx2_codes_matvec() { return codes_matvec; }
StartsMatvec avx2_entries_matvec() { return entries_matvec; }

}  // namespace nnpress::sparse::detail
