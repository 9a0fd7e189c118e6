#!/usr/bin/env bash
# The C++ tests and a short run of every fuzz target under AddressSanitizer +
# UndefinedBehaviorSanitizer (LeakSanitizer included), in its own build dir (build/sanitize).
#
#   bash scripts/sanitize.sh            ctest + each fuzz target for 60 s
#   bash scripts/sanitize.sh --quick    ctest + each fuzz target for 10 s (what scripts/test.sh runs)
#   FUZZ_SECONDS=N bash scripts/sanitize.sh   any duration
#
# ctest includes test_fuzz_corpus, which replays tests/fuzz/corpus/ (seeds + every crash
# reproducer) through the targets. The fuzz runs start from that corpus and write what they find
# to build/sanitize/fuzz-work/ (never into the repository); a crash, hang (> 10 s per input),
# leak or violated property fails the script and leaves the input in build/sanitize/artifacts/.
# libFuzzer needs clang; without clang++ only the sanitized ctest runs (and says so).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-60}
if [ "${1:-}" = "--quick" ]; then seconds=${FUZZ_SECONDS:-10}; fi
build="$root/build/sanitize"
start=$(date +%s)

if ! command -v clang++ >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null || true
fi
fuzz=OFF
compilers=()
probe=$(mktemp -d)
printf '#include <cstdint>\n#include <cstddef>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' >"$probe/p.cpp"
if command -v clang++ >/dev/null && command -v clang >/dev/null &&
   clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1; then
  fuzz=ON
  compilers=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
else
  echo "sanitize.sh: no clang++ with libFuzzer: sanitized ctest only, no fuzz runs (apt-get install clang)"
fi
rm -rf "$probe"

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

echo "== sanitize: build (ASan + UBSan, fuzz targets: $fuzz)"
# -O1 -g1: the usual sanitizer build, and it compiles much faster than -O2 -g on 2 cores.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${compilers[@]}" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DNNPRESS_SANITIZE=ON -DNNPRESS_BUILD_TESTS=ON -DNNPRESS_BUILD_BENCH=OFF -DNNPRESS_BUILD_FUZZ=$fuzz >/dev/null
cmake --build "$build" -j2

echo "== sanitize: ctest under ASan + UBSan"
ctest --test-dir "$build" --output-on-failure

if [ "$fuzz" = ON ]; then
  mkdir -p "$build/artifacts" "$build/fuzz-work"
  failed=()
  for exe in "$build"/tests/fuzz/fuzz_*; do
    [ -x "$exe" ] || continue
    name=$(basename "$exe"); target=${name#fuzz_}
    work="$build/fuzz-work/$target"; mkdir -p "$work"
    log="$build/fuzz-work/$target.log"
    if "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$target-" "$work" "$root/tests/fuzz/corpus/$target" >"$log" 2>&1; then
      runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
      echo "fuzz $target: ${seconds}s, $runs executions, clean"
    else
      echo "fuzz $target: FAILED (log: $log)"
      grep -E "ERROR|SUMMARY|violated|runtime error|Test unit written" "$log" | head -8 || true
      failed+=("$target")
    fi
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "sanitize.sh: fuzz targets failed: ${failed[*]} (inputs in $build/artifacts/)"
    exit 1
  fi
fi
echo "== sanitize: all clean in $(( $(date +%s) - start )) s"
