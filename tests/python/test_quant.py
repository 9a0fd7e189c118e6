"""nnpress.quantize / nnpress.dequantize: nearest, RDOQ and trellis against their contracts."""

import numpy as np
import pytest

import nnpress
from nnpress.quant import rate_bits

METHODS = ["nearest", "rdoq", "trellis"]


def laplace(shape, scale=0.02, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).laplace(0.0, scale, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0), (13, 17), (4, 5, 6)])
def test_nearest_equals_rint(dtype, shape):
    w = laplace(shape, dtype=dtype)
    step = 0.0037
    q = nnpress.quantize(w, step)
    assert q.dtype == np.int32 and q.shape == w.shape
    np.testing.assert_array_equal(q, np.rint(w.astype(np.float64) / step).astype(np.int32))
    w_hat = nnpress.dequantize(q, step)
    assert w_hat.dtype == np.float32 and w_hat.shape == w.shape
    np.testing.assert_array_equal(w_hat, (q.astype(np.float64) * step).astype(np.float32))


def test_nearest_ties_to_even():
    w = np.array([0.5, 1.5, 2.5, -0.5, -1.5], dtype=np.float64)
    np.testing.assert_array_equal(nnpress.quantize(w, 1.0), [0, 2, 2, 0, -2])
    np.testing.assert_array_equal(nnpress.quantize(w, 1.0, method="rdoq"), [0, 2, 2, 0, -2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rdoq_lam0_equals_nearest(dtype):
    w = laplace((300, 400), seed=1, dtype=dtype)
    importance = np.random.default_rng(2).uniform(0.01, 5.0, size=w.shape)
    q = nnpress.quantize(w, 0.011, lam=0.0, importance=importance, method="rdoq")
    np.testing.assert_array_equal(q, nnpress.quantize(w, 0.011))


@pytest.mark.parametrize("method", ["rdoq", "trellis"])
def test_lambda_lowers_bits_raises_distortion(method):
    w = laplace((200, 500), seed=3)
    step = 0.01
    bits, dist = [], []
    for c in [0.0, 0.05, 0.2, 0.8, 3.0]:
        q = nnpress.quantize(w, step, lam=c * step**2, method=method)
        bits.append(nnpress.estimate_bits(q))
        dist.append(float(np.sum((w - nnpress.dequantize(q, step, method)).astype(np.float64) ** 2)))
    assert all(b1 < b0 for b0, b1 in zip(bits, bits[1:])), bits
    assert all(d1 > d0 for d0, d1 in zip(dist, dist[1:])), dist


@pytest.mark.parametrize("method", ["rdoq", "trellis"])
def test_zero_importance_goes_to_cheapest(method):
    w = laplace((50, 400), seed=4)
    step = 0.01
    q = nnpress.quantize(w, step, lam=0.1 * step**2, importance=0.0, method=method)
    assert not q.any()
    # Zero importance on a third of the weights: those cost (almost) nothing, the rest are kept.
    f = np.ones(w.shape)
    f[:, ::3] = 0.0
    q = nnpress.quantize(w, step, lam=0.1 * step**2, importance=f, method=method)
    if method == "rdoq":
        assert np.mean(q[:, ::3] == 0) > 0.9
    else:
        # The trellis may spend a cheap +-1 on a free weight to reach a better state for its
        # neighbours (the cheapest path, not the cheapest level); never more.
        assert np.mean(q[:, ::3] == 0) > 0.5
        assert np.mean(np.abs(q[:, ::3]) <= 1) > 0.99
    assert np.mean(q[:, 1::3] == 0) < 0.7
    q_all = nnpress.quantize(w, step, lam=0.1 * step**2, method=method)
    assert nnpress.estimate_bits(q) < 0.9 * nnpress.estimate_bits(q_all)


def test_importance_broadcasts_and_weights():
    w = laplace((64, 256), seed=5)
    step = 0.01
    per_row = np.linspace(0.0, 4.0, 64)[:, None]
    q = nnpress.quantize(w, step, lam=0.3 * step**2, importance=per_row, method="rdoq")
    err = np.abs(w - nnpress.dequantize(q, step)).mean(axis=1)
    assert err[:8].mean() > 2 * err[-8:].mean()  # unimportant rows absorb more error
    q2 = nnpress.quantize(w, step, lam=0.3 * step**2, importance=np.broadcast_to(per_row, w.shape), method="rdoq")
    np.testing.assert_array_equal(q, q2)


@pytest.mark.parametrize("method", METHODS)
def test_reconstruction_is_what_the_search_evaluated(method):
    w = laplace((40, 333), seed=6, dtype=np.float64)
    f = np.random.default_rng(7).uniform(0.1, 2.0, size=w.shape).astype(np.float32)
    step = 0.008
    q, w_hat, info = nnpress.quantize_info(w, step, lam=0.2 * step**2, importance=f, method=method)
    deq = nnpress.dequantize(q, step, method)
    assert deq.tobytes() == w_hat.tobytes()
    q2, w_hat2 = nnpress.quantize(w, step, lam=0.2 * step**2, importance=f, method=method, return_reconstruction=True)
    np.testing.assert_array_equal(q, q2)
    assert w_hat2.tobytes() == w_hat.tobytes()
    # Weighted distortion reported by the search, from the double reconstruction.
    deq64 = q.astype(np.float64) * step if method != "trellis" else None
    if deq64 is not None:
        np.testing.assert_allclose(info["distortion"], np.sum(f * (w - deq64) ** 2), rtol=1e-9)
    if method != "nearest":
        # The rate the search priced is the coder's own estimate for those params.
        assert info["rate_bits"] == rate_bits(q, info["unary_len"], info["eg_order"])
        np.testing.assert_array_equal(nnpress.decode_levels(nnpress.encode_levels(q)), q)


@pytest.mark.parametrize("method", ["rdoq", "trellis"])
@pytest.mark.parametrize("step", [0.004, 0.02])
def test_priced_params_are_the_encoders(method, step):
    # quantize re-picks the level params the way the encoder does: the priced rate is the
    # encoder's own estimate for the stream it will write.
    w = laplace((64, 700), seed=12)
    q, _, info = nnpress.quantize_info(w, step, lam=0.1 * step**2, method=method)
    hdr = nnpress.level_stream_info(nnpress.encode_levels(q))
    assert (hdr["unary_len"], hdr["eg_order"]) == (info["unary_len"], info["eg_order"])
    assert info["rate_bits"] == nnpress.estimate_bits(q)


def test_trellis_dequantize_state_machine():
    # Hand-worked: states 0 -> 2 -> 3 -> 6 -> 3; Q0 = even multiples, Q1 = odd multiples.
    q = np.array([1, -1, 2, 0, -1], dtype=np.int32)
    np.testing.assert_array_equal(nnpress.dequantize(q, 0.5, "trellis"), np.array([2, -2, 3, 0, -1]) * 0.5)
    # Each row restarts at state 0.
    rows = np.array([[1, 1, 1], [1, 1, 1]], dtype=np.int32)
    np.testing.assert_array_equal(nnpress.dequantize(rows, 1.0, "trellis"), [[2, 2, 1], [2, 2, 1]])
    # One row: states 0 -> 2 -> 3 -> 4 -> 0 -> 2 -> 3.
    np.testing.assert_array_equal(nnpress.dequantize(rows.ravel(), 1.0, "trellis"), [2, 2, 1, 2, 2, 2])


def test_chunk_rows_restarts_contexts():
    w = laplace((12, 300), seed=8)
    step = 0.01
    q, _, info = nnpress.quantize_info(w, step, lam=0.2 * step**2, method="rdoq", rows_per_block=5)
    q1, _, info1 = nnpress.quantize_info(w, step, lam=0.2 * step**2, method="rdoq")
    assert info["rate_bits"] != info1["rate_bits"]
    assert info["rate_bits"] == rate_bits(q, info["unary_len"], info["eg_order"], rows_per_block=5)
    assert info1["rate_bits"] == rate_bits(q1, info1["unary_len"], info1["eg_order"])
    assert info["rate_bits"] == sum(rate_bits(q[r : r + 5], info["unary_len"], info["eg_order"]) for r in (0, 5, 10))
    with pytest.raises(ValueError):
        nnpress.quantize(w, step, method="rdoq", rows_per_block=0)


@pytest.mark.parametrize("method", ["rdoq", "trellis"])
def test_threads_give_identical_results(method):
    w = laplace((40, 300), seed=11)
    step = 0.01
    ref = nnpress.quantize_info(w, step, lam=0.2 * step**2, method=method, rows_per_block=3, threads=1)
    for threads in (2, None):
        out = nnpress.quantize_info(w, step, lam=0.2 * step**2, method=method, rows_per_block=3, threads=threads)
        np.testing.assert_array_equal(out[0], ref[0])
        assert out[1].tobytes() == ref[1].tobytes()
        assert out[2] == ref[2]
    with pytest.raises(ValueError):
        nnpress.quantize(w, step, method=method, threads=-1)


def _nearest_bits_at(w, target_dist, steps):
    """Bits of plain rounding at distortion target_dist, interpolated (log-log) over steps."""
    pts = []
    for s in steps:
        q = nnpress.quantize(w, s)
        d = float(np.sum((w - nnpress.dequantize(q, s)).astype(np.float64) ** 2))
        pts.append((d, nnpress.estimate_bits(q)))
    pts.sort()
    ds, bs = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    assert ds[0] < np.log(target_dist) < ds[-1]
    return float(np.exp(np.interp(np.log(target_dist), ds, bs)))


@pytest.mark.parametrize("dist_name", ["laplace", "gaussian"])
@pytest.mark.parametrize("method", ["rdoq", "trellis"])
def test_rd_benefit_over_nearest(method, dist_name):
    rng = np.random.default_rng(9)
    shape = (1000, 1000)
    w = (rng.laplace(0, 0.02, shape) if dist_name == "laplace" else rng.normal(0, 0.02, shape)).astype(np.float32)
    # About 1.1-1.4 bits/weight: where compressed networks live. (At 2.5+ bits/weight plain
    # rounding is already close to optimal and the gain is small; see bench/RESULTS.md.)
    step = 0.04
    q = nnpress.quantize(w, step, lam=0.1 * step**2, method=method)
    d = float(np.sum((w - nnpress.dequantize(q, step, method)).astype(np.float64) ** 2))
    bits = nnpress.estimate_bits(q)
    ref = _nearest_bits_at(w, d, steps=np.linspace(0.02, 0.09, 15))
    assert bits < 0.97 * ref, (bits, ref)


@pytest.mark.parametrize("method", METHODS)
def test_bad_arguments(method):
    w = laplace((4, 5))
    for bad in (np.nan, np.inf, -np.inf):
        w2 = w.copy()
        w2[1, 2] = bad
        with pytest.raises(ValueError, match="weight 7"):
            nnpress.quantize(w2, 0.01, method=method)
    for step in (0.0, -0.1, np.nan, np.inf):
        with pytest.raises(ValueError):
            nnpress.quantize(w, step, method=method)
        with pytest.raises(ValueError):
            nnpress.dequantize(np.zeros(3, np.int32), step, method=method)
    with pytest.raises(ValueError):
        nnpress.quantize(w, 0.01, lam=-1.0, method=method)
    with pytest.raises(ValueError):
        nnpress.quantize(w, 0.01, lam=np.nan, method=method)
    with pytest.raises(ValueError, match="broadcast"):
        nnpress.quantize(w, 0.01, importance=np.ones((5, 4)), method=method)
    with pytest.raises(ValueError, match="importance"):
        nnpress.quantize(w, 0.01, importance=-np.ones((4, 5)), method=method)
    with pytest.raises(ValueError, match="importance"):
        nnpress.quantize(w, 0.01, importance=np.full((4, 5), np.nan), method=method)
    with pytest.raises(ValueError, match="2\\^30"):
        nnpress.quantize(np.array([1e9], np.float32), 0.1, method=method)
    with pytest.raises(TypeError):
        nnpress.quantize(np.arange(5), 0.1, method=method)
    with pytest.raises(TypeError):
        nnpress.dequantize(np.ones(3, np.float32), 0.1, method=method)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        nnpress.quantize(np.zeros(3, np.float32), 0.1, method="round")
    with pytest.raises(ValueError, match="unknown method"):
        nnpress.dequantize(np.zeros(3, np.int32), 0.1, method="tcq")
    with pytest.raises(TypeError):
        nnpress.quantize(np.zeros(3, np.float32), 0.1, method=1)


def test_non_contiguous_and_float16_inputs():
    w = laplace((30, 40), seed=10, dtype=np.float64)
    view = w[:, ::2]
    np.testing.assert_array_equal(
        nnpress.quantize(view, 0.01, method="rdoq", lam=1e-5),
        nnpress.quantize(np.ascontiguousarray(view), 0.01, method="rdoq", lam=1e-5),
    )
    w16 = w.astype(np.float16)
    np.testing.assert_array_equal(
        nnpress.quantize(w16, 0.01, method="trellis", lam=1e-5),
        nnpress.quantize(w16.astype(np.float32), 0.01, method="trellis", lam=1e-5),
    )


def test_rate_bits_arguments():
    q = np.array([[0, 1, -2], [3, 0, 0]], np.int32)
    assert rate_bits(q, 2, 0) > 0
    with pytest.raises(ValueError):
        rate_bits(q, 65, 0)
    with pytest.raises(ValueError):
        rate_bits(q, 2, 31)
    with pytest.raises(ValueError):
        rate_bits(q, -1, 0)
    with pytest.raises(TypeError):
        rate_bits(q.astype(np.float32), 2, 0)
    with pytest.raises(ValueError):
        rate_bits(q, 2, 0, rows_per_block=0)
