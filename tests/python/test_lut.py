"""Table-lookup matrices (``nnpress._core.LutMatrix``, ``NnpFile.lut_matrix``, format "lut" of
``nnpress.nn.convert``): rows of at most 16 distinct levels held as 4-bit codes and per-row tables;
products equal the float64 product of the decoded weights up to float rounding on every ISA this CPU
runs (and under NNPRESS_ISA), bit-identical for every thread count; a row of 17 values is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import nnpress
from nnpress import _core
from nnpress.container import NnpFile, TensorRecord, write_nnp

ISAS = [i for i in ("scalar", "neon", "avx2", "avx512") if _core.isa_supported(i)]


def _rows(rng, rows: int, cols: int, values: int) -> np.ndarray:
    """Each row: its own `values` distinct indices (wide range, some beyond int8)."""
    u = np.empty((rows, cols), np.int32)
    for r in range(rows):
        vals = rng.choice(np.arange(-3000, 3001), size=values, replace=False)
        row = rng.choice(vals, size=cols)
        row[: min(values, cols)] = vals[: min(values, cols)]
        u[r] = rng.permutation(row)
    return u


def _rel_err(y: np.ndarray, x: np.ndarray, w: np.ndarray, ref: np.ndarray | None = None) -> float:
    """max |y - ref| / (|x| @ |w|.T), ref = x @ w.T in float64 unless given."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = x64 @ w64.T if ref is None else ref.astype(np.float64)
    mag = np.abs(x64) @ np.abs(w64).T + 1e-30
    return float(np.max(np.abs(y.astype(np.float64) - ref) / mag))


@pytest.mark.parametrize("cols", [1, 31, 32, 33, 200])
@pytest.mark.parametrize("with_cs", [False, True])
def test_round_trip_and_products_on_every_isa(cols, with_cs):
    rng = np.random.default_rng(cols)
    rows = 37
    u = _rows(rng, rows, cols, min(16, cols))
    rs = rng.uniform(1e-3, 1e-1, rows).astype(np.float32)
    cs = rng.uniform(0.5, 2.0, cols).astype(np.float32) if with_cs else None
    m = _core.LutMatrix.from_levels(u, rs, cs)
    assert (m.rows, m.cols, m.max_values) == (rows, cols, min(16, cols))
    np.testing.assert_array_equal(m.indices(), u)
    w = m.to_dense()
    ref_w = (rs.astype(np.float64)[:, None] * u * (1.0 if cs is None else cs.astype(np.float64))).astype(np.float32)
    np.testing.assert_array_equal(w, ref_w)
    stride = (cols + 31) // 32 * 16  # bytes of codes per row, then a 64-byte table per row
    assert rows * (stride + 64) <= m.nbytes <= rows * (stride + 64) + 64 + 4 * (rows + cols)
    lm = _core.LevelMatrix.from_levels(u, rs, cs)
    np.testing.assert_array_equal(_core.LutMatrix.from_level_matrix(lm).indices(), u)
    for shape in [(cols,), (5, cols), (2, 3, cols), (16, cols)]:
        x = rng.standard_normal(shape).astype(np.float32)
        ref = None
        for isa in ISAS:
            y = m.matmul(x, isa=isa)
            assert y.shape == (*shape[:-1], rows)
            assert _rel_err(y.reshape(-1, rows), x.reshape(-1, cols), w) < 2e-5, isa
            if ref is None:
                ref = y  # the scalar reference
            else:
                assert _rel_err(y.reshape(-1, rows), x.reshape(-1, cols), w, ref.reshape(-1, rows)) < 4e-5, isa
        out = np.empty((*shape[:-1], rows), np.float32)
        assert m.matmul(x, out=out) is not None
        np.testing.assert_array_equal(out, m.matmul(x))


def test_threads_bit_identical():
    rng = np.random.default_rng(2)
    u = _rows(rng, 600, 300, 16)
    m = _core.LutMatrix.from_levels(u, np.full(600, 0.01, np.float32))
    for batch in (1, 9):
        x = rng.standard_normal((batch, 300)).astype(np.float32)
        for isa in ISAS:
            ref = m.matmul(x, isa=isa)
            for t in (0, 2, 3):
                np.testing.assert_array_equal(m.matmul(x, isa=isa, threads=t), ref)


def test_nnpress_isa_env_forces_the_kernel():
    code = (
        "import numpy as np; from nnpress import _core\n"
        "rng = np.random.default_rng(0)\n"
        "u = rng.integers(-8, 8, (70, 129)).astype(np.int32)\n"
        "m = _core.LutMatrix.from_levels(u, np.full(70, 0.5, np.float32))\n"
        "x = rng.standard_normal((5, 129)).astype(np.float32)\n"
        "y = m.matmul(x); isa = _core.detect_isa()\n"
        "print(isa, bool((y == m.matmul(x, isa=isa)).all()), bool((y == m.matmul(x, isa='scalar')).all()))\n"
    )
    for isa in ISAS:
        out = subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "NNPRESS_ISA": isa}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        name, same_forced, same_scalar = out.stdout.split()
        assert name == isa and same_forced == "True"
        if isa == "scalar":
            assert same_scalar == "True"


