"""Inference straight from a ``.nnp`` file's integer levels (needs torch).

Contract
--------
- ``from_nnp(model, nnp, format="auto", *, batch=1, threads=1, isa=None, embeddings="auto",
  act_digits=2, candidates=None, max_bytes_ratio=None, strict=True, inplace=False, example_inputs=None,
  reuse_timings=True)`` (also reached as
  ``nnpress.nn.convert(model, format, nnp=path, ...)``) returns ``model`` with its weights taken from
  the ``.nnp`` file: every ``nn.Linear`` (and transformers' ``Conv1D``, GPT-2's Linear with its
  weight stored in x out: run on the transposed levels, plan entry ``transposed``) becomes a
  :class:`LevelLinear` (or, where the dense float
  product is chosen, a :class:`DenseLinear`, a plain ``nn.Linear``) and every ``nn.Embedding`` a
  :class:`LevelEmbedding` and every ``nn.Conv1d`` / ``nn.Conv2d`` a :class:`nnpress.nn_conv.LevelConv`
  (formats and refusals: :mod:`nnpress.nn_conv`), built from the stored levels, step and channel scales of that layer's
  quantized weight (a float32 weight is created only for the layers kept dense); every other
  parameter and persistent buffer is decoded into the model as ``nnpress.load_state_dict`` does.
  ``model`` may be built with its parameters on the meta device (:func:`params_on_meta`): then no
  float32 copy of the converted weights ever exists; its non-persistent buffers must be real.
  :func:`from_pretrained` builds a transformers model that way. The result is in eval mode and
  computes without autograd, on the CPU.
- Names must match the file exactly: before anything is decoded, a file that lacks a tensor of the
  model, or (``strict=True``) holds one the model lacks, or whose shape differs, raises
  :class:`NnpMismatchError` (a ``RuntimeError``) naming them.
- Linear formats (``format``: a name, or a dict {module name: name} whose other layers use "auto"):
  * ``"dense"``: the float32 weights (bit-identical to ``nnpress.decompress``) and torch's own
    ``F.linear`` (MKL / oneDNN sgemm: the well-kept library for dense float products);
  * ``"levels"``: nnpress's ``LevelMatrix`` kernels (int8 levels, int16 when many exceed int8, plus an
    exact list of the rest) with float32 activations: exact up to float32 summation order;
  * ``"levels16"``: the same with each token's activations rounded to integers on its own scale
    (int16 for int8 dense parts; a narrower range for int16 dense parts, so that integer sums stay
    exact: ``LevelMatrix::activation_range`` in levels.h) and exact integer sums; a matrix whose
    indices are too large for that runs as "levels", and so does a product with a token whose
    median nonzero input would keep fewer than 32 steps (a few inputs hundreds of times the others,
    as large language models' outlier channels: ``LevelMatrix::kFineSteps``);
  * ``"int8"``: the levels as int8 plus the exact remainder of larger ones (a sparse CSR product) on
    torch's integer GEMM (``torch._int_mm``, oneDNN), the activations rounded per token to
    ``act_digits`` * 7 + 1 bits and split into 7-bit digits (exact integer products), one digit
    more (up to 3) for a call with a token whose median nonzero input would keep fewer than 1/512
    of the digits' range in steps (32 at ``act_digits=2``, 1 at 1);
    ``"int8x2"``: the levels as two int8 digits in one integer GEMM (no remainder);
  * ``"cser"``, ``"cer"``, ``"codebook"``: nnpress's sparse / codebook kernels (from the decoded
    weights; the codebook holds at most 16 distinct values).
  * ``"lut"``: nnpress's ``LutMatrix`` (``nnpress/kernels/lut.h``): layers whose every row holds at
    most 16 distinct levels, as a 4-bit code per weight and a 16-value table per row, products by
    table lookup with float32 activations (exact up to float32 summation order); 0.5 byte per weight.
  * ``"auto"``: every candidate that can hold the layer is built and timed at the layer's real
    input, ``batch`` rows (tokens x sentences for a transformer) by in_features: median of a few
    calls on the calling thread's CPU time, the caches refilled with other data before each call
    (in a forward pass a layer's weights come from memory, not from a hot cache), three
    interleaved rounds; after the first round a candidate more than _DROP (2) x slower than the
    fastest is not timed again. Formats within 10 % of the fastest count as equally fast and the one
    holding fewest bytes among them is kept. torch is limited to ``threads`` threads while timing
    (the budget the nnpress kernels get), so "dense" competes on equal terms. Candidates: dense,
    levels (if built), CSER / codebook (<= 65536 / 16 values), lut (<= 16 levels in every row),
    and the rounding formats int8, int8x2, levels16 unless ``act_digits`` is None;
    ``candidates=`` narrows the list. int8 and int8x2 are candidates (unless named in
    ``candidates=``) only where torch's integer GEMM is faster than its float GEMM (probed once per
    process, :func:`int_mm_pays`): on CPUs without VNNI it runs a slow generic path, and timing it
    would cost seconds per layer for a format that cannot win.
    ``reuse_timings`` (default): a layer whose signature (shape, rows, options and the structure
    of its levels that the kernels' costs follow: :func:`_signature`) equals an already timed
    layer's times only the candidates that were within 25 % (_CLOSE) of that layer's fastest, or
    takes the one such format without timing (its ``info["timed_as"]`` names the layer); False
    times every candidate for every layer.
  * ``example_inputs`` (a tensor or a tuple of positional arguments): the model is run once on it
    after loading, and every "auto" Linear and convolution is timed at the input it receives there
    (rows = tokens x sentences, or output pixels x images); until then those Linear layers hold the
    "levels" format. Without it Linear layers are timed at ``batch`` rows and convolutions are not
    timed (:mod:`nnpress.nn_conv`).
  * ``max_bytes_ratio`` (a fraction, e.g. 0.3): an "auto" layer (Linear or convolution) only
    considers the formats holding at most this fraction of its float32 weight bytes; where none
    does, the one holding fewest bytes is kept (whatever its speed). "auto" alone trades bytes for
    speed only within timing noise, so on a loaded machine its choice can hold more than a memory
    target allows; the cap makes the target a guarantee. Formats named explicitly are not capped.
  * A choice is replayed without timing by passing ``format={p["name"]: p["format"] for p in
    levels_plan(model) if p["kind"] in ("linear", "conv") and p["format"] != "torch"}``.
- ``act_digits`` (1, 2 or 3; None = exact formats only): the activation precision of the int8
  formats (2: 15 bits per token, 3: 22 bits). A forced rounding format needs it.
- ``embeddings``: "auto"/"levels" (quantized tables as :class:`LevelEmbedding`: levels in 6-bit
  fields, int8 or int16, whichever holds fewest bytes, the entries beyond it as exact lists; a
  gather and the scales, bit-identical to the decompressed table) or "dense" (left to torch, loaded
  from the file). A raw table stays torch's ("levels" then raises ValueError).
- ``levels_plan(model)``: one dict per converted layer (name, kind "linear" / "embedding" / "conv",
  shape, format, bytes, dense_bytes, times_us {format: µs} when timed, outliers; input_shape when
  timed on example_inputs, timed_as when a timing was reused, reasons for a convolution's refused or
  untimed formats); ``plan(model, nnp, ...)`` makes the same
  choice on a parameter-less copy and returns it. ``held_nbytes(model)`` counts the bytes the model
  holds (parameters, buffers, converted layers).
- Embedding tables are built from their levels decoded a block of file chunks at a time
  (``NnpFile.iter_level_rows``), each decoded once, so a table's int32 levels are never held whole.
- Conv3d, transposed convolutions and Conv1d / Conv2d subclasses with a forward of their own are
  loaded as float32 and left to torch (listed in ``levels_plan`` with format "torch"); so are
  Linear / Embedding subclasses with a forward of their own and a MultiheadAttention's
  ``out_proj`` (whose weight the attention reads directly), which ``levels_plan`` does not list.

Surprises
---------
- "auto" is measured on this machine at load time (a few ms per layer and candidate), so two loads
  can choose differently where timings are close.
- Layers fed the same tensor (a transformer's Q, K, V) share the int8 formats' rounded input: the
  last input is kept per thread and compared with ``torch.equal``.
- ``model.double()`` / ``.half()`` / ``.to(dtype)`` after ``convert``: the converted layers keep
  computing in float32 from their own weights and float32 bias, and return outputs in the model's
  new dtype, so the torch layers around them get what they hold.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _core
from .container import NnpFile
from .errors import NnpMismatchError
from .sparse import _CLASSES, CSERMatrix

__all__ = [
    "DenseLinear",
    "LevelEmbedding",
    "LevelLinear",
    "NnpMismatchError",
    "from_nnp",
    "from_pretrained",
    "has_level_kernels",
    "held_nbytes",
    "level_tensor",
    "levels_plan",
    "max_row_values",
    "params_on_meta",
    "plan",
]

LINEAR_FORMATS = ("auto", "dense", "int8", "int8x2", "levels", "levels16", "cser", "codebook", "cer", "lut")
EMBEDDING_FORMATS = ("auto", "levels", "dense")
_TIE = 1.10  # formats within this factor of the fastest count as equally fast (timing noise)
_DROP = 2.0  # after the first timed round, candidates this many times slower than the fastest are dropped
_CLOSE = 1.25  # layers equal to a timed one re-time the candidates within this factor of its fastest
_MAX_VALUES = 65536
_LUT_VALUES = 16  # distinct levels per row the "lut" format holds
_ROW_BLOCK_ELEMENTS = 1 << 20  # elements per block when a large table is processed row block by row block


def has_level_kernels() -> bool:
    """Whether this build has nnpress's LevelMatrix kernels (format "levels")."""
    return hasattr(_core, "LevelMatrix")


