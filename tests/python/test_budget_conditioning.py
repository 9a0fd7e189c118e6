"""The encode path conditions every importance it is given: zero importance (weights the
calibration data never reached, e.g. embedding rows of unseen tokens) must not let a quantizer
throw those weights away, whoever computed the importance — the README's error-feedback snippet
on MiniLM once gave cosine 0.044 that way."""

from __future__ import annotations

import numpy as np
import pytest

import nnpress
from nnpress import CodecConfig
from nnpress.conditioning import IMPORTANCE_FLOOR, condition_importance

STEP = 0.05


def _row_errors(tmp_path, name, w, imp, hessian=None):
    path = tmp_path / "c.nnp"
    cfg = CodecConfig(method="trellis", step=STEP, lam_scale=0.24, lossless_roles=())
    nnpress.compress(
        {name: w}, path, cfg, importance={name: imp}, hessians=None if hessian is None else {name: hessian}
    )
    dec = nnpress.decompress(path, as_numpy=True)[name]
    return np.linalg.norm(dec - w, axis=1) / np.linalg.norm(w, axis=1)


@pytest.mark.parametrize("name", ["tok_embed.weight", "fc.weight"])
@pytest.mark.parametrize("feedback", [False, True])
def test_rows_without_importance_are_not_thrown_away(tmp_path, name, feedback):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((128, 32)) * 0.1).astype(np.float32)
    imp = np.zeros_like(w)
    imp[:4] = rng.random((4, 32)) * 1000 + 1  # the calibration data touched 4 rows only
    hessian = None
    if feedback:
        x = rng.standard_normal((256, 32))
        hessian = x.T @ x / 256
    err = _row_errors(tmp_path, name, w, imp, hessian)
    assert np.median(err[4:]) < 0.6, np.median(err[4:])  # unconditioned: ~1 (rows quantized to zero)


def test_conditioning_rules():
    a = np.array([[0.0, 1.0], [100.0, 0.01]], np.float32)
    out = condition_importance(a, a.shape, "weight")
    typical = np.exp(np.mean(np.log([1.0, 100.0, 0.01])))
    np.testing.assert_allclose(out, np.maximum(a, IMPORTANCE_FLOOR * typical), rtol=1e-6)
    # embeddings: every row the mean row profile
    e = np.array([[0.0, 2.0], [4.0, 0.0]], np.float32)
    np.testing.assert_allclose(condition_importance(e, e.shape, "embedding"), [[2.0, 1.0], [2.0, 1.0]])
    # nothing to say: None; bad values: errors naming the tensor
    assert condition_importance(np.zeros((2, 2)), (2, 2), "weight") is None
    with pytest.raises(ValueError, match=r"'t'.*finite"):
        condition_importance(np.array([1.0, np.nan]), (2,), "weight", "t")
    with pytest.raises(ValueError, match=r"'t'.*>= 0"):
        condition_importance(np.array([1.0, -1.0]), (2,), "weight", "t")
    # already conditioned: unchanged (the same values reach the quantizer)
    ok = np.array([1.0, 0.5, 2.0], np.float32)
    np.testing.assert_array_equal(condition_importance(ok, ok.shape, "weight"), ok)
