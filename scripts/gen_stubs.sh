#!/usr/bin/env bash
# Regenerates python/nnpress/_core.pyi from the installed extension (pip install pybind11-stubgen).
# tests/python/test_stubs.py fails when the stub and the module disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
pybind11-stubgen nnpress._core -o "$out"
cp "$out/nnpress/_core.pyi" python/nnpress/_core.pyi
