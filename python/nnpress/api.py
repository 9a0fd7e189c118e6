"""``nnpress.compress`` / ``nnpress.decompress``: a model in, one ``.nnp`` file out, and back.

Contract
--------
- ``compress(source, dest, config=CodecConfig(), *, importance=None, hessians=None, row_hessians=None,
  progress=None)`` reads ``source`` (``torch.nn.Module``, state_dict, ``.safetensors`` or
  ``.pt``/``.pth`` path) and encodes every tensor through the one encode path
  (``nnpress.encode``: the config's plan, ``nnpress.quantize`` with the tensor's step, method and
  lambda; ``importance[name]`` = per-weight Fisher values for rdoq/trellis; per-row / per-column
  step scales from the plan, or from the importance with ``CodecConfig(channel_scales=True)``: the
  file is then format 1.1; ``hessians[name]`` = a cols x cols column block of the Fisher, e.g. from
  ``nnpress.fisher_hessians``, for error feedback inside each row — see below). It stores the rest
  exactly, stores tied tensors once, and writes ``dest`` atomically (built and checked in memory,
  written to a temp file in the same folder, renamed). Returns a :class:`CompressionReport` with
  the time of each stage (load, quantize, encode, write, total). A safetensors source (a file, an
  ``*.safetensors.index.json`` or a Hugging Face checkpoint folder) is streamed instead
  (``nnpress.stream``: one tensor at a time through the same encode path, appended to a temporary
  file that is checked and renamed; the same bytes as the in-memory path) and its ``__metadata__``
  is kept in the file's metadata. Data-free error feedback (``CodecConfig.synthetic_feedback``,
  opt-in; ``nnpress.synthetic``): an ``nn.Module`` source, or a Hugging Face model folder that
  loads and runs (then compressed in memory, under the checkpoint's names and dtypes), gets K-FAC
  blocks estimated on synthetic inputs when the caller passes no importance or hessians (stage
  ``synthetic`` in the report's times).
- ``decompress_to_file(path, out)``: a folder (shards + index) or ``.safetensors`` written tensor
  by tensor (``nnpress.stream``), ``.npz``/``.pt`` in memory; outputs complete or absent.
- With ``calibration=`` (a ``nnpress.calibration.Task`` or data for ``calibration.load_task``) and
  ``budget=`` (``"cos_mean=0.999"``), ``compress`` returns ``nnpress.budget.compress_to_budget``'s
  ``BudgetReport`` instead: the smallest file whose held-out fidelity meets the budget (``progress``
  is then ``progress(stage, done, total)``; ``config.prune`` > 0 fixes the sparsity, else the
  search chooses it; importance/hessians are estimated, not taken). Without them nothing changes.
- Errors before anything is written: ``IsADirectoryError`` when ``dest`` is a folder (an existing
  one, or a path ending in '/') and ``FileNotFoundError`` when its folder does not exist, both
  before any encoding; ``KeyError`` for importance/hessians naming tensors the model
  does not have; ``ValueError`` for plan entries that match no tensor, and for
  ``CodecConfig(channel_scales=True)`` without an importance.
- ``decompress(path, as_numpy=False, names=None, threads=None)`` -> ``{name: torch.Tensor}`` with the
  original names, dtypes and shapes (``as_numpy=True``: numpy arrays; bfloat16 tensors become
  float32 there, widened exactly, since numpy has no bfloat16). Tied names share one tensor.
  ``names`` decodes only those tensors (random access). Bad files raise ``nnpress.FormatError``
  whose message starts with the path (``NnpFile``).
- Same input + config => byte-identical file, for any thread count.

Error feedback (``hessians``): for a tensor with a block H the quantizer minimises
``sum_r f_r e_r^T H' e_r`` over its rows (``nnpress.quantize(hessian=)``), with H' = H / mean(diag H)
(damped by ``CodecConfig.hessian_damp``) and f_r the mean of row r's importance (1 without one), so
that the objective has the scale of the per-weight ``sum F_i e_i^2`` it replaces; ``row_hessians``
adds feedback across the rows of each row block (``nnpress.quantize(row_hessian=)``, G normalised
the same way, the importance then reduced as ``nnpress.quant.feedback_inputs`` says). Channel
scales and pruning still use the per-weight importance. The file format does not change.

Surprises
---------
- ``decompress`` imports torch unless ``as_numpy=True``.
- The quantizer prices rate with contexts that restart at every row block, so the block size of
  the config is passed to it (``rows_per_block``).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import numpy as np

from .checkpoint import is_checkpoint_path, open_checkpoint
from .config import CodecConfig
from .container import NnpFile, bfloat16_to_float32, file_destination, write_bytes_atomic
from .encode import data_free_hessians, data_free_sensitivities, encode_model, file_metadata, write_records
from .report import CompressionReport, TensorReport
from .stream import (
    DEFAULT_MAX_SHARD_SIZE,
    checkpoint_entries,
    compress_checkpoint,
    decompress_to_folder,
    decompress_to_safetensors,
    source_metadata,
)
from .synthetic import folder_model
from .traverse import TensorEntry, collect

__all__ = ["CompressionReport", "TensorReport", "compress", "decompress", "decompress_to_file", "info"]


def _check_inputs(entries: list[TensorEntry], config: CodecConfig, importance, hessians, row_hessians) -> None:
    """Names and options that would silently do nothing are errors."""
    names = [e.name for e in entries]
    known = set(names)
    for what, per_tensor in (("importance", importance), ("hessians", hessians), ("row_hessians", row_hessians)):
        unknown = set(per_tensor or ()) - known
        if unknown:
            raise KeyError(f"{what} given for tensors not in the model: {sorted(unknown)[:5]}")
    unmatched = config.unmatched_plan_keys(names)
    if unmatched:
        raise ValueError(
            f"plan entries that match no tensor of the model: {unmatched[:5]} (tensor names look like {names[:3]})"
        )
    if config.channel_scales and not importance:
        raise ValueError(
            "CodecConfig(channel_scales=True) derives the scales from the per-weight importance: "
            "pass compress(importance=...) (e.g. from nnpress.fisher_diagonal)"
        )


def compress(
    source,
    dest,
    config: CodecConfig | None = None,
    *,
    importance: Mapping[str, Any] | None = None,
    hessians: Mapping[str, Any] | None = None,
    row_hessians: Mapping[str, Any] | None = None,
    progress: Callable[..., None] | None = None,
    calibration: Any = None,
    budget: Any = None,
    seed: int = 0,
):
    """Compress a model into ``dest`` (``.nnp``). See the module docstring. With ``calibration``
    (a ``nnpress.calibration.Task``, or data for ``calibration.load_task``) and ``budget``
    (``"cos_mean=0.999"``): the smallest file that meets the budget, ``nnpress.budget``; returns its
    ``BudgetReport`` and ``progress(stage, done, total)``. A ``Task`` carries its model: ``source``
    is then that model, what it was loaded from, or None (ValueError for another model)."""
    _check_not_source(source, dest)
    dest = file_destination(dest)  # before any work: a folder or a missing folder is a one-line error
    if calibration is not None or budget is not None:
        return _compress_to_budget(source, dest, config, calibration, budget, seed, progress,
                                   importance=importance, hessians=hessians, row_hessians=row_hessians)  # fmt: skip
    config = CodecConfig() if config is None else config
    if not isinstance(config, CodecConfig):
        raise TypeError(f"config must be a CodecConfig, not {type(config).__name__}")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = None  # a model folder that loads and runs: in memory, with synthetic-input feedback
    no_estimates = importance is None and hessians is None and row_hessians is None
    if no_estimates and is_checkpoint_path(source):
        loaded = folder_model(source, config)
    if loaded is None and is_checkpoint_path(source):  # safetensors file or folder: streamed, one tensor at a time
        _not_applied(config, "synthetic_feedback", "probe", why="the source is not a model that runs")
        ckpt = open_checkpoint(source)
        entries = checkpoint_entries(ckpt)
        _check_inputs(entries, config, importance, hessians, row_hessians)
        return compress_checkpoint(
            ckpt,
            dest,
            config,
            source_metadata(file_metadata(config), ckpt.metadata),
            entries=entries,
            importance=importance,
            hessians=hessians,
            row_hessians=row_hessians,
            progress=progress,
        )
    entries = collect(source if loaded is None else loaded.state)
    _check_inputs(entries, config, importance, hessians, row_hessians)
    times["load"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    sens = data_free_sensitivities(source, entries, config)  # None unless source is a runnable nn.Module
    times["probe"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    synth = None  # synthetic-input feedback blocks: a runnable nn.Module and no estimates of the caller's
    if no_estimates:
        synth = data_free_hessians(source if loaded is None else loaded, entries, config)
    times["synthetic"] = time.perf_counter() - t1
    if not synth:
        why = "the caller's estimates take its place" if not no_estimates else "the source is not a model that runs"
        _not_applied(config, "synthetic_feedback", why=why)
    if not sens:
        _not_applied(config, "probe", why="it needs an nn.Module that runs on synthetic inputs")
    t1 = time.perf_counter()
    encoded = encode_model(
        entries,
        config,
        importance=importance,
        hessians=hessians,
        row_hessians=row_hessians,
        sensitivities=sens,
        synthetic_hessians=synth,
        progress=progress,
    )
    times["quantize"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    meta = file_metadata(config, probed=bool(sens), synthetic_feedback=bool(synth))
    if loaded is not None:
        meta = source_metadata(meta, open_checkpoint(source).metadata)
    data = write_records(encoded, config, meta)
    times["encode"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    write_bytes_atomic(dest, data)
    times["write"] = time.perf_counter() - t3
    times["total"] = time.perf_counter() - t0
    reports = [t.report for t in encoded]
    return CompressionReport(
        path=dest,
        tensors=reports,
        file_bytes=len(data),
        original_bytes=sum(r.original_bytes for r in reports if r.storage != "alias"),
        params=sum(r.params for r in reports if r.storage != "alias"),
        times=times,
        config=config.to_dict(),
    )


def _compress_to_budget(source, dest, config, calibration, budget, seed, progress, **estimates):
    """The calibrated branch of :func:`compress` (``nnpress.budget.compress_to_budget``)."""
    given = sorted(k for k, v in estimates.items() if v is not None)
    if given:
        raise TypeError(f"compress(calibration=...) estimates its own {', '.join(given)}: do not pass them")
    if calibration is None or budget is None:
        raise ValueError("compress: calibration and budget go together (give both, or neither for the data-free path)")
    from . import calibration as cal
    from .budget import compress_to_budget

    config = CodecConfig() if config is None else config
    if isinstance(calibration, cal.Task):
        _check_task_source(source, calibration)
        task = calibration
    else:
        task = cal.load_task(source, calibration, seed=seed)
    prune = config.prune if config.prune > 0 else "auto"
    return compress_to_budget(task, dest, budget, config=config, prune=prune, seed=seed, progress=progress)


def _check_task_source(source, task) -> None:
    """A ``Task`` carries its own model, so ``source`` must be that model (or what it was loaded from,
    or None): compressing the task's model while the caller named another would write the wrong file."""
    if source is None:
        return
    if isinstance(source, (str, os.PathLike)):
        loaded_from = str(task.source).split(" (", 1)[0]
        if loaded_from and os.path.realpath(os.fspath(source)) == os.path.realpath(loaded_from):
            return
    elif source is task.model or _same_weights(source, task.model):
        return
    what = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"a {type(source).__name__} object"
    raise ValueError(
        f"compress: calibration is a Task built from {task.source!r}, but source is {what} with other "
        "weights: pass the task's own model (or source=None), or give calibration data instead of a Task"
    )


