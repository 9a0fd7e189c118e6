"""Model traversal: which tensors a model has, what role each plays, which ones are tied.

Also reads and writes ``.safetensors`` files (a small, bounds-checked implementation of the
public format, so that decoding needs neither torch nor the ``safetensors`` package).

Contract
--------
- ``collect(source)`` accepts a ``torch.nn.Module``, a state_dict (mapping name -> torch tensor or
  numpy array), a ``.safetensors`` path, a ``.pt``/``.pth``/``.bin`` path, or a model folder holding
  ``model.safetensors`` or ``pytorch_model.bin`` (``torch.load(...,
  weights_only=True)`` only: arbitrary pickled objects, e.g. a whole pickled model, are refused
  with ``PickledObjectError``, a ``FormatError`` whose one-line message says how to save a
  state_dict instead). It returns
  ``list[TensorEntry]`` in the source's order: name, dtype name (``float32``, ``bfloat16``, ...),
  shape, role (weight / bias / norm / embedding / buffer / other), ``values`` (numpy; bfloat16 as
  uint16 bit patterns) and ``alias_of`` (the first name sharing the same memory, or None).
- Roles: with a module, from the owning module's type (Embedding -> embedding; BatchNorm,
  LayerNorm, GroupNorm, InstanceNorm, RMSNorm, LocalResponseNorm -> norm; buffers -> buffer;
  ``*bias`` -> bias; other tensors of rank >= 2 -> weight, rank <= 1 -> other). Without a module
  (a state_dict or a file), from dtype, name and rank (``guess_role``) and siblings
  (``guess_roles``: ``P.weight`` and ``P.bias`` of the same shape are a norm layer's), which gives
  the module's roles for torch.nn's layers, except where the name does not say what the layer is:
  a norm without a bias (RMSNorm, ``LayerNorm(bias=False)`` under a name like "2.weight") is
  "other", stored exactly, where the module gives "norm"; an embedding table whose name has no
  "embed" and whose module is not GPT-2's ``wte`` / ``wpe`` ("0.weight", T5's "shared.weight") is
  "weight" where the module gives "embedding". The sibling rule also calls a custom per-channel
  affine pair (a ``Scale`` layer, ``FrozenBatchNorm2d``'s buffers) "norm", which the module would
  not.
- ``load_safetensors(path)`` / ``save_safetensors(tensors, path)`` (numpy arrays; bfloat16 via
  ``dtypes={name: "bfloat16"}`` with uint16 bit-pattern arrays). Malformed files raise
  ``nnpress.FormatError``. ``save_safetensors`` writes a temp file and renames it.

Surprises
---------
- torch is imported only for torch inputs (modules, torch tensors, ``.pt`` files).
- Tied tensors: two names whose tensors share storage, offset, shape, strides and dtype.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import SAFETENSORS_DTYPES
from .config import FLOAT_DTYPES, ROLES
from .errors import FormatError, PickledObjectError

__all__ = [
    "ROLES",
    "SAFETENSORS_DTYPES",
    "TensorEntry",
    "collect",
    "guess_role",
    "guess_roles",
    "load_safetensors",
    "load_source",
    "save_safetensors",
]

_TAG_OF = {v[0]: k for k, v in SAFETENSORS_DTYPES.items()}
_NUMPY_NAME = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float16): "float16",
    np.dtype(np.float64): "float64",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int16): "int16",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "bool",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.uint64): "uint64",
}


@dataclass
class TensorEntry:
    name: str
    dtype: str
    shape: tuple
    role: str
    values: np.ndarray | None  # None for an alias
    alias_of: str | None = None

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def float_values(self) -> np.ndarray:
        """Values as float32/float64 numpy (bfloat16 widened exactly); floats only."""
        if self.dtype == "bfloat16":
            return (self.values.astype(np.uint32) << 16).view(np.float32)
        if self.dtype == "float16":
            return self.values.astype(np.float32)
        return self.values


_NORM_NAME = re.compile(
    r"(^|[._])(norm|layernorm|layer_norm|ln|ln_?\d+|bn|bn\d+|batchnorm|groupnorm|rmsnorm)"
    r"([._]|\d|$)",
    re.IGNORECASE,
)


def guess_role(name: str, dtype: str, shape: tuple) -> str:
    """Role from name, dtype and rank, for tensors without a module (state_dicts, files)."""
    if dtype not in FLOAT_DTYPES:
        return "buffer"
    low = name.lower()
    leaf = low.rsplit(".", 1)[-1]
    parent = low.rsplit(".", 2)[-2] if "." in low else ""  # the owning module's own name
    if leaf in ("running_mean", "running_var", "num_batches_tracked"):
        return "buffer"
    if len(shape) <= 1 and _NORM_NAME.search(name):
        return "norm"
    if leaf == "bias" or leaf.endswith("_bias"):
        return "bias"
    if len(shape) == 2 and ("embed" in low or parent in ("wte", "wpe")):
        return "embedding"
    if len(shape) >= 2:
        return "weight"
    return "other"


def guess_roles(tensors: Iterable[tuple[str, str, tuple]]) -> list[str]:
    """The roles of a whole source's tensors without a module, from (name, dtype, shape) each:
    ``guess_role``, and a normalisation layer's affine pair found by its siblings, which a name alone
    does not show ("2.weight" of ``nn.Sequential(..., nn.LayerNorm(d))``). ``P.weight`` and ``P.bias``
    of the same shape (rank >= 1, both float) are "norm", as ``collect`` with the module gives them: in
    torch.nn only the normalisation layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm) hold such
    a pair (a custom per-channel affine layer's pair is called "norm" too); a Linear's or
    convolution's bias has a lower rank than its weight, and PReLU has no bias. A 1-D ``weight``
    without a same-shaped bias (RMSNorm, ``LayerNorm(bias=False)``, PReLU) keeps ``guess_role``'s
    answer (a norm-like name: "norm", else "other")."""
    items = [(name, dtype, tuple(int(d) for d in shape)) for name, dtype, shape in tensors]
    floats = {name: shape for name, dtype, shape in items if dtype in FLOAT_DTYPES}
    roles = []
    for name, dtype, shape in items:
        role = guess_role(name, dtype, shape)
        prefix, _, leaf = name.rpartition(".")
        pair = {"weight": "bias", "bias": "weight"}.get(leaf)
        if role in ("weight", "bias", "other") and pair and len(shape) >= 1:
            if floats.get((prefix + "." if prefix else "") + pair) == shape:  # (role: a float itself)
                role = "norm"
        roles.append(role)
    return roles


def _module_roles(module) -> dict[str, str]:
    import torch.nn as nn

    norm_types = tuple(
        t
        for t in (
            getattr(nn.modules.batchnorm, "_NormBase", None),
            nn.LayerNorm,
            nn.GroupNorm,
            nn.LocalResponseNorm,
            getattr(nn, "RMSNorm", None),
            getattr(nn.modules.instancenorm, "_InstanceNorm", None),
        )
        if t is not None
    )
    roles: dict[str, str] = {}
    for mname, mod in module.named_modules():
        prefix = mname + "." if mname else ""
        is_norm = isinstance(mod, norm_types) or "norm" in type(mod).__name__.lower()
        for pname, p in mod.named_parameters(recurse=False):
            if isinstance(mod, nn.Embedding) or isinstance(mod, getattr(nn, "EmbeddingBag", ())):
                role = "embedding"
            elif is_norm:
                role = "norm"
            elif pname.endswith("bias"):
                role = "bias"
            elif p.dim() >= 2:
                role = "weight"
            else:
                role = "other"
            roles[prefix + pname] = role
        for bname, _ in mod.named_buffers(recurse=False):
            roles[prefix + bname] = "buffer"
    return roles


def _torch_to_numpy(t) -> tuple[np.ndarray, str]:
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
    name = str(t.dtype).replace("torch.", "")
    if name not in _TAG_OF:
        raise TypeError(f"unsupported tensor dtype {t.dtype}")
    return t.contiguous().numpy(), name


def _tie_key_torch(t):
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:  # pragma: no cover - very old torch
        ptr = t.storage().data_ptr()
    if t.numel() == 0:
        return None
    return (ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), str(t.dtype))


def _tie_key_numpy(a: np.ndarray):
    if a.size == 0:
        return None
    return (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")  # an object can only be a torch Module if torch is loaded
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_torch_tensor(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def load_source(source) -> tuple[Mapping[str, Any], Any, dict | None]:
    """(tensors by name, module or None, dtype overrides for numpy arrays) of any supported
    source."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        from .checkpoint import LazyTensors, is_checkpoint_path, open_checkpoint

        if is_checkpoint_path(path):  # safetensors file, index or folder: read one tensor per lookup
            ckpt = open_checkpoint(path)
            return LazyTensors(ckpt), None, {i.name: i.dtype for i in ckpt.infos()}
        if os.path.isdir(path):  # a model folder (Hugging Face layout) with a torch state_dict
            if os.path.isfile(os.path.join(path, "pytorch_model.bin")):
                path = os.path.join(path, "pytorch_model.bin")
            else:
                raise ValueError(
                    f"{path!r} is a folder without safetensors weights (model.safetensors, "
                    "model.safetensors.index.json or shards) or pytorch_model.bin"
                )
        low = path.lower()
        if low.endswith((".pt", ".pth", ".bin", ".ckpt")):
            return _load_torch_file(path), None, None
        raise ValueError(f"unsupported input file {path!r}: expected .safetensors, .pt or .pth")
    if _is_torch_module(source):
        return source.state_dict(), source, None
    if isinstance(source, Mapping):
        return source, None, None
    raise TypeError(
        "source must be a torch.nn.Module, a state_dict (mapping of name -> tensor/array), "
        f"or a .safetensors/.pt/.pth path, not {type(source).__name__}"
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _torch_load_message(e: BaseException) -> str:
    """torch.load's multi-line, coloured error as one plain line: its essential part only."""
    msg = _ANSI.sub("", str(e))
    if "WeightsUnpickler error:" in msg:
        msg = msg.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    msg = " ".join(msg.split())
    return msg.split(". ", 1)[0].rstrip(".") if msg else type(e).__name__


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (torch.jit.save): a zip holding code/ and constants.pkl."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _load_torch_file(path: str) -> Mapping[str, Any]:
    import pickle

    import torch

    if _is_torchscript(path):  # its weights: the scripted module's state_dict (no Python objects unpickled)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return dict(torch.jit.load(path, map_location="cpu").state_dict())
        except (RuntimeError, ValueError) as e:
            raise FormatError(f"{path}: a TorchScript archive that does not load: {_torch_load_message(e)}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(_ANSI.sub("", str(e)))
        if found:
            raise PickledObjectError(
                f"{path}: holds a pickled {found.group(1)} object, not only tensors, and the "
                "weights-only loader refuses objects (loading them can run code): save a "
                "state_dict with torch.save(model.state_dict(), path), or pass the module to "
                "nnpress.compress in Python"
            ) from None
        raise FormatError(f"{path}: cannot load as a weights-only torch state_dict: {_torch_load_message(e)}") from None
    except (RuntimeError, EOFError, ValueError, AttributeError) as e:
        raise FormatError(f"{path}: cannot load as a weights-only torch state_dict: {_torch_load_message(e)}") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(_is_torch_tensor(v) for v in inner.values()):
                return inner
        bad = [k for k, v in obj.items() if not _is_torch_tensor(v)]
        if bad:
            raise ValueError(f"{path}: not a state_dict: entries {bad[:5]} are not tensors")
        return obj
    raise ValueError(f"{path}: contains a {type(obj).__name__}, not a state_dict")


def collect(source, *, dtypes: Mapping[str, str] | None = None) -> list[TensorEntry]:
    """The tensors of ``source`` with dtype, role and tie information (see module docstring).

    ``dtypes`` marks numpy uint16 arrays that hold bfloat16 bit patterns (``{"w": "bfloat16"}``).
    """
    tensors, module, file_dtypes = load_source(source)
    dtype_over = dict(file_dtypes or {})
    dtype_over.update(dtypes or {})
    roles = _module_roles(module) if module is not None else {}
    entries: list[TensorEntry] = []
    seen: dict[Any, str] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty str, got {name!r}")
        if len(name.encode("utf-8")) > 65535:
            raise ValueError(f"tensor name too long ({len(name)} characters): {name[:40]!r}...")
        if _is_torch_tensor(t):
            key = _tie_key_torch(t)
            arr, dt = _torch_to_numpy(t)
        elif isinstance(t, np.ndarray) or np.isscalar(t):
            arr = np.asarray(t)
            key = _tie_key_numpy(arr)
            if arr.dtype not in _NUMPY_NAME:
                raise TypeError(f"tensor {name!r}: unsupported dtype {arr.dtype}")
            dt = _NUMPY_NAME[arr.dtype]
            if dtype_over.get(name) == "bfloat16":
                if arr.dtype != np.uint16:
                    raise TypeError(f"tensor {name!r}: bfloat16 data must be uint16 bit patterns")
                dt = "bfloat16"
            arr = np.ascontiguousarray(arr).reshape(arr.shape)
        else:
            raise TypeError(f"tensor {name!r}: expected a torch tensor or numpy array, got {type(t).__name__}")
        if arr.ndim > 8:
            raise ValueError(f"tensor {name!r} has {arr.ndim} dimensions; at most 8 are supported")
        shape = tuple(int(d) for d in arr.shape)
        role = roles.get(name) or "other"  # without a module: guess_roles below, from all the names
        if dt not in FLOAT_DTYPES:
            role = "buffer"
        if key is not None and key in seen:
            entries.append(TensorEntry(name, dt, shape, role, None, alias_of=seen[key]))
            continue
        if key is not None:
            seen[key] = name
        entries.append(TensorEntry(name, dt, shape, role, arr))
    guessed = guess_roles((e.name, e.dtype, e.shape) for e in entries)
    for e, role in zip(entries, guessed):
        if e.name not in roles:
            e.role = role
    return entries


# ---------------------------------------------------------------- safetensors
def load_safetensors(path, *, return_dtypes: bool = False):
    """Read a ``.safetensors`` file into numpy arrays (bfloat16 as uint16 bit patterns); the header
    is checked first (``checkpoint.SafetensorsFile``), then each tensor is read into its array."""
    from .checkpoint import SafetensorsFile

    st = SafetensorsFile(path)
    out = {name: st.read(name) for name in st.names}
    dtypes = {name: st.info(name).dtype for name in st.names}
    return (out, dtypes) if return_dtypes else out


def save_safetensors(
    tensors: Mapping[str, Any],
    path,
    *,
    dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write numpy arrays (or torch tensors) to ``path`` as ``.safetensors``, atomically.
    Tied entries are written once per name (the format has no aliases)."""
    from .container import write_bytes_atomic

    dtypes = dict(dtypes or {})
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if _is_torch_tensor(t):
            arr, dt = _torch_to_numpy(t)
        else:
            arr = np.asarray(t)
            if arr.dtype not in _NUMPY_NAME:
                raise TypeError(f"tensor {name!r}: unsupported dtype {arr.dtype}")
            dt = dtypes.get(name) or _NUMPY_NAME[arr.dtype]
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _TAG_OF[dt],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    write_bytes_atomic(path, struct.pack("<Q", len(hjson)) + hjson + b"".join(blobs))
