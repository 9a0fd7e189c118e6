"""compress passes the per-weight importance to the rate-distortion quantizers, and it changes the
levels the way its definition says: distortion weighted by importance, so unimportant weights give
way to rate (more zeros, smaller levels) and important ones stay at nearest rounding.

(Replaces test_compress.py::test_importance_is_passed_to_the_quantizer, whose all-ones importance
gives the same file whether compress passes the importance or drops it.)"""

from __future__ import annotations

import numpy as np
import pytest

import nnpress
from nnpress import CodecConfig, NnpFile

STEP = 0.05


def _levels(tmp_path, name, w, method, importance=None):
    path = tmp_path / f"{name}.nnp"
    cfg = CodecConfig(method=method, step=STEP, lam_scale=2.0, lossless_roles=())
    nnpress.compress({"w": w}, path, cfg, importance=None if importance is None else {"w": importance})
    f = NnpFile(path)
    return f.read_levels("w"), f.read("w")


@pytest.mark.parametrize("method", ["rdoq", "trellis"])
def test_nonuniform_importance_changes_the_levels_as_it_weighs_them(tmp_path, method):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 64)).astype(np.float32) * 0.2
    imp = np.ones_like(w)
    imp[:32] = 100.0  # important rows: distortion dominates the rate term
    imp[32:] = 0.01  # unimportant rows: the rate term dominates
    none, none_recon = _levels(tmp_path, "none", w, method)
    weighted, weighted_recon = _levels(tmp_path, "imp", w, method, imp)

    assert not np.array_equal(none, weighted)
    lo, hi = slice(32, 64), slice(0, 32)
    # unimportant weights: strictly fewer nonzero levels and less magnitude than without importance
    assert np.count_nonzero(weighted[lo]) < np.count_nonzero(none[lo])
    assert np.abs(weighted[lo]).sum() < np.abs(none[lo]).sum()

    # important weights: reconstructed closer to the weights than without importance
    def err(recon):
        return float(np.sum((recon[hi] - w[hi]) ** 2))

    assert err(weighted_recon) < 0.9 * err(none_recon)
    # and the same importance, same levels (the file does not depend on anything else)
    assert np.array_equal(weighted, _levels(tmp_path, "again", w, method, imp)[0])


def test_importance_for_an_unknown_tensor_is_an_error(tmp_path):
    w = np.ones((4, 4), np.float32)
    with pytest.raises(KeyError):
        nnpress.compress(
            {"w": w},
            tmp_path / "c.nnp",
            CodecConfig(method="rdoq"),
            importance={"other": np.ones(3)},
        )
