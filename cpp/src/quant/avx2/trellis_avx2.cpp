// The trellis search (../trellis_soa.h) with the AVX2 kernels (trellis_avx2_kernels.h).
// Compiled with -mavx2 -ffp-contract=off only (cpp/CMakeLists.txt); runs only when
// isa_supported(kAvx2).
#include "trellis_avx2_kernels.h"

namespace nnpress::trellis_detail {

uint64_t trellis_soa_avx2(const PassArgs<float, float>& a, Workspace& ws) { return trellis_soa<Avx2Kernels>(a, ws); }
uint64_t trellis_soa_avx2(const PassArgs<float, double>& a, Workspace& ws) { return trellis_soa<Avx2Kernels>(a, ws); }
uint64_t trellis_soa_avx2(const PassArgs<double, float>& a, Workspace& ws) { return trellis_soa<Avx2Kernels>(a, ws); }
uint64_t trellis_soa_avx2(const PassArgs<double, double>& a, Workspace& ws) { return trellis_soa<Avx2Kernels>(a, ws); }

}  // namespace nnpress::trellis_detail
