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
//   The environment variable NNPRESS_ISA=scalar|neon|avx2|avx512 caps the automatic choice (read
//   once, at the first call); a request above what the CPU has falls back to the best supported
//   ISA below it. An unknown value is ignored.
//
// SURPRISES
//   - "Compiled for" matters: with -DNNPRESS_SIMD=OFF, or on a compiler without the per-ISA
//     sources, detect_isa() is kScalar even on an AVX-512 machine.
//   - The library is never built with -march=native; only the files under src/sparse/<isa>/
//     carry ISA flags, and nothing from them runs unless isa_supported() said yes.
#pragma once

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

}  // namespace nnpress
