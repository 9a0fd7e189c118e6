"""Peer codecs for nnpress benchmarks: NNCodec (Fraunhofer's NNC reference software), zstd and xz.

Benchmark-only. ``nnpress`` itself never imports this module or NNCodec. Bench scripts do::

    sys.path.insert(0, "<repo>/bench/python")
    import peers

Self-check (run from the repository root; prints sizes, times and fidelity)::

    python bench/python/peers.py            # level coder + tiny CNN + MiniLM at qp -38 and -32
    python bench/python/peers.py --quick    # without MiniLM

Installing NNCodec 2.1.3 on this machine
----------------------------------------
``pip install nncodec`` as it is would fail here, or do damage: its setup.py asks for ``numpy<2`` and
``torchvision>=0.15``, and pip then wants torch 2.14 with the CUDA wheels. What works (system Python, torch
2.13.0+cpu and numpy 2.x already there; the constraints file pins torch/numpy/torchvision)::

    printf 'torch==2.13.0\\nnumpy==2.4.6\\ntorchvision==0.28.0\\n' > /tmp/c.txt
    pip install --no-deps nncodec==2.1.3 torchvision==0.28.0
    pip install zstandard pandas tqdm h5py scikit-learn ptflops torchmetrics pillow \\
                opencv-python-headless -c /tmp/c.txt

nncodec compiles its pybind11 extension ``nncodec.extensions.deepCABAC`` from the sdist with plain
``-std=c++17`` (no ``-march``). NNCodec works with numpy 2 even though it asks for numpy<2.
``import nncodec.nnc`` pulls in torchvision, pandas, cv2, PIL, sklearn, h5py, tqdm, torchmetrics and ptflops,
none of which the coding uses.

The torchvision workaround: torchvision 0.28.0's C++ ops do not load with torch 2.13, and
``torchvision/_meta_registrations.py`` then fails with "operator torchvision::nms does not exist". The
fix is to declare the two operator schemas (``torchvision::nms``, ``torchvision::qnms``) with
``torch.library`` before anything imports torchvision. :func:`install_torchvision_stub` does this, once and
only if the ops are missing. While torchvision is installed, ``transformers`` has the same problem (it
imports torchvision when it is present), so ``minilm.py`` calls the stub too.

Level coding: the lowest level NNCodec offers (``nncodec_encode_levels`` / ``nncodec_decode_levels``)
------------------------------------------------------------------------------------------------------
These calls do what ``nncodec/nnc_core/coder/baseline.py`` does for one tensor, without the NNR
high-level syntax (no NDU headers, no qp or shape in the stream)::

    enc = deepCABAC.Encoder()
    enc.initCtxModels(cabac_unary_length_minus1 + 1, param_opt_flag)     # 11, 1 by default
    enc.encodeLayer(levels_int32, dq_flag, scan_order, general_profile_idc,
                    parent_node_id_present_flag, row_skip_flag, chan_zero_list,
                    HdspMode.AlwaysOff, np.zeros(2, np.int8), codebook_size, codebook_zero_offset)
    data = enc.finish().tobytes()

    dec = deepCABAC.Decoder()
    dec.setStream(np.frombuffer(data + padding, np.uint8))
    dec.initCtxModels(cabac_unary_length_minus1 + 1)
    dec.decodeLayer(out_int32, dq_flag, scan_order, general_profile_idc,
                    parent_node_id_present_flag, HdspMode.AlwaysOff, np.zeros(2, np.int8), 0, 0)
    n_read = dec.finish()                                                   # == len(data)

The defaults match what ``nnc.compress`` does for an ordinary weight tensor: cabac_unary_length_minus1 = 10
(11 greater-than-X flags before the Exp-Golomb remainder), param_opt_flag = 1 (a first pass, run
only to estimate, picks the initial state and adaptation window of each context and signals the choice:
encoding takes two passes), general_profile_idc = 1, scan_order = 0 (row-major), no codebook, no
temporal context (TCA) and no history-dependent significance (HDSP).

* The shape matters. ``layerWidth`` = product of all dims but the first is used by the contexts of the
  neighbouring levels and by row skipping. The stream carries no shape, so pass the same ``shape`` to
  the decoder.
* ``dq_flag`` defaults to 0 here (dependent quantization off): the array holds plain levels. With
  ``dq_flag=1`` the array is NNCodec's DQ *reconstruction index* q (w_hat = q*step). The coder turns
  it into a level with ``(q + sign(q)*(state & 1)) >> 1`` following the 8-state trellis, so only arrays
  that obey the trellis parity (what ``quantLayer(..., dq_flag=1)`` produces) round-trip. Random arrays
  don't.
* The decoder is given a bare pointer and no length. A truncated or corrupt stream can make it read past
  the buffer, so ``nncodec_decode_levels`` copies the data into a buffer padded with zeros and checks that
  the decoder consumed exactly ``len(data)`` bytes. That is a benchmark convenience and no hardening.

Whole-model coding through NNCodec's high-level API (``nncodec_compress_state_dict``)
-----------------------------------------------------------------------------------
The call is ``nncodec.nnc.compress(params, model=<NNRModel|PytorchModel>, bitstream_path=None,
return_bitstream=True, qp=..., use_dq=..., lambda_scale=..., opt_qp=..., nonweight_qp=..., ...)``. It is
the function that both ``nnc.compress_model`` (for an nn.Module) and ``nncodec.nn.encode`` (for a
dict) end in. Decoding is ``nncodec.nnc.decompress(bytearray(data))``. It must get a *bytearray*: for
``bytes`` it tries ``os.path.exists(bytes)`` and exits.

Settings that matter (NNCodec's defaults in brackets):

* ``qp`` [-38 in nnc.compress, -32 in nncodec.nn]: the step is
  ``(4 + (qp & 3)) * 2**((qp >> 2) - 2)`` for qp_density = 2, which doubles every 4 qp. qp -44 gives
  step 2**-13 = 1.22e-4, -38 gives 1.46e-3, -32 gives 3.9e-3 and -20 gives 1.56e-2. For trained
  weights the useful range is about -44 (almost lossless) to -20 (coarse).
* ``use_dq`` [True]: dependent (trellis-coded) quantization with 8 states. The trellis picks
  q (w_hat = q*step) subject to parity, so the level grid is 2*step. At the same qp, DQ gives ~15% fewer
  bits with ~3x the MSE of URQ (a random Gaussian layer: 6.28 against 7.30 bits/weight). NNCodec's own
  helper ``compute_qp_offset_to_dq_equivalent`` says DQ at qp matches URQ at about qp + 4. ``use_dq=False`` is URQ
  (uniform reconstruction, nearest rounding when lambda_scale = 0).
* ``lambda_scale`` [0]: 0 means pure distortion (URQ rounds to the nearest level; DQ runs its trellis
  on MSE only). When > 0, URQ does RDOQ and DQ a trellis with CABAC-context rate estimates. Costs are
  dist*2**15/lambda + rate, with lambda = lambda_scale*ln2/6 (URQ) or lambda_scale*4*ln2/6*0.7 (DQ).
* ``opt_qp`` [False]: a heuristic per tensor, ``qp_t = round(qp*(1 - share_t))`` with
  share = relative size + 0.1*(1 - relative std), capped at 0.15 when > 0.5. Large or high-variance
  tensors get a *less negative* (coarser) qp.
* ``nonweight_qp`` [-75, step 2.4e-6]: used for every tensor whose type is not "weight", so those are
  stored almost exactly. They are still quantized, not copied: DQ at -75, max error ~2-3e-6. Which
  tensors are "weight" depends on ``param_types``:
    - "torch" (default; what ``nnc.compress_model`` does for an nn.Module, ``PytorchModel`` naming rules):
      every tensor with ndim > 1 is a weight, and so is a 1-D tensor whose name contains ".weight",
      which includes the LayerNorm/BatchNorm gammas (quantized with the main qp). 1-D ".bias",
      ".running_mean" and ".running_var" use nonweight_qp.
      "...num_batches_tracked" is dropped by NNCodec (we drop every non-float tensor, see below).
    - "generic" (what ``nncodec.nn.encode(dict)`` does, ``NNRModel``): ndim > 1 is a weight, all 1-D
      tensors use nonweight_qp.
* ``row_skipping`` [True in nncodec.nn, False in nnc.compress]: with profile 1 a flag per tensor row
  marks rows that are all zero. That matters only for pruned models.
* ``param_opt`` [True]: the two-pass context initialisation described above.
* Both qp_density (2) and cabac_unary_length_minus1 (10) are left at their defaults.

What our wrapper changes or adds: non-float tensors (integer buffers) are not given to NNCodec and are
listed in ``info["skipped"]``. Otherwise integer tensors with ndim > 1 would be quantized as weights.
float16/bfloat16 tensors are converted to float32, which NNCodec requires. NNCodec turns 0-d tensors into
shape (1,). ``nncodec_decompress(..., shapes=info["shapes"])`` restores the original shapes.

Timing: ``info["encode_s"]`` is the wall time of the whole ``nnc.compress`` call. It splits into
``quantize_s`` (``approximator.approx``: quantLayer per tensor) and ``entropy_s``
(``coder.encode``: CABAC with two passes per tensor plus the decode again that NNCodec does to
compute entry points). ``decode_s`` is the whole ``nnc.decompress`` call: CABAC decoding
(``entropy_decode_s``) then dequantization and reordering. All of NNCodec runs on one thread.
"""

