"""Integer-level matrices (``nnpress._core.LevelMatrix``, ``NnpFile.level_matrix``): products on the
exact integer reconstruction indices of a ``.nnp`` tensor equal torch's on the decompressed weights up
to float rounding, for every quantizer, with and without channel scales, for every ISA this CPU runs;
entries beyond int8; bit-identical results for every thread count; bad input raises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnpress
from nnpress import _core
from nnpress.config import CodecConfig, TensorPlan
from nnpress.container import NnpFile

ISAS = [i for i in ("scalar", "neon", "avx2", "avx512") if _core.isa_supported(i)]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 67),
        torch.nn.ReLU(),
        torch.nn.Linear(67, 10),
    )
    with torch.no_grad():  # a heavy-tailed row: some indices leave int8 at this step
        m[3].weight[5, :20] *= 40.0
    return m


def _rel_err(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> float:
    """max |y - x @ w.T| / (|x| @ |w|.T), the reference in float64."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = x64 @ w64.T
    mag = np.abs(x64) @ np.abs(w64).T + 1e-30
    return float(np.max(np.abs(y.astype(np.float64) - ref) / mag))


@pytest.mark.parametrize("method", ["trellis", "rdoq", "nearest"])
@pytest.mark.parametrize("scales", [False, True])
def test_products_equal_torch_on_decompressed_weights(tmp_path, method, scales):
    model = _model()
    plan = {}
    rng = np.random.default_rng(1)
    if scales:
        plan = {
            "3.weight": TensorPlan(
                rel_step=1 / 22,
                method=method,
                row_scale_exp=tuple(int(e) for e in rng.integers(-12, 12, 67)),
                col_scale_exp=tuple(int(e) for e in rng.integers(-8, 8, 288)),
            ),
            "0.weight": TensorPlan(rel_step=1 / 22, method=method, row_scale_exp=tuple(range(-4, 4))),
        }
    path = tmp_path / "m.nnp"
    nnpress.compress(model, path, CodecConfig(method=method, plan=plan))
    f = NnpFile(path)
    state = nnpress.decompress(path)
    names = ("0.weight", "3.weight", "5.weight")
    if scales:
        assert f.entry("3.weight")["channel_scales"] == "rows+cols"
        assert f.entry("0.weight")["channel_scales"] == "rows"
    for name in names:
        assert f.entry(name)["method"] == method
        lm = f.level_matrix(name)
        w = state[name].reshape(state[name].shape[0], -1)
        assert (lm.rows, lm.cols) == tuple(w.shape)
        # the matrix holds the decoded weights (row scales rounded to float32 once)
        np.testing.assert_allclose(lm.to_dense(), w.numpy(), rtol=3e-7, atol=0)
        for batch in (1, 5, 16):
            x = torch.randn(batch, lm.cols, generator=torch.Generator().manual_seed(batch))
            want = torch.nn.functional.linear(x, w).numpy()
            for isa in ISAS:
                y = lm.matmul(x.numpy(), isa=isa)
                assert y.shape == (batch, lm.rows) and y.dtype == np.float32
                assert _rel_err(y, x.numpy(), w.numpy()) < 2e-5, (name, batch, isa)
                np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # trellis indices are the state machine's u (odd values appear), not the coded levels
    u = f.level_matrix("3.weight").indices()
    levels = f.read_levels("3.weight").reshape(u.shape)
    if method == "trellis":
        assert np.any(u % 2 != 0) and not np.array_equal(u, levels)
    else:
        assert np.array_equal(u, levels)
    # the heavy-tailed row leaves int8: exact entries in the list (or int16 storage)
    lm = f.level_matrix("3.weight")
    assert np.abs(u).max() > 127
    assert lm.outliers > 0 or lm.index_bits == 16


