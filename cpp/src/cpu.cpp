// Runtime ISA detection (see nnpress/cpu.h).
#include "nnpress/cpu.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#define NNPRESS_X86_64 1
#include <cpuid.h>
#endif

namespace nnpress {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kNeon: return "neon";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

bool parse_isa(const char* name, Isa* out) {
  if (name == nullptr) return false;
  static const Isa all[] = {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512};
  for (Isa i : all) {
    if (std::strcmp(name, isa_name(i)) == 0) {
      *out = i;
      return true;
    }
  }
  return false;
}

namespace {

#ifdef NNPRESS_X86_64
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

struct X86Features {
  bool avx2 = false, avx512 = false;
};

X86Features x86_features() {
  X86Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;                // SSE + AVX state
  const bool zmm_state = ymm_state && (xcr0 & 0xE0) == 0xE0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx2 = ymm_state && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl;
  return f;
}
#endif

// cpuid traps to the hypervisor in a VM (slow): query once.
#ifdef NNPRESS_X86_64
const X86Features& cached_x86_features() {
  static const X86Features f = x86_features();
  return f;
}
#endif

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kNeon:
#if defined(__aarch64__)
      return true;
#else
      return false;
#endif
    case Isa::kAvx2:
#ifdef NNPRESS_X86_64
      return cached_x86_features().avx2;
#else
      return false;
#endif
    case Isa::kAvx512:
#ifdef NNPRESS_X86_64
      return cached_x86_features().avx512;
#else
      return false;
#endif
  }
  return false;
}

bool compiled(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#ifdef NNPRESS_HAVE_NEON_TU
    case Isa::kNeon: return true;
#endif
#ifdef NNPRESS_HAVE_AVX2_TU
    case Isa::kAvx2: return true;
#endif
#ifdef NNPRESS_HAVE_AVX512_TU
    case Isa::kAvx512: return true;
#endif
    default: return false;
  }
}

// NNPRESS_ISA as read once per process: `cap` is the highest ISA the automatic choice may use.
struct EnvIsa {
  Isa cap = Isa::kAvx512;
  bool valid = true;  // unset, empty or a known name
  std::string value;  // the raw value (for the error message)
};

const EnvIsa& env_isa() {
  static const EnvIsa e = [] {
    EnvIsa r;
    const char* v = std::getenv("NNPRESS_ISA");
    if (v == nullptr || *v == '\0') return r;
    r.value = v;
    r.valid = parse_isa(v, &r.cap);
    if (!r.valid) r.cap = Isa::kAvx512;
    return r;
  }();
  return e;
}

Isa compute_isa() {
  const Isa cap = env_isa().cap;
  for (int i = int(cap); i > 0; --i) {
    if (isa_supported(Isa(i))) return Isa(i);
  }
  return Isa::kScalar;
}

}  // namespace

bool isa_supported(Isa isa) { return compiled(isa) && cpu_has(isa); }

Isa detect_isa() {
  static const Isa isa = compute_isa();
  return isa;
}

Status isa_env_status() {
  const EnvIsa& e = env_isa();
  if (e.valid) return Status::Ok();
  return invalid_argument("NNPRESS_ISA='" + e.value +
                          "' is not an ISA name (expected scalar, neon, avx2 or avx512, lower case; unset it for "
                          "the automatic choice)");
}

}  // namespace nnpress
