"""Error feedback in the quantizers (``hessian=``: GPTQ/OBS-style compensation inside each row)."""

import numpy as np
import pytest

import nnpress
from nnpress import _core
from nnpress.config import DEFAULT_LAM_SCALE, METHODS
from nnpress.quant import dequantize, feedback_factor, quantize, quantize_info


def correlated_hessian(cols, seed=0, mix=0.8):
    """Mean-diagonal-1 covariance of strongly correlated features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4 * cols, cols)) @ (np.eye(cols) + mix * rng.standard_normal((cols, cols)) / np.sqrt(cols))
    h = x.T @ x / x.shape[0]
    return h / np.mean(np.diag(h))


def weights(rows, cols, seed=1, scale=0.1):
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)


def lam_for(method, step):
    return {"nearest": 0.0, "rdoq": 0.1 * step**2, "trellis": 0.06 * (2 * step) ** 2}[method]


def quadratic_form(w, w_hat, h, row_weight=None):
    e = w.astype(np.float64) - w_hat.astype(np.float64)
    per_row = np.einsum("ri,ij,rj->r", e, h, e)
    return float(per_row.sum() if row_weight is None else (per_row * row_weight).sum())


def damped(h, damp):
    out = np.array(h, dtype=np.float64)
    out[np.diag_indices_from(out)] += damp * np.mean(np.diag(out))
    return out


def gptq_reference(w, step, u):
    """Per-row sequential rounding with error feedback, written out in numpy (float64)."""
    rows, cols = w.shape
    q = np.zeros((rows, cols), np.int32)
    for r in range(rows):
        target = w[r].astype(np.float64).copy()
        for i in range(cols):
            q[r, i] = 0 if w[r, i] == 0 else int(np.rint(target[i] / step))
            e = target[i] - q[r, i] * step
            target[i + 1 :] -= e * (u[i, i + 1 :] / u[i, i])
    return q


@pytest.mark.parametrize("method", METHODS)
def test_identity_hessian_changes_nothing(method):
    w = weights(20, 33)
    step = 0.02
    plain = quantize(w, step, lam=lam_for(method, step), method=method)
    fb = quantize(w, step, lam=lam_for(method, step), method=method, hessian=np.eye(33), hessian_damp=0.0)
    np.testing.assert_array_equal(plain, fb)


@pytest.mark.parametrize("method", METHODS)
def test_distortion_is_the_quadratic_form_and_recon_is_the_decoders(method):
    rows, cols, step, damp = 24, 40, 0.015, 0.05
    w = weights(rows, cols, seed=2)
    h = correlated_hessian(cols)
    f = np.linspace(0.5, 2.0, rows).reshape(rows, 1)
    row_scale = np.exp2(np.linspace(-0.5, 0.5, rows))
    col_scale = np.exp2(np.linspace(0.25, -0.25, cols))
    q, rec, info = quantize_info(
        w,
        step,
        lam=lam_for(method, step),
        importance=f,
        method=method,
        hessian=h,
        hessian_damp=damp,
        row_scale=row_scale,
        col_scale=col_scale,
    )
    deq = dequantize(q, step, method=method, row_scale=row_scale, col_scale=col_scale)
    np.testing.assert_array_equal(rec, deq)
    want = quadratic_form(w, deq, damped(h, damp), f[:, 0])
    assert info["distortion"] == pytest.approx(want, rel=1e-6)


def test_nearest_with_hessian_is_gptq_rounding():
    rows, cols, step = 16, 48, 0.02
    w = weights(rows, cols, seed=3)
    w[3, ::5] = 0.0  # pruned weights stay zero
    h = correlated_hessian(cols, seed=4)
    u = feedback_factor(h, damp=0.01)
    got = quantize(w, step, method="nearest", hessian=h, hessian_damp=0.01)
    np.testing.assert_array_equal(got, gptq_reference(w, step, u))
    assert np.all(got[3, ::5] == 0)


@pytest.mark.parametrize("method", METHODS)
def test_feedback_lowers_the_weighted_error_at_equal_step(method):
    rows, cols, step = 64, 64, 0.02
    w = weights(rows, cols, seed=5)
    h = correlated_hessian(cols, seed=6)
    lam = lam_for(method, step)
    plain = dequantize(quantize(w, step, lam=lam, method=method), step, method=method)
    fb = dequantize(quantize(w, step, lam=lam, method=method, hessian=h, hessian_damp=0.0), step, method=method)
    d_plain, d_fb = quadratic_form(w, plain, h), quadratic_form(w, fb, h)
    assert d_fb < 0.85 * d_plain, (d_fb, d_plain)
    # ... at about the same rate
    assert nnpress.estimate_bits(
        quantize(w, step, lam=lam, method=method, hessian=h, hessian_damp=0.0)
    ) < 1.05 * nnpress.estimate_bits(quantize(w, step, lam=lam, method=method))


@pytest.mark.parametrize("method", METHODS)
def test_exact_zeros_stay_zero(method):
    w = weights(12, 30, seed=7)
    w[:, 1::2] = 0.0
    q = quantize(w, 0.01, lam=lam_for(method, 0.01), method=method, hessian=correlated_hessian(30, seed=8))
    assert np.all(q[:, 1::2] == 0)


@pytest.mark.parametrize("method", ["rdoq", "trellis"])
def test_chunks_and_threads_do_not_change_the_result(method):
    w = weights(40, 24, seed=9)
    h = correlated_hessian(24, seed=10)
    one = quantize_info(w, 0.02, lam=lam_for(method, 0.02), method=method, hessian=h, rows_per_block=7, threads=1)
    two = quantize_info(w, 0.02, lam=lam_for(method, 0.02), method=method, hessian=h, rows_per_block=7, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    assert one[2]["distortion"] == two[2]["distortion"]


def test_rank_above_two_uses_flattened_columns():
    w = weights(6, 3 * 2 * 2, seed=11).reshape(6, 3, 2, 2)
    h = correlated_hessian(12, seed=12)
    q4 = quantize(w, 0.02, method="trellis", lam=0.0, hessian=h)
    q2 = quantize(w.reshape(6, 12), 0.02, method="trellis", lam=0.0, hessian=h)
    np.testing.assert_array_equal(q4.reshape(6, 12), q2)


def test_bad_hessians_and_importance_are_errors():
    w = weights(4, 5)
    good = correlated_hessian(5)
    with pytest.raises(ValueError, match="matrix"):
        quantize(w, 0.1, hessian=np.eye(4))
    with pytest.raises(ValueError, match="symmetric"):
        quantize(w, 0.1, hessian=good + np.triu(np.ones((5, 5)), 1))
    bad = good.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        quantize(w, 0.1, hessian=bad)
    with pytest.raises(ValueError, match="positive definite"):
        quantize(w, 0.1, hessian=np.ones((5, 5)), hessian_damp=0.0)
    with pytest.raises(ValueError, match="positive mean diagonal"):
        quantize(w, 0.1, hessian=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="hessian_damp"):
        quantize(w, 0.1, hessian=good, hessian_damp=-1.0)
    with pytest.raises(ValueError, match="same along each row"):
        quantize(w, 0.1, method="rdoq", lam=0.001, importance=np.arange(20.0).reshape(4, 5) + 1, hessian=good)
    # per-row importance broadcasts
    quantize(w, 0.1, method="rdoq", lam=0.001, importance=np.arange(1.0, 5.0).reshape(4, 1), hessian=good)


def core_options(step: float, method) -> "_core.QuantOptions":
    """The C++ quantizer's options for a direct ``_core.quantize`` call (no Python checks)."""
    o = _core.QuantOptions()
    o.step, o.threads = step, 1
    o.method = _core.QuantMethod.__members__[method] if isinstance(method, str) else method
    return o


