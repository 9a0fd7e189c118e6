// nnpress/cpu.h — which SIMD instruction set the kernels may use, decided once at run time.
//
// CONTRACT
//   detect_isa() returns the best ISA that both this CPU/OS supports and this build compiled
//   kernels for: x86-64 uses cpuid + xgetbv (AVX2 needs AVX2+FMA+F16C and OS-saved YMM state;
//   AVX-512 needs F/BW/VL/DQ and OS-saved ZMM/opmask state); kNeon only if NEON kernels were
//   compiled (src/sparse/neon/, built on every aarch64 target: scripts/aarch64_check.sh); everything else
//   kScalar. The result is computed once (thread-safe) and cached.
//   isa_supported(isa) says whether kernels for `isa` can run here (kScalar always can); the CPU
//   is queried once (cpuid is slow in virtual machines), so calling it per product is cheap.
//
//   NNPRESS_ISA (environment variable, read once per process, at the first call of detect_isa() or
//   isa_env_status()) caps the automatic choice: detect_isa() is the best supported ISA at or below
//   the named one, in the order scalar < neon < avx2 < avx512. So a value above what this CPU/build
//   has is not an error: NNPRESS_ISA=avx512 on an AVX2-only CPU gives avx2, and NNPRESS_ISA=neon on
//   x86-64 gives scalar (nothing x86 lies at or below neon). Unset or empty: no cap.
//   Any other value (a typo such as "avx-512" or "AVX2"; names are lower case) is an error, not a
//   silent fallback: isa_env_status() returns kInvalidArgument naming the value, and every kernel
//   product that would use the automatic choice (sparse/kernels.h, KernelOptions.isa empty) returns
//   that Status (a ValueError in Python) instead of computing. detect_isa() itself cannot fail: with
//   an unknown value it returns the uncapped choice, for diagnostics. Products that name their ISA
//   (KernelOptions.isa) and isa_supported() ignore NNPRESS_ISA.
//
// SURPRISES
//   - "Compiled for" matters: with -DNNPRESS_SIMD=OFF, or on a compiler without the per-ISA
//     sources, detect_isa() is kScalar even on an AVX-512 machine.
//   - The library is never built with -march=native; only the files under src/sparse/<isa>/
//     carry ISA flags, and nothing from them runs unless isa_supported() said yes.
#pragma once

#include "nnpress/status.h"

namespace nnpress {

enum class Isa : int { kScalar = 0, kNeon = 1, kAvx2 = 2, kAvx512 = 3 };

// "scalar", "neon", "avx2", "avx512".
const char* isa_name(Isa isa);
// Parses the names above; returns false for anything else.
bool parse_isa(const char* name, Isa* out);
// True when kernels for `isa` were compiled into this build and the CPU + OS can run them.
bool isa_supported(Isa isa);
// The ISA the kernels use when the caller does not name one (see CONTRACT for NNPRESS_ISA).
Isa detect_isa();
// Ok when NNPRESS_ISA is unset, empty or one of the names above; else kInvalidArgument with the value
// in the message. The kernels check it before every product that uses the automatic choice.
Status isa_env_status();

}  // namespace nnpress
