// The batch-1 kernel-plan kernel (kernels_starts_x86.h), compiled with this directory's ISA flags.
// GCC 12's own AVX-512 headers trip -W(maybe-)uninitialized (_mm512_undefined_*); not our code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "../kernels_starts_x86.h"

namespace nnpress::sparse::detail {

StartsMatvec avx512_starts_matvec() { return starts_matvec; }

}  // namespace nnpress::sparse::detail
