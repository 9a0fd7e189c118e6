#!/usr/bin/env bash
# Regenerates python/nnpress/_core.pyi from the extension installed in ${PYTHON:-python}'s environment
# (pip install pybind11-stubgen there): the generator runs as a module of that same interpreter, so
# it can never read another environment's build.
# tests/python/test_stubs.py fails when the stub and the module disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
"${PYTHON:-python}" -m pybind11_stubgen nnpress._core -o "$out"
cp "$out/nnpress/_core.pyi" python/nnpress/_core.pyi
