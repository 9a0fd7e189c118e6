"""CER / CSER / dense-codebook matrices: the seed talk's golden example, round trips, kernels on every
ISA against a float64 reference, scipy interop, op counts and typed errors."""

import numpy as np
import pytest
import scipy.sparse

import nnpress
from nnpress.sparse import (
    CERMatrix,
    CodebookMatrix,
    CSERMatrix,
    available_isas,
    compress_matrix,
    csr_op_counts,
    dense_op_counts,
)

# The seed talk's 5 x 12 example (matrix M of the "Matrix Formats" slides).
TALK = np.array(
    [
        [0, 3, 0, 2, 4, 0, 0, 2, 3, 4, 0, 4],
        [4, 4, 0, 0, 0, 4, 0, 0, 4, 4, 0, 4],
        [4, 0, 3, 4, 0, 0, 0, 4, 0, 2, 0, 0],
        [0, 0, 0, 4, 4, 4, 0, 3, 4, 4, 0, 0],
        [0, 4, 4, 0, 0, 4, 0, 4, 0, 0, 0, 0],
    ],
    np.float32,
)
TALK_OMEGA = [0, 4, 3, 2]
TALK_COLI = [4, 9, 11, 1, 8, 3, 7, 0, 1, 5, 8, 9, 11, 0, 3, 7, 2, 9, 3, 4, 5, 8, 9, 7, 1, 2, 5, 7]
TALK_OMEGA_PTR = [0, 3, 5, 7, 13, 16, 17, 18, 23, 24, 28]
TALK_ROW_PTR = [0, 3, 4, 7, 9, 10]
# CSR as on the slide (the extracted text of W drops one '4'; colI and rowPtr are complete).
TALK_CSR_COLI = [1, 3, 4, 7, 8, 9, 11, 0, 1, 5, 8, 9, 11, 0, 2, 3, 7, 9, 3, 4, 5, 7, 8, 9, 1, 2, 5, 7]
TALK_CSR_ROW_PTR = [0, 7, 13, 18, 24, 28]


def test_golden_cer_arrays_storage_and_op_counts():
    m = CERMatrix.from_dense(TALK)
    assert m.values.tolist() == TALK_OMEGA
    assert m.col.tolist() == TALK_COLI
    assert m.col.dtype == np.uint16  # 12 columns <= 65536
    assert m.group_ptr.tolist() == TALK_OMEGA_PTR
    assert m.row_ptr.tolist() == TALK_ROW_PTR
    # Storage in entries: dense 60, CSR 62, CER 49.
    csr = scipy.sparse.csr_matrix(TALK)
    assert csr.indices.tolist() == TALK_CSR_COLI and csr.indptr.tolist() == TALK_CSR_ROW_PTR
    assert TALK.size == 60
    assert csr.data.size + csr.indices.size + csr.indptr.size == 62
    assert m.values.size + m.col.size + m.group_ptr.size + m.row_ptr.size == 49
    # Second row's scalar product: dense 24/12/11/1, CSR 20/6/5/1, CER 17/1/5/1.
    pick = lambda c: (c["loads"], c["multiplies"], c["adds"], c["writes"])  # noqa: E731
    assert pick(dense_op_counts(TALK, row=1)) == (24, 12, 11, 1)
    assert pick(csr_op_counts(TALK, row=1)) == (20, 6, 5, 1)
    assert pick(m.op_counts(row=1)) == (17, 1, 5, 1)
    # Energy: 18 memory accesses * 5 pJ + 1 * 3.7 + 5 * 0.9.
    assert m.op_counts(row=1)["energy_pj"] == pytest.approx(18 * 5.0 + 3.7 + 5 * 0.9)
    # 4 (a1 + a2 + a6 + a9 + a10 + a12) with a = 1..12.
    a = np.arange(1, 13, dtype=np.float32)
    assert (m @ a)[1] == 4 * (1 + 2 + 6 + 9 + 10 + 12)
    np.testing.assert_array_equal(m @ a, TALK @ a)
    # The slide's arrays, given directly, build the same matrix.
    g = CERMatrix.from_arrays(TALK.shape, TALK_OMEGA, TALK_COLI, TALK_OMEGA_PTR, TALK_ROW_PTR)
    np.testing.assert_array_equal(g.to_dense(), TALK)


