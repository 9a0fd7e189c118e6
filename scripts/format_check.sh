#!/usr/bin/env bash
# Checks that every C++ file of the repository is formatted as .clang-format says, with the pinned
# clang-format (the PyPI package clang-format==22.1.8: formatting differs between major versions).
#
#   bash scripts/format_check.sh          exit 0 if all files are formatted; else list the files
#                                         that are not and exit 1 (nothing is changed)
#   bash scripts/format_check.sh --fix    format those files in place
#   CLANG_FORMAT=/path/to/clang-format bash scripts/format_check.sh   another binary (same version)
#
# Files: the tracked *.h / *.cpp under cpp/, tests/cpp/, tests/fuzz/, bench/cpp/ and examples/, except
# cpp/src/cabac/tables.cpp, which scripts/gen_cabac_tables.py generates (regenerate it, do not format it).
# The binary is $CLANG_FORMAT, else clang-format next to the running Python (a venv with the pinned
# package), else clang-format on PATH; a different version is an error (exit 2), not a silent check.
set -euo pipefail
cd "$(dirname "$0")/.."

want_version="22.1.8"
fix=0
case "${1:-}" in
  "") ;;
  --fix) fix=1 ;;
  -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "format_check.sh: unknown argument '$1' (expected --fix)" >&2; exit 2 ;;
esac

cf=${CLANG_FORMAT:-}
if [ -z "$cf" ]; then
  for py in python3 python; do
    if command -v "$py" > /dev/null; then
      bindir=$("$py" -c 'import sys, os; print(os.path.dirname(sys.executable))' 2> /dev/null || true)
      if [ -n "$bindir" ] && [ -x "$bindir/clang-format" ]; then cf="$bindir/clang-format"; break; fi
    fi
  done
fi
if [ -z "$cf" ]; then cf=$(command -v clang-format || true); fi
if [ -z "$cf" ]; then
  echo "format_check.sh: clang-format not found; pip install clang-format==$want_version" >&2
  exit 2
fi
have_version=$("$cf" --version 2> /dev/null | sed -n 's/.*clang-format version \([0-9][0-9.]*\).*/\1/p' || true)
if [ "$have_version" != "$want_version" ]; then
  echo "format_check.sh: $cf is clang-format $have_version, the pinned version is $want_version" \
    "(pip install clang-format==$want_version, or set CLANG_FORMAT)" >&2
  exit 2
fi

mapfile -t files < <(git ls-files -- 'cpp/*.h' 'cpp/*.cpp' 'tests/cpp/*.h' 'tests/cpp/*.cpp' \
  'tests/fuzz/*.h' 'tests/fuzz/*.cpp' 'bench/cpp/*.h' 'bench/cpp/*.cpp' 'examples/*.h' 'examples/*.cpp' \
  | grep -v '^cpp/src/cabac/tables\.cpp$')
if [ "${#files[@]}" -eq 0 ]; then
  echo "format_check.sh: no C++ files found (run inside the git repository)" >&2
  exit 2
fi

bad=()
for f in "${files[@]}"; do
  if ! "$cf" --style=file --dry-run --Werror "$f" > /dev/null 2>&1; then bad+=("$f"); fi
done

if [ "$fix" -eq 1 ]; then
  if [ "${#bad[@]}" -gt 0 ]; then "$cf" --style=file -i "${bad[@]}"; fi
  echo "format_check.sh: formatted ${#bad[@]} of ${#files[@]} files"
  exit 0
fi
if [ "${#bad[@]}" -gt 0 ]; then
  echo "format_check.sh: ${#bad[@]} of ${#files[@]} C++ files are not formatted (bash scripts/format_check.sh --fix):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "format_check.sh: all ${#files[@]} C++ files formatted (clang-format $have_version)"
