#!/usr/bin/env bash
# Cross-builds the C++ library and its tests for aarch64 (NEON kernels, decoder-only and full) and runs
# the tests under qemu-user. Proves that the aarch64 build compiles and that the NEON kernels match the
# scalar reference; says nothing about aarch64 speed.
#   bash scripts/aarch64_check.sh              # sparse kernel tests (about a minute)
#   bash scripts/aarch64_check.sh --all        # every C++ test
# Needs g++-aarch64-linux-gnu and qemu-user (Debian/Ubuntu); installs them with apt-get when run as
# root and they are missing. Build directory: $NNPRESS_AARCH64_BUILD (default build/aarch64).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${NNPRESS_AARCH64_BUILD:-$root/build/aarch64}"
filter="sparse"
[[ "${1:-}" == "--all" ]] && filter=""

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
cmake --build "$build" ${filter:+--target test_$filter}
ctest --test-dir "$build" --output-on-failure ${filter:+-R $filter}
# The kernels really are the NEON ones: the test prints the ISAs it compared.
qemu-aarch64 -L /usr/aarch64-linux-gnu "$build/tests/cpp/test_sparse" | grep -q "testing ISAs: scalar neon (auto: neon)"
echo "aarch64_check: OK (NEON kernels match the scalar reference under qemu)"
