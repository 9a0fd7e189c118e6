"""Convolutions on a ``.nnp`` file's integer levels (part of :func:`nnpress.nn_levels.from_nnp`).

Contract
--------
- Every ``nn.Conv2d`` and ``nn.Conv1d`` of a model converted by ``from_nnp`` becomes a
  :class:`LevelConv` whose product runs in one of these formats (``format`` as for Linear layers: a
  name for every layer, or a dict {module name: name}):
  * ``"dense"``: the decoded float32 weights (bit-identical to ``nnpress.decompress``) and torch's
    own convolution;
  * ``"decoded"``: the levels held as int8 / int16 / int32 (the narrowest that holds them) and the
    scales in float64; each call decodes the weights (``u * step_ij`` in float64, rounded once:
    bit-identical to the decompressed weights) and runs torch's convolution, so its outputs equal
    torch's on the decompressed weights exactly;
  * the Linear formats (``"levels"``, ``"levels16"``, ``"int8"``, ``"int8x2"``, ``"cser"``,
    ``"codebook"``, ``"cer"``, ``"lut"``; :mod:`nnpress.nn_levels`) on the im2col matrix: the weight viewed as
    out x (in * kh * kw) (the ``.nnp`` tensor's own rows x cols view), the input unfolded to one row
    of in * kh * kw values per output pixel (``F.unfold``), so one product has output pixels x
    images rows, as the C++ runtime's ``nnpress::Layer`` runs a convolution.
  Stride, padding (ints, ``"valid"`` and ``"same"``), dilation and every ``padding_mode`` are
  honoured by every format, on batched (N x C x ...) and unbatched (C x ...) inputs alike.
  Grouped (``groups > 1``, depthwise) convolutions run only as ``dense`` or ``decoded``: the
  im2col formats are refused for them, and the reason is in the layer's ``info["reasons"]``
  (``levels_plan``).
- ``"auto"`` times every candidate that can hold the layer at the layer's real input: the input
  shape it receives when ``example_inputs`` (given to ``from_nnp``) runs through the converted
  model; the rule is the Linear layers' (fastest, ties within 10 % to the fewest bytes). Without
  ``example_inputs`` nothing can be timed: each auto convolution is built as ``decoded`` and its
  ``info["reasons"]`` says so.
- A convolution whose weight is stored raw (not quantized) runs as ``dense`` (its file values).
- Other convolutions (``Conv3d``, the transposed ones, and Conv1d / Conv2d subclasses that override
  ``forward`` or ``_conv_forward``) are decoded into the model and left to torch; ``levels_plan``
  lists them with format "torch" and the reason.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import nn_levels as nl

CONV_ONLY_FORMATS = ("decoded",)
IM2COL_FORMATS = ("levels", "levels16", "int8", "int8x2", "cser", "codebook", "cer", "lut")
CONV_FORMATS = ("auto", "dense", "decoded") + IM2COL_FORMATS


def _plain_conv(m: nn.Module) -> bool:
    """A Conv1d / Conv2d (or subclass) that computes what torch's does: a subclass overriding
    ``forward`` or ``_conv_forward`` (weight standardization, dynamic padding, ...) computes something
    else, which a LevelConv would silently replace."""
    for base in (nn.Conv1d, nn.Conv2d):
        if isinstance(m, base):
            return type(m).forward is base.forward and type(m)._conv_forward is base._conv_forward
    return False


def conv_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv1d / Conv2d modules of ``model`` that compute torch's convolution, by name."""
    return [(n, m) for n, m in model.named_modules() if _plain_conv(m)]