def test_bad_input_raises():
    u = np.zeros((4, 40), np.int32)
    u[3, :17] = np.arange(17)
    rs = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="row 3 holds more than 16 distinct values"):
        _core.LutMatrix.from_levels(u, rs)
    with pytest.raises(ValueError, match="row 3"):
        _core.LutMatrix.from_level_matrix(_core.LevelMatrix.from_levels(u, rs))
    u[3, 16] = 0
    m = _core.LutMatrix.from_levels(u, rs)
    with pytest.raises(TypeError):
        _core.LutMatrix.from_levels(u.astype(np.float32), rs)
    with pytest.raises(ValueError):
        _core.LutMatrix.from_levels(u.astype(np.int64) + 2**40, rs)
    with pytest.raises(ValueError):
        _core.LutMatrix.from_levels(u, np.array([1, 1, 0, 1], np.float32))
    with pytest.raises(ValueError):
        m.matmul(np.zeros((2, 39), np.float32))
    with pytest.raises(TypeError):
        m.matmul(np.zeros((2, 40), np.float64))
    with pytest.raises(ValueError):
        m.matmul(np.zeros((2, 40), np.float32), isa="bogus")


def _file(tmp_path, rng):
    """lut.weight: trellis levels, 8 per row (so at most 16 reconstruction indices), channel scales;
    wide.weight: a row of 17 values; raw.weight: stored raw."""
    rows, cols = 24, 50
    lv = np.empty((rows, cols), np.int32)
    for r in range(rows):
        lv[r] = rng.choice(rng.integers(-300, 300, 8), size=cols)
    wide = lv.copy()
    wide[2, :17] = np.arange(17) * 4
    recs = []
    for name, data, method in (("lut.weight", lv, "trellis"), ("wide.weight", wide, "nearest")):
        t = TensorRecord(name, "float32", "weight", "quantized", data.shape, data=data, method=method, step=0.004)
        t.row_scale_exp = rng.integers(-6, 7, size=rows)
        t.col_scale_exp = rng.integers(-6, 7, size=cols)
        recs.append(t)
    recs.append(TensorRecord("raw.weight", "float32", "weight", "raw", (4, 5), data=np.ones((4, 5), np.float32)))
    path = str(tmp_path / "lut.nnp")
    write_nnp(path, recs)
    return path


def test_from_nnp_equals_the_decoded_weights(tmp_path):
    path = _file(tmp_path, np.random.default_rng(4))
    f = NnpFile(path)
    m = f.lut_matrix("lut.weight")
    lm = f.level_matrix("lut.weight")
    np.testing.assert_array_equal(m.indices(), lm.indices())
    assert 8 < m.max_values <= 16  # trellis u = 2k or 2k -+ 1
    w = f.read("lut.weight")
    np.testing.assert_allclose(m.to_dense(), w, rtol=3e-7, atol=0)
    x = np.random.default_rng(0).standard_normal((7, 50)).astype(np.float32)
    for isa in ISAS:
        assert _rel_err(m.matmul(x, isa=isa), x, w) < 2e-5
    assert m.nbytes == 24 * (32 + 64) + 4 * (24 + 50)  # codes (2 blocks of 16 bytes), tables, scales
    with pytest.raises(ValueError, match=r"tensor 'wide\.weight': .*row 2"):
        f.lut_matrix("wide.weight")
    with pytest.raises(ValueError, match="raw"):
        f.lut_matrix("raw.weight")


torch = pytest.importorskip("torch")


class _Fc(torch.nn.Module):
    def __init__(self, cols: int = 50, rows: int = 24) -> None:
        super().__init__()
        self.lut = torch.nn.Linear(cols, rows, bias=False)
        self.wide = torch.nn.Linear(cols, rows, bias=False)
        self.raw = torch.nn.Linear(5, 4, bias=False)


def test_convert_lut_format(tmp_path):
    import nnpress.nn as nnn

    path = _file(tmp_path, np.random.default_rng(6))
    f = NnpFile(path)
    fast = nnn.convert(_Fc(), {"lut": "lut", "wide": "levels"}, nnp=path)
    assert fast.lut.format == "lut"
    x = torch.randn(6, 50)
    with torch.no_grad():
        w = torch.from_numpy(f.read("lut.weight")).double()
        ref = (x.double() @ w.T).float()
        torch.testing.assert_close(fast.lut(x), ref, rtol=1e-5, atol=1e-5)
    plan = {p["name"]: p for p in nnn.levels_plan(fast)}
    assert plan["lut"]["bytes"] == f.lut_matrix("lut.weight").nbytes
    # auto: lut is a timed candidate only where every row holds <= 16 values
    fast = nnn.convert(_Fc(), nnp=path, batch=4, act_digits=None)
    plan = {p["name"]: p for p in nnn.levels_plan(fast)}
    assert "lut" in plan["lut"]["times_us"]
    assert "lut" not in plan["wide"]["times_us"]
    with pytest.raises(ValueError, match=r"layer 'wide'.*row 2"):
        nnn.convert(_Fc(), {"wide": "lut"}, nnp=path)
    assert nnpress.nn_levels.max_row_values(np.array([[1, 1, 2], [3, 4, 5]])) == 3
