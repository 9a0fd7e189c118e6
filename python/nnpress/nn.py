"""PyTorch layers that run on CER / CSER / dense-codebook weights (inference only).

Contract
--------
- ``convert(model, format="auto", *, batch=1, threads=1, isa=None, inplace=False)`` returns a
  copy of ``model`` (or ``model`` itself with ``inplace=True``) in which every ``nn.Linear`` and
  every ``nn.Conv2d`` (groups=1, padding_mode="zeros") is replaced by ``CompressedLinear`` /
  ``CompressedConv2d``, whose products run on nnpress kernels. The weights are taken exactly as they
  are (e.g. a quantized model whose weights are float32(level) * step, a model loaded from a decoded
  ``.nnp``): outputs equal the dense model's up to float summation order.
- ``format``: "auto" (per layer, :func:`nnpress.sparse.choose_format` from shape, density and
  value count, for ``batch`` input columns for Linear layers and for the unfolded columns of a conv;
  it may keep a layer dense where the measured BLAS product is faster),
  "cer", "cser", "codebook" or "dense" (leave the layer alone); or a dict {module name: format}
  (names not in it use "auto").
- ``plan(model, format="auto", batch=1)`` returns, without converting, one dict per candidate
  layer: name, kind, shape, nnz, num_values, format, dense_bytes and compressed bytes.
- Layers whose weights hold more than 65536 distinct values are not quantized: "auto" leaves them
  dense; a forced format raises ValueError naming the layer.
- ``convert(model, format, nnp=path, ...)`` and ``plan(model, format, nnp=path, ...)`` take the
  weights from a ``.nnp`` file's levels instead (``nnpress.nn_levels.from_nnp``: Linear layers on
  measured-fastest formats including int8 levels, Embeddings as levels; no float32 copy held);
  the keyword arguments other than ``inplace`` / ``batch`` / ``threads`` / ``isa`` go to it.

Surprises
---------
- The converted modules compute without autograd (no gradients flow through them) and on the CPU
  only; inputs are converted to float32.
- Conv2d runs as unfold (im2col) + a matrix product with batch = N * H_out * W_out columns, so
  "auto" usually picks CSER for convolutions.
- torch is imported when this module is imported; ``import nnpress`` does not import this module.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nn_conv import LevelConv
from .nn_levels import (
    LevelEmbedding,
    LevelLinear,
    NnpMismatchError,
    from_nnp,
    from_pretrained,
    levels_plan,
    params_on_meta,
)
from .sparse import _CLASSES, CSERMatrix, choose_format

__all__ = [
    "CompressedConv2d",
    "CompressedLinear",
    "LevelConv",
    "LevelEmbedding",
    "LevelLinear",
    "NnpMismatchError",
    "convert",
    "from_nnp",
    "from_pretrained",
    "levels_plan",
    "params_on_meta",
    "plan",
]

_FORMATS = ("auto", "cer", "cser", "codebook", "dense")
_CONV_BATCH_HINT = 64  # columns of the unfolded input assumed when choosing a conv's format


def _weight_2d(module: nn.Module) -> np.ndarray:
    w = module.weight.detach().to("cpu", torch.float32)
    return np.ascontiguousarray(w.reshape(w.shape[0], -1).numpy())


def _candidates(model: nn.Module):
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            yield name, module, "linear"
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
            if not isinstance(module.padding, str):
                yield name, module, "conv2d"


def _format_for(format: Any, name: str) -> str:
    f = format.get(name, "auto") if isinstance(format, dict) else format
    if f not in _FORMATS:
        raise ValueError(f"format for {name or 'model'!r} must be one of {_FORMATS}, got {f!r}")
    return f


def _build(name: str, kind: str, w: np.ndarray, fmt: str, batch: int):
    """(matrix or None, chosen format, nnz, num_values)."""
    if fmt == "dense":
        return None, "dense", int(np.count_nonzero(w)), None
    try:
        cser = CSERMatrix.from_dense(w)
    except ValueError as e:
        if fmt == "auto":
            return None, "dense", int(np.count_nonzero(w)), None
        raise ValueError(f"layer {name!r}: {e}") from e
    nnz, nvals = cser.nnz, len(cser.values)
    if fmt == "auto":
        fmt = choose_format(
            cser.shape,
            nnz,
            nvals,
            batch if kind == "linear" else _CONV_BATCH_HINT,
            allow_dense=True,
        )
    if fmt == "dense":
        return None, "dense", nnz, nvals
    if fmt == "cser":
        return cser, fmt, nnz, nvals
    try:
        return _CLASSES[fmt].from_dense(w), fmt, nnz, nvals
    except ValueError as e:
        raise ValueError(f"layer {name!r}: {e}") from e


def plan(model: nn.Module, format: Any = "auto", batch: int = 1, *, nnp=None, **kwargs) -> list[dict]:
    """Which representation ``convert`` would give each Linear / Conv2d layer, and its size."""
    if nnp is not None:
        from . import nn_levels

        return nn_levels.plan(model, nnp, format, batch=batch, **kwargs)
    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)} (they need nnp=...)")
    out = []
    for name, module, kind in _candidates(model):
        w = _weight_2d(module)
        m, fmt, nnz, nvals = _build(name, kind, w, _format_for(format, name), batch)
        out.append(
            {
                "name": name,
                "kind": kind,
                "shape": tuple(w.shape),
                "nnz": nnz,
                "num_values": nvals,
                "format": fmt,
                "dense_bytes": int(w.nbytes),
                "bytes": int(w.nbytes) if m is None else m.nbytes,
            }
        )
    return out


class _Compressed(nn.Module):
    def __init__(self, matrix, bias: torch.Tensor | None, threads: int, isa: str | None) -> None:
        super().__init__()
        self.matrix = matrix
        self.threads = int(threads)
        self.isa = isa
        if bias is not None:
            self.register_buffer("bias", bias.detach().to("cpu", torch.float32).clone())
        else:
            self.bias = None

    @property
    def format(self) -> str:
        return self.matrix.format

    def _product(self, cols: torch.Tensor) -> torch.Tensor:
        """matrix @ cols for cols of shape (in, n), as a float32 tensor of shape (out, n)."""
        x = cols.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.matrix.matmul(x, isa=self.isa, threads=self.threads))


class CompressedLinear(_Compressed):
    """``nn.Linear`` running on a compressed weight matrix (out_features x in_features)."""

    def __init__(self, matrix, bias=None, threads: int = 1, isa: str | None = None) -> None:
        super().__init__(matrix, bias, threads, isa)
        self.out_features, self.in_features = matrix.shape

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's parameter name: callers may pass input=
        x = input
        if x.shape[-1] != self.in_features:
            raise ValueError(f"CompressedLinear: input has {x.shape[-1]} features, expected {self.in_features}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = self._product(x2.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}"


class CompressedConv2d(_Compressed):
    """``nn.Conv2d`` (groups=1, zero padding) as unfold + a compressed matrix product."""

    def __init__(self, matrix, conv: nn.Conv2d, threads: int = 1, isa: str | None = None) -> None:
        super().__init__(matrix, conv.bias, threads, isa)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's parameter name: callers may pass input=
        x = input
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CompressedConv2d: expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        h_out = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        w_out = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(
            x.float(),
            self.kernel_size,
            dilation=self.dilation,
            padding=self.padding,
            stride=self.stride,
        )
        k, length = cols.shape[1], cols.shape[2]
        y = self._product(cols.permute(1, 0, 2).reshape(k, n * length))  # (out, n * L)
        y = y.reshape(self.out_channels, n, length).permute(1, 0, 2)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1)
        return y.reshape(n, self.out_channels, h_out, w_out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, "
            f"padding={self.padding}, format={self.format}"
        )


def convert(
    model: nn.Module,
    format: Any = "auto",
    *,
    batch: int = 1,
    threads: int = 1,
    isa: str | None = None,
    inplace: bool = False,
    nnp=None,
    **kwargs,
) -> nn.Module:
    """Replace Linear / Conv2d layers by modules running on compressed weights (see module docs)."""
    if nnp is not None:
        return from_nnp(model, nnp, format, batch=batch, threads=threads, isa=isa, inplace=inplace, **kwargs)
    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)} (they need nnp=...)")
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(format, str):
        _format_for(format, "")
    elif not isinstance(format, dict):
        raise TypeError("format must be a string or a dict {module name: format}")
    if int(threads) < 0:
        raise ValueError("threads must be >= 0")
    out = model if inplace else copy.deepcopy(model)
    replacements = []
    for name, module, kind in list(_candidates(out)):
        m, _, _, _ = _build(name, kind, _weight_2d(module), _format_for(format, name), batch)
        if m is None:
            continue
        if kind == "linear":
            new = CompressedLinear(m, module.bias, threads, isa)
        else:
            new = CompressedConv2d(m, module, threads, isa)
        replacements.append((name, new))
    for name, new in replacements:
        if name == "":
            if not inplace:
                return new
            raise ValueError("cannot convert a bare Linear/Conv2d in place; use inplace=False")
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, new)
    return out
