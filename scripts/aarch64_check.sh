#!/usr/bin/env bash
# Cross-builds the C++ library and its tests for aarch64 (NEON kernels, decoder-only and full) and runs
# the tests under qemu-user. Proves that the aarch64 build compiles and that the NEON kernels match the
# scalar reference; says nothing about aarch64 speed.
#   bash scripts/aarch64_check.sh              # the kernel tests: sparse, levels, lut (a few minutes)
#   bash scripts/aarch64_check.sh --all        # every C++ test
# Needs g++-aarch64-linux-gnu and qemu-user (Debian/Ubuntu); installs them with apt-get when run as
# root and they are missing. Build directory: $NNPRESS_AARCH64_BUILD (default build/aarch64).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${NNPRESS_AARCH64_BUILD:-$root/build/aarch64}"
kernels=(sparse levels lut)  # every test with NEON kernels behind it
all=0
[[ "${1:-}" == "--all" ]] && all=1

if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
  else
    echo "aarch64_check: needs aarch64-linux-gnu-g++ and qemu-aarch64 (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
    exit 2
  fi
fi

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
  -DCMAKE_CROSSCOMPILING_EMULATOR="qemu-aarch64;-L;/usr/aarch64-linux-gnu" \
  -DNNPRESS_BUILD_PYTHON=OFF -DNNPRESS_BUILD_TESTS=ON -DNNPRESS_BUILD_BENCH=OFF >/dev/null
if [[ $all == 1 ]]; then
  cmake --build "$build"
  ctest --test-dir "$build" --output-on-failure
else
  cmake --build "$build" --target "${kernels[@]/#/test_}"
  ctest --test-dir "$build" --output-on-failure -R "^test_($(IFS='|'; echo "${kernels[*]}"))\$"
fi
# The kernels really are the NEON ones: each test prints the ISAs it compared.
for t in "${kernels[@]}"; do
  out=$(qemu-aarch64 -L /usr/aarch64-linux-gnu "$build/tests/cpp/test_$t")
  grep -q "testing ISAs: scalar neon" <<<"$out" ||
    { echo "aarch64_check: test_$t did not compare the NEON kernels" >&2; exit 1; }
done
echo "aarch64_check: OK (NEON kernels match the scalar reference under qemu)"
