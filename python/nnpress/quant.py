"""Quantizers: float weights <-> int32 levels (numpy only; the work happens in C++).

Three methods (see ``cpp/include/nnpress/quant/quantize.h`` for the full contract):

``"nearest"``  ``q = rint(w / step)`` (round half to even, ``w / step`` in double precision).
``"rdoq"``     greedy rate-distortion quantization in scan order: each weight takes the level that
               minimises ``F_i (w_i - q_i step)^2 + lam * bits(q_i)``, where ``bits`` is priced with
               the level coder's live CABAC contexts, exactly as :func:`nnpress.encode_levels` will
               spend them.
``"trellis"``  dependent quantization (two interleaved quantizers, 8-state machine driven by the
               parity of the levels, Viterbi search with per-state context copies). Its levels are
               reconstructed by the state machine: always use ``dequantize(q, step,
               method="trellis")``. A trellis level is about half as large as a plain level at
               the same step (the two quantizers each have spacing ``2 * step``).

``lam`` is in (weight units)^2 per bit: ``lam = c * step**2`` makes ``c`` independent of scale.
Good starting points (bench/RESULTS.md): c ~ 0.1 for "rdoq", c ~ 0.2 for "trellis", varying the step.
Beyond c ~ 0.2 / 0.4 at coarse steps a tensor can collapse to almost all zeros (the adaptive
contexts reward runs of zeros): a search over ``lam`` must expect that jump.
Rows (the first dimension for rank >= 2, else the whole tensor) are the coder's rows: the
neighbourhood — and the trellis state — restart at every row.
"""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["METHODS", "dequantize", "quantize", "quantize_info", "rate_bits"]

METHODS = {"nearest": 0, "rdoq": 1, "trellis": 2}


def _method_id(method) -> int:
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a str, one of {sorted(METHODS)}, got {type(method).__name__}"
        )
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}") from None


def _positive_finite(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _chunk_rows(chunk_rows) -> int:
    """None -> 0 (one chunk); otherwise a positive int."""
    if chunk_rows is None:
        return 0
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")
    return int(chunk_rows)


def _weights(w) -> np.ndarray:
    arr = np.asarray(w)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"weights must be a float16/float32/float64 array, got dtype {arr.dtype}")
    if arr.ndim > 8:
        raise ValueError(f"weights have {arr.ndim} dimensions; at most 8 are supported")
    return np.ascontiguousarray(arr).reshape(arr.shape)  # (ascontiguousarray makes 0-d 1-d)


def _importance(importance, shape) -> np.ndarray | None:
    if importance is None:
        return None
    f = np.asarray(importance)
    if f.dtype == np.bool_ or not (
        np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)
    ):
        raise TypeError(f"importance must be a real numeric array, got dtype {f.dtype}")
    if f.dtype not in (np.float32, np.float64):
        f = f.astype(np.float64)
    try:
        f = np.broadcast_to(f, shape)
    except ValueError:
        raise ValueError(
            f"importance of shape {np.shape(importance)} does not broadcast to the weights' shape {tuple(shape)}"
        ) from None
    return np.ascontiguousarray(f).reshape(f.shape)


def _run(w, step, lam, importance, method, chunk_rows, threads, want_recon):
    if not _core.HAS_ENCODER:
        raise RuntimeError("this nnpress build has no encoder (NNPRESS_ENCODER=OFF)")
    m = _method_id(method)
    step = _positive_finite(step, "step")
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__}") from None
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    chunk_rows = _chunk_rows(chunk_rows)
    if threads is None:
        threads = 0
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be a non-negative int or None, got {threads!r}")
    arr = _weights(w)
    f = _importance(importance, arr.shape)
    levels, recon, info = _core.quantize(
        arr, f, step, lam, m, int(chunk_rows), 2, int(threads), bool(want_recon)
    )
    levels = levels.reshape(arr.shape)
    return levels, (None if recon is None else recon.reshape(arr.shape)), info


