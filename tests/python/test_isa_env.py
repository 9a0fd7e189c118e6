"""NNPRESS_ISA (cpp/include/nnpress/cpu.h) as a Python user meets it: a known name caps the automatic
kernel choice, a name above what the CPU has falls back to the best ISA below it, and an unknown name
makes every automatically dispatched product raise ValueError naming the value (products that name
their ISA still run). The variable is read once per process, so each case runs in a subprocess."""

import os
import platform
import subprocess
import sys

import pytest

from nnpress.sparse import available_isas

ORDER = ("scalar", "neon", "avx2", "avx512")

PROBE = """
import numpy as np, nnpress, nnpress._core as c
w = np.array([[0, .5, 0, -2], [.5, 0, 0, .5], [0, 0, -2, 0]], np.float32)
x = np.arange(4, dtype=np.float32)
print(c.detect_isa())
for cls in (nnpress.CSERMatrix, nnpress.CERMatrix, nnpress.CodebookMatrix):
    m = cls.from_dense(w)
    np.testing.assert_allclose(m.matmul(x, isa="scalar"), w @ x, rtol=1e-6)  # named: always runs
    for operand in (x, np.stack([x, x, x], 1)):
        try:
            y = m @ operand
        except ValueError as e:
            print("ValueError:", e)
        else:
            np.testing.assert_allclose(y, w @ operand, rtol=1e-6)
            print("ok")
"""


def run_with(value: str | None) -> list[str]:
    env = dict(os.environ)
    env.pop("NNPRESS_ISA", None)
    if value is not None:
        env["NNPRESS_ISA"] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def expected_choice(cap: str) -> str:
    supported = set(available_isas())
    below = [name for name in ORDER[: ORDER.index(cap) + 1] if name in supported]
    return below[-1]


@pytest.mark.parametrize("value", ["bogus", "AVX2", "avx-512", " avx2"])
def test_unknown_value_is_an_error_at_the_product(value):
    lines = run_with(value)
    assert lines[0] == available_isas()[-1]  # detect_isa() itself reports the uncapped choice
    errors = lines[1:]
    assert len(errors) == 6
    for line in errors:
        assert line.startswith("ValueError:"), line
        assert f"NNPRESS_ISA='{value}'" in line
        assert "scalar, neon, avx2 or avx512" in line


@pytest.mark.parametrize("value", [None, ""] + list(ORDER))
def test_known_value_caps_the_automatic_choice(value):
    lines = run_with(value)
    assert lines[0] == expected_choice(value or "avx512")
    assert lines[1:] == ["ok"] * 6


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
def test_a_cap_above_the_cpu_falls_back_below_it():
    # neon is above scalar in the order but not an x86 ISA: the best ISA at or below it here is scalar.
    assert run_with("neon")[0] == "scalar"
