// NNPRESS_ISA (cpu.h): a known name caps the automatic choice at the best supported ISA at or below it
// (a name above what this CPU has falls back, e.g. neon on x86-64 -> scalar); an unknown name makes every
// automatically dispatched product fail with kInvalidArgument naming the value, while products that name
// their ISA still run. The variable is read once per process, so ctest runs this program once per value
// (tests/cpp/CMakeLists.txt); it reads the value itself and checks what cpu.h promises for it.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "check.h"
#include "nnpress/cpu.h"
#include "nnpress/sparse/kernels.h"
#include "nnpress/sparse/matrix.h"

using namespace nnpress;
using namespace nnpress::sparse;

namespace {

// The best ISA at or below `cap` that this CPU/build runs (the rule of cpu.h, computed independently).
Isa best_at_or_below(Isa cap) {
  for (int i = int(cap); i > 0; --i) {
    if (isa_supported(Isa(i))) return Isa(i);
  }
  return Isa::kScalar;
}

bool close(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::fabs(a[i] - b[i]) > 1e-4f * (1.0f + std::fabs(b[i]))) return false;
  }
  return true;
}

}  // namespace

int main() {
  const char* env = std::getenv("NNPRESS_ISA");
  const bool set = env != nullptr && *env != '\0';
  Isa named = Isa::kAvx512;
  const bool known = set && parse_isa(env, &named);
  std::printf("NNPRESS_ISA=%s%s%s -> detect_isa() = %s\n", env ? "'" : "(unset)", env ? env : "", env ? "'" : "",
              isa_name(detect_isa()));

  // detect_isa(): capped by a known name, uncapped when unset, empty or unknown.
  CHECK(detect_isa() == best_at_or_below(known ? named : Isa::kAvx512));
  CHECK(isa_supported(detect_isa()));

  // isa_env_status(): an unknown value is an error that names it.
  const Status env_status = isa_env_status();
  CHECK(env_status.ok() == (!set || known));
  if (!env_status.ok()) {
    CHECK(env_status.code() == StatusCode::kInvalidArgument);
    CHECK(env_status.message().find("NNPRESS_ISA") != std::string::npos);
    CHECK(env_status.message().find(std::string("'") + env + "'") != std::string::npos);
  }

  // A 3 x 5 matrix with values {0, 0.5, -2} (CSER, CER) and the same as a codebook; batch 1 and 3.
  const std::vector<float> w = {0, 0.5f, 0, -2, 0, 0.5f, 0.5f, 0, 0, -2, 0, 0, 0, 0, 0.5f};
  const uint32_t rows = 3, cols = 5, batch = 3;
  std::vector<float> x(cols * batch);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) - 2.5f;
  std::vector<float> want1(rows, 0.0f), want3(rows * batch, 0.0f);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t c = 0; c < cols; ++c) {
      want1[r] += w[r * cols + c] * x[c];
      for (uint32_t b = 0; b < batch; ++b) want3[r * batch + b] += w[r * cols + c] * x[c * batch + b];
    }
  }
  RowGroupMatrix cser, cer;
  CodebookMatrix cb;
  CHECK(RowGroupMatrix::from_dense(Format::kCSER, w.data(), rows, cols, &cser).ok());
  CHECK(RowGroupMatrix::from_dense(Format::kCER, w.data(), rows, cols, &cer).ok());
  CHECK(CodebookMatrix::from_dense(w.data(), rows, cols, &cb).ok());

  // Automatic choice: the same Status as isa_env_status(); y untouched on failure.
  const float kUntouched = 12345.0f;
  auto automatic = [&](auto& m, size_t b) {
    std::vector<float> y(rows * b, kUntouched);
    const Status s = b == 1 ? matvec(m, x.data(), cols, y.data(), y.size())
                            : matmat(m, x.data(), x.size(), b, y.data(), y.size());
    CHECK(s.ok() == env_status.ok());
    CHECK(s.code() == env_status.code());
    if (s.ok()) {
      CHECK(close(y, b == 1 ? want1 : want3));
    } else {
      CHECK(s.message() == env_status.message());
      for (float v : y) CHECK(v == kUntouched);
    }
  };
  automatic(cser, 1);
  automatic(cser, batch);
  automatic(cer, 1);
  automatic(cer, batch);
  automatic(cb, 1);
  automatic(cb, batch);

  // A named ISA ignores NNPRESS_ISA (whatever its value) and runs wherever isa_supported() says so.
  for (Isa i : {Isa::kScalar, Isa::kNeon, Isa::kAvx2, Isa::kAvx512}) {
    if (!isa_supported(i)) continue;
    KernelOptions o;
    o.isa = i;
    std::vector<float> y1(rows), y3(rows * batch);
    CHECK(matvec(cser, x.data(), cols, y1.data(), y1.size(), o).ok());
    CHECK(close(y1, want1));
    CHECK(matmat(cb, x.data(), x.size(), batch, y3.data(), y3.size(), o).ok());
    CHECK(close(y3, want3));
  }
  return TEST_MAIN_RESULT();
}
