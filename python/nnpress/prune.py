"""Pruning to a target sparsity before coding (numpy only).

DeepCABAC's published results are on sparsified networks: weights that matter least are set to
zero first, and the coder then spends almost nothing on them (a zero costs one significance bin,
well under a bit where zeros are common). This module zeroes the requested fraction of weights,
smallest *saliency* first:

* with importance (the diagonal Fisher information F, e.g. from ``nnpress.fisher_diagonal``):
  ``F_i * w_i**2`` — the second-order estimate of the loss increase when w_i is set to zero
  (Optimal Brain Damage), so sensitive weights survive even when they are small;
* without: ``w_i**2`` (magnitude pruning).

``scope="tensor"`` prunes the same fraction of every selected tensor; ``scope="global"`` ranks all
selected weights together (one threshold for the model), which with Fisher saliency moves the
sparsity to the tensors where zeros cost least. Exactly ``floor(sparsity * n)`` weights become zero
(ties broken deterministically), whatever zeros the tensor had before; pruning is deterministic.

There is no fine-tuning here: pruning without retraining costs accuracy, more so at high
sparsity; measure the model (``compress`` reports errors, tune_to_budget measures fidelity).
``CodecConfig(prune=...)`` applies ``scope="tensor"`` pruning inside ``compress`` to every
quantized tensor, with the importance given to ``compress`` when there is one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

SCOPES = ("tensor", "global")


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.integer, np.floating)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    s = float(sparsity)
    if not (math.isfinite(s) and 0.0 <= s < 1.0):
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    return s


def saliency(w, importance=None) -> np.ndarray:
    """Pruning saliency of each weight: ``importance * w**2`` (or ``w**2`` without importance),
    as float64 of w's shape. importance must have w's shape (or broadcast to it), be finite and >= 0."""
    a = np.asarray(w)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"saliency: weights must be floating point, got {a.dtype}")
    s = np.square(a, dtype=np.float64)
    if importance is not None:
        f = np.asarray(importance, dtype=np.float64)
        try:
            f = np.broadcast_to(f, a.shape)
        except ValueError:
            raise ValueError(f"saliency: importance of shape {f.shape} does not match weights {a.shape}") from None
        if f.size and not (np.all(np.isfinite(f)) and f.min() >= 0):
            raise ValueError("saliency: importance must be finite and >= 0")
        s = s * f
    return s


def _zero_smallest(flat_sal: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest saliencies (deterministic: ties go to the lower index)."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= flat_sal.size:
        return np.arange(flat_sal.size)
    # Everything strictly below the k-th smallest value, then the lowest-index entries equal to it.
    kth = np.partition(flat_sal, k - 1)[k - 1]
    below = np.flatnonzero(flat_sal < kth)
    at = np.flatnonzero(flat_sal == kth)
    return np.concatenate([below, at[: k - below.size]])


def prune_array(w, sparsity: float, importance=None) -> np.ndarray:
    """A copy of w with ``floor(sparsity * w.size)`` weights of smallest saliency set to zero."""
    s = _check_sparsity(sparsity)
    a = np.array(w, copy=True)
    sal = saliency(a, importance).ravel()
    idx = _zero_smallest(sal, math.floor(s * a.size))
    a.reshape(-1)[idx] = 0
    return a


def _selected(arrays: Mapping[str, np.ndarray], names) -> list[str]:
    """The named tensors (KeyError for unknown names), default the floating ones with >= 2 dims."""
    if names is None:
        return [k for k, a in arrays.items() if a.ndim >= 2 and np.issubdtype(a.dtype, np.floating)]
    sel = list(names)
    missing = [k for k in sel if k not in arrays]
    if missing:
        raise KeyError(f"no tensors named {missing[:5]}")
    return sel


def prune(
    weights: Mapping[str, np.ndarray],
    sparsity: float,
    *,
    importance: Mapping[str, object] | None = None,
    scope: str = "tensor",
    names: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """Prune the selected tensors of a state dict to ``sparsity`` (see the module docstring).

    names: the tensors to prune; default every floating tensor with at least 2 dimensions (the
    tensors ``compress`` quantizes by default). Others are returned unchanged (the same objects).
    importance: optional ``{name: F}`` (arrays or torch tensors of each tensor's shape, >= 0);
    tensors without an entry use magnitude saliency — with ``scope="global"`` either all selected
    tensors have importance or none (mixing the two scales would make the ranking meaningless).
    Returns a new dict; the input arrays are not modified.
    """
    s = _check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"prune: scope must be one of {SCOPES}, got {scope!r}")
    if not isinstance(weights, Mapping):
        raise TypeError("prune: weights must be a mapping name -> array")
    arrays = {k: np.asarray(v) for k, v in weights.items()}
    sel = _selected(arrays, names)
    imp = {}
    if importance is not None:
        unknown = set(importance) - set(arrays)
        if unknown:
            raise KeyError(f"prune: importance given for tensors not in weights: {sorted(unknown)[:5]}")
        for k, v in importance.items():
            if k in sel:
                imp[k] = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
    out = dict(weights)
    if scope == "tensor":
        for k in sel:
            out[k] = prune_array(arrays[k], s, imp.get(k))
        return out
    if imp and set(imp) != set(sel):
        raise ValueError("prune: scope='global' needs importance for every selected tensor or for none")
    sal = [saliency(arrays[k], imp.get(k)).ravel() for k in sel]
    sizes = [x.size for x in sal]
    flat = np.concatenate(sal) if sal else np.empty(0)
    idx = _zero_smallest(flat, math.floor(s * flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    mask[idx] = True
    start = 0
    for k, n in zip(sel, sizes):
        a = np.array(arrays[k], copy=True)
        a.reshape(-1)[mask[start : start + n]] = 0
        out[k] = a
        start += n
    return out


def sparsity_of(weights: Mapping[str, np.ndarray], names: Iterable[str] | None = None) -> float:
    """Fraction of zeros over the named tensors (default: floating tensors with >= 2 dimensions)."""
    arrays = {k: np.asarray(v) for k, v in weights.items()}
    sel = _selected(arrays, names)
    n = sum(arrays[k].size for k in sel)
    return float(sum(int(np.count_nonzero(arrays[k] == 0)) for k in sel) / n) if n else 0.0
