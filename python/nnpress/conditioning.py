"""Conditioning of the per-weight importance before it reaches a quantizer (numpy only).

The rate-distortion quantizers minimise ``sum F_i (w_i - w_hat_i)**2 + lam * bits``: a weight with
importance 0 costs nothing to destroy, so it goes to level 0. Fisher information estimated from a
few calibration batches is exactly 0 wherever those batches never reached (an embedding row of a
token the text never used, a unit that never fired), and "not seen" is not "not needed": on other
inputs those weights matter. ``nnpress.encode`` therefore passes every importance through
:func:`condition_importance`, whatever the caller computed it with:

* tensors with the ``"embedding"`` role keep only their column profile (each row gets the mean of
  the rows, column by column): a row is a token, and which tokens matter depends on the text;
* every value is raised to at least ``IMPORTANCE_FLOOR`` times the tensor's *typical* importance,
  the geometric mean of its positive values (not the arithmetic mean, which a few huge values
  dominate, so that a floor relative to it would erase the caller's deliberate contrasts).

The scale of the importance is kept where nothing is floored (it sets the balance against lam).
An importance with no positive value carries no information and is dropped (uniform weighting).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["IMPORTANCE_FLOOR", "condition_importance"]

IMPORTANCE_FLOOR = 0.1  # fraction of the typical (geometric-mean) importance no weight falls below


def condition_importance(importance, shape, role: str, name: str = "") -> np.ndarray | None:
    """The importance the quantizer gets for a tensor of ``shape`` and ``role`` (module
    docstring). ``importance`` has the tensor's shape or broadcasts to it. ValueError for NaN,
    infinite or negative values; None when no value is positive."""
    a = np.asarray(importance)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    if a.size == 0:
        return a
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name!r}: importance must be finite")
    if lo < 0:
        raise ValueError(f"{name!r}: importance must be >= 0, got {lo!r}")
    if hi <= 0:
        return None
    if role == "embedding" and a.ndim >= 2 and tuple(a.shape) == tuple(shape):
        a2 = a.reshape(a.shape[0], -1)
        a = np.broadcast_to(a2.mean(0, dtype=np.float64).astype(a.dtype), a2.shape).reshape(a.shape)
        if float(np.max(a)) <= 0:
            return None
    pos = a[a > 0]
    typical = math.exp(float(np.mean(np.log(pos.astype(np.float64)))))
    floor = IMPORTANCE_FLOOR * typical
    if lo >= floor:
        return np.asarray(a)
    return np.maximum(a, np.asarray(floor, a.dtype))
