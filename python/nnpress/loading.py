"""Loading a ``.nnp`` file straight into a torch model, tensor by tensor (needs torch; the
transformers helper needs transformers).

Contract
--------
- ``load_state_dict(model, path, strict=True, *, threads=None)`` fills ``model``'s parameters and
  persistent buffers from the file, one tensor at a time: a tensor whose model counterpart is a
  contiguous CPU tensor of the same dtype is decoded straight into its storage; any other (another
  dtype, a device, a non-contiguous view) is decoded into one temporary array and copied with
  conversion. So at most one decoded tensor exists besides the model. Names sharing storage in the
  model (tied weights) are filled by whichever of them the file has. Returns ``(missing_keys,
  unexpected_keys)`` as ``torch.nn.Module.load_state_dict`` does; with ``strict=True`` either
  being non-empty, or a shape mismatch, raises ``NnpMismatchError`` (a ``RuntimeError``) before anything is written.
- ``from_pretrained(folder, cls=None, *, dtype="auto", strict=True, threads=None, **kwargs)``: a
  transformers model from a folder holding ``config.json`` (plus tokenizer files, untouched) and its
  weights as a ``.nnp`` file (``model.nnp``, or the only ``*.nnp`` in the folder). The model is
  built from the config (``cls.from_config``; ``cls`` defaults to ``transformers.AutoModel``), in
  ``dtype`` ("auto": the config's dtype, else the file's most common floating dtype), filled with
  ``load_state_dict``, tied again (``tie_weights``) and put in eval mode, as
  ``from_pretrained`` returns it. Like transformers' loader it ignores file tensors the model keeps
  as non-persistent buffers and the class's ``_keys_to_ignore_on_load_*`` patterns; any other
  missing or unexpected name raises ``NnpMismatchError`` (a ``RuntimeError``) unless
  ``strict=False``. The tokenizer loads from the same folder with
  ``AutoTokenizer.from_pretrained(folder)``.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import Counter

import numpy as np

from .container import NnpFile
from .errors import NnpMismatchError

__all__ = ["from_pretrained", "load_state_dict"]


def _file(path) -> NnpFile:
    return path if isinstance(path, NnpFile) else NnpFile(path)


def _torch_dtype(name: str):
    import torch

    return torch.bfloat16 if name == "bfloat16" else getattr(torch, name)


def _storage_key(t):
    if t.numel() == 0:
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def load_state_dict(model, path, strict: bool = True, *, threads: int | None = None):
    """Fill ``model`` from the ``.nnp`` file ``path`` tensor by tensor (module docstring)."""
    import torch

    f = _file(path)
    targets = model.state_dict(keep_vars=True)  # parameters and persistent buffers, by name
    in_file = set(f.names)
    unexpected = [n for n in f.names if n not in targets]
    # a model name sharing storage with a name the file has is filled through it
    filled = {_storage_key(targets[n].data) for n in targets if n in in_file}
    missing = [n for n in targets if n not in in_file and _storage_key(targets[n].data) not in filled]
    mismatched = [
        f"{n}: file {tuple(f.entry(n)['shape'])}, model {tuple(targets[n].shape)}"
        for n in f.names
        if n in targets and tuple(int(d) for d in f.entry(n)["shape"]) != tuple(targets[n].shape)
    ]
    if mismatched:
        raise NnpMismatchError("shape mismatch loading " + f"{f.path or 'the file'}: " + "; ".join(mismatched[:5]))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}" + (f" (+{len(missing) - 8})" if len(missing) > 8 else ""))
        if unexpected:
            parts.append(
                f"unexpected keys {unexpected[:8]}" + (f" (+{len(unexpected) - 8})" if len(unexpected) > 8 else "")
            )
        raise NnpMismatchError(f"error loading {f.path or 'the file'} into {type(model).__name__}: " + "; ".join(parts))
    done: set = set()
    with torch.no_grad():
        for name in f.names:
            if name not in targets:
                continue
            t = targets[name].data
            key = _storage_key(t)
            if key is not None and key in done:  # tied: already filled through another name
                continue
            e = f.entry(name)
            file_dtype = _torch_dtype(e["dtype"])
            if t.device.type == "cpu" and t.dtype == file_dtype and t.is_contiguous():
                if t.numel():
                    # the parameter's own bytes as a numpy view: decoded in place
                    f.read_into(name, t.reshape(-1).view(torch.uint8).numpy(), threads=threads)
            else:
                a = f.read(name, threads=threads)
                if e["dtype"] == "bfloat16":
                    src = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
                else:
                    src = torch.from_numpy(a)
                t.copy_(src)
                del a, src
            done.add(key)
    return torch.nn.modules.module._IncompatibleKeys(missing, unexpected)


def _find_nnp(folder: str) -> str:
    cand = os.path.join(folder, "model.nnp")
    if os.path.isfile(cand):
        return cand
    found = sorted(n for n in os.listdir(folder) if n.endswith(".nnp"))
    if len(found) == 1:
        return os.path.join(folder, found[0])
    if not found:
        raise FileNotFoundError(f"{folder!r} holds no .nnp file (expected model.nnp)")
    raise ValueError(f"{folder!r} holds several .nnp files {found}: name the one to load model.nnp")


def _no_init_weights():
    """transformers' context that skips the random initialisation (None if this version lacks it)."""
    for mod in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            return importlib.import_module(mod).no_init_weights
        except (ImportError, AttributeError):
            continue
    return None


