#!/usr/bin/env bash
# The edge chain from scratch: configure, build and install the decoder-only library
# (-DNNPRESS_ENCODER=OFF) into a fresh prefix; export the demo CNN's .nnp, the digits test images and
# the Python model's predictions (examples/edge/export_demo.py, with the installed nnpress Python
# package); build examples/edge against the prefix with find_package(nnpress); run it; fail unless
# its predictions equal Python's exactly. Prints the stripped library size and fails when it is above
# the edge budget (MAX_LIB_BYTES).
#
# Usage: bash scripts/edge_ci.sh [WORK_DIR]     (default: a new temporary folder, removed at exit)
# Env:   PYTHON   interpreter with nnpress + torch + scikit-learn installed (default: python, else python3)
#        KEEP=1   keep WORK_DIR (prefix/, lib-build/, app-build/, data/) for benchmarks
#        MAX_LIB_BYTES  the budget for the installed library after `strip --strip-unneeded`
#                 (default 1000000: under 1 MB)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$(command -v python || command -v python3)}

if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/nnpress-edge.XXXXXX")
  if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
fi
prefix=$work/prefix
rm -rf "$prefix" "$work/lib-build" "$work/app-build"
gen=()
if command -v ninja >/dev/null; then gen=(-G Ninja); fi

echo "== edge: decoder-only library -> $prefix"
cmake -S "$root" -B "$work/lib-build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DNNPRESS_ENCODER=OFF \
  -DNNPRESS_BUILD_PYTHON=OFF -DNNPRESS_BUILD_TESTS=OFF -DNNPRESS_BUILD_BENCH=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$work/lib-build" -j2 >/dev/null
cmake --install "$work/lib-build" >/dev/null
lib=$(find "$prefix" -name 'libnnpress.*' -type f | head -n1)
[ -n "$lib" ] || { echo "edge: no libnnpress installed under $prefix" >&2; exit 1; }
if nm -C "$lib" 2>/dev/null | grep -q -E ' [TW] .*(write_container|encode_level_payload|BinEncoder)'; then
  echo "edge: the decoder-only library contains encoder symbols" >&2; exit 1
fi
stripped=$work/$(basename "$lib").stripped
strip --strip-unneeded -o "$stripped" "$lib"
stripped_bytes=$(stat -c %s "$stripped")
echo "library    $(basename "$lib"): $(stat -c %s "$lib") bytes, stripped $stripped_bytes bytes"
max_bytes=${MAX_LIB_BYTES:-1000000}
if [ "$stripped_bytes" -gt "$max_bytes" ]; then
  echo "edge: the stripped library is $stripped_bytes bytes, over the budget of $max_bytes bytes" >&2; exit 1
fi

echo "== edge: export the demo model and test images ($py)"
"$py" "$root/examples/edge/export_demo.py" "$work/data" ${EXPORT_ARGS:-}

echo "== edge: build examples/edge against the installed package"
cmake -S "$root/examples/edge" -B "$work/app-build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/app-build" -j2 >/dev/null
app=$work/app-build/edge_digits
strip -o "$work/edge_digits.stripped" "$app"
echo "app        edge_digits stripped: $(stat -c %s "$work/edge_digits.stripped") bytes (static libnnpress inside)"

echo "== edge: run"
d=$work/data
"$app" "$d/digits_cnn.nnp" "$d/test_images.f32" "$d/test_labels.i32" "$d/expected_pred.i32"
# Accuracy must equal Python's exactly (the app already exits 2 if any prediction differs).
want=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["correct_python"])' "$d/export.json")
got=$("$app" "$d/digits_cnn.nnp" "$d/test_images.f32" "$d/test_labels.i32" --json |
  "$py" -c 'import json,sys; print(json.load(sys.stdin)["correct"])')
if [ "$want" != "$got" ]; then
  echo "edge: accuracy differs: python $want correct, edge app $got" >&2; exit 1
fi
echo "edge: OK (python $want correct, edge app $got, predictions identical)"