# ---------------------------------------------------------------------------------------------
# levels of one tensor
# ---------------------------------------------------------------------------------------------


class LevelTensor:
    """A quantized tensor as ``W[i, j] = row_scale[i] * u[i, j] * col_scale[j]`` on its rows x cols
    view: ``u`` the int32 reconstruction indices, the scales float64 (col_scale may be None)."""

    def __init__(self, name: str, shape: tuple, u: np.ndarray, row_scale: np.ndarray, col_scale, method, step: float):
        self.name, self.shape = name, tuple(shape)
        self.file: NnpFile | None = None  # where it was read from (LevelMatrix builds from there)
        self.u, self.row_scale, self.col_scale = u, row_scale, col_scale
        self.method, self.step = method, step

    def row_blocks(self, max_elements: int = 1 << 20) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, reconstruction indices of a block of rows) over the rows x cols view, in row
        order: slices of ``u`` when it is held, else decoded from the file a chunk at a time (a tensor
        read with ``level_tensor(..., lazy=True)``), so that only one block of int32 is held."""
        if self.u is not None:
            block = max(1, max_elements // max(1, self.u.shape[1]))
            for i in range(0, self.u.shape[0], block):
                yield i, self.u[i : i + block]
            return
        for i, k in self.file.iter_level_rows(self.name, max_elements):
            yield i, _reconstruction_indices(k, self.method, self.name)

    def dequantize(self) -> np.ndarray:
        """float32 weights of the tensor's shape, bit-identical to the file's decoder."""
        u = self.u.astype(np.int32)
        # reconstruction indices re-enter as uniform levels: u * step_ij, rounded once
        w = _core.dequantize(u, 1.0, _core.QuantMethod.nearest, self.row_scale, self.col_scale)
        return w.reshape(self.shape)


def _reconstruction_indices(k2: np.ndarray, method, name: str) -> np.ndarray:
    """The reconstruction index u of each level of the rows k2 (w = u * step_ij), in place: the level
    itself, or along the dependent-quantization state machine (restarting at every row); step 1
    makes the decoder return u exactly (|u| < 2^24). A block of rows at a time, so that only a
    small float block is made."""
    if method == _core.QuantMethod.trellis:
        block = max(1, _ROW_BLOCK_ELEMENTS // max(1, k2.shape[1]))
        for i in range(0, k2.shape[0], block):
            ui = _core.dequantize(np.ascontiguousarray(k2[i : i + block]), 1.0, method)
            if np.abs(ui).max(initial=0) >= 2**24:
                raise ValueError(f"tensor {name!r}: reconstruction indices beyond 2^24 are not supported")
            k2[i : i + block] = ui
    return k2


def level_tensor(f: NnpFile, name: str, *, lazy: bool = False) -> LevelTensor:
    """The levels of the quantized tensor ``name`` of ``f`` as a :class:`LevelTensor` (ValueError for
    a tensor stored raw). ``lazy``: no levels are read now (``u`` is None); ``row_blocks()`` decodes
    them from the file a chunk at a time."""
    e = f.entry(name)
    target = f.entry(e["alias_of"]) if e["storage"] == "alias" else e
    if target["storage"] != "quantized":
        raise ValueError(f"tensor {name!r} is stored {target['storage']}, not quantized: it has no levels")
    shape = tuple(int(d) for d in e["shape"])
    rows = shape[0] if len(shape) >= 2 else 1
    method = _core.QuantMethod.__members__[target["method"]]
    u = None if lazy else _reconstruction_indices(f.read_levels(name).reshape(rows, -1), method, name)
    rexp, cexp = f.channel_scale_exps(name)
    step = float(target["step"])
    row = np.full(rows, step) if rexp is None else step * _core.channel_scales_of_exps(np.asarray(rexp, np.int8))
    col = None if cexp is None else _core.channel_scales_of_exps(np.asarray(cexp, np.int8))
    lt = LevelTensor(name, shape, u, row, col, method, step)
    lt.file = f
    return lt


class _Int8Levels:
    """u split into an int8 part (clipped to [-127, 127]) and the exact remainder u - clipped,
    nonzero only where |u| > 127 (kept as row, column, value lists)."""

    def __init__(self, u: np.ndarray) -> None:
        clipped = np.clip(u, -127, 127)
        rest = u - clipped
        self.int8 = torch.from_numpy(np.ascontiguousarray(clipped.astype(np.int8)))
        r, c = np.nonzero(rest)
        self.rest_row, self.rest_col = r, c
        self.rest_val = rest[r, c].astype(np.float32)

    @property
    def outliers(self) -> int:
        return int(self.rest_val.size)


def _tensor_bytes(*ts) -> int:
    return int(sum(t.numel() * t.element_size() for t in ts if t is not None))


# ---------------------------------------------------------------------------------------------
# Linear backends: y (n x out) = x (n x in) @ W^T, float32
# ---------------------------------------------------------------------------------------------


class _Dense:
    format = "dense"

    def __init__(self, lt: LevelTensor | None, weight: np.ndarray | None = None) -> None:
        w = lt.dequantize() if weight is None else weight
        self.weight = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        self.nbytes = self.weight.numel() * 4

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.weight, bias)


class _Int8:
    """y = row_scale * ((x * col_scale) @ u^T) with u in int8 on torch's integer GEMM (oneDNN).

    The activations (after the column scales) are rounded per token to ``act_digits`` * 7 + 1 bits
    and split into signed 7-bit digits, one GEMM row per digit and token: the integer products are
    exact. ``weight_digits`` 1: u clipped to int8 plus the exact remainder (|u| > 127) as a sparse
    CSR float product; 2: u as two int8 digits (u = 128 * hi + lo, lo in [0, 127]), both in one GEMM."""

    def __init__(self, lt: LevelTensor, act_digits: int, weight_digits: int) -> None:
        if act_digits not in (1, 2, 3):
            raise ValueError(f"act_digits must be 1, 2 or 3, got {act_digits!r}")
        self.digits = int(act_digits)
        self.out_features = lt.u.shape[0]
        self.row_scale = torch.from_numpy(lt.row_scale.astype(np.float32))
        self.col_scale = None if lt.col_scale is None else torch.from_numpy(lt.col_scale.astype(np.float32))
        self.rest = None
        if weight_digits == 1:
            self.format = "int8"
            lv = _Int8Levels(lt.u)
            w8 = lv.int8
            self.outliers = lv.outliers
            if lv.outliers:
                rows, cols = lt.u.shape
                crow = np.zeros(rows + 1, dtype=np.int32)
                np.cumsum(np.bincount(lv.rest_row, minlength=rows), out=crow[1:])
                with warnings.catch_warnings():  # torch calls its sparse CSR support beta
                    warnings.simplefilter("ignore", UserWarning)
                    self.rest = torch.sparse_csr_tensor(
                        torch.from_numpy(crow),
                        torch.from_numpy(lv.rest_col.astype(np.int32)),
                        torch.from_numpy(lv.rest_val),
                        size=(rows, cols),
                    )
        elif weight_digits == 2:
            self.format = "int8x2"
            if np.abs(lt.u).max(initial=0) >= 128 * 128:
                raise ValueError("reconstruction indices beyond 2^14 do not fit two int8 digits")
            lo = (lt.u & 127).astype(np.int8)
            hi = (lt.u >> 7).astype(np.int8)
            w8 = torch.from_numpy(np.ascontiguousarray(np.concatenate([lo, hi], 0)))
            self.outliers = 0
        else:
            raise ValueError(f"weight_digits must be 1 or 2, got {weight_digits!r}")
        self.w8 = w8
        self.wt = w8.t()  # (in, out * weight_digits) view: _int_mm's B operand
        self.weight_digits = int(weight_digits)
        rest = () if self.rest is None else (self.rest.crow_indices(), self.rest.col_indices(), self.rest.values())
        self.nbytes = _tensor_bytes(w8, self.row_scale, self.col_scale, *rest)

    def _digits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(int8 digit rows, most significant first: D n x in; per-token scale n x 1; D) of x. D is
        ``act_digits``, or more (up to 3) while a token's median nonzero input keeps fewer than
        (qmax + 1) / 512 steps, at least 1 (a few inputs far above the others: _rounds_finely)."""
        last = _LAST_INPUT.__dict__
        if (
            last.get("want") == self.digits
            and last["x"].shape == x.shape
            and torch.equal(last["x"], x)  # layers fed the same input (Q, K, V) share its digits
        ):
            return last["a"], last["scale"], last["digits"]
        amax = x.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny)
        digits = self.digits
        while True:
            qmax = float(2 ** (7 * digits) - 1)
            q = (x * (qmax / amax)).round_().to(torch.int32)  # |q| <= qmax < 2^21
            if digits == 3 or _rounds_finely(x, q, max(1.0, (qmax + 1) / 512)):
                break
            digits += 1
        # q = sum_d digit_d * 128^(D-1-d): the top digit signed, the others in [0, 127]
        parts = []
        for _ in range(digits - 1):
            parts.append(q & 127)
            q = q >> 7
        parts.append(q)
        parts.reverse()
        a = torch.cat(parts, 0).to(torch.int8)
        scale = amax / qmax
        last.update(x=x.clone(), want=self.digits, digits=digits, a=a, scale=scale)
        return a, scale, digits

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.col_scale is not None:
            x = x * self.col_scale
        n = x.shape[0]
        a, scale, digits = self._digits(x)
        # exact integer products into reused per-thread buffers: allocating these afresh per call
        # costs more than the product (large blocks come from the OS page by page)
        acc_i = _scratch("acc_i", (a.shape[0], self.wt.shape[1]), torch.int32)
        acc = _scratch("acc_f", (a.shape[0], self.wt.shape[1]), torch.float32)
        acc.copy_(torch._int_mm(a, self.wt, out=acc_i))
        if self.weight_digits == 2:
            acc = torch.add(acc[:, : self.out_features], acc[:, self.out_features :], alpha=128.0)
        y = acc[:n] if digits == 1 else torch.add(acc[n : 2 * n], acc[:n], alpha=128.0)
        for d in range(2, digits):
            y = torch.add(acc[d * n : (d + 1) * n], y, alpha=128.0)
        y = y * scale  # a new tensor: acc is a shared buffer
        if self.rest is not None:  # exact remainder of the entries beyond int8, on x itself
            y = y.add_(torch.sparse.mm(self.rest, x.t()).t())
        if bias is None:
            return y.mul_(self.row_scale)
        return torch.addcmul(bias, y, self.row_scale)