def other_convs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions this module does not convert (Conv3d, transposed convolutions, subclasses with
    a forward of their own)."""
    conv_nd = nn.modules.conv._ConvNd
    return [(n, m) for n, m in model.named_modules() if isinstance(m, conv_nd) and not _plain_conv(m)]


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


class _Geometry:
    """A Conv1d / Conv2d's hyper-parameters, with a Conv1d seen as a Conv2d of height 1."""

    def __init__(self, mod: nn.Module) -> None:
        self.dims = 1 if isinstance(mod, nn.Conv1d) else 2
        self.in_channels, self.out_channels = int(mod.in_channels), int(mod.out_channels)
        self.kernel = tuple(int(k) for k in mod.kernel_size)
        self.stride = tuple(int(s) for s in mod.stride)
        self.dilation = tuple(int(d) for d in mod.dilation)
        self.groups = int(mod.groups)
        self.padding = mod.padding if isinstance(mod.padding, str) else tuple(int(p) for p in mod.padding)
        self.padding_mode = mod.padding_mode
        # [last dim left, right, previous dim left, right, ...]: F.pad's order, as torch's conv keeps it
        self.pad_twice = tuple(int(p) for p in mod._reversed_padding_repeated_twice)
        self.weight_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel)

    def im2col_refusal(self) -> str | None:
        """Why the im2col formats cannot run this convolution (None: they can)."""
        if self.groups != 1:
            return f"groups={self.groups}: the im2col formats run ungrouped convolutions only"
        return None

    def _pad_zero_only(self) -> tuple | None:
        """Symmetric zero padding per spatial dim (unfold's own padding), or None when F.pad is needed."""
        if self.padding_mode != "zeros":
            return None
        p = self.pad_twice
        sym = tuple(p[2 * i] for i in range(len(p) // 2))[::-1]  # back to (dim0, dim1) order
        if any(p[2 * i] != p[2 * i + 1] for i in range(len(p) // 2)):
            return None
        return sym

    def torch_conv(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """torch's convolution with these hyper-parameters (as nn.Conv1d / nn.Conv2d compute it)."""
        conv = F.conv1d if self.dims == 1 else F.conv2d
        if self.padding_mode != "zeros":
            x = F.pad(x, self.pad_twice, mode=self.padding_mode)
            return conv(x, w, bias, self.stride, 0, self.dilation, self.groups)
        return conv(x, w, bias, self.stride, self.padding, self.dilation, self.groups)

    def unfold(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(im2col columns N x (C * kh * kw) x L, output spatial size) of an N x C x ... input."""
        sym = self._pad_zero_only()
        if sym is None:  # F.pad on the input's own dims (before a Conv1d input gets its unit height)
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self.pad_twice, mode=mode)
            pad = (0, 0)
        else:
            pad = (0, *sym) if self.dims == 1 else sym
        if self.dims == 1:
            x = x.unsqueeze(2)
            kernel, stride, dil = (1, *self.kernel), (1, *self.stride), (1, *self.dilation)
        else:
            kernel, stride, dil = self.kernel, self.stride, self.dilation
        h, w = x.shape[-2:]
        oh = (h + 2 * pad[0] - dil[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        ow = (w + 2 * pad[1] - dil[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        if oh < 1 or ow < 1:
            raise RuntimeError(f"LevelConv: input {tuple(x.shape)} is smaller than the kernel {self.kernel}")
        cols = F.unfold(x, kernel, dilation=dil, padding=pad, stride=stride)
        return cols, ((ow,) if self.dims == 1 else (oh, ow))


# ---------------------------------------------------------------------------------------------
# backends: each computes the whole convolution (geometry, input, bias)
# ---------------------------------------------------------------------------------------------


class _TorchDense:
    """torch's convolution on the decoded float32 weights."""

    format = "dense"

    def __init__(self, weight: np.ndarray, shape: tuple) -> None:
        self.weight = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)).reshape(shape)
        self.nbytes = self.weight.numel() * 4

    def __call__(self, g: _Geometry, x: torch.Tensor, bias) -> torch.Tensor:
        return g.torch_conv(x, self.weight, bias)


class _Decoded:
    """The levels in the narrowest integer type that holds them; each call decodes the float32
    weights exactly as the file's decoder does (u * step_ij, step_ij = row_scale * col_scale in
    float64, rounded once) and runs torch's convolution."""

    format = "decoded"

    def __init__(self, lt: nl.LevelTensor, shape: tuple) -> None:
        u = lt.u
        amax = int(np.abs(u).max(initial=0))
        dt = np.int8 if amax <= 127 else np.int16 if amax <= 32767 else np.int32
        self.levels = torch.from_numpy(np.ascontiguousarray(u.astype(dt)))
        self.row_scale = torch.from_numpy(np.asarray(lt.row_scale, np.float64)).unsqueeze(1)
        self.col_scale = None if lt.col_scale is None else torch.from_numpy(np.asarray(lt.col_scale, np.float64))
        self.shape = shape
        self.nbytes = nl._tensor_bytes(self.levels, self.row_scale, self.col_scale)

    def weight(self) -> torch.Tensor:
        step = self.row_scale if self.col_scale is None else self.row_scale * self.col_scale
        return (self.levels.to(torch.float64) * step).to(torch.float32).reshape(self.shape)

    def __call__(self, g: _Geometry, x: torch.Tensor, bias) -> torch.Tensor:
        return g.torch_conv(x, self.weight(), bias)


class _Im2col:
    """A Linear backend of nn_levels (x: items x in, row-major) on the unfolded input; CSER / CER /
    codebook take the unfolded columns as they come (in x items), without the transposes."""

    def __init__(self, backend) -> None:
        self.b = backend
        self.format = backend.format
        self.nbytes = int(backend.nbytes)
        if hasattr(backend, "outliers"):
            self.outliers = int(backend.outliers)
        self.columns = isinstance(backend, nl._RowGroup)

    def __call__(self, g: _Geometry, x: torch.Tensor, bias) -> torch.Tensor:
        cols, spatial = g.unfold(x)  # N x K x L
        n, k, pixels = cols.shape
        out = g.out_channels
        if self.columns:
            xt = cols.permute(1, 0, 2).reshape(k, n * pixels)  # a view for one image
            y = torch.from_numpy(
                self.b.m.matmul(np.ascontiguousarray(xt.numpy()), isa=self.b.isa, threads=self.b.threads)
            )
            y = y.view(out, n, pixels).permute(1, 0, 2)
            if bias is not None:
                y = y + bias.view(1, out, 1)
            return y.reshape(n, out, *spatial)
        x2 = cols.transpose(1, 2).reshape(n * pixels, k)  # one row per output pixel (a copy)
        y = self.b(x2.contiguous(), bias)  # (n * pixels) x out
        return y.view(n, pixels, out).permute(0, 2, 1).reshape(n, out, *spatial)


def _build_conv(fmt: str, lt: nl.LevelTensor, w: np.ndarray | None, g: _Geometry, *, act_digits, isa, threads):
    """One conv backend of format ``fmt`` (ValueError when it cannot hold the layer)."""
    if fmt == "dense":
        return _TorchDense(lt.dequantize() if w is None else w, g.weight_shape)
    if fmt == "decoded":
        return _Decoded(lt, g.weight_shape)
    if fmt in IM2COL_FORMATS:
        why = g.im2col_refusal()
        if why is not None:
            raise ValueError(why)
        return _Im2col(nl._build(fmt, lt, w, act_digits=act_digits, isa=isa, threads=threads))
    raise ValueError(f"unknown convolution format {fmt!r}")


# ---------------------------------------------------------------------------------------------
# module
# ---------------------------------------------------------------------------------------------


class LevelConv(nl._LevelModule):
    """``nn.Conv1d`` / ``nn.Conv2d`` whose product runs on one backend built from a ``.nnp``
    tensor (inference only)."""

    def __init__(self, mod: nn.Module, backend, bias: torch.Tensor | None, info: dict) -> None:
        super().__init__(backend, bias, info)
        self.geometry = _Geometry(mod)
        self.in_channels, self.out_channels = self.geometry.in_channels, self.geometry.out_channels

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # torch's parameter name: callers may pass input=
        x = input
        if x.dim() == self.geometry.dims + 1:  # unbatched, as torch's Conv1d / Conv2d take it
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.dim() != self.geometry.dims + 2:
            raise ValueError(
                f"LevelConv: expected a {self.geometry.dims + 1}-d (unbatched) or {self.geometry.dims + 2}-d "
                f"(batched) input, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"LevelConv: input has {x.shape[1]} channels, expected {self.in_channels}")
        if not (x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()):
            x = x.to("cpu", torch.float32).contiguous()
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._out(self.backend(self.geometry, x.detach(), self.bias))
        return self._out(self.backend(self.geometry, x, self.bias))

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"{g.in_channels}, {g.out_channels}, kernel_size={g.kernel}, stride={g.stride}, "
            f"padding={g.padding}, dilation={g.dilation}, groups={g.groups}, format={self.format}"
        )


def _raw_weight(f, key: str) -> np.ndarray:
    w = f.read(key)
    if f.entry(key)["dtype"] == "bfloat16":
        from .container import bfloat16_to_float32

        w = bfloat16_to_float32(w)
    return np.asarray(w, dtype=np.float32)


def conv_module(name: str, mod: nn.Module, f, fmt: str, *, act_digits, isa, threads, forced: bool) -> LevelConv:
    """The LevelConv of ``mod`` in format ``fmt`` ("auto": ``decoded`` until :func:`choose` times it).
    ``forced``: the format was named for this layer (a dict entry), so a format that cannot hold it
    raises; a format given for the whole model falls back to ``decoded`` with the reason recorded."""
    key = nl._join(name, "weight")
    g = _Geometry(mod)
    rows = g.out_channels
    cols = int(np.prod(g.weight_shape[1:]))
    info: dict = {"name": name, "kind": "conv", "shape": (rows, cols), "weight_shape": g.weight_shape, "times_us": {}}
    reasons: list[str] = []
    if f.entry(key)["storage"] == "raw" or (
        f.entry(key)["storage"] == "alias" and f.entry(f.entry(key)["alias_of"])["storage"] == "raw"
    ):
        if fmt not in ("auto", "dense"):
            if forced:
                raise ValueError(
                    f"layer {name!r}: its weight is stored raw (not quantized), so format {fmt!r} cannot hold it"
                )
        reasons.append("weight stored raw (not quantized): torch's convolution on the file's values")
        backend = _TorchDense(_raw_weight(f, key), g.weight_shape)
    else:
        lt = nl.level_tensor(f, key)
        want = "decoded" if fmt == "auto" else fmt
        try:
            backend = _build_conv(want, lt, None, g, act_digits=act_digits, isa=isa, threads=threads)
        except ValueError as e:
            if forced:
                raise ValueError(f"layer {name!r}: {e}") from e
            reasons.append(f"format {fmt!r} refused: {e}; kept as decoded levels on torch's convolution")
            backend = _build_conv("decoded", lt, None, g, act_digits=act_digits, isa=isa, threads=threads)
        info["pending"] = fmt == "auto"
    info["reasons"] = reasons
    bias = nl._bias(f, name) if mod.bias is not None else None
    m = LevelConv(mod, backend, bias, info)
    _update_info(m)
    return m


def _update_info(m: LevelConv) -> None:
    m.info.update(
        format=m.backend.format, bytes=int(m.backend.nbytes), dense_bytes=int(np.prod(m.geometry.weight_shape)) * 4
    )
    if hasattr(m.backend, "outliers"):
        m.info["outliers"] = int(m.backend.outliers)


def record_input_shapes(model: nn.Module, convs: list[tuple[str, nn.Module]], example_inputs) -> dict[str, tuple]:
    """{name: input shape} of each module in ``convs`` when ``example_inputs`` runs through ``model``
    (a tensor or a tuple of positional arguments)."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, m in convs:

        def hook(mod, args, kwargs, name=name):
            x = args[0] if args else kwargs.get("input", kwargs.get("x"))
            if isinstance(x, torch.Tensor):  # a call without its input tensor leaves the layer untimed
                shapes.setdefault(name, tuple(x.shape))

        hooks.append(m.register_forward_pre_hook(hook, with_kwargs=True))
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def choose(
    model: nn.Module, f, shapes: dict | None, *, act_digits, isa, threads, candidates, race, max_bytes_ratio=None
) -> None:
    """Give every pending ("auto") LevelConv of ``model`` the format that is fastest on its real
    input shape (see the module docs): ``shapes`` {name: input shape} as ``record_input_shapes``
    found them with the caller's example_inputs (None: none given); ``race``: the timing routine
    shared with the Linear layers; ``max_bytes_ratio``: as from_nnp's (nl.within_cap)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, LevelConv) and m.info.get("pending")]
    if not convs:
        return
    if shapes is None:
        for _, m in convs:
            m.info["reasons"].append("not timed (no example_inputs): decoded levels on torch's convolution")
            m.info.pop("pending")
        return
    for name, m in convs:
        m.info.pop("pending")
        if name not in shapes:
            m.info["reasons"].append("not reached by example_inputs: decoded levels on torch's convolution")
            continue
        g = m.geometry
        lt = nl.level_tensor(f, nl._join(name, "weight"))
        w = lt.dequantize().reshape(lt.u.shape)
        cands = ["dense", "decoded"]
        if g.im2col_refusal() is None:
            if nl.has_level_kernels():
                cands.append("levels")
            if act_digits is not None:
                # the int8 formats only where torch's integer GEMM pays (as for Linear layers)
                int8 = candidates is not None or nl.int_mm_pays()
                cands += (["int8", "int8x2"] if int8 else []) + (["levels16"] if nl.has_level_kernels() else [])
            if nl._num_values(w) <= nl._MAX_VALUES:
                cands += ["cser", "codebook"]
            if hasattr(nl._core, "LutMatrix") and nl._lut_holds(lt.u):
                cands.append("lut")
        else:
            m.info["reasons"].append(g.im2col_refusal())
        cands = [c for c in cands if candidates is None or c in candidates or c == "decoded"]
        built = {}
        for c in cands:
            try:
                built[c] = _build_conv(c, lt, w, g, act_digits=act_digits, isa=isa, threads=threads)
            except ValueError as e:
                m.info["reasons"].append(f"{c}: {e}")
        built = nl.within_cap(built, max_bytes_ratio, int(np.prod(g.weight_shape)) * 4)
        del lt, w
        shape = shapes[name]
        gen = torch.Generator().manual_seed(0)
        # the backends take batched inputs (LevelConv.forward adds the batch dimension of an unbatched one)
        x = torch.randn(*((1, *shape) if len(shape) == g.dims + 1 else shape), generator=gen)
        bias = m.bias
        fns = {c: (lambda xx, b=b, g=g, bias=bias: b(g, xx, bias)) for c, b in built.items()}
        pick, times = race(fns, {c: b.nbytes for c, b in built.items()}, x, threads=threads)
        m.backend = built[pick]
        m.info["times_us"] = times
        m.info["input_shape"] = shape
        _update_info(m)


def torch_kept_info(name: str, mod: nn.Module) -> dict:
    """The plan entry of a convolution left to torch."""
    return {
        "name": name,
        "kind": "conv",
        "shape": tuple(mod.weight.shape),
        "format": "torch",
        "bytes": int(mod.weight.numel() * mod.weight.element_size()),
        "dense_bytes": int(mod.weight.numel() * 4),
        "times_us": {},
        "reasons": [
            f"{type(mod).__name__} is not converted"
            + (" (it overrides torch's forward)" if isinstance(mod, (nn.Conv1d, nn.Conv2d)) else "")
            + ": decoded to float32 and left to torch"
        ],
    }