def quantize(
    w,
    step,
    lam=0.0,
    importance=None,
    method="nearest",
    *,
    chunk_rows=None,
    threads=None,
    return_reconstruction=False,
):
    """Quantize weights ``w`` (float16/32/64, any shape up to rank 8) to int32 levels of the same
    shape.

    ``importance`` holds the per-weight F_i >= 0 (broadcastable to ``w``; None = all ones).
    ``chunk_rows``: contexts restart every ``chunk_rows`` rows, matching a container that codes
    row blocks as independent chunks (None: one chunk); chunks run on ``threads`` workers (None or
    0: all cores) with identical results for any thread count. With ``return_reconstruction=True``
    returns ``(levels, w_hat)``, ``w_hat`` the float32 reconstruction the search evaluated,
    identical to ``dequantize(levels, step, method)``.

    Raises ``ValueError`` for a NaN/infinite weight, ``|w / step| >= 2**30``, a negative or
    non-finite importance, a bad step/lam/method, or an importance that does not broadcast;
    ``TypeError`` for non-float weights.
    """
    levels, recon, _ = _run(
        w, step, lam, importance, method, chunk_rows, threads, return_reconstruction
    )
    return (levels, recon) if return_reconstruction else levels


def quantize_info(
    w, step, lam=0.0, importance=None, method="nearest", *, chunk_rows=None, threads=None
):
    """Like :func:`quantize`, returning ``(levels, w_hat, info)`` where ``info`` has the level
    parameters the search priced with (``unary_len``, ``eg_order``), its rate estimate
    ``rate_bits`` (equal to ``nnpress.estimate_bits(levels)`` when those are the parameters the
    encoder picks and ``chunk_rows`` is None; 0 for "nearest"), the weighted distortion
    ``sum F_i (w_i - w_hat_i)^2`` and the number of ``passes``."""
    return _run(w, step, lam, importance, method, chunk_rows, threads, True)


def dequantize(q, step, method="nearest") -> np.ndarray:
    """Reconstruct float32 weights from int32 levels: ``q * step`` for "nearest"/"rdoq", the
    dependent-quantization state machine (restarting at every row) for "trellis"."""
    m = _method_id(method)
    step = _positive_finite(step, "step")
    arr = np.asarray(q)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"levels must be an integer array, got dtype {arr.dtype}")
    if (
        arr.dtype != np.int32
        and arr.size
        and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max)
    ):
        raise ValueError("levels outside the int32 range")
    levels = np.ascontiguousarray(arr, dtype=np.int32).reshape(arr.shape)
    return _core.dequantize(levels, step, m).reshape(arr.shape)


def rate_bits(levels, unary_len: int, eg_order: int, *, chunk_rows=None) -> float:
    """Bits the coder's contexts predict for int32 ``levels`` coded with the given level params
    (``unary_len`` 0..64, ``eg_order`` 0..30), contexts restarting every ``chunk_rows`` rows (None:
    never). With the ``unary_len``/``eg_order``/``chunk_rows`` of a :func:`quantize_info` call this
    is exactly its ``rate_bits``; :func:`nnpress.estimate_bits` instead picks the params itself."""
    if not _core.HAS_ENCODER:
        raise RuntimeError("this nnpress build has no encoder (NNPRESS_ENCODER=OFF)")
    arr = np.asarray(levels)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"levels must be an integer array, got dtype {arr.dtype}")
    if (
        arr.dtype != np.int32
        and arr.size
        and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max)
    ):
        raise ValueError("levels outside the int32 range")
    for name, v in (("unary_len", unary_len), ("eg_order", eg_order)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 or v > 255:
            raise ValueError(f"{name} must be an int, got {v!r}")
    chunk_rows = _chunk_rows(chunk_rows)
    lv = np.ascontiguousarray(arr, dtype=np.int32).reshape(arr.shape)
    return float(_core.rate_bits(lv, int(unary_len), int(eg_order), int(chunk_rows)))