def test_memory_and_1d_and_out(tmp_path):
    rng = np.random.default_rng(2)
    u = rng.integers(-60, 61, (256, 300)).astype(np.int32)
    u[3, 7] = 5000
    rs = rng.uniform(0.01, 0.02, 256).astype(np.float32)
    lm = _core.LevelMatrix.from_levels(u, rs)
    assert lm.index_bits == 8 and lm.outliers == 1
    assert lm.nbytes < 0.3 * 4 * u.size
    assert np.array_equal(lm.indices(), u)
    assert lm.col_scale is None and np.array_equal(lm.row_scale, rs)
    w = lm.to_dense()
    x = rng.standard_normal(300).astype(np.float32)
    y1 = lm.matmul(x)
    assert y1.shape == (256,)
    assert _rel_err(y1[None, :], x[None, :], w) < 2e-5
    out = np.empty((2, 256), np.float32)
    xs = np.stack([x, -x])
    r = lm.matmul(xs, out=out)
    assert r is out or np.shares_memory(r, out)
    assert np.array_equal(out[0], y1) and np.array_equal(out[1], -y1)
    # leading dimensions are batch dimensions: [batch, tokens, cols] -> [batch, tokens, rows]
    x3 = rng.standard_normal((2, 3, 300)).astype(np.float32)
    y3 = lm.matmul(x3)
    assert y3.shape == (2, 3, 256)
    assert np.array_equal(y3.reshape(6, 256), lm.matmul(x3.reshape(6, 300)))
    assert lm.matmul(np.zeros((0, 300), np.float32)).shape == (0, 256)
    # other integer dtypes are accepted when their values fit int32
    lm64 = _core.LevelMatrix.from_levels(u.astype(np.int64), rs.astype(np.float64))
    assert np.array_equal(lm64.indices(), u)
    assert "LevelMatrix 256x300" in repr(lm)


def test_threads_bit_identical():
    rng = np.random.default_rng(3)
    u = rng.integers(-127, 128, (700, 333)).astype(np.int32)
    lm = _core.LevelMatrix.from_levels(u, np.full(700, 0.01, np.float32), np.linspace(0.5, 2, 333, dtype=np.float32))
    x = rng.standard_normal((9, 333)).astype(np.float32)
    for isa in ISAS:
        ref = lm.matmul(x, isa=isa, threads=1)
        for t in (0, 2, 5):
            assert np.array_equal(lm.matmul(x, isa=isa, threads=t), ref)


def test_int16_activations():
    rng = np.random.default_rng(4)
    u = rng.integers(-127, 128, (96, 384)).astype(np.int32)
    u[3, :5] = [200, -300, 1000, -128, 5000]  # list entries (int8 dense part)
    u[95, 383] = -(1 << 20)
    rs = rng.uniform(0.001, 0.01, 96).astype(np.float32)
    lm = _core.LevelMatrix.from_levels(u, rs)
    assert lm.index_bits == 8 and lm.outliers == 6
    x = rng.standard_normal((21, 384)).astype(np.float32)  # list entries: 16 tokens per pass, then 5
    x[4] = 0.0  # a zero row: scale 0, results 0
    ref = lm.matmul(x, isa="scalar", activations="int16")
    assert not ref[4].any()
    assert np.array_equal(ref, _int16_by_contract(u, rs, x, 32767))  # int8 dense part: L = 32767
    for isa in ISAS:  # exact integer sums: the same bits on every ISA
        assert np.array_equal(lm.matmul(x, isa=isa, activations="int16"), ref)
    w = lm.to_dense().astype(np.float64)
    exact = x.astype(np.float64) @ w.T
    bound = np.abs(w).sum(1)[None, :] * (np.abs(x).max(1, keepdims=True) / 32767 / 2) * 1.001 + 1e-6
    assert np.all(np.abs(ref - exact) <= bound)
    assert not np.array_equal(ref, lm.matmul(x))  # the inputs really were rounded
    with pytest.raises(ValueError, match="activations"):
        lm.matmul(x, activations="int8")


