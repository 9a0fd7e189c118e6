"""Level coding: integer weight levels <-> DeepCABAC bitstreams (numpy only).

The work happens in C++ (``nnpress._core``); this module checks arguments and converts arrays.
"""

from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["decode_levels", "encode_levels", "estimate_bits", "level_stream_info"]

_INT32_MIN, _INT32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max


def _as_int32_levels(levels, what: str = "levels") -> np.ndarray:
    """Return ``levels`` as a C-contiguous int32 array, rejecting non-integers and values outside
    the int32 range (never wrapping them)."""
    arr = np.asarray(levels)
    if arr.size == 0 and not isinstance(levels, np.ndarray) and arr.dtype == np.float64:
        arr = arr.astype(np.int32)  # [] and [[], []] arrive as float64
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim > 8:
        raise ValueError(f"{what} has {arr.ndim} dimensions; at most 8 are supported")
    if arr.dtype.itemsize > 4 or arr.dtype == np.uint32:
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < _INT32_MIN or hi > _INT32_MAX:
                bad = lo if lo < _INT32_MIN else hi
                raise ValueError(f"{what} contains {bad}, outside the codable range [{_INT32_MIN}, {_INT32_MAX}]")
    return np.asarray(arr, dtype=np.int32, order="C")  # (ascontiguousarray would make rank 0 rank 1)


def encode_levels(levels) -> bytes:
    """Encode an integer array of any shape (rank 0-8, empty allowed) as a DeepCABAC level stream.

    The shape travels in the stream. Values must fit in int32; others raise ``ValueError``.
    Non-integer input raises ``TypeError``. Releases the GIL while coding.
    """
    if not _core.HAS_ENCODER:
        raise RuntimeError("this nnpress build has no encoder (NNPRESS_ENCODER=OFF)")
    arr = _as_int32_levels(levels)
    return _core.encode_levels(arr.reshape(-1), list(arr.shape))


def decode_levels(data, *, max_elements: int = 1 << 36) -> np.ndarray:
    """Decode a stream from :func:`encode_levels` into an int32 array of the original shape.

    ``data`` is any bytes-like object. Corrupt, truncated or foreign data raises
    :class:`nnpress.FormatError`; so does a header claiming more than ``max_elements`` levels.
    """
    if isinstance(data, str):
        raise TypeError("data must be bytes-like, not str")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(bytes(view))
    return _core.decode_levels(view.cast("B"), int(max_elements))


def estimate_bits(levels) -> float:
    """Bits the coder's own context models predict for coding ``levels`` (payload only, without
    the few bytes of header, flush and checksum)."""
    arr = _as_int32_levels(levels)
    return float(_core.estimate_bits(arr.reshape(-1), list(arr.shape)))


def level_stream_info(data) -> dict:
    """Header of a level stream (shape, coding parameters, payload size) without decoding it."""
    return _core.level_stream_info(memoryview(data).cast("B"))
