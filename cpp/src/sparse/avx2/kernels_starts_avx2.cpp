// The batch-1 kernel-plan kernel (kernels_starts_x86.h), compiled with this directory's ISA flags.
#include "../kernels_starts_x86.h"

namespace nnpress::sparse::detail {

StartsMatvec avx2_starts_matvec() { return starts_matvec; }

}  // namespace nnpress::sparse::detail
