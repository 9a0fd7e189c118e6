#!/usr/bin/env bash
# Sustained fuzzing (libFuzzer + ASan + UBSan, clang only), one target after the other.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     default: 600 s each, every target
#   bash scripts/fuzz.sh --merge [TARGET...]       minimise what the runs found and add the
#                                                  inputs that bring new coverage to
#                                                  tests/fuzz/corpus/<target>/ (review, then commit)
# Targets: container container_round_trip level_payload level_stream round_trip sparse
# (tests/fuzz/fuzz_*.cpp).
# Work corpora live in build/fuzz/work/<target>/, crashes in build/fuzz/artifacts/. A crash is
# reproduced with: build/fuzz/tests/fuzz/fuzz_<target> <file>; copy the file into
# tests/fuzz/corpus/<target>/ (a descriptive name: crash-<what>) so the ctest replays it forever.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build="$root/build/fuzz"
merge=0
seconds=600
if [ "${1:-}" = "--merge" ]; then merge=1; shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then seconds=$1; shift
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.cpp; do n=$(basename "$f" .cpp); targets+=("${n#fuzz_}"); done
fi

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DNNPRESS_SANITIZE=ON -DNNPRESS_BUILD_FUZZ=ON >/dev/null
cmake --build "$build" -j2
mkdir -p "$build/artifacts"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

status=0
for t in "${targets[@]}"; do
  exe="$build/tests/fuzz/fuzz_$t"
  work="$build/work/$t"; mkdir -p "$work"
  if [ $merge = 1 ]; then
    before=$(ls "tests/fuzz/corpus/$t" | wc -l)
    "$exe" -merge=1 "tests/fuzz/corpus/$t" "$work" >/dev/null 2>&1
    echo "$t: corpus $before -> $(ls "tests/fuzz/corpus/$t" | wc -l) files"
    continue
  fi
  log="$build/work/$t.log"
  echo "== fuzz $t for ${seconds}s (log: $log)"
  if "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/artifacts/$t-" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    grep -E "^#[0-9]+ *DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log" || true
  else
    echo "FAILED:"; grep -E "ERROR|SUMMARY|violated|runtime error|Test unit written" "$log" | head -8 || true
    status=1
  fi
done
exit $status