def test_core_rejects_hostile_factors_without_crashing():
    w = weights(3, 4)
    base = np.eye(4)
    for bad, what in (
        (np.diag([1.0, 0.0, 1.0, 1.0]), "diagonal"),
        (np.diag([1.0, -1.0, 1.0, 1.0]), "diagonal"),
        (np.diag([1.0, 1e-200, 1.0, 1.0]), "diagonal"),
        (base + np.triu(np.full((4, 4), 1e13), 1), "ill-conditioned"),
        (base + np.triu(np.full((4, 4), np.inf), 1), "ill-conditioned"),
    ):
        for m in METHODS:
            with pytest.raises(ValueError, match=what):
                _core.quantize(w, core_options(0.1, m), feedback=np.ascontiguousarray(bad))
    with pytest.raises(ValueError, match="cols"):
        _core.quantize(w, core_options(0.1, "trellis"), feedback=np.eye(3))


@pytest.mark.parametrize("method", METHODS)
def test_extreme_but_valid_factors_give_defined_levels(method):
    """Coefficients at the accepted bound push targets far out; levels must stay defined and the
    reconstruction the decoder's."""
    cols = 6
    u = np.eye(cols) + np.triu(np.full((cols, cols), 1e11), 1)
    w = weights(5, cols, seed=13)
    q, rec, _ = _core.quantize(w, core_options(1e-3, method), feedback=u, want_recon=True)
    assert np.all(np.abs(q) <= 2**30)
    np.testing.assert_array_equal(rec, dequantize(q, 1e-3, method=method))