@pytest.mark.parametrize("activations", ["float32", "int16"])
def test_bias_is_one_float_add(activations):
    """matmul(x, bias=b) is matmul(x) + b bit for bit (the bias added to each rounded result), on every
    ISA, for int8 (with list entries) and int16 dense parts; a bias of the wrong shape or type raises."""
    rng = np.random.default_rng(6)
    for wide in (False, True):
        u = rng.integers(-127, 128, (50, 90)).astype(np.int32)
        if wide:
            u[rng.random(u.shape) < 0.3] = 1500
        u[7, 3] = 70000
        rs = rng.uniform(0.001, 0.01, 50).astype(np.float32)
        lm = _core.LevelMatrix.from_levels(u, rs)
        assert lm.index_bits == (16 if wide else 8) and lm.outliers >= 1
        b = rng.standard_normal(50).astype(np.float32)
        x = rng.standard_normal((2, 9, 90)).astype(np.float32)
        for isa in ISAS:
            plain = lm.matmul(x, isa=isa, activations=activations)
            assert np.array_equal(lm.matmul(x, isa=isa, activations=activations, bias=b), plain + b)
            out = np.empty_like(plain)
            lm.matmul(x, out, isa, 2, activations, b)
            assert np.array_equal(out, plain + b)
    with pytest.raises(ValueError, match="bias"):
        lm.matmul(x, bias=b[:49])
    with pytest.raises(ValueError, match="bias"):
        lm.matmul(x, bias=np.ones((50, 1), np.float32))
    with pytest.raises(TypeError, match="bias"):
        lm.matmul(x, bias=b.astype(np.float64))
    with pytest.raises(TypeError, match="bias"):
        lm.matmul(x, bias=[0.0] * 50)
    out = np.zeros((2, 9, 50), np.float32)
    with pytest.raises(ValueError, match="overlap bias"):  # the bias would be overwritten before it is added
        lm.matmul(x, out, None, 1, activations, out[1, 2])


