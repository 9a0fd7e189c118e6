// The batch-1 kernel-plan kernel (kernels_starts_x86.h), compiled with this directory's ISA flags. A TU of
// its own, not an entry of kernels_avx2.cpp's table: more code in that file changed how GCC 12 inlines
// the group loop, and made it slower (bench/RESULTS.md, "CER/CSER kernels").
#include "../kernels_starts_x86.h"

namespace nnpress::sparse::detail {

StartsMatvec avx2_starts_matvec() { return starts_matvec<false>; }

}  // namespace nnpress::sparse::detail