def _rounds_finely(x: torch.Tensor, q: torch.Tensor, steps: float) -> bool:
    """Whether in every token (row of x, rounded to q) at least as many nonzero inputs keep ``steps``
    steps or more as fewer: its median nonzero input keeps them (LevelMatrix's kFineSteps rule)."""
    a = q.abs()
    fine = (a >= steps).sum(dim=1)
    coarse = ((x != 0) & (a < steps)).sum(dim=1)
    return bool((coarse <= fine).all())


_LAST_INPUT = threading.local()  # the int8 formats' last quantized input, per thread
_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A per-thread buffer of ``shape`` (a view of one kept at the largest size asked so far)."""
    n = int(np.prod(shape))
    # one buffer per mode: a tensor made under torch.inference_mode cannot be written outside it
    key = name + ("_inference" if torch.is_inference_mode_enabled() else "")
    buf = getattr(_SCRATCH, key, None)
    if buf is None or buf.numel() < n:
        buf = torch.empty(n, dtype=dtype)
        setattr(_SCRATCH, key, buf)
    return buf[:n].view(shape)


class _Levels:
    """nnpress's LevelMatrix: float32 activations ("levels", exact up to float32 summation order), or
    each token's activations rounded to int16 on its own scale with exact integer sums ("levels16")."""

    def __init__(
        self, lt: LevelTensor, isa: str | None, threads: int, activations: str = "float32", matrix=None
    ) -> None:
        self.format = "levels" if activations == "float32" else "levels16"
        self.activations = activations
        if matrix is not None:  # the same matrix serves both activation modes (built once by _choose)
            self.m = matrix
        elif lt.u is None and lt.file is not None:  # straight from the file's levels (NnpFile.level_matrix)
            self.m = lt.file.level_matrix(lt.name, threads=1)
        else:
            col = None if lt.col_scale is None else lt.col_scale.astype(np.float32)
            self.m = _core.LevelMatrix.from_levels(np.ascontiguousarray(lt.u), lt.row_scale.astype(np.float32), col)
        self.isa, self.threads = isa, threads
        self.nbytes = int(self.m.nbytes)
        self.outliers = int(self.m.outliers)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        # x: C-contiguous float32 (LevelLinear hands over a contiguous view); the bias is added in the
        # product (one float add to each result, as y.add_(bias) would): one torch call less per layer
        b = None if bias is None else bias.numpy()
        return torch.from_numpy(self.m.matmul(x.numpy(), None, self.isa, self.threads, self.activations, b))


class _Lut:
    """nnpress's LutMatrix: a 4-bit code per weight into a 16-value table per row (<= 16 levels per row)."""

    format = "lut"

    def __init__(self, lt: LevelTensor, isa: str | None, threads: int) -> None:
        if lt.file is not None:  # straight from the file's levels (NnpFile.lut_matrix)
            self.m = lt.file.lut_matrix(lt.name, threads=1)
        else:
            col = None if lt.col_scale is None else lt.col_scale.astype(np.float32)
            self.m = _core.LutMatrix.from_levels(np.ascontiguousarray(lt.u), lt.row_scale.astype(np.float32), col)
        self.isa, self.threads = isa, threads
        self.nbytes = int(self.m.nbytes)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.from_numpy(self.m.matmul(x.numpy(), isa=self.isa, threads=self.threads))
        return y if bias is None else y.add_(bias)


def max_row_values(u: np.ndarray) -> int:
    """The most distinct values in one row of a 2-D array (the "lut" format holds up to 16)."""
    if u.size == 0:
        return 0
    s = np.sort(u, axis=1)
    return int((np.diff(s, axis=1) != 0).sum(axis=1).max()) + 1