def test_compress_with_hessians_codes_what_quantize_chooses(tmp_path):
    """compress(hessians=) normalises H to mean diagonal 1, reduces the importance to row means and
    quantizes with CodecConfig.hessian_damp; the decoded file holds exactly those levels' values."""
    rng = np.random.default_rng(20)
    w = (rng.standard_normal((10, 16)) * 0.05).astype(np.float32)
    state = {"a.weight": w, "a.bias": np.zeros(10, np.float32)}
    h = 7.0 * correlated_hessian(16, seed=21)  # any scale: compress normalises it
    imp = rng.uniform(0.5, 2.0, size=w.shape).astype(np.float32)
    step = 0.004
    cfg = nnpress.CodecConfig(method="trellis", step=step, lam_scale=0.06, hessian_damp=0.2)
    path = tmp_path / "m.nnp"
    nnpress.compress(state, path, cfg, importance={"a.weight": imp}, hessians={"a.weight": h})
    got = nnpress.decompress(path, as_numpy=True)["a.weight"]
    q = quantize(
        w,
        step,
        lam=0.06 * step**2,
        importance=imp.astype(np.float64).mean(1, keepdims=True),
        method="trellis",
        hessian=h / np.mean(np.diag(h)),
        hessian_damp=0.2,
    )
    np.testing.assert_array_equal(got, dequantize(q, step, method="trellis"))
    plain = nnpress.decompress(
        nnpress.compress(state, tmp_path / "p.nnp", cfg, importance={"a.weight": imp}).path, as_numpy=True
    )["a.weight"]
    assert not np.array_equal(plain, got)  # the hessian changed the decisions
    with pytest.raises(KeyError, match="hessians"):
        nnpress.compress(state, tmp_path / "x.nnp", cfg, hessians={"b.weight": h})
    with pytest.raises(ValueError, match="hessian_damp"):
        nnpress.CodecConfig(hessian_damp=-0.1)


