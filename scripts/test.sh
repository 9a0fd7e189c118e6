#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what it needs (Debian packages when run as
# root, a virtualenv in .venv with torch 2.13.0 CPU and the test extras), then runs the C++ tests
# (ctest, including the benchmark programs' build), the Python tests (pytest) and the package check
# (scripts/wheel_check.sh).
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # models come from installed packages, never a hub

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! dpkg -s libbenchmark-dev >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libbenchmark-dev >/dev/null
  fi
fi

# (a venv interrupted while being made has no activate script: make it again)
if [ ! -f .venv/bin/activate ] || [ ! -x .venv/bin/python ]; then rm -rf .venv; python3 -m venv .venv; fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q "torch==2.13.0"           # the CPU build (never a bare 'torch': CUDA)
python -m pip install -q ninja cmake ".[test]"

echo "== Lint and format: ruff (Python) and clang-format (C++), both pinned in the test extras"
ruff check python tests bench examples
ruff format --check python tests bench examples
bash scripts/format_check.sh

echo "== C++ tests (ctest)"
cmake -S . -B build/ctest -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNNPRESS_BUILD_TESTS=ON \
  -DNNPRESS_BUILD_BENCH="$(dpkg -s libbenchmark-dev >/dev/null 2>&1 && echo ON || echo OFF)" >/dev/null
cmake --build build/ctest -j2
ctest --test-dir build/ctest --output-on-failure

echo "== Python tests (pytest)"
cd "$root/tests/python"   # run against the installed package, not the source tree
python -m pytest -q -p no:cacheprovider "$root/tests/python" "$@"

echo "== Package: sdist and manylinux wheel (LICENSE in both), nnpress demo from the wheel without a compiler"
bash "$root/scripts/wheel_check.sh"

echo "== Sanitizers (ASan + UBSan ctest) and a short run of each fuzz target"
bash "$root/scripts/sanitize.sh" --quick

echo "== aarch64: cross-built NEON kernels against the scalar reference under qemu"
bash "$root/scripts/aarch64_check.sh"