from __future__ import annotations

import argparse
import lzma
import os
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

NNCODEC_VERSION = "2.1.3"  # the version this harness was written and checked against

__all__ = [
    "generic_codec_timing",
    "import_nncodec",
    "install_torchvision_stub",
    "laplacian_levels",
    "narrowest_int_bytes",
    "nncodec_compress_state_dict",
    "nncodec_decode_levels",
    "nncodec_decompress",
    "nncodec_encode_levels",
    "nncodec_level_coder_timing",
    "nncodec_quantize",
    "nncodec_step_from_qp",
    "time_call",
    "xz_size",
    "zstd_size",
]

# --------------------------------------------------------------------------------------------------
# import helpers
# --------------------------------------------------------------------------------------------------

_TV_STUB_LIB = None  # the torch.library.Library that holds the stub schemas; must stay alive
_NNC: SimpleNamespace | None = None


def _has_torch_op(qualname: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
        return True
    except RuntimeError:
        return False


def install_torchvision_stub() -> bool:
    """Declare the ``torchvision::nms`` and ``torchvision::qnms`` schemas when torchvision's C++ ops are missing.

    Call this before anything imports torchvision (nncodec does; transformers does if torchvision is
    installed). It does nothing when torchvision is already imported, when it is not installed, or when
    the ops already exist. It returns True if it defined the schemas. Only the schemas are declared, with no
    kernel: calling ``torchvision.ops.nms`` still fails, which neither nncodec nor transformers needs.
    """
    global _TV_STUB_LIB
    if _TV_STUB_LIB is not None or "torchvision" in sys.modules:
        return False
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return False
    import torch

    need = [op for op in ("nms", "qnms") if not _has_torch_op(f"torchvision::{op}")]
    if need:
        # A torchvision built for this torch registers its ops when its compiled library loads; declaring
        # them first would make that registration fail. Load it now (torchvision's import loads the same
        # file: a no-op then) and stub only what is still missing.
        import glob
        import os

        for so in glob.glob(
            os.path.join(importlib.util.find_spec("torchvision").submodule_search_locations[0], "_C*.so")
        ):
            try:
                torch.ops.load_library(so)
            except (OSError, RuntimeError):
                pass  # built for another torch: its ops stay missing
        need = [op for op in need if not _has_torch_op(f"torchvision::{op}")]
    if not need:
        return False
    lib = torch.library.Library("torchvision", "FRAGMENT")
    schemas = {
        "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms": "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
    }
    for op in need:
        lib.define(schemas[op])
    _TV_STUB_LIB = lib
    return True


def import_nncodec() -> SimpleNamespace:
    """Import NNCodec once (with the torchvision workaround) and return the parts we use.

    The result has these attributes: ``deepCABAC`` (the pybind11 CABAC module), ``nnc``
    (``nncodec.nnc``: compress/decompress), ``NNRModel`` and ``PytorchModel`` (the two ways of typing
    parameters) and ``version``.
    """
    global _NNC
    if _NNC is not None:
        return _NNC
    import importlib.util

    if importlib.util.find_spec("nncodec") is None:
        raise ImportError(
            "NNCodec is not installed; it is a benchmark-only dependency of nnpress. Install it without "
            "letting pip replace torch/numpy:\n"
            "  pip install --no-deps nncodec==2.1.3 torchvision==0.28.0\n"
            "  pip install zstandard pandas tqdm h5py scikit-learn ptflops torchmetrics pillow "
            "opencv-python-headless -c <constraints pinning torch==2.13.0 numpy torchvision==0.28.0>\n"
            "(see the docstring of bench/python/peers.py)"
        )
    install_torchvision_stub()
    try:
        from nncodec import nnc
        from nncodec.extensions import deepCABAC
        from nncodec.framework.pytorch_model import PytorchModel
        from nncodec.nnc_core.nnr_model import NNRModel
    except Exception as e:  # pragma: no cover - depends on the machine
        raise ImportError(
            f"NNCodec is installed but failed to import ({type(e).__name__}: {e}). "
            "Its import chain needs torch, torchvision, pandas, cv2, PIL, sklearn, h5py, "
            "tqdm, torchmetrics and ptflops; see bench/python/peers.py."
        ) from e
    try:
        from importlib.metadata import version

        ver = version("nncodec")
    except Exception:  # pragma: no cover
        ver = "unknown"
    _NNC = SimpleNamespace(deepCABAC=deepCABAC, nnc=nnc, NNRModel=NNRModel, PytorchModel=PytorchModel, version=ver)
    return _NNC


# --------------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------------


def time_call(fn: Callable[..., Any], *args: Any, repeat: int = 1, **kwargs: Any) -> tuple[Any, float]:
    """Run ``fn(*args, **kwargs)`` ``repeat`` times. Return (last result, best wall time in seconds)."""
    best = float("inf")
    result = None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return result, best


def laplacian_levels(
    n: int, scale: float = 1.0, seed: int = 0, shape: tuple[int, ...] | None = None, clip: int = 1 << 15
) -> np.ndarray:
    """Integer levels round(Laplace(0, scale)), int32, clipped to ±clip. A stand-in for quantized weights."""
    rng = np.random.default_rng(seed)
    x = np.rint(rng.laplace(0.0, scale, size=n)).clip(-clip, clip).astype(np.int32)
    return x.reshape(shape) if shape is not None else x


# --------------------------------------------------------------------------------------------------
# NNCodec level coder (pybind deepCABAC)
# --------------------------------------------------------------------------------------------------

_DECODER_PAD = 64  # zero bytes appended for the decoder, which reads through a bare pointer


def _as_levels(levels: Any) -> np.ndarray:
    a = np.asarray(levels)
    if a.dtype.kind not in "iu" and a.dtype != np.bool_:
        raise TypeError(f"levels must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError("levels do not fit in int32")
    a = np.ascontiguousarray(a, dtype=np.int32)
    return a.reshape(1) if a.ndim == 0 else a


def _chan_zero_list(levels: np.ndarray, row_skip: bool) -> np.ndarray:
    rows = levels.shape[0]
    if not row_skip or levels.ndim < 2:
        return np.zeros(rows, dtype=np.int32)
    return (~levels.reshape(rows, -1).any(axis=1)).astype(np.int32)


def _encode_prepared(
    dc: Any,
    lv: np.ndarray,
    chan: np.ndarray,
    dq_flag: int,
    cabac_unary_length_minus1: int,
    param_opt: bool,
    general_profile_idc: int,
    scan_order: int,
    row_skip: bool,
) -> bytes:
    enc = dc.Encoder()
    enc.initCtxModels(cabac_unary_length_minus1 + 1, 1 if param_opt else 0)
    enc.encodeLayer(
        lv,
        int(dq_flag),
        int(scan_order),
        int(general_profile_idc),
        0,
        1 if row_skip else 0,
        chan,
        dc.HdspMode.AlwaysOff,
        np.zeros(2, dtype=np.int8),
        0,
        0,
    )
    return enc.finish().tobytes()


def _decode_prepared(
    dc: Any,
    buf: np.ndarray,
    out: np.ndarray,
    dq_flag: int,
    cabac_unary_length_minus1: int,
    general_profile_idc: int,
    scan_order: int,
) -> int:
    dec = dc.Decoder()
    dec.setStream(buf)
    dec.initCtxModels(cabac_unary_length_minus1 + 1)
    dec.decodeLayer(
        out,
        int(dq_flag),
        int(scan_order),
        int(general_profile_idc),
        0,
        dc.HdspMode.AlwaysOff,
        np.zeros(2, dtype=np.int8),
        0,
        0,
    )
    try:
        return int(dec.finish())
    except RuntimeError as e:  # "Terminating Bin not received!": wrong shape/options or corrupt data
        raise ValueError(f"NNCodec decoder: {str(e).strip()}") from e


def nncodec_encode_levels(
    levels: np.ndarray,
    *,
    dq_flag: int = 0,
    cabac_unary_length_minus1: int = 10,
    param_opt: bool = True,
    general_profile_idc: int = 1,
    scan_order: int = 0,
    row_skip: bool = False,
) -> bytes:
    """CABAC-code an integer level array with NNCodec's DeepCABAC engine (see the module docstring).

    The stream has only the CABAC payload: no shape, no qp. Decode it with :func:`nncodec_decode_levels`
    and the same shape and options.
    """
    dc = import_nncodec().deepCABAC
    lv = _as_levels(levels)
    if lv.size == 0:
        raise ValueError("cannot code an empty array")
    return _encode_prepared(
        dc,
        lv,
        _chan_zero_list(lv, row_skip),
        dq_flag,
        cabac_unary_length_minus1,
        param_opt,
        general_profile_idc,
        scan_order,
        row_skip,
    )


def nncodec_decode_levels(
    data: bytes,
    shape: tuple[int, ...] | int,
    *,
    dq_flag: int = 0,
    cabac_unary_length_minus1: int = 10,
    general_profile_idc: int = 1,
    scan_order: int = 0,
) -> np.ndarray:
    """Inverse of :func:`nncodec_encode_levels`. Returns an int32 array of ``shape``.

    Raises ValueError if the decoder did not consume exactly ``len(data)`` bytes.
    """
    dc = import_nncodec().deepCABAC
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    out = np.zeros(shape if shape else (1,), dtype=np.int32)
    buf = np.frombuffer(bytes(data) + b"\0" * _DECODER_PAD, dtype=np.uint8)
    n_read = _decode_prepared(dc, buf, out, dq_flag, cabac_unary_length_minus1, general_profile_idc, scan_order)
    if n_read != len(data):
        raise ValueError(
            f"NNCodec decoder consumed {n_read} bytes of a {len(data)}-byte stream "
            "(wrong shape/options or corrupt data)"
        )
    return out.reshape(shape)


def nncodec_level_coder_timing(
    levels: np.ndarray, *, repeat: int = 3, verify: bool = True, **options: Any
) -> dict[str, Any]:
    """Code ``levels`` with NNCodec's engine and time only the coder calls (best of ``repeat``).

    Input conversion, building the row-skip list, padding the stream and allocating the output happen
    outside the timed region. Returns a dict with nbytes, bits_per_level, encode_s, decode_s,
    encode_ns_per_level, decode_ns_per_level and roundtrip_ok.
    """
    dc = import_nncodec().deepCABAC
    lv = _as_levels(levels)
    dq_flag = options.pop("dq_flag", 0)
    cul = options.pop("cabac_unary_length_minus1", 10)
    param_opt = options.pop("param_opt", True)
    gpi = options.pop("general_profile_idc", 1)
    scan_order = options.pop("scan_order", 0)
    row_skip = options.pop("row_skip", False)
    if options:
        raise TypeError(f"unknown options: {sorted(options)}")
    chan = _chan_zero_list(lv, row_skip)
    data, t_enc = time_call(
        _encode_prepared, dc, lv, chan, dq_flag, cul, param_opt, gpi, scan_order, row_skip, repeat=repeat
    )
    buf = np.frombuffer(data + b"\0" * _DECODER_PAD, dtype=np.uint8)
    t_dec = float("inf")
    out = np.zeros(lv.shape, dtype=np.int32)
    n_read = -1
    for _ in range(max(1, repeat)):
        out = np.zeros(lv.shape, dtype=np.int32)
        t0 = time.perf_counter()
        n_read = _decode_prepared(dc, buf, out, dq_flag, cul, gpi, scan_order)
        t_dec = min(t_dec, time.perf_counter() - t0)
    ok = bool(n_read == len(data) and np.array_equal(out, lv)) if verify else None
    n = lv.size
    return {
        "nbytes": len(data),
        "bits_per_level": 8.0 * len(data) / n,
        "encode_s": t_enc,
        "decode_s": t_dec,
        "encode_ns_per_level": 1e9 * t_enc / n,
        "decode_ns_per_level": 1e9 * t_dec / n,
        "roundtrip_ok": ok,
        "data": data,
    }


def nncodec_step_from_qp(qp: int, qp_density: int = 2) -> float:
    """NNCodec's step size for an integer qp: (2**d + (qp mod 2**d)) * 2**(floor(qp / 2**d) - d)."""
    k = 1 << qp_density
    return float((k + (qp & (k - 1))) * 2.0 ** ((qp >> qp_density) - qp_density))


def nncodec_quantize(
    w: np.ndarray,
    qp: int,
    *,
    use_dq: bool = True,
    lambda_scale: float = 0.0,
    qp_density: int = 2,
    cabac_unary_length_minus1: int = 10,
) -> tuple[np.ndarray, float]:
    """Quantize one tensor with NNCodec's own quantizer (``Encoder.quantLayer``, as ``nnc.compress`` does).

    Returns (q int32, step), where the reconstruction is ``q * step``. With use_dq, q is the DQ
    reconstruction index; code it with ``nncodec_encode_levels(q, dq_flag=1)``.
    """
    dc = import_nncodec().deepCABAC
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    if w32.ndim == 0:
        w32 = w32.reshape(1)
    q = np.zeros(w32.shape, dtype=np.int32)
    enc = dc.Encoder()
    enc.initCtxModels(cabac_unary_length_minus1, 0)
    qp_used = enc.quantLayer(
        w32, q, 1 if use_dq else 0, qp_density, int(qp), float(lambda_scale), cabac_unary_length_minus1, 0, 1
    )
    return q, nncodec_step_from_qp(int(qp_used), qp_density)


# --------------------------------------------------------------------------------------------------
# NNCodec whole-model coding
# --------------------------------------------------------------------------------------------------


def _to_numpy_params(state_dict: Any) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]], list[str]]:
    """Float tensors as float32 numpy (name order kept), original shapes, and names we skipped."""
    if hasattr(state_dict, "state_dict") and callable(state_dict.state_dict):
        state_dict = state_dict.state_dict()
    params: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    skipped: list[str] = []
    for name, t in state_dict.items():
        if hasattr(t, "detach"):  # torch.Tensor
            if not t.is_floating_point():
                skipped.append(name)
                continue
            a = t.detach().to("cpu").float().numpy()
        else:
            a = np.asarray(t)
            if a.dtype.kind != "f":
                skipped.append(name)
                continue
        a = np.array(a, dtype=np.float32, order="C", copy=True)  # (ascontiguousarray would turn 0-d into 1-d)
        shapes[name] = tuple(a.shape)
        params[name] = a
    if not params:
        raise ValueError("state dict has no floating-point tensors")
    return params, shapes, skipped