def test_allocate_steps_and_apply_plan_with_hessians():
    from nnpress import tune
    from nnpress.quant import feedback_inputs

    rng = np.random.default_rng(30)
    w = {
        "a.weight": (rng.standard_normal((16, 24)) * 0.05).astype(np.float32),
        "b.weight": (rng.standard_normal((16, 24)) * 0.05).astype(np.float32),
    }
    sens = {"a.weight": 2.0, "b.weight": 1.0}
    h = correlated_hessian(24, seed=31)
    plain = tune.allocate_steps(w, 0.01, sens, method="trellis")
    fb = tune.allocate_steps(
        w, 0.01, sens, method="trellis", hessians={"a.weight": 3.0 * h}, hessian_damp=0.05, hessian_exponent=0.5
    )
    u = feedback_factor(h, damp=0.05)
    e = float(np.mean(1.0 / np.diag(u) ** 2))
    assert e < 1.0  # correlated columns: feedback lowers the distortion per unit step^2
    ratio_plain = plain["a.weight"].step / plain["b.weight"].step
    ratio_fb = fb["a.weight"].step / fb["b.weight"].step
    assert ratio_fb / ratio_plain == pytest.approx(e**-0.25, rel=1e-9)  # d ~ (s e^0.5)^-1/2
    scale = DEFAULT_LAM_SCALE["trellis"]
    assert fb["a.weight"].lam == pytest.approx(scale * fb["a.weight"].step ** 2 * e, rel=1e-9)
    assert fb["b.weight"].lam == pytest.approx(scale * fb["b.weight"].step ** 2, rel=1e-9)
    imp = {k: rng.uniform(0.5, 2.0, v.shape).astype(np.float32) for k, v in w.items()}
    levels, _, _ = tune.apply_plan(w, fb, imp, {"a.weight": 3.0 * h}, 0.05)
    f_rows, h_norm, _ = feedback_inputs(w["a.weight"].shape, imp["a.weight"], 3.0 * h)
    assert f_rows.shape == (16, 1)
    np.testing.assert_allclose(h_norm, h / np.mean(np.diag(h)))
    p = fb["a.weight"]
    want = quantize(
        w["a.weight"], p.step, lam=p.lam, importance=f_rows, method="trellis", hessian=h_norm, hessian_damp=0.05
    )
    np.testing.assert_array_equal(levels["a.weight"], want)
    np.testing.assert_array_equal(
        levels["b.weight"],
        quantize(
            w["b.weight"], fb["b.weight"].step, lam=fb["b.weight"].lam, importance=imp["b.weight"], method="trellis"
        ),
    )


def test_overflowing_costs_and_steps_are_errors_not_silent_results():
    w = weights(3, 8, seed=40)
    h = 1e300 * np.eye(8)
    for m in METHODS:
        with pytest.raises(ValueError, match="overflows"):
            quantize_info(
                w,
                0.1,
                method=m,
                lam=0.0 if m == "nearest" else 1e-4,
                hessian=h,
                hessian_damp=0.0,
                importance=np.full((3, 1), 1e10),
            )
    big = (np.ones((2, 4)) * 1e305).astype(np.float64)
    with pytest.raises(ValueError, match="DBL_MAX"):
        quantize(big, 1e300, method="nearest", hessian=np.eye(4))
    with pytest.raises(ValueError, match="finite"):
        quantize(w, 0.1, method="rdoq", lam=1e-4, importance=np.full((3, 8), np.nan), hessian=np.eye(8))


# ---------------------------------------------------------------------------------------------
# Feedback across rows (row_hessian)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_identity_row_hessian_changes_nothing(method):
    """Rows quantized one at a time with their contexts carried give exactly one pass's levels."""
    w = weights(18, 21, seed=50)
    h = correlated_hessian(21, seed=51)
    lam = lam_for(method, 0.02)
    for kw in ({}, {"hessian": h}):
        plain = quantize_info(w, 0.02, lam=lam, method=method, rows_per_block=7, hessian_damp=0.0, **kw)
        rows = quantize_info(
            w, 0.02, lam=lam, method=method, rows_per_block=7, row_hessian=np.eye(18), hessian_damp=0.0, **kw
        )
        np.testing.assert_array_equal(plain[0], rows[0])
        assert rows[2]["rate_bits"] == plain[2]["rate_bits"]


@pytest.mark.parametrize("method", METHODS)
def test_two_sided_distortion_is_the_trace_form(method):
    rows, cols, step, damp = 20, 16, 0.02, 0.05
    w = weights(rows, cols, seed=52)
    h, g = correlated_hessian(cols, seed=53), correlated_hessian(rows, seed=54)
    q, rec, info = quantize_info(
        w, step, lam=lam_for(method, step), method=method, hessian=h, row_hessian=g, hessian_damp=damp
    )
    np.testing.assert_array_equal(rec, dequantize(q, step, method=method))
    e = w.astype(np.float64) - dequantize(q, step, method=method).astype(np.float64)
    want = float(np.trace(damped(g, damp) @ e @ damped(h, damp) @ e.T))
    assert info["distortion"] == pytest.approx(want, rel=1e-6)
    # rows alone: sum_r (1/V_rr^2) |e_r'|^2 = tr(G E E^T)
    q2, _, info2 = quantize_info(w, step, lam=lam_for(method, step), method=method, row_hessian=g, hessian_damp=damp)
    e2 = w.astype(np.float64) - dequantize(q2, step, method=method).astype(np.float64)
    assert info2["distortion"] == pytest.approx(float(np.trace(damped(g, damp) @ e2 @ e2.T)), rel=1e-6)