def test_golden_cser_and_whole_product_counts():
    m = CSERMatrix.from_dense(TALK)
    assert m.group_value.tolist() == [1, 2, 3, 1, 1, 2, 3, 1, 2, 1]
    assert m.group_value.dtype == np.uint8
    assert m.group_ptr.tolist() == TALK_OMEGA_PTR
    c = m.op_counts()
    assert c["multiplies"] == 10 and c["writes"] == 5 and c["adds"] == 28 - 5
    d = dense_op_counts(TALK)
    assert d["multiplies"] == 60 and c["energy_pj"] < d["energy_pj"]


def test_cer_pads_groups_cser_does_not():
    w = np.array([[4, 0, 2, 0], [4, 3, 3, 0]], np.float32)  # Ω = [0, 3, 4, 2]
    cer, cser = CERMatrix.from_dense(w), CSERMatrix.from_dense(w)
    assert cer.values.tolist() == [0, 3, 4, 2]
    assert cer.group_ptr.tolist() == [0, 0, 1, 2, 4, 5]
    assert cser.group_ptr.tolist() == [0, 1, 2, 4, 5] and cser.group_value.tolist() == [2, 3, 1, 2]
    assert cer.op_counts(row=0)["multiplies"] == 2  # the empty padding group costs no multiply
    for m in (cer, cser):
        np.testing.assert_array_equal(m.to_dense(), w)