def nncodec_compress_state_dict(
    state_dict: Any,
    qp: int = -38,
    use_dq: bool = True,
    lambda_scale: float = 0.0,
    opt_qp: bool = False,
    *,
    nonweight_qp: int = -75,
    param_types: str = "torch",
    row_skipping: bool = True,
    param_opt: bool = True,
    qp_density: int = 2,
    cabac_unary_length_minus1: int = 10,
    qp_per_tensor: dict[str, int] | None = None,
    verbose: bool = False,
) -> tuple[bytes, dict[str, Any]]:
    """Compress a state dict (torch tensors or numpy arrays, or an nn.Module) with ``nncodec.nnc.compress``.

    Returns ``(bitstream, info)``. Among the keys of info: nbytes, n_params (all float elements given to
    NNCodec), bits_per_param, encode_s, quantize_s, entropy_s, qp (per tensor, as NNCodec used it),
    param_type (per tensor), shapes, skipped. Settings are explained in the module docstring.
    """
    if param_types not in ("torch", "generic"):
        raise ValueError("param_types must be 'torch' or 'generic'")
    N = import_nncodec()
    params, shapes, skipped = _to_numpy_params(state_dict)
    if param_types == "torch":
        import torch

        mdl = N.PytorchModel()
        params = mdl.init_model_from_dict({k: torch.from_numpy(v) for k, v in params.items()})
    else:
        mdl = N.NNRModel()
        params = mdl.init_model_from_dict(params)

    from nncodec.nnc_core import approximator, coder  # the module objects nnc.compress looks up at call time

    phase: dict[str, Any] = {"quantize_s": 0.0, "entropy_s": 0.0, "qp": {}}
    orig_approx, orig_encode = approximator.approx, coder.encode

    def timed_approx(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = orig_approx(*a, **k)
        phase["quantize_s"] += time.perf_counter() - t0
        phase["qp"] = {n: int(v) for n, v in out["qp"].items()}
        phase["dq_flag"] = {n: int(v) for n, v in out["dq_flag"].items()}
        return out

    def timed_encode(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = orig_encode(*a, **k)
        phase["entropy_s"] += time.perf_counter() - t0
        return out

    approximator.approx, coder.encode = timed_approx, timed_encode
    try:
        t0 = time.perf_counter()
        bs = N.nnc.compress(
            params,
            bitstream_path=None,
            qp=int(qp),
            qp_density=qp_density,
            nonweight_qp=nonweight_qp,
            qp_per_tensor=qp_per_tensor,
            use_dq=bool(use_dq),
            lambda_scale=float(lambda_scale),
            param_opt=bool(param_opt),
            cabac_unary_length_minus1=cabac_unary_length_minus1,
            opt_qp=bool(opt_qp),
            row_skipping=bool(row_skipping),
            model=mdl,
            return_bitstream=True,
            verbose=verbose,
        )
        encode_s = time.perf_counter() - t0
    finally:
        approximator.approx, coder.encode = orig_approx, orig_encode
    data = bytes(bs)
    n_params = int(sum(v.size for v in params.values()))
    info = {
        "nbytes": len(data),
        "n_params": n_params,
        "bits_per_param": 8.0 * len(data) / n_params,
        "encode_s": encode_s,
        "quantize_s": phase["quantize_s"],
        "entropy_s": phase["entropy_s"],
        "qp": phase["qp"],
        "dq_flag": phase.get("dq_flag", {}),
        "param_type": dict(mdl.model_info["parameter_type"]),
        "step": {n: nncodec_step_from_qp(q, qp_density) for n, q in phase["qp"].items()},
        "shapes": shapes,
        "skipped": skipped,
        "settings": {
            "qp": int(qp),
            "use_dq": bool(use_dq),
            "lambda_scale": float(lambda_scale),
            "opt_qp": bool(opt_qp),
            "nonweight_qp": nonweight_qp,
            "param_types": param_types,
            "row_skipping": bool(row_skipping),
            "param_opt": bool(param_opt),
            "qp_density": qp_density,
            "cabac_unary_length_minus1": cabac_unary_length_minus1,
        },
        "nncodec_version": N.version,
    }
    return data, info


def nncodec_decompress(
    data: bytes, *, shapes: dict[str, tuple[int, ...]] | None = None, return_info: bool = False
) -> Any:
    """Decode an NNCodec bitstream with ``nncodec.nnc.decompress``. Returns a dict[str, np.ndarray(float32)].

    With ``shapes`` (for example ``info["shapes"]`` from compression), tensors are reshaped to their original
    shapes, which undoes NNCodec's 0-d -> (1,). With ``return_info`` it returns ``(params, info)``, where info
    has decode_s (the whole call) and entropy_decode_s (``coder.decode``).
    """
    N = import_nncodec()
    from nncodec.nnc_core import coder

    phase = {"entropy_decode_s": 0.0}
    orig_decode = coder.decode

    def timed_decode(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = orig_decode(*a, **k)
        phase["entropy_decode_s"] += time.perf_counter() - t0
        return out

    coder.decode = timed_decode
    try:
        t0 = time.perf_counter()
        rec = N.nnc.decompress(bytearray(data))
        decode_s = time.perf_counter() - t0
    finally:
        coder.decode = orig_decode
    out: dict[str, np.ndarray] = {}
    for name, arr in rec.items():
        a = np.asarray(arr)
        if shapes is not None and name in shapes:
            a = a.reshape(shapes[name])
        out[name] = a
    if return_info:
        return out, {"decode_s": decode_s, "entropy_decode_s": phase["entropy_decode_s"]}
    return out


# --------------------------------------------------------------------------------------------------
# generic compressors on packed levels
# --------------------------------------------------------------------------------------------------


def narrowest_int_bytes(levels: Any) -> bytes:
    """The levels as raw little-endian bytes of the narrowest of int8/int16/int32 that holds them all."""
    a = np.asarray(levels)
    if a.dtype.kind not in "iu" and a.dtype != np.bool_:
        raise TypeError(f"levels must be integers, got dtype {a.dtype}")
    a = a.reshape(-1)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.ascontiguousarray(a, dtype=np.dtype(dt).newbyteorder("<")).tobytes()
    raise ValueError("levels do not fit in int32")


def _zstd_compress(raw: bytes, level: int = 19) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(raw)


def _zstd_decompress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data)


def _xz_compress(raw: bytes, preset: int = 9) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=preset)


def zstd_size(levels: Any, level: int = 19) -> int:
    """Bytes of the narrowest-int packing of ``levels`` compressed by zstd (default level 19)."""
    return len(_zstd_compress(narrowest_int_bytes(levels), level))


def xz_size(levels: Any, preset: int = 9) -> int:
    """Bytes of the narrowest-int packing of ``levels`` compressed by xz (default preset 9)."""
    return len(_xz_compress(narrowest_int_bytes(levels), preset))


def generic_codec_timing(levels: Any, *, repeat: int = 1) -> dict[str, dict[str, float]]:
    """Size, compress and decompress time (best of ``repeat``) for zstd-19 and xz-9 on the packed levels.

    Packing is not timed. The decompressed bytes are checked against the input.
    """
    raw = narrowest_int_bytes(levels)
    n = int(np.asarray(levels).size)
    out: dict[str, dict[str, float]] = {}
    for name, comp, decomp in (("zstd19", _zstd_compress, _zstd_decompress), ("xz9", _xz_compress, lzma.decompress)):
        data, t_enc = time_call(comp, raw, repeat=repeat)
        back, t_dec = time_call(decomp, data, repeat=repeat)
        if back != raw:
            raise AssertionError(f"{name} round trip failed")
        out[name] = {
            "nbytes": len(data),
            "bits_per_level": 8.0 * len(data) / max(n, 1),
            "encode_s": t_enc,
            "decode_s": t_dec,
        }
    return out


# --------------------------------------------------------------------------------------------------
# self-check
# --------------------------------------------------------------------------------------------------


def _tiny_cnn_state_dict() -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    model.train()
    with torch.no_grad():  # give the BatchNorm layers non-trivial running statistics
        for _ in range(3):
            model(torch.randn(8, 3, 16, 16))
    model.eval()
    return model.state_dict()


def _max_abs_err(ref: dict[str, Any], rec: dict[str, np.ndarray]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for name, arr in rec.items():
        t = ref[name]
        r = t.detach().float().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float32)
        e = float(np.max(np.abs(r.reshape(arr.shape) - arr))) if arr.size else 0.0
        if e > worst:
            worst, where = e, name
    return worst, where


def _self_check(quick: bool, minilm_qps: list[int]) -> int:
    cmd = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    print(f"$ {cmd}")
    t_imp = time.perf_counter()
    N = import_nncodec()
    print(
        f"nncodec {N.version} imported in {time.perf_counter() - t_imp:.2f} s "
        f"(torchvision stub installed: {_TV_STUB_LIB is not None})"
    )
    failures = 0

    # 1. level coder on 1M Laplacian levels
    lv = laplacian_levels(1_000_000, scale=2.0, seed=1)
    r = nncodec_level_coder_timing(lv, repeat=3)
    data = r.pop("data")
    back = nncodec_decode_levels(data, lv.shape)
    ok = r["roundtrip_ok"] and np.array_equal(back, lv)
    failures += not ok
    h = np.bincount(np.abs(lv)) / lv.size
    print(
        f"\n[levels] 1,000,000 Laplacian levels (scale 2.0, range {lv.min()}..{lv.max()}, "
        f"zero fraction {h[0]:.3f}), shape (1000000,), dq off"
    )
    print(
        f"  NNCodec CABAC : {r['nbytes']:>9,d} B  {r['bits_per_level']:.4f} bits/level  "
        f"encode {r['encode_s'] * 1e3:7.1f} ms ({r['encode_ns_per_level']:.0f} ns/level)  "
        f"decode {r['decode_s'] * 1e3:7.1f} ms ({r['decode_ns_per_level']:.0f} ns/level)  "
        f"round trip {'OK' if ok else 'FAILED'}"
    )
    for name, g in generic_codec_timing(lv).items():
        print(
            f"  {name:<14}: {g['nbytes']:>9,d} B  {g['bits_per_level']:.4f} bits/level  "
            f"encode {g['encode_s'] * 1e3:7.1f} ms  decode {g['decode_s'] * 1e3:7.1f} ms"
        )
    lv2 = lv.reshape(1000, 1000)
    r2 = nncodec_level_coder_timing(lv2, repeat=1)
    failures += not r2["roundtrip_ok"]
    print(
        f"  same levels as shape (1000, 1000): {r2['nbytes']:,d} B, round trip "
        f"{'OK' if r2['roundtrip_ok'] else 'FAILED'}"
    )
    # DQ-index round trip through NNCodec's own quantizer
    w = np.random.default_rng(2).normal(0, 0.05, size=(384, 1536)).astype(np.float32)
    for dq in (0, 1):
        q, step = nncodec_quantize(w, -38, use_dq=bool(dq))
        d = nncodec_encode_levels(q, dq_flag=dq)
        qb = nncodec_decode_levels(d, q.shape, dq_flag=dq)
        okq = np.array_equal(q, qb)
        failures += not okq
        print(
            f"  Gaussian 384x1536 via quantLayer qp -38 {'DQ ' if dq else 'URQ'}: "
            f"{8 * len(d) / q.size:.3f} bits/weight, MSE {float(np.mean((q * step - w) ** 2)):.3e}, "
            f"round trip {'OK' if okq else 'FAILED'}"
        )

    # 2. tiny CNN through the high-level API
    sd = _tiny_cnn_state_dict()
    n_all = sum(int(t.numel()) for t in sd.values() if t.is_floating_point())
    print(f"\n[tiny CNN] {len(sd)} state-dict entries, {n_all:,d} float parameters, qp -38, DQ on")
    for ptypes in ("torch", "generic"):
        bs, info = nncodec_compress_state_dict(sd, qp=-38, use_dq=True, param_types=ptypes)
        rec, dinfo = nncodec_decompress(bs, shapes=info["shapes"], return_info=True)
        err, where = _max_abs_err(sd, rec)
        same_keys = set(rec) == set(info["shapes"])
        failures += not same_keys or err > 2 * nncodec_step_from_qp(-38)
        print(
            f"  param_types={ptypes:<8}: {info['nbytes']:,d} B  {info['bits_per_param']:.3f} bits/param  "
            f"max abs err {err:.2e} ({where})  encode {info['encode_s'] * 1e3:.1f} ms  "
            f"decode {dinfo['decode_s'] * 1e3:.1f} ms  skipped {info['skipped']}"
        )

    # 3. MiniLM
    if quick:
        print("\n[MiniLM] skipped (--quick)")
    else:
        failures += _minilm_check(minilm_qps)
    print(f"\nself-check {'PASSED' if failures == 0 else f'FAILED ({failures})'}")
    return 0 if failures == 0 else 1


def _minilm_check(qps: list[int]) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import minilm

        model, _tok = minilm.load_minilm()
    except Exception as e:  # pragma: no cover - depends on the machine
        print(f"\n[MiniLM] skipped: {type(e).__name__}: {e}")
        return 0
    sd = model.state_dict()
    n_all = sum(int(t.numel()) for t in sd.values())
    n_float = sum(int(t.numel()) for t in sd.values() if t.is_floating_point())
    ref = minilm.embed(model, minilm.SENTENCES)
    print(
        f"\n[MiniLM] all-MiniLM-L6-v2: {len(sd)} tensors, {n_all:,d} parameters ({n_float:,d} float), "
        f"{len(minilm.SENTENCES)} sentences; fidelity = cosine(original embedding, decoded-model embedding)"
    )
    failures = 0
    for qp in qps:
        bs, info = nncodec_compress_state_dict(sd, qp=qp, use_dq=True)
        rec, dinfo = nncodec_decompress(bs, shapes=info["shapes"], return_info=True)
        emb = minilm.embed(rec, minilm.SENTENCES)
        mean_cos, min_cos = minilm.cosine_fidelity(ref, emb)
        failures += not (set(rec) == set(info["shapes"]) and mean_cos > 0.9)
        print(
            f"  qp {qp} DQ on, lambda_scale 0, opt_qp off, nonweight_qp -75, param_types torch: "
            f"{info['nbytes']:,d} B = {8 * info['nbytes'] / n_all:.3f} bits/param | cosine mean "
            f"{mean_cos:.5f} min {min_cos:.5f} | encode {info['encode_s']:.2f} s (quantize "
            f"{info['quantize_s']:.2f} s, CABAC {info['entropy_s']:.2f} s) | decode {dinfo['decode_s']:.2f} s "
            f"(CABAC {dinfo['entropy_decode_s']:.2f} s)"
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Self-check of the NNCodec/zstd/xz peer harness.")
    ap.add_argument("--quick", action="store_true", help="skip the MiniLM measurement")
    ap.add_argument("--minilm-qp", type=int, nargs="+", default=[-38, -32], help="qps for MiniLM")
    args = ap.parse_args(argv)
    return _self_check(args.quick, args.minilm_qp)


if __name__ == "__main__":
    sys.exit(main())