def _same_weights(a, b) -> bool:
    """True when ``a`` (a module or a state dict) holds module ``b``'s weights: shared storage (a
    wrapper of the same model, its own state_dict()) or the same names with equal values (a copy)."""

    def state(x):
        if isinstance(x, Mapping):
            return dict(x)
        sd = getattr(x, "state_dict", None)
        return sd() if callable(sd) else None

    da, db = state(a), state(b)
    if da is None or db is None:
        return False
    import torch

    def stored(t) -> bool:  # a tensor with real storage (meta tensors all report address 0)
        return isinstance(t, torch.Tensor) and t.numel() > 0 and not t.is_meta

    ptrs = {t.data_ptr() for t in db.values() if stored(t)}
    if any(stored(t) and t.data_ptr() in ptrs for t in da.values()):
        return True
    if da.keys() != db.keys():
        return False
    ta = {k: torch.as_tensor(v) for k, v in da.items()}
    return all(ta[k].shape == db[k].shape and torch.equal(ta[k], torch.as_tensor(db[k])) for k in da)


def decompress(
    path, as_numpy: bool = False, names: Iterable[str] | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Decode a ``.nnp`` file into ``{name: tensor}`` (see the module docstring)."""
    f = path if isinstance(path, NnpFile) else NnpFile(path)
    arrays = f.read_all(names, threads=threads)
    dtypes = {e["name"]: e["dtype"] for e in f.entries}
    if as_numpy:
        out: dict[str, Any] = {}
        widened: dict[int, np.ndarray] = {}
        for n, a in arrays.items():
            if dtypes[n] == "bfloat16":
                if id(a) not in widened:
                    widened[id(a)] = bfloat16_to_float32(a)
                out[n] = widened[id(a)]
            else:
                out[n] = a
        return out
    import torch

    converted: dict[int, Any] = {}
    out = {}
    for n, a in arrays.items():
        key = id(a)
        if key not in converted:
            if dtypes[n] == "bfloat16":
                t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
            elif dtypes[n] in ("uint16", "uint32", "uint64") and not hasattr(torch, dtypes[n]):
                t = torch.from_numpy(a.astype(np.int64))  # very old torch: widen
            else:
                t = torch.from_numpy(a)
            converted[key] = t
        out[n] = converted[key]
    return out


def decompress_to_file(path, out_path, *, threads: int | None = None, max_shard_size=None) -> dict[str, Any]:
    """Decode ``path`` into ``out_path``: a ``.safetensors`` file or a folder (a Hugging Face
    checkpoint: shards of at most ``max_shard_size``, default 5GB, + ``model.safetensors.index.json``), both
    streamed one tensor batch at a time (``nnpress.stream``); or ``.npz`` / ``.pt`` / ``.pth``
    (built in memory). ``out_path`` is a folder if it exists as one, ends with a path separator or
    has no suffix. Returns a small summary dict (path, files, tensors, bytes, decode/write seconds)."""
    f = path if isinstance(path, NnpFile) else NnpFile(path)
    raw_out = os.fspath(out_path)
    out_path = raw_out.rstrip("/" + os.sep) or raw_out
    low = out_path.lower()
    is_folder = os.path.isdir(out_path) or raw_out.endswith(("/", os.sep)) or "." not in os.path.basename(out_path)
    if is_folder:
        limit = DEFAULT_MAX_SHARD_SIZE if max_shard_size is None else max_shard_size
        return decompress_to_folder(f, out_path, max_shard_size=limit, threads=threads)
    if max_shard_size is not None:
        raise ValueError(f"max_shard_size applies to a folder output, not to the file {out_path!r}")
    if low.endswith(".safetensors"):
        return decompress_to_safetensors(f, out_path, threads=threads)
    t0 = time.perf_counter()
    if low.endswith(".npz"):
        arrays = decompress(f, as_numpy=True, threads=threads)
        t1 = time.perf_counter()
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_bytes_atomic(out_path, buf.getvalue())
    elif low.endswith((".pt", ".pth")):
        import io

        import torch

        arrays = decompress(f, threads=threads)
        t1 = time.perf_counter()
        buf = io.BytesIO()
        torch.save(arrays, buf)
        write_bytes_atomic(out_path, buf.getvalue())
    else:
        raise ValueError(
            f"unsupported output {out_path!r}: use a folder, .safetensors, .npz, .pt or .pth "
            f"(a folder whose name has a dot: end it with '/', e.g. {os.path.basename(out_path) + '/'!r})"
        )
    t2 = time.perf_counter()
    return {
        "path": out_path,
        "files": [out_path],
        "tensors": len(f),
        "bytes": os.path.getsize(out_path),
        "decode_seconds": t1 - t0,
        "write_seconds": t2 - t1,
    }


def info(path) -> dict:
    """The tensor table and totals of a ``.nnp`` file, without decoding."""
    f = NnpFile(path)
    params = sum(e["count"] for e in f.entries if e["storage"] != "alias")
    orig = sum(e["output_bytes"] for e in f.entries if e["storage"] != "alias")
    return {
        "path": os.fspath(path),
        "version": list(f.version),
        "file_bytes": f.file_size,
        "tensors": len(f),
        "params": params,
        "original_bytes": orig,
        "ratio": orig / f.file_size if f.file_size else 0.0,
        "bits_per_param": 8.0 * f.file_size / params if params else 0.0,
        "metadata": f.metadata,
        "entries": [
            dict(
                e, shape=list(e["shape"]), bits_per_param=(8.0 * e["stored_bytes"] / e["count"] if e["count"] else 0.0)
            )
            for e in f.entries
        ],
    }


def _not_applied(config: CodecConfig, *options: str, why: str) -> None:
    """Warn (UserWarning) about each data-free option in ``options`` that ``config`` turns on but
    the encode cannot apply; the file is then the encode without it."""
    for name in options:
        if getattr(config, name):
            warnings.warn(
                f"CodecConfig({name}=True) was not applied: {why}; the file is encoded without it",
                UserWarning,
                stacklevel=3,
            )


_CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".nnp")


def _check_not_source(source, dest) -> None:
    """ValueError when writing ``dest`` would replace the checkpoint being read: ``source`` itself,
    or a checkpoint file inside a ``source`` folder."""
    if not isinstance(source, (str, os.PathLike)) or not isinstance(dest, (str, os.PathLike)):
        return
    src, out = os.fspath(source), os.fspath(dest)
    if not os.path.exists(out) or not os.path.exists(src):
        return
    same = os.path.isfile(src) and os.path.samefile(src, out)
    inside = (
        os.path.isdir(src)
        and os.path.samefile(os.path.dirname(os.path.abspath(out)), src)
        and out.lower().endswith(_CHECKPOINT_SUFFIXES)
    )
    if same or inside:
        raise ValueError(
            f"refusing to write {out!r}: it is {'the source' if same else 'a file of the source folder'} {src!r}"
        )