def _random(rng, rows, cols, values, density, base=0.0):
    vals = (np.arange(values) - values // 2).astype(np.float32) * np.float32(0.03125)
    w = np.full((rows, cols), base, np.float32)
    mask = rng.random((rows, cols)) < density
    w[mask] = rng.choice(vals, size=int(mask.sum()))
    return w


@pytest.mark.parametrize("isa", available_isas())
@pytest.mark.parametrize("cls", [CERMatrix, CSERMatrix, CodebookMatrix])
def test_products_on_every_isa_match_float64(isa, cls):
    rng = np.random.default_rng(7)
    for rows, cols, values, density in [(31, 200, 16, 0.3), (64, 1000, 9, 0.05), (8, 33, 16, 1.0)]:
        w = _random(rng, rows, cols, values, density)
        m = cls.from_dense(w)
        np.testing.assert_array_equal(m.to_dense(), w)
        for batch in (None, 1, 5, 32, 40):
            x = rng.standard_normal(cols if batch is None else (cols, batch)).astype(np.float32)
            ref = w.astype(np.float64) @ x.astype(np.float64)
            bound = np.abs(w).astype(np.float64) @ np.abs(x).astype(np.float64)
            for threads in (1, 2):
                y = m.matmul(x, isa=isa, threads=threads)
                assert y.shape == ref.shape and y.dtype == np.float32
                assert np.all(np.abs(y - ref) <= 1e-5 * bound + 1e-6)


def test_kernel_plan_only_for_few_values_and_short_groups():
    rng = np.random.default_rng(11)
    short = _random(rng, 64, 1000, 9, 0.05)  # ~6 entries per group
    long_ = _random(rng, 64, 1000, 9, 0.5)  # ~60
    many = _random(rng, 64, 1000, 300, 0.05)  # 300 values
    for cls in (CERMatrix, CSERMatrix):
        m = cls.from_dense(short)
        assert m.plan_nbytes >= m.nnz // 8 and cls.from_dense(long_).plan_nbytes == 0
        assert cls.from_dense(many).plan_nbytes == 0
        gv = m.group_value
        arrays = (
            m.values.nbytes + m.col.nbytes + m.group_ptr.nbytes + m.row_ptr.nbytes + (0 if gv is None else gv.nbytes)
        )
        assert m.nbytes == arrays  # the plan is not format storage
    # CSER without empty groups reuses its value indices: the start bits, row starts and (<= 16 values) one value
    # index per entry
    m = CSERMatrix.from_dense(short)
    assert m.plan_nbytes == m.nnz // 8 + 8 + 4 * (m.shape[0] + 1) + m.nnz + 8
    m = CSERMatrix.from_dense(_random(rng, 64, 1000, 40, 0.05))  # > 16 values: no entry values
    assert m.plan_nbytes == m.nnz // 8 + 8 + 4 * (m.shape[0] + 1)


@pytest.mark.parametrize("isa", available_isas())
@pytest.mark.parametrize("cls", [CERMatrix, CSERMatrix])
def test_short_group_products_on_edge_rows(isa, cls):
    """Plan matrices with <= 16 values (the AVX2 row-wise kernel): rows of 0, 1, 7, 8, 9, 16, 17 entries and one
    longer than any block, a matrix of one entry, one whose entries all hold one value; batch 1, 1-3 threads."""
    rng = np.random.default_rng(21)
    w = np.zeros((120, 3000), np.float32)
    levels = (np.arange(1, 16) - 8).astype(np.float32) * 0.037 + 0.01
    for r in range(w.shape[0]):
        n = 2500 if r == 60 else (0, 1, 7, 8, 9, 16, 17, 3)[r % 8]
        w[r, rng.choice(w.shape[1], n, replace=False)] = rng.choice(levels, n)
    one = np.zeros((9, 40), np.float32)
    one[8, 39] = -1.5
    same = np.where(w != 0, np.float32(0.3), np.float32(0))
    same[np.arange(same.shape[0]) % 8 == 6] = 0  # (one group per row: short enough on average for the plan)
    same[60] = 0
    for mat in (w, one, same):
        m = cls.from_dense(mat)
        assert m.plan_nbytes >= m.nnz
        x = rng.standard_normal(mat.shape[1]).astype(np.float32)
        ref = mat.astype(np.float64) @ x.astype(np.float64)
        bound = np.abs(mat).astype(np.float64) @ np.abs(x).astype(np.float64)
        for threads in (1, 2, 3):
            y = m.matmul(x, isa=isa, threads=threads)
            assert np.all(np.abs(y - ref) <= 1e-5 * bound + 1e-6)


def test_isa_results_agree_and_threads_are_deterministic():
    rng = np.random.default_rng(3)
    w = _random(rng, 300, 700, 16, 0.2)
    x = rng.standard_normal(700).astype(np.float32)
    m = CSERMatrix.from_dense(w)
    ref = m.matmul(x, isa="scalar")
    for isa in available_isas():
        y1 = m.matmul(x, isa=isa, threads=1)
        np.testing.assert_array_equal(y1, m.matmul(x, isa=isa, threads=2))
        np.testing.assert_allclose(y1, ref, rtol=1e-4, atol=1e-4)


def test_from_levels_equals_dequantized_float32():
    rng = np.random.default_rng(1)
    levels = rng.integers(-7, 8, size=(40, 90)).astype(np.int32)
    levels[rng.random(levels.shape) < 0.6] = 0
    step = 0.0123
    w = levels.astype(np.float32) * np.float32(step)
    for cls in (CERMatrix, CSERMatrix, CodebookMatrix):
        np.testing.assert_array_equal(cls.from_levels(levels, step).to_dense(), w)


def test_nonzero_implicit_value_and_wide_columns():
    rng = np.random.default_rng(2)
    w = _random(rng, 20, 50, 4, 0.3, base=0.5)
    m = CSERMatrix.from_dense(w)
    assert m.values[0] == 0.5
    x = rng.standard_normal(50).astype(np.float32)
    np.testing.assert_allclose(m @ x, w.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)
    assert m.to_scipy().nnz == np.count_nonzero(w)
    wide = np.zeros((2, 70000), np.float32)
    wide[0, 69999] = 1.5
    wide[1, 3] = -2.0
    mw = CERMatrix.from_dense(wide)
    assert mw.col.dtype == np.uint32
    np.testing.assert_array_equal(mw @ np.ones(70000, np.float32), [1.5, -2.0])


def test_scipy_round_trip_and_storage_vs_csr():
    rng = np.random.default_rng(4)
    w = _random(rng, 256, 512, 16, 0.05)
    for cls in (CERMatrix, CSERMatrix):
        m = cls.from_dense(w)
        s = m.to_scipy()
        assert isinstance(s, scipy.sparse.csr_matrix) and s.dtype == np.float32
        np.testing.assert_array_equal(s.toarray(), w)
        np.testing.assert_array_equal(cls.from_scipy(scipy.sparse.csr_matrix(w)).to_dense(), w)
    # The storage target (4096 columns, 16 values, densities 0.01-0.5): CSER <= 0.5x CSR bytes.
    for density in (0.01, 0.1, 0.5):
        w = _random(rng, 64, 4096, 16, density)
        csr = scipy.sparse.csr_matrix(w)
        csr_bytes = csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
        assert CSERMatrix.from_dense(w).nbytes <= 0.5 * csr_bytes


def test_compress_matrix_auto_and_forced():
    rng = np.random.default_rng(5)
    dense16 = _random(rng, 64, 256, 16, 0.5)
    sparse16 = _random(rng, 64, 256, 16, 0.01)
    assert compress_matrix(dense16).format == "codebook"
    assert compress_matrix(sparse16).format == "cser"
    assert compress_matrix(dense16, batch=32).format == "cser"
    assert compress_matrix(dense16, format="cer").format == "cer"
    lv = np.round(dense16 / 0.03125).astype(np.int32)
    np.testing.assert_array_equal(compress_matrix(levels=lv, step=0.03125).to_dense(), dense16)
    from nnpress.sparse import choose_format

    assert choose_format((4096, 4096), 4096 * 2048, 256, batch=1) == "cser"
    assert choose_format((4096, 4096), 4096 * 2048, 256, batch=1, allow_dense=True) == "dense"
    assert choose_format((4096, 4096), 4096 * 4096, 16, batch=1, allow_dense=True) == "codebook"
    # Batch 1, <= 16 values: the codebook from a density that falls with the row length (kernels.h).
    assert choose_format((4096, 4096), 4096 * 410, 16) == "codebook"  # 0.1
    assert choose_format((4096, 4096), 4096 * 287, 16) == "cser"  # 0.07
    assert choose_format((384, 1536), 384 * 92, 16) == "cser"  # 0.06
    assert choose_format((384, 1536), 384 * 123, 16) == "codebook"  # 0.08
    assert choose_format((384, 384), 384 * 19, 16) == "codebook"  # 0.05
    assert choose_format((384, 384), 384 * 4, 16) == "cser"  # 0.01
    assert choose_format((4096, 4096), 4096 * 4096, 16, batch=32, allow_dense=True) == "dense"
    assert choose_format((4096, 4096), 4096 * 410, 16, batch=32, allow_dense=True) == "cser"
    assert choose_format((4096, 4096), 4096 * 2048, 256, batch=32, allow_dense=True) == "cser"
    assert choose_format((4096, 4096), 4096 * 4000, 256, batch=32, allow_dense=True) == "dense"
    assert choose_format((4096, 4096), 4096 * 2048, 16, batch=32, allow_dense=True) == "cser"
    with pytest.raises(ValueError):
        compress_matrix(dense16, format="csr")
    with pytest.raises(ValueError):
        compress_matrix()


def test_corrupt_arrays_raise_format_error():
    good = dict(shape=TALK.shape, values=TALK_OMEGA, col=TALK_COLI, omega_ptr=TALK_OMEGA_PTR, row_ptr=TALK_ROW_PTR)
    bad_cases = [
        dict(col=TALK_COLI[:-1] + [12]),  # column out of range
        dict(col=[9] + TALK_COLI[1:]),  # column 9 twice in row 0
        dict(omega_ptr=TALK_OMEGA_PTR[:-1] + [29]),  # points past colI
        dict(omega_ptr=[0, 5, 3] + TALK_OMEGA_PTR[3:]),  # decreasing
        dict(row_ptr=[0, 3, 4, 7, 9, 11]),  # more groups than exist
        dict(row_ptr=TALK_ROW_PTR[:-1]),  # too short
        dict(values=[0, 4, 3]),  # row 0 has 3 groups, Ω only 2 explicit values
        dict(values=[0, 4, np.nan, 2]),
        dict(col=[-1] + TALK_COLI[1:]),
    ]
    for change in bad_cases:
        with pytest.raises(nnpress.FormatError):
            CERMatrix.from_arrays(**{**good, **change})
    with pytest.raises(nnpress.FormatError):
        CSERMatrix.from_arrays(
            TALK.shape, TALK_OMEGA, TALK_COLI, TALK_OMEGA_PTR, TALK_ROW_PTR, [1, 2, 4, 1, 1, 2, 3, 1, 2, 1]
        )
    with pytest.raises(nnpress.FormatError):
        CodebookMatrix.from_arrays((2, 40), [0.0, 1.0], np.zeros(63, np.uint8))
    assert issubclass(nnpress.FormatError, ValueError)


def test_operands_of_any_layout_and_dtype_give_the_float32_product():
    # The binding takes only C-contiguous float32 (the wrappers' one-call fast path); everything else is
    # converted by the wrapper after the binding's TypeError, with the same result.
    rng = np.random.default_rng(3)
    w = rng.integers(-3, 4, size=(7, 12)).astype(np.float32) * 0.5
    xs = rng.standard_normal((12, 6)).astype(np.float32)
    for cls in (CERMatrix, CSERMatrix, CodebookMatrix):
        m = cls.from_dense(w)
        want1, want2 = m @ xs[:, 0].copy(), m @ xs
        np.testing.assert_allclose(want1, w.astype(np.float64) @ xs[:, 0], rtol=1e-5, atol=1e-5)
        for x in (xs[:, 0], xs[:, 0].astype(np.float64), list(map(float, xs[:, 0]))):  # strided, float64, list
            assert np.array_equal(m @ x, want1)
            assert np.array_equal(m.matmul(x, isa=None, threads=1), want1)
        for x in (np.asfortranarray(xs), xs.astype(np.float64), xs[:, ::-1][:, ::-1]):
            assert np.array_equal(m @ x, want2)
        with pytest.raises(ValueError):
            m.matmul(xs[:, 0], threads=-1)
        with pytest.raises(ValueError):
            m.matmul(xs[:, 0], threads=2**40)
        with pytest.raises(TypeError):
            m.matmul(xs[:, 0], isa=5)
        with pytest.raises(TypeError):
            m @ m
        assert np.array_equal(m.matmul(xs[:, 0], threads=np.int64(2)), want1)


def test_bad_arguments_raise_value_or_type_error():
    m = CSERMatrix.from_dense(TALK)
    with pytest.raises(ValueError):
        m @ np.ones(11, np.float32)
    with pytest.raises(ValueError):
        m @ np.ones((12, 2, 2), np.float32)
    with pytest.raises(TypeError):
        m @ np.array(["a"] * 12)
    with pytest.raises(ValueError):
        m.matmul(np.ones(12), isa="sse9")
    with pytest.raises(ValueError):
        CSERMatrix.from_dense(np.ones(3))
    with pytest.raises(ValueError):
        CSERMatrix.from_dense(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError):
        CodebookMatrix.from_dense(np.arange(17, dtype=np.float32)[None, :])
    with pytest.raises(ValueError):
        CSERMatrix.from_dense(np.arange(10, dtype=np.float32)[None, :], max_values=5)
    with pytest.raises(TypeError):
        CSERMatrix.from_levels(np.ones((2, 2)), 0.1)
    with pytest.raises(ValueError):
        CSERMatrix.from_levels(np.ones((2, 2), np.int32), 0.0)
    with pytest.raises(ValueError):
        m.op_counts(row=5)
    with pytest.raises(ValueError):
        m.op_counts(memory="l7")
    with pytest.raises(TypeError):
        CSERMatrix(None)


def test_empty_and_zero_matrices():
    z = np.zeros((3, 4), np.float32)
    for cls in (CERMatrix, CSERMatrix, CodebookMatrix):
        m = cls.from_dense(z)
        np.testing.assert_array_equal(m @ np.ones(4, np.float32), np.zeros(3))
        np.testing.assert_array_equal(m @ np.ones((4, 0), np.float32), np.zeros((3, 0)))
    e = CSERMatrix.from_dense(np.zeros((0, 5), np.float32))
    assert (e @ np.ones(5, np.float32)).shape == (0,)


def test_nnpress_isa_environment_caps_the_automatic_choice():
    import os
    import subprocess
    import sys

    code = "import nnpress._core as c; print(c.detect_isa())"
    for name in ["scalar"] + [i for i in ("avx2", "avx512") if i in available_isas()]:
        env = dict(os.environ, NNPRESS_ISA=name)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == name
    assert nnpress._core.detect_isa() == available_isas()[-1] or "NNPRESS_ISA" in os.environ
