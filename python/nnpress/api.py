"""``nnpress.compress`` / ``nnpress.decompress``: a model in, one ``.nnp`` file out, and back.

Contract
--------
- ``compress(source, dest, config=CodecConfig(), *, importance=None, hessians=None, progress=None)`` reads
  ``source`` (``torch.nn.Module``, state_dict, ``.safetensors`` or ``.pt``/``.pth`` path), quantizes
  the float tensors the config says to quantize (``nnpress.quantize`` with the tensor's step,
  method and lambda; ``importance[name]`` = per-weight Fisher values for rdoq/trellis; per-row /
  per-column step scales from the plan, or from the importance with ``CodecConfig(channel_scales=
  True)``: the file is then format 1.1; ``hessians[name]`` = a cols x cols column block of the
  Fisher, e.g. from ``nnpress.fisher_column_blocks``, for error feedback inside each row — see
  below), stores the
  rest exactly, stores tied tensors once, and writes ``dest`` atomically (temp file in the same
  folder, checked, renamed). Returns a :class:`CompressionReport`.
- ``decompress(path, as_numpy=False, names=None, threads=None)`` -> ``{name: torch.Tensor}`` with the
  original names, dtypes and shapes (``as_numpy=True``: numpy arrays; bfloat16 tensors become
  float32 there, widened exactly, since numpy has no bfloat16). Tied names share one tensor.
  ``names`` decodes only those tensors (random access). Bad files raise ``nnpress.FormatError``.
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
  the config is passed to it (``chunk_rows``).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .config import CodecConfig, ResolvedPlan
from .prune import prune_array
from .container import (NnpFile, TensorRecord, bfloat16_to_float32, float32_to_bfloat16, nnp_bytes,
                        validate_nnp, write_bytes_atomic)
from .traverse import TensorEntry, collect

__all__ = ["compress", "decompress", "decompress_to_file", "info", "CompressionReport", "TensorReport"]

FORMAT_PRODUCER = "nnpress"
_MAX_LEVEL = 2.0 ** 30  # the quantizers' limit on |w / step|
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1, "int16": 2,
             "int32": 4, "int64": 8, "bool": 1, "uint16": 2, "uint32": 4, "uint64": 8}


@dataclass
class TensorReport:
    name: str
    shape: tuple
    dtype: str
    role: str
    storage: str          # "quantized" | "raw" | "alias"
    method: str | None
    step: float | None
    params: int
    original_bytes: int
    stored_bytes: int
    rel_error: float      # ||w - w_hat|| / ||w|| (0 for exact storage)
    alias_of: str | None = None

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.stored_bytes / self.params if self.params else 0.0


@dataclass
class CompressionReport:
    path: str
    tensors: list[TensorReport]
    file_bytes: int
    original_bytes: int
    params: int
    times: dict[str, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.file_bytes if self.file_bytes else float("inf")

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.file_bytes / self.params if self.params else 0.0

    @property
    def quantized_params(self) -> int:
        return sum(t.params for t in self.tensors if t.storage == "quantized")

    def to_dict(self) -> dict:
        return {
            "path": self.path, "file_bytes": self.file_bytes, "original_bytes": self.original_bytes,
            "params": self.params, "quantized_params": self.quantized_params, "ratio": self.ratio,
            "bits_per_param": self.bits_per_param, "times": dict(self.times), "config": self.config,
            "tensors": [dict(asdict(t), shape=list(t.shape), bits_per_param=t.bits_per_param) for t in self.tensors],
        }

    def table(self, max_rows: int | None = None) -> str:
        """Per-tensor table plus totals, as text."""
        head = f"{'tensor':<44} {'shape':<16} {'dtype':<8} {'role':<9} {'stored':<9} {'bytes':>10} {'bits/p':>7} {'rel.err':>8}"
        lines = [head, "-" * len(head)]
        rows = self.tensors if max_rows is None else self.tensors[:max_rows]
        for t in rows:
            name = t.name if len(t.name) <= 44 else "…" + t.name[-43:]
            shape = "x".join(str(d) for d in t.shape) or "()"
            kind = t.method if t.storage == "quantized" else t.storage
            lines.append(f"{name:<44} {shape:<16} {t.dtype:<8} {t.role:<9} {kind:<9} {t.stored_bytes:>10,} "
                         f"{t.bits_per_param:>7.3f} {t.rel_error:>8.2e}")
        if max_rows is not None and len(self.tensors) > max_rows:
            lines.append(f"... {len(self.tensors) - max_rows} more tensors")
        lines.append("-" * len(head))
        lines.append(f"{len(self.tensors)} tensors, {self.params:,} parameters: {self.original_bytes:,} -> "
                     f"{self.file_bytes:,} bytes, ratio {self.ratio:.2f}x, {self.bits_per_param:.3f} bits/param")
        if self.times:
            lines.append("time: " + ", ".join(f"{k} {v:.3f} s" for k, v in self.times.items()))
        return "\n".join(lines)

    def __str__(self) -> str:
        return (f"CompressionReport({self.path!r}: {self.original_bytes:,} -> {self.file_bytes:,} bytes, "
                f"{self.ratio:.2f}x, {self.bits_per_param:.3f} bits/param)")


def _rows_cols(shape: tuple) -> tuple[int, int]:
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(shape) >= 2:
        return int(shape[0]), (n // shape[0] if shape[0] else 0)
    return (1 if n else 0), n


def _rows_per_block(shape: tuple, block_elements: int) -> int:
    rows, cols = _rows_cols(shape)
    if rows == 0 or cols == 0:
        return 0
    return max(1, min(rows, block_elements // cols))


def _quantize(values: np.ndarray, plan: ResolvedPlan, importance, chunk_rows: int, threads: int | None,
              row_exp=None, col_exp=None, hessian=None, hessian_damp: float = 0.0, row_hessian=None):
    """levels, reconstruction (float32) of one tensor — the one place that calls the quantizer.
    Channel scales are the exact values the decoder forms from the stored exponents. With a
    ``hessian`` (module docstring) it is normalised to mean diagonal 1 and the importance reduced
    to its row means."""
    from .quant import channel_scales, feedback_inputs, quantize

    importance, hessian, row_hessian = feedback_inputs(values.shape, importance, hessian, row_hessian)
    levels, recon = quantize(values, plan.step, lam=plan.lam, importance=importance, method=plan.method,
                             chunk_rows=chunk_rows or None, threads=threads, return_reconstruction=True,
                             row_scale=None if row_exp is None else channel_scales(row_exp),
                             col_scale=None if col_exp is None else channel_scales(col_exp),
                             hessian=hessian, hessian_damp=hessian_damp, row_hessian=row_hessian)
    return levels, recon


def _scale_exps(plan: ResolvedPlan, imp, shape: tuple, derive: bool, name: str):
    """The channel scale exponents of one tensor (int8 arrays or None): the plan's, else derived from
    its importance when ``CodecConfig.channel_scales`` is on."""
    rows, cols = _rows_cols(shape)
    row_exp = None if plan.row_scale_exp is None else np.asarray(plan.row_scale_exp, np.int8)
    col_exp = None if plan.col_scale_exp is None else np.asarray(plan.col_scale_exp, np.int8)
    if row_exp is None and col_exp is None and derive and imp is not None and len(shape) >= 2:
        from .tune import channel_scales_from_importance
        row_exp, col_exp = channel_scales_from_importance({name: np.asarray(imp).reshape(shape)}).get(name, (None, None))
    for what, e, n in (("row", row_exp, rows), ("column", col_exp, cols)):
        if e is not None and e.size != n:
            raise ValueError(f"{name!r}: {e.size} {what} scale exponents, the tensor has {n} {what}s")
    return row_exp, col_exp


def _rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """||w - w_hat|| / ||w||, accumulated in float64 (without float64 copies of the tensors)."""
    diff = np.subtract(w, w_hat, dtype=np.float64 if w.dtype == np.float64 else np.float32)
    den = float(np.sqrt(np.sum(np.square(w, dtype=np.float64))))
    num = float(np.sqrt(np.sum(np.square(diff, dtype=np.float64))))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def _stored_dtype_recon(recon: np.ndarray, dtype: str) -> np.ndarray:
    """The values the decoder will produce for a float32 reconstruction (for the error column)."""
    if dtype == "float16":
        return recon.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return bfloat16_to_float32(float32_to_bfloat16(recon))
    return recon


def compress(source, dest, config: CodecConfig | None = None, *,
             importance: Mapping[str, Any] | None = None,
             hessians: Mapping[str, Any] | None = None,
             row_hessians: Mapping[str, Any] | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> CompressionReport:
    """Compress a model into ``dest`` (``.nnp``). See the module docstring."""
    config = CodecConfig() if config is None else config
    if not isinstance(config, CodecConfig):
        raise TypeError(f"config must be a CodecConfig, not {type(config).__name__}")
    dest = os.fspath(dest)
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"destination folder does not exist: {folder!r}")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    entries: list[TensorEntry] = collect(source)
    if importance is not None:
        unknown = set(importance) - {e.name for e in entries}
        if unknown:
            raise KeyError(f"importance given for tensors not in the model: {sorted(unknown)[:5]}")
    for what, blocks in (("hessians", hessians), ("row_hessians", row_hessians)):
        unknown = set(blocks or ()) - {e.name for e in entries}
        if unknown:
            raise KeyError(f"{what} given for tensors not in the model: {sorted(unknown)[:5]}")
    times["load"] = time.perf_counter() - t0
    # model-level inputs of the default step rule and of method "auto" (config module docstring)
    q_sizes = [e.count for e in entries
               if e.alias_of is None and e.count and config.quantizes(e.name, e.role, e.dtype)]
    mean_size = sum(q_sizes) / len(q_sizes) if q_sizes else None
    total_size = sum(q_sizes)

    t1 = time.perf_counter()
    records: list[TensorRecord] = []
    reports: list[TensorReport] = []
    total = len(entries)
    for i, e in enumerate(entries):
        if progress is not None:
            progress(i, total, e.name)
        orig = e.count * _ITEMSIZE[e.dtype]
        if e.alias_of is not None:
            records.append(TensorRecord(e.name, e.dtype, e.role, "alias", e.shape, alias_of=e.alias_of))
            reports.append(TensorReport(e.name, e.shape, e.dtype, e.role, "alias", None, None, e.count, orig, 0, 0.0,
                                        alias_of=e.alias_of))
            continue
        fvals = e.float_values() if e.is_float else None
        if fvals is not None and e.count and not np.all(np.isfinite(fvals)):
            plan = ResolvedPlan(lossless=True)  # NaN/inf cannot be quantized: keep the tensor exact
        else:
            plan = config.resolve(e.name, e.role, e.dtype, fvals,
                                  mean_size=mean_size, total_size=total_size)
            if not plan.lossless and e.count and max(-float(fvals.min()), float(fvals.max())) / plan.step >= _MAX_LEVEL:
                plan = ResolvedPlan(lossless=True)  # an outlier beyond the level range: keep it exact
        if plan.lossless:
            records.append(TensorRecord(e.name, e.dtype, e.role, "raw", e.shape, data=e.values))
            reports.append(TensorReport(e.name, e.shape, e.dtype, e.role, "raw", None, None, e.count, orig, 0, 0.0))
            continue
        rpb = _rows_per_block(e.shape, config.block_elements)
        imp = None if importance is None else importance.get(e.name)
        if imp is not None and not isinstance(imp, np.ndarray):
            imp = _to_numpy_float(imp)
        row_exp, col_exp = _scale_exps(plan, imp, e.shape, config.channel_scales, e.name)
        if e.count:
            qvals = prune_array(fvals, config.prune, imp) if config.prune > 0 else fvals
            hess, row_hess = (_float64(None if blocks is None else blocks.get(e.name))
                              for blocks in (hessians, row_hessians))
            levels, recon = _quantize(qvals, plan, imp, rpb, config.threads, row_exp, col_exp, hess,
                                      config.hessian_damp, row_hess)
            err = _rel_error(fvals, _stored_dtype_recon(recon, e.dtype))  # against the unpruned weights
        else:
            levels, err = np.zeros(e.shape, dtype=np.int32), 0.0
        records.append(TensorRecord(e.name, e.dtype, e.role, "quantized", e.shape, data=levels, method=plan.method,
                                    step=plan.step, lam=plan.lam, rows_per_block=rpb,
                                    row_scale_exp=row_exp, col_scale_exp=col_exp))
        reports.append(TensorReport(e.name, e.shape, e.dtype, e.role, "quantized", plan.method, plan.step, e.count,
                                    orig, 0, err))
    if progress is not None:
        progress(total, total, "")
    times["quantize"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    from . import __version__
    stored_config = config.to_dict()
    stored_config.pop("threads", None)  # does not change the bytes, so it is not recorded
    # per-tensor plans are in the tensor table already (step, method, lambda): keep only their count
    stored_config["overrides"] = len(config.overrides)
    metadata = {"producer": FORMAT_PRODUCER, "nnpress_version": __version__, "config": stored_config}
    data, stored = nnp_bytes(records, block_elements=config.block_elements, threads=config.threads,
                             metadata=metadata)
    times["encode"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    validate_nnp(data)  # structure and every CRC, before anything is replaced
    write_bytes_atomic(dest, data)
    times["write"] = time.perf_counter() - t3
    times["total"] = time.perf_counter() - t0
    for r, s in zip(reports, stored):
        r.stored_bytes = int(s)
    return CompressionReport(
        path=dest, tensors=reports, file_bytes=len(data),
        original_bytes=sum(r.original_bytes for r in reports if r.storage != "alias"),
        params=sum(r.params for r in reports if r.storage != "alias"), times=times, config=config.to_dict())


def _float64(x):
    """A block (numpy or torch, any device) as float64 numpy, or None."""
    if x is None:
        return None
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def _to_numpy_float(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=np.float32)


def decompress(path, as_numpy: bool = False, names: Iterable[str] | None = None,
               threads: int | None = None) -> dict[str, Any]:
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


def decompress_to_file(path, out_path, *, threads: int | None = None) -> dict[str, Any]:
    """Decode ``path`` and write the tensors to ``out_path`` (.safetensors, .npz or .pt/.pth).
    Returns a small summary dict."""
    from .traverse import save_safetensors

    f = NnpFile(path)
    out_path = os.fspath(out_path)
    low = out_path.lower()
    t0 = time.perf_counter()
    if low.endswith(".safetensors"):
        arrays = f.read_all(threads=threads)
        dtypes = {e["name"]: e["dtype"] for e in f.entries}
        t1 = time.perf_counter()
        save_safetensors(arrays, out_path, dtypes=dtypes, metadata={"producer": "nnpress"})
    elif low.endswith(".npz"):
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
        raise ValueError(f"unsupported output file {out_path!r}: use .safetensors, .npz, .pt or .pth")
    t2 = time.perf_counter()
    return {"path": out_path, "tensors": len(f), "bytes": os.path.getsize(out_path),
            "decode_seconds": t1 - t0, "write_seconds": t2 - t1}


def info(path) -> dict:
    """The tensor table and totals of a ``.nnp`` file, without decoding."""
    f = NnpFile(path)
    params = sum(e["count"] for e in f.entries if e["storage"] != "alias")
    orig = sum(e["output_bytes"] for e in f.entries if e["storage"] != "alias")
    return {
        "path": os.fspath(path), "version": list(f.version), "file_bytes": f.file_size, "tensors": len(f),
        "params": params, "original_bytes": orig,
        "ratio": orig / f.file_size if f.file_size else 0.0,
        "bits_per_param": 8.0 * f.file_size / params if params else 0.0,
        "metadata": f.metadata,
        "entries": [dict(e, shape=list(e["shape"]),
                         bits_per_param=(8.0 * e["stored_bytes"] / e["count"] if e["count"] else 0.0))
                    for e in f.entries],
    }