def _lut_holds(u: np.ndarray) -> bool:
    """Whether every row of u holds at most _LUT_VALUES distinct values; a first row with more (the
    usual case for a real layer) answers without sorting the whole tensor."""
    if u.size and np.unique(u[0]).size > _LUT_VALUES:
        return False
    return max_row_values(u) <= _LUT_VALUES


class _RowGroup:
    """CSER / CER / codebook: the nnpress kernels take x as (in, n) columns."""

    def __init__(self, fmt: str, w: np.ndarray, isa: str | None, threads: int) -> None:
        self.format = fmt
        self.m = CSERMatrix.from_dense(w) if fmt == "cser" else _CLASSES[fmt].from_dense(w)
        self.isa, self.threads = isa, threads
        self.nbytes = int(self.m.nbytes)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        xt = np.ascontiguousarray(x.numpy().T)
        y = torch.from_numpy(self.m.matmul(xt, isa=self.isa, threads=self.threads)).t()
        return y if bias is None else y + bias


def _num_values(w: np.ndarray, lt: LevelTensor | None = None) -> int:
    """Distinct values of the weights w. With one step for the whole tensor (no channel scales) the
    values are u * step, as many as the distinct u: counted in linear time when their range is small."""
    if lt is not None and lt.u is not None and lt.col_scale is None and np.all(lt.row_scale == lt.row_scale[0]):
        lo, hi = int(lt.u.min(initial=0)), int(lt.u.max(initial=0))
        if hi - lo < 1 << 22:
            return int(np.count_nonzero(np.bincount((lt.u - lo).reshape(-1), minlength=1)))
    return int(np.unique(w).size)


def _build(fmt: str, lt: LevelTensor, w: np.ndarray | None, *, act_digits, isa, threads, shared=None):
    """One backend of format ``fmt`` (w: the float32 weights if already decoded; ``shared``: a dict
    through which the candidates of one layer share their LevelMatrix)."""
    if fmt == "dense":
        return _Dense(lt, w)
    if fmt in ("int8", "int8x2"):
        if act_digits is None:
            raise ValueError(f'format "{fmt}" rounds activations: give act_digits (1, 2 or 3)')
        return _Int8(lt, act_digits, 1 if fmt == "int8" else 2)
    if fmt in ("levels", "levels16"):
        if not has_level_kernels():
            raise ValueError(f'format "{fmt}" needs nnpress\'s LevelMatrix kernels, which this build lacks')
        if fmt == "levels16" and act_digits is None:
            raise ValueError('format "levels16" rounds activations to int16: give act_digits (any of 1, 2, 3)')
        matrix = None if shared is None else shared.get("level_matrix")
        b = _Levels(lt, isa, threads, "float32" if fmt == "levels" else "int16", matrix)
        if shared is not None:
            shared["level_matrix"] = b.m
        return b
    if fmt == "lut":
        if not hasattr(_core, "LutMatrix"):
            raise ValueError('format "lut" needs nnpress\'s LutMatrix kernels, which this build lacks')
        return _Lut(lt, isa, threads)
    if fmt in ("cser", "codebook", "cer"):
        return _RowGroup(fmt, lt.dequantize().reshape(lt.u.shape) if w is None else w, isa, threads)
    raise ValueError(f"unknown format {fmt!r}")


_FLUSH_BYTES = 8 << 20  # more than the per-core caches of current CPUs


_INT_MM_PAYS: list = []