def _new_model(cls, config, dtype):
    try:
        return cls.from_config(config, dtype=dtype)  # parameters created in the target dtype
    except TypeError:  # transformers before 4.56 names it torch_dtype
        return cls.from_config(config, torch_dtype=dtype)


def _build(cls, config, dtype, f: NnpFile):
    """The model for ``config``; its random initialisation is skipped when the file holds every
    parameter and persistent buffer (checked on a meta-device copy first), since all are overwritten."""
    import torch

    skip = _no_init_weights()
    if skip is not None:
        with torch.device("meta"):
            names = set(_new_model(cls, config, dtype).state_dict())
        if names <= set(f.names):
            with skip():
                return _new_model(cls, config, dtype)
    return _new_model(cls, config, dtype)


def _prefix_target(model, f: NnpFile):
    """What to fill so that names match as transformers matches them across the base model prefix:
    the model itself; or, when the file was saved from a model with a task head (names
    ``<prefix>.…``) and ``model`` is the base model, a holder with ``model`` under ``<prefix>``; or,
    when the file holds a base model and ``model`` has a head, the model's base. Returns (module to
    fill, the prefix when a holder is used, else "")."""
    import torch

    prefix = getattr(model, "base_model_prefix", "") or ""
    names, own = set(f.names), set(model.state_dict())
    if not prefix or names & own:
        return model, ""
    pre = prefix + "."
    if any(n.startswith(pre) for n in names) and not any(n.startswith(pre) for n in own):
        holder = torch.nn.Module()
        setattr(holder, prefix, model)
        return holder, prefix
    base = getattr(model, prefix, None)
    if isinstance(base, torch.nn.Module) and names & set(base.state_dict()):
        return base, ""
    return model, ""


def from_pretrained(folder, cls=None, *, dtype="auto", strict: bool = True, threads: int | None = None, **kwargs):
    """A transformers model from ``folder`` (config.json + a ``.nnp`` file; module docstring).
    ``kwargs`` go to ``AutoConfig.from_pretrained``."""
    import torch
    import transformers

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder!r} is not a folder")
    path = _find_nnp(folder)
    f = NnpFile(path)
    cls = transformers.AutoModel if cls is None else cls
    config = transformers.AutoConfig.from_pretrained(folder, **kwargs)
    if dtype == "auto":
        # transformers >= 4.56 names it `dtype` (its `torch_dtype` alias logs a deprecation); older ones only
        # `torch_dtype`
        dtype = config.dtype if hasattr(config, "dtype") else getattr(config, "torch_dtype", None)
        if dtype is None:
            floats = Counter(
                e["dtype"] for e in f.entries if e["dtype"] in ("float32", "float16", "bfloat16", "float64")
            )
            dtype = _torch_dtype(floats.most_common(1)[0][0]) if floats else torch.float32
    if isinstance(dtype, str):
        dtype = _torch_dtype(dtype)
    model = _build(cls, config, dtype, f)
    target, prefix_note = _prefix_target(model, f)
    # what transformers' own loader tolerates: names the model keeps as non-persistent buffers
    # (e.g. position_ids, saved by older versions) and the class's ignore patterns
    ignore_unexpected = {n for n, _ in model.named_buffers()} - set(model.state_dict())
    patterns = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())]
    ignore_missing = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or ())]
    result = load_state_dict(target, f, strict=False, threads=threads)
    if target is not model:  # names are the holder's: the prefix marks what belongs to the model
        pre = prefix_note + "."
        ignore_unexpected = {pre + n for n in ignore_unexpected}
        patterns += [re.compile("^(?!" + re.escape(pre) + ")")]  # a task head's tensors: not this model's
    if len(set(f.names) & set(target.state_dict())) == 0:
        raise NnpMismatchError(
            f"no tensor of {path} belongs to {type(model).__name__} (file names look like {f.names[:3]}, "
            f"the model's like {list(model.state_dict())[:3]}): pass the class the file was saved from, cls=..."
        )
    unexpected = [
        n for n in result.unexpected_keys if n not in ignore_unexpected and not any(p.search(n) for p in patterns)
    ]
    missing = [n for n in result.missing_keys if not any(p.search(n) for p in ignore_missing)]
    if strict and (missing or unexpected):
        raise NnpMismatchError(
            f"error loading {path} into {type(model).__name__}: missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]} (strict=False loads anyway)"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    model.eval()
    return model