def _int16_by_contract(u: np.ndarray, rs: np.ndarray, x: np.ndarray, L: int) -> np.ndarray:
    """The "int16" product as nnpress/kernels/levels.h states it (no column scales): each row of x rounded
    half away from zero to [-L, L] on the scale max|x| / L, exact integer sums, one float64 multiply."""
    s = np.abs(x).max(1).astype(np.float64) / L
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero row: scale 0, rounded inputs 0
        v = np.nan_to_num(x.astype(np.float64) * (1.0 / s)[:, None], nan=0.0)
    q = np.clip(np.trunc(v + np.copysign(0.5, v)), -L, L).astype(np.int64)
    S = q @ u.astype(np.int64).T
    return ((rs.astype(np.float64)[None, :] * s[:, None]) * S.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("M", [300, 2049])
def test_int16_activations_int16_storage(M):
    """int16-stored matrices (many |u| > 127, a few beyond int16 in the list) run the "int16" mode with
    L = min(32767, (2^31 - 1) // (512 * M)): the contract's bits on every ISA, within its rounding bound."""
    rng = np.random.default_rng(5)
    u = rng.integers(-127, 128, (64, 700)).astype(np.int32)
    wide = rng.random(u.shape) < 0.3
    u[wide] = rng.integers(-M, M + 1, int(wide.sum()))
    u[:, 0] = M  # 64 entries at M: more than 1/1024 of the matrix, so the int16 range holds M itself
    u[1, :3] = [40000, -(1 << 30), 99999]
    rs = rng.uniform(0.001, 0.01, 64).astype(np.float32)
    lm = _core.LevelMatrix.from_levels(u, rs)
    assert lm.index_bits == 16 and lm.outliers == 3
    L = min(32767, (2**31 - 1) // (512 * M))
    x = rng.standard_normal((14, 700)).astype(np.float32)
    want = _int16_by_contract(u, rs, x, L)
    for isa in ISAS:
        assert np.array_equal(lm.matmul(x, isa=isa, activations="int16"), want)
        assert np.array_equal(lm.matmul(x, isa=isa, threads=0, activations="int16"), want)
    w = lm.to_dense().astype(np.float64)
    exact = x.astype(np.float64) @ w.T
    bound = np.abs(w).sum(1)[None, :] * (np.abs(x).max(1, keepdims=True) / L / 2) * 1.001 + 1e-6
    assert np.all(np.abs(want - exact) <= bound)
    assert not np.array_equal(want, lm.matmul(x))  # the inputs really were rounded
    # beyond M = 2049, L would fall below 2047: float32 activations
    u[:, 0] = 2050
    lm = _core.LevelMatrix.from_levels(u, rs)
    assert np.array_equal(lm.matmul(x, activations="int16"), lm.matmul(x))


def test_int16_storage_leaves_few_large_entries_to_the_list():
    """An int16 dense part holds |u| <= T, T the first of 255, 511, 1023, 2047 with at most 1/1024 of the
    entries beyond it (else 32767): a few large entries go to the exact list, so the "int16" mode keeps
    a wide input range (and runs at all past 2049), with the same bits on every ISA."""
    rng = np.random.default_rng(8)
    u = rng.integers(-400, 401, (96, 384)).astype(np.int32)  # ~2/3 beyond int8, none beyond 511
    lm = _core.LevelMatrix.from_levels(u, np.full(96, 0.01, np.float32))
    assert lm.index_bits == 16 and lm.outliers == 0  # T = 511 (> 1/1024 of the entries beyond 255)
    big = [(3, 5, 2077), (40, 100, -7785), (95, 383, 1200)]  # 3 of 36864 < 1/1024: listed
    for r, c, v in big:
        u[r, c] = v
    rs = rng.uniform(0.001, 0.01, 96).astype(np.float32)
    lm = _core.LevelMatrix.from_levels(u, rs)
    assert lm.index_bits == 16 and lm.outliers == 3
    assert np.array_equal(lm.indices(), u)
    L = min(32767, (2**31 - 1) // (512 * int(np.abs(u[np.abs(u) <= 511]).max())))
    x = rng.standard_normal((14, 384)).astype(np.float32)
    want = _int16_by_contract(u, rs, x, L)
    for isa in ISAS:
        assert np.array_equal(lm.matmul(x, isa=isa, activations="int16"), want)
    u[:, 7] = 3000  # 96 entries beyond 2047: more than 1/1024, so the dense part holds them (M 7785)
    lm = _core.LevelMatrix.from_levels(u, rs)
    assert lm.outliers == 0 and np.array_equal(lm.matmul(x, activations="int16"), lm.matmul(x))


def test_bad_input_raises(tmp_path):
    u = np.arange(12, dtype=np.int32).reshape(3, 4)
    rs = np.ones(3, np.float32)
    with pytest.raises(TypeError):
        _core.LevelMatrix.from_levels(u.astype(np.float32), rs)
    with pytest.raises(ValueError):
        _core.LevelMatrix.from_levels(u.reshape(-1), rs)
    with pytest.raises(ValueError, match="row_scale"):
        _core.LevelMatrix.from_levels(u, np.array([1, 0, 1], np.float32))
    with pytest.raises(ValueError, match="row_scale"):
        _core.LevelMatrix.from_levels(u, np.array([1, np.nan, 1], np.float32))
    with pytest.raises(ValueError, match="row_scale"):
        _core.LevelMatrix.from_levels(u, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="col_scale"):
        _core.LevelMatrix.from_levels(u, rs, np.array([1, 1, -1, 1], np.float32))
    with pytest.raises(ValueError, match="int32"):
        _core.LevelMatrix.from_levels(u.astype(np.int64) + 2**40, rs)
    with pytest.raises(ValueError):
        _core.LevelMatrix.from_levels(np.zeros((0, 4), np.int32), np.ones(0, np.float32))
    lm = _core.LevelMatrix.from_levels(u, rs)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError):
        lm.matmul(x.astype(np.float64))
    with pytest.raises(ValueError, match="columns"):
        lm.matmul(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        lm.matmul(np.ones((4, 2), np.float32).T)
    with pytest.raises(ValueError, match="shape"):
        lm.matmul(x, out=np.empty((2, 4), np.float32))
    buf = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        lm.matmul(buf.reshape(2, 4), out=buf[:6].reshape(2, 3))
    with pytest.raises(ValueError, match="unknown ISA"):
        lm.matmul(x, isa="sse")
    for isa in ("scalar", "neon", "avx2", "avx512"):
        if not _core.isa_supported(isa):
            with pytest.raises(ValueError, match="not available"):
                lm.matmul(x, isa=isa)
    # from a file: raw tensors and unknown names
    sd = {"w": torch.randn(8, 5), "b": torch.randn(8)}
    path = tmp_path / "s.nnp"
    nnpress.compress(sd, path, CodecConfig(lossless_roles=("bias", "buffer", "other")))
    f = NnpFile(path)
    assert f.entry("b")["storage"] == "raw"
    with pytest.raises(ValueError, match="not quantized"):
        f.level_matrix("b")
    with pytest.raises(KeyError):
        f.level_matrix("nope")
    with pytest.raises(ValueError):
        f.level_matrix("w", threads=0)
    lm = f.level_matrix("w", threads=2)
    np.testing.assert_allclose(lm.to_dense(), nnpress.decompress(path)["w"].numpy(), rtol=3e-7)