def int_mm_pays() -> bool:
    """Whether torch's int8 GEMM (``torch._int_mm``, what the int8 formats run on) beats its float32
    GEMM on this CPU, one thread, at a transformer-like shape: the int8 formats do at least that
    integer GEMM, so where it is slower they cannot beat "dense" and "auto" does not time them.
    Measured once per process (a few ms; best of 3 calls each)."""
    if not _INT_MM_PAYS:
        gen = torch.Generator().manual_seed(0)
        a = torch.randint(-127, 128, (16, 512), dtype=torch.int8, generator=gen)
        b = torch.randint(-127, 128, (512, 512), dtype=torch.int8, generator=gen)
        af, bf = a.float(), b.float()

        def best(fn) -> float:
            fn()
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            return min(ts)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _INT_MM_PAYS.append(best(lambda: torch._int_mm(a, b)) < best(lambda: af @ bf))
        except RuntimeError:  # a build without the integer GEMM
            _INT_MM_PAYS.append(False)
        finally:
            torch.set_num_threads(threads)
    return _INT_MM_PAYS[0]


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` (0: left as it is) within the block."""
    old = torch.get_num_threads()
    if n >= 1 and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _time_us(fn, x: torch.Tensor, reps: int, flush: torch.Tensor) -> float:
    """Median wall time of fn(x) in µs over ``reps`` calls, after one warm-up call. Before each call
    the caches are refilled with other data and the int8 formats' input cache is emptied: in a
    forward pass a layer's weights come from outside the core's caches, and its input is new."""
    # on one thread, the thread's CPU time: what the product costs, without the time other
    # processes hold the core (a shared machine's load would otherwise decide the choice)
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    fn(x)
    ts = []
    for _ in range(reps):
        flush.add_(1)
        _LAST_INPUT.__dict__.clear()
        t = clock()
        fn(x)
        ts.append(clock() - t)
    return float(np.median(ts)) * 1e6


def _signature(lt: LevelTensor, batch: int, options: tuple) -> tuple:
    """What decides the kernels' speed on a layer, short of timing it: shape, batch, the options, and
    the structure of the levels the candidates' costs follow (index width and outlier count of the
    level and int8 formats, whether int8x2 and lut hold it, density for CSER, column scales). Layers
    with equal signatures are equally fast in every format up to timing noise, so one timing serves
    them."""
    u = lt.u
    n8 = n14 = n16 = nz = 0
    for _, ui in lt.row_blocks(_ROW_BLOCK_ELEMENTS):
        a = np.abs(ui)
        n8 += int(np.count_nonzero(a > 127))
        n14 += int(np.count_nonzero(a >= 1 << 14))
        n16 += int(np.count_nonzero(a > 32767))
        nz += int(np.count_nonzero(ui))
    return (
        u.shape,
        int(batch),
        options,
        lt.col_scale is not None,
        n8 * 16 > u.size,  # LevelMatrix's int16 dense part
        round(float(np.log2(1 + n8))),  # outliers of the int8 part
        n14 > 0,
        n16 > 0,
        round(20 * nz / max(1, u.size)),
        _lut_holds(u),
    )


def _choose(
    lt: LevelTensor,
    batch: int,
    *,
    act_digits,
    isa,
    threads,
    candidates,
    max_bytes_ratio=None,
    reps: int = 7,
    timed=None,
    layer=None,
):
    """(backend, {format: µs}, name of the layer whose timing was reused or None) for "auto": every
    candidate timed on a (batch x in) input, interleaved (_race). ``timed``: a dict shared by the
    layers of one conversion, {signature: (format, times, layer name)}; a layer whose _signature is
    in it times only the candidates that were within _CLOSE of the fastest for that layer (built
    without timing when one was), so that equal layers still choose each on its own timing among
    the close ones, while the clearly slower are not timed again. ``layer``: the module's name (for
    the report; default the tensor's)."""
    sig = None
    if timed is not None:
        sig = _signature(lt, batch, (act_digits, isa, threads, candidates, max_bytes_ratio))
        if sig in timed:
            fmt, times0, src = timed[sig]
            close = [c for c, t in times0.items() if t <= min(times0.values()) * _CLOSE] if times0 else [fmt]
            try:
                if len(close) == 1:
                    return _build(close[0], lt, None, act_digits=act_digits, isa=isa, threads=threads), times0, src
                backend, times = _choose_timed(
                    lt,
                    batch,
                    act_digits=act_digits,
                    isa=isa,
                    threads=threads,
                    candidates=tuple(close),
                    max_bytes_ratio=max_bytes_ratio,
                    reps=reps,
                )
                return backend, times, src
            except ValueError:
                pass
    backend, times = _choose_timed(
        lt,
        batch,
        act_digits=act_digits,
        isa=isa,
        threads=threads,
        candidates=candidates,
        max_bytes_ratio=max_bytes_ratio,
        reps=reps,
    )
    if timed is not None:
        timed[sig] = (backend.format, times, lt.name if layer is None else layer)
    return backend, times, None


def _choose_timed(
    lt: LevelTensor, batch: int, *, act_digits, isa, threads, candidates, max_bytes_ratio=None, reps: int = 7
):
    """(backend, {format: µs}) for "auto": every candidate timed on a (batch x in) input, interleaved."""
    cands = ["dense"]
    if has_level_kernels():
        cands.append("levels")
    if act_digits is not None:
        cands += (["int8", "int8x2"] if candidates is not None or int_mm_pays() else []) + (
            ["levels16"] if has_level_kernels() else []
        )
    w = lt.dequantize().reshape(lt.u.shape)
    if _num_values(w, lt) <= _MAX_VALUES:
        cands += ["cser", "codebook"]
    if hasattr(_core, "LutMatrix") and _lut_holds(lt.u):
        cands.append("lut")
    cands = [c for c in cands if candidates is None or c in candidates]
    if not cands:
        raise ValueError(f"none of the candidate formats {tuple(candidates)} can hold layer {lt.name!r}")
    built = {}
    shared: dict = {}
    for c in cands:  # a candidate that cannot hold this layer is skipped
        try:
            built[c] = _build(c, lt, w, act_digits=act_digits, isa=isa, threads=threads, shared=shared)
        except ValueError:
            continue
    built = within_cap(built, max_bytes_ratio, lt.u.size * 4)
    if len(built) == 1:
        ((c, b),) = built.items()
        return b, {}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, lt.u.shape[1], generator=gen)
    pick, times = _race(built, {c: b.nbytes for c, b in built.items()}, x, reps=reps, threads=threads)
    return built[pick], times


def within_cap(built: dict, max_bytes_ratio: float | None, dense_bytes: int) -> dict:
    """The built candidates {format: backend} holding at most ``max_bytes_ratio`` x ``dense_bytes``
    (all of them when the ratio is None); where none does, the one holding fewest bytes."""
    if max_bytes_ratio is None or not built:
        return built
    cap = max_bytes_ratio * dense_bytes
    fit = {c: b for c, b in built.items() if b.nbytes <= cap}
    if fit:
        return fit
    c = min(built, key=lambda c: built[c].nbytes)
    return {c: built[c]}


def _race(
    fns: dict, nbytes: dict, x: torch.Tensor, *, reps: int = 7, rounds: int = 3, threads: int = 1
) -> tuple[str, dict]:
    """(name of the pick, {name: µs}) of the candidates ``fns`` (name -> callable on x) timed on x,
    torch limited to ``threads`` threads (0: as it is), the budget nnpress's kernels get, so that
    torch's own products compete on equal terms (and, on one thread, on the thread's CPU time):
    ``rounds`` interleaved rounds (a load burst hits every candidate alike), each the median of
    ``reps`` calls (_time_us); a candidate slower than _DROP x the fastest in the first round is not
    timed again (it cannot end within _TIE of the fastest). Each keeps its fastest round; among those
    within _TIE of the fastest, the one holding fewest bytes (``nbytes``) is picked."""
    if len(fns) == 1:
        return next(iter(fns)), {}
    times: dict[str, list[float]] = {c: [] for c in fns}
    flush = torch.zeros(_FLUSH_BYTES, dtype=torch.uint8)
    alive = list(fns)
    with torch.no_grad(), _torch_threads(threads):
        for r in range(rounds):
            for c in alive:
                times[c].append(_time_us(fns[c], x, reps, flush))
            if r == 0:
                first = min(times[c][0] for c in alive)
                alive = [c for c in alive if times[c][0] <= first * _DROP]
    best = {c: min(v) for c, v in times.items()}
    fastest = min(best.values())
    tied = [c for c in best if best[c] <= fastest * _TIE]
    pick = min(tied, key=lambda c: (nbytes[c], best[c]))
    return pick, {c: round(v, 2) for c, v in best.items()}


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------


class _LinearShape:
    """in / out features and whether there is a bias: what _linear_module reads of a module."""

    def __init__(self, in_features: int, out_features: int, has_bias: bool) -> None:
        self.in_features, self.out_features = in_features, out_features
        self.bias = True if has_bias else None


class DenseLinear(nn.Linear):
    """A plain ``nn.Linear`` (torch's own product) whose float32 weight came from a ``.nnp`` file;
    ``info`` holds the choice that kept it dense."""

    format = "dense"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, info: dict) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.info = info

    @property
    def weight_nbytes(self) -> int:
        return 0  # its weight is a parameter: counted with the model's parameters

    def extra_repr(self) -> str:
        return super().extra_repr() + ", format=dense"


class _Float32Module(nn.Module):
    """A replacement module computing in float32 from weights nnpress holds. ``model.double()``,
    ``.half()``, ``.to(dtype)`` leave those weights and the float32 bias buffer as they are, and the
    module's outputs take the floating dtype the model was moved to (``out_dtype``), as a torch
    layer's outputs follow its weights, so the torch layers around it get the dtype they hold."""

    out_dtype = torch.float32

    def _apply(self, fn, recurse=True):
        bias = getattr(self, "bias", None)
        super()._apply(fn, recurse)
        if bias is not None:
            self.bias = bias  # the float32 bias the kernels add, not fn's copy
        probe = fn(torch.zeros(1))
        if probe.is_floating_point():
            self.out_dtype = probe.dtype
        return self

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return y if y.dtype == self.out_dtype else y.to(self.out_dtype)


class _LevelModule(_Float32Module):
    """What LevelLinear and LevelConv share: the backend that holds the weights (its format and
    bytes), the plan's info for this layer and a float32 bias buffer (or None)."""

    def __init__(self, backend, bias: torch.Tensor | None, info: dict) -> None:
        super().__init__()
        self.backend = backend
        self.info = info
        if bias is not None:
            self.register_buffer("bias", bias.detach().to("cpu", torch.float32).contiguous())
        else:
            self.bias = None

    @property
    def format(self) -> str:
        return self.backend.format

    @property
    def weight_nbytes(self) -> int:
        return int(self.backend.nbytes)


class LevelLinear(_LevelModule):
    """``nn.Linear`` whose product runs on one backend built from a ``.nnp`` tensor (inference only)."""

    def __init__(self, backend, in_features: int, out_features: int, bias: torch.Tensor | None, info: dict) -> None:
        super().__init__(backend, bias, info)
        self.in_features, self.out_features = int(in_features), int(out_features)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's parameter name: callers may pass input=
        x = input
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LevelLinear: input has {x.shape[-1]} features, expected {self.in_features}")
        if x.dtype is not torch.float32 or not x.is_cpu or not x.is_contiguous():
            x = x.detach().to("cpu", torch.float32).contiguous()
        elif x.requires_grad:
            x = x.detach()  # the usual case: no conversion, no copy
        if isinstance(self.backend, _Levels):
            # the level kernels take every leading dimension as a batch dimension: no reshapes (at a
            # few tokens per call, each torch call is a visible part of the layer's time)
            return self._out(self.backend(x, self.bias))
        y = self.backend(x.view(-1, self.in_features), self.bias)
        return self._out(y.reshape(*x.shape[:-1], self.out_features))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}"


def _pack6(v: np.ndarray) -> np.ndarray:
    """Rows of values in [0, 63] (cols a multiple of 4) as 6-bit fields, 4 values in 3 bytes."""
    v = v.astype(np.uint32).reshape(v.shape[0], -1, 4)
    word = v[..., 0] | (v[..., 1] << 6) | (v[..., 2] << 12) | (v[..., 3] << 18)  # 24 bits
    out = np.empty(word.shape + (3,), dtype=np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = word & 255, (word >> 8) & 255, word >> 16
    return out.reshape(v.shape[0], -1)


def _unpack6(b: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of _pack6 for a (n, 3 cols / 4) uint8 tensor: (n, cols) int32 in [0, 63]."""
    b = b.reshape(b.shape[0], -1, 3).to(torch.int32)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    v = torch.stack([word & 63, (word >> 6) & 63, (word >> 12) & 63, word >> 18], dim=-1)
    return v.reshape(b.shape[0], cols)


_RANGE = {6: 31, 8: 127, 16: 32767}  # largest |u| each LevelEmbedding storage holds


class _LevelTable:
    """A LevelEmbedding table being built: the levels clipped to one storage's range (6-bit fields,
    int8 or int16) and, row by row in column order, the entries beyond it with their whole u."""

    def __init__(self, rows: int, cols: int, bits: int) -> None:
        self.rows, self.cols, self.bits = rows, cols, bits
        if bits == 6:
            self.store = np.empty((rows, cols * 3 // 4), dtype=np.uint8)
            self.store[:] = _pack6(np.full((1, cols), 32, np.int32))  # all zeros (stored as u + 32)
        else:
            self.store = np.zeros((rows, cols), dtype=np.int8 if bits == 8 else np.int16)
        self._r: list = []
        self._c: list = []
        self._v: list = []
        self.listed = 0

    def put(self, i: int, ui: np.ndarray) -> None:
        """Rows i .. i + len(ui) - 1 (given in row order, each once)."""
        lim = _RANGE[self.bits]
        clipped = np.clip(ui, -lim, lim)
        r, c = np.nonzero(ui != clipped)
        self._r.append(r + i)
        self._c.append(c)
        self._v.append(ui[r, c].astype(np.int32))
        self.listed += len(r)
        self.store[i : i + ui.shape[0]] = _pack6(clipped + 32) if self.bits == 6 else clipped

    def lists(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, columns, whole u) of the listed entries."""
        if len(self._r) != 1:
            cat = [np.concatenate(x) if x else np.zeros(0, np.int64) for x in (self._r, self._c, self._v)]
            self._r, self._c, self._v = [cat[0]], [cat[1]], [cat[2].astype(np.int32)]
        return self._r[0], self._c[0], self._v[0]

    def converted(self, bits: int) -> _LevelTable:
        """The same levels in another storage, a block of rows at a time."""
        out = _LevelTable(self.rows, self.cols, bits)
        rr, cc, vv = self.lists()
        block = max(1, _ROW_BLOCK_ELEMENTS // max(1, self.cols))
        for i in range(0, self.rows, block):
            part = self.store[i : i + block]
            if self.bits == 6:
                u = _unpack6(torch.from_numpy(part), self.cols).numpy() - 32
            else:
                u = part.astype(np.int32)
            lo, hi = np.searchsorted(rr, [i, i + part.shape[0]])
            u[rr[lo:hi] - i, cc[lo:hi]] = vv[lo:hi]
            out.put(i, u)
        return out


class LevelEmbedding(_Float32Module):
    """``nn.Embedding`` held as levels with per-row (and per-column) scales: a gather and a scale,
    bit-identical to the decompressed table.

    Storage, whichever holds fewest bytes: 6-bit fields (|u| <= 31, 4 in 3 bytes), int8 or int16,
    each with the entries beyond its range kept exactly as (row, column, remainder) lists."""

    def __init__(self, lt: LevelTensor, emb: nn.Embedding) -> None:
        super().__init__()
        if emb.max_norm is not None:
            raise ValueError("LevelEmbedding does not support max_norm")
        rows, cols = lt.shape[0], int(np.prod(lt.shape[1:]))
        size = rows * cols
        self.num_embeddings, self.embedding_dim = rows, cols
        self.padding_idx = emb.padding_idx
        # One pass over the levels (each block of rows decoded once): stored in the narrowest
        # storage, its entries beyond that range listed whole, and stored one storage wider once
        # that list passes 1/16 of the entries; the counts beyond every range choose the final
        # storage, into which the table is converted if it differs.
        beyond = {6: 0, 8: 0, 16: 0}
        table = _LevelTable(rows, cols, 6 if cols % 4 == 0 else 8)
        for i, ui in lt.row_blocks(_ROW_BLOCK_ELEMENTS):
            a = np.abs(ui)
            for b, lim in _RANGE.items():
                beyond[b] += int(np.count_nonzero(a > lim))
            table.put(i, ui)
            while table.bits != 16 and table.listed * 16 > size:
                table = table.converted(8 if table.bits == 6 else 16)
        cost = {16: size * 2 + beyond[16] * 12, 8: size + beyond[8] * 12}
        if cols % 4 == 0:
            cost[6] = size * 3 // 4 + beyond[6] * 12
        self.bits = min(cost, key=lambda b: (cost[b], b))
        if table.bits != self.bits:
            table = table.converted(self.bits)
        self.levels = torch.from_numpy(table.store)
        rr, cc, vv = table.lists()
        lim = _RANGE[self.bits]
        self.rest_row = torch.from_numpy(rr.astype(np.int32))
        self.rest_col = torch.from_numpy(cc.astype(np.int64))
        self.rest_val = torch.from_numpy((vv - np.clip(vv, -lim, lim)).astype(np.float32))
        # float64 scales: u * step_ij formed in double and rounded once, as the file's decoder does
        self.row_scale = torch.from_numpy(np.asarray(lt.row_scale, dtype=np.float64))
        self.col_scale = None if lt.col_scale is None else torch.from_numpy(np.asarray(lt.col_scale, np.float64))
        self.format = "levels"
        self.info: dict = {}

    @property
    def weight_nbytes(self) -> int:
        return _tensor_bytes(self.levels, self.rest_row, self.rest_col, self.rest_val, self.row_scale, self.col_scale)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's parameter name: callers may pass input=
        ids = input
        with torch.no_grad():
            flat = ids.reshape(-1)
            if self.bits == 6:
                u = (_unpack6(self.levels[flat], self.embedding_dim) - 32).to(torch.float64)
            else:
                u = self.levels[flat].to(torch.float64)
            if self.rest_val.numel():  # remainder entries of the gathered rows (sorted by row)
                lo = torch.searchsorted(self.rest_row, flat.to(torch.int32))
                cnt = torch.searchsorted(self.rest_row, flat.to(torch.int32), right=True) - lo
                total = int(cnt.sum())
                if total:
                    pos = torch.repeat_interleave(torch.arange(flat.numel()), cnt)
                    first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
                    idx = torch.repeat_interleave(lo, cnt) + torch.arange(total) - first
                    u[pos, self.rest_col[idx]] += self.rest_val[idx].to(torch.float64)
            step = self.row_scale[flat].unsqueeze(-1)
            if self.col_scale is not None:
                step = step * self.col_scale
            y = (u * step).to(torch.float32)
        return self._out(y.reshape(*ids.shape, self.embedding_dim))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, format=levels, {self.bits}-bit"


# ---------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------


def _check_format(fmt: Any, name: str, allowed: tuple) -> str:
    if fmt not in allowed:
        raise ValueError(f"format for {name or 'model'!r} must be one of {allowed}, got {fmt!r}")
    return fmt


def _format_for(format: Any, name: str) -> str:
    f = format.get(name, "auto") if isinstance(format, dict) else format
    return _check_format(f, name, LINEAR_FORMATS)


def _targets(model: nn.Module, embeddings: str) -> list[tuple[str, nn.Module, str]]:
    """The Linear (and transformers' Conv1D) and Embedding modules to convert. Left to torch: subclasses
    whose forward is their own (an activation, a scale: a LevelLinear / LevelEmbedding would silently drop
    it) and a MultiheadAttention's out_proj (the attention reads its weight directly)."""
    mha_out = {_join(n, "out_proj") for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    out = []
    for name, m in model.named_modules():
        if _is_hf_conv1d(m) or (_own_forward(m, nn.Linear) and name not in mha_out):
            out.append((name, m, "linear"))
        elif _own_forward(m, nn.Embedding) and embeddings != "dense":
            out.append((name, m, "embedding"))
    return out


def _own_forward(m: nn.Module, base: type) -> bool:
    """m is a ``base`` computing base's forward (a subclass that does not override it)."""
    return isinstance(m, base) and type(m).forward is base.forward


def _is_hf_conv1d(m: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2 and kin): a Linear whose weight is stored transposed, in x out
    (y = x @ W + b)."""
    w = getattr(m, "weight", None)
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and isinstance(w, torch.Tensor) and w.dim() == 2


def _transposed(lt: LevelTensor) -> LevelTensor:
    """The levels of W^T: u transposed, the row and column scales swapped (the step stays with the
    scales of the old rows, now the columns), so u * step_ij is the same double product."""
    rows, cols = lt.u.shape
    row = np.ones(cols) if lt.col_scale is None else np.asarray(lt.col_scale, np.float64)
    t = LevelTensor(lt.name, (cols, rows), np.ascontiguousarray(lt.u.T), row, lt.row_scale, lt.method, lt.step)
    return t


def _put(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """``new`` in place of ``root``'s submodule ``name``; returns the root (``new`` itself for name "")."""
    if name == "":
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
    return root


def _join(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def _check_names(model: nn.Module, f: NnpFile, strict: bool) -> None:
    """NnpMismatchError before any decoding when the file and the model do not match."""
    want = {n: tuple(t.shape) for n, t in model.state_dict(keep_vars=True).items()}
    have = {e["name"]: tuple(int(d) for d in e["shape"]) for e in f.entries}
    # buffers the model builds itself (not in its state_dict), which older checkpoints still hold:
    # transformers' BERT ``embeddings.position_ids``; the model's own values are kept
    own = {_join(mn, b) for mn, m in model.named_modules() for b in m._non_persistent_buffers_set}
    missing = [n for n in want if n not in have]
    unexpected = [n for n in have if n not in want and n not in own]
    shapes = [f"{n}: file {have[n]}, model {want[n]}" for n in want if n in have and have[n] != want[n]]
    problems = []
    if missing:
        problems.append(f"the file lacks {len(missing)} of the model's tensors, e.g. {missing[:5]}")
    if unexpected and strict:
        problems.append(f"the file holds {len(unexpected)} tensors the model lacks, e.g. {unexpected[:5]}")
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:5]))
    if problems:
        where = f.path or "the .nnp data"
        raise NnpMismatchError(
            f"{where} does not match {type(model).__name__}: " + "; ".join(problems) + " (names must match exactly)"
        )


def _materialize(model: nn.Module) -> None:
    """Give every meta-device parameter / buffer left in ``model`` real (uninitialised) CPU storage."""
    for m in model.modules():
        for k, p in list(m._parameters.items()):
            if p is not None and p.is_meta:
                m._parameters[k] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad)
        for k, b in list(m._buffers.items()):
            if b is not None and b.is_meta:
                if k in m._non_persistent_buffers_set:
                    raise ValueError(
                        f"buffer {k!r} of {type(m).__name__} is on the meta device and not stored in the file: "
                        "build the model with real buffers (parameters alone on meta)"
                    )
                m._buffers[k] = torch.empty(b.shape, dtype=b.dtype)


def _bias(f: NnpFile, name: str) -> torch.Tensor | None:
    key = _join(name, "bias")
    if key not in f:
        return None
    a = f.read(key)
    if f.entry(key)["dtype"] == "bfloat16":
        from .container import bfloat16_to_float32

        a = bfloat16_to_float32(a)
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def _linear_module(name, mod, f, fmt, *, batch, act_digits, isa, threads, candidates, max_bytes_ratio=None, timed=None):
    key = _join(name, "weight")
    quantized = f.entry(key)["storage"] != "raw"
    # transformers' Conv1D, or a module converted from one (a pending choice): the file's weight is W^T
    transpose = _is_hf_conv1d(mod) or bool(getattr(mod, "info", {}).get("transposed"))
    if _is_hf_conv1d(mod):
        mod = _LinearShape(int(mod.weight.shape[0]), int(mod.weight.shape[1]), mod.bias is not None)
    info: dict = {"name": name, "kind": "linear", "shape": (mod.out_features, mod.in_features)}
    if transpose:
        info["transposed"] = True
    if not quantized:
        if fmt not in ("auto", "dense"):
            raise ValueError(
                f"layer {name!r}: its weight is stored raw (not quantized), so format {fmt!r} cannot hold it"
            )
        w = f.read(key)
        if f.entry(key)["dtype"] == "bfloat16":
            from .container import bfloat16_to_float32

            w = bfloat16_to_float32(w)
        w = np.asarray(w, dtype=np.float32)
        backend = _Dense(None, w.T if transpose else w)
        info["times_us"] = {}
    else:
        lt = level_tensor(f, key)
        if transpose:
            lt = _transposed(lt)
        if fmt == "auto":
            backend, info["times_us"], src = _choose(
                lt,
                batch,
                act_digits=act_digits,
                isa=isa,
                threads=threads,
                candidates=candidates,
                max_bytes_ratio=max_bytes_ratio,
                timed=timed,
                layer=name,
            )
            if src is not None:
                info["timed_as"] = src
        else:
            try:
                backend = _build(fmt, lt, None, act_digits=act_digits, isa=isa, threads=threads)
            except ValueError as e:
                raise ValueError(f"layer {name!r}: {e}") from e
            info["times_us"] = {}
    info.update(format=backend.format, bytes=int(backend.nbytes), dense_bytes=mod.out_features * mod.in_features * 4)
    if hasattr(backend, "outliers"):
        info["outliers"] = int(backend.outliers)
    bias = _bias(f, name) if mod.bias is not None else None
    if backend.format == "dense" and not transpose:  # (a Conv1D's W^T is no parameter of the file's shape)
        return DenseLinear(backend.weight, bias, info)
    return LevelLinear(backend, mod.in_features, mod.out_features, bias, info)


def _embedding_module(name, mod, f, embeddings):
    key = _join(name, "weight")
    if f.entry(key)["storage"] == "raw" or (
        f.entry(key)["storage"] == "alias" and f.entry(f.entry(key)["alias_of"])["storage"] == "raw"
    ):
        if embeddings == "levels":
            raise ValueError(f"embedding {name!r}: its weight is stored raw (not quantized), so it has no levels")
        return None
    m = LevelEmbedding(level_tensor(f, key, lazy=True), mod)
    m.info = {
        "name": name,
        "kind": "embedding",
        "shape": (m.num_embeddings, m.embedding_dim),
        "format": "levels",
        "bytes": m.weight_nbytes,
        "dense_bytes": m.num_embeddings * m.embedding_dim * 4,
        "times_us": {},
    }
    return m


def from_nnp(
    model: nn.Module,
    nnp,
    format: Any = "auto",
    *,
    batch: int = 1,
    threads: int = 1,
    isa: str | None = None,
    embeddings: str = "auto",
    act_digits: int | None = 2,
    candidates=None,
    max_bytes_ratio: float | None = None,
    strict: bool = True,
    inplace: bool = False,
    example_inputs=None,
    reuse_timings: bool = True,
) -> nn.Module:
    """``model`` running on the levels of the ``.nnp`` file ``nnp`` (see the module docs)."""
    import copy

    from . import nn_conv
    from .loading import load_state_dict

    if not isinstance(model, nn.Module):
        raise TypeError(f"from_nnp expects a torch.nn.Module, got {type(model).__name__}")
    any_format = LINEAR_FORMATS + nn_conv.CONV_ONLY_FORMATS
    if isinstance(format, str):
        _check_format(format, "", any_format)
    elif isinstance(format, dict):
        for k, v in format.items():
            _check_format(v, k, any_format)
    else:
        raise TypeError("format must be a string or a dict {module name: format}")
    _check_format(embeddings, "embeddings", EMBEDDING_FORMATS)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if act_digits is not None and act_digits not in (1, 2, 3):
        raise ValueError(f"act_digits must be None, 1, 2 or 3, got {act_digits!r}")
    if candidates is not None:
        candidates = tuple(candidates)
        for c in candidates:
            _check_format(c, "candidates", LINEAR_FORMATS[1:])
    if max_bytes_ratio is not None:
        if isinstance(max_bytes_ratio, bool) or not isinstance(max_bytes_ratio, (int, float, np.floating)):
            raise TypeError(f"max_bytes_ratio must be a number or None, got {type(max_bytes_ratio).__name__}")
        if not 0 < float(max_bytes_ratio) <= 1:
            raise ValueError(f"max_bytes_ratio must be in (0, 1], got {max_bytes_ratio!r}")
        max_bytes_ratio = float(max_bytes_ratio)
    f = nnp if isinstance(nnp, NnpFile) else NnpFile(nnp)
    _check_names(model, f, strict)
    if isinstance(format, str) and format in nn_conv.CONV_ONLY_FORMATS:
        lin = [n for n, _, k in _targets(model, "dense") if k == "linear"]
        if lin:
            raise ValueError(f"format {format!r} is for convolutions only; the model has Linear layers, e.g. {lin[:3]}")
    if isinstance(format, dict):
        known = {n for n, _, k in _targets(model, "dense") if k == "linear"}
        convs = {n for n, _ in nn_conv.conv_targets(model)}
        bad = sorted(set(format) - known - convs)
        if bad:
            raise ValueError(f"format names modules that are not Linear or convolution layers of the model: {bad[:5]}")
        bad = sorted(n for n in set(format) & known if format[n] in nn_conv.CONV_ONLY_FORMATS)
        if bad:
            raise ValueError(f"format {format[bad[0]]!r} is for convolutions only; {bad[:5]} are Linear layers")
    out = model if inplace else copy.deepcopy(model)
    replaced = []
    timed: dict | None = {} if reuse_timings else None
    for name, mod, kind in _targets(out, embeddings):
        if kind == "linear":
            fmt = _format_for(format, name)
            # timed after example_inputs has shown its real input: until then the exact levels format
            pending = (
                example_inputs is not None and fmt == "auto" and f.entry(_join(name, "weight"))["storage"] != "raw"
            )
            if pending:
                fmt = "levels" if has_level_kernels() else "dense"
            new = _linear_module(
                name,
                mod,
                f,
                fmt,
                batch=int(batch),
                act_digits=act_digits,
                isa=isa,
                threads=threads,
                candidates=candidates,
                max_bytes_ratio=max_bytes_ratio,
                timed=timed,
            )
            if pending:
                new.info["pending"] = True
        else:
            new = _embedding_module(name, mod, f, embeddings)
            if new is None:
                continue
        replaced.append(name)
        _release_free_memory()  # the layer's candidates and int32 levels: back to the OS before the next layer
        out = _put(out, name, new)
        if name == "":
            break
    for name, mod in [] if isinstance(out, (LevelLinear, LevelEmbedding)) else nn_conv.conv_targets(out):
        fmt = format.get(name, "auto") if isinstance(format, dict) else format
        new = nn_conv.conv_module(
            name,
            mod,
            f,
            fmt,
            act_digits=act_digits,
            isa=isa,
            threads=threads,
            forced=isinstance(format, dict) and name in format,
        )
        out = _put(out, name, new)
        if name == "":
            break
    for name, mod in nn_conv.other_convs(out):
        mod.nnpress_info = nn_conv.torch_kept_info(name, mod)
    _materialize(out)
    # everything not replaced: decoded into the model tensor by tensor
    load_state_dict(out, f, strict=False)
    out.eval()
    shapes = None
    if example_inputs is not None:  # each pending layer timed at the input it gets from example_inputs
        pend = [
            (n, m)
            for n, m in out.named_modules()
            if isinstance(getattr(m, "info", None), dict) and m.info.get("pending")
        ]
        shapes = nn_conv.record_input_shapes(out, pend, example_inputs) if pend else {}
        for name, m in pend:
            if not isinstance(m, (LevelLinear, DenseLinear)):
                continue
            m.info.pop("pending")
            if name not in shapes:
                m.info["reasons"] = ["not reached by example_inputs: not timed, format levels"]
                continue
            rows = int(np.prod(shapes[name][:-1]))
            new = _linear_module(
                name,
                m,
                f,
                "auto",
                batch=rows,
                act_digits=act_digits,
                isa=isa,
                threads=threads,
                candidates=candidates,
                max_bytes_ratio=max_bytes_ratio,
                timed=timed,
            )
            new.info["input_shape"] = shapes[name]
            out = _put(out, name, new)
            if name == "":
                break
    nn_conv.choose(
        out,
        f,
        shapes,
        act_digits=act_digits,
        isa=isa,
        threads=threads,
        candidates=candidates,
        max_bytes_ratio=max_bytes_ratio,
        race=_race,
    )
    _release_free_memory()
    return out


def _release_free_memory() -> None:
    """Hand the conversion's freed temporaries (levels, candidates) back to the OS where the C
    library can (glibc's malloc_trim); elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def held_nbytes(model: nn.Module) -> int:
    """Bytes of the weights ``model`` holds: its parameters and buffers (each storage once) plus
    what its LevelLinear / LevelEmbedding modules hold outside them."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_meta:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    from .nn_conv import LevelConv

    for m in model.modules():
        if isinstance(m, (LevelLinear, LevelEmbedding, LevelConv)):
            total += m.weight_nbytes
    return total


def levels_plan(model: nn.Module) -> list[dict]:
    """The choice made for each converted layer of ``model`` (one dict per layer, module docs)."""
    from .nn_conv import LevelConv

    kinds = (LevelLinear, LevelEmbedding, DenseLinear, LevelConv)
    out = []
    for _, m in model.named_modules():
        if isinstance(m, kinds):
            out.append(dict(m.info))
        elif isinstance(getattr(m, "nnpress_info", None), dict):  # a convolution left to torch
            out.append(dict(m.nnpress_info))
    return out


def plan(model: nn.Module, nnp, format: Any = "auto", **kwargs) -> list[dict]:
    """What :func:`from_nnp` would choose per layer (it builds and times the candidates, keeps nothing)."""
    if isinstance(model, nn.Module):
        with _params_on_meta_copy(model) as light:
            return levels_plan(from_nnp(light, nnp, format, inplace=True, **kwargs))
    raise TypeError(f"plan expects a torch.nn.Module, got {type(model).__name__}")


@contextmanager
def _params_on_meta_copy(model: nn.Module) -> Iterator[nn.Module]:
    """A deep copy of ``model`` whose parameters are on the meta device (buffers kept)."""
    import copy

    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()}
    yield copy.deepcopy(model, memo)


@contextmanager
def params_on_meta() -> Iterator[None]:
    """Within this context, modules create their parameters on the meta device (no storage) and
    their buffers as usual: the way to build a model for :func:`from_nnp` without float32 weights."""
    orig = nn.Module.register_parameter

    def register(self, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        orig(self, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = orig


def from_pretrained(folder, cls=None, format: Any = "auto", **kwargs) -> nn.Module:
    """A transformers model from ``folder`` (config.json + a ``.nnp`` file, as
    :func:`nnpress.from_pretrained` reads it) running on the file's levels: the model is built
    with its parameters on the meta device, then :func:`from_nnp` (``kwargs``: its options)."""
    import transformers

    from .loading import _find_nnp

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder!r} is not a folder")
    path = _find_nnp(folder)
    cls = transformers.AutoModel if cls is None else cls
    config = transformers.AutoConfig.from_pretrained(folder)
    with params_on_meta():
        model = cls.from_config(config)
    kwargs.setdefault("inplace", True)
    return from_nnp(model, path, format, **kwargs)
