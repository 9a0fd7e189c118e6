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

Channel scales (``row_scale``, ``col_scale``): optional per-row (output channel) and per-column
(input feature; for rank > 2 the flattened trailing dimensions) multipliers of the step. Weight
(i, j) is quantized and reconstructed on its own step ``(step * row_scale[i]) * col_scale[j]``
(double precision), in the search and in :func:`dequantize` alike. The ``.nnp`` file stores scales
as int8 exponents ``e`` (scale ``2**(e/8)``): :func:`channel_scale_exps` snaps scales to that grid and
:func:`channel_scales` gives the exact values the decoder will use.

Error feedback (``hessian``; GPTQ/OBS-style compensation inside each row): with a ``(cols, cols)``
symmetric positive semi-definite H — e.g. the covariance of a linear layer's inputs, or the
gradient covariance at an embedding's output (:func:`nnpress.fisher_hessians`) — every method
minimises ``sum_r f_r (w_r - w_hat_r)^T H (w_r - w_hat_r) [+ lam * bits]`` over the rows ``w_r``
instead of the per-weight sum: each row is quantized in scan order and the error of every weight
moves the targets of the weights after it (``w'_j -= e_i U_ij / U_ii``, ``H^-1 = U^T U``), so that
later weights cancel what earlier ones got wrong where H says the output cannot tell them apart.
``importance`` must then be one value per row (``f_r``; shape ``(rows, 1)`` broadcasts).
``hessian_damp`` (default ``config.HESSIAN_DAMP``) adds ``damp * mean(diag H)`` to the diagonal
before factoring (estimates from few samples are singular or overfit). H is used at its own scale:
normalise it (mean diagonal 1)
to keep ``lam`` meaning what it means without it. Reconstruction is unchanged: the decoder never
sees H. "nearest" with H is GPTQ's rounding; "trellis" keeps one compensated row per state.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _core
from .config import HESSIAN_DAMP, METHODS, SIZE_TOLERANCE

__all__ = [
    "METHODS",
    "channel_scale_exps",
    "channel_scales",
    "dequantize",
    "feedback_factor",
    "feedback_inputs",
    "quantize",
    "quantize_info",
    "rate_bits",
]


def _method(method) -> _core.QuantMethod:
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, one of {sorted(METHODS)}, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    return _core.QuantMethod.__members__[method]


def _positive_finite(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _renamed(rows_per_block, chunk_rows):
    """``rows_per_block``, or its deprecated name ``chunk_rows`` (with a warning to the caller's caller)."""
    if chunk_rows is None:
        return rows_per_block
    if rows_per_block is not None:
        raise TypeError("give rows_per_block only (chunk_rows is its deprecated name)")
    warnings.warn("chunk_rows= is deprecated; use rows_per_block=", DeprecationWarning, stacklevel=3)
    return chunk_rows


def _rows_per_block(rows_per_block) -> int:
    """None -> 0 (one block); otherwise a positive int."""
    if rows_per_block is None:
        return 0
    if isinstance(rows_per_block, bool) or not isinstance(rows_per_block, (int, np.integer)) or rows_per_block < 1:
        raise ValueError(f"rows_per_block must be a positive int or None, got {rows_per_block!r}")
    return int(rows_per_block)


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
    if f.dtype == np.bool_ or not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
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


def feedback_factor(hessian, cols: int | None = None, damp: float = HESSIAN_DAMP) -> np.ndarray:
    """U, the upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1`` (float64, C order), that
    the quantizers take for error feedback (module docstring). ``cols``: the expected size.
    ValueError for a non-square, non-finite or not symmetric H, a negative damp, or an H that is
    not positive definite after damping."""
    h = np.asarray(hessian, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or (cols is not None and h.shape[0] != cols):
        want = "square" if cols is None else f"({cols}, {cols})"
        raise ValueError(f"hessian must be a {want} matrix, got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("hessian has non-finite entries")
    try:
        damp = float(damp)
    except (TypeError, ValueError):
        raise TypeError(f"hessian_damp must be a real number, got {type(damp).__name__}") from None
    if not (np.isfinite(damp) and damp >= 0):
        raise ValueError(f"hessian_damp must be finite and >= 0, got {damp!r}")
    if h.size == 0:
        return h.copy()
    scale = float(np.max(np.abs(h)))
    if not np.allclose(h, h.T, rtol=1e-5, atol=1e-8 * scale):
        raise ValueError("hessian must be symmetric")
    h = 0.5 * (h + h.T)
    mean_diag = float(np.mean(np.diag(h)))
    if not mean_diag > 0:
        raise ValueError("hessian must have a positive mean diagonal")
    h[np.diag_indices_from(h)] += damp * mean_diag
    try:
        # H = T T^T with T upper triangular (Cholesky of H in reversed order); then H^-1 = U^T U with
        # U = T^-1, also upper: one factorisation and one triangular inverse, no explicit H^-1.
        t = np.linalg.cholesky(h[::-1, ::-1])[::-1, ::-1]
        u = np.linalg.solve(t, np.eye(h.shape[0]))
    except np.linalg.LinAlgError:
        raise ValueError("hessian is not positive definite (raise hessian_damp)") from None
    if not np.all(np.isfinite(u)) or not np.all(np.diag(u) > 0):
        raise ValueError("hessian is too ill-conditioned (raise hessian_damp)")
    return np.ascontiguousarray(u)


def has_curvature(block) -> bool:
    """Whether a hessian block can weigh error feedback: a finite, positive mean diagonal."""
    h = np.asarray(block, dtype=np.float64)
    mean_diag = float(np.mean(np.diag(h))) if h.ndim == 2 and h.size else 0.0
    return bool(np.isfinite(mean_diag) and mean_diag > 0)


def _normalised(block, what: str) -> np.ndarray:
    h = np.asarray(block, dtype=np.float64)
    if not has_curvature(h):
        raise ValueError(f"a {what} needs a finite, positive mean diagonal")
    return h / float(np.mean(np.diag(h)))


def feedback_inputs(shape, importance=None, hessian=None, row_hessian=None):
    """``(importance, hessian, row_hessian)`` as :func:`nnpress.compress` and
    :func:`nnpress.tune.apply_plan` hand them to :func:`quantize` for error feedback: each block
    divided by its mean diagonal (so that the quadratic form has the scale of the per-weight
    ``sum F_i e_i^2`` it replaces), and the per-weight importance reduced to what the blocks do
    not already say: with a column block, its row means (one value per row, shape
    ``(rows, 1, ...)``); with a row block too, nothing (None); with a row block alone, each row
    divided by its mean. Without blocks everything comes back unchanged. ValueError for a block
    without a finite positive mean diagonal."""
    h = None if hessian is None else _normalised(hessian, "hessian")
    g = None if row_hessian is None else _normalised(row_hessian, "row hessian")
    if importance is not None and (h is not None or g is not None):
        shape = tuple(shape)
        rows = shape[0] if len(shape) >= 2 else 1
        f = np.broadcast_to(np.asarray(importance, np.float64), shape).reshape(rows, -1)
        means = f.mean(1, keepdims=True)
        if g is not None:
            importance = None if h is not None else (f / np.where(means > 0, means, 1.0)).reshape(shape)
        else:
            importance = means.reshape((rows,) + (1,) * max(len(shape) - 1, 0))
    return importance, h, g


def rows_cols(shape) -> tuple[int, int]:
    """(rows, cols) of a shape as the coder and the quantizers see it (C++ ``rows_cols_of``): the
    first dimension and the flattened rest for rank >= 2, else one row."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if len(shape) >= 2:
        return int(shape[0]), (n // int(shape[0]) if shape[0] else 0)
    return (1 if n else 0), n


def _scale_vector(v, n: int, name: str) -> np.ndarray | None:
    """None, or a float64 vector of n finite values > 0."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1) if a.ndim <= 1 else None
    if a is None or a.size != n:
        raise ValueError(
            f"{name} must be 1-D with {n} values (one per {'row' if name == 'row_scale' else 'column'}), "
            f"got shape {np.shape(v)}"
        )
    if n and not (np.all(np.isfinite(a)) and np.all(a > 0)):
        raise ValueError(f"{name} values must be finite and > 0")
    return a


def channel_scales(exps) -> np.ndarray:
    """The scales ``2**(e/8)`` (float64) of int8 exponents, bit-identical to what the ``.nnp`` decoder
    forms (a table of correctly rounded ``2**(k/8)``, no libm)."""
    e = np.asarray(exps)
    if e.dtype == np.bool_ or not np.issubdtype(e.dtype, np.integer):
        raise TypeError(f"exponents must be integers, got dtype {e.dtype}")
    if e.size and (e.min() < -128 or e.max() > 127):
        raise ValueError("exponents must lie in [-128, 127]")
    flat = np.ascontiguousarray(e, dtype=np.int8).reshape(-1)
    return _core.channel_scales_of_exps(flat).reshape(e.shape)


def channel_scale_exps(scales) -> np.ndarray:
    """Nearest int8 exponents ``e`` (``scale ~ 2**(e/8)``, clamped to [-128, 127]) of positive scales."""
    a = np.asarray(scales, dtype=np.float64)
    if a.size and not (np.all(np.isfinite(a)) and np.all(a > 0)):
        raise ValueError("scales must be finite and > 0")
    return _core.channel_scale_exps_of(np.ascontiguousarray(a).reshape(-1)).reshape(a.shape)


def _quantize_core(
    w,
    step,
    lam=0.0,
    importance=None,
    method="nearest",
    *,
    rows_per_block=None,
    threads=None,
    want_recon=False,
    size_tolerance=SIZE_TOLERANCE,
    row_scale=None,
    col_scale=None,
    hessian=None,
    hessian_damp=HESSIAN_DAMP,
    row_hessian=None,
):
    """``(levels, reconstruction or None, _core.QuantResult)``: the checks and conversions of every
    public quantizer entry point, then one call into C++."""
    if not _core.HAS_ENCODER:
        raise RuntimeError("this nnpress build has no encoder (NNPRESS_ENCODER=OFF)")
    options = _core.QuantOptions()
    options.method = _method(method)
    options.step = _positive_finite(step, "step")
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__}") from None
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    options.lam = lam
    options.rows_per_block = _rows_per_block(rows_per_block)
    if threads is None:
        threads = 0
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be a non-negative int or None, got {threads!r}")
    options.threads = int(threads)
    options.size_tolerance = float(size_tolerance)
    arr = _weights(w)
    f = _importance(importance, arr.shape)
    rows, cols = rows_cols(arr.shape)
    rs = _scale_vector(row_scale, rows, "row_scale")
    cs = _scale_vector(col_scale, cols, "col_scale")
    fb = None if hessian is None else feedback_factor(hessian, cols, hessian_damp)
    rfb = None if row_hessian is None else feedback_factor(row_hessian, rows, hessian_damp)
    levels, recon, result = _core.quantize(
        arr,
        options,
        importance=f,
        row_scale=rs,
        col_scale=cs,
        feedback=fb,
        row_feedback=rfb,
        want_recon=bool(want_recon),
    )
    levels = levels.reshape(arr.shape)
    return levels, (None if recon is None else recon.reshape(arr.shape)), result


def quantize(
    w,
    step,
    lam=0.0,
    importance=None,
    method="nearest",
    *,
    rows_per_block=None,
    threads=None,
    return_reconstruction=False,
    row_scale=None,
    col_scale=None,
    hessian=None,
    hessian_damp=HESSIAN_DAMP,
    row_hessian=None,
    chunk_rows=None,
):
    """Quantize weights ``w`` (float16/32/64, any shape up to rank 8) to int32 levels of the same
    shape.

    ``importance`` holds the per-weight F_i >= 0 (broadcastable to ``w``; None = all ones).
    ``rows_per_block``: contexts restart every ``rows_per_block`` rows, matching a ``.nnp`` file that
    codes row blocks independently (None: one block; ``chunk_rows`` is its deprecated name);
    blocks run on ``threads`` workers (None or 0: all cores) with identical results for any thread
    count. With ``return_reconstruction=True`` returns ``(levels, w_hat)``, ``w_hat`` the float32
    reconstruction the search evaluated, identical to ``dequantize(levels, step, method)`` (with the
    same scales).
    ``row_scale``/``col_scale``: optional channel scales (module docstring): weight (i, j) uses the
    step ``(step * row_scale[i]) * col_scale[j]``.
    ``hessian`` / ``hessian_damp``: error feedback inside each row (module docstring);
    ``row_hessian``: a ``(rows, rows)`` block for feedback across rows (module docstring).

    Raises ``ValueError`` for a NaN/infinite weight, ``|w / step| >= 2**30``, a negative or
    non-finite importance, a bad step/lam/method, or an importance that does not broadcast;
    ``TypeError`` for non-float weights.
    """
    levels, recon, _ = _quantize_core(
        w,
        step,
        lam,
        importance,
        method,
        rows_per_block=_renamed(rows_per_block, chunk_rows),
        threads=threads,
        want_recon=return_reconstruction,
        row_scale=row_scale,
        col_scale=col_scale,
        hessian=hessian,
        hessian_damp=hessian_damp,
        row_hessian=row_hessian,
    )
    return (levels, recon) if return_reconstruction else levels


def quantize_info(
    w,
    step,
    lam=0.0,
    importance=None,
    method="nearest",
    *,
    rows_per_block=None,
    threads=None,
    row_scale=None,
    col_scale=None,
    hessian=None,
    hessian_damp=HESSIAN_DAMP,
    row_hessian=None,
    chunk_rows=None,
):
    """Like :func:`quantize`, returning ``(levels, w_hat, info)`` where ``info`` has the level
    parameters the search priced with (``unary_len``, ``eg_order``), its rate estimate
    ``rate_bits`` (equal to ``nnpress.estimate_bits(levels)`` when those are the parameters the
    encoder picks and ``rows_per_block`` is None; for "nearest", which prices nothing, rate 0 and
    the default parameters), the weighted distortion
    ``sum F_i (w_i - w_hat_i)^2`` (with a hessian: ``sum_r f_r e_r^T H e_r``, H damped) and the number
    of ``passes``."""
    levels, recon, r = _quantize_core(
        w,
        step,
        lam,
        importance,
        method,
        rows_per_block=_renamed(rows_per_block, chunk_rows),
        threads=threads,
        want_recon=True,
        row_scale=row_scale,
        col_scale=col_scale,
        hessian=hessian,
        hessian_damp=hessian_damp,
        row_hessian=row_hessian,
    )
    info = {
        "unary_len": r.params.unary_len,
        "eg_order": r.params.eg_order,
        "rate_bits": r.rate_bits,
        "distortion": r.distortion,
        "passes": r.passes,
    }
    return levels, recon, info


def _int32_levels(q) -> np.ndarray:
    """q as an int32 array of its shape: TypeError for non-integer arrays, ValueError for values
    outside the int32 range (never wrapped)."""
    arr = np.asarray(q)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"levels must be an integer array, got dtype {arr.dtype}")
    if (
        arr.dtype != np.int32
        and arr.size
        and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max)
    ):
        raise ValueError("levels outside the int32 range")
    return np.ascontiguousarray(arr, dtype=np.int32).reshape(arr.shape)


def dequantize(q, step, method="nearest", *, row_scale=None, col_scale=None) -> np.ndarray:
    """Reconstruct float32 weights from int32 levels: ``q * step`` for "nearest"/"rdoq", the
    dependent-quantization state machine (restarting at every row) for "trellis"; with channel
    scales the step of weight (i, j) is ``(step * row_scale[i]) * col_scale[j]``."""
    m = _method(method)
    step = _positive_finite(step, "step")
    levels = _int32_levels(q)
    rows, cols = rows_cols(levels.shape)
    rs = _scale_vector(row_scale, rows, "row_scale")
    cs = _scale_vector(col_scale, cols, "col_scale")
    return _core.dequantize(levels, step, m, rs, cs).reshape(levels.shape)


def rate_bits(levels, unary_len: int, eg_order: int, *, rows_per_block=None, chunk_rows=None) -> float:
    """Bits the coder's contexts predict for int32 ``levels`` coded with the given level params
    (``unary_len`` 0..64, ``eg_order`` 0..30), contexts restarting every ``rows_per_block`` rows
    (None: never; ``chunk_rows`` is its deprecated name). With the ``unary_len``/``eg_order``/
    ``rows_per_block`` of a :func:`quantize_info` call this is exactly its ``rate_bits``;
    :func:`nnpress.estimate_bits` instead picks the params itself."""
    if not _core.HAS_ENCODER:
        raise RuntimeError("this nnpress build has no encoder (NNPRESS_ENCODER=OFF)")
    lv = _int32_levels(levels)
    for name, v in (("unary_len", unary_len), ("eg_order", eg_order)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 or v > 255:
            raise ValueError(f"{name} must be an int, got {v!r}")
    return float(
        _core.rate_bits(lv, int(unary_len), int(eg_order), _rows_per_block(_renamed(rows_per_block, chunk_rows)))
    )