def test_row_feedback_lowers_the_error_keeps_zeros_and_is_thread_invariant():
    rows, cols, step = 48, 24, 0.02
    w = weights(rows, cols, seed=55)
    w[5, ::3] = 0.0
    h, g = correlated_hessian(cols, seed=56), correlated_hessian(rows, seed=57)
    one = dequantize(quantize(w, step, method="nearest", hessian=h, hessian_damp=0.0), step)
    two_q = quantize(w, step, method="nearest", hessian=h, row_hessian=g, hessian_damp=0.0)
    e1, e2 = w - one, w - dequantize(two_q, step)
    assert np.trace(g @ e2 @ h @ e2.T) < 0.9 * np.trace(g @ e1 @ h @ e1.T)
    assert np.all(two_q[5, ::3] == 0)
    for m in METHODS:
        a = quantize_info(
            w, step, lam=lam_for(m, step), method=m, hessian=h, row_hessian=g, rows_per_block=10, threads=1
        )
        b = quantize_info(
            w, step, lam=lam_for(m, step), method=m, hessian=h, row_hessian=g, rows_per_block=10, threads=2
        )
        np.testing.assert_array_equal(a[0], b[0])
        assert a[2]["distortion"] == b[2]["distortion"]


def test_bad_row_factors_are_errors():
    w = weights(4, 3)
    for bad, what in (
        (np.diag([1.0, 0.0, 1.0, 1.0]), "diagonal"),
        (np.eye(4) + np.triu(np.full((4, 4), 1e13), 1), "ill-conditioned"),
    ):
        for m in METHODS:
            with pytest.raises(ValueError, match="row feedback factor.*" + what):
                _core.quantize(w, core_options(0.1, m), row_feedback=np.ascontiguousarray(bad))
    with pytest.raises(ValueError, match="rows"):
        _core.quantize(w, core_options(0.1, "trellis"), row_feedback=np.eye(3))
    with pytest.raises(ValueError, match="matrix"):
        quantize(w, 0.1, row_hessian=np.eye(3))


def test_compress_with_row_hessians_codes_what_quantize_chooses(tmp_path):
    from nnpress.quant import feedback_inputs

    rng = np.random.default_rng(60)
    w = (rng.standard_normal((12, 10)) * 0.05).astype(np.float32)
    h, g = 3.0 * correlated_hessian(10, seed=61), 5.0 * correlated_hessian(12, seed=62)
    imp = rng.uniform(0.5, 2.0, size=w.shape).astype(np.float32)
    cfg = nnpress.CodecConfig(method="trellis", step=0.004, lam_scale=0.06, hessian_damp=0.2, block_elements=60)
    path = tmp_path / "m.nnp"
    nnpress.compress(
        {"a.weight": w}, path, cfg, importance={"a.weight": imp}, hessians={"a.weight": h}, row_hessians={"a.weight": g}
    )
    got = nnpress.decompress(path, as_numpy=True)["a.weight"]
    f, hn, gn = feedback_inputs(w.shape, imp, h, g)
    assert f is None  # both blocks: the importance says nothing more
    q = quantize(
        w, 0.004, lam=0.06 * 0.004**2, method="trellis", hessian=hn, row_hessian=gn, hessian_damp=0.2, rows_per_block=6
    )
    np.testing.assert_array_equal(got, dequantize(q, 0.004, method="trellis"))
    f2, _, _ = feedback_inputs(w.shape, imp, None, g)
    np.testing.assert_allclose(f2.mean(1), 1.0)  # row block alone: rows divided by their means
    with pytest.raises(KeyError, match="row_hessians"):
        nnpress.compress({"a.weight": w}, tmp_path / "x.nnp", cfg, row_hessians={"b.weight": g})
